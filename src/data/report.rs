//! `kefu report`: the seeds' evaluation matrix (评估矩阵) from a conversation log.
//!
//! Definitions (the text and JSON say the same):
//! - **sessions**: conversations with at least one customer turn.
//! - **first-contact resolution**: sessions where the bot never handed over and no agent
//!   took over, out of all sessions (seed target: above 85%).
//! - **satisfaction**: every feedback score counts (a customer who scores twice counts
//!   twice); the mean and the share of 4s and 5s (seed target: a mean of 4.5 or more).
//! - **handoffs**: sessions handed to a person, by the bot (a turn with a `handoff`
//!   reason) or by an agent's takeover; each session counts once, under its first reason.
//!   Customer messages queued while an agent has the conversation (`source: human`) are
//!   not new handoffs.
//! - **safety**: turns where the filter found something (a finding in the message, a
//!   masked or blocked reply); `blocked` are turns answered by the safety filter.
//! - **latency**: the engine's time per turn, all turns and per source. Percentiles are
//!   exact, by the nearest-rank method (the smallest value with at least p% of the turns
//!   at or below it), over every turn, not sampled.
//! - **cost**: model tokens times the price per 1,000 tokens (`--price-per-1k`, prompt and
//!   generated may differ), divided by sessions (seed target: under 0.03 元).
//! - **versions**: per rules version (the turn records' `rules`), in order of first turn:
//!   turns; the share answered by the rules (rule, flow, promotion, short replies), by
//!   the FAQ and by the model (cache hits, FAQ or model answers given again, count in
//!   none); the handoff rate (turns handed to a person) and fallback rate (turns nothing
//!   answered) per turn; feedback, each score counted for the version that answered the
//!   session's last turn before it; errors, turns during which a script failed. A canary
//!   shows as two versions over the same time.
//! - **channels**: per channel the turns came through (`api`, `web`, `wechat_mp`,
//!   `wechat_kf`, a webhook's name; records without one are `api`'s), in order of first
//!   turn, shown when any turn came through another channel than `api`: turns;
//!   conversations (sessions whose last turn came through it); the shares answered by the
//!   rules, FAQ and model and the fallback rate per turn, as for versions (events nothing
//!   answered, `silent`, count as turns answered by nothing else); the handoff rate per
//!   conversation (each conversation once, as in **handoffs**); satisfaction, each score
//!   counted for the channel of the session's last turn before it. At most
//!   [`MAX_CHANNELS`] channels, the rest together as `other`.
//! - **hits**: per rule, promotion, flow step (`flow/step`) and FAQ entry, the turns it
//!   answered, the conversations they were in and its last turn ([`super::hits`]).
//! - **never hit**: with a rule set ([`ReportOptions::unused`]), its rules, promotions,
//!   flow steps and FAQ entries not hit in the last N days of the log, counted back from
//!   its last record; items a rule set added lately are listed too (the log cannot tell
//!   "new" from "unused"), by name, as are items renamed since.
//! - **proactive**: per trigger, messages sent, replied to and followed by a conversion,
//!   and triggers refused by reason ([`super::proactive`] defines them).
//! - **intent F1** cannot come from a log (it needs labels): `kefu eval` measures it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset, TimeZone};
use serde::Serialize;

use super::hits::{Catalog, HitKind, HitTally, Hits, NeverHit};
use super::{DataError, ReadStats, Record};
use crate::engine::AnswerSource;

/// Every answer source, in the order reports list them when counts tie.
const SOURCES: [AnswerSource; 12] = AnswerSource::ALL;

/// The most channels a report lists one by one; turns of any further channel are counted
/// together as `other` (a log written by kefu has the four built-ins and the configured
/// webhooks; a hand-made one may have anything).
pub const MAX_CHANNELS: usize = 32;

fn source_index(source: AnswerSource) -> usize {
    SOURCES.iter().position(|&s| s == source).unwrap_or(0)
}

/// Prices and other settings of a report.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// 元 per 1,000 prompt tokens.
    pub price_prompt_per_1k: f64,
    /// 元 per 1,000 generated tokens.
    pub price_completion_per_1k: f64,
    /// A rule set's items and the days to look back for the ones not hit (`never_hit`);
    /// none: no such list.
    pub unused: Option<Unused>,
}

/// What `never_hit` is about: a rule set's items, and how many days back to look.
#[derive(Clone, Debug)]
pub struct Unused {
    /// The rule set's items.
    pub catalog: Catalog,
    /// Days counted back from the log's last record.
    pub days: u32,
}

impl Default for ReportOptions {
    /// 0.002 元 per 1,000 tokens, prompt and generated: the order of a small hosted
    /// model's price, a stand-in until the shop sets its own.
    fn default() -> Self {
        ReportOptions {
            price_prompt_per_1k: 0.002,
            price_completion_per_1k: 0.002,
            unused: None,
        }
    }
}

/// A count and its share of a whole.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Count {
    /// What is counted.
    pub name: String,
    /// How many.
    pub count: u64,
    /// `count` over the whole (0 when the whole is empty).
    pub share: f64,
}

/// An intent's turns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntentCount {
    /// The intent (`(none)` for turns without one).
    pub name: String,
    /// Turns.
    pub count: u64,
    /// Share of all turns.
    pub share: f64,
    /// Mean intent confidence.
    pub mean_confidence: f64,
}

/// A part of a whole.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rate {
    /// The part.
    pub count: u64,
    /// The whole.
    pub of: u64,
    /// `count / of`, none when the whole is empty.
    pub rate: Option<f64>,
}

impl Rate {
    fn new(count: u64, of: u64) -> Self {
        Rate {
            count,
            of,
            rate: (of > 0).then(|| count as f64 / of as f64),
        }
    }
}

/// Feedback scores.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Satisfaction {
    /// Scores given.
    pub scores: u64,
    /// Sessions with at least one score.
    pub sessions: u64,
    /// The mean score.
    pub mean: Option<f64>,
    /// The share of scores of 4 or 5.
    pub share_4_or_5: Option<f64>,
    /// How many 1s, 2s, 3s, 4s and 5s.
    pub by_score: [u64; 5],
}

/// Conversations handed to people.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Handoffs {
    /// Sessions handed over, and the share of all sessions.
    pub sessions: Rate,
    /// Of which handed over by the bot first.
    pub by_bot: u64,
    /// Of which taken over by an agent without a bot handoff first.
    pub by_agent: u64,
    /// Sessions by their first reason.
    pub reasons: Vec<Count>,
    /// Agents' answers.
    pub agent_replies: u64,
}

/// What the safety filter did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SafetyFigures {
    /// Turns where the filter found something, and their share of all turns.
    pub turns: Rate,
    /// Turns answered by the safety filter.
    pub blocked: u64,
    /// Findings by kind (`pii phone`, `block 竞品`, `reply masked: pii phone`...).
    pub findings: Vec<Count>,
}

/// Latency of a set of turns, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latency {
    /// `all` or a source.
    pub source: String,
    /// Turns.
    pub turns: u64,
    /// Mean.
    pub mean: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// One bar of the latency histogram: turns with `from_ms <= latency < to_ms`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bin {
    /// Lower bound.
    pub from_ms: f64,
    /// Upper bound.
    pub to_ms: f64,
    /// Turns.
    pub count: u64,
}

