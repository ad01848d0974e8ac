//! What-if replay (`kefu replay`): the customer turns of logged conversations answered
//! again by a draft of the rules and by the base they were answered with, and what
//! changed, grouped by kind of change.
//!
//! ```text
//! conversation log ──read──▶ conversations (by session, in time order)
//!     each turn ──▶ draft engine ─┐
//!               └─▶ base engine ──┴─▶ compare: answerer, handoff, reply ──▶ ReplayReport
//! ```
//!
//! **Faithful to the turn.** Each session is replayed in order through two engines of its
//! own (in-memory sessions, answer cache off so a second asking of a question is answered
//! as the first was), with the turn's logged message (masked, as the log keeps it), the
//! customer's profile and context maps, and the turn's original time as `as_of`: a
//! promotion is judged on or off as of then, a flow's timeout against the turn's own gaps.
//! An agent's takeover, answers and release in the log are applied to both engines in
//! their place, so the bot stays silent where it did. A blocked message is skipped: the
//! log keeps only the fact of the block, not the words.
//!
//! **The base.** The caller resolves a turn's recorded rules version (`TurnRecord::rules`)
//! to a rule set (`kefu replay --base DIR` gives one for every turn; the version store
//! will give the recorded version). When a turn's base cannot be had, the draft is
//! compared with the logged answer itself, and the report counts those turns
//! (`against_log`). The base engine swaps rule sets as the recorded version changes in a
//! conversation (a reload mid-conversation), keeping the conversation's state.
//!
//! **The model is not asked.** Turns that would go to the model are reported as such,
//! `model (not generated)`: the engines get [`NotGenerated`], a backend that notes it was
//! asked and answers a placeholder. A real backend (`--model`, `--mock-llm`) generates.
//!
//! **What changed**, per turn, in this order (a turn counts once, under the first): the
//! answerer (source and the rule, promotion, flow and step — its line number aside —, or
//! FAQ entry: `rule 退货政策 → faq 七天无理由`), the handoff (`handoff added: 客户投诉`),
//! the reply's text (`reply text changed in rule 发货时间`). Each group keeps its first
//! examples (session, turn, time, masked message, before and after).
//!
//! Bad lines are counted with their file and line and skipped, as every reader of the
//! log does; only a file that cannot be read stops a replay.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use super::record::{Record, TurnRecord};
use super::report::{thousands, write_read};
use super::{DataError, ReadStats};
use crate::engine::{AnswerSource, EngineConfig, TurnResponse};
use crate::llm::{GenerateRequest, Generation, LlmBackend, LlmError};
use crate::store::MemoryStore;
use crate::{Engine, RuleSet, TurnRequest};

/// Gives the base rule set for a turn from the rules version recorded on it; `None` when
/// there is none (the turn is then compared with its logged answer).
pub type BaseResolver<'a> = &'a dyn Fn(&str) -> Option<Arc<RuleSet>>;

/// How to replay.
#[derive(Clone)]
pub struct ReplayOptions {
    /// Examples kept per group of changes.
    pub examples: usize,
    /// Only records at or after this time.
    pub since: Option<DateTime<FixedOffset>>,
    /// Only records before this time.
    pub until: Option<DateTime<FixedOffset>>,
    /// A model that generates; `None`: model turns are reported, not generated.
    pub model: Option<Arc<dyn LlmBackend>>,
}

impl Default for ReplayOptions {
    /// Five examples a group, every record, no model.
    fn default() -> Self {
        ReplayOptions {
            examples: 5,
            since: None,
            until: None,
            model: None,
        }
    }
}

/// What the customer would see from one answer, as replay compares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// What answered: `rule`, `flow`, `promotion`, `faq`, `model`, `fallback`, `handoff`,
    /// `context`, `safety`, `human` (a cached answer counts as the FAQ entry or the model
    /// answer it is).
    pub source: String,
    /// The model was asked but not run: the reply is a placeholder.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub not_generated: bool,
    /// The rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The promotion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<String>,
    /// The flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// The flow's step (`ask order_id@12`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The FAQ entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faq: Option<String>,
    /// Why the conversation went to a person, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
    /// The reply, masked (empty for a model answer not generated).
    pub reply: String,
}

