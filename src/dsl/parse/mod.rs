//! From text to syntax tree: the pest parser and the walk that builds [`ast`](super::ast).
//!
//! Parsing never fails: it returns the items it could read and a diagnostic for each
//! syntax error. After an error it skips to the next line that starts, at column 1, with
//! an item keyword (`rule`, `flow`, ...), so that one typo does not hide the next.
//!
//! Nesting is bounded: an `if` more than [`MAX_NESTING`] blocks deep is an error at that
//! `if`, and the steps inside it are not built, so that everything after the parser
//! (lowering, flow compilation, dropping the tree) recurses at most that deep. pest's own
//! recursion is guarded by its stack probe, whose "stack limit reached" becomes the same
//! error. A rule file can then never take a thread's stack down, whatever its size.
//!
//! This file runs the parse and its recovery; `build` and `items` walk pest's pairs into
//! the syntax tree (the literals, then each item kind), and `errors` words pest's errors
//! for an editor.

mod build;
mod errors;
mod items;

use pest::Parser as _;
use pest::iterators::Pair;

use super::ast::Item;
use crate::diag::{Diagnostic, FileId};
use build::Builder;
use errors::syntax_error;

pub use grammar::{KefuParser, Rule};

mod grammar {
    // pest_derive generates undocumented helper functions; the grammar rules themselves
    // are documented in grammar/kefu.pest and those docs appear on `Rule`.
    #![allow(missing_docs)]

    /// The pest parser generated from `grammar/kefu.pest`.
    #[derive(pest_derive::Parser)]
    #[grammar = "../grammar/kefu.pest"]
    pub struct KefuParser;
}

/// Inner pairs without keyword and brace tokens, which only the grammar cares about.
fn inner(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| !is_token(p.as_rule()))
}

/// Whether a rule is a keyword or brace token.
fn is_token(r: Rule) -> bool {
    matches!(
        r,
        Rule::lbrace
            | Rule::rbrace
            | Rule::kw_allow
            | Rule::kw_applies
            | Rule::kw_as
            | Rule::kw_ask
            | Rule::kw_alone
            | Rule::kw_card
            | Rule::kw_pattern
            | Rule::kw_block
            | Rule::kw_call
            | Rule::kw_cancel
            | Rule::kw_context
            | Rule::kw_else
            | Rule::kw_end
            | Rule::kw_entity
            | Rule::kw_event
            | Rule::kw_examples
            | Rule::kw_fallback
            | Rule::kw_fallback_message
            | Rule::kw_file
            | Rule::kw_flag
            | Rule::kw_forget
            | Rule::kw_flow
            | Rule::kw_flow_timeout
            | Rule::kw_for
            | Rule::kw_from
            | Rule::kw_goto
            | Rule::kw_handoff
            | Rule::kw_handoff_message
            | Rule::kw_http
            | Rule::kw_if
            | Rule::kw_intent
            | Rule::kw_key
            | Rule::kw_languages
            | Rule::kw_keywords
            | Rule::kw_llm
            | Rule::kw_mask
            | Rule::kw_on
            | Rule::kw_otherwise
            | Rule::kw_persona
            | Rule::kw_order_number
            | Rule::kw_pii
            | Rule::kw_policy
            | Rule::kw_priority
            | Rule::kw_remember
            | Rule::kw_promotion
            | Rule::kw_reply
            | Rule::kw_retry
            | Rule::kw_reask
            | Rule::kw_confirm
            | Rule::kw_flow_updated_message
            | Rule::kw_goodbye_message
            | Rule::kw_ack_message
            | Rule::kw_more_message
            | Rule::kw_confirm_again_message
            | Rule::kw_upcoming_days
            | Rule::kw_max_answers
            | Rule::kw_rule
            | Rule::kw_safety
            | Rule::kw_say
            | Rule::kw_segmented
            | Rule::kw_set
            | Rule::kw_shop
            | Rule::kw_source
            | Rule::kw_start
            | Rule::kw_style
            | Rule::kw_text
            | Rule::kw_threshold
            | Rule::kw_model_threshold
            | Rule::kw_within
            | Rule::kw_faq_threshold
            | Rule::kw_timeout
            | Rule::kw_timezone
            | Rule::kw_translate
            | Rule::kw_to
            | Rule::kw_tone
            | Rule::kw_temperature
            | Rule::kw_top_p
            | Rule::kw_when
            | Rule::kw_without
            | Rule::kw_default_reply
            | Rule::kw_words
            | Rule::kw_queue
            | Rule::kw_label
            | Rule::kw_hours
            | Rule::kw_off_hours
            | Rule::kw_waiting
            | Rule::kw_proactive
            | Rule::kw_proactive_limit
            | Rule::kw_quiet_hours
            | Rule::kw_opt_out_message
            | Rule::kw_quiet
            | Rule::kw_limit
            | Rule::kw_per
            | Rule::kw_day
            | Rule::kw_offer
            | Rule::kw_image
    )
}

/// Keywords that start a top-level item; used to find where to go on after an error.
const ITEM_KEYWORDS: [&str; 14] = [
    "shop",
    "intent",
    "entity",
    "card",
    "source",
    "rule",
    "promotion",
    "policy",
    "flow",
    "style",
    "fallback",
    "safety",
    "queue",
    "proactive",
];

