//! The syntax tree of a `.kefu` file: what the text says, with a span on everything.
//!
//! This is a stepping stone between the pest parse and the [`RuleSet`](crate::RuleSet):
//! nothing here is resolved, compiled or checked beyond its shape. Lowering
//! (`dsl::lower`) reads it and reports what is wrong with it.

use crate::diag::Span;

/// A name with its place: a rule name, a slot, a dotted intent path.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    /// The name as written.
    pub name: String,
    /// Where it is written.
    pub span: Span,
}

/// A decoded string literal.
#[derive(Clone, Debug, PartialEq)]
pub struct Str {
    /// The text after escapes are decoded (and, for `"""`, indentation removed).
    pub value: String,
    /// The whole literal, quotes included.
    pub span: Span,
    /// For each byte offset of `value` (and one past its end), the byte offset in the file
    /// it came from, so that errors inside reply templates point at the right column.
    pub offsets: Vec<usize>,
    /// The same text in other languages, written after it with their codes
    /// (`"亲，…" en "Hi, …"`); empty except where the language allows variants (texts the
    /// customer sees).
    pub variants: Vec<(Ident, Str)>,
}

impl Str {
    /// The file span of `value[start..end]`.
    pub fn sub_span(&self, start: usize, end: usize) -> Span {
        let at = |i: usize| self.offsets.get(i).copied().unwrap_or(self.span.end);
        Span::new(self.span.file, at(start), at(end).max(at(start)))
    }
}

/// A rhai expression between backticks.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// The rhai source between the backticks.
    pub source: String,
    /// The source's place in the file (inside the backticks).
    pub span: Span,
}

/// A number with its place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Number {
    /// The value.
    pub value: f64,
    /// Where it is written.
    pub span: Span,
}

/// A whole number with its place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Integer {
    /// The value.
    pub value: i64,
    /// Where it is written.
    pub span: Span,
}

/// A duration such as `800ms`, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DurationLit {
    /// The length in milliseconds.
    pub millis: u64,
    /// Where it is written.
    pub span: Span,
}

/// A date with an optional time of day, not yet placed in a time zone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DateTimeLit {
    /// Year, month, day as written.
    pub date: (i32, u32, u32),
    /// Hour, minute and (when written) second, when a time was written.
    pub time: Option<(u32, u32, Option<u32>)>,
    /// Where it is written.
    pub span: Span,
}

/// One top-level declaration.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `shop "..." { ... }` (boxed: its many settings make it the largest item by far)
    Shop(Box<Shop>),
    /// `intent a.b { ... }`
    Intent(Intent),
    /// `entity x = ...`
    Entity(Entity),
    /// `card x { ... }`
    Card(Card),
    /// `source x = ...`
    Source(Source),
    /// `rule x { ... }`
    Rule(Rule),
    /// `promotion x { ... }`
    Promotion(Promotion),
    /// `policy x { ... }`
    Policy(Policy),
    /// `flow x { ... }`
    Flow(Flow),
    /// `style x { ... }`
    Style(Style),
    /// `fallback { ... }`
    Fallback(Fallback),
    /// `safety { ... }`
    Safety(Safety),
    /// `queue x { ... }`
    Queue(Queue),
    /// `proactive x { ... }`
    Proactive(Proactive),
}

/// A time of day as written (`22:00`, `07:30:00`), not yet checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeLit {
    /// Hour, minute and (when written) second.
    pub hms: (u32, u32, Option<u32>),
    /// Where it is written.
    pub span: Span,
}

/// `22:00 to 08:00`: a daily span of quiet hours (`quiet` in a proactive item,
/// `quiet_hours` in the shop).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuietLit {
    /// The first quiet time.
    pub from: TimeLit,
    /// The first time that is not quiet again.
    pub to: TimeLit,
    /// The whole field.
    pub span: Span,
}

