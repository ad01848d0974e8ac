//! Multinomial logistic regression: the seed's softmax `P(y|x) = exp(W_y·x + b_y) / Σ_i
//! exp(W_i·x + b_i)`, trained with L-BFGS and calibrated by temperature scaling.
//!
//! - **Objective**: the weighted mean cross-entropy plus `λ/2 ‖W‖²` (the biases are not
//!   penalised). It is convex, so the optimum does not depend on where training starts.
//! - **Optimizer**: L-BFGS (Nocedal & Wright, algorithm 7.4) with a backtracking line search
//!   that enforces the Armijo condition, from all-zero weights. Each model trains on one
//!   thread in a fixed order; the cross-validation folds train on threads of their own,
//!   each result landing in its own slot, so the same training set always gives
//!   bit-identical weights.
//! - **Calibration**: the raw softmax of a regularised model trained on a dozen examples per
//!   class is not a probability anyone should act on. The examples are split into stratified
//!   folds; a model trained without each fold scores it, and one temperature `T` is fitted to
//!   minimise the negative log-likelihood of those held-out scores (Guo et al., 2017). The
//!   final model is trained on everything and its logits divided by `T`. With
//!   [`Params::unseen_weight`], the same held-out scores, each without its own class,
//!   stand for questions of an intent nobody wrote, and a shift of the out-of-scope logit
//!   is fitted with `T` (`fit_calibration`).

use serde::{Deserialize, Serialize};

use super::features::{Bucket, SparseVec, Vocab};

/// Held-out scores of one fold: (logits, label, weight) per example.
type Scored = Vec<(Vec<f64>, usize, f64)>;

/// Training settings. Serialized only into the key of a trained model (`nlu::cache`):
/// every field is an input of training.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// L2 penalties on the weights (per unit of mean loss) to choose from by
    /// cross-validation, strongest first. Without cross-validation the first is used.
    pub lambdas: Vec<f64>,
    /// Most L-BFGS iterations.
    pub max_iter: usize,
    /// Stop when the largest gradient component has shrunk by this factor from its value
    /// at the start (relative, because the loss is a mean and its gradient small).
    pub tolerance: f64,
    /// Cross-validation folds for calibration (0 or 1: no calibration, `T = 1`).
    pub folds: usize,
    /// L-BFGS memory (correction pairs kept).
    pub memory: usize,
    /// Features found in fewer training examples than this get no weight.
    pub min_df: u32,
    /// From this many messages on, training economises: features seen only once get no
    /// weight and cross-validation uses three folds. Training time grows with features ×
    /// classes; with thousands of examples a feature seen once carries little, and two
    /// thirds of the data is plenty to calibrate on.
    pub large: usize,
    /// Weight of unseen-class examples in calibration, as a share of the held-out
    /// examples' weight (0: none). When positive, the last class is the out-of-scope
    /// class: each held-out example, its own class's score removed, is also scored as a
    /// message of a class nobody wrote, labelled out-of-scope, and calibration fits a
    /// shift of the out-of-scope logit with the temperature (see `fit_calibration`).
    pub unseen_weight: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            // Three points about a factor of three apart. On the demo shop the held-out
            // likelihood is lowest in the middle (3e-5); with only the two ends, which are
            // nearly tied, small edits to the examples flipped the choice and, with it,
            // out-of-scope recall by several points.
            lambdas: vec![1e-4, 3e-5, 1e-5],
            max_iter: 300,
            tolerance: 1e-3,
            folds: 5,
            memory: 5,
            min_df: 1,
            large: 2000,
            unseen_weight: 0.0,
        }
    }
}

/// One training example: hashed features, class, weight, and whether it may be held out
/// for calibration (keyword pseudo-examples are not messages, so they always train).
#[derive(Clone, Debug)]
pub struct Example {
    /// Hashed features with counts.
    pub features: Vec<(Bucket, u32)>,
    /// Class index.
    pub label: usize,
    /// Weight in the loss.
    pub weight: f64,
    /// Weight of the example's held-out score in the negative log-likelihood that chooses
    /// the penalty and the temperature (usually `weight`; see `Options::oos_calibration_weight`
    /// in `nlu` for why the out-of-scope corpus counts more there than in training).
    pub calibration_weight: f64,
    /// Whether the example takes part in cross-validation as a held-out message.
    pub holdout: bool,
}

