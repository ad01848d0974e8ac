//! The conversation log and the data loop: a fixed log (`tests/data/datalog/`) in, the
//! report (text and JSON), the cleaned log and the exported examples out, snapshotted;
//! the writer's masking and rotation on real files; and `kefu serve --conversation-log`
//! end to end.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, FixedOffset};
use kefu::data::clean::{self, DropReason};
use kefu::data::export::{self, ExportOptions, Format};
use kefu::data::record::{AgentRecord, TurnRecord};
use kefu::data::report::{self, ReportOptions};
use kefu::data::{ConversationLog, LogConfig, Record};
use kefu::engine::AnswerSource;
use kefu::{Engine, RuleSet, TurnRequest};
use serde_json::json;

const LOG: &str = "tests/data/datalog/conversations.jsonl";

fn log() -> Vec<PathBuf> {
    vec![PathBuf::from(LOG)]
}

/// A small rule set with every PII kind on.
fn safety_rules() -> Arc<RuleSet> {
    let (compiled, rendered) = support::check(Path::new("tests/data/safety_rules"));
    Arc::new(compiled.rules.unwrap_or_else(|| panic!("{rendered}")))
}

/// An empty directory of its own for one test, removed when the test ends (pass or fail).
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("kefu-test-datalog-{name}-"))
        .tempdir()
        .unwrap()
}

/// Every line of every file in `dir`, in file-name order, parsed.
fn read_dir_records(dir: &Path) -> Vec<Record> {
    let files = kefu::data::files(&[dir.to_path_buf()]).unwrap();
    let mut records = Vec::new();
    let stats = kefu::data::read(&files, |r, _| records.push(r)).unwrap();
    assert_eq!(stats.bad_lines, 0, "{:?}", stats.bad);
    records
}

fn at(minute: i64) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339("2026-11-11T23:50:00+08:00").unwrap() + Duration::minutes(minute)
}

#[test]
fn report_of_the_fixed_log() {
    let report = report::report(&log(), &ReportOptions::default()).unwrap();
    // Figures worked out by hand from the file, so that a snapshot accepted by mistake
    // still fails here.
    assert_eq!((report.sessions, report.turns), (11, 21));
    assert_eq!(report.read.bad_lines, 3);
    assert_eq!(
        report.read.bad.iter().map(|b| b.line).collect::<Vec<_>>(),
        vec![6, 21, 27]
    );
    assert_eq!(
        (
            report.first_contact_resolution.count,
            report.first_contact_resolution.of
        ),
        (8, 11)
    );
    assert_eq!(report.satisfaction.mean, Some(4.0));
    assert_eq!(report.satisfaction.share_4_or_5, Some(0.75));
    assert_eq!((report.handoffs.by_bot, report.handoffs.by_agent), (2, 1));
    assert_eq!((report.safety.turns.count, report.safety.blocked), (3, 1));
    assert_eq!((report.model.prompt_tokens, report.model.completion_tokens), (853, 77));
    let all = &report.latency_ms[0];
    assert_eq!(
        (all.source.as_str(), all.p50, all.p90, all.p99),
        ("all", 0.066, 0.212, 1512.4)
    );

    insta::assert_snapshot!("report_text", report.to_string());
    insta::assert_yaml_snapshot!("report", report);
}

/// The fixed log as if a canary had run: the sessions whose id sorts after `f` answered
/// by a candidate version, one of its turns with a failed script.
#[test]
fn report_of_a_canary_has_a_row_per_version() {
    let files = log();
    let mut records = Vec::new();
    kefu::data::read(&files, |r, _| records.push(r)).unwrap();
    let mut errors = 1;
    for record in &mut records {
        if let Record::Turn(turn) = record
            && turn.session.as_str() > "f"
        {
            turn.rules = "c4a9d1e07f3b".into();
            if errors > 0 {
                turn.script_errors = 2;
                errors -= 1;
            }
        }
    }
    let report = report::report_of(records, &ReportOptions::default());
    let versions: Vec<(&str, u64)> = report.versions.iter().map(|v| (v.version.as_str(), v.turns)).collect();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(versions.iter().map(|v| v.1).sum::<u64>(), report.turns);
    let candidate = &report.versions[1];
    assert_eq!(candidate.version, "c4a9d1e07f3b");
    assert_eq!(candidate.errors.count, 1);
    assert_eq!(
        report.versions.iter().map(|v| v.feedback).sum::<u64>(),
        report.satisfaction.scores,
        "every score counts for one version"
    );
    insta::assert_snapshot!("report_versions_text", report.to_string());
    let html = kefu::data::html::render(&report);
    assert!(html.contains("<h2>Rules versions</h2>"));
    assert!(html.contains("<td>c4a9d1e07f3b</td>"));
}

