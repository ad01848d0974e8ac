//! The safety filter, driven by cases in `tests/data/safety/*.yaml`: every fold, every
//! PII kind with valid and invalid numbers, the allow list, word boundaries and
//! streaming. Each file declares its lists; each case gives an input (or chunks for the
//! output guard) and what must come out. All failing cases are reported together.
//!
//! Also: streaming gives exactly the whole-text answer for every way of splitting a text,
//! and `kefu safety` prints its JSON report (snapshot).

mod support;

use std::path::Path;

use kefu::safety::{
    Applies, DEFAULT_BLOCK_REPLY, Fold, GuardStep, ListAction, OrderNumber, PiiKind, Safety, SafetyConfig, Verdict,
    WordList,
};
use serde::Deserialize;

/// One `tests/data/safety/*.yaml` file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    lists: Vec<ListSpec>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    pii: Vec<String>,
    /// The shop's order-number pattern, if it declares one.
    #[serde(default)]
    order_number: Option<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListSpec {
    category: String,
    action: String,
    #[serde(default)]
    reply: Option<String>,
    words: Vec<String>,
    #[serde(default)]
    without: Vec<String>,
    /// `messages`, `replies` or `both` (the default).
    #[serde(default)]
    on: Option<String>,
    #[serde(default)]
    segmented: bool,
}

/// A case; every expectation is optional, but a case must have one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// A message checked whole.
    #[serde(default)]
    input: Option<String>,
    /// A reply checked whole (kefu's side), instead of a message.
    #[serde(default)]
    output: Option<String>,
    /// Model output streamed through the guard, chunk by chunk.
    #[serde(default)]
    chunks: Option<Vec<String>>,
    /// The matching form.
    #[serde(default)]
    normalized: Option<String>,
    /// Every finding as "category action original-text", in order.
    #[serde(default)]
    found: Option<Vec<String>>,
    /// The list words matched, as written in the list, in order.
    #[serde(default)]
    words: Option<Vec<String>>,
    /// Finding spans as "start..end" in bytes.
    #[serde(default)]
    spans: Option<Vec<String>>,
    /// The masked text.
    #[serde(default)]
    masked: Option<String>,
    /// The blocking category, or `none`.
    #[serde(default)]
    blocked: Option<String>,
    /// The reply of the blocking list.
    #[serde(default)]
    reply: Option<String>,
    /// What a streamed answer finally shows.
    #[serde(default)]
    shown: Option<String>,
}

fn build(file: &CaseFile) -> Safety {
    let lists = file
        .lists
        .iter()
        .map(|l| WordList {
            category: l.category.clone(),
            action: match l.action.as_str() {
                "block" => ListAction::Block {
                    reply: l.reply.clone().unwrap_or_else(|| DEFAULT_BLOCK_REPLY.to_string()),
                },
                "mask" => ListAction::Mask,
                "flag" => ListAction::Flag,
                other => panic!("unknown action {other}"),
            },
            on: l.on.as_deref().map_or(Applies::Both, |a| {
                a.parse().unwrap_or_else(|()| panic!("unknown side {a}"))
            }),
            segmented: l.segmented,
            words: l.words.clone(),
            without: l
                .without
                .iter()
                .map(|f| f.parse::<Fold>().unwrap_or_else(|()| panic!("unknown fold {f}")))
                .collect(),
        })
        .collect();
    let pii = file
        .pii
        .iter()
        .map(|k| k.parse::<PiiKind>().unwrap_or_else(|()| panic!("unknown pii kind {k}")))
        .collect();
    Safety::build(SafetyConfig {
        lists,
        allow: file.allow.clone(),
        pii,
        order_number: file
            .order_number
            .as_deref()
            .map(|p| OrderNumber::new(p).unwrap_or_else(|e| panic!("order number {p}: {e}"))),
    })
    .unwrap_or_else(|e| panic!("the case file's lists must compile: {e:?}"))
}

