//! `kefu check`: compiles a rules directory and prints its errors and warnings, rustc-style.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

/// Whether the diagnostics are coloured (`--color`).
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// Prints the diagnostics of `dir` and, when it compiles, a one-line summary; fails on errors.
pub fn run(dir: &Path, color: Color) -> ExitCode {
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
