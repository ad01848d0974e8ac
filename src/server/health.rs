//! Liveness and readiness: what `/livez` and `/readyz` answer, the drain that begins a
//! shutdown, and the answers given while the service is still starting.
//!
//! A balancer or an orchestrator asks three different questions, so there are three
//! routes, none of which needs a token (balancers call them) and all of which are cheap:
//!
//! - `/livez`: does the process answer at all? 200 while the runtime runs. A supervisor
//!   that gets no answer restarts the process.
//! - `/readyz`: should traffic come here? 503 with a JSON reason while the service starts
//!   (before its rules are loaded and its session store and ticket outbox are open),
//!   while the session store does not answer (with `--redis`), and from the moment a
//!   shutdown begins (`draining`), so that a balancer's health check moves traffic away
//!   while this node still answers everything it is sent.
//! - `/healthz` (in [`super::admin`]): what the service serves, for people and monitors
//!   (rules version, stale rules); 200 whenever it answers.
//!
//! Rules that fail to reload do not make a node unready: the previous rules keep serving
//! (`/healthz` says `rules_stale`). Once started, a node always has a rule set.
//!
//! The store check ([`StoreProbe`]) is a PING run at most once a second and never two at
//! a time, with a short deadline: however many balancers check, Redis sees about one PING
//! a second from each node, and a check never waits on a Redis that hangs.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::http::{Body, json_response};
use super::{ApiError, State};

/// How long a store check's result is reused.
pub const STORE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long `/readyz` waits for the store's answer before it calls the store unavailable.
pub const STORE_CHECK_DEADLINE: Duration = Duration::from_millis(500);

/// A check that the session store answers (a Redis PING); an error says why not.
/// Blocking: it runs on the blocking pool.
pub type Probe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Whether this node should get traffic, and the drain of its shutdown.
pub struct Health {
    draining: AtomicBool,
    /// Cuts the drain short (a second SIGTERM or Ctrl-C).
    cut: Notify,
    store: Option<StoreProbe>,
}

/// What `/readyz` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Send traffic here.
    Ready,
    /// Do not: `reason` is a stable tag (`draining`, `store_unavailable`), `detail` says
    /// more in words.
    NotReady {
        /// The tag.
        reason: &'static str,
        /// In words.
        detail: String,
    },
}

impl Health {
    /// Ready (not draining), with `store` checked by each readiness question when given.
    pub fn new(store: Option<Probe>) -> Self {
        Health {
            draining: AtomicBool::new(false),
            cut: Notify::new(),
            store: store.map(StoreProbe::new),
        }
    }

    /// Shutdown has begun: from now on `/readyz` answers 503 `draining` and every response
    /// says `Connection: close`. Called by [`super::Service::serve`] when its shutdown
    /// future completes.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Ends the drain now (the service stops accepting and finishes what is in flight);
    /// called before the drain begins, it makes the drain end as soon as it begins.
    pub fn cut_drain(&self) {
        // One stored permit: a cut that comes before the drain waits is not lost.
        self.cut.notify_one();
    }

    /// Resolves when [`cut_drain`](Self::cut_drain) is called.
    pub(super) async fn drain_cut(&self) {
        self.cut.notified().await;
    }

    /// Whether traffic should come here now; checks the store (at most once a second).
    pub async fn readiness(&self) -> Readiness {
        if self.draining() {
            return Readiness::NotReady {
                reason: "draining",
                detail: "shutting down: finishing requests, taking no new traffic".into(),
            };
        }
        // Why the store failed goes to the log (`record`), not to whoever asks: the
        // error may name the store's address.
        if let Some(store) = &self.store
            && store.check().await.is_err()
        {
            return Readiness::NotReady {
                reason: "store_unavailable",
                detail: format!(
                    "the session store did not answer a PING within {} ms",
                    STORE_CHECK_DEADLINE.as_millis()
                ),
            };
        }
        Readiness::Ready
    }
}

/// A [`Probe`] run at most once per [`STORE_CHECK_EVERY`] and one at a time, its result
/// shared by every check in between.
struct StoreProbe {
    probe: Probe,
    /// When the store was last checked, and what came of it (or of waiting for it).
    last: Arc<Mutex<(Instant, Result<(), String>)>>,
    /// A probe is running on the blocking pool (it may outlive a check that gave up on
    /// it; the next one does not start before it ends, so probes never pile up).
    running: Arc<AtomicBool>,
}

impl StoreProbe {
    fn new(probe: Probe) -> Self {
        // The store was checked as it was opened; the first question asks it again.
        let stale = Instant::now()
            .checked_sub(STORE_CHECK_EVERY)
            .unwrap_or_else(Instant::now);
        StoreProbe {
            probe,
            last: Arc::new(Mutex::new((stale, Ok(())))),
            running: Arc::default(),
        }
    }

    fn last(&self) -> (Instant, Result<(), String>) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn check(&self) -> Result<(), String> {
        let (at, result) = self.last();
        if at.elapsed() < STORE_CHECK_EVERY || self.running.swap(true, Ordering::AcqRel) {
            return result;
        }
        let (probe, last, running) = (
            Arc::clone(&self.probe),
            Arc::clone(&self.last),
            Arc::clone(&self.running),
        );
        let task = tokio::task::spawn_blocking(move || {
            let result = probe();
            record(&last, result.clone());
            running.store(false, Ordering::Release);
            result
        });
        let failed = |why: String| {
            record(&self.last, Err(why.clone()));
            Err(why)
        };
        match tokio::time::timeout(STORE_CHECK_DEADLINE, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => {
                self.running.store(false, Ordering::Release);
                failed("the check panicked".into())
            }
            Err(_) => failed(format!("no answer within {} ms", STORE_CHECK_DEADLINE.as_millis())),
        }
    }
}

