//! The mistakes editors make in scripts, found before the rules go live: what `kefu check`
//! says beyond rhai's own parse.
//!
//! Two kinds of check. When rhai cannot parse a script, its tokens say what the editor
//! meant: `=>` written for `>=`, `=<` for `<=`, `=` for `==`, a reserved word used as a
//! field (`order.case`, to be read as `order["case"]`). When it can, a walk of the AST
//! checks every name against what the scope will hold ([`shape`]): calls to functions
//! that do not exist, `slots.x` where no `ask x` exists, literal names that must exist
//! (`recommend("new_arrivals", 3)`, `offer("回归礼")`), fields of the maps kefu builds
//! (`now.weekdy`), fields called like methods (`now.weekday()`), methods text or numbers
//! do not have (`message.contain("x")`); and, in a condition, an assignment
//! (`user.segment = "vip"`, which sets the field and is never true) or a value that can
//! never be true or false (`intent`, `"vip"`, `cart.total + 10`).

use std::collections::{BTreeSet, HashMap};

use rhai::{ASTNode, Engine, Expr, FnCallExpr, ParseError, ParseErrorType, Position, Stmt, Token};

use super::shape::{self, Ty};
use crate::diag::{Diagnostic, Span, closest};

/// What a script is for, which decides what its value must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// `when`, `for`, `if`: true or false.
    Condition,
    /// `set`, `call`: any value.
    Value,
    /// A template's `{…}` hole: one expression.
    Hole,
}

impl Role {
    fn place(self) -> &'static str {
        match self {
            Role::Condition => "a condition",
            Role::Value => "an expression",
            Role::Hole => "a template hole",
        }
    }
}

/// The kinds of value a method can be called on, as rhai's function list names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Family {
    Str,
    Int,
    Float,
    Bool,
    Map,
}

impl Family {
    fn of(ty: Ty) -> Option<Family> {
        match ty {
            Ty::Str | Ty::MaybeStr => Some(Family::Str),
            Ty::Int => Some(Family::Int),
            Ty::Float => Some(Family::Float),
            Ty::Bool => Some(Family::Bool),
            Ty::Fields(_) | Ty::MaybeFields(_) | Ty::TextMap | Ty::Memory | Ty::ListMap => Some(Family::Map),
            Ty::TextList | Ty::List | Ty::Open => None,
        }
    }

    /// The family of a parameter type in rhai's signatures (`&mut string`, `i64`, `map`);
    /// `None` for types scripts here never hold, `Some(None)` for any value.
    fn of_param(ty: &str) -> Option<Option<Family>> {
        let ty = ty
            .trim()
            .trim_start_matches("&mut ")
            .trim_start_matches('&')
            .trim_end_matches('=');
        Some(match ty {
            "string" | "str" | "ImmutableString" | "String" => Some(Family::Str),
            "i64" | "int" | "INT" => Some(Family::Int),
            "f64" | "float" | "FLOAT" => Some(Family::Float),
            "bool" => Some(Family::Bool),
            "map" | "Map" => Some(Family::Map),
            "Dynamic" | "_" | "?" => None,
            _ => return None,
        })
    }
}

/// Which methods and property getters rhai has for each family, read from the engine's
/// own function list so that it stays true when rhai changes.
#[derive(Debug, Default)]
pub(super) struct Methods {
    methods: HashMap<Family, BTreeSet<String>>,
    getters: HashMap<Family, BTreeSet<String>>,
    /// Methods whose first parameter takes any value.
    any: BTreeSet<String>,
}

impl Methods {
    /// Reads signatures such as `contains(string: &str, text: &str) -> bool` and
    /// `get$len(string: string) -> i64`.
    pub(super) fn from_signatures(signatures: &[String]) -> Self {
        let mut methods = Methods::default();
        for sig in signatures {
            let sig = sig.trim_start_matches("fn ");
            let Some((name, params)) = sig.split_once('(') else {
                continue;
            };
            let first = params.split([',', ')']).next().unwrap_or("").trim();
            if first.is_empty() {
                continue;
            }
            let ty = first.split_once(':').map_or("_", |(_, ty)| ty);
            let Some(family) = Family::of_param(ty) else { continue };
            let (set, name) = match name.strip_prefix("get$") {
                Some(getter) => (family.map(|f| methods.getters.entry(f).or_default()), getter),
                None if name.starts_with("set$") => continue,
                None => (family.map(|f| methods.methods.entry(f).or_default()), name),
            };
            if !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                continue; // operators
            }
            match set {
                Some(set) => set.insert(name.to_string()),
                None => methods.any.insert(name.to_string()),
            };
        }
        methods
    }

    fn has_method(&self, family: Family, name: &str) -> bool {
        self.any.contains(name) || self.methods.get(&family).is_some_and(|m| m.contains(name))
    }

    fn has_getter(&self, family: Family, name: &str) -> bool {
        self.getters.get(&family).is_some_and(|m| m.contains(name))
    }

    fn methods_of(&self, family: Family) -> impl Iterator<Item = &str> {
        self.methods.get(&family).into_iter().flatten().map(String::as_str)
    }
}

/// What the checks of one script need to know about its place in the rules.
pub(super) struct Context<'a> {
    /// What the script is for.
    pub role: Role,
    /// The script's text.
    pub source: &'a str,
    /// The file span of `source[start..end]`.
    pub span: &'a dyn Fn(usize, usize) -> Span,
    /// Every function a script may call (rhai's, the host's, the sources).
    pub functions: &'a BTreeSet<String>,
    /// rhai's methods by the kind of value they take.
    pub methods: &'a Methods,
    /// The shop's request-context maps (`order`, `cart`, ...).
    pub context: &'a [String],
    /// Variables of this place that shadow the built-ins: flow `set`s.
    pub locals: &'a [String],
    /// The enclosing flow's slots, when in a flow.
    pub slots: Option<&'a BTreeSet<String>>,
    /// The rule set's promotions, for `offer("…")`.
    pub promotions: &'a [String],
    /// The names `remember` keeps somewhere in the rule set, for `memory.x`.
    pub memory: &'a [String],
    /// Entities whose value is a map of fields (regexes with named groups, cards):
    /// `entities.order_card.amount` reads a field of them.
    pub grouped: &'a [String],
    /// Where the script runs (a turn, a proactive item), which decides its variables.
    pub scope: shape::Scope,
}

