//! A mutation fuzzer of rule directories: the demo shop's files (`rules/*.kefu`, the data,
//! word-list and knowledge-base files) mutated the ways a careless or hostile editor would
//! (bytes and characters inserted, deleted and repeated, lines spliced between files,
//! multibyte characters, deep nesting, unbalanced braces, backticks and quotes, huge
//! numbers, long lines), each mutant loaded through the whole `load_dir` path on a 2 MiB
//! thread, the stack a reload runs on.
//!
//! A case fails when loading panics, takes longer than [`HANG`] (a hang detector, not a
//! speed test: the bound is generous), or reports a diagnostic whose first line is not
//! `path:line:col: error|warning: message` with a span inside its file. The failure names
//! the seed and shows the mutant. Cases are deterministic by seed.
//!
//! `cargo test --test fuzz_rules` runs a short budget. The long one:
//!
//! ```text
//! KEFU_FUZZ_CASES=100000 cargo test --release --no-default-features --test fuzz_rules -- --ignored
//! ```
//!
//! `KEFU_FUZZ_SEED` sets the first seed (default: the clock, printed); a failure's seed with
//! `KEFU_FUZZ_CASES=1` replays just that case. A stack overflow aborts the process before
//! anything can be printed, so the case being run is also written to
//! `target/tmp/fuzz_rules_last_case.txt` first.

mod support;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kefu::dsl::{Compiled, LoadOptions};

/// A case that takes longer than this is reported as a hang.
const HANG: Duration = Duration::from_secs(10);

/// Cases the short budget runs (in `make test`).
const SHORT_CASES: u64 = 100;

/// The short budget's first seed; fixed, so that `make test` is the same every time.
const SHORT_SEED: u64 = 0x6b65_6675;

#[test]
fn mutated_demo_rules_never_panic_hang_or_lose_their_location() {
    Fuzzer::new().run(SHORT_SEED, SHORT_CASES);
}

#[test]
#[ignore = "the long budget: KEFU_FUZZ_CASES (default 20000), KEFU_FUZZ_SEED"]
fn mutated_demo_rules_long_budget() {
    let cases = env_u64("KEFU_FUZZ_CASES").unwrap_or(20_000);
    let seed = env_u64("KEFU_FUZZ_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        now.as_nanos() as u64
    });
    eprintln!("fuzz_rules: {cases} cases from seed {seed}");
    Fuzzer::new().run(seed, cases);
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// SplitMix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Characters and fragments that matter to the grammar, the templates and the scripts.
const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "\"",
    "\"\"\"",
    "`",
    "\\",
    "#",
    "/",
    "\n",
    "\r\n",
    ",",
    "=",
    "=>",
    "[",
    "]",
    "(",
    ")",
    ".",
    "*",
    "{{",
    "}}",
    "规",
    "客",
    "𝐀",
    "\u{3000}",
    "\u{FEFF}",
    "“",
    "”",
    "，",
    "；",
    "é",
    "\u{200B}",
    "\t",
    "rule ",
    "flow ",
    "entity ",
    "if ",
    "else ",
    "goto ",
    "ask ",
    "#{",
    "${",
    "-",
    "0",
    "99999999999999999999999",
    "-9223372036854775809",
    "1e309",
    "NaN",
    "2026-13-45",
    "25:61",
    "0ms",
    "999999999999h",
    "/[/",
    "/(/i",
];

/// Item keywords written at the start of a line, where recovery restarts.
const ITEM_STARTS: &[&str] = &[
    "rule 甲 {\n",
    "flow 乙 {\n",
    "entity 丙 = ",
    "source 丁 = file \"",
    "shop \"",
    "safety {\n",
    "intent 戊.",
    "}\n",
];

struct Fuzzer {
    /// The demo shop's files: path relative to the rules directory, text.
    seeds: Vec<(PathBuf, String)>,
    /// The mutants' directory, holding a copy of the demo shop.
    dir: tempfile::TempDir,
    /// Where the case being run is written before it runs.
    last_case: PathBuf,
}

