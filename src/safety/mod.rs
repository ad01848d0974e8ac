//! Safety: what may not be said, and what personal data must not be kept.
//!
//! The rule language declares word lists per category with their action (block, mask or
//! flag), where each applies (customers' messages, kefu's replies, or both), an allow list,
//! the PII kinds to mask, the shop's order numbers (never taken for personal data), which
//! normalization folds a list opts out of, and whether its matches must fall on word
//! boundaries ([`SafetyConfig`]). [`Safety::build`] compiles that once per rule set into matchers;
//! the result lives in the `RuleSet`, immutable and shared by every turn.
//!
//! | file | job |
//! | --- | --- |
//! | `normalize.rs` | fold tables and the one-pass normalizer with its offset map |
//! | `lexicon.rs` | the word-list automaton, allow list, word boundaries |
//! | `pii.rs` | phone, ID card, bank card, email and address detection and masks |
//! | `segment.rs` | Chinese word boundaries (jieba) for `segmented` lists, loaded lazily |
//! | `stream.rs` | the guard that checks model output while it streams |
//!
//! A list applies to customers' messages, kefu's replies or both ([`Applies`]). Competitor
//! names, for one, are kefu's to avoid, not the customer's: a customer who names another
//! platform (京东快递, 京东e卡) must not be refused. A list that does not act on messages
//! (a `flag` list, or one `on replies`) still notes its words in a message as
//! [`Action::Flag`] findings, which the turn gives rules as `safety.flags`.
//!
//! Invariant: no text reaches a user without passing `Safety` (input through
//! [`Safety::check_input`], model output through an [`OutputGuard`]), and personal data
//! is masked ([`Safety::redact_pii`]) before text is logged, stored in a session or put
//! into a prompt.

pub mod logsafe;
pub mod normalize;
pub mod pii;
pub mod stream;

mod lexicon;
mod segment;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Range;

use serde::Serialize;

use lexicon::{Lexicon, Scratch};
pub use lexicon::{WordHit, WordRef};
use normalize::{FoldError, FoldTable, Folds};
pub use stream::{GuardStep, OutputGuard};

use std::fmt;
use std::str::FromStr;

/// A normalization fold applied before word-list matching; a list can opt out of any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fold {
    /// Full-width and half-width forms are the same.
    Width,
    /// Upper and lower case are the same.
    Case,
    /// Traditional Chinese characters read as simplified.
    Traditional,
    /// Circled, parenthesized, superscript, Chinese and 壹-style numerals read as digits;
    /// with `Gaps`, a number form (`①`, `⑴`, `⒈`, `❶`, `㈠`) alone between two characters
    /// that are not digits is noise and skipped (`唯①品②会` reads `唯品会`).
    Numbers,
    /// Decorated and enclosed Latin letters read as plain letters.
    Letters,
    /// Symbols and blanks inserted between the characters of a word are skipped.
    Gaps,
    /// Repeated characters count once.
    Repeats,
}

impl Fold {
    /// Every fold, in the order they are applied.
    pub const ALL: [Fold; 7] = [
        Fold::Width,
        Fold::Case,
        Fold::Traditional,
        Fold::Numbers,
        Fold::Letters,
        Fold::Gaps,
        Fold::Repeats,
    ];

    /// The name used in rule files (`without gaps, repeats`).
    pub fn name(self) -> &'static str {
        match self {
            Fold::Width => "width",
            Fold::Case => "case",
            Fold::Traditional => "traditional",
            Fold::Numbers => "numbers",
            Fold::Letters => "letters",
            Fold::Gaps => "gaps",
            Fold::Repeats => "repeats",
        }
    }
}

impl fmt::Display for Fold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fold {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Fold::ALL.into_iter().find(|f| f.name() == s).ok_or(())
    }
}

/// A kind of personal data to detect and mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    /// Mainland mobile numbers.
    Phone,
    /// Resident ID card numbers (checksum validated).
    IdCard,
    /// Bank card numbers (Luhn validated).
    BankCard,
    /// Email addresses.
    Email,
    /// Postal addresses, masked after the district.
    Address,
}

