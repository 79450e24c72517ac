//! `qa-svd` (UniQL, Chiang et al., ICLR 2026): structured sorting and quantization-aware SVD, then a cut at one
//! global pruning rate spread over layers by block influence.
//!
//! - `decompose`: the sorts (FFN neurons by ridge leverage, query/key dimensions by their output moments) and the
//!   per-head QSVD of value/output, from the original model's activation statistics (shared analyses, cached).
//! - `allocate`: per-layer rates from block influence (softmax, temperature 0.1, clamped to 0.85), and the kept
//!   widths rounded to multiples.
//!
//! The decision is made at plan time (it reads the weights and the calibration statistics); `run` writes the
//! sorted, cut tensors. Each layer keeps its heads; its FFN width and each head's query/key and value widths
//! shrink (the `compressor` extension's `intermediate_size`, `qk_head_dim`, `vo_head_dim`). The value bias is folded
//! into the output bias, so the value bias is zero.

mod allocate;
mod decompose;

use compressor_models::arch::{ElasticRate, ElasticWidths, LayerShape};
use compressor_models::family::Naming;
use compressor_models::{HostTensor, Slot};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analyses::cache::Cache;
use crate::analyses::{Covariance, Statistic, Want};
use crate::error::{Error, Result};
use crate::pass::{
    ArchChange, Pass, PassContext, PassPlan, PassReport, Phase, PlanContext, PlanDecision,
    PlannedChange,
};

pub use allocate::MAX_LAYER_RATE;

/// Settings of a `qa-svd` pass.
///
/// ```toml
/// [[pass]]
/// kind = "qa-svd"
/// rate = 0.25            # mean fraction of each layer's widths removed, in [0, 0.85]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Global pruning rate: the mean over layers of the fraction of FFN neurons and head widths removed.
    pub rate: f64,
    /// Softmax temperature of the layer allocation (lower: the least influential layers take more).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// `lambda` of the FFN's ridge-leverage score.
    #[serde(default = "one")]
    pub ridge_lambda: f64,
    /// Kept query/key and value widths per head are multiples of this.
    #[serde(default = "default_head_multiple")]
    pub head_multiple: usize,
    /// Kept FFN widths are multiples of this.
    #[serde(default = "default_ffn_multiple")]
    pub ffn_multiple: usize,
    /// Added to the attention input's second moment, times its mean diagonal, before whitening (needed when the
    /// calibration data has fewer real tokens than the hidden size).
    #[serde(default)]
    pub damping: f64,
    /// Calibration batch size of the statistics sweep.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Further rates (each at least `rate`) the artifact can be cut at later, without recomputing anything:
    /// `compressor export DIR --rate R`. The artifact then holds the sorted model at `rate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elastic_rates: Vec<f64>,
}

fn default_temperature() -> f64 {
    0.1
}

fn one() -> f64 {
    1.0
}

fn default_head_multiple() -> usize {
    8
}

fn default_ffn_multiple() -> usize {
    32
}

fn default_batch_size() -> usize {
    32
}

/// What `run` writes for one layer, decided at plan time.
#[derive(Debug, Clone)]
struct LayerCut {
    rate: f64,
    /// Kept FFN neurons, best first.
    neurons: Vec<usize>,
    /// Per head (by position): kept query/key dimensions, best first.
    qk: Vec<Vec<usize>>,
    /// Per head: its QSVD, cut at `vo` columns.
    svd: Vec<decompose::HeadSvd>,
    vo: usize,
}

/// The `qa-svd` pass.
pub struct QaSvd {
    config: Config,
    cuts: PlanDecision<Vec<LayerCut>>,
    cache: Cache,
}

