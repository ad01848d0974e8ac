//! Where sessions live between turns.
//!
//! [`SessionStore`] is the seam: the in-memory [`MemoryStore`] (bounded, with a time to
//! idle) serves one node; a shared store lets several nodes behind a load balancer serve
//! the same conversations; [`RedisStore`] is that shared store.
//!
//! Invariant: a stored session changes only through [`SessionStore::update`], one atomic
//! read-change-write per call, and only the engine calls it. Two writers of one
//! conversation (a slow model turn and an agent's takeover, or two nodes) therefore
//! never overwrite each other's change: the second sees the first's result, and every
//! update bumps `Session::rev` so a turn can tell that something landed while it ran.
//!
//! Invariant: a store that cannot read a session says so ([`StoreError`]); it never
//! answers "no session" for "could not look". A conversation read as new in the middle
//! of a flow would answer the customer's next message as the start of another one.

pub mod redis;

use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use self::redis::{REDIS_OPS, RedisConfig, RedisObserver, RedisStore, RedisStoreError};

use crate::dialogue::Session;

/// What an update's change asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Store the session as the change left it (its `rev` is bumped).
    Store,
    /// Leave the stored session as it was (the change found nothing to do, or refused).
    Leave,
}

/// A store could not read or write a session (it tried as often as it is set to); the
/// stored session is as it was.
#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(pub String);

/// Keeps sessions by id.
pub trait SessionStore: Send + Sync {
    /// The session with this id, if it is still kept; an error when the store could not
    /// be read (never `Ok(None)` for that).
    fn get(&self, id: &str) -> Result<Option<Session>, StoreError>;
    /// Changes the session with this id in one atomic step: `change` is given the session
    /// as it is stored now (`None` when none is kept, and it may put one there) and edits
    /// it; with [`Write::Store`] the result is stored with `rev` one higher. A concurrent
    /// update of the same id waits (in memory) or makes this one start over (in Redis), so
    /// `change` may run more than once and must work only from what it is given. Returns
    /// the session as the (last) change left it: what was stored, with `Write::Store`.
    fn update(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Option<Session>) -> Write,
    ) -> Result<Option<Session>, StoreError>;
    /// Stores `session` (its `rev` one higher) if the stored session is still at
    /// `session.rev` (or none is stored); otherwise gives it back untouched. This is the
    /// common case of a turn's save, nothing having landed since the turn read its
    /// session, without the copies a general [`update`](Self::update) makes; when it gives
    /// the session back, the caller merges with an `update`.
    fn store_if_unchanged(&self, session: Session) -> Result<Unchanged, StoreError>;
    /// Forgets a session.
    fn remove(&self, id: &str);
    /// Up to `limit` kept sessions that are not with the bot (waiting for a person, held
    /// by one, resolved), the most recently updated first: what the agents' inbox starts
    /// with. A shared store looks at a bounded number of keys
    /// ([`redis::RECENT_SCAN_KEYS`]); a store of one process (memory) lists none, its
    /// sessions having started with the process.
    fn recent(&self, limit: usize) -> Result<Vec<Session>, StoreError> {
        let _ = limit;
        Ok(Vec::new())
    }
}

/// What [`SessionStore::store_if_unchanged`] did.
// Returned once and matched at once, never stored: a box would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Unchanged {
    /// The session was stored.
    Stored,
    /// Another writer came in between: the session is given back, not stored.
    Changed(Session),
}

/// How many locks the in-memory store's updates are spread over: enough that unrelated
/// conversations rarely wait for each other on a many-core host, few enough to be free.
const LOCK_STRIPES: usize = 256;

