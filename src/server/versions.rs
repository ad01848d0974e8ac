//! The publishing admin API over the version store (docs/api.md, "Publishing"): the
//! versions and pointers, one version or one of its files, publish, diff, what-if replay,
//! canary, promote and rollback. `kefu publish --server URL` and its sibling commands
//! speak it, and the console builds on it.
//!
//! Every route is an admin route (the bearer token, or loopback without a proxy) and every
//! refusal is JSON: 404 `no_version_store` when the service has no store, 422
//! `rules_invalid` (with the diagnostics) or `tests_failed`, 409 `conflict` (a publish
//! from a parent that is no longer live, with how to rebase) or `canary_running`, 404
//! `no_such_version`, 500 `version_damaged` for a version whose files do not match what
//! was published. The work runs on the blocking pool (a publish builds and tests the rules);
//! after a change this node applies the pointers before it answers, so the response
//! describes what the node serves, and other nodes follow within a second.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::http::{Body, json_response, read_json};
use super::{ApiError, State};
use crate::reload::Trigger;
use crate::versions::draft::{self, PublishError, PublishOptions};
use crate::versions::{VersionError, VersionId, VersionStore, diff};

/// The largest publish body: a whole rules directory, knowledge base and data included.
pub(super) const MAX_PUBLISH_BYTES: usize = 64 * 1024 * 1024;

/// The store, or 404 `no_version_store`.
fn store(state: &State) -> Result<Arc<dyn VersionStore>, ApiError> {
    state.versions.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_version_store",
            "this node has no version store (it serves its rules directory only)",
        )
    })
}

/// A version store error as the API says it.
fn store_error(error: VersionError) -> ApiError {
    let message = error.to_string();
    match error {
        VersionError::NotFound(_) | VersionError::NoPointer(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "no_such_version", message)
        }
        VersionError::Conflict { parent, live } => ApiError::new(StatusCode::CONFLICT, "conflict", message)
            .with_details(json!({ "parent": parent, "live": live })),
        VersionError::Moved { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", message),
        VersionError::CanaryRunning(canary) => {
            ApiError::new(StatusCode::CONFLICT, "canary_running", message).with_details(json!({ "canary": canary }))
        }
        VersionError::Invalid(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message),
        VersionError::Corrupt { .. } => {
            tracing::error!(%message, "a damaged version was asked for");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "version_damaged", message)
        }
        VersionError::Io { .. } | VersionError::Redis(_) => {
            tracing::error!(%message, "the version store failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", message)
        }
    }
}

/// Runs `work` on the blocking pool; a panic is a 500.
pub(super) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "a version store task panicked");
        ApiError::internal()
    })
}

/// `live`, `canary` or a number: the version it names now (a name that is neither: 400).
fn resolve(store: &dyn VersionStore, name: &str) -> Result<VersionId, ApiError> {
    crate::versions::resolve(store, name).map_err(|e| match e {
        VersionError::Invalid(message) => ApiError::invalid(message),
        other => store_error(other),
    })
}

/// The pointers applied on this node now, after a change it made (other nodes look
/// within a second).
fn apply_here(state: &State) {
    state.reloader.reload(Trigger::Store);
}

/// Makes a published version a request pins (`rules_version`, a rules hash; admin callers
/// only) known to the engine: built from the store when no version serving has it (kept
/// among the node's built versions). Nothing to do when the engine knows it; an unknown
/// hash is left for the turn to refuse (404 `unknown_rules_version`).
pub(super) async fn offer_pinned(state: &Arc<State>, version: &str) -> Result<(), ApiError> {
    let engine = &state.engine;
    if engine.rules().version == version
        || engine.candidate().is_some_and(|c| c.rules.version == version)
        || engine.pinned_versions().iter().any(|v| v == version)
    {
        return Ok(());
    }
    let Some(follower) = state.reloader.follower().cloned() else {
        return Ok(());
    };
    let wanted = version.to_string();
    let loaded = blocking(move || follower.load_by_rules(&wanted)).await?;
    match loaded {
        Ok(Some(rules)) => engine.offer_pinned(rules),
        Ok(None) => {}
        Err(crate::reload::FollowError::Store(e)) => return Err(store_error(e)),
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rules_invalid",
                e.to_string(),
            ));
        }
    }
    Ok(())
}

