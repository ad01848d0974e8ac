//! Hit counts: how often each rule, promotion, flow step and FAQ entry answered, and
//! which of a rule set's items answered nothing lately.
//!
//! A turn hits at most one item of each kind: the rule, the promotion, the flow step and
//! the FAQ entry its record (or response) names. A flow step is named `flow/step`, the
//! step as the turn's record gives it (`退货申请/ask order_id@65`, `退货申请/cancel`):
//! the step a turn ended at, so a `reply` that is always followed by a question in the
//! same turn is never a turn's step, and [`Catalog`] lists only the steps a turn can end
//! at. Steps are named by their line, so a flow edited above a step renames it; a report
//! over several rule versions shows both names.
//!
//! The report ([`super::report`]) keeps at most [`MAX_NAMES`] names per kind (a log
//! holds the names of every rules version it spans; a hand-made one could hold
//! anything); later ones count together as `other`.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use super::{DataError, Record};
use crate::ruleset::{Flow, OpKind, RuleSet};

/// The most names of one kind a report keeps; further names count as [`OTHER`].
pub const MAX_NAMES: usize = 10_000;

/// The name that stands for every name past a bound.
pub const OTHER: &str = "other";

/// What was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HitKind {
    /// A rule.
    Rule,
    /// A promotion.
    Promotion,
    /// A flow step (`flow/step`).
    FlowStep,
    /// A knowledge-base FAQ entry.
    Faq,
}

impl HitKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [HitKind; 4] = [HitKind::Rule, HitKind::Promotion, HitKind::FlowStep, HitKind::Faq];

    /// `rule`, `promotion`, `flow_step` or `faq` (the `kind` label of `kefu_hits_total`).
    pub fn name(self) -> &'static str {
        match self {
            HitKind::Rule => "rule",
            HitKind::Promotion => "promotion",
            HitKind::FlowStep => "flow_step",
            HitKind::Faq => "faq",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One value per [`HitKind`], serialized under the kinds' names.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ByKind<T> {
    /// Rules.
    pub rule: T,
    /// Promotions.
    pub promotion: T,
    /// Flow steps.
    pub flow_step: T,
    /// FAQ entries.
    pub faq: T,
}

impl<T> ByKind<T> {
    /// The value of `kind`.
    pub fn get(&self, kind: HitKind) -> &T {
        match kind {
            HitKind::Rule => &self.rule,
            HitKind::Promotion => &self.promotion,
            HitKind::FlowStep => &self.flow_step,
            HitKind::Faq => &self.faq,
        }
    }

    /// The value of `kind`, to change.
    pub fn get_mut(&mut self, kind: HitKind) -> &mut T {
        match kind {
            HitKind::Rule => &mut self.rule,
            HitKind::Promotion => &mut self.promotion,
            HitKind::FlowStep => &mut self.flow_step,
            HitKind::Faq => &mut self.faq,
        }
    }
}

/// The name of a flow step: `flow/step`.
pub fn flow_step(flow: &str, step: &str) -> String {
    format!("{flow}/{step}")
}

/// What one turn hit: the rule, promotion, flow step (`flow/step`; a flow without a step
/// counts as the flow's name) and FAQ entry it names.
pub fn of_turn(
    rule: Option<&str>,
    promotion: Option<&str>,
    flow: Option<&str>,
    step: Option<&str>,
    faq: Option<&str>,
) -> [Option<String>; 4] {
    let flow_step = flow.map(|flow| match step {
        Some(step) => flow_step(flow, step),
        None => flow.to_string(),
    });
    [
        rule.map(str::to_string),
        promotion.map(str::to_string),
        flow_step,
        faq.map(str::to_string),
    ]
}

/// One item's hits over a period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    /// The rule's, promotion's or FAQ entry's name, or `flow/step`.
    pub name: String,
    /// Turns it answered.
    pub turns: u64,
    /// Conversations with at least one of them.
    pub conversations: u64,
    /// Its last turn (RFC 3339).
    pub last: String,
}

/// One kind's hits.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HitList {
    /// Turns that hit an item of the kind.
    pub turns: u64,
    /// Every item hit, most turns first (then by name).
    pub items: Vec<Hit>,
}

