//! Compiling rule-file expressions and templates, with diagnostics that point into the file.
//!
//! Three checks run on every expression: rhai's own parse (syntax errors, at the column
//! inside the backticks, explained in an editor's words where the tokens show the mistake:
//! `=>` for `>=`, `=` for `==`, `order.case`); rhai's strict-variables mode against the
//! names the scope will hold (a misspelt `ordr` is a warning, since request-context maps
//! are open-ended); and the walk of the compiled AST in [`check`](super::check): unknown
//! functions, slots, fields and methods, literal names that must exist, and, for
//! conditions, assignments and values that can never be true or false.

use std::collections::BTreeSet;
use std::sync::Arc;

use rhai::{Engine, Position, Scope};

use super::check::{self, Context, Methods, Role, offset_of, token_len};
use super::template::{self, RawPart, SplitError};
use super::{HOST_FUNCTIONS, Limits, Part, Script, Template, sandboxed_engine};
use crate::diag::{Diagnostic, FileId, SourceMap, Span, closest};

/// Rhai built-ins that the parser treats as keywords and the function list does not show.
const RHAI_KEYWORD_FUNCTIONS: &[&str] = &[
    "type_of",
    "is_def_var",
    "is_def_fn",
    "is_shared",
    "Fn",
    "call",
    "curry",
    "print",
    "debug",
];

/// The names an expression may use at its place in the rules.
#[derive(Clone, Debug, Default)]
pub struct Names<'a> {
    /// Variables besides the built-in ones: context maps, and flow `set`s made so far.
    pub variables: Vec<String>,
    /// The slots of the enclosing flow; `None` outside flows, where `slots` is not checked.
    pub slots: Option<&'a BTreeSet<String>>,
    /// Where the script runs: a turn (the default) or a `proactive` item, whose scope has
    /// other variables and no request-context maps.
    pub scope: super::shape::Scope,
}

/// What every rule set's compiler shares, made once per process: the sandboxed engines
/// (plain and with strict variables) and the functions and methods they know. Building
/// them (two engines, every function's signature written out) was a sixth of a check.
struct Base {
    engine: Engine,
    strict: Engine,
    /// rhai's functions, its keyword functions, the host and regex functions.
    functions: BTreeSet<String>,
    methods: Methods,
}

impl Base {
    fn get() -> &'static Base {
        static BASE: std::sync::OnceLock<Base> = std::sync::OnceLock::new();
        BASE.get_or_init(|| {
            let engine = sandboxed_engine(Limits::default());
            let mut strict = sandboxed_engine(Limits::default());
            strict.set_strict_variables(true);
            let signatures = engine.gen_fn_signatures(true);
            let methods = Methods::from_signatures(&signatures);
            let mut functions: BTreeSet<String> = signatures
                .iter()
                .filter_map(|sig| sig.split('(').next())
                .map(|name| name.trim_start_matches("fn ").trim().to_string())
                .collect();
            functions.extend(RHAI_KEYWORD_FUNCTIONS.iter().map(|s| s.to_string()));
            functions.extend(HOST_FUNCTIONS.iter().map(|s| s.to_string()));
            functions.extend(super::matching::REGEX_FUNCTIONS.iter().map(|s| s.to_string()));
            Base {
                engine,
                strict,
                functions,
                methods,
            }
        })
    }
}

/// Compiles expressions for one rule set, knowing its sources and context names.
pub struct ScriptCompiler {
    engine: &'static Engine,
    strict: &'static Engine,
    functions: BTreeSet<String>,
    methods: &'static Methods,
    base_variables: Vec<String>,
    context: Vec<String>,
    promotions: Vec<String>,
    /// The names `remember` keeps somewhere in the rule set.
    memory: Vec<String>,
    /// Entities whose value is a map of fields (see [`Self::with_grouped_entities`]).
    grouped: Vec<String>,
    /// The rule files, for each script's `path:line:col` (see [`Script::location`]).
    files: Option<SourceMap>,
}

impl ScriptCompiler {
    /// A compiler for a rule set whose scripts may call `sources` and read the built-in
    /// variables plus `context` maps.
    pub fn new(sources: &[String], context: &[String]) -> Self {
        let base = Base::get();
        let mut functions = base.functions.clone();
        functions.extend(sources.iter().cloned());
        let mut base_variables: Vec<String> = super::BUILTIN_VARIABLES.iter().map(|s| s.to_string()).collect();
        base_variables.extend(context.iter().cloned());
        ScriptCompiler {
            engine: &base.engine,
            strict: &base.strict,
            functions,
            methods: &base.methods,
            base_variables,
            context: context.to_vec(),
            promotions: Vec::new(),
            memory: Vec::new(),
            grouped: Vec::new(),
            files: None,
        }
    }

