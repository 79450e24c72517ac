//! `vib-prune`: VTrans (Dutta, Gupta and Agarwal, arXiv 2406.05276), structured pruning of hidden dimensions,
//! heads, FFN neurons and whole sublayers by variational-information-bottleneck masks, with the parametrisation
//! and loss of the same authors' TVA-Prune code.
//!
//! - `masks`: the VIB masks, their KL and the expected kept parameters.
//! - `train`: mask (and, in the fast and full variants, weight) training on the burn autodiff runtime, resumable
//!   from checkpoints.
//! - `decide`: the hard masks meeting the target, as a `prune` decision.
//! - `fold`: the kept units' mask values folded into the adjacent weights.
//! - `checkpoint`: the training state as a checkpoint file, and where checkpoints go.
//!
//! The decision is made at plan time, like `prune`'s: the masks are trained when the pipeline is planned (cached:
//! a second plan or run of the same pipeline reads the trained masks back), and `run` folds and removes.

mod checkpoint;
mod decide;
mod fold;
pub mod masks;
pub mod train;

use std::path::{Path, PathBuf};

use compressor_models::arch::{Head, ModelConfig};
use compressor_models::runtime::{Bert, Cpu};
use compressor_models::tensor::transposed;
use compressor_models::{HostTensor, Pooling, TensorStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analyses::cache::{Cache, Key};
use crate::calibration::LabelRequest;
use crate::error::{Error, Result};
use crate::files::SideFiles;
use crate::pass::{Pass, PassContext, PassPlan, PassReport, Phase, PlanContext, PlanDecision};
use crate::prune::{self, Decision};

pub use decide::Hard;
pub use masks::{Kind, KlWeights, MaskSet, Vib};
pub use train::{Objective, Schedule, State};

/// The structures that get masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Structure {
    /// The residual stream's dimensions (one mask shared by the embeddings and every sublayer).
    Hidden,
    /// Attention heads, per layer.
    Heads,
    /// FFN neurons, per layer.
    Neurons,
    /// Whole sublayers: each layer's attention and FFN (CoFi's `mha_z` / `ffn_z`); a layer whose both sublayers
    /// go keeps only its LayerNorms.
    Layers,
}

impl Structure {
    pub fn name(self) -> &'static str {
        match self {
            Structure::Hidden => "hidden",
            Structure::Heads => "heads",
            Structure::Neurons => "neurons",
            Structure::Layers => "layers",
        }
    }
}

/// Which VTrans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Faster-VTrans: only the masks train; the weights stay frozen.
    #[default]
    Faster,
    /// Fast-VTrans: masks and weights train, on `fast-fraction` of the calibration records, with distillation.
    Fast,
    /// VTrans: masks and weights train on every calibration record, with distillation from the unpruned model.
    Full,
}

/// The training loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Faster: `task` for a classifier whose calibration records carry labels, else `distill`; fast and full:
    /// `distill`.
    #[default]
    Auto,
    /// Cross-entropy on the calibration labels (`label-field`).
    Task,
    /// Distillation from the unpruned model (layer outputs and logits, or the pooled embedding).
    Distill,
}

/// Where the masks train.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    #[default]
    Cpu,
    /// The first CUDA GPU (a binary built with the `cuda` feature).
    Cuda,
}

/// The distillation loss's weights (TVA-Prune's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Distill {
    /// Weight of the mean squared error of the layers' outputs.
    #[serde(default = "default_layer_weight")]
    pub layer: f64,
    /// Weight of the logit KL (classifiers) or the pooled embedding's squared error (embedders).
    #[serde(default = "default_output_weight")]
    pub output: f64,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

impl Default for Distill {
    fn default() -> Self {
        Self {
            layer: default_layer_weight(),
            output: default_output_weight(),
            temperature: default_temperature(),
        }
    }
}

fn default_layer_weight() -> f64 {
    0.9
}
fn default_output_weight() -> f64 {
    0.01
}
fn default_temperature() -> f64 {
    2.0
}

