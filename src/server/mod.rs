//! `kefu serve`: the HTTP service on hyper 1.x and tokio.
//!
//! | route | module |
//! |---|---|
//! | `POST /v1/chat` (JSON or SSE) | [`chat`] |
//! | `POST /v1/chat/completions` (OpenAI-compatible) | [`openai`] |
//! | `GET /v1/sessions/{id}`, `POST .../takeover`, `.../reply`, `.../release`, `.../feedback`, `GET /v1/tickets` | [`sessions`] |
//! | `GET /healthz`, `GET /metrics`, `GET /admin/rules`, `POST /admin/reload` | [`admin`] |
//!
//! **How turns run.** The engine is synchronous; a rule-answered turn takes microseconds,
//! so it runs directly on the runtime worker that read the request: a hop to another
//! thread would cost more than the turn. What may block runs elsewhere: a model call goes
//! through [`model::Metered`], which uses `block_in_place` so the worker's other
//! connections move to another thread while it waits; streaming turns run on the blocking
//! pool from the start (their deltas flow to the response body while the turn runs); and
//! when the session store is Redis or the rules have an `http` source, every turn runs on
//! the blocking pool, because then any turn may wait on the network.
//!
//! **Limits.** Body size (`Limited`), message length, session id length, a per-session
//! rate limit (governor), a request timeout, a bound on turns in flight (a semaphore;
//! overload answers 503 at once instead of queueing), and a header-read timeout against
//! slow clients. Every refusal is a JSON `{error:{type,message}}` (see [`errors`]).
//!
//! **Shutdown.** On SIGTERM or Ctrl-C the listener closes, in-flight requests (streams
//! included) finish within the grace period, ticket deliveries in flight get what is left
//! of it (what stays pending is logged, and kept in the outbox), and [`run`] returns.

pub mod admin;
pub mod chat;
pub mod conns;
pub mod errors;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod sessions;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::{BodyExt as _, Either, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

use crate::batch::FlushGuard;
use crate::data::ConversationLog;
use crate::dialogue::TicketStore;
use crate::engine::{EngineConfig, constant_time_eq};
use crate::jobs::{Deliveries, JobConfig, JobQueue, TicketConfig};
use crate::llm::LlmBackend;
use crate::outbox::{Journal, Outbox, OutboxError, RedisOutbox};
use crate::reload::{ReloadOutcome, Reloader, Trigger, WatchHandle};
use crate::safety::logsafe::LogSafe;
use crate::store::{MemoryStore, RedisConfig, RedisStore, SessionStore};
use crate::{Engine, TurnRequest, TurnResponse};
pub use errors::ApiError;
use metrics::Metrics;

/// A response body: whole, or a stream of server-sent events.
pub type Body = Either<Full<Bytes>, EventStream>;

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
    /// The longest a request may take to get its response headers.
    pub request_timeout: Duration,
    /// Turns being answered at once; more are refused with 503.
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Open connections, in all and per client, and the idle timeout.
    pub connections: conns::ConnLimits,
}

impl Default for Limits {
    /// 64 KiB bodies, 2,000-character messages, 128-character ids, 20 turns/s per session,
    /// 30 s timeout, 1,024 turns in flight, 30 s grace, connections as
    /// [`conns::ConnLimits::default`].
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_message_chars: 2000,
            max_session_id_chars: 128,
            rate_per_session: 20,
            request_timeout: Duration::from_secs(30),
            max_in_flight: 1024,
            shutdown_grace: Duration::from_secs(30),
            connections: conns::ConnLimits::default(),
        }
    }
}

/// Everything `kefu serve` is started with. None of it changes on a reload.
#[derive(Clone)]
pub struct ServeConfig {
    /// The rules directory.
    pub rules: PathBuf,
    /// Watch the rules directory and reload on change.
    pub watch: bool,
    /// Quiet time before a burst of file changes is reloaded.
    pub debounce: Duration,
    /// `Authorization: Bearer` token for admin and agent routes; without one they answer
    /// loopback clients only.
    pub admin_token: Option<String>,
    /// Keep sessions in this Redis (`redis://127.0.0.1:6379/0`) instead of in memory.
    pub redis: Option<String>,
    /// Settings of the Redis store.
    pub redis_config: RedisConfig,
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
}