/// `proactive name { on event … when … say … offer … limit … quiet … priority … }`
#[derive(Clone, Debug, PartialEq)]
pub struct Proactive {
    /// The item's name (the trigger's name in the log and the report).
    pub name: Ident,
    /// The whole item.
    pub span: Span,
    /// `on ...` lines (each must be `on event TYPE`).
    pub triggers: Vec<Trigger>,
    /// `when `...``
    pub when: Option<Expr>,
    /// `say "..."`
    pub say: Option<Str>,
    /// `offer PROMOTION`
    pub offer: Option<Ident>,
    /// `limit N per day`: the number and the whole field.
    pub limit: Option<(Integer, Span)>,
    /// `quiet HH:MM to HH:MM`
    pub quiet: Option<QuietLit>,
    /// `priority N`
    pub priority: Option<Integer>,
}

/// `queue name { label … for … priority … hours … off_hours … waiting … }`
#[derive(Clone, Debug, PartialEq)]
pub struct Queue {
    /// The queue's name.
    pub name: Ident,
    /// The whole item.
    pub span: Span,
    /// `label "..."`
    pub label: Option<Str>,
    /// `for `...``
    pub audience: Option<Expr>,
    /// `priority N`
    pub priority: Option<Integer>,
    /// `hours "..."`
    pub hours: Option<Str>,
    /// `off_hours "..."`
    pub off_hours: Option<Str>,
    /// `waiting "..."`
    pub waiting: Option<Str>,
}

/// `shop "name" { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Shop {
    /// The shop's name.
    pub name: Str,
    /// The `shop` keyword through the closing brace.
    pub span: Span,
    /// `persona "..."`
    pub persona: Option<Str>,
    /// `languages "zh", "en"`, with the place of the whole field.
    pub languages: Option<(Vec<Str>, Span)>,
    /// `translate llm`, where written.
    pub translate: Option<Span>,
    /// `timezone "..."`
    pub timezone: Option<Str>,
    /// `threshold 0.6`
    pub threshold: Option<Number>,
    /// `model_threshold 0.7`
    pub model_threshold: Option<Number>,
    /// `faq_threshold 0.6`
    pub faq_threshold: Option<Number>,
    /// `handoff_message "..."`
    pub handoff_message: Option<Str>,
    /// `fallback_message "..."`
    pub fallback_message: Option<Str>,
    /// `context order, cart`
    pub context: Vec<Ident>,
    /// `flow_updated_message "..."`
    pub flow_updated_message: Option<Str>,
    /// `goodbye_message "..."`
    pub goodbye_message: Option<Str>,
    /// `ack_message "..."`
    pub ack_message: Option<Str>,
    /// `more_message "..."`
    pub more_message: Option<Str>,
    /// `confirm_again_message "..."`
    pub confirm_again_message: Option<Str>,
    /// `upcoming_days 14`
    pub upcoming_days: Option<Integer>,
    /// `flow_timeout 30m`
    pub flow_timeout: Option<DurationLit>,
    /// `max_answers 2`
    pub max_answers: Option<Integer>,
    /// `proactive_limit 2`
    pub proactive_limit: Option<Integer>,
    /// `quiet_hours 22:00 to 08:00`
    pub quiet_hours: Option<QuietLit>,
    /// `opt_out_message "..."`
    pub opt_out_message: Option<Str>,
}

/// `intent 售后.退货 { examples ... keywords ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Intent {
    /// The dotted path.
    pub name: Ident,
    /// The whole item.
    pub span: Span,
    /// Training examples.
    pub examples: Vec<Str>,
    /// Keywords.
    pub keywords: Vec<Str>,
}

/// `entity name = /regex/` or `entity name = [lexicon]`
#[derive(Clone, Debug, PartialEq)]
pub struct Entity {
    /// The entity's name.
    pub name: Ident,
    /// The whole item.
    pub span: Span,
    /// How it is recognised.
    pub kind: EntityKind,
}