/// Settings of a `vib-prune` pass.
///
/// ```toml
/// [[pass]]
/// kind = "vib-prune"
/// target = 0.5                 # fraction of encoder parameters removed (or target-bytes = 40_000_000)
/// variant = "faster"           # or "fast" (masks + weights on fast-fraction of the records), "full"
/// structures = ["hidden", "heads", "neurons", "layers"]
/// loss = "auto"                # "task" (labels) or "distill"
/// epochs = 3                   # or steps = 500
/// batch-size = 32
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_bytes: Option<u64>,
    #[serde(default)]
    pub variant: Variant,
    #[serde(default = "default_structures")]
    pub structures: Vec<Structure>,
    #[serde(default)]
    pub loss: Loss,
    #[serde(default = "default_label_field")]
    pub label_field: String,
    /// Passes over the calibration records (Fast-VTrans takes as many steps on its fraction); `steps` overrides.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The masks' learning rate (default 0.05, 0.1 for targets above 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// The Lagrange multipliers' learning rate (gradient ascent).
    #[serde(default = "default_reg_lr")]
    pub reg_lr: f64,
    /// The fraction of the steps over which the target sparsity ramps up from 0.
    #[serde(default = "default_warmup")]
    pub warmup: f64,
    #[serde(default = "default_kl_factor")]
    pub kl_factor: f64,
    /// KL multiplier of the hidden mask.
    #[serde(default = "default_hidden_kl")]
    pub hidden_kl: f64,
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    /// The weights' learning rate in the fast and full variants.
    #[serde(default = "default_weight_lr")]
    pub weight_lr: f64,
    /// The fraction of the calibration records Fast-VTrans trains on (at least one batch).
    #[serde(default = "default_fast_fraction")]
    pub fast_fraction: f64,
    #[serde(default)]
    pub distill: Distill,
    /// Seed of the mask initialisation, the noise and the data order (default: the `[calibration]` seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// A folder for the training checkpoint (`vib-prune.safetensors`); default: the shared cache, keyed by the
    /// model, the data and these settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    /// Steps between checkpoints.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Where the masks train (the teacher of distillation runs on the CPU).
    #[serde(default)]
    pub device: Device,
}

fn default_structures() -> Vec<Structure> {
    vec![
        Structure::Hidden,
        Structure::Heads,
        Structure::Neurons,
        Structure::Layers,
    ]
}
fn default_label_field() -> String {
    "label".into()
}
fn default_epochs() -> usize {
    3
}
fn default_batch_size() -> usize {
    32
}
fn default_reg_lr() -> f64 {
    0.1
}
fn default_warmup() -> f64 {
    0.2
}
fn default_kl_factor() -> f64 {
    1e-6
}
fn default_hidden_kl() -> f64 {
    30.0
}
fn default_max_grad_norm() -> f64 {
    1.0
}
fn default_weight_lr() -> f64 {
    2e-5
}
fn default_fast_fraction() -> f64 {
    0.03
}
fn default_checkpoint_every() -> usize {
    50
}

