//! Conversations as people see them: the agent console's routes (read a session, take it
//! over, answer as a human, give it back), the tickets flows raised, and the customer's
//! satisfaction score.
//!
//! Taking over is the seed's emergency button: it applies at once, ends any flow in
//! progress, and from then on the customer's messages are queued for the agent
//! (`takeover.queued`) while the bot stays silent (`source: "human"`), until released.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::http::{Body, json_response, read_json};
use super::limits::check_message;
use super::{ApiError, State};

/// `GET /v1/sessions/{id}`.
pub(super) async fn get(state: &Arc<State>, id: &str) -> Result<Response<Body>, ApiError> {
    let key = id.to_string();
    let session = state
        .with_store(move |s| s.engine.session(&key))
        .await?
        .map_err(ApiError::from_engine)?;
    match session {
        Some(session) => Ok(json_response(StatusCode::OK, &session)),
        None => Err(ApiError::not_found(format!("no session `{id}`"))),
    }
}

/// The body of `POST /v1/sessions/{id}/takeover` (may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TakeoverBody {
    /// Who takes it over.
    #[serde(default)]
    agent: Option<String>,
}

/// `POST /v1/sessions/{id}/takeover`.
pub(super) async fn takeover(state: &Arc<State>, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: TakeoverBody = read_json(req, state.limits.max_body_bytes, true).await?;
    super::limits::check_session_id(id, &state.limits)?;
    let key = id.to_string();
    let session = state
        .with_store(move |s| s.engine.takeover(&key, body.agent, false))
        .await?
        .map_err(ApiError::from_engine)?;
    Ok(json_response(StatusCode::OK, &session))
}

/// The body of `POST /v1/sessions/{id}/reply`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyBody {
    /// What the agent says.
    message: String,
}

/// `POST /v1/sessions/{id}/reply`.
pub(super) async fn reply(state: &Arc<State>, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: ReplyBody = read_json(req, state.limits.max_body_bytes, false).await?;
    check_message(&body.message, "message", &state.limits)?;
    let key = id.to_string();
    let session = state
        .with_store(move |s| s.engine.agent_reply(&key, None, &body.message))
        .await?
        .map_err(ApiError::from_engine)?;
    Ok(json_response(StatusCode::OK, &session))
}

/// `POST /v1/sessions/{id}/release`.
pub(super) async fn release(state: &Arc<State>, id: &str) -> Result<Response<Body>, ApiError> {
    let key = id.to_string();
    let session = state
        .with_store(move |s| s.engine.release(&key, None, false))
        .await?
        .map_err(ApiError::from_engine)?;
    Ok(json_response(StatusCode::OK, &session))
}

/// The body of `POST /v1/sessions/{id}/feedback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    /// 1 to 5.
    score: u8,
    /// Optional words.
    #[serde(default)]
    comment: Option<String>,
    /// The conversation's `session_token`, from any of kefu's answers in it.
    #[serde(default)]
    session_token: String,
}

/// The longest feedback comment kept.
const MAX_COMMENT_CHARS: usize = 500;

/// `POST /v1/sessions/{id}/feedback`: the customer's 1-5 satisfaction score (满意度),
/// once per conversation, kept with it. Only the customer, who holds the conversation's
/// `session_token`, may give it.
pub(super) async fn feedback(state: &Arc<State>, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: FeedbackBody = read_json(req, state.limits.max_body_bytes, false).await?;
    if !(1..=5).contains(&body.score) {
        return Err(ApiError::invalid("`score` must be an integer from 1 to 5"));
    }
    if body
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS)
    {
        return Err(ApiError::invalid(format!(
            "`comment` is longer than {MAX_COMMENT_CHARS} characters"
        )));
    }
    state.check_rate(id)?;
    let key = id.to_string();
    let given = state
        .with_store(move |s| {
            s.engine
                .feedback(&key, &body.session_token, body.score, body.comment.as_deref())
        })
        .await?
        .map_err(ApiError::from_engine)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "session_id": id, "feedback": given }),
    ))
}

/// `GET /v1/tickets[?session_id=ID]`: tickets raised by flows on this node, oldest first.
pub(super) fn tickets(state: &Arc<State>, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let mut session = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("session_id", value)) => session = Some(super::http::decode_segment(value)?),
            _ => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{pair}`; only `session_id` is taken"
                )));
            }
        }
    }
    let tickets: Vec<_> = state
        .engine
        .tickets()
        .into_iter()
        .filter(|t| session.as_ref().is_none_or(|s| &t.session_id == s))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "tickets": tickets })))
}
