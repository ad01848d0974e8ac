//! Who may call the admin, agent and console routes, and what each may do.
//!
//! A caller is a [`Principal`]: the admin bearer token (`KEFU_ADMIN_TOKEN`, every
//! permission, no CSRF check: it is not a browser), a user signed in to the console (the
//! session cookie, see [`super::console`]; their role as the users file says now), or a
//! loopback client without either, which keeps every permission only while no users file
//! exists and no token is set, and never through a proxy. Each route names the permission
//! it needs (`routes::Route::needs`) and the router checks it once, before the handler
//! runs ([`State::authorize`]), putting the principal in the request's extensions for
//! handlers that record who acted ([`signed_in`]).
//!
//! A browser sends cookies by itself, so a request that changes something (not GET or
//! HEAD) from a cookie or from loopback must come from this origin: its `Origin`, when
//! present, must be its `Host`, and a cookie's request must carry `X-CSRF-Token`.

use std::net::{IpAddr, SocketAddr};

use hyper::body::Incoming;
use hyper::header;
use hyper::{Method, Request, StatusCode};

use super::users::{Permission, Role};
use super::{ApiError, State};
use crate::engine::constant_time_eq;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The admin bearer token: everything.
    Token,
    /// A loopback client while no token is set and no users file exists: everything.
    Loopback,
    /// A user signed in to the console.
    User {
        /// Their name.
        name: String,
        /// Their role, as the users file says now.
        role: Role,
    },
}

impl Principal {
    /// Whether this caller has `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        match self {
            Principal::Token | Principal::Loopback => true,
            Principal::User { role, .. } => role.can(permission),
        }
    }
}

/// The name of the console user a request was authorized for (the author of what they
/// publish), `None` for the token and loopback callers.
pub(super) fn signed_in(req: &Request<Incoming>) -> Option<String> {
    match req.extensions().get::<Principal>() {
        Some(Principal::User { name, .. }) => Some(name.clone()),
        _ => None,
    }
}

/// 403 `csrf`.
fn csrf_error(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "csrf", message.to_owned())
}

/// A request's `Origin`, when it sends one, must name its `Host`: a page of another site
/// cannot act through the visitor's browser.
pub(super) fn check_origin(req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("https://").or_else(|| o.strip_prefix("http://")));
    match (origin_host, host) {
        (Some(origin), Some(host)) if origin.trim_end_matches('/').eq_ignore_ascii_case(host.trim()) => Ok(()),
        _ => Err(csrf_error("the request's Origin is not this server: refused")),
    }
}

impl State {
    /// Who calls: the bearer token, a console session, or loopback (see the module
    /// header); 401 `unauthorized` for a wrong token or an ended session, or when nothing
    /// identifies the caller and something is needed; 403 `forbidden` for a client that is
    /// not loopback (or a proxy) when there is neither a token nor a users file.
    pub(super) fn authenticate(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<Principal, ApiError> {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        if let (Some(token), Some(given)) = (&self.admin_token, given) {
            return if constant_time_eq(given.as_bytes(), token.as_bytes()) {
                Ok(Principal::Token)
            } else {
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "wrong bearer token",
                ))
            };
        }
        let users = self.console.users.current();
        if let Some(cookie) = super::console::session_cookie(req) {
            match self.console.session(cookie, super::console::unix_now()) {
                Some((name, role)) => return Ok(Principal::User { name, role }),
                // A stale cookie from before the users file was removed: loopback rules.
                None if users.exists() || self.admin_token.is_some() => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "the console session has ended (expired, user removed or password changed): sign in again",
                    ));
                }
                None => {}
            }
        }
        if self.admin_token.is_some() || users.exists() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this route needs `Authorization: Bearer <KEFU_ADMIN_TOKEN>` or a console session (POST /console/api/login)",
            ));
        }
        if is_loopback(peer.ip()) && !proxied(req) {
            return Ok(Principal::Loopback);
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "admin and agent routes answer only loopback clients, not through a proxy, when KEFU_ADMIN_TOKEN is not set and there are no console users",
        ))
    }

    /// The caller, when they may do what `needs` names: [`State::authenticate`], then the
    /// permission (403 `forbidden` with `needs`, the least role that has it), then, for a
    /// request from a browser that changes something, the origin and CSRF checks (403
    /// `csrf`).
    pub(super) fn authorize(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
        needs: Permission,
    ) -> Result<Principal, ApiError> {
        let principal = self.authenticate(req, peer)?;
        if !principal.can(needs) {
            let role = needs.least_role().name();
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the `{}` permission: role `{role}` or above", needs.name()),
            )
            .with_details(serde_json::json!({ "needs": role })));
        }
        let writes = !(req.method() == Method::GET || req.method() == Method::HEAD);
        if writes && principal != Principal::Token {
            check_origin(req)?;
        }
        if writes && let Principal::User { .. } = principal {
            let cookie = super::console::session_cookie(req).unwrap_or_default();
            let sent = req.headers().get("x-csrf-token").map(|v| v.as_bytes());
            let expected = self.console.csrf(cookie);
            if !sent.is_some_and(|sent| constant_time_eq(sent, expected.as_bytes())) {
                return Err(csrf_error(
                    "a console request that changes something needs `X-CSRF-Token` (from /console/api/me or the sign-in's answer)",
                ));
            }
        }
        Ok(principal)
    }
}

