//! The shape of a turn's scope: which variables every script can read, what each holds,
//! and the fields of the maps kefu builds itself (`now`, `session`).
//!
//! This is the one list of them. `kefu check` reads it to find a misspelt field
//! (`now.weekdy`), a field called like a method (`now.weekday()`) and a condition that can
//! never be true or false (`intent` alone); the engine's scope builder (`engine::scope`)
//! builds exactly this shape, which its tests check value by value, and docs/language.md
//! names every field (checked below). A variable whose content comes from the caller
//! (`user`, request-context maps) is [`Ty::Open`]: nothing about its fields is known.

/// What a script value is, as far as the rules can know before a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Int,
    /// A decimal number.
    Float,
    /// Text.
    Str,
    /// Text, or `()` when there is none (`intent` when nothing was understood).
    MaybeStr,
    /// A map with exactly these fields, all set by kefu.
    Fields(&'static [Field]),
    /// A map of text values under names the rules choose (`entities`, `slots`); an
    /// entity with named groups is a map of its fields instead (`entities.card.amount`).
    TextMap,
    /// A map of lists under names the rules choose (`all_entities`: every value of each
    /// entity, in order).
    ListMap,
    /// A list of text (`safety.flags`): `"竞品" in safety.flags`.
    TextList,
    /// A list of maps (`session.history`: `#{role, text}` each).
    List,
    /// The conversation's memory: values of any kind under the names `remember` keeps
    /// (`memory.order`), `()` for a name not remembered.
    Memory,
    /// Whatever the caller sends (the `user` profile): its fields are not known.
    Open,
}

impl Ty {
    /// How an editor would name a value of this type.
    pub fn describe(self) -> &'static str {
        match self {
            Ty::Bool => "true or false",
            Ty::Int => "a whole number",
            Ty::Float => "a decimal number",
            Ty::Str | Ty::MaybeStr => "text",
            Ty::Fields(_) | Ty::TextMap | Ty::ListMap | Ty::Open | Ty::Memory => "a map",
            Ty::TextList | Ty::List => "a list",
        }
    }
}

/// One field of a [`Ty::Fields`] map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's name: `now.hour`.
    pub name: &'static str,
    /// What it holds.
    pub ty: Ty,
}

/// One variable every script can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Its name.
    pub name: &'static str,
    /// What it holds.
    pub ty: Ty,
}

const fn field(name: &'static str, ty: Ty) -> Field {
    Field { name, ty }
}

/// The fields of `now`: the request's time in the shop's time zone.
pub const NOW: &[Field] = &[
    field("date", Ty::Str),
    field("time", Ty::Str),
    field("hour", Ty::Int),
    field("weekday", Ty::Int),
    field("timestamp", Ty::Int),
];

/// The fields of `session`: the conversation so far.
pub const SESSION: &[Field] = &[
    field("turns", Ty::Int),
    field("failures", Ty::Int),
    field("last_intent", Ty::MaybeStr),
    field("flow", Ty::MaybeStr),
    field("asked", Ty::Str),
    field("asked_rule", Ty::MaybeStr),
    field("last_message", Ty::MaybeStr),
    field("last_reply", Ty::MaybeStr),
    field("history", Ty::List),
];

/// The fields of `promotions`: the promotions on now and starting within the shop's
/// `upcoming_days` that are meant for the customer, each a map by promotion name.
pub const PROMOTIONS: &[Field] = &[field("on", Ty::Open), field("upcoming", Ty::Open)];

/// The fields of `safety`: what input safety found in the message without refusing it
/// (lists of text).
pub const SAFETY: &[Field] = &[
    field("flags", Ty::TextList),
    field("words", Ty::TextList),
    field("pii", Ty::TextList),
];

/// The variables every script can read, besides request-context maps and flow `set`s
/// (docs/language.md section 6, "What scripts can read").
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "message",
        ty: Ty::Str,
    },
    Variable {
        name: "intent",
        ty: Ty::MaybeStr,
    },
    Variable {
        name: "intents",
        ty: Ty::TextList,
    },
    Variable {
        name: "confidence",
        ty: Ty::Float,
    },
    Variable {
        name: "entities",
        ty: Ty::TextMap,
    },
    Variable {
        name: "all_entities",
        ty: Ty::ListMap,
    },
    Variable {
        name: "emotion",
        ty: Ty::Str,
    },
    Variable {
        name: "reading",
        ty: Ty::Str,
    },
    Variable {
        name: "language",
        ty: Ty::Str,
    },
    Variable {
        name: "slots",
        ty: Ty::TextMap,
    },
    Variable {
        name: "session",
        ty: Ty::Fields(SESSION),
    },
    Variable {
        name: "user",
        ty: Ty::Open,
    },
    Variable {
        name: "now",
        ty: Ty::Fields(NOW),
    },
    Variable {
        name: "promotions",
        ty: Ty::Fields(PROMOTIONS),
    },
    Variable {
        name: "safety",
        ty: Ty::Fields(SAFETY),
    },
    Variable {
        name: "memory",
        ty: Ty::Memory,
    },
];

/// The names of [`VARIABLES`], in order.
pub const NAMES: [&str; VARIABLES.len()] = {
    let mut names = [""; VARIABLES.len()];
    let mut i = 0;
    while i < VARIABLES.len() {
        names[i] = VARIABLES[i].name;
        i += 1;
    }
    names
};

/// The type of a built-in variable.
pub fn variable(name: &str) -> Option<Ty> {
    VARIABLES.iter().find(|v| v.name == name).map(|v| v.ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The editors' guide names every field of the maps kefu builds, as `map.field`.
    #[test]
    fn the_language_guide_names_every_field() {
        let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/language.md")).unwrap();
        for variable in VARIABLES {
            assert!(guide.contains(&format!("`{}`", variable.name)), "{}", variable.name);
            if let Ty::Fields(fields) = variable.ty {
                for f in fields {
                    let name = format!("{}.{}", variable.name, f.name);
                    assert!(guide.contains(&name), "docs/language.md does not mention `{name}`");
                }
            }
        }
    }
}
