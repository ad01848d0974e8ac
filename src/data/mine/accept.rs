//! Accepting a mined suggestion: the change written into the draft rules directory as an
//! editor would write it by hand, never live until published.
//!
//! ```text
//! Suggestion ──clean messages──▶ edit one file's text ──kefu check (overlay)──▶ write (atomic,
//!                                 (kefu: rule language,     only the intended       refused if the
//!                                  faq: the FAQ's YAML)     errors are new)         file changed)
//! ```
//!
//! Each action touches one file with a small edit at the right place, so that its diff is
//! what a person would have typed: examples appended to an intent's `examples` list after a
//! `# kefu mine YYYY-MM-DD` line ([`kefu`]), variants to an FAQ entry, a new entry at the end
//! of `kb/faq.yaml` ([`faq`]), a new intent and the rule answering it in `mined.kefu`.
//! A new FAQ entry's `answer` and a new rule's `reply` are written empty: `kefu check`
//! reports them as errors at that line, so the draft cannot publish until someone writes
//! the text the customer gets.
//!
//! Nothing is written unless the edited text reads back exactly (every message as itself,
//! however many quotes, backslashes, braces or YAML specials it holds) and `kefu check`
//! over the draft with the edit finds no error beyond the draft's own and the intended
//! empty answer. The write names the version of the file that was read, so an editor's
//! save in between is refused ([`AcceptError::Conflict`]), not overwritten.
//!
//! | file | what |
//! |---|---|
//! | [`kefu`] | Examples appended to an intent; a new intent and its rule in `mined.kefu` |
//! | [`faq`] | Variants appended to an FAQ entry; a new entry in `kb/faq.yaml` |

mod faq;
mod kefu;

use std::collections::HashSet;
use std::path::Path;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::Action;
use crate::diag::files::Overlay;
use crate::dsl;
use crate::versions::{diff, draft};

/// The most messages one suggestion may hold (a cluster lists at most this many).
pub const MAX_MESSAGES: usize = 50;

/// The most characters of one message.
pub const MAX_MESSAGE_CHARS: usize = 200;

/// The rule file new intents are written to, at the top of the rules directory.
pub const MINED_FILE: &str = "mined.kefu";

/// What to write: the action and the messages it is made of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suggestion {
    /// What to do.
    pub action: Action,
    /// The customer messages (masked) that become examples or variants.
    pub messages: Vec<String>,
}

/// One file a suggestion changed or created.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DraftedFile {
    /// Its path inside the rules directory.
    pub path: String,
    /// It did not exist before.
    pub created: bool,
    /// What changed, as a unified diff.
    pub diff: String,
}

/// What accepting a suggestion wrote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Drafted {
    /// The files, in the order written.
    pub files: Vec<DraftedFile>,
}

