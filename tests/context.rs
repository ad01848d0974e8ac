//! Short replies read against what kefu last asked (`kefu::nlu::reading`), on the labelled
//! data in `tests/data/context/` (see its README):
//!
//! - `confirmations.jsonl`: `yes_no()` must never act wrongly: a "neither" read as a yes or
//!   a no, or a yes read as a no (or the reverse), fails the test. A clear yes or no read as
//!   neither only costs one more question; up to 3% of them are tolerated.
//! - `replies.jsonl`: every reply, with the pending kind `pending_of(kefu)` derives, read as
//!   labelled, but for at most 2%.
//!
//! Run with `--nocapture` to see the figures and every mismatch.

use std::path::Path;

use kefu::nlu::reading::{Reading, pending_of, read, yes_no};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirmation {
    customer: String,
    expected: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reply {
    kefu: String,
    customer: String,
    reading: String,
}

fn lines<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<(usize, T)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/context")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let row = serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
            (i + 1, row)
        })
        .collect()
}

/// The verdict of one confirmation: `None` when read as expected, else whether the misread
/// acts wrongly (`true`) or only misses a yes/no (`false`).
fn judge(expected: &str, got: Option<bool>) -> Option<bool> {
    match (expected, got) {
        ("yes", Some(true)) | ("no", Some(false)) | ("neither", None) => None,
        ("yes" | "no", None) => Some(false),
        ("yes" | "no" | "neither", Some(_)) => Some(true),
        (other, _) => panic!("unknown expectation {other:?} (yes, no or neither)"),
    }
}

#[test]
fn no_confirmation_is_acted_on_wrongly() {
    let rows: Vec<(usize, Confirmation)> = lines("confirmations.jsonl");
    assert!(
        rows.len() >= 200,
        "at least 200 labelled confirmations, found {}",
        rows.len()
    );
    let mut wrong = Vec::new();
    let mut missed = Vec::new();
    let mut clear = 0usize;
    for (line, row) in &rows {
        let got = yes_no(&row.customer);
        if row.expected != "neither" {
            clear += 1;
        }
        match judge(&row.expected, got) {
            None => {}
            Some(true) => wrong.push(format!(
                "  line {line}: {:?} expected {}, read {got:?}",
                row.customer, row.expected
            )),
            Some(false) => missed.push(format!(
                "  line {line}: {:?} expected {}, read neither",
                row.customer, row.expected
            )),
        }
    }
    println!(
        "confirmations: {} cases ({clear} yes/no, {} neither); {} acted on wrongly; {} yes/no read as neither",
        rows.len(),
        rows.len() - clear,
        wrong.len(),
        missed.len()
    );
    for m in &missed {
        println!("{m}");
    }
    assert!(
        wrong.is_empty(),
        "confirmations acted on wrongly:\n{}",
        wrong.join("\n")
    );
    assert!(
        missed.len() * 100 <= clear * 3,
        "{} of {clear} clear yes/no replies read as neither (more than 3%):\n{}",
        missed.len(),
        missed.join("\n")
    );
}

#[test]
fn replies_read_as_labelled() {
    let rows: Vec<(usize, Reply)> = lines("replies.jsonl");
    assert!(rows.len() >= 300, "at least 300 labelled replies, found {}", rows.len());
    let mut mismatches = Vec::new();
    let mut kinds = std::collections::BTreeMap::new();
    for (line, row) in &rows {
        let pending = pending_of(&row.kefu);
        *kinds
            .entry(format!("{pending:?}").split('(').next().unwrap_or("").to_string())
            .or_insert(0) += 1;
        let got = read(&row.customer, pending.as_pending()).label();
        if got != row.reading {
            mismatches.push(format!(
                "  line {line}: kefu {:?} ({pending:?}), customer {:?}: expected {}, read {got}",
                row.kefu, row.customer, row.reading
            ));
        }
    }
    println!(
        "replies: {} cases by pending kind {kinds:?}; {} read otherwise than labelled",
        rows.len(),
        mismatches.len()
    );
    for m in &mismatches {
        println!("{m}");
    }
    for kind in ["Nothing", "YesNo", "AnythingElse", "Choice", "Open"] {
        assert!(kinds.contains_key(kind), "no reply after a kefu turn of kind {kind}");
    }
    assert!(
        mismatches.len() * 100 <= rows.len() * 2,
        "{} of {} replies read otherwise than labelled (more than 2%):\n{}",
        mismatches.len(),
        rows.len(),
        mismatches.join("\n")
    );
}

#[test]
fn labels_name_readings() {
    // The labels the data may use are exactly those `Reading::label` writes.
    for (_, row) in lines::<Reply>("replies.jsonl") {
        let ok = ["yes", "no", "bye", "ack", "thanks", "other"].contains(&row.reading.as_str())
            || row
                .reading
                .strip_prefix("choice:")
                .is_some_and(|n| n.parse::<usize>().is_ok());
        assert!(ok, "unknown reading {:?} for {:?}", row.reading, row.customer);
    }
    assert_eq!(Reading::Choice(2).label(), "choice:2");
}

#[test]
fn reading_is_quick() {
    // Not a benchmark: a figure to read with --nocapture (tests build kefu at opt-level 2).
    let rows: Vec<(usize, Confirmation)> = lines("confirmations.jsonl");
    let start = std::time::Instant::now();
    let rounds = 20;
    for _ in 0..rounds {
        for (_, row) in &rows {
            std::hint::black_box(yes_no(std::hint::black_box(&row.customer)));
        }
    }
    let each = start.elapsed() / (rounds * rows.len()) as u32;
    println!("yes_no: {each:?} a message on average over {} messages", rows.len());
}
