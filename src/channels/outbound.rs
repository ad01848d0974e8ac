//! Delivering messages out to a channel's platform: [`deliver`] queues one
//! [`Outgoing`] message as a job on the service's [`JobQueue`], whose workers call the
//! channel's [`Sender`] with the queue's retries and backoff. Used for replies that could
//! not go back in the platform's own request (a webhook channel's reply, a WeChat reply
//! past its 5-second window) and for what reaches a channel customer later (an agent's
//! answer, a job's notice).
//!
//! A delivery that runs out of attempts is logged once (by the queue: `job given up`,
//! `deliver {id} to {channel}`) and given up: it tells the
//! conversation nothing (the customer it could not reach is not there to read it, and a
//! notice would be delivered again, and fail again).

use std::sync::Arc;

use super::{Outgoing, Sender};
use crate::jobs::{Job, JobError, JobQueue, SubmitError};
use crate::safety::logsafe::LogSafe;

/// What happened to a delivery, for metrics (`kefu_channel_deliveries_total{outcome}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The platform took it.
    Delivered,
    /// An attempt failed and another one is made.
    Retried,
    /// Given up: a permanent failure, attempts exhausted, or the job queue full.
    Failed,
}

impl DeliveryOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retried => "retried",
            DeliveryOutcome::Failed => "failed",
        }
    }

    /// Every outcome, for the series that exist from start.
    pub const ALL: [DeliveryOutcome; 3] = [
        DeliveryOutcome::Delivered,
        DeliveryOutcome::Retried,
        DeliveryOutcome::Failed,
    ];
}

/// Told of every delivery's outcome, with the channel's name (the metrics).
pub type DeliveryObserver = Arc<dyn Fn(&str, DeliveryOutcome) + Send + Sync>;

/// A sender whose deliveries are reported to an observer: what [`super::Outbound`] hands
/// out once it has one (see [`super::Outbound::observed`]).
pub(super) struct Observed {
    pub(super) channel: String,
    pub(super) inner: Arc<dyn Sender>,
    pub(super) observer: DeliveryObserver,
}

impl Sender for Observed {
    fn send(&self, message: &Outgoing) -> Result<(), JobError> {
        self.inner.send(message)
    }

    fn outcome(&self, message: &Outgoing, outcome: DeliveryOutcome) {
        (self.observer)(&self.channel, outcome);
        self.inner.outcome(message, outcome);
    }
}

/// Queues `message` for delivery through `sender`: a job on `queue`, attempted on the
/// blocking pool, temporary failures retried with the queue's backoff (`JobConfig`),
/// permanent ones and the last failure logged once and given up. Refused at once when
/// the queue is full (logged and counted as failed, the error returned).
pub fn deliver(queue: &JobQueue, sender: Arc<dyn Sender>, message: Outgoing) -> Result<(), SubmitError> {
    let session = message.key.session_id();
    let refused = Arc::clone(&sender);
    let failed = message.clone();
    let job = Delivery {
        sender,
        message,
        session,
        attempts: 0,
    };
    // The queue logs a refusal, with the job's description and session.
    queue
        .submit(Box::new(job))
        .inspect_err(|_| refused.outcome(&failed, DeliveryOutcome::Failed))
}

/// One message on its way out.
struct Delivery {
    sender: Arc<dyn Sender>,
    message: Outgoing,
    session: String,
    attempts: u32,
}

impl Job for Delivery {
    fn session_id(&self) -> &str {
        &self.session
    }

    fn describe(&self) -> String {
        format!("deliver {} to {}", LogSafe(&self.message.id), self.message.key.channel)
    }

    fn attempt(&mut self) -> Result<Option<String>, JobError> {
        if self.attempts > 0 {
            self.sender.outcome(&self.message, DeliveryOutcome::Retried);
        }
        self.attempts += 1;
        self.sender.send(&self.message)?;
        self.sender.outcome(&self.message, DeliveryOutcome::Delivered);
        Ok(None)
    }

    fn give_up(&mut self, _error: &JobError) -> Option<String> {
        // Logged once, by the queue (`job given up`, with this job's description, the
        // session and the error); counted here.
        self.sender.outcome(&self.message, DeliveryOutcome::Failed);
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::channels::{Outbound, SessionKey};
    use crate::jobs::JobConfig;

    /// Fails the first `failures` sends with `error`, records every send.
    struct Flaky {
        failures: usize,
        error: JobError,
        sent: Mutex<Vec<String>>,
    }

    impl Sender for Flaky {
        fn send(&self, message: &Outgoing) -> Result<(), JobError> {
            let mut sent = self.sent.lock().unwrap();
            sent.push(message.id.clone());
            if sent.len() <= self.failures {
                return Err(self.error.clone());
            }
            Ok(())
        }
    }

    fn message() -> Outgoing {
        Outgoing {
            key: SessionKey::new("shop", "-", "c1").unwrap(),
            text: "您好".into(),
            id: "m1:reply".into(),
            choices: vec![],
        }
    }

    fn run(failures: usize, error: JobError) -> (Vec<String>, Vec<(String, DeliveryOutcome)>) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = JobConfig {
            backoff: Duration::from_millis(2),
            max_attempts: 3,
            ..JobConfig::default()
        };
        let queue = JobQueue::start(rt.handle(), config, Arc::new(|_, _| {}), |_| {});
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&outcomes);
        let mut outbound = Outbound::observed(Arc::new(move |channel: &str, outcome| {
            seen.lock().unwrap().push((channel.to_string(), outcome));
        }));
        let flaky = Arc::new(Flaky {
            failures,
            error,
            sent: Mutex::new(vec![]),
        });
        outbound.register("shop", Arc::clone(&flaky) as _);
        deliver(&queue, outbound.sender("shop").unwrap(), message()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while queue.depth() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let sent = flaky.sent.lock().unwrap().clone();
        let outcomes = outcomes.lock().unwrap().clone();
        (sent, outcomes)
    }

    #[test]
    fn temporary_failures_are_retried_until_delivered() {
        let (sent, outcomes) = run(2, JobError::Temporary("503".into()));
        assert_eq!(sent, ["m1:reply"; 3]);
        let labels: Vec<_> = outcomes.iter().map(|(c, o)| format!("{c}:{}", o.as_str())).collect();
        assert_eq!(labels, ["shop:retried", "shop:retried", "shop:delivered"]);
    }

    #[test]
    fn a_permanent_failure_is_given_up_at_once() {
        let (sent, outcomes) = run(5, JobError::Permanent("400".into()));
        assert_eq!(sent.len(), 1);
        assert_eq!(outcomes, [("shop".to_string(), DeliveryOutcome::Failed)]);
    }

    #[test]
    fn attempts_run_out() {
        let (sent, outcomes) = run(5, JobError::Temporary("timeout".into()));
        assert_eq!(sent.len(), 3, "max_attempts");
        assert_eq!(outcomes.last().unwrap().1, DeliveryOutcome::Failed);
        assert_eq!(outcomes.len(), 3, "two retries and the failure: {outcomes:?}");
    }
}
