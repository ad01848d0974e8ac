//! One turn, end to end: the only way a message becomes an answer.
//!
//! [`Engine::turn`] is used by the CLI, the HTTP server and the tests alike. It loads one
//! `Arc<RuleSet>` at the start of the turn and uses it to the end, so a reload in the
//! middle of a turn changes nothing for that turn. The order of a turn (docs/language.md
//! section 1): input safety, human takeover, understanding, active flow, rules by
//! priority, promotions, flow starts, the knowledge base's FAQ, fallback; then the model
//! if the fallback says so, judged before it is shown. FAQ and judged model answers are
//! kept in an answer cache (`cache`). Every response says what answered and carries a
//! trace of the decision.
//!
//! The engine is the only writer of sessions: a turn's save (`save`), the acts of people
//! (a takeover, an agent's reply, a release, a note, a resolution, a requeue), a rating
//! and a job's message are each one atomic `SessionStore::update`, reported to the
//! engine's one observer (`events`), which writes the conversation log and the metrics; so
//! is every ticket a turn raises. A person's act wins over a turn running meanwhile: its
//! answer is dropped at the save, and its model generation stops at once (`silence`).
//! [`Engine::suggest`] runs a turn that saves and reports nothing, for an agent.
//!
//! A session store that cannot be reached (Redis down, after the store's own short
//! retries) fails the turn or the operation with [`EngineError::Store`] and changes
//! nothing: a turn never reads a session it could not read as a new conversation, and
//! never gives an answer its session could not record. Callers answer the customer with
//! [`BUSY_REPLY`] (the server: 503 `store_unavailable`).

mod cache;
mod candidates;
mod cards;
pub mod events;
mod flow;
mod model;
mod proactive;
pub mod queue;
mod save;
mod scope;
mod silence;
mod turn;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use crate::RuleSet;
pub use crate::dialogue::ImageRef;
pub use crate::dialogue::RulesRole;
use crate::dialogue::{Feedback, HandoffKind, Note, Resolution, Role, Session, Takeover};
use crate::llm::LlmBackend;
use crate::nlu::{Emotion, EntityMatch, Lang};
use crate::store::{MemoryStore, SessionStore, Write};
use crate::tickets::{Ticket, TicketStore};
pub use cache::{CacheObserver, CacheStats};
pub use events::{Event, Observer};
pub use silence::{MARK_TTL, RUNNING_LIMIT};

/// A customer's message.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnRequest {
    /// The conversation it belongs to.
    pub session_id: String,
    /// What the customer wrote.
    pub message: String,
    /// The customer's profile (`segment`, `orders`, `churn_risk`, ...), `user` in scripts.
    #[serde(default)]
    pub user: Option<serde_json::Map<String, serde_json::Value>>,
    /// Request context maps (`order`, `cart`, `product`, ...), each a script variable.
    #[serde(default)]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    /// The time to answer as of (replaying a conversation); now when absent.
    #[serde(default)]
    pub as_of: Option<DateTime<FixedOffset>>,
    /// The version (rules hash) to answer with, for testing a published version before
    /// or after it serves: the live one, the canary candidate, or one offered for pinning
    /// ([`Engine::offer_pinned`]); any other fails the turn with
    /// [`EngineError::UnknownRulesVersion`]. Absent: the live version, or the candidate
    /// for its share of sessions.
    #[serde(default)]
    pub rules_version: Option<String>,
    /// Where the message came from: `api` (the JSON API, also when absent), `web` (the
    /// widget), `wechat_mp` (a WeChat Official Account), `wechat_kf` (WeChat customer
    /// service), or a webhook channel's configured name (`taobao`...). Set by the server
    /// from the route a message arrived on, never taken from a client's body; scripts read
    /// it as `channel` and the conversation log and report break figures down by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// A platform event instead of a message (`subscribe`, `enter_session`...): the turn
    /// answers only with rules and flow starts `on event NAME`, and says nothing when none
    /// matches (no understanding, no fallback). `message` is empty for an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Images the message carries (already checked, stripped and stored by the server's
    /// image intake; a vision model's description on each when one is configured). A
    /// message may be images alone (`message` empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRef>,
}

/// Something the customer did or that happened to their order, reported by the shop
/// (`POST /v1/events`: the widget's page events, the back office's order events): the
/// input of proactive messages ([`Engine::event`]) and of the report's conversions.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EventRequest {
    /// The conversation it belongs to (a channel conversation's `ch:…` key when the
    /// server resolved one).
    pub session_id: String,
    /// The event's type: `product_dwell`, `cart_changed`, `checkout_abandoned`,
    /// `order_shipped`, `order_delayed`, `order_delivered`, `refund_done`, `order_paid`…
    /// (`script::shape::EVENT_TYPES` lists the known ones); scripts read it as `event.type`.
    pub kind: String,
    /// The event's fields (bounded by the server), `event.*` in scripts.
    #[serde(default)]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The customer's profile, as for a turn (`user`).
    #[serde(default)]
    pub user: Option<serde_json::Map<String, serde_json::Value>>,
    /// When it happened (the caller's timestamp, checked by the server); now when absent.
    #[serde(default)]
    pub at: Option<DateTime<FixedOffset>>,
    /// The channel the customer is reached on (as [`TurnRequest::channel`]); set by the
    /// server, never taken from a client's body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// What an event did ([`Engine::event`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ProactiveOutcome {
    /// No `proactive` item listens for it, or none's condition held: only recorded.
    Recorded,
    /// A trigger sent its message (stored in the session's history as kefu's).
    Sent {
        /// The `proactive` item.
        trigger: String,
        /// The message as sent (masked).
        text: String,
        /// Its sequence number in the conversation.
        seq: u64,
    },
    /// A trigger's condition held but a guard rail stopped it: nothing is sent and the
    /// customer never learns of it; counted per reason.
    Refused {
        /// The `proactive` item.
        trigger: String,
        /// Which guard rail.
        reason: Refusal,
    },
}

/// The guard rail that stopped a proactive message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The trigger's `limit N per day` or the shop's `proactive_limit` was reached.
    Limit,
    /// Inside the quiet hours.
    QuietHours,
    /// A person holds (or the customer waits for) the conversation.
    Held,
    /// A flow is waiting for the customer's answer.
    FlowRunning,
    /// The customer asked for no more ("别再推送了").
    OptedOut,
}

impl Refusal {
    /// The name in metrics, the log and the report.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::QuietHours => "quiet_hours",
            Refusal::Held => "held",
            Refusal::FlowRunning => "flow_running",
            Refusal::OptedOut => "opted_out",
        }
    }
}

impl TurnRequest {
    /// A request with just a session and a message.
    pub fn new(session_id: impl Into<String>, message: impl Into<String>) -> Self {
        TurnRequest {
            session_id: session_id.into(),
            message: message.into(),
            ..TurnRequest::default()
        }
    }

    /// The customer's segment, `user.segment` (`vip`, `new`...), as the caller sent it: the
    /// one place it is read. The answer cache keys on it; the conversation log keeps it
    /// when it is text.
    pub fn segment(&self) -> Option<&serde_json::Value> {
        self.user.as_ref()?.get("segment")
    }

    /// The channel the message came through: [`TurnRequest::channel`], `api` when it
    /// names none (the one place that default is written; `channels::API` is the same).
    pub fn channel_name(&self) -> &str {
        self.channel.as_deref().unwrap_or(DEFAULT_CHANNEL)
    }
}

/// The channel of a request that names none: the JSON API.
pub const DEFAULT_CHANNEL: &str = crate::script::shape::CHANNELS[0];

