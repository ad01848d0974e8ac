//! `POST /v1/events`: what a customer did (the web widget's page events) or what happened
//! to their order (the shop's back office), reported to kefu, which may answer with a
//! proactive message ([`crate::engine::Engine::event`]; the rules' `proactive` items).
//!
//! The body (`deny_unknown_fields`):
//! `{"type": "order_shipped", "session_id": "…" | "channel": "taobao", "user_id": "…",
//! "account": "…", "at": RFC 3339, "data": {…}, "user": {…}, "identity": "…"}`.
//! Exactly one of `session_id` (a conversation of the JSON API or the widget) and
//! `channel` + `user_id` (a channel conversation, [`crate::channels::SessionKey`]: a
//! webhook channel's `conversation_id`, a WeChat customer's openid or external_userid;
//! WeChat also needs `account`: the Official Account's name in the channels file or its
//! AppID, the customer-service account's `open_kfid`). A proactive message the event
//! sends goes out where that conversation's messages go: the widget's live stream
//! (`/v1/sessions/{id}/events`), the webhook channel's `reply_url`, WeChat's
//! `custom/send` or `kf/send_msg` (the recorder's channel hook).
//!
//! **Who may send.** The back office, with the admin bearer token (or, in development,
//! what the admin routes accept: a console admin, loopback without a token): any event
//! type, any conversation. The web widget from a site's page (admitted by
//! [`super::channels::widget`], CORS like its chat): only page events
//! ([`PAGE_EVENTS`]), only for its own conversation (its `session_token` in
//! `X-Kefu-Session-Token`; a conversation that does not exist yet needs none, and its
//! token comes back in the answer when the event started it), never a channel's, never
//! with `at` (a page event happens now); its `user` is checked like the chat's (signed
//! identities). Anyone else: 401.
//!
//! **Checks**, each a 4xx JSON error, counted in `kefu_events_refused_total{reason}`:
//! unknown fields, a `type` not `[a-z][a-z0-9_]{0,47}`, `data`/`user` over
//! [`MAX_DATA_BYTES`] or nested deeper than [`MAX_DEPTH`], `data.type` (the event's own
//! field) — 400 `invalid_event`; `at` more than [`MAX_AHEAD`] in the future — 400
//! `future_timestamp`; older than [`MAX_AGE`] — 400 `stale_event`; session ids as the
//! chat checks them; an order event from the widget — 403 `forbidden`; the
//! per-session rate limit of the chat — 429.
//!
//! The answer is 202 `{"accepted": true}` whatever the rules made of the event: a refused
//! proactive message (a limit, the quiet hours) is never revealed. The engine call runs on
//! the blocking pool (its conditions are scripts), under the turns' in-flight bound.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::channels::widget::FromSite;
use super::http::{Body, json_response, read_body};
use super::limits::check_api_session_id;
use super::users::Permission;
use super::{ApiError, State};
use crate::channels::{SessionKey, WECHAT_KF, WECHAT_MP};
use crate::engine::{EventRequest, ProactiveOutcome, constant_time_eq};

/// The event types the web widget may send: what a customer does on the shop's pages.
/// Order events (`order_shipped`, `refund_done`…) come from the back office only.
pub const PAGE_EVENTS: [&str; 4] = ["product_dwell", "cart_changed", "checkout_abandoned", "page_view"];

/// The most bytes `data` (and `user`) may take, as compact JSON.
pub const MAX_DATA_BYTES: usize = 8 * 1024;

/// The deepest `data` (and `user`) may nest: the map itself is level 1.
pub const MAX_DEPTH: usize = 4;

/// How far in the future `at` may be (clocks differ a little).
pub const MAX_AHEAD: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// How old an event may be: later, it no longer says what the customer is doing.
pub const MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// The `reason` labels of `kefu_events_refused_total` (an error type not listed counts
/// as `other`), made at start.
pub const REFUSAL_REASONS: [&str; 12] = [
    "invalid_event",
    "invalid_json",
    "payload_too_large",
    "future_timestamp",
    "stale_event",
    "unauthorized",
    "forbidden",
    "not_found",
    "unknown_channel",
    "rate_limited",
    "overloaded",
    "other",
];

