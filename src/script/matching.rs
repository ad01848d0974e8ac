//! Regular expressions in scripts: `regex_match(text, pattern)` (true or false),
//! `regex_find(text, pattern)` (the first match as a map of its named groups and `text`,
//! or `()`) and `regex_find_all(text, pattern)` (every match, in order, as such maps).
//!
//! A pattern written as a literal is compiled when the rules load (`check`, with the
//! error at its place inside the literal), with the same limits as here, so it cannot
//! fail at run time. A pattern computed at run time is compiled here under the regex
//! crate's size and nesting limits ([`compile`]) and kept in a small bounded cache
//! ([`CACHE_CAPACITY`] patterns), so a hostile or runaway pattern is a script error,
//! never a crash, a stall or unbounded memory. Matching itself is linear in the text (the
//! regex crate has no backtracking), and scripts' strings are bounded by the sandbox.

use std::sync::{Arc, LazyLock};

use regex::{Regex, RegexBuilder};
use rhai::{Dynamic, EvalAltResult, ImmutableString};

/// The functions [`register`] gives scripts.
pub const REGEX_FUNCTIONS: &[&str] = &["regex_match", "regex_find", "regex_find_all"];

/// The longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 4096;
/// The most compiled program a pattern may need (the regex crate's `size_limit`): a
/// counted repetition such as `(a{1000}){1000}` is refused instead of built.
pub const SIZE_LIMIT: usize = 1 << 20;
/// The most nested groups and repetitions a pattern may have.
pub const NEST_LIMIT: u32 = 64;
/// How many patterns computed at run time are kept compiled.
pub const CACHE_CAPACITY: usize = 128;
/// The most matches `regex_find_all` gives; the rest are not looked for.
pub const MAX_MATCHES: usize = 1000;

/// Compiles a pattern under the limits scripts run with; the error says why not.
pub fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(regex::Error::Syntax(format!(
            "the pattern is longer than {MAX_PATTERN_LEN} bytes"
        )));
    }
    RegexBuilder::new(pattern)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .nest_limit(NEST_LIMIT)
        .build()
}

/// Patterns compiled at run time, and the errors of those that do not compile (so a bad
/// pattern in a loop is not compiled again and again).
static CACHE: LazyLock<quick_cache::sync::Cache<String, Arc<Result<Regex, String>>>> =
    LazyLock::new(|| quick_cache::sync::Cache::new(CACHE_CAPACITY));

/// The compiled pattern, from the cache or compiled now; a script error when it does not
/// compile.
fn cached(pattern: &str) -> Result<Arc<Result<Regex, String>>, Box<EvalAltResult>> {
    let compiled = match CACHE.get(pattern) {
        Some(hit) => hit,
        None => {
            let compiled = Arc::new(compile(pattern).map_err(|e| one_line(&e)));
            CACHE.insert(pattern.to_string(), Arc::clone(&compiled));
            compiled
        }
    };
    if let Err(message) = compiled.as_ref() {
        return Err(format!("invalid regex: {message}").into());
    }
    Ok(compiled)
}