/// `card name { pattern /…/ as order alone reply "…" }`: a message kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Card {
    /// The card's name.
    pub name: Ident,
    /// The whole item.
    pub span: Span,
    /// `pattern /…/flags`.
    pub pattern: Option<CardPattern>,
    /// `as order`: the request-context map its fields become.
    pub context: Option<Ident>,
    /// `alone reply "…"`.
    pub alone: Option<Str>,
}

/// A card's `pattern /…/flags`.
#[derive(Clone, Debug, PartialEq)]
pub struct CardPattern {
    /// The pattern as written between the slashes.
    pub pattern: String,
    /// Where the pattern is written (between the slashes).
    pub span: Span,
    /// The flags after the closing slash.
    pub flags: Ident,
    /// The whole `pattern` line.
    pub line: Span,
}

/// How an entity is recognised.
#[derive(Clone, Debug, PartialEq)]
pub enum EntityKind {
    /// `/pattern/flags`
    Regex {
        /// The pattern as written between the slashes.
        pattern: String,
        /// The pattern's place.
        span: Span,
        /// Flags after the closing slash.
        flags: Ident,
    },
    /// `["红色", "红" => "红色"]`: surface form and optional canonical value.
    Lexicon(Vec<(Str, Option<Str>)>),
}

/// `source name = file ... | http ...`
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// The source's name, also the script function that reads it.
    pub name: Ident,
    /// The whole item.
    pub span: Span,
    /// Where records come from.
    pub kind: SourceKind,
}

/// Where a source's records come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceKind {
    /// `file "path" key "field"`
    File {
        /// The file, relative to the rules directory.
        path: Str,
        /// The field records are indexed by.
        key: Option<Str>,
    },
    /// `http "url with {key}" timeout 800ms`
    Http {
        /// The URL template.
        url: Str,
        /// The request timeout.
        timeout: Option<DurationLit>,
    },
}

/// What makes a rule, promotion or flow a candidate for a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    /// `on` through the end of the trigger.
    pub span: Span,
    /// What it listens for.
    pub kind: TriggerKind,
}

/// What a trigger listens for.
#[derive(Clone, Debug, PartialEq)]
pub enum TriggerKind {
    /// `on keywords "a", "b"`
    Keywords(Vec<Str>),
    /// `on entity name`
    Entity(Ident),
    /// `on card name`
    Card(Ident),
    /// `on event name`: the turn is this platform event (`subscribe`, `enter_session`);
    /// in a `proactive` item, the shop event it listens for.
    Event(Ident),
    /// `on image`: the message carries at least one image.
    Image,
    /// `on 售后.退货, 商品.*`
    Intents(Vec<Ident>),
    /// `on yes to RULE` (`yes` true) or `on no to RULE`: a clear yes or no to the offer
    /// rule `RULE` made in kefu's last reply.
    Answer {
        /// Yes (true) or no (false).
        yes: bool,
        /// The rule whose offer is answered.
        rule: Ident,
    },
}

/// `` remember NAME = `expr` `` or `forget NAME`: a change to the conversation's memory,
/// in a rule or as a flow step.
#[derive(Clone, Debug, PartialEq)]
pub enum Memo {
    /// `` remember NAME = `expr` ``
    Remember {
        /// The name scripts read as `memory.NAME`.
        name: Ident,
        /// The value kept.
        value: Expr,
    },
    /// `forget NAME`
    Forget(Ident),
}

impl Memo {
    /// The name it remembers or forgets.
    pub fn name(&self) -> &Ident {
        match self {
            Memo::Remember { name, .. } | Memo::Forget(name) => name,
        }
    }
}

/// `handoff`, `handoff "reason"`, `handoff "reason" as KIND to QUEUE`
#[derive(Clone, Debug, PartialEq)]
pub struct Handoff {
    /// The reason given to the agent, if any.
    pub reason: Option<Str>,
    /// `as KIND`
    pub kind: Option<Ident>,
    /// `to QUEUE`
    pub to: Option<Ident>,
    /// Where it is written.
    pub span: Span,
}

