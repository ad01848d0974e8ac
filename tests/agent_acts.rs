//! What people do to a conversation through the engine (issue #23): take it over (from
//! the bot, from its queue, from another agent), answer, give it back with its flow
//! resumed or dropped, write notes, resolve it, requeue it; what the rules would suggest;
//! and the silence of a model generation a person's act overtakes, in the engine and on
//! the `/v1/chat` and OpenAI streams.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kefu::dialogue::{ConvState, HandoffKind, session::NOTES_LIMIT};
use kefu::engine::{AnswerSource, EngineError, Event};
use kefu::llm::{MockLlm, MockRule};
use kefu::{Engine, RuleSet, TurnRequest, TurnResponse};

/// The engine's test shop: keyword rules, the 退货申请 flow, `投诉` hands off, `otherwise llm`.
const DIR: &str = "tests/data/engine";

fn rules() -> Arc<RuleSet> {
    static RULES: std::sync::OnceLock<Arc<RuleSet>> = std::sync::OnceLock::new();
    RULES
        .get_or_init(|| {
            let (compiled, rendered) = support::check(Path::new(DIR));
            Arc::new(
                compiled
                    .rules
                    .unwrap_or_else(|| panic!("the fixture compiles:\n{rendered}")),
            )
        })
        .clone()
}

fn say(engine: &Engine, session: &str, message: &str) -> TurnResponse {
    engine.turn(TurnRequest::new(session, message)).unwrap()
}

/// Every event the engine reports, in words.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Seen {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn observed(engine: &Engine) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let sink = Arc::clone(&seen);
    assert!(engine.set_observer(Arc::new(move |event: &Event<'_>| {
        let line = match event {
            Event::Turn { response, .. } => format!("turn {}", response.source.name()),
            Event::Takeover { agent, taken, .. } => {
                format!("takeover {} {}", agent.unwrap_or("-"), taken.kind.name())
            }
            Event::AgentReply { agent, seq, .. } => format!("reply {} {seq}", agent.unwrap_or("-")),
            Event::Release { agent, resumed, .. } => format!("release {} {resumed}", agent.unwrap_or("-")),
            Event::Requeue { agent, .. } => format!("requeue {}", agent.unwrap_or("-")),
            Event::Note { note, .. } => format!("note {}", note.text),
            Event::Resolve { ended, resolution, .. } => {
                format!("resolve {} {}", resolution.outcome, ended.is_some())
            }
            Event::Feedback { agent, .. } => format!("feedback {}", agent.unwrap_or("-")),
            Event::Told { .. } => "told".into(),
            Event::CustomerEvent { .. } => "event".into(),
            Event::TurnFailed { .. } => "failed".into(),
            Event::Ticket { .. } => "ticket".into(),
        };
        sink.0.lock().unwrap().push(line);
    })));
    seen
}

#[test]
fn a_takeover_from_the_bot_pauses_the_flow_and_a_release_resumes_it() {
    let engine = Engine::new(rules());
    let seen = observed(&engine);
    let asked = say(&engine, "r", "我要退货");
    assert_eq!(
        (asked.source, asked.flow.as_deref()),
        (AnswerSource::Flow, Some("退货申请"))
    );
    let before = engine.session("r").unwrap().unwrap();
    let taken = engine.takeover("r", Some("小王".into()), false).unwrap();
    let takeover = taken.takeover.as_ref().unwrap();
    assert_eq!(takeover.kind, HandoffKind::Agent);
    assert_eq!(takeover.agent.as_deref(), Some("小王"));
    assert_eq!(takeover.assigned_at, Some(takeover.since), "held at once");
    assert_eq!(takeover.paused_flow.as_ref().map(|f| f.name.as_str()), Some("退货申请"));
    assert!(taken.flow.is_none(), "no flow goes on under a person");
    assert_eq!(taken.state(), ConvState::Agent);
    assert_eq!(taken.last_agent.as_deref(), Some("小王"));
    assert_eq!(taken.human_acts, before.human_acts + 1);
    // The customer's messages wait for the agent meanwhile.
    assert_eq!(say(&engine, "r", "人呢").source, AnswerSource::Human);
    let released = engine.release("r", Some("小王"), true).unwrap();
    assert_eq!(released.state(), ConvState::Bot);
    assert_eq!(released.flow.as_ref().map(|f| f.name.as_str()), Some("退货申请"));
    // The flow reads the next message as the answer to its question.
    let r = say(&engine, "r", "订单号 202611010001");
    assert_eq!(r.source, AnswerSource::Flow, "{:#?}", r.trace);
    assert!(r.reply.contains("已为您提交退货申请"), "{}", r.reply);
    assert_eq!(
        seen.take(),
        [
            "turn flow",
            "takeover 小王 agent",
            "turn human",
            "release 小王 true",
            "ticket",
            "turn flow"
        ]
    );
}

