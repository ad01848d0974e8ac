//! `kefu generate`: K concurrent generations through the same backend the server uses,
//! measured, as one JSON line. The benchmarks compare it with llama.cpp's own
//! `llama-bench` and `llama-batched-bench` (docs/model.md).

use std::sync::{Arc, Barrier};
use std::time::Instant;

use serde::Serialize;

use super::{ChatMessage, ChatRole, GenerateRequest, Generation, LlmBackend, LlmError, prompt};

/// What to run.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// The system message (the shared prefix).
    pub system: String,
    /// The customer's message.
    pub prompt: String,
    /// Tokens to generate per stream.
    pub max_tokens: u32,
    /// Concurrent streams.
    pub parallel: usize,
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
    /// Generate exactly `max_tokens`, past end-of-sequence (throughput runs).
    pub ignore_eos: bool,
    /// First run one request with the same system message and another question, so that
    /// the measured streams find the shared prefix cached; its timing is reported as cold.
    pub warm: bool,
}

/// One stream's figures.
#[derive(Clone, Debug, Serialize)]
pub struct StreamReport {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Of which found in the prefix cache.
    pub cached_tokens: u32,
    /// Waiting for a sequence, ms.
    pub queue_ms: f64,
    /// Prompt evaluation to first token, ms.
    pub prompt_ms: f64,
    /// Tokens generated.
    pub generated_tokens: u32,
    /// First token to last, ms.
    pub generation_ms: f64,
    /// Generation speed of this stream (tokens after the first over `generation_ms`).
    pub tokens_per_s: f64,
    /// The text, for a look at quality.
    pub text: String,
}

/// The JSON line `kefu generate` prints.
#[derive(Clone, Debug, Serialize)]
pub struct GenerateReport {
    /// The backend's name.
    pub model: String,
    /// Streams run at once.
    pub parallel: usize,
    /// Prompt tokens (of the first stream).
    pub prompt_tokens: u32,
    /// Median prompt time over streams, ms.
    pub prompt_ms: f64,
    /// Tokens generated over all streams.
    pub generated_tokens: u32,
    /// Wall time from the earliest first token to the latest last token, ms.
    pub generation_ms: f64,
    /// Aggregate generation speed: all tokens after each stream's first over the wall
    /// generation time.
    pub tokens_per_s: f64,
    /// Time to first token of the warm-up request (shared prefix not cached), ms.
    pub cold_prompt_ms: Option<f64>,
    /// Per stream.
    pub streams: Vec<StreamReport>,
}

/// Runs the generations and measures them.
pub fn run(backend: Arc<dyn LlmBackend>, options: &GenerateOptions) -> Result<GenerateReport, LlmError> {
    let request = |message: &str, max_tokens: u32| GenerateRequest {
        messages: vec![
            ChatMessage::new(ChatRole::System, options.system.clone()),
            ChatMessage::new(ChatRole::User, prompt::wrap_customer_text(message)),
        ],
        max_tokens,
        temperature: options.temperature,
        top_p: 0.9,
        deadline: None,
        stop: Vec::new(),
        ignore_eos: options.ignore_eos,
    };
    let cold_prompt_ms = if options.warm {
        let warm = backend.generate(&request("你好", 1), &mut |_| std::ops::ControlFlow::Continue(()))?;
        Some(warm.queue_ms + warm.prompt_ms)
    } else {
        None
    };
    let parallel = options.parallel.max(1);
    let barrier = Arc::new(Barrier::new(parallel));
    let handles: Vec<_> = (0..parallel)
        .map(|_| {
            let backend = Arc::clone(&backend);
            let barrier = Arc::clone(&barrier);
            let request = request(&options.prompt, options.max_tokens);
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let result = backend.generate(&request, &mut |_| std::ops::ControlFlow::Continue(()));
                (start, result)
            })
        })
        .collect();
    let mut runs: Vec<(Instant, Generation)> = Vec::new();
    for h in handles {
        let (start, result) = h
            .join()
            .map_err(|_| LlmError::Failed("a generation thread panicked".into()))?;
        runs.push((start, result?));
    }
    let first = |(start, g): &(Instant, Generation)| *start + ms_duration(g.queue_ms + g.prompt_ms);
    let last = |run: &(Instant, Generation)| first(run) + ms_duration(run.1.generation_ms);
    let begin = runs.iter().map(first).min().unwrap_or_else(Instant::now);
    let end = runs.iter().map(last).max().unwrap_or(begin);
    let wall_ms = (end - begin).as_secs_f64() * 1000.0;
    let after_first: u32 = runs.iter().map(|(_, g)| g.tokens.saturating_sub(1)).sum();
    let mut prompt_times: Vec<f64> = runs.iter().map(|(_, g)| g.prompt_ms).collect();
    prompt_times.sort_by(f64::total_cmp);
    let streams = runs
        .iter()
        .map(|(_, g)| StreamReport {
            prompt_tokens: g.prompt_tokens,
            cached_tokens: g.cached_tokens,
            queue_ms: round(g.queue_ms),
            prompt_ms: round(g.prompt_ms),
            generated_tokens: g.tokens,
            generation_ms: round(g.generation_ms),
            tokens_per_s: round(rate(g.tokens.saturating_sub(1), g.generation_ms)),
            text: g.text.clone(),
        })
        .collect();
    Ok(GenerateReport {
        model: backend.name().to_string(),
        parallel,
        prompt_tokens: runs.first().map_or(0, |(_, g)| g.prompt_tokens),
        prompt_ms: round(prompt_times.get(prompt_times.len() / 2).copied().unwrap_or(0.0)),
        generated_tokens: runs.iter().map(|(_, g)| g.tokens).sum(),
        generation_ms: round(wall_ms),
        tokens_per_s: round(rate(after_first, wall_ms)),
        cold_prompt_ms: cold_prompt_ms.map(round),
        streams,
    })
}

fn ms_duration(ms: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}

fn rate(tokens: u32, ms: f64) -> f64 {
    if ms <= 0.0 {
        0.0
    } else {
        f64::from(tokens) * 1000.0 / ms
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{MockLlm, MockRule};

    #[test]
    fn parallel_streams_are_counted_together() {
        let backend: Arc<dyn LlmBackend> = Arc::new(MockLlm::new(vec![MockRule {
            contains: String::new(),
            reply: "一二三四五六七八".into(),
            confidence: 0.9,
            delay_ms: 0,
        }]));
        let options = GenerateOptions {
            system: "你是客服。".into(),
            prompt: "在吗".into(),
            max_tokens: 3,
            parallel: 3,
            temperature: 0.0,
            ignore_eos: true,
            warm: true,
        };
        let report = run(backend, &options).unwrap();
        assert_eq!(
            (report.parallel, report.generated_tokens, report.streams.len()),
            (3, 9, 3)
        );
        assert_eq!(report.streams[0].text, "一二三四五六");
        assert!(report.cold_prompt_ms.is_some());
    }
}
