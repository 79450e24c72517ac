//! L2-regularised logistic regression, the classifier MTEB fits on embeddings for its classification tasks
//! (`sklearn.linear_model.LogisticRegression(max_iter=100)`: `C = 1`, L2 penalty, solver `lbfgs`, tolerance
//! `1e-4`, with intercept).
//!
//! # The problem solved
//! As scikit-learn, this minimises `C * sum_i logloss_i + 0.5 * ||W||^2` (the intercepts are not penalised),
//! scaled by `1 / (C n)` so that the objective is the *mean* log-loss plus `||W||^2 / (2 C n)`; the gradient
//! tolerance applies to that scaled objective, as `scipy.optimize.minimize(method="L-BFGS-B", options={"gtol":
//! tol, "ftol": 64 * eps})` applies it for scikit-learn.
//!
//! - With more than two classes the model is multinomial (softmax): one weight row and intercept per class.
//! - With two classes it is binomial, as scikit-learn's: one weight row and intercept for class 1 (class 0 has
//!   probability `1 - sigmoid(w.x + b)`). This is *not* the same solution as a two-class softmax with the same
//!   penalty, so the distinction matters for agreement with scikit-learn.
//!
//! # Solver
//! L-BFGS (memory 10, as scipy's default) with a strong-Wolfe line search (`c1 = 1e-3`, `c2 = 0.9`, at most 50
//! evaluations, as scikit-learn asks of scipy), first step `1 / ||g||`, in `f64`, single-threaded and therefore
//! deterministic. It stops when the largest gradient component is at most `tol`, when the relative decrease of the
//! objective is at most `64 * f64::EPSILON`, or after `max_iter` iterations ([`Model::converged`] tells which).
//! The objective is strictly convex, so where both solvers converge they agree on the solution to within the
//! tolerance; the iterates in between differ (scipy's L-BFGS-B uses a different line search), so a fit that
//! stops at `max_iter` before converging can differ from scikit-learn's equally unconverged one.

use crate::error::{Error, Result};
use compressor_models::rng::Rng;

/// Settings of [`fit_with`]; the defaults are scikit-learn's (`C = 1`, `max_iter = 100`, `tol = 1e-4`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Inverse regularisation strength (`C`); larger means a weaker penalty.
    pub c: f64,
    /// Most L-BFGS iterations.
    pub max_iter: usize,
    /// Stop when every gradient component of the scaled objective is at most this.
    pub tol: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            c: 1.0,
            max_iter: 100,
            tol: 1e-4,
        }
    }
}

/// A fitted logistic-regression classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    n_classes: usize,
    n_features: usize,
    /// One row per class (multinomial), or one row for class 1 (binary).
    coef: Vec<Vec<f64>>,
    intercept: Vec<f64>,
    n_iter: usize,
    converged: bool,
}

const METRIC_FIT: &str = "logreg::fit";
const METRIC_PREDICT: &str = "logreg::predict";

/// Fits with `tol = 1e-4` (see [`fit_with`]). MTEB's setting is `c = 1.0`, `max_iter = 100`.
///
/// # Errors
/// As [`fit_with`].
pub fn fit(
    x: &[Vec<f32>],
    y: &[usize],
    n_classes: usize,
    c: f64,
    max_iter: usize,
) -> Result<Model> {
    fit_with(
        x,
        y,
        n_classes,
        &Options {
            c,
            max_iter,
            ..Options::default()
        },
    )
}

