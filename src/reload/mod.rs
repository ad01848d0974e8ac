//! Hot reload: watch the rules directory, build a new rule set off to the side, swap it in.
//!
//! Every way of asking for a reload (the file watcher, SIGHUP, `POST /admin/reload`) ends
//! in [`Reloader::reload`], which builds with [`dsl::load_dir`] and publishes with
//! [`Engine::swap_rules`] only when the build has no errors; the `?`-before-store shape of
//! vector's TLS reload. A turn loads one `Arc<RuleSet>` when it starts, so it sees the old
//! rules or the new ones, never a mixture, and no request fails because of a reload. A
//! broken edit leaves the old rules serving; its diagnostics (`path:line:col`) are logged
//! and kept for `GET /admin/rules` until the files build again.
//!
//! The watcher runs notify on its own thread, debounces bursts of events (an editor's save
//! is several), ignores reads (building the rules reads every file), and watches the
//! directory rather than files, so editors that write a temporary file and rename it over
//! the original are seen. If the directory itself is replaced (a deploy that swaps a
//! symlink or renames a new directory into place) it is watched again.
//!
//! Settings that cannot change while serving (listen address, session store, model) are
//! command-line options, not rules, so a reload never half-applies them.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use notify::Watcher as _;
use serde::Serialize;

pub mod follow;
pub mod workbench;

pub use follow::{FollowError, FollowHandle, FollowStatus, Follower, Synced};

use crate::diag::Report;
use crate::dsl;
use crate::ruleset::SourceKind;
use crate::{Engine, RuleSet};

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// notify could not watch the directory.
    #[error("cannot watch {path}")]
    Watch {
        /// The rules directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
    /// The watcher thread could not be started.
    #[error("cannot start the watcher thread")]
    Thread(#[source] std::io::Error),
}

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The first load, when the service started.
    Startup,
    /// The file watcher saw a change.
    Watch,
    /// SIGHUP.
    Signal,
    /// `POST /admin/reload`.
    Admin,
    /// The version store's pointers changed (a publish, canary, promote or rollback).
    Store,
}

impl Trigger {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Watch => "watch",
            Trigger::Signal => "signal",
            Trigger::Admin => "admin",
            Trigger::Store => "store",
        }
    }
}

/// One diagnostic of a rejected build, flattened for JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiagnosticView {
    /// `path:line:col`.
    pub location: String,
    /// `error` or `warning`.
    pub severity: String,
    /// What is wrong.
    pub message: String,
}

/// A build that was rejected; the previous rules kept serving.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadFailure {
    /// When it was tried.
    pub at: DateTime<Utc>,
    /// What asked for it.
    pub trigger: Trigger,
    /// Every error and warning.
    pub diagnostics: Vec<DiagnosticView>,
    /// The rendered report, as `kefu check` prints it.
    pub report: String,
}

impl ReloadFailure {
    fn from_report(report: &Report, trigger: Trigger) -> Self {
        let diagnostics = report
            .diagnostics
            .iter()
            .map(|d| DiagnosticView {
                location: report.location(d.primary.span),
                severity: if d.is_error() { "error" } else { "warning" }.into(),
                message: d.message.clone(),
            })
            .collect();
        ReloadFailure {
            at: Utc::now(),
            trigger,
            diagnostics,
            report: report.render_all(false),
        }
    }

    /// A failure that is not about a place in a file: one error at `path`.
    fn single(path: &Path, message: String) -> Self {
        ReloadFailure {
            at: Utc::now(),
            trigger: Trigger::Startup,
            diagnostics: vec![DiagnosticView {
                location: path.display().to_string(),
                severity: "error".into(),
                message: message.clone(),
            }],
            report: format!("error: {message}\n --> {}\n", path.display()),
        }
    }

    fn with_trigger(mut self, trigger: Trigger) -> Self {
        self.trigger = trigger;
        self
    }

    /// The first error as `path:line:col: message`.
    pub fn summary(&self) -> String {
        self.diagnostics
            .iter()
            .find(|d| d.severity == "error")
            .map(|d| format!("{}: {}", d.location, d.message))
            .unwrap_or_else(|| "the rules do not build".into())
    }
}

