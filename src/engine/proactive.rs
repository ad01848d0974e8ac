//! Proactive messages: an event the shop reports ([`super::EventRequest`]) tried against
//! the rule set's `proactive` items ([`crate::ruleset::Proactive`]), in their order
//! (priority, then file order). The first item listening for the event's type whose `when`
//! holds is the trigger; its message is sent only if every guard rail lets it, checked in
//! this order: the customer opted out, a person holds (or the customer waits for) the
//! conversation, a flow waits for the customer's answer, quiet hours (the item's, else the
//! shop's, in the shop's zone at the event's time), the item's `limit N per day`, the
//! shop's `proactive_limit` (all items together; both counted on the shop day of the
//! event). A refusal is silent to the customer and stores nothing; a message sent is one
//! atomic update of the session (history as kefu's, `proactive.sent`), the guard rails
//! checked again inside it so that two events at once cannot both pass a limit of one.
//!
//! The scripts of a proactive item see their own scope (`script::shape`'s proactive
//! variables): `event` (its `type` and data fields), `user`, `session`, `now`,
//! `promotions`, `memory`, `channel`, `language`; there is no message, intent or slot.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rhai::{Dynamic, Map, Scope};

use super::{Engine, EngineError, EventRequest, ProactiveOutcome, Refusal, TurnRequest, scope};
use crate::RuleSet;
use crate::dialogue::session::PROACTIVE_KEPT;
use crate::dialogue::{ProactiveSent, Role, Session};
use crate::ruleset::Proactive;
use crate::script::host::{self, Host};
use crate::script::{Script, Texts};

/// The host of a proactive item's scripts: no tickets (an event is not a customer's
/// request), notes to the log, the event's time for `offer`.
struct EventHost {
    at: i64,
    notes: Mutex<Vec<String>>,
}

impl Host for EventHost {
    fn create_ticket(&self, kind: &str, _reference: &str) -> Dynamic {
        self.note(format!("create_ticket({kind}) is not available to proactive items"));
        Dynamic::UNIT
    }

    fn note(&self, message: String) {
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a script calling `recommend` in a loop notes each call.
        if notes.len() < 32 {
            notes.push(message);
        }
    }

    fn now_ms(&self) -> i64 {
        self.at
    }
}

/// The `event` variable: `type` and the event's data fields (a data field named `type`
/// does not replace the event's type).
fn event_map(request: &EventRequest) -> Map {
    let mut m: Map = request
        .data
        .iter()
        .map(|(k, v)| (k.as_str().into(), scope::json_to_dynamic(v)))
        .collect();
    m.insert("type".into(), rhai::ImmutableString::from(request.kind.as_str()).into());
    m
}

/// One evaluation of an event against a rule set: the scope its scripts read.
struct Evaluation<'a> {
    rules: &'a RuleSet,
    scope: Scope<'static>,
    now: DateTime<Tz>,
    session_id: &'a str,
    /// The conversation's language (the shop's when not known).
    language: crate::nlu::Lang,
}

