//! Saving a turn's session: what the turn changed, laid over the session as it is stored
//! when the turn ends, in one atomic update of the store.
//!
//! A turn reads its session when it starts and may run for seconds (the model). Whatever
//! landed in the meantime wins over the turn:
//! - a person acted (took the conversation over, replied, gave it back, resolved it:
//!   `human_acts` moved): the turn's answer is dropped, not shown; the customer's message
//!   is kept, queued for the agent, as if it had arrived after the takeover (a model
//!   generation still running was silenced at the act, `silence`);
//! - another writer on the bot's side (a second message of the same customer answered on
//!   another node, a job's notice, the customer's rating): both are kept. The turn's
//!   messages are appended after what is there, its counts added, and the conversation
//!   state it decided (flow, slots, product, card context, last intent) replaces the older state.
//!
//! When nothing landed, which is nearly always, the turn's session is stored as it is,
//! moved into the store without a copy (`store_if_unchanged`); only when something did is
//! the stored session read again and merged in an `update`.

use std::time::Instant;

use super::{Engine, EngineError};
use crate::dialogue::{Role, Session};
use crate::safety::logsafe::LogSafe;
use crate::store::{Unchanged, Write};

/// Where the session stood when the turn read it, and when the turn began.
#[derive(Clone, Copy, Debug)]
pub(super) struct Read {
    rev: u64,
    human_acts: u64,
    failures: u32,
    began: Instant,
}

impl Read {
    /// The session's `rev` when the turn read it.
    pub(super) fn rev(&self) -> u64 {
        self.rev
    }

    /// When the turn began, before it read the session: a person's act after this may
    /// have come after the read, so it silences the turn's model generation (`silence`).
    pub(super) fn began(&self) -> Instant {
        self.began
    }

    /// `session` as a turn that began at `began` read it.
    pub(super) fn of(session: &Session, began: Instant) -> Self {
        Read {
            rev: session.rev,
            human_acts: session.human_acts,
            failures: session.failures,
            began,
        }
    }
}

/// What a turn adds to its session besides the state it decides.
#[derive(Clone, Copy, Debug)]
pub(super) struct Added<'a> {
    /// The customer's message as kept (masked, or the blocked marker).
    pub message: &'a str,
    /// How many entries the turn appended to the history (the last ones of its session's).
    pub history: usize,
    /// The turn was answered by the bot: it counts in `turns` and `emotions` and decided
    /// `failures`, the flow state, slots, product, last intent and a handoff.
    pub answered: bool,
    /// The message was queued for the agent who holds the conversation.
    pub queued: bool,
    /// What the turn remembered (`Some`) or forgot (`None`), in order: laid over the
    /// memory as stored, so that another writer's remembered values stay beside them.
    pub memory: &'a [(String, Option<serde_json::Value>)],
}

/// How the save went.
#[derive(Debug)]
pub(super) enum Saved {
    /// The turn's session was stored as it was: the response made from it is right.
    AsIs,
    /// The turn's changes were merged with what landed meanwhile: the conversation's
    /// answered-turn count and token as they now stand.
    Kept { turns: u32, token: String },
    /// A person acted on the conversation while the turn ran: its answer must not be
    /// shown. `reason` is the takeover's, for the response's handoff.
    Dropped { reason: String },
}

/// Stores the turn's session `next` (read as `read`), merged with whatever was stored in
/// the meantime. A store that cannot be reached (it logged why, after its retries) fails
/// the save, and the turn with it: an answer given while its session stays behind would
/// have the customer's next message read against the step before.
pub(super) fn save(engine: &Engine, read: Read, next: Session, added: Added<'_>) -> Result<Saved, EngineError> {
    let unavailable = |e: crate::store::StoreError| EngineError::Store(e.to_string());
    let next = match engine.sessions.store_if_unchanged(next).map_err(unavailable)? {
        Unchanged::Stored => return Ok(Saved::AsIs),
        Unchanged::Changed(next) => next,
    };
    let id = next.id.clone();
    let mut outcome = None;
    engine
        .sessions
        .update(&id, &mut |stored| {
            let (w, o) = lay_over(stored, read, &next, added);
            outcome = Some(o);
            w
        })
        .map_err(unavailable)?;
    let saved = outcome.expect("an update that succeeded ran its change");
    if let Saved::Dropped { .. } = &saved {
        tracing::info!(session = %LogSafe(&id), "answer dropped: a person acted on the conversation during the turn");
    }
    Ok(saved)
}

