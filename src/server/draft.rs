//! The draft routes (`/admin/draft…`): the console edits the server's rules directory
//! (`--rules`, the directory `kefu publish` publishes) through them. This file owns only
//! the HTTP side: reading requests, the JSON of answers, the status of each refusal. The
//! file operations (versions, conflicts, atomic writes, which paths may be named) are
//! `versions::draft`'s; the check is `dsl::check_dir_with` (the report `kefu check`
//! prints); the FAQ and product tables are `kb::table`'s.
//!
//! - `GET /admin/draft`: the files with their kinds and versions, the base and live version.
//! - `GET|PUT|DELETE /admin/draft/file?path=P`: one file; a write names the version it was
//!   made from and is refused with 409 (the file as it is now and a diff) when it changed.
//! - `POST /admin/draft/check`: the diagnostics and declared names, with an unsaved buffer
//!   laid over its file (nothing written); on the blocking pool, at most
//!   [`MAX_CONCURRENT_CHECKS`] at once.
//! - `GET|PUT /admin/draft/table/{faq|products}`, `POST …/import`, `GET …/export`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

use super::http::{Body, json_response, read_body, read_json};
use super::versions::{blocking, query_value};
use super::{ApiError, State};
use crate::diag::files::Overlay;
use crate::kb::table::{CellError, Format, Table};
use crate::versions::diff;
use crate::versions::draft::{self, EditError, MAX_EDIT_BYTES};

/// Checks running at once in this process. A check takes the blocking pool's thread for
/// its whole run (tens of milliseconds for the demo shop); a flood of them waits here
/// rather than taking every thread turns and reloads need.
pub const MAX_CONCURRENT_CHECKS: usize = 2;

/// Process-wide, not per service: the threads it protects are the process's.
static CHECKS: Semaphore = Semaphore::const_new(MAX_CONCURRENT_CHECKS);

/// The largest JSON body of a write or check: a file of [`MAX_EDIT_BYTES`] with room for
/// its escapes (a file of line breaks doubles in JSON).
const MAX_JSON_BYTES: usize = 3 * MAX_EDIT_BYTES;

/// The draft directory: the one the server was started with.
fn dir(state: &State) -> PathBuf {
    state.reloader.dir().to_path_buf()
}

/// An edit's refusal as the client sees it.
fn edit_error(error: EditError) -> ApiError {
    match error {
        EditError::BadPath(message) => ApiError::new(StatusCode::BAD_REQUEST, "bad_path", message),
        e @ EditError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "no_such_file", e.to_string()),
        e @ EditError::TooLarge(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string()),
        e @ EditError::NotText(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_text", e.to_string()),
        EditError::Conflict { .. } => {
            // Answered by `conflict`, which has the sent text; reaching here is a bug.
            tracing::error!("a draft conflict without the sent text");
            ApiError::internal()
        }
        EditError::Io(e) => {
            tracing::error!(error = %e, "a draft file operation failed");
            ApiError::internal()
        }
    }
}

/// 409 `conflict`: the file as it is now and the diff from `sent` to it.
fn conflict(path: &str, sent: &str, error: EditError) -> ApiError {
    let EditError::Conflict { current, .. } = error else {
        return edit_error(error);
    };
    let now = current.as_ref().map_or("", |(text, _)| text.as_str());
    let diff = diff::unified(&format!("yours/{path}"), sent, &format!("draft/{path}"), now);
    let message = match &current {
        Some(_) => format!("`{path}` changed since the version you edited; nothing was changed"),
        None => format!("`{path}` no longer exists in the draft; nothing was changed"),
    };
    ApiError::new(StatusCode::CONFLICT, "conflict", message).with_details(json!({
        "current": current.map(|(text, version)| json!({ "text": text, "version": version })),
        "diff": diff,
    }))
}

/// The `path` query parameter.
fn path_param(req: &Request<Incoming>) -> Result<String, ApiError> {
    query_value(req.uri().query(), "path")?.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "name the file: `?path=aftersale.kefu`",
        )
    })
}

