//! The console's workbench over HTTP: the test chat with the draft's rules, the draft's
//! tests, a chat saved as a test, the draft in diff and publish, and the report of the
//! conversation log. Each test serves a copy of `rules/` (the draft) from a fresh
//! workspace with a local version store and a conversation log.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kefu::server::ServeConfig;
use kefu::versions::{LocalStore, VersionStore};
use serde_json::{Value, json};
use support::http::{TestServer, eventually};

/// A temporary workspace: the draft, the store, the state and the log.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("kefu-workbench-").tempdir().unwrap();
        support::copy_dir(&support::root().join("rules"), &dir.path().join("rules"));
        Workspace { dir }
    }

    fn draft(&self) -> PathBuf {
        self.dir.path().join("rules")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// A node serving the draft directory (development mode) with a store to publish to.
    fn node(&self) -> TestServer {
        let store: Arc<dyn VersionStore> = Arc::new(LocalStore::open(&self.dir.path().join("store")).unwrap());
        let mut config = ServeConfig::new(self.draft());
        config.watch = false;
        config.serve_dir = true;
        config.tickets.state_dir = Some(self.dir.path().join("state"));
        config.versions = Some(store);
        config.conversation_log = Some(kefu::data::LogConfig::new(self.log()));
        // The node's model, which the draft's engine shares.
        config.llm = Some(Arc::new(kefu::llm::MockLlm::new(vec![kefu::llm::MockRule {
            contains: "卡片".into(),
            reply: "亲，可以的～祝福语写在订单留言里，我们会手写在贺卡上～".into(),
            confidence: 0.9,
            delay_ms: 0,
        }])));
        TestServer::start(config)
    }

    /// Replaces `old` by `new` in the draft file `name`.
    fn edit(&self, name: &str, old: &str, new: &str) {
        let path = self.draft().join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(old), "{name} holds `{old}`");
        std::fs::write(&path, text.replacen(old, new, 1)).unwrap();
    }
}

