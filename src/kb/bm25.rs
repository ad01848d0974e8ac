//! Okapi BM25 over weighted terms, with a confidence normalised to 0..1.
//!
//! The knowledge base of one shop holds hundreds of documents, not millions: an inverted
//! index (term → documents with term frequency) and one dense score array per query are
//! all it takes, and a query costs a few microseconds. Scores follow Robertson's BM25 with
//! the usual `k1 = 1.2`, `b = 0.75`: repeated terms saturate, and long documents (a product
//! passage) do not win merely by containing more words than a short FAQ question.
//!
//! BM25 scores have no fixed scale, so a threshold on them would mean something different
//! in every shop. [`Bm25::confidence`] divides a score by the query's own information: the
//! sum of its terms' idf, which is what a document that matched every query term exactly
//! once at average length would score. It reads as "how much of what the customer said
//! this document accounts for", clamped to 1. A term no document has gets the largest idf,
//! so a question that is only half about the shop is only half confident.

use std::collections::HashMap;

use super::text::Term;

/// Term-frequency saturation.
pub const K1: f32 = 1.2;
/// Length normalisation.
pub const B: f32 = 0.75;
/// The weight in [`Bm25::self_score`] of a Chinese bigram no document has, at the seam of
/// a known one. Chosen on the demo paraphrases and real messages of the Taobao dialogues'
/// valid part (benches/real_traffic.py faq), checked on the held-out paraphrases: 0.5
/// answered one off-topic demo message ("卫衣多少钱"), 0.75 none, and 1 (no seams) two
/// held-out and four pack paraphrases fewer.
pub const SEAM_WEIGHT: f32 = 0.75;

fn is_han_bigram(text: &str) -> bool {
    let mut chars = text.chars();
    matches!((chars.next(), chars.next(), chars.next()), (Some(a), Some(b), None) if super::text::is_han(a) && super::text::is_han(b))
}

/// An inverted index of documents made of weighted terms.
#[derive(Clone, Debug, Default)]
pub struct Bm25 {
    postings: HashMap<String, Vec<(u32, f32)>>,
    doc_len: Vec<f32>,
    avg_len: f32,
}

impl Bm25 {
    /// Indexes `docs`; document `i` is the `i`-th.
    pub fn build(docs: &[Vec<Term>]) -> Self {
        let mut postings: HashMap<String, Vec<(u32, f32)>> = HashMap::new();
        let mut doc_len = Vec::with_capacity(docs.len());
        for (i, doc) in docs.iter().enumerate() {
            let mut tf: HashMap<&str, f32> = HashMap::new();
            let mut len = 0.0;
            for term in doc {
                *tf.entry(term.text.as_str()).or_default() += term.weight;
                len += term.weight;
            }
            // Sorted so that building twice gives the same index (HashMap order varies).
            let mut tf: Vec<(&str, f32)> = tf.into_iter().collect();
            tf.sort_by(|a, b| a.0.cmp(b.0));
            for (term, f) in tf {
                postings.entry(term.to_string()).or_default().push((i as u32, f));
            }
            doc_len.push(len);
        }
        let avg_len = if doc_len.is_empty() {
            1.0
        } else {
            (doc_len.iter().sum::<f32>() / doc_len.len() as f32).max(1.0)
        };
        Bm25 {
            postings,
            doc_len,
            avg_len,
        }
    }

    /// How many documents are indexed.
    pub fn len(&self) -> usize {
        self.doc_len.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.doc_len.is_empty()
    }

