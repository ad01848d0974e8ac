//! Per-version figures and the canary guard: what each serving rules version did, and
//! whether a canary candidate must be rolled back.
//!
//! [`VersionCounters`] are a version's counters in one role (live, canary, pinned):
//! atomics, bumped by the service's recorder on every turn, rating and failed turn, served
//! in `/metrics` (`kefu_version_*`, see [`super::metrics`]) and read by the guard, so the
//! dashboard and the decision see the same numbers.
//!
//! [`CanaryGuard`] is the automatic rollback's decision, and only the decision: pure, fed
//! [`Figures`] snapshots, it returns a [`Decision`] when the candidate's handoff rate or
//! error rate exceeds the live version's by more than the configured margin (percentage
//! points) once the candidate has served the minimum number of turns. It compares the
//! same window for both: the live version's figures are counted from the moment the
//! guard first saw the candidate, so a live version that has served for weeks is not
//! compared with its whole history. The caller (`kefu serve`) asks once a second and
//! acts on the decision (ends the canary, records it on the version).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

use crate::engine::{AnswerSource, RulesRole, TurnResponse};

/// One version's counters in one role: plain atomics, no lock.
#[derive(Debug, Default)]
pub struct VersionCounters {
    turns: AtomicU64,
    answers: [AtomicU64; AnswerSource::ALL.len()],
    handoffs: AtomicU64,
    fallbacks: AtomicU64,
    script_errors: AtomicU64,
    failed: AtomicU64,
    feedback: AtomicU64,
    feedback_sum: AtomicU64,
}

impl VersionCounters {
    /// Counts an answered turn.
    pub fn turn(&self, response: &TurnResponse) {
        self.turns.fetch_add(1, Relaxed);
        let source = response.source;
        if let Some(i) = AnswerSource::ALL.iter().position(|s| *s == source) {
            self.answers[i].fetch_add(1, Relaxed);
        }
        if response.handoff.is_some() && source != AnswerSource::Human {
            self.handoffs.fetch_add(1, Relaxed);
        }
        if source == AnswerSource::Fallback {
            self.fallbacks.fetch_add(1, Relaxed);
        }
        if !response.script_errors.is_empty() {
            self.script_errors.fetch_add(1, Relaxed);
        }
    }

    /// Counts a turn that failed (a panic, the session store unreachable).
    pub fn failed(&self) {
        self.failed.fetch_add(1, Relaxed);
    }

    /// Counts a rating of a conversation this version answered last.
    pub fn feedback(&self, score: u8) {
        self.feedback.fetch_add(1, Relaxed);
        self.feedback_sum.fetch_add(u64::from(score), Relaxed);
    }

    /// The counts now.
    pub fn figures(&self) -> Figures {
        let mut answers = [0; AnswerSource::ALL.len()];
        for (n, counter) in answers.iter_mut().zip(&self.answers) {
            *n = counter.load(Relaxed);
        }
        Figures {
            turns: self.turns.load(Relaxed),
            answers,
            handoffs: self.handoffs.load(Relaxed),
            fallbacks: self.fallbacks.load(Relaxed),
            script_errors: self.script_errors.load(Relaxed),
            failed: self.failed.load(Relaxed),
            feedback: self.feedback.load(Relaxed),
            feedback_sum: self.feedback_sum.load(Relaxed),
        }
    }
}

/// What serves now: the live version, the canary candidate, the versions offered for
/// pinning (read from the engine by `kefu serve`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Serving {
    /// The live version.
    pub live: String,
    /// The canary candidate's version, when there is one.
    pub candidate: Option<String>,
    /// The versions a request may pin besides those two.
    pub pinned: Vec<String>,
}

impl Serving {
    /// Whether a version in this role may still serve turns (a pinned request may pin
    /// the live version or the candidate too).
    fn serves(&self, version: &str, role: RulesRole) -> bool {
        let candidate = self.candidate.as_deref() == Some(version);
        match role {
            RulesRole::Live => self.live == version,
            RulesRole::Canary => candidate,
            RulesRole::Pinned => self.live == version || candidate || self.pinned.iter().any(|p| p == version),
        }
    }
}