impl Outcome {
    /// The outcome of a replayed turn; `asked` when the not-generating model was asked.
    fn of_response(r: &TurnResponse, asked: bool) -> Outcome {
        // The placeholder, or the fallback after it was withheld: either way the turn
        // went to the model, and what the model would say is unknown.
        if asked && !by_items(r.source, r.faq.is_some()) {
            return Outcome::not_generated();
        }
        Outcome {
            source: source_name(r.source, r.faq.is_some(), r.rule.is_some(), r.flow.is_some()).into(),
            not_generated: false,
            rule: r.rule.clone(),
            promotion: r.promotion.clone(),
            flow: r.flow.clone(),
            step: r.step.clone(),
            faq: r.faq.clone(),
            handoff: r.handoff.as_ref().map(|h| h.reason.clone()),
            reply: r.reply.clone(),
        }
    }

    /// A turn that went to a model that was not run.
    fn not_generated() -> Outcome {
        Outcome {
            source: "model".into(),
            not_generated: true,
            rule: None,
            promotion: None,
            flow: None,
            step: None,
            faq: None,
            handoff: None,
            reply: String::new(),
        }
    }

    /// The outcome the log recorded.
    fn of_record(r: &TurnRecord) -> Outcome {
        // Tokens spent and no item answered: the model was asked (and, when the source is
        // the fallback, its answer withheld), as a replay's model is.
        if r.prompt_tokens + r.completion_tokens > 0 && !by_items(r.source, r.faq.is_some()) {
            return Outcome {
                source: "model".into(),
                reply: if r.source == AnswerSource::Llm {
                    r.reply.clone()
                } else {
                    String::new()
                },
                ..Outcome::not_generated()
            }
            .generated();
        }
        Outcome {
            source: source_name(r.source, r.faq.is_some(), r.rule.is_some(), r.flow.is_some()).into(),
            not_generated: false,
            rule: r.rule.clone(),
            promotion: r.promotion.clone(),
            flow: r.flow.clone(),
            step: r.step.clone(),
            faq: r.faq.clone(),
            handoff: r.handoff.clone(),
            reply: r.reply.clone(),
        }
    }

    /// Who answered, for people: `rule 退货政策`, `flow 退货申请 ask order_id`, `faq
    /// 七天无理由`, `model (not generated)`, `fallback`.
    pub fn answerer(&self) -> String {
        let mut out = String::new();
        if let Some(rule) = &self.rule {
            let _ = write!(out, "rule {rule}");
        } else if let Some(promotion) = &self.promotion {
            let _ = write!(out, "promotion {promotion}");
        } else if let Some(flow) = &self.flow {
            let _ = write!(out, "flow {flow}");
            if let Some(step) = &self.step {
                let _ = write!(out, " {}", step_name(step));
            }
        } else if let Some(faq) = &self.faq {
            let _ = write!(out, "faq {faq}");
        } else {
            out.push_str(&self.source);
            if self.not_generated {
                out.push_str(" (not generated)");
            }
        }
        out
    }

    /// Whether the same thing answered (a flow step's line number aside: an edit above
    /// it moves it; a model answer generated or not).
    fn same_answerer(&self, other: &Outcome) -> bool {
        self.source == other.source
            && self.rule == other.rule
            && self.promotion == other.promotion
            && self.flow == other.flow
            && self.faq == other.faq
            && self.step.as_deref().map(step_name) == other.step.as_deref().map(step_name)
    }
}

impl Outcome {
    fn generated(mut self) -> Outcome {
        self.not_generated = false;
        self
    }
}

