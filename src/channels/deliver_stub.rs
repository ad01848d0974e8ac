//! STUB for part H (issue #24): `channels::deliver` as the contract names it, the minimum
//! part X needs to send WeChat replies through the job queue before H's branch lands. The
//! lead replaces this file with H's `deliver` when merging (same signature).

use std::sync::Arc;

use super::{Outgoing, Sender};
use crate::jobs::{Job, JobError, JobQueue, SubmitError};
use crate::safety::logsafe::LogSafe;

/// Submits a job that sends `message` through `sender`, with the queue's retries and
/// backoff; giving up tells the customer nothing (it is logged once).
pub fn deliver(queue: &JobQueue, sender: Arc<dyn Sender>, message: Outgoing) -> Result<(), SubmitError> {
    let session = message.key.session_id();
    queue.submit(Box::new(Delivery {
        sender,
        message,
        session,
    }))
}

struct Delivery {
    sender: Arc<dyn Sender>,
    message: Outgoing,
    session: String,
}

impl Job for Delivery {
    fn session_id(&self) -> &str {
        &self.session
    }

    fn describe(&self) -> String {
        format!("deliver {} on {}", self.message.id, self.message.key.channel)
    }

    fn attempt(&mut self) -> Result<Option<String>, JobError> {
        self.sender.send(&self.message).map(|()| None)
    }

    fn give_up(&mut self, error: &JobError) -> Option<String> {
        tracing::warn!(session = %LogSafe(&self.session), id = %self.message.id, %error, "channel message not delivered");
        None
    }
}
