//! Lowering flows into small programs of `Op`s: asks with their retries and what follows
//! when retries run out, `if` as conditional jumps, `goto` resolved to its ask, and steps
//! after the flow has left reported as unreachable.

use std::collections::{BTreeSet, HashMap};

use super::{Lowerer, Refs, Scripts};
use crate::diag::{Diagnostic, Span, closest};
use crate::dsl::ast::{self, Ident, StepKind};
use crate::ruleset::{Flow, FlowStart, Op, OpKind};
use crate::script::{Names, Template, Texts};

/// How many times an `ask` is repeated when the answer does not fill its slot and the
/// step says nothing.
const DEFAULT_RETRIES: u32 = 2;

impl Lowerer<'_> {
    pub(super) fn flows(&mut self, flows: &[ast::Flow], compiler: &Scripts, refs: &Refs<'_>) -> Vec<Flow> {
        let mut out = Vec::new();
        for flow in flows {
            if flow.steps.is_empty() {
                self.push(Diagnostic::error(
                    flow.name.span,
                    format!("flow `{}` has no steps", flow.name.name),
                ));
                continue;
            }
            if flow.starts.is_empty() {
                self.push(
                    Diagnostic::warning(
                        flow.name.span,
                        format!("flow `{}` has no `start on`, so nothing starts it", flow.name.name),
                    )
                    .with_help("add e.g. `start on 售后.退货`"),
                );
            }
            let mut asks: HashMap<String, Span> = HashMap::new();
            let mut sets: Vec<String> = Vec::new();
            collect_names(&flow.steps, &mut asks, &mut sets, self.diagnostics);
            let slots: BTreeSet<String> = asks.keys().cloned().collect();
            let names = Names {
                variables: sets,
                slots: Some(&slots),
                ..Names::default()
            };
            let start_names = Names::default();

            let mut starts = Vec::new();
            for start in &flow.starts {
                let trigger = self.trigger(&start.trigger, refs);
                let when = start
                    .when
                    .as_ref()
                    .and_then(|w| compiler.condition(w, &start_names, self.diagnostics));
                if let Some(trigger) = trigger {
                    starts.push(FlowStart { trigger, when });
                }
            }

            let mut program = Program {
                ops: Vec::new(),
                gotos: Vec::new(),
                tails: Vec::new(),
            };
            self.emit(&flow.steps, &mut program, compiler, &names, refs);
            // Retry-exhausted steps go after the main program, each ending the flow
            // unless it jumps elsewhere; the main program must not run into them.
            if !program.tails.is_empty() {
                let span = flow.steps.last().map_or(flow.span, |s| s.span);
                program.ops.push(Op {
                    span,
                    line: self.line(span),
                    kind: OpKind::End,
                });
            }
            for (ask_index, step) in std::mem::take(&mut program.tails) {
                let at = program.ops.len();
                if let OpKind::Ask { exhausted, .. } = &mut program.ops[ask_index].kind {
                    *exhausted = Some(at);
                }
                let jumps = matches!(step.kind, StepKind::Goto(_) | StepKind::Handoff(_) | StepKind::End);
                self.emit(std::slice::from_ref(&step), &mut program, compiler, &names, refs);
                // A handoff after the retries ran out is, unless it says otherwise, for
                // failures in a row.
                if let StepKind::Handoff(ast::Handoff { kind: None, .. }) = &step.kind
                    && let Some(Op {
                        kind: OpKind::Handoff(spec),
                        ..
                    }) = program.ops.get_mut(at)
                {
                    spec.kind = crate::ruleset::HandoffKind::RepeatedFailure;
                }
                if !jumps {
                    program.ops.push(Op {
                        span: step.span,
                        line: self.line(step.span),
                        kind: OpKind::End,
                    });
                }
            }
            let mut resolved = true;
            for (op_index, target) in std::mem::take(&mut program.gotos) {
                match program
                    .ops
                    .iter()
                    .position(|op| matches!(&op.kind, OpKind::Ask { slot, .. } if *slot == target.name))
                {
                    Some(ask) => program.ops[op_index].kind = OpKind::Jump(ask),
                    None => {
                        resolved = false;
                        let mut d = Diagnostic::error(
                            target.span,
                            format!(
                                "`goto {}`: no `ask {}` in flow `{}`",
                                target.name, target.name, flow.name.name
                            ),
                        )
                        .with_label("no such ask");
                        let asks = slots.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
                        let near = closest(&target.name, slots.iter().map(String::as_str)).or_else(|| {
                            // `goto order` for `order_id`: too far apart for a typo.
                            slots
                                .iter()
                                .map(String::as_str)
                                .find(|s| s.starts_with(target.name.as_str()) || target.name.starts_with(*s))
                        });
                        d = match near {
                            Some(near) => d.with_help(format!("did you mean `{near}`? this flow asks for: {asks}")),
                            None if flows.iter().any(|f| f.name.name == target.name) => d.with_help(format!(
                                "`{}` is a flow; `goto` jumps to an `ask` of this flow ({})",
                                target.name,
                                if asks.is_empty() { "it has none" } else { &asks }
                            )),
                            None if asks.is_empty() => d.with_help("this flow has no `ask` steps to go to"),
                            None => d.with_help(format!("this flow asks for: {asks}")),
                        };
                        self.push(d);
                    }
                }
            }
            let cancel_words = flow.cancel_words.as_ref().map(|(words, _)| {
                let mut kept = Vec::new();
                for word in words {
                    let bare: String = word.value.chars().filter(|c| c.is_alphanumeric()).collect();
                    if bare.is_empty() {
                        self.push(
                            Diagnostic::error(word.span, "a cancel word must have letters or digits")
                                .with_label("this would cancel the flow at every message"),
                        );
                    } else {
                        kept.push(bare.to_lowercase());
                    }
                }
                kept
            });
            let cancel_reply = flow
                .cancel_reply
                .as_ref()
                .and_then(|r| compiler.template(r, &names, self.diagnostics));
            let timeout = self.flow_timeout(flow.timeout.as_ref());
            if resolved {
                out.push(Flow {
                    name: flow.name.name.clone(),
                    starts,
                    ops: program.ops,
                    slots,
                    cancel_words,
                    cancel_reply,
                    timeout,
                    span: flow.name.span,
                    location: self.location(flow.name.span),
                });
            }
        }
        out
    }

    fn emit(
        &mut self,
        steps: &[ast::Step],
        program: &mut Program,
        compiler: &Scripts,
        names: &Names<'_>,
        refs: &Refs<'_>,
    ) {
        let mut ended: Option<Span> = None;
        for step in steps {
            if let Some(end) = ended.take() {
                let d = Diagnostic::warning(step.span, "this step can never run")
                    .with_label("unreachable")
                    .with_secondary(end, "the flow leaves here");
                self.push(d);
            }
            let span = step.span;
            match &step.kind {
                StepKind::Ask {
                    slot,
                    entity,
                    prompt,
                    reasks,
                    retry,
                    otherwise,
                    confirm,
                } => {
                    let entity = match entity {
                        // A confirmation is filled by the built-in reading of yes and no.
                        _ if *confirm => Some("yes_no".to_string()),
                        // A photo: the slot takes the id of the first image the customer
                        // sends (`ask 照片 as image "…"`).
                        Some(e) if e.name == crate::ruleset::IMAGE_SLOT => Some(e.name.clone()),
                        Some(e) if !refs.entities.contains(&e.name) => {
                            let kinds = refs.entities.iter().map(String::as_str);
                            self.unknown(e, "entity", kinds.chain([crate::ruleset::IMAGE_SLOT]));
                            None
                        }
                        Some(e) => Some(e.name.clone()),
                        None => refs.entities.contains(&slot.name).then(|| slot.name.clone()),
                    };
                    let retries = match retry {
                        Some(r) if r.value < 0 => {
                            self.push(Diagnostic::error(r.span, "retry count cannot be negative"));
                            0
                        }
                        Some(r) => u32::try_from(r.value).unwrap_or(u32::MAX),
                        None => DEFAULT_RETRIES,
                    };
                    let prompt = compiler
                        .template(prompt, names, self.diagnostics)
                        .unwrap_or_else(|| Texts::new(Template::literal("")));
                    // Texts past the number of re-asks are never said; nor is any, when the
                    // whole message fills the slot (every answer does).
                    if entity.is_none()
                        && let Some(first) = reasks.first()
                    {
                        let d = Diagnostic::warning(first.span, "this ask never asks again")
                            .with_label("re-ask texts are never used")
                            .with_help(format!(
                                "no entity fills `{}`, so any answer fills it; use `ask {} as ENTITY` to accept only some answers",
                                slot.name, slot.name
                            ));
                        self.push(d);
                    } else {
                        for unused in reasks.iter().skip(retries as usize) {
                            let d = Diagnostic::warning(unused.span, "this re-ask text is never used")
                                .with_label(format!("the question is asked again at most {retries} times"))
                                .with_help(
                                    "raise `retry`, or remove the text; the last text is repeated for later re-asks",
                                );
                            self.push(d);
                        }
                    }
                    let reasks = reasks
                        .iter()
                        .map(|text| {
                            compiler
                                .template(text, names, self.diagnostics)
                                .unwrap_or_else(|| Texts::new(Template::literal("")))
                        })
                        .collect();
                    let index = program.ops.len();
                    program.ops.push(Op {
                        span,
                        line: self.line(span),
                        kind: OpKind::Ask {
                            slot: slot.name.clone(),
                            entity,
                            prompt,
                            reasks,
                            retries,
                            exhausted: None,
                            confirm: *confirm,
                        },
                    });
                    if let Some(step) = otherwise {
                        program.tails.push((index, (**step).clone()));
                    }
                }
                StepKind::Set { name, value } => {
                    if let Some(value) = compiler.expr(value, names, self.diagnostics) {
                        program.ops.push(Op {
                            span,
                            line: self.line(span),
                            kind: OpKind::Set {
                                name: name.name.clone(),
                                value,
                            },
                        });
                    }
                }
                StepKind::If { cond, then, otherwise } => {
                    let cond = compiler.condition(cond, names, self.diagnostics);
                    let branch = program.ops.len();
                    program.ops.push(Op {
                        span,
                        line: self.line(span),
                        kind: OpKind::End,
                    });
                    self.emit(then, program, compiler, names, refs);
                    let skip_else = (!otherwise.is_empty()).then(|| {
                        program.ops.push(Op {
                            span,
                            line: self.line(span),
                            kind: OpKind::Jump(usize::MAX),
                        });
                        program.ops.len() - 1
                    });
                    let else_at = program.ops.len();
                    if let Some(cond) = cond {
                        program.ops[branch].kind = OpKind::JumpUnless { cond, target: else_at };
                    }
                    self.emit(otherwise, program, compiler, names, refs);
                    if let Some(jump) = skip_else {
                        program.ops[jump].kind = OpKind::Jump(program.ops.len());
                    }
                }
                StepKind::Goto(target) => {
                    program.gotos.push((program.ops.len(), target.clone()));
                    program.ops.push(Op {
                        span,
                        line: self.line(span),
                        kind: OpKind::End,
                    });
                    ended = Some(span);
                }
                StepKind::Memo(memo) => {
                    if let Some(memo) = self.memo(memo, compiler, names, refs.remembered) {
                        program.ops.push(Op {
                            span,
                            line: self.line(span),
                            kind: OpKind::Memo(memo),
                        });
                    }
                }
                StepKind::Call(expr) => {
                    if let Some(script) = compiler.expr(expr, names, self.diagnostics) {
                        program.ops.push(Op {
                            span,
                            line: self.line(span),
                            kind: OpKind::Call(script),
                        });
                    }
                }
                StepKind::Reply(text) => {
                    if let Some(t) = compiler.template(text, names, self.diagnostics) {
                        program.ops.push(Op {
                            span,
                            line: self.line(span),
                            kind: OpKind::Reply(t),
                        });
                    }
                }
                StepKind::Handoff(h) => {
                    program.ops.push(Op {
                        span,
                        line: self.line(span),
                        kind: OpKind::Handoff(self.handoff_spec(h, crate::ruleset::HandoffKind::Rule)),
                    });
                    ended = Some(span);
                }
                StepKind::End => {
                    program.ops.push(Op {
                        span,
                        line: self.line(span),
                        kind: OpKind::End,
                    });
                    ended = Some(span);
                }
            }
        }
    }
}