/// Whether an item of the rules answered (not the model, the fallback or a handoff):
/// a rule, flow, promotion, FAQ entry (cached or not), short-reply answer, the safety
/// filter or a person.
fn by_items(source: AnswerSource, faq: bool) -> bool {
    matches!(
        source,
        AnswerSource::Rule
            | AnswerSource::Flow
            | AnswerSource::Promotion
            | AnswerSource::Faq
            | AnswerSource::Context
            | AnswerSource::Safety
            | AnswerSource::Human
    ) || (source == AnswerSource::Cache && faq)
}

/// Whether two replies say the same, ticket numbers aside (`T20261111-000033`: numbered
/// in the order tickets are raised, so one more ticket early in a replay renumbers every
/// later one).
fn same_reply(a: &str, b: &str) -> bool {
    static TICKET: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"T\d{8}-\d{6}").expect("a valid pattern"));
    a == b || TICKET.replace_all(a, "T…") == TICKET.replace_all(b, "T…")
}

/// A source's name as replay compares it: cached answers are what they cached, and a
/// rule or flow step that hands the conversation over is still that rule or flow (the
/// handoff is compared on its own).
fn source_name(source: AnswerSource, faq: bool, rule: bool, flow: bool) -> &'static str {
    match source {
        AnswerSource::Handoff if rule => "rule",
        AnswerSource::Handoff if flow => "flow",
        AnswerSource::Cache if faq => "faq",
        AnswerSource::Cache | AnswerSource::Llm => "model",
        other => other.name(),
    }
}

/// A flow step without its line (`ask order_id@12` → `ask order_id`).
fn step_name(step: &str) -> &str {
    step.rsplit_once('@').map_or(step, |(name, _)| name)
}

/// The kind of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Something else answers (source, rule, promotion, flow step or FAQ entry).
    Answer,
    /// The same answerer; the conversation goes to a person where it did not, or no
    /// longer does, or for another reason.
    Handoff,
    /// The same answerer and handoff; the reply's text differs.
    Reply,
}

/// One turn that changed, as an example of its group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Example {
    /// The conversation.
    pub session: String,
    /// The turn's place in the conversation's replayed turns (1 is its first message).
    pub turn: u32,
    /// When it was answered (RFC 3339), the time it was replayed as of.
    pub time: String,
    /// The customer's message, masked as the log keeps it.
    pub message: String,
    /// The base's answer (or the logged one).
    pub before: Outcome,
    /// The draft's answer.
    pub after: Outcome,
}

/// Turns that changed the same way.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChangeGroup {
    /// The kind of change.
    pub kind: ChangeKind,
    /// What changed, for people: `rule 退货政策 → faq 七天无理由`, `handoff added:
    /// 客户投诉`, `reply text changed in rule 发货时间`.
    pub change: String,
    /// Turns that changed so.
    pub count: u64,
    /// The first of them.
    pub examples: Vec<Example>,
}

/// What a replay found: serializable for the admin API.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReplayReport {
    /// The draft's rules version.
    pub draft: String,
    /// The base rules versions the turns were compared with.
    pub base: Vec<String>,
    /// Conversations replayed.
    pub sessions: u64,
    /// Customer turns replayed (each through both engines).
    pub turns: u64,
    /// Turns answered the same way.
    pub unchanged: u64,
    /// Turns answered differently (the sum of the groups' counts).
    pub changed: u64,
    /// Turns with no base for their recorded version: the draft was compared with the
    /// logged answer.
    pub against_log: u64,
    /// Turns the draft or the base sent to the model.
    pub model_turns: u64,
    /// Whether model turns were generated (a model was given) or only reported.
    pub generated: bool,
    /// Turns where the draft hands the conversation to a person and the base did not
    /// (messages queued for the agent afterwards not counted).
    pub handoffs_added: u64,
    /// Turns where the base handed the conversation over and the draft does not (nor
    /// counted: the base's messages queued for the agent).
    pub handoffs_removed: u64,
    /// Turns whose profile or context the log had cut for size (replayed without it).
    pub profile_cut: u64,
    /// Turns not replayed, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Changes grouped by kind, the largest group first.
    pub groups: Vec<ChangeGroup>,
    /// What reading the log found: files, lines, bad lines with their file:line.
    pub read: ReadStats,
}

