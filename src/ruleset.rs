//! The compiled rule set: the immutable snapshot of everything under `rules/`.
//!
//! A [`RuleSet`] is built whole by `dsl::load_dir` (the compiler above it) or not at all;
//! the runtime never sees the syntax tree. Names are resolved to indices, expressions and
//! templates are compiled, regexes built, word lists read, data sources loaded, and the
//! keywords of every rule, promotion, flow start and intent compiled into one Aho-Corasick
//! automaton so that finding candidates never scans every rule.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use chrono::DateTime;
use chrono_tz::Tz;

use crate::diag::Span;
use crate::kb::KnowledgeBase;
use crate::nlu::Nlu;
use crate::safety::Safety;
use crate::script::{Localized, Script, Texts};

pub use crate::nlu::Lang;

// Defined where they are used at run time, understanding and scripts, which know nothing
// of the rule set; named here too because a rule set is made of them.
pub use crate::nlu::{Entity, EntityMatcher, Intent};
pub use crate::script::sources::{Source, SourceKind};

/// Everything a turn needs to know about the shop's rules, compiled.
pub struct RuleSet {
    /// A short content hash of every file, shown in responses and logs.
    pub version: String,
    /// The rules directory.
    pub root: PathBuf,
    /// Every file read, relative to `root`.
    pub files: Vec<PathBuf>,
    /// The `shop` block.
    pub shop: Shop,
    /// Declared intents, in file order.
    pub intents: Vec<Intent>,
    /// Declared entities.
    pub entities: Vec<Entity>,
    /// Data sources.
    pub sources: Vec<Source>,
    /// Rules in answer order: higher priority first, then file order.
    pub rules: Vec<Rule>,
    /// Promotions in answer order.
    pub promotions: Vec<Promotion>,
    /// Policies, in file order.
    pub policies: Vec<Policy>,
    /// Flows, in file order.
    pub flows: Vec<Flow>,
    /// Styles, in file order; the first whose `when` holds applies.
    pub styles: Vec<Style>,
    /// Fallback arms in order; `otherwise llm` when the files have no `fallback`.
    pub fallback: Vec<FallbackArm>,
    /// Word lists, allow list and PII kinds, compiled into matchers.
    pub safety: Safety,
    /// Candidate lookup by keyword, intent and entity.
    pub triggers: TriggerIndex,
    /// Understanding: the intent classifier trained on `intents`, the entity recognisers
    /// (`entities` and the built-ins) and the emotion lexicon.
    pub nlu: Nlu,
    /// Products and FAQ from `kb/*.yaml`, indexed for FAQ answers, prompt passages and
    /// recommendations.
    pub kb: Arc<KnowledgeBase>,
    /// The sandboxed script engine with the sources and host functions registered
    /// ([`script::rule_set_engine`](crate::script::rule_set_engine)).
    pub engine: rhai::Engine,
    /// Where the scripts that read the `promotions` variable are: a turn works it out
    /// (each promotion's audience and text) only when the first of them is about to run,
    /// so turns that run none of them do not pay for it.
    pub promotion_readers: Vec<Span>,
    /// Whether any script reads the `safety` variable: a turn builds it only then, as
    /// most rule sets never read it and every turn would pay for the map.
    pub reads_safety: bool,
    /// Whether any script reads the `memory` variable: a turn builds it from the
    /// session's remembered values only then.
    pub reads_memory: bool,
    /// Whether any script may read `session.history`, `session.last_message` or
    /// `session.last_reply`: they are built only then, so a rule set that never reads
    /// them does not pay for 20 maps and two texts a turn.
    pub reads_past: bool,
    /// Whether any script reads the `all_entities` variable: a turn builds its lists only
    /// then.
    pub reads_all_entities: bool,
    /// The message kinds (`card` items), in file order.
    pub cards: Vec<Card>,
    /// Whether any script reads the `intents` variable: a turn builds the list only then.
    pub reads_intents: bool,
    /// The agents' queues (`queue` items) in routing order: higher `priority` first, then
    /// file order. Read only when a turn hands off.
    pub queues: Vec<Queue>,
    /// The queue without `for` (an index into `queues`): where a handoff no other queue
    /// takes waits.
    pub default_queue: Option<usize>,
    /// The `proactive` items, highest `priority` first, then file order.
    pub proactive: Vec<Proactive>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("version", &self.version)
            .field("shop", &self.shop.name)
            .field("intents", &self.intents.len())
            .field("rules", &self.rules.len())
            .field("promotions", &self.promotions.len())
            .field("flows", &self.flows.len())
            .field("products", &self.kb.products.len())
            .field("faqs", &self.kb.faqs.len())
            .finish_non_exhaustive()
    }
}

