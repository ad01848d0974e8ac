//! `kefu serve` on a version store: it serves the live version (not its rules directory),
//! applies a publish, rollback, canary and promote made through the admin API before it
//! answers, refuses bad publishes with JSON errors and changes nothing, never serves a
//! damaged version, lets a request pin a published version; and two nodes on one
//! redis-server follow each other's changes (`#[ignore]`d, names containing `redis`,
//! run by `make test` under tests/support/with-redis.sh).
//!
//! The shop is `tests/data/versions/shop/` (two rules, one conversation test), published
//! from copies in temporary directories.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kefu::server::ServeConfig;
use kefu::versions::draft::{self, PublishOptions};
use kefu::versions::{LocalStore, VersionStore};
use serde_json::{Value, json};
use support::http::{TestServer, eventually};

/// The shop's reply to 发货 before any edit.
const SHIPPING: &str = "亲，付款后 48 小时内发货哦～";

/// A temporary directory with a copy of the test shop (`draft/`) and a state directory.
struct Workspace {
    tmp: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        support::copy_dir(
            &support::root().join("tests/data/versions/shop"),
            &tmp.path().join("draft"),
        );
        Workspace { tmp }
    }

    fn draft(&self) -> PathBuf {
        self.tmp.path().join("draft")
    }

    fn state(&self, node: &str) -> PathBuf {
        self.tmp.path().join(format!("state-{node}"))
    }

    /// The draft's files as the admin API takes them, with `from` replaced by `to` in
    /// `shop.kefu`.
    fn files_with(&self, from: &str, to: &str) -> Value {
        let files = draft::read_dir(&self.draft()).unwrap();
        let mut out = serde_json::Map::new();
        for (path, bytes) in files {
            let mut text = String::from_utf8(bytes).unwrap();
            if path == "shop.kefu" {
                assert!(text.contains(from), "{from} is not in shop.kefu");
                text = text.replace(from, to);
            }
            out.insert(path, Value::String(text));
        }
        Value::Object(out)
    }

    /// A node serving `store`, with its own state directory and a rules directory that is
    /// not the shop (so an answer from the shop proves the store serves).
    fn node(&self, name: &str, store: Arc<dyn VersionStore>) -> TestServer {
        TestServer::start(self.config(name, store))
    }

    fn config(&self, name: &str, store: Arc<dyn VersionStore>) -> ServeConfig {
        let mut config = ServeConfig::new(support::root().join("rules"));
        config.watch = false;
        config.tickets.state_dir = Some(self.state(name));
        config.versions = Some(store);
        config
    }
}

/// A workspace, its local store with the shop published as version 1, and a node on it.
fn started() -> (Workspace, Arc<dyn VersionStore>, kefu::versions::Version, TestServer) {
    let ws = Workspace::new();
    let store: Arc<dyn VersionStore> = Arc::new(LocalStore::open(&ws.state("store")).unwrap());
    let first = publish_draft(store.as_ref(), &ws.draft(), "first");
    let server = ws.node("a", Arc::clone(&store));
    (ws, store, first, server)
}

fn publish_draft(store: &dyn VersionStore, dir: &Path, message: &str) -> kefu::versions::Version {
    let options = PublishOptions {
        message: message.into(),
        author: "test".into(),
        ..PublishOptions::default()
    };
    draft::publish(store, dir, &options)
        .unwrap_or_else(|e| panic!("{e}"))
        .version
}

