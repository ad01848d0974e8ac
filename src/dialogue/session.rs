//! Conversation state that outlives a turn: what has been said, which flow is running,
//! which slots are filled, and whether a human has the conversation.
//!
//! A `Session` is plain data (serde) so that any session store
//! can keep it: in memory on one node, in Redis for several.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::nlu::reading::PendingKind;
use crate::nlu::{Emotion, Lang};

/// How many messages of history a session keeps (the model prompt uses the recent ones).
pub const HISTORY_LIMIT: usize = 20;
/// How many past emotions a session keeps for understanding the next message.
pub const EMOTION_LIMIT: usize = 5;
/// How many customer messages wait for an agent at most; older ones are dropped (and
/// counted in `Takeover::dropped`), so a customer who writes on and on while nobody
/// answers cannot grow the session without bound. The conversation log keeps them all.
pub const QUEUED_LIMIT: usize = 50;

/// How many names a conversation's memory (`Session::memory`) keeps at most: a
/// `remember` of a new name past it is not kept (the turn's trace says so).
pub const MEMORY_NAMES: usize = 32;
/// How long one remembered value's JSON may be, in bytes: a longer one is not kept (the
/// turn's trace says so), so what a rule remembers cannot grow a session without bound.
pub const MEMORY_VALUE_BYTES: usize = 4096;

/// One customer's conversation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The caller's conversation id.
    pub id: String,
    /// How many customer messages have been answered.
    pub turns: u32,
    /// Consecutive turns that ended without a confident answer.
    pub failures: u32,
    /// The last confident intent.
    pub last_intent: Option<String>,
    /// Slots filled by flows, kept after the flow ends so later rules can use them.
    pub slots: BTreeMap<String, String>,
    /// The flow in progress.
    pub flow: Option<FlowState>,
    /// Recent messages, oldest first.
    pub history: VecDeque<HistoryEntry>,
    /// The product talked about last (request context `product`), so that "这件" in a
    /// later message still refers to it.
    pub product: Option<serde_json::Value>,
    /// Request-context maps set by cards the customer sent (`card … as order`), by map
    /// name: the newest card's fields. A later turn whose request lacks the map reads this
    /// one, so "这个怎么还没发货" after an order card is about that order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub card_context: BTreeMap<String, serde_json::Value>,
    /// Emotions of recent customer messages, oldest first.
    pub emotions: Vec<Emotion>,
    /// What kefu asked in its last reply, so that a short reply ("可以", "第二个",
    /// "没有了") is read as an answer to it rather than classified on its own.
    #[serde(default, skip_serializing_if = "Asked::is_nothing")]
    pub asked: Asked,
    /// Set while a human has the conversation; the bot stays silent until released.
    pub takeover: Option<Takeover>,
    /// Unix milliseconds of the last turn.
    pub updated_at: i64,
    /// The customer's satisfaction score (满意度): at most one per conversation.
    #[serde(default)]
    pub feedback: Vec<Feedback>,
    /// A random secret given to the customer with the first answer (`session_token`);
    /// the customer's own requests about the conversation (feedback) must present it, so
    /// that knowing a session id is not enough to act on someone's conversation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// How many times the session has been stored: the store bumps it on every update,
    /// so a turn that finds it changed since it read the session knows another writer
    /// came in between.
    #[serde(default)]
    pub rev: u64,
    /// How many times a person acted on the conversation (took it over, replied, gave it
    /// back). A turn that finds this changed since it began drops its answer: what the
    /// agent did wins over what the bot was about to say.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub human_acts: u64,
    /// The language the customer last wrote in clearly (`nlu::language::detect`), kept so
    /// that a short reply ("ok", "XL", an order number) is answered in it; `None` in
    /// shops that declare one language, and in sessions stored before languages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Lang>,
    /// What rules and flows remembered for the conversation (`` remember order = `…` ``),
    /// by name, as JSON so that any store can keep it; scripts read it as `memory`. At
    /// most [`MEMORY_NAMES`] names, each value at most [`MEMORY_VALUE_BYTES`] of JSON.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub memory: BTreeMap<String, serde_json::Value>,
    /// The rule set that answered the conversation's last turn, and in which role: a
    /// rating or a takeover after it counts for that version (`/metrics`), even when a
    /// canary started or ended since. Empty in sessions stored before versions.
    #[serde(default, skip_serializing_if = "ServedBy::is_unknown")]
    pub served_by: ServedBy,
    /// The sequence number of the last message in `history` (each entry has its own,
    /// one more than the one before), so that a customer's channel delivers every message
    /// once and in order across reconnects (`after=SEQ`, `Last-Event-ID`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub seq: u64,
    /// Agents' internal notes, oldest first (at most [`NOTES_LIMIT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// Set when a person resolved the conversation; cleared by the customer's next
    /// message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolution>,
    /// The last agent who held the conversation: a rating after they served counts for
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_agent: Option<String>,
    /// Proactive messages: what was sent (for the daily limits) and whether the customer
    /// asked for no more.
    #[serde(default, skip_serializing_if = "Proactivity::is_empty")]
    pub proactive: Proactivity,
}

