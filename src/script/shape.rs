//! The shape of a turn's scope: which variables every script can read, what each holds,
//! and the fields of the maps kefu builds itself (`now`, `session`).
//!
//! This is the one list of them. `kefu check` reads it to find a misspelt field
//! (`now.weekdy`), a field called like a method (`now.weekday()`) and a condition that can
//! never be true or false (`intent` alone); the engine's scope builder (`engine::scope`)
//! builds exactly this shape, which its tests check value by value, and docs/language.md
//! names every field (checked below). A variable whose content comes from the caller
//! (`user`, request-context maps) is [`Ty::Open`]: nothing about its fields is known.

/// What a script value is, as far as the rules can know before a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Int,
    /// A decimal number.
    Float,
    /// Text.
    Str,
    /// Text, or `()` when there is none (`intent` when nothing was understood).
    MaybeStr,
    /// A map with exactly these fields, all set by kefu.
    Fields(&'static [Field]),
    /// A map with exactly these fields, or `()` when there is none (`image` in a turn
    /// without images).
    MaybeFields(&'static [Field]),
    /// A map of text values under names the rules choose (`entities`, `slots`); an
    /// entity with named groups is a map of its fields instead (`entities.card.amount`).
    TextMap,
    /// A map of lists under names the rules choose (`all_entities`: every value of each
    /// entity, in order).
    ListMap,
    /// A list of text (`safety.flags`): `"竞品" in safety.flags`.
    TextList,
    /// A list of maps (`session.history`: `#{role, text}` each).
    List,
    /// The conversation's memory: values of any kind under the names `remember` keeps
    /// (`memory.order`), `()` for a name not remembered.
    Memory,
    /// Whatever the caller sends (the `user` profile): its fields are not known.
    Open,
}

impl Ty {
    /// The type whose fields and methods a value of this type has: a map that may be
    /// absent is checked as the map (reading a field of `()` fails when it runs, which
    /// the guide says to test first).
    pub fn present(self) -> Ty {
        match self {
            Ty::MaybeFields(fields) => Ty::Fields(fields),
            other => other,
        }
    }
}

impl Ty {
    /// How an editor would name a value of this type.
    pub fn describe(self) -> &'static str {
        match self {
            Ty::Bool => "true or false",
            Ty::Int => "a whole number",
            Ty::Float => "a decimal number",
            Ty::Str | Ty::MaybeStr => "text",
            Ty::Fields(_) | Ty::MaybeFields(_) | Ty::TextMap | Ty::ListMap | Ty::Open | Ty::Memory => "a map",
            Ty::TextList | Ty::List => "a list",
        }
    }
}

/// One field of a [`Ty::Fields`] map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's name: `now.hour`.
    pub name: &'static str,
    /// What it holds.
    pub ty: Ty,
}

/// One variable every script can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Its name.
    pub name: &'static str,
    /// What it holds.
    pub ty: Ty,
}

const fn field(name: &'static str, ty: Ty) -> Field {
    Field { name, ty }
}

/// The fields of `now`: the request's time in the shop's time zone.
pub const NOW: &[Field] = &[
    field("date", Ty::Str),
    field("time", Ty::Str),
    field("hour", Ty::Int),
    field("weekday", Ty::Int),
    field("timestamp", Ty::Int),
];

/// The fields of `session`: the conversation so far.
pub const SESSION: &[Field] = &[
    field("turns", Ty::Int),
    field("failures", Ty::Int),
    field("last_intent", Ty::MaybeStr),
    field("flow", Ty::MaybeStr),
    field("asked", Ty::Str),
    field("asked_rule", Ty::MaybeStr),
    field("last_message", Ty::MaybeStr),
    field("last_reply", Ty::MaybeStr),
    field("history", Ty::List),
];

