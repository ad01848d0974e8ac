//! Channels: where customers write from besides the JSON API. The web widget (`web`),
//! WeChat Official Accounts (`wechat_mp`) and WeChat customer service (`wechat_kf`), and
//! webhook channels for every other platform (named in the channels file: `taobao`,
//! `jd`...). Every message from every channel goes through the same `Engine::turn`, with
//! its channel in the turn (`TurnRequest::channel`), so rules can answer per channel and
//! the report breaks figures down by it.
//!
//! This module holds what does not speak HTTP: the channels file ([`ChannelsConfig`],
//! read once at start, secrets from the environment or files, never from rule files), the
//! session ids of channel conversations ([`SessionKey`]), message de-duplication
//! ([`Seen`]: platforms retry), the protocol pieces (`wechat`'s signatures, AES and XML),
//! and the outbound side ([`Outbound`]: a reply or an agent's message sent to the
//! platform as a job). The routes that receive messages are in `server::channels`.

pub mod outbound;
pub mod redis_seen;
pub mod webhook;
pub mod wechat;
pub mod widget;

pub use outbound::{DeliveryObserver, DeliveryOutcome, deliver};
pub use redis_seen::RedisSeen;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// The channel of the JSON API (`/v1/chat`, `/v1/chat/completions`), and of a turn whose
/// `channel` is absent.
pub const API: &str = RESERVED[0];
/// The web widget.
pub const WEB: &str = RESERVED[1];
/// A WeChat Official Account (公众号).
pub const WECHAT_MP: &str = RESERVED[2];
/// WeChat customer service (微信客服, through WeCom).
pub const WECHAT_KF: &str = RESERVED[3];
/// The names no webhook channel may take: the built-in channels, the list `kefu check`
/// knows (`script::shape::CHANNELS`, on the rules side, which cannot import this module).
pub const RESERVED: [&str; 4] = crate::script::shape::CHANNELS;

/// The prefix of every channel conversation's session id; the public chat routes refuse
/// session ids that start with it, so no API client can write into a WeChat or webhook
/// customer's conversation.
pub const SESSION_PREFIX: &str = "ch:";

/// Whether a session id belongs to a channel conversation (and is refused on the API).
pub fn is_reserved_session(id: &str) -> bool {
    id.starts_with(SESSION_PREFIX)
}

/// Whether `name` may name a webhook channel or a WeChat account in the channels file:
/// 1-32 ASCII lowercase letters, digits or `_`, starting with a letter, not one of
/// [`RESERVED`]. Names become metric labels and parts of session ids.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= 32
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Who a channel conversation is with: the channel, the account on the platform (the
/// Official Account's app id, the customer-service account's `open_kfid`, a webhook
/// channel's shop, or `-`), and the customer there (openid, external_userid, the
/// platform's conversation id). Its session id is `ch:{channel}:{account}:{user}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The channel's name (`wechat_mp`, `wechat_kf`, a webhook channel's name).
    pub channel: String,
    /// The account on the platform, `-` when there is one.
    pub account: String,
    /// The customer (or conversation) on the platform.
    pub user: String,
}

/// Why a channel's ids do not make a session id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// A part is empty, too long, or has a character outside `[A-Za-z0-9_@.=+/-]`.
    #[error("`{0}` is not a usable id: 1-64 letters, digits or `_@.=+/-`")]
    Part(String),
}

impl SessionKey {
    /// A key from its parts, each checked (1-64 characters of `[A-Za-z0-9_@.=+/-]`, no
    /// `:`), so that the session id parses back into the same parts.
    pub fn new(channel: &str, account: &str, user: &str) -> Result<SessionKey, KeyError> {
        for part in [channel, account, user] {
            let ok = !part.is_empty()
                && part.len() <= 64
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'@' | b'.' | b'=' | b'+' | b'/' | b'-'));
            if !ok {
                return Err(KeyError::Part(part.chars().take(80).collect()));
            }
        }
        Ok(SessionKey {
            channel: channel.to_string(),
            account: account.to_string(),
            user: user.to_string(),
        })
    }

    /// The conversation's session id: `ch:{channel}:{account}:{user}`.
    pub fn session_id(&self) -> String {
        format!("{SESSION_PREFIX}{}:{}:{}", self.channel, self.account, self.user)
    }

    /// The key a channel session id was made from; `None` for any other session id.
    pub fn parse(session_id: &str) -> Option<SessionKey> {
        let rest = session_id.strip_prefix(SESSION_PREFIX)?;
        let mut parts = rest.splitn(3, ':');
        let (channel, account, user) = (parts.next()?, parts.next()?, parts.next()?);
        SessionKey::new(channel, account, user).ok()
    }
}