impl RuleSet {
    /// The rule with this name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The flow with this name.
    pub fn flow(&self, name: &str) -> Option<&Flow> {
        self.flows.iter().find(|f| f.name == name)
    }

    /// The queue with this name.
    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.name == name)
    }

    /// The intent with this name.
    pub fn intent(&self, name: &str) -> Option<&Intent> {
        self.intents.iter().find(|i| i.name == name)
    }

    /// Policies whose `applies` matches any of `targets`, in the order they are written.
    /// The model step passes the understood intent and its levels (`售后.退货` and `售后`,
    /// say), so a policy that applies to a level reaches the intents under it.
    pub fn policies_for<'a>(&'a self, targets: &[&str]) -> impl Iterator<Item = &'a Policy> {
        self.policies
            .iter()
            .filter(move |p| p.applies.iter().any(|pat| targets.iter().any(|t| pat.matches(t))))
    }
}

/// The `shop` block, with defaults filled in.
#[derive(Clone, Debug)]
pub struct Shop {
    /// The shop's name.
    pub name: String,
    /// Who the assistant is.
    pub persona: String,
    /// The zone dates are read in.
    pub timezone: Tz,
    /// The least intent confidence at which rules answer.
    pub threshold: f64,
    /// The least confidence at which a model answer is shown.
    pub model_threshold: f64,
    /// The least confidence at which a knowledge-base FAQ entry answers on its own.
    pub faq_threshold: f64,
    /// The languages the shop serves (`languages "zh", "en"`), its own first; `zh` when
    /// it declares none. Texts may have a variant for each; the turn's language is one
    /// of them.
    pub languages: Vec<Lang>,
    /// `translate llm`: a text missing the turn's language is translated by the model
    /// (when one is configured), instead of shown in the shop's language.
    pub translate: bool,
    /// What the customer is told on handoff.
    pub handoff_message: Localized<String>,
    /// The reply when nothing answers and no model is available.
    pub fallback_message: Localized<String>,
    /// Request-context maps scripts may read.
    pub context: Vec<String>,
    /// Said before a flow's question when a reload removed the question the conversation
    /// was waiting on and the flow asks the first unanswered one instead.
    pub flow_updated_message: Localized<String>,
    /// Said when the customer is done: a goodbye ("没有了", "拜拜"), or a no to "还有其他可以帮您的吗？".
    pub goodbye_message: Localized<String>,
    /// Said to an acknowledgement ("嗯", "好的", "哦") when kefu had asked nothing; it is not a failure.
    pub ack_message: Localized<String>,
    /// Said when the customer answers yes to "还有其他可以帮您的吗？" without saying what.
    pub more_message: Localized<String>,
    /// A `confirm` step's question in other words, asked after a reply that was neither yes nor no (when the step has no `reask`).
    pub confirm_again_message: Localized<String>,
    /// Promotions that start within this many days are upcoming: scripts see them in
    /// `promotions.upcoming`, and model prompts mention them with their start.
    pub upcoming_days: u32,
    /// How long a flow waits for the customer (`flow_timeout`; a flow's own `timeout`
    /// comes first): a flow left waiting longer is dropped at the next message.
    pub flow_timeout: std::time::Duration,
    /// How many questions of one message are answered (`max_answers`): a message asking
    /// several is split into its questions (`nlu::split`) and up to this many are
    /// answered, in one reply; 1 answers every message as one question.
    pub max_answers: usize,
    /// `proactive_limit 2`: at most this many proactive messages per customer per shop
    /// day, all triggers together (2 when not given).
    pub proactive_limit: u32,
    /// `quiet_hours 22:00 to 08:00`: when no proactive message is sent, unless an item
    /// says otherwise (22:00 to 08:00 when not given).
    pub quiet_hours: Option<QuietHours>,
    /// `opt_out_message "..."`: the answer to a customer who asks for no more proactive
    /// messages ("别再推送了").
    pub opt_out_message: Localized<String>,
}

impl Shop {
    /// The shop's own language: the first it declares.
    pub fn language(&self) -> Lang {
        self.languages.first().copied().unwrap_or(Lang::ZH)
    }
}

/// `售后.退货` or `售后.*` or `*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntentPattern {
    /// The path before `.*` (empty for `*`).
    pub path: String,
    /// Whether children match too.
    pub wildcard: bool,
}

