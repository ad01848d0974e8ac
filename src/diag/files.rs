//! Reading the files of a rules directory, which an editor (or an attacker with an editor's
//! access) controls.
//!
//! Every file a load reads goes through [`read`]: the `.kefu` files found by walking the
//! directory, the knowledge base, and the data and word-list files a rule file names
//! (whose names are checked by [`resolve`] first). A file must be inside the rules
//! directory once symbolic links are followed, must be a regular file (a FIFO would block
//! the loader, `/dev/zero` would never end), and may hold at most [`MAX_FILE_BYTES`]. The
//! limit is enforced while reading, so a file that grows while it is read stops there.
//! A refused file is never read, so no diagnostic can quote it.
//!
//! An [`Overlay`] stands in for some files of one load with texts held in memory: an
//! editor's unsaved buffer checked as if it were saved, without writing the directory.

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

/// The most bytes one rule, data, word-list or knowledge-base file may hold (16 MiB).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why a file of the rules directory was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The rule file names an absolute path.
    #[error("an absolute path is not allowed: paths are relative to the rules directory")]
    Absolute,
    /// The rule file names a path with a `..` component.
    #[error("`..` is not allowed in a path: files must be inside the rules directory")]
    ParentDir,
    /// The path is empty.
    #[error("the path is empty")]
    Empty,
    /// Following symbolic links leads out of the rules directory.
    #[error("the path leads outside the rules directory through a symbolic link")]
    Outside,
    /// A directory, FIFO, socket or device.
    #[error("not a regular file")]
    NotRegular,
    /// Larger than [`MAX_FILE_BYTES`].
    #[error("the file is larger than {} MiB", MAX_FILE_BYTES >> 20)]
    TooLarge,
    /// The text is not UTF-8.
    #[error("the file is not UTF-8 text")]
    NotUtf8,
    /// The operating system refused.
    #[error("{}", io_reason(.0))]
    Io(#[source] std::io::Error),
}

/// The path of `name`, as written in a rule file, under `root`: relative, without `..`.
/// Whether it stays inside once symbolic links are followed is checked by [`read`].
pub fn resolve(root: &Path, name: &str) -> Result<PathBuf, FileError> {
    let path = Path::new(name);
    if name.trim().is_empty() {
        return Err(FileError::Empty);
    }
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err(FileError::Absolute),
            Component::ParentDir => return Err(FileError::ParentDir),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    Ok(root.join(path))
}

/// Reads the file at `path`, which must be a regular file inside `root` (after symbolic
/// links) of at most [`MAX_FILE_BYTES`].
pub fn read(root: &Path, path: &Path) -> Result<String, FileError> {
    // Checked before opening: opening a FIFO for reading blocks until a writer comes.
    let meta = std::fs::metadata(path).map_err(FileError::Io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular);
    }
    let real_root = std::fs::canonicalize(root).map_err(FileError::Io)?;
    let real = std::fs::canonicalize(path).map_err(FileError::Io)?;
    if !real.starts_with(&real_root) {
        return Err(FileError::Outside);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(FileError::TooLarge);
    }
    let file = std::fs::File::open(&real).map_err(FileError::Io)?;
    // The file may have been swapped between the check and the open; what counts is what
    // was opened.
    if !file.metadata().map_err(FileError::Io)?.is_file() {
        return Err(FileError::NotRegular);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(FileError::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| FileError::NotUtf8)
}

/// Texts that stand in for files of a rules directory during one load, by their path
/// relative to the directory: read instead of the file on disk, and found by the
/// directory walks even when no such file exists yet.
#[derive(Clone, Default)]
pub struct Overlay {
    files: std::collections::BTreeMap<PathBuf, String>,
}

impl std::fmt::Debug for Overlay {
    /// The paths and sizes, not the texts (up to megabytes each).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.files.iter().map(|(path, text)| (path, text.len())))
            .finish()
    }
}

impl Overlay {
    /// Lays `text` over the file at `relative` (relative to the rules directory).
    pub fn insert(&mut self, relative: impl Into<PathBuf>, text: String) {
        self.files.insert(relative.into(), text);
    }

    /// The text laid over `path` (a path under `root`), if any.
    fn get(&self, root: &Path, path: &Path) -> Option<&str> {
        let relative = path.strip_prefix(root).ok()?;
        self.files.get(relative).map(String::as_str)
    }

