//! The webhook channel over real loopback sockets, on the demo shop, with a platform of
//! the test's own (a threaded HTTP server that records what kefu posts and can fail):
//! signatures (good, wrong, stale, missing), bad bodies, an unknown channel; a message
//! answered by a signed post to `reply_url`; a repeated message id answered once; a
//! `reply_url` that fails with 500s retried until it takes the reply, with the same
//! `Idempotency-Key`; a 4xx not retried; `?wait=true`; an agent's reply to a webhook
//! customer posted; the channel's series in `/metrics`; a photo (`images`) answered by the
//! demo's `on image` rule and shown to agents, a fake one refused with the conversation
//! going on. The `_redis` test (two nodes, one
//! Redis: a retry that reaches the other node is a duplicate) runs under
//! tests/support/with-redis.sh, as `make test` does.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use kefu::server::ServeConfig;
use serde_json::{Value, json};
use sha2::Sha256;
use support::http::{Reply, TestServer, eventually};

const SECRET: &str = "webhook-secret-for-tests";

/// One request kefu posted to the platform.
#[derive(Clone, Debug)]
struct Posted {
    headers: HashMap<String, String>,
    body: String,
}

impl Posted {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// The platform's `reply_url`: answers the n-th request with `statuses[n]` (then 200),
/// records every request.
struct Platform {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Posted>>>,
}

impl Platform {
    fn start(statuses: Vec<u16>) -> Platform {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&got);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let Some(posted) = read_request(&mut stream) else {
                    continue;
                };
                let n = {
                    let mut got = seen.lock().unwrap();
                    got.push(posted);
                    got.len() - 1
                };
                let status = statuses.get(n).copied().unwrap_or(200);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                );
            }
        });
        Platform { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}/kefu/replies", self.addr)
    }

    fn posted(&self) -> Vec<Posted> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests came (or 10 s passed); what came.
    fn wait_for(&self, n: usize) -> Vec<Posted> {
        eventually(Duration::from_secs(10), || self.posted().len() >= n);
        self.posted()
    }
}

/// Reads one HTTP/1.1 request (head and the declared body).
fn read_request(stream: &mut std::net::TcpStream) -> Option<Posted> {
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
        let headers: HashMap<String, String> = text[..end]
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        if request.len() >= end + 4 + length {
            let body = String::from_utf8_lossy(&request[end + 4..end + 4 + length]).to_string();
            return Some(Posted { headers, body });
        }
    }
}

fn hmac_hex(timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The demo shop with a webhook channel `shop` posting to `platform`, fast retries.
fn server(platform: &Platform, more: impl FnOnce(&mut ServeConfig)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shop.secret"), format!("{SECRET}\n")).unwrap();
    let file = dir.path().join("channels.yaml");
    std::fs::write(
        &file,
        format!(
            "webhook:\n  - name: shop\n    secret: {{file: shop.secret}}\n    reply_url: {}\n",
            platform.url()
        ),
    )
    .unwrap();
    let mut config = ServeConfig::new(support::root().join("rules"));
    config.watch = false;
    config.channels = Some(Arc::new(kefu::channels::ChannelsConfig::load(&file).unwrap()));
    config.jobs.backoff = Duration::from_millis(20);
    config.jobs.max_backoff = Duration::from_millis(100);
    config.jobs.max_attempts = 4;
    more(&mut config);
    (TestServer::start(config), dir)
}

/// Posts `body` to channel `name`, signed at `timestamp` with `secret_hex` (or the
/// right signature when `None`).
fn post_signed(server: &TestServer, path: &str, body: &Value, timestamp: i64, signature: Option<&str>) -> Reply {
    let body = body.to_string();
    let signature = signature.map_or_else(|| format!("sha256={}", hmac_hex(timestamp, &body)), str::to_string);
    let timestamp = timestamp.to_string();
    server.send(
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("x-kefu-timestamp", &timestamp),
            ("x-kefu-signature", &signature),
        ],
        &body,
    )
}

fn post(server: &TestServer, body: &Value) -> Reply {
    post_signed(server, "/v1/channels/shop/messages", body, now(), None)
}

fn message(id: &str, conversation: &str, text: &str) -> Value {
    json!({"message_id": id, "conversation_id": conversation, "user_id": "buyer-7", "text": text})
}

fn metric(server: &TestServer, line: &str) -> bool {
    server.get("/metrics").body.lines().any(|l| l == line)
}