impl Evaluation<'_> {
    /// Builds the proactive scope: what `script::shape` declares for proactive items.
    fn new<'a>(rules: &'a RuleSet, request: &'a EventRequest, session: &Session, now: DateTime<Tz>) -> Evaluation<'a> {
        let mut scope = Scope::new();
        scope.push_dynamic("event", Dynamic::from_map(event_map(request)));
        let user = request.user.as_ref().map_or_else(Map::new, |u| {
            u.iter()
                .map(|(k, v)| (k.as_str().into(), scope::json_to_dynamic(v)))
                .collect()
        });
        scope.push_dynamic("user", Dynamic::from_map(user));
        scope.push_dynamic(
            "session",
            Dynamic::from_map(scope::session_map(session, rules.reads_past)),
        );
        scope.push_dynamic("now", Dynamic::from_map(scope::now_map(&now)));
        scope.push_dynamic("promotions", Dynamic::from_map(scope::empty_promotions()));
        scope.push_dynamic("memory", Dynamic::from_map(scope::memory_map(session)));
        let channel = request.channel.as_deref().unwrap_or(super::DEFAULT_CHANNEL);
        scope.push("channel", rhai::ImmutableString::from(channel));
        let language = session.language.unwrap_or_else(|| rules.shop.language());
        scope.push("language", rhai::ImmutableString::from(language.as_str()));
        let mut evaluation = Evaluation {
            rules,
            scope,
            now,
            session_id: &request.session_id,
            language,
        };
        evaluation.fill_promotions();
        evaluation
    }

    /// `promotions.on` and `promotions.upcoming` for this customer, as a turn fills them
    /// (audiences evaluated in this scope; one reading a turn-only variable is false).
    fn fill_promotions(&mut self) {
        let rules = self.rules;
        let horizon = self.now + chrono::Duration::days(i64::from(rules.shop.upcoming_days));
        let (mut on, mut upcoming) = (Map::new(), Map::new());
        for promo in &rules.promotions {
            let time = if promo.is_on(&self.now) {
                scope::PromotionTime::On
            } else if promo.from > self.now && promo.from <= horizon {
                scope::PromotionTime::Upcoming
            } else {
                continue;
            };
            if let Some(audience) = &promo.audience
                && !self.holds(audience, &promo.name)
            {
                continue;
            }
            let say = self.render(&promo.say, &promo.name);
            let entry = Dynamic::from_map(scope::promotion_map(promo, &self.now, time, say));
            match time {
                scope::PromotionTime::On => on.insert(promo.name.as_str().into(), entry),
                scope::PromotionTime::Upcoming => upcoming.insert(promo.name.as_str().into(), entry),
            };
        }
        let mut m = Map::new();
        m.insert("on".into(), Dynamic::from_map(on));
        m.insert("upcoming".into(), Dynamic::from_map(upcoming));
        self.scope.set_value("promotions", Dynamic::from_map(m));
    }

    /// Evaluates a condition; an error counts as false and is logged.
    fn holds(&mut self, script: &Script, what: &str) -> bool {
        let mark = self.scope.len();
        let result = script.eval_bool(&self.rules.engine, &mut self.scope);
        self.scope.rewind(mark);
        result.unwrap_or_else(|e| {
            self.failed(what, &e);
            false
        })
    }

    /// Renders a text in the conversation's language (the shop's when it has no variant);
    /// a failing hole renders as nothing and is logged.
    fn render(&mut self, texts: &Texts, what: &str) -> String {
        let template = texts.variant(self.language).unwrap_or(&texts.default);
        let mut errors = Vec::new();
        let text = template.render_lenient(&self.rules.engine, &mut self.scope, &mut |e| errors.push(e));
        for e in errors {
            self.failed(what, &e);
        }
        text
    }

    fn failed(&self, what: &str, error: &crate::script::ScriptError) {
        tracing::warn!(
            session = %crate::safety::logsafe::LogSafe(self.session_id),
            item = what,
            location = %error.location,
            error = %error.message,
            "proactive script failed"
        );
    }
}

/// The guard rail that stops `item` from messaging `session` at `now`, if any, in the
/// documented order.
pub(super) fn refusal(rules: &RuleSet, item: &Proactive, session: &Session, now: &DateTime<Tz>) -> Option<Refusal> {
    if session.proactive.opted_out {
        return Some(Refusal::OptedOut);
    }
    if session.takeover.is_some() {
        return Some(Refusal::Held);
    }
    if let Some(flow) = &session.flow {
        // A flow left waiting past its timeout is over (the next turn drops it).
        let timeout = rules
            .flows
            .iter()
            .find(|f| f.name == flow.name)
            .and_then(|f| f.timeout)
            .unwrap_or(rules.shop.flow_timeout);
        let idle = now.timestamp_millis() - session.updated_at;
        if session.updated_at <= 0 || idle <= timeout.as_millis() as i64 {
            return Some(Refusal::FlowRunning);
        }
    }
    if item
        .quiet
        .or(rules.shop.quiet_hours)
        .is_some_and(|q| q.contains(now.time()))
    {
        return Some(Refusal::QuietHours);
    }
    let today = now.date_naive();
    let tz = now.timezone();
    let same_day = |s: &&ProactiveSent| {
        DateTime::<Utc>::from_timestamp_millis(s.at).is_some_and(|at| at.with_timezone(&tz).date_naive() == today)
    };
    let sent_today: Vec<&ProactiveSent> = session.proactive.sent.iter().filter(same_day).collect();
    if sent_today.iter().filter(|s| s.trigger == item.name).count() >= item.per_day as usize {
        return Some(Refusal::Limit);
    }
    if sent_today.len() >= rules.shop.proactive_limit as usize {
        return Some(Refusal::Limit);
    }
    None
}

