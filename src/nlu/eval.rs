//! `kefu eval`: score the classifier on labelled utterances.
//!
//! Data is JSONL (`{"text": "...", "intent": "..."}` per line) or CSV (`text,intent`, with
//! or without that header); the label `oos` (also `none` or an empty label) marks an
//! out-of-scope message, one no intent was written for. A prediction is
//! what the engine would act on: the intent when its confidence reaches the shop's
//! threshold, `oos` otherwise ([`Nlu::label`]). Macro-F1 averages over every label that
//! occurs in the data or the predictions, as scikit-learn's `f1_score(average="macro")`
//! does, so the two can be compared.
//!
//! Out-of-scope messages get a section of their own ([`OutOfScopeScores`]): the share
//! not acted on (recall) and the share given a confident intent, the one mistake that
//! fires a rule or a handoff meant for something else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Nlu, OUT_OF_SCOPE};

/// Why labelled data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a labelled utterance.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (JSONL) or record (CSV) number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file holds no utterances.
    #[error("{path}: no labelled utterances")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// One labelled utterance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Labelled {
    /// The message.
    pub text: String,
    /// The intent it should get, or `oos`.
    pub intent: String,
}

/// Reads JSONL or CSV: a file whose first non-blank character is `{` is JSONL.
pub fn read(path: &Path) -> Result<Vec<Labelled>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_error = |line: usize, message: String| EvalError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut out = Vec::new();
    if text.trim_start().starts_with('{') {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let item: Labelled = serde_json::from_str(line)
                .map_err(|e| parse_error(i + 1, format!("not a {{\"text\",\"intent\"}} object: {e}")))?;
            out.push(item);
        }
    } else {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| parse_error(i + 1, e.to_string()))?;
            if i == 0 && record.get(0) == Some("text") && record.get(1) == Some("intent") {
                continue;
            }
            if record.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            match (record.get(0), record.get(1)) {
                (Some(t), Some(l)) if record.len() == 2 => out.push(Labelled {
                    text: t.to_string(),
                    intent: l.trim().to_string(),
                }),
                _ => {
                    return Err(parse_error(
                        i + 1,
                        format!("expected 2 fields `text,intent`, found {}", record.len()),
                    ));
                }
            }
        }
    }
    for item in &mut out {
        let label = item.intent.trim();
        if label.is_empty() || label.eq_ignore_ascii_case("none") || label.eq_ignore_ascii_case(OUT_OF_SCOPE) {
            item.intent = OUT_OF_SCOPE.to_string();
        }
    }
    if out.is_empty() {
        return Err(EvalError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// Precision, recall and F1 of one label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LabelScores {
    /// Of the messages predicted as this label, the share that had it.
    pub precision: f64,
    /// Of the messages with this label, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of the two (0 when both are 0).
    pub f1: f64,
    /// How many messages have this label.
    pub support: usize,
}

/// A frequent mistake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// The right label.
    pub expected: String,
    /// What was predicted.
    pub predicted: String,
    /// How often.
    pub count: usize,
}

/// One message the classifier got wrong, with what it was thinking: whether the right
/// intent was close (just under the threshold) or nowhere.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mistake {
    /// The message.
    pub text: String,
    /// The right label.
    pub expected: String,
    /// What was predicted (`oos` when no intent reached the threshold).
    pub predicted: String,
    /// The most probable declared intent and its confidence, whatever the threshold.
    pub best: (String, f64),
    /// The confidence the model had in the right label (the out-of-scope probability when
    /// the right label is `oos`).
    pub expected_confidence: f64,
}

/// How the out-of-scope messages (label `oos`, `none` or empty) fared in the engine's
/// decision.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OutOfScopeScores {
    /// How many there were.
    pub messages: usize,
    /// Share not acted on: no intent, or one below the threshold (the knowledge base or
    /// the model answers them).
    pub recall: f64,
    /// Share given an intent with confidence at or above the threshold: a rule or a
    /// handoff meant for something else fires. `1 - recall`.
    pub confident_wrong: f64,
    /// Share the out-of-scope decision itself caught (`intent: None`).
    pub no_intent: f64,
    /// Share given an intent below the threshold.
    pub below_threshold: f64,
}

/// The outcome of an evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Utterances scored.
    pub total: usize,
    /// Share predicted exactly right.
    pub accuracy: f64,
    /// Mean F1 over every label in the data or the predictions.
    pub macro_f1: f64,
    /// Mean F1 over the declared intents only (the real questions), leaving out the `oos`
    /// row.
    pub in_scope_macro_f1: f64,
    /// Recall of `oos` (`null` when the data has no out-of-scope message).
    pub oos_recall: Option<f64>,
    /// Out-of-scope messages in the engine's decision (`null` in closed-set mode or when
    /// the data has none).
    pub out_of_scope: Option<OutOfScopeScores>,
    /// Scores per label, by name.
    pub per_intent: BTreeMap<String, LabelScores>,
    /// Mistakes, most frequent first.
    pub confusions: Vec<Confusion>,
    /// Every message predicted wrong, in data order (`kefu eval --mistakes` prints them).
    pub mistakes: Vec<Mistake>,
    /// Labels in the data that the rules do not declare (always wrong).
    pub unknown_labels: Vec<String>,
    /// Messages classified per second (one thread, features and classifier only).
    pub per_second: f64,
    /// The threshold predictions were held to (`null` in closed-set mode).
    pub threshold: Option<f64>,
}