/// Hits per rule, promotion, flow step and FAQ entry (`kefu report`'s `hits`).
pub type Hits = ByKind<HitList>;

/// The items of a rule set hit counts are about: its rules, promotions, the flow steps a
/// turn can end at, and FAQ entries, each list in the rule set's order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Catalog(pub ByKind<Vec<String>>);

impl Catalog {
    /// The items of `rules`.
    pub fn of(rules: &RuleSet) -> Catalog {
        Catalog(ByKind {
            rule: rules.rules.iter().map(|r| r.name.clone()).collect(),
            promotion: rules.promotions.iter().map(|p| p.name.clone()).collect(),
            flow_step: rules.flows.iter().flat_map(steps_of).collect(),
            faq: rules.kb.faqs.iter().map(|f| f.id.clone()).collect(),
        })
    }

    /// The items of `kind`.
    pub fn names(&self, kind: HitKind) -> &[String] {
        self.0.get(kind)
    }
}

/// The steps of `flow` a turn can end at, as `flow/step`: every question (`ask slot@L`,
/// `confirm slot@L`), handoff and end, and each reply after which the flow can run off
/// its end without another of them. Cancelling (`flow/cancel`) is left out: every flow
/// has it, and a flow never cancelled is no news.
pub fn steps_of(flow: &Flow) -> Vec<String> {
    let mut out = Vec::new();
    for (i, op) in flow.ops.iter().enumerate() {
        let step = match &op.kind {
            OpKind::Ask { slot, confirm, .. } => {
                format!("{} {slot}@{}", if *confirm { "confirm" } else { "ask" }, op.line)
            }
            OpKind::Handoff(_) => format!("handoff@{}", op.line),
            OpKind::End => format!("end@{}", op.line),
            OpKind::Reply(_) if runs_off_the_end(flow, i + 1) => format!("reply@{}", op.line),
            _ => continue,
        };
        out.push(flow_step(&flow.name, &step));
    }
    out
}

/// Whether the flow, from instruction `from`, can reach its end through instructions
/// that set no step (sets, calls, memory, jumps either way).
fn runs_off_the_end(flow: &Flow, from: usize) -> bool {
    let mut seen = vec![false; flow.ops.len()];
    let mut todo = vec![from];
    while let Some(pc) = todo.pop() {
        let Some(op) = flow.ops.get(pc) else {
            return true;
        };
        if std::mem::replace(&mut seen[pc], true) {
            continue;
        }
        match &op.kind {
            OpKind::Set { .. } | OpKind::Call(_) | OpKind::Memo(_) => todo.push(pc + 1),
            OpKind::Jump(target) => todo.push(*target),
            OpKind::JumpUnless { target, .. } => todo.extend([pc + 1, *target]),
            OpKind::Ask { .. } | OpKind::Reply(_) | OpKind::Handoff(_) | OpKind::End => {}
        }
    }
    false
}

/// A rule set's items not hit in the last `days` days of a log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NeverHit {
    /// The days looked back.
    pub days: u32,
    /// The start of those days (RFC 3339): the log's last record less `days` days; none
    /// for an empty log (then every item is listed).
    pub since: Option<String>,
    /// The items, by kind, in the rule set's order.
    #[serde(flatten)]
    pub items: ByKind<Vec<String>>,
}

impl NeverHit {
    /// The items of `catalog` whose last hit (`last_hit`) is before `last_record` less
    /// `days` days, or that have none.
    pub fn of(
        catalog: &Catalog,
        days: u32,
        last_record: Option<DateTime<FixedOffset>>,
        last_hit: impl Fn(HitKind, &str) -> Option<DateTime<FixedOffset>>,
    ) -> NeverHit {
        let since = last_record.map(|t| t - chrono::Duration::days(i64::from(days)));
        let mut items = ByKind::<Vec<String>>::default();
        for kind in HitKind::ALL {
            *items.get_mut(kind) = catalog
                .names(kind)
                .iter()
                .filter(|name| match (last_hit(kind, name), since) {
                    (Some(last), Some(since)) => last < since,
                    _ => true,
                })
                .cloned()
                .collect();
        }
        NeverHit {
            days,
            since: since.map(|t| t.to_rfc3339()),
            items,
        }
    }