/// The body of `POST /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// The event's type (`product_dwell`, `order_shipped`…).
    #[serde(rename = "type")]
    pub kind: String,
    /// The conversation (the JSON API's or the widget's).
    #[serde(default)]
    pub session_id: Option<String>,
    /// A channel conversation's channel (a webhook channel's name, `wechat_mp`,
    /// `wechat_kf`), with `user_id`.
    #[serde(default)]
    pub channel: Option<String>,
    /// The customer (or conversation) on the channel's platform.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The WeChat account (see the module header).
    #[serde(default)]
    pub account: Option<String>,
    /// When it happened; now when absent.
    #[serde(default)]
    pub at: Option<DateTime<FixedOffset>>,
    /// The event's fields, `event.*` in the rules.
    #[serde(default)]
    pub data: Option<Map<String, Value>>,
    /// The customer's profile, `user` in the rules.
    #[serde(default)]
    pub user: Option<Map<String, Value>>,
    /// The customer's signed identity (else the `X-Kefu-Identity` header), as on the chat.
    #[serde(default)]
    pub identity: Option<String>,
}

/// Who sent the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sender {
    /// The shop's back office (admin token, or what the admin routes accept).
    BackOffice,
    /// The web widget on a site's page.
    Widget,
}

/// `POST /v1/events` (see the module header); every refusal counted by its type.
pub(super) async fn post(
    state: &Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    accept(state, req, peer).await.inspect_err(|error| {
        let reason = REFUSAL_REASONS
            .iter()
            .find(|r| **r == error.kind)
            .copied()
            .unwrap_or("other");
        state.metrics.event_refused(reason);
    })
}

async fn accept(state: &Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, ApiError> {
    let sender = if req.extensions().get::<FromSite>().is_some() {
        Sender::Widget
    } else {
        state.authorize(&req, peer, Permission::Admin).map_err(|error| {
            if error.status == StatusCode::UNAUTHORIZED {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "events come from the shop's back office (`Authorization: Bearer <KEFU_ADMIN_TOKEN>`) or from the web widget on a site's page",
                )
            } else {
                error
            }
        })?;
        Sender::BackOffice
    };
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let session_token = header("x-kefu-session-token");
    let identity_header = header(super::identity::HEADER);
    let bytes = read_body(req, state.limits.max_body_bytes).await?;
    let mut body: EventBody = parse(&bytes)?;
    let now = Utc::now();
    check_kind(&body.kind)?;
    if sender == Sender::Widget && !PAGE_EVENTS.contains(&body.kind.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the widget sends page events only ({}); `{}` comes from the shop's back office",
                PAGE_EVENTS.join(", "),
                body.kind
            ),
        ));
    }
    if sender == Sender::Widget && body.at.is_some() {
        return Err(invalid_event(
            "a page event happens now: `at` is for the back office's events",
        ));
    }
    if let Some(at) = body.at {
        check_at(at, now)?;
    }
    let data = body.data.take().unwrap_or_default();
    check_map(&data, "data")?;
    if data.contains_key("type") {
        return Err(invalid_event(
            "`data.type`: `type` is the event's own field (`event.type` in the rules); name the data field otherwise",
        ));
    }
    if let Some(user) = &body.user {
        check_map(user, "user")?;
    }
    let (session_id, channel) = conversation(state, sender, &body)?;
    state.check_rate(&session_id)?;
    // The customer's profile: the back office's as given; the widget's as the chat takes
    // it (with signed identities: only inside a valid token).
    let user = match (&state.identity, sender) {
        (Some(verifier), Sender::Widget) => {
            let mut vouched = crate::TurnRequest {
                session_id: session_id.clone(),
                user: body.user,
                ..crate::TurnRequest::default()
            };
            verifier.apply(
                body.identity.as_deref().or(identity_header.as_deref()),
                &mut vouched,
                false,
            )?;
            vouched.user
        }
        _ => body.user,
    };
    // The widget speaks for its own conversation only.
    let new_visitor = match sender {
        Sender::Widget => widget_owns(state, &session_id, session_token.as_deref()).await?,
        Sender::BackOffice => false,
    };
    let request = EventRequest {
        session_id: session_id.clone(),
        kind: body.kind,
        data,
        user,
        at: body.at,
        channel,
    };
    let outcome = state.run_event(request).await?;
    let mut answer = serde_json::json!({"accepted": true});
    // A new visitor's conversation started by a proactive message: the widget needs its
    // token to open the live stream that carries it.
    if new_visitor && matches!(outcome, ProactiveOutcome::Sent { .. }) {
        let key = session_id.clone();
        if let Some(session) = state
            .with_store(move |s| s.engine.session(&key))
            .await?
            .map_err(ApiError::from_engine)?
            && !session.token.is_empty()
        {
            answer["session_token"] = Value::from(session.token);
        }
    }
    Ok(json_response(StatusCode::ACCEPTED, &answer))
}