/// Model tokens and what they cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelCost {
    /// Turns that used the model.
    pub turns: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// Tokens per session.
    pub tokens_per_conversation: Option<f64>,
    /// 元 per 1,000 prompt tokens.
    pub price_prompt_per_1k: f64,
    /// 元 per 1,000 generated tokens.
    pub price_completion_per_1k: f64,
    /// 元 in all.
    pub cost: f64,
    /// 元 per session.
    pub cost_per_conversation: Option<f64>,
}

/// Answers by source over time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timeline {
    /// The width of a bucket.
    pub bucket_minutes: u32,
    /// The sources counted, in the order of `counts`.
    pub sources: Vec<String>,
    /// The buckets, oldest first, empty ones included.
    pub buckets: Vec<Bucket>,
}

/// Turns in one bucket of time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    /// Its start (`YYYY-MM-DD HH:MM`, in the log's time zone).
    pub start: String,
    /// Turns by source, in `Timeline::sources` order.
    pub counts: Vec<u64>,
}

/// One line of the evaluation matrix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    /// The measure.
    pub name: String,
    /// Its value, when the log can give it.
    pub value: Option<f64>,
    /// The seeds' target.
    pub target: String,
    /// Whether the value meets it.
    pub met: Option<bool>,
}

/// Everything `kefu report` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// First record (RFC 3339).
    pub from: Option<String>,
    /// Last record.
    pub to: Option<String>,
    /// Sessions with at least one customer turn.
    pub sessions: u64,
    /// Customer turns.
    pub turns: u64,
    /// The seeds' evaluation matrix.
    pub matrix: Vec<Target>,
    /// Turns by what answered them.
    pub sources: Vec<Count>,
    /// Turns by intent, most frequent first.
    pub intents: Vec<IntentCount>,
    /// Turns by customer segment.
    pub segments: Vec<Count>,
    /// Sessions resolved without a handoff.
    pub first_contact_resolution: Rate,
    /// Feedback.
    pub satisfaction: Satisfaction,
    /// Handoffs to people.
    pub handoffs: Handoffs,
    /// Safety filter hits.
    pub safety: SafetyFigures,
    /// Latency of all turns, then per source.
    pub latency_ms: Vec<Latency>,
    /// Turns by latency, quarter-decade bins.
    pub latency_histogram: Vec<Bin>,
    /// Model tokens and cost.
    pub model: ModelCost,
    /// Answers by source over time.
    pub timeline: Timeline,
    /// Per rules version, in order of first turn.
    pub versions: Vec<VersionFigures>,
    /// Per channel, in order of first turn (absent when every turn came through `api`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelFigures>,
    /// The agents' figures, per agent and per queue (absent when no person served).
    #[serde(skip_serializing_if = "Agents::is_empty")]
    pub agents: Agents,
    /// Turns per rule, promotion, flow step and FAQ entry.
    pub hits: Hits,
    /// Proactive messages per trigger (absent when the log has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proactive: Vec<super::proactive::TriggerFigures>,
    /// The rule set's items not hit in the last days of the log (`null` without a rule
    /// set, [`ReportOptions::unused`]).
    pub never_hit: Option<NeverHit>,
    /// Lines read and bad lines.
    pub read: ReadStats,
}

/// How people served the conversations handed to them: per agent and per queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Agents {
    /// One row per agent, most conversations first.
    pub by_agent: Vec<AgentFigures>,
    /// One row per queue (`none`: the shop declares no queues).
    pub by_group: Vec<AgentFigures>,
}

impl Agents {
    /// Whether no person served any conversation in the period.
    pub fn is_empty(&self) -> bool {
        self.by_agent.is_empty() && self.by_group.is_empty()
    }
}

/// One agent's or queue's figures, times in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AgentFigures {
    /// The agent's or queue's name.
    pub name: String,
    /// Holds that ended (released or resolved) in the period.
    pub conversations: u64,
    /// From leaving the bot to the agent's first reply.
    pub first_response: Spread,
    /// From the pick-up to the release or resolution.
    pub handling: Spread,
    /// From leaving the bot to a person's pick-up (conversations that waited).
    pub waiting: Spread,
    /// Scores of conversations they served last.
    pub scores: u64,
    /// Their mean.
    pub satisfaction: Option<f64>,
}

/// The median and 90th percentile of some seconds (nearest rank), and how many.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    /// How many values.
    pub count: u64,
    /// The median, when there are values.
    pub p50: Option<f64>,
    /// The 90th percentile.
    pub p90: Option<f64>,
}

impl Spread {
    fn of(mut seconds: Vec<f64>) -> Spread {
        seconds.sort_by(f64::total_cmp);
        let some = !seconds.is_empty();
        Spread {
            count: seconds.len() as u64,
            p50: some.then(|| percentile(&seconds, 50.0)),
            p90: some.then(|| percentile(&seconds, 90.0)),
        }
    }
}

/// Running totals of one agent or queue.
#[derive(Default)]
struct AgentTally {
    conversations: u64,
    first_response: Vec<f64>,
    handling: Vec<f64>,
    waiting: Vec<f64>,
    scores: u64,
    score_sum: u64,
}

impl AgentTally {
    fn hold(&mut self, hold: &crate::data::record::Hold) {
        let seconds = |ms: Option<i64>| ms.map(|ms| ms.max(0) as f64 / 1000.0);
        self.conversations += 1;
        self.first_response.extend(seconds(hold.first_response_ms));
        self.handling.extend(seconds(hold.handled_ms));
    }

    fn finish(self, name: String) -> AgentFigures {
        AgentFigures {
            name,
            conversations: self.conversations,
            first_response: Spread::of(self.first_response),
            handling: Spread::of(self.handling),
            waiting: Spread::of(self.waiting),
            scores: self.scores,
            satisfaction: (self.scores > 0).then(|| self.score_sum as f64 / self.scores as f64),
        }
    }
}

fn agents_of(tally: HashMap<String, AgentTally>) -> Vec<AgentFigures> {
    let mut rows: Vec<AgentFigures> = tally.into_iter().map(|(name, t)| t.finish(name)).collect();
    rows.sort_by(|a, b| {
        (b.conversations + b.scores)
            .cmp(&(a.conversations + a.scores))
            .then_with(|| a.name.cmp(&b.name))
    });
    rows
}

/// One rules version's figures (`kefu report`'s per-version table).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VersionFigures {
    /// The rules hash.
    pub version: String,
    /// Its first turn.
    pub from: String,
    /// Its last turn.
    pub to: String,
    /// Turns it answered.
    pub turns: u64,
    /// Share answered by the rules: rule, flow, promotion, short replies (`context`).
    pub rules: f64,
    /// Share answered by the knowledge base's FAQ.
    pub faq: f64,
    /// Share answered by the model.
    pub model: f64,
    /// Turns handed to a person, per turn.
    pub handoffs: Rate,
    /// Turns nothing answered, per turn.
    pub fallbacks: Rate,
    /// Scores given after it answered the session's last turn.
    pub feedback: u64,
    /// Their mean.
    pub feedback_mean: Option<f64>,
    /// Turns during which a script failed.
    pub errors: Rate,
}