impl Context<'_> {
    fn span_of(&self, start: usize, len: usize) -> Span {
        let start = start.min(self.source.len());
        (self.span)(start, (start + len.max(1)).min(self.source.len()).max(start))
    }

    fn span_at(&self, pos: Position) -> Span {
        let offset = offset_of(self.source, pos);
        self.span_of(offset, token_len(&self.source[offset..]))
    }
}

/// Explains a parse error by what the editor most likely meant, when the script's tokens
/// show it; `None` leaves rhai's own message.
pub(super) fn explain_parse_error(engine: &Engine, cx: &Context<'_>, error: &ParseError) -> Option<Diagnostic> {
    let source = cx.source;
    let tokens = tokens(engine, source);
    let error_at = offset_of(source, error.position());
    let index_at = |offset: usize| tokens.iter().position(|(_, o)| *o == offset);

    // A reserved word or keyword where a field name should be: `order.case`.
    let word = match error.err_type() {
        ParseErrorType::Reserved(word) => Some(word.clone()),
        ParseErrorType::PropertyExpected => index_at(error_at)
            .map(|i| tokens[i].0.to_string())
            .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic())),
        _ => None,
    };
    if let Some(word) = word {
        let len = word.len();
        let mut d = Diagnostic::error(
            cx.span_of(error_at, len),
            format!("`{word}` is a reserved word in scripts"),
        );
        let before = index_at(error_at).and_then(|i| i.checked_sub(1)).map(|i| &tokens[i]);
        d = match before {
            Some((dot @ (Token::Period | Token::Elvis), dot_at)) => {
                let receiver = receiver_text(source, &tokens, *dot_at);
                let bracket = if matches!(dot, Token::Elvis) { "?[" } else { "[" };
                d.with_label("rhai reserves this word, so it cannot follow `.`")
                    .with_help(format!(
                        "read the field with brackets: `{receiver}{bracket}\"{word}\"]`"
                    ))
            }
            _ => d.with_label("rhai reserves this word").with_help("choose another name"),
        };
        return Some(d);
    }

    // `=>` for `>=`, `=<` for `<=`. A `switch` has `=>` of its own.
    let switch = tokens.iter().any(|(t, _)| matches!(t, Token::Switch));
    for (i, (token, at)) in tokens.iter().enumerate() {
        if *at > error_at {
            break;
        }
        let (wrong, right, meaning) = match token {
            Token::DoubleArrow if !switch => ("=>", ">=", "at least"),
            Token::Equals if matches!(tokens.get(i + 1), Some((Token::LessThan, next)) if *next == at + 1) => {
                ("=<", "<=", "at most")
            }
            _ => continue,
        };
        let fixed = replaced(source, *at, 2, right);
        let help = match fixed {
            Some(fixed) => format!("write `{right}` for \"{meaning}\": `{fixed}`"),
            None => format!("write `{right}` for \"{meaning}\""),
        };
        return Some(
            Diagnostic::error(cx.span_of(*at, 2), format!("`{wrong}` is not an operator"))
                .with_label(format!("did you mean `{right}`?"))
                .with_help(help),
        );
    }

    // `=` for `==`: an assignment rhai cannot place (`a && b = 1`, any `=` in a hole). In
    // a `set` or `call` an assignment is allowed, so the mistake is elsewhere.
    if cx.role == Role::Value {
        return None;
    }
    for (i, (token, at)) in tokens.iter().enumerate() {
        if *at > error_at {
            break;
        }
        let declared = i >= 2 && matches!(tokens[i - 2].0, Token::Let | Token::Const);
        if matches!(token, Token::Equals) && !declared {
            return Some(assignment(cx, *at, 1, "="));
        }
    }
    None
}

/// Runs the AST checks on a compiled script.
pub(super) fn check_ast(ast: &rhai::AST, cx: &Context<'_>, diagnostics: &mut Vec<Diagnostic>) {
    let script_functions: BTreeSet<String> = ast.iter_functions().map(|f| f.name.to_string()).collect();
    // A closure (`|x| x == session.last_intent`) is compiled into a function whose first
    // parameters are the variables it captures, shared by a `Share` statement where it is
    // written: those are the scope's own variables, not names that shadow them.
    let mut captured: BTreeSet<String> = BTreeSet::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Share(vars))) = path.last() {
            captured.extend(vars.iter().map(|(var, _)| var.name.to_string()));
        }
        true
    });
    // `let` names and the parameters of functions the script defines shadow the built-ins,
    // as flow `set`s do.
    let mut lets: Vec<String> = ast
        .iter_functions()
        .flat_map(|f| {
            let closure = f.name.starts_with("anon$");
            f.params
                .iter()
                .map(|p| p.to_string())
                .filter(|p| !(closure && captured.contains(p)))
                .collect::<Vec<_>>()
        })
        .collect();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Var(var, ..))) = path.last() {
            lets.push(var.0.name.to_string());
        }
        true
    });
    let walker = Walker {
        cx,
        script_functions: &script_functions,
        lets: &lets,
    };
    let mut found = Vec::new();
    let mut unknown_methods = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        walker.visit(path, &mut found);
        walker.unknown_method(path, &mut unknown_methods);
        true
    });
    if cx.role == Role::Condition {
        walker.condition(ast, &mut found);
    }
    // A method the chain of a known variable already reported (with its type's own
    // advice) is not reported again.
    unknown_methods.retain(|d: &Diagnostic| !found.iter().any(|f| f.primary.span == d.primary.span));
    found.extend(unknown_methods);
    diagnostics.extend(found);
}

