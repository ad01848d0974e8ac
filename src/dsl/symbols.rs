//! Where each name of a rules directory is declared: intents, entities, cards, data
//! sources, rules, promotions, policies, flows and their slots, styles, queues, proactive
//! items, with the `file:line:col` of the name in its declaration. Read from the syntax
//! tree as parsed, so an editor can jump to a declaration (and complete names) also while
//! the files have errors. Lines and columns are 1-based, columns in characters, as diagnostics count.

use std::path::Path;

use serde::Serialize;

use super::ast::{Ident, Item, Step, StepKind};
use crate::diag::{FileId, SourceMap};

/// One declared name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Symbol {
    /// The name as declared (an intent's dotted path).
    pub name: String,
    /// For a slot, the flow that asks for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// The file, relative to the rules directory, with `/`.
    pub file: String,
    /// 1-based line of the name.
    pub line: usize,
    /// 1-based column of the name, in characters.
    pub col: usize,
}

/// Every declared name, by kind, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Symbols {
    /// `intent a.b { … }`
    pub intents: Vec<Symbol>,
    /// `entity x = …`
    pub entities: Vec<Symbol>,
    /// `card x { … }`
    pub cards: Vec<Symbol>,
    /// `source x = …`
    pub sources: Vec<Symbol>,
    /// The slots flows ask for (`ask x …`, `confirm x …`), each with its flow; a slot
    /// asked twice in one flow is listed where it is first asked.
    pub slots: Vec<Symbol>,
    /// `flow x { … }`
    pub flows: Vec<Symbol>,
    /// `rule x { … }`
    pub rules: Vec<Symbol>,
    /// `promotion x { … }`
    pub promotions: Vec<Symbol>,
    /// `policy x { … }`
    pub policies: Vec<Symbol>,
    /// `style x { … }`
    pub styles: Vec<Symbol>,
    /// `queue x { … }`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<Symbol>,
    /// `proactive x { … }`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proactive: Vec<Symbol>,
}

impl Symbols {
    /// The names declared in `parsed` (the items of each file of `sources`, read from
    /// `dir`).
    pub fn of(dir: &Path, sources: &SourceMap, parsed: &[(FileId, Vec<Item>)]) -> Symbols {
        let mut out = Symbols::default();
        let at = |ident: &Ident, flow: Option<&str>| {
            let file = sources.file(ident.span.file);
            let (line, col) = file.line_col(ident.span.start);
            let relative = file.path.strip_prefix(dir).unwrap_or(&file.path);
            Symbol {
                name: ident.name.clone(),
                flow: flow.map(str::to_string),
                file: relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
                line,
                col,
            }
        };
        for (_, items) in parsed {
            for item in items {
                match item {
                    Item::Intent(x) => out.intents.push(at(&x.name, None)),
                    Item::Entity(x) => out.entities.push(at(&x.name, None)),
                    Item::Card(x) => out.cards.push(at(&x.name, None)),
                    Item::Source(x) => out.sources.push(at(&x.name, None)),
                    Item::Rule(x) => out.rules.push(at(&x.name, None)),
                    Item::Promotion(x) => out.promotions.push(at(&x.name, None)),
                    Item::Policy(x) => out.policies.push(at(&x.name, None)),
                    Item::Style(x) => out.styles.push(at(&x.name, None)),
                    Item::Queue(x) => out.queues.push(at(&x.name, None)),
                    Item::Proactive(x) => out.proactive.push(at(&x.name, None)),
                    Item::Flow(x) => {
                        out.flows.push(at(&x.name, None));
                        let mut slots: Vec<&Ident> = Vec::new();
                        asked(&x.steps, &mut slots);
                        for slot in slots {
                            out.slots.push(at(slot, Some(&x.name.name)));
                        }
                    }
                    Item::Shop(_) | Item::Fallback(_) | Item::Safety(_) => {}
                }
            }
        }
        out
    }
}

/// The slots `steps` ask for, first asks only, in order (into `if` branches and the step
/// taken when retries run out).
fn asked<'a>(steps: &'a [Step], out: &mut Vec<&'a Ident>) {
    for step in steps {
        match &step.kind {
            StepKind::Ask { slot, otherwise, .. } => {
                if !out.iter().any(|s| s.name == slot.name) {
                    out.push(slot);
                }
                if let Some(step) = otherwise {
                    asked(std::slice::from_ref(step), out);
                }
            }
            StepKind::If { then, otherwise, .. } => {
                asked(then, out);
                asked(otherwise, out);
            }
            _ => {}
        }
    }
}
