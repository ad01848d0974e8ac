//! kefu: an e-commerce customer-service engine, Chinese first.
//!
//! Business staff describe the shop in `.kefu` rule files (intents, rules, promotions,
//! policies, multi-turn flows, styles, a fallback chain, safety lists). [`dsl::load_dir`]
//! compiles a rules directory into an immutable [`RuleSet`], reporting every mistake with
//! its file, line and column; the runtime only ever sees a `RuleSet`.
//!
//! ```
//! let compiled = kefu::dsl::load_dir(std::path::Path::new("rules"));
//! assert!(!compiled.report.has_errors(), "{}", compiled.report);
//! let rules = compiled.rules.expect("the demo shop compiles");
//! assert!(rules.rule("七天无理由").is_some());
//! ```
//!
//! ARCHITECTURE.md has the code map and the invariants.

// In the order of the spine (ARCHITECTURE.md): the rules, the rule set built from them,
// the turn that reads it, the service around the turn.

// The rules: diagnostics, and the compiler that lowers rule files into a rule set.
pub mod diag;
pub mod dsl;

// The rule set and its parts.
pub mod kb;
pub mod nlu;
pub mod ruleset;
pub mod safety;
pub mod script;

// The turn: the engine, the conversation state it alone writes, the model, tickets.
pub mod channels;
pub mod conversation;
pub mod dialogue;
pub mod engine;
pub mod jobs;
pub mod llm;
pub mod store;
pub mod tickets;

// The service: HTTP, hot reload, the data loop over what it logs, and the version store
// of published rule sets.
pub mod batch;
pub mod data;
// Customers' photos: checked, stripped and stored (imports only `dialogue`).
pub mod media;
pub mod reload;
pub mod server;
pub mod versions;

pub use engine::{Engine, TurnRequest, TurnResponse};
pub use ruleset::RuleSet;
