//! What `kefu serve` is started with: [`ServeConfig`] and the client [`Limits`], with
//! their defaults. None of it changes on a reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::conns;
use crate::engine::EngineConfig;
use crate::jobs::JobConfig;
use crate::llm::LlmBackend;
use crate::store::{RedisConfig, SessionStore};
use crate::tickets::TicketConfig;

/// Limits on what one client may ask.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Request body bytes.
    pub max_body_bytes: usize,
    /// Characters in a customer's or agent's message.
    pub max_message_chars: usize,
    /// Characters in a session id.
    pub max_session_id_chars: usize,
    /// Turns per second per session (with a burst of twice that); 0 turns the limit off.
    pub rate_per_session: u32,
    /// Requests per second per client address from the web widget's sites (a burst of
    /// four times that; see [`super::channels::widget`]); 0 turns the limit off.
    pub widget_rate_per_ip: u32,
    /// The longest a request may take to get its response headers.
    pub request_timeout: Duration,
    /// Turns being answered at once; more are refused with 503.
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// How long a shutdown keeps accepting and answering requests after `/readyz` turned
    /// 503, so that a balancer's health check sees it first (see [`super::health`]).
    pub drain: Duration,
    /// Open connections, in all and per client, and the idle and header timeouts.
    pub connections: conns::ConnLimits,
}

impl Default for Limits {
    /// 64 KiB bodies, 2,000-character messages, 128-character ids, 20 turns/s per session, 5 widget requests/s per address,
    /// 30 s timeout, 1,024 turns in flight, no drain (embedding and tests; `kefu serve`
    /// drains 5 s by default), 30 s grace, connections as [`conns::ConnLimits::default`].
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_message_chars: 2000,
            max_session_id_chars: 128,
            rate_per_session: 20,
            widget_rate_per_ip: 5,
            request_timeout: Duration::from_secs(30),
            max_in_flight: 1024,
            shutdown_grace: Duration::from_secs(30),
            drain: Duration::ZERO,
            connections: conns::ConnLimits::default(),
        }
    }
}

/// Everything `kefu serve` is started with. None of it changes on a reload.
#[derive(Clone)]
pub struct ServeConfig {
    /// The rules directory.
    pub rules: PathBuf,
    /// Watch the rules directory and reload on change, while the directory is what
    /// serves (no version store, or one with nothing live yet, or `serve_dir`).
    pub watch: bool,
    /// The version store to serve: its live version for everyone, its canary for its
    /// share, published versions a request pins; and the store the admin API publishes
    /// to. `None`: the rules directory serves and the admin version routes answer 404.
    pub versions: Option<Arc<dyn crate::versions::VersionStore>>,
    /// Serve the rules directory even when the store has a live version (`--watch`:
    /// development mode). The admin API still publishes to the store.
    pub serve_dir: bool,
    /// The store is Redis: follow its change messages (pub/sub) besides the periodic look.
    pub versions_subscribe: Option<Arc<crate::versions::RedisVersionStore>>,
    /// Keep versions in the `redis` given above (a fleet): the store is connected when the
    /// service is built (after the listener is bound, like the session store), and sets
    /// `versions` and `versions_subscribe`.
    pub versions_in_redis: bool,
    /// Quiet time before a burst of file changes is reloaded.
    pub debounce: Duration,
    /// `Authorization: Bearer` token for admin and agent routes; without one they answer
    /// loopback clients only.
    pub admin_token: Option<String>,
    /// Keep sessions in this Redis (`redis://127.0.0.1:6379/0`) instead of in memory.
    pub redis: Option<String>,
    /// Settings of the Redis store.
    pub redis_config: RedisConfig,
    /// A session store to use instead of memory or `redis` (embedding, tests: a store
    /// that fails on demand); its operations run off the runtime's workers.
    pub sessions: Option<Arc<dyn SessionStore>>,
    /// The model, if any.
    pub llm: Option<Arc<dyn LlmBackend>>,
    /// Deliver new tickets to this back-office URL through the job queue.
    pub tickets_url: Option<String>,
    /// The job queue's settings.
    pub jobs: JobConfig,
    /// Where tickets are recorded and how they are delivered (state directory, signing
    /// secret, visibility timeout).
    pub tickets: TicketConfig,
    /// Client limits.
    pub limits: Limits,
    /// Engine settings (answer-cache size and TTL, model limits).
    pub engine: EngineConfig,
    /// Append every turn, agent answer, takeover, release and feedback to a conversation
    /// log (`kefu serve --conversation-log DIR`); off when `None`.
    pub conversation_log: Option<crate::data::LogConfig>,
    /// Customer identities signed by the shop's backend (`--identity-key-file`); without
    /// one, `user` and `context` are taken as the client sends them.
    pub identity: Option<super::identity::IdentityConfig>,
    /// When a canary candidate is rolled back by itself (`--canary-*`).
    pub canary: super::canary::GuardConfig,
    /// The console's users and session cookies (`--users`, `--console-key-file`,
    /// `--console-secure-cookie`).
    pub console: super::console::ConsoleConfig,
    /// How long an agent whose last inbox stream closed keeps their conversations before
    /// they wait in their queues again (`--agent-grace`).
    pub agent_grace: Duration,
    /// The channels file's widget sites, WeChat accounts and webhook channels
    /// (`--channels`); `None`: only the JSON API.
    pub channels: Option<Arc<crate::channels::ChannelsConfig>>,
    /// Customers' images: where they are kept and for how long, their limits, the vision
    /// model (`--image-*`, `--vision-*`; docs/photos.md).
    pub images: super::images::ImageConfig,
}

/// The default of [`ServeConfig::agent_grace`]: two minutes, a browser's reload or a
/// short network loss.
pub const AGENT_GRACE: Duration = Duration::from_secs(120);

/// How many stored conversations (not with the bot) fill the inbox at start.
pub const INBOX_FILL: usize = 5000;

impl ServeConfig {
    /// Defaults for serving `rules`: watched, in-memory sessions, no model.
    pub fn new(rules: impl Into<PathBuf>) -> Self {
        ServeConfig {
            rules: rules.into(),
            watch: true,
            versions: None,
            serve_dir: false,
            versions_subscribe: None,
            versions_in_redis: false,
            debounce: Duration::from_millis(100),
            admin_token: None,
            redis: None,
            redis_config: RedisConfig::default(),
            sessions: None,
            llm: None,
            tickets_url: None,
            jobs: JobConfig::default(),
            tickets: TicketConfig::default(),
            limits: Limits::default(),
            engine: EngineConfig::default(),
            conversation_log: None,
            identity: None,
            canary: super::canary::GuardConfig::default(),
            console: super::console::ConsoleConfig::default(),
            agent_grace: AGENT_GRACE,
            channels: None,
            images: super::images::ImageConfig::default(),
        }
    }
}
