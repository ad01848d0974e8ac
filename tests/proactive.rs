//! Proactive messages and photos on a shop of their own (`tests/data/proactive/`): shop
//! events tried against `proactive` items and their guard rails (conditions, priority,
//! offers, the item's and the shop's daily limits, quiet hours, a flow running, a person
//! holding the conversation, the opt-out), `on image` rules and a flow asking for a photo;
//! conversations replayed and snapshotted. Also what `Engine::event` stores and reports,
//! the log's `event` and `proactive` records, and the report's proactive section.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};

use kefu::conversation;
use kefu::data::record::{EventOutcome, Record};
use kefu::data::writer::{ConversationLog, LogConfig};
use kefu::engine::{Engine, Event, EventRequest, Observer, ProactiveOutcome, Refusal};

const DIR: &str = "tests/data/proactive";

fn rules() -> Arc<kefu::RuleSet> {
    let (compiled, rendered) = support::check(Path::new(DIR));
    assert!(!compiled.report.has_errors(), "{rendered}");
    Arc::new(compiled.rules.expect("the proactive fixture compiles"))
}

#[test]
fn every_proactive_conversation_passes_and_matches_its_snapshot() {
    let rules = rules();
    assert_eq!(rules.proactive.len(), 4);
    // Priority first, then file order.
    assert_eq!(rules.proactive[0].name, "大额弃单");
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
        insta::assert_yaml_snapshot!(format!("proactive_{name}"), outcome);
    }
}

/// What the engine reported, in order.
#[derive(Default)]
struct Seen(Mutex<Vec<ProactiveOutcome>>);

impl Observer for Seen {
    fn observe(&self, event: &Event<'_>) {
        if let Event::CustomerEvent { outcome, .. } = event {
            self.0.lock().unwrap().push((*outcome).clone());
        }
    }
}

fn event(session: &str, kind: &str, data: serde_json::Value, at: &str) -> EventRequest {
    EventRequest {
        session_id: session.into(),
        kind: kind.into(),
        data: data.as_object().cloned().unwrap_or_default(),
        at: Some(chrono::DateTime::parse_from_rfc3339(at).unwrap()),
        ..EventRequest::default()
    }
}

#[test]
fn an_event_stores_only_a_message_sent_and_is_always_reported() {
    let engine = Engine::new(rules());
    let seen = Arc::new(Seen::default());
    assert!(engine.set_observer(seen.clone()));
    let noon = "2026-11-05T12:00:00+08:00";

    // No item listens, or none's condition holds: recorded, no conversation made.
    let outcome = engine
        .event(&event("s1", "page_view", serde_json::json!({}), noon))
        .unwrap();
    assert_eq!(outcome, ProactiveOutcome::Recorded);
    let outcome = engine
        .event(&event(
            "s1",
            "checkout_abandoned",
            serde_json::json!({"cart_total": 10}),
            noon,
        ))
        .unwrap();
    assert_eq!(outcome, ProactiveOutcome::Recorded);
    assert!(engine.session("s1").unwrap().is_none());

    // Refused: nothing stored either.
    let night = "2026-11-05T23:00:00+08:00";
    let outcome = engine
        .event(&event(
            "s1",
            "checkout_abandoned",
            serde_json::json!({"cart_total": 200}),
            night,
        ))
        .unwrap();
    assert_eq!(
        outcome,
        ProactiveOutcome::Refused {
            trigger: "弃单挽回".into(),
            reason: Refusal::QuietHours
        }
    );
    assert!(engine.session("s1").unwrap().is_none());

    // Sent: the conversation is made with kefu's message and the send remembered.
    let outcome = engine
        .event(&event("s1", "refund_done", serde_json::json!({"amount": 12}), noon))
        .unwrap();
    let ProactiveOutcome::Sent { trigger, text, seq } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        (trigger.as_str(), text.as_str(), *seq),
        ("退款到账", "您的退款 12 元已原路退回，请注意查收。", 1)
    );
    let session = engine.session("s1").unwrap().unwrap();
    assert_eq!(session.history.len(), 1);
    assert_eq!(session.history[0].role, kefu::dialogue::Role::Bot);
    assert_eq!(&*session.history[0].text, text.as_str());
    assert_eq!(session.proactive.sent.len(), 1);
    assert!(!session.token.is_empty(), "the customer can read their conversation");
    assert_eq!(seen.0.lock().unwrap().len(), 4, "every event is reported");

    // The session remembers a bounded number of sends, however many days pass.
    for day in 6..=30 {
        for _ in 0..2 {
            let at = format!("2026-11-{day:02}T12:00:00+08:00");
            engine
                .event(&event("s1", "order_delayed", serde_json::json!({"order_id": "1"}), &at))
                .unwrap();
        }
    }
    let session = engine.session("s1").unwrap().unwrap();
    assert_eq!(session.proactive.sent.len(), kefu::dialogue::session::PROACTIVE_KEPT);
}

