//! `kefu publish`, `versions`, `show`, `diff`, `rollback` and `promote`: the version store
//! (`kefu::versions`) from the command line.
//!
//! The store is `STATE_DIR/versions/` (`--state-dir`, by default the directory `kefu
//! serve` uses) or Redis (`--redis URL`, its password from `--redis-password-file` or
//! KEFU_REDIS_PASSWORD as for serve). Every command exits 0 when done and 1 when refused
//! or failed, with the reason on stderr.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use kefu::versions::draft::{self, PublishError, PublishOptions, Rollback};
use kefu::versions::{LocalStore, Pointers, RedisVersionStore, Version, VersionId, VersionStore};

use super::check::Color;

/// Which version store the command works on.
#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// The state directory whose `versions/` holds the store (without --redis). Default:
    /// what `kefu serve` uses: $STATE_DIRECTORY, else $XDG_STATE_HOME/kefu, else
    /// ~/.local/state/kefu.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Keep versions in Redis (`redis://127.0.0.1:6379/0`), shared by a fleet. Its password
    /// goes in --redis-password-file or KEFU_REDIS_PASSWORD, not here.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// A file holding the Redis password; KEFU_REDIS_PASSWORD is read when not given.
    #[arg(long, value_name = "FILE")]
    redis_password_file: Option<PathBuf>,
    /// Work through a running `kefu serve` (`http://HOST:PORT`), its admin API: it builds
    /// and tests a publish itself and applies every change at once (other nodes of a
    /// fleet follow within a second). Its admin token from --admin-token-file or
    /// KEFU_ADMIN_TOKEN.
    #[arg(long, value_name = "URL", conflicts_with_all = ["state_dir", "redis"])]
    server: Option<String>,
    /// A file holding the server's admin token (with --server); KEFU_ADMIN_TOKEN is read
    /// when not given.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The server these flags name (`--server`), if any.
    fn server(&self) -> Result<Option<Server>> {
        let Some(url) = &self.server else { return Ok(None) };
        let token = super::serve::secret_text(
            self.admin_token_file.as_deref(),
            "--admin-token-file",
            "KEFU_ADMIN_TOKEN",
        )?;
        Ok(Some(Server::new(url, token)))
    }

    /// The store these flags name when there is one to read: `--redis`, `--state-dir`, or
    /// the default state directory when it holds versions; never created (a replay
    /// without a store compares with the log). `--server` is refused here.
    pub fn open_existing(&self) -> Result<Option<std::sync::Arc<dyn VersionStore>>> {
        if self.server.is_some() {
            bail!(
                "--server: this command reads the version store itself (--state-dir or --redis); the server's admin API has it as POST /admin/replay"
            );
        }
        if self.redis.is_some() || self.state_dir.is_some() {
            return self.open().map(Some);
        }
        if super::serve::default_state_dir().join("versions").is_dir() {
            return self.open().map(Some);
        }
        Ok(None)
    }

    /// Opens the store these flags name.
    pub fn open(&self) -> Result<std::sync::Arc<dyn VersionStore>> {
        let password = super::serve::secret_text(
            self.redis_password_file.as_deref(),
            "--redis-password-file",
            "KEFU_REDIS_PASSWORD",
        )?;
        if let Some(url) = super::serve::redis_url(self.redis.clone(), password)? {
            let store = RedisVersionStore::connect(&url)?;
            return Ok(std::sync::Arc::new(store));
        }
        let dir = self.state_dir.clone().unwrap_or_else(super::serve::default_state_dir);
        let store =
            LocalStore::open(&dir).with_context(|| format!("opening the version store in {}", dir.display()))?;
        Ok(std::sync::Arc::new(store))
    }
}

