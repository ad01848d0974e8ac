//! WeChat: Official Accounts (公众号) and customer service (微信客服, through WeCom). The
//! message callback as Tencent documents it (URL verification, signatures, the
//! AES-encrypted mode, XML), the access token, and the message APIs replies go out through
//! when they miss the 5-second window or come from an agent.

use std::path::Path;

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
}

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
        })
    }
}