/// Method names editors reach for from other languages to match a pattern; none of them
/// exists in scripts, and each is a failure at run time.
const PATTERN_METHODS: &[&str] = &[
    "matches", "match", "is_match", "test", "search", "find", "regex", "re_match",
];

struct Walker<'a> {
    cx: &'a Context<'a>,
    script_functions: &'a BTreeSet<String>,
    lets: &'a [String],
}

impl Walker<'_> {
    /// The type of a variable, when the rules know it.
    fn variable(&self, name: &str) -> Option<Ty> {
        if self.lets.iter().any(|l| l == name) || self.cx.locals.iter().any(|l| l == name) {
            return None;
        }
        self.cx
            .scope
            .variable(name)
            .or_else(|| self.cx.context.iter().any(|c| c == name).then_some(Ty::Open))
    }

    /// A variable of a turn read where it does not exist: in a proactive item, which
    /// runs on a shop event, nothing was said, understood or asked.
    fn out_of_scope(&self, name: &str, pos: Position, found: &mut Vec<Diagnostic>) {
        let cx = self.cx;
        if cx.scope != shape::Scope::Proactive
            || self.lets.iter().any(|l| l == name)
            || cx.locals.iter().any(|l| l == name)
            || cx.scope.variable(name).is_some()
            || shape::variable(name).is_none()
        {
            return;
        }
        let available: Vec<&str> = cx.scope.variables().iter().map(|v| v.name).collect();
        found.push(
            Diagnostic::error(cx.span_at(pos), format!("`{name}` is not in a proactive item's scope"))
                .with_label("a proactive message answers a shop event, not a message")
                .with_help(format!(
                    "read the event instead: `event.type` and its fields (`event.order_id`); proactive scripts can read {}",
                    available.join(", ")
                )),
        );
    }

    fn visit(&self, path: &[ASTNode], found: &mut Vec<Diagnostic>) {
        let cx = self.cx;
        match path.last() {
            Some(ASTNode::Expr(Expr::Variable(var, _, pos))) => self.out_of_scope(var.1.as_str(), *pos, found),
            // A call is an expression inside another, or a statement on its own.
            Some(ASTNode::Expr(Expr::FnCall(call, pos)) | ASTNode::Stmt(Stmt::FnCall(call, pos))) => {
                if !call.is_operator_call()
                    && !cx.functions.contains(call.name.as_str())
                    && !self.script_functions.contains(call.name.as_str())
                {
                    let candidates = cx.functions.iter().map(String::as_str).filter(|f| !f.contains('$'));
                    let mut d =
                        Diagnostic::error(cx.span_at(*pos), format!("unknown function or source `{}`", call.name))
                            .with_label("no source, host action or rhai function has this name");
                    if let Some(near) = closest(&call.name, candidates) {
                        d = d.with_help(format!("did you mean `{near}`?"));
                    }
                    found.push(d);
                } else if call.is_operator_call() && matches!(call.name.as_str(), "==" | "!=") {
                    self.compared_name(&call.args, found);
                } else if matches!(call.name.as_str(), "recommend" | "offer")
                    && let Some(Expr::StringConstant(name, pos)) = call.args.first()
                {
                    self.literal_name(&call.name, name, *pos, found);
                } else if super::matching::REGEX_FUNCTIONS.contains(&call.name.as_str())
                    && let Some(Expr::StringConstant(pattern, pos)) = call.args.get(1)
                {
                    self.literal_pattern(pattern, *pos, found);
                }
            }
            // `session["last_message"]`: a field read by its name in brackets is checked
            // as `session.last_message` is.
            Some(node @ ASTNode::Expr(Expr::Index(index, ..))) => {
                let inner = path.len() >= 2
                    && matches!(&path[path.len() - 2], ASTNode::Expr(Expr::Dot(outer, ..) | Expr::Index(outer, ..))
                        if matches!(node, ASTNode::Expr(e) if std::ptr::eq(*e, &outer.rhs)));
                if let (false, Expr::Variable(var, _, _), Expr::StringConstant(name, pos)) =
                    (inner, &index.lhs, &index.rhs)
                    && let Some(ty @ (Ty::Fields(_) | Ty::MaybeFields(_) | Ty::Memory)) = self.variable(var.1.as_str())
                {
                    // The position is the opening quote; the span covers the quoted name.
                    let offset = offset_of(self.cx.source, *pos);
                    let len = self.cx.source[offset..]
                        .char_indices()
                        .skip(1)
                        .find(|(_, c)| *c == '"')
                        .map_or(1, |(i, _)| i + 1);
                    self.field_at(var.1.as_str(), ty, name.as_str(), self.cx.span_of(offset, len), found);
                }
            }
            Some(node @ ASTNode::Expr(Expr::Dot(dot, ..))) => {
                // Only the root of a chain: `a.b.c` is `a . (b . c)`, and in `a[i].b` the
                // `i . b` after the index is not a chain of `i`.
                let inner = path.len() >= 2
                    && matches!(&path[path.len() - 2], ASTNode::Expr(Expr::Dot(outer, ..) | Expr::Index(outer, ..))
                        if matches!(node, ASTNode::Expr(e) if std::ptr::eq(*e, &outer.rhs)));
                if let (false, Expr::Variable(var, _, _)) = (inner, &dot.lhs)
                    && let Some(ty) = self.variable(var.1.as_str())
                {
                    self.chain(var.1.as_str(), ty, &dot.rhs, found);
                }
            }
            _ => {}
        }
    }

    /// A method call on any value (`order.note.matches(…)`, `message.trim().matches(…)`)
    /// whose name no function has: rhai finds methods among functions, so it fails at run
    /// time whatever the value is. Calls on variables of known type are judged by
    /// [`Self::chain`] too, with their type's advice.
    fn unknown_method(&self, path: &[ASTNode], found: &mut Vec<Diagnostic>) {
        let cx = self.cx;
        let Some(ASTNode::Expr(Expr::MethodCall(call, pos))) = path.last() else {
            return;
        };
        let name = call.name.as_str();
        if cx.functions.contains(name) || self.script_functions.contains(name) {
            return;
        }
        let mut d = Diagnostic::error(cx.span_at(*pos), format!("unknown method `{name}`"))
            .with_label("no function has this name, so this call fails when it runs");
        d = if PATTERN_METHODS.contains(&name) {
            d.with_help("match a pattern with `regex_match(text, pattern)` (true or false), `regex_find(text, pattern)` or `regex_find_all(text, pattern)`, e.g. `regex_match(message, #\"\\d{12}\"#)`")
        } else if let Some(near) = closest(
            name,
            cx.functions.iter().map(String::as_str).filter(|f| !f.contains('$')),
        ) {
            d.with_help(format!("did you mean `{near}`?"))
        } else {
            d
        };
        found.push(d);
    }

    /// `channel == "wechat"`, `event == "follow"`: a comparison of `channel` or `event`
    /// with a near-miss of a known name can never hold as meant. Other names are fine (a
    /// webhook channel's, another platform's event), so only near-misses are warned about.
    fn compared_name(&self, args: &[Expr], found: &mut Vec<Diagnostic>) {
        let ((Some(Expr::Variable(var, _, _)), Some(Expr::StringConstant(name, pos)))
        | (Some(Expr::StringConstant(name, pos)), Some(Expr::Variable(var, _, _)))) = (args.first(), args.get(1))
        else {
            return;
        };
        let variable = var.1.as_str();
        let (known, aliases): (&[&'static str], _) = match variable {
            "channel" => (&shape::CHANNELS, shape::CHANNEL_ALIASES),
            // In a proactive item `event` is the shop event's map, not a name.
            "event" if self.cx.scope == shape::Scope::Turn => (&shape::EVENTS, shape::EVENT_ALIASES),
            _ => return,
        };
        if self.variable(variable).is_none() {
            return; // a `let` or flow `set` of that name
        }
        let Some(meant) = shape::near_miss(name, known, aliases) else {
            return;
        };
        let cx = self.cx;
        let offset = offset_of(cx.source, *pos);
        let len = cx.source[offset..]
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '"')
            .map_or(1, |(i, _)| i + 1);
        let what = if variable == "channel" { "a channel" } else { "an event" };
        found.push(
            Diagnostic::warning(
                cx.span_of(offset, len),
                format!("`{name}` is not {what} name kefu gives `{variable}`"),
            )
            .with_label("this comparison never holds as meant")
            .with_help(format!("did you mean `{meant}`? (built-in: {})", known.join(", "))),
        );
    }

    /// `recommend("…")` and `offer("…")` name a strategy and a promotion that must exist.
    fn literal_name(&self, function: &str, name: &str, pos: Position, found: &mut Vec<Diagnostic>) {
        let cx = self.cx;
        let (what, known): (&str, Vec<String>) = if function == "recommend" {
            (
                "recommendation strategy",
                crate::kb::STRATEGIES.iter().map(|s| s.to_string()).collect(),
            )
        } else {
            ("promotion", cx.promotions.to_vec())
        };
        if known.iter().any(|k| k == name) {
            return;
        }
        // The position is the opening quote; the span covers the quoted name.
        let offset = offset_of(cx.source, pos);
        let len = cx.source[offset..]
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '"')
            .map_or(1, |(i, _)| i + 1);
        let mut d = Diagnostic::error(cx.span_of(offset, len), format!("unknown {what} `{name}`"))
            .with_label(format!("`{function}` needs one of its names here"));
        d = match closest(name, known.iter().map(String::as_str)) {
            Some(near) => d.with_help(format!("did you mean `{near}`?")),
            None if known.is_empty() => d.with_help(format!("the rule set has no {what}s")),
            None => d.with_help(format!("known: {}", known.join(", "))),
        };
        found.push(d);
    }

    /// A literal pattern of `regex_match`, `regex_find` or `regex_find_all` must compile
    /// (under the limits it runs with); its error points inside the literal.
    fn literal_pattern(&self, pattern: &str, pos: Position, found: &mut Vec<Diagnostic>) {
        let cx = self.cx;
        let Err(error) = super::matching::compile(pattern) else {
            return;
        };
        let at = offset_of(cx.source, pos);
        let literal = string_literal(cx.source, at);
        let whole = cx.span_of(at, literal.as_ref().map_or(1, |l| l.len));
        let d = match regex_syntax::ast::parse::Parser::new().parse(pattern) {
            Err(e) => {
                let (start, end) = (
                    e.span().start.offset,
                    e.span().end.offset.max(e.span().start.offset + 1),
                );
                let span = match literal.as_ref().filter(|l| l.decoded == pattern) {
                    Some(l) => {
                        let from = l.source_offset(start);
                        let to = l.source_offset(end.min(pattern.len())).max(from + 1);
                        cx.span_of(from, to - from)
                    }
                    None => whole,
                };
                Diagnostic::error(span, format!("invalid regex: {}", e.kind())).with_label("here")
            }
            Ok(_) => Diagnostic::error(whole, format!("invalid regex: {}", super::matching::one_line(&error)))
                .with_label("this pattern"),
        };
        let d = if literal.as_ref().is_some_and(|l| !l.raw) && pattern.contains('\\') {
            d.with_help("a raw string keeps backslashes as written: `#\"\\d+\"#`")
        } else {
            d
        };
        found.push(d);
    }

    /// Follows `root.a.b()...` while the type is known, checking each field and method.
    fn chain(&self, root: &str, mut ty: Ty, mut node: &Expr, found: &mut Vec<Diagnostic>) {
        let mut receiver = root.to_string();
        loop {
            let (element, next) = match node {
                Expr::Dot(x, ..) => (&x.lhs, Some(&x.rhs)),
                // After an index the value is not known.
                Expr::Index(x, ..) => (&x.lhs, None),
                other => (other, None),
            };
            let next_ty = match element {
                Expr::Property(prop, pos) => self.field(&receiver, ty, prop.2.as_str(), *pos, found),
                Expr::MethodCall(call, pos) => {
                    self.method(&receiver, ty, call.name.as_str(), *pos, found);
                    None
                }
                _ => None,
            };
            let name = match element {
                Expr::Property(prop, _) => prop.2.as_str(),
                _ => break,
            };
            receiver = format!("{receiver}.{name}");
            match (next_ty, next) {
                (Some(t), Some(n)) => {
                    ty = t;
                    node = n;
                }
                _ => break,
            }
        }
    }

    /// Checks `receiver.name` and gives its type when known.
    fn field(&self, receiver: &str, ty: Ty, name: &str, pos: Position, found: &mut Vec<Diagnostic>) -> Option<Ty> {
        self.field_at(receiver, ty, name, self.cx.span_at(pos), found)
    }

    /// [`field`](Self::field) with the span to point at.
    fn field_at(&self, receiver: &str, ty: Ty, name: &str, at: Span, found: &mut Vec<Diagnostic>) -> Option<Ty> {
        let cx = self.cx;
        match ty.present() {
            Ty::Fields(fields) => {
                if let Some(f) = fields.iter().find(|f| f.name == name) {
                    return Some(f.ty);
                }
                let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
                let mut d = Diagnostic::error(at, format!("unknown field `{name}` of `{receiver}`"))
                    .with_label(format!("`{receiver}` has no such field"));
                d = match closest(name, names.iter().copied()) {
                    Some(near) => d.with_help(format!(
                        "did you mean `{receiver}.{near}`? `{receiver}` has: {}",
                        names.join(", ")
                    )),
                    None => d.with_help(format!("`{receiver}` has: {}", names.join(", "))),
                };
                found.push(d);
                None
            }
            Ty::TextMap => {
                if receiver == "slots"
                    && let Some(slots) = cx.slots
                    && !slots.contains(name)
                {
                    let list = slots.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
                    let mut d = Diagnostic::error(at, format!("unknown slot `{name}`"))
                        .with_label("no `ask` in this flow fills it");
                    d = match closest(name, slots.iter().map(String::as_str)) {
                        Some(near) => d.with_help(format!("did you mean `{near}`? this flow asks for: {list}")),
                        None if list.is_empty() => d.with_help("this flow has no `ask` steps"),
                        None => d.with_help(format!("this flow asks for: {list}")),
                    };
                    found.push(d);
                }
                if receiver == "entities" && cx.grouped.iter().any(|g| g == name) {
                    return Some(Ty::Open);
                }
                Some(Ty::MaybeStr)
            }
            Ty::Memory => {
                if !cx.memory.iter().any(|m| m == name) {
                    let mut d = Diagnostic::warning(at, format!("`memory.{name}` is never remembered"))
                        .with_label("no `remember` line or step keeps this name, so it always reads `()`");
                    d = match closest(name, cx.memory.iter().map(String::as_str)) {
                        Some(near) => d.with_help(format!("did you mean `memory.{near}`?")),
                        None if cx.memory.is_empty() => {
                            d.with_help(format!("keep it in a rule or flow first: `remember {name} = `…``"))
                        }
                        None => d.with_help(format!("remembered: {}", cx.memory.join(", "))),
                    };
                    found.push(d);
                }
                None
            }
            // An entity's lists, indexed: `all_entities.money[1]`.
            Ty::TextList | Ty::List | Ty::ListMap | Ty::Open | Ty::MaybeFields(_) => None,
            Ty::Str | Ty::MaybeStr | Ty::Int | Ty::Float | Ty::Bool => {
                let family = Family::of(ty)?;
                if !cx.methods.has_getter(family, name) {
                    let mut d = Diagnostic::error(
                        at,
                        format!("`{receiver}` is {} and has no field `{name}`", ty.describe()),
                    )
                    .with_label("no such property");
                    let getters: Vec<&str> = cx
                        .methods
                        .getters
                        .get(&family)
                        .into_iter()
                        .flatten()
                        .map(String::as_str)
                        .collect();
                    d = if let Some(near) = closest(name, getters.iter().copied()) {
                        d.with_help(format!("did you mean `{receiver}.{near}`?"))
                    } else if cx.methods.has_method(family, name) {
                        d.with_help(format!("`{name}` is a method: `{receiver}.{name}()`"))
                    } else if getters.is_empty() {
                        d.with_help(format!("{} has no fields", ty.describe()))
                    } else {
                        d.with_help(format!("{} has the properties: {}", ty.describe(), getters.join(", ")))
                    };
                    found.push(d);
                }
                None
            }
        }
    }

    /// Checks the method call `receiver.name(…)` on a value of type `ty`.
    fn method(&self, receiver: &str, ty: Ty, name: &str, pos: Position, found: &mut Vec<Diagnostic>) {
        let cx = self.cx;
        let Some(family) = Family::of(ty) else { return };
        // Judged only against rhai's functions typed for the kinds of value the scope
        // holds: a source, a host function, a function the script defines, or one of
        // rhai's for other values (arrays, blobs) may take the receiver as its first
        // argument, and is left alone.
        if cx.methods.has_method(family, name)
            || self.script_functions.contains(name)
            || (cx.functions.contains(name)
                && !cx.methods.any.contains(name)
                && !cx.methods.methods.values().any(|m| m.contains(name)))
        {
            return;
        }
        let span = cx.span_at(pos);
        let d = match ty.present() {
            Ty::Fields(fields) if fields.iter().any(|f| f.name == name) => {
                Diagnostic::error(span, format!("`{receiver}.{name}` is a field, not a method"))
                    .with_label("a field is read without `()`")
                    .with_help(format!("write `{receiver}.{name}`"))
            }
            Ty::Fields(fields) => {
                let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
                let mut d = Diagnostic::error(span, format!("`{receiver}` has no method `{name}`"))
                    .with_label(format!("`{receiver}` is a map of fields"));
                d = match closest(name, names.iter().copied()) {
                    Some(near) => d.with_help(format!("did you mean the field `{receiver}.{near}`?")),
                    None => d.with_help(format!("read one of its fields: {}", names.join(", "))),
                };
                d
            }
            Ty::TextMap | Ty::Memory | Ty::ListMap => {
                Diagnostic::error(span, format!("`{receiver}` has no method `{name}`"))
                    .with_label(format!("`{receiver}` is a map: its values are fields"))
                    .with_help(format!("write `{receiver}.{name}` to read the value named `{name}`"))
            }
            _ => {
                let d = Diagnostic::error(
                    span,
                    format!("`{receiver}` is {} and has no method `{name}`", ty.describe()),
                )
                .with_label("no such method");
                let methods: Vec<&str> = cx.methods.methods_of(family).collect();
                if PATTERN_METHODS.contains(&name) {
                    d.with_help(format!(
                        "match a pattern with `regex_match({receiver}, pattern)`, e.g. `regex_match({receiver}, #\"\\d{{12}}\"#)`; `regex_find` and `regex_find_all` give the match's fields"
                    ))
                } else if let Some(near) = closest(
                    name,
                    methods.iter().copied().chain(cx.methods.any.iter().map(String::as_str)),
                ) {
                    d.with_help(format!("did you mean `{receiver}.{near}()`?"))
                } else if cx.methods.has_getter(family, name) {
                    d.with_help(format!("`{name}` is a property: `{receiver}.{name}`"))
                } else {
                    // The everyday ones: not rhai's bit, blob and range helpers.
                    let some: Vec<&str> = methods
                        .iter()
                        .copied()
                        .filter(|m| !m.contains("bit") && !matches!(*m, "blob" | "range" | "sleep"))
                        .take(7)
                        .chain(["to_string"])
                        .collect();
                    d.with_help(format!("methods of {} include: {}, …", ty.describe(), some.join(", ")))
                }
            }
        };
        found.push(d);
    }

    /// A condition's checks: no assignment, and a value that can be true or false.
    fn condition(&self, ast: &rhai::AST, found: &mut Vec<Diagnostic>) {
        let cx = self.cx;
        let statements = ast.statements();
        for stmt in statements {
            if let Stmt::Assignment(x) = stmt {
                let (op, target) = (&x.0, &x.1.lhs);
                let root = root_variable(target);
                if root.is_some_and(|r| self.lets.iter().any(|l| l == r)) {
                    continue;
                }
                let at = offset_of(cx.source, op.position());
                let syntax = op.get_op_assignment_info().map_or("=", |info| info.3);
                found.push(assignment(cx, at, syntax.len(), syntax));
            }
        }
        // rhai keeps a call on its own (`a + 1`, `!a`) as a statement, not an expression.
        let (what, start) = match statements.last() {
            Some(Stmt::Expr(e)) => (self.not_bool(e), start_of(e)),
            Some(Stmt::FnCall(call, pos)) => (calculation(call), call_start(call, *pos)),
            _ => return,
        };
        let Some(what) = what else { return };
        let start = offset_of(cx.source, start);
        let text = cx.source[start..].trim_end().trim_end_matches(';').trim_end();
        let span = cx.span_of(start, text.len());
        let d = match what {
            NotBool::Unit => Diagnostic::warning(span, "this condition is `()`, so it is always false")
                .with_label("`()` means \"nothing\"")
                .with_help("write the comparison, e.g. `order == ()`"),
            NotBool::Value { what, named } => {
                let mut d = Diagnostic::error(span, format!("this condition is {what}, never true or false"))
                    .with_label(if named {
                        format!("`{text}` is {what}")
                    } else {
                        format!("this is {what}")
                    });
                let shown = if text.chars().count() <= 40 { text } else { "…" };
                d = d.with_help(match (what, named) {
                    ("text", true) => {
                        format!("compare it: `{shown} == \"…\"`, or test that it is there: `{shown} != ()`")
                    }
                    ("text", false) => {
                        format!("a condition compares two values, e.g. `user.segment == {shown}`")
                    }
                    (_, true) => format!("compare it with a number, e.g. `{shown} > 0`"),
                    _ => format!("compare the result, e.g. `{shown} > 0`"),
                });
                d
            }
        };
        found.push(d);
    }

    /// Why `expr` can never be a boolean, when that is certain.
    fn not_bool(&self, expr: &Expr) -> Option<NotBool> {
        let value = |what: &'static str| Some(NotBool::Value { what, named: false });
        match expr {
            Expr::StringConstant(..) | Expr::InterpolatedString(..) | Expr::CharConstant(..) => value("text"),
            Expr::IntegerConstant(..) | Expr::FloatConstant(..) => value("a number"),
            Expr::Array(..) => value("a list"),
            Expr::Map(..) => value("a map"),
            Expr::Unit(..) => Some(NotBool::Unit),
            Expr::DynamicConstant(v, _) => {
                if v.is_string() || v.is_char() {
                    value("text")
                } else if v.is_int() || v.is_float() {
                    value("a number")
                } else if v.is_array() {
                    value("a list")
                } else if v.is_map() {
                    value("a map")
                } else {
                    None
                }
            }
            Expr::FnCall(call, _) => calculation(call),
            Expr::Variable(..) | Expr::Dot(..) => {
                let ty = self.type_of(expr)?;
                let what = match ty {
                    Ty::Str | Ty::MaybeStr => "text",
                    Ty::Int | Ty::Float => "a number",
                    Ty::Fields(_) | Ty::MaybeFields(_) | Ty::TextMap | Ty::Memory | Ty::ListMap => "a map",
                    Ty::TextList | Ty::List => "a list",
                    Ty::Bool | Ty::Open => return None,
                };
                Some(NotBool::Value { what, named: true })
            }
            _ => None,
        }
    }

    /// The type of a variable or a chain of fields from one, when known.
    fn type_of(&self, expr: &Expr) -> Option<Ty> {
        match expr {
            Expr::Variable(var, _, _) => self.variable(var.1.as_str()),
            Expr::Dot(x, ..) => {
                let mut ty = self.type_of(&x.lhs)?;
                let mut node = &x.rhs;
                loop {
                    let (element, next) = match node {
                        Expr::Dot(x, ..) => (&x.lhs, Some(&x.rhs)),
                        other => (other, None),
                    };
                    let Expr::Property(prop, _) = element else { return None };
                    ty = match ty.present() {
                        Ty::Fields(fields) => fields.iter().find(|f| f.name == prop.2.as_str())?.ty,
                        Ty::TextMap if self.cx.grouped.iter().any(|g| g == prop.2.as_str()) => Ty::Open,
                        Ty::TextMap => Ty::MaybeStr,
                        _ => return None,
                    };
                    match next {
                        Some(n) => node = n,
                        None => return Some(ty),
                    }
                }
            }
            _ => None,
        }
    }
}