#[test]
fn a_release_without_resume_drops_the_paused_flow_and_its_slots() {
    let engine = Engine::new(rules());
    say(&engine, "d", "我要退货");
    engine.takeover("d", Some("小王".into()), false).unwrap();
    let released = engine.release("d", None, false).unwrap();
    assert!(released.flow.is_none() && released.takeover.is_none());
    // The next message is answered as if no flow had run.
    let r = say(&engine, "d", "202611010001");
    assert_ne!(r.source, AnswerSource::Flow, "{:#?}", r.trace);
    assert!(r.flow.is_none());
}

#[test]
fn another_agents_conversation_is_refused_unless_forced_and_a_nameless_caller_acts_for_the_holder() {
    let engine = Engine::new(rules());
    say(&engine, "h", "发票");
    let first = engine.takeover("h", Some("小王".into()), false).unwrap();
    let picked = first.takeover.as_ref().unwrap().assigned_at;
    let refused = engine.takeover("h", Some("小李".into()), false);
    assert_eq!(refused.unwrap_err(), EngineError::HeldBy("小王".into()));
    assert_eq!(
        engine.session("h").unwrap().unwrap().human_acts,
        first.human_acts,
        "a refused takeover changes nothing"
    );
    assert_eq!(
        engine.agent_reply("h", Some("小李"), "我来").unwrap_err(),
        EngineError::HeldBy("小王".into())
    );
    // The same agent again, and a caller who names nobody, are not refused.
    engine.takeover("h", Some("小王".into()), false).unwrap();
    let nameless = engine.agent_reply("h", None, "您好").unwrap();
    assert_eq!(nameless.takeover.as_ref().unwrap().agent.as_deref(), Some("小王"));
    // Forced: 小李 holds it from now on; it was picked up when 小王 picked it up.
    let forced = engine.takeover("h", Some("小李".into()), true).unwrap();
    let takeover = forced.takeover.as_ref().unwrap();
    assert_eq!(
        (takeover.agent.as_deref(), takeover.assigned_at),
        (Some("小李"), picked)
    );
    assert_eq!(forced.last_agent.as_deref(), Some("小李"));
}

#[test]
fn a_reply_picks_up_a_waiting_conversation_and_the_first_reply_is_timed_once() {
    let engine = Engine::new(rules());
    let seen = observed(&engine);
    let handed = say(&engine, "w", "我要投诉");
    assert_eq!(handed.source, AnswerSource::Handoff);
    let waiting = engine.session("w").unwrap().unwrap();
    assert_eq!(waiting.state(), ConvState::Waiting);
    let replied = engine.agent_reply("w", Some("小王"), "您好，我是小王").unwrap();
    let takeover = replied.takeover.as_ref().unwrap();
    assert_eq!(replied.state(), ConvState::Agent);
    assert_eq!(takeover.agent.as_deref(), Some("小王"));
    assert_eq!(
        takeover.since,
        waiting.takeover.as_ref().unwrap().since,
        "it waited from the handoff"
    );
    let first = takeover.first_reply_at.expect("the first reply is timed");
    assert!(takeover.assigned_at.is_some());
    assert_eq!(&*replied.history.back().unwrap().text, "您好，我是小王");
    std::thread::sleep(Duration::from_millis(5));
    let again = engine.agent_reply("w", Some("小王"), "还在吗").unwrap();
    assert_eq!(again.takeover.as_ref().unwrap().first_reply_at, Some(first));
    assert_eq!(
        seen.take(),
        [
            "turn handoff".to_string(),
            "takeover 小王 rule".into(),
            format!("reply 小王 {}", replied.seq),
            format!("reply 小王 {}", again.seq),
        ]
    );
    // A conversation the bot has, and one that is not kept, cannot be answered.
    say(&engine, "bot", "发票");
    assert_eq!(
        engine.agent_reply("bot", Some("小王"), "您好").unwrap_err(),
        EngineError::NotTakenOver("bot".into())
    );
    assert_eq!(
        engine.agent_reply("nobody", Some("小王"), "您好").unwrap_err(),
        EngineError::NoSession("nobody".into())
    );
}

