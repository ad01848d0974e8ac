//! Webhook channels: any platform (Taobao/千牛, JD, Douyin, an in-house app) that posts
//! its customers' messages to kefu as JSON and takes kefu's replies at a URL it names.
//! Both directions are signed with the channel's HMAC-SHA256 secret ([`sign`],
//! [`verify`]); replies and agents' messages are posted by a [`Poster`] from the job
//! queue (see [`super::deliver`]). The route is `server::channels::webhook`.

use std::path::Path;

use serde::Deserialize;

use super::{Secret, SecretRef, valid_name};

/// One webhook channel.
#[derive(Clone, Debug)]
pub struct WebhookChannel {
    /// Its name: the route `/v1/channels/{name}/messages`, the turn's `channel`, the
    /// report's row.
    pub name: String,
    /// The HMAC-SHA256 key of both directions.
    pub secret: Secret,
    /// Where replies and agents' messages are posted.
    pub reply_url: String,
}

/// A `webhook:` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhookFile {
    name: String,
    secret: SecretRef,
    reply_url: String,
}

impl WebhookFile {
    /// The channel checked, its secret read.
    pub(super) fn resolve(self, base: &Path) -> Result<WebhookChannel, String> {
        if !valid_name(&self.name) || super::RESERVED.contains(&self.name.as_str()) {
            return Err(format!(
                "webhook channel name `{}`: 1-32 lowercase letters, digits or `_`, starting with a letter, not one of {:?}",
                self.name,
                super::RESERVED
            ));
        }
        let url_ok = url::Url::parse(&self.reply_url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !url_ok {
            return Err(format!(
                "webhook channel `{}`: `reply_url` is not an http(s) URL",
                self.name
            ));
        }
        let secret = self
            .secret
            .resolve(base)
            .map_err(|e| format!("webhook channel `{}`: secret: {e}", self.name))?;
        Ok(WebhookChannel {
            name: self.name,
            secret,
            reply_url: self.reply_url,
        })
    }
}

/// How far a request's `X-Kefu-Timestamp` may be from this node's clock, either way.
pub const MAX_SKEW_S: i64 = 300;

/// The signature of a webhook request or reply: `sha256=` and the lowercase hex of
/// HMAC-SHA256(secret, `"{timestamp}.{body}"`), the `X-Kefu-Signature` header.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    use hmac::Mac as _;
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in digest {
        out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    out
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac as _;
    let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a webhook request's signature is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// No `X-Kefu-Timestamp`, or not a whole number of seconds.
    #[error("`X-Kefu-Timestamp` is missing or not Unix seconds")]
    NoTimestamp,
    /// The timestamp is more than [`MAX_SKEW_S`] from now.
    #[error("`X-Kefu-Timestamp` is more than 300 s from this server's clock (a replay, or a clock to set right)")]
    Stale,
    /// No `X-Kefu-Signature`, or not `sha256=` and 64 hex digits.
    #[error("`X-Kefu-Signature` is missing or not `sha256=<64 hex digits>`")]
    NoSignature,
    /// The signature does not match the body with the channel's secret.
    #[error("`X-Kefu-Signature` does not match the body and timestamp with the channel's secret")]
    Mismatch,
}

/// Checks a webhook request's two headers against its raw body: the timestamp within
/// [`MAX_SKEW_S`] of `now` (Unix seconds), then the signature, compared in constant time.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let timestamp: i64 = timestamp
        .and_then(|t| t.trim().parse().ok())
        .ok_or(SignatureError::NoTimestamp)?;
    if timestamp.abs_diff(now) > MAX_SKEW_S as u64 {
        return Err(SignatureError::Stale);
    }
    let hex = signature
        .and_then(|s| s.trim().strip_prefix("sha256="))
        .filter(|h| h.len() == 64)
        .ok_or(SignatureError::NoSignature)?;
    let mut expected = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => expected[i] = (high * 16 + low) as u8,
            _ => return Err(SignatureError::NoSignature),
        }
    }
    use hmac::Mac as _;
    mac(secret, timestamp, body)
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// A handoff as a webhook reply carries it.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct ReplyHandoff {
    /// The reason the rules gave.
    pub reason: String,
    /// The agents' queue it waits in, when the shop has queues.
    pub group: Option<String>,
    /// The customer's place in it when told (1: next).
    pub place: Option<usize>,
}

/// What a posted message says besides its text: what it answers, and who wrote it.
#[derive(Clone, Debug, Default)]
pub struct ReplyMeta {
    /// The platform's id of the message it answers; `None` for an agent's message.
    pub in_reply_to: Option<String>,
    /// The platform's user, as the message it answers gave it.
    pub user_id: Option<String>,
    /// What answered (`rule`, `faq`, `llm`... as `TurnResponse.source`), or `agent` for
    /// what reaches the customer outside a turn.
    pub source: String,
    /// The conversation went to a person.
    pub handoff: Option<ReplyHandoff>,
}

/// The JSON body of a message kefu posts to a channel's `reply_url`.
#[derive(Debug, serde::Serialize)]
pub struct Posted<'a> {
    /// Stable across retries (the `Idempotency-Key` too): `{their id}:reply` for a
    /// reply, `{session id}#{seq}` for a later message.
    pub message_id: &'a str,
    /// The platform's id of the message this answers.
    pub in_reply_to: Option<&'a str>,
    /// The platform's conversation.
    pub conversation_id: &'a str,
    /// The platform's user, when the message answered named one.
    pub user_id: Option<&'a str>,
    /// What to show.
    pub text: &'a str,
    /// Quick replies, when the reply asks to pick one.
    pub choices: &'a [String],
    /// What answered: an answer source, or `agent`.
    pub source: &'a str,
    /// Set when the conversation went to a person.
    pub handoff: Option<&'a ReplyHandoff>,
    /// When kefu sent it (RFC 3339, UTC).
    pub sent_at: String,
}

