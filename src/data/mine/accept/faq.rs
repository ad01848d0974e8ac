//! Suggestions written into the knowledge base's FAQ: variants appended to an entry, and a
//! new entry (its answer left empty) at the end of `kb/faq.yaml`.
//!
//! The YAML is edited as text, a few lines at the right place in the file's own
//! indentation, rather than written again whole with `kb::table::Table::to_yaml`: that one
//! re-lays every entry (its indentation, `[a, b]` lists), so adding three variants would
//! show as a diff of the whole file, and its rows refuse a file that holds an entry whose
//! answer is still to be written (the one the last accept drafted). Entries are read as
//! `kb::table` and the loader read them (`kb::Faq`); what is written is read back and must
//! be the entries before with exactly the messages added, each scalar written by
//! `serde_yaml` so that quotes, `#`, `: `, `- `, `[`, anchors and the like stay text.

use std::path::Path;

use chrono::NaiveDate;

use super::{AcceptError, Change, clean, line_break, read, stamp};
use crate::diag::closest;
use crate::kb::Faq;
use crate::kb::load::KB_DIR;
use crate::kb::table::Table;

/// The most characters of a new entry's id.
const MAX_ID_CHARS: usize = 60;

/// What the header of a new `kb/faq.yaml` says.
const HEADER: &str = "\
# 常见问题（知识库 FAQ）：id 条目名，question 标准问法，variants 顾客的其他问法，answer 回复原文。
";

/// The error `kefu check` reports for the drafted entry `id` until its answer is written
/// (the knowledge-base loader's wording).
pub(super) fn no_answer_message(id: &str) -> String {
    format!("FAQ entry `{id}` has no answer yet: write the answer the customer should get")
}

/// One kb file: its path, text, version and FAQ entries.
struct KbFile {
    path: String,
    text: String,
    version: String,
    entries: Vec<Faq>,
}

/// The FAQ entries of `text` (a kb file): its `faq:` list as the loader reads it.
fn entries_of(text: &str) -> Result<Vec<Faq>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let document: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    match document.get("faq") {
        None | Some(serde_yaml::Value::Null) => Ok(Vec::new()),
        Some(list) => serde_yaml::from_value(list.clone()).map_err(|e| e.to_string()),
    }
}

/// The kb files (`kb/*.yaml`, `kb/*.yml`) in name order. A file that does not read
/// contributes no entries (`kefu check` reports it, before and after the accept).
fn kb_files(dir: &Path) -> Result<Vec<KbFile>, AcceptError> {
    let names = match std::fs::read_dir(dir.join(KB_DIR)) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.') && (n.ends_with(".yaml") || n.ends_with(".yml")))
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(AcceptError::Io(format!("{}: {e}", dir.join(KB_DIR).display()))),
    };
    let mut names = names;
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let path = format!("{KB_DIR}/{name}");
        let Some((text, version)) = read(dir, &path)? else {
            continue;
        };
        let entries = entries_of(&text).unwrap_or_default();
        out.push(KbFile {
            path,
            text,
            version,
            entries,
        });
    }
    Ok(out)
}

/// Every question and variant of every entry.
fn present(files: &[KbFile]) -> Vec<String> {
    files
        .iter()
        .flat_map(|f| &f.entries)
        .flat_map(|e| std::iter::once(e.question.clone()).chain(e.variants.iter().cloned()))
        .collect()
}

/// `text` as a YAML scalar on one line: as `serde_yaml` writes it (plain when that reads
/// back as the same text, quoted otherwise), or as a JSON string, which YAML reads as a
/// double-quoted scalar, when that would take more than one line.
fn scalar(text: &str) -> String {
    let yaml = serde_yaml::to_string(text).unwrap_or_default();
    let yaml = yaml.strip_suffix('\n').unwrap_or(&yaml);
    if yaml.is_empty() || yaml.contains('\n') {
        serde_json::to_string(text).expect("strings serialize")
    } else {
        yaml.to_string()
    }
}

/// The width of a line's indentation.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Whether a line holds nothing YAML reads (blank or a comment).
fn blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// Where a file's `faq:` list is: the key's line, and each entry's lines (from its `- `
/// line to its last line that is not blank) as line index ranges.
struct List {
    key: usize,
    /// The indentation of the entries' `- `.
    dash: usize,
    entries: Vec<(usize, usize)>,
}

