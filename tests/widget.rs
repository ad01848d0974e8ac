//! The web widget's server side over real loopback sockets: CORS for a site's pages
//! (preflights, the headers of an admitted request, refusals of an unknown site and of an
//! origin the site does not list), the turn's channel (`web` for a site's request, as
//! before for server-to-server calls), the history route the widget draws a conversation
//! from after a reload, the per-address rate limit, and `/widget.js`'s headers. Nothing of
//! it applies without sites in the channels file.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kefu::channels::ChannelsConfig;
use kefu::server::ServeConfig;
use serde_json::{Value, json};
use support::http::{Reply, TestServer, eventually};

/// The site of these tests, and the origin its pages are served from.
const SITE: &str = "demo-shop";
const ORIGIN: &str = "https://shop.example.com";

/// A channels file with one widget site, read as `kefu serve --channels` reads it.
fn channels(name: &str) -> Arc<ChannelsConfig> {
    let dir = std::env::temp_dir().join(format!("kefu-widget-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("channels.yaml");
    std::fs::write(
        &file,
        format!("widget:\n  sites:\n    - key: {SITE}\n      name: 示例旗舰店\n      origins: [\"{ORIGIN}\", \"http://localhost:5173\"]\n"),
    )
    .unwrap();
    Arc::new(ChannelsConfig::load(&file).unwrap())
}

/// The demo shop with the widget's site; `rate` widget requests a second per address.
fn server(name: &str, rate: u32, log: Option<PathBuf>) -> TestServer {
    let mut config = ServeConfig::new("rules");
    config.watch = false;
    config.channels = Some(channels(name));
    config.limits.widget_rate_per_ip = rate;
    config.conversation_log = log.map(kefu::data::LogConfig::new);
    TestServer::start(config)
}

/// A request from a page of `origin` for `site`.
fn from_page(server: &TestServer, method: &str, path: &str, origin: &str, site: Option<&str>, body: &str) -> Reply {
    let mut headers = vec![("origin", origin), ("content-type", "application/json")];
    if let Some(site) = site {
        headers.push(("x-kefu-site", site));
    }
    server.send(method, path, &headers, body)
}

/// A GET's response head and body bytes, with `extra` header lines.
fn get_bytes(addr: std::net::SocketAddr, path: &str, extra: &str) -> (String, Vec<u8>) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&bytes[..split]).into_owned(),
        bytes[split + 4..].to_vec(),
    )
}

fn chat_body(session: &str, message: &str) -> String {
    json!({"session_id": session, "message": message}).to_string()
}

#[test]
fn a_preflight_from_a_listed_origin_is_allowed_and_others_are_refused() {
    let server = server("preflight", 5, None);
    let asked = [
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type, x-kefu-site"),
    ];
    for path in [
        "/v1/chat",
        "/v1/sessions/w_x/feedback",
        "/v1/sessions/w_x/history",
        "/v1/sessions/w_x/events",
        "/v1/sessions/w_x/messages",
    ] {
        let reply = server.send("OPTIONS", path, &[&[("origin", ORIGIN)][..], &asked[..]].concat(), "");
        assert_eq!(reply.status, 204, "{path}: {}", reply.body);
        assert_eq!(reply.header("access-control-allow-origin"), Some(ORIGIN));
        assert_eq!(reply.header("access-control-allow-methods"), Some("GET, POST, OPTIONS"));
        let headers = reply.header("access-control-allow-headers").unwrap();
        for name in [
            "Content-Type",
            "X-Kefu-Site",
            "X-Kefu-Session-Token",
            "X-Kefu-Identity",
            "Last-Event-ID",
        ] {
            assert!(headers.contains(name), "{headers}");
        }
        assert_eq!(reply.header("access-control-max-age"), Some("600"));
        assert_eq!(reply.header("vary"), Some("Origin"));
    }
    let refused = server.send(
        "OPTIONS",
        "/v1/chat",
        &[&[("origin", "https://evil.example")][..], &asked[..]].concat(),
        "",
    );
    assert_eq!(refused.status, 403);
    assert_eq!(refused.error_type(), "origin_not_allowed");
    assert_eq!(refused.header("access-control-allow-origin"), None);
    // Routes the widget does not call get no CORS at all.
    let admin = server.send(
        "OPTIONS",
        "/admin/rules",
        &[&[("origin", ORIGIN)][..], &asked[..]].concat(),
        "",
    );
    assert_eq!(admin.header("access-control-allow-origin"), None);
    assert_eq!(admin.status, 405);
}

