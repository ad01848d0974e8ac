//! The console's page of unanswered questions (docs/api.md, "Mining"): the clusters of
//! customer messages kefu did not answer well over a period of this node's conversation
//! log (`GET /admin/mine`), and a suggestion accepted as a draft in the rules directory
//! (`POST /admin/mine/accept`).
//!
//! Thin, like [`super::workbench`]: the mining is `kefu mine`'s ([`crate::data::mine`]),
//! the draft is written by [`crate::data::mine::accept`] exactly as `kefu mine --accept N`
//! writes it. Both run on the blocking pool (mining reads weeks of log files and
//! classifies every cluster; accepting parses the rules and writes files).
//!
//! - **One mining at a time per process.** Mining a month of log takes a blocking thread
//!   for seconds; a second request while one runs waits for it (an async wait, no
//!   thread held) up to 15 s, then gets 429 `busy` with `Retry-After`, so a few
//!   impatient reloads cannot take the threads turns and reloads need.
//! - **Nearest neighbours in the draft.** The clusters' nearest intents and FAQ entries
//!   are looked up in the draft's rules (the workbench's build) when it builds, else in
//!   the serving rules: what an editor accepts goes into the draft, so the draft is what
//!   a suggestion should be measured against (`nearest_from` says which was used).

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, TimeZone};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::http::{Body, json_response, read_json};
use super::versions::{blocking, query_value};
use super::{ApiError, State};
use crate::data::mine::accept::{self, AcceptError, Suggestion};
use crate::data::mine::{self, MineOptions};

/// Minings running at once in this process (see the module's header).
pub const MAX_CONCURRENT_MINES: usize = 1;

/// Process-wide, not per service: the threads it protects are the process's.
static MINES: Semaphore = Semaphore::const_new(MAX_CONCURRENT_MINES);

/// How long a mining request waits for the one running before it is answered 429 `busy`.
const MINE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The days `GET /admin/mine` covers without `since`: four weeks, so that the clusters'
/// week-on-week trend has both of its weeks and a rare question has time to recur.
pub const DEFAULT_DAYS: i64 = 28;

/// The largest body of `POST /admin/mine/accept`: 50 messages of 200 characters (a
/// suggestion's bounds, checked by `accept`) in 3-byte UTF-8 with JSON's quotes and
/// commas fit in 32 KiB; anything larger is not a suggestion.
const MAX_ACCEPT_BYTES: usize = 32 * 1024;

/// `GET /admin/mine?since=RFC3339&until=RFC3339`: the mined report over this node's
/// conversation log (default: the last [`DEFAULT_DAYS`] days up to the end of today in
/// the shop's zone), the period and where the nearest neighbours were looked up. 404
/// `no_log` without a log, 429 `busy` while another mining runs.
pub(super) async fn report(state: &Arc<State>, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let Some(log_dir) = state.log_dir.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_log",
            "this node keeps no conversation log (--conversation-log DIR): there is nothing to mine",
        ));
    };
    let (since, until) = period(state, query, DEFAULT_DAYS)?;
    // A second editor opening the page waits for the first mining (a few seconds at
    // most on a large log) rather than being turned away at once.
    let permit = tokio::time::timeout(MINE_WAIT, MINES.acquire())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                "the conversation log is being mined for another request; try again in a few seconds",
            );
            e.retry_after = Some(5);
            e
        })?;
    let state = Arc::clone(state);
    blocking(move || {
        // Held until the mining ends, also when the request has timed out meanwhile.
        let _permit = permit;
        let files = crate::data::writer::log_files(&log_dir).map_err(|e| {
            tracing::error!(dir = %log_dir.display(), error = %e, "the conversation log could not be listed");
            ApiError::internal()
        })?;
        let zone = state.engine.rules().shop.timezone;
        let files = crate::data::writer::files_between(&files, since, until, zone);
        // The draft when it builds (its nearest neighbours are what an accepted draft
        // changes), else what serves.
        let (rules, nearest_from) = match state.workbench.build(&state.engine) {
            Ok(built) => (built.rules, "draft"),
            Err(_) => (state.engine.rules(), "live"),
        };
        let options = MineOptions {
            since: Some(since),
            until: Some(until),
            ..MineOptions::default()
        };
        let report = mine::mine(&files, Some(rules.as_ref()), &options).map_err(|e| {
            tracing::error!(error = %e, "the conversation log could not be mined");
            ApiError::internal()
        })?;
        let mut body = serde_json::to_value(&report).map_err(|e| {
            tracing::error!(error = %e, "a mined report did not serialize");
            ApiError::internal()
        })?;
        if let Value::Object(fields) = &mut body {
            fields.insert("since".into(), json!(since.to_rfc3339()));
            fields.insert("until".into(), json!(until.to_rfc3339()));
            fields.insert("nearest_from".into(), json!(nearest_from));
        }
        Ok(json_response(StatusCode::OK, &body))
    })
    .await?
}

