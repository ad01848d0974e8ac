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
        copy_dir(&support::root().join("tests/data/versions/shop"), &tmp.path().join("draft"));
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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn publish_draft(store: &dyn VersionStore, dir: &Path, message: &str) -> kefu::versions::Version {
    let options = PublishOptions {
        message: message.into(),
        author: "test".into(),
        ..PublishOptions::default()
    };
    draft::publish(store, dir, &options).unwrap_or_else(|e| panic!("{e}")).version
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
    let ws = Workspace::new();
    let store: Arc<dyn VersionStore> = Arc::new(LocalStore::open(&ws.state("store")).unwrap());
    let first = publish_draft(store.as_ref(), &ws.draft(), "first");
    let server = ws.node("a", Arc::clone(&store));

    // The live version serves, not the demo shop in --rules.
    assert_eq!(shipping(&server, "s1"), (SHIPPING.to_string(), first.rules.clone()));
    let rules = server.get("/admin/rules").json();
    assert_eq!(rules["store"]["live"], 1, "{rules}");

    let published = server.post(
        "/admin/publish",
        &json!({
            "files": ws.files_with("48 小时内发货", "24 小时内发货"),
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
    assert!(reply.contains("24 小时"), "{reply}");
    assert_eq!(version, second["rules"].as_str().unwrap());

    let listed = server.get("/admin/versions").json();
    assert_eq!(listed["live"], 2);
    assert_eq!(listed["versions"][0]["id"], 2, "newest first: {listed}");

    let diff = server.get("/admin/diff?from=1&to=live").json();
    assert_eq!(diff["files"][0]["path"], "shop.kefu");
    assert_eq!(diff["files"][0]["change"], "changed");
    let text = diff["files"][0]["diff"].as_str().unwrap();
    assert!(text.contains("-  reply \"亲，付款后 48") && text.contains("+  reply \"亲，付款后 24"), "{text}");

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
    let ws = Workspace::new();
    let store: Arc<dyn VersionStore> = Arc::new(LocalStore::open(&ws.state("store")).unwrap());
    let first = publish_draft(store.as_ref(), &ws.draft(), "first");
    let server = ws.node("a", Arc::clone(&store));

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
        &json!({ "files": ws.files_with("48 小时内发货", "24 小时内发货"), "message": "x", "parent": 7 }),
    );
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert_eq!(stale.error_type(), "conflict");
    assert!(stale.json()["error"]["message"].as_str().unwrap().contains("kefu diff 7 1"));

    for (path, body, kind) in [
        ("/admin/publish", json!({ "files": {"../x.kefu": ""}, "message": "x" }), "invalid_request"),
        ("/admin/publish", json!({ "files": {}, "message": " " }), "invalid_request"),
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
        assert_eq!((reply.status, reply.error_type()), (404, "no_version_store".to_string()), "{path}");
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
        &json!({ "files": ws.files_with("48 小时内发货", "24 小时内发货"), "message": "第一版" }),
    );
    assert_eq!(published.status, 201, "{}", published.body);
    assert!(shipping(&server, "s2").0.contains("24 小时"));
    // From now on the store serves: a reload does not go back to the directory.
    assert_eq!(server.post("/admin/reload", &json!({})).status, 200);
    assert!(shipping(&server, "s3").0.contains("24 小时"));
}

#[test]
fn a_damaged_version_is_reported_and_never_served() {
    let ws = Workspace::new();
    let local = LocalStore::open(&ws.state("store")).unwrap();
    let blobs = local.root().join("blobs");
    let store: Arc<dyn VersionStore> = Arc::new(local);
    let first = publish_draft(store.as_ref(), &ws.draft(), "first");
    let server = ws.node("a", Arc::clone(&store));

    // Version 2 published beside the server, then one of its blobs damaged before the
    // server looks.
    let text = std::fs::read_to_string(ws.draft().join("shop.kefu")).unwrap();
    std::fs::write(ws.draft().join("shop.kefu"), text.replace("48 小时内发货", "24 小时内发货")).unwrap();
    let second = publish_draft(store.as_ref(), &ws.draft(), "second");
    let sha = &second.files["shop.kefu"].sha256;
    std::fs::write(blobs.join(&sha[..2]).join(sha), "shop \"假的\" {}").unwrap();

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
    std::fs::write(ws.draft().join("shop.kefu"), text.replace("48 小时内发货", "24 小时内发货")).unwrap();
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
    eprintln!("switched {:.2} s after a publish beside it", started.elapsed().as_secs_f64());
}
