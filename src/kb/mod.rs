//! The knowledge base: the shop's products and FAQ from `rules/kb/*.yaml`, indexed for
//! retrieval when the rule set is built.
//!
//! It serves three parts of a turn:
//!
//! - **FAQ answers.** Every FAQ entry (its question and all its variants together) is a
//!   document of a BM25 index over character bigrams, single characters (at a lower
//!   weight) and Latin words ([`text`], [`bm25`]). One document per entry rather than one
//!   per variant, because a customer's paraphrase often borrows a word from one variant
//!   and a word from another (on the demo paraphrases: 66/66 top-1 against 60/66 scoring
//!   each variant alone). When the best entry's confidence (see [`bm25::Bm25::confidence`]) reaches the shop's `faq_threshold`
//!   and beats the runner-up by [`FAQ_MARGIN`], the turn answers with the entry's answer
//!   (`source: faq`). The step sits after rules, promotions and flow starts, before the
//!   fallback: what the editors wrote as a rule is more specific than an FAQ entry, and an
//!   FAQ entry is more trustworthy than the model.
//! - **Prompt passages.** Products (rendered from their attributes) and FAQ entries are
//!   passages of a second index; the top [`PASSAGES_IN_PROMPT`] above [`PASSAGE_MIN`] go
//!   into the model prompt, so the model answers from the shop's facts.
//! - **Recommendations.** [`KnowledgeBase::recommend`] orders in-stock products by a
//!   strategy (newest listed, best selling) for the `recommend(strategy, n)` script
//!   function; which strategy a customer gets is written in the rules, not here.
//!
//! A product in focus (named in the message, or the `product` the request or session
//! carries: the customer on a product page asking about "这件") narrows retrieval: other
//! products' passages and FAQ entries about other products are left out, and the focused
//! product's passage always goes into the prompt.
//!
//! The index is built once per load and lives in the `RuleSet`, so a reload rebuilds it
//! with everything else and a broken kb file keeps the old rules serving ([`load()`]).

pub mod bm25;
pub mod canned;
pub mod check;
pub mod load;
pub mod table;
pub mod text;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use aho_corasick::{AhoCorasick, MatchKind};
use serde::{Deserialize, Serialize};

use bm25::Bm25;
use text::Term;

pub use canned::Canned;
pub use load::load;

/// The least lead of the best FAQ entry's confidence over the runner-up's for a direct
/// answer: two entries that match equally well mean the question is ambiguous, and the
/// model (with both as passages) answers better than a coin toss.
pub const FAQ_MARGIN: f64 = 0.1;
/// The FAQ threshold when the shop block sets no `faq_threshold`.
/// On the demo paraphrases 0.5 answers half of them directly (the rest go to the model
/// with the entry as a passage) and none of the off-topic messages.
pub const DEFAULT_FAQ_THRESHOLD: f64 = 0.5;
/// How many passages go into a model prompt at most.
pub const PASSAGES_IN_PROMPT: usize = 3;
/// The least confidence of a passage for the prompt; below it a passage is noise that the
/// model might repeat as if it answered the question.
pub const PASSAGE_MIN: f64 = 0.2;
/// The recommendation strategies `recommend(strategy, n)` knows.
pub const STRATEGIES: &[&str] = &["new_arrivals", "best_sellers"];
/// The most products one `recommend` call returns.
pub const MAX_RECOMMENDATIONS: usize = 10;

