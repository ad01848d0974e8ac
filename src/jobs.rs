//! Work that a turn asks for but does not wait for: the seed's "非实时需求通过消息队列异步处理".
//!
//! A turn that raises a ticket answers at once ("已为您提交，稍后通知您"); handing the ticket
//! to a slow back office is a [`Job`] on a bounded [`JobQueue`]. Workers run each job's
//! blocking attempt on tokio's blocking pool, retry failures that may pass with
//! exponential backoff and jitter, and tell the conversation the outcome (through the
//! engine, the only writer of sessions), so the customer (or the agent console) sees it
//! on the session. The queue is bounded: when it is full a job is refused at once rather
//! than piling up.
//!
//! The queue is generic and lives in memory; what makes tickets durable (the outbox, and
//! the pump that feeds recorded tickets into this queue) is in `tickets`, above it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use crate::safety::logsafe::LogSafe;

/// Why an attempt failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum JobError {
    /// It may work later (timeout, connection refused, 5xx): retried with backoff.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// It will not work (4xx, bad data): not retried.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// The queue refused a job.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// Too many jobs are waiting.
    #[error("the job queue is full")]
    Full,
    /// The queue has stopped.
    #[error("the job queue has stopped")]
    Closed,
}

/// A piece of work for a conversation, done after its turn answered.
pub trait Job: Send + 'static {
    /// The conversation that asked for it; its history gets the outcome.
    fn session_id(&self) -> &str;
    /// A short description for logs (`deliver ticket T20261105-000001`).
    fn describe(&self) -> String;
    /// One attempt. Blocking is fine: it runs on the blocking pool. `Ok` carries the message
    /// for the customer, if any.
    fn attempt(&mut self) -> Result<Option<String>, JobError>;
    /// Attempts are exhausted or the failure is permanent; the message for the customer.
    fn give_up(&mut self, error: &JobError) -> Option<String>;
}

/// How the queue retries.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// Jobs that may wait; more are refused.
    pub capacity: usize,
    /// Jobs attempted at the same time.
    pub workers: usize,
    /// Attempts per job, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each next one.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for JobConfig {
    /// 1,024 waiting, 4 at a time, 5 attempts, 500 ms doubling up to 30 s.
    fn default() -> Self {
        JobConfig {
            capacity: 1024,
            workers: 4,
            max_attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What happened to a job, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobEvent {
    /// Accepted into the queue.
    Queued,
    /// Refused: the queue was full.
    Refused,
    /// An attempt failed and will be retried.
    Retried,
    /// Done.
    Succeeded,
    /// Given up.
    Failed,
}

impl JobEvent {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            JobEvent::Queued => "queued",
            JobEvent::Refused => "refused",
            JobEvent::Retried => "retried",
            JobEvent::Succeeded => "succeeded",
            JobEvent::Failed => "failed",
        }
    }
}

type Observer = Arc<dyn Fn(JobEvent) + Send + Sync>;

/// Tells a conversation a job's outcome (session id, text). The engine is the only
/// writer of sessions, so the queue hands outcomes to it (`Engine::tell`) rather than
/// writing the session store itself.
pub type Teller = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// A bounded queue of jobs and the workers that run them.
#[derive(Clone)]
pub struct JobQueue {
    tx: mpsc::Sender<Box<dyn Job>>,
    observer: Observer,
    /// Jobs accepted and not finished (waiting, running or between attempts).
    depth: Arc<AtomicUsize>,
}

impl JobQueue {
    /// Starts the queue's dispatcher on `runtime`; outcomes go to `tell`.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        config: JobConfig,
        tell: Teller,
        observer: impl Fn(JobEvent) + Send + Sync + 'static,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Box<dyn Job>>(config.capacity.max(1));
        let observer: Observer = Arc::new(observer);
        let workers = Arc::new(Semaphore::new(config.workers.max(1)));
        let config = Arc::new(config);
        let dispatch_observer = Arc::clone(&observer);
        let depth = Arc::new(AtomicUsize::new(0));
        let finished = Arc::clone(&depth);
        runtime.spawn(async move {
            while let Some(job) = rx.recv().await {
                let Ok(permit) = Arc::clone(&workers).acquire_owned().await else {
                    return;
                };
                let (config, tell, observer, finished) = (
                    Arc::clone(&config),
                    Arc::clone(&tell),
                    Arc::clone(&dispatch_observer),
                    Arc::clone(&finished),
                );
                tokio::spawn(async move {
                    run(job, &config, tell, &observer).await;
                    finished.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
        });
        JobQueue { tx, observer, depth }
    }

    /// Jobs accepted and not finished yet: waiting, running, or between attempts.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// The count behind [`JobQueue::depth`], for reading without holding the queue.
    pub fn depth_counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.depth)
    }

