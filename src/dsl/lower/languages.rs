//! The shop's languages and the variants of the texts customers see
//! (docs/language.md, "Languages").
//!
//! `languages "zh", "en"` is read here; every variant's code is checked against it (an
//! undeclared code, the shop's own language again, a code given twice are errors), and
//! each item with texts missing a declared language gets one warning, pointing at the
//! first such text and listing the languages it lacks: a missing variant is not wrong
//! (the customer gets the shop's language, or a model translation), but an editor who
//! declared a language wants to know where it is not written yet.

use super::{Items, Lowerer};
use crate::diag::{Diagnostic, Span};
use crate::dsl::ast::{self, Step, StepKind, Str};
use crate::nlu::Lang;
use crate::ruleset::Shop;

impl Lowerer<'_> {
    /// The shop's `languages`, its own first; `zh` when not given. Codes that are not
    /// two lowercase letters, and codes given twice, are errors.
    pub(super) fn shop_languages(&mut self, shop: &ast::Shop) -> Vec<Lang> {
        let Some((codes, _)) = &shop.languages else {
            return vec![Lang::ZH];
        };
        let mut out: Vec<Lang> = Vec::new();
        for code in codes {
            match Lang::parse(&code.value) {
                Some(lang) if out.contains(&lang) => {
                    self.push(
                        Diagnostic::error(code.span, format!("language `{lang}` is given twice"))
                            .with_label("declared already"),
                    );
                }
                Some(lang) => out.push(lang),
                None => self.push(
                    Diagnostic::error(code.span, format!("`{}` is not a language code", code.value))
                        .with_label("expected a two-letter code")
                        .with_help(code_help(&code.value)),
                ),
            }
        }
        if out.is_empty() {
            out.push(Lang::ZH);
        }
        out
    }

    /// Checks the codes of every text's variants against the shop's languages, and warns
    /// once per item whose texts lack a declared language.
    pub(super) fn check_variants(&mut self, items: &Items, shop: &Shop) {
        let mut checker = Checker {
            shop,
            diagnostics: Vec::new(),
        };
        for s in &items.shops {
            let texts: Vec<&Str> = [
                &s.handoff_message,
                &s.fallback_message,
                &s.flow_updated_message,
                &s.opt_out_message,
            ]
                .into_iter()
                .flatten()
                .collect();
            checker.item("the shop's messages", &texts);
        }
        for rule in &items.rules {
            checker.item(
                &format!("rule `{}`", rule.name.name),
                &rule.reply.iter().collect::<Vec<_>>(),
            );
        }
        for promo in &items.promotions {
            checker.item(
                &format!("promotion `{}`", promo.name.name),
                &promo.say.iter().collect::<Vec<_>>(),
            );
        }
        for item in &items.proactive {
            checker.item(
                &format!("proactive `{}`", item.name.name),
                &item.say.iter().collect::<Vec<_>>(),
            );
        }
        for flow in &items.flows {
            let mut texts = Vec::new();
            flow_texts(&flow.steps, &mut texts);
            checker.item(&format!("flow `{}`", flow.name.name), &texts);
        }
        for fallback in &items.fallbacks {
            let texts: Vec<&Str> = fallback
                .arms
                .iter()
                .filter_map(|arm| match &arm.action {
                    ast::FallbackAction::Reply(text) | ast::FallbackAction::Handoff { reply: Some(text), .. } => {
                        Some(text)
                    }
                    _ => None,
                })
                .collect();
            checker.item("the fallback", &texts);
        }
        for queue in &items.queues {
            let texts: Vec<&Str> = [&queue.label, &queue.off_hours, &queue.waiting]
                .into_iter()
                .flatten()
                .collect();
            checker.item(&format!("queue `{}`", queue.name.name), &texts);
        }
        // Safety replies answer before the message is understood, so in the shop's
        // language only.
        for safety in &items.safety {
            for entry in &safety.entries {
                if let ast::SafetyEntry::Block(list) | ast::SafetyEntry::Mask(list) | ast::SafetyEntry::Flag(list) =
                    entry
                    && let Some(reply) = &list.reply
                    && let Some((code, _)) = reply.variants.first()
                {
                    checker.diagnostics.push(
                        Diagnostic::error(code.span, "a safety reply has no variants per language")
                            .with_label("written in the shop's language only")
                            .with_help("a blocked message is refused before its language is known; remove the variant"),
                    );
                }
            }
        }
        for d in checker.diagnostics {
            self.push(d);
        }
    }
}

