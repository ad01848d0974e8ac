//! Tickets that flows create (`create_ticket("return", order_id)`) for people or
//! back-office systems to act on.

use std::sync::{Arc, Mutex};

use serde::Serialize;

/// How many tickets the in-memory store keeps; the oldest are dropped past this.
const TICKET_LIMIT: usize = 10_000;

/// A request raised by a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ticket {
    /// `T` + date + sequence, e.g. `T20261105-000042`.
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
}

/// Told about every new ticket, after it is stored: the HTTP service hands tickets to its
/// job queue so that a slow back office never holds up the turn that raised them.
pub type TicketListener = Arc<dyn Fn(&Ticket) + Send + Sync>;

/// Tickets raised on this node, newest last.
#[derive(Default)]
pub struct TicketStore {
    inner: Mutex<(u64, Vec<Ticket>)>,
    listener: Option<TicketListener>,
}

impl std::fmt::Debug for TicketStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketStore")
            .field("inner", &self.inner)
            .field("listener", &self.listener.is_some())
            .finish()
    }
}

impl TicketStore {
    /// An empty store that calls `listener` with every ticket it raises.
    pub fn with_listener(listener: TicketListener) -> Self {
        TicketStore {
            inner: Mutex::default(),
            listener: Some(listener),
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

    /// Raises a ticket; `date` is the shop-local date as `YYYYMMDD`.
    pub fn create(&self, kind: &str, reference: &str, session_id: &str, date: &str, at: i64) -> Ticket {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.0 += 1;
        let ticket = Ticket {
            id: format!("T{date}-{:06}", guard.0),
            kind: kind.to_string(),
            reference: reference.to_string(),
            session_id: session_id.to_string(),
            created_at: at,
            status: "open".into(),
        };
        guard.1.push(ticket.clone());
        if guard.1.len() > TICKET_LIMIT {
            guard.1.remove(0);
        }
        drop(guard);
        if let Some(listener) = &self.listener {
            listener(&ticket);
        }
        ticket
    }

    /// Every ticket kept, oldest first.
    pub fn list(&self) -> Vec<Ticket> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }
}
