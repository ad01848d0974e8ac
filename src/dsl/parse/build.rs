//! The walk from pest's pairs to the syntax tree, and the pieces every item is made of:
//! names, strings (escapes decoded, `"""` bodies dedented, each byte's place in the file
//! kept), expressions, numbers, durations and dates, and fields given twice.

use pest::iterators::Pair;

use super::{Rule, inner};
use crate::diag::{Diagnostic, FileId, Span};
use crate::dsl::ast::{DateTimeLit, DurationLit, Expr, Ident, Integer, Number, Str, TimeLit};

/// Walks pest pairs of one item into the syntax tree.
pub(super) struct Builder<'d> {
    pub(super) file: FileId,
    /// Byte offset of the parsed slice in the file.
    pub(super) base: usize,
    /// How many `if` blocks enclose the step being built.
    pub(super) depth: usize,
    pub(super) diagnostics: &'d mut Vec<Diagnostic>,
}

/// Stores a field once; a second occurrence is an error that points at both.
pub(super) fn set_once<T>(
    diagnostics: &mut Vec<Diagnostic>,
    slot: &mut Option<T>,
    value: T,
    span: Span,
    first: Option<Span>,
    what: &str,
) {
    if slot.is_some() {
        let mut d = Diagnostic::error(span, format!("`{what}` is given more than once")).with_label("second one here");
        if let Some(first) = first {
            d = d.with_secondary(first, "first one here");
        }
        diagnostics.push(d);
    } else {
        *slot = Some(value);
    }
}

impl Builder<'_> {
    /// The pair's place in the file, without the blanks pest skips after a rule that
    /// ends in a repetition, so that labels end where the text does.
    pub(super) fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let s = pair.as_span();
        let trimmed = pair
            .as_str()
            .trim_end_matches([' ', '\t', '\r', '\n', '\u{3000}'])
            .len();
        Span::new(self.file, self.base + s.start(), self.base + s.start() + trimmed)
    }

    pub(super) fn ident(&self, pair: Pair<'_, Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    /// Decodes a `string` pair, or a `texts` pair: its first string with the variants
    /// after it.
    pub(super) fn string(&mut self, pair: Pair<'_, Rule>) -> Str {
        if pair.as_rule() == Rule::texts {
            let mut parts = inner(pair);
            let mut text = self.string(parts.next().expect("texts start with a string"));
            for variant in parts {
                let mut vp = inner(variant);
                let code = self.ident(vp.next().expect("variant code"));
                let value = self.string(vp.next().expect("variant text"));
                text.variants.push((code, value));
            }
            return text;
        }
        let span = self.span(&pair);
        let quoted = inner(pair).next().expect("string has a body");
        let long = quoted.as_rule() == Rule::long_string;
        let body = inner(quoted).next().expect("string has a body");
        let body_start = self.base + body.as_span().start();
        if long {
            let (value, offsets) = dedent(body.as_str(), body_start);
            Str {
                value,
                span,
                offsets,
                variants: Vec::new(),
            }
        } else {
            let (value, offsets) = self.unescape(body.as_str(), body_start);
            Str {
                value,
                span,
                offsets,
                variants: Vec::new(),
            }
        }
    }

    fn unescape(&mut self, body: &str, start: usize) -> (String, Vec<usize>) {
        let mut value = String::with_capacity(body.len());
        let mut offsets = Vec::with_capacity(body.len() + 1);
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            let decoded = if c == '\\' {
                match chars.next() {
                    Some((_, '"')) => '"',
                    Some((_, '\\')) => '\\',
                    Some((_, 'n')) => '\n',
                    Some((_, 't')) => '\t',
                    Some((j, other)) => {
                        let span = Span::new(self.file, start + i, start + j + other.len_utf8());
                        self.diagnostics.push(
                            Diagnostic::error(span, format!("unknown escape `\\{other}`")).with_help(
                                "the escapes are `\\\"`, `\\\\`, `\\n` and `\\t`; write `\\\\` for a backslash",
                            ),
                        );
                        other
                    }
                    None => '\\',
                }
            } else {
                c
            };
            for _ in 0..decoded.len_utf8() {
                offsets.push(start + i);
            }
            value.push(decoded);
        }
        offsets.push(start + body.len());
        (value, offsets)
    }

    pub(super) fn strings(&mut self, pair: Pair<'_, Rule>) -> Vec<Str> {
        inner(pair).map(|p| self.string(p)).collect()
    }

    pub(super) fn names(&self, pair: Pair<'_, Rule>) -> Vec<Ident> {
        inner(pair).map(|p| self.ident(p)).collect()
    }

    pub(super) fn expr(&self, pair: Pair<'_, Rule>) -> Expr {
        let body = inner(pair).next().expect("expr has a body");
        Expr {
            source: body.as_str().to_string(),
            span: self.span(&body),
        }
    }

    pub(super) fn number(&mut self, pair: Pair<'_, Rule>) -> Number {
        let span = self.span(&pair);
        let value = pair.as_str().parse().unwrap_or(f64::NAN);
        Number { value, span }
    }

    pub(super) fn integer(&mut self, pair: Pair<'_, Rule>) -> Integer {
        let span = self.span(&pair);
        let value = pair.as_str().parse().unwrap_or_else(|_| {
            self.diagnostics.push(Diagnostic::error(span, "number is too large"));
            0
        });
        Integer { value, span }
    }

    pub(super) fn duration(&mut self, pair: Pair<'_, Rule>) -> DurationLit {
        let span = self.span(&pair);
        let text = pair.as_str();
        let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let n: u64 = text[..digits_end].parse().unwrap_or(u64::MAX);
        let factor = match &text[digits_end..] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            _ => 3_600_000,
        };
        DurationLit {
            millis: n.saturating_mul(factor),
            span,
        }
    }

    pub(super) fn datetime(&mut self, pair: Pair<'_, Rule>) -> DateTimeLit {
        let span = self.span(&pair);
        let mut parts = inner(pair);
        let date = parts.next().expect("date").as_str();
        let num = |s: &str| s.parse::<u32>().unwrap_or(0);
        let ymd = (date[0..4].parse().unwrap_or(0), num(&date[5..7]), num(&date[8..10]));
        let time = parts.next().map(|t| {
            let t = t.as_str();
            (num(&t[0..2]), num(&t[3..5]), t.get(6..8).map(num))
        });
        DateTimeLit { date: ymd, time, span }
    }

    /// A `time` pair (`22:00`, `07:30:15`); its range is checked when lowering.
    pub(super) fn time(&mut self, pair: Pair<'_, Rule>) -> TimeLit {
        let span = self.span(&pair);
        let t = pair.as_str();
        let num = |s: &str| s.parse::<u32>().unwrap_or(u32::MAX);
        TimeLit {
            hms: (num(&t[0..2]), num(&t[3..5]), t.get(6..8).map(num)),
            span,
        }
    }

    pub(super) fn first_inner<'i>(pair: Pair<'i, Rule>) -> Pair<'i, Rule> {
        inner(pair).next().expect("grammar guarantees an inner pair")
    }
}

