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
//!
//! The console edits a draft file by file ([`list`], [`read_file`], [`write_file`],
//! [`delete_file`]): each file has a version (the start of its SHA-256), an edit names the
//! version it was made from and is refused with the file as it is now when that changed
//! (two editors of one file: the second sees the first's text and a diff, nothing is
//! lost), writes are atomic, and only the draft's own kinds of files (`*.kefu`, YAML, word
//! lists, CSV, notes) inside it can be named. Plain file operations, no HTTP: the server's
//! `/admin/draft` routes call them, and a command line could.

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

/// The most bytes a file edited through [`write_file`] (or read by [`read_file`]) may hold
/// (2 MiB): rule files, FAQ tables and word lists are far smaller; anything bigger is not
/// edited in a browser.
pub const MAX_EDIT_BYTES: usize = 2 * 1024 * 1024;

/// The extensions of the files a draft edit may name.
pub const EDITABLE_EXTENSIONS: [&str; 6] = ["kefu", "yaml", "yml", "txt", "csv", "md"];

/// What a draft file is for, by where it is and what it is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A rule file (`*.kefu`).
    Rules,
    /// The knowledge base (`kb/`).
    Kb,
    /// Data sources' files (`data/`).
    Data,
    /// Word lists (`safety/`).
    Words,
    /// Conversation tests and knowledge-base checks (`tests/`).
    Tests,
    /// Anything else.
    Other,
}

impl FileKind {
    /// The kind of the file at `path` (relative, `/`-separated).
    pub fn of(path: &str) -> FileKind {
        if path.ends_with(".kefu") {
            return FileKind::Rules;
        }
        match path.split_once('/').map(|(top, _)| top) {
            Some("kb") => FileKind::Kb,
            Some("data") => FileKind::Data,
            Some("safety") => FileKind::Words,
            Some("tests") => FileKind::Tests,
            _ => FileKind::Other,
        }
    }
}

/// A file's version as a draft edit names it: the first 16 hex digits of its SHA-256.
pub fn file_version(bytes: &[u8]) -> String {
    let mut hex = super::sha256_hex(bytes);
    hex.truncate(16);
    hex
}

/// One file of a draft, as [`list`] shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DraftFile {
    /// Relative to the draft, with `/`.
    pub path: String,
    /// What it is for.
    pub kind: FileKind,
    /// Bytes.
    pub size: u64,
    /// [`file_version`] of its bytes.
    pub version: String,
    /// Whether the file edits can name it ([`check_path`]): a draft may hold other files
    /// (`tests/intents.jsonl`), shown but not edited here.
    pub editable: bool,
}

/// Every file of the draft in `dir` ([`read_dir`]'s files), in path order.
pub fn list(dir: &Path) -> Result<Vec<DraftFile>, DraftError> {
    Ok(read_dir(dir)?
        .into_iter()
        .map(|(path, bytes)| DraftFile {
            kind: FileKind::of(&path),
            editable: check_path(&path).is_ok(),
            size: bytes.len() as u64,
            version: file_version(&bytes),
            path,
        })
        .collect())
}

/// Why a draft file was not read, written or removed.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The path is not one a draft edit may name (the reason).
    #[error("{0}")]
    BadPath(String),
    /// No file at the path.
    #[error("no file `{0}` in the draft")]
    NotFound(String),
    /// Over [`MAX_EDIT_BYTES`].
    #[error("`{0}` is larger than {mib} MiB, the most a draft edit may hold", mib = MAX_EDIT_BYTES >> 20)]
    TooLarge(String),
    /// The file is not UTF-8 text.
    #[error("`{0}` is not UTF-8 text")]
    NotText(String),
    /// The file changed since the version the edit names (or exists, for a new file, or
    /// is gone): nothing was changed. `current` is the file as it is now, if it exists.
    #[error("`{path}` changed since the version you edited; nothing was changed")]
    Conflict {
        /// The file.
        path: String,
        /// Its text and version now; `None` when it no longer exists.
        current: Option<(String, String)>,
    },
    /// The file system refused.
    #[error(transparent)]
    Io(#[from] DraftError),
}

