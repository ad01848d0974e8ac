//! WeChat's server API, the part kefu calls: the access token, the Official Account's
//! customer-service message (`cgi-bin/message/custom/send`), WeChat customer
//! service's `kf/sync_msg` (pull the waiting messages), `kf/send_msg` and
//! `kf/send_msg_on_event` (answer), and `cgi-bin/media/get` (a customer's photo, by the
//! `MediaId` its message names; both kinds of account, read up to a size bound).
//!
//! **The access token** (`cgi-bin/token` for Official Accounts, `cgi-bin/gettoken` for
//! WeCom) lives two hours; it is cached per account and fetched again five minutes before
//! it expires, by one caller at a time (the others wait for it rather than each asking:
//! Tencent limits token requests a day, and a new token ends the old one after a grace
//! period). A call answered `40001`, `42001` or `40014` (the token is invalid or expired:
//! another process took a new one, or the clock lied) drops the token and is tried once
//! more with a fresh one.
//!
//! **Failures** map to the job queue's: transport errors, timeouts, 5xx, `-1` (busy) and
//! `45009` (rate limit) are temporary (retried with backoff); every other `errcode`
//! (`45015`: the customer has not written for 48 hours; `40003`: not a follower...) is
//! permanent. Errors never carry the access token or the secret (ureq's error texts
//! include the URL; the token is cut out of them).
//!
//! **Long texts** are split ([`split_text`]) at WeChat's limit for a text message, 2,048
//! bytes of UTF-8, preferring a line break or a sentence's end.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, WechatAccount};
use crate::jobs::JobError;

/// The most bytes of UTF-8 WeChat takes in one text message.
pub const TEXT_LIMIT: usize = 2048;
/// How long before its expiry a token is replaced.
pub const REFRESH_EARLY: Duration = Duration::from_secs(300);
/// The time limit of one API call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest photo fetched from `media/get`: WeChat's own bound for an image message
/// (the image intake checks its configured limit again).
pub const MEDIA_LIMIT: u64 = 10 * 1024 * 1024;

/// The `errcode`s that mean the access token is no good (invalid, expired, not the
/// latest).
const STALE_TOKEN: [i64; 3] = [40001, 42001, 40014];

/// A cached access token.
struct Token {
    value: String,
    renew_at: Instant,
}

