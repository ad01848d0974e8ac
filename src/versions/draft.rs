//! The editor's side of the version store: a draft directory read into files, and the
//! operations `kefu publish`, `rollback`, `promote` and a canary start perform.
//!
//! A publish builds the draft with [`dsl::load_dir`] (errors: refused with the rendered
//! diagnostics, nothing changed), runs its conversation tests and knowledge-base checks
//! as `kefu test` does ([`conversation::Suite`]; a failure refuses unless `force`, which
//! the version records), reads the files again to make sure they did not change while it
//! was built (what is stored is exactly what was tested), and hands them to the store.
//!
//! A draft remembers the version it was last published as, or checked out from, in the
//! hidden file `DIR/.kefu-base`; that is the parent a publish names by default, so of two
//! editors publishing edits of the same version the second is refused with a conflict. A
//! directory without the file publishes over whatever is live (its first publish).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Note, Pointers, Result, TestSummary, Version, VersionError, VersionId, VersionStore};
use crate::conversation::Suite;
use crate::diag::files::{MAX_FILE_BYTES, io_reason};
use crate::dsl;

/// The most bytes a draft's files may hold together (256 MiB).
pub const MAX_DRAFT_BYTES: u64 = 256 * 1024 * 1024;

/// The most files a draft may hold.
pub const MAX_DRAFT_FILES: usize = 10_000;

/// The hidden file in a draft directory naming the version it was edited from.
pub const BASE_FILE: &str = ".kefu-base";

/// Why a draft directory could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct DraftError {
    /// The file or directory at fault.
    pub path: PathBuf,
    /// What is wrong.
    pub why: String,
}

/// Every regular, non-hidden file under `dir` (recursively), by its path relative to
/// `dir` with `/`. Hidden files and directories (a name starting with `.`: `.git`,
/// editors' swap files, `.kefu-base`) are left out. A symbolic link is followed only when
/// it leads to a file inside `dir`; one leading outside, to a directory, or to something
/// that is not a regular file is an error, as is a file over 16 MiB, a draft over
/// [`MAX_DRAFT_BYTES`] or [`MAX_DRAFT_FILES`], or a name that is not UTF-8.
pub fn read_dir(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, DraftError> {
    let error = |path: &Path, why: String| DraftError {
        path: path.to_path_buf(),
        why,
    };
    let root = std::fs::canonicalize(dir).map_err(|e| error(dir, io_reason(&e)))?;
    if !root.is_dir() {
        return Err(error(dir, "not a directory".into()));
    }
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, prefix)) = pending.pop() {
        let entries = std::fs::read_dir(&path).map_err(|e| error(&path, io_reason(&e)))?;
        for entry in entries {
            let entry = entry.map_err(|e| error(&path, io_reason(&e)))?;
            let full = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                return Err(error(&full, "the name is not UTF-8".into()));
            };
            if name.starts_with('.') {
                continue;
            }
            let relative = format!("{prefix}{name}");
            let kind = entry.file_type().map_err(|e| error(&full, io_reason(&e)))?;
            if kind.is_dir() {
                pending.push((full, format!("{relative}/")));
                continue;
            }
            if kind.is_symlink() {
                let real = std::fs::canonicalize(&full)
                    .map_err(|e| error(&full, format!("a broken symbolic link: {}", io_reason(&e))))?;
                if !real.starts_with(&root) {
                    return Err(error(&full, "a symbolic link leading outside the directory".into()));
                }
                if !real.is_file() {
                    return Err(error(
                        &full,
                        "a symbolic link to something other than a regular file".into(),
                    ));
                }
            } else if !kind.is_file() {
                return Err(error(&full, "not a regular file".into()));
            }
            let size = std::fs::metadata(&full).map_err(|e| error(&full, io_reason(&e)))?.len();
            if size > MAX_FILE_BYTES {
                return Err(error(
                    &full,
                    format!("the file is larger than {} MiB", MAX_FILE_BYTES >> 20),
                ));
            }
            let bytes = std::fs::read(&full).map_err(|e| error(&full, io_reason(&e)))?;
            if bytes.len() as u64 > MAX_FILE_BYTES {
                return Err(error(
                    &full,
                    format!("the file is larger than {} MiB", MAX_FILE_BYTES >> 20),
                ));
            }
            total += bytes.len() as u64;
            if total > MAX_DRAFT_BYTES {
                return Err(error(
                    dir,
                    format!("the files hold more than {} MiB together", MAX_DRAFT_BYTES >> 20),
                ));
            }
            files.insert(relative, bytes);
            if files.len() > MAX_DRAFT_FILES {
                return Err(error(dir, format!("more than {MAX_DRAFT_FILES} files")));
            }
        }
    }
    Ok(files)
}