/// A rhai string literal as written in a script: its length in the source, the text it
/// stands for, and where each byte of that text is written.
struct Literal {
    /// Bytes of source from the opening `"` or `#` through the closing one.
    len: usize,
    /// The string's value, escapes decoded.
    decoded: String,
    /// For each byte of `decoded`, its offset in the source (one more entry for the end).
    origin: Vec<usize>,
    /// A raw string (`#"…"#`), whose backslashes are itself.
    raw: bool,
}

impl Literal {
    fn source_offset(&self, decoded: usize) -> usize {
        self.origin[decoded.min(self.origin.len() - 1)]
    }
}

/// Reads the string literal starting at `at` (`"…"` with rhai's escapes, or `#"…"#`).
fn string_literal(source: &str, at: usize) -> Option<Literal> {
    let rest = source.get(at..)?;
    let hashes = rest.bytes().take_while(|b| *b == b'#').count();
    let body_start = at + hashes + 1;
    if rest.as_bytes().get(hashes) != Some(&b'"') {
        return None;
    }
    let (mut decoded, mut origin) = (String::new(), Vec::new());
    let mut chars = source[body_start..].char_indices().peekable();
    let closing = format!("\"{}", "#".repeat(hashes));
    while let Some((i, c)) = chars.next() {
        let here = body_start + i;
        if hashes > 0 {
            if source[here..].starts_with(&closing) {
                origin.push(here);
                return Some(Literal {
                    len: here + closing.len() - at,
                    decoded,
                    origin,
                    raw: true,
                });
            }
        } else if c == '"' {
            origin.push(here);
            return Some(Literal {
                len: here + 1 - at,
                decoded,
                origin,
                raw: false,
            });
        } else if c == '\\' {
            let (_, e) = chars.next()?;
            let value = match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                'x' | 'u' | 'U' => {
                    let digits = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex: String = (0..digits).filter_map(|_| chars.next().map(|(_, h)| h)).collect();
                    char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                }
                other => other,
            };
            origin.extend(std::iter::repeat_n(here, value.len_utf8()));
            decoded.push(value);
            continue;
        }
        origin.extend(std::iter::repeat_n(here, c.len_utf8()));
        decoded.push(c);
    }
    None
}

