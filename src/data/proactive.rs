//! The report's proactive section: per trigger (the `proactive` item), the messages sent,
//! the triggers refused by each guard rail, the messages replied to and the conversions
//! that followed them, from the log's `event` and `proactive` records and the customers'
//! turns.
//!
//! Definitions (`kefu report` says the same):
//! - **sent**: `proactive` records; **refused**: `event` records with outcome `refused`,
//!   by reason (`limit`, `quiet_hours`, `held`, `flow_running`, `opted_out`).
//! - **replied**: messages after which the customer wrote in the same conversation
//!   within [`REPLY_WINDOW_HOURS`] hours (a customer turn, not a platform event); each
//!   message counts once.
//! - **conversions**: events of type `order_paid`, `checkout_completed` or `conversion`
//!   in the same conversation within [`CONVERSION_WINDOW_DAYS`] days after a message
//!   sent, each credited to the trigger of the last message sent before it.
//! - rates are over the messages sent.
//!
//! The log is read in its order (files by name, lines as written), which is the order
//! things happened on one node; a conversation's messages are kept per conversation, the
//! last [`KEPT_PER_SESSION`] only.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use super::record::{EventOutcome, EventRecord, ProactiveRecord, TurnRecord};

/// Hours after a proactive message in which the customer's writing counts as a reply.
pub const REPLY_WINDOW_HOURS: i64 = 24;
/// Days after a proactive message in which a conversion event is credited to it.
pub const CONVERSION_WINDOW_DAYS: i64 = 7;
/// The event types that count as conversions.
pub const CONVERSION_TYPES: [&str; 3] = ["order_paid", "checkout_completed", "conversion"];
/// The most proactive messages remembered per conversation for replies and conversions.
pub const KEPT_PER_SESSION: usize = 32;
/// The most triggers listed one by one; more count together as `other`.
pub const MAX_TRIGGERS: usize = 256;

/// One trigger's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TriggerFigures {
    /// The `proactive` item.
    pub trigger: String,
    /// Messages sent.
    pub sent: u64,
    /// Triggers refused, all reasons.
    pub refused: u64,
    /// Triggers refused by reason, most first.
    pub refused_by: Vec<Refused>,
    /// Messages the customer replied to.
    pub replied: u64,
    /// `replied` over `sent` (`None` when nothing was sent).
    pub reply_rate: Option<f64>,
    /// Conversion events credited to its messages.
    pub conversions: u64,
    /// `conversions` over `sent`.
    pub conversion_rate: Option<f64>,
}

/// The refusals of one reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refused {
    /// The guard rail (`limit`, `quiet_hours`, `held`, `flow_running`, `opted_out`).
    pub reason: String,
    /// How many times it refused.
    pub count: u64,
}

/// A message sent, remembered for its reply and conversions.
struct Sent {
    at: DateTime<FixedOffset>,
    trigger: usize,
    replied: bool,
}

/// Running totals.
#[derive(Default)]
pub(super) struct ProactiveTally {
    triggers: Vec<Tally>,
    /// The messages of each conversation, oldest first.
    sessions: HashMap<String, Vec<Sent>>,
}

#[derive(Default)]
struct Tally {
    name: String,
    sent: u64,
    refused: BTreeMap<String, u64>,
    replied: u64,
    conversions: u64,
}

impl ProactiveTally {
    fn trigger(&mut self, name: &str) -> usize {
        if let Some(i) = self.triggers.iter().position(|t| t.name == name) {
            return i;
        }
        let name = if self.triggers.len() < MAX_TRIGGERS {
            name
        } else {
            "other"
        };
        if let Some(i) = self.triggers.iter().position(|t| t.name == name) {
            return i;
        }
        self.triggers.push(Tally {
            name: name.to_string(),
            ..Tally::default()
        });
        self.triggers.len() - 1
    }

    /// A proactive message sent.
    pub(super) fn sent(&mut self, record: &ProactiveRecord) {
        let trigger = self.trigger(&record.trigger);
        self.triggers[trigger].sent += 1;
        let kept = self.sessions.entry(record.session.clone()).or_default();
        kept.push(Sent {
            at: record.ts,
            trigger,
            replied: false,
        });
        if kept.len() > KEPT_PER_SESSION {
            kept.remove(0);
        }
    }

