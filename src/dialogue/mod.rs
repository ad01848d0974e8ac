//! Dialogue state: a conversation's session, the state of the flow it is in, and whether a
//! person holds it.

pub mod session;

pub use session::{Asked, Feedback, FlowState, HistoryEntry, Role, RulesRole, ServedBy, Session, Takeover, new_token};