impl ServeConfig {
    /// Defaults for serving `rules`: watched, in-memory sessions, no model.
    pub fn new(rules: impl Into<PathBuf>) -> Self {
        ServeConfig {
            rules: rules.into(),
            watch: true,
            debounce: Duration::from_millis(100),
            admin_token: None,
            redis: None,
            redis_config: RedisConfig::default(),
            llm: None,
            tickets_url: None,
            jobs: JobConfig::default(),
            tickets: TicketConfig::default(),
            limits: Limits::default(),
            engine: EngineConfig::default(),
            conversation_log: None,
        }
    }
}

/// What every request handler shares.
pub struct State {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Builds and swaps rule sets.
    pub reloader: Arc<Reloader>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Tickets raised by flows.
    pub tickets: Arc<TicketStore>,
    /// Client limits.
    pub limits: Limits,
    /// The conversation log, when it is on.
    pub conversation_log: Option<ConversationLog>,
    admin_token: Option<String>,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    turns: Arc<Semaphore>,
    /// Sessions are in a store that does network I/O.
    remote_sessions: bool,
    /// A turn on the serving rules took longer than [`INLINE_TURN_BUDGET`] on a runtime
    /// worker: until the next reload, turns run on the blocking pool.
    slow_rules: Arc<std::sync::atomic::AtomicBool>,
    started: Instant,
}

/// How often connections idle past the idle timeout are looked for.
const IDLE_SWEEP: Duration = Duration::from_secs(5);

/// The longest a turn's scripts may hold a runtime worker before the rules they ran on
/// are judged slow and their turns move to the blocking pool (a model call leaves the
/// worker on its own, so only script time counts). A rule-answered turn's scripts take
/// microseconds; only scripts that loop or call costly functions come near this.
const INLINE_TURN_BUDGET: Duration = Duration::from_millis(5);

/// A built service: rules loaded, engine, reloader, job queue. Serve it with
/// [`Service::serve`].
pub struct Service {
    state: Arc<State>,
    /// The ticket delivery pump, drained on shutdown.
    deliveries: Option<Deliveries>,
    _watcher: Option<WatchHandle>,
    /// Writes what the conversation log holds when the service ends.
    _log: Option<FlushGuard>,
}

impl Service {
    /// Loads the rules and builds the service. Must be called inside a tokio runtime (the
    /// job queue starts on it).
    pub fn build(config: ServeConfig) -> Result<Self, ServeError> {
        let compiled = crate::dsl::load_dir(&config.rules);
        let Some(rules) = compiled.rules else {
            return Err(ServeError::Rules {
                dir: config.rules.clone(),
                report: compiled.report.render_all(false),
            });
        };
        let metrics = Arc::new(Metrics::new());
        let (sessions, remote_sessions): (Arc<dyn SessionStore>, bool) = match &config.redis {
            Some(url) => (Arc::new(RedisStore::connect(url, config.redis_config.clone())?), true),
            None => (Arc::new(MemoryStore::default()), false),
        };

        let job_metrics = Arc::clone(&metrics);
        // Jobs tell conversations their outcomes through the engine, the only writer of
        // sessions; the engine is made below (it needs the tickets, which need the queue),
        // so the queue gets it once it exists, and weakly, so as not to keep it alive.
        let teller: Arc<std::sync::OnceLock<std::sync::Weak<Engine>>> = Arc::default();
        let tell_engine = Arc::clone(&teller);
        let queue = JobQueue::start(
            &tokio::runtime::Handle::current(),
            config.jobs.clone(),
            Arc::new(move |id: &str, text: &str| {
                if let Some(engine) = tell_engine.get().and_then(std::sync::Weak::upgrade)
                    && let Err(error) = engine.tell(id, text)
                {
                    tracing::error!(session = %LogSafe(id), %error, "job outcome not told");
                }
            }),
            move |e| job_metrics.job(e.as_str()),
        );
        // Tickets: numbered and recorded by the outbox (the Redis stream, or the journal in
        // the state directory) before a customer is told; delivered by the pump.
        let outbox = open_outbox(&config)?;
        let tickets = Arc::new(TicketStore::durable(Arc::clone(&outbox), config.tickets_url.is_some()));
        let deliveries = config.tickets_url.clone().map(|url| {
            let delivery_metrics = Arc::clone(&metrics);
            Deliveries::start(
                &tokio::runtime::Handle::current(),
                url,
                &config.tickets,
                Arc::clone(&outbox),
                queue.clone(),
                Arc::downgrade(&tickets),
                move |e| delivery_metrics.ticket_delivery(e.as_str()),
            )
        });
        // Counters and a weak outbox: the metrics must not keep the journal (and its lock)
        // alive after the service ends.
        let (depth, flying) = (queue.depth_counter(), deliveries.as_ref().map(Deliveries::counter));
        let outbox = Arc::downgrade(&outbox);
        metrics.watch_tickets(move || {
            let load = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::Relaxed) as u64;
            let pending = outbox.upgrade().map_or(0, |o| o.pending());
            (load(&depth), pending, flying.as_deref().map_or(0, load))
        });