/// Keeps a store check's result, and logs when the store stops or starts answering.
fn record(last: &Mutex<(Instant, Result<(), String>)>, result: Result<(), String>) {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    match (&last.1, &result) {
        (Ok(()), Err(error)) => tracing::warn!(%error, "not ready: the session store does not answer"),
        (Err(_), Ok(())) => tracing::info!("ready: the session store answers again"),
        _ => {}
    }
    *last = (Instant::now(), result);
}

/// `GET /livez`: 200 while the process runs and its runtime answers.
pub(super) fn livez() -> Response<Body> {
    json_response(StatusCode::OK, &json!({ "status": "live" }))
}

/// `GET /readyz`: 200 `ready`, or 503 with the reason (see the module header).
pub(super) async fn readyz(state: &Arc<State>) -> Response<Body> {
    match state.health.readiness().await {
        Readiness::Ready => json_response(
            StatusCode::OK,
            &json!({ "status": "ready", "rules_version": state.engine.rules().version }),
        ),
        Readiness::NotReady { reason, detail } => not_ready(reason, &detail),
    }
}

fn not_ready(reason: &str, detail: &str) -> Response<Body> {
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({ "status": "not_ready", "reason": reason, "detail": detail }),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The answer to any request while the service starts: `/livez` 200, `/readyz` 503
/// `starting`, anything else 503 `starting` with `Retry-After`.
fn while_starting(path: &str) -> Response<Body> {
    match path.trim_end_matches('/') {
        "/livez" => livez(),
        "/readyz" => not_ready(
            "starting",
            "loading the rules and opening the session store and ticket outbox",
        ),
        _ => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "kefu is starting; try again in a moment",
        )
        .with_retry_after(1)
        .into_response(),
    }
}

/// Answers connections on `listener` with [`while_starting`] until `until` completes, and
/// returns its output. Each connection serves one request (`Connection: close`) and has
/// 5 s for it, so nothing accepted while starting outlives the start for long.
pub(super) async fn answer_while_starting<T>(listener: &TcpListener, until: impl Future<Output = T>) -> T {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(false);
    tokio::pin!(until);
    loop {
        tokio::select! {
            biased;
            done = &mut until => return done,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(while_starting(req.uri().path()))
                });
                let connection = http.serve_connection(TokioIo::new(stream), service);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn draining_is_not_ready_and_a_cut_before_the_drain_is_kept() {
        runtime().block_on(async {
            let health = Health::new(None);
            assert_eq!(health.readiness().await, Readiness::Ready);
            health.cut_drain();
            health.begin_drain();
            assert!(matches!(
                health.readiness().await,
                Readiness::NotReady { reason: "draining", .. }
            ));
            // The stored permit: resolves at once.
            health.drain_cut().await;
        });
    }

    #[test]
    fn the_store_is_asked_at_most_once_a_second_and_its_failure_is_the_reason() {
        runtime().block_on(async {
            let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let up = Arc::new(AtomicBool::new(true));
            let (c, u) = (Arc::clone(&calls), Arc::clone(&up));
            let health = Health::new(Some(Arc::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
                if u.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("connection refused".into())
                }
            })));
            for _ in 0..50 {
                assert_eq!(health.readiness().await, Readiness::Ready);
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1, "one probe for many checks");
            // The store goes away: the next probe (once the result is old) says so.
            up.store(false, Ordering::SeqCst);
            let store = health.store.as_ref().unwrap();
            store.last.lock().unwrap().0 = Instant::now() - STORE_CHECK_EVERY;
            match health.readiness().await {
                Readiness::NotReady { reason, detail } => {
                    assert_eq!(reason, "store_unavailable");
                    assert!(
                        !detail.contains("connection refused"),
                        "the error is logged, not told: {detail}"
                    );
                }
                ready => panic!("{ready:?}"),
            }
            assert_eq!(
                store.last().1,
                Err("connection refused".to_string()),
                "kept for the log"
            );
            assert_eq!(calls.load(Ordering::SeqCst), 2);
        });
    }

    #[test]
    fn a_store_that_hangs_is_unavailable_after_the_deadline_and_not_asked_again_meanwhile() {
        runtime().block_on(async {
            let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
            let release_rx = Mutex::new(release_rx);
            let c = Arc::clone(&calls);
            let health = Health::new(Some(Arc::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
                let _ = release_rx.lock().unwrap().recv();
                Ok(())
            })));
            assert!(matches!(
                health.readiness().await,
                Readiness::NotReady {
                    reason: "store_unavailable",
                    ..
                }
            ));
            // Still hanging: a later check, even with the result made old, starts no
            // second probe and repeats the failure.
            health.store.as_ref().unwrap().last.lock().unwrap().0 = Instant::now() - STORE_CHECK_EVERY;
            assert!(matches!(health.readiness().await, Readiness::NotReady { .. }));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            release_tx.send(()).unwrap();
        });
    }
}