/// The version `dir` was last published as or checked out from (`DIR/.kefu-base`), if
/// recorded. A file that does not hold a number is an error naming it.
pub fn base(dir: &Path) -> Result<Option<VersionId>, DraftError> {
    let path = dir.join(BASE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| DraftError {
            path,
            why: format!(
                "should hold the version the draft was edited from, not `{}`",
                text.trim()
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DraftError {
            path,
            why: io_reason(&e),
        }),
    }
}

/// Records `id` as the version `dir` is based on.
pub fn set_base(dir: &Path, id: VersionId) -> Result<()> {
    super::local::write_synced(&dir.join(BASE_FILE), format!("{id}\n").as_bytes())
}

/// What a publish asks for besides the directory.
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    /// Why (`-m`).
    pub message: String,
    /// Who.
    pub author: String,
    /// Publish even when tests fail (recorded on the version).
    pub force: bool,
    /// Start it as a canary on this percent of sessions.
    pub canary: Option<u8>,
    /// The parent to name; default: `DIR/.kefu-base`, else the live version.
    pub parent: Option<VersionId>,
    /// Colour the diagnostics (rendered for a terminal).
    pub color: bool,
    /// How the draft is built: with the store's trained classifiers
    /// ([`super::load_options`]), so the nodes that serve it need not train it again.
    pub load: dsl::LoadOptions,
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The directory could not be read.
    #[error(transparent)]
    Draft(#[from] DraftError),
    /// The rules do not build: the rendered diagnostics (with `file:line:col`).
    #[error("{diagnostics}the rules have errors: nothing was published")]
    Build {
        /// Every diagnostic, rendered.
        diagnostics: String,
    },
    /// Tests failed and `force` was not given.
    #[error(
        "{} of {} tests failed; nothing was published (publish with --force to publish anyway, which the version records):\n{}",
        summary.failed, summary.passed + summary.failed,
        failures.iter().map(|f| format!("  ✗ {f}")).collect::<Vec<_>>().join("\n")
    )]
    Tests {
        /// The counts.
        summary: TestSummary,
        /// One line per failed test file.
        failures: Vec<String>,
    },
    /// The files changed while they were built and tested.
    #[error("the files in {0} changed while they were built and tested: nothing was published, publish again")]
    Changed(PathBuf),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] VersionError),
}

/// A successful publish.
#[derive(Debug)]
pub struct Published {
    /// The new version.
    pub version: Version,
    /// Rendered warnings of the build (empty when none).
    pub warnings: String,
    /// Failed tests published over with `force`, one line each.
    pub failures: Vec<String>,
}

/// Builds, tests and publishes the draft in `dir` (see the module doc).
pub fn publish(store: &dyn VersionStore, dir: &Path, options: &PublishOptions) -> Result<Published, PublishError> {
    let files = read_dir(dir)?;
    let parent = match options.parent {
        Some(p) => Some(p),
        None => match base(dir)? {
            Some(b) => Some(b),
            None => store.pointers()?.live,
        },
    };
    // Refused before the build when it cannot succeed anyway (the build trains the
    // classifier, which takes a while); the store checks again atomically.
    super::check_publish(
        &super::NewVersion {
            parent,
            canary: options.canary,
            ..Default::default()
        },
        &store.pointers()?,
    )?;
    let (rules, summary, failures, warnings) = build_and_test(dir, options.color, options.load.clone())?;
    if summary.failed > 0 && !options.force {
        return Err(PublishError::Tests { summary, failures });
    }
    if read_dir(dir)? != files {
        return Err(PublishError::Changed(dir.to_path_buf()));
    }
    let version = store.publish(super::NewVersion {
        rules,
        files,
        author: options.author.clone(),
        message: options.message.clone(),
        forced: summary.failed > 0,
        tests: summary,
        parent,
        canary: options.canary,
        rollback_of: None,
    })?;
    if let Some(percent) = options.canary {
        store.annotate(
            version.id,
            Note::new(
                "canary started",
                format!("published as a canary on {percent}% of sessions"),
            ),
        )?;
    }
    set_base(dir, version.id)?;
    Ok(Published {
        version,
        warnings,
        failures,
    })
}

/// Builds `dir` and runs its tests: the rules hash, the counts, one line per failure and
/// the rendered warnings.
fn build_and_test(
    dir: &Path,
    color: bool,
    load: dsl::LoadOptions,
) -> Result<(String, TestSummary, Vec<String>, String), PublishError> {
    let compiled = dsl::load_dir_with(dir, load);
    let rendered = compiled.report.render_all(color);
    let Some(rules) = compiled.rules else {
        return Err(PublishError::Build { diagnostics: rendered });
    };
    let rules = Arc::new(rules);
    let suite = Suite::run(&rules, dir).map_err(|e| DraftError {
        path: dir.join("tests"),
        why: io_reason(&e),
    })?;
    let summary = TestSummary {
        passed: u32::try_from(suite.passed()).unwrap_or(u32::MAX),
        failed: u32::try_from(suite.failed()).unwrap_or(u32::MAX),
    };
    Ok((rules.version.clone(), summary, suite.failures(), rendered))
}

