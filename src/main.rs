//! The `kefu` command line: parses arguments and calls the library.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use kefu::{Engine, RuleSet, TurnRequest, conversation};

/// mimalloc instead of glibc malloc: a turn allocates many small strings on every worker
/// thread, and glibc's arena locks cost a fifth of the CPU under load (benches/load.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kefu: an e-commerce customer-service engine with hot-reloaded rules.
#[derive(Parser)]
#[command(name = "kefu", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a rules directory and print every error and warning, rustc-style.
    ///
    /// Exits 0 when there are no errors (warnings are printed either way), 1 when there
    /// are errors.
    Check {
        /// The rules directory.
        #[arg(default_value = "rules")]
        dir: PathBuf,
        /// Colour the output: auto (when stderr is a terminal), always or never.
        #[arg(long, value_enum, default_value_t = Color::Auto)]
        color: Color,
    },
    /// Chat with the shop in a terminal: each reply shows what answered, the intent and
    /// its confidence. Type `:help` for commands (trace, session, tickets, takeover...).
    Chat {
        /// The rules directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// The customer's profile as JSON, e.g. '{"segment":"vip","orders":12}'.
        #[arg(long)]
        user: Option<String>,
        /// Request context as JSON, e.g. '{"order":{"id":"202611010001","signed_days":3}}'.
        #[arg(long)]
        context: Option<String>,
        /// Show the decision trace after every reply.
        #[arg(long)]
        trace: bool,
        #[command(flatten)]
        model: ModelArgs,
        /// Append the conversation to a conversation log in DIR (as `serve` does).
        #[arg(long, value_name = "DIR")]
        conversation_log: Option<PathBuf>,
    },
    /// Run the conversation tests in DIR/tests/*.yaml and the knowledge-base checks in
    /// DIR/tests/kb/*.yaml, print `N passed, N failed` and what the tests never exercised.
    /// Exits 1 when any of them fails.
    Test {
        /// The rules directory.
        #[arg(default_value = "rules")]
        dir: PathBuf,
        /// Print every turn of every conversation, not only failures.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Score the intent classifier on labelled utterances.
    ///
    /// The data is JSONL (one `{"text": "...", "intent": "..."}` per line) or CSV
    /// (`text,intent`); the label `oos` marks a message the shop should not answer. A
    /// message counts as predicted `oos` when no intent reaches the shop's threshold.
    /// Prints accuracy, macro-F1, out-of-scope recall, precision/recall/F1 per intent, the
    /// most frequent confusions and the classification speed. Exits 1 when the rules do
    /// not compile or the data cannot be read.
    Eval {
        /// The labelled utterances (.jsonl or .csv).
        #[arg(long)]
        data: PathBuf,
        /// The rules directory whose intents train the classifier.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Print one JSON object (keys `accuracy`, `macro_f1`, `oos_recall`, `per_intent`,
        /// ...) instead of a table.
        #[arg(long)]
        json: bool,
        /// Closed-set mode: take the most probable declared intent for every message,
        /// ignoring the threshold and the out-of-scope class (to compare the classifier
        /// with ones that have no notion of out-of-scope).
        #[arg(long)]
        closed_set: bool,
        /// Also list every message predicted wrong, with the best intent's confidence and
        /// the confidence in the right label (for improving examples on a development
        /// set; do not tune on the held-out set).
        #[arg(long)]
        mistakes: bool,
    },
    /// Show what the safety filter makes of a text, as JSON: "why was this blocked?".
    ///
    /// Prints the normalized (matching) form, every finding with its category, action
    /// (block, mask or pii), byte span in the original text, original text and the list
    /// word it matched, the block reply if any, and the masked text. Exits 0 when the
    /// text was checked (blocked or not), 1 when the rules do not load.
    Safety {
        /// The rules directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// The text to check; `-` or nothing reads standard input.
        text: Option<String>,
    },
    /// Serve the HTTP API (docs/api.md): chat, OpenAI-compatible completions, sessions and
    /// human takeover, metrics, admin. Reloads the rules when they change, on SIGHUP and on
    /// `POST /admin/reload`; stops gracefully on SIGTERM.
    ///
    /// Admin and agent routes need `Authorization: Bearer $KEFU_ADMIN_TOKEN`; without the
    /// variable they answer loopback clients only. Prints `listening on ADDR` once bound.
    Serve(Box<ServeArgs>),
    /// Run K concurrent generations through the model backend the server uses and print
    /// one JSON line: prompt tokens, prompt ms, generated tokens, generation ms, tokens/s
    /// (aggregate and per stream). The benchmarks in benches/model.sh use it.
    Generate(Box<GenerateArgs>),
    /// Clean a conversation log, or export fine-tuning data from one (docs/data.md).
    #[command(subcommand)]
    Data(DataCommand),
    /// The evaluation matrix of a conversation log (files or directories): answers by
    /// source, intents, first-contact resolution, satisfaction, handoffs, safety hits,
    /// latency percentiles, model tokens and cost per conversation, against the seeds'
    /// targets. Bad lines are counted and listed, not fatal.
    Report(ReportArgs),
}

