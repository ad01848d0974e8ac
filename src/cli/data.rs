//! `kefu data clean` and `kefu data export`: clean a conversation log, or turn one into
//! fine-tuning examples (docs/data.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::load;

/// The subcommands of `kefu data`.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Drop test chatter ("测试", "test", empty messages) and sessions without a real
    /// customer message, and mask personal data again. The summary goes to stderr.
    Clean {
        /// Log files or directories.
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// Where the cleaned log goes (`-`: standard output).
        #[arg(long, short, default_value = "-")]
        output: PathBuf,
        /// The rules whose PII settings mask the texts.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
    },
    /// Write fine-tuning examples from human agents' answers and confident bot answers.
    /// The summary goes to stderr.
    Export {
        /// Log files or directories (cleaned first, preferably).
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// `sft`: the seeds' {"input_text","target_text"}; `messages`: chat JSONL.
        #[arg(long, value_enum, default_value_t = ExportFormat::Sft)]
        format: ExportFormat,
        /// Where the examples go (`-`: standard output).
        #[arg(long, short, default_value = "-")]
        output: PathBuf,
        /// Bot answers below this confidence are left out.
        #[arg(long, default_value_t = 0.8)]
        min_confidence: f64,
        /// Conversations the customer scored below this give no examples.
        #[arg(long, default_value_t = 3)]
        min_feedback: u8,
        /// Earlier messages kept as context in each example.
        #[arg(long, default_value_t = 6)]
        context: usize,
        /// Only human agents' answers.
        #[arg(long)]
        agent_only: bool,
    },
}

/// What `kefu data export --format` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    Sft,
    Messages,
}

/// Runs a `data` subcommand; its summary goes to stderr.
pub fn run(command: DataCommand) -> Result<ExitCode> {
    let summary = match command {
        DataCommand::Clean { logs, output, rules } => {
            let rules = load(&rules)?;
            let files = kefu::data::files(&logs)?;
            let mut out = kefu::data::output(Some(&output), &files)?;
            kefu::data::clean::clean(&files, &rules, &mut out, &output)?.to_string()
        }
        DataCommand::Export {
            logs,
            format,
            output,
            min_confidence,
            min_feedback,
            context,
            agent_only,
        } => {
            let options = kefu::data::export::ExportOptions {
                format: match format {
                    ExportFormat::Sft => kefu::data::export::Format::Sft,
                    ExportFormat::Messages => kefu::data::export::Format::Messages,
                },
                min_confidence,
                min_feedback,
                context,
                bot_answers: !agent_only,
            };
            let files = kefu::data::files(&logs)?;
            let mut out = kefu::data::output(Some(&output), &files)?;
            kefu::data::export::export(&files, &options, &mut out, &output)?.to_string()
        }
    };
    eprint!("{summary}");
    Ok(ExitCode::SUCCESS)
}