/// What a reload did.
#[derive(Clone, Debug)]
pub enum ReloadOutcome {
    /// The new rules serve from now on.
    Applied {
        /// Their version.
        version: String,
        /// The version they replaced.
        previous: String,
        /// Whether the files changed at all (same version: nothing to do, but swapped all
        /// the same, which is harmless).
        changed: bool,
        /// Warnings in the build.
        warnings: usize,
        /// Time to build and swap.
        duration: Duration,
    },
    /// The files have errors; the previous rules keep serving.
    Rejected(ReloadFailure),
}

/// The served rules, for `GET /admin/rules`.
#[derive(Clone, Debug, Serialize)]
pub struct RulesStatus {
    /// The rules directory.
    pub dir: PathBuf,
    /// Version of the rules serving now.
    pub version: String,
    /// The files they were built from.
    pub files: Vec<PathBuf>,
    /// When they were loaded.
    pub loaded_at: DateTime<Utc>,
    /// What loaded them.
    pub loaded_by: Trigger,
    /// Intents, rules, promotions and flows in them.
    pub counts: RuleCounts,
    /// Reloads applied since start (the first load not counted).
    pub reloads: u64,
    /// Reloads rejected since start.
    pub rejected: u64,
    /// Set while the files on disk do not build: the last rejected reload. Cleared by the
    /// next reload that applies.
    pub last_error: Option<ReloadFailure>,
    /// When the files on disk were first rejected since the serving rules were loaded:
    /// how long the service has answered from rules older than the files. `None` while
    /// the serving rules are the files' latest build.
    pub stale_since: Option<DateTime<Utc>>,
    /// With a version store: which versions serve (`None` without a store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<FollowStatus>,
}

/// The files on disk do not build, and the service answers from older rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stale {
    /// Errors in the last rejected build.
    pub errors: usize,
    /// The first rejection since the serving rules were loaded.
    pub since: DateTime<Utc>,
}

/// Sizes of a rule set.
#[derive(Clone, Debug, Serialize)]
pub struct RuleCounts {
    /// Declared intents.
    pub intents: usize,
    /// Rules.
    pub rules: usize,
    /// Promotions.
    pub promotions: usize,
    /// Flows.
    pub flows: usize,
}

impl RuleCounts {
    fn of(rules: &RuleSet) -> Self {
        RuleCounts {
            intents: rules.intents.len(),
            rules: rules.rules.len(),
            promotions: rules.promotions.len(),
            flows: rules.flows.len(),
        }
    }
}

/// Told about every reload (the service counts them in its metrics).
pub type ReloadObserver = Box<dyn Fn(Trigger, &ReloadOutcome) + Send + Sync>;

/// Builds and swaps rule sets for one engine.
pub struct Reloader {
    dir: PathBuf,
    engine: Arc<Engine>,
    /// One build at a time: two overlapping builds could otherwise publish out of order.
    building: Mutex<()>,
    status: RwLock<RulesStatus>,
    http_sources: AtomicBool,
    /// The files the serving rules were built from, as they were when the build read
    /// them: the watcher holds back a reload while a file that had content is empty.
    built_from: Mutex<Snapshot>,
    observer: Option<ReloadObserver>,
    /// The version store followed, when there is one: once it has a live version, every
    /// reload means "look at the store" and the directory is not served.
    follower: Option<Arc<Follower>>,
}

impl Reloader {
    /// A reloader for `engine`, whose current rules were loaded from `dir`.
    pub fn new(dir: impl Into<PathBuf>, engine: Arc<Engine>) -> Self {
        let rules = engine.rules();
        let status = RulesStatus {
            dir: dir.into(),
            version: rules.version.clone(),
            files: rules.files.clone(),
            loaded_at: Utc::now(),
            loaded_by: Trigger::Startup,
            counts: RuleCounts::of(&rules),
            reloads: 0,
            rejected: 0,
            last_error: None,
            stale_since: None,
            store: None,
        };
        Reloader {
            dir: status.dir.clone(),
            engine,
            building: Mutex::new(()),
            http_sources: AtomicBool::new(has_http_sources(&rules)),
            built_from: Mutex::new(Snapshot::of(&status.dir)),
            status: RwLock::new(status),
            observer: None,
            follower: None,
        }
    }

