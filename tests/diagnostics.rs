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
        for d in &compiled.report.diagnostics {
            for span in std::iter::once(d.primary.span).chain(d.secondary.iter().map(|l| l.span)) {
                let text = &compiled.report.sources.file(span.file).text;
                assert!(
                    span.start <= span.end && text.get(span.start..span.end).is_some(),
                    "{name}: span {span:?} is not on characters of its file ({} bytes): {}",
                    text.len(),
                    d.message
                );
            }
        }
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
fn promotions_whose_audiences_cannot_meet_do_not_warn_about_overlap() {
    let (compiled, rendered) = support::check(Path::new("tests/data/diagnostics/promotion_audiences"));
    assert!(compiled.rules.is_some(), "{rendered}");
    let warnings: Vec<&str> = compiled.report.diagnostics.iter().map(|d| d.message.as_str()).collect();
    // 新客礼/会员礼 (new vs VIP) and 首单券/老客券 (is_new vs !is_new) are apart; a big cart
    // can be a new customer's or a VIP's.
    assert_eq!(
        warnings,
        [
            "promotions `会员礼` and `满额礼` overlap in time and share keywords \"优惠\"",
            "promotions `新客礼` and `满额礼` overlap in time and share keywords \"优惠\"",
        ],
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

/// Loads `dir` on a thread with the stack of a tokio blocking thread (what a reload runs
/// on), so that a recursion that only fits in the main thread's 8 MiB would show here.
fn check_on_small_stack(dir: &Path) -> (kefu::dsl::Compiled, String) {
    let dir = dir.to_path_buf();
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || support::check(&dir))
        .unwrap()
        .join()
        .expect("loading must not panic")
}

/// A rules directory with a shop and one more file.
fn shop_with(file: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shop.kefu"),
        "shop \"测试店\" { timezone \"Asia/Shanghai\" }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(file), text).unwrap();
    dir
}

#[test]
fn five_thousand_nested_ifs_are_an_error_not_a_stack_overflow() {
    for depth in [1_000, 5_000, 100_000] {
        let flow = format!(
            "flow 深 {{\n{}reply \"底\"\n{}}}\n",
            "if `true` {\n".repeat(depth),
            "}\n".repeat(depth)
        );
        let dir = shop_with("flow.kefu", &flow);
        let (compiled, rendered) = check_on_small_stack(dir.path());
        assert!(compiled.rules.is_none(), "{depth}: {rendered}");
        let error = compiled.report.errors().next().expect("an error");
        assert!(error.message.starts_with("nested too deeply"), "{depth}: {rendered}");
        // Either the 65th `if` (when the parser got that far) or where the parser gave up.
        let location = compiled.report.location(error.primary.span);
        assert!(location.contains("flow.kefu:"), "{depth}: {location}");
    }
}

#[test]
fn deeply_nested_template_braces_and_expressions_are_errors_not_crashes() {
    let rule = |reply: &str, when: &str| {
        format!("rule 甲 {{\n  on keywords \"甲\"\n  when `{when}`\n  reply \"{reply}\"\n}}\n")
    };
    let cases = [
        rule(
            &format!("{{ {}{}}}", "{ ".repeat(100_000), "} ".repeat(100_000)),
            "true",
        ),
        rule("好", &format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000))),
        rule("好", &format!("{} > 0", vec!["1"; 10_000].join(" + "))),
        rule("好", &format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000))),
    ];
    for (n, text) in cases.iter().enumerate() {
        let dir = shop_with("rule.kefu", text);
        let (compiled, rendered) = check_on_small_stack(dir.path());
        assert!(compiled.rules.is_none(), "case {n}: {rendered}");
        assert!(
            rendered.contains("rule.kefu:3:") || rendered.contains("rule.kefu:4:"),
            "case {n}: {rendered}"
        );
    }
}

