//! The answer cache: FAQ answers and judged model answers, reused for the same question.
//!
//! The seed's "对高频问题预生成答复": a model answer costs hundreds of milliseconds, and
//! the same few questions ("什么时候发货") arrive all day. An entry is keyed by the rules
//! version, the customer's segment, the turn's language (an English answer is no answer
//! to the same words in a Chinese conversation, "ok" say), the message in [`cache_form`]
//! (folded, punctuation and spaces gone) and what else the answer was made from:
//!
//! - an FAQ answer: the product in focus (an entry may be about one product);
//! - a model answer: a fingerprint of everything the prompt held besides the message
//!   (style, promotions on for this customer, policies, passages, slots and the recent
//!   history). In practice that means a model answer is reused for a question that opens
//!   a conversation, or that follows the same exchange; a follow-up ("那黑色呢") whose
//!   meaning depends on what came before never gets another conversation's answer.
//!
//! Only answers that passed their check are stored: an FAQ entry above the threshold, a
//! model answer the judge accepted and the output guard let through. A hit still goes
//! through output safety like every other reply. The rules version in the key makes a
//! reload a miss at once, and [`Engine::swap_rules`](super::Engine::swap_rules) also
//! empties the cache so the old entries do not hold memory until their TTL. The cache is
//! bounded (moka, TinyLFU admission) with a time to live, so a stale model answer does not
//! outlive the day's promotions for long.
//!
//! [`cache_form`]: crate::kb::text::cache_form

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

/// What an entry answers for, besides the message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// An FAQ answer, with the product in focus.
    Faq {
        /// The product's id, if one was in focus.
        product: Option<String>,
    },
    /// A model answer, with a fingerprint of the rest of its prompt.
    Llm {
        /// See [`fingerprint`].
        context: u64,
    },
}

/// The cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub version: String,
    pub segment: String,
    pub language: crate::nlu::Lang,
    pub message: String,
    pub scope: Scope,
}

/// A cached answer.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The reply as it was first given, before output safety (which runs again on a hit).
    pub reply: String,
    /// Where it first came from: `faq <id>` or the model's name.
    pub origin: String,
}

/// Turns answered from the cache (hits) and turns that looked and found nothing (misses)
/// since the engine started, and entries held now. A turn looks when it gets past rules,
/// promotions and flow starts to the FAQ step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found an answer.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries held (moka's estimate).
    pub entries: u64,
}

/// Told about every lookup: `true` for a hit. The service counts them in `/metrics`.
pub type CacheObserver = Arc<dyn Fn(bool) + Send + Sync>;

/// The cache with its counters.
pub(crate) struct AnswerCache {
    /// `None` when the capacity is 0: caching is off.
    cache: Option<Cache<Key, Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
    observer: Option<CacheObserver>,
}

impl AnswerCache {
    /// A cache of at most `capacity` entries, each kept at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        AnswerCache {
            cache: (capacity > 0).then(|| Cache::builder().max_capacity(capacity).time_to_live(ttl).build()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            observer: None,
        }
    }

    pub fn set_observer(&mut self, observer: CacheObserver) {
        self.observer = Some(observer);
    }

    pub fn take_observer(&mut self) -> Option<CacheObserver> {
        self.observer.take()
    }

    /// The entry for `key`. Lookups are counted per turn by [`AnswerCache::record`], not
    /// here: a turn that reaches the model looks up twice (as an FAQ answer, then as a
    /// model answer) and counts once.
    pub fn get(&self, key: &Key) -> Option<Entry> {
        self.cache.as_ref()?.get(key)
    }

    /// Counts a turn that looked in the cache: `hit` when it was answered from it.
    pub fn record(&self, hit: bool) {
        if self.cache.is_none() {
            return;
        }
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = &self.observer {
            observer(hit);
        }
    }

    pub fn insert(&self, key: Key, entry: Entry) {
        if let Some(cache) = &self.cache {
            cache.insert(key, entry);
        }
    }

    /// Drops every entry (a new rule set is serving).
    pub fn clear(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.cache.as_ref().map_or(0, |c| {
                // moka counts lazily; run its pending maintenance so tests and the admin
                // view see the inserts that just happened.
                c.run_pending_tasks();
                c.entry_count()
            }),
        }
    }
}

/// A fingerprint of the parts of a prompt other than the message, in order.
pub(crate) fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    // `DefaultHasher::new` uses fixed keys: stable for the life of the process, which is
    // as long as the cache lives.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for part in parts {
        part.hash(&mut h);
    }
    h.finish()
}
