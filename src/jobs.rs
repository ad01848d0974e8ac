//! Work that a turn asks for but does not wait for: the seed's "非实时需求通过消息队列异步处理".
//!
//! A turn that raises a ticket answers at once ("已为您提交，稍后通知您"); handing the ticket
//! to a slow back office is a [`Job`] on a bounded [`JobQueue`]. Workers run each job's
//! blocking attempt on tokio's blocking pool, retry failures that may pass with
//! exponential backoff and jitter, and append the outcome to the conversation's history
//! as a bot message, so the customer (or the agent console) sees it on the session. The
//! queue is bounded: when it is full a job is refused at once rather than piling up.
//!
//! Jobs live in memory: a job still waiting when the process stops is lost (its ticket
//! stays `open` for people to pick up).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use crate::dialogue::{Role, Session, Ticket, TicketStore};
use crate::store::SessionStore;

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

/// A bounded queue of jobs and the workers that run them.
#[derive(Clone)]
pub struct JobQueue {
    tx: mpsc::Sender<Box<dyn Job>>,
    observer: Observer,
}

impl JobQueue {
    /// Starts the queue's dispatcher on `runtime`; outcomes go to `sessions`.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        config: JobConfig,
        sessions: Arc<dyn SessionStore>,
        observer: impl Fn(JobEvent) + Send + Sync + 'static,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Box<dyn Job>>(config.capacity.max(1));
        let observer: Observer = Arc::new(observer);
        let workers = Arc::new(Semaphore::new(config.workers.max(1)));
        let config = Arc::new(config);
        let dispatch_observer = Arc::clone(&observer);
        runtime.spawn(async move {
            while let Some(job) = rx.recv().await {
                let Ok(permit) = Arc::clone(&workers).acquire_owned().await else {
                    return;
                };
                let (config, sessions, observer) = (
                    Arc::clone(&config),
                    Arc::clone(&sessions),
                    Arc::clone(&dispatch_observer),
                );
                tokio::spawn(async move {
                    run(job, &config, sessions, &observer).await;
                    drop(permit);
                });
            }
        });
        JobQueue { tx, observer }
    }

    /// Queues a job; refused at once when the queue is full. Callable from any thread,
    /// inside a turn included.
    pub fn submit(&self, job: Box<dyn Job>) -> Result<(), SubmitError> {
        match self.tx.try_send(job) {
            Ok(()) => {
                (self.observer)(JobEvent::Queued);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(job)) => {
                (self.observer)(JobEvent::Refused);
                tracing::warn!(job = %job.describe(), session = job.session_id(), "job queue full; job refused");
                Err(SubmitError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SubmitError::Closed),
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

async fn run(mut job: Box<dyn Job>, config: &JobConfig, sessions: Arc<dyn SessionStore>, observer: &Observer) {
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
                tracing::info!(job = %what, session = job.session_id(), attempt, "job done");
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
                tracing::error!(job = %what, session = job.session_id(), attempt, %error, "job given up");
                observer(JobEvent::Failed);
                break job.give_up(&error);
            }
        }
    };
    if let Some(text) = notice {
        let id = job.session_id().to_string();
        let _ = tokio::task::spawn_blocking(move || tell_session(sessions.as_ref(), &id, &text)).await;
    }
}

/// Appends a bot message to a session's history.
pub fn tell_session(sessions: &dyn SessionStore, id: &str, text: &str) {
    let mut session = sessions.get(id).unwrap_or_else(|| Session::new(id));
    let now = chrono::Utc::now().timestamp_millis();
    session.remember(Role::Bot, text, now);
    session.updated_at = session.updated_at.max(now);
    sessions.put(session);
}

/// Hands a ticket to the back office: `POST` of the ticket as JSON to a URL. A 2xx marks it
/// `submitted` and tells the customer (the back office's `{"message": ...}` if it sent one);
/// after the last failed attempt it is `failed` and the customer is told a person will follow
/// up.
pub struct DeliverTicket {
    ticket: Ticket,
    url: String,
    agent: ureq::Agent,
    tickets: Weak<TicketStore>,
}

impl DeliverTicket {
    /// A delivery of `ticket` to `url`, updating its status in `tickets`.
    pub fn new(ticket: Ticket, url: String, timeout: Duration, tickets: Weak<TicketStore>) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        DeliverTicket {
            ticket,
            url,
            agent,
            tickets,
        }
    }

    fn set_status(&self, status: &str) {
        if let Some(store) = self.tickets.upgrade() {
            store.set_status(&self.ticket.id, status);
        }
    }
}

impl Job for DeliverTicket {
    fn session_id(&self) -> &str {
        &self.ticket.session_id
    }

    fn describe(&self) -> String {
        format!("deliver ticket {}", self.ticket.id)
    }

    fn attempt(&mut self) -> Result<Option<String>, JobError> {
        let mut response = self
            .agent
            .post(&self.url)
            .send_json(&self.ticket)
            .map_err(|e| JobError::Temporary(e.to_string()))?;
        let status = response.status().as_u16();
        match status {
            200..=299 => {
                let body: Option<serde_json::Value> = response.body_mut().read_json().ok();
                let message = body
                    .as_ref()
                    .and_then(|b| b.get("message"))
                    .and_then(|m| m.as_str())
                    .map(str::to_string);
                self.set_status("submitted");
                Ok(Some(message.unwrap_or_else(|| {
                    format!("您的工单 {} 已提交处理，结果会在这里通知您。", self.ticket.id)
                })))
            }
            408 | 429 | 500..=599 => Err(JobError::Temporary(format!("back office answered {status}"))),
            _ => Err(JobError::Permanent(format!("back office answered {status}"))),
        }
    }

    fn give_up(&mut self, _error: &JobError) -> Option<String> {
        self.set_status("failed");
        Some(format!(
            "抱歉，工单 {} 暂时未能提交，人工客服会尽快与您联系。",
            self.ticket.id
        ))
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
        let sessions: Arc<dyn SessionStore> = Arc::new(crate::store::MemoryStore::default());
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let config = JobConfig {
            backoff: Duration::from_millis(5),
            max_attempts: 4,
            ..JobConfig::default()
        };
        let queue = JobQueue::start(rt.handle(), config, Arc::clone(&sessions), move |e| {
            seen.lock().unwrap().push(e)
        });
        let tries = Arc::new(AtomicU64::new(0));
        queue
            .submit(Box::new(Flaky {
                failures: 2,
                tries: Arc::clone(&tries),
            }))
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sessions.get("job-session").is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let session = sessions.get("job-session").expect("the result reached the session");
        assert_eq!(session.history.back().map(|h| &*h.text), Some("查询结果：已发货"));
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
