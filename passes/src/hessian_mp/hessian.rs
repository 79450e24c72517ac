//! Q-BERT sensitivity (Shen et al., AAAI 2020): for each block of weights, the top eigenvalue of the Hessian of a
//! loss with respect to that block, by power iteration on exact Hessian-vector products.
//!
//! - **Hessian-vector products** are exact: double backward through burn's autodiff (`Autodiff<Autodiff<Cpu>>`).
//!   The block's weight is a leaf of both graphs; the outer backward gives `g = dL/dW` as a tensor of the inner
//!   autodiff backend, and the inner backward of `g . v` gives `H v`. The model composes GELU from `erf`
//!   (`Bert::exact_second_order`) because burn's fused GELU backward is not differentiable again.
//! - **Loss**: task cross-entropy (mean over the batch) when the model has a classification head and the data has
//!   labels; otherwise the self-distillation loss `0.5 * mean_batch ||f(x) - f_orig(x)||^2` on the checkpoint's
//!   pooled sentence embedding, whose Hessian at the original weights is the Gauss-Newton matrix `J^T J`.
//! - **Power iteration** (PyHessian's `eigenvalues()`): `v ~ N(0, I)` normalised; repeat `w = H v`,
//!   `lambda = v . w`, `v = w / ||w||`; stop when `|lambda_t - lambda_{t-1}| / (|lambda_{t-1}| + 1e-6) < tol`.
//!   It returns the eigenvalue of largest magnitude (it may be negative for cross-entropy).
//! - **Across data**: repeated on `runs` random subsets of the calibration data; `Omega = |mean| + std`
//!   (population standard deviation of the samples).
//!
//! This lives in `passes` rather than `calibration/` because it runs the model under autodiff (the calibration
//! crate holds data reading and tokenization and does not depend on the runtime).

use compressor_models::family::Naming;
use compressor_models::rng::Rng;
use compressor_models::runtime::{flat, Backend, Bert, Cpu, CpuAutodiff, Tensor, TensorData};
use compressor_models::{ModelConfig, Pooling, TensorStore};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The backend of second-order autodiff: autodiff over the first-order autodiff CPU backend.
pub type Hessian2 = burn::backend::Autodiff<CpuAutodiff>;

pub use crate::analyses::{head_loss, loss, Sample, Target};

fn linear_mut<'m, B: Backend>(
    model: &'m mut Bert<B>,
    name: &str,
) -> Result<&'m mut compressor_models::runtime::Linear<B>> {
    model
        .linear_mut(name)
        .ok_or_else(|| runtime(format!("the model has no Linear weight `{name}`")))
}

/// Check that `values` fill the `[in, out]` weight `name`.
fn check_len(name: &str, values: &[f32], dims: [usize; 2]) -> Result<()> {
    if values.len() == dims[0] * dims[1] {
        Ok(())
    } else {
        Err(runtime(format!(
            "{} values for `{name}` of {dims:?}",
            values.len()
        )))
    }
}

fn runtime(problem: String) -> Error {
    compressor_models::Error::Runtime(problem).into()
}

/// The gradient of the loss with respect to the weight `name`, in burn's `[in, out]` layout, at the weights of
/// `model` (first-order autodiff; used by tests to form Hessians by finite differences).
pub fn gradient(model: &Bert<CpuAutodiff>, name: &str, sample: &Sample) -> Result<Vec<f32>> {
    let mut m = model.clone();
    let lin = linear_mut(&mut m, name)?;
    let w = lin.weight_t.clone().detach().require_grad();
    lin.weight_t = w.clone();
    lin.factors = None;
    let grads = loss(&m, sample)?.backward();
    let g = w
        .grad(&grads)
        .ok_or_else(|| runtime(format!("no gradient reached `{name}`")))?;
    finite(name, flat(g)?)
}

