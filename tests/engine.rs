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
    engine
        .turn(TurnRequest {
            message: message.into(),
            ..at(minutes)
        })
        .unwrap()
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
        engine
            .session("s")
            .unwrap()
            .unwrap()
            .slots
            .get("new_color")
            .map(String::as_str),
        Some("黑色")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Publishes `shop.kefu` of the fixture with `edit` applied, as a reload would.
fn reload_edited(engine: &Engine, dir: &Path, edit: impl Fn(String) -> String) {
    let text = std::fs::read_to_string(Path::new(DIR).join("shop.kefu")).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit must change the fixture");
    std::fs::write(dir.join("shop.kefu"), edited).unwrap();
    engine.swap_rules(kefu::dsl::load_dir(dir).rules.expect("edited rules load"));
}

#[test]
fn a_slot_renamed_in_a_reload_keeps_the_other_slots_and_says_why_it_asks_again() {
    let dir = tempdir("renamed");
    let engine = Engine::new(rules());
    say(&engine, 0, "我想换个颜色");
    let r = say(&engine, 1, "换成黑的吧");
    assert!(r.step.as_deref().is_some_and(|s| s.starts_with("ask note")), "{r:?}");
    // While the customer is asked for a note, the editor renames `note` to `remark`.
    reload_edited(&engine, &dir, |text| {
        text.replace("ask note ", "ask remark ")
            .replace("slots.note", "slots.remark")
    });
    let r = say(&engine, 2, "尽快发货");
    assert_eq!(r.source, AnswerSource::Flow, "{r:?}");
    assert_eq!(r.reply, "抱歉，流程有更新，需要再确认一下：还有什么要备注的吗？");
    assert!(r.step.as_deref().is_some_and(|s| s.starts_with("ask remark")), "{r:?}");
    assert!(
        r.trace
            .iter()
            .any(|t| t.detail.contains("no longer asks for note") && t.detail.contains("going on at remark")),
        "{:?}",
        r.trace
    );
    // The colour the customer gave before the reload is kept.
    let session = engine.session("s").unwrap().unwrap();
    assert_eq!(session.slots.get("new_color").map(String::as_str), Some("黑色"));
    assert_eq!(
        session.flow.as_ref().and_then(|f| f.awaiting.as_deref()),
        Some("remark")
    );
    let r = say(&engine, 3, "尽快发货");
    assert_eq!(r.reply, "好的，帮您换成黑色，备注：尽快发货。");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_renamed_slot_the_message_already_answers_is_filled_without_asking() {
    let dir = tempdir("renamed-answered");
    let engine = Engine::new(rules());
    say(&engine, 0, "我想换个颜色");
    // The customer is asked for `new_color`; the editor renames it to `color`.
    reload_edited(&engine, &dir, |text| {
        text.replace("ask new_color as color", "ask color")
            .replace("slots.new_color", "slots.color")
    });
    let r = say(&engine, 1, "换成黑的吧");
    // The answer names a colour, so `color` is filled from it and the flow goes on, with
    // no apology: nothing is asked twice.
    assert_eq!(r.reply, "还有什么要备注的吗？", "{r:?}");
    assert_eq!(
        engine
            .session("s")
            .unwrap()
            .unwrap()
            .slots
            .get("color")
            .map(String::as_str),
        Some("黑色")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_reload_that_leaves_nothing_to_ask_ends_the_flow() {
    let dir = tempdir("nothing-left");
    let engine = Engine::new(rules());
    say(&engine, 0, "我想换个颜色");
    say(&engine, 1, "换成黑的吧");
    // The note is dropped from the flow; the colour is already known.
    reload_edited(&engine, &dir, |text| {
        text.replace("  ask note \"还有什么要备注的吗？\"\n", "")
            .replace("，备注：{slots.note}", "")
    });
    let r = say(&engine, 2, "怎么开发票");
    assert_eq!((r.source, r.rule.as_deref()), (AnswerSource::Rule, Some("发票")));
    assert!(
        r.trace.iter().any(|t| t.detail.contains("has nothing left to ask")),
        "{:?}",
        r.trace
    );
    assert!(engine.session("s").unwrap().unwrap().flow.is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn promotions_are_worked_out_only_for_turns_whose_scripts_read_them() {
    let dir = tempdir("lazy-promotions");
    let engine = Engine::new(rules());
    // A promotion whose audience fails for customers without `orders`: the trace shows
    // each time it is evaluated.
    reload_edited(&engine, &dir, |text| {
        format!(
            "{text}\npromotion 老客礼 {{\n  from 2026-11-01 to 2026-11-30\n  for `user.orders + 1 > 1`\n  say \"老客礼\"\n}}\n"
        )
    });
    let audience_failed = |r: &kefu::TurnResponse| {
        r.trace
            .iter()
            .any(|t| t.stage == "error" && t.detail.contains("老客礼"))
    };
    // No script of this turn reads `promotions`: no audience is evaluated for it.
    let r = say(&engine, 0, "怎么开发票");
    assert_eq!(r.rule.as_deref(), Some("发票"));
    assert!(!audience_failed(&r), "{:?}", r.trace);
    // 活动预告 reads `promotions.upcoming`: now the promotions are worked out, once.
    let r = say(&engine, 1, "有活动预告吗");
    let failures = r
        .trace
        .iter()
        .filter(|t| t.stage == "error" && t.detail.contains("老客礼"))
        .count();
    assert_eq!(failures, 1, "{:?}", r.trace);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_flow_that_disappears_in_a_reload_gives_way_to_a_fresh_decision() {
    let dir = tempdir("removed");
    let engine = Engine::new(rules());
    say(&engine, 0, "我要退货");
    assert!(engine.session("s").unwrap().unwrap().flow.is_some());
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
    assert!(engine.session("s").unwrap().unwrap().flow.is_none());
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
    engine.takeover("s", Some("小王".into()), false).unwrap();
    let r = say(&engine, 1, "人呢");
    assert_eq!((r.source, r.reply.as_str()), (AnswerSource::Human, ""));
    let session = engine.session("s").unwrap().unwrap();
    assert!(session.flow.is_none(), "a takeover ends the flow");
    assert_eq!(session.takeover.as_ref().unwrap().queued, ["人呢"]);
    engine.agent_reply("s", None, "您好，我来帮您").unwrap();
    assert!(
        engine
            .session("s")
            .unwrap()
            .unwrap()
            .takeover
            .unwrap()
            .queued
            .is_empty()
    );
    engine.release("s", None, false).unwrap();
    assert_eq!(say(&engine, 2, "怎么开发票").source, AnswerSource::Rule);
    assert!(engine.release("nobody", None, false).is_err());
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kefu-engine-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(Path::new(DIR).join("orders.yaml"), dir.join("orders.yaml")).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------
// Several questions in one message (`tests/data/multi`, docs/language.md section 1)
// ---------------------------------------------------------------------------------------

const MULTI: &str = "tests/data/multi";

fn multi_engine(max_answers: Option<usize>) -> Engine {
    let dir = match max_answers {
        None => Path::new(MULTI).to_path_buf(),
        Some(n) => {
            let dir = std::env::temp_dir().join(format!("kefu-multi-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let shop = std::fs::read_to_string(Path::new(MULTI).join("shop.kefu")).unwrap();
            let shop = shop.replace("max_answers 2", &format!("max_answers {n}"));
            std::fs::write(dir.join("shop.kefu"), shop).unwrap();
            dir
        }
    };
    let (compiled, rendered) = support::check(&dir);
    Engine::new(compiled.rules.unwrap_or_else(|| panic!("{rendered}")))
}

fn parts_of(response: &kefu::TurnResponse) -> Vec<(String, Option<String>)> {
    response
        .parts
        .iter()
        .map(|p| (p.text.clone(), p.rule.clone().or_else(|| p.flow.clone())))
        .collect()
}

#[test]
fn two_questions_get_two_answers_in_the_message_order() {
    let engine = multi_engine(None);
    let response = say(&engine, 0, "在吗 包邮吗 什么时候发货");
    assert_eq!(
        response.reply, "满69元包邮。\n16点前付款当天发。",
        "{:#?}",
        response.trace
    );
    // The provenance is the last answer's, whose question ends the reply.
    assert_eq!(response.source, AnswerSource::Rule);
    assert_eq!(response.rule.as_deref(), Some("发货"));
    assert_eq!(response.intent.as_deref(), Some("物流.发货时间"));
    assert_eq!(
        parts_of(&response),
        [
            ("包邮吗".to_string(), Some("运费".to_string())),
            ("什么时候发货".to_string(), Some("发货".to_string()))
        ]
    );
    assert!(
        response
            .trace
            .iter()
            .any(|s| s.stage == "split" && s.detail.starts_with("2 questions"))
    );
    // A single question is answered as before, with no parts.
    let single = say(&engine, 1, "什么时候发货");
    assert_eq!(single.reply, "16点前付款当天发。");
    assert!(single.parts.is_empty());
    assert!(!single.trace.iter().any(|s| s.stage == "split"));
}

#[test]
fn a_rule_on_both_intents_answers_the_combination_once() {
    let engine = multi_engine(None);
    let response = say(&engine, 0, "发票怎么开 另外什么时候发货");
    assert_eq!(
        response.reply, "发货后即可申请发票，16点前付款当天发。",
        "{:#?}",
        response.trace
    );
    assert_eq!(response.rule.as_deref(), Some("发票和发货"));
    assert!(
        response.trace.iter().any(|s| s.detail.contains("said once")),
        "{:#?}",
        response.trace
    );
    // Asked alone, each question has its own rule: `intents` holds only its intent.
    assert_eq!(say(&engine, 1, "发票怎么开").rule.as_deref(), Some("发票"));
}

#[test]
fn max_answers_limits_the_answers_and_one_turns_splitting_off() {
    let engine = multi_engine(None);
    let response = say(&engine, 0, "包邮吗 什么时候发货 有赠品吗");
    assert_eq!(
        response.reply, "满69元包邮。\n16点前付款当天发。",
        "{:#?}",
        response.trace
    );
    assert_eq!(response.parts.len(), 3);
    assert_eq!(response.parts[2].source, None);
    assert!(
        response.trace.iter().any(
            |s| s.detail == "part 3: not answered: the shop answers at most 2 questions of a message (max_answers)"
        ),
        "{:#?}",
        response.trace
    );
    let three = multi_engine(Some(3));
    let response = say(&three, 0, "包邮吗 什么时候发货 有赠品吗");
    assert_eq!(response.parts.len(), 3);
    assert_eq!(response.reply.lines().count(), 3, "{}", response.reply);
    let off = multi_engine(Some(1));
    let response = say(&off, 0, "包邮吗 什么时候发货");
    assert!(response.parts.is_empty());
    assert_eq!(response.reply.lines().count(), 1, "{}", response.reply);
}

#[test]
fn a_part_that_hands_off_hands_the_turn_off_after_the_answers_before_it() {
    let engine = multi_engine(None);
    let response = say(&engine, 0, "包邮吗？怎么投诉");
    assert_eq!(response.source, AnswerSource::Handoff, "{:#?}", response.trace);
    assert_eq!(
        response.handoff.as_ref().map(|h| h.reason.as_str()),
        Some("客户要求投诉")
    );
    assert!(response.reply.starts_with("满69元包邮。\n"), "{}", response.reply);
}

#[test]
fn a_flow_asked_for_before_another_question_asks_last_and_then_reads_the_whole_reply() {
    let engine = multi_engine(None);
    let response = say(&engine, 0, "怎么退货 运费多少");
    assert_eq!(
        response.reply, "满69元包邮。\n请问您的订单号是多少？",
        "{:#?}",
        response.trace
    );
    assert_eq!(response.flow.as_deref(), Some("退货申请"));
    assert_eq!(
        parts_of(&response),
        [
            ("怎么退货".to_string(), Some("退货申请".to_string())),
            ("运费多少".to_string(), Some("运费".to_string()))
        ]
    );
    // The flow waits: the message goes to it whole (here a digression it answers before
    // asking again), never split.
    let next = say(&engine, 1, "包邮吗 什么时候发货");
    assert!(next.parts.is_empty(), "{:#?}", next.trace);
    assert!(!next.trace.iter().any(|s| s.stage == "split"), "{:#?}", next.trace);
    assert!(next.reply.ends_with("请问您的订单号是多少？"), "{:#?}", next.trace);
}

#[test]
fn a_message_whose_parts_no_rule_answers_goes_the_usual_way_as_one() {
    let engine = multi_engine(None);
    let response = say(&engine, 0, "你们老板是谁 天气怎么样");
    assert_eq!(response.source, AnswerSource::Fallback, "{:#?}", response.trace);
    assert!(response.parts.is_empty());
    assert!(
        response
            .trace
            .iter()
            .any(|s| s.detail == "no question was answered on its own; the whole message is answered as one"),
        "{:#?}",
        response.trace
    );
}
