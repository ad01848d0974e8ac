//! One line of the conversation log: what happened in a conversation, when, and on which
//! rules.
//!
//! Every line is one JSON object with a `kind`: `turn` (a customer message and kefu's
//! answer, with its provenance and cost), `agent` (a human agent's answer), `takeover`
//! (a person picked the conversation up: its handoff's kind, queue and reason, how long
//! it waited), `release` and `resolve` (a person's hold ended: who, the queue, the
//! waiting, first response and handling times; a resolution's outcome), `requeue` (back
//! in its queue after the agent's grace time), `note` (an agent's internal note), and
//! `feedback` (the customer's 1-5 score, and the agent who served last), `event` (an event
//! the shop reported, `POST /v1/events`, and what it did: recorded, a proactive message
//! sent, or refused by a guard rail) and `proactive` (the proactive message sent). All
//! carry `ts` (RFC 3339 in the shop's time zone) and `session`.
//! Texts are masked before they are written (see [`writer`](super::writer)). Readers
//! accept unknown fields, so lines written by a newer kefu still read.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::dialogue::HandoffKind;
use crate::engine::AnswerSource;

/// One line of the conversation log.
// Nearly every record is a turn: boxing it would add an allocation to the common case to
// save memory on the rare ones.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A customer message and kefu's answer.
    Turn(TurnRecord),
    /// A human agent's answer to a conversation they took over.
    Agent(AgentRecord),
    /// An agent took the conversation over (the bot stays silent until released).
    Takeover(TakeoverRecord),
    /// The agent gave the conversation back to the bot.
    Release(ReleaseRecord),
    /// The customer's satisfaction score.
    Feedback(FeedbackRecord),
    /// A person resolved the conversation.
    Resolve(ResolveRecord),
    /// The conversation went back to its queue (its agent was gone past the grace time).
    Requeue(RequeueRecord),
    /// An agent's internal note.
    Note(NoteRecord),
    /// An event the shop reported, and what it did.
    Event(EventRecord),
    /// A proactive message kefu sent.
    Proactive(ProactiveRecord),
}

impl Record {
    /// When it happened.
    pub fn ts(&self) -> DateTime<FixedOffset> {
        match self {
            Record::Turn(r) => r.ts,
            Record::Agent(r) => r.ts,
            Record::Takeover(r) => r.ts,
            Record::Release(r) => r.ts,
            Record::Feedback(r) => r.ts,
            Record::Resolve(r) => r.ts,
            Record::Requeue(r) => r.ts,
            Record::Note(r) => r.ts,
            Record::Event(r) => r.ts,
            Record::Proactive(r) => r.ts,
        }
    }

    /// The conversation.
    pub fn session(&self) -> &str {
        match self {
            Record::Turn(r) => &r.session,
            Record::Agent(r) => &r.session,
            Record::Takeover(r) => &r.session,
            Record::Release(r) => &r.session,
            Record::Feedback(r) => &r.session,
            Record::Resolve(r) => &r.session,
            Record::Requeue(r) => &r.session,
            Record::Note(r) => &r.session,
            Record::Event(r) => &r.session,
            Record::Proactive(r) => &r.session,
        }
    }

    /// The texts people wrote or were shown, for masking in place.
    pub fn texts_mut(&mut self) -> Vec<&mut String> {
        match self {
            Record::Turn(r) => [&mut r.message, &mut r.reply]
                .into_iter()
                .chain(r.images.iter_mut().filter_map(|i| i.description.as_mut()))
                .collect(),
            Record::Proactive(r) => vec![&mut r.text],
            Record::Agent(r) => vec![&mut r.text],
            Record::Feedback(r) => r.comment.iter_mut().collect(),
            Record::Note(r) => vec![&mut r.text],
            Record::Resolve(r) => vec![&mut r.outcome],
            // An event's data is masked as a profile is (its string values).
            Record::Takeover(_) | Record::Release(_) | Record::Requeue(_) | Record::Event(_) => Vec::new(),
        }
    }