/// Replace the weight `name` of `model` by `values` in burn's `[in, out]` layout.
pub fn set_weight_t<B: Backend>(model: &mut Bert<B>, name: &str, values: &[f32]) -> Result<()> {
    let lin = linear_mut(model, name)?;
    let dims = lin.weight_t.dims();
    check_len(name, values, dims)?;
    lin.weight_t = Tensor::from_data(
        TensorData::new(values.to_vec(), dims),
        &lin.weight_t.device(),
    );
    lin.factors = None;
    Ok(())
}

/// The weight `name` of `model` in burn's `[in, out]` layout.
pub fn weight_t<B: Backend>(model: &Bert<B>, name: &str) -> Result<Vec<f32>> {
    let lin = model
        .linear(name)
        .ok_or_else(|| runtime(format!("the model has no Linear weight `{name}`")))?;
    Ok(flat(lin.weight_t.clone())?)
}

/// A sample prepared for Hessian-vector products: its length-sorted parts ([`Sample::split`]), each with the
/// hidden state entering every layer (computed once, at the weights the Hessians are taken at), so that a block's
/// product runs the model from the block's layer on.
pub struct Prepared {
    parts: Vec<Part>,
}

struct Part {
    sample: Sample,
    weight: f64,
    /// `[rows, seq, hidden]` entering each layer, then the last hidden state.
    inputs: Vec<TensorData>,
}

