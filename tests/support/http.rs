//! HTTP test helpers: an in-process kefu server on a real loopback socket, a `kefu serve`
//! child process, and a raw HTTP/1.1 client that shows the bytes as they were framed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kefu::server::{ServeConfig, Service, State};

/// A kefu server in this process, on 127.0.0.1 and a free port; stopped when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state.
    pub state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with `config`.
    pub fn start(config: ServeConfig) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let service = Service::build(config).unwrap_or_else(|e| panic!("{e}"));
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready_tx
                    .send((listener.local_addr().unwrap(), Arc::clone(service.state())))
                    .unwrap();
                service
                    .serve(listener, async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let (addr, state) = ready_rx.recv_timeout(Duration::from_secs(30)).expect("server started");
        TestServer {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// A request to this server.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        request(self.addr, method, path, headers, body)
    }

    /// Begins the shutdown, as SIGTERM does in `kefu serve`: the drain (`limits.drain`),
    /// then the stop. Dropping the server waits for the end.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// POSTs JSON.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Reply {
        self.send("POST", path, &[("content-type", "application/json")], &body.to_string())
    }

    /// GETs.
    pub fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], "")
    }

    /// One chat turn; the parsed response.
    pub fn chat(&self, session: &str, message: &str) -> serde_json::Value {
        let reply = self.post(
            "/v1/chat",
            &serde_json::json!({ "session_id": session, "message": message }),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A `kefu serve` child process; killed when dropped.
pub struct ServeProcess {
    /// The child.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// The ticket journal's directory when the test did not name one (removed on drop).
    _state: Option<tempfile::TempDir>,
}

impl ServeProcess {
    /// Runs the kefu binary with `serve --addr 127.0.0.1:0` and `args`, and waits for its
    /// `listening on` line. Without a model flag in `args` it runs with `--model none`, so
    /// that tests never load the default model; without `--state-dir` it gets a fresh one,
    /// so that processes running side by side never share a ticket journal; without
    /// `--drain-seconds` it stops at once on SIGTERM (`--drain-seconds 0`).
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let names_a_model = args.iter().any(|a| ["--model", "--llm-url", "--mock-llm"].contains(a));
        let drains = args.contains(&"--drain-seconds");
        let state = (!args.contains(&"--state-dir")).then(|| tempfile::tempdir().expect("a temporary directory"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_kefu"))
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(if names_a_model {
                &[][..]
            } else {
                &["--model", "none"][..]
            })
            .args(if drains { &[][..] } else { &["--drain-seconds", "0"][..] })
            .args(args)
            .args(state.iter().flat_map(|d| [Path::new("--state-dir"), d.path()]))
            .envs(env.iter().copied())
            .env_remove("KEFU_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kefu starts");
        let stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            text
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        ServeProcess {
            child,
            addr,
            stderr: Some(stderr),
            _state: state,
        }
    }

    /// A request to this server.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        request(self.addr, method, path, headers, body)
    }

    /// One chat turn; the parsed response.
    pub fn chat(&self, session: &str, message: &str) -> serde_json::Value {
        let body = serde_json::json!({ "session_id": session, "message": message }).to_string();
        let reply = self.send("POST", "/v1/chat", &[("content-type", "application/json")], &body);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    /// Sends a signal (`TERM`, `HUP`) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit status and everything it logged.
    pub fn wait(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.stderr.take().unwrap().join().unwrap();
                return (status, log);
            }
            assert!(Instant::now() < deadline, "kefu did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as read off the socket.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: String,
}

impl Reply {
    /// The first header with this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `error.type` of an error body, after checking the error shape.
    pub fn error_type(&self) -> String {
        let json = self.json();
        let error = json.get("error").unwrap_or_else(|| panic!("no `error`: {}", self.body));
        assert!(
            error
                .get("message")
                .and_then(|m| m.as_str())
                .is_some_and(|m| !m.is_empty()),
            "no error.message: {}",
            self.body
        );
        error["type"].as_str().expect("error.type").to_string()
    }

    /// Server-sent events: (event name, data) pairs in order.
    pub fn events(&self) -> Vec<(Option<String>, String)> {
        let mut out = Vec::new();
        for block in self.body.split("\n\n").filter(|b| !b.is_empty()) {
            let mut name = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                } else {
                    panic!("unexpected line {line:?} in event stream {:?}", self.body);
                }
            }
            out.push((name, data.join("\n")));
        }
        out
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the whole
/// response.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.as_bytes());
    raw_request(addr, &raw)
}

/// Writes `raw` bytes and reads the response until the server closes.
pub fn raw_request(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.write_all(raw).unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    parse_response(&bytes)
}

/// Parses a response; de-chunks a chunked body.
pub fn parse_response(bytes: &[u8]) -> Reply {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v == "chunked") {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
    out
}

/// Copies a rules directory to a fresh temporary directory (for tests that edit rules).
pub fn copy_rules(from: &Path, name: &str) -> PathBuf {
    let to = std::env::temp_dir().join(format!("kefu-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&to);
    super::copy_dir(from, &to);
    to
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}