/// What training found out, for `kefu eval` and logs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingReport {
    /// Distinct features seen in training (weight rows).
    pub features: usize,
    /// L-BFGS iterations of the final model.
    pub iterations: usize,
    /// The fitted temperature.
    pub temperature: f64,
    /// The L2 penalty chosen by cross-validation.
    pub lambda: f64,
    /// Accuracy of the cross-validated predictions on the held-out examples (0 when there
    /// was no calibration).
    pub cv_accuracy: f64,
    /// The fitted shift of the out-of-scope logit (0 when not fitted).
    pub oos_shift: f64,
}

/// A trained, calibrated classifier. Immutable; shared by every turn.
#[derive(Clone, Debug)]
pub struct Model {
    vocab: Vocab,
    classes: usize,
    /// `weights[row * classes + class]`.
    weights: Vec<f32>,
    bias: Vec<f32>,
    inv_temperature: f64,
    /// Added to the last (out-of-scope) class's calibrated logit (0 without
    /// [`Params::unseen_weight`]).
    oos_shift: f64,
    report: TrainingReport,
}

/// A [`Model`] taken apart ([`Model::to_raw`]), as `nlu::cache` stores it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RawModel {
    /// The bucket of each vocabulary row, in row order.
    pub buckets: Vec<Bucket>,
    /// The idf of each row.
    pub idf: Vec<f64>,
    /// The idf of a bucket never seen in training.
    pub unseen_idf: f64,
    /// Number of classes.
    pub classes: usize,
    /// `weights[row * classes + class]`.
    pub weights: Vec<f32>,
    /// One bias per class.
    pub bias: Vec<f32>,
    /// `1/T`.
    pub inv_temperature: f64,
    /// The out-of-scope shift.
    pub oos_shift: f64,
    /// What training found.
    pub report: TrainingReport,
}