/// `rule name { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The rule's name.
    pub name: Ident,
    /// The whole item.
    pub span: Span,
    /// `on ...` lines.
    pub triggers: Vec<Trigger>,
    /// `when `...``
    pub when: Option<Expr>,
    /// `reply "..."`
    pub reply: Option<Str>,
    /// `handoff "..."`
    pub handoff: Option<Handoff>,
    /// `priority N`
    pub priority: Option<Integer>,
    /// `remember` and `forget` lines, in order: run after `when` holds, before the reply.
    pub memos: Vec<Memo>,
    /// `end flow` or `cancel flow`
    pub flow_action: Option<FlowActionLit>,
}

/// What a rule does to the flow waiting when it answers: `end flow` or `cancel flow`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowActionLit {
    /// `cancel flow` (the slots are forgotten) rather than `end flow` (they stay).
    pub cancel: bool,
    /// Where it is written.
    pub span: Span,
}

/// `promotion name { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Promotion {
    /// The promotion's name.
    pub name: Ident,
    /// The whole item.
    pub span: Span,
    /// `from ... to ...`
    pub window: Option<(DateTimeLit, DateTimeLit)>,
    /// `for `...``
    pub audience: Option<Expr>,
    /// `say "..."`
    pub say: Option<Str>,
    /// `on ...` lines.
    pub triggers: Vec<Trigger>,
    /// `priority N`
    pub priority: Option<Integer>,
}

/// `policy name { applies ... text ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The policy's name.
    pub name: Ident,
    /// The whole item.
    pub span: Span,
    /// Intent patterns it applies to.
    pub applies: Vec<Ident>,
    /// The policy text.
    pub text: Option<Str>,
}

/// `flow name { start ... steps }`
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    /// The flow's name.
    pub name: Ident,
    /// The whole item.
    pub span: Span,
    /// `start on ...` lines.
    pub starts: Vec<FlowStart>,
    /// `cancel on keywords "…"`: the words that cancel it, in place of the built-in ones.
    pub cancel_words: Option<(Vec<Str>, Span)>,
    /// `cancel reply "…"`: what the customer is told when it is cancelled.
    pub cancel_reply: Option<Str>,
    /// `timeout 10m`: how long it waits for the customer.
    pub timeout: Option<DurationLit>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// `start on TRIGGER when `...``
#[derive(Clone, Debug, PartialEq)]
pub struct FlowStart {
    /// What starts the flow.
    pub trigger: Trigger,
    /// An extra condition.
    pub when: Option<Expr>,
    /// The whole line.
    pub span: Span,
}

/// The slot of a `confirm` step written without a name.
pub const CONFIRM_SLOT: &str = "confirm";

/// One step of a flow.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Where the step is written.
    pub span: Span,
    /// What it does.
    pub kind: StepKind,
}

/// What a flow step does.
#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    /// `ask slot [as entity] "question" [retry N [else STEP]]`
    Ask {
        /// The slot to fill.
        slot: Ident,
        /// The entity that fills it, when not the slot's own name.
        entity: Option<Ident>,
        /// The question.
        prompt: Str,
        /// `reask "..", ".."`: what to say when asking again, in turn (empty: the question).
        reasks: Vec<Str>,
        /// How many times to ask again.
        retry: Option<Integer>,
        /// What to do when retries run out.
        otherwise: Option<Box<Step>>,
        /// Written as `confirm`: a yes-or-no question, filled by a clear yes; a clear no
        /// cancels the flow.
        confirm: bool,
    },
    /// `set name = `expr``
    Set {
        /// The variable.
        name: Ident,
        /// Its value.
        value: Expr,
    },
    /// `if `cond` { ... } else { ... }`
    If {
        /// The condition.
        cond: Expr,
        /// Steps when it holds.
        then: Vec<Step>,
        /// Steps when it does not (an `else if` is one `If` step here).
        otherwise: Vec<Step>,
    },
    /// `goto slot`
    Goto(Ident),
    /// `call `expr``
    Call(Expr),
    /// `remember NAME = `expr`` or `forget NAME`
    Memo(Memo),
    /// `reply "..."`
    Reply(Str),
    /// `handoff ["reason"]`
    Handoff(Handoff),
    /// `end`
    End,
}

