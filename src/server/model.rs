//! The model as the service sees it: a wrapper that keeps a model call from stalling the
//! async runtime and counts tokens, outcomes and latency, and the scripted mock that
//! `--mock-llm` loads.
//!
//! Rule-answered turns run directly on the runtime's worker threads (they take
//! microseconds). A turn that reaches the model can take seconds, so [`Metered`] runs the
//! generation inside `tokio::task::block_in_place`: the worker hands its other tasks to a
//! fresh thread before blocking, and only turns that actually ask the model pay for that.
//! A turn's own token counts travel in its response (`TurnResponse::usage`).

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::metrics::{Metrics, ModelOutcome};
use crate::llm::{GenerateRequest, Generation, LlmBackend, LlmError, MockLlm, MockRule};

/// Runs `f`, which blocks, without stalling the runtime when called on one of its workers.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A model backend wrapped for the service: blocking calls moved off the runtime's
/// workers, tokens, outcomes, latency and time to first text counted (one clock read per
/// piece of text until the first; the counters are atomics taken out at start).
pub struct Metered {
    inner: Arc<dyn LlmBackend>,
    metrics: Arc<Metrics>,
}

impl Metered {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn LlmBackend>, metrics: Arc<Metrics>) -> Self {
        Metered { inner, metrics }
    }
}

impl LlmBackend for Metered {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, LlmError> {
        let started = Instant::now();
        let mut first_text: Option<Duration> = None;
        let result = blocking(|| {
            self.inner.generate(request, &mut |text| {
                first_text.get_or_insert_with(|| started.elapsed());
                on_text(text)
            })
        });
        self.metrics
            .model_call(ModelOutcome::of(&result), started.elapsed(), first_text);
        if let Ok(g) = &result {
            self.metrics.tokens(u64::from(g.prompt_tokens), u64::from(g.tokens));
        }
        result
    }

    fn retries(&self) -> u64 {
        self.inner.retries()
    }
}

/// Why a mock model file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a list of answers.
    #[error("{path} is not a mock model file")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: serde_yaml::Error,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MockFile {
    Answers(Vec<MockRule>),
    Settings {
        /// Pause after every token, to stand in for a model that generates slowly.
        #[serde(default)]
        token_delay_ms: u64,
        answers: Vec<MockRule>,
    },
}

/// Loads a scripted model for tests and demos: a YAML list of `{when, reply, confidence}`,
/// or `{token_delay_ms, answers: [...]}` for one that streams slowly.
pub fn load_mock(path: &Path) -> Result<Arc<dyn LlmBackend>, MockError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| MockError::Read {
        path: shown.clone(),
        source,
    })?;
    let file: MockFile = serde_yaml::from_str(&text).map_err(|source| MockError::Parse { path: shown, source })?;
    Ok(match file {
        MockFile::Answers(answers) => Arc::new(MockLlm::new(answers)),
        MockFile::Settings {
            token_delay_ms,
            answers,
        } => Arc::new(Slow {
            inner: MockLlm::new(answers),
            delay: Duration::from_millis(token_delay_ms),
        }),
    })
}

/// A mock that sleeps after every token, like a model that is busy generating.
struct Slow {
    inner: MockLlm,
    delay: Duration,
}

impl LlmBackend for Slow {
    fn name(&self) -> &str {
        "mock-slow"
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, LlmError> {
        let delay = self.delay;
        self.inner.generate(request, &mut |t| {
            let flow = on_text(t);
            std::thread::sleep(delay);
            flow
        })
    }
}