/// Fits a logistic regression of labels `y` (in `0..n_classes`) on the rows of `x`.
///
/// # Errors
/// Empty `x`, rows of different lengths, a non-finite feature, `y` of another length than `x`, a label out of
/// range, fewer than two classes, a class without a sample (its intercept would diverge), or a non-positive `c`
/// or negative `tol`.
pub fn fit_with(x: &[Vec<f32>], y: &[usize], n_classes: usize, options: &Options) -> Result<Model> {
    let (flat, n_features) = flatten(METRIC_FIT, x, None)?;
    if y.len() != x.len() {
        return Err(Error::LengthMismatch {
            metric: METRIC_FIT,
            left: "x",
            left_len: x.len(),
            right: "y",
            right_len: y.len(),
        });
    }
    if n_classes < 2 {
        return Err(Error::InvalidParameter {
            metric: METRIC_FIT,
            name: "n_classes",
            value: n_classes.to_string(),
            expected: "a classifier needs at least 2 classes".into(),
        });
    }
    if !(options.c.is_finite() && options.c > 0.0) {
        return Err(Error::InvalidParameter {
            metric: METRIC_FIT,
            name: "c",
            value: options.c.to_string(),
            expected: "must be a positive finite number".into(),
        });
    }
    if !(options.tol.is_finite() && options.tol >= 0.0) {
        return Err(Error::InvalidParameter {
            metric: METRIC_FIT,
            name: "tol",
            value: options.tol.to_string(),
            expected: "must be a non-negative finite number".into(),
        });
    }
    let mut counts = vec![0usize; n_classes];
    for (index, &label) in y.iter().enumerate() {
        if label >= n_classes {
            return Err(Error::LabelOutOfRange {
                metric: METRIC_FIT,
                input: "y",
                index,
                label,
                n_classes,
            });
        }
        counts[label] += 1;
    }
    if let Some(class) = counts.iter().position(|&c| c == 0) {
        return Err(Error::ClassWithoutSamples {
            metric: METRIC_FIT,
            class,
            n_classes,
        });
    }

    let n_rows = if n_classes == 2 { 1 } else { n_classes };
    let problem = Problem {
        x: &flat,
        y,
        n: x.len(),
        d: n_features,
        n_rows,
        l2: 1.0 / (options.c * x.len() as f64),
    };
    let w0 = vec![0.0; n_rows * (n_features + 1)];
    let result = lbfgs(
        |w, g| problem.loss_grad(w, g),
        w0,
        options.max_iter,
        options.tol,
        64.0 * f64::EPSILON,
    );
    let stride = n_features + 1;
    let coef = (0..n_rows)
        .map(|r| result.x[r * stride..r * stride + n_features].to_vec())
        .collect();
    let intercept = (0..n_rows)
        .map(|r| result.x[r * stride + n_features])
        .collect();
    Ok(Model {
        n_classes,
        n_features,
        coef,
        intercept,
        n_iter: result.n_iter,
        converged: result.converged,
    })
}

impl Model {
    /// Class probabilities, one row of `n_classes` per row of `x` (`predict_proba`).
    ///
    /// # Errors
    /// Empty `x`, a row whose length is not the number of features fitted, or a non-finite feature.
    pub fn predict_proba(&self, x: &[Vec<f32>]) -> Result<Vec<Vec<f64>>> {
        let (flat, d) = flatten(METRIC_PREDICT, x, Some(self.n_features))?;
        let mut z = vec![0.0; self.coef.len()];
        Ok(flat
            .chunks_exact(d)
            .take(x.len())
            .map(|row| {
                for (zr, (w, b)) in z.iter_mut().zip(self.coef.iter().zip(&self.intercept)) {
                    *zr = dot(w, row) + b;
                }
                if self.n_classes == 2 {
                    let p1 = sigmoid(z[0]);
                    vec![1.0 - p1, p1]
                } else {
                    softmax(&z)
                }
            })
            .collect())
    }