/// `style name { when ... tone ... temperature ... top_p ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Style {
    /// The style's name.
    pub name: Ident,
    /// The whole item.
    pub span: Span,
    /// Who it is for.
    pub when: Option<Expr>,
    /// `tone "..."`
    pub tone: Option<Str>,
    /// `temperature x`
    pub temperature: Option<Number>,
    /// `top_p x`
    pub top_p: Option<Number>,
}

/// `fallback { arms }`
#[derive(Clone, Debug, PartialEq)]
pub struct Fallback {
    /// The whole item.
    pub span: Span,
    /// The arms, in order.
    pub arms: Vec<FallbackArm>,
}

/// `when `cond` ACTION` or `otherwise ACTION`
#[derive(Clone, Debug, PartialEq)]
pub struct FallbackArm {
    /// The whole arm.
    pub span: Span,
    /// `None` for `otherwise`.
    pub when: Option<Expr>,
    /// What to do.
    pub action: FallbackAction,
}

/// What a fallback arm does.
#[derive(Clone, Debug, PartialEq)]
pub enum FallbackAction {
    /// `handoff "reason"`, or with `reply "..."` (before or after it): the reply is what the
    /// customer is told instead of the shop's handoff message.
    Handoff {
        /// The handoff and its reason (boxed: the largest part of the arm).
        handoff: Box<Handoff>,
        /// The arm's own words to the customer.
        reply: Option<Str>,
    },
    /// `reply "..."`
    Reply(Str),
    /// `llm [style name] [within duration]`
    Llm {
        /// The style to answer in.
        style: Option<Ident>,
        /// How long the answer may take.
        within: Option<DurationLit>,
    },
}

/// `safety { entries }`
#[derive(Clone, Debug, PartialEq)]
pub struct Safety {
    /// The whole item.
    pub span: Span,
    /// The entries, in order.
    pub entries: Vec<SafetyEntry>,
}

/// Where a word list's words come from.
#[derive(Clone, Debug, PartialEq)]
pub enum WordSource {
    /// `from "file"`
    File(Str),
    /// `words "a", "b"`
    Inline(Vec<Str>),
}

/// A `block`, `mask` or `flag` list.
#[derive(Clone, Debug, PartialEq)]
pub struct WordList {
    /// The category name.
    pub category: Ident,
    /// The whole entry.
    pub span: Span,
    /// Its words.
    pub words: WordSource,
    /// `without fold, fold`
    pub without: Vec<Ident>,
    /// `reply "..."`
    pub reply: Option<Str>,
    /// `on messages|replies|both`
    pub on: Option<Ident>,
    /// `segmented`, where written.
    pub segmented: Option<Span>,
}

/// `order_number /regex/` or `order_number entity`.
#[derive(Clone, Debug, PartialEq)]
pub enum OrderNumber {
    /// A pattern written in place, with its place.
    Regex {
        /// The pattern between the slashes.
        pattern: String,
        /// Where the pattern is.
        span: Span,
    },
    /// A regex entity whose pattern it is.
    Entity(Ident),
}

/// One entry of a `safety` block.
#[derive(Clone, Debug, PartialEq)]
pub enum SafetyEntry {
    /// `block category ...`
    Block(WordList),
    /// `mask category ...`
    Mask(WordList),
    /// `flag category ...`
    Flag(WordList),
    /// `order_number ...`
    OrderNumber(OrderNumber),
    /// `allow ...`
    Allow(WordSource),
    /// `pii kind, kind`
    Pii(Vec<Ident>),
    /// `reply "..."`: the default reply of block lists.
    Reply(Str),
}
