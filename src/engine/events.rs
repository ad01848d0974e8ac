//! What the engine reports: every change it makes to a conversation, as an [`Event`], to
//! one [`Observer`].
//!
//! The engine is the only writer of sessions, so it is the one place that knows each
//! change happened and how it ended. (A job's message to a conversation, `Engine::tell`,
//! is kept in the session only; the job queue logs its outcome.) The service's observer writes the conversation log
//! and the metrics from these events; `kefu chat`'s writes the conversation log. Neither
//! writes a record of its own beside the engine, so a log made by `kefu chat` and one made
//! by `kefu serve` hold the same records for the same conversation.

use super::{EventRequest, ProactiveOutcome, TurnRequest, TurnResponse};
use crate::dialogue::{Feedback, Note, Resolution, ServedBy, Takeover};
use crate::tickets::Ticket;

/// Something that happened to a conversation.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A customer message was handled: answered, blocked, queued for an agent or, when a
    /// person acted during the turn, dropped (`response.dropped`).
    Turn {
        /// What the customer sent.
        request: &'a TurnRequest,
        /// What kefu answered (`response.message` is the message as kept: masked).
        response: &'a TurnResponse,
    },
    /// A person took the conversation over (from the bot, or from its queue).
    Takeover {
        /// The conversation.
        session: &'a str,
        /// Who, when named.
        agent: Option<&'a str>,
        /// The takeover as stored after the act (kind, group, since, assigned_at).
        taken: &'a Takeover,
    },
    /// An agent answered the customer.
    AgentReply {
        /// The conversation.
        session: &'a str,
        /// The agent holding the conversation, when named.
        agent: Option<&'a str>,
        /// What the agent wrote, with personal data masked.
        text: &'a str,
        /// The message's sequence number in the conversation ([`crate::dialogue::Session::seq`]).
        seq: u64,
    },
    /// The conversation went back to the bot.
    Release {
        /// The conversation.
        session: &'a str,
        /// The agent who released it, when named.
        agent: Option<&'a str>,
        /// The takeover that ended (its times give the waiting and handling figures).
        ended: &'a Takeover,
        /// Whether the paused flow resumed (else it was dropped, or there was none).
        resumed: bool,
    },
    /// A person's hold lapsed (their console was gone past the grace time): the
    /// conversation waits in its queue again.
    Requeue {
        /// The conversation.
        session: &'a str,
        /// The agent who held it.
        agent: Option<&'a str>,
    },
    /// An agent wrote an internal note.
    Note {
        /// The conversation.
        session: &'a str,
        /// The note as kept (masked).
        note: &'a Note,
    },
    /// A person resolved the conversation.
    Resolve {
        /// The conversation.
        session: &'a str,
        /// The takeover that ended, when one was running.
        ended: Option<&'a Takeover>,
        /// The outcome.
        resolution: &'a Resolution,
    },
    /// kefu told the customer something outside a turn (a job's outcome).
    Told {
        /// The conversation.
        session: &'a str,
        /// What the customer is told.
        text: &'a str,
        /// The message's sequence number in the conversation.
        seq: u64,
    },
    /// The shop reported an event ([`crate::engine::Engine::event`]); when a proactive
    /// message was sent (`ProactiveOutcome::Sent`), it is in the session's history and is
    /// delivered on the customer's channel like [`Event::Told`].
    CustomerEvent {
        /// The event as reported.
        request: &'a EventRequest,
        /// What it did.
        outcome: &'a ProactiveOutcome,
    },
    /// The customer rated the conversation.
    Feedback {
        /// The conversation.
        session: &'a str,
        /// The score and comment kept.
        feedback: &'a Feedback,
        /// The rule set that answered the conversation's last turn, which the rating
        /// counts for (unknown in a session stored before versions).
        served_by: &'a ServedBy,
        /// The last agent who held the conversation, when a person served it
        /// ([`crate::dialogue::Session::last_agent`]): the rating counts for them too.
        agent: Option<&'a str>,
    },
    /// A turn failed on the rule set it picked: its session could not be read or saved,
    /// or it panicked. Nothing was changed; reported only so that the per-version figures
    /// count it (the conversation log has no record of it).
    TurnFailed {
        /// The conversation.
        session: &'a str,
        /// The rule set the turn ran on.
        served_by: &'a ServedBy,
    },
    /// A flow raised a ticket (recorded before the customer is told).
    Ticket {
        /// The ticket.
        ticket: &'a Ticket,
    },
}

/// Receives the engine's events. Called on the thread that made the change, after the
/// session was stored; it must not block (queue slow work, as the conversation log does).
pub trait Observer: Send + Sync {
    /// One event.
    fn observe(&self, event: &Event<'_>);
}

impl<F: Fn(&Event<'_>) + Send + Sync> Observer for F {
    fn observe(&self, event: &Event<'_>) {
        self(event)
    }
}
