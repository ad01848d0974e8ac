//! [`Seen`] shared by the nodes of a fleet, in Redis: a platform's retry may reach
//! another node than its first try did, and must not be answered twice. Each id is one
//! key, `{prefix}seen:{id}`, set with `SET key 1 NX EX ttl`: the first node to set it
//! answers the message.

use std::sync::Mutex;
use std::time::Duration;

use super::Seen;
use crate::safety::logsafe::{LogSafe, redacted_url};

/// Message ids in Redis.
pub struct RedisSeen {
    client: redis::Client,
    /// One connection, made on first use and again after a failure. Seen is asked once
    /// per platform message: a pool would not pay for itself.
    conn: Mutex<Option<redis::Connection>>,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
    /// The address for logs, its password masked.
    address: String,
}

impl RedisSeen {
    /// Ids under `{prefix}seen:` in the Redis at `url` (`kefu:` gives `kefu:seen:{id}`),
    /// each kept `ttl`; every connect, read and write bounded by `timeout`. Connects
    /// lazily: a Redis that is down at start is logged at first use.
    pub fn new(url: &str, prefix: &str, ttl: Duration, timeout: Duration) -> Result<RedisSeen, redis::RedisError> {
        Ok(RedisSeen {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
            prefix: format!("{prefix}seen:"),
            ttl,
            timeout,
            address: redacted_url(url),
        })
    }

    fn set_once(&self, conn: &mut Option<redis::Connection>, key: &str) -> Result<bool, redis::RedisError> {
        if conn.is_none() {
            let fresh = self.client.get_connection_with_timeout(self.timeout)?;
            fresh.set_read_timeout(Some(self.timeout))?;
            fresh.set_write_timeout(Some(self.timeout))?;
            *conn = Some(fresh);
        }
        let Some(connection) = conn.as_mut() else {
            unreachable!("connected above")
        };
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(self.ttl.as_secs().max(1))
            .query(connection)
            .inspect_err(|_| *conn = None)?;
        Ok(set.is_some())
    }
}

impl Seen for RedisSeen {
    fn first(&self, id: &str) -> bool {
        let key = format!("{}{id}", self.prefix);
        let mut conn = self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Twice: a pooled connection the server closed fails once, a fresh one works.
        let mut result = self.set_once(&mut conn, &key);
        if result.is_err() {
            result = self.set_once(&mut conn, &key);
        }
        result.unwrap_or_else(|error| {
            tracing::warn!(
                redis = %self.address,
                id = %LogSafe(id),
                %error,
                "cannot record a message id in redis; answering it (a retry may be answered twice)"
            );
            true
        })
    }
}
