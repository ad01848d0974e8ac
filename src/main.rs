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
        Command::Eval {
            data,
            rules,
            json,
            closed_set,
        } => match eval(&data, &rules, json, closed_set) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn eval(data: &std::path::Path, dir: &std::path::Path, json: bool, closed_set: bool) -> anyhow::Result<ExitCode> {
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
    }
    // A closed pipe (`kefu eval ... | head`) is not an error worth a message.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
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