impl Model {
    /// Trains and calibrates a model for `classes` classes.
    pub fn train(examples: &[Example], classes: usize, params: &Params) -> Model {
        let held = examples.iter().filter(|e| e.holdout).count();
        let economy;
        let params = if held >= params.large {
            economy = Params {
                min_df: params.min_df.max(2),
                folds: params.folds.min(3),
                ..params.clone()
            };
            &economy
        } else {
            params
        };
        let lambdas: &[f64] = if params.lambdas.is_empty() {
            &[1e-4]
        } else {
            &params.lambdas
        };
        let folds = if params.folds >= 2 && classes >= 2 && held >= params.folds {
            params.folds
        } else {
            0
        };
        let all: Vec<&Example> = examples.iter().collect();
        if folds == 0 {
            return fit_path(&all, classes, params, &lambdas[..1])
                .pop()
                .expect("one lambda");
        }
        let assignment = assign_folds(examples, folds);
        // The fold models are independent: train them on as many threads as the machine
        // offers. Each result lands in its own slot, so the outcome does not depend on
        // scheduling. Each fold walks the penalties from strong to weak, starting each
        // from the previous solution (a regularisation path: cheap, and no information
        // crosses folds).
        // The final model's path (job 0) trains alongside the folds, so the machine's
        // threads stay busy; the penalty is picked afterwards.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(folds + 1);
        let mut per_fold: Vec<Vec<Scored>> = vec![Vec::new(); folds];
        let mut finals: Vec<Model> = Vec::new();
        std::thread::scope(|scope| {
            let assignment = &assignment;
            let mut groups: Vec<Vec<(usize, &mut Vec<Scored>)>> = (0..threads).map(|_| Vec::new()).collect();
            for (i, slot) in per_fold.iter_mut().enumerate() {
                groups[(i + 1) % threads].push((i, slot));
            }
            let mut groups = groups.into_iter();
            let mine = groups.next().unwrap_or_default();
            for group in groups {
                scope.spawn(move || {
                    for (fold, out) in group {
                        *out = held_out_logits(examples, assignment, fold, classes, params, lambdas);
                    }
                });
            }
            finals = fit_path(&all, classes, params, lambdas);
            for (fold, out) in mine {
                *out = held_out_logits(examples, assignment, fold, classes, params, lambdas);
            }
        });
        // The penalty whose held-out scores, once calibrated, have the least negative
        // log-likelihood; the first (strongest) on ties.
        let mut best: Option<(f64, usize, f64, Scored)> = None;
        for (i, _) in lambdas.iter().enumerate() {
            let logits: Scored = per_fold.iter_mut().flat_map(|f| std::mem::take(&mut f[i])).collect();
            let t = fit_temperature(&logits);
            let loss = nll(&logits, 1.0 / t);
            if best.as_ref().is_none_or(|b| loss < b.0) {
                best = Some((loss, i, t, logits));
            }
        }
        let (_, chosen, temperature, logits) = best.expect("at least one penalty");
        let mut model = finals.swap_remove(chosen);
        let right: f64 = logits.iter().filter(|(z, y, _)| argmax(z) == *y).map(|x| x.2).sum();
        let total: f64 = logits.iter().map(|x| x.2).sum();
        model.report.cv_accuracy = if total > 0.0 { right / total } else { 0.0 };
        let (inv, shift) = if params.unseen_weight > 0.0 && classes >= 3 {
            fit_calibration(&logits, classes - 1, params.unseen_weight, 1.0 / temperature)
        } else {
            (1.0 / temperature, 0.0)
        };
        model.report.temperature = 1.0 / inv;
        model.report.oos_shift = shift;
        model.inv_temperature = inv;
        model.oos_shift = shift;
        model
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// What training found.
    pub fn report(&self) -> &TrainingReport {
        &self.report
    }

    /// The weights and biases, for tests that compare two trainings.
    pub fn parameters(&self) -> (&[f32], &[f32]) {
        (&self.weights, &self.bias)
    }

    /// Everything the model is made of, for storing it (`nlu::cache`): the vocabulary's
    /// buckets in row order, their idf and the unseen idf, the class count, the weights
    /// (`row * classes + class`), the biases, `1/T`, the out-of-scope shift, the report.
    pub(crate) fn to_raw(&self) -> RawModel {
        let (buckets, idf, unseen_idf) = self.vocab.to_raw();
        RawModel {
            buckets,
            idf,
            unseen_idf,
            classes: self.classes,
            weights: self.weights.clone(),
            bias: self.bias.clone(),
            inv_temperature: self.inv_temperature,
            oos_shift: self.oos_shift,
            report: self.report.clone(),
        }
    }

    /// The model [`to_raw`](Self::to_raw) took apart, or why these parts cannot be one:
    /// every length agrees, every bucket is in range and given once, every number is
    /// finite. A stored model is read from outside the process, so nothing about it is
    /// trusted; a model built here can never index out of bounds at prediction.
    pub(crate) fn from_raw(raw: RawModel) -> Result<Model, String> {
        let rows = raw.buckets.len();
        if raw.classes == 0 || raw.bias.len() != raw.classes {
            return Err(format!("{} biases for {} classes", raw.bias.len(), raw.classes));
        }
        if rows.checked_mul(raw.classes) != Some(raw.weights.len()) {
            return Err(format!(
                "{} weights for {rows} rows of {} classes",
                raw.weights.len(),
                raw.classes
            ));
        }
        let finite32 = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !finite32(&raw.weights) || !finite32(&raw.bias) {
            return Err("a weight is not a finite number".into());
        }
        if !(raw.inv_temperature.is_finite() && raw.inv_temperature > 0.0 && raw.oos_shift.is_finite()) {
            return Err("the calibration is not a finite number".into());
        }
        let vocab = Vocab::from_raw(raw.buckets, raw.idf, raw.unseen_idf)?;
        Ok(Model {
            vocab,
            classes: raw.classes,
            weights: raw.weights,
            bias: raw.bias,
            inv_temperature: raw.inv_temperature,
            oos_shift: raw.oos_shift,
            report: raw.report,
        })
    }

    /// Uncalibrated logits of a document and the coverage of its vector.
    fn raw_logits(&self, doc: &[(Bucket, u32)]) -> (Vec<f64>, f64) {
        let x = self.vocab.vectorize(doc);
        (self.logits_of(&x), x.coverage)
    }

    fn logits_of(&self, x: &SparseVec) -> Vec<f64> {
        let k = self.classes;
        let mut z: Vec<f64> = self.bias.iter().map(|&b| f64::from(b)).collect();
        for &(row, v) in &x.entries {
            let w = &self.weights[row as usize * k..row as usize * k + k];
            for (zc, &wc) in z.iter_mut().zip(w) {
                *zc += v * f64::from(wc);
            }
        }
        z
    }

    /// Calibrated class probabilities of a document (hashed features), and the share of the
    /// document's feature mass the model has seen in training.
    pub fn predict(&self, doc: &[(Bucket, u32)]) -> (Vec<f64>, f64) {
        let x = self.vocab.vectorize(doc);
        let mut z = self.logits_of(&x);
        for v in &mut z {
            *v *= self.inv_temperature;
        }
        if let Some(last) = z.last_mut() {
            *last += self.oos_shift;
        }
        softmax_in_place(&mut z);
        (z, x.coverage)
    }
}

/// Trains without `fold` along the penalty path and scores the examples of `fold` with
/// each model: one list of (logits, label, weight) per penalty.
fn held_out_logits(
    examples: &[Example],
    folds: &[Option<usize>],
    fold: usize,
    classes: usize,
    params: &Params,
    lambdas: &[f64],
) -> Vec<Scored> {
    let train: Vec<&Example> = examples
        .iter()
        .zip(folds)
        .filter(|(_, f)| **f != Some(fold))
        .map(|(e, _)| e)
        .collect();
    fit_path(&train, classes, params, lambdas)
        .into_iter()
        .map(|model| {
            examples
                .iter()
                .zip(folds)
                .filter(|(_, f)| **f == Some(fold))
                .map(|(e, _)| (model.raw_logits(&e.features).0, e.label, e.calibration_weight))
                .collect()
        })
        .collect()
}

/// Stratified fold of each example (`None` = always trains): the i-th held-out example of
/// a class goes to fold `i mod k`, so every class is spread over the folds.
fn assign_folds(examples: &[Example], k: usize) -> Vec<Option<usize>> {
    let mut seen_per_class: Vec<usize> = Vec::new();
    examples
        .iter()
        .map(|e| {
            if !e.holdout {
                return None;
            }
            if seen_per_class.len() <= e.label {
                seen_per_class.resize(e.label + 1, 0);
            }
            let i = seen_per_class[e.label];
            seen_per_class[e.label] += 1;
            // Offset by class so that small classes do not all start in fold 0.
            Some((i + e.label) % k)
        })
        .collect()
}

fn argmax(z: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in z.iter().enumerate() {
        if *v > z[best] {
            best = i;
        }
    }
    best
}

/// Softmax, stable against overflow.
pub fn softmax_in_place(z: &mut [f64]) {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in z.iter_mut() {
        *v /= sum;
    }
}

/// Weighted negative log-likelihood of scores whose logits are multiplied by `inv`.
fn nll(logits: &[(Vec<f64>, usize, f64)], inv: f64) -> f64 {
    let mut total = 0.0;
    for (z, y, w) in logits {
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max) * inv;
        let lse = z.iter().map(|v| (v * inv - max).exp()).sum::<f64>().ln() + max;
        total += w * (lse - z[*y] * inv);
    }
    total
}

