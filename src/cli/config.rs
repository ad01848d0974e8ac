//! Where a command's settings come from besides its command line: an environment variable
//! for every flag, a TOML file for a command with a `--config` flag, and the
//! `--print-config` that shows the result (docs/operations.md, "Starting").
//!
//! Everything here works on the clap [`Command`] built from the derive definitions, so the
//! flags stay the one source of truth: a flag added to any command gets its variable, its
//! config key and its line in `--print-config` with no code of its own.
//!
//! - Every long flag `--max-in-flight` of every command reads `KEFU_MAX_IN_FLIGHT`
//!   ([`env_name`]), shown in `--help` (without its value: it may be a URL with a
//!   password). A flag without a value (`--no-watch`) takes `true`/`false`, `1`/`0`,
//!   `yes`/`no` or `on`/`off` there.
//! - A file given with `--config FILE` (or `KEFU_CONFIG`) sets flags by their long name,
//!   flat: `max-in-flight = 512` (`max_in_flight` too). Each value is checked by the
//!   flag's own clap parser, and a problem is reported as `FILE:line:col` in the rules'
//!   diagnostics style. The values then become the flags' defaults, so clap itself gives
//!   the precedence: command line, then environment, then file, then built-in default.
//! - `--print-config` prints every setting as TOML, with where its value came from as a
//!   comment, passwords inside URLs replaced by `***`, and exits: the output is a valid
//!   `--config` file.
//!
//! Secrets (tokens, passwords) are not flags at all, so they never appear in `ps`: they
//! come from the environment or from a file named by a `--…-file` flag (cli/serve.rs);
//! [`SECRET_VARIABLES`] lists them for `--print-config`, which prints only whether each is
//! set.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::builder::{BoolishValueParser, Resettable};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, Parser};
use kefu::diag::{Diagnostic, Report, SourceMap, Span};
use toml::de::{DeTable, DeValue};

/// The prefix of every flag's environment variable.
const ENV_PREFIX: &str = "KEFU_";

/// The id of the flag naming a config file; a command that has it reads one.
const CONFIG_ID: &str = "config";

/// The id of the flag asking for the effective configuration.
const PRINT_CONFIG_ID: &str = "print_config";

/// Environment variables holding secrets, which `--print-config` shows as set or not,
/// never by value.
pub const SECRET_VARIABLES: &[&str] = &[
    "KEFU_ADMIN_TOKEN",
    "KEFU_REDIS_PASSWORD",
    "KEFU_TICKETS_SECRET",
    "KEFU_LLM_API_KEY",
    // The key customer identity tokens are signed with (cli/serve.rs, IdentityArgs).
    "KEFU_IDENTITY_KEY",
    // The vision model server's key (cli/serve.rs, ImageArgs).
    "KEFU_VISION_API_KEY",
];

/// The environment variable of the long flag `long`: `max-in-flight` → `KEFU_MAX_IN_FLIGHT`.
pub fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Parses the process's command line into `P` with the environment and the config file,
/// or exits: with clap's message and status 2 on a usage error, with the file's
/// diagnostics and status 2 on a bad config file, with status 0 after `--print-config`.
pub fn parse<P: Parser>() -> P {
    match parse_from::<P>(std::env::args_os().collect()) {
        Ok(Parsed::Run(parsed)) => parsed,
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Err(Failure::Usage(error)) => error.exit(),
        Err(Failure::File(message)) => {
            eprint!("{message}");
            std::process::exit(2);
        }
    }
}

/// What a command line asks for.
enum Parsed<P> {
    /// Run the command with these settings.
    Run(P),
    /// Print this (the effective configuration) and exit.
    Print(String),
}

/// Why a command line cannot run.
enum Failure {
    /// clap's usage error (or `--help`, `--version`), printed by clap.
    Usage(clap::Error),
    /// The config file is unreadable or wrong: the rendered message.
    File(String),
}

impl From<clap::Error> for Failure {
    fn from(error: clap::Error) -> Self {
        Failure::Usage(error)
    }
}

