//! Rhai, sandboxed: the engine every rule expression and reply template runs on.
//!
//! Expressions are compiled once when the rule set is built ([`compile`]) and evaluated
//! with a fresh [`rhai::Scope`] per turn. The engine is a sandbox: a bounded number of
//! operations, call depth, string, array and map sizes; no `import` (the crate is built
//! with `no_module`), no `eval`, and `print`/`debug` go nowhere. Scripts reach the outside
//! world only through the functions [`rule_set_engine`] registers, all defined in this
//! module: the rule set's data [`sources`], the [`host`] functions and the regex
//! functions of [`matching`].
//!
//! This module knows neither the syntax tree nor the rule set: the compiler takes an
//! expression's text and place, and `offer` takes [`Offer`]s, so `dsl` and `ruleset` sit
//! above it.
//!
//! **Time.** Operations alone do not bound a script's cost: one operation may be a call
//! that builds a 60,000-character string, and 50,000 of those took seconds. Every script
//! also has a limit on the CPU time it may use ([`Limits::max_time`]), and all the
//! scripts of one turn share a budget ([`Limits::max_turn_time`], installed by
//! [`turn_budget`]); rhai's progress callback reads the clock every [`CLOCK_EVERY`]
//! operations and stops the script when its time is up. The clock is the thread's CPU
//! time, not the wall clock: a script preempted on a busy machine has not used its time,
//! and is not stopped for it, so the same script on the same input always gets the same
//! answer. Reading that clock is a system call, so a script starts its clock at its
//! first look, after [`CLOCK_EVERY`] operations: the conditions and template holes of a
//! turn, a few dozen operations each, never read it, and a turn of them costs no system
//! call. Evaluation is synchronous on the calling thread, so the clock lives in a
//! thread-local, as the turn's host does ([`host`]).

mod check;
pub mod compile;
pub mod host;
pub mod matching;
pub mod shape;
pub mod sources;
pub mod template;

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, Scope};

pub use compile::{Names, ScriptCompiler};
pub use host::Offer;
pub use sources::{Source, SourceKind};
pub use template::{Localized, Part, Template, Texts};

use crate::diag::Span;
use crate::kb::KnowledgeBase;

/// Variables every script can read, set by the engine for each turn (docs/language.md
/// section 6, "What scripts can read"); their types and fields are in [`shape`].
pub const BUILTIN_VARIABLES: &[&str] = &shape::NAMES;

/// Request-context maps a shop may read without declaring them with `context`.
pub const DEFAULT_CONTEXT: &[&str] = &["order", "cart", "product"];

/// The functions [`host::register`] gives scripts besides the `source`s.
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
    /// CPU time one evaluation may take.
    pub max_time: Duration,
    /// CPU time all the evaluations of one turn may take together.
    pub max_turn_time: Duration,
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
            // A condition or template hole takes microseconds; a script over an order's
            // items, a few hundred operations. These stop only runaway scripts.
            max_time: Duration::from_millis(20),
            max_turn_time: Duration::from_millis(100),
        }
    }
}

/// How many operations pass between two looks at the clock: reading a thread's CPU time
/// is a system call, about as costly as a few dozen operations, and a script overruns its
/// deadline by at most this many operations. A script shorter than this (most
/// conditions) never reads the clock.
pub const CLOCK_EVERY: u64 = 64;

/// The CPU time this thread has used.
fn cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or_default(),
        u32::try_from(t.tv_nsec).unwrap_or_default(),
    )
}

/// The clock of the script running on a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Clock {
    /// No script is running.
    Off,
    /// A script runs and has not looked at the clock yet.
    Pending,
    /// A script runs; its clock started at `started` (thread CPU time) and it must stop
    /// at `deadline`.
    Running { started: Duration, deadline: Duration },
}