/// Hits per rule, promotion, flow step and FAQ entry, worked out by hand from the file.
#[test]
fn report_counts_hits_per_item() {
    let report = report::report(&log(), &ReportOptions::default()).unwrap();
    let hits = &report.hits;
    assert_eq!(
        (
            hits.rule.turns,
            hits.promotion.turns,
            hits.flow_step.turns,
            hits.faq.turns
        ),
        (9, 1, 2, 0)
    );
    let first = &hits.rule.items[0];
    assert_eq!((first.name.as_str(), first.turns, first.conversations), ("缩水", 2, 2));
    let steps: Vec<&str> = hits.flow_step.items.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(steps, ["退货申请/ask order_id@65", "退货申请/say@80"]);
    assert_eq!(hits.flow_step.items[0].last, "2026-11-11T09:10:00+08:00");
    assert_eq!(hits.promotion.items[0].name, "双11满减");
    assert!(report.never_hit.is_none());
    let text = report.to_string();
    assert!(text.contains("rules: 9 turns, 8 rules hit"), "{text}");
    let page = kefu::data::html::render(&report);
    assert!(page.contains("<h2>Hits</h2>") && page.contains("<td>退货申请/ask order_id@65</td>"));
}

/// `--rules`: the demo shop's items the log never hit are listed; the ones it hit are not.
#[test]
fn report_lists_what_the_rules_never_hit() {
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["report", LOG, "--json", "--rules", "rules", "--unused-days", "7"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let never = &json["never_hit"];
    assert_eq!(never["days"], 7);
    let names = |kind: &str| -> Vec<String> {
        never[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    };
    let rules = kefu::dsl::load_dir(Path::new("rules")).rules.unwrap();
    let unused = names("rule");
    assert!(!unused.contains(&"缩水".to_string()) && !unused.contains(&"运费".to_string()));
    assert_eq!(
        unused.len(),
        rules
            .rules
            .iter()
            .filter(|r| ![
                "发货时间",
                "备注电话",
                "投诉",
                "缩水",
                "质量问题",
                "转人工",
                "运费",
                "颜色"
            ]
            .contains(&r.name.as_str()))
            .count(),
        "{unused:?}"
    );
    assert!(unused.iter().all(|n| rules.rules.iter().any(|r| &r.name == n)));
    // No FAQ entry answered in the log: all of them.
    assert_eq!(names("faq").len(), rules.kb.faqs.len());
    assert!(names("flow_step").iter().all(|s| s.contains('/')));
    // Without --rules: null.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["report", LOG, "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert!(json["never_hit"].is_null());
    // As text: the counts, then the names.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["report", LOG, "--rules", "rules"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        text.contains("not hit in the last 30 days (since 2026-10-12):"),
        "{text}"
    );
}

#[test]
fn report_prices_are_flags_and_json_is_one_object() {
    let scratch_dir = scratch("report-cli");
    let out = scratch_dir.path();
    let html = out.join("report.html");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args([
            "report",
            LOG,
            "--json",
            "--price-per-1k",
            "0.01",
            "--completion-price-per-1k",
            "0.03",
        ])
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8(run.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one JSON object on one line");
    let options = ReportOptions {
        price_prompt_per_1k: 0.01,
        price_completion_per_1k: 0.03,
        unused: None,
    };
    let expected = report::report(&log(), &options).unwrap();
    // Compared as text: parsing floats back is not exact to the last bit.
    assert_eq!(text, serde_json::to_string(&expected).unwrap() + "\n");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    // 853 prompt tokens at 0.01 and 77 generated at 0.03 per 1,000.
    let cost = json["model"]["cost"].as_f64().unwrap();
    assert!((cost - (8.53e-3 + 2.31e-3)).abs() < 1e-12, "{cost}");

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert_eq!(
        page.matches("<svg viewBox").count(),
        2,
        "the timeline and the histogram"
    );
    for external in ["src=", "href=", "http://", "https://", "<script"] {
        assert!(!page.contains(external), "the page must be self-contained: {external}");
    }
}

#[test]
fn clean_drops_exactly_the_expected_sessions_and_masks_again() {
    let mut out = Vec::new();
    let summary = clean::clean(&log(), &safety_rules(), &mut out, Path::new("-")).unwrap();
    assert_eq!(
        summary.dropped,
        vec![
            ("b1".to_string(), DropReason::BotOnly),
            ("e1".to_string(), DropReason::Empty),
            ("t1".to_string(), DropReason::Chatter),
        ]
    );
    assert_eq!((summary.sessions, summary.sessions_kept), (12, 9));
    // t2's "测试一下" goes, its real question stays.
    assert_eq!(summary.chatter_turns, 1);
    // 33 records; t1 (2), e1 (1), b1 (2) and t2's chatter turn (1) out.
    assert_eq!(summary.lines_written, 27);
    // The agent's phone number in h1 and the ID card in h1's comment.
    assert_eq!(summary.masked_lines, 2);
    assert_eq!(summary.read.bad_lines, 3);

    let text = String::from_utf8(out).unwrap();
    let records: Vec<Record> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 27);
    let sessions: BTreeSet<&str> = records.iter().map(Record::session).collect();
    assert_eq!(
        sessions,
        BTreeSet::from(["a1", "a2", "a3", "a4", "a5", "h1", "h2", "s1", "t2"])
    );
    assert!(!text.contains("13812345678") && !text.contains("110101199003074514"));
    assert!(text.contains("138****5678"), "{text}");
    // Lines that needed no masking are written exactly as read.
    let original = std::fs::read_to_string(LOG).unwrap();
    let first = original.lines().next().unwrap();
    assert_eq!(text.lines().next().unwrap(), first);
    insta::assert_snapshot!("cleaned", text);
}

#[test]
fn export_emits_the_expected_examples_in_both_formats() {
    for (format, name) in [(Format::Sft, "export_sft"), (Format::Messages, "export_messages")] {
        let options = ExportOptions {
            format,
            ..ExportOptions::default()
        };
        let mut out = Vec::new();
        let summary = export::export(&log(), &options, &mut out, Path::new("-")).unwrap();
        // a1 ×2, a2, a3 (model), a5 (promotion), h2 (rule and agent), t2, s1; a4 repeats
        // a1; a2's order number and a5's colour are below 0.8; h1 was scored 2.
        assert_eq!((summary.written, summary.agent), (9, 1), "{summary:?}");
        assert_eq!(
            (summary.duplicates, summary.low_confidence, summary.low_feedback),
            (1, 2, 1)
        );
        let text = String::from_utf8(out).unwrap();
        for line in text.lines() {
            let example: serde_json::Value = serde_json::from_str(line).unwrap();
            match format {
                Format::Sft => {
                    let input = example["input_text"].as_str().unwrap();
                    assert!(input.starts_with("用户:") && input.ends_with("\n客服:"), "{input}");
                    assert!(example["target_text"].as_str().is_some_and(|t| !t.is_empty()));
                }
                Format::Messages => {
                    let messages = example["messages"].as_array().unwrap();
                    assert_eq!(messages[0]["role"], "user");
                    assert_eq!(messages.last().unwrap()["role"], "assistant");
                    for pair in messages.windows(2) {
                        assert_ne!(pair[0]["role"], pair[1]["role"], "roles alternate: {line}");
                    }
                }
            }
        }
        insta::assert_snapshot!(name, text);
    }
}

#[test]
fn export_of_the_seeds_example_is_the_seeds_format() {
    let scratch_dir = scratch("export-seed");
    let dir = scratch_dir.path();
    let file = dir.join("log.jsonl");
    let turn = json!({
        "kind": "turn", "ts": "2026-11-11T09:00:00+08:00", "session": "x", "turn": 1,
        "message": "这件T恤会缩水吗?", "reply": "我们的T恤经过预缩处理,正常洗涤不会明显缩水。建议冷水手洗延长使用寿命。",
        "source": "rule", "intent": "商品.缩水", "confidence": 0.95, "latency_ms": 0.05, "rules": "v1"
    });
    std::fs::write(&file, format!("{turn}\n")).unwrap();
    let mut out = Vec::new();
    export::export(&[file], &ExportOptions::default(), &mut out, Path::new("-")).unwrap();
    // The training-data example of seed 000, byte for byte.
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"input_text\":\"用户:这件T恤会缩水吗?\\n客服:\",\"target_text\":\"我们的T恤经过预缩处理,正常洗涤不会明显缩水。建议冷水手洗延长使用寿命。\"}\n"
    );
}

