//! Where the service's log lines go: stderr, in batches.
//!
//! Every turn logs a line, tens of thousands a second under load. Writing each line with
//! its own system call cost about as much CPU as the turn itself, and a background writer
//! fed by a channel (tracing-appender) spent its time waking up and spinning for each
//! line. Here a line is appended to a shared buffer (a copy of ~200 bytes) and a flusher
//! thread writes whatever has gathered every `interval` with one call: a
//! [`Batcher`] of bytes. A slow stderr never holds up a turn: past
//! `MAX_PENDING` bytes waiting, lines are dropped and counted, and the count is reported
//! in the log itself and in `/metrics` (`kefu_log_lines_dropped_total`, [`dropped_lines`]).

use std::io::Write;
use std::time::Duration;

use crate::batch::Batcher;
pub use crate::batch::FlushGuard;

/// The most bytes that may wait for the flusher; more lines are dropped.
const MAX_PENDING: usize = 8 * 1024 * 1024;

/// The process's stderr batch, for its count of dropped lines: the log is set up (in the
/// CLI) before the service and its metrics exist, and there is one stderr per process.
static STDERR_BATCH: std::sync::OnceLock<Batcher<Vec<u8>>> = std::sync::OnceLock::new();

/// Log lines dropped so far because stderr was not keeping up (0 before
/// [`batched_stderr`] is called, and in embeddings that log elsewhere).
pub fn dropped_lines() -> u64 {
    STDERR_BATCH.get().map_or(0, Batcher::dropped)
}

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
        Ok((batch, guard)) => {
            let _ = STDERR_BATCH.set(batch.clone());
            (BatchedStderr { batch: Some(batch) }, Some(guard))
        }
        // No thread for the flusher: write each line directly rather than lose them.
        Err(_) => (BatchedStderr { batch: None }, None),
    }
}

/// Replaces the standard panic message on stderr with one log event: the thread, the
/// place in the code and the panic's message cut short. The standard message is printed
/// whole, and the message of a bad slice quotes the text being sliced: a customer's
/// message or a whole rule file would land in the log.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = crate::reload::panic_message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location = %location,
            panic = %message,
            "panic"
        );
    }));
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

/// Log timestamps as tracing-subscriber's default writes them (RFC 3339, UTC,
/// microseconds: `2026-11-22T09:28:47.588995Z`), with the date and time up to the second
/// formatted once a second per thread rather than for every line: working out the
/// calendar date from the epoch was a fifth of a turn's log line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timestamps;

impl tracing_subscriber::fmt::time::FormatTime for Timestamps {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        write_timestamp(w, now.as_secs(), now.subsec_micros())
    }
}

fn write_timestamp(w: &mut impl std::fmt::Write, secs: u64, micros: u32) -> std::fmt::Result {
    use std::fmt::Write as _;
    thread_local! {
        /// The second last formatted on this thread, and its text up to the second.
        static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    SECOND.with(|cell| {
        let mut second = cell.borrow_mut();
        if second.0 != secs {
            let at = i64::try_from(secs)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            second.1.clear();
            let _ = write!(second.1, "{}", at.format("%Y-%m-%dT%H:%M:%S"));
            second.0 = secs;
        }
        write!(w, "{}.{micros:06}Z", second.1)
    })
}

/// The fields of a text log line as `name=value`, for when colours are off (stderr is not
/// a terminal: a log file, journald, a container's log).
///
/// tracing-subscriber's default field formatter wraps every field name and `=` in a
/// style even with colours off, three formatting calls a field; with a line per turn that
/// was about a third of the line's cost. The text is the same: values as Debug (text
/// fields the server writes as Display), the message first without a name, and the
/// message's control characters escaped as the default does, so that text in a message
/// cannot drive a terminal that later shows the log.
pub fn plain_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        if field.name() == "message" {
            write!(w, "{:?}", Escaped(value))
        } else {
            write!(w, "{}={:?}", field.name(), value)
        }
    })
    .delimited(" ")
}

/// A message with the control characters a terminal acts on written as escapes.
struct Escaped<'a>(&'a dyn std::fmt::Debug);

impl std::fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        struct Escaping<'a, 'b>(&'a mut std::fmt::Formatter<'b>);
        impl std::fmt::Write for Escaping<'_, '_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                // Most messages have nothing to escape: one scan, then one write.
                if !s.chars().any(is_terminal_control) {
                    return self.0.write_str(s);
                }
                for c in s.chars() {
                    match c {
                        c if !is_terminal_control(c) => self.0.write_char(c)?,
                        c if c.is_ascii() => write!(self.0, "\\x{:02x}", c as u32)?,
                        c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                    }
                }
                Ok(())
            }
        }
        write!(Escaping(f), "{:?}", self.0)
    }
}

/// ESC, BEL, BS, FF, DEL and the C1 controls (U+0080-U+009F).
fn is_terminal_control(c: char) -> bool {
    matches!(c, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_microseconds_across_seconds() {
        for (secs, micros) in [
            (1_795_339_727, 588_995),
            (1_795_339_727, 7),
            (1_795_339_728, 0),
            (0, 999_999),
        ] {
            let mut ours = String::new();
            write_timestamp(&mut ours, secs, micros).unwrap();
            let at = chrono::DateTime::from_timestamp(secs as i64, micros * 1_000).unwrap();
            assert_eq!(ours, at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        }
        let mut ours = String::new();
        write_timestamp(&mut ours, 1_795_339_727, 588_995).unwrap();
        assert_eq!(ours, "2026-11-22T09:28:47.588995Z");
    }

    #[test]
    fn plain_fields_write_name_value_and_escape_the_message() {
        use tracing_subscriber::fmt::MakeWriter;
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Buffer {
            type Writer = Buffer;
            fn make_writer(&'a self) -> Buffer {
                self.clone()
            }
        }
        let line = |plain: bool| {
            let buffer = Buffer::default();
            let builder = tracing_subscriber::fmt()
                .with_writer(buffer.clone())
                .with_ansi(false)
                .without_time();
            let log = || {
                tracing::info!(
                    session = %"客户-1",
                    rule = tracing::field::display("运费"),
                    quoted = "a\"b",
                    chars = 12,
                    latency_ms = 0.25,
                    "turn \x1b[31m{}",
                    "红\u{9b}"
                )
            };
            if plain {
                tracing::subscriber::with_default(builder.fmt_fields(plain_fields()).finish(), log);
            } else {
                tracing::subscriber::with_default(builder.finish(), log);
            }
            String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
        };
        let plain = line(true);
        assert_eq!(
            plain,
            " INFO kefu::server::logs::tests: turn \\x1b[31m红\\u{9b} session=客户-1 rule=运费 quoted=\"a\\\"b\" chars=12 latency_ms=0.25\n"
        );
        // The same text as tracing-subscriber's own formatter with colours off.
        assert_eq!(plain, line(false));
    }
}
