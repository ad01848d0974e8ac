//! Text → hashed sparse features for the intent classifier.
//!
//! Customers type without a segmenter's help in mind: no spaces between Chinese words,
//! typos, English mixed in, emoji. So the features need no segmentation:
//!
//! - **character n-grams, n = 1..3**, over the message with whitespace and punctuation
//!   removed and `^`/`$` marking its start and end (so "在吗" at the end of a message and
//!   "在吗" inside one differ). Digits are folded to `0`: "160 90斤" and "170 130斤" are the
//!   same question.
//! - **word unigrams and bigrams** of Latin-script words, for English ("return it").
//! - **keyword hits**: one feature per intent whose `keywords` occur in the message, so the
//!   editor's keywords are a signal the classifier weighs against everything else.
//!
//! Every feature is hashed (FNV-1a, 64 bit, stable across platforms and runs) into a fixed
//! space of [`HASH_BITS`] bits. Only buckets seen in training get a weight row ([`Vocab`]);
//! a bucket never seen still counts in the vector's length, so a message made mostly of
//! unseen n-grams has little mass on known features and comes out unsure (the novelty signal
//! that out-of-scope detection builds on; see the module docs of `nlu`).

use aho_corasick::{AhoCorasick, MatchKind};

/// Size of the hashed feature space in bits (2^20 buckets: collisions stay rare for rule
/// packs of a few hundred intents).
pub const HASH_BITS: u32 = 20;
const HASH_MASK: u64 = (1 << HASH_BITS) - 1;

/// Kinds of feature, hashed in front of the feature text so that a character bigram and a
/// word never share a bucket by construction.
const KIND_CHAR: u8 = b'c';
const KIND_WORD: u8 = b'w';
const KIND_KEYWORD: u8 = b'k';

/// Folds a character the way every text feature sees it: full-width ASCII to half-width,
/// ideographic space to space, lowercase.
pub fn fold_char(c: char) -> char {
    let c = match c as u32 {
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        _ => c,
    };
    if c.is_ascii() {
        c.to_ascii_lowercase()
    } else if c.is_uppercase() {
        c.to_lowercase().next().unwrap_or(c)
    } else {
        c
    }
}

/// The folded text: [`fold_char`] on every character. Byte offsets may change (full-width
/// characters are three bytes, their half-width forms one), so spans are never taken from it.
pub fn fold(text: &str) -> String {
    text.chars().map(fold_char).collect()
}

/// Whether a folded character separates tokens (whitespace, ASCII or CJK punctuation).
/// Digit runs at least this long are identifiers (order numbers, phone numbers), not
/// quantities.
const LONG_NUMBER: usize = 5;

/// Folds digits to `0` so numbers of the same shape share features, and turns a run of
/// `LONG_NUMBER` or more digits (or PII-mask `*`s) into one `#`: an order number is "a long
/// number", and must not look like the heights and weights ("170 130斤") of size questions.
fn compact_numbers(chars: impl Iterator<Item = char>) -> Vec<char> {
    let mut out = Vec::new();
    let mut run = 0usize;
    let flush = |out: &mut Vec<char>, run: &mut usize| {
        if *run >= LONG_NUMBER {
            let keep = out.len() - *run;
            out.truncate(keep);
            out.push('#');
        }
        *run = 0;
    };
    for c in chars {
        if c.is_ascii_digit() || c == '*' {
            out.push(if c == '*' { '*' } else { '0' });
            run += 1;
        } else {
            flush(&mut out, &mut run);
            out.push(c);
        }
    }
    flush(&mut out, &mut run);
    out
}

fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || c.is_ascii_punctuation()
        || matches!(
            c,
            '，' | '。'
                | '、'
                | '；'
                | '：'
                | '？'
                | '！'
                | '“'
                | '”'
                | '‘'
                | '’'
                | '（'
                | '）'
                | '【'
                | '】'
                | '《'
                | '》'
                | '〈'
                | '〉'
                | '「'
                | '」'
                | '『'
                | '』'
                | '…'
                | '—'
                | '～'
                | '·'
                | '￥'
                | '\u{200b}'
                | '\u{feff}'
        )
}

/// A hashed feature bucket, `0..2^HASH_BITS`.
pub type Bucket = u32;

