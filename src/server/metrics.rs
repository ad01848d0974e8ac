//! Prometheus metrics for `GET /metrics`, with prometheus-client.
//!
//! Requests by route and status, request latency by route, answers by source, handoffs to
//! people, safety hits, rule reloads by outcome, scripts failed at run time by the item
//! they are in, model tokens, satisfaction scores,
//! background jobs, ticket deliveries, the job queue's depth and pending tickets,
//! answer-cache lookups with their hit ratio, the understanding memo's hits, misses and
//! entries, and the conversation log's written, dropped and failed lines (only when the
//! log is on), and with Redis its errors and latency by operation (`redis_errors`,
//! `redis_seconds`, every series from the start). Routes are labelled by their pattern (`/v1/sessions/{id}`), never by the
//! raw path, so that session ids cannot blow up the number of series.
//!
//! Per rules version and role (`kefu_version_*{version, role}`): turns, answers by
//! source, handoffs, fallbacks, script errors, failed turns and satisfaction scores, from
//! the counters the canary guard reads ([`super::canary`]). Only versions serving now
//! (live, canary, offered for pinning) have series: a version's leave `/metrics` when it
//! stops serving, so the number of series stays bounded however often rules change.
//!
//! Hits (`kefu_hits_total{kind, name}`): turns each rule, promotion, flow step
//! (`flow/step`) and FAQ entry answered, at most [`MAX_HIT_NAMES`] names per kind (then
//! `other`); the serving rule set's names have series from the start
//! ([`Metrics::watch_hits`]) and a turn's counters are found by one hash lookup per kind
//! it hit, no label built ([`HitSeries`]).
//!
//! Also: the model backend's calls by outcome, its latency and time to first token, and
//! its retries; the build and the serving rules' version as `_info` series; log lines
//! dropped on the way to stderr; and the process's memory, descriptors, CPU time and start
//! ([`super::process`], under the standard unprefixed `process_*` names).
//!
//! **Every series a dashboard or an alert needs exists from start**, at zero: each label
//! value known in advance (every route pattern, answer source, job event, model outcome,
//! score) is created in [`Metrics::new`], so `rate()` and `absent()` see them before the
//! first event. Only labels that come from the rules (`script_errors{rule}`) and response
//! statuses other than 200 appear on first use. docs/operations.md lists every series.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::canary::{Figures, Serving, VersionBook, VersionEntry};
use crate::data::ConversationLog;
use crate::dialogue::ServedBy;
use crate::engine::AnswerSource;
use crate::llm::{LlmBackend, LlmError};
use crate::nlu::MemoStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The rule-file item a script is in, as the trace names it (`rule 七天无理由`, `flow
/// 退货申请`, `fallback`): names from checked rule files, so the series are bounded by the
/// rule set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScoreLabels {
    score: u8,
}

/// A handoff's kind and queue (`none` without queues): kinds are fixed, groups come from
/// checked rule files.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandoffLabels {
    kind: &'static str,
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

/// An agent (a name in the users file, else `other`, so that the series stay bounded)
/// and a score.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentScoreLabels {
    agent: String,
    score: u8,
}

fn agent_histogram() -> Histogram {
    // 1 s to about 4.5 h: an agent's first answer, a handling, a customer's wait.
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

fn push_histogram() -> Histogram {
    // 50 µs to about 1.5 s: an update framed and written to a stream.
    Histogram::new(exponential_buckets(0.000_05, 2.5, 12))
}

/// The group label of a queue.
fn group_label(group: Option<&str>) -> String {
    group.unwrap_or("none").to_string()
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 30 s: rule answers sit at the bottom, model answers at the top.
    Histogram::new(exponential_buckets(0.000_05, 2.5, 15))
}

fn redis_histogram() -> Histogram {
    // 50 µs to about 0.5 s: a healthy Redis answers at the bottom, a try that timed out
    // (100 ms by default) near the top.
    Histogram::new(exponential_buckets(0.000_05, 2.5, 11))
}

fn model_histogram() -> Histogram {
    // 10 ms to about 40 s: a model call is never faster than a few tokens, and the
    // deadline (`--llm-timeout`, 20 s by default) caps it.
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

/// How a model call ended, the `outcome` label of `kefu_model_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelOutcome {
    /// An answer (whole, or cut by the token limit).
    Ok,
    /// An answer stopped early by kefu (the judge or the output guard gave up on it).
    Cancelled,
    /// The backend was full (every slot taken, or the server answered 429/503 until the
    /// retries or the deadline ran out).
    Busy,
    /// The deadline passed.
    Timeout,
    /// Anything else: refused requests, broken streams, bad answers.
    Error,
}

impl ModelOutcome {
    /// Every outcome, in label order.
    pub const ALL: [ModelOutcome; 5] = [
        ModelOutcome::Ok,
        ModelOutcome::Cancelled,
        ModelOutcome::Busy,
        ModelOutcome::Timeout,
        ModelOutcome::Error,
    ];

    /// The outcome of a model call's result.
    pub fn of(result: &Result<crate::llm::Generation, LlmError>) -> ModelOutcome {
        match result {
            Ok(g) if g.finish == crate::llm::Finish::Cancelled => ModelOutcome::Cancelled,
            Ok(_) => ModelOutcome::Ok,
            Err(LlmError::Busy) => ModelOutcome::Busy,
            Err(LlmError::Timeout) => ModelOutcome::Timeout,
            Err(LlmError::Failed(_)) => ModelOutcome::Error,
        }
    }

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            ModelOutcome::Ok => "ok",
            ModelOutcome::Cancelled => "cancelled",
            ModelOutcome::Busy => "busy",
            ModelOutcome::Timeout => "timeout",
            ModelOutcome::Error => "error",
        }
    }
}

/// Every metric kefu serves.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    answers: Family<SourceLabels, Counter>,
    channel_turns: Family<ChannelLabels, Counter>,
    /// The series of the built-in channels (`channels::RESERVED`, in its order), taken
    /// out of their family at start: nearly every turn comes through one of them, and
    /// counting it is then one atomic add, no label built or looked up.
    built_in_turns: [Counter; 4],
    takeovers: Counter,
    safety_hits: Counter,
    reloads: Family<OutcomeLabels, Counter>,
    script_errors: Family<RuleLabels, Counter>,
    llm_tokens: Family<KindLabels, Counter>,
    feedback: Family<ScoreLabels, Counter>,
    jobs: Family<OutcomeLabels, Counter>,
    ticket_deliveries: Family<OutcomeLabels, Counter>,
    rate_limited: Counter,
    slow_rules: Counter,
    connections: Gauge,
    connections_refused: Family<KindLabels, Counter>,
    in_flight: Gauge,
    cache_lookups: Family<OutcomeLabels, Counter>,
    cache_hit_ratio: Gauge<f64, AtomicU64>,
    redis_errors: Family<OpLabels, Counter>,
    redis_seconds: Family<OpLabels, Histogram, fn() -> Histogram>,
    conversation_log: Arc<OnceLock<Readings>>,
    nlu_memo: Arc<OnceLock<Readings>>,
    tickets: Arc<OnceLock<Readings>>,
    /// One counter per [`ModelOutcome`], in [`ModelOutcome::ALL`]'s order: taken out of
    /// their family at start, so a model call counts with one atomic add and no lookup.
    model_requests: [Counter; 5],
    model_seconds: Histogram,
    model_first_token: Histogram,
    /// The backend whose retries are served (set once, when the service has a model).
    model: Arc<OnceLock<std::sync::Weak<dyn LlmBackend>>>,
    /// Reads the serving rules' version (set once, by the service).
    rules_version: Arc<OnceLock<Box<dyn Fn() -> String + Send + Sync>>>,
    /// Per-version counters (`kefu_version_*`), also read by the canary guard.
    versions: Arc<VersionBook>,
    /// The agent workspace's figures (issue #23).
    agents: AgentFigures,
    /// The channels' messages and deliveries (issue #24).
    channels: ChannelFigures,
    /// Turns per rule, promotion, flow step and FAQ entry (issue #25).
    hits: HitSeries,
    /// Events refused by `POST /v1/events`, by reason (issue #26).
    events_refused: Family<ReasonLabels, Counter>,
    /// Shop events and proactive messages (issue #26).
    proactive: ProactiveFigures,
    /// Customers' images and their descriptions (issue #26).
    photos: PhotoFigures,
}

