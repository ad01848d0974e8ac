//! Host actions: functions scripts call that act on the world (`create_ticket`) or depend
//! on the turn (`offer` reads its time), bound to the turn that runs the script.
//!
//! Compiled scripts live in the shared, immutable `RuleSet`, but a ticket belongs to one
//! session on one engine. Rhai evaluation is synchronous on the calling thread, so the
//! turn installs its [`Host`] in a thread-local for the duration of its script calls
//! ([`with_host`]) and the registered functions find it there. Outside a turn (e.g. in
//! `kefu check`) there is no host and actions return `()`.

use std::cell::RefCell;
use std::sync::Arc;

/// What scripts can ask the running turn to do.
pub trait Host: Send + Sync {
    /// Raises a ticket and returns it as a script map (with at least `id`).
    fn create_ticket(&self, kind: &str, reference: &str) -> rhai::Dynamic;
    /// Notes something for the turn's trace (a failed source lookup, say).
    fn note(&self, message: String);
    /// The turn's time in milliseconds since the epoch (a replayed conversation's `as_of`,
    /// not the wall clock), for functions that depend on the date such as `offer`.
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

thread_local! {
    static HOST: RefCell<Option<Arc<dyn Host>>> = const { RefCell::new(None) };
}

/// Runs `f` with `host` installed for this thread's script calls.
pub fn with_host<R>(host: Arc<dyn Host>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<dyn Host>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            HOST.with(|h| *h.borrow_mut() = self.0.take());
        }
    }
    let previous = HOST.with(|h| h.borrow_mut().replace(host));
    let _restore = Restore(previous);
    f()
}

/// The host of the turn running on this thread, if any.
pub fn current() -> Option<Arc<dyn Host>> {
    HOST.with(|h| h.borrow().clone())
}

/// Notes something in the current turn's trace, if a turn is running.
pub fn note(message: impl FnOnce() -> String) {
    if let Some(host) = current() {
        host.note(message());
    }
}
