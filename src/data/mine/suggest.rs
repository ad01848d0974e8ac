//! The existing intent and FAQ entry nearest to a cluster, and what an editor could do.
//!
//! - **Nearest intent**: the classifier's probabilities (`Nlu::classify`) of each of the
//!   cluster's distinct messages, averaged; the intent with the highest mean, that mean
//!   its score.
//! - **Nearest FAQ entry**: the FAQ confidences (`KnowledgeBase::ranked_faqs`) of each
//!   message, averaged; the entry with the highest mean.
//! - **Action**, first that holds:
//!   1. nearest intent at or above [`INTENT_SHARE`] × the shop's threshold → add the
//!      messages as examples of it: the classifier already leans that way, the examples
//!      carry it over the threshold. 0.8, not lower: on the evaluation set the classifier
//!      gave 0.3-0.5 to unrelated intents for questions the shop never covered (pet
//!      clothes on `售后.质量问题`), and half the threshold suggested adding them there;
//!   2. nearest FAQ entry at or above [`FAQ_SHARE`] × the shop's FAQ threshold → add them
//!      as variants of the entry;
//!   3. the messages ask one fact (at most a third of them name an order: an `order_no`
//!      entity, a long number or masked digits, "我的订单/快递/包裹…") → a new FAQ entry;
//!   4. otherwise → a new intent (with a rule to answer it), `挖掘.…`.
//!
//!   Without rules, 3 or 4. Suggested ids and names come from the most typical message
//!   ([`slug`]), unique against the rules and the other suggestions of the report.

use std::collections::{BTreeMap, HashSet};

use super::{Action, Nearest, NearestKind};
use crate::ruleset::RuleSet;

/// Share of the shop's intent threshold from which the nearest intent takes the messages.
pub const INTENT_SHARE: f64 = 0.8;
/// Share of the shop's FAQ threshold from which the nearest FAQ entry takes them.
pub const FAQ_SHARE: f64 = 0.7;
/// The most messages of a cluster scored for its nearest neighbours.
const SCORED: usize = 50;

/// The classifier's mean probabilities over `messages` and the best intent among them.
pub fn nearest_intent(rules: &RuleSet, messages: &[&str]) -> Option<Nearest> {
    let intents = rules.nlu.intents();
    if intents.is_empty() || messages.is_empty() {
        return None;
    }
    let mut sum = vec![0.0; intents.len()];
    let scored = &messages[..messages.len().min(SCORED)];
    for m in scored {
        for (s, p) in sum.iter_mut().zip(rules.nlu.classify(m).intents) {
            *s += p;
        }
    }
    let (best, total) = sum
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f64)>, (i, &s)| match best {
            Some((_, b)) if b >= s => best,
            _ => Some((i, s)),
        })?;
    Some(Nearest {
        kind: NearestKind::Intent,
        name: intents[best].clone(),
        score: total / scored.len() as f64,
    })
}

/// The FAQ entry with the highest mean confidence over `messages`.
pub fn nearest_faq(rules: &RuleSet, messages: &[&str]) -> Option<Nearest> {
    let kb = &rules.kb;
    if kb.faqs.is_empty() || messages.is_empty() {
        return None;
    }
    let mut sum: BTreeMap<usize, f64> = BTreeMap::new();
    let scored = &messages[..messages.len().min(SCORED)];
    for m in scored {
        for (faq, confidence) in kb.ranked_faqs(&kb.query(m), None) {
            *sum.entry(faq).or_default() += confidence;
        }
    }
    let (best, total) = sum
        .into_iter()
        .fold(None, |best: Option<(usize, f64)>, (i, s)| match best {
            Some((_, b)) if b >= s => best,
            _ => Some((i, s)),
        })?;
    Some(Nearest {
        kind: NearestKind::Faq,
        name: kb.faqs[best].id.clone(),
        score: total / scored.len() as f64,
    })
}

/// What is taken: names already in the rules and suggested in this report.
pub struct Names {
    taken: HashSet<String>,
}

impl Names {
    /// The intents and FAQ ids of `rules`.
    pub fn new(rules: Option<&RuleSet>) -> Self {
        let mut taken = HashSet::new();
        if let Some(r) = rules {
            taken.extend(r.nlu.intents().iter().cloned());
            taken.extend(r.kb.faqs.iter().map(|f| f.id.clone()));
        }
        Names { taken }
    }

    /// `base`, or `base-2`, `base-3`… the first not taken; taken from now on.
    fn unique(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while self.taken.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        self.taken.insert(name.clone());
        name
    }
}

/// The suggested action for a cluster whose most typical message is `representative`.
pub fn action(
    rules: Option<&RuleSet>,
    intent: Option<&Nearest>,
    faq: Option<&Nearest>,
    messages: &[&str],
    representative: &str,
    names: &mut Names,
) -> Action {
    if let Some(rules) = rules {
        if let Some(i) = intent.filter(|i| i.score >= INTENT_SHARE * rules.shop.threshold) {
            return Action::AddExamples { intent: i.name.clone() };
        }
        if let Some(f) = faq.filter(|f| f.score >= FAQ_SHARE * rules.shop.faq_threshold) {
            return Action::AddVariants { faq: f.name.clone() };
        }
    }
    let slug = slug(representative);
    let about_orders = messages.iter().filter(|m| names_an_order(rules, m)).count();
    if about_orders * 3 <= messages.len() {
        Action::NewFaq {
            id: names.unique(&slug),
        }
    } else {
        Action::NewIntent {
            name: names.unique(&format!("挖掘.{slug}")),
        }
    }
}