/// `kefu publish`.
#[derive(clap::Args)]
pub struct PublishArgs {
    /// The rules directory (the draft).
    #[arg(default_value = "rules")]
    dir: PathBuf,
    /// Why: what changed, for the history.
    #[arg(long, short)]
    message: String,
    /// Publish even when conversation tests or knowledge-base checks fail (recorded on the
    /// version). Rules that do not build are never published.
    #[arg(long)]
    force: bool,
    /// Start the new version as a canary on this percent of sessions (1-100) instead of
    /// making it live; `kefu promote` makes it live, `kefu rollback` stops it.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    canary: Option<u8>,
    /// The version the draft was edited from. Default: the one recorded in DIR/.kefu-base
    /// by the last publish from DIR, else the live version. Refused when it is not live.
    #[arg(long, value_name = "ID")]
    parent: Option<VersionId>,
    /// Who publishes. Default: $USER.
    #[arg(long, value_name = "NAME")]
    author: Option<String>,
    /// Colour the diagnostics: auto (when stderr is a terminal), always or never.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
    #[command(flatten)]
    store: StoreArgs,
}

/// `kefu versions`.
#[derive(clap::Args)]
pub struct VersionsArgs {
    /// One JSON object: `pointers` (live, canary, serial) and `versions` (oldest first).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `kefu show`.
#[derive(clap::Args)]
pub struct ShowArgs {
    /// A version id, `live` or `canary`.
    #[arg(value_name = "VERSION")]
    target: String,
    /// Print this file of the version (its path in the rules directory) instead of the
    /// record.
    path: Option<String>,
    /// The record as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `kefu diff`.
#[derive(clap::Args)]
pub struct DiffArgs {
    /// The old side: a version id, `live`, `canary`, or a rules directory (a path with a
    /// `/` is always a directory: `./live` for one named `live`).
    a: String,
    /// The new side: a version id, `live`, `canary`, or a rules directory.
    b: String,
    /// Colour: auto (when stdout is a terminal), always or never.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
    #[command(flatten)]
    store: StoreArgs,
}

/// `kefu rollback`.
#[derive(clap::Args)]
pub struct RollbackArgs {
    /// The version whose content to serve again. Default: the live version's parent.
    /// While a canary runs, rollback stops the canary instead (give no version).
    #[arg(value_name = "VERSION")]
    target: Option<VersionId>,
    /// Who rolls back. Default: $USER.
    #[arg(long, value_name = "NAME")]
    author: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// `kefu promote`.
#[derive(clap::Args)]
pub struct PromoteArgs {
    /// Who promotes. Default: $USER.
    #[arg(long, value_name = "NAME")]
    author: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

fn author(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn color(choice: Color, terminal: bool) -> bool {
    match choice {
        Color::Auto => terminal,
        Color::Always => true,
        Color::Never => false,
    }
}

/// `kefu publish`: build, test, publish.
pub fn publish(args: PublishArgs) -> Result<ExitCode> {
    if let Some(server) = args.store.server()? {
        return server.publish(args);
    }
    let store = args.store.open()?;
    let options = PublishOptions {
        message: args.message,
        author: author(args.author),
        force: args.force,
        canary: args.canary,
        parent: args.parent,
        color: color(args.color, std::io::stderr().is_terminal()),
        load: kefu::versions::load_options(&store),
    };
    match draft::publish(store.as_ref(), &args.dir, &options) {
        Ok(published) => {
            eprint!("{}", published.warnings);
            let v = &published.version;
            report_published(v, &published.failures, args.canary, "");
            Ok(ExitCode::SUCCESS)
        }
        Err(PublishError::Build { diagnostics }) => {
            eprint!("{diagnostics}");
            bail!("the rules in {} have errors: nothing was published", args.dir.display())
        }
        Err(e) => Err(e.into()),
    }
}

/// What a publish did, for people: the failing tests a `--force` published over (stderr),
/// then the new version and what it serves as. `place`: ` on URL` through a server.
fn report_published(v: &Version, failures: &[String], canary: Option<u8>, place: &str) {
    if v.forced {
        eprintln!(
            "published over {} failing tests (--force, recorded on the version):",
            v.tests.failed
        );
        for failure in failures {
            eprintln!("  ✗ {failure}");
        }
    }
    let over = v
        .parent
        .map_or_else(|| "the first version".to_string(), |p| format!("over version {p}"));
    let serving = match canary {
        Some(percent) => format!("canary on {percent}% of sessions"),
        None => "live".to_string(),
    };
    println!(
        "published version {}{place} (rules {}, {over}, {} tests passed): {serving}",
        v.id, v.rules, v.tests.passed
    );
}

/// The marker of a version in the list: `live`, `canary 10%` or nothing.
fn role(pointers: &Pointers, id: VersionId) -> String {
    if pointers.live == Some(id) {
        "live".into()
    } else if let Some(c) = pointers.canary.as_ref().filter(|c| c.version == id) {
        format!("canary {}%", c.percent)
    } else {
        String::new()
    }
}

/// `kefu versions`: the history, newest first.
pub fn list(args: VersionsArgs) -> Result<ExitCode> {
    let (pointers, versions) = match args.store.server()? {
        Some(server) => server.versions()?,
        None => {
            let store = args.store.open()?;
            (store.pointers()?, store.list()?)
        }
    };
    if args.json {
        let json = serde_json::json!({ "pointers": pointers, "versions": versions });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    if versions.is_empty() {
        println!("no versions yet: `kefu publish DIR -m MESSAGE` publishes the first");
    }
    for v in versions.iter().rev() {
        let mut flags = Vec::new();
        if v.forced {
            flags.push(format!("forced over {} failing tests", v.tests.failed));
        }
        if let Some(r) = v.rollback_of {
            flags.push(format!("rollback of {r}"));
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" ({})", flags.join(", "))
        };
        println!(
            "{:>4} {:<11} {} {} {:<12} {}{flags}",
            v.id,
            role(&pointers, v.id),
            v.time.format("%Y-%m-%d %H:%M:%S"),
            v.rules,
            v.author,
            v.message,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kefu show`: a version's record, or one of its files.
pub fn show(args: ShowArgs) -> Result<ExitCode> {
    if let Some(server) = args.store.server()? {
        if let Some(path) = &args.path {
            let files = server.files(&args.target)?;
            let text = files
                .get(path.trim_start_matches("./"))
                .with_context(|| format!("version {} has no file `{path}`", args.target))?;
            print!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        let v: Version = serde_json::from_value(server.get(&format!("/admin/versions/{}", args.target))?)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print!("{}", describe(&v, &server.versions()?.0));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = args.store.open()?;
    let id = kefu::versions::resolve(store.as_ref(), &args.target)?;
    if let Some(path) = &args.path {
        let files = store.files(id)?;
        let bytes = files
            .get(path.trim_start_matches("./"))
            .with_context(|| format!("version {id} has no file `{path}`"))?;
        use std::io::Write as _;
        std::io::stdout().write_all(bytes)?;
        return Ok(ExitCode::SUCCESS);
    }
    let v = store.version(id)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", describe(&v, &store.pointers()?));
    Ok(ExitCode::SUCCESS)
}

/// A version's record for people.
fn describe(v: &Version, pointers: &Pointers) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let role = role(pointers, v.id);
    let _ = writeln!(
        out,
        "version  {}{}",
        v.id,
        if role.is_empty() {
            String::new()
        } else {
            format!(" ({role})")
        }
    );
    let _ = writeln!(out, "rules    {}", v.rules);
    let _ = writeln!(
        out,
        "parent   {}",
        v.parent.map_or_else(|| "none".to_string(), |p| p.to_string())
    );
    let _ = writeln!(out, "author   {}", v.author);
    let _ = writeln!(out, "time     {}", v.time.to_rfc3339());
    let _ = writeln!(out, "message  {}", v.message);
    let forced = if v.forced { " (published with --force)" } else { "" };
    let _ = writeln!(
        out,
        "tests    {} passed, {} failed{forced}",
        v.tests.passed, v.tests.failed
    );
    if let Some(r) = v.rollback_of {
        let _ = writeln!(out, "rollback of version {r}");
    }
    let _ = writeln!(out, "files    {}", v.files.len());
    for (path, file) in &v.files {
        let _ = writeln!(
            out,
            "  {} {:>9}  {path}",
            &file.sha256[..12.min(file.sha256.len())],
            file.size
        );
    }
    if !v.notes.is_empty() {
        let _ = writeln!(out, "notes");
        for note in &v.notes {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                note.time.format("%Y-%m-%d %H:%M:%S"),
                note.kind,
                note.text
            );
            for (name, value) in &note.figures {
                let _ = writeln!(out, "      {name} = {value}");
            }
        }
    }
    out
}

/// One side of a diff: its files and the name its headers show.
fn side(store: &dyn VersionStore, name: &str) -> Result<(String, BTreeMap<String, Vec<u8>>)> {
    let looks_like_version = name == "live" || name == "canary" || name.parse::<VersionId>().is_ok();
    // `./live` is a directory named live.
    if !looks_like_version || name.contains('/') {
        let files = draft::read_dir(Path::new(name))?;
        return Ok((name.trim_end_matches('/').to_string(), files));
    }
    let id = kefu::versions::resolve(store, name)?;
    Ok((id.to_string(), store.files(id)?))
}

/// `kefu diff A B`: per-file unified diffs.
pub fn diff(args: DiffArgs) -> Result<ExitCode> {
    let ((a_name, a), (b_name, b)) = match args.store.server()? {
        Some(server) => (server.side(&args.a)?, server.side(&args.b)?),
        None => {
            let store = args.store.open()?;
            (side(store.as_ref(), &args.a)?, side(store.as_ref(), &args.b)?)
        }
    };
    let text = kefu::versions::diff::render(
        &a_name,
        &a,
        &b_name,
        &b,
        color(args.color, std::io::stdout().is_terminal()),
    );
    if text.is_empty() {
        eprintln!("no differences");
    }
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `kefu rollback [VERSION]`.
pub fn rollback(args: RollbackArgs) -> Result<ExitCode> {
    if let Some(server) = args.store.server()? {
        let answer = server.post(
            "/admin/rollback",
            &serde_json::json!({ "version": args.target, "author": author(args.author) }),
        )?;
        match answer.get("version") {
            Some(v) => {
                let v: Version = serde_json::from_value(v.clone())?;
                println!(
                    "published version {} (rules {}, the content of version {}) over version {}: live",
                    v.id,
                    v.rules,
                    v.rollback_of.unwrap_or_default(),
                    v.parent.unwrap_or_default()
                );
            }
            None => println!(
                "stopped the canary of version {}: the live version serves everyone",
                answer["canary_stopped"]
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = args.store.open()?;
    match draft::rollback(store.as_ref(), args.target, &author(args.author))? {
        Rollback::CanaryStopped(id) => println!("stopped the canary of version {id}: the live version serves everyone"),
        Rollback::Republished(v) => println!(
            "published version {} (rules {}, the content of version {}) over version {}: live",
            v.id,
            v.rules,
            v.rollback_of.unwrap_or_default(),
            v.parent.unwrap_or_default()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `kefu promote`: the canary becomes live.
pub fn promote(args: PromoteArgs) -> Result<ExitCode> {
    if let Some(server) = args.store.server()? {
        let answer = server.post("/admin/promote", &serde_json::json!({ "author": author(args.author) }))?;
        println!("version {} is live", answer["live"]);
        return Ok(ExitCode::SUCCESS);
    }
    let store = args.store.open()?;
    let id = draft::promote(store.as_ref(), &author(args.author))?;
    println!("version {id} is live");
    Ok(ExitCode::SUCCESS)
}

/// A running `kefu serve` as the publish target: its admin API (docs/api.md, "Publishing").
struct Server {
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Server {
    fn new(url: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            // A publish builds and tests the rules on the server.
            .timeout_global(Some(std::time::Duration::from_secs(300)))
            .http_status_as_error(false)
            .build()
            .into();
        Server {
            url: url.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    /// The answer's JSON, or its `error.message` as the error (with `error.report`, the
    /// rendered diagnostics of a rejected publish, printed first).
    fn answer(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        what: &str,
    ) -> Result<serde_json::Value> {
        let mut response = response.with_context(|| format!("{what} {}", self.url))?;
        let status = response.status();
        let body: serde_json::Value = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_json()
            .with_context(|| format!("{what} {}: the answer ({status}) is not JSON", self.url))?;
        if status.is_success() {
            return Ok(body);
        }
        let error = &body["error"];
        if let Some(report) = error.get("report").and_then(|r| r.as_str()) {
            eprint!("{report}");
        }
        bail!(
            "{} ({status} {})",
            error["message"].as_str().unwrap_or("the server refused"),
            error["type"].as_str().unwrap_or("")
        )
    }

    fn get(&self, path: &str) -> Result<serde_json::Value> {
        let mut request = self.agent.get(format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.answer(request.call(), "GET")
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let mut request = self.agent.post(format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.answer(request.send_json(body), "POST")
    }

    /// The pointers and every version, oldest first.
    fn versions(&self) -> Result<(Pointers, Vec<Version>)> {
        let answer = self.get("/admin/versions")?;
        let pointers = Pointers {
            live: serde_json::from_value(answer["live"].clone())?,
            canary: serde_json::from_value(answer["canary"].clone())?,
            serial: answer["serial"].as_u64().unwrap_or_default(),
        };
        let mut versions: Vec<Version> = serde_json::from_value(answer["versions"].clone())?;
        versions.reverse();
        Ok((pointers, versions))
    }

    /// Every file of a version (`live`, `canary` or a number), as text.
    fn files(&self, name: &str) -> Result<BTreeMap<String, String>> {
        let answer = self.get(&format!("/admin/versions/{name}/files"))?;
        Ok(serde_json::from_value(answer["files"].clone())?)
    }

    /// One side of a diff: a version on the server, or a local directory.
    fn side(&self, name: &str) -> Result<(String, BTreeMap<String, Vec<u8>>)> {
        let looks_like_version = name == "live" || name == "canary" || name.parse::<VersionId>().is_ok();
        if !looks_like_version || name.contains('/') {
            return Ok((
                name.trim_end_matches('/').to_string(),
                draft::read_dir(Path::new(name))?,
            ));
        }
        let files = self
            .files(name)?
            .into_iter()
            .map(|(p, t)| (p, t.into_bytes()))
            .collect();
        Ok((name.to_string(), files))
    }

    /// `kefu publish --server`: the draft's files sent, built and tested by the server.
    fn publish(&self, args: PublishArgs) -> Result<ExitCode> {
        let files = draft::read_dir(&args.dir)?;
        let mut texts = BTreeMap::new();
        for (path, bytes) in files {
            let text = String::from_utf8(bytes).map_err(|_| {
                anyhow::anyhow!(
                    "{}: not UTF-8 text (the admin API takes text files)",
                    args.dir.join(&path).display()
                )
            })?;
            texts.insert(path, text);
        }
        let parent = match args.parent {
            Some(p) => Some(p),
            None => draft::base(&args.dir)?,
        };
        let answer = self.post(
            "/admin/publish",
            &serde_json::json!({
                "files": texts,
                "message": args.message,
                "author": author(args.author),
                "parent": parent,
                "force": args.force,
                "canary": args.canary,
            }),
        )?;
        if let Some(warnings) = answer["warnings"].as_str() {
            eprint!("{warnings}");
        }
        let v: Version = serde_json::from_value(answer["version"].clone())?;
        draft::set_base(&args.dir, v.id)?;
        let failures: Vec<String> = answer["failures"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f.as_str().unwrap_or_default().to_string())
            .collect();
        report_published(&v, &failures, args.canary, &format!(" on {}", self.url));
        Ok(ExitCode::SUCCESS)
    }
}
