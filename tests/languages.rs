//! Answers in the customer's language (docs/language.md, "Texts in several languages"):
//! a text's variant picked by the turn's language, the shop's language when a variant is
//! missing, a model translation only when the shop allows it and the judge passes it, and
//! the model asked for the turn's language.

use std::path::Path;
use std::sync::{Arc, Mutex};

use kefu::engine::{AnswerSource, Engine, TurnRequest};
use kefu::llm::{ChatMessage, GenerateRequest, Generation, LlmBackend, LlmError};

/// A model that records its prompts, translates with `translation` and answers
/// everything else with `answer`.
struct Scripted {
    prompts: Mutex<Vec<Vec<ChatMessage>>>,
    translation: String,
    answer: String,
}

impl LlmBackend for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        _: &mut dyn FnMut(&str) -> std::ops::ControlFlow<()>,
    ) -> Result<Generation, LlmError> {
        self.prompts.lock().unwrap().push(request.messages.clone());
        let translating = request.messages[0].content.contains("翻译");
        Ok(Generation {
            text: if translating { &self.translation } else { &self.answer }.clone(),
            tokens: 12,
            mean_prob: 0.95,
            min_prob: 0.9,
            ..Generation::default()
        })
    }
}

fn engine_with(translation: &str, answer: &str) -> (Engine, Arc<Scripted>) {
    let rules = kefu::dsl::load_dir(Path::new("tests/data/languages"))
        .rules
        .expect("the bilingual shop compiles");
    let model = Arc::new(Scripted {
        prompts: Mutex::new(Vec::new()),
        translation: translation.into(),
        answer: answer.into(),
    });
    (Engine::new(rules).with_llm(model.clone()), model)
}

fn say(engine: &Engine, session: &str, message: &str) -> kefu::TurnResponse {
    engine.turn(TurnRequest::new(session, message)).unwrap()
}

#[test]
fn each_turn_answers_in_its_language_and_unclear_messages_keep_it() {
    let (engine, model) = engine_with("-", "-");
    let r = say(&engine, "a", "Does it shrink after washing?");
    assert_eq!(
        (r.reply.as_str(), r.language.as_str()),
        ("Pre-shrunk, it won't shrink noticeably.", "en")
    );
    // "ok" gives no sign: the conversation stays in English; scripts see `language`.
    let r = say(&engine, "a", "language ok");
    assert_eq!(r.reply, "en", "{r:?}");
    let r = say(&engine, "a", "会缩水吗");
    assert_eq!(
        (r.reply.as_str(), r.language.as_str()),
        ("预缩处理，不会明显缩水。", "zh")
    );
    // The shop's messages have variants too.
    say(&engine, "b", "I want to talk to an agent please");
    let r = say(&engine, "c", "I want an agent please");
    assert_eq!(r.reply, "Transferring you to an agent.", "{r:?}");
    assert!(
        model.prompts.lock().unwrap().is_empty(),
        "no model call for texts with variants"
    );
}

#[test]
fn a_missing_variant_is_translated_when_the_judge_passes_it() {
    let (engine, _) = engine_with("Order 202611020001 shipped within 48 hours.", "-");
    let r = say(&engine, "a", "when do you ship my order");
    assert_eq!(r.source, AnswerSource::Rule);
    assert_eq!(r.reply, "Order 202611020001 shipped within 48 hours.", "{r:?}");
    assert!(r.trace.iter().any(|t| t.stage == "translate"), "{:?}", r.trace);
}

#[test]
fn a_translation_that_loses_a_number_or_is_in_chinese_is_not_shown() {
    for bad in ["Your order shipped within 48 hours.", "订单已发出。"] {
        let (engine, _) = engine_with(bad, "-");
        let r = say(&engine, "a", "when do you ship my order");
        assert_eq!(r.reply, "订单 202611020001 已于 48 小时内发出。", "{bad}: {r:?}");
        assert!(
            r.trace
                .iter()
                .any(|t| t.stage == "translate" && t.detail.starts_with("withheld")),
            "{:?}",
            r.trace
        );
    }
}

#[test]
fn without_a_model_a_missing_variant_is_said_in_the_shops_language() {
    let rules = kefu::dsl::load_dir(Path::new("tests/data/languages")).rules.unwrap();
    let engine = Engine::new(rules);
    let r = say(&engine, "a", "when do you ship my order");
    assert_eq!(
        (r.reply.as_str(), r.language.as_str()),
        ("订单 202611020001 已于 48 小时内发出。", "en")
    );
}

#[test]
fn the_model_is_asked_for_the_turns_language_and_judged_by_it() {
    let (engine, model) = engine_with("-", "Our T-shirts are made of combed cotton.");
    let r = say(&engine, "a", "What is the fabric of the hoodie?");
    assert_eq!(r.source, AnswerSource::Llm, "{r:?}");
    let system = model.prompts.lock().unwrap().last().unwrap()[0].content.clone();
    assert!(system.contains("请用英文简短回答"), "{system}");
    // The same English answer to a Chinese turn is withheld: the wrong language.
    let (engine, model) = engine_with("-", "Our T-shirts are made of combed cotton.");
    let r = say(&engine, "b", "卫衣是什么面料的呢");
    assert_ne!(r.source, AnswerSource::Llm, "{r:?}");
    let system = model.prompts.lock().unwrap().last().unwrap()[0].content.clone();
    assert!(system.contains("用简体中文简短回答"), "{system}");
}

#[test]
fn sessions_stored_before_languages_still_load_and_keep_theirs() {
    let old = r#"{"id":"s","turns":1,"failures":0,"last_intent":null,"slots":{},"flow":null,
        "history":[],"product":null,"emotions":[],"takeover":null,"updated_at":0}"#;
    let session: kefu::dialogue::Session = serde_json::from_str(old).expect("an old session loads");
    assert_eq!(session.language, None);
    let mut session = session;
    session.language = Some(kefu::nlu::Lang::EN);
    let stored = serde_json::to_string(&session).unwrap();
    assert!(stored.contains(r#""language":"en""#), "{stored}");
    let back: kefu::dialogue::Session = serde_json::from_str(&stored).unwrap();
    assert_eq!(back.language, Some(kefu::nlu::Lang::EN));
}