/// [`parse`] without the exits.
fn parse_from<P: Parser>(argv: Vec<OsString>) -> Result<Parsed<P>, Failure> {
    let defined = with_env(P::command());
    let mut cmd = defined.clone();
    let first = cmd.clone().try_get_matches_from(argv.clone())?;
    let path = subcommand_path(&first);
    let sub = find(&cmd, &path);
    let sub_first = matches_at(&first, &path);

    let mut from_file = HashMap::new();
    let mut file = None;
    if has_arg(sub, CONFIG_ID)
        && let Some(raw) = sub_first.get_raw(CONFIG_ID).and_then(|mut v| v.next())
    {
        let config_path = PathBuf::from(raw);
        from_file = read_file(sub, &config_path)?;
        file = Some(config_path);
        let values = from_file.clone();
        cmd = at_path(cmd, &path, move |mut sub| {
            for (id, values) in values {
                sub = sub.mut_arg(id, |arg| arg.required(false).default_values(values));
            }
            sub
        });
    }

    let mut matches = if file.is_some() {
        cmd.clone().try_get_matches_from(argv)?
    } else {
        first
    };
    // The command as defined, for the flags' order (`mut_arg` moved the ones the file
    // set to the end).
    let sub = find(&defined, &path);
    let sub_matches = matches_at(&matches, &path);
    if has_arg(sub, PRINT_CONFIG_ID) && sub_matches.get_flag(PRINT_CONFIG_ID) {
        return Ok(Parsed::Print(print(sub, sub_matches, file.as_deref(), &from_file)));
    }
    Ok(Parsed::Run(P::from_arg_matches_mut(&mut matches)?))
}

/// `cmd` with an environment variable on every long flag of it and its subcommands.
fn with_env(cmd: Command) -> Command {
    cmd.mut_args(|arg| {
        let Some(long) = arg.get_long().filter(|_| arg.get_env().is_none()) else {
            return arg;
        };
        let name = env_name(long);
        // Values are hidden in --help: `--redis` may hold a password.
        let arg = arg.env(name).hide_env_values(true);
        if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            // `KEFU_NO_WATCH=1` as well as `=true`: clap's default takes only true/false.
            arg.value_parser(BoolishValueParser::new())
        } else {
            arg
        }
    })
    .mut_subcommands(with_env)
}

/// The names of the subcommands `matches` went into, outermost first.
fn subcommand_path(matches: &ArgMatches) -> Vec<String> {
    let mut path = Vec::new();
    let mut at = matches;
    while let Some((name, sub)) = at.subcommand() {
        path.push(name.to_string());
        at = sub;
    }
    path
}

/// The subcommand of `cmd` at `path`.
fn find<'a>(cmd: &'a Command, path: &[String]) -> &'a Command {
    path.iter().fold(cmd, |cmd, name| {
        cmd.find_subcommand(name)
            .expect("the path comes from the matches of this command")
    })
}

/// The matches of the subcommand at `path`.
fn matches_at<'a>(matches: &'a ArgMatches, path: &[String]) -> &'a ArgMatches {
    path.iter().fold(matches, |m, name| {
        m.subcommand_matches(name).expect("the path comes from these matches")
    })
}

/// `cmd` with the subcommand at `path` changed by `f`.
fn at_path(cmd: Command, path: &[String], f: impl FnOnce(Command) -> Command) -> Command {
    match path.split_first() {
        None => f(cmd),
        Some((name, rest)) => cmd.mut_subcommand(name, |sub| at_path(sub, rest, f)),
    }
}

fn has_arg(cmd: &Command, id: &str) -> bool {
    cmd.get_arguments().any(|a| a.get_id() == id)
}

/// The flags a config file may set: every long flag but `--config` and `--print-config`.
fn settable(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        a.get_long().is_some() && !a.is_positional() && a.get_id() != CONFIG_ID && a.get_id() != PRINT_CONFIG_ID
    })
}

