//! The version store (`kefu::versions`) and its commands: publish → list → show → diff →
//! rollback grows history; a broken draft or a failing test is refused and changes
//! nothing (`--force` recorded); two publishes from one parent: the second is a conflict
//! and nothing is lost; a damaged blob is reported and never served; two threads
//! publishing at once, exactly one wins per parent; the same on a real redis-server
//! (`#[ignore]`d, names containing `redis`).
//!
//! Drafts are copies of `tests/data/versions/shop/` in temporary directories.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Barrier};

use kefu::versions::draft::{self, PublishError, PublishOptions, Rollback};
use kefu::versions::{LocalStore, NewVersion, VersionError, VersionStore};

/// A copy of the test shop in a temporary directory (the draft) and a state directory.
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

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn store(&self) -> LocalStore {
        LocalStore::open(&self.state()).unwrap()
    }

    /// Replaces `from` by `to` in a file of the draft.
    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.draft().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from} not in {file}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }

    /// Runs the kefu binary on this workspace's store.
    fn kefu(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_kefu"))
            .args(args)
            .arg("--state-dir")
            .arg(self.state())
            .env("USER", "editor")
            .env_remove("KEFU_REDIS")
            .current_dir(self.tmp.path())
            .output()
            .unwrap();
        let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(&self.tmp.path().display().to_string(), "TMP");
        (out.status.success(), clean(&out.stdout), clean(&out.stderr))
    }
}

fn options(message: &str) -> PublishOptions {
    PublishOptions {
        message: message.into(),
        author: "editor".into(),
        ..PublishOptions::default()
    }
}