impl IntentPattern {
    /// Reads `售后.*`, `*` or an exact path.
    pub fn parse(text: &str) -> Self {
        match text.strip_suffix(".*") {
            Some(path) => IntentPattern {
                path: path.to_string(),
                wildcard: true,
            },
            None if text == "*" => IntentPattern {
                path: String::new(),
                wildcard: true,
            },
            None => IntentPattern {
                path: text.to_string(),
                wildcard: false,
            },
        }
    }

    /// Whether an intent (or intent prefix such as `售后`) matches.
    pub fn matches(&self, intent: &str) -> bool {
        if !self.wildcard {
            return intent == self.path;
        }
        self.path.is_empty()
            || intent == self.path
            || intent
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
    }
}

impl std::fmt::Display for IntentPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.path.is_empty(), self.wildcard) {
            (true, true) => f.write_str("*"),
            (false, true) => write!(f, "{}.*", self.path),
            _ => f.write_str(&self.path),
        }
    }
}

/// What makes a rule, promotion or flow a candidate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Trigger {
    /// Any of these keywords occurs in the normalized message.
    Keywords(Vec<String>),
    /// The message contains this entity.
    Entity(String),
    /// The classifier is confident in a matching intent.
    Intents(Vec<IntentPattern>),
    /// The turn is this platform event (`TurnRequest::event`), not a message.
    Event(String),
    /// The message carries at least one image (`on image`), with or without text.
    Image,
    /// The message is a clear yes (`yes`) or no to the offer the rule `rule` made in
    /// kefu's last reply (`session.asked_rule`): `on yes to RULE`, `on no to RULE`.
    Answer {
        /// The rule whose reply asked.
        rule: String,
        /// A yes (true) or a no (false).
        yes: bool,
    },
}

/// A change to the conversation's memory (`Session::memory`), run by a rule after its
/// `when` holds and before its reply, or as a flow step.
#[derive(Clone, Debug)]
pub enum Memo {
    /// `` remember NAME = `expr` ``: keep the value (`()` forgets).
    Remember {
        /// The name scripts read as `memory.NAME`.
        name: String,
        /// The value.
        value: Script,
    },
    /// `forget NAME`
    Forget(String),
}

/// A message kind the platform inserts into a customer's message (a `card` item): an
/// order card `[订单编号:…，订单金额:…]`. A turn finds it in the message, makes its named
/// groups the request-context map `context` (and remembers them for the conversation),
/// cuts its text out of the message before understanding, and answers a card sent alone
/// with `alone` (docs/language.md, "Cards").
#[derive(Clone, Debug)]
pub struct Card {
    /// Its name (`on card NAME`; also the entity its matches are in `entities`).
    pub name: String,
    /// How it is found; it has named groups, its fields.
    pub regex: regex::Regex,
    /// The request-context map its fields become (`order`).
    pub context: String,
    /// The answer to a card sent with nothing else, if the card has one.
    pub alone: Option<Texts>,
    /// `file:line` of its name, for traces.
    pub location: String,
}

/// A deterministic answer.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Its name.
    pub name: String,
    /// Any of these makes it a candidate.
    pub triggers: Vec<Trigger>,
    /// It answers only when this holds.
    pub when: Option<Script>,
    /// The reply, if it replies.
    pub reply: Option<Texts>,
    /// Set when it hands the conversation to people.
    pub handoff: Option<HandoffSpec>,
    /// Higher answers first.
    pub priority: i64,
    /// What it does to a flow waiting when it answers (`end flow`, `cancel flow`).
    pub flow_action: Option<FlowAction>,
    /// Where it is written.
    pub span: Span,
    /// `file:line` of its name, for traces.
    pub location: String,
    /// `remember` and `forget` lines, in order.
    pub memos: Vec<Memo>,
}

/// `proactive NAME { on event … when … say … offer … limit … quiet … }`: a message kefu
/// sends first, when an event the shop reports (`POST /v1/events`) holds its condition.
#[derive(Clone, Debug)]
pub struct Proactive {
    /// Its name (the trigger, in the log, the report and the metrics).
    pub name: String,
    /// The event types it listens for (`on event checkout_abandoned`; any of them).
    pub events: Vec<String>,
    /// It sends only when this holds (scope: `event`, `user`, `session`, `now`...).
    pub when: Option<Script>,
    /// The message (a template that may read `event`).
    pub say: Texts,
    /// `offer PROMOTION`: the promotion's text appended when it is on for the customer.
    pub offer: Option<String>,
    /// At most this many of this trigger's messages per customer per shop day (`limit 1 per day`).
    pub per_day: u32,
    /// Hours in which it never sends (`quiet 22:00 to 08:00`); the shop's `quiet_hours`
    /// when absent.
    pub quiet: Option<QuietHours>,
    /// Higher is tried first; equal priorities go in file order.
    pub priority: i64,
    /// Where it is written.
    pub span: Span,
    /// `file:line` of its name, for traces and the log.
    pub location: String,
}