/// What TOML type a flag's value is written as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A flag without a value: `true` or `false`.
    Bool,
    /// A whole number.
    Integer,
    /// A number (a whole one too).
    Float,
    /// Anything else (paths, addresses, names, URLs) is a string.
    Text,
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        use std::any::TypeId;
        let id = arg.get_value_parser().type_id();
        if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) || id == TypeId::of::<bool>() {
            return Kind::Bool;
        }
        let integers = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<isize>(),
        ];
        if integers.iter().any(|t| id == *t) {
            Kind::Integer
        } else if id == TypeId::of::<f32>() || id == TypeId::of::<f64>() {
            Kind::Float
        } else {
            Kind::Text
        }
    }

    /// What a value of this kind is called in an error.
    fn expected(self) -> &'static str {
        match self {
            Kind::Bool => "true or false",
            Kind::Integer => "an integer",
            Kind::Float => "a number",
            Kind::Text => "a string (or a number)",
        }
    }
}

/// Whether a flag may be given several times (its values then form a TOML array).
fn is_list(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// Reads and checks the config file at `path` for the flags of `cmd`: each flag's id with
/// its values as they would be written on the command line.
fn read_file(cmd: &Command, path: &Path) -> Result<HashMap<String, Vec<String>>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::File(format!("kefu: cannot read the config file {}: {e}\n", path.display())))?;
    let mut report = Report {
        sources: SourceMap::default(),
        diagnostics: Vec::new(),
    };
    let file = report.sources.add(path, text.clone());
    let span = |range: std::ops::Range<usize>| Span::new(file, range.start, range.end);
    let table = match DeTable::parse(&text) {
        Ok(table) => table.into_inner(),
        Err(e) => {
            let at = e.span().unwrap_or(0..0);
            report
                .diagnostics
                .push(Diagnostic::error(span(at), e.message().trim_end().to_string()));
            return Err(Failure::File(render(&report)));
        }
    };

    // One clap command that checks one flag's values: nothing else is required and no
    // variable is read, so an error is about the value at hand.
    let checker = cmd
        .clone()
        .mut_args(|a| a.required(false).env(Resettable::Reset))
        .subcommand_required(false)
        .no_binary_name(true);

    let mut values: HashMap<String, Vec<String>> = HashMap::new();
    let mut seen: HashMap<String, Span> = HashMap::new();
    for (key, value) in table.iter() {
        let key_span = span(key.span());
        let name = key.get_ref().replace('_', "-");
        if name == "config" || name == "print-config" {
            report.diagnostics.push(
                Diagnostic::error(key_span, format!("`{}` cannot be set in a config file", key.get_ref()))
                    .with_label("a command-line flag only"),
            );
            continue;
        }
        let Some(arg) = settable(cmd).find(|a| a.get_long() == Some(name.as_str())) else {
            let mut d = Diagnostic::error(key_span, format!("unknown key `{}`", key.get_ref()))
                .with_label(format!("not a flag of `kefu {}`", cmd.get_name()));
            if let Some(near) = kefu::diag::closest(&name, settable(cmd).filter_map(Arg::get_long)) {
                d = d.with_help(format!("did you mean `{near}`?"));
            } else if matches!(value.get_ref(), DeValue::Table(_)) {
                d = d.with_help("the config file has no sections: write `key = value` at the top level");
            } else {
                d = d.with_help(format!(
                    "the keys are the long flags of `kefu {} --help`",
                    cmd.get_name()
                ));
            }
            report.diagnostics.push(d);
            continue;
        };
        if let Some(first) = seen.insert(name.clone(), key_span) {
            report.diagnostics.push(
                Diagnostic::error(key_span, format!("`{name}` is set twice")).with_secondary(first, "first set here"),
            );
            continue;
        }
        let kind = Kind::of(arg);
        let items: Vec<&toml::Spanned<DeValue>> = match value.get_ref() {
            DeValue::Array(items) if is_list(arg) => items.iter().collect(),
            _ => vec![value],
        };
        let mut strings = Vec::new();
        for item in items {
            let item_span = span(item.span());
            match scalar(item.get_ref(), kind) {
                Ok(text) => {
                    if let Some(problem) = check(&checker, arg, &text) {
                        let (message, help) = problem;
                        let mut d = Diagnostic::error(item_span, message);
                        if let Some(help) = help {
                            d = d.with_help(help);
                        }
                        report.diagnostics.push(d);
                    }
                    strings.push(text);
                }
                Err(found) => {
                    let list = if is_list(arg) { " or a list of them" } else { "" };
                    report.diagnostics.push(
                        Diagnostic::error(item_span, format!("`{name}` takes {}{list}", kind.expected()))
                            .with_label(format!("this is {found}")),
                    );
                }
            }
        }
        values.insert(arg.get_id().to_string(), strings);
    }
    if report.diagnostics.is_empty() {
        Ok(values)
    } else {
        report.sort();
        Err(Failure::File(render(&report)))
    }
}

