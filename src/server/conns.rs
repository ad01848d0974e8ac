//! Client connections: how many are open, from whom, and which to let go when there are
//! too many.
//!
//! Every open socket costs a file descriptor, and a process that runs out of them cannot
//! accept anyone, `/healthz` included: 1,100 idle keep-alive sockets from one client
//! under the common limit of 1,024 kept every other client out for seconds. So:
//!
//! - at start the soft file-descriptor limit is raised to the hard one ([`raise_fd_limit`]),
//!   and the connection cap is set below it, leaving room for rule files, Redis, the
//!   model and the log;
//! - connections are capped in all and per client (an IPv4 address, or an IPv6 /64,
//!   which one host can fill with addresses);
//! - when a new connection would go over a cap, the oldest *idle* connection (no request
//!   running, no event stream open) in that scope is closed to make room; when every
//!   connection in the scope is busy, the new one is turned away. A client that hoards
//!   idle sockets loses its own, never someone else's request in progress;
//! - connections idle for longer than the idle timeout are closed;
//! - a request whose headers are not all in within the header timeout of its first byte
//!   has its connection closed (slow-header, "slowloris", protection).
//!
//! The last two are separate clocks on purpose. hyper's own `header_read_timeout` starts
//! as soon as a connection waits for its next request, so it also bounds the idle time
//! between requests: with it at 10 s, a proxy pool keeping connections for 60 s lost
//! requests on sockets kefu had dropped. Instead the socket is wrapped ([`Watched`]): the
//! first bytes read while no request is in the service start the header clock, the
//! request entering the service ([`Conn::busy`]) stops it, and [`Registry::sweep`] closes
//! the connections whose clock ran out, along with the idle ones.
//!
//! A connection is closed through hyper's graceful shutdown: one with a request in flight
//! finishes it first. One whose headers are overdue is dropped outright: it has no
//! request in the service to finish, and hyper would wait for the rest of the head.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// File descriptors kept back from the connection cap, for everything else the process
/// opens (rule files at reload, Redis, the model, the logs, the blocking pool's work).
const FD_RESERVE: u64 = 128;

/// Raises the soft limit on open files to the hard limit, and returns the soft limit now
/// in force (`None` when it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-files limit");
            fd_soft_limit()
        }
    }
}

/// The soft limit on open files now in force.
pub fn fd_soft_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
}

/// The connection cap that fits under `fd_limit` (open files allowed), at most `wanted`.
pub fn cap_for_fd_limit(wanted: usize, fd_limit: Option<u64>) -> usize {
    match fd_limit {
        Some(limit) => {
            let room = limit.saturating_sub(FD_RESERVE).max(16);
            wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => wanted,
    }
}

/// The limits on connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Connections open at once, from everyone.
    pub max: usize,
    /// Connections open at once from one client (IPv4 address or IPv6 /64); 0: no limit.
    pub per_client: usize,
    /// An idle connection (no request for this long) is closed.
    pub idle_timeout: Duration,
    /// A request's headers must all arrive within this long of its first byte, or the
    /// connection is closed.
    pub header_timeout: Duration,
}

impl ConnLimits {
    /// How often [`Registry::sweep`] should run: a quarter of the shorter timeout, so a
    /// connection is closed at most a quarter late, between 50 ms and 5 s.
    pub fn sweep_every(&self) -> Duration {
        (self.idle_timeout.min(self.header_timeout) / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
    }
}

impl Default for ConnLimits {
    /// 10,000 in all, 256 per client, 75 s idle, 10 s for a request's headers.
    fn default() -> Self {
        ConnLimits {
            max: 10_000,
            per_client: 256,
            idle_timeout: Duration::from_secs(75),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Who a connection counts against: the address, or an IPv6 address's /64.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Client(IpAddr);

impl Client {
    /// The client a peer address belongs to.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Client(IpAddr::V6(prefix.into()))
                }
            },
            v4 => Client(v4),
        }
    }
}

/// What the registry and a connection's task both see of a connection.
#[derive(Debug)]
struct Shared {
    id: u64,
    client: Client,
    /// Requests running and event streams open on it.
    busy: AtomicUsize,
    /// Milliseconds after `epoch` when it was last busy.
    last_active_ms: AtomicU64,
    /// Milliseconds after `epoch` when the first bytes of a request not yet in the service
    /// arrived; [`NOT_RECEIVING`] when none are waiting.
    receiving_since_ms: AtomicU64,
    /// Set by the sweep when that request's headers are overdue.
    overdue: AtomicBool,
    epoch: Instant,
    /// Asks the connection's task to close it (gracefully, or at once when `overdue`).
    close: Notify,
}

