//! `kefu check`: checks a rules directory and prints its errors and warnings, rustc-style.
//! It does not train the classifier (`dsl::check_dir`): the diagnostics are the ones a
//! build gives.

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
    let checked = kefu::dsl::check_dir(dir);
    let color = match color {
        Color::Auto => std::io::stderr().is_terminal(),
        Color::Always => true,
        Color::Never => false,
    };
    // One rendering for the terminal and the console's check (`Checked::render`).
    eprint!("{}", checked.render(dir, color));
    if checked.summary.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
