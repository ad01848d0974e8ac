//! `POST /v1/channels/{name}/messages`: a webhook channel's platform posts its customers'
//! messages here, signed with the channel's secret; kefu answers `202 accepted` at once,
//! runs the turn (`channel` = the channel's name, session `ch:{name}:-:{conversation_id}`)
//! and posts the reply to the channel's `reply_url` through the job queue (retried,
//! signed, `Idempotency-Key`). `?wait=true` answers with the reply inline instead.
//!
//! A message may carry photos, `images: [{"data": "<base64>"}]` (at most
//! [`MAX_IMAGES`], with `text` or alone; the body may be larger than other bodies by one
//! photo's base64, as on `/v1/chat`), taken in like the JSON API's (type by the bytes,
//! metadata stripped, stored, described) before the message id is taken: a bad image is
//! its 4xx (`unsupported_image`, `bad_image`, `image_too_large`...) and the platform may
//! send the message again without it.
//!
//! Refusals, all JSON: unknown channel 404 (`unknown_channel`), a missing, wrong or
//! stale signature 401 (`bad_signature`, `stale_timestamp`), a bad body 400, a body over
//! the limit 413, a conversation over its rate 429, every turn slot taken 503
//! (`overloaded`, `Retry-After`). A message id already taken (the
//! platform retried) answers `200 {"status":"duplicate"}` and runs no second turn.
//! docs/channels.md ("Webhook channel") has the shapes and signing code.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::http::{Body, json_response, read_body};
use super::super::images::ImageInput;
use super::super::limits::check_message;
use super::super::{ApiError, Limits, State};
use crate::channels::webhook::{AgentSender, Poster, ReplyHandoff, ReplyMeta, ReplySender, SignatureError};
use crate::channels::{ChannelsConfig, Outbound, Outgoing, SessionKey};
use crate::safety::logsafe::LogSafe;
use crate::{TurnRequest, TurnResponse};

/// The longest `message_id` and `user_id` taken.
const MAX_ID_CHARS: usize = 128;
/// The most photos one message carries (as on `/v1/chat`).
pub const MAX_IMAGES: usize = super::super::images::MAX_IMAGES_PER_MESSAGE;

/// One poster per webhook channel, each registered (as [`AgentSender`]) for what reaches
/// its customers outside a turn.
pub(super) fn register(config: &ChannelsConfig, outbound: &mut Outbound) -> HashMap<String, Arc<Poster>> {
    let mut posters = HashMap::new();
    for channel in &config.webhook {
        let poster = Arc::new(Poster::new(channel.clone(), super::SEND_TIMEOUT));
        outbound.register(&channel.name, Arc::new(AgentSender(Arc::clone(&poster))));
        posters.insert(channel.name.clone(), poster);
    }
    posters
}

/// A platform's message, as posted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Inbound {
    /// The platform's id of the message: idempotency (a repeat runs no second turn).
    message_id: String,
    /// The platform's conversation: kefu's session is `ch:{name}:-:{conversation_id}`.
    conversation_id: String,
    /// The platform's user, echoed in the reply; `user.id` when `user` has none.
    #[serde(default)]
    user_id: Option<String>,
    /// What the customer wrote; exactly one of `text` (or `images`) and `event`.
    #[serde(default)]
    text: Option<String>,
    /// Photos the message carries (`[{"data": "<base64>"}]`), with `text` or alone.
    #[serde(default)]
    images: Vec<ImageInput>,
    /// A platform event (`subscribe`, `enter_session`...) for the rules' `on event`.
    #[serde(default)]
    event: Option<String>,
    /// The customer's profile, as the rules read `user`.
    #[serde(default)]
    user: Option<Map<String, Value>>,
    /// Request context maps (`order`, `product`...), as on `/v1/chat`.
    #[serde(default)]
    context: Option<Map<String, Value>>,
    /// When the customer sent it: checked as RFC 3339, not used (the turn answers now).
    #[serde(default)]
    #[allow(dead_code)]
    sent_at: Option<DateTime<FixedOffset>>,
}