/// [`Engine::event`]: finds the trigger, checks the guard rails, sends or refuses.
pub(super) fn run(engine: &Engine, request: &EventRequest) -> Result<ProactiveOutcome, EngineError> {
    let pick = TurnRequest {
        session_id: request.session_id.clone(),
        ..TurnRequest::default()
    };
    let (rules, _) = engine.pick_rules(&pick)?;
    let now = request.at.map_or_else(
        || Utc::now().with_timezone(&rules.shop.timezone),
        |t| t.with_timezone(&rules.shop.timezone),
    );
    let listening: Vec<&Proactive> = rules
        .proactive
        .iter()
        .filter(|p| p.events.iter().any(|e| *e == request.kind))
        .collect();
    if listening.is_empty() {
        return Ok(ProactiveOutcome::Recorded);
    }
    let stored = engine
        .sessions
        .get(&request.session_id)
        .map_err(|e| EngineError::Store(e.to_string()))?;
    let session = stored.unwrap_or_else(|| Session::new(&request.session_id));
    let now_ms = now.timestamp_millis();
    let host = Arc::new(EventHost {
        at: now_ms,
        notes: Mutex::new(Vec::new()),
    });
    // The scripts share one turn's time budget, however many items they are spread over.
    let _budget = crate::script::turn_budget(crate::script::Limits::default().max_turn_time);
    let decided = host::with_host(host.clone(), || {
        let mut evaluation = Evaluation::new(&rules, request, &session, now);
        let item = listening.into_iter().find(|p| match &p.when {
            Some(when) => evaluation.holds(when, &p.name),
            None => true,
        })?;
        if let Some(reason) = refusal(&rules, item, &session, &now) {
            return Some((item, Err(reason)));
        }
        let mut text = evaluation.render(&item.say, &item.name);
        if let Some(offer) = &item.offer
            && let Some(promo) = rules.promotions.iter().find(|p| p.name == *offer)
            && promo.is_on(&now)
            && promo.audience.as_ref().is_none_or(|a| evaluation.holds(a, &promo.name))
        {
            let said = evaluation.render(&promo.say, &promo.name);
            text = joined(text.trim(), said.trim());
        }
        Some((item, Ok(text)))
    });
    for note in host.notes.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        tracing::debug!(session = %crate::safety::logsafe::LogSafe(&request.session_id), "proactive: {note}");
    }
    let Some((item, decided)) = decided else {
        return Ok(ProactiveOutcome::Recorded);
    };
    let text = match decided {
        Err(reason) => {
            return Ok(ProactiveOutcome::Refused {
                trigger: item.name.clone(),
                reason,
            });
        }
        Ok(text) => text,
    };
    // No text reaches a customer without passing output safety.
    let verdict = rules.safety.check_output(text.trim());
    if let Some(blocked) = verdict.blocked {
        tracing::warn!(
            session = %crate::safety::logsafe::LogSafe(&request.session_id),
            trigger = %item.name,
            category = %blocked.category,
            "proactive message blocked by output safety: not sent"
        );
        return Ok(ProactiveOutcome::Recorded);
    }
    let text = verdict.masked;
    if text.is_empty() {
        tracing::warn!(
            session = %crate::safety::logsafe::LogSafe(&request.session_id),
            trigger = %item.name,
            "proactive message rendered empty: not sent"
        );
        return Ok(ProactiveOutcome::Recorded);
    }
    let mut refused = None;
    let sent = engine.change(&request.session_id, |stored| {
        refused = None;
        let session = stored.get_or_insert_with(|| Session::new(&request.session_id));
        // Checked again on the session as stored now: another event may have landed.
        if let Some(reason) = refusal(&rules, item, session, &now) {
            refused = Some(reason);
            return Err(EngineError::Invalid(String::new()));
        }
        if session.token.is_empty() {
            session.token = crate::dialogue::new_token();
        }
        session.remember(Role::Bot, &text, now_ms);
        let kept = &mut session.proactive.sent;
        kept.push(ProactiveSent {
            trigger: item.name.clone(),
            at: now_ms,
        });
        if kept.len() > PROACTIVE_KEPT {
            let extra = kept.len() - PROACTIVE_KEPT;
            kept.drain(..extra);
        }
        session.updated_at = session.updated_at.max(now_ms);
        Ok(())
    });
    match (sent, refused) {
        (_, Some(reason)) => Ok(ProactiveOutcome::Refused {
            trigger: item.name.clone(),
            reason,
        }),
        (Ok(session), None) => Ok(ProactiveOutcome::Sent {
            trigger: item.name.clone(),
            text,
            seq: session.seq,
        }),
        (Err(e), None) => Err(e),
    }
}

/// Two texts on two lines, either may be empty.
fn joined(first: &str, second: &str) -> String {
    match (first.is_empty(), second.is_empty()) {
        (true, _) => second.to_string(),
        (_, true) => first.to_string(),
        _ => format!("{first}\n{second}"),
    }
}

/// What the customer asks for no more proactive messages with (folded: lower case, no
/// spaces or punctuation). Kept conservative: a phrase about pushes or kefu messaging
/// them, never about a recommendation in the conversation ("别再推荐这个了" is an answer
/// to what was said, not an opt-out).
const OPT_OUT: &[&str] = &[
    "别再推送",
    "不要再推送",
    "别推送",
    "不要推送",
    "不用推送",
    "不需要推送",
    "停止推送",
    "取消推送",
    "关闭推送",
    "退订推送",
    "退订消息",
    "不可以推送",
    "不能推送",
    "不要再给我发消息",
    "别再给我发消息",
    "不要给我发消息",
    "别给我发消息",
    "别再发消息",
    "不要再发消息",
    "不要主动发消息",
    "别主动发消息",
    "stopsending",
    "stopmessagingme",
    "nomoremessages",
    "unsubscribe",
];

