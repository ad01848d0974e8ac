//! Syntax errors in an editor's words: pest's error at a place becomes a diagnostic that
//! names what was expected (`expected a string in double quotes, found ...`), with advice
//! for the common mistakes (Chinese quotes and commas, a trailing comma, an unclosed
//! string), for nesting too deep, and for a missing `}`: pest notices it only at the next
//! item or the end of the file, so the diagnostic points at the `{` left open instead.

use pest::error::{ErrorVariant, InputLocation};

use super::{ITEM_KEYWORDS, MAX_NESTING, NESTING_HELP, PEST_STACK_LIMIT, Rule, is_token};
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
    if let Some(diagnostic) = unclosed_brace(file, base, rest, at, found) {
        return diagnostic;
    }
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

/// A missing `}`: the parse of an item stopped at the next item (an item keyword at
/// column 1) or at the end of the file with a `{` still open. The diagnostic points at
/// that `{`, with the place the parser gave up as the second one.
fn unclosed_brace(file: FileId, base: usize, rest: &str, at: usize, found: &str) -> Option<Diagnostic> {
    let at_line_start = at == 0 || rest[..at].ends_with('\n');
    let next_item = at_line_start && ITEM_KEYWORDS.contains(&found);
    let at_end = rest[at..].trim().is_empty();
    if !next_item && !at_end {
        return None;
    }
    let open = open_brace(&rest[..at])?;
    let line_start = rest[..open].rfind('\n').map_or(0, |i| i + 1);
    let header = rest[line_start..open].trim();
    let header = header.strip_prefix('}').unwrap_or(header).trim();
    let what = if header.starts_with("if ") || header.starts_with("if`") {
        "the `if` block".to_string()
    } else if header == "else" {
        "the `else` block".to_string()
    } else if header.is_empty() {
        "this block".to_string()
    } else if header.chars().count() > 40 {
        format!("`{}…`", header.chars().take(40).collect::<String>())
    } else {
        format!("`{header}`")
    };
    let (stop, stop_label) = if at_end {
        // The end of the file, after any trailing blanks and comments.
        (
            Span::new(file, base + rest.len(), base + rest.len()),
            "the file ends here".to_string(),
        )
    } else {
        (
            Span::new(file, base + at, base + at + found.len()),
            format!("the next item starts here, while {what} is still open"),
        )
    };
    Some(
        Diagnostic::error(
            Span::new(file, base + open, base + open + 1),
            format!("{what} is missing its closing `}}`"),
        )
        .with_label("this `{` is never closed")
        .with_secondary(stop, stop_label)
        .with_help(format!("add `}}` where {what} ends")),
    )
}

/// The `{` left open in `text` (the start of an item up to where its parse stopped), if
/// any. Strings, template holes, backtick scripts, regexes and comments are skipped. A `}`
/// that starts its line closes the innermost `{` whose line is indented as much, so in
///
/// ```text
/// flow 甲 {
///   if `x` {
///     reply "a"
///   reply "b"
/// }
/// ```
///
/// the `}` closes the flow and the `if` is the block left open; otherwise (no such
/// indentation) the innermost `{` is taken.
fn open_brace(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let indent_at = |i: usize| {
        let start = text[..i].rfind('\n').map_or(0, |n| n + 1);
        let line = &text[start..];
        (start, line.len() - line.trim_start_matches([' ', '\t']).len())
    };
    // Open braces: (offset, indentation of their line).
    let mut open: Vec<(usize, usize)> = Vec::new();
    let mut skipped: Option<usize> = None;
    let mut i = 0;
    let mut previous = b' ';
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => i = text[i..].find('\n').map_or(bytes.len(), |n| i + n),
            b'"' if text[i..].starts_with("\"\"\"") => {
                i = text[i + 3..].find("\"\"\"").map_or(bytes.len(), |n| i + 3 + n + 3) - 1;
            }
            b'"' => i = skip_short_string(bytes, i),
            b'`' => i = text[i + 1..].find('`').map_or(bytes.len(), |n| i + 1 + n),
            b'/' if previous == b'=' => {
                i += 1;
                while i < bytes.len() && !matches!(bytes[i], b'/' | b'\n') {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' => open.push((i, indent_at(i).1)),
            b'}' => {
                let (line_start, indent) = indent_at(i);
                let first_on_line = line_start + indent == i;
                let matching = open.iter().rposition(|&(_, k)| k == indent);
                match matching {
                    Some(m) if first_on_line => {
                        if m + 1 < open.len() && skipped.is_none() {
                            skipped = Some(open[open.len() - 1].0);
                        }
                        open.truncate(m);
                    }
                    _ => {
                        open.pop();
                    }
                }
            }
            _ => {}
        }
        if !b.is_ascii_whitespace() {
            previous = b;
        }
        i += 1;
    }
    skipped.or_else(|| open.last().map(|&(offset, _)| offset))
}

