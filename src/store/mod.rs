//! Where sessions live between turns.
//!
//! [`SessionStore`] is the seam: the in-memory [`MemoryStore`] (bounded, with a time to
//! idle) serves one node; a shared store lets several nodes behind a load balancer serve
//! the same conversations; [`RedisStore`] is that shared store.

pub mod redis;

use std::time::Duration;

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
pub struct MemoryStore {
    cache: moka::sync::Cache<String, Session>,
}

impl MemoryStore {
    /// A store holding at most `capacity` sessions, each for `idle` after its last use.
    pub fn new(capacity: u64, idle: Duration) -> Self {
        MemoryStore {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .build(),
        }
    }
}

impl Default for MemoryStore {
    /// 100,000 sessions, 24 hours idle.
    fn default() -> Self {
        MemoryStore::new(100_000, Duration::from_secs(24 * 3600))
    }
}

impl SessionStore for MemoryStore {
    fn get(&self, id: &str) -> Option<Session> {
        self.cache.get(id)
    }

    fn put(&self, session: Session) {
        self.cache.insert(session.id.clone(), session);
    }

    fn remove(&self, id: &str) {
        self.cache.invalidate(id);
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
}
