//! A redis-server of a test's own, on a free loopback port, for the tests that stop,
//! pause or restart Redis (or give it a password), which the shared one that
//! `tests/support/with-redis.sh` starts cannot be used for. Stopped on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A redis-server this test started (see the module docs).
pub struct OwnRedis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
    args: Vec<String>,
}

impl OwnRedis {
    /// A server that keeps nothing on disk.
    pub fn start() -> Self {
        Self::start_with(&["--appendonly", "no"])
    }

    /// A server with these extra arguments (`--appendonly yes` to keep data over a
    /// restart, `--requirepass PW`...).
    pub fn start_with(args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = spawn(port, dir.path(), &args);
        OwnRedis { port, dir, child, args }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends the server a signal (`STOP`, `CONT`, `TERM`...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Kills the server at once (it writes nothing).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server (SIGTERM: it writes its data) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.signal("TERM");
        self.child.wait().unwrap();
        self.start_again();
    }

    /// Starts the server again on the same port and directory, after [`OwnRedis::kill`].
    pub fn start_again(&mut self) {
        self.child = spawn(self.port, self.dir.path(), &self.args);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts redis-server and waits until it answers a command (`+PONG`, or `-NOAUTH` from a
/// server with a password): a port that accepts is not yet a server that answers.
fn spawn(port: u16, dir: &Path, args: &[String]) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server runs (make deps installs it)");
    let answers = super::http::eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            let mut first = [0u8; 1];
            s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut first).is_ok() && matches!(first[0], b'+' | b'-')
        })
    });
    assert!(answers, "redis-server on port {port} answers");
    child
}
