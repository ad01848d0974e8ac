//! Each item kind's pairs into its syntax-tree node: the shop block, intents, entities,
//! sources, rules, promotions, policies, flows and their steps (nesting bounded by
//! [`MAX_NESTING`]), styles, the fallback chain and safety blocks.

use pest::iterators::Pair;

use super::build::{Builder, set_once};
use super::{MAX_NESTING, NESTING_HELP, Rule, inner};
use crate::diag::{Diagnostic, Span};
use crate::dsl::ast::*;

impl Builder<'_> {
    pub(super) fn item(&mut self, pair: Pair<'_, Rule>) -> Option<Item> {
        Some(match pair.as_rule() {
            Rule::shop => Item::Shop(Box::new(self.shop(pair))),
            Rule::intent => Item::Intent(self.intent(pair)),
            Rule::entity => Item::Entity(self.entity(pair)),
            Rule::card => Item::Card(self.card(pair)),
            Rule::source => Item::Source(self.source(pair)),
            Rule::rule => Item::Rule(self.rule(pair)),
            Rule::promotion => Item::Promotion(self.promotion(pair)),
            Rule::policy => Item::Policy(self.policy(pair)),
            Rule::flow => Item::Flow(self.flow(pair)),
            Rule::style => Item::Style(self.style(pair)),
            Rule::fallback => Item::Fallback(self.fallback(pair)),
            Rule::safety => Item::Safety(self.safety(pair)),
            Rule::queue => Item::Queue(self.queue(pair)),
            Rule::proactive => Item::Proactive(self.proactive(pair)),
            _ => return None,
        })
    }

    fn shop(&mut self, pair: Pair<'_, Rule>) -> Shop {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.string(fields.next().expect("shop name"));
        let mut shop = Shop {
            name,
            span,
            persona: None,
            languages: None,
            translate: None,
            timezone: None,
            threshold: None,
            model_threshold: None,
            faq_threshold: None,
            handoff_message: None,
            fallback_message: None,
            context: Vec::new(),
            flow_updated_message: None,
            goodbye_message: None,
            ack_message: None,
            more_message: None,
            confirm_again_message: None,
            upcoming_days: None,
            flow_timeout: None,
            max_answers: None,
            proactive_limit: None,
            quiet_hours: None,
            opt_out_message: None,
        };
        for field in fields {
            let fspan = self.span(&field);
            match field.as_rule() {
                Rule::persona => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.persona.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut shop.persona, v, fspan, first, "persona");
                }
                Rule::languages => {
                    let v = (self.strings(Self::first_inner(field)), fspan);
                    let first = shop.languages.as_ref().map(|(_, s)| *s);
                    set_once(self.diagnostics, &mut shop.languages, v, fspan, first, "languages");
                }
                Rule::translate => {
                    let first = shop.translate;
                    set_once(self.diagnostics, &mut shop.translate, fspan, fspan, first, "translate");
                }
                Rule::timezone => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.timezone.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut shop.timezone, v, fspan, first, "timezone");
                }
                Rule::threshold => {
                    let v = self.number(Self::first_inner(field));
                    let first = shop.threshold.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut shop.threshold, v, fspan, first, "threshold");
                }
                Rule::model_threshold => {
                    let v = self.number(Self::first_inner(field));
                    let first = shop.model_threshold.as_ref().map(|s| s.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.model_threshold,
                        v,
                        fspan,
                        first,
                        "model_threshold",
                    );
                }
                Rule::faq_threshold => {
                    let v = self.number(Self::first_inner(field));
                    let first = shop.faq_threshold.as_ref().map(|s| s.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.faq_threshold,
                        v,
                        fspan,
                        first,
                        "faq_threshold",
                    );
                }
                Rule::handoff_message => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.handoff_message.as_ref().map(|s| s.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.handoff_message,
                        v,
                        fspan,
                        first,
                        "handoff_message",
                    );
                }
                Rule::fallback_message => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.fallback_message.as_ref().map(|s| s.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.fallback_message,
                        v,
                        fspan,
                        first,
                        "fallback_message",
                    );
                }
                Rule::context => shop.context.extend(self.names(Self::first_inner(field))),
                Rule::flow_updated_message => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.flow_updated_message.as_ref().map(|s| s.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.flow_updated_message,
                        v,
                        fspan,
                        first,
                        "flow_updated_message",
                    );
                }
                Rule::goodbye_message => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.goodbye_message.as_ref().map(|s| s.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.goodbye_message,
                        v,
                        fspan,
                        first,
                        "goodbye_message",
                    );
                }
                Rule::ack_message => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.ack_message.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut shop.ack_message, v, fspan, first, "ack_message");
                }
                Rule::more_message => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.more_message.as_ref().map(|s| s.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.more_message,
                        v,
                        fspan,
                        first,
                        "more_message",
                    );
                }
                Rule::confirm_again_message => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.confirm_again_message.as_ref().map(|s| s.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.confirm_again_message,
                        v,
                        fspan,
                        first,
                        "confirm_again_message",
                    );
                }
                Rule::upcoming_days => {
                    let v = self.integer(Self::first_inner(field));
                    let first = shop.upcoming_days.as_ref().map(|n| n.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.upcoming_days,
                        v,
                        fspan,
                        first,
                        "upcoming_days",
                    );
                }
                Rule::flow_timeout => {
                    let v = self.duration(Self::first_inner(field));
                    let first = shop.flow_timeout.as_ref().map(|d| d.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.flow_timeout,
                        v,
                        fspan,
                        first,
                        "flow_timeout",
                    );
                }
                Rule::max_answers => {
                    let v = self.integer(Self::first_inner(field));
                    let first = shop.max_answers.as_ref().map(|n| n.span);
                    set_once(self.diagnostics, &mut shop.max_answers, v, fspan, first, "max_answers");
                }
                Rule::proactive_limit => {
                    let v = self.integer(Self::first_inner(field));
                    let first = shop.proactive_limit.as_ref().map(|n| n.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.proactive_limit,
                        v,
                        fspan,
                        first,
                        "proactive_limit",
                    );
                }
                Rule::quiet_hours => {
                    let v = self.quiet_span(field);
                    let first = shop.quiet_hours.as_ref().map(|q| q.span);
                    set_once(self.diagnostics, &mut shop.quiet_hours, v, fspan, first, "quiet_hours");
                }
                Rule::opt_out_message => {
                    let v = self.string(Self::first_inner(field));
                    let first = shop.opt_out_message.as_ref().map(|s| s.span);
                    set_once(
                        self.diagnostics,
                        &mut shop.opt_out_message,
                        v,
                        fspan,
                        first,
                        "opt_out_message",
                    );
                }
                _ => {}
            }
        }
        shop
    }

    fn intent(&mut self, pair: Pair<'_, Rule>) -> Intent {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("intent name"));
        let mut intent = Intent {
            name,
            span,
            examples: Vec::new(),
            keywords: Vec::new(),
        };
        for field in fields {
            match field.as_rule() {
                Rule::examples => intent.examples.extend(self.strings(Self::first_inner(field))),
                Rule::keywords => intent.keywords.extend(self.strings(Self::first_inner(field))),
                _ => {}
            }
        }
        intent
    }

    fn entity(&mut self, pair: Pair<'_, Rule>) -> Entity {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("entity name"));
        let def = fields.next().expect("entity definition");
        let kind = match def.as_rule() {
            Rule::regex => {
                let mut parts = inner(def);
                let body = parts.next().expect("regex body");
                let flags = parts.next().expect("regex flags");
                EntityKind::Regex {
                    pattern: body.as_str().to_string(),
                    span: self.span(&body),
                    flags: self.ident(flags),
                }
            }
            _ => {
                let mut entries = Vec::new();
                for entry in inner(def) {
                    let mut parts = inner(entry);
                    let surface = self.string(parts.next().expect("lexicon surface"));
                    let canonical = parts.next().map(|p| self.string(p));
                    entries.push((surface, canonical));
                }
                EntityKind::Lexicon(entries)
            }
        };
        Entity { name, span, kind }
    }

    fn card(&mut self, pair: Pair<'_, Rule>) -> Card {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("card name"));
        let mut card = Card {
            name,
            span,
            pattern: None,
            context: None,
            alone: None,
        };
        for field in fields {
            let fspan = self.span(&field);
            match field.as_rule() {
                Rule::card_pattern => {
                    let mut parts = inner(Self::first_inner(field));
                    let body = parts.next().expect("regex body");
                    let flags = parts.next().expect("regex flags");
                    let v = CardPattern {
                        pattern: body.as_str().to_string(),
                        span: self.span(&body),
                        flags: self.ident(flags),
                        line: fspan,
                    };
                    let first = card.pattern.as_ref().map(|p| p.line);
                    set_once(self.diagnostics, &mut card.pattern, v, fspan, first, "pattern");
                }
                Rule::card_as => {
                    let v = self.ident(Self::first_inner(field));
                    let first = card.context.as_ref().map(|i| i.span);
                    set_once(self.diagnostics, &mut card.context, v, fspan, first, "as");
                }
                Rule::card_alone => {
                    let v = self.string(Self::first_inner(Self::first_inner(field)));
                    let first = card.alone.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut card.alone, v, fspan, first, "alone");
                }
                _ => {}
            }
        }
        card
    }

    fn source(&mut self, pair: Pair<'_, Rule>) -> Source {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("source name"));
        let def = fields.next().expect("source definition");
        let def_rule = def.as_rule();
        let mut parts = inner(def);
        let first = self.string(parts.next().expect("source location"));
        let kind = if def_rule == Rule::file_source {
            SourceKind::File {
                path: first,
                key: parts.next().map(|p| self.string(p)),
            }
        } else {
            let timeout = parts.next().map(|p| self.duration(p));
            SourceKind::Http { url: first, timeout }
        };
        Source { name, span, kind }
    }

    fn trigger(&mut self, pair: Pair<'_, Rule>) -> Trigger {
        let span = self.span(&pair);
        let target = Self::first_inner(pair);
        self.trigger_target(target, span)
    }

    fn trigger_target(&mut self, target: Pair<'_, Rule>, span: Span) -> Trigger {
        let kind = match target.as_rule() {
            Rule::keyword_trigger => TriggerKind::Keywords(self.strings(Self::first_inner(target))),
            Rule::entity_trigger => TriggerKind::Entity(self.ident(Self::first_inner(target))),
            Rule::answer_trigger => {
                let mut parts = inner(target);
                let yes = parts.next().expect("yes or no").as_str() == "yes";
                let rule = self.ident(parts.next().expect("rule name"));
                TriggerKind::Answer { yes, rule }
            }
            Rule::card_trigger => TriggerKind::Card(self.ident(Self::first_inner(target))),
            Rule::event_trigger => TriggerKind::Event(self.ident(Self::first_inner(target))),
            Rule::image_trigger => TriggerKind::Image,
            _ => TriggerKind::Intents(inner(target).map(|p| self.ident(p)).collect()),
        };
        Trigger { span, kind }
    }

    /// `` remember NAME = `expr` `` or `forget NAME`.
    fn memo(&mut self, pair: Pair<'_, Rule>) -> Memo {
        let remember = pair.as_rule() == Rule::remember;
        let mut parts = inner(pair);
        let name = self.ident(parts.next().expect("memory name"));
        match parts.next() {
            Some(value) if remember => Memo::Remember {
                name,
                value: self.expr(value),
            },
            _ => Memo::Forget(name),
        }
    }

    fn handoff(&mut self, pair: Pair<'_, Rule>) -> Handoff {
        let span = self.span(&pair);
        let mut handoff = Handoff {
            reason: None,
            kind: None,
            to: None,
            span,
        };
        for part in inner(pair) {
            match part.as_rule() {
                Rule::handoff_as => handoff.kind = Some(self.ident(Self::first_inner(part))),
                Rule::handoff_to => handoff.to = Some(self.ident(Self::first_inner(part))),
                _ => handoff.reason = Some(self.string(part)),
            }
        }
        handoff
    }

    fn queue(&mut self, pair: Pair<'_, Rule>) -> Queue {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("queue name"));
        let mut queue = Queue {
            name,
            span,
            label: None,
            audience: None,
            priority: None,
            hours: None,
            off_hours: None,
            waiting: None,
        };
        for field in fields {
            let fspan = self.span(&field);
            let kind = field.as_rule();
            match kind {
                Rule::audience => {
                    let v = self.expr(Self::first_inner(field));
                    let first = queue.audience.as_ref().map(|e| e.span);
                    set_once(self.diagnostics, &mut queue.audience, v, fspan, first, "for");
                }
                Rule::priority => {
                    let v = self.integer(Self::first_inner(field));
                    let first = queue.priority.as_ref().map(|p| p.span);
                    set_once(self.diagnostics, &mut queue.priority, v, fspan, first, "priority");
                }
                Rule::label | Rule::hours | Rule::off_hours | Rule::waiting => {
                    let v = self.string(Self::first_inner(field));
                    let (slot, what) = match kind {
                        Rule::label => (&mut queue.label, "label"),
                        Rule::hours => (&mut queue.hours, "hours"),
                        Rule::off_hours => (&mut queue.off_hours, "off_hours"),
                        _ => (&mut queue.waiting, "waiting"),
                    };
                    let first = slot.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, slot, v, fspan, first, what);
                }
                _ => {}
            }
        }
        queue
    }

    fn rule(&mut self, pair: Pair<'_, Rule>) -> crate::dsl::ast::Rule {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("rule name"));
        let mut rule = crate::dsl::ast::Rule {
            name,
            span,
            triggers: Vec::new(),
            when: None,
            reply: None,
            handoff: None,
            priority: None,
            flow_action: None,
            memos: Vec::new(),
        };
        for field in fields {
            let fspan = self.span(&field);
            match field.as_rule() {
                Rule::trigger => rule.triggers.push(self.trigger(field)),
                Rule::end_flow | Rule::cancel_flow => {
                    let v = crate::dsl::ast::FlowActionLit {
                        cancel: field.as_rule() == Rule::cancel_flow,
                        span: fspan,
                    };
                    let first = rule.flow_action.as_ref().map(|a| a.span);
                    set_once(
                        self.diagnostics,
                        &mut rule.flow_action,
                        v,
                        fspan,
                        first,
                        "end flow` or `cancel flow",
                    );
                }
                Rule::remember | Rule::forget => rule.memos.push(self.memo(field)),
                Rule::when => {
                    let v = self.expr(Self::first_inner(field));
                    let first = rule.when.as_ref().map(|e| e.span);
                    set_once(self.diagnostics, &mut rule.when, v, fspan, first, "when");
                }
                Rule::reply => {
                    let v = self.string(Self::first_inner(field));
                    let first = rule.reply.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut rule.reply, v, fspan, first, "reply");
                }
                Rule::handoff => {
                    let v = self.handoff(field);
                    let first = rule.handoff.as_ref().map(|h| h.span);
                    set_once(self.diagnostics, &mut rule.handoff, v, fspan, first, "handoff");
                }
                Rule::priority => {
                    let v = self.integer(Self::first_inner(field));
                    let first = rule.priority.as_ref().map(|p| p.span);
                    set_once(self.diagnostics, &mut rule.priority, v, fspan, first, "priority");
                }
                _ => {}
            }
        }
        rule
    }

    /// `HH:MM to HH:MM` (`quiet`, `quiet_hours`): the two times and the whole field.
    fn quiet_span(&mut self, field: Pair<'_, Rule>) -> QuietLit {
        let span = self.span(&field);
        let mut times = inner(field);
        let from = self.time(times.next().expect("from time"));
        let to = self.time(times.next().expect("to time"));
        QuietLit { from, to, span }
    }

    fn proactive(&mut self, pair: Pair<'_, Rule>) -> Proactive {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("proactive name"));
        let mut item = Proactive {
            name,
            span,
            triggers: Vec::new(),
            when: None,
            say: None,
            offer: None,
            limit: None,
            quiet: None,
            priority: None,
        };
        for field in fields {
            let fspan = self.span(&field);
            match field.as_rule() {
                Rule::trigger => item.triggers.push(self.trigger(field)),
                Rule::when => {
                    let v = self.expr(Self::first_inner(field));
                    let first = item.when.as_ref().map(|e| e.span);
                    set_once(self.diagnostics, &mut item.when, v, fspan, first, "when");
                }
                Rule::say => {
                    let v = self.string(Self::first_inner(field));
                    let first = item.say.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut item.say, v, fspan, first, "say");
                }
                Rule::offer => {
                    let v = self.ident(Self::first_inner(field));
                    let first = item.offer.as_ref().map(|i| i.span);
                    set_once(self.diagnostics, &mut item.offer, v, fspan, first, "offer");
                }
                Rule::limit => {
                    let v = (self.integer(Self::first_inner(field)), fspan);
                    let first = item.limit.as_ref().map(|(_, s)| *s);
                    set_once(self.diagnostics, &mut item.limit, v, fspan, first, "limit");
                }
                Rule::quiet => {
                    let v = self.quiet_span(field);
                    let first = item.quiet.as_ref().map(|q| q.span);
                    set_once(self.diagnostics, &mut item.quiet, v, fspan, first, "quiet");
                }
                Rule::priority => {
                    let v = self.integer(Self::first_inner(field));
                    let first = item.priority.as_ref().map(|p| p.span);
                    set_once(self.diagnostics, &mut item.priority, v, fspan, first, "priority");
                }
                _ => {}
            }
        }
        item
    }

    fn promotion(&mut self, pair: Pair<'_, Rule>) -> Promotion {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("promotion name"));
        let mut promo = Promotion {
            name,
            span,
            window: None,
            audience: None,
            say: None,
            triggers: Vec::new(),
            priority: None,
        };
        for field in fields {
            let fspan = self.span(&field);
            match field.as_rule() {
                Rule::window => {
                    let mut parts = inner(field);
                    let from = self.datetime(parts.next().expect("from"));
                    let to = self.datetime(parts.next().expect("to"));
                    let first = promo.window.as_ref().map(|(f, _)| f.span);
                    set_once(
                        self.diagnostics,
                        &mut promo.window,
                        (from, to),
                        fspan,
                        first,
                        "from ... to",
                    );
                }
                Rule::audience => {
                    let v = self.expr(Self::first_inner(field));
                    let first = promo.audience.as_ref().map(|e| e.span);
                    set_once(self.diagnostics, &mut promo.audience, v, fspan, first, "for");
                }
                Rule::say => {
                    let v = self.string(Self::first_inner(field));
                    let first = promo.say.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut promo.say, v, fspan, first, "say");
                }
                Rule::trigger => promo.triggers.push(self.trigger(field)),
                Rule::priority => {
                    let v = self.integer(Self::first_inner(field));
                    let first = promo.priority.as_ref().map(|p| p.span);
                    set_once(self.diagnostics, &mut promo.priority, v, fspan, first, "priority");
                }
                _ => {}
            }
        }
        promo
    }

    fn policy(&mut self, pair: Pair<'_, Rule>) -> Policy {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("policy name"));
        let mut policy = Policy {
            name,
            span,
            applies: Vec::new(),
            text: None,
        };
        for field in fields {
            let fspan = self.span(&field);
            match field.as_rule() {
                Rule::applies => policy.applies.extend(inner(field).map(|p| self.ident(p))),
                Rule::text => {
                    let v = self.string(Self::first_inner(field));
                    let first = policy.text.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut policy.text, v, fspan, first, "text");
                }
                _ => {}
            }
        }
        policy
    }

    fn flow(&mut self, pair: Pair<'_, Rule>) -> Flow {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("flow name"));
        let mut flow = Flow {
            name,
            span,
            starts: Vec::new(),
            cancel_words: None,
            cancel_reply: None,
            timeout: None,
            steps: Vec::new(),
        };
        for field in fields {
            match field.as_rule() {
                Rule::flow_cancel => {
                    let fspan = self.span(&field);
                    let what = Self::first_inner(field);
                    if what.as_rule() == Rule::cancel_words {
                        let words = self.strings(Self::first_inner(what));
                        let first = flow.cancel_words.as_ref().map(|(_, span)| *span);
                        set_once(
                            self.diagnostics,
                            &mut flow.cancel_words,
                            (words, fspan),
                            fspan,
                            first,
                            "cancel on keywords",
                        );
                    } else {
                        let v = self.string(Self::first_inner(what));
                        let first = flow.cancel_reply.as_ref().map(|s| s.span);
                        set_once(
                            self.diagnostics,
                            &mut flow.cancel_reply,
                            v,
                            fspan,
                            first,
                            "cancel reply",
                        );
                    }
                }
                Rule::flow_idle => {
                    let fspan = self.span(&field);
                    let v = self.duration(Self::first_inner(field));
                    let first = flow.timeout.as_ref().map(|d| d.span);
                    set_once(self.diagnostics, &mut flow.timeout, v, fspan, first, "timeout");
                }
                Rule::flow_start => {
                    let span = self.span(&field);
                    let mut parts = inner(field);
                    let target = parts.next().expect("start trigger");
                    let tspan = self.span(&target);
                    let trigger = self.trigger_target(target, tspan);
                    let when = parts.next().map(|w| self.expr(Self::first_inner(w)));
                    flow.starts.push(FlowStart { trigger, when, span });
                }
                Rule::lbrace | Rule::rbrace => {}
                _ => {
                    if let Some(step) = self.step(field) {
                        flow.steps.push(step);
                    }
                }
            }
        }
        flow
    }

    fn steps(&mut self, block: Pair<'_, Rule>) -> Vec<Step> {
        inner(block).filter_map(|p| self.step(p)).collect()
    }

    fn step(&mut self, pair: Pair<'_, Rule>) -> Option<Step> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::ask | Rule::confirm => {
                let confirm = pair.as_rule() == Rule::confirm;
                let mut parts = inner(pair).peekable();
                let mut entity = None;
                let slot = if confirm {
                    // `confirm "…"` names its slot `confirm`, at the keyword.
                    match parts.next_if(|p| p.as_rule() == Rule::name) {
                        Some(name) => self.ident(name),
                        None => Ident {
                            name: CONFIRM_SLOT.into(),
                            span: Span::new(self.file, span.start, span.start + "confirm".len()),
                        },
                    }
                } else {
                    self.ident(parts.next().expect("slot"))
                };
                let mut next = parts.next().expect("question");
                if next.as_rule() == Rule::name {
                    entity = Some(self.ident(next));
                    next = parts.next().expect("question");
                }
                let prompt = self.string(next);
                let (mut retry, mut otherwise, mut reasks) = (None, None, Vec::new());
                let mut rest = parts.next();
                if let Some(r) = rest.take_if(|r| r.as_rule() == Rule::reask) {
                    reasks = self.strings(r);
                    rest = parts.next();
                }
                if let Some(r) = rest {
                    let mut rp = inner(r);
                    retry = Some(self.integer(rp.next().expect("retry count")));
                    if let Some(else_step) = rp.next() {
                        otherwise = self.step(Self::first_inner(else_step)).map(Box::new);
                    }
                }
                StepKind::Ask {
                    slot,
                    entity,
                    prompt,
                    reasks,
                    retry,
                    otherwise,
                    confirm,
                }
            }
            Rule::set => {
                let mut parts = inner(pair);
                let name = self.ident(parts.next().expect("set name"));
                let value = self.expr(parts.next().expect("set value"));
                StepKind::Set { name, value }
            }
            Rule::if_step => {
                if self.depth >= MAX_NESTING {
                    let keyword = Span::new(self.file, span.start, span.start + "if".len());
                    self.diagnostics.push(
                        Diagnostic::error(keyword, format!("nested too deeply (more than {MAX_NESTING} levels)"))
                            .with_label(format!("this `if` is {} levels deep", self.depth + 1))
                            .with_help(NESTING_HELP),
                    );
                    return None;
                }
                self.depth += 1;
                let mut parts = inner(pair);
                let cond = self.expr(parts.next().expect("if condition"));
                let then = self.steps(parts.next().expect("if body"));
                let otherwise = match parts.next() {
                    Some(p) if p.as_rule() == Rule::block => self.steps(p),
                    Some(p) => self.step(p).into_iter().collect(),
                    None => Vec::new(),
                };
                self.depth -= 1;
                StepKind::If { cond, then, otherwise }
            }
            Rule::goto => StepKind::Goto(self.ident(Self::first_inner(pair))),
            Rule::call => StepKind::Call(self.expr(Self::first_inner(pair))),
            Rule::remember | Rule::forget => StepKind::Memo(self.memo(pair)),
            Rule::reply => StepKind::Reply(self.string(Self::first_inner(pair))),
            Rule::handoff => StepKind::Handoff(self.handoff(pair)),
            Rule::end => StepKind::End,
            _ => return None,
        };
        Some(Step { span, kind })
    }

    fn style(&mut self, pair: Pair<'_, Rule>) -> Style {
        let span = self.span(&pair);
        let mut fields = inner(pair);
        let name = self.ident(fields.next().expect("style name"));
        let mut style = Style {
            name,
            span,
            when: None,
            tone: None,
            temperature: None,
            top_p: None,
        };
        for field in fields {
            let fspan = self.span(&field);
            match field.as_rule() {
                Rule::when => {
                    let v = self.expr(Self::first_inner(field));
                    let first = style.when.as_ref().map(|e| e.span);
                    set_once(self.diagnostics, &mut style.when, v, fspan, first, "when");
                }
                Rule::tone => {
                    let v = self.string(Self::first_inner(field));
                    let first = style.tone.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut style.tone, v, fspan, first, "tone");
                }
                Rule::temperature => {
                    let v = self.number(Self::first_inner(field));
                    let first = style.temperature.as_ref().map(|n| n.span);
                    set_once(self.diagnostics, &mut style.temperature, v, fspan, first, "temperature");
                }
                Rule::top_p => {
                    let v = self.number(Self::first_inner(field));
                    let first = style.top_p.as_ref().map(|n| n.span);
                    set_once(self.diagnostics, &mut style.top_p, v, fspan, first, "top_p");
                }
                _ => {}
            }
        }
        style
    }

    fn fallback(&mut self, pair: Pair<'_, Rule>) -> Fallback {
        let span = self.span(&pair);
        let mut arms = Vec::new();
        for arm in inner(pair).filter(|p| p.as_rule() == Rule::fallback_arm) {
            let arm_span = self.span(&arm);
            let mut parts = inner(arm);
            let head = parts.next().expect("arm head");
            let when = (head.as_rule() == Rule::when).then(|| self.expr(Self::first_inner(head)));
            let action = parts.next().expect("arm action");
            // `reply "..." handoff` and `handoff reply "..."` are one action: a handoff
            // with the arm's own words.
            let second = parts.next();
            let action = match (action.as_rule(), second) {
                (Rule::handoff, reply) => FallbackAction::Handoff {
                    handoff: Box::new(self.handoff(action)),
                    reply: reply.map(|r| self.string(Self::first_inner(r))),
                },
                (Rule::reply, Some(handoff)) => FallbackAction::Handoff {
                    reply: Some(self.string(Self::first_inner(action))),
                    handoff: Box::new(self.handoff(handoff)),
                },
                (Rule::reply, None) => FallbackAction::Reply(self.string(Self::first_inner(action))),
                _ => {
                    let mut style = None;
                    let mut within = None;
                    for part in inner(action) {
                        match part.as_rule() {
                            Rule::duration => within = Some(self.duration(part)),
                            _ => style = Some(self.ident(part)),
                        }
                    }
                    FallbackAction::Llm { style, within }
                }
            };
            arms.push(FallbackArm {
                span: arm_span,
                when,
                action,
            });
        }
        Fallback { span, arms }
    }

    fn word_source(&mut self, pair: Pair<'_, Rule>) -> WordSource {
        match pair.as_rule() {
            Rule::words_file => WordSource::File(self.string(Self::first_inner(pair))),
            Rule::words_inline => WordSource::Inline(self.strings(Self::first_inner(pair))),
            _ => WordSource::Inline(self.strings(pair)),
        }
    }

    fn word_list(&mut self, pair: Pair<'_, Rule>) -> WordList {
        let span = self.span(&pair);
        let mut parts = inner(pair);
        let category = self.ident(parts.next().expect("category"));
        let words = self.word_source(parts.next().expect("words"));
        let mut list = WordList {
            category,
            span,
            words,
            without: Vec::new(),
            reply: None,
            on: None,
            segmented: None,
        };
        for option in parts {
            let ospan = self.span(&option);
            match option.as_rule() {
                Rule::without => list.without.extend(self.names(Self::first_inner(option))),
                Rule::list_on => {
                    let v = self.ident(Self::first_inner(option));
                    let first = list.on.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut list.on, v, ospan, first, "on");
                }
                Rule::segmented => list.segmented = Some(ospan),
                Rule::reply => {
                    let v = self.string(Self::first_inner(option));
                    let first = list.reply.as_ref().map(|s| s.span);
                    set_once(self.diagnostics, &mut list.reply, v, ospan, first, "reply");
                }
                _ => {}
            }
        }
        list
    }

    fn safety(&mut self, pair: Pair<'_, Rule>) -> Safety {
        let span = self.span(&pair);
        let mut entries = Vec::new();
        for entry in inner(pair) {
            let entry = match entry.as_rule() {
                Rule::block_list => SafetyEntry::Block(self.word_list(entry)),
                Rule::mask_list => SafetyEntry::Mask(self.word_list(entry)),
                Rule::flag_list => SafetyEntry::Flag(self.word_list(entry)),
                Rule::order_number => {
                    let target = Self::first_inner(entry);
                    SafetyEntry::OrderNumber(match target.as_rule() {
                        Rule::regex => {
                            let body = inner(target).next().expect("regex body");
                            OrderNumber::Regex {
                                pattern: body.as_str().to_string(),
                                span: self.span(&body),
                            }
                        }
                        _ => OrderNumber::Entity(self.ident(target)),
                    })
                }
                Rule::allow => SafetyEntry::Allow(self.word_source(Self::first_inner(entry))),
                Rule::pii => SafetyEntry::Pii(self.names(Self::first_inner(entry))),
                Rule::default_reply => SafetyEntry::Reply(self.string(Self::first_inner(entry))),
                _ => continue,
            };
            entries.push(entry);
        }
        Safety { span, entries }
    }
}
