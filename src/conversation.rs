//! Conversation tests: whole conversations in YAML, replayed through the engine, with
//! expectations on every turn.
//!
//! `kefu test` and the snapshot tests both run them, so a policy editor's regression test
//! and the developers' are the same file. A script that fails during a turn (a condition
//! or template hole reading a field the data lacks, say) fails the turn, unless the turn
//! lists it under `expect.script_errors`: at run time such a failure is silent (the
//! condition counts as false), so a test is where it must show. A conversation runs on a fresh engine (fresh
//! sessions and tickets) with a deterministic mock model scripted by the file, at the time
//! the file says, so its outcome depends on the rules alone.
//!
//! ```yaml
//! name: 七天无理由退货
//! user: { segment: vip, orders: 3 }
//! context: { order: { id: "202611010001", signed_days: 3, custom: false } }
//! as_of: 2026-11-05T10:00:00+08:00
//! llm:
//!   - { when: 机票, reply: 抱歉，本店不提供机票服务。, confidence: 0.3 }
//! turns:
//!   - say: 这个能退吗
//!     expect: { source: rule, rule: 七天无理由, reply_contains: [申请售后] }
//! ```
//!
//! A conversation (or one turn) may say which channel it comes through (`channel: web`;
//! `api` when absent), and a turn may be a platform event instead of a message
//! (`- event: subscribe`, with `expect: { reply: ... }` or `expect: { silent: true }`).
//!
//! A turn may also be an event the shop reports (`- shop_event: {type: checkout_abandoned,
//! data: {cart_total: 299}}`, optionally with `at:` its time), run through
//! [`Engine::event`]: `expect: { proactive: 挽回弃单, reply_contains: [...] }` for a message
//! sent, `expect: { refused: limit }` (`quiet_hours`, `held`, `flow_running`, `opted_out`)
//! for a trigger a guard rail stopped, `expect: { silent: true }` for nothing at all. A
//! message may carry photos: `images: [{description: 外包装破损}, {}]` attaches test
//! images (ids `img_test_1`…, JPEG 800×600; a description as a vision model would give
//! it, none when absent).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::RuleSet;
use crate::engine::{AnswerSource, Engine, TurnRequest, TurnResponse};
use crate::llm::{MockLlm, MockRule};
use crate::ruleset::OpKind;

/// A conversation test file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    /// What it checks, in a few words.
    pub name: String,
    /// Why it matters, for the next editor.
    #[serde(default)]
    pub description: Option<String>,
    /// The customer's profile for every turn.
    #[serde(default)]
    pub user: Option<Map<String, Value>>,
    /// Request context for every turn.
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
    /// The channel every turn comes through (`web`, `wechat_mp`, a webhook's name);
    /// `api` when absent.
    #[serde(default)]
    pub channel: Option<String>,
    /// The time the conversation happens (promotions, `now`); defaults to 2026-11-05 10:00
    /// in Shanghai so that tests do not change with the calendar.
    #[serde(default)]
    pub as_of: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Scripted answers of the mock model.
    #[serde(default)]
    pub llm: Vec<MockRule>,
    /// The customer's messages and what should happen.
    pub turns: Vec<Turn>,
}

/// One message of a conversation test.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// What the customer writes (empty for an event).
    #[serde(default)]
    pub say: String,
    /// A platform event instead of a message (`subscribe`, `enter_session`): the turn is
    /// answered only by `on event` rules and flow starts. A turn has `say` or `event`.
    #[serde(default)]
    pub event: Option<String>,
    /// An event the shop reports instead of a message ([`Engine::event`]): a proactive
    /// message may be sent, or refused by a guard rail.
    #[serde(default)]
    pub shop_event: Option<ShopEvent>,
    /// Photos the message carries (test images, described or not).
    #[serde(default)]
    pub images: Vec<TestImage>,
    /// The channel of this turn, replacing the conversation's.
    #[serde(default)]
    pub channel: Option<String>,
    /// Context for this turn, merged over the conversation's.
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
    /// Profile for this turn, replacing the conversation's.
    #[serde(default)]
    pub user: Option<Map<String, Value>>,
    /// A human agent acts before this message: `takeover`, `release` (the flow the
    /// takeover paused is dropped), `{release: resume}` (it goes on), `{reply: 文本}`,
    /// `{note: 文本}` or `{resolve: 结果}`. An act the engine refuses fails the turn.
    #[serde(default)]
    pub agent: Option<AgentAction>,
    /// How long after the previous message this one comes (`40m`, `2h`, `90s`, `1d`); a
    /// minute when not given. A flow left waiting longer than its timeout has expired.
    #[serde(default, deserialize_with = "pause")]
    pub after: Option<chrono::Duration>,
    /// What should happen.
    #[serde(default)]
    pub expect: Expect,
}

/// An event the shop reports, in a conversation test.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopEvent {
    /// Its type (`checkout_abandoned`, `order_delayed`...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its fields (`event.order_id`...).
    #[serde(default)]
    pub data: Map<String, Value>,
    /// When it happens; the conversation's clock moves there (later turns follow it).
    #[serde(default)]
    pub at: Option<chrono::DateTime<chrono::FixedOffset>>,
}

/// A photo in a conversation test: what a vision model saw in it, if anything.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestImage {
    /// The vision model's description; none (no vision model) when absent.
    #[serde(default)]
    pub description: Option<String>,
}

impl TestImage {
    /// The image as the intake would have stored it: `img_test_N`, a JPEG of 800×600.
    fn image_ref(&self, n: usize) -> crate::dialogue::ImageRef {
        crate::dialogue::ImageRef {
            id: format!("img_test_{n}"),
            kind: "jpeg".into(),
            width: 800,
            height: 600,
            bytes: 48_000,
            description: self.description.clone(),
        }
    }
}

