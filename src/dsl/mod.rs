//! The rule language: from a directory of `.kefu` files to a [`RuleSet`].
//!
//! `parse` turns text into a syntax tree (`ast`) and never fails; `lower` resolves,
//! compiles and checks it, collecting every problem as a [`Diagnostic`]; [`load_dir`]
//! runs both over a whole directory and returns the rule set only when there are no
//! errors. This is the one way a `RuleSet` is made, so `kefu check`, hot reload and the
//! tests all see the same diagnostics. [`check_dir`] runs the same steps up to the
//! diagnostics and stops before training, for `kefu check` and as-you-type checks: its
//! report is the one `load_dir` would give. [`check_dir_with`] checks with unsaved texts
//! laid over some files (an [`Overlay`]), and lists where each name is declared
//! ([`symbols`]), for the console's editor.
//!
//! The intent classifier is trained only when what it learns from changed: a build
//! reuses the model trained from the same inputs before, from the process's memory or a
//! persistent [`TrainedCache`] given in [`LoadOptions`] (`nlu::cache`).

pub mod ast;
pub mod lower;
pub mod parse;
pub mod symbols;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::RuleSet;
use crate::diag::files::Overlay;
use crate::diag::{Diagnostic, Report, Span};
use lower::{Goal, Lowered};
use symbols::Symbols;

pub use crate::nlu::cache::TrainedCache;

/// The outcome of loading a rules directory.
#[derive(Debug)]
pub struct Compiled {
    /// The rule set, when there were no errors.
    pub rules: Option<RuleSet>,
    /// Every error and warning, with the files needed to render them.
    pub report: Report,
}

/// What [`check_dir`] finds: the diagnostics, and what the rules hold when they build.
#[derive(Debug)]
pub struct Checked {
    /// Every error and warning, exactly as [`load_dir`] reports them.
    pub report: Report,
    /// The rules' version and counts, when there were no errors.
    pub summary: Option<Summary>,
    /// Where each name is declared, from the files as parsed (also when there are errors).
    pub symbols: Symbols,
}

impl Checked {
    /// Exactly what `kefu check DIR` prints: the diagnostics, then `DIR: ok, SUMMARY`
    /// when the rules build.
    pub fn render(&self, dir: &Path, color: bool) -> String {
        let mut out = self.report.render_all(color);
        if let Some(summary) = &self.summary {
            out.push_str(&format!("{}: ok, {summary}\n", dir.display()));
        }
        out
    }
}

/// A rules directory in one line: its version and how much it holds (`kefu check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The content hash ([`RuleSet::version`]).
    pub version: String,
    /// Declared intents.
    pub intents: usize,
    /// Rules.
    pub rules: usize,
    /// Promotions.
    pub promotions: usize,
    /// Flows.
    pub flows: usize,
    /// Keywords in the trigger index.
    pub keywords: usize,
    /// Knowledge-base products.
    pub products: usize,
    /// Knowledge-base FAQ entries.
    pub faqs: usize,
}

impl Summary {
    /// The summary of a built rule set.
    pub fn of(rules: &RuleSet) -> Summary {
        Summary {
            version: rules.version.clone(),
            intents: rules.intents.len(),
            rules: rules.rules.len(),
            promotions: rules.promotions.len(),
            flows: rules.flows.len(),
            keywords: rules.triggers.keyword_count(),
            products: rules.kb.products.len(),
            faqs: rules.kb.faqs.len(),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "version {} ({} intents, {} rules, {} promotions, {} flows, {} keywords, {} products, {} FAQ entries)",
            self.version,
            self.intents,
            self.rules,
            self.promotions,
            self.flows,
            self.keywords,
            self.products,
            self.faqs
        )
    }
}

