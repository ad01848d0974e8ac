//! `kefu diff`: what changed between two versions' files (or a version and a draft
//! directory): files added, removed and changed, each changed text file as unified hunks
//! (the `similar` crate, three lines of context), in colour when asked.

use std::collections::BTreeMap;

use similar::TextDiff;

/// How one file differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileChange {
    /// Only in the second.
    Added(String),
    /// Only in the first.
    Removed(String),
    /// In both, with different bytes.
    Changed(String),
}

impl FileChange {
    /// The file's path.
    pub fn path(&self) -> &str {
        match self {
            FileChange::Added(p) | FileChange::Removed(p) | FileChange::Changed(p) => p,
        }
    }
}

/// The files that differ between `a` and `b`, in path order.
pub fn changes(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) -> Vec<FileChange> {
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|path| match (a.get(path), b.get(path)) {
            (Some(x), Some(y)) if x != y => Some(FileChange::Changed(path.clone())),
            (Some(_), None) => Some(FileChange::Removed(path.clone())),
            (None, Some(_)) => Some(FileChange::Added(path.clone())),
            _ => None,
        })
        .collect()
}

/// The whole diff as text: a summary line per file (`added`, `removed`, `changed`), then
/// each file's unified diff with `a_name/PATH` and `b_name/PATH` headers (an added or
/// removed file against nothing; a file that is not UTF-8 as `binary files differ`).
/// Empty when nothing differs. `color` adds ANSI colours (red removed, green added, cyan
/// hunk headers, bold file headers).
pub fn render(
    a_name: &str,
    a: &BTreeMap<String, Vec<u8>>,
    b_name: &str,
    b: &BTreeMap<String, Vec<u8>>,
    color: bool,
) -> String {
    let changes = changes(a, b);
    let mut out = String::new();
    for change in &changes {
        let kind = match change {
            FileChange::Added(_) => "added",
            FileChange::Removed(_) => "removed",
            FileChange::Changed(_) => "changed",
        };
        out.push_str(&format!("{kind:<8} {}\n", change.path()));
    }
    for change in &changes {
        let path = change.path();
        let empty = Vec::new();
        let old = a.get(path).unwrap_or(&empty);
        let new = b.get(path).unwrap_or(&empty);
        let old_header = if a.contains_key(path) {
            format!("{a_name}/{path}")
        } else {
            "/dev/null".into()
        };
        let new_header = if b.contains_key(path) {
            format!("{b_name}/{path}")
        } else {
            "/dev/null".into()
        };
        out.push('\n');
        let (Ok(old), Ok(new)) = (std::str::from_utf8(old), std::str::from_utf8(new)) else {
            out.push_str(&paint(
                &format!("binary files {old_header} and {new_header} differ\n"),
                color,
            ));
            continue;
        };
        let text = unified(&old_header, old, &new_header, new);
        out.push_str(&paint(&text, color));
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// One text's unified diff (three lines of context) from `old` to `new` under the headers
/// `--- old_name` and `+++ new_name`; empty when the texts are equal. The hunks of
/// [`render`], and of a refused draft edit (the sent text against the file as it is now).
pub fn unified(old_name: &str, old: &str, new_name: &str, new: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

/// Colours a unified diff's lines when `color` is set.
fn paint(text: &str, color: bool) -> String {
    if !color {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.split_inclusive('\n') {
        let (body, newline) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
        let code = if body.starts_with("+++") || body.starts_with("---") || body.starts_with("binary") {
            "1"
        } else if body.starts_with('+') {
            "32"
        } else if body.starts_with('-') {
            "31"
        } else if body.starts_with("@@") {
            "36"
        } else {
            ""
        };
        if code.is_empty() {
            out.push_str(line);
        } else {
            out.push_str(&format!("\x1b[{code}m{body}\x1b[0m{newline}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn added_removed_and_changed_files() {
        let a = files(&[("a.kefu", "x\ny\n"), ("gone.txt", "1\n")]);
        let b = files(&[("a.kefu", "x\nz\n"), ("new.txt", "2\n")]);
        assert_eq!(
            changes(&a, &b),
            vec![
                FileChange::Changed("a.kefu".into()),
                FileChange::Removed("gone.txt".into()),
                FileChange::Added("new.txt".into())
            ]
        );
        let text = render("1", &a, "2", &b, false);
        assert!(text.contains("-y\n+z\n"), "{text}");
        assert!(text.contains("--- 1/gone.txt\n+++ /dev/null"), "{text}");
        assert!(render("1", &a, "1", &a, false).is_empty());
        assert!(render("1", &a, "2", &b, true).contains("\x1b[32m+z\x1b[0m"));
    }
}
