//! Trained classifiers kept and reused: a rebuild that changed no training input does not
//! train again.
//!
//! Training is nearly all of a rule set's build (about a second for the demo shop), and
//! most edits (a reply, a promotion, a flow) do not touch what it reads. So training is
//! split in two: [`Input`] gathers exactly what training reads (each intent's name,
//! examples and keywords in declaration order, the classifier settings, the built-in
//! out-of-scope corpus and its weights), and [`Trained::train`] reads nothing else. The
//! key of a trained model ([`Input::key`]) is a hash of that `Input` (and of
//! [`REVISION`]), so an input cannot be forgotten in the key without being forgotten by
//! training too. What is not an input (the shop's threshold and time zone, entities,
//! where an intent is declared, the memo's capacity) is set on the [`Nlu`](super::Nlu)
//! built around the trained part, every time.
//!
//! Two levels ([`obtain`]):
//! 1. **In memory**, process-wide: the last [`MEMORY_MODELS`] trained models, `Arc`-shared,
//!    so a reload (and a canary or a replay next to the live rules) shares the weights
//!    rather than copying them. Two builds wanting the same model at once train it once.
//! 2. **Persistent**, optional: a [`TrainedCache`] (the version store, for instance) given
//!    the model's bytes ([`encode`]) under its key, so a node that starts, or one of a
//!    fleet, loads rather than trains. What comes back is not trusted ([`decode`]): a
//!    blob that is not exactly a model of this format for this key (a wrong magic,
//!    format, length, checksum or key, parts that do not fit together, a number that is
//!    not finite) is refused and the model is trained as if nothing was stored.
//!
//! A reused model is the trained one, bit for bit: the memory level hands out the very
//! same weights, and the stored form keeps every number's bytes.

use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::classifier::{Example, Model, Params, RawModel, TrainingReport};
use super::features::{Featurizer, fold};
use super::{Intent, KEYWORD_WEIGHT, OOS_CORPUS, Options};

/// The revision of training itself: bump it whenever features, the classifier or the way
/// examples are weighed change, so that models stored by an older kefu are not reused.
/// (The crate version is in the key too; this covers changes between releases.)
pub const REVISION: u32 = 1;

/// How many trained models the process keeps in memory: the live rules, a canary, a draft
/// being edited and one spare.
pub const MEMORY_MODELS: usize = 4;

/// A second, persistent level for trained models (a directory, the version store, Redis),
/// keyed by [`Input::key`]. Implementations keep the bytes as given and return them
/// unchanged; whatever they return is checked before use ([`decode`]), so a store that
/// loses, truncates or mixes up blobs only costs a training. Errors are the store's to
/// log: `get` answers `None`, `put` gives up.
pub trait TrainedCache: Send + Sync {
    /// The bytes stored under `key`, if any.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Stores `bytes` under `key`.
    fn put(&self, key: &str, bytes: &[u8]);
}

/// Where a rule set's trained classifier came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Trained by this build.
    Trained,
    /// Reused from this process's memory.
    Memory,
    /// Loaded from the persistent [`TrainedCache`].
    Stored,
}

impl Origin {
    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Trained => "trained",
            Origin::Memory => "memory",
            Origin::Stored => "stored",
        }
    }
}

/// One intent as training reads it (not where it is declared).
#[derive(Debug, Serialize)]
struct IntentInput<'a> {
    name: &'a str,
    examples: &'a [String],
    keywords: &'a [String],
}

/// Everything training reads, and nothing else ([`Trained::train`] reads only this).
#[derive(Debug, Serialize)]
pub struct Input<'a> {
    intents: Vec<IntentInput<'a>>,
    params: &'a Params,
    /// The built-in out-of-scope corpus, when it is trained on.
    oos_corpus: Option<&'static str>,
    oos_weight: f64,
    oos_calibration_weight: f64,
}

