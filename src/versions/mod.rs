//! The version store: every published rule set as an immutable version, and the pointers
//! saying which version is live and which one (if any) is a canary.
//!
//! A version is the content hash kefu computes for a rule set (`RuleSet.version`, the
//! `rules_version` of every turn response), every file of the rules directory (rules,
//! knowledge base, data, word lists, tests) stored content-addressed by sha256, who
//! published it, why, when, over which parent, and how its tests went. History only grows:
//! a rollback publishes old content again as a new version (`rollback_of`). Versions are
//! never changed after publishing, except that notes are appended to them (a promotion, a
//! canary start, an automatic rollback decision with its figures).
//!
//! Two stores implement [`VersionStore`]: [`local::LocalStore`] (a directory, one host,
//! the default) and [`redis::RedisVersionStore`] (a fleet). Both refuse, rather than
//! serve, a version whose record or file does not match what was published: every blob is
//! checked against its sha256 when read ([`VersionError::Corrupt`]), so a version is
//! served whole or not at all.
//!
//! The rules of publishing, the same in both stores:
//!
//! - A publish names the parent it was edited from ([`NewVersion::parent`]). It is refused
//!   with [`VersionError::Conflict`] unless that parent is the live version, so of two
//!   editors publishing from the same parent the second one is refused and loses nothing:
//!   the message says how to rebase (diff, merge, publish again with `--parent LIVE`).
//! - While a canary runs, every publish is refused ([`VersionError::CanaryRunning`]):
//!   promote it or roll it back first. One candidate at a time keeps the split and its
//!   figures readable.
//! - The pointers change only through a compare-and-set on their `serial`
//!   ([`VersionStore::set_pointers`]), and every change bumps it; a publish moves them in
//!   the same atomic step that records the version.
//!
//! [`draft`] is the editor's side (reading a directory, building and testing it,
//! publish, rollback, promote, canary) and [`diff`] compares two versions' files. This
//! module belongs to the service part of the spine: it imports `dsl`, `conversation` and
//! `kb`; nothing on the rules side or in the engine imports it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod diff;
pub mod draft;
pub mod local;
pub mod redis;

pub use local::LocalStore;
pub use redis::RedisVersionStore;

/// A version's number: 1 for the first publish, growing by one (the Redis store may skip
/// a number after a refused publish).
pub type VersionId = u64;

/// One published rule set, immutable apart from its appended [`notes`](Version::notes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// Its number.
    pub id: VersionId,
    /// The rule set's content hash (`RuleSet.version`): what every turn response carries
    /// as `rules_version`, so a logged turn names the version that answered it.
    pub rules: String,
    /// The live version it was published over; `None` for the first one.
    pub parent: Option<VersionId>,
    /// Who published it.
    pub author: String,
    /// Why (the `-m` message).
    pub message: String,
    /// When it was published.
    pub time: DateTime<Utc>,
    /// Published over failing tests with `--force`.
    #[serde(default)]
    pub forced: bool,
    /// How its conversation tests and knowledge-base checks went when it was published.
    #[serde(default)]
    pub tests: TestSummary,
    /// Every file of the rules directory: its path relative to the directory (with `/`)
    /// and the blob holding its bytes.
    pub files: BTreeMap<String, FileRef>,
    /// The version whose content this one publishes again (a rollback).
    #[serde(default)]
    pub rollback_of: Option<VersionId>,
    /// What happened to it after publishing, oldest first (not part of the record file:
    /// appended separately, so the record itself is never rewritten).
    #[serde(default)]
    pub notes: Vec<Note>,
}

/// How a version's tests went: conversation files and knowledge-base check files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestSummary {
    /// Test files that passed.
    pub passed: u32,
    /// Test files that failed.
    pub failed: u32,
}

/// A file of a version: the sha256 of its bytes (the blob's name) and its size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Lower-case hex sha256 of the bytes.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// Something that happened to a version after it was published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// When.
    pub time: DateTime<Utc>,
    /// What: `promoted`, `canary started`, `canary stopped`, `rolled back`, ...
    pub kind: String,
    /// In words, for people (who did it, why).
    #[serde(default)]
    pub text: String,
    /// The figures a decision was made on (an automatic rollback's handoff and error
    /// rates, turns counted), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub figures: BTreeMap<String, f64>,
}