    /// An event: a refusal counted, a conversion credited.
    pub(super) fn event(&mut self, record: &EventRecord) {
        if record.outcome == EventOutcome::Refused
            && let (Some(trigger), Some(reason)) = (&record.trigger, record.reason)
        {
            let i = self.trigger(trigger);
            *self.triggers[i].refused.entry(reason.name().to_string()).or_default() += 1;
        }
        if !CONVERSION_TYPES.contains(&record.kind.as_str()) {
            return;
        }
        let Some(kept) = self.sessions.get(&record.session) else {
            return;
        };
        let window = chrono::Duration::days(CONVERSION_WINDOW_DAYS);
        if let Some(last) = kept
            .iter()
            .rev()
            .find(|s| s.at <= record.ts && record.ts - s.at <= window)
        {
            self.triggers[last.trigger].conversions += 1;
        }
    }

    /// A customer's turn: the messages it replies to.
    pub(super) fn turn(&mut self, record: &TurnRecord) {
        if record.event.is_some() {
            return;
        }
        let Some(kept) = self.sessions.get_mut(&record.session) else {
            return;
        };
        let window = chrono::Duration::hours(REPLY_WINDOW_HOURS);
        for sent in kept.iter_mut().filter(|s| !s.replied) {
            if sent.at <= record.ts && record.ts - sent.at <= window {
                sent.replied = true;
                self.triggers[sent.trigger].replied += 1;
            }
        }
    }

    /// The figures, the most sent first (then by name).
    pub(super) fn finish(self) -> Vec<TriggerFigures> {
        let rate = |n: u64, of: u64| (of > 0).then(|| n as f64 / of as f64);
        let mut figures: Vec<TriggerFigures> = self
            .triggers
            .into_iter()
            .map(|t| {
                let mut refused_by: Vec<Refused> = t
                    .refused
                    .into_iter()
                    .map(|(reason, count)| Refused { reason, count })
                    .collect();
                refused_by.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
                TriggerFigures {
                    refused: refused_by.iter().map(|r| r.count).sum(),
                    refused_by,
                    reply_rate: rate(t.replied, t.sent),
                    conversion_rate: rate(t.conversions, t.sent),
                    trigger: t.name,
                    sent: t.sent,
                    replied: t.replied,
                    conversions: t.conversions,
                }
            })
            .collect();
        figures.sort_by(|a, b| b.sent.cmp(&a.sent).then_with(|| a.trigger.cmp(&b.trigger)));
        figures
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{:.1}%", x * 100.0))
}

fn refusals(t: &TriggerFigures) -> String {
    if t.refused_by.is_empty() {
        return "-".into();
    }
    t.refused_by
        .iter()
        .map(|r| format!("{} {}", r.reason, r.count))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The section of the text report.
pub(super) fn write_text(o: &mut String, figures: &[TriggerFigures]) -> fmt::Result {
    if figures.is_empty() {
        return Ok(());
    }
    writeln!(
        o,
        "\nproactive messages (replied: the customer wrote within {REPLY_WINDOW_HOURS} h; conversions: order_paid, checkout_completed or conversion within {CONVERSION_WINDOW_DAYS} days, credited to the last message before it)\n  {} {:>6} {:>12} {:>12} {:>8} {}",
        super::report::pad("trigger", 20),
        "sent",
        "replied",
        "converted",
        "refused",
        "refused by"
    )?;
    for t in figures {
        writeln!(
            o,
            "  {} {:>6} {:>12} {:>12} {:>8} {}",
            super::report::pad(&t.trigger, 20),
            super::report::thousands(t.sent),
            format!("{} {}", t.replied, pct(t.reply_rate)),
            format!("{} {}", t.conversions, pct(t.conversion_rate)),
            super::report::thousands(t.refused),
            refusals(t)
        )?;
    }
    Ok(())
}

/// The section of the HTML report.
pub(super) fn write_html(h: &mut String, figures: &[TriggerFigures]) -> fmt::Result {
    if figures.is_empty() {
        return Ok(());
    }
    let esc = super::html::esc;
    writeln!(
        h,
        "<h2>Proactive messages</h2><p>replied: the customer wrote within {REPLY_WINDOW_HOURS} hours; \
         conversions: an order_paid, checkout_completed or conversion event within {CONVERSION_WINDOW_DAYS} days, \
         credited to the last message sent before it; rates over the messages sent</p>\
         <table><tr><th>trigger</th><th>sent</th><th>replied</th><th>reply rate</th><th>conversions</th>\
         <th>conversion rate</th><th>refused</th><th>refused by</th></tr>"
    )?;
    for t in figures {
        writeln!(
            h,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td>\
             <td class=n>{}</td><td class=n>{}</td><td>{}</td></tr>",
            esc(&t.trigger),
            t.sent,
            t.replied,
            pct(t.reply_rate),
            t.conversions,
            pct(t.conversion_rate),
            t.refused,
            esc(&refusals(t))
        )?;
    }
    writeln!(h, "</table>")
}
