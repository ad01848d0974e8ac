//! The console's files, embedded in the binary: `GET /console/...`.
//!
//! `build.rs` embeds every file of `console/dist/` (what `vite build` makes) when that
//! directory exists, each with a gzip copy when that is smaller and an ETag; this module
//! serves them. Hashed files under `assets/` never change and are cached for a year
//! (`immutable`); everything else, `index.html` first, is revalidated on each load
//! (`no-cache`, then 304 by ETag). A path that names no file is the single-page app's
//! own route: it gets `index.html`. `/console` redirects to `/console/`. A binary built
//! without `console/dist` answers 503 with a page that says how to build it. Every answer
//! carries the console's Content-Security-Policy: nothing from another origin.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::Body;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its path under `console/dist/`, `/`-separated (`assets/index-3f2a.js`).
    pub path: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
    /// Its gzip copy, when that is smaller.
    pub gzip: Option<&'static [u8]>,
    /// Its entity tag, quoted (`"1a2b-3c4d5e6f"`); the gzip copy's adds `-gz`.
    pub etag: &'static str,
}

/// The files of a console build.
#[derive(Debug)]
pub struct Assets {
    /// Whether the binary was built with `console/dist` (else every path answers 503).
    pub built: bool,
    /// The files, in path order.
    pub files: &'static [Asset],
}

// `pub static CONSOLE: Assets`, written by build.rs.
include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// The console's Content-Security-Policy: its own files only (inline styles for the
/// editor, `data:` images for icons).
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'";

/// The page a binary built without the console answers with.
const NOT_BUILT: &str = "<!doctype html><meta charset=utf-8><title>kefu console</title>\
<h1>The console is not built into this kefu</h1>\
<p>Build it with <code>make</code> (or <code>cd console &amp;&amp; npm ci &amp;&amp; npx vite build</code>), \
then build kefu again: the files of <code>console/dist/</code> are embedded when kefu is compiled.</p>\
<p>控制台没有编入这个 kefu：先运行 <code>make</code> 构建，再重新编译 kefu。</p>\n";

/// The answer to `GET /console{rest}` from `assets`.
pub fn serve<B>(assets: &Assets, rest: &str, req: &Request<B>) -> Response<Body> {
    if rest.is_empty() {
        let mut response = empty(StatusCode::MOVED_PERMANENTLY);
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/console/"));
        return secured(response);
    }
    if !assets.built {
        let mut response = whole(StatusCode::SERVICE_UNAVAILABLE, NOT_BUILT.as_bytes());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return secured(response);
    }
    let path = rest.trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let found = assets.files.iter().find(|a| a.path == path);
    let asset = match found {
        Some(asset) => asset,
        // A hashed file that is not there is a stale page asking for an old build: a
        // 404, not the app's HTML in place of a script.
        None if path.starts_with("assets/") => {
            let mut response = whole(StatusCode::NOT_FOUND, b"no such file\n");
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return secured(response);
        }
        None => match assets.files.iter().find(|a| a.path == "index.html") {
            Some(index) => index,
            None => return secured(whole(StatusCode::NOT_FOUND, b"no index.html in the console build\n")),
        },
    };
    let cache = if asset.path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    answer(asset, req, cache)
}

/// One embedded file as the answer to `req`: gzipped when the client takes it, 304 when
/// its ETag matches, cached as `cache` says (the widget's `widget.js` is served by
/// `server::channels::widget` under its own cache rule).
pub fn answer<B>(asset: &Asset, req: &Request<B>, cache: &'static str) -> Response<Body> {
    let gzip = asset.gzip.filter(|_| accepts_gzip(req));
    let etag = match gzip {
        Some(_) => format!("{}-gz\"", asset.etag.trim_end_matches('"')),
        None => asset.etag.to_owned(),
    };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim().trim_start_matches("W/") == etag || tag.trim() == "*")
        });
    let mut response = if fresh {
        empty(StatusCode::NOT_MODIFIED)
    } else {
        whole(StatusCode::OK, gzip.unwrap_or(asset.body))
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(asset.path)));
    if asset.gzip.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if gzip.is_some() && !fresh {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    secured(response)
}

/// Whether the client takes gzip (`Accept-Encoding: gzip`, not with `q=0`).
fn accepts_gzip<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// The media type of a file by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