/// 400 `invalid_event`.
fn invalid_event(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", message)
}

/// The body as JSON: a body that is not JSON is `invalid_json`, JSON that is not an
/// event (unknown fields, wrong types, no `type`) `invalid_event` with serde's words.
fn parse(bytes: &[u8]) -> Result<EventBody, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => invalid_event(error.to_string()),
        _ => ApiError::from_json(&error),
    })
}

/// An event type: `[a-z][a-z0-9_]{0,47}`.
fn check_kind(kind: &str) -> Result<(), ApiError> {
    let mut bytes = kind.bytes();
    let ok = matches!(bytes.next(), Some(b'a'..=b'z'))
        && kind.len() <= 48
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        return Ok(());
    }
    let shown: String = kind.chars().take(60).collect();
    Err(invalid_event(format!(
        "`type` {shown:?} is not an event type: a lowercase letter, then up to 47 lowercase letters, digits or `_` (`order_shipped`)"
    )))
}

/// `at`: not more than [`MAX_AHEAD`] ahead of `now`, not older than [`MAX_AGE`].
fn check_at(at: DateTime<FixedOffset>, now: DateTime<Utc>) -> Result<(), ApiError> {
    let at = at.with_timezone(&Utc);
    if at > now + MAX_AHEAD {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "future_timestamp",
            format!(
                "`at` is {} s in the future; at most {} s ahead is taken (check the sender's clock)",
                (at - now).num_seconds(),
                MAX_AHEAD.num_seconds()
            ),
        ));
    }
    if at < now - MAX_AGE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "stale_event",
            format!(
                "`at` is {} days old; events older than {} days are not taken",
                (now - at).num_days(),
                MAX_AGE.num_days()
            ),
        ));
    }
    Ok(())
}

/// How deep a JSON value nests: a scalar 0, a map or list one more than its deepest
/// member. (serde_json stops parsing at 128 levels, which bounds the recursion.)
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(list) => 1 + list.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `data` or `user`: at most [`MAX_DATA_BYTES`] as JSON and [`MAX_DEPTH`] levels deep.
fn check_map(map: &Map<String, Value>, field: &str) -> Result<(), ApiError> {
    let levels = 1 + map.values().map(depth).max().unwrap_or(0);
    if levels > MAX_DEPTH {
        return Err(invalid_event(format!(
            "`{field}` nests {levels} levels deep; at most {MAX_DEPTH} are taken"
        )));
    }
    let bytes = serde_json::to_vec(map).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_DATA_BYTES {
        return Err(invalid_event(format!(
            "`{field}` takes {bytes} bytes as JSON; at most {MAX_DATA_BYTES} are taken"
        )));
    }
    Ok(())
}