/// The entity of a flow's `ask SLOT as image "…"` (`OpKind::Ask { entity: Some("image") }`):
/// the slot is filled with the id of the first image the customer's answer carries; a text
/// without one is a miss. Built in: declaring `entity image` is an error.
pub const IMAGE_SLOT: &str = "image";

/// Proactive messages per customer per shop day when the shop sets no `proactive_limit`.
pub const DEFAULT_PROACTIVE_LIMIT: u32 = 2;
/// Quiet hours when the shop sets no `quiet_hours`: 22:00 to 08:00.
pub const DEFAULT_QUIET_HOURS: QuietHours = QuietHours {
    from: match chrono::NaiveTime::from_hms_opt(22, 0, 0) {
        Some(t) => t,
        None => panic!("valid time"),
    },
    to: match chrono::NaiveTime::from_hms_opt(8, 0, 0) {
        Some(t) => t,
        None => panic!("valid time"),
    },
};
/// The answer to "别再推送了" when the shop sets no `opt_out_message`.
pub const DEFAULT_OPT_OUT_MESSAGE: &str = "好的，以后不再主动给您发消息了。有需要随时找我哦～";

/// A daily span of quiet hours in the shop's zone; `from` after `to` runs past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietHours {
    /// First quiet minute.
    pub from: chrono::NaiveTime,
    /// First minute that is not quiet again.
    pub to: chrono::NaiveTime,
}

impl QuietHours {
    /// Whether the time of day `t` is inside the quiet hours.
    pub fn contains(&self, t: chrono::NaiveTime) -> bool {
        if self.from <= self.to {
            self.from <= t && t < self.to
        } else {
            t >= self.from || t < self.to
        }
    }
}

/// What a rule does to the flow waiting for the customer when it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowAction {
    /// `end flow`: the flow ends; the slots it filled stay for later rules.
    End,
    /// `cancel flow`: the flow is cancelled; what the customer told it is forgotten.
    Cancel,
}

/// A campaign answer, on inside a time window for some users.
#[derive(Clone, Debug)]
pub struct Promotion {
    /// Its name.
    pub name: String,
    /// When it starts, in the shop's zone.
    pub from: DateTime<Tz>,
    /// When it ends (inclusive).
    pub to: DateTime<Tz>,
    /// Who it is for; everyone when absent.
    pub audience: Option<Script>,
    /// The reply.
    pub say: Texts,
    /// What makes it answer; with none it is only mentioned in model prompts.
    pub triggers: Vec<Trigger>,
    /// Higher answers first.
    pub priority: i64,
    /// Where it is written.
    pub span: Span,
    /// `file:line` of its name, for traces.
    pub location: String,
}

impl Promotion {
    /// Whether `at` falls inside the window.
    pub fn is_on<T: chrono::TimeZone>(&self, at: &DateTime<T>) -> bool {
        let at = at.with_timezone(&self.from.timezone());
        self.from <= at && at <= self.to
    }
}

/// Text injected into model prompts for matching intents.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Its name.
    pub name: String,
    /// The intents it is about.
    pub applies: Vec<IntentPattern>,
    /// The policy.
    pub text: String,
}

/// A multi-turn conversation, compiled to a small program of [`Op`]s.
#[derive(Clone, Debug)]
pub struct Flow {
    /// Its name.
    pub name: String,
    /// What starts it.
    pub starts: Vec<FlowStart>,
    /// The program; execution starts at 0 and the flow ends when it runs off the end.
    pub ops: Vec<Op>,
    /// Every slot an `ask` fills.
    pub slots: BTreeSet<String>,
    /// `cancel on keywords`: the short messages that cancel it, in place of the built-in
    /// words (算了, 不用了, 取消, …).
    pub cancel_words: Option<Vec<String>>,
    /// `cancel reply`: what the customer is told when it is cancelled.
    pub cancel_reply: Option<Texts>,
    /// `timeout`: how long it waits for the customer, in place of the shop's
    /// `flow_timeout`.
    pub timeout: Option<std::time::Duration>,
    /// Where it is written.
    pub span: Span,
    /// `file:line` of its name, for traces.
    pub location: String,
}

impl Flow {
    /// The program as text, one instruction a line: `3: ask order_id (retry 2, else 9)`.
    /// Used by traces and by tests that pin down what a flow compiles to.
    pub fn listing(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (i, op) in self.ops.iter().enumerate() {
            let _ = writeln!(out, "{i}: {}", op.kind);
        }
        out
    }

