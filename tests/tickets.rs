//! Tickets survive the service: a ticket whose delivery was still pending when the service
//! stopped is delivered by the next service on the same state directory, once as the back
//! office sees it (`Idempotency-Key`), signed (`X-Kefu-Signature`); a torn journal line is
//! skipped; ticket numbers go on where they stopped. (The fleet version, with Redis,
//! haproxy and `kill -9`, is `tests/support/fleet.py`.)

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kefu::server::ServeConfig;
use support::http::{TestServer, eventually};

/// The engine's test shop: its return flow raises a ticket.
const ENGINE: &str = "tests/data/engine";
const SECRET: &[u8] = b"back-office-secret";

/// One request the back office received: its headers (lowercased names) and body.
#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A back office on a loopback port that answers every request with `status` (changeable)
/// and records what it got.
struct BackOffice {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl BackOffice {
    fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (answer, seen) = (Arc::clone(&status), Arc::clone(&received));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(request) = read_request(&mut stream) else {
                    continue;
                };
                seen.lock().unwrap().push(request);
                let code = answer.load(Ordering::SeqCst);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        BackOffice { addr, status, received }
    }

    fn url(&self) -> String {
        format!("http://{}/tickets", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut request = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let got = stream.read(&mut buf).ok()?;
        if got == 0 {
            return None;
        }
        request.extend_from_slice(&buf[..got]);
        let text = String::from_utf8_lossy(&request).to_string();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let headers: Vec<(String, String)> = text[..end]
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        if request.len() >= end + 4 + length {
            let body = String::from_utf8_lossy(&request[end + 4..end + 4 + length]).to_string();
            return Some(Received { headers, body });
        }
    }
}

fn config(state: &std::path::Path, office: &BackOffice) -> ServeConfig {
    let mut config = ServeConfig::new(ENGINE);
    config.watch = false;
    config.tickets_url = Some(office.url());
    config.tickets.state_dir = Some(state.to_path_buf());
    config.tickets.secret = Some(SECRET.to_vec());
    config.jobs.backoff = Duration::from_millis(20);
    config.jobs.max_attempts = 2;
    config.limits.shutdown_grace = Duration::from_millis(200);
    config
}

/// Raises a return ticket in `session`; its id, as the customer was told.
fn raise_ticket(server: &TestServer, session: &str) -> String {
    server.chat(session, "我要退货");
    let done = server.chat(session, "202611010001");
    let reply = done["reply"].as_str().unwrap();
    assert!(reply.contains("已为您提交退货申请"), "{done}");
    let at = reply.find('T').expect("a ticket id in the reply");
    reply[at..at + 16].to_string()
}

#[test]
fn a_ticket_pending_when_the_service_stops_is_delivered_by_the_next_one_once() {
    let state = tempfile::tempdir().unwrap();
    let down = BackOffice::start(503);
    let first = TestServer::start(config(state.path(), &down));
    let id = raise_ticket(&first, "j1");
    // The back office refused it: still pending when the service stops.
    assert!(eventually(Duration::from_secs(10), || down.received().len() >= 2));
    drop(first);

    // A crash mid-write leaves a torn last line; it is skipped, not fatal.
    let journal = state.path().join("tickets.jsonl");
    let mut file = std::fs::OpenOptions::new().append(true).open(&journal).unwrap();
    file.write_all(b"{\"op\":\"done\",\"id\":\"T2026").unwrap();
    drop(file);

    let up = BackOffice::start(200);
    let second = TestServer::start(config(state.path(), &up));
    assert!(
        eventually(Duration::from_secs(10), || !up.received().is_empty()),
        "the pending ticket was not delivered after the restart"
    );
    let delivered = up.received()[0].clone();
    assert_eq!(delivered.header("idempotency-key"), Some(id.as_str()));
    let sent: serde_json::Value = serde_json::from_str(&delivered.body).unwrap();
    assert_eq!(sent["id"], id.as_str());
    assert_eq!(sent["reference"], "202611010001");
    // The signature is HMAC-SHA256 over "<timestamp>.<body>" with the shared secret.
    let timestamp: u64 = delivered.header("x-kefu-timestamp").unwrap().parse().unwrap();
    assert_eq!(
        delivered.header("x-kefu-signature"),
        Some(kefu::tickets::signature(SECRET, timestamp, delivered.body.as_bytes()).as_str())
    );
    let metrics = second.get("/metrics").body;
    assert!(
        metrics.contains("kefu_ticket_deliveries_total{outcome=\"redelivered\"} 1"),
        "{metrics}"
    );

    // Numbers go on after the restart: a new ticket never reuses the old one's.
    let next = raise_ticket(&second, "j2");
    assert_ne!(next, id);
    assert!(eventually(Duration::from_secs(10), || up.received().len() >= 2));
    drop(second);
    let keys: Vec<String> = up
        .received()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_string))
        .collect();
    assert_eq!(keys, vec![id, next], "each ticket delivered once");
}