/// One channel's figures (`kefu report`'s per-channel table).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelFigures {
    /// The channel (`api`, `web`, `wechat_mp`, `wechat_kf`, a webhook's name, `other`).
    pub channel: String,
    /// Turns that came through it.
    pub turns: u64,
    /// Conversations whose last turn came through it.
    pub conversations: u64,
    /// Share of its turns answered by the rules: rule, flow, promotion, short replies.
    pub rules: f64,
    /// Share answered by the knowledge base's FAQ.
    pub faq: f64,
    /// Share answered by the model.
    pub model: f64,
    /// Turns nothing answered, per turn.
    pub fallbacks: Rate,
    /// Its conversations handed to a person, per conversation.
    pub handoffs: Rate,
    /// Scores given in its conversations.
    pub feedback: u64,
    /// Their mean.
    pub feedback_mean: Option<f64>,
}

/// Running totals of one channel.
#[derive(Default)]
struct ChannelTally {
    channel: String,
    sources: [u64; SOURCES.len()],
    scores: u64,
    score_sum: u64,
}

/// Running totals of one version.
#[derive(Default)]
struct VersionTally {
    version: String,
    from: Option<DateTime<FixedOffset>>,
    to: Option<DateTime<FixedOffset>>,
    sources: [u64; SOURCES.len()],
    handoffs: u64,
    errors: u64,
    scores: u64,
    score_sum: u64,
}

#[derive(Default)]
struct SessionFigures {
    /// The version (index into `Tally::versions`) of its last turn.
    version: Option<usize>,
    /// The channel (index into `Tally::channels`) of its last turn.
    channel: Option<usize>,
    turns: u32,
    /// The first reason it went to a person, and whether the bot gave it.
    handed: Option<(String, bool)>,
    scored: bool,
    /// The last person who held it (and their queue): a later score is theirs.
    served: Option<(String, String)>,
    /// The items its turns hit (indexes into the hit tally), each counted once.
    hit: Vec<u32>,
}

/// Running totals while the log streams by.
#[derive(Default)]
struct Tally {
    from: Option<DateTime<FixedOffset>>,
    to: Option<DateTime<FixedOffset>>,
    sessions: HashMap<String, SessionFigures>,
    turns: u64,
    sources: [u64; SOURCES.len()],
    intents: HashMap<String, (u64, f64)>,
    segments: HashMap<String, u64>,
    scores: [u64; 5],
    agent_replies: u64,
    safety_turns: u64,
    findings: HashMap<String, u64>,
    latencies: Vec<Vec<f64>>,
    model_turns: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Turns by source per minute since the epoch, in the log's offset.
    minutes: BTreeMap<i64, [u64; SOURCES.len()]>,
    /// Per rules version, in order of first turn.
    versions: Vec<VersionTally>,
    /// Per channel, in order of first turn, at most [`MAX_CHANNELS`] and `other`.
    channels: Vec<ChannelTally>,
    /// Per agent and per queue.
    agents: HashMap<String, AgentTally>,
    groups: HashMap<String, AgentTally>,
    /// Per rule, promotion, flow step and FAQ entry.
    hits: HitTally,
    /// Proactive messages, their replies and conversions.
    proactive: super::proactive::ProactiveTally,
}

impl Tally {
    /// The index of `channel`'s tally, made on its first turn; `other` past the bound.
    fn channel(&mut self, channel: &str) -> usize {
        if let Some(i) = self.channels.iter().position(|c| c.channel == channel) {
            return i;
        }
        let name = if self.channels.len() < MAX_CHANNELS {
            channel
        } else {
            "other"
        };
        if let Some(i) = self.channels.iter().position(|c| c.channel == name) {
            return i;
        }
        self.channels.push(ChannelTally {
            channel: name.to_string(),
            ..ChannelTally::default()
        });
        self.channels.len() - 1
    }

    /// A hold that ended (a release or a resolution).
    fn hold(&mut self, session: String, hold: &crate::data::record::Hold) {
        let group = hold.group.clone().unwrap_or_else(|| "none".into());
        if hold.handled_ms.is_some() || hold.first_response_ms.is_some() {
            self.groups.entry(group.clone()).or_default().hold(hold);
            if let Some(agent) = &hold.agent {
                self.agents.entry(agent.clone()).or_default().hold(hold);
            }
        }
        if let Some(agent) = &hold.agent {
            self.sessions.entry(session).or_default().served = Some((agent.clone(), group));
        }
    }

