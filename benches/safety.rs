//! Safety filter throughput: a 60,000-word list over about 1 MB of Chinese text, every
//! fold on, against a plain `aho-corasick` leftmost-longest scan of the same text with the
//! same words and no normalization; plus the time to build the 60,000-word filter.
//!
//! Run with `cargo bench --bench safety`. Before criterion's own report, a short summary
//! prints the medians in MB/s and the ratio, so the figures can be quoted as they are.
//! The data is generated from a fixed seed: every run measures the same thing.
//!
//! `safety_demo` checks the 1,244 customer messages of the false-refusal set
//! (`tests/data/safety/false_refusals_*.txt`) with the demo shop's lists (political
//! `segmented`, competitors `on replies`, profanity masked), and with the same lists
//! unsegmented: what segmentation costs a message. The summary also prints how long the
//! segmenter's dictionary takes to load (once per process).
//!
//! `pii_adversarial` times the personal-data search alone on messages written to make it
//! slow (digits between separators, long digit runs, `@` runs, repeated districts), at
//! two sizes each: the time should grow with the length, not faster
//! (`cargo bench --bench safety -- pii_adversarial`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use aho_corasick::{AhoCorasick, MatchKind};
use criterion::{Criterion, Throughput};
use kefu::safety::{Applies, ListAction, PiiKind, Safety, SafetyConfig, WordList, pii};

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The benchmark's words and text.
struct Data {
    words: Vec<String>,
    text: String,
}

fn data() -> Data {
    let mut rng = Rng(20_261_111);
    // 3,500 distinct characters from the CJK block stand in for the common-character list.
    let mut common: Vec<char> = Vec::with_capacity(3500);
    while common.len() < 3500 {
        let c = char::from_u32(0x4E00 + rng.below(0x9FA5 - 0x4E00) as u32).unwrap();
        if !common.contains(&c) {
            common.push(c);
        }
    }
    let ascii = |rng: &mut Rng| -> String {
        (0..3 + rng.below(6))
            .map(|_| (b'a' + rng.below(26) as u8) as char)
            .collect()
    };
    let mut words = Vec::with_capacity(60_000);
    while words.len() < 60_000 {
        if rng.below(50) == 0 {
            words.push(ascii(&mut rng));
        } else {
            let n = 2 + rng.below(3);
            words.push((0..n).map(|_| common[rng.below(common.len())]).collect());
        }
    }
    // Text: characters follow Zipf's law (the k-th most frequent has weight 1/k), as
    // Chinese character frequencies roughly do; clause punctuation, some English, a phone
    // number now and then, and listed words, some disguised.
    let mut cumulative = Vec::with_capacity(common.len());
    let mut total = 0.0;
    for k in 1..=common.len() {
        total += 1.0 / k as f64;
        cumulative.push(total);
    }
    let mut text = String::with_capacity(1 << 20);
    while text.len() < 1 << 20 {
        let x = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        text.push(common[cumulative.partition_point(|&c| c < x).min(common.len() - 1)]);
        match rng.below(400) {
            0..=24 => text.push('，'),
            25..=30 => text.push('。'),
            31 => {
                text.push(' ');
                text.push_str(&ascii(&mut rng));
                text.push(' ');
            }
            32 => text.push_str("13812345678"),
            33 | 34 => text.push_str(&words[rng.below(words.len())]),
            35 => {
                // A listed word with a symbol between its characters.
                let w = &words[rng.below(words.len())];
                let spaced: Vec<String> = w.chars().map(String::from).collect();
                text.push_str(&spaced.join("*"));
            }
            _ => {}
        }
    }
    Data { words, text }
}

fn config(words: &[String]) -> SafetyConfig {
    SafetyConfig {
        lists: vec![WordList {
            category: "bench".into(),
            action: ListAction::Block { reply: "no".into() },
            words: words.to_vec(),
            without: vec![],
            on: Applies::Both,
            segmented: false,
        }],
        allow: vec![],
        pii: PiiKind::ALL.to_vec(),
        order_number: None,
    }
}

/// This thread's time on a CPU so far (Linux), or `None` elsewhere.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Median wall time and mean on-CPU time of `runs` runs. On a machine shared with other
/// work, wall time also counts waiting for a core; on-CPU time does not. The kernel
/// counts CPU time in scheduler ticks, too coarse for one run, so it is averaged.
fn median(mut f: impl FnMut(), runs: usize) -> (Duration, Duration) {
    let mut wall = Vec::with_capacity(runs);
    let cpu_start = cpu_time();
    for _ in 0..runs {
        let t = Instant::now();
        f();
        wall.push(t.elapsed());
    }
    wall.sort();
    let median = wall[runs / 2];
    let cpu = cpu_time()
        .zip(cpu_start)
        .map_or(median, |(end, start)| (end - start) / runs as u32);
    (median, cpu)
}

