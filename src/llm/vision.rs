//! A vision model that says what a customer's photo shows (`kefu serve --vision-url`): any
//! OpenAI-compatible server that takes `image_url` content parts, such as llama.cpp's
//! `llama-server` with a multimodal GGUF and its `--mmproj` projector, vLLM, or a hosted
//! API (docs/photos.md).
//!
//! One `POST {base}/v1/chat/completions` per image, not streamed: a user message of a
//! short Chinese instruction ([`PROMPT`]) and the image as a `data:` URL (the stored,
//! metadata-free bytes, never the file the customer sent). The answer is cut to
//! [`MAX_DESCRIPTION_CHARS`] characters, its blank space folded and control characters
//! dropped; the server masks personal data in it before anything keeps it. It is the
//! model's words about a picture the customer chose: rules read it as `image.description`
//! and the prompt fences it as customer text, never as instructions.
//!
//! There are no retries: a description is worth a few seconds of the customer's wait,
//! not more ([`VisionConfig::timeout`], 8 s by default). A failure gives no description
//! (the rules route the conversation as without a vision model) and a [`VisionError`]
//! whose [`VisionError::outcome`] the metrics count.

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

/// What the model is asked, with each image.
pub const PROMPT: &str = "你是电商客服的助手。请用一两句中文客观描述这张顾客发来的图片，\
重点说明与售后有关的内容：商品是什么、是否有破损或污渍、尺码标签或条码上的文字、订单或聊天截图里的关键信息。\
不要猜测图片以外的事，不要输出与图片无关的内容。";

/// The longest description kept, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 300;

/// Where the vision model is.
#[derive(Clone, Debug)]
pub struct VisionConfig {
    /// Base URL (`http://127.0.0.1:8082`); `/v1/chat/completions` is appended unless the
    /// URL already ends with it (or with `/v1`).
    pub url: String,
    /// Sent as `model`.
    pub model: String,
    /// The whole request's time limit, connecting included.
    pub timeout: Duration,
    /// `Authorization: Bearer` value, if the server wants one.
    pub api_key: Option<String>,
}

impl VisionConfig {
    /// Defaults for `url`: model `default`, 8 s, no key.
    pub fn new(url: impl Into<String>) -> Self {
        VisionConfig {
            url: url.into(),
            model: "default".into(),
            timeout: Duration::from_secs(8),
            api_key: None,
        }
    }
}

/// Why no description came.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// No answer within the time limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Not reached, or the connection broke.
    #[error("not reached: {0}")]
    Unreachable(String),
    /// An answer that is not a description (a status other than 200, bad JSON, no text).
    #[error("{0}")]
    Failed(String),
    /// The model answered with nothing.
    #[error("the model described nothing")]
    Empty,
}

impl VisionError {
    /// The `outcome` label of `kefu_vision_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            VisionError::Timeout(_) => "timeout",
            VisionError::Unreachable(_) => "unreachable",
            VisionError::Failed(_) => "error",
            VisionError::Empty => "empty",
        }
    }
}

/// Every `outcome` of `kefu_vision_total`: `described` and each [`VisionError::outcome`].
pub const OUTCOMES: [&str; 5] = ["described", "timeout", "unreachable", "error", "empty"];

/// The client.
pub struct Vision {
    config: VisionConfig,
    endpoint: String,
    /// The endpoint as logs show it (credentials and query values hidden).
    shown: String,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct Answer {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
}

impl Vision {
    /// A client for `config`; nothing is sent until the first image.
    pub fn new(config: VisionConfig) -> Result<Self, VisionError> {
        let endpoint = super::http::completions_endpoint("--vision-url", &config.url).map_err(VisionError::Failed)?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            .build()
            .into();
        Ok(Vision {
            shown: crate::safety::logsafe::redacted_url(&endpoint),
            endpoint,
            config,
            agent,
        })
    }

    /// The endpoint as a log line may show it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// What the image (`mime`, `bytes`) shows, in at most [`MAX_DESCRIPTION_CHARS`]
    /// characters. Blocks for up to the configured timeout: call it off the runtime's
    /// workers.
    pub fn describe(&self, mime: &str, bytes: &[u8]) -> Result<String, VisionError> {
        let url = format!(
            "data:{mime};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        let body = json!({
            "model": self.config.model,
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "text", "text": PROMPT},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }],
            "max_tokens": 256,
            "temperature": 0,
            "stream": false,
        });
        let mut call = self.agent.post(&self.endpoint);
        if let Some(key) = &self.config.api_key {
            call = call.header("Authorization", &format!("Bearer {key}"));
        }
        let response = match call.send_json(&body) {
            Ok(response) => response,
            Err(ureq::Error::Timeout(_)) => return Err(VisionError::Timeout(self.config.timeout)),
            Err(e) => return Err(VisionError::Unreachable(e.to_string())),
        };
        let status = response.status().as_u16();
        // A description is short: a larger answer is not one (and is not read whole).
        let text = match response.into_body().with_config().limit(256 * 1024).read_to_string() {
            Ok(text) => text,
            Err(ureq::Error::Timeout(_)) => return Err(VisionError::Timeout(self.config.timeout)),
            Err(e) => return Err(VisionError::Failed(format!("the answer could not be read: {e}"))),
        };
        if status != 200 {
            let start: String = text.chars().take(200).collect();
            return Err(VisionError::Failed(format!("answered {status}: {start}")));
        }
        let answer: Answer =
            serde_json::from_str(&text).map_err(|e| VisionError::Failed(format!("not a chat completion: {e}")))?;
        let content = answer
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .unwrap_or_default();
        let description = tidy(&content);
        if description.is_empty() {
            return Err(VisionError::Empty);
        }
        Ok(description)
    }
}

/// `text` on one line: blank runs folded to one space, control characters dropped, cut to
/// [`MAX_DESCRIPTION_CHARS`] characters.
pub fn tidy(text: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for word in text.split_whitespace() {
        let word: String = word.chars().filter(|c| !c.is_control()).collect();
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            if chars + 1 >= MAX_DESCRIPTION_CHARS {
                break;
            }
            out.push(' ');
            chars += 1;
        }
        for c in word.chars() {
            if chars == MAX_DESCRIPTION_CHARS {
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_one_bounded_line() {
        assert_eq!(tidy("  外包装\n\n破损，\t角落压扁  "), "外包装 破损， 角落压扁");
        assert_eq!(tidy("a\u{7}b"), "ab");
        let long = "很".repeat(400);
        assert_eq!(tidy(&long).chars().count(), MAX_DESCRIPTION_CHARS);
        assert_eq!(tidy(" \n "), "");
    }

    #[test]
    fn only_http_urls_are_taken() {
        assert!(Vision::new(VisionConfig::new("file:///etc/passwd")).is_err());
        let vision = Vision::new(VisionConfig::new("http://u:p@127.0.0.1:1/v1")).unwrap();
        assert_eq!(vision.endpoint, "http://u:p@127.0.0.1:1/v1/chat/completions");
        assert!(!vision.shown().contains(":p@"));
    }
}