/// One account's API client: its token and an HTTP agent.
pub struct Api {
    kind: Kind,
    base: String,
    app_id: String,
    secret: super::Secret,
    agent: ureq::Agent,
    token: Mutex<Option<Token>>,
    /// Held while a token is fetched, so that one caller fetches it.
    refreshing: Mutex<()>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("kind", &self.kind)
            .field("base", &self.base)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// One page of `kf/sync_msg`.
#[derive(Debug, Default, Deserialize)]
pub struct SyncPage {
    /// The cursor to pull the next page (and the next callback's messages) from.
    #[serde(default)]
    pub next_cursor: String,
    /// 1 while more messages wait.
    #[serde(default)]
    pub has_more: i64,
    /// The messages.
    #[serde(default)]
    pub msg_list: Vec<KfMessage>,
}

/// A message or event of `kf/sync_msg` (the fields kefu reads).
#[derive(Debug, Default, Deserialize)]
pub struct KfMessage {
    /// Its id (de-duplication).
    #[serde(default)]
    pub msgid: String,
    /// The customer-service account.
    #[serde(default)]
    pub open_kfid: String,
    /// The customer.
    #[serde(default)]
    pub external_userid: String,
    /// 3: from the customer; 4: a system event; 5: from a servicer (a person in WeCom).
    #[serde(default)]
    pub origin: i64,
    /// When it was sent (unix seconds).
    #[serde(default)]
    pub send_time: i64,
    /// `text`, `image`, `voice`, `video`, `file`, `location`, `event`...
    #[serde(default)]
    pub msgtype: String,
    /// The text, for `text`.
    #[serde(default)]
    pub text: Option<KfText>,
    /// The photo, for `image`.
    #[serde(default)]
    pub image: Option<KfMedia>,
    /// The event, for `event`.
    #[serde(default)]
    pub event: Option<KfEvent>,
}

/// A text message's content.
#[derive(Debug, Default, Deserialize)]
pub struct KfText {
    /// The text.
    #[serde(default)]
    pub content: String,
}

/// A media message's content (`image`).
#[derive(Debug, Default, Deserialize)]
pub struct KfMedia {
    /// The id to fetch it with (`media/get`, valid three days).
    #[serde(default)]
    pub media_id: String,
}

/// An event of `kf/sync_msg`.
#[derive(Debug, Default, Deserialize)]
pub struct KfEvent {
    /// `enter_session`, `msg_send_fail`, `servicer_status_change`...
    #[serde(default)]
    pub event_type: String,
    /// The account, for events.
    #[serde(default)]
    pub open_kfid: String,
    /// The customer, for events.
    #[serde(default)]
    pub external_userid: String,
    /// For `enter_session`: the code that lets one welcome message through
    /// (`kf/send_msg_on_event`), valid 20 seconds.
    #[serde(default)]
    pub welcome_code: String,
}

impl Api {
    /// The client of `account`.
    pub fn new(account: &WechatAccount) -> Api {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(CALL_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Api {
            kind: account.kind,
            base: account.api_base.trim_end_matches('/').to_string(),
            app_id: account.app_id.clone(),
            secret: account.app_secret.clone(),
            agent,
            token: Mutex::new(None),
            refreshing: Mutex::new(()),
        }
    }

    /// The access token: the cached one, or a new one when it is near its expiry.
    pub fn access_token(&self) -> Result<String, JobError> {
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        let _one_at_a_time = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        // Another caller may have fetched it while this one waited.
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        let secret = self
            .secret
            .text()
            .ok_or_else(|| JobError::Permanent("the app secret is not UTF-8".into()))?;
        let url = match self.kind {
            Kind::OfficialAccount => format!(
                "{}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
                self.base,
                enc(&self.app_id),
                enc(secret)
            ),
            Kind::CustomerService => format!(
                "{}/cgi-bin/gettoken?corpid={}&corpsecret={}",
                self.base,
                enc(&self.app_id),
                enc(secret)
            ),
        };
        let response = self.agent.get(&url).call();
        let body = read(response, secret)?;
        check(&body)?;
        let value = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| JobError::Temporary("the token answer has no access_token".into()))?
            .to_string();
        let lifetime = Duration::from_secs(body.get("expires_in").and_then(Value::as_u64).unwrap_or(7200));
        let renew_at = Instant::now() + lifetime.saturating_sub(REFRESH_EARLY);
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(Token {
            value: value.clone(),
            renew_at,
        });
        Ok(value)
    }

    fn cached(&self) -> Option<String> {
        let token = self.token.lock().unwrap_or_else(|e| e.into_inner());
        token
            .as_ref()
            .filter(|t| Instant::now() < t.renew_at)
            .map(|t| t.value.clone())
    }

    /// Forgets `stale` (unless another caller already replaced it).
    fn forget(&self, stale: &str) {
        let mut token = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if token.as_ref().is_some_and(|t| t.value == stale) {
            *token = None;
        }
    }

    /// POSTs `body` to `path` with the access token; a stale token is replaced and the
    /// call made once more.
    pub fn call(&self, path: &str, body: &Value) -> Result<Value, JobError> {
        for attempt in 0..2 {
            let token = self.access_token()?;
            let url = format!("{}/{}?access_token={}", self.base, path, enc(&token));
            let response = self.agent.post(&url).send_json(body);
            let answer = read(response, &token)?;
            let code = errcode(&answer);
            if STALE_TOKEN.contains(&code) && attempt == 0 {
                tracing::info!(
                    api = path,
                    errcode = code,
                    "wechat access token refused; fetching a new one"
                );
                self.forget(&token);
                continue;
            }
            check(&answer)?;
            return Ok(answer);
        }
        Err(JobError::Temporary("the access token was refused twice".into()))
    }

    /// Sends one text (at most [`TEXT_LIMIT`] bytes) to an Official Account's follower
    /// (`message/custom/send`).
    pub fn custom_send(&self, openid: &str, text: &str) -> Result<(), JobError> {
        let body = json!({"touser": openid, "msgtype": "text", "text": {"content": text}});
        self.call("cgi-bin/message/custom/send", &body).map(drop)
    }

