//! `kefu data clean`: the seed's 数据清洗 step. Test chatter out, personal data masked
//! again, before a log is used for anything.
//!
//! - A **chatter** message is one that, once lower-cased and stripped of spaces and
//!   punctuation, is only test words (`测试`, `test`, `testing`, `ceshi`, `试试`, `试一下`,
//!   repeated, optionally followed by `一下` and digits: `测试测试`, `test1`), or is empty.
//!   Its turn record (message and reply) is dropped.
//! - A **session with nothing real** is dropped whole: every customer message was chatter
//!   (`chatter`), empty (`empty`), or it has no customer message at all, only bot, agent
//!   or feedback lines (`bot_only`). Such a conversation says nothing about real customers.
//! - Every text is passed through the rule set's `redact_pii` again: logs written by an
//!   older kefu, or with a rule set that masked less, come out masked. A line is written
//!   as it was read unless masking changed it (so fields this version does not know
//!   survive).
//!
//! Two passes over the files (first the sessions, then the lines), so memory holds one
//! small summary per session, not the log.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::{DataError, ReadStats, Record};
use crate::RuleSet;

/// Test words, as a whole message after [`fold`].
static CHATTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:测试|test|testing|ceshi|试试|试一下)+(?:一下)?[0-9]*$").expect("a valid pattern")
});

/// Lower case, without spaces, punctuation or symbols.
fn fold(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a customer message is test chatter or empty.
pub fn is_chatter(message: &str) -> bool {
    let folded = fold(message);
    folded.is_empty() || CHATTER.is_match(&folded)
}

/// Why a session was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Every customer message was test chatter.
    Chatter,
    /// Every customer message was empty.
    Empty,
    /// No customer message at all.
    BotOnly,
}

#[derive(Default)]
struct SessionScan {
    real: u32,
    chatter: u32,
    empty: u32,
}

impl SessionScan {
    fn verdict(&self) -> Option<DropReason> {
        if self.real > 0 {
            None
        } else if self.chatter > 0 {
            Some(DropReason::Chatter)
        } else if self.empty > 0 {
            Some(DropReason::Empty)
        } else {
            Some(DropReason::BotOnly)
        }
    }
}

/// What `kefu data clean` did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CleanSummary {
    /// Sessions read.
    pub sessions: u64,
    /// Sessions written.
    pub sessions_kept: u64,
    /// Sessions dropped because every customer message was test chatter.
    pub dropped_chatter: u64,
    /// Sessions dropped because every customer message was empty.
    pub dropped_empty: u64,
    /// Sessions dropped because they had no customer message.
    pub dropped_bot_only: u64,
    /// Chatter turns dropped from sessions that were kept.
    pub chatter_turns: u64,
    /// Lines written.
    pub lines_written: u64,
    /// Lines whose texts masking changed.
    pub masked_lines: u64,
    /// The dropped sessions with their reason, in id order.
    pub dropped: Vec<(String, DropReason)>,
    /// Lines read, and those that did not parse (from the first pass).
    pub read: ReadStats,
}

impl std::fmt::Display for CleanSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} sessions read, {} kept; dropped: {} test chatter, {} empty, {} without a customer message",
            self.sessions, self.sessions_kept, self.dropped_chatter, self.dropped_empty, self.dropped_bot_only
        )?;
        writeln!(
            f,
            "{} lines written ({} chatter turns dropped from kept sessions, {} lines masked again)",
            self.lines_written, self.chatter_turns, self.masked_lines
        )?;
        super::report::write_bad_lines(f, &self.read)
    }
}

/// Cleans the log `files` into `out` with the PII settings of `rules`.
pub fn clean(
    files: &[PathBuf],
    rules: &RuleSet,
    out: &mut dyn Write,
    out_path: &Path,
) -> Result<CleanSummary, DataError> {
    let mut sessions: HashMap<String, SessionScan> = HashMap::new();
    let read = super::read(files, |record, _| {
        let scan = sessions.entry(record.session().to_string()).or_default();
        if let Record::Turn(turn) = &record {
            if fold(&turn.message).is_empty() {
                scan.empty += 1;
            } else if is_chatter(&turn.message) {
                scan.chatter += 1;
            } else {
                scan.real += 1;
            }
        }
    })?;
    let mut summary = CleanSummary {
        sessions: sessions.len() as u64,
        read,
        ..CleanSummary::default()
    };
    for (id, scan) in &sessions {
        match scan.verdict() {
            None => summary.sessions_kept += 1,
            Some(reason) => {
                match reason {
                    DropReason::Chatter => summary.dropped_chatter += 1,
                    DropReason::Empty => summary.dropped_empty += 1,
                    DropReason::BotOnly => summary.dropped_bot_only += 1,
                }
                summary.dropped.push((id.clone(), reason));
            }
        }
    }
    summary.dropped.sort();

    let mut write_error = None;
    super::read(files, |mut record, raw| {
        if write_error.is_some() || sessions.get(record.session()).is_none_or(|s| s.verdict().is_some()) {
            return;
        }
        if let Record::Turn(turn) = &record
            && is_chatter(&turn.message)
        {
            summary.chatter_turns += 1;
            return;
        }
        let before = record.clone();
        super::writer::mask(rules, &mut record);
        let result = if record == before {
            out.write_all(raw.as_bytes()).and_then(|()| out.write_all(b"\n"))
        } else {
            summary.masked_lines += 1;
            serde_json::to_writer(&mut *out, &record)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
        };
        match result {
            Ok(()) => summary.lines_written += 1,
            Err(e) => write_error = Some(e),
        }
    })?;
    if let Some(source) = write_error.or_else(|| out.flush().err()) {
        return Err(DataError::Write {
            path: out_path.to_path_buf(),
            source,
        });
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatter_is_whole_messages_of_test_words() {
        for m in [
            "测试",
            "测试测试",
            "test",
            "TEST 1",
            "Testing!!",
            "测试一下",
            "ceshi",
            "  ",
            "。。。",
            "试试",
        ] {
            assert!(is_chatter(m), "{m}");
        }
        for m in [
            "测试过了吗",
            "我想测试一下这个面膜会不会过敏",
            "test drive",
            "你好",
            "快递到哪了",
        ] {
            assert!(!is_chatter(m), "{m}");
        }
    }
}
