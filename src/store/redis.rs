//! Sessions in Redis, so that several kefu nodes behind a load balancer serve the same
//! conversations: a flow started on one node goes on on the next.
//!
//! Each session is one JSON string under `kefu:session:{id}` with a time to live that
//! every write renews, so abandoned conversations expire on their own, as they do in the
//! in-memory store. Every write is one script ([`COMPARE_AND_SET`]) that stores the
//! session only if the stored one is still at the `rev` the writer read: a turn's save
//! (`store_if_unchanged`) is that one round trip; an update reads, changes and writes,
//! and starts over from the new value when another writer came in between, up to
//! [`UPDATE_ATTEMPTS`] times. Nodes never overwrite each other's changes to a conversation.
//!
//! **When Redis fails.** A read or write that fails is an error, never a fresh session:
//! each network step is tried [`RedisConfig::attempts`] times, each try bounded by
//! [`RedisConfig::timeout`] (connect, read, write and the wait for a pooled connection),
//! with short pauses between; then the error goes to the engine, which fails the turn
//! without touching the session. Three things make a retry safe and quick:
//! - a connection that saw any I/O error or timeout is discarded, never reused (a late
//!   reply on it would be read as the answer to the next command);
//! - a connection the server dropped (a Redis restart) marks every connection made before
//!   it as stale: the retry gets a fresh one instead of the next dead one in the pool, so
//!   the first turn after a restart succeeds;
//! - a write carries a deadline (the moment its try gives up, on this node's clock): a
//!   write that reaches Redis later (it sat in the socket of a stopped Redis) is refused
//!   there, so a write the engine reported as failed never lands behind its back; and a
//!   retried write that had in fact landed (its reply was lost) is recognized, being the
//!   stored text itself. The deadline is given in Redis's clock: the store measures how
//!   far Redis's clock is from this node's (`TIME`) when it connects and again whenever
//!   Redis refuses a write as late. Redis must be 5 or newer (`TIME` before a write in a
//!   script).
//!
//! Each try is reported to an optional observer (the metrics: errors and latency by
//! operation); failures are logged with the Redis address, its password masked.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::ConnectionLike as _;

use super::{SessionStore, StoreError, Unchanged, Write};
use crate::dialogue::Session;

/// Why the Redis store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// The URL is not a Redis URL.
    #[error("invalid redis url `{url}`")]
    Url {
        /// The URL given, its password masked.
        url: String,
        /// What is wrong with it.
        #[source]
        source: redis::RedisError,
    },
    /// No pooled connection could be had within the timeout.
    #[error("cannot connect to redis at {url}")]
    Connect {
        /// The address, its password masked.
        url: String,
        /// Why.
        #[source]
        source: r2d2::Error,
    },
    /// A command failed.
    #[error("redis command failed: {0}")]
    Command(#[from] redis::RedisError),
    /// Other clients kept writing the session while an update tried to change it.
    #[error("the session changed under {0} attempts to update it")]
    Contended(u32),
    /// Redis refused a write as reaching it after its deadline although its reply came in
    /// time: the clocks drifted apart since they were measured (they are measured again).
    #[error("redis refused a write as arriving after its deadline (clock drift; measured again)")]
    Late,
}

impl RedisStoreError {
    /// Whether another try may succeed: the network or Redis itself failed, not the
    /// request.
    fn transient(&self) -> bool {
        match self {
            RedisStoreError::Connect { .. } | RedisStoreError::Late => true,
            RedisStoreError::Command(e) => {
                e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
            }
            RedisStoreError::Url { .. } | RedisStoreError::Contended(_) => false,
        }
    }

