//! The rule language: from a directory of `.kefu` files to a [`RuleSet`].
//!
//! `parse` turns text into a syntax tree (`ast`) and never fails; `lower` resolves,
//! compiles and checks it, collecting every problem as a [`Diagnostic`]; [`load_dir`]
//! runs both over a whole directory and returns the rule set only when there are no
//! errors. This is the one way a `RuleSet` is made, so `kefu check`, hot reload and the
//! tests all see the same diagnostics.

pub mod ast;
pub mod lower;
pub mod parse;

use std::path::{Path, PathBuf};

use crate::RuleSet;
use crate::diag::{Diagnostic, Report, Span, files};

/// The outcome of loading a rules directory.
#[derive(Debug)]
pub struct Compiled {
    /// The rule set, when there were no errors.
    pub rules: Option<RuleSet>,
    /// Every error and warning, with the files needed to render them.
    pub report: Report,
}

/// How [`load_dir_with`] builds a rule set; the default is what [`load_dir`] does.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Train the intent classifier in a fraction of the time: one penalty, no
    /// cross-validation or calibration, few iterations, no built-in out-of-scope corpus.
    /// The rule set works but understands worse; for tests of loading itself (the rule-file
    /// fuzzer), where the full training would be nearly all the time spent.
    pub quick_training: bool,
}

/// Reads every `.kefu` file under `dir` (recursively, in path order) and builds the rule
/// set. Warnings do not stop the build; any error does.
pub fn load_dir(dir: &Path) -> Compiled {
    load_dir_with(dir, LoadOptions::default())
}

/// [`load_dir`] with options.
pub fn load_dir_with(dir: &Path, options: LoadOptions) -> Compiled {
    let mut report = Report::default();
    let paths = match kefu_files(dir) {
        Ok(paths) if paths.is_empty() => {
            return fail(report, dir, "no `.kefu` files in the rules directory".into());
        }
        Ok(paths) => paths,
        Err(e) => return fail(report, dir, format!("cannot read the rules directory: {e}")),
    };

    let mut parsed = Vec::new();
    for path in paths {
        match files::read(dir, &path) {
            Ok(text) => {
                let id = report.sources.add(path, text);
                let (items, diagnostics) = parse::parse_file(id, &report.sources.file(id).text);
                report.diagnostics.extend(diagnostics);
                parsed.push((id, items));
            }
            Err(e) => {
                let id = report.sources.add(path, String::new());
                report.diagnostics.push(Diagnostic::error(
                    Span::new(id, 0, 0),
                    format!("cannot read this file: {e}"),
                ));
            }
        }
    }
    let rules = lower::lower(dir, parsed, 0, options, &mut report.sources, &mut report.diagnostics);
    report.sort();
    let rules = if report.has_errors() { None } else { rules };
    Compiled { rules, report }
}

/// A report with one error about the directory itself.
fn fail(mut report: Report, dir: &Path, message: String) -> Compiled {
    let id = report.sources.add(dir.to_path_buf(), String::new());
    report.diagnostics.push(Diagnostic::error(Span::new(id, 0, 0), message));
    Compiled { rules: None, report }
}

/// Every `.kefu` file under `dir`, sorted, skipping hidden directories.
fn kefu_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if entry.file_type()?.is_dir() {
                if !hidden {
                    stack.push(path);
                }
            } else if !hidden && path.extension().is_some_and(|e| e == "kefu") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