/// What answered a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerSource {
    /// A `rule`.
    Rule,
    /// A step of a `flow`.
    Flow,
    /// A `promotion`.
    Promotion,
    /// A knowledge-base FAQ entry.
    Faq,
    /// A cached answer.
    Cache,
    /// The model.
    Llm,
    /// The safety filter blocked the message or the answer.
    Safety,
    /// The conversation was handed to a human.
    Handoff,
    /// A human has the conversation; the bot stayed silent.
    Human,
    /// Nothing answered: a fallback `reply` or the shop's `fallback_message`.
    Fallback,
    /// A short reply read against what kefu last asked, answered by the shop's own words
    /// for it: a goodbye, an acknowledgement, "what else can I do".
    Context,
    /// A platform event (`TurnRequest::event`) that no `on event` rule or flow start
    /// answered: kefu says nothing, counts no failure and keeps nothing of it in the
    /// conversation.
    Silent,
}

impl AnswerSource {
    /// Every source: for series that must exist before the first answer (`/metrics`), and
    /// in the order `kefu report` lists them when their counts tie.
    pub const ALL: [AnswerSource; 12] = [
        AnswerSource::Rule,
        AnswerSource::Flow,
        AnswerSource::Promotion,
        AnswerSource::Faq,
        AnswerSource::Cache,
        AnswerSource::Llm,
        AnswerSource::Fallback,
        AnswerSource::Context,
        AnswerSource::Safety,
        AnswerSource::Handoff,
        AnswerSource::Human,
        AnswerSource::Silent,
    ];

    /// The source's name: its JSON form, the `source` label of the metrics and the turn log
    /// line, and the name reports and exports give it.
    pub fn name(self) -> &'static str {
        match self {
            AnswerSource::Rule => "rule",
            AnswerSource::Flow => "flow",
            AnswerSource::Promotion => "promotion",
            AnswerSource::Faq => "faq",
            AnswerSource::Cache => "cache",
            AnswerSource::Llm => "llm",
            AnswerSource::Safety => "safety",
            AnswerSource::Handoff => "handoff",
            AnswerSource::Human => "human",
            AnswerSource::Fallback => "fallback",
            AnswerSource::Context => "context",
            AnswerSource::Silent => "silent",
        }
    }
}

/// Why a conversation went to a human, and where it waits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The reason given by the rule, flow or fallback arm.
    pub reason: String,
    /// The reason's kind.
    #[serde(default)]
    pub kind: HandoffKind,
    /// The queue it waits in (`None`: the shop declares no queues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The queue was closed (outside its hours): the customer got its off-hours reply and
    /// a ticket instead of a wait, and the bot keeps the conversation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub off_hours: bool,
    /// The customer's place in the queue when it was told (1: next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<usize>,
}

/// One step of a turn's decision, for people reading why kefu answered as it did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    /// The stage: `nlu`, `flow`, `rule`, `promotion`, `fallback`, `llm`, `prompt`, `error`...
    pub stage: String,
    /// What happened there.
    pub detail: String,
}

impl TraceStep {
    /// The trace as a customer may see it: which kind of answer, without the rule files'
    /// paths and positions, the scripts that failed, the prompt or the model's errors.
    /// Agents and editors see the whole trace.
    pub fn for_customer(trace: &[TraceStep]) -> Vec<TraceStep> {
        trace
            .iter()
            .filter(|s| !matches!(s.stage.as_str(), "error" | "host" | "prompt" | "kb"))
            .map(|s| {
                let detail = match s.stage.as_str() {
                    "llm" if s.detail.starts_with("answer withheld") => "answer withheld".to_string(),
                    "llm" => "the model did not answer".to_string(),
                    _ => without_locations(&s.detail),
                };
                TraceStep {
                    stage: s.stage.clone(),
                    detail,
                }
            })
            .collect()
    }
}

/// `detail` without the parenthesized places in rule files (`(rules/a.kefu:3:1)`).
fn without_locations(detail: &str) -> String {
    let mut out = String::with_capacity(detail.len());
    let mut rest = detail;
    while let Some(open) = rest.find(" (") {
        let Some(close) = rest[open..].find(')') else { break };
        let inside = &rest[open + 2..open + close];
        out.push_str(&rest[..open]);
        if !inside.contains(".kefu:") && !inside.contains(".yaml:") {
            out.push_str(&rest[open..=open + close]);
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// kefu's answer to a message, with its provenance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TurnResponse {
    /// The conversation.
    pub session_id: String,
    /// What to show the customer (empty while a human has the conversation).
    pub reply: String,
    /// What answered.
    pub source: AnswerSource,
    /// The rule that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The flow that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// The flow step that answered (`ask order_id@12`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The promotion that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<String>,
    /// The knowledge-base FAQ entry that answered (also on a cache hit of one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faq: Option<String>,
    /// The understood intent, when there is one.
    pub intent: Option<String>,
    /// Its confidence.
    pub confidence: f64,
    /// The two intents the classifier found most likely after `intent`, with their
    /// confidences ([`crate::nlu::Understanding::runners_up`]); also on the trace's `nlu`
    /// line. Only when the engine explains its turns ([`EngineConfig::explain`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runners_up: Vec<RunnerUp>,
    /// The customer's mood.
    pub emotion: Emotion,
    /// The language the turn answered in: the message's, or the conversation's when the
    /// message gave no clear sign (one of the shop's `languages`).
    pub language: Lang,
    /// Entities found in the message.
    pub entities: Vec<EntityMatch>,
    /// Set when the conversation is with a human.
    pub handoff: Option<Handoff>,
    /// The rule set that answered.
    pub rules_version: String,
    /// Why that rule set answered: `live`, `canary` (the session is in the candidate's
    /// share) or `pinned` (the request asked for it).
    pub rules_role: RulesRole,
    /// The conversation's secret for the customer's own later requests about it (the
    /// satisfaction score): the same for every turn of a conversation.
    pub session_token: String,
    /// The options the reply asks the customer to pick from (a flow's question with
    /// choices; a yes-or-no question's two answers), for channels that show them as
    /// quick-reply buttons. Empty when the reply asks nothing to pick.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// How the decision was made.
    pub trace: Vec<TraceStep>,
    /// Time spent on the turn.
    pub latency_ms: f64,
    /// CPU time the turn's scripts (conditions, template holes, `set`s) used together:
    /// what the turn cost beyond its fixed work, model calls apart.
    #[serde(skip)]
    pub script_time: Duration,
    /// Rules and flow steps this turn ran (`rule:七天无理由`, `flow:退货申请:12`), for
    /// `kefu test`'s coverage line.
    #[serde(skip)]
    pub covered: Vec<String>,
    /// The customer's message as the turn kept it (personal data and `mask` words
    /// replaced; a blocked message as `［已屏蔽：类别］`), for the conversation log. Not
    /// sent: the caller already has the message.
    #[serde(skip)]
    pub message: String,
    /// The answer's own confidence when its answerer gives one (the model's judged
    /// confidence); `None` for rule, flow and promotion answers, whose fit is `confidence`.
    #[serde(skip)]
    pub answer_confidence: Option<f64>,
    /// The session's count of answered turns after this one (`Session::turns`); a blocked
    /// message or one queued for an agent repeats the previous count.
    #[serde(skip)]
    pub turn: u32,
    /// A person took the conversation over (or replied) while this turn ran, so its
    /// answer was dropped: `reply` is empty and the message waits for the agent. A
    /// streamed turn may already have sent pieces of the dropped model answer; this tells
    /// the client to withdraw them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
    /// The tokens this turn's model calls used (zeros when no model was asked), for the
    /// conversation log's cost and the OpenAI-compatible endpoint's `usage`.
    #[serde(skip)]
    pub usage: Usage,
    /// The messages of the model's prompt, when the model was asked (the console's test
    /// chat shows them; not sent to customers or agents).
    #[serde(skip)]
    pub prompt: Vec<crate::llm::ChatMessage>,
    /// Scripts (conditions, template holes, `set`s, `call`s) that failed during the turn,
    /// each also a trace line: counted in `/metrics` and failing conversation tests.
    #[serde(skip)]
    pub script_errors: Vec<ScriptFailure>,
    /// The questions of a message that asked several, in order, each with what answered
    /// it (nothing, when it was left unanswered); empty when the message was answered as
    /// one question. `reply` joins their answers; `source`, `rule` and the other names
    /// above are those of the answer that ends it (the last part answered), and `intent`
    /// is that part's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartAnswer>,
}

/// An intent the classifier nearly chose for a message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunnerUp {
    /// The intent.
    pub intent: String,
    /// Its confidence.
    pub confidence: f64,
}

/// One question of a message that asked several, and what answered it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PartAnswer {
    /// The question, as a piece of the (masked) message.
    pub text: String,
    /// Its intent, understood on its own.
    pub intent: Option<String>,
    /// That intent's confidence.
    pub confidence: f64,
    /// What answered it; `None` when nothing did (the trace says why: no rule took it, the
    /// shop's `max_answers` was reached, a flow only the last question may start).
    pub source: Option<AnswerSource>,
    /// The rule that answered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The flow it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// The promotion that answered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<String>,
    /// The FAQ entry that answered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faq: Option<String>,
}

