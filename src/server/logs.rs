//! Where the service's log lines go: stderr, in batches.
//!
//! Every turn logs a line, tens of thousands a second under load. Writing each line with
//! its own system call cost about as much CPU as the turn itself, and a background writer
//! fed by a channel (tracing-appender) spent its time waking up and spinning for each
//! line. Here a line is appended to a shared buffer under a mutex (a copy of ~200 bytes),
//! and a flusher thread writes whatever has gathered every `interval` with one call. A
//! slow stderr never holds up a turn: past `MAX_PENDING` bytes waiting, lines are
//! dropped and counted, and the count is reported in the log itself.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The most bytes that may wait for the flusher; more lines are dropped.
const MAX_PENDING: usize = 8 * 1024 * 1024;

struct Shared {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    stop: AtomicBool,
    dropped: AtomicU64,
}

/// A `MakeWriter` for tracing-subscriber that batches lines to stderr.
#[derive(Clone)]
pub struct BatchedStderr {
    shared: Arc<Shared>,
}

/// Flushes what is left and stops the flusher when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A batching stderr writer flushed every `interval`, and the guard that stops it.
pub fn batched_stderr(interval: Duration) -> (BatchedStderr, FlushGuard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Vec::with_capacity(64 * 1024)),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
    });
    let flusher = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("kefu-logs".into())
        .spawn(move || flush_loop(&flusher, interval))
        .ok();
    (
        BatchedStderr {
            shared: Arc::clone(&shared),
        },
        FlushGuard { shared, thread },
    )
}

fn flush_loop(shared: &Shared, interval: Duration) {
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let stopping = {
            let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.is_empty() && !shared.stop.load(Ordering::Acquire) {
                pending = shared
                    .wake
                    .wait_timeout(pending, interval)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut *pending, &mut out);
            shared.stop.load(Ordering::Acquire)
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        let mut stderr = std::io::stderr().lock();
        if dropped > 0 {
            let _ = writeln!(stderr, "kefu: {dropped} log lines dropped: stderr was not keeping up");
        }
        let _ = stderr.write_all(&out);
        let _ = stderr.flush();
        drop(stderr);
        out.clear();
        if stopping {
            return;
        }
        // Let lines gather: one write per interval, not one per line.
        std::thread::sleep(interval);
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One log event's writer.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() + buf.len() > MAX_PENDING {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { shared: &self.shared }
    }
}