    fn add(&mut self, record: Record) {
        let ts = record.ts();
        if self.from.is_none_or(|f| ts < f) {
            self.from = Some(ts);
        }
        if self.to.is_none_or(|t| ts > t) {
            self.to = Some(ts);
        }
        match record {
            Record::Turn(turn) => {
                self.proactive.turn(&turn);
                let index = match self.versions.iter().position(|v| v.version == turn.rules) {
                    Some(i) => i,
                    None => {
                        self.versions.push(VersionTally {
                            version: turn.rules.clone(),
                            ..VersionTally::default()
                        });
                        self.versions.len() - 1
                    }
                };
                let version = &mut self.versions[index];
                version.from = Some(version.from.map_or(ts, |f| f.min(ts)));
                version.to = Some(version.to.map_or(ts, |t| t.max(ts)));
                version.sources[source_index(turn.source)] += 1;
                version.handoffs += u64::from(turn.handoff.is_some() && turn.source != AnswerSource::Human);
                version.errors += u64::from(turn.script_errors > 0);
                let channel = self.channel(turn.channel_name());
                self.channels[channel].sources[source_index(turn.source)] += 1;
                let session = self.sessions.entry(turn.session).or_default();
                let hits = super::hits::of_turn(
                    turn.rule.as_deref(),
                    turn.promotion.as_deref(),
                    turn.flow.as_deref(),
                    turn.step.as_deref(),
                    turn.faq.as_deref(),
                );
                self.hits.turn(ts, hits, &mut session.hit);
                session.version = Some(index);
                session.channel = Some(channel);
                session.turns += 1;
                if let Some(reason) = turn.handoff
                    && turn.source != AnswerSource::Human
                    && session.handed.is_none()
                {
                    session.handed = Some((reason, true));
                }
                self.turns += 1;
                let source = source_index(turn.source);
                self.sources[source] += 1;
                let intent = self
                    .intents
                    .entry(turn.intent.unwrap_or_else(|| "(none)".into()))
                    .or_default();
                intent.0 += 1;
                intent.1 += turn.confidence;
                if let Some(segment) = turn.segment {
                    *self.segments.entry(segment).or_default() += 1;
                }
                if !turn.safety.is_empty() {
                    self.safety_turns += 1;
                    for hit in turn.safety {
                        *self.findings.entry(hit).or_default() += 1;
                    }
                }
                if self.latencies.is_empty() {
                    self.latencies = vec![Vec::new(); SOURCES.len()];
                }
                self.latencies[source].push(turn.latency_ms);
                if turn.prompt_tokens > 0 || turn.completion_tokens > 0 {
                    self.model_turns += 1;
                    self.prompt_tokens += u64::from(turn.prompt_tokens);
                    self.completion_tokens += u64::from(turn.completion_tokens);
                }
                let minute = (ts.timestamp() + i64::from(ts.offset().local_minus_utc())).div_euclid(60);
                self.minutes.entry(minute).or_default()[source] += 1;
            }
            Record::Agent(_) => self.agent_replies += 1,
            Record::Takeover(t) => {
                let group = t.group.clone().unwrap_or_else(|| "none".into());
                if let Some(waited) = t.waited_ms {
                    let seconds = waited.max(0) as f64 / 1000.0;
                    self.groups.entry(group.clone()).or_default().waiting.push(seconds);
                    if let Some(agent) = &t.agent {
                        self.agents.entry(agent.clone()).or_default().waiting.push(seconds);
                    }
                }
                let session = self.sessions.entry(t.session).or_default();
                if let Some(agent) = t.agent {
                    session.served = Some((agent, group));
                }
                if session.handed.is_none() {
                    session.handed = Some(("agent takeover".into(), false));
                }
            }
            Record::Release(r) => self.hold(r.session, &r.hold),
            Record::Resolve(r) => self.hold(r.session, &r.hold),
            Record::Requeue(_) | Record::Note(_) => {}
            Record::Event(e) => self.proactive.event(&e),
            Record::Proactive(p) => self.proactive.sent(&p),
            Record::Feedback(f) => {
                if (1..=5).contains(&f.score) {
                    self.scores[usize::from(f.score) - 1] += 1;
                    let session = self.sessions.entry(f.session).or_default();
                    session.scored = true;
                    // The agent who served it last: the record's, else the log's takeovers.
                    let served = match (f.agent, &session.served) {
                        (Some(agent), Some((_, group))) => Some((agent, group.clone())),
                        (Some(agent), None) => Some((agent, "none".into())),
                        (None, served) => served.clone(),
                    };
                    if let Some((agent, group)) = served {
                        for tally in [
                            self.agents.entry(agent).or_default(),
                            self.groups.entry(group).or_default(),
                        ] {
                            tally.scores += 1;
                            tally.score_sum += u64::from(f.score);
                        }
                    }
                    if let Some(version) = session.version.and_then(|i| self.versions.get_mut(i)) {
                        version.scores += 1;
                        version.score_sum += u64::from(f.score);
                    }
                    if let Some(channel) = session.channel.and_then(|i| self.channels.get_mut(i)) {
                        channel.scores += 1;
                        channel.score_sum += u64::from(f.score);
                    }
                }
            }
        }
    }

    fn finish(self, options: &ReportOptions, read: ReadStats) -> Report {
        let with_turns = || self.sessions.values().filter(|s| s.turns > 0);
        let sessions = with_turns().count() as u64;
        let handed: Vec<&(String, bool)> = with_turns().filter_map(|s| s.handed.as_ref()).collect();
        let turns = self.turns;

        let mut sources: Vec<Count> = SOURCES
            .iter()
            .zip(self.sources)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| count(s.name(), n, turns))
            .collect();
        sort_counts(&mut sources);
        let mut intents: Vec<IntentCount> = self
            .intents
            .into_iter()
            .map(|(name, (n, confidence))| IntentCount {
                name,
                count: n,
                share: share(n, turns),
                mean_confidence: confidence / n as f64,
            })
            .collect();
        intents.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        let segments = counts(self.segments, turns);

        let fcr = Rate::new(sessions - handed.len() as u64, sessions);
        let scores: u64 = self.scores.iter().sum();
        let total: u64 = self.scores.iter().zip(1u64..).map(|(n, s)| n * s).sum();
        let satisfaction = Satisfaction {
            scores,
            sessions: self.sessions.values().filter(|s| s.scored).count() as u64,
            mean: (scores > 0).then(|| total as f64 / scores as f64),
            share_4_or_5: (scores > 0).then(|| (self.scores[3] + self.scores[4]) as f64 / scores as f64),
            by_score: self.scores,
        };
        let mut reasons: HashMap<String, u64> = HashMap::new();
        for (reason, _) in &handed {
            *reasons.entry(reason.clone()).or_default() += 1;
        }
        let handoffs = Handoffs {
            sessions: Rate::new(handed.len() as u64, sessions),
            by_bot: handed.iter().filter(|(_, bot)| *bot).count() as u64,
            by_agent: handed.iter().filter(|(_, bot)| !*bot).count() as u64,
            reasons: counts(reasons, handed.len() as u64),
            agent_replies: self.agent_replies,
        };
        let safety = SafetyFigures {
            turns: Rate::new(self.safety_turns, turns),
            blocked: self.sources[source_index(AnswerSource::Safety)],
            findings: counts(self.findings, turns),
        };

        let mut latencies = self.latencies;
        let mut all: Vec<f64> = latencies.iter().flatten().copied().collect();
        all.sort_by(f64::total_cmp);
        let mut latency_ms = Vec::new();
        if !all.is_empty() {
            latency_ms.push(latency("all", &all));
        }
        let mut per_source: Vec<Latency> = SOURCES
            .iter()
            .zip(latencies.iter_mut())
            .filter(|(_, l)| !l.is_empty())
            .map(|(s, l)| {
                l.sort_by(f64::total_cmp);
                latency(s.name(), l)
            })
            .collect();
        per_source.sort_by(|a, b| b.turns.cmp(&a.turns).then_with(|| a.source.cmp(&b.source)));
        latency_ms.extend(per_source);

        let cost = self.prompt_tokens as f64 / 1000.0 * options.price_prompt_per_1k
            + self.completion_tokens as f64 / 1000.0 * options.price_completion_per_1k;
        let per_session = |x: f64| (sessions > 0).then(|| x / sessions as f64);
        let model = ModelCost {
            turns: self.model_turns,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            tokens_per_conversation: per_session((self.prompt_tokens + self.completion_tokens) as f64),
            price_prompt_per_1k: options.price_prompt_per_1k,
            price_completion_per_1k: options.price_completion_per_1k,
            cost,
            cost_per_conversation: per_session(cost),
        };

