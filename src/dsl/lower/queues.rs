//! Lowering the agents' queues (`queue NAME { … }`) and every `handoff … as KIND to QUEUE`.
//!
//! Queues are lowered before rules, flows and the fallback chain, so that a handoff's `to`
//! resolves to an index into `RuleSet::queues` (routing order: higher `priority` first,
//! then file order). Checked here: duplicate queues, two queues without `for` (two
//! defaults), `hours` at the string's line and column, `hours` without `off_hours`, a
//! `to` naming no queue and an `as` naming no kind, each with a did-you-mean.

use super::shop::localized;
use super::{Lowerer, Scripts};
use crate::diag::{Diagnostic, Span, closest};
use crate::dsl::ast;
use crate::ruleset::{HandoffKind, HandoffSpec, Hours, Queue, Window};
use crate::script::Names;

/// The kinds an editor may write after `as`: every kind but `agent`, which only an
/// agent's own takeover has.
fn writable_kinds() -> impl Iterator<Item = HandoffKind> {
    HandoffKind::ALL.into_iter().filter(|k| *k != HandoffKind::Agent)
}

impl Lowerer<'_> {
    /// Lowers the queues into routing order and notes their names for `to`; returns them
    /// with the index of the default queue (the one without `for`).
    pub(super) fn queues(&mut self, queues: &[ast::Queue], compiler: &Scripts) -> (Vec<Queue>, Option<usize>) {
        let mut lowered: Vec<(Queue, bool)> = Vec::new();
        let mut default: Option<Span> = None;
        let languages = compiler.3.clone();
        for queue in queues {
            if queue.audience.is_none() {
                if let Some(first) = default {
                    self.push(
                        Diagnostic::error(queue.name.span, format!("second default queue `{}`", queue.name.name))
                            .with_label("this queue has no `for`, so it takes every handoff no other queue takes")
                            .with_secondary(first, "the first queue without `for`")
                            .with_help("give one of them a `for` condition; at most one queue is the default"),
                    );
                } else {
                    default = Some(queue.name.span);
                }
            }
            let audience = match &queue.audience {
                Some(expr) => match compiler.condition(expr, &Names::default(), self.diagnostics) {
                    Some(script) => Some(script),
                    None => continue,
                },
                None => None,
            };
            let hours = match &queue.hours {
                Some(text) => match parse_hours(&text.value) {
                    Ok(hours) => Some(hours),
                    Err(bad) => {
                        self.push(
                            Diagnostic::error(text.sub_span(bad.start, bad.end), bad.message)
                                .with_label("in these hours")
                                .with_help(HOURS_HELP),
                        );
                        None
                    }
                },
                None => None,
            };
            if let (Some(text), None) = (&queue.hours, &queue.off_hours) {
                self.push(
                    Diagnostic::error(
                        text.span,
                        format!("queue `{}` has `hours` but no `off_hours`", queue.name.name),
                    )
                    .with_label("outside these hours nobody answers")
                    .with_help("add `off_hours \"…\"`: what the customer is told when a handoff comes after hours"),
                );
            }
            if let (Some(text), None) = (&queue.off_hours, &queue.hours) {
                self.push(
                    Diagnostic::warning(text.span, "`off_hours` is never said: the queue has no `hours`")
                        .with_help("add `hours \"09:00-23:00\"`, or remove `off_hours`"),
                );
            }
            let off_hours = queue
                .off_hours
                .as_ref()
                .and_then(|t| compiler.template(t, &Names::default(), self.diagnostics));
            let waiting_names = Names {
                variables: vec!["queue".to_string()],
                ..Names::default()
            };
            let waiting = queue
                .waiting
                .as_ref()
                .and_then(|t| compiler.template(t, &waiting_names, self.diagnostics));
            lowered.push((
                Queue {
                    name: queue.name.name.clone(),
                    label: localized(queue.label.as_ref(), &queue.name.name, &languages),
                    audience,
                    priority: queue.priority.map_or(0, |p| p.value),
                    hours,
                    off_hours,
                    waiting,
                    location: self.location(queue.name.span),
                },
                queue.audience.is_none(),
            ));
        }
        // Stable: equal priorities keep their file order.
        lowered.sort_by_key(|(q, _)| std::cmp::Reverse(q.priority));
        let default = lowered.iter().position(|(_, is_default)| *is_default);
        let queues: Vec<Queue> = lowered.into_iter().map(|(q, _)| q).collect();
        self.queue_names = queues.iter().map(|q| q.name.clone()).collect();
        (queues, default)
    }

    /// Warns about canned replies for a group no queue is named (they would be offered to
    /// nobody's group in particular, only to searches without a group).
    pub(super) fn check_canned_groups(&mut self, kb: &crate::kb::KnowledgeBase) {
        for canned in &kb.canned {
            let (Some(group), Some(span)) = (&canned.group, canned.span) else {
                continue;
            };
            if self.queue_names.iter().any(|q| q == group) {
                continue;
            }
            let mut d = Diagnostic::warning(
                span,
                format!(
                    "canned reply `{}` is for group `{group}`, which no queue is named",
                    canned.title
                ),
            );
            d = match closest(group, self.queue_names.iter().map(String::as_str)) {
                Some(near) => d.with_help(format!("did you mean `{near}`?")),
                None => d.with_help("declare the queue with `queue NAME { … }`, or drop `group`"),
            };
            self.push(d);
        }
    }

    /// A `handoff` of the syntax tree as the rule set keeps it: its kind `as` says, else
    /// `default` (what its place implies), its `to` resolved against the queues.
    pub(super) fn handoff_spec(&mut self, handoff: &ast::Handoff, default: HandoffKind) -> HandoffSpec {
        let kind = match &handoff.kind {
            None => default,
            Some(name) => match HandoffKind::parse(&name.name).filter(|k| *k != HandoffKind::Agent) {
                Some(kind) => kind,
                None => {
                    let names: Vec<&str> = writable_kinds().map(HandoffKind::name).collect();
                    let mut d = Diagnostic::error(name.span, format!("unknown handoff kind `{}`", name.name))
                        .with_label("not a kind of handoff");
                    d = match closest(&name.name, names.iter().copied()) {
                        Some(near) => d.with_help(format!("did you mean `{near}`?")),
                        None => d.with_help(format!("the kinds are {}", names.join(", "))),
                    };
                    self.push(d);
                    default
                }
            },
        };
        let to = handoff.to.as_ref().and_then(|name| {
            let found = self.queue_names.iter().position(|q| *q == name.name);
            if found.is_none() {
                let names = std::mem::take(&mut self.queue_names);
                self.unknown(name, "queue", names.iter().map(String::as_str));
                self.queue_names = names;
            }
            found
        });
        HandoffSpec {
            reason: handoff.reason.as_ref().map(|r| r.value.clone()),
            kind,
            to,
        }
    }
}

