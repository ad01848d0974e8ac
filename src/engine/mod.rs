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
//! The engine is the only writer of sessions: a turn's save (`save`), a takeover, an
//! agent's reply, a release, a rating and a job's message are each one atomic
//! `SessionStore::update`. Each but the job's message (which the job queue logs) is
//! reported to the engine's one observer (`events`), which writes the conversation log and
//! the metrics; so is every ticket a turn raises.
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
mod save;
mod scope;
mod turn;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use crate::RuleSet;
use crate::dialogue::{Feedback, Role, Session, Takeover};
use crate::llm::LlmBackend;
use crate::nlu::{Emotion, EntityMatch, Lang};
use crate::store::{MemoryStore, SessionStore, Write};
use crate::tickets::{Ticket, TicketStore};
pub use cache::{CacheObserver, CacheStats};
pub use events::{Event, Observer};

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
}

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
}

impl AnswerSource {
    /// Every source: for series that must exist before the first answer (`/metrics`), and
    /// in the order `kefu report` lists them when their counts tie.
    pub const ALL: [AnswerSource; 11] = [
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
        }
    }
}

/// Why a conversation went to a human.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The reason given by the rule, flow or fallback arm.
    pub reason: String,
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
    /// The conversation's secret for the customer's own later requests about it (the
    /// satisfaction score): the same for every turn of a conversation.
    pub session_token: String,
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
}

/// The customer-service engine: rules, sessions, tickets and an optional model.
pub struct Engine {
    rules: ArcSwap<RuleSet>,
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
}

impl Engine {
    /// An engine on `rules` with in-memory sessions and no model.
    pub fn new(rules: impl Into<Arc<RuleSet>>) -> Self {
        Engine {
            rules: ArcSwap::new(rules.into()),
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
        }
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

    /// Answers one message. Fails only with [`EngineError::Store`], when the session
    /// store could not be read or written: then nothing was changed and nothing reported
    /// (the in-memory store never fails).
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
        let rules = self.rules.load_full();
        // The turn's scripts share one time budget, however many rules they are spread over.
        let budget = crate::script::turn_budget(crate::script::Limits::default().max_turn_time);
        let mut response = turn::run(self, &rules, &request, on_delta)?;
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

    /// A human takes the conversation over at once; the bot stays silent until released.
    /// A turn running at this moment drops its answer when it ends (see `human_acts`).
    pub fn takeover(&self, id: &str, agent: Option<String>) -> Result<Session, EngineError> {
        let now = Utc::now().timestamp_millis();
        self.change(id, |stored| {
            let session = stored.get_or_insert_with(|| Session::new(id));
            match &mut session.takeover {
                Some(t) => t.agent = agent.clone().or(t.agent.take()),
                None => {
                    session.takeover = Some(Takeover {
                        agent: agent.clone(),
                        reason: None,
                        since: now,
                        queued: Vec::new(),
                        dropped: 0,
                    })
                }
            }
            // A flow in progress cannot go on under a human.
            session.flow = None;
            session.human_acts += 1;
            session.updated_at = now;
            Ok(())
        })
        .inspect(|session| {
            self.report(Event::Takeover {
                session: id,
                agent: session.takeover.as_ref().and_then(|t| t.agent.as_deref()),
            })
        })
    }

    /// An agent answers a conversation they have taken over; the customer's queued
    /// messages count as seen.
    pub fn agent_reply(&self, id: &str, text: &str) -> Result<Session, EngineError> {
        // What an agent types is kept masked, as the customer's messages are.
        let masked = self.rules().safety.redact_pii(text).into_owned();
        let now = Utc::now().timestamp_millis();
        self.change(id, |stored| {
            let session = stored.as_mut().ok_or_else(|| EngineError::NoSession(id.to_string()))?;
            let Some(takeover) = &mut session.takeover else {
                return Err(EngineError::NotTakenOver(id.to_string()));
            };
            takeover.queued.clear();
            takeover.dropped = 0;
            session.remember(Role::Agent, &masked, now);
            session.human_acts += 1;
            session.updated_at = now;
            Ok(())
        })
        .inspect(|session| {
            self.report(Event::AgentReply {
                session: id,
                agent: session.takeover.as_ref().and_then(|t| t.agent.as_deref()),
                text: &masked,
            })
        })
    }

    /// Gives the conversation back to the bot.
    pub fn release(&self, id: &str) -> Result<Session, EngineError> {
        let now = Utc::now().timestamp_millis();
        self.change(id, |stored| {
            let session = stored.as_mut().ok_or_else(|| EngineError::NoSession(id.to_string()))?;
            session.takeover = None;
            session.failures = 0;
            session.human_acts += 1;
            session.updated_at = now;
            Ok(())
        })
        .inspect(|_| self.report(Event::Release { session: id }))
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
        self.change(id, |stored| {
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
        });
        Ok(given)
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
