//! The console's workbench over the draft (docs/api.md, "Workbench"): a test chat with the
//! draft's rules and the whole trace (`POST /admin/draft/chat`), the draft's conversation
//! tests with coverage (`POST /admin/draft/tests`), a chat saved as a test
//! (`POST /admin/draft/tests/save`), and the figures of the conversation log
//! (`GET /admin/report`).
//!
//! Thin: the draft is built and answered by [`crate::reload::workbench`], the tests are
//! `kefu test`'s ([`crate::conversation::Suite`]), the report is `kefu report`'s
//! ([`crate::data::report`]). Everything runs on the blocking pool (a build trains, a
//! turn may ask the model, a report reads files).

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::http::{Body, json_response, read_json};
use super::limits::{check_message, check_session_id};
use super::{ApiError, State};
use crate::TurnRequest;
use crate::reload::workbench::{self, Built, WorkbenchError};

/// Runs `work` on the blocking pool; a panic is a 500.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "a workbench task panicked");
        ApiError::internal()
    })
}

/// The draft built (or 422 `rules_invalid` with the diagnostics, as a publish refuses it).
pub(super) fn build(state: &State) -> Result<Built, ApiError> {
    state.workbench.build(&state.engine).map_err(|e| match e {
        WorkbenchError::Invalid(failure) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rules_invalid",
            format!("the draft has errors: {}", failure.summary()),
        )
        .with_details(json!({
            "diagnostics": failure.diagnostics.iter().map(diagnostic).collect::<Vec<_>>(),
            "report": failure.report,
        })),
        WorkbenchError::Files(e) => {
            let dir = format!("{}/", state.workbench.dir().display());
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rules_invalid",
                e.to_string().replace(&dir, ""),
            )
        }
    })
}

/// One diagnostic of a draft that does not build: its `location` (`file:line:col`) also
/// split into `file`, `line` and `col`, as the console's editor places it.
fn diagnostic(d: &crate::reload::DiagnosticView) -> Value {
    let mut parts = d.location.rsplitn(3, ':');
    let (col, line, file) = (parts.next(), parts.next(), parts.next());
    let number = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok());
    let (file, line, col) = match (file, number(line), number(col)) {
        (Some(file), Some(line), Some(col)) => (file, Some(line), Some(col)),
        _ => (d.location.as_str(), None, None),
    };
    json!({
        "severity": d.severity,
        "message": d.message,
        "location": d.location,
        "file": file,
        "line": line,
        "col": col,
    })
}

/// The body of `POST /admin/draft/chat`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatBody {
    /// The test conversation (default: a new one).
    #[serde(default)]
    session_id: Option<String>,
    /// What the customer writes.
    message: String,
    /// The customer's profile.
    #[serde(default)]
    user: Option<Map<String, Value>>,
    /// Request context maps.
    #[serde(default)]
    context: Option<Map<String, Value>>,
    /// Answer as of this time.
    #[serde(default)]
    as_of: Option<DateTime<FixedOffset>>,
    /// Start the conversation over before this message.
    #[serde(default)]
    reset: bool,
}