/// Non-empty lines of a file, `#` comments and lines starting with `# ` left out.
fn lines(path: &str, comments: bool) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| if comments { l.split('#').next().unwrap_or("") } else { l })
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("# "))
        .map(str::to_string)
        .collect()
}

/// The demo shop's lists (rules/safety.kefu), with or without segmentation.
fn demo_config(segmented: bool) -> SafetyConfig {
    let list = |category: &str, action: ListAction, file: &str, on: Applies, segmented: bool| WordList {
        category: category.into(),
        action,
        words: lines(&format!("rules/safety/{file}"), true),
        without: vec![],
        on,
        segmented,
    };
    SafetyConfig {
        lists: vec![
            list(
                "政治",
                ListAction::Block { reply: "no".into() },
                "political.txt",
                Applies::Both,
                segmented,
            ),
            list(
                "竞品",
                ListAction::Block { reply: "no".into() },
                "competitors.txt",
                Applies::Replies,
                false,
            ),
            list("脏话", ListAction::Mask, "profanity.txt", Applies::Both, false),
        ],
        allow: [
            "共产党员服务站",
            "北京东",
            "南京东",
            "京东方",
            "京东快递",
            "京东物流",
            "京东e卡",
        ]
        .map(String::from)
        .to_vec(),
        pii: PiiKind::ALL.to_vec(),
        order_number: None,
    }
}

/// The false-refusal set: realistic customer messages.
fn demo_messages() -> Vec<String> {
    let mut messages = lines("tests/data/safety/false_refusals_hand.txt", false);
    messages.extend(lines("tests/data/safety/false_refusals_generated.txt", false));
    messages
}

/// What the segmenter costs: loading its dictionary, and a message checked by the demo
/// shop's lists with and without segmentation.
fn segment_summary() {
    // Fold tables first, so that the second build times only the dictionary.
    black_box(Safety::build(demo_config(false)).unwrap());
    let rss = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    let before = rss();
    let load = Instant::now();
    black_box(Safety::build(demo_config(true)).unwrap());
    let load = load.elapsed();
    let grown = rss() - before;
    let messages = demo_messages();
    let per_message = |safety: &Safety| {
        let (wall, cpu) = median(
            || {
                for m in &messages {
                    black_box(safety.check_input(black_box(m)));
                }
            },
            31,
        );
        (wall / messages.len() as u32, cpu / messages.len() as u32)
    };
    let plain = per_message(&Safety::build(demo_config(false)).unwrap());
    let segmented = per_message(&Safety::build(demo_config(true)).unwrap());
    let safety = Safety::build(demo_config(true)).unwrap();
    let with_hit = messages.iter().filter(|m| !safety.findings(m).is_empty()).count();
    println!("segmenter (demo shop lists, {} customer messages)", messages.len());
    println!(
        "  dictionary load (once)     {:>7.1} ms, resident memory +{grown:.0} MiB",
        load.as_secs_f64() * 1e3
    );
    println!(
        "  check_input, unsegmented   {:>7.2} µs / {:>7.2} µs per message",
        plain.0.as_secs_f64() * 1e6,
        plain.1.as_secs_f64() * 1e6
    );
    println!(
        "  check_input, segmented     {:>7.2} µs / {:>7.2} µs per message ({with_hit} with a finding)",
        segmented.0.as_secs_f64() * 1e6,
        segmented.1.as_secs_f64() * 1e6
    );
}

fn summary(data: &Data) {
    let mb = data.text.len() as f64 / 1e6;
    // The first build in a process also builds the fold table (once per fold set, then
    // shared by every reload).
    let cold = Instant::now();
    black_box(Safety::build(config(&data.words)).unwrap());
    let cold = cold.elapsed();
    let build = median(
        || {
            black_box(Safety::build(config(&data.words)).unwrap());
        },
        7,
    );
    let safety = Safety::build(config(&data.words)).unwrap();
    let plain = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&data.words)
        .unwrap();
    let mut hits = Vec::new();
    safety.scan_words(&data.text, &mut hits);
    let found = hits.len();
    let plain_found = plain.find_iter(&data.text).count();
    let folded = median(
        || {
            hits.clear();
            safety.scan_words(black_box(&data.text), &mut hits);
        },
        61,
    );
    let raw = median(|| _ = black_box(plain.find_iter(black_box(&data.text)).count()), 31);
    let full = median(|| _ = black_box(safety.check_input(black_box(&data.text))), 31);
    let rate = |d: Duration| mb / d.as_secs_f64();
    println!(
        "safety summary: {} words, {mb:.2} MB of text (wall median / on-CPU mean)",
        data.words.len()
    );
    println!("  first build (+fold table)  {:>7.1} ms", cold.as_secs_f64() * 1e3);
    println!(
        "  build the 60k-word filter  {:>7.1} ms / {:>7.1} ms",
        build.0.as_secs_f64() * 1e3,
        build.1.as_secs_f64() * 1e3
    );
    println!(
        "  all folds + match          {:>7.1} MB/s / {:>7.1} MB/s  ({found} findings)",
        rate(folded.0),
        rate(folded.1)
    );
    println!(
        "  plain aho-corasick         {:>7.1} MB/s / {:>7.1} MB/s  ({plain_found} matches, {:?})",
        rate(raw.0),
        rate(raw.1),
        plain.kind()
    );
    println!(
        "  ratio (all folds / plain)  {:>7.2}      / {:>7.2}",
        raw.0.as_secs_f64() / folded.0.as_secs_f64(),
        raw.1.as_secs_f64() / folded.1.as_secs_f64()
    );
    println!(
        "  check_input (+PII, mask)   {:>7.1} MB/s / {:>7.1} MB/s",
        rate(full.0),
        rate(full.1)
    );
}

