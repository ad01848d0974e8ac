//! The process's own figures for `/metrics`, under the names every Prometheus client
//! library uses (`process_resident_memory_bytes`, `process_open_fds`...), so stock
//! dashboards and alerts work: read from `/proc/self` when `/metrics` is scraped (a few
//! small files and one directory listing), never counted on the turn path.
//!
//! Linux only: elsewhere the files are missing and the figures are left out.

use std::time::{SystemTime, UNIX_EPOCH};

/// One reading of the process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessFigures {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors (sockets included).
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Threads.
    pub threads: u64,
}

/// The figures now, `None` where `/proc` cannot be read (not Linux).
pub fn read() -> Option<ProcessFigures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let stat = StatFields::parse(&stat)?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut pages = statm.split_ascii_whitespace().map(|n| n.parse::<u64>().unwrap_or(0));
    let (size, resident) = (pages.next().unwrap_or(0), pages.next().unwrap_or(0));
    let page = rustix::param::page_size() as u64;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    Some(ProcessFigures {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks_per_second(),
        resident_bytes: resident * page,
        virtual_bytes: size * page,
        // The listing itself holds a descriptor while it is read; not counted.
        open_fds: open_fds.saturating_sub(1),
        max_fds: super::conns::fd_soft_limit(),
        threads: stat.threads,
    })
}

/// When the process started, in seconds since the Unix epoch (the machine's boot time plus
/// the process's start in clock ticks after it); `None` where `/proc` cannot be read.
pub fn start_time() -> Option<f64> {
    let stat = StatFields::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime as f64 + stat.start_ticks as f64 / ticks_per_second())
}

/// Now, in seconds since the Unix epoch: the start time where `/proc` cannot say.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, PartialEq)]
struct StatFields {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
}

impl StatFields {
    /// Parses `/proc/PID/stat`: the command name (field 2) is in parentheses and may hold
    /// spaces and parentheses itself, so fields are counted from the last `)`.
    fn parse(text: &str) -> Option<StatFields> {
        let (_, rest) = text.rsplit_once(')')?;
        // `rest` starts at field 3 (the state): field N is at index N - 3.
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        Some(StatFields {
            utime: field(14)?,
            stime: field(15)?,
            threads: field(20)?,
            start_ticks: field(22)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_end_of_the_command_name() {
        let line = "4242 (kefu (a) b) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 \
                    123456 104857600 2560 18446744073709551615";
        assert_eq!(
            StatFields::parse(line),
            Some(StatFields {
                utime: 250,
                stime: 75,
                threads: 9,
                start_ticks: 123456,
            })
        );
        assert_eq!(StatFields::parse("4242 (kefu) S 1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_memory_descriptors_and_a_start() {
        let figures = read().expect("/proc is readable on Linux");
        assert!(figures.resident_bytes > 0, "{figures:?}");
        assert!(figures.virtual_bytes >= figures.resident_bytes, "{figures:?}");
        assert!(figures.open_fds >= 1, "{figures:?}");
        assert!(figures.threads >= 1, "{figures:?}");
        let start = start_time().expect("a start time");
        assert!(start > 1.0e9 && start <= now_seconds() + 1.0, "{start}");
    }
}
