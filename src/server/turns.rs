//! Where and how a turn runs. (What is recorded about it, the engine reports to the
//! service's [`Recorder`](super::recorder::Recorder).)
//!
//! **How turns run.** The engine is synchronous; a rule-answered turn takes microseconds,
//! so it runs directly on the runtime worker that read the request: a hop to another
//! thread would cost more than the turn. What may block runs elsewhere: a model call goes
//! through [`model::Metered`], which uses `block_in_place` so the worker's other
//! connections move to another thread while it waits; streaming turns run on the blocking
//! pool from the start (their deltas flow to the response body while the turn runs); and
//! when the session store is Redis or the rules have an `http` source, every turn runs on
//! the blocking pool, because then any turn may wait on the network.
//!
//! **When the session store fails.** A turn whose session could not be read or saved
//! (Redis down, after the store's retries) answers 503 `store_unavailable` with
//! `Retry-After` and the customer's text in `error.reply` ([`ApiError::store_unavailable`]);
//! a streamed one ends with that error as its last event.

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tokio::sync::OwnedSemaphorePermit;

use super::metrics::Metrics;
use super::{ApiError, State};
use crate::{TurnRequest, TurnResponse};

/// The longest a turn's scripts may hold a runtime worker before the rules they ran on
/// are judged slow and their turns move to the blocking pool (a model call leaves the
/// worker on its own, so only script time counts). A rule-answered turn's scripts take
/// microseconds; only scripts that loop or call costly functions come near this.
pub(super) const INLINE_TURN_BUDGET: Duration = Duration::from_millis(5);

impl State {
    /// A permit for one turn, counted in flight until it is dropped, or 503 when too many
    /// are in flight.
    pub(super) fn turn_permit(&self) -> Result<InFlight, ApiError> {
        let permit = Arc::clone(&self.turns).try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many conversations in flight; try again shortly",
            )
            .with_retry_after(1)
        })?;
        self.metrics.in_flight().inc();
        Ok(InFlight {
            metrics: Arc::clone(&self.metrics),
            _permit: permit,
        })
    }

    /// Whether any turn may wait on the network or run long now (see the module docs).
    fn turns_may_block(&self) -> bool {
        self.remote_sessions
            || self.reloader.has_http_sources()
            || self.slow_rules.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes how long a turn's scripts held a runtime worker; past
    /// [`INLINE_TURN_BUDGET`], the serving rules' turns move to the blocking pool until the
    /// next reload.
    fn judge_inline_turn(&self, took: Duration) {
        if took > INLINE_TURN_BUDGET && !self.slow_rules.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.metrics.slow_rules();
            tracing::warn!(
                ms = took.as_secs_f64() * 1000.0,
                rules = %self.engine.rules().version,
                "a turn's scripts held a runtime worker too long; turns on these rules run on the blocking pool until the next reload"
            );
        }
    }

    /// Runs one non-streaming turn where it belongs (see the module docs).
    pub(super) async fn run_turn(&self, request: TurnRequest) -> Result<TurnResponse, ApiError> {
        let in_flight = self.turn_permit()?;
        let result = if self.turns_may_block() {
            let engine = Arc::clone(&self.engine);
            tokio::task::spawn_blocking(move || engine.turn(request))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "turn panicked");
                    ApiError::internal()
                })
                .and_then(|turn| turn.map_err(ApiError::from_engine))
        } else {
            let engine = &self.engine;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.turn(request)))
                .map_err(|_| {
                    tracing::error!("turn panicked");
                    ApiError::internal()
                })
                .and_then(|turn| turn.map_err(ApiError::from_engine));
            if let Ok(response) = &result {
                self.judge_inline_turn(response.script_time);
            }
            result
        };
        drop(in_flight);
        result
    }

    /// Runs a turn on the blocking pool, passing model deltas to `on_delta` as they come;
    /// `finish` gets the response, or the error to end the stream with (the status, 200,
    /// is sent by then), and runs on the same thread.
    pub(super) fn spawn_streaming_turn(
        self: &Arc<Self>,
        request: TurnRequest,
        mut on_delta: impl FnMut(&str) + Send + 'static,
        finish: impl FnOnce(Result<&TurnResponse, ApiError>) + Send + 'static,
    ) -> Result<(), ApiError> {
        let in_flight = self.turn_permit()?;
        let state = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                state.engine.turn_streaming(request, &mut on_delta)
            }));
            match turn {
                Ok(Ok(response)) => finish(Ok(&response)),
                Ok(Err(error)) => finish(Err(ApiError::from_engine(error))),
                Err(_) => {
                    // The stream has begun (status 200 is sent): it ends with an error
                    // event instead of a status.
                    tracing::error!("streaming turn panicked");
                    finish(Err(ApiError::internal()));
                }
            }
            // Also dropped if `finish` panics: the turn leaves the count.
            drop(in_flight);
        });
        Ok(())
    }

    /// Runs `f` (which touches the session store) off the runtime's workers when the store
    /// does network I/O.
    pub(super) async fn with_store<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&State) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        if self.remote_sessions {
            let state = Arc::clone(self);
            tokio::task::spawn_blocking(move || f(&state)).await.map_err(|e| {
                tracing::error!(error = %e, "session operation panicked");
                ApiError::internal()
            })
        } else {
            Ok(f(self))
        }
    }
}

/// A turn in flight: holds its permit and counts in the in-flight gauge until dropped,
/// so the turn leaves the count however it ends, a panic included.
pub(super) struct InFlight {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.in_flight().dec();
    }
}

/// A turn's response as its requester may see it: whole for agents and editors, with a
/// customer's view of the trace otherwise.
pub(super) fn for_requester(mut response: TurnResponse, full_trace: bool) -> TurnResponse {
    if !full_trace {
        response.trace = crate::engine::TraceStep::for_customer(&response.trace);
    }
    response
}
