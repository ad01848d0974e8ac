//! Safety: what may not be said, and what personal data must not be kept.
//!
//! This module holds the safety configuration the rule language declares (`safety { ... }`):
//! word lists per category with their action, the allow list, the PII kinds to mask, and
//! which normalization folds a list opts out of. Matching itself (normalizer, automaton,
//! PII detectors) lives beside it.

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
