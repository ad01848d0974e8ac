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
//! | [`select`] | Which customer messages are misses, in one pass over the log |
//! | [`cluster`] | Misses grouped: folded duplicates, tf-idf over retrieval terms, an inverted index |
//! | [`suggest`] | The nearest intent and FAQ entry of a cluster, and the suggested action |
//! | [`text`] | The report as text (`kefu mine`) |
//! | [`html`] | The report as one self-contained page (`kefu mine --html`) |
//! | [`accept`] | A suggestion written into the draft rules directory as hand-written text |
//!
//! Ranking: by conversations, then growth (conversations in the last seven days of the
//! period minus the seven before, counted back from the period's last turn), then size,
//! then the first example's text, so the same log always ranks the same way.

pub mod accept;
pub mod cluster;
pub mod html;
pub mod select;
pub mod suggest;
pub mod text;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, Duration, FixedOffset};
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

/// The most examples a cluster shows.
pub const EXAMPLES: usize = 5;
/// The most distinct messages a cluster carries (what a draft is made of).
pub const MESSAGES: usize = 50;

/// Mines the log files: reads them in one pass, holding only the misses.
pub fn mine(files: &[PathBuf], rules: Option<&RuleSet>, options: &MineOptions) -> Result<MineReport, DataError> {
    let mut selector = select::Selector::new(options, threshold(rules));
    let read = super::read(files, |record, _| selector.add(record))?;
    let mut report = finish(selector, rules, options);
    report.read = read;
    Ok(report)
}

/// Mines records already read (tests, the evaluation set).
pub fn mine_records(
    records: impl IntoIterator<Item = Record>,
    rules: Option<&RuleSet>,
    options: &MineOptions,
) -> MineReport {
    let mut selector = select::Selector::new(options, threshold(rules));
    for record in records {
        selector.add(record);
    }
    finish(selector, rules, options)
}

fn threshold(rules: Option<&RuleSet>) -> f64 {
    rules.map_or(crate::nlu::Options::default().threshold, |r| r.shop.threshold)
}

/// Clusters the selected misses, finds their neighbours and ranks them.
fn finish(selector: select::Selector<'_>, rules: Option<&RuleSet>, options: &MineOptions) -> MineReport {
    let misses = selector.misses;
    let sessions: HashSet<&str> = misses.iter().map(|m| m.session.as_str()).collect();
    let mut report = MineReport {
        read: ReadStats::default(),
        first: selector.first,
        last: selector.last,
        turns: selector.turns,
        misses: misses.len() as u64,
        conversations: sessions.len() as u64,
        rules: rules.map(|r| r.version.clone()),
        clusters: Vec::new(),
        unclustered: misses.len() as u64,
    };
    let clustering = cluster::cluster(&misses);
    let mut groups = clustering.groups.clone();
    if let Some(rules) = rules {
        // Groups the classifier puts on one intent, confidently enough to suggest it, join
        // when they are somewhat alike: "能开专票吗" and "增值税发票" share little text.
        let labels: Vec<Option<usize>> = groups
            .iter()
            .map(|g| {
                let texts = distinct(&clustering, g);
                let texts: Vec<&str> = texts.iter().map(|(t, _)| *t).collect();
                suggest::nearest_intent(rules, &texts)
                    .filter(|n| n.score >= suggest::INTENT_SHARE * rules.shop.threshold)
                    .and_then(|n| rules.nlu.intents().iter().position(|i| *i == n.name))
            })
            .collect();
        groups = cluster::join(&clustering, &groups, &labels);
    }
    let week = Duration::days(7);
    let mut clusters: Vec<(Vec<usize>, Cluster)> = groups
        .into_iter()
        .map(|g| {
            let mut c = figures(&clustering, &misses, &g, report.last, week);
            c.examples = examples(&clustering, &g);
            (g, c)
        })
        .filter(|(_, c)| c.conversations >= options.min_conversations.max(1))
        .collect();
    clusters.sort_by(|(_, a), (_, b)| {
        let growth = |c: &Cluster| c.this_week as i64 - c.last_week as i64;
        b.conversations
            .cmp(&a.conversations)
            .then(growth(b).cmp(&growth(a)))
            .then(b.size.cmp(&a.size))
            .then(a.examples.cmp(&b.examples))
    });
    clusters.truncate(options.max_clusters);
    let mut names = suggest::Names::new(rules);
    for (rank, (_, c)) in clusters.iter_mut().enumerate() {
        c.rank = rank + 1;
        let texts: Vec<&str> = c.messages.iter().map(String::as_str).collect();
        if let Some(rules) = rules {
            c.nearest_intent = suggest::nearest_intent(rules, &texts);
            c.nearest_faq = suggest::nearest_faq(rules, &texts);
        }
        let representative = c.examples.first().cloned().unwrap_or_default();
        c.action = suggest::action(
            rules,
            c.nearest_intent.as_ref(),
            c.nearest_faq.as_ref(),
            &texts,
            &representative,
            &mut names,
        );
        report.unclustered -= c.size as u64;
    }
    report.clusters = clusters.into_iter().map(|(_, c)| c).collect();
    report
}

/// The group's distinct messages with their counts, most frequent first (ties by text).
fn distinct<'a>(clustering: &'a cluster::Clustering, group: &[usize]) -> Vec<(&'a str, usize)> {
    let mut out: Vec<(&str, usize)> = group
        .iter()
        .map(|&i| (clustering.items[i].text.as_str(), clustering.items[i].misses.len()))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    out
}

/// The group's most central distinct messages: closest to its centroid first.
fn examples(clustering: &cluster::Clustering, group: &[usize]) -> Vec<String> {
    let vectors: Vec<&cluster::Vector> = clustering.items.iter().map(|i| &i.vector).collect();
    let centre = cluster::centroid(&vectors, group);
    let mut scored: Vec<(f32, usize, &str)> = group
        .iter()
        .map(|&i| {
            let item = &clustering.items[i];
            (
                cluster::dot(&item.vector, &centre),
                item.misses.len(),
                item.text.as_str(),
            )
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
    scored
        .into_iter()
        .take(EXAMPLES)
        .map(|(_, _, t)| t.to_string())
        .collect()
}

/// The cluster's counts: size, conversations, the two weeks, reasons, messages.
fn figures(
    clustering: &cluster::Clustering,
    misses: &[Miss],
    group: &[usize],
    last: Option<DateTime<FixedOffset>>,
    week: Duration,
) -> Cluster {
    let mut sessions: HashSet<&str> = HashSet::new();
    let mut this_week: HashSet<&str> = HashSet::new();
    let mut last_week: HashSet<&str> = HashSet::new();
    let mut reasons: BTreeMap<MissReason, usize> = BTreeMap::new();
    let mut size = 0;
    for &i in group {
        for &m in &clustering.items[i].misses {
            let miss = &misses[m];
            size += 1;
            sessions.insert(&miss.session);
            *reasons.entry(miss.reason).or_default() += 1;
            if let Some(last) = last {
                if miss.ts > last - week {
                    this_week.insert(&miss.session);
                } else if miss.ts > last - week - week {
                    last_week.insert(&miss.session);
                }
            }
        }
    }
    let messages = distinct(clustering, group)
        .into_iter()
        .take(MESSAGES)
        .map(|(t, _)| t.to_string())
        .collect();
    Cluster {
        rank: 0,
        size,
        conversations: sessions.len(),
        this_week: this_week.len(),
        last_week: last_week.len(),
        reasons,
        examples: Vec::new(),
        messages,
        nearest_intent: None,
        nearest_faq: None,
        action: Action::NewFaq { id: String::new() },
    }
}
