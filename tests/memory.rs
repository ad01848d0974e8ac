//! Conversation memory and offers on a shop of their own (`tests/data/memory/`): what
//! rules and flows `remember` in later turns, the bounds of memory, the session's last
//! message, last reply and history, and `on yes to` / `on no to` winning over the shop's
//! short-reply answers; conversations replayed and snapshotted.

mod support;

use std::path::Path;

use kefu::conversation;

const DIR: &str = "tests/data/memory";

#[test]
fn every_memory_conversation_passes_and_matches_its_snapshot() {
    let (compiled, rendered) = support::check(Path::new(DIR));
    assert!(!compiled.report.has_errors(), "{rendered}");
    let rules = std::sync::Arc::new(compiled.rules.expect("the memory fixture compiles"));
    assert!(rules.reads_memory && rules.reads_past);
    let files = conversation::files(Path::new(DIR)).unwrap();
    assert_eq!(files.len(), 4);
    for file in files {
        let outcome = conversation::run_file(&rules, &file);
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        assert!(
            outcome.passed(),
            "{name}: {:#?}",
            outcome.turns.iter().flat_map(|t| &t.failures).collect::<Vec<_>>()
        );
        insta::assert_yaml_snapshot!(format!("memory_{name}"), outcome);
    }
}

/// The demo shop reads `memory` but never the session's history, last message or last
/// reply: its turns do not build them.
#[test]
fn a_rule_set_that_never_reads_the_history_does_not_build_it() {
    let (compiled, rendered) = support::check(Path::new("rules"));
    let rules = compiled.rules.unwrap_or_else(|| panic!("{rendered}"));
    assert!(rules.reads_memory);
    assert!(!rules.reads_past);
}
