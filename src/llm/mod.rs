//! The model kefu asks when no rule is confident.
//!
//! [`LlmBackend`] is the seam: the engine hands it chat messages and sampling settings and
//! gets text back, streamed, with token probabilities so the answer can be judged
//! ([`judge`]) before it is shown. Three backends implement it: [`llama::LlamaCpp`]
//! (llama.cpp in process, continuous batching and prefix caching; the `llama` feature),
//! [`http::OpenAiHttp`] (an OpenAI-compatible server: llama-server, vLLM, hosted APIs)
//! and [`MockLlm`], the deterministic backend the tests use.

#[cfg(feature = "llama")]
pub mod cores;
pub mod generate;
pub mod http;
pub mod judge;
#[cfg(feature = "llama")]
pub mod llama;
pub mod lora;
pub mod prompt;
#[cfg(feature = "llama")]
pub mod sample;
pub mod vision;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use judge::{Judgement, judge};

/// Who a chat message is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    /// Instructions and injected knowledge.
    System,
    /// The customer.
    User,
    /// The assistant (kefu or an agent).
    Assistant,
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who says it.
    pub role: ChatRole,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: ChatRole, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// The conversation, system message first.
    pub messages: Vec<ChatMessage>,
    /// The most tokens to generate.
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling mass.
    pub top_p: f32,
    /// When to give up.
    pub deadline: Option<Instant>,
    /// Texts that end the answer where they appear (not included): the prompt's own
    /// markup, which a model that lost track of turns starts writing.
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens (benchmarks that need exactly
    /// `max_tokens`); backends that cannot honour it ignore it.
    pub ignore_eos: bool,
}

/// What the model produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generation {
    /// The answer.
    pub text: String,
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub tokens: u32,
    /// Mean probability of the generated tokens.
    pub mean_prob: f64,
    /// Lowest probability of a generated token.
    pub min_prob: f64,
    /// Prompt tokens found already evaluated (prefix cache) and not evaluated again.
    pub cached_tokens: u32,
    /// Time the request waited for a free sequence, in milliseconds.
    pub queue_ms: f64,
    /// Time from the start of prompt evaluation to the first token, in milliseconds.
    pub prompt_ms: f64,
    /// Time from the first token to the last, in milliseconds.
    pub generation_ms: f64,
    /// Why the generation ended.
    pub finish: Finish,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// The model ended its answer (end of sequence, or a stop marker).
    #[default]
    Stop,
    /// The token limit or the context ran out: the answer may be cut mid-sentence.
    Length,
    /// The caller asked for no more text ([`LlmBackend::generate`]'s callback broke).
    Cancelled,
}

/// Why the model gave no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LlmError {
    /// Every slot is taken; the engine falls back instead of waiting.
    #[error("the model is busy")]
    Busy,
    /// The deadline passed.
    #[error("the model took too long")]
    Timeout,
    /// Anything else.
    #[error("the model failed: {0}")]
    Failed(String),
}