/// One version in one role and its counters.
#[derive(Debug)]
pub struct VersionEntry {
    /// The rules hash.
    pub version: String,
    /// The role it served in.
    pub role: RulesRole,
    /// What it did.
    pub counters: VersionCounters,
}

/// Reads what serves now.
type ServingReader = Box<dyn Fn() -> Serving + Send + Sync>;

/// The counters of every version serving, by version and role.
///
/// **Bounded by what serves.** A version gets counters on its first turn (the live one and
/// the candidate at the first scrape, at zero) and loses them once it serves in that role
/// no more (a promote, a rollback, a reload, a pinned version let go): at each scrape and
/// whenever a version is added, entries that [`Serving`] no longer names are dropped, so
/// their series leave `/metrics` (a version that serves again starts from zero, a counter
/// reset to Prometheus). The engine serves at most the live version, one candidate and
/// [`crate::engine::PINNED_LIMIT`] pinned ones, so the series are too.
///
/// The turn's path reads the list with one atomic load and a scan of a handful of entries;
/// only adding a version takes a lock.
#[derive(Default)]
pub struct VersionBook {
    entries: arc_swap::ArcSwap<Vec<Arc<VersionEntry>>>,
    grow: Mutex<()>,
    serving: OnceLock<ServingReader>,
}

impl std::fmt::Debug for VersionBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionBook")
            .field("entries", &self.entries.load())
            .finish()
    }
}

impl VersionBook {
    /// Reads what serves from `read` from now on (once; later calls are ignored). Until
    /// then nothing is dropped.
    pub fn watch(&self, read: impl Fn() -> Serving + Send + Sync + 'static) {
        let _ = self.serving.set(Box::new(read));
    }

    /// The counters of `version` in `role`, made on first use.
    pub fn counters(&self, version: &str, role: RulesRole) -> Arc<VersionEntry> {
        if let Some(entry) = find(&self.entries.load(), version, role) {
            return entry;
        }
        let _grow = self.grow.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entries = self.entries.load_full();
        if let Some(entry) = find(&entries, version, role) {
            return entry;
        }
        let entry = Arc::new(VersionEntry {
            version: version.to_string(),
            role,
            counters: VersionCounters::default(),
        });
        let mut next: Vec<_> = entries.iter().cloned().collect();
        next.push(Arc::clone(&entry));
        if let Some(read) = self.serving.get() {
            let serving = read();
            // A straggling turn on a version just retired still counts, until the next prune.
            next.retain(|e| Arc::ptr_eq(e, &entry) || serving.serves(&e.version, e.role));
        }
        self.entries.store(Arc::new(next));
        entry
    }

    /// The figures of `version` in `role`, when it has counters.
    pub fn figures(&self, version: &str, role: RulesRole) -> Option<Figures> {
        find(&self.entries.load(), version, role).map(|e| e.counters.figures())
    }

    /// Drops the counters of versions that serve no more and makes those of the live
    /// version and the candidate (see the type's docs); then every entry, in the order
    /// they were made.
    pub fn prune(&self) -> Arc<Vec<Arc<VersionEntry>>> {
        let Some(read) = self.serving.get() else {
            return self.entries.load_full();
        };
        let serving = read();
        let _grow = self.grow.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next: Vec<_> = self
            .entries
            .load()
            .iter()
            .filter(|e| serving.serves(&e.version, e.role))
            .cloned()
            .collect();
        let wanted = std::iter::once((serving.live.as_str(), RulesRole::Live))
            .chain(serving.candidate.as_deref().map(|c| (c, RulesRole::Canary)));
        for (version, role) in wanted {
            if find(&next, version, role).is_none() {
                next.push(Arc::new(VersionEntry {
                    version: version.to_string(),
                    role,
                    counters: VersionCounters::default(),
                }));
            }
        }
        let next = Arc::new(next);
        self.entries.store(Arc::clone(&next));
        next
    }
}

fn find(entries: &[Arc<VersionEntry>], version: &str, role: RulesRole) -> Option<Arc<VersionEntry>> {
    entries.iter().find(|e| e.role == role && e.version == version).cloned()
}