/// Reads a pause between messages: a whole number with `s`, `m`, `h` or `d`.
fn pause<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<chrono::Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let seconds = match &text[digits.len()..] {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => 0,
    };
    match digits.parse::<i64>() {
        Ok(n) if seconds > 0 && (0..=366 * 86_400).contains(&n.saturating_mul(seconds)) => {
            Ok(Some(chrono::Duration::seconds(n * seconds)))
        }
        _ => Err(serde::de::Error::custom(format!(
            "`after: {text}` is not a pause: write a whole number with s, m, h or d, e.g. `40m`"
        ))),
    }
}

/// What a human agent does before a turn (the agent is `测试客服`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentAction {
    /// `takeover`: take the conversation over.
    Takeover,
    /// `release` (`resume: false`) or `{release: resume}`: give it back, dropping or
    /// resuming the flow the takeover paused (`{release: cancel}` is the first).
    Release {
        /// The paused flow goes on.
        resume: bool,
    },
    /// `{reply: 文本}`: answer the customer.
    Reply(String),
    /// `{note: 文本}`: an internal note.
    Note(String),
    /// `{resolve: 结果}`: close the conversation with an outcome.
    Resolve(String),
}

/// The agent the acts of conversation tests are made by.
const TEST_AGENT: &str = "测试客服";

impl AgentAction {
    /// The act as the transcript shows it (`takeover`, `release resume`, `reply: 文本`).
    fn describe(&self) -> String {
        match self {
            AgentAction::Takeover => "takeover".into(),
            AgentAction::Release { resume: false } => "release".into(),
            AgentAction::Release { resume: true } => "release resume".into(),
            AgentAction::Reply(text) => format!("reply: {text}"),
            AgentAction::Note(text) => format!("note: {text}"),
            AgentAction::Resolve(outcome) => format!("resolve: {outcome}"),
        }
    }

    /// Does it on `engine`'s conversation `session`; the engine's refusal, if it refuses.
    fn apply(&self, engine: &Engine, session: &str) -> Result<(), crate::engine::EngineError> {
        let agent = Some(TEST_AGENT);
        match self {
            AgentAction::Takeover => engine.takeover(session, Some(TEST_AGENT.into()), false).map(drop),
            AgentAction::Release { resume } => engine.release(session, agent, *resume).map(drop),
            AgentAction::Reply(text) => engine.agent_reply(session, agent, text).map(drop),
            AgentAction::Note(text) => engine.note(session, agent, text).map(drop),
            AgentAction::Resolve(outcome) => engine.resolve(session, agent, outcome).map(drop),
        }
    }
}

impl<'de> Deserialize<'de> for AgentAction {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Act(std::collections::BTreeMap<String, String>),
        }
        const USE: &str = "use takeover, release, {release: resume}, {reply: 文本}, {note: 文本} or {resolve: 结果}";
        let unknown = |what: &str| serde::de::Error::custom(format!("unknown agent action `{what}`: {USE}"));
        let act = match Raw::deserialize(deserializer)? {
            Raw::Word(w) => match w.as_str() {
                "takeover" => AgentAction::Takeover,
                "release" => AgentAction::Release { resume: false },
                _ => return Err(unknown(&w)),
            },
            Raw::Act(map) => {
                let mut pairs = map.into_iter();
                let (Some((key, value)), None) = (pairs.next(), pairs.next()) else {
                    return Err(serde::de::Error::custom(format!("one agent action a turn: {USE}")));
                };
                match (key.as_str(), value.as_str()) {
                    ("release", "resume") => AgentAction::Release { resume: true },
                    ("release", "cancel") => AgentAction::Release { resume: false },
                    ("release", other) => {
                        return Err(serde::de::Error::custom(format!(
                            "`release: {other}`: write `release: resume` or `release: cancel`"
                        )));
                    }
                    ("reply", _) => AgentAction::Reply(value),
                    ("note", _) => AgentAction::Note(value),
                    ("resolve", _) => AgentAction::Resolve(value),
                    _ => return Err(unknown(&key)),
                }
            }
        };
        Ok(act)
    }
}

/// Expectations on one turn; every field is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `rule`, `flow`, `promotion`, `llm`, `handoff`, `human`, `fallback`, ...
    pub source: Option<AnswerSource>,
    /// The rule that answers.
    pub rule: Option<String>,
    /// The flow that answers.
    pub flow: Option<String>,
    /// The flow step that answers (`ask order_id@12`); a prefix is enough (`ask order_id`).
    pub step: Option<String>,
    /// The promotion that answers.
    pub promotion: Option<String>,
    /// The knowledge-base FAQ entry that answers (directly or from the answer cache).
    pub faq: Option<String>,
    /// The understood intent (`none` for no confident intent).
    pub intent: Option<String>,
    /// The exact reply.
    pub reply: Option<String>,
    /// Texts the reply must contain.
    #[serde(default)]
    pub reply_contains: Vec<String>,
    /// Texts the reply must not contain.
    #[serde(default)]
    pub reply_excludes: Vec<String>,
    /// Whether the conversation goes to a human, or the exact reason.
    pub handoff: Option<HandoffExpect>,
    /// The handoff's kind (`rule`, `low_confidence`, `anger`, `repeated_failure`, `asked`).
    pub handoff_kind: Option<String>,
    /// The queue the handoff goes to (`none` for no queue).
    pub queue: Option<String>,
    /// Whether the handoff came outside its queue's hours (an off-hours reply and a ticket).
    pub off_hours: Option<bool>,
    /// The customer's mood.
    pub emotion: Option<String>,
    /// The language the turn answers in (`en`).
    pub language: Option<String>,
    /// Texts some line of the decision trace must contain.
    #[serde(default)]
    pub trace_contains: Vec<String>,
    /// Scripts this turn is meant to see fail: a text each failure must contain (`rule
    /// 坏脚本`). A script that fails without being listed fails the turn.
    #[serde(default)]
    pub script_errors: Vec<String>,
    /// `true`: kefu says nothing (an event no rule answers, source `silent`); `false`:
    /// it says something.
    pub silent: Option<bool>,
    /// The exact quick replies offered with the reply (`[是, 不用了]`; `[]` for none).
    pub choices: Option<Vec<String>>,
    /// A shop event's turn: the `proactive` item that sent its message.
    pub proactive: Option<String>,
    /// A shop event's turn: the guard rail that refused its trigger (`limit`,
    /// `quiet_hours`, `held`, `flow_running`, `opted_out`).
    pub refused: Option<String>,
}

