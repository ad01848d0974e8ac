//! The agents' queues on a shop of their own (`tests/data/queues/`): each handoff's kind,
//! routing by `to`, `for` and the default queue, opening hours (past midnight too), the
//! off-hours reply and its ticket, the waiting text with the place the service's queues
//! give; and the demo shop's canned replies.

mod support;

use std::path::Path;
use std::sync::Arc;

use chrono::DateTime;
use kefu::conversation;
use kefu::dialogue::HandoffKind;
use kefu::engine::queue::{Place, Queues};
use kefu::{Engine, RuleSet, TurnRequest};

const DIR: &str = "tests/data/queues";

fn rules() -> Arc<RuleSet> {
    let (compiled, rendered) = support::check(Path::new(DIR));
    assert!(compiled.report.diagnostics.is_empty(), "{rendered}");
    Arc::new(compiled.rules.expect("the queues fixture compiles"))
}

#[test]
fn every_queue_conversation_passes_and_matches_its_snapshot() {
    let rules = rules();
    let names: Vec<&str> = rules.queues.iter().map(|q| q.name.as_str()).collect();
    // Routing order: priority, then file order; 总台 (no `for`) is the default.
    assert_eq!(names, ["售后", "夜班", "财务", "总台"]);
    assert_eq!(rules.default_queue, Some(3));
    let files = conversation::files(Path::new(DIR)).unwrap();
    assert_eq!(files.len(), 10);
    for file in files {
        let outcome = conversation::run_file(&rules, &file);
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        assert!(
            outcome.passed(),
            "{name}: {:?} {:#?}",
            outcome.error,
            outcome.turns.iter().flat_map(|t| &t.failures).collect::<Vec<_>>()
        );
        insta::assert_yaml_snapshot!(format!("queues_{name}"), outcome);
    }
}

/// The service's queues, as a test sets them.
struct Fixed(Place);

impl Queues for Fixed {
    fn place(&self, group: &str) -> Place {
        assert_eq!(group, "售后", "the engine asks about the queue it routed to");
        self.0
    }
}

fn at(time: &str) -> Option<DateTime<chrono::FixedOffset>> {
    Some(DateTime::parse_from_rfc3339(time).unwrap())
}

fn ask(engine: &Engine, session: &str, message: &str, time: &str) -> kefu::TurnResponse {
    let mut request = TurnRequest::new(session, message);
    request.as_of = at(time);
    engine.turn(request).unwrap()
}

#[test]
fn the_waiting_text_tells_the_place_the_services_queues_give_and_the_takeover_waits_in_its_queue() {
    let engine = Engine::new(rules()).with_queues(Arc::new(Fixed(Place {
        position: 3,
        wait_minutes: Some(7),
    })));
    let r = ask(&engine, "s1", "我要退货", "2026-11-05T10:00:00+08:00");
    assert_eq!(
        r.reply,
        "退货请在订单里申请。\n正在为您转人工。\n已排入售后组，第 3 位，约 7 分钟。"
    );
    let handoff = r.handoff.expect("a handoff");
    assert_eq!(
        (handoff.kind, handoff.group.as_deref(), handoff.off_hours, handoff.place),
        (HandoffKind::Rule, Some("售后"), false, Some(3))
    );
    let session = engine.session("s1").unwrap().unwrap();
    let takeover = session.takeover.as_ref().expect("the conversation waits for a person");
    assert_eq!(
        (takeover.kind, takeover.group.as_deref()),
        (HandoffKind::Rule, Some("售后"))
    );
    assert!(!takeover.held() && takeover.since > 0);
    assert_eq!(session.state(), kefu::dialogue::ConvState::Waiting);
    assert!(engine.tickets().is_empty());
}

#[test]
fn a_turn_that_does_not_hand_off_never_looks_at_the_queues() {
    // `place` asserts the group: a call for any turn here would fail the test.
    let engine = Engine::new(rules()).with_queues(Arc::new(Fixed(Place::default())));
    let r = ask(&engine, "s2", "尺码怎么选", "2026-11-05T10:00:00+08:00");
    assert!(r.handoff.is_none());
    assert!(!r.trace.iter().any(|s| s.stage == "queue"), "{:?}", r.trace);
}

#[test]
fn after_hours_a_handoff_raises_a_ticket_with_what_the_back_office_needs_and_the_bot_keeps_the_conversation() {
    let engine = Engine::new(rules());
    // A Saturday: 财务 works Monday to Friday.
    let r = ask(&engine, "s3", "要开专票", "2026-11-07T10:00:00+08:00");
    let handoff = r.handoff.expect("a handoff");
    assert!(handoff.off_hours && handoff.place.is_none());
    assert_eq!(handoff.group.as_deref(), Some("财务"));
    let tickets = engine.tickets();
    assert_eq!(tickets.len(), 1);
    let ticket = &tickets[0];
    assert_eq!((ticket.kind.as_str(), ticket.reference.as_str()), ("handoff", "财务"));
    let details: Vec<(&str, &str)> = ticket.details.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        details,
        [
            ("group", "财务"),
            ("kind", "rule"),
            ("message", "要开专票"),
            ("reason", "开专票")
        ]
    );
    let session = engine.session("s3").unwrap().unwrap();
    assert!(session.takeover.is_none());
    assert_eq!(session.state(), kefu::dialogue::ConvState::Bot);
    // The next message is the bot's again.
    let r = ask(&engine, "s3", "尺码怎么选", "2026-11-07T10:01:00+08:00");
    assert_ne!(r.source, kefu::engine::AnswerSource::Human);
}

#[test]
fn the_demo_shops_canned_replies_load_and_are_found_by_group() {
    let (compiled, rendered) = support::check(Path::new("rules"));
    let rules = compiled.rules.unwrap_or_else(|| panic!("{rendered}"));
    assert!((10..=15).contains(&rules.kb.canned.len()), "{}", rules.kb.canned.len());
    let titles = |query: &str, group: Option<&str>| -> Vec<String> {
        rules
            .kb
            .search_canned(query, group, 3)
            .into_iter()
            .map(|c| c.title.clone())
            .collect()
    };
    assert_eq!(
        titles("退货", Some("售后")).first().map(String::as_str),
        Some("退货上门取件")
    );
    assert_eq!(
        titles("尺码", Some("售前")).first().map(String::as_str),
        Some("尺码推荐")
    );
    // Another group's reply is not offered.
    assert!(!titles("尺码", Some("售后")).contains(&"尺码推荐".to_string()));
    assert_eq!(titles("", None).len(), 3);
    // Every group a demo canned reply names is a queue.
    for canned in &rules.kb.canned {
        if let Some(group) = &canned.group {
            assert!(rules.queue(group).is_some(), "{group}");
        }
    }
}
