//! `kefu serve`: its flags, the logging it sets up, and the server configuration they make.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use super::model::ModelArgs;

/// The flags of `kefu serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The rules directory.
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Keep sessions in Redis (`redis://127.0.0.1:6379/0`) so several nodes share them.
    #[arg(long)]
    redis: Option<String>,
    /// How long Redis keeps an idle session, in seconds.
    #[arg(long, default_value_t = 86_400)]
    session_ttl: u64,
    /// Milliseconds one try of a Redis command may take: to connect, to write, for the
    /// reply, and for a pooled connection (the ticket outbox's commands too).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    redis_timeout_ms: u64,
    /// Tries of a session read or write before the turn fails with 503
    /// `store_unavailable` (pauses of 10 ms, 20 ms, … between them).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    redis_attempts: u32,
    /// A scripted model for tests and demos: YAML list of `{when, reply, confidence}`, or
    /// `{token_delay_ms, answers: [...]}`.
    #[arg(long, hide = true)]
    pub mock_llm: Option<PathBuf>,
    /// POST every new ticket to this back-office URL (background job with retries).
    #[arg(long)]
    tickets_url: Option<String>,
    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Do not watch the rules directory (SIGHUP and /admin/reload still reload).
    #[arg(long)]
    no_watch: bool,
    /// Messages per second per session (burst twice that); 0 turns the limit off.
    #[arg(long, default_value_t = 20)]
    rate_limit: u32,
    /// Longest customer or agent message, in characters.
    #[arg(long, default_value_t = 2000)]
    max_message_chars: usize,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_body_bytes: usize,
    /// Turns answered at once; more get 503.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Seconds a request may take before it gets 504.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Client connections open at once (kept under the open-files limit, which is raised
    /// to its hard limit at start); past it the oldest idle connection is closed.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Connections open at once from one client address (an IPv6 /64); 0: no limit. Behind
    /// a proxy every connection comes from the proxy: set 0 there and limit at the proxy.
    #[arg(long, default_value_t = 256)]
    max_connections_per_client: usize,
    /// Seconds a connection may stay idle between requests.
    #[arg(long, default_value_t = 75)]
    idle_timeout: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (`info`, `warn`, `kefu=debug`...); RUST_LOG overrides it. llama.cpp's
    /// own messages (a line per tensor at load) are under `llama-cpp-2`.
    #[arg(long, default_value = "info,llama-cpp-2=warn")]
    log_level: String,
    /// Most FAQ and model answers kept for reuse; 0 turns the answer cache off.
    #[arg(long, default_value_t = 10_000)]
    answer_cache: u64,
    /// Seconds a cached answer is reused.
    #[arg(long, default_value_t = 600)]
    answer_cache_ttl: u64,
    /// Append every turn, agent answer, takeover, release and feedback, masked, to JSONL
    /// files in DIR (docs/data.md). Off by default.
    #[arg(long, value_name = "DIR")]
    conversation_log: Option<PathBuf>,
    /// Start a new conversation log file past this size (a new one also starts each day).
    #[arg(long, default_value_t = 256)]
    conversation_log_max_mb: u64,
    #[command(flatten)]
    tickets: TicketArgs,
}

/// Where tickets are kept until the back office has them (docs/operations.md, "Tickets and
/// the job queue").
#[derive(clap::Args)]
struct TicketArgs {
    /// The ticket journal's directory, used without --redis (one per node). Default:
    /// $STATE_DIRECTORY (systemd), else $XDG_STATE_HOME/kefu, else ~/.local/state/kefu.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// A file holding the HMAC-SHA256 key that signs deliveries (X-Kefu-Signature);
    /// KEFU_TICKETS_SECRET (environment) is read when this is not given.
    #[arg(long, value_name = "FILE")]
    tickets_secret_file: Option<PathBuf>,
    /// Seconds a ticket handed out for delivery may stay unfinished before it is handed
    /// out again (after a crash, here or on another node).
    #[arg(long, default_value_t = 60)]
    ticket_visibility_timeout: u64,
}