    /// Follows a version store: from the moment it has a live version, SIGHUP, `POST
    /// /admin/reload` and the store's own changes apply its pointers, and the rules
    /// directory is no longer served (development mode ends with the first publish).
    pub fn with_follower(mut self, follower: Arc<Follower>) -> Self {
        self.follower = Some(follower);
        self
    }

    /// The version store followed, if any.
    pub fn follower(&self) -> Option<&Arc<Follower>> {
        self.follower.as_ref()
    }

    /// Calls `observer` after every reload (metrics).
    pub fn with_observer(mut self, observer: impl Fn(Trigger, &ReloadOutcome) + Send + Sync + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// The rules directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The served rules and the last rejected reload.
    pub fn status(&self) -> RulesStatus {
        let mut status = self.status.read().unwrap_or_else(|e| e.into_inner()).clone();
        status.store = self.follower.as_ref().map(|f| f.status());
        status
    }

    /// While the files on disk do not build: the errors of the last rejected reload and
    /// when the files were first rejected. `None` while the serving rules are the files'
    /// latest build.
    pub fn stale(&self) -> Option<Stale> {
        let status = self.status.read().unwrap_or_else(|e| e.into_inner());
        let failure = status.last_error.as_ref()?;
        Some(Stale {
            errors: failure.diagnostics.iter().filter(|d| d.severity == "error").count(),
            since: status.stale_since.unwrap_or(failure.at),
        })
    }

    /// Whether the serving rules have a source that makes network calls (so a turn may
    /// block for the source's timeout).
    pub fn has_http_sources(&self) -> bool {
        self.http_sources.load(Ordering::Relaxed)
    }

    /// Builds the rules directory and, when it has no errors, publishes the result.
    pub fn reload(&self, trigger: Trigger) -> ReloadOutcome {
        let _building = self.building.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        if let Some(follower) = &self.follower
            && (follower.active() || trigger == Trigger::Store)
        {
            match self.apply_store(follower, trigger, started) {
                Some(outcome) => {
                    // The once-a-second look that found nothing new is not a reload.
                    let idle =
                        trigger == Trigger::Store && matches!(outcome, ReloadOutcome::Applied { changed: false, .. });
                    if let Some(observer) = &self.observer
                        && !idle
                    {
                        observer(trigger, &outcome);
                    }
                    return outcome;
                }
                // The store has nothing live: the directory serves (development mode).
                None if trigger == Trigger::Store => {
                    return ReloadOutcome::Applied {
                        version: self.engine.rules().version.clone(),
                        previous: self.engine.rules().version.clone(),
                        changed: false,
                        warnings: 0,
                        duration: started.elapsed(),
                    };
                }
                None => {}
            }
        }
        let outcome = match self.build_stable() {
            Err(failure) => {
                let failure = failure.with_trigger(trigger);
                self.reject(&failure, 1, 0);
                ReloadOutcome::Rejected(failure)
            }
            Ok((compiled, _)) if compiled.rules.is_none() => {
                let failure = ReloadFailure::from_report(&compiled.report, trigger);
                let (errors, warnings) = compiled.report.counts();
                self.reject(&failure, errors, warnings);
                ReloadOutcome::Rejected(failure)
            }
            Ok((compiled, snapshot)) => {
                let rules = compiled.rules.expect("checked above");
                *self.built_from.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
                let rules = Arc::new(rules);
                let http = has_http_sources(&rules);
                // Before the swap: a turn that sees the new rules must also see that they
                // may block.
                if http {
                    self.http_sources.store(true, Ordering::Relaxed);
                }
                let previous = self.engine.swap_rules(Arc::clone(&rules));
                self.http_sources.store(http, Ordering::Relaxed);
                let (_, warnings) = compiled.report.counts();
                self.record_applied(&rules, trigger);
                let outcome = ReloadOutcome::Applied {
                    version: rules.version.clone(),
                    previous: previous.version.clone(),
                    changed: rules.version != previous.version,
                    warnings,
                    duration: started.elapsed(),
                };
                tracing::info!(
                    trigger = trigger.as_str(),
                    version = %rules.version,
                    previous = %previous.version,
                    files = rules.files.len(),
                    warnings,
                    ms = started.elapsed().as_secs_f64() * 1000.0,
                    "rules reloaded"
                );
                outcome
            }
        };
        if let Some(observer) = &self.observer {
            observer(trigger, &outcome);
        }
        outcome
    }

    /// Records in the status that `rules` serve now (from the directory they were built
    /// from: the rules directory, or a version's checkout).
    fn record_applied(&self, rules: &RuleSet, trigger: Trigger) {
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        status.version = rules.version.clone();
        status.files = rules.files.clone();
        status.dir = rules.root.clone();
        status.loaded_at = Utc::now();
        status.loaded_by = trigger;
        status.counts = RuleCounts::of(rules);
        status.reloads += 1;
        status.last_error = None;
        status.stale_since = None;
    }

    /// Applies the store's pointers; `None` when the store has no live version.
    fn apply_store(&self, follower: &Follower, trigger: Trigger, started: Instant) -> Option<ReloadOutcome> {
        match follower.sync() {
            Ok(Synced::Empty) => None,
            Ok(Synced::Unchanged) => {
                let version = self.engine.rules().version.clone();
                Some(ReloadOutcome::Applied {
                    previous: version.clone(),
                    version,
                    changed: false,
                    warnings: 0,
                    duration: started.elapsed(),
                })
            }
            Ok(Synced::Applied { previous, version }) => {
                let rules = self.engine.rules();
                self.http_sources.store(has_http_sources(&rules), Ordering::Relaxed);
                self.record_applied(&rules, trigger);
                Some(ReloadOutcome::Applied {
                    changed: previous != version,
                    previous,
                    version,
                    warnings: 0,
                    duration: started.elapsed(),
                })
            }
            Err(error) => {
                let failure = match error {
                    FollowError::Build { failure, .. } => *failure,
                    FollowError::Store(e) => ReloadFailure::single(&self.dir, e.to_string()),
                }
                .with_trigger(trigger);
                let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
                status.rejected += 1;
                status.last_error = Some(failure.clone());
                status.stale_since.get_or_insert(failure.at);
                Some(ReloadOutcome::Rejected(failure))
            }
        }
    }

    /// Records a rejected build: kept for `GET /admin/rules` and logged (the first error
    /// on the error line; the whole report, which quotes the files, at `warn`).
    fn reject(&self, failure: &ReloadFailure, errors: usize, warnings: usize) {
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        status.rejected += 1;
        status.last_error = Some(failure.clone());
        status.stale_since.get_or_insert(failure.at);
        tracing::error!(
            trigger = failure.trigger.as_str(),
            errors,
            warnings,
            first = %failure.summary(),
            serving = %status.version,
            "rules rejected; the previous rules keep serving"
        );
        tracing::warn!(report = %failure.report, "rejected rules report");
    }

    /// Builds the directory once its files hold still: the files are listed (size and
    /// modification time) before and after the build, and a build during which they
    /// changed is thrown away and done again, so a save that lands while the rules are
    /// read is never half applied.
    fn build_stable(&self) -> Result<(dsl::Compiled, Snapshot), ReloadFailure> {
        let mut last_change = None;
        for _ in 0..BUILD_ATTEMPTS {
            let before = Snapshot::of(&self.dir);
            let compiled = build_isolated(&self.dir)?;
            let after = Snapshot::of(&self.dir);
            if before == after {
                return Ok((compiled, after));
            }
            last_change = before.first_difference(&after);
        }
        Err(ReloadFailure::single(
            last_change.as_deref().unwrap_or(&self.dir),
            format!(
                "the files kept changing while they were read ({BUILD_ATTEMPTS} builds); \
                 the next change reloads them"
            ),
        ))
    }

    /// Whether a rules file that had content when the serving rules were built is empty
    /// now: most likely an editor truncated it and has not written it yet.
    fn emptied_file(&self) -> Option<PathBuf> {
        let built = self.built_from.lock().unwrap_or_else(|e| e.into_inner());
        built
            .files
            .iter()
            .filter(|(_, (len, _))| *len > 0)
            .map(|(path, _)| path)
            .find(|path| std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0))
            .cloned()
    }

