//! Lowering: from the syntax trees of every file to one validated [`RuleSet`].
//!
//! Lowering collects every error and warning instead of stopping at the first, and
//! builds the rule set only when there are no errors. It resolves names (intents,
//! entities, sources, slots, styles), compiles every expression and template once, builds
//! regexes, reads word lists and data files, places dates in the shop's time zone,
//! compiles flows into small programs, and builds the trigger index.
//!
//! This file groups the items by kind, runs each kind's lowering in order and assembles
//! the rule set (the script engine, the trigger index, the trained understanding, the
//! version hash). Each kind is lowered in a file of its own: `shop` (the shop block,
//! styles and the fallback chain), `intents` (intents and entities), `data` (data
//! sources and the files rule files name), `rules` (rules, promotions and policies with
//! their triggers, and the trigger index), `flows` (flows compiled to programs),
//! `queues` (the agents' queues and every handoff's kind and queue), `proactive` (the
//! messages kefu sends first on shop events) and `safety` (the word lists, allow list
//! and PII kinds).

mod cards;
mod data;
mod flows;
mod intents;
mod languages;
mod memory;
mod proactive;
mod queues;
mod rules;
mod safety;
mod shop;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::ast::{self, Ident, Item, Str};
use super::{LoadOptions, Summary};
use crate::diag::{Diagnostic, FileId, SourceMap, Span, closest};
use crate::kb;
use crate::nlu::Lang;
use crate::nlu::entities::BUILTIN_ENTITIES;
use crate::nlu::{Nlu, Options as NluOptions};
use crate::ruleset::{FallbackAction, FallbackArm, Flow, OpKind, Promotion, Rule, RuleSet, Shop};
use crate::script::{self, Limits, Names, Offer, Script, ScriptCompiler, Template, Texts};
use intents::ancestors_and_self;
use rules::build_index;

/// The items of every file, grouped by kind, each with its file order.
#[derive(Default)]
struct Items {
    shops: Vec<ast::Shop>,
    intents: Vec<ast::Intent>,
    entities: Vec<ast::Entity>,
    cards: Vec<ast::Card>,
    sources: Vec<ast::Source>,
    rules: Vec<ast::Rule>,
    promotions: Vec<ast::Promotion>,
    policies: Vec<ast::Policy>,
    flows: Vec<ast::Flow>,
    styles: Vec<ast::Style>,
    fallbacks: Vec<ast::Fallback>,
    safety: Vec<ast::Safety>,
    queues: Vec<ast::Queue>,
    proactive: Vec<ast::Proactive>,
}

/// How far a lowering goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// The whole rule set, the classifier trained (or reused).
    Build,
    /// Every check and its diagnostics, then the summary; nothing that only serves turns
    /// (the classifier, the script engine, vetting fixed replies).
    Check,
}

/// What a lowering without errors gives, by [`Goal`].
pub enum Lowered {
    /// [`Goal::Build`]: the rule set.
    Rules(Box<RuleSet>),
    /// [`Goal::Check`]: what the rule set would hold.
    Checked(Summary),
}

/// Lowers the parsed files of a rules directory. `first_file` is where diagnostics about
/// the rule set as a whole (no `shop` block) are placed.
pub fn lower(
    root: &Path,
    files: Vec<(FileId, Vec<Item>)>,
    first_file: FileId,
    options: LoadOptions,
    goal: Goal,
    sources: &mut SourceMap,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Lowered> {
    let mut items = Items::default();
    for (_, file_items) in files {
        for item in file_items {
            match item {
                Item::Shop(x) => items.shops.push(*x),
                Item::Intent(x) => items.intents.push(x),
                Item::Entity(x) => items.entities.push(x),
                Item::Card(x) => items.cards.push(x),
                Item::Source(x) => items.sources.push(x),
                Item::Rule(x) => items.rules.push(x),
                Item::Promotion(x) => items.promotions.push(x),
                Item::Policy(x) => items.policies.push(x),
                Item::Flow(x) => items.flows.push(x),
                Item::Style(x) => items.styles.push(x),
                Item::Fallback(x) => items.fallbacks.push(x),
                Item::Safety(x) => items.safety.push(x),
                Item::Queue(x) => items.queues.push(x),
                Item::Proactive(x) => items.proactive.push(x),
            }
        }
    }
    let mut lowerer = Lowerer {
        root,
        options,
        goal,
        sources,
        diagnostics,
        inputs: Vec::new(),
        queue_names: Vec::new(),
    };
    lowerer.run(items, first_file)
}

/// One lowering under way: where the rules are, where problems go, and what was read.
/// Each kind's file adds its methods.
struct Lowerer<'a> {
    root: &'a Path,
    options: LoadOptions,
    goal: Goal,
    sources: &'a mut SourceMap,
    diagnostics: &'a mut Vec<Diagnostic>,
    /// Every auxiliary file read (data, word lists) with its text, for the version hash.
    inputs: Vec<(PathBuf, String)>,
    /// The queues' names in routing order, for a handoff's `to` (set by `queues`).
    queue_names: Vec<String>,
}