impl Note {
    /// A note of `kind` with `text`, now, without figures.
    pub fn new(kind: &str, text: impl Into<String>) -> Self {
        Note {
            time: Utc::now(),
            kind: kind.to_string(),
            text: text.into(),
            figures: BTreeMap::new(),
        }
    }
}

/// Which version serves: the live one, and a canary taking a share of sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointers {
    /// The version every session not in the canary gets; `None` before the first publish.
    pub live: Option<VersionId>,
    /// The candidate serving a share of sessions, if any.
    pub canary: Option<Canary>,
    /// Bumped by every change: the compare-and-set token of [`VersionStore::set_pointers`],
    /// and what `kefu:rules:changed` announces.
    pub serial: u64,
}

/// A canary: the candidate version and the share of sessions it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// The candidate.
    pub version: VersionId,
    /// Percent of sessions (1-100), picked by a stable hash of the session id.
    pub percent: u8,
    /// When the canary started.
    pub since: DateTime<Utc>,
}

/// What a publish hands the store.
#[derive(Clone, Debug, Default)]
pub struct NewVersion {
    /// The built rule set's content hash (`RuleSet.version`).
    pub rules: String,
    /// Every file, by relative path with `/`.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Who publishes.
    pub author: String,
    /// Why.
    pub message: String,
    /// Published over failing tests.
    pub forced: bool,
    /// How the tests went.
    pub tests: TestSummary,
    /// The version the draft was edited from, which must be the live one (`None`: the
    /// store must have no live version yet).
    pub parent: Option<VersionId>,
    /// Start it as a canary on this percent of sessions instead of making it live.
    pub canary: Option<u8>,
    /// The version whose content this publishes again (a rollback).
    pub rollback_of: Option<VersionId>,
}

/// Why the version store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// No such version.
    #[error("there is no version {0}")]
    NotFound(VersionId),
    /// A record or blob that does not hold what was published (or is missing): the
    /// version is not served.
    #[error("version {id} is damaged: {path}: {why}")]
    Corrupt {
        /// The version.
        id: VersionId,
        /// The record or blob file (or Redis key) at fault.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The publish was edited from a version that is no longer live.
    #[error(
        "conflict: this draft was edited from {}, but version {live} is live now (published meanwhile); \
         nothing was published. To rebase: `kefu diff {} {live}` shows what changed, merge those changes into \
         the draft, then publish again with `--parent {live}`",
        parent.map_or_else(|| "nothing (a first publish)".to_string(), |p| format!("version {p}")),
        parent.map_or_else(|| "DIR".to_string(), |p| p.to_string()),
    )]
    Conflict {
        /// The parent the publish named.
        parent: Option<VersionId>,
        /// The live version.
        live: VersionId,
    },
    /// The store's pointers changed since they were read (another publish, promote or
    /// rollback landed in between).
    #[error("the live and canary pointers changed meanwhile (serial {found}, expected {expected}): read them again")]
    Moved {
        /// The serial the change was based on.
        expected: u64,
        /// The serial found.
        found: u64,
    },
    /// A canary runs, and publishing waits for it to end.
    #[error("version {0} is running as a canary: `kefu promote` or `kefu rollback` it before publishing again")]
    CanaryRunning(VersionId),
    /// A pointer named (`live`, `canary`) points nowhere now.
    #[error("no {0} version")]
    NoPointer(&'static str),
    /// The request makes no sense (a percent outside 1-100, nothing to roll back to...).
    #[error("{0}")]
    Invalid(String),
    /// A file of the store could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Redis failed or could not be reached.
    #[error("redis: {0}")]
    Redis(String),
}

impl VersionError {
    /// An I/O error on `path`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VersionError + '_ {
        move |source| VersionError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Results of the version store.
pub type Result<T, E = VersionError> = std::result::Result<T, E>;

/// Where versions and the live/canary pointers are kept. Every method is one consistent
/// step: a reader never sees a half-published version, a pointer change is a
/// compare-and-set.
pub trait VersionStore: Send + Sync {
    /// Records a new version and moves a pointer to it, atomically: the next id, its
    /// files stored by sha256, its record, and the live pointer (or the canary pointer
    /// when `new.canary` is given). Refused with [`VersionError::Conflict`] when
    /// `new.parent` is not the live version, [`VersionError::CanaryRunning`] while a canary
    /// runs; nothing changes then.
    fn publish(&self, new: NewVersion) -> Result<Version>;

