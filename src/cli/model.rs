//! Which model answers: the flags `chat`, `serve` and `generate` share (`--model`,
//! `--llm-url`...), opening the backend they name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

/// Which model answers when no rule is confident.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// The GGUF model run in process by llama.cpp, or `none`. models/fetch.sh puts the
    /// default one at models/default.gguf; when that default is missing kefu runs without
    /// a model (and says so); a path given explicitly must exist.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// An OpenAI-compatible server (llama-server, vLLM, a hosted API) instead of the
    /// model in process. The key, if any, is read from KEFU_LLM_API_KEY.
    #[arg(long)]
    llm_url: Option<String>,
    /// The model name sent to --llm-url.
    #[arg(long, default_value = "default")]
    llm_model: String,
    /// llama.cpp decoding threads (0: one per core): the most a decode uses. Each decode
    /// takes the cores nobody else is using at that moment (rule-answered turns, other
    /// programs), down to one; see docs/model.md.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Decode with all --threads always, even while other work wants the cores
    /// (benchmarks that compare like with like).
    #[arg(long)]
    fixed_threads: bool,
    /// Conversations the model generates for at once (sequences batched together).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Tokens of context per conversation (prompt and answer).
    #[arg(long, default_value_t = 2048)]
    ctx: u32,
    /// The most tokens in one llama.cpp decode (its `-b`): prompt chunks and the next
    /// token of every generating conversation share it. Larger evaluates long or many
    /// prompts in fewer steps; smaller keeps the steps, and so the token gaps of the
    /// conversations already answering, short.
    #[arg(long, default_value_t = 512)]
    batch: u32,
    /// A LoRA adapter (GGUF) and its scale, `PATH[:SCALE]`: a shop's fine-tune on its own
    /// dialogues, applied over the base model. Repeatable: several adapters are merged
    /// into one (exactly: their ranks side by side) before loading.
    #[arg(long, value_parser = kefu::llm::parse_lora)]
    lora: Vec<(PathBuf, f32)>,
    /// A llama.cpp built-in chat template (`chatml`, `gemma`, `llama3`...) instead of the
    /// one in the GGUF.
    #[arg(long)]
    chat_template: Option<String>,
    /// How long the model may take for one answer, retries and waits included, in
    /// seconds (`20`, `2.5`) or milliseconds (`1500ms`); past it the engine falls back.
    #[arg(long, default_value = "20", value_parser = parse_duration)]
    pub llm_timeout: Duration,
    /// How long one attempt may take to connect to --llm-url (TCP and TLS), in seconds or
    /// milliseconds; the attempt fails and the next one starts (within --llm-timeout).
    #[arg(long, default_value = "5", value_parser = parse_duration)]
    llm_connect_timeout: Duration,
}

/// Parses a duration: seconds (`20`, `2.5`, `20s`) or milliseconds (`1500ms`).
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = match text.strip_suffix("ms") {
        Some(ms) => (ms, 0.001),
        None => (text.strip_suffix('s').unwrap_or(text), 1.0),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: expected seconds (20, 2.5) or milliseconds (1500ms)"))?;
    Duration::try_from_secs_f64(value * scale)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{text}`: expected a positive duration"))
}

/// Where models/fetch.sh puts the default model.
const DEFAULT_MODEL: &str = "models/default.gguf";

impl ModelArgs {
    /// Whether a model was named (`--llm-url`, or `--model` other than the default):
    /// `kefu replay` generates model answers only then.
    pub fn named(&self) -> bool {
        self.llm_url.is_some() || self.model != DEFAULT_MODEL
    }

    /// The backend these flags describe, `None` for `--model none` or a missing default.
    pub fn open(&self) -> Result<Option<Arc<dyn kefu::llm::LlmBackend>>> {
        let mut options = kefu::llm::ModelOptions {
            url: self.llm_url.clone(),
            url_model: Some(self.llm_model.clone()),
            api_key: std::env::var("KEFU_LLM_API_KEY").ok().filter(|k| !k.is_empty()),
            threads: self.threads,
            fixed_threads: self.fixed_threads,
            parallel: self.parallel,
            ctx_per_seq: self.ctx,
            batch: self.batch,
            lora: self.lora.clone(),
            chat_template: self.chat_template.clone(),
            timeout: Some(self.llm_timeout),
            connect_timeout: Some(self.llm_connect_timeout),
            ..Default::default()
        };
        if self.llm_url.is_none() && self.model != "none" {
            let path = PathBuf::from(&self.model);
            if !path.exists() && self.model == DEFAULT_MODEL {
                eprintln!(
                    "kefu: no model at {DEFAULT_MODEL} (run models/fetch.sh); answering without a model: \
                     fallback arms that ask it are skipped"
                );
                return Ok(None);
            }
            options.model = Some(path);
        }
        Ok(kefu::llm::open(&options)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_or_milliseconds() {
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        for bad in ["", "0", "-1", "soon", "1e400", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