impl Lowerer<'_> {
    /// 1-based line of a span's start.
    fn line(&self, span: Span) -> u32 {
        self.sources.file(span.file).line_col(span.start).0 as u32
    }

    /// `path:line` of a span's start.
    fn location(&self, span: Span) -> String {
        format!("{}:{}", self.sources.file(span.file).path.display(), self.line(span))
    }

    fn push(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    /// Lowers every kind in order and assembles the rule set (or, to check, its summary),
    /// unless this lowering reported an error. Nothing after the error count below reports
    /// a diagnostic, so a check's report is a build's.
    fn run(&mut self, items: Items, first_file: FileId) -> Option<Lowered> {
        let errors_before = self.diagnostics.iter().filter(|d| d.is_error()).count();

        for (kind, names) in [
            ("intent", items.intents.iter().map(|x| &x.name).collect::<Vec<_>>()),
            ("entity", items.entities.iter().map(|x| &x.name).collect()),
            ("card", items.cards.iter().map(|x| &x.name).collect()),
            ("source", items.sources.iter().map(|x| &x.name).collect()),
            ("rule", items.rules.iter().map(|x| &x.name).collect()),
            ("promotion", items.promotions.iter().map(|x| &x.name).collect()),
            ("policy", items.policies.iter().map(|x| &x.name).collect()),
            ("flow", items.flows.iter().map(|x| &x.name).collect()),
            ("style", items.styles.iter().map(|x| &x.name).collect()),
            ("queue", items.queues.iter().map(|x| &x.name).collect()),
            ("proactive", items.proactive.iter().map(|x| &x.name).collect()),
        ] {
            self.check_unique(kind, names);
        }

        let shop = self.shop(&items.shops, first_file);
        self.check_variants(&items, &shop);
        let intents = self.intents(&items.intents);
        let intent_paths: BTreeSet<String> = intents.iter().flat_map(|i| ancestors_and_self(&i.name)).collect();
        let entities = self.entities(&items.entities);
        // Built-in entities (order_no, money, date, ...) can be used without a declaration.
        let entity_names: BTreeSet<String> = entities
            .iter()
            .map(|e| e.name.clone())
            .chain(BUILTIN_ENTITIES.iter().map(|n| n.to_string()))
            .collect();
        let data_sources = self.data_sources(&items.sources);
        let source_names: Vec<String> = data_sources.iter().map(|s| s.name.clone()).collect();
        let promotion_names: Vec<String> = items.promotions.iter().map(|p| p.name.name.clone()).collect();
        let remembered = memory::remembered(&items.rules, &items.flows);
        let grouped: Vec<String> = entities
            .iter()
            .filter(|e| e.has_fields())
            .map(|e| e.name.clone())
            .chain(items.cards.iter().map(|c| c.name.name.clone()))
            .collect();
        let compiler = Scripts(
            ScriptCompiler::new(&source_names, &shop.context)
                .with_promotions(&promotion_names)
                .with_memory(&remembered)
                .with_grouped_entities(&grouped)
                .with_files(self.sources),
            std::cell::RefCell::new(Vec::new()),
            std::cell::Cell::new(false),
            shop.languages.clone(),
            Reads::default(),
        );
        let cards = self.cards(&items.cards, &shop, &entity_names, &compiler);
        let card_names: BTreeSet<String> = items.cards.iter().map(|c| c.name.name.clone()).collect();
        let (queues, default_queue) = self.queues(&items.queues, &compiler);
        let refs = Refs {
            intents: &intent_paths,
            entities: &entity_names,
            rules: &items.rules,
            remembered: &remembered,
            cards: &card_names,
        };

        let rules = self.rules(&items.rules, &compiler, &refs);
        let promotions = self.promotions(&items.promotions, &compiler, &refs, shop.timezone);
        let policies = self.policies(&items.policies, &refs);
        let flows = self.flows(&items.flows, &compiler, &refs);
        let proactive = self.proactive(&items.proactive, &compiler, &promotion_names);
        let styles = self.styles(&items.styles, &compiler);
        let fallback = self.fallback(&items.fallbacks, &items.styles, &compiler);
        let mut safety = self.safety(&items.safety, &items.entities);
        let kb = Arc::new(kb::load(
            self.root,
            &self.options.overlay,
            self.sources,
            self.diagnostics,
        ));

        self.check_canned_groups(&kb);

        let errors_after = self.diagnostics.iter().filter(|d| d.is_error()).count();
        if errors_after > errors_before {
            return None;
        }

        let triggers = build_index(&intents, &rules, &promotions, &flows);
        let (version, files) = self.version();
        if self.goal == Goal::Check {
            return Some(Lowered::Checked(Summary {
                version,
                intents: intents.len(),
                rules: rules.len(),
                promotions: promotions.len(),
                flows: flows.len(),
                keywords: triggers.keyword_count(),
                products: kb.products.len(),
                faqs: kb.faqs.len(),
            }));
        }

        safety.vet(fixed_replies(&shop, &rules, &promotions, &flows, &fallback, &kb));
        // What queues say is fixed too when it has no holes.
        safety.vet(
            queues
                .iter()
                .flat_map(|q| q.off_hours.iter().chain(&q.waiting))
                .flat_map(Texts::all)
                .filter_map(Template::as_literal),
        );
        // So is a proactive message without holes.
        safety.vet(
            proactive
                .iter()
                .flat_map(|p| p.say.all())
                .filter_map(Template::as_literal),
        );
        // A card's `alone` reply is a fixed reply too, when it has no holes.
        safety.vet(
            cards
                .iter()
                .filter_map(|c| c.alone.as_ref())
                .flat_map(Texts::all)
                .filter_map(Template::as_literal),
        );
        let mut nlu_options = NluOptions {
            threshold: shop.threshold,
            timezone: shop.timezone,
            ..NluOptions::default()
        };
        if self.options.quick_training {
            nlu_options.params = crate::nlu::classifier::Params {
                lambdas: vec![1e-4],
                max_iter: 5,
                folds: 0,
                ..nlu_options.params
            };
            nlu_options.builtin_oos = false;
        }
        let nlu = Nlu::reuse_or_train(&intents, &entities, &nlu_options, self.options.trained_cache.as_deref());
        let offers = promotions
            .iter()
            .map(|p| Offer {
                name: p.name.clone(),
                from: p.from,
                to: p.to,
                // `offer()` answers in the shop's language: scripts have no turn language
                // to pick by when the rule set registers them.
                say: p.say.default.clone(),
            })
            .collect();
        let engine = script::rule_set_engine(Limits::default(), &data_sources, &kb, offers);

        Some(Lowered::Rules(Box::new(RuleSet {
            version,
            root: self.root.to_path_buf(),
            files,
            shop,
            intents,
            entities,
            sources: data_sources,
            rules,
            promotions,
            policies,
            flows,
            styles,
            fallback,
            safety,
            triggers,
            nlu,
            kb,
            engine,
            promotion_readers: compiler.1.take(),
            reads_safety: compiler.2.get(),
            reads_memory: compiler.4.memory.get(),
            reads_past: compiler.4.past.get(),
            reads_all_entities: compiler.4.all_entities.get(),
            cards,
            reads_intents: compiler.4.intents.get(),
            queues,
            default_queue,
            proactive,
        })))
    }

    /// The version (a hash of the files' content and their paths inside the rules
    /// directory, not where the directory is: identical rules on two nodes, or in a
    /// copy, are one version) and every file read.
    fn version(&self) -> (String, Vec<PathBuf>) {
        let mut hasher = Sha256::new();
        let relative = |path: &Path| {
            path.strip_prefix(self.root)
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned()
        };
        let mut files: Vec<PathBuf> = Vec::new();
        for file in self.sources.files() {
            hasher.update(relative(&file.path).as_bytes());
            hasher.update([0]);
            hasher.update(file.text.as_bytes());
            files.push(file.path.clone());
        }
        for (path, text) in &self.inputs {
            hasher.update(relative(path).as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            if !files.contains(path) {
                files.push(path.clone());
            }
        }
        let version = hasher.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
        (version, files)
    }

    /// Reports every name of one kind declared more than once, pointing at the first.
    fn check_unique(&mut self, kind: &str, names: Vec<&Ident>) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for name in names {
            if let Some(first) = seen.get(name.name.as_str()) {
                let d = Diagnostic::error(name.span, format!("duplicate {kind} `{}`", name.name))
                    .with_label("defined again here")
                    .with_secondary(*first, "first defined here")
                    .with_help(format!(
                        "{kind} names are global across all files of the rule set; rename one"
                    ));
                self.push(d);
            } else {
                seen.insert(&name.name, name.span);
            }
        }
    }

    /// Reports empty keywords (of intents, triggers and inline word lists), which would
    /// match every message.
    fn check_keywords(&mut self, keywords: &[Str]) {
        for k in keywords {
            if k.value.trim().is_empty() {
                self.push(
                    Diagnostic::error(k.span, "empty keyword").with_label("an empty keyword would match every message"),
                );
            }
        }
    }

    /// Reports a reference to an undeclared name, suggesting the closest of `candidates`.
    fn unknown<'c>(&mut self, name: &Ident, kind: &str, candidates: impl Iterator<Item = &'c str>) {
        let lookup = name.name.strip_suffix(".*").unwrap_or(&name.name);
        let candidates: Vec<&str> = candidates.collect();
        let mut d = Diagnostic::error(name.span, format!("unknown {kind} `{}`", name.name))
            .with_label(format!("no {kind} is declared with this name"));
        if let Some(near) = closest(lookup, candidates.iter().copied()) {
            d = d.with_help(format!("did you mean `{near}`?"));
        } else if candidates.is_empty() {
            d = d.with_help(format!("declare it with `{kind} {} ...`", name.name));
        }
        self.push(d);
    }
}

