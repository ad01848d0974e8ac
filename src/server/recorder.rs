//! What the service writes about conversations, from the engine's events: the metrics,
//! the per-event log line (and one per script that failed during a turn) and the
//! conversation log.
//!
//! The engine is the only writer of sessions and reports every change it makes (see
//! `engine::events`); the [`Recorder`] is the service's one observer of it. Handlers and
//! the turn runner write no records of their own, so a takeover made through any route (or
//! by a later agent console) is counted and logged the same way. Message text is never in
//! the tracing log (it may hold personal data): only its length; the conversation log has
//! it masked.
//!
//! It also sends channel customers what reaches their conversation outside a turn: an
//! agent's answer, a job's notice ([`ChannelHook`]).

use std::sync::Arc;

use super::inbox::Inbox;
use super::metrics::Metrics;
use crate::channels::{Outbound, Outgoing, SessionKey};
use crate::data::ConversationLog;
use crate::engine::{Event, Observer};
use crate::jobs::JobQueue;
use crate::safety::logsafe::LogSafe;

/// The service's observer of the engine.
pub struct Recorder {
    /// Where answers, takeovers and ratings are counted.
    pub metrics: Arc<Metrics>,
    /// The conversation log, when it is on.
    pub log: Option<ConversationLog>,
    /// The agents' inbox, which pushes every change to the consoles (and other nodes).
    pub inbox: Option<Arc<Inbox>>,
    /// Where messages to channel customers go out, when the service has channels.
    pub channels: Option<ChannelHook>,
}

/// Sends channel customers (a WeChat user, a webhook platform's conversation) what an
/// agent writes them and what a job tells them: their conversation's session id names
/// the channel ([`SessionKey`]), the channel's sender posts it, through the job queue.
pub struct ChannelHook {
    /// The configured channels' senders.
    pub outbound: Outbound,
    /// The queue deliveries run on.
    pub queue: JobQueue,
}

impl ChannelHook {
    /// Queues `text` for the customer of `session` when it is a channel conversation whose
    /// channel has a sender; the message's id is `{session}#{seq}`, stable across retries.
    fn send(&self, session: &str, text: &str, seq: u64) {
        let Some(key) = SessionKey::parse(session) else {
            return;
        };
        let Some(sender) = self.outbound.sender(&key.channel) else {
            tracing::debug!(session = %LogSafe(session), channel = %key.channel, "no sender for this channel; message kept in the conversation only");
            return;
        };
        let message = Outgoing {
            key,
            text: text.to_string(),
            id: format!("{session}#{seq}"),
            choices: Vec::new(),
        };
        // A refusal (the queue full) is logged and counted by `deliver`.
        let _ = crate::channels::deliver(&self.queue, sender, message);
    }
}

impl Observer for Recorder {
    fn observe(&self, event: &Event<'_>) {
        // First: the consoles see a change as soon as it is made.
        if let Some(inbox) = &self.inbox {
            inbox.observe(event);
        }
        if let Some(log) = &self.log {
            log.observe(event);
        }
        match *event {
            Event::Turn { request, response } => {
                self.metrics.answer(response.source);
                self.metrics.channel_turn(request.channel_name());
                self.metrics.version_turn(response);
                self.metrics.hits(response);
                for failure in &response.script_errors {
                    self.metrics.script_error(&failure.item);
                    // Not rhai's message: it may quote the customer's data.
                    tracing::warn!(
                        session = %LogSafe(&response.session_id),
                        rule = %failure.item,
                        at = %failure.location,
                        limit = failure.limit,
                        "script failed"
                    );
                }
                // Text fields go in as Display (`%`): a `&str` field is written with Debug,
                // which checks every Chinese character against Unicode's printable tables
                // for escaping, and that was a third of the line's cost. None of these
                // values holds a newline or a quote (names, intents and reasons come from
                // checked rule files).
                tracing::info!(
                    session = %LogSafe(&response.session_id),
                    source = %response.source.name(),
                    rule = shown(response.rule.as_deref().or(response.promotion.as_deref()).or(response.flow.as_deref())),
                    intent = shown(response.intent.as_deref()),
                    handoff = shown(response.handoff.as_ref().map(|h| h.reason.as_str())),
                    chars = request.message.chars().count(),
                    rules = %response.rules_version,
                    latency_ms = response.latency_ms,
                    "turn"
                );
            }
            Event::Takeover { session, agent, .. } => {
                self.metrics.takeover();
                tracing::info!(
                    session = %LogSafe(session),
                    agent = agent.map(|a| tracing::field::display(LogSafe(a))),
                    "taken over"
                );
            }
            Event::AgentReply {
                session,
                agent,
                text,
                seq,
                ..
            } => {
                tracing::info!(
                    session = %LogSafe(session),
                    agent = agent.map(|a| tracing::field::display(LogSafe(a))),
                    "agent replied"
                );
                if let Some(hook) = &self.channels {
                    hook.send(session, text, seq);
                }
            }
            Event::Release {
                session,
                agent,
                resumed,
                ..
            } => tracing::info!(
                session = %LogSafe(session),
                agent = agent.map(|a| tracing::field::display(LogSafe(a))),
                resumed,
                "released to the bot"
            ),
            Event::Requeue { session, agent } => tracing::info!(
                session = %LogSafe(session),
                agent = agent.map(|a| tracing::field::display(LogSafe(a))),
                "back in its queue"
            ),
            Event::Note { session, note } => tracing::info!(
                session = %LogSafe(session),
                agent = note.agent.as_deref().map(|a| tracing::field::display(LogSafe(a))),
                chars = note.text.chars().count(),
                "note written"
            ),
            Event::Resolve {
                session, resolution, ..
            } => tracing::info!(
                session = %LogSafe(session),
                agent = resolution.agent.as_deref().map(|a| tracing::field::display(LogSafe(a))),
                outcome = %LogSafe(&resolution.outcome),
                "resolved"
            ),
            Event::Told { session, text, seq } => {
                tracing::info!(session = %LogSafe(session), chars = text.chars().count(), "told");
                if let Some(hook) = &self.channels {
                    hook.send(session, text, seq);
                }
            }
            Event::CustomerEvent { request, outcome } => {
                self.metrics.customer_event(&request.kind, outcome);
                if let crate::engine::ProactiveOutcome::Refused { trigger, reason } = outcome {
                    tracing::info!(
                        session = %LogSafe(&request.session_id),
                        trigger = %LogSafe(trigger),
                        reason = reason.name(),
                        "proactive refused"
                    );
                }
                if let crate::engine::ProactiveOutcome::Sent { trigger, text, seq } = outcome {
                    tracing::info!(
                        session = %LogSafe(&request.session_id),
                        trigger = %LogSafe(trigger),
                        chars = text.chars().count(),
                        "proactive sent"
                    );
                    if let Some(hook) = &self.channels {
                        hook.send(&request.session_id, text, *seq);
                    }
                }
            }
            Event::Feedback {
                session,
                feedback,
                served_by,
                ..
            } => {
                self.metrics.feedback(feedback.score);
                self.metrics.version_feedback(served_by, feedback.score);
                tracing::info!(session = %LogSafe(session), score = feedback.score, "feedback");
            }
            Event::TurnFailed { served_by, .. } => self.metrics.version_failed(served_by),
            Event::Ticket { ticket } => tracing::info!(
                session = %LogSafe(&ticket.session_id),
                ticket = %ticket.id,
                kind = %ticket.kind,
                "ticket raised"
            ),
        }
    }
}

/// A text log field written as Display.
fn shown(text: Option<&str>) -> Option<tracing::field::DisplayValue<&str>> {
    text.map(tracing::field::display)
}