    /// How many items are listed.
    pub fn len(&self) -> usize {
        HitKind::ALL.iter().map(|&k| self.items.get(k).len()).sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The last hit of each name in a conversation log, file by file, kept between calls so
/// that asking again reads only the files that changed (the service's
/// `GET /admin/report` lists the serving rules' items not hit lately on every call: the
/// day being written is read again, the month before it is not).
#[derive(Default)]
pub struct LastHits {
    files: std::sync::Mutex<HashMap<PathBuf, FileHits>>,
}

/// One log file's last record and last hit per name, and the file as it was read.
struct FileHits {
    len: u64,
    modified: Option<std::time::SystemTime>,
    last_record: Option<DateTime<FixedOffset>>,
    last: HashMap<(HitKind, String), DateTime<FixedOffset>>,
}

impl LastHits {
    /// The items of `catalog` not hit in the last `days` days of the log `files` (the
    /// writer's names, `conversations-YYYY-MM-DD-NNN.jsonl`), counted back from its last
    /// record. Only files whose day is within `days` (and a day) of the newest file's are
    /// read; a file named otherwise always is. Files read before and unchanged since
    /// (same length and time of change) are not read again.
    pub fn never_hit(&self, files: &[PathBuf], catalog: &Catalog, days: u32) -> Result<NeverHit, DataError> {
        let day_of = |path: &PathBuf| {
            path.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("conversations-"))
                .and_then(|n| n.get(..10))
                .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        };
        let newest = files.iter().filter_map(day_of).max();
        let wanted: Vec<&PathBuf> = files
            .iter()
            .filter(|path| match (day_of(path), newest) {
                (Some(day), Some(newest)) => day + chrono::Duration::days(i64::from(days) + 1) >= newest,
                _ => true,
            })
            .collect();
        let mut cached = self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Files no longer wanted (older, deleted) are forgotten: the cache holds at most
        // the files of the period.
        cached.retain(|path, _| wanted.contains(&path));
        for path in wanted {
            let meta = std::fs::metadata(path).map_err(|source| DataError::Read {
                path: path.clone(),
                source,
            })?;
            let modified = meta.modified().ok();
            if cached
                .get(path)
                .is_some_and(|f| f.len == meta.len() && f.modified == modified && modified.is_some())
            {
                continue;
            }
            let mut file = FileHits {
                len: meta.len(),
                modified,
                last_record: None,
                last: HashMap::new(),
            };
            let mut names = [0usize; 4];
            super::read(std::slice::from_ref(path), |record, _| {
                let ts = record.ts();
                file.last_record = Some(file.last_record.map_or(ts, |t| t.max(ts)));
                let Record::Turn(turn) = record else { return };
                let hits = of_turn(
                    turn.rule.as_deref(),
                    turn.promotion.as_deref(),
                    turn.flow.as_deref(),
                    turn.step.as_deref(),
                    turn.faq.as_deref(),
                );
                for (kind, name) in HitKind::ALL.into_iter().zip(hits) {
                    let Some(name) = name else { continue };
                    let key = (kind, name);
                    match file.last.get_mut(&key) {
                        Some(last) => *last = (*last).max(ts),
                        // Bounded as the report is: a name past the bound is not kept
                        // (such a file is not a log kefu wrote for one rule set).
                        None if names[kind.index()] < MAX_NAMES => {
                            names[kind.index()] += 1;
                            file.last.insert(key, ts);
                        }
                        None => {}
                    }
                }
            })?;
            cached.insert(path.clone(), file);
        }
        let last_record = cached.values().filter_map(|f| f.last_record).max();
        Ok(NeverHit::of(catalog, days, last_record, |kind, name| {
            let key = (kind, name.to_string());
            cached.values().filter_map(|f| f.last.get(&key)).max().copied()
        }))
    }
}

/// One item's running counts.
struct Item {
    kind: HitKind,
    name: String,
    turns: u64,
    conversations: u64,
    last: DateTime<FixedOffset>,
}

/// Hit counts while a log streams by.
#[derive(Default)]
pub(super) struct HitTally {
    index: HashMap<(HitKind, String), u32>,
    items: Vec<Item>,
    names: [usize; 4],
    turns: [u64; 4],
}

impl HitTally {
    /// Counts one turn at `ts` that hit `hits` (from [`of_turn`]); `seen` holds the items
    /// the turn's conversation hit before (so each conversation counts once per item).
    pub(super) fn turn(&mut self, ts: DateTime<FixedOffset>, hits: [Option<String>; 4], seen: &mut Vec<u32>) {
        for (kind, name) in HitKind::ALL.into_iter().zip(hits) {
            let Some(name) = name else { continue };
            self.turns[kind.index()] += 1;
            let key = (kind, name);
            let at = match self.index.get(&key) {
                Some(&at) => at,
                None => {
                    let key = if self.names[kind.index()] < MAX_NAMES {
                        self.names[kind.index()] += 1;
                        key
                    } else {
                        (kind, OTHER.to_string())
                    };
                    let next = self.items.len() as u32;
                    *self.index.entry(key.clone()).or_insert_with(|| {
                        self.items.push(Item {
                            kind,
                            name: key.1,
                            turns: 0,
                            conversations: 0,
                            last: ts,
                        });
                        next
                    })
                }
            };
            let item = &mut self.items[at as usize];
            item.turns += 1;
            item.last = item.last.max(ts);
            if !seen.contains(&at) {
                seen.push(at);
                item.conversations += 1;
            }
        }
    }