/// The script compiler fed from the syntax tree: it hands `script` each expression's and
/// template's text with its place in the file, so that `script` needs no syntax tree.
/// It also notes the scripts that read `promotions`, which a turn builds only before one
/// of them runs (`RuleSet::promotion_readers`), and whether any reads `safety`, which a
/// turn then builds (`RuleSet::reads_safety`).
/// The fourth field is the shop's languages: a text's variants in them are compiled
/// (`languages.rs` reports the others). The fifth notes whether any script reads
/// `memory`, the conversation's past, `all_entities` or `intents` (`RuleSet::reads_memory`,
/// `RuleSet::reads_past`, `RuleSet::reads_all_entities`, `RuleSet::reads_intents`).
struct Scripts(
    ScriptCompiler,
    std::cell::RefCell<Vec<Span>>,
    std::cell::Cell<bool>,
    Vec<Lang>,
    Reads,
);

/// What the rule set's scripts read that a turn builds only when some script does.
#[derive(Default)]
struct Reads {
    /// The `memory` variable.
    memory: std::cell::Cell<bool>,
    /// `session.history`, `session.last_message` or `session.last_reply`: any script
    /// reading `session` whose text names one of them or indexes it (`session[…]`), a
    /// superset, never a miss.
    past: std::cell::Cell<bool>,
    /// The `all_entities` variable.
    all_entities: std::cell::Cell<bool>,
    /// The `intents` variable.
    intents: std::cell::Cell<bool>,
}

