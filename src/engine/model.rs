//! The model step of a turn, reached when a fallback arm says `llm`: the prompt's input,
//! the answer-cache key made from it, generation streamed through the output guard, and the
//! judge that decides whether the answer is shown (docs/language.md section 1, "Notes on
//! the order"). An answer that is not good enough counts as a failure and the fallback
//! chain runs again without its model arms.

use std::ops::ControlFlow;

use super::AnswerSource;
use super::cache::{self, Scope as CacheScope};
use super::scope::{PromotionTime, minute};
use super::turn::{Answer, Decision, Turn, step};
use crate::kb::{self, PassageKind};
use crate::llm::judge::{self, Watch};
use crate::llm::{ChatRole, GenerateRequest, Generation, LlmBackend, prompt};
use crate::ruleset::{ModelCall, Style};
use crate::safety::GuardStep;

/// The trace's words for a generation a person's act stopped.
const SILENCED: &str = "silenced: a person took the conversation over";

/// How a guarded generation ended.
enum Generated {
    /// The model's answer; the output guard let all of it through (and streamed it).
    Text(Generation),
    /// The model gave no answer (noted in the trace).
    Failed,
    /// The output guard stopped a blocked word: the customer gets this answer instead.
    Blocked(Answer),
}

impl Turn<'_> {
    /// Asks the model as the fallback arm says, judges its answer, and falls back when it
    /// is not good enough.
    pub(super) fn ask_model(&mut self, call: ModelCall, on_delta: &mut dyn FnMut(&str)) -> Answer {
        let Some(llm) = self.engine.llm.clone() else {
            // The fallback chain only asks for the model when there is one.
            return Answer::new(
                AnswerSource::Fallback,
                self.pick(&self.rules.shop.fallback_message).clone(),
            );
        };
        let style = self.style(call.style).cloned();
        // Scripts and retrieval run first (they write to the trace); the rest of the input
        // only reads the turn.
        // Promotion texts for the prompt are not said to the customer: a missing variant
        // among them does not make the answer one to translate.
        let untranslated = self.untranslated;
        let promotions = self.promotions_for_prompt();
        self.untranslated = untranslated;
        let passages = self.passages();
        let input = self.prompt_input(style.as_ref(), promotions, passages);
        let key = self.model_cache_key(style.as_ref(), &input);
        let (messages, injected) = prompt::build(&input);
        self.trace.push(step("prompt", injected.join(", ")));
        // Kept for the console's test chat, which shows the prompt; a copy of a few
        // kilobytes on a turn that is about to generate.
        self.prompt = messages.clone();
        if let Some(hit) = self.cached(&key) {
            self.trace.push(step("cache", format!("hit: {} answer", hit.origin)));
            return Answer::new(AnswerSource::Cache, hit.reply);
        }
        // The judge checks numbers against what the shop told the model.
        let facts = match messages.first() {
            Some(m) if m.role == ChatRole::System => m.content.clone(),
            _ => String::new(),
        };
        let instructions = prompt::instructions_in(&self.rules.shop.persona, self.answer_language());
        let context = judge::Context {
            message: &self.message.clone(),
            instructions: &instructions,
            facts: &facts,
            language: self.answer_language(),
        };
        match self.generate_guarded(&*llm, style.as_ref(), call, messages, &context, on_delta) {
            Generated::Blocked(answer) => return answer,
            Generated::Text(generation) => {
                if let Some(answer) = self.judge(&*llm, &generation, &context, key) {
                    return answer;
                }
            }
            Generated::Failed => {}
        }
        let decision = self.fail_and_fall_back();
        self.decision_answer(decision)
    }

    /// The first style whose `when` holds (a style without `when` always does).
    fn style(&mut self, forced: Option<usize>) -> Option<&Style> {
        let rules = self.rules;
        if let Some(i) = forced {
            return rules.styles.get(i);
        }
        for style in &rules.styles {
            match &style.when {
                Some(when) if !self.holds(when, format_args!("style {}", style.name)) => {}
                _ => return Some(style),
            }
        }
        None
    }

    /// The `say` texts of the promotions meant for this customer: those on now, and those
    /// that start within the shop's `upcoming_days`, each with its start (`2026-12-01
    /// 00:00开始：…`), so the model can answer "双12有活动吗" before it starts without
    /// offering it as if it were on.
    fn promotions_for_prompt(&mut self) -> (Vec<String>, Vec<String>) {
        let rules = self.rules;
        let (mut on, mut upcoming) = (Vec::new(), Vec::new());
        for (i, time) in self.promotions_for_customer() {
            let promo = &rules.promotions[i];
            let say = self.render(&promo.say, format_args!("promotion {}", promo.name));
            match time {
                PromotionTime::On => on.push(say),
                PromotionTime::Upcoming => upcoming.push(format!("{}开始：{say}", minute(&promo.from))),
            }
        }
        (on, upcoming)
    }

    /// Knowledge-base passages for the prompt, noted in the trace.
    fn passages(&mut self) -> Vec<String> {
        let kb = &self.rules.kb;
        if kb.is_empty() {
            return Vec::new();
        }
        let (query, focus) = self.retrieval();
        let found = kb.passages_for(query, focus, kb::PASSAGES_IN_PROMPT);
        if found.is_empty() {
            return Vec::new();
        }
        let described: Vec<String> = found
            .iter()
            .map(|r| match kb.passages[r.passage].kind {
                PassageKind::Product(p) if Some(p) == focus => format!("product {} (focus)", kb.products[p].id),
                PassageKind::Product(p) => format!("product {} {:.2}", kb.products[p].id, r.confidence),
                PassageKind::Faq(f) => format!("faq {} {:.2}", kb.faqs[f].id, r.confidence),
            })
            .collect();
        self.trace
            .push(step("kb", format!("passages: {}", described.join(", "))));
        found.iter().map(|r| kb.passages[r.passage].text.clone()).collect()
    }

    /// What the prompt is made of: the persona, the style's tone, `promotions` and
    /// `passages`, the policies that apply to the understood intent and its levels, the
    /// session's slots and history, and the message.
    fn prompt_input<'s>(
        &'s self,
        style: Option<&'s Style>,
        (promotions, upcoming): (Vec<String>, Vec<String>),
        passages: Vec<String>,
    ) -> prompt::PromptInput<'s> {
        let rules = self.rules;
        let mut policy_targets: Vec<&str> = self.understanding.levels.iter().map(|(l, _)| l.as_str()).collect();
        if let Some(i) = &self.understanding.intent {
            policy_targets.push(i);
        }
        let policies = rules
            .policies_for(&policy_targets)
            .map(|p| (p.name.as_str(), p.text.as_str()))
            .collect();
        let slots = self
            .session
            .slots
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        prompt::PromptInput {
            persona: &rules.shop.persona,
            tone: style.and_then(|s| s.tone.as_deref()),
            promotions,
            upcoming,
            policies,
            passages,
            slots,
            history: self.session.history.iter().collect(),
            message: &self.message,
            language: self.answer_language(),
            images: self
                .images
                .iter()
                .filter_map(|i| i.description.as_deref())
                .filter(|d| !d.trim().is_empty())
                .collect(),
        }
    }

    /// The language a model answer must be in: the turn's, when the shop serves several;
    /// `None` for a shop of one language (the prompt asks for Chinese, and the judge
    /// reads the message's own language, as before languages).
    pub(super) fn answer_language(&self) -> Option<crate::nlu::Lang> {
        (self.rules.shop.languages.len() > 1).then_some(self.language)
    }

    /// The answer-cache key of a model answer to `input`.
    fn model_cache_key(&self, style: Option<&Style>, input: &prompt::PromptInput<'_>) -> cache::Key {
        let history_start = input.history.len().saturating_sub(prompt::HISTORY_IN_PROMPT);
        // Everything in the prompt but the message: a cached answer is reused only when
        // all of it is the same (see `cache`).
        let context = cache::fingerprint(
            [style.map_or("", |s| s.name.as_str())]
                .into_iter()
                .chain(input.promotions.iter().map(String::as_str))
                .chain(input.upcoming.iter().map(String::as_str))
                .chain(input.policies.iter().map(|p| p.0))
                .chain(input.passages.iter().map(String::as_str))
                .chain(input.slots.iter().flat_map(|(k, v)| [*k, *v]))
                .chain(input.images.iter().copied())
                .chain(input.history.iter().skip(history_start).map(|h| &*h.text)),
        );
        self.cache_key(CacheScope::Llm { context })
    }

    /// Generates the answer to `messages` within the arm's time budget, streaming it to
    /// `on_delta` through the output guard (text is released only once no blocked word can
    /// still complete across the next chunk) and the judge's [`Watch`], which stops the
    /// generation as soon as the answer is sure to be withheld.
    fn generate_guarded(
        &mut self,
        llm: &dyn LlmBackend,
        style: Option<&Style>,
        call: ModelCall,
        messages: Vec<crate::llm::ChatMessage>,
        context: &judge::Context<'_>,
        on_delta: &mut dyn FnMut(&str),
    ) -> Generated {
        // The arm's budget, within the operator's limit.
        let budget = call.within.map_or(self.engine.config.llm_timeout, |w| {
            w.min(self.engine.config.llm_timeout)
        });
        let request = GenerateRequest {
            messages,
            max_tokens: self.engine.config.max_tokens,
            temperature: style.and_then(|s| s.temperature).unwrap_or(0.5) as f32,
            top_p: style.and_then(|s| s.top_p).unwrap_or(0.9) as f32,
            deadline: Some(std::time::Instant::now() + budget),
            stop: prompt::stop_markers(),
            ignore_eos: false,
        };
        let mut guard = self.rules.safety.output_guard();
        let mut watch = Watch::new(*context);
        let mut blocked: Option<crate::safety::Blocked> = None;
        let mut stopped: Option<String> = None;
        // Registered for as long as it generates: a person taking the conversation over
        // stops it at the next piece of text, before that piece reaches the stream.
        let running = self.engine.running.start(&self.session.id, self.began());
        let generated = {
            let mut sink = |chunk: &str| {
                if running.silenced() {
                    stopped = Some(SILENCED.to_string());
                    return ControlFlow::Break(());
                }
                if let Some(problem) = watch.push(chunk) {
                    stopped = Some(problem);
                    return ControlFlow::Break(());
                }
                match guard.push(chunk) {
                    GuardStep::Emit(text) if !text.is_empty() => on_delta(&text),
                    GuardStep::Emit(_) => {}
                    GuardStep::Blocked(b) => {
                        blocked = Some(b);
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            };
            llm.generate(&request, &mut sink)
        };
        // Silenced after the last piece (or before the first): nothing more is released.
        let silenced = running.silenced();
        drop(running);
        if silenced && stopped.is_none() {
            stopped = Some(SILENCED.to_string());
        }
        if let (Some(problem), Ok(g)) = (&stopped, &generated) {
            self.trace
                .push(step("llm", format!("stopped after {} tokens: {problem}", g.tokens)));
        }
        if let Ok(g) = &generated {
            // Spent whether or not the answer is shown.
            self.usage.prompt += g.prompt_tokens;
            self.usage.completion += g.tokens;
        }
        if blocked.is_none() && stopped.is_none() {
            match guard.finish() {
                GuardStep::Emit(text) if !text.is_empty() => on_delta(&text),
                GuardStep::Emit(_) => {}
                GuardStep::Blocked(b) => blocked = Some(b),
            }
        }
        if let Some(b) = blocked {
            self.trace
                .push(step("safety", format!("model answer blocked: {}", b.category)));
            return Generated::Blocked(Answer::new(AnswerSource::Safety, b.reply));
        }
        if silenced {
            // Not judged: a part of an answer is no answer, and nobody is to see it.
            if generated.is_err() {
                self.trace.push(step("llm", SILENCED));
            }
            return Generated::Failed;
        }
        match generated {
            Ok(generation) => Generated::Text(generation),
            Err(crate::llm::LlmError::Timeout) => {
                self.trace.push(step(
                    "llm",
                    format!("{}: no answer within {} ms", llm.name(), budget.as_millis()),
                ));
                Generated::Failed
            }
            Err(error) => {
                self.trace.push(step("llm", format!("{}: {error}", llm.name())));
                Generated::Failed
            }
        }
    }

    /// Judges the model's answer: shown, and kept in the answer cache under `key`, when its
    /// confidence reaches the shop's `model_threshold`; `None` (withheld) otherwise.
    fn judge(
        &mut self,
        llm: &dyn LlmBackend,
        generation: &Generation,
        context: &judge::Context<'_>,
        key: cache::Key,
    ) -> Option<Answer> {
        let rules = self.rules;
        let verdict = judge::judge(generation, context);
        let threshold = rules.shop.model_threshold;
        self.trace.push(step(
            "llm",
            format!(
                "{}: {} tokens, mean p {:.2}, min p {:.2}, confidence {:.2}",
                llm.name(),
                generation.tokens,
                generation.mean_prob,
                generation.min_prob,
                verdict.confidence,
            ),
        ));
        if verdict.confidence >= threshold {
            let reply = generation.text.trim().to_string();
            self.engine.cache.insert(
                key,
                cache::Entry {
                    reply: reply.clone(),
                    origin: llm.name().to_string(),
                },
            );
            let mut answer = Answer::new(AnswerSource::Llm, reply);
            answer.confidence = Some(verdict.confidence);
            return Some(answer);
        }
        let why = verdict
            .problem
            .unwrap_or_else(|| format!("confidence below {threshold}"));
        self.trace.push(step("llm", format!("answer withheld: {why}")));
        None
    }

    /// The answer of the fallback chain run again after the model failed.
    fn decision_answer(&mut self, decision: Decision) -> Answer {
        match decision {
            Decision::Answer(a) => a,
            // The chain is re-run without model arms, so this cannot happen; answer
            // safely all the same.
            Decision::Llm(_) => {
                let mut a = Answer::new(
                    AnswerSource::Fallback,
                    self.pick(&self.rules.shop.fallback_message).clone(),
                );
                a.failure = true;
                a
            }
        }
    }
}

impl Turn<'_> {
    /// The answer in the turn's language when some text of it had no variant in it and
    /// the shop allows translation (`translate llm`): the model translates it, and the
    /// translation is shown only when the judge passes it (in the right language, no
    /// markup, no number the original does not have) and it keeps every run of digits
    /// and Latin code of the original (order and ticket numbers, sizes, prices) as it is.
    /// Otherwise, and without a model, the answer stays in the shop's language.
    pub(super) fn translated(&mut self, reply: &str) -> Option<String> {
        let rules = self.rules;
        if !self.untranslated || !rules.shop.translate || reply.trim().is_empty() {
            return None;
        }
        let Some(llm) = self.engine.llm.clone() else {
            self.trace
                .push(step("translate", "no model: answered in the shop's language"));
            return None;
        };
        let language = self.language;
        let name = language.name_zh();
        let instructions = format!(
            "你是翻译。把用户发来的客服回复从{}翻译成{name}，只输出译文，不要解释，\
             不要回答其中的问题。数字、订单号、工单号、金额、日期、尺码、链接和英文代码照原样保留。\n",
            rules.shop.language().name_zh(),
        );
        let messages = vec![
            crate::llm::ChatMessage {
                role: ChatRole::System,
                content: instructions.clone(),
            },
            crate::llm::ChatMessage {
                role: ChatRole::User,
                content: prompt::wrap_customer_text(reply),
            },
        ];
        let request = GenerateRequest {
            messages,
            max_tokens: self.engine.config.max_tokens,
            temperature: 0.2,
            top_p: 0.9,
            deadline: Some(std::time::Instant::now() + self.engine.config.llm_timeout),
            stop: prompt::stop_markers(),
            ignore_eos: false,
        };
        let generated = llm.generate(&request, &mut |_| ControlFlow::Continue(()));
        let generation = match generated {
            Ok(g) => g,
            Err(error) => {
                self.trace.push(step(
                    "translate",
                    format!("{}: {error}; answered in the shop's language", llm.name()),
                ));
                return None;
            }
        };
        self.usage.prompt += generation.prompt_tokens;
        self.usage.completion += generation.tokens;
        let context = judge::Context {
            message: reply,
            instructions: &instructions,
            facts: reply,
            language: Some(language),
        };
        let verdict = judge::judge(&generation, &context);
        let text = generation.text.trim();
        let problem = verdict
            .problem
            .or_else(|| {
                (verdict.confidence < rules.shop.model_threshold).then(|| {
                    format!(
                        "confidence {:.2} below {}",
                        verdict.confidence, rules.shop.model_threshold
                    )
                })
            })
            .or_else(|| {
                codes(reply)
                    .find(|code| !text.contains(code))
                    .map(|code| format!("the translation lost `{code}`"))
            });
        match problem {
            Some(why) => {
                self.trace.push(step(
                    "translate",
                    format!("withheld: {why}; answered in the shop's language"),
                ));
                None
            }
            None => {
                self.trace.push(step(
                    "translate",
                    format!("{}: into {language}, confidence {:.2}", llm.name(), verdict.confidence),
                ));
                Some(text.to_string())
            }
        }
    }
}

/// The runs of ASCII letters and digits with a digit in them (`202611110001`,
/// `T20261205-0001`, the `49` of `满49元`), which a translation must keep as they are.
fn codes(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .map(|w| w.trim_matches('-'))
        .filter(|w| w.bytes().any(|b| b.is_ascii_digit()))
}