    /// The last hit of `kind`'s `name`.
    pub(super) fn last_hit(&self, kind: HitKind, name: &str) -> Option<DateTime<FixedOffset>> {
        self.index
            .get(&(kind, name.to_string()))
            .map(|&at| self.items[at as usize].last)
    }

    /// The counts, most turns first.
    pub(super) fn finish(&self) -> Hits {
        let mut hits = Hits::default();
        for kind in HitKind::ALL {
            hits.get_mut(kind).turns = self.turns[kind.index()];
        }
        for item in &self.items {
            hits.get_mut(item.kind).items.push(Hit {
                name: item.name.clone(),
                turns: item.turns,
                conversations: item.conversations,
                last: item.last.to_rfc3339(),
            });
        }
        for kind in HitKind::ALL {
            hits.get_mut(kind)
                .items
                .sort_by(|a, b| b.turns.cmp(&a.turns).then_with(|| a.name.cmp(&b.name)));
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(t).unwrap()
    }

    #[test]
    fn turns_and_conversations_are_counted_per_item_and_bounded() {
        let mut tally = HitTally::default();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let rule = |name: &str| of_turn(Some(name), None, None, None, None);
        tally.turn(at("2026-12-01T10:00:00+08:00"), rule("退货"), &mut a);
        tally.turn(at("2026-12-01T10:01:00+08:00"), rule("退货"), &mut a);
        tally.turn(
            at("2026-12-02T09:00:00+08:00"),
            of_turn(
                Some("退货"),
                None,
                Some("退货申请"),
                Some("ask order_id@12"),
                Some("运费"),
            ),
            &mut b,
        );
        let hits = tally.finish();
        assert_eq!(hits.rule.turns, 3);
        let first = &hits.rule.items[0];
        assert_eq!((first.name.as_str(), first.turns, first.conversations), ("退货", 3, 2));
        assert_eq!(first.last, "2026-12-02T09:00:00+08:00");
        assert_eq!(hits.flow_step.items[0].name, "退货申请/ask order_id@12");
        assert_eq!(hits.faq.items[0].conversations, 1);
        assert!(hits.promotion.items.is_empty());

        let mut seen = Vec::new();
        for n in 0..MAX_NAMES + 5 {
            tally.turn(at("2026-12-03T09:00:00+08:00"), rule(&format!("r{n}")), &mut seen);
        }
        let hits = tally.finish();
        assert_eq!(
            hits.rule.items.len(),
            MAX_NAMES + 1,
            "the names past the bound are one `other`"
        );
        let other = hits.rule.items.iter().find(|h| h.name == OTHER).unwrap();
        assert_eq!(other.turns, 6);
    }

    #[test]
    fn items_not_hit_within_the_days_are_listed() {
        let mut catalog = Catalog::default();
        catalog.0.rule = vec!["old".into(), "recent".into(), "never".into()];
        catalog.0.faq = vec!["运费".into()];
        let last = |_: HitKind, name: &str| match name {
            "old" => Some(at("2026-10-01T00:00:00+08:00")),
            "recent" | "运费" => Some(at("2026-11-30T00:00:00+08:00")),
            _ => None,
        };
        let listed = NeverHit::of(&catalog, 30, Some(at("2026-12-06T00:00:00+08:00")), last);
        assert_eq!(listed.items.rule, ["old", "never"]);
        assert!(listed.items.faq.is_empty());
        assert_eq!(listed.since.as_deref(), Some("2026-11-06T00:00:00+08:00"));
        assert_eq!(listed.len(), 2);
        // An empty log: everything.
        assert_eq!(NeverHit::of(&catalog, 30, None, last).len(), 4);
    }

    #[test]
    fn the_last_hits_of_a_log_follow_its_files_as_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let turn = |ts: &str, rule: &str| {
            serde_json::json!({
                "kind": "turn", "ts": ts, "session": ts, "turn": 1, "message": "在吗", "reply": "在的",
                "source": "rule", "rule": rule, "confidence": 0.9, "latency_ms": 1.0, "rules": "v1",
            })
            .to_string()
                + "\n"
        };
        let old = dir.path().join("conversations-2026-10-01-000.jsonl");
        let new = dir.path().join("conversations-2026-12-05-000.jsonl");
        std::fs::write(&old, turn("2026-10-01T10:00:00+08:00", "老规则")).unwrap();
        std::fs::write(&new, turn("2026-12-05T10:00:00+08:00", "退货")).unwrap();
        let mut catalog = Catalog::default();
        catalog.0.rule = vec!["老规则".into(), "退货".into(), "运费".into()];
        let files = crate::data::writer::log_files(dir.path()).unwrap();
        let cache = LastHits::default();
        let never = cache.never_hit(&files, &catalog, 30).unwrap();
        assert_eq!(never.items.rule, ["老规则", "运费"]);
        assert_eq!(never.since.as_deref(), Some("2026-11-05T10:00:00+08:00"));
        // The file written to is read again; the month-old one is not even opened (a
        // year of logs costs the days asked for).
        assert_eq!(cache.files.lock().unwrap().len(), 1);
        std::fs::write(
            &new,
            turn("2026-12-05T10:00:00+08:00", "退货") + turn("2026-12-05T11:00:00+08:00", "运费").as_str(),
        )
        .unwrap();
        let never = cache.never_hit(&files, &catalog, 30).unwrap();
        assert_eq!(never.items.rule, ["老规则"]);
        // Looking back further reads the older file too.
        let never = cache.never_hit(&files, &catalog, 90).unwrap();
        assert!(never.items.rule.is_empty(), "{never:?}");
        assert_eq!(cache.files.lock().unwrap().len(), 2);
    }

    #[test]
    fn the_demo_shops_flow_steps_are_the_ones_a_turn_can_end_at() {
        let rules = crate::dsl::load_dir(std::path::Path::new("rules")).rules.unwrap();
        let catalog = Catalog::of(&rules);
        let steps = catalog.names(HitKind::FlowStep);
        assert!(
            steps.iter().any(|s| s.starts_with("退货申请/ask order_id@")),
            "{steps:?}"
        );
        // A reply followed by a question in the same turn is never a turn's step.
        for flow in &rules.flows {
            for (i, op) in flow.ops.iter().enumerate() {
                if matches!(op.kind, OpKind::Reply(_))
                    && matches!(flow.ops.get(i + 1).map(|o| &o.kind), Some(OpKind::Ask { .. }))
                {
                    let name = flow_step(&flow.name, &format!("reply@{}", op.line));
                    assert!(!steps.contains(&name), "{name}");
                }
            }
        }
        assert_eq!(catalog.names(HitKind::Rule).len(), rules.rules.len());
        assert_eq!(catalog.names(HitKind::Faq).len(), rules.kb.faqs.len());
    }
}
