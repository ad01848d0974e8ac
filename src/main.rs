//! The `kefu` command line: parses arguments and calls the library.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { dir, color } => check(&dir, color),
        Command::Safety { rules, text } => safety(&rules, text),
    }
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

fn check(dir: &std::path::Path, color: Color) -> ExitCode {
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
                "{}: ok, version {} ({} intents, {} rules, {} promotions, {} flows, {} keywords)",
                dir.display(),
                rules.version,
                rules.intents.len(),
                rules.rules.len(),
                rules.promotions.len(),
                rules.flows.len(),
                rules.triggers.keyword_count()
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}