/// `POST /admin/draft/chat`: one message answered by the draft's rules, in a conversation
/// kept only by the draft's engine; the turn with its whole trace and what an editor
/// reads of it (see docs/api.md).
pub(super) async fn chat(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: ChatBody = read_json(req, state.limits.max_body_bytes, false).await?;
    check_message(&body.message, "message", &state.limits)?;
    let session_id = match body.session_id {
        Some(id) => {
            check_session_id(&id, &state.limits)?;
            id
        }
        None => {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).map_err(|_| ApiError::internal())?;
            format!("draft-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
    };
    let state = Arc::clone(state);
    blocking(move || {
        let built = build(&state)?;
        if body.reset {
            state.workbench.forget_session(&session_id);
        }
        let request = TurnRequest {
            session_id: session_id.clone(),
            message: body.message,
            user: body.user,
            context: body.context,
            as_of: body.as_of,
            rules_version: None,
            channel: None,
            event: None,
            images: Vec::new(),
        };
        let turn = built.engine.turn(request).map_err(ApiError::from_engine)?;
        let slots = built
            .engine
            .session(&session_id)
            .ok()
            .flatten()
            .map(|s| s.slots)
            .unwrap_or_default();
        // The prompt's messages, each a part with its text; what they hold (persona,
        // policies, passages...) is in `prompt_parts`.
        let prompt = (!turn.prompt.is_empty()).then(|| {
            turn.prompt
                .iter()
                .map(|m| json!({ "part": m.role, "text": m.content }))
                .collect::<Vec<_>>()
        });
        let body = json!({
            "session_id": session_id,
            "slots": slots,
            "understanding": {
                "intent": turn.intent,
                "confidence": turn.confidence,
                "runners_up": turn.runners_up,
                "entities": turn.entities,
                "emotion": turn.emotion,
            },
            "kb": workbench::kb_hits(&turn.trace),
            "prompt": prompt,
            "prompt_parts": workbench::prompt_parts(&turn.trace),
            "safety": workbench::safety_actions(&turn.trace),
            "source_location": workbench::source_location(&built.rules, &turn),
            "rules_version": built.rules.version,
            "turn": turn,
        });
        Ok(json_response(StatusCode::OK, &body))
    })
    .await?
}

/// One failed expectation of a test case, as `POST /admin/draft/tests` lists it.
#[derive(Serialize)]
struct CaseFailure<'a> {
    /// The turn, from 1.
    turn: usize,
    /// What the customer said there.
    say: &'a str,
    #[serde(flatten)]
    failure: &'a crate::conversation::Failure,
}

/// `POST /admin/draft/tests`: the draft's conversation tests and knowledge-base checks,
/// run as `kefu test` runs them, with the coverage and the text `kefu test` prints.
pub(super) async fn tests(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let _: Map<String, Value> = read_json(req, state.limits.max_body_bytes, true).await?;
    let state = Arc::clone(state);
    blocking(move || {
        let built = build(&state)?;
        let dir = state.workbench.dir().to_path_buf();
        let suite = crate::conversation::Suite::run(&built.rules, &dir).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "tests_unreadable",
                format!("cannot read the draft's tests: {e}"),
            )
        })?;
        let prefix = format!("{}/", dir.display());
        let local = |path: &std::path::Path| path.display().to_string().replace(&prefix, "");
        let cases: Vec<Value> = suite
            .conversations
            .iter()
            .map(|o| {
                let failures: Vec<CaseFailure<'_>> = o
                    .turns
                    .iter()
                    .enumerate()
                    .flat_map(|(n, t)| {
                        t.failures.iter().map(move |failure| CaseFailure {
                            turn: n + 1,
                            say: &t.say,
                            failure,
                        })
                    })
                    .collect();
                json!({
                    "file": local(&o.file),
                    "name": o.name,
                    "ok": o.passed(),
                    "error": o.error.as_ref().map(|e| e.replace(&prefix, "")),
                    "turns": o.turns.len(),
                    "failures": failures,
                })
            })
            .collect();
        let kb: Vec<Value> = suite
            .kb
            .iter()
            .map(|r| {
                json!({
                    "file": local(&r.file),
                    "ok": r.passed(),
                    "summary": r.summary(),
                    "errors": r.errors,
                    "cases": r.cases,
                    "false_answers": r.false_answers,
                })
            })
            .collect();
        let c = suite.coverage(&built.rules);
        let (covered, total) = (
            c.rules.0 + c.promotions.0 + c.flow_steps.0,
            c.rules.1 + c.promotions.1 + c.flow_steps.1,
        );
        let never: Vec<Value> = c
            .missing
            .iter()
            .map(|n| json!({ "kind": n.kind, "name": n.name, "file": n.file.replace(&prefix, ""), "line": n.line }))
            .collect();
        let body = json!({
            "passed": suite.passed(),
            "failed": suite.failed(),
            "cases": cases,
            "kb": kb,
            "coverage": {
                "percent": (covered * 1000).checked_div(total).map_or(100.0, |p| p as f64 / 10.0),
                "covered": covered,
                "total": total,
                "rules": c.rules,
                "promotions": c.promotions,
                "flow_steps": c.flow_steps,
                "never": never,
            },
            "rendered": suite.render(&built.rules, false).replace(&prefix, ""),
            "rules_version": built.rules.version,
        });
        Ok(json_response(StatusCode::OK, &body))
    })
    .await?
}

