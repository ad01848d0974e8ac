//! Where sessions live between turns.
//!
//! [`SessionStore`] is the seam: the in-memory [`MemoryStore`] (bounded, with a time to
//! idle) serves one node; a shared store lets several nodes behind a load balancer serve
//! the same conversations; [`RedisStore`] is that shared store.

pub mod redis;

use std::time::{Duration, Instant};

pub use self::redis::{RedisConfig, RedisStore, RedisStoreError};

use crate::dialogue::Session;

/// Keeps sessions by id.
pub trait SessionStore: Send + Sync {
    /// The session with this id, if it is still kept.
    fn get(&self, id: &str) -> Option<Session>;
    /// Stores a session under its id, replacing what was there.
    fn put(&self, session: Session);
    /// Forgets a session.
    fn remove(&self, id: &str);
}

/// Sessions in this process: bounded in number, each forgotten after `idle` without a turn.
///
/// Every turn reads its session and writes it back, so the store's cost is paid twice per
/// turn. moka (time-to-idle with a timer wheel, read and write logs drained by whichever
/// thread comes next) took about 1.4 µs for the pair; quick_cache, a sharded map with
/// CLOCK-style eviction, takes about 0.3 µs. Idleness is judged on read from the time of
/// the last write instead of by a timer: an idle session is not served, and it keeps one
/// of the `capacity` places until the next write of that id replaces it or the eviction,
/// which takes unread entries first, reclaims it. It is not removed on read: a turn
/// writing the same id at that moment would lose its fresh session to the removal.
pub struct MemoryStore {
    cache: quick_cache::sync::Cache<String, Kept>,
    idle: Duration,
}

/// A session and when it was last written.
#[derive(Clone)]
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
        let kept = self.cache.get(id)?;
        (now.saturating_duration_since(kept.at) <= self.idle).then_some(kept.session)
    }
}

impl SessionStore for MemoryStore {
    fn get(&self, id: &str) -> Option<Session> {
        self.get_at(id, Instant::now())
    }

    fn put(&self, session: Session) {
        let at = Instant::now();
        self.cache.insert(session.id.clone(), Kept { session, at });
    }

    fn remove(&self, id: &str) {
        self.cache.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_round_trips_and_forgets() {
        let store = MemoryStore::new(10, Duration::from_secs(60));
        let mut s = Session::new("a");
        s.turns = 3;
        store.put(s.clone());
        assert_eq!(store.get("a"), Some(s));
        store.remove("a");
        assert_eq!(store.get("a"), None);
    }

    #[test]
    fn memory_store_forgets_idle_sessions_and_keeps_its_bound() {
        let idle = Duration::from_secs(60);
        let store = MemoryStore::new(1000, idle);
        // The write's time lies between `before` and `written`.
        let before = Instant::now();
        store.put(Session::new("idle"));
        let written = Instant::now();
        assert!(store.get("idle").is_some());
        assert!(store.get_at("idle", before + idle - Duration::from_secs(1)).is_some());
        let later = written + idle + Duration::from_secs(1);
        assert_eq!(store.get_at("idle", later), None, "idle past the limit");
        // A write starts the idle time again.
        std::thread::sleep(Duration::from_millis(5));
        store.put(Session::new("idle"));
        assert!(
            store
                .get_at("idle", written + idle + Duration::from_millis(2))
                .is_some()
        );

        let store = MemoryStore::new(100, Duration::from_secs(60));
        for i in 0..1000 {
            store.put(Session::new(format!("s{i}")));
        }
        let kept = (0..1000).filter(|i| store.get(&format!("s{i}")).is_some()).count();
        assert!(kept <= 100, "{kept} sessions kept with room for 100");
        assert!(kept > 0);
        assert!(store.get("s999").is_some(), "the newest session is kept");
    }
}
