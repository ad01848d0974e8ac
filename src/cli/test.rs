//! `kefu test`: runs a rules directory's conversation tests and knowledge-base checks and
//! prints each result, what failed, the coverage, and every script that failed at run
//! time.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use kefu::conversation;

use super::load;

/// Runs every test of the rules in `dir`; fails when any of them fails.
pub fn run(dir: &Path, verbose: bool) -> Result<ExitCode> {
    let rules = Arc::new(load(dir)?);
    let files = conversation::files(dir).with_context(|| format!("reading {}", dir.join("tests").display()))?;
    if files.is_empty() {
        bail!("no conversation tests in {}", dir.join("tests").display());
    }
    // The same run `kefu publish` requires to pass (conversation::Suite).
    let suite =
        conversation::Suite::run(&rules, dir).with_context(|| format!("reading {}", dir.join("tests").display()))?;
    let mut covered = std::collections::BTreeSet::new();
    // Every script that failed at run time: (the failure, the test file, its turn).
    let mut script_errors: Vec<(String, String, usize)> = Vec::new();
    for outcome in &suite.conversations {
        let file = &outcome.file;
        covered.extend(outcome.covered.iter().cloned());
        script_errors.extend(
            outcome
                .script_errors()
                .map(|(turn, error)| (error.to_string(), file.display().to_string(), turn)),
        );
        let mark = if outcome.passed() { "ok  " } else { "FAIL" };
        println!(
            "{mark} {} ({}, {} turns)",
            outcome.name,
            file.display(),
            outcome.turns.len()
        );
        if let Some(error) = &outcome.error {
            println!("     {error}");
        }
        for (n, turn) in outcome.turns.iter().enumerate() {
            if verbose || !turn.failures.is_empty() {
                println!("     {}. 你: {}", n + 1, turn.say);
                println!("        客服: {}  [{} · {}]", turn.reply, turn.by, turn.intent);
                for failure in &turn.failures {
                    println!("        ✗ {failure}");
                }
            }
        }
    }
    // Knowledge-base checks (rules/tests/kb/*.yaml): customers' paraphrases must find
    // their FAQ entry first, and off-topic messages must not be answered by one.
    for report in &suite.kb {
        let file = &report.file;
        let mark = if report.passed() { "ok  " } else { "FAIL" };
        println!("{mark} knowledge base ({}): {}", file.display(), report.summary());
        for error in &report.errors {
            println!("     ✗ {error}");
        }
        for case in report.cases.iter().filter(|c| verbose || !c.passed()) {
            let found = case.top.as_deref().unwrap_or("nothing");
            let mark = if case.passed() { "✓" } else { "✗" };
            // Whether the entry would answer by itself (threshold and margin): a wrong
            // entry that answers is the mistake a customer sees.
            let answers = if case.answers { ", answers" } else { "" };
            println!(
                "     {mark} {} → {found} ({:.2}{answers}), expected {}",
                case.say, case.confidence, case.expected
            );
        }
        for (say, faq) in &report.false_answers {
            println!("     ✗ {say} → answered by {faq}, but it is listed under not_faq");
        }
    }
    let (passed, failed) = (suite.passed(), suite.failed());
    let c = conversation::coverage(&rules, &covered);
    println!(
        "coverage: rules {}/{}, promotions {}/{}, flow steps {}/{}",
        c.rules.0, c.rules.1, c.promotions.0, c.promotions.1, c.flow_steps.0, c.flow_steps.1
    );
    for missing in &c.missing {
        println!("  never exercised: {missing}");
    }
    // Listed even when the tests expected them: each is a script that fails in production
    // whenever a customer gets there.
    if !script_errors.is_empty() {
        println!("scripts that failed: {}", script_errors.len());
        for (error, file, turn) in &script_errors {
            println!("  {error} ({file}, turn {turn})");
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