    /// A customer's photo by its media id (`cgi-bin/media/get`, a GET with the token),
    /// at most `limit` bytes: the body as it came, whatever its type (the image intake
    /// reads the type from the bytes). WeChat answers an error as JSON (`40007`: the id
    /// is unknown or expired after three days); a stale token is replaced and the call
    /// made once more. A body over `limit` is refused (permanent) without reading the rest.
    pub fn media_get(&self, media_id: &str, limit: u64) -> Result<Vec<u8>, JobError> {
        for attempt in 0..2 {
            let token = self.access_token()?;
            let url = format!(
                "{}/cgi-bin/media/get?access_token={}&media_id={}",
                self.base,
                enc(&token),
                enc(media_id)
            );
            let redact = |text: String| text.replace(&token, "***").replace(&enc(&token), "***");
            let mut response = self
                .agent
                .get(&url)
                .call()
                .map_err(|e| JobError::Temporary(redact(format!("wechat media/get: {e}"))))?;
            let status = response.status().as_u16();
            if status >= 500 || status == 429 {
                return Err(JobError::Temporary(format!("wechat media/get answered {status}")));
            }
            if status >= 400 {
                return Err(JobError::Permanent(format!("wechat media/get answered {status}")));
            }
            let json = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.contains("json") || t.starts_with("text/"));
            if json {
                // An error (or, for WeCom's `media/get` of a video, a URL): never a photo.
                let answer = response
                    .body_mut()
                    .with_config()
                    .limit(1 << 16)
                    .read_json::<Value>()
                    .map_err(|e| JobError::Temporary(redact(format!("wechat media/get answered oddly: {e}"))))?;
                let code = errcode(&answer);
                if STALE_TOKEN.contains(&code) && attempt == 0 {
                    self.forget(&token);
                    continue;
                }
                check(&answer)?;
                return Err(JobError::Permanent(
                    "wechat media/get answered JSON, not the media".into(),
                ));
            }
            return response
                .body_mut()
                .with_config()
                .limit(limit)
                .read_to_vec()
                .map_err(|e| match e {
                    ureq::Error::BodyExceedsLimit(_) => {
                        JobError::Permanent(format!("the media is larger than {limit} bytes"))
                    }
                    e => JobError::Temporary(redact(format!("wechat media/get: {e}"))),
                });
        }
        Err(JobError::Temporary("the access token was refused twice".into()))
    }

    /// Pulls one page of waiting customer-service messages: of `open_kfid`, or of every
    /// account the app serves when it is empty; from `cursor` (empty: the start).
    pub fn kf_sync(&self, callback_token: &str, open_kfid: &str, cursor: &str) -> Result<SyncPage, JobError> {
        let mut body = json!({"token": callback_token, "limit": 1000, "voice_format": 0});
        if !open_kfid.is_empty() {
            body["open_kfid"] = json!(open_kfid);
        }
        if !cursor.is_empty() {
            body["cursor"] = json!(cursor);
        }
        let answer = self.call("cgi-bin/kf/sync_msg", &body)?;
        serde_json::from_value(answer).map_err(|e| JobError::Temporary(format!("kf/sync_msg answered oddly: {e}")))
    }

    /// Sends one text (at most [`TEXT_LIMIT`] bytes) to a customer-service customer;
    /// `msgid` (≤ 32 of `[0-9A-Za-z_-]`) lets WeChat drop a repeat.
    pub fn kf_send(&self, open_kfid: &str, external_userid: &str, msgid: &str, text: &str) -> Result<(), JobError> {
        let body = json!({
            "touser": external_userid,
            "open_kfid": open_kfid,
            "msgid": msgid,
            "msgtype": "text",
            "text": {"content": text},
        });
        self.call("cgi-bin/kf/send_msg", &body).map(drop)
    }

    /// Sends the welcome text of an `enter_session` event with its `welcome_code`.
    pub fn kf_send_on_event(&self, welcome_code: &str, msgid: &str, text: &str) -> Result<(), JobError> {
        let body = json!({"code": welcome_code, "msgid": msgid, "msgtype": "text", "text": {"content": text}});
        self.call("cgi-bin/kf/send_msg_on_event", &body).map(drop)
    }
}