impl Prepared {
    /// `model` holds the same weights as the model the products are taken on. `rows`: the most rows of a part.
    pub fn new(model: &Bert<Cpu>, sample: &Sample, rows: usize) -> Result<Self> {
        let parts = sample
            .split(rows)
            .into_iter()
            .map(|(sample, weight)| {
                let inputs = model
                    .layer_inputs(&sample.batch)?
                    .into_iter()
                    .map(|x| x.into_data())
                    .collect();
                Ok(Part {
                    sample,
                    weight,
                    inputs,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { parts })
    }
}

/// The encoder layer a weight belongs to (`encoder.layer.{l}.` in BERT), or `layers` for weights after the encoder
/// (pooler, classifier): where a product for that weight starts the model.
fn start_layer(n: &Naming, name: &str, layers: usize) -> usize {
    n.split_layer(name)
        .map(|(l, _)| l)
        .filter(|&l| l < layers)
        .unwrap_or(layers)
}

/// A block of the analysis: one or more Linear weights (HF names) whose joint Hessian is taken, their parameters
/// concatenated in the order listed (each in burn's `[in, out]` layout). Q-BERT's block is an encoder layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub name: String,
    pub tensors: Vec<String>,
}

impl Block {
    /// A block of one weight, named by it.
    pub fn matrix(name: &str) -> Self {
        Self {
            name: name.to_string(),
            tensors: vec![name.to_string()],
        }
    }

    /// What identifies the block in the cache key: its name, and its tensors when they are not just the name.
    fn key(&self) -> String {
        if self.tensors.len() == 1 && self.tensors[0] == self.name {
            self.name.clone()
        } else {
            format!("{}={}", self.name, self.tensors.join(","))
        }
    }
}

/// The Linear weights of encoder layer `layer` (HF names, in checkpoint order): Q-BERT's block.
pub fn layer_linear_weights(config: &ModelConfig, layer: usize) -> Vec<String> {
    config
        .expected_tensors()
        .into_iter()
        .filter(|t| {
            t.layer == Some(layer)
                && t.kind == compressor_models::Kind::Weight
                && t.shape.len() == 2
        })
        .map(|t| t.name)
        .collect()
}

/// The block's weights concatenated (each in burn's `[in, out]` layout): the space its Hessian acts on.
pub fn block_weights<B: Backend>(model: &Bert<B>, tensors: &[String]) -> Result<Vec<f32>> {
    let mut all = Vec::new();
    for t in tensors {
        all.extend(weight_t(model, t)?);
    }
    Ok(all)
}

/// `H v` for the block of weights `tensors` on `prepared`, with `v` their concatenation (each in burn's `[in, out]`
/// layout): double backward, on each part from the block's first layer on, summed with the parts' weights.
pub fn hvp(
    model: &Bert<Hessian2>,
    tensors: &[String],
    prepared: &Prepared,
    v: &[f32],
) -> Result<Vec<f32>> {
    let mut m = model.clone();
    m.exact_second_order = true;
    let layers = m.num_layers();
    let start = tensors
        .iter()
        .map(|t| start_layer(m.config.naming(), t, layers))
        .min()
        .unwrap_or(layers);
    let mut leaves = Vec::with_capacity(tensors.len());
    let mut offset = 0;
    for name in tensors {
        let lin = linear_mut(&mut m, name)?;
        let dims = lin.weight_t.dims();
        let inner = lin.weight_t.clone().inner().detach().require_grad();
        let outer = Tensor::<Hessian2, 2>::from_inner(inner.clone()).require_grad();
        lin.weight_t = outer.clone();
        lin.factors = None;
        let n = dims[0] * dims[1];
        leaves.push((name, dims, offset..offset + n, inner, outer));
        offset += n;
    }
    if offset != v.len() {
        return Err(runtime(format!(
            "a direction of {} values for the {offset} weights of {}",
            v.len(),
            tensors.join(", ")
        )));
    }
    let mut total = vec![0f32; v.len()];
    for part in &prepared.parts {
        let x = Tensor::<Hessian2, 3>::from_data(part.inputs[start].clone(), m.device());
        let hidden = m.encode_from(&part.sample.batch, start, x)?;
        let grads = head_loss(&m, hidden, &part.sample)?.backward();
        let mut gv: Option<Tensor<CpuAutodiff, 1>> = None;
        for (name, dims, range, _, outer) in &leaves {
            let g = outer
                .grad(&grads)
                .ok_or_else(|| runtime(format!("no gradient reached `{name}`")))?;
            let v = Tensor::<CpuAutodiff, 2>::from_data(
                TensorData::new(v[range.clone()].to_vec(), *dims),
                &g.device(),
            );
            let term = (g * v).sum();
            gv = Some(match gv {
                Some(acc) => acc + term,
                None => term,
            });
        }
        let Some(gv) = gv else {
            return Err(runtime("a block without weights".into()));
        };
        let grads2 = gv.backward();
        let w = part.weight as f32;
        for (name, _, range, inner, _) in &leaves {
            let hv = inner.grad(&grads2).ok_or_else(|| {
                runtime(format!(
                    "the gradient of `{name}` does not depend on the block (no second derivative)"
                ))
            })?;
            for (t, x) in total[range.clone()].iter_mut().zip(flat(hv)?) {
                *t += w * x;
            }
        }
    }
    finite(&tensors.join(", "), total)
}

fn finite(name: &str, values: Vec<f32>) -> Result<Vec<f32>> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(values),
        Some(i) => Err(runtime(format!(
            "a non-finite derivative of the loss with respect to `{name}` (flat index {i})\nhint: check the calibration data and the checkpoint's weights for NaN or infinity"
        ))),
    }
}

/// How the top eigenvalue of a block's Hessian is found from Hessian-vector products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Lanczos with full reorthogonalisation: the Ritz value of largest magnitude of the Krylov space. The same
    /// quantity as power iteration (whose iterates span the same space), reached in fewer products.
    #[default]
    Lanczos,
    /// Power iteration, as PyHessian and the paper.
    Power,
    /// Not the top eigenvalue: the mean of the Hessian's diagonal `tr(H) / n` by Hutchinson's estimator
    /// (`E[z^T H z] = tr(H)` for Rademacher `z`), with `max-iterations` probes per run: HAWQ-V2's statistic, which
    /// weighs every direction of the quantization noise instead of the most curved one.
    Hutchinson,
}

/// Eigenvalue-iteration settings (either [`Method`]; one iteration is one Hessian-vector product).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PowerIteration {
    #[serde(default)]
    pub method: Method,
    #[serde(default = "default_iterations")]
    pub max_iterations: usize,
    /// Relative change of the eigenvalue estimate between iterations below which it has converged.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