/// The conversation the event names, and the channel its messages go out on (`web` for
/// the widget's; `None`, the API's, for a session id from the back office).
fn conversation(state: &State, sender: Sender, body: &EventBody) -> Result<(String, Option<String>), ApiError> {
    match (&body.session_id, &body.channel) {
        (Some(id), None) => {
            if body.user_id.is_some() || body.account.is_some() {
                return Err(invalid_event(
                    "`user_id` and `account` name a channel's customer, with `channel`; not with `session_id`",
                ));
            }
            check_api_session_id(id, &state.limits).map_err(|e| {
                let hint = match crate::channels::is_reserved_session(id) {
                    true => " (name a channel's conversation by `channel` and `user_id`)",
                    false => "",
                };
                invalid_event(format!("{}{hint}", e.message))
            })?;
            let channel = (sender == Sender::Widget).then(|| crate::channels::WEB.to_string());
            Ok((id.clone(), channel))
        }
        (None, Some(channel)) => {
            if sender == Sender::Widget {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the widget sends events for its own conversation (`session_id`), not a channel's",
                ));
            }
            let Some(user) = &body.user_id else {
                return Err(invalid_event("`channel` needs `user_id`: the customer on that channel"));
            };
            let key = channel_key(state, channel, body.account.as_deref(), user)?;
            Ok((key.session_id(), Some(channel.clone())))
        }
        (Some(_), Some(_)) => Err(invalid_event(
            "an event names its conversation once: `session_id`, or `channel` and `user_id`",
        )),
        (None, None) => Err(invalid_event(
            "an event needs its conversation: `session_id`, or `channel` and `user_id`",
        )),
    }
}

/// A channel conversation's key: a webhook channel of the channels file (account `-`), a
/// WeChat Official Account (by its name there or its AppID) or customer-service account
/// (`open_kfid`).
fn channel_key(state: &State, channel: &str, account: Option<&str>, user: &str) -> Result<SessionKey, ApiError> {
    use crate::channels::wechat::Kind;
    let unknown = |what: String| ApiError::new(StatusCode::NOT_FOUND, "unknown_channel", what);
    let config = state.channels.as_deref();
    let shown: String = channel.chars().take(40).collect();
    let account = match channel {
        WECHAT_MP | WECHAT_KF => {
            let kind = if channel == WECHAT_MP {
                Kind::OfficialAccount
            } else {
                Kind::CustomerService
            };
            let Some(account) = account else {
                return Err(invalid_event(format!(
                    "`{channel}` needs `account`: the WeChat account (its name in the channels file or its AppID; for wechat_kf the open_kfid)"
                )));
            };
            let accounts: Vec<_> = config
                .map(|c| c.wechat.iter().filter(|a| a.kind == kind).collect())
                .unwrap_or_default();
            if accounts.is_empty() {
                return Err(unknown(format!("the channels file has no `{channel}` account")));
            }
            if kind == Kind::OfficialAccount {
                // An Official Account's conversations are keyed by its AppID.
                let found = accounts.iter().find(|a| a.name == account || a.app_id == account);
                match found {
                    Some(a) => a.app_id.clone(),
                    None => {
                        let shown: String = account.chars().take(40).collect();
                        return Err(unknown(format!("no Official Account `{shown}` in the channels file")));
                    }
                }
            } else {
                account.to_string()
            }
        }
        _ => {
            if account.is_some() {
                return Err(invalid_event("`account` is for WeChat's channels only"));
            }
            if crate::channels::RESERVED.contains(&channel) {
                return Err(invalid_event(format!(
                    "`{channel}` conversations are named by `session_id`, not `channel`"
                )));
            }
            if !config.is_some_and(|c| c.webhook.iter().any(|w| w.name == channel)) {
                return Err(unknown(format!("no channel `{shown}` in the channels file")));
            }
            "-".to_string()
        }
    };
    SessionKey::new(channel, &account, user).map_err(|e| invalid_event(format!("`user_id` or `account`: {e}")))
}