/// `GET /admin/versions`: the pointers and every version, newest first.
pub(super) async fn list(state: &Arc<State>) -> Result<Response<Body>, ApiError> {
    let store = store(state)?;
    let (pointers, mut versions) = blocking(move || Ok::<_, VersionError>((store.pointers()?, store.list()?)))
        .await?
        .map_err(store_error)?;
    versions.reverse();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "live": pointers.live, "canary": pointers.canary, "serial": pointers.serial, "versions": versions }),
    ))
}

/// `GET /admin/versions/{id}`: one version's record (`id`: a number, `live`, `canary`);
/// with `?file=PATH`, that file's text.
pub(super) async fn show(state: &Arc<State>, id: &str, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let store = store(state)?;
    let file = query_value(query, "file")?;
    let id = id.to_string();
    blocking(move || {
        let id = resolve(store.as_ref(), &id)?;
        let version = store.version(id).map_err(store_error)?;
        let Some(path) = file else {
            return Ok(json_response(StatusCode::OK, &version));
        };
        if !version.files.contains_key(&path) {
            return Err(ApiError::not_found(format!("version {id} has no file `{path}`")));
        }
        let files = store.files(id).map_err(store_error)?;
        let bytes = files.get(&path).cloned().unwrap_or_default();
        let text = String::from_utf8(bytes).map_err(|_| ApiError::invalid(format!("`{path}` is not UTF-8 text")))?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "version": id, "path": path, "text": text }),
        ))
    })
    .await?
}

/// `GET /admin/versions/{id}/files`: every file of a version as text, by path (a file
/// that is not UTF-8 is refused with 422).
pub(super) async fn files(state: &Arc<State>, id: &str) -> Result<Response<Body>, ApiError> {
    let store = store(state)?;
    let id = id.to_string();
    blocking(move || {
        let id = resolve(store.as_ref(), &id)?;
        let mut texts = BTreeMap::new();
        for (path, bytes) in store.files(id).map_err(store_error)? {
            let text = String::from_utf8(bytes).map_err(|_| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "not_text",
                    format!("`{path}` is not UTF-8 text"),
                )
            })?;
            texts.insert(path, text);
        }
        Ok(json_response(StatusCode::OK, &json!({ "version": id, "files": texts })))
    })
    .await?
}

/// `GET /admin/diff?from=A&to=B` (or `?a=A&b=B`): per-file changes between two versions
/// (`live` and `canary` allowed; `to` defaults to `live`), each with its unified diff.
/// Either side may be `draft`: the server's rules directory as it is now.
pub(super) async fn diff(state: &Arc<State>, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let store = store(state)?;
    let from = match query_value(query, "from")? {
        Some(from) => from,
        None => query_value(query, "a")?.ok_or_else(|| {
            ApiError::invalid("give ?from=VERSION (and &to=VERSION), or ?a=...&b=...; `draft` is the draft")
        })?,
    };
    let to = match query_value(query, "to")? {
        Some(to) => Some(to),
        None => query_value(query, "b")?,
    }
    .unwrap_or_else(|| "live".into());
    let draft_dir = state.workbench.dir().to_path_buf();
    blocking(move || {
        // A side: the draft's files, or a version's, with the name its diff shows.
        let side = |name: &str| -> Result<(String, BTreeMap<String, Vec<u8>>), ApiError> {
            if name == "draft" {
                let files = draft::read_dir(&draft_dir)
                    .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rules_invalid", e.to_string()))?;
                return Ok(("draft".into(), files));
            }
            let id = resolve(store.as_ref(), name)?;
            Ok((id.to_string(), store.files(id).map_err(store_error)?))
        };
        let ((a, old), (b, new)) = (side(&from)?, side(&to)?);
        let files: Vec<_> = diff::changes(&old, &new)
            .into_iter()
            .map(|change| {
                let path = change.path().to_string();
                let one = |m: &BTreeMap<String, Vec<u8>>| {
                    m.get(&path).map(|b| (path.clone(), b.clone())).into_iter().collect()
                };
                let (kind, text) = match &change {
                    diff::FileChange::Added(_) => ("added", diff::render(&a, &BTreeMap::new(), &b, &one(&new), false)),
                    diff::FileChange::Removed(_) => {
                        ("removed", diff::render(&a, &one(&old), &b, &BTreeMap::new(), false))
                    }
                    diff::FileChange::Changed(_) => ("changed", diff::render(&a, &one(&old), &b, &one(&new), false)),
                };
                json!({ "path": path, "change": kind, "diff": text })
            })
            .collect();
        // Versions as numbers, as before; the draft as `"draft"`.
        let name = |n: &str| n.parse::<VersionId>().map_or_else(|_| json!(n), |id| json!(id));
        Ok(json_response(
            StatusCode::OK,
            &json!({ "from": name(&a), "to": name(&b), "files": files }),
        ))
    })
    .await?
}