#[test]
fn notes_are_bounded_and_no_act_on_the_conversation() {
    let engine = Engine::new(rules());
    let seen = observed(&engine);
    say(&engine, "n", "发票");
    let acts = engine.session("n").unwrap().unwrap().human_acts;
    let note = engine.note("n", Some("小王"), "  客户已回电  ").unwrap();
    assert_eq!(
        (note.agent.as_deref(), note.text.as_str()),
        (Some("小王"), "客户已回电")
    );
    assert_eq!(seen.take(), ["turn rule".to_string(), format!("note {}", note.text)]);
    for bad in ["", "   ", "长".repeat(kefu::engine::NOTE_CHARS + 1).as_str()] {
        assert!(
            matches!(engine.note("n", None, bad), Err(EngineError::Invalid(_))),
            "{bad:?}"
        );
    }
    assert_eq!(
        engine.note("nobody", None, "x").unwrap_err(),
        EngineError::NoSession("nobody".into())
    );
    for i in 0..NOTES_LIMIT + 5 {
        engine.note("n", None, &format!("第{i}条")).unwrap();
    }
    let session = engine.session("n").unwrap().unwrap();
    assert_eq!(session.notes.len(), NOTES_LIMIT);
    assert_eq!(session.notes[0].text, "第5条", "the oldest went first");
    assert_eq!(session.human_acts, acts, "a note does not drop a running turn's answer");
}

#[test]
fn what_agents_write_is_kept_masked_with_the_shops_safety() {
    // The demo shop masks personal data (the engine's test shop declares no safety).
    let (compiled, rendered) = support::check(Path::new("rules"));
    let engine = Engine::new(compiled.rules.unwrap_or_else(|| panic!("{rendered}")));
    say(&engine, "pii", "我要投诉");
    engine.takeover("pii", Some("小王".into()), false).unwrap();
    let replied = engine
        .agent_reply("pii", Some("小王"), "您好，有事打我手机13912345678")
        .unwrap();
    let said = &replied.history.back().unwrap().text;
    assert!(!said.contains("13912345678") && said.starts_with("您好"), "{said}");
    let note = engine
        .note("pii", Some("小王"), "客户电话 13912345678，已回电")
        .unwrap();
    assert!(
        !note.text.contains("13912345678") && note.text.starts_with("客户电话"),
        "{}",
        note.text
    );
}

#[test]
fn a_resolution_ends_the_takeover_and_the_next_message_is_the_bots() {
    let engine = Engine::new(rules());
    let seen = observed(&engine);
    say(&engine, "s", "我要退货");
    engine.takeover("s", Some("小王".into()), false).unwrap();
    engine.agent_reply("s", Some("小王"), "已为您处理").unwrap();
    seen.take();
    for bad in ["", "  ", "x".repeat(kefu::engine::OUTCOME_CHARS + 1).as_str()] {
        assert!(matches!(engine.resolve("s", None, bad), Err(EngineError::Invalid(_))));
    }
    let resolved = engine.resolve("s", Some("小王"), "  solved ").unwrap();
    assert_eq!(resolved.state(), ConvState::Resolved);
    let resolution = resolved.resolved.as_ref().unwrap();
    assert_eq!(
        (resolution.outcome.as_str(), resolution.agent.as_deref()),
        ("solved", Some("小王"))
    );
    assert!(resolved.takeover.is_none() && resolved.flow.is_none());
    assert_eq!(seen.take(), ["resolve solved true"]);
    // The customer writes again: the bot answers, and the conversation is the bot's.
    let r = say(&engine, "s", "发票怎么开");
    assert_eq!(r.source, AnswerSource::Rule, "{:#?}", r.trace);
    assert_eq!(engine.session("s").unwrap().unwrap().state(), ConvState::Bot);
    // The paused flow was dropped with the resolution.
    assert_ne!(say(&engine, "s", "202611010001").source, AnswerSource::Flow);
    // A bot conversation may be resolved too; no takeover ended.
    say(&engine, "b", "发票");
    seen.take();
    engine.resolve("b", None, "no_reply").unwrap();
    assert_eq!(seen.take(), ["resolve no_reply false"]);
}

