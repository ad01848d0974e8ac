//! `kefu serve`: its flags, the logging it sets up, and the server configuration they make.
//!
//! Every flag can also come from its `KEFU_*` variable or from `--config FILE` (see
//! cli/config.rs, which needs nothing from here). Secrets are never flags: they come from
//! the environment or from the file a `--…-file` flag names ([`secret_file`]).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use super::model::ModelArgs;

/// The flags of `kefu serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// A TOML file of settings: the long flag names as keys (`max-in-flight = 512`);
    /// flags and KEFU_* variables override it (examples/kefu.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML (each value with where it came from,
    /// secrets as ***) and exit without serving.
    #[arg(long)]
    print_config: bool,
    /// The rules directory.
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Keep sessions in Redis (`redis://127.0.0.1:6379/0`) so several nodes share them.
    /// Its password goes in --redis-password-file or KEFU_REDIS_PASSWORD, not here (a
    /// command line is visible in `ps`).
    #[arg(long)]
    redis: Option<String>,
    /// A file holding the Redis password, added to --redis at start; KEFU_REDIS_PASSWORD
    /// (environment) is read when this is not given.
    #[arg(long, value_name = "FILE")]
    redis_password_file: Option<PathBuf>,
    /// A file holding the admin token (admin and agent routes need `Authorization: Bearer
    /// TOKEN`); KEFU_ADMIN_TOKEN (environment) is read when this is not given.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
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
    #[arg(long, conflicts_with = "watch")]
    no_watch: bool,
    /// Development mode: serve the rules directory and reload it on every save, even when
    /// the version store has a live version. Without it, kefu serves the store's live
    /// version (and its canary), and watches the directory only while nothing has been
    /// published yet (`make run` on a fresh checkout).
    #[arg(long)]
    watch: bool,
    /// Messages per second per session (burst twice that); 0 turns the limit off.
    #[arg(long, default_value_t = 20)]
    rate_limit: u32,
    /// Requests per second per client address from the web widget's sites (burst four
    /// times that; IPv6 by /64); 0 turns the limit off. The address is the connection's
    /// peer: behind a reverse proxy, limit at the proxy.
    #[arg(long, default_value_t = 5)]
    widget_rate_per_ip: u32,
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
    /// Seconds kefu keeps answering after SIGTERM with /readyz at 503, so that a load
    /// balancer's health check moves traffic away first; 0 stops at once (tests, dev).
    #[arg(long, default_value_t = 5)]
    drain_seconds: u64,
    /// Seconds an agent whose last inbox stream closed (browser closed, network lost)
    /// keeps their conversations; then they wait in their queues again.
    #[arg(long, default_value_t = 120)]
    agent_grace: u64,
    /// The channels file (YAML): the web widget's sites, WeChat accounts, webhook
    /// channels (docs/channels.md). Secrets are named there (`{env: NAME}`, `{file:
    /// PATH}`), never written; a mistake stops the start with FILE:line:col.
    #[arg(long, value_name = "FILE")]
    channels: Option<PathBuf>,
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
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    canary: CanaryArgs,
    #[command(flatten)]
    console: ConsoleArgs,
    #[command(flatten)]
    images: ImageArgs,
}

/// Customers' photos and the vision model that describes them (docs/photos.md).
#[derive(clap::Args)]
struct ImageArgs {
    /// Where customers' images are kept (metadata stripped, by random id). Default:
    /// STATE_DIR/images. Nodes behind one address share uploads only through a shared
    /// directory.
    #[arg(long, value_name = "DIR")]
    image_dir: Option<PathBuf>,
    /// How long an image is kept: days (`30`, `30d`), hours (`12h`) or minutes (`90m`);
    /// swept hourly.
    #[arg(long, default_value = "30d", value_parser = parse_retention)]
    image_retention: std::time::Duration,
    /// Images one conversation may send a day; more are refused (429).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    images_per_day: u32,
    /// Largest image, in bytes, as sent (an upload is not read past it).
    #[arg(long, default_value_t = 10 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    max_image_bytes: u64,
    /// A vision model that describes each image for the rules (`image.description`) and
    /// the prompt: an OpenAI-compatible server taking `image_url` content (llama-server
    /// with a multimodal GGUF and its --mmproj, vLLM, a hosted API). The key, if any, is
    /// read from --vision-api-key-file or KEFU_VISION_API_KEY.
    #[arg(long)]
    vision_url: Option<String>,
    /// The model name sent to --vision-url.
    #[arg(long, default_value = "default")]
    vision_model: String,
    /// How long one image's description may take, in seconds (`8`, `2.5`) or milliseconds
    /// (`1500ms`); past it the image goes without one.
    #[arg(long, default_value = "8", value_parser = super::model::parse_duration)]
    vision_timeout: std::time::Duration,
    /// A file holding the --vision-url server's API key; KEFU_VISION_API_KEY (environment)
    /// is read when this is not given.
    #[arg(long, value_name = "FILE")]
    vision_api_key_file: Option<PathBuf>,
}