/// A language model kefu can ask.
pub trait LlmBackend: Send + Sync {
    /// A short name for traces and metrics (`llama.cpp:SmolLM2…`, `mock`).
    fn name(&self) -> &str;
    /// Generates an answer, calling `on_text` with each piece as it is produced. When
    /// `on_text` breaks, the backend stops generating as soon as it can (text already
    /// produced is not passed on) and returns what was generated, marked
    /// [`Finish::Cancelled`], so the tokens spent are still counted.
    fn generate(
        &self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, LlmError>;

    /// Requests sent again after a failure since the backend was opened
    /// (`kefu_model_retries_total`); 0 for backends that never retry.
    fn retries(&self) -> u64 {
        0
    }
}

/// Which model to use, as `kefu serve`, `kefu chat` and `kefu generate` are told.
#[derive(Clone, Debug, Default)]
pub struct ModelOptions {
    /// A GGUF file for llama.cpp in process.
    pub model: Option<PathBuf>,
    /// An OpenAI-compatible server instead (takes precedence over `model`).
    pub url: Option<String>,
    /// The `model` name sent to that server.
    pub url_model: Option<String>,
    /// Its API key.
    pub api_key: Option<String>,
    /// llama.cpp decoding threads (0: one per core).
    pub threads: usize,
    /// Always decode with `threads`, even when other work wants the cores ([`cores`]).
    pub fixed_threads: bool,
    /// Sequences decoded together.
    pub parallel: usize,
    /// Tokens of context per sequence.
    pub ctx_per_seq: u32,
    /// The most tokens in one llama.cpp decode call (0: the default, 512).
    pub batch: u32,
    /// LoRA adapters and their scales (several are merged into one, see [`lora`]).
    pub lora: Vec<(PathBuf, f32)>,
    /// A llama.cpp built-in chat template name overriding the GGUF's.
    pub chat_template: Option<String>,
    /// The HTTP backend's deadline for requests that have none of their own
    /// ([`http::HttpConfig::timeout`]); `None`: its default.
    pub timeout: Option<std::time::Duration>,
    /// The HTTP backend's connect timeout ([`http::HttpConfig::connect_timeout`]);
    /// `None`: its default.
    pub connect_timeout: Option<std::time::Duration>,
}

/// Parses a `--lora` value, `PATH[:SCALE]` (scale 1.0 when absent or not a number, so a
/// path with a colon in it still works).
pub fn parse_lora(spec: &str) -> Result<(PathBuf, f32), String> {
    match spec.rsplit_once(':') {
        _ if spec.is_empty() => Err("empty LoRA path".into()),
        Some((path, scale)) if !path.is_empty() => match scale.parse::<f32>() {
            Ok(scale) => Ok((PathBuf::from(path), scale)),
            Err(_) => Ok((PathBuf::from(spec), 1.0)),
        },
        _ => Ok((PathBuf::from(spec), 1.0)),
    }
}

/// Opens the backend `options` describe: the HTTP client when a URL is given, else
/// llama.cpp on the model file, else none.
pub fn open(options: &ModelOptions) -> Result<Option<Arc<dyn LlmBackend>>, LlmError> {
    if let Some(url) = &options.url {
        let mut config = http::HttpConfig::new(url.clone());
        if let Some(m) = &options.url_model {
            config.model = m.clone();
        }
        config.api_key = options.api_key.clone();
        config.timeout = options.timeout.unwrap_or(config.timeout);
        config.connect_timeout = options.connect_timeout.unwrap_or(config.connect_timeout);
        return Ok(Some(Arc::new(http::OpenAiHttp::new(config)?)));
    }
    let Some(path) = &options.model else { return Ok(None) };
    open_llama(path, options)
}

#[cfg(feature = "llama")]
fn open_llama(path: &std::path::Path, options: &ModelOptions) -> Result<Option<Arc<dyn LlmBackend>>, LlmError> {
    let mut config = llama::LlamaConfig::new(path);
    config.threads = options.threads;
    config.adaptive_threads = !options.fixed_threads;
    if options.parallel > 0 {
        config.parallel = options.parallel;
    }
    if options.ctx_per_seq > 0 {
        config.ctx_per_seq = options.ctx_per_seq;
    }
    if options.batch > 0 {
        config.batch = options.batch;
    }
    config.lora = options.lora.clone();
    config.chat_template = options.chat_template.clone();
    Ok(Some(Arc::new(llama::LlamaCpp::load(config)?)))
}

#[cfg(not(feature = "llama"))]
fn open_llama(path: &std::path::Path, _: &ModelOptions) -> Result<Option<Arc<dyn LlmBackend>>, LlmError> {
    Err(LlmError::Failed(format!(
        "{}: this kefu was built without the llama feature; use --llm-url or rebuild with default features",
        path.display()
    )))
}

/// A deterministic model for tests: the first rule whose `contains` occurs in the customer's
/// message gives the answer and its token probability; otherwise the default does.
#[derive(Clone, Debug)]
pub struct MockLlm {
    rules: Vec<MockRule>,
    default: MockRule,
}

/// One scripted answer of [`MockLlm`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct MockRule {
    /// Text the customer's message must contain (empty: any).
    #[serde(default, rename = "when")]
    pub contains: String,
    /// The answer.
    pub reply: String,
    /// The probability every token of the answer gets.
    #[serde(default = "default_mock_prob")]
    pub confidence: f64,
    /// How long each token takes, in milliseconds (0: at once), so that a test can act
    /// while the answer is being generated (an agent taking the conversation over). A
    /// generation that passes its request's deadline fails with [`LlmError::Timeout`],
    /// as a slow model's does.
    #[serde(default)]
    pub delay_ms: u64,
}

fn default_mock_prob() -> f64 {
    0.9
}

impl Default for MockLlm {
    fn default() -> Self {
        MockLlm::new(Vec::new())
    }
}