    /// Looks at the version store's pointers every [`follow::FOLLOW_INTERVAL`], and at
    /// once whenever the handle's waker is called (Redis pub/sub, a change this node
    /// made), on a thread of its own; each look is a [`reload`](Self::reload) with
    /// [`Trigger::Store`]. Stops when the handle is dropped. Nothing to do without a
    /// follower: the thread then only waits.
    pub fn follow(self: &Arc<Self>) -> std::io::Result<FollowHandle> {
        let (tx, rx) = mpsc::channel::<bool>();
        let reloader = Arc::clone(self);
        let thread = std::thread::Builder::new().name("kefu-follow".into()).spawn(move || {
            loop {
                match rx.recv_timeout(follow::FOLLOW_INTERVAL) {
                    Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    Ok(true) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
                // A burst of wake-ups is one look.
                while let Ok(more) = rx.try_recv() {
                    if !more {
                        return;
                    }
                }
                if reloader.follower.is_some() {
                    reloader.reload(Trigger::Store);
                }
            }
        })?;
        Ok(FollowHandle {
            wake: tx,
            thread: Some(thread),
        })
    }

    /// Watches the rules directory on its own thread and reloads after each burst of
    /// changes has been quiet for `debounce`. Stops when the handle is dropped.
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> Result<WatchHandle, ReloadError> {
        let (tx, rx) = mpsc::channel::<Message>();
        let events = tx.clone();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = events.send(Message::Event(event));
        })
        .map_err(|source| ReloadError::Watch {
            path: self.dir.clone(),
            source,
        })?;
        watcher
            .watch(&self.dir, notify::RecursiveMode::Recursive)
            .map_err(|source| ReloadError::Watch {
                path: self.dir.clone(),
                source,
            })?;
        let reloader = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("kefu-reload".into())
            .spawn(move || watch_loop(&reloader, watcher, &rx, debounce))
            .map_err(ReloadError::Thread)?;
        Ok(WatchHandle {
            stop: tx,
            thread: Some(thread),
        })
    }
}

