//! Byte spans into the files of one load, and the [`SourceMap`] that holds those files so
//! that a span can be shown as `path:line:col` with its source line.

use std::path::{Path, PathBuf};

/// Index of a file in a [`SourceMap`].
pub type FileId = usize;

/// A byte range in one file of a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// The file the range is in.
    pub file: FileId,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span over `start..end` of `file`.
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        Span { file, start, end }
    }

    /// The smallest span that covers both.
    pub fn to(self, other: Span) -> Span {
        debug_assert_eq!(self.file, other.file);
        Span::new(self.file, self.start.min(other.start), self.end.max(other.end))
    }
}

/// One file whose text diagnostics may point into.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path as shown to the user (relative to where `kefu` was pointed when possible).
    pub path: PathBuf,
    /// The whole text.
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    fn new(path: PathBuf, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path,
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    /// The 1-based number of the line `start` is on, and the byte range of the whole
    /// lines from there to the one `end` is on (with its line break).
    pub(super) fn lines_around(&self, start: usize, end: usize) -> (usize, std::ops::Range<usize>) {
        // The end of a file that ends with a line break is shown on its last line, as the
        // renderer does when it is given the whole file.
        let start = if start >= self.text.len() && self.text.ends_with('\n') {
            self.text.len() - 1
        } else {
            start.min(self.text.len())
        };
        let line = self.line_starts.partition_point(|&s| s <= start) - 1;
        let from = self.line_starts[line];
        let mut end = end.clamp(from, self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let to = self.text[end..].find('\n').map_or(self.text.len(), |i| end + i + 1);
        (line + 1, from..to)
    }

    /// Byte offset of a 1-based line and character column; clamps to the file.
    pub fn offset_of(&self, line: usize, col: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let rest = &self.text[start..];
        let line_len = rest.find('\n').unwrap_or(rest.len());
        rest[..line_len]
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(start + line_len, |(i, _)| start + i)
    }
}

/// The files of one load, so that spans can be turned into paths, lines and snippets.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// Adds a file and returns its id.
    pub fn add(&mut self, path: impl Into<PathBuf>, text: String) -> FileId {
        self.files.push(SourceFile::new(path.into(), text));
        self.files.len() - 1
    }

    /// The file with this id.
    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id]
    }

    /// All files, in the order they were added.
    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// The id of the file at `path`, if it was added.
    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.files.iter().position(|f| f.path == path)
    }

    /// The span of the character at byte `offset` of a file: empty at the end of the file,
    /// and never inside a character, whatever offset a parser reported.
    pub fn char_span(&self, file: FileId, offset: usize) -> Span {
        let text = &self.files[file].text;
        let mut start = offset.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let end = text[start..].chars().next().map_or(start, |c| start + c.len_utf8());
        Span::new(file, start, end)
    }

    /// The text a span covers.
    pub fn text(&self, span: Span) -> &str {
        &self.files[span.file].text[span.start..span.end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let f = SourceFile::new("a.kefu".into(), "规则 一\n  规则 x\n".into());
        let x = f.text.find('x').unwrap();
        assert_eq!(f.line_col(x), (2, 6));
        assert_eq!(f.offset_of(2, 6), x);
        assert_eq!(f.line_col(0), (1, 1));
    }
}