impl Config {
    /// Paths resolved against the pipeline file's folder.
    pub fn with_base(&self, base: &Path) -> Self {
        Self {
            checkpoint: self.checkpoint.as_ref().map(|p| base.join(p)),
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
        match (self.target, self.target_bytes) {
            (Some(_), Some(_)) => {
                return bad(
                    "target-bytes",
                    "give either `target` (a fraction) or `target-bytes`, not both".into(),
                )
            }
            (None, None) => {
                return bad(
                    "target",
                    "is missing: give the fraction of encoder parameters to remove (e.g. 0.5), or `target-bytes`".into(),
                )
            }
            (Some(t), None) if !(t > 0.0 && t < 1.0) => {
                return bad("target", format!("is {t}, expected a fraction in (0, 1)"))
            }
            _ => {}
        }
        if self.structures.is_empty() {
            return bad(
                "structures",
                "is empty: list any of `hidden`, `heads`, `neurons`, `layers`".into(),
            );
        }
        for (key, v) in [
            ("batch-size", self.batch_size),
            ("checkpoint-every", self.checkpoint_every),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        if self.steps == Some(0) || (self.steps.is_none() && self.epochs == 0) {
            return bad(
                if self.steps.is_some() {
                    "steps"
                } else {
                    "epochs"
                },
                "must be at least 1".into(),
            );
        }
        let positive = [
            ("lr", self.lr.unwrap_or(1.0)),
            ("reg-lr", self.reg_lr),
            ("weight-lr", self.weight_lr),
            ("max-grad-norm", self.max_grad_norm),
            ("distill.temperature", self.distill.temperature),
        ];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return bad(key, format!("is {v}, expected a positive number"));
            }
        }
        let non_negative = [
            ("kl-factor", self.kl_factor),
            ("hidden-kl", self.hidden_kl),
            ("distill.layer", self.distill.layer),
            ("distill.output", self.distill.output),
        ];
        for (key, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return bad(key, format!("is {v}, expected a number >= 0"));
            }
        }
        if !(0.0..=1.0).contains(&self.warmup) {
            return bad(
                "warmup",
                format!(
                    "is {}, expected a fraction of the steps in [0, 1]",
                    self.warmup
                ),
            );
        }
        if !(self.fast_fraction > 0.0 && self.fast_fraction <= 1.0) {
            return bad(
                "fast-fraction",
                format!("is {}, expected a fraction in (0, 1]", self.fast_fraction),
            );
        }
        Ok(())
    }

    /// The masks' learning rate.
    fn mask_lr(&self) -> f64 {
        self.lr.unwrap_or(if self.target.unwrap_or(0.0) > 0.5 {
            0.1
        } else {
            0.05
        })
    }

    /// What the training depends on, for the cache key and the checkpoint (everything but where checkpoints go).
    fn training_settings(&self, objective: &Objective, steps: usize, records: usize) -> String {
        let mut c = self.clone();
        c.checkpoint = None;
        c.checkpoint_every = 0;
        format!(
            "{}|{objective:?}|steps {steps}|records {records}",
            serde_json::to_string(&c).unwrap_or_default()
        )
    }
}

/// The trained result, made at plan time.
#[derive(Debug, Clone)]
struct Trained {
    masks: MaskSet,
    hard: Hard,
    /// Trained Linear weights (`[out, in]` values and biases, the checkpoint's layout), with weights.
    weights: Vec<(String, Vec<f32>)>,
    /// What the manifest records of the training (a pure function of the inputs).
    summary: serde_json::Value,
    /// How this plan got the masks, for its note: trained for the seconds, resumed at a step, or read back.
    how: String,
}

/// The `vib-prune` pass.
pub struct VibPrune {
    config: Config,
    trained: PlanDecision<Trained>,
    cache: Cache,
}

impl VibPrune {
    pub fn new(config: Config) -> Self {
        Self::with_cache(config, Cache::shared())
    }

    /// A pass keeping its default checkpoints in `cache`.
    pub fn with_cache(config: Config, cache: Cache) -> Self {
        Self {
            config,
            trained: PlanDecision::new(),
            cache,
        }
    }

    /// Write the weights the last plan trained (fast and full variants) into `store`.
    pub fn write_trained_weights(&self, store: &mut TensorStore) -> Result<Vec<String>> {
        write_weights(store, &self.trained.get("vib-prune")?.weights)
    }

    /// The trained masks and the decision of the last plan (for tests).
    pub fn outcome(&self) -> Result<(MaskSet, Decision, Vec<Vec<f32>>)> {
        let t = self.trained.get("vib-prune")?;
        Ok((
            t.masks.clone(),
            t.hard.decision.clone(),
            t.hard.values.clone(),
        ))
    }
}

/// The objective `config.loss` resolves to for this model and these records.
fn objective(config: &Config, head: &Head, labelled: bool) -> Result<Objective> {
    let d = config.distill;
    let distill = Objective::Distill {
        layer_weight: d.layer,
        output_weight: d.output,
        temperature: d.temperature,
    };
    let classifier = matches!(head, Head::SequenceClassification { .. });
    Ok(match config.loss {
        Loss::Distill => distill,
        Loss::Task if !classifier => {
            return Err(Error::Config {
                key: "loss".into(),
                problem: "\"task\" needs a classification head; this model has none\nhint: use loss = \"distill\" (distillation from the unpruned model)".into(),
            })
        }
        Loss::Task => Objective::Task,
        Loss::Auto if config.variant == Variant::Faster && classifier && labelled => {
            Objective::Task
        }
        Loss::Auto => distill,
    })
}

