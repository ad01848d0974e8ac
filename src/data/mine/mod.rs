//! `kefu mine`: the customer messages kefu did not answer well, grouped into clusters of
//! the same question and turned into suggestions an editor can accept as drafts.
//!
//! ```text
//! logs/*.jsonl ──select──▶ misses ──cluster──▶ clusters ──nearest (rules' intents, FAQ)──▶ suggestions
//!                                                                   │
//!                                       kefu mine --accept N ◀──────┘ (drafts in the rules directory)
//! ```
//!
//! A *miss* is a customer message that ended in the fallback chain (a fallback reply, or a
//! model answer the judge withheld), a handoff, an intent below its threshold answered by
//! neither a rule nor the knowledge base, or the last messages before a bad rating. The
//! report ranks clusters by the conversations they cost and how that grows week on week.
//!
//! | file | what |
//! |---|---|
//! | [`accept`] | A suggestion written into the draft rules directory as hand-written text |

pub mod accept;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::{DataError, ReadStats, Record};
use crate::ruleset::RuleSet;

/// What `kefu mine` looks at and how it groups.
#[derive(Clone, Debug)]
pub struct MineOptions {
    /// Only records at or after this time.
    pub since: Option<DateTime<FixedOffset>>,
    /// Only records before this time.
    pub until: Option<DateTime<FixedOffset>>,
    /// The fewest conversations a cluster must cost to be listed.
    pub min_conversations: usize,
    /// The most clusters listed.
    pub max_clusters: usize,
    /// A bad rating: a feedback score at or below this.
    pub bad_rating: u8,
}

impl Default for MineOptions {
    fn default() -> Self {
        MineOptions {
            since: None,
            until: None,
            min_conversations: 2,
            max_clusters: 50,
            bad_rating: 2,
        }
    }
}

/// Why a customer message counts as not answered well.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissReason {
    /// The fallback chain answered (a fallback `reply` or the shop's fallback message).
    Fallback,
    /// The model's answer was withheld by the judge.
    Withheld,
    /// The conversation went to a person.
    Handoff,
    /// No intent reached its threshold and neither a rule nor the knowledge base answered.
    LowIntent,
    /// The conversation was rated badly after this message.
    BadRating,
}

/// One customer message kefu did not answer well.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Miss {
    /// When it was answered.
    pub ts: DateTime<FixedOffset>,
    /// The conversation.
    pub session: String,
    /// The message, masked as the log keeps it.
    pub message: String,
    /// Why it counts.
    pub reason: MissReason,
}

/// What a nearest neighbour is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NearestKind {
    /// An `intent` of the rules.
    Intent,
    /// A knowledge-base FAQ entry.
    Faq,
}

/// The existing intent or FAQ entry closest to a cluster, with its score (0 to 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nearest {
    /// Intent or FAQ entry.
    pub kind: NearestKind,
    /// The intent's path or the entry's id.
    pub name: String,
    /// How close: the classifier's probability for an intent, the FAQ confidence for an
    /// entry.
    pub score: f64,
}

/// What an editor could do about a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Add the cluster's messages as examples of an existing intent.
    AddExamples {
        /// The intent's path.
        intent: String,
    },
    /// Add the cluster's messages as variants of an existing FAQ entry.
    AddVariants {
        /// The entry's id.
        faq: String,
    },
    /// A new FAQ entry with the messages as its question and variants, its answer left
    /// for the editor.
    NewFaq {
        /// The suggested id.
        id: String,
    },
    /// A new intent with the messages as examples (and a rule answering it, its reply
    /// left for the editor).
    NewIntent {
        /// The suggested path.
        name: String,
    },
}

/// A group of misses that ask the same thing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Its rank, from 1: what `kefu mine --accept N` names.
    pub rank: usize,
    /// Misses in it.
    pub size: usize,
    /// Distinct conversations they came from (what the cluster cost).
    pub conversations: usize,
    /// Conversations in the last seven days of the period, and in the seven before.
    pub this_week: usize,
    /// See `this_week`.
    pub last_week: usize,
    /// Misses by reason.
    pub reasons: BTreeMap<MissReason, usize>,
    /// A few messages that stand for it (masked), most typical first.
    pub examples: Vec<String>,
    /// Its distinct messages, most frequent first (bounded): what a draft is made of.
    pub messages: Vec<String>,
    /// The closest existing intent, when the rules were given.
    pub nearest_intent: Option<Nearest>,
    /// The closest FAQ entry, when the rules were given.
    pub nearest_faq: Option<Nearest>,
    /// The suggested action.
    pub action: Action,
}

/// What `kefu mine` found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MineReport {
    /// What reading the log found besides records.
    pub read: ReadStats,
    /// The period's first and last turn.
    pub first: Option<DateTime<FixedOffset>>,
    /// See `first`.
    pub last: Option<DateTime<FixedOffset>>,
    /// Customer turns in the period.
    pub turns: u64,
    /// Of them, misses.
    pub misses: u64,
    /// Conversations with at least one miss.
    pub conversations: u64,
    /// The rules' version the nearest neighbours were found in, when given.
    pub rules: Option<String>,
    /// The clusters, most costly first.
    pub clusters: Vec<Cluster>,
    /// Misses in no listed cluster.
    pub unclustered: u64,
}

/// Mines the log files (stand-in: the clustering is built in its own change).
pub fn mine(files: &[PathBuf], rules: Option<&RuleSet>, options: &MineOptions) -> Result<MineReport, DataError> {
    let mut records = Vec::new();
    let read = super::read(files, |record, _| records.push(record))?;
    let mut report = mine_records(records, rules, options);
    report.read = read;
    Ok(report)
}

/// Mines records already read (stand-in: the clustering is built in its own change).
pub fn mine_records(
    records: impl IntoIterator<Item = Record>,
    rules: Option<&RuleSet>,
    options: &MineOptions,
) -> MineReport {
    let _ = (records.into_iter().count(), rules, options);
    MineReport::default()
}

impl fmt::Display for MineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} clusters", self.clusters.len())
    }
}
