//! [`ImageStore`]: cleaned images on disk, by id, for a configured time.
//!
//! Layout under the store's directory (`STATE_DIR/images/` or `--image-dir`): one folder
//! per id's first two hex digits, and in it `img_<32 hex>.<jpeg|png>` (the bytes) and
//! `img_<32 hex>.json` (an [`ImageMeta`]: the conversation, type, size, time, and the
//! vision model's description once there is one). Ids are random (128 bits from the OS);
//! a path is only ever made from an id that [`is_image_id`] accepted, never from anything
//! a client named. Files are written to a temporary name and renamed, so a reader sees a
//! whole file or none; folders are 0700 and files 0600.
//!
//! **Bounds.** Each conversation may store [`StoreConfig::per_day`] images a day (counted
//! in memory per UTC day, so a restart forgets today's count: the bound is against a
//! client filling the disk, not an exact quota); [`ImageStore::sweep`] removes what is
//! older than [`StoreConfig::retention`] (the service runs it hourly).
//!
//! Several nodes behind one address share images only when `--image-dir` is a shared
//! folder; otherwise an upload's id is known to the node that took it.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Cleaned, ImageRef, Kind, MediaError};

/// Where and how long images are kept.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The directory (made when missing).
    pub dir: PathBuf,
    /// How long an image is kept after it was stored.
    pub retention: Duration,
    /// The most images one conversation may store in a (UTC) day.
    pub per_day: u32,
}

/// The default of [`StoreConfig::retention`]: 30 days.
pub const RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// The default of [`StoreConfig::per_day`].
pub const PER_DAY: u32 = 20;

impl StoreConfig {
    /// Defaults for `dir`: 30 days, 20 images a conversation a day.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            retention: RETENTION,
            per_day: PER_DAY,
        }
    }
}

/// What the store knows of an image besides its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    /// The conversation it was sent in (an id names an image only there).
    pub session: String,
    /// The stored type's name (`jpeg`, `png`).
    pub kind: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Stored size in bytes.
    pub bytes: u64,
    /// When it was stored, Unix milliseconds.
    pub created: i64,
    /// What a vision model saw in it (masked), once one answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ImageMeta {
    /// The reference a message carries.
    pub fn to_ref(&self, id: &str) -> ImageRef {
        ImageRef {
            id: id.to_string(),
            kind: self.kind.clone(),
            width: self.width,
            height: self.height,
            bytes: self.bytes,
            description: self.description.clone(),
        }
    }
}