/// Checks that `path` names a file a draft edit may touch: relative, `/`-separated,
/// without `.`, `..`, empty or hidden components (`.git`, `.kefu-base`), and with one
/// of [`EDITABLE_EXTENSIONS`].
pub fn check_path(path: &str) -> Result<(), EditError> {
    let bad = |why: &str| Err(EditError::BadPath(format!("`{path}` {why}")));
    if path.starts_with('/') {
        return bad("is absolute: paths are relative to the draft directory");
    }
    if !super::valid_path(path) {
        return bad("is not a relative path with `/` (no `..`, `.`, empty parts or backslashes)");
    }
    if path.split('/').any(|c| c.starts_with('.')) {
        return bad("names a hidden file or directory, which the draft does not hold");
    }
    if path.chars().any(char::is_control) {
        return bad("holds a control character");
    }
    let extension = path.rsplit_once('.').map(|(_, e)| e);
    if !extension.is_some_and(|e| EDITABLE_EXTENSIONS.contains(&e)) {
        return Err(EditError::BadPath(format!(
            "`{path}` is not a draft file: the draft holds `.{}` files",
            EDITABLE_EXTENSIONS.join("`, `.")
        )));
    }
    Ok(())
}

/// Serializes the draft edits of this process, so that of two edits of one version the
/// second sees the first's file (the check of the version and the rename are one step).
/// Another process writing the directory (an editor on the server) is not held by it.
static EDITS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The full path of `path` under `dir`, after [`check_path`], when every directory on the
/// way that exists is inside `dir` once symbolic links are followed.
fn resolve(dir: &Path, path: &str) -> Result<PathBuf, EditError> {
    check_path(path)?;
    let io = |p: &Path, e: std::io::Error| {
        EditError::Io(DraftError {
            path: p.to_path_buf(),
            why: io_reason(&e),
        })
    };
    let root = std::fs::canonicalize(dir).map_err(|e| io(dir, e))?;
    let full = dir.join(path);
    // The nearest existing ancestor decides where the file would land.
    let mut ancestor = full.parent();
    while let Some(a) = ancestor {
        if a.exists() {
            let real = std::fs::canonicalize(a).map_err(|e| io(a, e))?;
            if !real.starts_with(&root) {
                return Err(EditError::BadPath(format!(
                    "`{path}` leads outside the draft directory through a symbolic link"
                )));
            }
            break;
        }
        ancestor = a.parent();
    }
    Ok(full)
}

/// The bytes of `full` (the draft file `path`), `None` when there is none.
fn current_bytes(dir: &Path, full: &Path, path: &str) -> Result<Option<Vec<u8>>, EditError> {
    match std::fs::symlink_metadata(full) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(EditError::Io(DraftError {
                path: full.to_path_buf(),
                why: io_reason(&e),
            }));
        }
        Ok(_) => {}
    }
    match crate::diag::files::read(dir, full) {
        Ok(text) => {
            if text.len() > MAX_EDIT_BYTES {
                return Err(EditError::TooLarge(path.into()));
            }
            Ok(Some(text.into_bytes()))
        }
        Err(crate::diag::files::FileError::NotUtf8) => Err(EditError::NotText(path.into())),
        Err(crate::diag::files::FileError::TooLarge) => Err(EditError::TooLarge(path.into())),
        Err(crate::diag::files::FileError::Outside) => Err(EditError::BadPath(format!(
            "`{path}` leads outside the draft directory through a symbolic link"
        ))),
        Err(crate::diag::files::FileError::NotRegular) => {
            Err(EditError::BadPath(format!("`{path}` is not a regular file")))
        }
        Err(e) => Err(EditError::Io(DraftError {
            path: full.to_path_buf(),
            why: e.to_string(),
        })),
    }
}

/// The text of the draft file `path` and its version.
pub fn read_file(dir: &Path, path: &str) -> Result<(String, String), EditError> {
    let full = resolve(dir, path)?;
    let bytes = current_bytes(dir, &full, path)?.ok_or_else(|| EditError::NotFound(path.into()))?;
    let version = file_version(&bytes);
    Ok((
        String::from_utf8(bytes).map_err(|_| EditError::NotText(path.into()))?,
        version,
    ))
}

/// The conflict of an edit of `path` that expected `expected` (`None`: no file) when the
/// file now holds `current`; `Ok` when they agree.
fn expect(path: &str, expected: Option<&str>, current: Option<Vec<u8>>) -> Result<(), EditError> {
    let now = current.as_deref().map(file_version);
    if now.as_deref() == expected {
        return Ok(());
    }
    Err(EditError::Conflict {
        path: path.into(),
        current: current.map(|bytes| {
            let version = file_version(&bytes);
            (String::from_utf8_lossy(&bytes).into_owned(), version)
        }),
    })
}