/// What the customer asks for proactive messages again with (folded as [`OPT_OUT`]); a
/// message with a negation in it is never read as one ("不要恢复推送").
const OPT_IN: &[&str] = &[
    "恢复推送",
    "可以推送",
    "开启推送",
    "打开推送",
    "重新推送",
    "继续推送",
    "resubscribe",
    "startsendingagain",
];

/// The longest message (folded, in characters) read as an opt-out or opt-in: a longer one
/// says more than that and goes the usual way.
const OPT_MESSAGE_CHARS: usize = 24;

/// Whether `message` asks for no more proactive messages (`Some(true)`), for them again
/// (`Some(false)`), or neither.
pub(super) fn opt_reading(message: &str) -> Option<bool> {
    let folded: String = message
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    if folded.is_empty() || folded.chars().count() > OPT_MESSAGE_CHARS {
        return None;
    }
    if OPT_OUT.iter().any(|p| folded.contains(p)) {
        return Some(true);
    }
    let negated = ['不', '别', '没', '勿'].iter().any(|n| folded.contains(*n))
        || ["dont", "donot", "not", "never"].iter().any(|n| folded.contains(n));
    if !negated && OPT_IN.iter().any(|p| folded.contains(p)) {
        return Some(false);
    }
    None
}

/// The answer to a customer who asks for proactive messages again.
pub(super) const OPT_IN_MESSAGE: &str = "好的，已为您恢复消息推送。";

/// The built-in rule name an opt-out answer carries (`AnswerSource::Rule`), in responses,
/// traces and the log.
pub(super) const OPT_OUT_RULE: &str = "退订推送";
/// The same for an opt-in.
pub(super) const OPT_IN_RULE: &str = "恢复推送";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::shape;

    /// The scope a proactive item's scripts run in is the shape `kefu check` checks them
    /// against: every declared variable, of its type, and nothing else.
    #[test]
    fn the_proactive_scope_has_the_declared_shape() {
        let compiled = crate::dsl::load_dir_with(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/engine")),
            crate::dsl::LoadOptions {
                quick_training: true,
                ..Default::default()
            },
        );
        let mut rules = compiled.rules.expect("the engine's test shop loads");
        rules.reads_past = true;
        let mut session = Session::new("s");
        session.remember(Role::User, "在吗", 1);
        let request = EventRequest {
            session_id: "s".into(),
            kind: "order_delayed".into(),
            data: serde_json::json!({"order_id": "202611010001", "type": "spoofed"})
                .as_object()
                .cloned()
                .unwrap(),
            user: serde_json::json!({"segment": "vip"}).as_object().cloned(),
            ..EventRequest::default()
        };
        let now = Utc::now().with_timezone(&rules.shop.timezone);
        let evaluation = Evaluation::new(&rules, &request, &session, now);
        for variable in shape::PROACTIVE_VARIABLES {
            let value = evaluation
                .scope
                .get(variable.name)
                .unwrap_or_else(|| panic!("`{}` is not in the scope", variable.name));
            assert!(
                super::super::scope::tests::fits(value, variable.ty),
                "`{}` = {value:?} is not {:?}",
                variable.name,
                variable.ty
            );
        }
        assert_eq!(evaluation.scope.len(), shape::PROACTIVE_VARIABLES.len());
        // The event's own type wins over a data field of that name.
        let event = evaluation
            .scope
            .get("event")
            .unwrap()
            .read_lock::<Map>()
            .unwrap()
            .clone();
        assert_eq!(event["type"].to_string(), "order_delayed");
        assert_eq!(event["order_id"].to_string(), "202611010001");
    }

    #[test]
    fn opt_outs_are_read_conservatively() {
        for yes in [
            "别再推送了",
            "不要再推送",
            "别推送了！",
            "取消推送",
            "退订推送",
            "不要再给我发消息了",
            "Stop sending",
            "unsubscribe",
        ] {
            assert_eq!(opt_reading(yes), Some(true), "{yes}");
        }
        for back in ["恢复推送", "可以推送了", "Resubscribe"] {
            assert_eq!(opt_reading(back), Some(false), "{back}");
        }
        for neither in [
            "别再推荐这个了",
            "不要恢复推送",
            "推送",
            "",
            "我想问一下你们的推送消息里说的优惠券怎么领取呢，别再推送了的话还能领吗",
            "订单什么时候发货",
        ] {
            assert_eq!(opt_reading(neither), None, "{neither}");
        }
    }
}