/// A secret in the channels file: named, never written there. `{env: NAME}` reads the
/// environment variable, `{file: PATH}` the file (trimmed; relative to the channels
/// file). A literal string is refused when the file is read.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The environment variable that holds it.
    #[serde(default)]
    pub env: Option<String>,
    /// The file that holds it.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// A secret read from where the channels file says.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from bytes (tests, embedding).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as text (tokens, AES keys in base64); `None` when it is not UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl SecretRef {
    /// Reads the secret; `base` is the channels file's directory. Errors name the variable
    /// or file, never the value.
    pub fn resolve(&self, base: &Path) -> Result<Secret, String> {
        match (&self.env, &self.file) {
            (Some(name), None) => match std::env::var(name) {
                Ok(value) if !value.trim().is_empty() => Ok(Secret(value.trim().as_bytes().to_vec())),
                _ => Err(format!("the environment variable `{name}` is not set or is empty")),
            },
            (None, Some(path)) => {
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    base.join(path)
                };
                let bytes = std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
                let secret = bytes.trim_ascii();
                if secret.is_empty() {
                    return Err(format!("`{}` is empty", path.display()));
                }
                Ok(Secret(secret.to_vec()))
            }
            _ => Err("a secret is `{env: NAME}` or `{file: PATH}`, exactly one of them".to_string()),
        }
    }
}

/// The channels file (`kefu serve --channels FILE`, YAML): the widget's sites, the WeChat
/// accounts and the webhook channels. Read once at start; a mistake stops the start with
/// `FILE:line:col`.
#[derive(Clone, Debug, Default)]
pub struct ChannelsConfig {
    /// The web widget: the sites that may embed it.
    pub widget: widget::WidgetConfig,
    /// WeChat accounts (Official Accounts and customer-service accounts).
    pub wechat: Vec<wechat::WechatAccount>,
    /// Webhook channels.
    pub webhook: Vec<webhook::WebhookChannel>,
}

/// The channels file as written (secrets still references).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsFile {
    #[serde(default)]
    widget: widget::WidgetFile,
    #[serde(default)]
    wechat: Vec<wechat::WechatFile>,
    #[serde(default)]
    webhook: Vec<webhook::WebhookFile>,
}