/// Every line of the conversation log.
fn log_text(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return String::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

fn draft_chat(server: &TestServer, body: Value) -> Value {
    let reply = server.post("/admin/draft/chat", &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

#[test]
fn the_test_chat_answers_with_the_draft_and_says_where_from() {
    let ws = Workspace::new();
    let server = ws.node();
    let body = draft_chat(
        &server,
        json!({ "session_id": "try-1", "message": "我想换个颜色", "user": { "segment": "vip" } }),
    );
    assert_eq!(body["turn"]["source"], "flow", "{body}");
    assert_eq!(body["turn"]["flow"], "换货申请");
    // The flow's own line in the draft, relative to it.
    let text = std::fs::read_to_string(ws.draft().join("aftersale.kefu")).unwrap();
    let line = text.lines().position(|l| l.contains("flow 换货申请")).unwrap() + 1;
    let location = &body["source_location"];
    assert_eq!(location["file"], "aftersale.kefu", "{body}");
    assert_eq!(location["line"], line);
    let col = text.lines().nth(line - 1).unwrap().find("换货申请").unwrap();
    assert_eq!(
        location["col"],
        text.lines().nth(line - 1).unwrap()[..col].chars().count() + 1
    );
    // The classifier's runners-up: two other intents with their confidences, also on the
    // trace's nlu line; the trace is the whole one (places in files included).
    let runners = body["understanding"]["runners_up"].as_array().unwrap();
    assert_eq!(runners.len(), 2, "{body}");
    assert!(
        runners
            .iter()
            .all(|r| r["intent"] != "售后.换货" && r["confidence"].is_number())
    );
    let trace = body["turn"]["trace"].to_string();
    assert!(trace.contains("runners-up"), "{trace}");
    assert!(trace.contains("aftersale.kefu:"), "{trace}");
    assert_eq!(body["understanding"]["intent"], "售后.换货");
    assert!(body["slots"].is_object());

    // The conversation goes on in the draft's engine (an order it cannot find: asked
    // again), and what answered is now the step that asks, at its own line.
    let next = draft_chat(&server, json!({ "session_id": "try-1", "message": "202611010001" }));
    assert_eq!(next["turn"]["flow"], "换货申请", "{next}");
    let step = next["turn"]["step"].as_str().unwrap();
    let step_line: u64 = step.rsplit_once('@').unwrap().1.parse().unwrap();
    assert_eq!(next["source_location"]["line"], step_line, "{next}");
    assert!(step_line as usize > line);
    assert_eq!(
        next["understanding"]["runners_up"],
        json!([]),
        "a number alone: no intent scored"
    );

    // An FAQ answer points at its entry's `id:` in the kb file, with its score.
    let faq = draft_chat(&server, json!({ "message": "积分有什么用" }));
    assert_eq!(faq["turn"]["source"], "faq", "{faq}");
    let kb = std::fs::read_to_string(ws.draft().join("kb/faq.yaml")).unwrap();
    let id_line = kb
        .lines()
        .position(|l| l.trim_start_matches(['-', ' ']) == "id: 积分")
        .unwrap()
        + 1;
    assert_eq!(faq["source_location"]["file"], "kb/faq.yaml", "{faq}");
    assert_eq!(faq["source_location"]["line"], id_line);
    let hit = &faq["kb"][0];
    assert_eq!(
        (hit["kind"].as_str(), hit["id"].as_str(), hit["answered"].as_bool()),
        (Some("faq"), Some("积分"), Some(true))
    );
    assert!(hit["score"].as_f64().unwrap() > 0.0);

    // The node's model answers the draft's chat too; its prompt is shown, part by part.
    let model = draft_chat(&server, json!({ "message": "可以放张卡片写祝福吗" }));
    assert_eq!(model["turn"]["source"], "llm", "{model}");
    assert_eq!(model["source_location"], Value::Null);
    let prompt = model["prompt"].as_array().unwrap();
    assert_eq!(prompt[0]["part"], "system", "{model}");
    assert!(prompt.last().unwrap()["text"].as_str().unwrap().contains("卡片"));
    assert_eq!(model["prompt_parts"][0], "persona");
    assert_eq!(faq["prompt"], Value::Null);

    // A customer turn lands in the log; the test chat never does.
    server.chat("customer-1", "什么时候发货");
    assert!(eventually(Duration::from_secs(10), || log_text(&ws.log()).contains("customer-1")));
    assert!(!log_text(&ws.log()).contains("try-1"));
    // Nor in the customer session store.
    assert_eq!(server.get("/v1/sessions/try-1").status, 404);
}

#[test]
fn an_edited_draft_answers_at_once_and_a_broken_one_is_refused_with_diagnostics() {
    let ws = Workspace::new();
    let server = ws.node();
    let before = draft_chat(&server, json!({ "message": "什么时候发货" }));
    assert_eq!(before["turn"]["rule"], "发货时间", "{before}");
    assert!(before["session_id"].as_str().unwrap().starts_with("draft-"));
    ws.edit(
        "logistics.kefu",
        "reply \"亲，现货商品每天 16:00 前付款",
        "reply \"草稿改过，现货商品每天 16:00 前付款",
    );
    let after = draft_chat(&server, json!({ "message": "什么时候发货" }));
    assert!(after["turn"]["reply"].as_str().unwrap().contains("草稿改过"), "{after}");
    // The serving rules are untouched.
    assert!(
        !server.chat("c", "什么时候发货")["reply"]
            .as_str()
            .unwrap()
            .contains("草稿改过")
    );

    std::fs::write(ws.draft().join("broken.kefu"), "rule 坏 {\n  when intent == \n}\n").unwrap();
    let refused = server.post("/admin/draft/chat", &json!({ "message": "你好" }));
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.error_type(), "rules_invalid");
    let error = &refused.json()["error"];
    assert!(error["report"].as_str().unwrap().contains("broken.kefu"), "{error}");
    assert!(
        error["diagnostics"][0]["location"]
            .as_str()
            .unwrap()
            .starts_with("broken.kefu:")
    );
    assert_eq!(error["diagnostics"][0]["file"], "broken.kefu", "{error}");
    assert!(error["diagnostics"][0]["line"].as_u64().unwrap() >= 1);
}

#[test]
fn the_drafts_tests_run_as_kefu_test_runs_them_and_a_saved_chat_joins_them() {
    let ws = Workspace::new();
    let server = ws.node();
    let run = server.post("/admin/draft/tests", &json!({}));
    assert_eq!(run.status, 200, "{}", run.body);
    let run = run.json();
    assert_eq!(run["failed"], 0, "{}", run["rendered"]);
    let passed = run["passed"].as_u64().unwrap();
    assert!(passed > 10);
    assert!(run["coverage"]["total"].as_u64().unwrap() > 0);
    assert!(run["coverage"]["percent"].as_f64().unwrap() > 50.0);
    let rendered = run["rendered"].as_str().unwrap();
    assert!(
        rendered.ends_with(&format!("{passed} passed, 0 failed\n")),
        "{rendered}"
    );
    assert!(rendered.contains("coverage: rules "));
    assert!(
        !rendered.contains(&ws.draft().display().to_string()),
        "paths relative to the draft"
    );

    // Broken expectation: the failure says which turn, field, expected and actual.
    ws.edit("tests/complaint_handoff.yaml", "rule: 投诉", "rule: 不存在的规则");
    let failed = server.post("/admin/draft/tests", &json!({})).json();
    assert_eq!(failed["failed"], 1, "{failed}");
    let case = failed["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ok"] == false)
        .unwrap();
    assert_eq!(case["file"], "tests/complaint_handoff.yaml");
    let failure = &case["failures"][0];
    assert_eq!(failure["field"], "rule", "{case}");
    assert_eq!(failure["expected"], "不存在的规则");
    assert!(failure["turn"].as_u64().unwrap() >= 1);
    assert!(failure["say"].is_string());
    assert!(
        failed["rendered"]
            .as_str()
            .unwrap()
            .contains("✗ rule: expected `不存在的规则`")
    );

    // A chat saved as a test: written once, loaded by the runner.
    let save = json!({
        "name": "换颜色 / VIP",
        "user": { "segment": "vip" },
        "turns": [ { "say": "我想换个颜色", "expect": { "source": "flow", "flow": "换货申请" } } ],
    });
    let saved = server.post("/admin/draft/tests/save", &save);
    assert_eq!(saved.status, 201, "{}", saved.body);
    assert_eq!(saved.json()["path"], "tests/换颜色-VIP.yaml");
    let again = server.post("/admin/draft/tests/save", &save);
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.error_type(), "conflict");
    let bad = server.post(
        "/admin/draft/tests/save",
        &json!({ "name": "坏", "turns": [ { "say": "你好", "expect": { "nonsense": 1 } } ] }),
    );
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(!ws.draft().join("tests/坏.yaml").exists());
    let with_saved = server.post("/admin/draft/tests", &json!({})).json();
    let case = with_saved["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["file"] == "tests/换颜色-VIP.yaml")
        .unwrap_or_else(|| panic!("the saved test runs: {with_saved}"));
    assert_eq!(case["ok"], true, "{case}");
    assert_eq!(case["name"], "换颜色 / VIP");
}

#[test]
fn the_draft_publishes_and_diffs_against_live() {
    let ws = Workspace::new();
    let server = ws.node();
    let published = server.post("/admin/publish", &json!({ "draft": true, "message": "first" }));
    assert_eq!(published.status, 201, "{}", published.body);
    assert_eq!(published.json()["version"]["id"], 1);
    // As `kefu publish DIR`: the draft now says what it was published as.
    assert_eq!(
        std::fs::read_to_string(ws.draft().join(".kefu-base")).unwrap().trim(),
        "1"
    );
    let same = server.get("/admin/diff?a=live&b=draft").json();
    assert_eq!(same["files"], json!([]), "{same}");

    ws.edit("logistics.kefu", "发货", "出库");
    let diff = server.get("/admin/diff?a=live&b=draft");
    assert_eq!(diff.status, 200, "{}", diff.body);
    let diff = diff.json();
    assert_eq!(diff["from"], 1);
    assert_eq!(diff["to"], "draft");
    assert_eq!(diff["files"][0]["path"], "logistics.kefu", "{diff}");
    assert_eq!(diff["files"][0]["change"], "changed");
    assert!(diff["files"][0]["diff"].as_str().unwrap().contains("+"));
    let second = server
        .post("/admin/publish", &json!({ "draft": true, "message": "出库" }))
        .json();
    assert_eq!(second["version"]["parent"], 1, "{second}");
    let both = server.post("/admin/publish", &json!({ "draft": true, "files": {}, "message": "x" }));
    assert_eq!(both.status, 400);
}

#[test]
fn the_report_counts_the_logged_turns_of_today() {
    let ws = Workspace::new();
    let server = ws.node();
    for (session, message) in [("r1", "什么时候发货"), ("r1", "谢谢"), ("r2", "我想换个颜色")] {
        server.chat(session, message);
    }
    let mut report = Value::Null;
    assert!(
        eventually(Duration::from_secs(10), || {
            report = server.get("/admin/report").json();
            report["report"]["turns"] == 3
        }),
        "{report}"
    );
    assert_eq!(report["report"]["sessions"], 2);
    let hourly = report["hourly"].as_array().unwrap();
    assert_eq!(hourly.len(), 24, "a day, hour by hour");
    let total: u64 = hourly.iter().map(|h| h["turns"].as_u64().unwrap()).sum();
    assert_eq!(total, 3);
    let busy = hourly.iter().find(|h| h["turns"] != 0).unwrap();
    assert!(busy["p50_ms"].is_number(), "{busy}");
    assert!(report["satisfaction"].is_object());
    // Hits, and the serving rules' items not hit in the last 30 days: not the ones hit.
    let hit_rules: Vec<Value> = report["report"]["hits"]["rule"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].clone())
        .collect();
    assert!(!hit_rules.is_empty(), "{report}");
    let never = &report["never_hit"];
    assert_eq!(never["days"], 30, "{never}");
    assert_eq!(never, &report["report"]["never_hit"]);
    let unused = never["rule"].as_array().unwrap();
    assert!(!unused.is_empty(), "the demo shop has rules these turns did not hit");
    assert!(
        hit_rules.iter().all(|r| !unused.contains(r)),
        "{hit_rules:?} in {never}"
    );
    assert!(never["faq"].is_array() && never["flow_step"].is_array() && never["promotion"].is_array());
    // Asked again, the same (the files read before are not read again, and need not be).
    let week = server.get("/admin/report?unused_days=7").json();
    assert_eq!(week["never_hit"]["days"], 7);
    assert_eq!(week["never_hit"]["rule"], never["rule"]);
    for bad in ["0", "367", "x"] {
        let reply = server.get(&format!("/admin/report?unused_days={bad}"));
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
    }
    // The logged turns replayed through the draft as it is on disk.
    let replay = server.post("/admin/replay", &json!({ "draft": true }));
    assert_eq!(replay.status, 200, "{}", replay.body);
    let both = server.post("/admin/replay", &json!({ "draft": true, "version": "live" }));
    assert_eq!(both.status, 400, "{}", both.body);
    // A period without turns, and a bad time.
    let old = server.get("/admin/report?since=2020-01-01T00:00:00%2B08:00&until=2020-01-02T00:00:00%2B08:00");
    assert_eq!(old.status, 200, "{}", old.body);
    assert_eq!(old.json()["report"]["turns"], 0);
    assert_eq!(server.get("/admin/report?since=yesterday").status, 400);
}

#[test]
fn the_report_needs_a_log() {
    let ws = Workspace::new();
    let mut config = ServeConfig::new(ws.draft());
    config.watch = false;
    let server = TestServer::start(config);
    let reply = server.get("/admin/report");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error_type(), "no_log");
}
