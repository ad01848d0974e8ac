//! `kefu mine`: the unanswered questions of a conversation log, clustered, with
//! suggestions (text, `--json`, `--html`); `--accept N` writes one into the rules
//! directory as a draft.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use kefu::data::mine::accept::{Suggestion, accept};
use kefu::data::mine::{Action, MineOptions, MineReport};

use super::load;
use super::replay::time;

/// The flags of `kefu mine`.
#[derive(clap::Args)]
pub struct MineArgs {
    /// Conversation log files or directories (`kefu serve --conversation-log DIR`).
    #[arg(long = "log", required = true, value_name = "DIR")]
    logs: Vec<PathBuf>,
    /// The rules directory: nearest intents and FAQ entries, the suggestions made against
    /// them, and where `--accept` writes. Without it, every suggestion is a new FAQ entry
    /// or a new intent.
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
    /// Only turns at or after this time: RFC 3339, or a day (YYYY-MM-DD) in the shop's
    /// time zone.
    #[arg(long)]
    since: Option<String>,
    /// Only turns before this time (RFC 3339, or a day: before its start).
    #[arg(long)]
    until: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// The fewest conversations a cluster must cost to be listed.
    #[arg(long, default_value_t = 2)]
    min_conversations: usize,
    /// The most clusters listed.
    #[arg(long, default_value_t = 50)]
    max_clusters: usize,
    /// Write cluster N's suggestion into the rules directory as a draft (mine with the
    /// same log, period and limits as the listing that showed N).
    #[arg(long, value_name = "N")]
    accept: Option<usize>,
    /// With --accept: another action than the suggested one: `add_examples:INTENT`,
    /// `add_variants:FAQ`, `new_faq[:ID]` or `new_intent[:NAME]`.
    #[arg(long = "as", value_name = "ACTION", requires = "accept")]
    as_action: Option<String>,
}

/// Mines the logs `args` names and prints the clusters, or accepts one.
pub fn run(args: MineArgs) -> Result<ExitCode> {
    let rules = args.rules.as_deref().map(load).transpose()?;
    if args.accept.is_some() && rules.is_none() {
        bail!("--accept writes into a rules directory: name it with --rules DIR");
    }
    let zone = rules.as_ref().map_or(chrono_tz::Asia::Shanghai, |r| r.shop.timezone);
    let options = MineOptions {
        since: args.since.as_deref().map(|t| time(t, &zone, "--since")).transpose()?,
        until: args.until.as_deref().map(|t| time(t, &zone, "--until")).transpose()?,
        min_conversations: args.min_conversations,
        max_clusters: args.max_clusters,
        ..MineOptions::default()
    };
    let files = kefu::data::files(&args.logs)?;
    let started = std::time::Instant::now();
    let report = kefu::data::mine::mine(&files, rules.as_ref(), &options)?;
    eprintln!(
        "kefu: mined {} turns in {:.2} s",
        report.turns,
        started.elapsed().as_secs_f64()
    );
    let command = command(&args);
    if let Some(rank) = args.accept {
        let dir = args.rules.as_deref().context("--rules")?;
        return accept_cluster(&report, rank, args.as_action.as_deref(), dir, rules.as_ref());
    }
    if let Some(path) = &args.html {
        std::fs::write(path, kefu::data::mine::html::render(&report, &command))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let text = if args.json {
        serde_json::to_string(&report)? + "\n"
    } else {
        report.render(&command)
    };
    // A closed pipe (`kefu mine ... | head`) is not an error worth a message.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `kefu mine` with the flags that decide the ranks, for the accept lines.
fn command(args: &MineArgs) -> String {
    let mut c = String::from("kefu mine");
    for log in &args.logs {
        c += &format!(" --log {}", quoted(&log.display().to_string()));
    }
    if let Some(rules) = &args.rules {
        c += &format!(" --rules {}", quoted(&rules.display().to_string()));
    }
    for (flag, value) in [("--since", &args.since), ("--until", &args.until)] {
        if let Some(v) = value {
            c += &format!(" {flag} {}", quoted(v));
        }
    }
    if args.min_conversations != 2 {
        c += &format!(" --min-conversations {}", args.min_conversations);
    }
    if args.max_clusters != 50 {
        c += &format!(" --max-clusters {}", args.max_clusters);
    }
    c
}

/// `text` as a shell reads it back: bare when it is plain, else in single quotes.
fn quoted(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '/' | '.' | '-' | '_' | ':' | '+' | ','));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Takes cluster `rank`'s action (or `as_action`) and messages into a suggestion and
/// writes it into `dir` as a draft.
fn accept_cluster(
    report: &MineReport,
    rank: usize,
    as_action: Option<&str>,
    dir: &std::path::Path,
    rules: Option<&kefu::RuleSet>,
) -> Result<ExitCode> {
    let Some(cluster) = report.clusters.iter().find(|c| c.rank == rank) else {
        match report.clusters.len() {
            0 => bail!("--accept {rank}: no cluster was found in this log and period"),
            n => bail!("--accept {rank}: there is no cluster {rank}; the clusters are ranked 1 to {n}"),
        }
    };
    let action = match as_action {
        None => cluster.action.clone(),
        Some(text) => {
            let representative = cluster.examples.first().map_or("", String::as_str);
            parse_action(text, rules, representative)?
        }
    };
    let suggestion = Suggestion {
        action,
        messages: cluster.messages.clone(),
    };
    let drafted = accept(dir, &suggestion).map_err(|e| anyhow::anyhow!("--accept {rank}: {e}"))?;
    let mut out = String::new();
    for file in &drafted.files {
        let what = if file.created { "created" } else { "changed" };
        out += &format!("{what} {}\n{}", dir.join(&file.path).display(), file.diff);
        if !file.diff.ends_with('\n') {
            out.push('\n');
        }
    }
    out += &format!(
        "This is a draft, not live: write what is left to write, then `kefu check {d}`, `kefu test {d}`, \
         `kefu replay --log LOG --rules {d}`, and `kefu publish` when it is right.\n",
        d = quoted(&dir.display().to_string())
    );
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `--as`: `add_examples:INTENT`, `add_variants:FAQ`, `new_faq[:ID]`, `new_intent[:NAME]`.
fn parse_action(text: &str, rules: Option<&kefu::RuleSet>, representative: &str) -> Result<Action> {
    let (kind, name) = match text.split_once(':') {
        Some((k, n)) => (k, Some(n.trim()).filter(|n| !n.is_empty())),
        None => (text, None),
    };
    Ok(match (kind, name) {
        ("add_examples", Some(intent)) => Action::AddExamples { intent: intent.into() },
        ("add_variants", Some(faq)) => Action::AddVariants { faq: faq.into() },
        ("new_faq", Some(id)) => Action::NewFaq { id: id.into() },
        ("new_intent", Some(name)) => Action::NewIntent { name: name.into() },
        ("new_faq", None) => kefu::data::mine::suggest::fresh(rules, false, representative),
        ("new_intent", None) => kefu::data::mine::suggest::fresh(rules, true, representative),
        ("add_examples" | "add_variants", None) => bail!("--as {text}: name the {kind} target: `{kind}:NAME`"),
        _ => bail!("--as {text}: expected add_examples:INTENT, add_variants:FAQ, new_faq[:ID] or new_intent[:NAME]"),
    })
}