/// `receiving_since_ms` when no request is arriving.
const NOT_RECEIVING: u64 = u64::MAX;

impl Shared {
    fn touch(&self) {
        self.last_active_ms.store(ms_since(self.epoch), Ordering::Relaxed);
    }

    fn idle_since_ms(&self) -> Option<u64> {
        (self.busy.load(Ordering::Acquire) == 0).then(|| self.last_active_ms.load(Ordering::Relaxed))
    }

    /// Bytes were read from the socket: with no request in the service they are a new
    /// request's, and start its header clock (unless it already runs).
    ///
    /// Body bytes of a request in the service do not count (it is busy), nor do the
    /// later reads of a head already started (the clock is not moved).
    fn bytes_arrived(&self) {
        if self.busy.load(Ordering::Acquire) == 0 && self.receiving_since_ms.load(Ordering::Relaxed) == NOT_RECEIVING {
            self.receiving_since_ms.store(ms_since(self.epoch), Ordering::Relaxed);
        }
    }

    /// Since when a request has been arriving without reaching the service.
    fn receiving_since(&self) -> Option<u64> {
        if self.busy.load(Ordering::Acquire) != 0 {
            return None;
        }
        let since = self.receiving_since_ms.load(Ordering::Relaxed);
        (since != NOT_RECEIVING).then_some(since)
    }
}

/// One open connection, held by its task (and its request handlers); leaves the registry
/// when dropped.
#[derive(Debug)]
pub struct Conn {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
}

impl Conn {
    /// Marks the connection busy until the guard is dropped (a request, or an event
    /// stream that outlives its request's handler).
    ///
    /// A request entering the service stops its header clock.
    pub fn busy(&self) -> Busy {
        self.shared.busy.fetch_add(1, Ordering::AcqRel);
        self.shared.receiving_since_ms.store(NOT_RECEIVING, Ordering::Relaxed);
        self.shared.touch();
        Busy(Arc::clone(&self.shared))
    }

    /// Wraps the connection's socket so that a request's first bytes start its header
    /// clock.
    pub fn watch<T>(&self, io: T) -> Watched<T> {
        Watched {
            io,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Resolves when the registry asks this connection to close.
    pub async fn closing(&self) {
        self.shared.close.notified().await;
    }

    /// Whether the registry found this connection's request headers overdue and they
    /// still are: the connection is to be dropped, not closed gracefully.
    ///
    /// Checked again here because the head may have completed between the sweep and
    /// this call; then the connection closes gracefully after its response instead.
    pub fn headers_overdue(&self) -> bool {
        self.shared.overdue.load(Ordering::Acquire) && self.shared.receiving_since().is_some()
    }
}

/// A connection's socket that tells its registry entry when a request starts to arrive
/// (see [`Conn::watch`]); reads and writes are passed through unchanged.
#[derive(Debug)]
pub struct Watched<T> {
    io: T,
    shared: Arc<Shared>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.shared.bytes_arrived();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.registry.remove(self.shared.id, self.shared.client);
    }
}

/// Keeps a connection busy while held (see [`Conn::busy`]).
#[derive(Debug)]
pub struct Busy(Arc<Shared>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Why a new connection was let in or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Room for it.
    Open,
    /// Room made by closing an idle connection: of the same client (`client`) or the
    /// oldest of all (`idle`).
    Shed(&'static str),
    /// Every connection in its scope is busy: turned away (`client` or `full`).
    Refused(&'static str),
}

/// What a [`Registry::sweep`] asked to close.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Connections idle past the idle timeout (asked again on every sweep until gone).
    pub idle: usize,
    /// Connections newly found with request headers overdue.
    pub slow_headers: usize,
}

/// Every open connection.
#[derive(Debug)]
pub struct Registry {
    limits: ConnLimits,
    started: Instant,
    next_id: AtomicU64,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    conns: HashMap<u64, Arc<Shared>>,
    per_client: HashMap<Client, usize>,
}

impl Registry {
    /// An empty registry under `limits`.
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Registry {
            limits,
            started: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(Open::default()),
        })
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lets a new connection from `ip` in, closing an idle one to make room when a cap is
    /// reached; `None` (with the reason) when it must be turned away.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> (Option<Arc<Conn>>, Admission) {
        let client = Client::of(ip);
        let mut open = self.lock();
        let mut admission = Admission::Open;
        let per_client = self.limits.per_client;
        if per_client > 0 && open.per_client.get(&client).copied().unwrap_or(0) >= per_client {
            match oldest_idle(&open, Some(client)) {
                Some(victim) => {
                    victim.close.notify_one();
                    admission = Admission::Shed("client");
                }
                None => return (None, Admission::Refused("client")),
            }
        }
        if admission == Admission::Open && open.conns.len() >= self.limits.max {
            match oldest_idle(&open, None) {
                Some(victim) => {
                    victim.close.notify_one();
                    admission = Admission::Shed("idle");
                }
                None => return (None, Admission::Refused("full")),
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            id,
            client,
            busy: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(ms_since(self.started)),
            receiving_since_ms: AtomicU64::new(NOT_RECEIVING),
            overdue: AtomicBool::new(false),
            epoch: self.started,
            close: Notify::new(),
        });
        open.conns.insert(id, Arc::clone(&shared));
        *open.per_client.entry(client).or_default() += 1;
        let conn = Arc::new(Conn {
            shared,
            registry: Arc::clone(self),
        });
        (Some(conn), admission)
    }

