//! Lowering the shop block (its defaults filled in), the styles, and the fallback chain.

use chrono_tz::Tz;

use super::{Lowerer, Scripts};
use crate::diag::{Diagnostic, FileId, Span, closest};
use crate::dsl::ast;
use crate::kb;
use crate::nlu::Lang;
use crate::ruleset::{FallbackAction, FallbackArm, ModelCall, QuietHours, Shop, Style};
use crate::script::{DEFAULT_CONTEXT, Localized, Names};

const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";

const DEFAULT_THRESHOLD: f64 = 0.6;

const DEFAULT_HANDOFF_MESSAGE: &str = "正在为您转接人工客服，请稍候。";

const DEFAULT_FALLBACK_MESSAGE: &str = "抱歉，这个问题我暂时无法回答。您可以换个说法，或输入“人工”联系人工客服。";

/// The least judged confidence at which a model answer is shown when the shop sets none.
/// On the labelled answers of tests/data/judge, the default model's answers that pass the
/// judge's checks but do not answer the question score 0.62-0.65; answers a shop would
/// send come from models sure of their words.
pub const DEFAULT_MODEL_THRESHOLD: f64 = 0.7;

/// Beyond this a `within` is probably a mistake (minutes for seconds).
const MAX_MODEL_BUDGET_MS: u64 = 60_000;

/// Said before the question a flow asks again after the rules changed under it.
const DEFAULT_FLOW_UPDATED_MESSAGE: &str = "抱歉，流程有更新，需要再确认一下：";
const DEFAULT_GOODBYE_MESSAGE: &str = "好的，感谢您的咨询，祝您购物愉快～有需要随时找我们哦！";
const DEFAULT_ACK_MESSAGE: &str = "好的～还有其他可以帮您的吗？";
const DEFAULT_MORE_MESSAGE: &str = "好的，请问还有什么可以帮您？";
const DEFAULT_CONFIRM_AGAIN_MESSAGE: &str = "需要继续办理的话请回复“是”，不需要了请回复“不用了”。";

/// How many days ahead a promotion counts as upcoming: two weeks covers the run-up to a
/// campaign, when customers start asking about it.
const DEFAULT_UPCOMING_DAYS: u32 = 14;

/// How many questions of one message are answered when `max_answers` is not set. Two: the
/// trial's customers asked two things at once far more often than three ("包邮吗 几天到"),
/// and a third answer makes a reply long enough to be skimmed on a phone; a shop whose
/// customers list more can raise it.
pub(crate) const DEFAULT_MAX_ANSWERS: usize = 2;

/// The most `max_answers` may be: the splitter's own bound (`nlu::split::MAX_PARTS`).
const MAX_MAX_ANSWERS: i64 = crate::nlu::split::MAX_PARTS as i64;

/// The longest `upcoming_days`: a year.
const MAX_UPCOMING_DAYS: i64 = 366;

/// The most proactive messages per customer per day a shop may allow (`proactive_limit`):
/// more is spam whatever the shop thinks.
const MAX_PROACTIVE_LIMIT: i64 = 50;

/// How long a flow waits for the customer when neither the shop nor the flow says: long
/// enough to go and find an order number, short enough that a customer who comes back
/// the next day with something else is not held to a half-done flow.
pub const DEFAULT_FLOW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The shortest flow timeout: under a minute a customer looking up what the flow asks for
/// would lose it, so a shorter one is a mistake (seconds for minutes).
const MIN_FLOW_TIMEOUT_MS: u64 = 60_000;

/// The longest flow timeout: a week; a conversation older than that is a new one.
const MAX_FLOW_TIMEOUT_MS: u64 = 7 * 24 * 3_600_000;