/// A product, as written under `products:` in a kb file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// Unique id (the shop's SKU or item number); a request's `product.id` refers to it.
    pub id: String,
    /// The name customers see.
    pub name: String,
    /// Other names customers use ("重磅T", "落肩卫衣").
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Category, e.g. `T恤`, `卫衣`.
    pub category: String,
    /// Price in yuan.
    pub price: f64,
    /// When it was first listed (new arrivals).
    #[serde(default)]
    pub listed: Option<chrono::NaiveDate>,
    /// Pieces sold (best sellers).
    #[serde(default)]
    pub sales: u64,
    /// Fabric and composition.
    #[serde(default)]
    pub material: Option<String>,
    /// Cut: 修身, 常规, 宽松 …
    #[serde(default)]
    pub fit: Option<String>,
    /// Colours on sale.
    #[serde(default)]
    pub colors: Vec<String>,
    /// Sizes on sale.
    #[serde(default)]
    pub sizes: Vec<String>,
    /// Pieces in stock by colour; a colour at 0 is sold out. Empty: stock not tracked.
    #[serde(default)]
    pub stock: BTreeMap<String, u32>,
    /// Washing and care.
    #[serde(default)]
    pub care: Option<String>,
    /// Selling points.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A sentence or two about it.
    #[serde(default)]
    pub description: Option<String>,
}

impl Product {
    /// Whether any colour is in stock (or stock is not tracked).
    pub fn in_stock(&self) -> bool {
        self.stock.is_empty() || self.stock.values().any(|&n| n > 0)
    }

    /// The passage the model reads about this product: every attribute, in one line.
    pub fn passage(&self) -> String {
        let mut s = format!("{}（{}，{}元）", self.name, self.category, price(self.price));
        let mut parts: Vec<String> = Vec::new();
        if let Some(m) = &self.material {
            parts.push(format!("面料：{m}"));
        }
        if let Some(f) = &self.fit {
            parts.push(format!("版型：{f}"));
        }
        if !self.colors.is_empty() {
            let sold_out: Vec<&str> = self
                .colors
                .iter()
                .filter(|c| self.stock.get(c.as_str()) == Some(&0))
                .map(String::as_str)
                .collect();
            let mut colors = format!("颜色：{}", self.colors.join("、"));
            if !sold_out.is_empty() {
                let _ = write!(colors, "（{}暂时售罄）", sold_out.join("、"));
            }
            parts.push(colors);
        }
        if !self.sizes.is_empty() {
            parts.push(format!("尺码：{}", self.sizes.join("、")));
        }
        if let Some(c) = &self.care {
            parts.push(format!("洗护：{c}"));
        }
        if !self.tags.is_empty() {
            parts.push(format!("特点：{}", self.tags.join("、")));
        }
        if let Some(d) = &self.description {
            parts.push(d.trim().to_string());
        }
        if !parts.is_empty() {
            s.push('：');
            s.push_str(&parts.join("；"));
        }
        s
    }

    /// What the retrieval index reads: the passage plus the aliases customers use.
    fn index_text(&self) -> String {
        format!("{} {}", self.passage(), self.aliases.join(" "))
    }
}

/// `79` for whole yuan, `79.9` otherwise.
pub fn price(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p}")
    }
}

/// An FAQ entry, as written under `faq:` in a kb file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faq {
    /// Unique id, shown in traces and responses (`faq: 运费险理赔`).
    pub id: String,
    /// The question as the shop would write it.
    pub question: String,
    /// Other ways customers ask it.
    #[serde(default)]
    pub variants: Vec<String>,
    /// The answer, sent as written.
    pub answer: String,
    /// Product ids the entry is about; empty: it is about the shop in general.
    #[serde(default)]
    pub products: Vec<String>,
}

/// What a passage is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassageKind {
    /// `products[i]`.
    Product(usize),
    /// `faqs[i]`.
    Faq(usize),
}

/// A piece of text the model may be given.
#[derive(Clone, Debug)]
pub struct Passage {
    /// What it is about.
    pub kind: PassageKind,
    /// The text put into the prompt.
    pub text: String,
}

/// A retrieved passage with its confidence.
#[derive(Clone, Debug, PartialEq)]
pub struct Retrieved {
    /// Index into [`KnowledgeBase::passages`].
    pub passage: usize,
    /// 0..1; 1 for the product in focus, which is always included.
    pub confidence: f64,
}

