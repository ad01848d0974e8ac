//! Tickets that flows create (`create_ticket("return", order_id)`) for people or
//! back-office systems to act on.
//!
//! Numbers and delivery records come from an [`Outbox`] when the store has one (the
//! service's journal or Redis stream): unique across restarts and nodes, and recorded
//! durably before `create` returns, so that a customer told "已为您提交" is never told so
//! about a ticket a crash can lose. Without one (the CLI, tests) numbers count from 1 in
//! memory.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub mod delivery;
pub mod journal;
pub mod outbox;
pub mod stream;

pub use delivery::{DeliverTicket, Deliveries, DeliveryEvent, TicketConfig, signature};
pub use journal::{Journal, JournalStats};
pub use outbox::{Outbox, OutboxError, Taken};
pub use stream::RedisOutbox;

/// How many tickets the in-memory store keeps; the oldest are dropped past this.
const TICKET_LIMIT: usize = 10_000;

/// A ticket could not be raised.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// Its number or its delivery record could not be written.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// Runs `f` (an fsync of the journal, 4 ms at the median on the development machine, or a
/// Redis round trip) with `block_in_place` when called on a runtime worker, so that the
/// worker's other connections move to another thread meanwhile, as model calls do.
fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A request raised by a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// `T` + date + sequence, e.g. `T20261105-000042`. The sequence is unique across
    /// restarts (and across a fleet sharing Redis); the back office gets it as the
    /// delivery's `Idempotency-Key`.
    pub id: String,
    /// What it is about (`return`, `exchange`, ...).
    pub kind: String,
    /// What it refers to, usually an order number.
    pub reference: String,
    /// The session that raised it.
    pub session_id: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// `open` until someone handles it.
    pub status: String,
    /// What else the back office needs to act on it, by name: a handoff after hours
    /// carries `reason`, `group`, `kind` and the customer's `message`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub details: std::collections::BTreeMap<String, String>,
}

/// Tickets raised on this node, newest last.
#[derive(Default)]
pub struct TicketStore {
    inner: Mutex<(u64, Vec<Ticket>)>,
    outbox: Option<Arc<dyn Outbox>>,
    deliver: bool,
}

impl std::fmt::Debug for TicketStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketStore")
            .field("inner", &self.inner)
            .field("outbox", &self.outbox.is_some())
            .field("deliver", &self.deliver)
            .finish()
    }
}

impl TicketStore {
    /// A store whose numbers come from `outbox`; with `deliver`, every new ticket is also
    /// recorded there for delivery before `create` returns.
    pub fn durable(outbox: Arc<dyn Outbox>, deliver: bool) -> Self {
        TicketStore {
            inner: Mutex::default(),
            outbox: Some(outbox),
            deliver,
        }
    }

    /// Sets the status of a ticket (`submitted`, `failed`, ...); the updated ticket, or
    /// `None` when no ticket has this id (any more).
    pub fn set_status(&self, id: &str, status: &str) -> Option<Ticket> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = guard.1.iter_mut().find(|t| t.id == id)?;
        ticket.status = status.to_string();
        Some(ticket.clone())
    }

    /// Raises a ticket; `date` is the shop-local date as `YYYYMMDD`. With an outbox the
    /// ticket is durable (and queued for delivery) when this returns `Ok`.
    pub fn create(
        &self,
        kind: &str,
        reference: &str,
        session_id: &str,
        date: &str,
        at: i64,
    ) -> Result<Ticket, TicketError> {
        self.create_with(kind, reference, Default::default(), session_id, date, at)
    }

    /// Raises a ticket with `details` besides its kind and reference (see [`create`](Self::create)).
    pub fn create_with(
        &self,
        kind: &str,
        reference: &str,
        details: std::collections::BTreeMap<String, String>,
        session_id: &str,
        date: &str,
        at: i64,
    ) -> Result<Ticket, TicketError> {
        let number = match &self.outbox {
            Some(outbox) => off_worker(|| outbox.next_number())?,
            None => {
                let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                guard.0 += 1;
                guard.0
            }
        };
        let ticket = Ticket {
            id: format!("T{date}-{number:06}"),
            kind: kind.to_string(),
            reference: reference.to_string(),
            session_id: session_id.to_string(),
            created_at: at,
            status: "open".into(),
            details,
        };
        // Listed before it is recorded: its delivery may finish (and set its status) before
        // `push` returns.
        {
            let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            guard.1.push(ticket.clone());
            if guard.1.len() > TICKET_LIMIT {
                guard.1.remove(0);
            }
        }
        if let Some(outbox) = self.outbox.as_ref().filter(|_| self.deliver)
            && let Err(error) = off_worker(|| outbox.push(&ticket))
        {
            let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            guard.1.retain(|t| t.id != ticket.id);
            return Err(error.into());
        }
        Ok(ticket)
    }

    /// Every ticket kept, oldest first.
    pub fn list(&self) -> Vec<Ticket> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }
}
