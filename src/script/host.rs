//! Host functions: what a rule set's scripts can call besides its sources
//! ([`HOST_FUNCTIONS`](super::HOST_FUNCTIONS)), registered on its engine by [`register`].
//! `create_ticket` acts on the world, `recommend` reads the knowledge base, and `offer`
//! reads the promotions at the turn's time.
//!
//! Compiled scripts live in the shared, immutable `RuleSet`, but a ticket belongs to one
//! session on one engine. Rhai evaluation is synchronous on the calling thread, so the
//! turn installs its [`Host`] in a thread-local for the duration of its script calls
//! ([`with_host`]) and the registered functions find it there. Outside a turn (e.g. in
//! `kefu check`) there is no host and actions return `()`.

use std::cell::RefCell;
use std::sync::Arc;

use chrono::DateTime;
use chrono_tz::Tz;

use super::Template;
use super::sources::key_string;
use crate::kb::{self, KnowledgeBase};

/// What scripts can ask the running turn to do.
pub trait Host: Send + Sync {
    /// Raises a ticket and returns it as a script map (with at least `id`).
    fn create_ticket(&self, kind: &str, reference: &str) -> rhai::Dynamic;
    /// Notes something for the turn's trace (a failed source lookup, say).
    fn note(&self, message: String);
    /// The turn's time in milliseconds since the epoch (a replayed conversation's `as_of`,
    /// not the wall clock), for functions that depend on the date such as `offer`.
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

thread_local! {
    static HOST: RefCell<Option<Arc<dyn Host>>> = const { RefCell::new(None) };
}

/// Runs `f` with `host` installed for this thread's script calls.
pub fn with_host<R>(host: Arc<dyn Host>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<dyn Host>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            HOST.with(|h| *h.borrow_mut() = self.0.take());
        }
    }
    let previous = HOST.with(|h| h.borrow_mut().replace(host));
    let _restore = Restore(previous);
    f()
}

/// The host of the turn running on this thread, if any.
pub fn current() -> Option<Arc<dyn Host>> {
    HOST.with(|h| h.borrow().clone())
}

/// Notes something in the current turn's trace, if a turn is running.
pub fn note(message: impl FnOnce() -> String) {
    if let Some(host) = current() {
        host.note(message());
    }
}

/// A promotion as `offer(name)` sees it. Lowering copies these from the rule set's
/// promotions; scripts sit below the rule set and do not know its types.
#[derive(Clone, Debug)]
pub struct Offer {
    /// The promotion's name, as `offer` is called with it.
    pub name: String,
    /// When it starts, in the shop's zone.
    pub from: DateTime<Tz>,
    /// When it ends (inclusive).
    pub to: DateTime<Tz>,
    /// Its `say` text.
    pub say: Template,
}

impl Offer {
    /// Whether `at` falls inside the window (as `Promotion::is_on` decides it).
    pub fn is_on<T: chrono::TimeZone>(&self, at: &DateTime<T>) -> bool {
        let at = at.with_timezone(&self.from.timezone());
        self.from <= at && at <= self.to
    }
}

/// Registers the host functions on a rule set's engine. `create_ticket(kind, reference)`
/// asks the turn's [`Host`] for a ticket. `recommend(strategy, n)` and
/// `recommend(strategy, n, categories)` give `#{items, names, text}` (products as maps,
/// their names joined with 、, names with prices); `offer(promotion)` gives the
/// promotion's `say` text while it is on, else `""`. Which customer gets which strategy or
/// offer is the rules' business (a rule's `when`); these only compute.
pub fn register(engine: &mut rhai::Engine, kb: &Arc<KnowledgeBase>, offers: Vec<Offer>) {
    engine.register_fn(
        "create_ticket",
        |kind: &str, reference: rhai::Dynamic| -> rhai::Dynamic {
            match current() {
                Some(host) => host.create_ticket(kind, &key_string(&reference)),
                None => rhai::Dynamic::UNIT,
            }
        },
    );
    register_recommend(engine, kb);
    register_offer(engine, offers);
}

/// Registers `recommend`, in its two- and three-argument forms, over the knowledge base.
fn register_recommend(engine: &mut rhai::Engine, kb: &Arc<KnowledgeBase>) {
    let items: Arc<Vec<rhai::Dynamic>> = Arc::new(
        kb.products
            .iter()
            .map(|p| rhai::serde::to_dynamic(p).unwrap_or(rhai::Dynamic::UNIT))
            .collect(),
    );
    let recommend = {
        let kb = Arc::clone(kb);
        Arc::new(move |strategy: &str, n: i64, categories: &[String]| -> rhai::Dynamic {
            let picked = match kb::Strategy::parse(strategy) {
                Some(s) => kb.recommend(s, n.max(0) as usize, categories),
                None => {
                    note(|| format!("recommend: unknown strategy `{strategy}`"));
                    Vec::new()
                }
            };
            note(|| {
                let names: Vec<&str> = picked.iter().map(|&i| kb.products[i].id.as_str()).collect();
                format!("recommend {strategy}: {}", names.join(", "))
            });
            let products: Vec<&kb::Product> = picked.iter().map(|&i| &kb.products[i]).collect();
            let mut m = rhai::Map::new();
            m.insert("strategy".into(), strategy.to_string().into());
            m.insert(
                "items".into(),
                picked.iter().map(|&i| items[i].clone()).collect::<rhai::Array>().into(),
            );
            m.insert(
                "names".into(),
                products
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join("、")
                    .into(),
            );
            m.insert(
                "text".into(),
                products
                    .iter()
                    .map(|p| format!("{}（{}元）", p.name, kb::price(p.price)))
                    .collect::<Vec<_>>()
                    .join("、")
                    .into(),
            );
            // Not `m.into()`: rhai's generic map conversion rebuilds the map.
            rhai::Dynamic::from_map(m)
        })
    };
    let two = Arc::clone(&recommend);
    engine.register_fn("recommend", move |strategy: &str, n: i64| two(strategy, n, &[]));
    engine.register_fn("recommend", move |strategy: &str, n: i64, categories: rhai::Dynamic| {
        // A profile's `browsed` may be a list of categories, one category, or absent.
        let categories: Vec<String> = if let Some(list) = categories.read_lock::<rhai::Array>() {
            list.iter().map(|c| c.to_string()).collect()
        } else if categories.is_unit() {
            Vec::new()
        } else {
            vec![categories.to_string()]
        };
        recommend(strategy, n, &categories)
    });
}

/// Registers `offer`, which quotes a promotion's `say` text at the turn's time.
fn register_offer(engine: &mut rhai::Engine, offers: Vec<Offer>) {
    let offers = Arc::new(offers);
    engine.register_fn(
        "offer",
        move |ctx: rhai::NativeCallContext, name: &str| -> rhai::Dynamic {
            let Some(host) = current() else {
                return rhai::Dynamic::UNIT;
            };
            let Some(promo) = offers.iter().find(|p| p.name == name) else {
                host.note(format!("offer {name}: no such promotion"));
                return String::new().into();
            };
            let now = chrono::DateTime::from_timestamp_millis(host.now_ms()).unwrap_or_default();
            if !promo.is_on(&now) {
                host.note(format!("offer {name}: not on"));
                return String::new().into();
            }
            host.note(format!("offer {name}"));
            // The `say` text is rendered on its own: turn variables are not visible from
            // here, and a hole that needs one renders empty (docs/language.md says so).
            promo
                .say
                .render_lenient(ctx.engine(), &mut rhai::Scope::new(), &mut |_| {})
                .into()
        },
    );
}