/// Builds tried before a reload gives up on files that keep changing under it.
const BUILD_ATTEMPTS: usize = 3;
/// The stack of the thread a build runs on. Building recurses over what editors nest; the
/// parser bounds the depth, and this leaves room far beyond that bound, so that a missed
/// case costs a rejected reload, never the process (a stack overflow aborts it). Only the
/// pages a build touches are ever committed.
const BUILD_STACK: usize = 256 * 1024 * 1024;
/// The longest part of a panic message kept in a diagnostic or a log line: the message of
/// a bad slice quotes the text it was slicing, which may be a whole rule file.
const PANIC_MESSAGE_CHARS: usize = 160;

/// Builds `dir` on a thread of its own with a large stack, turning a panic in the build
/// into a rejected reload with a short message instead of the end of the caller (the
/// watcher thread, a request).
fn build_isolated(dir: &Path) -> Result<dsl::Compiled, ReloadFailure> {
    build_isolated_with(dir, dsl::LoadOptions::default())
}

/// [`build_isolated`] with load options (a published version: the store's trained
/// classifiers).
fn build_isolated_with(dir: &Path, options: dsl::LoadOptions) -> Result<dsl::Compiled, ReloadFailure> {
    let joined = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("kefu-build".into())
            .stack_size(BUILD_STACK)
            .spawn_scoped(scope, || dsl::load_dir_with(dir, options))
            .map(|thread| thread.join())
    });
    match joined {
        Ok(Ok(compiled)) => Ok(compiled),
        Ok(Err(panic)) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(dir = %dir.display(), panic = %message, "building the rules panicked");
            Err(ReloadFailure::single(
                dir,
                format!("kefu could not build these rules (an internal error, please report it): {message}"),
            ))
        }
        Err(error) => Err(ReloadFailure::single(
            dir,
            format!("cannot start a build thread: {error}"),
        )),
    }
}