fn main() {
    // `cargo test --all-targets` runs this too, unoptimized and without `--bench`: then
    // criterion runs each benchmark once as a smoke test, and the timed summary is skipped.
    let benching = std::env::args().any(|a| a == "--bench");
    let data = data();
    if benching {
        summary(&data);
        segment_summary();
    }

    let mut c = Criterion::default().configure_from_args().sample_size(20);
    let safety = Safety::build(config(&data.words)).unwrap();
    let plain = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&data.words)
        .unwrap();
    let mut group = c.benchmark_group("safety_1mb");
    group.throughput(Throughput::Bytes(data.text.len() as u64));
    let mut hits = Vec::new();
    group.bench_function("all_folds_match", |b| {
        b.iter(|| {
            hits.clear();
            safety.scan_words(black_box(&data.text), &mut hits);
        })
    });
    group.bench_function("plain_aho_corasick", |b| {
        b.iter(|| plain.find_iter(black_box(&data.text)).count())
    });
    group.bench_function("check_input_with_pii", |b| {
        b.iter(|| safety.check_input(black_box(&data.text)))
    });
    group.finish();

    // Customer messages are short: per-message overhead matters as much as throughput.
    let messages: Vec<&str> = data
        .text
        .split_inclusive('。')
        .filter(|m| m.len() > 30)
        .take(1000)
        .collect();
    let bytes: usize = messages.iter().map(|m| m.len()).sum();
    let mut group = c.benchmark_group("safety_messages");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("check_input_1000_messages", |b| {
        b.iter(|| {
            messages
                .iter()
                .map(|m| safety.check_input(black_box(m)).findings.len())
                .sum::<usize>()
        })
    });
    group.finish();

    let demo = demo_messages();
    let mut group = c.benchmark_group("safety_demo");
    group.throughput(Throughput::Elements(demo.len() as u64));
    for (name, segmented) in [("check_input_unsegmented", false), ("check_input_segmented", true)] {
        let safety = Safety::build(demo_config(segmented)).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                demo.iter()
                    .map(|m| safety.check_input(black_box(m)).findings.len())
                    .sum::<usize>()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("safety_build");
    group.sample_size(10);
    group.bench_function("build_60k_words", |b| {
        b.iter(|| Safety::build(config(&data.words)).unwrap())
    });
    group.finish();

    pii_adversarial(&mut c);
    c.final_summary();
}

/// Hostile messages for the personal-data search, each at a size and at four times it.
fn adversarial() -> Vec<(&'static str, usize, String)> {
    let mut cases = Vec::new();
    for n in [1000, 4000] {
        cases.push(("digit_dash", n, "1-".repeat(n / 2)));
        cases.push(("digit_space", n, "1 ".repeat(n / 2)));
        cases.push(("digit_dot", n, "1.".repeat(n / 2)));
        cases.push(("mixed_separators", n, "1 -.2\u{200B}".repeat(n / 5)));
        cases.push(("digit_run", n, "1".repeat(n)));
        cases.push(("phones_spaced", n, "138 1234 5678 ".repeat(n / 14)));
        cases.push(("at_signs", n, "@".repeat(n)));
        cases.push((
            "email_labels",
            n,
            "a.".repeat(n / 2) + "@" + "b.".repeat(n / 2).as_str(),
        ));
        cases.push(("spelled_at", n, "a at b dot ".repeat(n / 11)));
        cases.push(("districts", n, "区".repeat(n / 3) + "1"));
        cases.push(("chinese_numerals", n, "一 ".repeat(n / 4)));
    }
    cases
}

fn pii_adversarial(c: &mut Criterion) {
    let mut group = c.benchmark_group("pii_adversarial");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    for (name, n, text) in adversarial() {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("{name}/{n}"), |b| {
            b.iter(|| pii::find(black_box(&text), &PiiKind::ALL).len())
        });
    }
    group.finish();
}
