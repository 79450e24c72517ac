//! `fisher-prune`: GAPrune (Tang & Yang, arXiv 2509.10844), unstructured or 2:4 pruning of selected Linear weights
//! (default: the FFN's) by domain alignment importance, stored in the sparse forms of `models::forms`.
//!
//! - `data`: the general and domain triplet sets `(query, positive, negative)`.
//! - gradients: one sweep per set over micro-batches of triplets with the InfoNCE loss
//!   ([`Target::Contrastive`](crate::analyses::Target)), giving the mean gradient and the Fisher diagonal (mean
//!   squared micro-batch gradient) in one pass, computed and cached by the shared analyses.
//! - `score`: DAI (or a baseline score) per weight, then the mask.
//!
//! The decision is made at plan time (the plan states every tensor's exact sparse byte count); `run` zeroes the
//! pruned weights and stores each tensor as a bitmask or 2:4 sparse matrix. Exports write the zeros densely.

mod data;
mod score;

use std::path::Path;
use std::sync::Mutex;

use compressor_calibration::{TextInput, TextTokenizer};
use compressor_models::forms::{Form, SparsePattern, Stored};
use compressor_models::{Kind, Pooling, Selector};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analyses::cache::Cache;
use crate::analyses::{Analyses, Gradients, Sample, Statistic};
use crate::error::{Error, Result};
use crate::pass::{Pass, PassContext, PassPlan, PassReport, Phase, PlanContext, PlannedChange};
use crate::targets;

pub use data::{Format, Source, Triplet};
pub use score::{cosine, global_mask, two_four_mask, Alignment, Dai, Scoring};

/// Where the zeros may lie.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pattern {
    /// Anywhere (bitmask form).
    #[default]
    #[serde(rename = "unstructured")]
    Unstructured,
    /// 2 of every 4 consecutive inputs of a row (2:4 form); the target is then 50%.
    #[serde(rename = "2:4")]
    TwoFour,
}

/// How the triplets of a set are chosen from the candidates its file gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Uniformly with the seed.
    #[default]
    Uniform,
    /// Representative (GAPrune's `sample.py`): the queries of at most `8 x triplets` candidates (a seeded
    /// subsample) are embedded by the model itself, clustered by k-means into `triplets` clusters (k-means++
    /// seeding, at most 20 Lloyd iterations), and the candidate nearest each centre is kept.
    Kmeans,
}

/// How the unstructured target is spread over the selected tensors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocation {
    /// The lowest scores over all selected weights together (tensors lose different fractions).
    #[default]
    Global,
    /// The same fraction of every selected tensor.
    PerTensor,
    /// The official code's proportional per-layer budget: each layer loses its share of the target in proportion to
    /// its selected weights (rounding remainders to the largest layers), kept within [`RHO`] of the layer, and
    /// within a layer the lowest scores over all its selected tensors go.
    PerLayer,
}

/// The bounds of a layer's pruned fraction under `allocation = "per-layer"` (the code's `rho_min` / `rho_max`).
pub const RHO: (f64, f64) = (0.05, 0.95);