fn default_iterations() -> usize {
    20
}
fn default_tolerance() -> f64 {
    1e-3
}

impl Default for PowerIteration {
    fn default() -> Self {
        Self {
            method: Method::default(),
            max_iterations: default_iterations(),
            tolerance: default_tolerance(),
        }
    }
}

/// The result of one power iteration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Eigen {
    /// The last estimate of the eigenvalue of largest magnitude.
    pub value: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// A standard normal direction of `n` values, normalised, from `rng` (Box-Muller).
pub fn random_direction(n: usize, rng: &mut Rng) -> Vec<f32> {
    let mut v: Vec<f64> = Vec::with_capacity(n);
    while v.len() < n {
        let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        v.push(r * t.cos());
        if v.len() < n {
            v.push(r * t.sin());
        }
    }
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    v.iter().map(|x| (x / norm) as f32).collect()
}

/// The eigenvalue of largest magnitude of the symmetric operator `apply`, starting from `v0` (unit norm).
pub fn power_iteration(
    v0: Vec<f32>,
    settings: PowerIteration,
    apply: impl FnMut(&[f32]) -> Result<Vec<f32>>,
) -> Result<Eigen> {
    Ok(power_iteration_with_vector(v0, settings, apply)?.0)
}

/// [`power_iteration`], also returning the last direction (unit norm).
pub fn power_iteration_with_vector(
    v0: Vec<f32>,
    settings: PowerIteration,
    mut apply: impl FnMut(&[f32]) -> Result<Vec<f32>>,
) -> Result<(Eigen, Vec<f32>)> {
    let mut v = v0;
    let mut value = 0f64;
    for it in 1..=settings.max_iterations.max(1) {
        let w = apply(&v)?;
        let lambda: f64 = v
            .iter()
            .zip(&w)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        let norm = w
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        let change = (lambda - value).abs() / (value.abs() + 1e-6);
        value = lambda;
        if norm == 0.0 {
            // H v = 0: v is in the null space; the estimate is 0.
            return Ok((
                Eigen {
                    value: 0.0,
                    iterations: it,
                    converged: true,
                },
                v,
            ));
        }
        v = w.iter().map(|&x| (f64::from(x) / norm) as f32).collect();
        if it > 1 && change < settings.tolerance {
            return Ok((
                Eigen {
                    value,
                    iterations: it,
                    converged: true,
                },
                v,
            ));
        }
    }
    Ok((
        Eigen {
            value,
            iterations: settings.max_iterations.max(1),
            converged: false,
        },
        v,
    ))
}

/// The eigenvalue of largest magnitude of the symmetric operator `apply` by `settings.method`, starting from `v0`
/// (unit norm); also the last direction (the Ritz vector for Lanczos), to warm-start a related problem.
pub fn top_eigen(
    v0: Vec<f32>,
    settings: PowerIteration,
    apply: impl FnMut(&[f32]) -> Result<Vec<f32>>,
) -> Result<(Eigen, Vec<f32>)> {
    match settings.method {
        Method::Lanczos => lanczos(v0, settings, apply),
        // Hutchinson needs probes, not a start; `sensitivity` calls `hutchinson` for it. Here it falls back to the
        // power iteration so that the function stays total.
        Method::Power | Method::Hutchinson => power_iteration_with_vector(v0, settings, apply),
    }
}

/// `tr(H) / n` of the `n`-dimensional symmetric operator `apply` by Hutchinson's estimator: the mean of
/// `z^T H z / n` over `probes` Rademacher vectors `z` drawn from `rng`.
pub fn hutchinson(
    n: usize,
    probes: usize,
    rng: &mut Rng,
    mut apply: impl FnMut(&[f32]) -> Result<Vec<f32>>,
) -> Result<Eigen> {
    let probes = probes.max(1);
    let mut sum = 0f64;
    for _ in 0..probes {
        let z: Vec<f32> = (0..n)
            .map(|_| if rng.next_f64() < 0.5 { -1.0 } else { 1.0 })
            .collect();
        let hz = apply(&z)?;
        sum += z
            .iter()
            .zip(&hz)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum::<f64>();
    }
    Ok(Eigen {
        value: sum / probes as f64 / n.max(1) as f64,
        iterations: probes,
        converged: true,
    })
}