    /// One version's record, with its notes.
    fn version(&self, id: VersionId) -> Result<Version>;

    /// Every version, oldest first.
    fn list(&self) -> Result<Vec<Version>>;

    /// Every file of a version, each checked against its sha256 and size; one damaged or
    /// missing blob fails the whole call ([`VersionError::Corrupt`]).
    fn files(&self, id: VersionId) -> Result<BTreeMap<String, Vec<u8>>>;

    /// The latest version whose rules hash is `rules` (what a turn's `rules_version`
    /// names), if any.
    fn by_rules(&self, rules: &str) -> Result<Option<VersionId>> {
        Ok(self.list()?.into_iter().rev().find(|v| v.rules == rules).map(|v| v.id))
    }

    /// The live and canary pointers.
    fn pointers(&self) -> Result<Pointers>;

    /// Replaces the pointers if their serial is still `expect_serial` (else
    /// [`VersionError::Moved`]); the stored serial becomes `expect_serial + 1` whatever
    /// `new.serial` says. Every version named must exist. Returns what was stored.
    fn set_pointers(&self, expect_serial: u64, new: Pointers) -> Result<Pointers>;

    /// Appends a note to a version.
    fn annotate(&self, id: VersionId, note: Note) -> Result<()>;

    /// A cached artifact (e.g. a trained classifier keyed by the hash of its inputs), if
    /// present. Artifacts are a cache: one may be missing at any time, and one whose
    /// bytes do not match what was stored is reported as missing. Keys are any text
    /// (stored under their sha256); name them with their kind and the hash of what made
    /// them, e.g. `nlu:v1:SHA256-OF-INTENTS-AND-EXAMPLES`, so a change of format is a new
    /// key rather than a bad read. Not versioned, not listed, never removed by kefu.
    fn artifact_get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores an artifact under `key`, replacing any before.
    fn artifact_put(&self, key: &str, bytes: &[u8]) -> Result<()>;

    /// Writes a version's files into `dir`, never half: into a new directory beside it
    /// first (every blob verified), then renamed into place (the directory before, if any,
    /// is moved aside and removed). A reader of `dir` sees the old files or the new ones
    /// (or, between the two renames, no directory), never a mix or a half-written file;
    /// a damaged blob fails the checkout and leaves `dir` as it was.
    fn checkout(&self, id: VersionId, dir: &Path) -> Result<()> {
        let files = self.files(id)?;
        write_tree(&files, dir)
    }
}

/// The version `name` names now: its number, `live` or `canary` (the command line's and
/// the admin API's way of naming one). A name that is neither is [`VersionError::Invalid`].
pub fn resolve(store: &dyn VersionStore, name: &str) -> Result<VersionId> {
    match name {
        "live" => store.pointers()?.live.ok_or(VersionError::NoPointer("live")),
        "canary" => Ok(store
            .pointers()?
            .canary
            .ok_or(VersionError::NoPointer("canary"))?
            .version),
        _ => name.parse().map_err(|_| {
            VersionError::Invalid(format!(
                "`{name}` is not a version: give its number, `live` or `canary`"
            ))
        }),
    }
}

/// A store's artifacts as the trained-classifier cache ([`dsl::TrainedCache`]): the
/// classifier a publish trained is kept with the versions, so a node (or a replay) that
/// builds a version someone else published does not train it again. A store that cannot
/// be read is a miss (then it trains), one that cannot be written is logged.
///
/// [`dsl::TrainedCache`]: crate::dsl::TrainedCache
pub struct TrainedArtifacts(pub std::sync::Arc<dyn VersionStore>);

impl crate::dsl::TrainedCache for TrainedArtifacts {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.artifact_get(key).unwrap_or_else(|error| {
            tracing::warn!(%error, "a trained classifier could not be read from the version store; training");
            None
        })
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        if let Err(error) = self.0.artifact_put(key, bytes) {
            tracing::warn!(%error, "a trained classifier could not be kept in the version store");
        }
    }
}

