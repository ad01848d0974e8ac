//! Model generations in flight, by conversation, so that a person's act can silence them
//! at once ([`Engine::silence`](super::Engine::silence)).
//!
//! A turn that reaches the model registers its generation here and gets a [`Running`]
//! flag; the generation's text callback reads the flag (one relaxed atomic load a piece
//! of text) and stops when it is set, so no more of the model's words reach a stream
//! once an agent has the conversation. The answer itself is dropped by the turn's save,
//! as for any turn a person acted during (`save`, `human_acts`): silencing only stops
//! spending the model's time and sending text nobody should see.
//!
//! A turn registers only when it asks the model (most turns never do, and pay nothing
//! here), which may be a little after it read its session. A silence that comes in
//! between is remembered for [`MARK_TTL`] with the time it came, and a generation whose
//! turn began before it starts silenced.
//!
//! Bounded: at most [`RUNNING_LIMIT`] conversations are tracked. Expired marks are pruned
//! when the table fills (at most once a second); past the limit, a new generation runs
//! unregistered and a silence is not remembered for later. Either way the answer is still
//! dropped by the save, and a streamed one withdrawn.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The most conversations the registry tracks at once (running generations and
/// remembered silences together).
pub const RUNNING_LIMIT: usize = 20_000;

/// How long a silence is remembered for a generation that registers after it: longer
/// than a turn takes from reading its session to asking the model.
pub const MARK_TTL: Duration = Duration::from_secs(60);

/// The running generations and recent silences of every conversation.
#[derive(Default)]
pub(super) struct Registry {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    sessions: HashMap<Box<str>, Slot>,
    /// Not before this may the table be pruned again.
    next_prune: Option<Instant>,
}

/// One conversation's generations and its last silence.
#[derive(Default)]
struct Slot {
    running: Vec<Arc<AtomicBool>>,
    silenced: Option<Instant>,
}

impl Slot {
    /// Whether the slot holds nothing worth keeping at `now`.
    fn idle(&self, now: Instant) -> bool {
        self.running.is_empty() && self.silenced.is_none_or(|at| now.duration_since(at) > MARK_TTL)
    }
}

impl Table {
    /// Drops idle slots, at most once a second; whether there is room for one more.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.sessions.len() < RUNNING_LIMIT {
            return true;
        }
        if self.next_prune.is_none_or(|at| now >= at) {
            self.sessions.retain(|_, slot| !slot.idle(now));
            self.next_prune = Some(now + Duration::from_secs(1));
        }
        self.sessions.len() < RUNNING_LIMIT
    }

    /// The slot of `session`, made when there is room.
    fn slot(&mut self, session: &str, now: Instant) -> Option<&mut Slot> {
        if !self.sessions.contains_key(session) {
            if !self.make_room(now) {
                return None;
            }
            self.sessions.insert(session.into(), Slot::default());
        }
        self.sessions.get_mut(session)
    }
}

/// A generation's registration: silenced when [`Running::silenced`] says so; leaves the
/// registry when dropped.
pub(super) struct Running<'a> {
    registry: &'a Registry,
    /// `None`: not registered (the table was full).
    session: Option<Box<str>>,
    flag: Arc<AtomicBool>,
}

impl Running<'_> {
    /// Whether a person acted on the conversation since its turn began: one atomic load,
    /// for every piece of text the model produces.
    #[inline]
    pub(super) fn silenced(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else { return };
        let mut table = self.registry.lock();
        let now = Instant::now();
        if let Some(slot) = table.sessions.get_mut(&session) {
            slot.running.retain(|f| !Arc::ptr_eq(f, &self.flag));
            if slot.idle(now) {
                table.sessions.remove(&session);
            }
        }
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere while holding the lock leaves a table still worth using.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a generation of `session` for a turn that began at `began` (before it
    /// read its session): silenced from the start when a silence came since.
    pub(super) fn start(&self, session: &str, began: Instant) -> Running<'_> {
        let mut table = self.lock();
        let now = Instant::now();
        let flag = Arc::new(AtomicBool::new(false));
        let Some(slot) = table.slot(session, now) else {
            return Running {
                registry: self,
                session: None,
                flag,
            };
        };
        if slot.silenced.is_some_and(|at| at >= began) {
            flag.store(true, Ordering::Relaxed);
        }
        slot.running.push(Arc::clone(&flag));
        Running {
            registry: self,
            session: Some(session.into()),
            flag,
        }
    }

    /// Silences every generation of `session` now running, and those of turns already
    /// begun that register within [`MARK_TTL`]; how many were running.
    pub(super) fn silence(&self, session: &str) -> usize {
        let mut table = self.lock();
        let now = Instant::now();
        let Some(slot) = table.slot(session, now) else { return 0 };
        slot.silenced = Some(now);
        for flag in &slot.running {
            flag.store(true, Ordering::Relaxed);
        }
        slot.running.len()
    }

    /// Conversations tracked now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silence_stops_the_running_generations_of_its_session_only() {
        let registry = Registry::default();
        let began = Instant::now();
        let a1 = registry.start("a", began);
        let a2 = registry.start("a", began);
        let b = registry.start("b", began);
        assert!(!a1.silenced() && !a2.silenced() && !b.silenced());
        assert_eq!(registry.silence("a"), 2);
        assert!(a1.silenced() && a2.silenced());
        assert!(!b.silenced(), "another conversation's generation goes on");
        drop((a1, a2, b));
        // Only a's remembered silence is left.
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn a_turn_begun_before_a_silence_starts_its_generation_silenced_and_a_later_one_does_not() {
        let registry = Registry::default();
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(registry.silence("c"), 0, "nothing was running");
        std::thread::sleep(Duration::from_millis(2));
        let after = Instant::now();
        assert!(registry.start("c", before).silenced());
        assert!(!registry.start("c", after).silenced());
    }

    #[test]
    fn a_finished_generation_leaves_nothing_behind() {
        let registry = Registry::default();
        for i in 0..100 {
            let running = registry.start(&format!("s{i}"), Instant::now());
            assert!(!running.silenced());
        }
        assert_eq!(registry.len(), 0);
    }

    #[test]
    fn the_table_is_bounded_and_a_generation_past_it_still_runs() {
        let registry = Registry::default();
        let began = Instant::now();
        let held: Vec<_> = (0..RUNNING_LIMIT)
            .map(|i| registry.start(&format!("s{i}"), began))
            .collect();
        assert_eq!(registry.len(), RUNNING_LIMIT);
        // Full of running generations: nothing to prune.
        let extra = registry.start("extra", began);
        assert!(!extra.silenced());
        assert_eq!(registry.silence("extra"), 0);
        assert_eq!(registry.len(), RUNNING_LIMIT);
        // A tracked one can still be silenced.
        assert_eq!(registry.silence("s7"), 1);
        assert!(held[7].silenced());
        drop(extra);
        drop(held);
        // Only s7's remembered silence is left.
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn expired_silences_are_pruned_when_the_table_is_full() {
        let registry = Registry::default();
        {
            let mut table = registry.lock();
            let old = Instant::now().checked_sub(MARK_TTL + Duration::from_secs(1));
            let Some(old) = old else { return };
            for i in 0..RUNNING_LIMIT {
                table.sessions.insert(
                    format!("m{i}").into(),
                    Slot {
                        running: Vec::new(),
                        silenced: Some(old),
                    },
                );
            }
        }
        let running = registry.start("new", Instant::now());
        assert_eq!(registry.len(), 1, "the expired marks made room");
        assert_eq!(registry.silence("new"), 1);
        assert!(running.silenced());
    }
}
