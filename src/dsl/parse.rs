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

use pest::Parser as _;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;

use super::ast::*;
use crate::diag::{Diagnostic, FileId, Span};

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
            | Rule::kw_block
            | Rule::kw_call
            | Rule::kw_context
            | Rule::kw_else
            | Rule::kw_end
            | Rule::kw_entity
            | Rule::kw_examples
            | Rule::kw_fallback
            | Rule::kw_fallback_message
            | Rule::kw_file
            | Rule::kw_flow
            | Rule::kw_for
            | Rule::kw_from
            | Rule::kw_goto
            | Rule::kw_handoff
            | Rule::kw_handoff_message
            | Rule::kw_http
            | Rule::kw_if
            | Rule::kw_intent
            | Rule::kw_key
            | Rule::kw_keywords
            | Rule::kw_llm
            | Rule::kw_mask
            | Rule::kw_on
            | Rule::kw_otherwise
            | Rule::kw_persona
            | Rule::kw_pii
            | Rule::kw_policy
            | Rule::kw_priority
            | Rule::kw_promotion
            | Rule::kw_reply
            | Rule::kw_retry
            | Rule::kw_rule
            | Rule::kw_safety
            | Rule::kw_say
            | Rule::kw_set
            | Rule::kw_shop
            | Rule::kw_source
            | Rule::kw_start
            | Rule::kw_style
            | Rule::kw_text
            | Rule::kw_threshold
            | Rule::kw_faq_threshold
            | Rule::kw_timeout
            | Rule::kw_timezone
            | Rule::kw_to
            | Rule::kw_tone
            | Rule::kw_temperature
            | Rule::kw_top_p
            | Rule::kw_when
            | Rule::kw_without
            | Rule::kw_default_reply
            | Rule::kw_words
    )
}

/// Keywords that start a top-level item; used to find where to go on after an error.
const ITEM_KEYWORDS: [&str; 11] = [
    "shop",
    "intent",
    "entity",
    "source",
    "rule",
    "promotion",
    "policy",
    "flow",
    "style",
    "fallback",
    "safety",
];

/// How many blocks deep steps may nest: `if` inside `if`, and each `else if` of a chain,
/// is one level. Real flows use three or four; the bound keeps every recursion over the
/// syntax tree short enough for a 2 MiB thread stack (docs/language.md, "Branches").
pub const MAX_NESTING: usize = 64;

/// pest's message when its stack probe stops a parse (pest 2.9's stack guard).
const PEST_STACK_LIMIT: &str = "stack limit reached";

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

