//! `kefu report`: the evaluation matrix of a conversation log, as text, JSON or an HTML page.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};

/// The flags of `kefu report`.
#[derive(clap::Args)]
pub struct ReportArgs {
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
    /// A rules directory: list its rules, promotions, flow steps and FAQ entries that
    /// answered nothing in the last `--unused-days` days of the log.
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
    /// The days counted back from the log's last record for `--rules`.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3660), requires = "rules")]
    unused_days: u32,
}

/// Reads the logs `args` name and prints their report (and writes the HTML page if asked).
pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let unused = match &args.rules {
        Some(dir) => {
            let rules = super::load(dir)?;
            Some(kefu::data::report::Unused {
                catalog: kefu::data::hits::Catalog::of(&rules),
                days: args.unused_days,
            })
        }
        None => None,
    };
    let options = kefu::data::report::ReportOptions {
        price_prompt_per_1k: args.price_per_1k,
        price_completion_per_1k: args.completion_price_per_1k.unwrap_or(args.price_per_1k),
        unused,
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
