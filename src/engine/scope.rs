//! The rhai scope of a turn: what `when`, `for` and templates can read (docs/language.md
//! section 6, "What scripts can read"). Built once per turn; flows add their `set`
//! variables. `promotions` (the promotions on now and upcoming, for this customer) is
//! filled in only when a script that reads it is about to run, since it evaluates the
//! audience and text of every promotion on or upcoming. `session.history` (twenty maps),
//! `session.last_message`, `session.last_reply` and `memory` are built only in rule sets
//! whose scripts read them (`RuleSet::reads_past`, `RuleSet::reads_memory`); a
//! `remember` updates `memory` in place during the turn.

use chrono::{DateTime, Datelike, Timelike};
use chrono_tz::Tz;
use rhai::{Dynamic, Map, Scope};

use super::turn::Turn;
use crate::RuleSet;
use crate::dialogue::{Role, Session};
use crate::nlu::Understanding;
use crate::ruleset::Promotion;
use crate::safety::{Action, Finding};

/// JSON to a script value (`()` for null).
///
/// Converted directly, not through `rhai::serde::to_dynamic`: every turn converts the
/// caller's `user` profile and context, and the serde round trip was most of the cost of
/// building the scope. The result is the same (see the test).
pub(crate) fn json_to_dynamic(value: &serde_json::Value) -> Dynamic {
    use serde_json::Value;
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => n.as_f64().map_or(Dynamic::UNIT, Dynamic::from_float),
        },
        Value::String(s) => Dynamic::from(rhai::ImmutableString::from(s.as_str())),
        Value::Array(items) => Dynamic::from_array(items.iter().map(json_to_dynamic).collect()),
        Value::Object(fields) => Dynamic::from_map(
            fields
                .iter()
                .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
                .collect(),
        ),
    }
}

/// A script value to JSON, for keeping flow variables in a session.
pub(crate) fn dynamic_to_json(value: &Dynamic) -> serde_json::Value {
    rhai::serde::from_dynamic(value).unwrap_or(serde_json::Value::Null)
}

/// The `session` map scripts see. `history`, `last_message` and `last_reply` are filled
/// in when some script of the rule set may read them (`past`: `RuleSet::reads_past`),
/// else an empty list and `()`: twenty maps and two texts a turn would be paid by every
/// rule-answered turn for nothing.
pub(crate) fn session_map(session: &Session, past: bool) -> Map {
    let mut m = Map::new();
    m.insert("turns".into(), (session.turns as i64).into());
    m.insert("failures".into(), (session.failures as i64).into());
    m.insert(
        "last_intent".into(),
        session.last_intent.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    m.insert(
        "flow".into(),
        session.flow.as_ref().map_or(Dynamic::UNIT, |f| f.name.clone().into()),
    );
    m.insert("asked".into(), session.asked.kind.name().into());
    m.insert(
        "asked_rule".into(),
        session.asked.rule.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    // The turn's own message is not in the history yet: the last entries are the
    // previous exchange.
    let last = |role: Role| match past {
        false => Dynamic::UNIT,
        true => session
            .history
            .iter()
            .rev()
            .find(|e| e.role == role)
            .map_or(Dynamic::UNIT, |e| rhai::ImmutableString::from(&*e.text).into()),
    };
    m.insert("last_message".into(), last(Role::User));
    m.insert("last_reply".into(), last(Role::Bot));
    let history = if past {
        history_list(session)
    } else {
        rhai::Array::new()
    };
    m.insert("history".into(), Dynamic::from_array(history));
    m
}

/// `session.history`: the recent messages, oldest first, each `#{role, text}` with the
/// role `"customer"`, `"kefu"` or `"agent"` (texts masked, as the session keeps them).
fn history_list(session: &Session) -> rhai::Array {
    session
        .history
        .iter()
        .map(|e| {
            let role = match e.role {
                Role::User => "customer",
                Role::Bot => "kefu",
                Role::Agent => "agent",
            };
            let mut m = Map::new();
            m.insert("role".into(), role.into());
            m.insert("text".into(), rhai::ImmutableString::from(&*e.text).into());
            Dynamic::from_map(m)
        })
        .collect()
}

/// The `memory` map scripts see: what the conversation remembered, by name.
pub(crate) fn memory_map(session: &Session) -> Map {
    session
        .memory
        .iter()
        .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
        .collect()
}

/// The `slots` map scripts see.
pub(crate) fn slots_map(session: &Session) -> Map {
    session
        .slots
        .iter()
        .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
        .collect()
}

/// The `now` map: shop-local date and time.
pub(super) fn now_map(now: &DateTime<Tz>) -> Map {
    let mut m = Map::new();
    // Formatted by hand: chrono's strftime parses its pattern on every call, which showed
    // up in the profile of rule-answered turns.
    let date = format!("{:04}-{:02}-{:02}", now.year(), now.month(), now.day());
    m.insert("date".into(), date.into());
    m.insert("time".into(), format!("{:02}:{:02}", now.hour(), now.minute()).into());
    m.insert("hour".into(), (now.hour() as i64).into());
    m.insert("weekday".into(), (now.weekday().number_from_monday() as i64).into());
    m.insert("timestamp".into(), now.timestamp().into());
    m
}

/// Whether a promotion is on now or starts within the shop's `upcoming_days`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PromotionTime {
    /// Inside its window now.
    On,
    /// Starts later, within the horizon.
    Upcoming,
}

/// `2026-12-01 00:00`, in the promotion's (the shop's) zone.
pub(super) fn minute(at: &DateTime<Tz>) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute()
    )
}

