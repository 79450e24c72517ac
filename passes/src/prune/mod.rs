//! `prune`: structured pruning of attention heads, FFN neurons and whole encoder layers by importance, the
//! baseline every structural method is compared against.
//!
//! - `score`: importance of every unit, from weight magnitude or from activations on the calibration data
//!   (a head's contribution to the residual stream, a neuron's mean |activation| times its outgoing weight norm,
//!   a layer's block influence `1 - cos(input, output)`).
//! - `allocate`: how many units of each kind every layer loses to reach the target (uniform: the same fraction in
//!   every layer; per-layer: lowest scores across all layers first).
//! - `remove`: physical removal (rows and columns sliced, dropped layers renumbered) and the new layer shapes.
//!
//! The decision is made at plan time: the shapes it produces are what later passes plan against (a structural
//! pass's plan is its decision). It reads the encoder weights (and, for `importance = "activation"`, runs the
//! calibration data through the model), like `vocab-trim` mines its corpus at plan time.

mod allocate;
pub(crate) mod remove;
mod score;

use compressor_models::arch::LayerShape;
use compressor_models::family::Naming;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analyses::cache::Cache;
use crate::analyses::Statistic;
use crate::error::{Error, Result};
use crate::pass::{
    ArchChange, Pass, PassContext, PassPlan, PassReport, Phase, PlanContext, PlanDecision,
};

pub(crate) use allocate::target_parameters;
pub use allocate::{Decision, LayerKeep};

/// Which units compete for the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Structure {
    /// Attention heads (query, key, value rows and output columns).
    Heads,
    /// FFN neurons (intermediate rows and output columns).
    Neurons,
    /// Dimensions of the residual stream (embedding columns, every Linear's input columns or output rows, the
    /// LayerNorms): one set for the whole model. LayerNorm then normalises over the kept dimensions, so the
    /// removal is not exact even for dimensions that carry nothing; stock BERT loaders cannot run the result.
    Hidden,
}

impl Structure {
    pub fn name(self) -> &'static str {
        match self {
            Structure::Heads => "heads",
            Structure::Neurons => "neurons",
            Structure::Hidden => "hidden",
        }
    }
}

/// How units are scored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Importance {
    /// L2 norm of the unit's weights (no data).
    #[default]
    Magnitude,
    /// Activations on the `[calibration]` data.
    Activation,
}

/// How the removal is spread over layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocation {
    /// The same fraction of heads and of neurons in every layer.
    #[default]
    Uniform,
    /// The lowest-scoring units across all layers, so layers lose different amounts.
    PerLayer,
}

/// Settings of a `prune` pass.
///
/// ```toml
/// [[pass]]
/// kind = "prune"
/// target = 0.25                        # fraction of encoder parameters removed (or target-bytes = 60_000_000)
/// structures = ["heads", "neurons"]    # which units compete (also "hidden": the residual stream's width)
/// importance = "magnitude"             # or "activation" (needs [calibration])
/// allocation = "uniform"               # or "per-layer"
/// drop-layers = 0                      # whole layers removed first, by block influence (needs [calibration])
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Fraction of the encoder's parameters to remove, in [0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// Alternatively: the bytes the model's tensors should take after pruning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_bytes: Option<u64>,
    #[serde(default = "default_structures")]
    pub structures: Vec<Structure>,
    #[serde(default)]
    pub importance: Importance,
    #[serde(default)]
    pub allocation: Allocation,
    /// Whole encoder layers to remove (lowest block influence first) before heads and neurons.
    #[serde(default)]
    pub drop_layers: usize,
    /// Heads every layer keeps (0 lets a layer's attention sublayer go entirely).
    #[serde(default = "one")]
    pub min_heads: usize,
    /// Neurons every layer keeps (0 lets a layer's FFN sublayer go entirely).
    #[serde(default = "one")]
    pub min_neurons: usize,
    /// Hidden dimensions the model keeps (with `structures` including `hidden`).
    #[serde(default = "one")]
    pub min_hidden: usize,
    /// Calibration batch size for `importance = "activation"` and `drop-layers`.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_structures() -> Vec<Structure> {
    vec![Structure::Heads, Structure::Neurons]
}

fn one() -> usize {
    1
}

fn default_batch_size() -> usize {
    32
}

/// The `prune` pass.
pub struct Prune {
    config: Config,
    /// The decision made at plan time, used by `run`.
    decision: PlanDecision<Decision>,
    /// Where activation importance is cached.
    cache: Cache,
}

