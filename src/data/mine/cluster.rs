//! Misses grouped by what they ask, without a model: tf-idf vectors over the knowledge
//! base's retrieval terms, cosine similarity, candidates through an inverted index.
//!
//! 1. **Identical messages collapse** on their folded form (`kb::text::cache_form`: width,
//!    case, punctuation, spaces): "运费险怎么买？" and "运费险 怎么买" are one item with a
//!    count.
//! 2. **Vectors**: each item's terms (`kb::text::terms`, the same folding and the same
//!    chat noise left out as the FAQ retrieval: particles, 亲/在吗, filler bigrams, ids)
//!    weighted by tf-idf over the items, L2-normalised.
//! 3. **Near duplicates** (cosine ≥ [`NEAR`]) are joined; candidates come from the
//!    postings of each term (terms in more than [`COMMON_SHARE`] of the items are too
//!    common to propose pairs, though they still count in the cosine), never all pairs.
//! 4. **Paraphrases**: two groups whose centroids are close (cosine ≥ [`MERGE`]) and each
//!    other's closest join, a few passes, centroids recomputed after each (reciprocal
//!    nearest neighbours: average linkage's idea at the cost of an index lookup per
//!    group, without single linkage's chains).
//! 5. With the rules, two groups whose messages the classifier puts on the same intent
//!    join when their centroids are at least [`JOIN`] alike and each is the other's
//!    closest of that intent ([`join`]).
//!
//! Every order is fixed (items by their folded text, groups by their first item), so the
//! same log gives the same clusters. The thresholds and weights were chosen on the
//! evaluation set of `tests/data/mine/eval/` (`tests/mine_eval.rs`; with these: purity
//! 0.97, mean recall 0.53, 6 of 14 topics found): lower merge thresholds found more of a
//! topic's paraphrases but mixed topics (0.24: purity 0.88 with 5 found; before merging
//! became mutual, 0.22 gave 0.80), higher ones left paraphrases apart (0.38: mean recall
//! 0.33); English function words out took purity from 0.93 to 1.0 (four questions
//! starting "can I" had made one cluster); single characters weighing as much as pairs
//! found one topic more. The label join changed nothing there. What stays out of reach
//! are wordings with no character in common (有礼盒吗, 可以写张贺卡一起寄吗): that needs a
//! model of meaning, which no offline package gives kefu today.

use std::collections::HashMap;

use super::Miss;
use crate::kb::text::{cache_form, terms};

/// Cosine at or above which two messages are the same question written differently.
pub const NEAR: f32 = 0.7;
/// Cosine of centroids at or above which two groups are one question.
pub const MERGE: f32 = 0.28;
/// Cosine of centroids at or above which two groups the classifier puts on one intent join.
pub const JOIN: f32 = 0.15;
/// Terms in more than this share of the items propose no candidate pairs.
const COMMON_SHARE: usize = 20;
/// Passes of centroid merging.
const PASSES: usize = 12;

/// English words that say how a question is asked, not what about ("can I pay with
/// a credit card" and "can I become a reseller" share four of them): left out of the
/// vectors, sorted for a binary search. Chinese has no such list here: `kb::text::terms`
/// already drops its particles and question frames.
const FUNCTION_WORDS: &[&str] = &[
    "a", "about", "an", "any", "are", "as", "at", "be", "can", "could", "do", "does", "for", "get", "have", "how", "i",
    "if", "in", "is", "it", "me", "my", "of", "on", "or", "please", "should", "that", "the", "there", "this", "to",
    "we", "what", "when", "where", "which", "will", "with", "would", "you", "your",
];

/// A sparse vector: `(term, weight)`, terms ascending.
pub type Vector = Vec<(u32, f32)>;

/// Distinct misses: one folded message and how often it came.
#[derive(Debug)]
pub struct Item {
    /// Its most frequent spelling (ties: the smallest text).
    pub text: String,
    /// The misses that are it.
    pub misses: Vec<usize>,
    /// Its tf-idf vector, unit length (empty when it has no terms).
    pub vector: Vector,
}

/// The misses' items and their groups.
#[derive(Debug)]
pub struct Clustering {
    /// The distinct messages, ordered by folded text.
    pub items: Vec<Item>,
    /// Groups of item indices (each ascending), ordered by their first item.
    pub groups: Vec<Vec<usize>>,
    /// Misses with no text to compare (emoji, punctuation, a number alone).
    pub textless: usize,
}