/// Lanczos with full reorthogonalisation (twice, classical Gram-Schmidt, in f64): after `k` products the Ritz value
/// of largest magnitude of the `k`-dimensional Krylov space; it stops when that value changes by less than
/// `tolerance` (relative, as [`power_iteration`]) or the space is invariant.
pub fn lanczos(
    v0: Vec<f32>,
    settings: PowerIteration,
    mut apply: impl FnMut(&[f32]) -> Result<Vec<f32>>,
) -> Result<(Eigen, Vec<f32>)> {
    let max = settings.max_iterations.max(1);
    let norm0 = v0.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let mut q: Vec<Vec<f64>> = vec![v0
        .iter()
        .map(|&x| f64::from(x) / norm0.max(f64::MIN_POSITIVE))
        .collect()];
    let (mut alpha, mut beta) = (Vec::<f64>::new(), Vec::<f64>::new());
    let mut value = 0f64;
    for it in 1..=max {
        let qj: Vec<f32> = q[it - 1].iter().map(|&x| x as f32).collect();
        let w = apply(&qj)?;
        let mut w: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
        alpha.push(dot(&q[it - 1], &w));
        for _ in 0..2 {
            for b in &q {
                let c = dot(b, &w);
                w.iter_mut().zip(b).for_each(|(x, y)| *x -= c * y);
            }
        }
        let ritz = extreme_ritz(&alpha, &beta);
        let change = (ritz.0 - value).abs() / (value.abs() + 1e-6);
        value = ritz.0;
        let b = dot(&w, &w).sqrt();
        let scale = alpha
            .iter()
            .map(|a| a.abs())
            .fold(0f64, f64::max)
            .max(1e-30);
        let invariant = b <= 1e-10 * scale;
        if invariant || (it > 1 && change < settings.tolerance) || it == max {
            let mut v = vec![0f64; q[0].len()];
            for (s, b) in ritz.1.iter().zip(&q) {
                v.iter_mut().zip(b).for_each(|(x, y)| *x += s * y);
            }
            let n = dot(&v, &v).sqrt().max(f64::MIN_POSITIVE);
            let converged = invariant || (it > 1 && change < settings.tolerance);
            return Ok((
                Eigen {
                    value,
                    iterations: it,
                    converged,
                },
                v.iter().map(|&x| (x / n) as f32).collect(),
            ));
        }
        beta.push(b);
        q.push(w.iter().map(|x| x / b).collect());
    }
    unreachable!("the loop returns at its last iteration")
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The eigenvalue of largest magnitude of the symmetric tridiagonal matrix with diagonal `alpha` and off-diagonal
/// `beta` (cyclic Jacobi rotations on the dense matrix, which is at most `max-iterations` wide), with its
/// eigenvector.
fn extreme_ritz(alpha: &[f64], beta: &[f64]) -> (f64, Vec<f64>) {
    let k = alpha.len();
    let mut a = vec![0f64; k * k];
    let mut v = vec![0f64; k * k];
    for i in 0..k {
        a[i * k + i] = alpha[i];
        v[i * k + i] = 1.0;
        if i + 1 < k {
            a[i * k + i + 1] = beta[i];
            a[(i + 1) * k + i] = beta[i];
        }
    }
    for _sweep in 0..100 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j].powi(2))
            .sum();
        let diag: f64 = (0..k).map(|i| a[i * k + i].powi(2)).sum();
        if off <= 1e-30 * diag.max(1e-300) {
            break;
        }
        for p in 0..k {
            for r in p + 1..k {
                let apr = a[p * k + r];
                if apr == 0.0 {
                    continue;
                }
                let theta = (a[r * k + r] - a[p * k + p]) / (2.0 * apr);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for i in 0..k {
                    let (aip, air) = (a[i * k + p], a[i * k + r]);
                    a[i * k + p] = c * aip - s * air;
                    a[i * k + r] = s * aip + c * air;
                }
                for j in 0..k {
                    let (apj, arj) = (a[p * k + j], a[r * k + j]);
                    a[p * k + j] = c * apj - s * arj;
                    a[r * k + j] = s * apj + c * arj;
                }
                for i in 0..k {
                    let (vip, vir) = (v[i * k + p], v[i * k + r]);
                    v[i * k + p] = c * vip - s * vir;
                    v[i * k + r] = s * vip + c * vir;
                }
            }
        }
    }
    let best = (0..k)
        .max_by(|&i, &j| a[i * k + i].abs().total_cmp(&a[j * k + j].abs()))
        .unwrap_or(0);
    (
        a[best * k + best],
        (0..k).map(|i| v[i * k + best]).collect(),
    )
}