impl Prune {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            decision: PlanDecision::new(),
            cache: Cache::shared(),
        }
    }

    fn check_config(&self) -> Result<()> {
        let c = &self.config;
        match (c.target, c.target_bytes) {
            (Some(_), Some(_)) => {
                return Err(Error::Config {
                    key: "target-bytes".into(),
                    problem: "give either `target` (a fraction) or `target-bytes`, not both".into(),
                })
            }
            (None, None) if c.drop_layers == 0 => {
                return Err(Error::Config {
                    key: "target".into(),
                    problem: "is missing: give the fraction of encoder parameters to remove (e.g. 0.25), or `target-bytes`".into(),
                })
            }
            (Some(t), None) if !(0.0..1.0).contains(&t) => {
                return Err(Error::Config {
                    key: "target".into(),
                    problem: format!("is {t}, expected a fraction in [0, 1)"),
                })
            }
            _ => {}
        }
        if c.structures.is_empty() && c.drop_layers == 0 {
            return Err(Error::Config {
                key: "structures".into(),
                problem:
                    "is empty: list any of `heads`, `neurons`, `hidden` (or set `drop-layers`)"
                        .into(),
            });
        }
        if c.batch_size == 0 {
            return Err(Error::Config {
                key: "batch-size".into(),
                problem: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

impl Pass for Prune {
    fn kind(&self) -> &'static str {
        "prune"
    }

    fn phase(&self) -> Phase {
        Phase::Structure
    }

    fn plan(&self, ctx: &PlanContext) -> Result<PassPlan> {
        self.check_config()?;
        let scores = score::scores(&self.config, ctx, &self.cache)?;
        let decision = allocate::decide(&self.config, ctx, &scores)?;
        let mut plan = remove::plan(ctx, &decision)?;
        if self.config.importance == Importance::Activation || self.config.drop_layers > 0 {
            plan.statistics.push(Statistic::Importance);
        }
        self.decision.set(decision);
        Ok(plan)
    }

    fn run(&self, ctx: &mut PassContext) -> Result<PassReport> {
        let decision = self.decision.get("prune")?;
        let mut report = apply_decision(ctx, &decision, "prune")?;
        report
            .decisions
            .insert("importance".into(), json!(self.config.importance));
        report
            .decisions
            .insert("allocation".into(), json!(self.config.allocation));
        Ok(report)
    }
}

/// Apply a pruning decision planned by [`remove::plan`]: remove the units, update the config (and the pooling
/// width when hidden dimensions go) and report what was removed, per layer.
pub(crate) fn apply_decision(
    ctx: &mut PassContext,
    decision: &Decision,
    kind: &str,
) -> Result<PassReport> {
    let before_layers = ctx.config.bert().layers.clone();
    let h = ctx.config.bert().hidden_size;
    let before_params = ctx.config.bert().encoder_parameters();
    let hidden_before = ctx.config.bert().hidden.clone();
    let changed = remove::apply(ctx, decision)?;
    for change in &ctx.plan.arch {
        change.apply(ctx.config)?;
    }
    if decision.hidden.is_some() {
        remove::set_pooling_dimension(ctx.files, ctx.config.bert().hidden_size)?;
    }
    let after = ctx.config.bert();
    let after_params = after.encoder_parameters();
    let mut report = PassReport::structural(kind, changed, before_params, after_params);
    report
        .decisions
        .insert("dropped_layers".into(), json!(decision.dropped_layers));
    if let Some(kept) = &decision.hidden {
        // Original ids (of the checkpoint before any hidden pruning).
        let original = |p: usize| hidden_before.as_ref().map_or(p, |d| d.kept[p]);
        let removed: Vec<usize> = (0..h)
            .filter(|p| kept.binary_search(p).is_err())
            .map(original)
            .collect();
        report.decisions.insert(
            "hidden".into(),
            json!({ "before": h, "after": kept.len(), "removed": removed }),
        );
    }
    let per_layer: Vec<serde_json::Value> = decision
        .layers
        .iter()
        .zip(&after.layers)
        .map(|(d, shape)| {
            let old: &LayerShape = &before_layers[d.layer];
            let removed_heads: Vec<usize> = old
                .heads
                .iter()
                .enumerate()
                .filter(|(p, _)| !d.heads.contains(p))
                .map(|(_, id)| *id)
                .collect();
            json!({
                "source": old.source,
                "heads_kept": shape.heads,
                "heads_removed": removed_heads,
                "neurons_before": old.intermediate_size,
                "neurons_after": shape.intermediate_size,
                "parameters_before": ctx.config.bert().layer_parameters(h, old),
                "parameters_after": after.layer_parameters(after.hidden_size, shape),
            })
        })
        .collect();
    report.decisions.insert("layers".into(), json!(per_layer));
    Ok(report)
}

/// The architecture changes of a decision: the kept layers' new shapes, then the kept hidden dimensions.
pub(crate) fn arch_changes(
    n: &Naming,
    layers: &[LayerShape],
    decision: &Decision,
) -> Vec<ArchChange> {
    let shapes = ArchChange::Layers(
        decision
            .layers
            .iter()
            .map(|d| {
                let old = &layers[d.layer];
                let heads_change = d.heads.len() != old.heads.len();
                let ffn_change = d.neurons.len() != old.intermediate_size;
                // A Linear that is sliced is written as one matrix: it stays low-rank only if untouched.
                let mut low_rank = old.low_rank.clone();
                low_rank.retain(|m, _| {
                    let ffn = n.slot(m).is_some_and(|s| !s.is_attention());
                    decision.hidden.is_none() && if ffn { !ffn_change } else { !heads_change }
                });
                LayerShape {
                    heads: d.heads.iter().map(|&p| old.heads[p]).collect(),
                    intermediate_size: d.neurons.len(),
                    low_rank,
                    ..old.clone()
                }
            })
            .collect(),
    );
    let mut changes = vec![shapes];
    if let Some(kept) = &decision.hidden {
        changes.push(ArchChange::Hidden(kept.clone()));
    }
    changes
}