/// Whether `id` is an image id: `img_` and 32 lowercase hex digits.
pub fn is_image_id(id: &str) -> bool {
    id.strip_prefix("img_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The images on disk (see the module's doc).
pub struct ImageStore {
    config: StoreConfig,
    /// The UTC day (days since 1970) and each conversation's images stored that day.
    today: Mutex<(i64, HashMap<String, u32>)>,
}

impl ImageStore {
    /// Opens (makes) the store's directory.
    pub fn open(config: StoreConfig) -> std::io::Result<Self> {
        make_private_dir(&config.dir)?;
        Ok(ImageStore {
            config,
            today: Mutex::new((0, HashMap::new())),
        })
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Stores a cleaned image for conversation `session` at `now` (Unix ms): its id and
    /// reference, or [`MediaError::TooManyToday`] past the day's bound.
    pub fn put(&self, session: &str, image: &Cleaned, now: i64) -> Result<ImageRef, MediaError> {
        self.count(session, now)?;
        let stored = self.write(session, image, now);
        if stored.is_err() {
            self.uncount(session);
        }
        stored
    }

    fn write(&self, session: &str, image: &Cleaned, now: i64) -> Result<ImageRef, MediaError> {
        let id = new_id()?;
        let meta = ImageMeta {
            session: session.to_string(),
            kind: image.kind.name().to_string(),
            width: image.width,
            height: image.height,
            bytes: image.bytes.len() as u64,
            created: now,
            description: None,
        };
        let folder = self.folder(&id);
        make_private_dir(&folder)?;
        // The bytes first: a sidecar always names a whole image.
        write_atomically(&folder, &format!("{id}.{}", meta.kind), &image.bytes)?;
        let json = serde_json::to_vec(&meta).expect("metadata serializes");
        write_atomically(&folder, &format!("{id}.json"), &json)?;
        Ok(meta.to_ref(&id))
    }

    /// Counts one more image of `session` today, or refuses it.
    fn count(&self, session: &str, now: i64) -> Result<(), MediaError> {
        let day = now.div_euclid(86_400_000);
        let mut today = self.today.lock().unwrap_or_else(|e| e.into_inner());
        if today.0 != day {
            // Yesterday's counts are dropped whole: the map holds one day's senders.
            *today = (day, HashMap::new());
        }
        let count = today.1.entry(session.to_string()).or_default();
        if *count >= self.config.per_day {
            return Err(MediaError::TooManyToday {
                limit: self.config.per_day,
            });
        }
        *count += 1;
        Ok(())
    }

    fn uncount(&self, session: &str) {
        let mut today = self.today.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = today.1.get_mut(session) {
            *count = count.saturating_sub(1);
        }
    }

    fn folder(&self, id: &str) -> PathBuf {
        self.config.dir.join(&id[4..6])
    }

    /// The metadata of image `id`; `None` for an id that is malformed or not stored.
    pub fn meta(&self, id: &str) -> std::io::Result<Option<ImageMeta>> {
        if !is_image_id(id) {
            return Ok(None);
        }
        let path = self.folder(id).join(format!("{id}.json"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
    }

    /// Image `id`'s metadata and bytes; `None` when it is not stored (or was swept).
    pub fn read(&self, id: &str) -> std::io::Result<Option<(ImageMeta, Vec<u8>)>> {
        let Some(meta) = self.meta(id)? else {
            return Ok(None);
        };
        if Kind::from_name(&meta.kind).is_none() {
            return Ok(None);
        }
        match std::fs::read(self.folder(id).join(format!("{id}.{}", meta.kind))) {
            Ok(bytes) => Ok(Some((meta, bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes image `id` of conversation `session` that was just stored (the rest of its
    /// message was refused): its files, and its place in today's count.
    pub fn remove(&self, session: &str, id: &str) {
        if !is_image_id(id) {
            return;
        }
        let folder = self.folder(id);
        for ext in ["jpeg", "png", "json"] {
            let _ = std::fs::remove_file(folder.join(format!("{id}.{ext}")));
        }
        self.uncount(session);
    }

    /// Keeps a vision model's description with image `id` (so a message naming the id
    /// again does not ask again).
    pub fn describe(&self, id: &str, description: &str) -> std::io::Result<()> {
        let Some(mut meta) = self.meta(id)? else {
            return Ok(());
        };
        meta.description = Some(description.to_string());
        let json = serde_json::to_vec(&meta).expect("metadata serializes");
        write_atomically(&self.folder(id), &format!("{id}.json"), &json)
    }

    /// Removes the images stored more than the retention before `now`, and leftovers of
    /// writes that never finished; how many images went.
    pub fn sweep(&self, now: SystemTime) -> std::io::Result<usize> {
        let Some(cutoff) = now.checked_sub(self.config.retention) else {
            return Ok(0);
        };
        let cutoff_ms = cutoff
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let stale_temp = now.checked_sub(Duration::from_secs(3600)).unwrap_or(UNIX_EPOCH);
        let mut removed = 0;
        for folder in std::fs::read_dir(&self.config.dir)? {
            let folder = folder?;
            if !folder.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(folder.path())? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(UNIX_EPOCH);
                if name.starts_with(".tmp-") {
                    if modified < stale_temp {
                        let _ = std::fs::remove_file(entry.path());
                    }
                    continue;
                }
                let Some(id) = name.strip_suffix(".json").filter(|id| is_image_id(id)) else {
                    // An image whose sidecar is gone (a crash between the two writes,
                    // or a sweep cut short) goes by its own age.
                    let id = name.split('.').next().unwrap_or("");
                    if is_image_id(id) && modified < cutoff && !folder.path().join(format!("{id}.json")).exists() {
                        let _ = std::fs::remove_file(entry.path());
                    }
                    continue;
                };
                let created = match self.meta(id) {
                    Ok(Some(meta)) => meta.created,
                    // Unreadable metadata: its file's age decides.
                    _ => modified
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                };
                if created < cutoff_ms {
                    for ext in ["jpeg", "png", "webp", "gif"] {
                        let _ = std::fs::remove_file(folder.path().join(format!("{id}.{ext}")));
                    }
                    std::fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// A fresh id: `img_` and 128 random bits as hex.
fn new_id() -> std::io::Result<String> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut id = String::with_capacity(36);
    id.push_str("img_");
    for byte in random {
        id.push_str(&format!("{byte:02x}"));
    }
    Ok(id)
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Writes `bytes` to `folder/name` through a temporary file and a rename.
fn write_atomically(folder: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let temp = folder.join(format!(".tmp-{name}"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&temp, folder.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleaned() -> Cleaned {
        Cleaned {
            kind: Kind::Png,
            width: 1,
            height: 1,
            bytes: b"\x89PNG\r\n\x1a\nfake".to_vec(),
        }
    }

    #[test]
    fn ids_are_checked_before_they_name_a_path() {
        assert!(is_image_id("img_0123456789abcdef0123456789abcdef"));
        assert!(!is_image_id("img_0123456789ABCDEF0123456789abcdef"));
        assert!(!is_image_id("img_../../etc/passwd"));
        assert!(!is_image_id("img_0123"));
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(store.meta("img_../../../etc/passwd").unwrap(), None);
        assert_eq!(store.read("img_0123456789abcdef0123456789abcdef").unwrap(), None);
    }

    #[test]
    fn a_conversation_stores_its_daily_bound_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(StoreConfig {
            per_day: 2,
            ..StoreConfig::new(dir.path())
        })
        .unwrap();
        let day = 86_400_000 * 20_000;
        let first = store.put("a", &cleaned(), day).unwrap();
        store.put("a", &cleaned(), day + 1).unwrap();
        assert_eq!(
            store.put("a", &cleaned(), day + 2).unwrap_err().code(),
            "too_many_images_today"
        );
        store.put("b", &cleaned(), day + 3).unwrap();
        // The next day counts afresh.
        store.put("a", &cleaned(), day + 86_400_000).unwrap();
        let (meta, bytes) = store.read(&first.id).unwrap().unwrap();
        assert_eq!((meta.session.as_str(), bytes), ("a", cleaned().bytes));
        store.describe(&first.id, "一只鞋").unwrap();
        assert_eq!(
            store
                .meta(&first.id)
                .unwrap()
                .unwrap()
                .to_ref(&first.id)
                .description
                .as_deref(),
            Some("一只鞋")
        );
    }
}