impl VibPrune {
    fn train(&self, ctx: &PlanContext) -> Result<Trained> {
        let c = &self.config;
        ctx.require_checkpoint_weights(
            "vib-prune",
            "put `vib-prune` first (masks are trained on the checkpoint's own weights)",
        )?;
        let spec = ctx.calibration.ok_or_else(|| Error::NoCalibration {
            key: "vib-prune".into(),
        })?;
        let bert = ctx.config.bert();
        if let Some((l, _)) = bert
            .layers
            .iter()
            .enumerate()
            .find(|(_, s)| !s.low_rank.is_empty())
        {
            return Err(Error::Config {
                key: "vib-prune".into(),
                problem: format!(
                    "layer {l} holds low-rank factors; vib-prune masks dense layers\nhint: put vib-prune before qa-svd"
                ),
            });
        }
        let files = SideFiles::new(ctx.model_dir);
        let classes = match bert.head {
            Head::SequenceClassification { num_labels, .. } => Some(num_labels),
            Head::None => None,
        };
        let request = match (c.loss, classes) {
            (Loss::Task, Some(classes)) => LabelRequest::Required {
                field: &c.label_field,
                classes,
                key: "label-field",
                needed_by: "loss = \"task\"",
            },
            (Loss::Auto, Some(classes)) if c.variant == Variant::Faster => {
                LabelRequest::IfPresent {
                    field: &c.label_field,
                    classes,
                }
            }
            _ => LabelRequest::None,
        };
        // A loss this model cannot have is refused before the data is read.
        objective(c, &bert.head, true)?;
        let mut records = spec.records(&files, ctx.config, request)?;
        let objective = objective(c, &bert.head, records.labels.is_some())?;
        // The schedule is `epochs` over every sampled record; Fast-VTrans runs it on its fraction of them (the
        // same number of steps on less data).
        let all = records.encoded.len();
        let per_epoch = all.div_ceil(c.batch_size.min(all).max(1)).max(1);
        let steps = c.steps.unwrap_or(c.epochs * per_epoch);
        if c.variant == Variant::Fast {
            let keep = ((records.encoded.len() as f64 * c.fast_fraction).ceil() as usize)
                .max(c.batch_size)
                .min(records.encoded.len());
            records.encoded.truncate(keep);
            if let Some(l) = records.labels.as_mut() {
                l.truncate(keep);
            }
        }
        let n = records.encoded.len();
        let parameters = bert.encoder_parameters();
        let removed = prune::target_parameters(c.target, c.target_bytes, ctx)?;
        let budget = parameters.saturating_sub(removed);
        let seed = c.seed.unwrap_or(spec.seed);
        let schedule = Schedule {
            steps,
            batch_size: c.batch_size,
            lr: c.mask_lr(),
            reg_lr: c.reg_lr,
            warmup: (c.warmup * steps as f64).round() as usize,
            kl_factor: c.kl_factor,
            kl: KlWeights {
                hidden: c.hidden_kl,
                heads: 1.0,
                neurons: 1.0,
                sublayers: 1.0,
            },
            max_grad_norm: c.max_grad_norm,
            weights: (c.variant != Variant::Faster).then_some(c.weight_lr),
            target: removed as f64 / parameters.max(1) as f64,
            seed,
        };
        let pooling = Pooling::load(ctx.model_dir)?;
        let fresh = MaskSet::new(bert, &c.structures, seed);
        if fresh.units() == 0 {
            return Err(Error::Config {
                key: "structures".into(),
                problem: "this model has none of the listed structures left to mask".into(),
            });
        }
        // A target the structures cannot reach fails before any training.
        let minimum = decide::minimum_parameters(&fresh, bert);
        if minimum > budget {
            return Err(Error::Config {
                key: if c.target.is_some() { "target" } else { "target-bytes" }.into(),
                problem: format!(
                    "removes {removed} of {parameters} encoder parameters, but masking {} can remove at most {} ({:.1}%)\nhint: lower the target or add structures (`hidden`, `heads`, `neurons`, `layers`)",
                    c.structures.iter().map(|s| format!("`{}`", s.name())).collect::<Vec<_>>().join(", "),
                    parameters - minimum,
                    100.0 * (parameters - minimum) as f64 / parameters.max(1) as f64
                ),
            });
        }
        let base = Bert::<Cpu>::load(ctx.store, ctx.config, pooling, &Default::default())?;
        let weights = if schedule.weights.is_some() {
            train::trainable(&base, ctx.config)?
        } else {
            Vec::new()
        };
        drop(base);
        let mut state = State::new(fresh, weights);
        let key = Key {
            kind: "vib-prune",
            model: crate::analyses::model_fingerprint(ctx.store, ctx.config, &pooling)?,
            data: records.hash(),
            settings: c.training_settings(&objective, steps, n),
        };
        let checkpoints = checkpoint::Checkpoints {
            path: match &c.checkpoint {
                Some(dir) => Some(dir.join("vib-prune.safetensors")),
                None => self.cache.path(&key, "safetensors"),
            },
            explicit: c.checkpoint.is_some(),
            key,
        };
        let resumed = checkpoints.load(&mut state)?;
        let resumed_at = state.step;
        let job = train::Job {
            store: ctx.store,
            config: ctx.config,
            pooling,
            records: &records,
            objective,
            schedule: &schedule,
            parameters,
        };
        let progress = ctx.progress;
        let mut seconds = 0.0;
        if state.step < steps {
            progress.on_pass_start("vib-prune: train masks", steps - state.step);
            let every = c.checkpoint_every;
            seconds = train_on(c.device, &job, &mut state, &mut |s: &State| {
                if let Some(h) = s.history.last() {
                    progress.on_unit(&format!(
                        "step {} loss {:.4} kl {:.1} sparsity {:.3} (target {:.3})",
                        s.step, h[0], h[1], h[2], h[3]
                    ));
                }
                if s.step.is_multiple_of(every) || s.step == steps {
                    checkpoints.save(s)?;
                }
                Ok(())
            })?;
            progress.on_pass_end();
        }
        let hard = decide::hard(&state.masks, bert, budget).ok_or_else(|| Error::Config {
            key: "target".into(),
            problem: "the trained masks cannot meet the target".into(),
        })?;
        let at_zero = decide::parameters_at_zero(&state.masks, bert);
        let last = state.history.last().copied().unwrap_or([f64::NAN; 4]);
        let weights = state
            .weights
            .iter()
            .flat_map(|w| {
                let bias = w
                    .name
                    .strip_suffix(".weight")
                    .map(|m| format!("{m}.bias"))
                    .unwrap_or_default();
                [
                    (
                        w.name.clone(),
                        transposed(&w.weight.value, w.dims[0], w.dims[1]),
                    ),
                    (bias, w.bias.value.clone()),
                ]
            })
            .collect();
        let summary = json!({
            "variant": c.variant,
            "objective": match objective { Objective::Task => "task", Objective::Distill { .. } => "distill" },
            "records": n,
            "steps": steps,
            "final": { "loss": last[0], "kl": last[1], "expected_sparsity": last[2], "target_sparsity": last[3] },
            "lambdas": state.lambdas.value,
            "threshold": hard.threshold,
            "fraction_removed_at_threshold_0": 1.0 - at_zero as f64 / parameters.max(1) as f64,
            "masks": state.masks.vibs.iter().zip(&hard.values).map(|(v, kept)| {
                let la = v.log_alpha();
                json!({
                    "mask": v.name(),
                    "units": v.mu.len(),
                    "kept": kept.iter().filter(|&&x| x != 0.0).count(),
                    "mu_mean": v.mu.iter().map(|&x| f64::from(x)).sum::<f64>() / v.mu.len().max(1) as f64,
                    "log_alpha_min": la.iter().copied().fold(f64::INFINITY, f64::min),
                    "log_alpha_max": la.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                })
            }).collect::<Vec<_>>(),
        });
        let how = match (resumed, resumed_at >= steps) {
            (true, true) => "read back from the checkpoint".to_string(),
            (true, false) => format!("resumed at step {resumed_at}, then {seconds:.1} s"),
            (false, _) => format!("{seconds:.1} s"),
        };
        Ok(Trained {
            masks: state.masks,
            hard,
            weights,
            summary,
            how,
        })
    }
}

