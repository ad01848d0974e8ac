//! Tickets that must survive a crash: numbered, recorded durably before the customer is told
//! "已为您提交", and handed out for delivery until the back office has them.
//!
//! An [`Outbox`] does three things for the ticket store and the delivery pump
//! ([`Deliveries`](super::Deliveries)):
//!
//! - **numbers** that are unique across restarts and, with Redis, across a fleet
//!   ([`Outbox::next_number`]);
//! - **records** a ticket for delivery and returns only once the record would survive a
//!   `kill -9` ([`Outbox::push`]);
//! - **hands out** recorded tickets for delivery ([`Outbox::take`]) until one is marked
//!   [`Outbox::done`]. A ticket taken and not marked done within the visibility timeout (its
//!   node died, or its attempts ran out) is handed out again, so delivery is at least once;
//!   the back office de-duplicates by the ticket id, sent as `Idempotency-Key`.
//!
//! Two backends: a local append-only [`Journal`](super::Journal) in the state directory (one node), and a
//! Redis stream with a consumer group ([`RedisOutbox`](super::RedisOutbox)) that every node of a fleet shares.

use std::time::Duration;

use super::Ticket;

/// Why the outbox could not record or hand out tickets.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// A file of the state directory could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the state directory.
    #[error("the state directory {0} is in use by another kefu process")]
    Locked(std::path::PathBuf),
    /// A Redis command failed.
    #[error("redis outbox at {url}: {source}")]
    Redis {
        /// The address, password removed.
        url: String,
        /// Why.
        #[source]
        source: redis::RedisError,
    },
    /// Redis answered something the outbox does not understand.
    #[error("redis outbox: unexpected reply to {0}")]
    Reply(&'static str),
}

/// A ticket handed out for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The ticket as it was recorded.
    pub ticket: Ticket,
    /// Where the outbox keeps it (the Redis stream entry id; the ticket id in a journal).
    pub key: String,
    /// It was handed out before (by this process or one that died): a redelivery.
    pub redelivery: bool,
}

/// Durable ticket numbers and deliveries (see the module docs).
pub trait Outbox: Send + Sync {
    /// The next ticket number, never handed out before by this outbox (or any node sharing
    /// it).
    fn next_number(&self) -> Result<u64, OutboxError>;
    /// Records `ticket` for delivery; returns once the record survives a crash.
    fn push(&self, ticket: &Ticket) -> Result<(), OutboxError>;
    /// Up to `max` tickets to deliver now: new ones, and ones handed out longer ago than the
    /// visibility timeout without being marked done. Waits up to `wait` when there are none.
    fn take(&self, max: usize, wait: Duration) -> Result<Vec<Taken>, OutboxError>;
    /// The back office has `taken` (or refused it for good): never hand it out again.
    fn done(&self, taken: &Taken) -> Result<(), OutboxError>;
    /// Tickets recorded and not yet done, as last counted (a Redis outbox counts the
    /// fleet's); cheap enough for every metrics scrape.
    fn pending(&self) -> u64;
    /// Counts the pending tickets afresh (a Redis round trip) and returns the count.
    fn refresh_pending(&self) -> u64 {
        self.pending()
    }
}
