//! Accepting mined suggestions as drafts (`data::mine::accept`), on a copy of the demo
//! shop's `rules/`: each action's diff (snapshotted), what `kefu check` says of the result
//! (exactly the intended errors), accepting twice, hostile messages reading back as
//! themselves, a concurrent save refused, bad suggestions refused.

mod support;

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use kefu::data::mine::Action;
use kefu::data::mine::accept::{self, AcceptError, Drafted, Suggestion};
use kefu::dsl::ast::Item;

/// A copy of the demo shop's rules in a temporary directory.
fn shop() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rules");
    support::copy_dir(&support::root().join("rules"), &dir);
    (tmp, dir)
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 6).unwrap()
}

fn suggestion(action: Action, messages: &[&str]) -> Suggestion {
    Suggestion {
        action,
        messages: messages.iter().map(|s| s.to_string()).collect(),
    }
}

fn accept(dir: &Path, s: &Suggestion) -> Result<Drafted, AcceptError> {
    accept::accept_on(dir, s, date())
}

/// `kefu check`'s errors (`file:line:col: message`, the file relative to `dir`) and
/// warnings' messages.
fn check(dir: &Path) -> (Vec<String>, Vec<String>) {
    let checked = kefu::dsl::check_dir(dir);
    let prefix = format!("{}/", dir.display());
    let errors = checked
        .report
        .errors()
        .map(|d| format!("{}: {}", checked.report.location(d.primary.span), d.message).replace(&prefix, ""))
        .collect();
    let warnings = checked
        .report
        .diagnostics
        .iter()
        .filter(|d| !checked.report.errors().any(|e| std::ptr::eq(e, *d)))
        .map(|d| d.message.clone())
        .collect();
    (errors, warnings)
}

fn read(dir: &Path, path: &str) -> String {
    std::fs::read_to_string(dir.join(path)).unwrap()
}

