//! The per-request limits on what a client asks: a session id's form, a message's length,
//! and the per-session rate limit (governor, keyed by session id).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::StatusCode;

use super::{ApiError, Limits, State};

/// The per-session rate limiter: `rate` turns a second with a burst of twice that; `None`
/// when `rate` is 0 (the limit is off).
pub(super) fn rate_limiter(rate: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    NonZeroU32::new(rate).map(|rate| {
        let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not zero"));
        RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
    })
}

/// Starts the task that trims the rate limiter while the service runs, when there is one.
pub(super) fn forget_idle_sessions(state: &Arc<State>) -> Option<tokio::task::JoinHandle<()>> {
    // The rate limiter remembers every key it has seen; forget idle ones now and then.
    (state.limiter.is_some() || state.widget.is_some()).then(|| {
        let state = Arc::clone(state);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                if let Some(limiter) = &state.limiter {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
                if let Some(widget) = &state.widget {
                    widget.forget_idle();
                }
            }
        })
    })
}

impl State {
    /// The per-session rate limit.
    pub(super) fn check_rate(&self, key: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        match limiter.check_key(&key.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                self.metrics.rate_limited();
                let wait =
                    not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "too many messages for this session; at most {} a second",
                        self.limits.rate_per_session
                    ),
                )
                .with_retry_after(wait.as_secs_f64().ceil() as u64))
            }
        }
    }
}

/// Checks a session id: present, not too long, no control characters.
pub(super) fn check_session_id(id: &str, limits: &Limits) -> Result<(), ApiError> {
    if id.trim().is_empty() {
        return Err(ApiError::invalid("`session_id` is empty"));
    }
    if id.chars().count() > limits.max_session_id_chars {
        return Err(ApiError::invalid(format!(
            "`session_id` is longer than {} characters",
            limits.max_session_id_chars
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::invalid("`session_id` contains control characters"));
    }
    Ok(())
}

/// Checks the session id of a message sent on the JSON API: [`check_session_id`], and not
/// a channel conversation's (`ch:...`, [`crate::channels::SessionKey`]), which only its
/// channel's route may write into.
pub(super) fn check_api_session_id(id: &str, limits: &Limits) -> Result<(), ApiError> {
    check_session_id(id, limits)?;
    if crate::channels::is_reserved_session(id) {
        return Err(ApiError::invalid(format!(
            "`session_id` may not start with `{}`: those are the conversations of kefu's channels (WeChat, webhooks)",
            crate::channels::SESSION_PREFIX
        )));
    }
    Ok(())
}

/// Checks a pinned `rules_version`: a rules hash (1-64 ASCII letters, digits, `-` or
/// `_`), so that whatever a client sends there is never echoed back or looked up as is.
pub(super) fn check_rules_version(version: Option<&str>) -> Result<(), ApiError> {
    match version {
        Some(v)
            if v.is_empty()
                || v.len() > 64
                || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Err(ApiError::invalid(
                "`rules_version` is not a rules version: 1-64 letters, digits, `-` or `_` (the `rules_version` of a response, or a published version's hash)",
            ))
        }
        _ => Ok(()),
    }
}

/// Checks a message: not empty, not too long.
pub(super) fn check_message(message: &str, field: &str, limits: &Limits) -> Result<(), ApiError> {
    if message.trim().is_empty() {
        return Err(ApiError::invalid(format!("`{field}` is empty")));
    }
    let chars = message.chars().count();
    if chars > limits.max_message_chars {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "message_too_long",
            format!(
                "`{field}` has {chars} characters; at most {} are accepted",
                limits.max_message_chars
            ),
        ));
    }
    Ok(())
}