/// How [`load_dir_with`] builds a rule set; the default is what [`load_dir`] does.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// Train the intent classifier in a fraction of the time: one penalty, no
    /// cross-validation or calibration, few iterations, no built-in out-of-scope corpus.
    /// The rule set works but understands worse; for tests of loading itself (the rule-file
    /// fuzzer), where the full training would be nearly all the time spent.
    pub quick_training: bool,
    /// A persistent second level for trained classifiers, behind the process's memory:
    /// looked in before training, given what was trained (`nlu::cache`).
    pub trained_cache: Option<Arc<dyn TrainedCache>>,
    /// Texts read instead of some files of the directory (an editor's unsaved buffer),
    /// the directory itself left as it is.
    pub overlay: Overlay,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("quick_training", &self.quick_training)
            .field("trained_cache", &self.trained_cache.is_some())
            .field("overlay", &self.overlay)
            .finish()
    }
}

/// Reads every `.kefu` file under `dir` (recursively, in path order) and builds the rule
/// set. Warnings do not stop the build; any error does.
pub fn load_dir(dir: &Path) -> Compiled {
    load_dir_with(dir, LoadOptions::default())
}

/// [`load_dir`] with options.
pub fn load_dir_with(dir: &Path, options: LoadOptions) -> Compiled {
    let (report, lowered, _) = run(dir, options, Goal::Build);
    let rules = match lowered {
        Some(Lowered::Rules(rules)) => Some(*rules),
        _ => None,
    };
    Compiled { rules, report }
}

/// Reads and checks a rules directory as [`load_dir`] does, without building the rule
/// set (no classifier, no script engine): the same report, rendered the same, in a
/// fraction of the time.
pub fn check_dir(dir: &Path) -> Checked {
    check_dir_with(dir, &Overlay::default())
}

/// [`check_dir`] with the texts of `overlay` read instead of the files they lay over (new
/// files included), the directory left as it is: the diagnostics the directory would
/// give with those texts saved.
pub fn check_dir_with(dir: &Path, overlay: &Overlay) -> Checked {
    let options = LoadOptions {
        overlay: overlay.clone(),
        ..LoadOptions::default()
    };
    let (report, lowered, symbols) = run(dir, options, Goal::Check);
    let summary = match lowered {
        Some(Lowered::Checked(summary)) => Some(summary),
        _ => None,
    };
    Checked {
        report,
        summary,
        symbols,
    }
}

/// Reads, parses and lowers every `.kefu` file under `dir` (with `overlay`'s texts)
/// towards `goal`; for a check, also the declared names.
fn run(dir: &Path, options: LoadOptions, goal: Goal) -> (Report, Option<Lowered>, Symbols) {
    let mut report = Report::default();
    let overlay = &options.overlay;
    let paths = kefu_files(dir).map(|mut paths| {
        paths.extend(overlay.files_in(dir, Path::new(""), true, &["kefu"]));
        paths.sort();
        paths.dedup();
        paths
    });
    let paths = match paths {
        Ok(paths) if paths.is_empty() => {
            return (
                fail(report, dir, "no `.kefu` files in the rules directory".into()),
                None,
                Symbols::default(),
            );
        }
        Ok(paths) => paths,
        Err(e) => {
            return (
                fail(report, dir, format!("cannot read the rules directory: {e}")),
                None,
                Symbols::default(),
            );
        }
    };

    let mut parsed = Vec::new();
    for path in paths {
        match overlay.read(dir, &path) {
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
    let symbols = match goal {
        Goal::Check => Symbols::of(dir, &report.sources, &parsed),
        Goal::Build => Symbols::default(),
    };
    let lowered = lower::lower(
        dir,
        parsed,
        0,
        options,
        goal,
        &mut report.sources,
        &mut report.diagnostics,
    );
    report.sort();
    let lowered = if report.has_errors() { None } else { lowered };
    (report, lowered, symbols)
}

/// A report with one error about the directory itself.
fn fail(mut report: Report, dir: &Path, message: String) -> Report {
    let id = report.sources.add(dir.to_path_buf(), String::new());
    report.diagnostics.push(Diagnostic::error(Span::new(id, 0, 0), message));
    report
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