/// The body of `POST /admin/publish`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    /// Every file of the draft, by path relative to the rules directory, as text...
    #[serde(default)]
    files: Option<BTreeMap<String, String>>,
    /// ...or `true`: the server's draft, its rules directory (parent: its `.kefu-base`,
    /// as `kefu publish DIR`).
    #[serde(default)]
    draft: bool,
    /// Why.
    message: String,
    /// Who (default: `admin`).
    #[serde(default)]
    author: Option<String>,
    /// The version the draft was edited from (default: the live one).
    #[serde(default)]
    parent: Option<VersionId>,
    /// Publish over failing tests (recorded on the version).
    #[serde(default)]
    force: bool,
    /// Start as a canary on this percent of sessions.
    #[serde(default)]
    canary: Option<u8>,
}

/// `POST /admin/publish`: builds, tests and publishes a draft sent as files. 201 with the
/// version; 422 `rules_invalid` with the rendered diagnostics, 422 `tests_failed` with
/// the failures, 409 `conflict` or `canary_running`; nothing changes on a refusal.
pub(super) async fn publish(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let store = store(state)?;
    let signed_in = super::auth::signed_in(&req);
    let body: PublishBody = read_json(req, MAX_PUBLISH_BYTES, false).await?;
    if body.message.trim().is_empty() {
        return Err(ApiError::invalid("`message` says why: it goes on the version"));
    }
    if body.draft {
        if body.files.is_some() {
            return Err(ApiError::invalid(
                "give the draft as `files` or `\"draft\": true`, not both",
            ));
        }
        return publish_draft_dir(state, store, body, signed_in).await;
    }
    let Some(body_files) = body.files else {
        return Err(ApiError::invalid(
            "give the draft as `files`, or `\"draft\": true` for the server's draft",
        ));
    };
    if let Some(bad) = body_files.keys().find(|p| !crate::versions::valid_path(p)) {
        return Err(ApiError::invalid(format!(
            "`{bad}` is not a relative path with `/` inside the rules directory"
        )));
    }
    if body_files.len() > draft::MAX_DRAFT_FILES {
        return Err(ApiError::invalid(format!(
            "a draft holds at most {} files",
            draft::MAX_DRAFT_FILES
        )));
    }
    let state_ = Arc::clone(state);
    blocking(move || {
        // The draft is built from a directory like any other: written to a fresh one.
        let dir = tempfile::Builder::new().prefix("kefu-draft-").tempdir().map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot write the draft: {e}"),
            )
        })?;
        let files = body_files.into_iter().map(|(p, t)| (p, t.into_bytes())).collect();
        let draft_dir = dir.path().join("rules");
        crate::versions::write_tree(&files, &draft_dir).map_err(store_error)?;
        let options = PublishOptions {
            message: body.message,
            author: author(signed_in, body.author),
            force: body.force,
            canary: body.canary,
            // Without one, the draft (a fresh directory, no `.kefu-base`) is edited from
            // whatever is live.
            parent: body.parent,
            color: false,
            load: crate::versions::load_options(&store),
        };
        publish_dir(&state_, store.as_ref(), &draft_dir, &options)
    })
    .await?
}