/// A model backend that generates nothing: it notes that it was asked and answers a
/// placeholder, so a replay shows which turns would go to the model without running it.
#[derive(Default)]
pub struct NotGenerated {
    asked: AtomicBool,
}

/// The placeholder a [`NotGenerated`] model answers.
pub const NOT_GENERATED: &str = "（模型回答，未生成）";

impl NotGenerated {
    /// Whether it was asked since the last call (and forgets it).
    pub fn take_asked(&self) -> bool {
        self.asked.swap(false, Ordering::Relaxed)
    }
}

impl LlmBackend for NotGenerated {
    fn name(&self) -> &str {
        "not generated"
    }

    fn generate(
        &self,
        _request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> std::ops::ControlFlow<()>,
    ) -> Result<Generation, LlmError> {
        self.asked.store(true, Ordering::Relaxed);
        let _ = on_text(NOT_GENERATED);
        // Sure of itself, so the judge lets the placeholder through and the conversation
        // goes on as after an answer (no failure counted towards a fallback handoff).
        Ok(Generation {
            text: NOT_GENERATED.into(),
            mean_prob: 1.0,
            min_prob: 1.0,
            ..Generation::default()
        })
    }
}

/// One thing that happened in a logged conversation, as replay applies it.
#[derive(Clone, Debug)]
enum Step {
    /// A customer turn.
    Turn(Box<TurnRecord>),
    /// An agent took the conversation over.
    Takeover(Option<String>),
    /// An agent answered.
    Agent(String),
    /// The conversation went back to the bot.
    Release,
}

/// A logged conversation, its steps in time order.
#[derive(Clone, Debug)]
pub struct Conversation {
    /// The session id.
    pub session: String,
    steps: Vec<(DateTime<FixedOffset>, u32, Step)>,
}

impl Conversation {
    /// Its customer turns.
    pub fn turns(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s.2, Step::Turn(_))).count()
    }
}

/// Reads the conversations of `files` within the options' time window (a turn's `as_of`
/// when it has one, else its time): grouped by
/// session, each in time order (turns at the same millisecond by their turn count), the
/// sessions by their first record. Bad lines are counted in the stats.
pub fn read_conversations(
    files: &[PathBuf],
    options: &ReplayOptions,
) -> Result<(Vec<Conversation>, ReadStats), DataError> {
    let mut conversations: Vec<Conversation> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let stats = super::read(files, |record, _| {
        let ts = record.ts();
        // A turn answered as of another time (a replay through the API) is in the window
        // of that time.
        let at = match &record {
            Record::Turn(t) => t.as_of.unwrap_or(ts),
            _ => ts,
        };
        if options.since.is_some_and(|s| at < s) || options.until.is_some_and(|u| at >= u) {
            return;
        }
        let (session, order, step) = match record {
            Record::Turn(t) => (t.session.clone(), t.turn, Step::Turn(Box::new(t))),
            Record::Takeover(t) => (t.session, u32::MAX, Step::Takeover(t.agent)),
            Record::Agent(a) => (a.session, u32::MAX, Step::Agent(a.text)),
            Record::Release(r) => (r.session, u32::MAX, Step::Release),
            // A resolution ends the takeover as a release does.
            Record::Resolve(r) => (r.session, u32::MAX, Step::Release),
            // An event and a proactive message are no turn to answer again.
            Record::Feedback(_) | Record::Requeue(_) | Record::Note(_) | Record::Event(_) | Record::Proactive(_) => {
                return;
            }
        };
        let at = match index.get(&session) {
            Some(&at) => at,
            None => {
                index.insert(session.clone(), conversations.len());
                conversations.push(Conversation {
                    session,
                    steps: Vec::new(),
                });
                conversations.len() - 1
            }
        };
        conversations[at].steps.push((ts, order, step));
    })?;
    for c in &mut conversations {
        // Stable: records of one millisecond that are not turns keep the log's order.
        c.steps.sort_by_key(|s| (s.0, s.1));
    }
    conversations.retain(|c| c.steps.iter().any(|s| matches!(s.2, Step::Turn(_))));
    conversations.sort_by(|a, b| (a.steps[0].0, &a.session).cmp(&(b.steps[0].0, &b.session)));
    Ok((conversations, stats))
}