/// One promotion as scripts see it in `promotions.on` or `promotions.upcoming`.
pub(super) fn promotion_map(promo: &Promotion, now: &DateTime<Tz>, time: PromotionTime, say: String) -> Map {
    let day = |at: &DateTime<Tz>| format!("{}月{}日", at.month(), at.day());
    // Calendar days in the shop's zone: a promotion starting tomorrow at 00:00 is 1 day
    // away all of today.
    let days_to = |at: &DateTime<Tz>| (at.date_naive() - now.date_naive()).num_days();
    let mut m = Map::new();
    m.insert("name".into(), promo.name.clone().into());
    m.insert("start".into(), minute(&promo.from).into());
    m.insert("end".into(), minute(&promo.to).into());
    m.insert("start_day".into(), day(&promo.from).into());
    m.insert("end_day".into(), day(&promo.to).into());
    let days = match time {
        PromotionTime::On => days_to(&promo.to),
        PromotionTime::Upcoming => days_to(&promo.from),
    };
    m.insert("days".into(), days.into());
    m.insert("say".into(), say.into());
    m
}

/// `promotions` before the turn has worked it out: nothing on, nothing upcoming.
pub(super) fn empty_promotions() -> Map {
    let mut m = Map::new();
    m.insert("on".into(), Dynamic::from_map(Map::new()));
    m.insert("upcoming".into(), Dynamic::from_map(Map::new()));
    m
}

impl Turn<'_> {
    /// The promotions meant for this customer (`for` holds) that are on now or start
    /// within the shop's `upcoming_days`, in answer order.
    pub(super) fn promotions_for_customer(&mut self) -> Vec<(usize, PromotionTime)> {
        let rules = self.rules;
        let horizon = self.now + chrono::Duration::days(i64::from(rules.shop.upcoming_days));
        let mut found = Vec::new();
        for (i, promo) in rules.promotions.iter().enumerate() {
            let time = if promo.is_on(&self.now) {
                PromotionTime::On
            } else if promo.from > self.now && promo.from <= horizon {
                PromotionTime::Upcoming
            } else {
                continue;
            };
            if let Some(audience) = &promo.audience
                && !self.holds(audience, format_args!("promotion {} audience", promo.name))
            {
                continue;
            }
            found.push((i, time));
        }
        found
    }

    /// Fills the `promotions` variable before `script` runs, if it reads it and the turn
    /// has not filled it yet.
    pub(super) fn promotions_for(&mut self, script: &crate::script::Script) {
        if !self.promotions_filled && self.rules.promotion_readers.contains(&script.span) {
            // Set first: the audiences and texts evaluated below go through here too.
            self.promotions_filled = true;
            self.fill_promotions();
        }
    }

    /// Fills the `promotions` variable: `promotions.on` and `promotions.upcoming`, maps
    /// from a promotion's name to its `name`, `start`, `end`, `start_day`, `end_day`,
    /// `days` (to its end when on, to its start when upcoming) and `say` (rendered).
    fn fill_promotions(&mut self) {
        let rules = self.rules;
        let (mut on, mut upcoming) = (Map::new(), Map::new());
        for (i, time) in self.promotions_for_customer() {
            let promo = &rules.promotions[i];
            let say = self.render(&promo.say, format_args!("promotion {}", promo.name));
            let entry = Dynamic::from_map(promotion_map(promo, &self.now, time, say));
            match time {
                PromotionTime::On => on.insert(promo.name.as_str().into(), entry),
                PromotionTime::Upcoming => upcoming.insert(promo.name.as_str().into(), entry),
            };
        }
        let mut m = Map::new();
        m.insert("on".into(), Dynamic::from_map(on));
        m.insert("upcoming".into(), Dynamic::from_map(upcoming));
        self.scope.set_value("promotions", Dynamic::from_map(m));
    }
}