/// `handoff: true`, `handoff: false` or `handoff: 连续三次未能解决`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum HandoffExpect {
    /// Whether there is a handoff at all.
    Any(bool),
    /// The reason.
    Reason(String),
}

/// One turn as it happened: the transcript line that snapshots record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TurnRecord {
    /// What a human agent did before the message (`takeover`, `release resume`,
    /// `reply: 文本`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The customer's message (empty for an event).
    pub say: String,
    /// The platform event the turn was, instead of a message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The shop event the turn was, instead of a message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shop_event: Option<String>,
    /// How many photos the message carried.
    #[serde(skip_serializing_if = "is_zero")]
    pub images: usize,
    /// The channel, when not `api`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The reply.
    pub reply: String,
    /// What answered, with its name (`rule 七天无理由`, `faq 积分`, `flow 退货申请 ask order_id@54`).
    pub by: String,
    /// Intent and confidence (`售后.退货 0.93`).
    pub intent: String,
    /// The customer's mood.
    pub emotion: String,
    /// The handoff reason, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
    /// The handoff's kind, its queue, and `off hours` when the queue was closed
    /// (`anger → 售后`, `asked → 售前 (off hours)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff_to: Option<String>,
    /// The decision trace.
    pub trace: Vec<String>,
    /// Scripts that failed during the turn (`rule 坏脚本 at rules/shop.kefu:36:9: ...`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub script_errors: Vec<String>,
    /// Expectations that did not hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
}

