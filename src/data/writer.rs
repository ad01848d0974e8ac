//! The conversation log writer: every turn, agent answer, takeover, release and feedback
//! appended as one JSON line, off the turn's path, in files rotated by day and size.
//!
//! **Never in a turn's way.** A producer builds a [`Record`] (a few string copies) and
//! pushes it onto a [`Batcher`]; masking, serializing and writing happen on the flusher
//! thread, once per batch (every 200 ms by default). When the disk falls behind and
//! `max_pending` bytes are waiting, records are dropped and counted
//! ([`LogCounts::dropped`], `kefu_conversation_log_dropped_total`) instead of holding up
//! turns; a failed write is counted too (`failed`) and logged, and the next batch opens
//! the file again.
//!
//! **Masked twice.** The engine keeps only the masked message, and output safety masks
//! replies; the flusher still runs the current rule set's `redact_pii` over every text
//! (message, reply, agent text, feedback comment) before it is written, because agent
//! text and comments pass through no other filter, and a log is the worst place for a
//! phone number to leak.
//!
//! **Rotation.** Files are `DIR/conversations-YYYY-MM-DD-NNN.jsonl`: a new file when a
//! record's day (in the shop's time zone) differs from the open file's, or when the next
//! line would take the file past `max_bytes`. Files are never renamed, so a reader tailing
//! one never sees it move, a line never straddles two files, and the names sort in time
//! order. On start the writer appends to the day's last file while it is under the limit.
//! This is a dozen lines in the flusher; `file-rotate` renames files and rotates on one
//! condition only (size *or* time), not both. One directory per process: two writers
//! appending to one file could interleave lines. Nothing is deleted: retention is the
//! operator's (`find DIR -mtime +90 -delete`).
//!
//! **Moved or deleted under it.** logrotate (and an operator's `mv` or `rm`) takes the
//! open file away from its name; a writer that kept its handle would append to the
//! vanished file until the next rotation. So the flusher compares the open file's device
//! and inode with its path's at most once every [`LogConfig::check_interval`] (a `stat`
//! a second) and, when they differ or the path is gone, opens the path again (creating it),
//! before writing the next batch: every record after the check lands in the new file, none
//! in the old one. [`ConversationLog::reopen`] (SIGHUP in `kefu serve`) asks for the same
//! at the next batch without waiting for the check. The previous batch was flushed whole
//! to the old file before it moved, so nothing is lost either way.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;

use super::record::{
    AgentRecord, EventRecord, FeedbackRecord, Hold, NoteRecord, ProactiveRecord, Record, ReleaseRecord, RequeueRecord,
    ResolveRecord, TakeoverRecord, TurnRecord,
};
use crate::batch::{Batcher, FlushGuard};
use crate::{RuleSet, TurnResponse};

/// Settings of the conversation log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The directory the files go in (created if missing).
    pub dir: PathBuf,
    /// A file is closed and the next one started before it grows past this.
    pub max_bytes: u64,
    /// How often the flusher writes what has gathered.
    pub interval: Duration,
    /// Bytes (roughly) that may wait for the flusher; more records are dropped.
    pub max_pending: usize,
    /// The time zone of timestamps and of the day a file belongs to; `None`: the shop's
    /// (`timezone` in the rules, read when the log opens).
    pub timezone: Option<Tz>,
    /// This node's name, in every turn record.
    pub node: String,
    /// How often the flusher checks that the open file is still at its path (moved or
    /// deleted by logrotate or an operator); `Duration::ZERO` checks before every batch.
    pub check_interval: Duration,
}

impl LogConfig {
    /// Defaults: 256 MiB files, a write every 200 ms, 16 MiB waiting at most, the shop's
    /// time zone, the node named after the host, the file's path checked every second.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            max_bytes: 256 * 1024 * 1024,
            interval: Duration::from_millis(200),
            max_pending: 16 * 1024 * 1024,
            timezone: None,
            node: hostname(),
            check_interval: Duration::from_secs(1),
        }
    }
}

/// The host's name (Linux), else `kefu`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kefu".into())
}

/// How many records the log wrote, dropped (the batch was full) and lost to write errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogCounts {
    /// Lines written.
    pub written: u64,
    /// Records dropped because too much was waiting.
    pub dropped: u64,
    /// Lines lost because a write failed.
    pub failed: u64,
}