    /// The identifiers a client chose (the session id, the agent's name), for masking:
    /// an OpenAI client's `user`, which becomes the session id, is often a phone number.
    pub fn ids_mut(&mut self) -> Vec<&mut String> {
        match self {
            Record::Turn(r) => vec![&mut r.session],
            Record::Agent(r) => std::iter::once(&mut r.session).chain(r.agent.as_mut()).collect(),
            Record::Takeover(r) => std::iter::once(&mut r.session).chain(r.agent.as_mut()).collect(),
            Record::Release(r) => std::iter::once(&mut r.session).chain(r.hold.agent.as_mut()).collect(),
            Record::Feedback(r) => std::iter::once(&mut r.session).chain(r.agent.as_mut()).collect(),
            Record::Resolve(r) => std::iter::once(&mut r.session).chain(r.hold.agent.as_mut()).collect(),
            Record::Requeue(r) => std::iter::once(&mut r.session).chain(r.agent.as_mut()).collect(),
            Record::Note(r) => std::iter::once(&mut r.session).chain(r.agent.as_mut()).collect(),
            Record::Event(r) => vec![&mut r.session],
            Record::Proactive(r) => vec![&mut r.session],
        }
    }

    /// A rough size in bytes, for bounding what waits to be written.
    pub fn weight(&self) -> usize {
        let texts = match self {
            Record::Turn(r) => {
                let maps = [&r.user, &r.context].into_iter().flatten();
                r.message.len() + r.reply.len() + maps.map(map_size).sum::<usize>()
            }
            Record::Agent(r) => r.text.len(),
            Record::Feedback(r) => r.comment.as_ref().map_or(0, String::len),
            Record::Note(r) => r.text.len(),
            Record::Event(r) => map_size(&r.data),
            Record::Proactive(r) => r.text.len(),
            Record::Takeover(_) | Record::Release(_) | Record::Resolve(_) | Record::Requeue(_) => 0,
        };
        256 + texts
    }
}

/// A customer message and kefu's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// When the answer was given.
    pub ts: DateTime<FixedOffset>,
    /// The conversation.
    pub session: String,
    /// The session's count of answered turns after this one; a blocked message or one
    /// queued for an agent repeats the previous count.
    pub turn: u32,
    /// The customer's segment (`user.segment`: `vip`, `new`...), when the caller sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// The customer's profile as the caller sent it (`user` in scripts), for replaying the
    /// turn: string values (and keys) masked, at most [`PROFILE_BYTES`] of it (entries
    /// past that are left out and `profile_cut` set). Absent in logs of older kefus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<serde_json::Map<String, serde_json::Value>>,
    /// The request's context maps (`order`, `cart`...), kept and bounded as `user` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    /// Some entries of `user` or `context` were left out: they did not fit in
    /// [`PROFILE_BYTES`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub profile_cut: bool,
    /// The time the turn was answered as of, when the request gave one (`as_of`, a
    /// replayed conversation) rather than the time it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<DateTime<FixedOffset>>,
    /// The channel the message came through (`web`, `wechat_mp`, a webhook's name);
    /// absent for `api`, so logs from before channels read as the API's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The platform event the turn answered instead of a message (`subscribe`); its
    /// `message` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The customer's message, masked.
    pub message: String,
    /// kefu's answer, masked (empty while an agent has the conversation).
    pub reply: String,
    /// What answered.
    pub source: AnswerSource,
    /// The rule that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The promotion that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<String>,
    /// The flow that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// The flow step that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The knowledge-base FAQ entry that answered (also on a cache hit of one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faq: Option<String>,
    /// The understood intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// The intent's confidence.
    pub confidence: f64,
    /// The answer's own confidence when its answerer gives one (the model's judged
    /// confidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_confidence: Option<f64>,
    /// Why the conversation went to a human, when it did (also set on messages queued
    /// for an agent who has the conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
    /// What the safety filter did in this turn (`pii phone`, `mask 脏话`, `blocked: 政治`,
    /// `reply masked: pii phone`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safety: Vec<String>,
    /// Time the engine spent on the turn, in milliseconds.
    pub latency_ms: f64,
    /// Model prompt tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompt_tokens: u32,
    /// Model generated tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub completion_tokens: u32,
    /// The rule set that answered.
    pub rules: String,
    /// Scripts that failed during the turn (the trace names them), when any.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub script_errors: u32,
    /// The kefu node that answered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// A person took the conversation over while the turn ran: its answer was dropped
    /// (`source` is `human`, `reply` empty) and the message queued for the agent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
    /// The model answered but the judge withheld its answer (the trace's `llm` step
    /// "answer withheld…"), so the fallback chain spoke instead; `kefu mine` counts such
    /// turns apart from plain fallbacks. Logs of older kefus read as false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withheld: bool,
    /// The images the message carried (their store ids, type, size and a vision model's
    /// description, masked; never their bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<crate::dialogue::ImageRef>,
}

