//! The knowledge base of the demo shop: FAQ paraphrases find their entry (the data in
//! `rules/tests/kb/`), recommendation strategies, kb diagnostics.

mod support;

use std::path::Path;
use std::sync::Arc;

use kefu::RuleSet;
use kefu::kb::check;

fn demo() -> Arc<RuleSet> {
    let compiled = kefu::dsl::load_dir(Path::new("rules"));
    Arc::new(compiled.rules.unwrap_or_else(|| panic!("{}", compiled.report)))
}

#[test]
fn every_faq_entry_is_found_top1_from_its_paraphrases() {
    let rules = demo();
    let files = check::files(Path::new("rules"));
    assert!(!files.is_empty(), "no kb check files in rules/tests/kb");
    for file in files {
        let report = check::run_file(&rules, &file);
        eprintln!("{}: {}", file.display(), report.summary());
        for case in &report.cases {
            eprintln!(
                "  {} {} → {} ({:.2}{})",
                if case.passed() { "ok  " } else { "FAIL" },
                case.say,
                case.top.as_deref().unwrap_or("-"),
                case.confidence,
                if case.answers { ", answers" } else { "" }
            );
        }
        assert!(
            report.passed(),
            "{}: {}\nerrors: {:#?}\noff-topic answered: {:?}\nmissed: {:#?}",
            file.display(),
            report.summary(),
            report.errors,
            report.false_answers,
            report.cases.iter().filter(|c| !c.passed()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn held_out_paraphrases_mostly_find_their_entry() {
    let rules = demo();
    let report = check::run_file(&rules, Path::new("tests/data/kb/heldout_paraphrases.yaml"));
    eprintln!("held out: {}", report.summary());
    for case in report.cases.iter().filter(|c| !c.passed()) {
        eprintln!("  missed: {} → {:?}", case.say, case.top);
    }
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert!(
        report.top1() * 10 >= report.cases.len() * 9,
        "held-out top-1 fell below 90%: {}",
        report.summary()
    );
}

#[test]
fn a_paraphrase_check_fails_when_the_entry_is_not_first() {
    let rules = demo();
    let file: check::CheckFile = serde_yaml::from_str(
        "paraphrases:\n  积分: [运费险怎么赔, 积分有什么用]\nnot_faq: [运费险怎么理赔]\n",
    )
    .unwrap();
    let report = check::run(&rules, &file);
    assert!(!report.passed());
    // 运费险怎么赔 finds 运费险理赔, not 积分; the FAQ's own question is found but is
    // not a paraphrase.
    assert_eq!(report.top1(), 1, "{:#?}", report.cases);
    assert_eq!(report.false_answers.len(), 1, "an FAQ question listed as off-topic is answered");
    assert!(
        report.errors.iter().any(|e| e.contains("is a variant of `积分`")),
        "{:?}",
        report.errors
    );
    assert!(report.errors.iter().any(|e| e.contains("`洗涤保养` has 0 paraphrases")));
}
