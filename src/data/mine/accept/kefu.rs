//! Suggestions written in the rule language: examples appended to an intent's `examples`
//! list where it is declared, and a new intent with the rule answering it in
//! [`MINED_FILE`](super::MINED_FILE).
//!
//! The place to write is found by parsing (`dsl::parse`: the intent's last example's
//! span), the lines added follow the list's own indentation, and the result is parsed
//! again: it must hold the old examples and the new ones, each exactly as given.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::NaiveDate;

use super::{AcceptError, Change, clean, line_break, read, stamp};
use crate::diag::{Diagnostic, FileId, SourceMap, closest};
use crate::dsl::ast::{self, Item};
use crate::dsl::parse::parse_file;
use crate::dsl::symbols::Symbols;

/// The most characters of a new intent's path.
const MAX_NAME_CHARS: usize = 60;

/// What the header of a new [`MINED_FILE`](super::MINED_FILE) says.
const HEADER: &str = "\
# 从对话日志里挖出来的新问题（`kefu mine --accept` 和控制台「未解决的问题」写入）。
# Questions mined from the conversation log (written by `kefu mine --accept` and the
# console's Unanswered questions page).
#
# 每个意图配一条回答它的规则，规则的 reply 先留空：写好回复之前 `kefu check` 报错，
# 草稿发布不了。写好后也可以把意图和规则挪到合适的文件里（intents.kefu 等）。
";

/// The error `kefu check` reports for the drafted rule `rule` until its reply is written
/// (the lowering's wording).
pub(super) fn no_reply_message(rule: &str) -> String {
    format!("rule `{rule}` has no reply yet: write what the customer should be told")
}

/// A rule file's text parsed.
struct Parsed {
    sources: SourceMap,
    file: FileId,
    items: Vec<Item>,
    diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    fn new(path: &str, text: &str) -> Parsed {
        let mut sources = SourceMap::default();
        let id = sources.add(path, text.to_string());
        let (items, diagnostics) = parse_file(id, &sources.file(id).text);
        Parsed {
            sources,
            file: id,
            items,
            diagnostics,
        }
    }

    fn intents(&self) -> impl Iterator<Item = &ast::Intent> {
        self.items.iter().filter_map(|i| match i {
            Item::Intent(x) => Some(x),
            _ => None,
        })
    }

    /// The 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        self.sources.file(self.file).line_col(offset).0
    }
}

/// The files that declare intents: path, text, version, parsed.
fn intent_files(dir: &Path, symbols: &Symbols) -> Result<Vec<(String, String, String, Parsed)>, AcceptError> {
    let paths: BTreeSet<&str> = symbols.intents.iter().map(|s| s.file.as_str()).collect();
    let mut out = Vec::new();
    for path in paths {
        // A file `kefu check` read but a draft edit may not name (outside the editable
        // kinds) cannot hold anything an accept writes to; its examples still count.
        let Some((text, version)) = read(dir, path)? else {
            continue;
        };
        let parsed = Parsed::new(path, &text);
        out.push((path.to_string(), text, version, parsed));
    }
    Ok(out)
}

/// Every example of every intent (compared against, so that no message teaches two
/// intents).
fn present(files: &[(String, String, String, Parsed)]) -> Vec<String> {
    files
        .iter()
        .flat_map(|(_, _, _, p)| p.intents().flat_map(|i| i.examples.iter().map(|e| e.value.clone())))
        .collect::<Vec<_>>()
}

/// `text` as a `"..."` string of the rule language: backslashes and quotes escaped, the
/// rest as it is (messages hold no control characters). Braces need nothing: an example
/// is not a template, and a line ends after each string written here, so that a `{…}`
/// the grammar tries as a template hole cannot reach past its closing quote.
pub(super) fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The start of the line holding `offset`.
fn line_start(text: &str, offset: usize) -> usize {
    text[..offset].rfind('\n').map_or(0, |i| i + 1)
}

/// The offset of the line break ending the line holding `offset` (the text's length on
/// the last line without one).
fn line_end(text: &str, offset: usize) -> usize {
    text[offset..].find('\n').map_or(text.len(), |i| offset + i)
}

