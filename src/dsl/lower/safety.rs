//! Lowering the `safety` blocks into one compiled [`Safety`]: word lists from the rule
//! files or list files (with where each applies and whether it is segmented), the allow
//! list, PII kinds and the shop's order numbers, with words that normalize to nothing
//! reported where they are written.

use std::collections::HashMap;

use super::Lowerer;
use crate::diag::{Diagnostic, Span};
use crate::dsl::ast;
use crate::safety::{self, Applies, Fold, ListAction, OrderNumber, PiiKind, Safety, SafetyConfig, Skipped};

/// Personal data an order-number pattern should not match, or such numbers go unmasked:
/// a mobile number, a resident ID number (valid check digit) and a UnionPay card.
const SAMPLES: [(&str, &str); 3] = [
    ("13812345678", "mobile numbers"),
    ("440308199001011239", "resident ID numbers"),
    ("6222021234563257", "bank cards"),
];

/// The kind of a list as written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Block,
    Mask,
    Flag,
}

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
    /// word, in its list file when it comes from one. `entities` are the declared ones,
    /// for `order_number` naming an entity.
    pub(super) fn safety(&mut self, blocks: &[ast::Safety], entities: &[ast::Entity]) -> Safety {
        let mut config = SafetyConfig::default();
        // Where each list's words and each allowed phrase come from, for diagnostics.
        let mut list_sources: Vec<(&ast::WordList, Span)> = Vec::new();
        let mut allow_sources: Vec<(&ast::WordSource, Span)> = Vec::new();
        let mut default_reply: Option<(String, Span)> = None;
        let mut categories: HashMap<String, Span> = HashMap::new();
        let mut lists: Vec<(&ast::WordList, Kind)> = Vec::new();
        let mut order_number: Option<Span> = None;
        for entry in blocks.iter().flat_map(|b| &b.entries) {
            match entry {
                ast::SafetyEntry::Block(list) => lists.push((list, Kind::Block)),
                ast::SafetyEntry::Mask(list) => lists.push((list, Kind::Mask)),
                ast::SafetyEntry::Flag(list) => lists.push((list, Kind::Flag)),
                ast::SafetyEntry::OrderNumber(target) => {
                    let at = match target {
                        ast::OrderNumber::Regex { span, .. } => *span,
                        ast::OrderNumber::Entity(name) => name.span,
                    };
                    if let Some(first) = order_number {
                        self.push(
                            Diagnostic::error(at, "`order_number` is given more than once")
                                .with_secondary(first, "first one here"),
                        );
                        continue;
                    }
                    order_number = Some(at);
                    config.order_number = self.order_number(target, entities);
                }
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
        for (list, kind) in lists {
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
            let action = match kind {
                Kind::Block => ListAction::Block {
                    reply: list
                        .reply
                        .as_ref()
                        .map_or_else(|| default_reply.clone(), |r| r.value.clone()),
                },
                Kind::Mask | Kind::Flag => {
                    if let Some(reply) = &list.reply {
                        let (what, label) = if kind == Kind::Mask {
                            (
                                "a `mask` list has no reply",
                                "masked words are replaced and the message goes on",
                            )
                        } else {
                            (
                                "a `flag` list has no reply",
                                "flagged words only tell rules, in `safety.flags`",
                            )
                        };
                        self.push(
                            Diagnostic::error(reply.span, what)
                                .with_label(label)
                                .with_help("use `block` to answer with a reply instead"),
                        );
                    }
                    if kind == Kind::Mask {
                        ListAction::Mask
                    } else {
                        ListAction::Flag
                    }
                }
            };
            let on = self.applies(list, kind);
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
                on,
                segmented: list.segmented.is_some(),
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

    /// Where a list applies: its `on`, else both sides (a `flag` list: messages, the only
    /// side it can read).
    fn applies(&mut self, list: &ast::WordList, kind: Kind) -> Applies {
        let Some(on) = &list.on else {
            return if kind == Kind::Flag {
                Applies::Messages
            } else {
                Applies::Both
            };
        };
        let applies = match on.name.parse::<Applies>() {
            Ok(applies) => applies,
            Err(()) => {
                let near = crate::diag::closest(&on.name, Applies::ALL.map(Applies::name).into_iter());
                let help = match near {
                    Some(near) => format!("did you mean `{near}`? "),
                    None => String::new(),
                };
                self.push(
                    Diagnostic::error(on.span, format!("unknown side `{}`", on.name))
                        .with_label("where the list applies")
                        .with_help(format!(
                            "{help}a list applies `on messages` (the customer's), `on replies` (kefu's) or `on both`, the default"
                        )),
                );
                return Applies::Both;
            }
        };
        if kind == Kind::Flag && applies != Applies::Messages {
            self.push(
                Diagnostic::error(on.span, format!("a `flag` list cannot be `on {}`", on.name))
                    .with_label("flags are noted in customers' messages only")
                    .with_help("leave out `on`, or use `block` or `mask` to act on replies"),
            );
            return Applies::Messages;
        }
        applies
    }

    /// The shop's order numbers: the pattern written, or a regex entity's.
    fn order_number(&mut self, target: &ast::OrderNumber, entities: &[ast::Entity]) -> Option<OrderNumber> {
        let (pattern, span) = match target {
            ast::OrderNumber::Regex { pattern, span } => (pattern.clone(), *span),
            ast::OrderNumber::Entity(name) => {
                let found = entities.iter().find(|e| e.name.name == name.name);
                match found.map(|e| &e.kind) {
                    Some(ast::EntityKind::Regex { pattern, span, .. }) => (pattern.clone(), *span),
                    Some(ast::EntityKind::Lexicon(_)) => {
                        self.push(
                            Diagnostic::error(name.span, format!("entity `{}` is a word list, not a pattern", name.name))
                                .with_help("name an entity written as `/pattern/`, or write the pattern here: `order_number /\\d{12}/`"),
                        );
                        return None;
                    }
                    None => {
                        let names: Vec<&str> = entities.iter().map(|e| e.name.name.as_str()).collect();
                        self.unknown(name, "entity", names.iter().copied());
                        return None;
                    }
                }
            }
        };
        match OrderNumber::new(&pattern) {
            Ok(orders) => {
                let hits: Vec<(&str, &str)> = SAMPLES
                    .into_iter()
                    .filter(|(sample, _)| orders.matches(sample))
                    .collect();
                if !hits.is_empty() {
                    let what: Vec<&str> = hits.iter().map(|(_, what)| *what).collect();
                    let samples: Vec<String> = hits.iter().map(|(sample, _)| format!("`{sample}`")).collect();
                    self.push(
                        Diagnostic::warning(
                            span,
                            format!("this order-number pattern also matches {}", what.join(", ")),
                        )
                        .with_label(format!("{} would not be masked", samples.join(", ")))
                        .with_help("make the pattern as narrow as your order numbers, e.g. `2026\\d{8}`"),
                    );
                }
                Some(orders)
            }
            Err(e) => {
                // An entity's pattern is reported where the entity is lowered.
                if matches!(target, ast::OrderNumber::Regex { .. }) {
                    self.regex_error(&pattern, span, &e);
                }
                None
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