fn whole(status: StatusCode, body: &'static [u8]) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(body))));
    *response.status_mut() = status;
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    whole(status, b"")
}

/// The headers every console answer carries.
fn secured(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    static TABLE: Assets = Assets {
        built: true,
        files: &[
            Asset {
                path: "assets/app-1234.js",
                body: b"console.log(1)",
                gzip: Some(b"GZ"),
                etag: "\"e-1\"",
            },
            Asset {
                path: "index.html",
                body: b"<!doctype html><div id=app></div>",
                gzip: None,
                etag: "\"i-2\"",
            },
        ],
    };

    fn get(assets: &Assets, rest: &str, headers: &[(&str, &str)]) -> (Response<Body>, Vec<u8>) {
        let mut req = Request::get(format!("/console{rest}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let response = serve(assets, rest, &req.body(()).unwrap());
        let (parts, body) = response.into_parts();
        let bytes = match body {
            Either::Left(full) => futures_bytes(full),
            Either::Right(_) => unreachable!("no streams here"),
        };
        (
            Response::from_parts(parts, Either::Left(Full::new(Bytes::new()))),
            bytes,
        )
    }

    fn futures_bytes(full: Full<Bytes>) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async { full.collect().await.unwrap().to_bytes().to_vec() })
    }

    fn header(response: &Response<Body>, name: header::HeaderName) -> Option<&str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn index_html_for_the_app_and_its_client_routes() {
        for rest in ["/", "/publish", "/editor/rules/a.kefu", "/index.html"] {
            let (response, body) = get(&TABLE, rest, &[]);
            assert_eq!(response.status(), 200, "{rest}");
            assert_eq!(body, b"<!doctype html><div id=app></div>", "{rest}");
            assert_eq!(header(&response, header::CACHE_CONTROL), Some("no-cache"));
            assert_eq!(
                header(&response, header::CONTENT_TYPE),
                Some("text/html; charset=utf-8")
            );
            assert_eq!(header(&response, header::CONTENT_SECURITY_POLICY), Some(CSP));
            assert_eq!(header(&response, header::ETAG), Some("\"i-2\""));
        }
        let (response, _) = get(&TABLE, "", &[]);
        assert_eq!(response.status(), 301);
        assert_eq!(header(&response, header::LOCATION), Some("/console/"));
        let (response, _) = get(&TABLE, "/assets/app-0000.js", &[]);
        assert_eq!(response.status(), 404, "a missing script is not the app's HTML");
    }

    #[test]
    fn hashed_files_are_immutable_gzipped_when_accepted_and_revalidated_by_etag() {
        let (response, body) = get(&TABLE, "/assets/app-1234.js", &[]);
        assert_eq!(body, b"console.log(1)");
        assert_eq!(
            header(&response, header::CACHE_CONTROL),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(header(&response, header::CONTENT_ENCODING), None);
        assert_eq!(header(&response, header::VARY), Some("Accept-Encoding"));
        let (response, body) = get(&TABLE, "/assets/app-1234.js", &[("accept-encoding", "br, gzip")]);
        assert_eq!(body, b"GZ");
        assert_eq!(header(&response, header::CONTENT_ENCODING), Some("gzip"));
        assert_eq!(header(&response, header::ETAG), Some("\"e-1-gz\""));
        let (response, _) = get(&TABLE, "/assets/app-1234.js", &[("accept-encoding", "gzip;q=0")]);
        assert_eq!(header(&response, header::CONTENT_ENCODING), None);
        let (response, body) = get(
            &TABLE,
            "/assets/app-1234.js",
            &[("accept-encoding", "gzip"), ("if-none-match", "\"e-1-gz\"")],
        );
        assert_eq!(response.status(), 304);
        assert!(body.is_empty());
    }

    #[test]
    fn a_binary_without_the_console_says_how_to_build_it() {
        let none = Assets {
            built: false,
            files: &[],
        };
        let (response, body) = get(&none, "/", &[]);
        assert_eq!(response.status(), 503);
        assert!(String::from_utf8(body).unwrap().contains("make"));
        assert_eq!(header(&response, header::CONTENT_SECURITY_POLICY), Some(CSP));
    }
}