impl Scripts {
    /// Compiles a backtick expression whose value is used as it is (`set`, `call`).
    fn expr(&self, expr: &ast::Expr, names: &Names<'_>, diagnostics: &mut Vec<Diagnostic>) -> Option<Script> {
        let script = self.0.expr(&expr.source, expr.span, names, diagnostics)?;
        self.note(&script);
        Some(script)
    }

    /// Compiles a backtick condition (`when`, `for`, `if`): it must be true or false.
    fn condition(&self, expr: &ast::Expr, names: &Names<'_>, diagnostics: &mut Vec<Diagnostic>) -> Option<Script> {
        let script = self.0.condition(&expr.source, expr.span, names, diagnostics)?;
        self.note(&script);
        Some(script)
    }

    /// Compiles a text the customer sees with its variants in the shop's other languages;
    /// problems inside a template point at their place in the literal. A variant in a
    /// language the shop does not declare is left out (`languages.rs` reports it).
    fn template(&self, text: &Str, names: &Names<'_>, diagnostics: &mut Vec<Diagnostic>) -> Option<Texts> {
        // The variants are compiled even when the shop language's text fails, so that a
        // mistake in one of them is reported in the same run.
        let default = self.one_template(text, names, diagnostics);
        let mut variants = Vec::new();
        for (code, variant) in &text.variants {
            let lang = Lang::parse(&code.name).filter(|l| self.3.iter().skip(1).any(|d| d == l));
            if let (Some(lang), Some(template)) = (lang, self.one_template(variant, names, diagnostics)) {
                variants.push((lang, template));
            }
        }
        let mut texts = Texts::new(default?);
        for (lang, template) in variants {
            if texts.variant(lang).is_none() {
                texts.by_language.push((lang, template));
            }
        }
        Some(texts)
    }