/// The sensitivity of one block across runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockSensitivity {
    pub name: String,
    /// One top eigenvalue per run.
    pub samples: Vec<f64>,
    pub iterations: Vec<usize>,
    pub converged: Vec<bool>,
    pub mean: f64,
    pub std: f64,
    /// `|mean| + std`.
    pub omega: f64,
}

impl BlockSensitivity {
    fn from_runs(name: &str, runs: Vec<Eigen>) -> Self {
        let samples: Vec<f64> = runs.iter().map(|e| e.value).collect();
        let n = samples.len().max(1) as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let std = (samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
        Self {
            name: name.to_string(),
            iterations: runs.iter().map(|e| e.iterations).collect(),
            converged: runs.iter().map(|e| e.converged).collect(),
            samples,
            mean,
            std,
            omega: mean.abs() + std,
        }
    }
}

/// The inputs of a sensitivity analysis.
#[derive(Clone, Copy)]
pub struct Analysis<'a> {
    /// The weights at which the Hessians are taken.
    pub store: &'a TensorStore,
    pub config: &'a ModelConfig,
    pub pooling: Pooling,
    /// The blocks.
    pub blocks: &'a [Block],
    /// One batch per run.
    pub samples: &'a [Sample],
    pub settings: PowerIteration,
    pub seed: u64,
    /// The most rows of a part of a sample ([`Sample::split`]).
    pub part_rows: usize,
}

/// The default [`Analysis::part_rows`]: parts of 8 length-sorted sentences (measured in `benches/hessian.rs`).
pub const DEFAULT_PART_ROWS: usize = 8;

/// Top Hessian eigenvalues of every block in `blocks` (one or more weights each), one eigenvalue iteration per sample (run).
/// Run 0 of block `i` starts from a direction drawn with seed `(seed, i)`; each later run starts from the last
/// direction of the run before it (a warm start: the top eigenvectors of different data subsets are close, so
/// later runs converge in fewer products). Results do not depend on thread scheduling. `on_block` is called as
/// each block finishes.
pub fn sensitivity(
    a: &Analysis,
    on_block: &(dyn Fn(&str) + Sync),
) -> Result<Vec<BlockSensitivity>> {
    let Analysis {
        store,
        config,
        pooling,
        blocks,
        samples,
        settings,
        seed,
        part_rows,
    } = *a;
    let plain = Bert::<Cpu>::load(store, config, pooling, &Default::default())?;
    let prepared: Vec<Prepared> = samples
        .iter()
        .map(|s| Prepared::new(&plain, s, part_rows))
        .collect::<Result<_>>()?;
    drop(plain);
    let model = Bert::<Hessian2>::load(store, config, pooling, &Default::default())?;
    blocks
        .par_iter()
        .enumerate()
        .map(|(i, block)| {
            let mut runs = Vec::with_capacity(samples.len());
            let tensors = &block.tensors;
            let n = block_weights(&model, tensors)?.len();
            let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut v = random_direction(n, &mut rng);
            for p in &prepared {
                let (eigen, last) = match settings.method {
                    Method::Hutchinson => (
                        hutchinson(n, settings.max_iterations, &mut rng, |z| {
                            hvp(&model, tensors, p, z)
                        })?,
                        v,
                    ),
                    _ => top_eigen(v, settings, |v| hvp(&model, tensors, p, v))?,
                };
                runs.push(eigen);
                v = last;
            }
            on_block(&block.name);
            Ok(BlockSensitivity::from_runs(&block.name, runs))
        })
        .collect()
}

