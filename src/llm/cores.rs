//! How many threads the model's next decode takes: all it may use when the cores are
//! free, fewer when something else wants them (feature `llama`).
//!
//! # Why
//! llama.cpp's CPU backend (built without OpenMP, its own thread pool) splits each
//! decode's graph over its threads, which meet at a barrier after every operation and
//! spin there rather than sleep: a token of a small model is hundreds of operations of a
//! few microseconds each, and a sleep and a wake-up at each would cost more than the
//! operation. Spinning is what makes llama.cpp fast on free cores, and what makes it
//! collapse on busy ones: when another thread takes the core of one of the model's
//! threads, its partners spin at the next barrier until it comes back, a whole
//! scheduler slice of nothing (2 threads on 2 cores beside two compilers: 1-8
//! tokens/s; sized by this module, 62-128). The OpenMP build kefu used before avoided the
//! collapse by making every thread sleep at every barrier (`OMP_WAIT_POLICY=passive`),
//! which cost half the speed on free cores.
//!
//! So before each decode kefu looks at how many threads of the whole machine are
//! running besides its own inference thread (the kernel's instantaneous count in
//! `/proc/loadavg`: rule-answered turns on kefu's HTTP workers, other processes), and
//! gives the model the cores nobody else is using: on a 2-core machine, two threads when
//! the machine is quiet, one (which never waits at a barrier) as soon as anything else
//! runs. A burst of rule traffic takes the model down to fewer threads within two
//! decodes; the model takes the cores back only after [`CALM_DECODES`] decodes in a row
//! found them free, so that a stream of short requests does not make it flap.
//!
//! Where `/proc/loadavg` cannot be read (not Linux), or with `--fixed-threads`, the
//! model always uses its configured threads.

use std::fs::File;
use std::os::unix::fs::FileExt as _;

/// Decodes in a row that must find the cores free before the model takes more threads.
pub const CALM_DECODES: u32 = 3;

/// Chooses the thread count of each decode.
#[derive(Debug)]
pub struct CoreBudget {
    /// The most threads (`--threads`).
    max: usize,
    /// The machine's cores.
    cores: usize,
    /// The count of the last decode.
    current: usize,
    /// Decodes in a row that found more cores free than `current` uses.
    calm: u32,
    /// Decodes in a row that found fewer.
    busy: u32,
    /// `/proc/loadavg`, kept open; `None`: fixed at `max`.
    loadavg: Option<File>,
}

impl CoreBudget {
    /// A budget of at most `max` threads on a machine of `cores` cores, adapting to the
    /// machine's load when `adaptive` and the load can be read.
    pub fn new(max: usize, cores: usize, adaptive: bool) -> Self {
        let max = max.max(1);
        let loadavg = if adaptive && max > 1 {
            File::open("/proc/loadavg").ok().filter(|f| running_of(f).is_some())
        } else {
            None
        };
        CoreBudget {
            max,
            cores: cores.max(1),
            current: max,
            calm: 0,
            busy: 0,
            loadavg,
        }
    }

    /// Whether the budget follows the machine's load.
    pub fn adaptive(&self) -> bool {
        self.loadavg.is_some()
    }

    /// The threads for the next decode when they differ from the last decode's, from
    /// the machine's load now; `None`: keep them. Called by the inference thread only,
    /// right after a decode (its pool's workers have exited then, so the running count
    /// is this thread plus everything else) and before the decoded tokens go out (the
    /// callers they wake would count as others).
    pub fn for_next_decode(&mut self) -> Option<usize> {
        let running = running_of(self.loadavg.as_ref()?)?;
        let before = self.current;
        let now = self.decide(running.saturating_sub(1));
        (now != before).then_some(now)
    }

