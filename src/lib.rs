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

pub mod batch;
pub mod conversation;
pub mod data;
pub mod diag;
pub mod dialogue;
pub mod dsl;
pub mod engine;
pub mod jobs;
pub mod kb;
pub mod llm;
pub mod nlu;
pub mod reload;
pub mod ruleset;
pub mod safety;
pub mod script;
pub mod server;
pub mod store;
pub mod tickets;

pub use engine::{Engine, TurnRequest, TurnResponse};
pub use ruleset::RuleSet;
