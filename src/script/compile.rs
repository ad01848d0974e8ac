//! Compiling rule-file expressions and templates, with diagnostics that point into the file.
//!
//! Three checks run on every expression: rhai's own parse (syntax errors, at the column
//! inside the backticks); rhai's strict-variables mode against the names the scope will
//! hold (a misspelt `ordr` is a warning, since request-context maps are open-ended); and a
//! walk of the compiled AST for calls to functions that do not exist (a misspelt source
//! such as `ordrs(id)`), `slots.x` where no `ask x` exists in the flow, and literal names
//! that must exist: the strategy of `recommend("new_arrivals", 3)` and the promotion of
//! `offer("回归礼")`.

use std::collections::BTreeSet;

use rhai::{ASTNode, Engine, Expr as RhaiExpr, Position, Scope, Stmt};

use super::template::{self, RawPart, SplitError};
use super::{HOST_FUNCTIONS, Limits, Part, Script, Template, sandboxed_engine};
use crate::diag::{Diagnostic, FileId, Span, closest};

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
}

/// Compiles expressions for one rule set, knowing its sources and context names.
pub struct ScriptCompiler {
    engine: Engine,
    strict: Engine,
    functions: BTreeSet<String>,
    base_variables: Vec<String>,
    promotions: Vec<String>,
}

impl ScriptCompiler {
    /// A compiler for a rule set whose scripts may call `sources` and read the built-in
    /// variables plus `context` maps.
    pub fn new(sources: &[String], context: &[String]) -> Self {
        let engine = sandboxed_engine(Limits::default());
        let mut strict = sandboxed_engine(Limits::default());
        strict.set_strict_variables(true);
        let mut functions: BTreeSet<String> = engine
            .gen_fn_signatures(true)
            .iter()
            .filter_map(|sig| sig.split('(').next())
            .map(|name| name.trim_start_matches("fn ").trim().to_string())
            .collect();
        functions.extend(RHAI_KEYWORD_FUNCTIONS.iter().map(|s| s.to_string()));
        functions.extend(HOST_FUNCTIONS.iter().map(|s| s.to_string()));
        functions.extend(sources.iter().cloned());
        let mut base_variables: Vec<String> = super::BUILTIN_VARIABLES.iter().map(|s| s.to_string()).collect();
        base_variables.extend(context.iter().cloned());
        ScriptCompiler {
            engine,
            strict,
            functions,
            base_variables,
            promotions: Vec::new(),
        }
    }

    /// Knows the rule set's promotions, so that `offer("名字")` is checked.
    pub fn with_promotions(mut self, names: &[String]) -> Self {
        self.promotions = names.to_vec();
        self
    }