        let cache_metrics = Arc::clone(&metrics);
        let mut engine = Engine::new(rules)
            .with_config(config.engine.clone())
            .with_sessions(Arc::clone(&sessions))
            .with_tickets(Arc::clone(&tickets))
            .with_cache_observer(move |hit| cache_metrics.cache_lookup(hit));
        if let Some(llm) = &config.llm {
            engine = engine.with_llm(Arc::new(model::Metered::new(Arc::clone(llm), Arc::clone(&metrics))));
        }
        let engine = Arc::new(engine);
        let _ = teller.set(Arc::downgrade(&engine));
        // Weak: the engine holds the metrics (through its observers).
        let serving = Arc::downgrade(&engine);
        metrics.watch_nlu_memo(move || {
            serving
                .upgrade()
                .map(|e| e.rules().nlu.memo_stats())
                .unwrap_or_default()
        });
        let (conversation_log, log_guard) = match config.conversation_log.clone() {
            Some(log) => {
                let current = Arc::clone(&engine);
                let (log, guard) = ConversationLog::open(log, move || current.rules())?;
                metrics.watch_conversation_log(log.clone());
                (Some(log), Some(guard))
            }
            None => (None, None),
        };
        let reload_metrics = Arc::clone(&metrics);
        let slow_rules = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let slow_reset = Arc::clone(&slow_rules);
        let reloader = Arc::new(
            Reloader::new(&config.rules, Arc::clone(&engine)).with_observer(move |_, outcome| {
                let applied = matches!(outcome, ReloadOutcome::Applied { .. });
                if applied {
                    // New rules are judged afresh.
                    slow_reset.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                reload_metrics.reload(applied)
            }),
        );
        let watcher = if config.watch {
            Some(reloader.watch(config.debounce)?)
        } else {
            None
        };
        let limiter = NonZeroU32::new(config.limits.rate_per_session).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not zero"));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let state = Arc::new(State {
            engine,
            reloader,
            metrics,
            tickets,
            turns: Arc::new(Semaphore::new(config.limits.max_in_flight.max(1))),
            limits: config.limits,
            conversation_log,
            admin_token: config.admin_token.filter(|t| !t.is_empty()),
            limiter,
            remote_sessions,
            slow_rules,
            started: Instant::now(),
        });
        Ok(Service {
            state,
            deliveries,
            _watcher: watcher,
            _log: log_guard,
        })
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Serves connections from `listener` until `shutdown` completes, then lets in-flight
    /// requests finish for at most the grace period.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let state = Arc::clone(&self.state);
        // The rate limiter remembers every key it has seen; forget idle ones now and then.
        let cleaner = state.limiter.is_some().then(|| {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    if let Some(limiter) = &state.limiter {
                        limiter.retain_recent();
                        limiter.shrink_to_fit();
                    }
                }
            })
        });
        let limits = state.limits.connections;
        let registry = conns::Registry::new(conns::ConnLimits {
            max: conns::cap_for_fd_limit(limits.max, conns::fd_soft_limit()),
            ..limits
        });
        let reaper = {
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(IDLE_SWEEP).await;
                    registry.close_idle();
                }
            })
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .keep_alive(true);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        // Out of file descriptors, say: wait a little rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let (conn, admission) = registry.admit(peer.ip());
            match admission {
                conns::Admission::Open => {}
                conns::Admission::Shed(kind) => state.metrics.connection_shed(kind),
                conns::Admission::Refused(kind) => {
                    state.metrics.connection_shed(kind);
                    tracing::debug!(peer = %peer, kind, "connection refused: every connection is busy");
                }
            }
            // Turned away: the socket closes when it is dropped here.
            let Some(conn) = conn else { continue };
            let _ = stream.set_nodelay(true);
            let service = {
                let (state, conn) = (Arc::clone(&state), Arc::clone(&conn));
                hyper::service::service_fn(move |req| handle(Arc::clone(&state), req, peer, conn.busy()))
            };
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let metrics = Arc::clone(&state.metrics);
            metrics.connections().inc();
            tokio::spawn(async move {
                let mut connection = std::pin::pin!(connection);
                let mut closing = false;
                loop {
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(error) = result {
                                tracing::debug!(%error, "connection ended with an error");
                            }
                            break;
                        }
                        // Idle too long, shed to make room, or shutting down: an idle
                        // connection closes now, a busy one after its response.
                        () = conn.closing(), if !closing => {
                            connection.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
                metrics.connections().dec();
            });
        }
        drop(listener);
        reaper.abort();
        let stopping = Instant::now();
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        registry.close_all();
        let grace = self.state.limits.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while !registry.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        if drained.await.is_err() {
            tracing::warn!(
                grace_s = grace.as_secs(),
                connections = registry.len(),
                "requests still in flight after the grace period"
            );
        }
        if let Some(cleaner) = cleaner {
            cleaner.abort();
        }
        if let Some(deliveries) = self.deliveries {
            deliveries.shutdown(grace.saturating_sub(stopping.elapsed())).await;
        }
    }
}

