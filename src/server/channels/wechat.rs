//! `GET|POST /wechat/{name}`: the callback URL of a WeChat account of the channels file,
//! an Official Account (公众号) or WeChat customer service (微信客服).
//!
//! **URL verification** (`GET`, when the URL is saved in the admin page): plaintext
//! `signature` over (token, timestamp, nonce) → the `echostr` as it came; with
//! `msg_signature` (WeCom, and Official Accounts that send it) the signature covers the
//! encrypted `echostr` too, which is decrypted and its plaintext answered.
//!
//! **Official Account messages** (`POST`): the signature is checked (`msg_signature` over
//! the `Encrypt` field in the encrypted mode, which an account with an
//! `encoding_aes_key` requires; `signature` in plaintext mode), the timestamp must be
//! within [`MAX_SKEW`] of now, and the message is taken once: `MsgId` (events:
//! `FromUserName` + `CreateTime` + `Event`) through `State::seen`, since WeChat sends a
//! message again when no answer came within 5 seconds; a repeat is answered `success`
//! and never makes a second turn. A text is a turn on channel `wechat_mp` in the
//! conversation `ch:wechat_mp:{AppID}:{openid}` (a voice message with WeChat's speech
//! recognition on is its recognised text); `subscribe`, `unsubscribe`, `SCAN` and `CLICK`
//! are event turns (`subscribe`, `unsubscribe`, `scan`, `click`); a voice, video or
//! location is an event turn of that name (`voice`, `video`, `location`): a placeholder
//! text like `[图片]` would go through understanding and the fallback, where an event
//! answers only when a rule asks for it. Other events are answered `success`.
//!
//! **Photos** (`MsgType=image`, and customer service's `image`): the `MediaId` is fetched
//! with `media/get` through the account's API client (its token, at most
//! [`MEDIA_LIMIT`] bytes) and taken in by the image intake (`State::intake_bytes`: type
//! by the bytes, metadata stripped, stored, described), then the turn carries it
//! (`images`: the rules' `on image`, a photo ask). A fetch or intake that fails is logged,
//! counted (`photo_failed`) and the turn is the `image` event, as before photos were
//! taken. The fetch counts against the 5-second rule like the turn.
//!
//! **The 5-second rule**: the turn runs while the request waits up to the account's
//! `reply_within` (4.5 s); in time, its reply is the passive reply (encrypted in the
//! encrypted mode); late, the request is answered `success` at once and the reply goes
//! out through `message/custom/send` as a job when the turn ends. A reply longer than
//! one WeChat text also goes that way, in parts. No reply (an event no rule answers, an
//! agent who took the conversation over) is `success`; nothing is sent after
//! `unsubscribe`. A turn that fails is logged and answered `success` (WeChat would only
//! send the message again, and the repeat is not taken).
//!
//! **Customer service** (`POST`): the callback carries no message, only
//! `Event=kf_msg_or_event`, a `Token` and the `OpenKfId`. It is answered `success` at
//! once, and the account's messages are pulled with `kf/sync_msg` from the stored cursor
//! until `has_more` is 0, by one task per account (a callback that comes while it runs
//! makes it pull again). The cursor is kept in memory and in
//! `STATE_DIR/wechat/{name}.cursor`. Each customer text (`origin` 3), taken once by
//! `msgid`, is a turn on `wechat_kf` in `ch:wechat_kf:{open_kfid}:{external_userid}`,
//! answered with `kf/send_msg`; `enter_session` is an event turn whose reply is sent with
//! the event's `welcome_code` (`kf/send_msg_on_event`), or with `kf/send_msg` when that
//! fails. A customer's messages are answered in order; customers in parallel, a few at a
//! time. Messages older than [`KF_MAX_AGE`] (the first pull without a cursor returns
//! three days of them) are skipped.
//!
//! **Refusals**: unknown account 404, bad signature or stale timestamp 403, body that is
//! not WeChat's XML 400, body over 64 KiB 413, all JSON (WeChat does not read them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::TurnRequest;
use crate::channels::wechat::api::{KfMessage, MEDIA_LIMIT, TEXT_LIMIT};
use crate::channels::wechat::crypto::{Cipher, sign, verify};
use crate::channels::wechat::send::{Live, WechatSender};
use crate::channels::wechat::{Kind, xml};
use crate::channels::{ChannelsConfig, Outbound, Outgoing, SessionKey, WECHAT_KF, WECHAT_MP};
use crate::dialogue::ImageRef;
use crate::safety::logsafe::LogSafe;
use crate::server::http::{Body, read_body};
use crate::server::{ApiError, State};