impl TurnRecord {
    /// What the customer sent as a transcript shows it: the message, or `[event NAME]`.
    pub fn said(&self) -> String {
        match (&self.event, &self.shop_event) {
            (Some(event), _) => format!("[event {event}]"),
            (None, Some(event)) => format!("[shop event {event}]"),
            (None, None) if self.images > 0 => format!("{} [{} photo(s)]", self.say, self.images)
                .trim_start()
                .to_string(),
            (None, None) => self.say.clone(),
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// An expectation of a turn that did not hold: the field, what the test expected and what
/// the turn did, and the line `kefu test` prints (`Display`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The expectation's key (`rule`, `reply_contains`, `handoff`, `script_errors`...).
    pub field: String,
    /// What the test expected, when it names a value.
    pub expected: Option<String>,
    /// What the turn gave.
    pub actual: Option<String>,
    /// The whole failure in words.
    pub message: String,
}

impl Failure {
    fn new(field: &str, expected: Option<&str>, actual: Option<&str>, message: String) -> Self {
        Failure {
            field: field.to_string(),
            expected: expected.map(str::to_string),
            actual: actual.map(str::to_string),
            message,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A conversation as it happened.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// The conversation's name.
    pub name: String,
    /// Its file.
    #[serde(skip)]
    pub file: PathBuf,
    /// Every turn.
    pub turns: Vec<TurnRecord>,
    /// Ids of the rules, promotions and flow steps it ran.
    #[serde(skip)]
    pub covered: BTreeSet<String>,
    /// A file that could not be read or parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    /// Whether every expectation held (and no script failed that the test did not expect).
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.turns.iter().all(|t| t.failures.is_empty())
    }

    /// Every script that failed, with the number of its turn (from 1).
    pub fn script_errors(&self) -> impl Iterator<Item = (usize, &str)> {
        self.turns
            .iter()
            .enumerate()
            .flat_map(|(n, t)| t.script_errors.iter().map(move |e| (n + 1, e.as_str())))
    }
}

/// The default time of a conversation test: a Thursday inside the demo's Double-11 window.
fn default_as_of() -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339("2026-11-05T10:00:00+08:00").expect("valid literal")
}

/// Every `*.yaml` conversation under `dir/tests`, sorted.
pub fn files(rules_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = rules_dir.join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every test of a rules directory, run: its conversations (`DIR/tests/*.yaml`) and its
/// knowledge-base checks (`DIR/tests/kb/*.yaml`). What `kefu test` prints and what
/// `kefu publish` requires to pass.
#[derive(Debug, Default)]
pub struct Suite {
    /// Each conversation file's outcome, in file order.
    pub conversations: Vec<Outcome>,
    /// Each knowledge-base check file's report, in file order.
    pub kb: Vec<crate::kb::check::Report>,
}

impl Suite {
    /// Runs every test under `rules_dir/tests` against `rules` (none when there is no
    /// `tests` directory).
    pub fn run(rules: &Arc<RuleSet>, rules_dir: &Path) -> std::io::Result<Suite> {
        let files = match files(rules_dir) {
            Ok(files) => files,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Suite {
            conversations: files.iter().map(|file| run_file(rules, file)).collect(),
            kb: crate::kb::check::files(rules_dir)
                .iter()
                .map(|file| crate::kb::check::run_file(&rules.kb, rules.shop.faq_threshold, file))
                .collect(),
        })
    }

    /// Test files (conversations and check files) that passed.
    pub fn passed(&self) -> usize {
        self.conversations.iter().filter(|o| o.passed()).count() + self.kb.iter().filter(|r| r.passed()).count()
    }

    /// Test files that failed.
    pub fn failed(&self) -> usize {
        self.conversations.len() + self.kb.len() - self.passed()
    }

    /// One line per failed file, with its first failure: `FILE: turn N: ...`.
    pub fn failures(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for outcome in self.conversations.iter().filter(|o| !o.passed()) {
            let first = outcome.error.clone().or_else(|| {
                outcome.turns.iter().enumerate().find_map(|(n, t)| {
                    t.failures
                        .first()
                        .map(|f| format!("turn {} ({}): {f}", n + 1, t.said()))
                })
            });
            lines.push(format!("{}: {}", outcome.file.display(), first.unwrap_or_default()));
        }
        for report in self.kb.iter().filter(|r| !r.passed()) {
            lines.push(format!("{}: {}", report.file.display(), report.summary()));
        }
        lines
    }
}

impl Suite {
    /// What the conversations exercised of `rules` together.
    pub fn coverage(&self, rules: &RuleSet) -> Coverage {
        let covered: BTreeSet<String> = self
            .conversations
            .iter()
            .flat_map(|o| o.covered.iter().cloned())
            .collect();
        coverage(rules, &covered)
    }

    /// The run as `kefu test` prints it: each file's result and, for a failed one (every
    /// turn with `verbose`), its turns with what failed; the knowledge-base checks; the
    /// coverage and what never ran; every script that failed at run time; the count. One
    /// text for the terminal and the console.
    pub fn render(&self, rules: &RuleSet, verbose: bool) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        // Every script that failed at run time: (the failure, the test file, its turn).
        let mut script_errors: Vec<(String, String, usize)> = Vec::new();
        for outcome in &self.conversations {
            let file = &outcome.file;
            script_errors.extend(
                outcome
                    .script_errors()
                    .map(|(turn, error)| (error.to_string(), file.display().to_string(), turn)),
            );
            let mark = if outcome.passed() { "ok  " } else { "FAIL" };
            let _ = writeln!(
                out,
                "{mark} {} ({}, {} turns)",
                outcome.name,
                file.display(),
                outcome.turns.len()
            );
            if let Some(error) = &outcome.error {
                let _ = writeln!(out, "     {error}");
            }
            for (n, turn) in outcome.turns.iter().enumerate() {
                if verbose || !turn.failures.is_empty() {
                    if let Some(act) = &turn.agent {
                        let _ = writeln!(out, "        (人工 {act})");
                    }
                    let _ = writeln!(out, "     {}. 你: {}", n + 1, turn.said());
                    let _ = writeln!(out, "        客服: {}  [{} · {}]", turn.reply, turn.by, turn.intent);
                    for failure in &turn.failures {
                        let _ = writeln!(out, "        ✗ {failure}");
                    }
                }
            }
        }
        // Knowledge-base checks (rules/tests/kb/*.yaml): customers' paraphrases must find
        // their FAQ entry first, and off-topic messages must not be answered by one.
        for report in &self.kb {
            let file = &report.file;
            let mark = if report.passed() { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "{mark} knowledge base ({}): {}", file.display(), report.summary());
            for error in &report.errors {
                let _ = writeln!(out, "     ✗ {error}");
            }
            for case in report.cases.iter().filter(|c| verbose || !c.passed()) {
                let found = case.top.as_deref().unwrap_or("nothing");
                let mark = if case.passed() { "✓" } else { "✗" };
                // Whether the entry would answer by itself (threshold and margin): a wrong
                // entry that answers is the mistake a customer sees.
                let answers = if case.answers { ", answers" } else { "" };
                let _ = writeln!(
                    out,
                    "     {mark} {} → {found} ({:.2}{answers}), expected {}",
                    case.say, case.confidence, case.expected
                );
            }
            for (say, faq) in &report.false_answers {
                let _ = writeln!(out, "     ✗ {say} → answered by {faq}, but it is listed under not_faq");
            }
        }
        let c = self.coverage(rules);
        let _ = writeln!(
            out,
            "coverage: rules {}/{}, promotions {}/{}, flow steps {}/{}",
            c.rules.0, c.rules.1, c.promotions.0, c.promotions.1, c.flow_steps.0, c.flow_steps.1
        );
        for missing in &c.missing {
            let _ = writeln!(out, "  never exercised: {missing}");
        }
        // Listed even when the tests expected them: each is a script that fails in
        // production whenever a customer gets there.
        if !script_errors.is_empty() {
            let _ = writeln!(out, "scripts that failed: {}", script_errors.len());
            for (error, file, turn) in &script_errors {
                let _ = writeln!(out, "  {error} ({file}, turn {turn})");
            }
        }
        let _ = writeln!(out, "{} passed, {} failed", self.passed(), self.failed());
        out
    }
}

/// The file name (without `.yaml`) of a test called `name`: letters and digits of any
/// script kept (Chinese names stay Chinese), `-` and `_` kept, every other run of
/// characters (spaces, slashes, dots, punctuation) one `-`; at most 64 characters;
/// `test` when nothing is left. Never a path: no `/`, backslash, `..` or leading dot.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_alphanumeric() || c == '_' || c == '-' {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(64).collect();
    let out = out.trim_end_matches('-');
    if out.is_empty() { "test".into() } else { out.to_string() }
}

/// `test` (a conversation test's fields: `name`, `turns` of `say` and `expect`...) as the
/// YAML of a test file, read back with the test loader first: what does not load as a
/// [`Conversation`] is refused with the loader's words.
pub fn to_yaml(test: &impl Serialize) -> Result<String, String> {
    let body = serde_yaml::to_string(test).map_err(|e| e.to_string())?;
    let text = format!("# Saved from the console's test chat.\n{body}");
    serde_yaml::from_str::<Conversation>(&text).map_err(|e| format!("not a conversation test: {e}"))?;
    Ok(text)
}

/// Writes `text` to `path` only if no file is there (`AlreadyExists` otherwise): written
/// to a temporary file beside it, then linked to its name, which fails rather than
/// replace a file, so the test appears whole or not at all and never over another.
pub fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::Builder::new().prefix(".kefu-save-").tempfile_in(dir)?;
    std::io::Write::write_all(&mut temp, text.as_bytes())?;
    temp.as_file().sync_all()?;
    std::fs::hard_link(temp.path(), path)
}

