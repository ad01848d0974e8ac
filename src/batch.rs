//! Work gathered by many threads and handed, in batches, to one flusher thread.
//!
//! Both of kefu's append-only outputs use it: the tracing log lines on stderr
//! (`server::logs`) and the conversation log (`data::writer`). It knows neither: both
//! depend on it, never the reverse. A turn must never wait on a disk or a pipe,
//! and a system call per line cost about as much CPU as the turn itself; a channel-fed
//! writer (tracing-appender) spent its time waking up for every line. So a producer only
//! adds to a shared batch under a mutex (a copy or a move), and a flusher thread takes the
//! whole batch every `interval` and writes it with one call.
//!
//! The batch is bounded by a weight (bytes, roughly): past `max_weight` waiting, new items
//! are dropped and counted rather than the producer held up. The flusher sees the running
//! count of dropped items so it can report them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

struct Pending<P> {
    items: P,
    weight: usize,
}

struct Shared<P> {
    pending: Mutex<Pending<P>>,
    wake: Condvar,
    stop: AtomicBool,
    dropped: AtomicU64,
    max_weight: usize,
}

/// The producers' side of a batch of `P` (a byte buffer, a `Vec` of records...).
pub struct Batcher<P> {
    shared: Arc<Shared<P>>,
}

impl<P> Clone for Batcher<P> {
    fn clone(&self) -> Self {
        Batcher {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Stops the flusher when dropped, after it has flushed what is left.
pub struct FlushGuard {
    stop: Box<dyn Fn() + Send + Sync>,
    thread: Option<JoinHandle<()>>,
}

impl<P: Default + Send + 'static> Batcher<P> {
    /// Starts a flusher thread named `name` that calls `flush(batch, dropped)` with what
    /// has gathered, at most once every `interval`; `dropped` is the number of items
    /// refused so far. `flush` must leave the batch empty (it is reused).
    pub fn start(
        name: &str,
        interval: Duration,
        max_weight: usize,
        flush: impl FnMut(&mut P, u64) + Send + 'static,
    ) -> std::io::Result<(Batcher<P>, FlushGuard)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                items: P::default(),
                weight: 0,
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            max_weight,
        });
        let flusher = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || flush_loop(&flusher, interval, flush))?;
        let stopper = Arc::clone(&shared);
        Ok((
            Batcher { shared },
            FlushGuard {
                stop: Box::new(move || {
                    stopper.stop.store(true, Ordering::Release);
                    stopper.wake.notify_all();
                }),
                thread: Some(thread),
            },
        ))
    }
}

impl<P> Batcher<P> {
    /// Adds to the batch with `add`, unless `weight` more would pass the limit: then the
    /// item is dropped, counted, and `false` returned. Never blocks on the flusher's I/O.
    pub fn push(&self, weight: usize, add: impl FnOnce(&mut P)) -> bool {
        let mut pending = self.shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.weight + weight > self.shared.max_weight {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        pending.weight += weight;
        add(&mut pending.items);
        true
    }

    /// Items dropped so far because the batch was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

fn flush_loop<P: Default>(shared: &Shared<P>, interval: Duration, mut flush: impl FnMut(&mut P, u64)) {
    let mut out = P::default();
    loop {
        let stopping = {
            let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.weight == 0 && !shared.stop.load(Ordering::Acquire) {
                pending = shared
                    .wake
                    .wait_timeout(pending, interval)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut pending.items, &mut out);
            pending.weight = 0;
            shared.stop.load(Ordering::Acquire)
        };
        flush(&mut out, shared.dropped.load(Ordering::Relaxed));
        if stopping {
            return;
        }
        // Let items gather: one write per interval, not one per item.
        std::thread::sleep(interval);
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        (self.stop)();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_reach_the_flusher_and_the_guard_flushes_the_rest() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let (batcher, guard) = Batcher::<Vec<u32>>::start("test-batch", Duration::from_secs(60), 100, move |b, _| {
            sink.lock().unwrap().append(b)
        })
        .unwrap();
        for i in 0..10 {
            assert!(batcher.push(1, |b| b.push(i)));
        }
        drop(guard);
        assert_eq!(*seen.lock().unwrap(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_batch_drops_and_counts() {
        let (batcher, guard) =
            Batcher::<Vec<u32>>::start("test-batch", Duration::from_secs(60), 10, |b, _| b.clear()).unwrap();
        // The flusher is waiting for the first item or the interval; it may take a batch
        // early, so only check that the limit is enforced within one batch.
        let accepted = (0..100).filter(|&i| batcher.push(4, |b| b.push(i))).count();
        assert!(accepted < 100);
        assert_eq!(batcher.dropped(), (100 - accepted) as u64);
        drop(guard);
    }
}