/// The best FAQ entry for a message.
#[derive(Clone, Debug, PartialEq)]
pub struct FaqMatch {
    /// Index into [`KnowledgeBase::faqs`].
    pub faq: usize,
    /// 0..1, see [`bm25::Bm25::confidence`].
    pub confidence: f64,
    /// The confidence of the second-best entry (0 when there is none).
    pub runner_up: f64,
    /// Whether the entry shares a bigram or a word with the message, not only single
    /// characters: "好的", "是了", "拍了" are all one character once particles go, and that
    /// character alone (好 of 好评) made an entry fully confident.
    pub anchored: bool,
}

impl FaqMatch {
    /// Whether the entry may answer on its own: confident, clearly ahead of the next, and
    /// matched on more than single characters.
    pub fn answers(&self, threshold: f64) -> bool {
        self.anchored && self.confidence >= threshold && self.confidence - self.runner_up >= FAQ_MARGIN
    }
}

/// A message prepared for retrieval (its terms), made once per turn.
#[derive(Clone, Debug)]
pub struct Query {
    terms: Vec<Term>,
}

/// A recommendation strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Most recently listed first.
    NewArrivals,
    /// Most sold first.
    BestSellers,
}

impl Strategy {
    /// The strategy with this name (see [`STRATEGIES`]).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "new_arrivals" => Some(Strategy::NewArrivals),
            "best_sellers" => Some(Strategy::BestSellers),
            _ => None,
        }
    }
}

/// The shop's products and FAQ, indexed.
#[derive(Clone, Debug, Default)]
pub struct KnowledgeBase {
    /// Products, in file order.
    pub products: Vec<Product>,
    /// FAQ entries, in file order.
    pub faqs: Vec<Faq>,
    /// Passages: every product, then every FAQ entry.
    pub passages: Vec<Passage>,
    /// The kb files read.
    pub files: Vec<PathBuf>,
    /// The agents' canned replies, in file order (`canned:` lists; [`canned::search`]).
    pub canned: Vec<Canned>,
    /// Product indices of each FAQ entry's `products`.
    faq_products: Vec<Vec<usize>>,
    /// One document per FAQ entry: its question and variants.
    questions: Bm25,
    /// One document per passage.
    passage_index: Bm25,
    /// Product names and aliases, for "which product does the message name".
    names: Option<AhoCorasick>,
    /// The product of each name pattern.
    name_owner: Vec<usize>,
}

impl KnowledgeBase {
    /// The canned replies for agents of `group` matching `query`, best first
    /// ([`canned::search`]).
    pub fn search_canned(&self, query: &str, group: Option<&str>, limit: usize) -> Vec<&Canned> {
        canned::search(&self.canned, query, group, limit)
    }

