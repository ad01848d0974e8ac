//! Lowering intents and entities, what understanding is trained on: intent paths and
//! examples checked, entity regexes built (errors placed inside the pattern), lexicon
//! words bounded in length.

use std::collections::HashMap;

use super::Lowerer;
use crate::diag::{Diagnostic, Span};
use crate::dsl::ast;
use crate::nlu::{Entity, EntityMatcher, Intent};

/// The longest entity word, in characters. Building the recogniser grows much faster
/// than the word: one of 15,000 characters (found by the rule-file fuzzer) kept a load
/// busy for minutes. Real entity words are a few characters.
const MAX_ENTITY_WORD_CHARS: usize = 100;

impl Lowerer<'_> {
    pub(super) fn intents(&mut self, intents: &[ast::Intent]) -> Vec<Intent> {
        let mut out = Vec::new();
        let mut examples_seen: HashMap<String, (String, Span)> = HashMap::new();
        for intent in intents {
            let levels = intent.name.name.split('.').count();
            if levels > 3 {
                self.push(
                    Diagnostic::error(
                        intent.name.span,
                        format!(
                            "intent `{}` has {levels} levels; intent names have at most three",
                            intent.name.name
                        ),
                    )
                    .with_help("use `一级.二级.三级`, e.g. `售后.退货.七天无理由`"),
                );
            }
            if intent.examples.len() < 3 {
                let n = intent.examples.len();
                let d = Diagnostic::warning(
                    intent.name.span,
                    format!(
                        "intent `{}` has {n} example{}; the classifier needs at least 3",
                        intent.name.name,
                        if n == 1 { "" } else { "s" }
                    ),
                )
                .with_label("too few examples to learn from")
                .with_help("add examples written the way customers type them");
                self.push(d);
            }
            for example in &intent.examples {
                let key = example.value.trim().to_lowercase();
                if key.is_empty() {
                    self.push(Diagnostic::error(example.span, "empty example"));
                    continue;
                }
                match examples_seen.get(&key) {
                    Some((other, first)) if *other != intent.name.name => {
                        let d = Diagnostic::warning(
                            example.span,
                            format!(
                                "example `{}` is given for intents `{other}` and `{}`",
                                example.value, intent.name.name
                            ),
                        )
                        .with_label("also an example of another intent")
                        .with_secondary(*first, format!("example of `{other}` here"))
                        .with_help("an example should teach one intent; remove it from one of them");
                        self.push(d);
                    }
                    Some(_) => {}
                    None => {
                        examples_seen.insert(key, (intent.name.name.clone(), example.span));
                    }
                }
            }
            self.check_keywords(&intent.keywords);
            out.push(Intent {
                name: intent.name.name.clone(),
                examples: intent.examples.iter().map(|s| s.value.clone()).collect(),
                keywords: intent.keywords.iter().map(|s| s.value.clone()).collect(),
                span: intent.name.span,
            });
        }
        out
    }

    pub(super) fn entities(&mut self, entities: &[ast::Entity]) -> Vec<Entity> {
        let mut out = Vec::new();
        for entity in entities {
            if entity.name.name == crate::ruleset::IMAGE_SLOT {
                self.push(
                    Diagnostic::error(entity.name.span, "`image` is a built-in slot kind, not an entity")
                        .with_label("photos are not read from the text")
                        .with_help("`ask 照片 as image \"请拍一张…\"` already takes the customer's photo; name this entity otherwise"),
                );
                continue;
            }
            let matcher = match &entity.kind {
                ast::EntityKind::Regex { pattern, span, flags } => {
                    self.pattern(pattern, *span, flags).map(EntityMatcher::Regex)
                }
                ast::EntityKind::Lexicon(entries) => {
                    if entries.is_empty() {
                        self.push(Diagnostic::error(
                            entity.name.span,
                            format!("entity `{}` has an empty word list", entity.name.name),
                        ));
                        None
                    } else {
                        let mut pairs = Vec::new();
                        for (surface, canonical) in entries {
                            if surface.value.trim().is_empty() {
                                self.push(Diagnostic::error(surface.span, "empty entity word"));
                                continue;
                            }
                            if surface.value.chars().count() > MAX_ENTITY_WORD_CHARS {
                                self.push(
                                    Diagnostic::error(
                                        surface.span,
                                        format!("entity word is longer than {MAX_ENTITY_WORD_CHARS} characters"),
                                    )
                                    .with_help("an entity word is a short name as customers write it: `\"藏青\" => \"藏青色\"`"),
                                );
                                continue;
                            }
                            let canonical = canonical.as_ref().unwrap_or(surface);
                            pairs.push((surface.value.clone(), canonical.value.clone()));
                        }
                        Some(EntityMatcher::Lexicon(pairs))
                    }
                }
            };
            if let Some(matcher) = matcher {
                out.push(Entity {
                    name: entity.name.name.clone(),
                    matcher,
                });
            }
        }
        out
    }

    /// Reports a regex error at its position inside the pattern when the parser can say
    /// where, else at the whole pattern.
    /// Builds a pattern written between slashes with its flags (`i`, `m`, `s`, `x`), for
    /// entities and cards alike; an unknown flag or an error inside the pattern is reported
    /// where it is written.
    pub(super) fn pattern(&mut self, pattern: &str, span: Span, flags: &ast::Ident) -> Option<regex::Regex> {
        let mut builder = regex::RegexBuilder::new(pattern);
        let mut flags_ok = true;
        for (i, flag) in flags.name.char_indices() {
            match flag {
                'i' => builder.case_insensitive(true),
                'm' => builder.multi_line(true),
                's' => builder.dot_matches_new_line(true),
                'x' => builder.ignore_whitespace(true),
                other => {
                    let at = flags.span.start + i;
                    self.push(
                        Diagnostic::error(
                            Span::new(flags.span.file, at, at + 1),
                            format!("unknown regex flag `{other}`"),
                        )
                        .with_help("the flags are `i` (ignore case), `m`, `s` and `x`"),
                    );
                    flags_ok = false;
                    continue;
                }
            };
        }
        match builder.build() {
            Ok(re) => flags_ok.then_some(re),
            Err(e) => {
                self.regex_error(pattern, span, &e);
                None
            }
        }
    }

    pub(super) fn regex_error(&mut self, pattern: &str, span: Span, error: &regex::Error) {
        let parsed = regex_syntax::ast::parse::Parser::new().parse(pattern);
        let d = match parsed {
            Err(e) => {
                let s = e.span();
                let start = span.start + s.start.offset;
                let end = (span.start + s.end.offset).max(start + 1).min(span.end.max(start + 1));
                Diagnostic::error(Span::new(span.file, start, end), format!("invalid regex: {}", e.kind()))
                    .with_label("here")
            }
            Ok(_) => {
                let message = error.to_string();
                let last = message
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or(&message)
                    .trim()
                    .trim_start_matches("error: ");
                Diagnostic::error(span, format!("invalid regex: {last}"))
            }
        };
        self.push(d);
    }
}

/// `售后.退货.七天` → `售后`, `售后.退货`, `售后.退货.七天`.
pub(super) fn ancestors_and_self(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut prefix = String::new();
    for level in path.split('.') {
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(level);
        out.push(prefix.clone());
    }
    out
}