    /// The index of the `ask` that fills `slot`.
    pub fn ask_index(&self, slot: &str) -> Option<usize> {
        self.ops
            .iter()
            .position(|op| matches!(&op.kind, OpKind::Ask { slot: s, .. } if s == slot))
    }
}

/// `start on TRIGGER when COND`.
#[derive(Clone, Debug)]
pub struct FlowStart {
    /// What starts the flow.
    pub trigger: Trigger,
    /// An extra condition.
    pub when: Option<Script>,
}

/// One instruction of a flow.
#[derive(Clone, Debug)]
pub struct Op {
    /// The step it came from.
    pub span: Span,
    /// The line of that step in its file; flow coverage counts steps by line.
    pub line: u32,
    /// What it does.
    pub kind: OpKind,
}

/// What a flow instruction does.
#[derive(Clone, Debug)]
pub enum OpKind {
    /// Ask a question and wait for the slot.
    Ask {
        /// The slot to fill.
        slot: String,
        /// The entity that fills it; the whole message when `None`.
        entity: Option<String>,
        /// The question.
        prompt: Texts,
        /// What to say when asking again, one per re-ask in turn, the last one repeated;
        /// empty: the question again.
        reasks: Vec<Texts>,
        /// How many times to ask again after a reply that does not fill the slot.
        retries: u32,
        /// Where to go when retries run out; the flow ends there when `None`.
        exhausted: Option<usize>,
        /// A `confirm` step: only a clear yes fills the slot (with "yes"), a clear no
        /// cancels the flow, and a question is answered by the rules before asking again.
        confirm: bool,
    },
    /// Bind a variable.
    Set {
        /// The variable.
        name: String,
        /// Its value.
        value: Script,
    },
    /// Go to `target` unless `cond` holds.
    JumpUnless {
        /// The condition.
        cond: Script,
        /// Where to go when it does not hold.
        target: usize,
    },
    /// Go to `target`.
    Jump(usize),
    /// Run an action for its effect.
    Call(Script),
    /// Remember or forget a value for the conversation.
    Memo(Memo),
    /// Say something.
    Reply(Texts),
    /// End the flow and hand over to people.
    Handoff(HandoffSpec),
    /// End the flow.
    End,
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpKind::Ask {
                slot,
                entity,
                retries,
                exhausted,
                reasks,
                confirm,
                ..
            } => {
                write!(f, "{} {slot}", if *confirm { "confirm" } else { "ask" })?;
                if let Some(e) = entity.as_ref().filter(|e| *e != slot) {
                    write!(f, " as {e}")?;
                }
                write!(f, " (retry {retries}")?;
                if !reasks.is_empty() {
                    write!(f, ", reask {}", reasks.len())?;
                }
                match exhausted {
                    Some(at) => write!(f, ", else {at})"),
                    None => write!(f, ", else end)"),
                }
            }
            OpKind::Set { name, value } => write!(f, "set {name} = `{}`", value.source),
            OpKind::JumpUnless { cond, target } => write!(f, "unless `{}` goto {target}", cond.source),
            OpKind::Jump(target) => write!(f, "goto {target}"),
            OpKind::Call(script) => write!(f, "call `{}`", script.source),
            OpKind::Memo(Memo::Remember { name, value }) => write!(f, "remember {name} = `{}`", value.source),
            OpKind::Memo(Memo::Forget(name)) => write!(f, "forget {name}"),
            OpKind::Reply(_) => write!(f, "reply"),
            OpKind::Handoff(spec) => {
                f.write_str("handoff")?;
                if let Some(reason) = &spec.reason {
                    write!(f, " \"{reason}\"")?;
                }
                write!(f, " as {}", spec.kind.name())
            }
            OpKind::End => write!(f, "end"),
        }
    }
}

/// A `handoff` as written: `handoff "reason" as KIND to QUEUE`, each part optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandoffSpec {
    /// Why, for the agent (`None`: the place names it, `rule 转人工`).
    pub reason: Option<String>,
    /// `as KIND`, or the kind the place implies (a rule's `rule`, a flow's retries used
    /// up `repeated_failure`, a fallback arm by what its condition reads).
    pub kind: HandoffKind,
    /// `to QUEUE`: an index into `RuleSet::queues`; `None` routes by the queues' `for`.
    pub to: Option<usize>,
}

/// Why a conversation went to a person.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffKind {
    /// A rule or flow step says `handoff` (the default for a rule's handoff).
    #[default]
    Rule,
    /// No confident answer: the fallback chain's handoff.
    LowConfidence,
    /// The customer is angry (a handoff whose condition reads `emotion`).
    Anger,
    /// Failures in a row: a fallback reading `session.failures`, a flow's retries used up.
    RepeatedFailure,
    /// The customer asked for a person (`handoff … as asked`).
    Asked,
    /// An agent took it over from the bot on their own.
    Agent,
}

