//! Running the service: [`run`] (the runtime, the listener, the start, signals) and
//! [`Service::serve`] (the accept loop, one task per connection, the drain, graceful
//! shutdown).
//!
//! A shutdown goes in phases, each logged: the first SIGTERM (or Ctrl-C) begins the
//! drain, in which `/readyz` answers 503 and every response says `Connection: close`
//! while requests are still accepted and answered, for `--drain-seconds` (a second
//! signal cuts it short); then the listener closes, idle connections close, requests in
//! flight finish within the grace period, ticket deliveries in flight get what is left
//! of it, and the process exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{ServeConfig, ServeError, Service, conns, health, limits, logs, routes};
use crate::reload::Trigger;

impl Service {
    /// Serves connections from `listener` until `shutdown` completes; then drains (still
    /// serving, not ready, for `limits.drain` or until [`Health::cut_drain`]), stops
    /// accepting and lets in-flight requests finish for at most the grace period.
    ///
    /// [`Health::cut_drain`]: super::health::Health::cut_drain
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let state = Arc::clone(&self.state);
        let drain = state.limits.drain;
        let stop = async {
            shutdown.await;
            state.health.begin_drain();
            if drain.is_zero() {
                return;
            }
            tracing::info!(
                drain_s = drain.as_secs_f64(),
                "draining: /readyz answers 503 and responses say Connection: close; still serving"
            );
            tokio::select! {
                () = tokio::time::sleep(drain) => tracing::info!("drain over"),
                () = state.health.drain_cut() => tracing::info!("drain cut short"),
            }
        };
        let cleaner = limits::forget_idle_sessions(&state);
        let limits = state.limits.connections;
        let registry = conns::Registry::new(conns::ConnLimits {
            max: conns::cap_for_fd_limit(limits.max, conns::fd_soft_limit()),
            ..limits
        });
        // Closes idle connections and those whose request headers are overdue; it runs
        // through shutdown too, so a half-sent request cannot hold the drain.
        let reaper = {
            let registry = Arc::clone(&registry);
            let metrics = Arc::clone(&state.metrics);
            let every = limits.sweep_every();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    for _ in 0..registry.sweep().slow_headers {
                        metrics.connection_shed("slow_headers");
                    }
                }
            })
        };
        // No `header_read_timeout`: hyper starts it when a connection waits for its next
        // request, so it would also cut idle keep-alive connections; the registry keeps
        // that limit from a request's first byte instead (see `conns`).
        let mut http = hyper::server::conn::http1::Builder::new();
        http.header_read_timeout(None).keep_alive(true);
        tokio::pin!(stop);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        // Out of file descriptors, say: wait a little rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            let (conn, admission) = registry.admit(peer.ip());
            match admission {
                conns::Admission::Open => {}
                conns::Admission::Shed(kind) => state.metrics.connection_shed(kind),
                conns::Admission::Refused(kind) => {
                    state.metrics.connection_shed(kind);
                    tracing::debug!(peer = %peer, kind, "connection refused: every connection is busy");
                }
            }
            // Turned away: the socket closes when it is dropped here.
            let Some(conn) = conn else { continue };
            let _ = stream.set_nodelay(true);
            let service = {
                let (state, conn) = (Arc::clone(&state), Arc::clone(&conn));
                hyper::service::service_fn(move |req| routes::handle(Arc::clone(&state), req, peer, conn.busy()))
            };
            let connection = http.serve_connection(TokioIo::new(conn.watch(stream)), service);
            let metrics = Arc::clone(&state.metrics);
            metrics.connections().inc();
            tokio::spawn(async move {
                let mut connection = std::pin::pin!(connection);
                let mut closing = false;
                loop {
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(error) = result {
                                tracing::debug!(%error, "connection ended with an error");
                            }
                            break;
                        }
                        // Request headers overdue: dropped outright (hyper would wait
                        // for the rest of the head). Idle too long, shed to make room, or
                        // shutting down: an idle connection closes now, a busy one after
                        // its response. Still listened to once closing, as a shed
                        // connection's headers may come to be overdue.
                        () = conn.closing() => {
                            if conn.headers_overdue() {
                                tracing::debug!(peer = %peer, "connection closed: request headers not in within the header timeout");
                                break;
                            }
                            if !closing {
                                connection.as_mut().graceful_shutdown();
                                closing = true;
                            }
                        }
                    }
                }
                metrics.connections().dec();
            });
        }
        drop(listener);
        let stopping = Instant::now();
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        registry.close_all();
        let grace = self.state.limits.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while !registry.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        if drained.await.is_err() {
            tracing::warn!(
                grace_s = grace.as_secs(),
                connections = registry.len(),
                "requests still in flight after the grace period"
            );
        }
        reaper.abort();
        if let Some(cleaner) = cleaner {
            cleaner.abort();
        }
        if let Some(deliveries) = self.deliveries {
            deliveries.shutdown(grace.saturating_sub(stopping.elapsed())).await;
        }
    }
}

