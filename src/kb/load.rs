//! Reading `rules/kb/*.yaml` into a [`KnowledgeBase`], with diagnostics in the files.
//!
//! Each file may hold `products:`, `faq:` and `canned:` (agents' canned replies) lists; the shop may keep everything in one
//! file or split it (`products.yaml`, `faq_售后.yaml`). Files are read in name order. YAML
//! syntax errors and unknown or mistyped fields (serde with `deny_unknown_fields`) are
//! reported at their line and column in the kb file; checks across entries (duplicate ids,
//! FAQ entries about unknown products) point at the entry's `id:` line; an entry without
//! an answer yet at its `answer:` line.
//! Any error fails the whole load, so a broken kb edit leaves the old rules serving.
//! Files are read through [`crate::diag::files::read`]: regular files inside the rules directory, at
//! most 16 MiB each.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{Canned, Faq, KnowledgeBase, Product};
use crate::diag::files::Overlay;
use crate::diag::{Diagnostic, FileId, SourceMap, Span, closest};

/// The directory under the rules directory that holds the knowledge base.
pub const KB_DIR: &str = "kb";

/// One kb file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KbFile {
    #[serde(default)]
    products: Vec<Product>,
    #[serde(default)]
    faq: Vec<Faq>,
    #[serde(default)]
    canned: Vec<Canned>,
}

/// Reads every `*.yaml`/`*.yml` file in `root/kb` (not recursively) and builds the index.
/// A missing `kb` directory is an empty knowledge base. Files are added to `sources`, so
/// diagnostics can show them and the rule set's version covers them.
/// Texts in `overlay` are read instead of the files, and its kb files count as if they
/// were on disk.
pub fn load(
    root: &Path,
    overlay: &Overlay,
    sources: &mut SourceMap,
    diagnostics: &mut Vec<Diagnostic>,
) -> KnowledgeBase {
    let dir = root.join(KB_DIR);
    let mut paths: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            // Not `is_file`: a FIFO or device named `*.yaml` is refused with a diagnostic
            // by `files::read` rather than skipped without a word.
            .filter(|p| !p.is_dir() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            let id = sources.add(dir.clone(), String::new());
            diagnostics.push(Diagnostic::error(
                Span::new(id, 0, 0),
                format!("cannot read the knowledge-base directory: {e}"),
            ));
            return KnowledgeBase::default();
        }
    };
    paths.extend(overlay.files_in(root, Path::new(KB_DIR), false, &["yaml", "yml"]));
    if paths.is_empty() {
        return KnowledgeBase::default();
    }
    paths.sort();
    paths.dedup();

    let mut products: Vec<(FileId, Product)> = Vec::new();
    let mut faqs: Vec<(FileId, Faq)> = Vec::new();
    let mut canned: Vec<(FileId, Canned)> = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        let text = match overlay.read(root, &path) {
            Ok(t) => t,
            Err(e) => {
                let id = sources.add(path.clone(), String::new());
                diagnostics.push(Diagnostic::error(
                    Span::new(id, 0, 0),
                    format!("cannot read this file: {e}"),
                ));
                continue;
            }
        };
        let parsed = if text.trim().is_empty() {
            Ok(KbFile::default())
        } else {
            serde_yaml::from_str::<KbFile>(&text)
        };
        let id = sources.add(path.clone(), text);
        files.push(path);
        match parsed {
            Ok(file) => {
                products.extend(file.products.into_iter().map(|p| (id, p)));
                faqs.extend(file.faq.into_iter().map(|f| (id, f)));
                canned.extend(file.canned.into_iter().map(|c| (id, c)));
            }
            Err(e) => {
                let file = sources.file(id);
                let at = e.location().map_or(0, |l| file.offset_of(l.line(), l.column()));
                let message = e.to_string();
                let message = message.split(" at line ").next().unwrap_or(&message);
                diagnostics.push(
                    Diagnostic::error(sources.char_span(id, at), format!("invalid knowledge base: {message}"))
                        .with_help("a kb file holds `products:` and `faq:` lists; see docs/knowledge-base.md"),
                );
            }
        }
    }

    check(&products, &faqs, sources, diagnostics);
    check_canned(&mut canned, sources, diagnostics);
    let mut kb = KnowledgeBase::build(
        products.into_iter().map(|(_, p)| p).collect(),
        faqs.into_iter().map(|(_, f)| f).collect(),
        files,
    );
    kb.canned = canned.into_iter().map(|(_, c)| c).collect();
    kb
}