/// A conversation's proactive messages, as the guard rails read them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proactivity {
    /// The customer asked for no more proactive messages ("别再推送了").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub opted_out: bool,
    /// The proactive messages sent lately, oldest first (bounded: [`PROACTIVE_KEPT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<ProactiveSent>,
}

impl Proactivity {
    /// Nothing to keep.
    pub fn is_empty(&self) -> bool {
        !self.opted_out && self.sent.is_empty()
    }
}

/// How many proactive messages a session remembers (more than any daily limit allows).
pub const PROACTIVE_KEPT: usize = 32;

/// One proactive message sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProactiveSent {
    /// The `proactive` item that sent it.
    pub trigger: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// An image a customer sent, as the conversation keeps it: the bytes are in the image
/// store under `id` (metadata stripped); this is what rules, the log and the inbox see.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The store's id (`img_` and 32 hex digits).
    pub id: String,
    /// The stored type: `jpeg` or `png` (the intake takes JPEG, PNG, WebP and GIF by their
    /// bytes and encodes each anew, see `crate::media`).
    pub kind: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size as stored, in bytes.
    pub bytes: u64,
    /// What a vision model saw in it, when one is configured and answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Why a rule set served a turn: the live version, the canary candidate (the session's
/// hash fell under its share), or the version the request pinned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RulesRole {
    /// The live version, serving everyone else.
    #[default]
    Live,
    /// The canary candidate, serving its share of sessions.
    Canary,
    /// The version the request asked for (`rules_version`), for testing.
    Pinned,
}

impl RulesRole {
    /// Every role, in label order.
    pub const ALL: [RulesRole; 3] = [RulesRole::Live, RulesRole::Canary, RulesRole::Pinned];

    /// The role's name: its JSON form and the `role` label of the per-version metrics.
    pub fn name(self) -> &'static str {
        match self {
            RulesRole::Live => "live",
            RulesRole::Canary => "canary",
            RulesRole::Pinned => "pinned",
        }
    }
}

/// The version (rules hash) and role of the rule set that answered a turn.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedBy {
    /// The rules hash (`RuleSet::version`).
    pub version: String,
    /// Why it served.
    #[serde(default)]
    pub role: RulesRole,
}

impl ServedBy {
    /// Not recorded (a session stored before versions, or not answered yet).
    pub fn is_unknown(&self) -> bool {
        self.version.is_empty()
    }
}

impl Session {
    /// A new, empty session.
    pub fn new(id: impl Into<String>) -> Self {
        Session {
            id: id.into(),
            ..Session::default()
        }
    }

    /// Where the conversation stands for the people who serve it.
    pub fn state(&self) -> ConvState {
        match (&self.takeover, &self.resolved) {
            (Some(t), _) if t.held() => ConvState::Agent,
            (Some(_), _) => ConvState::Waiting,
            (None, Some(_)) => ConvState::Resolved,
            (None, None) => ConvState::Bot,
        }
    }

    /// Appends a message to the history with the next sequence number, dropping the
    /// oldest past the limit.
    pub fn remember(&mut self, role: Role, text: &str, at: i64) {
        self.seq += 1;
        self.history.push_back(HistoryEntry {
            role,
            text: Arc::from(text),
            at,
            seq: self.seq,
            images: Vec::new(),
        });
        while self.history.len() > HISTORY_LIMIT {
            self.history.pop_front();
        }
    }

    /// Remembers `value` under `name` for the conversation, or forgets the name when
    /// `value` is `None` (or JSON null). A value over [`MEMORY_VALUE_BYTES`], or a new name
    /// past [`MEMORY_NAMES`], is not kept: the error says which.
    pub fn keep(&mut self, name: &str, value: Option<serde_json::Value>) -> Result<(), NotKept> {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            self.memory.remove(name);
            return Ok(());
        };
        let bytes = serde_json::to_string(&value).map_or(usize::MAX, |json| json.len());
        if bytes > MEMORY_VALUE_BYTES {
            return Err(NotKept::TooLarge(bytes));
        }
        if !self.memory.contains_key(name) && self.memory.len() >= MEMORY_NAMES {
            return Err(NotKept::TooMany);
        }
        self.memory.insert(name.to_string(), value);
        Ok(())
    }

    /// Records the emotion of a customer message.
    pub fn feel(&mut self, emotion: Emotion) {
        self.emotions.push(emotion);
        if self.emotions.len() > EMOTION_LIMIT {
            self.emotions.remove(0);
        }
    }
}

