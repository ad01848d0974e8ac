//! The inbox's routes (permission `agent`): the list, its live stream, one conversation,
//! the suggested reply, the canned replies; and which agents are online, with the grace
//! time after an agent's last stream closes.
//!
//! **Online and the grace time.** A signed-in agent is online while at least one of their
//! `GET /admin/inbox/stream` streams is open on this node. When the last one closes a
//! timer starts (`--agent-grace`, 120 s by default); if none has opened again when it
//! fires, every conversation they hold is put back in its queue (`requeue`): it shows
//! under waiting again, and what the customer wrote meanwhile is in its queued messages
//! and history.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{Filter, Inbox, SNAPSHOT_LIMIT};
use crate::dialogue::ConvState;
use crate::server::auth::signed_in;
use crate::server::http::{Body, decode_segment, json_response};
use crate::server::sse::{event_stream_response, sse_event};
use crate::server::{ApiError, State};

/// The default of `limit` in the list route.
pub const LIST_LIMIT: usize = 200;

/// An agent's open inbox streams on this node and their grace timer.
#[derive(Debug, Default)]
pub struct Presence {
    /// Streams open now.
    pub streams: usize,
    /// Bumped at every arrival and departure: a grace timer acts only if nothing
    /// happened since it started.
    epoch: u64,
}