    /// Asks every connection idle for longer than the idle timeout to close, and every
    /// one whose request headers took longer than the header timeout to be dropped.
    ///
    /// A connection receiving a request is not idle: the idle clock would otherwise close
    /// it under a request that has begun to arrive.
    pub fn sweep(&self) -> Swept {
        let now = ms_since(self.started);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (idle_timeout, header_timeout) = (ms(self.limits.idle_timeout), ms(self.limits.header_timeout));
        let open = self.lock();
        let mut swept = Swept::default();
        for conn in open.conns.values() {
            if let Some(since) = conn.receiving_since() {
                if now.saturating_sub(since) >= header_timeout {
                    // Counted once; a later sweep before the task drops it only wakes it.
                    if !conn.overdue.swap(true, Ordering::AcqRel) {
                        swept.slow_headers += 1;
                    }
                    conn.close.notify_one();
                }
            } else if conn
                .idle_since_ms()
                .is_some_and(|since| now.saturating_sub(since) >= idle_timeout)
            {
                conn.close.notify_one();
                swept.idle += 1;
            }
        }
        swept
    }

    /// Asks every connection to close (shutdown): idle ones close at once, busy ones
    /// after their request.
    pub fn close_all(&self) {
        for conn in self.lock().conns.values() {
            conn.close.notify_one();
        }
    }