impl PiiKind {
    /// Every kind.
    pub const ALL: [PiiKind; 5] = [
        PiiKind::Phone,
        PiiKind::IdCard,
        PiiKind::BankCard,
        PiiKind::Email,
        PiiKind::Address,
    ];

    /// The name used in rule files.
    pub fn name(self) -> &'static str {
        match self {
            PiiKind::Phone => "phone",
            PiiKind::IdCard => "id_card",
            PiiKind::BankCard => "bank_card",
            PiiKind::Email => "email",
            PiiKind::Address => "address",
        }
    }
}

impl FromStr for PiiKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        PiiKind::ALL.into_iter().find(|k| k.name() == s).ok_or(())
    }
}

/// What happens to a message with a listed word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListAction {
    /// The message is answered with `reply` and goes no further.
    Block {
        /// The category's reply.
        reply: String,
    },
    /// The word is replaced by `*` and the message goes on.
    Mask,
    /// Nothing is refused or replaced: the category is noted in the verdict
    /// ([`Action::Flag`]) for rules to read. Flag lists read customers' messages only.
    Flag,
}

/// Where a word list applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Applies {
    /// Customers' messages only.
    Messages,
    /// kefu's replies only: rule, flow and model answers (a customer's message with the
    /// word goes on, the word noted as a flag).
    Replies,
    /// Both (the default).
    #[default]
    Both,
}

impl Applies {
    /// Every value.
    pub const ALL: [Applies; 3] = [Applies::Messages, Applies::Replies, Applies::Both];

    /// The name used in rule files (`on replies`).
    pub fn name(self) -> &'static str {
        match self {
            Applies::Messages => "messages",
            Applies::Replies => "replies",
            Applies::Both => "both",
        }
    }

    /// Whether the list acts on customers' messages.
    pub fn messages(self) -> bool {
        self != Applies::Replies
    }

    /// Whether the list acts on kefu's replies.
    pub fn replies(self) -> bool {
        self != Applies::Messages
    }
}

impl FromStr for Applies {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Applies::ALL.into_iter().find(|a| a.name() == s).ok_or(())
    }
}

/// One category's word list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordList {
    /// The category, e.g. `政治`.
    pub category: String,
    /// Block or mask.
    pub action: ListAction,
    /// The words, as written.
    pub words: Vec<String>,
    /// Folds this list opts out of.
    pub without: Vec<Fold>,
    /// Where it applies (a [`ListAction::Flag`] list reads messages whatever this says).
    pub on: Applies,
    /// A match counts only on Chinese word boundaries (`segmented`): it starts where a
    /// word starts, and ends where a word ends or inside a word that starts with it.
    pub segmented: bool,
}

/// The shop's order numbers, as a regular expression over digits: a number that PII
/// detection would take for a phone, ID card or bank card is left alone when all its
/// digits match (the pattern is anchored at both ends).
#[derive(Clone, Debug)]
pub struct OrderNumber {
    pattern: String,
    regex: regex::Regex,
}