fn render(report: &Report) -> String {
    report.render_all(std::io::stderr().is_terminal())
}

/// A TOML value as the command line would write it, or what it is when it is not `kind`.
fn scalar(value: &DeValue, kind: Kind) -> Result<String, &'static str> {
    match (value, kind) {
        (DeValue::Boolean(b), Kind::Bool) => Ok(b.to_string()),
        (DeValue::Integer(i), Kind::Integer | Kind::Float) => i128::from_str_radix(i.as_str(), i.radix())
            .map(|n| n.to_string())
            .map_err(|_| "an integer out of range"),
        (DeValue::Float(f), Kind::Float) => Ok(f.as_str().to_string()),
        (DeValue::String(s), Kind::Text) => Ok(s.to_string()),
        // A flag parsed from text may take a number (`llm-timeout = 2.5`, a duration):
        // its parser judges it as it would on the command line.
        (DeValue::Integer(i), Kind::Text) => Ok(i.to_string()),
        (DeValue::Float(f), Kind::Text) => Ok(f.as_str().to_string()),
        (DeValue::String(_), _) => Err("a string"),
        (DeValue::Integer(_), _) => Err("an integer"),
        (DeValue::Float(_), _) => Err("a float"),
        (DeValue::Boolean(_), _) => Err("a boolean"),
        (DeValue::Datetime(_), _) => Err("a date"),
        (DeValue::Array(_), _) => Err("a list"),
        (DeValue::Table(_), _) => Err("a table (the config file has no sections)"),
    }
}

/// What clap says about `value` for `arg` (its message and any hint), `None` when clap
/// accepts it.
fn check(checker: &Command, arg: &Arg, value: &str) -> Option<(String, Option<String>)> {
    if Kind::of(arg) == Kind::Bool {
        return None;
    }
    let long = arg.get_long()?;
    let error = checker
        .clone()
        .try_get_matches_from([format!("--{long}={value}")])
        .err()?;
    if error.kind() == clap::error::ErrorKind::MissingRequiredArgument {
        // Another flag this one requires: the full command line judges that.
        return None;
    }
    let rendered = error.render().to_string();
    let mut lines = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"));
    let message = lines.next()?.trim_start_matches("error: ").to_string();
    let help: Vec<&str> = lines.collect();
    Some((message, (!help.is_empty()).then(|| help.join("; "))))
}