#[test]
fn a_back_office_refusal_is_final_and_not_redelivered() {
    let state = tempfile::tempdir().unwrap();
    let office = BackOffice::start(422);
    let server = TestServer::start(config(state.path(), &office));
    let id = raise_ticket(&server, "j3");
    assert!(eventually(Duration::from_secs(10), || {
        server.get("/v1/tickets?session_id=j3").json()["tickets"][0]["status"] == "failed"
    }));
    drop(server);
    let server = TestServer::start(config(state.path(), &office));
    std::thread::sleep(Duration::from_millis(300));
    drop(server);
    assert_eq!(office.received().len(), 1, "a 422 for {id} is not retried");
    let status = office.status.load(Ordering::SeqCst);
    assert_eq!(status, 422);
}

/// An outbox that cannot record anything (a full disk, a Redis that is down).
struct Broken;

impl kefu::tickets::Outbox for Broken {
    fn next_number(&self) -> Result<u64, kefu::tickets::OutboxError> {
        Err(kefu::tickets::OutboxError::Reply("INCR"))
    }
    fn push(&self, _: &kefu::tickets::Ticket) -> Result<(), kefu::tickets::OutboxError> {
        Err(kefu::tickets::OutboxError::Reply("XADD"))
    }
    fn take(&self, _: usize, _: Duration) -> Result<Vec<kefu::tickets::Taken>, kefu::tickets::OutboxError> {
        Ok(Vec::new())
    }
    fn done(&self, _: &kefu::tickets::Taken) -> Result<(), kefu::tickets::OutboxError> {
        Ok(())
    }
    fn pending(&self) -> u64 {
        0
    }
}

#[test]
fn a_ticket_that_cannot_be_recorded_is_not_announced_as_submitted() {
    let (compiled, rendered) = support::check(std::path::Path::new(ENGINE));
    let rules = Arc::new(compiled.rules.unwrap_or_else(|| panic!("{rendered}")));
    let tickets = Arc::new(kefu::tickets::TicketStore::durable(Arc::new(Broken), true));
    let engine = kefu::Engine::new(rules).with_tickets(Arc::clone(&tickets));
    let say = |message: &str| {
        engine
            .turn(kefu::TurnRequest {
                session_id: "broken".into(),
                message: message.into(),
                ..kefu::TurnRequest::default()
            })
            .unwrap()
    };
    say("我要退货");
    let answer = say("202611010001");
    assert!(!answer.reply.contains("已为您提交"), "{}", answer.reply);
    assert!(answer.reply.contains("没能提交"), "{}", answer.reply);
    assert!(tickets.list().is_empty());
}

#[test]
fn sigterm_with_the_back_office_down_logs_the_pending_tickets_and_keeps_them() {
    let state = tempfile::tempdir().unwrap();
    let down = BackOffice::start(503);
    let dir = state.path().to_str().unwrap();
    let args = ["--rules", ENGINE, "--no-watch", "--state-dir", dir, "--tickets-url"];
    let node = support::http::ServeProcess::start(&[&args[..], &[down.url().as_str()]].concat(), &[]);
    node.chat("t1", "我要退货");
    let done = node.chat("t1", "202611010001");
    assert!(done["reply"].as_str().unwrap().contains("已为您提交"), "{done}");
    assert!(eventually(Duration::from_secs(10), || !down.received().is_empty()));
    node.signal("TERM");
    let (status, log) = node.wait(Duration::from_secs(60));
    assert!(status.success(), "{log}");
    assert!(
        log.contains("pending tickets persisted") && log.contains("pending=1"),
        "{log}"
    );

    let up = BackOffice::start(200);
    let node = support::http::ServeProcess::start(&[&args[..], &[up.url().as_str()]].concat(), &[]);
    assert!(
        eventually(Duration::from_secs(10), || !up.received().is_empty()),
        "the persisted ticket was not delivered after the restart"
    );
    drop(node);
}