/// The last line of a regex error (its pattern excerpt and caret are for a terminal).
pub fn one_line(error: &regex::Error) -> String {
    let message = error.to_string();
    message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(&message)
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

/// The text a function was given: text as it is, a number as written, `()` as nothing to
/// match (an absent context field: `regex_match(order.note, …)` is false).
fn text_of(value: &Dynamic) -> Option<String> {
    if value.is_unit() {
        None
    } else if let Some(s) = value.read_lock::<ImmutableString>() {
        Some(s.to_string())
    } else {
        Some(value.to_string())
    }
}

/// One match as scripts see it: `text` (the whole match) and each named group that took
/// part.
fn match_map(re: &Regex, captures: &regex::Captures<'_>) -> Dynamic {
    let mut map = rhai::Map::new();
    map.insert("text".into(), captures.get(0).map_or("", |m| m.as_str()).into());
    for name in re.capture_names().flatten() {
        if let Some(group) = captures.name(name) {
            map.insert(name.into(), group.as_str().into());
        }
    }
    Dynamic::from_map(map)
}

/// Registers the regex functions on an engine.
pub fn register(engine: &mut rhai::Engine) {
    engine.register_fn(
        "regex_match",
        |text: Dynamic, pattern: &str| -> Result<bool, Box<EvalAltResult>> {
            let compiled = cached(pattern)?;
            let re = compiled.as_ref().as_ref().expect("checked by cached");
            Ok(text_of(&text).is_some_and(|t| re.is_match(&t)))
        },
    );
    engine.register_fn(
        "regex_find",
        |text: Dynamic, pattern: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            let compiled = cached(pattern)?;
            let re = compiled.as_ref().as_ref().expect("checked by cached");
            let Some(text) = text_of(&text) else {
                return Ok(Dynamic::UNIT);
            };
            Ok(re.captures(&text).map_or(Dynamic::UNIT, |c| match_map(re, &c)))
        },
    );
    engine.register_fn(
        "regex_find_all",
        |text: Dynamic, pattern: &str| -> Result<rhai::Array, Box<EvalAltResult>> {
            let compiled = cached(pattern)?;
            let re = compiled.as_ref().as_ref().expect("checked by cached");
            let Some(text) = text_of(&text) else {
                return Ok(rhai::Array::new());
            };
            Ok(re
                .captures_iter(&text)
                .take(MAX_MATCHES)
                .map(|c| match_map(re, &c))
                .collect())
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> rhai::Engine {
        let mut engine = super::super::sandboxed_engine(super::super::Limits::default());
        register(&mut engine);
        engine
    }

    fn eval(source: &str) -> Result<Dynamic, String> {
        engine().eval::<Dynamic>(source).map_err(|e| e.to_string())
    }

    #[test]
    fn match_find_and_find_all() {
        assert!(
            eval(r##"regex_match("订单 202611020001", #"\d{12}"#)"##)
                .unwrap()
                .as_bool()
                .unwrap()
        );
        assert!(
            !eval(r##"regex_match("没有订单号", #"\d{12}"#)"##)
                .unwrap()
                .as_bool()
                .unwrap()
        );
        // `()` (an absent field) matches nothing; a number is matched as written.
        assert!(!eval(r##"regex_match((), #"\d"#)"##).unwrap().as_bool().unwrap());
        assert!(eval(r##"regex_match(42, #"^\d+$"#)"##).unwrap().as_bool().unwrap());

        let found = eval(r##"regex_find("金额:89.00元", #"金额[:：](?<amount>[\d.]+)"#)"##).unwrap();
        let map = found.cast::<rhai::Map>();
        assert_eq!(map["amount"].to_string(), "89.00");
        assert_eq!(map["text"].to_string(), "金额:89.00");
        assert!(eval(r##"regex_find("无", #"(?P<n>\d+)"#)"##).unwrap().is_unit());

        let all = eval(r##"regex_find_all("a1 b22 c333", #"(?<n>\d+)"#)"##).unwrap();
        let all: Vec<String> = all
            .cast::<rhai::Array>()
            .into_iter()
            .map(|m| m.cast::<rhai::Map>()["n"].to_string())
            .collect();
        assert_eq!(all, ["1", "22", "333"]);
        assert_eq!(
            eval(r##"regex_find_all("", #"x"#).len()"##).unwrap().as_int().unwrap(),
            0
        );
    }

    #[test]
    fn a_bad_or_hostile_pattern_is_a_script_error() {
        let bad = eval(r#"regex_match("x", "(")"#).unwrap_err();
        assert!(bad.contains("invalid regex"), "{bad}");
        // A counted repetition that would compile to a huge program is refused quickly.
        let started = std::time::Instant::now();
        let huge = eval(r##"regex_match("aaaa", #"(a{1000}){1000}"#)"##).unwrap_err();
        assert!(huge.contains("invalid regex"), "{huge}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let nested = format!("regex_match(\"a\", \"{}a{}\")", "(".repeat(200), ")".repeat(200));
        assert!(eval(&nested).unwrap_err().contains("invalid regex"));
        let long = format!("regex_match(\"a\", \"{}\")", "a".repeat(MAX_PATTERN_LEN + 1));
        assert!(eval(&long).unwrap_err().contains("longer than"));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let engine = engine();
        for i in 0..(CACHE_CAPACITY * 4) {
            let source = format!(r#"regex_match("x{i}", "x{i}")"#);
            assert!(engine.eval::<bool>(&source).unwrap());
        }
        assert!(CACHE.len() <= CACHE_CAPACITY, "{} patterns kept", CACHE.len());
    }
}