impl<'a> Input<'a> {
    /// What training reads of these intents and options.
    pub fn new(intents: &'a [Intent], options: &'a Options) -> Input<'a> {
        Input {
            intents: intents
                .iter()
                .map(|i| IntentInput {
                    name: &i.name,
                    examples: &i.examples,
                    keywords: &i.keywords,
                })
                .collect(),
            params: &options.params,
            oos_corpus: (options.builtin_oos && !intents.is_empty()).then_some(OOS_CORPUS),
            oos_weight: options.oos_weight,
            oos_calibration_weight: options.oos_calibration_weight,
        }
    }

    /// The key of the model these inputs train: SHA-256 (hex) over [`REVISION`], the crate
    /// version, the architecture and the inputs (serialized as JSON, where every number
    /// is written so that it reads back exactly).
    pub fn key(&self) -> String {
        let mut hasher = HashWriter(Sha256::new());
        hasher.0.update(format!(
            "kefu-nlu {REVISION} {} {}\0",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH
        ));
        serde_json::to_writer(&mut hasher, self).expect("strings and numbers serialize");
        hasher.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Feeds what serde_json writes into the hash, without building the text.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The trained part of an [`Nlu`](super::Nlu): the featurizer (with the keywords'
/// automaton) and the calibrated classifier. Shared between rule sets by `Arc`.
#[derive(Clone, Debug)]
pub struct Trained {
    pub(super) featurizer: Featurizer,
    pub(super) model: Model,
}

impl Trained {
    /// Trains on `input`: deterministic, the same input gives bit-identical weights.
    pub fn train(input: &Input<'_>) -> Trained {
        let keywords: Vec<Vec<String>> = input.intents.iter().map(|i| i.keywords.to_vec()).collect();
        let featurizer = Featurizer::new(&keywords);
        let oos = input.intents.len();

        let mut examples = Vec::new();
        for (label, intent) in input.intents.iter().enumerate() {
            let mut seen = std::collections::BTreeSet::new();
            for text in intent.examples {
                if seen.insert(fold(text.trim())) {
                    examples.push(Example {
                        features: featurizer.features(text),
                        label,
                        weight: 1.0,
                        calibration_weight: 1.0,
                        holdout: true,
                    });
                }
            }
            for k in intent.keywords {
                examples.push(Example {
                    features: featurizer.features(k),
                    label,
                    weight: KEYWORD_WEIGHT,
                    calibration_weight: KEYWORD_WEIGHT,
                    holdout: false,
                });
            }
        }
        if let Some(corpus) = input.oos_corpus {
            let per_intent = examples.iter().filter(|e| e.holdout).count() as f64 / input.intents.len().max(1) as f64;
            let first_oos = examples.len();
            let shop_words: Vec<String> = keywords.iter().flatten().map(|k| fold(k.trim())).collect();
            for line in corpus.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let folded = fold(line);
                if shop_words.iter().any(|k| !k.is_empty() && folded.contains(k.as_str())) {
                    continue;
                }
                examples.push(Example {
                    features: featurizer.features(line),
                    label: oos,
                    weight: 1.0,
                    calibration_weight: 1.0,
                    holdout: true,
                });
            }
            let lines = (examples.len() - first_oos) as f64;
            for e in &mut examples[first_oos..] {
                e.weight = input.oos_weight * per_intent.max(1.0) / lines;
                e.calibration_weight = input.oos_calibration_weight * per_intent.max(1.0) / lines;
            }
        }
        let model = Model::train(&examples, input.intents.len() + 1, input.params);
        Trained { featurizer, model }
    }

    /// The trained classifier.
    pub fn model(&self) -> &Model {
        &self.model
    }
}

/// The trained models kept in memory, most recently used last. Each slot is filled once;
/// a build that finds the slot of its key being filled waits for it rather than training
/// the same model again.
type Slot = Arc<OnceLock<Arc<Trained>>>;

fn memory() -> &'static Mutex<Vec<(String, Slot)>> {
    static MODELS: OnceLock<Mutex<Vec<(String, Slot)>>> = OnceLock::new();
    MODELS.get_or_init(|| Mutex::new(Vec::with_capacity(MEMORY_MODELS + 1)))
}

/// The model `input` trains: from memory, else from `store`, else trained (and then
/// given to `store`). Never fails: a store's bad answer is logged and trained over.
pub fn obtain(input: &Input<'_>, store: Option<&dyn TrainedCache>) -> (Arc<Trained>, Origin) {
    let key = input.key();
    let slot = {
        let mut models = memory().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = match models.iter().position(|(k, _)| *k == key) {
            Some(at) => models.remove(at).1,
            None => Slot::default(),
        };
        models.push((key.clone(), Arc::clone(&slot)));
        if models.len() > MEMORY_MODELS {
            models.remove(0);
        }
        slot
    };
    let mut origin = Origin::Memory;
    let trained = slot.get_or_init(|| {
        let (trained, from) = load_or_train(&key, input, store);
        origin = from;
        Arc::new(trained)
    });
    (Arc::clone(trained), origin)
}

/// Forgets every model kept in memory (benchmarks of a cold build; tests).
pub fn clear_memory() {
    memory()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
}

fn load_or_train(key: &str, input: &Input<'_>, store: Option<&dyn TrainedCache>) -> (Trained, Origin) {
    let Some(store) = store else {
        return (Trained::train(input), Origin::Trained);
    };
    if let Some(bytes) = store.get(key) {
        match decode(&bytes, key, input) {
            Ok(trained) => return (trained, Origin::Stored),
            Err(why) => tracing::warn!(key, why, "stored classifier refused; training instead"),
        }
    }
    let trained = Trained::train(input);
    store.put(key, &encode(&trained, key));
    (trained, Origin::Trained)
}