impl HandoffKind {
    /// Every kind, in label order.
    pub const ALL: [HandoffKind; 6] = [
        HandoffKind::Rule,
        HandoffKind::LowConfidence,
        HandoffKind::Anger,
        HandoffKind::RepeatedFailure,
        HandoffKind::Asked,
        HandoffKind::Agent,
    ];

    /// The kind's name: its JSON form, the word after `as` in the rule language and the
    /// `kind` label of the metrics.
    pub fn name(self) -> &'static str {
        match self {
            HandoffKind::Rule => "rule",
            HandoffKind::LowConfidence => "low_confidence",
            HandoffKind::Anger => "anger",
            HandoffKind::RepeatedFailure => "repeated_failure",
            HandoffKind::Asked => "asked",
            HandoffKind::Agent => "agent",
        }
    }

    /// The kind named `name` ([`HandoffKind::name`]).
    pub fn parse(name: &str) -> Option<HandoffKind> {
        HandoffKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A group of agents a handoff waits for (`queue NAME { … }`).
#[derive(Clone, Debug)]
pub struct Queue {
    /// Its name (`to NAME`, `Takeover::group`).
    pub name: String,
    /// What people see it called (`label`; the name when absent).
    pub label: Localized<String>,
    /// `for`: the handoffs it takes; `None` for the default queue.
    pub audience: Option<Script>,
    /// Higher is tried first.
    pub priority: i64,
    /// When people answer (`hours`, in the shop's zone); `None`: always.
    pub hours: Option<Hours>,
    /// What the customer is told when a handoff comes outside `hours` (a ticket is
    /// raised and the bot keeps the conversation).
    pub off_hours: Option<Texts>,
    /// Said after the handoff message when the customer starts waiting; its holes may
    /// read `queue.position`, `queue.wait_minutes` and `queue.label`.
    pub waiting: Option<Texts>,
    /// `file:line` of its name, for traces.
    pub location: String,
}

/// A queue's opening hours: `"mon-fri 09:00-18:00, sat-sun 10:00-16:00"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hours {
    /// The windows; open when any holds.
    pub windows: Vec<Window>,
}

/// One window of [`Hours`]: on some weekdays, from a time of day to another; an end at
/// or before the start runs past midnight into the next day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The weekdays it starts on, bit 0 Monday … bit 6 Sunday.
    pub days: u8,
    /// Minutes after midnight it opens.
    pub start: u32,
    /// Minutes after midnight it closes (up to 1440).
    pub end: u32,
}

impl Hours {
    /// Whether people answer at `at`, a shop-local time.
    pub fn is_open(&self, at: chrono::NaiveDateTime) -> bool {
        use chrono::{Datelike, Timelike};
        let day = at.weekday().num_days_from_monday();
        let before = (day + 6) % 7;
        let minute = at.hour() * 60 + at.minute();
        self.windows.iter().any(|w| {
            let on = |d: u32| w.days & (1 << d) != 0;
            if w.start < w.end {
                on(day) && (w.start..w.end).contains(&minute)
            } else {
                (on(day) && minute >= w.start) || (on(before) && minute < w.end)
            }
        })
    }
}

/// Tone and sampling for a group of users.
#[derive(Clone, Debug)]
pub struct Style {
    /// Its name.
    pub name: String,
    /// Who it is for; everyone when absent.
    pub when: Option<Script>,
    /// How the model should sound.
    pub tone: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
}

/// One arm of the fallback chain.
#[derive(Clone, Debug)]
pub struct FallbackArm {
    /// `None` for `otherwise`.
    pub when: Option<Script>,
    /// What to do.
    pub action: FallbackAction,
}

/// What a fallback arm does.
#[derive(Clone, Debug)]
pub enum FallbackAction {
    /// Hand over to people.
    Handoff {
        /// Why, of which kind, to which queue.
        handoff: HandoffSpec,
        /// What the customer is told instead of the shop's `handoff_message`.
        reply: Option<Texts>,
    },
    /// Reply with a template.
    Reply(Texts),
    /// Ask the model.
    Llm(ModelCall),
}

/// How a fallback arm asks the model (`llm style 安抚 within 4s`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelCall {
    /// The style with this index, or the first whose condition holds.
    pub style: Option<usize>,
    /// How long the answer may take before the next arm runs; the engine's model timeout
    /// when not given.
    pub within: Option<std::time::Duration>,
}