/// An arithmetic operator's call, whose value is a number (or text), never a boolean.
fn calculation(call: &FnCallExpr) -> Option<NotBool> {
    match call.op_token.as_ref()? {
        Token::Plus
        | Token::Minus
        | Token::UnaryMinus
        | Token::Multiply
        | Token::Divide
        | Token::Modulo
        | Token::PowerOf => Some(NotBool::Value {
            what: "a calculation",
            named: false,
        }),
        _ => None,
    }
}

/// Why a condition is not a boolean.
enum NotBool {
    /// `()`: always false.
    Unit,
    /// A value of another kind; `named` when it is a variable or field (`intent`).
    Value { what: &'static str, named: bool },
}

/// The diagnostic for an assignment where a comparison was meant; `at` is the operator's
/// offset in the source.
fn assignment(cx: &Context<'_>, at: usize, len: usize, op: &str) -> Diagnostic {
    let span = cx.span_of(at, len);
    if op != "=" {
        return Diagnostic::error(span, format!("`{op}` changes a value in {}", cx.role.place()))
            .with_label("this assigns")
            .with_help("conditions and template holes only read values; compute new values with `set` in a flow");
    }
    let d = Diagnostic::error(span, format!("assignment in {}", cx.role.place()))
        .with_label("`=` sets a value; it does not compare");
    match replaced(cx.source, at, 1, "==") {
        Some(fixed) => d.with_help(format!("compare with `==`: `{fixed}`")),
        None => d.with_help("compare with `==`"),
    }
}

/// `source` with `len` bytes at `at` replaced, trimmed, when short enough for a help line.
fn replaced(source: &str, at: usize, len: usize, with: &str) -> Option<String> {
    let fixed = format!("{}{with}{}", &source[..at], source.get(at + len..)?);
    let fixed = fixed.trim();
    (fixed.chars().count() <= 60 && !fixed.contains('\n')).then(|| fixed.to_string())
}

/// The script's tokens with their byte offsets, up to the end.
fn tokens(engine: &Engine, source: &str) -> Vec<(Token, usize)> {
    let inputs = [source];
    let (stream, _) = engine.lex(&inputs);
    let mut out = Vec::new();
    for (token, pos) in stream {
        if matches!(token, Token::EOF) || out.len() > 10_000 {
            break;
        }
        out.push((token, offset_of(source, pos)));
    }
    out
}

/// The text of the chain a `.` at `dot_at` follows: `order.items` in `order.items.case`.
fn receiver_text<'s>(source: &'s str, tokens: &[(Token, usize)], dot_at: usize) -> &'s str {
    let Some(dot) = tokens.iter().position(|(_, o)| *o == dot_at) else {
        return "…";
    };
    let mut start = dot;
    while start > 0 {
        let expected_name = (dot - start) % 2 == 0;
        match &tokens[start - 1].0 {
            Token::Identifier(_) if expected_name => start -= 1,
            Token::Period | Token::Elvis if !expected_name => start -= 1,
            _ => break,
        }
    }
    if start == dot {
        return "…";
    }
    source[tokens[start].1..dot_at].trim_end()
}