/// Replays the conversations of `files` (see the module docs).
pub fn replay_files(
    files: &[PathBuf],
    draft: Arc<RuleSet>,
    base: BaseResolver<'_>,
    options: &ReplayOptions,
) -> Result<ReplayReport, DataError> {
    let (conversations, read) = read_conversations(files, options)?;
    let mut report = replay(&conversations, draft, base, options);
    report.read = read;
    Ok(report)
}

/// One engine of a replay, and the not-generating model it asks, if any.
struct Side {
    engine: Engine,
    rules: Arc<RuleSet>,
    marker: Option<Arc<NotGenerated>>,
}

impl Side {
    fn new(rules: Arc<RuleSet>, model: Option<&Arc<dyn LlmBackend>>) -> Side {
        let config = EngineConfig {
            answer_cache_capacity: 0,
            ..EngineConfig::default()
        };
        // A conversation is replayed whole before the next: a few sessions kept suffice.
        let store = Arc::new(MemoryStore::new(1024, std::time::Duration::from_secs(86_400)));
        let mut engine = Engine::new(Arc::clone(&rules)).with_config(config).with_sessions(store);
        let mut marker = None;
        match model {
            Some(model) => engine = engine.with_llm(Arc::clone(model)),
            None => {
                let m = Arc::new(NotGenerated::default());
                engine = engine.with_llm(m.clone());
                marker = Some(m);
            }
        }
        Side { engine, rules, marker }
    }

    /// Answers one turn; `None` when the engine failed (an in-memory store never does).
    fn turn(&self, request: TurnRequest) -> Option<Outcome> {
        let response = self.engine.turn(request).ok();
        let asked = self.marker.as_ref().is_some_and(|m| m.take_asked());
        response.map(|r| Outcome::of_response(&r, asked))
    }

    /// Applies an agent's act from the log; refusals (no takeover in this replay) are
    /// what the rules made of the conversation, not errors.
    fn act(&self, session: &str, step: &Step) {
        let _ = match step {
            // What happened is replayed: a takeover from another agent included.
            Step::Takeover(agent) => self.engine.takeover(session, agent.clone(), true).map(drop),
            Step::Agent(text) => self.engine.agent_reply(session, None, text).map(drop),
            Step::Release => self.engine.release(session, None, false).map(drop),
            Step::Turn(_) => Ok(()),
        };
    }
}

/// Group being gathered.
struct Gathering {
    kind: ChangeKind,
    count: u64,
    examples: Vec<Example>,
}

