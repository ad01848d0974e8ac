//! Sessions in Redis, so that several kefu nodes behind a load balancer serve the same
//! conversations: a flow started on one node goes on on the next.
//!
//! Each session is one JSON string under `kefu:session:{id}` with a time to live that
//! every write renews, so abandoned conversations expire on their own, as they do in the
//! in-memory store. An update is optimistic: `WATCH` the key, read it, change it, and
//! write it in a `MULTI`/`EXEC` that Redis refuses if another client wrote the key in
//! between; then the update starts over from the new value, up to [`UPDATE_ATTEMPTS`]
//! times. A turn's save, the common case, is one script that writes only if the stored
//! session's `rev` is still the one the turn read: one round trip, as a plain `SET` was.
//! Nodes never overwrite each other's changes to a conversation. Connections come from an r2d2 pool with short timeouts: a turn that
//! cannot reach Redis treats the session as new (and the error is logged and counted)
//! rather than hanging, because [`SessionStore`] has no way to report a failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Commands as _;

use super::{SessionStore, StoreError, Unchanged, Write};
use crate::dialogue::Session;

/// Why the Redis store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// The URL is not a Redis URL.
    #[error("invalid redis url `{url}`")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        #[source]
        source: redis::RedisError,
    },
    /// No connection could be made.
    #[error("cannot connect to redis at `{url}`")]
    Connect {
        /// The URL given.
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
}

/// How many times an update starts over when other clients keep writing its session.
/// Writers of one conversation are few (its turns, an agent, a job), so running out
/// means something is wrong; the update then fails instead of spinning.
pub const UPDATE_ATTEMPTS: u32 = 16;

/// Waits before the next attempt of an update another client's write refused: a random
/// time below a bound that doubles with each attempt (0.1 ms, 0.2 ms, … at most 5 ms).
/// Without it two nodes answering one conversation collide in lockstep: the other node's
/// one-round-trip turn saves land inside every `WATCH`…`EXEC` window, and an update ran
/// out of its attempts (1-2 turns of 120 uncounted in the two-node test).
fn back_off(attempt: u32) {
    let bound = (100u64 << attempt.min(6)).min(5_000);
    let wait = u64::from(getrandom::u32().unwrap_or(0)) % bound;
    std::thread::sleep(Duration::from_micros(wait));
}

/// Settings of a [`RedisStore`].
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// How long a session is kept after its last write.
    pub ttl: Duration,
    /// Prefix of every key, so that several shops can share one Redis.
    pub prefix: String,
    /// Connections kept open.
    pub pool_size: u32,
    /// How long to wait for a connection or a reply.
    pub timeout: Duration,
}

