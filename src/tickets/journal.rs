//! The local outbox: one append-only file, `tickets.jsonl`, in the state directory.
//!
//! Each line is one JSON record, written and fsynced before the call that wrote it returns:
//!
//! - `{"op":"seq","upto":N}`: ticket numbers up to `N` may have been handed out. Numbers
//!   are reserved 64 at a time, so a restart skips at most 63 and never repeats one.
//! - `{"op":"ticket","ticket":{...}}`: a ticket to deliver (written before the customer is
//!   told it was submitted).
//! - `{"op":"done","id":"T..."}`: it was delivered (or refused for good).
//!
//! Opening replays the file: tickets without a `done` are pending again. A line that does
//! not parse (the torn last line of a crash mid-write) is skipped and counted, never fatal.
//! Then the file is compacted: the highest reservation and the pending tickets are written
//! to a new file that is fsynced and renamed over the old one, so a torn fragment never has
//! a new line appended to it. It is compacted again when done markers pile up.
//!
//! A lock file keeps a second process off the same directory: two deliverers compacting
//! one journal would lose each other's lines.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Ticket;
use super::outbox::{Outbox, OutboxError, Taken};

/// Numbers reserved by one `seq` line.
const RESERVE: u64 = 64;
/// Compact when the file has this many lines more than it needs (fewer in unit tests, where
/// thousands of fsyncs would take seconds).
const COMPACT_SLACK: u64 = if cfg!(test) { 64 } else { 4096 };

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Line {
    Seq { upto: u64 },
    Ticket { ticket: Ticket },
    Done { id: String },
}

/// What opening the journal found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Tickets still to deliver from before the restart.
    pub replayed: usize,
    /// Lines that did not parse (a torn write) and were skipped.
    pub skipped: usize,
}

struct Entry {
    ticket: Ticket,
    taken_at: Option<Instant>,
    /// Handed out before, by this process or the one before the restart.
    handed_out: bool,
}

struct Inner {
    /// `None` for an in-memory journal.
    file: Option<File>,
    /// Lines in the file now.
    lines: u64,
    /// The next number to hand out.
    next: u64,
    /// Numbers up to this one are reserved by a `seq` line.
    reserved: u64,
    /// Pending tickets, oldest first.
    pending: Vec<Entry>,
    /// A write failed part-way: the file may end in a fragment; rewrite it before appending.
    torn: bool,
}

/// Tickets and numbers in an append-only file (see the module docs).
pub struct Journal {
    /// The state directory; `None` for an in-memory journal.
    dir: Option<PathBuf>,
    path: PathBuf,
    visibility: Duration,
    inner: Mutex<Inner>,
    ready: Condvar,
    stats: JournalStats,
    /// Held for the journal's life: the directory's lock.
    _lock: Option<File>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError {
    let path = path.to_path_buf();
    move |source| OutboxError::Io { what, path, source }
}

impl Journal {
    /// Opens (creating) the journal in `dir`, replays and compacts it. A ticket handed out
    /// and not done within `visibility` is handed out again.
    pub fn open(dir: &Path, visibility: Duration) -> Result<Self, OutboxError> {
        std::fs::create_dir_all(dir).map_err(io("cannot create the state directory", dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("cannot open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OutboxError::Locked(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => return Err(io("cannot lock", &lock_path)(e)),
        }
        let path = dir.join("tickets.jsonl");
        let (pending, upto, stats) = replay(&path)?;
        let next = upto + 1;
        let pending: Vec<Entry> = pending
            .into_iter()
            .map(|ticket| Entry {
                ticket,
                taken_at: None,
                handed_out: true,
            })
            .collect();
        let file = compact(dir, &path, upto, &pending)?;
        let lines = 1 + pending.len() as u64;
        Ok(Journal {
            dir: Some(dir.to_path_buf()),
            path,
            visibility,
            inner: Mutex::new(Inner {
                file: Some(file),
                lines,
                next,
                reserved: upto,
                pending,
                torn: false,
            }),
            ready: Condvar::new(),
            stats,
            _lock: Some(lock),
        })
    }

    /// A journal that keeps nothing on disk: numbers and pending tickets die with the
    /// process. For embedding and tests that run without a state directory.
    pub fn in_memory(visibility: Duration) -> Self {
        Journal {
            dir: None,
            path: PathBuf::new(),
            visibility,
            inner: Mutex::new(Inner {
                file: None,
                lines: 0,
                next: 1,
                reserved: u64::MAX,
                pending: Vec::new(),
                torn: false,
            }),
            ready: Condvar::new(),
            stats: JournalStats::default(),
            _lock: None,
        }
    }

    /// What opening found: tickets replayed, lines skipped.
    pub fn stats(&self) -> JournalStats {
        self.stats
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one line and fsyncs it; rewrites the file first when an earlier write failed.
    fn append(&self, inner: &mut Inner, line: &Line) -> Result<(), OutboxError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if inner.torn {
            inner.file = Some(compact(dir, &self.path, inner.reserved, &inner.pending)?);
            inner.lines = 1 + inner.pending.len() as u64;
            inner.torn = false;
        }
        let mut text = serde_json::to_vec(line).expect("a journal line always serializes");
        text.push(b'\n');
        let file = inner.file.as_mut().expect("a journal with a directory has a file");
        let written = file.write_all(&text).and_then(|()| file.sync_data());
        if let Err(e) = written {
            inner.torn = true;
            return Err(io("cannot append to", &self.path)(e));
        }
        inner.lines += 1;
        Ok(())
    }
}

/// Reads the journal: pending tickets (oldest first), the highest reservation, and counts.
fn replay(path: &Path) -> Result<(Vec<Ticket>, u64, JournalStats), OutboxError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0, JournalStats::default())),
        Err(e) => return Err(io("cannot read", path)(e)),
    };
    let mut pending: Vec<Ticket> = Vec::new();
    let mut upto = 0;
    let mut skipped = 0;
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(io("cannot read", path))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Line>(&line) {
            Ok(Line::Seq { upto: u }) => upto = upto.max(u),
            Ok(Line::Ticket { ticket }) => {
                // A number inside the id also counts, should its reservation line be lost.
                upto = upto.max(number_of(&ticket.id));
                if !pending.iter().any(|t| t.id == ticket.id) {
                    pending.push(ticket);
                }
            }
            Ok(Line::Done { id }) => pending.retain(|t| t.id != id),
            Err(error) => {
                skipped += 1;
                tracing::warn!(journal = %path.display(), line = n + 1, %error, "unreadable journal line skipped");
            }
        }
    }
    let stats = JournalStats {
        replayed: pending.len(),
        skipped,
    };
    Ok((pending, upto, stats))
}