/// The ticket outbox `config` asks for: the Redis stream with `--redis`, else the journal
/// in the state directory, else (embedding, tests) a journal in memory.
fn open_outbox(config: &ServeConfig) -> Result<Arc<dyn Outbox>, ServeError> {
    let visibility = config.tickets.visibility;
    if let Some(url) = &config.redis {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let consumer = format!("{}-{}", host.trim(), std::process::id());
        let prefix = config.redis_config.prefix.trim_end_matches("session:");
        let timeout = config.redis_config.timeout;
        return Ok(Arc::new(RedisOutbox::connect(
            url, prefix, consumer, visibility, timeout,
        )?));
    }
    let Some(dir) = &config.tickets.state_dir else {
        return Ok(Arc::new(Journal::in_memory(visibility)));
    };
    let journal = Journal::open(dir, visibility)?;
    let stats = journal.stats();
    tracing::info!(journal = %journal.path().display(), replayed = stats.replayed, skipped = stats.skipped, "ticket journal opened");
    Ok(Arc::new(journal))
}

/// Runs `kefu serve`: binds `addr`, prints `listening on ADDR`, serves until SIGTERM or
/// Ctrl-C, reloads the rules on SIGHUP.
pub fn run(config: ServeConfig, addr: SocketAddr, workers: usize) -> Result<(), ServeError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| ServeError::Io { what, source }
    };
    logs::log_panics();
    if let Some(limit) = conns::raise_fd_limit() {
        tracing::debug!(open_files = limit, "open-files limit");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .max_blocking_threads(config.limits.max_in_flight + 64)
        .thread_name("kefu-worker")
        .enable_all()
        .build()
        .map_err(io("cannot start the runtime"))?;
    runtime.block_on(async move {
        let service = Service::build(config)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(io(&format!("cannot listen on {addr}")))?;
        let local = listener.local_addr().map_err(io("cannot read the bound address"))?;
        let state = Arc::clone(service.state());
        let rules = state.reloader.status();
        tracing::info!(addr = %local, rules = %rules.dir.display(), version = %rules.version, "serving");
        // Scripts and tests read the port from this line (with --addr 127.0.0.1:0).
        println!("listening on {local}");

        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).map_err(io("cannot listen for SIGHUP"))?;
        let mut terminate = signal(SignalKind::terminate()).map_err(io("cannot listen for SIGTERM"))?;
        let reloads = tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let reloader = Arc::clone(&state.reloader);
                let _ = tokio::task::spawn_blocking(move || reloader.reload(Trigger::Signal)).await;
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "stopping"),
            }
        };
        service.serve(listener, shutdown).await;
        reloads.abort();
        Ok(())
    })
}