    /// Knows the rule files, so that each compiled script carries its `path:line:col` for
    /// errors at run time.
    pub fn with_files(mut self, files: &SourceMap) -> Self {
        self.files = Some(files.clone());
        self
    }

    /// `path:line:col` of a span, when the compiler knows the files.
    fn location(&self, span: Span) -> Arc<str> {
        match &self.files {
            Some(files) if span.file < files.files().len() => {
                let file = files.file(span.file);
                let (line, col) = file.line_col(span.start);
                Arc::from(format!("{}:{line}:{col}", file.path.display()))
            }
            _ => Arc::from(""),
        }
    }

    /// Knows the entities whose value is a map of fields (regexes with named groups), so
    /// that `entities.order_card.amount` is not read as a field of text.
    pub fn with_grouped_entities(mut self, names: &[String]) -> Self {
        self.grouped = names.to_vec();
        self
    }

    /// Knows the rule set's promotions, so that `offer("名字")` is checked.
    pub fn with_promotions(mut self, names: &[String]) -> Self {
        self.promotions = names.to_vec();
        self
    }

    /// Knows the names `remember` keeps somewhere in the rule set, so that reading
    /// `memory.x` that nothing remembers is warned about.
    pub fn with_memory(mut self, names: &[String]) -> Self {
        self.memory = names.to_vec();
        self
    }