/// The leading blanks of the line starting at `start`.
fn indentation(text: &str, start: usize) -> &str {
    let line = &text[start..];
    &line[..line.len() - line.trim_start_matches([' ', '\t']).len()]
}

/// The indentation of a string added to `examples` (in file order, not empty): that of
/// the list's strings that start their lines, else the column of the last line's first
/// string (a list written on one line: `examples "a", "b"`).
fn list_indent(text: &str, examples: &[ast::Str]) -> String {
    for example in examples.iter().rev() {
        let start = line_start(text, example.span.start);
        let prefix = &text[start..example.span.start];
        if prefix.trim().is_empty() {
            return prefix.to_string();
        }
    }
    let last = examples.last().expect("not empty");
    let start = line_start(text, last.span.start);
    let first = examples
        .iter()
        .find(|e| line_start(text, e.span.start) == start)
        .unwrap_or(last);
    text[start..first.span.start]
        .chars()
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect()
}

/// The lines adding `messages` (after the date line), each at `indent`, separated by
/// commas, without a line break after the last.
fn example_lines(indent: &str, messages: &[String], date: NaiveDate, nl: &str) -> String {
    let mut out = format!("{indent}{}", stamp(date));
    for (i, message) in messages.iter().enumerate() {
        out.push_str(nl);
        out.push_str(indent);
        out.push_str(&literal(message));
        if i + 1 < messages.len() {
            out.push(',');
        }
    }
    out
}

/// `text` with `messages` appended to the `examples` of `intent` (declared in it): after
/// the last example of its last list, or in a new list before its closing brace.
fn append_examples(text: &str, intent: &ast::Intent, messages: &[String], date: NaiveDate) -> String {
    let nl = line_break(text);
    let Some(last) = intent.examples.last() else {
        // No list yet: one before the closing brace, indented one step in from the line
        // holding the brace.
        let close = text[..intent.span.end]
            .rfind('}')
            .expect("an intent ends with its brace");
        let start = line_start(text, close);
        let base = indentation(text, start);
        let inner = format!("{base}  ");
        let items: Vec<String> = messages.iter().map(|m| format!("{inner}  {}", literal(m))).collect();
        let block = format!(
            "{inner}{}{nl}{inner}examples{nl}{}",
            stamp(date),
            items.join(&format!(",{nl}"))
        );
        return if text[start..close].trim().is_empty() {
            format!("{}{block}{nl}{}", &text[..start], &text[start..])
        } else {
            // `intent a { keywords "x" }`: the brace moves to a line of its own.
            format!(
                "{}{nl}{block}{nl}{base}{}",
                text[..close].trim_end_matches([' ', '\t']),
                &text[close..]
            )
        };
    };
    let end = last.span.end;
    let line_end = line_end(text, end);
    let indent = list_indent(text, &intent.examples);
    let lines = example_lines(&indent, messages, date, nl);
    let rest = &text[end..line_end];
    let rest_trimmed = rest.trim();
    if rest_trimmed.is_empty() || rest_trimmed.starts_with('#') {
        // The usual layout: the new lines after the last example's line (its comment, if
        // any, stays with it).
        if line_end == text.len() {
            format!("{},{}{nl}{lines}{nl}", &text[..end], rest)
        } else {
            format!("{},{}\n{lines}{nl}{}", &text[..end], rest, &text[line_end + 1..])
        }
    } else {
        // Something follows on the line (`"c" }`): it moves under the new lines.
        let base = indentation(text, line_start(text, end));
        format!(
            "{},{nl}{lines}{nl}{base}{}",
            &text[..end],
            &text[end..].trim_start_matches([' ', '\t'])
        )
    }
}