/// The largest callback body taken.
pub const MAX_BODY: usize = 64 * 1024;
/// How far a callback's timestamp may be from now (a replayed old callback is refused).
pub const MAX_SKEW: i64 = 600;
/// Customer-service messages older than this are not answered.
pub const KF_MAX_AGE: i64 = 600;
/// Customers answered at the same time per customer-service pull.
const KF_PARALLEL: usize = 4;
/// The most `kf/sync_msg` pages one pull reads (1,000 messages each).
const KF_MAX_PAGES: usize = 100;

/// The WeChat accounts at run time: their API clients, the senders registered for
/// `wechat_mp` and `wechat_kf`, and the customer-service pullers.
pub struct Wechat {
    accounts: HashMap<String, Arc<Live>>,
    mp: Arc<WechatSender>,
    kf: Arc<WechatSender>,
    pullers: HashMap<String, Arc<Puller>>,
}

/// One customer-service account's pulling: its cursor and whether a pull is running or
/// asked for.
struct Puller {
    cursor: Mutex<String>,
    /// The latest callback's `Token` (it lifts `kf/sync_msg`'s strict rate limit).
    token: Mutex<String>,
    running: AtomicBool,
    again: AtomicBool,
    file: Option<PathBuf>,
}

impl Puller {
    fn new(file: Option<PathBuf>) -> Puller {
        let cursor = file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|c| c.trim().to_string())
            .unwrap_or_default();
        Puller {
            cursor: Mutex::new(cursor),
            token: Mutex::new(String::new()),
            running: AtomicBool::new(false),
            again: AtomicBool::new(false),
            file,
        }
    }

    fn cursor(&self) -> String {
        self.cursor.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Moves the cursor on, in memory and (written whole, then renamed) on disk.
    fn advance(&self, next: &str) {
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = next.to_string();
        if let Some(file) = &self.file {
            let temp = file.with_extension("cursor.tmp");
            let written = std::fs::write(&temp, next).and_then(|()| std::fs::rename(&temp, file));
            if let Err(error) = written {
                tracing::warn!(file = %file.display(), %error, "wechat kf cursor not saved");
            }
        }
    }
}

/// Makes the configured WeChat accounts ready and registers their senders in
/// `outbound` (`wechat_mp`, `wechat_kf`); `None` when the channels file has none. The
/// customer-service cursors live in `state_dir/wechat/`.
pub fn register(config: &ChannelsConfig, outbound: &mut Outbound, state_dir: Option<&Path>) -> Option<Arc<Wechat>> {
    if config.wechat.is_empty() {
        return None;
    }
    let live: Vec<Arc<Live>> = config.wechat.iter().cloned().map(|a| Arc::new(Live::new(a))).collect();
    let mp = Arc::new(WechatSender::new(Kind::OfficialAccount, &live));
    let kf = Arc::new(WechatSender::new(Kind::CustomerService, &live));
    outbound.register(WECHAT_MP, Arc::clone(&mp) as _);
    outbound.register(WECHAT_KF, Arc::clone(&kf) as _);
    let dir = state_dir.map(|d| d.join("wechat"));
    if let Some(dir) = &dir
        && let Err(error) = std::fs::create_dir_all(dir)
    {
        tracing::warn!(dir = %dir.display(), %error, "wechat kf cursors are kept in memory only");
    }
    let pullers = live
        .iter()
        .filter(|l| l.account.kind == Kind::CustomerService)
        .map(|l| {
            let file = dir.as_ref().map(|d| d.join(format!("{}.cursor", l.account.name)));
            (l.account.name.clone(), Arc::new(Puller::new(file)))
        })
        .collect();
    Some(Arc::new(Wechat {
        accounts: live.into_iter().map(|l| (l.account.name.clone(), l)).collect(),
        mp,
        kf,
        pullers,
    }))
}

/// The query string's parameters, percent-decoded.
fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .take(32)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "bad_signature", message)
}