impl QaSvd {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            cuts: PlanDecision::new(),
            cache: Cache::shared(),
        }
    }

    fn check_config(&self) -> Result<()> {
        let c = &self.config;
        let bad = |key: &str, problem: String| {
            Err(Error::Config {
                key: key.into(),
                problem,
            })
        };
        if !(0.0..=MAX_LAYER_RATE).contains(&c.rate) {
            return bad(
                "rate",
                format!(
                    "is {}, expected a fraction in [0, {MAX_LAYER_RATE}]",
                    c.rate
                ),
            );
        }
        if c.temperature.is_nan() || c.temperature <= 0.0 {
            return bad("temperature", format!("is {}, expected > 0", c.temperature));
        }
        if c.ridge_lambda.is_nan() || c.ridge_lambda <= 0.0 {
            return bad(
                "ridge-lambda",
                format!("is {}, expected > 0", c.ridge_lambda),
            );
        }
        if c.damping.is_nan() || c.damping < 0.0 {
            return bad("damping", format!("is {}, expected >= 0", c.damping));
        }
        for (i, &r) in c.elastic_rates.iter().enumerate() {
            if !(c.rate..=MAX_LAYER_RATE).contains(&r)
                || c.elastic_rates[..i].iter().any(|&p| p >= r)
            {
                return bad(
                    "elastic-rates",
                    format!(
                        "has {r}: expected ascending rates from `rate` ({}) to {MAX_LAYER_RATE}",
                        c.rate
                    ),
                );
            }
        }
        for (key, v) in [
            ("head-multiple", c.head_multiple),
            ("ffn-multiple", c.ffn_multiple),
            ("batch-size", c.batch_size),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        Ok(())
    }

    /// The statistics of the original model: input moments of every Linear and block influence.
    fn statistics(&self, ctx: &PlanContext) -> Result<(Covariance, Vec<f64>)> {
        let spec = ctx.calibration.ok_or_else(|| Error::NoCalibration {
            key: "qa-svd".into(),
        })?;
        let want = Want {
            importance: true,
            covariance: true,
        };
        let forward = ctx.forward_statistics(spec, self.config.batch_size, want, &self.cache)?;
        let missing =
            || compressor_models::Error::Runtime("the analyses returned no statistics".into());
        let covariance = forward.covariance.ok_or_else(missing)?;
        let influence = forward.importance.ok_or_else(missing)?.influence;
        let h = ctx.config.bert().hidden_size;
        if covariance.tokens < h as f64 && self.config.damping == 0.0 {
            return Err(Error::Config {
                key: "calibration".into(),
                problem: format!(
                    "gives {} real tokens; a full-rank second moment of the {h}-wide attention input needs at least {h}\nhint: add records or raise `max-length` in [calibration], or set `damping` (e.g. 0.01) in the qa-svd pass",
                    covariance.tokens
                ),
            });
        }
        Ok((covariance, influence))
    }

    /// Every layer's widths at each elastic rate (from the original widths, like the cut itself).
    fn elastic(&self, ctx: &PlanContext, influence: &[f64]) -> Vec<ElasticRate> {
        let c = ctx.config.bert();
        self.config
            .elastic_rates
            .iter()
            .map(|&rate| {
                let rates = allocate::layer_rates(influence, rate, self.config.temperature);
                ElasticRate {
                    rate,
                    layers: c
                        .layers
                        .iter()
                        .zip(rates)
                        .map(|(s, phi)| ElasticWidths {
                            intermediate_size: if s.has_ffn() {
                                allocate::kept(s.intermediate_size, phi, self.config.ffn_multiple)
                            } else {
                                0
                            },
                            qk_head_dim: allocate::kept(
                                s.qk_head_dim,
                                phi,
                                self.config.head_multiple,
                            ),
                            vo_head_dim: allocate::kept(
                                s.vo_head_dim,
                                phi,
                                self.config.head_multiple,
                            ),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    fn decide(&self, ctx: &PlanContext) -> Result<(Vec<LayerCut>, Vec<ElasticRate>)> {
        let (cov, influence) = self.statistics(ctx)?;
        let elastic = self.elastic(ctx, &influence);
        let c = ctx.config.bert();
        let h = c.hidden_size;
        let rates = allocate::layer_rates(&influence, self.config.rate, self.config.temperature);
        let f32s = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            Ok(ctx.store.get_f32(name, shape)?)
        };
        let f64s = |v: Vec<f32>| -> Vec<f64> { v.into_iter().map(f64::from).collect() };
        let missing = |name: &str| {
            Error::from(compressor_models::Error::Runtime(format!(
                "the analyses hold no input moments of `{name}`"
            )))
        };
        let mut cuts = Vec::with_capacity(c.layers.len());
        let names = c.naming();
        for (l, s) in c.layers.iter().enumerate() {
            let p = |m: Slot, part: &str| format!("{}.{part}", names.linear(l, m));
            let phi = rates[l];
            let mut cut = LayerCut {
                rate: phi,
                neurons: Vec::new(),
                qk: Vec::new(),
                svd: Vec::new(),
                vo: 0,
            };
            if s.has_ffn() {
                let w2 = p(Slot::Down, "weight");
                let (n, moment) = cov.of_linear(names, &w2).ok_or_else(|| missing(&w2))?;
                let scores = decompose::ridge_leverage(n, moment, self.config.ridge_lambda)?;
                let k = allocate::kept(s.intermediate_size, phi, self.config.ffn_multiple);
                cut.neurons = decompose::descending(&scores)[..k].to_vec();
            }
            if s.has_attention() {
                let (nh, dq, dv) = (s.heads.len(), s.qk_head_dim, s.vo_head_dim);
                let wq = p(Slot::Query, "weight");
                let (n, moment) = cov.of_linear(names, &wq).ok_or_else(|| missing(&wq))?;
                let mean = cov.mean_of_linear(names, &wq).ok_or_else(|| missing(&wq))?;
                let out_moments = |m: Slot| -> Result<Vec<f64>> {
                    let w = f32s(&p(m, "weight"), &[nh * dq, h])?;
                    let b = f32s(&p(m, "bias"), &[nh * dq])?;
                    Ok(decompose::output_second_moments(&w, &b, n, moment, mean))
                };
                let (q, k) = (out_moments(Slot::Query)?, out_moments(Slot::Key)?);
                let r_qk = allocate::kept(dq, phi, self.config.head_multiple);
                cut.qk = decompose::qk_orders(&q, &k, nh, dq)
                    .into_iter()
                    .map(|o| o[..r_qk].to_vec())
                    .collect();
                let c_sqrt = decompose::whitening(n, moment, self.config.damping)?;
                let wv = f64s(f32s(&p(Slot::Value, "weight"), &[nh * dv, h])?);
                let wo = f64s(f32s(&p(Slot::AttnOut, "weight"), &[h, nh * dv])?);
                for j in 0..nh {
                    let (v, o) = head_blocks(&wv, &wo, h, nh, dv, j);
                    cut.svd.push(decompose::head_svd(&v, &o, &c_sqrt, h, dv)?);
                }
                cut.vo = allocate::kept(dv, phi, self.config.head_multiple);
            }
            cuts.push(cut);
        }
        Ok((cuts, elastic))
    }
}

/// Head `j`'s value rows `[d, h]` and output columns `[h, d]`.
fn head_blocks(
    wv: &[f64],
    wo: &[f64],
    h: usize,
    nh: usize,
    d: usize,
    j: usize,
) -> (Vec<f64>, Vec<f64>) {
    let v = wv[j * d * h..(j + 1) * d * h].to_vec();
    let o = wo
        .chunks(nh * d)
        .flat_map(|row| row[j * d..(j + 1) * d].iter().copied())
        .collect();
    (v, o)
}

/// The layer shapes after `cuts`.
fn shapes(layers: &[LayerShape], cuts: &[LayerCut]) -> Vec<LayerShape> {
    layers
        .iter()
        .zip(cuts)
        .map(|(s, cut)| LayerShape {
            intermediate_size: if s.has_ffn() { cut.neurons.len() } else { 0 },
            qk_head_dim: cut.qk.first().map_or(s.qk_head_dim, Vec::len),
            vo_head_dim: if s.has_attention() {
                cut.vo
            } else {
                s.vo_head_dim
            },
            // Every Linear is rewritten as one matrix.
            low_rank: Default::default(),
            ..s.clone()
        })
        .collect()
}

/// The tensors of an encoder layer's Linears (weights and biases), which qa-svd rewrites.
fn rewritten(n: &Naming, name: &str) -> bool {
    n.linear_of(name).is_some()
}

impl Pass for QaSvd {
    fn kind(&self) -> &'static str {
        "qa-svd"
    }

    fn phase(&self) -> Phase {
        Phase::Structure
    }

    fn plan(&self, ctx: &PlanContext) -> Result<PassPlan> {
        self.check_config()?;
        ctx.require_checkpoint_weights(
            "qa-svd",
            "put `qa-svd` before the passes that change encoder weights",
        )?;
        let (cuts, elastic) = self.decide(ctx)?;
        let before = ctx.config.bert();
        let layers = shapes(&before.layers, &cuts);
        let mut changes = vec![ArchChange::Layers(layers)];
        if !elastic.is_empty() {
            changes.push(ArchChange::Elastic(elastic));
        }
        let mut after = ctx.config.clone();
        for change in &changes {
            change.apply(&mut after)?;
        }
        let specs: std::collections::BTreeMap<String, compressor_models::TensorSpec> = after
            .expected_tensors()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let mut plan = PassPlan::default();
        for t in ctx
            .info
            .tensors
            .iter()
            .filter(|t| rewritten(before.naming(), &t.name))
        {
            if let Some(spec) = specs.get(&t.name) {
                plan.changes.push(PlannedChange::reshaped(t, &spec.shape));
            }
        }
        let (p0, p1) = (
            before.encoder_parameters(),
            after.bert().encoder_parameters(),
        );
        plan.notes.push(format!(
            "removes {:.1}% of the encoder's parameters ({p0} -> {p1}) at rate {}; per layer (rate: FFN width, query/key and value width per head): {}",
            100.0 * (1.0 - p1 as f64 / p0.max(1) as f64),
            self.config.rate,
            cuts.iter()
                .zip(&after.bert().layers)
                .map(|(c, s)| format!("{:.2}: {}, {}, {}", c.rate, s.intermediate_size, s.qk_head_dim, s.vo_head_dim))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        if !self.config.elastic_rates.is_empty() {
            plan.notes.push(format!(
                "elastic: the artifact can be cut at rates {:?} with `compressor export DIR --rate R`",
                self.config.elastic_rates
            ));
        }
        plan.arch.extend(changes);
        plan.statistics
            .extend([Statistic::Covariance, Statistic::Importance]);
        self.cuts.set(cuts);
        Ok(plan)
    }

    fn run(&self, ctx: &mut PassContext) -> Result<PassReport> {
        let cuts = self.cuts.get("qa-svd")?;
        let before = ctx.config.bert().clone();
        let h = before.hidden_size;
        let f64s = |store: &compressor_models::TensorStore,
                    name: &str,
                    shape: &[usize]|
         -> Result<Vec<f64>> {
            Ok(store
                .get_f32(name, shape)?
                .into_iter()
                .map(f64::from)
                .collect())
        };
        // Single rows or columns, in the sorted order.
        let each = |idx: &[usize]| -> Vec<std::ops::Range<usize>> {
            idx.iter().map(|&i| i..i + 1).collect()
        };
        let names = before.naming();
        for ((l, s), cut) in before.layers.iter().enumerate().zip(&cuts) {
            let p = |m: Slot, part: &str| format!("{}.{part}", names.linear(l, m));
            if s.has_ffn() {
                let neurons = each(&cut.neurons);
                ctx.store
                    .keep_row_ranges(&p(Slot::Up, "weight"), &neurons)?;
                ctx.store.keep_row_ranges(&p(Slot::Up, "bias"), &neurons)?;
                ctx.store
                    .keep_col_ranges(&p(Slot::Down, "weight"), &neurons)?;
            }
            if !s.has_attention() {
                continue;
            }
            let (nh, dq, dv) = (s.heads.len(), s.qk_head_dim, s.vo_head_dim);
            let rows: Vec<usize> = cut
                .qk
                .iter()
                .enumerate()
                .flat_map(|(j, dims)| dims.iter().map(move |&c| j * dq + c))
                .collect();
            for m in [Slot::Query, Slot::Key] {
                ctx.store.keep_row_ranges(&p(m, "weight"), &each(&rows))?;
                ctx.store.keep_row_ranges(&p(m, "bias"), &each(&rows))?;
            }
            let wv = f64s(ctx.store, &p(Slot::Value, "weight"), &[nh * dv, h])?;
            let bv = f64s(ctx.store, &p(Slot::Value, "bias"), &[nh * dv])?;
            let wo = f64s(ctx.store, &p(Slot::AttnOut, "weight"), &[h, nh * dv])?;
            let mut bo = f64s(ctx.store, &p(Slot::AttnOut, "bias"), &[h])?;
            // The value bias reaches the output as W_O b_V whatever the attention weights (rows sum to 1).
            for (r, row) in wo.chunks(nh * dv).enumerate() {
                bo[r] += row.iter().zip(&bv).map(|(a, b)| a * b).sum::<f64>();
            }
            let r = cut.vo;
            let mut new_v = Vec::with_capacity(nh * r * h);
            let mut new_o = vec![0.0; h * nh * r];
            for (j, svd) in cut.svd.iter().enumerate() {
                let (v, o) = head_blocks(&wv, &wo, h, nh, dv, j);
                new_v.extend(svd.value_rows(r, &v, &o, dv));
                for (row, cols) in svd.output_columns(r).chunks(r).enumerate() {
                    new_o[row * nh * r + j * r..row * nh * r + (j + 1) * r].copy_from_slice(cols);
                }
            }
            for (name, shape, values) in [
                (p(Slot::Value, "weight"), vec![nh * r, h], new_v),
                (p(Slot::Value, "bias"), vec![nh * r], vec![0.0; nh * r]),
                (p(Slot::AttnOut, "weight"), vec![h, nh * r], new_o),
                (p(Slot::AttnOut, "bias"), vec![h], bo),
            ] {
                let dtype = ctx.store.get(&name)?.dtype;
                let v: Vec<f32> = values.into_iter().map(|x| x as f32).collect();
                ctx.store
                    .set(&name, HostTensor::from_f32(shape, &v, dtype)?);
            }
        }
        let mut changed: Vec<String> = ctx.plan.changes.iter().map(|c| c.name.clone()).collect();
        let before_params = before.encoder_parameters();
        for change in &ctx.plan.arch {
            change.apply(ctx.config)?;
        }
        let after = ctx.config.bert();
        let after_params = after.encoder_parameters();
        changed.sort();
        let mut report = PassReport::structural("qa-svd", changed, before_params, after_params);
        let layers: Vec<serde_json::Value> = cuts
            .iter()
            .zip(&after.layers)
            .map(|(c, s)| {
                json!({
                    "rate": c.rate,
                    "intermediate_size": s.intermediate_size,
                    "qk_head_dim": s.qk_head_dim,
                    "vo_head_dim": s.vo_head_dim,
                    "singular_values": c.svd.iter().map(|h| h.s.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        report.decisions.insert("layers".into(), json!(layers));
        report
            .decisions
            .insert("rate".into(), json!(self.config.rate));
        Ok(report)
    }
}