/// How a version is built from its checkout: with the store's trained classifiers.
pub fn load_options(store: &std::sync::Arc<dyn VersionStore>) -> crate::dsl::LoadOptions {
    crate::dsl::LoadOptions {
        trained_cache: Some(std::sync::Arc::new(TrainedArtifacts(std::sync::Arc::clone(store)))),
        ..crate::dsl::LoadOptions::default()
    }
}

/// Published versions built on demand, by id or by rules hash (a replay's base: the
/// version that answered each logged turn), each checked out under a directory of its own
/// and built with [`dsl::load_dir`](crate::dsl::load_dir) once. A version that cannot be
/// read or built is reported once (`warn`) and resolves to nothing.
pub struct Builds<'a> {
    store: &'a dyn VersionStore,
    dir: PathBuf,
    options: crate::dsl::LoadOptions,
    built: std::sync::Mutex<std::collections::HashMap<String, Option<std::sync::Arc<crate::RuleSet>>>>,
}

impl<'a> Builds<'a> {
    /// Builds of `store`'s versions, checked out under `dir`.
    pub fn new(store: &'a dyn VersionStore, dir: &Path) -> Self {
        Builds {
            store,
            dir: dir.to_path_buf(),
            options: crate::dsl::LoadOptions::default(),
            built: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Builds with these options (the store's trained classifiers: [`load_options`]).
    pub fn with_options(mut self, options: crate::dsl::LoadOptions) -> Self {
        self.options = options;
        self
    }

    /// Version `id` built, or why not.
    pub fn by_id(&self, id: VersionId) -> std::result::Result<std::sync::Arc<crate::RuleSet>, String> {
        let version = self.store.version(id).map_err(|e| e.to_string())?;
        self.by_rules(&version.rules)
            .ok_or_else(|| format!("version {id} (rules {}) could not be built", version.rules))
    }

    /// The latest version whose rules hash is `rules`, built; `None` when there is none or
    /// it does not build.
    pub fn by_rules(&self, rules: &str) -> Option<std::sync::Arc<crate::RuleSet>> {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = built.get(rules) {
            return known.clone();
        }
        let result = (|| -> std::result::Result<Option<crate::RuleSet>, String> {
            let Some(id) = self.store.by_rules(rules).map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let dir = self.dir.join(format!("v{id}-{rules}"));
            if !dir.is_dir() {
                self.store.checkout(id, &dir).map_err(|e| e.to_string())?;
            }
            let compiled = crate::dsl::load_dir_with(&dir, self.options.clone());
            match compiled.rules {
                Some(rules) => Ok(Some(rules)),
                None => Err(format!(
                    "version {id} does not build:\n{}",
                    compiled.report.render_all(false)
                )),
            }
        })();
        let rules_set = match result {
            Ok(found) => found.map(std::sync::Arc::new),
            Err(why) => {
                tracing::warn!(rules, %why, "a published version could not be built");
                None
            }
        };
        built.insert(rules.to_string(), rules_set.clone());
        rules_set
    }
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Whether `path` is a file path a version may hold: relative, `/`-separated, no empty,
/// `.` or `..` component, no backslash or NUL. Checked on publish and on checkout, so a
/// record naming `../x` cannot write outside the checkout.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty() && !path.contains(['\\', '\0']) && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Checks the files a publish hands over and makes their references.
pub(crate) fn file_refs(files: &BTreeMap<String, Vec<u8>>) -> Result<BTreeMap<String, FileRef>> {
    if files.is_empty() {
        return Err(VersionError::Invalid("a version needs at least one file".into()));
    }
    files
        .iter()
        .map(|(path, bytes)| {
            if !valid_path(path) {
                return Err(VersionError::Invalid(format!(
                    "`{path}` is not a relative path with `/`"
                )));
            }
            Ok((
                path.clone(),
                FileRef {
                    sha256: sha256_hex(bytes),
                    size: bytes.len() as u64,
                },
            ))
        })
        .collect()
}

/// Checks a blob read for `path` of version `id` against its reference.
pub(crate) fn verify(id: VersionId, path: &str, file: &FileRef, bytes: &[u8]) -> Result<()> {
    if bytes.len() as u64 != file.size || sha256_hex(bytes) != file.sha256 {
        return Err(VersionError::Corrupt {
            id,
            path: path.to_string(),
            why: format!(
                "holds {} bytes that do not hash to the published sha256 {}",
                bytes.len(),
                file.sha256
            ),
        });
    }
    Ok(())
}

/// Checks the publish rules against the current pointers: the parent must be live and no
/// canary may run.
pub(crate) fn check_publish(new: &NewVersion, pointers: &Pointers) -> Result<()> {
    if let Some(canary) = &pointers.canary {
        return Err(VersionError::CanaryRunning(canary.version));
    }
    if let Some(percent) = new.canary
        && !(1..=100).contains(&percent)
    {
        return Err(VersionError::Invalid(format!(
            "a canary takes 1 to 100 percent of sessions, not {percent}"
        )));
    }
    if new.parent != pointers.live {
        return match pointers.live {
            Some(live) => Err(VersionError::Conflict {
                parent: new.parent,
                live,
            }),
            None => Err(VersionError::Invalid(format!(
                "the draft names version {} as its parent, but nothing is live in this store: publish with no parent",
                new.parent.unwrap_or_default()
            ))),
        };
    }
    Ok(())
}

/// The record of a new version with id `id` and the pointers after publishing it.
pub(crate) fn new_record(
    id: VersionId,
    new: &NewVersion,
    refs: BTreeMap<String, FileRef>,
    pointers: &Pointers,
) -> (Version, Pointers) {
    let time = Utc::now();
    let version = Version {
        id,
        rules: new.rules.clone(),
        parent: new.parent,
        author: new.author.clone(),
        message: new.message.clone(),
        time,
        forced: new.forced,
        tests: new.tests,
        files: refs,
        rollback_of: new.rollback_of,
        notes: Vec::new(),
    };
    let mut next = pointers.clone();
    match new.canary {
        Some(percent) => {
            next.canary = Some(Canary {
                version: id,
                percent,
                since: time,
            });
        }
        None => next.live = Some(id),
    }
    next.serial = pointers.serial + 1;
    (version, next)
}

/// Writes `files` into `dir` through a sibling temporary directory and a rename (see
/// [`VersionStore::checkout`]).
pub fn write_tree(files: &BTreeMap<String, Vec<u8>>, dir: &Path) -> Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(VersionError::io(&parent))?;
    let name = dir
        .file_name()
        .ok_or_else(|| VersionError::Invalid(format!("{}: not a directory name", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let nonce = format!("{}-{}", std::process::id(), getrandom::u64().unwrap_or(0));
    let temp = parent.join(format!(".{name}.new-{nonce}"));
    let result = (|| {
        for (path, bytes) in files {
            if !valid_path(path) {
                return Err(VersionError::Invalid(format!(
                    "`{path}` is not a relative path with `/`"
                )));
            }
            let target = temp.join(path);
            if let Some(p) = target.parent() {
                std::fs::create_dir_all(p).map_err(VersionError::io(p))?;
            }
            local::write_synced(&target, bytes)?;
        }
        std::fs::create_dir_all(&temp).map_err(VersionError::io(&temp))?;
        let old = parent.join(format!(".{name}.old-{nonce}"));
        let had_old = dir.exists();
        if had_old {
            std::fs::rename(dir, &old).map_err(VersionError::io(dir))?;
        }
        std::fs::rename(&temp, dir).map_err(VersionError::io(dir))?;
        if had_old {
            let _ = std::fs::remove_dir_all(&old);
        }
        local::sync_dir(&parent);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths_are_relative_and_plain() {
        for good in ["shop.kefu", "kb/faq.yaml", "tests/kb/a.yaml"] {
            assert!(valid_path(good), "{good}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b", "a/"] {
            assert!(!valid_path(bad), "{bad}");
        }
    }

    #[test]
    fn a_conflict_says_how_to_rebase() {
        let e = VersionError::Conflict {
            parent: Some(3),
            live: 4,
        };
        let text = e.to_string();
        assert!(text.contains("kefu diff 3 4"), "{text}");
        assert!(text.contains("--parent 4"), "{text}");
    }
}