/// One request, start to end: route, time limit, metrics, and errors turned into JSON.
async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
    busy: conns::Busy,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    // A clone of the URI is a reference count, not a copy; the route borrows from it while
    // the request moves on to its handler.
    let uri = req.uri().clone();
    let route = Route::of(uri.path());
    let name = route.as_ref().map_or("other", Route::name);
    let response = match tokio::time::timeout(state.limits.request_timeout, dispatch(&state, route, req, peer)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.into_response(),
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "no answer within {} s; try again",
                state.limits.request_timeout.as_secs_f64()
            ),
        )
        .into_response(),
    };
    state
        .metrics
        .request(name, response.status().as_u16(), started.elapsed());
    let mut response = response;
    if let Either::Right(stream) = response.body_mut() {
        // The connection stays busy while its event stream is open, so it is never shed
        // as idle.
        stream.busy = Some(busy);
    }
    Ok(response)
}

/// What a session route does to the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SessionAction {
    Takeover,
    Reply,
    Release,
    Feedback,
}

/// The route a path names, read once per request: for dispatch and for the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Chat,
    Completions,
    /// `/v1/sessions/{id}`, the id as it appears in the path (still percent-encoded).
    Session(&'a str),
    SessionAction(&'a str, SessionAction),
    Tickets,
    Healthz,
    Metrics,
    AdminRules,
    AdminReload,
}

impl<'a> Route<'a> {
    /// The route of `path`, `None` for no route. Splits the path without allocating: no
    /// route has more than four segments.
    fn of(path: &'a str) -> Option<Route<'a>> {
        let mut segments = [""; 4];
        let mut n = 0;
        for segment in path.trim_matches('/').split('/') {
            *segments.get_mut(n)? = segment;
            n += 1;
        }
        let action = |action: &str| match action {
            "takeover" => Some(SessionAction::Takeover),
            "reply" => Some(SessionAction::Reply),
            "release" => Some(SessionAction::Release),
            "feedback" => Some(SessionAction::Feedback),
            _ => None,
        };
        Some(match segments[..n] {
            ["v1", "chat"] => Route::Chat,
            ["v1", "chat", "completions"] => Route::Completions,
            ["v1", "sessions", id] => Route::Session(id),
            ["v1", "sessions", id, a] => Route::SessionAction(id, action(a)?),
            ["v1", "tickets"] => Route::Tickets,
            ["healthz"] => Route::Healthz,
            ["metrics"] => Route::Metrics,
            ["admin", "rules"] => Route::AdminRules,
            ["admin", "reload"] => Route::AdminReload,
            _ => return None,
        })
    }

    /// The route's pattern, the `route` label of the request metrics.
    fn name(&self) -> &'static str {
        match self {
            Route::Chat => "/v1/chat",
            Route::Completions => "/v1/chat/completions",
            Route::Session(_) => "/v1/sessions/{id}",
            Route::SessionAction(_, SessionAction::Takeover) => "/v1/sessions/{id}/takeover",
            Route::SessionAction(_, SessionAction::Reply) => "/v1/sessions/{id}/reply",
            Route::SessionAction(_, SessionAction::Release) => "/v1/sessions/{id}/release",
            Route::SessionAction(_, SessionAction::Feedback) => "/v1/sessions/{id}/feedback",
            Route::Tickets => "/v1/tickets",
            Route::Healthz => "/healthz",
            Route::Metrics => "/metrics",
            Route::AdminRules => "/admin/rules",
            Route::AdminReload => "/admin/reload",
        }
    }

    /// Whether the route reads (GET, and HEAD) rather than acts (POST).
    fn reads(&self) -> bool {
        matches!(
            self,
            Route::Session(_) | Route::Tickets | Route::Healthz | Route::Metrics | Route::AdminRules
        )
    }
}

async fn dispatch(
    state: &Arc<State>,
    route: Option<Route<'_>>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let Some(route) = route else {
        return Err(ApiError::not_found(format!(
            "no route {}; see docs/api.md",
            req.uri().path()
        )));
    };
    let method = req.method();
    if route.reads() && !(method == Method::GET || method == Method::HEAD) {
        return Err(ApiError::method_not_allowed("GET"));
    }
    if !route.reads() && method != Method::POST {
        return Err(ApiError::method_not_allowed("POST"));
    }
    match route {
        Route::Chat => {
            // Customers see a trace without the rules' internals; agents and editors (who
            // pass the admin check) see all of it.
            let full_trace = state.authorize(&req, peer).is_ok();
            chat::chat(state, req, full_trace).await
        }
        Route::Completions => {
            let full_trace = state.authorize(&req, peer).is_ok();
            openai::completions(state, req, full_trace).await
        }
        Route::Session(id) => {
            state.authorize(&req, peer)?;
            sessions::get(state, &decode_segment(id)?).await
        }
        Route::SessionAction(id, action) => {
            // Feedback comes from the customer's side; the rest are agent actions.
            if action != SessionAction::Feedback {
                state.authorize(&req, peer)?;
            }
            let id = decode_segment(id)?;
            match action {
                SessionAction::Takeover => sessions::takeover(state, &id, req).await,
                SessionAction::Reply => sessions::reply(state, &id, req).await,
                SessionAction::Release => sessions::release(state, &id).await,
                SessionAction::Feedback => sessions::feedback(state, &id, req).await,
            }
        }
        Route::Tickets => {
            state.authorize(&req, peer)?;
            sessions::tickets(state, req.uri().query())
        }
        Route::Healthz => Ok(admin::healthz(state)),
        Route::Metrics => Ok(admin::metrics(state)),
        Route::AdminRules => {
            state.authorize(&req, peer)?;
            Ok(admin::rules(state))
        }
        Route::AdminReload => {
            state.authorize(&req, peer)?;
            admin::reload(state).await
        }
    }
}

