//! `kefu mine`'s text: a header with the figures, then one block per cluster in the style
//! of `kefu report` (two-space indents, thousands separated), each ending with the command
//! that accepts it.

use std::fmt::{self, Write as _};

use super::{Action, Cluster, MineReport, MissReason, Nearest};
use crate::data::report::{thousands, write_read};

impl MineReport {
    /// The report as text; `command` is how to run `kefu mine` again on the same log and
    /// period (`kefu mine --log logs --rules rules`), for each cluster's accept line.
    pub fn render(&self, command: &str) -> String {
        let mut out = String::new();
        let _ = self.write(&mut out, command);
        out
    }

    fn write(&self, o: &mut String, command: &str) -> fmt::Result {
        let day = |t: Option<chrono::DateTime<chrono::FixedOffset>>| {
            t.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string())
        };
        writeln!(
            o,
            "{} customer turns, {} to {}; {} not answered well in {} conversations",
            thousands(self.turns),
            day(self.first),
            day(self.last),
            thousands(self.misses),
            thousands(self.conversations)
        )?;
        write_read(o, &self.read)?;
        if let Some(rules) = &self.rules {
            writeln!(o, "nearest intents and FAQ entries in rules {}", short(rules))?;
        }
        let plural = |n: u64, one: &'static str, many: &'static str| if n == 1 { one } else { many };
        let listed = self.clusters.len() as u64;
        writeln!(
            o,
            "{} {}, {} {} in none of them",
            listed,
            plural(listed, "cluster", "clusters"),
            thousands(self.unclustered),
            plural(self.unclustered, "miss", "misses")
        )?;
        for c in &self.clusters {
            writeln!(o)?;
            cluster(o, c, command)?;
        }
        Ok(())
    }
}

impl fmt::Display for MineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("kefu mine"))
    }
}

/// A rules version as the other reports show it: its first twelve characters.
fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

/// The trend of a cluster: ↑ when it grew, ↓ when it shrank, = when flat.
pub fn trend(c: &Cluster) -> &'static str {
    match c.this_week.cmp(&c.last_week) {
        std::cmp::Ordering::Greater => "↑",
        std::cmp::Ordering::Less => "↓",
        std::cmp::Ordering::Equal => "=",
    }
}

/// A reason's name as the log and the JSON spell it.
pub fn reason_name(r: MissReason) -> &'static str {
    match r {
        MissReason::Fallback => "fallback",
        MissReason::Withheld => "withheld",
        MissReason::Handoff => "handoff",
        MissReason::LowIntent => "low_intent",
        MissReason::BadRating => "bad_rating",
    }
}

/// The suggestion in words.
pub fn action_words(a: &Action, messages: usize) -> String {
    let m = if messages == 1 {
        "1 message".to_string()
    } else {
        format!("{messages} messages")
    };
    match a {
        Action::AddExamples { intent } => format!("add {m} as examples of intent {intent}"),
        Action::AddVariants { faq } => format!("add {m} as variants of FAQ entry {faq}"),
        Action::NewFaq { id } => format!("new FAQ entry {id} from {m} (the answer is yours to write)"),
        Action::NewIntent { name } => {
            format!("new intent {name} from {m}, with a rule to answer it (the reply is yours to write)")
        }
    }
}

fn nearest(n: Option<&Nearest>) -> String {
    n.map_or("-".to_string(), |n| format!("{} {:.2}", n.name, n.score))
}

/// A cluster's misses by reason: `fallback 7, handoff 2`.
pub fn reasons(c: &Cluster) -> String {
    let parts: Vec<String> = c
        .reasons
        .iter()
        .map(|(r, n)| format!("{} {n}", reason_name(*r)))
        .collect();
    parts.join(", ")
}

fn cluster(o: &mut String, c: &Cluster, command: &str) -> fmt::Result {
    writeln!(
        o,
        "#{}  {} conversations, {} messages  {} {} this week, {} the week before  ({})",
        c.rank,
        thousands(c.conversations as u64),
        thousands(c.size as u64),
        trend(c),
        c.this_week,
        c.last_week,
        reasons(c)
    )?;
    for e in &c.examples {
        writeln!(o, "    “{e}”")?;
    }
    if c.nearest_intent.is_some() || c.nearest_faq.is_some() {
        writeln!(
            o,
            "  nearest: intent {}; FAQ {}",
            nearest(c.nearest_intent.as_ref()),
            nearest(c.nearest_faq.as_ref())
        )?;
    }
    writeln!(o, "  suggestion: {}", action_words(&c.action, c.messages.len()))?;
    writeln!(o, "  {command} --accept {}", c.rank)
}