thread_local! {
    /// The clock of the script running on this thread.
    static CLOCK: Cell<Clock> = const { Cell::new(Clock::Off) };
    /// Script time the running turn has left, when a turn has installed a budget.
    static TURN_LEFT: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Gives the scripts evaluated on this thread, until the guard is dropped, `budget` of
/// time in all (a turn installs one for its scripts).
pub fn turn_budget(budget: Duration) -> TurnBudget {
    TurnBudget {
        budget,
        previous: TURN_LEFT.replace(Some(budget)),
    }
}

/// Restores the thread's previous budget when dropped (see [`turn_budget`]).
pub struct TurnBudget {
    budget: Duration,
    previous: Option<Duration>,
}

impl TurnBudget {
    /// The script time charged to this budget so far.
    pub fn spent(&self) -> Duration {
        self.budget.saturating_sub(TURN_LEFT.get().unwrap_or_default())
    }
}

impl Drop for TurnBudget {
    fn drop(&mut self) {
        TURN_LEFT.set(self.previous);
    }
}

/// Runs one evaluation under its time limit (set by the engine's progress callback,
/// [`time_is_up`]), and charges the turn's budget with the time it took.
fn timed<R>(eval: impl FnOnce() -> R) -> R {
    let outer = CLOCK.replace(Clock::Pending);
    let result = eval();
    if let Clock::Running { started, .. } = CLOCK.get()
        && let Some(left) = TURN_LEFT.get()
    {
        TURN_LEFT.set(Some(left.saturating_sub(cpu_now().saturating_sub(started))));
    }
    CLOCK.set(outer);
    result
}

/// The progress callback's look at the clock (every [`CLOCK_EVERY`] operations): starts
/// the running script's clock, allowing it `max_time` or the turn's budget left when that
/// is less, or says whether its time is up.
fn time_is_up(max_time: Duration) -> bool {
    match CLOCK.get() {
        Clock::Off => false,
        Clock::Pending => {
            let now = cpu_now();
            let allowed = TURN_LEFT.get().map_or(max_time, |left| left.min(max_time));
            CLOCK.set(Clock::Running {
                started: now,
                deadline: now + allowed,
            });
            false
        }
        Clock::Running { deadline, .. } => cpu_now() >= deadline,
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
        // A missing map property reads as `()`, as docs/language.md section 6 ("Absent
        // values") promises.
        .set_fail_on_invalid_map_property(false);
    let max_time = limits.max_time;
    engine.on_progress(move |operations| {
        (operations % CLOCK_EVERY == 0 && time_is_up(max_time)).then(|| Dynamic::from("the script's time limit"))
    });
    // `eval` would compile text at run time, outside the checks `kefu check` runs.
    engine.disable_symbol("eval");
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    engine
}

/// The engine a rule set's scripts run on: the sandbox with the rule set's `sources`
/// ([`sources::register`]) and the host functions ([`host::register`]) registered.
pub fn rule_set_engine(limits: Limits, sources: &[Source], kb: &Arc<KnowledgeBase>, offers: Vec<Offer>) -> Engine {
    let mut engine = sandboxed_engine(limits);
    sources::register(&mut engine, sources);
    host::register(&mut engine, kb, offers);
    matching::register(&mut engine);
    engine
}

/// A compiled rhai expression (or short script) from a rule file.
#[derive(Clone, Debug)]
pub struct Script {
    /// The source as written, for traces and `kefu chat`.
    pub source: String,
    /// Where it is written.
    pub span: Span,
    /// Where it is written as `path:line:col`, for errors at run time (which have no
    /// source map); empty when the compiler was given no files.
    pub location: Arc<str>,
    /// The compiled form.
    pub ast: rhai::AST,
}

/// Why a script could not be evaluated at run time.
#[derive(Debug, thiserror::Error)]
#[error("script at {location} failed: {message}")]
pub struct ScriptError {
    /// The script's place in the rule files.
    pub span: Span,
    /// The same place as `path:line:col` (see [`Script::location`]).
    pub location: Arc<str>,
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
                | EvalAltResult::ErrorTerminated(..)
        );
        let message = match *error {
            EvalAltResult::ErrorTerminated(..) => "stopped: it ran past its time limit".to_string(),
            _ => error.to_string(),
        };
        ScriptError {
            span: script.span,
            location: Arc::clone(&script.location),
            message,
            limit,
        }
    }
}

impl Script {
    /// Evaluates the script in `scope`.
    pub fn eval(&self, engine: &Engine, scope: &mut Scope) -> Result<Dynamic, ScriptError> {
        timed(|| engine.eval_ast_with_scope::<Dynamic>(scope, &self.ast)).map_err(|e| ScriptError::new(self, e))
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
            location: Arc::clone(&self.location),
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
            location: Arc::from(""),
            ast: engine.compile(source).unwrap(),
        }
    }

    #[test]
    fn runaway_loop_is_stopped_by_the_operation_limit() {
        let engine = sandboxed_engine(Limits {
            max_operations: 5_000,
            ..Limits::default()
        });
        let err = script(&engine, "let x = 0; loop { x += 1; }")
            .eval(&engine, &mut Scope::new())
            .unwrap_err();
        assert!(err.limit, "{err}");
        assert!(err.message.contains("Too many operations"), "{}", err.message);
    }

    /// One operation that builds a 60,000-character string: the operation limit alone let
    /// a `when` over such calls cost seconds a turn.
    const SLOW_SCRIPT: &str = r#"let n = 0; loop { let s = ""; s.pad(60000, "x"); n += s.len; }"#;

    #[test]
    fn slow_operations_are_stopped_by_the_time_limit() {
        let engine = sandboxed_engine(Limits {
            max_operations: 0,
            ..Limits::default()
        });
        let err = script(&engine, SLOW_SCRIPT)
            .eval(&engine, &mut Scope::new())
            .unwrap_err();
        assert!(err.limit, "{err}");
        assert!(err.message.contains("time limit"), "{}", err.message);
    }

    #[test]
    fn a_turn_budget_is_shared_by_its_scripts_and_restored_after() {
        let engine = sandboxed_engine(Limits {
            max_operations: 0,
            ..Limits::default()
        });
        let slow = script(&engine, SLOW_SCRIPT);
        let quick = script(&engine, "1 + 1");
        {
            let _budget = turn_budget(Duration::ZERO);
            // Nothing left: even a quick script that reaches the clock is stopped, and
            // one that does not (under CLOCK_EVERY operations) still runs.
            assert!(slow.eval(&engine, &mut Scope::new()).unwrap_err().limit);
            assert_eq!(quick.eval(&engine, &mut Scope::new()).unwrap().as_int().unwrap(), 2);
            assert_eq!(TURN_LEFT.get(), Some(Duration::ZERO));
        }
        assert_eq!(TURN_LEFT.get(), None);
        assert_eq!(CLOCK.get(), Clock::Off);
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
