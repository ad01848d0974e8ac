//! Lowering the shop block (its defaults filled in), the styles, and the fallback chain.

use chrono_tz::Tz;

use super::{Lowerer, Scripts};
use crate::diag::{Diagnostic, FileId, Span, closest};
use crate::dsl::ast;
use crate::kb;
use crate::ruleset::{FallbackAction, FallbackArm, Shop, Style};
use crate::script::{DEFAULT_CONTEXT, Names};

const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";

const DEFAULT_THRESHOLD: f64 = 0.6;

const DEFAULT_HANDOFF_MESSAGE: &str = "正在为您转接人工客服，请稍候。";

const DEFAULT_FALLBACK_MESSAGE: &str = "抱歉，这个问题我暂时无法回答。您可以换个说法，或输入“人工”联系人工客服。";

impl Lowerer<'_> {
    pub(super) fn shop(&mut self, shops: &[ast::Shop], first_file: FileId) -> Shop {
        if shops.is_empty() {
            self.push(
                Diagnostic::error(Span::new(first_file, 0, 0), "the rule set has no `shop` block")
                    .with_help("add `shop \"店名\" { persona \"...\" timezone \"Asia/Shanghai\" }` to one file"),
            );
        }
        for extra in shops.iter().skip(1) {
            let first = shops[0].span;
            let d = Diagnostic::error(extra.name.span, "more than one `shop` block")
                .with_label("second shop here")
                .with_secondary(Span::new(first.file, first.start, first.start + 4), "first shop here");
            self.push(d);
        }
        let Some(shop) = shops.first() else {
            return Shop {
                name: String::new(),
                persona: String::new(),
                timezone: chrono_tz::Asia::Shanghai,
                threshold: DEFAULT_THRESHOLD,
                faq_threshold: kb::DEFAULT_FAQ_THRESHOLD,
                handoff_message: DEFAULT_HANDOFF_MESSAGE.into(),
                fallback_message: DEFAULT_FALLBACK_MESSAGE.into(),
                context: DEFAULT_CONTEXT.iter().map(|s| s.to_string()).collect(),
            };
        };
        let timezone = match &shop.timezone {
            None => DEFAULT_TIMEZONE.parse().expect("valid default zone"),
            Some(tz) => match tz.value.parse::<Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    let names = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name());
                    let mut d = Diagnostic::error(tz.span, format!("unknown time zone `{}`", tz.value))
                        .with_label("not an IANA time zone name");
                    let china = [
                        "Beijing",
                        "北京",
                        "China",
                        "PRC",
                        "CST",
                        "Asia/Chongqing",
                        "Asia/Harbin",
                    ]
                    .iter()
                    .any(|c| tz.value.contains(c));
                    d = match closest(&tz.value, names) {
                        _ if china => d.with_help("mainland China uses `Asia/Shanghai`"),
                        Some(near) => d.with_help(format!("did you mean `{near}`?")),
                        None => d.with_help("write an IANA name such as `Asia/Shanghai`"),
                    };
                    self.push(d);
                    chrono_tz::Asia::Shanghai
                }
            },
        };
        let threshold = match shop.threshold {
            Some(t) if !(0.0..=1.0).contains(&t.value) => {
                self.push(
                    Diagnostic::error(t.span, "threshold must be between 0 and 1").with_label("a confidence, e.g. 0.6"),
                );
                DEFAULT_THRESHOLD
            }
            Some(t) => t.value,
            None => DEFAULT_THRESHOLD,
        };
        let faq_threshold = match shop.faq_threshold {
            Some(t) if !(0.0..=1.0).contains(&t.value) => {
                self.push(
                    Diagnostic::error(t.span, "faq_threshold must be between 0 and 1")
                        .with_label("a confidence, e.g. 0.6"),
                );
                kb::DEFAULT_FAQ_THRESHOLD
            }
            Some(t) => t.value,
            None => kb::DEFAULT_FAQ_THRESHOLD,
        };
        let mut context: Vec<String> = DEFAULT_CONTEXT.iter().map(|s| s.to_string()).collect();
        for name in &shop.context {
            if crate::script::BUILTIN_VARIABLES.contains(&name.name.as_str()) {
                self.push(Diagnostic::warning(
                    name.span,
                    format!("`{}` is always in scope; it need not be declared", name.name),
                ));
            } else if !context.contains(&name.name) {
                context.push(name.name.clone());
            }
        }
        Shop {
            name: shop.name.value.clone(),
            persona: shop.persona.as_ref().map_or_else(
                || format!("你是{}的客服，亲切、专业，只回答与本店相关的问题。", shop.name.value),
                |p| p.value.clone(),
            ),
            timezone,
            threshold,
            faq_threshold,
            handoff_message: shop
                .handoff_message
                .as_ref()
                .map_or(DEFAULT_HANDOFF_MESSAGE.into(), |s| s.value.clone()),
            fallback_message: shop
                .fallback_message
                .as_ref()
                .map_or(DEFAULT_FALLBACK_MESSAGE.into(), |s| s.value.clone()),
            context,
        }
    }

    pub(super) fn styles(&mut self, styles: &[ast::Style], compiler: &Scripts) -> Vec<Style> {
        let names = Names::default();
        let mut out = Vec::new();
        for style in styles {
            if let Some(t) = style.temperature
                && !(0.0..=2.0).contains(&t.value)
            {
                self.push(Diagnostic::error(t.span, "temperature must be between 0 and 2"));
            }
            if let Some(p) = style.top_p
                && !(p.value > 0.0 && p.value <= 1.0)
            {
                self.push(Diagnostic::error(p.span, "top_p must be above 0 and at most 1"));
            }
            let when = style
                .when
                .as_ref()
                .and_then(|w| compiler.condition(w, &names, self.diagnostics));
            out.push(Style {
                name: style.name.name.clone(),
                when,
                tone: style.tone.as_ref().map(|t| t.value.clone()),
                temperature: style.temperature.map(|t| t.value),
                top_p: style.top_p.map(|p| p.value),
            });
        }
        out
    }

    pub(super) fn fallback(
        &mut self,
        fallbacks: &[ast::Fallback],
        styles: &[ast::Style],
        compiler: &Scripts,
    ) -> Vec<FallbackArm> {
        for extra in fallbacks.iter().skip(1) {
            let first = fallbacks[0].span;
            let d = Diagnostic::error(
                Span::new(extra.span.file, extra.span.start, extra.span.start + "fallback".len()),
                "more than one `fallback` block",
            )
            .with_secondary(
                Span::new(first.file, first.start, first.start + "fallback".len()),
                "first one here",
            )
            .with_help("put every arm in one block; arms are tried in order");
            self.push(d);
        }
        let Some(fallback) = fallbacks.first() else {
            return vec![FallbackArm {
                when: None,
                action: FallbackAction::Llm(None),
            }];
        };
        let names = Names::default();
        let mut out = Vec::new();
        let mut otherwise: Option<Span> = None;
        for arm in &fallback.arms {
            if let Some(at) = otherwise {
                let d = Diagnostic::warning(arm.span, "this fallback arm can never apply")
                    .with_secondary(at, "`otherwise` always applies before it");
                self.push(d);
            }
            let when = match &arm.when {
                None => {
                    otherwise.get_or_insert(arm.span);
                    None
                }
                Some(w) => match compiler.condition(w, &names, self.diagnostics) {
                    Some(s) => Some(s),
                    None => continue,
                },
            };
            let action = match &arm.action {
                ast::FallbackAction::Handoff(h) => FallbackAction::Handoff(h.reason.as_ref().map(|r| r.value.clone())),
                ast::FallbackAction::Reply(text) => match compiler.template(text, &names, self.diagnostics) {
                    Some(t) => FallbackAction::Reply(t),
                    None => continue,
                },
                ast::FallbackAction::Llm(None) => FallbackAction::Llm(None),
                ast::FallbackAction::Llm(Some(style)) => match styles.iter().position(|s| s.name.name == style.name) {
                    Some(i) => FallbackAction::Llm(Some(i)),
                    None => {
                        self.unknown(style, "style", styles.iter().map(|s| s.name.name.as_str()));
                        continue;
                    }
                },
            };
            out.push(FallbackArm { when, action });
        }
        out
    }
}
