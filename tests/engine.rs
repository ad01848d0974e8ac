//! The turn engine: conversations under `tests/data/engine/tests/` replayed and
//! snapshotted, plus what a conversation file cannot express (reloads, pauses).

mod support;

use std::path::Path;
use std::sync::Arc;

use kefu::conversation::{self, Conversation};
use kefu::engine::AnswerSource;
use kefu::{Engine, RuleSet, TurnRequest};

const DIR: &str = "tests/data/engine";

fn rules() -> Arc<RuleSet> {
    let (compiled, rendered) = support::check(Path::new(DIR));
    Arc::new(
        compiled
            .rules
            .unwrap_or_else(|| panic!("engine fixture must compile:\n{rendered}")),
    )
}

fn at(minutes: i64) -> TurnRequest {
    let t =
        chrono::DateTime::parse_from_rfc3339("2026-11-05T10:00:00+08:00").unwrap() + chrono::Duration::minutes(minutes);
    TurnRequest {
        session_id: "s".into(),
        as_of: Some(t),
        ..TurnRequest::default()
    }
}

fn say(engine: &Engine, minutes: i64, message: &str) -> kefu::TurnResponse {
    engine.turn(TurnRequest {
        message: message.into(),
        ..at(minutes)
    })
}

#[test]
fn every_engine_conversation_passes_and_matches_its_snapshot() {
    let rules = rules();
    let files = conversation::files(Path::new(DIR)).unwrap();
    assert!(files.len() >= 15, "{} conversations", files.len());
    for file in files {
        let outcome = conversation::run_file(&rules, &file);
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        assert!(
            outcome.passed(),
            "{name}: {:#?}",
            outcome.turns.iter().flat_map(|t| &t.failures).collect::<Vec<_>>()
        );
        insta::assert_yaml_snapshot!(format!("engine_{name}"), outcome);
    }
}

#[test]
fn a_wrong_expectation_fails_the_conversation() {
    let conversation: Conversation = serde_yaml::from_str(
        "name: wrong\nturns:\n  - say: 怎么开发票\n    expect: { source: flow, reply_contains: [不存在的字] }\n",
    )
    .unwrap();
    let outcome = conversation::run(&rules(), &conversation, Path::new("wrong.yaml"));
    assert!(!outcome.passed());
    assert_eq!(outcome.turns[0].failures.len(), 2, "{:?}", outcome.turns[0].failures);
}

#[test]
fn a_flow_resumes_by_slot_name_after_a_reload_that_reorders_it() {
    let dir = tempdir("reorder");
    let engine = Engine::new(rules());
    assert_eq!(
        say(&engine, 0, "我想换个颜色")
            .step
            .as_deref()
            .map(|s| s.starts_with("ask new_color")),
        Some(true)
    );
    // The edited flow asks for a note first; the customer is still answering the colour.
    let text = std::fs::read_to_string(Path::new(DIR).join("shop.kefu"))
        .unwrap()
        .replace(
            "  ask new_color as color \"您想换成什么颜色？\"\n  ask note \"还有什么要备注的吗？\"",
            "  ask note \"还有什么要备注的吗？\"\n  ask new_color as color \"您想换成什么颜色？\"",
        );
    std::fs::write(dir.join("shop.kefu"), text).unwrap();
    engine.swap_rules(kefu::dsl::load_dir(&dir).rules.expect("edited rules load"));
    let r = say(&engine, 1, "黑色");
    assert_eq!(r.source, AnswerSource::Flow);
    assert_eq!(
        engine.session("s").unwrap().slots.get("new_color").map(String::as_str),
        Some("黑色")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_flow_that_disappears_in_a_reload_gives_way_to_a_fresh_decision() {
    let dir = tempdir("removed");
    let engine = Engine::new(rules());
    say(&engine, 0, "我要退货");
    assert!(engine.session("s").unwrap().flow.is_some());
    let text = std::fs::read_to_string(Path::new(DIR).join("shop.kefu")).unwrap();
    let start = text.find("flow 退货申请").unwrap();
    let end = text[start..].find("\n}\n").unwrap() + start + 3;
    std::fs::write(dir.join("shop.kefu"), format!("{}{}", &text[..start], &text[end..])).unwrap();
    engine.swap_rules(kefu::dsl::load_dir(&dir).rules.expect("edited rules load"));
    let r = say(&engine, 1, "怎么开发票");
    assert_eq!((r.source, r.rule.as_deref()), (AnswerSource::Rule, Some("发票")));
    assert!(
        r.trace.iter().any(|t| t.detail.contains("no longer exists")),
        "{:?}",
        r.trace
    );
    assert!(engine.session("s").unwrap().flow.is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_flow_left_waiting_too_long_starts_over() {
    let engine = Engine::new(rules());
    say(&engine, 0, "我要退货");
    // 31 minutes later the customer asks something else: no stale question in the way.
    let r = say(&engine, 31, "怎么开发票");
    assert_eq!(r.rule.as_deref(), Some("发票"));
    assert!(
        r.trace.iter().any(|t| t.detail.contains("left waiting 31 min")),
        "{:?}",
        r.trace
    );
    // Within the limit the flow resumes.
    say(&engine, 40, "我要退货");
    let r = say(&engine, 45, "202611010001");
    assert!(r.reply.contains("已为您提交退货申请"), "{}", r.reply);
    assert_eq!(engine.tickets().len(), 1);
    assert_eq!(engine.tickets()[0].reference, "202611010001");
}

#[test]
fn a_takeover_queues_messages_until_released() {
    let engine = Engine::new(rules());
    say(&engine, 0, "我要退货");
    engine.takeover("s", Some("小王".into())).unwrap();
    let r = say(&engine, 1, "人呢");
    assert_eq!((r.source, r.reply.as_str()), (AnswerSource::Human, ""));
    let session = engine.session("s").unwrap();
    assert!(session.flow.is_none(), "a takeover ends the flow");
    assert_eq!(session.takeover.as_ref().unwrap().queued, ["人呢"]);
    engine.agent_reply("s", "您好，我来帮您").unwrap();
    assert!(engine.session("s").unwrap().takeover.unwrap().queued.is_empty());
    engine.release("s").unwrap();
    assert_eq!(say(&engine, 2, "怎么开发票").source, AnswerSource::Rule);
    assert!(engine.release("nobody").is_err());
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kefu-engine-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(Path::new(DIR).join("orders.yaml"), dir.join("orders.yaml")).unwrap();
    dir
}