impl State {
    /// Admin and agent routes: the bearer token when one is configured, else loopback
    /// clients only, and only when they are not a proxy passing on someone else's request
    /// (a proxy on the same host connects from loopback; it says so in its headers).
    fn authorize(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<(), ApiError> {
        match &self.admin_token {
            Some(token) => {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(bearer);
                match given {
                    Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
                    Some(_) => Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "wrong bearer token",
                    )),
                    None => Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "this route needs `Authorization: Bearer <KEFU_ADMIN_TOKEN>`",
                    )),
                }
            }
            None if is_loopback(peer.ip()) && !proxied(req) => Ok(()),
            None => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "admin and agent routes answer only loopback clients, not through a proxy, when KEFU_ADMIN_TOKEN is not set",
            )),
        }
    }

    /// The per-session rate limit.
    fn check_rate(&self, key: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        match limiter.check_key(&key.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                self.metrics.rate_limited();
                let wait =
                    not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "too many messages for this session; at most {} a second",
                        self.limits.rate_per_session
                    ),
                )
                .with_retry_after(wait.as_secs_f64().ceil() as u64))
            }
        }
    }

    /// A permit for one turn, or 503 when too many are in flight.
    fn turn_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.turns).try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many conversations in flight; try again shortly",
            )
            .with_retry_after(1)
        })
    }

    /// Whether any turn may wait on the network or run long now (see the module docs).
    fn turns_may_block(&self) -> bool {
        self.remote_sessions
            || self.reloader.has_http_sources()
            || self.slow_rules.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes how long a turn's scripts held a runtime worker; past
    /// [`INLINE_TURN_BUDGET`], the serving rules' turns move to the blocking pool until the
    /// next reload.
    fn judge_inline_turn(&self, took: Duration) {
        if took > INLINE_TURN_BUDGET && !self.slow_rules.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.metrics.slow_rules();
            tracing::warn!(
                ms = took.as_secs_f64() * 1000.0,
                rules = %self.engine.rules().version,
                "a turn's scripts held a runtime worker too long; turns on these rules run on the blocking pool until the next reload"
            );
        }
    }

    /// Runs one non-streaming turn where it belongs (see the module docs) and records it.
    async fn run_turn(&self, request: TurnRequest) -> Result<(TurnResponse, model::Usage), ApiError> {
        let permit = self.turn_permit()?;
        self.metrics.in_flight().inc();
        let chars = request.message.chars().count();
        let segment = self.segment(&request);
        let result = if self.turns_may_block() {
            let engine = Arc::clone(&self.engine);
            tokio::task::spawn_blocking(move || model::with_usage(|| engine.turn(request)))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "turn panicked");
                    ApiError::internal()
                })
        } else {
            let engine = &self.engine;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                model::with_usage(|| engine.turn(request))
            }))
            .map_err(|_| {
                tracing::error!("turn panicked");
                ApiError::internal()
            });
            if let Ok((response, _)) = &result {
                self.judge_inline_turn(response.script_time);
            }
            result
        };
        self.metrics.in_flight().dec();
        drop(permit);
        let (response, usage) = result?;
        self.record_turn(&response, chars, usage, segment.as_deref());
        Ok((response, usage))
    }

    /// Runs a turn on the blocking pool, passing model deltas to `on_delta` as they come;
    /// `finish` gets the response and runs on the same thread.
    fn spawn_streaming_turn(
        self: &Arc<Self>,
        request: TurnRequest,
        mut on_delta: impl FnMut(&str) + Send + 'static,
        finish: impl FnOnce(Option<(&TurnResponse, model::Usage)>) + Send + 'static,
    ) -> Result<(), ApiError> {
        let permit = self.turn_permit()?;
        let state = Arc::clone(self);
        state.metrics.in_flight().inc();
        tokio::task::spawn_blocking(move || {
            let chars = request.message.chars().count();
            let segment = state.segment(&request);
            let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                model::with_usage(|| state.engine.turn_streaming(request, &mut on_delta))
            }));
            match turn {
                Ok((response, usage)) => {
                    state.record_turn(&response, chars, usage, segment.as_deref());
                    finish(Some((&response, usage)));
                }
                Err(_) => {
                    // The stream has begun (status 200 is sent): it ends with an error
                    // event instead of a status.
                    tracing::error!("streaming turn panicked");
                    finish(None);
                }
            }
            state.metrics.in_flight().dec();
            drop(permit);
        });
        Ok(())
    }

    /// The customer's segment (`user.segment`), for the conversation log when it is on.
    fn segment(&self, request: &TurnRequest) -> Option<String> {
        self.conversation_log.as_ref()?;
        let segment = request.segment()?.as_str()?;
        Some(segment.to_string())
    }

    /// Metrics, the per-turn log line and the conversation log. Message text is never in
    /// the tracing log (it may hold personal data): only its length; the conversation log
    /// has it masked.
    fn record_turn(&self, response: &TurnResponse, chars: usize, usage: model::Usage, segment: Option<&str>) {
        self.metrics.answer(response.source, response.handoff.is_some());
        if let Some(log) = &self.conversation_log {
            log.turn(response, segment, usage.prompt, usage.completion);
        }
        // Text fields go in as Display (`%`): a `&str` field is written with Debug, which
        // checks every Chinese character against Unicode's printable tables for escaping,
        // and that was a third of the line's cost. None of these values holds a newline
        // or a quote (names, intents and reasons come from checked rule files).
        tracing::info!(
            session = %LogSafe(&response.session_id),
            source = %metrics::source_name(response.source),
            rule = shown(response.rule.as_deref().or(response.promotion.as_deref()).or(response.flow.as_deref())),
            intent = shown(response.intent.as_deref()),
            handoff = shown(response.handoff.as_ref().map(|h| h.reason.as_str())),
            chars,
            rules = %response.rules_version,
            latency_ms = response.latency_ms,
            "turn"
        );
    }

    /// Runs `f` (which touches the session store) off the runtime's workers when the store
    /// does network I/O.
    async fn with_store<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&State) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        if self.remote_sessions {
            let state = Arc::clone(self);
            tokio::task::spawn_blocking(move || f(&state)).await.map_err(|e| {
                tracing::error!(error = %e, "session operation panicked");
                ApiError::internal()
            })
        } else {
            Ok(f(self))
        }
    }
}