/// Checks one case; returns what differs.
fn check(safety: &Safety, case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |what: &str, want: &dyn std::fmt::Debug, got: &dyn std::fmt::Debug| {
        let (want, got) = (format!("{want:?}"), format!("{got:?}"));
        if want != got {
            problems.push(format!("{what}: expected {want}, got {got}"));
        }
    };
    let mut checked = 0;
    let text = case
        .input
        .as_ref()
        .map(|t| (t, false))
        .or(case.output.as_ref().map(|t| (t, true)));
    if let Some((input, reply)) = text {
        let verdict: Verdict = if reply {
            safety.check_output(input)
        } else {
            safety.check_input(input)
        };
        if let Some(want) = &case.normalized {
            expect("normalized", want, &safety.normalize(input));
            checked += 1;
        }
        if let Some(want) = &case.found {
            let got: Vec<String> = verdict
                .findings
                .iter()
                .map(|f| {
                    let action = serde_json::to_value(f.action).unwrap();
                    format!("{} {} {}", f.category, action.as_str().unwrap(), f.text)
                })
                .collect();
            expect("found", want, &got);
            checked += 1;
        }
        if let Some(want) = &case.words {
            let got: Vec<&str> = verdict.findings.iter().filter_map(|f| f.word.as_deref()).collect();
            expect("words", want, &got);
            checked += 1;
        }
        if let Some(want) = &case.spans {
            let got: Vec<String> = verdict
                .findings
                .iter()
                .map(|f| format!("{}..{}", f.span.start, f.span.end))
                .collect();
            expect("spans", want, &got);
            checked += 1;
        }
        if let Some(want) = &case.masked {
            expect("masked", want, &verdict.masked);
            checked += 1;
        }
        if let Some(want) = &case.blocked {
            let got = verdict.blocked.as_ref().map_or("none", |b| b.category.as_str());
            expect("blocked", want, &got);
            checked += 1;
        }
        if let Some(want) = &case.reply {
            expect(
                "reply",
                want,
                &verdict.blocked.as_ref().map(|b| b.reply.as_str()).unwrap_or(""),
            );
            checked += 1;
        }
    }
    if let Some(chunks) = &case.chunks {
        let (shown, blocked) = stream(safety, chunks);
        if let Some(want) = &case.shown {
            expect("shown", want, &shown);
            checked += 1;
        }
        let want = case.blocked.as_deref().unwrap_or("none");
        expect("blocked", &want, &blocked.as_deref().unwrap_or("none"));
        checked += 1;
    }
    if checked == 0 {
        problems.push("the case checks nothing".into());
    }
    problems
}

/// Streams `chunks` through a guard: what was shown, and the blocking category if any.
fn stream<S: AsRef<str>>(safety: &Safety, chunks: &[S]) -> (String, Option<String>) {
    let mut guard = safety.output_guard();
    let mut shown = String::new();
    for chunk in chunks {
        match guard.push(chunk.as_ref()) {
            GuardStep::Emit(text) => shown.push_str(&text),
            GuardStep::Blocked(b) => return (shown, Some(b.category)),
        }
    }
    match guard.finish() {
        GuardStep::Emit(text) => shown.push_str(&text),
        GuardStep::Blocked(b) => return (shown, Some(b.category)),
    }
    (shown, None)
}

fn case_files() -> Vec<(String, CaseFile)> {
    let dir = Path::new("tests/data/safety");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let file: CaseFile = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), file)
        })
        .collect()
}

#[test]
fn every_case_file_passes() {
    let files = case_files();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["folds.yaml", "lists.yaml", "pii.yaml", "sides.yaml", "stream.yaml"]
    );
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, file) in &files {
        let safety = build(file);
        for case in &file.cases {
            count += 1;
            for problem in check(&safety, case) {
                failures.push(format!("{name}: {}: {problem}", case.name));
            }
        }
    }
    assert!(count >= 100, "expected at least 100 cases, found {count}");
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn streaming_gives_the_whole_text_answer_for_every_split() {
    let (_, file) = case_files().into_iter().find(|(n, _)| n == "stream.yaml").unwrap();
    let safety = build(&file);
    let texts = [
        "你这个傻逼东西，请拨打13812345678联系我们",
        "关于法轮功的问题",
        "I have a cat, mail zhangsan@example.com now",
        "watch av now 傻 傻 逼",
    ];
    for text in texts {
        let whole = safety.check_output(text);
        let want = (
            if whole.is_blocked() {
                String::new()
            } else {
                whole.masked.clone()
            },
            whole.blocked.as_ref().map(|b| b.category.clone()),
        );
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let (shown, blocked) = stream(&safety, &chars);
        assert_eq!(blocked, want.1, "{text:?} one character at a time");
        if blocked.is_none() {
            assert_eq!(shown, want.0, "{text:?} one character at a time");
        }
        for (at, _) in text.char_indices().skip(1) {
            let (shown, blocked) = stream(&safety, &[&text[..at], &text[at..]]);
            assert_eq!(blocked, want.1, "{text:?} split at {at}");
            if blocked.is_none() {
                assert_eq!(shown, want.0, "{text:?} split at {at}");
            }
        }
    }
}

#[test]
fn a_rules_directory_compiles_its_safety_block() {
    let (compiled, rendered) = support::check(Path::new("tests/data/safety_rules"));
    let rules = compiled.rules.unwrap_or_else(|| panic!("{rendered}"));
    let verdict = rules.safety.check_input("法輪功");
    assert_eq!(verdict.blocked.unwrap().reply, "抱歉，这个话题我无法回答。");
    assert_eq!(rules.safety.redact_pii("电话13812345678"), "电话138****5678");
    assert_eq!(rules.safety.redact_pii("没有个人信息"), "没有个人信息");
}