/// `GET /admin/draft`.
pub(super) async fn list(state: &Arc<State>) -> Result<Response<Body>, ApiError> {
    let dir = dir(state);
    let store = state.versions.clone();
    let shown = dir.display().to_string();
    let (files, base, live) = blocking(move || {
        let files = draft::list(&dir);
        let base = draft::base(&dir);
        // The live version is information here; a store that cannot be read now does not
        // keep the files from being listed.
        let live = store.and_then(|s| s.pointers().ok()).and_then(|p| p.live);
        (files, base, live)
    })
    .await?;
    let draft_error =
        |e: draft::DraftError| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "draft_unreadable", e.to_string());
    let files = files.map_err(draft_error)?;
    let base = base.map_err(draft_error)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "dir": shown, "base": base, "live": live, "files": files }),
    ))
}

/// What `PUT /admin/draft/file` takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Write {
    text: String,
    /// The version edited from; `null` for a new file.
    #[serde(default)]
    version: Option<String>,
}

/// `GET|PUT|DELETE /admin/draft/file?path=P`.
pub(super) async fn file(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let dir = dir(state);
    let path = path_param(&req)?;
    draft::check_path(&path).map_err(edit_error)?;
    let method = req.method().clone();
    if method == Method::GET || method == Method::HEAD {
        let p = path.clone();
        let (text, version) = blocking(move || draft::read_file(&dir, &p))
            .await?
            .map_err(edit_error)?;
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "path": path, "text": text, "version": version }),
        ));
    }
    if method == Method::DELETE {
        let version = query_value(req.uri().query(), "version")?
            .ok_or_else(|| ApiError::invalid("name the version you are removing: `&version=…`"))?;
        let p = path.clone();
        return match blocking(move || draft::delete_file(&dir, &p, &version)).await? {
            Ok(()) => {
                let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
                *response.status_mut() = StatusCode::NO_CONTENT;
                Ok(response)
            }
            Err(e @ EditError::Conflict { .. }) => Err(conflict(&path, "", e)),
            Err(e) => Err(edit_error(e)),
        };
    }
    let write: Write = read_json(req, MAX_JSON_BYTES, false).await?;
    if write.text.len() > MAX_EDIT_BYTES {
        return Err(edit_error(EditError::TooLarge(path)));
    }
    let (p, text) = (path.clone(), write.text.clone());
    match blocking(move || draft::write_file(&dir, &p, &text, write.version.as_deref())).await? {
        Ok(version) => Ok(json_response(
            StatusCode::OK,
            &json!({ "path": path, "version": version }),
        )),
        Err(e @ EditError::Conflict { .. }) => Err(conflict(&path, &write.text, e)),
        Err(e) => Err(edit_error(e)),
    }
}

/// What `POST /admin/draft/check` takes.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    #[serde(default)]
    overlay: Option<Buffer>,
}

/// An unsaved buffer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Buffer {
    path: String,
    text: String,
}

/// `POST /admin/draft/check`: `kefu check` of the draft, with the unsaved buffer laid
/// over its file, as JSON.
pub(super) async fn check(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: Check = read_json(req, MAX_JSON_BYTES, true).await?;
    let mut overlay = Overlay::default();
    if let Some(buffer) = body.overlay {
        draft::check_path(&buffer.path).map_err(edit_error)?;
        if buffer.text.len() > MAX_EDIT_BYTES {
            return Err(edit_error(EditError::TooLarge(buffer.path)));
        }
        overlay.insert(buffer.path, buffer.text);
    }
    let dir = dir(state);
    let _permit = CHECKS.acquire().await.map_err(|_| ApiError::internal())?;
    let body = blocking(move || check_json(&dir, &overlay)).await?;
    Ok(json_response(StatusCode::OK, &body))
}

/// The answer of a check of `dir` with `overlay`.
fn check_json(dir: &Path, overlay: &Overlay) -> serde_json::Value {
    let checked = crate::dsl::check_dir_with(dir, overlay);
    let (errors, warnings) = checked.report.counts();
    json!({
        "ok": errors == 0,
        "errors": errors,
        "warnings": warnings,
        "diagnostics": checked.report.located(dir),
        "rendered": checked.render(dir, false),
        "symbols": checked.symbols,
    })
}

/// What a table route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TableAction {
    /// `GET|PUT /admin/draft/table/{name}`.
    Rows,
    /// `POST …/import`.
    Import,
    /// `GET …/export`.
    Export,
}