#[test]
fn a_fifo_in_the_rules_directory_is_refused_not_waited_on() {
    let dir = shop_with(
        "safety.kefu",
        "safety {\n  block 词 from \"words.txt\" reply \"不行\"\n}\n",
    );
    std::fs::create_dir(dir.path().join("kb")).unwrap();
    for fifo in ["pipe.kefu", "kb/pipe.yaml", "words.txt"] {
        let made = std::process::Command::new("mkfifo")
            .arg(dir.path().join(fifo))
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
    }
    let (compiled, rendered) = support::check(dir.path());
    let refused: Vec<String> = compiled
        .report
        .errors()
        .map(|d| format!("{} {}", compiled.report.location(d.primary.span), d.message))
        .collect();
    assert_eq!(refused.len(), 3, "{rendered}");
    for expected in [
        "/pipe.kefu:1:1 cannot read this file: not a regular file",
        "/safety.kefu:2:16 cannot read",
        "/kb/pipe.yaml:1:1 cannot read this file: not a regular file",
    ] {
        assert!(refused.iter().any(|r| r.contains(expected)), "{expected}: {refused:?}");
    }
}

#[test]
fn a_word_list_over_sixteen_mib_is_refused_without_being_read() {
    let dir = shop_with(
        "safety.kefu",
        "safety {\n  block 词 from \"big.txt\" reply \"不行\"\n}\n",
    );
    let big = std::fs::File::create(dir.path().join("big.txt")).unwrap();
    big.set_len(kefu::diag::files::MAX_FILE_BYTES + 1).unwrap();
    let (compiled, rendered) = support::check(dir.path());
    let error = compiled.report.errors().next().expect("an error");
    assert!(error.message.ends_with("the file is larger than 16 MiB"), "{rendered}");
}

#[test]
fn a_line_of_thousands_of_holes_renders_the_first_hundred_diagnostics_only() {
    // Found by the fuzzer (seed 1000540): a question with 18,000 `{x}` holes gave 18,000
    // warnings, each rendering its 55 KB line; `kefu check` ran for minutes.
    let holes = "{x}".repeat(5_000);
    let dir = shop_with(
        "rule.kefu",
        &format!("rule 甲 {{\n  on keywords \"甲\"\n  reply \"{holes}\"\n}}\n"),
    );
    let (compiled, rendered) = support::check(dir.path());
    assert_eq!(compiled.report.counts(), (0, 5_000), "{}", &rendered[..500]);
    assert_eq!(rendered.matches("warning: unknown variable `x`").count(), 100);
    assert!(
        rendered.ends_with("4900 more not shown\n0 errors, 5000 warnings\n"),
        "{}",
        &rendered[rendered.len() - 200..]
    );
}

/// Conversation memory and offers: every mistake is found where it is written, however a
/// session field is read (a field, brackets, beside a closure, a language variant).
#[test]
fn memory_offers_and_session_fields_are_checked_where_they_are_written() {
    let dir = Path::new("tests/data/diagnostics/memory_and_offers");
    let (compiled, rendered) = support::check(dir);
    let file = "tests/data/diagnostics/memory_and_offers/shop.kefu";
    let found: Vec<(String, String, bool)> = compiled
        .report
        .diagnostics
        .iter()
        .map(|d| {
            let at = compiled.report.location(d.primary.span);
            (at.trim_start_matches(file).to_string(), d.message.clone(), d.is_error())
        })
        .collect();
    let expected = [
        (":9:12", "`订单` cannot be a memory name", true),
        (":15:12", "unknown rule `取消题议`", true),
        (":16:22", "`memory.ordr` is never remembered", false),
        (":17:10", "`ordr` is never remembered", false),
        (":22:13", "a yes to rule `取消` can never be read as yes", false),
        (":29:17", "unknown field `last_msg` of `session`", true),
        (":29:100", "unknown field `histroy` of `session`", true),
        (":30:19", "unknown field `last_mesage` of `session`", true),
        (":30:46", "unknown field `lastreply` of `session`", true),
        (":37:10", "`订单` cannot be a memory name", true),
    ];
    for (at, message, error) in expected {
        assert!(
            found.iter().any(|(a, m, e)| a == at && m == message && *e == error),
            "expected {} `{message}` at {at}:\n{rendered}",
            if error { "an error" } else { "a warning" }
        );
    }
    // Nothing else: `session.last_reply`, `session.last_message`, `session.history.len()`
    // and `memory.order` (remembered by a rule and by a flow) are right.
    assert_eq!(found.len(), expected.len(), "{rendered}");
}
