//! The channels' routes: where customers' messages come in from the web widget
//! ([`widget`]), WeChat ([`wechat`]) and webhook platforms ([`webhook`]), each turned into
//! a turn with its channel (`TurnRequest::channel`) through `State::run_turn`, as
//! `/v1/chat` does. Every channel route is public (no bearer token): each authenticates
//! its caller itself (a site's allowed origins, WeChat's signatures, a webhook channel's
//! HMAC).
//!
//! What they share is built in `Service::build` from the channels file: the senders
//! ([`crate::channels::Outbound`], registered here per channel kind, their deliveries
//! counted) and the message ids already taken (`State::seen`). What does not speak HTTP
//! (signatures, the channels file, delivery jobs) is in [`crate::channels`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::channels::{ChannelsConfig, Outbound};

pub(super) mod webhook;
pub(super) mod wechat;
pub(super) mod widget;

/// How long a platform's message id is remembered: longer than any platform retries
/// (WeChat: three tries within 15 s; webhook platforms: minutes).
pub(super) const SEEN_TTL: Duration = Duration::from_secs(600);

/// Message ids remembered in memory (without Redis); the oldest go first beyond it.
pub(super) const SEEN_CAPACITY: u64 = 100_000;

/// The longest one post to a platform may take before it counts as a temporary failure.
pub(super) const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the channels file's channels need at run time besides their senders.
#[derive(Default)]
pub struct Registered {
    /// Each webhook channel's poster, by name (its replies are posted through it).
    pub(super) webhooks: HashMap<String, Arc<crate::channels::webhook::Poster>>,
}

/// Registers every configured channel's sender in `outbound` (called once by
/// `Service::build`); WeChat's senders are registered by `wechat::register`.
pub(super) fn register(config: &ChannelsConfig, outbound: &mut Outbound) -> Registered {
    Registered {
        webhooks: webhook::register(config, outbound),
    }
}

impl super::State {
    /// Whether a platform's message `id` (namespaced by channel and account) is new: off
    /// the runtime's workers, since with `--redis` it asks Redis. A task that cannot run
    /// reads as new (a duplicate answer is better than none).
    pub(super) async fn first_seen(&self, id: String) -> bool {
        let seen = Arc::clone(&self.seen);
        tokio::task::spawn_blocking(move || seen.first(&id))
            .await
            .unwrap_or(true)
    }
}