/// The first bytes of a stored model.
const MAGIC: &[u8; 8] = b"kefu-nlu";
/// The layout of a stored model; bump when [`Stored`] changes.
const FORMAT: u32 = 1;
/// Magic, format, payload length, CRC-32 of the payload.
const HEADER: usize = 8 + 4 + 8 + 4;

/// A stored model: CBOR, its arrays as little-endian byte strings (a copy to read, not a
/// number at a time).
#[derive(Serialize, Deserialize)]
struct Stored {
    /// The key it was stored under: a blob filed under another key is refused.
    key: String,
    classes: u64,
    buckets: Bytes,
    idf: Bytes,
    unseen_idf: f64,
    weights: Bytes,
    bias: Bytes,
    inv_temperature: f64,
    oos_shift: f64,
    report: TrainingReport,
}

/// A byte string in CBOR (serde writes a `Vec<u8>` as an array of numbers).
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

/// Little-endian bytes of numbers, and back (`None` when the length is not a multiple).
macro_rules! le {
    ($to:ident, $from:ident, $t:ty) => {
        fn $to(values: &[$t]) -> Bytes {
            Bytes(values.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        fn $from(bytes: &[u8]) -> Option<Vec<$t>> {
            const N: usize = std::mem::size_of::<$t>();
            let chunks = bytes.chunks_exact(N);
            if !chunks.remainder().is_empty() {
                return None;
            }
            Some(
                chunks
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("N bytes")))
                    .collect(),
            )
        }
    };
}
le!(u32_bytes, bytes_u32, u32);
le!(f32_bytes, bytes_f32, f32);
le!(f64_bytes, bytes_f64, f64);

