//! `kefu mine` through the binary and `data::mine` on a small hand-written log
//! (`tests/data/mine/cli/`): which turns are misses, how they cluster and rank, the text,
//! JSON and HTML outputs, `--since`, bad lines, and `--accept` with a rank that is not
//! there.

mod support;

use std::process::{Command, Output};

use kefu::data::mine::{MineOptions, MissReason, mine};

const LOG: &str = "tests/data/mine/cli";

fn kefu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kefu"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("mine")
        .args(args)
        .output()
        .expect("kefu runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kefu failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--log", LOG, "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&stdout(&kefu(&all))).unwrap()
}

fn files() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(LOG);
    kefu::data::files(&[dir]).unwrap()
}

#[test]
fn the_text_lists_each_cluster_with_its_figures_and_accept_line() {
    let text = stdout(&kefu(&["--log", LOG]));
    insta::assert_snapshot!("mine_text", text);
}

#[test]
fn misses_are_selected_by_reason_and_counted_once() {
    let report = mine(&files(), None, &MineOptions::default()).unwrap();
    // 31 customer turns: the subscribe event and the two bad lines are not; the turn a
    // person held is a turn, not a miss.
    assert_eq!(report.turns, 31, "{report:#?}");
    assert_eq!(report.read.bad_lines, 2);
    // 7 invoice + 4 gift + 3 order fallbacks/handoffs + 1 single + 3 before bad ratings.
    assert_eq!(report.misses, 18, "{report:#?}");
    let all: Vec<&String> = report.clusters.iter().flat_map(|c| &c.messages).collect();
    assert!(!all.iter().any(|m| *m == "转人工" || *m == "我要真人客服"), "{all:?}");
    assert!(
        !all.iter().any(|m| *m == "什么时候发货" || *m == "这件衣服显瘦吗"),
        "{all:?}"
    );
    let reasons = |c: &kefu::data::mine::Cluster| c.reasons.keys().copied().collect::<Vec<_>>();
    let gift = report
        .clusters
        .iter()
        .find(|c| c.messages.iter().any(|m| m.contains("礼物")))
        .expect("the gift cluster");
    assert_eq!(
        reasons(gift),
        [MissReason::Fallback, MissReason::Withheld, MissReason::LowIntent]
    );
    let refund = report
        .clusters
        .iter()
        .find(|c| c.messages.iter().any(|m| m.contains("退款")))
        .expect("the refund cluster, from the bad ratings");
    assert_eq!(reasons(refund), [MissReason::BadRating]);
    assert_eq!(refund.conversations, 2);
}

#[test]
fn json_has_the_figures_and_ranks_by_conversations() {
    let v = json(&[]);
    assert_eq!(v["turns"], 31);
    assert_eq!(v["read"]["bad_lines"], 2);
    assert_eq!(v["rules"], serde_json::Value::Null);
    let clusters = v["clusters"].as_array().unwrap();
    assert!(clusters.len() >= 3, "{v:#}");
    let first = &clusters[0];
    assert_eq!(first["rank"], 1);
    assert!(first["examples"][0].as_str().unwrap().contains("发票"), "{first:#}");
    assert_eq!(first["conversations"], 7);
    assert_eq!(first["size"], 7);
    assert_eq!(first["action"]["kind"], "new_faq");
    assert!(first["this_week"].as_u64().unwrap() > first["last_week"].as_u64().unwrap());
    for pair in clusters.windows(2) {
        assert!(pair[0]["conversations"].as_u64() >= pair[1]["conversations"].as_u64());
    }
    let order = clusters
        .iter()
        .find(|c| c["examples"][0].as_str().unwrap().contains("快递"))
        .expect("the order cluster");
    assert_eq!(order["action"]["kind"], "new_intent", "{order:#}");
    assert!(order["action"]["name"].as_str().unwrap().starts_with("挖掘."));
    // A question from one conversation is listed only when asked for.
    let solo = |v: &serde_json::Value| {
        v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["messages"][0] == "可以刻字吗")
    };
    assert!(!solo(&v));
    assert!(solo(&json(&["--min-conversations", "1"])));
    assert_eq!(json(&["--max-clusters", "1"])["clusters"].as_array().unwrap().len(), 1);
}

#[test]
fn since_and_until_cut_the_period() {
    let v = json(&["--since", "2026-11-25", "--until", "2026-11-27T00:00:00+08:00"]);
    assert_eq!(v["first"], "2026-11-25T15:00:00+08:00");
    assert_eq!(v["last"], "2026-11-26T17:00:00+08:00");
    let messages: Vec<&str> = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["messages"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()))
        .collect();
    assert!(messages.iter().all(|m| !m.contains("礼物")), "{messages:?}");
    let out = kefu(&["--log", LOG, "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since `yesterday`"));
}

#[test]
fn with_rules_clusters_get_neighbours_and_suggestions_against_them() {
    let v = json(&["--rules", "rules"]);
    assert!(v["rules"].as_str().is_some());
    let clusters = v["clusters"].as_array().unwrap();
    for c in clusters {
        let intent = &c["nearest_intent"];
        assert_eq!(intent["kind"], "intent", "{c:#}");
        assert!((0.0..=1.0).contains(&intent["score"].as_f64().unwrap()));
    }
    let refund = clusters
        .iter()
        .find(|c| c["examples"][0].as_str().unwrap().contains("退款"))
        .expect("the refund cluster");
    assert_eq!(
        refund["action"],
        serde_json::json!({"kind": "add_examples", "intent": "售后.退款进度"}),
        "{refund:#}"
    );
}

#[test]
fn html_is_written_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("mine.html");
    stdout(&kefu(&["--log", LOG, "--html", page.to_str().unwrap()]));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("能开发票吗") && html.contains("--accept 1"));
}

#[test]
fn accepting_a_rank_that_is_not_there_is_an_error() {
    let out = kefu(&["--log", LOG, "--rules", "rules", "--accept", "99"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("there is no cluster 99"), "{err}");
    let out = kefu(&["--log", LOG, "--accept", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rules DIR"));
    let out = kefu(&["--log", LOG, "--rules", "rules", "--accept", "1", "--as", "bogus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected add_examples:INTENT"));
}

#[test]
fn accepting_writes_the_clusters_suggestion_into_a_copy_of_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    support::copy_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules").as_path(),
        &rules,
    );
    let out = kefu(&["--log", LOG, "--rules", rules.to_str().unwrap(), "--accept", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    // Cluster 1 of the fixture asks for invoices: its messages become examples of
    // 售后.发票 in the file that declares it, after a dated comment, shown as a diff.
    assert!(text.contains("This is a draft, not live"), "{text}");
    assert!(text.contains("+    # kefu mine "), "{text}");
    let written = std::fs::read_to_string(rules.join("intents.kefu")).unwrap();
    let at = written.find("# kefu mine ").expect("the dated comment is in the file");
    assert!(written[at..].contains("\"发票怎么开\""), "{}", &written[at..]);
    // Accepting the same cluster again adds nothing: every message is already there.
    let again = kefu(&["--log", LOG, "--rules", rules.to_str().unwrap(), "--accept", "1"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(rules.join("intents.kefu")).unwrap(), written);
}
