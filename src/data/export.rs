//! `kefu data export`: fine-tuning data from a conversation log.
//!
//! Which answers become examples:
//! - every **human agent's answer** (`agent` lines): what a person said when the bot could
//!   not help is the most valuable data the shop has;
//! - kefu's answers from `rule`, `flow`, `promotion`, `faq`, `cache` and `llm` whose
//!   confidence (the answer's own, for the model; else the intent's) is at least
//!   `--min-confidence` (0.8), that did not hand the conversation over. Fallbacks, safety
//!   replies and handoff notices never are.
//!
//! Conversations the customer scored below `--min-feedback` (3) give no examples at all:
//! answers a customer was unhappy with should not be learned. Identical examples are
//! written once (a popular rule answers the same question thousands of times).
//!
//! Each example carries the conversation before the answer, at most `--context` earlier
//! messages (6), so a flow's follow-up question makes sense; turns the safety filter
//! answered and the bot's handoff notices are left out of it. Two formats:
//! - `sft`: the seeds' `{"input_text": "用户:…\n客服:…\n用户:…\n客服:", "target_text": "…"}`;
//! - `messages`: chat JSONL, `{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`,
//!   starting with a user message, consecutive messages of one role joined by a newline.
//!
//! The log should be cleaned first (`kefu data clean`); export does not mask again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{DataError, ReadStats, Record};
use crate::engine::AnswerSource;

/// The output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{"input_text", "target_text"}` (the seeds' format).
    Sft,
    /// `{"messages": [...]}` chat JSONL.
    Messages,
}

/// What to export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// The output format.
    pub format: Format,
    /// Bot answers below this confidence are left out.
    pub min_confidence: f64,
    /// Conversations with a score below this give no examples.
    pub min_feedback: u8,
    /// Earlier messages kept as context.
    pub context: usize,
    /// Export kefu's own answers too, not only agents'.
    pub bot_answers: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            format: Format::Sft,
            min_confidence: 0.8,
            min_feedback: 3,
            context: 6,
            bot_answers: true,
        }
    }
}

/// What `kefu data export` wrote and left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ExportSummary {
    /// Examples written.
    pub written: u64,
    /// Of which human agents' answers.
    pub agent: u64,
    /// Of which kefu's answers, by source.
    pub bot: Vec<(String, u64)>,
    /// Bot answers below the confidence threshold.
    pub low_confidence: u64,
    /// Answers in conversations scored below `min_feedback`.
    pub low_feedback: u64,
    /// Examples identical to one already written.
    pub duplicates: u64,
    /// Lines read, and those that did not parse.
    pub read: ReadStats,
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bot: Vec<String> = self.bot.iter().map(|(s, n)| format!("{s} {n}")).collect();
        writeln!(
            f,
            "{} examples: {} agent answers, bot answers: {}",
            self.written,
            self.agent,
            if bot.is_empty() { "none".into() } else { bot.join(", ") }
        )?;
        writeln!(
            f,
            "left out: {} below the confidence threshold, {} in low-scored conversations, {} duplicates",
            self.low_confidence, self.low_feedback, self.duplicates
        )?;
        super::report::write_bad_lines(f, &self.read)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Speaker {
    User,
    Assistant,
}

/// Whether kefu's answer from `source` may be learned from.
fn exportable(source: AnswerSource) -> bool {
    matches!(
        source,
        AnswerSource::Rule
            | AnswerSource::Flow
            | AnswerSource::Promotion
            | AnswerSource::Faq
            | AnswerSource::Cache
            | AnswerSource::Llm
    )
}

