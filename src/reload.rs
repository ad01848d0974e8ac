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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use notify::Watcher as _;
use serde::Serialize;

use crate::dsl::{self, Report};
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
}

impl Trigger {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Watch => "watch",
            Trigger::Signal => "signal",
            Trigger::Admin => "admin",
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
    observer: Option<ReloadObserver>,
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
        };
        Reloader {
            dir: status.dir.clone(),
            engine,
            building: Mutex::new(()),
            http_sources: AtomicBool::new(has_http_sources(&rules)),
            status: RwLock::new(status),
            observer: None,
        }
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
        self.status.read().unwrap_or_else(|e| e.into_inner()).clone()
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
        let compiled = dsl::load_dir(&self.dir);
        let outcome = match compiled.rules {
            Some(rules) => {
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
                let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
                status.version = rules.version.clone();
                status.files = rules.files.clone();
                status.loaded_at = Utc::now();
                status.loaded_by = trigger;
                status.counts = RuleCounts::of(&rules);
                status.reloads += 1;
                status.last_error = None;
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
            None => {
                let failure = ReloadFailure::from_report(&compiled.report, trigger);
                let (errors, warnings) = compiled.report.counts();
                let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
                status.rejected += 1;
                status.last_error = Some(failure.clone());
                tracing::error!(
                    trigger = trigger.as_str(),
                    errors,
                    warnings,
                    first = %failure.summary(),
                    serving = %status.version,
                    "rules rejected; the previous rules keep serving"
                );
                tracing::warn!(report = %failure.report, "rejected rules report");
                ReloadOutcome::Rejected(failure)
            }
        };
        if let Some(observer) = &self.observer {
            observer(trigger, &outcome);
        }
        outcome
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
    loop {
        let first = match rx.recv_timeout(RECHECK) {
            Ok(Message::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Message::Event(event)) => relevant(&event),
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
        // Debounce: wait for `debounce` of quiet, at most MAX_DELAY in all.
        let started = Instant::now();
        loop {
            let left = MAX_DELAY.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(debounce.min(left)) {
                Ok(Message::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Ok(Message::Event(_)) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        reloader.reload(Trigger::Watch);
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