/// Handles one posted message (see the module's documentation).
pub(in crate::server) async fn messages(
    state: &Arc<State>,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(poster) = state.registered.webhooks.get(name).cloned() else {
        // No count: the label would be whatever a caller makes up.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_channel",
            format!("no webhook channel `{}` in the channels file", LogSafe(name)),
        ));
    };
    let refused = |error: ApiError| {
        state.metrics.channel_message(name, "refused");
        error
    };
    let wait = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "wait=true" || p == "wait=1"));
    let header = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (timestamp, signature) = (header("x-kefu-timestamp"), header("x-kefu-signature"));
    // Room for one photo's base64 as on `/v1/chat`; the rest of the body within the limit
    // of any body (checked once it is read).
    let body = read_body(req, state.chat_body_limit()).await.map_err(refused)?;
    crate::channels::webhook::verify(
        poster.channel().secret.expose(),
        timestamp.as_deref(),
        signature.as_deref(),
        &body,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|error| {
        let kind = if error == SignatureError::Stale {
            "stale_timestamp"
        } else {
            "bad_signature"
        };
        refused(ApiError::new(StatusCode::UNAUTHORIZED, kind, error.to_string()))
    })?;
    let mut inbound: Inbound = serde_json::from_slice(&body).map_err(|e| refused(ApiError::from_json(&e)))?;
    let inline = inbound.images.iter().map(ImageInput::inline_len).sum();
    state.check_body_besides_images(body.len(), inline).map_err(refused)?;
    drop(body);
    let (mut request, key) = turn_request(name, &inbound, &state.limits).map_err(refused)?;
    state.check_rate(&request.session_id).map_err(refused)?;
    if state.turns.available_permits() == 0 {
        // Refused before the id is taken, so that the platform's retry is answered: a
        // 202 now would be a turn refused later, and a reply never sent.
        return Err(refused(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many conversations in flight; try again shortly",
            )
            .with_retry_after(1),
        ));
    }

    // Before the id is taken: a refused photo is the platform's 4xx, and a message sent
    // again without it is a new one.
    let images = std::mem::take(&mut inbound.images);
    request.images = state
        .intake_images(&request.session_id, images)
        .await
        .map_err(refused)?;
    if !state.first_seen(format!("webhook:{name}:{}", inbound.message_id)).await {
        state.metrics.channel_message(name, "duplicate");
        return Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "duplicate"}),
        ));
    }
    state.metrics.channel_message(name, "accepted");
    let meta = ReplyMeta {
        in_reply_to: Some(inbound.message_id.clone()),
        user_id: inbound.user_id.clone(),
        ..ReplyMeta::default()
    };
    let reply_id = format!("{}:reply", inbound.message_id);
    if wait {
        let response = state.run_turn(request).await?;
        let (message, meta) = reply(key, reply_id, meta, response);
        let posted = crate::channels::webhook::Posted::of(&message, &meta);
        let mut body = serde_json::to_value(&posted).expect("a reply always serializes");
        body["status"] = Value::from("answered");
        return Ok(json_response(StatusCode::OK, &body));
    }
    let state = Arc::clone(state);
    let name = name.to_string();
    tokio::spawn(async move {
        let session = request.session_id.clone();
        match state.run_turn(request).await {
            Ok(response) => {
                let (message, meta) = reply(key, reply_id, meta, response);
                if message.text.is_empty() {
                    // Silent (an event nothing answers) or dropped (an agent has it now).
                    return;
                }
                let sender = state.outbound.wrap(&name, Arc::new(ReplySender { poster, meta }));
                // A refusal (queue full) is logged and counted by `deliver`.
                let _ = crate::channels::deliver(&state.jobs, sender, message);
            }
            Err(error) => {
                // The platform got 202: what the customer sees is the error's own reply
                // when it has one (the store unreachable), else nothing.
                tracing::warn!(channel = %name, session = %LogSafe(&session), error = %error, "webhook message not answered");
                let text = error
                    .details
                    .as_ref()
                    .and_then(|d| d.get("reply"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if let Some(text) = text {
                    let meta = ReplyMeta {
                        source: "error".into(),
                        ..meta
                    };
                    let message = Outgoing {
                        key,
                        text,
                        id: reply_id,
                        choices: Vec::new(),
                    };
                    let sender = state.outbound.wrap(&name, Arc::new(ReplySender { poster, meta }));
                    let _ = crate::channels::deliver(&state.jobs, sender, message);
                }
            }
        }
    });
    Ok(json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({"status": "accepted"}),
    ))
}