/// A text log field written as Display (see [`State::record_turn`]).
fn shown(text: Option<&str>) -> Option<tracing::field::DisplayValue<&str>> {
    text.map(tracing::field::display)
}

/// The credentials of an `Authorization: Bearer` header; the scheme is case-insensitive
/// (RFC 9110), and some clients send `bearer`.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim())
}

/// Whether a proxy forwarded the request (it names the client it came from).
fn proxied(req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| headers.contains_key(*name))
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// A path segment, percent-decoded (session ids may be Chinese).
fn decode_segment(segment: &str) -> Result<String, ApiError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::invalid("bad percent-encoding in the path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::invalid("the path is not UTF-8"))
}

/// Reads a request body of at most `limit` bytes.
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::invalid(format!("the body could not be read: {error}"))),
    }
}

/// Reads and parses a JSON body; an empty body reads as `{}` when `empty_ok`.
async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    limit: usize,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let body = read_body(req, limit).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        if empty_ok {
            return serde_json::from_slice(b"{}").map_err(|e| ApiError::from_json(&e));
        }
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::from_json(&e))
}

/// Checks a session id: present, not too long, no control characters.
fn check_session_id(id: &str, limits: &Limits) -> Result<(), ApiError> {
    if id.trim().is_empty() {
        return Err(ApiError::invalid("`session_id` is empty"));
    }
    if id.chars().count() > limits.max_session_id_chars {
        return Err(ApiError::invalid(format!(
            "`session_id` is longer than {} characters",
            limits.max_session_id_chars
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::invalid("`session_id` contains control characters"));
    }
    Ok(())
}

/// Checks a message: not empty, not too long.
fn check_message(message: &str, field: &str, limits: &Limits) -> Result<(), ApiError> {
    if message.trim().is_empty() {
        return Err(ApiError::invalid(format!("`{field}` is empty")));
    }
    let chars = message.chars().count();
    if chars > limits.max_message_chars {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "message_too_long",
            format!(
                "`{field}` has {chars} characters; at most {} are accepted",
                limits.max_message_chars
            ),
        ));
    }
    Ok(())
}