/// What a rollback did.
#[derive(Debug)]
pub enum Rollback {
    /// A canary ran: it was stopped, the live version untouched.
    CanaryStopped(VersionId),
    /// The target's content was published again as this new live version.
    Republished(Version),
}

/// Rolls back: while a canary runs, stops it (the live version serves everyone again);
/// otherwise publishes the content of `target` (default: the live version's parent) again
/// as a new version over the live one, with `rollback_of` set. History only grows.
pub fn rollback(store: &dyn VersionStore, target: Option<VersionId>, author: &str) -> Result<Rollback> {
    let pointers = store.pointers()?;
    if let Some(canary) = &pointers.canary {
        if target.is_some_and(|t| Some(t) != pointers.live) {
            return Err(VersionError::Invalid(format!(
                "version {} is running as a canary: `kefu rollback` without a version stops it first",
                canary.version
            )));
        }
        let stopped = canary.version;
        store.set_pointers(
            pointers.serial,
            Pointers {
                canary: None,
                ..pointers.clone()
            },
        )?;
        store.annotate(stopped, Note::new("canary stopped", format!("rolled back by {author}")))?;
        return Ok(Rollback::CanaryStopped(stopped));
    }
    let live = pointers
        .live
        .ok_or_else(|| VersionError::Invalid("nothing is live yet: there is nothing to roll back".into()))?;
    let target = match target {
        Some(t) => t,
        None => store.version(live)?.parent.ok_or_else(|| {
            VersionError::Invalid(format!(
                "version {live} is the first one: name the version to roll back to"
            ))
        })?,
    };
    if target == live {
        return Err(VersionError::Invalid(format!("version {target} is already live")));
    }
    let old = store.version(target)?;
    let files = store.files(target)?;
    let version = store.publish(super::NewVersion {
        rules: old.rules.clone(),
        files,
        author: author.to_string(),
        message: format!("rollback to version {target} (\"{}\")", old.message),
        forced: old.forced,
        tests: old.tests,
        parent: Some(live),
        canary: None,
        rollback_of: Some(target),
    })?;
    store.annotate(
        live,
        Note::new(
            "rolled back",
            format!(
                "replaced by version {} (the content of {target}) by {author}",
                version.id
            ),
        ),
    )?;
    Ok(Rollback::Republished(version))
}

/// Makes the canary the live version (its share of sessions becomes everyone).
pub fn promote(store: &dyn VersionStore, author: &str) -> Result<VersionId> {
    let pointers = store.pointers()?;
    let canary = pointers
        .canary
        .clone()
        .ok_or_else(|| VersionError::Invalid("no canary is running: there is nothing to promote".into()))?;
    store.set_pointers(
        pointers.serial,
        Pointers {
            live: Some(canary.version),
            canary: None,
            serial: pointers.serial,
        },
    )?;
    store.annotate(
        canary.version,
        Note::new(
            "promoted",
            format!(
                "made live by {author} after a canary on {}% since {}",
                canary.percent, canary.since
            ),
        ),
    )?;
    Ok(canary.version)
}

/// Starts an existing version as a canary on `percent` of sessions (refused while
/// another canary runs, or for the live version itself).
pub fn start_canary(store: &dyn VersionStore, id: VersionId, percent: u8, author: &str) -> Result<()> {
    if !(1..=100).contains(&percent) {
        return Err(VersionError::Invalid(format!(
            "a canary takes 1 to 100 percent of sessions, not {percent}"
        )));
    }
    store.version(id)?;
    let pointers = store.pointers()?;
    if let Some(canary) = &pointers.canary {
        return Err(VersionError::CanaryRunning(canary.version));
    }
    if pointers.live == Some(id) {
        return Err(VersionError::Invalid(format!("version {id} is already live")));
    }
    store.set_pointers(
        pointers.serial,
        Pointers {
            canary: Some(super::Canary {
                version: id,
                percent,
                since: chrono::Utc::now(),
            }),
            ..pointers
        },
    )?;
    store.annotate(
        id,
        Note::new("canary started", format!("on {percent}% of sessions by {author}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_file_holds_a_version_number_or_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(base(dir.path()).unwrap(), None);
        set_base(dir.path(), 7).unwrap();
        assert_eq!(base(dir.path()).unwrap(), Some(7));
        std::fs::write(dir.path().join(BASE_FILE), "seven").unwrap();
        let e = base(dir.path()).unwrap_err().to_string();
        assert!(e.contains(".kefu-base") && e.contains("`seven`"), "{e}");
    }

    #[test]
    fn a_draft_file_over_the_bound_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let big = std::fs::File::create(dir.path().join("big.yaml")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = read_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("big.yaml") && e.contains("16 MiB"), "{e}");
    }
}