/// Collapses, vectorises and groups `misses`.
pub fn cluster(misses: &[Miss]) -> Clustering {
    let (mut items, textless) = collapse(misses);
    vectorise(&mut items);
    let vectors: Vec<&Vector> = items.iter().map(|i| &i.vector).collect();
    let mut sets = Sets::new(items.len());
    near_duplicates(&vectors, &mut sets);
    let mut groups = sets.groups();
    for _ in 0..PASSES {
        let centroids: Vec<Vector> = groups.iter().map(|g| centroid(&vectors, g)).collect();
        let mut over = Sets::new(groups.len());
        let mut merged = false;
        let best = best_partners(&centroids, MERGE);
        for (g, b) in best.iter().enumerate() {
            // Only pairs that are each other's closest: a group taking its closest partner
            // whatever that partner prefers chained unrelated topics through vague
            // messages ("手机号 logo 退款") into one cluster of everything.
            if let Some(b) = *b
                && best[b] == Some(g)
            {
                merged |= over.union(g, b);
            }
        }
        if !merged {
            break;
        }
        groups = regroup(&groups, &mut over);
    }
    Clustering {
        items,
        groups,
        textless,
    }
}

/// Joins the groups that share a label (the classifier's confident intent), whose
/// centroids are at least [`JOIN`] alike and that are each other's closest of the label.
pub fn join(clustering: &Clustering, groups: &[Vec<usize>], labels: &[Option<usize>]) -> Vec<Vec<usize>> {
    let vectors: Vec<&Vector> = clustering.items.iter().map(|i| &i.vector).collect();
    let centroids: Vec<Vector> = groups.iter().map(|g| centroid(&vectors, g)).collect();
    let mut by_label: HashMap<usize, Vec<usize>> = HashMap::new();
    for (g, label) in labels.iter().enumerate() {
        if let Some(l) = label {
            by_label.entry(*l).or_default().push(g);
        }
    }
    let mut sets = Sets::new(groups.len());
    let mut labels: Vec<_> = by_label.into_iter().collect();
    labels.sort();
    for (_, members) in labels {
        // Bounded: a label shared by thousands of groups compares the first 2,000 only.
        let members = &members[..members.len().min(2000)];
        // Each group's closest other group of the label; only mutual closest pairs join,
        // so that one intent's many groups do not chain into one.
        let mut best: HashMap<usize, (usize, f32)> = HashMap::new();
        for (n, &a) in members.iter().enumerate() {
            for &b in &members[n + 1..] {
                let sim = dot(&centroids[a], &centroids[b]);
                if sim < JOIN {
                    continue;
                }
                for (x, y) in [(a, b), (b, a)] {
                    if best.get(&x).is_none_or(|&(_, s)| sim > s) {
                        best.insert(x, (y, sim));
                    }
                }
            }
        }
        for &a in members {
            if let Some(&(b, _)) = best.get(&a)
                && best.get(&b).map(|&(c, _)| c) == Some(a)
            {
                sets.union(a, b);
            }
        }
    }
    regroup(groups, &mut sets)
}

/// The unit-length mean of the group's item vectors (each distinct message one vote).
pub fn centroid(vectors: &[&Vector], group: &[usize]) -> Vector {
    let mut sum: HashMap<u32, f32> = HashMap::new();
    for &i in group {
        for &(t, w) in vectors[i] {
            *sum.entry(t).or_default() += w;
        }
    }
    let mut v: Vector = sum.into_iter().collect();
    v.sort_unstable_by_key(|e| e.0);
    normalise(&mut v);
    v
}

/// The cosine of two unit vectors.
pub fn dot(a: &Vector, b: &Vector) -> f32 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    sum
}

fn normalise(v: &mut Vector) {
    let norm = v.iter().map(|e| e.1 * e.1).sum::<f32>().sqrt();
    if norm > 0.0 {
        for e in v.iter_mut() {
            e.1 /= norm;
        }
    }
}

/// Items by folded text; misses whose folded text is empty are counted apart.
fn collapse(misses: &[Miss]) -> (Vec<Item>, usize) {
    let mut by_key: HashMap<String, (Vec<usize>, HashMap<&str, usize>)> = HashMap::new();
    let mut textless = 0;
    for (n, miss) in misses.iter().enumerate() {
        let key = cache_form(&miss.message);
        if key.is_empty() {
            textless += 1;
            continue;
        }
        let entry = by_key.entry(key).or_default();
        entry.0.push(n);
        *entry.1.entry(miss.message.trim()).or_default() += 1;
    }
    let mut keyed: Vec<_> = by_key.into_iter().collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let items = keyed
        .into_iter()
        .map(|(_, (misses, spellings))| {
            let text = spellings
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
                .map(|(t, _)| t.to_string())
                .unwrap_or_default();
            Item {
                text,
                misses,
                vector: Vector::new(),
            }
        })
        .collect();
    (items, textless)
}