/// Train on `device`.
fn train_on(
    device: Device,
    job: &train::Job,
    state: &mut State,
    on_step: &mut dyn FnMut(&State) -> Result<()>,
) -> Result<f64> {
    match device {
        Device::Cpu => train::run(job, state, on_step),
        #[cfg(feature = "cuda")]
        Device::Cuda => train::run_on::<burn::backend::Autodiff<compressor_models::runtime::Cuda>>(
            job,
            state,
            &Default::default(),
            on_step,
        ),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => Err(Error::Config {
            key: "device".into(),
            problem: "is \"cuda\", but this binary was built without CUDA support\nhint: build with `cargo build --release --features cuda`, or use device = \"cpu\"".into(),
        }),
    }
}

impl Pass for VibPrune {
    fn kind(&self) -> &'static str {
        "vib-prune"
    }

    fn phase(&self) -> Phase {
        Phase::Structure
    }

    fn plan(&self, ctx: &PlanContext) -> Result<PassPlan> {
        self.config.check()?;
        let trained = self.train(ctx)?;
        let mut plan = prune::remove::plan(ctx, &trained.hard.decision)?;
        let s = &trained.summary;
        plan.notes.push(format!(
            "VIB masks trained for {} steps ({}, {} loss; {}); the threshold log alpha < {:.3} meets the target (log alpha < 0 would remove {:.1}%)",
            s["steps"],
            serde_json::to_string(&self.config.variant).unwrap_or_default().trim_matches('"'),
            s["objective"].as_str().unwrap_or(""),
            trained.how,
            trained.hard.threshold,
            100.0 * s["fraction_removed_at_threshold_0"].as_f64().unwrap_or(0.0)
        ));
        self.trained.set(trained);
        Ok(plan)
    }

    fn run(&self, ctx: &mut PassContext) -> Result<PassReport> {
        let t = self.trained.get("vib-prune")?;
        let mut changed = write_weights(ctx.store, &t.weights)?;
        changed.extend(fold::fold(ctx.store, ctx.config, &t.masks, &t.hard.values)?);
        let mut report = prune::apply_decision(ctx, &t.hard.decision, "vib-prune")?;
        // Folded tensors that kept their shape changed too.
        let renamed = |name: &str| {
            ctx.plan
                .renamed
                .iter()
                .find(|(from, _)| from == name)
                .map(|(_, to)| to.clone())
        };
        for name in changed {
            if ctx.plan.removed.contains(&name) {
                continue;
            }
            report.changed.push(renamed(&name).unwrap_or(name));
        }
        report.changed.sort();
        report.changed.dedup();
        report.decisions.insert("vib".into(), t.summary.clone());
        Ok(report)
    }
}

