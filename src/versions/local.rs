//! The version store in a directory: `STATE_DIR/versions/` on one host.
//!
//! ```text
//! versions/
//!   lock                 held (flock) around every publish and pointer change
//!   pointers.json        live, canary, serial
//!   records/ID.json      one version's record, written once
//!   notes/ID.jsonl       its notes, one JSON line each, appended
//!   blobs/xx/SHA256      file contents by sha256 (xx: its first two hex digits)
//!   artifacts/xx/SHA256  cached artifacts, named by the sha256 of their key
//! ```
//!
//! Every file is written to a temporary name beside it, fsynced, and renamed over its
//! name, then the directory is fsynced: a crash leaves the old file or the new one. A
//! publish writes its blobs, then its record, then the pointers; the pointers are the
//! commit point, so a crash before them leaves a record nothing points to (listed, never
//! served as live), never a live version with missing files. Two processes (or two threads
//! with their own handles) serialize on the `lock` file, so of two publishes from one
//! parent exactly one wins.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{
    NewVersion, Note, Pointers, Result, Version, VersionError, VersionId, VersionStore, check_publish, file_refs,
    new_record, sha256_hex, verify,
};

/// The version store in `STATE_DIR/versions/`.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
}

/// Writes `bytes` to `path` through a temporary file beside it: write, fsync, rename.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        getrandom::u32().unwrap_or(0)
    ));
    let result = (|| {
        let mut file = File::create(&temp).map_err(VersionError::io(&temp))?;
        file.write_all(bytes).map_err(VersionError::io(&temp))?;
        file.sync_all().map_err(VersionError::io(&temp))?;
        std::fs::rename(&temp, path).map_err(VersionError::io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// fsyncs a directory so a rename inside it survives a crash (best effort: not every file
/// system lets a directory be opened for it).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl LocalStore {
    /// Opens (creating it when missing) the store in `state_dir/versions/`.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let root = state_dir.join("versions");
        for sub in ["records", "notes", "blobs", "artifacts"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(VersionError::io(&dir))?;
        }
        Ok(LocalStore { root })
    }

    /// The store's directory (`STATE_DIR/versions`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the store's lock until the returned file is dropped.
    fn lock(&self) -> Result<File> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(VersionError::io(&path))?;
        file.lock().map_err(VersionError::io(&path))?;
        Ok(file)
    }

    fn record_path(&self, id: VersionId) -> PathBuf {
        self.root.join("records").join(format!("{id}.json"))
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root
            .join("blobs")
            .join(&sha256[..2.min(sha256.len())])
            .join(sha256)
    }

    fn artifact_path(&self, key: &str) -> PathBuf {
        let name = sha256_hex(key.as_bytes());
        self.root.join("artifacts").join(&name[..2]).join(name)
    }

    /// The ids recorded, ascending (names that are not `N.json` are ignored).
    fn ids(&self) -> Result<Vec<VersionId>> {
        let dir = self.root.join("records");
        let mut ids: Vec<VersionId> = std::fs::read_dir(&dir)
            .map_err(VersionError::io(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn read_record(&self, id: VersionId) -> Result<Version> {
        let path = self.record_path(id);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(VersionError::NotFound(id)),
            Err(e) => return Err(VersionError::io(&path)(e)),
        };
        let corrupt = |why: String| VersionError::Corrupt {
            id,
            path: path.display().to_string(),
            why,
        };
        let mut version: Version =
            serde_json::from_slice(&text).map_err(|e| corrupt(format!("not a version record: {e}")))?;
        if version.id != id {
            return Err(corrupt(format!("the record says it is version {}", version.id)));
        }
        version.notes = self.read_notes(id)?;
        Ok(version)
    }

    fn read_notes(&self, id: VersionId) -> Result<Vec<Note>> {
        let path = self.root.join("notes").join(format!("{id}.jsonl"));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(VersionError::io(&path)(e)),
        };
        // A torn last line (a crash while appending) is skipped: a note is history, not
        // what serves.
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }

    fn read_pointers(&self) -> Result<Pointers> {
        let path = self.root.join("pointers.json");
        match std::fs::read(&path) {
            Ok(text) => serde_json::from_slice(&text).map_err(|e| VersionError::Corrupt {
                id: 0,
                path: path.display().to_string(),
                why: format!("not the live/canary pointers: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Pointers::default()),
            Err(e) => Err(VersionError::io(&path)(e)),
        }
    }

    fn write_pointers(&self, pointers: &Pointers) -> Result<()> {
        let path = self.root.join("pointers.json");
        let text = serde_json::to_vec_pretty(pointers).expect("pointers serialize");
        write_synced(&path, &text)?;
        sync_dir(&self.root);
        Ok(())
    }
}

impl VersionStore for LocalStore {
    fn publish(&self, new: NewVersion) -> Result<Version> {
        let refs = file_refs(&new.files)?;
        let _lock = self.lock()?;
        let pointers = self.read_pointers()?;
        check_publish(&new, &pointers)?;
        let id = self.ids()?.last().copied().unwrap_or(0).max(pointers.live.unwrap_or(0)) + 1;
        // Blobs first: content-addressed, so one already there is the same bytes (checked,
        // so a damaged one is replaced rather than trusted).
        for (path, file) in &refs {
            let blob = self.blob_path(&file.sha256);
            let bytes = &new.files[path];
            if std::fs::read(&blob).is_ok_and(|b| sha256_hex(&b) == file.sha256) {
                continue;
            }
            if let Some(dir) = blob.parent() {
                std::fs::create_dir_all(dir).map_err(VersionError::io(dir))?;
            }
            write_synced(&blob, bytes)?;
        }
        let (version, next) = new_record(id, &new, refs, &pointers);
        let record = serde_json::to_vec_pretty(&version).expect("records serialize");
        write_synced(&self.record_path(id), &record)?;
        sync_dir(&self.root.join("records"));
        self.write_pointers(&next)?;
        Ok(version)
    }

    fn version(&self, id: VersionId) -> Result<Version> {
        self.read_record(id)
    }

    fn list(&self) -> Result<Vec<Version>> {
        self.ids()?.into_iter().map(|id| self.read_record(id)).collect()
    }

    fn files(&self, id: VersionId) -> Result<BTreeMap<String, Vec<u8>>> {
        let version = self.read_record(id)?;
        let mut files = BTreeMap::new();
        for (path, file) in &version.files {
            let blob = self.blob_path(&file.sha256);
            let bytes = std::fs::read(&blob).map_err(|e| VersionError::Corrupt {
                id,
                path: format!("{path} (blob {})", blob.display()),
                why: crate::diag::files::io_reason(&e),
            })?;
            verify(id, &format!("{path} (blob {})", blob.display()), file, &bytes)?;
            files.insert(path.clone(), bytes);
        }
        Ok(files)
    }

    fn pointers(&self) -> Result<Pointers> {
        self.read_pointers()
    }

    fn set_pointers(&self, expect_serial: u64, mut new: Pointers) -> Result<Pointers> {
        let _lock = self.lock()?;
        let current = self.read_pointers()?;
        if current.serial != expect_serial {
            return Err(VersionError::Moved {
                expected: expect_serial,
                found: current.serial,
            });
        }
        for id in new.live.iter().chain(new.canary.as_ref().map(|c| &c.version)) {
            if !self.record_path(*id).exists() {
                return Err(VersionError::NotFound(*id));
            }
        }
        new.serial = current.serial + 1;
        self.write_pointers(&new)?;
        Ok(new)
    }

    fn annotate(&self, id: VersionId, note: Note) -> Result<()> {
        let _lock = self.lock()?;
        if !self.record_path(id).exists() {
            return Err(VersionError::NotFound(id));
        }
        let path = self.root.join("notes").join(format!("{id}.jsonl"));
        let mut line = serde_json::to_vec(&note).expect("notes serialize");
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(VersionError::io(&path))?;
        file.write_all(&line).map_err(VersionError::io(&path))?;
        file.sync_all().map_err(VersionError::io(&path))
    }

    fn artifact_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.artifact_path(key);
        match std::fs::read(&path) {
            // Stored as the hex sha256 of the bytes (64 characters), then the bytes.
            Ok(stored) if stored.len() >= 64 => {
                let (hash, bytes) = stored.split_at(64);
                Ok((hash == sha256_hex(bytes).as_bytes()).then(|| bytes.to_vec()))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VersionError::io(&path)(e)),
        }
    }

    fn artifact_put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.artifact_path(key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(VersionError::io(dir))?;
        }
        let mut stored = sha256_hex(bytes).into_bytes();
        stored.extend_from_slice(bytes);
        write_synced(&path, &stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(parent: Option<VersionId>, text: &str) -> NewVersion {
        NewVersion {
            rules: sha256_hex(text.as_bytes())[..12].to_string(),
            files: BTreeMap::from([("shop.kefu".to_string(), text.as_bytes().to_vec())]),
            author: "test".into(),
            message: text.into(),
            parent,
            ..NewVersion::default()
        }
    }

    #[test]
    fn publish_moves_live_and_refuses_a_stale_parent() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let v1 = store.publish(new(None, "one")).unwrap();
        assert_eq!(v1.id, 1);
        let v2 = store.publish(new(Some(1), "two")).unwrap();
        assert_eq!(store.pointers().unwrap().live, Some(v2.id));
        let e = store.publish(new(Some(1), "three")).unwrap_err();
        assert!(
            matches!(
                e,
                VersionError::Conflict {
                    parent: Some(1),
                    live: 2
                }
            ),
            "{e}"
        );
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(store.files(2).unwrap()["shop.kefu"], b"two");
        assert_eq!(store.by_rules(&v1.rules).unwrap(), Some(1));
    }

    #[test]
    fn artifacts_round_trip_and_a_damaged_one_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(store.artifact_get("k").unwrap(), None);
        store.artifact_put("k", b"weights").unwrap();
        assert_eq!(store.artifact_get("k").unwrap().as_deref(), Some(&b"weights"[..]));
        let path = store.artifact_path("k");
        let mut stored = std::fs::read(&path).unwrap();
        *stored.last_mut().unwrap() ^= 1;
        std::fs::write(&path, stored).unwrap();
        assert_eq!(store.artifact_get("k").unwrap(), None);
    }
}