/// Settings of a `fisher-prune` pass.
///
/// ```toml
/// [[pass]]
/// kind = "fisher-prune"
/// target = 0.5                 # fraction of the selected weights set to zero, in (0, 1); 2:4: 0.5 or left out
/// pattern = "unstructured"     # or "2:4"
/// score = "gaprune"            # magnitude | fisher-general | fisher-domain | gaprune
/// alignment = "cosine"         # sign | normalized-product (the official code's, a no-op)
/// alpha = 0.2                  # DAI: [(F_dom - beta F_gen) |w| + gamma sqrt|w|] (1 + alpha s)
/// beta = 1.0
/// gamma = 0.5
/// allocation = "global"        # or "per-tensor", "per-layer"
/// triplets = 64                # per set
/// sampling = "uniform"         # or "kmeans" (representative: the candidate nearest each k-means centre)
/// micro-batch = 8              # triplets per gradient
/// max-length = 128
/// [pass.general]
/// data = "../../shared/data/calibration-wiki/en.jsonl"   # format = "paragraphs"
/// [pass.domain]
/// data = "../../shared/data/bbc-news/all.jsonl"
/// format = "pairs"
/// skip = 400
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    #[serde(default)]
    pub pattern: Pattern,
    #[serde(default)]
    pub score: Scoring,
    #[serde(default)]
    pub alignment: Alignment,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default = "one")]
    pub beta: f64,
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    #[serde(default)]
    pub allocation: Allocation,
    /// The weights pruned (default: both FFN weights of every layer).
    #[serde(default = "default_select")]
    pub select: Selector,
    /// Triplets per set.
    #[serde(default = "default_triplets")]
    pub triplets: usize,
    #[serde(default)]
    pub sampling: Sampling,
    /// Triplets per micro-batch (one gradient each).
    #[serde(default = "default_micro_batch")]
    pub micro_batch: usize,
    /// Token sequences are cut to this length.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// InfoNCE scale (inverse temperature).
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Seed of the triplet sampling (default: the `[calibration]` seed, else 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub general: Option<Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Source>,
}

fn default_alpha() -> f64 {
    0.2
}
fn one() -> f64 {
    1.0
}
fn default_gamma() -> f64 {
    0.5
}
fn default_triplets() -> usize {
    64
}
fn default_micro_batch() -> usize {
    8
}
fn default_max_length() -> usize {
    128
}
fn default_scale() -> f32 {
    20.0
}

/// Both FFN weights of every layer.
pub fn default_select() -> Selector {
    Selector {
        roles: vec!["ffn.up".into(), "ffn.down".into()],
        kinds: Some(vec![Kind::Weight]),
        ..Selector::default()
    }
}

impl Config {
    /// Paths resolved against the pipeline file's folder.
    pub fn with_base(&self, base: &Path) -> Self {
        Self {
            general: self.general.as_ref().map(|s| s.with_base(base)),
            domain: self.domain.as_ref().map(|s| s.with_base(base)),
            ..self.clone()
        }
    }

