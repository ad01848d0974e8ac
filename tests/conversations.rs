//! The demo shop's conversations (`rules/tests/*.yaml`), replayed and snapshotted: a rule
//! edit that changes any conversation shows up as a snapshot diff to read.

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