/// Why a value was not remembered ([`Session::keep`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotKept {
    /// Its JSON has this many bytes, more than [`MEMORY_VALUE_BYTES`].
    TooLarge(usize),
    /// The memory already holds [`MEMORY_NAMES`] other names.
    TooMany,
}

impl std::fmt::Display for NotKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotKept::TooLarge(bytes) => write!(
                f,
                "the value's JSON has {bytes} bytes, over the limit of {MEMORY_VALUE_BYTES}"
            ),
            NotKept::TooMany => write!(f, "the conversation already remembers {MEMORY_NAMES} names"),
        }
    }
}

/// Who said something.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The customer.
    User,
    /// kefu.
    Bot,
    /// A human agent.
    Agent,
}

/// One message in a session's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Who said it.
    pub role: Role,
    /// What was said (PII masked). Shared: every turn copies its session out of the
    /// store and back, and a history of 20 owned strings was a tenth of a rule-answered
    /// turn's CPU time.
    pub text: Arc<str>,
    /// Unix milliseconds.
    pub at: i64,
    /// Its place in the conversation ([`Session::seq`]); 0 in sessions stored before
    /// sequence numbers.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub seq: u64,
    /// The images the message carried (a customer's photos).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRef>,
}

/// A satisfaction score the customer gave the conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// 1 (very unhappy) to 5 (very happy).
    pub score: u8,
    /// What the customer added, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
}

/// What kefu asked at the end of its last reply, and who asked it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asked {
    /// The kind of question (yes or no, anything else, a choice, open), read from the
    /// reply's text or known from the flow step that asked.
    pub kind: PendingKind,
    /// The rule whose reply asked (scripts see it as `session.asked_rule`), so a rule can
    /// answer the customer's yes to that rule's offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl Asked {
    /// Whether kefu asked nothing.
    pub fn is_nothing(&self) -> bool {
        self.kind == PendingKind::Nothing
    }
}

/// A flow in progress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowState {
    /// The flow's name.
    pub name: String,
    /// The next instruction to run.
    pub pc: usize,
    /// The slot whose `ask` is waiting for the customer, if any. A reload that reorders the
    /// flow finds the ask again by this name.
    pub awaiting: Option<String>,
    /// How many answers to the pending ask did not fill its slot.
    pub misses: u32,
    /// Values bound by `set`, as JSON so that any store can keep them.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Unix milliseconds when the flow started.
    pub started_at: i64,
}

/// A person has the conversation, or it waits for one: from a handoff (the bot gave it
/// up) or a takeover (an agent took it) until it is released or resolved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Takeover {
    /// The agent holding it, when one is named.
    pub agent: Option<String>,
    /// Why the bot handed over, in the rule's words (`None` when an agent took it over on
    /// their own).
    pub reason: Option<String>,
    /// Unix milliseconds: when it left the bot (the handoff or the takeover).
    pub since: i64,
    /// Customer messages waiting for the agent, oldest first (at most [`QUEUED_LIMIT`]).
    pub queued: Vec<String>,
    /// Messages dropped from the front of `queued` because it was full.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u32,
    /// Why it left the bot, as a kind the inbox filters and the figures group by.
    #[serde(default)]
    pub kind: HandoffKind,
    /// The queue (group of agents) it waits in or is served by: the rule's `to`, else the
    /// first `queue` whose `for` holds, else the shop's default queue (`None`: no queues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Unix milliseconds: when a person picked it up (`None` while it waits). The waiting
    /// time is `assigned_at - since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<i64>,
    /// Unix milliseconds of the agent's first reply (the first response time is
    /// `first_reply_at - since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_reply_at: Option<i64>,
    /// The flow that was running when a person took over, kept so that a release can
    /// resume it (or drop it, as the agent chooses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_flow: Option<FlowState>,
}

impl Takeover {
    /// Whether a person holds it (else it waits in its queue).
    pub fn held(&self) -> bool {
        self.assigned_at.is_some()
    }
}

/// Where a conversation stands for the people who serve it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvState {
    /// The bot answers.
    #[default]
    Bot,
    /// Handed off, no person has picked it up yet; the bot is silent.
    Waiting,
    /// A person holds it; the bot is silent.
    Agent,
    /// A person resolved it; the next customer message starts it again with the bot.
    Resolved,
}

impl ConvState {
    /// Every state, in the inbox's order.
    pub const ALL: [ConvState; 4] = [
        ConvState::Waiting,
        ConvState::Agent,
        ConvState::Bot,
        ConvState::Resolved,
    ];