/// The effective configuration of `cmd` as a TOML config file, each value followed by
/// where it came from.
fn print(cmd: &Command, matches: &ArgMatches, file: Option<&Path>, from_file: &HashMap<String, Vec<String>>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# The effective configuration of `kefu {}`, printed by --print-config: valid input",
        cmd.get_name()
    );
    let _ = writeln!(
        out,
        "# for --config. After each value, where it came from: command line, environment, file\n\
         # or default. A password inside a URL is shown as ***; secrets are listed at the end,\n\
         # never with their values."
    );
    if let Some(file) = file {
        let _ = writeln!(out, "# Config file: {}", file.display());
    }
    for arg in settable(cmd) {
        let long = arg.get_long().expect("settable flags are long");
        let id = arg.get_id().as_str();
        let raw: Option<Vec<String>> = matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect());
        if arg.is_hide_set() && raw.is_none() {
            // A hidden flag (test scaffolding) is shown only when used.
            continue;
        }
        out.push('\n');
        if let Some(help) = arg.get_help() {
            for line in wrap(&help.to_string(), 88) {
                let _ = writeln!(out, "# {line}");
            }
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "command line".to_string(),
            Some(ValueSource::EnvVariable) => format!("environment: {}", env_name(long)),
            Some(_) if from_file.contains_key(id) => "file".to_string(),
            _ => "default".to_string(),
        };
        match raw {
            None => {
                let _ = writeln!(out, "# {long}: not set");
            }
            Some(_) if Kind::of(arg) == Kind::Bool => {
                // The parsed value: the raw one may be `KEFU_NO_WATCH=yes`.
                let _ = writeln!(out, "{long} = {}  # {source}", matches.get_flag(id));
            }
            Some(values) => {
                let kind = Kind::of(arg);
                let values: Vec<String> = values
                    .iter()
                    .map(|v| toml_value(&kefu::safety::logsafe::redacted_url(v), kind))
                    .collect();
                let value = if is_list(arg) {
                    format!("[{}]", values.join(", "))
                } else {
                    values.join(" ")
                };
                let _ = writeln!(out, "{long} = {value}  # {source}");
            }
        }
    }
    let _ = writeln!(
        out,
        "\n# Secrets, read from the environment (or from a file named by a *-file setting above,\n\
         # which wins):"
    );
    for name in SECRET_VARIABLES {
        let set = std::env::var_os(name).is_some_and(|v| !v.is_empty());
        let _ = writeln!(out, "#   {name}{}", if set { " = \"***\"" } else { " (not set)" });
    }
    out
}

/// `raw` written as a TOML value of `kind`.
fn toml_value(raw: &str, kind: Kind) -> String {
    let number = match kind {
        Kind::Bool => raw.parse::<bool>().ok().map(|b| b.to_string()),
        Kind::Integer => raw.parse::<i128>().ok().map(|n| n.to_string()),
        Kind::Float => raw.parse::<f64>().ok().map(|f| toml::Value::Float(f).to_string()),
        Kind::Text => None,
    };
    number.unwrap_or_else(|| toml::Value::String(raw.to_string()).to_string())
}

/// Whether `value` is a URL carrying a password (`redis://:pw@host`, `?pass=pw`).
pub fn has_inline_password(value: &str) -> bool {
    url::Url::parse(value)
        .is_ok_and(|url| url.password().is_some() || url.query_pairs().any(|(k, _)| k == "pass" || k == "password"))
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_named_after_the_flag() {
        assert_eq!(env_name("max-in-flight"), "KEFU_MAX_IN_FLIGHT");
        assert_eq!(env_name("redis-password-file"), "KEFU_REDIS_PASSWORD_FILE");
    }

    #[test]
    fn passwords_in_urls_are_noticed() {
        assert!(has_inline_password("redis://:pw@h"));
        assert!(has_inline_password("redis://user:pw@h/0"));
        assert!(has_inline_password("redis+unix:///run/redis.sock?pass=pw"));
        for plain in [
            "redis://127.0.0.1:6379/0",
            "redis://user@h/0",
            "rules",
            "127.0.0.1:8080",
        ] {
            assert!(!has_inline_password(plain), "{plain}");
        }
    }

    #[test]
    fn every_flag_of_every_command_gets_its_variable() {
        let cmd = with_env(<crate::cli::Cli as clap::CommandFactory>::command());
        let serve = cmd.find_subcommand("serve").unwrap();
        let max = serve.get_arguments().find(|a| a.get_id() == "max_in_flight").unwrap();
        assert_eq!(max.get_env(), Some(std::ffi::OsStr::new("KEFU_MAX_IN_FLIGHT")));
        let clean = cmd.find_subcommand("data").unwrap().find_subcommand("clean").unwrap();
        let rules = clean.get_arguments().find(|a| a.get_long() == Some("rules")).unwrap();
        assert_eq!(rules.get_env(), Some(std::ffi::OsStr::new("KEFU_RULES")));
        // Positional arguments have no variable.
        let check = cmd.find_subcommand("check").unwrap();
        assert!(
            check
                .get_arguments()
                .find(|a| a.get_id() == "dir")
                .unwrap()
                .get_env()
                .is_none()
        );
    }

    #[test]
    fn wrapped_help_keeps_words_whole() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("one", 2), ["one"]);
    }
}