    /// Compiles a backtick expression: `source` is the text between the backticks, written
    /// at `span` of its file byte for byte. Problems go to `diagnostics`.
    pub fn expr(
        &self,
        source: &str,
        span: Span,
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
        self.compile(source, false, span.file, &at, names, diagnostics)
            .map(|ast| Script {
                source: source.to_string(),
                span,
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
                    match self.compile(&source, true, file, &at, names, diagnostics) {
                        Some(ast) => parts.push(Part::Hole(Script {
                            source,
                            span: span_of(start, end),
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
        &self.engine
    }

    fn compile(
        &self,
        source: &str,
        expression_only: bool,
        file: FileId,
        at: &dyn Fn(usize) -> usize,
        names: &Names<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<rhai::AST> {
        let span_at = |pos: Position| {
            let offset = offset_of(source, pos);
            let len = token_len(&source[offset..]);
            Span::new(file, at(offset), at(offset + len).max(at(offset) + len.min(1)))
        };
        let compiled = if expression_only {
            self.engine.compile_expression(source)
        } else {
            self.engine.compile(source)
        };
        let ast = match compiled {
            Ok(ast) => ast,
            Err(error) => {
                let message = lowercase_first(&error.err_type().to_string());
                diagnostics.push(
                    Diagnostic::error(span_at(error.position()), format!("invalid expression: {message}"))
                        .with_label("here"),
                );
                return None;
            }
        };

        let mut scope = Scope::new();
        for name in self.base_variables.iter().chain(&names.variables) {
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
            let known: Vec<&str> = self
                .base_variables
                .iter()
                .chain(&names.variables)
                .map(String::as_str)
                .collect();
            let mut d = Diagnostic::warning(span_at(error.position()), format!("unknown variable `{name}`"))
                .with_label("nothing in the scope has this name");
            d = match closest(name, known.iter().copied()) {
                Some(near) => d.with_help(format!("did you mean `{near}`? a request-context map must be declared with `context {name}` in the shop block")),
                None => d.with_help(format!("variables here: {}; declare request-context maps with `context {name}` in the shop block", known.join(", "))),
            };
            diagnostics.push(d);
        }

        let script_functions: BTreeSet<String> = ast.iter_functions().map(|f| f.name.to_string()).collect();
        let mut found = Vec::new();
        ast.walk(&mut |path: &[ASTNode]| {
            match path.last() {
                // A call is an expression inside another, or a statement on its own.
                Some(ASTNode::Expr(RhaiExpr::FnCall(call, pos)) | ASTNode::Stmt(Stmt::FnCall(call, pos)))
                    if !call.is_operator_call()
                        && !self.functions.contains(call.name.as_str())
                        && !script_functions.contains(call.name.as_str()) =>
                {
                    found.push(Unknown::Function(call.name.to_string(), *pos));
                }
                Some(ASTNode::Expr(RhaiExpr::FnCall(call, _)) | ASTNode::Stmt(Stmt::FnCall(call, _)))
                    if matches!(call.name.as_str(), "recommend" | "offer") =>
                {
                    if let Some(RhaiExpr::StringConstant(name, pos)) = call.args.first() {
                        let known: Vec<String> = if call.name == "recommend" {
                            crate::kb::STRATEGIES.iter().map(|s| s.to_string()).collect()
                        } else {
                            self.promotions.clone()
                        };
                        if !known.iter().any(|k| k == name.as_str()) {
                            found.push(Unknown::Literal {
                                function: call.name.to_string(),
                                name: name.to_string(),
                                known,
                                pos: *pos,
                            });
                        }
                    }
                }
                Some(ASTNode::Expr(RhaiExpr::Dot(dot, _, _))) => {
                    if let (RhaiExpr::Variable(var, _, _), RhaiExpr::Property(prop, pos)) = (&dot.lhs, &dot.rhs)
                        && var.1.as_str() == "slots"
                        && let Some(slots) = names.slots
                        && !slots.contains(prop.2.as_str())
                    {
                        found.push(Unknown::Slot(prop.2.to_string(), *pos));
                    }
                }
                _ => {}
            }
            true
        });
        let mut ok = true;
        for unknown in found {
            ok = false;
            match unknown {
                Unknown::Function(name, pos) => {
                    let candidates = self.functions.iter().map(String::as_str).filter(|f| !f.contains('$'));
                    let mut d = Diagnostic::error(span_at(pos), format!("unknown function or source `{name}`"))
                        .with_label("no source, host action or rhai function has this name");
                    if let Some(near) = closest(&name, candidates) {
                        d = d.with_help(format!("did you mean `{near}`?"));
                    }
                    diagnostics.push(d);
                }
                Unknown::Slot(name, pos) => {
                    let slots = names
                        .slots
                        .map(|s| s.iter().map(String::as_str).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default();
                    let mut d = Diagnostic::error(span_at(pos), format!("unknown slot `{name}`"))
                        .with_label("no `ask` in this flow fills it");
                    d = match names.slots.and_then(|s| closest(&name, s.iter().map(String::as_str))) {
                        Some(near) => d.with_help(format!("did you mean `{near}`? this flow asks for: {slots}")),
                        None if slots.is_empty() => d.with_help("this flow has no `ask` steps"),
                        None => d.with_help(format!("this flow asks for: {slots}")),
                    };
                    diagnostics.push(d);
                }
                Unknown::Literal {
                    function,
                    name,
                    known,
                    pos,
                } => {
                    let what = if function == "recommend" {
                        "recommendation strategy"
                    } else {
                        "promotion"
                    };
                    // The position is the opening quote; the span covers the quoted name.
                    let offset = offset_of(source, pos);
                    let len = source[offset..]
                        .char_indices()
                        .skip(1)
                        .find(|(_, c)| *c == '"')
                        .map_or(1, |(i, _)| i + 1);
                    let span = Span::new(file, at(offset), at(offset + len).max(at(offset) + 1));
                    let mut d = Diagnostic::error(span, format!("unknown {what} `{name}`"))
                        .with_label(format!("`{function}` needs one of its names here"));
                    d = match closest(&name, known.iter().map(String::as_str)) {
                        Some(near) => d.with_help(format!("did you mean `{near}`?")),
                        None if known.is_empty() => d.with_help(format!("the rule set has no {what}s")),
                        None => d.with_help(format!("known: {}", known.join(", "))),
                    };
                    diagnostics.push(d);
                }
            }
        }
        ok.then_some(ast)
    }
}

enum Unknown {
    Function(String, Position),
    Slot(String, Position),
    /// A literal argument that names nothing the function knows.
    Literal {
        function: String,
        name: String,
        known: Vec<String>,
        pos: Position,
    },
}

/// Byte offset in `source` of a rhai position (1-based line, 1-based character column).
fn offset_of(source: &str, pos: Position) -> usize {
    let (Some(line), Some(col)) = (pos.line(), pos.position()) else {
        return 0;
    };
    let mut start = 0;
    for _ in 1..line {
        match source[start..].find('\n') {
            Some(i) => start += i + 1,
            None => return source.len(),
        }
    }
    let rest = &source[start..];
    let line_text = &rest[..rest.find('\n').unwrap_or(rest.len())];
    start
        + line_text
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(line_text.len(), |(i, _)| i)
}

/// Length of the identifier-like token at the start of `s` (at least one character).
fn token_len(s: &str) -> usize {
    let word = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    if word > 0 {
        word
    } else {
        s.chars().next().map_or(0, char::len_utf8)
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rhai_positions_are_characters_on_lines() {
        let src = "a &&\n  订单 == 1";
        let pos = Position::new(2, 3);
        assert_eq!(&src[offset_of(src, pos)..], "订单 == 1");
    }
}