/// Writes the examples of the log `files` to `out`.
pub fn export(
    files: &[PathBuf],
    options: &ExportOptions,
    out: &mut dyn Write,
    out_path: &Path,
) -> Result<ExportSummary, DataError> {
    // First pass: the lowest score of each conversation.
    let mut lowest: HashMap<String, u8> = HashMap::new();
    super::read(files, |record, _| {
        if let Record::Feedback(f) = record {
            let score = lowest.entry(f.session).or_insert(f.score);
            *score = (*score).min(f.score);
        }
    })?;
    let unhappy = |session: &str| lowest.get(session).is_some_and(|&s| s < options.min_feedback);

    let mut summary = ExportSummary::default();
    let mut by_source: HashMap<&'static str, u64> = HashMap::new();
    let mut history: HashMap<String, VecDeque<(Speaker, String)>> = HashMap::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut write_error = None;
    let mut emit = |context: &VecDeque<(Speaker, String)>, target: &str, summary: &mut ExportSummary| -> bool {
        let line = example(options.format, context, target);
        let mut hasher = std::hash::DefaultHasher::new();
        line.hash(&mut hasher);
        if !seen.insert(hasher.finish()) {
            summary.duplicates += 1;
            return false;
        }
        if write_error.is_none()
            && let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n"))
        {
            write_error = Some(e);
        }
        summary.written += 1;
        true
    };
    let read = super::read(files, |record, _| match record {
        // A blocked message and the filter's refusal are not conversation to learn from.
        Record::Turn(turn) if turn.source == AnswerSource::Safety => {}
        Record::Turn(turn) => {
            let context = history.entry(turn.session.clone()).or_default();
            push(context, Speaker::User, &turn.message, options.context);
            if options.bot_answers && exportable(turn.source) && turn.handoff.is_none() && !turn.reply.is_empty() {
                let confidence = turn.answer_confidence.unwrap_or(turn.confidence);
                if confidence < options.min_confidence {
                    summary.low_confidence += 1;
                } else if unhappy(&turn.session) {
                    summary.low_feedback += 1;
                } else if emit(context, &turn.reply, &mut summary) {
                    *by_source.entry(turn.source.name()).or_default() += 1;
                }
            }
            // A handoff notice ("正在为您转接人工客服") is not an answer: leaving it out of
            // the context makes the agent's answer that follows the answer to the
            // customer's question.
            let handed_over = turn.handoff.is_some() && turn.source != AnswerSource::Human;
            if !turn.reply.is_empty() && !handed_over {
                push(context, Speaker::Assistant, &turn.reply, options.context);
            }
        }
        Record::Agent(agent) => {
            let context = history.entry(agent.session.clone()).or_default();
            // An answer to the customer's last message; a second agent message in a row
            // answers nothing new.
            if context.back().is_some_and(|(s, _)| *s == Speaker::User) {
                if unhappy(&agent.session) {
                    summary.low_feedback += 1;
                } else if emit(context, &agent.text, &mut summary) {
                    summary.agent += 1;
                }
            }
            push(context, Speaker::Assistant, &agent.text, options.context);
        }
        Record::Takeover(_)
        | Record::Release(_)
        | Record::Feedback(_)
        | Record::Resolve(_)
        | Record::Requeue(_)
        | Record::Note(_)
        // A proactive message answers no question: no training pair.
        | Record::Event(_)
        | Record::Proactive(_) => {}
    })?;
    summary.read = read;
    let mut bot: Vec<(String, u64)> = by_source.into_iter().map(|(s, n)| (s.to_string(), n)).collect();
    bot.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    summary.bot = bot;
    if let Some(source) = write_error.or_else(|| out.flush().err()) {
        return Err(DataError::Write {
            path: out_path.to_path_buf(),
            source,
        });
    }
    Ok(summary)
}

/// Appends a message to a conversation's context, keeping the last `keep` (plus room for
/// the message being answered).
fn push(context: &mut VecDeque<(Speaker, String)>, who: Speaker, text: &str, keep: usize) {
    context.push_back((who, text.to_string()));
    while context.len() > keep + 1 {
        context.pop_front();
    }
}

#[derive(Serialize)]
struct Sft<'a> {
    input_text: String,
    target_text: &'a str,
}

#[derive(Serialize)]
struct ChatMessage {
    role: &'static str,
    content: String,
}

#[derive(Serialize)]
struct Chat {
    messages: Vec<ChatMessage>,
}

/// One example as a JSON line (without the newline).
fn example(format: Format, context: &VecDeque<(Speaker, String)>, target: &str) -> String {
    // Start at the first customer message: an answer without its question teaches nothing.
    let start = context.iter().position(|(s, _)| *s == Speaker::User).unwrap_or(0);
    let context = context.iter().skip(start);
    let json = match format {
        Format::Sft => {
            let mut input = String::new();
            for (who, text) in context {
                input.push_str(match who {
                    Speaker::User => "用户:",
                    Speaker::Assistant => "客服:",
                });
                input.push_str(text);
                input.push('\n');
            }
            input.push_str("客服:");
            serde_json::to_string(&Sft {
                input_text: input,
                target_text: target,
            })
        }
        Format::Messages => {
            let mut messages: Vec<ChatMessage> = Vec::new();
            for (who, text) in context {
                let role = match who {
                    Speaker::User => "user",
                    Speaker::Assistant => "assistant",
                };
                match messages.last_mut() {
                    Some(last) if last.role == role => {
                        last.content.push('\n');
                        last.content.push_str(text);
                    }
                    _ => messages.push(ChatMessage {
                        role,
                        content: text.clone(),
                    }),
                }
            }
            messages.push(ChatMessage {
                role: "assistant",
                content: target.to_string(),
            });
            serde_json::to_string(&Chat { messages })
        }
    };
    json.expect("strings always serialize")
}