    fn check(&self) -> Result<()> {
        let bad = |key: &str, problem: String| {
            Err(Error::Config {
                key: key.into(),
                problem,
            })
        };
        match (self.pattern, self.target) {
            (Pattern::Unstructured, None) => {
                return bad(
                    "target",
                    "is missing: give the fraction of the selected weights to set to zero (e.g. 0.5)".into(),
                )
            }
            (_, Some(t)) if !(t > 0.0 && t < 1.0) => {
                return bad(
                    "target",
                    format!("is {t}, expected a fraction in (0, 1) (0.5 = 50% of the selected weights)"),
                )
            }
            (Pattern::TwoFour, Some(t)) if t != 0.5 => {
                return bad(
                    "target",
                    format!("is {t}; pattern = \"2:4\" prunes exactly 0.5\nhint: leave `target` out with 2:4"),
                )
            }
            _ => {}
        }
        if let (Allocation::PerLayer, Some(t)) = (self.allocation, self.target) {
            if !(RHO.0..=RHO.1).contains(&t) {
                return bad(
                    "target",
                    format!(
                        "is {t}; allocation = \"per-layer\" keeps every layer's pruned fraction within [{}, {}]\nhint: use allocation = \"global\" or \"per-tensor\" for this target",
                        RHO.0, RHO.1
                    ),
                );
            }
        }
        if self.pattern == Pattern::TwoFour && self.allocation != Allocation::Global {
            return bad(
                "allocation",
                "does not apply to pattern = \"2:4\" (every group of 4 loses 2)".into(),
            );
        }
        for (key, v) in [
            ("triplets", self.triplets),
            ("micro-batch", self.micro_batch),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        if self.max_length < 2 {
            return bad("max-length", "must be at least 2".into());
        }
        for (key, v) in [
            ("alpha", self.alpha),
            ("beta", self.beta),
            ("gamma", self.gamma),
        ] {
            if !v.is_finite() {
                return bad(key, format!("is {v}, expected a finite number"));
            }
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return bad(
                "scale",
                format!("is {}, expected a positive number", self.scale),
            );
        }
        if self.score.needs_gradients() {
            for (key, s) in [("general", &self.general), ("domain", &self.domain)] {
                if s.is_none() {
                    return bad(
                        key,
                        format!(
                            "is missing: score = \"{}\" needs both triplet sets ([pass.general] and [pass.domain] with `data`)",
                            serde_json::to_value(self.score)
                                .ok()
                                .and_then(|v| v.as_str().map(String::from))
                                .unwrap_or_default()
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

/// One tensor's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDecision {
    pub name: String,
    pub shape: [usize; 2],
    /// Kept weights, row-major.
    pub keep: Vec<bool>,
    pub form: Form,
    /// The cosine of the mean general and domain gradients (with gradients).
    pub alignment: Option<f64>,
}

/// The whole decision, made at plan time.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub tensors: Vec<TensorDecision>,
    /// Whether each set's gradients came from the cache (general, domain).
    pub cached: Option<(bool, bool)>,
}

/// The `fisher-prune` pass.
pub struct FisherPrune {
    config: Config,
    decision: Mutex<Option<Decision>>,
    cache: Cache,
}

impl FisherPrune {
    pub fn new(config: Config) -> Self {
        Self::with_cache(config, Cache::shared())
    }

    /// A pass caching its gradients in `cache`.
    pub fn with_cache(config: Config, cache: Cache) -> Self {
        Self {
            config,
            decision: Mutex::new(None),
            cache,
        }
    }

    /// The decision of the last plan (for tests and reports).
    pub fn decision(&self) -> Option<Decision> {
        self.decision.lock().ok().and_then(|d| d.clone())
    }
}

/// The micro-batches of `triplets` as contrastive samples: tokenized, ordered by total length (stable) so that a
/// micro-batch pads little, then cut into groups of `micro_batch`.
pub fn samples(
    tokenizer: &TextTokenizer,
    triplets: &[Triplet],
    micro_batch: usize,
    scale: f32,
) -> Result<Vec<Sample>> {
    let texts: Vec<TextInput> = triplets
        .iter()
        .flat_map(|t| t.iter().map(|s| TextInput::from(s.as_str())))
        .collect();
    let encoded = tokenizer.encode_all(&texts)?;
    let mut parts: Vec<[(Vec<i64>, Vec<i64>); 3]> = encoded
        .chunks(3)
        .map(|c| [c[0].clone(), c[1].clone(), c[2].clone()])
        .collect();
    parts.sort_by_key(|p| p.iter().map(|(ids, _)| ids.len()).sum::<usize>());
    Ok(parts
        .chunks(micro_batch.max(1))
        .map(|chunk| Sample::triplets(chunk, tokenizer.pad_id(), scale))
        .collect())
}

/// The `n` candidates nearest the centres of a k-means clustering (k = `n`) of their queries' embeddings by the
/// analysed model (its own pooling), in candidate order. A centre without points takes the nearest candidate not
/// yet taken.
pub fn representative(
    analyses: &Analyses,
    tokenizer: &TextTokenizer,
    candidates: Vec<Triplet>,
    n: usize,
    seed: u64,
) -> Result<Vec<Triplet>> {
    if candidates.len() <= n {
        return Ok(candidates);
    }
    let model = compressor_models::runtime::Bert::<compressor_models::runtime::Cpu>::load(
        analyses.store,
        analyses.config,
        analyses.pooling,
        &Default::default(),
    )?;
    let encoded = tokenizer.encode_all(
        &candidates
            .iter()
            .map(|t| TextInput::from(t[0].as_str()))
            .collect::<Vec<_>>(),
    )?;
    let lengths: Vec<usize> = encoded.iter().map(|(ids, _)| ids.len()).collect();
    let mut points: Vec<Vec<f32>> = vec![Vec::new(); candidates.len()];
    for chunk in compressor_calibration::length_sorted_order(&lengths).chunks(32) {
        let rows: Vec<(Vec<i64>, Vec<i64>)> = chunk.iter().map(|&i| encoded[i].clone()).collect();
        let batch = compressor_models::EncodedBatch::from_rows(&rows, tokenizer.pad_id());
        for (&i, e) in chunk.iter().zip(model.embed(&batch)?) {
            points[i] = e;
        }
    }
    let options = compressor_eval::kmeans::KMeansOptions {
        max_iter: 20,
        seed,
        ..compressor_eval::kmeans::KMeansOptions::new(n)
    };
    let clustering =
        compressor_eval::kmeans::kmeans(&points, &options).map_err(|e| Error::Config {
            key: "sampling".into(),
            problem: format!("k-means of the queries failed: {e}"),
        })?;
    let distance = |p: &[f32], c: &[f64]| -> f64 {
        p.iter()
            .zip(c)
            .map(|(x, y)| (f64::from(*x) - y).powi(2))
            .sum()
    };
    let mut taken = vec![false; points.len()];
    for (k, centre) in clustering.centers.iter().enumerate() {
        let nearest = |own: bool, taken: &[bool]| {
            (0..points.len())
                .filter(|&i| !taken[i] && (!own || clustering.labels[i] == k))
                .min_by(|&a, &b| {
                    distance(&points[a], centre)
                        .total_cmp(&distance(&points[b], centre))
                        .then(a.cmp(&b))
                })
        };
        if let Some(i) = nearest(true, &taken).or_else(|| nearest(false, &taken)) {
            taken[i] = true;
        }
    }
    Ok(candidates
        .into_iter()
        .zip(taken)
        .filter_map(|(t, keep)| keep.then_some(t))
        .collect())
}

impl FisherPrune {
    /// Mean gradients and Fisher diagonals of `weights` on one triplet set.
    fn gradients(
        &self,
        analyses: &Analyses,
        tokenizer: &TextTokenizer,
        key: &str,
        source: &Source,
        seed: u64,
        weights: &[String],
    ) -> Result<(Gradients, bool)> {
        let c = &self.config;
        let triplets = match c.sampling {
            Sampling::Uniform => source.triplets(key, c.triplets, seed)?,
            Sampling::Kmeans => {
                let pool = compressor_calibration::sample(
                    source.candidates(key, c.triplets, seed)?,
                    8 * c.triplets,
                    seed,
                );
                representative(analyses, tokenizer, pool, c.triplets, seed)?
            }
        };
        let samples = samples(tokenizer, &triplets, c.micro_batch, c.scale)?;
        analyses.gradients(&samples, weights, &|_, _| {})
    }

    fn decide(&self, ctx: &PlanContext) -> Result<Decision> {
        let c = &self.config;
        let matched = targets::selected_matrices(ctx, &c.select)?;
        targets::reject(
            &matched,
            |t| {
                !matches!(t.form, Form::Dense { .. })
                    || ctx.store.info(&t.name).map(|(_, s)| s) != Some(t.shape.clone())
                    || ctx.info.rewritten.contains(&t.name)
            },
            "changed by an earlier pass (quantized, sparse or reshaped)",
            "put `fisher-prune` before other passes that change these tensors; it scores the checkpoint's own weights",
        )?;
        if c.pattern == Pattern::TwoFour {
            targets::reject(
                &matched,
                |t| !t.shape[1].is_multiple_of(4),
                "of an input width not divisible by 4",
                "2:4 groups 4 consecutive inputs; exclude these tensors or use pattern = \"unstructured\"",
            )?;
        }
        let weights: Vec<String> = matched.iter().map(|t| t.name.clone()).collect();
        let mut thetas = Vec::with_capacity(matched.len());
        for t in &matched {
            thetas.push(ctx.store.get_f32(&t.name, &t.shape)?);
        }
        let seed = c.seed.or(ctx.calibration.map(|s| s.seed)).unwrap_or(0);
        let (mut general, mut domain, mut cached) = (None, None, None);
        if let (true, Some(g), Some(d)) = (c.score.needs_gradients(), &c.general, &c.domain) {
            let tokenizer = TextTokenizer::from_model_dir(ctx.model_dir, Some(c.max_length))?;
            let analyses = Analyses::new(
                ctx.store,
                ctx.config,
                Pooling::load(ctx.model_dir)?,
                self.cache.clone(),
            );
            let (gg, gc) = self.gradients(&analyses, &tokenizer, "general", g, seed, &weights)?;
            let (gd, dc) = self.gradients(&analyses, &tokenizer, "domain", d, seed, &weights)?;
            (general, domain, cached) = (Some(gg), Some(gd), Some((gc, dc)));
        }
        let dai = Dai {
            alpha: c.alpha,
            beta: c.beta,
            gamma: c.gamma,
            alignment: c.alignment,
        };
        let mut all_scores = Vec::with_capacity(matched.len());
        let mut alignments = Vec::with_capacity(matched.len());
        for (t, theta) in matched.iter().zip(&thetas) {
            let inputs = score::Inputs {
                theta,
                fisher_general: general.as_ref().and_then(|g| g.fisher(&t.name)),
                fisher_domain: domain.as_ref().and_then(|g| g.fisher(&t.name)),
                gradient_general: general.as_ref().and_then(|g| g.mean(&t.name)),
                gradient_domain: domain.as_ref().and_then(|g| g.mean(&t.name)),
            };
            alignments.push(match (inputs.gradient_general, inputs.gradient_domain) {
                (Some(a), Some(b)) => Some(cosine(a, b)),
                _ => None,
            });
            let s = score::scores(c.score, &dai, &inputs).map_err(|problem| Error::Config {
                key: "score".into(),
                problem: format!("`{}`: {problem}", t.name),
            })?;
            all_scores.push(s);
        }
        let masks: Vec<Vec<bool>> = match (c.pattern, c.allocation) {
            (Pattern::TwoFour, _) => all_scores.iter().map(|s| two_four_mask(s)).collect(),
            (Pattern::Unstructured, Allocation::Global) => {
                let total: usize = all_scores.iter().map(Vec::len).sum();
                global_mask(&all_scores, pruned_count(c.target, total))
            }
            (Pattern::Unstructured, Allocation::PerTensor) => all_scores
                .iter()
                .map(|s| score::tensor_mask(s, pruned_count(c.target, s.len())))
                .collect(),
            (Pattern::Unstructured, Allocation::PerLayer) => {
                let layers: Vec<Option<usize>> = matched.iter().map(|t| t.layer).collect();
                score::layer_masks(&all_scores, &layers, c.target.unwrap_or(0.5), RHO)
            }
        };
        let tensors = matched
            .iter()
            .zip(masks)
            .zip(thetas.iter().zip(alignments))
            .map(|((t, keep), (theta, alignment))| {
                let form = match c.pattern {
                    Pattern::TwoFour => Form::Sparse {
                        pattern: SparsePattern::TwoFour,
                        nnz: t.numel() / 2,
                        dtype: t.dtype,
                        encoding: None,
                    },
                    // The bitmask stores the non-zeros: kept weights that are not already 0.
                    Pattern::Unstructured => Form::Sparse {
                        pattern: SparsePattern::Bitmask,
                        nnz: keep
                            .iter()
                            .zip(theta)
                            .filter(|(k, v)| **k && **v != 0.0)
                            .count(),
                        dtype: t.dtype,
                        encoding: None,
                    },
                };
                TensorDecision {
                    name: t.name.clone(),
                    shape: [t.shape[0], t.shape[1]],
                    keep,
                    form,
                    alignment,
                }
            })
            .collect();
        Ok(Decision { tensors, cached })
    }
}

/// Weights to prune out of `n` at `target` (rounded to the nearest).
fn pruned_count(target: Option<f64>, n: usize) -> usize {
    ((target.unwrap_or(0.5) * n as f64).round() as usize).min(n)
}

impl Pass for FisherPrune {
    fn kind(&self) -> &'static str {
        "fisher-prune"
    }

    fn phase(&self) -> Phase {
        Phase::Structure
    }

    fn plan(&self, ctx: &PlanContext) -> Result<PassPlan> {
        self.config.check()?;
        let decision = self.decide(ctx)?;
        let mut plan = PassPlan::default();
        for d in &decision.tensors {
            let Some(t) = ctx.info.get(&d.name) else {
                continue;
            };
            plan.changes.push(PlannedChange {
                name: d.name.clone(),
                dtype_before: t.dtype,
                dtype_after: t.dtype,
                shape_before: t.shape.clone(),
                shape_after: t.shape.clone(),
                bytes_before: t.bytes(),
                bytes_after: d.form.bytes(&t.shape),
                encoding_after: None,
                form_after: Some(d.form),
            });
        }
        let (kept, total) = decision.tensors.iter().fold((0, 0), |(k, n), d| {
            (k + d.keep.iter().filter(|&&x| x).count(), n + d.keep.len())
        });
        plan.notes.push(format!(
            "{} of {total} selected weights set to zero ({:.1}%), stored {}; exports write them as dense zeros",
            total - kept,
            100.0 * (total - kept) as f64 / total.max(1) as f64,
            match self.config.pattern {
                Pattern::Unstructured => "with a bitmask",
                Pattern::TwoFour => "2:4",
            }
        ));
        if self.config.score.needs_gradients() {
            plan.statistics.push(Statistic::Gradients);
        }
        if let Ok(mut slot) = self.decision.lock() {
            *slot = Some(decision);
        }
        Ok(plan)
    }

    fn run(&self, ctx: &mut PassContext) -> Result<PassReport> {
        let decision = self.decision().ok_or_else(|| Error::Config {
            key: "fisher-prune".into(),
            problem: "run before plan: the mask is decided when the pipeline is planned".into(),
        })?;
        let mut report = PassReport {
            kind: "fisher-prune".into(),
            ..PassReport::default()
        };
        let (mut before, mut after, mut zeros, mut total) = (0usize, 0usize, 0usize, 0usize);
        let mut per_tensor = serde_json::Map::new();
        for d in &decision.tensors {
            let [rows, cols] = d.shape;
            let mut values = ctx.store.get_f32(&d.name, &d.shape)?;
            let dtype = ctx
                .store
                .info(&d.name)
                .map(|(dt, _)| dt)
                .unwrap_or(compressor_models::DType::F32);
            for (v, keep) in values.iter_mut().zip(&d.keep) {
                if !keep {
                    *v = 0.0;
                }
            }
            let pattern = match self.config.pattern {
                Pattern::Unstructured => SparsePattern::Bitmask,
                Pattern::TwoFour => SparsePattern::TwoFour,
            };
            let stored =
                Stored::sparse(pattern, &values, rows, cols, dtype).map_err(|problem| {
                    Error::Config {
                        key: "pattern".into(),
                        problem: format!("`{}`: {problem}", d.name),
                    }
                })?;
            before += ctx.store.stored_bytes(&d.name);
            after += stored.stored_bytes();
            let z = values.iter().filter(|v| **v == 0.0).count();
            zeros += z;
            total += values.len();
            per_tensor.insert(
                d.name.clone(),
                json!({
                    "kept": d.keep.iter().filter(|&&k| k).count(),
                    "zeros": z,
                    "alignment_cosine": d.alignment,
                }),
            );
            ctx.store.set_stored(&d.name, stored);
            report.changed.push(d.name.clone());
        }
        report.changed.sort();
        report.metrics.insert("bytes_before".into(), json!(before));
        report.metrics.insert("bytes_after".into(), json!(after));
        report
            .metrics
            .insert("sparsity".into(), json!(zeros as f64 / total.max(1) as f64));
        if let Some((g, d)) = decision.cached {
            report.metrics.insert(
                "gradients_cached".into(),
                json!({ "general": g, "domain": d }),
            );
        }
        let c = &self.config;
        report.decisions.insert("score".into(), json!(c.score));
        report.decisions.insert("pattern".into(), json!(c.pattern));
        if c.score == Scoring::Gaprune {
            report.decisions.insert(
                "dai".into(),
                json!({ "alpha": c.alpha, "beta": c.beta, "gamma": c.gamma, "alignment": c.alignment }),
            );
        }
        report
            .decisions
            .insert("tensors".into(), serde_json::Value::Object(per_tensor));
        Ok(report)
    }
}
