//! `POST /v1/events` over real loopback sockets, on a copy of the demo shop with proactive
//! items of the test's own (quiet hours set away from now, so that they hold at any hour):
//!
//! - bad input: unknown fields, a bad type, a future or stale `at`, `data` too large or
//!   too deep, a conversation named twice or not at all, a channel's session id, no or a
//!   wrong token, an order event or a channel from the widget, another conversation's
//!   token: each a 4xx JSON error, counted in `kefu_events_refused_total{reason}`, and
//!   the conversation goes on (its chat answers, a good event is taken);
//! - the per-session rate limit of the chat;
//! - delivery of a proactive message: on the customer's live stream
//!   (`/v1/sessions/{id}/events`), to a new widget visitor (the event's answer carries the
//!   token that opens the stream), to a webhook channel's `reply_url`, and to a WeChat
//!   customer through `custom/send` (the simulator); the daily limit refusing silently
//!   (the same 202, nothing sent) and counted in `/metrics`.
//!
//! The delivery tests need the engine's proactive sends (`Engine::event`, part E of issue
//! #26) and the `proactive` items of the rule language (part L).

mod support;
// Only `custom/send` is asked of the simulator here.
#[allow(dead_code)]
#[path = "support/wechat_sim.rs"]
mod wechat_sim;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{FixedOffset, TimeDelta, Utc};
use kefu::channels::ChannelsConfig;
use kefu::server::ServeConfig;
use serde_json::{Value, json};
use support::http::{Reply, TestServer, eventually};
use wechat_sim::WechatSim;

const TOKEN: &str = "events-admin-token";
const SITE: &str = "demo-shop";
const ORIGIN: &str = "https://shop.example.com";
const MP_APPID: &str = "wxevents000000001";

/// The test's proactive items: an order event with a daily limit of one, and a product
/// page's dwell. Quiet hours are a minute six hours from now in the shop's zone
/// (Asia/Shanghai), so that the guard rail never stops them while the test runs.
fn proactive_items() -> String {
    let quiet_from = Utc::now().with_timezone(&FixedOffset::east_opt(8 * 3600).unwrap()) + TimeDelta::hours(6);
    let quiet_to = quiet_from + TimeDelta::minutes(1);
    let (from, to) = (quiet_from.format("%H:%M"), quiet_to.format("%H:%M"));
    format!(
        r#"
proactive 测试发货提醒 {{
  on event order_shipped
  when `event.order_id != ()`
  say "您的订单 {{event.order_id}} 已发货，请留意物流信息。"
  limit 1 per day
  quiet {from} to {to}
  priority 100
}}

proactive 测试商品停留 {{
  on event product_dwell
  when `event.product_id == "T01"`
  say "这款{{event.product_name}}在看吗？有尺码或面料的问题随时问我。"
  quiet {from} to {to}
  priority 100
}}
"#
    )
}

/// A rules directory: the demo shop and the test's proactive items.
fn rules(name: &str) -> PathBuf {
    let dir = support::http::copy_rules(&support::root().join("rules"), &format!("events-{name}"));
    std::fs::write(dir.join("zz_events_test.kefu"), proactive_items()).unwrap();
    dir
}

/// The channels file: the widget's site, a webhook channel posting to `reply_url`, an
/// Official Account on the simulator.
fn channels(name: &str, reply_url: &str, sim: Option<&WechatSim>) -> Arc<ChannelsConfig> {
    let dir = std::env::temp_dir().join(format!("kefu-events-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("shop.secret"), "webhook-secret-for-tests\n").unwrap();
    std::fs::write(dir.join("mp_token"), "plaintoken").unwrap();
    std::fs::write(dir.join("secret"), "app-secret").unwrap();
    let mut yaml = format!(
        "widget:\n  sites:\n    - key: {SITE}\n      name: 示例旗舰店\n      origins: [\"{ORIGIN}\"]\nwebhook:\n  - name: shop\n    secret: {{file: shop.secret}}\n    reply_url: {reply_url}\n"
    );
    if let Some(sim) = sim {
        yaml.push_str(&format!(
            "wechat:\n  - {{name: shop_mp, kind: official_account, app_id: {MP_APPID}, token: {{file: mp_token}}, app_secret: {{file: secret}}, api_base: '{}'}}\n",
            sim.base()
        ));
    }
    let file = dir.join("channels.yaml");
    std::fs::write(&file, yaml).unwrap();
    Arc::new(ChannelsConfig::load(&file).unwrap())
}

/// A server on `rules` with the admin token and the channels.
fn server(name: &str, reply_url: &str, sim: Option<&WechatSim>, more: impl FnOnce(&mut ServeConfig)) -> TestServer {
    let mut config = ServeConfig::new(rules(name));
    config.watch = false;
    config.admin_token = Some(TOKEN.into());
    config.channels = Some(channels(name, reply_url, sim));
    config.jobs.backoff = Duration::from_millis(50);
    more(&mut config);
    TestServer::start(config)
}

/// An event from the back office (the admin token).
fn back_office(server: &TestServer, body: &Value) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    server.send(
        "POST",
        "/v1/events",
        &[("content-type", "application/json"), ("authorization", &auth)],
        &body.to_string(),
    )
}

/// An event from the widget on the site's page, with the conversation's token if any.
fn from_widget(server: &TestServer, body: &Value, token: Option<&str>) -> Reply {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("origin", ORIGIN),
        ("x-kefu-site", SITE),
    ];
    if let Some(token) = token {
        headers.push(("x-kefu-session-token", token));
    }
    server.send("POST", "/v1/events", &headers, &body.to_string())
}