/// A proactive item and what became of its trigger.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProactiveLabels {
    trigger: String,
    outcome: &'static str,
}

/// A shop event's type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventTypeLabels {
    r#type: &'static str,
}

/// The most proactive item names `kefu_proactive_total` has series for; further names
/// count as `other` (the items of every rule version a node serves in its life add up).
pub const MAX_PROACTIVE_TRIGGERS: usize = 256;

/// The outcomes of a trigger: sent, or the guard rail that refused it.
const PROACTIVE_OUTCOMES: [&str; 6] = ["sent", "limit", "quiet_hours", "held", "flow_running", "opted_out"];

/// `kefu_proactive_total{trigger, outcome}` and `kefu_events_total{type}`.
struct ProactiveFigures {
    sends: Family<ProactiveLabels, Counter>,
    /// The trigger names with series of their own (bounded by [`MAX_PROACTIVE_TRIGGERS`]).
    names: std::sync::Mutex<std::collections::HashSet<String>>,
    events: Family<EventTypeLabels, Counter>,
}

impl ProactiveFigures {
    fn register(registry: &mut Registry) -> Self {
        let sends = Family::<ProactiveLabels, Counter>::default();
        registry.register(
            "proactive",
            "Proactive messages by trigger (the proactive item; past 256 names, other) and outcome: sent, or refused by a guard rail (limit, quiet_hours, held, flow_running, opted_out)",
            sends.clone(),
        );
        let events = Family::<EventTypeLabels, Counter>::default();
        registry.register(
            "events",
            "Shop events received (POST /v1/events), by type (the known shop event types; any other as other)",
            events.clone(),
        );
        for kind in crate::script::shape::EVENT_TYPES {
            let _ = events.get_or_create(&EventTypeLabels { r#type: kind });
        }
        let _ = events.get_or_create(&EventTypeLabels { r#type: "other" });
        ProactiveFigures {
            sends,
            names: Default::default(),
            events,
        }
    }

    /// The label of trigger `name`: its own while there is room, else `other`.
    fn label(&self, name: &str) -> String {
        let mut names = self.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if names.contains(name) {
            return name.to_string();
        }
        if names.len() < MAX_PROACTIVE_TRIGGERS {
            names.insert(name.to_string());
            return name.to_string();
        }
        crate::data::hits::OTHER.to_string()
    }
}

/// `kefu_images_total{outcome}` (stored, or the refusal's `error.type`) and
/// `kefu_vision_total{outcome}` (described, or why not), every outcome from the start.
struct PhotoFigures {
    images: Family<OutcomeLabels, Counter>,
    vision: Family<OutcomeLabels, Counter>,
}

impl PhotoFigures {
    /// The outcomes of an image's intake.
    const IMAGE_OUTCOMES: [&'static str; 8] = [
        "stored",
        "unsupported_image",
        "bad_image",
        "image_too_large",
        "image_too_large_pixels",
        "too_many_images_today",
        "unknown_image",
        "internal",
    ];

    fn register(registry: &mut Registry) -> Self {
        let images = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "images",
            "Images customers sent: stored, or refused by reason (the error's type)",
            images.clone(),
        );
        let vision = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "vision",
            "Requests to the vision model (--vision-url): described, or timeout, unreachable, error, empty",
            vision.clone(),
        );
        for outcome in Self::IMAGE_OUTCOMES {
            let _ = images.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in crate::llm::vision::OUTCOMES {
            let _ = vision.get_or_create(&OutcomeLabels { outcome });
        }
        PhotoFigures { images, vision }
    }
}

/// Why `POST /v1/events` refused an event (the error's type).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// A hit's kind (`rule`, `promotion`, `flow_step`, `faq`) and the item's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HitLabels {
    kind: &'static str,
    name: String,
}

/// The most names of one kind `kefu_hits_total` has series for; hits of further names
/// count under `name="other"`, so that the series stay bounded however many rule
/// versions a node serves in its life.
pub const MAX_HIT_NAMES: usize = 2048;

/// The hit kinds in [`HitSeries`]' order.
const HIT_KINDS: [crate::data::hits::HitKind; 4] = crate::data::hits::HitKind::ALL;

/// An item's name in parts as a turn gives it: a rule's, promotion's or FAQ entry's
/// name, or a flow and its step (`flow/step` when the step is known).
type NameParts<'a> = (&'a str, Option<&'a str>);

/// The hasher of [`HitTable`]'s keys: fixed, so that a name's key is the same in every
/// table made.
const HIT_SEED: u64 = 0x6b65_6675_6869_7473;

/// The key of a name given in parts; `name_key` of `flow/step` is `parts_key((flow,
/// Some(step)))` (the full name is split at its first `/` for flow steps).
fn parts_key((first, second): NameParts<'_>) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = foldhash::fast::FixedState::with_seed(HIT_SEED).build_hasher();
    hasher.write(first.as_bytes());
    if let Some(second) = second {
        hasher.write_u8(0xff);
        hasher.write(second.as_bytes());
    }
    hasher.finish()
}

/// Whether the full `name` is `parts`.
fn is_named(name: &str, (first, second): NameParts<'_>) -> bool {
    match second {
        None => name == first,
        Some(second) => name
            .strip_prefix(first)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| rest == second),
    }
}

/// The parts of a full name of `kind` (a flow step's split at its first `/`).
fn parts_of(kind: crate::data::hits::HitKind, name: &str) -> NameParts<'_> {
    match (kind, name.split_once('/')) {
        (crate::data::hits::HitKind::FlowStep, Some((flow, step))) => (flow, Some(step)),
        _ => (name, None),
    }
}

/// One kind's counters by their name's key ([`parts_key`]), each with its full name.
type CountersByKey = std::collections::HashMap<u64, Vec<(Box<str>, Counter)>, foldhash::fast::RandomState>;

/// The hit counters by name: per kind, the counters by their name's key, each with its
/// full name for the rare keys that collide.
#[derive(Clone, Default)]
struct HitTable {
    kinds: [CountersByKey; 4],
    /// Names per kind with a series of their own.
    names: [usize; 4],
    /// Names per kind in the table (theirs and those that count as `other`).
    entries: [usize; 4],
}

impl HitTable {
    fn get(&self, kind: usize, parts: NameParts<'_>) -> Option<&Counter> {
        self.kinds[kind]
            .get(&parts_key(parts))?
            .iter()
            .find(|(name, _)| is_named(name, parts))
            .map(|(_, counter)| counter)
    }
}

/// `kefu_hits_total`: the family, and a table read on every turn without a lock
/// (arc-swap) and replaced whole, under a lock, when a name is added (a new rule set's
/// names at once, a name seen first on a turn).
struct HitSeries {
    family: Family<HitLabels, Counter>,
    table: arc_swap::ArcSwap<HitTable>,
    adding: std::sync::Mutex<()>,
    /// `name="other"` of each kind, made at start.
    other: [Counter; 4],
}

impl HitSeries {
    fn register(registry: &mut Registry) -> Self {
        let family = Family::<HitLabels, Counter>::default();
        registry.register(
            "hits",
            "Turns answered by each rule, promotion, flow step (flow/step) and FAQ entry, by kind (rule, promotion, flow_step, faq) and name; past 2048 names of a kind, other",
            family.clone(),
        );
        let other = HIT_KINDS.map(|kind| {
            family
                .get_or_create(&HitLabels {
                    kind: kind.name(),
                    name: crate::data::hits::OTHER.to_string(),
                })
                .clone()
        });
        HitSeries {
            family,
            table: Default::default(),
            adding: Default::default(),
            other,
        }
    }

