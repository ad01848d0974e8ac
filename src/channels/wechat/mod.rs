//! WeChat: Official Accounts (公众号) and customer service (微信客服, through WeCom). The
//! message callback as Tencent documents it (URL verification, signatures, the
//! AES-encrypted mode, XML), the access token, and the message APIs replies go out through
//! when they miss the 5-second window or come from an agent.
//!
//! | module | its job |
//! |---|---|
//! | [`crypto`] | `signature`, `msg_signature`, AES-256-CBC of the encrypted mode |
//! | [`xml`] | the callback's fields; passive replies and encrypted envelopes |
//! | [`api`] | the access token, `custom/send`, `kf/sync_msg`, `kf/send_msg`; splitting long texts |
//! | [`send`] | the [`super::Sender`]s of `wechat_mp` and `wechat_kf`, and an account at run time |

pub mod api;
pub mod crypto;
pub mod send;
pub mod xml;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{Secret, SecretRef, valid_name};

/// Which WeChat product an account is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An Official Account (公众号): passive replies within 5 s, else the customer-service
    /// message API (`cgi-bin/message/custom/send`).
    OfficialAccount,
    /// WeChat customer service (微信客服): the callback only says messages are waiting;
    /// they are pulled with `kf/sync_msg` and answered with `kf/send_msg`.
    CustomerService,
}

/// One WeChat account.
#[derive(Clone, Debug)]
pub struct WechatAccount {
    /// Its name in kefu: the callback route `/wechat/{name}`.
    pub name: String,
    /// Which product.
    pub kind: Kind,
    /// The Official Account's AppID, or the WeCom CorpID.
    pub app_id: String,
    /// The callback Token (signatures).
    pub token: Secret,
    /// The EncodingAESKey (43 characters); `None`: plaintext mode (Official Accounts only).
    pub aes_key: Option<Secret>,
    /// The AppSecret (or the customer-service app's Secret), for the access token.
    pub app_secret: Secret,
    /// The API's base URL: `https://api.weixin.qq.com` or `https://qyapi.weixin.qq.com`
    /// by kind; a local simulator in tests.
    pub api_base: String,
    /// How long an Official Account's callback waits for the turn before it answers
    /// `success` and sends the reply through `custom/send` instead (WeChat gives up
    /// after 5 s): 4.5 s unless the channels file says `reply_within_ms`.
    pub reply_within: Duration,
}

/// The default of [`WechatAccount::reply_within`].
pub const REPLY_WITHIN: Duration = Duration::from_millis(4500);

/// A `wechat:` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WechatFile {
    name: String,
    kind: Kind,
    app_id: String,
    token: SecretRef,
    #[serde(default)]
    encoding_aes_key: Option<SecretRef>,
    app_secret: SecretRef,
    #[serde(default)]
    api_base: Option<String>,
    #[serde(default)]
    reply_within_ms: Option<u64>,
}

impl WechatFile {
    /// The account checked, its secrets read.
    pub(crate) fn resolve(self, base: &Path) -> Result<WechatAccount, String> {
        let name = self.name;
        if !valid_name(&name) {
            return Err(format!(
                "wechat account name `{name}`: 1-32 lowercase letters, digits or `_`, starting with a letter"
            ));
        }
        let secret = |what: &str, r: &SecretRef| {
            r.resolve(base)
                .map_err(|e| format!("wechat account `{name}`: {what}: {e}"))
        };
        let token = secret("token", &self.token)?;
        let app_secret = secret("app_secret", &self.app_secret)?;
        let aes_key = match &self.encoding_aes_key {
            Some(r) => Some(secret("encoding_aes_key", r)?),
            None if self.kind == Kind::CustomerService => {
                return Err(format!(
                    "wechat account `{name}`: customer service always encrypts; give `encoding_aes_key`"
                ));
            }
            None => None,
        };
        if let Some(key) = &aes_key
            && crypto::Cipher::new(key.text().unwrap_or(""), &self.app_id).is_err()
        {
            return Err(format!(
                "wechat account `{name}`: encoding_aes_key must be the 43 characters the admin page shows"
            ));
        }
        if self.app_id.is_empty()
            || self.app_id.len() > 64
            || !self
                .app_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "wechat account `{name}`: app_id must be the AppID or CorpID (letters, digits)"
            ));
        }
        let reply_within = match self.reply_within_ms {
            None => REPLY_WITHIN,
            Some(ms @ 1..=4800) => Duration::from_millis(ms),
            Some(_) => {
                return Err(format!(
                    "wechat account `{name}`: reply_within_ms must be 1-4800 (WeChat waits 5 s)"
                ));
            }
        };
        let api_base = self.api_base.unwrap_or_else(|| {
            match self.kind {
                Kind::OfficialAccount => "https://api.weixin.qq.com",
                Kind::CustomerService => "https://qyapi.weixin.qq.com",
            }
            .to_string()
        });
        Ok(WechatAccount {
            name,
            kind: self.kind,
            app_id: self.app_id,
            token,
            aes_key,
            app_secret,
            api_base,
            reply_within,
        })
    }
}