/// Publishes `dir`, applies the pointers on this node and answers 201 with the version
/// (the body's files and the server's draft alike).
fn publish_dir(
    state: &State,
    store: &dyn VersionStore,
    dir: &std::path::Path,
    options: &PublishOptions,
) -> Result<Response<Body>, ApiError> {
    let published = draft::publish(store, dir, options).map_err(|e| publish_error(e, dir))?;
    apply_here(state);
    tracing::info!(
        version = published.version.id,
        rules = %published.version.rules,
        author = %crate::safety::logsafe::LogSafe(&published.version.author),
        canary = ?options.canary,
        forced = published.version.forced,
        "a version was published"
    );
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "version": published.version, "warnings": published.warnings, "failures": published.failures }),
    ))
}

/// `POST /admin/publish` with `"draft": true`: publishes the server's rules directory as
/// `kefu publish DIR` does (its `.kefu-base` the parent unless `parent` is given, and
/// written after).
async fn publish_draft_dir(
    state: &Arc<State>,
    store: Arc<dyn VersionStore>,
    body: PublishBody,
    signed_in: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let state_ = Arc::clone(state);
    blocking(move || {
        let dir = state_.workbench.dir().to_path_buf();
        let options = PublishOptions {
            message: body.message,
            author: author(signed_in, body.author),
            force: body.force,
            canary: body.canary,
            parent: body.parent,
            color: false,
            load: crate::versions::load_options(&store),
        };
        publish_dir(&state_, store.as_ref(), &dir, &options)
    })
    .await?
}

/// A refused publish as the API says it; paths in diagnostics are shown relative to the
/// draft (the temporary directory means nothing to the client).
fn publish_error(error: PublishError, dir: &std::path::Path) -> ApiError {
    let local = |text: String| text.replace(&format!("{}/", dir.display()), "");
    let message = local(error.to_string());
    match error {
        PublishError::Build { diagnostics } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rules_invalid",
            "the rules have errors: nothing was published",
        )
        .with_details(json!({ "report": local(diagnostics) })),
        PublishError::Tests { summary, failures } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "tests_failed", message).with_details(json!({
                "passed": summary.passed,
                "failed": summary.failed,
                "failures": failures.into_iter().map(local).collect::<Vec<_>>(),
            }))
        }
        PublishError::Store(e) => store_error(e),
        _ => ApiError::invalid(message),
    }
}

/// The body of `POST /admin/replay`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// The draft as files (as `POST /admin/publish` takes them)...
    #[serde(default)]
    files: Option<BTreeMap<String, String>>,
    /// ...or a published version (a number, `live`, `canary`)...
    #[serde(default)]
    version: Option<String>,
    /// ...or `true`: the server's draft, its rules directory (built as the test chat
    /// builds it).
    #[serde(default)]
    draft: bool,
    /// The base for every turn (a version); default: the version that answered each turn.
    #[serde(default)]
    base: Option<String>,
    /// Examples per group of changes (default 5, at most 100).
    #[serde(default)]
    limit: Option<usize>,
    /// Only turns at or after this time; default: the last 7 days.
    #[serde(default)]
    since: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Only turns before this time.
    #[serde(default)]
    until: Option<chrono::DateTime<chrono::FixedOffset>>,
}

