//! The agent workspace's service over real loopback sockets, on the demo shop: a handed-off
//! conversation listed under waiting with its reason, the filters, the inbox stream (a
//! snapshot, then pushes), one conversation in full, takeover / reply / note / release /
//! resolve, `held_by_other`, the customer's channel (agents' messages once and in order,
//! across reconnects with `Last-Event-ID`, live; a wrong token and an unknown session the
//! same 404), the grace time (an agent gone: their conversation waits again), the agent
//! figures in `/metrics`, and the permissions (a viewer refused, an agent allowed).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use kefu::server::ServeConfig;
use kefu::server::users::{Role, User, UsersFile, hash_password};
use serde_json::{Value, json};
use support::http::{Reply, TestServer, eventually};

const PASSWORD: &str = "很长的密码 correct horse";
/// The demo shop hands this off (rule 投诉, reason 客户投诉).
const ANGRY: &str = "说好今天发货又没发 再不处理我就打12315投诉你们";

/// The demo shop with its queues open around the clock, in a temporary directory that must
/// outlive the server. The demo's queues answer 09:00-23:00 Shanghai time, and a handoff
/// outside them is an off-hours ticket rather than a wait: these tests are about the inbox
/// and must not depend on the hour they run at (tests/queues.rs tests the hours).
fn config() -> (ServeConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    support::copy_dir(&support::root().join("rules"), &rules);
    let queues = rules.join("queues.kefu");
    let text = std::fs::read_to_string(&queues).unwrap();
    let mut kept = Vec::new();
    let mut in_hours = false;
    for line in text.lines() {
        // `hours "…"` and `off_hours "…"` with their `en "…"` continuation lines.
        if line.starts_with("  hours ") || line.starts_with("  off_hours ") {
            in_hours = true;
        } else if !(in_hours && line.starts_with("    ")) {
            in_hours = false;
            kept.push(line);
        }
    }
    assert!(
        kept.len() + 6 <= text.lines().count(),
        "queues.kefu has hours to take out"
    );
    std::fs::write(&queues, kept.join("\n")).unwrap();
    let mut config = ServeConfig::new(rules);
    config.watch = false;
    (config, dir)
}

/// An event stream read off a raw socket as it arrives.
struct Stream {
    socket: TcpStream,
    seen: String,
}

impl Stream {
    fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Stream {
        let mut socket = TcpStream::connect(addr).unwrap();
        let mut head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        socket.write_all(head.as_bytes()).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Stream {
            socket,
            seen: String::new(),
        }
    }

    /// Reads until `needle` has been seen (anywhere since the start) or `timeout` passes.
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

    /// The `id:` lines seen so far, in order.
    fn ids(&self) -> Vec<u64> {
        self.seen
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|id| id.trim().parse().unwrap())
            .collect()
    }
}

fn chat(server: &TestServer, session: &str, message: &str) -> Value {
    server.chat(session, message)
}

fn post(server: &TestServer, path: &str, body: Value) -> Reply {
    server.post(path, &body)
}

