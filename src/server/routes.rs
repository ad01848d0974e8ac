//! The router: one request from start to end. Its method and path name a route
//! (`Route`), the route names the permission it needs (`Route::needs`, checked here once
//! for every route before its handler runs) and its handler, the whole runs under the
//! request time limit, and the request is counted in the metrics under its route's pattern.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::Either;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::channels::widget::{self, Admission};
use super::draft::TableAction;
use super::http::{Body, decode_segment};
use super::users::Permission;
use super::{
    ApiError, State, admin, assets, channels, chat, conns, console, draft, health, images, inbox, mine, openai,
    sessions, versions, workbench,
};

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
    // A web widget site's request: admitted (CORS), or answered here (preflight, refusal).
    let mut req = req;
    let site = match route
        .filter(Route::for_widget)
        .map(|_| widget::admit(&state, &req, peer))
    {
        Some(Admission::Answered(response)) => Err(response),
        Some(Admission::Site(site)) => {
            req.extensions_mut().insert(site.clone());
            Ok(Some(site))
        }
        Some(Admission::Plain) | None => Ok(None),
    };
    let response = match site {
        Err(answered) => answered,
        Ok(site) => {
            let mut response =
                match tokio::time::timeout(state.limits.request_timeout, dispatch(&state, route, req, peer)).await {
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
            if let Some(site) = &site {
                widget::allow(&mut response, site);
            }
            response
        }
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
    Note,
    Resolve,
}

/// Every route's pattern ([`Route::name`]), for the request series that exist from start.
pub(super) const ROUTE_PATTERNS: [&str; 54] = [
    "/v1/chat",
    "/v1/chat/completions",
    "/v1/images",
    "/admin/images/{id}",
    "/v1/sessions/{id}",
    "/v1/sessions/{id}/takeover",
    "/v1/sessions/{id}/reply",
    "/v1/sessions/{id}/release",
    "/v1/sessions/{id}/feedback",
    "/v1/sessions/{id}/note",
    "/v1/sessions/{id}/resolve",
    "/v1/sessions/{id}/events",
    "/v1/sessions/{id}/messages",
    "/v1/sessions/{id}/history",
    "/widget.js",
    "/admin/inbox",
    "/admin/inbox/stream",
    "/admin/inbox/{id}",
    "/admin/inbox/{id}/suggest",
    "/admin/canned",
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
    "/console/api/login",
    "/console/api/logout",
    "/console/api/me",
    "/console/{asset}",
    "/admin/draft",
    "/admin/draft/file",
    "/admin/draft/check",
    "/admin/draft/table/{name}",
    "/admin/draft/table/{name}/import",
    "/admin/draft/table/{name}/export",
    "/admin/draft/chat",
    "/admin/draft/tests",
    "/admin/draft/tests/save",
    "/admin/report",
    "/admin/mine",
    "/admin/mine/accept",
    "/v1/channels/{name}/messages",
    "/wechat/{name}",
];

/// The route a path names, read once per request: for dispatch and for the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Chat,
    Completions,
    /// `POST /v1/images`: one image's bytes, for a later message (public: the
    /// conversation's token; see [`images::upload`]).
    Images,
    /// `GET /admin/images/{id}`: a stored image (permission: read).
    AdminImage(&'a str),
    /// `/v1/sessions/{id}`, the id as it appears in the path (still percent-encoded).
    Session(&'a str),
    SessionAction(&'a str, SessionAction),
    /// `GET /v1/sessions/{id}/events`: the customer's live channel (their token).
    SessionEvents(&'a str),
    /// `GET /v1/sessions/{id}/messages`: the same as a poll.
    SessionMessages(&'a str),
    /// `GET /v1/sessions/{id}/history`: the whole conversation, for the customer's page
    /// to draw again (their token).
    SessionHistory(&'a str),
    /// `GET /widget.js`: the web widget's script.
    WidgetJs,
    /// `GET /admin/inbox` (permission: agent).
    Inbox,
    /// `GET /admin/inbox/stream` (SSE; agent).
    InboxStream,
    /// `GET /admin/inbox/{id}` (agent).
    InboxConversation(&'a str),
    /// `GET /admin/inbox/{id}/suggest` (agent).
    InboxSuggest(&'a str),
    /// `GET /admin/canned` (agent).
    Canned,
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
    ConsoleLogin,
    ConsoleLogout,
    ConsoleMe,
    /// `/console` and everything under it but the API: the console's files, the path
    /// after `/console`.
    ConsoleAsset(&'a str),
    /// `GET /admin/draft` (permission: read).
    AdminDraft,
    /// `GET|PUT|DELETE /admin/draft/file?path=P` (GET: read; PUT, DELETE: edit).
    AdminDraftFile,
    /// `POST /admin/draft/check` (read: it writes nothing).
    AdminDraftCheck,
    /// `GET|PUT /admin/draft/table/{name}` (GET: read; PUT: edit).
    AdminDraftTable(&'a str),
    /// `POST /admin/draft/table/{name}/import` (edit; it only previews, but belongs to
    /// a table's editing).
    AdminDraftTableImport(&'a str),
    /// `GET /admin/draft/table/{name}/export` (read).
    AdminDraftTableExport(&'a str),
    /// `POST /admin/draft/chat`: permission `read` (a test chat changes nothing).
    DraftChat,
    /// `POST /admin/draft/tests`: permission `read`.
    DraftTests,
    /// `POST /admin/draft/tests/save`: permission `edit` (writes to the draft).
    DraftTestSave,
    /// `GET /admin/report`: permission `read`.
    AdminReport,
    /// `GET /admin/mine`: permission `read`.
    AdminMine,
    /// `POST /admin/mine/accept`: permission `edit` (writes to the draft).
    AdminMineAccept,
    /// `POST /v1/channels/{name}/messages`: a webhook channel's platform (public: signed
    /// with the channel's secret).
    ChannelMessages(&'a str),
    /// `GET|POST /wechat/{name}`: a WeChat account's callback (it checks WeChat's
    /// signature itself).
    Wechat(&'a str),
}

impl<'a> Route<'a> {
    /// The route of `path`, `None` for no route. Splits the path without allocating: no
    /// route has more than five segments.
    fn of(path: &'a str) -> Option<Route<'a>> {
        // The console's client-side routes may be any depth.
        if let Some(rest) = path.strip_prefix("/console")
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return Some(match rest.trim_end_matches('/') {
                "/api/login" => Route::ConsoleLogin,
                "/api/logout" => Route::ConsoleLogout,
                "/api/me" => Route::ConsoleMe,
                api if api == "/api" || api.starts_with("/api/") => return None,
                _ => Route::ConsoleAsset(rest),
            });
        }
        let mut segments = [""; 5];
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
            "note" => Some(SessionAction::Note),
            "resolve" => Some(SessionAction::Resolve),
            _ => None,
        };
        Some(match segments[..n] {
            ["v1", "chat"] => Route::Chat,
            ["v1", "chat", "completions"] => Route::Completions,
            ["v1", "images"] => Route::Images,
            ["admin", "images", id] => Route::AdminImage(id),
            ["v1", "sessions", id] => Route::Session(id),
            ["v1", "sessions", id, "events"] => Route::SessionEvents(id),
            ["v1", "sessions", id, "messages"] => Route::SessionMessages(id),
            ["v1", "sessions", id, "history"] => Route::SessionHistory(id),
            ["widget.js"] => Route::WidgetJs,
            ["v1", "sessions", id, a] => Route::SessionAction(id, action(a)?),
            ["admin", "inbox"] => Route::Inbox,
            ["admin", "inbox", "stream"] => Route::InboxStream,
            ["admin", "inbox", id] => Route::InboxConversation(id),
            ["admin", "inbox", id, "suggest"] => Route::InboxSuggest(id),
            ["admin", "canned"] => Route::Canned,
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
            ["admin", "draft"] => Route::AdminDraft,
            ["admin", "draft", "file"] => Route::AdminDraftFile,
            ["admin", "draft", "check"] => Route::AdminDraftCheck,
            ["admin", "draft", "table", name] => Route::AdminDraftTable(name),
            ["admin", "draft", "table", name, "import"] => Route::AdminDraftTableImport(name),
            ["admin", "draft", "table", name, "export"] => Route::AdminDraftTableExport(name),
            ["admin", "draft", "chat"] => Route::DraftChat,
            ["admin", "draft", "tests"] => Route::DraftTests,
            ["admin", "draft", "tests", "save"] => Route::DraftTestSave,
            ["admin", "report"] => Route::AdminReport,
            ["admin", "mine"] => Route::AdminMine,
            ["admin", "mine", "accept"] => Route::AdminMineAccept,
            ["v1", "channels", name, "messages"] => Route::ChannelMessages(name),
            ["wechat", name] => Route::Wechat(name),
            _ => return None,
        })
    }

    /// The route's pattern, the `route` label of the request metrics.
    fn name(&self) -> &'static str {
        match self {
            Route::Chat => "/v1/chat",
            Route::Completions => "/v1/chat/completions",
            Route::Images => "/v1/images",
            Route::AdminImage(_) => "/admin/images/{id}",
            Route::Session(_) => "/v1/sessions/{id}",
            Route::SessionAction(_, SessionAction::Takeover) => "/v1/sessions/{id}/takeover",
            Route::SessionAction(_, SessionAction::Reply) => "/v1/sessions/{id}/reply",
            Route::SessionAction(_, SessionAction::Release) => "/v1/sessions/{id}/release",
            Route::SessionAction(_, SessionAction::Feedback) => "/v1/sessions/{id}/feedback",
            Route::SessionAction(_, SessionAction::Note) => "/v1/sessions/{id}/note",
            Route::SessionAction(_, SessionAction::Resolve) => "/v1/sessions/{id}/resolve",
            Route::SessionEvents(_) => "/v1/sessions/{id}/events",
            Route::SessionMessages(_) => "/v1/sessions/{id}/messages",
            Route::SessionHistory(_) => "/v1/sessions/{id}/history",
            Route::WidgetJs => "/widget.js",
            Route::Inbox => "/admin/inbox",
            Route::InboxStream => "/admin/inbox/stream",
            Route::InboxConversation(_) => "/admin/inbox/{id}",
            Route::InboxSuggest(_) => "/admin/inbox/{id}/suggest",
            Route::Canned => "/admin/canned",
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
            Route::ConsoleLogin => "/console/api/login",
            Route::ConsoleLogout => "/console/api/logout",
            Route::ConsoleMe => "/console/api/me",
            Route::ConsoleAsset(_) => "/console/{asset}",
            Route::AdminDraft => "/admin/draft",
            Route::AdminDraftFile => "/admin/draft/file",
            Route::AdminDraftCheck => "/admin/draft/check",
            Route::AdminDraftTable(_) => "/admin/draft/table/{name}",
            Route::AdminDraftTableImport(_) => "/admin/draft/table/{name}/import",
            Route::AdminDraftTableExport(_) => "/admin/draft/table/{name}/export",
            Route::DraftChat => "/admin/draft/chat",
            Route::DraftTests => "/admin/draft/tests",
            Route::DraftTestSave => "/admin/draft/tests/save",
            Route::AdminReport => "/admin/report",
            Route::AdminMine => "/admin/mine",
            Route::AdminMineAccept => "/admin/mine/accept",
            Route::ChannelMessages(_) => "/v1/channels/{name}/messages",
            Route::Wechat(_) => "/wechat/{name}",
        }
    }

    /// The methods of a route that takes other methods than GET (reads) or POST (acts);
    /// `None` for the others ([`Route::reads`] says which).
    fn methods(&self) -> Option<&'static str> {
        match self {
            Route::AdminDraftFile => Some("GET, PUT, DELETE"),
            Route::AdminDraftTable(_) => Some("GET, PUT"),
            Route::Wechat(_) => Some("GET, POST"),
            _ => None,
        }
    }

    /// The permission a call of this route with `method` needs; `None`: anyone may call it
    /// (customers' routes, health, metrics, the console's files and sign-in).
    ///
    /// Decided by the route's pattern, so that a new admin route gets a permission without
    /// a line here: under `/admin/`, reading (GET, HEAD) needs `read`, and the rest as
    /// below; writes to the draft (`/admin/draft/...` but for checking, test chat and
    /// running the tests) need `edit`; an admin route this does not name needs `admin`.
    fn needs(&self, method: &Method) -> Option<Permission> {
        let reads = method == Method::GET || method == Method::HEAD;
        let pattern = self.name();
        Some(match pattern {
            "/v1/chat"
            | "/v1/chat/completions"
            | "/v1/images"
            | "/v1/sessions/{id}/feedback"
            | "/v1/sessions/{id}/events"
            | "/v1/sessions/{id}/messages"
            | "/v1/sessions/{id}/history"
            | "/widget.js"
            | "/healthz"
            | "/livez"
            | "/readyz"
            | "/metrics"
            | "/console/api/login"
            | "/console/api/logout"
            | "/console/api/me"
            | "/console/{asset}"
            // Channels authenticate their callers themselves (signatures).
            | "/v1/channels/{name}/messages" => return None,
            | "/wechat/{name}" => return None,
            "/v1/sessions/{id}"
            | "/v1/sessions/{id}/takeover"
            | "/v1/sessions/{id}/reply"
            | "/v1/sessions/{id}/release"
            | "/v1/sessions/{id}/note"
            | "/v1/sessions/{id}/resolve"
            | "/v1/tickets" => Permission::Agent,
            // The inbox is the agents' (admins and the token pass too; viewers do not).
            _ if pattern.starts_with("/admin/inbox") || pattern == "/admin/canned" => Permission::Agent,
            _ if reads && pattern.starts_with("/admin/") => Permission::Read,
            "/admin/draft/check" | "/admin/draft/chat" | "/admin/draft/tests" => Permission::Read,
            "/admin/publish" | "/admin/canary" | "/admin/promote" | "/admin/rollback" => Permission::Publish,
            // Accepting a mined suggestion writes the draft, as a draft edit does.
            "/admin/replay" | "/admin/mine/accept" => Permission::Edit,
            _ if pattern.starts_with("/admin/draft") => Permission::Edit,
            _ => Permission::Admin,
        })
    }

    /// Whether the web widget calls the route from a shop's pages (CORS, see
    /// [`widget`]).
    fn for_widget(&self) -> bool {
        matches!(
            self,
            Route::Chat
                | Route::Images
                | Route::SessionEvents(_)
                | Route::SessionMessages(_)
                | Route::SessionHistory(_)
                | Route::SessionAction(_, SessionAction::Feedback)
        )
    }

    /// Whether the route reads (GET, and HEAD) rather than acts (POST).
    fn reads(&self) -> bool {
        matches!(
            self,
            Route::Session(_)
                | Route::AdminImage(_)
                | Route::SessionEvents(_)
                | Route::SessionMessages(_)
                | Route::SessionHistory(_)
                | Route::WidgetJs
                | Route::Inbox
                | Route::InboxStream
                | Route::InboxConversation(_)
                | Route::InboxSuggest(_)
                | Route::Canned
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
                | Route::ConsoleMe
                | Route::ConsoleAsset(_)
                | Route::AdminDraft
                | Route::AdminDraftTableExport(_)
                | Route::AdminReport
                | Route::AdminMine
        )
    }
}

async fn dispatch(
    state: &Arc<State>,
    route: Option<Route<'_>>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let Some(route) = route else {
        return Err(ApiError::not_found(format!(
            "no route {}; see docs/api.md",
            req.uri().path()
        )));
    };
    let method = req.method();
    if let Some(allow) = route.methods() {
        let head = method == Method::HEAD && allow.contains("GET");
        if !head && !allow.split(", ").any(|m| m == method.as_str()) {
            return Err(ApiError::method_not_allowed(allow));
        }
    } else if route.reads() && !(method == Method::GET || method == Method::HEAD) {
        return Err(ApiError::method_not_allowed("GET"));
    } else if !route.reads() && method != Method::POST {
        return Err(ApiError::method_not_allowed("POST"));
    }
    // Every route's permission, checked here once; handlers that record who acted find
    // the caller in the request's extensions (`auth::signed_in`).
    if let Some(needs) = route.needs(method) {
        let principal = state.authorize(&req, peer, needs)?;
        req.extensions_mut().insert(principal);
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
        Route::Images => {
            let caller = state.caller(&req, peer);
            images::upload(state, req, caller).await
        }
        Route::AdminImage(id) => images::show(state, &decode_segment(id)?).await,
        Route::Session(id) => sessions::get(state, &decode_segment(id)?).await,
        Route::SessionAction(id, action) => {
            let id = decode_segment(id)?;
            match action {
                SessionAction::Takeover => sessions::takeover(state, &id, req).await,
                SessionAction::Reply => sessions::reply(state, &id, req).await,
                SessionAction::Release => sessions::release(state, &id, req).await,
                SessionAction::Feedback => sessions::feedback(state, &id, req).await,
                SessionAction::Note => sessions::note(state, &id, req).await,
                SessionAction::Resolve => sessions::resolve(state, &id, req).await,
            }
        }
        Route::SessionEvents(id) => inbox::customer::events(state, &decode_segment(id)?, req).await,
        Route::SessionMessages(id) => inbox::customer::messages(state, &decode_segment(id)?, req).await,
        Route::SessionHistory(id) => inbox::customer::history(state, &decode_segment(id)?, req).await,
        Route::WidgetJs => widget::script(&req),
        Route::Inbox => inbox::routes::list(state, &req),
        Route::InboxStream => inbox::routes::stream(state, &req),
        Route::InboxConversation(id) => inbox::routes::detail(state, &decode_segment(id)?).await,
        Route::InboxSuggest(id) => inbox::routes::suggest(state, &decode_segment(id)?).await,
        Route::Canned => inbox::routes::canned(state, req.uri().query()),
        Route::Tickets => sessions::tickets(state, req.uri().query()),
        Route::Healthz => Ok(admin::healthz(state)),
        Route::Livez => Ok(health::livez()),
        Route::Readyz => Ok(health::readyz(state).await),
        Route::Metrics => Ok(admin::metrics(state)),
        Route::AdminRules => Ok(admin::rules(state)),
        Route::AdminReload => admin::reload(state).await,
        Route::AdminVersions => versions::list(state).await,
        Route::AdminVersion(id) => versions::show(state, &decode_segment(id)?, req.uri().query()).await,
        Route::AdminVersionFiles(id) => versions::files(state, &decode_segment(id)?).await,
        Route::AdminDiff => versions::diff(state, req.uri().query()).await,
        Route::AdminReplay => versions::replay(state, req).await,
        Route::AdminPublish => versions::publish(state, req).await,
        Route::AdminCanary => versions::canary(state, req).await,
        Route::AdminPromote => versions::promote(state, req).await,
        Route::AdminRollback => versions::rollback(state, req).await,
        Route::ConsoleLogin => console::login(state, req, peer).await,
        Route::ConsoleLogout => console::logout(state, &req, peer),
        Route::ConsoleMe => console::me(state, &req, peer),
        Route::ConsoleAsset(path) => Ok(assets::serve(&assets::CONSOLE, path, &req)),
        Route::AdminDraft => draft::list(state).await,
        Route::AdminDraftFile => draft::file(state, req).await,
        Route::AdminDraftCheck => draft::check(state, req).await,
        Route::AdminDraftTable(name) => draft::table(state, &decode_segment(name)?, TableAction::Rows, req).await,
        Route::AdminDraftTableImport(name) => {
            draft::table(state, &decode_segment(name)?, TableAction::Import, req).await
        }
        Route::AdminDraftTableExport(name) => {
            draft::table(state, &decode_segment(name)?, TableAction::Export, req).await
        }
        Route::DraftChat => workbench::chat(state, req).await,
        Route::DraftTests => workbench::tests(state, req).await,
        Route::DraftTestSave => workbench::save_test(state, req).await,
        Route::AdminReport => workbench::report(state, req.uri().query()).await,
        Route::AdminMine => mine::report(state, req.uri().query()).await,
        Route::AdminMineAccept => mine::accept(state, req).await,
        Route::ChannelMessages(name) => channels::webhook::messages(state, &decode_segment(name)?, req).await,
        Route::Wechat(name) => super::channels::wechat::callback(state, &decode_segment(name)?, req).await,
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
    fn every_route_needs_its_permission() {
        let needs = |method: Method, path: &str| Route::of(path).expect(path).needs(&method);
        assert_eq!(needs(Method::POST, "/v1/chat"), None);
        assert_eq!(needs(Method::POST, "/v1/sessions/a/feedback"), None);
        assert_eq!(needs(Method::GET, "/metrics"), None);
        assert_eq!(needs(Method::GET, "/console/editor/x"), None);
        assert_eq!(needs(Method::POST, "/console/api/login"), None);
        assert_eq!(needs(Method::GET, "/v1/sessions/a"), Some(Permission::Agent));
        assert_eq!(needs(Method::POST, "/v1/sessions/a/reply"), Some(Permission::Agent));
        assert_eq!(needs(Method::GET, "/admin/versions/3/files"), Some(Permission::Read));
        assert_eq!(needs(Method::GET, "/admin/diff"), Some(Permission::Read));
        assert_eq!(needs(Method::POST, "/admin/replay"), Some(Permission::Edit));
        assert_eq!(needs(Method::GET, "/admin/mine"), Some(Permission::Read));
        assert_eq!(needs(Method::POST, "/admin/mine/accept"), Some(Permission::Edit));
        assert_eq!(needs(Method::POST, "/admin/publish"), Some(Permission::Publish));
        assert_eq!(needs(Method::POST, "/admin/rollback"), Some(Permission::Publish));
        assert_eq!(needs(Method::POST, "/admin/reload"), Some(Permission::Admin));
        assert_eq!(needs(Method::GET, "/admin/inbox"), Some(Permission::Agent));
        assert_eq!(needs(Method::GET, "/admin/inbox/stream"), Some(Permission::Agent));
        assert_eq!(needs(Method::GET, "/admin/inbox/a/suggest"), Some(Permission::Agent));
        assert_eq!(needs(Method::GET, "/admin/canned"), Some(Permission::Agent));
        assert_eq!(needs(Method::POST, "/v1/sessions/a/resolve"), Some(Permission::Agent));
        assert_eq!(needs(Method::GET, "/v1/sessions/a/events"), None);
        assert_eq!(needs(Method::GET, "/v1/sessions/a/messages"), None);
        assert_eq!(needs(Method::POST, "/v1/channels/shop/messages"), None);
        assert_eq!(needs(Method::POST, "/wechat/shop_mp"), None);
        assert_eq!(needs(Method::GET, "/v1/sessions/a/history"), None);
        assert_eq!(needs(Method::GET, "/widget.js"), None);
        assert_eq!(needs(Method::POST, "/v1/images"), None);
        assert_eq!(needs(Method::GET, "/admin/images/img_1"), Some(Permission::Read));
        // Every route pattern has its answer (none forgotten as public by mistake).
        for pattern in ROUTE_PATTERNS {
            let path = pattern.replace("{id}", "abc");
            let route = Route::of(&path).unwrap();
            let public = route.needs(&Method::POST).is_none();
            assert_eq!(
                public,
                !(pattern.starts_with("/admin/")
                    || pattern.starts_with("/v1/sessions/{id}")
                        && !["feedback", "events", "messages", "history"]
                            .iter()
                            .any(|p| pattern.ends_with(p))
                    || pattern == "/v1/tickets"),
                "{pattern}"
            );
        }
    }

    #[test]
    fn every_route_pattern_names_its_route() {
        // A route added to `Route` without its pattern here would have no series at start.
        for pattern in ROUTE_PATTERNS {
            let path = pattern.replace("{id}", "abc").replace("{name}", "faq");
            let route = Route::of(&path).expect(pattern);
            assert_eq!(route.name(), pattern);
        }
    }
}