/// Scores `nlu` on `data`. With `closed_set`, every message gets the most probable declared
/// intent, ignoring the threshold and the out-of-scope class.
pub fn evaluate(nlu: &Nlu, data: &[Labelled], closed_set: bool) -> Report {
    let started = Instant::now();
    let predicted: Vec<String> = data
        .iter()
        .map(|d| nlu.label_with(&d.text, closed_set).to_string())
        .collect();
    let mut elapsed = started.elapsed();
    let mut classified = data.len();
    // Small files finish too fast to time; repeat until the clock has something to measure.
    while elapsed < Duration::from_millis(200) {
        let again = Instant::now();
        for d in data {
            std::hint::black_box(nlu.label_with(&d.text, closed_set));
        }
        elapsed += again.elapsed();
        classified += data.len();
    }

    let gold: Vec<&str> = data.iter().map(|d| d.intent.as_str()).collect();
    let labels: BTreeSet<&str> = gold
        .iter()
        .copied()
        .chain(predicted.iter().map(String::as_str))
        .collect();
    let mut per_intent = BTreeMap::new();
    for &label in &labels {
        let tp = gold
            .iter()
            .zip(&predicted)
            .filter(|(g, p)| **g == label && *p == label)
            .count();
        let predicted_n = predicted.iter().filter(|p| *p == label).count();
        let support = gold.iter().filter(|g| **g == label).count();
        let precision = ratio(tp, predicted_n);
        let recall = ratio(tp, support);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        per_intent.insert(
            label.to_string(),
            LabelScores {
                precision,
                recall,
                f1,
                support,
            },
        );
    }
    let right = gold.iter().zip(&predicted).filter(|(g, p)| **g == p.as_str()).count();
    let macro_f1 = per_intent.values().map(|s| s.f1).sum::<f64>() / per_intent.len().max(1) as f64;
    let oos_recall = per_intent.get(OUT_OF_SCOPE).filter(|s| s.support > 0).map(|s| s.recall);
    let real: Vec<f64> = per_intent
        .iter()
        .filter(|(label, _)| label.as_str() != OUT_OF_SCOPE)
        .map(|(_, s)| s.f1)
        .collect();
    let in_scope_macro_f1 = real.iter().sum::<f64>() / real.len().max(1) as f64;
    let oos_messages: Vec<&Labelled> = data.iter().filter(|d| d.intent == OUT_OF_SCOPE).collect();
    let out_of_scope = (!closed_set && !oos_messages.is_empty()).then(|| {
        let (mut none, mut below, mut confident) = (0, 0, 0);
        for d in &oos_messages {
            let u = nlu.interpret(&nlu.classify(&d.text));
            match u.intent {
                None => none += 1,
                Some(_) if u.confidence >= nlu.threshold() => confident += 1,
                Some(_) => below += 1,
            }
        }
        let n = oos_messages.len();
        OutOfScopeScores {
            messages: n,
            recall: ratio(none + below, n),
            confident_wrong: ratio(confident, n),
            no_intent: ratio(none, n),
            below_threshold: ratio(below, n),
        }
    });

    let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (g, p) in gold.iter().zip(&predicted) {
        if *g != p.as_str() {
            *pairs.entry((g, p.as_str())).or_default() += 1;
        }
    }
    let mut confusions: Vec<Confusion> = pairs
        .into_iter()
        .map(|((e, p), count)| Confusion {
            expected: e.to_string(),
            predicted: p.to_string(),
            count,
        })
        .collect();
    confusions.sort_by_key(|c| std::cmp::Reverse(c.count));

    let mistakes = data
        .iter()
        .zip(&predicted)
        .filter(|(d, p)| d.intent != p.as_str())
        .map(|(d, p)| {
            let c = nlu.classify(&d.text);
            let best = (0..c.intents.len())
                .max_by(|&a, &b| c.intents[a].total_cmp(&c.intents[b]).then(b.cmp(&a)))
                .map_or((OUT_OF_SCOPE.to_string(), 0.0), |i| {
                    (nlu.intents()[i].clone(), c.intents[i])
                });
            let expected_confidence = match nlu.intents().iter().position(|n| *n == d.intent) {
                Some(i) => c.intents[i],
                None => c.out_of_scope,
            };
            Mistake {
                text: d.text.clone(),
                expected: d.intent.clone(),
                predicted: p.clone(),
                best,
                expected_confidence,
            }
        })
        .collect();

    let declared: BTreeSet<&str> = nlu.intents().iter().map(String::as_str).collect();
    let unknown_labels = gold
        .iter()
        .filter(|g| **g != OUT_OF_SCOPE && !declared.contains(**g))
        .map(|g| g.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    Report {
        total: data.len(),
        accuracy: ratio(right, data.len()),
        macro_f1,
        in_scope_macro_f1,
        oos_recall,
        out_of_scope,
        per_intent,
        confusions,
        mistakes,
        unknown_labels,
        per_second: classified as f64 / elapsed.as_secs_f64().max(1e-9),
        threshold: (!closed_set).then(|| nlu.threshold()),
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let width = self
            .per_intent
            .keys()
            .map(|k| display_width(k))
            .max()
            .unwrap_or(6)
            .max(6);
        writeln!(f, "{:w$}  precision  recall     f1  support", "intent", w = width)?;
        for (label, s) in &self.per_intent {
            let pad = width - display_width(label);
            writeln!(
                f,
                "{label}{:pad$}  {:>9.3}  {:>6.3}  {:>5.3}  {:>7}",
                "", s.precision, s.recall, s.f1, s.support
            )?;
        }
        writeln!(f)?;
        writeln!(f, "utterances      {}", self.total)?;
        writeln!(f, "accuracy        {:.3}", self.accuracy)?;
        writeln!(f, "macro-F1        {:.3}", self.macro_f1)?;
        writeln!(
            f,
            "in-scope F1     {:.3} (macro-F1 over the declared intents)",
            self.in_scope_macro_f1
        )?;
        match (self.out_of_scope, self.oos_recall) {
            (Some(o), _) => {
                writeln!(
                    f,
                    "oos recall      {:.3} of {} out-of-scope messages (no intent {:.3}, below threshold {:.3})",
                    o.recall, o.messages, o.no_intent, o.below_threshold
                )?;
                writeln!(
                    f,
                    "confident wrong {:.3} (out-of-scope messages given an intent at or above the threshold)",
                    o.confident_wrong
                )?;
            }
            (None, Some(r)) => writeln!(f, "oos recall      {r:.3}")?,
            (None, None) => writeln!(f, "oos recall      - (no `oos` utterances)")?,
        }
        match self.threshold {
            Some(t) => writeln!(f, "threshold       {t}")?,
            None => writeln!(f, "threshold       - (closed set: best intent, no out-of-scope)")?,
        }
        writeln!(f, "speed           {:.0} messages/s (one thread)", self.per_second)?;
        if !self.unknown_labels.is_empty() {
            writeln!(f, "not declared    {}", self.unknown_labels.join(", "))?;
        }
        if !self.confusions.is_empty() {
            writeln!(f)?;
            writeln!(f, "most frequent mistakes (expected → predicted):")?;
            for c in self.confusions.iter().take(15) {
                writeln!(f, "  {:>3}  {} → {}", c.count, c.expected, c.predicted)?;
            }
        }
        Ok(())
    }
}

impl Report {
    /// Every mistake on one line: expected, predicted, the best intent and its confidence,
    /// the confidence in the right label, and the message.
    pub fn mistakes_table(&self) -> String {
        let mut out = String::from("expected → predicted (best intent p, p of expected): message\n");
        for m in &self.mistakes {
            out += &format!(
                "{} → {} ({} {:.2}, {:.2}): {}\n",
                m.expected, m.predicted, m.best.0, m.best.1, m.expected_confidence, m.text
            );
        }
        out
    }
}

/// Terminal columns of a string: CJK characters take two.
fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| if (c as u32) >= 0x1100 && !c.is_ascii() { 2 } else { 1 })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kefu-eval-{}-{name}", std::process::id()));
        std::fs::write(&dir, text).unwrap();
        dir
    }

    #[test]
    fn reads_jsonl_and_csv() {
        let j = write(
            "a.jsonl",
            "{\"text\":\"在吗\",\"intent\":\"其他.问候\"}\n\n{\"text\":\"a,b\",\"intent\":\"\"}\n",
        );
        let c = write("a.csv", "text,intent\n在吗,其他.问候\n\"a,b\",none\n");
        let want = vec![
            Labelled {
                text: "在吗".into(),
                intent: "其他.问候".into(),
            },
            Labelled {
                text: "a,b".into(),
                intent: "oos".into(),
            },
        ];
        assert_eq!(read(&j).unwrap(), want);
        assert_eq!(read(&c).unwrap(), want);
        std::fs::remove_file(j).unwrap();
        std::fs::remove_file(c).unwrap();
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let j = write("b.jsonl", "{\"text\":\"x\",\"intent\":\"y\"}\n{\"text\":1}\n");
        let e = read(&j).unwrap_err().to_string();
        assert!(e.contains(":2: "), "{e}");
        let c = write("b.csv", "x,y\nonly-one-field\n");
        let e = read(&c).unwrap_err().to_string();
        assert!(e.contains(":2: expected 2 fields"), "{e}");
        std::fs::remove_file(j).unwrap();
        std::fs::remove_file(c).unwrap();
    }

    #[test]
    fn display_width_counts_cjk_double() {
        assert_eq!(display_width("售后.退货"), 9);
    }
}
