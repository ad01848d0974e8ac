//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod http;

/// The crate root; integration tests run there, so paths in reports stay relative.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