/// Replays `conversations` through `draft` and the base `base` gives for each turn (see
/// the module docs). The report's `read` is left empty.
pub fn replay(
    conversations: &[Conversation],
    draft: Arc<RuleSet>,
    base: BaseResolver<'_>,
    options: &ReplayOptions,
) -> ReplayReport {
    let mut report = ReplayReport {
        draft: draft.version.clone(),
        generated: options.model.is_some(),
        ..ReplayReport::default()
    };
    let draft_side = Side::new(Arc::clone(&draft), options.model.as_ref());
    let mut base_side: Option<Side> = None;
    let mut bases: HashMap<String, Option<Arc<RuleSet>>> = HashMap::new();
    let mut groups: HashMap<String, Gathering> = HashMap::new();
    for conversation in conversations {
        report.sessions += 1;
        let session = conversation.session.as_str();
        let mut index = 0u32;
        for (ts, _, step) in &conversation.steps {
            let Step::Turn(record) = step else {
                draft_side.act(session, step);
                if let Some(side) = &base_side {
                    side.act(session, step);
                }
                continue;
            };
            index += 1;
            if record.source == AnswerSource::Safety && record.message.starts_with("［已屏蔽：") {
                *report
                    .skipped
                    .entry("blocked message (its words are not logged)".into())
                    .or_default() += 1;
                continue;
            }
            let base_rules = match bases.get(&record.rules) {
                Some(found) => found.clone(),
                None => {
                    let found = base(&record.rules);
                    if let Some(rules) = &found {
                        report.base.push(rules.version.clone());
                    }
                    bases.insert(record.rules.clone(), found.clone());
                    found
                }
            };
            let at = record.as_of.unwrap_or(*ts);
            let request = request_of(record, session, at);
            let against_log = base_rules.is_none();
            let before = match base_rules {
                Some(rules) => {
                    let side = base_side.get_or_insert_with(|| Side::new(Arc::clone(&rules), options.model.as_ref()));
                    if !Arc::ptr_eq(&side.rules, &rules) {
                        side.engine.swap_rules(Arc::clone(&rules));
                        side.rules = rules;
                    }
                    side.turn(request.clone())
                }
                None => {
                    report.against_log += 1;
                    Some(Outcome::of_record(record))
                }
            };
            let (Some(before), Some(mut after)) = (before, draft_side.turn(request)) else {
                *report.skipped.entry("the engine failed".into()).or_default() += 1;
                continue;
            };
            if against_log && let Cow::Owned(masked) = draft.safety.redact_pii(&after.reply) {
                // The log's replies are masked again when written; so is this one.
                after.reply = masked;
            }
            report.turns += 1;
            report.profile_cut += u64::from(record.profile_cut);
            if before.source == "model" || after.source == "model" {
                report.model_turns += 1;
            }
            // The turn that hands over, not the messages queued for the agent after it.
            match (&before.handoff, &after.handoff) {
                (None, Some(_)) if after.source != "human" => report.handoffs_added += 1,
                (Some(_), None) if before.source != "human" => report.handoffs_removed += 1,
                _ => {}
            }
            let Some((kind, change)) = change_of(&before, &after) else {
                report.unchanged += 1;
                continue;
            };
            report.changed += 1;
            let group = groups.entry(change).or_insert_with(|| Gathering {
                kind,
                count: 0,
                examples: Vec::new(),
            });
            group.count += 1;
            if group.examples.len() < options.examples {
                group.examples.push(Example {
                    session: session.to_string(),
                    turn: index,
                    time: at.to_rfc3339(),
                    message: record.message.clone(),
                    before,
                    after,
                });
            }
        }
    }
    let mut groups: Vec<ChangeGroup> = groups
        .into_iter()
        .map(|(change, g)| ChangeGroup {
            kind: g.kind,
            change,
            count: g.count,
            examples: g.examples,
        })
        .collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.change.cmp(&b.change)));
    report.groups = groups;
    report.base.sort();
    report.base.dedup();
    report
}

/// The request that replays a logged turn: its message (or event), profile (or, from
/// older logs, just its segment), context, channel and time.
fn request_of(record: &TurnRecord, session: &str, at: DateTime<FixedOffset>) -> TurnRequest {
    let user = record.user.clone().or_else(|| {
        record.segment.as_ref().map(|segment| {
            let mut user = serde_json::Map::new();
            user.insert("segment".into(), segment.clone().into());
            user
        })
    });
    TurnRequest {
        session_id: session.to_string(),
        message: record.message.clone(),
        user,
        context: record.context.clone(),
        as_of: Some(at),
        // Each side's engine serves its own rule set (the draft, or the base of the turn).
        rules_version: None,
        // A turn replays as it came: through its channel, and as its event.
        channel: record.channel.clone(),
        event: record.event.clone(),
        images: Vec::new(),
    }
}