#[test]
fn a_handed_off_conversation_waits_then_is_taken_answered_noted_and_released() {
    let (config, _rules) = config();
    let server = TestServer::start(config);
    chat(&server, "bot-1", "这件T恤洗了会缩水吗");
    let answer = chat(&server, "angry-1", ANGRY);
    assert_eq!(answer["source"], "handoff", "{answer}");

    let inbox = server.get("/admin/inbox?state=waiting").json();
    let rows = inbox["conversations"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{inbox}");
    assert_eq!(rows[0]["id"], "angry-1");
    assert_eq!(rows[0]["reason"], "客户投诉");
    assert_eq!(rows[0]["state"], "waiting");
    assert!(rows[0]["waiting_ms"].as_i64().unwrap() >= 0);
    assert_eq!(inbox["counts"]["waiting"], 1);
    assert_eq!(inbox["counts"]["bot"], 1);
    let all = server.get("/admin/inbox").json();
    assert_eq!(all["conversations"].as_array().unwrap().len(), 2);
    let found = server.get("/admin/inbox?q=ANGRY").json();
    assert_eq!(found["conversations"].as_array().unwrap().len(), 1);
    assert_eq!(server.get("/admin/inbox?state=later").status, 400);

    // The conversation in full: its messages, the bot's turn with its trace.
    let detail = server.get("/admin/inbox/angry-1").json();
    assert_eq!(detail["summary"]["state"], "waiting");
    assert_eq!(detail["messages"][0]["role"], "user");
    assert_eq!(detail["turns"][0]["rule"], "投诉");
    assert!(!detail["turns"][0]["trace"].as_array().unwrap().is_empty());
    assert_eq!(server.get("/admin/inbox/nobody").status, 404);

    let taken = post(&server, "/v1/sessions/angry-1/takeover", json!({"agent": "小王"}));
    assert_eq!(taken.status, 200, "{}", taken.body);
    let row = &server.get("/admin/inbox?state=agent").json()["conversations"][0];
    assert_eq!(
        (row["agent"].as_str(), row["state"].as_str()),
        (Some("小王"), Some("agent"))
    );

    // Another agent is refused, unless they force it.
    let refused = post(&server, "/v1/sessions/angry-1/takeover", json!({"agent": "小李"}));
    assert_eq!((refused.status, refused.error_type().as_str()), (409, "held_by_other"));
    assert_eq!(refused.json()["error"]["agent"], "小王");
    let refused = post(
        &server,
        "/v1/sessions/angry-1/reply",
        json!({"agent": "小李", "text": "我来"}),
    );
    assert_eq!(refused.status, 409, "{}", refused.body);

    let replied = post(
        &server,
        "/v1/sessions/angry-1/reply",
        json!({"agent": "小王", "text": "您好，我是小王"}),
    );
    assert_eq!(replied.status, 200, "{}", replied.body);
    // The customer's next message is not the bot's to answer.
    let queued = chat(&server, "angry-1", "快点");
    assert_eq!(
        (queued["source"].as_str(), queued["reply"].as_str()),
        (Some("human"), Some(""))
    );
    let noted = post(
        &server,
        "/v1/sessions/angry-1/note",
        json!({"agent": "小王", "text": "老客户，先补偿"}),
    );
    assert_eq!(noted.status, 200, "{}", noted.body);
    assert_eq!(
        post(&server, "/v1/sessions/angry-1/note", json!({"text": " "})).status,
        400
    );
    let detail = server.get("/admin/inbox/angry-1").json();
    assert_eq!(detail["notes"][0]["text"], "老客户，先补偿");
    let texts: Vec<&str> = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(texts.ends_with(&["您好，我是小王", "快点"]), "{texts:?}");

    let bad = post(&server, "/v1/sessions/angry-1/release", json!({"flow": "later"}));
    assert_eq!(bad.status, 400);
    let released = post(
        &server,
        "/v1/sessions/angry-1/release",
        json!({"flow": "cancel", "agent": "小王"}),
    );
    assert_eq!(released.status, 200, "{}", released.body);
    assert_eq!(server.get("/admin/inbox/angry-1").json()["summary"]["state"], "bot");
    let answered = chat(&server, "angry-1", "这件T恤洗了会缩水吗");
    assert_ne!(answered["source"], "human", "{answered}");

    // Resolved by hand; the outcome is bounded.
    post(&server, "/v1/sessions/angry-1/takeover", json!({"agent": "小王"}));
    assert_eq!(
        post(&server, "/v1/sessions/angry-1/resolve", json!({"outcome": ""})).status,
        400
    );
    let resolved = post(
        &server,
        "/v1/sessions/angry-1/resolve",
        json!({"outcome": "已补偿", "agent": "小王"}),
    );
    assert_eq!(resolved.status, 200, "{}", resolved.body);
    assert_eq!(
        server.get("/admin/inbox/angry-1").json()["summary"]["state"],
        "resolved"
    );
    assert_eq!(
        server.get("/admin/inbox?state=resolved").json()["counts"]["resolved"],
        1
    );

    let metrics = server.get("/metrics").body;
    for series in [
        "kefu_conversations{state=\"resolved\"} 1",
        // The complaint rule's handoff goes to the demo's 售后 queue (its `for`); the
        // takeover of the bot's conversation has no queue.
        "kefu_handoffs_total{kind=\"rule\",group=\"售后\"} 1",
        "kefu_handoffs_total{kind=\"agent\",group=\"none\"} 1",
        "kefu_agent_handling_seconds_count{group=\"售后\"} 1",
        "kefu_agent_handling_seconds_count{group=\"none\"} 1",
        "kefu_handoff_wait_seconds_count{group=\"售后\"} 1",
        "kefu_inbox_push_seconds_count",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

#[test]
fn the_inbox_stream_sends_a_snapshot_then_each_change_within_a_second() {
    let (config, _rules) = config();
    let server = TestServer::start(config);
    chat(&server, "early", "这件T恤洗了会缩水吗");
    let mut stream = Stream::open(server.addr, "/admin/inbox/stream", &[]);
    assert!(
        stream.until("event: snapshot", Duration::from_secs(5)),
        "{}",
        stream.seen
    );
    assert!(stream.seen.contains("\"early\""), "{}", stream.seen);
    let started = Instant::now();
    chat(&server, "angry-2", ANGRY);
    assert!(stream.until("客户投诉", Duration::from_secs(1)), "{}", stream.seen);
    let took = started.elapsed();
    assert!(stream.seen.contains("event: conversation"), "{}", stream.seen);
    assert!(stream.seen.contains("event: message"), "{}", stream.seen);
    assert!(stream.seen.contains("event: turn"), "{}", stream.seen);
    println!("customer message to the inbox stream: {took:?} (the turn included)");
    post(&server, "/v1/sessions/angry-2/note", json!({"text": "看一下订单"}));
    assert!(stream.until("event: note", Duration::from_secs(1)), "{}", stream.seen);
}

#[test]
fn the_customer_channel_delivers_agents_messages_once_in_order_across_reconnects() {
    let (config, _rules) = config();
    let server = TestServer::start(config);
    let answer = chat(&server, "c1", ANGRY);
    let token = answer["session_token"].as_str().unwrap().to_string();
    let path = |rest: &str| format!("/v1/sessions/c1/{rest}");
    // A wrong token and an unknown session are the same 404.
    let wrong = server.get(&path("messages?token=nope"));
    let unknown = server.get(&format!("/v1/sessions/nobody/messages?token={token}"));
    assert_eq!((wrong.status, unknown.status), (404, 404));
    assert_eq!(wrong.json()["error"]["type"], unknown.json()["error"]["type"]);
    assert_eq!(server.get(&path("events")).status, 404);

    // Live first: the stream opens, the agent writes.
    let mut live = Stream::open(server.addr, &path(&format!("events?token={token}")), &[]);
    assert!(live.until("event: state", Duration::from_secs(5)), "{}", live.seen);
    assert!(live.seen.contains("\"waiting\""), "{}", live.seen);
    post(&server, "/v1/sessions/c1/takeover", json!({"agent": "小王"}));
    for text in ["第一条", "第二条", "第三条"] {
        let r = post(&server, "/v1/sessions/c1/reply", json!({"text": text}));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(live.until("第三条", Duration::from_secs(2)), "{}", live.seen);
    assert!(live.seen.contains("\"agent\""), "the state changed: {}", live.seen);
    let ids = live.ids();
    assert_eq!(ids.len(), 3, "{}", live.seen);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let (first, second) = (ids[0], ids[1]);

    // Reconnecting after the first: the other two, once each, from the history.
    let mut again = Stream::open(
        server.addr,
        &path("events"),
        &[("x-kefu-session-token", &token), ("last-event-id", &first.to_string())],
    );
    assert!(again.until("第三条", Duration::from_secs(2)), "{}", again.seen);
    assert!(!again.seen.contains("第一条"), "{}", again.seen);
    assert_eq!(again.ids(), &ids[1..]);
    // And the poll says the same.
    let polled = server
        .get(&path(&format!("messages?token={token}&after={second}")))
        .json();
    let texts: Vec<&str> = polled["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["第三条"]);
    assert_eq!(polled["state"], "agent");
    // The customer's own messages and the bot's answers are not on this channel.
    assert!(!live.seen.contains("12315"), "{}", live.seen);

    // At most four streams per conversation.
    let _more: Vec<Stream> = (0..2)
        .map(|_| {
            let mut s = Stream::open(server.addr, &path(&format!("events?token={token}")), &[]);
            assert!(s.until("event: state", Duration::from_secs(5)), "{}", s.seen);
            s
        })
        .collect();
    let refused = server.get(&path(&format!("events?token={token}")));
    assert_eq!(refused.status, 429, "{}", refused.body);
}

fn add_user(path: &Path, name: &str, role: Role) {
    let mut file = UsersFile::load(path).unwrap().unwrap_or_default();
    file.users.retain(|u| u.name != name);
    file.users.push(User {
        name: name.into(),
        role,
        password_hash: hash_password(PASSWORD).unwrap(),
        created: "2026-12-06T00:00:00Z".into(),
    });
    file.save(path).unwrap();
}

/// Signs in; the cookie and the CSRF token.
fn login(server: &TestServer, name: &str) -> (String, String) {
    let reply = server.post("/console/api/login", &json!({ "name": name, "password": PASSWORD }));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let cookie = reply
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (cookie, reply.json()["csrf"].as_str().unwrap().to_string())
}

#[test]
fn agents_may_use_the_inbox_viewers_may_not_and_an_agent_gone_past_the_grace_loses_their_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yaml");
    add_user(&users, "小王", Role::Agent);
    add_user(&users, "看看", Role::Viewer);
    let (mut config, _rules) = config();
    config.console.users = Some(users);
    config.agent_grace = Duration::from_millis(700);
    let server = TestServer::start(config);
    chat(&server, "g1", ANGRY);

    let (viewer, _) = login(&server, "看看");
    let refused = server.send("GET", "/admin/inbox", &[("cookie", &viewer)], "");
    assert_eq!((refused.status, refused.error_type().as_str()), (403, "forbidden"));
    assert_eq!(
        server
            .send("GET", "/admin/inbox/stream", &[("cookie", &viewer)], "")
            .status,
        403
    );
    assert_eq!(server.get("/admin/inbox").status, 401);

    let (agent, csrf) = login(&server, "小王");
    let listed = server.send("GET", "/admin/inbox?mine=1", &[("cookie", &agent)], "");
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.json()["me"], "小王");
    assert_eq!(listed.json()["conversations"].as_array().unwrap().len(), 0);
    let mut stream = Stream::open(server.addr, "/admin/inbox/stream", &[("cookie", &agent)]);
    assert!(
        stream.until("event: snapshot", Duration::from_secs(5)),
        "{}",
        stream.seen
    );

    // A write from the console needs the CSRF token; the agent is the signed-in user.
    fn with<'a>(cookie: &'a str, csrf: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
        let mut h = vec![("content-type", "application/json"), ("cookie", cookie)];
        if let Some(csrf) = csrf {
            h.push(("x-csrf-token", csrf));
        }
        h
    }
    let headers = |csrf| with(&agent, csrf);
    assert_eq!(
        server
            .send("POST", "/v1/sessions/g1/takeover", &headers(None), "{}")
            .status,
        403
    );
    let other = server.send(
        "POST",
        "/v1/sessions/g1/takeover",
        &headers(Some(&csrf)),
        r#"{"agent":"别人"}"#,
    );
    assert_eq!(other.status, 403, "{}", other.body);
    let taken = server.send("POST", "/v1/sessions/g1/takeover", &headers(Some(&csrf)), "{}");
    assert_eq!(taken.status, 200, "{}", taken.body);
    assert_eq!(taken.json()["takeover"]["agent"], "小王");
    let mine = server
        .send("GET", "/admin/inbox?mine=1", &[("cookie", &agent)], "")
        .json();
    assert_eq!(mine["conversations"][0]["id"], "g1");
    assert!(
        mine["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "小王" && a["online"] == true && a["holding"] == 1),
        "{mine}"
    );

    // The browser goes away: after the grace time the conversation waits again, and what
    // the customer wrote meanwhile is kept.
    drop(stream);
    chat(&server, "g1", "人呢");
    assert!(
        eventually(Duration::from_secs(5), || {
            server.send("GET", "/admin/inbox/g1", &[("cookie", &agent)], "").json()["summary"]["state"] == "waiting"
        }),
        "requeued after the grace time"
    );
    let session = server.send("GET", "/v1/sessions/g1", &[("cookie", &agent)], "").json();
    assert_eq!(session["takeover"]["agent"], Value::Null, "{session}");
    assert!(
        session["takeover"]["queued"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "人呢"),
        "{session}"
    );

    // Coming back within the grace time keeps them.
    let mut back = Stream::open(server.addr, "/admin/inbox/stream", &[("cookie", &agent)]);
    assert!(back.until("event: snapshot", Duration::from_secs(5)));
    server.send("POST", "/v1/sessions/g1/takeover", &headers(Some(&csrf)), "{}");
    drop(back);
    let mut returned = Stream::open(server.addr, "/admin/inbox/stream", &[("cookie", &agent)]);
    assert!(returned.until("event: snapshot", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(1200));
    let row = server.send("GET", "/admin/inbox/g1", &[("cookie", &agent)], "").json();
    assert_eq!(row["summary"]["state"], "agent", "{row}");
}

/// The measurement the issue asks for: the list route over HTTP with 1,000 live
/// conversations in the hub (a fifth waiting, in two queues), the default page (200) and
/// the whole list (1,000); printed, and bounded loosely (a debug build on a shared host).
#[test]
fn the_inbox_list_route_with_1000_conversations() {
    use kefu::engine::{AnswerSource, Handoff};
    use kefu::server::inbox::{Change, TurnView};
    let (config, _rules) = config();
    let server = TestServer::start(config);
    for i in 0..1000 {
        let handoff = (i % 5 == 0).then(|| Handoff {
            reason: "客户投诉".into(),
            kind: kefu::dialogue::HandoffKind::Anger,
            group: Some(if i % 2 == 0 { "售前" } else { "售后" }.into()),
            ..Handoff::default()
        });
        server.state.inbox.apply(Change::Turn {
            session: format!("customer-{i}"),
            at: i,
            view: TurnView {
                seq: 0,
                message: "我买的衣服什么时候发货，都等了三天了".into(),
                images: Vec::new(),
                reply: "亲，16:00 前付款当天发出，请您稍等".into(),
                source: if handoff.is_some() {
                    AnswerSource::Handoff
                } else {
                    AnswerSource::Rule
                },
                rule: Some("发货时间".into()),
                faq: None,
                flow: None,
                step: None,
                promotion: None,
                intent: Some("物流.发货时间".into()),
                confidence: 0.93,
                emotion: kefu::nlu::Emotion::Neutral,
                trace: Vec::new(),
            },
            handoff,
            turns: 1,
            dropped: false,
            profile: None,
            context: None,
        });
    }
    for (path, rows) in [
        ("/admin/inbox", 200),
        ("/admin/inbox?limit=1000", 1000),
        ("/admin/inbox?state=waiting", 200),
    ] {
        let mut times = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let reply = server.get(path);
            times.push(started.elapsed());
            assert_eq!(reply.status, 200);
            assert_eq!(reply.json()["conversations"].as_array().unwrap().len(), rows, "{path}");
        }
        times.sort();
        println!(
            "GET {path} with 1000 conversations: p50 {:?}, p90 {:?}, max {:?}",
            times[10], times[18], times[19]
        );
        assert!(times[10] < Duration::from_millis(500), "{path}: {:?}", times[10]);
    }
}

/// Two nodes sharing a Redis: a handoff on B shows in A's inbox (pushed), a takeover on A
/// shows in B's and B's bot stays silent, and a node started later fills its inbox from
/// the stored conversations.
#[test]
#[ignore = "needs redis-server (make test runs it)"]
fn two_nodes_share_their_inboxes_through_redis() {
    let redis = support::redis::OwnRedis::start();
    let (shared, _rules) = config();
    let node = || {
        let mut config = shared.clone();
        config.redis = Some(redis.url());
        TestServer::start(config)
    };
    let (a, b) = (node(), node());
    let mut stream = Stream::open(a.addr, "/admin/inbox/stream", &[]);
    assert!(
        stream.until("event: snapshot", Duration::from_secs(5)),
        "{}",
        stream.seen
    );
    chat(&b, "fleet-1", ANGRY);
    assert!(stream.until("客户投诉", Duration::from_secs(2)), "{}", stream.seen);
    assert_eq!(a.get("/admin/inbox/fleet-1").json()["summary"]["state"], "waiting");

    let taken = post(&a, "/v1/sessions/fleet-1/takeover", json!({"agent": "小王"}));
    assert_eq!(taken.status, 200, "{}", taken.body);
    assert!(
        eventually(
            Duration::from_secs(2),
            || b.get("/admin/inbox/fleet-1").json()["summary"]["agent"] == "小王"
        ),
        "the takeover reached the other node"
    );
    let queued = chat(&b, "fleet-1", "人呢");
    assert_eq!(
        (queued["source"].as_str(), queued["reply"].as_str()),
        (Some("human"), Some(""))
    );
    assert!(stream.until("人呢", Duration::from_secs(2)), "{}", stream.seen);

    let late = node();
    assert_eq!(late.get("/admin/inbox/fleet-1").json()["summary"]["state"], "agent");
    assert_eq!(late.get("/admin/inbox?state=agent").json()["counts"]["agent"], 1);
}
