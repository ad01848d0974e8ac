//! Collects model answers for the judge's labelled set (tests/data/judge/README.md).
//!
//! Runs each question of a file through a shop's engine on a real model, in a fresh
//! conversation, and writes one JSON line per generation: the question, the model's whole
//! answer as the judge saw it (withheld or not), its token probabilities, the system
//! message it was given, and what kefu decided. The lines are then labelled by hand
//! (`label`: `good` or `bad`, and `why`) and kept in tests/data/judge/answers.jsonl,
//! which tests/judge.rs scores the judge on.
//!
//! ```sh
//! cargo run --release --example collect_answers -- \
//!     --rules tests/data/judge/shop --model models/default.gguf \
//!     --questions tests/data/judge/questions.txt > /tmp/answers.jsonl
//! ```

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kefu::llm::llama::{LlamaConfig, LlamaCpp};
use kefu::llm::{ChatRole, GenerateRequest, Generation, LlmBackend, LlmError};
use kefu::{Engine, TurnRequest};

/// A backend that remembers what it was asked and what it answered.
struct Recording {
    inner: Arc<dyn LlmBackend>,
    seen: Mutex<Vec<(String, Generation)>>,
}

impl LlmBackend for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, LlmError> {
        let generation = self.inner.generate(request, on_text)?;
        let system = request
            .messages
            .iter()
            .find(|m| m.role == ChatRole::System)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        self.seen.lock().unwrap().push((system, generation.clone()));
        Ok(generation)
    }
}

fn main() -> anyhow::Result<()> {
    let mut rules = PathBuf::from("tests/data/judge/shop");
    let mut model = PathBuf::from("models/default.gguf");
    let mut questions = PathBuf::from("tests/data/judge/questions.txt");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rules" => rules = value.into(),
            "--model" => model = value.into(),
            "--questions" => questions = value.into(),
            _ => anyhow::bail!("unknown flag {flag} (--rules, --model, --questions)"),
        }
    }
    let compiled = kefu::dsl::load_dir(&rules);
    let Some(set) = compiled.rules else {
        anyhow::bail!("{}", compiled.report.render_all(false));
    };
    let mut config = LlamaConfig::new(&model);
    config.ctx_per_seq = 2048;
    config.parallel = 1;
    let llm = Arc::new(LlamaCpp::load(config)?);
    let recording = Arc::new(Recording {
        inner: llm,
        seen: Mutex::new(Vec::new()),
    });
    let engine = Engine::new(set).with_llm(recording.clone());
    let model_name = model.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let shop = rules.display().to_string();
    let text = std::fs::read_to_string(&questions)?;
    for (i, question) in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
    {
        let response = engine.turn(TurnRequest::new(format!("collect-{i}"), question)).unwrap();
        for (system, generation) in recording.seen.lock().unwrap().drain(..) {
            let line = serde_json::json!({
                "model": model_name,
                "shop": shop,
                "question": question,
                "answer": generation.text,
                "mean_prob": generation.mean_prob,
                "min_prob": generation.min_prob,
                "tokens": generation.tokens,
                "system": system,
                "kefu": response.source.name(),
            });
            println!("{line}");
        }
    }
    Ok(())
}
