//! `kefu safety`: shows what the safety filter makes of one text, as JSON.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

/// What `kefu safety` prints.
#[derive(serde::Serialize)]
struct SafetyReport<'a> {
    rules_version: &'a str,
    normalized: String,
    blocked: Option<kefu::safety::Blocked>,
    findings: Vec<kefu::safety::Finding>,
    masked: String,
}

/// Checks `text` (standard input for `-` or nothing) with the rules in `dir`, as a
/// customer's message or as kefu's `reply`, and prints the report.
pub fn run(dir: &Path, reply: bool, text: Option<String>) -> ExitCode {
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
    let verdict = if reply {
        rules.safety.check_output(&text)
    } else {
        rules.safety.check_input(&text)
    };
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