/// Every text of a flow's steps (questions, re-asks, replies), in order.
fn flow_texts<'a>(steps: &'a [Step], out: &mut Vec<&'a Str>) {
    for step in steps {
        match &step.kind {
            StepKind::Ask {
                prompt,
                reasks,
                otherwise,
                ..
            } => {
                out.push(prompt);
                out.extend(reasks);
                if let Some(step) = otherwise {
                    flow_texts(std::slice::from_ref(step), out);
                }
            }
            StepKind::Reply(text) => out.push(text),
            StepKind::If { then, otherwise, .. } => {
                flow_texts(then, out);
                flow_texts(otherwise, out);
            }
            _ => {}
        }
    }
}

struct Checker<'a> {
    shop: &'a Shop,
    diagnostics: Vec<Diagnostic>,
}

impl Checker<'_> {
    /// Checks the variants of one item's texts, and warns when some lack a declared
    /// language.
    fn item(&mut self, what: &str, texts: &[&Str]) {
        let own = self.shop.language();
        let mut first_missing: Option<(Span, Vec<Lang>)> = None;
        let mut lacking = 0;
        for text in texts {
            let mut written: Vec<Lang> = Vec::new();
            for (code, _) in &text.variants {
                match Lang::parse(&code.name) {
                    Some(lang) if lang == own => self.diagnostics.push(
                        Diagnostic::error(code.span, format!("`{lang}` is the shop's own language"))
                            .with_label("the first text is already in it")
                            .with_help(format!(
                                "write the {} text first, without a code, and other languages after it",
                                lang.name_zh()
                            )),
                    ),
                    Some(lang) if written.contains(&lang) => self.diagnostics.push(
                        Diagnostic::error(code.span, format!("this text has two `{lang}` variants"))
                            .with_label("second one here"),
                    ),
                    Some(lang) if self.shop.languages.contains(&lang) => written.push(lang),
                    Some(lang) => self.diagnostics.push(
                        Diagnostic::error(code.span, format!("language `{lang}` is not declared by the shop"))
                            .with_label("not in the shop's `languages`")
                            .with_help(format!(
                                "the shop declares {}; add \"{lang}\" to `languages` in the shop block, or remove this variant",
                                self.declared()
                            )),
                    ),
                    None => self.diagnostics.push(
                        Diagnostic::error(code.span, format!("`{}` is not a language code", code.name))
                            .with_label("expected a two-letter code")
                            .with_help(code_help(&code.name)),
                    ),
                }
            }
            let missing: Vec<Lang> = self
                .shop
                .languages
                .iter()
                .skip(1)
                .filter(|l| !written.contains(l))
                .copied()
                .collect();
            if !missing.is_empty() {
                lacking += 1;
                first_missing.get_or_insert((text.span, missing));
            }
        }
        let Some((span, missing)) = first_missing else {
            return;
        };
        let list = missing.iter().map(Lang::as_str).collect::<Vec<_>>().join(", ");
        let message = if lacking == 1 {
            format!("{what} has a text without {list}")
        } else {
            format!("{what} has {lacking} texts without {list}")
        };
        let fallback = if self.shop.translate {
            format!("the model translates it for customers writing in {list} (when one is configured)")
        } else {
            format!("customers writing in {list} get it in `{own}`")
        };
        self.diagnostics.push(
            Diagnostic::warning(span, message)
                .with_label(format!("no `{}` variant", missing[0]))
                .with_help(format!(
                    "write it after the text, e.g. `\"...\" {} \"...\"`; until then {fallback}",
                    missing[0]
                )),
        );
    }

    fn declared(&self) -> String {
        self.shop
            .languages
            .iter()
            .map(|l| format!("\"{l}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Help for a language code that is not one.
fn code_help(code: &str) -> String {
    let lower = code.to_ascii_lowercase();
    let named = match lower.as_str() {
        "english" | "eng" => Some("en"),
        "chinese" | "zho" | "chi" | "cn" | "zh-cn" | "zh_cn" => Some("zh"),
        "japanese" | "jpn" | "jp" => Some("ja"),
        "korean" | "kor" | "kr" => Some("ko"),
        "french" | "fra" | "fre" => Some("fr"),
        "german" | "deu" | "ger" => Some("de"),
        "spanish" | "spa" => Some("es"),
        _ if Lang::parse(&lower).is_some() => Some(lower.as_str()),
        _ => None,
    };
    match named {
        Some(code) => format!("write `{code}`: codes are two lowercase letters (ISO 639-1)"),
        None => "write a two-letter ISO 639-1 code in lowercase, such as `en`, `ja` or `ko`".to_string(),
    }
}