/// A retention time: days (`30`, `30d`), hours (`12h`) or minutes (`90m`), more than zero.
fn parse_retention(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((at, 'd')) => (&text[..at], 86_400),
        Some((at, 'h')) => (&text[..at], 3600),
        Some((at, 'm')) => (&text[..at], 60),
        _ => (text, 86_400),
    };
    match number.trim().parse::<u64>() {
        Ok(n) if n > 0 && n <= 36_500 * 86_400 / unit => Ok(std::time::Duration::from_secs(n * unit)),
        _ => Err(format!(
            "`{text}`: expected days (`30`, `30d`), hours (`12h`) or minutes (`90m`), more than zero"
        )),
    }
}

impl ImageArgs {
    /// The image settings these flags ask for.
    fn config(self) -> Result<kefu::server::images::ImageConfig> {
        let vision = match self.vision_url {
            Some(url) => Some(kefu::llm::vision::VisionConfig {
                model: self.vision_model,
                timeout: self.vision_timeout,
                api_key: secret_text(
                    self.vision_api_key_file.as_deref(),
                    "--vision-api-key-file",
                    "KEFU_VISION_API_KEY",
                )?,
                ..kefu::llm::vision::VisionConfig::new(url)
            }),
            None => None,
        };
        Ok(kefu::server::images::ImageConfig {
            dir: self.image_dir,
            retention: self.image_retention,
            per_day: self.images_per_day,
            limits: kefu::media::ImageLimits {
                max_bytes: usize::try_from(self.max_image_bytes).unwrap_or(usize::MAX),
                ..kefu::media::ImageLimits::default()
            },
            vision,
        })
    }
}

/// The console's sign-in (docs/api.md, "Console sign-in and roles").
#[derive(clap::Args)]
struct ConsoleArgs {
    /// The console's users file (`kefu users` edits it). Default: STATE_DIR/users.yaml.
    /// While it does not exist, admin routes answer loopback clients without sign-in.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// The file holding the key that signs console session cookies, made (mode 0600) when
    /// missing; nodes behind one address share it. Default: STATE_DIR/console.key.
    #[arg(long, value_name = "FILE")]
    console_key_file: Option<PathBuf>,
    /// Mark the session cookie `Secure` always (kefu behind TLS whose proxy does not send
    /// `X-Forwarded-Proto: https`).
    #[arg(long)]
    console_secure_cookie: bool,
}

/// When a canary candidate is rolled back by itself (docs/operations.md, "Canary").
#[derive(clap::Args)]
struct CanaryArgs {
    /// End a canary by itself when the candidate's handoff or error rate exceeds the live
    /// version's by more than its margin (the decision logged and recorded on the version).
    #[arg(long)]
    canary_auto_rollback: bool,
    /// How far the candidate's handoff rate may exceed live's, in percentage points.
    #[arg(long, default_value_t = 5.0, value_parser = margin)]
    canary_max_handoff_margin: f64,
    /// How far the candidate's error rate (turns with a script error, or failed) may
    /// exceed live's, in percentage points.
    #[arg(long, default_value_t = 2.0, value_parser = margin)]
    canary_max_error_margin: f64,
    /// Turns the candidate serves before it is judged.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    canary_min_turns: u64,
}

/// A margin in percentage points: 0 to 100.
fn margin(text: &str) -> Result<f64, String> {
    let points: f64 = text.parse().map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..=100.0).contains(&points) {
        Ok(points)
    } else {
        Err(format!("{points} is not between 0 and 100 percentage points"))
    }
}