    /// Whether the connection must not be used again: after an I/O error or a timeout a
    /// reply may still be on its way, and would be read as the next command's.
    fn breaks_connection(&self) -> bool {
        matches!(self, RedisStoreError::Command(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped())
    }

    /// Whether the server closed the connection (a restart): the other pooled
    /// connections made before it are dead too.
    fn server_went_away(&self) -> bool {
        matches!(self, RedisStoreError::Command(e) if e.is_connection_dropped())
    }
}

/// How many times an update starts over when other clients keep writing its session.
/// Writers of one conversation are few (its turns, an agent, a job), so running out
/// means something is wrong; the update then fails instead of spinning.
pub const UPDATE_ATTEMPTS: u32 = 16;

/// Waits before the next attempt of an update another client's write refused: a random
/// time below a bound that doubles with each attempt (0.1 ms, 0.2 ms, … at most 5 ms).
/// Without it two nodes answering one conversation collide in lockstep: the other node's
/// one-round-trip turn saves land inside every read-write window, and an update ran
/// out of its attempts (1-2 turns of 120 uncounted in the two-node test).
fn back_off(attempt: u32) {
    let bound = (100u64 << attempt.min(6)).min(5_000);
    let wait = u64::from(getrandom::u32().unwrap_or(0)) % bound;
    std::thread::sleep(Duration::from_micros(wait));
}

/// Told of every try of a Redis operation: the operation (`get`, `update`, `store`,
/// `remove`), how long the try took, and whether it failed. The service counts them in
/// `/metrics`; the store knows nothing of the service.
pub type RedisObserver = Arc<dyn Fn(&'static str, Duration, bool) + Send + Sync>;

/// The most session keys [`SessionStore::recent`] looks at (SCAN), so that a start with
/// millions of stored conversations stays quick.
pub const RECENT_SCAN_KEYS: usize = 200_000;

/// The operations a [`RedisObserver`] is told of, for series made before the first one.
pub const REDIS_OPS: [&str; 4] = ["get", "update", "store", "remove"];

/// Settings of a [`RedisStore`].
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// How long a session is kept after its last write.
    pub ttl: Duration,
    /// Prefix of every key, so that several shops can share one Redis.
    pub prefix: String,
    /// Connections kept open.
    pub pool_size: u32,
    /// How long one try may wait: to connect, for a reply, to write, for a pooled
    /// connection.
    pub timeout: Duration,
    /// Tries of each network step before the operation fails (at least 1).
    pub attempts: u32,
}

impl Default for RedisConfig {
    /// 24 hours, `kefu:session:`, 16 connections, 100 ms, 3 tries.
    ///
    /// Redis answers a session's `GET` in well under a millisecond on a LAN; 100 ms is
    /// hundreds of times that, so a healthy Redis is not cut off (a fork for a snapshot of
    /// a large data set stalls it for tens of milliseconds), while a Redis that stopped
    /// answering costs a turn about 3 × 100 ms (plus 30 ms of pauses) per store step
    /// instead of seconds. Two seconds (the earlier default) blocked turns for up to 4 s.
    fn default() -> Self {
        RedisConfig {
            ttl: Duration::from_secs(24 * 3600),
            prefix: "kefu:session:".into(),
            pool_size: 16,
            timeout: Duration::from_millis(100),
            attempts: 3,
        }
    }
}

/// A pooled connection: when it was made, and whether it must not be used again.
pub struct Conn {
    inner: redis::Connection,
    born: Instant,
    broken: bool,
}

/// Makes the pool's connections: each connect, read and write bounded by the timeout.
#[derive(Debug)]
struct Connector {
    client: redis::Client,
    timeout: Duration,
}

impl r2d2::ManageConnection for Connector {
    type Connection = Conn;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<Conn, redis::RedisError> {
        let inner = self.client.get_connection_with_timeout(self.timeout)?;
        inner.set_read_timeout(Some(self.timeout))?;
        inner.set_write_timeout(Some(self.timeout))?;
        Ok(Conn {
            inner,
            born: Instant::now(),
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), redis::RedisError> {
        redis::cmd("PING").query::<String>(&mut conn.inner).map(drop)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || !conn.inner.is_open()
    }
}

/// Logs the pool's own connection failures (made in its background threads) with the
/// address, at debug level: the try that waited for the connection logs the failure that
/// matters, with its session. (r2d2 alone logs them as errors without an address.)
#[derive(Debug)]
struct PoolErrors(String);

impl r2d2::HandleError<redis::RedisError> for PoolErrors {
    fn handle_error(&self, error: redis::RedisError) {
        tracing::debug!(redis = %self.0, %error, "redis connection failed");
    }
}

/// Writes a session (`ARGV[2]`, with its TTL `ARGV[3]` in seconds) only if the stored one
/// is still at rev `ARGV[1]` (0: none was stored), or none (or an unreadable one) is
/// stored; and only before the deadline `ARGV[4]` (Unix milliseconds). Answers 1 when the
/// session is stored (also when the stored text is this very write, landed by an earlier
/// try whose reply was lost: every write's text is unique), 0 when another writer came in between, -1 past the deadline.
const COMPARE_AND_SET: &str = r"
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[4]) then
  return -1
end
local stored = redis.call('GET', KEYS[1])
if stored then
  if stored == ARGV[2] then
    return 1
  end
  local ok, session = pcall(cjson.decode, stored)
  if ok and type(session) == 'table' and (tonumber(session['rev']) or 0) ~= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

/// Sessions as JSON strings in Redis.
pub struct RedisStore {
    pool: r2d2::Pool<Connector>,
    config: RedisConfig,
    /// The address for logs, its password masked.
    address: String,
    /// When, in microseconds after `epoch`, the server last dropped a connection: pooled
    /// connections made before it are not used.
    dropped_at: AtomicU64,
    epoch: Instant,
    compare_and_set: redis::Script,
    observer: Option<RedisObserver>,
    /// Redis's clock minus this node's, in milliseconds, as last measured.
    clock_offset_ms: AtomicI64,
}

/// This node's clock, in Unix milliseconds.
fn unix_ms() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

impl RedisStore {
    /// Connects to `url` (`redis://127.0.0.1:6379/0`) and checks that Redis answers.
    pub fn connect(url: &str, config: RedisConfig) -> Result<Self, RedisStoreError> {
        let address = crate::safety::logsafe::redacted_url(url);
        let client = redis::Client::open(url).map_err(|source| RedisStoreError::Url {
            url: address.clone(),
            source,
        })?;
        let pool = r2d2::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(1))
            .connection_timeout(config.timeout)
            // A ping before every use would double the round trips; a connection that
            // failed is discarded, and one the server dropped marks the older ones stale.
            .test_on_check_out(false)
            .error_handler(Box::new(PoolErrors(address.clone())))
            .build(Connector {
                client,
                timeout: config.timeout,
            })
            .map_err(|source| RedisStoreError::Connect {
                url: address.clone(),
                source,
            })?;
        let store = RedisStore {
            pool,
            config,
            address,
            dropped_at: AtomicU64::new(0),
            epoch: Instant::now(),
            compare_and_set: redis::Script::new(COMPARE_AND_SET),
            observer: None,
            clock_offset_ms: AtomicI64::new(0),
        };
        store.ping()?;
        let mut conn = store.conn()?;
        store
            .measure_clock(&mut conn.inner)
            .inspect_err(|_| conn.broken = true)?;
        drop(conn);
        Ok(store)
    }