#[test]
fn kefu_safety_prints_a_json_report() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["safety", "--rules", "tests/data/safety_rules"])
        .arg("你们和某 东比怎么样？我的电话 +86 138-1234-5678，ＦＵＣＫ，共产党员服务站在北京市朝阳区建国路88号")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    // The version is a hash of the fixture files; the rest is what editors read.
    let report: String = stdout
        .lines()
        .filter(|l| !l.trim_start().starts_with("\"rules_version\""))
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!(report);
}

#[test]
fn kefu_safety_reads_standard_input_and_fails_on_broken_rules() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["safety", "--rules", "tests/data/safety_rules", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all("法*轮*功\n".as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["normalized"], "法轮功");
    assert_eq!(report["blocked"]["category"], "政治");
    assert_eq!(report["findings"][0]["span"]["end"], "法*轮*功".len());

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["safety", "--rules", "tests/data/diagnostics/safety_empty_word", "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is empty once normalized"));
}

/// The shop's fixed replies are checked once when the rule set is built; a turn that sends
/// one gets the same answer from the check as before, masked where the text needs it.
#[test]
fn fixed_replies_are_vetted_once_and_answer_as_a_full_check_does() {
    let dir = tempfile::tempdir().unwrap();
    let source = std::fs::read_to_string("tests/data/safety_rules/shop.kefu").unwrap();
    std::fs::create_dir(dir.path().join("safety")).unwrap();
    for list in ["political.txt", "profanity.txt"] {
        std::fs::copy(
            Path::new("tests/data/safety_rules/safety").join(list),
            dir.path().join("safety").join(list),
        )
        .unwrap();
    }
    let rules = r#"
rule 干净 { on keywords "发货" reply "亲，下单后 48 小时内发出～" }
rule 带电话 { on keywords "电话" reply "售后电话 13812345678，工作日 9-18 点。" }
rule 带脏话 { on keywords "骂" reply "别说傻逼这种话哦" }
rule 有空 { on keywords "名字" reply "您好，{user.name ?? "亲"}" }
"#;
    std::fs::write(dir.path().join("shop.kefu"), format!("{source}\n{rules}")).unwrap();
    let (compiled, rendered) = support::check(dir.path());
    let rules = compiled.rules.unwrap_or_else(|| panic!("{rendered}"));
    // The clean rule reply and the shop's eight default messages (handoff, fallback,
    // flow-updated, goodbye, acknowledgement, what-else, confirm-again, opt-out); not the
    // replies with a phone number or a mask word, nor the one with a hole.
    assert_eq!(rules.safety.vetted(), 9);

    let engine = kefu::Engine::new(std::sync::Arc::new(rules));
    let reply = |message: &str| engine.turn(kefu::TurnRequest::new("s", message)).unwrap().reply;
    assert_eq!(reply("什么时候发货"), "亲，下单后 48 小时内发出～");
    assert_eq!(reply("售后电话多少"), "售后电话 138****5678，工作日 9-18 点。");
    assert_eq!(reply("我要骂人"), "别说**这种话哦");
    // A vetted text checks exactly as a full check does.
    let safety = &engine.rules().safety;
    for text in ["亲，下单后 48 小时内发出～", "售后电话 13812345678，工作日 9-18 点。"] {
        assert_eq!(safety.check_output(text), safety.check_input(text), "{text}");
    }
}

/// A list file of 32,000 lines of nothing but symbols took tens of seconds to load (each
/// line an error, each located and rendered by reading the file from its start). Such
/// lines are left out with a warning; the first ten are shown, then their number.
#[test]
fn a_list_file_of_symbol_only_lines_loads_with_a_few_warnings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("safety")).unwrap();
    let symbols = [
        '!', '@', '$', '%', '^', '&', '*', '(', ')', '-', '+', '=', '~', '|', '/', '?',
    ];
    let lines: String = (0..32_000usize)
        .map(|i| {
            (0..4)
                .map(|k| symbols[(i >> (4 * k)) % 16])
                .chain(['\n'])
                .collect::<String>()
        })
        .collect();
    std::fs::write(dir.path().join("safety/symbols.txt"), format!("违禁词\n{lines}")).unwrap();
    std::fs::write(
        dir.path().join("shop.kefu"),
        "shop \"测试店\" { timezone \"Asia/Shanghai\" }\nsafety {\n  block 符号 from \"safety/symbols.txt\"\n}\n",
    )
    .unwrap();
    let (compiled, rendered) = support::check(dir.path());
    let rules = compiled.rules.unwrap_or_else(|| panic!("{rendered}"));
    assert_eq!(compiled.report.counts(), (0, 11), "{rendered}");
    assert!(
        rendered.contains("symbols.txt:2:1: warning: word `!!!!` of safety list `符号` is empty once normalized"),
        "{rendered}"
    );
    assert!(
        rendered.contains("31990 more words of safety list `符号` are empty once normalized"),
        "{rendered}"
    );
    assert!(rules.safety.check_input("这是违禁词").is_blocked());
}