/// Why a suggestion could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The suggestion cannot be applied (an intent or entry that is not there, no messages).
    #[error("{0}")]
    Invalid(String),
    /// A file changed between reading and writing it (an editor saved it meanwhile):
    /// nothing was written; accepting again works on the file as it is now.
    #[error("{0}")]
    Conflict(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// Writes `suggestion` into the rules directory `dir`, the date in its comments today's
/// in UTC.
pub fn accept(dir: &Path, suggestion: &Suggestion) -> Result<Drafted, AcceptError> {
    accept_on(dir, suggestion, chrono::Utc::now().date_naive())
}

/// [`accept`] with the date its comments name.
pub fn accept_on(dir: &Path, suggestion: &Suggestion, date: NaiveDate) -> Result<Drafted, AcceptError> {
    prepare(dir, suggestion, date)?.write(dir)
}

/// One file's new text, with the text and version it was made from.
#[derive(Clone, Debug)]
struct Change {
    /// Relative to the rules directory, with `/`.
    path: String,
    /// The text read and its [`draft::file_version`]; `None` for a new file.
    old: Option<(String, String)>,
    /// What to write.
    new: String,
}

/// A suggestion turned into file texts and checked, not written yet ([`Prepared::write`]).
#[derive(Clone, Debug)]
pub struct Prepared {
    changes: Vec<Change>,
}

impl Prepared {
    /// The paths it would write, in order.
    pub fn paths(&self) -> Vec<&str> {
        self.changes.iter().map(|c| c.path.as_str()).collect()
    }

    /// Writes the files, each only if it is still the version that was read (a file
    /// changed meanwhile: [`AcceptError::Conflict`], that file and the ones after it not
    /// written).
    pub fn write(self, dir: &Path) -> Result<Drafted, AcceptError> {
        let mut files = Vec::new();
        for change in self.changes {
            let expected = change.old.as_ref().map(|(_, v)| v.as_str());
            draft::write_file(dir, &change.path, &change.new, expected).map_err(|e| match e {
                draft::EditError::Conflict { path, .. } => AcceptError::Conflict(format!(
                    "`{path}` changed since it was read (an editor saved it meanwhile); nothing was \
                     written: accept the suggestion again"
                )),
                other => AcceptError::Io(other.to_string()),
            })?;
            let (old, old_name) = match &change.old {
                Some((text, _)) => (text.as_str(), format!("a/{}", change.path)),
                None => ("", "/dev/null".to_string()),
            };
            files.push(DraftedFile {
                diff: diff::unified(&old_name, old, &format!("b/{}", change.path), &change.new),
                created: change.old.is_none(),
                path: change.path,
            });
        }
        Ok(Drafted { files })
    }
}

/// Works out what accepting `suggestion` writes into `dir` and checks it, writing nothing.
pub fn prepare(dir: &Path, suggestion: &Suggestion, date: NaiveDate) -> Result<Prepared, AcceptError> {
    if !dir.is_dir() {
        return Err(AcceptError::Io(format!("{}: not a rules directory", dir.display())));
    }
    let before = dsl::check_dir(dir);
    let messages = &suggestion.messages;
    let (change, intended) = match &suggestion.action {
        Action::AddExamples { intent } => (kefu::add_examples(dir, &before.symbols, intent, messages, date)?, None),
        Action::NewIntent { name } => {
            let (change, rule) = kefu::new_intent(dir, &before.symbols, name, messages, date)?;
            (change, Some(kefu::no_reply_message(&rule)))
        }
        Action::AddVariants { faq } => (faq::add_variants(dir, faq, messages, date)?, None),
        Action::NewFaq { id } => (faq::new_faq(dir, id, messages, date)?, Some(faq::no_answer_message(id))),
    };
    checked(dir, &before, &change, intended.as_deref())?;
    Ok(Prepared { changes: vec![change] })
}

/// Checks the draft with `change` laid over it: no error that `before` (the draft as it
/// is) did not have, apart from `intended` (once), which must be there.
fn checked(dir: &Path, before: &dsl::Checked, change: &Change, intended: Option<&str>) -> Result<(), AcceptError> {
    let mut overlay = Overlay::default();
    overlay.insert(change.path.clone(), change.new.clone());
    let after = dsl::check_dir_with(dir, &overlay);
    // Compared by message: an edit moves the lines of what comes after it.
    let mut old: Vec<&str> = before.report.errors().map(|d| d.message.as_str()).collect();
    let mut intended = intended;
    for d in after.report.errors() {
        if let Some(i) = old.iter().position(|m| *m == d.message) {
            old.swap_remove(i);
        } else if intended == Some(d.message.as_str()) {
            intended = None;
        } else {
            return Err(AcceptError::Invalid(format!(
                "the change would not pass `kefu check`: {}: {}",
                after.report.location(d.primary.span),
                d.message
            )));
        }
    }
    if let Some(message) = intended {
        return Err(AcceptError::Io(format!(
            "the drafted text is not reported as unfinished (`{message}`), so it could publish \
             empty; nothing was written"
        )));
    }
    Ok(())
}

/// The form messages are compared in: folded as the answer cache folds them (width,
/// case, no spaces or punctuation), or only folded when nothing would be left.
fn key(text: &str) -> String {
    let k = crate::kb::text::cache_form(text);
    if k.is_empty() {
        crate::nlu::features::fold(text).split_whitespace().collect()
    } else {
        k
    }
}

/// A line break of any kind: refused in a message, like the control characters.
fn breaks_lines(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// The messages to write: trimmed, each 1 to [`MAX_MESSAGE_CHARS`] characters without
/// control characters, the ones given twice or already in `present` (compared by [`key`])
/// left out. None left: [`AcceptError::Invalid`] saying why of each.
fn clean<'a>(messages: &[String], present: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, AcceptError> {
    if messages.is_empty() {
        return Err(AcceptError::Invalid("a suggestion needs at least one message".into()));
    }
    if messages.len() > MAX_MESSAGES {
        return Err(AcceptError::Invalid(format!(
            "a suggestion holds at most {MAX_MESSAGES} messages, not {}",
            messages.len()
        )));
    }
    let mut seen: HashSet<String> = present.into_iter().map(key).collect();
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let text = message.trim();
        let why = if text.is_empty() {
            Some("is empty".to_string())
        } else if text.chars().count() > MAX_MESSAGE_CHARS {
            Some(format!("is longer than {MAX_MESSAGE_CHARS} characters"))
        } else if text.chars().any(breaks_lines) {
            Some("holds a line break or another control character".to_string())
        } else if !seen.insert(key(text)) {
            Some("is already there".to_string())
        } else {
            None
        };
        match why {
            Some(why) => refused.push(format!("message {} {why}", i + 1)),
            None => kept.push(text.to_string()),
        }
    }
    if kept.is_empty() {
        let shown = refused.len().min(5);
        let mut reasons = refused[..shown].join("; ");
        if refused.len() > shown {
            reasons.push_str(&format!("; and {} more", refused.len() - shown));
        }
        return Err(AcceptError::Invalid(format!("nothing to add: {reasons}")));
    }
    Ok(kept)
}