        let matrix = vec![
            Target {
                name: "first-contact resolution".into(),
                value: fcr.rate,
                target: "> 85%".into(),
                met: fcr.rate.map(|r| r > 0.85),
            },
            Target {
                name: "satisfaction (mean score)".into(),
                value: satisfaction.mean,
                target: ">= 4.5".into(),
                met: satisfaction.mean.map(|m| m >= 4.5),
            },
            Target {
                name: "cost per conversation (元)".into(),
                value: model.cost_per_conversation,
                target: "< 0.03".into(),
                met: model.cost_per_conversation.map(|c| c < 0.03),
            },
            Target {
                name: "intent F1 (kefu eval)".into(),
                value: None,
                target: "> 0.92".into(),
                met: None,
            },
        ];
        let timeline = timeline(&self.minutes, self.from.map(|f| *f.offset()));
        let versions = self.versions.iter().map(version_figures).collect();
        let only_api = self
            .channels
            .iter()
            .all(|c| c.channel == crate::engine::DEFAULT_CHANNEL);
        let channels = match only_api {
            true => Vec::new(),
            false => (0..self.channels.len())
                .map(|i| {
                    let mine = || with_turns().filter(move |s| s.channel == Some(i));
                    let conversations = mine().count() as u64;
                    let handed = mine().filter(|s| s.handed.is_some()).count() as u64;
                    channel_figures(&self.channels[i], conversations, handed)
                })
                .collect(),
        };
        let never_hit = options.unused.as_ref().map(|unused| {
            NeverHit::of(&unused.catalog, unused.days, self.to, |kind, name| {
                self.hits.last_hit(kind, name)
            })
        });
        Report {
            hits: self.hits.finish(),
            proactive: self.proactive.finish(),
            never_hit,
            from: self.from.map(|t| t.to_rfc3339()),
            to: self.to.map(|t| t.to_rfc3339()),
            sessions,
            turns,
            matrix,
            sources,
            intents,
            segments,
            first_contact_resolution: fcr,
            satisfaction,
            handoffs,
            safety,
            latency_histogram: histogram(&all),
            latency_ms,
            model,
            timeline,
            versions,
            channels,
            agents: Agents {
                by_agent: agents_of(self.agents),
                by_group: agents_of(self.groups),
            },
            read,
        }
    }
}

fn version_figures(v: &VersionTally) -> VersionFigures {
    let turns: u64 = v.sources.iter().sum();
    let of = |sources: &[AnswerSource]| sources.iter().map(|s| v.sources[source_index(*s)]).sum::<u64>();
    use AnswerSource::*;
    let time = |t: Option<DateTime<FixedOffset>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    VersionFigures {
        version: v.version.clone(),
        from: time(v.from),
        to: time(v.to),
        turns,
        rules: share(of(&[Rule, Flow, Promotion, Context]), turns),
        faq: share(of(&[Faq]), turns),
        model: share(of(&[Llm]), turns),
        handoffs: Rate::new(v.handoffs, turns),
        fallbacks: Rate::new(of(&[Fallback]), turns),
        feedback: v.scores,
        feedback_mean: (v.scores > 0).then(|| v.score_sum as f64 / v.scores as f64),
        errors: Rate::new(v.errors, turns),
    }
}

fn channel_figures(c: &ChannelTally, conversations: u64, handed: u64) -> ChannelFigures {
    let turns: u64 = c.sources.iter().sum();
    let of = |sources: &[AnswerSource]| sources.iter().map(|s| c.sources[source_index(*s)]).sum::<u64>();
    use AnswerSource::*;
    ChannelFigures {
        channel: c.channel.clone(),
        turns,
        conversations,
        rules: share(of(&[Rule, Flow, Promotion, Context]), turns),
        faq: share(of(&[Faq]), turns),
        model: share(of(&[Llm]), turns),
        fallbacks: Rate::new(of(&[Fallback]), turns),
        handoffs: Rate::new(handed, conversations),
        feedback: c.scores,
        feedback_mean: (c.scores > 0).then(|| c.score_sum as f64 / c.scores as f64),
    }
}

fn share(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

fn count(name: &str, n: u64, of: u64) -> Count {
    Count {
        name: name.to_string(),
        count: n,
        share: share(n, of),
    }
}

/// Most frequent first, then by name, so equal counts always come out in one order.
fn sort_counts(counts: &mut [Count]) {
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
}

fn counts(map: HashMap<String, u64>, of: u64) -> Vec<Count> {
    let mut out: Vec<Count> = map.iter().map(|(name, &n)| count(name, n, of)).collect();
    sort_counts(&mut out);
    out
}

/// The nearest-rank percentile of sorted values: the smallest with at least `p`% of the
/// values at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency(source: &str, sorted: &[f64]) -> Latency {
    Latency {
        source: source.to_string(),
        turns: sorted.len() as u64,
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        p50: percentile(sorted, 50.0),
        p90: percentile(sorted, 90.0),
        p99: percentile(sorted, 99.0),
        max: sorted.last().copied().unwrap_or(0.0),
    }
}

/// Quarter-decade bins (1, 1.78, 3.16, 5.62, 10...) from 1 µs up, empty ends trimmed.
fn histogram(sorted: &[f64]) -> Vec<Bin> {
    const LOWEST: i32 = -12; // 10^(-12/4) ms = 1 µs
    const HIGHEST: i32 = 24; // 10^(24/4) ms: 1,000 s
    let edge = |k: i32| 10f64.powf(f64::from(k) / 4.0);
    let mut bins: Vec<Bin> = (LOWEST..HIGHEST)
        .map(|k| Bin {
            from_ms: edge(k),
            to_ms: edge(k + 1),
            count: 0,
        })
        .collect();
    for &ms in sorted {
        let k = ((ms.max(1e-9).log10() * 4.0).floor() as i32).clamp(LOWEST, HIGHEST - 1);
        bins[(k - LOWEST) as usize].count += 1;
    }
    let first = bins.iter().position(|b| b.count > 0).unwrap_or(0);
    let last = bins.iter().rposition(|b| b.count > 0).map_or(0, |i| i + 1);
    bins.drain(first..last.max(first)).collect()
}

/// Buckets of 1, 5, 15, 30 minutes, 1, 3, 6, 12 hours or days: the narrowest that makes at
/// most 48.
fn timeline(minutes: &BTreeMap<i64, [u64; SOURCES.len()]>, offset: Option<FixedOffset>) -> Timeline {
    let used: Vec<usize> = (0..SOURCES.len())
        .filter(|&i| minutes.values().any(|c| c[i] > 0))
        .collect();
    let (Some((&first, _)), Some((&last, _)), Some(offset)) =
        (minutes.first_key_value(), minutes.last_key_value(), offset)
    else {
        return Timeline {
            bucket_minutes: 60,
            sources: Vec::new(),
            buckets: Vec::new(),
        };
    };
    let width = [1, 5, 15, 30, 60, 180, 360, 720, 1440]
        .into_iter()
        .find(|w| (last.div_euclid(*w) - first.div_euclid(*w)) < 48)
        .unwrap_or(1440 * ((last - first) / (1440 * 47) + 1));
    let start = first.div_euclid(width);
    let mut buckets: Vec<Bucket> = (start..=last.div_euclid(width))
        .map(|b| {
            // Minutes are counted in local time; label them as such.
            let local = offset.timestamp_opt(b * width * 60 - i64::from(offset.local_minus_utc()), 0);
            Bucket {
                start: local
                    .single()
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default(),
                counts: vec![0; used.len()],
            }
        })
        .collect();
    for (minute, counts) in minutes {
        let bucket = &mut buckets[(minute.div_euclid(width) - start) as usize];
        for (slot, &i) in used.iter().enumerate() {
            bucket.counts[slot] += counts[i];
        }
    }
    Timeline {
        bucket_minutes: width as u32,
        sources: used.iter().map(|&i| SOURCES[i].name().to_string()).collect(),
        buckets,
    }
}

/// Reads the log `files` and computes the report.
pub fn report(files: &[PathBuf], options: &ReportOptions) -> Result<Report, DataError> {
    let mut tally = Tally::default();
    let read = super::read(files, |record, _| tally.add(record))?;
    Ok(tally.finish(options, read))
}

