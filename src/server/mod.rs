//! `kefu serve`: the HTTP service on hyper 1.x and tokio.
//!
//! | route | module |
//! |---|---|
//! | `POST /v1/chat` (JSON or SSE) | [`chat`] |
//! | `POST /v1/chat/completions` (OpenAI-compatible) | [`openai`] |
//! | `GET /v1/sessions/{id}`, `POST .../takeover`, `.../reply`, `.../release`, `.../note`, `.../resolve`, `.../feedback`, `GET /v1/tickets` | [`sessions`] |
//! | `GET /healthz`, `GET /metrics`, `GET /admin/rules`, `POST /admin/reload` | [`admin`] |
//! | `GET /livez`, `GET /readyz` | [`health`] |
//! | `GET /admin/versions`, `GET /admin/versions/{id}`, `GET /admin/diff`, `POST /admin/publish`, `.../canary`, `.../promote`, `.../rollback`, `.../replay` | [`versions`] |
//! | `POST /console/api/login`, `.../logout`, `GET /console/api/me` | [`console`] |
//! | `GET /console/...` (the console's files) | [`assets`] |
//! | `POST /admin/draft/chat`, `POST /admin/draft/tests`, `POST /admin/draft/tests/save`, `GET /admin/report` | [`workbench`] |
//! | `GET /admin/mine`, `POST /admin/mine/accept` (the console's unanswered questions) | [`mine`] |
//! | `GET /admin/inbox`, `.../stream`, `.../{id}`, `.../{id}/suggest`, `GET /admin/canned`; `POST /v1/sessions/{id}/note`, `.../resolve` | [`inbox`], [`sessions`] |
//! | `GET /v1/sessions/{id}/events` (the customer's live channel), `.../messages` | [`inbox::customer`] |
//! | `POST /v1/channels/{name}/messages` (a webhook channel's platform) | [`channels`] |
//! | `POST /v1/events` (page and order events: proactive messages) | [`events`] |
//!
//! The machinery around the handlers, one job a file:
//!
//! | module | its job |
//! |---|---|
//! | [`config`] | What the service is started with ([`ServeConfig`], [`Limits`]) and the defaults. |
//! | [`state`] | The [`State`] every handler shares, wired from a config by [`Service::build`]. |
//! | [`serve`] | [`run`] and [`Service::serve`]: the runtime, the listener, the accept loop, shutdown. |
//! | [`health`] | Liveness and readiness, the drain that begins a shutdown, the answers while starting. |
//! | [`conns`] | Client connections: caps in all and per client, shedding, the idle and header timeouts. |
//! | [`routes`] | One request start to end: method and path to a handler, the time limit, request metrics. |
//! | [`auth`] | Who calls (token, console session, loopback) and what each route needs. |
//! | [`users`] | The console's users file, roles and permissions, password hashes. |
//! | [`identity`] | Who the customer is: the profile and order the shop's backend signed. |
//! | [`limits`] | The per-request checks: session ids, message length, the per-session rate. |
//! | [`turns`] | Where a turn runs (inline or on the blocking pool), the in-flight bound. |
//! | [`recorder`] | The engine's events counted and logged: metrics, the log line, the conversation log, the inbox. |
//! | [`inbox`] | The agents' inbox: live conversations pushed to consoles, customers' channels, the fleet's Redis channel. |
//! | [`sse`] | Server-sent event streams. |
//! | [`http`] | The response body, JSON responses, reading bodies and path segments. |
//! | [`errors`] | [`ApiError`], the body of every refusal. |
//! | [`model`], [`metrics`], [`logs`] | The model as the service sees it, the Prometheus registry, log lines. |
//! | [`process`] | The process's memory, descriptors and CPU time, read from `/proc` at each scrape. |
//!
//! **How turns run**: see [`turns`].
//!
//! **Limits.** Body size (`Limited`), message length, session id length, a per-session
//! rate limit (governor), a request timeout, a bound on turns in flight (a semaphore;
//! overload answers 503 at once instead of queueing), and a header-read timeout against
//! slow clients. Every refusal is a JSON `{error:{type,message}}` (see [`errors`]).
//!
//! **Shutdown.** On SIGTERM or Ctrl-C the service drains first (`--drain-seconds`):
//! `/readyz` answers 503 and every response says `Connection: close`, while requests are
//! still answered, so that a balancer moves traffic away; a second signal cuts the drain
//! short. Then the listener closes, in-flight requests (streams included) finish within
//! the grace period, ticket deliveries in flight get what is left
//! of it (what stays pending is logged, and kept in the outbox), and [`run`] returns.

pub mod admin;
pub mod assets;
pub mod auth;
pub mod canary;
pub mod channels;
pub mod chat;
pub mod config;
pub mod conns;
pub mod console;
pub mod draft;
pub mod errors;
pub mod events;
pub mod health;
pub mod http;
pub mod identity;
pub mod images;
pub mod inbox;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod mine;
pub mod model;
pub mod openai;
pub mod process;
pub mod recorder;
pub mod routes;
pub mod serve;
pub mod sessions;
pub mod sse;
pub mod state;
pub mod turns;
pub mod users;
pub mod versions;
pub mod workbench;

use std::path::PathBuf;

use crate::tickets::OutboxError;

pub use config::{Limits, ServeConfig};
pub use errors::ApiError;
pub use http::{Body, json_response};
pub use serve::run;
pub use sse::EventStream;
pub use state::{Service, State};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The rules directory does not build.
    #[error("the rules in {dir} have errors:\n{report}")]
    Rules {
        /// The directory.
        dir: PathBuf,
        /// The rendered diagnostics.
        report: String,
    },
    /// The Redis store could not be opened.
    #[error(transparent)]
    Redis(#[from] crate::store::RedisStoreError),
    /// The rules watcher could not start.
    #[error(transparent)]
    Watch(#[from] crate::reload::ReloadError),
    /// The ticket outbox (journal or Redis stream) could not be opened.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The conversation log could not be opened.
    #[error(transparent)]
    ConversationLog(#[from] crate::data::writer::LogError),
    /// The version store could not be read, or its live version could not be served.
    #[error("the version store: {0}")]
    Versions(String),
    /// The identity key is empty.
    #[error("the identity key is empty: give the key the shop's backend signs customer tokens with")]
    IdentityKey,
    /// Binding, the runtime, or signals.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}
