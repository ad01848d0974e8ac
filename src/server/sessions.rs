//! Conversations as people see them: the agent console's routes (read a session, take it
//! over, answer as a human, give it back, write a note, resolve it), the tickets flows
//! raised, and the customer's satisfaction score. Agents act under the signed-in user's
//! name; the token's caller may name one. Another agent's conversation is taken only
//! with `force` (409 `held_by_other` otherwise). Each act is one engine call
//! ([`crate::Engine`]'s takeover, agent reply, release, note and resolve).
//!
//! Taking over is the seed's emergency button: it applies at once, pauses any flow in
//! progress, and from then on the customer's messages are queued for the agent
//! (`takeover.queued`) while the bot stays silent (`source: "human"`), until released (a release resumes the paused flow or drops it, as the agent chooses).

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

/// The longest agent name taken.
const MAX_AGENT_CHARS: usize = 64;

/// The body of `POST /v1/sessions/{id}/takeover` (may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TakeoverBody {
    /// Who takes it over (default: the signed-in user).
    #[serde(default)]
    agent: Option<String>,
    /// Take it even from another agent who holds it.
    #[serde(default)]
    force: bool,
}

/// `POST /v1/sessions/{id}/takeover`: 409 `held_by_other` when another agent holds it
/// (unless `force`).
pub(super) async fn takeover(state: &Arc<State>, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    super::limits::check_session_id(id, &state.limits)?;
    let signed = super::auth::signed_in(&req);
    let body: TakeoverBody = read_json(req, state.limits.max_body_bytes, true).await?;
    let agent = acting(signed, body.agent)?;
    let key = id.to_string();
    let session = state
        .with_store(move |s| s.engine.takeover(&key, agent, body.force))
        .await?
        .map_err(ApiError::from_engine)?;
    Ok(json_response(StatusCode::OK, &session))
}

/// The agent who acts: the signed-in console user (who may not act as another), else
/// the name a token or loopback caller gives, else none.
fn acting(signed: Option<String>, named: Option<String>) -> Result<Option<String>, ApiError> {
    let named = named.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    if named.as_ref().is_some_and(|n| n.chars().count() > MAX_AGENT_CHARS) {
        return Err(ApiError::invalid(format!(
            "`agent` is longer than {MAX_AGENT_CHARS} characters"
        )));
    }
    match (signed, named) {
        (Some(user), Some(named)) if named != user => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("signed in as `{user}`: a console user acts under their own name"),
        )),
        (Some(user), _) => Ok(Some(user)),
        (None, named) => Ok(named),
    }
}

/// The body of `POST /v1/sessions/{id}/reply`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyBody {
    /// What the agent says (`message` is taken too, its older name).
    #[serde(alias = "message")]
    text: String,
    /// Who says it (default: the signed-in user).
    #[serde(default)]
    agent: Option<String>,
}

/// `POST /v1/sessions/{id}/reply`: a waiting conversation is the agent's first.
pub(super) async fn reply(state: &Arc<State>, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let signed = super::auth::signed_in(&req);
    let body: ReplyBody = read_json(req, state.limits.max_body_bytes, false).await?;
    check_message(&body.text, "text", &state.limits)?;
    if body.text.trim().is_empty() {
        return Err(ApiError::invalid("`text` is empty"));
    }
    let agent = acting(signed, body.agent)?;
    let key = id.to_string();
    let session = state
        .with_store(move |s| s.engine.agent_reply(&key, agent.as_deref(), &body.text))
        .await?
        .map_err(ApiError::from_engine)?;
    Ok(json_response(StatusCode::OK, &session))
}

/// The body of `POST /v1/sessions/{id}/release` (may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    /// `resume` the flow the takeover paused, or `cancel` it (the default).
    #[serde(default)]
    flow: Option<String>,
    /// Who releases it (default: the signed-in user).
    #[serde(default)]
    agent: Option<String>,
}

/// `POST /v1/sessions/{id}/release`.
pub(super) async fn release(state: &Arc<State>, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let signed = super::auth::signed_in(&req);
    let body: ReleaseBody = read_json(req, state.limits.max_body_bytes, true).await?;
    let resume = match body.flow.as_deref() {
        None | Some("cancel") => false,
        Some("resume") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`flow` is `resume` or `cancel`, not `{other}`"
            )));
        }
    };
    let agent = acting(signed, body.agent)?;
    let key = id.to_string();
    let session = state
        .with_store(move |s| s.engine.release(&key, agent.as_deref(), resume))
        .await?
        .map_err(ApiError::from_engine)?;
    Ok(json_response(StatusCode::OK, &session))
}

/// The body of `POST /v1/sessions/{id}/note`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    /// The note (agents only; the customer never sees it).
    text: String,
    /// Who writes it (default: the signed-in user).
    #[serde(default)]
    agent: Option<String>,
}

/// `POST /v1/sessions/{id}/note`: an internal note, kept with the conversation.
pub(super) async fn note(state: &Arc<State>, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let signed = super::auth::signed_in(&req);
    let body: NoteBody = read_json(req, state.limits.max_body_bytes, false).await?;
    check_message(&body.text, "text", &state.limits)?;
    if body.text.trim().is_empty() {
        return Err(ApiError::invalid("`text` is empty"));
    }
    let agent = acting(signed, body.agent)?;
    let key = id.to_string();
    let note = state
        .with_store(move |s| s.engine.note(&key, agent.as_deref(), &body.text))
        .await?
        .map_err(ApiError::from_engine)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "session_id": id, "note": note }),
    ))
}

/// The body of `POST /v1/sessions/{id}/resolve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    /// How it ended (`solved`, `refund`...; 1 to 64 characters).
    outcome: String,
    /// Who resolves it (default: the signed-in user).
    #[serde(default)]
    agent: Option<String>,
}

/// `POST /v1/sessions/{id}/resolve`: the takeover ends, the conversation is resolved
/// until the customer's next message.
pub(super) async fn resolve(state: &Arc<State>, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let signed = super::auth::signed_in(&req);
    let body: ResolveBody = read_json(req, state.limits.max_body_bytes, false).await?;
    let agent = acting(signed, body.agent)?;
    let key = id.to_string();
    let session = state
        .with_store(move |s| s.engine.resolve(&key, agent.as_deref(), &body.outcome))
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
