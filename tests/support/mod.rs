//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod http;
pub mod redis;

/// The crate root; integration tests run there, so paths in reports stay relative.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the directory `from` into `to` (created), recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every subdirectory of `dir`, sorted.
pub fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Loads a rules directory and renders its report without colour.
pub fn check(dir: &Path) -> (kefu::dsl::Compiled, String) {
    let compiled = kefu::dsl::load_dir(dir);
    let rendered = compiled.report.render_all(false);
    (compiled, rendered)
}

/// Sessions in memory whose reads or writes fail while told to, as Redis's do while it is
/// stopped (after the Redis store's retries): for tests of what a failing store does to a
/// turn without a redis-server.
#[derive(Default)]
pub struct FlakyStore {
    /// The sessions, as they stand.
    pub inner: kefu::store::MemoryStore,
    reads_fail: std::sync::atomic::AtomicBool,
    writes_fail: std::sync::atomic::AtomicBool,
    replies_lost: std::sync::atomic::AtomicBool,
}

impl FlakyStore {
    /// Reads (and updates, which read) fail from now on, or no longer.
    pub fn fail_reads(&self, fail: bool) {
        self.reads_fail.store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// Writes fail from now on, or no longer.
    pub fn fail_writes(&self, fail: bool) {
        self.writes_fail.store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// Writes are carried out but reported as failed from now on, or no longer: a Redis
    /// that wrote and went away before its reply came.
    pub fn lose_replies(&self, lose: bool) {
        self.replies_lost.store(lose, std::sync::atomic::Ordering::SeqCst);
    }

    fn down(&self, flag: &std::sync::atomic::AtomicBool) -> Result<(), kefu::store::StoreError> {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(kefu::store::StoreError(
                "redis at redis://:***@127.0.0.1:1/0: timed out".into(),
            ));
        }
        Ok(())
    }
}

impl kefu::store::SessionStore for FlakyStore {
    fn get(&self, id: &str) -> Result<Option<kefu::dialogue::Session>, kefu::store::StoreError> {
        self.down(&self.reads_fail)?;
        self.inner.get(id)
    }

    fn update(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut Option<kefu::dialogue::Session>) -> kefu::store::Write,
    ) -> Result<Option<kefu::dialogue::Session>, kefu::store::StoreError> {
        self.down(&self.reads_fail)?;
        self.down(&self.writes_fail)?;
        self.inner.update(id, change)
    }

    fn store_if_unchanged(
        &self,
        session: kefu::dialogue::Session,
    ) -> Result<kefu::store::Unchanged, kefu::store::StoreError> {
        self.down(&self.writes_fail)?;
        let stored = self.inner.store_if_unchanged(session)?;
        self.down(&self.replies_lost)?;
        Ok(stored)
    }

    fn remove(&self, id: &str) {
        self.inner.remove(id);
    }
}
