//! The shared outbox: a Redis stream with one consumer group, so that every node of a fleet
//! delivers tickets and any node takes over what a dead one left.
//!
//! | key | what |
//! |---|---|
//! | `{prefix}tickets:seq` | `INCR`: ticket numbers, unique across the fleet and restarts |
//! | `{prefix}tickets:outbox` | the stream: one entry per ticket, field `ticket` (JSON) |
//!
//! A ticket is `XADD`ed before the customer is told it was submitted. Nodes read new
//! entries with `XREADGROUP` (group `delivery`, one consumer per process); a delivered entry
//! is `XACK`ed and `XDEL`eted, so the stream's length is the fleet's pending deliveries.
//! Entries read by a consumer and not acknowledged within the visibility timeout (the node
//! was killed, or its attempts ran out) are taken over with `XAUTOCLAIM` by whichever node
//! asks next. Connections are opened on demand and dropped after an error, so a Redis
//! restart costs one failed call, not a stuck connection.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Value;

use super::Ticket;
use super::outbox::{Outbox, OutboxError, Taken};
use crate::safety::logsafe::redacted_url;

/// The consumer group every node joins.
const GROUP: &str = "delivery";

/// Tickets in a Redis stream (see the module docs).
pub struct RedisOutbox {
    client: redis::Client,
    url: String,
    stream: String,
    seq: String,
    consumer: String,
    visibility: Duration,
    timeout: Duration,
    /// For numbers, pushes and acknowledgements.
    commands: Mutex<Option<redis::Connection>>,
    /// For the delivery pump's blocking reads.
    reads: Mutex<Option<redis::Connection>>,
    /// Where the next `XAUTOCLAIM` scan of the pending entries goes on.
    cursor: Mutex<String>,
    pending: AtomicU64,
}

impl std::fmt::Debug for RedisOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOutbox")
            .field("url", &self.url)
            .field("consumer", &self.consumer)
            .finish()
    }
}

