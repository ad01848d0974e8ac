//! The shape of the `kefu` command line: its subcommands and their flags (clap), one
//! module per command beside it, and the rules loader they share.
//!
//! The flags of a command with many (serve, generate, report, data) live in that command's
//! module; `--model` and its company, shared by chat, serve and generate, in `model`.
//! `config` adds what every flag gets without code of its own: its `KEFU_*` variable, a
//! config-file key and a line in `--print-config`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use kefu::RuleSet;

pub mod chat;
pub mod check;
pub mod config;
pub mod data;
pub mod eval;
pub mod generate;
pub mod kb;
pub mod mine;
pub mod model;
pub mod replay;
pub mod report;
pub mod safety;
pub mod serve;
pub mod test;
pub mod users;
pub mod versions;

use check::Color;
use data::DataCommand;
use generate::GenerateArgs;
use kb::KbCommand;
use mine::MineArgs;
use model::ModelArgs;
use replay::ReplayArgs;
use report::ReportArgs;
use serve::ServeArgs;
use users::UsersCommand;
use versions::{DiffArgs, PromoteArgs, PublishArgs, RollbackArgs, ShowArgs, VersionsArgs};

/// kefu: an e-commerce customer-service engine with hot-reloaded rules.
#[derive(Parser)]
#[command(name = "kefu", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands; each variant's doc comment is its `--help` text.
#[derive(Subcommand)]
pub enum Command {
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
        model: Box<ModelArgs>,
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
    /// (block, mask, flag or pii), byte span in the original text, original text and the
    /// list word it matched, the block reply if any, and the masked text. The text is
    /// checked as a customer's message, or with `--reply` as kefu's reply (the lists that
    /// apply there). Exits 0 when the text was checked (blocked or not), 1 when the rules
    /// do not load.
    Safety {
        /// The rules directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Check the text as kefu's reply instead of a customer's message.
        #[arg(long)]
        reply: bool,
        /// The text to check; `-` or nothing reads standard input.
        text: Option<String>,
    },
    /// Serve the HTTP API (docs/api.md): chat, OpenAI-compatible completions, sessions and
    /// human takeover, metrics, admin. Reloads the rules when they change, on SIGHUP and on
    /// `POST /admin/reload`; stops gracefully on SIGTERM.
    ///
    /// Admin and agent routes need `Authorization: Bearer TOKEN` (KEFU_ADMIN_TOKEN or
    /// --admin-token-file) or a console user's session (`kefu users`, /console/); without
    /// a token or a users file they answer loopback clients only. Every flag
    /// is also read from KEFU_<FLAG> and from --config FILE (flags win, then variables,
    /// then the file). Prints `listening on ADDR` once bound.
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
    /// Build and test a rules directory and publish it as a new version (docs/operations.md,
    /// "Publishing"): refused with the diagnostics when it does not build, when a
    /// conversation test or knowledge-base check fails (unless --force, recorded on the
    /// version), and when the version it was edited from is no longer live (a conflict).
    Publish(PublishArgs),
    /// The published versions, newest first, with the live one and the canary marked.
    Versions(VersionsArgs),
    /// A version's record (author, message, parent, tests, files, notes), or one of its
    /// files.
    Show(ShowArgs),
    /// What changed between two versions (ids, `live`, `canary`) or a version and a rules
    /// directory: files added, removed and changed, unified diffs.
    Diff(DiffArgs),
    /// Serve an older version's content again, published as a new version (history only
    /// grows); default: the live version's parent. While a canary runs, stops it.
    Rollback(RollbackArgs),
    /// Make the running canary the live version.
    Promote(PromoteArgs),
    /// What-if replay: the customer turns of a conversation log answered again by a draft
    /// of the rules (--rules) and by the base (--base, else the logged answers), each
    /// conversation in order with its profile, context and original time; prints what
    /// changed, grouped, with examples. Model turns are reported, not generated, unless a
    /// model is named. Bad log lines are counted and listed, not fatal; exits 0 whatever
    /// changed, 1 when the rules do not build or the log cannot be read.
    Replay(ReplayArgs),
    /// The console's users and roles (viewer, editor, publisher, agent, admin), in
    /// STATE_DIR/users.yaml (docs/operations.md, "Users and roles").
    #[command(subcommand)]
    Users(UsersCommand),
    /// The customer messages kefu did not answer well (fallbacks, withheld model answers,
    /// handoffs, unsure intents, bad ratings), clustered into the same questions, ranked by
    /// the conversations they cost, each with the nearest intent or FAQ entry and a
    /// suggestion; `--accept N` writes suggestion N into the rules directory as a draft.
    Mine(MineArgs),
    /// The knowledge base's FAQ and products to and from spreadsheets (.xlsx, .csv).
    #[command(subcommand)]
    Kb(KbCommand),
}

/// Loads a rules directory, printing diagnostics; an error when it does not build.
pub fn load(dir: &Path) -> Result<RuleSet> {
    let compiled = kefu::dsl::load_dir(dir);
    eprint!("{}", compiled.report.render_all(std::io::stderr().is_terminal()));
    compiled
        .rules
        .with_context(|| format!("the rules in {} have errors", dir.display()))
}