#[test]
fn an_agent_answer_after_a_bot_handoff_is_exported() {
    let scratch_dir = scratch("export-handoff");
    let dir = scratch_dir.path();
    let file = dir.join("log.jsonl");
    let lines = [
        json!({"kind": "turn", "ts": "2026-11-11T09:00:00+08:00", "session": "x", "turn": 1,
               "message": "衣服破了个洞", "reply": "亲，正在为您转接人工客服，请稍候～", "source": "handoff",
               "intent": "售后.质量问题", "confidence": 0.9, "handoff": "质量问题需人工核实",
               "latency_ms": 0.05, "rules": "v1"}),
        json!({"kind": "turn", "ts": "2026-11-11T09:00:20+08:00", "session": "x", "turn": 1,
               "message": "在吗", "reply": "", "source": "human", "confidence": 0.0,
               "handoff": "质量问题需人工核实", "latency_ms": 0.02, "rules": "v1"}),
        json!({"kind": "agent", "ts": "2026-11-11T09:01:00+08:00", "session": "x", "text": "在的，给您补发一件。"}),
        json!({"kind": "agent", "ts": "2026-11-11T09:01:10+08:00", "session": "x", "text": "运费我们出。"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let options = ExportOptions {
        format: Format::Messages,
        ..ExportOptions::default()
    };
    let mut out = Vec::new();
    let summary = export::export(&[file], &options, &mut out, Path::new("-")).unwrap();
    assert_eq!((summary.written, summary.agent), (1, 1), "{summary:?}");
    // The handoff notice is not in the context; the second agent message answers nothing.
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"messages\":[{\"role\":\"user\",\"content\":\"衣服破了个洞\\n在吗\"},\
         {\"role\":\"assistant\",\"content\":\"在的，给您补发一件。\"}]}\n"
    );
}

#[test]
fn written_lines_have_phone_id_and_card_masked() {
    let scratch_dir = scratch("masking");
    let dir = scratch_dir.path();
    let rules = safety_rules();
    let engine = Arc::new(Engine::new(Arc::clone(&rules)));
    let current = Arc::clone(&engine);
    let (log, guard) = ConversationLog::open(LogConfig::new(dir), move || current.rules()).unwrap();

    // Through the engine, as the server logs a turn.
    let response = engine
        .turn(TurnRequest::new("m1", "电话13812345678，身份证110101199003074514"))
        .unwrap();
    assert!(log.turn(&response, Some("vip"), 0, 0));
    // Texts no filter saw: an agent's answer, a comment, and a record pushed as is.
    assert!(log.agent_reply("m1", Some("小王"), "退到卡6222020200112233446，有事打13912345678"));
    assert!(log.feedback("m1", 5, Some("身份证11010519491231109X不用填吧"), None));
    assert!(log.push(Record::Agent(AgentRecord {
        ts: log.now(),
        session: "m1".into(),
        agent: None,
        text: "客户邮箱 zhang.san@example.com".into(),
    })));
    drop(guard);

    let text = std::fs::read_to_string(std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path()).unwrap();
    for raw in [
        "13812345678",
        "110101199003074514",
        "6222020200112233446",
        "13912345678",
        "11010519491231109X",
        "zhang.san@example.com",
    ] {
        assert!(!text.contains(raw), "{raw} leaked into the log:\n{text}");
    }
    let records = read_dir_records(dir);
    assert_eq!(records.len(), 4);
    let Record::Turn(turn) = &records[0] else {
        panic!("{records:?}")
    };
    assert_eq!(turn.message, "电话138****5678，身份证1***************14");
    assert_eq!(turn.segment.as_deref(), Some("vip"));
    assert_eq!(turn.safety, vec!["pii phone", "pii id_card"]);
    assert_eq!((turn.turn, turn.rules.as_str()), (1, rules.version.as_str()));
    let Record::Agent(agent) = &records[1] else {
        panic!("{records:?}")
    };
    assert_eq!(agent.text, "退到卡6222***********3446，有事打139****5678");
    assert_eq!(log.counts().written, 4);
}

fn turn_at(ts: DateTime<FixedOffset>, n: u32) -> Record {
    Record::Turn(TurnRecord {
        ts,
        session: format!("r{}", n / 3),
        turn: n % 3 + 1,
        segment: None,
        user: None,
        context: None,
        profile_cut: false,
        as_of: None,
        channel: None,
        event: None,
        message: format!("第{n}个问题：什么时候发货"),
        reply: "亲，付款后48小时内发货哦～".into(),
        source: AnswerSource::Rule,
        rule: Some("发货时间".into()),
        promotion: None,
        flow: None,
        step: None,
        faq: None,
        intent: Some("物流.发货时间".into()),
        confidence: 0.9,
        answer_confidence: None,
        handoff: None,
        safety: Vec::new(),
        latency_ms: 0.05,
        prompt_tokens: 0,
        completion_tokens: 0,
        rules: "v1".into(),
        script_errors: 0,
        node: "n1".into(),
        dropped: false,
        withheld: false,
        images: Vec::new(),
    })
}

#[test]
fn files_rotate_by_size_and_by_day_and_resume() {
    let scratch_dir = scratch("rotation");
    let dir = scratch_dir.path();
    let rules = safety_rules();
    let config = LogConfig {
        max_bytes: 2_000,
        ..LogConfig::new(dir)
    };
    let current = Arc::clone(&rules);
    let (log, guard) = ConversationLog::open(config.clone(), move || Arc::clone(&current)).unwrap();
    // 40 records over 20 minutes across midnight: 20 on the 11th, 20 on the 12th.
    let records: Vec<Record> = (0..40).map(|n| turn_at(at(i64::from(n) / 2), n)).collect();
    for record in &records {
        assert!(log.push(record.clone()));
    }
    drop(guard);

    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let day = |name: &str| name[14..24].to_string();
    assert!(names.iter().any(|n| day(n) == "2026-11-11") && names.iter().any(|n| day(n) == "2026-11-12"));
    assert!(names.len() >= 4, "2,000 bytes hold about ten lines: {names:?}");
    for name in &names {
        let size = std::fs::metadata(dir.join(name)).unwrap().len();
        assert!(size <= 2_000, "{name} is {size} bytes");
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        for line in text.lines() {
            let record: Record = serde_json::from_str(line).unwrap();
            assert_eq!(day(name), record.ts().format("%Y-%m-%d").to_string(), "{name}");
        }
    }
    // Nothing lost, nothing split, in order.
    assert_eq!(read_dir_records(dir), records);

    // A restart goes on with the day's last file while it has room.
    let last = names.last().unwrap().clone();
    let before = std::fs::metadata(dir.join(&last)).unwrap().len();
    let next = turn_at(at(30), 99);
    let len = serde_json::to_string(&next).unwrap().len() as u64 + 1;
    assert!(before + len <= 2_000, "the fixture must leave room in {last}");
    let current = Arc::clone(&rules);
    let (log, guard) = ConversationLog::open(config, move || Arc::clone(&current)).unwrap();
    assert!(log.push(next));
    drop(guard);
    let after: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(after.len(), names.len());
    assert!(std::fs::metadata(dir.join(&last)).unwrap().len() > before);
}

/// The records in the one file `path`.
fn file_records(path: &Path) -> Vec<Record> {
    let mut records = Vec::new();
    kefu::data::read(&[path.to_path_buf()], |r, _| records.push(r)).unwrap();
    records
}

/// Pushes `record` and waits until the flusher has written it (`written` reaches `n`).
fn written(log: &ConversationLog, record: Record, n: u64) {
    assert!(log.push(record));
    assert!(
        support::http::eventually(std::time::Duration::from_secs(10), || log.counts().written >= n),
        "{:?}",
        log.counts()
    );
}

#[test]
fn a_moved_or_deleted_log_file_is_followed_by_a_new_one_at_its_path() {
    let scratch_dir = scratch("moved");
    let dir = scratch_dir.path();
    let rules = safety_rules();
    let config = LogConfig {
        interval: std::time::Duration::from_millis(10),
        check_interval: std::time::Duration::ZERO,
        ..LogConfig::new(dir)
    };
    let (log, guard) = ConversationLog::open(config, move || Arc::clone(&rules)).unwrap();
    let records: Vec<Record> = (0..4).map(|n| turn_at(at(0), n)).collect();
    written(&log, records[0].clone(), 1);
    let path = kefu::data::files(&[dir.to_path_buf()]).unwrap().pop().unwrap();
    // logrotate's default: rename, then the writer is to start a new file at the name.
    let moved = dir.join("rotated.jsonl.1");
    std::fs::rename(&path, &moved).unwrap();
    written(&log, records[1].clone(), 2);
    written(&log, records[2].clone(), 3);
    // Deleted outright: the same.
    let deleted = file_records(&path);
    std::fs::remove_file(&path).unwrap();
    written(&log, records[3].clone(), 4);
    drop(guard);
    assert_eq!(file_records(&moved), records[..1]);
    assert_eq!(deleted, records[1..3]);
    assert_eq!(file_records(&path), records[3..]);
    assert_eq!(log.counts().failed, 0);
}

#[test]
fn reopen_opens_the_log_file_again_at_once() {
    let scratch_dir = scratch("reopen");
    let dir = scratch_dir.path();
    let rules = safety_rules();
    let config = LogConfig {
        interval: std::time::Duration::from_millis(10),
        // The check alone would not see the move within the test.
        check_interval: std::time::Duration::from_secs(3600),
        ..LogConfig::new(dir)
    };
    let (log, guard) = ConversationLog::open(config, move || Arc::clone(&rules)).unwrap();
    let records: Vec<Record> = (0..2).map(|n| turn_at(at(0), n)).collect();
    written(&log, records[0].clone(), 1);
    let path = kefu::data::files(&[dir.to_path_buf()]).unwrap().pop().unwrap();
    let moved = dir.join("rotated.jsonl.1");
    std::fs::rename(&path, &moved).unwrap();
    log.reopen();
    written(&log, records[1].clone(), 2);
    drop(guard);
    assert_eq!(file_records(&moved), records[..1]);
    assert_eq!(file_records(&path), records[1..]);
}

#[test]
fn serve_logs_turns_agent_answers_and_feedback() {
    use support::http::TestServer;
    let scratch_dir = scratch("serve");
    let dir = scratch_dir.path();
    let mut config = kefu::server::ServeConfig::new("rules");
    config.watch = false;
    config.conversation_log = Some(LogConfig::new(dir));
    let server = TestServer::start(config);
    let reply = server.post(
        "/v1/chat",
        &json!({ "session_id": "c1", "message": "这件T恤洗了会缩水吗", "user": { "segment": "vip" } }),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json()["session_token"].clone();
    assert_eq!(
        server
            .post("/v1/sessions/c1/takeover", &json!({ "agent": "小王" }))
            .status,
        200
    );
    server.chat("c1", "我电话13812345678");
    assert_eq!(
        server
            .post("/v1/sessions/c1/reply", &json!({ "message": "好的，稍后打给您" }))
            .status,
        200
    );
    assert_eq!(server.post("/v1/sessions/c1/release", &json!({})).status, 200);
    assert_eq!(
        server
            .post(
                "/v1/sessions/c1/feedback",
                &json!({ "score": 4, "comment": "不错", "session_token": token })
            )
            .status,
        200
    );
    let metrics = server.get("/metrics").body;
    assert!(metrics.contains("kefu_conversation_log_dropped_total 0"), "{metrics}");
    // Stopping the server writes what is left.
    drop(server);

    let records = read_dir_records(dir);
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| match r {
            Record::Turn(_) => "turn",
            Record::Agent(_) => "agent",
            Record::Takeover(_) => "takeover",
            Record::Release(_) => "release",
            Record::Feedback(_) => "feedback",
            Record::Resolve(_) => "resolve",
            Record::Requeue(_) => "requeue",
            Record::Note(_) => "note",
            Record::Event(_) => "event",
            Record::Proactive(_) => "proactive",
        })
        .collect();
    assert_eq!(kinds, ["turn", "takeover", "turn", "agent", "release", "feedback"]);
    let Record::Turn(first) = &records[0] else {
        unreachable!()
    };
    assert_eq!(
        (first.source, first.segment.as_deref()),
        (AnswerSource::Rule, Some("vip"))
    );
    assert_eq!(first.message, "这件T恤洗了会缩水吗");
    let Record::Turn(queued) = &records[2] else {
        unreachable!()
    };
    assert_eq!(
        (queued.source, queued.message.as_str()),
        (AnswerSource::Human, "我电话138****5678")
    );
    let Record::Agent(agent) = &records[3] else {
        unreachable!()
    };
    assert_eq!(agent.agent.as_deref(), Some("小王"));
}
