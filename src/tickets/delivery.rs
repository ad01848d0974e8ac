//! Ticket delivery: recorded tickets pumped from the [`Outbox`] into the job queue as
//! [`DeliverTicket`] jobs, each POSTed to the back office.
//!
//! A delivery is marked done in the outbox only when the back office answered 2xx (or
//! refused the ticket for good); a process that dies leaves it recorded, and it is handed
//! out again after a restart (journal) or to another node (Redis) once the visibility
//! timeout passes. Delivery is therefore at least once; each request carries the ticket id
//! as `Idempotency-Key` so the back office sees each ticket once, and an HMAC-SHA256
//! signature so it can check where the request came from.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::TicketStore;
use super::outbox::{Outbox, Taken};
use crate::jobs::{Job, JobError, JobQueue};

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