/// The kind of a fallback arm's handoff written without `as`: what its condition reads
/// says why it hands off (`emotion`: anger; `session.failures`: failures in a row; else
/// nothing confident to say).
pub(super) fn fallback_kind(when: Option<&crate::script::Script>) -> HandoffKind {
    let Some(script) = when else {
        return HandoffKind::LowConfidence;
    };
    let (mut emotion, mut session) = (false, false);
    script.ast.walk(&mut |path: &[rhai::ASTNode]| {
        if let Some(rhai::ASTNode::Expr(rhai::Expr::Variable(var, _, _))) = path.last() {
            emotion |= var.1.as_str() == "emotion";
            session |= var.1.as_str() == "session";
        }
        true
    });
    if emotion {
        HandoffKind::Anger
    } else if session && script.source.contains("failures") {
        HandoffKind::RepeatedFailure
    } else {
        HandoffKind::LowConfidence
    }
}

/// What `hours` accepts, for the help line of its errors.
const HOURS_HELP: &str = "write windows like \"09:00-23:00\" or \"mon-fri 09:00-18:00, sat-sun 10:00-16:00\"; an end before the start runs past midnight (\"20:00-02:00\")";

/// A mistake in an `hours` string: the byte range of the decoded text it is about.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BadHours {
    start: usize,
    end: usize,
    message: String,
}

/// Day names in `hours`, Monday first.
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Reads `"mon-fri 09:00-18:00, sat-sun 10:00-16:00"`: windows separated by commas, each
/// an optional day or day range (`sat-sun`, `fri-mon` wraps) and a time range (`24:00`
/// may end one; an end at or before the start runs into the next day).
pub(super) fn parse_hours(text: &str) -> Result<Hours, BadHours> {
    let bad = |start: usize, end: usize, message: String| BadHours {
        start,
        end: end.max(start),
        message,
    };
    let mut pieces = Vec::new();
    let mut from = 0;
    for (i, c) in text.char_indices() {
        if c == ',' || c == '，' {
            pieces.push((from, &text[from..i]));
            from = i + c.len_utf8();
        }
    }
    pieces.push((from, &text[from..]));
    let mut windows = Vec::new();
    for (piece_start, piece) in pieces {
        let words: Vec<(usize, &str)> = piece
            .split_whitespace()
            .map(|w| (piece_start + (w.as_ptr() as usize - piece.as_ptr() as usize), w))
            .collect();
        let (days, (at, times)) = match words.as_slice() {
            [] => {
                return Err(bad(
                    piece_start,
                    piece_start + piece.len(),
                    "empty window in `hours`".into(),
                ));
            }
            [times] => (0b111_1111, *times),
            [(at, days), times] => (parse_days(days).map_err(|m| bad(*at, at + days.len(), m))?, *times),
            [_, _, (at, extra), ..] => {
                return Err(bad(
                    *at,
                    piece_start + piece.len(),
                    format!("unexpected `{extra}` in `hours`: one day range and one time range a window"),
                ));
            }
        };
        let Some((from, to)) = times.split_once('-') else {
            return Err(bad(
                at,
                at + times.len(),
                format!("`{times}` is not a time range like `09:00-18:00`"),
            ));
        };
        let start = parse_time(from, false).map_err(|m| bad(at, at + from.len(), m))?;
        let to_at = at + from.len() + 1;
        let end = parse_time(to, true).map_err(|m| bad(to_at, to_at + to.len(), m))?;
        if start == end % 1440 {
            return Err(bad(
                at,
                at + times.len(),
                format!("`{times}` opens and closes at the same time"),
            ));
        }
        windows.push(Window { days, start, end });
    }
    Ok(Hours { windows })
}

