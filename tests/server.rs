//! The HTTP service over real loopback sockets: every route and every kind of refusal,
//! the framing of server-sent events and OpenAI chunks, human takeover, feedback,
//! tickets and their background delivery, hot reload (good and bad edits, editors that
//! rename files into place, SIGHUP), readiness and the drain of a shutdown, graceful
//! shutdown, and Redis (two nodes sharing it, readiness following it: ignored tests that
//! `make test` runs under tests/support/with-redis.sh).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kefu::server::{Limits, ServeConfig};
use serde_json::{Value, json};
use support::http::{ServeProcess, TestServer, copy_rules, eventually, raw_request};

/// The demo shop: no `http` sources, so rule turns run inline on the runtime's workers.
const DEMO: &str = "rules";
/// The engine's test shop: keyword rules, flows, a promotion, `otherwise llm`, and an
/// `http` source (so every turn runs on the blocking pool).
const ENGINE: &str = "tests/data/engine";

fn config(rules: &str) -> ServeConfig {
    let mut config = ServeConfig::new(rules);
    config.watch = false;
    config
}

fn with_mock(mut config: ServeConfig, file: &str) -> ServeConfig {
    config.llm = Some(kefu::server::model::load_mock(Path::new(file)).unwrap());
    config
}

#[test]
fn chat_answers_by_rule_as_json() {
    let server = TestServer::start(config(DEMO));
    let reply = server.post(
        "/v1/chat",
        &json!({ "session_id": "c1", "message": "这件T恤洗了会缩水吗", "user": { "segment": "vip" } }),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["source"], "rule");
    assert_eq!(body["rule"], "缩水");
    assert_eq!(body["session_id"], "c1");
    assert!(body["reply"].as_str().unwrap().contains("预缩"));
    assert!(body["rules_version"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(body["trace"].as_array().is_some_and(|t| !t.is_empty()));
}

#[test]
fn chat_streams_a_rule_answer_as_one_delta_then_done() {
    let server = TestServer::start(config(DEMO));
    let reply = server.post(
        "/v1/chat",
        &json!({ "session_id": "s1", "message": "这件T恤洗了会缩水吗", "stream": true }),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert_eq!(reply.header("cache-control"), Some("no-cache"));
    let events = reply.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0.as_deref(), Some("delta"));
    assert_eq!(events[1].0.as_deref(), Some("done"));
    let done: Value = serde_json::from_str(&events[1].1).unwrap();
    let delta: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(delta["text"], done["reply"]);
    assert_eq!(done["source"], "rule");
}

#[test]
fn chat_streams_a_model_answer_in_pieces() {
    let server = TestServer::start(with_mock(config(ENGINE), "tests/data/server/mock.yaml"));
    let reply = server.post(
        "/v1/chat",
        &json!({ "session_id": "s2", "message": "这款是什么面料", "stream": true }),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let events = reply.events();
    let (done, deltas) = events.split_last().unwrap();
    assert_eq!(done.0.as_deref(), Some("done"));
    assert!(deltas.len() > 3, "the mock streams two characters a token: {events:?}");
    assert!(deltas.iter().all(|(name, _)| name.as_deref() == Some("delta")));
    let text: String = deltas
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let done: Value = serde_json::from_str(&done.1).unwrap();
    assert_eq!(done["source"], "llm");
    assert_eq!(done["reply"], text.as_str());
}

#[test]
fn openai_completion_has_the_sdk_shape_and_kefu_metadata() {
    let server = TestServer::start(with_mock(config(ENGINE), "tests/data/server/mock.yaml"));
    let reply = server.post(
        "/v1/chat/completions",
        &json!({
            "model": "kefu-demo",
            "user": "oa-1",
            "temperature": 0.2,
            "messages": [
                { "role": "system", "content": "ignored: kefu has its own persona" },
                { "role": "user", "content": [{ "type": "text", "text": "这款是什么面料" }] }
            ]
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "kefu-demo");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(body["created"].as_i64().unwrap() > 0);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "这款是100%纯棉面料，透气舒适。");
    assert_eq!(body["kefu"]["source"], "llm");
    assert_eq!(body["kefu"]["session_id"], "oa-1");
    let usage = &body["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap())
    );

    // A rule answer: no tokens.
    let reply = server.post(
        "/v1/chat/completions",
        &json!({ "model": "m", "kefu_session": "oa-2", "messages": [{ "role": "user", "content": "能开发票吗" }] }),
    );
    let body = reply.json();
    assert_eq!(body["kefu"]["source"], "rule");
    assert_eq!(body["usage"]["total_tokens"], 0);
}

#[test]
fn openai_stream_is_chunks_then_done() {
    let server = TestServer::start(with_mock(config(ENGINE), "tests/data/server/mock.yaml"));
    let reply = server.post(
        "/v1/chat/completions",
        &json!({
            "model": "kefu-demo",
            "stream": true,
            "stream_options": { "include_usage": true },
            "user": "oa-3",
            "messages": [{ "role": "user", "content": "这款是什么面料" }]
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert!(reply.body.ends_with("data: [DONE]\n\n"), "{}", reply.body);
    let events = reply.events();
    assert!(
        events.iter().all(|(name, _)| name.is_none()),
        "OpenAI streams have no event names"
    );
    let (last, chunks) = events.split_last().unwrap();
    assert_eq!(last.1, "[DONE]");
    let chunks: Vec<Value> = chunks.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    let id = chunks[0]["id"].clone();
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["kefu"]["source"], "llm");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "这款是100%纯棉面料，透气舒适。");
}

/// A model that says a little and then panics, as a bug in a backend would.
struct PanickingModel;

impl kefu::llm::LlmBackend for PanickingModel {
    fn name(&self) -> &str {
        "panics"
    }

    fn generate(
        &self,
        _: &kefu::llm::GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> std::ops::ControlFlow<()>,
    ) -> Result<kefu::llm::Generation, kefu::llm::LlmError> {
        let _ = on_text("这款是");
        panic!("the model broke");
    }
}

/// The error log of every server in this test binary from the first call on (a process
/// has one global subscriber; the servers log from their own threads).
fn error_log() -> Arc<std::sync::Mutex<Vec<u8>>> {
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static LOG: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    Arc::clone(LOG.get_or_init(|| {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::ERROR)
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .try_init();
        log
    }))
}

#[test]
fn a_turn_that_panics_is_an_error_logged_and_no_longer_in_flight_streamed_or_not() {
    let log = error_log();
    let mut config = config(ENGINE);
    config.llm = Some(Arc::new(PanickingModel));
    // One connection per client: a new one is served only if the old one is idle.
    config.limits.connections.per_client = 1;
    let server = TestServer::start(config);
    let ask = json!({ "session_id": "p1", "message": "这款是什么面料" });
    let logged = |what: &str| {
        let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
        text.lines().filter(|l| l.contains(what)).count()
    };
    let in_flight_zero = || {
        server
            .get("/metrics")
            .body
            .lines()
            .any(|l| l == "kefu_turns_in_flight 0")
    };

    // Not streamed: a 500 with the JSON error body.
    let plain = server.post("/v1/chat", &ask);
    assert_eq!((plain.status, plain.error_type().as_str()), (500, "internal"));
    assert!(eventually(Duration::from_secs(5), || logged("turn panicked") >= 1));
    assert!(in_flight_zero());

    // Streamed: the status was sent, so the stream ends with an `error` event, no `done`.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let reply = server.post("/v1/chat", &streamed);
    assert_eq!(reply.status, 200);
    let events = reply.events();
    let (last, rest) = events.split_last().unwrap();
    assert_eq!(last.0.as_deref(), Some("error"), "{events:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&last.1).unwrap()["error"]["type"],
        "internal"
    );
    assert!(
        rest.iter().all(|(name, _)| name.as_deref() == Some("delta")),
        "{events:?}"
    );
    assert!(eventually(Duration::from_secs(5), || logged("streaming turn panicked") >= 1));
    assert!(in_flight_zero());

    // OpenAI's framing: an `error` data line, then `[DONE]`.
    let openai = server.post(
        "/v1/chat/completions",
        &json!({ "stream": true, "user": "p2", "messages": [{ "role": "user", "content": "这款是什么面料" }] }),
    );
    assert_eq!(openai.status, 200);
    let events = openai.events();
    assert_eq!(events.last().unwrap().1, "[DONE]", "{events:?}");
    let error: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(error["error"]["type"], "internal");
    assert!(eventually(Duration::from_secs(5), || logged("streaming turn panicked") >= 2));
    assert!(in_flight_zero());

    // A stream that ended in a panic leaves its connection idle, not busy: on a kept-alive
    // connection, once the stream is read, a new connection from the same client (over
    // its limit of one) sheds it instead of being refused.
    let mut kept = std::net::TcpStream::connect(server.addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = streamed.to_string();
    let head = format!(
        "POST /v1/chat HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n\r\n",
        server.addr,
        body.len()
    );
    std::io::Write::write_all(&mut kept, format!("{head}{body}").as_bytes()).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !received.ends_with(b"0\r\n\r\n") {
        let n = std::io::Read::read(&mut kept, &mut buf).unwrap();
        assert!(n > 0, "the stream ended before its last chunk");
        received.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&received).contains("event: error"));
    assert!(eventually(Duration::from_secs(5), || {
        let mut other = std::net::TcpStream::connect(server.addr).unwrap();
        other.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let request = format!(
            "GET /healthz HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            server.addr
        );
        let mut answer = Vec::new();
        let _ = std::io::Write::write_all(&mut other, request.as_bytes());
        let _ = std::io::Read::read_to_end(&mut other, &mut answer);
        answer.starts_with(b"HTTP/1.1 200")
    }));
    assert!(in_flight_zero());

    // The service goes on answering.
    assert_eq!(server.chat("p3", "能开发票吗")["source"], "rule");
}

#[test]
fn takeover_queues_messages_for_the_agent_and_release_gives_the_bot_back() {
    let server = TestServer::start(config(ENGINE));
    assert_eq!(server.chat("t1", "能开发票吗")["source"], "rule");

    let taken = server.post("/v1/sessions/t1/takeover", &json!({ "agent": "小王" }));
    assert_eq!(taken.status, 200, "{}", taken.body);
    assert_eq!(taken.json()["takeover"]["agent"], "小王");

    let quiet = server.chat("t1", "还在吗");
    assert_eq!(quiet["source"], "human");
    assert_eq!(quiet["reply"], "");
    let session = server.get("/v1/sessions/t1").json();
    assert_eq!(session["takeover"]["queued"], json!(["还在吗"]));

    let answered = server.post("/v1/sessions/t1/reply", &json!({ "message": "您好，我是小王" }));
    assert_eq!(answered.status, 200, "{}", answered.body);
    let session = answered.json();
    assert_eq!(session["takeover"]["queued"], json!([]));
    assert_eq!(session["history"].as_array().unwrap().last().unwrap()["role"], "agent");

    let released = server.post("/v1/sessions/t1/release", &json!({}));
    assert_eq!(released.status, 200);
    assert_eq!(released.json()["takeover"], Value::Null);
    assert_eq!(server.chat("t1", "能开发票吗")["source"], "rule");

    // Errors of the agent routes.
    let not_taken = server.post("/v1/sessions/t1/reply", &json!({ "message": "在吗" }));
    assert_eq!(
        (not_taken.status, not_taken.error_type().as_str()),
        (409, "not_taken_over")
    );
    let missing = server.post("/v1/sessions/nobody/release", &json!({}));
    assert_eq!((missing.status, missing.error_type().as_str()), (404, "not_found"));
    assert_eq!(server.get("/v1/sessions/nobody").status, 404);
    // Session ids in paths are percent-decoded.
    server.chat("客户-1", "能开发票吗");
    let chinese = server.get("/v1/sessions/%E5%AE%A2%E6%88%B7-1");
    assert_eq!(chinese.status, 200);
    assert_eq!(chinese.json()["id"], "客户-1");
}

#[test]
fn feedback_is_kept_with_the_conversation() {
    let server = TestServer::start(config(DEMO));
    let answer = server.chat("f1", "这件T恤洗了会缩水吗");
    let token = answer["session_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32, "128 random bits as hex: {token}");
    assert_eq!(server.chat("f1", "能开发票吗")["session_token"], token.as_str());
    let rate = |body: Value| server.post("/v1/sessions/f1/feedback", &body);

    for (body, status, kind) in [
        (json!({ "score": 0, "session_token": token }), 400, "invalid_request"),
        (json!({ "score": 6, "session_token": token }), 400, "invalid_request"),
        (json!({ "score": "5", "session_token": token }), 400, "invalid_request"),
        (
            json!({ "comment": "没分数", "session_token": token }),
            400,
            "invalid_request",
        ),
        (
            json!({ "score": 4, "comment": "长".repeat(501), "session_token": token }),
            400,
            "invalid_request",
        ),
    ] {
        let reply = rate(body.clone());
        assert_eq!((reply.status, reply.error_type().as_str()), (status, kind), "{body}");
    }
    let unknown = server.post(
        "/v1/sessions/nobody/feedback",
        &json!({ "score": 3, "session_token": token }),
    );
    assert_eq!((unknown.status, unknown.error_type().as_str()), (404, "not_found"));

    let given = rate(json!({ "score": 5, "comment": "很快", "session_token": token }));
    assert_eq!(given.status, 200, "{}", given.body);
    assert_eq!(given.json()["feedback"]["score"], 5);
    let session = server.get("/v1/sessions/f1").json();
    assert_eq!(session["feedback"][0]["comment"], "很快");
    assert!(
        server
            .get("/metrics")
            .body
            .contains("kefu_feedback_total{score=\"5\"} 1")
    );
}

#[test]
fn feedback_is_once_per_conversation_and_only_from_its_customer() {
    let server = TestServer::start(config(DEMO));
    let token = server.chat("f2", "这件T恤洗了会缩水吗")["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    let other = server.chat("f3", "能开发票吗")["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Anyone who only knows the session id, or holds another conversation's token.
    for body in [
        json!({ "score": 1 }),
        json!({ "score": 1, "session_token": "" }),
        json!({ "score": 1, "session_token": other }),
    ] {
        let forged = server.post("/v1/sessions/f2/feedback", &body);
        assert_eq!(
            (forged.status, forged.error_type().as_str()),
            (403, "forbidden"),
            "{body}"
        );
    }
    let given = server.post(
        "/v1/sessions/f2/feedback",
        &json!({ "score": 4, "comment": "邮箱 zhangsan@example.com", "session_token": token }),
    );
    assert_eq!(given.status, 200, "{}", given.body);
    // The answer is the customer's own record, not the whole session.
    let record = given.json();
    assert_eq!(record["session_id"], "f2");
    assert!(
        record.get("history").is_none() && record["feedback"].is_object(),
        "{record}"
    );
    // Kept masked.
    let session = server.get("/v1/sessions/f2").json();
    let comment = session["feedback"][0]["comment"].as_str().unwrap();
    assert!(!comment.contains("zhangsan"), "{comment}");
    // Posting again, as a flood would, is refused and grows nothing.
    for _ in 0..20 {
        let again = server.post(
            "/v1/sessions/f2/feedback",
            &json!({ "score": 5, "session_token": token }),
        );
        assert_eq!((again.status, again.error_type().as_str()), (409, "already_rated"));
    }
    let session = server.get("/v1/sessions/f2").json();
    assert_eq!(session["feedback"].as_array().unwrap().len(), 1);
    assert_eq!(session["feedback"][0]["score"], 4);
}

#[test]
fn a_customer_writing_on_while_nobody_answers_cannot_grow_the_session() {
    let mut config = config(DEMO);
    config.limits.rate_per_session = 0;
    let server = TestServer::start(config);
    server.chat("q1", "能开发票吗");
    assert_eq!(server.post("/v1/sessions/q1/takeover", &json!({})).status, 200);
    for i in 0..120 {
        assert_eq!(server.chat("q1", &format!("第{i}条"))["source"], "human");
    }
    let session = server.get("/v1/sessions/q1").json();
    let queued = session["takeover"]["queued"].as_array().unwrap();
    assert_eq!(queued.len(), 50);
    assert_eq!(queued[0], "第70条", "the oldest are dropped");
    assert_eq!(session["takeover"]["dropped"], 70);
    assert!(session["history"].as_array().unwrap().len() <= 20);
}

#[test]
fn what_agents_type_is_kept_masked() {
    let server = TestServer::start(config(DEMO));
    server.chat("m1", "能开发票吗");
    assert_eq!(
        server
            .post("/v1/sessions/m1/takeover", &json!({ "agent": "13900001111" }))
            .status,
        200
    );
    let replied = server.post(
        "/v1/sessions/m1/reply",
        &json!({ "message": "已登记您的电话13812345678，稍后回电" }),
    );
    assert_eq!(replied.status, 200, "{}", replied.body);
    let session = server.get("/v1/sessions/m1").json();
    let last = session["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "agent");
    let text = last["text"].as_str().unwrap();
    assert!(!text.contains("12345678") && text.contains("稍后回电"), "{text}");
}

#[test]
fn product_context_is_kept_masked_in_the_session() {
    let server = TestServer::start(config(DEMO));
    let reply = server.post(
        "/v1/chat",
        &json!({
            "session_id": "p1",
            "message": "这件有什么颜色",
            "context": { "product": { "id": "T001", "seller_phone": "13812345678" } }
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session = server.get("/v1/sessions/p1").json();
    assert_eq!(session["product"]["id"], "T001");
    let phone = session["product"]["seller_phone"].as_str().unwrap();
    assert!(!phone.contains("12345678"), "{phone}");
}

#[test]
fn customers_get_a_trace_without_the_rules_internals() {
    let mut config = config(DEMO);
    config.admin_token = Some("s3cret".into());
    let server = TestServer::start(config);
    let body = json!({ "session_id": "tr1", "message": "这件T恤洗了会缩水吗" }).to_string();
    let customer = server
        .send("POST", "/v1/chat", &[("content-type", "application/json")], &body)
        .json();
    let agent = server
        .send(
            "POST",
            "/v1/chat",
            &[("content-type", "application/json"), ("authorization", "Bearer s3cret")],
            &body,
        )
        .json();
    assert_eq!(customer["rule"], agent["rule"]);
    let full = agent["trace"].to_string();
    assert!(full.contains(".kefu:"), "agents see where the rule is: {full}");
    let shown = customer["trace"].to_string();
    assert!(!shown.contains(".kefu:") && !shown.contains('/'), "{shown}");
    assert!(shown.contains("缩水"), "the customer still sees what answered: {shown}");
}

#[test]
fn admin_routes_without_a_token_refuse_requests_through_a_proxy() {
    let server = TestServer::start(config(DEMO));
    assert_eq!(server.get("/admin/rules").status, 200);
    for header in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        let proxied = server.send("GET", "/admin/rules", &[(header, "203.0.113.7")], "");
        assert_eq!(
            (proxied.status, proxied.error_type().as_str()),
            (403, "forbidden"),
            "{header}"
        );
    }
}

#[test]
fn slow_scripts_are_stopped_and_their_rules_leave_the_runtime_workers() {
    let dir = copy_rules(Path::new(DEMO), "slow-script");
    std::fs::write(
        dir.join("zz_slow.kefu"),
        "rule 慢规则 {\n  on keywords \"慢慢查\"\n  when `let n = 0; loop { let s = \"\"; s.pad(60000, \"x\"); n += s.len; }`\n  reply \"不会到这里\"\n}\n",
    )
    .unwrap();
    let server = TestServer::start(config(dir.to_str().unwrap()));
    let slow = server.chat("slow1", "慢慢查一下");
    assert_ne!(slow["reply"], "不会到这里");
    let trace = slow["trace"].to_string();
    assert!(trace.contains("time limit"), "{trace}");
    let metrics = server.get("/metrics").body;
    assert!(metrics.contains("kefu_slow_rules_total 1"), "{metrics}");
    // Every other customer is still answered, now from the blocking pool.
    assert_eq!(server.chat("fast1", "这件T恤洗了会缩水吗")["rule"], "缩水");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_client_hoarding_idle_connections_loses_its_own_not_others_service() {
    let mut config = config(DEMO);
    config.limits.connections.per_client = 8;
    let server = TestServer::start(config);
    let hoard: Vec<_> = (0..40)
        .map(|_| std::net::TcpStream::connect(server.addr).unwrap())
        .collect();
    // The hoarder's oldest idle sockets were closed to make room for its newest; a
    // request (from the same address, on loopback) is still answered.
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.chat("h1", "能开发票吗")["source"], "rule");
    assert!(eventually(Duration::from_secs(5), || {
        let metrics = server.get("/metrics").body;
        metrics
            .lines()
            .find(|l| l.starts_with("kefu_connections_shed_total{kind=\"client\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 32)
    }));
    drop(hoard);
}

/// A server with short connection timeouts: `header` for a request's headers from its
/// first byte, `idle` between requests.
fn with_timeouts(header: Duration, idle: Duration) -> TestServer {
    let mut config = config(DEMO);
    config.limits.connections.header_timeout = header;
    config.limits.connections.idle_timeout = idle;
    TestServer::start(config)
}

/// `GET /healthz` on a kept-alive connection: the response's status, or why there was none.
fn healthz_kept_alive(stream: &mut std::net::TcpStream) -> Result<u16, String> {
    get_kept_alive(stream, "/healthz").map(|reply| reply.status)
}

/// `GET path` on a kept-alive connection: the response, or why there was none.
fn get_kept_alive(stream: &mut std::net::TcpStream, path: &str) -> Result<support::http::Reply, String> {
    send_kept_alive(stream, "GET", path, "")
}

/// A request on a kept-alive connection (the client does not ask to close): the
/// response, or why there was none.
fn send_kept_alive(
    stream: &mut std::net::TcpStream,
    method: &str,
    path: &str,
    body: &str,
) -> Result<support::http::Reply, String> {
    use std::io::{Read, Write};
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("content-length: {}\r\n", body.len())
    };
    stream
        .write_all(format!("{method} {path} HTTP/1.1\r\nhost: t\r\n{length}\r\n{body}").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let reply = support::http::parse_response(&received[..end + 4]);
            let length: usize = reply
                .header("content-length")
                .ok_or("no content-length")?
                .parse()
                .unwrap();
            if received.len() >= end + 4 + length {
                return Ok(support::http::parse_response(&received[..end + 4 + length]));
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err("the connection was closed".into()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// How long after `since` the server closed `stream`, waiting at most `wait`; `None` if
/// it stayed open.
fn closed_after(stream: &mut std::net::TcpStream, since: std::time::Instant, wait: Duration) -> Option<Duration> {
    use std::io::{ErrorKind, Read};
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    match stream.read(&mut buf) {
        Ok(0) => Some(since.elapsed()),
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
            Some(since.elapsed())
        }
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => None,
    }
}

#[test]
fn a_keep_alive_connection_idle_past_the_header_timeout_is_still_served() {
    // hyper's own header timeout also ran between requests: idle 10 s, a kept-alive
    // connection was dropped, under proxies that keep theirs for 60 s.
    let server = with_timeouts(Duration::from_secs(1), Duration::from_secs(5));
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    assert_eq!(healthz_kept_alive(&mut stream), Ok(200));
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(healthz_kept_alive(&mut stream), Ok(200), "served on the same socket");
}

#[test]
fn a_request_whose_headers_stall_is_dropped_after_the_header_timeout() {
    let server = with_timeouts(Duration::from_secs(1), Duration::from_secs(30));
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    use std::io::Write;
    let first_byte = std::time::Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-slow: ")
        .unwrap();
    // A byte now and then does not restart the clock: it runs from the first byte.
    std::thread::sleep(Duration::from_millis(500));
    stream.write_all(b"a").unwrap();
    let closed = closed_after(&mut stream, first_byte, Duration::from_secs(5)).expect("closed");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(3),
        "closed after {closed:?}"
    );
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("kefu_connections_shed_total{kind=\"slow_headers\"} 1"),
        "{metrics}"
    );
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = with_timeouts(Duration::from_secs(10), Duration::from_secs(1));
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    assert_eq!(healthz_kept_alive(&mut stream), Ok(200));
    let answered = std::time::Instant::now();
    let closed = closed_after(&mut stream, answered, Duration::from_secs(5)).expect("closed");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(3),
        "closed after {closed:?}"
    );
}

#[test]
fn every_bad_request_gets_a_json_error() {
    let mut config = config(DEMO);
    config.limits = Limits {
        max_body_bytes: 4096,
        max_message_chars: 50,
        rate_per_session: 2,
        ..Limits::default()
    };
    let server = TestServer::start(config);
    let json = [("content-type", "application/json")];
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "POST",
            "/v1/chat",
            "{\"session_id\": \"e\", ".into(),
            400,
            "invalid_json",
        ),
        ("POST", "/v1/chat", "not json".into(), 400, "invalid_json"),
        ("POST", "/v1/chat", "".into(), 400, "invalid_json"),
        (
            "POST",
            "/v1/chat",
            json!({ "session_id": 7, "message": "hi" }).to_string(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat",
            json!({ "session_id": "e" }).to_string(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat",
            json!({ "session_id": "e", "message": "hi", "colour": 1 }).to_string(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat",
            json!({ "session_id": "", "message": "hi" }).to_string(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat",
            json!({ "session_id": "e", "message": "  " }).to_string(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat",
            json!({ "session_id": "x".repeat(129), "message": "hi" }).to_string(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat",
            json!({ "session_id": "e", "message": "长".repeat(51) }).to_string(),
            400,
            "message_too_long",
        ),
        (
            "POST",
            "/v1/chat",
            json!({ "session_id": "e", "message": "x".repeat(5000) }).to_string(),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({ "messages": [{ "role": "system", "content": "hi" }] }).to_string(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({ "model": "m" }).to_string(),
            400,
            "invalid_request",
        ),
        ("GET", "/v1/chat", String::new(), 405, "method_not_allowed"),
        ("DELETE", "/admin/reload", String::new(), 405, "method_not_allowed"),
        ("POST", "/healthz", String::new(), 405, "method_not_allowed"),
        ("GET", "/v2/anything", String::new(), 404, "not_found"),
        ("GET", "/", String::new(), 404, "not_found"),
        ("GET", "/v1/tickets?colour=red", String::new(), 400, "invalid_request"),
        ("GET", "/v1/sessions/%zz", String::new(), 400, "invalid_request"),
    ];
    for (method, path, body, status, kind) in cases {
        let reply = server.send(method, path, &json, &body);
        assert_eq!(
            (reply.status, reply.error_type().as_str()),
            (status, kind),
            "{method} {path} {body}"
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
        if status == 405 {
            assert!(reply.header("allow").is_some());
        }
    }

    // A body larger than the limit without a content-length (chunked) is cut off too.
    let chunk = "x".repeat(3000);
    let raw = format!(
        "POST /v1/chat HTTP/1.1\r\nhost: t\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    let reply = raw_request(server.addr, raw.as_bytes());
    assert_eq!((reply.status, reply.error_type().as_str()), (413, "payload_too_large"));

    // The per-session rate limit: 2/s with a burst of 4.
    let statuses: Vec<u16> = (0..8)
        .map(|_| {
            server
                .post("/v1/chat", &json!({ "session_id": "rl", "message": "能开发票吗" }))
                .status
        })
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let limited = server.post("/v1/chat", &json!({ "session_id": "rl", "message": "能开发票吗" }));
    assert_eq!(limited.error_type(), "rate_limited");
    assert!(limited.header("retry-after").is_some());
    // Other sessions are not limited by it.
    assert_eq!(server.chat("rl-other", "能开发票吗")["source"], "rule");
}

#[test]
fn a_request_whose_body_never_arrives_times_out_with_504() {
    let mut config = config(DEMO);
    config.limits.request_timeout = Duration::from_millis(300);
    let server = TestServer::start(config);
    // Promise 100 bytes, send 10, and wait.
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"POST /v1/chat HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n{\"session_")
        .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0; 4096];
    let n = stream.read(&mut buf).unwrap();
    let reply = support::http::parse_response(&buf[..n]);
    assert_eq!((reply.status, reply.error_type().as_str()), (504, "timeout"));
}

#[test]
fn too_many_turns_in_flight_get_503() {
    let mut config = with_mock(config(ENGINE), "tests/data/server/slow_mock.yaml");
    config.limits.max_in_flight = 1;
    let server = TestServer::start(config);
    let addr = server.addr;
    let slow = std::thread::spawn(move || {
        let body = json!({ "session_id": "busy", "message": "这款是什么面料", "stream": true }).to_string();
        support::http::request(addr, "POST", "/v1/chat", &[], &body)
    });
    assert!(eventually(Duration::from_secs(5), || {
        server.get("/metrics").body.contains("kefu_turns_in_flight 1")
    }));
    let refused = server.post("/v1/chat", &json!({ "session_id": "other", "message": "能开发票吗" }));
    assert_eq!((refused.status, refused.error_type().as_str()), (503, "overloaded"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(slow.join().unwrap().status, 200);
    assert_eq!(server.chat("other", "能开发票吗")["source"], "rule");
}

#[test]
fn admin_and_agent_routes_need_the_token_when_one_is_set() {
    let mut config = config(DEMO);
    config.admin_token = Some("s3cret".into());
    let server = TestServer::start(config);
    server.chat("a1", "这件T恤洗了会缩水吗");
    let protected = [
        ("GET", "/admin/rules"),
        ("POST", "/admin/reload"),
        ("GET", "/v1/sessions/a1"),
        ("POST", "/v1/sessions/a1/takeover"),
        ("POST", "/v1/sessions/a1/release"),
        ("GET", "/v1/tickets"),
    ];
    for (method, path) in protected {
        let none = server.send(method, path, &[], "");
        assert_eq!(
            (none.status, none.error_type().as_str()),
            (401, "unauthorized"),
            "{path}"
        );
        let wrong = server.send(method, path, &[("authorization", "Bearer nope")], "");
        assert_eq!(wrong.status, 401, "{path}");
        let right = server.send(method, path, &[("authorization", "Bearer s3cret")], "");
        assert_eq!(right.status, 200, "{path}: {}", right.body);
    }
    // Customer routes and probes need no token.
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get("/metrics").status, 200);
    let token = server.chat("a1", "能开发票吗")["session_token"].clone();
    let feedback = server.post(
        "/v1/sessions/a1/feedback",
        &json!({ "score": 4, "session_token": token }),
    );
    assert_eq!(feedback.status, 200);
    // The scheme is case-insensitive.
    let lower = server.send("GET", "/admin/rules", &[("authorization", "bearer s3cret")], "");
    assert_eq!(lower.status, 200, "{}", lower.body);
}

#[test]
fn scripts_that_fail_at_run_time_are_counted_by_rule() {
    let server = TestServer::start(config(ENGINE));
    let none = server.get("/metrics").body;
    assert!(!none.contains("kefu_script_errors_total{"), "{none}");
    // 坏脚本's condition reads `order.signed_days` and these requests carry no order.
    for session in ["e1", "e2"] {
        let answer = server.chat(session, "东西坏了");
        assert!(
            answer["trace"].to_string().contains("rule 坏脚本: script failed"),
            "{answer}"
        );
    }
    assert_eq!(server.chat("e3", "怎么开发票")["rule"], "发票");
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("kefu_script_errors_total{rule=\"rule 坏脚本\"} 2"),
        "{metrics}"
    );
    assert_eq!(metrics.matches("kefu_script_errors_total{").count(), 1, "{metrics}");
}

#[test]
fn health_metrics_and_rules_routes() {
    let server = TestServer::start(config(DEMO));
    let health = server.get("/healthz").json();
    assert_eq!(health["status"], "ok");
    server.chat("m1", "这件T恤洗了会缩水吗");
    server.chat("m2", "我要投诉你们");
    let rules = server.get("/admin/rules").json();
    assert_eq!(rules["version"], health["rules_version"]);
    assert!(rules["files"].as_array().unwrap().len() >= 8);
    assert_eq!(rules["last_error"], Value::Null);
    assert_eq!(rules["counts"]["rules"].as_u64().map(|n| n > 10), Some(true));

    let reloaded = server.post("/admin/reload", &json!({}));
    assert_eq!(reloaded.status, 200);
    assert_eq!(reloaded.json()["outcome"], "applied");
    assert_eq!(reloaded.json()["changed"], false);

    // The same FAQ question twice: answered by the knowledge base, then by the cache.
    assert_eq!(server.chat("m3", "积分有什么用")["source"], "faq");
    assert_eq!(server.chat("m4", "积分有什么用？")["source"], "cache");
    // The reload started a new understanding memo: understood afresh, then found there.
    server.chat("m5", "这件T恤洗了会缩水吗");
    server.chat("m6", "这件T恤洗了会缩水吗");

    let metrics = server.get("/metrics");
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    for needle in [
        "kefu_http_requests_total{route=\"/v1/chat\",status=\"200\"} 6",
        "kefu_http_request_duration_seconds_bucket{le=",
        "kefu_answers_total{source=\"rule\"}",
        "kefu_handoffs_total",
        "kefu_safety_hits_total",
        "kefu_rule_reloads_total{outcome=\"applied\"} 1",
        "kefu_llm_tokens_total{kind=\"completion\"} 0",
        "kefu_turns_in_flight 0",
        "kefu_answer_cache_lookups_total{outcome=\"hit\"} 1",
        "kefu_answer_cache_lookups_total{outcome=\"miss\"} 1",
        "kefu_answer_cache_hit_ratio 0.5",
        "kefu_nlu_memo_hits_total 1",
        "kefu_nlu_memo_misses_total 3",
        "kefu_nlu_memo_entries 3",
        "# EOF",
    ] {
        assert!(metrics.body.contains(needle), "{needle} missing from\n{}", metrics.body);
    }
}

#[test]
fn a_fresh_server_lists_every_family_before_any_traffic() {
    let server = TestServer::start(with_mock(config(ENGINE), "tests/data/server/mock.yaml"));
    // The first request of all: dashboards and alerts must find every series at once.
    let fresh = server.get("/metrics").body;
    for needle in [
        "kefu_http_requests_total{route=\"/v1/chat\",status=\"200\"} 0",
        "kefu_http_requests_total{route=\"/admin/reload\",status=\"200\"} 0",
        "kefu_http_request_duration_seconds_count{route=\"/v1/sessions/{id}/feedback\"} 0",
        "kefu_answers_total{source=\"llm\"} 0",
        "kefu_answers_total{source=\"context\"} 0",
        "kefu_handoffs_total{kind=\"rule\",group=\"none\"} 0",
        "kefu_takeovers_total 0",
        "kefu_safety_hits_total 0",
        "kefu_rule_reloads_total{outcome=\"rejected\"} 0",
        "kefu_llm_tokens_total{kind=\"prompt\"} 0",
        "kefu_feedback_total{score=\"1\"} 0",
        "kefu_feedback_total{score=\"5\"} 0",
        "kefu_jobs_total{outcome=\"refused\"} 0",
        "kefu_ticket_deliveries_total{outcome=\"deferred\"} 0",
        "kefu_rate_limited_total 0",
        "kefu_slow_rules_total 0",
        "kefu_connections 1",
        "kefu_connections_shed_total{kind=\"slow_headers\"} 0",
        "kefu_turns_in_flight 0",
        "kefu_answer_cache_lookups_total{outcome=\"miss\"} 0",
        "kefu_answer_cache_hit_ratio 0",
        "kefu_nlu_memo_hits_total 0",
        "kefu_job_queue_depth 0",
        "kefu_tickets_pending 0",
        "kefu_ticket_deliveries_in_flight 0",
        "kefu_model_requests_total{outcome=\"ok\"} 0",
        "kefu_model_requests_total{outcome=\"cancelled\"} 0",
        "kefu_model_requests_total{outcome=\"busy\"} 0",
        "kefu_model_requests_total{outcome=\"timeout\"} 0",
        "kefu_model_requests_total{outcome=\"error\"} 0",
        "kefu_model_retries_total 0",
        "kefu_model_seconds_count 0",
        "kefu_model_first_token_seconds_count 0",
        "kefu_log_lines_dropped_total 0",
        "kefu_build_info{version=\"",
        "kefu_rules_info{version=\"",
        "process_start_time_seconds ",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_virtual_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_threads ",
        "# EOF",
    ] {
        assert!(fresh.contains(needle), "{needle} missing from\n{fresh}");
    }
    let version = server.get("/healthz").json()["rules_version"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        fresh.contains(&format!("kefu_rules_info{{version=\"{version}\"}} 1")),
        "{fresh}"
    );
    // A model answer is counted with its latency and its first text.
    assert_eq!(server.chat("fm1", "这款是什么面料")["source"], "llm");
    let after = server.get("/metrics").body;
    for needle in [
        "kefu_model_requests_total{outcome=\"ok\"} 1",
        "kefu_model_seconds_count 1",
        "kefu_model_first_token_seconds_count 1",
        "kefu_answers_total{source=\"llm\"} 1",
    ] {
        assert!(after.contains(needle), "{needle} missing from\n{after}");
    }
}

#[test]
fn flows_raise_tickets_and_the_job_queue_delivers_them() {
    // A back office that fails once, then accepts with a message for the customer.
    let office = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let office_addr = office.local_addr().unwrap();
    let received = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&received);
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for (n, stream) in office.incoming().enumerate().take(2) {
            let mut stream = stream.unwrap();
            let mut buf = vec![0; 8192];
            let mut request = Vec::new();
            // Read the head and the declared body.
            loop {
                let got = stream.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..got]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        seen.lock().unwrap().push(text[end + 4..].to_string());
                        break;
                    }
                }
            }
            let body = if n == 0 {
                String::new()
            } else {
                json!({ "message": "退货已受理，快递员明天上门取件。" }).to_string()
            };
            let status = if n == 0 { "503 Service Unavailable" } else { "200 OK" };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });

    let mut config = config(ENGINE);
    config.tickets_url = Some(format!("http://{office_addr}/tickets"));
    config.jobs.backoff = Duration::from_millis(50);
    let server = TestServer::start(config);
    server.chat("r1", "我要退货");
    let done = server.chat("r1", "202611010001");
    assert!(done["reply"].as_str().unwrap().contains("已为您提交退货申请"), "{done}");

    let tickets = server.get("/v1/tickets?session_id=r1").json();
    let ticket = &tickets["tickets"][0];
    assert_eq!(ticket["kind"], "return");
    assert_eq!(ticket["reference"], "202611010001");
    assert_eq!(server.get("/v1/tickets?session_id=nobody").json()["tickets"], json!([]));

    // The answer came at once; the delivery result reaches the session afterwards.
    assert!(
        eventually(Duration::from_secs(10), || {
            server.get("/v1/sessions/r1").json()["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["text"] == "退货已受理，快递员明天上门取件。")
        }),
        "{}",
        server.get("/v1/sessions/r1").body
    );
    assert_eq!(server.get("/v1/tickets").json()["tickets"][0]["status"], "submitted");
    let bodies = received.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one failed attempt, one retry");
    let sent: Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(sent["reference"], "202611010001");
    let metrics = server.get("/metrics").body;
    assert!(metrics.contains("kefu_jobs_total{outcome=\"retried\"} 1"), "{metrics}");
    assert!(
        metrics.contains("kefu_jobs_total{outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
}

#[test]
fn healthz_says_when_the_files_on_disk_are_rejected_and_stays_200() {
    let dir = copy_rules(Path::new(ENGINE), "healthz-stale");
    let mut config = ServeConfig::new(&dir);
    config.watch = false;
    let server = TestServer::start(config);
    let file = dir.join("shop.kefu");
    let original = std::fs::read_to_string(&file).unwrap();
    let health = server.get("/healthz");
    assert_eq!(health.status, 200);
    let serving = health.json()["rules_version"].clone();
    assert_eq!(health.json()["rules_stale"], false);
    assert_eq!(health.json().get("rules_errors"), None);

    // Two mistakes in the files: the reload is rejected, the old rules keep serving.
    let broken = original
        .replace("reply \"下单后在订单详情里申请电子发票即可。\"", "reply \"发票第三版")
        .replace("handoff \"客户要求投诉\"", "handoff \"客户要求投诉\" priority x");
    std::fs::write(&file, &broken).unwrap();
    assert_eq!(server.post("/admin/reload", &json!({})).status, 422);
    let health = server.get("/healthz");
    assert_eq!(health.status, 200, "a typo in the rules must not take the node out");
    let body = health.json();
    assert_eq!(body["rules_stale"], true);
    assert_eq!(body["rules_errors"], 2, "{body}");
    assert_eq!(body["rules_version"], serving, "the version still served");
    let since = body["rules_stale_since"].as_str().expect("stale since").to_string();
    assert!(chrono::DateTime::parse_from_rfc3339(&since).is_ok(), "{since}");
    assert_eq!(
        server.chat("h", "能开发票吗")["reply"],
        "下单后在订单详情里申请电子发票即可。"
    );

    // Another broken save: still stale, the count is the latest build's, and it has been
    // stale since the first rejection.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &file,
        original.replace("reply \"下单后在订单详情里申请电子发票即可。\"", "reply \"发票"),
    )
    .unwrap();
    assert_eq!(server.post("/admin/reload", &json!({})).status, 422);
    let body = server.get("/healthz").json();
    assert_eq!(
        (body["rules_stale"].clone(), body["rules_errors"].clone()),
        (json!(true), json!(1))
    );
    assert_eq!(body["rules_stale_since"], since);
    assert_eq!(server.get("/admin/rules").json()["stale_since"], since);

    // A good save: fresh again, serving the new version.
    std::fs::write(
        &file,
        original.replace("下单后在订单详情里申请电子发票即可。", "发票第二版。"),
    )
    .unwrap();
    assert_eq!(server.post("/admin/reload", &json!({})).status, 200);
    let body = server.get("/healthz").json();
    assert_eq!(body["rules_stale"], false);
    assert_eq!(body.get("rules_errors"), None);
    assert_eq!(body.get("rules_stale_since"), None);
    assert_ne!(body["rules_version"], serving);
    assert_eq!(server.get("/admin/rules").json()["stale_since"], Value::Null);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn reload_applies_good_edits_and_rejects_bad_ones_while_serving() {
    let dir = copy_rules(Path::new(ENGINE), "reload");
    let mut config = ServeConfig::new(&dir);
    config.debounce = Duration::from_millis(50);
    let server = TestServer::start(config);
    let file = dir.join("shop.kefu");
    let original = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        server.chat("r", "能开发票吗")["reply"],
        "下单后在订单详情里申请电子发票即可。"
    );
    let first_version = server.get("/admin/rules").json()["version"].clone();

    // A good edit, written in place: visible on a following request.
    std::fs::write(
        &file,
        original.replace("下单后在订单详情里申请电子发票即可。", "发票第二版。"),
    )
    .unwrap();
    assert!(eventually(
        Duration::from_secs(5),
        || server.chat("r", "能开发票吗")["reply"] == "发票第二版。"
    ));
    let status = server.get("/admin/rules").json();
    assert_ne!(status["version"], first_version);
    assert_eq!(status["reloads"].as_u64().map(|n| n >= 1), Some(true));
    // The swap shows in the metrics at once: one rules_info series, the new version.
    let metrics = server.get("/metrics").body;
    let info = format!("kefu_rules_info{{version={}}} 1", status["version"]);
    assert!(metrics.contains(&info), "{info} missing from\n{metrics}");
    assert_eq!(metrics.matches("kefu_rules_info{").count(), 1, "{metrics}");

    // A bad edit: the old rules keep answering; /admin/rules shows file:line:col.
    let broken = original.replace("reply \"下单后在订单详情里申请电子发票即可。\"", "reply \"发票第三版");
    std::fs::write(&file, &broken).unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        server.get("/admin/rules").json()["last_error"] != Value::Null
    }));
    let status = server.get("/admin/rules").json();
    let location = status["last_error"]["diagnostics"][0]["location"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(location.ends_with("shop.kefu:19:9"), "{location}");
    assert!(
        status["last_error"]["report"]
            .as_str()
            .unwrap()
            .contains("string is not closed")
    );
    assert_eq!(server.chat("r", "能开发票吗")["reply"], "发票第二版。");
    // Health says the files on disk are rejected, and stays 200.
    let health = server.get("/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["rules_stale"], true);
    assert_eq!(health.json()["rules_errors"], 1);
    let manual = server.post("/admin/reload", &json!({}));
    assert_eq!((manual.status, manual.error_type().as_str()), (422, "rules_invalid"));
    assert!(
        manual.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shop.kefu:19:9")
    );
    assert!(
        manual.json()["error"]["diagnostics"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    );

    // An editor that writes a temporary file and renames it over the original.
    let temp = dir.join(".shop.kefu.swp-new");
    std::fs::write(
        &temp,
        original.replace("下单后在订单详情里申请电子发票即可。", "发票第四版。"),
    )
    .unwrap();
    std::fs::rename(&temp, &file).unwrap();
    assert!(eventually(
        Duration::from_secs(5),
        || server.chat("r", "能开发票吗")["reply"] == "发票第四版。"
    ));
    assert_eq!(server.get("/admin/rules").json()["last_error"], Value::Null);
    assert_eq!(server.get("/healthz").json()["rules_stale"], false);
    // And the watcher still sees edits after the rename.
    std::fs::write(
        &file,
        original.replace("下单后在订单详情里申请电子发票即可。", "发票第五版。"),
    )
    .unwrap();
    assert!(eventually(
        Duration::from_secs(5),
        || server.chat("r", "能开发票吗")["reply"] == "发票第五版。"
    ));
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("kefu_rule_reloads_total{outcome=\"rejected\"}"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_still_being_written_or_just_emptied_is_not_applied() {
    use std::io::Write as _;
    let dir = copy_rules(Path::new(ENGINE), "half-written");
    let mut config = ServeConfig::new(&dir);
    config.debounce = Duration::from_millis(50);
    let server = TestServer::start(config);
    let file = dir.join("shop.kefu");
    let original = std::fs::read_to_string(&file).unwrap();
    let answer = || server.chat("hw", "能开发票吗")["reply"].clone();
    assert_eq!(answer(), "下单后在订单详情里申请电子发票即可。");
    let version = || server.get("/admin/rules").json()["version"].clone();
    let first = version();

    // An in-place save that stops halfway for longer than the debounce: the first half
    // parses on its own (it ends before the invoice rule), but it is never served.
    let edited = original.replace("下单后在订单详情里申请电子发票即可。", "发票新版。");
    let cut = edited.find("rule").unwrap();
    let mut writer = std::fs::File::create(&file).unwrap();
    writer.write_all(&edited.as_bytes()[..cut]).unwrap();
    writer.flush().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(version(), first, "a half-written file was applied");
    assert_eq!(answer(), "下单后在订单详情里申请电子发票即可。");
    writer.write_all(&edited.as_bytes()[cut..]).unwrap();
    drop(writer);
    assert!(eventually(Duration::from_secs(5), || answer() == "发票新版。"));

    // Truncated to nothing (an editor's first step of an in-place save): the rules it
    // held keep answering until it is written again.
    let second = version();
    drop(std::fs::File::create(&file).unwrap());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(version(), second, "an emptied file was applied at once");
    assert_eq!(answer(), "发票新版。");
    std::fs::write(
        &file,
        original.replace("下单后在订单详情里申请电子发票即可。", "发票三版。"),
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(5), || answer() == "发票三版。"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_binary_reloads_on_sighup_and_finishes_in_flight_turns_on_sigterm() {
    let dir = copy_rules(Path::new(ENGINE), "signals");
    let file = dir.join("shop.kefu");
    let original = std::fs::read_to_string(&file).unwrap();
    let process = ServeProcess::start(
        &[
            "--rules",
            dir.to_str().unwrap(),
            "--no-watch",
            "--mock-llm",
            "tests/data/server/slow_mock.yaml",
            "--log-format",
            "json",
        ],
        &[],
    );
    std::fs::write(
        &file,
        original.replace("下单后在订单详情里申请电子发票即可。", "信号重载。"),
    )
    .unwrap();
    // No watcher: the edit is not seen until SIGHUP.
    assert_eq!(
        process.chat("h", "能开发票吗")["reply"],
        "下单后在订单详情里申请电子发票即可。"
    );
    process.signal("HUP");
    assert!(eventually(
        Duration::from_secs(5),
        || process.chat("h", "能开发票吗")["reply"] == "信号重载。"
    ));

    // A slow streamed model answer is in flight when SIGTERM arrives: it completes.
    let addr = process.addr;
    let slow = std::thread::spawn(move || {
        let body = json!({ "session_id": "slow", "message": "这款是什么面料", "stream": true }).to_string();
        support::http::request(addr, "POST", "/v1/chat", &[], &body)
    });
    std::thread::sleep(Duration::from_millis(300));
    process.signal("TERM");
    let reply = slow.join().unwrap();
    assert_eq!(reply.status, 200);
    let events = reply.events();
    assert_eq!(events.last().unwrap().0.as_deref(), Some("done"), "{}", reply.body);
    let (status, log) = process.wait(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{log}");
    // JSON logs: one object a line, with the session and source of each turn, and never
    // the text of a message.
    let turns: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "turn")
        .collect();
    assert!(
        turns.iter().any(|t| t["session"] == "slow" && t["source"] == "llm"),
        "{log}"
    );
    assert!(!log.contains("这款是什么面料") && !log.contains("能开发票吗"), "{log}");
    assert!(log.contains("\"trigger\":\"signal\""), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn livez_and_readyz_answer_balancers_without_a_token() {
    let mut config = config(DEMO);
    config.admin_token = Some("s3cret".into());
    let server = TestServer::start(config);
    // A balancer calls them through a proxy header or none, and has no token.
    for headers in [&[][..], &[("x-forwarded-for", "203.0.113.7")][..]] {
        let live = server.send("GET", "/livez", headers, "");
        assert_eq!((live.status, live.json()["status"].clone()), (200, json!("live")));
        let ready = server.send("GET", "/readyz", headers, "");
        assert_eq!(ready.status, 200, "{}", ready.body);
        assert_eq!(ready.json()["status"], "ready");
        assert_eq!(
            ready.json()["rules_version"],
            server.get("/healthz").json()["rules_version"]
        );
        assert_eq!(ready.header("connection"), Some("close"), "asked by the client");
    }
    let posted = server.post("/readyz", &json!({}));
    assert_eq!(
        (posted.status, posted.error_type().as_str()),
        (405, "method_not_allowed")
    );
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("kefu_http_requests_total{route=\"/readyz\",status=\"200\"} 2"),
        "{metrics}"
    );
}

/// Cuts a server's drain when dropped: a failed assertion must not leave the test waiting
/// out a long drain in the server's drop.
struct CutDrain(Arc<kefu::server::State>);

impl Drop for CutDrain {
    fn drop(&mut self) {
        self.0.health.cut_drain();
    }
}

#[test]
fn a_shutdown_drains_first_not_ready_still_answering_and_closing_connections() {
    let mut config = config(DEMO);
    // Longer than any test: the drain ends when the test cuts it.
    config.limits.drain = Duration::from_secs(3600);
    let mut server = TestServer::start(config);
    // Dropped before the server (declared after it).
    let _cut = CutDrain(Arc::clone(&server.state));
    let mut kept = std::net::TcpStream::connect(server.addr).unwrap();
    let before = get_kept_alive(&mut kept, "/readyz").unwrap();
    assert_eq!(before.status, 200);
    assert_eq!(before.header("connection"), None, "kept alive while serving");

    server.begin_shutdown();
    assert!(
        eventually(Duration::from_secs(10), || server.get("/readyz").status == 503),
        "/readyz did not turn 503 once the shutdown began"
    );
    let ready = server.get("/readyz");
    assert_eq!(ready.json()["reason"], "draining", "{}", ready.body);
    assert_eq!(ready.header("retry-after"), Some("1"));
    // Still answering new connections and turns, each response closing its connection.
    let mut fresh = std::net::TcpStream::connect(server.addr).unwrap();
    let body = json!({ "session_id": "drain", "message": "能开发票吗" }).to_string();
    let turn = send_kept_alive(&mut fresh, "POST", "/v1/chat", &body).unwrap();
    assert_eq!(turn.status, 200, "{}", turn.body);
    assert_eq!(turn.json()["source"], "rule");
    assert_eq!(
        turn.header("connection"),
        Some("close"),
        "the client did not ask to close"
    );
    assert_eq!(server.get("/livez").status, 200);
    // A connection kept alive from before: answered, told to close, then closed.
    let last = get_kept_alive(&mut kept, "/healthz").unwrap();
    assert_eq!((last.status, last.header("connection")), (200, Some("close")));
    assert!(
        closed_after(&mut kept, std::time::Instant::now(), Duration::from_secs(10)).is_some(),
        "the kept-alive connection stayed open after its response said close"
    );

    // Cut short: the listener closes and the server stops.
    server.state.health.cut_drain();
    let addr = server.addr;
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_err()),
        "still accepting after the drain was cut"
    );
    drop(server);
}

#[test]
fn the_binary_drains_on_sigterm_and_a_second_sigterm_cuts_the_drain_short() {
    let process = ServeProcess::start(&["--rules", DEMO, "--no-watch", "--drain-seconds", "3600"], &[]);
    assert_eq!(process.send("GET", "/readyz", &[], "").status, 200);
    process.signal("TERM");
    assert!(eventually(Duration::from_secs(10), || {
        process.send("GET", "/readyz", &[], "").status == 503
    }));
    // Draining: still answering turns.
    assert_eq!(process.chat("drain-bin", "能开发票吗")["source"], "rule");
    process.signal("TERM");
    let (status, log) = process.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{log}");
    let order = [
        "stopping",
        "draining",
        "second signal",
        "drain cut short",
        "shutting down",
        "stopped",
    ];
    let at: Vec<_> = order.iter().map(|phase| log.find(phase)).collect();
    assert!(at.iter().all(Option::is_some), "a phase is not logged: {at:?}\n{log}");
    assert!(at.windows(2).all(|w| w[0] < w[1]), "phases out of order: {at:?}\n{log}");
}

#[test]
fn while_starting_readyz_is_503_starting_and_livez_200() {
    use std::io::{BufRead, BufReader};
    // A "Redis" that accepts and never answers: the start waits on it (up to the store's
    // 2 s timeout) after loading the rules, then fails.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis = format!("redis://{}/0", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || silent.incoming().take(4).filter_map(Result::ok).collect::<Vec<_>>());
    let state = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--model",
            "none",
            "--no-watch",
            "--rules",
            DEMO,
        ])
        .args(["--log-format", "json", "--redis", &redis, "--state-dir"])
        .arg(state.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = lines
        .by_ref()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .find(|l| l["message"].as_str().is_some_and(|m| m.starts_with("starting")))
        .expect("a `starting` line")["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ready = support::http::request(addr, "GET", "/readyz", &[], "");
    assert_eq!(
        (ready.status, ready.json()["reason"].clone()),
        (503, json!("starting")),
        "{}",
        ready.body
    );
    assert_eq!(support::http::request(addr, "GET", "/livez", &[], "").status, 200);
    let turn = support::http::request(addr, "POST", "/v1/chat", &[], "{}");
    assert_eq!((turn.status, turn.error_type().as_str()), (503, "starting"));
    assert_eq!(turn.header("retry-after"), Some("1"));
    // The store never answered: the start fails, saying so.
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(!status.success());
    assert!(rest.join("\n").to_lowercase().contains("redis"), "{rest:?}");
    drop(held);
}

#[test]
#[ignore = "needs redis-server (make test runs it)"]
fn readyz_follows_a_redis_that_goes_away_and_comes_back() {
    // Its own redis-server, which the test stops and starts again.
    let mut redis = support::redis::OwnRedis::start();
    let url = redis.url();
    let node = ServeProcess::start(&["--rules", DEMO, "--no-watch", "--redis", &url], &[]);
    let readyz = || node.send("GET", "/readyz", &[], "");
    assert_eq!(readyz().status, 200);
    redis.kill();
    assert!(
        eventually(Duration::from_secs(15), || readyz().status == 503),
        "still ready with Redis gone"
    );
    assert_eq!(readyz().json()["reason"], "store_unavailable");
    assert_eq!(node.send("GET", "/livez", &[], "").status, 200, "alive all the same");
    redis.start_again();
    assert!(
        eventually(Duration::from_secs(15), || readyz().status == 200),
        "not ready again once Redis is back"
    );
}

#[test]
fn serve_refuses_a_model_file_that_is_not_there() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["serve", "--addr", "127.0.0.1:0", "--model", "models/x.gguf"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("models/x.gguf: no such model file"), "{stderr}");
}

#[test]
fn a_node_can_use_another_openai_compatible_server_as_its_model() {
    // Node A answers with the scripted model; node B has no model of its own and sends
    // its prompts to A's /v1/chat/completions, as it would to llama-server or vLLM.
    let model_server = ServeProcess::start(
        &[
            "--rules",
            ENGINE,
            "--no-watch",
            "--mock-llm",
            "tests/data/server/mock.yaml",
        ],
        &[],
    );
    let url = format!("http://{}", model_server.addr);
    let front = ServeProcess::start(&["--rules", ENGINE, "--no-watch", "--llm-url", &url], &[]);
    let reply = front.chat("remote", "这款是什么面料");
    assert_eq!(reply["source"], "llm", "{reply}");
    // A's answer, reached through A's own rules: no rule there knows fabrics, so its
    // model (the mock) answered, and B judged that text like any model answer.
    assert_eq!(reply["reply"], "这款是100%纯棉面料，透气舒适。", "{reply}");

    // A model server that is down: the fallback chain answers instead, at once.
    drop(model_server);
    let reply = front.chat("remote-down", "这款是什么面料");
    assert_ne!(reply["source"], "llm", "{reply}");
}

#[test]
#[ignore = "needs redis-server (make test starts one)"]
fn two_nodes_share_one_conversation_through_redis() {
    let url = std::env::var("KEFU_TEST_REDIS").expect(
        "KEFU_TEST_REDIS is not set: run this test under tests/support/with-redis.sh, which starts a \
         redis-server and sets it (make test does)",
    );
    let session = format!("redis-{}", std::process::id());
    let a = ServeProcess::start(&["--rules", ENGINE, "--redis", &url, "--no-watch"], &[]);
    let b = ServeProcess::start(&["--rules", ENGINE, "--redis", &url, "--no-watch"], &[]);
    assert_ne!(a.addr, b.addr);
    // A flow started on node A goes on on node B, then on A again.
    let first = a.chat(&session, "我想换个颜色");
    assert_eq!(first["reply"], "您想换成什么颜色？");
    let second = b.chat(&session, "黑色");
    assert_eq!(second["source"], "flow");
    assert_eq!(second["reply"], "还有什么要备注的吗？");
    let third = a.chat(&session, "尽快发货");
    assert_eq!(third["reply"], "好的，帮您换成黑色，备注：尽快发货。");
    // A takeover on B silences A.
    let taken = b.send("POST", &format!("/v1/sessions/{session}/takeover"), &[], "");
    assert_eq!(taken.status, 200, "{}", taken.body);
    assert_eq!(a.chat(&session, "在吗")["source"], "human");
    let seen = b.send("GET", &format!("/v1/sessions/{session}"), &[], "").json();
    assert_eq!(seen["takeover"]["queued"], json!(["在吗"]));
    assert_eq!(seen["turns"], 3);
    // The Redis series exist for every operation from the start; no try failed.
    let metrics = a.send("GET", "/metrics", &[], "").body;
    for op in ["get", "update", "store", "remove"] {
        assert!(
            metrics.contains(&format!("kefu_redis_errors_total{{op=\"{op}\"}} 0")),
            "{metrics}"
        );
    }
    assert!(metrics.contains("kefu_redis_seconds_count{op=\"store\"}"), "{metrics}");
}

/// A session store that cannot be reached (Redis stopped) gets API clients a 503
/// `store_unavailable` with `Retry-After` and the customer's text in `error.reply`, on
/// every route that touches a session, streamed or not; nothing changes, and once the
/// store is back the conversation goes on at its flow step.
#[test]
fn a_session_store_that_fails_gets_503_store_unavailable_and_changes_nothing() {
    let store = Arc::new(support::FlakyStore::default());
    let mut config = config(ENGINE);
    config.sessions = Some(Arc::clone(&store) as Arc<dyn kefu::store::SessionStore>);
    let server = TestServer::start(config);
    assert_eq!(server.chat("down", "我想换个颜色")["reply"], "您想换成什么颜色？");
    let unavailable = |what: &str, reply: &support::http::Reply| {
        assert_eq!(reply.status, 503, "{what}: {}", reply.body);
        assert_eq!(reply.error_type(), "store_unavailable", "{what}");
        assert_eq!(reply.header("retry-after"), Some("1"), "{what}");
        assert_eq!(reply.json()["error"]["reply"], "系统繁忙，请稍后再试", "{what}");
    };
    let turn = json!({ "session_id": "down", "message": "黑色" });

    store.fail_reads(true);
    unavailable("a turn", &server.post("/v1/chat", &turn));
    unavailable("the session", &server.get("/v1/sessions/down"));
    unavailable("a takeover", &server.post("/v1/sessions/down/takeover", &json!({})));
    unavailable(
        "a rating",
        &server.post(
            "/v1/sessions/down/feedback",
            &json!({ "score": 5, "session_token": "x" }),
        ),
    );
    unavailable(
        "an OpenAI-style turn",
        &server.post(
            "/v1/chat/completions",
            &json!({ "user": "down", "messages": [{ "role": "user", "content": "黑色" }] }),
        ),
    );
    let streamed = server.post(
        "/v1/chat",
        &json!({ "session_id": "down", "message": "黑色", "stream": true }),
    );
    assert_eq!(streamed.status, 200, "a stream has begun before the turn runs");
    let events = streamed.events();
    let (name, data) = events.last().expect("an event");
    assert_eq!(name.as_deref(), Some("error"), "{events:?}");
    let error: Value = serde_json::from_str(data).unwrap();
    assert_eq!(error["error"]["type"], "store_unavailable");
    assert_eq!(error["error"]["reply"], "系统繁忙，请稍后再试");

    store.fail_reads(false);
    store.fail_writes(true);
    unavailable("a turn that cannot be saved", &server.post("/v1/chat", &turn));

    store.fail_writes(false);
    let next = server.chat("down", "黑色");
    assert_eq!(
        next["reply"], "还有什么要备注的吗？",
        "the flow goes on where it was: {next}"
    );
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("kefu_http_requests_total{route=\"/v1/chat\",status=\"503\"} 2"),
        "{metrics}"
    );
}

/// A token as a shop's backend signs one (HS256) for `claims`.
fn signed_identity(claims: Value, key: &[u8]) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    encode(&Header::default(), &claims, &EncodingKey::from_secret(key)).unwrap()
}

#[test]
fn a_forged_identity_is_refused_and_a_signed_one_reaches_the_rules() {
    const KEY: &[u8] = b"shop-backend-key";
    let mut config = config(DEMO);
    config.admin_token = Some("s3cret".into());
    config.identity = Some(kefu::server::identity::IdentityConfig::new(KEY.to_vec()));
    let server = TestServer::start(config);
    let json = ("content-type", "application/json");
    let exp = chrono::Utc::now().timestamp() + 600;

    // The operator's forgery: a made-up order in clear.
    let forged = json!({ "session_id": "id1", "message": "我要退货",
                         "context": { "order": { "id": "999999999999", "signed_days": 3 } } });
    let refused = server.send("POST", "/v1/chat", &[json], &forged.to_string());
    assert_eq!(
        (refused.status, refused.error_type().as_str()),
        (403, "identity_unsigned"),
        "{}",
        refused.body
    );
    let vip = json!({ "session_id": "id1", "message": "我要退货", "user": { "segment": "vip" } });
    let refused = server.send("POST", "/v1/chat", &[json], &vip.to_string());
    assert_eq!(refused.status, 403, "{}", refused.body);
    let completion = json!({ "messages": [{ "role": "user", "content": "我要退货" }],
                             "kefu_context": { "order": { "id": "999999999999" } } });
    let refused = server.send("POST", "/v1/chat/completions", &[json], &completion.to_string());
    assert_eq!(
        (refused.status, refused.error_type().as_str()),
        (403, "identity_unsigned"),
        "{}",
        refused.body
    );
    // A token signed with another key, or expired.
    for token in [
        signed_identity(json!({ "sub": "u1", "exp": exp }), b"guessed key"),
        signed_identity(json!({ "sub": "u1", "exp": 1_000_000_000 }), KEY),
    ] {
        let bad = server.send(
            "POST",
            "/v1/chat",
            &[json, ("x-kefu-identity", &token)],
            &json!({ "session_id": "id1", "message": "我要退货" }).to_string(),
        );
        assert_eq!(
            (bad.status, bad.error_type().as_str()),
            (401, "identity_invalid"),
            "{}",
            bad.body
        );
    }
    // A customer may not pick the clock promotions are judged by.
    let replay = json!({ "session_id": "id1", "message": "有什么活动", "as_of": "2026-11-11T10:00:00+08:00" });
    assert_eq!(
        server.send("POST", "/v1/chat", &[json], &replay.to_string()).status,
        403
    );

    // The order the shop's backend signed reaches the rules, in the header or the body.
    let token = signed_identity(
        json!({ "sub": "u1", "exp": exp, "user": { "segment": "vip" },
                "context": { "order": { "id": "202611020001", "signed_days": 3 } } }),
        KEY,
    );
    let ok = server.send(
        "POST",
        "/v1/chat",
        &[json, ("x-kefu-identity", &token)],
        &json!({ "session_id": "id2", "message": "我要退货" }).to_string(),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["rule"], "七天无理由", "{}", ok.body);
    assert!(
        ok.json()["reply"].as_str().unwrap().contains("202611020001"),
        "{}",
        ok.body
    );
    let ok = server.post(
        "/v1/chat",
        &json!({ "session_id": "id3", "message": "我要退货", "identity": token }),
    );
    assert!(
        ok.json()["reply"].as_str().unwrap().contains("202611020001"),
        "{}",
        ok.body
    );
    // A guest without a token is answered, as a guest: the flow asks for the order.
    let guest = server.send(
        "POST",
        "/v1/chat",
        &[json],
        &json!({ "session_id": "id4", "message": "我要退货" }).to_string(),
    );
    assert_eq!(guest.status, 200, "{}", guest.body);
    assert_ne!(guest.json()["rule"], "七天无理由", "{}", guest.body);
    // The shop's backend, holding the admin token, still passes the order in clear.
    let backend = server.send(
        "POST",
        "/v1/chat",
        &[json, ("authorization", "Bearer s3cret")],
        &forged.to_string(),
    );
    assert_eq!(backend.status, 200, "{}", backend.body);
}

/// The demo rules and a candidate version of them (a comment added: only the hash differs).
fn demo_candidate() -> Arc<kefu::RuleSet> {
    let copy = copy_rules(Path::new(DEMO), "candidate");
    let shop = copy.join("shop.kefu");
    let text = std::fs::read_to_string(&shop).unwrap();
    std::fs::write(&shop, format!("{text}\n# the candidate\n")).unwrap();
    let candidate = kefu::dsl::load_dir(&copy).rules.expect("the copy compiles");
    std::fs::remove_dir_all(&copy).unwrap();
    Arc::new(candidate)
}

#[test]
fn a_request_may_pin_a_rules_version_it_names_well() {
    let server = TestServer::start(config(DEMO));
    let live = server.chat("p1", "这件T恤洗了会缩水吗");
    assert_eq!(live["rules_role"], "live", "{live}");
    let version = live["rules_version"].as_str().unwrap().to_string();
    let pinned = server.post(
        "/v1/chat",
        &json!({ "session_id": "p1", "message": "能开发票吗", "rules_version": version }),
    );
    assert_eq!(pinned.status, 200, "{}", pinned.body);
    assert_eq!(
        (
            pinned.json()["rules_version"].as_str(),
            pinned.json()["rules_role"].as_str()
        ),
        (Some(version.as_str()), Some("pinned"))
    );
    for (asked, status, kind) in [
        (json!("0123456789ab"), 404, "unknown_rules_version"),
        (json!(""), 400, "invalid_request"),
        (json!("../../etc/passwd"), 400, "invalid_request"),
        (json!("a".repeat(65)), 400, "invalid_request"),
        (json!(12), 400, "invalid_request"),
    ] {
        let reply = server.post(
            "/v1/chat",
            &json!({ "session_id": "p2", "message": "能开发票吗", "rules_version": asked }),
        );
        assert_eq!(
            (reply.status, reply.error_type().as_str()),
            (status, kind),
            "{}",
            reply.body
        );
    }
    // The refused turns changed nothing.
    assert_eq!(server.get("/v1/sessions/p2").status, 404);

    // With an admin token, only its bearer may pin a version.
    let mut guarded = config(DEMO);
    guarded.admin_token = Some("s3cret".into());
    let server = TestServer::start(guarded);
    let body = json!({ "session_id": "p3", "message": "能开发票吗", "rules_version": version }).to_string();
    let json = ("content-type", "application/json");
    let refused = server.send("POST", "/v1/chat", &[json], &body);
    assert_eq!(
        (refused.status, refused.error_type().as_str()),
        (403, "forbidden"),
        "{}",
        refused.body
    );
    let admin = server.send("POST", "/v1/chat", &[json, ("authorization", "Bearer s3cret")], &body);
    assert_eq!(admin.status, 200, "{}", admin.body);
    assert_eq!(admin.json()["rules_role"], "pinned");
}

#[test]
fn metrics_count_each_serving_version_and_forget_one_that_stops() {
    let server = TestServer::start(config(DEMO));
    let candidate = demo_candidate();
    let live = server.state.engine.rules().version.clone();
    let series =
        |name: &str, version: &str, role: &str| format!("kefu_{name}_total{{version=\"{version}\",role=\"{role}\"}}");
    // The live version's series exist before its first turn.
    let fresh = server.get("/metrics").body;
    assert!(
        fresh.contains(&format!("{} 0", series("version_turns", &live, "live"))),
        "{fresh}"
    );

    server.state.engine.set_candidate(Some((Arc::clone(&candidate), 100)));
    let answer = server.chat("m1", "这件T恤洗了会缩水吗");
    assert_eq!(
        (answer["rules_version"].as_str(), answer["rules_role"].as_str()),
        (Some(candidate.version.as_str()), Some("canary"))
    );
    let second = server.chat("m1", "能开发票吗");
    let by_rule = [&answer, &second].iter().filter(|a| a["source"] == "rule").count();
    // Rated after the canary ended: the rating still counts for the version that answered.
    server.state.engine.set_candidate(Some((Arc::clone(&candidate), 0)));
    server.chat("m2", "这件T恤洗了会缩水吗");
    let rated = server.post(
        "/v1/sessions/m1/feedback",
        &json!({ "score": 4, "session_token": answer["session_token"] }),
    );
    assert_eq!(rated.status, 200, "{}", rated.body);
    let metrics = server.get("/metrics").body;
    let canary = &candidate.version;
    for (line, value) in [
        (series("version_turns", canary, "canary"), 2),
        (series("version_turns", &live, "live"), 1),
        (series("version_feedback", canary, "canary"), 1),
        (series("version_feedback_score", canary, "canary"), 4),
        (series("version_feedback", &live, "live"), 0),
        (series("version_failed_turns", canary, "canary"), 0),
    ] {
        assert!(
            metrics.contains(&format!("{line} {value}\n")),
            "{line} {value}:\n{metrics}"
        );
    }
    let by_rule =
        format!("kefu_version_answers_total{{version=\"{canary}\",role=\"canary\",source=\"rule\"}} {by_rule}\n");
    assert!(metrics.contains(&by_rule), "{metrics}");

    // The canary ends: its series leave at the next scrape.
    server.state.engine.set_candidate(None);
    let after = server.get("/metrics").body;
    assert!(!after.contains(canary.as_str()), "{after}");
    assert!(
        after.contains(&format!("{} 1", series("version_turns", &live, "live"))),
        "{after}"
    );
}