/// Removes the first and last blank lines and the common indentation of a `"""` body,
/// keeping the file offset of every byte that stays.
fn dedent(body: &str, start: usize) -> (String, Vec<usize>) {
    let mut lines: Vec<(usize, &str)> = Vec::new();
    let mut at = 0;
    for line in body.split('\n') {
        lines.push((at, line.strip_suffix('\r').unwrap_or(line)));
        at += line.len() + 1;
    }
    if lines.first().is_some_and(|(_, l)| l.trim().is_empty()) {
        lines.remove(0);
    }
    if lines.last().is_some_and(|(_, l)| l.trim().is_empty()) {
        lines.pop();
    }
    let indent = lines
        .iter()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(_, l)| l.len() - l.trim_start_matches([' ', '\t', '\u{3000}']).len())
        .min()
        .unwrap_or(0);
    let mut value = String::new();
    let mut offsets = Vec::new();
    for (n, (line_at, line)) in lines.iter().enumerate() {
        if n > 0 {
            value.push('\n');
            offsets.push(start + line_at - 1);
        }
        let cut = if line.trim().is_empty() {
            line.len()
        } else {
            floor_boundary(line, indent)
        };
        for (i, c) in line[cut..].char_indices() {
            for _ in 0..c.len_utf8() {
                offsets.push(start + line_at + cut + i);
            }
            value.push(c);
        }
    }
    offsets.push(start + body.len());
    (value, offsets)
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedent_drops_outer_blank_lines_and_common_indent() {
        let body = "\n    第一行\n      第二行\n    ";
        let (value, offsets) = dedent(body, 100);
        assert_eq!(value, "第一行\n  第二行");
        assert_eq!(offsets.len(), value.len() + 1);
        assert_eq!(offsets[0], 100 + body.find('第').unwrap());
    }
}