#[test]
fn a_requeue_puts_the_holders_conversation_back_in_its_queue_and_is_a_no_op_otherwise() {
    let engine = Engine::new(rules());
    let seen = observed(&engine);
    say(&engine, "q", "我要投诉");
    let since = engine.session("q").unwrap().unwrap().takeover.unwrap().since;
    // Not held yet: nothing to do.
    assert_eq!(engine.requeue("q", Some("小王")), Ok(false));
    engine.takeover("q", Some("小王".into()), false).unwrap();
    assert_eq!(engine.requeue("q", Some("小李")), Ok(false), "someone else's");
    seen.take();
    let rev = engine.session("q").unwrap().unwrap().rev;
    assert_eq!(engine.requeue("q", Some("小王")), Ok(true));
    let session = engine.session("q").unwrap().unwrap();
    assert_eq!(session.state(), ConvState::Waiting);
    let takeover = session.takeover.unwrap();
    assert_eq!(
        (takeover.agent, takeover.assigned_at, takeover.since),
        (None, None, since)
    );
    assert_eq!(session.rev, rev + 1);
    assert_eq!(seen.take(), ["requeue 小王"]);
    // The bot stays silent: it still waits for a person.
    assert_eq!(say(&engine, "q", "还有人吗").source, AnswerSource::Human);
    assert_eq!(engine.requeue("nobody", None), Ok(false));
    say(&engine, "bot", "发票");
    let rev = engine.session("bot").unwrap().unwrap().rev;
    assert_eq!(engine.requeue("bot", None), Ok(false));
    assert_eq!(engine.session("bot").unwrap().unwrap().rev, rev, "nothing written");
}

#[test]
fn a_rating_after_an_agent_served_counts_for_them() {
    let engine = Engine::new(rules());
    let seen = observed(&engine);
    let first = say(&engine, "f", "我要投诉");
    engine.agent_reply("f", Some("小王"), "您好").unwrap();
    engine.release("f", Some("小王"), false).unwrap();
    seen.take();
    engine.feedback("f", &first.session_token, 5, None).unwrap();
    assert_eq!(seen.take(), ["feedback 小王"]);
    let other = say(&engine, "g", "发票");
    seen.take();
    engine.feedback("g", &other.session_token, 4, None).unwrap();
    assert_eq!(seen.take(), ["feedback -"], "the bot alone served it");
}

#[test]
fn a_suggestion_is_what_the_rules_would_answer_now_and_changes_nothing() {
    let model = Arc::new(MockLlm::new(vec![MockRule {
        contains: "月亮".into(),
        reply: "亲，月亮的故事小测下次讲给您听～".into(),
        confidence: 0.95,
        delay_ms: 0,
    }]));
    let engine = Engine::new(rules()).with_llm(model);
    let seen = observed(&engine);
    say(&engine, "g", "你好");
    engine.takeover("g", Some("小王".into()), false).unwrap();
    say(&engine, "g", "发票怎么开");
    let before = engine.session("g").unwrap().unwrap();
    let events = seen.take().len();
    let s = engine.suggest("g").unwrap();
    assert_eq!((s.source, s.rule.as_deref()), (AnswerSource::Rule, Some("发票")));
    assert_eq!(s.message, "发票怎么开");
    assert_eq!(s.reply, "下单后在订单详情里申请电子发票即可。");
    assert!(!s.model && !s.trace.is_empty());
    assert_eq!(engine.session("g").unwrap().unwrap(), before, "nothing saved");
    assert!(seen.take().is_empty(), "nothing reported ({events} events before)");
    // The model's answer, when the rules defer to it.
    say(&engine, "g", "讲个月亮的故事");
    let s = engine.suggest("g").unwrap();
    assert!(s.model, "{:#?}", s.trace);
    assert_eq!(
        (s.source, s.reply.as_str()),
        (AnswerSource::Llm, "亲，月亮的故事小测下次讲给您听～")
    );
    // A flow the takeover paused answers its question.
    say(&engine, "p", "我要退货");
    engine.takeover("p", Some("小王".into()), false).unwrap();
    say(&engine, "p", "202611010001");
    let s = engine.suggest("p").unwrap();
    assert_eq!(
        (s.source, s.flow.as_deref()),
        (AnswerSource::Flow, Some("退货申请")),
        "{:#?}",
        s.trace
    );
    assert!(s.reply.contains("已为您提交退货申请"), "{}", s.reply);
    assert!(
        engine.tickets().is_empty(),
        "the suggestion's ticket is not the engine's"
    );
    assert!(engine.session("p").unwrap().unwrap().flow.is_none());
    // Nothing confident: no words to suggest. No session: an error.
    let without_model = Engine::new(rules());
    say(&without_model, "x", "你好");
    without_model.takeover("x", None, false).unwrap();
    say(&without_model, "x", "讲个月亮的故事");
    let s = without_model.suggest("x").unwrap();
    assert_eq!(
        (s.source, s.reply.as_str(), s.model),
        (AnswerSource::Fallback, "", false)
    );
    assert_eq!(
        without_model.suggest("nobody").unwrap_err(),
        EngineError::NoSession("nobody".into())
    );
}