    /// The most probable class of each row of `x` (the first one on a tie, as numpy's `argmax`).
    ///
    /// # Errors
    /// As [`Model::predict_proba`].
    pub fn predict(&self, x: &[Vec<f32>]) -> Result<Vec<usize>> {
        Ok(self
            .predict_proba(x)?
            .iter()
            .map(|p| {
                let mut best = 0;
                for (i, &v) in p.iter().enumerate() {
                    if v > p[best] {
                        best = i;
                    }
                }
                best
            })
            .collect())
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Number of features (embedding dimensions).
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Weights: one row per class, or (two classes) one row for class 1, as scikit-learn's `coef_`.
    pub fn coef(&self) -> &[Vec<f64>] {
        &self.coef
    }

    /// Intercepts, one per row of [`Model::coef`] (`intercept_`).
    pub fn intercept(&self) -> &[f64] {
        &self.intercept
    }

    /// L-BFGS iterations run (`n_iter_`).
    pub fn n_iter(&self) -> usize {
        self.n_iter
    }

    /// Whether the solver met its tolerance before `max_iter` (scikit-learn warns `ConvergenceWarning` if not).
    pub fn converged(&self) -> bool {
        self.converged
    }
}

/// Indices of at most `samples_per_label` examples of each label, chosen as MTEB's classification tasks choose
/// their training subsets (`_undersample_data`): walk a random permutation of all indices and keep an index while
/// its label has fewer than `samples_per_label` kept. The result is in permutation order. MTEB runs this once per
/// experiment (`n_experiments = 10`, `samples_per_label = 8` by default) with numpy's generator, so its subsets
/// cannot be reproduced here, only their distribution.
pub fn undersample(labels: &[usize], samples_per_label: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    rng.shuffle(&mut order);
    let mut taken: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    order
        .into_iter()
        .filter(|&i| {
            let count = taken.entry(labels[i]).or_default();
            if *count < samples_per_label {
                *count += 1;
                true
            } else {
                false
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// The objective

/// Copies rows into one row-major `f64` buffer, checking their lengths and values (also used by k-means).
pub(crate) fn flatten(
    metric: &'static str,
    x: &[Vec<f32>],
    expected: Option<usize>,
) -> Result<(Vec<f64>, usize)> {
    if x.is_empty() {
        return Err(Error::Empty { metric, input: "x" });
    }
    let d = expected.unwrap_or(x[0].len());
    if d == 0 {
        return Err(Error::Empty {
            metric,
            input: "x[0]",
        });
    }
    let mut flat = Vec::with_capacity(x.len() * d);
    for (row, v) in x.iter().enumerate() {
        if v.len() != d {
            return Err(Error::RaggedRows {
                metric,
                input: "x",
                row,
                expected: d,
                found: v.len(),
            });
        }
        for (j, &value) in v.iter().enumerate() {
            if !value.is_finite() {
                return Err(Error::NotFinite {
                    metric,
                    input: "x",
                    index: row * d + j,
                    value: f64::from(value),
                });
            }
            flat.push(f64::from(value));
        }
    }
    Ok((flat, d))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + exp(z))` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

fn log_sum_exp(z: &[f64]) -> f64 {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let lse = log_sum_exp(z);
    z.iter().map(|v| (v - lse).exp()).collect()
}

struct Problem<'a> {
    /// `n x d`, row-major.
    x: &'a [f64],
    y: &'a [usize],
    n: usize,
    d: usize,
    /// 1 (binomial) or the number of classes (multinomial).
    n_rows: usize,
    /// Penalty strength on the mean loss: `1 / (C n)`.
    l2: f64,
}

impl Problem<'_> {
    /// Mean log-loss plus `l2/2 ||W||^2`; its gradient written into `grad`. Parameters: row `r` of the model is
    /// `w[r (d+1) .. r (d+1) + d]`, its intercept `w[r (d+1) + d]`.
    fn loss_grad(&self, w: &[f64], grad: &mut [f64]) -> f64 {
        let (d, stride) = (self.d, self.d + 1);
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        let mut z = vec![0.0; self.n_rows];
        for (i, xi) in self.x.chunks_exact(d).take(self.n).enumerate() {
            let xi = &xi[..d];
            for (r, zr) in z.iter_mut().enumerate() {
                *zr = dot(&w[r * stride..r * stride + d], xi) + w[r * stride + d];
            }
            let yi = self.y[i];
            if self.n_rows == 1 {
                let target = if yi == 1 { 1.0 } else { 0.0 };
                loss += softplus(z[0]) - target * z[0];
                z[0] = sigmoid(z[0]) - target;
            } else {
                let lse = log_sum_exp(&z);
                loss += lse - z[yi];
                for (r, zr) in z.iter_mut().enumerate() {
                    *zr = (*zr - lse).exp() - if r == yi { 1.0 } else { 0.0 };
                }
            }
            // z now holds d loss / d logits
            for (r, &gz) in z.iter().enumerate() {
                let g = &mut grad[r * stride..(r + 1) * stride];
                for (gj, &xj) in g[..d].iter_mut().zip(xi) {
                    *gj += gz * xj;
                }
                g[d] += gz;
            }
        }
        let inv_n = 1.0 / self.n as f64;
        loss *= inv_n;
        grad.iter_mut().for_each(|g| *g *= inv_n);
        for r in 0..self.n_rows {
            let row = &w[r * stride..r * stride + d];
            loss += 0.5 * self.l2 * dot(row, row);
            for (gj, &wj) in grad[r * stride..r * stride + d].iter_mut().zip(row) {
                *gj += self.l2 * wj;
            }
        }
        loss
    }
}

// ---------------------------------------------------------------------------------------------------------------
// L-BFGS

struct LbfgsResult {
    x: Vec<f64>,
    n_iter: usize,
    converged: bool,
}

const MEMORY: usize = 10;
const MAX_LINE_SEARCH: usize = 50;
const C1: f64 = 1e-3;
const C2: f64 = 0.9;

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Minimises `f` (which returns the value and writes the gradient) from `x0`.
fn lbfgs(
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    x0: Vec<f64>,
    max_iter: usize,
    gtol: f64,
    ftol: f64,
) -> LbfgsResult {
    let n = x0.len();
    let mut x = x0;
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    if max_abs(&g) <= gtol {
        return LbfgsResult {
            x,
            n_iter: 0,
            converged: true,
        };
    }
    let mut s_hist: Vec<Vec<f64>> = Vec::with_capacity(MEMORY);
    let mut y_hist: Vec<Vec<f64>> = Vec::with_capacity(MEMORY);
    let mut rho_hist: Vec<f64> = Vec::with_capacity(MEMORY);
    let mut x_new = vec![0.0; n];
    let mut g_new = vec![0.0; n];
    for iter in 1..=max_iter {
        let mut dir = two_loop(&g, &s_hist, &y_hist, &rho_hist);
        let mut slope = dot(&dir, &g);
        if slope >= 0.0 || !slope.is_finite() {
            // not a descent direction (numerical trouble): restart from steepest descent
            s_hist.clear();
            y_hist.clear();
            rho_hist.clear();
            dir = g.iter().map(|v| -v).collect();
            slope = dot(&dir, &g);
        }
        let step0 = if s_hist.is_empty() {
            1.0 / dot(&dir, &dir).sqrt()
        } else {
            1.0
        };
        let Some((step, f_new)) =
            line_search(&mut f, &x, fx, slope, &dir, step0, &mut x_new, &mut g_new)
        else {
            // no acceptable step: the objective cannot be decreased further in floating point
            return LbfgsResult {
                x,
                n_iter: iter,
                converged: max_abs(&g) <= gtol,
            };
        };
        let s: Vec<f64> = dir.iter().map(|d| d * step).collect();
        let yv: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > f64::EPSILON * dot(&yv, &yv) {
            if s_hist.len() == MEMORY {
                s_hist.remove(0);
                y_hist.remove(0);
                rho_hist.remove(0);
            }
            s_hist.push(s);
            y_hist.push(yv);
            rho_hist.push(1.0 / sy);
        }
        let f_old = fx;
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut g, &mut g_new);
        fx = f_new;
        if (f_old - fx) / f_old.abs().max(fx.abs()).max(1.0) <= ftol || max_abs(&g) <= gtol {
            return LbfgsResult {
                x,
                n_iter: iter,
                converged: true,
            };
        }
    }
    LbfgsResult {
        x,
        n_iter: max_iter,
        converged: false,
    }
}

/// `-H g` by the two-loop recursion, with the initial inverse Hessian `(s.y / y.y) I` from the newest pair.
fn two_loop(g: &[f64], s_hist: &[Vec<f64>], y_hist: &[Vec<f64>], rho_hist: &[f64]) -> Vec<f64> {
    let mut q: Vec<f64> = g.iter().map(|v| -v).collect();
    let mut alpha = vec![0.0; s_hist.len()];
    for i in (0..s_hist.len()).rev() {
        alpha[i] = rho_hist[i] * dot(&s_hist[i], &q);
        for (qj, yj) in q.iter_mut().zip(&y_hist[i]) {
            *qj -= alpha[i] * yj;
        }
    }
    if let (Some(s), Some(y)) = (s_hist.last(), y_hist.last()) {
        let gamma = dot(s, y) / dot(y, y);
        q.iter_mut().for_each(|v| *v *= gamma);
    }
    for i in 0..s_hist.len() {
        let beta = rho_hist[i] * dot(&y_hist[i], &q);
        for (qj, sj) in q.iter_mut().zip(&s_hist[i]) {
            *qj += (alpha[i] - beta) * sj;
        }
    }
    q
}

/// A point on the search line: step, value, directional derivative.
#[derive(Clone, Copy)]
struct Probe {
    step: f64,
    value: f64,
    slope: f64,
}

/// Strong-Wolfe line search (Nocedal & Wright, algorithms 3.5 and 3.6, cubic interpolation in the zoom). On
/// success `x_new`/`g_new` hold the accepted point and its gradient, and the step and value are returned.
#[allow(clippy::too_many_arguments)]
fn line_search(
    f: &mut impl FnMut(&[f64], &mut [f64]) -> f64,
    x: &[f64],
    f0: f64,
    slope0: f64,
    dir: &[f64],
    step0: f64,
    x_new: &mut [f64],
    g_new: &mut [f64],
) -> Option<(f64, f64)> {
    let mut evals = 0;
    let mut probe = |step: f64, x_new: &mut [f64], g_new: &mut [f64]| -> Probe {
        for ((xn, &xi), &di) in x_new.iter_mut().zip(x).zip(dir) {
            *xn = xi + step * di;
        }
        let value = f(x_new, g_new);
        Probe {
            step,
            value,
            slope: dot(g_new, dir),
        }
    };
    let armijo = |p: &Probe| p.value <= f0 + C1 * p.step * slope0 && p.value.is_finite();
    let curvature = |p: &Probe| p.slope.abs() <= -C2 * slope0;

    let mut prev = Probe {
        step: 0.0,
        value: f0,
        slope: slope0,
    };
    let mut step = step0;
    let (mut lo, mut hi);
    loop {
        let cur = probe(step, x_new, g_new);
        evals += 1;
        if !armijo(&cur) || (evals > 1 && cur.value >= prev.value) {
            (lo, hi) = (prev, cur);
            break;
        }
        if curvature(&cur) {
            return Some((cur.step, cur.value));
        }
        if cur.slope >= 0.0 {
            (lo, hi) = (cur, prev);
            break;
        }
        if evals >= MAX_LINE_SEARCH {
            return Some((cur.step, cur.value)).filter(|_| armijo(&cur));
        }
        prev = cur;
        step *= 2.0;
    }
    // zoom: `lo` satisfies Armijo and has the lowest value seen; the minimiser lies between `lo` and `hi`
    while evals < MAX_LINE_SEARCH {
        let step = interpolate(&lo, &hi);
        let cur = probe(step, x_new, g_new);
        evals += 1;
        if !armijo(&cur) || cur.value >= lo.value {
            hi = cur;
        } else {
            if curvature(&cur) {
                return Some((cur.step, cur.value));
            }
            if cur.slope * (hi.step - lo.step) >= 0.0 {
                hi = lo;
            }
            lo = cur;
        }
        if (hi.step - lo.step).abs() <= f64::EPSILON * lo.step.abs().max(1e-300) {
            break;
        }
    }
    // Out of evaluations: accept the best Armijo point if it moved at all.
    if lo.step > 0.0 {
        let p = probe(lo.step, x_new, g_new);
        return Some((p.step, p.value));
    }
    None
}

/// The minimiser of the cubic through two probes (values and slopes), kept inside the middle 80% of the interval;
/// bisection when the cubic has no minimiser there.
fn interpolate(a: &Probe, b: &Probe) -> f64 {
    let (lo, hi) = if a.step < b.step { (a, b) } else { (b, a) };
    let width = hi.step - lo.step;
    let d1 = lo.slope + hi.slope - 3.0 * (lo.value - hi.value) / (lo.step - hi.step);
    let disc = d1 * d1 - lo.slope * hi.slope;
    let mid = lo.step + 0.5 * width;
    if !(disc >= 0.0 && disc.is_finite()) {
        return mid;
    }
    let d2 = disc.sqrt();
    let t = hi.step - width * (hi.slope + d2 - d1) / (hi.slope - lo.slope + 2.0 * d2);
    if t.is_finite() {
        t.clamp(lo.step + 0.1 * width, hi.step - 0.1 * width)
    } else {
        mid
    }
}
