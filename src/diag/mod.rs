//! The rule files of one load and what is wrong with them: the bottom layer of the rules
//! side. The rule language (`dsl`), the knowledge base (`kb`), scripts (`script`) and the
//! compiled rule set (`ruleset`) read files and report problems through this module, and
//! it uses none of them.
//!
//! - [`files`] reads a rules directory's files, which an editor controls, safely.
//! - [`span`] has byte [`Span`]s into those files and the [`SourceMap`] that turns a span
//!   into a path, a line and a column.
//! - This file has the diagnostics that point into the rule files, rendered the way rustc
//!   does, and [`closest`], the "did you mean" of their help lines.
//!
//! Every problem found while loading a rule set (a pest syntax error, a rhai compile error
//! inside a backtick expression, a YAML error in a data file, an unknown name) becomes one
//! [`Diagnostic`] with a byte span into a file held by the [`SourceMap`]. Rendering is
//! `path:line:col: error: message` on the first line, so editors and CI can jump to it,
//! followed by the source line and a caret drawn by `annotate-snippets` (rustc's own
//! renderer), plus any help.

pub mod files;
pub mod span;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use std::fmt::{self, Write as _};

pub use span::{FileId, SourceFile, SourceMap, Span};

/// How bad a diagnostic is: errors stop a rule set from loading, warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The rule set cannot be built.
    Error,
    /// The rule set works but probably not as intended.
    Warning,
}

/// A place in a file with a short explanation drawn under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What to say there; may be empty.
    pub message: String,
}

/// The most diagnostics [`Report::render_all`] shows: one broken edit can produce
/// thousands (a line of `{x}` holes, each an unknown variable), and nobody reads past the
/// first screens.
pub const MAX_RENDERED: usize = 100;

/// One problem in the rule files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// One line, lowercase, no trailing period.
    pub message: String,
    /// The place the message is about; its start is the reported `line:col`.
    pub primary: Label,
    /// Related places, e.g. where a duplicate name was first defined.
    pub secondary: Vec<Label>,
    /// Advice shown after the snippet.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, span, message)
    }

    /// A warning at `span`.
    pub fn warning(span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, span, message)
    }

    fn new(severity: Severity, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            message: message.into(),
            primary: Label {
                span,
                message: String::new(),
            },
            secondary: Vec::new(),
            help: None,
        }
    }

    /// Sets the text drawn under the primary span.
    pub fn with_label(mut self, message: impl Into<String>) -> Self {
        self.primary.message = message.into();
        self
    }

    /// Adds a related place.
    pub fn with_secondary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    /// Adds advice.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A diagnostic with its place as line and column numbers, for JSON (the console's
/// editor): what [`Report::render`] shows, field by field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Located {
    /// `error` or `warning`.
    pub severity: &'static str,
    /// A stable tag of the kind of problem; diagnostics carry none yet, so always `None`.
    pub code: Option<&'static str>,
    /// What is wrong, as rendered.
    pub message: String,
    /// The file, relative to the rules directory, with `/` (empty for the directory).
    pub file: String,
    /// 1-based line where the primary span starts.
    pub line: usize,
    /// 1-based column (characters) where it starts.
    pub col: usize,
    /// 1-based line where it ends.
    pub end_line: usize,
    /// 1-based column (characters) just past its end.
    pub end_col: usize,
    /// The help line.
    pub help: Option<String>,
    /// The related places, each `file:line:col: label`, and the label of the primary span.
    pub notes: Vec<String>,
}

