//! The inbox across nodes: with `--redis`, every change made on a node is published on
//! the Redis channel `kefu:inbox` (prefixed like the session keys) with the node's id;
//! every node subscribes, applies the other nodes' changes to its hub and, for a
//! takeover or handoff, silences at once any answer it is generating for that
//! conversation.
//!
//! Neither side is on a turn's path: the publisher is a thread fed through a bounded
//! queue (a change that does not fit is dropped and counted in the log: the other nodes'
//! inboxes then show it at the conversation's next change), and the subscriber is a
//! thread of its own that reconnects every second while Redis is away, as
//! `versions::redis::subscribe` does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Change, Inbox};

/// Changes waiting to be published at most.
const PUBLISH_QUEUE: usize = 4096;
/// The longest message taken from the channel (a change is a few KiB at most).
const MESSAGE_BYTES: usize = 256 * 1024;

/// The channel's name under `prefix` (`kefu:` gives `kefu:inbox`).
pub fn channel(prefix: &str) -> String {
    format!("{prefix}inbox")
}

/// One message on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Wire<N, C> {
    /// The node that made the change.
    node: N,
    /// The change.
    change: C,
}

/// Publishes this node's changes (see the module header).
pub struct Publisher {
    tx: SyncSender<String>,
    node: String,
    dropped: Arc<AtomicU64>,
}

impl Publisher {
    /// Queues `change` for the other nodes; never waits.
    pub fn publish(&self, change: &Change) {
        let Ok(text) = serde_json::to_string(&Wire {
            node: &self.node,
            change,
        }) else {
            return;
        };
        match self.tx.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "inbox changes not published: Redis is not keeping up");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The subscriber thread: dropping it stops the thread within a second.
#[derive(Debug)]
pub struct Subscription {
    stop: Arc<AtomicBool>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A random id for this node's messages.
pub fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!(
        "{}-{}-{:08x}",
        host.trim(),
        std::process::id(),
        getrandom::u32().unwrap_or(0)
    )
}

/// Starts publishing `inbox`'s changes to Redis at `url` and applying the other nodes'
/// changes to it; `silence` is called with a conversation's id when another node took
/// it from the bot.
pub fn start(
    url: &str,
    prefix: &str,
    timeout: Duration,
    inbox: &Arc<Inbox>,
    silence: impl Fn(&str) + Send + 'static,
) -> Result<Subscription, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let node = node_id();
    let channel = channel(prefix);
    let address = crate::safety::logsafe::redacted_url(url);
    let (tx, rx) = sync_channel(PUBLISH_QUEUE);
    inbox.set_fleet(Publisher {
        tx,
        node: node.clone(),
        dropped: Arc::default(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    publish_thread(client.clone(), channel.clone(), address.clone(), timeout, rx);
    let stopped = Arc::clone(&stop);
    let weak = Arc::downgrade(inbox);
    let spawned = std::thread::Builder::new()
        .name("kefu-inbox-sub".into())
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let result = (|| -> redis::RedisResult<()> {
                    let mut conn = client.get_connection_with_timeout(timeout)?;
                    let mut pubsub = conn.as_pubsub();
                    pubsub.subscribe(&channel)?;
                    pubsub.set_read_timeout(Some(Duration::from_secs(1)))?;
                    while !stopped.load(Ordering::Relaxed) {
                        let message = match pubsub.get_message() {
                            Ok(message) => message,
                            Err(e) if e.is_timeout() => continue,
                            Err(e) => return Err(e),
                        };
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        let Some(inbox) = weak.upgrade() else { return Ok(()) };
                        if let Some(change) = remote(&payload, &node) {
                            if change.silences() {
                                silence(change.session());
                            }
                            inbox.apply(change);
                        }
                    }
                    Ok(())
                })();
                if let Err(error) = result {
                    tracing::warn!(redis = %address, %error, "the inbox subscription failed; connecting again");
                    std::thread::sleep(Duration::from_secs(1));
                }
                if weak.strong_count() == 0 {
                    return;
                }
            }
        });
    if let Err(error) = &spawned {
        tracing::error!(%error, "cannot start the inbox subscription thread");
    }
    Ok(Subscription { stop })
}

/// Another node's change from a message's text; `None` for this node's own messages and
/// anything that does not read.
fn remote(payload: &str, node: &str) -> Option<Change> {
    if payload.len() > MESSAGE_BYTES {
        return None;
    }
    let wire: Wire<String, Change> = serde_json::from_str(payload).ok()?;
    (wire.node != node).then_some(wire.change)
}

/// The publisher thread: sends each queued change, connecting again after a failure;
/// ends when the inbox (and its [`Publisher`]) is gone.
fn publish_thread(client: redis::Client, channel: String, address: String, timeout: Duration, rx: Receiver<String>) {
    let spawned = std::thread::Builder::new()
        .name("kefu-inbox-pub".into())
        .spawn(move || {
            let mut conn: Option<redis::Connection> = None;
            // After a failure, changes are dropped for a second rather than each waiting
            // for a connection that will not come (and each logging it).
            let mut down_until: Option<std::time::Instant> = None;
            let mut lost = 0u64;
            while let Ok(text) = rx.recv() {
                if down_until.is_some_and(|t| std::time::Instant::now() < t) {
                    lost += 1;
                    continue;
                }
                if conn.is_none() {
                    conn = client
                        .get_connection_with_timeout(timeout)
                        .and_then(|c| {
                            c.set_write_timeout(Some(timeout))?;
                            c.set_read_timeout(Some(timeout))?;
                            Ok(c)
                        })
                        .inspect_err(
                            |error| tracing::warn!(redis = %address, %error, lost, "inbox changes not published"),
                        )
                        .ok();
                }
                let sent = conn
                    .as_mut()
                    .map(|c| redis::cmd("PUBLISH").arg(&channel).arg(&text).query::<i64>(c));
                match sent {
                    Some(Ok(_)) => {
                        down_until = None;
                        lost = 0;
                    }
                    Some(Err(error)) => {
                        tracing::warn!(redis = %address, %error, "inbox change not published");
                        conn = None;
                        down_until = Some(std::time::Instant::now() + Duration::from_secs(1));
                    }
                    None => down_until = Some(std::time::Instant::now() + Duration::from_secs(1)),
                }
            }
        });
    if let Err(error) = &spawned {
        tracing::error!(%error, "cannot start the inbox publisher thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_messages_are_ignored_and_others_read() {
        let change = Change::Requeue {
            session: "s".into(),
            at: 1,
            agent: Some("小王".into()),
        };
        let text = serde_json::to_string(&Wire {
            node: "a",
            change: &change,
        })
        .unwrap();
        assert_eq!(remote(&text, "a"), None);
        assert_eq!(remote(&text, "b"), Some(change));
        assert_eq!(remote("{not json", "b"), None);
    }
}