/// The variable at the root of `a`, `a.b.c` or `a[i]`.
fn root_variable(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Variable(var, _, _) => Some(var.1.as_str()),
        Expr::Dot(x, ..) | Expr::Index(x, ..) => root_variable(&x.lhs),
        _ => None,
    }
}

/// Where an expression starts: the leftmost operand of an operator, not the operator.
fn start_of(expr: &Expr) -> Position {
    match expr {
        Expr::FnCall(call, pos) => call_start(call, *pos),
        Expr::Dot(x, ..) | Expr::Index(x, ..) => start_of(&x.lhs),
        Expr::And(x, _) | Expr::Or(x, _) | Expr::Coalesce(x, _) => x.first().map_or(expr.position(), start_of),
        _ => expr.start_position(),
    }
}

/// Where a call starts: its left operand for a binary operator, else its name.
fn call_start(call: &FnCallExpr, pos: Position) -> Position {
    match call.args.first() {
        Some(first) if call.is_operator_call() && call.args.len() == 2 => start_of(first),
        _ => pos,
    }
}

/// Byte offset in `source` of a rhai position (1-based line, 1-based character column).
pub(super) fn offset_of(source: &str, pos: Position) -> usize {
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
pub(super) fn token_len(s: &str) -> usize {
    let word = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    if word > 0 {
        word
    } else {
        s.chars().next().map_or(0, char::len_utf8)
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

    #[test]
    fn methods_come_from_rhai_signatures() {
        let engine = super::super::sandboxed_engine(super::super::Limits::default());
        let methods = Methods::from_signatures(&engine.gen_fn_signatures(true));
        assert!(methods.has_method(Family::Str, "contains"));
        assert!(methods.has_method(Family::Str, "starts_with"));
        assert!(!methods.has_method(Family::Str, "contain"));
        assert!(methods.has_method(Family::Int, "to_string"), "any value has to_string");
        assert!(methods.has_method(Family::Int, "to_float"));
        assert!(methods.has_method(Family::Map, "keys"));
        assert!(!methods.has_method(Family::Map, "weekday"));
        assert!(methods.has_getter(Family::Str, "len"));
        assert!(!methods.has_getter(Family::Int, "len"));
    }

    /// The explanation a script's parse error gets, if any: (message, column of its span).
    fn explained(source: &str) -> Option<(String, usize)> {
        let engine = super::super::sandboxed_engine(super::super::Limits::default());
        let error = engine.compile(source).expect_err(source);
        let span = |start: usize, end: usize| Span::new(0, start, end);
        let functions = BTreeSet::new();
        let methods = Methods::default();
        let cx = Context {
            role: Role::Condition,
            source,
            span: &span,
            functions: &functions,
            methods: &methods,
            context: &[],
            locals: &[],
            slots: None,
            promotions: &[],
            memory: &[],
            grouped: &[],
            scope: shape::Scope::Turn,
        };
        explain_parse_error(&engine, &cx, &error).map(|d| (d.message, d.primary.span.start))
    }

    #[test]
    fn parse_errors_are_explained_only_where_the_tokens_show_the_mistake() {
        let arrow = Some(("`=>` is not an operator".to_string(), 8));
        assert_eq!(explained("order.n => 7"), arrow);
        let after_text = "\"订单\" == x && n => 7";
        assert_eq!(
            explained(after_text),
            arrow.map(|(m, _)| (m, after_text.find("=>").unwrap()))
        );
        assert_eq!(
            explained("n =< 7").map(|(m, _)| m).as_deref(),
            Some("`=<` is not an operator")
        );
        assert_eq!(
            explained("a && b = 1").map(|(m, _)| m).as_deref(),
            Some("assignment in a condition")
        );
        assert_eq!(
            explained("order.case").map(|(m, _)| m).as_deref(),
            Some("`case` is a reserved word in scripts")
        );
        // A `let` assigns, a `switch` has arms, a string may hold anything: rhai's own
        // message stays.
        assert_eq!(explained("let x = 1; x >"), None);
        assert_eq!(explained("switch x { 1 => true, _ => false"), None);
        assert_eq!(explained("\"=> =\" +"), None);
    }

    #[test]
    fn the_receiver_of_a_field_is_the_chain_before_its_dot() {
        let engine = super::super::sandboxed_engine(super::super::Limits::default());
        let src = "x > 1 && order.items.case";
        let toks = tokens(&engine, src);
        let dot = src.rfind('.').unwrap();
        assert_eq!(receiver_text(src, &toks, dot), "order.items");
    }
}
