//! Build script: records the commit kefu is built from as `KEFU_COMMIT`, served by
//! `/metrics` as `kefu_build_info{commit}`.
//!
//! The commit is `KEFU_COMMIT` from the environment when set (packaging from a source
//! tarball, reproducible builds), else `git rev-parse --short=12 HEAD` (edits not yet
//! committed are not shown), else `unknown` (no git). The script runs
//! again when HEAD moves (the reflog of HEAD changes with every commit, checkout and reset)
//! or when `KEFU_COMMIT` changes; run by cargo, no knobs besides `KEFU_COMMIT`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string()).filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=KEFU_COMMIT");
    let commit = match std::env::var("KEFU_COMMIT") {
        Ok(commit) if !commit.is_empty() => commit,
        _ => {
            // In a worktree these are the worktree's own HEAD and reflog.
            for path in ["HEAD", "logs/HEAD"] {
                if let Some(file) = git(&["rev-parse", "--git-path", path]) {
                    println!("cargo:rerun-if-changed={file}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=KEFU_COMMIT={commit}");
}
