//! Syntax errors in an editor's words: pest's error at a place becomes a diagnostic that
//! names what was expected (`expected a string in double quotes, found ...`), with advice
//! for the common mistakes (Chinese quotes and commas, a trailing comma, an unclosed
//! string) and for nesting too deep.

use pest::error::{ErrorVariant, InputLocation};

use super::{MAX_NESTING, NESTING_HELP, PEST_STACK_LIMIT, Rule, is_token};
use crate::diag::{Diagnostic, FileId, Span};

/// Turns a pest error on `rest` (which starts at byte `base` of the file) into a
/// diagnostic that names what was expected in an editor's words.
pub(super) fn syntax_error(file: FileId, base: usize, rest: &str, error: &pest::error::Error<Rule>) -> Diagnostic {
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
        Rule::flag_list => "`flag`",
        Rule::list_on => "`on`",
        Rule::segmented => "`segmented`",
        Rule::order_number => "`order_number`",
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