/// A chat turn (server to server, with the token); the answer.
fn chat(server: &TestServer, session: &str, message: &str) -> Value {
    let auth = format!("Bearer {TOKEN}");
    let reply = server.send(
        "POST",
        "/v1/chat",
        &[("content-type", "application/json"), ("authorization", &auth)],
        &json!({"session_id": session, "message": message}).to_string(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// The value of the series `name{labels}` in `/metrics` (0 when absent).
fn metric(server: &TestServer, series: &str) -> f64 {
    server
        .get("/metrics")
        .body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The customer's live stream, read as it comes.
struct Stream {
    socket: TcpStream,
    seen: String,
}

impl Stream {
    fn open(addr: SocketAddr, path: &str) -> Stream {
        let mut socket = TcpStream::connect(addr).unwrap();
        write!(socket, "GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Stream {
            socket,
            seen: String::new(),
        }
    }

    /// Reads until `needle` was seen or `timeout` passed.
    fn until(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 16 * 1024];
        while !self.seen.contains(needle) && Instant::now() < deadline {
            match self.socket.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => {}
            }
        }
        self.seen.contains(needle)
    }
}

/// A webhook platform's `reply_url` that records the JSON bodies posted to it.
struct Platform {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Value>>>,
}

impl Platform {
    fn start() -> Platform {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&got);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                if let Some(body) = read_body(&mut stream) {
                    seen.lock()
                        .unwrap()
                        .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                );
            }
        });
        Platform { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}/replies", self.addr)
    }

    fn posted(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }
}

/// One request's body (by its content-length).
fn read_body(stream: &mut TcpStream) -> Option<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let got = stream.read(&mut buf).ok()?;
        if got == 0 {
            return None;
        }
        request.extend_from_slice(&buf[..got]);
        let text = String::from_utf8_lossy(&request).to_string();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let length: usize = text[..end]
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        if request.len() >= end + 4 + length {
            return Some(String::from_utf8_lossy(&request[end + 4..end + 4 + length]).to_string());
        }
    }
}