/// The period from the `since` and `until` query parameters (RFC 3339), as `GET
/// /admin/report` reads them: by default the `days` days up to the end of today in the
/// shop's time zone (midnight to midnight), `until` by default `days` days after `since`.
/// 400 for a bad time, an empty period or one over 366 days.
pub(super) fn period(
    state: &State,
    query: Option<&str>,
    days: i64,
) -> Result<(DateTime<FixedOffset>, DateTime<FixedOffset>), ApiError> {
    let zone = state.engine.rules().shop.timezone;
    let time = |name: &str| -> Result<Option<DateTime<FixedOffset>>, ApiError> {
        query_value(query, name)?
            .map(|v| {
                DateTime::parse_from_rfc3339(&v)
                    .map_err(|e| ApiError::invalid(format!("`{name}` is not an RFC 3339 time ({e}): `{v}`")))
            })
            .transpose()
    };
    let midnight = |day: chrono::NaiveDate| {
        zone.from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists"))
            .earliest()
            .map(|t| t.fixed_offset())
            .ok_or_else(ApiError::internal)
    };
    let today = chrono::Utc::now().with_timezone(&zone).date_naive();
    let since = match time("since")? {
        Some(t) => t,
        None => midnight(today - chrono::Duration::days(days - 1))?,
    };
    let until = match time("until")? {
        Some(t) => t,
        None => midnight(since.with_timezone(&zone).date_naive() + chrono::Duration::days(days))?,
    };
    if until <= since {
        return Err(ApiError::invalid("`until` comes after `since`"));
    }
    if until - since > chrono::Duration::days(366) {
        return Err(ApiError::invalid("a period covers at most 366 days"));
    }
    Ok((since, until))
}

/// `POST /admin/mine/accept` with a [`Suggestion`]: writes it into the draft rules
/// directory and answers what it wrote ([`accept::Drafted`], 201). 400 `invalid` when it
/// cannot be applied (an unknown intent, no usable message), 409 `conflict` when a file
/// was saved by someone else while it was written (nothing written).
pub(super) async fn accept(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let suggestion: Suggestion = read_json(req, MAX_ACCEPT_BYTES.min(state.limits.max_body_bytes), false).await?;
    let dir = state.workbench.dir().to_path_buf();
    blocking(move || match accept::accept(&dir, &suggestion) {
        Ok(drafted) => Ok(json_response(StatusCode::CREATED, &drafted)),
        Err(e) => Err(accept_error(e)),
    })
    .await?
}

/// An accept's refusal as the client sees it.
fn accept_error(error: AcceptError) -> ApiError {
    match error {
        AcceptError::Invalid(message) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", message),
        // A save landed between reading and writing a file: nothing was written, and
        // accepting again works on the file as it is now.
        AcceptError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
        AcceptError::Io(message) => {
            tracing::error!(error = %message, "a mined suggestion could not be written");
            ApiError::internal()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_answered_by_kind() {
        let invalid = accept_error(AcceptError::Invalid("no intent `x`".into()));
        assert_eq!((invalid.status, invalid.kind), (StatusCode::BAD_REQUEST, "invalid"));
        assert_eq!(invalid.message, "no intent `x`");
        let conflict = accept_error(AcceptError::Conflict("`kb/faq.yaml` changed".into()));
        assert_eq!((conflict.status, conflict.kind), (StatusCode::CONFLICT, "conflict"));
        // An I/O error's text (paths of the server's disk) stays in the log.
        let io = accept_error(AcceptError::Io("/srv/rules/kb/faq.yaml: permission denied".into()));
        assert_eq!(io.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!io.message.contains("/srv"));
    }
}
