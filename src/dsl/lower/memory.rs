//! Lowering conversation memory and offers: `remember`/`forget` lines of rules and flows
//! (their names checked, their scripts compiled), the names remembered anywhere in the
//! rule set (which `memory.NAME` in a script is checked against), and the answer triggers
//! `on yes to RULE` / `on no to RULE` (the rule must exist, and its reply should end in a
//! yes-or-no question, or a yes to it can never be read as one).

use std::collections::BTreeSet;

use super::{Lowerer, Scripts};
use crate::diag::{Diagnostic, closest};
use crate::dsl::ast::{self, Ident, StepKind};
use crate::nlu::reading::{PendingKind, pending_of};
use crate::ruleset::{Memo, Trigger};
use crate::script::Names;

/// Every name a `remember` line or step of the rule set keeps, in name order: scripts
/// reading `memory.x` are checked against it.
pub(super) fn remembered(rules: &[ast::Rule], flows: &[ast::Flow]) -> Vec<String> {
    fn steps(list: &[ast::Step], out: &mut BTreeSet<String>) {
        for step in list {
            match &step.kind {
                StepKind::Memo(ast::Memo::Remember { name, .. }) => {
                    out.insert(name.name.clone());
                }
                StepKind::If { then, otherwise, .. } => {
                    steps(then, out);
                    steps(otherwise, out);
                }
                _ => {}
            }
        }
    }
    let mut out = BTreeSet::new();
    for rule in rules {
        for memo in &rule.memos {
            if let ast::Memo::Remember { name, .. } = memo {
                out.insert(name.name.clone());
            }
        }
    }
    for flow in flows {
        steps(&flow.steps, &mut out);
    }
    out.into_iter().collect()
}

/// Whether `name` can be written `memory.NAME` in a script: a rhai identifier (ASCII
/// letters, digits and `_`, not starting with a digit).
fn is_script_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Lowerer<'_> {
    /// Compiles one `remember`/`forget`: the name must be one scripts can read, and a
    /// `forget` should name something remembered somewhere.
    pub(super) fn memo(
        &mut self,
        memo: &ast::Memo,
        compiler: &Scripts,
        names: &Names<'_>,
        remembered: &[String],
    ) -> Option<Memo> {
        let name = memo.name();
        if !is_script_name(&name.name) {
            self.push(
                Diagnostic::error(name.span, format!("`{}` cannot be a memory name", name.name))
                    .with_label("scripts read it as `memory.NAME`, so it must be a script name")
                    .with_help("use ASCII letters, digits and `_`, not starting with a digit: e.g. `order`, `offer_2`"),
            );
            return None;
        }
        match memo {
            ast::Memo::Remember { name, value } => {
                compiler
                    .expr(value, names, self.diagnostics)
                    .map(|value| Memo::Remember {
                        name: name.name.clone(),
                        value,
                    })
            }
            ast::Memo::Forget(name) => {
                if !remembered.contains(&name.name) {
                    let mut d = Diagnostic::warning(name.span, format!("`{}` is never remembered", name.name))
                        .with_label("no `remember` line or step keeps this name, so there is nothing to forget");
                    if let Some(near) = closest(&name.name, remembered.iter().map(String::as_str)) {
                        d = d.with_help(format!("did you mean `{near}`?"));
                    }
                    self.push(d);
                }
                Some(Memo::Forget(name.name.clone()))
            }
        }
    }

    /// The trigger `on yes to RULE` / `on no to RULE`: `RULE` must be a declared rule, and
    /// a warning when its reply does not end in a yes-or-no question (a yes or no to it is
    /// then never read as one, so the trigger never fires).
    pub(super) fn answer_trigger(&mut self, yes: bool, rule: &Ident, rules: &[ast::Rule]) -> Option<Trigger> {
        let word = if yes { "yes" } else { "no" };
        let Some(asked) = rules.iter().find(|r| r.name.name == rule.name) else {
            self.unknown(rule, "rule", rules.iter().map(|r| r.name.name.as_str()));
            return None;
        };
        let kind = asked.reply.as_ref().map(|r| pending_of(&r.value));
        if kind != Some(PendingKind::YesNo) {
            let why = match &kind {
                None => "it has no reply, so it asks nothing".to_string(),
                Some(PendingKind::Nothing) => "its reply does not end in a question".to_string(),
                Some(PendingKind::AnythingElse) => {
                    "its reply ends in \"anything else?\", which the shop's short replies answer".to_string()
                }
                Some(other) => format!("its reply ends in a question that is not yes or no ({})", other.name()),
            };
            let mut d = Diagnostic::warning(
                rule.span,
                format!("a {word} to rule `{}` can never be read as {word}", rule.name),
            )
            .with_label(why)
            .with_help("end the rule's reply with a yes-or-no question, e.g. \"要帮您取消这个订单吗？\"");
            d = match &asked.reply {
                Some(reply) => d.with_secondary(reply.span, "this reply"),
                None => d.with_secondary(asked.name.span, "this rule"),
            };
            self.push(d);
        }
        Some(Trigger::Answer {
            rule: rule.name.clone(),
            yes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_names_are_script_names() {
        assert!(is_script_name("order"));
        assert!(is_script_name("_x2"));
        assert!(!is_script_name("2x"));
        assert!(!is_script_name("订单"));
        assert!(!is_script_name(""));
    }
}