    /// Indexes `products` and `faqs` (already checked by [`load()`]: ids unique, FAQ product
    /// references resolved).
    pub fn build(products: Vec<Product>, faqs: Vec<Faq>, files: Vec<PathBuf>) -> Self {
        let faq_products: Vec<Vec<usize>> = faqs
            .iter()
            .map(|f| {
                f.products
                    .iter()
                    .filter_map(|id| products.iter().position(|p| &p.id == id))
                    .collect()
            })
            .collect();
        let question_docs: Vec<Vec<Term>> = faqs
            .iter()
            .map(|f| {
                let mut terms = text::terms(&f.question);
                for v in &f.variants {
                    terms.extend(text::terms(v));
                }
                terms
            })
            .collect();
        let mut passages = Vec::new();
        let mut passage_docs = Vec::new();
        for (i, p) in products.iter().enumerate() {
            passages.push(Passage {
                kind: PassageKind::Product(i),
                text: p.passage(),
            });
            passage_docs.push(text::terms(&p.index_text()));
        }
        for (i, f) in faqs.iter().enumerate() {
            passages.push(Passage {
                kind: PassageKind::Faq(i),
                text: format!("问：{} 答：{}", f.question.trim(), f.answer.trim()),
            });
            let indexed = format!("{} {} {}", f.question, f.variants.join(" "), f.answer);
            passage_docs.push(text::terms(&indexed));
        }
        let mut patterns: Vec<String> = Vec::new();
        let mut name_owner = Vec::new();
        for (i, p) in products.iter().enumerate() {
            for name in std::iter::once(&p.name).chain(&p.aliases) {
                let folded = crate::nlu::features::fold(name);
                if !folded.trim().is_empty() {
                    patterns.push(folded);
                    name_owner.push(i);
                }
            }
        }
        let names = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .expect("product names within automaton limits")
        });
        KnowledgeBase {
            canned: Vec::new(),
            questions: Bm25::build(&question_docs),
            passage_index: Bm25::build(&passage_docs),
            passages,
            faq_products,
            names,
            name_owner,
            products,
            faqs,
            files,
        }
    }

    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.products.is_empty() && self.faqs.is_empty()
    }

    /// The product with this id.
    pub fn product(&self, id: &str) -> Option<usize> {
        self.products.iter().position(|p| p.id == id)
    }

    /// Prepares a message for retrieval.
    pub fn query(&self, message: &str) -> Query {
        Query {
            terms: text::terms(message),
        }
    }

    /// The product the message is about: one it names (longest name or alias first), else
    /// the request's or session's `product` (matched by `id`, then by `name`).
    pub fn focus(&self, message: &str, context_product: Option<&serde_json::Value>) -> Option<usize> {
        if let Some(names) = &self.names {
            let folded = crate::nlu::features::fold(message);
            if let Some(m) = names.find(&folded) {
                return Some(self.name_owner[m.pattern().as_usize()]);
            }
        }
        let product = context_product?;
        let field = |k: &str| product.get(k).and_then(|v| v.as_str());
        if let Some(i) = field("id").and_then(|id| self.product(id)) {
            return Some(i);
        }
        let name = field("name")?;
        self.products
            .iter()
            .position(|p| p.name == name || p.aliases.iter().any(|a| a == name))
    }

    fn faq_allowed(&self, faq: usize, focus: Option<usize>) -> bool {
        let about = &self.faq_products[faq];
        about.is_empty() || focus.is_none_or(|f| about.contains(&f))
    }

    /// Every FAQ entry allowed under `focus` that shares a term with the query, best first,
    /// with its confidence.
    pub fn ranked_faqs(&self, query: &Query, focus: Option<usize>) -> Vec<(usize, f64)> {
        let own = self.questions.self_score(&query.terms);
        let mut ranked: Vec<(usize, f64)> = self
            .questions
            .scores(&query.terms)
            .into_iter()
            .enumerate()
            .filter(|&(faq, score)| score > 0.0 && self.faq_allowed(faq, focus))
            .map(|(faq, score)| (faq, self.questions.confidence(score, own)))
            .collect();
        // Ties go to the entry written first, so results never depend on hashing.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }

    /// The best FAQ entry for the query, if any shares a term with it.
    pub fn best_faq(&self, query: &Query, focus: Option<usize>) -> Option<FaqMatch> {
        let ranked = self.ranked_faqs(query, focus);
        let (faq, confidence) = *ranked.first()?;
        Some(FaqMatch {
            faq,
            confidence,
            runner_up: ranked.get(1).map_or(0.0, |r| r.1),
            anchored: self.questions.shares(faq, &query.terms, 1.0),
        })
    }

    /// Passages for the model prompt: the product in focus first, then the best others
    /// allowed under the focus with confidence at least [`PASSAGE_MIN`], `k` at most.
    pub fn passages_for(&self, query: &Query, focus: Option<usize>, k: usize) -> Vec<Retrieved> {
        let mut out = Vec::new();
        if let Some(f) = focus {
            // Products are the first passages, so product `f` is passage `f`.
            out.push(Retrieved {
                passage: f,
                confidence: 1.0,
            });
        }
        let scores = self.passage_index.scores(&query.terms);
        let own = self.passage_index.self_score(&query.terms);
        let mut ranked: Vec<(usize, f64)> = scores
            .into_iter()
            .enumerate()
            .filter(|&(i, s)| {
                s > 0.0
                    && match self.passages[i].kind {
                        PassageKind::Product(_) => focus.is_none(),
                        PassageKind::Faq(f) => self.faq_allowed(f, focus),
                    }
            })
            .map(|(i, s)| (i, self.passage_index.confidence(s, own)))
            .filter(|&(_, c)| c >= PASSAGE_MIN)
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (passage, confidence) in ranked {
            if out.len() >= k {
                break;
            }
            out.push(Retrieved { passage, confidence });
        }
        out.truncate(k);
        out
    }

    /// Up to `n` in-stock products by `strategy`, restricted to `categories` when any
    /// product is in one of them (a filter that matches nothing is ignored, so a customer
    /// who browsed only sold-out categories still gets a recommendation).
    pub fn recommend(&self, strategy: Strategy, n: usize, categories: &[String]) -> Vec<usize> {
        let in_stock = |p: &Product| p.in_stock();
        let mut picked: Vec<usize> = (0..self.products.len())
            .filter(|&i| in_stock(&self.products[i]) && categories.contains(&self.products[i].category))
            .collect();
        if picked.is_empty() {
            picked = (0..self.products.len())
                .filter(|&i| in_stock(&self.products[i]))
                .collect();
        }
        let p = &self.products;
        match strategy {
            Strategy::NewArrivals => picked.sort_by(|&a, &b| {
                p[b].listed
                    .cmp(&p[a].listed)
                    .then(p[b].sales.cmp(&p[a].sales))
                    .then(a.cmp(&b))
            }),
            Strategy::BestSellers => picked.sort_by(|&a, &b| p[b].sales.cmp(&p[a].sales).then(a.cmp(&b))),
        }
        picked.truncate(n.min(MAX_RECOMMENDATIONS));
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: &str, name: &str, category: &str, listed: &str, sales: u64) -> Product {
        Product {
            id: id.into(),
            name: name.into(),
            aliases: Vec::new(),
            category: category.into(),
            price: 79.0,
            listed: Some(listed.parse().unwrap()),
            sales,
            material: Some("100%棉".into()),
            fit: None,
            colors: vec!["黑色".into(), "白色".into()],
            sizes: vec!["M".into(), "L".into()],
            stock: BTreeMap::new(),
            care: None,
            tags: Vec::new(),
            description: None,
        }
    }

    fn faq(id: &str, question: &str, variants: &[&str], products: &[&str]) -> Faq {
        Faq {
            id: id.into(),
            question: question.into(),
            variants: variants.iter().map(|v| v.to_string()).collect(),
            answer: format!("{id}的答案"),
            products: products.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn kb() -> KnowledgeBase {
        let mut sold_out = product("P3", "华夫格短袖T恤", "T恤", "2026-10-01", 900);
        sold_out.stock = BTreeMap::from([("黑色".to_string(), 0), ("白色".to_string(), 0)]);
        KnowledgeBase::build(
            vec![
                product("P1", "重磅纯棉圆领短袖T恤", "T恤", "2026-03-01", 5000),
                product("P2", "宽松落肩卫衣", "卫衣", "2026-09-01", 1200),
                sold_out,
                product("P4", "纯棉运动短裤", "裤装", "2026-05-01", 3000),
            ],
            vec![
                faq("洗涤", "衣服怎么洗", &["可以机洗吗", "能用洗衣机吗"], &[]),
                faq("运费险", "运费险怎么理赔", &["退货运费谁出"], &[]),
                faq("卫衣起球", "卫衣会起球吗", &["卫衣掉毛吗"], &["P2"]),
            ],
            Vec::new(),
        )
    }

    #[test]
    fn a_paraphrase_finds_its_entry_with_a_margin() {
        let kb = kb();
        let m = kb.best_faq(&kb.query("这件能不能放洗衣机里洗"), None).unwrap();
        assert_eq!(kb.faqs[m.faq].id, "洗涤");
        assert!(m.confidence > m.runner_up);
    }

    #[test]
    fn single_characters_alone_never_answer() {
        let kb = kb();
        // "退" and "款" of 退货运费谁出, one character each once particles go: ranked, but
        // not an answer; a bigram of the entry anchors it.
        let lone = kb.best_faq(&kb.query("退了"), None).unwrap();
        assert_eq!(kb.faqs[lone.faq].id, "运费险");
        assert!(!lone.anchored && !lone.answers(0.0), "{lone:?}");
        let anchored = kb.best_faq(&kb.query("运费险呢"), None).unwrap();
        assert!(anchored.anchored && anchored.answers(0.5), "{anchored:?}");
    }

    #[test]
    fn chat_noise_and_product_ids_do_not_lower_the_confidence() {
        let kb = kb();
        let plain = kb.best_faq(&kb.query("运费险怎么理赔"), None).unwrap();
        let noisy = kb
            .best_faq(&kb.query("亲亲 548812345678 运费险怎么理赔呀亲😊"), None)
            .unwrap();
        assert_eq!((noisy.faq, noisy.confidence), (plain.faq, plain.confidence));
    }

    #[test]
    fn focus_on_another_product_hides_product_specific_entries() {
        let kb = kb();
        let q = kb.query("会起球吗");
        assert_eq!(kb.faqs[kb.best_faq(&q, Some(1)).unwrap().faq].id, "卫衣起球");
        assert!(kb.best_faq(&q, Some(0)).is_none_or(|m| kb.faqs[m.faq].id != "卫衣起球"));
    }

    #[test]
    fn focus_comes_from_a_named_product_then_the_context() {
        let kb = kb();
        let ctx = serde_json::json!({ "name": "宽松落肩卫衣" });
        assert_eq!(kb.focus("这件会缩水吗", Some(&ctx)), Some(1));
        assert_eq!(kb.focus("纯棉运动短裤有黑色吗", Some(&ctx)), Some(3));
        assert_eq!(
            kb.focus("这件会缩水吗", Some(&serde_json::json!({ "id": "P1" }))),
            Some(0)
        );
        assert_eq!(kb.focus("这件会缩水吗", None), None);
    }

    #[test]
    fn passages_put_the_focused_product_first_and_leave_other_products_out() {
        let kb = kb();
        let got = kb.passages_for(&kb.query("运动短裤怎么洗"), Some(1), 3);
        assert_eq!(got[0].passage, 1);
        assert!(
            got.iter()
                .all(|r| !matches!(kb.passages[r.passage].kind, PassageKind::Product(p) if p != 1))
        );
    }

    #[test]
    fn strategies_order_in_stock_products() {
        let kb = kb();
        let ids = |v: Vec<usize>| v.into_iter().map(|i| kb.products[i].id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(kb.recommend(Strategy::NewArrivals, 2, &[])), ["P2", "P4"]);
        assert_eq!(ids(kb.recommend(Strategy::BestSellers, 3, &[])), ["P1", "P4", "P2"]);
        assert_eq!(ids(kb.recommend(Strategy::BestSellers, 3, &["卫衣".into()])), ["P2"]);
        assert_eq!(ids(kb.recommend(Strategy::BestSellers, 1, &["鞋".into()])), ["P1"]);
    }

    #[test]
    fn a_product_passage_names_sold_out_colours() {
        let kb = kb();
        assert!(
            kb.passages[2].text.contains("（黑色、白色暂时售罄）"),
            "{}",
            kb.passages[2].text
        );
        assert!(
            kb.passages[0]
                .text
                .starts_with("重磅纯棉圆领短袖T恤（T恤，79元）：面料：100%棉")
        );
    }
}
