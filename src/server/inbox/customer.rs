//! The customer's live channel: agents' messages (and kefu's told outside a turn) pushed
//! to the customer's page, in order and exactly once across reconnects.
//!
//! `GET /v1/sessions/{id}/events` (SSE): `message` events with `id: SEQ` and data
//! `{seq, role, text, at}`, first the kept history after `Last-Event-ID` (or `?after=`),
//! then live; `state` events (`{state, place?}`) when the conversation changes hands.
//! `GET /v1/sessions/{id}/messages?after=SEQ` is the same as a poll: `{messages, state,
//! seq}`. `GET /v1/sessions/{id}/history` is the whole kept conversation, the customer's
//! own messages and kefu's answers too, for a page (the web widget) to draw it again after
//! a reload: `{messages: [{seq, role: customer|kefu|agent, text, at, images?}], state, resolved,
//! rated, seq}`, masked as stored (`images`: how many photos a customer's message carried). All three need the conversation's `session_token` (header `X-Kefu-Session-Token` or
//! `?token=`, compared in constant time); an unknown session and a wrong token are the
//! same 404, so that ids cannot be probed. At most [`STREAMS_PER_SESSION`] streams per
//! conversation; the connection caps bound the rest.
//!
//! **Exactly once.** The stream subscribes to the conversation's updates before it reads
//! the stored history, then sends only sequence numbers above the last it sent: a message
//! that lands meanwhile is in both and goes out once. A stream that falls behind reads the
//! stored history again from its last number.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{CustomerPush, Message};
use crate::dialogue::{ConvState, Role, Session};
use crate::engine::constant_time_eq;
use crate::engine::queue::Place;
use crate::server::http::{Body, decode_segment, json_response};
use crate::server::sse::{event_stream_response, sse_event};
use crate::server::{ApiError, State};

/// The most event streams one conversation may have open.
pub const STREAMS_PER_SESSION: usize = 4;
/// How often an idle stream sends a comment, so proxies keep it open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// A `message` event with its sequence number as the event id.
pub fn message_event(m: &Message) -> Bytes {
    let data = json!({"seq": m.seq, "role": m.role, "text": m.text, "at": m.at}).to_string();
    let mut out = format!("id: {}\n", m.seq).into_bytes();
    out.extend_from_slice(&sse_event(Some("message"), &data));
    Bytes::from(out)
}

/// The state as the customer's channel gives it.
fn state_json(state: ConvState, place: Option<Place>) -> serde_json::Value {
    match place {
        Some(place) => json!({
            "state": state,
            "place": {"position": place.position, "wait_minutes": place.wait_minutes},
        }),
        None => json!({ "state": state }),
    }
}

/// A `state` event.
pub fn state_event(state: ConvState, place: Option<Place>) -> Bytes {
    sse_event(Some("state"), &state_json(state, place).to_string())
}

/// The messages of `session` after `after` that the customer's channel carries: agents'
/// messages, and kefu's told outside a turn (`told`: those the inbox knows of; a bot
/// message that does not follow a customer message is one too, and so is one that opens
/// the conversation: a proactive message to a visitor who has not written yet).
pub fn customer_messages(session: &Session, told: &[u64], after: u64) -> Vec<Message> {
    let mut out = Vec::new();
    let mut previous: Option<(Role, u64)> = None;
    for entry in &session.history {
        let answers_customer = previous.is_some_and(|(role, seq)| role == Role::User && seq + 1 == entry.seq);
        let carried = match entry.role {
            Role::Agent => true,
            Role::Bot => {
                told.contains(&entry.seq)
                    || match previous {
                        Some(_) => !answers_customer,
                        // The first message of all answers nothing (an older history's
                        // first kept entry may be an answer whose question was dropped).
                        None => entry.seq == 1,
                    }
            }
            Role::User => false,
        };
        if carried && entry.seq > after {
            out.push(Message {
                seq: entry.seq,
                role: entry.role,
                text: Arc::clone(&entry.text),
                at: entry.at,
                told: entry.role == Role::Bot,
                images: Vec::new(),
            });
        }
        previous = Some((entry.role, entry.seq));
    }
    out
}