#[derive(Default)]
struct Stats {
    written: AtomicU64,
    failed: AtomicU64,
    /// Set by [`ConversationLog::reopen`], taken by the flusher.
    reopen: AtomicBool,
}

/// The conversation log's producer side: cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct ConversationLog {
    batch: Batcher<Vec<Record>>,
    stats: Arc<Stats>,
    timezone: Tz,
    node: Arc<str>,
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The directory could not be created or read, or the flusher thread not started.
    #[error("conversation log {dir}")]
    Open {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ConversationLog {
    /// Opens the log in `config.dir` and starts its flusher. `rules` gives the rule set
    /// whose safety masks the texts (called once per batch, so a reload applies). Drop the
    /// guard to write what is left and stop.
    pub fn open(
        config: LogConfig,
        rules: impl Fn() -> Arc<RuleSet> + Send + 'static,
    ) -> Result<(ConversationLog, FlushGuard), LogError> {
        let error = |source| LogError::Open {
            dir: config.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&config.dir).map_err(error)?;
        let timezone = config.timezone.unwrap_or_else(|| rules().shop.timezone);
        let stats = Arc::new(Stats::default());
        let mut files = RotatingFile::new(config.dir.clone(), config.max_bytes, config.check_interval);
        let counts = Arc::clone(&stats);
        let mut line = Vec::with_capacity(1024);
        let (batch, guard) = Batcher::start(
            "kefu-conversation-log",
            config.interval,
            config.max_pending,
            move |records: &mut Vec<Record>, _dropped| {
                // Before the batch: its records go to the file now at the path.
                let asked = counts.reopen.swap(false, Ordering::Relaxed);
                if let Err(error) = files.follow_path(asked) {
                    tracing::error!(%error, dir = %files.dir.display(), "conversation log cannot be opened again");
                }
                if records.is_empty() {
                    return;
                }
                let rules = rules();
                let (mut written, mut failed) = (0, 0);
                let mut error = None;
                for mut record in records.drain(..) {
                    mask(&rules, &mut record);
                    line.clear();
                    // A record of strings and numbers always serializes.
                    let _ = serde_json::to_writer(&mut line, &record);
                    line.push(b'\n');
                    match files.append(record.ts().date_naive(), &line) {
                        Ok(()) => written += 1,
                        Err(e) => {
                            failed += 1;
                            error.get_or_insert(e);
                        }
                    }
                }
                if let Err(e) = files.flush() {
                    // What the buffer held is lost; count it once, as the whole batch.
                    failed += written;
                    written = 0;
                    error.get_or_insert(e);
                }
                counts.written.fetch_add(written, Ordering::Relaxed);
                counts.failed.fetch_add(failed, Ordering::Relaxed);
                if let Some(error) = error {
                    tracing::error!(%error, lost = failed, dir = %files.dir.display(), "conversation log write failed");
                }
            },
        )
        .map_err(error)?;
        Ok((
            ConversationLog {
                batch,
                stats,
                timezone,
                node: config.node.into(),
            },
            guard,
        ))
    }

    /// Now, in the shop's time zone, to the millisecond.
    pub fn now(&self) -> DateTime<FixedOffset> {
        let now = Utc::now().with_timezone(&self.timezone).fixed_offset();
        let millis = now.nanosecond() / 1_000_000 * 1_000_000;
        now.with_nanosecond(millis).unwrap_or(now)
    }

    /// Queues a record; `false` when it was dropped because too much is waiting.
    pub fn push(&self, record: Record) -> bool {
        self.batch.push(record.weight(), |batch| batch.push(record))
    }

    /// Logs an answered turn: the response, the customer's segment and the model tokens
    /// it used.
    pub fn turn(
        &self,
        response: &TurnResponse,
        segment: Option<&str>,
        prompt_tokens: u32,
        completion_tokens: u32,
    ) -> bool {
        self.push(Record::Turn(TurnRecord::from_response(
            response,
            self.now(),
            segment,
            (prompt_tokens, completion_tokens),
            &self.node,
        )))
    }

    /// Logs an agent's answer.
    pub fn agent_reply(&self, session: &str, agent: Option<&str>, text: &str) -> bool {
        self.push(Record::Agent(AgentRecord {
            ts: self.now(),
            session: session.to_string(),
            agent: agent.map(str::to_string),
            text: text.to_string(),
        }))
    }

    /// Logs a person taking a conversation over: its handoff's kind, queue and reason,
    /// and how long it waited when it waited in a queue.
    pub fn takeover(&self, session: &str, agent: Option<&str>, taken: &crate::dialogue::Takeover) -> bool {
        let waited = taken.kind != crate::dialogue::HandoffKind::Agent;
        self.push(Record::Takeover(TakeoverRecord {
            ts: self.now(),
            session: session.to_string(),
            agent: agent.map(str::to_string),
            handoff_kind: Some(taken.kind),
            group: taken.group.clone(),
            reason: taken.reason.clone(),
            waited_ms: taken.assigned_at.filter(|_| waited).map(|at| (at - taken.since).max(0)),
        }))
    }

    /// Logs a conversation given back to the bot, with the figures of the hold that ended.
    pub fn release(
        &self,
        session: &str,
        agent: Option<&str>,
        ended: &crate::dialogue::Takeover,
        resumed: bool,
    ) -> bool {
        self.push(Record::Release(ReleaseRecord {
            ts: self.now(),
            session: session.to_string(),
            hold: Hold::of(ended, agent, chrono::Utc::now().timestamp_millis()),
            resumed,
        }))
    }

    /// Logs a resolution, with the figures of the hold it ended (when a person held it).
    pub fn resolve(
        &self,
        session: &str,
        ended: Option<&crate::dialogue::Takeover>,
        resolution: &crate::dialogue::Resolution,
    ) -> bool {
        let hold = match ended {
            Some(ended) => Hold::of(ended, resolution.agent.as_deref(), resolution.at),
            None => Hold {
                agent: resolution.agent.clone(),
                ..Hold::default()
            },
        };
        self.push(Record::Resolve(ResolveRecord {
            ts: self.now(),
            session: session.to_string(),
            outcome: resolution.outcome.clone(),
            hold,
        }))
    }

    /// Logs a conversation back in its queue.
    pub fn requeue(&self, session: &str, agent: Option<&str>) -> bool {
        self.push(Record::Requeue(RequeueRecord {
            ts: self.now(),
            session: session.to_string(),
            agent: agent.map(str::to_string),
        }))
    }

    /// Logs an agent's note.
    pub fn note(&self, session: &str, note: &crate::dialogue::Note) -> bool {
        self.push(Record::Note(NoteRecord {
            ts: self.now(),
            session: session.to_string(),
            agent: note.agent.clone(),
            text: note.text.clone(),
        }))
    }

    /// Logs an event the shop reported (at its own time, when it gave one) and, when it
    /// sent a proactive message, the message.
    pub fn customer_event(
        &self,
        request: &crate::engine::EventRequest,
        outcome: &crate::engine::ProactiveOutcome,
    ) -> bool {
        let ts = request
            .at
            .map_or_else(|| self.now(), |at| at.with_timezone(&self.timezone).fixed_offset());
        let record = EventRecord::of(request, outcome, ts);
        let mut pushed = self.push(Record::Event(record.clone()));
        if let crate::engine::ProactiveOutcome::Sent { trigger, text, .. } = outcome {
            pushed &= self.push(Record::Proactive(ProactiveRecord {
                ts,
                session: record.session,
                trigger: trigger.clone(),
                text: text.clone(),
                channel: record.channel,
                event_type: record.kind,
            }));
        }
        pushed
    }

    /// Logs a satisfaction score (`agent`: who served the conversation last, if anyone).
    pub fn feedback(&self, session: &str, score: u8, comment: Option<&str>, agent: Option<&str>) -> bool {
        self.push(Record::Feedback(FeedbackRecord {
            ts: self.now(),
            session: session.to_string(),
            score,
            comment: comment.map(str::to_string),
            agent: agent.map(str::to_string),
        }))
    }

    /// Opens the current file again at the next batch, from its path (creating it when it
    /// was moved or deleted): after logrotate, on SIGHUP. The flusher also notices a moved
    /// or deleted file by itself within [`LogConfig::check_interval`].
    pub fn reopen(&self) {
        self.stats.reopen.store(true, Ordering::Relaxed);
    }

    /// What the log has done so far.
    pub fn counts(&self) -> LogCounts {
        LogCounts {
            written: self.stats.written.load(Ordering::Relaxed),
            dropped: self.batch.dropped(),
            failed: self.stats.failed.load(Ordering::Relaxed),
        }
    }
}

/// The conversation log writes what the engine reports: one record per turn, agent
/// answer, takeover, release and rating. Tickets are in the turn's record (its trace);
/// a job's message to a conversation is in the session, not the log.
impl crate::engine::Observer for ConversationLog {
    fn observe(&self, event: &crate::engine::Event<'_>) {
        use crate::engine::Event;
        match *event {
            Event::Turn { request, response } => {
                let segment = request.segment().and_then(|s| s.as_str());
                let usage = (response.usage.prompt, response.usage.completion);
                let record = TurnRecord::from_response(response, self.now(), segment, usage, &self.node);
                // The profile and context too, so `kefu replay` can answer the turn again.
                self.push(Record::Turn(record.with_request(request)));
            }
            Event::Takeover { session, agent, taken } => {
                self.takeover(session, agent, taken);
            }
            Event::AgentReply {
                session, agent, text, ..
            } => {
                self.agent_reply(session, agent, text);
            }
            Event::Release {
                session,
                agent,
                ended,
                resumed,
            } => {
                self.release(session, agent, ended, resumed);
            }
            Event::Resolve {
                session,
                ended,
                resolution,
            } => {
                self.resolve(session, ended, resolution);
            }
            Event::Requeue { session, agent } => {
                self.requeue(session, agent);
            }
            Event::Note { session, note } => {
                self.note(session, note);
            }
            Event::Feedback {
                session,
                feedback,
                agent,
                ..
            } => {
                // The agent who served last, whom `kefu report` credits with the rating.
                self.feedback(session, feedback.score, feedback.comment.as_deref(), agent);
            }
            // A job's message is kept in the session; the job queue logs its outcome.
            Event::Ticket { .. } | Event::TurnFailed { .. } | Event::Told { .. } => {}
            Event::CustomerEvent { request, outcome } => {
                self.customer_event(request, outcome);
            }
        }
    }
}

/// Masks personal data in every text and client-chosen id of `record` with the rule
/// set's PII settings.
pub fn mask(rules: &RuleSet, record: &mut Record) {
    let masked = |text: &mut String| {
        if let Cow::Owned(masked) = rules.safety.redact_pii(text) {
            *text = masked;
        }
    };
    record.texts_mut().into_iter().for_each(masked);
    record.ids_mut().into_iter().for_each(masked);
    match record {
        Record::Turn(turn) => {
            for map in [&mut turn.user, &mut turn.context].into_iter().flatten() {
                mask_map(rules, map);
            }
        }
        Record::Event(event) => mask_map(rules, &mut event.data),
        _ => {}
    }
}

/// Masks personal data in the keys and string values of a request's map, at any depth
/// (the depth serde_json allowed when the request was read).
fn mask_map(rules: &RuleSet, map: &mut serde_json::Map<String, serde_json::Value>) {
    let keys_clean = map
        .keys()
        .all(|k| matches!(rules.safety.redact_pii(k), Cow::Borrowed(_)));
    if !keys_clean {
        *map = std::mem::take(map)
            .into_iter()
            .map(|(k, v)| (rules.safety.redact_pii(&k).into_owned(), v))
            .collect();
    }
    map.values_mut().for_each(|v| mask_value(rules, v));
}

fn mask_value(rules: &RuleSet, value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(text) => {
            if let Cow::Owned(masked) = rules.safety.redact_pii(text) {
                *text = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mask_value(rules, v)),
        Value::Object(map) => mask_map(rules, map),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The name of the `seq`-th file of `day`.
pub fn file_name(day: NaiveDate, seq: u32) -> String {
    format!("conversations-{}-{seq:03}.jsonl", day.format("%Y-%m-%d"))
}

struct Open {
    day: NaiveDate,
    seq: u32,
    size: u64,
    out: BufWriter<File>,
    /// The open file's device and inode, to tell whether its path still names it.
    id: (u64, u64),
}

/// Append-only files rotated by day and size (see the module docs).
struct RotatingFile {
    dir: PathBuf,
    max_bytes: u64,
    open: Option<Open>,
    check_interval: Duration,
    checked: Instant,
}

impl RotatingFile {
    fn new(dir: PathBuf, max_bytes: u64, check_interval: Duration) -> Self {
        RotatingFile {
            dir,
            max_bytes,
            open: None,
            check_interval,
            checked: Instant::now(),
        }
    }

    /// Opens the current file again from its path when `now` is asked, or when the check
    /// is due and the path no longer names the open file (moved, deleted, replaced). The
    /// buffer is empty here (every batch ends with a flush), so nothing goes to the old
    /// file after this.
    fn follow_path(&mut self, now: bool) -> std::io::Result<()> {
        let Some(open) = &self.open else { return Ok(()) };
        if !now && self.checked.elapsed() < self.check_interval {
            return Ok(());
        }
        self.checked = Instant::now();
        let (day, seq) = (open.day, open.seq);
        let path = self.dir.join(file_name(day, seq));
        let moved = match std::fs::metadata(&path) {
            Ok(meta) => (meta.dev(), meta.ino()) != open.id,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        if now || moved {
            tracing::info!(file = %path.display(), moved, "conversation log opened again");
            self.switch(day, seq)?;
        }
        Ok(())
    }

    fn append(&mut self, day: NaiveDate, line: &[u8]) -> std::io::Result<()> {
        let len = line.len() as u64;
        let next = match &self.open {
            None => Some(self.resume(day)?),
            Some(open) if open.day != day => Some(self.resume(day)?),
            // An empty file takes the line even when it alone is over the limit.
            Some(open) if open.size > 0 && open.size + len > self.max_bytes => Some(open.seq + 1),
            Some(_) => None,
        };
        if let Some(seq) = next {
            self.switch(day, seq)?;
        }
        let open = self.open.as_mut().expect("a file was opened above");
        if let Err(e) = open.out.write_all(line) {
            // Start again from a fresh handle next time.
            self.open = None;
            return Err(e);
        }
        open.size += len;
        Ok(())
    }

    /// The file of `day` to go on with: its last one while under the limit, else the next.
    fn resume(&self, day: NaiveDate) -> std::io::Result<u32> {
        let prefix = format!("conversations-{}-", day.format("%Y-%m-%d"));
        let mut last: Option<(u32, u64)> = None;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if last.is_none_or(|(s, _)| seq > s) {
                last = Some((seq, entry.metadata()?.len()));
            }
        }
        Ok(match last {
            Some((seq, size)) if size < self.max_bytes => seq,
            Some((seq, _)) => seq + 1,
            None => 0,
        })
    }

    fn switch(&mut self, day: NaiveDate, seq: u32) -> std::io::Result<()> {
        self.flush()?;
        self.open = None;
        let path = self.dir.join(file_name(day, seq));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let meta = file.metadata()?;
        self.open = Some(Open {
            day,
            seq,
            size: meta.len(),
            out: BufWriter::with_capacity(256 * 1024, file),
            id: (meta.dev(), meta.ino()),
        });
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = match &mut self.open {
            Some(open) => open.out.flush(),
            None => Ok(()),
        };
        if result.is_err() {
            self.open = None;
        }
        result
    }
}

/// Of the log `files`, those whose day can hold records of `[since, until)`: the writer's
/// names (`conversations-YYYY-MM-DD-NNN.jsonl`, days in `zone`) with a day of margin each
/// side (a record is written a moment after its turn); a file named otherwise is kept. A
/// period's reader then reads a day's files of a year of logs, not all of them.
pub fn files_between(
    files: &[PathBuf],
    since: DateTime<FixedOffset>,
    until: DateTime<FixedOffset>,
    zone: Tz,
) -> Vec<PathBuf> {
    let (first, last) = (
        since.with_timezone(&zone).date_naive() - chrono::Duration::days(1),
        until.with_timezone(&zone).date_naive() + chrono::Duration::days(1),
    );
    files
        .iter()
        .filter(|path| {
            let day = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("conversations-"))
                .and_then(|n| n.get(..10))
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            day.is_none_or(|day| (first..=last).contains(&day))
        })
        .cloned()
        .collect()
}

/// The log files under `path` (a file, or a directory's `*.jsonl` files) in name order,
/// which is time order for the writer's names.
pub fn log_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}
