//! Dialogue state: a conversation's session, the state of the flow it is in, and whether a
//! person holds it.

pub mod session;

pub use session::{
    Asked, ConvState, Feedback, FlowState, HandoffKind, HistoryEntry, ImageRef, Note, ProactiveSent, Proactivity,
    Resolution, Role, RulesRole, ServedBy, Session, Takeover, new_token,
};