#[test]
fn bad_events_are_refused_with_json_counted_and_the_conversation_goes_on() {
    let platform = Platform::start();
    let server = server("bad", &platform.url(), None, |_| {});
    let session = "ev-bad-1";
    let first = chat(&server, session, "有什么优惠");
    let token = first["session_token"].as_str().unwrap().to_string();
    let now = Utc::now();
    let big = "x".repeat(9 * 1024);
    let cases: Vec<(Value, u16, &str)> = vec![
        // Unknown fields, at the top and as a typo of a known one.
        (
            json!({"type": "order_shipped", "session_id": session, "price": 5}),
            400,
            "invalid_event",
        ),
        (
            json!({"type": "order_shipped", "sesion_id": session}),
            400,
            "invalid_event",
        ),
        (json!({"session_id": session}), 400, "invalid_event"),
        (
            json!({"type": "Order-Shipped", "session_id": session}),
            400,
            "invalid_event",
        ),
        (
            json!({"type": "x".repeat(49), "session_id": session}),
            400,
            "invalid_event",
        ),
        (
            json!({"type": "order_shipped", "session_id": session, "at": (now + TimeDelta::hours(1)).to_rfc3339()}),
            400,
            "future_timestamp",
        ),
        (
            json!({"type": "order_shipped", "session_id": session, "at": (now - TimeDelta::days(8)).to_rfc3339()}),
            400,
            "stale_event",
        ),
        (
            json!({"type": "order_shipped", "session_id": session, "at": "yesterday"}),
            400,
            "invalid_event",
        ),
        (
            json!({"type": "order_shipped", "session_id": session, "data": {"note": big}}),
            400,
            "invalid_event",
        ),
        (
            json!({"type": "order_shipped", "session_id": session, "data": {"a": {"b": {"c": {"d": {"e": 1}}}}}}),
            400,
            "invalid_event",
        ),
        (
            json!({"type": "order_shipped", "session_id": session, "data": {"type": "x"}}),
            400,
            "invalid_event",
        ),
        (
            json!({"type": "order_shipped", "session_id": session, "data": [1, 2]}),
            400,
            "invalid_event",
        ),
        (
            json!({"type": "order_shipped", "session_id": session, "channel": "shop", "user_id": "c1"}),
            400,
            "invalid_event",
        ),
        (json!({"type": "order_shipped"}), 400, "invalid_event"),
        (
            json!({"type": "order_shipped", "session_id": "ch:shop:-:c1"}),
            400,
            "invalid_event",
        ),
        (
            json!({"type": "order_shipped", "channel": "shop"}),
            400,
            "invalid_event",
        ),
        (
            json!({"type": "order_shipped", "channel": "nope", "user_id": "c1"}),
            404,
            "unknown_channel",
        ),
        (
            json!({"type": "order_shipped", "channel": "wechat_mp", "account": "x", "user_id": "o1"}),
            404,
            "unknown_channel",
        ),
        (
            json!({"type": "order_shipped", "channel": "web", "user_id": "c1"}),
            400,
            "invalid_event",
        ),
    ];
    for (body, status, kind) in &cases {
        let reply = back_office(&server, body);
        assert_eq!(reply.status, *status, "{body}: {}", reply.body);
        assert_eq!(reply.error_type(), *kind, "{body}");
    }
    // Not JSON, too large for any body.
    let raw = |body: &str| {
        let auth = format!("Bearer {TOKEN}");
        server.send(
            "POST",
            "/v1/events",
            &[("content-type", "application/json"), ("authorization", &auth)],
            body,
        )
    };
    assert_eq!(raw("{\"type\": ").error_type(), "invalid_json");
    let huge = raw(&format!(
        "{{\"type\": \"order_shipped\", \"data\": {{\"x\": \"{}\"}}}}",
        "y".repeat(70_000)
    ));
    assert_eq!((huge.status, huge.error_type().as_str()), (413, "payload_too_large"));
    // Who may send: no token, a wrong one; the widget only page events, for its own
    // conversation, at no other time than now.
    let anonymous = server.post("/v1/events", &json!({"type": "order_shipped", "session_id": session}));
    assert_eq!(
        (anonymous.status, anonymous.error_type().as_str()),
        (401, "unauthorized")
    );
    let wrong = server.send(
        "POST",
        "/v1/events",
        &[("content-type", "application/json"), ("authorization", "Bearer nope")],
        &json!({"type": "order_shipped", "session_id": session}).to_string(),
    );
    assert_eq!(wrong.status, 401);
    let order = from_widget(
        &server,
        &json!({"type": "order_shipped", "session_id": session}),
        Some(&token),
    );
    assert_eq!((order.status, order.error_type().as_str()), (403, "forbidden"));
    assert_eq!(
        order.header("access-control-allow-origin"),
        Some(ORIGIN),
        "the widget can read why"
    );
    let channel = from_widget(
        &server,
        &json!({"type": "cart_changed", "channel": "shop", "user_id": "c1"}),
        None,
    );
    assert_eq!(channel.status, 403);
    let dated = from_widget(
        &server,
        &json!({"type": "cart_changed", "session_id": session, "at": now.to_rfc3339()}),
        Some(&token),
    );
    assert_eq!(dated.error_type(), "invalid_event");
    for token in [None, Some("not-the-token")] {
        let other = from_widget(&server, &json!({"type": "cart_changed", "session_id": session}), token);
        assert_eq!(
            (other.status, other.error_type().as_str()),
            (404, "not_found"),
            "{token:?}"
        );
    }
    let foreign = server.send(
        "POST",
        "/v1/events",
        &[
            ("content-type", "application/json"),
            ("origin", "https://evil.example"),
            ("x-kefu-site", SITE),
        ],
        &json!({"type": "cart_changed", "session_id": "w_x"}).to_string(),
    );
    assert_eq!(foreign.status, 403);
    assert_eq!(foreign.header("access-control-allow-origin"), None);

    // Every refusal counted by its reason (the origin's refusal is the widget's, before
    // the route).
    let refused = |reason: &str| metric(&server, &format!("kefu_events_refused_total{{reason=\"{reason}\"}}"));
    assert_eq!(refused("invalid_event"), 16.0);
    assert_eq!(refused("future_timestamp"), 1.0);
    assert_eq!(refused("stale_event"), 1.0);
    assert_eq!(refused("unknown_channel"), 2.0);
    assert_eq!(refused("invalid_json"), 1.0);
    assert_eq!(refused("payload_too_large"), 1.0);
    assert_eq!(refused("unauthorized"), 2.0);
    assert_eq!(refused("forbidden"), 2.0);
    assert_eq!(refused("not_found"), 2.0);
    assert_eq!(refused("rate_limited"), 0.0, "the series exist from the start");

    // The conversation goes on: it answers, and good events are taken from both senders.
    let again = chat(&server, session, "怎么退货");
    assert!(!again["reply"].as_str().unwrap().is_empty(), "{again}");
    let taken = back_office(
        &server,
        &json!({"type": "order_delivered", "session_id": session, "data": {"order_id": "A1"}, "at": now.to_rfc3339()}),
    );
    assert_eq!(taken.status, 202, "{}", taken.body);
    assert_eq!(taken.json(), json!({"accepted": true}));
    let page = from_widget(
        &server,
        &json!({"type": "cart_changed", "session_id": session, "data": {"items": 2}}),
        Some(&token),
    );
    assert_eq!(page.status, 202, "{}", page.body);
    assert_eq!(page.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(page.json(), json!({"accepted": true}), "nothing sent: no token to give");
    // A preflight from the site's page is allowed.
    let preflight = server.send(
        "OPTIONS",
        "/v1/events",
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type, x-kefu-site, x-kefu-session-token",
            ),
        ],
        "",
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some(ORIGIN));
}

