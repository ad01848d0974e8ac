//! Operations routes: health, metrics, the served rules and a manual reload (`/livez` and
//! `/readyz`, for balancers, are in [`super::health`]).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::http::{Body, json_response};
use super::{ApiError, State};
use crate::reload::{ReloadOutcome, Trigger};

/// `GET /healthz`: the service answers and which rules it serves; `rules_stale` (with the
/// error count and since when) while the files on disk do not build. Still 200 then: the
/// service answers from the previous rules, and a balancer must not take it out for an
/// editor's typo; a monitor alerts on `rules_stale` instead. For people and monitors; a
/// balancer asks `/readyz` (which turns 503 while draining or without the store).
pub(super) fn healthz(state: &Arc<State>) -> Response<Body> {
    let rules = state.engine.rules();
    let stale = state.reloader.stale();
    let mut body = json!({
        "status": "ok",
        "rules_version": rules.version,
        "uptime_s": state.started.elapsed().as_secs(),
        "rules_stale": stale.is_some(),
    });
    if let Some(stale) = stale {
        body["rules_errors"] = json!(stale.errors);
        body["rules_stale_since"] = json!(stale.since);
    }
    json_response(StatusCode::OK, &body)
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
pub(super) fn metrics(state: &Arc<State>) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(state.metrics.encode()))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// `GET /admin/rules`: version, files, when and how they were loaded, reload counts, and
/// the diagnostics of the last rejected reload while the files on disk do not build.
pub(super) fn rules(state: &Arc<State>) -> Response<Body> {
    json_response(StatusCode::OK, &state.reloader.status())
}

/// `POST /admin/reload`: builds the rules directory now. 200 with the new version, or
/// 422 `rules_invalid` with every diagnostic; the previous rules keep serving.
pub(super) async fn reload(state: &Arc<State>) -> Result<Response<Body>, ApiError> {
    let reloader = Arc::clone(&state.reloader);
    let outcome = tokio::task::spawn_blocking(move || reloader.reload(Trigger::Admin))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "reload panicked");
            ApiError::internal()
        })?;
    match outcome {
        ReloadOutcome::Applied {
            version,
            previous,
            changed,
            warnings,
            duration,
        } => Ok(json_response(
            StatusCode::OK,
            &json!({
                "outcome": "applied",
                "version": version,
                "previous_version": previous,
                "changed": changed,
                "warnings": warnings,
                "ms": duration.as_secs_f64() * 1000.0,
            }),
        )),
        ReloadOutcome::Rejected(failure) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rules_invalid",
            format!(
                "{}; the previous rules ({}) keep serving",
                failure.summary(),
                state.engine.rules().version
            ),
        )
        .with_details(json!({ "diagnostics": failure.diagnostics, "report": failure.report }))),
    }
}