/// The query of the list route.
fn filter_of(query: Option<&str>, me: Option<&str>) -> Result<Filter, ApiError> {
    let mut filter = Filter {
        limit: LIST_LIMIT,
        ..Filter::default()
    };
    let on = |value: &str| matches!(value, "1" | "true" | "yes");
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode_segment(value)?;
        match name {
            "state" => {
                for state in value.split(',').filter(|s| !s.is_empty()) {
                    let parsed = ConvState::ALL.into_iter().find(|s| s.name() == state).ok_or_else(|| {
                        ApiError::invalid(format!("unknown state `{state}`; one of waiting, agent, bot, resolved"))
                    })?;
                    filter.states.push(parsed);
                }
            }
            "group" => filter.group = Some(value).filter(|g| !g.is_empty()),
            "mine" if on(&value) => {
                filter.agent = Some(me.map(str::to_string).ok_or_else(|| {
                    ApiError::invalid("`mine` needs a console user signed in (the token and loopback have no name)")
                })?);
            }
            "angry" => filter.angry = on(&value),
            "vip" => filter.vip = on(&value),
            "mine" => {}
            "q" => filter.query = Some(value).filter(|q| !q.trim().is_empty()),
            "limit" => {
                filter.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=SNAPSHOT_LIMIT).contains(n))
                    .ok_or_else(|| ApiError::invalid(format!("`limit` must be 1 to {SNAPSHOT_LIMIT}")))?;
            }
            _ => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{name}`; state, group, mine, angry, vip, q and limit are taken"
                )));
            }
        }
    }
    Ok(filter)
}

/// `GET /admin/inbox`.
pub(in crate::server) fn list(state: &Arc<State>, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let me = signed_in(req);
    let filter = filter_of(req.uri().query(), me.as_deref())?;
    let listing = state
        .inbox
        .list(&filter, me.as_deref())
        .with_queues_of(&state.engine.rules(), chrono::Utc::now());
    Ok(json_response(StatusCode::OK, &listing))
}

/// The `snapshot` event: the list of the most recent conversations.
fn snapshot(state: &State, me: Option<&str>) -> Bytes {
    let filter = Filter {
        limit: SNAPSHOT_LIMIT,
        ..Filter::default()
    };
    let listing = state
        .inbox
        .list(&filter, me)
        .with_queues_of(&state.engine.rules(), chrono::Utc::now());
    sse_event(
        Some("snapshot"),
        &serde_json::to_string(&listing).unwrap_or_else(|_| "{}".into()),
    )
}

/// `GET /admin/inbox/stream` (SSE): `snapshot`, then every update; a heartbeat comment
/// every 15 s; a fresh snapshot when the stream fell behind.
pub(in crate::server) fn stream(state: &Arc<State>, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let me = signed_in(req);
    let (tx, response) = event_stream_response();
    // Subscribed before the snapshot is taken: nothing is missed between.
    let mut rx = state.inbox.subscribe();
    let first = snapshot(state, me.as_deref());
    if let Some(name) = &me {
        arrive(&state.inbox, name);
    }
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let pumped: Option<()> = async {
            tx.send(first).await.ok()?;
            let heartbeat = super::customer::HEARTBEAT;
            let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
            let mut drain = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    got = rx.recv() => match got {
                        Ok(pushed) => {
                            tx.send(pushed.bytes.clone()).await.ok()?;
                            state.metrics.inbox_pushed(pushed.at.elapsed());
                        }
                        Err(RecvError::Lagged(_)) => {
                            // Behind by more than the buffer: a fresh snapshot replaces
                            // what was missed.
                            rx = rx.resubscribe();
                            tx.send(snapshot(&state, me.as_deref())).await.ok()?;
                        }
                        Err(RecvError::Closed) => return None,
                    },
                    _ = beat.tick() => tx.send(Bytes::from_static(b": ping\n\n")).await.ok()?,
                    _ = drain.tick() => if state.health.draining() { return None },
                    () = tx.closed() => return None,
                }
            }
        }
        .await;
        let _ = pumped;
        if let Some(name) = me {
            leave(&state, &name);
        }
    });
    Ok(response)
}

/// An agent's stream opened.
fn arrive(inbox: &Inbox, name: &str) {
    let mut presence = inbox.presence.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let p = presence.entry(name.to_string()).or_default();
    p.streams += 1;
    p.epoch += 1;
}

/// An agent's stream closed: after their last, the grace timer.
fn leave(state: &Arc<State>, name: &str) {
    let epoch = {
        let mut presence = state
            .inbox
            .presence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(p) = presence.get_mut(name) else { return };
        p.streams = p.streams.saturating_sub(1);
        p.epoch += 1;
        if p.streams > 0 {
            return;
        }
        p.epoch
    };
    let state = Arc::clone(state);
    let name = name.to_string();
    let grace = state.agent_grace;
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        {
            let mut presence = state
                .inbox
                .presence
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match presence.get(&name) {
                Some(p) if p.streams == 0 && p.epoch == epoch => {
                    presence.remove(&name);
                }
                _ => return,
            }
        }
        let held = state.inbox.held_by(&name);
        if held.is_empty() {
            return;
        }
        tracing::info!(agent = %crate::safety::logsafe::LogSafe(&name), conversations = held.len(), "agent gone past the grace time; their conversations wait again");
        let _ = state
            .with_store(move |s| {
                for id in held {
                    if let Err(error) = s.engine.requeue(&id, Some(&name)) {
                        tracing::warn!(session = %crate::safety::logsafe::LogSafe(&id), ?error, "conversation not requeued");
                    }
                }
            })
            .await;
    });
}

/// `GET /admin/inbox/{id}`: from the hub, with what only the stored session has (flow,
/// slots, takeover, resolution, feedback); from the session alone when the hub does not
/// have the conversation.
pub(in crate::server) async fn detail(state: &Arc<State>, id: &str) -> Result<Response<Body>, ApiError> {
    let key = id.to_string();
    let session = state
        .with_store(move |s| s.engine.session(&key))
        .await?
        .map_err(ApiError::from_engine)?;
    let hub = state.inbox.detail(id);
    let detail = match (&hub, &session) {
        (Some(detail), _) => detail.clone(),
        (None, Some(session)) => super::detail_from_session(session),
        (None, None) => return Err(ApiError::not_found(format!("no conversation `{id}`"))),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "summary": detail.summary,
            "messages": detail.messages,
            "turns": detail.turns,
            "notes": session.as_ref().map_or(detail.notes.clone(), |s| s.notes.clone()),
            "profile": detail.profile,
            "context": detail.context,
            "flow": session.as_ref().and_then(|s| s.flow.as_ref()),
            "slots": session.as_ref().map(|s| &s.slots),
            "takeover": session.as_ref().and_then(|s| s.takeover.as_ref()),
            "resolved": session.as_ref().and_then(|s| s.resolved.as_ref()),
            "feedback": session.as_ref().and_then(|s| s.feedback.first()),
        }),
    ))
}

/// `GET /admin/inbox/{id}/suggest`: what the rules would answer now, on the blocking pool.
pub(in crate::server) async fn suggest(state: &Arc<State>, id: &str) -> Result<Response<Body>, ApiError> {
    let (profile, context) = state
        .inbox
        .detail(id)
        .map(|d| (d.profile, d.context))
        .unwrap_or_default();
    let key = id.to_string();
    let engine_state = Arc::clone(state);
    let suggestion = tokio::task::spawn_blocking(move || engine_state.engine.suggest_with(&key, profile, context))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from_engine)?;
    Ok(json_response(StatusCode::OK, &suggestion))
}

/// `GET /admin/canned?q=&group=&limit=`: the serving rule set's canned replies, searched
/// (`kb::canned`: all of them, in file order, for an empty query; at most `limit`, 20 by
/// default, 50 at most).
pub(in crate::server) fn canned(state: &State, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let (mut q, mut group, mut limit) = (String::new(), None, 20usize);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode_segment(&value.replace('+', " "))?;
        match name {
            "q" => q = value,
            "group" => group = Some(value).filter(|g| !g.is_empty()),
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=50).contains(n))
                    .ok_or_else(|| ApiError::invalid("`limit` is a number from 1 to 50"))?
            }
            _ => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{name}`; q, group and limit are taken"
                )));
            }
        }
    }
    let rules = state.engine.rules();
    let found = rules.kb.search_canned(q.trim(), group.as_deref(), limit);
    Ok(json_response(StatusCode::OK, &json!({ "canned": found })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_query_is_read_and_bad_values_refused() {
        let f = filter_of(
            Some("state=waiting,agent&group=%E5%94%AE%E5%90%8E&angry=1&q=abc&limit=5"),
            None,
        )
        .unwrap();
        assert_eq!(f.states, [ConvState::Waiting, ConvState::Agent]);
        assert_eq!(f.group.as_deref(), Some("售后"));
        assert!(f.angry && !f.vip);
        assert_eq!(f.limit, 5);
        assert_eq!(
            filter_of(Some("mine=1"), Some("小王")).unwrap().agent.as_deref(),
            Some("小王")
        );
        assert!(filter_of(Some("mine=1"), None).is_err());
        assert!(filter_of(Some("state=nope"), None).is_err());
        assert!(filter_of(Some("limit=0"), None).is_err());
        assert!(filter_of(Some("limit=5000"), None).is_err());
        assert!(filter_of(Some("colour=red"), None).is_err());
    }
}