/// Sessions in this process: bounded in number, each forgotten after `idle` without a turn.
///
/// Every turn reads its session and updates it, so the store's cost is paid twice per
/// turn. moka (time-to-idle with a timer wheel, read and write logs drained by whichever
/// thread comes next) took about 1.4 µs for the pair; quick_cache, a sharded map with
/// CLOCK-style eviction, takes about 0.3 µs. Idleness is judged on read from the time of
/// the last write instead of by a timer: an idle session is not served, and it keeps one
/// of the `capacity` places until the next write of that id replaces it or the eviction,
/// which takes unread entries first, reclaims it. It is not removed on read: a turn
/// writing the same id at that moment would lose its fresh session to the removal.
///
/// Updates of one id are serialized by one of [`LOCK_STRIPES`] mutexes chosen by the id's
/// hash; reads take no lock.
pub struct MemoryStore {
    cache: quick_cache::sync::Cache<String, Arc<Kept>>,
    idle: Duration,
    locks: Box<[Mutex<()>]>,
    hasher: std::hash::RandomState,
}

/// A session and when it was last written; shared, so that looking at the stored
/// session (its `rev`, before a write) copies nothing.
struct Kept {
    session: Session,
    at: Instant,
}

impl MemoryStore {
    /// A store holding at most `capacity` sessions, each for `idle` after its last write.
    pub fn new(capacity: u64, idle: Duration) -> Self {
        MemoryStore {
            cache: quick_cache::sync::Cache::new(usize::try_from(capacity).unwrap_or(usize::MAX).max(1)),
            idle,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl Default for MemoryStore {
    /// 100,000 sessions, 24 hours idle.
    fn default() -> Self {
        MemoryStore::new(100_000, Duration::from_secs(24 * 3600))
    }
}

impl MemoryStore {
    /// The session as it stands at `now`: none once `idle` has passed since its last write.
    fn get_at(&self, id: &str, now: Instant) -> Option<Session> {
        self.kept_at(id, now).map(|kept| kept.session.clone())
    }

    fn kept_at(&self, id: &str, now: Instant) -> Option<Arc<Kept>> {
        let kept = self.cache.get(id)?;
        (now.saturating_duration_since(kept.at) <= self.idle).then_some(kept)
    }

    fn insert(&self, id: String, session: Session) {
        self.cache.insert(
            id,
            Arc::new(Kept {
                session,
                at: Instant::now(),
            }),
        );
    }

    fn lock_for(&self, id: &str) -> &Mutex<()> {
        &self.locks[(self.hasher.hash_one(id) as usize) % self.locks.len()]
    }
}

impl SessionStore for MemoryStore {
    /// Never fails: the sessions are in this process.
    fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.get_at(id, Instant::now()))
    }

    fn update(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Option<Session>) -> Write,
    ) -> Result<Option<Session>, StoreError> {
        // A change that panicked left nothing half-written (the map is only written
        // below), so a poisoned stripe is safe to go on with.
        let _guard = self.lock_for(id).lock().unwrap_or_else(|e| e.into_inner());
        let mut session = self.get_at(id, Instant::now());
        if change(&mut session) == Write::Store
            && let Some(s) = &mut session
        {
            s.rev = s.rev.wrapping_add(1);
            self.insert(id.to_string(), s.clone());
        }
        Ok(session)
    }

    fn store_if_unchanged(&self, mut session: Session) -> Result<Unchanged, StoreError> {
        let _guard = self.lock_for(&session.id).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(kept) = self.kept_at(&session.id, Instant::now())
            && kept.session.rev != session.rev
        {
            return Ok(Unchanged::Changed(session));
        }
        session.rev = session.rev.wrapping_add(1);
        self.insert(session.id.clone(), session);
        Ok(Unchanged::Stored)
    }