    fn idf(&self, docs_with_term: usize) -> f32 {
        let n = self.doc_len.len() as f32;
        let df = docs_with_term as f32;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// The BM25 score of every document for `query` (0 for documents sharing no term).
    pub fn scores(&self, query: &[Term]) -> Vec<f32> {
        let mut scores = vec![0.0f32; self.doc_len.len()];
        for term in query {
            let Some(list) = self.postings.get(&term.text) else {
                continue;
            };
            let idf = self.idf(list.len());
            for &(doc, tf) in list {
                let norm = K1 * (1.0 - B + B * self.doc_len[doc as usize] / self.avg_len);
                scores[doc as usize] += term.weight * idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        scores
    }

    /// What a document matching every query term once, at average length, would score:
    /// the sum of the query terms' weighted idf, unknown terms at the largest idf, except
    /// the seams of known words.
    ///
    /// Without a segmenter, a bigram no document has is often the seam between a word the
    /// shop wrote and the next one ("湿巾我怕酒精多" gives 巾我 after 湿巾 and 怕酒 before 酒精);
    /// its characters already count as terms of their own, and at full weight the seams of
    /// a long, chatty message outweighed the words it shares with the right entry. So an
    /// unknown Chinese bigram that overlaps a known one next to it weighs less
    /// ([`SEAM_WEIGHT`]). Unknown bigrams away from known words keep
    /// their full weight: a question about something no entry covers stays unconfident.
    pub fn self_score(&self, query: &[Term]) -> f32 {
        let known = |i: usize| -> bool {
            query
                .get(i)
                .is_some_and(|t| is_han_bigram(&t.text) && self.postings.contains_key(&t.text))
        };
        let overlaps = |a: &str, b: &str| a.chars().nth(1) == b.chars().next();
        query
            .iter()
            .enumerate()
            .map(|(i, t)| match self.postings.get(&t.text) {
                Some(list) => t.weight * self.idf(list.len()),
                None if is_han_bigram(&t.text)
                    && ((i > 0 && known(i - 1) && overlaps(&query[i - 1].text, &t.text))
                        || (known(i + 1) && overlaps(&t.text, &query[i + 1].text))) =>
                {
                    t.weight.min(SEAM_WEIGHT) * self.idf(0)
                }
                None => t.weight * self.idf(0),
            })
            .sum()
    }

    /// Whether document `doc` holds a term of `query` that weighs at least `min_weight`
    /// (a bigram or a word, not a lone character).
    pub fn shares(&self, doc: usize, query: &[Term], min_weight: f32) -> bool {
        query.iter().filter(|t| t.weight >= min_weight).any(|t| {
            self.postings
                .get(&t.text)
                .is_some_and(|list| list.iter().any(|&(d, _)| d as usize == doc))
        })
    }

    /// `score` as a share of the query's own information, 0..1 (see the module docs).
    pub fn confidence(&self, score: f32, self_score: f32) -> f64 {
        if self_score <= 0.0 {
            return 0.0;
        }
        f64::from(score / self_score).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::text::terms;
    use super::*;

    #[test]
    fn an_unknown_bigram_at_the_seam_of_a_known_one_weighs_less() {
        let index = Bm25::build(&[terms("湿巾有酒精吗"), terms("发票怎么开")]);
        // 巾我 follows 湿巾 and 怕酒 precedes 酒精: seams; 我怕 touches no known bigram.
        let q = terms("湿巾我怕酒精");
        let seamless: f32 = q
            .iter()
            .map(|t| t.weight * index.idf(index.postings.get(&t.text).map_or(0, Vec::len)))
            .sum();
        let seams = 2.0 * (1.0 - SEAM_WEIGHT) * index.idf(0);
        assert!((index.self_score(&q) - (seamless - seams)).abs() < 1e-4);
        // with no known bigram there are no seams: an off-topic question stays unconfident
        let off = terms("明天晴还是下雨");
        let full: f32 = off.iter().map(|t| t.weight * index.idf(0)).sum();
        assert!((index.self_score(&off) - full).abs() < 1e-4);
    }

    #[test]
    fn the_document_sharing_rare_terms_ranks_first() {
        let docs: Vec<Vec<Term>> = ["衣服可以机洗吗", "什么时候发货", "衣服会起球吗", "发票怎么开"]
            .iter()
            .map(|d| terms(d))
            .collect();
        let index = Bm25::build(&docs);
        let q = terms("能不能用洗衣机机洗");
        let scores = index.scores(&q);
        let best = (0..scores.len())
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap();
        assert_eq!(best, 0, "{scores:?}");
        let c = index.confidence(scores[0], index.self_score(&q));
        assert!(c > 0.0 && c < 1.0, "{c}");
    }

    #[test]
    fn an_exact_question_is_fully_confident_and_an_unrelated_one_is_not() {
        let docs: Vec<Vec<Term>> = ["衣服可以机洗吗", "什么时候发货", "发票怎么开"]
            .iter()
            .map(|d| terms(d))
            .collect();
        let index = Bm25::build(&docs);
        let q = terms("什么时候发货");
        // Not 1: the document is longer than average, and BM25 discounts length.
        let c = index.confidence(index.scores(&q)[1], index.self_score(&q));
        assert!(c > 0.8, "{c}");
        let q = terms("今天天气怎么样");
        let best = index.scores(&q).into_iter().fold(0.0f32, f32::max);
        assert!(index.confidence(best, index.self_score(&q)) < 0.3);
    }
}