#[test]
fn publish_list_show_diff_and_rollback_grow_history() {
    let ws = Workspace::new();
    let (ok, out, err) = ws.kefu(&["publish", "draft", "-m", "开店"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("published version 1 ("), "{out}");
    assert_eq!(
        std::fs::read_to_string(ws.draft().join(".kefu-base")).unwrap().trim(),
        "1"
    );

    ws.edit("shop.kefu", "48 小时", "24 小时");
    ws.edit("tests/greeting.yaml", "48 小时", "24 小时");
    std::fs::write(ws.draft().join("notes.txt"), "双十一前改成 24 小时发货\n").unwrap();
    let (ok, out, err) = ws.kefu(&["publish", "draft", "-m", "发货提速"]);
    assert!(ok, "{err}");
    assert!(out.contains("over version 1"), "{out}");

    let (ok, diff, err) = ws.kefu(&["diff", "1", "live", "--color", "never"]);
    assert!(ok, "{err}");
    insta::assert_snapshot!("diff_1_2", diff);
    // A draft directory against a version: the same files, nothing differs.
    let (ok, same, err) = ws.kefu(&["diff", "live", "./draft"]);
    assert!(ok && same.is_empty() && err.contains("no differences"), "{same}{err}");

    let (ok, text, _) = ws.kefu(&["show", "1", "shop.kefu"]);
    assert!(ok && text.contains("48 小时"), "{text}");

    let (ok, out, err) = ws.kefu(&["rollback"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("published version 3") && out.contains("the content of version 1"),
        "{out}"
    );
    let store = ws.store();
    let history = store.list().unwrap();
    assert_eq!(history.iter().map(|v| v.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(history[2].rollback_of, Some(1));
    assert_eq!(history[2].parent, Some(2));
    assert_eq!(
        history[2].rules, history[0].rules,
        "the same content, the same rules hash"
    );
    assert_eq!(store.files(3).unwrap(), store.files(1).unwrap());
    assert_eq!(store.pointers().unwrap().live, Some(3));
    assert_eq!(
        store.by_rules(&history[0].rules).unwrap(),
        Some(3),
        "the latest with that hash"
    );
    assert!(store.version(2).unwrap().notes.iter().any(|n| n.kind == "rolled back"));

    let (ok, list, _) = ws.kefu(&["versions"]);
    assert!(ok);
    let ids: Vec<&str> = list.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(ids, ["3", "2", "1"], "{list}");
    assert!(
        list.lines().next().unwrap().contains("live") && list.contains("rollback of 1"),
        "{list}"
    );
    let (ok, json, _) = ws.kefu(&["versions", "--json"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["pointers"]["live"], 3);
    assert_eq!(json["versions"].as_array().unwrap().len(), 3);
    let (ok, record, _) = ws.kefu(&["show", "live"]);
    assert!(
        ok && record.contains("rollback of version 1") && !record.contains("notes.txt"),
        "{record}"
    );
}

#[test]
fn a_draft_that_does_not_build_is_refused_and_changes_nothing() {
    let ws = Workspace::new();
    draft::publish(&ws.store(), &ws.draft(), &options("开店")).unwrap();
    ws.edit("shop.kefu", "reply \"您好，我是小美～\"", "reply \"您好，我是小美～");
    let (ok, _, err) = ws.kefu(&["publish", "draft", "-m", "坏了", "--color", "never"]);
    assert!(!ok);
    assert!(
        err.contains("draft/shop.kefu:17:"),
        "the diagnostic names file:line:col:\n{err}"
    );
    insta::assert_snapshot!("refused_build", err);
    let store = ws.store();
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(store.pointers().unwrap().serial, 1);
}

#[test]
fn a_failing_test_refuses_unless_forced_and_force_is_recorded() {
    let ws = Workspace::new();
    draft::publish(&ws.store(), &ws.draft(), &options("开店")).unwrap();
    ws.edit("shop.kefu", "48 小时", "72 小时");
    let (ok, _, err) = ws.kefu(&["publish", "draft", "-m", "慢一点"]);
    assert!(!ok);
    insta::assert_snapshot!("refused_tests", err);
    assert_eq!(ws.store().list().unwrap().len(), 1, "nothing published");

    let (ok, out, err) = ws.kefu(&["publish", "draft", "-m", "慢一点", "--force"]);
    assert!(ok, "{err}");
    assert!(err.contains("published over 1 failing tests"), "{err}");
    assert!(out.contains("published version 2"), "{out}");
    let v = ws.store().version(2).unwrap();
    assert!(v.forced);
    assert_eq!((v.tests.passed, v.tests.failed), (0, 1));
    let (_, list, _) = ws.kefu(&["versions"]);
    assert!(list.contains("forced over 1 failing tests"), "{list}");
}

#[test]
fn two_publishes_from_one_parent_the_second_is_a_conflict() {
    let ws = Workspace::new();
    draft::publish(&ws.store(), &ws.draft(), &options("开店")).unwrap();
    // A second editor's copy of the same version.
    let other = ws.tmp.path().join("other");
    support::copy_dir(&ws.draft(), &other);

    ws.edit("shop.kefu", "小美", "小丽");
    let first = draft::publish(&ws.store(), &ws.draft(), &options("改名")).unwrap();
    let text = std::fs::read_to_string(other.join("shop.kefu")).unwrap();
    std::fs::write(other.join("shop.kefu"), text.replace("小美", "小红")).unwrap();
    let (ok, _, err) = ws.kefu(&["publish", "other", "-m", "也改名"]);
    assert!(!ok);
    insta::assert_snapshot!("refused_conflict", err);

    // Nothing lost: the first publish is live, the second editor's files untouched.
    let store = ws.store();
    assert_eq!(store.pointers().unwrap().live, Some(first.version.id));
    assert_eq!(store.list().unwrap().len(), 2);
    assert!(
        std::fs::read_to_string(other.join("shop.kefu"))
            .unwrap()
            .contains("小红")
    );
    assert_eq!(std::fs::read_to_string(other.join(".kefu-base")).unwrap().trim(), "1");
    // Rebased on the live version, it goes through.
    let (ok, out, err) = ws.kefu(&["publish", "other", "-m", "也改名", "--parent", "2"]);
    assert!(ok, "{err}");
    assert!(out.contains("published version 3"), "{out}");
}

#[test]
fn a_damaged_or_missing_blob_is_reported_and_never_served() {
    let ws = Workspace::new();
    let store = ws.store();
    let v = draft::publish(&store, &ws.draft(), &options("开店")).unwrap().version;
    let checkout = ws.tmp.path().join("serving");
    store.checkout(v.id, &checkout).unwrap();
    assert_eq!(
        draft::read_dir(&checkout).unwrap(),
        draft::read_dir(&ws.draft()).unwrap()
    );

    let sha = &v.files["shop.kefu"].sha256;
    let blob = store.root().join("blobs").join(&sha[..2]).join(sha);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(&blob, &bytes).unwrap();
    let e = store.files(v.id).unwrap_err();
    assert!(matches!(e, VersionError::Corrupt { id: 1, .. }), "{e}");
    assert!(
        e.to_string().contains("shop.kefu") && e.to_string().contains(sha),
        "{e}"
    );
    // The checkout before stays whole; a new one is refused, not half-written.
    std::fs::write(checkout.join("marker"), "old").unwrap();
    assert!(store.checkout(v.id, &checkout).is_err());
    assert_eq!(std::fs::read_to_string(checkout.join("marker")).unwrap(), "old");
    let (ok, _, err) = ws.kefu(&["show", "1", "shop.kefu"]);
    assert!(!ok && err.contains("version 1 is damaged"), "{err}");

    std::fs::remove_file(&blob).unwrap();
    let e = store.files(v.id).unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");

    // A record that is not JSON: named, never served.
    std::fs::write(store.root().join("records/1.json"), "{").unwrap();
    let e = store.version(1).unwrap_err();
    assert!(e.to_string().contains("records/1.json"), "{e}");
}

#[test]
fn publish_refusals_while_a_canary_runs_then_promote_and_rollback() {
    let ws = Workspace::new();
    let store = ws.store();
    draft::publish(&store, &ws.draft(), &options("开店")).unwrap();
    ws.edit("shop.kefu", "小美", "小丽");
    let canary = PublishOptions {
        canary: Some(10),
        ..options("试一试")
    };
    let v2 = draft::publish(&store, &ws.draft(), &canary).unwrap().version;
    let pointers = store.pointers().unwrap();
    assert_eq!(pointers.live, Some(1));
    assert_eq!(pointers.canary.as_ref().map(|c| (c.version, c.percent)), Some((2, 10)));
    ws.edit("shop.kefu", "小丽", "小红");
    let e = draft::publish(&store, &ws.draft(), &options("再改")).unwrap_err();
    assert!(matches!(e, PublishError::Store(VersionError::CanaryRunning(2))), "{e}");

    // Rollback while a canary runs stops it; the live version is untouched.
    assert!(matches!(
        draft::rollback(&store, None, "editor").unwrap(),
        Rollback::CanaryStopped(2)
    ));
    let pointers = store.pointers().unwrap();
    assert_eq!((pointers.live, pointers.canary.is_none()), (Some(1), true));

    draft::start_canary(&store, v2.id, 50, "editor").unwrap();
    let (ok, out, err) = ws.kefu(&["promote"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "version 2 is live");
    let notes: Vec<String> = store.version(2).unwrap().notes.into_iter().map(|n| n.kind).collect();
    assert_eq!(
        notes,
        ["canary started", "canary stopped", "canary started", "promoted"]
    );
    let (ok, _, err) = ws.kefu(&["promote"]);
    assert!(!ok && err.contains("no canary is running"), "{err}");
}

#[test]
fn pointer_changes_are_compare_and_set() {
    let ws = Workspace::new();
    let store = ws.store();
    draft::publish(&store, &ws.draft(), &options("开店")).unwrap();
    let p = store.pointers().unwrap();
    let moved = store.set_pointers(p.serial, p.clone()).unwrap();
    assert_eq!(moved.serial, p.serial + 1);
    let e = store.set_pointers(p.serial, p.clone()).unwrap_err();
    assert!(matches!(e, VersionError::Moved { .. }), "{e}");
    let mut bad = moved.clone();
    bad.live = Some(99);
    assert!(matches!(
        store.set_pointers(moved.serial, bad).unwrap_err(),
        VersionError::NotFound(99)
    ));
}

/// The files a draft publishes: hidden files left out, a symbolic link leading outside
/// refused.
#[test]
fn a_draft_leaves_hidden_files_out_and_refuses_links_outside() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.draft().join(".git")).unwrap();
    std::fs::write(ws.draft().join(".git/HEAD"), "x").unwrap();
    std::fs::write(ws.draft().join(".shop.kefu.swp"), "x").unwrap();
    let files = draft::read_dir(&ws.draft()).unwrap();
    assert_eq!(files.keys().collect::<Vec<_>>(), ["shop.kefu", "tests/greeting.yaml"]);
    std::fs::write(ws.tmp.path().join("secret"), "x").unwrap();
    std::os::unix::fs::symlink(ws.tmp.path().join("secret"), ws.draft().join("leak.txt")).unwrap();
    let e = draft::read_dir(&ws.draft()).unwrap_err();
    assert!(
        e.to_string().contains("leak.txt") && e.to_string().contains("outside"),
        "{e}"
    );
}

/// Two threads (each with its own handle, as two processes would be) publish from the
/// same parent at once, many times: exactly one wins each round, the other is a conflict.
#[test]
fn concurrent_publishes_from_one_parent_exactly_one_wins() {
    let ws = Workspace::new();
    let state = ws.state();
    race_publishes(move || Box::new(LocalStore::open(&state).unwrap()));
}

/// Twenty rounds of two threads, each with a store of its own from `open`, publishing
/// from the same parent at once: exactly one wins each round, the other is a conflict,
/// and every version's parent is the one published before it.
fn race_publishes(open: impl Fn() -> Box<dyn VersionStore> + Send + Sync + Clone + 'static) {
    let new = |parent: Option<u64>, text: String| NewVersion {
        rules: text.clone(),
        files: [("shop.kefu".to_string(), text.into_bytes())].into(),
        author: "t".into(),
        message: "m".into(),
        parent,
        ..NewVersion::default()
    };
    let store = open();
    store.publish(new(None, "base".into())).unwrap();
    for round in 0..20u64 {
        let live = store.pointers().unwrap().live;
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let (barrier, open) = (Arc::clone(&barrier), open.clone());
                let version = new(live, format!("round {round} thread {t}"));
                std::thread::spawn(move || {
                    let store = open();
                    barrier.wait();
                    store.publish(version)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        assert!(
            results.iter().any(|r| matches!(r, Err(VersionError::Conflict { .. }))),
            "{results:?}"
        );
    }
    // Ids grow but may skip a number a refused publish took (Redis's `INCR`).
    let list = store.list().unwrap();
    assert_eq!(list.len(), 21);
    assert_eq!(store.pointers().unwrap().live, list.last().map(|v| v.id));
    for pair in list.windows(2) {
        assert_eq!(
            pair[1].parent,
            Some(pair[0].id),
            "every version's parent is the one before"
        );
    }
}

/// The same history on a real redis-server: publish, conflict, rollback, canary, a
/// damaged blob, artifacts, and the change notifications.
#[test]
#[ignore = "needs redis-server (tests/support/redis.rs starts one of its own)"]
fn redis_store_publishes_notifies_and_refuses_like_the_local_one() {
    use kefu::versions::RedisVersionStore;
    let redis = support::redis::OwnRedis::start();
    let ws = Workspace::new();
    let store = RedisVersionStore::connect(&redis.url()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let _subscription = store.subscribe(move || {
        let _ = tx.send(());
    });
    // Let the subscription connect before the first change.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let wait = || {
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("a change notification")
    };

    let v1 = draft::publish(&store, &ws.draft(), &options("开店")).unwrap().version;
    wait();
    let other = ws.tmp.path().join("other");
    support::copy_dir(&ws.draft(), &other);
    ws.edit("shop.kefu", "小美", "小丽");
    let v2 = draft::publish(&store, &ws.draft(), &options("改名")).unwrap().version;
    wait();
    let e = draft::publish(&store, &other, &options("也改")).unwrap_err();
    assert!(
        matches!(e, PublishError::Store(VersionError::Conflict { live: 2, .. })),
        "{e}"
    );
    assert_eq!(store.list().unwrap().len(), 2);
    assert_eq!(store.by_rules(&v1.rules).unwrap(), Some(1));

    let Rollback::Republished(v3) = draft::rollback(&store, None, "editor").unwrap() else {
        panic!("no canary ran")
    };
    wait();
    assert_eq!((v3.rollback_of, v3.parent), (Some(1), Some(2)));
    assert_eq!(store.files(3).unwrap(), store.files(1).unwrap());
    draft::start_canary(&store, v2.id, 10, "editor").unwrap();
    wait();
    assert_eq!(draft::promote(&store, "editor").unwrap(), 2);
    wait();
    assert_eq!(store.pointers().unwrap().live, Some(2));
    assert_eq!(store.pointers().unwrap().serial, 5);

    store.artifact_put("nlu:abc", b"weights").unwrap();
    assert_eq!(store.artifact_get("nlu:abc").unwrap().as_deref(), Some(&b"weights"[..]));
    assert_eq!(store.artifact_get("nlu:other").unwrap(), None);

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let key = format!("kefu:rules:blob:{}", v2.files["shop.kefu"].sha256);
    redis::cmd("SET")
        .arg(&key)
        .arg("damaged")
        .query::<()>(&mut conn)
        .unwrap();
    let e = store.files(2).unwrap_err();
    assert!(
        matches!(e, VersionError::Corrupt { id: 2, .. }) && e.to_string().contains(&key),
        "{e}"
    );
}

/// Two handles on one Redis publishing from the same parent at once: one wins.
#[test]
#[ignore = "needs redis-server (tests/support/redis.rs starts one of its own)"]
fn redis_concurrent_publishes_from_one_parent_exactly_one_wins() {
    use kefu::versions::RedisVersionStore;
    let redis = support::redis::OwnRedis::start();
    let url = redis.url();
    race_publishes(move || Box::new(RedisVersionStore::connect(&url).unwrap()));
}

/// The commands with `--redis`: publish, versions, rollback through the binary.
#[test]
#[ignore = "needs redis-server (tests/support/redis.rs starts one of its own)"]
fn redis_commands_publish_list_and_roll_back() {
    let redis = support::redis::OwnRedis::start();
    let ws = Workspace::new();
    let url = redis.url();
    let (ok, out, err) = ws.kefu(&["publish", "draft", "-m", "开店", "--redis", &url]);
    assert!(ok && out.starts_with("published version 1 "), "{out}{err}");
    ws.edit("shop.kefu", "小美", "小丽");
    let (ok, _, err) = ws.kefu(&["publish", "draft", "-m", "改名", "--redis", &url]);
    assert!(ok, "{err}");
    let (ok, out, err) = ws.kefu(&["rollback", "--redis", &url]);
    assert!(ok && out.contains("the content of version 1"), "{out}{err}");
    let (ok, list, _) = ws.kefu(&["versions", "--redis", &url]);
    assert!(ok);
    let ids: Vec<&str> = list.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(ids, ["3", "2", "1"], "{list}");
    let (ok, diff, _) = ws.kefu(&["diff", "2", "3", "--redis", &url, "--color", "never"]);
    assert!(ok && diff.contains("+  reply \"您好，我是小美～\""), "{diff}");
    // Nothing was written to the local store.
    assert!(!ws.state().join("versions").exists());
}
