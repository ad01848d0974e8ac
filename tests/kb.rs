//! The knowledge base: the demo shop's FAQ paraphrases find their entry (the data in
//! `rules/tests/kb/`, and a held-out set in `tests/data/kb/`); on a small shop
//! (`tests/data/kb/shop/`), the answer cache (hits, reloads, judgement, output safety),
//! recommendations and offers, and product focus. Diagnostics of broken kb files are
//! cases of `tests/diagnostics.rs`.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kefu::engine::{AnswerSource, EngineConfig};
use kefu::kb::check;
use kefu::llm::{MockLlm, MockRule};
use kefu::{Engine, RuleSet, TurnRequest, TurnResponse};
use serde_json::{Value, json};

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
        let report = check::run_file(&rules.kb, rules.shop.faq_threshold, &file);
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
    let report = check::run_file(
        &rules.kb,
        rules.shop.faq_threshold,
        Path::new("tests/data/kb/heldout_paraphrases.yaml"),
    );
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
    let file: check::CheckFile =
        serde_yaml::from_str("paraphrases:\n  积分: [运费险怎么赔, 积分有什么用]\nnot_faq: [运费险怎么理赔]\n")
            .unwrap();
    let report = check::run(&rules.kb, rules.shop.faq_threshold, &file);
    assert!(!report.passed());
    // 运费险怎么赔 finds 运费险理赔, not 积分; the FAQ's own question is found but is
    // not a paraphrase.
    assert_eq!(report.top1(), 1, "{:#?}", report.cases);
    assert_eq!(
        report.false_answers.len(),
        1,
        "an FAQ question listed as off-topic is answered"
    );
    assert!(
        report.errors.iter().any(|e| e.contains("is a variant of `积分`")),
        "{:?}",
        report.errors
    );
    assert!(report.errors.iter().any(|e| e.contains("`洗涤保养` has 0 paraphrases")));
}

// ---------------------------------------------------------------------------------------
// The answer cache and the knowledge-base script functions, on a small shop.
// ---------------------------------------------------------------------------------------

const SHOP: &str = "tests/data/kb/shop";

fn load(dir: &Path) -> Arc<RuleSet> {
    let (compiled, rendered) = support::check(dir);
    Arc::new(
        compiled
            .rules
            .unwrap_or_else(|| panic!("kb fixture must compile:\n{rendered}")),
    )
}

fn ask(engine: &Engine, session: &str, message: &str) -> TurnResponse {
    ask_as(
        engine,
        session,
        message,
        json!({ "segment": "regular" }),
        "2026-05-01T10:00:00+08:00",
    )
}

fn ask_as(engine: &Engine, session: &str, message: &str, user: Value, at: &str) -> TurnResponse {
    engine
        .turn(TurnRequest {
            session_id: session.into(),
            message: message.into(),
            user: user.as_object().cloned(),
            as_of: Some(chrono::DateTime::parse_from_rfc3339(at).unwrap()),
            ..TurnRequest::default()
        })
        .unwrap()
}

fn mock(rules: &[(&str, &str, f64)]) -> Arc<MockLlm> {
    Arc::new(MockLlm::new(
        rules
            .iter()
            .map(|(when, reply, confidence)| MockRule {
                contains: when.to_string(),
                reply: reply.to_string(),
                confidence: *confidence,
                delay_ms: 0,
            })
            .collect(),
    ))
}

fn traced(r: &TurnResponse, part: &str) -> bool {
    r.trace
        .iter()
        .any(|t| format!("{}: {}", t.stage, t.detail).contains(part))
}

#[test]
fn an_faq_answer_is_cached_and_the_same_question_hits() {
    let lookups = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&lookups);
    let engine = Engine::new(load(Path::new(SHOP))).with_cache_observer(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    let first = ask(&engine, "a", "积分有什么用");
    assert_eq!((first.source, first.faq.as_deref()), (AnswerSource::Faq, Some("积分")));
    // Another customer, other punctuation and spacing: the same question.
    let second = ask(&engine, "b", "积分 有什么用？");
    assert_eq!(
        (second.source, second.faq.as_deref()),
        (AnswerSource::Cache, Some("积分"))
    );
    assert_eq!(second.reply, first.reply);
    assert!(traced(&second, "cache: hit: faq 积分"), "{:#?}", second.trace);
    // Another segment is another key.
    let vip = ask_as(
        &engine,
        "c",
        "积分有什么用",
        json!({ "segment": "vip" }),
        "2026-05-01T10:00:00+08:00",
    );
    assert_eq!(vip.source, AnswerSource::Faq);
    let stats = engine.answer_cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (1, 2, 2), "{stats:?}");
    assert_eq!(lookups.load(Ordering::Relaxed), 3);
    // A rule answers before the cache is even looked at.
    assert_eq!(ask(&engine, "d", "推荐一下").source, AnswerSource::Rule);
    assert_eq!(engine.answer_cache_stats().misses, 2);
}

