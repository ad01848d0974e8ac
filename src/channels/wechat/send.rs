//! Messages out to WeChat customers: a [`WechatSender`] per product (`wechat_mp`,
//! `wechat_kf`), registered in [`super::super::Outbound`], through which replies that
//! missed the 5-second window, customer-service replies, and agents' messages go (as
//! jobs, retried with backoff by the queue).
//!
//! A conversation's [`SessionKey`] names the account on the platform: an Official
//! Account's AppID, or a customer-service account's `open_kfid`. An AppID names its
//! account in the channels file; an `open_kfid` is learned from the messages pulled for
//! it ([`WechatSender::learn`]), and when only one customer-service account is
//! configured, every `open_kfid` is its.
//!
//! A long text goes out in parts ([`super::api::split_text`]); the parts already sent are
//! remembered (bounded, ten minutes) so that a retry after a failure halfway does not
//! send the first parts again. WeChat customer service gets a `msgid` per part, derived
//! from the message's id, so that it drops a repeat itself.

use std::sync::Arc;
use std::time::Duration;

use sha1::{Digest, Sha1};

use super::api::{Api, TEXT_LIMIT, split_text};
use super::crypto::Cipher;
use super::{Kind, WechatAccount};
use crate::channels::{Outgoing, SessionKey};
use crate::jobs::JobError;

/// A configured account at run time: its settings, its API client, its cipher.
#[derive(Debug)]
pub struct Live {
    /// The account as configured.
    pub account: WechatAccount,
    /// Its API client (and access token).
    pub api: Api,
    /// Its AES key, in the encrypted mode.
    pub cipher: Option<Cipher>,
}

impl Live {
    /// The account made ready (the AES key was checked when the channels file was read).
    pub fn new(account: WechatAccount) -> Live {
        let cipher = account
            .aes_key
            .as_ref()
            .and_then(|key| Cipher::new(key.text()?, &account.app_id).ok());
        Live {
            api: Api::new(&account),
            cipher,
            account,
        }
    }
}

/// The sender of one WeChat product's conversations.
pub struct WechatSender {
    kind: Kind,
    accounts: Vec<Arc<Live>>,
    /// `open_kfid` → the account it was pulled for (customer service).
    learned: moka::sync::Cache<String, Arc<Live>>,
    /// Parts sent (`{id}#{n}`), so that a retry sends only the rest.
    sent: moka::sync::Cache<String, ()>,
}

impl WechatSender {
    /// The sender of the accounts of `kind` among `accounts`.
    pub fn new(kind: Kind, accounts: &[Arc<Live>]) -> WechatSender {
        WechatSender {
            kind,
            accounts: accounts.iter().filter(|a| a.account.kind == kind).cloned().collect(),
            learned: moka::sync::Cache::new(10_000),
            sent: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
        }
    }

    /// Notes that `open_kfid`'s messages come through `account`.
    pub fn learn(&self, open_kfid: &str, account: &Arc<Live>) {
        if self.learned.get(open_kfid).is_none() {
            self.learned.insert(open_kfid.to_string(), Arc::clone(account));
        }
    }

    /// The account a conversation is with.
    fn account(&self, key: &SessionKey) -> Option<Arc<Live>> {
        match self.kind {
            Kind::OfficialAccount => self.accounts.iter().find(|a| a.account.app_id == key.account).cloned(),
            Kind::CustomerService => self
                .learned
                .get(&key.account)
                .or_else(|| (self.accounts.len() == 1).then(|| Arc::clone(&self.accounts[0]))),
        }
    }
}

/// WeChat customer service's `msgid` for part `n` of message `id`: 32 hex characters
/// (its limit is 32 of `[0-9A-Za-z_-]`).
pub fn kf_msgid(id: &str, n: usize) -> String {
    let digest = Sha1::digest(format!("{id}#{n}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl crate::channels::Sender for WechatSender {
    fn send(&self, message: &Outgoing) -> Result<(), JobError> {
        let live = self.account(&message.key).ok_or_else(|| {
            JobError::Permanent(format!(
                "no {} account for `{}` in the channels file",
                match self.kind {
                    Kind::OfficialAccount => "official account",
                    Kind::CustomerService => "customer-service",
                },
                message.key.account
            ))
        })?;
        for (n, part) in split_text(&message.text, TEXT_LIMIT).iter().enumerate() {
            let done = format!("{}#{n}", message.id);
            if self.sent.contains_key(&done) {
                continue;
            }
            match self.kind {
                Kind::OfficialAccount => live.api.custom_send(&message.key.user, part)?,
                Kind::CustomerService => {
                    live.api
                        .kf_send(&message.key.account, &message.key.user, &kf_msgid(&message.id, n), part)?
                }
            }
            self.sent.insert(done, ());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kf_msgids_are_32_hex_and_differ_by_part() {
        let a = kf_msgid("ch:wechat_kf:wk1:wm1#3", 0);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, kf_msgid("ch:wechat_kf:wk1:wm1#3", 1));
        assert_eq!(a, kf_msgid("ch:wechat_kf:wk1:wm1#3", 0));
    }
}
