//! Serving the version store: the live version for everyone, the canary for its share of
//! sessions, and published versions pinned by a request, each built once per node.
//!
//! A [`Follower`] reads the store's pointers ([`Pointers`]) and makes the engine serve
//! what they say: the live version through [`Engine::swap_rules`], the canary through
//! [`Engine::set_candidate`]. It is woken by a change (Redis pub/sub, or at once on the
//! node that made it) and looks anyway once a second, so a lost message leaves a node
//! behind for at most a second. A version is checked out into the state directory
//! (`checkouts/`, written whole then renamed into place, every blob checked against its
//! sha256 on the way) and built from there with the same [`dsl::load_dir`] as any rules
//! directory, so a turn still sees exactly one `RuleSet` and the invariants of a load (only
//! the directory read, bounded) hold for published versions too. A version that cannot be
//! read whole or does not build is reported (`GET /admin/rules`, the log) and never
//! served: the node keeps what it served.
//!
//! Built versions are kept by id (live, canary and a few pinned ones), so switching back
//! and forth between two versions, a promote (the canary becomes live) or a rollback to
//! the content of a version still held costs no build.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ReloadFailure, build_isolated_with};
use crate::versions::{VersionId, VersionStore};
use crate::{Engine, RuleSet};

/// How often a follower looks at the pointers when nothing woke it.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Built versions a node keeps (live, canary and pinned ones), beyond which the least
/// recently used is dropped. A rule set of the demo shop holds a few MiB.
const KEPT_VERSIONS: usize = 6;

/// Checked-out version directories kept in the state directory.
const KEPT_CHECKOUTS: usize = 8;

/// Why a version could not be served.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The store could not be read (or the version is damaged or missing).
    #[error(transparent)]
    Store(#[from] crate::versions::VersionError),
    /// The version's files do not build with this kefu.
    #[error("version {id} does not build: {summary}")]
    Build {
        /// The version.
        id: VersionId,
        /// Its first error, `path:line:col: message`.
        summary: String,
        /// Every diagnostic.
        failure: Box<ReloadFailure>,
    },
}

/// What the node serves from its store, for `GET /admin/rules` and `/healthz`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FollowStatus {
    /// The pointers' serial last applied.
    pub serial: u64,
    /// The live version serving.
    pub live: Option<VersionId>,
    /// The canary serving, and its share of sessions.
    pub canary: Option<(VersionId, u8)>,
    /// When the pointers were last read (whether anything changed or not).
    pub checked_at: Option<DateTime<Utc>>,
    /// When they last changed what this node serves.
    pub applied_at: Option<DateTime<Utc>>,
    /// Why the last look could not apply the pointers (the store unreachable, a version
    /// damaged or not building), while that lasts; what served before keeps serving.
    pub error: Option<String>,
}

/// What one look at the pointers did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Synced {
    /// The pointers had not changed.
    Unchanged,
    /// The store has no live version yet (the node serves its rules directory).
    Empty,
    /// The node serves what the pointers say now.
    Applied {
        /// The live rules hash serving before.
        previous: String,
        /// The live rules hash now.
        version: String,
    },
}

/// Makes an engine serve what a version store's pointers say (see the module doc).
pub struct Follower {
    store: Arc<dyn VersionStore>,
    engine: Arc<Engine>,
    checkouts: PathBuf,
    /// Built versions, most recently used last.
    built: Mutex<VecDeque<(VersionId, Arc<RuleSet>)>>,
    /// One sync at a time: two overlapping ones could apply pointers out of order.
    syncing: Mutex<()>,
    status: RwLock<FollowStatus>,
    /// The pointers' serial whose versions failed to load, and when: not tried again for
    /// [`RETRY_FAILED`] unless the pointers change (a version that does not build would
    /// otherwise be built once a second).
    failed: Mutex<Option<(u64, Instant)>>,
}

/// How long a follower waits before it tries again pointers whose versions failed.
const RETRY_FAILED: Duration = Duration::from_secs(30);

impl Follower {
    /// A follower making `engine` serve `store`'s pointers, checking versions out under
    /// `state_dir/checkouts`.
    pub fn new(store: Arc<dyn VersionStore>, engine: Arc<Engine>, state_dir: &Path) -> Self {
        Follower {
            store,
            engine,
            checkouts: state_dir.join("checkouts"),
            built: Mutex::new(VecDeque::new()),
            syncing: Mutex::new(()),
            status: RwLock::new(FollowStatus::default()),
            failed: Mutex::new(None),
        }
    }