/// Gives the history's last entry (just remembered) the images of the turn's own entry.
fn with_images(session: &mut Session, images: &[crate::dialogue::ImageRef]) {
    if !images.is_empty()
        && let Some(last) = session.history.back_mut()
    {
        last.images = images.to_vec();
    }
}

/// The change of one update attempt: `stored` is what the store holds now.
fn lay_over(stored: &mut Option<Session>, read: Read, next: &Session, added: Added<'_>) -> (Write, Saved) {
    let current = match stored {
        Some(current) if current.rev != read.rev => current,
        // Nothing landed (or the session was forgotten meanwhile): the turn's session
        // is the session.
        _ => {
            *stored = Some(next.clone());
            return (
                Write::Store,
                Saved::Kept {
                    turns: next.turns,
                    token: next.token.clone(),
                },
            );
        }
    };
    let added_entries = next
        .history
        .iter()
        .skip(next.history.len().saturating_sub(added.history));
    if current.human_acts != read.human_acts {
        let reason = current
            .takeover
            .as_ref()
            .and_then(|t| t.reason.clone())
            .unwrap_or_else(|| "人工接管".into());
        // An event's turn has no message for the agent (`added.message` is empty).
        if let Some(takeover) = &mut current.takeover
            && !added.message.is_empty()
        {
            takeover.queue(added.message.to_string());
        }
        if let Some(first) = added_entries.take(1).find(|e| e.role == Role::User) {
            current.remember(Role::User, &first.text, first.at);
            with_images(current, &first.images);
        }
        current.updated_at = current.updated_at.max(next.updated_at);
        return (Write::Store, Saved::Dropped { reason });
    }
    for entry in added_entries {
        current.remember(entry.role, &entry.text, entry.at);
        with_images(current, &entry.images);
    }
    if current.served_by != next.served_by {
        current.served_by.clone_from(&next.served_by);
    }
    if current.token.is_empty() {
        current.token.clone_from(&next.token);
    }
    // The customer wrote again: a resolved conversation is open again (a person's
    // resolution during the turn went the way above, and stands).
    if next.resolved.is_none() {
        current.resolved = None;
    }
    if added.queued
        && let Some(takeover) = &mut current.takeover
    {
        takeover.queue(added.message.to_string());
    }
    if added.answered {
        current.turns += 1;
        if let Some(emotion) = next.emotions.last() {
            current.feel(*emotion);
        }
        current.failures = match next.failures {
            0 => 0,
            n => current.failures.saturating_add(n.saturating_sub(read.failures)),
        };
        current.last_intent.clone_from(&next.last_intent);
        current.flow.clone_from(&next.flow);
        current.slots.clone_from(&next.slots);
        current.product.clone_from(&next.product);
        current.card_context.clone_from(&next.card_context);
        current.asked.clone_from(&next.asked);
        // The turn's opt-out (or opt-in) decides; messages sent meanwhile stay counted.
        current.proactive.opted_out = next.proactive.opted_out;
        for (name, value) in added.memory {
            // Checked against the turn's own session when remembered; here only a full
            // memory (names another writer added meanwhile) can refuse it.
            let _ = current.keep(name, value.clone());
        }
        if current.takeover.is_none() {
            current.takeover.clone_from(&next.takeover);
        }
    }
    current.updated_at = current.updated_at.max(next.updated_at);
    (
        Write::Store,
        Saved::Kept {
            turns: current.turns,
            token: current.token.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::Takeover;

    fn answered(message: &str) -> Added<'_> {
        Added {
            message,
            history: 2,
            answered: true,
            queued: false,
            memory: &[],
        }
    }

    /// A session read at rev 3, and the turn's version of it after answering `msg`.
    fn turn_on(stored: &Session, msg: &str) -> (Read, Session) {
        let read = Read::of(stored, Instant::now());
        let mut next = stored.clone();
        next.turns += 1;
        next.remember(Role::User, msg, 10);
        next.remember(Role::Bot, "答", 10);
        next.last_intent = Some("物流".into());
        next.updated_at = 10;
        (read, next)
    }

    fn base() -> Session {
        let mut s = Session::new("c");
        s.rev = 3;
        s.token = "t".into();
        s
    }

    #[test]
    fn with_nothing_in_between_the_turns_session_is_stored_as_it_is() {
        let (read, next) = turn_on(&base(), "在吗");
        let mut stored = Some(base());
        let (w, saved) = lay_over(&mut stored, read, &next, answered("在吗"));
        assert_eq!(w, Write::Store);
        assert!(matches!(saved, Saved::Kept { turns: 1, .. }));
        assert_eq!(stored.unwrap(), next);
    }

    #[test]
    fn a_takeover_during_the_turn_drops_the_answer_and_queues_the_message() {
        let (read, next) = turn_on(&base(), "在吗");
        let mut current = base();
        current.rev = 4;
        current.human_acts = 1;
        current.takeover = Some(Takeover {
            agent: Some("小王".into()),
            ..Takeover::default()
        });
        let mut stored = Some(current);
        let (_, saved) = lay_over(&mut stored, read, &next, answered("在吗"));
        assert!(matches!(saved, Saved::Dropped { ref reason } if reason == "人工接管"));
        let stored = stored.unwrap();
        assert_eq!(stored.takeover.as_ref().unwrap().queued, ["在吗"]);
        let texts: Vec<&str> = stored.history.iter().map(|h| &*h.text).collect();
        assert_eq!(texts, ["在吗"], "the bot's answer is not in the history");
        assert_eq!(stored.turns, 0);
        assert_eq!(stored.last_intent, None);
    }

    #[test]
    fn another_bot_side_write_is_kept_beside_the_turns_changes() {
        let (read, next) = turn_on(&base(), "第二个问题");
        // Meanwhile the customer rated the conversation and a job told them something.
        let mut current = base();
        current.rev = 5;
        current.feedback.push(crate::dialogue::Feedback {
            score: 5,
            comment: None,
            at: 7,
        });
        current.remember(Role::Bot, "工单已送达", 7);
        let mut stored = Some(current);
        let (_, saved) = lay_over(&mut stored, read, &next, answered("第二个问题"));
        assert!(matches!(saved, Saved::Kept { turns: 1, .. }));
        let stored = stored.unwrap();
        assert_eq!(stored.feedback.len(), 1, "the rating is kept");
        let texts: Vec<&str> = stored.history.iter().map(|h| &*h.text).collect();
        assert_eq!(texts, ["工单已送达", "第二个问题", "答"]);
        assert_eq!(stored.last_intent.as_deref(), Some("物流"));
    }

    #[test]
    fn a_customers_message_reopens_a_resolved_conversation_past_a_write_in_between() {
        let mut resolved = base();
        resolved.resolved = Some(crate::dialogue::Resolution {
            outcome: "solved".into(),
            agent: Some("小王".into()),
            at: 1,
        });
        let (read, mut next) = turn_on(&resolved, "还有个问题");
        // The turn cleared it (`turn::run`); meanwhile a job told the customer something.
        next.resolved = None;
        let mut current = resolved.clone();
        current.rev = 4;
        current.remember(Role::Bot, "工单已送达", 7);
        let mut stored = Some(current);
        let (_, saved) = lay_over(&mut stored, read, &next, answered("还有个问题"));
        assert!(matches!(saved, Saved::Kept { .. }));
        assert_eq!(stored.unwrap().resolved, None);
    }

    #[test]
    fn failures_add_up_across_concurrent_turns_and_a_success_clears_them() {
        let mut first = base();
        first.failures = 1;
        let read = Read::of(&first, Instant::now());
        let mut failed = first.clone();
        failed.failures = 2;
        let mut current = first.clone();
        current.rev = 9;
        current.failures = 2;
        let mut stored = Some(current.clone());
        lay_over(&mut stored, read, &failed, answered("?"));
        assert_eq!(stored.unwrap().failures, 3);
        let mut succeeded = first;
        succeeded.failures = 0;
        let mut stored = Some(current);
        lay_over(&mut stored, read, &succeeded, answered("?"));
        assert_eq!(stored.unwrap().failures, 0);
    }

    #[test]
    fn what_a_turn_remembers_survives_a_write_in_between() {
        let mut first = base();
        first.keep("offer", Some(serde_json::json!("取消"))).unwrap();
        let (read, mut next) = turn_on(&first, "好的");
        next.keep("order", Some(serde_json::json!({"id": "202611010001"})))
            .unwrap();
        next.keep("offer", None).unwrap();
        let changes = [
            ("order".to_string(), Some(serde_json::json!({"id": "202611010001"}))),
            ("offer".to_string(), None),
        ];
        // Meanwhile another writer remembered something of its own.
        let mut current = first.clone();
        current.rev = 4;
        current.keep("card", Some(serde_json::json!("订单卡片"))).unwrap();
        let mut stored = Some(current);
        let added = Added {
            memory: &changes,
            ..answered("好的")
        };
        lay_over(&mut stored, read, &next, added);
        let memory = stored.unwrap().memory;
        assert_eq!(memory.keys().collect::<Vec<_>>(), ["card", "order"]);
        assert_eq!(memory["order"]["id"], "202611010001");
    }
}