impl Fuzzer {
    fn new() -> Self {
        let root = support::root().join("rules");
        let mut seeds = Vec::new();
        for sub in ["", "data", "kb", "safety"] {
            let dir = root.join(sub);
            let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect();
            paths.sort();
            for path in paths {
                let text = std::fs::read_to_string(&path).unwrap();
                seeds.push((path.strip_prefix(&root).unwrap().to_path_buf(), text));
            }
        }
        assert!(
            seeds
                .iter()
                .filter(|(p, _)| p.extension().is_some_and(|e| e == "kefu"))
                .count()
                >= 5
        );
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in &seeds {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        let last_case = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz_rules_last_case.txt");
        Fuzzer { seeds, dir, last_case }
    }

    fn run(&self, first_seed: u64, cases: u64) {
        let started = Instant::now();
        for seed in first_seed..first_seed.wrapping_add(cases) {
            let (path, mutant) = self.mutant(seed);
            let full = self.dir.path().join(&path);
            let _ = std::fs::write(
                &self.last_case,
                [format!("seed {seed}, file {}\n", path.display()).as_bytes(), &mutant].concat(),
            );
            std::fs::write(&full, &mutant).unwrap();
            let outcome = load_within(self.dir.path(), HANG);
            let original = &self.seeds.iter().find(|(p, _)| *p == path).unwrap().1;
            std::fs::write(&full, original).unwrap();
            let problem = match outcome {
                Outcome::Hang => Some(format!("still loading after {HANG:?}")),
                Outcome::Panic(message) => Some(format!("panicked: {message}")),
                Outcome::Done(_, took) if took > HANG => Some(format!("took {took:?}")),
                Outcome::Done(compiled, _) => unlocated(&compiled),
            };
            if let Some(problem) = problem {
                panic!(
                    "fuzz case seed {seed} ({problem}); replay with KEFU_FUZZ_SEED={seed} KEFU_FUZZ_CASES=1 \
                     cargo test --test fuzz_rules -- --ignored\nmutated file {}:\n{}",
                    path.display(),
                    String::from_utf8_lossy(&mutant)
                );
            }
        }
        eprintln!("fuzz_rules: {cases} cases in {:.1?}", started.elapsed());
    }

    /// One mutant of one demo file, deterministic by seed.
    fn mutant(&self, seed: u64) -> (PathBuf, Vec<u8>) {
        let mut rng = Rng(seed);
        // Rule files are where the parser and lowering are; they get three picks in four.
        let kefu: Vec<&(PathBuf, String)> = self
            .seeds
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "kefu"))
            .collect();
        let (path, text) = if rng.below(4) < 3 {
            *rng.pick(&kefu)
        } else {
            rng.pick(&self.seeds)
        };
        let mut bytes = text.as_bytes().to_vec();
        for _ in 0..1 + rng.below(3) {
            self.mutate(&mut rng, &mut bytes);
        }
        (path.clone(), bytes)
    }

    fn mutate(&self, rng: &mut Rng, bytes: &mut Vec<u8>) {
        let at = char_floor(bytes, rng.below(bytes.len() + 1));
        let len = 1 + rng.below(64.min(bytes.len().max(1)));
        let end = char_floor(bytes, (at + len).min(bytes.len()));
        match rng.below(14) {
            // A raw byte anywhere: may split a character (the file is then not UTF-8).
            0 => {
                let raw = rng.below(bytes.len() + 1);
                bytes.insert(raw, rng.next() as u8);
            }
            1 => {
                let raw = rng.below(bytes.len().max(1));
                if raw < bytes.len() {
                    bytes.remove(raw);
                }
            }
            2 | 3 => insert(bytes, at, rng.pick(FRAGMENTS).as_bytes()),
            4 => {
                bytes.drain(at..end);
            }
            5 => {
                let span = bytes[at..end].to_vec();
                let most = if rng.below(8) == 0 { 2000 } else { 3 };
                let times = 1 + rng.below(most);
                insert(bytes, end, &span.repeat(times));
            }
            6 => {
                // A line from another file, spliced in at a line start.
                let (_, other) = rng.pick(&self.seeds);
                let lines: Vec<&str> = other.split_inclusive('\n').collect();
                let line = rng.pick(&lines);
                insert(bytes, line_start(bytes, at), line.as_bytes());
            }
            7 => insert(bytes, line_start(bytes, at), rng.pick(ITEM_STARTS).as_bytes()),
            8 => {
                let depth = 1 + rng.below(200);
                let (open, close) = *rng.pick(&[
                    ("if `true` {\n", "}\n"),
                    ("else if `true` {", "}"),
                    ("(", ")"),
                    ("[", "]"),
                    ("{ ", "} "),
                    ("#{a: ", "}"),
                    ("- ", ""),
                    ("  ", ""),
                ]);
                let nested = [open.repeat(depth), close.repeat(depth)].concat();
                insert(bytes, at, nested.as_bytes());
            }
            9 => {
                // Only the opening half: unbalanced.
                let depth = 1 + rng.below(100);
                let open = *rng.pick(&["{", "`", "\"", "(", "[", "if `x` {"]);
                insert(bytes, at, open.repeat(depth).as_bytes());
            }
            10 => {
                let count = 1 + rng.below(400);
                let digits: String = (0..count).map(|_| char::from(b'0' + rng.below(10) as u8)).collect();
                insert(bytes, at, digits.as_bytes());
            }
            11 => {
                let unit = *rng.pick(&["啊", "a", " ", "{x}", "\\n", "#"]);
                let long = unit.repeat(1 + rng.below(20_000));
                insert(bytes, at, long.as_bytes());
            }
            12 => bytes.truncate(at),
            _ => {
                // A multibyte character at a character boundary, or the file's start.
                let c = rng.pick(&["规", "客", "𝐀", "\u{3000}", "“", "é", "\u{FEFF}"]);
                let where_ = if rng.below(4) == 0 { 0 } else { at };
                insert(bytes, where_, c.as_bytes());
            }
        }
    }
}

