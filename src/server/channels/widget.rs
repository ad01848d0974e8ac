//! The web widget's server side: `GET /widget.js`, and CORS for the customer routes the
//! widget calls from a shop's pages (`/v1/chat`, `/v1/images`, `/v1/sessions/{id}/events|messages|
//! history|feedback`).
//!
//! Only with sites in the channels file (`widget: {sites: [...]}`); without them nothing
//! here applies and those routes answer as before. A page on kefu's own origin needs no
//! CORS; it is a site's (channel `web`) when it names a known site. A request to one of them with an
//! `Origin` that is not kefu's own is a site's page: it names its site by `X-Kefu-Site`
//! (or `?site=` where a browser cannot set headers: `EventSource`); the site must exist
//! and list the origin, else 403 `unknown_site` / `origin_not_allowed` without
//! `Access-Control-Allow-Origin`. A preflight (`OPTIONS`) carries no header values, so it
//! is allowed when any site lists the origin; the request that follows is checked in
//! full. An admitted request is marked ([`FromSite`]): its turn's channel is `web`, and
//! its answer (errors too, so that the widget can read them) carries the CORS headers.
//!
//! Site requests are limited per client address (`--widget-rate-per-ip`, a burst of four
//! times the rate; IPv6 addresses by their /64, which one customer usually holds whole):
//! 429 `rate_limited` with `Retry-After`. The address is the connection's peer: behind a
//! reverse proxy every customer shares the proxy's, so limit at the proxy there (or set
//! the rate to 0). The per-session limit applies as to every other client.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::channels::widget::WidgetConfig;
use crate::server::http::Body;
use crate::server::{ApiError, State, assets};

/// The header that names the site (`data-site`).
pub const SITE_HEADER: &str = "x-kefu-site";
/// The request headers a site's page may send.
const ALLOWED_HEADERS: &str =
    "Content-Type, X-Kefu-Site, X-Kefu-Session, X-Kefu-Session-Token, X-Kefu-Identity, Last-Event-ID";
/// How long a browser may keep a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";
/// How long browsers and CDNs keep `widget.js`: a new kefu's widget is on every page
/// within five minutes, and the ETag makes the check after that cheap.
const SCRIPT_CACHE: &str = "public, max-age=300";

/// The widget's sites and the per-address rate limiter, in [`State`].
pub struct Widget {
    /// The sites of the channels file.
    sites: WidgetConfig,
    /// Requests per second per client address; `None` when the limit is off.
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// The rate, for the error message.
    rate: u32,
}

impl std::fmt::Debug for Widget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Widget")
            .field("sites", &self.sites)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl Widget {
    /// The widget of a channels file, `None` when it names no site (then nothing is
    /// cross-origin). `rate_per_ip` 0 turns the per-address limit off.
    pub fn new(sites: &WidgetConfig, rate_per_ip: u32) -> Option<Widget> {
        if sites.sites.is_empty() {
            return None;
        }
        let limiter = NonZeroU32::new(rate_per_ip).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(4).expect("4 is not zero"));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Some(Widget {
            sites: sites.clone(),
            limiter,
            rate: rate_per_ip,
        })
    }

    /// Forgets addresses not seen lately (called now and then: the limiter remembers
    /// every address it has seen).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// The per-address limit.
    fn check_rate(&self, peer: IpAddr) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&client_key(peer)).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from this address; at most {} a second", self.rate),
            )
            .with_retry_after(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }
}

/// The key an address is limited under: IPv4 as is, IPv6 by its /64 (an IPv4 address
/// mapped into IPv6 is the IPv4 address).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// A request admitted from a site's page: in the request's extensions, for the handlers
/// (a turn's channel is `web`), and for the CORS headers of its answer.
#[derive(Clone, Debug)]
pub struct FromSite {
    /// The page's origin, echoed in `Access-Control-Allow-Origin`.
    origin: HeaderValue,
}

/// What the widget's CORS makes of a request to one of its routes.
pub enum Admission {
    /// Not a site's request (no sites, no `Origin`, or kefu's own origin): as before.
    Plain,
    /// From a site's page: answered by its route, with CORS headers.
    Site(FromSite),
    /// Answered here: a preflight, or a refusal.
    Answered(Response<Body>),
}

