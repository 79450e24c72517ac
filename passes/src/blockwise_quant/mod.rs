//! `blockwise-quant`: BCT-style blockwise quantization (Dong & Chen 2023, "Blockwise Compression of
//! Transformer-based Models without Retraining"), with no retraining.
//!
//! - **Weights** of the selected roles (default: every encoder Linear) become `bits`-bit integer codes with one
//!   scale per block: `group-size` consecutive inputs of a row (default), a whole row (`channel`), an `r x c` tile
//!   (`block`) or the whole matrix (`tensor`). Stored in compressed-tensors layout (see `models::quant`).
//! - **Embeddings** (word, position, token type) get their own widths, row-blocked the same way.
//! - **Activations** (optional): static int scales per block of features, calibrated on the pipeline's
//!   `[calibration]` texts (largest magnitude or a percentile), at the inputs of every Linear, the operands of the
//!   attention matmuls and the inputs and outputs of GELU, softmax and LayerNorm. They are written to
//!   `activation_quantization.json`; our runtime fake-quantizes at those points, so evaluation measures what a
//!   blockwise integer runtime computes.
//!
//! - **Rounding**: round-to-nearest (default) or GPTQ (`rounding = "gptq"`, `crate::gptq`) from the input
//!   covariance of every selected Linear, measured on the model as earlier passes left it (shared analyses).
//!
//! The paper's method section is not public; docs/passes/blockwise-quant.md says where we follow its abstract and
//! where we chose.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use compressor_models::quant::act::{self, Category, Observer, RangeRule};
use compressor_models::quant::nearest_divisors;
use compressor_models::runtime::{ActMode, Bert, Cpu};
use compressor_models::{DType, Encoding, Head, QuantTensor, Role, Selector, Strategy};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analyses::cache::Cache;
use crate::error::{Error, Result};
use crate::gptq::{self, Rounding};
use crate::pass::{Pass, PassContext, PassPlan, PassReport, Phase, PlanContext, TensorMeta};
use crate::targets::{
    check_bits, default_select, embedding_targets, plan_encodings, selected_matrices, EmbeddingBits,
};

/// How many values share a weight scale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// `group-size` consecutive inputs of one output row.
    #[default]
    Group,
    /// One scale per output row.
    Channel,
    /// One scale per `block = [rows, cols]` tile.
    Block,
    /// One scale per matrix.
    Tensor,
}

/// The dtype scales are stored in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleDtype {
    #[default]
    F32,
    F16,
    Bf16,
}

impl ScaleDtype {
    fn dtype(self) -> DType {
        match self {
            ScaleDtype::F32 => DType::F32,
            ScaleDtype::F16 => DType::F16,
            ScaleDtype::Bf16 => DType::BF16,
        }
    }
}

/// How activation ranges are calibrated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RangeMode {
    /// The largest magnitude seen in the calibration data.
    #[default]
    Max,
    /// The mean over batches of each batch's `percentile`-th percentile of magnitudes.
    Percentile,
}

/// Static activation quantization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Activations {
    #[serde(default = "default_act_bits")]
    pub bits: u8,
    /// Features per scale along the last dimension (attention scores and probabilities: one scale per tensor).
    #[serde(default = "default_act_block")]
    pub block_size: usize,
    #[serde(default)]
    pub range: RangeMode,
    /// For `range = "percentile"`.
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    /// Which points to quantize: `linear` (inputs of every Linear), `matmul` (attention matmul operands), `gelu`,
    /// `softmax`, `layernorm` (inputs and outputs). Default: all.
    #[serde(default = "default_at")]
    pub at: Vec<Category>,
    /// Calibration texts per forward batch.
    #[serde(default = "default_act_batch")]
    pub batch_size: usize,
}

fn default_act_bits() -> u8 {
    8
}
fn default_act_block() -> usize {
    16
}
fn default_percentile() -> f64 {
    99.99
}
fn default_at() -> Vec<Category> {
    Category::ALL.to_vec()
}
fn default_act_batch() -> usize {
    16
}