#[test]
fn signatures_are_checked_and_bad_requests_refused() {
    let platform = Platform::start(vec![]);
    let (server, _dir) = server(&platform, |_| {});
    let body = message("m1", "c1", "你好");
    let text = body.to_string();
    let good = format!("sha256={}", hmac_hex(now(), &text));

    // The right signature with its last digit changed.
    let mut wrong = good.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    // A signature of another body, or none, or one in another form.
    let other = format!("sha256={}", hmac_hex(now(), "{}"));
    let cases = [
        (Some(wrong.as_str()), now(), "bad_signature"),
        (Some(other.as_str()), now(), "bad_signature"),
        (Some("sha256=xyz"), now(), "bad_signature"),
        (Some(good.trim_start_matches("sha256=")), now(), "bad_signature"),
        (None, now() - 301, "stale_timestamp"),
        (None, now() + 400, "stale_timestamp"),
    ];
    for (signature, timestamp, kind) in cases {
        let reply = post_signed(&server, "/v1/channels/shop/messages", &body, timestamp, signature);
        assert_eq!(
            (reply.status, reply.error_type()),
            (401, kind.into()),
            "{signature:?}: {}",
            reply.body
        );
    }
    // No headers at all.
    let bare = server.send(
        "POST",
        "/v1/channels/shop/messages",
        &[("content-type", "application/json")],
        &text,
    );
    assert_eq!(
        (bare.status, bare.error_type()),
        (401, "bad_signature".into()),
        "{}",
        bare.body
    );

    let unknown = post_signed(&server, "/v1/channels/nope/messages", &body, now(), None);
    assert_eq!((unknown.status, unknown.error_type()), (404, "unknown_channel".into()));
    let get = server.get("/v1/channels/shop/messages");
    assert_eq!(get.status, 405);

    for bad in [
        json!({"message_id": "m2", "conversation_id": "c1", "text": "x", "surprise": true}),
        json!({"message_id": "m2", "conversation_id": "c1"}),
        json!({"message_id": "m2", "conversation_id": "a:b", "text": "x"}),
        json!(["not", "an", "object"]),
    ] {
        let reply = post(&server, &bad);
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert!(reply.json()["error"]["message"].is_string());
    }
    let huge = json!({"message_id": "m3", "conversation_id": "c1", "text": "长".repeat(40_000)});
    assert_eq!(post(&server, &huge).status, 413);

    // Nothing of it ran a turn or posted anything.
    std::thread::sleep(Duration::from_millis(200));
    assert!(platform.posted().is_empty());
    assert!(
        metric(
            &server,
            "kefu_channel_messages_total{channel=\"shop\",outcome=\"refused\"} 12"
        ),
        "{}",
        server.get("/metrics").body
    );
    assert!(metric(
        &server,
        "kefu_channel_messages_total{channel=\"shop\",outcome=\"accepted\"} 0"
    ));

    // The right signature is taken.
    let ok = post(&server, &body);
    assert_eq!(
        (ok.status, ok.json()),
        (202, json!({"status": "accepted"})),
        "{}",
        ok.body
    );
}