/// Version of the cached sensitivity entries; bump when the computation changes.
const CACHE_VERSION: &str = "hessian-sensitivity v2";

/// A cached sensitivity analysis: an entry of kind `hessian-eigen` in the shared analyses cache
/// ([`crate::analyses::cache`]), keyed by every input of [`sensitivity`] ([`Analysis`]): the model fingerprint
/// (all tensors' decoded values, config and pooling), the samples (token ids, type ids, masks, targets), the
/// blocks, the power-iteration settings and the seed.
pub struct Cache {
    cache: crate::analyses::cache::Cache,
    key: crate::analyses::cache::Key,
}

impl Cache {
    pub fn new(dir: &std::path::Path, a: &Analysis) -> Result<Self> {
        use crate::analyses::cache::{Hasher, Key};
        use crate::analyses::model_fingerprint;
        let mut h = Hasher::default();
        for s in a.samples {
            s.hash_into(&mut h);
        }
        let blocks: Vec<String> = a.blocks.iter().map(Block::key).collect();
        let settings = format!(
            "{CACHE_VERSION}; blocks={}; method={:?}; max-iterations={}; tolerance={}; seed={}; part-rows={}",
            blocks.join(" | "),
            a.settings.method,
            a.settings.max_iterations,
            a.settings.tolerance,
            a.seed,
            a.part_rows
        );
        Ok(Self {
            cache: crate::analyses::cache::Cache::new(Some(dir)),
            key: Key {
                kind: "hessian-eigen",
                model: model_fingerprint(a.store, a.config, &a.pooling)?,
                data: h.hex(),
                settings,
            },
        })
    }

    /// The cached analysis, if there is a readable one for exactly these blocks.
    pub fn read(&self, blocks: &[Block]) -> Option<Vec<BlockSensitivity>> {
        let entry: Vec<BlockSensitivity> = self.cache.read_json(&self.key)?;
        let names: Vec<&String> = entry.iter().map(|b| &b.name).collect();
        (names.len() == blocks.len() && names.iter().zip(blocks).all(|(a, b)| **a == b.name))
            .then_some(entry)
    }