/// Settings of a `blockwise-quant` pass.
///
/// ```toml
/// [[pass]]
/// kind = "blockwise-quant"
/// bits = 4                      # 2..8
/// granularity = "group"         # group | channel | block | tensor
/// group-size = 128              # values per scale along the input dimension
/// symmetric = true              # asymmetric codes do not load in transformers (FORMATS.md)
/// scale-dtype = "f32"           # f32 | f16 | bf16
/// pow2-scales = false           # scales rounded up to powers of two
/// embeddings = { word = 4, position = 8, token-type = 8 }
/// activations = { bits = 8, block-size = 16, range = "max" }   # needs [calibration]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default = "default_bits")]
    pub bits: u8,
    #[serde(default)]
    pub granularity: Granularity,
    #[serde(default = "default_group")]
    pub group_size: usize,
    /// `[rows, cols]` of a scale tile, for `granularity = "block"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<[usize; 2]>,
    #[serde(default = "default_true")]
    pub symmetric: bool,
    #[serde(default)]
    pub scale_dtype: ScaleDtype,
    #[serde(default)]
    pub pow2_scales: bool,
    /// Which weights to quantize. Default: `{ roles = ["attn.*", "ffn.*"], kinds = ["weight"] }`.
    #[serde(default = "default_select")]
    pub select: Selector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<EmbeddingBits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<Activations>,
    /// How weights are rounded: `nearest` or `gptq` (needs `[calibration]`).
    #[serde(default)]
    pub rounding: Rounding,
    /// GPTQ's settings (with `rounding = "gptq"`).
    #[serde(default)]
    pub gptq: gptq::Settings,
}

fn default_bits() -> u8 {
    4
}
fn default_group() -> usize {
    128
}
fn default_true() -> bool {
    true
}

/// The `blockwise-quant` pass.
pub struct BlockwiseQuant {
    config: Config,
    /// Where calibrated activation ranges are cached.
    cache: Cache,
}

impl BlockwiseQuant {
    pub fn new(config: Config) -> Self {
        let cache = Cache::shared();
        Self { config, cache }
    }

    fn encoding(&self, bits: u8, strategy: Strategy) -> Encoding {
        Encoding {
            bits,
            symmetric: self.config.symmetric,
            strategy,
            scale_dtype: self.config.scale_dtype.dtype(),
            pow2_scales: self.config.pow2_scales,
        }
    }

    fn weight_strategy(&self) -> Result<Strategy> {
        let c = &self.config;
        Ok(match c.granularity {
            Granularity::Group => Strategy::Group { size: c.group_size },
            Granularity::Channel => Strategy::Channel,
            Granularity::Tensor => Strategy::Tensor,
            Granularity::Block => {
                let [rows, cols] = c.block.ok_or_else(|| Error::Config {
                    key: "block".into(),
                    problem: "granularity = \"block\" needs `block = [rows, cols]`".into(),
                })?;
                Strategy::Block { rows, cols }
            }
        })
    }

    fn embedding_strategy(&self, e: &EmbeddingBits) -> Strategy {
        match (e.group_size, self.config.granularity) {
            (Some(size), _) => Strategy::Group { size },
            (None, Granularity::Group) => Strategy::Group {
                size: self.config.group_size,
            },
            (None, _) => Strategy::Channel,
        }
    }