/// Checks the canned replies (titles unique and not empty, texts not empty), places each
/// at its `title:` line and makes its search pairs.
fn check_canned(canned: &mut [(FileId, Canned)], sources: &SourceMap, diagnostics: &mut Vec<Diagnostic>) {
    let mut occurrences: HashMap<(FileId, String), usize> = HashMap::new();
    let mut seen: HashMap<String, Span> = HashMap::new();
    for (file, c) in canned.iter_mut() {
        let n = occurrences.entry((*file, c.title.clone())).or_default();
        *n += 1;
        let span = locate(sources, *file, "title", &c.title, *n - 1);
        c.span = Some(span);
        c.index();
        if c.title.trim().is_empty() {
            diagnostics.push(Diagnostic::error(span, "canned reply with an empty title"));
        }
        if c.text.trim().is_empty() {
            diagnostics.push(Diagnostic::error(
                span,
                format!("canned reply `{}` has an empty text", c.title),
            ));
        }
        if let Some(first) = seen.insert(c.title.clone(), span) {
            diagnostics.push(
                Diagnostic::error(span, format!("duplicate canned reply `{}`", c.title))
                    .with_label("defined again here")
                    .with_secondary(first, "first defined here")
                    .with_help("agents pick canned replies by title; give each its own"),
            );
        }
    }
}

/// Checks across entries; every finding points at the entry's `id:` line.
fn check<'a>(
    products: &'a [(FileId, Product)],
    faqs: &'a [(FileId, Faq)],
    sources: &SourceMap,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let span_of = |file: FileId, key: &str, value: &str| locate(sources, file, key, value, 0);
    // The n-th `id: X` line of a file belongs to the n-th entry with that id in it.
    let mut occurrences: HashMap<(FileId, &str), usize> = HashMap::new();
    let mut id_span = |file: FileId, id: &'a str| {
        let n = occurrences.entry((file, id)).or_default();
        *n += 1;
        locate(sources, file, "id", id, *n - 1)
    };

    let mut seen: HashMap<&str, Span> = HashMap::new();
    for (file, p) in products {
        let span = id_span(*file, &p.id);
        if let Some(first) = seen.insert(&p.id, span) {
            diagnostics.push(
                Diagnostic::error(span, format!("duplicate product `{}`", p.id))
                    .with_label("defined again here")
                    .with_secondary(first, "first defined here"),
            );
        }
        if p.name.trim().is_empty() {
            diagnostics.push(Diagnostic::error(span, format!("product `{}` has an empty name", p.id)));
        }
        if !(p.price >= 0.0 && p.price.is_finite()) {
            diagnostics.push(Diagnostic::error(
                span,
                format!("product `{}` has a negative price", p.id),
            ));
        }
        for color in p.stock.keys() {
            if !p.colors.is_empty() && !p.colors.contains(color) {
                diagnostics.push(
                    Diagnostic::warning(
                        or_entry(span_of(*file, color, ""), span),
                        format!(
                            "stock for `{color}`, which is not among the colours of product `{}`",
                            p.id
                        ),
                    )
                    .with_help(format!("its colours: {}", p.colors.join(", "))),
                );
            }
        }
    }

    let product_ids: Vec<&str> = products.iter().map(|(_, p)| p.id.as_str()).collect();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    let mut questions: HashMap<String, &str> = HashMap::new();
    for (file, f) in faqs {
        let span = id_span(*file, &f.id);
        if let Some(first) = seen.insert(&f.id, span) {
            diagnostics.push(
                Diagnostic::error(span, format!("duplicate FAQ entry `{}`", f.id))
                    .with_label("defined again here")
                    .with_secondary(first, "first defined here"),
            );
        }
        if f.question.trim().is_empty() {
            diagnostics.push(Diagnostic::error(
                span,
                format!("FAQ entry `{}` has an empty question", f.id),
            ));
        }
        if f.answer.trim().is_empty() {
            // A drafted entry (`kefu mine --accept`) is written with `answer: ""` on
            // purpose: the draft must not publish until someone writes the answer, and the
            // error points at the line to fill in.
            diagnostics.push(
                Diagnostic::error(
                    entry_field(sources, span, "answer").unwrap_or(span),
                    format!(
                        "FAQ entry `{}` has no answer yet: write the answer the customer should get",
                        f.id
                    ),
                )
                .with_label("the answer goes here"),
            );
        }
        if f.variants.is_empty() {
            diagnostics.push(
                Diagnostic::warning(span, format!("FAQ entry `{}` has no variants", f.id))
                    .with_help("customers seldom ask in the shop's words; add a few ways they ask it"),
            );
        }
        for product in &f.products {
            if !product_ids.contains(&product.as_str()) {
                let mut d = Diagnostic::error(
                    or_entry(span_of(*file, "products", product), span),
                    format!("FAQ entry `{}` is about unknown product `{product}`", f.id),
                );
                if let Some(near) = closest(product, product_ids.iter().copied()) {
                    d = d.with_help(format!("did you mean `{near}`?"));
                }
                diagnostics.push(d);
            }
        }
        for q in std::iter::once(&f.question).chain(&f.variants) {
            let key = super::text::cache_form(q);
            match questions.get(&key) {
                Some(other) if *other != f.id => diagnostics.push(Diagnostic::warning(
                    span,
                    format!("question `{q}` is given for FAQ entries `{other}` and `{}`", f.id),
                )),
                _ => {
                    questions.insert(key, &f.id);
                }
            }
        }
    }
}