/// The sequence number of `T20261205-000042` (42); 0 when there is none.
fn number_of(id: &str) -> u64 {
    id.rsplit_once('-').and_then(|(_, n)| n.parse().ok()).unwrap_or(0)
}

/// Writes the reservation and the pending tickets to a new file, fsyncs it, renames it over
/// the journal and fsyncs the directory; the new file, open for appending.
fn compact(dir: &Path, path: &Path, upto: u64, pending: &[Entry]) -> Result<File, OutboxError> {
    let temp = path.with_extension("jsonl.new");
    let mut text = serde_json::to_vec(&Line::Seq { upto }).expect("a journal line always serializes");
    text.push(b'\n');
    for entry in pending {
        let line = Line::Ticket {
            ticket: entry.ticket.clone(),
        };
        serde_json::to_writer(&mut text, &line).expect("a journal line always serializes");
        text.push(b'\n');
    }
    let mut file = File::create(&temp).map_err(io("cannot create", &temp))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(io("cannot write", &temp))?;
    std::fs::rename(&temp, path).map_err(io("cannot replace", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot sync", dir))?;
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io("cannot open", path))
}

impl Outbox for Journal {
    fn next_number(&self) -> Result<u64, OutboxError> {
        let mut inner = self.lock();
        if inner.next > inner.reserved {
            let upto = inner.next + RESERVE - 1;
            self.append(&mut inner, &Line::Seq { upto })?;
            inner.reserved = upto;
        }
        let n = inner.next;
        inner.next += 1;
        Ok(n)
    }

    fn push(&self, ticket: &Ticket) -> Result<(), OutboxError> {
        let mut inner = self.lock();
        self.append(&mut inner, &Line::Ticket { ticket: ticket.clone() })?;
        inner.pending.push(Entry {
            ticket: ticket.clone(),
            taken_at: None,
            handed_out: false,
        });
        drop(inner);
        self.ready.notify_one();
        Ok(())
    }

    fn take(&self, max: usize, wait: Duration) -> Result<Vec<Taken>, OutboxError> {
        let due = |inner: &mut Inner| {
            let now = Instant::now();
            let mut out = Vec::new();
            for entry in &mut inner.pending {
                if out.len() >= max {
                    break;
                }
                if entry
                    .taken_at
                    .is_some_and(|at| now.duration_since(at) < self.visibility)
                {
                    continue;
                }
                out.push(Taken {
                    ticket: entry.ticket.clone(),
                    key: entry.ticket.id.clone(),
                    redelivery: entry.handed_out,
                });
                entry.taken_at = Some(now);
                entry.handed_out = true;
            }
            out
        };
        let mut inner = self.lock();
        let out = due(&mut inner);
        if !out.is_empty() || max == 0 {
            return Ok(out);
        }
        let (mut inner, _) = self.ready.wait_timeout(inner, wait).unwrap_or_else(|e| e.into_inner());
        Ok(due(&mut inner))
    }

    fn done(&self, taken: &Taken) -> Result<(), OutboxError> {
        let mut inner = self.lock();
        let Some(at) = inner.pending.iter().position(|e| e.ticket.id == taken.key) else {
            // Done already (a redelivery raced its original): nothing to record.
            return Ok(());
        };
        self.append(&mut inner, &Line::Done { id: taken.key.clone() })?;
        inner.pending.remove(at);
        let needed = 1 + inner.pending.len() as u64;
        if let Some(dir) = self.dir.as_deref().filter(|_| inner.lines > needed + COMPACT_SLACK) {
            match compact(dir, &self.path, inner.reserved, &inner.pending) {
                Ok(file) => {
                    inner.file = Some(file);
                    inner.lines = needed;
                }
                // The old file is still whole and open: keep appending to it.
                Err(error) => tracing::warn!(%error, "journal compaction failed"),
            }
        }
        Ok(())
    }

    fn pending(&self) -> u64 {
        self.lock().pending.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(id: &str) -> Ticket {
        Ticket {
            id: id.into(),
            kind: "return".into(),
            reference: "202611010001".into(),
            session_id: "s1".into(),
            created_at: 1,
            status: "open".into(),
            details: Default::default(),
        }
    }

    #[test]
    fn numbers_never_repeat_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let journal = Journal::open(dir.path(), Duration::from_secs(60)).unwrap();
            for _ in 0..70 {
                seen.push(journal.next_number().unwrap());
            }
        }
        let mut unique = seen.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seen.len());
        assert_eq!(seen[0], 1);
    }

    #[test]
    fn a_second_process_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Journal::open(dir.path(), Duration::from_secs(60)).unwrap();
        assert!(matches!(
            Journal::open(dir.path(), Duration::from_secs(60)),
            Err(OutboxError::Locked(_))
        ));
    }

    #[test]
    fn pending_tickets_are_replayed_and_done_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path(), Duration::from_secs(60)).unwrap();
            journal.push(&ticket("T20261205-000001")).unwrap();
            journal.push(&ticket("T20261205-000002")).unwrap();
            let taken = journal.take(1, Duration::ZERO).unwrap();
            assert!(!taken[0].redelivery);
            journal.done(&taken[0]).unwrap();
        }
        let journal = Journal::open(dir.path(), Duration::from_secs(60)).unwrap();
        assert_eq!(
            journal.stats(),
            JournalStats {
                replayed: 1,
                skipped: 0
            }
        );
        let taken = journal.take(10, Duration::ZERO).unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].ticket.id, "T20261205-000002");
        assert!(taken[0].redelivery, "handed out again after a restart");
        // Numbers go on above the replayed tickets'.
        assert!(journal.next_number().unwrap() > 2);
    }

    #[test]
    fn a_ticket_not_done_within_the_visibility_timeout_is_handed_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), Duration::ZERO).unwrap();
        journal.push(&ticket("T20261205-000001")).unwrap();
        let first = journal.take(5, Duration::ZERO).unwrap();
        let second = journal.take(5, Duration::ZERO).unwrap();
        assert_eq!((first.len(), second.len()), (1, 1));
        assert!(!first[0].redelivery && second[0].redelivery);
        journal.done(&second[0]).unwrap();
        journal.done(&first[0]).unwrap();
        assert_eq!(journal.pending(), 0);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path(), Duration::from_secs(60)).unwrap();
            journal.push(&ticket("T20261205-000001")).unwrap();
        }
        let path = dir.path().join("tickets.jsonl");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"op\":\"ticket\",\"ticket\":{\"id\":\"T2026")
            .unwrap();
        drop(file);
        let journal = Journal::open(dir.path(), Duration::from_secs(60)).unwrap();
        assert_eq!(
            journal.stats(),
            JournalStats {
                replayed: 1,
                skipped: 1
            }
        );
        // The fragment is gone: what is appended now reads back whole.
        journal.push(&ticket("T20261205-000002")).unwrap();
        drop(journal);
        let journal = Journal::open(dir.path(), Duration::from_secs(60)).unwrap();
        assert_eq!(
            journal.stats(),
            JournalStats {
                replayed: 2,
                skipped: 0
            }
        );
    }

    #[test]
    fn done_markers_are_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), Duration::from_secs(60)).unwrap();
        for n in 0..(COMPACT_SLACK / 2 + 10) {
            journal.push(&ticket(&format!("T20261205-{n:06}"))).unwrap();
            let taken = journal.take(1, Duration::ZERO).unwrap();
            journal.done(&taken[0]).unwrap();
        }
        let lines = std::fs::read_to_string(journal.path()).unwrap().lines().count() as u64;
        assert!(lines < COMPACT_SLACK / 2, "{lines} lines left");
    }
}
