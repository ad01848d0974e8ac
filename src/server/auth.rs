//! Who may call the admin and agent routes: the bearer token when one is configured, else
//! loopback clients only, and never a proxy passing on someone else's request.

use std::net::{IpAddr, SocketAddr};

use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, StatusCode};

use super::{ApiError, State};
use crate::engine::constant_time_eq;

impl State {
    /// Admin and agent routes: the bearer token when one is configured, else loopback
    /// clients only, and only when they are not a proxy passing on someone else's request
    /// (a proxy on the same host connects from loopback; it says so in its headers).
    pub(super) fn authorize(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<(), ApiError> {
        match &self.admin_token {
            Some(token) => {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(bearer);
                match given {
                    Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
                    Some(_) => Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "wrong bearer token",
                    )),
                    None => Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "this route needs `Authorization: Bearer <KEFU_ADMIN_TOKEN>`",
                    )),
                }
            }
            None if is_loopback(peer.ip()) && !proxied(req) => Ok(()),
            None => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "admin and agent routes answer only loopback clients, not through a proxy, when KEFU_ADMIN_TOKEN is not set",
            )),
        }
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
            admin: self.authorize(req, peer).is_ok(),
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
    /// Passes the admin check (token, or loopback without a proxy): sees the full trace.
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

fn is_loopback(ip: IpAddr) -> bool {
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
