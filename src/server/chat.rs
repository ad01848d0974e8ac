//! `POST /v1/chat`: one customer message in, kefu's answer out, as JSON or as
//! server-sent events.
//!
//! With `"stream": true` the answer comes as `delta` events (`{"text": ...}`) while the
//! model generates, then one `done` event whose data is the whole `TurnResponse`. A rule
//! answer has no generation, so it arrives as a single `delta` followed by `done`. The
//! `done` event's `reply` is authoritative: a model answer that is judged unfit after it
//! was streamed is replaced there by the fallback. When a person took the conversation
//! over while the model was answering, the generation stops at once (no more `delta`s)
//! and the answer is dropped (`done` has `dropped: true` and an empty `reply`); if
//! `delta`s were sent, a `retract` event (`{}`) comes first, telling the client to remove
//! the partial text it showed. A turn that fails after the stream
//! began (the session store unreachable) ends with an `error` event, the body a
//! non-streamed request would get (`store_unavailable`, see [`ApiError::store_unavailable`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, FixedOffset};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::auth::Caller;
use super::http::{Body, json_response, read_body};
use super::limits::{check_api_session_id, check_message, check_rules_version};
use super::sse::{event_stream_response, sse_event};
use super::turns::for_requester;
use super::{ApiError, State};
use crate::TurnRequest;

/// The body of `POST /v1/chat`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    /// The conversation.
    pub session_id: String,
    /// What the customer wrote (may be empty when `images` has some).
    #[serde(default)]
    pub message: String,
    /// Photos with the message (at most four): `{"data": "<base64>"}` or `{"id": "img_…"}`
    /// from `POST /v1/images` (see [`super::images`]).
    #[serde(default)]
    pub images: Vec<super::images::ImageInput>,
    /// The customer's profile.
    #[serde(default)]
    pub user: Option<Map<String, Value>>,
    /// Request context maps (`order`, `cart`, `product`, ...).
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
    /// Answer as of this time (replays).
    #[serde(default)]
    pub as_of: Option<DateTime<FixedOffset>>,
    /// Answer with this rules version (a hash), for testing it: admin callers only.
    #[serde(default)]
    pub rules_version: Option<String>,
    /// Answer with server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// The customer's identity token, signed by the shop's backend (else the
    /// `X-Kefu-Identity` header; see [`super::identity`]).
    #[serde(default)]
    pub identity: Option<String>,
}

/// Answers one message; the full trace for agents and editors (`caller.admin`), a
/// customer's view of it otherwise ([`crate::engine::TraceStep::for_customer`]).
pub(super) async fn chat(
    state: &Arc<State>,
    req: Request<Incoming>,
    caller: Caller,
) -> Result<Response<Body>, ApiError> {
    // A web widget site's page (admitted by `channels::widget`): channel `web`, and the
    // customer's trace, whoever the browser is.
    let from_site = req.extensions().get::<super::channels::widget::FromSite>().is_some();
    let full_trace = caller.admin && !from_site;
    // Room for one inline image's base64; the rest of the body has the limit of any body.
    let raw = read_body(req, state.chat_body_limit()).await?;
    let body: ChatBody = state.parse_chat_body(&raw)?;
    let inline = body.images.iter().map(super::images::ImageInput::inline_len).sum();
    state.check_body_besides_images(raw.len(), inline)?;
    check_api_session_id(&body.session_id, &state.limits)?;
    if body.images.is_empty() || !body.message.is_empty() {
        check_message(&body.message, "message", &state.limits)?;
    }
    check_rules_version(body.rules_version.as_deref())?;
    state.check_rate(&body.session_id)?;
    let images = state.intake_images(&body.session_id, body.images).await?;
    let mut request = TurnRequest {
        session_id: body.session_id,
        message: body.message,
        user: body.user,
        context: body.context,
        as_of: body.as_of,
        rules_version: body.rules_version,
        channel: from_site.then(|| crate::channels::WEB.to_string()),
        event: None,
        images,
    };
    state.vouch(&caller, body.identity.as_deref(), &mut request)?;
    if let Some(version) = &request.rules_version {
        super::versions::offer_pinned(state, version).await?;
    }
    if !body.stream {
        let response = state.run_turn(request).await?;
        return Ok(json_response(StatusCode::OK, &for_requester(response, full_trace)));
    }
    let (tx, response) = event_stream_response();
    let streamed = Arc::new(AtomicBool::new(false));
    let (delta_tx, seen) = (tx.clone(), Arc::clone(&streamed));
    state.spawn_streaming_turn(
        request,
        move |text| {
            seen.store(true, Ordering::Relaxed);
            let data = serde_json::json!({ "text": text }).to_string();
            // A client that went away stops reading; the turn still finishes and is saved.
            let _ = delta_tx.blocking_send(sse_event(Some("delta"), &data));
        },
        move |finished| {
            let response = match finished {
                Ok(response) => response,
                Err(error) => {
                    // `store_unavailable` (with the customer's text in `reply`) or
                    // `internal`: any deltas sent are withdrawn with the turn.
                    let _ = tx.blocking_send(sse_event(Some("error"), &error.body().to_string()));
                    return;
                }
            };
            let streamed = streamed.load(Ordering::Relaxed);
            if !streamed && !response.reply.is_empty() {
                let data = serde_json::json!({ "text": response.reply }).to_string();
                let _ = tx.blocking_send(sse_event(Some("delta"), &data));
            }
            if streamed && response.dropped {
                // The model's words went out before a person took over: withdrawn.
                let _ = tx.blocking_send(sse_event(Some("retract"), "{}"));
            }
            let done = serde_json::to_string(&for_requester(response.clone(), full_trace))
                .expect("a response always serializes");
            let _ = tx.blocking_send(sse_event(Some("done"), &done));
        },
    )?;
    Ok(response)
}