    /// The threads for the next decode when `others` threads besides the inference
    /// thread are running. Down when two decodes in a row saw the cores taken (one is
    /// enough when others take every core): a kernel worker or a timer running for a
    /// few microseconds at the moment of one reading is no reason to halve the speed.
    /// Up after [`CALM_DECODES`] calm decodes in a row.
    fn decide(&mut self, others: usize) -> usize {
        let free = self.cores.saturating_sub(others).clamp(1, self.max);
        if free < self.current {
            self.calm = 0;
            self.busy += 1;
            if self.busy >= 2 || others >= self.cores {
                self.current = free;
                self.busy = 0;
            }
        } else if free > self.current {
            self.busy = 0;
            self.calm += 1;
            if self.calm >= CALM_DECODES {
                self.current = free;
                self.calm = 0;
            }
        } else {
            self.calm = 0;
            self.busy = 0;
        }
        self.current
    }
}

/// The number of running threads on the machine: the first half of `/proc/loadavg`'s
/// fourth field (`running/total`), read from offset 0 of the open file.
fn running_of(file: &File) -> Option<usize> {
    let mut buf = [0u8; 128];
    let n = file.read_at(&mut buf, 0).ok()?;
    parse_running(std::str::from_utf8(&buf[..n]).ok()?)
}

/// `0.52 0.58 0.59 3/467 12345` → 3.
fn parse_running(text: &str) -> Option<usize> {
    text.split_ascii_whitespace().nth(3)?.split_once('/')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max: usize, cores: usize) -> CoreBudget {
        CoreBudget {
            max,
            cores,
            current: max,
            calm: 0,
            busy: 0,
            loadavg: None,
        }
    }

    #[test]
    fn reads_the_running_count() {
        assert_eq!(parse_running("0.52 0.58 0.59 3/467 12345\n"), Some(3));
        assert_eq!(parse_running("0.52 0.58 0.59"), None);
        assert_eq!(parse_running("0.52 0.58 0.59 x/467 1"), None);
        if let Ok(f) = File::open("/proc/loadavg") {
            // This test's own thread is running.
            assert!(running_of(&f).is_some_and(|n| n >= 1));
        }
    }

    #[test]
    fn gives_way_when_the_cores_stay_taken_and_takes_them_back_after_calm_decodes() {
        let mut b = budget(2, 2);
        assert_eq!(b.decide(0), 2);
        // Another thread running at one reading only: a blip.
        assert_eq!(b.decide(1), 2);
        assert_eq!(b.decide(0), 2);
        // At two in a row (a rule-answered turn on an HTTP worker): one thread.
        assert_eq!(b.decide(1), 2);
        assert_eq!(b.decide(1), 1);
        assert_eq!(b.decide(3), 1, "never below one");
        // Free again: back to two only after CALM_DECODES calm decodes in a row.
        for _ in 1..CALM_DECODES {
            assert_eq!(b.decide(0), 1);
        }
        assert_eq!(b.decide(0), 2);
        // Others on every core: down at once. A busy decode in between restarts the count.
        assert_eq!(b.decide(2), 1);
        assert_eq!(b.decide(0), 1);
        assert_eq!(b.decide(1), 1);
        for _ in 1..CALM_DECODES {
            assert_eq!(b.decide(0), 1);
        }
        assert_eq!(b.decide(0), 2);
    }

    #[test]
    fn uses_only_the_cores_others_leave_and_at_most_its_maximum() {
        // 4 threads allowed on 8 cores: others on 3 cores leave 5, so still 4.
        let mut b = budget(4, 8);
        assert_eq!(b.decide(3), 4);
        assert_eq!(b.decide(6), 4);
        assert_eq!(b.decide(6), 2);
        for _ in 0..CALM_DECODES {
            b.decide(5);
        }
        assert_eq!(b.current, 3);
    }

    #[test]
    fn one_thread_or_no_load_reading_is_fixed() {
        let mut b = CoreBudget::new(1, 2, true);
        assert!(!b.adaptive());
        assert_eq!(b.for_next_decode(), None);
        let mut b = CoreBudget::new(2, 2, false);
        assert!(!b.adaptive());
        assert_eq!(b.for_next_decode(), None);
    }
}