/// The text's lines, each with its line break.
fn lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// The top-level `faq:` list of `lines` written as a block (`None`: no `faq:` key; an
/// error for a list written `faq: [...]`, which this does not edit).
fn find_list(lines: &[&str]) -> Result<Option<List>, String> {
    let Some(key) = lines.iter().position(|l| {
        l.strip_prefix("faq")
            .and_then(|r| r.trim_start_matches(' ').strip_prefix(':'))
            .is_some()
    }) else {
        return Ok(None);
    };
    let value = lines[key]["faq".len()..].trim_start_matches(' ')[1..].trim();
    if !(value.is_empty() || value.starts_with('#') || value == "[]") {
        return Err("its `faq:` list is written on one line".into());
    }
    let mut entries: Vec<(usize, usize)> = Vec::new();
    let mut dash = None;
    for (i, line) in lines.iter().enumerate().skip(key + 1) {
        if blank(line) {
            continue;
        }
        let at = indent(line);
        let item = line.trim_start_matches(' ').starts_with("- ") || line.trim() == "-";
        let d = *dash.get_or_insert(at);
        if at < d || (at == d && !item) {
            break;
        }
        if at == d {
            entries.push((i, i));
        } else if let Some(last) = entries.last_mut() {
            last.1 = i;
        } else {
            return Err("its `faq:` list does not start with `- `".into());
        }
    }
    if value == "[]" && !entries.is_empty() {
        return Err("its `faq:` key holds `[]` and entries".into());
    }
    Ok(Some(List {
        key,
        dash: dash.unwrap_or(2),
        entries,
    }))
}

/// The field of an entry's lines (`first..=last`) named `key`: its line index and the
/// indentation of the entry's fields.
fn field(lines: &[&str], (first, last): (usize, usize), key: &str) -> (Option<usize>, usize) {
    let head = lines[first];
    let after_dash = head.trim_start_matches(' ')[1..].trim_start_matches(' ');
    let fields = head.len() - after_dash.len();
    let named = |text: &str| {
        text.strip_prefix(key)
            .is_some_and(|r| r.trim_start_matches(' ').starts_with(':'))
    };
    if named(after_dash) {
        return (Some(first), fields);
    }
    let found = (first + 1..=last).find(|&i| indent(lines[i]) == fields && named(lines[i].trim_start_matches(' ')));
    (found, fields)
}

/// `lines` with `added` inserted before line `at`.
fn splice(lines: &[&str], at: usize, added: &[String], nl: &str, replace: bool) -> String {
    let mut out = String::new();
    for line in &lines[..at] {
        out.push_str(line);
    }
    if at > 0 && !lines[at - 1].ends_with('\n') {
        out.push_str(nl);
    }
    for line in added {
        out.push_str(line);
        out.push_str(nl);
    }
    let rest = if replace { &lines[at + 1..] } else { &lines[at..] };
    for line in rest {
        out.push_str(line);
    }
    out
}

/// `text` with `messages` added to the variants of its `index`-th FAQ entry.
fn append_variants(
    text: &str,
    index: usize,
    old: &[String],
    messages: &[String],
    date: NaiveDate,
) -> Result<String, String> {
    let nl = line_break(text);
    let lines = lines(text);
    let list = find_list(&lines)?.ok_or("it has no `faq:` list")?;
    let &(first, last) = list
        .entries
        .get(index)
        .ok_or("its entries are not laid out one per `- `")?;
    let (variants, fields) = field(&lines, (first, last), "variants");
    let pad = " ".repeat(fields);
    let Some(at) = variants else {
        // No variants yet: a list before the answer (where the shop's file keeps it), or
        // at the end of the entry.
        let (answer, _) = field(&lines, (first, last), "answer");
        let at = answer.filter(|&a| a > first).unwrap_or(last + 1);
        let mut added = vec![format!("{pad}variants:"), format!("{pad}  {}", stamp(date))];
        added.extend(messages.iter().map(|m| format!("{pad}  - {}", scalar(m))));
        return Ok(splice(&lines, at, &added, nl, false));
    };
    if at == first {
        return Err("the entry starts with its `variants`".into());
    }
    let value = lines[at].trim_start_matches(' ')["variants".len()..].trim_start_matches(' ')[1..].trim();
    if value.is_empty() || value.starts_with('#') {
        // A block list: after its last item, at its items' indentation.
        let mut end = at;
        let mut item_indent = None;
        for (i, line) in lines.iter().enumerate().take(last + 1).skip(at + 1) {
            if blank(line) {
                continue;
            }
            let n = indent(line);
            let item = line.trim_start_matches(' ').starts_with('-');
            if n > fields || (n == fields && item) {
                if item && item_indent.is_none() {
                    item_indent = Some(n);
                }
                end = i;
            } else {
                break;
            }
        }
        let item_pad = " ".repeat(item_indent.unwrap_or(fields + 2));
        let mut added = vec![format!("{item_pad}{}", stamp(date))];
        added.extend(messages.iter().map(|m| format!("{item_pad}- {}", scalar(m))));
        return Ok(splice(&lines, end + 1, &added, nl, false));
    }
    if !(value.starts_with('[') && value.ends_with(']')) {
        return Err("its `variants` are neither a list of lines nor `[...]` on one line".into());
    }
    // `variants: [a, b]`: written again as a list of lines, the old ones first.
    let mut added = vec![format!("{pad}variants:")];
    added.extend(old.iter().map(|v| format!("{pad}  - {}", scalar(v))));
    added.push(format!("{pad}  {}", stamp(date)));
    added.extend(messages.iter().map(|m| format!("{pad}  - {}", scalar(m))));
    Ok(splice(&lines, at, &added, nl, true))
}

