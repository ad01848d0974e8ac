//! Work that a turn asks for but does not wait for: the seed's "非实时需求通过消息队列异步处理".
//!
//! A turn that raises a ticket answers at once ("已为您提交，稍后通知您"); handing the ticket
//! to a slow back office is a [`Job`] on a bounded [`JobQueue`]. Workers run each job's
//! blocking attempt on tokio's blocking pool, retry failures that may pass with
//! exponential backoff and jitter, and append the outcome to the conversation's history
//! as a bot message, so the customer (or the agent console) sees it on the session. The
//! queue is bounded: when it is full a job is refused at once rather than piling up.
//!
//! The queue itself lives in memory; tickets do not depend on it. A ticket is recorded in
//! an [`Outbox`] (a journal in the state directory, or a Redis stream) before the customer
//! is told it was submitted, and [`Deliveries`] pumps recorded tickets from the outbox into
//! the queue as [`DeliverTicket`] jobs. A delivery is marked done in the outbox only when the
//! back office answered 2xx (or refused the ticket for good); a process that dies leaves it
//! recorded, and it is handed out again after a restart (journal) or to another node
//! (Redis) once the visibility timeout passes. Delivery is therefore at least once; each
//! request carries the ticket id as `Idempotency-Key` so the back office sees each ticket
//! once, and an HMAC-SHA256 signature so it can check where the request came from.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};

use crate::dialogue::TicketStore;
use crate::outbox::{Outbox, Taken};
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
        // Counted before the send: the job may finish before `try_send` returns.
        self.depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {
                (self.observer)(JobEvent::Queued);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(job)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                (self.observer)(JobEvent::Refused);
                tracing::warn!(job = %job.describe(), session = %LogSafe(job.session_id()), "job queue full; job refused");
                Err(SubmitError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                Err(SubmitError::Closed)
            }
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

/// How tickets reach the back office.
#[derive(Clone, Debug)]
pub struct TicketConfig {
    /// The state directory of the local journal (used without Redis); `None` keeps tickets
    /// in memory only (embedding, tests).
    pub state_dir: Option<PathBuf>,
    /// The HMAC-SHA256 key of `X-Kefu-Signature`; unsigned without one.
    pub secret: Option<Vec<u8>>,
    /// A ticket handed out and not delivered within this long is handed out again (after a
    /// crash, or when its attempts ran out).
    pub visibility: Duration,
    /// The longest one delivery request may take.
    pub request_timeout: Duration,
    /// Deliveries in flight at once on this node.
    pub max_in_flight: usize,
}

impl Default for TicketConfig {
    /// In memory, unsigned, 60 s visibility, 5 s per request, 64 in flight.
    fn default() -> Self {
        TicketConfig {
            state_dir: None,
            secret: None,
            visibility: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            max_in_flight: 64,
        }
    }
}

/// What happened to a ticket delivery, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryEvent {
    /// The back office has it (2xx, or 409 for a ticket it already had).
    Delivered,
    /// The back office refused it for good (another 4xx): marked done, people follow up.
    Rejected,
    /// Attempts ran out on temporary failures: left in the outbox for a redelivery.
    Deferred,
    /// Handed out again: after a restart, from a dead node, or after deferral.
    Redelivered,
}

impl DeliveryEvent {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryEvent::Delivered => "delivered",
            DeliveryEvent::Rejected => "rejected",
            DeliveryEvent::Deferred => "deferred",
            DeliveryEvent::Redelivered => "redelivered",
        }
    }
}

type DeliveryObserver = Arc<dyn Fn(DeliveryEvent) + Send + Sync>;

/// What every delivery of a node shares.
struct Delivery {
    url: String,
    secret: Option<Vec<u8>>,
    agent: ureq::Agent,
    outbox: Arc<dyn Outbox>,
    tickets: Weak<TicketStore>,
    observer: DeliveryObserver,
    in_flight: Arc<AtomicUsize>,
}

/// The delivery pump: takes recorded tickets from the outbox and queues a
/// [`DeliverTicket`] job for each, keeping at most `max_in_flight` going.
pub struct Deliveries {
    stop: Arc<AtomicBool>,
    pump: tokio::task::JoinHandle<()>,
    shared: Arc<Delivery>,
}

impl Deliveries {
    /// Starts pumping tickets from `outbox` to `url` through `queue`.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        url: String,
        config: &TicketConfig,
        outbox: Arc<dyn Outbox>,
        queue: JobQueue,
        tickets: Weak<TicketStore>,
        observer: impl Fn(DeliveryEvent) + Send + Sync + 'static,
    ) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.request_timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let shared = Arc::new(Delivery {
            url,
            secret: config.secret.clone(),
            agent,
            outbox,
            tickets,
            observer: Arc::new(observer),
            in_flight: Arc::new(AtomicUsize::new(0)),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let max_in_flight = config.max_in_flight.max(1);
        let pump = runtime.spawn(pump(Arc::clone(&shared), queue, max_in_flight, Arc::clone(&stop)));
        Deliveries { stop, pump, shared }
    }

    /// The count of deliveries this node has started and not finished (for metrics).
    pub fn counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.shared.in_flight)
    }

    /// Stops taking tickets, lets deliveries in flight finish for at most `grace`, and logs
    /// what stays in the outbox (`pending tickets persisted`). Returns the pending count.
    pub async fn shutdown(self, grace: Duration) -> u64 {
        let deadline = Instant::now() + grace;
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(grace, self.pump).await;
        while self.shared.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let in_flight = self.shared.in_flight.load(Ordering::Relaxed);
        let outbox = Arc::clone(&self.shared.outbox);
        let pending = tokio::task::spawn_blocking(move || outbox.refresh_pending())
            .await
            .unwrap_or_default();
        // Nothing is lost either way: what is not done stays in the outbox and is handed
        // out again after a restart or by another node.
        tracing::info!(pending, unfinished = in_flight, "pending tickets persisted");
        pending
    }
}