/// `POST /admin/replay`: the what-if replay of this node's conversation log (by default
/// its last 7 days) through a draft (`files`) or a published `version`, against the
/// version that answered each turn (or `base`); the report as JSON (`kefu replay
/// --json`'s). Model turns are reported, not generated. 409 `no_conversation_log` when
/// the log is off.
pub(super) async fn replay(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let store = store(state)?;
    let body: ReplayBody = read_json(req, MAX_PUBLISH_BYTES, false).await?;
    let Some(log_dir) = state.log_dir.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_conversation_log",
            "this node keeps no conversation log (--conversation-log DIR): there is nothing to replay",
        ));
    };
    if usize::from(body.files.is_some()) + usize::from(body.version.is_some()) + usize::from(body.draft) != 1 {
        return Err(ApiError::invalid(
            "give one of: the draft as `files`, a published `version`, or `\"draft\": true`",
        ));
    }
    let state_ = Arc::clone(state);
    if let Some(bad) = body
        .files
        .iter()
        .flat_map(|f| f.keys())
        .find(|p| !crate::versions::valid_path(p))
    {
        return Err(ApiError::invalid(format!(
            "`{bad}` is not a relative path with `/` inside the rules directory"
        )));
    }
    blocking(move || {
        let work = tempfile::Builder::new().prefix("kefu-replay-").tempdir().map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot write the draft: {e}"),
            )
        })?;
        let builds = crate::versions::Builds::new(store.as_ref(), work.path())
            .with_options(crate::versions::load_options(&store));
        let draft = match (&body.files, &body.version) {
            _ if body.draft => Arc::clone(&super::workbench::build(&state_)?.rules),
            (Some(files), _) => {
                let files = files.iter().map(|(p, t)| (p.clone(), t.clone().into_bytes())).collect();
                let dir = work.path().join("draft");
                crate::versions::write_tree(&files, &dir).map_err(store_error)?;
                let compiled = crate::dsl::load_dir(&dir);
                let report = compiled
                    .report
                    .render_all(false)
                    .replace(&format!("{}/", dir.display()), "");
                Arc::new(compiled.rules.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "rules_invalid",
                        "the draft has errors: nothing was replayed",
                    )
                    .with_details(json!({ "report": report }))
                })?)
            }
            (None, Some(version)) => {
                let id = resolve(store.as_ref(), version)?;
                builds
                    .by_id(id)
                    .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rules_invalid", e))?
            }
            (None, None) => unreachable!("checked above"),
        };
        let fixed = match &body.base {
            Some(base) => {
                let id = resolve(store.as_ref(), base)?;
                Some(
                    builds
                        .by_id(id)
                        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rules_invalid", e))?,
                )
            }
            None => None,
        };
        let since = body
            .since
            .unwrap_or_else(|| (chrono::Utc::now() - chrono::Duration::days(7)).fixed_offset());
        let options = crate::data::replay::ReplayOptions {
            examples: body.limit.unwrap_or(5).min(100),
            since: Some(since),
            until: body.until,
            model: None,
        };
        let files = crate::data::files(&[log_dir])
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
        let resolve_base = |rules: &str| match &fixed {
            Some(base) => Some(Arc::clone(base)),
            None => builds.by_rules(rules),
        };
        let report = crate::data::replay::replay_files(&files, draft, &resolve_base, &options)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
        Ok(json_response(StatusCode::OK, &report))
    })
    .await?
}

/// The body of `POST /admin/rollback`, `/admin/promote` and `/admin/canary`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PointerBody {
    /// The version (rollback: the one whose content to publish again; canary: the
    /// candidate).
    #[serde(default)]
    version: Option<VersionId>,
    /// Canary: percent of sessions.
    #[serde(default)]
    percent: Option<u8>,
    /// Who.
    #[serde(default)]
    author: Option<String>,
}

/// `POST /admin/rollback`: stops a running canary, or publishes the content of `version`
/// (default: the live version's parent) again as a new live version.
pub(super) async fn rollback(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let store = store(state)?;
    let signed_in = super::auth::signed_in(&req);
    let body: PointerBody = read_json(req, state.limits.max_body_bytes, true).await?;
    let state_ = Arc::clone(state);
    blocking(move || {
        let author = author(signed_in, body.author);
        let done = draft::rollback(store.as_ref(), body.version, &author).map_err(store_error)?;
        apply_here(&state_);
        let body = match done {
            draft::Rollback::CanaryStopped(id) => json!({ "canary_stopped": id }),
            draft::Rollback::Republished(version) => json!({ "version": version }),
        };
        tracing::info!(%body, "rolled back");
        Ok(json_response(StatusCode::OK, &body))
    })
    .await?
}

/// `POST /admin/promote`: the canary becomes the live version.
pub(super) async fn promote(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let store = store(state)?;
    let signed_in = super::auth::signed_in(&req);
    let body: PointerBody = read_json(req, state.limits.max_body_bytes, true).await?;
    let state_ = Arc::clone(state);
    blocking(move || {
        let author = author(signed_in, body.author);
        let live = draft::promote(store.as_ref(), &author).map_err(store_error)?;
        apply_here(&state_);
        tracing::info!(live, "the canary was promoted");
        Ok(json_response(StatusCode::OK, &json!({ "live": live })))
    })
    .await?
}

