//! Lowering rules, promotions and policies: their triggers resolved against the declared
//! intents and entities, shadowed rules and overlapping promotions warned about (unless
//! their audiences are provably apart, `audience`), dates placed in the shop's zone, and
//! the trigger index built over every owner.

use std::collections::BTreeSet;

use chrono::{DateTime, LocalResult, TimeZone};
use chrono_tz::Tz;

use super::{Lowerer, Refs, Scripts};

mod audience;
use crate::diag::Diagnostic;
use crate::dsl::ast::{self, Ident, TriggerKind};
use crate::nlu::Intent;
use crate::ruleset::{Flow, FlowAction, IntentPattern, Owner, Policy, Promotion, Rule, Trigger, TriggerIndex};
use crate::script::Names;

impl Lowerer<'_> {
    pub(super) fn trigger(&mut self, trigger: &ast::Trigger, refs: &Refs<'_>) -> Option<Trigger> {
        match &trigger.kind {
            TriggerKind::Keywords(words) => {
                self.check_keywords(words);
                Some(Trigger::Keywords(words.iter().map(|w| w.value.clone()).collect()))
            }
            TriggerKind::Entity(name) => {
                if !refs.entities.contains(&name.name) {
                    self.unknown(name, "entity", refs.entities.iter().map(String::as_str));
                    return None;
                }
                Some(Trigger::Entity(name.name.clone()))
            }
            // A card found in a message is among its entities, under the card's name.
            TriggerKind::Card(name) => {
                if !refs.cards.contains(&name.name) {
                    self.unknown(name, "card", refs.cards.iter().map(String::as_str));
                    return None;
                }
                Some(Trigger::Entity(name.name.clone()))
            }
            TriggerKind::Event(name) => {
                if !self.shop_event_in_turn(name) {
                    self.check_event(name);
                }
                Some(Trigger::Event(name.name.clone()))
            }
            TriggerKind::Image => Some(Trigger::Image),
            TriggerKind::Intents(patterns) => {
                let mut out = Vec::new();
                for pattern in patterns {
                    out.push(self.intent_pattern(pattern, refs)?);
                }
                Some(Trigger::Intents(out))
            }
            TriggerKind::Answer { yes, rule } => self.answer_trigger(*yes, rule, refs.rules),
        }
    }

    /// Events are open-ended (a platform may send any), but a near-miss of a known one
    /// (`subscrib`, `follow`) would never fire: a warning with the name meant.
    fn check_event(&mut self, name: &Ident) {
        use crate::script::shape::{EVENT_ALIASES, EVENTS, near_miss};
        if let Some(meant) = near_miss(&name.name, &EVENTS, EVENT_ALIASES) {
            self.push(
                Diagnostic::warning(
                    name.span,
                    format!("`{}` is not an event kefu's channels send", name.name),
                )
                .with_label("no turn will be this event")
                .with_help(format!("did you mean `{meant}`? (known events: {})", EVENTS.join(", "))),
            );
        }
    }

    fn intent_pattern(&mut self, pattern: &Ident, refs: &Refs<'_>) -> Option<IntentPattern> {
        let parsed = IntentPattern::parse(&pattern.name);
        if parsed.path.is_empty() || refs.intents.contains(&parsed.path) {
            return Some(parsed);
        }
        self.unknown(pattern, "intent", refs.intents.iter().map(String::as_str));
        None
    }

    pub(super) fn rules(&mut self, rules: &[ast::Rule], compiler: &Scripts, refs: &Refs<'_>) -> Vec<Rule> {
        let names = Names::default();
        let mut out = Vec::new();
        for rule in rules {
            if rule.triggers.is_empty() {
                self.push(
                    Diagnostic::error(rule.name.span, format!("rule `{}` has no `on` trigger", rule.name.name))
                        .with_label("nothing can make this rule answer")
                        .with_help("add `on 意图` or `on keywords \"词\"`"),
                );
            }
            if rule.reply.is_none() && rule.handoff.is_none() {
                self.push(
                    Diagnostic::error(
                        rule.name.span,
                        format!("rule `{}` has neither `reply` nor `handoff`", rule.name.name),
                    )
                    .with_label("this rule would answer with nothing"),
                );
            }
            if let Some(reply) = rule.reply.as_ref().filter(|r| r.value.trim().is_empty()) {
                // `reply ""` is how a drafted rule (`kefu mine --accept`) waits for its
                // text: it must not publish, and the error points at what to fill in.
                self.push(
                    Diagnostic::error(
                        reply.span,
                        format!(
                            "rule `{}` has no reply yet: write what the customer should be told",
                            rule.name.name
                        ),
                    )
                    .with_label("an empty reply"),
                );
            }
            let triggers: Vec<Trigger> = rule.triggers.iter().filter_map(|t| self.trigger(t, refs)).collect();
            let when = rule
                .when
                .as_ref()
                .and_then(|w| compiler.condition(w, &names, self.diagnostics));
            let memos = rule
                .memos
                .iter()
                .filter_map(|m| self.memo(m, compiler, &names, refs.remembered))
                .collect();
            let reply = rule
                .reply
                .as_ref()
                .and_then(|r| compiler.template(r, &names, self.diagnostics));
            out.push(Rule {
                memos,
                name: rule.name.name.clone(),
                triggers,
                when,
                reply,
                handoff: rule
                    .handoff
                    .as_ref()
                    .map(|h| self.handoff_spec(h, crate::ruleset::HandoffKind::Rule)),
                priority: rule.priority.map_or(0, |p| p.value),
                flow_action: rule
                    .flow_action
                    .map(|a| if a.cancel { FlowAction::Cancel } else { FlowAction::End }),
                span: rule.name.span,
                location: self.location(rule.name.span),
            });
        }
        // A stable sort keeps file order among equal priorities.
        out.sort_by_key(|r| std::cmp::Reverse(r.priority));
        self.check_shadowed(&out);
        out
    }

    /// Warns about a rule that can never answer because an earlier rule (in answer order)
    /// with no condition fires on everything that fires it.
    fn check_shadowed(&mut self, rules: &[Rule]) {
        for (i, later) in rules.iter().enumerate() {
            if later.triggers.is_empty() {
                continue;
            }
            let Some(earlier) = rules[..i]
                .iter()
                .find(|e| e.when.is_none() && covers(&e.triggers, &later.triggers))
            else {
                continue;
            };
            let d = Diagnostic::warning(later.span, format!("rule `{}` can never answer", later.name))
                .with_label("shadowed")
                .with_secondary(
                    earlier.span,
                    format!(
                        "`{}` has the same trigger and no `when`, and answers first",
                        earlier.name
                    ),
                )
                .with_help("give this rule a higher `priority`, or give the other one a `when`");
            self.push(d);
        }
    }

    fn datetime(&mut self, lit: &ast::DateTimeLit, tz: Tz, end_of_day: bool) -> Option<DateTime<Tz>> {
        let (y, m, d) = lit.date;
        let Some(date) = chrono::NaiveDate::from_ymd_opt(y, m, d) else {
            self.push(Diagnostic::error(
                lit.span,
                format!("invalid date {y:04}-{m:02}-{d:02}"),
            ));
            return None;
        };
        // A bare date covers the whole day; a `to` time without seconds covers its whole
        // minute, so `to 2026-11-11 23:59` still includes 23:59:30.
        let (h, min, s) = match lit.time {
            None if end_of_day => (23, 59, 59),
            None => (0, 0, 0),
            Some((h, m, s)) => (h, m, s.unwrap_or(if end_of_day { 59 } else { 0 })),
        };
        let Some(time) = chrono::NaiveTime::from_hms_opt(h, min, s) else {
            self.push(Diagnostic::error(lit.span, format!("invalid time {h:02}:{min:02}")));
            return None;
        };
        match tz.from_local_datetime(&date.and_time(time)) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t),
            LocalResult::None => {
                self.push(Diagnostic::error(
                    lit.span,
                    format!("this time does not exist in {} (clocks skip it)", tz.name()),
                ));
                None
            }
        }
    }

    pub(super) fn promotions(
        &mut self,
        promotions: &[ast::Promotion],
        compiler: &Scripts,
        refs: &Refs<'_>,
        tz: Tz,
    ) -> Vec<Promotion> {
        let names = Names::default();
        let mut out: Vec<Promotion> = Vec::new();
        let mut keywords: Vec<BTreeSet<String>> = Vec::new();
        for promo in promotions {
            let window = match &promo.window {
                None => {
                    self.push(
                        Diagnostic::error(
                            promo.name.span,
                            format!("promotion `{}` has no `from ... to ...` window", promo.name.name),
                        )
                        .with_help("add e.g. `from 2026-11-01 00:00 to 2026-11-11 23:59`"),
                    );
                    None
                }
                Some((from, to)) => {
                    let f = self.datetime(from, tz, false);
                    let t = self.datetime(to, tz, true);
                    match (f, t) {
                        (Some(f), Some(t)) if t < f => {
                            self.push(
                                Diagnostic::error(to.span, "the promotion ends before it starts")
                                    .with_secondary(from.span, "it starts here"),
                            );
                            None
                        }
                        (Some(f), Some(t)) => Some((f, t)),
                        _ => None,
                    }
                }
            };
            if promo.say.is_none() {
                self.push(
                    Diagnostic::error(promo.name.span, format!("promotion `{}` has no `say`", promo.name.name))
                        .with_label("nothing to tell the customer"),
                );
            }
            let triggers: Vec<Trigger> = promo.triggers.iter().filter_map(|t| self.trigger(t, refs)).collect();
            let audience_script = promo
                .audience
                .as_ref()
                .and_then(|a| compiler.condition(a, &names, self.diagnostics));
            let say = promo
                .say
                .as_ref()
                .and_then(|s| compiler.template(s, &names, self.diagnostics));
            let (Some((from, to)), Some(say)) = (window, say) else {
                continue;
            };
            let words: BTreeSet<String> = triggers
                .iter()
                .filter_map(|t| if let Trigger::Keywords(k) = t { Some(k) } else { None })
                .flatten()
                .map(|k| k.to_lowercase())
                .collect();
            for (other, other_words) in out.iter().zip(&keywords) {
                let shared: Vec<&String> = words.intersection(other_words).collect();
                // Promotions for customers who can never be the same one (new and VIP,
                // say) each answer their own; only audiences that can meet compete.
                let apart = audience::disjoint(
                    audience_script.as_ref().map(|s| &s.ast),
                    other.audience.as_ref().map(|s| &s.ast),
                );
                if !shared.is_empty() && from <= other.to && other.from <= to && !apart {
                    let list = shared.iter().map(|w| format!("\"{w}\"")).collect::<Vec<_>>().join(", ");
                    let d = Diagnostic::warning(
                        promo.name.span,
                        format!(
                            "promotions `{}` and `{}` overlap in time and share keywords {list}",
                            other.name, promo.name.name
                        ),
                    )
                    .with_label("overlapping window")
                    .with_secondary(other.span, "this promotion is on at the same time")
                    .with_help("only the first by priority will answer; shorten a window or change the keywords");
                    self.push(d);
                }
            }
            keywords.push(words);
            out.push(Promotion {
                name: promo.name.name.clone(),
                from,
                to,
                audience: audience_script,
                say,
                triggers,
                priority: promo.priority.map_or(0, |p| p.value),
                span: promo.name.span,
                location: self.location(promo.name.span),
            });
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.priority));
        out
    }

    pub(super) fn policies(&mut self, policies: &[ast::Policy], refs: &Refs<'_>) -> Vec<Policy> {
        let mut out = Vec::new();
        for policy in policies {
            if policy.applies.is_empty() {
                self.push(
                    Diagnostic::error(
                        policy.name.span,
                        format!("policy `{}` has no `applies`", policy.name.name),
                    )
                    .with_help("say which intents it is about, e.g. `applies 售后.*`"),
                );
            }
            if policy.text.is_none() {
                self.push(Diagnostic::error(
                    policy.name.span,
                    format!("policy `{}` has no `text`", policy.name.name),
                ));
            }
            let applies: Vec<IntentPattern> = policy
                .applies
                .iter()
                .filter_map(|p| self.intent_pattern(p, refs))
                .collect();
            if let Some(text) = &policy.text {
                out.push(Policy {
                    name: policy.name.name.clone(),
                    applies,
                    text: text.value.clone(),
                });
            }
        }
        out
    }
}