/// 64-bit FNV-1a, fed one byte at a time. Chosen because it is tiny, fast on short
/// strings, and gives the same buckets on every platform and run.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new(kind: u8) -> Self {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.byte(kind);
        h
    }

    fn byte(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }

    fn char(&mut self, c: char) {
        for b in (c as u32).to_le_bytes() {
            self.byte(b);
        }
    }

    fn bucket(self) -> Bucket {
        // Fold the high bits in: FNV's low bits alone are weaker.
        ((self.0 ^ (self.0 >> 32)) & HASH_MASK) as Bucket
    }
}

/// Turns messages into hashed feature counts. Built once per rule set (it holds the
/// keyword automaton); cheap to share across threads.
#[derive(Clone, Debug)]
pub struct Featurizer {
    /// Keywords of every intent, folded; `owners[pattern]` is the intent index.
    keywords: Option<AhoCorasick>,
    owners: Vec<usize>,
}

impl Featurizer {
    /// A featurizer with keyword features for `keywords[i]` = the keywords of intent `i`.
    pub fn new(keywords: &[Vec<String>]) -> Self {
        let mut patterns = Vec::new();
        let mut owners = Vec::new();
        for (intent, words) in keywords.iter().enumerate() {
            for w in words {
                let w = fold(w.trim());
                if !w.is_empty() {
                    patterns.push(w);
                    owners.push(intent);
                }
            }
        }
        let keywords = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(&patterns)
                .expect("keyword automaton within size limits")
        });
        Featurizer { keywords, owners }
    }

    /// The hashed features of `text` with their counts, sorted by bucket.
    pub fn features(&self, text: &str) -> Vec<(Bucket, u32)> {
        let folded = fold(text);
        let mut out: Vec<Bucket> = Vec::with_capacity(folded.len() * 2);

        // Character n-grams over the compact text, digits folded to 0.
        let mut chars: Vec<char> = Vec::with_capacity(folded.len() + 2);
        chars.push('^');
        chars.extend(compact_numbers(folded.chars().filter(|c| !is_separator(*c))));
        chars.push('$');
        let n = chars.len();
        for i in 0..n {
            let mut h = Fnv::new(KIND_CHAR);
            for (len, &c) in chars[i..n.min(i + 3)].iter().enumerate() {
                h.char(c);
                // A lone start or end marker says nothing.
                if len == 0 && (i == 0 || i == n - 1) {
                    continue;
                }
                out.push(h.bucket());
            }
        }

        // Latin-script words and their bigrams; a non-Latin character breaks a bigram chain.
        let mut prev: Option<Fnv> = None;
        let mut word = String::new();
        let flush = |word: &mut String, prev: &mut Option<Fnv>, out: &mut Vec<Bucket>| {
            if word.is_empty() {
                return;
            }
            if word.len() >= LONG_NUMBER && word.chars().all(|c| c == '0') {
                word.clear();
                word.push('#');
            }
            let mut h = Fnv::new(KIND_WORD);
            for c in word.chars() {
                h.char(c);
            }
            out.push(h.bucket());
            if let Some(p) = prev {
                let mut b = *p;
                b.byte(b' ');
                for c in word.chars() {
                    b.char(c);
                }
                out.push(b.bucket());
            }
            *prev = Some(h);
            word.clear();
        };
        for c in folded.chars() {
            if c.is_ascii_alphanumeric() || c == '\'' {
                word.push(if c.is_ascii_digit() { '0' } else { c });
            } else if c == ' ' || c.is_ascii_punctuation() {
                flush(&mut word, &mut prev, &mut out);
            } else {
                flush(&mut word, &mut prev, &mut out);
                prev = None;
            }
        }
        flush(&mut word, &mut prev, &mut out);

        // Keyword hits, one feature per intent however many of its keywords occur.
        if let Some(ac) = &self.keywords {
            let mut hit: Vec<usize> = ac
                .find_overlapping_iter(&folded)
                .map(|m| self.owners[m.pattern().as_usize()])
                .collect();
            hit.sort_unstable();
            hit.dedup();
            for intent in hit {
                let mut h = Fnv::new(KIND_KEYWORD);
                for b in (intent as u32).to_le_bytes() {
                    h.byte(b);
                }
                out.push(h.bucket());
            }
        }

        out.sort_unstable();
        let mut counted: Vec<(Bucket, u32)> = Vec::with_capacity(out.len());
        for b in out {
            match counted.last_mut() {
                Some((last, n)) if *last == b => *n += 1,
                _ => counted.push((b, 1)),
            }
        }
        counted
    }
}