/// A shop message with its variants in the shop's other languages, or the default.
pub(super) fn localized(text: Option<&ast::Str>, default: &str, languages: &[Lang]) -> Localized<String> {
    let Some(text) = text else {
        return Localized::new(default.to_string());
    };
    let mut out = Localized::new(text.value.clone());
    for (code, variant) in &text.variants {
        if let Some(lang) = Lang::parse(&code.name).filter(|l| languages.iter().skip(1).any(|d| d == l))
            && out.variant(lang).is_none()
        {
            out.by_language.push((lang, variant.value.clone()));
        }
    }
    out
}

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
                model_threshold: DEFAULT_MODEL_THRESHOLD,
                faq_threshold: kb::DEFAULT_FAQ_THRESHOLD,
                languages: vec![Lang::ZH],
                translate: false,
                handoff_message: Localized::new(DEFAULT_HANDOFF_MESSAGE.into()),
                fallback_message: Localized::new(DEFAULT_FALLBACK_MESSAGE.into()),
                context: DEFAULT_CONTEXT.iter().map(|s| s.to_string()).collect(),
                flow_updated_message: Localized::new(DEFAULT_FLOW_UPDATED_MESSAGE.into()),
                goodbye_message: Localized::new(DEFAULT_GOODBYE_MESSAGE.into()),
                ack_message: Localized::new(DEFAULT_ACK_MESSAGE.into()),
                more_message: Localized::new(DEFAULT_MORE_MESSAGE.into()),
                confirm_again_message: Localized::new(DEFAULT_CONFIRM_AGAIN_MESSAGE.into()),
                upcoming_days: DEFAULT_UPCOMING_DAYS,
                flow_timeout: DEFAULT_FLOW_TIMEOUT,
                max_answers: DEFAULT_MAX_ANSWERS,
                proactive_limit: crate::ruleset::DEFAULT_PROACTIVE_LIMIT,
                quiet_hours: Some(crate::ruleset::DEFAULT_QUIET_HOURS),
                opt_out_message: Localized::new(crate::ruleset::DEFAULT_OPT_OUT_MESSAGE.into()),
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
        let threshold = self.confidence(shop.threshold.as_ref(), "threshold", DEFAULT_THRESHOLD);
        let model_threshold = self.confidence(
            shop.model_threshold.as_ref(),
            "model_threshold",
            DEFAULT_MODEL_THRESHOLD,
        );
        let faq_threshold = self.confidence(shop.faq_threshold.as_ref(), "faq_threshold", kb::DEFAULT_FAQ_THRESHOLD);
        let max_answers = match shop.max_answers {
            Some(n) if !(1..=MAX_MAX_ANSWERS).contains(&n.value) => {
                self.push(
                    Diagnostic::error(n.span, format!("max_answers must be between 1 and {MAX_MAX_ANSWERS}"))
                        .with_label("how many questions of one message are answered, e.g. 2; 1 answers every message as one question"),
                );
                DEFAULT_MAX_ANSWERS
            }
            Some(n) => usize::try_from(n.value).unwrap_or(DEFAULT_MAX_ANSWERS),
            None => DEFAULT_MAX_ANSWERS,
        };
        let upcoming_days = match shop.upcoming_days {
            Some(n) if !(0..=MAX_UPCOMING_DAYS).contains(&n.value) => {
                self.push(
                    Diagnostic::error(
                        n.span,
                        format!("upcoming_days must be between 0 and {MAX_UPCOMING_DAYS}"),
                    )
                    .with_label("a number of days, e.g. 14; 0 lists no upcoming promotions"),
                );
                DEFAULT_UPCOMING_DAYS
            }
            Some(n) => u32::try_from(n.value).unwrap_or(DEFAULT_UPCOMING_DAYS),
            None => DEFAULT_UPCOMING_DAYS,
        };
        let proactive_limit = match shop.proactive_limit {
            Some(n) if !(1..=MAX_PROACTIVE_LIMIT).contains(&n.value) => {
                self.push(
                    Diagnostic::error(
                        n.span,
                        format!("proactive_limit must be between 1 and {MAX_PROACTIVE_LIMIT}"),
                    )
                    .with_label("proactive messages per customer per day, all items together, e.g. 2")
                    .with_help("to send none, write no `proactive` items"),
                );
                crate::ruleset::DEFAULT_PROACTIVE_LIMIT
            }
            Some(n) => u32::try_from(n.value).unwrap_or(crate::ruleset::DEFAULT_PROACTIVE_LIMIT),
            None => crate::ruleset::DEFAULT_PROACTIVE_LIMIT,
        };
        let quiet_hours = shop
            .quiet_hours
            .as_ref()
            .and_then(|q| self.quiet_hours(q))
            .unwrap_or(crate::ruleset::DEFAULT_QUIET_HOURS);
        let flow_timeout = self
            .flow_timeout(shop.flow_timeout.as_ref())
            .unwrap_or(DEFAULT_FLOW_TIMEOUT);
        let languages = self.shop_languages(shop);
        let opt_out_message = localized(
            shop.opt_out_message.as_ref(),
            crate::ruleset::DEFAULT_OPT_OUT_MESSAGE,
            &languages,
        );
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
            model_threshold,
            faq_threshold,
            handoff_message: localized(shop.handoff_message.as_ref(), DEFAULT_HANDOFF_MESSAGE, &languages),
            fallback_message: localized(shop.fallback_message.as_ref(), DEFAULT_FALLBACK_MESSAGE, &languages),
            context,
            flow_updated_message: localized(
                shop.flow_updated_message.as_ref(),
                DEFAULT_FLOW_UPDATED_MESSAGE,
                &languages,
            ),
            goodbye_message: localized(shop.goodbye_message.as_ref(), DEFAULT_GOODBYE_MESSAGE, &languages),
            ack_message: localized(shop.ack_message.as_ref(), DEFAULT_ACK_MESSAGE, &languages),
            more_message: localized(shop.more_message.as_ref(), DEFAULT_MORE_MESSAGE, &languages),
            confirm_again_message: localized(
                shop.confirm_again_message.as_ref(),
                DEFAULT_CONFIRM_AGAIN_MESSAGE,
                &languages,
            ),
            languages,
            translate: shop.translate.is_some(),
            upcoming_days,
            flow_timeout,
            max_answers,
            proactive_limit,
            quiet_hours: Some(quiet_hours),
            opt_out_message,
        }
    }

    /// `HH:MM to HH:MM` (the shop's `quiet_hours`, a proactive item's `quiet`) checked:
    /// real times of day, and two different ones (equal times would be no quiet hours or
    /// a whole day of them, which no editor means). `None` when wrong (reported).
    pub(super) fn quiet_hours(&mut self, lit: &ast::QuietLit) -> Option<QuietHours> {
        let from = self.time_of_day(&lit.from);
        let to = self.time_of_day(&lit.to);
        let (from, to) = (from?, to?);
        if from == to {
            self.push(
                Diagnostic::error(lit.span, "quiet hours must start and end at different times")
                    .with_label("this span is empty")
                    .with_help("write when the quiet hours start and when they end, e.g. `22:00 to 08:00` (past midnight)"),
            );
            return None;
        }
        Some(QuietHours { from, to })
    }

    /// A time of day as written, checked (`25:00` and `12:60` are errors).
    fn time_of_day(&mut self, lit: &ast::TimeLit) -> Option<chrono::NaiveTime> {
        let (h, m, sec) = lit.hms;
        let time = chrono::NaiveTime::from_hms_opt(h, m, sec.unwrap_or(0));
        if time.is_none() {
            self.push(
                Diagnostic::error(lit.span, "not a time of day")
                    .with_label("hours go from 00 to 23, minutes and seconds from 00 to 59")
                    .with_help("write a 24-hour time, e.g. `22:00` or `08:30`"),
            );
        }
        time
    }

    /// A flow timeout (`flow_timeout` in the shop, `timeout` in a flow) checked against
    /// its bounds; `None` when it is not given or out of them (reported).
    pub(super) fn flow_timeout(&mut self, lit: Option<&ast::DurationLit>) -> Option<std::time::Duration> {
        let lit = lit?;
        if !(MIN_FLOW_TIMEOUT_MS..=MAX_FLOW_TIMEOUT_MS).contains(&lit.millis) {
            self.push(
                Diagnostic::error(lit.span, "a flow timeout must be between 1 minute and 7 days")
                    .with_label("how long a flow waits for the customer's answer, e.g. `30m` or `2h`"),
            );
            return None;
        }
        Some(std::time::Duration::from_millis(lit.millis))
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
                action: FallbackAction::Llm(ModelCall::default()),
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
                ast::FallbackAction::Handoff { handoff, reply } => FallbackAction::Handoff {
                    handoff: self.handoff_spec(handoff, super::queues::fallback_kind(when.as_ref())),
                    reply: match reply {
                        Some(text) => match compiler.template(text, &names, self.diagnostics) {
                            Some(t) => Some(t),
                            None => continue,
                        },
                        None => None,
                    },
                },
                ast::FallbackAction::Reply(text) => match compiler.template(text, &names, self.diagnostics) {
                    Some(t) => FallbackAction::Reply(t),
                    None => continue,
                },
                ast::FallbackAction::Llm { style, within } => {
                    let style = match style {
                        None => None,
                        Some(style) => match styles.iter().position(|s| s.name.name == style.name) {
                            Some(i) => Some(i),
                            None => {
                                self.unknown(style, "style", styles.iter().map(|s| s.name.name.as_str()));
                                continue;
                            }
                        },
                    };
                    FallbackAction::Llm(ModelCall {
                        style,
                        within: within.as_ref().and_then(|w| self.model_budget(w)),
                    })
                }
            };
            out.push(FallbackArm { when, action });
        }
        out
    }

    /// A confidence setting of the shop (`threshold`, `model_threshold`, `faq_threshold`):
    /// its value, or `default` when it is not given or not between 0 and 1 (an error).
    fn confidence(&mut self, value: Option<&ast::Number>, name: &str, default: f64) -> f64 {
        match value {
            Some(t) if !(0.0..=1.0).contains(&t.value) => {
                self.push(
                    Diagnostic::error(t.span, format!("{name} must be between 0 and 1"))
                        .with_label("a confidence, e.g. 0.6"),
                );
                default
            }
            Some(t) => t.value,
            None => default,
        }
    }

    /// A fallback arm's `within`: checked, as the engine's deadline for the answer. `None`
    /// (the engine's model timeout) when it makes no sense.
    fn model_budget(&mut self, within: &ast::DurationLit) -> Option<std::time::Duration> {
        if within.millis == 0 {
            self.push(
                Diagnostic::error(within.span, "a model answer cannot take no time")
                    .with_help("give the model a few seconds, e.g. `within 4s`, or drop the `llm` arm"),
            );
            return None;
        }
        if within.millis > MAX_MODEL_BUDGET_MS {
            self.push(
                Diagnostic::warning(within.span, "customers rarely wait this long for an answer")
                    .with_help("the engine's own model timeout (20s by default) ends the answer first"),
            );
        }
        Some(std::time::Duration::from_millis(within.millis))
    }
}
