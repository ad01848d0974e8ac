//! Understanding benchmarks: classifications per second on one thread with the demo shop,
//! and how long training takes for the demo shop and for a generated shop of 100 intents
//! with 50 examples each; and splitting messages into their questions.
//!
//! Run with `cargo bench --bench nlu`. Throughput is reported per message ("elem/s").

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kefu::diag::Span;
use kefu::nlu::{Context, Nlu, Options};
use kefu::ruleset::Intent;

fn demo() -> kefu::RuleSet {
    kefu::dsl::load_dir(Path::new("rules"))
        .rules
        .expect("the demo shop compiles")
}

fn held_out() -> Vec<String> {
    kefu::nlu::eval::read(Path::new("rules/tests/intents.jsonl"))
        .expect("held-out set")
        .into_iter()
        .map(|l| l.text)
        .collect()
}

/// A shop of `intents` intents with `examples` examples each, made of Chinese characters
/// from a fixed pool by a fixed pseudo-random sequence: every intent has its own topic
/// words, and all share fillers, as real intents share "请问", "我想", "吗".
pub fn generated_shop(intents: usize, examples: usize) -> Vec<Intent> {
    const POOL: &str = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研";
    let pool: Vec<char> = POOL.chars().collect();
    let fillers = [
        "请问",
        "我想问下",
        "亲",
        "麻烦",
        "那个",
        "吗",
        "呢",
        "啊",
        "好的",
        "在吗",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    (0..intents)
        .map(|i| {
            let topics: Vec<String> = (0..4)
                .map(|_| (0..2).map(|_| pool[next(pool.len())]).collect())
                .collect();
            let examples = (0..examples)
                .map(|_| {
                    let mut s = String::new();
                    if next(2) == 0 {
                        s.push_str(fillers[next(fillers.len())]);
                    }
                    for _ in 0..1 + next(3) {
                        if next(3) == 0 {
                            s.push(pool[next(pool.len())]);
                        }
                        s.push_str(&topics[next(topics.len())]);
                    }
                    s.push_str(fillers[next(fillers.len())]);
                    s
                })
                .collect();
            Intent {
                name: format!("类{}.意图{i}", i % 10),
                examples,
                keywords: vec![topics[0].clone()],
                span: Span::default(),
            }
        })
        .collect()
}

fn classification(c: &mut Criterion) {
    let rules = demo();
    let texts = held_out();
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(texts.len() as u64));
    group.bench_function("demo shop, intent only", |b| {
        b.iter(|| {
            for t in &texts {
                std::hint::black_box(rules.nlu.classify(t));
            }
        })
    });
    let ctx = Context::default();
    group.bench_function("demo shop, full understanding", |b| {
        b.iter(|| {
            for t in &texts {
                std::hint::black_box(rules.nlu.understand(t, &ctx));
            }
        })
    });
    group.finish();
}

/// Splitting messages into their questions (`nlu::split`), which every turn outside a flow
/// pays: on the held-out intent messages (single questions, most without separators) and
/// on the labelled split messages (with separators, half of them several questions).
fn splitting(c: &mut Criterion) {
    let texts = held_out();
    let labelled: Vec<String> = std::fs::read_to_string("tests/data/split/split.jsonl")
        .expect("labelled split messages")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_string))
        .collect();
    let mut group = c.benchmark_group("split");
    for (name, texts) in [
        ("held-out intent messages", &texts),
        ("labelled split messages", &labelled),
    ] {
        group.throughput(Throughput::Elements(texts.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                for t in texts {
                    std::hint::black_box(kefu::nlu::split::split(t));
                }
            })
        });
    }
    group.finish();
}

fn training(c: &mut Criterion) {
    let rules = demo();
    let options = Options::default();
    let mut group = c.benchmark_group("train");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("demo shop (20 intents)", |b| {
        b.iter(|| Nlu::train(&rules.intents, &rules.entities, &options))
    });
    let big = generated_shop(100, 50);
    group.bench_function("100 intents x 50 examples", |b| {
        b.iter(|| Nlu::train(&big, &[], &options))
    });
    group.finish();
}

// The macro generates an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, classification, splitting, training);
}
use group::benches;
criterion_main!(benches);