impl<'a> Posted<'a> {
    /// The body of `message` with `meta`.
    pub fn of(message: &'a super::Outgoing, meta: &'a ReplyMeta) -> Posted<'a> {
        Posted {
            message_id: &message.id,
            in_reply_to: meta.in_reply_to.as_deref(),
            conversation_id: &message.key.user,
            user_id: meta.user_id.as_deref(),
            text: &message.text,
            choices: &message.choices,
            source: &meta.source,
            handoff: meta.handoff.as_ref(),
            sent_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// Posts messages to one webhook channel's `reply_url`, signed with its secret.
pub struct Poster {
    channel: WebhookChannel,
    agent: ureq::Agent,
}

impl Poster {
    /// A poster for `channel`; each post may take `timeout` (a timeout is a temporary
    /// failure, retried).
    pub fn new(channel: WebhookChannel, timeout: std::time::Duration) -> Poster {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Poster { channel, agent }
    }

    /// The channel it posts for.
    pub fn channel(&self) -> &WebhookChannel {
        &self.channel
    }

    /// One attempt: 2xx and 409 (the platform had it already) are done, 408 and 429 and
    /// 5xx and network failures temporary, any other status permanent.
    pub fn post(&self, message: &super::Outgoing, meta: &ReplyMeta) -> Result<(), crate::jobs::JobError> {
        use crate::jobs::JobError;
        let body = serde_json::to_vec(&Posted::of(message, meta)).expect("a posted message always serializes");
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(self.channel.secret.expose(), timestamp, &body);
        let response = self
            .agent
            .post(&self.channel.reply_url)
            .header("Content-Type", "application/json")
            .header("X-Kefu-Timestamp", &timestamp.to_string())
            .header("X-Kefu-Signature", &signature)
            .header("Idempotency-Key", &message.id)
            .send(&body[..]);
        let status = match response {
            Ok(response) => response.status().as_u16(),
            Err(error) => return Err(JobError::Temporary(format!("{}: {error}", self.channel.name))),
        };
        match status {
            200..=299 | 409 => Ok(()),
            408 | 429 | 500..=599 => Err(JobError::Temporary(format!(
                "{}: reply_url answered {status}",
                self.channel.name
            ))),
            _ => Err(JobError::Permanent(format!(
                "{}: reply_url answered {status}",
                self.channel.name
            ))),
        }
    }
}

/// The sender of one reply: the poster and what the reply answers.
pub struct ReplySender {
    /// The channel's poster.
    pub poster: std::sync::Arc<Poster>,
    /// What the reply answers, and how.
    pub meta: ReplyMeta,
}

impl super::Sender for ReplySender {
    fn send(&self, message: &super::Outgoing) -> Result<(), crate::jobs::JobError> {
        self.poster.post(message, &self.meta)
    }
}

/// The channel's registered sender: what reaches a customer outside a turn (an agent's
/// answer, a job's notice), posted with `source: "agent"` and no `in_reply_to`.
pub struct AgentSender(pub std::sync::Arc<Poster>);

impl super::Sender for AgentSender {
    fn send(&self, message: &super::Outgoing) -> Result<(), crate::jobs::JobError> {
        let meta = ReplyMeta {
            source: "agent".into(),
            ..ReplyMeta::default()
        };
        self.0.post(message, &meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse() {
        let body = br#"{"message_id":"m1"}"#;
        let signature = sign(b"s3cret", 1_700_000_000, body);
        assert!(signature.starts_with("sha256=") && signature.len() == 71);
        let now = 1_700_000_100;
        let check = |ts: Option<&str>, sig: Option<&str>, body: &[u8]| verify(b"s3cret", ts, sig, body, now);
        assert_eq!(check(Some("1700000000"), Some(&signature), body), Ok(()));
        assert_eq!(
            check(
                Some("1700000000"),
                Some(&signature.to_uppercase().replace("SHA256", "sha256")),
                body
            ),
            Ok(()),
            "hex digits in either case"
        );
        assert_eq!(
            check(Some("1700000000"), Some(&signature), b"{}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(Some("1700000001"), Some(&signature), body),
            Err(SignatureError::Mismatch),
            "the timestamp is signed"
        );
        assert_eq!(
            check(Some("1699999000"), Some(&signature), body),
            Err(SignatureError::Stale)
        );
        assert_eq!(check(None, Some(&signature), body), Err(SignatureError::NoTimestamp));
        assert_eq!(
            check(Some("soon"), Some(&signature), body),
            Err(SignatureError::NoTimestamp)
        );
        assert_eq!(check(Some("1700000000"), None, body), Err(SignatureError::NoSignature));
        assert_eq!(
            check(Some("1700000000"), Some("sha256=zz"), body),
            Err(SignatureError::NoSignature)
        );
        let wrong = sign(b"other", 1_700_000_000, body);
        assert_eq!(
            check(Some("1700000000"), Some(&wrong), body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_known_signature() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"key",b"1.hello",hashlib.sha256).hexdigest())'
        assert_eq!(
            sign(b"key", 1, b"hello"),
            "sha256=9233658ef5e21fe59dba8abb099c978547d7626f87090a6a585c26a2a98a91f8"
        );
    }
}