    /// Store the analysis (written to a temporary file, then renamed into place).
    pub fn write(&self, entry: &[BlockSensitivity]) -> Result<()> {
        Ok(self.cache.write_json(&self.key, &entry)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_iteration_finds_the_largest_magnitude_eigenvalue_of_a_known_matrix() {
        // diag(1, -5, 3) rotated is still symmetric with eigenvalues 1, -5, 3; use the diagonal directly.
        let d = [1.0f32, -5.0, 3.0];
        let e = power_iteration(
            random_direction(3, &mut Rng::new(1)),
            PowerIteration {
                max_iterations: 200,
                tolerance: 1e-9,
                ..Default::default()
            },
            |v| Ok(v.iter().zip(&d).map(|(a, b)| a * b).collect()),
        )
        .expect("runs");
        assert!((e.value + 5.0).abs() < 1e-4, "{e:?}");
        assert!(e.converged);
        let capped = power_iteration(
            random_direction(3, &mut Rng::new(1)),
            PowerIteration {
                max_iterations: 2,
                tolerance: 0.0,
                ..Default::default()
            },
            |v| Ok(v.iter().zip(&d).map(|(a, b)| a * b).collect()),
        )
        .expect("runs");
        assert!(!capped.converged);
        assert_eq!(capped.iterations, 2);
    }

    #[test]
    fn lanczos_finds_the_largest_magnitude_eigenvalue_in_fewer_products() {
        // A symmetric 40x40 operator with a known spectrum: Q diag(d) Q^T for a Householder reflection Q.
        let n = 40;
        let d: Vec<f64> = (0..n)
            .map(|i| {
                if i == 7 {
                    -9.0
                } else {
                    8.0 * (i as f64 + 1.0) / n as f64
                }
            })
            .collect();
        let u: Vec<f64> = random_direction(n, &mut Rng::new(3))
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let reflect = |x: &[f64]| -> Vec<f64> {
            let c = 2.0 * dot(&u, x);
            x.iter().zip(&u).map(|(a, b)| a - c * b).collect()
        };
        let apply = |v: &[f32]| -> Result<Vec<f32>> {
            let x: Vec<f64> = v.iter().map(|&a| f64::from(a)).collect();
            let y = reflect(&x);
            let y: Vec<f64> = y.iter().zip(&d).map(|(a, b)| a * b).collect();
            Ok(reflect(&y).iter().map(|&a| a as f32).collect())
        };
        let settings = |method| PowerIteration {
            method,
            max_iterations: 200,
            tolerance: 1e-6,
        };
        let v0 = random_direction(n, &mut Rng::new(1));
        let (l, lv) = lanczos(v0.clone(), settings(Method::Lanczos), apply).expect("runs");
        let (p, _) = power_iteration_with_vector(v0, settings(Method::Power), apply).expect("runs");
        assert!((l.value + 9.0).abs() < 1e-4, "{l:?}");
        assert!((p.value + 9.0).abs() < 1e-3, "{p:?}");
        assert!(l.converged && l.iterations < p.iterations, "{l:?} vs {p:?}");
        // The Ritz vector is the eigenvector: A v = -9 v.
        let av = apply(&lv).expect("apply");
        let residual: f64 = av
            .iter()
            .zip(&lv)
            .map(|(a, b)| (f64::from(*a) + 9.0 * f64::from(*b)).powi(2))
            .sum();
        assert!(residual.sqrt() < 1e-3, "residual {residual}");
        // An invariant start (an eigenvector) stops after one product.
        let (again, _) = lanczos(lv, settings(Method::Lanczos), apply).expect("runs");
        assert!(again.converged && again.iterations <= 2, "{again:?}");
    }

    #[test]
    fn hutchinson_estimates_the_mean_diagonal() {
        // Exact for a diagonal operator (z_i^2 = 1), whatever the probes.
        let d = [1.0f32, -5.0, 3.0, 9.0];
        let diag = hutchinson(4, 3, &mut Rng::new(2), |v| {
            Ok(v.iter().zip(&d).map(|(a, b)| a * b).collect())
        })
        .expect("runs");
        assert!((diag.value - 2.0).abs() < 1e-9, "{diag:?}");
        assert_eq!(diag.iterations, 3);
        // A dense symmetric operator: A = u u^T + 2 I on 30 dimensions, tr(A) / n = |u|^2 / 30 + 2.
        let u: Vec<f32> = (0..30).map(|i| (i as f32 * 0.37).sin()).collect();
        let exact = u.iter().map(|x| f64::from(x * x)).sum::<f64>() / 30.0 + 2.0;
        let e = hutchinson(30, 4000, &mut Rng::new(7), |v| {
            let c: f32 = u.iter().zip(v).map(|(a, b)| a * b).sum();
            Ok(v.iter().zip(&u).map(|(x, a)| 2.0 * x + c * a).collect())
        })
        .expect("runs");
        assert!(
            (e.value - exact).abs() < 0.02 * exact,
            "{} vs {exact}",
            e.value
        );
    }

    #[test]
    fn omega_is_absolute_mean_plus_population_std() {
        let runs = [-1.0, -3.0]
            .iter()
            .map(|&value| Eigen {
                value,
                iterations: 1,
                converged: true,
            })
            .collect();
        let s = BlockSensitivity::from_runs("w", runs);
        assert_eq!(s.mean, -2.0);
        assert_eq!(s.std, 1.0);
        assert_eq!(s.omega, 3.0);
    }
}