fn text_response(content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(body.into())));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// WeChat's "received, nothing to say".
fn success() -> Response<Body> {
    text_response("text/plain; charset=utf-8", "success")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `GET|POST /wechat/{name}`.
pub(in crate::server) async fn callback(
    state: &Arc<State>,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let unknown = || ApiError::not_found(format!("no wechat account `{}` in the channels file", LogSafe(name)));
    let wechat = state.wechat.as_ref().ok_or_else(unknown)?;
    let live = wechat.accounts.get(name).ok_or_else(unknown)?;
    let params = query(&req);
    let param = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let token = live.account.token.text().unwrap_or("");
    let (timestamp, nonce) = (param("timestamp"), param("nonce"));
    if req.method() == Method::GET || req.method() == Method::HEAD {
        let echostr = param("echostr");
        if !params.contains_key("msg_signature") {
            if live.account.kind == Kind::CustomerService {
                return Err(forbidden("customer service signs with msg_signature"));
            }
            if !verify(param("signature"), &[token, timestamp, nonce]) {
                return Err(forbidden("the signature does not match the account's token"));
            }
            return Ok(text_response("text/plain; charset=utf-8", echostr.to_string()));
        }
        if !verify(param("msg_signature"), &[token, timestamp, nonce, echostr]) {
            return Err(forbidden("the msg_signature does not match the account's token"));
        }
        let cipher = live
            .cipher
            .as_ref()
            .ok_or_else(|| forbidden("the account has no encoding_aes_key to decrypt echostr"))?;
        let plain = cipher
            .decrypt(echostr)
            .map_err(|e| forbidden(&format!("echostr: {e}")))?;
        return Ok(text_response("text/plain; charset=utf-8", plain));
    }
    let channel = match live.account.kind {
        Kind::OfficialAccount => WECHAT_MP,
        Kind::CustomerService => WECHAT_KF,
    };
    // A refused callback (signature, timestamp, body) is counted like a webhook's.
    let answer = async {
        let stale = timestamp.parse::<i64>().map_or(true, |t| (now() - t).abs() > MAX_SKEW);
        let body = read_body(req, MAX_BODY).await?;
        let body = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("the body is not UTF-8"))?;
        let outer = xml::parse(body).map_err(|e| ApiError::invalid(e.to_string()))?;
        let fields = match (&live.cipher, outer.get("Encrypt")) {
            (Some(cipher), Some(encrypted)) => {
                if !verify(param("msg_signature"), &[token, timestamp, nonce, encrypted]) {
                    return Err(forbidden("the msg_signature does not match the account's token"));
                }
                let plain = cipher
                    .decrypt(encrypted)
                    .map_err(|e| forbidden(&format!("Encrypt: {e}")))?;
                let plain = String::from_utf8(plain).map_err(|_| ApiError::invalid("the message is not UTF-8"))?;
                xml::parse(&plain).map_err(|e| ApiError::invalid(e.to_string()))?
            }
            (Some(_), None) => {
                return Err(ApiError::invalid(
                    "the account has an encoding_aes_key: messages must come encrypted (safe mode)",
                ));
            }
            (None, _) => {
                if live.account.kind == Kind::CustomerService || !verify(param("signature"), &[token, timestamp, nonce])
                {
                    return Err(forbidden("the signature does not match the account's token"));
                }
                outer
            }
        };
        if stale {
            return Err(forbidden("the timestamp is missing or more than 10 minutes from now"));
        }
        match live.account.kind {
            Kind::OfficialAccount => official_account(state, wechat, live, &fields, nonce).await,
            Kind::CustomerService => {
                if fields.get("Event") == Some("kf_msg_or_event") {
                    let puller = wechat
                        .pullers
                        .get(name)
                        .expect("every customer-service account has a puller");
                    *puller.token.lock().unwrap_or_else(|e| e.into_inner()) = fields.text("Token").to_string();
                    pull_soon(state, wechat, live, puller);
                }
                Ok(success())
            }
        }
    }
    .await;
    if answer.is_err() {
        state.metrics.channel_message(channel, "refused");
    }
    answer
}