    /// (tensor, encoding, config key) for every tensor this pass quantizes.
    fn targets<'i>(&self, ctx: &'i PlanContext) -> Result<Vec<(&'i TensorMeta, Encoding, String)>> {
        let c = &self.config;
        check_bits("bits", c.bits)?;
        let strategy = self.weight_strategy()?;
        let mut out = Vec::new();
        let matched = selected_matrices(ctx, &c.select)?;
        for t in matched {
            out.push((t, self.encoding(c.bits, strategy), "group-size".to_string()));
        }
        if let Some(e) = &c.embeddings {
            let strategy = self.embedding_strategy(e);
            let taken: Vec<&str> = out.iter().map(|(t, _, _)| t.name.as_str()).collect();
            for (t, bits, _) in embedding_targets(ctx, e, &taken)? {
                out.push((
                    t,
                    self.encoding(bits, strategy),
                    "embeddings.group-size".to_string(),
                ));
            }
        }
        Ok(out)
    }

    fn check_activations(&self, ctx: &PlanContext, a: &Activations) -> Result<()> {
        check_bits("activations.bits", a.bits)?;
        if ctx.calibration.is_none() {
            return Err(Error::NoCalibration {
                key: "activations".into(),
            });
        }
        if a.at.is_empty() {
            return Err(Error::Config {
                key: "activations.at".into(),
                problem: format!(
                    "selects no point; choose from {}",
                    category_names(&Category::ALL)
                ),
            });
        }
        if !(a.percentile > 0.0 && a.percentile <= 100.0) {
            return Err(Error::Config {
                key: "activations.percentile".into(),
                problem: format!("{} is not in (0, 100]", a.percentile),
            });
        }
        if a.batch_size == 0 {
            return Err(Error::Config {
                key: "activations.batch-size".into(),
                problem: "must be at least 1".into(),
            });
        }
        let b = ctx.config.bert();
        for (dim, name) in [
            (b.hidden_size, "hidden_size"),
            (b.intermediate_size, "intermediate_size"),
        ] {
            if a.block_size == 0 || dim % a.block_size != 0 {
                return Err(Error::Config {
                    key: "activations.block-size".into(),
                    problem: format!(
                        "{} does not divide {name} {dim}; valid sizes near it: {}",
                        a.block_size,
                        join(&nearest_divisors(
                            gcd(b.hidden_size, b.intermediate_size),
                            a.block_size
                        ))
                    ),
                });
            }
        }
        Ok(())
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn category_names(c: &[Category]) -> String {
    c.iter()
        .map(|c| {
            serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Pass for BlockwiseQuant {
    fn kind(&self) -> &'static str {
        "blockwise-quant"
    }

    fn phase(&self) -> Phase {
        Phase::Quantize
    }

    fn plan(&self, ctx: &PlanContext) -> Result<PassPlan> {
        let targets = self.targets(ctx)?;
        let (mut plan, problems) = plan_encodings(targets.iter().map(|(t, e, _)| (*t, *e)));
        if !problems.is_empty() {
            let key = match self.config.granularity {
                Granularity::Block => "block",
                _ => "group-size",
            };
            return Err(Error::Config {
                key: key.into(),
                problem: format!(
                    "the encoding does not fit {} tensor(s):\n  {}\nhint: choose a size that divides every selected dimension, or granularity = \"channel\"",
                    problems.len(),
                    problems.join("\n  ")
                ),
            });
        }
        if let Some(note) = gptq::plan_note(
            self.config.rounding,
            &self.config.gptq,
            ctx,
            self.config.granularity == Granularity::Block,
        )? {
            plan.notes.push(note);
            plan.statistics.push(crate::analyses::Statistic::Covariance);
        }
        if let Some(a) = &self.config.activations {
            self.check_activations(ctx, a)?;
            plan.notes.push(format!(
                "activations: {}-bit at {} points ({}), blocks of {}, calibrated on [calibration] data",
                a.bits,
                category_names(&a.at),
                match a.range {
                    RangeMode::Max => "max range".to_string(),
                    RangeMode::Percentile => format!("percentile {}", a.percentile),
                },
                a.block_size
            ));
            plan.statistics
                .push(crate::analyses::Statistic::ActivationRanges);
        }
        if plan.changes.iter().any(|c| {
            ctx.info.get(&c.name).is_some_and(|t| {
                matches!(
                    t.role,
                    Role::EmbedTokens | Role::EmbedPositions | Role::EmbedTypes
                )
            })
        }) {
            plan.notes.push(
                "quantized embedding tables load in transformers 5.x, not in 4.x (measured 4.57.3 with compressed-tensors 0.12.2); for 4.x leave `embeddings` out or use `compressor export --format dense`".into(),
            );
        }
        if let Some(note) =
            crate::targets::config_groups_note(plan.changes.iter().filter_map(|c| c.encoding_after))
        {
            plan.notes.push(note);
        }
        if !self.config.symmetric {
            plan.notes.push(
                "asymmetric codes are written as compressed-tensors pack-quantized with packed zero points: vLLM loads them, transformers does not (use `compressor export --format dense`)".into(),
            );
        }
        Ok(plan)
    }

    fn run(&self, ctx: &mut PassContext) -> Result<PassReport> {
        let changes = &ctx.plan.changes;
        // Quantize every planned tensor (in parallel; results are collected in plan order). Each is decoded to f32
        // inside its task, so that only the tensors in flight are held in float, not the whole model.
        let inputs: Vec<(String, Encoding, [usize; 2])> = changes
            .iter()
            .map(|c| -> Result<_> {
                let e = c.encoding_after.ok_or_else(|| Error::Config {
                    key: "plan".into(),
                    problem: format!("`{}` has no planned encoding", c.name),
                })?;
                Ok((c.name.clone(), e, [c.shape_before[0], c.shape_before[1]]))
            })
            .collect::<Result<_>>()?;
        let covariance = match self.config.rounding {
            Rounding::Gptq => Some(ctx.covariance("rounding = \"gptq\"", &self.cache)?),
            Rounding::Nearest => None,
        };
        let store: &compressor_models::TensorStore = ctx.store;
        let naming = ctx.config.bert().naming();
        let progress = ctx.progress;
        let done = Mutex::new(());
        let gptq_settings = self.config.gptq;
        // Sparse weights keep their masks (pruned elements stay exactly 0).
        let ctx_masks: BTreeMap<String, Vec<bool>> = inputs
            .iter()
            .filter_map(|(name, ..)| store.sparse_mask(name).map(|m| (name.clone(), m)))
            .collect();
        // GPTQ's layer error next to round-to-nearest's, per Linear: tr((W - Q) H (W - Q)^T).
        let layer_errors: Mutex<BTreeMap<String, (f64, f64)>> = Mutex::new(BTreeMap::new());
        let results: Vec<Result<(String, QuantTensor, compressor_models::quant::QuantError)>> =
            inputs
                .par_iter()
                .map(|(name, e, [rows, cols])| {
                    let fail = |problem: String| Error::Config {
                        key: "bits".into(),
                        problem: format!("cannot quantize `{name}`: {problem}"),
                    };
                    let values = &store.get_f32(name, &[*rows, *cols])?;
                    let nearest = QuantTensor::quantize(values, *rows, *cols, *e).map_err(fail)?;
                    let h = covariance
                        .as_ref()
                        .and_then(|c| c.of_linear(naming, name))
                        .filter(|(n, _)| n == cols);
                    let q = match h {
                        Some((_, h)) => {
                            let keep = ctx_masks.get(name);
                            let q = gptq::quantize(
                                values,
                                *rows,
                                *cols,
                                *e,
                                h,
                                &gptq_settings,
                                keep.map(Vec::as_slice),
                            )
                            .map_err(fail)?;
                            let errors = (
                                gptq::layer_error(values, &q, h),
                                gptq::layer_error(values, &nearest, h),
                            );
                            if let Ok(mut m) = layer_errors.lock() {
                                m.insert(name.clone(), errors);
                            }
                            q
                        }
                        None => nearest,
                    };
                    let err = q.error(values);
                    if let Ok(_g) = done.lock() {
                        progress.on_unit(name);
                    }
                    Ok((name.clone(), q, err))
                })
                .collect();
        let mut per_tensor = BTreeMap::new();
        let mut changed = Vec::new();
        let (mut se, mut norm) = (0f64, 0f64);
        for r in results {
            let (name, q, err) = r?;
            let values_norm = if err.relative_frobenius > 0.0 {
                err.squared_error / (err.relative_frobenius * err.relative_frobenius)
            } else {
                0.0
            };
            se += err.squared_error;
            norm += values_norm;
            per_tensor.insert(
                name.clone(),
                json!({
                    "bits": q.encoding.bits,
                    "granularity": q.encoding.strategy.describe(),
                    "relative_frobenius_error": err.relative_frobenius,
                    "max_abs_error": err.max_abs_error,
                }),
            );
            if let Some((g, n)) = layer_errors.lock().ok().and_then(|m| m.get(&name).copied()) {
                if let Some(entry) = per_tensor.get_mut(&name) {
                    entry["gptq_layer_error"] = json!(g);
                    entry["nearest_layer_error"] = json!(n);
                }
            }
            ctx.store.set_quant(&name, q);
            if let Some(entry) = per_tensor.get_mut(&name) {
                entry["bytes"] = json!(ctx.store.stored_bytes(&name));
                if let (Some(form), Some((_, shape))) =
                    (ctx.store.form(&name), ctx.store.info(&name))
                {
                    entry["form"] = json!(form.describe(&shape));
                }
            }
            changed.push(name);
        }
        changed.sort();
        let mut report = PassReport {
            kind: "blockwise-quant".into(),
            changed,
            ..PassReport::default()
        };
        let c = &self.config;
        report.decisions.insert("bits".into(), json!(c.bits));
        report.decisions.insert(
            "granularity".into(),
            json!(self.weight_strategy()?.describe()),
        );
        report
            .decisions
            .insert("symmetric".into(), json!(c.symmetric));
        report
            .decisions
            .insert("scale_dtype".into(), json!(c.scale_dtype.dtype().as_str()));
        report
            .decisions
            .insert("pow2_scales".into(), json!(c.pow2_scales));
        let m = &mut report.metrics;
        m.insert("tensors".into(), json!(changes.len()));
        m.insert("bytes_before".into(), json!(ctx.plan.bytes_before()));
        m.insert("bytes_after".into(), json!(ctx.plan.bytes_after()));
        m.insert(
            "relative_frobenius_error".into(),
            json!(if norm > 0.0 { (se / norm).sqrt() } else { 0.0 }),
        );
        m.insert("per_tensor".into(), json!(per_tensor));

        if let Some(a) = &c.activations {
            let table = self.calibrate(ctx, a)?;
            let ranges: BTreeMap<&String, serde_json::Value> = table
                .points
                .iter()
                .map(|(name, p)| {
                    let (lo, hi) = table.range(p.unsigned);
                    let smax = p.scales.iter().fold(0f32, |m, &s| m.max(s));
                    let v = json!({
                        "blocks": p.scales.len(),
                        "unsigned": p.unsigned,
                        "range": [lo * smax, hi * smax],
                    });
                    (name, v)
                })
                .collect();
            report
                .metrics
                .insert("activation_points".into(), json!(table.points.len()));
            report
                .metrics
                .insert("activation_ranges".into(), json!(ranges));
            report.decisions.insert(
                "activations".into(),
                json!({
                    "bits": a.bits,
                    "block_size": a.block_size,
                    "range": table.range.clone(),
                    "at": a.at,
                    "file": act::FILE,
                }),
            );
            ctx.files.set(act::FILE, table.to_json());
        }
        Ok(report)
    }
}

impl BlockwiseQuant {
    /// Run the calibration texts through the (weight-quantized) model, observing every point, and keep the points
    /// of the selected categories.
    fn calibrate(&self, ctx: &mut PassContext, a: &Activations) -> Result<act::ActivationQuant> {
        // The ranges are measured on the weight-quantized model: its fingerprint keys the cache entry.
        let (records, analyses) = ctx.analyses("activations", &self.cache)?;
        let key = analyses.key(
            "activation-ranges",
            records.hash(),
            format!(
                "bits={}; at={:?}; range={:?}; percentile={}; block-size={}; batch-size={}",
                a.bits, a.at, a.range, a.percentile, a.block_size, a.batch_size
            ),
        )?;
        if let Some(table) = analyses
            .cache
            .read_json::<serde_json::Value>(&key)
            .and_then(|v| serde_json::to_vec(&v).ok())
            .and_then(|bytes| act::ActivationQuant::from_json(&bytes).ok())
        {
            return Ok(table);
        }
        let batches = records.batches(a.batch_size);
        let rule = match a.range {
            RangeMode::Max => RangeRule::Max,
            RangeMode::Percentile => RangeRule::Percentile(a.percentile),
        };
        let classifier = matches!(ctx.config.bert().head, Head::SequenceClassification { .. });
        let mut model =
            Bert::<Cpu>::load(ctx.store, ctx.config, analyses.pooling, &Default::default())?;
        let mode = Arc::new(ActMode::Observe(Mutex::new(Observer::new(
            rule,
            a.block_size,
        ))));
        model.act = Some(mode.clone());
        ctx.progress.on_pass_start("calibrate", batches.len());
        for (i, batch) in batches.iter().enumerate() {
            ctx.progress
                .on_unit(&format!("calibration batch {}/{}", i + 1, batches.len()));
            // On the host kernels (one observation per point and batch, as the tensor ops would make); logits also
            // observe the pooler output that feeds the classifier.
            if classifier {
                model.classify(batch)?;
            } else {
                model.embed(batch)?;
            }
        }
        drop(model);
        let observer = match &*mode {
            ActMode::Observe(o) => o.lock().map_err(|_| {
                compressor_models::Error::Runtime("calibration observer poisoned".into())
            })?,
            ActMode::Quantize(_) => {
                return Err(compressor_models::Error::Runtime(
                    "calibration model lost its observer".into(),
                )
                .into())
            }
        };
        let range = match a.range {
            RangeMode::Max => "max".to_string(),
            RangeMode::Percentile => format!("percentile {}", a.percentile),
        };
        let mut table = observer.finish(a.bits, range);
        let sites = act::Site::ALL;
        table.points.retain(|name, _| {
            sites
                .iter()
                .find(|s| name.ends_with(s.suffix()))
                .is_some_and(|s| s.categories().iter().any(|c| a.at.contains(c)))
        });
        let value: serde_json::Value =
            serde_json::from_slice(&table.to_json()).map_err(|e| Error::Config {
                key: "activations".into(),
                problem: format!("the activation table does not serialize: {e}"),
            })?;
        analyses.cache.write_json(&key, &value)?;
        Ok(table)
    }
}