/// The temperature minimising the weighted held-out negative log-likelihood, by golden-
/// section search on `ln T` in `[ln 0.05, ln 20]` (the NLL is unimodal in `T`).
fn fit_temperature(logits: &[(Vec<f64>, usize, f64)]) -> f64 {
    let nll = |log_t: f64| nll(logits, (-log_t).exp());
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - phi * (b - a);
    let mut d = a + phi * (b - a);
    let (mut fc, mut fd) = (nll(c), nll(d));
    for _ in 0..80 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - phi * (b - a);
            fc = nll(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + phi * (b - a);
            fd = nll(d);
        }
    }
    ((a + b) / 2.0).exp()
}

/// Temperature and out-of-scope shift fitted together on held-out scores and unseen-class
/// examples made from them; returns `(1/T, shift)`.
///
/// A held-out message of class `y`, scored without `y`'s logit, is what the model would see
/// if nobody had written intent `y`: a question in the shop's own words about a topic
/// with no intent. Labelled out-of-scope (class `oos`), these examples teach calibration
/// how flat the scores of such a question are, at no extra training: the fold models are
/// the ones that chose the penalty. Calibrated probabilities are
/// `softmax(z/T + shift·e_oos)`; the shift raises the out-of-scope class against every
/// intent by the same amount, so it wins exactly where no intent's logit stands out
/// (the intents' log-sum-exp, an energy score, is below the out-of-scope logit plus the
/// shift) and leaves a clear winner alone. The logits are linear in `(1/T, shift)`, so
/// the weighted negative log-likelihood is convex in them and Newton's method finds the
/// optimum in a few steps. The unseen-class examples weigh `unseen_weight` times the
/// held-out intent examples in total.
fn fit_calibration(scored: &[(Vec<f64>, usize, f64)], oos: usize, unseen_weight: f64, inv0: f64) -> (f64, f64) {
    // (logits, label, weight, class whose logit is removed)
    let mut data: Vec<(&[f64], usize, f64, Option<usize>)> =
        scored.iter().map(|(z, y, w)| (z.as_slice(), *y, *w, None)).collect();
    let in_scope: f64 = scored.iter().filter(|(_, y, _)| *y != oos).map(|x| x.2).sum();
    if in_scope <= 0.0 {
        return (inv0, 0.0);
    }
    let share = unseen_weight;
    for (z, y, w) in scored.iter().filter(|(_, y, _)| *y != oos) {
        data.push((z.as_slice(), oos, w * share, Some(*y)));
    }
    // Objective, gradient and Hessian in (s, d) = (1/T, shift).
    let eval = |s: f64, d: f64| -> (f64, [f64; 2], [f64; 3]) {
        let (mut f, mut g, mut h) = (0.0, [0.0; 2], [0.0; 3]);
        let mut p: Vec<f64> = Vec::new();
        for &(z, y, w, removed) in &data {
            p.clear();
            p.extend(z.iter().enumerate().map(|(i, v)| {
                if Some(i) == removed {
                    f64::NEG_INFINITY
                } else {
                    v * s + if i == oos { d } else { 0.0 }
                }
            }));
            let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for v in p.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let zy = z[y] * s + if y == oos { d } else { 0.0 };
            f += w * (sum.ln() + max - zy);
            let (mut ez, mut ez2) = (0.0, 0.0);
            for (i, v) in p.iter_mut().enumerate() {
                *v /= sum;
                if Some(i) != removed {
                    ez += *v * z[i];
                    ez2 += *v * z[i] * z[i];
                }
            }
            let po = p[oos];
            g[0] += w * (ez - z[y]);
            g[1] += w * (po - if y == oos { 1.0 } else { 0.0 });
            h[0] += w * (ez2 - ez * ez);
            h[1] += w * po * (z[oos] - ez);
            h[2] += w * po * (1.0 - po);
        }
        (f, g, h)
    };
    let (mut s, mut d) = (inv0, 0.0);
    let (mut f, mut g, mut h) = eval(s, d);
    for _ in 0..50 {
        // Newton step on the 2x2 system, with a small ridge in case it is near singular.
        let ridge = 1e-9 * (h[0] + h[2]).max(1e-12);
        let (a, b, c) = (h[0] + ridge, h[1], h[2] + ridge);
        let det = a * c - b * b;
        if det <= 0.0 {
            break;
        }
        let ds = -(c * g[0] - b * g[1]) / det;
        let dd = -(a * g[1] - b * g[0]) / det;
        let mut step = 1.0;
        let mut improved = false;
        for _ in 0..30 {
            let (ns, nd) = (s + step * ds, d + step * dd);
            if ns > 0.0 {
                let (nf, ng, nh) = eval(ns, nd);
                if nf <= f {
                    let done = f - nf <= 1e-12 * f.abs().max(1.0);
                    (s, d, f, g, h) = (ns, nd, nf, ng, nh);
                    improved = !done;
                    break;
                }
            }
            step *= 0.5;
        }
        if !improved {
            break;
        }
    }
    (s.clamp(1.0 / 20.0, 1.0 / 0.05), d)
}