/// What an Official Account's message asks for: a text turn, an event turn, or nothing.
fn mp_turn(fields: &xml::Fields) -> Option<(String, Option<String>)> {
    let kind = fields.text("MsgType");
    match kind {
        "text" => Some((fields.text("Content").to_string(), None)),
        "voice" if !fields.text("Recognition").trim().is_empty() => {
            Some((fields.text("Recognition").to_string(), None))
        }
        "image" | "voice" | "location" => Some((String::new(), Some(kind.to_string()))),
        "video" | "shortvideo" => Some((String::new(), Some("video".to_string()))),
        "event" => {
            let event = fields.text("Event").to_ascii_lowercase();
            matches!(event.as_str(), "subscribe" | "unsubscribe" | "scan" | "click")
                .then(|| (String::new(), Some(event)))
        }
        _ => None,
    }
}

async fn official_account(
    state: &Arc<State>,
    wechat: &Arc<Wechat>,
    live: &Arc<Live>,
    fields: &xml::Fields,
    nonce: &str,
) -> Result<Response<Body>, ApiError> {
    let openid = fields.text("FromUserName");
    let key = SessionKey::new(WECHAT_MP, &live.account.app_id, openid)
        .map_err(|e| ApiError::invalid(format!("FromUserName: {e}")))?;
    let Some((message, event)) = mp_turn(fields) else {
        return Ok(success());
    };
    let message_id = match fields.get("MsgId").filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None => format!("{openid}-{}-{}", fields.text("CreateTime"), fields.text("Event")),
    };
    if !state
        .first_seen(format!("{WECHAT_MP}:{}:{message_id}", live.account.app_id))
        .await
    {
        state.metrics.channel_message(WECHAT_MP, "duplicate");
        return Ok(success());
    }
    state.metrics.channel_message(WECHAT_MP, "accepted");
    let session_id = key.session_id();
    if state.check_rate(&session_id).is_err() {
        tracing::warn!(session = %LogSafe(&session_id), "wechat message over the per-session rate; not answered");
        return Ok(success());
    }
    let unsubscribed = event.as_deref() == Some("unsubscribe");
    let mut request = channel_request(state, session_id, message, event, WECHAT_MP);
    let media = mp_media(fields).map(str::to_string);
    let (running, photo_live) = (Arc::clone(state), Arc::clone(live));
    // The photo's fetch runs inside the timed task: the 5-second rule counts it.
    let mut turn = tokio::spawn(async move {
        if let Some(media) = media {
            let photo = fetch_photo(&running, &photo_live, WECHAT_MP, &request.session_id, &media).await;
            with_photo(&mut request, photo);
        }
        running.run_turn(request).await
    });
    let outgoing = move |reply: String, choices| Outgoing {
        key,
        text: reply,
        id: format!("{WECHAT_MP}:{message_id}:reply"),
        choices,
    };
    match tokio::time::timeout(live.account.reply_within, &mut turn).await {
        Ok(finished) => {
            let Some(response) = answered(finished) else {
                return Ok(success());
            };
            if unsubscribed || response.reply.is_empty() {
                return Ok(success());
            }
            if response.reply.len() > TEXT_LIMIT {
                send_later(
                    state,
                    Arc::clone(&wechat.mp) as _,
                    outgoing(response.reply, response.choices),
                );
                return Ok(success());
            }
            let reply = xml::text_reply(openid, fields.text("ToUserName"), now(), &response.reply);
            Ok(passive(live, reply, nonce))
        }
        Err(_) => {
            // Late: WeChat stops waiting at 5 s; the reply goes out as a message.
            let (state, sender) = (Arc::clone(state), Arc::clone(&wechat.mp));
            tokio::spawn(async move {
                if let Some(response) = answered(turn.await)
                    && !unsubscribed
                    && !response.reply.is_empty()
                {
                    send_later(&state, sender as _, outgoing(response.reply, response.choices));
                }
            });
            Ok(success())
        }
    }
}

/// The `MediaId` of an Official Account's photo message.
fn mp_media(fields: &xml::Fields) -> Option<&str> {
    (fields.text("MsgType") == "image")
        .then(|| fields.text("MediaId").trim())
        .filter(|id| !id.is_empty())
}