/// What changed from `before` to `after`, the first that did of answerer, handoff and
/// reply text; `None` when nothing did.
fn change_of(before: &Outcome, after: &Outcome) -> Option<(ChangeKind, String)> {
    if !before.same_answerer(after) {
        return Some((
            ChangeKind::Answer,
            format!("{} → {}", before.answerer(), after.answerer()),
        ));
    }
    match (&before.handoff, &after.handoff) {
        (None, Some(reason)) => return Some((ChangeKind::Handoff, format!("handoff added: {reason}"))),
        (Some(reason), None) => return Some((ChangeKind::Handoff, format!("handoff removed: {reason}"))),
        (Some(a), Some(b)) if a != b => {
            return Some((ChangeKind::Handoff, format!("handoff reason changed: {a} → {b}")));
        }
        _ => {}
    }
    // A model answer not generated has no text to compare.
    if !before.not_generated && !after.not_generated && !same_reply(&before.reply, &after.reply) {
        return Some((ChangeKind::Reply, format!("reply text changed in {}", after.answerer())));
    }
    None
}

impl ReplayReport {
    /// The report as text for a terminal; `colour` adds ANSI colours.
    pub fn render(&self, colour: bool) -> String {
        let mut out = String::new();
        let _ = self.write_text(&mut out, colour);
        out
    }

    fn write_text(&self, o: &mut String, colour: bool) -> fmt::Result {
        let paint = |style: anstyle::Style, text: &str| -> String {
            if colour {
                format!("{}{text}{}", style.render(), style.render_reset())
            } else {
                text.to_string()
            }
        };
        let bold = anstyle::Style::new().bold();
        let red = anstyle::AnsiColor::Red.on_default();
        let green = anstyle::AnsiColor::Green.on_default();
        let dim = anstyle::Style::new().dimmed();
        writeln!(
            o,
            "{}",
            paint(
                bold,
                &format!(
                    "replayed {} turns in {} sessions: {} changed, {} unchanged",
                    thousands(self.turns),
                    thousands(self.sessions),
                    thousands(self.changed),
                    thousands(self.unchanged)
                )
            )
        )?;
        let base = if self.base.is_empty() {
            "none".to_string()
        } else {
            self.base.join(", ")
        };
        writeln!(o, "draft rules {}, base {base}", self.draft)?;
        if self.against_log > 0 {
            writeln!(
                o,
                "{} turns had no base for their rules version: compared with the logged answer",
                thousands(self.against_log)
            )?;
        }
        if self.model_turns > 0 {
            let how = if self.generated { "generated" } else { "not generated" };
            writeln!(o, "{} turns go to the model ({how})", thousands(self.model_turns))?;
        }
        if self.handoffs_added + self.handoffs_removed > 0 {
            writeln!(
                o,
                "handoffs: {} added, {} removed",
                thousands(self.handoffs_added),
                thousands(self.handoffs_removed)
            )?;
        }
        if self.profile_cut > 0 {
            writeln!(
                o,
                "{} turns replayed without part of their profile or context (cut for size in the log)",
                thousands(self.profile_cut)
            )?;
        }
        for (reason, count) in &self.skipped {
            writeln!(o, "skipped {}: {reason}", thousands(*count))?;
        }
        write_read(o, &self.read)?;
        for group in &self.groups {
            writeln!(o)?;
            writeln!(
                o,
                "{}  {}",
                paint(bold, &format!("{:>6}", thousands(group.count))),
                paint(bold, &group.change)
            )?;
            for e in &group.examples {
                writeln!(
                    o,
                    "        {}",
                    paint(dim, &format!("{} #{} {}", e.session, e.turn, e.time))
                )?;
                writeln!(o, "        customer: {}", e.message)?;
                writeln!(o, "        {}", paint(red, &format!("- {}", shown(&e.before))))?;
                writeln!(o, "        {}", paint(green, &format!("+ {}", shown(&e.after))))?;
            }
        }
        Ok(())
    }
}