/// The index of the closing quote of the short string opening at `i` (or of the end of its
/// line): escapes and template holes, which may hold quotes of their own, are skipped.
fn skip_short_string(bytes: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\n' => return i,
            b'\\' => i += 2,
            b'{' if bytes.get(i + 1) == Some(&b'{') => i += 2,
            b'}' if bytes.get(i + 1) == Some(&b'}') => i += 2,
            b'{' => {
                // A hole: braces nest, quoted strings inside are skipped, all on this line.
                let mut depth = 0;
                while i < bytes.len() && bytes[i] != b'\n' {
                    match bytes[i] {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        b'"' => {
                            i += 1;
                            while i < bytes.len() && !matches!(bytes[i], b'"' | b'\n') {
                                i += if bytes[i] == b'\\' { 2 } else { 1 };
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    bytes.len()
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
    if let Some(help) = and_in_trigger(line, here) {
        return Some(help);
    }
    if line.matches('"').count() % 2 == 1 {
        return Some(
            "a string must end with `\"` on the line it starts; use `\"\"\"` for text over several lines".into(),
        );
    }
    None
}

/// `on 售后.发票 && 物流.发货`: an `on` line lists triggers, any of which makes a candidate;
/// an editor who wants two questions asked in one message is pointed at `intents`.
fn and_in_trigger(line: &str, here: &str) -> Option<String> {
    let trigger = line.trim_start().strip_prefix("on")?;
    if !trigger.starts_with([' ', '\t']) || !(here.starts_with('&') || here.starts_with("and ")) {
        return None;
    }
    let first = trigger.trim().trim_end_matches(',').trim();
    let second = here
        .trim_start_matches(['&', ' '])
        .trim_start_matches("and ")
        .split(|c: char| c.is_whitespace() || c == '`')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("物流.发货时间");
    Some(format!(
        "`on` lists triggers, any one of which makes the item a candidate; to answer only when one message asks both, write `on {first}, {second}` and the line when `\"{first}\" in intents && \"{second}\" in intents` (`intents` holds every intent of the message)"
    ))
}

fn describe_expected(rules: &[Rule]) -> String {
    let mut words: Vec<String> = Vec::new();
    let items = rules.iter().filter(|r| is_item_rule(**r)).count();
    if items >= 3 {
        words.push("an item (`shop`, `intent`, `entity`, `source`, `rule`, `promotion`, `policy`, `flow`, `style`, `fallback`, `safety`, `queue` or `proactive`)".into());
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
            | Rule::queue
            | Rule::proactive
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
        Rule::model_threshold => "`model_threshold`",
        Rule::handoff_message => "`handoff_message`",
        Rule::fallback_message => "`fallback_message`",
        Rule::context => "`context`",
        Rule::flow_updated_message => "`flow_updated_message`",
        Rule::goodbye_message => "`goodbye_message`",
        Rule::ack_message => "`ack_message`",
        Rule::more_message => "`more_message`",
        Rule::confirm_again_message => "`confirm_again_message`",
        Rule::upcoming_days => "`upcoming_days`",
        Rule::flow_timeout => "`flow_timeout`",
        Rule::end_flow => "`end flow`",
        Rule::cancel_flow => "`cancel flow`",
        Rule::flow_cancel => "`cancel on keywords` or `cancel reply`",
        Rule::cancel_words => "`on keywords`",
        Rule::flow_idle => "`timeout`",
        Rule::max_answers => "`max_answers`",
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
        Rule::confirm => "`confirm`",
        Rule::retry => "`retry`",
        Rule::reask => "`reask`",
        Rule::else_step => "`handoff`, `goto`, `reply` or `end`",
        Rule::set => "`set`",
        Rule::remember => "`remember`",
        Rule::forget => "`forget`",
        Rule::answer_trigger => "`yes to` or `no to`",
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
        Rule::queue => "`queue`",
        Rule::label => "`label`",
        Rule::hours => "`hours`",
        Rule::off_hours => "`off_hours`",
        Rule::waiting => "`waiting`",
        Rule::handoff_as => "`as`",
        Rule::handoff_to => "`to`",
        Rule::proactive => "`proactive`",
        Rule::proactive_limit => "`proactive_limit`",
        Rule::quiet_hours => "`quiet_hours`",
        Rule::opt_out_message => "`opt_out_message`",
        Rule::offer => "`offer`",
        Rule::limit => "`limit`",
        Rule::quiet => "`quiet`",
        Rule::image_trigger => "`image`",
        _ => "something else",
    };
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brace_left_open_is_found_past_strings_holes_scripts_and_regexes() {
        let text = "rule 甲 {\n  when `x == \"}\"`\n  reply \"{if a {\"}\"} else {\"{\"}}\" # }\n";
        assert_eq!(open_brace(text), Some(text.find('{').unwrap()));
        let entity = "entity order_id = /\\d{12}/\n";
        assert_eq!(open_brace(entity), None);
        let closed = "shop \"店\" { timezone \"Asia/Shanghai\" }\n";
        assert_eq!(open_brace(closed), None);
    }

    #[test]
    fn a_closing_brace_closes_the_block_indented_as_much() {
        let text = "flow 甲 {\n  if `x` {\n    reply \"a\"\n  reply \"b\"\n}\n";
        assert_eq!(open_brace(text), Some(text.find("{\n    reply").unwrap()));
        // Braces on one line pair up as written.
        let text = "flow 甲 {\n  if `x` { end }\n";
        assert_eq!(open_brace(text), Some(text.find('{').unwrap()));
    }
}
