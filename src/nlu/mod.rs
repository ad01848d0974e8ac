//! Understanding a message: intent with a calibrated confidence, entities, emotion.
//!
//! These types are the contract between understanding and the turn engine: the engine
//! asks for an [`Understanding`] of each (already safety-filtered) message and decides
//! from it alone. How the classifier, entity recognisers and emotion lexicon work is
//! their own modules' business.

use serde::{Deserialize, Serialize};

/// What kefu understood of one message.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Understanding {
    /// The most likely declared intent (a leaf or inner path such as `售后.退货`), or
    /// `None` when the message is out of scope for the shop.
    pub intent: Option<String>,
    /// The calibrated probability of `intent` (0 when `None`).
    pub confidence: f64,
    /// Probability of each intent level the best intent belongs to, top level first:
    /// `[("售后", 0.95), ("售后.退货", 0.71)]`. A rule on `售后.*` may answer on the first
    /// entry even when the leaf is unsure.
    pub levels: Vec<(String, f64)>,
    /// The best few intents with their probabilities, most likely first.
    pub ranked: Vec<(String, f64)>,
    /// Entities found in the message, in order of position.
    pub entities: Vec<EntityMatch>,
    /// How the customer feels.
    pub emotion: Emotion,
}

impl Understanding {
    /// The confidence that the message is about `path` (an intent or an intent level).
    pub fn confidence_in(&self, path: &str) -> f64 {
        self.levels.iter().find(|(p, _)| p == path).map_or(0.0, |(_, c)| *c)
    }

    /// The first value of an entity, canonical form.
    pub fn entity(&self, name: &str) -> Option<&str> {
        self.entities.iter().find(|e| e.name == name).map(|e| e.value.as_str())
    }
}

/// An entity found in a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntityMatch {
    /// The entity's name (`order_id`, `color`, ...).
    pub name: String,
    /// Its canonical value (`红` → `红色`).
    pub value: String,
    /// The text as written in the message.
    pub text: String,
    /// Byte range of `text` in the message.
    pub start: usize,
    /// End of that range.
    pub end: usize,
}

/// The customer's mood, as the rule language names it (`emotion == "angry"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Emotion {
    /// Upset, complaining.
    Angry,
    /// Unsure, weighing it up.
    Hesitant,
    /// Pleased.
    Satisfied,
    /// None of these.
    #[default]
    Neutral,
}

impl Emotion {
    /// The name scripts compare against.
    pub fn as_str(self) -> &'static str {
        match self {
            Emotion::Angry => "angry",
            Emotion::Hesitant => "hesitant",
            Emotion::Satisfied => "satisfied",
            Emotion::Neutral => "neutral",
        }
    }
}

/// What understanding may know of the conversation so far (emotion rises with repeated
/// complaints; a bare "这件" needs the product talked about last).
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Emotions of the customer's previous messages, oldest first (bounded by the caller).
    pub recent_emotions: Vec<Emotion>,
}
