//! The [`State`] every request handler shares, and [`Service::build`], which wires it from
//! a [`ServeConfig`]: rules, sessions, the ticket outbox and its delivery pump, the job
//! queue, the engine and its model, the conversation log, the reloader and its watcher,
//! and the metrics that watch them.

use std::sync::Arc;
use std::time::Instant;

use governor::DefaultKeyedRateLimiter;
use tokio::sync::Semaphore;

use super::health::{Health, Probe};
use super::inbox::{Figures, Inbox};
use super::metrics::Metrics;
use super::recorder::Recorder;
use super::{Limits, ServeConfig, ServeError, limits, model};
use crate::Engine;
use crate::batch::FlushGuard;
use crate::data::ConversationLog;
use crate::jobs::JobQueue;
use crate::reload::{FollowHandle, ReloadOutcome, Reloader, WatchHandle};
use crate::safety::logsafe::LogSafe;
use crate::store::{MemoryStore, RedisStore, SessionStore};
use crate::tickets::{Deliveries, Journal, Outbox, RedisOutbox, TicketStore};

/// What every request handler shares.
pub struct State {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Builds and swaps rule sets.
    pub reloader: Arc<Reloader>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Readiness (`/readyz`) and the drain of a shutdown.
    pub health: Health,
    /// Client limits.
    pub limits: Limits,
    /// The bearer token of admin and agent routes (see [`super::auth`]).
    pub(super) admin_token: Option<String>,
    /// The per-session rate limiter, `None` when the limit is off (see [`super::limits`]).
    pub(super) limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// Permits for turns in flight (see [`super::turns`]).
    pub(super) turns: Arc<Semaphore>,
    /// Sessions are in a store that does network I/O.
    pub(super) remote_sessions: bool,
    /// A turn on the serving rules took longer than [`INLINE_TURN_BUDGET`] on a runtime
    /// worker: until the next reload, turns run on the blocking pool.
    ///
    /// [`INLINE_TURN_BUDGET`]: super::turns::INLINE_TURN_BUDGET
    pub(super) slow_rules: Arc<std::sync::atomic::AtomicBool>,
    /// When the service was built (`uptime_s` of `/healthz`).
    pub(super) started: Instant,
    /// Checks signed customer identities, when the shop has an identity key.
    pub(super) identity: Option<super::identity::Verifier>,
    /// The version store the admin API publishes to (and the node follows, unless it
    /// serves its rules directory in development mode).
    pub(super) versions: Option<Arc<dyn crate::versions::VersionStore>>,
    /// The conversation log's directory, when the log is on (what `POST /admin/replay`
    /// replays).
    pub(super) log_dir: Option<std::path::PathBuf>,
    /// The log's last hit per name, file by file, for `GET /admin/report`'s `never_hit`
    /// (files unchanged since the last call are not read again).
    pub(super) last_hits: Arc<crate::data::hits::LastHits>,
    /// The console's users, session key and failed sign-ins (see [`super::console`]).
    pub(super) console: super::console::Console,
    /// The draft (the rules directory) as the console's test chat and tests build it.
    pub(super) workbench: crate::reload::workbench::Workbench,
    /// The agents' inbox (fed by the recorder; see [`super::inbox`]).
    pub inbox: Arc<Inbox>,
    /// The web widget's sites and per-address limit, when the channels file names sites
    /// (see [`super::channels::widget`]).
    pub(super) widget: Option<super::channels::widget::Widget>,
    /// How long an agent gone from the inbox keeps their conversations.
    pub(super) agent_grace: std::time::Duration,
    /// The channels file (`--channels`): widget sites, WeChat accounts, webhook channels;
    /// `None`: only the JSON API.
    pub channels: Option<Arc<crate::channels::ChannelsConfig>>,
    /// The senders of the configured channels (see [`super::channels`]), their deliveries
    /// counted in the metrics.
    pub outbound: crate::channels::Outbound,
    /// Platform message ids already taken: in memory, or in Redis with `--redis` so that a
    /// fleet answers a retried message once. May block (network): ask it off the
    /// runtime's workers when `remote_sessions`.
    pub seen: Arc<dyn crate::channels::Seen>,
    /// The job queue: channel deliveries ([`crate::channels::deliver`]) go through it.
    pub jobs: JobQueue,
    /// What the channels' routes need besides their senders (webhook posters).
    pub(super) registered: super::channels::Registered,
    /// The WeChat accounts at run time, when the channels file has any.
    pub(super) wechat: Option<Arc<super::channels::wechat::Wechat>>,
    /// Customers' images: the store, their limits, the vision model (see [`super::images`]).
    pub photos: Arc<super::images::Photos>,
}