/// Writes `text` to the draft file `path` atomically (a temporary file renamed over it;
/// directories created), when the file is still at version `expected` (`None`: when there
/// is no such file yet). Returns the new version.
pub fn write_file(dir: &Path, path: &str, text: &str, expected: Option<&str>) -> Result<String, EditError> {
    if text.len() > MAX_EDIT_BYTES {
        return Err(EditError::TooLarge(path.into()));
    }
    let full = resolve(dir, path)?;
    let _held = EDITS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    expect(path, expected, current_bytes(dir, &full, path)?)?;
    let parent = full.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(|e| DraftError {
        path: parent.to_path_buf(),
        why: io_reason(&e),
    })?;
    // Checked again now that the directories exist: one created through a link that
    // appeared meanwhile would show here.
    resolve(dir, path)?;
    super::local::write_synced(&full, text.as_bytes()).map_err(|e| DraftError {
        path: full.clone(),
        why: e.to_string(),
    })?;
    Ok(file_version(text.as_bytes()))
}

/// Removes the draft file `path` when it is still at version `expected`.
pub fn delete_file(dir: &Path, path: &str, expected: &str) -> Result<(), EditError> {
    let full = resolve(dir, path)?;
    let _held = EDITS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let current = current_bytes(dir, &full, path)?;
    if current.is_none() {
        return Err(EditError::NotFound(path.into()));
    }
    expect(path, Some(expected), current)?;
    std::fs::remove_file(&full).map_err(|e| DraftError {
        path: full.clone(),
        why: io_reason(&e),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_paths_are_relative_visible_and_of_the_draft_s_kinds() {
        for ok in [
            "a.kefu",
            "kb/faq.yaml",
            "safety/词.txt",
            "tests/x.yml",
            "data/a.csv",
            "README.md",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../a.kefu",
            "/etc/passwd.txt",
            ".git/config.txt",
            ".kefu-base",
            "kb/.x.yaml",
            "a/./b.kefu",
            "a//b.kefu",
            "",
            "a.exe",
            "a",
            "a\\b.kefu",
        ] {
            assert!(matches!(check_path(bad), Err(EditError::BadPath(_))), "{bad}");
        }
        assert_eq!(FileKind::of("aftersale.kefu"), FileKind::Rules);
        assert_eq!(FileKind::of("kb/faq.yaml"), FileKind::Kb);
        assert_eq!(FileKind::of("safety/a.txt"), FileKind::Words);
        assert_eq!(FileKind::of("notes.md"), FileKind::Other);
    }

    #[test]
    fn an_edit_of_a_stale_version_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = write_file(dir.path(), "kb/faq.yaml", "a\n", None).unwrap();
        assert_eq!(
            read_file(dir.path(), "kb/faq.yaml").unwrap(),
            ("a\n".to_string(), v1.clone())
        );
        // A new file over an existing one.
        assert!(matches!(
            write_file(dir.path(), "kb/faq.yaml", "b\n", None),
            Err(EditError::Conflict { current: Some(_), .. })
        ));
        let v2 = write_file(dir.path(), "kb/faq.yaml", "b\n", Some(&v1)).unwrap();
        match write_file(dir.path(), "kb/faq.yaml", "c\n", Some(&v1)) {
            Err(EditError::Conflict {
                current: Some((text, version)),
                ..
            }) => {
                assert_eq!((text.as_str(), version.as_str()), ("b\n", v2.as_str()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            delete_file(dir.path(), "kb/faq.yaml", &v1),
            Err(EditError::Conflict { .. })
        ));
        delete_file(dir.path(), "kb/faq.yaml", &v2).unwrap();
        assert!(matches!(
            read_file(dir.path(), "kb/faq.yaml"),
            Err(EditError::NotFound(_))
        ));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("kb")).unwrap().collect();
        assert!(names.is_empty(), "no temporary file left: {names:?}");
    }

    #[test]
    fn an_edit_cannot_reach_outside_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("out")).unwrap();
        assert!(matches!(
            write_file(dir.path(), "out/x.kefu", "x", None),
            Err(EditError::BadPath(_))
        ));
        assert!(std::fs::read_dir(elsewhere.path()).unwrap().next().is_none());
    }

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