/// Computes the report of records already in memory (tests, tools).
pub fn report_of(records: impl IntoIterator<Item = Record>, options: &ReportOptions) -> Report {
    let mut tally = Tally::default();
    for record in records {
        tally.add(record);
    }
    tally.finish(options, ReadStats::default())
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `text` padded with spaces to `width` terminal columns (a Chinese character takes two).
pub(super) fn pad(text: &str, width: usize) -> String {
    let used = unicode_width::UnicodeWidthStr::width(text);
    format!("{text}{}", " ".repeat(width.saturating_sub(used)))
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), pct)
}

/// Milliseconds with the precision that matters at their size.
pub fn ms(x: f64) -> String {
    if x < 1.0 {
        format!("{x:.3}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// Writes what a read went through (`read N lines from N files`) and its bad lines.
pub fn write_read(f: &mut impl fmt::Write, read: &ReadStats) -> fmt::Result {
    writeln!(
        f,
        "read {} lines from {} file{}",
        thousands(read.lines),
        read.files,
        if read.files == 1 { "" } else { "s" }
    )?;
    write_bad_lines(f, read)
}

/// Writes the bad-line summary of a read (nothing when there were none).
pub fn write_bad_lines(f: &mut impl fmt::Write, read: &ReadStats) -> fmt::Result {
    if read.bad_lines == 0 {
        return Ok(());
    }
    writeln!(f, "{} bad lines (not records), skipped:", thousands(read.bad_lines))?;
    for bad in &read.bad {
        writeln!(f, "  {}:{}: {}", bad.file, bad.line, bad.error)?;
    }
    if read.bad_lines > read.bad.len() as u64 {
        writeln!(f, "  ... and {} more", read.bad_lines - read.bad.len() as u64)?;
    }
    Ok(())
}

/// How many intents the text shows.
const TOP_INTENTS: usize = 15;

/// How many items of each kind the text's hit counts show.
const TOP_HITS: usize = 10;

/// How a kind's items are called in the text: one, several.
fn kind_words(kind: HitKind) -> (&'static str, &'static str) {
    match kind {
        HitKind::Rule => ("rule", "rules"),
        HitKind::Promotion => ("promotion", "promotions"),
        HitKind::FlowStep => ("flow step", "flow steps"),
        HitKind::Faq => ("FAQ entry", "FAQ entries"),
    }
}

fn counted(n: usize, kind: HitKind) -> String {
    let (one, many) = kind_words(kind);
    format!("{} {}", thousands(n as u64), if n == 1 { one } else { many })
}

/// The hit counts: per kind, its turns and the most hit items.
fn write_hits(o: &mut String, hits: &Hits) -> fmt::Result {
    writeln!(
        o,
        "\nhits (turns, conversations, last hit; the top {TOP_HITS} of each kind)"
    )?;
    for kind in HitKind::ALL {
        let list = hits.get(kind);
        writeln!(
            o,
            "  {}: {} turn{}, {} hit",
            kind_words(kind).1,
            thousands(list.turns),
            if list.turns == 1 { "" } else { "s" },
            counted(list.items.len(), kind)
        )?;
        for hit in list.items.iter().take(TOP_HITS) {
            // `2026-12-06T09:00:00+08:00` → `2026-12-06 09:00`.
            let last = hit.last.get(..16).unwrap_or(&hit.last).replacen('T', " ", 1);
            writeln!(
                o,
                "    {} {:>9} {:>7}  {last}",
                pad(&hit.name, 30),
                thousands(hit.turns),
                thousands(hit.conversations)
            )?;
        }
    }
    Ok(())
}

/// The items not hit lately, all of them.
fn write_never_hit(o: &mut String, never: &NeverHit) -> fmt::Result {
    let since = never.since.as_deref().and_then(|s| s.get(..10)).unwrap_or("-");
    let counts: Vec<String> = HitKind::ALL
        .iter()
        .map(|&kind| counted(never.items.get(kind).len(), kind))
        .collect();
    writeln!(
        o,
        "\nnot hit in the last {} days (since {since}): {}",
        never.days,
        counts.join(", ")
    )?;
    for kind in HitKind::ALL {
        let names = never.items.get(kind);
        if !names.is_empty() {
            writeln!(o, "  {}: {}", kind_words(kind).1, names.join(", "))?;
        }
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let o = &mut out;
        writeln!(
            o,
            "{} turns in {} sessions, {} to {}",
            thousands(self.turns),
            thousands(self.sessions),
            self.from.as_deref().unwrap_or("-"),
            self.to.as_deref().unwrap_or("-")
        )?;
        write_read(o, &self.read)?;

        writeln!(o, "\nevaluation matrix                    value   target")?;
        for t in &self.matrix {
            let value = match (t.value, t.name.starts_with("cost")) {
                (None, _) => "-".to_string(),
                (Some(v), true) => format!("{v:.4}"),
                (Some(v), false) if t.name.starts_with("first") => pct(v),
                (Some(v), false) => format!("{v:.2}"),
            };
            let met = match t.met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "",
            };
            let line = format!("  {} {:>9}   {:<8} {met}", pad(&t.name, 30), value, t.target);
            writeln!(o, "{}", line.trim_end())?;
        }

        writeln!(o, "\nanswers by source")?;
        for c in &self.sources {
            writeln!(
                o,
                "  {} {:>9} {:>7}",
                pad(&c.name, 12),
                thousands(c.count),
                pct(c.share)
            )?;
        }

        writeln!(
            o,
            "\nintents ({} of {}, mean confidence)",
            self.intents.len().min(TOP_INTENTS),
            self.intents.len()
        )?;
        for i in self.intents.iter().take(TOP_INTENTS) {
            writeln!(
                o,
                "  {} {:>9} {:>7}  {:.2}",
                pad(&i.name, 24),
                thousands(i.count),
                pct(i.share),
                i.mean_confidence
            )?;
        }
        if !self.segments.is_empty() {
            let segments: Vec<String> = self
                .segments
                .iter()
                .map(|c| format!("{} {}", c.name, pct(c.share)))
                .collect();
            writeln!(o, "  customer segments (share of turns): {}", segments.join(", "))?;
        }

        let fcr = &self.first_contact_resolution;
        writeln!(
            o,
            "\nfirst-contact resolution: {} of {} sessions ({}) without a handoff",
            thousands(fcr.count),
            thousands(fcr.of),
            opt_pct(fcr.rate)
        )?;
        let h = &self.handoffs;
        writeln!(
            o,
            "handoffs: {} sessions ({}): {} by the bot, {} taken over by an agent; {} agent answers",
            thousands(h.sessions.count),
            opt_pct(h.sessions.rate),
            thousands(h.by_bot),
            thousands(h.by_agent),
            thousands(h.agent_replies)
        )?;
        for c in &h.reasons {
            writeln!(
                o,
                "  {} {:>7} {:>7}",
                pad(&c.name, 30),
                thousands(c.count),
                pct(c.share)
            )?;
        }

        let s = &self.satisfaction;
        match s.mean {
            Some(mean) => writeln!(
                o,
                "\nsatisfaction: {} scores from {} sessions, mean {mean:.2}, 4 or 5: {}",
                thousands(s.scores),
                thousands(s.sessions),
                opt_pct(s.share_4_or_5)
            )?,
            None => writeln!(o, "\nsatisfaction: no scores")?,
        }
        if s.scores > 0 {
            let counts: Vec<String> = s
                .by_score
                .iter()
                .zip(1..)
                .map(|(n, score)| format!("{score}: {}", thousands(*n)))
                .collect();
            writeln!(o, "  {}", counts.join("  "))?;
        }

        let safety = &self.safety;
        writeln!(
            o,
            "\nsafety: {} turns with findings ({}), {} blocked",
            thousands(safety.turns.count),
            opt_pct(safety.turns.rate),
            thousands(safety.blocked)
        )?;
        for c in &safety.findings {
            writeln!(o, "  {} {:>7}", pad(&c.name, 30), thousands(c.count))?;
        }

        writeln!(
            o,
            "\nlatency (ms; exact nearest-rank percentiles)\n  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "turns", "mean", "p50", "p90", "p99", "max"
        )?;
        for l in &self.latency_ms {
            writeln!(
                o,
                "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                l.source,
                thousands(l.turns),
                ms(l.mean),
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.max)
            )?;
        }

        if self.versions.len() > 1 {
            writeln!(
                o,
                "\nrules versions (share of turns answered by rules, FAQ, model; rates per turn)\n  {:<14} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7}",
                "version", "turns", "rules", "faq", "model", "handoffs", "fallbacks", "feedback", "errors"
            )?;
            for v in &self.versions {
                let feedback = v
                    .feedback_mean
                    .map_or_else(|| "-".into(), |m| format!("{m:.2} ({})", v.feedback));
                writeln!(
                    o,
                    "  {:<14} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7}",
                    v.version,
                    thousands(v.turns),
                    pct(v.rules),
                    pct(v.faq),
                    pct(v.model),
                    opt_pct(v.handoffs.rate),
                    opt_pct(v.fallbacks.rate),
                    feedback,
                    opt_pct(v.errors.rate)
                )?;
            }
        }

        if !self.channels.is_empty() {
            writeln!(
                o,
                "\nchannels (share of turns answered by rules, FAQ, model; fallbacks per turn, handoffs per conversation)\n  {:<14} {:>8} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9}",
                "channel", "turns", "convs", "rules", "faq", "model", "fallbacks", "handoffs", "feedback"
            )?;
            for c in &self.channels {
                let feedback = c
                    .feedback_mean
                    .map_or_else(|| "-".into(), |m| format!("{m:.2} ({})", c.feedback));
                writeln!(
                    o,
                    "  {:<14} {:>8} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9}",
                    c.channel,
                    thousands(c.turns),
                    thousands(c.conversations),
                    pct(c.rules),
                    pct(c.faq),
                    pct(c.model),
                    opt_pct(c.fallbacks.rate),
                    opt_pct(c.handoffs.rate),
                    feedback
                )?;
            }
        }

        if !self.agents.is_empty() {
            let spread = |s: &Spread| match (s.p50, s.p90) {
                (Some(p50), Some(p90)) => format!("{p50:.0}/{p90:.0}"),
                _ => "-".into(),
            };
            writeln!(
                o,
                "\nagents (seconds, p50/p90; satisfaction: mean score of conversations they served last)\n  {:<16} {:>6} {:>15} {:>15} {:>15} {:>12}",
                "", "served", "first response", "handling", "waiting", "satisfaction"
            )?;
            for (title, rows) in [("agent", &self.agents.by_agent), ("queue", &self.agents.by_group)] {
                for a in rows.iter() {
                    let satisfaction = a
                        .satisfaction
                        .map_or_else(|| "-".into(), |m| format!("{m:.2} ({})", a.scores));
                    writeln!(
                        o,
                        "  {:<16} {:>6} {:>15} {:>15} {:>15} {:>12}",
                        format!("{title} {}", a.name),
                        thousands(a.conversations),
                        spread(&a.first_response),
                        spread(&a.handling),
                        spread(&a.waiting),
                        satisfaction
                    )?;
                }
            }
        }

        super::proactive::write_text(o, &self.proactive)?;
        write_hits(o, &self.hits)?;
        if let Some(never) = &self.never_hit {
            write_never_hit(o, never)?;
        }

        let m = &self.model;
        writeln!(
            o,
            "\nmodel: {} turns, {} prompt + {} generated tokens, {} tokens per conversation",
            thousands(m.turns),
            thousands(m.prompt_tokens),
            thousands(m.completion_tokens),
            m.tokens_per_conversation
                .map_or_else(|| "-".into(), |t| format!("{t:.1}"))
        )?;
        writeln!(
            o,
            "  estimated cost {:.4} 元, {} 元 per conversation (per 1k tokens: prompt {} 元, generated {} 元)",
            m.cost,
            m.cost_per_conversation
                .map_or_else(|| "-".into(), |c| format!("{c:.4}")),
            m.price_prompt_per_1k,
            m.price_completion_per_1k
        )?;
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 99.5), 100.0);
        assert_eq!(percentile(&[7.0], 1.0), 7.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), 2.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn histogram_bins_are_quarter_decades_without_empty_ends() {
        let bins = histogram(&[0.06, 0.07, 1.0, 1500.0]);
        assert_eq!(bins.first().map(|b| b.count), Some(2));
        assert!((bins[0].from_ms - 10f64.powf(-1.25)).abs() < 1e-12);
        assert_eq!(bins.last().map(|b| b.count), Some(1));
        assert_eq!(bins.iter().map(|b| b.count).sum::<u64>(), 4);
        assert!(bins.windows(2).all(|w| (w[0].to_ms - w[1].from_ms).abs() < 1e-12));
    }

    #[test]
    fn agents_are_figured_per_agent_and_queue_from_the_holds_that_ended() {
        let records = [
            r#"{"kind":"turn","ts":"2026-12-06T09:00:00+08:00","session":"a","turn":1,"message":"投诉","reply":"转接","source":"handoff","confidence":0.9,"latency_ms":1,"rules":"v1","handoff":"客户投诉"}"#,
            r#"{"kind":"takeover","ts":"2026-12-06T09:01:00+08:00","session":"a","agent":"小王","handoff_kind":"anger","group":"售后","waited_ms":60000}"#,
            r#"{"kind":"release","ts":"2026-12-06T09:05:00+08:00","session":"a","agent":"小王","group":"售后","waited_ms":60000,"first_response_ms":90000,"handled_ms":240000}"#,
            r#"{"kind":"feedback","ts":"2026-12-06T09:06:00+08:00","session":"a","score":4}"#,
            r#"{"kind":"takeover","ts":"2026-12-06T10:00:00+08:00","session":"b","agent":"小李","handoff_kind":"agent"}"#,
            r#"{"kind":"resolve","ts":"2026-12-06T10:02:00+08:00","session":"b","outcome":"已退款","agent":"小李","first_response_ms":10000,"handled_ms":120000}"#,
            r#"{"kind":"feedback","ts":"2026-12-06T10:03:00+08:00","session":"b","score":2,"agent":"小李"}"#,
            r#"{"kind":"note","ts":"2026-12-06T10:03:00+08:00","session":"b","agent":"小李","text":"已退"}"#,
            r#"{"kind":"requeue","ts":"2026-12-06T10:04:00+08:00","session":"c","agent":"小李"}"#,
        ];
        let report = report_of(
            records.iter().map(|r| serde_json::from_str::<Record>(r).unwrap()),
            &ReportOptions::default(),
        );
        let wang = report.agents.by_agent.iter().find(|a| a.name == "小王").unwrap();
        assert_eq!(wang.conversations, 1);
        assert_eq!(wang.first_response.p50, Some(90.0));
        assert_eq!(wang.handling.p90, Some(240.0));
        assert_eq!(wang.waiting.p50, Some(60.0));
        assert_eq!(wang.satisfaction, Some(4.0));
        let li = report.agents.by_agent.iter().find(|a| a.name == "小李").unwrap();
        assert_eq!((li.conversations, li.satisfaction, li.waiting.count), (1, Some(2.0), 0));
        let groups: Vec<&str> = report.agents.by_group.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(groups, ["none", "售后"]);
        let text = report.to_string();
        assert!(text.contains("agent 小王") && text.contains("90/90"), "{text}");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(ms(0.0421), "0.042");
        assert_eq!(ms(12.34), "12.3");
        assert_eq!(ms(1512.4), "1512");
        assert_eq!(pad("退货", 6), "退货  ");
    }

    #[test]
    fn a_period_reads_only_the_files_that_can_hold_it_and_counts_by_hour() {
        let dir = tempfile::tempdir().unwrap();
        let turn = |ts: &str, source: &str, handoff: Option<&str>, ms: f64| {
            serde_json::json!({
                "kind": "turn", "ts": ts, "session": ts, "turn": 1, "message": "在吗", "reply": "在的",
                "source": source, "confidence": 0.9, "latency_ms": ms, "rules": "v1", "handoff": handoff,
            })
            .to_string()
        };
        let day = [
            turn("2026-12-06T09:10:00+08:00", "rule", None, 2.0),
            turn("2026-12-06T09:20:00+08:00", "faq", None, 4.0),
            turn("2026-12-06T09:30:00+08:00", "rule", Some("客户投诉"), 6.0),
            turn("2026-12-06T11:00:00+08:00", "llm", None, 100.0),
            // The next day: in the file, outside the period.
            turn("2026-12-07T00:00:00+08:00", "rule", None, 1.0),
        ];
        std::fs::write(dir.path().join("conversations-2026-12-06-000.jsonl"), day.join("\n")).unwrap();
        // Another year: never opened (it is not even a log).
        std::fs::write(dir.path().join("conversations-2025-01-01-000.jsonl"), "not json\n").unwrap();
        let files = super::super::writer::log_files(dir.path()).unwrap();
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap();
        let (report, hours) = report_between(
            &files,
            at("2026-12-06T00:00:00+08:00"),
            at("2026-12-07T00:00:00+08:00"),
            chrono_tz::Asia::Shanghai,
            &ReportOptions::default(),
        )
        .unwrap();
        assert_eq!(report.read.files, 1);
        assert_eq!(report.read.bad_lines, 0);
        assert_eq!(report.turns, 4);
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[9].hour, "2026-12-06T09:00:00+08:00");
        let nine = &hours[9];
        assert_eq!(
            (nine.turns, nine.rule, nine.faq, nine.handoff, nine.model),
            (3, 1, 1, 1, 0)
        );
        assert_eq!((nine.p50_ms, nine.p95_ms), (Some(4.0), Some(6.0)));
        assert_eq!((hours[11].model, hours[10].turns, hours[10].p50_ms), (1, 0, None));
    }
}