/// Which model answers when no rule is confident.
#[derive(clap::Args)]
struct ModelArgs {
    /// The GGUF model run in process by llama.cpp, or `none`. models/fetch.sh puts the
    /// default one at models/default.gguf; when that default is missing kefu runs without
    /// a model (and says so); a path given explicitly must exist.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// An OpenAI-compatible server (llama-server, vLLM, a hosted API) instead of the
    /// model in process. The key, if any, is read from KEFU_LLM_API_KEY.
    #[arg(long)]
    llm_url: Option<String>,
    /// The model name sent to --llm-url.
    #[arg(long, default_value = "default")]
    llm_model: String,
    /// llama.cpp decoding threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Conversations the model generates for at once (sequences batched together).
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Tokens of context per conversation (prompt and answer).
    #[arg(long, default_value_t = 2048)]
    ctx: u32,
    /// The most tokens in one llama.cpp decode (its `-b`): prompt chunks and the next
    /// token of every generating conversation share it. Larger evaluates long or many
    /// prompts in fewer steps; smaller keeps the steps, and so the token gaps of the
    /// conversations already answering, short.
    #[arg(long, default_value_t = 512)]
    batch: u32,
    /// A LoRA adapter (GGUF) and its scale, `PATH[:SCALE]`: a shop's fine-tune on its own
    /// dialogues, applied over the base model. Repeatable: several adapters are merged
    /// into one (exactly: their ranks side by side) before loading.
    #[arg(long, value_parser = kefu::llm::parse_lora)]
    lora: Vec<(PathBuf, f32)>,
    /// A llama.cpp built-in chat template (`chatml`, `gemma`, `llama3`...) instead of the
    /// one in the GGUF.
    #[arg(long)]
    chat_template: Option<String>,
}

/// Where models/fetch.sh puts the default model.
const DEFAULT_MODEL: &str = "models/default.gguf";

impl ModelArgs {
    /// The backend these flags describe, `None` for `--model none` or a missing default.
    fn open(&self) -> Result<Option<Arc<dyn kefu::llm::LlmBackend>>> {
        let mut options = kefu::llm::ModelOptions {
            url: self.llm_url.clone(),
            url_model: Some(self.llm_model.clone()),
            api_key: std::env::var("KEFU_LLM_API_KEY").ok().filter(|k| !k.is_empty()),
            threads: self.threads,
            parallel: self.parallel,
            ctx_per_seq: self.ctx,
            batch: self.batch,
            lora: self.lora.clone(),
            chat_template: self.chat_template.clone(),
            ..Default::default()
        };
        if self.llm_url.is_none() && self.model != "none" {
            let path = PathBuf::from(&self.model);
            if !path.exists() && self.model == DEFAULT_MODEL {
                eprintln!(
                    "kefu: no model at {DEFAULT_MODEL} (run models/fetch.sh); answering without a model: \
                     fallback arms that ask it are skipped"
                );
                return Ok(None);
            }
            options.model = Some(path);
        }
        Ok(kefu::llm::open(&options)?)
    }

