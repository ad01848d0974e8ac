//! Reply templates: text with `{expr}` holes filled from the turn's scope.
//!
//! `{{` and `}}` stand for literal braces. Holes are compiled once, like every other
//! expression; a hole whose value is `()` (absent) renders as nothing.

use rhai::{Engine, Scope};

use super::{Script, ScriptError};
use crate::nlu::Lang;

/// A compiled reply template.
#[derive(Clone, Debug)]
pub struct Template {
    /// Text and holes in order.
    pub parts: Vec<Part>,
}

/// A piece of a [`Template`].
#[derive(Clone, Debug)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// A `{expr}` hole.
    Hole(Script),
}

impl Template {
    /// A template with no holes.
    pub fn literal(text: impl Into<String>) -> Self {
        Template {
            parts: vec![Part::Text(text.into())],
        }
    }

    /// The text, when the template has no holes.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Fills the holes from `scope`; a hole that fails (reading a property of an absent
    /// value, say) renders as nothing and is reported to `on_error`, so one missing value
    /// does not lose the whole reply.
    pub fn render_lenient(&self, engine: &Engine, scope: &mut Scope, on_error: &mut dyn FnMut(ScriptError)) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Hole(script) => match script.eval(engine, scope) {
                    Ok(value) if !value.is_unit() => out.push_str(&value.to_string()),
                    Ok(_) => {}
                    Err(e) => on_error(e),
                },
            }
        }
        out
    }

    /// Fills the holes from `scope`, failing on the first hole that fails.
    pub fn render(&self, engine: &Engine, scope: &mut Scope) -> Result<String, ScriptError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Hole(script) => {
                    let value = script.eval(engine, scope)?;
                    if !value.is_unit() {
                        out.push_str(&value.to_string());
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A text the customer sees, in the shop's language and in the other languages the shop
/// declares that the editor wrote it in (`reply "亲，…" en "Hi, …"`). Picking a variant
/// is a look-up in a list of one or two entries.
#[derive(Clone, Debug, PartialEq)]
pub struct Localized<T> {
    /// The text in the shop's language (the first it declares).
    pub default: T,
    /// The text in other languages, in the order written; never the shop's language.
    pub by_language: Vec<(Lang, T)>,
}

/// A reply template with its variants per language.
pub type Texts = Localized<Template>;

impl<T> Localized<T> {
    /// A text in the shop's language only.
    pub fn new(default: T) -> Self {
        Localized {
            default,
            by_language: Vec::new(),
        }
    }

    /// The variant written for `lang`, if any (never the default).
    pub fn variant(&self, lang: Lang) -> Option<&T> {
        self.by_language.iter().find(|(l, _)| *l == lang).map(|(_, t)| t)
    }

    /// The text for `lang`: its variant, or the shop's language's when there is none.
    pub fn pick(&self, lang: Lang) -> &T {
        self.variant(lang).unwrap_or(&self.default)
    }

    /// Every text, the default first.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        std::iter::once(&self.default).chain(self.by_language.iter().map(|(_, t)| t))
    }
}

/// A piece of template text before compilation: literal text, or a hole's source with
/// its byte range in the template.
#[derive(Debug, PartialEq)]
pub(crate) enum RawPart {
    Text(String),
    Hole { source: String, start: usize, end: usize },
}

/// Why a template's braces do not balance, with the byte offset of the culprit.
#[derive(Debug, PartialEq)]
pub(crate) enum SplitError {
    Unclosed(usize),
    Unopened(usize),
    Empty(usize),
}

/// Splits template text into literal text and hole sources. Braces inside a hole nest
/// (a rhai map literal `#{a: 1}` is fine); quotes inside a hole are skipped over.
pub(crate) fn split(text: &str) -> Result<Vec<RawPart>, SplitError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                literal.push('{');
                i += 2;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                literal.push('}');
                i += 2;
            }
            b'}' => return Err(SplitError::Unopened(i)),
            b'{' => {
                let open = i;
                let mut depth = 1;
                let mut j = i + 1;
                let mut quote: Option<u8> = None;
                while j < bytes.len() {
                    let b = bytes[j];
                    match quote {
                        Some(_) if b == b'\\' => j += 1,
                        Some(q) if b == q => quote = None,
                        Some(_) => {}
                        None if b == b'"' || b == b'\'' => quote = Some(b),
                        None if b == b'{' => depth += 1,
                        None if b == b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        None => {}
                    }
                    j += 1;
                }
                if j >= bytes.len() {
                    return Err(SplitError::Unclosed(open));
                }
                let source = &text[open + 1..j];
                if source.trim().is_empty() {
                    return Err(SplitError::Empty(open));
                }
                if !literal.is_empty() {
                    parts.push(RawPart::Text(std::mem::take(&mut literal)));
                }
                parts.push(RawPart::Hole {
                    source: source.to_string(),
                    start: open + 1,
                    end: j,
                });
                i = j + 1;
            }
            _ => {
                let c = text[i..].chars().next().expect("inside the text");
                literal.push(c);
                i += c.len_utf8();
            }
        }
    }
    if !literal.is_empty() {
        parts.push(RawPart::Text(literal));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_holes_and_escaped_braces() {
        let parts = split("订单 {order.id} 已签收 {{不是变量}}").unwrap();
        assert_eq!(
            parts,
            vec![
                RawPart::Text("订单 ".into()),
                RawPart::Hole {
                    source: "order.id".into(),
                    start: 8,
                    end: 16
                },
                RawPart::Text(" 已签收 {不是变量}".into()),
            ]
        );
    }

    #[test]
    fn nested_braces_and_quotes_stay_in_the_hole() {
        let parts = split(r#"{ #{a: "}"}.a }"#).unwrap();
        assert!(matches!(&parts[..], [RawPart::Hole { .. }]), "{parts:?}");
    }

    #[test]
    fn unbalanced_braces_are_errors() {
        assert_eq!(split("abc {order.id"), Err(SplitError::Unclosed(4)));
        assert_eq!(split("abc } d"), Err(SplitError::Unopened(4)));
        assert_eq!(split("a {  } b"), Err(SplitError::Empty(2)));
    }
}