/// A photo a WeChat message names: fetched with `media/get` (off the workers) and taken
/// in by the image intake; `None` when either fails (logged without the bytes, counted as
/// `photo_failed`), and the turn stays the `image` event.
async fn fetch_photo(
    state: &Arc<State>,
    live: &Arc<Live>,
    channel: &str,
    session: &str,
    media_id: &str,
) -> Option<ImageRef> {
    let (api_live, id) = (Arc::clone(live), media_id.to_string());
    let fetched = tokio::task::spawn_blocking(move || api_live.api.media_get(&id, MEDIA_LIMIT)).await;
    let failed = |reason: &str| {
        state.metrics.channel_message(channel, "photo_failed");
        tracing::warn!(
            account = %live.account.name,
            session = %LogSafe(session),
            reason,
            "a wechat photo was not taken; answered as the image event"
        );
    };
    let bytes = match fetched {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            failed(&error.to_string());
            return None;
        }
        Err(error) => {
            failed(&format!("the fetch panicked: {error}"));
            return None;
        }
    };
    match state.intake_bytes(session, bytes).await {
        Ok(image) => Some(image),
        Err(error) => {
            failed(&format!("{}: {}", error.kind, error.message));
            None
        }
    }
}

/// The turn with its photo, when one was taken: a message of images alone, no event.
fn with_photo(request: &mut TurnRequest, photo: Option<ImageRef>) {
    if let Some(photo) = photo {
        request.event = None;
        request.images = vec![photo];
    }
}

/// A channel's turn request: the message (cut to the longest the service takes; a
/// WeChat customer cannot be told 400) or the event.
fn channel_request(
    state: &State,
    session_id: String,
    message: String,
    event: Option<String>,
    channel: &str,
) -> TurnRequest {
    let message = match message.char_indices().nth(state.limits.max_message_chars) {
        Some((cut, _)) => message[..cut].to_string(),
        None => message,
    };
    TurnRequest {
        session_id,
        message,
        channel: Some(channel.to_string()),
        event,
        ..TurnRequest::default()
    }
}

/// The turn's response when it answered (not dropped by a takeover); failures logged.
fn answered(
    finished: Result<Result<crate::TurnResponse, ApiError>, tokio::task::JoinError>,
) -> Option<crate::TurnResponse> {
    match finished {
        Ok(Ok(response)) if !response.dropped => Some(response),
        Ok(Ok(_)) => None,
        Ok(Err(error)) => {
            tracing::warn!(
                status = error.status.as_u16(),
                "a wechat message's turn failed; not answered"
            );
            None
        }
        Err(error) => {
            tracing::error!(%error, "a wechat message's turn panicked");
            None
        }
    }
}

/// The passive reply: the XML as it is, or encrypted in its envelope.
fn passive(live: &Live, reply: String, nonce: &str) -> Response<Body> {
    let Some(cipher) = &live.cipher else {
        return text_response("application/xml; charset=utf-8", reply);
    };
    let encrypted = encrypt_reply(cipher, live.account.token.text().unwrap_or(""), &reply, nonce);
    text_response("application/xml; charset=utf-8", encrypted)
}

/// An encrypted reply's envelope, signed with the account's token.
pub fn encrypt_reply(cipher: &Cipher, token: &str, reply: &str, nonce: &str) -> String {
    let encrypted = cipher.encrypt(reply.as_bytes());
    let timestamp = now().to_string();
    let signature = sign(&[token, &timestamp, nonce, &encrypted]);
    xml::encrypted_reply(&encrypted, &signature, &timestamp, nonce)
}

/// Queues a message to the platform (the job queue retries it).
fn send_later(state: &State, sender: Arc<dyn crate::channels::Sender>, message: Outgoing) {
    let session = message.key.session_id();
    if let Err(error) = crate::channels::deliver(&state.jobs, sender, message) {
        tracing::warn!(session = %LogSafe(&session), %error, "wechat reply not queued");
    }
}