impl OrderNumber {
    /// Compiles `pattern` (as written, without anchors) to match a whole number.
    pub fn new(pattern: &str) -> Result<OrderNumber, regex::Error> {
        let regex = regex::Regex::new(&format!("^(?:{pattern})$"))?;
        Ok(OrderNumber {
            pattern: pattern.to_string(),
            regex,
        })
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether `digits` (ASCII) is an order number.
    pub fn matches(&self, digits: &str) -> bool {
        self.regex.is_match(digits)
    }
}

impl PartialEq for OrderNumber {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for OrderNumber {}

/// The `safety` blocks of a rule set, merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SafetyConfig {
    /// Word lists by category, in file order.
    pub lists: Vec<WordList>,
    /// Phrases never blocked even when a blocked word is inside them.
    pub allow: Vec<String>,
    /// Personal data to mask.
    pub pii: Vec<PiiKind>,
    /// The shop's order numbers, which are never personal data.
    pub order_number: Option<OrderNumber>,
}

/// The reply of block lists that give none and of a safety block with no `reply`.
pub const DEFAULT_BLOCK_REPLY: &str = "抱歉，这个问题我无法回答。请问还有其他可以帮您的吗？";

/// Why a safety configuration could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A fold table could not be built.
    #[error(transparent)]
    Fold(#[from] FoldError),
    /// The automaton could not be built (too large).
    #[error("the word-list automaton could not be built")]
    Automaton(#[source] aho_corasick::BuildError),
}

/// A list word or allowed phrase that normalizes to nothing (only symbols or blanks): it
/// would match nothing, so it is left out of matching. The editor is told (see
/// [`Safety::skipped`]); lowering decides how loudly.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    /// A word of a list.
    #[error("word `{text}` of safety list `{category}` is empty once normalized")]
    Word {
        /// Index into [`SafetyConfig::lists`].
        list: usize,
        /// Index into that list's words.
        word: usize,
        /// The word as written.
        text: String,
        /// The list's category.
        category: String,
    },
    /// An allowed phrase.
    #[error("allowed phrase `{text}` is empty once normalized")]
    Allow {
        /// Index into [`SafetyConfig::allow`].
        index: usize,
        /// The phrase as written.
        text: String,
    },
}

/// What a finding does to the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A `block` list word: the message is answered with the list's reply.
    Block,
    /// A `mask` list word: replaced by `*` and the message goes on.
    Mask,
    /// Personal data: replaced by its mask and the message goes on.
    Pii,
    /// A word of a `flag` list, or of a list that does not act on messages, in a
    /// customer's message: nothing is refused or replaced; rules see the category in
    /// `safety.flags`.
    Flag,
}

/// One thing found in a text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The list's category, or the PII kind (`phone`, `id_card`, ...).
    pub category: String,
    /// What it does.
    pub action: Action,
    /// Where, in bytes of the original (not normalized) text.
    pub span: Range<usize>,
    /// The original text of the span.
    pub text: String,
    /// The list word as written in the rules (none for PII).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub word: Option<String>,
    /// What replaces the span in the masked text (none for `block`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

/// The answer given instead of a blocked message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// The category of the first blocked word.
    pub category: String,
    /// The category's reply.
    pub reply: String,
}

/// The outcome of checking one text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Set when a `block` word was found: the message goes no further.
    pub blocked: Option<Blocked>,
    /// Everything found, in order of position.
    pub findings: Vec<Finding>,
    /// The text with `mask` words and personal data replaced.
    pub masked: String,
}

impl Verdict {
    /// Whether the message must not go on.
    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }
}

/// Which side a text comes from: what a list applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// A customer's message.
    Message,
    /// A reply of kefu's.
    Reply,
}

/// The compiled safety configuration of a rule set: immutable, `Send + Sync`.
#[derive(Debug, Default)]
pub struct Safety {
    config: SafetyConfig,
    lexicon: Lexicon,
    /// Replies the shop wrote out in full (no `{...}` holes) that passed
    /// [`Safety::check_output`] when the rule set was built; see [`Safety::vet`].
    /// Hashed with foldhash: each reply sent is looked up, a few hundred bytes, and
    /// SipHash took longer over them than the rest of the lookup.
    vetted: HashSet<Box<str>, foldhash::fast::RandomState>,
    /// Words and phrases left out because they normalize to nothing.
    skipped: Vec<Skipped>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers (fresh ones if they are in use).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            let r = f(&mut scratch);
            scratch.shrink_if_large();
            r
        }
        Err(_) => f(&mut Scratch::default()),
    })
}

