//! The one error shape every route answers with: `{"error": {"type", "message"}}`.
//!
//! `type` is a stable, machine-readable tag (documented in docs/api.md); `message` says
//! what to fix in words a client developer can act on. Internal error chains, panics and
//! model text never go into either.

use hyper::StatusCode;
use hyper::header::{self, HeaderValue};

use super::{Body, json_response};

/// A request that could not be served, as the client sees it.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `type` tag.
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
    /// Extra fields inside `error` (diagnostics of rejected rules, say).
    pub details: Option<serde_json::Value>,
    /// Seconds to wait, for 429 and 503.
    pub retry_after: Option<u64>,
    /// The methods a route allows, for 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    /// An error with this status, type and message.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            details: None,
            retry_after: None,
            allow: None,
        }
    }

    /// 400 `invalid_request`: the JSON is well formed but not what the route takes.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405 `method_not_allowed`, with the `Allow` header.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route takes {allow}"),
        );
        e.allow = Some(allow);
        e
    }

    /// 500 `internal`: something broke inside; the details are in the log only.
    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request could not be completed; the error has been logged",
        )
    }

    /// 503 `store_unavailable` with `Retry-After: 1`: the session store (Redis) could not
    /// be reached after the store's retries; nothing was changed. `error.reply` carries
    /// what a channel shows the customer ([`crate::engine::BUSY_REPLY`]).
    pub fn store_unavailable() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the session store cannot be reached; nothing was changed, try again",
        )
        .with_details(serde_json::json!({ "reply": crate::engine::BUSY_REPLY }))
        .with_retry_after(1)
    }

    /// The error for a failed turn or session operation, as the engine gives it.
    pub fn from_engine(error: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError;
        match error {
            EngineError::NoSession(id) => ApiError::not_found(format!("no session `{id}`")),
            EngineError::NotTakenOver(id) => ApiError::new(
                StatusCode::CONFLICT,
                "not_taken_over",
                format!("session `{id}` is not taken over by a human; take it over first"),
            ),
            EngineError::WrongToken(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "`session_token` is missing or is not this conversation's; send the one kefu's answers carry",
            ),
            EngineError::AlreadyRated(id) => ApiError::new(
                StatusCode::CONFLICT,
                "already_rated",
                format!("session `{id}` already has its satisfaction score"),
            ),
            // The store logged the error with the Redis address.
            EngineError::Store(_) => ApiError::store_unavailable(),
            EngineError::HeldBy(agent) => ApiError::new(
                StatusCode::CONFLICT,
                "held_by_other",
                format!(
                    "another agent holds this conversation: {agent}; take it over with `force` to take it from them"
                ),
            )
            .with_details(serde_json::json!({ "agent": agent })),
            EngineError::Invalid(message) => ApiError::invalid(message),
            EngineError::UnknownRulesVersion(version) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_rules_version",
                format!(
                    "`rules_version` `{version}` is not served here: pin the live version, the canary candidate or a published version (see /admin/versions), or leave it out"
                ),
            ),
        }
    }

    /// Adds fields inside `error`.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Adds `Retry-After`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// A request body that is not JSON, or not the JSON the route takes.
    pub fn from_json(error: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        match error.classify() {
            Category::Data => ApiError::invalid(error.to_string()),
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {error}"),
            ),
        }
    }

    /// The `{"error": {...}}` body, for a response or an event of a stream that fails
    /// after it started.
    pub fn body(&self) -> serde_json::Value {
        let mut inner = serde_json::json!({ "type": self.kind, "message": self.message });
        if let Some(serde_json::Value::Object(details)) = &self.details {
            inner
                .as_object_mut()
                .expect("built as an object")
                .extend(details.clone());
        }
        serde_json::json!({ "error": inner })
    }

    /// The response.
    pub fn into_response(self) -> hyper::Response<Body> {
        let mut response = json_response(self.status, &self.body());
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}
