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
    assert!(
        engine.session("new").unwrap().is_none(),
        "a silent event stores no session"
    );

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
    // Four near-misses, and `order_paid`: a shop event, which reaches proactive items, never a rule.
    assert_eq!(rendered.matches("warning: ").count(), 5, "{rendered}");
    insta::assert_snapshot!("channels_check_warnings", rendered);
}

/// The fixed log of tests/datalog.rs with its turns spread over channels (its feedback
/// follows the session): a row per channel in order of first turn, the rows adding up to
/// the report's turns and sessions; the plain log (every turn the API's, as logs from
/// before channels) has no channels section at all.
#[test]
fn the_report_breaks_figures_down_by_channel() {
    use kefu::data::Record;
    use kefu::data::report::{self, ReportOptions};
    let files = vec![std::path::PathBuf::from("tests/data/datalog/conversations.jsonl")];
    let plain = report::report(&files, &ReportOptions::default()).unwrap();
    assert!(plain.channels.is_empty());
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json.get("channels").is_none(), "old reports keep their shape");

    let mut records = Vec::new();
    kefu::data::read(&files, |r, _| records.push(r)).unwrap();
    let mut sessions: Vec<String> = records.iter().map(|r| r.session().to_string()).collect();
    sessions.sort();
    sessions.dedup();
    // The first third of the sessions stay the API's, the next come through the widget,
    // the rest through WeChat, and one of those is a webhook's.
    let channel_of = |session: &str| {
        let i = sessions.iter().position(|s| s == session).unwrap();
        match i * 3 / sessions.len() {
            0 => None,
            1 => Some("web"),
            _ if i == sessions.len() - 1 => Some("taobao"),
            _ => Some("wechat_mp"),
        }
    };
    for record in &mut records {
        if let Record::Turn(turn) = record {
            turn.channel = channel_of(&turn.session).map(str::to_string);
        }
    }
    let report = report::report_of(records.clone(), &ReportOptions::default());
    let names: Vec<&str> = report.channels.iter().map(|c| c.channel.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["api", "taobao", "web", "wechat_mp"], "{names:?}");
    assert_eq!(report.channels.iter().map(|c| c.turns).sum::<u64>(), report.turns);
    assert_eq!(
        report.channels.iter().map(|c| c.conversations).sum::<u64>(),
        report.sessions
    );
    assert_eq!(
        report.channels.iter().map(|c| c.handoffs.count).sum::<u64>(),
        report.handoffs.sessions.count,
        "each handed-off conversation counts once, for its channel"
    );
    assert_eq!(
        report.channels.iter().map(|c| c.feedback).sum::<u64>(),
        report.satisfaction.scores
    );
    // Worked out from the records themselves, so that a snapshot accepted by mistake
    // still fails here.
    for row in &report.channels {
        let mine: Vec<&kefu::data::record::TurnRecord> = records
            .iter()
            .filter_map(|r| if let Record::Turn(t) = r { Some(t) } else { None })
            .filter(|t| t.channel_name() == row.channel)
            .collect();
        assert_eq!(row.turns, mine.len() as u64, "{}", row.channel);
        let fallbacks = mine.iter().filter(|t| t.source == AnswerSource::Fallback).count();
        assert_eq!(row.fallbacks.count, fallbacks as u64, "{}", row.channel);
    }
    insta::assert_snapshot!("channels_report_text", report.to_string());
    let html = kefu::data::html::render(&report);
    assert!(html.contains("<h2>Channels</h2>"));
    assert!(html.contains("<td>wechat_mp</td>"));
}

/// A turn's record names its channel and event, and leaves `api` out so that a log line
/// of the API reads as it did before channels; a line without them reads as the API's.
#[test]
fn a_turn_record_keeps_its_channel_and_event() {
    use kefu::data::record::TurnRecord;
    let engine = Engine::new(rules());
    let request = event("s", "subscribe", "wechat_mp");
    let response = engine.turn(request.clone()).unwrap();
    let ts = chrono::DateTime::parse_from_rfc3339("2026-11-11T10:00:00+08:00").unwrap();
    let record = TurnRecord::from_response(&response, ts, None, (0, 0), "n").with_request(&request);
    assert_eq!(record.channel.as_deref(), Some("wechat_mp"));
    assert_eq!(record.event.as_deref(), Some("subscribe"));
    let line = serde_json::to_string(&record).unwrap();
    assert!(line.contains(r#""channel":"wechat_mp","event":"subscribe""#), "{line}");

    let api = TurnRequest::new("t", "你好");
    let response = engine.turn(api.clone()).unwrap();
    let record = TurnRecord::from_response(&response, ts, None, (0, 0), "n").with_request(&api);
    let line = serde_json::to_string(&record).unwrap();
    assert!(!line.contains("channel") && !line.contains("event"), "{line}");
    let back: TurnRecord = serde_json::from_str(&line).unwrap();
    assert_eq!(back.channel_name(), "api");
}