/// A script that failed at run time: what `kefu check` cannot see (a field the data did
/// not carry, a limit reached). The turn went on: a failed condition counts as false, a
/// value as `()`, a template hole as nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptFailure {
    /// The item it is in, as the trace names it: `rule 七天无理由`, `flow 退货申请`,
    /// `promotion 双11`, `style 安抚`, `fallback`.
    pub item: String,
    /// Where the script is written: `path:line:col`.
    pub location: String,
    /// Rhai's message.
    pub message: String,
    /// Whether a sandbox limit (operations, time, size) stopped it.
    pub limit: bool,
}

impl std::fmt::Display for ScriptFailure {
    /// `rule 坏脚本 at rules/shop.kefu:36:9: <rhai's message>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}: {}", self.item, self.location, self.message)
    }
}

/// Token counts of one turn's model calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt: u32,
    /// Generated tokens.
    pub completion: u32,
}

/// Settings of an engine that are not part of the rules.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The most tokens the model may generate for one answer. A chat answer is a few
    /// sentences; a model that has not stopped by then is usually rambling.
    pub max_tokens: u32,
    /// How long the model may take for one answer.
    pub llm_timeout: Duration,
    /// The most answers the answer cache holds; 0 turns it off.
    pub answer_cache_capacity: u64,
    /// How long a cached answer is reused.
    pub answer_cache_ttl: Duration,
    /// Whether turns also say what the classifier nearly chose (the runners-up, on the
    /// trace's `nlu` line and in [`TurnResponse::runners_up`]): on for the console's test
    /// chat ([`Engine::sibling`]), where an editor reads them; off when serving, where
    /// nobody does and formatting and sending them cost about 5% of a rule-answered
    /// request (benches/instructions.sh).
    pub explain: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_tokens: 128,
            llm_timeout: Duration::from_secs(20),
            answer_cache_capacity: 10_000,
            // Long enough to absorb a burst of the same question, short enough that an
            // answer does not outlive the day's promotions for long.
            answer_cache_ttl: Duration::from_secs(10 * 60),
            explain: false,
        }
    }
}

/// What a customer is told when their turn failed because the session store could not
/// be reached: nothing was changed, and sending the message again will work once it can.
pub const BUSY_REPLY: &str = "系统繁忙，请稍后再试";

/// Why a turn or a session operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// No session with that id is kept.
    #[error("no session `{0}`")]
    NoSession(String),
    /// The agent replied to a session no human has taken over.
    #[error("session `{0}` is not taken over by a human")]
    NotTakenOver(String),
    /// The customer's request did not carry the conversation's token.
    #[error("the session token does not match session `{0}`")]
    WrongToken(String),
    /// The conversation already has its satisfaction score.
    #[error("session `{0}` is already rated")]
    AlreadyRated(String),
    /// The session store could not be read or written (Redis down); nothing was changed.
    #[error("{0}")]
    Store(String),
    /// The request pinned a rules version this engine does not hold (neither live, nor
    /// the candidate, nor offered for pinning); nothing was changed. Carries the version
    /// asked for, cut to 80 characters.
    #[error("no rules version `{0}` here")]
    UnknownRulesVersion(String),
    /// Another agent, named here, holds the conversation; nothing was changed (a takeover
    /// may force it).
    #[error("another agent holds the conversation: {0}")]
    HeldBy(String),
    /// What a person sent cannot be kept as it is (an empty note, an outcome too long);
    /// the message says why. Nothing was changed.
    #[error("{0}")]
    Invalid(String),
}

/// The longest internal note an agent may write, in characters.
pub const NOTE_CHARS: usize = 2_000;
/// The longest outcome a resolution may have, in characters.
pub const OUTCOME_CHARS: usize = 64;

/// The agent holding `taken` when it is not `agent`: both named and different, and the
/// conversation picked up (a waiting one is anyone's). A caller who names nobody acts
/// for whoever holds it.
fn other_holder<'t>(taken: &'t Takeover, agent: Option<&str>) -> Option<&'t str> {
    let holder = taken.agent.as_deref().filter(|_| taken.held())?;
    (agent.is_some_and(|a| a != holder)).then_some(holder)
}

/// What the rules would answer the customer's last message now ([`Engine::suggest`]), for
/// an agent to edit and send.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Suggestion {
    /// The customer's message it answers (as kept: masked).
    pub message: String,
    /// The suggested reply; empty when nothing confident answers.
    pub reply: String,
    /// What would answer.
    pub source: AnswerSource,
    /// The rule that would answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The knowledge-base FAQ entry that would answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faq: Option<String>,
    /// The flow that would answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// The promotion that would answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<String>,
    /// The understood intent.
    pub intent: Option<String>,
    /// Its confidence.
    pub confidence: f64,
    /// The reply is the model's (the engine has one and the rules deferred to it): an
    /// agent reads it before sending.
    pub model: bool,
    /// How the rules decided.
    pub trace: Vec<TraceStep>,
}

impl Suggestion {
    /// No suggestion, and why (in the trace).
    fn nothing(why: &str) -> Self {
        Suggestion {
            message: String::new(),
            reply: String::new(),
            source: AnswerSource::Fallback,
            rule: None,
            faq: None,
            flow: None,
            promotion: None,
            intent: None,
            confidence: 0.0,
            model: false,
            trace: vec![turn::step("suggest", why)],
        }
    }

    /// The suggestion a turn's answer makes: its reply, unless it is the shop's words for
    /// not knowing (a fallback) or for handing off, which an agent has no use for.
    fn from_response(response: TurnResponse) -> Self {
        let useless = matches!(response.source, AnswerSource::Fallback | AnswerSource::Handoff);
        Suggestion {
            message: response.message,
            reply: if useless { String::new() } else { response.reply },
            source: response.source,
            rule: response.rule,
            faq: response.faq,
            flow: response.flow,
            promotion: response.promotion,
            intent: response.intent,
            confidence: response.confidence,
            model: response.source == AnswerSource::Llm,
            trace: response.trace,
        }
    }
}

/// How many rule sets offered for pinning ([`Engine::offer_pinned`]) an engine keeps
/// besides the live one and the candidate: the oldest offered goes first. Each is a whole
/// rule set in memory, so this is small.
pub const PINNED_LIMIT: usize = 8;

/// A rule set serving a share of sessions beside the live one (a canary).
#[derive(Clone)]
pub struct Candidate {
    /// The candidate rule set.
    pub rules: Arc<RuleSet>,
    /// Its share of sessions, 0 to 100 (per cent).
    pub percent: u8,
}