/// Sets each item's tf-idf vector (smoothed idf over the items, as scikit-learn's).
fn vectorise(items: &mut [Item]) {
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut df: Vec<u32> = Vec::new();
    for item in items.iter_mut() {
        let mut v: Vector = Vec::new();
        for t in terms(&item.text) {
            if FUNCTION_WORDS.binary_search(&t.text.as_str()).is_ok() {
                continue;
            }
            let next = ids.len() as u32;
            // Retrieval gives a single character half a pair's weight; a short message's
            // topic is often one character two wordings share (礼盒, 礼物; 花呗, 花被), so
            // here it weighs as much as a pair (on the evaluation set: purity 0.93 → 0.97,
            // topics found 5 → 6 of 14, mean recall 0.47 → 0.53).
            let w = if t.text.chars().count() == 1 && !t.text.is_ascii() {
                t.weight * 2.0
            } else {
                t.weight
            };
            let id = *ids.entry(t.text).or_insert(next);
            v.push((id, w));
        }
        v.sort_unstable_by_key(|e| e.0);
        let mut merged: Vector = Vec::with_capacity(v.len());
        for (t, w) in v {
            match merged.last_mut() {
                Some(last) if last.0 == t => last.1 += w,
                _ => merged.push((t, w)),
            }
        }
        for &(t, _) in &merged {
            if df.len() <= t as usize {
                df.resize(t as usize + 1, 0);
            }
            df[t as usize] += 1;
        }
        item.vector = merged;
    }
    let n = items.len() as f32;
    for item in items.iter_mut() {
        for e in item.vector.iter_mut() {
            e.1 *= ((1.0 + n) / (1.0 + df[e.0 as usize] as f32)).ln() + 1.0;
        }
        normalise(&mut item.vector);
    }
}

/// Joins items at least [`NEAR`] alike, finding candidates through the postings of the
/// terms of items before each one.
fn near_duplicates(vectors: &[&Vector], sets: &mut Sets) {
    for (a, b) in pairs_at_least(vectors, NEAR) {
        sets.union(a, b);
    }
}

/// The pairs `(a, b)`, `b < a`, of vectors at least `floor` alike, through an inverted
/// index: only vectors sharing a term that is not too common are compared.
fn pairs_at_least(vectors: &[&Vector], floor: f32) -> Vec<(usize, usize)> {
    let mut df: HashMap<u32, usize> = HashMap::new();
    for v in vectors {
        for &(t, _) in v.iter() {
            *df.entry(t).or_default() += 1;
        }
    }
    let common = (vectors.len() / COMMON_SHARE).max(200);
    let mut postings: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut seen = vec![false; vectors.len()];
    let mut touched = Vec::new();
    let mut out = Vec::new();
    for (a, v) in vectors.iter().enumerate() {
        for &(t, _) in v.iter() {
            if df[&t] > common {
                continue;
            }
            let list = postings.entry(t).or_default();
            for &b in list.iter() {
                if !seen[b] {
                    seen[b] = true;
                    touched.push(b);
                }
            }
            list.push(a);
        }
        touched.sort_unstable();
        for &b in &touched {
            seen[b] = false;
            if dot(v, vectors[b]) >= floor {
                out.push((a, b));
            }
        }
        touched.clear();
    }
    out
}

/// For each vector, the most alike other one at or above `floor` (ties: the first).
fn best_partners(vectors: &[Vector], floor: f32) -> Vec<Option<usize>> {
    let refs: Vec<&Vector> = vectors.iter().collect();
    let mut best: Vec<Option<(usize, f32)>> = vec![None; vectors.len()];
    for (a, b) in pairs_at_least(&refs, floor) {
        let sim = dot(&vectors[a], &vectors[b]);
        for (x, y) in [(a, b), (b, a)] {
            let better = match best[x] {
                None => true,
                Some((z, s)) => sim > s || (sim == s && y < z),
            };
            if better {
                best[x] = Some((y, sim));
            }
        }
    }
    best.into_iter().map(|b| b.map(|(y, _)| y)).collect()
}

/// `groups` merged as `sets` (over group indices) says, in the fixed order.
fn regroup(groups: &[Vec<usize>], sets: &mut Sets) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut slot: HashMap<usize, usize> = HashMap::new();
    for (g, members) in groups.iter().enumerate() {
        let root = sets.find(g);
        let s = *slot.entry(root).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        out[s].extend_from_slice(members);
    }
    for g in &mut out {
        g.sort_unstable();
    }
    out.sort_by_key(|g| g[0]);
    out
}

/// Union-find over indices.
struct Sets {
    parent: Vec<usize>,
}

