//! `kefu replay`: the customer turns of a conversation log answered again by a draft of
//! the rules and by a base, and what changed (text, `--json`, `--html`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};
use kefu::data::replay::{ReplayOptions, replay_files};

use super::check::Color;
use super::load;
use super::model::ModelArgs;

/// The flags of `kefu replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Conversation log files or directories (`kefu serve --conversation-log DIR`).
    #[arg(long, required = true, value_name = "DIR")]
    log: Vec<PathBuf>,
    /// The draft rules directory.
    #[arg(long, value_name = "DRAFT")]
    rules: PathBuf,
    /// The base for every turn: a rules directory, or a published version (its number,
    /// `live` or `canary`). Without it each turn's base is the published version that
    /// answered it (its recorded `rules` hash, looked up in the version store: --state-dir
    /// or --redis); a turn whose version is not in the store (or with no store at all) is
    /// compared with the answer the log recorded.
    #[arg(long, value_name = "VERSION|DIR")]
    base: Option<String>,
    #[command(flatten)]
    store: super::versions::StoreArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Examples shown per group of changes.
    #[arg(long, default_value_t = 5)]
    limit: usize,
    /// Only records at or after this time: RFC 3339, or a day (YYYY-MM-DD) in the shop's
    /// time zone.
    #[arg(long)]
    since: Option<String>,
    /// Only records before this time (RFC 3339, or a day: before its start).
    #[arg(long)]
    until: Option<String>,
    /// Colour the text: auto (when stdout is a terminal), always or never.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
    /// Model turns are reported, not generated, unless a model is named here (`--model
    /// FILE`, `--llm-url URL`) or with --mock-llm.
    #[command(flatten)]
    model: Box<ModelArgs>,
    /// A scripted model (as `kefu serve --mock-llm`) that generates the model turns.
    #[arg(long, hide = true)]
    mock_llm: Option<PathBuf>,
}

/// Replays the log `args` names and prints the report. Changes are not failures: exits 0
/// unless the rules do not build or the log cannot be read.
pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let draft = Arc::new(load(&args.rules)?);
    // The base: a directory, a published version for every turn, or (by default, when
    // there is a version store) the version that answered each turn.
    let store = args.store.open_existing()?;
    let checkouts = tempfile::Builder::new().prefix("kefu-replay-").tempdir()?;
    let builds = store.as_ref().map(|s| {
        kefu::versions::Builds::new(s.as_ref(), checkouts.path()).with_options(kefu::versions::load_options(s))
    });
    let fixed: Option<Arc<kefu::RuleSet>> = match args.base.as_deref() {
        Some(base) if Path::new(base).is_dir() => Some(Arc::new(load(Path::new(base))?)),
        Some(base) => {
            let (Some(store), Some(builds)) = (store.as_deref(), &builds) else {
                bail!("--base {base}: not a directory, and there is no version store to find a version in");
            };
            let id = kefu::versions::resolve(store, base)?;
            Some(builds.by_id(id).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let zone = draft.shop.timezone;
    let model = match &args.mock_llm {
        Some(path) => Some(kefu::server::model::load_mock(path)?),
        None if args.model.named() => args.model.open()?,
        None => None,
    };
    let options = ReplayOptions {
        examples: args.limit,
        since: args.since.as_deref().map(|t| time(t, &zone, "--since")).transpose()?,
        until: args.until.as_deref().map(|t| time(t, &zone, "--until")).transpose()?,
        model,
    };
    let files = kefu::data::files(&args.log)?;
    let started = std::time::Instant::now();
    let resolve = |rules: &str| match (&fixed, &builds) {
        (Some(base), _) => Some(Arc::clone(base)),
        (None, Some(builds)) => builds.by_rules(rules),
        (None, None) => None,
    };
    let report = replay_files(&files, draft, &resolve, &options)?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "kefu: replayed {} turns in {seconds:.2} s ({:.0} turns/s)",
        report.turns,
        report.turns as f64 / seconds.max(1e-9)
    );
    if let Some(path) = &args.html {
        std::fs::write(path, kefu::data::replay::render_html(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let text = if args.json {
        serde_json::to_string(&report)? + "\n"
    } else {
        let colour = match args.color {
            Color::Auto => std::io::stdout().is_terminal(),
            Color::Always => true,
            Color::Never => false,
        };
        report.render(colour)
    };
    // A closed pipe (`kefu replay ... | head`) is not an error worth a message.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `--since`/`--until`: RFC 3339, or a day starting at midnight in `zone`.
pub(super) fn time(text: &str, zone: &chrono_tz::Tz, flag: &str) -> Result<DateTime<FixedOffset>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t);
    }
    let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") else {
        bail!("{flag} `{text}`: expected RFC 3339 (2026-11-11T20:00:00+08:00) or a day (2026-11-11)");
    };
    let midnight = day.and_hms_opt(0, 0, 0).context("midnight")?;
    match zone.from_local_datetime(&midnight).earliest() {
        Some(t) => Ok(t.fixed_offset()),
        None => bail!("{flag} `{text}`: no such time in {zone}"),
    }
}
