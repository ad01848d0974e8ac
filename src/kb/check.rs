//! Retrieval checks: do customers' own words find the FAQ entry they mean?
//!
//! A check file (`rules/tests/kb/*.yaml`) maps FAQ ids to paraphrases that are *not*
//! among the entry's variants, and lists messages no FAQ entry should answer:
//!
//! ```yaml
//! paraphrases:
//!   洗涤保养: [这衣服洗衣机能洗不, 平时要怎么清洗才好]
//! not_faq: [今天天气怎么样]
//! ```
//!
//! A paraphrase passes when its entry ranks first (the model then gets it as a passage
//! even when the confidence is too low to answer directly); whether it would also be
//! answered directly is counted, not required. A `not_faq` message passes when no entry
//! would answer it. An entry with fewer than two paraphrases, a paraphrase that is one of
//! the entry's variants, or an unknown id fails the file: the point is to test the index
//! on text it has not seen. `kefu test` runs these files beside the conversations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::KnowledgeBase;
use super::text::cache_form;

/// The least number of paraphrases per FAQ entry.
pub const MIN_PARAPHRASES: usize = 2;

/// A check file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckFile {
    /// FAQ id → customer paraphrases.
    #[serde(default)]
    pub paraphrases: BTreeMap<String, Vec<String>>,
    /// Messages no FAQ entry may answer directly.
    #[serde(default)]
    pub not_faq: Vec<String>,
}

/// One paraphrase, retrieved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Case {
    /// The entry it should find.
    pub expected: String,
    /// The customer's words.
    pub say: String,
    /// The entry ranked first, if any.
    pub top: Option<String>,
    /// Its confidence.
    pub confidence: f64,
    /// Whether it would answer directly (threshold and margin).
    pub answers: bool,
}

impl Case {
    /// Whether the expected entry ranked first.
    pub fn passed(&self) -> bool {
        self.top.as_deref() == Some(self.expected.as_str())
    }
}

/// The outcome of one check file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The file.
    #[serde(skip)]
    pub file: PathBuf,
    /// Every paraphrase.
    pub cases: Vec<Case>,
    /// `not_faq` messages an entry would answer: `(message, entry)`.
    pub false_answers: Vec<(String, String)>,
    /// How many `not_faq` messages were tried.
    pub not_faq: usize,
    /// Problems with the file itself (unknown ids, too few paraphrases, ...).
    pub errors: Vec<String>,
}

impl Report {
    /// Whether everything held.
    pub fn passed(&self) -> bool {
        self.errors.is_empty() && self.false_answers.is_empty() && self.cases.iter().all(Case::passed)
    }

    /// Paraphrases whose entry ranked first.
    pub fn top1(&self) -> usize {
        self.cases.iter().filter(|c| c.passed()).count()
    }

    /// Paraphrases whose entry ranked first and would answer directly.
    pub fn answered(&self) -> usize {
        self.cases.iter().filter(|c| c.passed() && c.answers).count()
    }

    /// One line: `66/66 paraphrases top-1 (58 answered directly), 0/8 off-topic answered`.
    pub fn summary(&self) -> String {
        format!(
            "{}/{} paraphrases top-1 ({} answered directly), {}/{} off-topic answered",
            self.top1(),
            self.cases.len(),
            self.answered(),
            self.false_answers.len(),
            self.not_faq
        )
    }
}

/// Every `*.yaml` check file under `rules_dir/tests/kb`, sorted (none when absent).
pub fn files(rules_dir: &Path) -> Vec<PathBuf> {
    let dir = rules_dir.join("tests").join("kb");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Reads and runs one check file (see [`run`]).
pub fn run_file(kb: &KnowledgeBase, faq_threshold: f64, path: &Path) -> Report {
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read: {e}"))
        .and_then(|t| serde_yaml::from_str::<CheckFile>(&t).map_err(|e| format!("not a kb check: {e}")));
    let mut report = match parsed {
        Ok(file) => run(kb, faq_threshold, &file),
        Err(e) => Report {
            errors: vec![e],
            ..Report::default()
        },
    };
    report.file = path.to_path_buf();
    report
}

/// Runs a check against a rule set's knowledge base, with no product in focus; an entry
/// answers directly from `faq_threshold` (the shop's), as in a turn.
pub fn run(kb: &KnowledgeBase, faq_threshold: f64, file: &CheckFile) -> Report {
    let threshold = faq_threshold;
    let mut report = Report::default();
    for faq in &kb.faqs {
        let given = file.paraphrases.get(&faq.id).map_or(0, Vec::len);
        if given < MIN_PARAPHRASES {
            report.errors.push(format!(
                "FAQ entry `{}` has {given} paraphrases; give at least {MIN_PARAPHRASES}",
                faq.id
            ));
        }
    }
    for (id, says) in &file.paraphrases {
        let Some(faq) = kb.faqs.iter().find(|f| &f.id == id) else {
            report.errors.push(format!("no FAQ entry `{id}`"));
            continue;
        };
        let seen: Vec<String> = std::iter::once(&faq.question)
            .chain(&faq.variants)
            .map(|q| cache_form(q))
            .collect();
        for say in says {
            if seen.contains(&cache_form(say)) {
                report
                    .errors
                    .push(format!("`{say}` is a variant of `{id}`, not a paraphrase"));
            }
            let best = kb.best_faq(&kb.query(say), None);
            report.cases.push(Case {
                expected: id.clone(),
                say: say.clone(),
                top: best.as_ref().map(|m| kb.faqs[m.faq].id.clone()),
                confidence: best.as_ref().map_or(0.0, |m| m.confidence),
                answers: best.as_ref().is_some_and(|m| m.answers(threshold)),
            });
        }
    }
    for say in &file.not_faq {
        report.not_faq += 1;
        if let Some(m) = kb.best_faq(&kb.query(say), None)
            && m.answers(threshold)
        {
            report.false_answers.push((say.clone(), kb.faqs[m.faq].id.clone()));
        }
    }
    report
}
