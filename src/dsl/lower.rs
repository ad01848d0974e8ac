//! Lowering: from the syntax trees of every file to one validated [`RuleSet`].
//!
//! Lowering collects every error and warning instead of stopping at the first, and
//! builds the rule set only when there are no errors. It resolves names (intents,
//! entities, sources, slots, styles), compiles every expression and template once, builds
//! regexes, reads word lists and data files, places dates in the shop's time zone,
//! compiles flows into small programs, and builds the trigger index.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, LocalResult, TimeZone};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use super::ast::{self, Ident, Item, StepKind, Str, TriggerKind};
use crate::diag::{Diagnostic, FileId, SourceMap, Span, closest, files};
use crate::kb;
use crate::nlu::entities::BUILTIN_ENTITIES;
use crate::nlu::{Nlu, Options as NluOptions};
use crate::ruleset::*;
use crate::safety::{self, Fold, ListAction, PiiKind, Safety, SafetyConfig, Skipped};
use crate::script::{self, DEFAULT_CONTEXT, Limits, Names, Offer, Script, ScriptCompiler, Template};

const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";
const DEFAULT_THRESHOLD: f64 = 0.6;
const DEFAULT_HANDOFF_MESSAGE: &str = "正在为您转接人工客服，请稍候。";
const DEFAULT_FALLBACK_MESSAGE: &str = "抱歉，这个问题我暂时无法回答。您可以换个说法，或输入“人工”联系人工客服。";
/// How many times an `ask` is repeated when the answer does not fill its slot and the
/// step says nothing.
const DEFAULT_RETRIES: u32 = 2;
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest `timeout` an http source may have. A lookup runs inside a customer's turn;
/// an hour-long (or `u64::MAX` ms) deadline would also overflow the clock arithmetic.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest entity word, in characters. Building the recogniser grows much faster
/// than the word: one of 15,000 characters (found by the rule-file fuzzer) kept a load
/// busy for minutes. Real entity words are a few characters.
const MAX_ENTITY_WORD_CHARS: usize = 100;

/// The items of every file, grouped by kind, each with its file order.
#[derive(Default)]
struct Items {
    shops: Vec<ast::Shop>,
    intents: Vec<ast::Intent>,
    entities: Vec<ast::Entity>,
    sources: Vec<ast::Source>,
    rules: Vec<ast::Rule>,
    promotions: Vec<ast::Promotion>,
    policies: Vec<ast::Policy>,
    flows: Vec<ast::Flow>,
    styles: Vec<ast::Style>,
    fallbacks: Vec<ast::Fallback>,
    safety: Vec<ast::Safety>,
}