/// The canary bucket of a session, 0 to 99: the candidate serves the session when its
/// bucket is under the candidate's percent.
///
/// The bucket must be the same on every node, in every process and in every kefu
/// version, or a conversation would flip between versions as its requests land on other
/// nodes or across an upgrade. So it is fixed, published arithmetic, not the standard
/// library's hasher (`DefaultHasher`'s algorithm may change between Rust releases, and
/// `RandomState` differs per process): 64-bit FNV-1a of the id's UTF-8 bytes, then
/// MurmurHash3's 64-bit finalizer (FNV-1a alone leaves ids that differ in their last
/// characters, `user-1`, `user-2`, in a few clumps of buckets), mapped to 0-99 by its high
/// bits (`hash * 100 >> 64`). Raising the percent only adds sessions to the canary: a
/// session under 5 stays under 10. A client that chooses its session id can choose its
/// version; this is a rollout tool, not an access control.
pub fn canary_bucket(session_id: &str) -> u8 {
    let mut hash = fnv1a64(session_id.as_bytes());
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    ((u128::from(hash) * 100) >> 64) as u8
}

/// 64-bit FNV-1a.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The customer-service engine: rules, sessions, tickets and an optional model.
pub struct Engine {
    rules: ArcSwap<RuleSet>,
    /// The canary: a rule set serving a share of sessions (`pick_rules`). Read with one
    /// atomic load per turn; `None` almost always.
    candidate: ArcSwapOption<Candidate>,
    /// Rule sets a request may pin by version besides the live one and the candidate,
    /// oldest first, at most [`PINNED_LIMIT`]. Locked only by pinned requests and offers.
    pinned: std::sync::Mutex<std::collections::VecDeque<Arc<RuleSet>>>,
    sessions: Arc<dyn SessionStore>,
    tickets: Arc<TicketStore>,
    llm: Option<Arc<dyn LlmBackend>>,
    config: EngineConfig,
    cache: cache::AnswerCache,
    /// Answers whose save failed after it may have reached the store (see `turn::Unsure`),
    /// by session: given again when the customer sends the same message and the store
    /// shows the save did land. Bounded; this node's only.
    unsure: quick_cache::sync::Cache<String, Arc<turn::Unsure>>,
    /// Answers put in `unsure` and not taken out yet (evictions leave it high, which
    /// costs only lookups): while it is 0, as it is unless the store failed, a turn
    /// does not look there.
    unsure_kept: std::sync::atomic::AtomicUsize,
    /// Set once, after the engine is made: the conversation log that observes it needs
    /// the engine's rules to mask with, so it can only be opened once the engine exists.
    observer: std::sync::OnceLock<Arc<dyn Observer>>,
    /// This engine's model generations in flight, by session, for [`Engine::silence`].
    running: silence::Registry,
    /// The agents' queues as the service sees them: a handoff's place in its queue, for
    /// the queue's `waiting` text. Asked only at a handoff.
    queues: Option<Arc<dyn queue::Queues>>,
}

impl Engine {
    /// An engine on `rules` with in-memory sessions and no model.
    pub fn new(rules: impl Into<Arc<RuleSet>>) -> Self {
        Engine {
            rules: ArcSwap::new(rules.into()),
            candidate: ArcSwapOption::empty(),
            pinned: std::sync::Mutex::new(std::collections::VecDeque::new()),
            sessions: Arc::new(MemoryStore::default()),
            tickets: Arc::new(TicketStore::default()),
            llm: None,
            cache: cache::AnswerCache::new(
                EngineConfig::default().answer_cache_capacity,
                EngineConfig::default().answer_cache_ttl,
            ),
            config: EngineConfig::default(),
            observer: std::sync::OnceLock::new(),
            unsure: quick_cache::sync::Cache::new(10_000),
            unsure_kept: std::sync::atomic::AtomicUsize::new(0),
            running: silence::Registry::default(),
            queues: None,
        }
    }

    /// An engine on `rules` with this engine's model and settings (explaining its turns:
    /// [`EngineConfig::explain`]) but nothing else of it:
    /// sessions in `sessions`, tickets of its own, its own answer cache, no observer (so
    /// no conversation log and no metrics of conversations). The console's test chat
    /// answers with one built from the draft, beside the serving engine.
    pub fn sibling(&self, rules: impl Into<Arc<RuleSet>>, sessions: Arc<dyn SessionStore>) -> Engine {
        let mut engine = Engine::new(rules)
            .with_config(EngineConfig {
                explain: true,
                ..self.config.clone()
            })
            .with_sessions(sessions);
        engine.llm = self.llm.clone();
        engine
    }

    /// Reports every change to a conversation from now on to `observer` (the conversation
    /// log, the metrics); see [`events`]. An engine has one observer: a second call is
    /// refused and returns `false`.
    pub fn set_observer(&self, observer: Arc<dyn Observer>) -> bool {
        self.observer.set(observer).is_ok()
    }

    fn report(&self, event: Event<'_>) {
        if let Some(observer) = self.observer.get() {
            observer.observe(&event);
        }
    }

    /// Uses `store` for sessions.
    pub fn with_sessions(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.sessions = store;
        self
    }

    /// Keeps tickets in `tickets` (one with a listener, say) instead of a private store.
    pub fn with_tickets(mut self, tickets: Arc<TicketStore>) -> Self {
        self.tickets = tickets;
        self
    }

    /// Asks `queues` where a handed-off customer stands (without it: first, wait unknown).
    pub fn with_queues(mut self, queues: Arc<dyn queue::Queues>) -> Self {
        self.queues = Some(queues);
        self
    }

    /// The agents' queues this engine asks at a handoff, when the service set them.
    pub fn queues(&self) -> Option<&Arc<dyn queue::Queues>> {
        self.queues.as_ref()
    }

    /// Asks `llm` when the fallback says `llm`.
    pub fn with_llm(mut self, llm: Arc<dyn LlmBackend>) -> Self {
        self.llm = Some(llm);
        self
    }

    /// Replaces the settings (and empties the answer cache, which is rebuilt to the new
    /// size and TTL; call before serving).
    pub fn with_config(mut self, config: EngineConfig) -> Self {
        let observer = self.cache.take_observer();
        self.cache = cache::AnswerCache::new(config.answer_cache_capacity, config.answer_cache_ttl);
        if let Some(observer) = observer {
            self.cache.set_observer(observer);
        }
        self.config = config;
        self
    }

    /// Calls `observer` on every answer-cache lookup (`true` for a hit).
    pub fn with_cache_observer(mut self, observer: impl Fn(bool) + Send + Sync + 'static) -> Self {
        self.cache.set_observer(Arc::new(observer));
        self
    }