impl Safety {
    /// Compiles a configuration: fold tables, one automaton per fold set, filters.
    /// Every problem is reported, not just the first.
    pub fn build(config: SafetyConfig) -> Result<Safety, Vec<BuildError>> {
        let (lexicon, skipped) = Lexicon::build(&config)?;
        if config.lists.iter().any(|l| l.segmented) {
            // Loaded now, when the rule set is built, so that no customer waits for it.
            segment::warm();
        }
        Ok(Safety {
            config,
            lexicon,
            vetted: HashSet::default(),
            skipped,
        })
    }

    /// The words and allowed phrases left out because they normalize to nothing, in list
    /// order.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Checks the shop's fixed replies once, when the rule set is built, and remembers
    /// those with nothing to block or mask: [`Safety::check_output`] then passes them with
    /// a set lookup. Most rule-answered turns send one of these, and checking a reply of a
    /// few hundred bytes for words and personal data cost more than a tenth of such a
    /// turn. The answer is the same either way: the check depends only on the text and
    /// this configuration, and both are fixed for the life of the rule set.
    pub fn vet<'t>(&mut self, replies: impl IntoIterator<Item = &'t str>) {
        for reply in replies {
            if !reply.is_empty() && !self.vetted.contains(reply) && self.check(reply, Side::Reply).findings.is_empty() {
                self.vetted.insert(reply.into());
            }
        }
    }

    /// How many fixed replies [`Safety::vet`] found clean.
    pub fn vetted(&self) -> usize {
        self.vetted.len()
    }

    /// The configuration this was built from.
    pub fn config(&self) -> &SafetyConfig {
        &self.config
    }

    /// Checks a customer's message: block words, mask words, flag words and personal
    /// data, by the lists that apply to messages (and flags for those that do not).
    pub fn check_input(&self, text: &str) -> Verdict {
        self.check(text, Side::Message)
    }

    /// Checks a reply before it is sent: a model answer (use [`Safety::output_guard`] while
    /// it streams) or a rule's, which may carry data it was filled with.
    pub fn check_output(&self, text: &str) -> Verdict {
        if self.vetted.contains(text) {
            return Verdict {
                blocked: None,
                findings: Vec::new(),
                masked: text.to_string(),
            };
        }
        self.check(text, Side::Reply)
    }

    fn check(&self, text: &str, side: Side) -> Verdict {
        let findings = self.scan(text, side).0;
        let blocked = findings
            .iter()
            .find(|f| f.action == Action::Block)
            .map(|f| self.blocked(f));
        let masked = mask_range(text, 0..text.len(), &findings);
        Verdict {
            blocked,
            findings,
            masked,
        }
    }

    /// The reply for a block finding.
    fn blocked(&self, finding: &Finding) -> Blocked {
        let reply = self
            .config
            .lists
            .iter()
            .find_map(|l| match &l.action {
                ListAction::Block { reply } if l.category == finding.category => Some(reply.clone()),
                _ => None,
            })
            .unwrap_or_else(|| DEFAULT_BLOCK_REPLY.to_string());
        Blocked {
            category: finding.category.clone(),
            reply,
        }
    }

    /// Every list word and piece of personal data in a customer's message `text`, in
    /// order of position.
    pub fn findings(&self, text: &str) -> Vec<Finding> {
        self.scan(text, Side::Message).0
    }

    /// List words only (no PII) of the lists acting on messages, as findings.
    pub fn words(&self, text: &str) -> Vec<Finding> {
        let mut hits = Vec::new();
        self.scan_words(text, &mut hits);
        hits.into_iter().map(|h| self.word_finding(text, h, false)).collect()
    }

    /// Words of the lists acting on messages, appended to `hits` without allocating
    /// anything else: the whole normalize, match, allow-list and word-boundary path, and
    /// what the benchmark times. [`SafetyConfig::lists`] gives each hit's category,
    /// action and word.
    pub fn scan_words(&self, text: &str, hits: &mut Vec<WordHit>) {
        with_scratch(|scratch| {
            self.lexicon
                .scan(text, scratch, &mut [(lexicon::ACTS_ON_MESSAGES, hits)])
        });
    }

    /// Findings of one side, and the byte offset before which list-word findings are
    /// final however the text goes on (see [`OutputGuard`]).
    pub(crate) fn scan(&self, text: &str, side: Side) -> (Vec<Finding>, usize) {
        let mut hits = Vec::new();
        let mut flags = Vec::new();
        let stable = with_scratch(|scratch| match side {
            Side::Message => self.lexicon.scan(
                text,
                scratch,
                &mut [
                    (lexicon::ACTS_ON_MESSAGES, &mut hits),
                    (lexicon::FLAGS_ON_MESSAGES, &mut flags),
                ],
            ),
            Side::Reply => self
                .lexicon
                .scan(text, scratch, &mut [(lexicon::ACTS_ON_REPLIES, &mut hits)]),
        });
        let mut findings: Vec<Finding> = hits
            .into_iter()
            .map(|h| self.word_finding(text, h, false))
            .chain(flags.into_iter().map(|h| self.word_finding(text, h, true)))
            .collect();
        let order_number = self.config.order_number.as_ref();
        for m in pii::find_with(text, &self.config.pii, order_number) {
            findings.push(Finding {
                category: m.kind.name().to_string(),
                action: Action::Pii,
                text: text[m.span.clone()].to_string(),
                span: m.span,
                word: None,
                replacement: Some(m.masked),
            });
        }
        findings.sort_by_key(|f| (f.span.start, std::cmp::Reverse(f.span.end)));
        (findings, stable)
    }

    /// The finding of a hit; `flag` for a hit of the flag pass (the list does not act on
    /// this side).
    fn word_finding(&self, text: &str, hit: WordHit, flag: bool) -> Finding {
        let list = &self.config.lists[hit.word.list];
        let original = &text[hit.span.clone()];
        let (action, replacement) = match list.action {
            _ if flag => (Action::Flag, None),
            ListAction::Flag => (Action::Flag, None),
            ListAction::Block { .. } => (Action::Block, None),
            ListAction::Mask => (Action::Mask, Some("*".repeat(original.chars().count()))),
        };
        Finding {
            category: list.category.clone(),
            action,
            span: hit.span,
            text: original.to_string(),
            word: Some(list.words[hit.word.word].clone()),
            replacement,
        }
    }

    /// `text` with `mask` words and personal data replaced (block words stay: a blocked
    /// message goes no further anyway).
    pub fn mask(&self, text: &str) -> String {
        mask_range(text, 0..text.len(), &self.findings(text))
    }

    /// `text` with personal data masked: what may be logged, kept in a session or put
    /// into a prompt. Borrowed when there is nothing to mask.
    pub fn redact_pii<'t>(&self, text: &'t str) -> Cow<'t, str> {
        pii::redact_with(text, &self.config.pii, self.config.order_number.as_ref())
    }

    /// The matching form of `text` under the folds of the lists without `without` (all
    /// folds when there are no lists): what `kefu safety` shows editors.
    pub fn normalize(&self, text: &str) -> String {
        match self.lexicon.first_table() {
            Some(table) => table.normalize_str(text),
            None => FoldTable::get(Folds::ALL).map_or_else(|_| text.to_string(), |t| t.normalize_str(text)),
        }
    }

    /// A guard for one streamed model answer.
    pub fn output_guard(&self) -> OutputGuard<'_> {
        OutputGuard::new(self)
    }

    /// Whether there are any word lists.
    pub fn has_lists(&self) -> bool {
        !self.lexicon.is_empty()
    }
}

/// `text[range]` with every `mask`/`pii` finding inside the range replaced. Findings are
/// in order of position; one overlapping an earlier kept one is skipped.
pub(crate) fn mask_range(text: &str, range: Range<usize>, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(range.len());
    let mut at = range.start;
    for f in findings {
        let Some(replacement) = &f.replacement else { continue };
        if f.span.start < at || f.span.end > range.end {
            continue;
        }
        out.push_str(&text[at..f.span.start]);
        out.push_str(replacement);
        at = f.span.end;
    }
    out.push_str(&text[at..range.end]);
    out
}