async fn pump(shared: Arc<Delivery>, queue: JobQueue, max_in_flight: usize, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let room = max_in_flight.saturating_sub(shared.in_flight.load(Ordering::Relaxed));
        if room == 0 {
            // Not taking, so not counting either: keep the pending count fresh for metrics.
            let outbox = Arc::clone(&shared.outbox);
            let _ = tokio::task::spawn_blocking(move || outbox.refresh_pending()).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        let outbox = Arc::clone(&shared.outbox);
        let taken = tokio::task::spawn_blocking(move || outbox.take(room.min(16), Duration::from_millis(250))).await;
        let taken = match taken {
            Ok(Ok(taken)) => taken,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot take tickets from the outbox; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "the outbox panicked; ticket deliveries stopped");
                return;
            }
        };
        for taken in taken {
            if taken.redelivery {
                (shared.observer)(DeliveryEvent::Redelivered);
            }
            let job = DeliverTicket::new(taken, Arc::clone(&shared));
            // A refused job stays taken in the outbox: handed out again after the
            // visibility timeout.
            let _ = queue.submit(Box::new(job));
        }
    }
}

/// Counts a delivery in flight for as long as its job lives.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hands a ticket to the back office: `POST` of the ticket as JSON with `Idempotency-Key:
/// <ticket id>`, `X-Kefu-Timestamp: <unix seconds>` and, with a secret, `X-Kefu-Signature:
/// sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`. A 2xx (or 409, a ticket the back office
/// already has) marks it done and `submitted` and tells the customer (the back office's
/// `{"message": ...}` if it sent one); another 4xx marks it done and `failed`; after the last
/// temporary failure it stays in the outbox for a redelivery and the customer is told once
/// that a person will follow up.
pub struct DeliverTicket {
    taken: Taken,
    shared: Arc<Delivery>,
    _in_flight: InFlight,
}

impl DeliverTicket {
    fn new(taken: Taken, shared: Arc<Delivery>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(Arc::clone(&shared.in_flight));
        DeliverTicket {
            taken,
            shared,
            _in_flight: in_flight,
        }
    }

    fn set_status(&self, status: &str) {
        if let Some(store) = self.shared.tickets.upgrade() {
            store.set_status(&self.taken.ticket.id, status);
        }
    }

    fn done(&self, event: DeliveryEvent) {
        if let Err(error) = self.shared.outbox.done(&self.taken) {
            // The ticket will be handed out again; the back office de-duplicates it.
            tracing::warn!(ticket = %self.taken.ticket.id, %error, "delivery not marked done in the outbox");
        }
        (self.shared.observer)(event);
    }
}

/// `sha256=<hex>`: HMAC-SHA256 with `secret` over `"<timestamp>.<body>"`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

impl Job for DeliverTicket {
    fn session_id(&self) -> &str {
        &self.taken.ticket.session_id
    }

    fn describe(&self) -> String {
        format!("deliver ticket {}", self.taken.ticket.id)
    }

    fn attempt(&mut self) -> Result<Option<String>, JobError> {
        let body = serde_json::to_vec(&self.taken.ticket).expect("a ticket always serializes");
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut request = self
            .shared
            .agent
            .post(&self.shared.url)
            .header("content-type", "application/json")
            .header("idempotency-key", &self.taken.ticket.id)
            .header("x-kefu-timestamp", timestamp.to_string());
        if let Some(secret) = &self.shared.secret {
            request = request.header("x-kefu-signature", signature(secret, timestamp, &body));
        }
        let mut response = request
            .send(&body[..])
            .map_err(|e| JobError::Temporary(e.to_string()))?;
        let status = response.status().as_u16();
        match status {
            200..=299 | 409 => {
                let body: Option<serde_json::Value> = response.body_mut().read_json().ok();
                let message = body
                    .as_ref()
                    .and_then(|b| b.get("message"))
                    .and_then(|m| m.as_str())
                    .map(str::to_string);
                self.set_status("submitted");
                self.done(DeliveryEvent::Delivered);
                Ok(Some(message.unwrap_or_else(|| {
                    format!("您的工单 {} 已提交处理，结果会在这里通知您。", self.taken.ticket.id)
                })))
            }
            408 | 429 | 500..=599 => Err(JobError::Temporary(format!("back office answered {status}"))),
            _ => Err(JobError::Permanent(format!("back office answered {status}"))),
        }
    }

    fn give_up(&mut self, error: &JobError) -> Option<String> {
        let notice = format!(
            "抱歉，工单 {} 暂时未能提交，人工客服会尽快与您联系。",
            self.taken.ticket.id
        );
        match error {
            JobError::Permanent(_) => {
                self.set_status("failed");
                self.done(DeliveryEvent::Rejected);
                Some(notice)
            }
            JobError::Temporary(_) => {
                // Still recorded: a redelivery will try again. Tell the customer once.
                self.set_status("pending");
                (self.shared.observer)(DeliveryEvent::Deferred);
                (!self.taken.redelivery).then_some(notice)
            }
        }
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
