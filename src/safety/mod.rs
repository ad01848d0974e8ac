//! Safety: what may not be said, and what personal data must not be kept.
//!
//! The rule language declares word lists per category with their action, an allow list,
//! the PII kinds to mask, and which normalization folds a list opts out of
//! ([`SafetyConfig`]). [`Safety::build`] compiles that once per rule set into matchers;
//! the result lives in the `RuleSet`, immutable and shared by every turn.
//!
//! | file | job |
//! | --- | --- |
//! | `normalize.rs` | fold tables and the one-pass normalizer with its offset map |
//! | `lexicon.rs` | the word-list automaton, allow list, word boundaries |
//! | `pii.rs` | phone, ID card, bank card, email and address detection and masks |
//! | `stream.rs` | the guard that checks model output while it streams |
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
    /// Circled, parenthesized, superscript, Chinese and 壹-style numerals read as digits.
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
}

/// The `safety` blocks of a rule set, merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SafetyConfig {
    /// Word lists by category, in file order.
    pub lists: Vec<WordList>,
    /// Phrases never blocked even when a blocked word is inside them.
    pub allow: Vec<String>,
    /// Personal data to mask.
    pub pii: Vec<PiiKind>,
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
            if !reply.is_empty() && !self.vetted.contains(reply) && self.check(reply).findings.is_empty() {
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

    /// Checks a customer's message: block words, mask words and personal data.
    pub fn check_input(&self, text: &str) -> Verdict {
        self.check(text)
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
        self.check(text)
    }

    fn check(&self, text: &str) -> Verdict {
        let findings = self.findings(text);
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

    /// Every list word and piece of personal data in `text`, in order of position.
    pub fn findings(&self, text: &str) -> Vec<Finding> {
        self.scan(text).0
    }

    /// List words only (no PII), as findings.
    pub fn words(&self, text: &str) -> Vec<Finding> {
        let mut hits = Vec::new();
        self.scan_words(text, &mut hits);
        hits.into_iter().map(|h| self.word_finding(text, h)).collect()
    }

    /// List words only, appended to `hits` without allocating anything else: the whole
    /// normalize, match, allow-list and word-boundary path, and what the benchmark times.
    /// [`SafetyConfig::lists`] gives each hit's category, action and word.
    pub fn scan_words(&self, text: &str, hits: &mut Vec<WordHit>) {
        with_scratch(|scratch| self.lexicon.scan(text, scratch, hits));
    }

    /// Findings, and the byte offset before which list-word findings are final however
    /// the text goes on (see [`OutputGuard`]).
    pub(crate) fn scan(&self, text: &str) -> (Vec<Finding>, usize) {
        let mut hits = Vec::new();
        let stable = with_scratch(|scratch| self.lexicon.scan(text, scratch, &mut hits));
        let mut findings: Vec<Finding> = hits.into_iter().map(|h| self.word_finding(text, h)).collect();
        for m in pii::find(text, &self.config.pii) {
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

    fn word_finding(&self, text: &str, hit: WordHit) -> Finding {
        let list = &self.config.lists[hit.word.list];
        let original = &text[hit.span.clone()];
        let (action, replacement) = match list.action {
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
        pii::redact(text, &self.config.pii)
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