/// The longest event name a turn record keeps (`TurnRecord::event`).
pub const MAX_EVENT_BYTES: usize = 64;

impl TurnRecord {
    /// The record of an answered turn: the response, when it was given, the customer's
    /// segment, the model tokens it used and the node that answered.
    pub fn from_response(
        response: &crate::engine::TurnResponse,
        ts: DateTime<FixedOffset>,
        segment: Option<&str>,
        tokens: (u32, u32),
        node: &str,
    ) -> Self {
        TurnRecord {
            ts,
            session: response.session_id.clone(),
            turn: response.turn,
            segment: segment.map(str::to_string),
            user: None,
            context: None,
            profile_cut: false,
            as_of: None,
            channel: None,
            event: None,
            message: response.message.clone(),
            reply: response.reply.clone(),
            source: response.source,
            rule: response.rule.clone(),
            promotion: response.promotion.clone(),
            flow: response.flow.clone(),
            step: response.step.clone(),
            faq: response.faq.clone(),
            intent: response.intent.clone(),
            confidence: response.confidence,
            answer_confidence: response.answer_confidence,
            handoff: response.handoff.as_ref().map(|h| h.reason.clone()),
            safety: safety_hits(&response.trace),
            latency_ms: response.latency_ms,
            prompt_tokens: tokens.0,
            completion_tokens: tokens.1,
            rules: response.rules_version.clone(),
            script_errors: u32::try_from(response.script_errors.len()).unwrap_or(u32::MAX),
            node: node.to_string(),
            dropped: response.dropped,
            withheld: response
                .trace
                .iter()
                .any(|s| s.stage == "llm" && s.detail.starts_with("answer withheld")),
            images: Vec::new(),
        }
    }

    /// The record with what the request said beyond its message, for replaying the turn:
    /// the customer's profile and context maps (bounded by [`PROFILE_BYTES`] each; the
    /// flusher masks them) and the time it was answered as of, when given.
    pub fn with_request(mut self, request: &crate::engine::TurnRequest) -> Self {
        let mut cut = false;
        self.user = request.user.as_ref().map(|m| bounded(m, &mut cut));
        self.context = request.context.as_ref().map(|m| bounded(m, &mut cut));
        self.profile_cut = cut;
        self.as_of = request.as_of;
        self.channel = Some(request.channel_name())
            .filter(|c| *c != crate::engine::DEFAULT_CHANNEL)
            .map(str::to_string);
        // A platform's event name, which a webhook's sender chooses: kept only as long as
        // a name is, never a text of any length in every line.
        self.event = request
            .event
            .clone()
            .filter(|e| !e.is_empty() && e.len() <= MAX_EVENT_BYTES);
        self.images = request.images.clone();
        self
    }