/// A panic's message, cut to `PANIC_MESSAGE_CHARS` characters.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    let mut cut: String = text.chars().take(PANIC_MESSAGE_CHARS).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

/// The files of a rules directory as the file system describes them (size, modification
/// time), to tell whether they changed between two looks.
#[derive(Debug, Default, PartialEq, Eq)]
struct Snapshot {
    files: BTreeMap<PathBuf, (u64, Option<std::time::SystemTime>)>,
}

impl Snapshot {
    /// Every regular file under `dir` (hidden ones and editor scratch files too: cheap,
    /// and a change there is harmless). Unreadable entries are left out.
    fn of(dir: &Path) -> Self {
        let mut snapshot = Snapshot::default();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else { continue };
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if let Ok(meta) = entry.metadata() {
                    snapshot.files.insert(entry.path(), (meta.len(), meta.modified().ok()));
                }
            }
        }
        snapshot
    }

    /// A file that differs between the two, for the message.
    fn first_difference(&self, other: &Snapshot) -> Option<PathBuf> {
        self.files
            .iter()
            .find(|(path, meta)| other.files.get(*path) != Some(meta))
            .map(|(path, _)| path.clone())
            .or_else(|| other.files.keys().find(|p| !self.files.contains_key(*p)).cloned())
    }
}

fn has_http_sources(rules: &RuleSet) -> bool {
    rules.sources.iter().any(|s| matches!(s.kind, SourceKind::Http { .. }))
}

enum Message {
    Event(notify::Result<notify::Event>),
    Stop,
}

/// Stops the watcher when dropped.
pub struct WatchHandle {
    stop: mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often the watcher checks that the directory it watches is still the rules
/// directory (it may have been replaced by a new one).
const RECHECK: Duration = Duration::from_secs(1);
/// The longest a steady stream of changes can hold a reload back.
const MAX_DELAY: Duration = Duration::from_secs(2);

fn watch_loop(
    reloader: &Reloader,
    mut watcher: notify::RecommendedWatcher,
    rx: &mpsc::Receiver<Message>,
    debounce: Duration,
) {
    let dir = reloader.dir.clone();
    let mut identity = dir_identity(&dir);
    let mut writing = HashSet::new();
    loop {
        let first = match rx.recv_timeout(RECHECK) {
            Ok(Message::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Message::Event(event)) => {
                track_writes(&mut writing, &event);
                relevant(&event)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
        };
        // The directory was replaced (or removed and created again): watch the new one.
        let now_identity = dir_identity(&dir);
        let replaced = now_identity != identity && now_identity.is_some();
        if replaced {
            let _ = watcher.unwatch(&dir);
            match watcher.watch(&dir, notify::RecursiveMode::Recursive) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "rules directory replaced; watching the new one");
                    identity = now_identity;
                }
                Err(error) => tracing::warn!(dir = %dir.display(), %error, "cannot watch the rules directory yet"),
            }
        }
        if !first && !replaced {
            continue;
        }
        if !settle(reloader, rx, debounce, &mut writing) {
            return;
        }
        reloader.reload(Trigger::Watch);
    }
}

/// How long the watcher waits for a file an editor is still writing (modified, not yet
/// closed) before it builds anyway.
const WRITE_WAIT: Duration = Duration::from_secs(5);
/// How long a rules file that had content may stay empty before the reload applies it:
/// an editor that saves in place truncates the file first and writes it a moment later.
const EMPTY_GRACE: Duration = Duration::from_secs(2);

