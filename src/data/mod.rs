//! The data loop: conversations logged, cleaned, turned into fine-tuning data, and
//! measured.
//!
//! ```text
//! kefu serve --conversation-log logs/   ──▶ logs/conversations-YYYY-MM-DD-NNN.jsonl
//!   kefu report logs/                   ──▶ the seeds' evaluation matrix (text, --json, --html)
//!   kefu data clean logs/ -o clean.jsonl  (test chatter and bot-only sessions out, PII masked again)
//!   kefu data export clean.jsonl --format sft -o train.jsonl   (human-agent and confident answers)
//! ```
//!
//! | file | what |
//! |---|---|
//! | [`record`] | `Record`: one line of the log, one kind per event |
//! | [`writer`] | `ConversationLog`: batched, masked, rotated appends off the turn's path |
//! | [`clean`] | `kefu data clean` |
//! | [`export`] | `kefu data export` |
//! | [`report`] | `kefu report`: figures, text and JSON |
//! | [`hits`] | hits per rule, promotion, flow step and FAQ entry; items not hit lately |
//! | [`html`] | `kefu report --html`: one self-contained page with SVG charts |
//! | [`replay`] | `kefu replay`: logged turns answered again by a draft and its base, what changed |
//! | [`mine`] | `kefu mine`: unanswered questions clustered into suggestions, accepted as drafts |
//!
//! Readers stream: one line at a time, `serde_json` per line, so a million lines need no
//! more memory than their per-session summaries. A line that does not parse is counted
//! and its file and line number kept; it never stops a run.

pub mod clean;
pub mod export;
pub mod hits;
pub mod html;
pub mod mine;
pub mod proactive;
pub mod record;
pub mod replay;
pub mod report;
pub mod writer;

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use record::Record;
pub use writer::{ConversationLog, LogConfig, LogCounts};

/// Why a data command failed (bad lines are not failures: they are counted).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A log file or directory could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The output could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The output.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No log file was found.
    #[error("no conversation log files in {0}")]
    Empty(String),
    /// The output is one of the inputs (it would be read while it is written).
    #[error("{0} is both an input and the output")]
    OutputIsInput(PathBuf),
}

/// A line that is not a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadLine {
    /// The file.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// Why it did not parse.
    pub error: String,
}

/// What reading the log files found besides records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReadStats {
    /// Files read.
    pub files: usize,
    /// Non-blank lines read.
    pub lines: u64,
    /// Lines that are not records.
    pub bad_lines: u64,
    /// The first of them (at most [`BAD_LINES_KEPT`]).
    pub bad: Vec<BadLine>,
}

/// How many bad lines are kept with their position.
pub const BAD_LINES_KEPT: usize = 20;

/// The log files named by `paths` (files, or directories of `*.jsonl`), in order.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for path in paths {
        let found = writer::log_files(path).map_err(|source| DataError::Read {
            path: path.clone(),
            source,
        })?;
        out.extend(found);
    }
    if out.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(DataError::Empty(names.join(", ")));
    }
    Ok(out)
}

/// Reads every record of `files` in order, calling `each(record, raw_line)`. Blank lines
/// are skipped; lines that do not parse are counted in the returned stats.
pub fn read(files: &[PathBuf], mut each: impl FnMut(Record, &str)) -> Result<ReadStats, DataError> {
    let mut stats = ReadStats::default();
    let mut line = Vec::new();
    for path in files {
        stats.files += 1;
        let read_error = |source| DataError::Read {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
        let mut number = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(read_error)? == 0 {
                break;
            }
            number += 1;
            let Ok(text) = std::str::from_utf8(&line) else {
                stats.lines += 1;
                bad(&mut stats, path, number, "not UTF-8".into());
                continue;
            };
            let text = text.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            stats.lines += 1;
            match serde_json::from_str::<Record>(text) {
                Ok(record) => each(record, text),
                Err(e) => bad(&mut stats, path, number, e.to_string()),
            }
        }
    }
    Ok(stats)
}

fn bad(stats: &mut ReadStats, path: &Path, line: u64, error: String) {
    stats.bad_lines += 1;
    if stats.bad.len() < BAD_LINES_KEPT {
        stats.bad.push(BadLine {
            file: path.display().to_string(),
            line,
            error,
        });
    }
}

/// Opens `path` for writing, or standard output for `None` or `-`; refuses a path that
/// is one of `inputs`.
pub fn output(path: Option<&Path>, inputs: &[PathBuf]) -> Result<Box<dyn std::io::Write>, DataError> {
    if let Some(out) = path.and_then(|p| std::fs::canonicalize(p).ok())
        && inputs.iter().any(|i| std::fs::canonicalize(i).is_ok_and(|i| i == out))
    {
        return Err(DataError::OutputIsInput(out));
    }
    match path {
        None => Ok(Box::new(std::io::BufWriter::new(std::io::stdout().lock()))),
        Some(p) if p.as_os_str() == "-" => Ok(Box::new(std::io::BufWriter::new(std::io::stdout().lock()))),
        Some(p) => {
            let file = std::fs::File::create(p).map_err(|source| DataError::Write {
                path: p.to_path_buf(),
                source,
            })?;
            Ok(Box::new(std::io::BufWriter::new(file)))
        }
    }
}