/// 422 `invalid_rows` with every bad cell.
fn invalid_rows(errors: Vec<CellError>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_rows",
        format!(
            "{} bad {}; nothing was changed",
            errors.len(),
            if errors.len() == 1 { "cell" } else { "cells" }
        ),
    )
    .with_details(json!({ "errors": errors }))
}

/// A table file that does not parse: fixed in the rule editor, not here.
fn unreadable_table(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "table_unreadable", message)
}

/// What `PUT /admin/draft/table/{name}` takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutRows {
    rows: Vec<serde_json::Value>,
    /// The file's version the rows were edited from; `null` when it did not exist.
    #[serde(default)]
    version: Option<String>,
}

/// The `/admin/draft/table/…` routes.
pub(super) async fn table(
    state: &Arc<State>,
    name: &str,
    action: TableAction,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let table = Table::of(name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no table `{name}`: the draft's tables are `faq` and `products`"
        ))
    })?;
    let dir = dir(state);
    let file = table.file();
    match action {
        TableAction::Rows if req.method() == Method::PUT => {
            let put: PutRows = read_json(req, MAX_JSON_BYTES, false).await?;
            let rows = table.check_rows(&put.rows).map_err(invalid_rows)?;
            let result = blocking(move || -> Result<Result<String, ApiError>, EditError> {
                let current = match draft::read_file(&dir, file) {
                    Ok((text, _)) => text,
                    Err(EditError::NotFound(_)) => String::new(),
                    Err(e) => return Err(e),
                };
                let text = match table.to_yaml(&current, &rows) {
                    Ok(text) => text,
                    Err(message) => return Ok(Err(unreadable_table(message))),
                };
                if let Err(errors) = table.reads_back(&dir, &text) {
                    return Ok(Err(invalid_rows(errors)));
                }
                match draft::write_file(&dir, file, &text, put.version.as_deref()) {
                    Ok(version) => Ok(Ok(version)),
                    Err(e @ EditError::Conflict { .. }) => Ok(Err(conflict(file, &text, e))),
                    Err(e) => Err(e),
                }
            })
            .await?;
            let version = result.map_err(edit_error)??;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "file": file, "version": version }),
            ))
        }
        TableAction::Rows => {
            let (text, version) = match blocking(move || draft::read_file(&dir, file)).await? {
                Ok((text, version)) => (text, Some(version)),
                Err(EditError::NotFound(_)) => (String::new(), None),
                Err(e) => return Err(edit_error(e)),
            };
            let rows = table.rows(&text).map_err(unreadable_table)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "file": file, "version": version, "columns": table.columns(), "rows": rows }),
            ))
        }
        TableAction::Import => {
            let format = match query_value(req.uri().query(), "format")? {
                Some(f) => Format::of(&f),
                None => req
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Format::of_content_type),
            }
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_format",
                    "send CSV (`Content-Type: text/csv`) or XLSX (`application/vnd.openxmlformats-officedocument.spreadsheetml.sheet`), or say `?format=csv|xlsx`",
                )
            })?;
            let bytes = read_body(req, MAX_EDIT_BYTES).await?;
            let rows = blocking(move || table.import(&bytes, format))
                .await?
                .map_err(invalid_rows)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "rows": rows, "count": rows.len() }),
            ))
        }
        TableAction::Export => {
            let format = match query_value(req.uri().query(), "format")? {
                None => Format::Csv,
                Some(f) => Format::of(&f).ok_or_else(|| ApiError::invalid("`format` is `csv` or `xlsx`"))?,
            };
            let text = match blocking(move || draft::read_file(&dir, file)).await? {
                Ok((text, _)) => text,
                Err(EditError::NotFound(_)) => String::new(),
                Err(e) => return Err(edit_error(e)),
            };
            let rows = table.rows(&text).map_err(unreadable_table)?;
            let bytes = blocking(move || table.export(&rows, format)).await?.map_err(|e| {
                tracing::error!(error = %e, "a table export failed");
                ApiError::internal()
            })?;
            let mut response = Response::new(Either::Left(Full::new(Bytes::from(bytes))));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
            let disposition = format!("attachment; filename=\"{}.{}\"", table.name(), format.extension());
            headers.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).expect("an ASCII file name"),
            );
            Ok(response)
        }
    }
}