/// Store the trained weights (in each tensor's own dtype).
fn write_weights(store: &mut TensorStore, weights: &[(String, Vec<f32>)]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (name, values) in weights {
        let Some((dtype, shape)) = store.info(name) else {
            continue;
        };
        store.set(name, HostTensor::from_f32(shape, values, dtype)?);
        out.push(name.clone());
    }
    Ok(out)
}

/// The masked model with the masks at their deterministic values `values` (hard: pruned units 0, LayerNorms over
/// the kept hidden dimensions): what the folded and pruned model computes.
pub fn hard_masked(
    store: &TensorStore,
    config: &ModelConfig,
    pooling: Pooling,
    set: &MaskSet,
    values: &[Vec<f32>],
) -> Result<Bert<Cpu>> {
    let device = Default::default();
    let mut model = Bert::<Cpu>::load(store, config, pooling, &device)?;
    let mut valued = set.clone();
    for (v, x) in valued.vibs.iter_mut().zip(values) {
        v.mu = x.clone();
    }
    let mut masks = train::mean_masks::<Cpu>(&valued, config.bert().layers.len(), &device);
    masks.hidden_keep = valued
        .get(Kind::Hidden, None)
        .map(|v| v.mu.iter().map(|&x| x != 0.0).collect());
    model.set_masks(Some(masks))?;
    Ok(model)
}