    /// The state's name: its JSON form and the `state` label of the metrics.
    pub fn name(self) -> &'static str {
        match self {
            ConvState::Bot => "bot",
            ConvState::Waiting => "waiting",
            ConvState::Agent => "agent",
            ConvState::Resolved => "resolved",
        }
    }
}

/// Why a conversation went to a person: defined by the rule set, whose `handoff … as KIND`
/// names it, and kept here in the takeover.
pub use crate::ruleset::HandoffKind;

/// How many internal notes a conversation keeps; the oldest go first.
pub const NOTES_LIMIT: usize = 50;

/// An agent's internal note on a conversation: never shown to the customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The note, personal data masked.
    pub text: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// How a person closed a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The outcome the agent chose (`solved`, `refund`, `no_reply`... free text, bounded).
    pub outcome: String,
    /// Who resolved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
}

impl Takeover {
    /// Queues a customer message for the agent, dropping the oldest past the limit.
    pub fn queue(&mut self, message: String) {
        self.queued.push(message);
        if self.queued.len() > QUEUED_LIMIT {
            let excess = self.queued.len() - QUEUED_LIMIT;
            self.queued.drain(..excess);
            self.dropped = self.dropped.saturating_add(u32::try_from(excess).unwrap_or(u32::MAX));
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// A new session token: 128 random bits as hex.
pub fn new_token() -> String {
    use std::fmt::Write as _;
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS's generator does not fail on Linux once booted. Should it, std's hasher
        // keys (random per process) over the clock still give an unguessable token.
        use std::hash::{BuildHasher as _, Hasher as _};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        for half in bytes.chunks_mut(8) {
            let mut hasher = std::hash::RandomState::new().build_hasher();
            hasher.write_u128(now);
            half.copy_from_slice(&hasher.finish().to_le_bytes());
        }
    }
    bytes.iter().fold(String::with_capacity(32), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn memory_keeps_values_within_its_bounds_and_null_forgets() {
        let mut s = Session::new("c");
        s.keep("order", Some(json!({"id": "202611100005"}))).unwrap();
        assert_eq!(s.memory["order"]["id"], "202611100005");
        s.keep("order", Some(serde_json::Value::Null)).unwrap();
        assert!(s.memory.is_empty(), "null forgets");
        // One byte over the limit is not kept, and what was there stays.
        s.keep("note", Some(json!("短"))).unwrap();
        let big = "x".repeat(MEMORY_VALUE_BYTES - 1); // with its quotes: one byte over
        assert_eq!(
            s.keep("note", Some(json!(big))),
            Err(NotKept::TooLarge(MEMORY_VALUE_BYTES + 1))
        );
        assert_eq!(s.memory["note"], "短");
        assert!(s.keep("note", Some(json!("x".repeat(MEMORY_VALUE_BYTES - 2)))).is_ok());
        for i in 1..MEMORY_NAMES {
            s.keep(&format!("n{i}"), Some(json!(i))).unwrap();
        }
        assert_eq!(s.memory.len(), MEMORY_NAMES);
        assert_eq!(s.keep("one_more", Some(json!(1))), Err(NotKept::TooMany));
        // A name already kept may change when the memory is full.
        assert!(s.keep("n1", Some(json!("again"))).is_ok());
        assert!(s.keep("n1", None).is_ok() && s.keep("one_more", Some(json!(1))).is_ok());
    }

    #[test]
    fn a_session_stored_before_memory_loads_and_an_empty_memory_is_not_written() {
        let old = r#"{"id":"c","turns":1,"failures":0,"last_intent":null,"slots":{},"flow":null,
            "history":[],"product":null,"emotions":[],"takeover":null,"updated_at":1}"#;
        let s: Session = serde_json::from_str(old).unwrap();
        assert!(s.memory.is_empty());
        assert!(!serde_json::to_string(&s).unwrap().contains("memory"));
    }

    /// A session stored before cards has no `card_context` and still loads; one with a
    /// card's context keeps it through a store and load.
    #[test]
    fn card_context_is_optional_in_stored_sessions() {
        let mut session = Session::new("s");
        let before = serde_json::to_value(&session).unwrap();
        assert!(before.get("card_context").is_none(), "an empty map is not written");
        let loaded: Session = serde_json::from_value(before).unwrap();
        assert!(loaded.card_context.is_empty());

        session.card_context.insert(
            "order".into(),
            serde_json::json!({ "id": "202611100005", "amount": "89.00" }),
        );
        let text = serde_json::to_string(&session).unwrap();
        let loaded: Session = serde_json::from_str(&text).unwrap();
        assert_eq!(loaded.card_context["order"]["id"], "202611100005");
    }
}