#[test]
fn a_sites_page_is_answered_with_cors_and_others_are_refused_without() {
    let server = server("refusals", 50, None);
    let ok = from_page(
        &server,
        "POST",
        "/v1/chat",
        ORIGIN,
        Some(SITE),
        &chat_body("w_cors", "多久发货"),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(ok.header("vary"), Some("Origin"));
    assert!(!ok.json()["reply"].as_str().unwrap().is_empty());
    // A site page's caller is a customer, even from loopback without a token: no rules'
    // internals in the trace.
    assert!(
        ok.json()["trace"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["detail"].as_str().unwrap().contains(".kefu:"))
    );

    let unknown = from_page(
        &server,
        "POST",
        "/v1/chat",
        ORIGIN,
        Some("nope-shop"),
        &chat_body("w_cors", "在吗"),
    );
    assert_eq!(unknown.status, 403);
    assert_eq!(unknown.error_type(), "unknown_site");
    assert_eq!(unknown.header("access-control-allow-origin"), None);
    let unnamed = from_page(&server, "POST", "/v1/chat", ORIGIN, None, &chat_body("w_cors", "在吗"));
    assert_eq!(unnamed.error_type(), "unknown_site");
    let wrong = from_page(
        &server,
        "POST",
        "/v1/chat",
        "https://evil.example",
        Some(SITE),
        &chat_body("w_cors", "在吗"),
    );
    assert_eq!(wrong.status, 403);
    assert_eq!(wrong.error_type(), "origin_not_allowed");
    assert_eq!(wrong.header("access-control-allow-origin"), None);
    // The port is part of the origin.
    let port = from_page(
        &server,
        "POST",
        "/v1/chat",
        "http://localhost:5174",
        Some(SITE),
        &chat_body("w_cors", "在吗"),
    );
    assert_eq!(port.error_type(), "origin_not_allowed");

    // Errors of an admitted request are readable by the page: CORS headers on a 400 too.
    let bad = from_page(&server, "POST", "/v1/chat", ORIGIN, Some(SITE), "{}");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("access-control-allow-origin"), Some(ORIGIN));

    // Server to server (no Origin), and kefu's own pages (Origin = its host): as before.
    let plain = server.post("/v1/chat", &json!({"session_id": "w_plain", "message": "多久发货"}));
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("access-control-allow-origin"), None);
    let own = format!("http://{}", server.addr);
    let same = from_page(
        &server,
        "POST",
        "/v1/chat",
        &own,
        None,
        &chat_body("w_same", "多久发货"),
    );
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(same.header("access-control-allow-origin"), None);
}

