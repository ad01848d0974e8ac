//! Webhook channels: any platform (Taobao/千牛, JD, Douyin, an in-house app) that posts
//! its customers' messages to kefu as JSON and takes kefu's replies at a URL it names.
//! Both directions are signed with the channel's HMAC-SHA256 secret.

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
