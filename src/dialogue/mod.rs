//! Dialogue state: sessions, the flow interpreter's state, and tickets raised by flows.

pub mod session;
pub mod tickets;

pub use session::{Feedback, FlowState, HistoryEntry, Role, Session, Takeover, new_token};
pub use tickets::{Ticket, TicketError, TicketStore};