#[test]
fn a_reload_misses_the_cache() {
    let dir = std::env::temp_dir().join(format!("kefu-kb-reload-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("kb")).unwrap();
    std::fs::copy(Path::new(SHOP).join("shop.kefu"), dir.join("shop.kefu")).unwrap();
    let kb = std::fs::read_to_string(Path::new(SHOP).join("kb/shop.yaml")).unwrap();
    std::fs::write(dir.join("kb/shop.yaml"), &kb).unwrap();
    let engine = Engine::new(load(&dir));
    assert_eq!(ask(&engine, "a", "积分有什么用").source, AnswerSource::Faq);
    assert_eq!(ask(&engine, "b", "积分有什么用").source, AnswerSource::Cache);

    // The shop changes the answer; the reload builds a new version and swaps it in.
    std::fs::write(
        dir.join("kb/shop.yaml"),
        kb.replace("100 积分抵 1 元。", "50 积分抵 1 元。"),
    )
    .unwrap();
    let old_version = engine.rules().version.clone();
    engine.swap_rules(load(&dir));
    assert_ne!(
        engine.rules().version,
        old_version,
        "a kb edit changes the rules version"
    );
    assert_eq!(engine.answer_cache_stats().entries, 0, "the swap empties the cache");
    let after = ask(&engine, "c", "积分有什么用");
    assert_eq!(after.source, AnswerSource::Faq);
    assert_eq!(after.reply, "50 积分抵 1 元。");

    // Even a reload of unchanged files starts afresh.
    engine.swap_rules(load(&dir));
    assert_eq!(ask(&engine, "d", "积分有什么用").source, AnswerSource::Faq);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_model_answer_is_cached_only_when_it_passed_judgement() {
    let engine = Engine::new(load(Path::new(SHOP))).with_llm(mock(&[
        ("天气", "今天天气不错。", 0.3),
        ("发票", "确认收货后在订单详情里申请开票。", 0.9),
    ]));
    // Judged too unsure: the fallback answers, and nothing is stored.
    let unsure = ask(&engine, "a", "今天天气怎么样");
    assert_eq!(unsure.source, AnswerSource::Fallback);
    assert!(traced(&unsure, "answer withheld"), "{:#?}", unsure.trace);
    let again = ask(&engine, "b", "今天天气怎么样");
    assert_eq!(again.source, AnswerSource::Fallback, "{:#?}", again.trace);
    assert!(
        traced(&again, "llm: mock"),
        "the model is asked again: {:#?}",
        again.trace
    );

    // Judged good: stored, and the same opening question is answered from the cache.
    assert_eq!(ask(&engine, "c", "怎么开发票").source, AnswerSource::Llm);
    let hit = ask(&engine, "d", "怎么开发票");
    assert_eq!(hit.source, AnswerSource::Cache, "{:#?}", hit.trace);
    assert_eq!(hit.reply, "确认收货后在订单详情里申请开票。");
    // Later in a conversation the history differs, so the cached answer is not reused.
    let follow_up = ask(&engine, "a", "怎么开发票");
    assert_eq!(follow_up.source, AnswerSource::Llm, "{:#?}", follow_up.trace);

    let stats = engine.answer_cache_stats();
    assert_eq!((stats.hits, stats.misses), (1, 4), "{stats:?}");
}

#[test]
fn a_cached_answer_still_passes_output_safety() {
    let engine = Engine::new(load(Path::new(SHOP))).with_llm(mock(&[("电话", "请拨打 13812345678 联系售后。", 0.9)]));
    let first = ask(&engine, "a", "售后电话多少");
    assert_eq!(first.source, AnswerSource::Llm);
    assert!(!first.reply.contains("13812345678"), "{}", first.reply);
    let hit = ask(&engine, "b", "售后电话多少");
    assert_eq!(hit.source, AnswerSource::Cache, "{:#?}", hit.trace);
    assert!(!hit.reply.contains("13812345678"), "{}", hit.reply);
    assert!(traced(&hit, "safety: reply masked: pii"), "{:#?}", hit.trace);
}

#[test]
fn the_answer_cache_can_be_turned_off() {
    let config = EngineConfig {
        answer_cache_capacity: 0,
        ..EngineConfig::default()
    };
    let engine = Engine::new(load(Path::new(SHOP))).with_config(config);
    assert_eq!(ask(&engine, "a", "积分有什么用").source, AnswerSource::Faq);
    assert_eq!(ask(&engine, "b", "积分有什么用").source, AnswerSource::Faq);
    assert_eq!(engine.answer_cache_stats(), kefu::engine::CacheStats::default());
}

#[test]
fn recommendations_and_offers_follow_the_rules_and_the_data() {
    let engine = Engine::new(load(Path::new(SHOP)));
    let churn = json!({ "churn_risk": 0.8, "browsed": ["卫衣"] });
    // Best sellers among browsed categories, in stock only (加绒卫衣 is sold out), after
    // the promotion while it is on.
    let r = ask_as(&engine, "a", "推荐一下", churn.clone(), "2026-05-01T10:00:00+08:00");
    assert_eq!(r.reply, "送您一张回归券。落肩卫衣", "{:#?}", r.trace);
    assert!(traced(&r, "host: recommend best_sellers: W01"), "{:#?}", r.trace);
    let r = ask_as(&engine, "b", "推荐一下", churn, "2026-07-01T10:00:00+08:00");
    assert_eq!(r.reply, "落肩卫衣", "the promotion is over: {:#?}", r.trace);
    assert!(traced(&r, "offer 回归礼: not on"));
    // No browsing history: every category.
    let r = ask_as(&engine, "c", "推荐一下", json!({}), "2026-05-01T10:00:00+08:00");
    assert_eq!(r.reply, "送您一张回归券。重磅T恤、落肩卫衣");
}

#[test]
fn a_product_in_focus_narrows_the_passages_of_the_prompt() {
    let engine = Engine::new(load(Path::new(SHOP))).with_llm(mock(&[]));
    let r = engine
        .turn(TurnRequest {
            session_id: "p".into(),
            message: "这件厚不厚".into(),
            context: json!({ "product": { "id": "W01", "name": "落肩卫衣" } })
                .as_object()
                .cloned(),
            ..TurnRequest::default()
        })
        .unwrap();
    assert!(traced(&r, "kb: product in focus: W01 落肩卫衣"), "{:#?}", r.trace);
    assert!(traced(&r, "kb: passages: product W01 (focus)"), "{:#?}", r.trace);
    assert!(!traced(&r, "product T01"), "{:#?}", r.trace);
    // The session remembers the product for the next message.
    let r = engine.turn(TurnRequest::new("p", "那会起球吗")).unwrap();
    assert!(traced(&r, "kb: product in focus: W01"), "{:#?}", r.trace);
}

/// Real customers type a greeting, 亲 and particles around the question, paste a product id
/// from a link, repeat characters and add emoji; and they send bare acknowledgements that
/// an FAQ entry must not answer. tests/data/kb/noisy_messages.yaml holds such messages
/// (written for it) against examples/taobao-shop's FAQ. Before the knowledge base learned
/// chat noise (main before issue 28): 16 of 24 answered directly and 4 of 14 bare
/// acknowledgements ("好的好的好的", "拍了") answered; now 19 and none.
#[test]
fn noisy_real_style_messages_find_their_entry_and_chat_is_not_answered() {
    let compiled = kefu::dsl::load_dir(Path::new("examples/taobao-shop"));
    let rules = compiled.rules.unwrap_or_else(|| panic!("{}", compiled.report));
    let report = check::run_file(
        &rules.kb,
        rules.shop.faq_threshold,
        Path::new("tests/data/kb/noisy_messages.yaml"),
    );
    eprintln!("noisy: {}", report.summary());
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert!(report.false_answers.is_empty(), "{:#?}", report.false_answers);
    assert_eq!(report.top1(), report.cases.len(), "{:#?}", report.cases);
    assert!(report.answered() >= 19, "{}: {:#?}", report.summary(), report.cases);
}