    /// [`read`], with the overlay's text for a path it holds (bounded by
    /// [`MAX_FILE_BYTES`] as a file is).
    pub fn read(&self, root: &Path, path: &Path) -> Result<String, FileError> {
        match self.get(root, path) {
            Some(text) if text.len() as u64 > MAX_FILE_BYTES => Err(FileError::TooLarge),
            Some(text) => Ok(text.to_string()),
            None => read(root, path),
        }
    }

    /// The overlaid files directly in `root/dir` (or anywhere under it when `recursive`)
    /// as paths under `root`, whose extension is one of `extensions`, skipping hidden
    /// names: what a walk of the directory adds to the files on disk.
    pub fn files_in<'a>(
        &'a self,
        root: &'a Path,
        dir: &'a Path,
        recursive: bool,
        extensions: &'a [&'a str],
    ) -> impl Iterator<Item = PathBuf> + 'a {
        self.files.keys().filter_map(move |relative| {
            let rest = relative.strip_prefix(dir).ok()?;
            let deep = rest.components().count() > 1;
            let hidden = relative
                .components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
            let extension = rest.extension()?.to_str()?;
            (!hidden && (recursive || !deep) && extensions.contains(&extension)).then(|| root.join(relative))
        })
    }
}

/// A short reason for an I/O error, without Rust's debug formatting.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_absolute_parent_and_empty_paths() {
        let root = Path::new("rules");
        assert!(matches!(resolve(root, "/etc/passwd"), Err(FileError::Absolute)));
        assert!(matches!(resolve(root, "../../etc/passwd"), Err(FileError::ParentDir)));
        assert!(matches!(resolve(root, "data/../../x"), Err(FileError::ParentDir)));
        assert!(matches!(resolve(root, " "), Err(FileError::Empty)));
        assert_eq!(
            resolve(root, "./data/orders.yaml").unwrap(),
            Path::new("rules/./data/orders.yaml")
        );
    }

    #[test]
    fn read_refuses_devices_directories_and_links_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("ok.txt"), "词\n").unwrap();
        assert_eq!(read(root, &root.join("ok.txt")).unwrap(), "词\n");
        assert!(matches!(read(root, Path::new("/dev/zero")), Err(FileError::NotRegular)));
        assert!(matches!(read(root, root), Err(FileError::NotRegular)));
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("secret.txt"), "secret\n").unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("secret.txt"), root.join("out.txt")).unwrap();
        assert!(matches!(read(root, &root.join("out.txt")), Err(FileError::Outside)));
        std::os::unix::fs::symlink("ok.txt", root.join("in.txt")).unwrap();
        assert_eq!(read(root, &root.join("in.txt")).unwrap(), "词\n");
    }

    #[test]
    fn an_overlay_is_read_instead_of_the_file_and_found_by_walks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("kb")).unwrap();
        std::fs::write(root.join("kb/faq.yaml"), "on disk\n").unwrap();
        let mut overlay = Overlay::default();
        overlay.insert("kb/faq.yaml", "unsaved\n".into());
        overlay.insert("kb/new.yaml", "new\n".into());
        overlay.insert("kb/deep/x.yaml", "deep\n".into());
        overlay.insert("kb/.hidden.yaml", "hidden\n".into());
        assert_eq!(overlay.read(root, &root.join("kb/faq.yaml")).unwrap(), "unsaved\n");
        assert_eq!(std::fs::read_to_string(root.join("kb/faq.yaml")).unwrap(), "on disk\n");
        let found: Vec<PathBuf> = overlay.files_in(root, Path::new("kb"), false, &["yaml"]).collect();
        assert_eq!(found, vec![root.join("kb/faq.yaml"), root.join("kb/new.yaml")]);
        assert_eq!(overlay.files_in(root, Path::new(""), true, &["yaml"]).count(), 3);
        assert!(format!("{overlay:?}").contains("8"), "sizes, not texts: {overlay:?}");
        assert!(!format!("{overlay:?}").contains("unsaved"));
    }

    #[test]
    fn read_refuses_files_over_the_limit_without_reading_them() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.txt");
        // Sparse: the length is all that is needed.
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        assert!(matches!(read(dir.path(), &big), Err(FileError::TooLarge)));
        let exact = dir.path().join("exact.txt");
        std::fs::File::create(&exact).unwrap().set_len(MAX_FILE_BYTES).unwrap();
        assert_eq!(read(dir.path(), &exact).unwrap().len() as u64, MAX_FILE_BYTES);
    }
}