    /// The channel the turn came through: `api` when the record names none.
    pub fn channel_name(&self) -> &str {
        self.channel.as_deref().unwrap_or(crate::engine::DEFAULT_CHANNEL)
    }
}

/// The most bytes (roughly, as JSON) of a turn record's `user` and of its `context`: a
/// profile is a few fields, an order card a few dozen; a request stuffed with more should
/// not make every line of the log that big.
pub const PROFILE_BYTES: usize = 4096;

/// The entries of `map` that fit in [`PROFILE_BYTES`] together, in order; `cut` set when
/// one did not.
pub(crate) fn bounded(
    map: &serde_json::Map<String, serde_json::Value>,
    cut: &mut bool,
) -> serde_json::Map<String, serde_json::Value> {
    let mut left = PROFILE_BYTES;
    let mut kept = serde_json::Map::new();
    for (key, value) in map {
        let size = key.len() + 4 + json_size(value);
        if size > left {
            *cut = true;
            continue;
        }
        left -= size;
        kept.insert(key.clone(), value.clone());
    }
    kept
}

/// About how many bytes `value` takes as JSON (escapes aside). Recursion is bounded by
/// serde_json's own nesting limit on the request that carried it.
pub fn json_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| json_size(v) + 1).sum::<usize>(),
        Value::Object(map) => map_size(map),
    }
}

/// About how many bytes `map` takes as JSON.
fn map_size(map: &serde_json::Map<String, serde_json::Value>) -> usize {
    2 + map.iter().map(|(k, v)| k.len() + 4 + json_size(v)).sum::<usize>()
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A human agent's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// When it was sent.
    pub ts: DateTime<FixedOffset>,
    /// The conversation.
    pub session: String,
    /// The agent, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// What the agent wrote, masked.
    pub text: String,
}

/// An agent took a conversation over (from the bot, or from its queue).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TakeoverRecord {
    /// When.
    pub ts: DateTime<FixedOffset>,
    /// The conversation.
    pub session: String,
    /// The agent, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Why it left the bot (absent in logs of older kefus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_kind: Option<HandoffKind>,
    /// The queue it waited in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The handoff's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long it waited for a person, when it waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<i64>,
}

/// The figures of a person's hold on a conversation, from its takeover, as its end
/// records them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    /// The agent who held it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// From leaving the bot to a person's pick-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<i64>,
    /// From leaving the bot to the agent's first reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response_ms: Option<i64>,
    /// From the pick-up to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_ms: Option<i64>,
}

impl Hold {
    /// The figures of `ended`, ended at `now` (Unix ms), by `agent` (else its holder).
    pub fn of(ended: &crate::dialogue::Takeover, agent: Option<&str>, now: i64) -> Hold {
        Hold {
            agent: agent.map(str::to_string).or_else(|| ended.agent.clone()),
            group: ended.group.clone(),
            waited_ms: ended.assigned_at.map(|at| (at - ended.since).max(0)),
            first_response_ms: ended.first_reply_at.map(|at| (at - ended.since).max(0)),
            handled_ms: ended.assigned_at.map(|at| (now - at).max(0)),
        }
    }
}

/// An agent gave a conversation back to the bot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// When.
    pub ts: DateTime<FixedOffset>,
    /// The conversation.
    pub session: String,
    /// The hold that ended and who released it (absent in logs of older kefus).
    #[serde(flatten)]
    pub hold: Hold,
    /// The flow the takeover paused went on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}

/// A person resolved a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolveRecord {
    /// When.
    pub ts: DateTime<FixedOffset>,
    /// The conversation.
    pub session: String,
    /// The outcome the agent chose.
    pub outcome: String,
    /// Who resolved it, and the hold that ended when a person held it.
    #[serde(flatten)]
    pub hold: Hold,
}