#[test]
fn a_message_is_answered_once_by_a_signed_post() {
    let platform = Platform::start(vec![]);
    let (server, _dir) = server(&platform, |_| {});
    let body = message("order-chat-1", "conv-9", "有什么优惠");
    assert_eq!(post(&server, &body).status, 202);
    // The platform was unsure and sent it again, twice.
    for _ in 0..2 {
        let again = post(&server, &body);
        assert_eq!((again.status, again.json()), (200, json!({"status": "duplicate"})));
    }
    let posted = platform.wait_for(1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(platform.posted().len(), 1, "one reply: {:?}", platform.posted());
    let reply = &posted[0];
    let json = reply.json();
    assert_eq!(json["message_id"], "order-chat-1:reply");
    assert_eq!(json["in_reply_to"], "order-chat-1");
    assert_eq!(json["conversation_id"], "conv-9");
    assert_eq!(json["user_id"], "buyer-7");
    assert!(!json["text"].as_str().unwrap().is_empty(), "{json}");
    assert!(
        ["rule", "promotion"].contains(&json["source"].as_str().unwrap()),
        "{json}"
    );
    assert_eq!(json["handoff"], Value::Null);
    assert!(json["choices"].is_array());
    assert!(chrono::DateTime::parse_from_rfc3339(json["sent_at"].as_str().unwrap()).is_ok());
    // Signed with the channel's secret over the timestamp and the body as sent.
    assert_eq!(reply.headers["idempotency-key"], "order-chat-1:reply");
    let timestamp: i64 = reply.headers["x-kefu-timestamp"].parse().unwrap();
    assert!((timestamp - now()).abs() < 60);
    assert_eq!(
        reply.headers["x-kefu-signature"],
        format!("sha256={}", hmac_hex(timestamp, &reply.body))
    );
    // One turn: the conversation holds the customer's message once.
    let session = server.get("/v1/sessions/ch:shop:-:conv-9");
    assert_eq!(session.status, 200, "{}", session.body);
    assert_eq!(session.body.matches("有什么优惠").count(), 1, "{}", session.body);
    assert!(metric(
        &server,
        "kefu_channel_messages_total{channel=\"shop\",outcome=\"accepted\"} 1"
    ));
    assert!(metric(
        &server,
        "kefu_channel_messages_total{channel=\"shop\",outcome=\"duplicate\"} 2"
    ));
    assert!(metric(
        &server,
        "kefu_channel_deliveries_total{channel=\"shop\",outcome=\"delivered\"} 1"
    ));
    // The JSON API may not write into it.
    let api = server.post("/v1/chat", &json!({"session_id": "ch:shop:-:conv-9", "message": "hi"}));
    assert_eq!(api.status, 400, "{}", api.body);
}

#[test]
fn failed_posts_are_retried_with_the_same_idempotency_key() {
    let platform = Platform::start(vec![500, 503]);
    let (server, _dir) = server(&platform, |_| {});
    assert_eq!(post(&server, &message("m-retry", "c2", "有什么优惠")).status, 202);
    let posted = platform.wait_for(3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(platform.posted().len(), 3, "two failures, then delivered once");
    for attempt in &posted {
        assert_eq!(attempt.headers["idempotency-key"], "m-retry:reply");
        assert_eq!(attempt.json()["message_id"], "m-retry:reply");
    }
    assert!(eventually(Duration::from_secs(2), || metric(
        &server,
        "kefu_channel_deliveries_total{channel=\"shop\",outcome=\"delivered\"} 1"
    )));
    assert!(metric(
        &server,
        "kefu_channel_deliveries_total{channel=\"shop\",outcome=\"retried\"} 2"
    ));
    assert!(metric(
        &server,
        "kefu_channel_deliveries_total{channel=\"shop\",outcome=\"failed\"} 0"
    ));
}

#[test]
fn a_refused_post_is_not_retried() {
    let platform = Platform::start(vec![400]);
    let (server, _dir) = server(&platform, |_| {});
    assert_eq!(post(&server, &message("m-bad", "c3", "有什么优惠")).status, 202);
    platform.wait_for(1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(platform.posted().len(), 1, "a 400 is permanent");
    assert!(eventually(Duration::from_secs(2), || metric(
        &server,
        "kefu_channel_deliveries_total{channel=\"shop\",outcome=\"failed\"} 1"
    )));
    assert!(metric(
        &server,
        "kefu_channel_deliveries_total{channel=\"shop\",outcome=\"retried\"} 0"
    ));
}

#[test]
fn wait_answers_inline() {
    let platform = Platform::start(vec![]);
    let (server, _dir) = server(&platform, |_| {});
    let reply = post_signed(
        &server,
        "/v1/channels/shop/messages?wait=true",
        &message("m-sync", "c4", "有什么优惠"),
        now(),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json = reply.json();
    assert_eq!(json["status"], "answered");
    assert_eq!(json["message_id"], "m-sync:reply");
    assert_eq!(json["in_reply_to"], "m-sync");
    assert_eq!(json["conversation_id"], "c4");
    assert!(!json["text"].as_str().unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    assert!(platform.posted().is_empty(), "nothing posted: the answer went inline");
}

#[test]
fn an_agents_reply_reaches_the_platform() {
    let platform = Platform::start(vec![]);
    let (server, _dir) = server(&platform, |_| {});
    assert_eq!(post(&server, &message("m-a1", "c5", "你好")).status, 202);
    platform.wait_for(1);
    let session = "ch:shop:-:c5";
    let taken = server.post(&format!("/v1/sessions/{session}/takeover"), &json!({"agent": "小王"}));
    assert_eq!(taken.status, 200, "{}", taken.body);
    let replied = server.post(
        &format!("/v1/sessions/{session}/reply"),
        &json!({"text": "您好，我是客服小王，请问有什么可以帮您？"}),
    );
    assert_eq!(replied.status, 200, "{}", replied.body);
    let posted = platform.wait_for(2);
    assert_eq!(posted.len(), 2, "{posted:?}");
    let json = posted[1].json();
    assert_eq!(json["text"], "您好，我是客服小王，请问有什么可以帮您？");
    assert_eq!(json["source"], "agent");
    assert_eq!(json["in_reply_to"], Value::Null);
    assert_eq!(json["conversation_id"], "c5");
    let id = json["message_id"].as_str().unwrap();
    assert!(id.starts_with("ch:shop:-:c5#"), "{id}");
    assert_eq!(posted[1].headers["idempotency-key"], id);
    // While the agent has it, a customer's message gets no bot answer: nothing posted.
    assert_eq!(post(&server, &message("m-a2", "c5", "好的谢谢")).status, 202);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(platform.posted().len(), 2, "{:?}", platform.posted());
}

#[test]
#[ignore = "needs redis-server (make test runs it under tests/support/with-redis.sh)"]
fn a_retry_on_another_node_is_a_duplicate_redis() {
    let url = std::env::var("KEFU_TEST_REDIS").expect(
        "KEFU_TEST_REDIS is not set: run this test under tests/support/with-redis.sh, which starts a \
         redis-server and sets it (make test does)",
    );
    let platform = Platform::start(vec![]);
    let with_redis = |config: &mut ServeConfig| {
        config.redis = Some(url.clone());
        config.redis_config.prefix = format!("kefu-webhook-{}:session:", std::process::id());
    };
    let (a, _dir_a) = server(&platform, with_redis);
    let (b, _dir_b) = server(&platform, with_redis);
    let body = message("m-fleet", "c-fleet", "有什么优惠");
    assert_eq!(post(&a, &body).status, 202);
    let again = post(&b, &body);
    assert_eq!((again.status, again.json()), (200, json!({"status": "duplicate"})));
    platform.wait_for(1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(platform.posted().len(), 1);
    // Another message id is new on either node.
    assert_eq!(post(&b, &message("m-fleet-2", "c-fleet", "有什么优惠")).status, 202);
}

#[test]
fn a_photo_is_taken_in_and_answered_and_a_fake_one_refused() {
    use base64::Engine as _;
    let platform = Platform::start(vec![]);
    let (server, _dir) = server(&platform, |_| {});
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let parcel = include_bytes!("data/photos/parcel.jpg");
    // A photo alone: the demo's `on image` rule (no vision model: no description) hands off.
    let photo = json!({"message_id": "p1", "conversation_id": "c-photo", "images": [{"data": b64(parcel)}]});
    let reply = post_signed(&server, "/v1/channels/shop/messages?wait=true", &photo, now(), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    // (Outside the agents' hours the handoff adds the shop's off-hours words.)
    let text = reply.json()["text"].as_str().unwrap_or_default().to_string();
    assert!(text.starts_with("已收到图片，正在为您转接"), "{text}");
    let detail = server.state.inbox.detail("ch:shop:-:c-photo").expect("in the inbox");
    let images = &detail.messages[0].images;
    assert_eq!(images.len(), 1, "{:?}", detail.messages);
    assert_eq!(
        (images[0].kind.as_str(), images[0].width, images[0].height),
        ("jpeg", 64, 48)
    );
    // A text that calls itself nothing but is sent as a photo: refused by its bytes, JSON,
    // nothing kept; the platform may send the message again, and the conversation goes on.
    let fake = json!({"message_id": "p2", "conversation_id": "c-fake", "text": "看图", "images": [{"data": b64(b"not a photo at all")}]});
    let refused = post(&server, &fake);
    assert_eq!(refused.status, 415, "{}", refused.body);
    assert_eq!(refused.error_type(), "unsupported_image");
    assert!(server.state.inbox.detail("ch:shop:-:c-fake").is_none(), "no turn");
    let again = post(&server, &message("p2", "c-fake", "有什么优惠"));
    assert_eq!(again.status, 202, "{}", again.body);
    // An upload's id is not a channel's.
    let by_id = post(
        &server,
        &json!({"message_id": "p3", "conversation_id": "c-fake", "images": [{"id": "img_00000000000000000000000000000000"}]}),
    );
    assert_eq!(by_id.status, 400, "{}", by_id.body);
}
