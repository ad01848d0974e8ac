//! Accepting a mined suggestion: the change written into the draft rules directory as an
//! editor would write it by hand, never live until published.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Action;

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
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// Writes `suggestion` into the rules directory `dir` (stand-in: built in its own change).
pub fn accept(dir: &Path, suggestion: &Suggestion) -> Result<Drafted, AcceptError> {
    let _ = (dir, suggestion);
    Err(AcceptError::Invalid("accepting suggestions is not built yet".into()))
}