/// A built service: rules loaded, engine, reloader, job queue. Serve it with
/// [`Service::serve`] (in [`super::serve`]).
pub struct Service {
    pub(super) state: Arc<State>,
    /// The ticket delivery pump, drained on shutdown.
    pub(super) deliveries: Option<Deliveries>,
    _watcher: Option<WatchHandle>,
    /// Follows the version store (and its Redis subscription), when there is one.
    _follow: Option<(FollowHandle, Option<crate::versions::redis::Subscription>)>,
    /// Writes what the conversation log holds when the service ends.
    _log: Option<FlushGuard>,
    /// The inbox's subscription to the other nodes' changes, with Redis.
    _inbox_fleet: Option<super::inbox::fleet::Subscription>,
    /// The conversation log, opened again on SIGHUP.
    log: Option<ConversationLog>,
    /// Removes images past their retention, hourly.
    _sweeper: super::images::Sweeper,
}

impl Service {
    /// Loads the rules and builds the service. Must be called inside a tokio runtime (the
    /// job queue starts on it).
    pub fn build(mut config: ServeConfig) -> Result<Self, ServeError> {
        if config.versions_in_redis
            && let Some(url) = &config.redis
        {
            let redis = Arc::new(
                crate::versions::RedisVersionStore::connect_with(
                    url,
                    crate::versions::RedisVersionStore::PREFIX,
                    config.redis_config.timeout.max(std::time::Duration::from_secs(1)),
                )
                .map_err(|e| ServeError::Versions(e.to_string()))?,
            );
            config.versions = Some(redis.clone());
            config.versions_subscribe = Some(redis);
        }
        // Published versions are checked out (and served) from the state directory.
        let state_dir = config.tickets.state_dir.clone().unwrap_or_else(|| {
            // One directory per service, not per process: several services embedded
            // in one process (tests run them side by side) would check the same
            // version out into one place at once.
            static SERVICES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = SERVICES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::env::temp_dir().join(format!("kefu-state-{}-{n}", std::process::id()))
        });
        // The store's live version serves, unless there is none yet or the directory is
        // asked for (development mode).
        let live = match &config.versions {
            Some(store) if !config.serve_dir => crate::reload::Follower::load_live(store, &state_dir)
                .map_err(|e| ServeError::Versions(e.to_string()))?,
            _ => None,
        };
        let (rules, live) = match live {
            Some((id, rules)) => {
                tracing::info!(
                    version = id,
                    rules = %rules.version,
                    dir = %config.rules.display(),
                    "serving the version store's live version; the rules directory is not served (publish it with `kefu publish`, or serve it with --watch)"
                );
                (rules, Some(id))
            }
            None => {
                let compiled = crate::dsl::load_dir(&config.rules);
                let Some(rules) = compiled.rules else {
                    return Err(ServeError::Rules {
                        dir: config.rules.clone(),
                        report: compiled.report.render_all(false),
                    });
                };
                (rules, None)
            }
        };
        let metrics = Arc::new(Metrics::new());
        let photos = Arc::new(
            super::images::Photos::open(&config.images, &state_dir, Arc::clone(&metrics)).map_err(|source| {
                ServeError::Io {
                    what: "the image store (--image-dir) or the vision model (--vision-url)".into(),
                    source,
                }
            })?,
        );
        let sweeper = super::images::Sweeper::start(&photos);
        let inbox = Arc::new(Inbox::new(Some(Arc::clone(&metrics) as Arc<dyn Figures>)));
        let counted = Arc::downgrade(&inbox);
        metrics.watch_inbox(move || counted.upgrade().map(|i| i.counts()).unwrap_or_default());
        // With Redis, readiness asks it too (a PING, see `health`); memory is always there.
        let mut store_probe: Option<Probe> = None;
        let (sessions, remote_sessions): (Arc<dyn SessionStore>, bool) = match (&config.sessions, &config.redis) {
            (Some(store), _) => (Arc::clone(store), true),
            (None, Some(url)) => {
                metrics.watch_redis();
                let observed = Arc::clone(&metrics);
                let redis = Arc::new(
                    RedisStore::connect(url, config.redis_config.clone())?
                        .with_observer(Arc::new(move |op, took, failed| observed.redis(op, took, failed))),
                );
                let pinged = Arc::clone(&redis);
                store_probe = Some(Arc::new(move || pinged.ping().map_err(|e| e.to_string())));
                (redis, true)
            }
            (None, None) => (Arc::new(MemoryStore::default()), false),
        };

        let job_metrics = Arc::clone(&metrics);
        // Jobs tell conversations their outcomes through the engine, the only writer of
        // sessions. The engine is made below (it needs the tickets, which need the queue),
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
        // Channels: their senders (agents' messages and late replies go out through them,
        // counted) and the message ids already taken.
        let channel_metrics = Arc::clone(&metrics);
        let mut outbound = crate::channels::Outbound::observed(Arc::new(move |channel: &str, outcome| {
            channel_metrics.channel_delivery(channel, outcome);
        }));
        let registered = match &config.channels {
            Some(channels) => {
                metrics.watch_channels(channels);
                super::channels::register(channels, &mut outbound)
            }
            None => super::channels::Registered::default(),
        };
        // WeChat's accounts: their senders in `outbound`, their run-time state (tokens,
        // cursors, replies in flight) for the callback route.
        let wechat = config.channels.as_deref().and_then(|channels| {
            super::channels::wechat::register(channels, &mut outbound, config.tickets.state_dir.as_deref())
        });
        let seen: Arc<dyn crate::channels::Seen> = match &config.redis {
            Some(url) => Arc::new(
                crate::channels::RedisSeen::new(
                    url,
                    config.redis_config.prefix.trim_end_matches("session:"),
                    super::channels::SEEN_TTL,
                    config.redis_config.timeout,
                )
                .map_err(|e| ServeError::Redis(crate::store::RedisStoreError::Command(e)))?,
            ),
            None => Arc::new(crate::channels::MemorySeen::new(
                super::channels::SEEN_CAPACITY,
                super::channels::SEEN_TTL,
            )),
        };
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
        // The inbox starts with the stored conversations that are not with the bot.
        match sessions.recent(super::config::INBOX_FILL) {
            Ok(stored) => {
                let filled = inbox.fill(stored);
                if filled > 0 {
                    tracing::info!(conversations = filled, "inbox filled from the session store");
                }
            }
            Err(error) => tracing::warn!(%error, "the inbox starts empty: the session store could not be listed"),
        }
        let mut engine = Engine::new(rules)
            .with_config(config.engine.clone())
            .with_sessions(sessions)
            .with_tickets(tickets)
            .with_cache_observer(move |hit| cache_metrics.cache_lookup(hit));
        if let Some(llm) = &config.llm {
            metrics.watch_model(llm);
            engine = engine.with_llm(Arc::new(model::Metered::new(Arc::clone(llm), Arc::clone(&metrics))));
        }
        let engine = Arc::new(engine.with_queues(Arc::clone(&inbox) as _));
        let serving = Arc::downgrade(&engine);
        metrics.watch_rules(move || serving.upgrade().map(|e| e.rules().version.clone()).unwrap_or_default());
        let serving = Arc::downgrade(&engine);
        metrics.watch_versions(move || {
            serving
                .upgrade()
                .map(|e| super::canary::Serving {
                    live: e.rules().version.clone(),
                    candidate: e.candidate().map(|c| c.rules.version.clone()),
                    pinned: e.pinned_versions(),
                })
                .unwrap_or_default()
        });
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
        // The engine reports every change to a conversation; the recorder counts and logs
        // it (the handlers write no records of their own).
        let recorder = Arc::new(Recorder {
            metrics: Arc::clone(&metrics),
            log: conversation_log.clone(),
            inbox: Some(Arc::clone(&inbox)),
            channels: Some(super::recorder::ChannelHook {
                outbound: outbound.clone(),
                queue: queue.clone(),
            }),
        });
        engine.set_observer(Arc::clone(&recorder) as _);
        // With Redis, the nodes' inboxes follow each other's changes.
        let inbox_fleet = match &config.redis {
            Some(url) => {
                let prefix = config.redis_config.prefix.trim_end_matches("session:");
                let silenced = Arc::downgrade(&engine);
                let subscription = super::inbox::fleet::start(
                    url,
                    prefix,
                    config.redis_config.timeout.max(std::time::Duration::from_millis(500)),
                    &inbox,
                    move |id| {
                        if let Some(engine) = silenced.upgrade() {
                            engine.silence(id);
                        }
                    },
                )
                .map_err(|e| ServeError::Redis(crate::store::RedisStoreError::Command(e)))?;
                Some(subscription)
            }
            None => None,
        };
        // The serving rules' items have hit series from the start, and each reload's too.
        metrics.watch_hits(&crate::data::hits::Catalog::of(&engine.rules()));
        metrics.watch_proactive(&engine.rules());
        let reloaded = Arc::downgrade(&engine);
        let reload_metrics = Arc::clone(&metrics);
        let slow_rules = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let slow_reset = Arc::clone(&slow_rules);
        let reloader = Arc::new(
            Reloader::new(&config.rules, Arc::clone(&engine)).with_observer(move |_, outcome| {
                let applied = matches!(outcome, ReloadOutcome::Applied { .. });
                if applied {
                    // New rules are judged afresh.
                    slow_reset.store(false, std::sync::atomic::Ordering::Relaxed);
                    if let Some(engine) = reloaded.upgrade() {
                        reload_metrics.watch_hits(&crate::data::hits::Catalog::of(&engine.rules()));
                        reload_metrics.watch_proactive(&engine.rules());
                    }
                }
                reload_metrics.reload(applied)
            }),
        );
        let reloader = match &config.versions {
            Some(store) if !config.serve_dir => {
                let follower = Arc::new(crate::reload::Follower::new(
                    Arc::clone(store),
                    Arc::clone(&engine),
                    &state_dir,
                ));
                if let Some(id) = live {
                    follower.started_on(id, engine.rules());
                }
                let reloader = Arc::into_inner(reloader)
                    .expect("the reloader is not shared yet")
                    .with_follower(follower);
                Arc::new(reloader)
            }
            _ => reloader,
        };
        // The directory is watched only while it is what serves.
        let watcher = if config.watch && live.is_none() {
            Some(reloader.watch(config.debounce)?)
        } else {
            None
        };
        let follow = match reloader.follower() {
            Some(_) => {
                // At once: a canary running at start is applied before the first request.
                reloader.reload(crate::reload::Trigger::Store);
                let handle = reloader.follow().map_err(|e| ServeError::Versions(e.to_string()))?;
                let subscription = config
                    .versions_subscribe
                    .as_ref()
                    .map(|redis| redis.subscribe(handle.waker()));
                Some((handle, subscription))
            }
            None => None,
        };
        let limiter = limits::rate_limiter(config.limits.rate_per_session);
        let identity = match &config.identity {
            Some(identity) => Some(super::identity::Verifier::new(identity).ok_or(ServeError::IdentityKey)?),
            None => None,
        };
        let console =
            super::console::Console::open(&config.console, config.tickets.state_dir.as_deref()).map_err(|source| {
                ServeError::Io {
                    what: "the console's cookie-signing key".into(),
                    source,
                }
            })?;
        let widget = config
            .channels
            .as_ref()
            .and_then(|c| super::channels::widget::Widget::new(&c.widget, config.limits.widget_rate_per_ip));
        let state = Arc::new(State {
            wechat,
            engine,
            reloader,
            metrics,
            health: Health::new(store_probe),
            turns: Arc::new(Semaphore::new(config.limits.max_in_flight.max(1))),
            limits: config.limits,
            admin_token: config.admin_token.filter(|t| !t.is_empty()),
            limiter,
            remote_sessions,
            slow_rules,
            started: Instant::now(),
            identity,
            versions: config.versions.clone(),
            log_dir: config.conversation_log.as_ref().map(|log| log.dir.clone()),
            last_hits: Default::default(),
            console,
            workbench: crate::reload::workbench::Workbench::new(
                &config.rules,
                config
                    .versions
                    .as_ref()
                    .map(crate::versions::load_options)
                    .unwrap_or_default(),
            ),
            inbox,
            widget,
            agent_grace: config.agent_grace,
            channels: config.channels.clone(),
            outbound,
            seen,
            jobs: queue,
            registered,
            photos,
        });
        // An agent's scores are labelled by name only for the console's users.
        let users = Arc::downgrade(&state);
        state.metrics.watch_agents(move |name| {
            users
                .upgrade()
                .is_some_and(|s| s.console.users.current().find(name).is_some())
        });
        super::versions::guard_canaries(Arc::downgrade(&state), config.canary);
        Ok(Service {
            state,
            deliveries,
            _follow: follow,
            _watcher: watcher,
            _log: log_guard,
            _inbox_fleet: inbox_fleet,
            log: conversation_log,
            _sweeper: sweeper,
        })
    }

    /// The conversation log, when it is on (to open its file again after logrotate).
    pub fn conversation_log(&self) -> Option<&ConversationLog> {
        self.log.as_ref()
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &Arc<State> {
        &self.state
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