/// Waits until the files hold still: `debounce` of quiet (at most [`MAX_DELAY`] after the
/// first change), longer while a file is open for writing ([`WRITE_WAIT`] after the last
/// change) or a rules file has just been emptied ([`EMPTY_GRACE`]). `false` when the
/// watcher is told to stop.
fn settle(
    reloader: &Reloader,
    rx: &mpsc::Receiver<Message>,
    debounce: Duration,
    writing: &mut HashSet<PathBuf>,
) -> bool {
    let started = Instant::now();
    let mut last_change = started;
    loop {
        let quiet_until = if !writing.is_empty() {
            last_change + WRITE_WAIT
        } else if reloader.emptied_file().is_some() {
            last_change + EMPTY_GRACE
        } else {
            (last_change + debounce).min(started + MAX_DELAY)
        };
        let left = quiet_until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if !writing.is_empty() {
                tracing::warn!(
                    files = writing.len(),
                    "rules files still open for writing; reloading anyway"
                );
                writing.clear();
            }
            return true;
        }
        match rx.recv_timeout(left) {
            Ok(Message::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            Ok(Message::Event(event)) => {
                track_writes(writing, &event);
                if relevant(&event) {
                    last_change = Instant::now();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Keeps the set of files being written: modified and not closed since. inotify reports
/// the close of a file opened for writing; a file renamed into place is written whole.
fn track_writes(writing: &mut HashSet<PathBuf>, event: &notify::Result<notify::Event>) {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    let Ok(event) = event else { return };
    match event.kind {
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
            writing.extend(event.paths.iter().filter(|p| !scratch_file(p)).cloned());
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Remove(_)
        | EventKind::Modify(ModifyKind::Name(_)) => {
            for path in &event.paths {
                writing.remove(path);
            }
        }
        _ => {}
    }
}

/// Whether an event may change the rules: reads (the build reads every file) and editor
/// scratch files do not.
fn relevant(event: &notify::Result<notify::Event>) -> bool {
    let event = match event {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "rules watcher");
            return true;
        }
    };
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return false;
    }
    event.paths.is_empty() || event.paths.iter().any(|p| !scratch_file(p))
}

/// Swap files, backups and the like that editors write next to the real file.
fn scratch_file(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".swx") || name == "4913"
}

/// The directory's device and inode, which change when it is replaced.
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_message_quoting_a_whole_file_is_cut_short() {
        let long = "客".repeat(10_000);
        let payload: Box<dyn std::any::Any + Send> =
            Box::new(format!("byte index 1 is not a char boundary of `{long}`"));
        let message = panic_message(payload.as_ref());
        assert_eq!(message.chars().count(), PANIC_MESSAGE_CHARS + 1, "{message}");
        assert!(message.starts_with("byte index 1") && message.ends_with('…'));
        let payload: Box<dyn std::any::Any + Send> = Box::new("short");
        assert_eq!(panic_message(payload.as_ref()), "short");
    }

    #[test]
    fn a_file_changed_while_building_shows_in_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.kefu");
        std::fs::write(&file, "rule a {}\n").unwrap();
        let before = Snapshot::of(dir.path());
        assert_eq!(before, Snapshot::of(dir.path()));
        std::fs::write(&file, "rule a { reply \"x\" }\n").unwrap();
        let after = Snapshot::of(dir.path());
        assert_ne!(before, after);
        assert_eq!(before.first_difference(&after), Some(file));
    }

    #[test]
    fn writes_are_tracked_until_the_file_is_closed() {
        use notify::event::{AccessKind, AccessMode, DataChange, ModifyKind};
        let path = PathBuf::from("/rules/a.kefu");
        let event = |kind| Ok(notify::Event::new(kind).add_path(path.clone()));
        let mut writing = HashSet::new();
        track_writes(
            &mut writing,
            &event(notify::EventKind::Modify(ModifyKind::Data(DataChange::Any))),
        );
        assert!(writing.contains(&path));
        track_writes(
            &mut writing,
            &event(notify::EventKind::Access(AccessKind::Open(AccessMode::Any))),
        );
        assert!(
            writing.contains(&path),
            "opening it again (a read) is not the end of the write"
        );
        track_writes(
            &mut writing,
            &event(notify::EventKind::Access(AccessKind::Close(AccessMode::Write))),
        );
        assert!(writing.is_empty());
    }
}