/// `text` (a kb file, maybe empty) with a new entry at the end of its `faq:` list.
fn append_entry(text: &str, entry: &Faq, date: NaiveDate) -> Result<String, String> {
    let nl = line_break(text);
    let lines = lines(text);
    let entry_lines = |dash: usize| {
        let pad = " ".repeat(dash);
        let mut out = vec![
            format!("{pad}{}", stamp(date)),
            format!("{pad}- id: {}", scalar(&entry.id)),
            format!("{pad}  question: {}", scalar(&entry.question)),
        ];
        if !entry.variants.is_empty() {
            out.push(format!("{pad}  variants:"));
            out.extend(entry.variants.iter().map(|v| format!("{pad}    - {}", scalar(v))));
        }
        out.push(format!("{pad}  answer: \"\""));
        out
    };
    match find_list(&lines)? {
        None => {
            let mut added = Vec::new();
            if !text.trim().is_empty() {
                added.push(String::new());
            }
            added.push("faq:".to_string());
            added.extend(entry_lines(2));
            Ok(splice(&lines, lines.len(), &added, nl, false))
        }
        Some(list) => {
            let Some(&(_, last)) = list.entries.last() else {
                // `faq:` (or `faq: []`) without entries yet.
                let mut added = vec!["faq:".to_string()];
                added.extend(entry_lines(list.dash));
                return Ok(splice(&lines, list.key, &added, nl, true));
            };
            // Entries apart by a blank line, as the file keeps them (the shop's does).
            let spaced = list.entries.windows(2).next().is_none_or(|w| w[1].0 > w[0].1 + 1);
            let mut added = Vec::new();
            if spaced {
                added.push(String::new());
            }
            added.extend(entry_lines(list.dash));
            Ok(splice(&lines, last + 1, &added, nl, false))
        }
    }
}

/// Why a file could not be edited, for the editor.
fn unusual(path: &str, why: &str) -> AcceptError {
    AcceptError::Invalid(format!(
        "`{path}` is laid out in a way kefu mine does not edit ({why}); add the messages by hand"
    ))
}

/// Appends `messages` to the variants of the FAQ entry `id`, in the kb file that holds it.
pub(super) fn add_variants(dir: &Path, id: &str, messages: &[String], date: NaiveDate) -> Result<Change, AcceptError> {
    let files = kb_files(dir)?;
    let found = files
        .iter()
        .find_map(|f| f.entries.iter().position(|e| e.id == id).map(|i| (f, i)));
    let Some((file, index)) = found else {
        let mut why = format!("no FAQ entry `{id}` in the knowledge base");
        let ids = files.iter().flat_map(|f| &f.entries).map(|e| e.id.as_str());
        if let Some(near) = closest(id, ids) {
            why.push_str(&format!("; did you mean `{near}`?"));
        }
        return Err(AcceptError::Invalid(why));
    };
    let messages = clean(messages, present(&files).iter().map(String::as_str))?;
    let entry = &file.entries[index];
    let new = append_variants(&file.text, index, &entry.variants, &messages, date)
        .map_err(|why| unusual(&file.path, &why))?;
    let mut expected = file.entries.clone();
    expected[index].variants.extend(messages.iter().cloned());
    if entries_of(&new).ok() != Some(expected) {
        return Err(unusual(&file.path, "the variants would not read back as written"));
    }
    Ok(Change {
        path: file.path.clone(),
        old: Some((file.text.clone(), file.version.clone())),
        new,
    })
}