/// A turn's response as its requester may see it: whole for agents and editors, with a
/// customer's view of the trace otherwise.
fn for_requester(mut response: TurnResponse, full_trace: bool) -> TurnResponse {
    if !full_trace {
        response.trace = crate::engine::TraceStep::for_customer(&response.trace);
    }
    response
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("response types always serialize");
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A streaming response of server-sent events fed by the returned sender.
fn event_stream_response() -> (mpsc::Sender<Bytes>, Response<Body>) {
    let (tx, rx) = mpsc::channel(64);
    let mut response = Response::new(Either::Right(EventStream { rx, busy: None }));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx buffer responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    (tx, response)
}

/// One server-sent event: `event: NAME` (when named) and a `data:` line.
fn sse_event(name: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    // JSON has no raw newlines, but be safe: each line of data is its own `data:` line.
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// The body of an event-stream response: chunks from a channel until it closes.
pub struct EventStream {
    rx: mpsc::Receiver<Bytes>,
    /// Keeps the connection counted as busy while the stream is open.
    busy: Option<conns::Busy>,
}

impl hyper::body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(decode_segment("%E5%AE%A2%E6%88%B7-1").unwrap(), "客户-1");
        assert!(decode_segment("%zz").is_err());
        assert!(decode_segment("%ff").is_err());
    }

    #[test]
    fn events_are_framed_one_data_line_per_line() {
        assert_eq!(
            sse_event(Some("delta"), "{\"text\":\"好\"}"),
            "event: delta\ndata: {\"text\":\"好\"}\n\n"
        );
        assert_eq!(sse_event(None, "a\nb"), "data: a\ndata: b\n\n");
    }

    #[test]
    fn routes_are_read_once_and_labelled_by_pattern() {
        assert_eq!(Route::of("/v1/chat"), Some(Route::Chat));
        assert_eq!(Route::of("/v1/chat/"), Some(Route::Chat));
        assert_eq!(Route::of("/v1/sessions/abc"), Some(Route::Session("abc")));
        assert_eq!(Route::Session("abc").name(), "/v1/sessions/{id}");
        assert_eq!(
            Route::of("/v1/sessions/abc/feedback"),
            Some(Route::SessionAction("abc", SessionAction::Feedback))
        );
        assert_eq!(
            Route::SessionAction("abc", SessionAction::Feedback).name(),
            "/v1/sessions/{id}/feedback"
        );
        assert!(Route::Session("abc").reads());
        assert!(!Route::SessionAction("abc", SessionAction::Takeover).reads());
        assert_eq!(Route::of("/v1/sessions/abc/feedback/x"), None);
        assert_eq!(Route::of("/v1/sessions/abc/delete"), None);
        assert_eq!(Route::of("/nope/x"), None);
        assert_eq!(Route::of("/"), None);
    }
}