/// The training problem: examples vectorised against one vocabulary.
struct Problem {
    x: Vec<SparseVec>,
    y: Vec<usize>,
    /// Example weights divided by their sum (the loss is a weighted mean).
    w: Vec<f64>,
    rows: usize,
    classes: usize,
    lambda: f64,
}

impl Problem {
    fn dim(&self) -> usize {
        self.rows * self.classes + self.classes
    }

    /// The objective and its gradient at `theta` (weights row-major, then the biases).
    /// Parameters and gradient are `f32`: the optimizer's time goes into streaming these
    /// long vectors through memory, and half the bytes is nearly half the time. Sums that
    /// need the precision (logits, loss, dot products) are taken in `f64`.
    fn eval(&self, theta: &[f32], grad: &mut [f32]) -> f64 {
        let k = self.classes;
        let nw = self.rows * k;
        let (weights, bias) = theta.split_at(nw);
        grad.fill(0.0);
        let mut loss = 0.0;
        let mut z = vec![0.0f64; k];
        let mut dz = vec![0.0f32; k];
        for ((x, &y), &w) in self.x.iter().zip(&self.y).zip(&self.w) {
            for (zc, &b) in z.iter_mut().zip(bias) {
                *zc = f64::from(b);
            }
            for &(row, v) in &x.entries {
                let wr = &weights[row as usize * k..row as usize * k + k];
                for (zc, &wc) in z.iter_mut().zip(wr) {
                    *zc += v * f64::from(wc);
                }
            }
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for v in z.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            // z now holds exp(z - max); p = z / sum.
            loss += w * (sum.ln() + max - (z[y].ln() + max));
            let inv = 1.0 / sum;
            for (c, v) in z.iter_mut().enumerate() {
                *v = w * (*v * inv - if c == y { 1.0 } else { 0.0 });
            }
            for (d32, &dc) in dz.iter_mut().zip(&z) {
                *d32 = dc as f32;
            }
            for &(row, v) in &x.entries {
                let v = v as f32;
                let g = &mut grad[row as usize * k..row as usize * k + k];
                for (gc, &dc) in g.iter_mut().zip(&dz) {
                    *gc += v * dc;
                }
            }
            for (gb, &dc) in grad[nw..].iter_mut().zip(&dz) {
                *gb += dc;
            }
        }
        let penalty = dot(weights, weights);
        let lambda = self.lambda as f32;
        for (g, &t) in grad[..nw].iter_mut().zip(weights) {
            *g += lambda * t;
        }
        loss + 0.5 * self.lambda * penalty
    }
}