/// How many blocks deep steps may nest: `if` inside `if`, and each `else if` of a chain,
/// is one level. Real flows use three or four; the bound keeps every recursion over the
/// syntax tree short enough for a 2 MiB thread stack (docs/language.md, "Branches").
pub const MAX_NESTING: usize = 64;

/// pest's message when its stack probe stops a parse (pest 2.9's stack guard).
const PEST_STACK_LIMIT: &str = "stack limit reached";

/// Advice for a flow nested beyond [`MAX_NESTING`].
const NESTING_HELP: &str =
    "keep nesting shallow: test conditions one after another (with `goto` between them) rather than inside each other";

/// Parses one file into items, with a diagnostic for every syntax error found.
pub fn parse_file(file: FileId, text: &str) -> (Vec<Item>, Vec<Diagnostic>) {
    let mut items = Vec::new();
    let mut diagnostics = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let rest = &text[pos..];
        if only_blanks(rest) {
            break;
        }
        match KefuParser::parse(Rule::item_entry, rest) {
            Ok(mut pairs) => {
                let Some(pair) = pairs.next() else { break };
                let end = pair.as_span().end();
                let mut builder = Builder {
                    file,
                    base: pos,
                    depth: 0,
                    diagnostics: &mut diagnostics,
                };
                if let Some(item) = builder.item(pair) {
                    items.push(item);
                }
                // pest consumed at least the item keyword, so this always advances.
                pos += end.max(1);
            }
            Err(error) => {
                let diagnostic = syntax_error(file, pos, rest, &error);
                let error_at = diagnostic.primary.span.start;
                diagnostics.push(diagnostic);
                let line_start = text[..error_at].rfind('\n').map_or(0, |i| i + 1);
                // Past at least one character (not one byte: the file may start with 规).
                let past = pos + text[pos..].chars().next().map_or(1, char::len_utf8);
                match next_item_start(text, past.max(line_start)) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
        }
    }
    (items, diagnostics)
}

/// Whether `rest` holds nothing but blanks and comments (the grammar's `WHITESPACE` and
/// `COMMENT`), checked by hand. Asking pest costs a failed parse per item, and building that failure's
/// error made loading 10,000 rules take seconds.
fn only_blanks(rest: &str) -> bool {
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' | '\u{3000}' | '\u{FEFF}' => {}
            '#' => {
                // A comment runs to the end of the line.
                if !chars.by_ref().any(|c| c == '\n' || c == '\r') {
                    return true;
                }
            }
            _ => return false,
        }
    }
    true
}

/// The first line at or after `from` that starts with an item keyword at column 1.
/// `from` may fall inside a character; it is moved to the next character boundary.
fn next_item_start(text: &str, from: usize) -> Option<usize> {
    let from = ceil_boundary(text, from);
    let mut line_start = match text[..from].rfind('\n') {
        Some(i) if i + 1 == from => from,
        _ if from == 0 => 0,
        _ => from + text[from..].find('\n')? + 1,
    };
    while line_start < text.len() {
        let line = &text[line_start..];
        let starts_item = ITEM_KEYWORDS.iter().any(|kw| {
            line.strip_prefix(kw)
                .is_some_and(|after| after.starts_with(|c: char| c.is_whitespace() || c == '{' || c == '"'))
        });
        if starts_item {
            return Some(line_start);
        }
        line_start += line.find('\n')? + 1;
    }
    None
}

/// The first character boundary at or after `i` (the end of `s` at most).
fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_blanks_and_comments_end_a_file() {
        assert!(only_blanks(""));
        assert!(only_blanks(" \t\r\n\u{3000}\u{FEFF}"));
        assert!(only_blanks("# 结尾的注释\n\n# 没有换行"));
        assert!(!only_blanks("# 注释\nrule 甲 {}"));
        assert!(!only_blanks("  x"));
        // A lone carriage return ends a comment too, as pest's NEWLINE does.
        assert!(!only_blanks("# 注释\rrule"));
    }

    #[test]
    fn recovery_reports_each_broken_item() {
        let text = "rule a {\n  on keywords \"x\"\n  repy \"y\"\n}\n\nrule b {\n  on keywords \"z\" reply \"w\"\n}\n\nflow c {\n  ask x\n}\n";
        let (items, diagnostics) = parse_file(0, text);
        assert_eq!(diagnostics.len(), 2, "{diagnostics:#?}");
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn a_file_starting_with_a_multibyte_character_is_an_error_not_a_panic() {
        for text in ["规则 七天无理由 {\n}\n", "客", "\u{3000}规", "𝐀\n"] {
            let (items, diagnostics) = parse_file(0, text);
            assert!(items.is_empty() && diagnostics.len() == 1, "{text:?}: {diagnostics:#?}");
        }
        let (items, diagnostics) = parse_file(0, "客\nrule 甲 {\n}\n");
        assert_eq!((items.len(), diagnostics.len()), (1, 1));
        assert_eq!(next_item_start("客\nrule 甲 {}", 1), Some("客\n".len()));
    }

    #[test]
    fn next_item_start_finds_column_one_keywords_only() {
        let text = "rule a {\n  rule inside\n}\nflow b {\n}\n";
        assert_eq!(next_item_start(text, 1), Some(text.find("flow").unwrap()));
    }
}
