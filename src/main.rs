//! The `kefu` command line: parses arguments and calls the library.

use std::io::IsTerminal;
use std::path::PathBuf;
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