    /// What the node serves from the store.
    pub fn status(&self) -> FollowStatus {
        self.status.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the store had a live version at the last look (the node serves the store,
    /// not its rules directory).
    pub fn active(&self) -> bool {
        self.status().live.is_some()
    }

    /// The live version of `store` built, for a node starting: `None` when nothing is
    /// live yet. Checked out under `state_dir/checkouts` like every other.
    pub fn load_live(
        store: &Arc<dyn VersionStore>,
        state_dir: &Path,
    ) -> Result<Option<(VersionId, RuleSet)>, FollowError> {
        let Some(live) = store.pointers()?.live else {
            return Ok(None);
        };
        let rules = build_version(store, &state_dir.join("checkouts"), live)?;
        Ok(Some((live, rules)))
    }

    /// Records that the engine already serves `live` (built by [`load_live`](Self::load_live)
    /// at start), so the first sync does not build it again.
    pub fn started_on(&self, live: VersionId, rules: Arc<RuleSet>) {
        self.keep(live, rules);
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        status.live = Some(live);
        status.applied_at = Some(Utc::now());
    }

    /// Reads the pointers and, when they changed, builds what they name (or takes it from
    /// the versions kept) and makes the engine serve it: the canary is set before the
    /// live version is swapped, and only once both are built, so no turn is served by a
    /// half-applied change. On an error nothing changes and the error is kept in the
    /// status until a look succeeds.
    pub fn sync(&self) -> Result<Synced, FollowError> {
        let _one = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.sync_locked();
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        status.checked_at = Some(Utc::now());
        match &result {
            // Unchanged keeps an error standing: pointers that failed are not retried at
            // once, and are still not served.
            Ok(Synced::Unchanged) => {}
            Ok(_) => {
                status.error = None;
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            Err(error) => {
                let message = error.to_string();
                if status.error.as_deref() != Some(message.as_str()) {
                    tracing::error!(%error, "the version store's pointers could not be applied; serving what served before");
                }
                status.error = Some(message);
            }
        }
        result
    }

    fn sync_locked(&self) -> Result<Synced, FollowError> {
        let pointers = self.store.pointers()?;
        let (applied_serial, applied_live, applied_canary) = {
            let status = self.status.read().unwrap_or_else(|e| e.into_inner());
            (status.serial, status.live, status.canary)
        };
        let canary = pointers.canary.as_ref().map(|c| (c.version, c.percent));
        if pointers.serial == applied_serial && pointers.live == applied_live && canary == applied_canary {
            return Ok(Synced::Unchanged);
        }
        let Some(live) = pointers.live else {
            let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
            status.serial = pointers.serial;
            return Ok(Synced::Empty);
        };
        {
            let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((serial, at)) = *failed
                && serial == pointers.serial
                && at.elapsed() < RETRY_FAILED
            {
                return Ok(Synced::Unchanged);
            }
        }
        let started = Instant::now();
        let loaded = self.load(live).and_then(|live_rules| {
            let candidate = match canary {
                Some((id, percent)) => Some((self.load(id)?, percent)),
                None => None,
            };
            Ok((live_rules, candidate))
        });
        let (live_rules, candidate) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some((pointers.serial, Instant::now()));
                return Err(error);
            }
        };
        // Two atomic stores, so a turn between them may pair the new candidate with the
        // old live version (or, in a promote, answer a canary session by the old live
        // version) for that moment; each turn still reads exactly one rule set, and
        // both were built before either store.
        self.engine.set_candidate(candidate);
        let previous = self.engine.swap_rules(Arc::clone(&live_rules));
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        status.serial = pointers.serial;
        status.live = Some(live);
        status.canary = canary;
        status.applied_at = Some(Utc::now());
        tracing::info!(
            serial = pointers.serial,
            live,
            version = %live_rules.version,
            previous = %previous.version,
            canary = ?canary,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "serving the version store's pointers"
        );
        Ok(Synced::Applied {
            previous: previous.version.clone(),
            version: live_rules.version.clone(),
        })
    }

    /// A published version built (from the versions kept, or checked out and built now).
    pub fn load(&self, id: VersionId) -> Result<Arc<RuleSet>, FollowError> {
        if let Some(rules) = self.kept(id) {
            return Ok(rules);
        }
        // A rollback publishes old content as a new version: same files, same rule set.
        let published = self.store.version(id)?.rules;
        let same = {
            let built = self.built.lock().unwrap_or_else(|e| e.into_inner());
            built
                .iter()
                .find(|(_, r)| r.version == published)
                .map(|(_, r)| Arc::clone(r))
        };
        if let Some(rules) = same {
            self.keep(id, Arc::clone(&rules));
            return Ok(rules);
        }
        let rules = Arc::new(build_version(&self.store, &self.checkouts, id)?);
        self.keep(id, Arc::clone(&rules));
        self.prune_checkouts();
        Ok(rules)
    }

    /// The published version whose rules hash is `rules` (a request's `rules_version`),
    /// built; `None` when no version has that hash.
    pub fn load_by_rules(&self, rules: &str) -> Result<Option<Arc<RuleSet>>, FollowError> {
        match self.store.by_rules(rules)? {
            Some(id) => self.load(id).map(Some),
            None => Ok(None),
        }
    }

    fn kept(&self, id: VersionId) -> Option<Arc<RuleSet>> {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        let at = built.iter().position(|(v, _)| *v == id)?;
        let entry = built.remove(at)?;
        let rules = Arc::clone(&entry.1);
        built.push_back(entry);
        Some(rules)
    }

    fn keep(&self, id: VersionId, rules: Arc<RuleSet>) {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        built.retain(|(v, _)| *v != id);
        built.push_back((id, rules));
        while built.len() > KEPT_VERSIONS {
            built.pop_front();
        }
    }

    /// Removes the oldest checkouts beyond [`KEPT_CHECKOUTS`]: a version checked out again
    /// later is simply written again.
    fn prune_checkouts(&self) {
        let Ok(entries) = std::fs::read_dir(&self.checkouts) else {
            return;
        };
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('v'))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if dirs.len() <= KEPT_CHECKOUTS {
            return;
        }
        dirs.sort();
        for (_, dir) in dirs.iter().take(dirs.len() - KEPT_CHECKOUTS) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Checks version `id` out under `checkouts` (unless it is there already) and builds it.
fn build_version(store: &Arc<dyn VersionStore>, checkouts: &Path, id: VersionId) -> Result<RuleSet, FollowError> {
    let version = store.version(id)?;
    let dir = checkouts.join(format!("v{id}-{}", version.rules));
    // A checkout is renamed into place whole, so one that exists is complete; its files
    // were verified when it was written. A stale one from an interrupted write has another
    // name and is pruned.
    if !dir.is_dir() {
        store.checkout(id, &dir)?;
    } else {
        // Touched: the pruning keeps the most recently used.
        let _ = std::fs::File::open(&dir).and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }
    let compiled =
        build_isolated_with(&dir, crate::versions::load_options(store)).map_err(|failure| FollowError::Build {
            id,
            summary: failure.summary(),
            failure: Box::new(failure),
        })?;
    let Some(rules) = compiled.rules else {
        let failure = ReloadFailure::from_report(&compiled.report, super::Trigger::Store);
        return Err(FollowError::Build {
            id,
            summary: failure.summary(),
            failure: Box::new(failure),
        });
    };
    if rules.version != version.rules {
        // The files are the ones published (their hashes were checked); a kefu that
        // hashes rule sets differently names the same content otherwise. Served, and said.
        tracing::warn!(id, published = %version.rules, built = %rules.version, "a version builds to another rules hash than it was published with");
    }
    Ok(rules)
}

/// Wakes a running follower, and stops it when dropped.
pub struct FollowHandle {
    pub(super) wake: mpsc::Sender<bool>,
    pub(super) thread: Option<JoinHandle<()>>,
}

impl FollowHandle {
    /// A function that makes the follower look at the pointers now (for Redis pub/sub and
    /// this node's own changes).
    pub fn waker(&self) -> impl Fn() + Send + Sync + 'static {
        let wake = self.wake.clone();
        move || {
            let _ = wake.send(true);
        }
    }
}

impl Drop for FollowHandle {
    fn drop(&mut self) {
        let _ = self.wake.send(false);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