/// Who a keyword, intent or entity makes a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// `rules[i]`.
    Rule(usize),
    /// `promotions[i]`.
    Promotion(usize),
    /// `flows[flow].starts[start]`.
    FlowStart {
        /// The flow.
        flow: usize,
        /// Which of its starts.
        start: usize,
    },
    /// `intents[i]` (its keywords).
    Intent(usize),
}

/// Candidate lookup: one automaton over every keyword, and maps from intents and
/// entities to the items they trigger.
#[derive(Clone, Debug, Default)]
pub struct TriggerIndex {
    automaton: Option<AhoCorasick>,
    /// The owners of each automaton pattern.
    owners: Vec<Vec<Owner>>,
    /// Owners of exact intent triggers (`on 售后.退货`), by path: they answer when the
    /// best intent is exactly that path.
    by_intent: HashMap<String, Vec<Owner>>,
    /// Owners of pattern triggers (`on 售后.*`), expanded at build time to every declared
    /// intent and ancestor they match, so a lookup is one hash probe per intent level.
    by_pattern: HashMap<String, Vec<Owner>>,
    /// Owners triggered by `*`.
    any_intent: Vec<Owner>,
    /// Owners by entity name.
    by_entity: HashMap<String, Vec<Owner>>,
    /// Owners of `on yes to RULE` / `on no to RULE`, by the rule and yes (true) or no.
    by_answer: HashMap<(String, bool), Vec<Owner>>,
    /// Owners of `on event NAME`, by the event's name.
    by_event: HashMap<String, Vec<Owner>>,
    /// Owners of `on image` (rules, promotions, flow starts), in index order.
    by_image: Vec<Owner>,
}