/// Percent-encodes a query value.
fn enc(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The JSON of an answer; transport failures and 5xx are temporary. `hide` (the token or
/// the secret in the URL) is cut out of error texts.
fn read(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>, hide: &str) -> Result<Value, JobError> {
    let redact = |text: String| {
        let text = if hide.is_empty() {
            text
        } else {
            text.replace(hide, "***")
        };
        text.replace(&enc(hide), "***")
    };
    let mut response = response.map_err(|e| JobError::Temporary(redact(format!("wechat api: {e}"))))?;
    let status = response.status().as_u16();
    if status >= 500 || status == 429 {
        return Err(JobError::Temporary(format!("wechat api answered {status}")));
    }
    if status >= 400 {
        return Err(JobError::Permanent(format!("wechat api answered {status}")));
    }
    response
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_json::<Value>()
        .map_err(|e| JobError::Temporary(redact(format!("wechat api answered no JSON: {e}"))))
}

fn errcode(answer: &Value) -> i64 {
    answer.get("errcode").and_then(Value::as_i64).unwrap_or(0)
}

/// `errcode` 0 (or none) is success; `-1` and `45009` may pass; the rest will not.
fn check(answer: &Value) -> Result<(), JobError> {
    let code = errcode(answer);
    if code == 0 {
        return Ok(());
    }
    let message: String = answer
        .get("errmsg")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    let error = format!("wechat errcode {code}: {message}");
    if code == -1 || code == 45009 || STALE_TOKEN.contains(&code) {
        Err(JobError::Temporary(error))
    } else {
        Err(JobError::Permanent(error))
    }
}

/// `text` in parts of at most `limit` bytes of UTF-8, cut at character boundaries,
/// preferring the last line break, else the last sentence end (`。！？；!?;` or `. `),
/// in the part's second half (so no part is tiny). Empty text is no part.
pub fn split_text(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(4);
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while rest.len() > limit {
        let mut cut = limit;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let window = &rest[..cut];
        let half = cut / 2;
        let at_break = window.rfind('\n').filter(|&i| i >= half).map(|i| i + 1).or_else(|| {
            window
                .char_indices()
                .filter(|&(i, c)| i >= half && matches!(c, '。' | '！' | '？' | '；' | '!' | '?' | ';' | '.'))
                .map(|(i, c)| i + c.len_utf8())
                .next_back()
        });
        let cut = at_break.unwrap_or(cut);
        parts.push(rest[..cut].trim_end().to_string());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        parts.push(rest.to_string());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_one_part_and_empty_ones_none() {
        assert_eq!(split_text("你好", TEXT_LIMIT), vec!["你好"]);
        assert!(split_text("  ", TEXT_LIMIT).is_empty());
    }

    #[test]
    fn long_texts_split_at_lines_sentences_or_characters() {
        // 1,000 Chinese characters (3,000 bytes) with no break: cut at a character
        // boundary, every part within the limit, nothing lost.
        let text = "字".repeat(1000);
        let parts = split_text(&text, TEXT_LIMIT);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= TEXT_LIMIT));
        assert_eq!(parts.concat(), text);
        // A sentence end in the second half is preferred.
        let text = format!("{}。{}", "甲".repeat(500), "乙".repeat(500));
        let parts = split_text(&text, TEXT_LIMIT);
        assert_eq!(parts[0], format!("{}。", "甲".repeat(500)));
        assert_eq!(parts[1], "乙".repeat(500));
        // A line break is preferred to a sentence end.
        let text = format!("{}。{}\n{}", "甲".repeat(400), "丙".repeat(200), "乙".repeat(500));
        let parts = split_text(&text, TEXT_LIMIT);
        assert_eq!(parts[0], format!("{}。{}", "甲".repeat(400), "丙".repeat(200)));
        // A break in the first half is not taken (the part would be tiny).
        let text = format!("a\n{}", "b".repeat(3000));
        let parts = split_text(&text, TEXT_LIMIT);
        assert_eq!(parts[0].len(), TEXT_LIMIT);
    }

    #[test]
    fn errcodes_map_to_temporary_or_permanent() {
        assert!(check(&json!({"errcode": 0, "errmsg": "ok"})).is_ok());
        assert!(check(&json!({"access_token": "x"})).is_ok());
        assert!(matches!(check(&json!({"errcode": -1})), Err(JobError::Temporary(_))));
        assert!(matches!(check(&json!({"errcode": 45009})), Err(JobError::Temporary(_))));
        assert!(matches!(check(&json!({"errcode": 45015})), Err(JobError::Permanent(_))));
    }
}
