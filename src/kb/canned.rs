//! Canned replies: texts agents send often (`canned:` lists in `rules/kb/*.yaml`, the demo's
//! in `rules/kb/canned.yaml`), kept with the knowledge base so that they reload with the
//! rules, and searched by the agents' reply box (`GET /admin/canned?q=&group=`).
//!
//! The search is small and local: a title, text or tag containing the query, then the share
//! of the query's character pairs (bigrams, as Chinese is written without spaces) found in
//! the entry. A few hundred entries are searched in well under a millisecond, so there is no
//! index beyond each entry's pairs, made at load.

use serde::{Deserialize, Serialize};

use crate::diag::Span;

/// One canned reply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canned {
    /// What the agent looks for it by; unique.
    pub title: String,
    /// What is sent (the agent may edit it first).
    pub text: String,
    /// Words it is also found by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The queue (group of agents) it is meant for; everyone's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Where its `title:` is written (set at load), for diagnostics.
    #[serde(skip)]
    pub span: Option<Span>,
    /// Its character pairs (title, text and tags), sorted and unique (set at load).
    #[serde(skip)]
    grams: Vec<(char, char)>,
}

impl Canned {
    /// A canned reply as written, its search pairs made.
    pub fn new(title: impl Into<String>, text: impl Into<String>, tags: Vec<String>, group: Option<String>) -> Self {
        let mut canned = Canned {
            title: title.into(),
            text: text.into(),
            tags,
            group,
            span: None,
            grams: Vec::new(),
        };
        canned.index();
        canned
    }

    /// Makes the search pairs (after serde read the fields).
    pub(super) fn index(&mut self) {
        let mut grams = bigrams(&self.title);
        grams.extend(bigrams(&self.text));
        for tag in &self.tags {
            grams.extend(bigrams(tag));
        }
        grams.sort_unstable();
        grams.dedup();
        self.grams = grams;
    }

    /// How well the entry matches `query` (folded, see [`fold`]) and its pairs: 0 when
    /// not at all.
    fn score(&self, query: &str, grams: &[(char, char)]) -> f64 {
        let contains = |field: &str| fold(field).contains(query);
        let mut score = 0.0;
        if contains(&self.title) {
            score += 3.0;
        }
        if self.tags.iter().any(|t| fold(t) == query) {
            score += 3.0;
        } else if self.tags.iter().any(|t| contains(t)) {
            score += 2.0;
        }
        if contains(&self.text) {
            score += 1.5;
        }
        if !grams.is_empty() {
            let found = grams.iter().filter(|g| self.grams.binary_search(g).is_ok()).count();
            score += 2.0 * found as f64 / grams.len() as f64;
        }
        score
    }
}

/// The least pair overlap score (of 2) an entry containing nothing of the query needs to be
/// found: half of the query's pairs.
const LEAST_OVERLAP: f64 = 1.0;

/// The most entries a search returns, whatever the caller asks.
pub const SEARCH_LIMIT: usize = 50;

/// The canned replies for `group` (its own and everyone's) that match `query`, best first
/// (ties in file order), at most `limit` (and [`SEARCH_LIMIT`]). An empty query lists
/// them in file order, the group's own first.
pub fn search<'a>(canned: &'a [Canned], query: &str, group: Option<&str>, limit: usize) -> Vec<&'a Canned> {
    let limit = limit.min(SEARCH_LIMIT);
    let query = fold(query);
    // Longer queries than any title are cut: a pasted paragraph must not cost more.
    let query: String = query.chars().take(64).collect();
    let grams = {
        let mut g = bigrams(&query);
        g.sort_unstable();
        g.dedup();
        g
    };
    let mut found: Vec<(f64, usize, &Canned)> = canned
        .iter()
        .enumerate()
        .filter(|(_, c)| match (group, &c.group) {
            (Some(g), Some(own)) => own == g,
            _ => true,
        })
        .filter_map(|(i, c)| {
            let own = f64::from(u8::from(group.is_some() && c.group.as_deref() == group)) * 0.5;
            if query.is_empty() {
                return Some((own, i, c));
            }
            let score = c.score(&query, &grams);
            (score >= LEAST_OVERLAP).then_some((score + own, i, c))
        })
        .collect();
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    found.into_iter().take(limit).map(|(_, _, c)| c).collect()
}

/// Text as searched: lowercase, without blanks.
fn fold(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The character pairs of `text`, folded.
fn bigrams(text: &str) -> Vec<(char, char)> {
    let chars: Vec<char> = fold(text).chars().collect();
    chars.windows(2).map(|w| (w[0], w[1])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Vec<Canned> {
        vec![
            Canned::new(
                "退货地址",
                "亲，退货请寄到：浙江省杭州市…",
                vec!["寄回".into()],
                Some("售后".into()),
            ),
            Canned::new("发货时间", "亲，16:00 前付款当天发出～", vec!["几天发".into()], None),
            Canned::new(
                "催发货",
                "已为您催促仓库尽快发出，请耐心等待～",
                vec![],
                Some("售前".into()),
            ),
            Canned::new(
                "Refund timing",
                "Refunds reach your account in 1-3 days.",
                vec!["退款".into()],
                None,
            ),
        ]
    }

    fn titles(found: Vec<&Canned>) -> Vec<&str> {
        found.iter().map(|c| c.title.as_str()).collect()
    }

    #[test]
    fn a_title_tag_or_text_containing_the_query_is_found_best_first() {
        let canned = demo();
        assert_eq!(titles(search(&canned, "退货", None, 10)), ["退货地址"]);
        assert_eq!(titles(search(&canned, "寄回", None, 10)), ["退货地址"]);
        assert_eq!(titles(search(&canned, "退款", None, 10)), ["Refund timing"]);
        assert_eq!(titles(search(&canned, "refund", None, 10)), ["Refund timing"]);
        // Both titles contain 发货: file order.
        assert_eq!(titles(search(&canned, "发货", None, 10)), ["发货时间", "催发货"]);
    }

    #[test]
    fn pairs_find_an_entry_asked_for_in_other_words() {
        let canned = demo();
        // No field contains 退货寄哪, but 退货 and 货寄 … are pairs of 退货地址's text.
        assert_eq!(titles(search(&canned, "退货寄到哪", None, 10)), ["退货地址"]);
        assert!(search(&canned, "今天天气", None, 10).is_empty());
    }

    #[test]
    fn a_group_sees_its_own_and_everyones_entries() {
        let canned = demo();
        assert_eq!(
            titles(search(&canned, "", Some("售后"), 10)),
            ["退货地址", "发货时间", "Refund timing"]
        );
        assert_eq!(titles(search(&canned, "发货", Some("售后"), 10)), ["发货时间"]);
        assert_eq!(search(&canned, "", None, 2).len(), 2);
        assert_eq!(search(&canned, "", None, 1000).len(), 4);
    }
}