/// Appends `messages` to the examples of the intent `intent` where it is declared.
pub(super) fn add_examples(
    dir: &Path,
    symbols: &Symbols,
    intent: &str,
    messages: &[String],
    date: NaiveDate,
) -> Result<Change, AcceptError> {
    let Some(symbol) = symbols.intents.iter().find(|s| s.name == intent) else {
        let mut why = format!("no intent `{intent}` in the rules");
        if let Some(near) = closest(intent, symbols.intents.iter().map(|s| s.name.as_str())) {
            why.push_str(&format!("; did you mean `{near}`?"));
        }
        return Err(AcceptError::Invalid(why));
    };
    let files = intent_files(dir, symbols)?;
    let messages = clean(messages, present(&files).iter().map(String::as_str))?;
    let Some((path, text, version, parsed)) = files.iter().find(|f| f.0 == symbol.file) else {
        return Err(AcceptError::Invalid(format!(
            "intent `{intent}` is declared in `{}`, which a draft edit cannot change",
            symbol.file
        )));
    };
    // Of intents declared twice (an error of their own), the one the symbols name.
    let same: Vec<&ast::Intent> = parsed.intents().filter(|i| i.name.name == intent).collect();
    let Some(nth) = same.iter().position(|i| parsed.line(i.name.span.start) == symbol.line) else {
        return Err(AcceptError::Io(format!(
            "{path}: intent `{intent}` is not where it was found"
        )));
    };
    let target = same[nth];
    let new = append_examples(text, target, &messages, date);

    let again = Parsed::new(path, &new);
    let found = again.intents().filter(|i| i.name.name == intent).nth(nth);
    let expected: Vec<&str> = target
        .examples
        .iter()
        .map(|e| e.value.as_str())
        .chain(messages.iter().map(String::as_str))
        .collect();
    let reads_back = found.is_some_and(|i| i.examples.iter().map(|e| e.value.as_str()).eq(expected.iter().copied()));
    if !reads_back || again.diagnostics.len() > parsed.diagnostics.len() {
        return Err(AcceptError::Invalid(format!(
            "{path}: the examples of `{intent}` are laid out in a way kefu mine cannot add to; add the \
             messages by hand"
        )));
    }
    Ok(Change {
        path: path.clone(),
        old: Some((text.clone(), version.clone())),
        new,
    })
}

/// Checks a new intent's path: one to three levels of letters, digits, `_` or `-`.
fn check_name(name: &str) -> Result<(), AcceptError> {
    let levels: Vec<&str> = name.split('.').collect();
    let good = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && levels.len() <= 3
        && levels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-'));
    if good {
        Ok(())
    } else {
        Err(AcceptError::Invalid(format!(
            "`{name}` is not an intent name: one to three levels separated by `.`, each of letters, \
             digits, `_` or `-` (at most {MAX_NAME_CHARS} characters), as `挖掘.会员积分`"
        )))
    }
}

