//! Rule-answered turns through `Engine::turn`: the demo shop, and generated packs of 100
//! and 10,000 rules so that the cost of more rules shows side by side (candidate lookup
//! goes through the keyword automaton and the intent index, never a scan of every rule).
//!
//! `turn/demo/rule+log` is the demo turn with the conversation log on (the record built
//! and handed to the batch; the flusher masks and writes on its own thread, as in
//! `kefu serve`), so the difference from `turn/demo/rule` is what the log costs a turn.
//!
//! `turn/demo/faq` is a turn no rule takes and an FAQ entry answers, with the answer cache
//! off: the knowledge base's retrieval on the turn's path.
//!
//! `cargo bench --bench turn`; criterion prints the median of each.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use kefu::{Engine, TurnRequest};

/// Writes a rules directory with `n` keyword rules (and a few intents) to a temp dir.
fn generated_pack(n: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kefu-bench-{n}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::from("shop \"压测店\" { timezone \"Asia/Shanghai\" }\n\n");
    for i in 0..5 {
        text.push_str(&format!(
            "intent 类别{i}.子类 {{ examples \"问题{i}甲\", \"问题{i}乙\", \"问题{i}丙\" }}\n"
        ));
    }
    for i in 0..n {
        text.push_str(&format!(
            "rule 规则{i} {{\n  on keywords \"商品编号{i}号\"\n  when `user.segment != \"blocked\"`\n  reply \"商品{i}有货，{{user.segment}}用户今天下单明天发。\"\n}}\n"
        ));
    }
    std::fs::write(dir.join("shop.kefu"), text).unwrap();
    dir
}

fn engine(dir: &Path) -> Engine {
    let compiled = kefu::dsl::load_dir(dir);
    Engine::new(compiled.rules.unwrap_or_else(|| panic!("{}", compiled.report)))
}

fn request(message: &str, n: u64) -> TurnRequest {
    let user = serde_json::json!({ "segment": "vip", "orders": 3 });
    TurnRequest {
        session_id: format!("bench-{}", n % 1024),
        message: message.to_string(),
        user: user.as_object().cloned(),
        ..TurnRequest::default()
    }
}

fn bench_turns(c: &mut Criterion) {
    let demo = engine(Path::new("rules"));
    let check = demo.turn(request("这件T恤洗了会缩水吗", 0)).unwrap();
    assert_eq!(
        check.rule.as_deref(),
        Some("缩水"),
        "the demo question must be rule-answered: {check:?}"
    );
    let mut n = 0u64;
    c.bench_function("turn/demo/rule", |b| {
        b.iter(|| {
            n += 1;
            black_box(demo.turn(request("这件T恤洗了会缩水吗", n)).unwrap())
        })
    });

    // An FAQ-answered turn with the answer cache off, so that every turn pays what a new
    // question costs: no rule takes it, then the knowledge base's retrieval (terms, BM25,
    // confidence and margin) answers.
    let faq = engine(Path::new("rules")).with_config(kefu::engine::EngineConfig {
        answer_cache_capacity: 0,
        ..kefu::engine::EngineConfig::default()
    });
    let check = faq.turn(request("亲 积分有什么用呀", 0)).unwrap();
    assert_eq!(
        check.faq.as_deref(),
        Some("积分"),
        "the demo question must be FAQ-answered: {check:?}"
    );
    c.bench_function("turn/demo/faq", |b| {
        b.iter(|| {
            n += 1;
            black_box(faq.turn(request("亲 积分有什么用呀", n)).unwrap())
        })
    });

    let logs = std::env::temp_dir().join(format!("kefu-bench-log-{}", std::process::id()));
    let rules = demo.rules();
    let (log, guard) =
        kefu::data::ConversationLog::open(kefu::data::LogConfig::new(&logs), move || std::sync::Arc::clone(&rules))
            .unwrap();
    c.bench_function("turn/demo/rule+log", |b| {
        b.iter(|| {
            n += 1;
            let response = demo.turn(request("这件T恤洗了会缩水吗", n)).unwrap();
            log.turn(&response, Some("vip"), 0, 0);
            black_box(response)
        })
    });
    drop(guard);
    let counts = log.counts();
    println!(
        "conversation log: {} lines written, {} dropped, {} failed",
        counts.written, counts.dropped, counts.failed
    );
    std::fs::remove_dir_all(logs).unwrap();

    let mut group = c.benchmark_group("turn/generated");
    for size in [100usize, 10_000] {
        let dir = generated_pack(size);
        let engine = engine(&dir);
        let message = format!("请问商品编号{}号还有货吗", size / 2);
        let check = engine.turn(request(&message, 0)).unwrap();
        assert_eq!(check.rule, Some(format!("规则{}", size / 2)), "{check:?}");
        group.bench_function(format!("{size}_rules"), |b| {
            b.iter(|| {
                n += 1;
                black_box(engine.turn(request(&message, n)).unwrap())
            })
        });
        std::fs::remove_dir_all(dir).unwrap();
    }
    group.finish();
}

criterion_group!(benches, bench_turns);
criterion_main!(benches);
