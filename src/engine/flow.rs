//! Running flows: a small interpreter over the `Op` program a flow compiles to.
//!
//! A flow runs until it needs the customer (an `ask`) or ends (`end`, `handoff`, running
//! off the end). The state between turns is a [`FlowState`] in the session: the next
//! instruction, the slot being asked for, misses, and `set` variables. After a reload the
//! pending ask is found again by its slot name, so an edited flow continues where the
//! customer is; a flow that no longer exists is dropped and the message is handled as if
//! no flow were running.

use std::collections::BTreeSet;

use super::AnswerSource;
use super::scope::{dynamic_to_json, json_to_dynamic};
use super::turn::{Answer, Decision, Turn, step};
use crate::dialogue::FlowState;
use crate::ruleset::OpKind;

/// Words that cancel a flow when they make up (nearly) the whole message.
const CANCEL_WORDS: [&str; 8] = ["算了", "不用了", "取消", "不要了", "不办了", "不退了", "不换了", "退出"];
/// A message longer than this (in characters, punctuation aside) is not a bare "cancel".
const CANCEL_MAX_CHARS: usize = 8;
/// Instructions one turn may run before the flow is stopped: a `goto` cycle that never
/// asks the customer anything would otherwise spin.
const STEP_BUDGET: usize = 256;

/// Whether a message cancels the flow in progress.
fn is_cancel(message: &str) -> bool {
    let bare: String = message.chars().filter(|c| c.is_alphanumeric()).collect();
    bare.chars().count() <= CANCEL_MAX_CHARS && CANCEL_WORDS.iter().any(|w| bare.contains(w))
}