/// The bytes a [`TrainedCache`] keeps for a trained model: a header (magic, format, length,
/// CRC-32) and the model in CBOR. The featurizer is not stored: it is the keywords'
/// automaton, rebuilt from the input.
pub fn encode(trained: &Trained, key: &str) -> Vec<u8> {
    let raw = trained.model.to_raw();
    let stored = Stored {
        key: key.to_string(),
        classes: raw.classes as u64,
        buckets: u32_bytes(&raw.buckets),
        idf: f64_bytes(&raw.idf),
        unseen_idf: raw.unseen_idf,
        weights: f32_bytes(&raw.weights),
        bias: f32_bytes(&raw.bias),
        inv_temperature: raw.inv_temperature,
        oos_shift: raw.oos_shift,
        report: raw.report,
    };
    let mut payload = Vec::new();
    ciborium::into_writer(&stored, &mut payload).expect("writing to memory does not fail");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The trained model in `bytes`, if they are exactly one [`encode`] wrote under `key` for
/// `input`; otherwise why not. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8], key: &str, input: &Input<'_>) -> Result<Trained, String> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err("not a stored classifier".into());
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if format != FORMAT {
        return Err(format!("format {format}, this kefu reads {FORMAT}"));
    }
    let length = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != length {
        return Err(format!("{} bytes where {length} were stored", payload.len()));
    }
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    let stored: Stored = ciborium::from_reader(payload).map_err(|e| format!("unreadable: {e}"))?;
    if stored.key != key {
        return Err("stored under another key".into());
    }
    let classes = input.intents.len() + 1;
    if stored.classes != classes as u64 {
        return Err(format!("{} classes where the rules have {classes}", stored.classes));
    }
    let model = Model::from_raw(RawModel {
        buckets: bytes_u32(&stored.buckets.0).ok_or("buckets cut short")?,
        idf: bytes_f64(&stored.idf.0).ok_or("idf cut short")?,
        unseen_idf: stored.unseen_idf,
        classes,
        weights: bytes_f32(&stored.weights.0).ok_or("weights cut short")?,
        bias: bytes_f32(&stored.bias.0).ok_or("biases cut short")?,
        inv_temperature: stored.inv_temperature,
        oos_shift: stored.oos_shift,
        report: stored.report,
    })?;
    let keywords: Vec<Vec<String>> = input.intents.iter().map(|i| i.keywords.to_vec()).collect();
    Ok(Trained {
        featurizer: Featurizer::new(&keywords),
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Span;

    fn intents() -> Vec<Intent> {
        let intent = |name: &str, examples: &[&str], keywords: &[&str]| Intent {
            name: name.into(),
            examples: examples.iter().map(|s| s.to_string()).collect(),
            keywords: keywords.iter().map(|s| s.to_string()).collect(),
            span: Span::new(0, 0, 0),
        };
        vec![
            intent("物流", &["什么时候发货", "几天发货", "发货要多久"], &["发货"]),
            intent("售后", &["我想退货", "怎么退货", "能退吗"], &["退货"]),
        ]
    }

    fn options() -> Options {
        Options {
            builtin_oos: false,
            ..Options::default()
        }
    }

    /// `bytes` with the header's length and checksum made right for its payload, so that
    /// only the checks after the checksum stand between it and a model.
    fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
        let payload_len = (bytes.len() - HEADER) as u64;
        let crc = crc32fast::hash(&bytes[HEADER..]);
        bytes[12..20].copy_from_slice(&payload_len.to_le_bytes());
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// A blob whose payload is `stored`, under a right header.
    fn blob(stored: &Stored) -> Vec<u8> {
        let mut bytes = vec![0; HEADER];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        ciborium::into_writer(stored, &mut bytes).unwrap();
        resealed(bytes)
    }

    #[test]
    fn parts_that_do_not_fit_together_are_refused() {
        let intents = intents();
        let options = options();
        let input = Input::new(&intents, &options);
        let key = input.key();
        let trained = Trained::train(&input);
        let raw = trained.model.to_raw();
        let good = || Stored {
            key: key.clone(),
            classes: raw.classes as u64,
            buckets: u32_bytes(&raw.buckets),
            idf: f64_bytes(&raw.idf),
            unseen_idf: raw.unseen_idf,
            weights: f32_bytes(&raw.weights),
            bias: f32_bytes(&raw.bias),
            inv_temperature: raw.inv_temperature,
            oos_shift: raw.oos_shift,
            report: raw.report.clone(),
        };
        assert!(decode(&blob(&good()), &key, &input).is_ok());
        let mut nan = raw.weights.clone();
        nan[0] = f32::NAN;
        let mut twice = raw.buckets.clone();
        twice[1] = twice[0];
        let mut out_of_range = raw.buckets.clone();
        out_of_range[0] = 1 << 20;
        let cases: Vec<(&str, Stored)> = vec![
            (
                "one weight short",
                Stored {
                    weights: f32_bytes(&raw.weights[1..]),
                    ..good()
                },
            ),
            (
                "a ragged weight",
                Stored {
                    weights: Bytes(vec![0; 4 * raw.weights.len() + 2]),
                    ..good()
                },
            ),
            (
                "a weight not a number",
                Stored {
                    weights: f32_bytes(&nan),
                    ..good()
                },
            ),
            (
                "one bias short",
                Stored {
                    bias: f32_bytes(&raw.bias[1..]),
                    ..good()
                },
            ),
            (
                "one idf short",
                Stored {
                    idf: f64_bytes(&raw.idf[1..]),
                    ..good()
                },
            ),
            (
                "a bucket twice",
                Stored {
                    buckets: u32_bytes(&twice),
                    ..good()
                },
            ),
            (
                "a bucket out of range",
                Stored {
                    buckets: u32_bytes(&out_of_range),
                    ..good()
                },
            ),
            (
                "another class count",
                Stored {
                    classes: raw.classes as u64 + 1,
                    ..good()
                },
            ),
            (
                "a temperature of zero",
                Stored {
                    inv_temperature: 0.0,
                    ..good()
                },
            ),
            (
                "an infinite idf",
                Stored {
                    unseen_idf: f64::INFINITY,
                    ..good()
                },
            ),
            (
                "another key",
                Stored {
                    key: "0".repeat(64),
                    ..good()
                },
            ),
        ];
        for (what, stored) in cases {
            assert!(
                decode(&blob(&stored), &key, &input).is_err(),
                "{what} was read as a model"
            );
        }
    }

    #[test]
    fn no_damage_to_a_blob_makes_reading_it_panic() {
        let intents = intents();
        let options = options();
        let input = Input::new(&intents, &options);
        let key = input.key();
        let good = encode(&Trained::train(&input), &key);
        // Every byte of the payload changed in turn (the checksum made right again),
        // and the blob cut at every length: errors, or a model that fits together.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for at in HEADER..good.len() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = good.clone();
            bytes[at] ^= (state as u8) | 1;
            if let Ok(trained) = decode(&resealed(bytes), &key, &input) {
                let _ = trained.model.predict(&trained.featurizer.features("退货"));
            }
        }
        for len in HEADER..good.len() {
            let _ = decode(&resealed(good[..len].to_vec()), &key, &input);
        }
    }

    #[test]
    fn a_stored_model_reads_back_bit_for_bit() {
        let intents = intents();
        let options = options();
        let input = Input::new(&intents, &options);
        let trained = Trained::train(&input);
        let back = decode(&encode(&trained, &input.key()), &input.key(), &input).unwrap();
        assert_eq!(back.model.to_raw(), trained.model.to_raw());
    }
}
