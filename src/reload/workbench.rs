//! The draft as the console tries it: the server's rules directory built beside the
//! serving rules, with an engine of its own for test chats and the conversation tests.
//!
//! The draft is built like any rules directory (`dsl::load_dir_with`, on a thread with a
//! large stack, with the version store's trained classifiers when there is one, and the
//! process-wide memory of trained models otherwise) and only again when its files changed:
//! a chat reads every file (small: a rules directory) and hashes it, which costs far less
//! than a build. A draft with errors is remembered as such until its files change.
//!
//! The draft's engine is a [`Engine::sibling`] of the serving one: the same model backend
//! and settings, its sessions in a store of the workbench's own (kept across rebuilds, so a
//! test conversation goes on after an edit), no observer, so a test chat never reaches the
//! customer session store, the conversation log or the conversation metrics.
//!
//! What the chat's answer is made of for an editor (where the answering rule is written,
//! the knowledge-base hits, the prompt's parts) is read here from the turn's full trace and
//! the draft's rule set, so the server only shapes JSON.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{ReloadFailure, Trigger, build_isolated_with};
use crate::engine::{AnswerSource, Engine, TraceStep, TurnResponse};
use crate::store::{MemoryStore, SessionStore};
use crate::versions::draft::{self, DraftError};
use crate::{RuleSet, dsl};

/// The draft directory, its last build and the sessions of its test chats.
pub struct Workbench {
    dir: PathBuf,
    options: dsl::LoadOptions,
    sessions: Arc<MemoryStore>,
    built: Mutex<Option<(String, Result<Built, ReloadFailure>)>>,
}

/// The draft built: its rule set, an engine on it, and the hash of the files it was built
/// from.
#[derive(Clone)]
pub struct Built {
    /// The draft's rule set.
    pub rules: Arc<RuleSet>,
    /// The draft's engine (in-memory sessions, no observer).
    pub engine: Arc<Engine>,
    /// SHA-256 of the files (paths and bytes) the build read.
    pub files_hash: String,
}

/// Why the draft could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WorkbenchError {
    /// The directory could not be read (a file too large, a link leading outside).
    #[error(transparent)]
    Files(#[from] DraftError),
    /// The rules have errors: the diagnostics, paths relative to the draft.
    #[error("the draft has errors")]
    Invalid(ReloadFailure),
}

impl Workbench {
    /// The workbench of the draft in `dir`, built with `options`.
    pub fn new(dir: impl Into<PathBuf>, options: dsl::LoadOptions) -> Self {
        Workbench {
            dir: dir.into(),
            options,
            sessions: Arc::new(MemoryStore::default()),
            built: Mutex::new(None),
        }
    }