/// The lines of a message file: `# ` comments and blank lines skipped.
fn message_lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("# ") && *l != "#")
        .map(str::to_string)
        .collect()
}

/// What the demo shop's safety makes of a text, in the words of `must_refuse.txt`: the
/// blocking category, else every category masked or flagged.
fn outcome(verdict: &Verdict) -> Vec<String> {
    if let Some(b) = &verdict.blocked {
        return vec![format!("block {}", b.category)];
    }
    verdict
        .findings
        .iter()
        .filter_map(|f| {
            let action = serde_json::to_value(f.action).unwrap();
            let action = action.as_str().unwrap();
            (action != "pii").then(|| format!("{action} {}", f.category))
        })
        .collect()
}

/// The demo shop refuses only what it must. Over 1,200 realistic customer messages that
/// name couriers, platforms, ways to pay, brands, places and hardware, or hold a listed
/// word across two real words (一台独显, 其中共有, 觉得物流), none is refused, neither by
/// the safety check nor in a whole turn (with the mock model); and every line of
/// `must_refuse.txt` (political words with noise, profanity, competitors named in a reply)
/// is still refused, masked or flagged as it says. Prints the figures and every failure.
#[test]
fn the_demo_shop_refuses_only_what_it_must() {
    let (compiled, rendered) = support::check(Path::new("rules"));
    let rules = std::sync::Arc::new(compiled.rules.unwrap_or_else(|| panic!("{rendered}")));
    let hand = message_lines("tests/data/safety/false_refusals_hand.txt");
    let generated = message_lines("tests/data/safety/false_refusals_generated.txt");
    assert!(hand.len() >= 200, "{} hand-written messages", hand.len());
    assert!(generated.len() >= 1000, "{} generated messages", generated.len());
    let messages: Vec<&String> = hand.iter().chain(&generated).collect();

    let mut failures = Vec::new();
    let mut refused = 0;
    for m in &messages {
        let verdict = rules.safety.check_input(m);
        if let Some(b) = &verdict.blocked {
            refused += 1;
            let words: Vec<&str> = verdict.findings.iter().filter_map(|f| f.word.as_deref()).collect();
            failures.push(format!("refused ({}: {}): {m}", b.category, words.join(", ")));
        }
    }
    println!(
        "false refusals: {refused} of {} messages ({:.2}%)",
        messages.len(),
        100.0 * refused as f64 / messages.len() as f64
    );

    // Whole turns: nothing a rule, the FAQ or the model answers may come back refused.
    let model = std::sync::Arc::new(kefu::llm::MockLlm::new(Vec::new()));
    let engine = kefu::Engine::new(std::sync::Arc::clone(&rules)).with_llm(model);
    for (i, m) in messages.iter().enumerate() {
        let response = engine
            .turn(kefu::TurnRequest::new(format!("fr-{i}"), m.as_str()))
            .unwrap();
        if response.source == kefu::engine::AnswerSource::Safety {
            failures.push(format!("turn answered by safety ({:?}): {m}", response.reply));
        }
    }

    let mut checked = 0;
    for line in message_lines("tests/data/safety/must_refuse.txt") {
        let parts: Vec<&str> = line.splitn(3, " | ").collect();
        let [place, want, text] = parts[..] else {
            panic!("must_refuse.txt: `WHERE | WHAT CATEGORY | TEXT` expected: {line}");
        };
        checked += 1;
        let got = match place {
            "message" => outcome(&rules.safety.check_input(text)),
            "reply" => {
                let whole = outcome(&rules.safety.check_output(text));
                // Streamed a character at a time, a model answer comes out the same.
                let chars: Vec<String> = text.chars().map(String::from).collect();
                let (_, streamed) = stream(&rules.safety, &chars);
                let streamed = streamed.map(|c| format!("block {c}"));
                if want.starts_with("block ") && streamed.as_deref() != Some(want) {
                    failures.push(format!("not blocked while streaming ({want}): {text}"));
                }
                whole
            }
            other => panic!("must_refuse.txt: unknown place {other}: {line}"),
        };
        if !got.iter().any(|g| g == want) {
            failures.push(format!("{place} {text:?}: expected {want}, got {got:?}"));
        }
    }
    assert!(checked >= 50, "{checked} must-refuse lines");
    assert!(
        failures.is_empty(),
        "{} failures ({refused} false refusals of {} messages):\n{}",
        failures.len(),
        messages.len(),
        failures.join("\n")
    );
}