    /// Reports every try of an operation to `observer` (the metrics).
    pub fn with_observer(mut self, observer: RedisObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The Redis address, its password masked.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Checks that Redis answers.
    pub fn ping(&self) -> Result<(), RedisStoreError> {
        let mut conn = self.conn()?;
        redis::cmd("PING")
            .query::<String>(&mut conn.inner)
            .inspect_err(|_| conn.broken = true)?;
        Ok(())
    }

    /// Measures Redis's clock against this node's (`TIME`, taken as read halfway through
    /// the round trip), for the deadlines of writes.
    fn measure_clock(&self, conn: &mut redis::Connection) -> Result<(), RedisStoreError> {
        let before = unix_ms();
        let (seconds, micros): (i64, i64) = redis::cmd("TIME").query(conn)?;
        let after = unix_ms();
        let offset = seconds * 1000 + micros / 1000 - (before + after) / 2;
        if self.clock_offset_ms.swap(offset, Ordering::Relaxed).abs_diff(offset) > 50 {
            tracing::info!(redis = %self.address, offset_ms = offset, "redis clock measured against this node's");
        }
        Ok(())
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.config.prefix)
    }

    /// A pooled connection made after the server last dropped one.
    fn conn(&self) -> Result<r2d2::PooledConnection<Connector>, RedisStoreError> {
        loop {
            let mut conn = self.pool.get().map_err(|source| RedisStoreError::Connect {
                url: self.address.clone(),
                source,
            })?;
            let dropped_at = self.dropped_at.load(Ordering::Relaxed);
            if dropped_at == 0 || self.micros(conn.born) > dropped_at {
                return Ok(conn);
            }
            // Made before the server went away: dead, most likely. Discarding costs no
            // round trip; the pool makes a new one.
            conn.broken = true;
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// Runs `step` on a pooled connection up to `attempts` times while it fails in a way
    /// another try may mend, pausing 10 ms, 20 ms, … between tries. Every try is reported
    /// to the observer; a failed one is logged.
    fn tried<R>(
        &self,
        op: &'static str,
        id: &str,
        mut step: impl FnMut(&mut redis::Connection) -> Result<R, RedisStoreError>,
    ) -> Result<R, RedisStoreError> {
        let attempts = self.config.attempts.max(1);
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let result = self.conn().and_then(|mut conn| {
                step(&mut conn.inner).inspect_err(|e| {
                    if e.breaks_connection() {
                        conn.broken = true;
                    }
                    if e.server_went_away() {
                        self.dropped_at
                            .fetch_max(self.micros(Instant::now()), Ordering::Relaxed);
                    }
                })
            });
            if let Some(observer) = &self.observer {
                observer(op, started.elapsed(), result.is_err());
            }
            match result {
                Ok(r) => return Ok(r),
                Err(e) if e.transient() && attempt < attempts => {
                    tracing::warn!(op, redis = %self.address, session = %crate::safety::logsafe::LogSafe(id), attempt, error = %e, "redis session store; trying again");
                    std::thread::sleep(Duration::from_millis(10 * u64::from(attempt)));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn read(&self, op: &'static str, id: &str) -> Result<Option<Session>, RedisStoreError> {
        let key = self.key(id);
        let text: Option<String> = self.tried(op, id, |conn| {
            redis::cmd("GET").arg(&key).query(conn).map_err(RedisStoreError::from)
        })?;
        Ok(Self::parse(id, text))
    }

    /// [`SessionStore::recent`]: SCAN over the session keys (at most
    /// [`RECENT_SCAN_KEYS`]), the sessions read 200 at a time (MGET), those with the bot
    /// left out.
    fn try_recent(&self, limit: usize) -> Result<Vec<Session>, RedisStoreError> {
        let pattern = format!("{}*", self.config.prefix);
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = self.tried("get", "*", |conn| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(conn)
                    .map_err(RedisStoreError::from)
            })?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() >= RECENT_SCAN_KEYS {
                break;
            }
        }
        keys.truncate(RECENT_SCAN_KEYS);
        let mut found = Vec::new();
        for chunk in keys.chunks(200) {
            let texts: Vec<Option<String>> = self.tried("get", "*", |conn| {
                redis::cmd("MGET").arg(chunk).query(conn).map_err(RedisStoreError::from)
            })?;
            for (key, text) in chunk.iter().zip(texts) {
                let id = key.strip_prefix(&self.config.prefix).unwrap_or(key);
                if let Some(session) = Self::parse(id, text)
                    && session.state() != crate::dialogue::ConvState::Bot
                {
                    found.push(session);
                }
            }
        }
        found.sort_unstable_by_key(|s| std::cmp::Reverse(s.updated_at));
        found.truncate(limit);
        Ok(found)
    }

    fn parse(id: &str, text: Option<String>) -> Option<Session> {
        text.and_then(|t| match serde_json::from_str(&t) {
            Ok(session) => Some(session),
            Err(error) => {
                // A session written by an incompatible version: start over rather than fail
                // every turn of this conversation. (Redis answered; this is not an outage.)
                tracing::warn!(session = %crate::safety::logsafe::LogSafe(id), %error, "stored session unreadable; starting a new one");
                None
            }
        })
    }

    /// Writes `session` (already at its new rev) if the stored one is still at `read`
    /// (0: none); `true` when it is stored. Each try has its own deadline: the moment it
    /// gives up waiting for the reply.
    fn compare_and_set(&self, op: &'static str, session: &Session, read: u64) -> Result<bool, RedisStoreError> {
        let key = self.key(&session.id);
        let ttl = self.config.ttl.as_secs().max(1);
        // Each write is told apart by a random `write` field (sessions ignore it when read):
        // two nodes' turns can make byte-identical sessions in the same millisecond, and
        // only a write's own text may count as "landed already".
        let json = serde_json::to_string(session).expect("a session always serializes");
        let text = format!(
            "{{\"write\":{},{}",
            getrandom::u64().unwrap_or_else(|_| self.micros(Instant::now())),
            json.strip_prefix('{').expect("a session serializes as an object")
        );
        let timeout = i64::try_from(self.config.timeout.as_millis()).unwrap_or(i64::MAX);
        self.tried(op, &session.id, |conn| {
            // When this try gives up waiting, in Redis's clock.
            let deadline = unix_ms()
                .saturating_add(self.clock_offset_ms.load(Ordering::Relaxed))
                .saturating_add(timeout);
            let stored: i32 = self
                .compare_and_set
                .key(&key)
                .arg(read)
                .arg(&text)
                .arg(ttl)
                .arg(deadline)
                .invoke(conn)?;
            match stored {
                -1 => {
                    // The clocks drifted apart (the write took less than its timeout).
                    self.measure_clock(conn)?;
                    Err(RedisStoreError::Late)
                }
                n => Ok(n == 1),
            }
        })
    }

    fn try_update(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Option<Session>) -> Write,
    ) -> Result<Option<Session>, RedisStoreError> {
        for attempt in 0..UPDATE_ATTEMPTS {
            let mut session = self.read("update", id)?;
            let read = session.as_ref().map_or(0, |s| s.rev);
            let stored = match (change(&mut session), &mut session) {
                (Write::Store, Some(s)) => {
                    s.rev = read.wrapping_add(1);
                    self.compare_and_set("update", s, read)?
                }
                _ => true,
            };
            if stored {
                return Ok(session);
            }
            back_off(attempt);
        }
        Err(RedisStoreError::Contended(UPDATE_ATTEMPTS))
    }

    fn try_store_if_unchanged(&self, mut session: Session) -> Result<Unchanged, RedisStoreError> {
        let read = session.rev;
        session.rev = read.wrapping_add(1);
        // One round trip, as a plain write would be: the script compares and writes
        // inside Redis, where nothing else runs in between.
        if self.compare_and_set("store", &session, read)? {
            Ok(Unchanged::Stored)
        } else {
            session.rev = read;
            Ok(Unchanged::Changed(session))
        }
    }

    fn failed(&self, op: &str, id: &str, error: &RedisStoreError) -> StoreError {
        tracing::error!(op, redis = %self.address, session = %crate::safety::logsafe::LogSafe(id), error = %error, "redis session store failed");
        StoreError(format!("redis at {}: {error}", self.address))
    }
}

impl SessionStore for RedisStore {
    fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.read("get", id).map_err(|e| self.failed("get", id, &e))
    }

    fn update(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Option<Session>) -> Write,
    ) -> Result<Option<Session>, StoreError> {
        self.try_update(id, change).map_err(|e| self.failed("update", id, &e))
    }

    fn store_if_unchanged(&self, session: Session) -> Result<Unchanged, StoreError> {
        let id = session.id.clone();
        self.try_store_if_unchanged(session)
            .map_err(|e| self.failed("store", &id, &e))
    }

    fn recent(&self, limit: usize) -> Result<Vec<Session>, StoreError> {
        self.try_recent(limit).map_err(|e| self.failed("get", "*", &e))
    }

    fn remove(&self, id: &str) {
        let key = self.key(id);
        let result = self.tried("remove", id, |conn| {
            redis::cmd("DEL")
                .arg(&key)
                .query::<()>(conn)
                .map_err(RedisStoreError::from)
        });
        if let Err(e) = result {
            self.failed("remove", id, &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_error_does_not_show_the_password() {
        let error = RedisStore::connect("redis://:hunter2@", RedisConfig::default())
            .err()
            .expect("no host");
        assert!(!format!("{error} {error:?}").contains("hunter2"), "{error:?}");
    }
}
