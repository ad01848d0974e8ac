//! Lowering cards (`card NAME { pattern /…/ as order alone reply "…" }`), the message
//! kinds a platform inserts: the pattern built (errors inside it) and required to have
//! named groups (a card carries fields), `as` required to name a request-context map the
//! shop knows, the `alone` reply compiled, and no card named like an entity (a card's
//! matches are in `entities` under its name).

use std::collections::BTreeSet;

use super::{Lowerer, Scripts};
use crate::diag::{Diagnostic, closest};
use crate::dsl::ast;
use crate::ruleset::{Card, Shop};
use crate::script::Names;

impl Lowerer<'_> {
    pub(super) fn cards(
        &mut self,
        cards: &[ast::Card],
        shop: &Shop,
        entities: &BTreeSet<String>,
        compiler: &Scripts,
    ) -> Vec<Card> {
        let mut out = Vec::new();
        for card in cards {
            let name = &card.name.name;
            if entities.contains(name) {
                self.push(
                    Diagnostic::error(card.name.span, format!("card `{name}` has the name of an entity"))
                        .with_label("an entity is already called this")
                        .with_help("a card's matches are read as `entities.NAME`, so it needs a name of its own"),
                );
            }
            let regex = match &card.pattern {
                None => {
                    self.push(
                        Diagnostic::error(card.name.span, format!("card `{name}` has no `pattern`"))
                            .with_label("nothing says how to find this card in a message")
                            .with_help("add `pattern /\\[订单编号[:：](?<id>\\d+)\\]/`: each named group is a field"),
                    );
                    None
                }
                Some(p) => self.card_pattern(p),
            };
            let context = match &card.context {
                None => {
                    self.push(
                        Diagnostic::error(card.name.span, format!("card `{name}` has no `as`"))
                            .with_label("its fields need a request-context map to go into")
                            .with_help("add `as order` (or `cart`, `product`, or a map declared with `context` in the shop block)"),
                    );
                    None
                }
                Some(ctx) if !shop.context.contains(&ctx.name) => {
                    let mut d = Diagnostic::error(ctx.span, format!("unknown request-context map `{}`", ctx.name))
                        .with_label("a card's fields become a request-context map");
                    d = match closest(&ctx.name, shop.context.iter().map(String::as_str)) {
                        Some(near) => d.with_help(format!(
                            "did you mean `{near}`? or declare it with `context {}` in the shop block",
                            ctx.name
                        )),
                        None => d.with_help(format!(
                            "the known maps are {}; declare another with `context {}` in the shop block",
                            shop.context.join(", "),
                            ctx.name
                        )),
                    };
                    self.push(d);
                    None
                }
                Some(ctx) => Some(ctx.name.clone()),
            };
            let alone = card
                .alone
                .as_ref()
                .and_then(|text| compiler.template(text, &Names::default(), self.diagnostics));
            if card.alone.is_some() && alone.is_none() {
                continue;
            }
            if let (Some(regex), Some(context)) = (regex, context) {
                out.push(Card {
                    name: name.clone(),
                    regex,
                    context,
                    alone,
                    location: self.location(card.name.span),
                });
            }
        }
        out
    }

    /// Builds a card's pattern: its flags, errors inside it, and at least one named group.
    fn card_pattern(&mut self, p: &ast::CardPattern) -> Option<regex::Regex> {
        let regex = self.pattern(&p.pattern, p.span, &p.flags)?;
        if regex.capture_names().all(|n| n.is_none()) {
            self.push(
                Diagnostic::error(p.span, "a card's pattern has no named groups")
                    .with_label("a card carries fields, and each named group is one")
                    .with_help("name the parts to keep: `订单编号[:：](?<id>\\d+)`"),
            );
            return None;
        }
        if regex.is_match("") {
            self.push(
                Diagnostic::error(p.span, "a card's pattern matches an empty message")
                    .with_label("it would find a card in every message"),
            );
            return None;
        }
        Some(regex)
    }
}