/// Runs `kefu serve`: binds `addr` (answering `/livez`, and `/readyz` with 503
/// `starting`, while the service is built), prints `listening on ADDR` once it is ready,
/// serves until SIGTERM (after the drain; a second signal cuts it short) or Ctrl-C (no drain), reloads the rules
/// and opens the conversation log's file again on SIGHUP. Tells systemd (`Type=notify`)
/// when it is ready and when it stops.
pub fn run(config: ServeConfig, addr: SocketAddr, workers: usize) -> Result<(), ServeError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| ServeError::Io { what, source }
    };
    logs::log_panics();
    if let Some(limit) = conns::raise_fd_limit() {
        tracing::debug!(open_files = limit, "open-files limit");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .max_blocking_threads(config.limits.max_in_flight + 64)
        .thread_name("kefu-worker")
        .enable_all()
        .build()
        .map_err(io("cannot start the runtime"))?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(io(&format!("cannot listen on {addr}")))?;
        let local = listener.local_addr().map_err(io("cannot read the bound address"))?;
        tracing::info!(addr = %local, "starting: /readyz answers 503 until the rules are loaded and the store is open");
        use tokio::signal::unix::{SignalKind, signal};
        // SIGHUP is caught from now on: its default would end a process still starting
        // (a reload then comes once it serves). SIGTERM keeps its default until then:
        // a node that never served has nothing to drain.
        let mut hangup = signal(SignalKind::hangup()).map_err(io("cannot listen for SIGHUP"))?;
        // Built on the blocking pool (training, file reads, Redis) while the listener
        // answers health checks: a balancer or an orchestrator sees `starting`.
        let building = tokio::task::spawn_blocking(move || Service::build(config));
        let service = match health::answer_while_starting(&listener, building).await {
            Ok(built) => built?,
            Err(panicked) => std::panic::resume_unwind(panicked.into_panic()),
        };
        let state = Arc::clone(service.state());
        let rules = state.reloader.status();
        tracing::info!(addr = %local, rules = %rules.dir.display(), version = %rules.version, "serving");
        // Scripts and tests read the port from this line (with --addr 127.0.0.1:0).
        println!("listening on {local}");
        notify_systemd(sd_notify::NotifyState::Ready);

        let mut terminate = signal(SignalKind::terminate()).map_err(io("cannot listen for SIGTERM"))?;
        let reloading = Arc::clone(&state);
        let log = service.conversation_log().cloned();
        let reloads = tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                // logrotate's postrotate sends SIGHUP: the log's file is opened again.
                if let Some(log) = &log {
                    log.reopen();
                }
                let reloader = Arc::clone(&reloading.reloader);
                let _ = tokio::task::spawn_blocking(move || reloader.reload(Trigger::Signal)).await;
            }
        });
        // The first SIGTERM or Ctrl-C stops the service (after the drain); the second cuts
        // the drain short.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let drain_s = state.limits.drain.as_secs_f64();
        let signals = tokio::spawn(async move {
            let first = next_stop_signal(&mut terminate).await;
            tracing::info!(signal = first, drain_s, "stopping");
            notify_systemd(sd_notify::NotifyState::Stopping);
            let _ = stop.send(());
            if first == "SIGINT" {
                // Ctrl-C is a person at a terminal (`make run`), not a balancer's node:
                // no drain to wait for.
                state.health.cut_drain();
            }
            let second = next_stop_signal(&mut terminate).await;
            tracing::info!(signal = second, "second signal: cutting the drain short");
            state.health.cut_drain();
        });
        service
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
        signals.abort();
        reloads.abort();
        tracing::info!("stopped");
        Ok(())
    })
}

/// The next SIGTERM or Ctrl-C (SIGINT), by name.
async fn next_stop_signal(terminate: &mut tokio::signal::unix::Signal) -> &'static str {
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// Tells systemd (a `Type=notify` unit) what the service is doing; nothing without
/// `$NOTIFY_SOCKET`.
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(error) = sd_notify::notify(&[state]) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}