    /// Whether these flags load llama.cpp in this process.
    fn in_process(&self) -> bool {
        cfg!(feature = "llama") && self.llm_url.is_none() && self.model != "none"
    }
}

#[derive(clap::Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The customer's message.
    #[arg(long, default_value = "请问这件羽绒服冬天穿会冷吗？")]
    prompt: String,
    /// The system message (the prefix shared by every request).
    #[arg(
        long,
        default_value = "你是「暖途」旗舰店的客服小暖，说话亲切、简洁，只依据店铺政策回答。"
    )]
    system: String,
    /// Tokens to generate per stream.
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Generate exactly --max-tokens per stream, past end-of-sequence (throughput runs).
    #[arg(long)]
    ignore_eos: bool,
    /// Warm the shared prefix with one request first and report its (cold) prompt time.
    #[arg(long)]
    warm: bool,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Drop test chatter ("测试", "test", empty messages) and sessions without a real
    /// customer message, and mask personal data again. The summary goes to stderr.
    Clean {
        /// Log files or directories.
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// Where the cleaned log goes (`-`: standard output).
        #[arg(long, short, default_value = "-")]
        output: PathBuf,
        /// The rules whose PII settings mask the texts.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
    },
    /// Write fine-tuning examples from human agents' answers and confident bot answers.
    /// The summary goes to stderr.
    Export {
        /// Log files or directories (cleaned first, preferably).
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// `sft`: the seeds' {"input_text","target_text"}; `messages`: chat JSONL.
        #[arg(long, value_enum, default_value_t = ExportFormat::Sft)]
        format: ExportFormat,
        /// Where the examples go (`-`: standard output).
        #[arg(long, short, default_value = "-")]
        output: PathBuf,
        /// Bot answers below this confidence are left out.
        #[arg(long, default_value_t = 0.8)]
        min_confidence: f64,
        /// Conversations the customer scored below this give no examples.
        #[arg(long, default_value_t = 3)]
        min_feedback: u8,
        /// Earlier messages kept as context in each example.
        #[arg(long, default_value_t = 6)]
        context: usize,
        /// Only human agents' answers.
        #[arg(long)]
        agent_only: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Sft,
    Messages,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Log files or directories.
    #[arg(required = true)]
    logs: Vec<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page with charts to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// 元 per 1,000 model tokens (prompt and generated).
    #[arg(long, default_value_t = 0.002)]
    price_per_1k: f64,
    /// 元 per 1,000 generated tokens, when they cost more than prompt tokens.
    #[arg(long)]
    completion_price_per_1k: Option<f64>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The rules directory.
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    #[command(flatten)]
    model: ModelArgs,
    /// Keep sessions in Redis (`redis://127.0.0.1:6379/0`) so several nodes share them.
    #[arg(long)]
    redis: Option<String>,
    /// How long Redis keeps an idle session, in seconds.
    #[arg(long, default_value_t = 86_400)]
    session_ttl: u64,
    /// A scripted model for tests and demos: YAML list of `{when, reply, confidence}`, or
    /// `{token_delay_ms, answers: [...]}`.
    #[arg(long, hide = true)]
    mock_llm: Option<PathBuf>,
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
    fn config(self) -> Result<kefu::jobs::TicketConfig> {
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
        Ok(kefu::jobs::TicketConfig {
            state_dir: Some(state_dir),
            secret: secret.filter(|s| !s.is_empty()),
            visibility: std::time::Duration::from_secs(self.ticket_visibility_timeout.max(1)),
            ..kefu::jobs::TicketConfig::default()
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let in_process = match &cli.command {
        Command::Serve(args) => args.model.in_process() && args.mock_llm.is_none(),
        Command::Chat { model, .. } => model.in_process(),
        Command::Generate(args) => args.model.in_process(),
        _ => false,
    };
    if in_process && let Err(e) = passive_openmp() {
        eprintln!("kefu: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Check { dir, color } => Ok(check(&dir, color)),
        Command::Chat {
            rules,
            user,
            context,
            trace,
            model,
            conversation_log,
        } => chat(&rules, user, context, trace, &model, conversation_log).map(|()| ExitCode::SUCCESS),
        Command::Test { dir, verbose } => test(&dir, verbose),
        Command::Eval {
            data,
            rules,
            json,
            closed_set,
            mistakes,
        } => eval(&data, &rules, json, closed_set, mistakes),
        Command::Safety { rules, text } => Ok(safety(&rules, text)),
        Command::Serve(args) => serve(*args).map(|()| ExitCode::SUCCESS),
        Command::Generate(args) => generate(&args).map(|()| ExitCode::SUCCESS),
        Command::Data(command) => data(command),
        Command::Report(args) => report(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("kefu: {e:#}");
        ExitCode::FAILURE
    })
}

/// What `kefu safety` prints.
#[derive(serde::Serialize)]
struct SafetyReport<'a> {
    rules_version: &'a str,
    normalized: String,
    blocked: Option<kefu::safety::Blocked>,
    findings: Vec<kefu::safety::Finding>,
    masked: String,
}

fn safety(dir: &Path, text: Option<String>) -> ExitCode {
    let text = match text.as_deref() {
        Some("-") | None => {
            let mut input = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut input) {
                eprintln!("error: cannot read standard input: {e}");
                return ExitCode::FAILURE;
            }
            // A trailing newline from `echo` or a file is not part of the message.
            input.truncate(input.trim_end_matches(['\n', '\r']).len());
            input
        }
        Some(text) => text.to_string(),
    };
    let compiled = kefu::dsl::load_dir(dir);
    let Some(rules) = compiled.rules else {
        eprint!("{}", compiled.report.render_all(std::io::stderr().is_terminal()));
        return ExitCode::FAILURE;
    };
    let verdict = rules.safety.check_input(&text);
    let report = SafetyReport {
        rules_version: &rules.version,
        normalized: rules.safety.normalize(&text),
        blocked: verdict.blocked,
        findings: verdict.findings,
        masked: verdict.masked,
    };
    let json = match serde_json::to_string_pretty(&report) {
        Ok(json) => json,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A closed pipe (`| head`) is the reader's choice, not an error worth a panic.
    match writeln!(std::io::stdout(), "{json}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: cannot write the report: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

fn eval(
    data: &std::path::Path,
    dir: &std::path::Path,
    json: bool,
    closed_set: bool,
    mistakes: bool,
) -> anyhow::Result<ExitCode> {
    let compiled = kefu::dsl::load_dir(dir);
    let Some(rules) = compiled.rules else {
        eprint!("{}", compiled.report.render_all(std::io::stderr().is_terminal()));
        return Ok(ExitCode::FAILURE);
    };
    let utterances = kefu::nlu::eval::read(data)?;
    let report = kefu::nlu::eval::evaluate(&rules.nlu, &utterances, closed_set);
    let mut text = String::new();
    if json {
        text = serde_json::to_string(&report)? + "\n";
    } else {
        let training = rules.nlu.report();
        text += &format!(
            "{}: {} intents, trained in {:.0} ms ({} features, {} iterations, L2 {:e}, temperature {:.2}, \
             cross-validated accuracy {:.3})\n\n",
            dir.display(),
            rules.intents.len(),
            rules.nlu.training_time().as_secs_f64() * 1000.0,
            training.features,
            training.iterations,
            training.lambda,
            training.temperature,
            training.cv_accuracy
        );
        text += &report.to_string();
        if mistakes {
            text += "\n";
            text += &report.mistakes_table();
        }
    }
    // A closed pipe (`kefu eval ... | head`) is not an error worth a message.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes sure llama.cpp's OpenMP threads sleep instead of spinning while they wait.
///
/// By default OpenMP worker threads spin for a while after each parallel region. Between
/// two decodes that keeps every core busy doing nothing, and the rule-answered turns the
/// server handles meanwhile wait for a core: their p99 went from ~0.1 ms to ~7 ms while
/// the model generated. `OMP_WAIT_POLICY=passive` makes the workers sleep at once; it is
/// read when the OpenMP runtime starts, before `main`, so kefu sets it by running itself
/// again with the variable set. An explicit setting in the environment is respected.
fn passive_openmp() -> Result<()> {
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return Ok(());
    }
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().context("cannot find the kefu executable to set OMP_WAIT_POLICY")?;
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OMP_WAIT_POLICY", "passive")
        .exec();
    Err(error).context("cannot restart kefu with OMP_WAIT_POLICY=passive")
}

fn generate(args: &GenerateArgs) -> Result<()> {
    let mut model = args.model.open()?;
    let Some(backend) = model.take() else {
        bail!("no model: give --model PATH or --llm-url URL");
    };
    let options = kefu::llm::generate::GenerateOptions {
        system: args.system.clone(),
        prompt: args.prompt.clone(),
        max_tokens: args.max_tokens,
        parallel: args.model.parallel,
        temperature: args.temperature,
        ignore_eos: args.ignore_eos,
        warm: args.warm,
    };
    let report = kefu::llm::generate::run(backend, &options)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
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

fn check(dir: &Path, color: Color) -> ExitCode {
    let compiled = kefu::dsl::load_dir(dir);
    let color = match color {
        Color::Auto => std::io::stderr().is_terminal(),
        Color::Always => true,
        Color::Never => false,
    };
    eprint!("{}", compiled.report.render_all(color));
    match compiled.rules {
        Some(rules) => {
            eprintln!(
                "{}: ok, version {} ({} intents, {} rules, {} promotions, {} flows, {} keywords, {} products, {} FAQ entries)",
                dir.display(),
                rules.version,
                rules.intents.len(),
                rules.rules.len(),
                rules.promotions.len(),
                rules.flows.len(),
                rules.triggers.keyword_count(),
                rules.kb.products.len(),
                rules.kb.faqs.len()
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

/// Loads a rules directory, printing diagnostics; an error when it does not build.
fn load(dir: &Path) -> Result<RuleSet> {
    let compiled = kefu::dsl::load_dir(dir);
    eprint!("{}", compiled.report.render_all(std::io::stderr().is_terminal()));
    compiled
        .rules
        .with_context(|| format!("the rules in {} have errors", dir.display()))
}

fn json_map(text: Option<String>, what: &str) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    text.map(|t| serde_json::from_str(&t).with_context(|| format!("--{what} must be a JSON object")))
        .transpose()
}

fn data(command: DataCommand) -> Result<ExitCode> {
    let summary = match command {
        DataCommand::Clean { logs, output, rules } => {
            let rules = load(&rules)?;
            let files = kefu::data::files(&logs)?;
            let mut out = kefu::data::output(Some(&output), &files)?;
            kefu::data::clean::clean(&files, &rules, &mut out, &output)?.to_string()
        }
        DataCommand::Export {
            logs,
            format,
            output,
            min_confidence,
            min_feedback,
            context,
            agent_only,
        } => {
            let options = kefu::data::export::ExportOptions {
                format: match format {
                    ExportFormat::Sft => kefu::data::export::Format::Sft,
                    ExportFormat::Messages => kefu::data::export::Format::Messages,
                },
                min_confidence,
                min_feedback,
                context,
                bot_answers: !agent_only,
            };
            let files = kefu::data::files(&logs)?;
            let mut out = kefu::data::output(Some(&output), &files)?;
            kefu::data::export::export(&files, &options, &mut out, &output)?.to_string()
        }
    };
    eprint!("{summary}");
    Ok(ExitCode::SUCCESS)
}

fn report(args: ReportArgs) -> Result<ExitCode> {
    let options = kefu::data::report::ReportOptions {
        price_prompt_per_1k: args.price_per_1k,
        price_completion_per_1k: args.completion_price_per_1k.unwrap_or(args.price_per_1k),
    };
    let files = kefu::data::files(&args.logs)?;
    let report = kefu::data::report::report(&files, &options)?;
    if let Some(path) = &args.html {
        std::fs::write(path, kefu::data::html::render(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let text = if args.json {
        serde_json::to_string(&report)? + "\n"
    } else {
        report.to_string()
    };
    // A closed pipe (`kefu report ... | head`) is not an error worth a message.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn chat(
    dir: &Path,
    user: Option<String>,
    context: Option<String>,
    mut trace: bool,
    model: &ModelArgs,
    conversation_log: Option<PathBuf>,
) -> Result<()> {
    let mut user = json_map(user, "user")?;
    let mut context = json_map(context, "context")?;
    let mut engine = Engine::new(load(dir)?);
    if let Some(llm) = model.open()? {
        engine = engine.with_llm(llm);
    }
    let engine = Arc::new(engine);
    // The guard writes what is left when the chat ends.
    let (log, _log_guard) = match conversation_log {
        Some(dir) => {
            let current = Arc::clone(&engine);
            let (log, guard) =
                kefu::data::ConversationLog::open(kefu::data::LogConfig::new(dir), move || current.rules())?;
            (Some(log), Some(guard))
        }
        None => (None, None),
    };
    let segment = |user: &Option<serde_json::Map<String, serde_json::Value>>| {
        user.as_ref()
            .and_then(|u| u.get("segment"))
            .and_then(|s| s.as_str())
            .map(str::to_string)
    };
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = std::env::temp_dir().join("kefu-chat-history");
    let _ = editor.load_history(&history);
    let mut session = format!("chat-{}", std::process::id());
    let mut conversations = 0u32;
    println!(
        "kefu chat on {} (rules {}). `:help` lists commands, Ctrl-D quits.",
        dir.display(),
        engine.rules().version
    );
    loop {
        let line = match editor.readline("你> ") {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted | rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        if let Some(command) = line.strip_prefix(':') {
            let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
            match name {
                "help" => println!(
                    ":trace (toggle the decision trace)  :session  :tickets  :reset (new conversation)\n\
                     :user JSON  :context JSON  :takeover  :reply TEXT (as the agent)  :release\n\
                     :feedback SCORE [COMMENT] (1-5, as the customer)  :quit"
                ),
                "trace" => {
                    trace = !trace;
                    println!("trace {}", if trace { "on" } else { "off" });
                }
                "session" => println!("{}", serde_json::to_string_pretty(&engine.session(&session))?),
                "tickets" => println!("{}", serde_json::to_string_pretty(&engine.tickets())?),
                "reset" => {
                    conversations += 1;
                    session = format!("chat-{}-{conversations}", std::process::id());
                    println!("new conversation");
                }
                "user" => user = json_map(Some(arg.to_string()), "user")?,
                "context" => context = json_map(Some(arg.to_string()), "context")?,
                "takeover" => {
                    engine.takeover(&session, Some("editor".into()));
                    if let Some(l) = &log {
                        l.takeover(&session, Some("editor"));
                    }
                    println!("taken over: the bot stays silent until :release");
                }
                "reply" => match engine.agent_reply(&session, arg) {
                    Ok(_) => {
                        if let Some(l) = &log {
                            l.agent_reply(&session, Some("editor"), arg);
                        }
                        println!("客服> {arg}")
                    }
                    Err(e) => println!("{e}"),
                },
                "release" => match engine.release(&session) {
                    Ok(_) => {
                        if let Some(l) = &log {
                            l.release(&session);
                        }
                        println!("released: the bot answers again")
                    }
                    Err(e) => println!("{e}"),
                },
                "feedback" => {
                    let (score, comment) = arg.split_once(' ').unwrap_or((arg, ""));
                    match score.parse::<u8>() {
                        Ok(score @ 1..=5) => {
                            // The REPL is the customer, who holds the conversation's token.
                            let token = engine.session(&session).map(|s| s.token).unwrap_or_default();
                            match engine.feedback(&session, &token, score, Some(comment)) {
                                Ok(given) => {
                                    if let Some(l) = &log {
                                        l.feedback(&session, given.score, given.comment.as_deref());
                                    }
                                    println!("feedback {score} noted");
                                }
                                Err(e) => println!("{e}"),
                            }
                        }
                        _ => println!(":feedback takes a score from 1 to 5"),
                    }
                }
                "quit" | "q" => break,
                other => println!("unknown command :{other}; :help lists them"),
            }
            continue;
        }
        let request = TurnRequest {
            session_id: session.clone(),
            message: line.to_string(),
            user: user.clone(),
            context: context.clone(),
            as_of: None,
        };
        let response = engine.turn(request);
        if let Some(log) = &log {
            log.turn(&response, segment(&user).as_deref(), 0, 0);
        }
        if !response.reply.is_empty() {
            println!("客服> {}", response.reply);
        }
        let source = serde_json::to_value(response.source)?
            .as_str()
            .unwrap_or_default()
            .to_string();
        let named: Vec<&str> = [
            &response.rule,
            &response.promotion,
            &response.faq,
            &response.flow,
            &response.step,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
        let intent = response.intent.as_deref().unwrap_or("none");
        let handoff = response
            .handoff
            .as_ref()
            .map(|h| format!(" · handoff: {}", h.reason))
            .unwrap_or_default();
        println!(
            "      [{source} {} · {intent} {:.2} · {}{handoff} · {:.2} ms]",
            named.join(" "),
            response.confidence,
            response.emotion.as_str(),
            response.latency_ms
        );
        if trace {
            for step in &response.trace {
                println!("        {}: {}", step.stage, step.detail);
            }
        }
    }
    let _ = editor.save_history(&history);
    Ok(())
}

fn test(dir: &Path, verbose: bool) -> Result<ExitCode> {
    let rules = Arc::new(load(dir)?);
    let files = conversation::files(dir).with_context(|| format!("reading {}", dir.join("tests").display()))?;
    if files.is_empty() {
        bail!("no conversation tests in {}", dir.join("tests").display());
    }
    let (mut passed, mut failed) = (0, 0);
    let mut covered = std::collections::BTreeSet::new();
    for file in &files {
        let outcome = conversation::run_file(&rules, file);
        covered.extend(outcome.covered.iter().cloned());
        let mark = if outcome.passed() { "ok  " } else { "FAIL" };
        println!(
            "{mark} {} ({}, {} turns)",
            outcome.name,
            file.display(),
            outcome.turns.len()
        );
        if let Some(error) = &outcome.error {
            println!("     {error}");
        }
        for (n, turn) in outcome.turns.iter().enumerate() {
            if verbose || !turn.failures.is_empty() {
                println!("     {}. 你: {}", n + 1, turn.say);
                println!("        客服: {}  [{} · {}]", turn.reply, turn.by, turn.intent);
                for failure in &turn.failures {
                    println!("        ✗ {failure}");
                }
            }
        }
        if outcome.passed() {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    // Knowledge-base checks (rules/tests/kb/*.yaml): customers' paraphrases must find
    // their FAQ entry first, and off-topic messages must not be answered by one.
    for file in kefu::kb::check::files(dir) {
        let report = kefu::kb::check::run_file(&rules.kb, rules.shop.faq_threshold, &file);
        let mark = if report.passed() { "ok  " } else { "FAIL" };
        println!("{mark} knowledge base ({}): {}", file.display(), report.summary());
        for error in &report.errors {
            println!("     ✗ {error}");
        }
        for case in report.cases.iter().filter(|c| verbose || !c.passed()) {
            let found = case.top.as_deref().unwrap_or("nothing");
            let mark = if case.passed() { "✓" } else { "✗" };
            println!(
                "     {mark} {} → {found} ({:.2}), expected {}",
                case.say, case.confidence, case.expected
            );
        }
        for (say, faq) in &report.false_answers {
            println!("     ✗ {say} → answered by {faq}, but it is listed under not_faq");
        }
        if report.passed() {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    let c = conversation::coverage(&rules, &covered);
    println!(
        "coverage: rules {}/{}, promotions {}/{}, flow steps {}/{}",
        c.rules.0, c.rules.1, c.promotions.0, c.promotions.1, c.flow_steps.0, c.flow_steps.1
    );
    for missing in &c.missing {
        println!("  never exercised: {missing}");
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
