//! Rhai, sandboxed: the engine every rule expression and reply template runs on.
//!
//! Expressions are compiled once when the rule set is built ([`compile`]) and evaluated
//! with a fresh [`rhai::Scope`] per turn. The engine is a sandbox: a bounded number of
//! operations, call depth, string, array and map sizes; no `import` (the crate is built
//! with `no_module`), no `eval`, and `print`/`debug` go nowhere. Scripts reach the outside
//! world only through the functions the rule set registers (`source`s and host actions).

pub mod compile;
pub mod host;
pub mod template;

use rhai::{Dynamic, Engine, EvalAltResult, Scope};

pub use compile::{Names, ScriptCompiler};
pub use template::{Part, Template};

use crate::dsl::diagnostic::Span;

/// Variables every script can read, set by the engine for each turn (DSL.md, "Rhai scope").
pub const BUILTIN_VARIABLES: &[&str] = &[
    "message",
    "intent",
    "confidence",
    "entities",
    "emotion",
    "slots",
    "session",
    "user",
    "now",
];

/// Request-context maps a shop may read without declaring them with `context`.
pub const DEFAULT_CONTEXT: &[&str] = &["order", "cart", "product"];

/// Functions the engine registers for scripts besides the `source`s: the host actions.
/// `recommend` and `offer` read the knowledge base and the promotions.
pub const HOST_FUNCTIONS: &[&str] = &["create_ticket", "recommend", "offer"];

/// The sandbox's limits. They bound what one expression may cost, so that a mistaken
/// `loop {}` in a rule file costs a turn a few milliseconds instead of a worker thread.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Rhai operations per evaluation.
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_levels: usize,
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Elements in one array.
    pub max_array_size: usize,
    /// Entries in one map.
    pub max_map_size: usize,
    /// Nesting depth of expressions (at top level, in functions).
    pub max_expr_depths: (usize, usize),
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 50_000,
            max_call_levels: 16,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_expr_depths: (64, 32),
        }
    }
}

/// A new engine with the standard library, the sandbox's limits, and nothing else.
pub fn sandboxed_engine(limits: Limits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_expr_depths(limits.max_expr_depths.0, limits.max_expr_depths.1)
        // A missing map property reads as `()`, as DSL.md promises for absent values.
        .set_fail_on_invalid_map_property(false);
    // `eval` would compile text at run time, outside the checks `kefu check` runs.
    engine.disable_symbol("eval");
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    engine
}

/// A compiled rhai expression (or short script) from a rule file.
#[derive(Clone, Debug)]
pub struct Script {
    /// The source as written, for traces and `kefu chat`.
    pub source: String,
    /// Where it is written.
    pub span: Span,
    /// The compiled form.
    pub ast: rhai::AST,
}

/// Why a script could not be evaluated at run time.
#[derive(Debug, thiserror::Error)]
#[error("script at {span:?} failed: {message}")]
pub struct ScriptError {
    /// The script's place in the rule files.
    pub span: Span,
    /// Rhai's message.
    pub message: String,
    /// Whether a sandbox limit stopped it.
    pub limit: bool,
}

impl ScriptError {
    fn new(script: &Script, error: Box<EvalAltResult>) -> Self {
        let limit = matches!(
            *error,
            EvalAltResult::ErrorTooManyOperations(..)
                | EvalAltResult::ErrorStackOverflow(..)
                | EvalAltResult::ErrorDataTooLarge(..)
        );
        ScriptError {
            span: script.span,
            message: error.to_string(),
            limit,
        }
    }
}

impl Script {
    /// Evaluates the script in `scope`.
    pub fn eval(&self, engine: &Engine, scope: &mut Scope) -> Result<Dynamic, ScriptError> {
        engine
            .eval_ast_with_scope::<Dynamic>(scope, &self.ast)
            .map_err(|e| ScriptError::new(self, e))
    }

    /// Evaluates a condition: `true` only for the boolean `true`. A condition that yields
    /// `()` (a missing value) is false; any other non-boolean is an error.
    pub fn eval_bool(&self, engine: &Engine, scope: &mut Scope) -> Result<bool, ScriptError> {
        let value = self.eval(engine, scope)?;
        if value.is_unit() {
            return Ok(false);
        }
        value.as_bool().map_err(|ty| ScriptError {
            span: self.span,
            message: format!("condition gave a {ty}, not a bool"),
            limit: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(engine: &Engine, source: &str) -> Script {
        Script {
            source: source.into(),
            span: Span::default(),
            ast: engine.compile(source).unwrap(),
        }
    }

    #[test]
    fn runaway_loop_is_stopped_by_the_operation_limit() {
        let engine = sandboxed_engine(Limits::default());
        let err = script(&engine, "let x = 0; loop { x += 1; }")
            .eval(&engine, &mut Scope::new())
            .unwrap_err();
        assert!(err.limit, "{err}");
        assert!(err.message.contains("Too many operations"), "{}", err.message);
    }

    #[test]
    fn deep_recursion_is_stopped() {
        let engine = sandboxed_engine(Limits::default());
        let err = script(&engine, "fn f(n) { f(n + 1) } f(0)")
            .eval(&engine, &mut Scope::new())
            .unwrap_err();
        assert!(err.limit, "{err}");
    }

    #[test]
    fn huge_strings_are_refused() {
        let engine = sandboxed_engine(Limits::default());
        let err = script(&engine, r#"let s = "ab"; loop { s += s; }"#)
            .eval(&engine, &mut Scope::new())
            .unwrap_err();
        assert!(err.limit, "{err}");
    }

    #[test]
    fn eval_and_import_are_unavailable() {
        let engine = sandboxed_engine(Limits::default());
        assert!(engine.compile(r#"eval("1 + 1")"#).is_err());
        assert!(engine.compile(r#"import "x" as y;"#).is_err());
    }

    #[test]
    fn missing_property_reads_as_unit_and_unit_condition_is_false() {
        let engine = sandboxed_engine(Limits::default());
        let mut scope = Scope::new();
        scope.push("order", rhai::Map::new());
        assert!(!script(&engine, "order.custom").eval_bool(&engine, &mut scope).unwrap());
        let err = script(&engine, "42").eval_bool(&engine, &mut scope).unwrap_err();
        assert!(err.message.contains("not a bool"));
    }
}
