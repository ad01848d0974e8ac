//! The model kefu asks when no rule is confident.
//!
//! [`LlmBackend`] is the seam: the engine hands it chat messages and sampling settings and
//! gets text back, streamed, with token probabilities so the answer can be judged
//! ([`judge`]) before it is shown. [`MockLlm`] is the deterministic backend the tests use.

pub mod prompt;

use std::time::Instant;

use serde::{Deserialize, Serialize};

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
    /// Generates an answer, calling `on_text` with each piece as it is produced.
    fn generate(&self, request: &GenerateRequest, on_text: &mut dyn FnMut(&str)) -> Result<Generation, LlmError>;
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
        };
        MockLlm { rules, default }
    }
}

impl LlmBackend for MockLlm {
    fn name(&self) -> &str {
        "mock"
    }

    fn generate(&self, request: &GenerateRequest, on_text: &mut dyn FnMut(&str)) -> Result<Generation, LlmError> {
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
        let mut tokens = 0;
        // Two characters a token, near enough to exercise streaming.
        let chars: Vec<char> = rule.reply.chars().collect();
        for piece in chars.chunks(2) {
            if tokens >= request.max_tokens {
                break;
            }
            let piece: String = piece.iter().collect();
            on_text(&piece);
            text.push_str(&piece);
            tokens += 1;
        }
        Ok(Generation {
            text,
            prompt_tokens: 0,
            tokens,
            mean_prob: rule.confidence,
            min_prob: rule.confidence,
        })
    }
}

/// The verdict on a model answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Judgement {
    /// The answer's confidence, 0 when it is invalid.
    pub confidence: f64,
    /// Why it is invalid, if it is.
    pub problem: Option<String>,
}

/// Judges a model answer to `message`: token probability, and validity checks that no
/// probability catches (empty, replacement characters, repetition loops, an answer in
/// another script than the question).
pub fn judge(generation: &Generation, message: &str) -> Judgement {
    let text = generation.text.trim();
    let problem = if text.is_empty() {
        Some("empty answer".to_string())
    } else if text.contains('\u{FFFD}') {
        Some("replacement characters in the answer".into())
    } else if repeats(text) {
        Some("the answer repeats itself".into())
    } else if has_cjk(message) && !has_cjk(text) {
        Some("the question is in Chinese but the answer is not".into())
    } else {
        None
    };
    // The weakest token pulls the confidence down: one wild token is often a made-up fact.
    let confidence = if problem.is_some() {
        0.0
    } else {
        0.8 * generation.mean_prob + 0.2 * generation.min_prob
    };
    Judgement { confidence, problem }
}

fn has_cjk(text: &str) -> bool {
    text.chars().any(|c| ('\u{4E00}'..='\u{9FFF}').contains(&c))
}

/// Whether some run of 4+ characters occurs 4 or more times back to back: the signature
/// of a decoding loop.
fn repeats(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    for len in 4..=chars.len() / 4 {
        for start in 0..chars.len().saturating_sub(4 * len - 1) {
            let unit = &chars[start..start + len];
            if (1..4).all(|k| &chars[start + k * len..start + (k + 1) * len] == unit) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(text: &str, p: f64) -> Generation {
        Generation {
            text: text.into(),
            mean_prob: p,
            min_prob: p,
            ..Generation::default()
        }
    }

    #[test]
    fn judge_rejects_empty_looping_and_wrong_language_answers() {
        assert_eq!(
            judge(&generation("  ", 0.9), "你好").problem.as_deref(),
            Some("empty answer")
        );
        assert!(
            judge(&generation("好的好的好的好的好的好的好的好的好的好的", 0.9), "你好")
                .problem
                .is_some()
        );
        assert!(
            judge(&generation("Sure, here you go.", 0.9), "尺码怎么选")
                .problem
                .is_some()
        );
        let ok = judge(&generation("建议选L码。", 0.9), "尺码怎么选");
        assert_eq!(ok.problem, None);
        assert!((ok.confidence - 0.9).abs() < 1e-9);
    }

    #[test]
    fn mock_streams_the_scripted_answer() {
        let llm = MockLlm::new(vec![MockRule {
            contains: "尺码".into(),
            reply: "建议选L码".into(),
            confidence: 0.4,
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
        };
        let mut streamed = String::new();
        let g = llm.generate(&request, &mut |t| streamed.push_str(t)).unwrap();
        assert_eq!(
            (g.text.as_str(), streamed.as_str(), g.mean_prob),
            ("建议选L码", "建议选L码", 0.4)
        );
    }
}