#[test]
fn without_sites_there_is_no_cors() {
    let mut config = ServeConfig::new("rules");
    config.watch = false;
    let server = TestServer::start(config);
    let reply = from_page(
        &server,
        "POST",
        "/v1/chat",
        ORIGIN,
        Some(SITE),
        &chat_body("w_none", "多久发货"),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    let preflight = server.send("OPTIONS", "/v1/chat", &[("origin", ORIGIN)], "");
    assert_eq!(preflight.status, 405);
}

#[test]
fn a_sites_turns_are_on_the_web_channel() {
    let dir = std::env::temp_dir().join(format!("kefu-widget-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = server("channel", 50, Some(dir.clone()));
    let web = from_page(
        &server,
        "POST",
        "/v1/chat",
        ORIGIN,
        Some(SITE),
        &chat_body("w_web", "多久发货"),
    );
    assert_eq!(web.status, 200, "{}", web.body);
    let api = server.post("/v1/chat", &json!({"session_id": "w_api", "message": "多久发货"}));
    assert_eq!(api.status, 200);
    // The widget on a page kefu itself serves: same origin, a site named.
    let own = format!("http://{}", server.addr);
    let same = from_page(
        &server,
        "POST",
        "/v1/chat",
        &own,
        Some(SITE),
        &chat_body("w_same", "多久发货"),
    );
    assert_eq!(same.status, 200, "{}", same.body);
    // The conversation log is written every 200 ms.
    let turns = || -> Vec<Value> {
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|f| {
                std::fs::read_to_string(f.path())
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .filter(|r| r["kind"] == "turn")
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || turns().len() == 3),
        "{:?}",
        turns()
    );
    let channel_of = |session: &str| {
        let turns = turns();
        let record = turns.iter().find(|r| r["session"] == session).unwrap().clone();
        record
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or("api")
            .to_string()
    };
    assert_eq!(channel_of("w_web"), "web");
    assert_eq!(channel_of("w_same"), "web");
    assert_eq!(channel_of("w_api"), "api");
}

#[test]
fn the_history_redraws_the_conversation_for_its_token_only() {
    let server = server("history", 50, None);
    let first = from_page(
        &server,
        "POST",
        "/v1/chat",
        ORIGIN,
        Some(SITE),
        &chat_body("w_hist", "多久发货"),
    )
    .json();
    let token = first["session_token"].as_str().unwrap().to_string();
    from_page(
        &server,
        "POST",
        "/v1/chat",
        ORIGIN,
        Some(SITE),
        &chat_body("w_hist", "有什么优惠"),
    );
    // As the widget asks after a reload: a simple GET, the site in the query.
    let path = format!("/v1/sessions/w_hist/history?token={token}&site={SITE}");
    let reply = server.send("GET", &path, &[("origin", ORIGIN)], "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("access-control-allow-origin"), Some(ORIGIN));
    let history = reply.json();
    let messages = history["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["customer", "kefu", "customer", "kefu"]);
    assert_eq!(messages[0]["text"], "多久发货");
    assert_eq!(messages[1]["text"], first["reply"]);
    let seqs: Vec<u64> = messages.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(messages.iter().all(|m| m["at"].as_i64().unwrap() > 0));
    assert_eq!(history["state"], "bot");
    assert_eq!(history["resolved"], false);
    assert_eq!(history["rated"], false);
    // `after` skips what the page has.
    let after = server.get(&format!("/v1/sessions/w_hist/history?token={token}&after={}", seqs[1]));
    assert_eq!(after.json()["messages"].as_array().unwrap().len(), 2);

    // Rated: the history says so (the widget does not ask again).
    let rated = from_page(
        &server,
        "POST",
        "/v1/sessions/w_hist/feedback",
        ORIGIN,
        Some(SITE),
        &json!({"score": 5, "session_token": token}).to_string(),
    );
    assert_eq!(rated.status, 200, "{}", rated.body);
    assert_eq!(rated.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(
        server.get(&format!("/v1/sessions/w_hist/history?token={token}")).json()["rated"],
        true
    );

    // A wrong token and an unknown session are the same 404.
    let wrong = server.get("/v1/sessions/w_hist/history?token=nope");
    assert_eq!(wrong.status, 404);
    assert_eq!(wrong.error_type(), "not_found");
    let unknown = server.get(&format!("/v1/sessions/w_never/history?token={token}"));
    assert_eq!(unknown.status, 404);
    assert_eq!(server.get("/v1/sessions/w_hist/history?tok=1").status, 400);
}

#[test]
fn a_sites_requests_are_limited_per_address() {
    // 1 a second, a burst of 4.
    let server = server("rate", 1, None);
    let history = "/v1/sessions/w_rate/history?token=x";
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(from_page(&server, "GET", history, ORIGIN, Some(SITE), "").status);
    }
    assert_eq!(&statuses[..4], [404; 4], "{statuses:?}");
    let limited = from_page(&server, "GET", history, ORIGIN, Some(SITE), "");
    assert_eq!(limited.status, 429, "{statuses:?}");
    assert_eq!(limited.error_type(), "rate_limited");
    assert!(limited.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // The page can read it.
    assert_eq!(limited.header("access-control-allow-origin"), Some(ORIGIN));
    // Server-to-server calls are not a site's: not limited by address.
    for _ in 0..6 {
        assert_eq!(server.get(history).status, 404);
    }
}

#[test]
fn widget_js_is_cacheable_gzipped_and_loadable_from_any_page() {
    let server = server("script", 5, None);
    if !kefu::server::assets::CONSOLE.built {
        // A binary built without the console has no widget either: a clear 404.
        let reply = server.get("/widget.js");
        assert_eq!(reply.status, 404);
        assert!(reply.body.contains("make console"), "{}", reply.body);
        return;
    }
    // Gzipped bytes are not text: read this one as bytes.
    let (head, body) = get_bytes(server.addr, "/widget.js", "accept-encoding: gzip\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let reply = support::http::parse_response(format!("{head}\r\n\r\n").as_bytes());
    assert_eq!(reply.header("cache-control"), Some("public, max-age=300"));
    assert_eq!(reply.header("cross-origin-resource-policy"), Some("cross-origin"));
    assert_eq!(reply.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(&body[..2], [0x1f, 0x8b], "gzip");
    assert!(body.len() <= 40 * 1024, "{} bytes gzipped", body.len());
    let etag = reply.header("etag").unwrap().to_string();
    let again = server.send(
        "GET",
        "/widget.js",
        &[("accept-encoding", "gzip"), ("if-none-match", &etag)],
        "",
    );
    assert_eq!(again.status, 304);
    let plain = server.get("/widget.js");
    assert_eq!(plain.header("content-encoding"), None);
    assert!(plain.body.contains("data-kefu-widget"));
}