/// The fields of `promotions`: the promotions on now and starting within the shop's
/// `upcoming_days` that are meant for the customer, each a map by promotion name.
pub const PROMOTIONS: &[Field] = &[field("on", Ty::Open), field("upcoming", Ty::Open)];

/// The fields of each map of `images` and of `image`: a picture the customer sent with
/// the message (its bytes are never in the scope). `description` is what the vision model
/// saw, `""` when none is configured or it failed.
pub const IMAGE: &[Field] = &[
    field("kind", Ty::Str),
    field("width", Ty::Int),
    field("height", Ty::Int),
    field("description", Ty::Str),
];

/// The fields of `safety`: what input safety found in the message without refusing it
/// (lists of text).
pub const SAFETY: &[Field] = &[
    field("flags", Ty::TextList),
    field("words", Ty::TextList),
    field("pii", Ty::TextList),
];

/// The variables every script can read, besides request-context maps and flow `set`s
/// (docs/language.md section 6, "What scripts can read").
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "message",
        ty: Ty::Str,
    },
    Variable {
        name: "intent",
        ty: Ty::MaybeStr,
    },
    Variable {
        name: "intents",
        ty: Ty::TextList,
    },
    Variable {
        name: "confidence",
        ty: Ty::Float,
    },
    Variable {
        name: "entities",
        ty: Ty::TextMap,
    },
    Variable {
        name: "all_entities",
        ty: Ty::ListMap,
    },
    Variable {
        name: "emotion",
        ty: Ty::Str,
    },
    Variable {
        name: "reading",
        ty: Ty::Str,
    },
    Variable {
        name: "language",
        ty: Ty::Str,
    },
    Variable {
        name: "channel",
        ty: Ty::Str,
    },
    Variable {
        name: "event",
        ty: Ty::Str,
    },
    Variable {
        name: "slots",
        ty: Ty::TextMap,
    },
    Variable {
        name: "session",
        ty: Ty::Fields(SESSION),
    },
    Variable {
        name: "user",
        ty: Ty::Open,
    },
    Variable {
        name: "now",
        ty: Ty::Fields(NOW),
    },
    Variable {
        name: "promotions",
        ty: Ty::Fields(PROMOTIONS),
    },
    Variable {
        name: "safety",
        ty: Ty::Fields(SAFETY),
    },
    Variable {
        name: "memory",
        ty: Ty::Memory,
    },
    Variable {
        name: "images",
        ty: Ty::List,
    },
    Variable {
        name: "image",
        ty: Ty::MaybeFields(IMAGE),
    },
];

/// The variables of a `proactive` item's scripts (`when`, the holes of `say`): a shop
/// event, not a message, so nothing understood from a message is there (`message`,
/// `intent`, `entities`, `slots`...). `event` is the event as a map: `event.type` and
/// the fields the shop sent (`event.order_id`), which kefu cannot know.
pub const PROACTIVE_VARIABLES: &[Variable] = &[
    Variable {
        name: "event",
        ty: Ty::Open,
    },
    Variable {
        name: "user",
        ty: Ty::Open,
    },
    Variable {
        name: "session",
        ty: Ty::Fields(SESSION),
    },
    Variable {
        name: "now",
        ty: Ty::Fields(NOW),
    },
    Variable {
        name: "promotions",
        ty: Ty::Fields(PROMOTIONS),
    },
    Variable {
        name: "memory",
        ty: Ty::Memory,
    },
    Variable {
        name: "channel",
        ty: Ty::Str,
    },
    Variable {
        name: "language",
        ty: Ty::Str,
    },
];

/// Where a script runs, which decides the variables it can read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// A turn: rules, promotions, flows, styles, fallback arms, queues ([`VARIABLES`]).
    #[default]
    Turn,
    /// A `proactive` item, run on a shop event ([`PROACTIVE_VARIABLES`]).
    Proactive,
}