/// A slow model: `TOKENS` pieces, `DELAY_MS` each.
fn slow_model() -> Arc<MockLlm> {
    Arc::new(MockLlm::new(vec![MockRule {
        contains: String::new(),
        reply: "亲，这个问题小测来为您详细解答一下，请您耐心看完哦。".into(),
        confidence: 0.95,
        delay_ms: DELAY_MS,
    }]))
}
const DELAY_MS: u64 = 80;
const TOKENS: usize = 13;

#[test]
fn a_takeover_silences_the_running_generation_at_once() {
    let engine = Arc::new(Engine::new(rules()).with_llm(slow_model()));
    say(&engine, "m", "你好");
    let deltas = Arc::new(Mutex::new(Vec::<String>::new()));
    let (first_tx, first) = std::sync::mpsc::channel();
    let turn = {
        let (engine, deltas) = (Arc::clone(&engine), Arc::clone(&deltas));
        std::thread::spawn(move || {
            let started = Instant::now();
            let response = engine
                .turn_streaming(TurnRequest::new("m", "讲个故事吧"), &mut |text| {
                    let mut deltas = deltas.lock().unwrap();
                    deltas.push(text.to_string());
                    if deltas.len() == 1 {
                        first_tx.send(()).unwrap();
                    }
                })
                .unwrap();
            (response, started.elapsed())
        })
    };
    first.recv_timeout(Duration::from_secs(30)).expect("the model streams");
    engine.takeover("m", Some("小王".into()), false).unwrap();
    let sent_before = deltas.lock().unwrap().len();
    let (response, took) = turn.join().unwrap();
    assert!(response.dropped, "{:#?}", response.trace);
    assert_eq!((response.source, response.reply.as_str()), (AnswerSource::Human, ""));
    assert!(
        response.trace.iter().any(|s| s.detail.contains("silenced")),
        "{:#?}",
        response.trace
    );
    assert_eq!(deltas.lock().unwrap().len(), sent_before, "no text after the takeover");
    assert!(
        (response.usage.completion as usize) < TOKENS,
        "the generation stopped early: {:?}",
        response.usage
    );
    assert!(took < Duration::from_millis(DELAY_MS * TOKENS as u64), "{took:?}");
    // Without a takeover the same turn streams the whole answer.
    let all = Mutex::new(0);
    let r = engine
        .turn_streaming(TurnRequest::new("other", "讲个故事吧"), &mut |_| {
            *all.lock().unwrap() += 1
        })
        .unwrap();
    assert_eq!(r.source, AnswerSource::Llm, "{:#?}", r.trace);
    assert_eq!(r.usage.completion as usize, TOKENS);
}