/// Replays one conversation file against `rules`.
pub fn run_file(rules: &Arc<RuleSet>, path: &Path) -> Outcome {
    let failed = |error: String| Outcome {
        name: path.display().to_string(),
        file: path.to_path_buf(),
        turns: Vec::new(),
        covered: BTreeSet::new(),
        error: Some(error),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return failed(format!("cannot read: {e}")),
    };
    match serde_yaml::from_str::<Conversation>(&text) {
        Ok(conversation) => run(rules, &conversation, path),
        Err(e) => failed(format!("not a conversation: {e}")),
    }
}

/// Replays a conversation against `rules` on a fresh engine.
pub fn run(rules: &Arc<RuleSet>, conversation: &Conversation, path: &Path) -> Outcome {
    let engine = Engine::new(Arc::clone(rules)).with_llm(Arc::new(MockLlm::new(conversation.llm.clone())));
    let session = path
        .file_stem()
        .map_or_else(|| "test".to_string(), |s| s.to_string_lossy().to_string());
    let mut at = conversation.as_of.unwrap_or_else(default_as_of);
    let mut records = Vec::new();
    let mut covered = BTreeSet::new();
    let mut images = 0;
    for (n, turn) in conversation.turns.iter().enumerate() {
        // Each message a minute after the last unless the test says otherwise, so flows
        // time out in a test only when it waits on purpose (`after: 40m`).
        if n > 0 {
            at += turn.after.unwrap_or_else(|| chrono::Duration::minutes(1));
        }
        if let Some(event_at) = turn.shop_event.as_ref().and_then(|e| e.at) {
            at = event_at;
        }
        let refused = turn
            .agent
            .as_ref()
            .and_then(|act| act.apply(&engine, &session).err().map(|e| (act, e)));
        let mut context = conversation.context.clone().unwrap_or_default();
        if let Some(extra) = &turn.context {
            context.extend(extra.clone());
        }
        let channel = turn.channel.clone().or_else(|| conversation.channel.clone());
        if let Some(event) = &turn.shop_event {
            let request = crate::engine::EventRequest {
                session_id: session.clone(),
                kind: event.kind.clone(),
                data: event.data.clone(),
                user: turn.user.clone().or_else(|| conversation.user.clone()),
                at: Some(at),
                channel: channel.clone(),
            };
            let outcome = engine.event(&request).expect("in-memory sessions never fail");
            if let crate::engine::ProactiveOutcome::Sent { trigger, .. } = &outcome {
                covered.insert(format!("proactive:{trigger}"));
            }
            let mut record = event_record(turn, &event.kind, &outcome);
            record.channel = channel.filter(|c| c != crate::engine::DEFAULT_CHANNEL);
            if turn.event.is_some() || !turn.say.is_empty() || !turn.images.is_empty() {
                record.failures.insert(
                    0,
                    Failure::new(
                        "shop_event",
                        None,
                        None,
                        "a shop event's turn has no `say`, `event` or `images`".into(),
                    ),
                );
            }
            if let Some((act, error)) = refused {
                let act = act.describe();
                record.failures.insert(
                    0,
                    Failure::new(
                        "agent",
                        Some(&act),
                        None,
                        format!("the agent's `{act}` was refused: {error}"),
                    ),
                );
            }
            records.push(record);
            continue;
        }
        let turn_images: Vec<crate::dialogue::ImageRef> = turn
            .images
            .iter()
            .map(|image| {
                images += 1;
                image.image_ref(images)
            })
            .collect();
        let request = TurnRequest {
            session_id: session.clone(),
            message: turn.say.clone(),
            user: turn.user.clone().or_else(|| conversation.user.clone()),
            context: (!context.is_empty()).then_some(context),
            as_of: Some(at),
            rules_version: None,
            channel: channel.clone(),
            event: turn.event.clone(),
            images: turn_images,
        };
        // The engine's sessions are in memory, which cannot fail.
        let response = engine.turn(request).expect("in-memory sessions never fail");
        covered.extend(response.covered.iter().cloned());
        let mut record = record(turn, &response);
        record.channel = channel.filter(|c| c != crate::engine::DEFAULT_CHANNEL);
        if turn.event.is_some() && !turn.say.is_empty() {
            record.failures.insert(
                0,
                Failure::new(
                    "event",
                    None,
                    None,
                    "a turn is a message (`say`) or an event (`event`), not both".into(),
                ),
            );
        }
        if let Some((act, error)) = refused {
            let act = act.describe();
            record.failures.insert(
                0,
                Failure::new(
                    "agent",
                    Some(&act),
                    None,
                    format!("the agent's `{act}` was refused: {error}"),
                ),
            );
        }
        records.push(record);
    }
    Outcome {
        name: conversation.name.clone(),
        file: path.to_path_buf(),
        turns: records,
        covered,
        error: None,
    }
}