#[test]
fn events_are_limited_per_conversation_like_messages() {
    let platform = Platform::start();
    let server = server("rate", &platform.url(), None, |config| {
        config.limits.rate_per_session = 1
    });
    let body = json!({"type": "order_delivered", "session_id": "ev-rate-1"});
    let statuses: Vec<u16> = (0..4).map(|_| back_office(&server, &body).status).collect();
    assert_eq!(statuses[..2], [202, 202], "a burst of twice the rate");
    let limited = back_office(&server, &body);
    assert_eq!((limited.status, limited.error_type().as_str()), (429, "rate_limited"));
    assert!(limited.header("retry-after").is_some());
    assert!(metric(&server, "kefu_events_refused_total{reason=\"rate_limited\"}") >= 1.0);
    // Another conversation has its own allowance.
    assert_eq!(
        back_office(&server, &json!({"type": "order_delivered", "session_id": "ev-rate-2"})).status,
        202
    );
}

// The tests below need part E's `Engine::event` (a proactive message sent).

#[test]
fn a_proactive_message_reaches_the_customer_stream_once_and_the_limit_refuses_silently() {
    let platform = Platform::start();
    let server = server("stream", &platform.url(), None, |_| {});
    let session = "ev-stream-1";
    let token = chat(&server, session, "你好")["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut stream = Stream::open(server.addr, &format!("/v1/sessions/{session}/events?token={token}"));
    assert!(stream.until("event: state", Duration::from_secs(5)), "{}", stream.seen);
    let event = json!({"type": "order_shipped", "session_id": session, "data": {"order_id": "A100"}});
    let sent = back_office(&server, &event);
    assert_eq!(sent.status, 202, "{}", sent.body);
    assert!(
        stream.until("您的订单 A100 已发货", Duration::from_secs(5)),
        "the proactive message on the stream: {}",
        stream.seen
    );
    // The trigger's limit (1 a day): the same answer, nothing sent, counted.
    let again = back_office(
        &server,
        &json!({"type": "order_shipped", "session_id": session, "data": {"order_id": "A101"}}),
    );
    assert_eq!(
        (again.status, again.body.clone()),
        (sent.status, sent.body.clone()),
        "never revealed"
    );
    assert!(!stream.until("A101", Duration::from_millis(700)), "{}", stream.seen);
    assert_eq!(
        metric(
            &server,
            "kefu_proactive_total{trigger=\"测试发货提醒\",outcome=\"limit\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "kefu_proactive_total{trigger=\"测试发货提醒\",outcome=\"sent\"}"
        ),
        1.0
    );
    // The conversation keeps it as kefu's, and goes on.
    let history = server
        .get(&format!("/v1/sessions/{session}/history?token={token}"))
        .json();
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.iter().filter(|t| t.contains("A100")).count(), 1, "{history}");
    assert!(!texts.iter().any(|t| t.contains("A101")), "{history}");
    chat(&server, session, "好的谢谢");
}

#[test]
fn a_new_widget_visitor_gets_the_token_and_the_message_on_the_stream() {
    let platform = Platform::start();
    let server = server("visitor", &platform.url(), None, |_| {});
    let session = "w_AAAAAAAAAAAAAAAAAAAAAA";
    let dwell = json!({"type": "product_dwell", "session_id": session,
        "data": {"product_id": "T01", "seconds": 60, "product_name": "重磅纯棉圆领短袖T恤"}});
    let reply = from_widget(&server, &dwell, None);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let token = reply.json()["session_token"]
        .as_str()
        .unwrap_or_else(|| panic!("the new conversation's token: {}", reply.body))
        .to_string();
    // The stream the widget opens with it carries the message, which opened the
    // conversation.
    let mut stream = Stream::open(
        server.addr,
        &format!("/v1/sessions/{session}/events?token={token}&site={SITE}"),
    );
    assert!(
        stream.until("重磅纯棉圆领短袖T恤在看吗", Duration::from_secs(5)),
        "{}",
        stream.seen
    );
    assert!(stream.seen.contains("id: 1\n"), "{}", stream.seen);
    // Now it is the visitor's: without the token, another page cannot speak for it.
    let stranger = from_widget(&server, &dwell, None);
    assert_eq!(stranger.status, 404);
    let owner = from_widget(&server, &dwell, Some(&token));
    assert_eq!(owner.json(), json!({"accepted": true}), "the token is given once");
}

#[test]
fn a_proactive_message_to_a_webhook_customer_is_posted_to_reply_url() {
    let platform = Platform::start();
    let server = server("webhook", &platform.url(), None, |_| {});
    let event = json!({"type": "order_shipped", "channel": "shop", "user_id": "conv-9",
        "data": {"order_id": "A200"}});
    assert_eq!(back_office(&server, &event).status, 202);
    assert!(
        eventually(Duration::from_secs(10), || !platform.posted().is_empty()),
        "nothing posted"
    );
    let posted = &platform.posted()[0];
    assert_eq!(posted["conversation_id"], "conv-9", "{posted}");
    assert!(
        posted["text"].as_str().unwrap().contains("您的订单 A200 已发货"),
        "{posted}"
    );
    // The conversation is the channel's: a chat on the API cannot name it.
    let session = server.state.engine.session("ch:shop:-:conv-9").unwrap().unwrap();
    assert!(session.history.iter().any(|h| h.text.contains("A200")));
}

#[test]
fn a_proactive_message_to_a_wechat_follower_goes_out_through_custom_send() {
    let sim = WechatSim::start();
    let platform = Platform::start();
    let server = server("wechat", &platform.url(), Some(&sim), |_| {});
    // The account by its name in the channels file (or its AppID).
    let event = json!({"type": "order_shipped", "channel": "wechat_mp", "account": "shop_mp",
        "user_id": "o_follower", "data": {"order_id": "A300"}});
    assert_eq!(back_office(&server, &event).status, 202);
    assert!(
        eventually(Duration::from_secs(10), || !sim
            .calls("/message/custom/send")
            .is_empty()),
        "nothing sent"
    );
    let call = &sim.calls("/message/custom/send")[0];
    assert_eq!(call.body["touser"], "o_follower", "{:?}", call.body);
    assert!(
        call.body["text"]["content"].as_str().unwrap().contains("A300"),
        "{:?}",
        call.body
    );
    assert!(
        server
            .state
            .engine
            .session(&format!("ch:wechat_mp:{MP_APPID}:o_follower"))
            .unwrap()
            .is_some()
    );
}