/// Dot product with eight independent partial sums: a single running sum is one long
/// dependency chain the CPU cannot overlap, and it dominated L-BFGS's time. The order of
/// additions is fixed, so results are still reproducible.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    // Sixteen f32 lanes (one AVX-512 register, two AVX ones); each lane sums a sixteenth
    // of the terms, so rounding stays small, and the lanes are added in f64.
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    acc.iter().map(|&v| f64::from(v)).sum::<f64>() + tail
}

/// Trains one model per penalty in `lambdas` on `examples` (no calibration), each
/// optimisation starting from the previous one's solution.
fn fit_path(examples: &[&Example], classes: usize, params: &Params, lambdas: &[f64]) -> Vec<Model> {
    let vocab = Vocab::build_pruned(examples.iter().map(|e| e.features.as_slice()), params.min_df);
    let total: f64 = examples.iter().map(|e| e.weight).sum::<f64>().max(f64::MIN_POSITIVE);
    let mut problem = Problem {
        x: examples.iter().map(|e| vocab.vectorize(&e.features)).collect(),
        y: examples.iter().map(|e| e.label).collect(),
        w: examples.iter().map(|e| e.weight / total).collect(),
        rows: vocab.len(),
        classes,
        lambda: lambdas[0],
    };
    let nw = problem.rows * classes;
    let mut theta = vec![0.0f32; problem.dim()];
    let mut models = Vec::new();
    let mut reference = None;
    for &lambda in lambdas {
        problem.lambda = lambda;
        let mut iterations = 0;
        if classes >= 2 && !examples.is_empty() {
            let (t, i) = lbfgs(&problem, params, theta, &mut reference);
            theta = t;
            iterations = i;
        }
        models.push(Model {
            report: TrainingReport {
                features: vocab.len(),
                iterations,
                temperature: 1.0,
                lambda,
                cv_accuracy: 0.0,
                oos_shift: 0.0,
            },
            vocab: vocab.clone(),
            classes,
            weights: theta[..nw].to_vec(),
            bias: theta[nw..].to_vec(),
            inv_temperature: 1.0,
            oos_shift: 0.0,
        });
    }
    models
}