/// Whether the widget's request speaks for conversation `id`: its token, or no
/// conversation yet (`true`: a new visitor). Any other is the customer routes' one 404,
/// so that ids cannot be probed.
async fn widget_owns(state: &Arc<State>, id: &str, token: Option<&str>) -> Result<bool, ApiError> {
    let key = id.to_string();
    let session = state
        .with_store(move |s| s.engine.session(&key))
        .await?
        .map_err(ApiError::from_engine)?;
    match (session, token) {
        (None, _) => Ok(true),
        (Some(session), Some(token))
            if !session.token.is_empty() && constant_time_eq(session.token.as_bytes(), token.as_bytes()) =>
        {
            Ok(false)
        }
        _ => Err(ApiError::not_found(format!(
            "no session `{}` with that token; send the `session_token` of kefu's answers in `X-Kefu-Session-Token`",
            crate::safety::logsafe::LogSafe(id)
        ))),
    }
}

impl State {
    /// Runs [`crate::engine::Engine::event`] on the blocking pool (its conditions are
    /// scripts, its store may be Redis), counted among the turns in flight.
    pub(super) async fn run_event(self: &Arc<Self>, request: EventRequest) -> Result<ProactiveOutcome, ApiError> {
        let in_flight = self.turn_permit()?;
        let state = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || state.engine.event(&request))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "event panicked");
                ApiError::internal()
            })
            .and_then(|outcome| outcome.map_err(ApiError::from_engine));
        drop(in_flight);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_short_snake_case() {
        for ok in ["order_shipped", "a", "page_view2", &"x".repeat(48)] {
            assert!(check_kind(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Order",
            "1st",
            "_x",
            "order-shipped",
            "订单",
            &"x".repeat(49),
            "a b",
        ] {
            assert_eq!(check_kind(bad).unwrap_err().kind, "invalid_event", "{bad}");
        }
    }

    #[test]
    fn timestamps_must_be_recent_and_not_ahead() {
        let now = Utc::now();
        let at = |delta: chrono::TimeDelta| (now + delta).fixed_offset();
        assert!(check_at(at(chrono::TimeDelta::minutes(4)), now).is_ok());
        assert!(check_at(at(-chrono::TimeDelta::days(6)), now).is_ok());
        assert_eq!(
            check_at(at(chrono::TimeDelta::minutes(6)), now).unwrap_err().kind,
            "future_timestamp"
        );
        assert_eq!(
            check_at(at(-chrono::TimeDelta::days(8)), now).unwrap_err().kind,
            "stale_event"
        );
    }

    #[test]
    fn data_is_bounded_in_depth_and_size() {
        let map = |v: Value| v.as_object().unwrap().clone();
        assert!(check_map(&map(serde_json::json!({"a": {"b": {"c": [1]}}})), "data").is_ok());
        let deep = map(serde_json::json!({"a": {"b": {"c": {"d": 1}}}}));
        assert!(check_map(&deep, "data").is_ok(), "four levels, the map itself one");
        let deep = map(serde_json::json!({"a": {"b": {"c": [{"d": 1}]}}}));
        assert!(check_map(&deep, "data").unwrap_err().message.contains("5 levels"));
        let big = map(serde_json::json!({"a": "x".repeat(MAX_DATA_BYTES)}));
        assert!(check_map(&big, "data").unwrap_err().message.contains("bytes"));
    }

    #[test]
    fn unknown_fields_and_wrong_shapes_are_invalid_events() {
        let error = parse(br#"{"type": "x", "session_id": "s", "price": 1}"#).unwrap_err();
        assert_eq!(error.kind, "invalid_event");
        assert!(error.message.contains("price"), "{}", error.message);
        assert_eq!(parse(br#"{"session_id": "s"}"#).unwrap_err().kind, "invalid_event");
        assert_eq!(
            parse(br#"{"type": "x", "data": [1]}"#).unwrap_err().kind,
            "invalid_event"
        );
        assert_eq!(parse(b"{nope").unwrap_err().kind, "invalid_json");
        assert_eq!(parse(b"  ").unwrap_err().kind, "invalid_json");
    }
}