impl Scope {
    /// The variables scripts in this scope can read.
    pub fn variables(self) -> &'static [Variable] {
        match self {
            Scope::Turn => VARIABLES,
            Scope::Proactive => PROACTIVE_VARIABLES,
        }
    }

    /// The type of a variable of this scope.
    pub fn variable(self, name: &str) -> Option<Ty> {
        self.variables().iter().find(|v| v.name == name).map(|v| v.ty)
    }
}

/// The shop events kefu knows (`POST /v1/events`, `on event TYPE` in a `proactive`
/// item): the widget's page events (`product_dwell`, `page_view`, `cart_changed`,
/// `checkout_abandoned`), the back office's order events, and the conversions the report
/// counts (`order_paid`, `checkout_completed`, `conversion`). Events are open-ended:
/// another name is fine, a near-miss of these is warned about.
pub const EVENT_TYPES: [&str; 11] = [
    "product_dwell",
    "page_view",
    "cart_changed",
    "checkout_abandoned",
    "checkout_completed",
    "order_paid",
    "order_shipped",
    "order_delayed",
    "order_delivered",
    "refund_done",
    "conversion",
];

/// Words editors write for a known shop event, with the event they mean.
pub const EVENT_TYPE_ALIASES: &[(&str, &str)] = &[
    ("dwell", "product_dwell"),
    ("product_view", "product_dwell"),
    ("浏览", "product_dwell"),
    ("cart_updated", "cart_changed"),
    ("cart_update", "cart_changed"),
    ("add_to_cart", "cart_changed"),
    ("加购", "cart_changed"),
    ("cart_abandoned", "checkout_abandoned"),
    ("abandoned_cart", "checkout_abandoned"),
    ("abandoned_checkout", "checkout_abandoned"),
    ("未付款", "checkout_abandoned"),
    ("paid", "order_paid"),
    ("payment", "order_paid"),
    ("order_payed", "order_paid"),
    ("付款", "order_paid"),
    ("shipped", "order_shipped"),
    ("order_shipping", "order_shipped"),
    ("发货", "order_shipped"),
    ("delayed", "order_delayed"),
    ("shipping_delayed", "order_delayed"),
    ("delivery_delayed", "order_delayed"),
    ("延迟发货", "order_delayed"),
    ("delivered", "order_delivered"),
    ("order_received", "order_delivered"),
    ("签收", "order_delivered"),
    ("refunded", "refund_done"),
    ("refund_completed", "refund_done"),
    ("refund_success", "refund_done"),
    ("退款成功", "refund_done"),
];

/// The built-in channel names `channel` can hold (`channels::RESERVED` is the same list on
/// the service's side). A webhook channel's configured name is a channel too, but the
/// rules cannot know those: `kefu check` warns only about near-misses of these four.
pub const CHANNELS: [&str; 4] = ["api", "web", "wechat_mp", "wechat_kf"];

/// Words editors write for a built-in channel, with the channel they mean: `kefu check`
/// says which name to compare with instead.
pub const CHANNEL_ALIASES: &[(&str, &str)] = &[
    ("wechat", "wechat_mp` or `wechat_kf"),
    ("weixin", "wechat_mp` or `wechat_kf"),
    ("wx", "wechat_mp` or `wechat_kf"),
    ("微信", "wechat_mp` or `wechat_kf"),
    ("mp", "wechat_mp"),
    ("wechat_oa", "wechat_mp"),
    ("official_account", "wechat_mp"),
    ("公众号", "wechat_mp"),
    ("kf", "wechat_kf"),
    ("wecom", "wechat_kf"),
    ("wework", "wechat_kf"),
    ("wechat_cs", "wechat_kf"),
    ("微信客服", "wechat_kf"),
    ("企业微信", "wechat_kf"),
    ("widget", "web"),
    ("website", "web"),
    ("webchat", "web"),
    ("www", "web"),
    ("h5", "web"),
    ("网页", "web"),
    ("网站", "web"),
    ("http", "api"),
    ("rest", "api"),
];