/// An outcome on one line: `[rule 退货政策 · handoff 客户投诉] 亲，...`.
fn shown(o: &Outcome) -> String {
    let mut head = o.answerer();
    if let Some(step) = &o.step
        && o.rule.is_some()
    {
        let _ = write!(head, " {}", step_name(step));
    }
    if let Some(reason) = &o.handoff {
        let _ = write!(head, " · handoff {reason}");
    }
    // One line per outcome: a reply of several lines (a rule's words, then the handoff
    // message) keeps its breaks visible.
    format!("[{head}] {}", o.reply.replace('\n', " ↵ "))
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

/// `kefu replay --html FILE`: the report as one self-contained page, in `kefu report
/// --html`'s style.
pub fn render_html(report: &ReplayReport) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let _ = write_html(&mut h, report);
    h
}

fn write_html(h: &mut String, r: &ReplayReport) -> fmt::Result {
    use super::html::{colour, esc, page_head};
    page_head(h, "kefu replay")?;
    writeln!(
        h,
        "<h1>kefu replay</h1><p>{} turns replayed in {} sessions: <b>{} changed</b>, {} unchanged. \
         Draft rules {}, base {}.</p><table>",
        thousands(r.turns),
        thousands(r.sessions),
        thousands(r.changed),
        thousands(r.unchanged),
        esc(&r.draft),
        esc(&if r.base.is_empty() {
            "none".into()
        } else {
            r.base.join(", ")
        })
    )?;
    let rows = [
        ("compared with the logged answer (no base)", r.against_log),
        ("sent to the model", r.model_turns),
        ("handoffs added", r.handoffs_added),
        ("handoffs removed", r.handoffs_removed),
        ("profile cut for size", r.profile_cut),
        ("lines read", r.read.lines),
        ("bad lines", r.read.bad_lines),
    ];
    for (name, n) in rows {
        writeln!(h, "<tr><td>{}</td><td class=n>{}</td></tr>", esc(name), thousands(n))?;
    }
    for (reason, n) in &r.skipped {
        writeln!(
            h,
            "<tr><td>skipped: {}</td><td class=n>{}</td></tr>",
            esc(reason),
            thousands(*n)
        )?;
    }
    writeln!(h, "</table>")?;
    if !r.read.bad.is_empty() {
        writeln!(h, "<h2>Bad lines</h2><ul>")?;
        for b in &r.read.bad {
            writeln!(h, "<li><code>{}:{}</code> {}</li>", esc(&b.file), b.line, esc(&b.error))?;
        }
        writeln!(h, "</ul>")?;
    }
    writeln!(h, "<h2>Changes</h2><table><tr><th>turns</th><th>change</th></tr>")?;
    for g in &r.groups {
        writeln!(
            h,
            "<tr><td class=n>{}</td><td>{}</td></tr>",
            thousands(g.count),
            esc(&g.change)
        )?;
    }
    writeln!(h, "</table>")?;
    for g in &r.groups {
        writeln!(h, "<h2>{} · {}</h2><table>", esc(&g.change), thousands(g.count))?;
        writeln!(
            h,
            "<tr><th>session · turn · time</th><th>customer</th><th>before</th><th>after</th></tr>"
        )?;
        for e in &g.examples {
            writeln!(
                h,
                "<tr><td>{} #{}<br><small>{}</small></td><td>{}</td>\
                 <td><span style=\"color:{}\">■</span> {}</td><td><span style=\"color:{}\">■</span> {}</td></tr>",
                esc(&e.session),
                e.turn,
                esc(&e.time),
                esc(&e.message),
                colour(&e.before.source),
                esc(&shown(&e.before)),
                colour(&e.after.source),
                esc(&shown(&e.after)),
            )?;
        }
        writeln!(h, "</table>")?;
    }
    writeln!(h, "</body></html>")
}