/// The `safety` map: what input safety found in the message without refusing it.
/// `flags` are the categories of list words found (flag lists, lists that act only on
/// replies, mask lists), `words` those words as the lists write them, `pii` the kinds of
/// personal data masked; each once, in order of position.
pub(crate) fn safety_map(findings: &[Finding]) -> Map {
    let (mut flags, mut words, mut pii) = (Vec::new(), Vec::new(), Vec::new());
    fn push<'f>(list: &mut Vec<&'f str>, value: &'f str) {
        if !list.contains(&value) {
            list.push(value);
        }
    }
    for f in findings {
        match f.action {
            Action::Flag | Action::Mask => {
                push(&mut flags, f.category.as_str());
                if let Some(word) = &f.word {
                    push(&mut words, word.as_str());
                }
            }
            Action::Pii => push(&mut pii, f.category.as_str()),
            Action::Block => {}
        }
    }
    let array = |list: Vec<&str>| Dynamic::from_array(list.into_iter().map(|s| Dynamic::from(s.to_string())).collect());
    let mut m = Map::new();
    m.insert("flags".into(), array(flags));
    m.insert("words".into(), array(words));
    m.insert("pii".into(), array(pii));
    m
}

/// The `intents` list: every confident intent of the message, in order, each once: the
/// parts' when the message was split into several questions, else `[intent]` (or `[]`
/// when the intent is not confident).
fn intents(rules: &RuleSet, u: &Understanding, parts: &[super::turn::Part]) -> rhai::Array {
    let threshold = rules.shop.threshold;
    fn confident(u: &Understanding, threshold: f64) -> Option<&str> {
        u.intent.as_deref().filter(|_| u.confidence >= threshold)
    }
    if parts.is_empty() {
        return confident(u, threshold)
            .map(|i| Dynamic::from(i.to_string()))
            .into_iter()
            .collect();
    }
    let mut list: Vec<&str> = Vec::new();
    for part in parts {
        if let Some(i) = confident(&part.understanding, threshold)
            && !list.contains(&i)
        {
            list.push(i);
        }
    }
    list.into_iter().map(|i| Dynamic::from(i.to_string())).collect()
}

/// Everything a turn's scripts may read.
pub(crate) struct ScopeInput<'a> {
    pub rules: &'a RuleSet,
    pub session: &'a Session,
    pub understanding: &'a Understanding,
    /// The message read as a reply to what kefu asked last.
    pub reading: crate::nlu::reading::Reading,
    pub message: &'a str,
    /// The message's questions when it asks several (`nlu::split`), else empty.
    pub parts: &'a [super::turn::Part],
    /// What input safety found in the message (it was not refused).
    pub findings: &'a [Finding],
    pub user: Option<&'a serde_json::Map<String, serde_json::Value>>,
    pub context: Option<&'a serde_json::Map<String, serde_json::Value>>,
    pub now: &'a DateTime<Tz>,
    /// The channel the message came through (`api` when the request names none).
    pub channel: &'a str,
    /// The platform event the turn answers, `""` for a message.
    pub event: &'a str,
    /// The images the message carries.
    pub images: &'a [crate::dialogue::ImageRef],
}

/// One image as scripts see it (`script::shape::IMAGE`): `kind`, `width`, `height` and
/// `description` (`""` when no vision model described it).
fn image_map(image: &crate::dialogue::ImageRef) -> Map {
    let mut m = Map::new();
    m.insert("kind".into(), rhai::ImmutableString::from(image.kind.as_str()).into());
    m.insert("width".into(), i64::from(image.width).into());
    m.insert("height".into(), i64::from(image.height).into());
    let description = image.description.as_deref().unwrap_or_default();
    m.insert("description".into(), rhai::ImmutableString::from(description).into());
    m
}