/// `mon`, `sat-sun`, `fri-mon` as a weekday mask (bit 0 Monday).
fn parse_days(text: &str) -> Result<u8, String> {
    let day = |name: &str| {
        DAYS.iter().position(|d| d.eq_ignore_ascii_case(name)).ok_or_else(|| {
            match closest(&name.to_ascii_lowercase(), DAYS.iter().copied()) {
                Some(near) => format!("unknown day `{name}` in `hours`; did you mean `{near}`?"),
                None => format!("unknown day `{name}` in `hours`; days are {}", DAYS.join(", ")),
            }
        })
    };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (day(a)?, day(b)?),
        None => {
            let d = day(text)?;
            (d, d)
        }
    };
    let mut mask = 0u8;
    let mut d = first;
    loop {
        mask |= 1 << d;
        if d == last {
            break;
        }
        d = (d + 1) % 7;
    }
    Ok(mask)
}

/// `9:00`, `09:30`, `24:00` (only as an end) as minutes after midnight.
fn parse_time(text: &str, end: bool) -> Result<u32, String> {
    let wrong = || format!("`{text}` is not a time like `09:00`");
    let (h, m) = text.split_once(':').ok_or_else(wrong)?;
    let digits = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h, 2) || !digits(m, 2) || m.len() != 2 {
        return Err(wrong());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| wrong())?, m.parse().map_err(|_| wrong())?);
    match (h, m) {
        (24, 0) if end => Ok(1440),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(format!(
            "`{text}` is not a time of day (00:00 to 23:59{})",
            if end { ", or 24:00" } else { "" }
        )),
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn at(day: u32, hm: (u32, u32)) -> chrono::NaiveDateTime {
        // 2026-11-02 is a Monday.
        NaiveDate::from_ymd_opt(2026, 11, day)
            .unwrap()
            .and_hms_opt(hm.0, hm.1, 0)
            .unwrap()
    }

    #[test]
    fn a_daily_window_is_open_inside_it_only() {
        let hours = parse_hours("09:00-23:00").unwrap();
        assert!(!hours.is_open(at(2, (8, 59))));
        assert!(hours.is_open(at(2, (9, 0))));
        assert!(hours.is_open(at(8, (22, 59))));
        assert!(!hours.is_open(at(8, (23, 0))));
    }

    #[test]
    fn days_pick_the_weekdays_and_a_range_may_wrap() {
        let hours = parse_hours("mon-fri 09:00-18:00, sat-sun 10:00-16:00").unwrap();
        assert!(hours.is_open(at(6, (17, 0)))); // Friday
        assert!(!hours.is_open(at(7, (17, 0)))); // Saturday after 16:00
        assert!(hours.is_open(at(8, (10, 0)))); // Sunday
        assert!(!hours.is_open(at(8, (9, 30))));
        let wrap = parse_hours("fri-mon 10:00-12:00").unwrap();
        assert!(wrap.is_open(at(9, (11, 0)))); // Monday
        assert!(!wrap.is_open(at(3, (11, 0)))); // Tuesday
    }

    #[test]
    fn an_end_before_the_start_runs_past_midnight_into_the_next_day() {
        let hours = parse_hours("fri 20:00-02:00").unwrap();
        assert!(hours.is_open(at(6, (23, 30)))); // Friday night
        assert!(hours.is_open(at(7, (1, 59)))); // early Saturday
        assert!(!hours.is_open(at(7, (2, 0))));
        assert!(!hours.is_open(at(6, (1, 0)))); // early Friday belongs to Thursday
        let late = parse_hours("18:00-24:00").unwrap();
        assert!(late.is_open(at(2, (23, 59))));
        assert!(!late.is_open(at(3, (0, 0))));
    }

    #[test]
    fn mistakes_are_placed_on_the_word_that_is_wrong() {
        let e = parse_hours("mon-fri 09:00-18:00, thur 10:00-16:00").unwrap_err();
        assert_eq!(&"mon-fri 09:00-18:00, thur 10:00-16:00"[e.start..e.end], "thur");
        assert!(e.message.contains("did you mean `thu`"), "{}", e.message);
        let e = parse_hours("09:00-25:00").unwrap_err();
        assert_eq!(&"09:00-25:00"[e.start..e.end], "25:00");
        let e = parse_hours("9点-18点").unwrap_err();
        assert!(e.message.contains("is not a time"), "{}", e.message);
        assert!(parse_hours("09:00-09:00").is_err());
        assert!(parse_hours("").is_err());
        assert!(parse_hours("09:00-18:00,").is_err());
        assert!(parse_hours("24:00-02:00").is_err());
        // A Chinese comma separates windows too, and its width is counted right.
        let text = "09:00-12:00，13:00-9x:00";
        let e = parse_hours(text).unwrap_err();
        assert_eq!(&text[e.start..e.end], "9x:00");
    }
}