    /// Queues a job; refused at once when the queue is full. Callable from any thread,
    /// inside a turn included.
    pub fn submit(&self, job: Box<dyn Job>) -> Result<(), SubmitError> {
        // Counted and reported before the send: once sent, a worker may attempt the job
        // (and report its retries) before this thread runs another line.
        match self.tx.try_reserve() {
            Ok(slot) => {
                self.depth.fetch_add(1, Ordering::Relaxed);
                (self.observer)(JobEvent::Queued);
                slot.send(job);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(())) => {
                (self.observer)(JobEvent::Refused);
                tracing::warn!(job = %job.describe(), session = %LogSafe(job.session_id()), "job queue full; job refused");
                Err(SubmitError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(())) => Err(SubmitError::Closed),
        }
    }
}

/// The wait before retry number `retry` (1-based): doubling, capped, with up to 25%
/// jitter so that jobs failing together do not retry together.
pub fn backoff(config: &JobConfig, retry: u32) -> Duration {
    let base = config
        .backoff
        .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
        .min(config.max_backoff);
    let jitter = (jitter_seed() % 1000) as f64 / 4000.0;
    base.mul_f64(1.0 + jitter)
}

fn jitter_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let n = COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ nanos;
    n.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 16
}

async fn run(mut job: Box<dyn Job>, config: &JobConfig, tell: Teller, observer: &Observer) {
    let what = job.describe();
    let mut attempt = 0;
    let notice = loop {
        attempt += 1;
        let (returned, result) = match tokio::task::spawn_blocking(move || {
            let result = job.attempt();
            (job, result)
        })
        .await
        {
            Ok(done) => done,
            Err(error) => {
                // The attempt panicked; the job went with it.
                tracing::error!(job = %what, %error, "job attempt panicked");
                observer(JobEvent::Failed);
                return;
            }
        };
        job = returned;
        match result {
            Ok(notice) => {
                tracing::info!(job = %what, session = %LogSafe(job.session_id()), attempt, "job done");
                observer(JobEvent::Succeeded);
                break notice;
            }
            Err(error @ JobError::Temporary(_)) if attempt < config.max_attempts => {
                let wait = backoff(config, attempt);
                tracing::warn!(job = %what, attempt, %error, wait_ms = wait.as_millis() as u64, "job failed; retrying");
                observer(JobEvent::Retried);
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                tracing::error!(job = %what, session = %LogSafe(job.session_id()), attempt, %error, "job given up");
                observer(JobEvent::Failed);
                break job.give_up(&error);
            }
        }
    };
    if let Some(text) = notice {
        let id = job.session_id().to_string();
        // Off the runtime's workers: telling may wait for a shared store.
        let _ = tokio::task::spawn_blocking(move || tell(&id, &text)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = JobConfig {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..JobConfig::default()
        };
        let first = backoff(&config, 1);
        let second = backoff(&config, 2);
        let tenth = backoff(&config, 10);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(125));
        assert!(second >= Duration::from_millis(200) && second <= Duration::from_millis(250));
        assert!(tenth >= Duration::from_millis(500) && tenth <= Duration::from_millis(625));
    }

    struct Flaky {
        failures: u32,
        tries: Arc<AtomicU64>,
    }

    impl Job for Flaky {
        fn session_id(&self) -> &str {
            "job-session"
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn attempt(&mut self) -> Result<Option<String>, JobError> {
            let n = self.tries.fetch_add(1, Ordering::SeqCst) as u32;
            if n < self.failures {
                Err(JobError::Temporary("not yet".into()))
            } else {
                Ok(Some("查询结果：已发货".into()))
            }
        }
        fn give_up(&mut self, _: &JobError) -> Option<String> {
            Some("放弃了".into())
        }
    }

    #[test]
    fn a_flaky_job_is_retried_and_its_result_reaches_the_session() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let told = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
        let teller = Arc::clone(&told);
        let tell: Teller = Arc::new(move |id, text| teller.lock().unwrap().push((id.into(), text.into())));
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let config = JobConfig {
            backoff: Duration::from_millis(5),
            max_attempts: 4,
            ..JobConfig::default()
        };
        let queue = JobQueue::start(rt.handle(), config, tell, move |e| seen.lock().unwrap().push(e));
        let tries = Arc::new(AtomicU64::new(0));
        queue
            .submit(Box::new(Flaky {
                failures: 2,
                tries: Arc::clone(&tries),
            }))
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while told.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            *told.lock().unwrap(),
            [("job-session".to_string(), "查询结果：已发货".to_string())],
            "the result reached the conversation"
        );
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert_eq!(
            *events.lock().unwrap(),
            vec![
                JobEvent::Queued,
                JobEvent::Retried,
                JobEvent::Retried,
                JobEvent::Succeeded
            ]
        );
    }
}