/// Where the FAQ entry `id` is written: its kb file's path relative to `root` (with `/`),
/// and the 1-based line and column (in characters) of its `id:` value; `None` when no kb
/// file names it. For the console's test chat, which points at what answered; the files
/// are read again here since a built rule set keeps no positions of kb entries.
pub fn faq_location(root: &Path, id: &str) -> Option<(String, usize, usize)> {
    let dir = root.join(KB_DIR);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    paths.sort();
    for path in paths {
        let Ok(text) = crate::diag::files::read(root, &path) else {
            continue;
        };
        let mut sources = SourceMap::default();
        let file = sources.add(path.clone(), text);
        let span = locate(&sources, file, "id", id, 0);
        if span.start == 0 && span.end == 0 {
            continue;
        }
        let (line, col) = sources.file(file).line_col(span.start);
        let relative = path.strip_prefix(root).unwrap_or(&path);
        let name = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        return Some((name, line, col));
    }
    None
}

/// The span of `value` on the `skip`+1-th line of `file` that reads `key: value` (a list
/// item's `- key: value` too; quotes allowed). With an empty `value`, a `key:` line. The
/// start of the file when nothing matches: serde does not keep positions of parsed values.
fn locate(sources: &SourceMap, file: FileId, key: &str, value: &str, mut skip: usize) -> Span {
    let text = &sources.file(file).text;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let trimmed = trimmed.strip_prefix("- ").map_or(trimmed, str::trim_start);
        if let Some(rest) = trimmed.strip_prefix(key).and_then(|r| r.trim_start().strip_prefix(':')) {
            let rest_trimmed = rest.trim();
            let unquoted = rest_trimmed.trim_matches(|c| c == '"' || c == '\'');
            let hit = value.is_empty() || unquoted == value || (key == "products" && rest.contains(value));
            if hit && skip > 0 {
                skip -= 1;
            } else if hit {
                let start = offset + (line.len() - trimmed.len());
                let (start, end) = match (value.is_empty(), line.find(value)) {
                    (false, Some(i)) => (offset + i, offset + i + value.len()),
                    _ => (start, start + key.len()),
                };
                return Span::new(file, start, end);
            }
        }
        offset += line.len();
    }
    Span::new(file, 0, 0)
}

/// The span of the `key` of the list entry whose `id:` value is at `id` (`key: value` on
/// one of the entry's lines, `- key:` too): from the line starting the entry (`- `) to the
/// line before the next entry or the end of the list. `None` when the entry has no such
/// line or `id` is not on one (the empty span at the file start).
fn entry_field(sources: &SourceMap, id: Span, key: &str) -> Option<Span> {
    if id.start == 0 && id.end == 0 {
        return None;
    }
    let text = &sources.file(id.file).text;
    let indent = |line: &str| line.len() - line.trim_start().len();
    // The lines with their offsets; the entry starts at the last `- ` line at or before `id`.
    let mut lines = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        lines.push((offset, line));
        offset += line.len();
    }
    let at = lines.iter().rposition(|(start, _)| *start <= id.start)?;
    let first = (0..=at).rev().find(|&i| lines[i].1.trim_start().starts_with("- "))?;
    let dash = indent(lines[first].1);
    for (i, (start, line)) in lines.iter().enumerate().skip(first) {
        let trimmed = line.trim_start();
        let blank = trimmed.is_empty() || trimmed.starts_with('#');
        if i > first && !blank && indent(line) <= dash {
            break;
        }
        let field = trimmed.strip_prefix("- ").map_or(trimmed, str::trim_start);
        if field
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
        {
            let at = start + (line.len() - field.len());
            return Some(Span::new(id.file, at, at + key.len()));
        }
    }
    None
}

/// `span` unless [`locate`] found nothing (the empty span at the file start).
fn or_entry(span: Span, entry: Span) -> Span {
    if span.start == 0 && span.end == 0 { entry } else { span }
}
