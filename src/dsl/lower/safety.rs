//! Lowering the `safety` blocks into one compiled [`Safety`]: word lists from the rule
//! files or list files, the allow list and PII kinds, with words that normalize to nothing
//! reported where they are written.

use std::collections::HashMap;

use super::Lowerer;
use crate::diag::{Diagnostic, Span};
use crate::dsl::ast;
use crate::safety::{self, Fold, ListAction, PiiKind, Safety, SafetyConfig, Skipped};

impl Lowerer<'_> {
    /// A list's words; `None` when its file could not be read (already reported).
    fn words(&mut self, source: &ast::WordSource) -> Option<Vec<String>> {
        match source {
            ast::WordSource::Inline(words) => {
                self.check_keywords(words);
                Some(
                    words
                        .iter()
                        .map(|w| w.value.trim().to_string())
                        .filter(|w| !w.is_empty())
                        .collect(),
                )
            }
            ast::WordSource::File(path) => {
                let (_, text) = self.read_aux(path)?;
                Some(
                    text.lines()
                        .map(|l| l.split('#').next().unwrap_or("").trim())
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            }
        }
    }

    /// Merges the `safety` blocks into one configuration and compiles it. Problems that
    /// only show once words are normalized (a word of nothing but symbols) point at the
    /// word, in its list file when it comes from one.
    pub(super) fn safety(&mut self, blocks: &[ast::Safety]) -> Safety {
        let mut config = SafetyConfig::default();
        // Where each list's words and each allowed phrase come from, for diagnostics.
        let mut list_sources: Vec<(&ast::WordList, Span)> = Vec::new();
        let mut allow_sources: Vec<(&ast::WordSource, Span)> = Vec::new();
        let mut default_reply: Option<(String, Span)> = None;
        let mut categories: HashMap<String, Span> = HashMap::new();
        let mut lists: Vec<(&ast::WordList, bool)> = Vec::new();
        for entry in blocks.iter().flat_map(|b| &b.entries) {
            match entry {
                ast::SafetyEntry::Block(list) => lists.push((list, true)),
                ast::SafetyEntry::Mask(list) => lists.push((list, false)),
                ast::SafetyEntry::Allow(source) => {
                    let words = self.words(source).unwrap_or_default();
                    let span = match source {
                        ast::WordSource::File(path) => path.span,
                        ast::WordSource::Inline(words) => words.first().map_or(Span::default(), |w| w.span),
                    };
                    allow_sources.extend(words.iter().map(|_| (source, span)));
                    config.allow.extend(words);
                }
                ast::SafetyEntry::Pii(kinds) => {
                    for kind in kinds {
                        match kind.name.parse::<PiiKind>() {
                            Ok(k) if !config.pii.contains(&k) => config.pii.push(k),
                            Ok(_) => {}
                            Err(()) => {
                                let all = PiiKind::ALL.map(PiiKind::name);
                                self.unknown(kind, "pii kind", all.iter().copied());
                                if let Some(last) = self.diagnostics.last_mut() {
                                    last.help = Some(format!("the kinds are {}", all.join(", ")));
                                }
                            }
                        }
                    }
                }
                ast::SafetyEntry::Reply(text) => match &default_reply {
                    Some((_, first)) => {
                        let first = *first;
                        self.push(
                            Diagnostic::error(text.span, "`default_reply` is given more than once")
                                .with_secondary(first, "first one here"),
                        );
                    }
                    None => default_reply = Some((text.value.clone(), text.span)),
                },
            }
        }
        let default_reply = default_reply.map_or_else(|| safety::DEFAULT_BLOCK_REPLY.to_string(), |(r, _)| r);
        for (list, block) in lists {
            if let Some(first) = categories.get(&list.category.name) {
                let first = *first;
                self.push(
                    Diagnostic::error(
                        list.category.span,
                        format!("duplicate safety category `{}`", list.category.name),
                    )
                    .with_secondary(first, "first defined here"),
                );
                continue;
            }
            categories.insert(list.category.name.clone(), list.category.span);
            let mut without = Vec::new();
            for fold in &list.without {
                match fold.name.parse::<Fold>() {
                    Ok(f) => without.push(f),
                    Err(()) => {
                        let all = Fold::ALL.map(Fold::name);
                        self.unknown(fold, "fold", all.iter().copied());
                        if let Some(last) = self.diagnostics.last_mut() {
                            last.help = Some(format!("the folds are {}", all.join(", ")));
                        }
                    }
                }
            }
            let action = if block {
                ListAction::Block {
                    reply: list
                        .reply
                        .as_ref()
                        .map_or_else(|| default_reply.clone(), |r| r.value.clone()),
                }
            } else {
                if let Some(reply) = &list.reply {
                    self.push(
                        Diagnostic::error(reply.span, "a `mask` list has no reply")
                            .with_label("masked words are replaced and the message goes on")
                            .with_help("use `block` to answer with a reply instead"),
                    );
                }
                ListAction::Mask
            };
            let words = self.words(&list.words);
            // An unreadable file is already an error; an empty one is worth a warning.
            let unreadable = words.is_none();
            let words = words.unwrap_or_default();
            if words.is_empty() && !unreadable {
                self.push(Diagnostic::warning(
                    list.category.span,
                    format!("safety list `{}` has no words", list.category.name),
                ));
            }
            list_sources.push((list, list.category.span));
            config.lists.push(safety::WordList {
                category: list.category.name.clone(),
                action,
                words,
                without,
            });
        }
        let whole = blocks.first().map_or(Span::default(), |b| b.span);
        match Safety::build(config) {
            Ok(compiled) => {
                self.skipped_words(compiled.skipped(), &list_sources, &allow_sources);
                compiled
            }
            Err(errors) => {
                for error in errors {
                    self.push(Diagnostic::error(whole, error.to_string()));
                }
                Safety::default()
            }
        }
    }

    /// Diagnostics for list words and allowed phrases that normalize to nothing. Written
    /// in a rule file, such a word is an error; a line of a list file is a warning and is
    /// left out: an imported list may hold thousands of them, so only the first few of
    /// each file are shown one by one, then their number.
    fn skipped_words(
        &mut self,
        skipped: &[Skipped],
        list_sources: &[(&ast::WordList, Span)],
        allow_sources: &[(&ast::WordSource, Span)],
    ) {
        const SHOWN_PER_FILE: usize = 10;
        let mut shown: HashMap<usize, usize> = HashMap::new();
        let mut hidden: Vec<(usize, usize)> = Vec::new();
        for entry in skipped {
            let d = match entry {
                Skipped::Word { list, text, .. } => {
                    let (source, category) = list_sources[*list];
                    let from_file = matches!(source.words, ast::WordSource::File(_));
                    if from_file {
                        let count = shown.entry(*list).or_default();
                        if *count == SHOWN_PER_FILE {
                            match hidden.iter_mut().find(|(l, _)| l == list) {
                                Some((_, n)) => *n += 1,
                                None => hidden.push((*list, 1)),
                            }
                            continue;
                        }
                        *count += 1;
                    }
                    let at = self.word_span(&source.words, text).unwrap_or(category);
                    let d = if from_file {
                        Diagnostic::warning(at, entry.to_string())
                            .with_label("only symbols or blanks, which matching skips: left out")
                    } else {
                        Diagnostic::error(at, entry.to_string())
                            .with_label("only symbols or blanks, which matching skips")
                    };
                    d.with_secondary(category, "in this list")
                        .with_help("remove it, or add `without gaps` to the list to match symbols as written")
                }
                Skipped::Allow { index, text } => {
                    let (source, span) = allow_sources[*index];
                    let at = self.word_span(source, text).unwrap_or(span);
                    Diagnostic::error(at, entry.to_string())
                        .with_label("only symbols or blanks, which matching skips")
                        .with_help("remove it")
                }
            };
            self.push(d);
        }
        for (list, n) in hidden {
            let (source, category) = list_sources[list];
            self.push(
                Diagnostic::warning(
                    category,
                    format!(
                        "{n} more words of safety list `{}` are empty once normalized",
                        source.category.name
                    ),
                )
                .with_label("left out, like the ones shown above"),
            );
        }
    }

    /// Where a word of a list is written: its string, or its line in the list file (the
    /// file is added to the source map so the diagnostic can show it).
    fn word_span(&mut self, source: &ast::WordSource, word: &str) -> Option<Span> {
        match source {
            ast::WordSource::Inline(words) => words.iter().find(|w| w.value.trim() == word).map(|w| w.span),
            ast::WordSource::File(path) => {
                let full = self.root.join(&path.value);
                let text = self.inputs.iter().find(|(p, _)| *p == full)?.1.clone();
                let mut offset = 0;
                let mut found = None;
                for line in text.split_inclusive('\n') {
                    let content = line.split('#').next().unwrap_or("");
                    if content.trim() == word {
                        let start = offset + (content.len() - content.trim_start().len());
                        found = Some(start..start + word.len());
                        break;
                    }
                    offset += line.len();
                }
                let range = found?;
                let file = match self.sources.find(&full) {
                    Some(id) => id,
                    None => self.sources.add(full, text),
                };
                Some(Span::new(file, range.start, range.end))
            }
        }
    }
}