/// The platform events kefu's channels send (`event`, `on event NAME`): WeChat's
/// `subscribe`, `unsubscribe`, `scan` and `click` (公众号), `enter_session` (微信客服), and
/// the kinds of message that are not text (`image`, `voice`, `video`, `location`).
/// Events are open-ended: another name is fine, but a near-miss of these is warned about.
pub const EVENTS: [&str; 9] = [
    "subscribe",
    "unsubscribe",
    "enter_session",
    "scan",
    "click",
    "image",
    "voice",
    "video",
    "location",
];

/// Words editors write for a known event, with the event they mean.
pub const EVENT_ALIASES: &[(&str, &str)] = &[
    ("follow", "subscribe"),
    ("关注", "subscribe"),
    ("unfollow", "unsubscribe"),
    ("取消关注", "unsubscribe"),
    ("enter", "enter_session"),
    ("enter_chat", "enter_session"),
    ("session_start", "enter_session"),
    ("进入会话", "enter_session"),
    ("menu_click", "click"),
    ("扫码", "scan"),
];

/// The known name `name` is a near-miss of, when it is one: a known name written in
/// other case, an alias, or within the did-you-mean distance. `None` for a known name and
/// for a name unlike all of them (a webhook channel, an event of another platform).
pub fn near_miss(name: &str, known: &[&'static str], aliases: &[(&str, &'static str)]) -> Option<&'static str> {
    if known.contains(&name) {
        return None;
    }
    let lower = name.to_lowercase();
    if let Some(k) = known.iter().find(|k| **k == lower) {
        return Some(k);
    }
    if let Some((_, meant)) = aliases.iter().find(|(alias, _)| *alias == lower) {
        return Some(meant);
    }
    crate::diag::closest(&lower, known.iter().copied())
}

/// The names of [`VARIABLES`], in order.
pub const NAMES: [&str; VARIABLES.len()] = {
    let mut names = [""; VARIABLES.len()];
    let mut i = 0;
    while i < VARIABLES.len() {
        names[i] = VARIABLES[i].name;
        i += 1;
    }
    names
};

/// The type of a built-in variable.
pub fn variable(name: &str) -> Option<Ty> {
    VARIABLES.iter().find(|v| v.name == name).map(|v| v.ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_of_channels_and_events_are_named() {
        let channel = |n| near_miss(n, &CHANNELS, CHANNEL_ALIASES);
        assert_eq!(channel("web"), None);
        assert_eq!(channel("taobao"), None, "a webhook channel's name");
        assert_eq!(channel("Web"), Some("web"));
        assert_eq!(channel("widget"), Some("web"));
        assert_eq!(channel("wechat"), Some("wechat_mp` or `wechat_kf"));
        assert_eq!(channel("wechat_np"), Some("wechat_mp"));
        assert_eq!(channel("公众号"), Some("wechat_mp"));
        let event = |n| near_miss(n, &EVENTS, EVENT_ALIASES);
        assert_eq!(event("subscribe"), None);
        assert_eq!(event("order_paid"), None, "events are open-ended");
        assert_eq!(event("subscrib"), Some("subscribe"));
        assert_eq!(event("SCAN"), Some("scan"));
        assert_eq!(event("follow"), Some("subscribe"));
        assert_eq!(event("enter_sesion"), Some("enter_session"));
    }

    /// The editors' guide names every field of the maps kefu builds, as `map.field`.
    #[test]
    fn the_language_guide_names_every_field() {
        let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/language.md")).unwrap();
        for variable in VARIABLES {
            assert!(guide.contains(&format!("`{}`", variable.name)), "{}", variable.name);
            if let Ty::Fields(fields) = variable.ty {
                for f in fields {
                    let name = format!("{}.{}", variable.name, f.name);
                    assert!(guide.contains(&name), "docs/language.md does not mention `{name}`");
                }
            }
        }
    }
}
