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
    /// the sum of the query terms' weighted idf, unknown terms at the largest idf.
    pub fn self_score(&self, query: &[Term]) -> f32 {
        query
            .iter()
            .map(|t| t.weight * self.idf(self.postings.get(&t.text).map_or(0, Vec::len)))
            .sum()
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