/// Customer identities the shop's backend signs (docs/api.md, "Signed identities").
#[derive(clap::Args)]
struct IdentityArgs {
    /// A file holding the HS256 key the shop's backend signs customer identity tokens with;
    /// KEFU_IDENTITY_KEY (environment) is read when this is not given. With a key, `user`
    /// and `context.order` come only from a valid token (or a caller with the admin token).
    #[arg(long, value_name = "FILE")]
    identity_key_file: Option<PathBuf>,
    /// Refuse customers without an identity token (a shop where every customer signs in).
    #[arg(long)]
    identity_required: bool,
    /// The context maps only a token may set (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "order")]
    signed_context: Vec<String>,
}

impl IdentityArgs {
    /// The identity checks these flags ask for; none without a key.
    fn config(self) -> Result<Option<kefu::server::identity::IdentityConfig>> {
        let key = match &self.identity_key_file {
            Some(path) => {
                let text = std::fs::read(path).with_context(|| format!("--identity-key-file {}", path.display()))?;
                Some(text.trim_ascii().to_vec())
            }
            None => std::env::var("KEFU_IDENTITY_KEY").ok().map(String::into_bytes),
        };
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            anyhow::ensure!(
                !self.identity_required,
                "--identity-required needs a key: --identity-key-file FILE or KEFU_IDENTITY_KEY"
            );
            return Ok(None);
        };
        Ok(Some(kefu::server::identity::IdentityConfig {
            required: self.identity_required,
            signed_context: self
                .signed_context
                .into_iter()
                .filter(|c| !c.trim().is_empty())
                .collect(),
            ..kefu::server::identity::IdentityConfig::new(key)
        }))
    }
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
        let state_dir = self.state_dir.unwrap_or_else(default_state_dir);
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

/// The state directory when `--state-dir` is not given: $STATE_DIRECTORY (systemd), else
/// $XDG_STATE_HOME/kefu, else ~/.local/state/kefu (`kefu serve` and the version commands).
pub(super) fn default_state_dir() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("STATE_DIRECTORY")
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("kefu")))
        .or_else(|| env("HOME").map(|d| d.join(".local/state/kefu")))
        .unwrap_or_else(|| PathBuf::from("kefu-state"))
}

/// A secret read from `file` (given as `flag`), else from the environment variable
/// `variable`; `None` when neither is set. A file's surrounding blank space is trimmed;
/// an empty file is an error (a secret was meant and is missing). Never a flag's value:
/// a command line is visible to every user in `ps`.
fn secret_file(file: Option<&Path>, flag: &str, variable: &str) -> Result<Option<Vec<u8>>> {
    match file {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))?;
            let secret = bytes.trim_ascii();
            if secret.is_empty() {
                bail!("{flag} {}: the file is empty", path.display());
            }
            Ok(Some(secret.to_vec()))
        }
        None => Ok(std::env::var_os(variable)
            .filter(|v| !v.is_empty())
            .map(|v| v.into_encoded_bytes())),
    }
}

/// [`secret_file`] for a secret that must be text (a token, a password).
pub(super) fn secret_text(file: Option<&Path>, flag: &str, variable: &str) -> Result<Option<String>> {
    secret_file(file, flag, variable)?
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|_| match file {
                Some(path) => anyhow::anyhow!("{flag} {}: not UTF-8 text", path.display()),
                None => anyhow::anyhow!("{variable}: not UTF-8 text"),
            })
        })
        .transpose()
}