/// Starts the account's pull unless one runs; a running one pulls again when done.
fn pull_soon(state: &Arc<State>, wechat: &Arc<Wechat>, live: &Arc<Live>, puller: &Arc<Puller>) {
    puller.again.store(true, Ordering::SeqCst);
    if puller.running.swap(true, Ordering::SeqCst) {
        return;
    }
    let (state, wechat, live, puller) = (
        Arc::clone(state),
        Arc::clone(wechat),
        Arc::clone(live),
        Arc::clone(puller),
    );
    tokio::spawn(async move {
        loop {
            puller.again.store(false, Ordering::SeqCst);
            pull(&state, &wechat, &live, &puller).await;
            puller.running.store(false, Ordering::SeqCst);
            // A callback that came during the pull (and saw it running) is pulled for now.
            if !puller.again.load(Ordering::SeqCst) || puller.running.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    });
}

/// Pulls the waiting messages until none is left, answering them.
async fn pull(state: &Arc<State>, wechat: &Arc<Wechat>, live: &Arc<Live>, puller: &Arc<Puller>) {
    for _ in 0..KF_MAX_PAGES {
        let (token, cursor) = (
            puller.token.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            puller.cursor(),
        );
        let api_live = Arc::clone(live);
        let page = tokio::task::spawn_blocking(move || api_live.api.kf_sync(&token, "", &cursor)).await;
        let page = match page {
            Ok(Ok(page)) => page,
            Ok(Err(error)) => {
                tracing::warn!(account = %live.account.name, %error, "wechat kf/sync_msg failed; the next callback pulls again");
                return;
            }
            Err(error) => {
                tracing::error!(account = %live.account.name, %error, "wechat kf pull panicked");
                return;
            }
        };
        // A customer's messages in order, customers in parallel (a few at a time).
        let mut by_customer: Vec<(String, Vec<KfMessage>)> = Vec::new();
        for message in page.msg_list {
            let customer = customer_of(&message).to_string();
            match by_customer.iter_mut().find(|(c, _)| *c == customer) {
                Some((_, list)) => list.push(message),
                None => by_customer.push((customer, vec![message])),
            }
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(KF_PARALLEL));
        let mut tasks = tokio::task::JoinSet::new();
        for (_, messages) in by_customer {
            let (state, wechat, live, permits) = (
                Arc::clone(state),
                Arc::clone(wechat),
                Arc::clone(live),
                Arc::clone(&permits),
            );
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                for message in messages {
                    kf_message(&state, &wechat, &live, message).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        if !page.next_cursor.is_empty() {
            puller.advance(&page.next_cursor);
        }
        if page.has_more == 0 {
            return;
        }
    }
    tracing::warn!(account = %live.account.name, "wechat kf pull stopped after {KF_MAX_PAGES} pages");
}

fn customer_of(message: &KfMessage) -> &str {
    match &message.event {
        Some(event) if message.external_userid.is_empty() => &event.external_userid,
        _ => &message.external_userid,
    }
}

/// Answers one pulled message or event, if it is a customer's.
async fn kf_message(state: &Arc<State>, wechat: &Arc<Wechat>, live: &Arc<Live>, message: KfMessage) {
    if message.send_time > 0 && now() - message.send_time > KF_MAX_AGE {
        return;
    }
    let (text, event, welcome_code) = match (message.origin, message.msgtype.as_str()) {
        (3, "text") => (
            message.text.as_ref().map_or("", |t| t.content.as_str()).to_string(),
            None,
            None,
        ),
        (3, kind @ ("image" | "voice" | "video" | "location" | "file")) => {
            (String::new(), Some(kind.to_string()), None)
        }
        (_, "event") => match &message.event {
            Some(e) if e.event_type == "enter_session" => (
                String::new(),
                Some("enter_session".to_string()),
                Some(e.welcome_code.clone()).filter(|c| !c.is_empty()),
            ),
            _ => return,
        },
        _ => return,
    };
    let open_kfid = match &message.event {
        Some(event) if message.open_kfid.is_empty() => event.open_kfid.as_str(),
        _ => message.open_kfid.as_str(),
    };
    let Ok(key) = SessionKey::new(WECHAT_KF, open_kfid, customer_of(&message)) else {
        tracing::warn!(msgid = %LogSafe(&message.msgid), "a wechat kf message without usable ids; skipped");
        return;
    };
    if text.trim().is_empty() && event.is_none() {
        return;
    }
    let seen = format!("{WECHAT_KF}:{}:{}", live.account.app_id, message.msgid);
    if message.msgid.is_empty() || !state.first_seen(seen).await {
        state.metrics.channel_message(WECHAT_KF, "duplicate");
        return;
    }
    state.metrics.channel_message(WECHAT_KF, "accepted");
    wechat.kf.learn(open_kfid, live);
    let session_id = key.session_id();
    if state.check_rate(&session_id).is_err() {
        tracing::warn!(session = %LogSafe(&session_id), "wechat kf message over the per-session rate; not answered");
        return;
    }
    let mut request = channel_request(state, session_id, text, event, WECHAT_KF);
    let media = (message.msgtype == "image")
        .then(|| message.image.as_ref().map(|m| m.media_id.trim()))
        .flatten()
        .filter(|id| !id.is_empty());
    if let Some(media) = media {
        let photo = fetch_photo(state, live, WECHAT_KF, &request.session_id, media).await;
        with_photo(&mut request, photo);
    }
    let Some(response) = answered(Ok(state.run_turn(request).await)) else {
        return;
    };
    if response.reply.is_empty() {
        return;
    }
    let outgoing = Outgoing {
        key,
        text: response.reply,
        id: format!("{WECHAT_KF}:{}:reply", message.msgid),
        choices: response.choices,
    };
    if let Some(code) = welcome_code
        && outgoing.text.len() <= TEXT_LIMIT
    {
        let (api_live, text, msgid) = (
            Arc::clone(live),
            outgoing.text.clone(),
            crate::channels::wechat::send::kf_msgid(&outgoing.id, 0),
        );
        let welcomed = tokio::task::spawn_blocking(move || api_live.api.kf_send_on_event(&code, &msgid, &text)).await;
        match welcomed {
            Ok(Ok(())) => return,
            Ok(Err(error)) => tracing::info!(%error, "wechat kf welcome by code failed; sending it as a message"),
            Err(error) => tracing::error!(%error, "wechat kf welcome panicked"),
        }
    }
    send_later(state, Arc::clone(&wechat.kf) as _, outgoing);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(xml_text: &str) -> xml::Fields {
        xml::parse(xml_text).unwrap()
    }

    #[test]
    fn messages_and_events_become_text_or_event_turns() {
        let turn = |body: &str| mp_turn(&fields(&format!("<xml>{body}</xml>")));
        assert_eq!(
            turn("<MsgType>text</MsgType><Content>有优惠吗</Content>"),
            Some(("有优惠吗".into(), None))
        );
        assert_eq!(
            turn("<MsgType>event</MsgType><Event>subscribe</Event>"),
            Some((String::new(), Some("subscribe".into())))
        );
        assert_eq!(
            turn("<MsgType>event</MsgType><Event>SCAN</Event>"),
            Some((String::new(), Some("scan".into())))
        );
        assert_eq!(turn("<MsgType>event</MsgType><Event>VIEW</Event>"), None);
        assert_eq!(
            turn("<MsgType>image</MsgType>"),
            Some((String::new(), Some("image".into())))
        );
        assert_eq!(
            turn("<MsgType>shortvideo</MsgType>"),
            Some((String::new(), Some("video".into())))
        );
        assert_eq!(
            turn("<MsgType>voice</MsgType><Recognition>退货</Recognition>"),
            Some(("退货".into(), None))
        );
        assert_eq!(turn("<MsgType>link</MsgType>"), None);
    }

    #[test]
    fn a_photo_message_names_its_media_and_becomes_an_image_turn_when_taken() {
        let media = |body: &str| mp_media(&fields(&format!("<xml>{body}</xml>"))).map(str::to_string);
        assert_eq!(
            media("<MsgType>image</MsgType><PicUrl>http://x/y</PicUrl><MediaId>M1</MediaId>").as_deref(),
            Some("M1")
        );
        assert_eq!(media("<MsgType>image</MsgType><MediaId> </MediaId>"), None);
        assert_eq!(media("<MsgType>voice</MsgType><MediaId>M2</MediaId>"), None);
        let mut request = TurnRequest {
            event: Some("image".into()),
            ..TurnRequest::default()
        };
        with_photo(&mut request, None);
        assert_eq!((request.event.as_deref(), request.images.len()), (Some("image"), 0));
        let photo = ImageRef {
            id: "img_1".into(),
            kind: "jpeg".into(),
            ..ImageRef::default()
        };
        with_photo(&mut request, Some(photo.clone()));
        assert_eq!((request.event, request.images), (None, vec![photo]));
    }
}