    fn remove(&self, id: &str) {
        let _guard = self.lock_for(id).lock().unwrap_or_else(|e| e.into_inner());
        self.cache.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores `session` under its id, replacing what was there.
    fn replace(store: &dyn SessionStore, session: Session) -> Result<Option<Session>, StoreError> {
        let id = session.id.clone();
        store.update(&id, &mut |stored| {
            let mut next = session.clone();
            next.rev = stored.as_ref().map_or(0, |s| s.rev);
            *stored = Some(next);
            Write::Store
        })
    }

    #[test]
    fn memory_store_round_trips_and_forgets() {
        let store = MemoryStore::new(10, Duration::from_secs(60));
        let mut s = Session::new("a");
        s.turns = 3;
        replace(&store, s.clone()).unwrap();
        s.rev = 1;
        assert_eq!(store.get("a").unwrap(), Some(s));
        store.remove("a");
        assert_eq!(store.get("a").unwrap(), None);
    }

    #[test]
    fn concurrent_updates_of_one_session_lose_nothing() {
        let store = std::sync::Arc::new(MemoryStore::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = std::sync::Arc::clone(&store);
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        store
                            .update("shared", &mut |s| {
                                let session = s.get_or_insert_with(|| Session::new("shared"));
                                // Read, wait, write: without the lock most increments
                                // would be lost.
                                let seen = session.turns;
                                std::hint::black_box(&seen);
                                std::thread::yield_now();
                                session.turns = seen + 1;
                                Write::Store
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let session = store.get("shared").unwrap().unwrap();
        assert_eq!(session.turns, 4000);
        assert_eq!(session.rev, 4000);
    }

    #[test]
    fn an_update_may_leave_the_session_as_it_was() {
        let store = MemoryStore::default();
        let got = store.update("none", &mut |_| Write::Leave).unwrap();
        assert_eq!(got, None);
        assert_eq!(store.get("none").unwrap(), None);
        replace(&store, Session::new("a")).unwrap();
        let got = store
            .update("a", &mut |s| {
                s.as_mut().unwrap().turns = 9;
                Write::Leave
            })
            .unwrap();
        assert_eq!(got.unwrap().turns, 9, "the caller sees what its change made");
        assert_eq!(store.get("a").unwrap().unwrap().turns, 0, "but nothing was stored");
    }

    #[test]
    fn a_session_is_stored_if_unchanged_and_given_back_otherwise() {
        let store = MemoryStore::default();
        let read = Session::new("a");
        assert!(matches!(
            store.store_if_unchanged(read.clone()).unwrap(),
            Unchanged::Stored
        ));
        assert_eq!(store.get("a").unwrap().unwrap().rev, 1);
        // A second writer that read the same rev 0 comes too late.
        let mut late = read;
        late.turns = 7;
        match store.store_if_unchanged(late).unwrap() {
            Unchanged::Changed(back) => assert_eq!(back.turns, 7, "given back untouched"),
            Unchanged::Stored => panic!("stored over a newer session"),
        }
        assert_eq!(store.get("a").unwrap().unwrap().turns, 0);
    }

    #[test]
    fn memory_store_forgets_idle_sessions_and_keeps_its_bound() {
        let idle = Duration::from_secs(60);
        let store = MemoryStore::new(1000, idle);
        // The write's time lies between `before` and `written`.
        let before = Instant::now();
        replace(&store, Session::new("idle")).unwrap();
        let written = Instant::now();
        assert!(store.get("idle").unwrap().is_some());
        assert!(store.get_at("idle", before + idle - Duration::from_secs(1)).is_some());
        let later = written + idle + Duration::from_secs(1);
        assert_eq!(store.get_at("idle", later), None, "idle past the limit");
        // A write starts the idle time again.
        std::thread::sleep(Duration::from_millis(5));
        replace(&store, Session::new("idle")).unwrap();
        assert!(
            store
                .get_at("idle", written + idle + Duration::from_millis(2))
                .is_some()
        );

        let store = MemoryStore::new(100, Duration::from_secs(60));
        for i in 0..1000 {
            replace(&store, Session::new(format!("s{i}"))).unwrap();
        }
        let kept = (0..1000)
            .filter(|i| store.get(&format!("s{i}")).unwrap().is_some())
            .count();
        assert!(kept <= 100, "{kept} sessions kept with room for 100");
        assert!(kept > 0);
        assert!(store.get("s999").unwrap().is_some(), "the newest session is kept");
    }
}
