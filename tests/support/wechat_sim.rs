//! A local stand-in for WeChat's server API, for tests: access tokens (`cgi-bin/token`,
//! `cgi-bin/gettoken`), `cgi-bin/message/custom/send`, `cgi-bin/kf/sync_msg` (pages the
//! test queues), `cgi-bin/kf/send_msg` and `kf/send_msg_on_event`. It records every call,
//! can expire the current token (the next call with it gets `errcode` 40001, as WeChat
//! answers a token that another process replaced) and can fail the next sends with 500.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// One call the simulator answered.
#[derive(Clone, Debug)]
pub struct Call {
    /// The path (`/cgi-bin/kf/send_msg`).
    pub path: String,
    /// The query string.
    pub query: String,
    /// The JSON body (`null` for GETs).
    pub body: Value,
    /// The `errcode` it answered (0: success), or the HTTP status when it failed so.
    pub answered: i64,
}

#[derive(Default)]
struct Sim {
    calls: Vec<Call>,
    issued: u32,
    current: String,
    failing_sends: u32,
    /// Sends that succeed before the failing ones begin.
    passing_first: u32,
    pages: VecDeque<Value>,
    media: HashMap<String, Vec<u8>>,
}

/// The simulator; it serves on a thread until the test process ends.
#[derive(Clone)]
pub struct WechatSim {
    /// Where it listens.
    pub addr: SocketAddr,
    sim: Arc<Mutex<Sim>>,
}

impl WechatSim {
    /// Starts it on a free loopback port.
    pub fn start() -> WechatSim {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sim = Arc::new(Mutex::new(Sim::default()));
        let shared = Arc::clone(&sim);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sim = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &sim));
            }
        });
        WechatSim { addr, sim }
    }

    /// Its base URL, for a channels file's `api_base`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The calls whose path ends with `suffix`, in order.
    pub fn calls(&self, suffix: &str) -> Vec<Call> {
        let sim = self.sim.lock().unwrap();
        sim.calls.iter().filter(|c| c.path.ends_with(suffix)).cloned().collect()
    }

    /// Tokens handed out so far.
    pub fn tokens_issued(&self) -> u32 {
        self.sim.lock().unwrap().issued
    }

    /// The current token stops working (calls with it get 40001).
    pub fn expire_token(&self) {
        self.sim.lock().unwrap().current = String::from("expired");
    }

    /// The next `n` sends (custom/send, kf/send_msg) answer 500.
    pub fn fail_next_sends(&self, n: u32) {
        self.fail_sends_after(0, n);
    }

    /// After `pass` more sends succeed, the next `n` answer 500.
    pub fn fail_sends_after(&self, pass: u32, n: u32) {
        let mut sim = self.sim.lock().unwrap();
        sim.passing_first = pass;
        sim.failing_sends = n;
    }

    /// Serves `bytes` as the media `id` (`media/get`, `content-type: image/jpeg`).
    pub fn put_media(&self, id: &str, bytes: Vec<u8>) {
        self.sim.lock().unwrap().media.insert(id.to_string(), bytes);
    }

    /// Queues a page for `kf/sync_msg` (`{next_cursor, has_more, msg_list}`); with none
    /// queued it answers an empty page.
    pub fn queue_kf_page(&self, page: Value) {
        self.sim.lock().unwrap().pages.push_back(page);
    }
}

fn serve(stream: TcpStream, sim: &Mutex<Sim>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split(' ').nth(1).unwrap_or("/").to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let (status, content_type, answer) = match media(sim, path, query) {
        Some(bytes) => (200, "image/jpeg", bytes),
        None => {
            let (status, answer) = answer(sim, path, query, body);
            (status, "application/json", answer.to_string().into_bytes())
        }
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        answer.len()
    );
    let _ = stream.write_all(&answer);
}

/// The bytes of a media the test put, for a `media/get` with the current token (the
/// call recorded); `None` for every other call (answered as JSON).
fn media(sim: &Mutex<Sim>, path: &str, query: &str) -> Option<Vec<u8>> {
    if !path.ends_with("/cgi-bin/media/get") {
        return None;
    }
    let mut sim = sim.lock().unwrap();
    // Percent-decoded, as kefu encodes every query value (`M_1` is `M%5F1`).
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    if param("access_token") != sim.current {
        return None;
    }
    let bytes = sim.media.get(&param("media_id")).cloned()?;
    sim.calls.push(Call {
        path: path.to_string(),
        query: query.to_string(),
        body: Value::Null,
        answered: 0,
    });
    Some(bytes)
}

fn answer(sim: &Mutex<Sim>, path: &str, query: &str, body: Value) -> (u16, Value) {
    let mut sim = sim.lock().unwrap();
    let record = |answered: i64, sim: &mut Sim| {
        sim.calls.push(Call {
            path: path.to_string(),
            query: query.to_string(),
            body: body.clone(),
            answered,
        })
    };
    if path.ends_with("/cgi-bin/token") || path.ends_with("/cgi-bin/gettoken") {
        sim.issued += 1;
        sim.current = format!("TOKEN{}", sim.issued);
        record(0, &mut sim);
        return (
            200,
            json!({"errcode": 0, "access_token": sim.current, "expires_in": 7200}),
        );
    }
    let token = query
        .split('&')
        .find_map(|p| p.strip_prefix("access_token="))
        .unwrap_or("");
    if token != sim.current {
        record(40001, &mut sim);
        return (200, json!({"errcode": 40001, "errmsg": "invalid credential"}));
    }
    let sends = path.ends_with("/message/custom/send") || path.ends_with("/kf/send_msg");
    if sends && sim.failing_sends > 0 && sim.passing_first > 0 {
        sim.passing_first -= 1;
    } else if sends && sim.failing_sends > 0 {
        sim.failing_sends -= 1;
        record(500, &mut sim);
        return (500, json!({"errcode": -1}));
    }
    record(0, &mut sim);
    if path.ends_with("/kf/sync_msg") {
        let page = sim
            .pages
            .pop_front()
            .unwrap_or_else(|| json!({"next_cursor": "", "has_more": 0, "msg_list": []}));
        let mut page = page;
        page["errcode"] = json!(0);
        return (200, page);
    }
    if path.ends_with("/cgi-bin/media/get") {
        // A media the test did not put (or one past WeChat's three days).
        sim.calls.last_mut().unwrap().answered = 40007;
        return (200, json!({"errcode": 40007, "errmsg": "invalid media_id"}));
    }
    (200, json!({"errcode": 0, "errmsg": "ok"}))
}