/// The body of `POST /admin/draft/tests/save`: a conversation test as `rules/tests/*.yaml`
/// holds one.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SaveBody {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    context: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    as_of: Option<DateTime<FixedOffset>>,
    turns: Vec<Map<String, Value>>,
}

/// `POST /admin/draft/tests/save`: writes `tests/<slug>.yaml` (the slug from the name)
/// when no such file exists (409 `conflict` otherwise); the YAML is read back with the
/// test loader before it is written (422 `invalid_test` when it does not load).
pub(super) async fn save_test(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: SaveBody = read_json(req, state.limits.max_body_bytes, false).await?;
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid("`name` says what the test checks"));
    }
    if body.turns.is_empty() {
        return Err(ApiError::invalid("`turns` holds at least one `{say, expect}`"));
    }
    let slug = crate::conversation::slug(&body.name);
    let state = Arc::clone(state);
    blocking(move || {
        let text = crate::conversation::to_yaml(&body)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_test", e))?;
        let path = format!("tests/{slug}.yaml");
        let full = state.workbench.dir().join("tests").join(format!("{slug}.yaml"));
        match crate::conversation::write_new(&full, &text) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("`{path}` exists: give the test another name"),
                )
                .with_details(json!({ "path": path })));
            }
            Err(e) => {
                tracing::error!(path = %full.display(), error = %e, "a test could not be saved");
                return Err(ApiError::internal());
            }
        }
        let version = crate::versions::sha256_hex(text.as_bytes())[..16].to_string();
        Ok(json_response(
            StatusCode::CREATED,
            &json!({ "path": path, "version": version }),
        ))
    })
    .await?
}

/// `GET /admin/report?since=RFC3339&until=RFC3339&unused_days=N`: `kefu report`'s figures
/// over this node's conversation log for the period (default: today in the shop's time
/// zone), its turns hour by hour, and the satisfaction scores; `never_hit`, the serving
/// rules' items not hit in the last `unused_days` days of the log (default 30, 1 to 366;
/// counted back from its last record, whatever the period). 404 `no_log` without a log.
pub(super) async fn report(state: &Arc<State>, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let Some(log_dir) = state.log_dir.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_log",
            "this node keeps no conversation log (--conversation-log DIR): there are no figures",
        ));
    };
    let zone = state.engine.rules().shop.timezone;
    // Default: today in the shop's time zone.
    let (since, until) = super::mine::period(state, query, 1)?;
    let unused_days = match super::versions::query_value(query, "unused_days")? {
        None => 30,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=366).contains(d))
            .ok_or_else(|| ApiError::invalid(format!("`unused_days` is a number of days from 1 to 366: `{v}`")))?,
    };
    let serving = state.engine.rules();
    let last_hits = Arc::clone(&state.last_hits);
    blocking(move || {
        let files = crate::data::writer::log_files(&log_dir).map_err(|e| {
            tracing::error!(dir = %log_dir.display(), error = %e, "the conversation log could not be listed");
            ApiError::internal()
        })?;
        let options = crate::data::report::ReportOptions::default();
        let (mut report, hourly) =
            crate::data::report::report_between(&files, since, until, zone, &options).map_err(|e| {
                tracing::error!(error = %e, "the conversation log could not be read");
                ApiError::internal()
            })?;
        let catalog = crate::data::hits::Catalog::of(&serving);
        let never_hit = last_hits.never_hit(&files, &catalog, unused_days).map_err(|e| {
            tracing::error!(error = %e, "the conversation log could not be read");
            ApiError::internal()
        })?;
        // Also in the report, as `kefu report --rules` gives it.
        report.never_hit = Some(never_hit);
        let body = json!({
            "never_hit": report.never_hit,
            "since": since.to_rfc3339(),
            "until": until.to_rfc3339(),
            "satisfaction": report.satisfaction,
            // The overview's agents panel (always present: empty lists before any hold).
            "agents": report.agents,
            "hourly": hourly,
            "report": report,
        });
        Ok(json_response(StatusCode::OK, &body))
    })
    .await?
}
