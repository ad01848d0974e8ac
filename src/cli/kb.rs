//! `kefu kb import` and `kefu kb export`: the FAQ and product lists to and from
//! spreadsheets (`kb::table`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

/// The knowledge base's commands.
#[derive(clap::Subcommand)]
pub enum KbCommand {
    /// Replace a table of the knowledge base (FAQ or products) with a spreadsheet's rows.
    Import {
        /// The spreadsheet (.xlsx or .csv).
        file: PathBuf,
        /// The rules directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
    },
    /// Write a table of the knowledge base as a spreadsheet.
    Export {
        /// The rules directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
    },
}

/// Runs a `kefu kb` command (stand-in: built in its own change).
pub fn run(command: KbCommand) -> Result<ExitCode> {
    match command {
        KbCommand::Import { file, rules } => bail!("not built yet: {} into {}", file.display(), rules.display()),
        KbCommand::Export { rules } => bail!("not built yet: {}", rules.display()),
    }
}