    /// Counts one hit of `kind` (an index into [`HIT_KINDS`]).
    fn hit(&self, kind: usize, parts: NameParts<'_>) {
        match self.table.load().get(kind, parts) {
            Some(counter) => counter.inc(),
            None => self.add(&[(kind, parts)])[0].inc(),
        };
    }

    /// Adds names to the table (those not in it yet) and gives their counters.
    fn add(&self, names: &[(usize, NameParts<'_>)]) -> Vec<Counter> {
        let _adding = self.adding.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.table.load_full();
        let mut table: Option<HitTable> = None;
        let mut out = Vec::with_capacity(names.len());
        for &(kind, parts) in names {
            let now = table.as_ref().unwrap_or(&current);
            if let Some(counter) = now.get(kind, parts) {
                out.push(counter.clone());
                continue;
            }
            let now = table.get_or_insert_with(|| (*current).clone());
            let counter = if now.names[kind] < MAX_HIT_NAMES {
                now.names[kind] += 1;
                let name = match parts {
                    (first, Some(second)) => format!("{first}/{second}"),
                    (first, None) => first.to_string(),
                };
                self.family
                    .get_or_create(&HitLabels {
                        kind: HIT_KINDS[kind].name(),
                        name,
                    })
                    .clone()
            } else {
                self.other[kind].clone()
            };
            // Names past the bound are remembered too (as `other`'s), up to as many
            // again: past that a hit of a new name takes this lock every time, but the
            // table stays bounded.
            if now.entries[kind] < 2 * MAX_HIT_NAMES {
                now.entries[kind] += 1;
                let name: Box<str> = match parts {
                    (first, Some(second)) => format!("{first}/{second}").into(),
                    (first, None) => first.into(),
                };
                now.kinds[kind]
                    .entry(parts_key(parts))
                    .or_default()
                    .push((name, counter.clone()));
            }
            out.push(counter);
        }
        if let Some(table) = table {
            self.table.store(Arc::new(table));
        }
        out
    }
}

/// A channel (one of the built-in four, or one of the first [`MAX_CHANNEL_LABELS`] other
/// names seen, else `other`) and an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelOutcomeLabels {
    channel: String,
    outcome: &'static str,
}

/// Channel names that get series of their own besides the four built-in ones; more
/// count as `other`, so that the series stay bounded whatever a channels file holds.
pub const MAX_CHANNEL_LABELS: usize = 32;

/// The channels' series: messages in by outcome, deliveries out by outcome.
struct ChannelFigures {
    messages: Family<ChannelOutcomeLabels, Counter>,
    deliveries: Family<ChannelOutcomeLabels, Counter>,
    /// The names that have their own label (beyond the built-in ones).
    names: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The outcomes of `kefu_channel_messages_total`.
const MESSAGE_OUTCOMES: [&str; 4] = ["accepted", "duplicate", "refused", "photo_failed"];

impl ChannelFigures {
    fn register(registry: &mut Registry) -> Self {
        let messages = Family::<ChannelOutcomeLabels, Counter>::default();
        registry.register(
            "channel_messages",
            "Messages from channel platforms (webhook, WeChat) by channel and outcome: accepted (answered), duplicate (a retry of a message already taken), refused (bad signature, stale, bad body, over the rate), photo_failed (a photo that could not be fetched or taken in: answered as the image event)",
            messages.clone(),
        );
        let deliveries = Family::<ChannelOutcomeLabels, Counter>::default();
        registry.register(
            "channel_deliveries",
            "Messages posted to channel platforms (replies, agents' messages) by channel and outcome: delivered, retried (an attempt after a failure), failed (given up)",
            deliveries.clone(),
        );
        ChannelFigures {
            messages,
            deliveries,
            names: Default::default(),
        }
    }