impl TicketArgs {
    /// The delivery settings these flags ask for.
    fn config(self) -> Result<kefu::tickets::TicketConfig> {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let state_dir = self
            .state_dir
            .or_else(|| env("STATE_DIRECTORY"))
            .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("kefu")))
            .or_else(|| env("HOME").map(|d| d.join(".local/state/kefu")))
            .unwrap_or_else(|| PathBuf::from("kefu-state"));
        let secret = match &self.tickets_secret_file {
            Some(path) => {
                let text = std::fs::read(path).with_context(|| format!("--tickets-secret-file {}", path.display()))?;
                Some(text.trim_ascii().to_vec())
            }
            None => std::env::var("KEFU_TICKETS_SECRET").ok().map(String::into_bytes),
        };
        Ok(kefu::tickets::TicketConfig {
            state_dir: Some(state_dir),
            secret: secret.filter(|s| !s.is_empty()),
            visibility: std::time::Duration::from_secs(self.ticket_visibility_timeout.max(1)),
            ..kefu::tickets::TicketConfig::default()
        })
    }
}

/// How logs are written.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Sets up logging, builds the server's configuration from `args` and serves until stopped.
pub fn run(args: ServeArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .with_context(|| format!("--log-level {}", args.log_level))?;
    // Lines are batched to stderr by a flusher thread (see kefu::server::logs): a write per
    // line cost as much CPU as a turn. The guard flushes what is left when serve returns.
    let (writer, _guard) = kefu::server::logs::batched_stderr(std::time::Duration::from_millis(100));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_timer(kefu::server::logs::Timestamps);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text if std::io::stderr().is_terminal() => builder.with_ansi(true).init(),
        LogFormat::Text => builder
            .with_ansi(false)
            .fmt_fields(kefu::server::logs::plain_fields())
            .init(),
    }
    let mut config = kefu::server::ServeConfig::new(&args.rules);
    config.watch = !args.no_watch;
    config.admin_token = std::env::var("KEFU_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    config.redis = args.redis;
    config.redis_config.ttl = std::time::Duration::from_secs(args.session_ttl);
    config.redis_config.timeout = std::time::Duration::from_millis(args.redis_timeout_ms);
    config.redis_config.attempts = args.redis_attempts;
    config.tickets_url = args.tickets_url;
    config.tickets = args.tickets.config()?;
    config.llm = match &args.mock_llm {
        Some(path) => Some(kefu::server::model::load_mock(path)?),
        None => args.model.open()?,
    };
    config.conversation_log = args.conversation_log.map(|dir| kefu::data::LogConfig {
        max_bytes: args.conversation_log_max_mb.saturating_mul(1024 * 1024),
        ..kefu::data::LogConfig::new(dir)
    });
    if let Some(path) = &args.mock_llm {
        config.llm = Some(kefu::server::model::load_mock(path)?);
    }
    config.limits = kefu::server::Limits {
        max_body_bytes: args.max_body_bytes,
        max_message_chars: args.max_message_chars,
        rate_per_session: args.rate_limit,
        request_timeout: std::time::Duration::from_secs(args.timeout),
        max_in_flight: args.max_in_flight,
        connections: kefu::server::conns::ConnLimits {
            max: args.max_connections.max(1),
            per_client: args.max_connections_per_client,
            idle_timeout: std::time::Duration::from_secs(args.idle_timeout),
            ..kefu::server::conns::ConnLimits::default()
        },
        ..kefu::server::Limits::default()
    };
    config.engine.answer_cache_capacity = args.answer_cache;
    config.engine.answer_cache_ttl = std::time::Duration::from_secs(args.answer_cache_ttl);
    let workers = if args.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        args.workers
    };
    kefu::server::run(config, args.addr, workers)?;
    Ok(())
}
