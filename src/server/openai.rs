//! `POST /v1/chat/completions`, compatible with OpenAI's Chat Completions API, so that
//! the official SDKs and chat UIs work against kefu unchanged.
//!
//! - The last `user` message is the customer's message; earlier messages are ignored,
//!   because kefu keeps the conversation itself (in the session).
//! - The session is `kefu_session` (an extension field), else `user`, else a fresh one
//!   per request (a one-shot conversation).
//! - `model` is accepted and echoed; kefu answers with its rules and its own model.
//! - The response has `choices[0].message.content`, `usage` (the model's real token
//!   counts; zeros for rule answers) and an extra `kefu` field with the full
//!   `TurnResponse` (source, rule, intent, handoff, trace...).
//! - With `stream: true`: `chat.completion.chunk` objects in `data:` lines (a first chunk
//!   with the role, content chunks, a last chunk with `finish_reason` and `kefu`), then
//!   `data: [DONE]`. With `stream_options.include_usage` a usage chunk comes before `[DONE]`.
//!   When a person took the conversation over while the model was answering, the
//!   content chunks stop and the answer is dropped: if content was streamed, the last
//!   chunk's `finish_reason` is `content_filter` (the SDKs' sign that the text shown must
//!   not stand) and its `kefu.dropped` is `true`; the client removes what it showed.
//!   Without streaming, `content` is empty and `kefu.dropped` is `true`.
//!
//! Unknown fields (`temperature`, `tools`, ...) are accepted and ignored, as SDKs send
//! many; a request without any user message is refused.
//!
//! The last user message's `image_url` parts are the customer's photos when they are
//! `data:` URLs (at most four, one image's worth of base64 in the body; see
//! [`super::images`]); a remote URL is refused with 400, kefu fetches nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::http::{Body, json_response, read_body};
use super::limits::{check_api_session_id, check_message};
use super::sse::{event_stream_response, sse_event};
use super::turns::for_requester;
use super::{ApiError, State};
use crate::TurnRequest;
use crate::engine::Usage;

/// The body of `POST /v1/chat/completions` (the fields kefu reads).
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub model: Option<String>,
    /// The chat; the last `user` message is the customer's.
    pub messages: Vec<Message>,
    /// Stream chunks.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options (`include_usage`).
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// The end user: kefu's session when `kefu_session` is absent.
    #[serde(default)]
    pub user: Option<String>,
    /// kefu extension: the session id.
    #[serde(default)]
    pub kefu_session: Option<String>,
    /// kefu extension: the customer's profile.
    #[serde(default)]
    pub kefu_user: Option<Map<String, Value>>,
    /// kefu extension: request context maps.
    #[serde(default)]
    pub kefu_context: Option<Map<String, Value>>,
    /// The customer's identity token, signed by the shop's backend (else the
    /// `X-Kefu-Identity` header; see [`super::identity`]).
    #[serde(default)]
    pub kefu_identity: Option<String>,
}

/// Streaming options.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a usage chunk before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant`, `tool`.
    pub role: String,
    /// Text, or a list of content parts.
    #[serde(default)]
    pub content: Option<Content>,
}

/// Message content: a string or parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts; the `text` ones are joined.
    Parts(Vec<Part>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct Part {
    /// `text`, `image_url`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
    /// The image of an `image_url` part: `{"url": "data:image/jpeg;base64,…"}` (or the URL
    /// as a string). Only `data:` URLs: kefu fetches no remote image.
    #[serde(default)]
    pub image_url: Option<ImageUrl>,
}

/// An `image_url` part's image.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ImageUrl {
    /// `{"url": "...", "detail": "auto"}`, as OpenAI documents it.
    Object {
        /// The URL.
        url: String,
    },
    /// The URL alone, as some clients send it.
    Url(String),
}

impl ImageUrl {
    fn url(&self) -> &str {
        match self {
            ImageUrl::Object { url } | ImageUrl::Url(url) => url,
        }
    }
}

impl Content {
    /// The images of `image_url` parts, as the intake takes them: `data:` URLs only.
    fn images(&self) -> Result<Vec<super::images::ImageInput>, ApiError> {
        let Content::Parts(parts) = self else {
            return Ok(Vec::new());
        };
        let mut images = Vec::new();
        for part in parts.iter().filter(|p| p.kind == "image_url") {
            let url = part
                .image_url
                .as_ref()
                .map(ImageUrl::url)
                .ok_or_else(|| ApiError::invalid("an `image_url` part has no `image_url.url`"))?;
            if !url.starts_with("data:") {
                return Err(ApiError::invalid(
                    "kefu does not fetch images from URLs: send the image inline as a `data:image/…;base64,…` URL, or upload it (POST /v1/images) and use /v1/chat's `images`",
                ));
            }
            images.push(super::images::ImageInput::Data { data: url.to_string() });
        }
        Ok(images)
    }

    fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[derive(Serialize)]
struct UsageJson {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl From<Usage> for UsageJson {
    fn from(u: Usage) -> Self {
        UsageJson {
            prompt_tokens: u.prompt,
            completion_tokens: u.completion,
            total_tokens: u.prompt + u.completion,
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn completion_id() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!(
        "chatcmpl-{:x}{:06x}",
        chrono::Utc::now().timestamp_millis(),
        n & 0xff_ffff
    )
}

/// Answers one completion request; the full trace for agents and editors (`caller.admin`), a customer's
/// view of the trace in the `kefu` field otherwise.
pub(super) async fn completions(
    state: &Arc<State>,
    req: Request<Incoming>,
    caller: Caller,
) -> Result<Response<Body>, ApiError> {
    let full_trace = caller.admin;
    let raw = read_body(req, state.chat_body_limit()).await?;
    let body: CompletionRequest = state.parse_chat_body(&raw)?;
    let content = body
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .and_then(|m| m.content.as_ref())
        .ok_or_else(|| ApiError::invalid("`messages` has no message with role `user`"))?;
    let (message, images) = (content.text(), content.images()?);
    // Earlier messages' images are not kefu's to read (it keeps the conversation itself),
    // but they are in the body: only the last user message's are room for images.
    let inline = images.iter().map(super::images::ImageInput::inline_len).sum();
    state.check_body_besides_images(raw.len(), inline)?;
    if images.is_empty() || !message.is_empty() {
        check_message(&message, "messages[-1].content", &state.limits)?;
    }
    let one_shot = body.kefu_session.is_none() && body.user.is_none();
    let session_id = body
        .kefu_session
        .clone()
        .or_else(|| body.user.clone())
        .unwrap_or_else(completion_id);
    check_api_session_id(&session_id, &state.limits)?;
    if !one_shot {
        state.check_rate(&session_id)?;
    }
    let images = state.intake_images(&session_id, images).await?;
    let model = body.model.clone().unwrap_or_else(|| "kefu".into());
    let mut request = TurnRequest {
        session_id,
        message,
        user: body.kefu_user,
        context: body.kefu_context,
        as_of: None,
        rules_version: None,
        channel: None,
        event: None,
        images,
    };
    state.vouch(&caller, body.kefu_identity.as_deref(), &mut request)?;
    let id = completion_id();
    let created = chrono::Utc::now().timestamp();
    if !body.stream.unwrap_or(false) {
        let response = state.run_turn(request).await?;
        let usage = response.usage;
        let out = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": response.reply },
                "finish_reason": "stop",
                "logprobs": null,
            }],
            "usage": UsageJson::from(usage),
            "kefu": for_requester(response.clone(), full_trace),
        });
        return Ok(json_response(StatusCode::OK, &out));
    }

    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    let (tx, response) = event_stream_response();
    let chunk = {
        let (id, model) = (id.clone(), model.clone());
        move |delta: Value, finish: Option<&str>| {
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }],
            })
        }
    };
    let first = chunk(json!({ "role": "assistant", "content": "" }), None);
    let _ = tx.send(sse_event(None, &first.to_string())).await;
    let streamed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (delta_tx, seen, delta_chunk) = (tx.clone(), Arc::clone(&streamed), chunk.clone());
    state.spawn_streaming_turn(
        request,
        move |text| {
            seen.store(true, Ordering::Relaxed);
            let data = delta_chunk(json!({ "content": text }), None);
            let _ = delta_tx.blocking_send(sse_event(None, &data.to_string()));
        },
        move |finished| {
            let response = match finished {
                Ok(response) => response,
                Err(error) => {
                    // OpenAI's own streams report a failure as a data line with `error`.
                    let _ = tx.blocking_send(sse_event(None, &error.body().to_string()));
                    let _ = tx.blocking_send(sse_event(None, "[DONE]"));
                    return;
                }
            };
            let streamed = streamed.load(Ordering::Relaxed);
            if !streamed && !response.reply.is_empty() {
                let data = chunk(json!({ "content": response.reply }), None);
                let _ = tx.blocking_send(sse_event(None, &data.to_string()));
            }
            // Content that went out before a person took over is withdrawn.
            let finish = if streamed && response.dropped {
                "content_filter"
            } else {
                "stop"
            };
            let mut last = chunk(json!({}), Some(finish));
            last["kefu"] = serde_json::to_value(for_requester(response.clone(), full_trace))
                .expect("a response always serializes");
            let _ = tx.blocking_send(sse_event(None, &last.to_string()));
            if include_usage {
                let mut usage_chunk = chunk(json!({}), None);
                usage_chunk["choices"] = json!([]);
                usage_chunk["usage"] = serde_json::to_value(UsageJson::from(response.usage)).expect("usage serializes");
                let _ = tx.blocking_send(sse_event(None, &usage_chunk.to_string()));
            }
            let _ = tx.blocking_send(sse_event(None, "[DONE]"));
        },
    )?;
    Ok(response)
}