/// A mistake in the channels file, at `file:line:col` when serde_yaml knows where.
#[derive(Debug, thiserror::Error)]
#[error("{path}{at}: {message}", at = .line.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct ConfigError {
    /// The channels file.
    pub path: PathBuf,
    /// Line and column (1-based), when known.
    pub line: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl ChannelsConfig {
    /// Reads and checks the channels file, secrets included.
    pub fn load(path: &Path) -> Result<ChannelsConfig, ConfigError> {
        let error = |line: Option<(usize, usize)>, message: String| ConfigError {
            path: path.to_path_buf(),
            line,
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(None, format!("cannot read it: {e}")))?;
        let file: ChannelsFile = serde_yaml::from_str(&text).map_err(|e| {
            let at = e.location().map(|l| (l.line(), l.column()));
            error(at, e.to_string())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let located = |message: String| error(None, message);
        let widget = file.widget.resolve().map_err(located)?;
        let wechat = file
            .wechat
            .into_iter()
            .map(|account| account.resolve(base))
            .collect::<Result<Vec<_>, _>>()
            .map_err(located)?;
        let webhook = file
            .webhook
            .into_iter()
            .map(|channel| channel.resolve(base))
            .collect::<Result<Vec<_>, _>>()
            .map_err(located)?;
        let mut names = std::collections::HashSet::new();
        for name in wechat.iter().map(|a| &a.name).chain(webhook.iter().map(|c| &c.name)) {
            if !names.insert(name.clone()) {
                return Err(located(format!("two channels are named `{name}`")));
            }
        }
        Ok(ChannelsConfig {
            widget,
            wechat,
            webhook,
        })
    }
}

/// Message ids already taken (platforms deliver a message again when they are unsure it
/// arrived: WeChat three times in 15 s). `first` is true once per id within the window.
pub trait Seen: Send + Sync {
    /// Records `id` (already namespaced by channel and account); true when it was not
    /// seen within the window. Fails open (true) only when the shared store cannot be
    /// reached, logging it: a duplicate answer is better than none.
    fn first(&self, id: &str) -> bool;
}

/// [`Seen`] in this process's memory: bounded (`capacity` ids), each kept `ttl`.
pub struct MemorySeen {
    ids: moka::sync::Cache<String, ()>,
}

impl MemorySeen {
    /// Remembers up to `capacity` ids for `ttl` each.
    pub fn new(capacity: u64, ttl: Duration) -> MemorySeen {
        MemorySeen {
            ids: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }
}

impl Seen for MemorySeen {
    fn first(&self, id: &str) -> bool {
        let entry = self.ids.entry(id.to_string()).or_insert(());
        entry.is_fresh()
    }
}

/// What a channel conversation's outgoing message is: a reply to the customer's message,
/// or a message from an agent or a job after it (a takeover's answer, a ticket's outcome).
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The conversation on the platform.
    pub key: SessionKey,
    /// The text (already through output safety: a reply or an agent's message).
    pub text: String,
    /// A stable id for this message (the platform's id of the message it answers, plus a
    /// suffix; or the session's sequence number), the `Idempotency-Key` of its delivery.
    pub id: String,
    /// Options to pick from, where the platform can show them.
    pub choices: Vec<String>,
}

/// Sends messages to one channel's platform. Called from the job queue's workers
/// (blocking is fine); temporary failures are retried with backoff.
pub trait Sender: Send + Sync {
    /// One attempt at sending.
    fn send(&self, message: &Outgoing) -> Result<(), crate::jobs::JobError>;

    /// What became of a delivery ([`deliver`] reports it after each attempt and when it
    /// gives up). Nothing by default; the senders [`Outbound`] hands out count it.
    fn outcome(&self, _message: &Outgoing, _outcome: DeliveryOutcome) {}
}

/// The senders of the configured channels, by channel name: how an agent's message in a
/// WeChat or webhook conversation reaches the customer there.
#[derive(Clone, Default)]
pub struct Outbound {
    senders: std::collections::HashMap<String, Arc<dyn Sender>>,
    /// Told of every delivery through a sender registered here (the metrics).
    observer: Option<DeliveryObserver>,
}

impl Outbound {
    /// No senders yet; every delivery through the senders registered (or [`wrapped`]) from
    /// now on is reported to `observer` with its channel's name.
    ///
    /// [`wrapped`]: Outbound::wrap
    pub fn observed(observer: DeliveryObserver) -> Outbound {
        Outbound {
            senders: Default::default(),
            observer: Some(observer),
        }
    }

    /// `sender` for channel `name`, its deliveries reported to this outbound's observer:
    /// for a sender made for one message (a webhook reply, which carries what it answers)
    /// rather than registered.
    pub fn wrap(&self, name: &str, sender: Arc<dyn Sender>) -> Arc<dyn Sender> {
        match &self.observer {
            Some(observer) => Arc::new(outbound::Observed {
                channel: name.to_string(),
                inner: sender,
                observer: Arc::clone(observer),
            }),
            None => sender,
        }
    }

    /// Registers the sender of channel `name`.
    pub fn register(&mut self, name: &str, sender: Arc<dyn Sender>) {
        let sender = self.wrap(name, sender);
        self.senders.insert(name.to_string(), sender);
    }

    /// The names of the channels with a sender.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.senders.keys().map(String::as_str)
    }

    /// The sender of a channel, if it is configured.
    pub fn sender(&self, channel: &str) -> Option<Arc<dyn Sender>> {
        self.senders.get(channel).cloned()
    }
}