/// `POST /admin/canary`: starts a published version as a canary on `percent` of sessions.
pub(super) async fn canary(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let store = store(state)?;
    let signed_in = super::auth::signed_in(&req);
    let body: PointerBody = read_json(req, state.limits.max_body_bytes, false).await?;
    let (Some(version), Some(percent)) = (body.version, body.percent) else {
        return Err(ApiError::invalid("give `version` and `percent` (1-100)"));
    };
    let state_ = Arc::clone(state);
    blocking(move || {
        let author = author(signed_in, body.author);
        draft::start_canary(store.as_ref(), version, percent, &author).map_err(store_error)?;
        apply_here(&state_);
        tracing::info!(version, percent, "a canary was started");
        Ok(json_response(
            StatusCode::OK,
            &json!({ "canary": version, "percent": percent }),
        ))
    })
    .await?
}

/// Who a change is recorded as made by: the signed-in console user (the body's `author`
/// is not theirs to set), else the body's `author`, else `admin`.
fn author(signed_in: Option<String>, claimed: Option<String>) -> String {
    signed_in.or(claimed).unwrap_or_else(|| "admin".into())
}

/// One value of a query string (percent-decoded), `None` when absent.
pub(super) fn query_value(query: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            return super::http::decode_segment(&value.replace('+', " ")).map(Some);
        }
    }
    Ok(None)
}

/// Watches a running canary once a second and ends it when [`CanaryGuard`] says so
/// (`--canary-auto-rollback`): the canary is stopped in the store (every node follows),
/// the decision with its figures appended to the candidate's record as a note
/// (`automatic rollback`) and logged. Runs while the state lives; each node judges its own
/// counters, and the store's compare-and-set lets only one of several deciding nodes act.
///
/// [`CanaryGuard`]: super::canary::CanaryGuard
pub(super) fn guard_canaries(state: std::sync::Weak<State>, config: super::canary::GuardConfig) {
    if !config.auto_rollback {
        return;
    }
    tokio::spawn(async move {
        let mut guard = super::canary::CanaryGuard::new(config);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Some(state) = state.upgrade() else { return };
            let Some(candidate) = state.engine.candidate() else {
                continue;
            };
            let live = state.engine.rules().version.clone();
            let book = state.metrics.versions();
            let candidate_figures = book
                .figures(&candidate.rules.version, crate::dialogue::RulesRole::Canary)
                .unwrap_or_default();
            let live_figures = book
                .figures(&live, crate::dialogue::RulesRole::Live)
                .unwrap_or_default();
            let Some(decision) = guard.check(&candidate.rules.version, &candidate_figures, &live_figures) else {
                continue;
            };
            let Some(store) = state.versions.clone() else { continue };
            let Some((id, _)) = state.reloader.follower().and_then(|f| f.status().canary) else {
                continue;
            };
            tracing::warn!(
                version = id,
                rules = %candidate.rules.version,
                reason = %decision.reason,
                "the canary is rolled back automatically"
            );
            let acting = Arc::clone(&state);
            let _ = tokio::task::spawn_blocking(move || {
                let pointers = match store.pointers() {
                    Ok(p) => p,
                    Err(error) => return tracing::error!(%error, "the automatic rollback could not read the store"),
                };
                // Another node (or a person) may have ended it already.
                if pointers.canary.as_ref().map(|c| c.version) != Some(id) {
                    return;
                }
                if let Err(error) = draft::rollback(store.as_ref(), None, "kefu (automatic rollback)") {
                    return tracing::error!(%error, "the automatic rollback failed");
                }
                let mut note = crate::versions::Note::new("automatic rollback", decision.reason.clone());
                for (side, figures) in [("candidate", &decision.candidate), ("live", &decision.live)] {
                    note.figures.insert(format!("{side}_turns"), figures.turns as f64);
                    note.figures
                        .insert(format!("{side}_handoff_rate"), figures.handoff_rate().unwrap_or(0.0));
                    note.figures
                        .insert(format!("{side}_error_rate"), figures.error_rate().unwrap_or(0.0));
                }
                if let Err(error) = store.annotate(id, note) {
                    tracing::error!(%error, "the automatic rollback's decision could not be recorded");
                }
                apply_here(&acting);
            })
            .await;
        }
    });
}