    /// Compiles a backtick expression whose value is used as it is (`set`, `call`):
    /// `source` is the text between the backticks, written at `span` of its file byte for
    /// byte. Problems go to `diagnostics`.
    pub fn expr(
        &self,
        source: &str,
        span: Span,
        names: &Names<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Script> {
        self.backticks(source, span, Role::Value, names, diagnostics)
    }

    /// Compiles a backtick condition (`when`, `for`, `if`), which must be true or false:
    /// beyond [`expr`](Self::expr)'s checks, an assignment (`user.segment = "vip"`) and a
    /// value that can never be a boolean (`intent`, `"vip"`) are errors.
    pub fn condition(
        &self,
        source: &str,
        span: Span,
        names: &Names<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Script> {
        self.backticks(source, span, Role::Condition, names, diagnostics)
    }

    fn backticks(
        &self,
        source: &str,
        span: Span,
        role: Role,
        names: &Names<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Script> {
        let at = |offset: usize| span.start + offset;
        if source.trim().is_empty() {
            diagnostics.push(
                Diagnostic::error(span, "empty expression")
                    .with_label("write a condition or value between the backticks"),
            );
            return None;
        }
        self.compile(source, role, span.file, &at, names, diagnostics)
            .map(|ast| Script {
                source: source.to_string(),
                span,
                location: self.location(span),
                ast,
            })
    }

    /// Compiles a reply template: `text` is the decoded string literal, and
    /// `span_of(start, end)` the file span of `text[start..end]` (escapes and `"""`
    /// indentation make the literal's bytes differ from the file's). Problems go to
    /// `diagnostics`.
    pub fn template(
        &self,
        text: &str,
        span_of: &dyn Fn(usize, usize) -> Span,
        names: &Names<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Template> {
        let file = span_of(0, 0).file;
        let raw = match template::split(text) {
            Ok(raw) => raw,
            Err(error) => {
                let (offset, message, help) = match error {
                    SplitError::Unclosed(i) => (
                        i,
                        "unclosed `{` in template",
                        "close the hole with `}`, or write `{{` for a literal brace",
                    ),
                    SplitError::Unopened(i) => (i, "unmatched `}` in template", "write `}}` for a literal brace"),
                    SplitError::Empty(i) => (
                        i,
                        "empty `{}` in template",
                        "put an expression inside, or write `{{}}` for literal braces",
                    ),
                };
                diagnostics.push(Diagnostic::error(span_of(offset, offset + 1), message).with_help(help));
                return None;
            }
        };
        let mut parts = Vec::with_capacity(raw.len());
        let mut ok = true;
        for part in raw {
            match part {
                RawPart::Text(t) => parts.push(Part::Text(t)),
                RawPart::Hole { source, start, end } => {
                    let at = |offset: usize| span_of(start + offset, start + offset).start;
                    match self.compile(&source, Role::Hole, file, &at, names, diagnostics) {
                        Some(ast) => parts.push(Part::Hole(Script {
                            source,
                            span: span_of(start, end),
                            location: self.location(span_of(start, end)),
                            ast,
                        })),
                        None => ok = false,
                    }
                }
            }
        }
        ok.then_some(Template { parts })
    }

    /// The sandboxed engine the compiled scripts are meant to run on.
    pub fn engine(&self) -> &Engine {
        self.engine
    }

    fn compile(
        &self,
        source: &str,
        role: Role,
        file: FileId,
        at: &dyn Fn(usize) -> usize,
        names: &Names<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<rhai::AST> {
        let expression_only = role == Role::Hole;
        let span_at = |pos: Position| {
            let offset = offset_of(source, pos);
            let len = token_len(&source[offset..]);
            Span::new(file, at(offset), at(offset + len).max(at(offset) + len.min(1)))
        };
        let span_of = |start: usize, end: usize| Span::new(file, at(start), at(end).max(at(start)));
        let mut cx = Context {
            role,
            source,
            span: &span_of,
            functions: &self.functions,
            methods: self.methods,
            context: &self.context,
            locals: &names.variables,
            slots: names.slots,
            promotions: &self.promotions,
            memory: &self.memory,
            grouped: &self.grouped,
            scope: names.scope,
        };
        let proactive = names.scope == super::shape::Scope::Proactive;
        if proactive {
            // No request context comes with a shop event.
            cx.context = &[];
        }
        let compiled = if expression_only {
            self.engine.compile_expression(source)
        } else {
            self.engine.compile(source)
        };
        let ast = match compiled {
            Ok(ast) => ast,
            Err(error) => {
                let d = check::explain_parse_error(self.engine, &cx, &error).unwrap_or_else(|| {
                    let message = lowercase_first(&error.err_type().to_string());
                    Diagnostic::error(span_at(error.position()), format!("invalid expression: {message}"))
                        .with_label("here")
                });
                diagnostics.push(d);
                return None;
            }
        };

        // A proactive item's scope, with the turn's variables too: reading one of those is
        // an error of its own (`check`), not an unknown name.
        let proactive_names: Vec<String> = super::shape::PROACTIVE_VARIABLES
            .iter()
            .chain(super::shape::VARIABLES)
            .map(|v| v.name.to_string())
            .collect();
        let builtins = if proactive {
            &proactive_names
        } else {
            &self.base_variables
        };
        let mut scope = Scope::new();
        for name in builtins.iter().chain(&names.variables) {
            scope.push(name.as_str(), ());
        }
        let strict = if expression_only {
            self.strict.compile_expression_with_scope(&scope, source)
        } else {
            self.strict.compile_with_scope(&scope, source)
        };
        if let Err(error) = strict
            && let rhai::ParseErrorType::VariableUndefined(name) = error.err_type()
        {
            let known: Vec<&str> = if proactive {
                names
                    .scope
                    .variables()
                    .iter()
                    .map(|v| v.name)
                    .chain(names.variables.iter().map(String::as_str))
                    .collect()
            } else {
                self.base_variables
                    .iter()
                    .chain(&names.variables)
                    .map(String::as_str)
                    .collect()
            };
            let mut d = Diagnostic::warning(span_at(error.position()), format!("unknown variable `{name}`"))
                .with_label("nothing in the scope has this name");
            d = match closest(name, known.iter().copied()) {
                // A shop event carries no request context: its fields are `event.*`.
                Some(near) if proactive => d.with_help(format!("did you mean `{near}`? a proactive item reads the event's fields as `event.{name}`")),
                None if proactive => d.with_help(format!("variables here: {}; the event's fields are `event.{name}`", known.join(", "))),
                Some(near) => d.with_help(format!("did you mean `{near}`? a request-context map must be declared with `context {name}` in the shop block")),
                None => d.with_help(format!("variables here: {}; declare request-context maps with `context {name}` in the shop block", known.join(", "))),
            };
            diagnostics.push(d);
        }

        let before = diagnostics.iter().filter(|d| d.is_error()).count();
        check::check_ast(&ast, &cx, diagnostics);
        let ok = diagnostics.iter().filter(|d| d.is_error()).count() == before;
        ok.then_some(ast)
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