/// Turns a pest error on `rest` (which starts at byte `base` of the file) into a
/// diagnostic that names what was expected in an editor's words.
fn syntax_error(file: FileId, base: usize, rest: &str, error: &pest::error::Error<Rule>) -> Diagnostic {
    let at = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let found = found_token(&rest[at..]);
    let span = Span::new(file, base + at, base + at + found.len());
    let found_text = if found.is_empty() {
        "end of file".to_string()
    } else if found.starts_with(['\n', '\r']) {
        "end of line".to_string()
    } else {
        format!("`{found}`")
    };
    let rest_of_line = rest[at..].split('\n').next().unwrap_or("");
    if rest_of_line.starts_with('"')
        && !rest_of_line.starts_with("\"\"\"")
        && rest_of_line[1..].matches('"').count() == 0
    {
        return Diagnostic::error(
            Span::new(file, base + at, base + at + rest_of_line.trim_end().len()),
            "string is not closed on this line",
        )
        .with_label("this string has no closing `\"`")
        .with_help("a string must end with `\"` on the line it starts; use `\"\"\"` for text over several lines");
    }
    let message = match &error.variant {
        ErrorVariant::CustomError { message } if message == PEST_STACK_LIMIT => {
            return Diagnostic::error(span, format!("nested too deeply (more than {MAX_NESTING} levels)"))
                .with_label("the parser gave up here")
                .with_help(NESTING_HELP);
        }
        ErrorVariant::ParsingError { positives, .. } if !positives.is_empty() => {
            format!("expected {}, found {found_text}", describe_expected(positives))
        }
        ErrorVariant::ParsingError { .. } => format!("unexpected {found_text}"),
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let mut diagnostic = Diagnostic::error(span, message);
    if let Some(help) = hint_for(rest, at) {
        diagnostic = diagnostic.with_help(help);
    }
    diagnostic
}

/// Advice for a flow nested beyond [`MAX_NESTING`].
const NESTING_HELP: &str =
    "keep nesting shallow: test conditions one after another (with `goto` between them) rather than inside each other";

/// The token an error stopped at: a word, a quoted string start, or one symbol.
fn found_token(rest: &str) -> &str {
    let Some(first) = rest.chars().next() else { return "" };
    if first == '\n' || first == '\r' {
        return &rest[..first.len_utf8()];
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-' || c == '.';
    let end = if is_word(first) {
        rest.find(|c: char| !is_word(c)).unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    &rest[..end]
}

/// Common mistakes that deserve a sentence of advice.
fn hint_for(rest: &str, at: usize) -> Option<String> {
    let here = &rest[at..];
    if here.starts_with(['“', '”']) {
        return Some(
            "strings are written with ASCII double quotes `\"...\"`; Chinese quotes may appear inside them".into(),
        );
    }
    if here.starts_with(['，', '；']) {
        return Some("lists are separated with an ASCII comma `,`".into());
    }
    if rest[..at].trim_end().ends_with(',') {
        return Some("a list ends without a comma: remove the `,` after its last item".into());
    }
    let line_end = rest[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = &rest[line_end..at];
    if line.matches('"').count() % 2 == 1 {
        return Some(
            "a string must end with `\"` on the line it starts; use `\"\"\"` for text over several lines".into(),
        );
    }
    None
}

fn describe_expected(rules: &[Rule]) -> String {
    let mut words: Vec<String> = Vec::new();
    let items = rules.iter().filter(|r| is_item_rule(**r)).count();
    if items >= 3 {
        words.push("an item (`shop`, `intent`, `entity`, `source`, `rule`, `promotion`, `policy`, `flow`, `style`, `fallback` or `safety`)".into());
    }
    for r in rules {
        if items >= 3 && is_item_rule(*r) {
            continue;
        }
        let word = describe(*r);
        if !words.contains(&word) {
            words.push(word);
        }
    }
    match words.as_slice() {
        [] => "something else".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn is_item_rule(r: Rule) -> bool {
    matches!(
        r,
        Rule::shop
            | Rule::intent
            | Rule::entity
            | Rule::source
            | Rule::rule
            | Rule::promotion
            | Rule::policy
            | Rule::flow
            | Rule::style
            | Rule::fallback
            | Rule::safety
    )
}

/// An editor's name for what a grammar rule matches.
fn describe(r: Rule) -> String {
    if is_token(r) && !matches!(r, Rule::lbrace | Rule::rbrace) {
        let name = format!("{r:?}");
        return format!("`{}`", name.trim_start_matches("kw_"));
    }
    let text = match r {
        Rule::name | Rule::name_list => "a name",
        Rule::intent_name => "an intent name like `售后.退货`",
        Rule::intent_pattern | Rule::intent_trigger => "an intent name or pattern like `售后.*`",
        Rule::string | Rule::short_string | Rule::long_string | Rule::string_list => "a string in double quotes",
        Rule::expr => "an expression in backticks",
        Rule::number => "a number",
        Rule::integer => "a whole number",
        Rule::duration => "a duration like `800ms` or `2s`",
        Rule::date | Rule::datetime => "a date like `2026-11-01` or `2026-11-01 00:00`",
        Rule::time => "a time like `23:59`",
        Rule::regex => "a regular expression like `/\\d{12}/`",
        Rule::lexicon => "a word list like `[\"红色\", \"红\" => \"红色\"]`",
        Rule::lexicon_entry => "a string",
        Rule::lbrace => "`{`",
        Rule::rbrace => "`}`",
        Rule::shop => "`shop`",
        Rule::intent => "`intent`",
        Rule::entity => "`entity`",
        Rule::source => "`source`",
        Rule::rule => "`rule`",
        Rule::promotion => "`promotion`",
        Rule::policy => "`policy`",
        Rule::flow => "`flow`",
        Rule::style => "`style`",
        Rule::fallback => "`fallback`",
        Rule::safety => "`safety`",
        Rule::persona => "`persona`",
        Rule::timezone => "`timezone`",
        Rule::threshold => "`threshold`",
        Rule::faq_threshold => "`faq_threshold`",
        Rule::handoff_message => "`handoff_message`",
        Rule::fallback_message => "`fallback_message`",
        Rule::context => "`context`",
        Rule::examples => "`examples`",
        Rule::keywords | Rule::keyword_trigger => "`keywords`",
        Rule::entity_trigger => "`entity`",
        Rule::file_source => "`file`",
        Rule::http_source => "`http`",
        Rule::trigger => "`on`",
        Rule::when => "`when`",
        Rule::reply => "`reply`",
        Rule::handoff => "`handoff`",
        Rule::priority => "`priority`",
        Rule::window => "`from`",
        Rule::audience => "`for`",
        Rule::say => "`say`",
        Rule::applies => "`applies`",
        Rule::text => "`text`",
        Rule::flow_start => "`start on`",
        Rule::ask => "`ask`",
        Rule::retry => "`retry`",
        Rule::else_step => "`handoff`, `goto`, `reply` or `end`",
        Rule::set => "`set`",
        Rule::if_step => "`if`",
        Rule::block => "`{`",
        Rule::goto => "`goto`",
        Rule::call => "`call`",
        Rule::end => "`end`",
        Rule::tone => "`tone`",
        Rule::temperature => "`temperature`",
        Rule::top_p => "`top_p`",
        Rule::fallback_arm => "`when` or `otherwise`",
        Rule::otherwise => "`otherwise`",
        Rule::llm => "`llm`",
        Rule::block_list => "`block`",
        Rule::mask_list => "`mask`",
        Rule::words_file => "`from`",
        Rule::words_inline => "`words`",
        Rule::without => "`without`",
        Rule::allow => "`allow`",
        Rule::pii => "`pii`",
        Rule::default_reply => "`default_reply`",
        _ => "something else",
    };
    text.to_string()
}

/// Walks pest pairs of one item into the syntax tree.
struct Builder<'d> {
    file: FileId,
    /// Byte offset of the parsed slice in the file.
    base: usize,
    /// How many `if` blocks enclose the step being built.
    depth: usize,
    diagnostics: &'d mut Vec<Diagnostic>,
}

/// Stores a field once; a second occurrence is an error that points at both.
fn set_once<T>(
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
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let s = pair.as_span();
        let trimmed = pair
            .as_str()
            .trim_end_matches([' ', '\t', '\r', '\n', '\u{3000}'])
            .len();
        Span::new(self.file, self.base + s.start(), self.base + s.start() + trimmed)
    }

    fn ident(&self, pair: Pair<'_, Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn item(&mut self, pair: Pair<'_, Rule>) -> Option<Item> {
        Some(match pair.as_rule() {
            Rule::shop => Item::Shop(self.shop(pair)),
            Rule::intent => Item::Intent(self.intent(pair)),
            Rule::entity => Item::Entity(self.entity(pair)),
            Rule::source => Item::Source(self.source(pair)),
            Rule::rule => Item::Rule(self.rule(pair)),
            Rule::promotion => Item::Promotion(self.promotion(pair)),
            Rule::policy => Item::Policy(self.policy(pair)),
            Rule::flow => Item::Flow(self.flow(pair)),
            Rule::style => Item::Style(self.style(pair)),
            Rule::fallback => Item::Fallback(self.fallback(pair)),
            Rule::safety => Item::Safety(self.safety(pair)),
            _ => return None,
        })
    }

    /// Decodes a `string` pair.
    fn string(&mut self, pair: Pair<'_, Rule>) -> Str {
        let span = self.span(&pair);
        let quoted = inner(pair).next().expect("string has a body");
        let long = quoted.as_rule() == Rule::long_string;
        let body = inner(quoted).next().expect("string has a body");
        let body_start = self.base + body.as_span().start();
        if long {
            let (value, offsets) = dedent(body.as_str(), body_start);
            Str { value, span, offsets }
        } else {
            let (value, offsets) = self.unescape(body.as_str(), body_start);
            Str { value, span, offsets }
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

    fn strings(&mut self, pair: Pair<'_, Rule>) -> Vec<Str> {
        inner(pair).map(|p| self.string(p)).collect()
    }

    fn names(&self, pair: Pair<'_, Rule>) -> Vec<Ident> {
        inner(pair).map(|p| self.ident(p)).collect()
    }

    fn expr(&self, pair: Pair<'_, Rule>) -> Expr {
        let body = inner(pair).next().expect("expr has a body");
        Expr {
            source: body.as_str().to_string(),
            span: self.span(&body),
        }
    }

    fn number(&mut self, pair: Pair<'_, Rule>) -> Number {
        let span = self.span(&pair);
        let value = pair.as_str().parse().unwrap_or(f64::NAN);
        Number { value, span }
    }

    fn integer(&mut self, pair: Pair<'_, Rule>) -> Integer {
        let span = self.span(&pair);
        let value = pair.as_str().parse().unwrap_or_else(|_| {
            self.diagnostics.push(Diagnostic::error(span, "number is too large"));
            0
        });
        Integer { value, span }
    }

    fn first_inner<'i>(pair: Pair<'i, Rule>) -> Pair<'i, Rule> {
        inner(pair).next().expect("grammar guarantees an inner pair")
    }

    fn shop(&mut self, pair: Pair<'_, Rule>) -> Shop {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.string(fields.next().expect("shop name"));
        let mut shop = Shop {
            name,
            span,
            persona: None,
            timezone: None,
            threshold: None,
            faq_threshold: None,
            handoff_message: None,
            fallback_message: None,
            context: Vec::new(),
        };
        for field in fields {
            let fspan = self.span(&field);
            match field.as_rule() {
                Rule::persona => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.persona.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut shop.persona, v, fspan, first, "persona");
                }
                Rule::timezone => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.timezone.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut shop.timezone, v, fspan, first, "timezone");
                }
                Rule::threshold => {
                    let v = self.number(Self::first_inner(field));
                    let first = shop.threshold.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut shop.threshold, v, fspan, first, "threshold");
                }
                Rule::faq_threshold => {
                    let v = self.number(Self::first_inner(field));
                    let first = shop.faq_threshold.as_ref().map(|s| s.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.faq_threshold,
                        v,
                        fspan,
                        first,
                        "faq_threshold",
                    );
                }
                Rule::handoff_message => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.handoff_message.as_ref().map(|s| s.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.handoff_message,
                        v,
                        fspan,
                        first,
                        "handoff_message",
                    );
                }
                Rule::fallback_message => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.fallback_message.as_ref().map(|s| s.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.fallback_message,
                        v,
                        fspan,
                        first,
                        "fallback_message",
                    );
                }
                Rule::context => shop.context.extend(self.names(Self::first_inner(field))),
                _ => {}
            }
        }
        shop
    }

    fn intent(&mut self, pair: Pair<'_, Rule>) -> Intent {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("intent name"));
        let mut intent = Intent {
            name,
            span,
            examples: Vec::new(),
            keywords: Vec::new(),
        };
        for field in fields {
            match field.as_rule() {
                Rule::examples => intent.examples.extend(self.strings(Self::first_inner(field))),
                Rule::keywords => intent.keywords.extend(self.strings(Self::first_inner(field))),
                _ => {}
            }
        }
        intent
    }

    fn entity(&mut self, pair: Pair<'_, Rule>) -> Entity {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("entity name"));
        let def = fields.next().expect("entity definition");
        let kind = match def.as_rule() {
            Rule::regex => {
                let mut parts = inner(def);
                let body = parts.next().expect("regex body");
                let flags = parts.next().expect("regex flags");
                EntityKind::Regex {
                    pattern: body.as_str().to_string(),
                    span: self.span(&body),
                    flags: self.ident(flags),
                }
            }
            _ => {
                let mut entries = Vec::new();
                for entry in inner(def) {
                    let mut parts = inner(entry);
                    let surface = self.string(parts.next().expect("lexicon surface"));
                    let canonical = parts.next().map(|p| self.string(p));
                    entries.push((surface, canonical));
                }
                EntityKind::Lexicon(entries)
            }
        };
        Entity { name, span, kind }
    }

    fn source(&mut self, pair: Pair<'_, Rule>) -> Source {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("source name"));
        let def = fields.next().expect("source definition");
        let def_rule = def.as_rule();
        let mut parts = inner(def);
        let first = self.string(parts.next().expect("source location"));
        let kind = if def_rule == Rule::file_source {
            SourceKind::File {
                path: first,
                key: parts.next().map(|p| self.string(p)),
            }
        } else {
            let timeout = parts.next().map(|p| self.duration(p));
            SourceKind::Http { url: first, timeout }
        };
        Source { name, span, kind }
    }

    fn duration(&mut self, pair: Pair<'_, Rule>) -> DurationLit {
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

    fn trigger(&mut self, pair: Pair<'_, Rule>) -> Trigger {
        let span = self.span(&pair);
        let target = Self::first_inner(pair);
        self.trigger_target(target, span)
    }

    fn trigger_target(&mut self, target: Pair<'_, Rule>, span: Span) -> Trigger {
        let kind = match target.as_rule() {
            Rule::keyword_trigger => TriggerKind::Keywords(self.strings(Self::first_inner(target))),
            Rule::entity_trigger => TriggerKind::Entity(self.ident(Self::first_inner(target))),
            _ => TriggerKind::Intents(inner(target).map(|p| self.ident(p)).collect()),
        };
        Trigger { span, kind }
    }

    fn handoff(&mut self, pair: Pair<'_, Rule>) -> Handoff {
        let span = self.span(&pair);
        let reason = inner(pair).next().map(|p| self.string(p));
        Handoff { reason, span }
    }

    fn rule(&mut self, pair: Pair<'_, Rule>) -> crate::dsl::ast::Rule {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("rule name"));
        let mut rule = crate::dsl::ast::Rule {
            name,
            span,
            triggers: Vec::new(),
            when: None,
            reply: None,
            handoff: None,
            priority: None,
        };
        for field in fields {
            let fspan = self.span(&field);
            match field.as_rule() {
                Rule::trigger => rule.triggers.push(self.trigger(field)),
                Rule::when => {
                    let v = self.expr(Self::first_inner(field));
                    let first = rule.when.as_ref().map(|e| e.span);
                    set_once(self.diagnostics, &mut rule.when, v, fspan, first, "when");
                }
                Rule::reply => {
                    let v = self.string(Self::first_inner(field));
                    let first = rule.reply.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut rule.reply, v, fspan, first, "reply");
                }
                Rule::handoff => {
                    let v = self.handoff(field);
                    let first = rule.handoff.as_ref().map(|h| h.span);
                    set_once(self.diagnostics, &mut rule.handoff, v, fspan, first, "handoff");
                }
                Rule::priority => {
                    let v = self.integer(Self::first_inner(field));
                    let first = rule.priority.as_ref().map(|p| p.span);
                    set_once(self.diagnostics, &mut rule.priority, v, fspan, first, "priority");
                }
                _ => {}
            }
        }
        rule
    }

    fn datetime(&mut self, pair: Pair<'_, Rule>) -> DateTimeLit {
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

    fn promotion(&mut self, pair: Pair<'_, Rule>) -> Promotion {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("promotion name"));
        let mut promo = Promotion {
            name,
            span,
            window: None,
            audience: None,
            say: None,
            triggers: Vec::new(),
            priority: None,
        };
        for field in fields {
            let fspan = self.span(&field);
            match field.as_rule() {
                Rule::window => {
                    let mut parts = inner(field);
                    let from = self.datetime(parts.next().expect("from"));
                    let to = self.datetime(parts.next().expect("to"));
                    let first = promo.window.as_ref().map(|(f, _)| f.span);
                    set_once(
                        self.diagnostics,
                        &mut promo.window,
                        (from, to),
                        fspan,
                        first,
                        "from ... to",
                    );
                }
                Rule::audience => {
                    let v = self.expr(Self::first_inner(field));
                    let first = promo.audience.as_ref().map(|e| e.span);
                    set_once(self.diagnostics, &mut promo.audience, v, fspan, first, "for");
                }
                Rule::say => {
                    let v = self.string(Self::first_inner(field));
                    let first = promo.say.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut promo.say, v, fspan, first, "say");
                }
                Rule::trigger => promo.triggers.push(self.trigger(field)),
                Rule::priority => {
                    let v = self.integer(Self::first_inner(field));
                    let first = promo.priority.as_ref().map(|p| p.span);
                    set_once(self.diagnostics, &mut promo.priority, v, fspan, first, "priority");
                }
                _ => {}
            }
        }
        promo
    }

    fn policy(&mut self, pair: Pair<'_, Rule>) -> Policy {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("policy name"));
        let mut policy = Policy {
            name,
            span,
            applies: Vec::new(),
            text: None,
        };
        for field in fields {
            let fspan = self.span(&field);
            match field.as_rule() {
                Rule::applies => policy.applies.extend(inner(field).map(|p| self.ident(p))),
                Rule::text => {
                    let v = self.string(Self::first_inner(field));
                    let first = policy.text.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut policy.text, v, fspan, first, "text");
                }
                _ => {}
            }
        }
        policy
    }

    fn flow(&mut self, pair: Pair<'_, Rule>) -> Flow {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("flow name"));
        let mut flow = Flow {
            name,
            span,
            starts: Vec::new(),
            steps: Vec::new(),
        };
        for field in fields {
            match field.as_rule() {
                Rule::flow_start => {
                    let span = self.span(&field);
                    let mut parts = inner(field);
                    let target = parts.next().expect("start trigger");
                    let tspan = self.span(&target);
                    let trigger = self.trigger_target(target, tspan);
                    let when = parts.next().map(|w| self.expr(Self::first_inner(w)));
                    flow.starts.push(FlowStart { trigger, when, span });
                }
                Rule::lbrace | Rule::rbrace => {}
                _ => {
                    if let Some(step) = self.step(field) {
                        flow.steps.push(step);
                    }
                }
            }
        }
        flow
    }

    fn steps(&mut self, block: Pair<'_, Rule>) -> Vec<Step> {
        inner(block).filter_map(|p| self.step(p)).collect()
    }

    fn step(&mut self, pair: Pair<'_, Rule>) -> Option<Step> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::ask => {
                let mut parts = inner(pair);
                let slot = self.ident(parts.next().expect("slot"));
                let mut entity = None;
                let mut next = parts.next().expect("question");
                if next.as_rule() == Rule::name {
                    entity = Some(self.ident(next));
                    next = parts.next().expect("question");
                }
                let prompt = self.string(next);
                let (mut retry, mut otherwise) = (None, None);
                if let Some(r) = parts.next() {
                    let mut rp = inner(r);
                    retry = Some(self.integer(rp.next().expect("retry count")));
                    if let Some(else_step) = rp.next() {
                        otherwise = self.step(Self::first_inner(else_step)).map(Box::new);
                    }
                }
                StepKind::Ask {
                    slot,
                    entity,
                    prompt,
                    retry,
                    otherwise,
                }
            }
            Rule::set => {
                let mut parts = inner(pair);
                let name = self.ident(parts.next().expect("set name"));
                let value = self.expr(parts.next().expect("set value"));
                StepKind::Set { name, value }
            }
            Rule::if_step => {
                if self.depth >= MAX_NESTING {
                    let keyword = Span::new(self.file, span.start, span.start + "if".len());
                    self.diagnostics.push(
                        Diagnostic::error(keyword, format!("nested too deeply (more than {MAX_NESTING} levels)"))
                            .with_label(format!("this `if` is {} levels deep", self.depth + 1))
                            .with_help(NESTING_HELP),
                    );
                    return None;
                }
                self.depth += 1;
                let mut parts = inner(pair);
                let cond = self.expr(parts.next().expect("if condition"));
                let then = self.steps(parts.next().expect("if body"));
                let otherwise = match parts.next() {
                    Some(p) if p.as_rule() == Rule::block => self.steps(p),
                    Some(p) => self.step(p).into_iter().collect(),
                    None => Vec::new(),
                };
                self.depth -= 1;
                StepKind::If { cond, then, otherwise }
            }
            Rule::goto => StepKind::Goto(self.ident(Self::first_inner(pair))),
            Rule::call => StepKind::Call(self.expr(Self::first_inner(pair))),
            Rule::reply => StepKind::Reply(self.string(Self::first_inner(pair))),
            Rule::handoff => StepKind::Handoff(self.handoff(pair)),
            Rule::end => StepKind::End,
            _ => return None,
        };
        Some(Step { span, kind })
    }

    fn style(&mut self, pair: Pair<'_, Rule>) -> Style {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("style name"));
        let mut style = Style {
            name,
            span,
            when: None,
            tone: None,
            temperature: None,
            top_p: None,
        };
        for field in fields {
            let fspan = self.span(&field);
            match field.as_rule() {
                Rule::when => {
                    let v = self.expr(Self::first_inner(field));
                    let first = style.when.as_ref().map(|e| e.span);
                    set_once(self.diagnostics, &mut style.when, v, fspan, first, "when");
                }
                Rule::tone => {
                    let v = self.string(Self::first_inner(field));
                    let first = style.tone.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut style.tone, v, fspan, first, "tone");
                }
                Rule::temperature => {
                    let v = self.number(Self::first_inner(field));
                    let first = style.temperature.as_ref().map(|n| n.span);
                    set_once(self.diagnostics, &mut style.temperature, v, fspan, first, "temperature");
                }
                Rule::top_p => {
                    let v = self.number(Self::first_inner(field));
                    let first = style.top_p.as_ref().map(|n| n.span);
                    set_once(self.diagnostics, &mut style.top_p, v, fspan, first, "top_p");
                }
                _ => {}
            }
        }
        style
    }

    fn fallback(&mut self, pair: Pair<'_, Rule>) -> Fallback {
        let span = self.span(&pair);
        let mut arms = Vec::new();
        for arm in inner(pair).filter(|p| p.as_rule() == Rule::fallback_arm) {
            let arm_span = self.span(&arm);
            let mut parts = inner(arm);
            let head = parts.next().expect("arm head");
            let when = (head.as_rule() == Rule::when).then(|| self.expr(Self::first_inner(head)));
            let action = parts.next().expect("arm action");
            let action = match action.as_rule() {
                Rule::handoff => FallbackAction::Handoff(self.handoff(action)),
                Rule::reply => FallbackAction::Reply(self.string(Self::first_inner(action))),
                _ => FallbackAction::Llm(inner(action).next().map(|p| self.ident(p))),
            };
            arms.push(FallbackArm {
                span: arm_span,
                when,
                action,
            });
        }
        Fallback { span, arms }
    }

    fn word_source(&mut self, pair: Pair<'_, Rule>) -> WordSource {
        match pair.as_rule() {
            Rule::words_file => WordSource::File(self.string(Self::first_inner(pair))),
            Rule::words_inline => WordSource::Inline(self.strings(Self::first_inner(pair))),
            _ => WordSource::Inline(self.strings(pair)),
        }
    }

    fn word_list(&mut self, pair: Pair<'_, Rule>) -> WordList {
        let span = self.span(&pair);
        let mut parts = inner(pair);
        let category = self.ident(parts.next().expect("category"));
        let words = self.word_source(parts.next().expect("words"));
        let mut list = WordList {
            category,
            span,
            words,
            without: Vec::new(),
            reply: None,
        };
        for option in parts {
            let ospan = self.span(&option);
            match option.as_rule() {
                Rule::without => list.without.extend(self.names(Self::first_inner(option))),
                Rule::reply => {
                    let v = self.string(Self::first_inner(option));
                    let first = list.reply.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut list.reply, v, ospan, first, "reply");
                }
                _ => {}
            }
        }
        list
    }

    fn safety(&mut self, pair: Pair<'_, Rule>) -> Safety {
        let span = self.span(&pair);
        let mut entries = Vec::new();
        for entry in inner(pair) {
            let entry = match entry.as_rule() {
                Rule::block_list => SafetyEntry::Block(self.word_list(entry)),
                Rule::mask_list => SafetyEntry::Mask(self.word_list(entry)),
                Rule::allow => SafetyEntry::Allow(self.word_source(Self::first_inner(entry))),
                Rule::pii => SafetyEntry::Pii(self.names(Self::first_inner(entry))),
                Rule::default_reply => SafetyEntry::Reply(self.string(Self::first_inner(entry))),
                _ => continue,
            };
            entries.push(entry);
        }
        Safety { span, entries }
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

/// The first character boundary at or after `i` (the end of `s` at most).
fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
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
    fn dedent_drops_outer_blank_lines_and_common_indent() {
        let body = "\n    第一行\n      第二行\n    ";
        let (value, offsets) = dedent(body, 100);
        assert_eq!(value, "第一行\n  第二行");
        assert_eq!(offsets.len(), value.len() + 1);
        assert_eq!(offsets[0], 100 + body.find('第').unwrap());
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