impl Default for RedisConfig {
    /// 24 hours, `kefu:session:`, 16 connections, 2 seconds.
    fn default() -> Self {
        RedisConfig {
            ttl: Duration::from_secs(24 * 3600),
            prefix: "kefu:session:".into(),
            pool_size: 16,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Sets read and write timeouts on every new connection, so that a Redis that stops
/// answering costs a turn at most the timeout.
#[derive(Debug)]
struct Timeouts(Duration);

impl r2d2::CustomizeConnection<redis::Connection, redis::RedisError> for Timeouts {
    fn on_acquire(&self, conn: &mut redis::Connection) -> Result<(), redis::RedisError> {
        conn.set_read_timeout(Some(self.0))?;
        conn.set_write_timeout(Some(self.0))
    }
}

/// Writes a session (`ARGV[2]`, with its TTL `ARGV[3]`) only if the stored one is still
/// at rev `ARGV[1]`, or none (or an unreadable one) is stored; 1 when it wrote.
const STORE_IF_UNCHANGED: &str = r"
local stored = redis.call('GET', KEYS[1])
if stored then
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
    pool: r2d2::Pool<redis::Client>,
    config: RedisConfig,
    errors: AtomicU64,
    store_if_unchanged: redis::Script,
}

impl RedisStore {
    /// Connects to `url` (`redis://127.0.0.1:6379/0`) and checks that Redis answers.
    pub fn connect(url: &str, config: RedisConfig) -> Result<Self, RedisStoreError> {
        // The address is shown without its password (errors are printed and logged).
        let client = redis::Client::open(url).map_err(|source| RedisStoreError::Url {
            url: crate::tickets::outbox::redacted_url(url),
            source,
        })?;
        let pool = r2d2::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(1))
            .connection_timeout(config.timeout)
            // A ping before every use would double the round trips; broken connections
            // are noticed by `has_broken` and replaced.
            .test_on_check_out(false)
            .connection_customizer(Box::new(Timeouts(config.timeout)))
            .build(client)
            .map_err(|source| RedisStoreError::Connect {
                url: crate::tickets::outbox::redacted_url(url),
                source,
            })?;
        let store = RedisStore {
            pool,
            config,
            errors: AtomicU64::new(0),
            store_if_unchanged: redis::Script::new(STORE_IF_UNCHANGED),
        };
        store.ping()?;
        Ok(store)
    }

    /// Checks that Redis answers.
    pub fn ping(&self) -> Result<(), RedisStoreError> {
        let mut conn = self.conn()?;
        redis::cmd("PING").query::<String>(&mut *conn)?;
        Ok(())
    }

    /// How many reads and writes have failed since the store was opened.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.config.prefix)
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<redis::Client>, RedisStoreError> {
        self.pool.get().map_err(|source| RedisStoreError::Connect {
            url: "pool".into(),
            source,
        })
    }

    fn try_get(&self, id: &str) -> Result<Option<Session>, RedisStoreError> {
        let text: Option<String> = self.conn()?.get(self.key(id))?;
        Ok(Self::parse(id, text))
    }

    fn parse(id: &str, text: Option<String>) -> Option<Session> {
        text.and_then(|t| match serde_json::from_str(&t) {
            Ok(session) => Some(session),
            Err(error) => {
                // A session written by an incompatible version: start over rather than fail
                // every turn of this conversation.
                tracing::warn!(session = %crate::safety::logsafe::LogSafe(id), %error, "stored session unreadable; starting a new one");
                None
            }
        })
    }

    fn try_update(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Option<Session>) -> Write,
    ) -> Result<Option<Session>, RedisStoreError> {
        let key = self.key(id);
        let ttl = self.config.ttl.as_secs().max(1);
        let mut conn = self.conn()?;
        for attempt in 0..UPDATE_ATTEMPTS {
            redis::cmd("WATCH").arg(&key).query::<()>(&mut *conn)?;
            let text: Option<String> = conn.get(&key)?;
            let mut session = Self::parse(id, text);
            let stored = match (change(&mut session), &mut session) {
                (Write::Store, Some(s)) => {
                    s.rev = s.rev.wrapping_add(1);
                    let text = serde_json::to_string(s).expect("a session always serializes");
                    // EXEC answers nil when the watched key was written since WATCH.
                    let done: Option<()> = redis::pipe()
                        .atomic()
                        .set_ex(&key, text, ttl)
                        .ignore()
                        .query(&mut *conn)?;
                    done.is_some()
                }
                _ => {
                    redis::cmd("UNWATCH").query::<()>(&mut *conn)?;
                    true
                }
            };
            if stored {
                return Ok(session);
            }
            back_off(attempt);
        }
        Err(RedisStoreError::Contended(UPDATE_ATTEMPTS))
    }

    fn try_store_if_unchanged(&self, mut session: Session) -> Result<Unchanged, RedisStoreError> {
        let key = self.key(&session.id);
        let ttl = self.config.ttl.as_secs().max(1);
        let read = session.rev;
        session.rev = read.wrapping_add(1);
        let text = serde_json::to_string(&session).expect("a session always serializes");
        // One round trip, as the plain write it replaces was: the script compares and
        // writes inside Redis, where nothing else runs in between.
        let stored: i32 = self
            .store_if_unchanged
            .key(&key)
            .arg(read)
            .arg(text)
            .arg(ttl)
            .invoke(&mut *self.conn()?)?;
        if stored == 1 {
            Ok(Unchanged::Stored)
        } else {
            session.rev = read;
            Ok(Unchanged::Changed(session))
        }
    }

    fn failed(&self, op: &str, id: &str, error: &RedisStoreError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(op, session = %crate::safety::logsafe::LogSafe(id), error = %error, "redis session store");
    }
}

impl SessionStore for RedisStore {
    fn get(&self, id: &str) -> Option<Session> {
        self.try_get(id).unwrap_or_else(|e| {
            self.failed("get", id, &e);
            None
        })
    }

    fn update(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Option<Session>) -> Write,
    ) -> Result<Option<Session>, StoreError> {
        self.try_update(id, change).map_err(|e| {
            self.failed("update", id, &e);
            StoreError(e.to_string())
        })
    }

    fn store_if_unchanged(&self, session: Session) -> Result<Unchanged, StoreError> {
        let id = session.id.clone();
        self.try_store_if_unchanged(session).map_err(|e| {
            self.failed("store", &id, &e);
            StoreError(e.to_string())
        })
    }

    fn remove(&self, id: &str) {
        let result = self
            .conn()
            .and_then(|mut c| c.del::<_, ()>(self.key(id)).map_err(RedisStoreError::from));
        if let Err(e) = result {
            self.failed("remove", id, &e);
        }
    }
}
