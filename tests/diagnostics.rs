//! Every kind of diagnostic `kefu check` reports, one broken rules directory each under
//! `tests/data/diagnostics/`, with the rendered report snapshotted.

mod support;

use std::path::Path;

#[test]
fn every_broken_rule_set_renders_its_diagnostics() {
    let cases = support::case_dirs(Path::new("tests/data/diagnostics"));
    assert!(cases.len() >= 15, "expected at least 15 cases, found {}", cases.len());
    for dir in cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let (compiled, rendered) = support::check(&dir);
        assert!(!compiled.report.diagnostics.is_empty(), "{name}: no diagnostic at all");
        assert_eq!(
            compiled.rules.is_some(),
            !compiled.report.has_errors(),
            "{name}: a rule set must exist exactly when there are no errors"
        );
        insta::assert_snapshot!(name, rendered);
    }
}

#[test]
fn three_different_mistakes_in_one_file_are_all_reported_where_they_are() {
    let (compiled, rendered) = support::check(Path::new("tests/data/diagnostics/three_mistakes"));
    let locations: Vec<String> = compiled
        .report
        .errors()
        .map(|d| compiled.report.location(d.primary.span))
        .collect();
    let file = "tests/data/diagnostics/three_mistakes/shop.kefu";
    assert_eq!(
        locations,
        [format!("{file}:6:6"), format!("{file}:10:22"), format!("{file}:15:12")],
        "{rendered}"
    );
}

#[test]
fn warnings_alone_still_build_the_rule_set() {
    let (compiled, rendered) = support::check(Path::new("tests/data/diagnostics/shadowed_rule"));
    assert!(compiled.rules.is_some(), "{rendered}");
    assert_eq!(compiled.report.counts(), (0, 1), "{rendered}");
}

#[test]
fn a_missing_directory_is_an_error_not_a_panic() {
    let (compiled, rendered) = support::check(Path::new("tests/data/no-such-dir"));
    assert!(compiled.rules.is_none());
    assert!(
        rendered.starts_with("tests/data/no-such-dir:1:1: error: cannot read the rules directory"),
        "{rendered}"
    );
}