/// Builds the scope of a turn.
///
/// Maps go in through [`Dynamic::from_map`]: `Scope::push` of a map takes rhai's generic
/// `From<BTreeMap>` conversion, which rebuilds the map entry by entry (a collect and a
/// sort per map, five maps a turn).
pub(crate) fn build(input: ScopeInput<'_>) -> Scope<'static> {
    let u = input.understanding;
    let mut scope = Scope::new();
    scope.push("message", input.message.to_string());
    scope.push_dynamic("intent", u.intent.clone().map_or(Dynamic::UNIT, Dynamic::from));
    scope.push("confidence", u.confidence);
    scope.push_dynamic("entities", Dynamic::from_map(u.entities_map()));
    if input.rules.reads_intents {
        scope.push_dynamic("intents", Dynamic::from_array(intents(input.rules, u, input.parts)));
    }
    // Every match in order, built only for a rule set whose scripts read it (most never
    // do, and a turn with entities would pay for the lists).
    let all_entities = if input.rules.reads_all_entities && !u.entities.is_empty() {
        u.all_entities_map()
    } else {
        Map::new()
    };
    scope.push_dynamic("all_entities", Dynamic::from_map(all_entities));
    scope.push("emotion", u.emotion.as_str().to_string());
    scope.push("reading", rhai::ImmutableString::from(input.reading.name()));
    let language = input.session.language.unwrap_or_else(|| input.rules.shop.language());
    scope.push("language", rhai::ImmutableString::from(language.as_str()));
    scope.push("channel", rhai::ImmutableString::from(input.channel));
    scope.push("event", rhai::ImmutableString::from(input.event));
    scope.push_dynamic("slots", Dynamic::from_map(slots_map(input.session)));
    scope.push_dynamic(
        "session",
        Dynamic::from_map(session_map(input.session, input.rules.reads_past)),
    );
    // An absent profile is an empty map, so `user.segment` reads `()` instead of failing.
    let user = input.user.map_or_else(Map::new, |u| {
        u.iter().map(|(k, v)| (k.as_str().into(), json_to_dynamic(v))).collect()
    });
    scope.push_dynamic("user", Dynamic::from_map(user));
    scope.push_dynamic("now", Dynamic::from_map(now_map(input.now)));
    if !input.rules.promotion_readers.is_empty() {
        // Filled in by the turn (`Turn::fill_promotions`), which can evaluate audiences;
        // an audience that reads `promotions` itself sees it empty.
        scope.push_dynamic("promotions", Dynamic::from_map(empty_promotions()));
    }
    if input.rules.reads_safety {
        scope.push_dynamic("safety", Dynamic::from_map(safety_map(input.findings)));
    }
    if input.rules.reads_memory {
        scope.push_dynamic("memory", Dynamic::from_map(memory_map(input.session)));
    }
    // The message's images (`on image`), never their bytes; `image` is the first one's.
    let images: rhai::Array = input.images.iter().map(|i| Dynamic::from_map(image_map(i))).collect();
    let first = images.first().cloned().unwrap_or(Dynamic::UNIT);
    scope.push_dynamic("images", Dynamic::from_array(images));
    scope.push_dynamic("image", first);
    // Context maps: every declared name exists (as `()` when not sent); anything else the
    // caller sent is readable too. `product` falls back to the one talked about last.
    for name in &input.rules.shop.context {
        let value = input.context.and_then(|c| c.get(name)).map(json_to_dynamic);
        let value = match value {
            Some(v) => v,
            None if name == "product" => input.session.product.as_ref().map_or(Dynamic::UNIT, json_to_dynamic),
            None => Dynamic::UNIT,
        };
        scope.push_dynamic(name.as_str(), value);
    }
    if let Some(context) = input.context {
        for (name, value) in context {
            if !input.rules.shop.context.contains(name) && !scope.contains(name) {
                scope.push_dynamic(name.as_str(), json_to_dynamic(value));
            }
        }
    }
    scope
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::script::shape::{self, Ty};

    /// Whether a built value is of the type `script::shape` declares for it.
    pub(in crate::engine) fn fits(value: &Dynamic, ty: Ty) -> bool {
        match ty {
            Ty::Bool => value.is_bool(),
            Ty::Int => value.is_int(),
            Ty::Float => value.is_float(),
            Ty::Str => value.is_string(),
            Ty::MaybeStr => value.is_string() || value.is_unit(),
            Ty::MaybeFields(fields) => value.is_unit() || fits(value, Ty::Fields(fields)),
            Ty::Fields(fields) => value.read_lock::<Map>().is_some_and(|m| {
                m.len() == fields.len()
                    && fields.iter().all(|f| {
                        m.get(f.name)
                            .is_some_and(|v| fits(v, f.ty) || (f.ty == Ty::MaybeStr && v.is_unit()))
                    })
            }),
            Ty::TextMap => value
                .read_lock::<Map>()
                .is_some_and(|m| m.values().all(|v| v.is_string())),
            Ty::TextList => value
                .read_lock::<rhai::Array>()
                .is_some_and(|a| a.iter().all(|v| v.is_string())),
            Ty::List => value
                .read_lock::<rhai::Array>()
                .is_some_and(|a| a.iter().all(|v| v.is_map())),
            Ty::Memory => value.is_map(),
            Ty::ListMap => value
                .read_lock::<Map>()
                .is_some_and(|m| !m.is_empty() && m.values().all(|v| v.is_array())),
            Ty::Open => value.is_map() || value.is_unit(),
        }
    }

    /// The scope a turn builds is the shape `kefu check` checks scripts against: every
    /// declared variable, of its type, and the maps with exactly their declared fields.
    #[test]
    fn the_scope_has_the_declared_shape() {
        let compiled = crate::dsl::load_dir_with(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/engine")),
            crate::dsl::LoadOptions {
                quick_training: true,
                ..Default::default()
            },
        );
        let mut rules = compiled.rules.expect("the engine's test shop loads");
        // As a rule set whose scripts read `safety`, `memory` and the history has them built.
        rules.reads_safety = true;
        rules.reads_memory = true;
        rules.reads_past = true;
        rules.reads_all_entities = true;
        rules.reads_intents = true;
        let mut session = Session::new("s");
        session.slots.insert("order_id".into(), "202611010001".into());
        session.last_intent = Some("售后.退货".into());
        session.remember(crate::dialogue::Role::User, "在吗", 1);
        session.remember(crate::dialogue::Role::Bot, "在的亲", 1);
        session
            .keep("order", Some(serde_json::json!({"id": "202611010001"})))
            .unwrap();
        let understanding = rules
            .nlu
            .understand("我要退货 202611010001", &crate::nlu::Context::default());
        let user = serde_json::json!({ "segment": "vip" });
        let now = chrono::Utc::now().with_timezone(&rules.shop.timezone);
        let photo = [crate::dialogue::ImageRef {
            id: "img_0123456789abcdef0123456789abcdef".into(),
            kind: "jpeg".into(),
            width: 800,
            height: 600,
            bytes: 48_000,
            description: None,
        }];
        for flow in [None, Some("退货申请")] {
            session.flow = flow.map(|name| crate::dialogue::FlowState {
                name: name.into(),
                ..Default::default()
            });
            let scope = build(ScopeInput {
                rules: &rules,
                session: &session,
                understanding: &understanding,
                reading: crate::nlu::reading::Reading::Other,
                message: "我要退货",
                parts: &[],
                findings: &[],
                user: user.as_object(),
                context: None,
                now: &now,
                channel: "web",
                event: "",
                images: &photo,
            });
            for variable in shape::VARIABLES {
                let value = scope
                    .get(variable.name)
                    .unwrap_or_else(|| panic!("`{}` is not in the scope", variable.name));
                assert!(
                    fits(value, variable.ty),
                    "`{}` = {value:?} is not {:?}",
                    variable.name,
                    variable.ty
                );
            }
            let declared = shape::VARIABLES.len() + rules.shop.context.len();
            assert_eq!(
                scope.len(),
                declared,
                "a variable is in the scope but not in script::shape"
            );
        }
    }

    #[test]
    fn json_converts_as_rhai_serde_does() {
        let value = serde_json::json!({
            "segment": "vip", "orders": 3, "aov": 268.5, "churn": null, "new": false,
            "big": 18446744073709551615u64, "negative": -7,
            "browsed": ["羽绒服", {"id": 1}], "nested": {"a": [1, 2.5, "x"]}
        });
        let ours = json_to_dynamic(&value);
        let theirs = rhai::serde::to_dynamic(&value).unwrap();
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        assert_eq!(dynamic_to_json(&ours), dynamic_to_json(&theirs));
    }
}