/// Minimises the problem's objective from `start`; returns the parameters and the number of
/// iterations taken.
///
/// Convergence is judged against `reference`, the largest gradient component at zero (the
/// start of the path), so a warm start is not held to a tighter standard than a cold one.
fn lbfgs(problem: &Problem, params: &Params, start: Vec<f32>, reference: &mut Option<f32>) -> (Vec<f32>, usize) {
    let n = problem.dim();
    let mut x = start;
    let mut g = vec![0.0f32; n];
    let mut f = problem.eval(&x, &mut g);
    let mut s_hist: Vec<Vec<f32>> = Vec::new();
    let mut y_hist: Vec<Vec<f32>> = Vec::new();
    let mut rho_hist: Vec<f64> = Vec::new();
    let mut d = vec![0.0f32; n];
    let mut x_new = vec![0.0f32; n];
    let mut g_new = vec![0.0f32; n];
    let mut alpha = vec![0.0f64; params.memory];
    let max_abs = |v: &[f32]| v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let g0 = *reference.get_or_insert(max_abs(&g));
    let mut iterations = 0;
    while iterations < params.max_iter {
        if f64::from(max_abs(&g)) <= params.tolerance * f64::from(g0) {
            break;
        }
        iterations += 1;
        // Two-loop recursion: d = -H g.
        d.copy_from_slice(&g);
        let m = s_hist.len();
        for i in (0..m).rev() {
            alpha[i] = rho_hist[i] * dot(&s_hist[i], &d);
            let a = alpha[i] as f32;
            for (dv, yv) in d.iter_mut().zip(&y_hist[i]) {
                *dv -= a * yv;
            }
        }
        let gamma = if m > 0 {
            dot(&s_hist[m - 1], &y_hist[m - 1]) / dot(&y_hist[m - 1], &y_hist[m - 1])
        } else {
            1.0 / dot(&g, &g).sqrt().max(1e-12)
        };
        let gamma = gamma as f32;
        for dv in d.iter_mut() {
            *dv *= gamma;
        }
        for i in 0..m {
            let beta = rho_hist[i] * dot(&y_hist[i], &d);
            let c = (alpha[i] - beta) as f32;
            for (dv, sv) in d.iter_mut().zip(&s_hist[i]) {
                *dv += sv * c;
            }
        }
        for dv in d.iter_mut() {
            *dv = -*dv;
        }
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho_hist.clear();
            let scale = (1.0 / dot(&g, &g).sqrt().max(1e-12)) as f32;
            for (dv, gv) in d.iter_mut().zip(&g) {
                *dv = -gv * scale;
            }
            slope = dot(&g, &d);
        }
        // Backtracking line search with the Armijo condition.
        let mut step = 1.0f64;
        let mut f_new;
        let mut tries = 0;
        loop {
            let st = step as f32;
            for ((xn, xv), dv) in x_new.iter_mut().zip(&x).zip(&d) {
                *xn = xv + st * dv;
            }
            f_new = problem.eval(&x_new, &mut g_new);
            if f_new <= f + 1e-4 * step * slope || tries >= 30 {
                break;
            }
            step *= 0.5;
            tries += 1;
        }
        if f_new > f {
            // No progress possible along any direction we can find: we are at the optimum
            // within floating-point precision.
            break;
        }
        let mut s: Vec<f32> = if s_hist.len() == params.memory {
            s_hist.remove(0)
        } else {
            vec![0.0; n]
        };
        let mut yv: Vec<f32> = if y_hist.len() == params.memory {
            rho_hist.remove(0);
            y_hist.remove(0)
        } else {
            vec![0.0; n]
        };
        for (((sv, yy), (xn, xo)), (gn, go)) in s
            .iter_mut()
            .zip(yv.iter_mut())
            .zip(x_new.iter().zip(&x))
            .zip(g_new.iter().zip(&g))
        {
            *sv = xn - xo;
            *yy = gn - go;
        }
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            rho_hist.push(1.0 / sy);
            s_hist.push(s);
            y_hist.push(yv);
        }
        let decrease = f - f_new;
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut g, &mut g_new);
        f = f_new;
        if decrease <= 1e-10 * f.abs().max(1.0) {
            break;
        }
    }
    (x, iterations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nlu::features::Featurizer;

    fn examples(data: &[(&str, usize)]) -> Vec<Example> {
        let f = Featurizer::new(&[]);
        data.iter()
            .map(|(t, y)| Example {
                features: f.features(t),
                label: *y,
                weight: 1.0,
                calibration_weight: 1.0,
                holdout: true,
            })
            .collect()
    }

    const DATA: &[(&str, usize)] = &[
        ("我想退货", 0),
        ("怎么退货", 0),
        ("这个能退吗", 0),
        ("退掉吧", 0),
        ("申请退货", 0),
        ("什么时候发货", 1),
        ("几天能发货", 1),
        ("今天发吗", 1),
        ("发货时间", 1),
        ("多久发出", 1),
        ("能开发票吗", 2),
        ("我要开票", 2),
        ("发票抬头", 2),
        ("专票可以吗", 2),
        ("电子发票", 2),
    ];

    #[test]
    fn gradient_matches_finite_differences() {
        let ex = examples(DATA);
        let refs: Vec<&Example> = ex.iter().collect();
        let vocab = Vocab::build(refs.iter().map(|e| e.features.as_slice()));
        let p = Problem {
            x: refs.iter().map(|e| vocab.vectorize(&e.features)).collect(),
            y: refs.iter().map(|e| e.label).collect(),
            w: vec![1.0 / refs.len() as f64; refs.len()],
            rows: vocab.len(),
            classes: 3,
            lambda: 0.01,
        };
        let theta: Vec<f32> = (0..p.dim()).map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.5).collect();
        let mut g = vec![0.0f32; p.dim()];
        p.eval(&theta, &mut g);
        let mut scratch = vec![0.0f32; p.dim()];
        for i in [0, 5, 17, p.dim() - 1, p.dim() - 3] {
            let mut t = theta.clone();
            // f32 parameters: a step that is exact in f32 and large enough to be seen.
            t[i] += 1.0 / 1024.0;
            let up = p.eval(&t, &mut scratch);
            t[i] -= 2.0 / 1024.0;
            let down = p.eval(&t, &mut scratch);
            let numeric = (up - down) * 512.0;
            let analytic = f64::from(g[i]);
            assert!(
                (numeric - analytic).abs() < 1e-4,
                "component {i}: {numeric} vs {analytic}"
            );
        }
    }

    #[test]
    fn training_separates_the_classes_and_is_deterministic() {
        let ex = examples(DATA);
        let params = Params::default();
        let a = Model::train(&ex, 3, &params);
        let b = Model::train(&ex, 3, &params);
        assert_eq!(a.parameters(), b.parameters());
        assert_eq!(a.report(), b.report());
        let f = Featurizer::new(&[]);
        for (text, want) in [("我要退货", 0), ("啥时候发货", 1), ("开个发票", 2)] {
            let (p, _) = a.predict(&f.features(text));
            assert_eq!(argmax(&p), want, "{text}: {p:?}");
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn unseen_class_examples_shift_the_out_of_scope_class_up_where_no_intent_stands_out() {
        // Three intents and an out-of-scope class (3). Held-out messages are right and
        // clear (their own logit 4, the others 0): without their own class the rest is
        // flat, which is how a question of an unwritten intent looks.
        let scored: Scored = (0..30)
            .map(|i| {
                let y = i % 3;
                let mut z = vec![0.0, 0.0, 0.0, -1.0];
                z[y] = 4.0;
                (z, y, 1.0)
            })
            .chain((0..10).map(|_| (vec![0.0, 0.0, 0.0, 2.0], 3, 1.0)))
            .collect();
        let (inv, shift) = fit_calibration(&scored, 3, 0.5, 1.0);
        assert!(shift > 0.5, "shift {shift}");
        let p = |z: &[f64]| {
            let mut z: Vec<f64> = z.iter().map(|v| v * inv).collect();
            z[3] += shift;
            softmax_in_place(&mut z);
            z
        };
        // A flat message is out of scope; a clear one keeps its intent.
        assert!(p(&[0.5, 0.5, 0.5, -1.0])[3] > 0.5);
        assert!(p(&[4.0, 0.0, 0.0, -1.0])[0] > 0.8);
        // Without unseen-class examples nothing moves: the temperature fit alone.
        let plain = Params::default();
        assert_eq!(plain.unseen_weight, 0.0);
    }

    #[test]
    fn temperature_flattens_overconfident_scores() {
        // Held-out logits that are confidently wrong half the time need T > 1.
        let logits: Scored = (0..20)
            .map(|i| (vec![5.0, 0.0], if i % 2 == 0 { 0 } else { 1 }, 1.0))
            .collect();
        assert!(fit_temperature(&logits) > 5.0);
        // Confidently right: T < 1 sharpens.
        let right: Scored = (0..20).map(|_| (vec![1.0, 0.0], 0, 1.0)).collect();
        assert!(fit_temperature(&right) < 1.0);
    }
}
