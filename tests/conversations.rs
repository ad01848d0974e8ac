//! The demo shop's conversations (`rules/tests/*.yaml`), replayed and snapshotted: a rule
//! edit that changes any conversation shows up as a snapshot diff to read. And the runner
//! itself: a script that fails during a conversation fails it, and `kefu test` lists it.

use std::path::Path;
use std::sync::Arc;

use kefu::conversation;

#[test]
fn every_demo_conversation_passes_and_matches_its_snapshot() {
    let compiled = kefu::dsl::load_dir(Path::new("rules"));
    let rules = Arc::new(compiled.rules.unwrap_or_else(|| panic!("{}", compiled.report)));
    let files = conversation::files(Path::new("rules")).unwrap();
    let mut failed = Vec::new();
    for file in files {
        let outcome = conversation::run_file(&rules, &file);
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        if !outcome.passed() {
            failed.push(format!(
                "{name}: {:?} {:?}",
                outcome.error,
                outcome.turns.iter().flat_map(|t| &t.failures).collect::<Vec<_>>()
            ));
        }
        insta::assert_yaml_snapshot!(format!("demo_{name}"), outcome);
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A small shop whose scripts fail when a request carries no order (`tests/data/script_errors`).
const SCRIPT_ERRORS: &str = "tests/data/script_errors";

fn script_errors_outcome(file: &str) -> conversation::Outcome {
    let compiled = kefu::dsl::load_dir(Path::new(SCRIPT_ERRORS));
    let rules = Arc::new(compiled.rules.unwrap_or_else(|| panic!("{}", compiled.report)));
    conversation::run_file(&rules, &Path::new(SCRIPT_ERRORS).join("tests").join(file))
}

#[test]
fn a_conversation_fails_when_a_condition_or_template_fails_and_says_where() {
    // Every other expectation of these turns holds: only the script failure fails them.
    let condition = script_errors_outcome("condition_fails.yaml");
    assert!(!condition.passed());
    assert_eq!(
        condition.turns[0]
            .failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [format!(
            "a script failed: rule 退货 at {SCRIPT_ERRORS}/shop.kefu:10:9: Unknown property 'signed_days' - a getter is not registered for type '()' (line 1, position 7)"
        )]
    );
    let template = script_errors_outcome("template_fails.yaml");
    assert!(!template.passed());
    assert!(template.turns[0].failures.is_empty(), "{:?}", template.turns[0]);
    let failures = &template.turns[1].failures;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].message.starts_with(&format!(
            "a script failed: rule 物流 at {SCRIPT_ERRORS}/shop.kefu:16:16: "
        )),
        "{failures:?}"
    );
    assert_eq!(template.script_errors().map(|(turn, _)| turn).collect::<Vec<_>>(), [2]);
}

#[test]
fn a_script_failure_the_test_expects_passes_and_one_that_does_not_happen_fails() {
    let expected = script_errors_outcome("expected.yaml");
    assert!(expected.passed(), "{:?}", expected.turns);
    assert_eq!(expected.script_errors().count(), 1);
    let missing = script_errors_outcome("expected_but_none.yaml");
    assert_eq!(
        missing.turns[0]
            .failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["expected a script to fail in `rule 退货`; none did"]
    );
    assert_eq!(missing.turns[0].failures[0].field, "script_errors");
    assert_eq!(missing.turns[0].failures[0].expected.as_deref(), Some("rule 退货"));
}

#[test]
fn kefu_test_fails_and_lists_every_script_that_failed() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["test", SCRIPT_ERRORS])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(!output.status.success(), "{stdout}");
    let listed: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("scripts that failed: "))
        .collect();
    assert_eq!(listed.first(), Some(&"scripts that failed: 3"), "{stdout}");
    for (rule, file, turn) in [
        (
            "rule 退货 at tests/data/script_errors/shop.kefu:10:9",
            "condition_fails.yaml",
            1,
        ),
        (
            "rule 退货 at tests/data/script_errors/shop.kefu:10:9",
            "expected.yaml",
            1,
        ),
        (
            "rule 物流 at tests/data/script_errors/shop.kefu:16:16",
            "template_fails.yaml",
            2,
        ),
    ] {
        assert!(
            listed
                .iter()
                .any(|l| l.starts_with(&format!("  {rule}: ")) && l.ends_with(&format!("{file}, turn {turn})"))),
            "{rule} in {file}: {stdout}"
        );
    }
    assert!(stdout.ends_with("1 passed, 3 failed\n"), "{stdout}");
}