impl TriggerIndex {
    /// Builds the index. `keywords` pairs each keyword with its owner; `intents` lists
    /// every declared intent path.
    pub(crate) fn build(
        keywords: Vec<(String, Owner)>,
        intent_triggers: Vec<(IntentPattern, Owner)>,
        entity_triggers: Vec<(String, Owner)>,
        intents: &[String],
    ) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        let mut owners: Vec<Vec<Owner>> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (keyword, owner) in keywords {
            let folded = keyword.to_lowercase();
            let id = *seen.entry(folded.clone()).or_insert_with(|| {
                patterns.push(folded);
                owners.push(Vec::new());
                patterns.len() - 1
            });
            if !owners[id].contains(&owner) {
                owners[id].push(owner);
            }
        }
        let automaton = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(&patterns)
                .expect("keyword automaton within size limits")
        });

        let mut paths: BTreeSet<String> = BTreeSet::new();
        for intent in intents {
            let mut prefix = String::new();
            for (i, level) in intent.split('.').enumerate() {
                if i > 0 {
                    prefix.push('.');
                }
                prefix.push_str(level);
                paths.insert(prefix.clone());
            }
        }
        let mut by_intent: HashMap<String, Vec<Owner>> = HashMap::new();
        let mut by_pattern: HashMap<String, Vec<Owner>> = HashMap::new();
        let mut any_intent = Vec::new();
        for (pattern, owner) in intent_triggers {
            if pattern.wildcard && pattern.path.is_empty() {
                any_intent.push(owner);
            } else if !pattern.wildcard {
                by_intent.entry(pattern.path.clone()).or_default().push(owner);
            } else {
                for path in paths.iter().filter(|p| pattern.matches(p)) {
                    by_pattern.entry(path.clone()).or_default().push(owner);
                }
            }
        }
        let mut by_entity: HashMap<String, Vec<Owner>> = HashMap::new();
        for (entity, owner) in entity_triggers {
            by_entity.entry(entity).or_default().push(owner);
        }
        TriggerIndex {
            automaton,
            owners,
            by_intent,
            by_pattern,
            any_intent,
            by_entity,
            by_answer: HashMap::new(),
            by_event: HashMap::new(),
            by_image: Vec::new(),
        }
    }

    /// Owners with a keyword in `text` (already normalized), each once, in index order.
    pub fn keyword_owners(&self, text: &str) -> BTreeSet<Owner> {
        let mut found = BTreeSet::new();
        if let Some(automaton) = &self.automaton {
            for m in automaton.find_overlapping_iter(text) {
                found.extend(self.owners[m.pattern().as_usize()].iter().copied());
            }
        }
        found
    }

    /// Owners of exact triggers on this intent (`on 售后.退货` for `售后.退货`) and of `*`:
    /// look up the best intent when it is confident.
    pub fn intent_owners(&self, intent: &str) -> impl Iterator<Item = Owner> + '_ {
        self.by_intent
            .get(intent)
            .into_iter()
            .flatten()
            .chain(&self.any_intent)
            .copied()
    }

    /// Owners of pattern triggers that cover this intent level (`on 售后.*` for `售后` or
    /// `售后.退货`): look up every level whose aggregated confidence is high enough.
    pub fn pattern_owners(&self, level: &str) -> impl Iterator<Item = Owner> + '_ {
        self.by_pattern.get(level).into_iter().flatten().copied()
    }

    /// Owners triggered by an entity.
    pub fn entity_owners(&self, entity: &str) -> impl Iterator<Item = Owner> + '_ {
        self.by_entity.get(entity).into_iter().flatten().copied()
    }

    /// The index with the owners of answer triggers (`on yes to RULE`): each pairs the
    /// rule and yes (true) or no with its owner.
    pub(crate) fn with_answers(mut self, answers: Vec<((String, bool), Owner)>) -> Self {
        for (key, owner) in answers {
            self.by_answer.entry(key).or_default().push(owner);
        }
        self
    }

    /// Owners of `on yes to RULE` (`yes`) or `on no to RULE`.
    pub fn answer_owners(&self, rule: &str, yes: bool) -> impl Iterator<Item = Owner> + '_ {
        // Looked up only on a clear yes or no to a rule's question, so the key's copy
        // is not on the path of other turns.
        self.by_answer
            .get(&(rule.to_string(), yes))
            .into_iter()
            .flatten()
            .copied()
    }

    /// The index with the owners of event triggers (`on event NAME`), each pairing the
    /// event's name with its owner.
    pub(crate) fn with_events(mut self, events: Vec<(String, Owner)>) -> Self {
        for (name, owner) in events {
            self.by_event.entry(name).or_default().push(owner);
        }
        self
    }

    /// Owners of `on event NAME`: the only candidates of an event's turn.
    pub fn event_owners(&self, event: &str) -> impl Iterator<Item = Owner> + '_ {
        self.by_event.get(event).into_iter().flatten().copied()
    }

    /// The index with the owners of `on image` triggers.
    pub(crate) fn with_images(mut self, owners: Vec<Owner>) -> Self {
        for owner in owners {
            if !self.by_image.contains(&owner) {
                self.by_image.push(owner);
            }
        }
        self
    }

    /// Owners of `on image`: candidates of a turn whose message carries an image.
    pub fn image_owners(&self) -> impl Iterator<Item = Owner> + '_ {
        self.by_image.iter().copied()
    }

    /// How many distinct keywords the automaton holds.
    pub fn keyword_count(&self) -> usize {
        self.owners.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_patterns_match_the_prefix_and_children_only() {
        let p = IntentPattern::parse("售后.*");
        assert!(p.matches("售后"));
        assert!(p.matches("售后.退货.七天无理由"));
        assert!(!p.matches("售后服务"));
        assert!(IntentPattern::parse("*").matches("商品.尺码"));
        assert!(!IntentPattern::parse("售后.退货").matches("售后.退货.七天无理由"));
    }

    #[test]
    fn index_finds_owners_by_keyword_intent_and_entity() {
        let index = TriggerIndex::build(
            vec![
                ("缩水".into(), Owner::Rule(0)),
                ("双11".into(), Owner::Promotion(0)),
                ("Size".into(), Owner::Rule(1)),
            ],
            vec![
                (IntentPattern::parse("售后.*"), Owner::Rule(2)),
                (IntentPattern::parse("商品.尺码"), Owner::Rule(3)),
            ],
            vec![("order_id".into(), Owner::FlowStart { flow: 0, start: 0 })],
            &["售后.退货".into(), "商品.尺码".into()],
        );
        let hits = index.keyword_owners("这件会缩水吗 双11 SIZE");
        assert_eq!(
            hits.into_iter().collect::<Vec<_>>(),
            vec![Owner::Rule(0), Owner::Rule(1), Owner::Promotion(0)]
        );
        assert_eq!(index.pattern_owners("售后").collect::<Vec<_>>(), vec![Owner::Rule(2)]);
        assert_eq!(
            index.pattern_owners("售后.退货").collect::<Vec<_>>(),
            vec![Owner::Rule(2)]
        );
        assert_eq!(
            index.intent_owners("售后.退货").count(),
            0,
            "a pattern is not an exact trigger"
        );
        assert_eq!(
            index.intent_owners("商品.尺码").collect::<Vec<_>>(),
            vec![Owner::Rule(3)]
        );
        assert_eq!(index.pattern_owners("商品").count(), 0);
        assert_eq!(index.entity_owners("order_id").count(), 1);
    }
}
