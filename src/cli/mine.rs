//! `kefu mine`: the unanswered questions of a conversation log, clustered, with
//! suggestions; `--accept N` writes one into the rules directory as a draft.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// The flags of `kefu mine`.
#[derive(clap::Args)]
pub struct MineArgs {
    /// Log files or directories.
    #[arg(long = "log", required = true)]
    logs: Vec<PathBuf>,
    /// The rules directory: nearest intents and FAQ entries, and where `--accept` writes.
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Mines the logs `args` name and prints the clusters (stand-in: built in its own change).
pub fn run(args: MineArgs) -> Result<ExitCode> {
    let files = kefu::data::files(&args.logs)?;
    let rules = super::load(&args.rules)?;
    let report = kefu::data::mine::mine(&files, Some(&rules), &Default::default())?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