/// The turn a message asks for, checked, and its conversation's key.
fn turn_request(name: &str, inbound: &Inbound, limits: &Limits) -> Result<(TurnRequest, SessionKey), ApiError> {
    let id_ok = |id: &str| !id.is_empty() && id.chars().count() <= MAX_ID_CHARS && !id.chars().any(char::is_control);
    if !id_ok(&inbound.message_id) {
        return Err(ApiError::invalid(format!(
            "`message_id` must be 1-{MAX_ID_CHARS} characters, no control characters"
        )));
    }
    if let Some(user_id) = &inbound.user_id
        && !id_ok(user_id)
    {
        return Err(ApiError::invalid(format!(
            "`user_id` must be 1-{MAX_ID_CHARS} characters, no control characters"
        )));
    }
    let key = SessionKey::new(name, "-", &inbound.conversation_id)
        .map_err(|e| ApiError::invalid(format!("`conversation_id`: {e}")))?;
    if inbound.images.len() > MAX_IMAGES {
        return Err(ApiError::invalid(format!(
            "a message carries at most {MAX_IMAGES} `images`"
        )));
    }
    if inbound.images.iter().any(|i| matches!(i, ImageInput::Id { .. })) {
        // Uploads belong to API and widget conversations; a channel's are its own.
        return Err(ApiError::invalid(
            "a webhook message's `images` carry their bytes: `{\"data\": \"<base64>\"}`",
        ));
    }
    let photos = !inbound.images.is_empty();
    let (message, event) = match (&inbound.text, &inbound.event) {
        (Some(text), None) if photos && text.trim().is_empty() => (String::new(), None),
        (Some(text), None) => {
            check_message(text, "text", limits)?;
            (text.clone(), None)
        }
        (None, None) if photos => (String::new(), None),
        (None, Some(event)) if !photos => {
            let event = event.to_ascii_lowercase();
            let ok = !event.is_empty()
                && event.len() <= 32
                && event
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(ApiError::invalid(
                    "`event` must be 1-32 letters, digits or `_` (`subscribe`, `enter_session`...)",
                ));
            }
            (String::new(), Some(event))
        }
        _ => {
            return Err(ApiError::invalid(
                "a message has exactly one of what the customer sent (`text`, `images` or both) and `event`",
            ));
        }
    };
    let mut user = inbound.user.clone();
    if let Some(user_id) = &inbound.user_id {
        // The rules read the platform's user as `user.id` unless the profile names one.
        user.get_or_insert_with(Map::new)
            .entry("id")
            .or_insert_with(|| Value::from(user_id.clone()));
    }
    let request = TurnRequest {
        session_id: key.session_id(),
        message,
        user,
        context: inbound.context.clone(),
        as_of: None,
        rules_version: None,
        channel: Some(name.to_string()),
        event,
        images: Vec::new(),
    };
    Ok((request, key))
}