/// Everything one load reported, with the files needed to show it.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The files that were read.
    pub sources: SourceMap,
    /// Errors and warnings, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// How many errors and warnings there are.
    pub fn counts(&self) -> (usize, usize) {
        let errors = self.diagnostics.iter().filter(|d| d.is_error()).count();
        (errors, self.diagnostics.len() - errors)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// `path:line:col` of a span.
    pub fn location(&self, span: Span) -> String {
        let file = self.sources.file(span.file);
        let (line, col) = file.line_col(span.start);
        format!("{}:{line}:{col}", file.path.display())
    }

    /// Every diagnostic with its place as numbers, files relative to `root` (the
    /// directory that was loaded).
    pub fn located(&self, root: &std::path::Path) -> Vec<Located> {
        let relative = |file: FileId| {
            let path = &self.sources.file(file).path;
            path.strip_prefix(root)
                .unwrap_or(path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        };
        self.diagnostics
            .iter()
            .map(|d| {
                let span = d.primary.span;
                let file = self.sources.file(span.file);
                let (line, col) = file.line_col(span.start);
                let (end_line, end_col) = file.line_col(span.end.max(span.start));
                let mut notes = Vec::new();
                if !d.primary.message.is_empty() {
                    notes.push(d.primary.message.clone());
                }
                for label in &d.secondary {
                    let (l, c) = self.sources.file(label.span.file).line_col(label.span.start);
                    notes.push(format!("{}:{l}:{c}: {}", relative(label.span.file), label.message));
                }
                Located {
                    severity: level_name(d.severity),
                    code: None,
                    message: d.message.clone(),
                    file: relative(span.file),
                    line,
                    col,
                    end_line,
                    end_col,
                    help: d.help.clone(),
                    notes,
                }
            })
            .collect()
    }

    /// Renders one diagnostic; `color` adds ANSI styles for a terminal.
    pub fn render(&self, diagnostic: &Diagnostic, color: bool) -> String {
        let level = match diagnostic.severity {
            Severity::Error => Level::ERROR,
            Severity::Warning => Level::WARNING,
        };
        let mut out = format!(
            "{}: {}: {}\n",
            self.location(diagnostic.primary.span),
            level_name(diagnostic.severity),
            diagnostic.message
        );

        // One snippet per file, the primary file first, so that a secondary label in
        // another file (a duplicate defined elsewhere) shows with its own path.
        let primary_file = diagnostic.primary.span.file;
        let mut files = vec![primary_file];
        for label in &diagnostic.secondary {
            if !files.contains(&label.span.file) {
                files.push(label.span.file);
            }
        }
        let mut group = Group::with_level(level.clone());
        for &file_id in &files {
            let file = self.sources.file(file_id);
            let mut labels: Vec<(AnnotationKind, std::ops::Range<usize>, &str)> = Vec::new();
            if file_id == primary_file {
                let range = clamp(&file.text, diagnostic.primary.span);
                labels.push((AnnotationKind::Primary, range, &diagnostic.primary.message));
            }
            for label in diagnostic.secondary.iter().filter(|l| l.span.file == file_id) {
                labels.push((AnnotationKind::Context, clamp(&file.text, label.span), &label.message));
            }
            // Only the lines the labels are on go to the renderer, which otherwise works
            // through the whole file for every diagnostic: thousands of diagnostics in a
            // long file took minutes.
            let (first, last) = labels
                .iter()
                .fold((usize::MAX, 0), |(lo, hi), (_, r, _)| (lo.min(r.start), hi.max(r.end)));
            // The end is exclusive: a label over a line break ends on the line it breaks.
            let (line, window) = file.lines_around(first.min(last), last.saturating_sub(1).max(first));
            let mut snippet = Snippet::source(&file.text[window.clone()]).line_start(line).fold(true);
            if file_id != primary_file {
                snippet = snippet.path(file.path.to_string_lossy());
            }
            for (kind, range, message) in labels {
                let range = range.start - window.start..range.end - window.start;
                snippet = snippet.annotation(kind.span(range).label(non_empty(message)));
            }
            group = group.element(snippet);
        }
        if let Some(help) = &diagnostic.help {
            group = group.element(Level::HELP.message(help.as_str()));
        }
        let renderer = if color { Renderer::styled() } else { Renderer::plain() };
        let _ = writeln!(out, "{}", renderer.render(&[group]));
        out
    }

    /// Renders the diagnostics followed by a summary line, or nothing when clean. At most
    /// [`MAX_RENDERED`] are shown, errors before warnings, in file order; the summary
    /// still counts them all.
    pub fn render_all(&self, color: bool) -> String {
        let mut out = String::new();
        let mut errors_left = self.errors().count().min(MAX_RENDERED);
        let mut warnings_left = MAX_RENDERED - errors_left;
        let mut shown = 0;
        for d in &self.diagnostics {
            let left = if d.is_error() {
                &mut errors_left
            } else {
                &mut warnings_left
            };
            if *left == 0 {
                continue;
            }
            *left -= 1;
            shown += 1;
            out.push_str(&self.render(d, color));
            out.push('\n');
        }
        if shown < self.diagnostics.len() {
            let _ = writeln!(out, "{} more not shown", self.diagnostics.len() - shown);
        }
        let (errors, warnings) = self.counts();
        if errors + warnings > 0 {
            let _ = writeln!(
                out,
                "{}, {}",
                plural(errors, "error", "errors"),
                plural(warnings, "warning", "warnings")
            );
        }
        out
    }

    /// Sorts diagnostics by file, then position, errors before warnings at one place.
    pub fn sort(&mut self) {
        self.diagnostics
            .sort_by_key(|d| (d.primary.span.file, d.primary.span.start, d.severity, d.message.clone()));
        self.diagnostics.dedup();
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_all(false))
    }
}