/// A conversation went back to its queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequeueRecord {
    /// When.
    pub ts: DateTime<FixedOffset>,
    /// The conversation.
    pub session: String,
    /// The agent who held it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// An agent's internal note.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoteRecord {
    /// When.
    pub ts: DateTime<FixedOffset>,
    /// The conversation.
    pub session: String,
    /// Who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The note, masked.
    pub text: String,
}

/// An event the shop reported (`POST /v1/events`) and what it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// When it happened (the event's own time).
    pub ts: DateTime<FixedOffset>,
    /// The conversation.
    pub session: String,
    /// The event's type (`order_paid`, `checkout_abandoned`...), at most
    /// [`MAX_EVENT_BYTES`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The channel the customer is reached on; absent for `api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The event's fields, bounded and masked as a turn's profile is
    /// ([`PROFILE_BYTES`]).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Some fields of `data` were left out: they did not fit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub data_cut: bool,
    /// `recorded`, `sent` or `refused`.
    pub outcome: EventOutcome,
    /// The `proactive` item that sent or was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The guard rail that refused (`limit`, `quiet_hours`, `held`, `flow_running`,
    /// `opted_out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<crate::engine::Refusal>,
}

/// What an event did, as the log names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// Only recorded.
    Recorded,
    /// A proactive message was sent (a `proactive` record follows).
    Sent,
    /// A guard rail refused the trigger's message.
    Refused,
}

impl EventRecord {
    /// The record of `request` and what it did, at `ts`.
    pub fn of(
        request: &crate::engine::EventRequest,
        outcome: &crate::engine::ProactiveOutcome,
        ts: DateTime<FixedOffset>,
    ) -> Self {
        use crate::engine::ProactiveOutcome as O;
        let mut cut = false;
        let data = bounded(&request.data, &mut cut);
        let (outcome, trigger, reason) = match outcome {
            O::Recorded => (EventOutcome::Recorded, None, None),
            O::Sent { trigger, .. } => (EventOutcome::Sent, Some(trigger.clone()), None),
            O::Refused { trigger, reason } => (EventOutcome::Refused, Some(trigger.clone()), Some(*reason)),
        };
        EventRecord {
            ts,
            session: request.session_id.clone(),
            kind: request.kind.chars().take(MAX_EVENT_BYTES).collect(),
            channel: request.channel.clone().filter(|c| c != crate::engine::DEFAULT_CHANNEL),
            data,
            data_cut: cut,
            outcome,
            trigger,
            reason,
        }
    }
}

/// A proactive message kefu sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProactiveRecord {
    /// When it was sent (the event's time).
    pub ts: DateTime<FixedOffset>,
    /// The conversation.
    pub session: String,
    /// The `proactive` item that sent it.
    pub trigger: String,
    /// The message, masked.
    pub text: String,
    /// The channel it went out on; absent for `api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The type of the event that led to it.
    #[serde(rename = "event")]
    pub event_type: String,
}

/// The customer's satisfaction score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    /// When it was given.
    pub ts: DateTime<FixedOffset>,
    /// The conversation.
    pub session: String,
    /// 1 (very unhappy) to 5 (very happy).
    pub score: u8,
    /// What the customer added, masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The agent who served the conversation last, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// What the safety filter did in a turn, from its trace: the input findings one by one
/// (`pii phone`, `mask 脏话`, `block 竞品`) and the steps after understanding as written
/// (`reply masked: pii phone`, `reply blocked: 竞品`, `model answer blocked: 政治`). The
/// input's `blocked: X` step is left out: its `block X` finding and `source: safety`
/// already say it.
pub fn safety_hits(trace: &[crate::engine::TraceStep]) -> Vec<String> {
    let mut hits = Vec::new();
    for step in trace.iter().filter(|s| s.stage == "safety") {
        if step.detail.starts_with("blocked: ") {
            continue;
        }
        if step.detail.contains(':') {
            hits.push(step.detail.clone());
        } else {
            hits.extend(step.detail.split(", ").map(str::to_string));
        }
    }
    hits
}
