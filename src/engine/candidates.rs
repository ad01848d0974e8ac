//! The candidates of a turn: the rules, promotions and flow starts whose `on` trigger fired
//! for this message (docs/language.md section 4; `on image` when it carries an image), found once per turn and kept by kind, so
//! each step of the turn reads its own list instead of filtering one mixed set again.

use std::collections::BTreeSet;

use crate::RuleSet;
use crate::nlu::Understanding;
use crate::nlu::reading::Reading;
use crate::ruleset::Owner;

/// What this message triggers, each list in answer order: by index, and the rule set keeps
/// rules and promotions sorted by priority, then as written.
#[derive(Debug, Default)]
pub(super) struct Candidates {
    /// Indices into `rules.rules`.
    pub rules: Vec<usize>,
    /// Indices into `rules.promotions`.
    pub promotions: Vec<usize>,
    /// `(flow, start)`: `rules.flows[flow].starts[start]`.
    pub flow_starts: Vec<(usize, usize)>,
    /// Whether a keyword of some rule occurs in the message (a flow takes that as a
    /// digression even when the intent is the flow's own).
    pub keyword_rule: bool,
    /// The flow starts among `flow_starts` that the message's yes or no to a rule's
    /// offer triggered (`start on yes to RULE`): tried before the shop's short-reply
    /// answers, which would otherwise take the yes or no.
    pub answer_starts: Vec<(usize, usize)>,
}

impl Candidates {
    /// The candidates of `message` as understood in `u`: every keyword in the message,
    /// the best intent and each intent level when confident enough (the shop's
    /// `threshold`), and every entity found.
    pub(super) fn find(rules: &RuleSet, message: &str, u: &Understanding) -> Self {
        let triggers = &rules.triggers;
        let threshold = rules.shop.threshold;
        let mut set = triggers.keyword_owners(message);
        let keyword_rule = set.iter().any(|o| matches!(o, Owner::Rule(_)));
        if let Some(intent) = &u.intent
            && u.confidence >= threshold
        {
            set.extend(triggers.intent_owners(intent));
        }
        for (level, confidence) in &u.levels {
            if *confidence >= threshold {
                set.extend(triggers.pattern_owners(level));
            }
        }
        for e in &u.entities {
            set.extend(triggers.entity_owners(&e.name));
        }
        Candidates {
            keyword_rule,
            ..Candidates::by_kind(&set)
        }
    }

    /// The candidates of a platform event: the owners of `on event NAME`, and nothing
    /// else (an event has no words, intent or entities).
    pub(super) fn of_event(rules: &RuleSet, event: &str) -> Self {
        let set: BTreeSet<Owner> = rules.triggers.event_owners(event).collect();
        Candidates::by_kind(&set)
    }

    /// Adds the owners of `on image` (rules, promotions, flow starts), each in its list's
    /// answer order: the message carries an image.
    pub(super) fn add_images(&mut self, rules: &RuleSet) {
        for owner in rules.triggers.image_owners() {
            match owner {
                Owner::Rule(i) => insert(&mut self.rules, i),
                Owner::Promotion(i) => insert(&mut self.promotions, i),
                Owner::FlowStart { flow, start } => insert(&mut self.flow_starts, (flow, start)),
                Owner::Intent(_) => {}
            }
        }
    }

    /// Adds the owners of `on yes to RULE` (or `on no to RULE`) when the message reads as
    /// a clear yes (or no) and kefu's last reply was rule `asked`'s, each in its list's
    /// answer order.
    pub(super) fn add_answers(&mut self, rules: &RuleSet, asked: Option<&str>, reading: Reading) {
        let yes = match reading {
            Reading::Yes => true,
            Reading::No => false,
            _ => return,
        };
        let Some(asked) = asked else { return };
        for owner in rules.triggers.answer_owners(asked, yes) {
            match owner {
                Owner::Rule(i) => insert(&mut self.rules, i),
                Owner::Promotion(i) => insert(&mut self.promotions, i),
                Owner::FlowStart { flow, start } => {
                    insert(&mut self.flow_starts, (flow, start));
                    insert(&mut self.answer_starts, (flow, start));
                }
                Owner::Intent(_) => {}
            }
        }
    }

    /// The owners sorted into their lists, keeping the set's order (by index). An intent's
    /// keywords make no candidate: an intent is not an answer.
    fn by_kind(set: &BTreeSet<Owner>) -> Self {
        let mut candidates = Candidates::default();
        for owner in set {
            match *owner {
                Owner::Rule(i) => candidates.rules.push(i),
                Owner::Promotion(i) => candidates.promotions.push(i),
                Owner::FlowStart { flow, start } => candidates.flow_starts.push((flow, start)),
                Owner::Intent(_) => {}
            }
        }
        candidates
    }
}

/// Inserts `item` into the sorted `list` unless it is there.
fn insert<T: Ord>(list: &mut Vec<T>, item: T) {
    if let Err(at) = list.binary_search(&item) {
        list.insert(at, item);
    }
}