/// Appends the intent `name`, with `messages` as its examples, and a rule answering it
/// whose reply is left empty, to [`MINED_FILE`](super::MINED_FILE). Returns the change and
/// the rule's name.
pub(super) fn new_intent(
    dir: &Path,
    symbols: &Symbols,
    name: &str,
    messages: &[String],
    date: NaiveDate,
) -> Result<(Change, String), AcceptError> {
    check_name(name)?;
    if let Some(s) = symbols.intents.iter().find(|s| s.name == name) {
        return Err(AcceptError::Invalid(format!(
            "intent `{name}` already exists ({}:{}); add the messages to it as examples instead",
            s.file, s.line
        )));
    }
    let files = intent_files(dir, symbols)?;
    let messages = clean(messages, present(&files).iter().map(String::as_str))?;
    let base = name.replace('.', "_");
    let taken = |r: &str| symbols.rules.iter().any(|s| s.name == r);
    let rule = std::iter::once(base.clone())
        .chain((2..).map(|n| format!("{base}_{n}")))
        .find(|r| !taken(r))
        .expect("some suffix is free");

    let path = super::MINED_FILE;
    let old = read(dir, path)?;
    let current = old.as_ref().map_or(HEADER, |(text, _)| text.as_str());
    let nl = line_break(current);
    let mut new = current.to_string();
    if !new.is_empty() && !new.ends_with('\n') {
        new.push_str(nl);
    }
    new.push_str(nl);
    new.push_str(&stamp(date));
    new.push_str(&format!("{nl}intent {name} {{{nl}  examples{nl}"));
    for (i, message) in messages.iter().enumerate() {
        new.push_str(&format!("    {}", literal(message)));
        new.push_str(if i + 1 < messages.len() { "," } else { "" });
        new.push_str(nl);
    }
    new.push_str(&format!(
        "}}{nl}{nl}rule {rule} {{{nl}  on {name}{nl}  reply \"\"{nl}}}{nl}"
    ));

    let before = old
        .as_ref()
        .map_or(0, |(text, _)| Parsed::new(path, text).diagnostics.len());
    let again = Parsed::new(path, &new);
    let intent_back = again
        .intents()
        .find(|i| i.name.name == name)
        .is_some_and(|i| i.examples.iter().map(|e| &e.value).eq(messages.iter()));
    let rule_back = again.items.iter().any(
        |i| matches!(i, Item::Rule(r) if r.name.name == rule && r.reply.as_ref().is_some_and(|s| s.value.is_empty())),
    );
    if !intent_back || !rule_back || again.diagnostics.len() > before {
        return Err(AcceptError::Invalid(format!(
            "the intent `{name}` would not read back as written in `{path}`"
        )));
    }
    Ok((
        Change {
            path: path.to_string(),
            old,
            new,
        },
        rule,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 6).unwrap()
    }

    fn appended(text: &str, messages: &[&str]) -> String {
        let parsed = Parsed::new("a.kefu", text);
        let intent = parsed.intents().next().expect("an intent");
        let messages: Vec<String> = messages.iter().map(|s| s.to_string()).collect();
        let out = append_examples(text, intent, &messages, date());
        let again = Parsed::new("a.kefu", &out);
        assert!(again.diagnostics.is_empty(), "{out}\n{:?}", again.diagnostics);
        let values: Vec<String> = again
            .intents()
            .next()
            .unwrap()
            .examples
            .iter()
            .map(|e| e.value.clone())
            .collect();
        let mut expected: Vec<String> = intent.examples.iter().map(|e| e.value.clone()).collect();
        expected.extend(messages);
        assert_eq!(values, expected, "{out}");
        out
    }

    #[test]
    fn examples_follow_the_list_s_own_lines() {
        let out = appended(
            "intent a.b {\n  examples\n    \"一\",\n    \"二\"  # 注释\n  keywords \"k\"\n}\n",
            &["三", "四"],
        );
        assert_eq!(
            out,
            "intent a.b {\n  examples\n    \"一\",\n    \"二\",  # 注释\n    # kefu mine 2026-12-06\n    \
             \"三\",\n    \"四\"\n  keywords \"k\"\n}\n"
        );
    }

    #[test]
    fn a_list_on_one_line_and_a_brace_after_it() {
        let out = appended("intent a { examples \"一\", \"二\" }", &["三"]);
        assert_eq!(
            out,
            "intent a { examples \"一\", \"二\",\n                    # kefu mine 2026-12-06\n                    \
             \"三\"\n}"
        );
    }

    #[test]
    fn an_intent_without_examples_gets_a_list() {
        let out = appended("intent a {\n  keywords \"k\"\n}\n", &["三"]);
        assert_eq!(
            out,
            "intent a {\n  keywords \"k\"\n  # kefu mine 2026-12-06\n  examples\n    \"三\"\n}\n"
        );
        appended("intent a { }", &["一", "二"]);
        appended("intent a {}\r\n", &["一", "二"]);
    }

    #[test]
    fn hostile_messages_read_back_as_themselves() {
        appended(
            "intent a {\n  examples \"一\"\n}\n",
            &[
                "他说\"\"\"不行\"\"\"",
                "C:\\new\\table \\\" end\\",
                "{\"} x {\"}",
                "{{ user.name }} {if x {\"y\"}}",
                "# 不是注释 `反引号` /正则/",
                "\u{202e}倒过来\u{200f}",
                "- key: [a, b] &anchor *alias !tag | >",
            ],
        );
    }

    #[test]
    fn intent_names_are_checked() {
        for good in ["挖掘.会员积分", "a", "a.b.c", "x-1_y"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a..b", "a.b.c.d", "会员 积分", "a.b.", "a{b}", "a\"b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