impl Turn<'_> {
    /// Starts flow `index` from its first step.
    pub(super) fn begin_flow(&mut self, index: usize) -> Answer {
        let flow = &self.rules.flows[index];
        // A new run asks its questions afresh.
        for slot in &flow.slots {
            self.session.slots.remove(slot);
        }
        let state = FlowState {
            name: flow.name.clone(),
            started_at: self.now.timestamp_millis(),
            ..FlowState::default()
        };
        self.session.flow = Some(state.clone());
        self.refresh_session_vars();
        self.run_flow(index, state, false)
    }

    /// Handles a message while a flow is waiting; `None` when the flow is gone and the
    /// message should be decided as if no flow were running.
    pub(super) fn continue_flow(&mut self, mut state: FlowState) -> Option<Decision> {
        let rules = self.rules;
        let Some(index) = rules.flows.iter().position(|f| f.name == state.name) else {
            self.trace.push(step(
                "flow",
                format!("flow {} no longer exists (rules reloaded); starting over", state.name),
            ));
            self.refresh_session_vars();
            return None;
        };
        let flow = &rules.flows[index];
        if let Some(slot) = &state.awaiting {
            match flow.ask_index(slot) {
                Some(pc) => state.pc = pc,
                None => {
                    self.trace.push(step(
                        "flow",
                        format!(
                            "flow {} no longer asks for {slot} (rules reloaded); starting over",
                            flow.name
                        ),
                    ));
                    self.refresh_session_vars();
                    return None;
                }
            }
        }

        if is_cancel(&self.message) {
            self.trace
                .push(step("flow", format!("{} cancelled by the customer", flow.name)));
            self.covered.push(format!("flow:{}:cancel", flow.name));
            let mut answer = Answer::new(
                AnswerSource::Flow,
                format!("好的，已为您取消{}。还有其他可以帮您的吗？", flow.name),
            );
            answer.flow = Some(flow.name.clone());
            answer.step = Some("cancel".into());
            self.refresh_session_vars();
            return Some(Decision::Answer(answer));
        }

        // A question about something else is answered, then the pending question is asked
        // again (a digression). It is one when the answer does not fill the slot and either
        // names a rule's keyword (even about the flow's own topic: "先发个尺码表我看看"), or is
        // confidently about another intent. Rules and promotions answer it; failing those, a
        // confident other intent goes to the fallback chain (the model). A slot filled from
        // the whole message accepts anything, so there only a confident other intent counts.
        if let Some(OpKind::Ask {
            entity, prompt, slot, ..
        }) = flow.ops.get(state.pc).map(|op| &op.kind)
            && state.awaiting.is_some()
        {
            let other_intent = self.confident() && !self.intent_starts(index);
            let fills = match entity {
                Some(e) => self.understanding.entity(e).is_some(),
                None => !other_intent,
            };
            if !fills && (other_intent || self.keyword_rule_hit()) {
                self.session.flow = Some(state.clone());
                if let Some(mut answer) = self.answer_by_rules().or_else(|| self.answer_by_promotions()) {
                    if answer.handoff.is_some() {
                        self.session.flow = None;
                        self.trace
                            .push(step("flow", format!("{} ends: the digression hands over", flow.name)));
                    } else {
                        let question = self.render(prompt, format_args!("flow {}", flow.name));
                        answer.reply = format!("{}\n{}", answer.reply, question);
                        self.trace
                            .push(step("flow", format!("digression answered; asking {slot} again")));
                    }
                    return Some(Decision::Answer(answer));
                }
                // Handing a flow to the model on a borderline intent would derail it, so a
                // model-answered digression needs a clearly confident one: halfway between
                // the shop's threshold and certainty.
                let clear = (1.0 + self.rules.shop.threshold) / 2.0;
                if other_intent && self.understanding.confidence >= clear {
                    let question = self.render(prompt, format_args!("flow {}", flow.name));
                    self.pending_question = Some(question);
                    self.trace.push(step(
                        "flow",
                        format!("digression to the fallback; asking {slot} again after"),
                    ));
                    return Some(self.fallback(false));
                }
            }
        }
        self.session.flow = Some(state.clone());
        Some(Decision::Answer(self.run_flow(index, state, true)))
    }

    /// Runs flow `index` from `state` until it waits or ends. `input` says whether this
    /// turn's message answers the pending `ask`.
    fn run_flow(&mut self, index: usize, mut state: FlowState, mut input: bool) -> Answer {
        let rules = self.rules;
        let flow = &rules.flows[index];
        let mark = self.scope.len();
        for (name, value) in &state.vars {
            self.scope.push_dynamic(name.as_str(), json_to_dynamic(value));
        }
        let mut replies: Vec<String> = Vec::new();
        let mut handoff: Option<String> = None;
        let mut waiting = false;
        let mut last_step = String::new();
        // Slots this turn's message already filled, so that a `goto` back to their ask
        // (after "没有查到订单") waits for a new answer instead of reusing the old one.
        let mut prefilled: BTreeSet<String> = BTreeSet::new();
        let mut budget = STEP_BUDGET;

        loop {
            budget -= 1;
            if budget == 0 {
                self.trace.push(step(
                    "error",
                    format!(
                        "flow {}: ran {STEP_BUDGET} steps without asking anything; stopped",
                        flow.name
                    ),
                ));
                break;
            }
            let Some(op) = flow.ops.get(state.pc) else { break };
            self.covered.push(format!("flow:{}:{}", flow.name, op.line));
            match &op.kind {
                OpKind::Ask {
                    slot,
                    entity,
                    prompt,
                    retries,
                    exhausted,
                } => {
                    last_step = format!("ask {slot}@{}", op.line);
                    let awaited = state.awaiting.as_deref() == Some(slot.as_str());
                    if awaited && input {
                        input = false;
                        let value = match entity {
                            Some(e) => self.understanding.entity(e).map(str::to_string),
                            None => Some(self.message.clone()),
                        };
                        if let Some(value) = value {
                            self.trace.push(step("flow", format!("{slot} = {value}")));
                            prefilled.insert(slot.clone());
                            self.session.slots.insert(slot.clone(), value);
                            self.refresh_session_vars();
                            state.awaiting = None;
                            state.misses = 0;
                            state.pc += 1;
                            continue;
                        }
                        state.misses += 1;
                        if state.misses > *retries {
                            self.trace
                                .push(step("flow", format!("{slot}: no answer after {} tries", state.misses)));
                            state.awaiting = None;
                            state.misses = 0;
                            match exhausted {
                                Some(target) => {
                                    state.pc = *target;
                                    continue;
                                }
                                None => break,
                            }
                        }
                        self.trace.push(step(
                            "flow",
                            format!("{slot}: not in the answer; asking again ({}/{retries})", state.misses),
                        ));
                    } else if !awaited {
                        let known = entity
                            .as_ref()
                            .and_then(|e| self.understanding.entity(e))
                            .map(str::to_string);
                        if let Some(value) = known.filter(|_| !prefilled.contains(slot)) {
                            self.trace
                                .push(step("flow", format!("{slot} = {value} (from the same message)")));
                            prefilled.insert(slot.clone());
                            self.session.slots.insert(slot.clone(), value);
                            self.refresh_session_vars();
                            state.pc += 1;
                            continue;
                        }
                        state.awaiting = Some(slot.clone());
                        state.misses = 0;
                    }
                    replies.push(self.render(prompt, format_args!("flow {}", flow.name)));
                    waiting = true;
                    break;
                }
                OpKind::Set { name, value } => {
                    let v = self.value(value, format_args!("flow {}", flow.name));
                    state.vars.insert(name.clone(), dynamic_to_json(&v));
                    if self.scope.contains(name) {
                        self.scope.set_value(name.as_str(), v);
                    } else {
                        self.scope.push_dynamic(name.as_str(), v);
                    }
                    state.pc += 1;
                }
                OpKind::JumpUnless { cond, target } => {
                    state.pc = if self.holds(cond, format_args!("flow {}", flow.name)) {
                        state.pc + 1
                    } else {
                        *target
                    };
                }
                OpKind::Jump(target) => {
                    // Going back to an ask means asking it again.
                    if let Some(OpKind::Ask { slot, .. }) = flow.ops.get(*target).map(|op| &op.kind) {
                        self.session.slots.remove(slot);
                        self.refresh_session_vars();
                    }
                    state.pc = *target;
                }
                OpKind::Call(script) => {
                    let _ = self.value(script, format_args!("flow {}", flow.name));
                    state.pc += 1;
                }
                OpKind::Reply(template) => {
                    last_step = format!("reply@{}", op.line);
                    replies.push(self.render(template, format_args!("flow {}", flow.name)));
                    state.pc += 1;
                }
                OpKind::Handoff(reason) => {
                    last_step = format!("handoff@{}", op.line);
                    handoff = Some(reason.clone().unwrap_or_else(|| format!("flow {}", flow.name)));
                    break;
                }
                OpKind::End => {
                    last_step = format!("end@{}", op.line);
                    break;
                }
            }
        }
        self.scope.rewind(mark);

        if waiting {
            self.session.flow = Some(state);
        } else {
            self.session.flow = None;
            self.trace.push(step("flow", format!("{} ends", flow.name)));
        }
        self.refresh_session_vars();
        let source = if handoff.is_some() {
            AnswerSource::Handoff
        } else {
            AnswerSource::Flow
        };
        if handoff.is_some() {
            replies.push(rules.shop.handoff_message.clone());
        }
        let mut answer = Answer::new(source, replies.join("\n"));
        answer.flow = Some(flow.name.clone());
        answer.step = (!last_step.is_empty()).then_some(last_step);
        answer.handoff = handoff;
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::is_cancel;

    #[test]
    fn only_short_messages_cancel() {
        assert!(is_cancel("算了"));
        assert!(is_cancel("算了，不用了！"));
        assert!(is_cancel("取消"));
        assert!(!is_cancel("我想取消订单然后重新下单可以吗"));
        assert!(!is_cancel("202611010001"));
    }
}
