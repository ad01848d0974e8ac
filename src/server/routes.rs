//! The router: one request from start to end. Its method and path name a route
//! (`Route`), the route names a handler, the whole runs under the request time limit, and
//! the request is counted in the metrics under its route's pattern.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::Either;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::http::{Body, decode_segment};
use super::{ApiError, State, admin, chat, conns, health, openai, sessions, versions, workbench};

/// One request, start to end: route, time limit, metrics, and errors turned into JSON.
pub(super) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
    busy: conns::Busy,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    // A clone of the URI is a reference count, not a copy; the route borrows from it while
    // the request moves on to its handler.
    let uri = req.uri().clone();
    let route = Route::of(uri.path());
    let name = route.as_ref().map_or("other", Route::name);
    let response = match tokio::time::timeout(state.limits.request_timeout, dispatch(&state, route, req, peer)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.into_response(),
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "no answer within {} s; try again",
                state.limits.request_timeout.as_secs_f64()
            ),
        )
        .into_response(),
    };
    state
        .metrics
        .request(name, response.status().as_u16(), started.elapsed());
    let mut response = response;
    if state.health.draining() {
        // Draining: clients and proxies reconnect, and the balancer sends them elsewhere.
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    if let Either::Right(stream) = response.body_mut() {
        // The connection stays busy while its event stream is open, so it is never shed
        // as idle.
        stream.busy = Some(busy);
    }
    Ok(response)
}

/// What a session route does to the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SessionAction {
    Takeover,
    Reply,
    Release,
    Feedback,
}

/// Every route's pattern ([`Route::name`]), for the request series that exist from start.
pub(super) const ROUTE_PATTERNS: [&str; 27] = [
    "/v1/chat",
    "/v1/chat/completions",
    "/v1/sessions/{id}",
    "/v1/sessions/{id}/takeover",
    "/v1/sessions/{id}/reply",
    "/v1/sessions/{id}/release",
    "/v1/sessions/{id}/feedback",
    "/v1/tickets",
    "/healthz",
    "/livez",
    "/readyz",
    "/metrics",
    "/admin/rules",
    "/admin/reload",
    "/admin/versions",
    "/admin/versions/{id}",
    "/admin/versions/{id}/files",
    "/admin/publish",
    "/admin/diff",
    "/admin/replay",
    "/admin/canary",
    "/admin/promote",
    "/admin/rollback",
    "/admin/draft/chat",
    "/admin/draft/tests",
    "/admin/draft/tests/save",
    "/admin/report",
];