/// Admits (or answers) a request to one of the widget's routes; see the module header.
pub fn admit(state: &State, req: &Request<Incoming>, peer: SocketAddr) -> Admission {
    let Some(widget) = &state.widget else {
        return Admission::Plain;
    };
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Admission::Plain;
    };
    let origin_text = origin.to_str().unwrap_or("");
    // kefu's own pages need no CORS: they are a site's (channel `web`) when they name one
    // (the widget on a page kefu serves), else as before (the console, a test page).
    if crate::server::auth::check_origin(req).is_ok() {
        return match site_key(req).and_then(|key| widget.sites.site(&key)) {
            Some(_) if req.method() != Method::OPTIONS => admitted(state, widget, origin, peer),
            _ => Admission::Plain,
        };
    }
    if req.method() == Method::OPTIONS {
        if !widget.sites.sites.iter().any(|s| s.allows(origin_text)) {
            return Admission::Answered(refused("origin_not_allowed", origin_text));
        }
        let mut response = Response::new(Body::Left(http_body_util::Full::new(bytes::Bytes::new())));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        allow_origin(headers, origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        return Admission::Answered(response);
    }
    let Some(site) = site_key(req).and_then(|key| widget.sites.site(&key)) else {
        return Admission::Answered(refused("unknown_site", origin_text));
    };
    if !site.allows(origin_text) {
        return Admission::Answered(refused("origin_not_allowed", origin_text));
    }
    admitted(state, widget, origin, peer)
}

/// A site's request, past the per-address limit.
fn admitted(state: &State, widget: &Widget, origin: &HeaderValue, peer: SocketAddr) -> Admission {
    let admitted = FromSite { origin: origin.clone() };
    if let Err(error) = widget.check_rate(peer.ip()) {
        state.metrics.rate_limited();
        let mut response = error.into_response();
        allow(&mut response, &admitted);
        return Admission::Answered(response);
    }
    Admission::Site(admitted)
}

/// The site key a request names: `X-Kefu-Site`, else `?site=`.
fn site_key(req: &Request<Incoming>) -> Option<String> {
    if let Some(key) = req.headers().get(SITE_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(key.trim().to_string());
    }
    req.uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("site="))
        .and_then(|v| crate::server::http::decode_segment(v).ok())
}

/// A 403 for a page that may not use the widget; no CORS headers, so its script cannot
/// even read why (the shop's developer sees it in the network panel).
fn refused(kind: &'static str, origin: &str) -> Response<Body> {
    let origin: String = origin.chars().take(200).collect();
    let message = match kind {
        "unknown_site" => format!(
            "a page of `{origin}` calls kefu without a known widget site: send `X-Kefu-Site` (the tag's `data-site`) naming a site of the channels file"
        ),
        _ => format!("no widget site of the channels file lists the origin `{origin}`"),
    };
    ApiError::new(StatusCode::FORBIDDEN, kind, message).into_response()
}

fn allow_origin(headers: &mut hyper::HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// Adds the CORS headers of an admitted request to its answer.
pub fn allow(response: &mut Response<Body>, site: &FromSite) {
    let headers = response.headers_mut();
    allow_origin(headers, site.origin.clone());
    // The widget reads how long to wait after a 429.
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Retry-After"),
    );
}

/// `GET /widget.js`: the widget's script from the embedded console build, for any page to
/// load (`Cross-Origin-Resource-Policy: cross-origin`), cached five minutes and then
/// revalidated by ETag, gzipped when the browser takes it.
pub fn script(req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let Some(asset) = assets::CONSOLE.files.iter().find(|a| a.path == "widget.js") else {
        return Err(ApiError::not_found(
            "the widget is not built into this kefu: build the console (`make console`), then kefu",
        ));
    };
    let mut response = assets::answer(asset, req, SCRIPT_CACHE);
    let headers = response.headers_mut();
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    // A script, not a page: the console's frame and referrer rules do not apply.
    headers.remove(header::X_FRAME_OPTIONS);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(client_key(v4), v4);
    }

    #[test]
    fn the_limit_refuses_past_the_burst_and_says_when_to_come_back() {
        let sites = WidgetConfig {
            sites: vec![crate::channels::widget::Site {
                key: "shop".into(),
                name: "shop".into(),
                origins: vec!["https://shop.example".into()],
            }],
        };
        let widget = Widget::new(&sites, 1).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..4 {
            widget.check_rate(ip).unwrap();
        }
        let error = widget.check_rate(ip).unwrap_err();
        assert_eq!(error.body()["error"]["type"], "rate_limited");
        // Another address has its own allowance.
        widget.check_rate("192.0.2.2".parse().unwrap()).unwrap();
        assert!(
            Widget::new(&WidgetConfig::default(), 5).is_none(),
            "no sites, no widget"
        );
        assert!(
            Widget::new(&sites, 0).unwrap().limiter.is_none(),
            "0 turns the limit off"
        );
    }
}
