//! Tickets that flows create (`create_ticket("return", order_id)`) for people or
//! back-office systems to act on.

use std::sync::Mutex;

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

/// Tickets raised on this node, newest last.
#[derive(Debug, Default)]
pub struct TicketStore {
    inner: Mutex<(u64, Vec<Ticket>)>,
}

impl TicketStore {
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
        ticket
    }

    /// Every ticket kept, oldest first.
    pub fn list(&self) -> Vec<Ticket> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }
}