/// Appends a new entry `id` to `kb/faq.yaml`: the first message its question, the others
/// its variants, its answer empty for the editor to write.
pub(super) fn new_faq(dir: &Path, id: &str, messages: &[String], date: NaiveDate) -> Result<Change, AcceptError> {
    if id.trim().is_empty() || id.trim() != id || id.chars().count() > MAX_ID_CHARS || id.chars().any(char::is_control)
    {
        return Err(AcceptError::Invalid(format!(
            "`{id}` is not an FAQ entry id: 1 to {MAX_ID_CHARS} characters on one line, without blanks \
             around it"
        )));
    }
    let files = kb_files(dir)?;
    if let Some(f) = files.iter().find(|f| f.entries.iter().any(|e| e.id == id)) {
        return Err(AcceptError::Invalid(format!(
            "FAQ entry `{id}` already exists (in `{}`); add the messages to it as variants instead",
            f.path
        )));
    }
    let mut messages = clean(messages, present(&files).iter().map(String::as_str))?;
    let question = messages.remove(0);
    let entry = Faq {
        id: id.to_string(),
        question,
        variants: messages,
        answer: String::new(),
        products: Vec::new(),
    };
    let path = Table::Faq.file();
    let old = match files.iter().find(|f| f.path == path) {
        Some(f) => Some((f.text.clone(), f.version.clone())),
        None => read(dir, path)?,
    };
    let current = old.as_ref().map_or(HEADER, |(text, _)| text.as_str());
    let new = append_entry(current, &entry, date).map_err(|why| unusual(path, &why))?;
    let old_entries = entries_of(current).map_err(|why| unusual(path, &why))?;
    let mut expected = old_entries;
    expected.push(entry);
    if entries_of(&new).ok() != Some(expected) {
        return Err(unusual(path, "the entry would not read back as written"));
    }
    Ok(Change {
        path: path.to_string(),
        old,
        new,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 6).unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const FILE: &str = "# 常见问题\n\nfaq:\n  - id: a\n    question: 问？\n    variants:\n      - 一\n      - 二\n    answer: 答。\n\n  - id: b\n    question: 问二\n    variants: [甲, 乙]\n    answer: 答二\n\n  - id: c\n    question: 问三\n    answer: 答三\n";

    fn with_variants(index: usize, messages: &[&str]) -> String {
        let entries = entries_of(FILE).unwrap();
        let messages = strings(messages);
        let out = append_variants(FILE, index, &entries[index].variants, &messages, date()).unwrap();
        let mut expected = entries;
        expected[index].variants.extend(messages);
        assert_eq!(entries_of(&out).unwrap(), expected, "{out}");
        out
    }

    #[test]
    fn variants_are_added_to_a_list_of_lines_after_its_last_item() {
        let out = with_variants(0, &["三"]);
        assert!(
            out.contains("      - 二\n      # kefu mine 2026-12-06\n      - 三\n    answer: 答。\n"),
            "{out}"
        );
    }

    #[test]
    fn a_list_on_one_line_becomes_lines_and_a_missing_one_is_made() {
        let out = with_variants(1, &["丙"]);
        assert!(
            out.contains("    variants:\n      - 甲\n      - 乙\n      # kefu mine 2026-12-06\n      - 丙\n"),
            "{out}"
        );
        let out = with_variants(2, &["丁"]);
        assert!(
            out.contains(
                "    question: 问三\n    variants:\n      # kefu mine 2026-12-06\n      - 丁\n    answer: 答三\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn hostile_variants_read_back_as_themselves() {
        with_variants(
            0,
            &[
                "key: value",
                "- 列表",
                "# 注释",
                "'单引号' \"双引号\"",
                "[a, b] {c: d}",
                "&anchor *alias !tag",
                "| > % @ `",
                "yes",
                "null",
                "123",
                "\u{feff}bom \u{202e}rtl",
                "尾巴空格 \\",
            ],
        );
    }

    #[test]
    fn a_new_entry_goes_at_the_end_of_the_list_apart_like_the_others() {
        let entry = Faq {
            id: "会员: 积分".into(),
            question: "积分怎么用".into(),
            variants: strings(&["积分能抵钱吗"]),
            answer: String::new(),
            products: Vec::new(),
        };
        let out = append_entry(FILE, &entry, date()).unwrap();
        assert!(
            out.ends_with(
                "    answer: 答三\n\n  # kefu mine 2026-12-06\n  - id: '会员: 积分'\n    question: 积分怎么用\n    variants:\n      \
                 - 积分能抵钱吗\n    answer: \"\"\n"
            ),
            "{out}"
        );
        let out = append_entry("products: []\n", &entry, date()).unwrap();
        assert_eq!(entries_of(&out).unwrap(), std::slice::from_ref(&entry), "{out}");
        let out = append_entry("faq: []\n", &entry, date()).unwrap();
        assert_eq!(entries_of(&out).unwrap(), std::slice::from_ref(&entry), "{out}");
        assert!(append_entry("faq: [{id: a}]\n", &entry, date()).is_err());
    }
}