/// The request's `token`, `after` and other query parameters.
struct Asked {
    token: Option<String>,
    after: u64,
}

fn asked(req: &Request<Incoming>) -> Result<Asked, ApiError> {
    let mut token = req
        .headers()
        .get("x-kefu-session-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut after = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    for pair in req.uri().query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "token" => token = token.or(Some(decode_segment(value)?)),
            "after" => {
                let given = value
                    .parse::<u64>()
                    .map_err(|_| ApiError::invalid("`after` must be a message's sequence number (an integer)"))?;
                // `Last-Event-ID` (a reconnect) is newer than the page's `after`.
                after = Some(after.map_or(given, |a| a.max(given)));
            }
            // The web widget's site, read by the router (`server::channels::widget`).
            "site" => {}
            _ => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{name}`; `token`, `after` and `site` are taken"
                )));
            }
        }
    }
    Ok(Asked {
        token,
        after: after.unwrap_or(0),
    })
}

/// The stored conversation, when `token` is its token; one 404 for an unknown session and
/// a wrong token.
async fn vouched(state: &Arc<State>, id: &str, token: Option<&str>) -> Result<Session, ApiError> {
    crate::server::limits::check_session_id(id, &state.limits)?;
    let key = id.to_string();
    let session = state
        .with_store(move |s| s.engine.session(&key))
        .await?
        .map_err(ApiError::from_engine)?;
    match (session, token) {
        (Some(session), Some(token))
            if !session.token.is_empty() && constant_time_eq(session.token.as_bytes(), token.as_bytes()) =>
        {
            Ok(session)
        }
        _ => Err(ApiError::not_found(format!(
            "no session `{id}` with that token; send the `session_token` of kefu's answers"
        ))),
    }
}

/// `GET /v1/sessions/{id}/messages?after=SEQ`.
pub(in crate::server) async fn messages(
    state: &Arc<State>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let asked = asked(&req)?;
    let session = vouched(state, id, asked.token.as_deref()).await?;
    let messages = customer_messages(&session, &state.inbox.told(id), asked.after);
    let place = state.inbox.place(id);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "messages": messages,
            "state": session.state(),
            "place": place.map(|p| json!({"position": p.position, "wait_minutes": p.wait_minutes})),
            "seq": session.seq,
        }),
    ))
}

/// `GET /v1/sessions/{id}/history[?after=SEQ]`.
pub(in crate::server) async fn history(
    state: &Arc<State>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let asked = asked(&req)?;
    let session = vouched(state, id, asked.token.as_deref()).await?;
    let messages: Vec<serde_json::Value> = session
        .history
        .iter()
        .filter(|entry| entry.seq > asked.after)
        .map(|entry| {
            let role = match entry.role {
                Role::User => "customer",
                Role::Bot => "kefu",
                Role::Agent => "agent",
            };
            let mut message = json!({"seq": entry.seq, "role": role, "text": entry.text, "at": entry.at});
            // How many photos the customer sent with it: the page shows a placeholder
            // (the stored images are for agents, `GET /admin/images/{id}`).
            if !entry.images.is_empty() {
                message["images"] = json!(entry.images.len());
            }
            message
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "messages": messages,
            "state": session.state(),
            "resolved": session.resolved.is_some(),
            "rated": !session.feedback.is_empty(),
            "seq": session.seq,
        }),
    ))
}

/// `GET /v1/sessions/{id}/events` (SSE).
pub(in crate::server) async fn events(
    state: &Arc<State>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let asked = asked(&req)?;
    // Subscribed before the history is read: nothing that lands meanwhile is missed.
    let Some(mut rx) = state.inbox.watch(id, STREAMS_PER_SESSION) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!("this conversation has {STREAMS_PER_SESSION} event streams open already"),
        ));
    };
    let session = match vouched(state, id, asked.token.as_deref()).await {
        Ok(session) => session,
        Err(e) => {
            drop(rx);
            state.inbox.unwatch(id);
            return Err(e);
        }
    };
    let (tx, response) = event_stream_response();
    let state = Arc::clone(state);
    let id = id.to_string();
    tokio::spawn(async move {
        let mut last = asked.after;
        let backlog = customer_messages(&session, &state.inbox.told(&id), last);
        let place = state.inbox.place(&id);
        let pumped: Option<()> = async {
            for m in &backlog {
                tx.send(message_event(m)).await.ok()?;
                last = last.max(m.seq);
            }
            tx.send(state_event(session.state(), place)).await.ok()?;
            let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
            let mut drain = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    got = rx.recv() => match got {
                        Ok(CustomerPush::Message { seq, bytes }) => {
                            if seq > last {
                                tx.send(bytes).await.ok()?;
                                last = seq;
                            }
                        }
                        Ok(CustomerPush::State(bytes)) => tx.send(bytes).await.ok()?,
                        Err(RecvError::Lagged(_)) => {
                            // Behind: what was missed is in the stored history.
                            let key = id.clone();
                            let stored = state.with_store(move |s| s.engine.session(&key)).await.ok()?.ok()??;
                            for m in customer_messages(&stored, &state.inbox.told(&id), last) {
                                tx.send(message_event(&m)).await.ok()?;
                                last = m.seq;
                            }
                        }
                        Err(RecvError::Closed) => return None,
                    },
                    _ = heartbeat.tick() => tx.send(Bytes::from_static(b": ping\n\n")).await.ok()?,
                    _ = drain.tick() => if state.health.draining() { return None },
                    () = tx.closed() => return None,
                }
            }
        }
        .await;
        let _ = pumped;
        drop(rx);
        state.inbox.unwatch(&id);
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_carries_agents_and_told_messages_after_the_number_given() {
        let mut session = Session::new("s");
        session.remember(Role::User, "在吗", 1); // 1
        session.remember(Role::Bot, "您好", 1); // 2: a turn's answer
        session.remember(Role::User, "转人工", 2); // 3, queued
        session.remember(Role::Agent, "我是小王", 3); // 4
        session.remember(Role::Bot, "工单已送达", 4); // 5: told
        session.remember(Role::User, "好的", 5); // 6
        session.remember(Role::Bot, "不客气", 5); // 7: a turn's answer
        let seqs = |after| -> Vec<u64> { customer_messages(&session, &[], after).iter().map(|m| m.seq).collect() };
        assert_eq!(seqs(0), [4, 5]);
        assert_eq!(seqs(4), [5]);
        assert_eq!(seqs(5), Vec::<u64>::new());
        // Told right after a queued customer message: only the inbox knows.
        assert_eq!(
            customer_messages(&session, &[7], 5)
                .iter()
                .map(|m| m.seq)
                .collect::<Vec<_>>(),
            [7]
        );
    }

    #[test]
    fn a_conversation_kefu_opened_carries_its_first_message() {
        // A proactive message to a visitor who never wrote: kefu's first, seq 1.
        let mut session = Session::new("w");
        session.remember(Role::Bot, "您看的这款今天有优惠", 1); // 1
        session.remember(Role::User, "多少钱", 2); // 2
        session.remember(Role::Bot, "199 元", 2); // 3: a turn's answer
        let seqs: Vec<u64> = customer_messages(&session, &[], 0).iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [1]);
        // A kept history that begins with an answer (its question dropped) does not.
        let mut long = Session::new("l");
        long.remember(Role::User, "在吗", 1);
        long.remember(Role::Bot, "您好", 1);
        long.history.pop_front();
        assert!(customer_messages(&long, &[], 0).is_empty());
    }

    #[test]
    fn message_events_carry_their_number_as_id() {
        let m = Message {
            seq: 9,
            role: Role::Agent,
            text: Arc::from("好的"),
            at: 5,
            told: false,
            images: Vec::new(),
        };
        let text = String::from_utf8(message_event(&m).to_vec()).unwrap();
        assert!(text.starts_with("id: 9\nevent: message\ndata: "), "{text}");
    }
}
