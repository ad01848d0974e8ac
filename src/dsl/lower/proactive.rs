//! Lowering `proactive` items: the shop events they listen for (`on event TYPE`, checked
//! against the known shop events and told apart from the platform events that come as
//! turns), their condition and message compiled in the proactive scope
//! (`script::shape::PROACTIVE_VARIABLES`: `event`, no `message`), the promotion they
//! offer, their daily limit and quiet hours. Sorted highest `priority` first, then file
//! order, which is the order `Engine::event` tries them in.

use super::{Lowerer, Scripts};
use crate::diag::Diagnostic;
use crate::dsl::ast::{self, Ident, TriggerKind};
use crate::ruleset::Proactive;
use crate::script::shape::{EVENT_ALIASES, EVENT_TYPE_ALIASES, EVENT_TYPES, EVENTS, Scope, near_miss};
use crate::script::{Names, Texts};

/// A proactive item's `limit N per day` when it gives none: one message a day.
pub(crate) const DEFAULT_PER_DAY: u32 = 1;

/// The most a `limit N per day` may allow.
const MAX_PER_DAY: i64 = 20;

impl Lowerer<'_> {
    /// Lowers the `proactive` items; `promotions` are the declared promotions' names, for
    /// `offer`.
    pub(super) fn proactive(
        &mut self,
        items: &[ast::Proactive],
        compiler: &Scripts,
        promotions: &[String],
    ) -> Vec<Proactive> {
        let names = Names {
            scope: Scope::Proactive,
            ..Names::default()
        };
        let mut out = Vec::new();
        for item in items {
            let mut events: Vec<String> = Vec::new();
            for trigger in &item.triggers {
                match &trigger.kind {
                    TriggerKind::Event(name) => {
                        self.check_shop_event(name);
                        if !events.contains(&name.name) {
                            events.push(name.name.clone());
                        }
                    }
                    _ => self.push(
                        Diagnostic::error(trigger.span, "a proactive item listens for shop events only")
                            .with_label("not an event")
                            .with_help("write `on event TYPE`, e.g. `on event checkout_abandoned`; a proactive item is not an answer to a message"),
                    ),
                }
            }
            if item.triggers.is_empty() {
                self.push(
                    Diagnostic::error(item.name.span, format!("proactive `{}` has no `on event`", item.name.name))
                        .with_label("nothing can make it send")
                        .with_help(format!(
                            "say which shop event it is for, e.g. `on event checkout_abandoned` (known events: {})",
                            EVENT_TYPES.join(", ")
                        )),
                );
            }
            let Some(say_text) = &item.say else {
                self.push(
                    Diagnostic::error(item.name.span, format!("proactive `{}` has no `say`", item.name.name))
                        .with_label("nothing to send the customer")
                        .with_help("add the message, e.g. `say \"亲，您的订单已发货～\"`"),
                );
                continue;
            };
            if say_text.value.trim().is_empty() {
                self.push(
                    Diagnostic::error(say_text.span, format!("proactive `{}` says nothing", item.name.name))
                        .with_label("an empty message"),
                );
            }
            let offer = item.offer.as_ref().and_then(|name| {
                if promotions.contains(&name.name) {
                    Some(name.name.clone())
                } else {
                    self.unknown(name, "promotion", promotions.iter().map(String::as_str));
                    None
                }
            });
            let per_day = match &item.limit {
                Some((n, _)) if !(1..=MAX_PER_DAY).contains(&n.value) => {
                    self.push(
                        Diagnostic::error(n.span, format!("a proactive limit must be between 1 and {MAX_PER_DAY} per day"))
                            .with_label("how many of this item's messages a customer may get a day")
                            .with_help("to stop an item sending, remove it (or give it a `when` that is false)"),
                    );
                    DEFAULT_PER_DAY
                }
                Some((n, _)) => u32::try_from(n.value).unwrap_or(DEFAULT_PER_DAY),
                None => DEFAULT_PER_DAY,
            };
            let quiet = item.quiet.as_ref().and_then(|q| self.quiet_hours(q));
            let when = item
                .when
                .as_ref()
                .and_then(|w| compiler.condition(w, &names, self.diagnostics));
            let say: Option<Texts> = compiler.template(say_text, &names, self.diagnostics);
            let Some(say) = say else { continue };
            out.push(Proactive {
                name: item.name.name.clone(),
                events,
                when,
                say,
                offer,
                per_day,
                quiet,
                priority: item.priority.map_or(0, |p| p.value),
                span: item.name.span,
                location: self.location(item.name.span),
            });
        }
        // A stable sort keeps file order among equal priorities.
        out.sort_by_key(|p| std::cmp::Reverse(p.priority));
        out
    }

    /// A proactive item's `on event TYPE`: a platform event (`subscribe`) comes as a turn
    /// and never reaches it; a near-miss of a known shop event would never fire. Both are
    /// warnings, as shops may report events of their own.
    fn check_shop_event(&mut self, name: &Ident) {
        if EVENTS.contains(&name.name.as_str()) {
            self.push(
                Diagnostic::warning(
                    name.span,
                    format!("`{}` is a platform event: it comes as a turn, not as a shop event", name.name),
                )
                .with_label("no shop event has this type")
                .with_help(format!(
                    "answer it with a rule (`rule 欢迎 {{ on event {} reply \"…\" }}`); proactive items listen for the shop's events: {}",
                    name.name,
                    EVENT_TYPES.join(", ")
                )),
            );
            return;
        }
        if let Some(meant) = near_miss(&name.name, &EVENT_TYPES, EVENT_TYPE_ALIASES) {
            self.push(
                Diagnostic::warning(name.span, format!("`{}` is not a shop event kefu knows", name.name))
                    .with_label("an event of this type may never be reported")
                    .with_help(format!(
                        "did you mean `{meant}`? (known shop events: {})",
                        EVENT_TYPES.join(", ")
                    )),
            );
        }
    }

    /// A rule's or flow's `on event NAME` that is a shop event: those reach `proactive`
    /// items (`POST /v1/events`), never a turn. `true` when warned about.
    pub(super) fn shop_event_in_turn(&mut self, name: &Ident) -> bool {
        let known = EVENT_TYPES.contains(&name.name.as_str());
        if known && near_miss(&name.name, &EVENTS, EVENT_ALIASES).is_none() {
            self.push(
                Diagnostic::warning(
                    name.span,
                    format!("`{}` is a shop event: it reaches `proactive` items, not turns", name.name),
                )
                .with_label("no turn will be this event")
                .with_help(format!(
                    "to message the customer when it happens, write `proactive NAME {{ on event {} say \"…\" }}`",
                    name.name
                )),
            );
        }
        known
    }
}