/// The transcript line of a shop event's turn, with its expectations checked: what it
/// sent (`reply`, `by: proactive TRIGGER`), or what refused it.
fn event_record(turn: &Turn, kind: &str, outcome: &crate::engine::ProactiveOutcome) -> TurnRecord {
    use crate::engine::ProactiveOutcome as O;
    let (reply, by, sent, refused) = match outcome {
        O::Recorded => (String::new(), "recorded".to_string(), None, None),
        O::Sent { trigger, text, .. } => (
            text.clone(),
            format!("proactive {trigger}"),
            Some(trigger.as_str()),
            None,
        ),
        O::Refused { trigger, reason } => (
            String::new(),
            format!("refused {trigger} ({})", reason.name()),
            None,
            Some(reason.name()),
        ),
    };
    let e = &turn.expect;
    let mut failures = Vec::new();
    let mut check = |what: &str, expected: &str, actual: &str| {
        if expected != actual {
            failures.push(Failure::new(
                what,
                Some(expected),
                Some(actual),
                format!("{what}: expected `{expected}`, got `{actual}`"),
            ));
        }
    };
    if let Some(x) = &e.proactive {
        check("proactive", x, sent.unwrap_or("-"));
    }
    if let Some(x) = &e.refused {
        check("refused", x, refused.unwrap_or("-"));
    }
    if let Some(x) = &e.reply {
        check("reply", x, &reply);
    }
    if let Some(silent) = e.silent {
        check("silent", &silent.to_string(), &sent.is_none().to_string());
    }
    for part in &e.reply_contains {
        if !reply.contains(part.as_str()) {
            failures.push(Failure::new(
                "reply_contains",
                Some(part),
                Some(&reply),
                format!("reply should contain `{part}`: `{reply}`"),
            ));
        }
    }
    for part in &e.reply_excludes {
        if reply.contains(part.as_str()) {
            failures.push(Failure::new(
                "reply_excludes",
                Some(part),
                Some(&reply),
                format!("reply should not contain `{part}`: `{reply}`"),
            ));
        }
    }
    // What a turn's answer has and an event's outcome lacks cannot be expected of it.
    let turn_only = [
        ("source", e.source.is_some()),
        ("rule", e.rule.is_some()),
        ("flow", e.flow.is_some()),
        ("step", e.step.is_some()),
        ("promotion", e.promotion.is_some()),
        ("faq", e.faq.is_some()),
        ("intent", e.intent.is_some()),
        ("handoff", e.handoff.is_some()),
        ("emotion", e.emotion.is_some()),
        ("choices", e.choices.is_some()),
        ("trace_contains", !e.trace_contains.is_empty()),
    ];
    for (field, _) in turn_only.iter().filter(|(_, set)| *set) {
        failures.push(Failure::new(
            field,
            None,
            None,
            format!("`{field}` is not expected of a shop event: use proactive, refused, reply or silent"),
        ));
    }
    TurnRecord {
        agent: turn.agent.as_ref().map(AgentAction::describe),
        say: String::new(),
        event: None,
        shop_event: Some(kind.to_string()),
        images: 0,
        channel: None,
        reply,
        by,
        intent: "none".into(),
        emotion: String::new(),
        handoff: None,
        handoff_to: None,
        trace: Vec::new(),
        script_errors: Vec::new(),
        failures,
    }
}