    fn remove(&self, id: u64, client: Client) {
        let mut open = self.lock();
        if open.conns.remove(&id).is_some()
            && let Some(n) = open.per_client.get_mut(&client)
        {
            *n -= 1;
            if *n == 0 {
                open.per_client.remove(&client);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The connection idle longest, among a client's or everyone's.
///
/// A scan of the open connections: it runs only when a cap is reached, which a healthy
/// service never sees, and then costs microseconds per thousand connections.
fn oldest_idle(open: &Open, client: Option<Client>) -> Option<&Shared> {
    open.conns
        .values()
        .filter(|c| client.is_none_or(|client| c.client == client))
        .filter_map(|c| c.idle_since_ms().map(|since| (since, c)))
        .min_by_key(|(since, c)| (*since, c.id))
        .map(|(_, c)| c.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn limits(max: usize, per_client: usize) -> ConnLimits {
        ConnLimits {
            max,
            per_client,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_client_hoarding_idle_sockets_loses_its_own_oldest() {
        let registry = Registry::new(limits(100, 2));
        let (first, _) = registry.admit(ip("10.0.0.1"));
        let (second, _) = registry.admit(ip("10.0.0.1"));
        let (other, _) = registry.admit(ip("10.0.0.2"));
        let (third, admission) = registry.admit(ip("10.0.0.1"));
        assert_eq!(admission, Admission::Shed("client"));
        assert!(third.is_some());
        // The first connection was asked to close: its notification is stored.
        let first = first.unwrap();
        assert!(
            futures_ready(first.closing()),
            "the client's oldest idle connection is closed"
        );
        assert!(!futures_ready(second.unwrap().closing()));
        assert!(!futures_ready(other.unwrap().closing()), "another client is left alone");
    }

    #[test]
    fn busy_connections_are_never_shed_and_the_newcomer_is_refused() {
        let registry = Registry::new(limits(2, 0));
        let (a, _) = registry.admit(ip("10.0.0.1"));
        let (b, _) = registry.admit(ip("10.0.0.2"));
        let _busy_a = a.as_ref().unwrap().busy();
        let _busy_b = b.as_ref().unwrap().busy();
        let (c, admission) = registry.admit(ip("10.0.0.3"));
        assert!(c.is_none());
        assert_eq!(admission, Admission::Refused("full"));
        drop(_busy_b);
        let (c, admission) = registry.admit(ip("10.0.0.3"));
        assert!(c.is_some());
        assert_eq!(admission, Admission::Shed("idle"));
        assert!(futures_ready(b.unwrap().closing()));
        assert!(!futures_ready(a.unwrap().closing()));
    }

    #[test]
    fn closed_connections_leave_the_counts() {
        let registry = Registry::new(limits(10, 1));
        let (a, _) = registry.admit(ip("::1"));
        assert_eq!(registry.len(), 1);
        drop(a);
        assert!(registry.is_empty());
        let (b, admission) = registry.admit(ip("::1"));
        assert!(b.is_some());
        assert_eq!(admission, Admission::Open);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(Client::of(ip("2001:db8::1")), Client::of(ip("2001:db8::ffff:1")));
        assert_ne!(Client::of(ip("2001:db8::1")), Client::of(ip("2001:db8:0:1::1")));
        assert_eq!(Client::of(ip("::ffff:10.0.0.1")), Client::of(ip("10.0.0.1")));
    }

    #[test]
    fn idle_connections_past_the_timeout_are_closed() {
        let registry = Registry::new(ConnLimits {
            idle_timeout: Duration::ZERO,
            ..limits(10, 0)
        });
        let (idle, _) = registry.admit(ip("10.0.0.1"));
        let (busy, _) = registry.admit(ip("10.0.0.2"));
        let _guard = busy.as_ref().unwrap().busy();
        assert_eq!(
            registry.sweep(),
            Swept {
                idle: 1,
                slow_headers: 0
            }
        );
        assert!(futures_ready(idle.unwrap().closing()));
    }

    #[test]
    fn a_request_whose_headers_are_overdue_is_dropped_and_an_idle_one_is_not() {
        let registry = Registry::new(ConnLimits {
            header_timeout: Duration::ZERO,
            ..limits(10, 0)
        });
        let (idle, _) = registry.admit(ip("10.0.0.1"));
        let (arriving, _) = registry.admit(ip("10.0.0.2"));
        let (served, _) = registry.admit(ip("10.0.0.3"));
        let (idle, arriving, served) = (idle.unwrap(), arriving.unwrap(), served.unwrap());
        arriving.shared.bytes_arrived();
        served.shared.bytes_arrived();
        // The head is complete: the request enters the service, which stops its clock.
        let guard = served.busy();
        assert_eq!(
            registry.sweep(),
            Swept {
                idle: 0,
                slow_headers: 1
            }
        );
        assert!(futures_ready(arriving.closing()));
        assert!(arriving.headers_overdue());
        assert!(!futures_ready(idle.closing()), "idle, within the idle timeout");
        assert!(!futures_ready(served.closing()));
        // Counted once, however many sweeps see it before it is gone.
        assert_eq!(registry.sweep(), Swept::default());
        // Body bytes of a request in the service do not start the clock.
        served.shared.bytes_arrived();
        assert_eq!(served.shared.receiving_since(), None);
        drop(guard);
        assert_eq!(
            served.shared.receiving_since(),
            None,
            "the clock starts only with new bytes"
        );
    }

    #[test]
    fn the_header_clock_starts_at_the_first_byte_not_the_last() {
        let registry = Registry::new(limits(10, 0));
        let (conn, _) = registry.admit(ip("10.0.0.1"));
        let conn = conn.unwrap();
        conn.shared.bytes_arrived();
        let first = conn.shared.receiving_since().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        conn.shared.bytes_arrived();
        assert_eq!(conn.shared.receiving_since(), Some(first));
        // Arriving, but not for the header timeout yet: neither dropped nor idle.
        assert_eq!(registry.sweep(), Swept::default());
        assert!(!conn.headers_overdue());
    }

    #[test]
    fn the_sweep_runs_often_enough_for_the_shorter_timeout() {
        assert_eq!(ConnLimits::default().sweep_every(), Duration::from_millis(2500));
        let short = ConnLimits {
            header_timeout: Duration::from_secs(1),
            ..ConnLimits::default()
        };
        assert_eq!(short.sweep_every(), Duration::from_millis(250));
        let zero = ConnLimits {
            idle_timeout: Duration::ZERO,
            ..ConnLimits::default()
        };
        assert_eq!(zero.sweep_every(), Duration::from_millis(50));
    }

    #[test]
    fn the_cap_stays_under_the_fd_limit() {
        assert_eq!(cap_for_fd_limit(10_000, Some(1024)), 1024 - FD_RESERVE as usize);
        assert_eq!(cap_for_fd_limit(10_000, Some(1 << 20)), 10_000);
        assert_eq!(cap_for_fd_limit(10_000, None), 10_000);
        assert_eq!(cap_for_fd_limit(10_000, Some(10)), 16);
    }

    /// Whether a future is ready on its first poll.
    fn futures_ready(future: impl std::future::Future<Output = ()>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(future);
        future.as_mut().poll(&mut cx).is_ready()
    }
}