impl MockLlm {
    /// A mock answering by `rules`, with a polite, confident default.
    pub fn new(rules: Vec<MockRule>) -> Self {
        let default = MockRule {
            contains: String::new(),
            reply: "您好，关于这个问题我帮您查询一下，请稍等。".into(),
            confidence: 0.9,
            delay_ms: 0,
        };
        MockLlm { rules, default }
    }
}

impl LlmBackend for MockLlm {
    fn name(&self) -> &str {
        "mock"
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, LlmError> {
        let message = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == ChatRole::User)
            .map(|m| prompt::customer_text(&m.content))
            .unwrap_or_default();
        let rule = self
            .rules
            .iter()
            .find(|r| message.contains(&r.contains))
            .unwrap_or(&self.default);
        let mut text = String::new();
        let mut tokens: u32 = 0;
        let mut finish = Finish::Stop;
        // Two characters a token, near enough to exercise streaming.
        let chars: Vec<char> = rule.reply.chars().collect();
        let delay = std::time::Duration::from_millis(rule.delay_ms);
        for piece in chars.chunks(2) {
            if tokens >= request.max_tokens {
                finish = Finish::Length;
                break;
            }
            if !delay.is_zero() {
                std::thread::sleep(delay);
                if request.deadline.is_some_and(|d| Instant::now() > d) {
                    return Err(LlmError::Timeout);
                }
            }
            let piece: String = piece.iter().collect();
            text.push_str(&piece);
            tokens += 1;
            if on_text(&piece).is_break() {
                finish = Finish::Cancelled;
                break;
            }
        }
        Ok(Generation {
            text,
            prompt_tokens: 0,
            tokens,
            mean_prob: rule.confidence,
            min_prob: rule.confidence,
            finish,
            ..Generation::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_specs_take_an_optional_scale() {
        assert_eq!(parse_lora("a.gguf"), Ok((PathBuf::from("a.gguf"), 1.0)));
        assert_eq!(parse_lora("dir/a.gguf:0.5"), Ok((PathBuf::from("dir/a.gguf"), 0.5)));
        assert_eq!(parse_lora("c:/a.gguf"), Ok((PathBuf::from("c:/a.gguf"), 1.0)));
        assert!(parse_lora("").is_err());
    }

    #[test]
    fn mock_streams_the_scripted_answer() {
        let llm = MockLlm::new(vec![MockRule {
            contains: "尺码".into(),
            reply: "建议选L码".into(),
            confidence: 0.4,
            delay_ms: 0,
        }]);
        let request = GenerateRequest {
            messages: vec![ChatMessage::new(
                ChatRole::User,
                prompt::wrap_customer_text("尺码怎么选"),
            )],
            max_tokens: 64,
            temperature: 0.5,
            top_p: 0.9,
            deadline: None,
            stop: Vec::new(),
            ignore_eos: false,
        };
        let mut streamed = String::new();
        let g = llm
            .generate(&request, &mut |t| {
                streamed.push_str(t);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(
            (g.text.as_str(), streamed.as_str(), g.mean_prob),
            ("建议选L码", "建议选L码", 0.4)
        );
    }

    #[test]
    fn a_slow_mock_takes_its_time_per_token_and_can_be_stopped_or_time_out() {
        let llm = MockLlm::new(vec![MockRule {
            contains: String::new(),
            reply: "一二三四五六七八".into(),
            confidence: 0.9,
            delay_ms: 20,
        }]);
        let mut request = GenerateRequest {
            messages: vec![ChatMessage::new(ChatRole::User, prompt::wrap_customer_text("在吗"))],
            max_tokens: 64,
            temperature: 0.5,
            top_p: 0.9,
            deadline: None,
            stop: Vec::new(),
            ignore_eos: false,
        };
        let started = Instant::now();
        let g = llm.generate(&request, &mut |_| ControlFlow::Continue(())).unwrap();
        assert_eq!((g.text.as_str(), g.tokens), ("一二三四五六七八", 4));
        assert!(started.elapsed() >= std::time::Duration::from_millis(80));
        // Stopped after the second piece: no more time spent, no more text.
        let mut pieces = 0;
        let g = llm
            .generate(&request, &mut |_| {
                pieces += 1;
                if pieces == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!((g.text.as_str(), g.finish), ("一二三四", Finish::Cancelled));
        request.deadline = Some(Instant::now() + std::time::Duration::from_millis(30));
        assert_eq!(
            llm.generate(&request, &mut |_| ControlFlow::Continue(())),
            Err(LlmError::Timeout)
        );
    }
}