#[test]
fn a_silence_from_another_node_stops_the_generation_and_the_save_drops_the_answer() {
    let engine = Arc::new(Engine::new(rules()).with_llm(slow_model()));
    let (first_tx, first) = std::sync::mpsc::channel();
    let turn = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || {
            let mut sent = false;
            engine
                .turn_streaming(TurnRequest::new("remote", "讲个故事吧"), &mut |_| {
                    if !std::mem::replace(&mut sent, true) {
                        first_tx.send(()).unwrap();
                    }
                })
                .unwrap()
        })
    };
    first.recv_timeout(Duration::from_secs(30)).expect("the model streams");
    // What the server does when another node's takeover arrives: the act is in the
    // shared store already (here: this engine's store), then the silence.
    assert_eq!(engine.silence("remote"), 1);
    assert_eq!(engine.silence("nobody"), 0);
    let r = turn.join().unwrap();
    assert!(r.trace.iter().any(|s| s.detail.contains("silenced")), "{:#?}", r.trace);
    assert_ne!(r.source, AnswerSource::Llm, "a part of an answer is no answer");
    assert!((r.usage.completion as usize) < TOKENS);
}

/// A server on the engine's shop with a slow scripted model (`--mock-llm` with `delay_ms`).
fn slow_server() -> (support::http::TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mock.yaml");
    std::fs::write(
        &file,
        format!("- {{ reply: 亲，这个问题小测来为您详细解答一下，请您耐心看完哦。, confidence: 0.95, delay_ms: {DELAY_MS} }}\n"),
    )
    .unwrap();
    let mut config = kefu::server::ServeConfig::new(DIR);
    config.watch = false;
    config.llm = Some(kefu::server::model::load_mock(&file).unwrap());
    (support::http::TestServer::start(config), dir)
}

/// Sends `body` to `path` as a streaming request, reads until the first piece of model
/// text has arrived (`marker`), runs `meanwhile`, then reads the rest; the whole body.
fn stream_with(
    server: &support::http::TestServer,
    path: &str,
    body: serde_json::Value,
    marker: &str,
    meanwhile: impl FnOnce(),
) -> String {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&bytes).contains(marker) {
        let n = stream.read(&mut buf).expect("the stream goes on");
        assert!(
            n > 0,
            "the stream ended before {marker}: {}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&buf[..n]);
    }
    meanwhile();
    stream.read_to_end(&mut bytes).unwrap();
    support::http::parse_response(&bytes).body
}

#[test]
fn the_chat_stream_retracts_what_it_sent_when_a_person_takes_over() {
    let (server, _dir) = slow_server();
    let body = stream_with(
        &server,
        "/v1/chat",
        serde_json::json!({ "session_id": "live", "message": "讲个故事吧", "stream": true }),
        "event: delta",
        || {
            let taken = server.post("/v1/sessions/live/takeover", &serde_json::json!({ "agent": "小王" }));
            assert_eq!(taken.status, 200, "{}", taken.body);
        },
    );
    let reply = support::http::Reply {
        status: 200,
        headers: Vec::new(),
        body,
    };
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap_or("")).collect();
    let deltas = names.iter().filter(|n| **n == "delta").count();
    assert!((1..TOKENS).contains(&deltas), "{names:?}");
    assert_eq!(names[names.len() - 2..], ["retract", "done"], "{names:?}");
    assert_eq!(events[names.len() - 2].1, "{}");
    let done: serde_json::Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(
        (done["dropped"].as_bool(), done["reply"].as_str()),
        (Some(true), Some(""))
    );
    assert_eq!(done["source"], "human");
    // A model answer nobody took over is not retracted.
    let calm = server.post(
        "/v1/chat",
        &serde_json::json!({ "session_id": "calm", "message": "讲个故事吧", "stream": true }),
    );
    let names: Vec<Option<String>> = calm.events().into_iter().map(|(n, _)| n).collect();
    assert!(!names.contains(&Some("retract".into())), "{names:?}");
    assert_eq!(names.last().unwrap().as_deref(), Some("done"));
}

#[test]
fn the_openai_stream_ends_with_content_filter_when_a_person_takes_over() {
    let (server, _dir) = slow_server();
    let body = stream_with(
        &server,
        "/v1/chat/completions",
        serde_json::json!({ "user": "oa-live", "stream": true, "messages": [{ "role": "user", "content": "讲个故事吧" }] }),
        "\"content\":\"亲，",
        || {
            let taken = server.post("/v1/sessions/oa-live/takeover", &serde_json::json!({}));
            assert_eq!(taken.status, 200, "{}", taken.body);
        },
    );
    let chunks: Vec<serde_json::Value> = body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "content_filter", "{body}");
    assert_eq!(last["kefu"]["dropped"], true);
    assert!(body.trim_end().ends_with("data: [DONE]"));
}
