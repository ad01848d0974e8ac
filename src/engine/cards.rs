//! Cards in a customer's message (docs/language.md, "Cards"): the order cards and product
//! links a platform inserts (`[订单编号:…，订单金额:…]`), found after input safety and
//! before understanding. Each card found is an entity under the card's name (its fields
//! a map); the last one's fields are the request-context map its card names with `as`
//! for this turn and are remembered for the conversation (`Session::card_context`); the
//! cards' text is cut out, so the question that came with them is understood on its own;
//! and a message that is nothing but cards (and punctuation or particles) is "alone".

use crate::nlu::EntityMatch;
use crate::ruleset::Card;

/// The cards of one message.
pub(super) struct Found {
    /// Every card, in order of position, as an entity named after its card, with spans in
    /// the message as the customer sent it (after masking).
    pub matches: Vec<EntityMatch>,
    /// The card of the last match (an index into the cards searched, `RuleSet::cards`):
    /// its fields are the context.
    pub last: usize,
    /// The message with the cards cut out, the pieces around them joined by a space.
    pub rest: String,
}

impl Found {
    /// Whether the message is the cards alone: what is left is blanks, punctuation and
    /// particles ("[订单…] ？", "[订单…] 呢").
    pub fn alone(&self) -> bool {
        self.rest.chars().all(filler)
    }

    /// The last card's fields, as the request-context map it becomes.
    pub fn context(&self) -> serde_json::Value {
        let last = self.matches.last().expect("a card was found");
        serde_json::Value::Object(
            last.fields
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    }

    /// One line for the trace: each card and its fields.
    pub fn describe(&self) -> String {
        self.matches
            .iter()
            .map(|m| {
                let fields: Vec<String> = m.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} ({})", m.name, fields.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A character that says nothing on its own next to a card.
fn filler(c: char) -> bool {
    c.is_whitespace()
        || c.is_ascii_punctuation()
        || matches!(c as u32, 0x3000..=0x303F | 0xFF01..=0xFF0F | 0xFF1A..=0xFF20 | 0xFF5E | 0x2026 | 0x00B7)
        || "嗯啊哦噢呢吧呀哈的了么嘛哇喔～".contains(c)
}

/// The `cards` (a rule set's) in `message`, or `None` when it has none (one search per
/// card kind; a rule set without cards pays nothing).
pub(super) fn find(cards: &[Card], message: &str) -> Option<Found> {
    if cards.is_empty() {
        return None;
    }
    let mut found: Vec<(usize, EntityMatch)> = Vec::new();
    for (i, card) in cards.iter().enumerate() {
        if !card.regex.is_match(message) {
            continue;
        }
        for c in card.regex.captures_iter(message) {
            let whole = c.get(0).expect("match");
            if whole.is_empty() {
                continue;
            }
            let fields = card
                .regex
                .capture_names()
                .flatten()
                .filter_map(|name| c.name(name).map(|g| (name.to_string(), g.as_str().trim().to_string())))
                .collect();
            found.push((
                i,
                EntityMatch {
                    name: card.name.clone(),
                    value: whole.as_str().to_string(),
                    text: whole.as_str().to_string(),
                    start: whole.start(),
                    end: whole.end(),
                    fields,
                },
            ));
        }
    }
    if found.is_empty() {
        return None;
    }
    // In order of position; of two card kinds matching the same text, the first declared.
    found.sort_by_key(|(i, m)| (m.start, *i));
    let mut kept: Vec<(usize, EntityMatch)> = Vec::with_capacity(found.len());
    for (i, m) in found {
        if kept.last().is_none_or(|(_, k)| m.start >= k.end) {
            kept.push((i, m));
        }
    }
    let mut pieces = Vec::new();
    let mut at = 0;
    for (_, m) in &kept {
        pieces.push(message[at..m.start].trim());
        at = m.end;
    }
    pieces.push(message[at..].trim());
    let rest = pieces
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let last = kept.last().map(|(i, _)| *i).expect("not empty");
    Some(Found {
        matches: kept.into_iter().map(|(_, m)| m).collect(),
        last,
        rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cards() -> Vec<Card> {
        let card = |name: &str, pattern: &str| Card {
            name: name.into(),
            regex: regex::Regex::new(pattern).unwrap(),
            context: "order".into(),
            alone: None,
            location: String::new(),
        };
        vec![
            card(
                "订单卡片",
                r"\[订单编号[:：](?<id>\d+)[，,]\s*订单金额[:：](?<amount>[\d.]+)[^\]]*\]",
            ),
            card("商品", r"\[商品编号[:：](?<sku>\d+)\]"),
        ]
    }

    #[test]
    fn a_card_with_a_question_is_cut_out_and_its_fields_are_the_context() {
        let found = find(
            &cards(),
            "[订单编号:202611100005，订单金额:89.00，下单时间:2026-11-10 10:21:05] 这个怎么还没发货",
        )
        .unwrap();
        assert_eq!(found.rest, "这个怎么还没发货");
        assert!(!found.alone());
        assert_eq!(found.last, 0);
        assert_eq!(
            found.context(),
            serde_json::json!({ "id": "202611100005", "amount": "89.00" })
        );
        assert_eq!(found.matches[0].name, "订单卡片");
    }

    #[test]
    fn a_card_alone_may_have_punctuation_and_particles_around_it() {
        for message in [
            "[订单编号:1，订单金额:2]",
            " [订单编号:1，订单金额:2] ？",
            "[订单编号:1,订单金额:2]呢~",
        ] {
            assert!(find(&cards(), message).unwrap().alone(), "{message}");
        }
        assert!(!find(&cards(), "[订单编号:1，订单金额:2] 退").unwrap().alone());
        assert!(find(&cards(), "没有卡片的消息").is_none());
        assert!(find(&[], "[订单编号:1，订单金额:2]").is_none());
    }

    #[test]
    fn several_cards_keep_their_order_and_the_last_is_the_context() {
        let found = find(
            &cards(),
            "[订单编号:1，订单金额:2] 和 [商品编号:77] 哪个先到 [订单编号:3，订单金额:4]",
        )
        .unwrap();
        let names: Vec<&str> = found.matches.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["订单卡片", "商品", "订单卡片"]);
        assert_eq!(found.rest, "和 哪个先到");
        assert_eq!(found.last, 0);
        assert_eq!(found.context()["id"], "3");
    }
}