/// The route a path names, read once per request: for dispatch and for the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Chat,
    Completions,
    /// `/v1/sessions/{id}`, the id as it appears in the path (still percent-encoded).
    Session(&'a str),
    SessionAction(&'a str, SessionAction),
    Tickets,
    Healthz,
    Livez,
    Readyz,
    Metrics,
    AdminRules,
    AdminReload,
    AdminVersions,
    /// `/admin/versions/{id}`: a number, `live` or `canary`.
    AdminVersion(&'a str),
    /// `/admin/versions/{id}/files`.
    AdminVersionFiles(&'a str),
    AdminPublish,
    AdminDiff,
    AdminReplay,
    AdminCanary,
    AdminPromote,
    AdminRollback,
    /// `POST /admin/draft/chat`: permission `read` (a test chat changes nothing).
    DraftChat,
    /// `POST /admin/draft/tests`: permission `read`.
    DraftTests,
    /// `POST /admin/draft/tests/save`: permission `edit` (writes to the draft).
    DraftTestSave,
    /// `GET /admin/report`: permission `read`.
    AdminReport,
}

impl<'a> Route<'a> {
    /// The route of `path`, `None` for no route. Splits the path without allocating: no
    /// route has more than four segments.
    fn of(path: &'a str) -> Option<Route<'a>> {
        let mut segments = [""; 4];
        let mut n = 0;
        for segment in path.trim_matches('/').split('/') {
            *segments.get_mut(n)? = segment;
            n += 1;
        }
        let action = |action: &str| match action {
            "takeover" => Some(SessionAction::Takeover),
            "reply" => Some(SessionAction::Reply),
            "release" => Some(SessionAction::Release),
            "feedback" => Some(SessionAction::Feedback),
            _ => None,
        };
        Some(match segments[..n] {
            ["v1", "chat"] => Route::Chat,
            ["v1", "chat", "completions"] => Route::Completions,
            ["v1", "sessions", id] => Route::Session(id),
            ["v1", "sessions", id, a] => Route::SessionAction(id, action(a)?),
            ["v1", "tickets"] => Route::Tickets,
            ["healthz"] => Route::Healthz,
            ["livez"] => Route::Livez,
            ["readyz"] => Route::Readyz,
            ["metrics"] => Route::Metrics,
            ["admin", "rules"] => Route::AdminRules,
            ["admin", "reload"] => Route::AdminReload,
            ["admin", "versions"] => Route::AdminVersions,
            ["admin", "versions", id] => Route::AdminVersion(id),
            ["admin", "versions", id, "files"] => Route::AdminVersionFiles(id),
            ["admin", "publish"] => Route::AdminPublish,
            ["admin", "diff"] => Route::AdminDiff,
            ["admin", "replay"] => Route::AdminReplay,
            ["admin", "canary"] => Route::AdminCanary,
            ["admin", "promote"] => Route::AdminPromote,
            ["admin", "rollback"] => Route::AdminRollback,
            ["admin", "draft", "chat"] => Route::DraftChat,
            ["admin", "draft", "tests"] => Route::DraftTests,
            ["admin", "draft", "tests", "save"] => Route::DraftTestSave,
            ["admin", "report"] => Route::AdminReport,
            _ => return None,
        })
    }

    /// The route's pattern, the `route` label of the request metrics.
    fn name(&self) -> &'static str {
        match self {
            Route::Chat => "/v1/chat",
            Route::Completions => "/v1/chat/completions",
            Route::Session(_) => "/v1/sessions/{id}",
            Route::SessionAction(_, SessionAction::Takeover) => "/v1/sessions/{id}/takeover",
            Route::SessionAction(_, SessionAction::Reply) => "/v1/sessions/{id}/reply",
            Route::SessionAction(_, SessionAction::Release) => "/v1/sessions/{id}/release",
            Route::SessionAction(_, SessionAction::Feedback) => "/v1/sessions/{id}/feedback",
            Route::Tickets => "/v1/tickets",
            Route::Healthz => "/healthz",
            Route::Livez => "/livez",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::AdminRules => "/admin/rules",
            Route::AdminReload => "/admin/reload",
            Route::AdminVersions => "/admin/versions",
            Route::AdminVersion(_) => "/admin/versions/{id}",
            Route::AdminVersionFiles(_) => "/admin/versions/{id}/files",
            Route::AdminPublish => "/admin/publish",
            Route::AdminDiff => "/admin/diff",
            Route::AdminReplay => "/admin/replay",
            Route::AdminCanary => "/admin/canary",
            Route::AdminPromote => "/admin/promote",
            Route::AdminRollback => "/admin/rollback",
            Route::DraftChat => "/admin/draft/chat",
            Route::DraftTests => "/admin/draft/tests",
            Route::DraftTestSave => "/admin/draft/tests/save",
            Route::AdminReport => "/admin/report",
        }
    }

    /// Whether the route reads (GET, and HEAD) rather than acts (POST).
    fn reads(&self) -> bool {
        matches!(
            self,
            Route::Session(_)
                | Route::Tickets
                | Route::Healthz
                | Route::Livez
                | Route::Readyz
                | Route::Metrics
                | Route::AdminRules
                | Route::AdminVersions
                | Route::AdminVersion(_)
                | Route::AdminVersionFiles(_)
                | Route::AdminDiff
                | Route::AdminReport
        )
    }
}

async fn dispatch(
    state: &Arc<State>,
    route: Option<Route<'_>>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let Some(route) = route else {
        return Err(ApiError::not_found(format!(
            "no route {}; see docs/api.md",
            req.uri().path()
        )));
    };
    let method = req.method();
    if route.reads() && !(method == Method::GET || method == Method::HEAD) {
        return Err(ApiError::method_not_allowed("GET"));
    }
    if !route.reads() && method != Method::POST {
        return Err(ApiError::method_not_allowed("POST"));
    }
    match route {
        Route::Chat => {
            // Customers see a trace without the rules' internals; agents and editors (who
            // pass the admin check) see all of it.
            let caller = state.caller(&req, peer);
            chat::chat(state, req, caller).await
        }
        Route::Completions => {
            let caller = state.caller(&req, peer);
            openai::completions(state, req, caller).await
        }
        Route::Session(id) => {
            state.authorize(&req, peer)?;
            sessions::get(state, &decode_segment(id)?).await
        }
        Route::SessionAction(id, action) => {
            // Feedback comes from the customer's side; the rest are agent actions.
            if action != SessionAction::Feedback {
                state.authorize(&req, peer)?;
            }
            let id = decode_segment(id)?;
            match action {
                SessionAction::Takeover => sessions::takeover(state, &id, req).await,
                SessionAction::Reply => sessions::reply(state, &id, req).await,
                SessionAction::Release => sessions::release(state, &id).await,
                SessionAction::Feedback => sessions::feedback(state, &id, req).await,
            }
        }
        Route::Tickets => {
            state.authorize(&req, peer)?;
            sessions::tickets(state, req.uri().query())
        }
        Route::Healthz => Ok(admin::healthz(state)),
        Route::Livez => Ok(health::livez()),
        Route::Readyz => Ok(health::readyz(state).await),
        Route::Metrics => Ok(admin::metrics(state)),
        Route::AdminRules => {
            state.authorize(&req, peer)?;
            Ok(admin::rules(state))
        }
        Route::AdminReload => {
            state.authorize(&req, peer)?;
            admin::reload(state).await
        }
        Route::AdminVersions => {
            state.authorize(&req, peer)?;
            versions::list(state).await
        }
        Route::AdminVersion(id) => {
            state.authorize(&req, peer)?;
            versions::show(state, &decode_segment(id)?, req.uri().query()).await
        }
        Route::AdminVersionFiles(id) => {
            state.authorize(&req, peer)?;
            versions::files(state, &decode_segment(id)?).await
        }
        Route::AdminDiff => {
            state.authorize(&req, peer)?;
            versions::diff(state, req.uri().query()).await
        }
        Route::AdminReplay => {
            state.authorize(&req, peer)?;
            versions::replay(state, req).await
        }
        Route::AdminPublish => {
            state.authorize(&req, peer)?;
            versions::publish(state, req).await
        }
        Route::AdminCanary => {
            state.authorize(&req, peer)?;
            versions::canary(state, req).await
        }
        Route::AdminPromote => {
            state.authorize(&req, peer)?;
            versions::promote(state, req).await
        }
        Route::AdminRollback => {
            state.authorize(&req, peer)?;
            versions::rollback(state, req).await
        }
        Route::DraftChat => {
            state.authorize(&req, peer)?;
            workbench::chat(state, req).await
        }
        Route::DraftTests => {
            state.authorize(&req, peer)?;
            workbench::tests(state, req).await
        }
        Route::DraftTestSave => {
            state.authorize(&req, peer)?;
            workbench::save_test(state, req).await
        }
        Route::AdminReport => {
            state.authorize(&req, peer)?;
            workbench::report(state, req.uri().query()).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_once_and_labelled_by_pattern() {
        assert_eq!(Route::of("/v1/chat"), Some(Route::Chat));
        assert_eq!(Route::of("/v1/chat/"), Some(Route::Chat));
        assert_eq!(Route::of("/v1/sessions/abc"), Some(Route::Session("abc")));
        assert_eq!(Route::Session("abc").name(), "/v1/sessions/{id}");
        assert_eq!(
            Route::of("/v1/sessions/abc/feedback"),
            Some(Route::SessionAction("abc", SessionAction::Feedback))
        );
        assert_eq!(
            Route::SessionAction("abc", SessionAction::Feedback).name(),
            "/v1/sessions/{id}/feedback"
        );
        assert!(Route::Session("abc").reads());
        assert!(!Route::SessionAction("abc", SessionAction::Takeover).reads());
        assert_eq!(Route::of("/v1/sessions/abc/feedback/x"), None);
        assert_eq!(Route::of("/v1/sessions/abc/delete"), None);
        assert_eq!(Route::of("/nope/x"), None);
        assert_eq!(Route::of("/"), None);
    }

    #[test]
    fn every_route_pattern_names_its_route() {
        // A route added to `Route` without its pattern here would have no series at start.
        for pattern in ROUTE_PATTERNS {
            let path = pattern.replace("{id}", "abc");
            let route = Route::of(&path).expect(pattern);
            assert_eq!(route.name(), pattern);
        }
    }
}