impl RedisOutbox {
    /// Connects to `url`, creates the stream and group when missing. Keys start with
    /// `prefix` (`kefu:`); `consumer` names this process in the group; an entry read and not
    /// acknowledged within `visibility` is taken over; each command waits at most `timeout`.
    pub fn connect(
        url: &str,
        prefix: &str,
        consumer: String,
        visibility: Duration,
        timeout: Duration,
    ) -> Result<Self, OutboxError> {
        let redacted = redacted_url(url);
        let client = redis::Client::open(url).map_err(|source| OutboxError::Redis {
            url: redacted.clone(),
            source,
        })?;
        let outbox = RedisOutbox {
            client,
            url: redacted,
            stream: format!("{prefix}tickets:outbox"),
            seq: format!("{prefix}tickets:seq"),
            consumer,
            visibility,
            timeout,
            commands: Mutex::new(None),
            reads: Mutex::new(None),
            cursor: Mutex::new("0-0".into()),
            pending: AtomicU64::new(0),
        };
        let created = outbox.command(|conn| {
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&outbox.stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query::<()>(conn)
        });
        match created {
            Ok(()) => {}
            Err(OutboxError::Redis { source, .. }) if source.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        outbox.count()?;
        Ok(outbox)
    }

    fn error(&self, source: redis::RedisError) -> OutboxError {
        OutboxError::Redis {
            url: self.url.clone(),
            source,
        }
    }

    /// Runs `f` on the connection in `slot` (opened when there is none, with `read_timeout`);
    /// a failed call drops the connection so the next one reconnects.
    fn with<R>(
        &self,
        slot: &Mutex<Option<redis::Connection>>,
        read_timeout: Duration,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R, OutboxError> {
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(self.timeout)
                .and_then(|c| {
                    c.set_read_timeout(Some(read_timeout))?;
                    c.set_write_timeout(Some(self.timeout))?;
                    Ok(c)
                })
                .map_err(|e| self.error(e))?;
            *guard = Some(conn);
        }
        let conn = guard.as_mut().expect("connected above");
        f(conn).map_err(|e| {
            *guard = None;
            self.error(e)
        })
    }

    fn command<R>(&self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<R>) -> Result<R, OutboxError> {
        self.with(&self.commands, self.timeout, f)
    }

    /// Reads the stream's length into the pending count.
    fn count(&self) -> Result<u64, OutboxError> {
        let n: u64 = self.command(|c| redis::cmd("XLEN").arg(&self.stream).query(c))?;
        self.pending.store(n, Ordering::Relaxed);
        Ok(n)
    }

    /// Entries left pending by any consumer longer than the visibility timeout.
    fn claim(&self, max: usize) -> Result<Vec<(String, Option<Ticket>)>, OutboxError> {
        let mut cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let reply: Value = self.command(|c| {
            redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(self.visibility.as_millis() as u64)
                .arg(cursor.as_str())
                .arg("COUNT")
                .arg(max)
                .query(c)
        })?;
        let Value::Array(parts) = reply else {
            return Err(OutboxError::Reply("XAUTOCLAIM"));
        };
        let mut parts = parts.into_iter();
        *cursor = parts
            .next()
            .and_then(|v| text(&v))
            .ok_or(OutboxError::Reply("XAUTOCLAIM"))?;
        entries(parts.next().unwrap_or(Value::Nil)).ok_or(OutboxError::Reply("XAUTOCLAIM"))
    }

    /// New entries, waiting up to `wait` for one.
    fn read_new(&self, max: usize, wait: Duration) -> Result<Vec<(String, Option<Ticket>)>, OutboxError> {
        let reply: Value = self.with(&self.reads, wait + self.timeout, |c| {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(max)
                .arg("BLOCK")
                .arg(wait.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(">")
                .query(c)
        })?;
        match reply {
            Value::Nil => Ok(Vec::new()),
            // [[stream, entries]]
            Value::Array(streams) => {
                let mut out = Vec::new();
                for stream in streams {
                    let Value::Array(pair) = stream else {
                        return Err(OutboxError::Reply("XREADGROUP"));
                    };
                    let got = pair
                        .into_iter()
                        .nth(1)
                        .and_then(entries)
                        .ok_or(OutboxError::Reply("XREADGROUP"))?;
                    out.extend(got);
                }
                Ok(out)
            }
            Value::Map(streams) => {
                let mut out = Vec::new();
                for (_, got) in streams {
                    out.extend(entries(got).ok_or(OutboxError::Reply("XREADGROUP"))?);
                }
                Ok(out)
            }
            _ => Err(OutboxError::Reply("XREADGROUP")),
        }
    }

    /// Acknowledges and deletes entry `id`.
    fn remove(&self, id: &str) -> Result<(), OutboxError> {
        self.command(|c| {
            redis::pipe()
                .cmd("XACK")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(id)
                .ignore()
                .cmd("XDEL")
                .arg(&self.stream)
                .arg(id)
                .ignore()
                .query::<()>(c)
        })?;
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
        Ok(())
    }

    /// Turns stream entries into tickets; an entry that does not hold one is dropped from
    /// the stream (it would be claimed for ever) and logged.
    fn tickets(&self, got: Vec<(String, Option<Ticket>)>, redelivery: bool) -> Vec<Taken> {
        let mut out = Vec::with_capacity(got.len());
        for (key, ticket) in got {
            match ticket {
                Some(ticket) => out.push(Taken {
                    ticket,
                    key,
                    redelivery,
                }),
                None => {
                    tracing::error!(entry = %key, stream = %self.stream, "outbox entry without a readable ticket dropped");
                    let _ = self.remove(&key);
                }
            }
        }
        out
    }
}

/// A bulk or simple string as text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `[[id, [field, value, ...]], ...]` → (id, the `ticket` field parsed). `None` when the
/// shape is wrong.
fn entries(value: Value) -> Option<Vec<(String, Option<Ticket>)>> {
    let Value::Array(items) = value else {
        return matches!(value, Value::Nil).then(Vec::new);
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else { return None };
        let mut pair = pair.into_iter();
        let id = text(&pair.next()?)?;
        let ticket = match pair.next() {
            Some(Value::Array(fields)) => fields
                .chunks(2)
                .find(|kv| kv.first().and_then(text).as_deref() == Some("ticket"))
                .and_then(|kv| kv.get(1))
                .and_then(text)
                .and_then(|json| serde_json::from_str(&json).ok()),
            _ => None,
        };
        out.push((id, ticket));
    }
    Some(out)
}

impl Outbox for RedisOutbox {
    fn next_number(&self) -> Result<u64, OutboxError> {
        self.command(|c| redis::cmd("INCR").arg(&self.seq).query(c))
    }

    fn push(&self, ticket: &Ticket) -> Result<(), OutboxError> {
        let json = serde_json::to_string(ticket).expect("a ticket always serializes");
        self.command(|c| {
            redis::cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg("ticket")
                .arg(json)
                .query::<String>(c)
        })?;
        self.pending.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn take(&self, max: usize, wait: Duration) -> Result<Vec<Taken>, OutboxError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut out = self.tickets(self.claim(max)?, true);
        if out.len() < max {
            let wait = if out.is_empty() { wait } else { Duration::ZERO };
            let new = self.read_new(max - out.len(), wait)?;
            out.extend(self.tickets(new, false));
        }
        self.count()?;
        Ok(out)
    }

    fn done(&self, taken: &Taken) -> Result<(), OutboxError> {
        self.remove(&taken.key)
    }

    fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// `XLEN`; the last count when Redis does not answer.
    fn refresh_pending(&self) -> u64 {
        self.count().unwrap_or_else(|_| self.pending.load(Ordering::Relaxed))
    }
}