fn record(turn: &Turn, r: &TurnResponse) -> TurnRecord {
    let source = serde_json::to_value(r.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut by = source.clone();
    for name in [&r.rule, &r.promotion, &r.faq, &r.flow, &r.step].into_iter().flatten() {
        by.push(' ');
        by.push_str(name);
    }
    let intent = match &r.intent {
        Some(i) => format!("{i} {:.2}", r.confidence),
        None => "none".into(),
    };
    let mut failures = Vec::new();
    let e = &turn.expect;
    let mut check = |what: &str, expected: &str, actual: &str| {
        if expected != actual {
            failures.push(Failure::new(
                what,
                Some(expected),
                Some(actual),
                format!("{what}: expected `{expected}`, got `{actual}`"),
            ));
        }
    };
    if let Some(s) = e.source {
        let expected = serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        check("source", &expected, &source);
    }
    if let Some(x) = &e.rule {
        check("rule", x, r.rule.as_deref().unwrap_or("-"));
    }
    if let Some(x) = &e.flow {
        check("flow", x, r.flow.as_deref().unwrap_or("-"));
    }
    if let Some(x) = &e.promotion {
        check("promotion", x, r.promotion.as_deref().unwrap_or("-"));
    }
    if let Some(x) = &e.faq {
        check("faq", x, r.faq.as_deref().unwrap_or("-"));
    }
    if let Some(x) = &e.intent {
        check("intent", x, r.intent.as_deref().unwrap_or("none"));
    }
    if let Some(x) = &e.reply {
        check("reply", x, &r.reply);
    }
    if let Some(x) = &e.emotion {
        check("emotion", x, r.emotion.as_str());
    }
    if let Some(x) = &e.language {
        check("language", x, r.language.as_str());
    }
    if let Some(silent) = e.silent {
        let actual = r.reply.is_empty() && r.handoff.is_none();
        check("silent", &silent.to_string(), &actual.to_string());
    }
    if let Some(x) = &e.choices {
        check("choices", &format!("{x:?}"), &format!("{:?}", r.choices));
    }
    if let Some(x) = &e.step {
        let actual = r.step.as_deref().unwrap_or("-");
        if !actual.starts_with(x.as_str()) {
            failures.push(Failure::new(
                "step",
                Some(x),
                Some(actual),
                format!("step: expected `{x}`, got `{actual}`"),
            ));
        }
    }
    for part in &e.reply_contains {
        if !r.reply.contains(part.as_str()) {
            failures.push(Failure::new(
                "reply_contains",
                Some(part),
                Some(&r.reply),
                format!("reply should contain `{part}`: `{}`", r.reply),
            ));
        }
    }
    for part in &e.reply_excludes {
        if r.reply.contains(part.as_str()) {
            failures.push(Failure::new(
                "reply_excludes",
                Some(part),
                Some(&r.reply),
                format!("reply should not contain `{part}`: `{}`", r.reply),
            ));
        }
    }
    for part in &e.trace_contains {
        if !r
            .trace
            .iter()
            .any(|t| format!("{}: {}", t.stage, t.detail).contains(part.as_str()))
        {
            failures.push(Failure::new(
                "trace_contains",
                Some(part),
                None,
                format!("no trace line contains `{part}`"),
            ));
        }
    }
    // A script that fails at run time is a mistake in the rules the test caught, unless
    // the test is about exactly that failure.
    let script_errors: Vec<String> = r.script_errors.iter().map(ToString::to_string).collect();
    for error in &script_errors {
        if !e.script_errors.iter().any(|x| error.contains(x.as_str())) {
            failures.push(Failure::new(
                "script_errors",
                None,
                Some(error),
                format!("a script failed: {error}"),
            ));
        }
    }
    for x in &e.script_errors {
        if !script_errors.iter().any(|error| error.contains(x.as_str())) {
            failures.push(Failure::new(
                "script_errors",
                Some(x),
                None,
                format!("expected a script to fail in `{x}`; none did"),
            ));
        }
    }
    match (&e.handoff, &r.handoff) {
        (Some(HandoffExpect::Any(true)), None) => failures.push(Failure::new(
            "handoff",
            Some("true"),
            Some("none"),
            "expected a handoff, got none".into(),
        )),
        (Some(HandoffExpect::Any(false)), Some(h)) => failures.push(Failure::new(
            "handoff",
            Some("false"),
            Some(&h.reason),
            format!("expected no handoff, got `{}`", h.reason),
        )),
        (Some(HandoffExpect::Reason(x)), h) if h.as_ref().map(|h| &h.reason) != Some(x) => {
            let actual = h.as_ref().map_or("none", |h| h.reason.as_str());
            failures.push(Failure::new(
                "handoff",
                Some(x),
                Some(actual),
                format!("handoff: expected `{x}`, got `{actual}`"),
            ));
        }
        _ => {}
    }
    if let Some(kind) = &e.handoff_kind {
        let actual = r.handoff.as_ref().map_or("none", |h| h.kind.name());
        if actual != kind {
            failures.push(Failure::new(
                "handoff_kind",
                Some(kind),
                Some(actual),
                format!("handoff kind: expected `{kind}`, got `{actual}`"),
            ));
        }
    }
    if let Some(queue) = &e.queue {
        let actual = r.handoff.as_ref().and_then(|h| h.group.as_deref()).unwrap_or("none");
        if actual != queue {
            failures.push(Failure::new(
                "queue",
                Some(queue),
                Some(actual),
                format!("queue: expected `{queue}`, got `{actual}`"),
            ));
        }
    }
    if let Some(off) = e.off_hours {
        let actual = r.handoff.as_ref().is_some_and(|h| h.off_hours);
        if actual != off {
            failures.push(Failure::new(
                "off_hours",
                Some(&off.to_string()),
                Some(&actual.to_string()),
                format!("off_hours: expected {off}, got {actual}"),
            ));
        }
    }
    TurnRecord {
        agent: turn.agent.as_ref().map(AgentAction::describe),
        say: turn.say.clone(),
        event: turn.event.clone(),
        shop_event: None,
        images: turn.images.len(),
        channel: None,
        reply: r.reply.clone(),
        by,
        intent,
        emotion: r.emotion.as_str().to_string(),
        handoff: r.handoff.as_ref().map(|h| h.reason.clone()),
        handoff_to: r.handoff.as_ref().map(|h| {
            let mut to = format!("{} → {}", h.kind.name(), h.group.as_deref().unwrap_or("none"));
            if h.off_hours {
                to.push_str(" (off hours)");
            }
            to
        }),
        trace: r.trace.iter().map(|t| format!("{}: {}", t.stage, t.detail)).collect(),
        script_errors,
        failures,
    }
}

/// What the conversations exercised of the rule set.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Coverage {
    /// Rules that answered at least once / all rules.
    pub rules: (usize, usize),
    /// Promotions that answered / all.
    pub promotions: (usize, usize),
    /// Flow steps (lines) that ran / all.
    pub flow_steps: (usize, usize),
    /// What never ran.
    pub missing: Vec<Never>,
}

/// A rule, promotion or flow step no conversation test ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Never {
    /// `rule`, `promotion` or `flow step`.
    pub kind: &'static str,
    /// The rule's, promotion's or flow's name.
    pub name: String,
    /// The file it is written in, as the rule set records it.
    pub file: String,
    /// Its line.
    pub line: u32,
}

impl Never {
    /// `kind` `name` at `location` (`path:line`).
    fn at(kind: &'static str, name: &str, location: &str) -> Self {
        let (file, line) = location
            .rsplit_once(':')
            .and_then(|(f, l)| Some((f, l.parse().ok()?)))
            .unwrap_or((location, 0));
        Never {
            kind,
            name: name.to_string(),
            file: file.to_string(),
            line,
        }
    }
}

impl std::fmt::Display for Never {
    /// As `kefu test` prints it: `rule 七天无理由 (rules/aftersale.kefu:12)`, `flow 退货申请
    /// step at rules/aftersale.kefu:40`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            "flow step" => write!(f, "flow {} step at {}:{}", self.name, self.file, self.line),
            kind => write!(f, "{kind} {} ({}:{})", self.name, self.file, self.line),
        }
    }
}