/// The reply to 什么时候发货 in a new conversation, and the rules version that gave it.
fn shipping(server: &TestServer, session: &str) -> (String, String) {
    let body = server.chat(session, "什么时候发货");
    (
        body["reply"].as_str().unwrap_or_default().to_string(),
        body["rules_version"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn serve_answers_from_the_live_version_and_applies_publish_and_rollback_at_once() {
    let (ws, store, first, server) = started();

    // The live version serves, not the demo shop in --rules.
    assert_eq!(shipping(&server, "s1"), (SHIPPING.to_string(), first.rules.clone()));
    let rules = server.get("/admin/rules").json();
    assert_eq!(rules["store"]["live"], 1, "{rules}");

    let published = server.post(
        "/admin/publish",
        &json!({
            "files": ws.files_with("发货哦～", "发货哦，周末也发～"),
            "message": "发货提速",
            "author": "小王",
            "parent": 1,
        }),
    );
    assert_eq!(published.status, 201, "{}", published.body);
    let second = published.json()["version"].clone();
    assert_eq!(second["id"], 2);
    assert_eq!(second["parent"], 1);
    assert_eq!(second["author"], "小王");
    assert_eq!(second["tests"]["passed"], 1);
    // Applied before the answer: the very next turn is the new version's.
    let (reply, version) = shipping(&server, "s2");
    assert!(reply.contains("周末也发"), "{reply}");
    assert_eq!(version, second["rules"].as_str().unwrap());

    let listed = server.get("/admin/versions").json();
    assert_eq!(listed["live"], 2);
    assert_eq!(listed["versions"][0]["id"], 2, "newest first: {listed}");

    let diff = server.get("/admin/diff?from=1&to=live").json();
    assert_eq!(diff["files"][0]["path"], "shop.kefu");
    assert_eq!(diff["files"][0]["change"], "changed");
    let text = diff["files"][0]["diff"].as_str().unwrap();
    assert!(
        text.contains("-  reply \"亲，付款后 48 小时内发货哦～")
            && text.contains("+  reply \"亲，付款后 48 小时内发货哦，周末也发～"),
        "{text}"
    );

    let file = server.get("/admin/versions/1?file=shop.kefu").json();
    assert!(file["text"].as_str().unwrap().contains("48 小时内发货"));

    // A rollback publishes the first content again, as version 3.
    let rolled = server.post("/admin/rollback", &json!({}));
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    assert_eq!(rolled.json()["version"]["rollback_of"], 1);
    assert_eq!(shipping(&server, "s3"), (SHIPPING.to_string(), first.rules.clone()));
    // History only grows.
    assert_eq!(store.list().unwrap().len(), 3);
}

#[test]
fn refused_publishes_are_json_and_change_nothing() {
    let (ws, store, first, server) = started();

    let broken = server.post(
        "/admin/publish",
        &json!({ "files": ws.files_with("reply \"您好", "reply \"您好 {"), "message": "坏了" }),
    );
    assert_eq!(broken.status, 422, "{}", broken.body);
    assert_eq!(broken.error_type(), "rules_invalid");
    let report = broken.json()["error"]["report"].as_str().unwrap().to_string();
    // Paths are the draft's own, with line and column, not the server's temporary one.
    assert!(report.contains("shop.kefu:"), "{report}");
    assert!(!report.contains("kefu-draft-"), "{report}");

    let failing = server.post(
        "/admin/publish",
        &json!({ "files": ws.files_with("48 小时内发货", "三天内发货"), "message": "测试会失败" }),
    );
    assert_eq!(failing.status, 422, "{}", failing.body);
    assert_eq!(failing.error_type(), "tests_failed");
    assert_eq!(failing.json()["error"]["failed"], 1);

    let stale = server.post(
        "/admin/publish",
        &json!({ "files": ws.files_with("发货哦～", "发货哦，周末也发～"), "message": "x", "parent": 7 }),
    );
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert_eq!(stale.error_type(), "conflict");
    assert!(
        stale.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kefu diff 7 1")
    );

    for (path, body, kind) in [
        (
            "/admin/publish",
            json!({ "files": {"../x.kefu": ""}, "message": "x" }),
            "invalid_request",
        ),
        (
            "/admin/publish",
            json!({ "files": {}, "message": " " }),
            "invalid_request",
        ),
        ("/admin/canary", json!({ "version": 1 }), "invalid_request"),
        ("/admin/canary", json!({ "version": 1, "percent": 10 }), "invalid"),
        ("/admin/promote", json!({}), "invalid"),
    ] {
        let reply = server.post(path, &body);
        assert!((400..500).contains(&reply.status), "{path} {body}: {}", reply.body);
        assert_eq!(reply.error_type(), kind, "{path} {body}: {}", reply.body);
    }
    assert_eq!(server.get("/admin/versions/9").error_type(), "no_such_version");
    assert_eq!(server.get("/admin/versions/x").status, 400);

    // Nothing changed.
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(store.pointers().unwrap().live, Some(1));
    assert_eq!(shipping(&server, "s1"), (SHIPPING.to_string(), first.rules));
}

#[test]
fn without_a_store_the_version_routes_say_so() {
    let mut config = ServeConfig::new(support::root().join("tests/data/versions/shop"));
    config.watch = false;
    let server = TestServer::start(config);
    for path in ["/admin/versions", "/admin/versions/live", "/admin/diff?from=1"] {
        let reply = server.get(path);
        assert_eq!(
            (reply.status, reply.error_type()),
            (404, "no_version_store".to_string()),
            "{path}"
        );
    }
}

#[test]
fn an_empty_store_serves_the_rules_directory_until_the_first_publish() {
    let ws = Workspace::new();
    let store: Arc<dyn VersionStore> = Arc::new(LocalStore::open(&ws.state("store")).unwrap());
    let mut config = ws.config("a", Arc::clone(&store));
    config.rules = ws.draft();
    let server = TestServer::start(config);
    assert_eq!(shipping(&server, "s1").0, SHIPPING);
    assert_eq!(server.get("/admin/rules").json()["store"]["live"], Value::Null);

    let published = server.post(
        "/admin/publish",
        &json!({ "files": ws.files_with("发货哦～", "发货哦，周末也发～"), "message": "第一版" }),
    );
    assert_eq!(published.status, 201, "{}", published.body);
    assert!(shipping(&server, "s2").0.contains("周末也发"));
    // From now on the store serves: a reload does not go back to the directory.
    assert_eq!(server.post("/admin/reload", &json!({})).status, 200);
    assert!(shipping(&server, "s3").0.contains("周末也发"));
}

#[test]
fn a_damaged_version_is_reported_and_never_served() {
    let ws = Workspace::new();
    let local = LocalStore::open(&ws.state("store")).unwrap();
    let blobs = local.root().join("blobs");
    let store: Arc<dyn VersionStore> = Arc::new(local);
    let first = publish_draft(store.as_ref(), &ws.draft(), "first");
    let text = std::fs::read_to_string(ws.draft().join("shop.kefu")).unwrap();
    std::fs::write(
        ws.draft().join("shop.kefu"),
        text.replace("发货哦～", "发货哦，周末也发～"),
    )
    .unwrap();
    // Version 2 published and one of its blobs damaged before any node sees it: the live
    // pointer is put back on version 1 while the node starts, then moved to 2.
    let second = publish_draft(store.as_ref(), &ws.draft(), "second");
    let sha = &second.files["shop.kefu"].sha256;
    std::fs::write(blobs.join(&sha[..2]).join(sha), "shop \"假的\" {}").unwrap();
    let move_live = |to: u64| {
        let pointers = store.pointers().unwrap();
        let moved = kefu::versions::Pointers {
            live: Some(to),
            ..pointers.clone()
        };
        store.set_pointers(pointers.serial, moved).unwrap();
    };
    move_live(1);
    let server = ws.node("a", Arc::clone(&store));
    assert_eq!(shipping(&server, "s0").1, first.rules);
    move_live(2);

    let reload = server.post("/admin/reload", &json!({}));
    assert_eq!(reload.status, 422, "{}", reload.body);
    let status = server.get("/admin/rules").json();
    let error = status["store"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("damaged") && error.contains("shop.kefu"), "{status}");
    assert_eq!(status["store"]["live"], 1);
    assert_eq!(shipping(&server, "s1"), (SHIPPING.to_string(), first.rules));
}

#[test]
fn the_follower_notices_a_publish_made_beside_it_within_its_interval() {
    let ws = Workspace::new();
    let store: Arc<dyn VersionStore> = Arc::new(LocalStore::open(&ws.state("store")).unwrap());
    publish_draft(store.as_ref(), &ws.draft(), "first");
    let server = ws.node("a", Arc::clone(&store));
    let text = std::fs::read_to_string(ws.draft().join("shop.kefu")).unwrap();
    std::fs::write(
        ws.draft().join("shop.kefu"),
        text.replace("发货哦～", "发货哦，周末也发～"),
    )
    .unwrap();
    // `kefu publish --state-dir` on the same host: no message reaches the server, its
    // once-a-second look finds it.
    let second = publish_draft(store.as_ref(), &ws.draft(), "second");
    let started = Instant::now();
    let mut n = 0;
    assert!(
        eventually(Duration::from_secs(20), || {
            n += 1;
            shipping(&server, &format!("poll-{n}")).1 == second.rules
        }),
        "the server never served version 2"
    );
    eprintln!(
        "switched {:.2} s after a publish beside it",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_canary_serves_its_share_of_conversations_each_for_the_whole_conversation_then_promote() {
    let (ws, store, first, server) = started();
    let published = server.post(
        "/admin/publish",
        &json!({ "files": ws.files_with("发货哦～", "发货哦，周末也发～"), "message": "灰度", "canary": 30 }),
    );
    assert_eq!(published.status, 201, "{}", published.body);
    let candidate = published.json()["version"]["rules"].as_str().unwrap().to_string();

    let mut on_canary = 0;
    for i in 0..400 {
        let session = format!("c{i}");
        let first_turn = server.chat(&session, "什么时候发货");
        let role = first_turn["rules_role"].as_str().unwrap().to_string();
        let reply = first_turn["reply"].as_str().unwrap();
        assert_eq!(role == "canary", reply.contains("周末也发"), "{first_turn}");
        if role == "canary" {
            on_canary += 1;
            assert_eq!(first_turn["rules_version"], candidate.as_str());
        } else {
            assert_eq!(first_turn["rules_version"], first.rules.as_str());
        }
        // The same conversation stays on its version.
        let again = server.chat(&session, "你好");
        assert_eq!(again["rules_role"], role.as_str());
    }
    assert!((80..=160).contains(&on_canary), "{on_canary} of 400 on a 30% canary");

    // A publish waits for the canary to end.
    let refused = server.post(
        "/admin/publish",
        &json!({ "files": ws.files_with("48 小时内发货", "12 小时内发货"), "message": "x" }),
    );
    assert_eq!(refused.error_type(), "canary_running");

    // Both versions have their own figures.
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains(&format!("version=\"{candidate}\"")),
        "no series for the candidate"
    );

    assert_eq!(server.post("/admin/promote", &json!({})).status, 200);
    for i in 0..20 {
        let body = server.chat(&format!("p{i}"), "什么时候发货");
        assert_eq!(body["rules_role"], "live");
        assert!(body["reply"].as_str().unwrap().contains("周末也发"));
    }
    let promoted = store.version(2).unwrap();
    assert!(
        promoted.notes.iter().any(|n| n.kind == "promoted"),
        "{:?}",
        promoted.notes
    );
}

#[test]
fn a_request_may_pin_a_published_version_and_only_a_published_one() {
    let (ws, _store, first, server) = started();
    let published = server.post(
        "/admin/publish",
        &json!({ "files": ws.files_with("发货哦～", "发货哦，周末也发～"), "message": "second" }),
    );
    assert_eq!(published.status, 201, "{}", published.body);

    // Version 1 no longer serves, but a tester may still ask it (built from the store).
    let pinned = server.post(
        "/v1/chat",
        &json!({ "session_id": "t1", "message": "什么时候发货", "rules_version": first.rules }),
    );
    assert_eq!(pinned.status, 200, "{}", pinned.body);
    let body = pinned.json();
    assert_eq!(
        (body["rules_role"].as_str(), body["reply"].as_str()),
        (Some("pinned"), Some(SHIPPING))
    );

    let unknown = server.post(
        "/v1/chat",
        &json!({ "session_id": "t2", "message": "什么时候发货", "rules_version": "0123456789ab" }),
    );
    assert_eq!(
        (unknown.status, unknown.error_type()),
        (404, "unknown_rules_version".to_string()),
        "{}",
        unknown.body
    );
}

#[test]
fn the_guard_rolls_a_canary_back_when_it_hands_off_far_more_than_live() {
    let ws = Workspace::new();
    let store: Arc<dyn VersionStore> = Arc::new(LocalStore::open(&ws.state("store")).unwrap());
    publish_draft(store.as_ref(), &ws.draft(), "first");
    let mut config = ws.config("a", Arc::clone(&store));
    config.canary = kefu::server::canary::GuardConfig {
        auto_rollback: true,
        min_turns: 20,
        ..kefu::server::canary::GuardConfig::default()
    };
    config.limits.rate_per_session = 0;
    let server = TestServer::start(config);
    // The candidate hands every shipping question to a person.
    let files = ws.files_with(
        "reply \"亲，付款后 48 小时内发货哦～\"",
        "reply \"亲，付款后 48 小时内发货哦～\"\n  handoff \"发货问题转人工\"",
    );
    let published = server.post(
        "/admin/publish",
        &json!({ "files": files, "message": "转人工", "canary": 50, "force": true }),
    );
    assert_eq!(published.status, 201, "{}", published.body);
    let mut i = 0;
    let ended = eventually(Duration::from_secs(30), || {
        for _ in 0..20 {
            i += 1;
            server.chat(&format!("g{i}"), "什么时候发货");
        }
        store.pointers().unwrap().canary.is_none()
    });
    assert!(ended, "the guard never rolled the canary back");
    // The guard records its decision right after the pointers moved (never before: a
    // rollback that failed must not be noted as done), so the note may trail them a little.
    let automatic = || {
        store
            .version(2)
            .unwrap()
            .notes
            .into_iter()
            .find(|n| n.kind == "automatic rollback")
    };
    assert!(
        eventually(Duration::from_secs(5), || automatic().is_some()),
        "the decision is recorded on the candidate"
    );
    let note = automatic().unwrap();
    assert!(note.text.contains("handoff"), "{}", note.text);
    assert!(note.figures["candidate_handoff_rate"] > note.figures["live_handoff_rate"]);
    // Everyone is on live again.
    assert!(eventually(
        Duration::from_secs(5),
        || server.chat("after", "你好")["rules_role"] == "live"
    ));
}

/// Two nodes on one redis-server, each with its own state directory.
fn redis_pair(ws: &Workspace, url: &str) -> (Arc<kefu::versions::RedisVersionStore>, TestServer, TestServer) {
    let store = Arc::new(kefu::versions::RedisVersionStore::connect(url).unwrap());
    let node = |name: &str| {
        let mut config = ws.config(name, store.clone());
        config.versions_subscribe = Some(Arc::new(kefu::versions::RedisVersionStore::connect(url).unwrap()));
        TestServer::start(config)
    };
    let (a, b) = (node("a"), node("b"));
    (store, a, b)
}

#[test]
#[ignore = "needs redis-server (tests/support/redis.rs starts one of its own)"]
fn redis_two_nodes_follow_a_publish_a_canary_and_a_rollback_made_on_one() {
    let redis = support::redis::OwnRedis::start();
    let ws = Workspace::new();
    let (store, a, b) = redis_pair(&ws, &redis.url());
    publish_draft(store.as_ref(), &ws.draft(), "first");
    // The nodes started before the first publish serve their directories; the publish
    // reaches them by pub/sub.
    assert!(eventually(Duration::from_secs(10), || shipping(&b, "b0").0 == SHIPPING));

    let published = a.post(
        "/admin/publish",
        &json!({ "files": ws.files_with("发货哦～", "发货哦，周末也发～"), "message": "提速" }),
    );
    assert_eq!(published.status, 201, "{}", published.body);
    let started = Instant::now();
    let mut n = 0;
    assert!(eventually(Duration::from_secs(10), || {
        n += 1;
        shipping(&b, &format!("b{n}")).0.contains("周末也发")
    }));
    eprintln!(
        "node b served the publish made on node a after {:.3} s",
        started.elapsed().as_secs_f64()
    );

    // A canary: one conversation gets the same version on both nodes.
    let rolled = a.post("/admin/rollback", &json!({}));
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    assert!(eventually(Duration::from_secs(10), || shipping(
        &b,
        &format!("r{}", Instant::now().elapsed().as_nanos())
    )
    .0 == SHIPPING));
    let canary = a.post("/admin/canary", &json!({ "version": 2, "percent": 40 }));
    assert_eq!(canary.status, 200, "{}", canary.body);
    assert!(eventually(
        Duration::from_secs(10),
        || b.get("/admin/rules").json()["store"]["canary"][0] == 2
    ));
    let mut split = 0;
    for i in 0..200 {
        let session = format!("k{i}");
        let (on_a, on_b) = (a.chat(&session, "什么时候发货"), b.chat(&session, "什么时候发货"));
        assert_eq!(on_a["rules_version"], on_b["rules_version"], "{session}");
        assert_eq!(on_a["rules_role"], on_b["rules_role"], "{session}");
        if on_a["rules_role"] == "canary" {
            split += 1;
        }
    }
    assert!((40..=120).contains(&split), "{split} of 200 on a 40% canary");

    // Rolled back on b: a stops serving the canary.
    assert_eq!(b.post("/admin/rollback", &json!({})).status, 200);
    assert!(eventually(Duration::from_secs(10), || {
        a.get("/admin/rules").json()["store"]["canary"].is_null()
    }));
    assert!(a.chat("after", "什么时候发货")["rules_role"] == "live");

    // A node started now serves the live version.
    let late = {
        let mut config = ws.config("c", store.clone());
        config.versions_subscribe = Some(Arc::new(
            kefu::versions::RedisVersionStore::connect(&redis.url()).unwrap(),
        ));
        TestServer::start(config)
    };
    assert_eq!(shipping(&late, "late").0, SHIPPING);
}