    /// The draft directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The draft built, with an engine that shares `serving`'s model and settings; built
    /// again only when the files changed since the last build. Blocking: a build trains.
    pub fn build(&self, serving: &Engine) -> Result<Built, WorkbenchError> {
        let files = draft::read_dir(&self.dir)?;
        let mut hash = Sha256::new();
        for (path, bytes) in &files {
            hash.update((path.len() as u64).to_le_bytes());
            hash.update(path.as_bytes());
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
        let files_hash = hex(&hash.finalize());
        // Held through the build: two chats after one edit build once.
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((hash, result)) = built.as_ref()
            && *hash == files_hash
        {
            return result.clone().map_err(WorkbenchError::Invalid);
        }
        let result = match build_isolated_with(&self.dir, self.options.clone()) {
            Ok(compiled) => match compiled.rules {
                Some(rules) => {
                    let rules = Arc::new(rules);
                    let sessions: Arc<dyn SessionStore> = self.sessions.clone();
                    Ok(Built {
                        engine: Arc::new(serving.sibling(Arc::clone(&rules), sessions)),
                        rules,
                        files_hash: files_hash.clone(),
                    })
                }
                None => Err(ReloadFailure::from_report(&compiled.report, Trigger::Admin)),
            },
            Err(failure) => Err(failure),
        };
        let result = result.map_err(|failure| self.relative(failure));
        *built = Some((files_hash, result.clone()));
        result.map_err(WorkbenchError::Invalid)
    }

    /// Ends a test chat's conversation (the chat's `reset`).
    pub fn forget_session(&self, id: &str) {
        self.sessions.remove(id);
    }

    /// `failure` with paths relative to the draft (its directory means little in a
    /// browser).
    fn relative(&self, mut failure: ReloadFailure) -> ReloadFailure {
        let prefix = format!("{}/", self.dir.display());
        failure.report = failure.report.replace(&prefix, "");
        for d in &mut failure.diagnostics {
            d.location = d.location.replace(&prefix, "");
        }
        failure
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where an item is written: a file relative to the rules directory, 1-based line and
/// column (in characters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceLocation {
    /// The file, relative to the rules directory, with `/`.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

/// Where what answered `response` is written in `rules`: the rule, the promotion, the
/// flow (its `flow` line when the turn started it, else the line of the step that asked),
/// or the FAQ entry's `id:` in its kb file. `None` for the model, the fallback and the
/// other answers no one item gives.
pub fn source_location(rules: &RuleSet, response: &TurnResponse) -> Option<SourceLocation> {
    let root = &rules.root;
    let named = |location: &str, name: &str| locate(root, location, Some(name));
    match response.source {
        AnswerSource::Rule => {
            let name = response.rule.as_deref()?;
            let rule = rules.rules.iter().find(|r| r.name == name)?;
            named(&rule.location, name)
        }
        AnswerSource::Promotion => {
            let name = response.promotion.as_deref()?;
            let promo = rules.promotions.iter().find(|p| p.name == name)?;
            named(&promo.location, name)
        }
        AnswerSource::Flow => {
            let name = response.flow.as_deref()?;
            let flow = rules.flows.iter().find(|f| f.name == name)?;
            let started = response
                .trace
                .iter()
                .any(|s| s.stage == "flow" && s.detail.starts_with(name) && s.detail.ends_with(" starts"));
            let step_line = response
                .step
                .as_deref()
                .and_then(|s| s.rsplit_once('@'))
                .and_then(|(_, line)| line.parse::<usize>().ok());
            match step_line {
                Some(line) if !started => {
                    let (file, _) = flow.location.rsplit_once(':')?;
                    locate(root, &format!("{file}:{line}"), None)
                }
                _ => named(&flow.location, name),
            }
        }
        AnswerSource::Faq | AnswerSource::Cache => {
            let id = response.faq.as_deref()?;
            let (file, line, col) = crate::kb::load::faq_location(root, id)?;
            Some(SourceLocation { file, line, col })
        }
        _ => None,
    }
}

/// `path:line` (as the rule set records locations) as a [`SourceLocation`] relative to
/// `root`; the column is that of `name` on the line, else of the line's first non-blank.
fn locate(root: &Path, location: &str, name: Option<&str>) -> Option<SourceLocation> {
    let (path, line) = location.rsplit_once(':')?;
    let line: usize = line.parse().ok()?;
    let path = Path::new(path);
    let relative = path.strip_prefix(root).unwrap_or(path);
    let file = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    let text = crate::diag::files::read(root, &root.join(relative)).unwrap_or_default();
    let col = text.lines().nth(line.saturating_sub(1)).map_or(1, |l| {
        let at = name
            .and_then(|n| l.find(n))
            .unwrap_or_else(|| l.len() - l.trim_start().len());
        l[..at].chars().count() + 1
    });
    Some(SourceLocation { file, line, col })
}

/// A knowledge-base entry a turn looked at, and its score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KbHit {
    /// `faq` or `product`.
    pub kind: &'static str,
    /// The entry's id.
    pub id: String,
    /// Its confidence (0..1); `None` for the product in focus, which is given, not scored.
    pub score: Option<f64>,
    /// Whether it answered the turn (an FAQ entry).
    pub answered: bool,
}

/// The knowledge-base entries of a turn's full trace: the FAQ entry scored best (answering
/// or not), the product in focus and the passages given to the model.
pub fn kb_hits(trace: &[TraceStep]) -> Vec<KbHit> {
    let mut hits = Vec::new();
    for step in trace {
        match step.stage.as_str() {
            "faq" => {
                // `ID answers (0.83, runner-up 0.20)` or `best ID (0.41, runner-up 0.30): why`.
                let (id, rest, answered) = if let Some((id, rest)) = step.detail.rsplit_once(" answers (") {
                    (id, rest, true)
                } else if let Some(rest) = step.detail.strip_prefix("best ")
                    && let Some((id, rest)) = rest.split_once(" (")
                {
                    (id, rest, false)
                } else {
                    continue;
                };
                let score = rest.split(',').next().and_then(|s| s.trim().parse().ok());
                hits.push(KbHit {
                    kind: "faq",
                    id: id.to_string(),
                    score,
                    answered,
                });
            }
            "kb" => {
                if let Some(rest) = step.detail.strip_prefix("product in focus: ") {
                    let id = rest.split(' ').next().unwrap_or(rest);
                    hits.push(KbHit {
                        kind: "product",
                        id: id.to_string(),
                        score: None,
                        answered: false,
                    });
                } else if let Some(rest) = step.detail.strip_prefix("passages: ") {
                    for passage in rest.split(", ") {
                        let mut words = passage.split(' ');
                        let (Some(kind), Some(id)) = (words.next(), words.next()) else {
                            continue;
                        };
                        let kind = match kind {
                            "faq" => "faq",
                            "product" => "product",
                            _ => continue,
                        };
                        hits.push(KbHit {
                            kind,
                            id: id.to_string(),
                            score: words.next().and_then(|s| s.parse().ok()),
                            answered: false,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    hits
}

/// The parts the model's prompt was made of (`persona`, `policies`, `passages`...), from
/// the trace's `prompt` line; `None` when the model was not asked.
pub fn prompt_parts(trace: &[TraceStep]) -> Option<Vec<String>> {
    let step = trace.iter().rev().find(|s| s.stage == "prompt")?;
    Some(
        step.detail
            .split(", ")
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// What input and output safety did in a turn (the trace's `safety` lines).
pub fn safety_actions(trace: &[TraceStep]) -> Vec<String> {
    trace
        .iter()
        .filter(|s| s.stage == "safety")
        .map(|s| s.detail.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(stage: &str, detail: &str) -> TraceStep {
        TraceStep {
            stage: stage.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn kb_hits_are_read_from_the_trace() {
        let trace = [
            step("kb", "product in focus: P001 纯棉T恤"),
            step("faq", "best 运费险 (0.41, runner-up 0.30): below 0.5"),
            step(
                "kb",
                "passages: product P001 (focus), faq 运费险 0.41, product P002 0.20",
            ),
            step("faq", "发货时间 answers (0.83, runner-up 0.20)"),
        ];
        let hits = kb_hits(&trace);
        let seen: Vec<_> = hits
            .iter()
            .map(|h| (h.kind, h.id.as_str(), h.score, h.answered))
            .collect();
        assert_eq!(
            seen,
            [
                ("product", "P001", None, false),
                ("faq", "运费险", Some(0.41), false),
                ("product", "P001", None, false),
                ("faq", "运费险", Some(0.41), false),
                ("product", "P002", Some(0.2), false),
                ("faq", "发货时间", Some(0.83), true),
            ]
        );
        assert_eq!(
            prompt_parts(&[step("prompt", "persona, policies")]),
            Some(vec!["persona".to_string(), "policies".to_string()])
        );
        assert_eq!(prompt_parts(&trace), None);
    }
}