/// Coverage of `rules` by the union of `covered` ids.
pub fn coverage(rules: &RuleSet, covered: &BTreeSet<String>) -> Coverage {
    let mut c = Coverage::default();
    for rule in &rules.rules {
        let id = format!("rule:{}", rule.name);
        c.rules.1 += 1;
        if covered.contains(&id) {
            c.rules.0 += 1;
        } else {
            c.missing.push(Never::at("rule", &rule.name, &rule.location));
        }
    }
    for promo in &rules.promotions {
        c.promotions.1 += 1;
        if covered.contains(&format!("promotion:{}", promo.name)) {
            c.promotions.0 += 1;
        } else {
            c.missing.push(Never::at("promotion", &promo.name, &promo.location));
        }
    }
    for flow in &rules.flows {
        // Steps are counted by line: one source step may compile to several instructions
        // (an `if` with its jumps), and the synthetic ones cannot all be reached.
        let lines: BTreeSet<u32> = flow
            .ops
            .iter()
            .filter(|op| !matches!(op.kind, OpKind::Jump(_)))
            .map(|op| op.line)
            .collect();
        for line in lines {
            c.flow_steps.1 += 1;
            if covered.contains(&format!("flow:{}:{line}", flow.name)) {
                c.flow_steps.0 += 1;
            } else {
                let file = flow
                    .location
                    .rsplit_once(':')
                    .map_or(flow.location.as_str(), |(f, _)| f);
                c.missing
                    .push(Never::at("flow step", &flow.name, &format!("{file}:{line}")));
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_actions_read_as_words_or_one_key_and_a_bad_one_says_what_is_allowed() {
        let read = |yaml: &str| serde_yaml::from_str::<AgentAction>(yaml).map_err(|e| e.to_string());
        assert_eq!(read("takeover"), Ok(AgentAction::Takeover));
        assert_eq!(read("release"), Ok(AgentAction::Release { resume: false }));
        assert_eq!(read("{release: resume}"), Ok(AgentAction::Release { resume: true }));
        assert_eq!(read("{release: cancel}"), Ok(AgentAction::Release { resume: false }));
        assert_eq!(read("{reply: 您好}"), Ok(AgentAction::Reply("您好".into())));
        assert_eq!(read("{note: 色差}"), Ok(AgentAction::Note("色差".into())));
        assert_eq!(read("{resolve: solved}"), Ok(AgentAction::Resolve("solved".into())));
        assert!(read("wave").unwrap_err().contains("unknown agent action `wave`"));
        assert!(read("{release: later}").unwrap_err().contains("release: resume"));
        assert!(
            read("{reply: a, note: b}")
                .unwrap_err()
                .contains("one agent action a turn")
        );
        assert!(read("{sing: a}").unwrap_err().contains("unknown agent action `sing`"));
    }

    #[test]
    fn an_act_the_engine_refuses_fails_its_turn_and_the_transcript_shows_acts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("shop.kefu"),
            "shop \"小店\" {\n}\nrule 发票 {\n  on keywords \"发票\"\n  reply \"好的\"\n}\n",
        )
        .unwrap();
        let options = crate::dsl::LoadOptions {
            quick_training: true,
            ..Default::default()
        };
        let rules = Arc::new(crate::dsl::load_dir_with(dir.path(), options).rules.expect("compiles"));
        let conversation: Conversation = serde_yaml::from_str(
            "name: t\nturns:\n  - say: 发票\n  - say: 发票\n    agent: { reply: 您好 }\n  - say: 发票\n    agent: takeover\n    expect: { source: human }\n",
        )
        .unwrap();
        let outcome = run(&rules, &conversation, Path::new("t.yaml"));
        assert!(!outcome.passed());
        assert!(outcome.turns[0].failures.is_empty() && outcome.turns[0].agent.is_none());
        let failures: Vec<String> = outcome.turns[1].failures.iter().map(ToString::to_string).collect();
        assert_eq!(
            failures,
            ["the agent's `reply: 您好` was refused: session `t` is not taken over by a human"]
        );
        assert_eq!(outcome.turns[2].agent.as_deref(), Some("takeover"));
        assert!(outcome.turns[2].failures.is_empty(), "{:?}", outcome.turns[2]);
    }

    #[test]
    fn a_slug_keeps_the_name_and_is_never_a_path() {
        assert_eq!(slug("换颜色 / VIP"), "换颜色-VIP");
        assert_eq!(slug("../../etc/passwd"), "etc-passwd");
        assert_eq!(slug(".hidden"), "hidden");
        assert_eq!(slug("a\\b:c"), "a-b-c");
        assert_eq!(slug("？！"), "test");
        assert_eq!(slug(&"长".repeat(100)).chars().count(), 64);
    }

    #[test]
    fn a_saved_test_loads_back_and_a_bad_one_is_refused() {
        let test = serde_json::json!({
            "name": "换颜色",
            "user": { "segment": "vip" },
            "turns": [ { "say": "我想换个颜色", "expect": { "source": "flow", "flow": "换货申请", "reply_contains": ["订单号"] } } ],
        });
        let text = to_yaml(&test).unwrap();
        let back: Conversation = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back.name, "换颜色");
        assert_eq!(back.turns[0].say, "我想换个颜色");
        assert_eq!(back.turns[0].expect.flow.as_deref(), Some("换货申请"));
        assert_eq!(back.turns[0].expect.reply_contains, ["订单号"]);
        let bad = serde_json::json!({ "name": "x", "turns": [ { "say": "你好", "expect": { "nonsense": 1 } } ] });
        assert!(to_yaml(&bad).unwrap_err().contains("nonsense"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tests/换颜色.yaml");
        write_new(&path, &text).unwrap();
        assert_eq!(
            write_new(&path, "other").unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        // The temporary file is gone.
        assert_eq!(std::fs::read_dir(dir.path().join("tests")).unwrap().count(), 1);
    }
}