impl State {
    /// Whether the request carries the admin bearer token: the shop's own backend, which
    /// may pass a customer's profile in clear even when identities are signed. Loopback
    /// alone does not count here: a proxy on the same host without forwarding headers
    /// looks like loopback.
    pub(super) fn has_admin_token(&self, req: &Request<Incoming>) -> bool {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        matches!((&self.admin_token, given), (Some(token), Some(given)) if constant_time_eq(given.as_bytes(), token.as_bytes()))
    }

    /// Who is calling a chat route, read from the request's head before its body is.
    pub(super) fn caller(&self, req: &Request<Incoming>, peer: SocketAddr) -> Caller {
        // Headers are looked up only when their answer can matter: this is on every turn.
        Caller {
            admin: if req.headers().contains_key(header::AUTHORIZATION) || super::console::session_cookie(req).is_some()
            {
                self.authorize(req, peer, Permission::Read).is_ok()
            } else {
                // What `authorize` would say of a caller with neither, without reading
                // the users file on every turn.
                self.admin_token.is_none()
                    && is_loopback(peer.ip())
                    && !proxied(req)
                    && check_origin(req).is_ok()
                    && !self.console.users.exists_recently()
            },
            admin_token: self.identity.is_some() && self.has_admin_token(req),
            identity: match self.identity {
                Some(_) => req
                    .headers()
                    .get(super::identity::HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                None => None,
            },
        }
    }

    /// Who the customer is: what a signed identity token vouches for laid over `request`,
    /// what a customer may not set by themselves refused (see [`super::identity`]), and
    /// `as_of` (the clock a turn answers by, which decides promotions) and `rules_version`
    /// (a pinned version) only from callers of the admin routes. `token`: the body's, else the caller's `X-Kefu-Identity` header.
    pub(super) fn vouch(
        &self,
        caller: &Caller,
        token: Option<&str>,
        request: &mut crate::TurnRequest,
    ) -> Result<(), ApiError> {
        if request.as_of.is_some() && !caller.admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "`as_of` (answering as of another time) is for replays by the admin routes' callers",
            ));
        }
        if request.rules_version.is_some() && !caller.admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "`rules_version` (answering with a version other than the one serving) is for testing by the admin routes' callers",
            ));
        }
        match &self.identity {
            Some(verifier) => verifier.apply(token.or(caller.identity.as_deref()), request, caller.admin_token),
            None => Ok(()),
        }
    }
}

/// Who called a chat route.
pub(super) struct Caller {
    /// May read the admin routes (token, a console user, or loopback without a proxy
    /// while there are no users): sees the full trace.
    pub admin: bool,
    /// Holds the admin bearer token: may pass a profile in clear under signed identities
    /// (looked up only when identities are signed).
    pub admin_token: bool,
    /// The `X-Kefu-Identity` header.
    pub identity: Option<String>,
}

/// The credentials of an `Authorization: Bearer` header; the scheme is case-insensitive
/// (RFC 9110), and some clients send `bearer`.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim())
}

/// Whether a proxy forwarded the request (it names the client it came from).
fn proxied(req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| headers.contains_key(*name))
}

/// Whether `ip` is this host.
pub(super) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }
}