/// A flow program being built.
struct Program {
    ops: Vec<Op>,
    /// `goto` ops to resolve once every ask is placed: (op index, target slot).
    gotos: Vec<(usize, Ident)>,
    /// Retry-exhausted steps to place after the main program: (ask op index, step).
    tails: Vec<(usize, ast::Step)>,
}

/// Collects every ask's slot (reporting duplicates) and every `set` name in a flow.
fn collect_names(
    steps: &[ast::Step],
    asks: &mut HashMap<String, Span>,
    sets: &mut Vec<String>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for step in steps {
        match &step.kind {
            StepKind::Ask { slot, .. } => {
                if let Some(first) = asks.get(&slot.name) {
                    diagnostics.push(
                        Diagnostic::error(slot.span, format!("slot `{}` is asked for twice", slot.name))
                            .with_secondary(*first, "first asked here")
                            .with_help("use `goto` to ask the same question again"),
                    );
                } else {
                    asks.insert(slot.name.clone(), slot.span);
                }
            }
            StepKind::Set { name, .. } if !sets.contains(&name.name) => sets.push(name.name.clone()),
            StepKind::If { then, otherwise, .. } => {
                collect_names(then, asks, sets, diagnostics);
                collect_names(otherwise, asks, sets, diagnostics);
            }
            _ => {}
        }
    }
}