fn insert(bytes: &mut Vec<u8>, at: usize, what: &[u8]) {
    bytes.splice(at..at, what.iter().copied());
}

/// `at`, moved back to the start of the character it is in (when the bytes are UTF-8).
fn char_floor(bytes: &[u8], mut at: usize) -> usize {
    at = at.min(bytes.len());
    while at > 0 && at < bytes.len() && (bytes[at] & 0xC0) == 0x80 {
        at -= 1;
    }
    at
}

/// The start of the line `at` is on.
fn line_start(bytes: &[u8], at: usize) -> usize {
    bytes[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

enum Outcome {
    Done(Box<Compiled>, Duration),
    Panic(String),
    Hang,
}

/// Loads `dir` on a 2 MiB thread; gives up waiting after `limit` (the thread is left
/// behind, which is fine for a test that is about to fail).
fn load_within(dir: &Path, limit: Duration) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let started = Instant::now();
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                kefu::dsl::load_dir_with(
                    &dir,
                    LoadOptions {
                        quick_training: true,
                        ..Default::default()
                    },
                )
            }));
            let outcome = match result {
                Ok(compiled) => Outcome::Done(Box::new(compiled), started.elapsed()),
                Err(payload) => Outcome::Panic(
                    payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default(),
                ),
            };
            let _ = tx.send(outcome);
        })
        .unwrap();
    rx.recv_timeout(limit).unwrap_or(Outcome::Hang)
}

/// The first diagnostic that does not say where it is, if any: its first line must be
/// `path:line:col: error|warning: message`, its span inside its file and on character
/// boundaries, and a rule set must exist exactly when there is no error.
fn unlocated(compiled: &Compiled) -> Option<String> {
    let report = &compiled.report;
    if compiled.rules.is_some() == report.has_errors() {
        return Some("a rule set was built with errors, or not built without any".into());
    }
    for (n, d) in report.diagnostics.iter().enumerate() {
        let file = report.sources.file(d.primary.span.file);
        let span = d.primary.span;
        let inside = span.start <= span.end
            && span.end <= file.text.len()
            && file.text.is_char_boundary(span.start)
            && file.text.is_char_boundary(span.end);
        if !inside {
            return Some(format!("diagnostic {span:?} outside its file: {}", d.message));
        }
        // Only so many are ever rendered (`render_all`).
        if n >= kefu::diag::MAX_RENDERED {
            continue;
        }
        let rendered = report.render(d, false);
        let first = rendered.lines().next().unwrap_or("");
        if !has_location(first, &file.path) {
            return Some(format!(
                "diagnostic without a good location (span {span:?}):\n{rendered}"
            ));
        }
    }
    None
}

fn has_location(line: &str, path: &Path) -> bool {
    let Some(rest) = line.strip_prefix(path.to_string_lossy().as_ref()) else {
        return false;
    };
    let mut parts = rest.splitn(4, ':');
    let (Some(""), Some(l), Some(c), Some(tail)) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s != "0";
    number(l) && number(c) && (tail.starts_with(" error: ") || tail.starts_with(" warning: "))
}