/// The Redis URL to connect to: `url` with `password` added. A password written inside
/// the URL still works, with a warning (a command line is visible in `ps`).
pub(super) fn redis_url(url: Option<String>, password: Option<String>) -> Result<Option<String>> {
    let Some(url) = url else {
        if password.is_some() {
            tracing::warn!(
                "a Redis password is set (--redis-password-file or KEFU_REDIS_PASSWORD) but not --redis: unused"
            );
        }
        return Ok(None);
    };
    let inline = super::config::has_inline_password(&url);
    let Some(password) = password else {
        if inline {
            tracing::warn!(
                redis = %kefu::safety::logsafe::redacted_url(&url),
                "the --redis URL holds a password, which `ps` shows to every user when it is on the \
                 command line: put it in --redis-password-file or KEFU_REDIS_PASSWORD"
            );
        }
        return Ok(Some(url));
    };
    if inline {
        bail!(
            "--redis {} holds a password and --redis-password-file or KEFU_REDIS_PASSWORD gives one too: keep one",
            kefu::safety::logsafe::redacted_url(&url)
        );
    }
    let mut parsed = url::Url::parse(&url)
        .with_context(|| format!("--redis {}: not a URL", kefu::safety::logsafe::redacted_url(&url)))?;
    // Every byte but letters and digits is escaped (redis-rs decodes it): `set_password`
    // leaves a `%` as it is, so a password with `%41` in it would arrive as `A`. A socket
    // URL (`redis+unix:///path`) has no host to put a password before: redis-rs reads it
    // from the query there.
    let encoded = percent_encoding::utf8_percent_encode(&password, percent_encoding::NON_ALPHANUMERIC).to_string();
    if parsed.set_password(Some(&encoded)).is_err() {
        parsed.query_pairs_mut().append_pair("pass", &password);
    }
    Ok(Some(parsed.to_string()))
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
    if let Some(file) = &args.config {
        tracing::info!(file = %file.display(), "settings from the config file");
    }
    let mut config = kefu::server::ServeConfig::new(&args.rules);
    config.watch = !args.no_watch;
    config.admin_token = secret_text(
        args.admin_token_file.as_deref(),
        "--admin-token-file",
        "KEFU_ADMIN_TOKEN",
    )?;
    let redis_password = secret_text(
        args.redis_password_file.as_deref(),
        "--redis-password-file",
        "KEFU_REDIS_PASSWORD",
    )?;
    config.redis = redis_url(args.redis, redis_password)?;
    config.redis_config.ttl = std::time::Duration::from_secs(args.session_ttl);
    config.redis_config.timeout = std::time::Duration::from_millis(args.redis_timeout_ms);
    config.redis_config.attempts = args.redis_attempts;
    config.tickets_url = args.tickets_url;
    config.tickets = args.tickets.config()?;
    let state_dir = config.tickets.state_dir.clone().unwrap_or_else(default_state_dir);
    config.console = kefu::server::console::ConsoleConfig {
        users: Some(args.console.users.unwrap_or_else(|| state_dir.join("users.yaml"))),
        key_file: Some(
            args.console
                .console_key_file
                .unwrap_or_else(|| state_dir.join("console.key")),
        ),
        secure_cookie: args.console.console_secure_cookie,
    };
    // The version store: in Redis with --redis (a fleet shares it), else in the state
    // directory.
    // Redis is connected when the service is built, after the listener is bound (health
    // checks are answered meanwhile).
    if config.redis.is_some() {
        config.versions_in_redis = true;
    } else if let Some(dir) = &config.tickets.state_dir {
        let local =
            kefu::versions::LocalStore::open(dir).with_context(|| format!("the version store in {}", dir.display()))?;
        config.versions = Some(std::sync::Arc::new(local));
    }
    config.serve_dir = args.watch;
    config.identity = args.identity.config()?;
    config.canary = kefu::server::canary::GuardConfig {
        auto_rollback: args.canary.canary_auto_rollback,
        max_handoff_margin: args.canary.canary_max_handoff_margin,
        max_error_margin: args.canary.canary_max_error_margin,
        min_turns: args.canary.canary_min_turns,
    };
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
    config.agent_grace = std::time::Duration::from_secs(args.agent_grace);
    config.images = args.images.config()?;
    if let Some(path) = &args.channels {
        let channels = kefu::channels::ChannelsConfig::load(path).map_err(|e| anyhow::anyhow!("--channels: {e}"))?;
        config.channels = Some(std::sync::Arc::new(channels));
    }
    config.limits = kefu::server::Limits {
        max_body_bytes: args.max_body_bytes,
        max_message_chars: args.max_message_chars,
        rate_per_session: args.rate_limit,
        widget_rate_per_ip: args.widget_rate_per_ip,
        request_timeout: std::time::Duration::from_secs(args.timeout),
        max_in_flight: args.max_in_flight,
        drain: std::time::Duration::from_secs(args.drain_seconds),
        connections: kefu::server::conns::ConnLimits {
            max: args.max_connections.max(1),
            per_client: args.max_connections_per_client,
            idle_timeout: std::time::Duration::from_secs(args.idle_timeout),
            ..kefu::server::conns::ConnLimits::default()
        },
        ..kefu::server::Limits::default()
    };
    config.engine.llm_timeout = args.model.llm_timeout;
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