/// Whether every trigger in `later` also fires `earlier`.
fn covers(earlier: &[Trigger], later: &[Trigger]) -> bool {
    let keywords: BTreeSet<String> = earlier
        .iter()
        .filter_map(|t| if let Trigger::Keywords(k) = t { Some(k) } else { None })
        .flatten()
        .map(|k| k.to_lowercase())
        .collect();
    let patterns: BTreeSet<&IntentPattern> = earlier
        .iter()
        .filter_map(|t| if let Trigger::Intents(p) = t { Some(p) } else { None })
        .flatten()
        .collect();
    later.iter().all(|t| match t {
        Trigger::Keywords(k) => k.iter().all(|w| keywords.contains(&w.to_lowercase())),
        Trigger::Intents(p) => p.iter().all(|x| patterns.contains(x)),
        Trigger::Entity(_) | Trigger::Answer { .. } | Trigger::Event(_) | Trigger::Image => earlier.contains(t),
    })
}

pub(super) fn build_index(
    intents: &[Intent],
    rules: &[Rule],
    promotions: &[Promotion],
    flows: &[Flow],
) -> TriggerIndex {
    let mut keywords = Vec::new();
    let mut by_intent = Vec::new();
    let mut by_entity = Vec::new();
    let mut by_answer = Vec::new();
    let mut by_event = Vec::new();
    let mut by_image = Vec::new();
    let mut add = |trigger: &Trigger, owner: Owner| match trigger {
        Trigger::Keywords(words) => keywords.extend(words.iter().map(|w| (w.clone(), owner))),
        Trigger::Intents(patterns) => by_intent.extend(patterns.iter().map(|p| (p.clone(), owner))),
        Trigger::Entity(e) => by_entity.push((e.clone(), owner)),
        Trigger::Answer { rule, yes } => by_answer.push(((rule.clone(), *yes), owner)),
        Trigger::Event(name) => by_event.push((name.clone(), owner)),
        Trigger::Image => by_image.push(owner),
    };
    for (i, rule) in rules.iter().enumerate() {
        rule.triggers.iter().for_each(|t| add(t, Owner::Rule(i)));
    }
    for (i, promo) in promotions.iter().enumerate() {
        promo.triggers.iter().for_each(|t| add(t, Owner::Promotion(i)));
    }
    for (f, flow) in flows.iter().enumerate() {
        for (s, start) in flow.starts.iter().enumerate() {
            add(&start.trigger, Owner::FlowStart { flow: f, start: s });
        }
    }
    for (i, intent) in intents.iter().enumerate() {
        keywords.extend(intent.keywords.iter().map(|k| (k.clone(), Owner::Intent(i))));
    }
    let names: Vec<String> = intents.iter().map(|i| i.name.clone()).collect();
    TriggerIndex::build(keywords, by_intent, by_entity, &names)
        .with_answers(by_answer)
        .with_events(by_event)
        .with_images(by_image)
}