/// A sparse, L2-normalised feature vector over vocabulary rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseVec {
    /// `(row, value)`, rows ascending.
    pub entries: Vec<(u32, f64)>,
    /// The share of the vector's squared length on known rows (1 when every feature was
    /// seen in training, near 0 for a message of unseen n-grams).
    pub coverage: f64,
}

/// The buckets seen in training, each with a weight row and an inverse document frequency.
#[derive(Clone, Debug)]
pub struct Vocab {
    /// Bucket → row + 1 (0 = never seen). A flat table: one probe per feature.
    table: Vec<u32>,
    /// Smoothed idf per row: `ln((1 + n) / (1 + df)) + 1`, as scikit-learn computes it.
    idf: Vec<f64>,
    /// The idf a bucket never seen in training would have (df = 0).
    unseen_idf: f64,
}

impl Vocab {
    /// Rows for every bucket in `docs`, numbered in order of first appearance (so the same
    /// documents always give the same rows).
    pub fn build<'a>(docs: impl IntoIterator<Item = &'a [(Bucket, u32)]>) -> Self {
        Self::build_pruned(docs, 1)
    }

    /// Like [`build`](Self::build), but buckets found in fewer than `min_df` documents get
    /// no row and count as unseen.
    pub fn build_pruned<'a>(docs: impl IntoIterator<Item = &'a [(Bucket, u32)]>, min_df: u32) -> Self {
        let mut table = vec![0u32; 1 << HASH_BITS];
        let mut df: Vec<u32> = Vec::new();
        let mut buckets: Vec<Bucket> = Vec::new();
        let mut n_docs = 0usize;
        for doc in docs {
            n_docs += 1;
            for &(bucket, _) in doc {
                let slot = &mut table[bucket as usize];
                if *slot == 0 {
                    df.push(0);
                    buckets.push(bucket);
                    *slot = df.len() as u32;
                }
                df[*slot as usize - 1] += 1;
            }
        }
        let n = n_docs as f64;
        let mut idf = Vec::with_capacity(df.len());
        for (&d, &bucket) in df.iter().zip(&buckets) {
            if d >= min_df {
                idf.push(((1.0 + n) / (1.0 + f64::from(d))).ln() + 1.0);
                table[bucket as usize] = idf.len() as u32;
            } else {
                table[bucket as usize] = 0;
            }
        }
        Vocab {
            table,
            idf,
            unseen_idf: (1.0 + n).ln() + 1.0,
        }
    }

    /// The bucket of each row in row order, the idf of each row, and the unseen idf: the
    /// vocabulary without its lookup table, for storing a trained model.
    pub(crate) fn to_raw(&self) -> (Vec<Bucket>, Vec<f64>, f64) {
        let mut buckets = vec![0; self.idf.len()];
        for (bucket, &row) in self.table.iter().enumerate() {
            if row != 0 {
                buckets[row as usize - 1] = bucket as Bucket;
            }
        }
        (buckets, self.idf.clone(), self.unseen_idf)
    }

    /// The vocabulary [`to_raw`](Self::to_raw) took apart, or why these parts cannot be
    /// one (a bucket out of range or given twice, lengths that differ, an idf that is not
    /// a finite number).
    pub(crate) fn from_raw(buckets: Vec<Bucket>, idf: Vec<f64>, unseen_idf: f64) -> Result<Vocab, String> {
        if buckets.len() != idf.len() {
            return Err(format!("{} buckets with {} idf values", buckets.len(), idf.len()));
        }
        if !unseen_idf.is_finite() || idf.iter().any(|v| !v.is_finite()) {
            return Err("an idf is not a finite number".into());
        }
        let mut table = vec![0u32; 1 << HASH_BITS];
        for (row, &bucket) in buckets.iter().enumerate() {
            let slot = table
                .get_mut(bucket as usize)
                .ok_or_else(|| format!("bucket {bucket} out of range"))?;
            if *slot != 0 {
                return Err(format!("bucket {bucket} given twice"));
            }
            *slot = row as u32 + 1;
        }
        Ok(Vocab { table, idf, unseen_idf })
    }

    /// How many rows (distinct training features) there are.
    pub fn len(&self) -> usize {
        self.idf.len()
    }

    /// Whether no feature was seen in training.
    pub fn is_empty(&self) -> bool {
        self.idf.is_empty()
    }

    /// The tf-idf vector of a document: sublinear term frequency (`1 + ln tf`) times idf,
    /// divided by the length of the whole vector, unseen buckets included.
    pub fn vectorize(&self, doc: &[(Bucket, u32)]) -> SparseVec {
        let mut entries = Vec::with_capacity(doc.len());
        let mut norm2 = 0.0;
        let mut known2 = 0.0;
        for &(bucket, count) in doc {
            let tf = 1.0 + f64::from(count).ln();
            match self.table[bucket as usize] {
                0 => {
                    let v = tf * self.unseen_idf;
                    norm2 += v * v;
                }
                row => {
                    let v = tf * self.idf[row as usize - 1];
                    norm2 += v * v;
                    known2 += v * v;
                    entries.push((row - 1, v));
                }
            }
        }
        if norm2 > 0.0 {
            let inv = 1.0 / norm2.sqrt();
            for e in &mut entries {
                e.1 *= inv;
            }
        }
        entries.sort_unstable_by_key(|e| e.0);
        SparseVec {
            entries,
            coverage: if norm2 > 0.0 { known2 / norm2 } else { 0.0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_turns_full_width_into_ascii_and_lowercases() {
        assert_eq!(fold("ＸＬ码　Ｏｋ！"), "xl码 ok!");
        assert_eq!(fold("Size偏大吗"), "size偏大吗");
    }

    #[test]
    fn punctuation_spaces_and_width_do_not_change_the_features() {
        let f = Featurizer::new(&[]);
        assert_eq!(f.features("什么时候发货？"), f.features("什么 时候发货"));
        assert_eq!(f.features("ＸＬ有货吗"), f.features("xl有货吗"));
        assert_ne!(f.features("什么时候发货"), f.features("什么时候退货"));
    }

    #[test]
    fn long_numbers_become_one_token() {
        let s: String = compact_numbers("订单202611020001 170cm 138****5678".chars())
            .into_iter()
            .collect();
        assert_eq!(s, "订单# 000cm #");
    }

    #[test]
    fn digits_fold_so_numbers_of_the_same_shape_share_features() {
        let f = Featurizer::new(&[]);
        assert_eq!(f.features("我170 130斤"), f.features("我165 120斤"));
    }

    #[test]
    fn char_ngrams_count_one_to_three_with_markers() {
        let f = Featurizer::new(&[]);
        // "^ab$": unigrams a b, bigrams ^a ab b$, trigrams ^ab ab$ → 7, plus the word "ab".
        let total: u32 = f.features("ab").iter().map(|x| x.1).sum();
        assert_eq!(total, 8);
    }

    #[test]
    fn keyword_features_fire_once_per_intent() {
        let f = Featurizer::new(&[vec!["退货".into(), "退款".into()], vec!["发票".into()]]);
        let plain = Featurizer::new(&[]);
        let with = f.features("退货退款");
        let without = plain.features("退货退款");
        let extra: u32 = with.iter().map(|x| x.1).sum::<u32>() - without.iter().map(|x| x.1).sum::<u32>();
        assert_eq!(extra, 1);
    }

    #[test]
    fn unseen_features_shrink_the_known_part_of_a_vector() {
        let f = Featurizer::new(&[]);
        let train = [f.features("我想退货"), f.features("什么时候发货")];
        let vocab = Vocab::build(train.iter().map(Vec::as_slice));
        let seen = vocab.vectorize(&f.features("我想退货"));
        assert!((seen.coverage - 1.0).abs() < 1e-12);
        let norm: f64 = seen.entries.iter().map(|e| e.1 * e.1).sum();
        assert!((norm - 1.0).abs() < 1e-9);
        let novel = vocab.vectorize(&f.features("帮我订一张去武汉的机票"));
        assert!(novel.coverage < 0.2, "coverage {}", novel.coverage);
    }
}
