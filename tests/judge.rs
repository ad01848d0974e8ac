//! The judge on real model answers labelled by hand (tests/data/judge/answers.jsonl, see
//! the README there): no answer a shop would reject may pass, and few that it would
//! accept may be withheld.
//!
//! Each answer is judged as the engine judges it: against the customer's message, the
//! shop's instructions and the system message the model was given, at the shop's
//! `model_threshold`. The figures are printed (`cargo test --test judge -- --nocapture`)
//! beside what kefu did when the answer was collected (`kefu` in each line), which is
//! the judge before the labelled set existed.

use std::collections::HashMap;
use std::path::Path;

use kefu::llm::judge::{Context, judge};
use kefu::llm::{Finish, Generation, prompt};
use serde::Deserialize;

/// One labelled answer.
#[derive(Deserialize)]
struct Labelled {
    model: String,
    shop: String,
    question: String,
    answer: String,
    /// Token probabilities; none for hand-written answers, which are judged on the
    /// judge's checks alone.
    mean_prob: Option<f64>,
    min_prob: Option<f64>,
    tokens: u32,
    system: String,
    /// What kefu showed when the answer was collected: `llm` when it passed.
    kefu: String,
    /// `good` (a shop would send it) or `bad`.
    label: String,
    /// Why, for bad answers.
    #[serde(default)]
    why: String,
}

/// The token limit the answers were generated with (the engine's default `max_tokens`).
const MAX_TOKENS: u32 = 128;

/// Share of good answers the judge may withhold: a withheld good answer costs a fallback
/// or a handoff, a shown bad one costs the shop a customer's trust.
const MOST_GOOD_WITHHELD: f64 = 0.1;

fn answers() -> Vec<Labelled> {
    let text = std::fs::read_to_string("tests/data/judge/answers.jsonl").expect("the labelled set");
    text.lines()
        .enumerate()
        .map(|(i, line)| serde_json::from_str(line).unwrap_or_else(|e| panic!("answers.jsonl:{}: {e}", i + 1)))
        .collect()
}

#[test]
fn the_judge_passes_no_bad_answer_and_few_good_ones_are_withheld() {
    let answers = answers();
    assert!(answers.len() >= 300, "the labelled set has {} answers", answers.len());
    // Each shop's persona and model threshold, as the engine sees them.
    let mut shops: HashMap<String, (String, f64)> = HashMap::new();
    for a in &answers {
        shops.entry(a.shop.clone()).or_insert_with(|| {
            let rules = kefu::dsl::load_dir(Path::new(&a.shop))
                .rules
                .unwrap_or_else(|| panic!("{} compiles", a.shop));
            (prompt::instructions(&rules.shop.persona), rules.shop.model_threshold)
        });
    }
    let mut counts: HashMap<(&str, &str), [usize; 4]> = HashMap::new();
    let mut bad_passed = Vec::new();
    let mut good_withheld = Vec::new();
    for a in &answers {
        assert!(
            a.label == "good" || a.label == "bad",
            "{}: label must be good or bad",
            a.question
        );
        let (instructions, threshold) = &shops[&a.shop];
        let generation = Generation {
            text: a.answer.clone(),
            mean_prob: a.mean_prob.unwrap_or(1.0),
            min_prob: a.min_prob.unwrap_or(1.0),
            tokens: a.tokens,
            finish: if a.tokens >= MAX_TOKENS {
                Finish::Length
            } else {
                Finish::Stop
            },
            ..Generation::default()
        };
        let context = Context {
            language: None,
            message: &a.question,
            instructions,
            facts: &a.system,
        };
        let verdict = judge(&generation, &context);
        let passes = match a.mean_prob {
            Some(_) => verdict.confidence >= *threshold,
            None => verdict.problem.is_none(),
        };
        // Hand-written answers were never shown by kefu: before is counted as the old
        // judge would have had it only for real ones.
        let passed_before = a.kefu == "llm";
        // [bad passed before, bad passed now, good withheld before, good withheld now]
        let c = counts.entry((a.model.as_str(), a.label.as_str())).or_default();
        if a.label == "bad" {
            c[0] += usize::from(passed_before);
            c[1] += usize::from(passes);
            if passes {
                bad_passed.push(format!(
                    "{} -> {:?} ({}; {:.2})",
                    a.question, a.answer, a.why, verdict.confidence
                ));
            }
        } else {
            c[2] += usize::from(!passed_before);
            c[3] += usize::from(!passes);
            if !passes {
                good_withheld.push(format!(
                    "{} -> {:?} ({})",
                    a.question,
                    a.answer,
                    verdict.problem.as_deref().unwrap_or("low confidence")
                ));
            }
        }
    }
    let mut models: Vec<&str> = answers.iter().map(|a| a.model.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    let total = |model: &str, label: &str| answers.iter().filter(|a| a.model == model && a.label == label).count();
    println!("model | bad | bad passed before | now | good | good withheld before | now");
    for model in &models {
        let bad = counts.get(&(*model, "bad")).copied().unwrap_or_default();
        let good = counts.get(&(*model, "good")).copied().unwrap_or_default();
        // Hand-written answers never went through kefu: they have no before.
        let before = |n: usize| {
            if *model == "hand-written" {
                "-".to_string()
            } else {
                n.to_string()
            }
        };
        println!(
            "{model} | {} | {} | {} | {} | {} | {}",
            total(model, "bad"),
            before(bad[0]),
            bad[1],
            total(model, "good"),
            before(good[2]),
            good[3]
        );
    }
    println!("good answers withheld:\n{}", good_withheld.join("\n"));
    assert!(
        bad_passed.is_empty(),
        "bad answers the judge lets through:\n{}",
        bad_passed.join("\n")
    );
    let good = answers.iter().filter(|a| a.label == "good").count();
    let withheld = good_withheld.len() as f64 / good.max(1) as f64;
    assert!(
        withheld <= MOST_GOOD_WITHHELD,
        "{} of {good} good answers withheld:\n{}",
        good_withheld.len(),
        good_withheld.join("\n")
    );
}