impl Sets {
    fn new(n: usize) -> Self {
        Sets {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    /// Joins the sets of `a` and `b`; whether they were apart.
    fn union(&mut self, a: usize, b: usize) -> bool {
        let (a, b) = (self.find(a), self.find(b));
        if a == b {
            return false;
        }
        // The smaller index is the root, so roots do not depend on the order of unions.
        let (root, child) = if a < b { (a, b) } else { (b, a) };
        self.parent[child] = root;
        true
    }

    /// The sets as groups of indices, each ascending, ordered by their first index.
    fn groups(&mut self) -> Vec<Vec<usize>> {
        let singles: Vec<Vec<usize>> = (0..self.parent.len()).map(|i| vec![i]).collect();
        regroup(&singles, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::mine::MissReason;

    fn misses(texts: &[&str]) -> Vec<Miss> {
        texts
            .iter()
            .enumerate()
            .map(|(n, t)| Miss {
                ts: chrono::DateTime::parse_from_rfc3339("2026-11-01T10:00:00+08:00").unwrap(),
                session: format!("s{n}"),
                message: t.to_string(),
                reason: MissReason::Fallback,
            })
            .collect()
    }

    fn texts(c: &Clustering) -> Vec<Vec<&str>> {
        c.groups
            .iter()
            .map(|g| g.iter().map(|&i| c.items[i].text.as_str()).collect())
            .collect()
    }

    #[test]
    fn identical_folded_messages_collapse_with_their_count() {
        let c = cluster(&misses(&[
            "运费险怎么买？",
            "运费险 怎么买",
            "ＶＩＰ 折扣",
            "vip折扣",
            "😀",
        ]));
        assert_eq!(c.items.len(), 2);
        assert_eq!(c.textless, 1);
        let counts: Vec<usize> = c.items.iter().map(|i| i.misses.len()).collect();
        assert_eq!(counts, [2, 2]);
    }

    #[test]
    fn paraphrases_group_and_other_questions_stay_apart() {
        let c = cluster(&misses(&[
            "能开发票吗",
            "可以开发票吗",
            "发票怎么开",
            "亲 开发票",
            "退货地址在哪",
            "退货寄到哪里",
            "退货地址是什么",
            "支持花呗分期吗",
        ]));
        let groups = texts(&c);
        let of = |t: &str| groups.iter().position(|g| g.contains(&t)).unwrap();
        assert_eq!(of("能开发票吗"), of("发票怎么开"));
        assert_eq!(of("能开发票吗"), of("亲 开发票"));
        assert_eq!(of("退货地址在哪"), of("退货地址是什么"));
        assert_ne!(of("能开发票吗"), of("退货地址在哪"));
        assert_ne!(of("支持花呗分期吗"), of("退货地址在哪"));
    }

    #[test]
    fn the_result_does_not_depend_on_the_order_of_the_log() {
        let mut texts_in: Vec<&str> = vec!["发票怎么开", "退货地址在哪", "能开发票吗", "退货寄到哪里", "花呗"];
        let a = texts(&cluster(&misses(&texts_in))).concat().join("|");
        texts_in.reverse();
        let b = texts(&cluster(&misses(&texts_in))).concat().join("|");
        assert_eq!(a, b);
    }

    #[test]
    fn joining_by_label_needs_a_shared_label_and_some_likeness() {
        let c = cluster(&misses(&["发票怎么开", "退货地址在哪", "专票税点多少", "花呗"]));
        let groups = c.groups.clone();
        assert_eq!(groups.len(), 4, "{:?}", texts(&c));
        let of = |t: &str| groups.iter().position(|g| c.items[g[0]].text == t).unwrap();
        let mut labels = vec![None; 4];
        labels[of("发票怎么开")] = Some(7);
        labels[of("专票税点多少")] = Some(7);
        labels[of("退货地址在哪")] = Some(7);
        let joined = join(&c, &groups, &labels);
        let vectors: Vec<&Vector> = c.items.iter().map(|i| &i.vector).collect();
        let close = dot(
            &centroid(&vectors, &groups[of("发票怎么开")]),
            &centroid(&vectors, &groups[of("专票税点多少")]),
        ) >= JOIN;
        assert_eq!(joined.len(), if close { 3 } else { 4 }, "{joined:?}");
        let together = |a: &str, b: &str| {
            joined
                .iter()
                .any(|g| g.contains(&groups[of(a)][0]) && g.contains(&groups[of(b)][0]))
        };
        assert!(!together("发票怎么开", "退货地址在哪"), "nothing alike: never joined");
        assert!(!together("发票怎么开", "花呗"), "no label: never joined");
        let unlabelled = join(&c, &groups, &[None, None, None, None]);
        assert_eq!(unlabelled.len(), 4);
    }
}
