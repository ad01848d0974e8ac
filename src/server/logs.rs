//! Where the service's log lines go: stderr, in batches.
//!
//! Every turn logs a line, tens of thousands a second under load. Writing each line with
//! its own system call cost about as much CPU as the turn itself, and a background writer
//! fed by a channel (tracing-appender) spent its time waking up and spinning for each
//! line. Here a line is appended to a shared buffer (a copy of ~200 bytes) and a flusher
//! thread writes whatever has gathered every `interval` with one call: a
//! [`Batcher`](crate::batch::Batcher) of bytes. A slow stderr never holds up a turn: past
//! `MAX_PENDING` bytes waiting, lines are dropped and counted, and the count is reported
//! in the log itself.

use std::io::Write;
use std::time::Duration;

use crate::batch::Batcher;
pub use crate::batch::FlushGuard;

/// The most bytes that may wait for the flusher; more lines are dropped.
const MAX_PENDING: usize = 8 * 1024 * 1024;

/// A `MakeWriter` for tracing-subscriber that batches lines to stderr.
#[derive(Clone)]
pub struct BatchedStderr {
    batch: Option<Batcher<Vec<u8>>>,
}

/// A batching stderr writer flushed every `interval`, and the guard that stops it.
pub fn batched_stderr(interval: Duration) -> (BatchedStderr, Option<FlushGuard>) {
    let mut reported = 0;
    let started = Batcher::start("kefu-logs", interval, MAX_PENDING, move |out: &mut Vec<u8>, dropped| {
        let mut stderr = std::io::stderr().lock();
        if dropped > reported {
            let _ = writeln!(
                stderr,
                "kefu: {} log lines dropped: stderr was not keeping up",
                dropped - reported
            );
            reported = dropped;
        }
        let _ = stderr.write_all(out);
        let _ = stderr.flush();
        out.clear();
    });
    match started {
        Ok((batch, guard)) => (BatchedStderr { batch: Some(batch) }, Some(guard)),
        // No thread for the flusher: write each line directly rather than lose them.
        Err(_) => (BatchedStderr { batch: None }, None),
    }
}

/// One log event's writer.
pub struct LineWriter<'a> {
    batch: Option<&'a Batcher<Vec<u8>>>,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.batch {
            Some(batch) => {
                batch.push(buf.len(), |pending| pending.extend_from_slice(buf));
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            batch: self.batch.as_ref(),
        }
    }
}