/// Lowers the parsed files of a rules directory. `first_file` is where diagnostics about
/// the rule set as a whole (no `shop` block) are placed.
pub fn lower(
    root: &Path,
    files: Vec<(FileId, Vec<Item>)>,
    first_file: FileId,
    options: super::LoadOptions,
    sources: &mut SourceMap,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<RuleSet> {
    let mut items = Items::default();
    for (_, file_items) in files {
        for item in file_items {
            match item {
                Item::Shop(x) => items.shops.push(x),
                Item::Intent(x) => items.intents.push(x),
                Item::Entity(x) => items.entities.push(x),
                Item::Source(x) => items.sources.push(x),
                Item::Rule(x) => items.rules.push(x),
                Item::Promotion(x) => items.promotions.push(x),
                Item::Policy(x) => items.policies.push(x),
                Item::Flow(x) => items.flows.push(x),
                Item::Style(x) => items.styles.push(x),
                Item::Fallback(x) => items.fallbacks.push(x),
                Item::Safety(x) => items.safety.push(x),
            }
        }
    }
    let mut lowerer = Lowerer {
        root,
        options,
        sources,
        diagnostics,
        inputs: Vec::new(),
    };
    lowerer.run(items, first_file)
}

struct Lowerer<'a> {
    root: &'a Path,
    options: super::LoadOptions,
    sources: &'a mut SourceMap,
    diagnostics: &'a mut Vec<Diagnostic>,
    /// Every auxiliary file read (data, word lists) with its text, for the version hash.
    inputs: Vec<(PathBuf, String)>,
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

    fn run(&mut self, items: Items, first_file: FileId) -> Option<RuleSet> {
        let errors_before = self.diagnostics.iter().filter(|d| d.is_error()).count();

        for (kind, names) in [
            ("intent", items.intents.iter().map(|x| &x.name).collect::<Vec<_>>()),
            ("entity", items.entities.iter().map(|x| &x.name).collect()),
            ("source", items.sources.iter().map(|x| &x.name).collect()),
            ("rule", items.rules.iter().map(|x| &x.name).collect()),
            ("promotion", items.promotions.iter().map(|x| &x.name).collect()),
            ("policy", items.policies.iter().map(|x| &x.name).collect()),
            ("flow", items.flows.iter().map(|x| &x.name).collect()),
            ("style", items.styles.iter().map(|x| &x.name).collect()),
        ] {
            self.check_unique(kind, names);
        }

        let shop = self.shop(&items.shops, first_file);
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
        let compiler = Scripts(ScriptCompiler::new(&source_names, &shop.context).with_promotions(&promotion_names));
        let refs = Refs {
            intents: &intent_paths,
            entities: &entity_names,
        };

        let rules = self.rules(&items.rules, &compiler, &refs);
        let promotions = self.promotions(&items.promotions, &compiler, &refs, shop.timezone);
        let policies = self.policies(&items.policies, &refs);
        let flows = self.flows(&items.flows, &compiler, &refs);
        let styles = self.styles(&items.styles, &compiler);
        let fallback = self.fallback(&items.fallbacks, &items.styles, &compiler);
        let mut safety = self.safety(&items.safety);
        let kb = Arc::new(kb::load(self.root, self.sources, self.diagnostics));

        let errors_after = self.diagnostics.iter().filter(|d| d.is_error()).count();
        if errors_after > errors_before {
            return None;
        }

        safety.vet(fixed_replies(&shop, &rules, &promotions, &flows, &fallback, &kb));
        let triggers = build_index(&intents, &rules, &promotions, &flows);
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
        let nlu = Nlu::train(&intents, &entities, &nlu_options);
        let offers = promotions
            .iter()
            .map(|p| Offer {
                name: p.name.clone(),
                from: p.from,
                to: p.to,
                say: p.say.clone(),
            })
            .collect();
        let engine = script::rule_set_engine(Limits::default(), &data_sources, &kb, offers);

        // The version is the files' content and their paths inside the rules directory,
        // not where the directory is: identical rules on two nodes (or in a copy) are one
        // version.
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
        let version: String = hasher.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();

        Some(RuleSet {
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
        })
    }

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

    fn shop(&mut self, shops: &[ast::Shop], first_file: FileId) -> Shop {
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

    fn intents(&mut self, intents: &[ast::Intent]) -> Vec<Intent> {
        let mut out = Vec::new();
        let mut examples_seen: HashMap<String, (String, Span)> = HashMap::new();
        for intent in intents {
            let levels = intent.name.name.split('.').count();
            if levels > 3 {
                self.push(
                    Diagnostic::error(
                        intent.name.span,
                        format!(
                            "intent `{}` has {levels} levels; intent names have at most three",
                            intent.name.name
                        ),
                    )
                    .with_help("use `一级.二级.三级`, e.g. `售后.退货.七天无理由`"),
                );
            }
            if intent.examples.len() < 3 {
                let n = intent.examples.len();
                let d = Diagnostic::warning(
                    intent.name.span,
                    format!(
                        "intent `{}` has {n} example{}; the classifier needs at least 3",
                        intent.name.name,
                        if n == 1 { "" } else { "s" }
                    ),
                )
                .with_label("too few examples to learn from")
                .with_help("add examples written the way customers type them");
                self.push(d);
            }
            for example in &intent.examples {
                let key = example.value.trim().to_lowercase();
                if key.is_empty() {
                    self.push(Diagnostic::error(example.span, "empty example"));
                    continue;
                }
                match examples_seen.get(&key) {
                    Some((other, first)) if *other != intent.name.name => {
                        let d = Diagnostic::warning(
                            example.span,
                            format!(
                                "example `{}` is given for intents `{other}` and `{}`",
                                example.value, intent.name.name
                            ),
                        )
                        .with_label("also an example of another intent")
                        .with_secondary(*first, format!("example of `{other}` here"))
                        .with_help("an example should teach one intent; remove it from one of them");
                        self.push(d);
                    }
                    Some(_) => {}
                    None => {
                        examples_seen.insert(key, (intent.name.name.clone(), example.span));
                    }
                }
            }
            self.check_keywords(&intent.keywords);
            out.push(Intent {
                name: intent.name.name.clone(),
                examples: intent.examples.iter().map(|s| s.value.clone()).collect(),
                keywords: intent.keywords.iter().map(|s| s.value.clone()).collect(),
                span: intent.name.span,
            });
        }
        out
    }

    fn check_keywords(&mut self, keywords: &[Str]) {
        for k in keywords {
            if k.value.trim().is_empty() {
                self.push(
                    Diagnostic::error(k.span, "empty keyword").with_label("an empty keyword would match every message"),
                );
            }
        }
    }

    fn entities(&mut self, entities: &[ast::Entity]) -> Vec<Entity> {
        let mut out = Vec::new();
        for entity in entities {
            let matcher = match &entity.kind {
                ast::EntityKind::Regex { pattern, span, flags } => {
                    let mut builder = regex::RegexBuilder::new(pattern);
                    let mut flags_ok = true;
                    for (i, flag) in flags.name.char_indices() {
                        match flag {
                            'i' => builder.case_insensitive(true),
                            'm' => builder.multi_line(true),
                            's' => builder.dot_matches_new_line(true),
                            'x' => builder.ignore_whitespace(true),
                            other => {
                                let at = flags.span.start + i;
                                self.push(
                                    Diagnostic::error(
                                        Span::new(flags.span.file, at, at + 1),
                                        format!("unknown regex flag `{other}`"),
                                    )
                                    .with_help("the flags are `i` (ignore case), `m`, `s` and `x`"),
                                );
                                flags_ok = false;
                                continue;
                            }
                        };
                    }
                    match builder.build() {
                        Ok(re) if flags_ok => Some(EntityMatcher::Regex(re)),
                        Ok(_) => None,
                        Err(e) => {
                            self.regex_error(pattern, *span, &e);
                            None
                        }
                    }
                }
                ast::EntityKind::Lexicon(entries) => {
                    if entries.is_empty() {
                        self.push(Diagnostic::error(
                            entity.name.span,
                            format!("entity `{}` has an empty word list", entity.name.name),
                        ));
                        None
                    } else {
                        let mut pairs = Vec::new();
                        for (surface, canonical) in entries {
                            if surface.value.trim().is_empty() {
                                self.push(Diagnostic::error(surface.span, "empty entity word"));
                                continue;
                            }
                            if surface.value.chars().count() > MAX_ENTITY_WORD_CHARS {
                                self.push(
                                    Diagnostic::error(
                                        surface.span,
                                        format!("entity word is longer than {MAX_ENTITY_WORD_CHARS} characters"),
                                    )
                                    .with_help("an entity word is a short name as customers write it: `\"藏青\" => \"藏青色\"`"),
                                );
                                continue;
                            }
                            let canonical = canonical.as_ref().unwrap_or(surface);
                            pairs.push((surface.value.clone(), canonical.value.clone()));
                        }
                        Some(EntityMatcher::Lexicon(pairs))
                    }
                }
            };
            if let Some(matcher) = matcher {
                out.push(Entity {
                    name: entity.name.name.clone(),
                    matcher,
                });
            }
        }
        out
    }

    /// Reports a regex error at its position inside the pattern when the parser can say
    /// where, else at the whole pattern.
    fn regex_error(&mut self, pattern: &str, span: Span, error: &regex::Error) {
        let parsed = regex_syntax::ast::parse::Parser::new().parse(pattern);
        let d = match parsed {
            Err(e) => {
                let s = e.span();
                let start = span.start + s.start.offset;
                let end = (span.start + s.end.offset).max(start + 1).min(span.end.max(start + 1));
                Diagnostic::error(Span::new(span.file, start, end), format!("invalid regex: {}", e.kind()))
                    .with_label("here")
            }
            Ok(_) => {
                let message = error.to_string();
                let last = message
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or(&message)
                    .trim()
                    .trim_start_matches("error: ");
                Diagnostic::error(span, format!("invalid regex: {last}"))
            }
        };
        self.push(d);
    }

    /// Reads a file a rule file names (a data source or a word list): inside the rules
    /// directory, a regular file, size-limited ([`files`]). A refusal is an error at the
    /// path as written, and never shows the refused file.
    fn read_aux(&mut self, path: &Str) -> Option<(PathBuf, String)> {
        let read = files::resolve(self.root, &path.value).and_then(|full| {
            let text = files::read(self.root, &full)?;
            Ok((full, text))
        });
        match read {
            Ok((full, text)) => {
                self.inputs.push((full.clone(), text.clone()));
                Some((full, text))
            }
            Err(e) => {
                self.push(
                    Diagnostic::error(
                        path.span,
                        format!("cannot read `{}`: {e}", self.root.join(&path.value).display()),
                    )
                    .with_label("file named here")
                    .with_help(format!(
                        "paths are relative to the rules directory and name a regular file inside it of at most {} MiB",
                        files::MAX_FILE_BYTES >> 20
                    )),
                );
                None
            }
        }
    }

    fn data_sources(&mut self, sources: &[ast::Source]) -> Vec<Source> {
        let mut out = Vec::new();
        for source in sources {
            let kind = match &source.kind {
                ast::SourceKind::File { path, key } => {
                    let key_name = key.as_ref().map_or("id".to_string(), |k| k.value.clone());
                    let Some((full, text)) = self.read_aux(path) else {
                        continue;
                    };
                    match self.records(&full, text, &key_name, key.as_ref().map_or(path.span, |k| k.span)) {
                        Some(records) => SourceKind::File {
                            path: full,
                            key: key_name,
                            records: Arc::new(records),
                        },
                        None => continue,
                    }
                }
                ast::SourceKind::Http { url, timeout } => {
                    if !(url.value.starts_with("http://") || url.value.starts_with("https://")) {
                        self.push(Diagnostic::error(
                            url.span,
                            "an http source needs an `http://` or `https://` URL",
                        ));
                    } else if !url.value.contains("{key}") {
                        self.push(Diagnostic::warning(
                            url.span,
                            "the URL has no `{key}`; every lookup fetches the same resource",
                        ));
                    }
                    let timeout = match timeout {
                        Some(t) if t.millis == 0 => {
                            self.push(Diagnostic::error(t.span, "timeout must be longer than zero"));
                            DEFAULT_HTTP_TIMEOUT
                        }
                        Some(t) if Duration::from_millis(t.millis) > MAX_HTTP_TIMEOUT => {
                            self.push(Diagnostic::error(
                                t.span,
                                format!("timeout must be at most {}s", MAX_HTTP_TIMEOUT.as_secs()),
                            ));
                            DEFAULT_HTTP_TIMEOUT
                        }
                        Some(t) => Duration::from_millis(t.millis),
                        None => DEFAULT_HTTP_TIMEOUT,
                    };
                    SourceKind::Http {
                        url: url.value.clone(),
                        timeout,
                    }
                }
            };
            out.push(Source {
                name: source.name.name.clone(),
                kind,
            });
        }
        out
    }

    /// Reads a data file's records, indexed by `key`. YAML and JSON errors are reported
    /// at their position in the data file.
    fn records(
        &mut self,
        full: &Path,
        text: String,
        key: &str,
        key_span: Span,
    ) -> Option<HashMap<String, rhai::Dynamic>> {
        let is_json = full.extension().is_some_and(|e| e == "json");
        let parsed: Result<serde_json::Value, (usize, usize, String)> = if is_json {
            serde_json::from_str(&text).map_err(|e| (e.line(), e.column(), e.to_string()))
        } else {
            serde_yaml::from_str(&text).map_err(|e| {
                let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
                (line, col, e.to_string())
            })
        };
        let file = self.sources.add(full.to_path_buf(), text);
        let value = match parsed {
            Ok(v) => v,
            Err((line, col, message)) => {
                let at = self.sources.file(file).offset_of(line, col);
                let message = message.split(" at line ").next().unwrap_or(&message).to_string();
                self.push(Diagnostic::error(
                    self.sources.char_span(file, at),
                    format!("invalid {}: {message}", if is_json { "JSON" } else { "YAML" }),
                ));
                return None;
            }
        };
        let list: Vec<serde_json::Value> = match value {
            serde_json::Value::Array(list) => list,
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(k, mut v)| {
                    if let Some(obj) = v.as_object_mut() {
                        obj.entry(key.to_string()).or_insert(serde_json::Value::String(k));
                    }
                    v
                })
                .collect(),
            _ => {
                self.push(Diagnostic::error(
                    self.sources.char_span(file, 0),
                    "a data file must hold a list of records (or a map of them)",
                ));
                return None;
            }
        };
        let mut records = HashMap::new();
        for (n, record) in list.into_iter().enumerate() {
            let Some(id) = record.get(key).and_then(|k| match k {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }) else {
                self.push(
                    Diagnostic::error(
                        key_span,
                        format!("record {} in `{}` has no `{key}` field", n + 1, full.display()),
                    )
                    .with_help(format!("every record needs a string or number `{key}` to be found by")),
                );
                continue;
            };
            match rhai::serde::to_dynamic(&record) {
                Ok(value) => {
                    records.insert(id, value);
                }
                Err(e) => {
                    self.push(Diagnostic::error(
                        key_span,
                        format!("record `{id}` cannot be used in scripts: {e}"),
                    ));
                }
            }
        }
        Some(records)
    }

    fn trigger(&mut self, trigger: &ast::Trigger, refs: &Refs<'_>) -> Option<Trigger> {
        match &trigger.kind {
            TriggerKind::Keywords(words) => {
                self.check_keywords(words);
                Some(Trigger::Keywords(words.iter().map(|w| w.value.clone()).collect()))
            }
            TriggerKind::Entity(name) => {
                if !refs.entities.contains(&name.name) {
                    self.unknown(name, "entity", refs.entities.iter().map(String::as_str));
                    return None;
                }
                Some(Trigger::Entity(name.name.clone()))
            }
            TriggerKind::Intents(patterns) => {
                let mut out = Vec::new();
                for pattern in patterns {
                    out.push(self.intent_pattern(pattern, refs)?);
                }
                Some(Trigger::Intents(out))
            }
        }
    }

    fn intent_pattern(&mut self, pattern: &Ident, refs: &Refs<'_>) -> Option<IntentPattern> {
        let parsed = IntentPattern::parse(&pattern.name);
        if parsed.path.is_empty() || refs.intents.contains(&parsed.path) {
            return Some(parsed);
        }
        self.unknown(pattern, "intent", refs.intents.iter().map(String::as_str));
        None
    }

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

    fn rules(&mut self, rules: &[ast::Rule], compiler: &Scripts, refs: &Refs<'_>) -> Vec<Rule> {
        let names = Names::default();
        let mut out = Vec::new();
        for rule in rules {
            if rule.triggers.is_empty() {
                self.push(
                    Diagnostic::error(rule.name.span, format!("rule `{}` has no `on` trigger", rule.name.name))
                        .with_label("nothing can make this rule answer")
                        .with_help("add `on 意图` or `on keywords \"词\"`"),
                );
            }
            if rule.reply.is_none() && rule.handoff.is_none() {
                self.push(
                    Diagnostic::error(
                        rule.name.span,
                        format!("rule `{}` has neither `reply` nor `handoff`", rule.name.name),
                    )
                    .with_label("this rule would answer with nothing"),
                );
            }
            let triggers: Vec<Trigger> = rule.triggers.iter().filter_map(|t| self.trigger(t, refs)).collect();
            let when = rule
                .when
                .as_ref()
                .and_then(|w| compiler.expr(w, &names, self.diagnostics));
            let reply = rule
                .reply
                .as_ref()
                .and_then(|r| compiler.template(r, &names, self.diagnostics));
            out.push(Rule {
                name: rule.name.name.clone(),
                triggers,
                when,
                reply,
                handoff: rule
                    .handoff
                    .as_ref()
                    .map(|h| h.reason.as_ref().map(|r| r.value.clone())),
                priority: rule.priority.map_or(0, |p| p.value),
                span: rule.name.span,
                location: self.location(rule.name.span),
            });
        }
        // A stable sort keeps file order among equal priorities.
        out.sort_by_key(|r| std::cmp::Reverse(r.priority));
        self.check_shadowed(&out);
        out
    }

    /// Warns about a rule that can never answer because an earlier rule (in answer order)
    /// with no condition fires on everything that fires it.
    fn check_shadowed(&mut self, rules: &[Rule]) {
        for (i, later) in rules.iter().enumerate() {
            if later.triggers.is_empty() {
                continue;
            }
            let Some(earlier) = rules[..i]
                .iter()
                .find(|e| e.when.is_none() && covers(&e.triggers, &later.triggers))
            else {
                continue;
            };
            let d = Diagnostic::warning(later.span, format!("rule `{}` can never answer", later.name))
                .with_label("shadowed")
                .with_secondary(
                    earlier.span,
                    format!(
                        "`{}` has the same trigger and no `when`, and answers first",
                        earlier.name
                    ),
                )
                .with_help("give this rule a higher `priority`, or give the other one a `when`");
            self.push(d);
        }
    }

    fn datetime(&mut self, lit: &ast::DateTimeLit, tz: Tz, end_of_day: bool) -> Option<DateTime<Tz>> {
        let (y, m, d) = lit.date;
        let Some(date) = chrono::NaiveDate::from_ymd_opt(y, m, d) else {
            self.push(Diagnostic::error(
                lit.span,
                format!("invalid date {y:04}-{m:02}-{d:02}"),
            ));
            return None;
        };
        // A bare date covers the whole day; a `to` time without seconds covers its whole
        // minute, so `to 2026-11-11 23:59` still includes 23:59:30.
        let (h, min, s) = match lit.time {
            None if end_of_day => (23, 59, 59),
            None => (0, 0, 0),
            Some((h, m, s)) => (h, m, s.unwrap_or(if end_of_day { 59 } else { 0 })),
        };
        let Some(time) = chrono::NaiveTime::from_hms_opt(h, min, s) else {
            self.push(Diagnostic::error(lit.span, format!("invalid time {h:02}:{min:02}")));
            return None;
        };
        match tz.from_local_datetime(&date.and_time(time)) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t),
            LocalResult::None => {
                self.push(Diagnostic::error(
                    lit.span,
                    format!("this time does not exist in {} (clocks skip it)", tz.name()),
                ));
                None
            }
        }
    }

    fn promotions(
        &mut self,
        promotions: &[ast::Promotion],
        compiler: &Scripts,
        refs: &Refs<'_>,
        tz: Tz,
    ) -> Vec<Promotion> {
        let names = Names::default();
        let mut out: Vec<Promotion> = Vec::new();
        let mut keywords: Vec<BTreeSet<String>> = Vec::new();
        for promo in promotions {
            let window = match &promo.window {
                None => {
                    self.push(
                        Diagnostic::error(
                            promo.name.span,
                            format!("promotion `{}` has no `from ... to ...` window", promo.name.name),
                        )
                        .with_help("add e.g. `from 2026-11-01 00:00 to 2026-11-11 23:59`"),
                    );
                    None
                }
                Some((from, to)) => {
                    let f = self.datetime(from, tz, false);
                    let t = self.datetime(to, tz, true);
                    match (f, t) {
                        (Some(f), Some(t)) if t < f => {
                            self.push(
                                Diagnostic::error(to.span, "the promotion ends before it starts")
                                    .with_secondary(from.span, "it starts here"),
                            );
                            None
                        }
                        (Some(f), Some(t)) => Some((f, t)),
                        _ => None,
                    }
                }
            };
            if promo.say.is_none() {
                self.push(
                    Diagnostic::error(promo.name.span, format!("promotion `{}` has no `say`", promo.name.name))
                        .with_label("nothing to tell the customer"),
                );
            }
            let triggers: Vec<Trigger> = promo.triggers.iter().filter_map(|t| self.trigger(t, refs)).collect();
            let audience = promo
                .audience
                .as_ref()
                .and_then(|a| compiler.expr(a, &names, self.diagnostics));
            let say = promo
                .say
                .as_ref()
                .and_then(|s| compiler.template(s, &names, self.diagnostics));
            let (Some((from, to)), Some(say)) = (window, say) else {
                continue;
            };
            let words: BTreeSet<String> = triggers
                .iter()
                .filter_map(|t| if let Trigger::Keywords(k) = t { Some(k) } else { None })
                .flatten()
                .map(|k| k.to_lowercase())
                .collect();
            for (other, other_words) in out.iter().zip(&keywords) {
                let shared: Vec<&String> = words.intersection(other_words).collect();
                if !shared.is_empty() && from <= other.to && other.from <= to {
                    let list = shared.iter().map(|w| format!("\"{w}\"")).collect::<Vec<_>>().join(", ");
                    let d = Diagnostic::warning(
                        promo.name.span,
                        format!(
                            "promotions `{}` and `{}` overlap in time and share keywords {list}",
                            other.name, promo.name.name
                        ),
                    )
                    .with_label("overlapping window")
                    .with_secondary(other.span, "this promotion is on at the same time")
                    .with_help("only the first by priority will answer; shorten a window or change the keywords");
                    self.push(d);
                }
            }
            keywords.push(words);
            out.push(Promotion {
                name: promo.name.name.clone(),
                from,
                to,
                audience,
                say,
                triggers,
                priority: promo.priority.map_or(0, |p| p.value),
                span: promo.name.span,
                location: self.location(promo.name.span),
            });
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.priority));
        out
    }

    fn policies(&mut self, policies: &[ast::Policy], refs: &Refs<'_>) -> Vec<Policy> {
        let mut out = Vec::new();
        for policy in policies {
            if policy.applies.is_empty() {
                self.push(
                    Diagnostic::error(
                        policy.name.span,
                        format!("policy `{}` has no `applies`", policy.name.name),
                    )
                    .with_help("say which intents it is about, e.g. `applies 售后.*`"),
                );
            }
            if policy.text.is_none() {
                self.push(Diagnostic::error(
                    policy.name.span,
                    format!("policy `{}` has no `text`", policy.name.name),
                ));
            }
            let applies: Vec<IntentPattern> = policy
                .applies
                .iter()
                .filter_map(|p| self.intent_pattern(p, refs))
                .collect();
            if let Some(text) = &policy.text {
                out.push(Policy {
                    name: policy.name.name.clone(),
                    applies,
                    text: text.value.clone(),
                });
            }
        }
        out
    }

    fn flows(&mut self, flows: &[ast::Flow], compiler: &Scripts, refs: &Refs<'_>) -> Vec<Flow> {
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
            };
            let start_names = Names::default();

            let mut starts = Vec::new();
            for start in &flow.starts {
                let trigger = self.trigger(&start.trigger, refs);
                let when = start
                    .when
                    .as_ref()
                    .and_then(|w| compiler.expr(w, &start_names, self.diagnostics));
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
                        if let Some(near) = closest(&target.name, slots.iter().map(String::as_str)) {
                            d = d.with_help(format!("did you mean `{near}`?"));
                        }
                        self.push(d);
                    }
                }
            }
            if resolved {
                out.push(Flow {
                    name: flow.name.name.clone(),
                    starts,
                    ops: program.ops,
                    slots,
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
                    retry,
                    otherwise,
                } => {
                    let entity = match entity {
                        Some(e) if !refs.entities.contains(&e.name) => {
                            self.unknown(e, "entity", refs.entities.iter().map(String::as_str));
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
                        .unwrap_or_else(|| Template::literal(""));
                    let index = program.ops.len();
                    program.ops.push(Op {
                        span,
                        line: self.line(span),
                        kind: OpKind::Ask {
                            slot: slot.name.clone(),
                            entity,
                            prompt,
                            retries,
                            exhausted: None,
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
                    let cond = compiler.expr(cond, names, self.diagnostics);
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
                        kind: OpKind::Handoff(h.reason.as_ref().map(|r| r.value.clone())),
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

    fn styles(&mut self, styles: &[ast::Style], compiler: &Scripts) -> Vec<Style> {
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
                .and_then(|w| compiler.expr(w, &names, self.diagnostics));
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

    fn fallback(&mut self, fallbacks: &[ast::Fallback], styles: &[ast::Style], compiler: &Scripts) -> Vec<FallbackArm> {
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
                Some(w) => match compiler.expr(w, &names, self.diagnostics) {
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

    /// A list's words; `None` when its file could not be read (already reported).
    fn words(&mut self, source: &ast::WordSource) -> Option<Vec<String>> {
        match source {
            ast::WordSource::Inline(words) => {
                self.check_keywords(words);
                Some(
                    words
                        .iter()
                        .map(|w| w.value.trim().to_string())
                        .filter(|w| !w.is_empty())
                        .collect(),
                )
            }
            ast::WordSource::File(path) => {
                let (_, text) = self.read_aux(path)?;
                Some(
                    text.lines()
                        .map(|l| l.split('#').next().unwrap_or("").trim())
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            }
        }
    }

    /// Merges the `safety` blocks into one configuration and compiles it. Problems that
    /// only show once words are normalized (a word of nothing but symbols) point at the
    /// word, in its list file when it comes from one.
    fn safety(&mut self, blocks: &[ast::Safety]) -> Safety {
        let mut config = SafetyConfig::default();
        // Where each list's words and each allowed phrase come from, for diagnostics.
        let mut list_sources: Vec<(&ast::WordList, Span)> = Vec::new();
        let mut allow_sources: Vec<(&ast::WordSource, Span)> = Vec::new();
        let mut default_reply: Option<(String, Span)> = None;
        let mut categories: HashMap<String, Span> = HashMap::new();
        let mut lists: Vec<(&ast::WordList, bool)> = Vec::new();
        for entry in blocks.iter().flat_map(|b| &b.entries) {
            match entry {
                ast::SafetyEntry::Block(list) => lists.push((list, true)),
                ast::SafetyEntry::Mask(list) => lists.push((list, false)),
                ast::SafetyEntry::Allow(source) => {
                    let words = self.words(source).unwrap_or_default();
                    let span = match source {
                        ast::WordSource::File(path) => path.span,
                        ast::WordSource::Inline(words) => words.first().map_or(Span::default(), |w| w.span),
                    };
                    allow_sources.extend(words.iter().map(|_| (source, span)));
                    config.allow.extend(words);
                }
                ast::SafetyEntry::Pii(kinds) => {
                    for kind in kinds {
                        match kind.name.parse::<PiiKind>() {
                            Ok(k) if !config.pii.contains(&k) => config.pii.push(k),
                            Ok(_) => {}
                            Err(()) => {
                                let all = PiiKind::ALL.map(PiiKind::name);
                                self.unknown(kind, "pii kind", all.iter().copied());
                                if let Some(last) = self.diagnostics.last_mut() {
                                    last.help = Some(format!("the kinds are {}", all.join(", ")));
                                }
                            }
                        }
                    }
                }
                ast::SafetyEntry::Reply(text) => match &default_reply {
                    Some((_, first)) => {
                        let first = *first;
                        self.push(
                            Diagnostic::error(text.span, "`default_reply` is given more than once")
                                .with_secondary(first, "first one here"),
                        );
                    }
                    None => default_reply = Some((text.value.clone(), text.span)),
                },
            }
        }
        let default_reply = default_reply.map_or_else(|| safety::DEFAULT_BLOCK_REPLY.to_string(), |(r, _)| r);
        for (list, block) in lists {
            if let Some(first) = categories.get(&list.category.name) {
                let first = *first;
                self.push(
                    Diagnostic::error(
                        list.category.span,
                        format!("duplicate safety category `{}`", list.category.name),
                    )
                    .with_secondary(first, "first defined here"),
                );
                continue;
            }
            categories.insert(list.category.name.clone(), list.category.span);
            let mut without = Vec::new();
            for fold in &list.without {
                match fold.name.parse::<Fold>() {
                    Ok(f) => without.push(f),
                    Err(()) => {
                        let all = Fold::ALL.map(Fold::name);
                        self.unknown(fold, "fold", all.iter().copied());
                        if let Some(last) = self.diagnostics.last_mut() {
                            last.help = Some(format!("the folds are {}", all.join(", ")));
                        }
                    }
                }
            }
            let action = if block {
                ListAction::Block {
                    reply: list
                        .reply
                        .as_ref()
                        .map_or_else(|| default_reply.clone(), |r| r.value.clone()),
                }
            } else {
                if let Some(reply) = &list.reply {
                    self.push(
                        Diagnostic::error(reply.span, "a `mask` list has no reply")
                            .with_label("masked words are replaced and the message goes on")
                            .with_help("use `block` to answer with a reply instead"),
                    );
                }
                ListAction::Mask
            };
            let words = self.words(&list.words);
            // An unreadable file is already an error; an empty one is worth a warning.
            let unreadable = words.is_none();
            let words = words.unwrap_or_default();
            if words.is_empty() && !unreadable {
                self.push(Diagnostic::warning(
                    list.category.span,
                    format!("safety list `{}` has no words", list.category.name),
                ));
            }
            list_sources.push((list, list.category.span));
            config.lists.push(safety::WordList {
                category: list.category.name.clone(),
                action,
                words,
                without,
            });
        }
        let whole = blocks.first().map_or(Span::default(), |b| b.span);
        match Safety::build(config) {
            Ok(compiled) => {
                self.skipped_words(compiled.skipped(), &list_sources, &allow_sources);
                compiled
            }
            Err(errors) => {
                for error in errors {
                    self.push(Diagnostic::error(whole, error.to_string()));
                }
                Safety::default()
            }
        }
    }

    /// Diagnostics for list words and allowed phrases that normalize to nothing. Written
    /// in a rule file, such a word is an error; a line of a list file is a warning and is
    /// left out: an imported list may hold thousands of them, so only the first few of
    /// each file are shown one by one, then their number.
    fn skipped_words(
        &mut self,
        skipped: &[Skipped],
        list_sources: &[(&ast::WordList, Span)],
        allow_sources: &[(&ast::WordSource, Span)],
    ) {
        const SHOWN_PER_FILE: usize = 10;
        let mut shown: HashMap<usize, usize> = HashMap::new();
        let mut hidden: Vec<(usize, usize)> = Vec::new();
        for entry in skipped {
            let d = match entry {
                Skipped::Word { list, text, .. } => {
                    let (source, category) = list_sources[*list];
                    let from_file = matches!(source.words, ast::WordSource::File(_));
                    if from_file {
                        let count = shown.entry(*list).or_default();
                        if *count == SHOWN_PER_FILE {
                            match hidden.iter_mut().find(|(l, _)| l == list) {
                                Some((_, n)) => *n += 1,
                                None => hidden.push((*list, 1)),
                            }
                            continue;
                        }
                        *count += 1;
                    }
                    let at = self.word_span(&source.words, text).unwrap_or(category);
                    let d = if from_file {
                        Diagnostic::warning(at, entry.to_string())
                            .with_label("only symbols or blanks, which matching skips: left out")
                    } else {
                        Diagnostic::error(at, entry.to_string())
                            .with_label("only symbols or blanks, which matching skips")
                    };
                    d.with_secondary(category, "in this list")
                        .with_help("remove it, or add `without gaps` to the list to match symbols as written")
                }
                Skipped::Allow { index, text } => {
                    let (source, span) = allow_sources[*index];
                    let at = self.word_span(source, text).unwrap_or(span);
                    Diagnostic::error(at, entry.to_string())
                        .with_label("only symbols or blanks, which matching skips")
                        .with_help("remove it")
                }
            };
            self.push(d);
        }
        for (list, n) in hidden {
            let (source, category) = list_sources[list];
            self.push(
                Diagnostic::warning(
                    category,
                    format!(
                        "{n} more words of safety list `{}` are empty once normalized",
                        source.category.name
                    ),
                )
                .with_label("left out, like the ones shown above"),
            );
        }
    }

    /// Where a word of a list is written: its string, or its line in the list file (the
    /// file is added to the source map so the diagnostic can show it).
    fn word_span(&mut self, source: &ast::WordSource, word: &str) -> Option<Span> {
        match source {
            ast::WordSource::Inline(words) => words.iter().find(|w| w.value.trim() == word).map(|w| w.span),
            ast::WordSource::File(path) => {
                let full = self.root.join(&path.value);
                let text = self.inputs.iter().find(|(p, _)| *p == full)?.1.clone();
                let mut offset = 0;
                let mut found = None;
                for line in text.split_inclusive('\n') {
                    let content = line.split('#').next().unwrap_or("");
                    if content.trim() == word {
                        let start = offset + (content.len() - content.trim_start().len());
                        found = Some(start..start + word.len());
                        break;
                    }
                    offset += line.len();
                }
                let range = found?;
                let file = match self.sources.find(&full) {
                    Some(id) => id,
                    None => self.sources.add(full, text),
                };
                Some(Span::new(file, range.start, range.end))
            }
        }
    }
}

/// The script compiler fed from the syntax tree: it hands `script` each expression's and
/// template's text with its place in the file, so that `script` needs no syntax tree.
struct Scripts(ScriptCompiler);

impl Scripts {
    /// Compiles a backtick expression.
    fn expr(&self, expr: &ast::Expr, names: &Names<'_>, diagnostics: &mut Vec<Diagnostic>) -> Option<Script> {
        self.0.expr(&expr.source, expr.span, names, diagnostics)
    }

    /// Compiles a reply template; problems inside it point at their place in the literal.
    fn template(&self, text: &Str, names: &Names<'_>, diagnostics: &mut Vec<Diagnostic>) -> Option<Template> {
        self.0
            .template(&text.value, &|start, end| text.sub_span(start, end), names, diagnostics)
    }
}

/// Names that references are checked against.
struct Refs<'a> {
    intents: &'a BTreeSet<String>,
    entities: &'a BTreeSet<String>,
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

/// `售后.退货.七天` → `售后`, `售后.退货`, `售后.退货.七天`.
fn ancestors_and_self(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut prefix = String::new();
    for level in path.split('.') {
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(level);
        out.push(prefix.clone());
    }
    out
}

/// Whether every trigger in `later` also fires `earlier`.
fn covers(earlier: &[Trigger], later: &[Trigger]) -> bool {
    let keywords: BTreeSet<String> = earlier
        .iter()
        .filter_map(|t| if let Trigger::Keywords(k) = t { Some(k) } else { None })
        .flatten()
        .map(|k| k.to_lowercase())
        .collect();
    let patterns: BTreeSet<&IntentPattern> = earlier
        .iter()
        .filter_map(|t| if let Trigger::Intents(p) = t { Some(p) } else { None })
        .flatten()
        .collect();
    later.iter().all(|t| match t {
        Trigger::Keywords(k) => k.iter().all(|w| keywords.contains(&w.to_lowercase())),
        Trigger::Intents(p) => p.iter().all(|x| patterns.contains(x)),
        Trigger::Entity(_) => earlier.contains(t),
    })
}

fn build_index(intents: &[Intent], rules: &[Rule], promotions: &[Promotion], flows: &[Flow]) -> TriggerIndex {
    let mut keywords = Vec::new();
    let mut by_intent = Vec::new();
    let mut by_entity = Vec::new();
    let mut add = |trigger: &Trigger, owner: Owner| match trigger {
        Trigger::Keywords(words) => keywords.extend(words.iter().map(|w| (w.clone(), owner))),
        Trigger::Intents(patterns) => by_intent.extend(patterns.iter().map(|p| (p.clone(), owner))),
        Trigger::Entity(e) => by_entity.push((e.clone(), owner)),
    };
    for (i, rule) in rules.iter().enumerate() {
        rule.triggers.iter().for_each(|t| add(t, Owner::Rule(i)));
    }
    for (i, promo) in promotions.iter().enumerate() {
        promo.triggers.iter().for_each(|t| add(t, Owner::Promotion(i)));
    }
    for (f, flow) in flows.iter().enumerate() {
        for (s, start) in flow.starts.iter().enumerate() {
            add(&start.trigger, Owner::FlowStart { flow: f, start: s });
        }
    }
    for (i, intent) in intents.iter().enumerate() {
        keywords.extend(intent.keywords.iter().map(|k| (k.clone(), Owner::Intent(i))));
    }
    let names: Vec<String> = intents.iter().map(|i| i.name.clone()).collect();
    TriggerIndex::build(keywords, by_intent, by_entity, &names)
}

/// Every reply the shop wrote out in full, without `{...}` holes: rule replies, promotion
/// texts, flow questions and replies, fallback replies, the shop's handoff and fallback
/// messages and the FAQ answers. [`Safety::vet`] checks them once.
fn fixed_replies<'r>(
    shop: &'r Shop,
    rules: &'r [Rule],
    promotions: &'r [Promotion],
    flows: &'r [Flow],
    fallback: &'r [FallbackArm],
    kb: &'r kb::KnowledgeBase,
) -> impl Iterator<Item = &'r str> {
    let templates = rules
        .iter()
        .filter_map(|r| r.reply.as_ref())
        .chain(promotions.iter().map(|p| &p.say))
        .chain(flows.iter().flat_map(|f| &f.ops).filter_map(|op| match &op.kind {
            OpKind::Ask { prompt, .. } => Some(prompt),
            OpKind::Reply(reply) => Some(reply),
            _ => None,
        }))
        .chain(fallback.iter().filter_map(|arm| match &arm.action {
            FallbackAction::Reply(reply) => Some(reply),
            _ => None,
        }));
    templates
        .filter_map(Template::as_literal)
        .chain([shop.handoff_message.as_str(), shop.fallback_message.as_str()])
        .chain(kb.faqs.iter().map(|f| f.answer.as_str()))
}