/// A new FAQ entry (or, with `intent`, a new intent) named after `representative`,
/// unique against `rules`: what `kefu mine --accept N --as new_faq` writes when the
/// suggestion was another action.
pub fn fresh(rules: Option<&RuleSet>, intent: bool, representative: &str) -> Action {
    let mut names = Names::new(rules);
    let slug = slug(representative);
    if intent {
        Action::NewIntent {
            name: names.unique(&format!("挖掘.{slug}")),
        }
    } else {
        Action::NewFaq {
            id: names.unique(&slug),
        }
    }
}

/// Words of a customer's own order: a question about it needs the order, not a fact.
const ORDER_WORDS: &[&str] = &[
    "我的订单",
    "我的快递",
    "我的包裹",
    "我的退款",
    "我的货",
    "我买的",
    "我下的单",
    "我刚买",
    "我拍的",
    "单号",
    "订单号",
    "物流到哪",
    "到哪了",
];

/// Whether `message` is about the customer's own order.
fn names_an_order(rules: Option<&RuleSet>, message: &str) -> bool {
    let folded = crate::nlu::features::fold(message);
    if ORDER_WORDS.iter().any(|w| folded.contains(w)) {
        return true;
    }
    // A long number or masked digits: an order number, a phone number.
    let mut run = 0;
    for c in folded.chars() {
        run = if c.is_ascii_digit() || c == '*' { run + 1 } else { 0 };
        if run >= 6 {
            return true;
        }
    }
    rules.is_some_and(|r| {
        let today = chrono::Utc::now().date_naive();
        r.nlu
            .recognizer()
            .find(message, today)
            .iter()
            .any(|e| e.name == "order_no")
    })
}

/// Openings that say nothing about the question.
const OPENINGS: &[&str] = &[
    "请问一下",
    "请问",
    "你好",
    "您好",
    "在吗",
    "在不在",
    "亲亲",
    "亲",
    "你们",
    "我想问一下",
    "我想问",
    "想问一下",
    "想问下",
    "问一下",
    "问下",
    "麻烦",
    "那个",
    "就是",
    "客服",
    "hi",
    "hello",
];

/// Particles that end a question.
const ENDINGS: &[char] = &['吗', '呢', '吧', '啊', '呀', '哦', '嘛', '么', '了', '啦', '哈'];

/// The longest slug, in characters.
const SLUG_CHARS: usize = 12;

/// A short readable name made of `text`: its letters and digits (what an intent path and
/// an id allow), without greetings in front and particles at the end, at most
/// [`SLUG_CHARS`] characters; `问题` when nothing is left.
pub fn slug(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(crate::nlu::features::fold_char)
        .filter(|c| c.is_alphanumeric())
        .collect();
    loop {
        let before = s.len();
        for o in OPENINGS {
            if let Some(rest) = s.strip_prefix(o) {
                s = rest.to_string();
            }
        }
        if s.len() == before {
            break;
        }
    }
    let mut chars: Vec<char> = s.chars().collect();
    while chars.last().is_some_and(|c| ENDINGS.contains(c)) {
        chars.pop();
    }
    chars.truncate(SLUG_CHARS);
    if chars.is_empty() {
        "问题".to_string()
    } else {
        chars.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_short_and_plain() {
        assert_eq!(slug("亲，在吗？请问能开发票吗？"), "能开发票");
        assert_eq!(slug("退货地址在哪里呀"), "退货地址在哪里");
        assert_eq!(slug("？？？"), "问题");
        assert_eq!(
            slug("这款衣服有没有加绒的款式可以选择呢我想要厚一点的"),
            "这款衣服有没有加绒的款式"
        );
        assert_eq!(slug("Hello, VIP discount?"), "vipdiscount");
    }

    #[test]
    fn names_are_unique_against_the_rules_and_each_other() {
        let mut names = Names {
            taken: ["发票".to_string()].into_iter().collect(),
        };
        assert_eq!(names.unique("发票"), "发票-2");
        assert_eq!(names.unique("发票"), "发票-3");
        assert_eq!(names.unique("运费"), "运费");
    }

    #[test]
    fn without_rules_order_questions_become_intents_and_facts_faqs() {
        let mut names = Names::new(None);
        let facts = ["能开发票吗", "发票怎么开"];
        let a = action(None, None, None, &facts, "能开发票吗", &mut names);
        assert_eq!(
            a,
            Action::NewFaq {
                id: "能开发票".into()
            }
        );
        let orders = ["我的快递到哪了", "订单 2026110112345 还没发"];
        let a = action(None, None, None, &orders, "我的快递到哪了", &mut names);
        assert_eq!(
            a,
            Action::NewIntent {
                name: "挖掘.我的快递到哪".into()
            }
        );
    }
}