    /// The label of channel `name`.
    fn label(&self, name: &str) -> String {
        if crate::channels::RESERVED.contains(&name) {
            return name.to_string();
        }
        let mut names = self.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if names.contains(name) {
            return name.to_string();
        }
        if names.len() < MAX_CHANNEL_LABELS {
            names.insert(name.to_string());
            return name.to_string();
        }
        "other".to_string()
    }
}

/// The agent workspace's series: handoffs, waits, first responses, handling times and
/// agents' scores, pushes to the inbox, and the conversations by state (read from the
/// inbox at scrape).
struct AgentFigures {
    handoffs: Family<HandoffLabels, Counter>,
    wait: Family<GroupLabels, Histogram, fn() -> Histogram>,
    first_response: Family<GroupLabels, Histogram, fn() -> Histogram>,
    handling: Family<GroupLabels, Histogram, fn() -> Histogram>,
    feedback: Family<AgentScoreLabels, Counter>,
    push: Histogram,
    conversations: Arc<OnceLock<Readings>>,
    /// Whether a name is in the console's users file (set once, by the service).
    known_agent: OnceLock<KnownAgent>,
}

/// Whether a name is one of the console's users.
type KnownAgent = Box<dyn Fn(&str) -> bool + Send + Sync>;

impl AgentFigures {
    fn register(registry: &mut Registry) -> Self {
        let handoffs = Family::<HandoffLabels, Counter>::default();
        registry.register(
            "handoffs",
            "Conversations that left the bot for a person's queue or an agent, by the handoff's kind (rule, low_confidence, anger, repeated_failure, asked, agent) and queue (none without queues)",
            handoffs.clone(),
        );
        let histograms = || Family::<GroupLabels, Histogram, fn() -> Histogram>::new_with_constructor(agent_histogram);
        let (wait, first_response, handling) = (histograms(), histograms(), histograms());
        registry.register(
            "handoff_wait_seconds",
            "How long a handed-off conversation waited before a person picked it up, by queue",
            wait.clone(),
        );
        registry.register(
            "agent_first_response_seconds",
            "From a conversation leaving the bot to an agent's first reply, by queue",
            first_response.clone(),
        );
        registry.register(
            "agent_handling_seconds",
            "From an agent picking a conversation up to its release or resolution, by queue",
            handling.clone(),
        );
        let feedback = Family::<AgentScoreLabels, Counter>::default();
        registry.register(
            "agent_feedback",
            "Satisfaction scores of conversations an agent served last, by agent (names in the users file, else other) and score",
            feedback.clone(),
        );
        let push = push_histogram();
        registry.register(
            "inbox_push_seconds",
            "From a change to a conversation to its update written to an inbox stream",
            push.clone(),
        );
        let conversations = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(ReadAtScrape(Arc::clone(&conversations))));
        for kind in crate::dialogue::HandoffKind::ALL {
            let _ = handoffs.get_or_create(&HandoffLabels {
                kind: kind.name(),
                group: group_label(None),
            });
        }
        for family in [&wait, &first_response, &handling] {
            let _ = family.get_or_create(&GroupLabels {
                group: group_label(None),
            });
        }
        for score in 1..=5 {
            let _ = feedback.get_or_create(&AgentScoreLabels {
                agent: "other".into(),
                score,
            });
        }
        AgentFigures {
            handoffs,
            wait,
            first_response,
            handling,
            feedback,
            push,
            conversations,
            known_agent: OnceLock::new(),
        }
    }
}

/// Reads one count of a version's [`Figures`].
type FigureOf = fn(&Figures) -> u64;

/// Serves the per-version counters ([`VersionBook`]) at each scrape, after dropping those
/// of versions that serve no more.
#[derive(Debug)]
struct VersionSeries(Arc<VersionBook>);

impl Collector for VersionSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let entries = self.0.prune();
        let figures: Vec<_> = entries.iter().map(|e| (e, e.counters.figures())).collect();
        let labels = |e: &VersionEntry| [("version", e.version.clone()), ("role", e.role.name().to_string())];
        let plain: [(&str, &str, FigureOf); 7] = [
            (
                "version_turns",
                "Turns answered, by rules version and role (live, canary, pinned)",
                |f| f.turns,
            ),
            (
                "version_handoffs",
                "Turns handed to a person, by rules version and role",
                |f| f.handoffs,
            ),
            (
                "version_fallbacks",
                "Turns nothing answered (source fallback), by rules version and role",
                |f| f.fallbacks,
            ),
            (
                "version_script_errors",
                "Turns during which a script failed, by rules version and role",
                |f| f.script_errors,
            ),
            (
                "version_failed_turns",
                "Turns that failed (store unreachable, panic), by rules version and role",
                |f| f.failed,
            ),
            (
                "version_feedback",
                "Satisfaction scores given to conversations the version answered last, by rules version and role",
                |f| f.feedback,
            ),
            (
                "version_feedback_score",
                "The sum of those scores (divide by kefu_version_feedback_total for the mean)",
                |f| f.feedback_sum,
            ),
        ];
        for (name, help, value) in plain {
            let mut family =
                encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
            for (entry, f) in &figures {
                ConstCounter::new(value(f)).encode(family.encode_family(&labels(entry))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "version_answers",
            "Turns by what answered them, by rules version and role",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (entry, f) in &figures {
            for source in AnswerSource::ALL {
                let [version, role] = labels(entry);
                let labels = [version, role, ("source", source.name().to_string())];
                ConstCounter::new(f.answered_by(source)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// A value that lives elsewhere, read at each scrape: name, help and value.
enum Reading {
    Counter(&'static str, &'static str, u64),
    Gauge(&'static str, &'static str, i64),
    /// A counter of seconds (CPU time).
    Seconds(&'static str, &'static str, f64),
    /// A gauge with a fractional value (a time since the epoch).
    GaugeF64(&'static str, &'static str, f64),
    /// A gauge at 1 whose labels carry the information (`kefu_build_info{version=..}`).
    Info(&'static str, &'static str, Vec<(&'static str, String)>),
    /// Gauges with one label: name, help, the label's name, and each value.
    Gauges(&'static str, &'static str, &'static str, Vec<(&'static str, i64)>),
}

/// Where a [`ReadAtScrape`] collector reads its values.
type Readings = Box<dyn Fn() -> Vec<Reading> + Send + Sync>;

/// Serves values kept by another part of kefu (the conversation log's counts, the
/// understanding memo's), read when `/metrics` is scraped rather than copied into
/// counters on every event: a second set of atomics to keep in step. Nothing is served
/// until the source is set (once).
#[derive(Clone)]
struct ReadAtScrape(Arc<OnceLock<Readings>>);

impl std::fmt::Debug for ReadAtScrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadAtScrape")
    }
}

impl Collector for ReadAtScrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(read) = self.0.get() else {
            return Ok(());
        };
        for reading in read() {
            match reading {
                Reading::Counter(name, help, value) => {
                    let counter = ConstCounter::new(value);
                    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
                }
                Reading::Gauge(name, help, value) => {
                    let gauge = ConstGauge::new(value);
                    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
                }
                Reading::Seconds(name, help, value) => {
                    let counter = ConstCounter::new(value);
                    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
                }
                Reading::GaugeF64(name, help, value) => {
                    let gauge = ConstGauge::new(value);
                    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
                }
                Reading::Gauges(name, help, label, values) => {
                    let mut family =
                        encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
                    for (value_of_label, value) in values {
                        ConstGauge::new(value).encode(family.encode_family(&[(label, value_of_label)])?)?;
                    }
                }
                Reading::Info(name, help, labels) => {
                    let gauge = ConstGauge::new(1_i64);
                    let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                    gauge.encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// The process's figures ([`super::process`]) as readings; `started` is read once.
fn process_readings(started: f64) -> Vec<Reading> {
    let mut readings = vec![Reading::GaugeF64(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds",
        started,
    )];
    let Some(now) = super::process::read() else {
        return readings;
    };
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    readings.extend([
        Reading::Seconds(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            now.cpu_seconds,
        ),
        Reading::Gauge(
            "process_resident_memory_bytes",
            "Resident memory size, in bytes",
            gauge(now.resident_bytes),
        ),
        Reading::Gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size, in bytes",
            gauge(now.virtual_bytes),
        ),
        Reading::Gauge(
            "process_open_fds",
            "Open file descriptors (client connections included)",
            gauge(now.open_fds),
        ),
        Reading::Gauge("process_threads", "Threads of the process", gauge(now.threads)),
    ]);
    if let Some(max) = now.max_fds {
        readings.push(Reading::Gauge(
            "process_max_fds",
            "The limit on open file descriptors (the soft limit, raised at start)",
            gauge(max),
        ));
    }
    readings
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Counts an image's intake: `stored`, or the refusal's `error.type` (one of
    /// [`PhotoFigures::IMAGE_OUTCOMES`]; others count as `internal`).
    pub fn image(&self, outcome: &'static str) {
        let outcome = if PhotoFigures::IMAGE_OUTCOMES.contains(&outcome) {
            outcome
        } else {
            "internal"
        };
        self.photos.images.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts a vision model request by outcome ([`crate::llm::vision::OUTCOMES`]).
    pub fn vision(&self, outcome: &'static str) {
        self.photos.vision.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A registry with every metric at zero.
    pub fn new() -> Self {
        // The process's figures keep the names every client library gives them; the rest
        // is kefu's own.
        let mut root = Registry::default();
        let started = super::process::start_time().unwrap_or_else(super::process::now_seconds);
        root.register_collector(Box::new(ReadAtScrape(Arc::new(OnceLock::from(Box::new(move || {
            process_readings(started)
        }) as Readings)))));
        let registry = root.sub_registry_with_prefix("kefu");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response headers, by route",
            latency.clone(),
        );
        let answers = Family::<SourceLabels, Counter>::default();
        registry.register("answers", "Turns answered, by what answered them", answers.clone());
        let channel_turns = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "channel_turns",
            "Turns by the channel they came through (api, web, wechat_mp, wechat_kf, webhook channels' names; other past 32 names)",
            channel_turns.clone(),
        );
        let built_in_turns = crate::channels::RESERVED.map(|channel| {
            channel_turns
                .get_or_create(&ChannelLabels {
                    channel: channel.to_string(),
                })
                .clone()
        });
        let takeovers = Counter::default();
        registry.register("takeovers", "Conversations an agent took over", takeovers.clone());
        let safety_hits = Counter::default();
        registry.register(
            "safety_hits",
            "Turns answered by the safety filter",
            safety_hits.clone(),
        );
        let reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register("rule_reloads", "Rule reloads, applied or rejected", reloads.clone());
        let script_errors = Family::<RuleLabels, Counter>::default();
        registry.register(
            "script_errors",
            "Scripts (conditions, template holes, set and call) that failed at run time, by the rule, promotion, flow, style or fallback they are in",
            script_errors.clone(),
        );
        let llm_tokens = Family::<KindLabels, Counter>::default();
        registry.register("llm_tokens", "Model tokens, prompt and completion", llm_tokens.clone());
        let feedback = Family::<ScoreLabels, Counter>::default();
        registry.register("feedback", "Satisfaction scores given by customers", feedback.clone());
        let jobs = Family::<OutcomeLabels, Counter>::default();
        registry.register("jobs", "Background jobs by event", jobs.clone());
        let ticket_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "ticket_deliveries",
            "Ticket deliveries to the back office: delivered, rejected, deferred (attempts ran out; redelivered later), redelivered",
            ticket_deliveries.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Requests refused by the per-session rate limit",
            rate_limited.clone(),
        );
        let slow_rules = Counter::default();
        registry.register(
            "slow_rules",
            "Rule sets whose turns moved to the blocking pool after their scripts held a runtime worker too long",
            slow_rules.clone(),
        );
        let connections = Gauge::default();
        registry.register("connections", "Client connections open now", connections.clone());
        let connections_refused = Family::<KindLabels, Counter>::default();
        registry.register(
            "connections_shed",
            "Connections closed or refused by the connection limits: `idle` (the oldest idle one, to make room), `client` (one client over its share), `full` (every connection busy), `slow_headers` (a request's headers not in within the header timeout, 10 s, of its first byte)",
            connections_refused.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("turns_in_flight", "Turns being answered now", in_flight.clone());
        let cache_lookups = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "answer_cache_lookups",
            "Answer-cache lookups (FAQ and model answers), by hit or miss",
            cache_lookups.clone(),
        );
        let cache_hit_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "answer_cache_hit_ratio",
            "Answer-cache hits over lookups since start",
            cache_hit_ratio.clone(),
        );
        let redis_errors = Family::<OpLabels, Counter>::default();
        registry.register(
            "redis_errors",
            "Tries of a Redis session-store operation that failed (a timeout, a refused or dropped connection), by operation: get, update, store, remove; retried ones too",
            redis_errors.clone(),
        );
        let redis_seconds = Family::<OpLabels, Histogram, fn() -> Histogram>::new_with_constructor(redis_histogram);
        registry.register(
            "redis_seconds",
            "Time of each try of a Redis session-store operation, failed ones too, by operation",
            redis_seconds.clone(),
        );
        let versions = Arc::new(VersionBook::default());
        registry.register_collector(Box::new(VersionSeries(Arc::clone(&versions))));
        let conversation_log = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(ReadAtScrape(Arc::clone(&conversation_log))));
        let nlu_memo = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(ReadAtScrape(Arc::clone(&nlu_memo))));
        let tickets = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(ReadAtScrape(Arc::clone(&tickets))));

        // The model backend, whichever it is (llama.cpp, an HTTP server, the mock).
        let model_family = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "model_requests",
            "Model calls by outcome: ok, cancelled (stopped early by kefu), busy (full; the engine fell back), timeout (the deadline passed), error",
            model_family.clone(),
        );
        let model_requests =
            ModelOutcome::ALL.map(|o| model_family.get_or_create(&OutcomeLabels { outcome: o.name() }).clone());
        let model_seconds = model_histogram();
        registry.register(
            "model_seconds",
            "Time of a model call, start to last token (or to the failure), retries and waits included",
            model_seconds.clone(),
        );
        let model_first_token = model_histogram();
        registry.register(
            "model_first_token_seconds",
            "Time from the start of a model call to its first text",
            model_first_token.clone(),
        );
        let model: Arc<OnceLock<std::sync::Weak<dyn LlmBackend>>> = Arc::new(OnceLock::new());
        let rules_version: Arc<OnceLock<Box<dyn Fn() -> String + Send + Sync>>> = Arc::new(OnceLock::new());
        let (retries_of, version_of) = (Arc::clone(&model), Arc::clone(&rules_version));
        registry.register_collector(Box::new(ReadAtScrape(Arc::new(OnceLock::from(Box::new(move || {
            let retries = retries_of
                .get()
                .and_then(std::sync::Weak::upgrade)
                .map_or(0, |m| m.retries());
            let mut readings = vec![
                Reading::Counter(
                    "model_retries",
                    "Model requests sent again after a failure (a refused connection, 429, 5xx), by the HTTP backend",
                    retries,
                ),
                Reading::Counter(
                    "log_lines_dropped",
                    "Log lines dropped because stderr was not keeping up",
                    super::logs::dropped_lines(),
                ),
                Reading::Info(
                    "build_info",
                    "The running kefu: its version and the commit it was built from",
                    vec![
                        ("version", env!("CARGO_PKG_VERSION").to_string()),
                        ("commit", env!("KEFU_COMMIT").to_string()),
                    ],
                ),
            ];
            if let Some(version) = version_of.get() {
                readings.push(Reading::Info(
                    "rules_info",
                    "The rules being served: their version (as /healthz and /admin/rules give it)",
                    vec![("version", version())],
                ));
            }
            readings
        }) as Readings)))));
        // The session store's series (`kefu_redis_*`) are registered here, by the store.
        // Series that exist from the start, at zero, so that dashboards and alerts on rates
        // see them before the first event.
        for kind in ["prompt", "completion"] {
            let _ = llm_tokens.get_or_create(&KindLabels { kind });
        }
        for outcome in ["applied", "rejected"] {
            let _ = reloads.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["hit", "miss"] {
            let _ = cache_lookups.get_or_create(&OutcomeLabels { outcome });
        }
        for kind in ["idle", "client", "full", "slow_headers"] {
            let _ = connections_refused.get_or_create(&KindLabels { kind });
        }
        for route in super::routes::ROUTE_PATTERNS {
            let _ = requests.get_or_create(&RequestLabels { route, status: 200 });
            let _ = latency.get_or_create(&RouteLabels { route });
        }
        for source in AnswerSource::ALL {
            let _ = answers.get_or_create(&SourceLabels { source: source.name() });
        }
        for score in 1..=5 {
            let _ = feedback.get_or_create(&ScoreLabels { score });
        }
        for outcome in ["queued", "refused", "retried", "succeeded", "failed"] {
            let _ = jobs.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["delivered", "rejected", "deferred", "redelivered"] {
            let _ = ticket_deliveries.get_or_create(&OutcomeLabels { outcome });
        }
        let agents = AgentFigures::register(registry);
        let channels = ChannelFigures::register(registry);
        let hits = HitSeries::register(registry);
        let events_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "events_refused",
            "Events refused by POST /v1/events, by reason: the error type (invalid_event, future_timestamp, stale_event, unauthorized, forbidden, rate_limited...), other for the rest",
            events_refused.clone(),
        );
        for reason in super::events::REFUSAL_REASONS {
            let _ = events_refused.get_or_create(&ReasonLabels { reason });
        }
        let proactive = ProactiveFigures::register(registry);
        let photos = PhotoFigures::register(registry);
        Metrics {
            registry: root,
            requests,
            latency,
            answers,
            channel_turns,
            built_in_turns,
            takeovers,
            safety_hits,
            reloads,
            script_errors,
            llm_tokens,
            feedback,
            jobs,
            ticket_deliveries,
            rate_limited,
            slow_rules,
            connections,
            connections_refused,
            in_flight,
            cache_lookups,
            cache_hit_ratio,
            redis_errors,
            redis_seconds,
            conversation_log,
            nlu_memo,
            tickets,
            model_requests,
            model_seconds,
            model_first_token,
            model,
            rules_version,
            versions,
            agents,
            channels,
            hits,
            events_refused,
            proactive,
            photos,
        }
    }

    /// Counts an event refused by `POST /v1/events` (`reason`: one of
    /// [`super::events::REFUSAL_REASONS`]).
    pub fn event_refused(&self, reason: &'static str) {
        self.events_refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Creates `kefu_hits_total`'s series of a rule set's items at zero (the serving
    /// rules, at start and after each reload), so that they exist before their first hit
    /// and a turn finds its counters without adding them.
    pub fn watch_hits(&self, catalog: &crate::data::hits::Catalog) {
        let names: Vec<(usize, NameParts<'_>)> = HIT_KINDS
            .iter()
            .enumerate()
            .flat_map(|(i, &kind)| catalog.names(kind).iter().map(move |name| (i, parts_of(kind, name))))
            .collect();
        self.hits.add(&names);
    }

    /// Creates `kefu_proactive_total`'s series of a rule set's proactive items at zero,
    /// every outcome (the serving rules, at start and after each reload).
    pub fn watch_proactive(&self, rules: &crate::RuleSet) {
        for item in &rules.proactive {
            let trigger = self.proactive.label(&item.name);
            for outcome in PROACTIVE_OUTCOMES {
                let _ = self.proactive.sends.get_or_create(&ProactiveLabels {
                    trigger: trigger.clone(),
                    outcome,
                });
            }
        }
    }

    /// Counts a shop event (by its type, `other` for a type kefu does not know) and what
    /// it did: a proactive message sent or refused, by trigger.
    pub fn customer_event(&self, kind: &str, outcome: &crate::engine::ProactiveOutcome) {
        use crate::engine::ProactiveOutcome as O;
        let known = crate::script::shape::EVENT_TYPES
            .iter()
            .find(|&&t| t == kind)
            .copied()
            .unwrap_or("other");
        self.proactive
            .events
            .get_or_create(&EventTypeLabels { r#type: known })
            .inc();
        let (trigger, outcome) = match outcome {
            O::Recorded => return,
            O::Sent { trigger, .. } => (trigger, "sent"),
            O::Refused { trigger, reason } => (trigger, reason.name()),
        };
        let trigger = self.proactive.label(trigger);
        self.proactive
            .sends
            .get_or_create(&ProactiveLabels { trigger, outcome })
            .inc();
    }

    /// Counts what a turn hit: its rule, promotion, flow step and FAQ entry (one lookup
    /// each, none for a turn that hit none).
    pub fn hits(&self, response: &crate::TurnResponse) {
        let parts = [
            response.rule.as_deref().map(|name| (name, None)),
            response.promotion.as_deref().map(|name| (name, None)),
            response.flow.as_deref().map(|flow| (flow, response.step.as_deref())),
            response.faq.as_deref().map(|name| (name, None)),
        ];
        for (kind, parts) in parts.into_iter().enumerate() {
            if let Some(parts) = parts {
                self.hits.hit(kind, parts);
            }
        }
    }

    /// Creates the channels' series of the channels file at zero (every configured
    /// webhook channel, and `wechat_mp`/`wechat_kf` when it has such accounts), so that
    /// they exist before the first message.
    pub fn watch_channels(&self, config: &crate::channels::ChannelsConfig) {
        use crate::channels::wechat::Kind as AccountKind;
        let mut names: Vec<String> = config.webhook.iter().map(|c| c.name.clone()).collect();
        for (kind, name) in [
            (AccountKind::OfficialAccount, crate::channels::WECHAT_MP),
            (AccountKind::CustomerService, crate::channels::WECHAT_KF),
        ] {
            if config.wechat.iter().any(|a| a.kind == kind) {
                names.push(name.to_string());
            }
        }
        for name in names {
            let channel = self.channels.label(&name);
            for outcome in MESSAGE_OUTCOMES {
                let _ = self.channels.messages.get_or_create(&ChannelOutcomeLabels {
                    channel: channel.clone(),
                    outcome,
                });
            }
            for outcome in crate::channels::DeliveryOutcome::ALL {
                let _ = self.channels.deliveries.get_or_create(&ChannelOutcomeLabels {
                    channel: channel.clone(),
                    outcome: outcome.as_str(),
                });
            }
        }
    }

    /// The `channel` label of a channel's name: itself for the built-in four and the
    /// first [`MAX_CHANNEL_LABELS`] others, `other` past them.
    pub fn channel_label(&self, name: &str) -> String {
        self.channels.label(name)
    }

    /// Counts a message from a channel's platform: `accepted`, `duplicate` or `refused`.
    pub fn channel_message(&self, channel: &str, outcome: &'static str) {
        let channel = self.channels.label(channel);
        self.channels
            .messages
            .get_or_create(&ChannelOutcomeLabels { channel, outcome })
            .inc();
    }

    /// Counts what became of a delivery to a channel's platform.
    pub fn channel_delivery(&self, channel: &str, outcome: crate::channels::DeliveryOutcome) {
        let channel = self.channels.label(channel);
        self.channels
            .deliveries
            .get_or_create(&ChannelOutcomeLabels {
                channel,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Serves `kefu_conversations{state}` from `counts` (the inbox's, in
    /// [`crate::dialogue::ConvState::ALL`]'s order) at each scrape.
    pub fn watch_inbox(&self, counts: impl Fn() -> [u64; 4] + Send + Sync + 'static) {
        let _ = self.agents.conversations.set(Box::new(move || {
            let counts = counts();
            vec![Reading::Gauges(
                "conversations",
                "Conversations in the inbox by state: waiting (handed off, no agent yet), agent, bot, resolved",
                "state",
                crate::dialogue::ConvState::ALL
                    .iter()
                    .zip(counts)
                    .map(|(state, n)| (state.name(), i64::try_from(n).unwrap_or(i64::MAX)))
                    .collect(),
            )]
        }));
    }

    /// Says which agent names are the console's users (the others count as `other`).
    pub fn watch_agents(&self, known: impl Fn(&str) -> bool + Send + Sync + 'static) {
        let _ = self.agents.known_agent.set(Box::new(known));
    }

    /// Counts what a change to a conversation made on this node did.
    pub fn inbox_effects(&self, effects: &super::inbox::Effects) {
        let figures = &self.agents;
        if let Some((kind, group)) = &effects.handed_off {
            figures
                .handoffs
                .get_or_create(&HandoffLabels {
                    kind: kind.name(),
                    group: group_label(group.as_deref()),
                })
                .inc();
        }
        let seconds = |ms: i64| ms.max(0) as f64 / 1000.0;
        for (family, figure) in [
            (&figures.wait, &effects.waited),
            (&figures.first_response, &effects.first_response),
            (&figures.handling, &effects.handled),
        ] {
            if let Some((group, ms)) = figure {
                family
                    .get_or_create(&GroupLabels {
                        group: group_label(group.as_deref()),
                    })
                    .observe(seconds(*ms));
            }
        }
        if let Some((agent, score)) = &effects.feedback
            && let Some(agent) = agent
        {
            let known = figures.known_agent.get().is_some_and(|known| known(agent));
            let agent = if known { agent.clone() } else { "other".into() };
            figures
                .feedback
                .get_or_create(&AgentScoreLabels { agent, score: *score })
                .inc();
        }
    }

    /// Counts an update written to an inbox stream `took` after its change.
    pub fn inbox_pushed(&self, took: Duration) {
        self.agents.push.observe(took.as_secs_f64());
    }

    /// The per-version counters, for the canary guard.
    pub fn versions(&self) -> &VersionBook {
        &self.versions
    }

    /// Reads what serves (the live version, the candidate, the pinnable ones) from `read`
    /// at each scrape, so that only serving versions keep their series (once; later calls
    /// are ignored).
    pub fn watch_versions(&self, read: impl Fn() -> Serving + Send + Sync + 'static) {
        self.versions.watch(read);
    }

    /// Counts a turn for the version and role that answered it.
    pub fn version_turn(&self, response: &crate::TurnResponse) {
        self.versions
            .counters(&response.rules_version, response.rules_role)
            .counters
            .turn(response);
    }

    /// Counts a failed turn for the version it ran on.
    pub fn version_failed(&self, served_by: &ServedBy) {
        self.versions
            .counters(&served_by.version, served_by.role)
            .counters
            .failed();
    }

    /// Counts a rating for the version that answered the conversation last (none for a
    /// session stored before versions).
    pub fn version_feedback(&self, served_by: &ServedBy, score: u8) {
        if !served_by.is_unknown() {
            self.versions
                .counters(&served_by.version, served_by.role)
                .counters
                .feedback(score);
        }
    }

    /// Counts a model call: its outcome, how long it took and, when it produced text, how
    /// long the first text took.
    pub fn model_call(&self, outcome: ModelOutcome, elapsed: Duration, first_text: Option<Duration>) {
        let index = ModelOutcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.model_requests[index].inc();
        self.model_seconds.observe(elapsed.as_secs_f64());
        if let Some(first) = first_text {
            self.model_first_token.observe(first.as_secs_f64());
        }
    }

    /// Serves `backend`'s retries ([`LlmBackend::retries`]) from now on (once; later calls
    /// are ignored). Weak: the metrics must not keep a model loaded.
    pub fn watch_model(&self, backend: &Arc<dyn LlmBackend>) {
        let _ = self.model.set(Arc::downgrade(backend));
    }

    /// Serves the version `read` gives as `kefu_rules_info{version}`, read at each scrape,
    /// so a reload shows at once (once; later calls are ignored).
    pub fn watch_rules(&self, read: impl Fn() -> String + Send + Sync + 'static) {
        let _ = self.rules_version.set(Box::new(read));
    }

    /// Counts a script that failed at run time in `rule` (the item, as the trace names it).
    pub fn script_error(&self, rule: &str) {
        self.script_errors
            .get_or_create(&RuleLabels { rule: rule.to_string() })
            .inc();
    }

    /// Counts a rule set judged slow (its turns moved to the blocking pool).
    pub fn slow_rules(&self) {
        self.slow_rules.inc();
    }

    /// The open-connections gauge.
    pub fn connections(&self) -> &Gauge {
        &self.connections
    }

    /// Counts a connection the limits closed or refused: `idle`, `client`, `full` or
    /// `slow_headers`.
    pub fn connection_shed(&self, kind: &'static str) {
        self.connections_refused.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts an answer-cache lookup and updates the hit ratio.
    pub fn cache_lookup(&self, hit: bool) {
        let outcome = if hit { "hit" } else { "miss" };
        self.cache_lookups.get_or_create(&OutcomeLabels { outcome }).inc();
        let hits = self
            .cache_lookups
            .get_or_create(&OutcomeLabels { outcome: "hit" })
            .get();
        let misses = self
            .cache_lookups
            .get_or_create(&OutcomeLabels { outcome: "miss" })
            .get();
        // Two reads race with other lookups; the ratio is approximate by a lookup or two,
        // which a dashboard cannot tell apart. The counters are exact.
        self.cache_hit_ratio.set(hits as f64 / (hits + misses).max(1) as f64);
    }

    /// Serves the conversation log's counts from now on (once; later calls are ignored).
    /// The log counts on its flusher thread; they are read at each scrape.
    pub fn watch_conversation_log(&self, log: ConversationLog) {
        let _ = self.conversation_log.set(Box::new(move || {
            let counts = log.counts();
            vec![
                Reading::Counter(
                    "conversation_log_lines",
                    "Conversation log lines written",
                    counts.written,
                ),
                Reading::Counter(
                    "conversation_log_dropped",
                    "Conversation log records dropped because too much was waiting to be written",
                    counts.dropped,
                ),
                Reading::Counter(
                    "conversation_log_failed",
                    "Conversation log lines lost to write errors",
                    counts.failed,
                ),
            ]
        }));
    }

    /// Serves the understanding memo's counts, read from `stats` at each scrape (once;
    /// later calls are ignored). The memo belongs to the serving rule set and counts for
    /// itself, so a reload starts them over (a counter reset, which `rate()` reads as such).
    pub fn watch_nlu_memo(&self, stats: impl Fn() -> MemoStats + Send + Sync + 'static) {
        let _ = self.nlu_memo.set(Box::new(move || {
            let stats = stats();
            vec![
                Reading::Counter(
                    "nlu_memo_hits",
                    "Messages found already understood, since the rules were loaded",
                    stats.hits,
                ),
                Reading::Counter(
                    "nlu_memo_misses",
                    "Messages understood afresh, since the rules were loaded",
                    stats.misses,
                ),
                Reading::Gauge(
                    "nlu_memo_entries",
                    "Messages the understanding memo holds",
                    i64::try_from(stats.len).unwrap_or(i64::MAX),
                ),
            ]
        }));
    }

    /// Serves the job queue's depth and the ticket outbox's counts, read from `read` at each
    /// scrape as (queue depth, tickets pending in the outbox, deliveries in flight on this
    /// node). Once; later calls are ignored.
    pub fn watch_tickets(&self, read: impl Fn() -> (u64, u64, u64) + Send + Sync + 'static) {
        let _ = self.tickets.set(Box::new(move || {
            let (depth, pending, in_flight) = read();
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            vec![
                Reading::Gauge(
                    "job_queue_depth",
                    "Background jobs accepted and not finished (waiting, running, between attempts)",
                    gauge(depth),
                ),
                Reading::Gauge(
                    "tickets_pending",
                    "Tickets recorded and not yet delivered (with Redis: the whole fleet's)",
                    gauge(pending),
                ),
                Reading::Gauge(
                    "ticket_deliveries_in_flight",
                    "Ticket deliveries this node has started and not finished",
                    gauge(in_flight),
                ),
            ]
        }));
    }

    /// Makes the Redis series (zero) for every operation: called when sessions are in
    /// Redis, so that they exist before the first error.
    pub fn watch_redis(&self) {
        for op in crate::store::REDIS_OPS {
            let _ = self.redis_errors.get_or_create(&OpLabels { op });
            let _ = self.redis_seconds.get_or_create(&OpLabels { op });
        }
    }

    /// Counts a try of a Redis operation (the store's [`crate::store::RedisObserver`]).
    pub fn redis(&self, op: &'static str, took: Duration, failed: bool) {
        self.redis_seconds
            .get_or_create(&OpLabels { op })
            .observe(took.as_secs_f64());
        if failed {
            self.redis_errors.get_or_create(&OpLabels { op }).inc();
        }
    }

    /// Counts a ticket delivery event (`delivered`, `rejected`, `deferred`, `redelivered`).
    pub fn ticket_delivery(&self, outcome: &'static str) {
        self.ticket_deliveries.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts a request and its latency.
    pub fn request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { route, status }).inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an answered turn (its handoff is counted by the inbox, with its kind and
    /// queue: [`Metrics::inbox_effects`]).
    pub fn answer(&self, source: AnswerSource) {
        let source = source.name();
        self.answers.get_or_create(&SourceLabels { source }).inc();
        if source == "safety" {
            self.safety_hits.inc();
        }
    }

    /// Counts a turn by the channel it came through (`TurnRequest::channel`).
    pub fn channel_turn(&self, channel: &str) {
        if let Some(i) = crate::channels::RESERVED.iter().position(|c| *c == channel) {
            self.built_in_turns[i].inc();
            return;
        }
        let channel = self.channel_label(channel);
        self.channel_turns.get_or_create(&ChannelLabels { channel }).inc();
    }

    /// Counts an agent taking a conversation over.
    pub fn takeover(&self) {
        self.takeovers.inc();
    }

    /// Counts a reload.
    pub fn reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "rejected" };
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts model tokens.
    pub fn tokens(&self, prompt: u64, completion: u64) {
        self.llm_tokens
            .get_or_create(&KindLabels { kind: "prompt" })
            .inc_by(prompt);
        self.llm_tokens
            .get_or_create(&KindLabels { kind: "completion" })
            .inc_by(completion);
    }

    /// Counts a satisfaction score.
    pub fn feedback(&self, score: u8) {
        self.feedback.get_or_create(&ScoreLabels { score }).inc();
    }

    /// Counts a job event.
    pub fn job(&self, outcome: &'static str) {
        self.jobs.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts a rate-limited request.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// The in-flight gauge (incremented while a turn runs).
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String never fails");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in channels have series from the start; webhook names get theirs on
    /// first use, up to the bound, and every name past it counts as `other`.
    #[test]
    fn proactive_outcomes_and_events_are_counted_under_bounded_labels() {
        use crate::engine::{ProactiveOutcome, Refusal};
        let metrics = Metrics::new();
        let text = metrics.encode();
        assert!(text.contains("kefu_events_total{type=\"order_paid\"} 0"), "{text}");
        assert!(text.contains("kefu_events_total{type=\"other\"} 0"), "{text}");
        let rules = crate::dsl::load_dir(std::path::Path::new("rules")).rules.unwrap();
        metrics.watch_proactive(&rules);
        let text = metrics.encode();
        for item in &rules.proactive {
            for outcome in PROACTIVE_OUTCOMES {
                let line = format!(
                    "kefu_proactive_total{{trigger=\"{}\",outcome=\"{outcome}\"}} 0",
                    item.name
                );
                assert!(text.contains(&line), "{line} missing:\n{text}");
            }
        }
        metrics.customer_event(
            "refund_done",
            &ProactiveOutcome::Sent {
                trigger: "退款到账".into(),
                text: "…".into(),
                seq: 1,
            },
        );
        metrics.customer_event(
            "checkout_abandoned",
            &ProactiveOutcome::Refused {
                trigger: "催付提醒".into(),
                reason: Refusal::Limit,
            },
        );
        metrics.customer_event("made_up_by_a_client", &ProactiveOutcome::Recorded);
        // Past the bound, a new trigger name counts as `other`.
        for n in 0..MAX_PROACTIVE_TRIGGERS + 5 {
            metrics.customer_event(
                "order_paid",
                &ProactiveOutcome::Refused {
                    trigger: format!("t{n}"),
                    reason: Refusal::QuietHours,
                },
            );
        }
        let text = metrics.encode();
        assert!(
            text.contains("kefu_proactive_total{trigger=\"退款到账\",outcome=\"sent\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kefu_proactive_total{trigger=\"催付提醒\",outcome=\"limit\"} 1"),
            "{text}"
        );
        assert!(text.contains("kefu_events_total{type=\"other\"} 1"), "{text}");
        assert!(text.contains("kefu_events_total{type=\"refund_done\"} 1"), "{text}");
        assert!(
            text.contains("kefu_proactive_total{trigger=\"other\",outcome=\"quiet_hours\"}"),
            "{text}"
        );
        let series = text.lines().filter(|l| l.starts_with("kefu_proactive_total{")).count();
        assert!(
            series <= (MAX_PROACTIVE_TRIGGERS + 1) * PROACTIVE_OUTCOMES.len(),
            "{series}"
        );
    }

    #[test]
    fn channel_turns_are_counted_under_a_bounded_set_of_names() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        for channel in crate::channels::RESERVED {
            assert!(
                text.contains(&format!("kefu_channel_turns_total{{channel=\"{channel}\"}} 0")),
                "{channel}"
            );
        }
        metrics.channel_turn("web");
        metrics.channel_turn("web");
        for n in 0..100 {
            metrics.channel_turn(&format!("hook{n}"));
        }
        metrics.channel_turn("hook0");
        let text = metrics.encode();
        assert!(text.contains("kefu_channel_turns_total{channel=\"web\"} 2"));
        assert!(text.contains("kefu_channel_turns_total{channel=\"hook0\"} 2"));
        // The built-in names always have their own; 32 others after them.
        let webhooks = MAX_CHANNEL_LABELS;
        assert!(text.contains(&format!(
            "kefu_channel_turns_total{{channel=\"hook{}\"}} 1",
            webhooks - 1
        )));
        assert!(!text.contains(&format!("channel=\"hook{webhooks}\"")));
        assert!(text.contains(&format!(
            "kefu_channel_turns_total{{channel=\"other\"}} {}",
            100 - webhooks
        )));
        let series = text
            .lines()
            .filter(|l| l.starts_with("kefu_channel_turns_total{"))
            .count();
        assert_eq!(
            series,
            crate::channels::RESERVED.len() + MAX_CHANNEL_LABELS + 1,
            "the built-ins, the others and `other`"
        );
        assert_eq!(metrics.channel_label("hook99"), "other");
    }

    fn hits_line(text: &str, kind: &str, name: &str) -> Option<u64> {
        let prefix = format!("kefu_hits_total{{kind=\"{kind}\",name=\"{name}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|n| n.parse().unwrap())
    }

    /// The demo shop's items have series at zero from the start; the turns' hits count
    /// under their names (a flow step as `flow/step`), names not in the rule set on first
    /// use, and past the bound as `other`.
    #[test]
    fn hits_are_counted_per_item_under_a_bounded_set_of_names() {
        let rules = crate::dsl::load_dir(std::path::Path::new("rules")).rules.unwrap();
        let catalog = crate::data::hits::Catalog::of(&rules);
        let metrics = Metrics::new();
        metrics.watch_hits(&catalog);
        let text = metrics.encode();
        for kind in crate::data::hits::HitKind::ALL {
            for name in catalog.names(kind) {
                assert_eq!(hits_line(&text, kind.name(), name), Some(0), "{} {name}", kind.name());
            }
            assert_eq!(hits_line(&text, kind.name(), "other"), Some(0));
        }

        let engine = crate::Engine::new(std::sync::Arc::new(rules));
        let mut seen = Vec::new();
        for message in ["我要退货", "运费谁出", "衣服怎么洗", "会缩水吗"] {
            let response = engine.turn(crate::TurnRequest::new("s", message)).unwrap();
            metrics.hits(&response);
            seen.push(response);
        }
        let text = metrics.encode();
        let mut counted = 0;
        for r in &seen {
            let names = [
                ("rule", r.rule.clone()),
                ("promotion", r.promotion.clone()),
                (
                    "flow_step",
                    r.flow
                        .as_ref()
                        .map(|f| format!("{f}/{}", r.step.as_deref().unwrap_or(""))),
                ),
                ("faq", r.faq.clone()),
            ];
            for (kind, name) in names {
                if let Some(name) = name {
                    assert!(
                        hits_line(&text, kind, &name).unwrap_or(0) >= 1,
                        "{kind} {name}:\n{text}"
                    );
                    counted += 1;
                }
            }
        }
        assert!(counted >= 3, "the demo answers these by rule, flow and FAQ: {seen:?}");

        let metrics = Metrics::new();
        let mut response = seen[0].clone();
        response.flow = None;
        response.faq = None;
        response.promotion = None;
        for n in 0..MAX_HIT_NAMES + 10 {
            response.rule = Some(format!("r{n}"));
            metrics.hits(&response);
        }
        response.rule = Some("r0".into());
        metrics.hits(&response);
        let text = metrics.encode();
        assert_eq!(hits_line(&text, "rule", "r0"), Some(2));
        assert_eq!(hits_line(&text, "rule", &format!("r{}", MAX_HIT_NAMES - 1)), Some(1));
        assert_eq!(hits_line(&text, "rule", &format!("r{MAX_HIT_NAMES}")), None);
        assert_eq!(hits_line(&text, "rule", "other"), Some(10));
        let series = text
            .lines()
            .filter(|l| l.starts_with("kefu_hits_total{kind=\"rule\""))
            .count();
        assert_eq!(series, MAX_HIT_NAMES + 1);
    }

    /// What counting a turn's hits costs on the hot path (printed; run with
    /// `--nocapture`): a rule and a flow step found in a table of a few thousand names.
    #[test]
    fn counting_hits_is_a_lookup_per_kind() {
        let metrics = Metrics::new();
        let mut catalog = crate::data::hits::Catalog::default();
        catalog.0.rule = (0..2000).map(|n| format!("规则{n}")).collect();
        catalog.0.flow_step = (0..500).map(|n| format!("流程{n}/ask slot@{n}")).collect();
        metrics.watch_hits(&catalog);
        let table = metrics.hits.table.load_full();
        let steps: Vec<(String, String)> = (0..500)
            .map(|n| (format!("流程{n}"), format!("ask slot@{n}")))
            .collect();
        let turns = 200_000;
        let started = std::time::Instant::now();
        for n in 0..turns {
            let rule = &catalog.0.rule[n % 2000];
            metrics.hits.hit(0, (rule, None));
            let (flow, step) = &steps[n % 500];
            metrics.hits.hit(2, (flow, Some(step)));
        }
        let took = started.elapsed();
        eprintln!(
            "{:.0} ns a turn (a rule and a flow step)",
            took.as_nanos() as f64 / turns as f64
        );
        assert!(
            Arc::ptr_eq(&table, &metrics.hits.table.load_full()),
            "known names never replace the table"
        );
    }
}