    /// Answer-cache hits and misses since start, and entries held now.
    pub fn answer_cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The rule set serving now.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.load_full()
    }

    /// Publishes a new rule set; turns already running finish on the one they loaded.
    /// The answer cache is emptied: its answers were made by the old rules (the version
    /// in every key already keeps them from being served; this frees their memory).
    pub fn swap_rules(&self, rules: impl Into<Arc<RuleSet>>) -> Arc<RuleSet> {
        let old = self.rules.swap(rules.into());
        self.cache.clear();
        old
    }

    /// Lets `candidate` serve `percent` per cent of sessions (by [`canary_bucket`]; over
    /// 100 counts as 100) beside the live rule set, or, with `None`, ends the canary: every
    /// session is served by the live one again. Turns already running finish on the rule
    /// set they picked. Returns the candidate replaced.
    pub fn set_candidate(&self, candidate: Option<(Arc<RuleSet>, u8)>) -> Option<Candidate> {
        let next = candidate.map(|(rules, percent)| {
            Arc::new(Candidate {
                rules,
                percent: percent.min(100),
            })
        });
        self.candidate.swap(next).map(|old| Candidate::clone(&old))
    }

    /// The canary candidate and its percent, when there is one.
    pub fn candidate(&self) -> Option<Candidate> {
        self.candidate.load_full().map(|c| Candidate::clone(&c))
    }

    /// Keeps `rules` so that a request may pin its version (`TurnRequest::rules_version`)
    /// while it is neither live nor the candidate (a published version being tested, an
    /// old one being compared). Offering a version already kept makes it the newest; past
    /// [`PINNED_LIMIT`] the oldest offered is let go.
    pub fn offer_pinned(&self, rules: Arc<RuleSet>) {
        let mut pinned = self.pinned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pinned.retain(|kept| kept.version != rules.version);
        pinned.push_back(rules);
        while pinned.len() > PINNED_LIMIT {
            pinned.pop_front();
        }
    }

    /// The versions offered for pinning and still kept, oldest first.
    pub fn pinned_versions(&self) -> Vec<String> {
        let pinned = self.pinned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pinned.iter().map(|r| r.version.clone()).collect()
    }

    /// The one rule set a turn of `request` reads, and why: the pinned version when the
    /// request names one (live, candidate or offered), else the candidate when the
    /// session's bucket is under its percent, else the live one.
    pub fn pick_rules(&self, request: &TurnRequest) -> Result<(Arc<RuleSet>, RulesRole), EngineError> {
        if let Some(wanted) = &request.rules_version {
            return self
                .find_version(wanted)
                .map(|rules| (rules, RulesRole::Pinned))
                .ok_or_else(|| EngineError::UnknownRulesVersion(wanted.chars().take(80).collect()));
        }
        if let Some(candidate) = self.candidate.load().as_deref()
            && canary_bucket(&request.session_id) < candidate.percent
        {
            return Ok((Arc::clone(&candidate.rules), RulesRole::Canary));
        }
        Ok((self.rules.load_full(), RulesRole::Live))
    }

    /// The rule set with this version among the live one, the candidate and those offered.
    fn find_version(&self, version: &str) -> Option<Arc<RuleSet>> {
        let live = self.rules.load_full();
        if live.version == version {
            return Some(live);
        }
        if let Some(candidate) = self.candidate.load().as_deref()
            && candidate.rules.version == version
        {
            return Some(Arc::clone(&candidate.rules));
        }
        let pinned = self.pinned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pinned.iter().find(|r| r.version == version).cloned()
    }

    /// Answers one message. Fails with [`EngineError::Store`] when the session store
    /// could not be read or written, and with [`EngineError::UnknownRulesVersion`] when
    /// the request pins a version this engine does not hold: then nothing was changed and
    /// nothing reported (the in-memory store never fails).
    pub fn turn(&self, request: TurnRequest) -> Result<TurnResponse, EngineError> {
        self.turn_streaming(request, &mut |_| {})
    }

    /// Answers one message, passing pieces of a model answer to `on_delta` as they are
    /// generated (rule answers arrive whole, in the response). Fails as [`turn`](Self::turn)
    /// does; pieces already passed are then withdrawn with the turn.
    pub fn turn_streaming(
        &self,
        request: TurnRequest,
        on_delta: &mut dyn FnMut(&str),
    ) -> Result<TurnResponse, EngineError> {
        let started = Instant::now();
        // The one rule set of this turn, from here to the end.
        let (rules, role) = self.pick_rules(&request)?;
        // The turn's scripts share one time budget, however many rules they are spread over.
        let budget = crate::script::turn_budget(crate::script::Limits::default().max_turn_time);
        let failing = Failing {
            engine: self,
            session: &request.session_id,
            version: &rules.version,
            role,
        };
        let mut response = turn::run(self, &rules, role, &request, on_delta)?;
        std::mem::forget(failing);
        response.rules_role = role;
        response.script_time = budget.spent();
        response.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.report(Event::Turn {
            request: &request,
            response: &response,
        });
        Ok(response)
    }

    /// The session with this id, if it is kept; an error when the store could not be read.
    pub fn session(&self, id: &str) -> Result<Option<Session>, EngineError> {
        self.sessions.get(id).map_err(|e| EngineError::Store(e.to_string()))
    }

    /// A person takes the conversation; the bot stays silent until it is released or
    /// resolved. From the bot: a takeover of kind `agent` held at once, the flow in
    /// progress kept aside (`paused_flow`) for the release to resume or drop. From its
    /// queue (a handoff waiting): picked up now (`assigned_at`). Held by another named
    /// agent: refused with [`EngineError::HeldBy`] unless `force` (a supervisor taking it
    /// over; the original pick-up time stands). A session not kept yet is started with it.
    ///
    /// A turn running at this moment drops its answer when it ends (`human_acts`), and its
    /// model generation, if it is generating, stops at once ([`Engine::silence`]).
    pub fn takeover(&self, id: &str, agent: Option<String>, force: bool) -> Result<Session, EngineError> {
        let now = Utc::now().timestamp_millis();
        let session = self.change(id, |stored| {
            let session = stored.get_or_insert_with(|| Session::new(id));
            match &mut session.takeover {
                Some(taken) => {
                    if !force && let Some(holder) = other_holder(taken, agent.as_deref()) {
                        return Err(EngineError::HeldBy(holder.to_string()));
                    }
                    if agent.is_some() {
                        taken.agent.clone_from(&agent);
                    }
                    taken.assigned_at.get_or_insert(now);
                    // A handoff ended any flow; should one run all the same, it waits too.
                    if taken.paused_flow.is_none() {
                        taken.paused_flow = session.flow.take();
                    }
                }
                None => {
                    session.takeover = Some(Takeover {
                        agent: agent.clone(),
                        since: now,
                        kind: HandoffKind::Agent,
                        assigned_at: Some(now),
                        paused_flow: session.flow.take(),
                        ..Takeover::default()
                    })
                }
            }
            // No flow goes on under a person.
            session.flow = None;
            if let Some(holder) = session.takeover.as_ref().and_then(|t| t.agent.as_ref()) {
                session.last_agent = Some(holder.clone());
            }
            session.resolved = None;
            session.human_acts += 1;
            session.updated_at = now;
            Ok(())
        })?;
        self.silence(id);
        if let Some(taken) = &session.takeover {
            self.report(Event::Takeover {
                session: id,
                agent: taken.agent.as_deref(),
                taken,
            });
        }
        Ok(session)
    }

    /// An agent answers the customer (masked as the customer's messages are); the
    /// customer's queued messages count as seen. A conversation waiting in its queue is
    /// picked up by the agent first (reported as a takeover, then the reply). Refused
    /// when no person has the conversation ([`EngineError::NotTakenOver`]) or when
    /// another named agent holds it and `agent` is named ([`EngineError::HeldBy`]).
    pub fn agent_reply(&self, id: &str, agent: Option<&str>, text: &str) -> Result<Session, EngineError> {
        let masked = self.rules().safety.redact_pii(text).into_owned();
        let now = Utc::now().timestamp_millis();
        let mut picked_up = false;
        let session = self.change(id, |stored| {
            let session = stored.as_mut().ok_or_else(|| EngineError::NoSession(id.to_string()))?;
            let Some(taken) = &mut session.takeover else {
                return Err(EngineError::NotTakenOver(id.to_string()));
            };
            if let Some(holder) = other_holder(taken, agent) {
                return Err(EngineError::HeldBy(holder.to_string()));
            }
            picked_up = !taken.held();
            taken.assigned_at.get_or_insert(now);
            if taken.agent.is_none() {
                taken.agent = agent.map(str::to_string);
            }
            taken.first_reply_at.get_or_insert(now);
            taken.queued.clear();
            taken.dropped = 0;
            if let Some(holder) = &taken.agent {
                session.last_agent = Some(holder.clone());
            }
            session.remember(Role::Agent, &masked, now);
            session.human_acts += 1;
            session.updated_at = now;
            Ok(())
        })?;
        let holder = session.takeover.as_ref().and_then(|t| t.agent.as_deref());
        if picked_up && let Some(taken) = &session.takeover {
            self.report(Event::Takeover {
                session: id,
                agent: holder,
                taken,
            });
        }
        self.report(Event::AgentReply {
            session: id,
            agent: holder,
            text: &masked,
            seq: session.seq,
        });
        Ok(session)
    }

    /// Gives the conversation back to the bot. The flow a takeover paused goes on when
    /// `resume_flow` (its timeout counted from now, so it does not expire at once: the
    /// customer's next message is read by it), else it is dropped with the slots it had
    /// filled, as a cancelled flow's are. `agent` is who released it, for the record. A
    /// conversation no person has is left to the bot as it is.
    pub fn release(&self, id: &str, agent: Option<&str>, resume_flow: bool) -> Result<Session, EngineError> {
        let rules = self.rules();
        let now = Utc::now().timestamp_millis();
        let mut ended = None;
        let mut resumed = false;
        let session = self.change(id, |stored| {
            let session = stored.as_mut().ok_or_else(|| EngineError::NoSession(id.to_string()))?;
            ended = session.takeover.take();
            resumed = false;
            if let Some(paused) = ended.as_ref().and_then(|t| t.paused_flow.clone()) {
                if resume_flow && session.flow.is_none() {
                    session.flow = Some(paused);
                    resumed = true;
                } else {
                    flow::forget_slots(&rules, session, &paused.name);
                }
            }
            if !resumed {
                // What the bot asked before the person spoke is no longer the question.
                session.asked = crate::dialogue::Asked::default();
            }
            session.failures = 0;
            session.human_acts += 1;
            session.updated_at = now;
            Ok(())
        })?;
        if let Some(ended) = &ended {
            self.report(Event::Release {
                session: id,
                agent: agent.or(ended.agent.as_deref()),
                ended,
                resumed,
            });
        }
        Ok(session)
    }

    /// An agent's internal note on the conversation (never shown to the customer):
    /// trimmed, 1 to [`NOTE_CHARS`] characters ([`EngineError::Invalid`] otherwise), kept
    /// masked, the oldest dropped past [`NOTES_LIMIT`](crate::dialogue::session::NOTES_LIMIT).
    /// Not an act on the conversation: a turn running meanwhile keeps its answer.
    pub fn note(&self, id: &str, agent: Option<&str>, text: &str) -> Result<Note, EngineError> {
        let text = text.trim();
        let chars = text.chars().count();
        if chars == 0 || chars > NOTE_CHARS {
            return Err(EngineError::Invalid(format!(
                "a note is 1 to {NOTE_CHARS} characters, not {chars}"
            )));
        }
        let note = Note {
            agent: agent.map(str::to_string),
            text: self.rules().safety.redact_pii(text).into_owned(),
            at: Utc::now().timestamp_millis(),
        };
        self.change(id, |stored| {
            let session = stored.as_mut().ok_or_else(|| EngineError::NoSession(id.to_string()))?;
            session.notes.push(note.clone());
            let excess = session
                .notes
                .len()
                .saturating_sub(crate::dialogue::session::NOTES_LIMIT);
            session.notes.drain(..excess);
            Ok(())
        })?;
        self.report(Event::Note {
            session: id,
            note: &note,
        });
        Ok(note)
    }

    /// A person closes the conversation with an `outcome` (`solved`, `refund`...; trimmed,
    /// 1 to [`OUTCOME_CHARS`] characters, else [`EngineError::Invalid`]): a takeover ends,
    /// the flow in progress (or paused) is dropped with its slots, and the conversation is
    /// `resolved` until the customer's next message, which the bot answers. A turn running
    /// meanwhile drops its answer, and its generation stops ([`Engine::silence`]).
    pub fn resolve(&self, id: &str, agent: Option<&str>, outcome: &str) -> Result<Session, EngineError> {
        let outcome = outcome.trim();
        let chars = outcome.chars().count();
        if chars == 0 || chars > OUTCOME_CHARS {
            return Err(EngineError::Invalid(format!(
                "an outcome is 1 to {OUTCOME_CHARS} characters, not {chars}"
            )));
        }
        let rules = self.rules();
        let now = Utc::now().timestamp_millis();
        let mut ended = None;
        let session = self.change(id, |stored| {
            let session = stored.as_mut().ok_or_else(|| EngineError::NoSession(id.to_string()))?;
            ended = session.takeover.take();
            let paused = ended.as_ref().and_then(|t| t.paused_flow.clone());
            for dropped in [session.flow.take(), paused].into_iter().flatten() {
                flow::forget_slots(&rules, session, &dropped.name);
            }
            session.resolved = Some(Resolution {
                outcome: outcome.to_string(),
                agent: agent.map(str::to_string),
                at: now,
            });
            session.asked = crate::dialogue::Asked::default();
            session.failures = 0;
            session.human_acts += 1;
            session.updated_at = now;
            Ok(())
        })?;
        self.silence(id);
        if let Some(resolution) = &session.resolved {
            self.report(Event::Resolve {
                session: id,
                ended: ended.as_ref(),
                resolution,
            });
        }
        Ok(session)
    }

    /// Puts a conversation `agent` holds back in its queue (their console has been gone
    /// past the grace time): no one holds it, it waits again from its first `since`, and
    /// nothing the customer wrote is lost. With `agent` `None`, whoever holds it. Anything
    /// else (no session, not taken over, waiting already, held by someone else) changes
    /// nothing and is `Ok(false)`.
    pub fn requeue(&self, id: &str, agent: Option<&str>) -> Result<bool, EngineError> {
        let mut holder = None;
        let requeued = self.change(id, |stored| {
            let taken = stored
                .as_mut()
                .and_then(|s| s.takeover.as_mut())
                .filter(|t| t.held() && (agent.is_none() || t.agent.as_deref() == agent))
                // Not an error: the caller is told `false`, and nothing is written.
                .ok_or_else(|| EngineError::NotTakenOver(id.to_string()))?;
            holder = taken.agent.take();
            taken.assigned_at = None;
            Ok(())
        });
        match requeued {
            Ok(_) => {
                self.report(Event::Requeue {
                    session: id,
                    agent: holder.as_deref(),
                });
                Ok(true)
            }
            Err(EngineError::NotTakenOver(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Silences the conversation's model generations now running on this engine (and
    /// those of turns already begun that reach the model shortly): they stop at their next
    /// piece of text, so nothing more of them reaches a stream. Their turns' answers are
    /// dropped by the save when a person acted meanwhile. Takeovers and resolutions on
    /// this engine call it themselves; the server calls it for those made on other nodes.
    /// Costs a running generation one atomic load a piece of text. Returns how many
    /// generations were running.
    pub fn silence(&self, id: &str) -> usize {
        let stopped = self.running.silence(id);
        if stopped > 0 {
            tracing::info!(session = %crate::safety::logsafe::LogSafe(id), generations = stopped, "model generation silenced: a person has the conversation");
        }
        stopped
    }

    /// What the rules (and the model, when the engine has one and the rules defer to it)
    /// would answer the customer's last message now, for an agent to edit and send: a turn
    /// on a copy of the session with the takeover removed (a paused flow running again),
    /// on a sibling engine with a throwaway store and no observer, so nothing is saved,
    /// logged or counted. The reply is empty when nothing confident answers (a fallback)
    /// or the rules would hand off. [`EngineError::NoSession`] when the session is not kept.
    pub fn suggest(&self, id: &str) -> Result<Suggestion, EngineError> {
        self.suggest_with(id, None, None)
    }

    /// [`suggest`](Self::suggest) with the customer's profile (`user`) and request
    /// context maps of their last turn, which the session does not keep (the server's
    /// inbox does): rules that read them answer as they would for the customer.
    pub fn suggest_with(
        &self,
        id: &str,
        user: Option<serde_json::Map<String, serde_json::Value>>,
        context: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Suggestion, EngineError> {
        let mut session = self
            .session(id)?
            .ok_or_else(|| EngineError::NoSession(id.to_string()))?;
        let Some(last) = session.history.iter().rposition(|e| e.role == Role::User) else {
            return Ok(Suggestion::nothing("no customer message to answer"));
        };
        let message = session.history[last].text.to_string();
        // The turn adds the message again, after what came before it.
        session.history.truncate(last);
        if let Some(taken) = session.takeover.take() {
            if session.flow.is_none() {
                session.flow = taken.paused_flow;
            }
            // A paused flow's clock stood still while the person had the conversation.
            session.updated_at = Utc::now().timestamp_millis();
        }
        session.resolved = None;
        let request = TurnRequest {
            session_id: id.to_string(),
            message,
            user,
            context,
            ..TurnRequest::default()
        };
        let (rules, _) = self.pick_rules(&request)?;
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
        store
            .update(id, &mut |stored| {
                *stored = Some(session.clone());
                Write::Store
            })
            .map_err(|e| EngineError::Store(e.to_string()))?;
        let response = self.sibling(rules, store).turn(request)?;
        Ok(Suggestion::from_response(response))
    }

    /// The customer rates the conversation (1-5, with an optional comment, kept masked):
    /// once per conversation, and only with the conversation's token, which the customer
    /// got with kefu's answers. Returns the record kept.
    pub fn feedback(&self, id: &str, token: &str, score: u8, comment: Option<&str>) -> Result<Feedback, EngineError> {
        let comment = comment
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| self.rules().safety.redact_pii(c).into_owned());
        let given = Feedback {
            score,
            comment,
            at: Utc::now().timestamp_millis(),
        };
        let rated = self.change(id, |stored| {
            let session = stored.as_mut().ok_or_else(|| EngineError::NoSession(id.to_string()))?;
            if session.token.is_empty() || !constant_time_eq(session.token.as_bytes(), token.as_bytes()) {
                return Err(EngineError::WrongToken(id.to_string()));
            }
            if !session.feedback.is_empty() {
                return Err(EngineError::AlreadyRated(id.to_string()));
            }
            session.feedback.push(given.clone());
            Ok(())
        })?;
        self.report(Event::Feedback {
            session: id,
            feedback: &given,
            served_by: &rated.served_by,
            agent: rated.last_agent.as_deref(),
        });
        Ok(given)
    }

    /// An event the shop reported: the rule set's `proactive` items that listen for its
    /// type are tried in order (condition, then the guard rails: the customer opted out,
    /// a person holds the conversation, a flow waits, quiet hours, the trigger's and the
    /// shop's daily limits); the first whose condition holds sends its message (one atomic
    /// update of the session: history, `proactive.sent`) or is refused. Reported to the
    /// observer as [`Event::CustomerEvent`] whatever the outcome (the log's `event` and
    /// `proactive` records, delivery on the customer's channel, the metrics).
    /// A refusal stores nothing; a session that does not exist is created for a message
    /// sent (like [`tell`](Self::tell)) and left alone otherwise. Fails only when the
    /// session store fails (nothing sent then).
    pub fn event(&self, request: &EventRequest) -> Result<ProactiveOutcome, EngineError> {
        let outcome = proactive::run(self, request)?;
        self.report(Event::CustomerEvent {
            request,
            outcome: &outcome,
        });
        Ok(outcome)
    }

    /// Adds a message from kefu to a conversation outside a turn (the outcome of a job
    /// that finished later: a ticket delivered or given up). A conversation that is no
    /// longer kept is started with it, so the customer sees it when they come back.
    pub fn tell(&self, id: &str, text: &str) -> Result<Session, EngineError> {
        let now = Utc::now().timestamp_millis();
        self.change(id, |stored| {
            let session = stored.get_or_insert_with(|| Session::new(id));
            session.remember(Role::Bot, text, now);
            session.updated_at = session.updated_at.max(now);
            Ok(())
        })
        .inspect(|session| {
            self.report(Event::Told {
                session: id,
                text,
                seq: session.seq,
            })
        })
    }

    /// Applies `change` to the stored session as one atomic update; the session is stored
    /// when it returns `Ok`, left as it was on `Err`. `change` may run more than once (a
    /// shared store retries when another node wrote in between).
    fn change(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Option<Session>) -> Result<(), EngineError>,
    ) -> Result<Session, EngineError> {
        let mut refused = None;
        let stored = self
            .sessions
            .update(id, &mut |stored| match change(stored) {
                Ok(()) => {
                    refused = None;
                    Write::Store
                }
                Err(e) => {
                    refused = Some(e);
                    Write::Leave
                }
            })
            .map_err(|e| EngineError::Store(e.to_string()))?;
        if let Some(e) = refused {
            return Err(e);
        }
        stored.ok_or_else(|| EngineError::NoSession(id.to_string()))
    }

    /// Tickets raised by flows on this engine.
    pub fn tickets(&self) -> Vec<Ticket> {
        self.tickets.list()
    }
}

/// Reports a turn that did not finish (an error returned, or a panic unwinding through
/// it) as [`Event::TurnFailed`] when dropped; forgotten when the turn answers. A guard
/// rather than a match on the result so that a panic, the failure most likely to come
/// from a bad new rule set, is counted for its version too.
struct Failing<'a> {
    engine: &'a Engine,
    session: &'a str,
    version: &'a str,
    role: RulesRole,
}

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        let served_by = crate::dialogue::ServedBy {
            version: self.version.to_string(),
            role: self.role,
        };
        self.engine.report(Event::TurnFailed {
            session: self.session,
            served_by: &served_by,
        });
    }
}