/// A snapshot of one version's counters (or the difference of two).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    /// Turns answered (blocked and queued-for-an-agent ones included).
    pub turns: u64,
    /// Turns by what answered them, in [`AnswerSource::ALL`]'s order.
    pub answers: [u64; AnswerSource::ALL.len()],
    /// Turns handed to a person (not counting messages to a person already holding it).
    pub handoffs: u64,
    /// Turns nothing answered (source `fallback`).
    pub fallbacks: u64,
    /// Turns during which a script failed.
    pub script_errors: u64,
    /// Turns that failed (no answer).
    pub failed: u64,
    /// Ratings counted for this version.
    pub feedback: u64,
    /// Their scores added up.
    pub feedback_sum: u64,
}

impl Figures {
    /// Turns answered by `source`.
    pub fn answered_by(&self, source: AnswerSource) -> u64 {
        AnswerSource::ALL
            .iter()
            .position(|s| *s == source)
            .map_or(0, |i| self.answers[i])
    }

    /// Handoffs per turn, in percent; `None` before any turn.
    pub fn handoff_rate(&self) -> Option<f64> {
        percent(self.handoffs, self.turns)
    }

    /// Turns with a script error, or failed, per turn tried, in percent.
    pub fn error_rate(&self) -> Option<f64> {
        percent(self.script_errors + self.failed, self.turns + self.failed)
    }

    /// What was counted since `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &Figures) -> Figures {
        let mut answers = self.answers;
        for (n, before) in answers.iter_mut().zip(earlier.answers) {
            *n = n.saturating_sub(before);
        }
        Figures {
            turns: self.turns.saturating_sub(earlier.turns),
            answers,
            handoffs: self.handoffs.saturating_sub(earlier.handoffs),
            fallbacks: self.fallbacks.saturating_sub(earlier.fallbacks),
            script_errors: self.script_errors.saturating_sub(earlier.script_errors),
            failed: self.failed.saturating_sub(earlier.failed),
            feedback: self.feedback.saturating_sub(earlier.feedback),
            feedback_sum: self.feedback_sum.saturating_sub(earlier.feedback_sum),
        }
    }
}

fn percent(count: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| count as f64 * 100.0 / of as f64)
}

/// When the guard rolls a candidate back (`kefu serve --canary-*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuardConfig {
    /// Roll back automatically at all (`--canary-auto-rollback`); off, the guard decides
    /// nothing.
    pub auto_rollback: bool,
    /// The most the candidate's handoff rate may exceed live's, in percentage points.
    pub max_handoff_margin: f64,
    /// The most the candidate's error rate may exceed live's, in percentage points.
    pub max_error_margin: f64,
    /// Turns the candidate serves before it is judged: fewer say too little.
    pub min_turns: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            auto_rollback: false,
            max_handoff_margin: 5.0,
            max_error_margin: 2.0,
            min_turns: 200,
        }
    }
}

/// The guard's verdict on a candidate: it must go.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// Why, in words for the version's record and the log.
    pub reason: String,
    /// The candidate's figures over the window judged.
    pub candidate: Figures,
    /// The live version's figures over the same window.
    pub live: Figures,
}

/// Decides whether a canary candidate must be rolled back (see the module docs).
#[derive(Debug)]
pub struct CanaryGuard {
    config: GuardConfig,
    /// The candidate being watched, and live's figures when it was first seen.
    watching: Option<(String, Figures)>,
    /// The candidate already decided on: not decided on again.
    decided: Option<String>,
}