/// One hour of a period's turns (the console's charts).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hour {
    /// Its start, RFC 3339 in the shop's time zone.
    pub hour: String,
    /// Customer turns (messages queued for an agent left out, as in the report).
    pub turns: u64,
    /// Turns answered by the rules: a rule, flow, promotion or short reply; not handed off.
    pub rule: u64,
    /// Turns answered by the knowledge base's FAQ; not handed off.
    pub faq: u64,
    /// Turns answered by the model; not handed off.
    pub model: u64,
    /// Turns handed to a person (whatever answered them).
    pub handoff: u64,
    /// The rest: cache hits, fallbacks, safety, greetings of the card... (`turns` is the
    /// sum of the five).
    pub other: u64,
    /// The median latency, `None` for an hour without turns.
    pub p50_ms: Option<f64>,
    /// The 95th percentile latency.
    pub p95_ms: Option<f64>,
}

/// The report of the records in `[since, until)` of the log `files` (the writer's names,
/// `conversations-YYYY-MM-DD-NNN.jsonl`, days in `zone`): only files whose day can hold
/// the period are read (a day of margin each side; a file named otherwise is read), so a
/// day's report over a year of logs reads a day's files. With it, the period's turns hour
/// by hour in `zone`.
pub fn report_between(
    files: &[PathBuf],
    since: DateTime<FixedOffset>,
    until: DateTime<FixedOffset>,
    zone: chrono_tz::Tz,
    options: &ReportOptions,
) -> Result<(Report, Vec<Hour>), DataError> {
    let wanted = super::writer::files_between(files, since, until, zone);
    let start = since.with_timezone(&zone);
    let hours = ((until - since).num_hours().max(0) as usize + 1).min(24 * 366);
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); hours];
    let mut counts = vec![[0u64; 5]; hours];
    let mut tally = Tally::default();
    let read = super::read(&wanted, |record, _| {
        let ts = record.ts();
        if ts < since || ts >= until {
            return;
        }
        if let Record::Turn(turn) = &record
            && turn.source != AnswerSource::Human
        {
            let slot = ((ts - since).num_seconds() / 3600) as usize;
            if let (Some(c), Some(l)) = (counts.get_mut(slot), latencies.get_mut(slot)) {
                use AnswerSource::*;
                let column = match turn.source {
                    _ if turn.handoff.is_some() => 3,
                    Rule | Flow | Promotion | Context => 0,
                    Faq => 1,
                    Llm => 2,
                    _ => 4,
                };
                c[column] += 1;
                l.push(turn.latency_ms);
            }
        }
        tally.add(record);
    })?;
    let report = tally.finish(options, read);
    let series = counts
        .iter()
        .zip(latencies.iter_mut())
        .enumerate()
        .filter(|(i, _)| since + chrono::Duration::hours(*i as i64) < until)
        .map(|(i, (c, l))| {
            l.sort_by(f64::total_cmp);
            let at = |p| (!l.is_empty()).then(|| percentile(l, p));
            Hour {
                hour: (start + chrono::Duration::hours(i as i64)).to_rfc3339(),
                turns: c.iter().sum(),
                rule: c[0],
                faq: c[1],
                model: c[2],
                handoff: c[3],
                other: c[4],
                p50_ms: at(50.0),
                p95_ms: at(95.0),
            }
        })
        .collect();
    Ok((report, series))
}