/// The message a turn's response makes, and what it says besides its text.
fn reply(key: SessionKey, id: String, meta: ReplyMeta, response: TurnResponse) -> (Outgoing, ReplyMeta) {
    let meta = ReplyMeta {
        source: response.source.name().to_string(),
        handoff: response.handoff.map(|h| ReplyHandoff {
            reason: h.reason,
            group: h.group,
            place: h.place,
        }),
        ..meta
    };
    let message = Outgoing {
        key,
        text: response.reply,
        id,
        choices: response.choices,
    };
    (message, meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(json: serde_json::Value) -> Result<Inbound, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn a_message_makes_a_turn_on_its_channel() {
        let limits = Limits::default();
        let message = inbound(serde_json::json!({
            "message_id": "m1", "conversation_id": "c-1", "user_id": "u7", "text": "有什么优惠",
            "context": {"product": {"id": "SKU1"}}, "sent_at": "2026-12-06T10:00:00+08:00"
        }))
        .unwrap();
        let (request, key) = turn_request("taobao", &message, &limits).unwrap();
        assert_eq!(request.channel.as_deref(), Some("taobao"));
        assert_eq!(request.session_id, "ch:taobao:-:c-1");
        assert_eq!(key, SessionKey::new("taobao", "-", "c-1").unwrap());
        assert_eq!(request.message, "有什么优惠");
        assert_eq!(request.event, None);
        assert_eq!(request.user.unwrap()["id"], "u7", "user_id reads as user.id");
        assert_eq!(request.context.unwrap()["product"]["id"], "SKU1");

        let event =
            inbound(serde_json::json!({"message_id": "m2", "conversation_id": "c-1", "event": "Subscribe"})).unwrap();
        let (request, _) = turn_request("taobao", &event, &limits).unwrap();
        assert_eq!(
            (request.message.as_str(), request.event.as_deref()),
            ("", Some("subscribe"))
        );

        // Photos, alone or with text; the intake fills the turn's `images` afterwards.
        for json in [
            serde_json::json!({"message_id": "m3", "conversation_id": "c-1", "images": [{"data": "/9j/"}]}),
            serde_json::json!({"message_id": "m4", "conversation_id": "c-1", "text": "", "images": [{"data": "/9j/"}]}),
        ] {
            let photo = inbound(json).unwrap();
            assert_eq!(photo.images.len(), 1);
            let (request, _) = turn_request("taobao", &photo, &limits).unwrap();
            assert_eq!((request.message.as_str(), request.event), ("", None));
        }
        let with_text = inbound(serde_json::json!({
            "message_id": "m5", "conversation_id": "c-1", "text": "盒子破了", "images": [{"data": "/9j/"}, {"data": "iVBO"}]
        }))
        .unwrap();
        let (request, _) = turn_request("taobao", &with_text, &limits).unwrap();
        assert_eq!(request.message, "盒子破了");
    }

    #[test]
    fn bad_messages_are_refused() {
        let limits = Limits::default();
        let refused = |json: serde_json::Value| {
            let message = inbound(json).unwrap();
            turn_request("shop", &message, &limits).unwrap_err().message
        };
        assert!(refused(serde_json::json!({"message_id": "m", "conversation_id": "c"})).contains("exactly one"));
        assert!(
            refused(serde_json::json!({"message_id": "m", "conversation_id": "c", "text": "x", "event": "subscribe"}))
                .contains("exactly one")
        );
        assert!(
            refused(serde_json::json!({"message_id": "m", "conversation_id": "a:b", "text": "x"}))
                .contains("conversation_id")
        );
        assert!(
            refused(serde_json::json!({"message_id": "", "conversation_id": "c", "text": "x"})).contains("message_id")
        );
        assert!(
            refused(serde_json::json!({"message_id": "m", "conversation_id": "c", "event": "有"})).contains("event")
        );
        assert!(
            refused(serde_json::json!({"message_id": "m", "conversation_id": "c", "text": "  "})).contains("empty")
        );
        let photo = serde_json::json!({"data": "/9j/"});
        assert!(
            refused(serde_json::json!({"message_id": "m", "conversation_id": "c", "images": vec![photo.clone(); 5]}))
                .contains("at most 4")
        );
        assert!(
            refused(
                serde_json::json!({"message_id": "m", "conversation_id": "c", "event": "subscribe", "images": [photo.clone()]})
            )
            .contains("exactly one")
        );
        assert!(
            inbound(serde_json::json!({"message_id": "m", "conversation_id": "c", "images": [{"url": "http://x"}]}))
                .is_err()
        );
        assert!(
            refused(serde_json::json!({"message_id": "m", "conversation_id": "c", "images": [{"id": "img_0"}]}))
                .contains("carry their bytes")
        );
        let long = "长".repeat(limits.max_message_chars + 1);
        assert!(
            refused(serde_json::json!({"message_id": "m", "conversation_id": "c", "text": long}))
                .contains("characters")
        );
        assert!(
            inbound(serde_json::json!({"message_id": "m", "conversation_id": "c", "text": "x", "extra": 1})).is_err()
        );
        assert!(
            inbound(
                serde_json::json!({"message_id": "m", "conversation_id": "c", "text": "x", "sent_at": "yesterday"})
            )
            .is_err()
        );
    }
}