fn level_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A span annotate-snippets can draw: inside the text, on char boundaries, and at least
/// one character wide so an error at the end of a line still gets a caret.
fn clamp(text: &str, span: Span) -> std::ops::Range<usize> {
    let floor = |mut i: usize| {
        i = i.min(text.len());
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = floor(span.start);
    let mut end = floor(span.end.max(start));
    if end == start {
        end = text[start..]
            .chars()
            .next()
            .map_or(start, |c| if c == '\n' { start } else { start + c.len_utf8() });
    }
    start..end
}

/// The candidate closest to `name` by edit distance, when it is close enough to be a typo:
/// the "did you mean" of a diagnostic's help.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .filter(|c| *c != name)
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_all_shows_errors_first_within_the_limit() {
        let mut sources = SourceMap::default();
        let id = sources.add("rules/a.kefu", "甲\n乙\n".into());
        let mut diagnostics: Vec<Diagnostic> = (0..MAX_RENDERED + 50)
            .map(|n| Diagnostic::warning(Span::new(id, 0, 3), format!("warning {n}")))
            .collect();
        diagnostics.push(Diagnostic::error(Span::new(id, 4, 7), "the error"));
        let text = Report { sources, diagnostics }.render_all(false);
        assert!(text.contains("rules/a.kefu:2:1: error: the error"), "{text}");
        assert_eq!(text.matches(": warning: ").count(), MAX_RENDERED - 1);
        assert!(text.ends_with("51 more not shown\n1 error, 150 warnings\n"), "{text}");
    }

    #[test]
    fn renders_path_line_col_header_and_caret() {
        let mut sources = SourceMap::default();
        let id = sources.add("rules/a.kefu", "rule 甲 {\n  on 售后.退款\n}\n".into());
        let start = sources.file(id).text.find("售后").unwrap();
        let d = Diagnostic::error(
            Span::new(id, start, start + "售后.退款".len()),
            "unknown intent `售后.退款`",
        )
        .with_label("not declared")
        .with_help("did you mean `售后.退货`?");
        let report = Report {
            sources,
            diagnostics: vec![d],
        };
        let text = report.render_all(false);
        assert!(
            text.starts_with("rules/a.kefu:2:6: error: unknown intent `售后.退款`\n"),
            "{text}"
        );
        assert!(text.contains("2 |   on 售后.退款"), "{text}");
        assert!(text.contains("^^^^^^^^^ not declared"), "{text}");
        assert!(text.contains("help: did you mean"), "{text}");
        assert!(text.ends_with("1 error, 0 warnings\n"), "{text}");
    }

    #[test]
    fn closest_suggests_only_near_names() {
        let names = ["order_id", "color", "size"];
        assert_eq!(closest("ordr_id", names.iter().copied()), Some("order_id"));
        assert_eq!(closest("address", names.iter().copied()), None);
    }
}