/// The examples of `intent` in the rule file `path` of `dir`, as the parser reads them.
fn examples(dir: &Path, path: &str, intent: &str) -> Vec<String> {
    let mut sources = kefu::diag::SourceMap::default();
    let id = sources.add(path, read(dir, path));
    let (items, diagnostics) = kefu::dsl::parse::parse_file(id, &sources.file(id).text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    items
        .iter()
        .find_map(|i| match i {
            Item::Intent(x) if x.name.name == intent => Some(x.examples.iter().map(|e| e.value.clone()).collect()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no intent {intent} in {path}"))
}

/// The FAQ entry `id` of `kb/faq.yaml`: question, variants, answer.
fn faq(dir: &Path, id: &str) -> (String, Vec<String>, String) {
    let doc: serde_yaml::Value = serde_yaml::from_str(&read(dir, "kb/faq.yaml")).unwrap();
    let entries: Vec<kefu::kb::Faq> = serde_yaml::from_value(doc["faq"].clone()).unwrap();
    let e = entries.into_iter().find(|e| e.id == id).expect("the entry");
    (e.question, e.variants, e.answer)
}

fn invalid(result: Result<Drafted, AcceptError>) -> String {
    match result {
        Err(AcceptError::Invalid(why)) => why,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// Messages no parser or YAML reader may take for syntax.
const HOSTILE: &[&str] = &[
    "他说\"\"\"不行\"\"\"怎么办",
    "C:\\new\\table \\\" 反斜杠\\",
    "{\"} 大括号 {\"}",
    "{{ user.name }} {if x {\"y\"}} 模板",
    "# 不是注释 `反引号` /正则/i",
    "key: value - 列表 [a, b] {c: d}",
    "&anchor *alias !tag | > % @ 'quote'",
    "\u{202e}倒过来的字\u{200f} rtl",
    "no: yes ~ null",
    "} 右括号",
];

#[test]
fn examples_are_appended_to_the_intent_where_it_is_declared() {
    let (_tmp, dir) = shop();
    let (errors_before, warnings_before) = check(&dir);
    let s = suggestion(
        Action::AddExamples {
            intent: "物流.运费".into(),
        },
        &["运费到底谁出啊", "  运费到底谁出啊？ ", "包邮吗", "港澳台包邮吗亲"],
    );
    let drafted = accept(&dir, &s).unwrap();
    assert_eq!(drafted.files.len(), 1);
    let file = &drafted.files[0];
    assert_eq!((file.path.as_str(), file.created), ("intents.kefu", false));
    insta::assert_snapshot!("add_examples", file.diff);
    let got = examples(&dir, "intents.kefu", "物流.运费");
    assert_eq!(got[got.len() - 2..], ["运费到底谁出啊", "港澳台包邮吗亲"]);
    assert_eq!(
        check(&dir),
        (errors_before, warnings_before),
        "the draft checks as before"
    );

    // Accepting again adds nothing and leaves the file alone.
    let text = read(&dir, "intents.kefu");
    let why = invalid(accept(&dir, &s));
    assert!(why.contains("nothing to add") && why.contains("already there"), "{why}");
    assert_eq!(read(&dir, "intents.kefu"), text);

    let why = invalid(accept(
        &dir,
        &suggestion(
            Action::AddExamples {
                intent: "物流.运废".into(),
            },
            &["x"],
        ),
    ));
    assert_eq!(why, "no intent `物流.运废` in the rules; did you mean `物流.运费`?");
}

#[test]
fn variants_are_appended_to_the_faq_entry() {
    let (_tmp, dir) = shop();
    let before = check(&dir);
    let s = suggestion(
        Action::AddVariants {
            faq: "洗涤保养".into()
        },
        &["羊毛的能水洗吗", "可以机洗吗", "洗完会不会起球"],
    );
    let drafted = accept(&dir, &s).unwrap();
    assert_eq!(drafted.files[0].path, "kb/faq.yaml");
    insta::assert_snapshot!("add_variants", drafted.files[0].diff);
    let (_, variants, _) = faq(&dir, "洗涤保养");
    assert_eq!(variants[variants.len() - 2..], ["羊毛的能水洗吗", "洗完会不会起球"]);
    assert_eq!(check(&dir), before);
    let text = read(&dir, "kb/faq.yaml");
    assert!(invalid(accept(&dir, &s)).contains("nothing to add"));
    assert_eq!(read(&dir, "kb/faq.yaml"), text);
    let why = invalid(accept(
        &dir,
        &suggestion(
            Action::AddVariants {
                faq: "洗涤保样".into()
            },
            &["x"],
        ),
    ));
    assert!(why.contains("did you mean `洗涤保养`?"), "{why}");
}

#[test]
fn a_new_faq_entry_does_not_check_until_its_answer_is_written() {
    let (_tmp, dir) = shop();
    let (errors_before, _) = check(&dir);
    assert!(errors_before.is_empty(), "{errors_before:?}");
    let s = suggestion(
        Action::NewFaq {
            id: "会员积分".into()
        },
        &["会员积分怎么用", "积分可以换东西吗", "积分在哪里看"],
    );
    let drafted = accept(&dir, &s).unwrap();
    insta::assert_snapshot!("new_faq", drafted.files[0].diff);
    let text = read(&dir, "kb/faq.yaml");
    let line = text
        .lines()
        .position(|l| l == "    answer: \"\"")
        .expect("the empty answer")
        + 1;
    let (errors, _) = check(&dir);
    assert_eq!(
        errors,
        [format!(
            "kb/faq.yaml:{line}:5: FAQ entry `会员积分` has no answer yet: write the answer the customer should get"
        )]
    );
    assert_eq!(
        faq(&dir, "会员积分"),
        (
            "会员积分怎么用".to_string(),
            vec!["积分可以换东西吗".to_string(), "积分在哪里看".to_string()],
            String::new()
        )
    );

    // Other suggestions still go into the file while the answer waits.
    accept(
        &dir,
        &suggestion(Action::AddVariants { faq: "熨烫".into() }, &["衣服皱巴巴的怎么办"]),
    )
    .unwrap();
    let why = invalid(accept(&dir, &s));
    assert!(why.contains("FAQ entry `会员积分` already exists"), "{why}");

    let answered = read(&dir, "kb/faq.yaml").replace("    answer: \"\"", "    answer: 亲，100 积分抵 1 元～");
    std::fs::write(dir.join("kb/faq.yaml"), answered).unwrap();
    assert_eq!(check(&dir).0, Vec::<String>::new());
}

#[test]
fn a_new_intent_and_its_rule_do_not_check_until_the_reply_is_written() {
    let (_tmp, dir) = shop();
    let s = suggestion(
        Action::NewIntent {
            name: "挖掘.会员积分".into(),
        },
        &["会员积分怎么用", "积分能抵钱吗", "积分在哪里看", "积分会过期吗"],
    );
    let drafted = accept(&dir, &s).unwrap();
    let file = &drafted.files[0];
    assert_eq!((file.path.as_str(), file.created), ("mined.kefu", true));
    insta::assert_snapshot!("new_intent", file.diff);
    let text = read(&dir, "mined.kefu");
    let line = text.lines().position(|l| l == "  reply \"\"").expect("the empty reply") + 1;
    let (errors, _) = check(&dir);
    assert_eq!(
        errors,
        [format!(
            "mined.kefu:{line}:9: rule `挖掘_会员积分` has no reply yet: write what the customer should be told"
        )]
    );
    assert_eq!(examples(&dir, "mined.kefu", "挖掘.会员积分").len(), 4);
    let why = invalid(accept(&dir, &s));
    assert!(
        why.contains("intent `挖掘.会员积分` already exists (mined.kefu:"),
        "{why}"
    );

    // A second intent goes after the first, in the same file.
    let drafted = accept(
        &dir,
        &suggestion(
            Action::NewIntent {
                name: "挖掘.直播间".into(),
            },
            &["直播间的优惠券怎么领", "直播价还有吗", "主播说的赠品呢"],
        ),
    )
    .unwrap();
    assert!(!drafted.files[0].created);
    assert!(
        drafted.files[0].diff.contains("+intent 挖掘.直播间 {"),
        "{}",
        drafted.files[0].diff
    );
    assert_eq!(check(&dir).0.len(), 2);

    let written = read(&dir, "mined.kefu").replace("  reply \"\"", "  reply \"亲，稍等，马上为您查询～\"");
    std::fs::write(dir.join("mined.kefu"), written).unwrap();
    let (errors, _) = check(&dir);
    assert!(errors.is_empty(), "{errors:?}");
    let compiled = kefu::dsl::load_dir(&dir);
    assert!(compiled.rules.is_some(), "{}", compiled.report.render_all(false));
}

#[test]
fn hostile_messages_read_back_as_exactly_themselves() {
    let (_tmp, dir) = shop();
    let before = check(&dir);
    let examples_of = |intent: &str| suggestion(Action::AddExamples { intent: intent.into() }, HOSTILE);
    accept(&dir, &examples_of("其他.投诉")).unwrap();
    let got = examples(&dir, "intents.kefu", "其他.投诉");
    assert_eq!(got[got.len() - HOSTILE.len()..], *HOSTILE);
    assert_eq!(check(&dir).0, before.0);
    // An intent without an `examples` list yet gets one.
    let text = read(&dir, "intents.kefu");
    let start = text.find("intent 其他.感谢 {").unwrap();
    let end = start + text[start..].find("\n}\n").unwrap() + 3;
    let bare = format!(
        "{}intent 其他.感谢 {{\n  keywords \"谢谢\"\n}}\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(dir.join("intents.kefu"), bare).unwrap();
    // The same messages are examples of 其他.投诉 now: one message teaches one intent.
    assert!(invalid(accept(&dir, &examples_of("其他.感谢"))).contains("already there"));
    let thanks: Vec<String> = HOSTILE.iter().map(|h| format!("谢谢 {h}")).collect();
    let thanks: Vec<&str> = thanks.iter().map(String::as_str).collect();
    accept(
        &dir,
        &suggestion(
            Action::AddExamples {
                intent: "其他.感谢".into(),
            },
            &thanks,
        ),
    )
    .unwrap();
    assert_eq!(examples(&dir, "intents.kefu", "其他.感谢"), thanks);

    accept(&dir, &suggestion(Action::AddVariants { faq: "熨烫".into() }, HOSTILE)).unwrap();
    let (_, variants, _) = faq(&dir, "熨烫");
    assert_eq!(variants[variants.len() - HOSTILE.len()..], *HOSTILE);

    let (_tmp, dir) = shop();
    let id = "key: \"x\" #1 {y}";
    accept(&dir, &suggestion(Action::NewFaq { id: id.into() }, HOSTILE)).unwrap();
    let (question, variants, answer) = faq(&dir, id);
    assert_eq!((question.as_str(), answer.as_str()), (HOSTILE[0], ""));
    assert_eq!(variants, HOSTILE[1..]);
    accept(
        &dir,
        &suggestion(
            Action::NewIntent {
                name: "挖掘.怪话".into(),
            },
            HOSTILE,
        ),
    )
    .unwrap();
    assert_eq!(examples(&dir, "mined.kefu", "挖掘.怪话"), HOSTILE);
    let (errors, _) = check(&dir);
    assert_eq!(errors.len(), 2, "only the two intended errors: {errors:?}");
    assert!(errors.iter().all(|e| e.contains("yet: write")), "{errors:?}");
}

#[test]
fn a_file_saved_meanwhile_is_not_overwritten() {
    let (_tmp, dir) = shop();
    let s = suggestion(
        Action::AddExamples {
            intent: "物流.运费".into(),
        },
        &["运费到底谁出啊"],
    );
    let prepared = accept::prepare(&dir, &s, date()).unwrap();
    assert_eq!(prepared.paths(), ["intents.kefu"]);
    let saved = format!("{}\n# 编辑刚保存的一行\n", read(&dir, "intents.kefu"));
    std::fs::write(dir.join("intents.kefu"), &saved).unwrap();
    match prepared.write(&dir) {
        Err(AcceptError::Conflict(why)) => assert!(why.contains("intents.kefu"), "{why}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(read(&dir, "intents.kefu"), saved);
    // Accepting again works on the file as it is now.
    accept(&dir, &s).unwrap();
    assert!(read(&dir, "intents.kefu").contains("# 编辑刚保存的一行"));

    // A new file that appeared meanwhile is not overwritten either.
    let s = suggestion(
        Action::NewIntent {
            name: "挖掘.新".into()
        },
        &["甲乙丙", "丁戊己", "庚辛壬"],
    );
    let prepared = accept::prepare(&dir, &s, date()).unwrap();
    std::fs::write(dir.join("mined.kefu"), "# 别人先建的\n").unwrap();
    assert!(matches!(prepared.write(&dir), Err(AcceptError::Conflict(_))));
    assert_eq!(read(&dir, "mined.kefu"), "# 别人先建的\n");
}

#[test]
fn bad_suggestions_are_invalid_and_write_nothing() {
    let (_tmp, dir) = shop();
    let files = kefu::versions::draft::read_dir(&dir).unwrap();
    let examples = |m: &[&str]| {
        suggestion(
            Action::AddExamples {
                intent: "物流.运费".into(),
            },
            m,
        )
    };
    let cases: Vec<(Suggestion, &str)> = vec![
        (examples(&[]), "at least one message"),
        (examples(&["x"; 51]), "at most 50 messages"),
        (examples(&["第一行\n第二行", "  "]), "line break"),
        (examples(&[&"长".repeat(201)]), "longer than 200 characters"),
        (examples(&["包邮吗", "运费多少？"]), "already there"),
        (
            suggestion(
                Action::NewIntent {
                    name: "挖掘..空".into(),
                },
                &["x"],
            ),
            "not an intent name",
        ),
        (
            suggestion(
                Action::NewIntent {
                    name: "挖掘.a b".into(),
                },
                &["x"],
            ),
            "not an intent name",
        ),
        (
            suggestion(
                Action::NewIntent {
                    name: "物流.运费".into(),
                },
                &["x"],
            ),
            "already exists",
        ),
        (
            suggestion(Action::NewFaq { id: "熨烫".into() }, &["x"]),
            "already exists",
        ),
        (
            suggestion(Action::NewFaq { id: " ".into() }, &["x"]),
            "not an FAQ entry id",
        ),
        (
            suggestion(Action::NewFaq { id: "a\nb".into() }, &["x"]),
            "not an FAQ entry id",
        ),
    ];
    for (s, expected) in cases {
        let why = invalid(accept(&dir, &s));
        assert!(why.contains(expected), "{s:?}: {why}");
    }
    assert_eq!(kefu::versions::draft::read_dir(&dir).unwrap(), files, "nothing written");

    // The JSON the console posts: unknown fields and unknown actions are refused.
    for body in [
        r#"{"action": {"kind": "add_examples", "intent": "x"}, "messages": [], "extra": 1}"#,
        r#"{"action": {"kind": "delete_everything"}, "messages": ["x"]}"#,
    ] {
        assert!(serde_json::from_str::<Suggestion>(body).is_err(), "{body}");
    }
    assert!(matches!(
        accept(&dir.join("nope"), &examples(&["x"])),
        Err(AcceptError::Io(_))
    ));
}