#[test]
fn an_event_and_its_message_are_logged_as_their_own_records_masked() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let engine = Arc::new(Engine::new(rules()));
    let current = Arc::clone(&engine);
    let (log, guard) = ConversationLog::open(LogConfig::new(dir), move || current.rules()).unwrap();
    let log = Arc::new(log);
    assert!(engine.set_observer(log.clone()));
    let mut request = event(
        "s2",
        "order_delayed",
        serde_json::json!({"order_id": "202611050001", "phone": "13812345678"}),
        "2026-11-05T12:00:00+08:00",
    );
    request.channel = Some("web".into());
    engine.event(&request).unwrap();
    engine
        .event(&event(
            "s2",
            "order_delayed",
            serde_json::json!({"order_id": "2"}),
            "2026-11-05T23:30:00+08:00",
        ))
        .unwrap();
    drop(guard);
    let files = kefu::data::files(&[dir.to_path_buf()]).unwrap();
    let text: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    assert!(!text.contains("13812345678"), "{text}");
    let mut records = Vec::new();
    kefu::data::read(&files, |r, _| records.push(r)).unwrap();
    assert_eq!(records.len(), 3, "{records:#?}");
    let Record::Event(first) = &records[0] else {
        panic!("{records:#?}")
    };
    assert_eq!(
        (
            first.kind.as_str(),
            first.outcome,
            first.trigger.as_deref(),
            first.channel.as_deref()
        ),
        ("order_delayed", EventOutcome::Sent, Some("物流延误"), Some("web"))
    );
    assert_eq!(first.data["phone"], "138****5678");
    assert_eq!(first.ts.to_rfc3339(), "2026-11-05T12:00:00+08:00");
    let Record::Proactive(sent) = &records[1] else {
        panic!("{records:#?}")
    };
    assert_eq!(sent.trigger, "物流延误");
    assert_eq!(sent.event_type, "order_delayed");
    assert!(sent.text.contains("202611050001"));
    let Record::Event(refused) = &records[2] else {
        panic!("{records:#?}")
    };
    assert_eq!(
        (refused.outcome, refused.reason),
        (EventOutcome::Refused, Some(Refusal::QuietHours))
    );
}

#[test]
fn the_report_counts_sends_replies_refusals_and_conversions_per_trigger() {
    let files = kefu::data::files(&[Path::new(DIR).join("log")]).unwrap();
    let report = kefu::data::report::report(&files, &kefu::data::report::ReportOptions::default()).unwrap();
    insta::assert_yaml_snapshot!("proactive_report", report.proactive);
    let text = report.to_string();
    let section: String = text
        .lines()
        .skip_while(|l| !l.starts_with("proactive messages"))
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    insta::assert_snapshot!("proactive_report_text", section);
    let html = kefu::data::html::render(&report);
    assert!(html.contains("<h2>Proactive messages</h2>"));
    assert!(html.contains("弃单挽回"));
}