/// Compares two secrets in time that does not depend on where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_source_is_named_as_it_is_serialized() {
        use AnswerSource::*;
        for source in [Rule, Flow, Promotion, Faq, Cache, Llm, Safety, Handoff, Human, Fallback] {
            assert_eq!(serde_json::to_value(source).unwrap(), source.name());
            let back: AnswerSource = serde_json::from_value(source.name().into()).unwrap();
            assert_eq!(back, source);
        }
    }

    /// The engine fixture's rule set, and a second version of it (a comment added, so
    /// only its hash differs): loaded once for all the canary tests.
    fn two_versions() -> (Arc<RuleSet>, Arc<RuleSet>) {
        static VERSIONS: std::sync::OnceLock<(Arc<RuleSet>, Arc<RuleSet>)> = std::sync::OnceLock::new();
        VERSIONS
            .get_or_init(|| {
                let dir = std::path::Path::new("tests/data/engine");
                let live = crate::dsl::load_dir(dir).rules.expect("the engine fixture compiles");
                let copy = tempfile::tempdir().unwrap();
                for entry in std::fs::read_dir(dir).unwrap() {
                    let entry = entry.unwrap();
                    if entry.file_type().unwrap().is_file() {
                        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
                    }
                }
                let shop = copy.path().join("shop.kefu");
                let text = std::fs::read_to_string(&shop).unwrap();
                std::fs::write(&shop, format!("{text}\n# the candidate\n")).unwrap();
                let candidate = crate::dsl::load_dir(copy.path()).rules.expect("the copy compiles");
                assert_ne!(live.version, candidate.version);
                (Arc::new(live), Arc::new(candidate))
            })
            .clone()
    }

    fn version_of(engine: &Engine, session: &str) -> (String, RulesRole) {
        let r = engine.turn(TurnRequest::new(session, "发票")).unwrap();
        (r.rules_version, r.rules_role)
    }

    const PINNED_BUCKETS: [u8; 4] = [93, 51, 54, 55];

    #[test]
    fn the_canary_bucket_is_fnv_1a_and_spreads_ids_evenly() {
        // FNV-1a's published test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        // Fixed forever: a change would move live conversations between versions.
        let fixed: Vec<u8> = ["", "a", "u-1001", "会话"].iter().map(|id| canary_bucket(id)).collect();
        assert_eq!(fixed, PINNED_BUCKETS);
        let mut buckets = [0u32; 100];
        for i in 0..10_000 {
            buckets[usize::from(canary_bucket(&format!("session-{i}")))] += 1;
        }
        // 100 ids a bucket expected; the spread of a fair draw stays well inside this.
        assert!(buckets.iter().all(|&n| (50..=160).contains(&n)), "{buckets:?}");
        // Short ids that differ only in their last bytes (FNV-1a alone put 210 of these
        // 400 under 30).
        let under_30 = (0..400).filter(|i| canary_bucket(&format!("c{i}")) < 30).count();
        assert!((90..=150).contains(&under_30), "{under_30} of 400 under 30");
    }

    #[test]
    fn a_candidate_serves_close_to_its_share_of_sessions() {
        let (live, candidate) = two_versions();
        let engine = Engine::new(Arc::clone(&live));
        engine.set_candidate(Some((Arc::clone(&candidate), 10)));
        let served = (0..10_000)
            .filter(|i| {
                let request = TurnRequest::new(format!("user-{i}"), "发票");
                let (rules, role) = engine.pick_rules(&request).unwrap();
                assert_eq!(role == RulesRole::Canary, rules.version == candidate.version);
                role == RulesRole::Canary
            })
            .count();
        assert!(
            (850..=1150).contains(&served),
            "{served} of 10000 on the candidate at 10%"
        );
    }

    #[test]
    fn a_session_stays_with_its_version_for_the_whole_conversation() {
        let (live, candidate) = two_versions();
        let engine = Engine::new(Arc::clone(&live));
        engine.set_candidate(Some((Arc::clone(&candidate), 50)));
        for i in 0..20 {
            let session = format!("s{i}");
            let first = version_of(&engine, &session);
            for _ in 0..3 {
                assert_eq!(version_of(&engine, &session), first);
            }
            // Raising the share keeps every canary session on the candidate.
            let bucket = canary_bucket(&session);
            assert_eq!(first.1 == RulesRole::Canary, bucket < 50);
        }
        engine.set_candidate(Some((Arc::clone(&candidate), 80)));
        for i in 0..20 {
            let session = format!("s{i}");
            if canary_bucket(&session) < 50 {
                assert_eq!(version_of(&engine, &session).1, RulesRole::Canary);
            }
        }
    }

    #[test]
    fn zero_percent_serves_nobody_and_a_hundred_everybody() {
        let (live, candidate) = two_versions();
        let engine = Engine::new(Arc::clone(&live));
        engine.set_candidate(Some((Arc::clone(&candidate), 0)));
        assert!((0..500).all(|i| version_of(&engine, &format!("z{i}")) == (live.version.clone(), RulesRole::Live)));
        engine.set_candidate(Some((Arc::clone(&candidate), 100)));
        assert!(
            (0..500).all(|i| version_of(&engine, &format!("z{i}")) == (candidate.version.clone(), RulesRole::Canary))
        );
        // Over 100 is 100.
        engine.set_candidate(Some((Arc::clone(&candidate), 250)));
        assert_eq!(engine.candidate().unwrap().percent, 100);
    }

    #[test]
    fn a_removed_candidate_leaves_every_session_to_live() {
        let (live, candidate) = two_versions();
        let engine = Engine::new(Arc::clone(&live));
        engine.set_candidate(Some((Arc::clone(&candidate), 100)));
        assert_eq!(version_of(&engine, "c1").1, RulesRole::Canary);
        let removed = engine.set_candidate(None).expect("there was a candidate");
        assert_eq!(removed.rules.version, candidate.version);
        assert!(engine.candidate().is_none());
        assert_eq!(version_of(&engine, "c1"), (live.version.clone(), RulesRole::Live));
    }

    #[test]
    fn a_pinned_version_is_served_when_known_and_refused_when_not() {
        let (live, candidate) = two_versions();
        let engine = Engine::new(Arc::clone(&live));
        let pinned = |session: &str, version: &str| {
            let mut request = TurnRequest::new(session, "发票");
            request.rules_version = Some(version.to_string());
            engine.turn(request)
        };
        // Unknown until offered; the refused turn changed nothing.
        assert_eq!(
            pinned("p1", &candidate.version),
            Err(EngineError::UnknownRulesVersion(candidate.version.clone()))
        );
        assert!(engine.session("p1").unwrap().is_none());
        let r = pinned("p1", &live.version).unwrap();
        assert_eq!(
            (r.rules_version, r.rules_role),
            (live.version.clone(), RulesRole::Pinned)
        );
        engine.offer_pinned(Arc::clone(&candidate));
        assert_eq!(engine.pinned_versions(), std::slice::from_ref(&candidate.version));
        let r = pinned("p1", &candidate.version).unwrap();
        assert_eq!(
            (r.rules_version, r.rules_role),
            (candidate.version.clone(), RulesRole::Pinned)
        );
        // The session records what served it, for a rating after.
        let served = engine.session("p1").unwrap().unwrap().served_by;
        assert_eq!(
            (served.version, served.role),
            (candidate.version.clone(), RulesRole::Pinned)
        );
        // The candidate can be pinned while it is the candidate, by anyone's session.
        engine.set_candidate(Some((Arc::clone(&candidate), 0)));
        assert_eq!(pinned("p2", &candidate.version).unwrap().rules_role, RulesRole::Pinned);
        let long = "x".repeat(500);
        assert_eq!(
            pinned("p3", &long),
            Err(EngineError::UnknownRulesVersion("x".repeat(80)))
        );
    }

    #[test]
    fn offered_versions_are_bounded_oldest_first() {
        let (live, _) = two_versions();
        let engine = Engine::new(Arc::clone(&live));
        let dir = tempfile::tempdir().unwrap();
        let offered: Vec<String> = (0..PINNED_LIMIT + 3)
            .map(|i| {
                let text = format!(
                    "# version {i}\nshop \"小店\" {{\n}}\nrule 发票 {{\n  on keywords \"发票\"\n  reply \"好的\"\n}}\n"
                );
                std::fs::write(dir.path().join("shop.kefu"), text).unwrap();
                let options = crate::dsl::LoadOptions {
                    quick_training: true,
                    ..Default::default()
                };
                let rules = crate::dsl::load_dir_with(dir.path(), options).rules.expect("compiles");
                let version = rules.version.clone();
                engine.offer_pinned(Arc::new(rules));
                version
            })
            .collect();
        // Offering one again makes it the newest rather than keeping it twice.
        let again = crate::dsl::load_dir_with(
            dir.path(),
            crate::dsl::LoadOptions {
                quick_training: true,
                ..Default::default()
            },
        );
        engine.offer_pinned(Arc::new(again.rules.unwrap()));
        let kept = engine.pinned_versions();
        assert_eq!(kept, offered[3..]);
    }

    fn step(stage: &str, detail: &str) -> TraceStep {
        TraceStep {
            stage: stage.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn a_customer_trace_names_the_answer_but_not_the_rules_internals() {
        let full = [
            step("nlu", "intent 商品.缩水 (1.00), emotion neutral"),
            step("error", "rule 会员价 (/srv/shop/rules/a.kefu:12:3): script failed: x"),
            step("rule", "缩水 (/srv/shop/rules/presale.kefu:97:1) answers"),
            step("prompt", "persona, policies"),
            step("llm", "http://10.0.0.3:8080: connection refused"),
            step("llm", "answer withheld: confidence below 0.6"),
        ];
        let shown = TraceStep::for_customer(&full);
        assert_eq!(
            shown,
            [
                step("nlu", "intent 商品.缩水 (1.00), emotion neutral"),
                step("rule", "缩水 answers"),
                step("llm", "the model did not answer"),
                step("llm", "answer withheld"),
            ]
        );
    }
}