impl CanaryGuard {
    /// A guard with these settings.
    pub fn new(config: GuardConfig) -> Self {
        CanaryGuard {
            config,
            watching: None,
            decided: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> GuardConfig {
        self.config
    }

    /// Judges the candidate `version` from its figures (counted since it became the
    /// candidate) and live's (its counters' running totals). `Some` once, the first time
    /// the candidate must go; `None` while it may stay, before it has served the minimum
    /// number of turns, when automatic rollback is off, and after a decision on it.
    pub fn check(&mut self, version: &str, candidate: &Figures, live: &Figures) -> Option<Decision> {
        let baseline = match &self.watching {
            Some((watched, baseline)) if watched == version => *baseline,
            _ => {
                self.watching = Some((version.to_string(), *live));
                *live
            }
        };
        if !self.config.auto_rollback || self.decided.as_deref() == Some(version) {
            return None;
        }
        if candidate.turns < self.config.min_turns {
            return None;
        }
        let mut live_window = live.since(&baseline);
        // Every session on the candidate (100%): live's whole history is the only yardstick.
        if live_window.turns == 0 {
            live_window = *live;
        }
        let reason = exceeded(
            "handoff",
            candidate.handoff_rate(),
            live_window.handoff_rate(),
            self.config.max_handoff_margin,
        )
        .or_else(|| {
            exceeded(
                "error",
                candidate.error_rate(),
                live_window.error_rate(),
                self.config.max_error_margin,
            )
        })?;
        self.decided = Some(version.to_string());
        Some(Decision {
            reason: format!("{reason} over {} turns of the candidate", candidate.turns),
            candidate: *candidate,
            live: live_window,
        })
    }
}

/// The reason when the candidate's rate exceeds live's by more than `margin` points (a
/// live version with no turns counts as 0%).
fn exceeded(what: &str, candidate: Option<f64>, live: Option<f64>, margin: f64) -> Option<String> {
    let candidate = candidate?;
    let live = live.unwrap_or(0.0);
    (candidate - live > margin).then(|| {
        format!("the candidate's {what} rate {candidate:.1}% exceeds live's {live:.1}% by more than {margin} points")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(turns: u64, handoffs: u64, errors: u64) -> Figures {
        Figures {
            turns,
            handoffs,
            script_errors: errors,
            ..Figures::default()
        }
    }

    fn on() -> CanaryGuard {
        CanaryGuard::new(GuardConfig {
            auto_rollback: true,
            max_handoff_margin: 5.0,
            max_error_margin: 2.0,
            min_turns: 200,
        })
    }

    #[test]
    fn a_candidate_within_the_margins_stays() {
        let mut guard = on();
        let live = figures(10_000, 500, 100);
        assert_eq!(guard.check("c", &Figures::default(), &live), None);
        // 5% + 4.9 points of handoffs, 1% + 1.9 points of errors.
        let later = live_plus(&live, figures(1000, 50, 10));
        assert_eq!(guard.check("c", &figures(1000, 99, 29), &later), None);
    }

    fn live_plus(a: &Figures, b: Figures) -> Figures {
        Figures {
            turns: a.turns + b.turns,
            handoffs: a.handoffs + b.handoffs,
            script_errors: a.script_errors + b.script_errors,
            ..Figures::default()
        }
    }

    #[test]
    fn a_candidate_handing_off_too_often_goes_once_it_has_the_minimum_turns() {
        let mut guard = on();
        let live = figures(10_000, 500, 0);
        assert_eq!(guard.check("c", &Figures::default(), &live), None);
        let later = live_plus(&live, figures(1000, 50, 0));
        // 30% against 5%, but only 199 turns: too few to judge.
        assert_eq!(guard.check("c", &figures(199, 60, 0), &later), None);
        let decision = guard.check("c", &figures(200, 60, 0), &later).expect("rolled back");
        assert!(decision.reason.contains("handoff rate 30.0%"), "{}", decision.reason);
        assert!(decision.reason.contains("live's 5.0%"), "{}", decision.reason);
        assert_eq!(decision.live, figures(1000, 50, 0));
        assert_eq!(decision.candidate, figures(200, 60, 0));
        // Decided once.
        assert_eq!(guard.check("c", &figures(300, 90, 0), &later), None);
    }

    #[test]
    fn errors_count_script_failures_and_failed_turns() {
        let mut guard = on();
        let live = figures(1000, 0, 10);
        guard.check("c", &Figures::default(), &live);
        let later = live_plus(&live, figures(1000, 0, 10));
        let mut candidate = figures(300, 0, 3);
        candidate.failed = 7;
        // (3 + 7) / 307 = 3.3%, against live's 1%: 2.3 points over a 2-point margin.
        let decision = guard.check("c", &candidate, &later).expect("rolled back");
        assert!(
            decision.reason.starts_with("the candidate's error rate 3.3%"),
            "{}",
            decision.reason
        );
    }

    #[test]
    fn live_is_judged_over_the_candidates_window_not_its_history() {
        let mut guard = on();
        // Live had a bad past (20% handoffs) but hands off 1% since the candidate came.
        let live = figures(10_000, 2000, 0);
        guard.check("c", &Figures::default(), &live);
        let later = live_plus(&live, figures(1000, 10, 0));
        let decision = guard.check("c", &figures(500, 50, 0), &later);
        assert!(decision.is_some(), "10% against 1% since the canary began");
    }

    #[test]
    fn a_new_candidate_is_watched_afresh_and_off_decides_nothing() {
        let mut guard = on();
        let live = figures(1000, 10, 0);
        guard.check("a", &Figures::default(), &live);
        assert!(guard.check("a", &figures(200, 100, 0), &live).is_some());
        // Another candidate: a new window, a new decision.
        assert!(guard.check("b", &figures(200, 100, 0), &live).is_some());
        let mut off = CanaryGuard::new(GuardConfig::default());
        assert!(!off.config().auto_rollback);
        assert_eq!(off.check("a", &figures(10_000, 10_000, 10_000), &live), None);
    }

    #[test]
    fn a_candidate_serving_everyone_is_judged_against_lives_history() {
        let mut guard = on();
        let live = figures(1000, 10, 0);
        guard.check("c", &Figures::default(), &live);
        assert!(guard.check("c", &figures(200, 40, 0), &live).is_some());
    }

    #[test]
    fn a_version_keeps_counters_only_while_it_serves() {
        let book = VersionBook::default();
        let serving = Arc::new(Mutex::new(Serving {
            live: "v1".into(),
            candidate: Some("v2".into()),
            pinned: vec!["v0".into()],
        }));
        let read = Arc::clone(&serving);
        book.watch(move || read.lock().unwrap().clone());
        let names = |entries: &[Arc<VersionEntry>]| {
            entries
                .iter()
                .map(|e| format!("{}/{}", e.version, e.role.name()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&book.prune()), ["v1/live", "v2/canary"]);
        book.counters("v0", RulesRole::Pinned).counters.feedback(5);
        book.counters("v1", RulesRole::Live).counters.failed();
        assert_eq!(book.figures("v1", RulesRole::Live).unwrap().failed, 1);
        assert_eq!(names(&book.prune()), ["v1/live", "v2/canary", "v0/pinned"]);
        // Promoted: v2 is live, no candidate, v0 let go.
        *serving.lock().unwrap() = Serving {
            live: "v2".into(),
            candidate: None,
            pinned: Vec::new(),
        };
        assert_eq!(names(&book.prune()), ["v2/live"]);
        assert_eq!(book.figures("v1", RulesRole::Live), None);
        // A version that serves no more is dropped when another is added, too.
        book.counters("v1", RulesRole::Live);
        book.counters("v2", RulesRole::Pinned);
        assert_eq!(names(&book.entries.load()), ["v2/live", "v2/pinned"]);
    }

    #[test]
    fn counters_sort_a_turn_by_its_source_handoff_and_errors() {
        let counters = VersionCounters::default();
        let mut response = crate::engine::Engine::new(
            crate::dsl::load_dir_with(
                std::path::Path::new("tests/data/engine"),
                crate::dsl::LoadOptions {
                    quick_training: true,
                    ..Default::default()
                },
            )
            .rules
            .unwrap(),
        )
        .turn(crate::TurnRequest::new("s", "发票"))
        .unwrap();
        assert_eq!(response.source, AnswerSource::Rule);
        counters.turn(&response);
        response.source = AnswerSource::Fallback;
        counters.turn(&response);
        counters.failed();
        counters.feedback(4);
        counters.feedback(2);
        let f = counters.figures();
        assert_eq!(
            (f.turns, f.fallbacks, f.failed, f.feedback, f.feedback_sum),
            (2, 1, 1, 2, 6)
        );
        assert_eq!(f.answered_by(AnswerSource::Rule), 1);
        assert_eq!(f.answered_by(AnswerSource::Fallback), 1);
        assert_eq!(f.error_rate(), Some(100.0 / 3.0));
        assert_eq!(f.handoff_rate(), Some(0.0));
    }
}
