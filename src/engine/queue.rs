//! What the engine asks of the agents' queues when it hands a conversation off: the
//! customer's place and the expected wait, for the queue's waiting message.
//!
//! The engine only reads this; the service implements it over its inbox (every node
//! sees every conversation's state through the inbox's events), so the engine knows
//! nothing of the inbox and the inbox nothing of a turn's inside.

/// A customer's place in a queue, as told to them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Place {
    /// 1 for the next conversation to be picked up.
    pub position: usize,
    /// The expected wait in whole minutes (at least 1), when the queue has served
    /// conversations recently enough to say.
    pub wait_minutes: Option<u64>,
}

/// The agents' queues as the service sees them.
pub trait Queues: Send + Sync {
    /// Where a conversation that starts waiting in `group` now would stand: the waiting
    /// conversations of the group ahead of it, plus one.
    fn place(&self, group: &str) -> Place;
}
