//! Channels and platform events in the rules (`tests/data/channels/`): `on event` rules
//! and flow starts answering events, events nothing answers kept silent and out of the
//! conversation, replies that depend on `channel`, quick replies (`choices`), and
//! `kefu check`'s warnings about near-misses of channel and event names.

mod support;

use std::path::Path;
use std::sync::Arc;

use kefu::conversation;
use kefu::engine::{AnswerSource, Engine, TurnRequest};

const DIR: &str = "tests/data/channels";

fn rules() -> Arc<kefu::RuleSet> {
    let (compiled, rendered) = support::check(Path::new(DIR));
    assert!(!compiled.report.has_errors(), "{rendered}");
    Arc::new(compiled.rules.expect("the channels fixture compiles"))
}

#[test]
fn every_channels_conversation_passes_and_matches_its_snapshot() {
    let rules = rules();
    let files = conversation::files(Path::new(DIR)).unwrap();
    assert_eq!(files.len(), 4);
    for file in files {
        let outcome = conversation::run_file(&rules, &file);
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        assert!(
            outcome.passed(),
            "{name}: {:#?}",
            outcome.turns.iter().flat_map(|t| &t.failures).collect::<Vec<_>>()
        );
        insta::assert_yaml_snapshot!(format!("channels_{name}"), outcome);
    }
}

fn event(session: &str, name: &str, channel: &str) -> TurnRequest {
    TurnRequest {
        event: Some(name.into()),
        channel: Some(channel.into()),
        ..TurnRequest::new(session, "")
    }
}

/// An event nothing answers writes nothing: no session for a new conversation, no
/// history entry, no failure, no turn, in an existing one.
#[test]
fn a_silent_event_leaves_the_conversation_as_it_was() {
    let engine = Engine::new(rules());
    let silent = engine.turn(event("new", "unsubscribe", "wechat_mp")).unwrap();
    assert_eq!(silent.source, AnswerSource::Silent);
    assert!(silent.reply.is_empty() && silent.choices.is_empty());
    assert!(engine.session("new").unwrap().is_none(), "a silent event stores no session");

    let first = engine.turn(TurnRequest::new("s", "随便说点什么吧")).unwrap();
    assert_eq!(first.source, AnswerSource::Fallback);
    let before = engine.session("s").unwrap().unwrap();
    assert_eq!(before.failures, 1);
    let silent = engine.turn(event("s", "unsubscribe", "wechat_mp")).unwrap();
    assert_eq!(silent.source, AnswerSource::Silent);
    assert_eq!(silent.session_token, before.token, "the stored token, not a new one");
    let after = engine.session("s").unwrap().unwrap();
    assert_eq!(after.history.len(), before.history.len());
    assert_eq!((after.turns, after.failures), (before.turns, before.failures));
}

/// An answered event keeps kefu's reply in the history (and no empty customer line),
/// counts a turn, and neither resets nor adds to the failures in a row.
#[test]
fn an_answered_event_keeps_only_the_reply() {
    let engine = Engine::new(rules());
    engine.turn(TurnRequest::new("s", "随便说点什么吧")).unwrap();
    let answered = engine.turn(event("s", "subscribe", "wechat_mp")).unwrap();
    assert_eq!(answered.rule.as_deref(), Some("关注欢迎"));
    assert!(answered.message.is_empty());
    let session = engine.session("s").unwrap().unwrap();
    assert_eq!(session.turns, 2);
    assert_eq!(session.failures, 1, "an event is no attempt of the customer's");
    let roles: Vec<kefu::dialogue::Role> = session.history.iter().map(|e| e.role).collect();
    use kefu::dialogue::Role::{Bot, User};
    assert_eq!(roles, [User, Bot, Bot], "the fallback, then the welcome");
    assert_eq!(&*session.history[2].text, answered.reply);
}

/// A message's text is ignored in an event's turn: only `on event` rules answer, never a
/// keyword of the text, the FAQ or the fallback.
#[test]
fn an_event_is_never_understood_as_a_message() {
    let engine = Engine::new(rules());
    let mut request = event("s", "order_paid", "taobao");
    request.message = "怎么联系人工".into();
    let response = engine.turn(request).unwrap();
    assert_eq!(response.source, AnswerSource::Silent);
    assert_eq!(response.intent, None);
}

/// A person holding the conversation gets no empty message queued for an event.
#[test]
fn an_event_during_a_takeover_is_silent_and_not_queued() {
    let engine = Engine::new(rules());
    engine.turn(TurnRequest::new("s", "你好")).unwrap();
    engine.takeover("s", Some("小王".into()), false).unwrap();
    let response = engine.turn(event("s", "subscribe", "wechat_mp")).unwrap();
    assert_eq!(response.source, AnswerSource::Silent);
    let session = engine.session("s").unwrap().unwrap();
    assert!(session.takeover.unwrap().queued.is_empty());
}

#[test]
fn english_yes_no_choices_follow_the_turns_language() {
    let engine = Engine::new(rules());
    let zh = engine.turn(TurnRequest::new("zh", "有什么优惠")).unwrap();
    assert_eq!(zh.choices, ["是", "不用了"]);
    let handed = engine.turn(TurnRequest::new("zh", "是")).unwrap();
    assert!(handed.choices.is_empty(), "{handed:?}");
}

/// `kefu check` on a pack comparing `channel` and `event` with near-misses: one warning
/// each at its file:line:col, nothing for webhook channel names or other events.
#[test]
fn near_misses_of_channel_and_event_names_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shop.kefu"),
        r#"shop "店" { timezone "Asia/Shanghai" }

rule 微信 {
  on keywords "微信"
  when `channel == "wechat" || channel == "taobao"`
  reply "a"
}

rule 网页 {
  on keywords "网页"
  when `"widget" != channel && event == ""`
  reply "b"
}

rule 关注 {
  on event follow
  reply "c"
}

rule 自定义 {
  on event order_paid
  when `event == "subscrib" || channel == "web"`
  reply "d"
}
"#,
    )
    .unwrap();
    let checked = kefu::dsl::check_dir(dir.path());
    let rendered = checked.render(dir.path(), false);
    let rendered = rendered.replace(&dir.path().display().to_string(), "[dir]");
    assert!(!checked.report.has_errors(), "{rendered}");
    assert_eq!(rendered.matches("warning: ").count(), 4, "{rendered}");
    insta::assert_snapshot!("channels_check_warnings", rendered);
}
