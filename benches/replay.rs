//! What-if replay (`kefu::data::replay`): logged turns answered again by a draft and its
//! base, both engines counted as one replayed turn (the target: 10,000 a second on
//! one core for rule-answered turns).
//!
//! `replay/rules` replays a log of rule-answered turns only: customers' messages from
//! `rules/tests/intents.jsonl` that a rule answers, three to a conversation, with a
//! profile, logged through the real log writer (masked, as `kefu serve` writes them).
//! `replay/read` is reading and grouping that log alone. With `KEFU_REPLAY_LOG=DIR`,
//! `replay/day` replays that log too (make one with `cargo run --release --example
//! conversation_log -- DIR`: a realistic day, model turns included, reported not
//! generated).
//!
//! `cargo bench --bench replay`; criterion prints the time per replay and the turns a
//! second (its `thrpt`). One thread: the replay itself is single-threaded.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kefu::data::record::TurnRecord;
use kefu::data::replay::{ReplayOptions, read_conversations, replay};
use kefu::data::{ConversationLog, LogConfig, Record};
use kefu::engine::AnswerSource;
use kefu::{Engine, RuleSet, TurnRequest};

/// Rule-answered turns in the generated log.
const TURNS: usize = 3_000;

// Turns a flow or the model answered are not logged: the conversations in the log then
// have gaps, which replay answers as the log says (the base and the draft alike).

/// Writes a log of `TURNS` rule-answered turns to `dir`.
fn rule_log(rules: &Arc<RuleSet>, dir: &Path) {
    let engine = Engine::new(Arc::clone(rules));
    let current = Arc::clone(rules);
    let (log, guard) = ConversationLog::open(LogConfig::new(dir), move || Arc::clone(&current)).unwrap();
    let messages: Vec<String> = std::fs::read_to_string("rules/tests/intents.jsonl")
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    let start = DateTime::parse_from_rfc3339("2026-11-11T09:00:00+08:00").unwrap();
    let user = serde_json::json!({ "segment": "regular", "orders": 4 });
    let (mut written, mut tried) = (0, 0usize);
    while written < TURNS {
        let message = &messages[(tried * 7919) % messages.len()];
        let request = TurnRequest {
            // By tries, not turns kept: a conversation caught in a flow answers by its
            // steps, and must not hold every later message.
            session_id: format!("b{}", tried / 3),
            message: message.clone(),
            user: user.as_object().cloned(),
            context: None,
            as_of: Some(start + Duration::seconds(tried as i64 * 20)),
            rules_version: None,
            channel: None,
            event: None,
            images: Vec::new(),
        };
        tried += 1;
        let response = engine.turn(request.clone()).unwrap();
        if response.source != AnswerSource::Rule {
            continue;
        }
        let at = request.as_of.unwrap();
        let record = TurnRecord::from_response(&response, at, Some("regular"), (0, 0), "bench").with_request(&request);
        while !log.push(Record::Turn(record.clone())) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        written += 1;
    }
    drop(guard);
}

fn bench_replay(c: &mut Criterion) {
    let compiled = kefu::dsl::load_dir(Path::new("rules"));
    let rules = Arc::new(compiled.rules.unwrap_or_else(|| panic!("{}", compiled.report)));
    let dir = std::env::temp_dir().join(format!("kefu-bench-replay-{}", std::process::id()));
    rule_log(&rules, &dir);
    let files = kefu::data::files(std::slice::from_ref(&dir)).unwrap();
    let options = ReplayOptions::default();
    let (conversations, _) = read_conversations(&files, &options).unwrap();
    let turns: usize = conversations.iter().map(|c| c.turns()).sum();
    assert_eq!(turns, TURNS);
    let base = |_: &str| Some(Arc::clone(&rules));

    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(turns as u64));
    group.bench_function("rules", |b| {
        b.iter(|| {
            let report = replay(&conversations, Arc::clone(&rules), &base, &options);
            assert_eq!(report.unchanged, TURNS as u64, "{report}");
            black_box(report)
        })
    });
    group.bench_function("read", |b| {
        b.iter(|| black_box(read_conversations(&files, &options).unwrap()))
    });
    if let Some(day) = std::env::var_os("KEFU_REPLAY_LOG") {
        let files = kefu::data::files(&[PathBuf::from(day)]).unwrap();
        let (conversations, _) = read_conversations(&files, &options).unwrap();
        let turns: usize = conversations.iter().map(|c| c.turns()).sum();
        group.throughput(Throughput::Elements(turns as u64));
        group.bench_function("day", |b| {
            b.iter(|| black_box(replay(&conversations, Arc::clone(&rules), &base, &options)))
        });
    }
    group.finish();
    std::fs::remove_dir_all(dir).unwrap();
}

criterion_group!(benches, bench_replay);
criterion_main!(benches);