/// The draft file `path`'s text and version; `None` when there is no such file.
fn read(dir: &Path, path: &str) -> Result<Option<(String, String)>, AcceptError> {
    match draft::read_file(dir, path) {
        Ok(file) => Ok(Some(file)),
        Err(draft::EditError::NotFound(_)) => Ok(None),
        Err(e) => Err(AcceptError::Io(e.to_string())),
    }
}

/// The line break `text` uses (`\r\n` when it has any), for lines added to it.
fn line_break(text: &str) -> &'static str {
    if text.contains("\r\n") { "\r\n" } else { "\n" }
}

/// The comment line before what a suggestion adds.
fn stamp(date: NaiveDate) -> String {
    format!("# kefu mine {}", date.format("%Y-%m-%d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn messages_are_trimmed_and_taken_once_in_folded_form() {
        let kept = clean(
            &strings(&["  会员积分怎么用 ", "会员积分怎么用？", "ＡＢＣ", "abc", "能抵钱吗"]),
            ["能抵钱吗!"],
        )
        .unwrap();
        assert_eq!(kept, ["会员积分怎么用", "ＡＢＣ"]);
    }

    #[test]
    fn bad_messages_are_refused_and_all_refused_is_invalid() {
        let long = "好".repeat(MAX_MESSAGE_CHARS + 1);
        let kept = clean(&strings(&["ok", "a\nb", " ", &long, "x\u{2028}y"]), []).unwrap();
        assert_eq!(kept, ["ok"]);
        let Err(AcceptError::Invalid(why)) = clean(&strings(&["a\tb", "", &long]), []) else {
            panic!("refused messages are invalid");
        };
        assert!(why.contains("message 1 holds a line break"), "{why}");
        assert!(why.contains("message 3 is longer than 200"), "{why}");
        assert!(matches!(clean(&[], []), Err(AcceptError::Invalid(_))));
        let many = vec!["x".to_string(); MAX_MESSAGES + 1];
        assert!(matches!(clean(&many, []), Err(AcceptError::Invalid(_))));
    }
}