    /// Compiles one reply template.
    fn one_template(&self, text: &Str, names: &Names<'_>, diagnostics: &mut Vec<Diagnostic>) -> Option<Template> {
        let template = self
            .0
            .template(&text.value, &|start, end| text.sub_span(start, end), names, diagnostics)?;
        for part in &template.parts {
            if let script::Part::Hole(hole) = part {
                self.note(hole);
            }
        }
        Some(template)
    }

    /// Notes a script that reads the `promotions` or the `safety` variable.
    fn note(&self, script: &Script) {
        let (mut promotions, mut safety, mut all_entities, mut intents) = (false, false, false, false);
        let (mut memory, mut session) = (false, false);
        script.ast.walk(&mut |path: &[rhai::ASTNode]| {
            if let Some(rhai::ASTNode::Expr(rhai::Expr::Variable(var, _, _))) = path.last() {
                promotions |= var.1.as_str() == "promotions";
                safety |= var.1.as_str() == "safety";
                memory |= var.1.as_str() == "memory";
                session |= var.1.as_str() == "session";
                all_entities |= var.1.as_str() == "all_entities";
                intents |= var.1.as_str() == "intents";
            }
            true
        });
        if memory {
            self.4.memory.set(true);
        }
        if all_entities {
            self.4.all_entities.set(true);
        }
        if intents {
            self.4.intents.set(true);
        }
        if session
            && ["history", "last_message", "last_reply", "session["]
                .iter()
                .any(|word| script.source.contains(word))
        {
            self.4.past.set(true);
        }
        if promotions {
            self.1.borrow_mut().push(script.span);
        }
        if safety {
            self.2.set(true);
        }
    }
}

/// Names that references are checked against.
struct Refs<'a> {
    intents: &'a BTreeSet<String>,
    entities: &'a BTreeSet<String>,
    /// The rules, for `on yes to RULE`.
    rules: &'a [ast::Rule],
    /// Every name remembered somewhere (`memory::remembered`), for `forget`.
    remembered: &'a [String],
    /// The declared cards (`on card NAME`).
    cards: &'a BTreeSet<String>,
}

/// Every reply the shop wrote out in full, without `{...}` holes: rule replies, promotion
/// texts, flow questions and replies, fallback replies, the shop's handoff and fallback
/// messages and the FAQ answers. [`Safety::vet`](crate::safety::Safety::vet) checks them once.
fn fixed_replies<'r>(
    shop: &'r Shop,
    rules: &'r [Rule],
    promotions: &'r [Promotion],
    flows: &'r [Flow],
    fallback: &'r [FallbackArm],
    kb: &'r kb::KnowledgeBase,
) -> impl Iterator<Item = &'r str> {
    let texts = rules
        .iter()
        .filter_map(|r| r.reply.as_ref())
        .chain(promotions.iter().map(|p| &p.say))
        .chain(flows.iter().flat_map(|f| &f.ops).flat_map(|op| match &op.kind {
            OpKind::Ask { prompt, reasks, .. } => std::iter::once(prompt).chain(reasks).collect(),
            OpKind::Reply(reply) => vec![reply],
            _ => Vec::new(),
        }))
        .chain(fallback.iter().filter_map(|arm| match &arm.action {
            FallbackAction::Reply(reply) | FallbackAction::Handoff { reply: Some(reply), .. } => Some(reply),
            _ => None,
        }));
    texts
        .flat_map(Texts::all)
        .filter_map(Template::as_literal)
        .chain(
            [
                &shop.handoff_message,
                &shop.fallback_message,
                &shop.flow_updated_message,
                &shop.goodbye_message,
                &shop.ack_message,
                &shop.more_message,
                &shop.confirm_again_message,
                &shop.opt_out_message,
            ]
            .into_iter()
            .flat_map(|m| m.all().map(String::as_str)),
        )
        .chain(kb.faqs.iter().map(|f| f.answer.as_str()))
}
