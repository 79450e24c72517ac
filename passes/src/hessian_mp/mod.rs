//! `hessian-mp`: Q-BERT (Shen et al., AAAI 2020) without retraining: Hessian sensitivity per block, bits per block
//! under a size budget, group-wise integer weights.
//!
//! 1. **Sensitivity** ([`hessian`]): the top Hessian eigenvalue of the loss with respect to each block
//!    (`block = "layer"`, the default and the paper's: the selected weights of one encoder layer together;
//!    `"matrix"`: each weight alone), on `runs` random batches of the `[calibration]` data;
//!    `Omega = |mean| + std`. Cross-entropy on labelled data for classifiers, self-distillation otherwise.
//! 2. **Allocation** ([`bit_allocation`]): widths from the menu `bits` minimising
//!    `sum_i Omega_i * ||Q_b(W_i) - W_i||^2` within the budget (`average-bits` per block weight, or `bytes` of the
//!    blocks as stored), exactly; or the paper's fixed schemes (`top-k`, `reversed`).
//! 3. **Quantization** through the format layer: compressed-tensors group strategy (`group-size` consecutive
//!    inputs per scale), or the paper's `row-groups` contiguous groups of output rows per matrix (stored with
//!    per-row scales); symmetric by default so that artifacts load in transformers; embeddings at their own widths
//!    (default 8 bits for word and position tables).
//!
//! The sensitivity statistics are cached on disk (`<cache>/hessian-sensitivity/`, see [`hessian::Cache`]), so a
//! second run with the same model, data and settings (another budget, menu or allocation) reuses them.

pub mod bit_allocation;
pub mod hessian;
pub mod qat;

use std::collections::BTreeMap;
use std::time::Instant;

use compressor_models::family::Naming;
use compressor_models::rng::Rng;
use compressor_models::runtime::{Bert, Cpu};
use compressor_models::{
    DType, Encoding, Head, HostTensor, Kind, Pooling, QuantTensor, Role, Selector, Strategy,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use self::bit_allocation::{Choice, Infeasible};
use self::hessian::{PowerIteration, Sample, Target};
use crate::calibration::LabelRequest;
use crate::calibration::Records;
use crate::error::{Error, Result};
use crate::pass::{
    Pass, PassContext, PassPlan, PassReport, Phase, PlanContext, PlannedChange, TensorMeta,
};
use crate::targets::{check_bits, embedding_targets, EmbeddingBits};
use crate::targets::{plan_encodings, reject, selected_matrices};

/// How bits are assigned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocation {
    /// Minimum total `Omega * quantization error` within the budget (exact).
    #[default]
    Optimal,
    /// The most sensitive blocks at the menu's highest width, the rest at its lowest (as many high as fit).
    TopK,
    /// As `top-k` with the least sensitive blocks at the high width (the paper's MP-rev ablation).
    Reversed,
}

/// What one block of the sensitivity analysis and the allocation is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockKind {
    /// The selected weights of one encoder layer together (Q-BERT's block): one Hessian over their concatenated
    /// parameters, one width for all of them.
    #[default]
    Layer,
    /// Each selected weight on its own.
    Matrix,
}

/// Which loss the Hessian is of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Cross-entropy when the model is a classifier and every calibration record has `label-field`;
    /// self-distillation otherwise.
    #[default]
    Auto,
    CrossEntropy,
    SelfDistillation,
}

/// Sensitivity settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Sensitivity {
    /// Random data subsets (one batch each); one eigenvalue sample per run and block.
    #[serde(default = "default_runs")]
    pub runs: usize,
    /// `lanczos` (default) or `power` (power iteration, as the paper): the top eigenvalue; `hutchinson`: the mean
    /// Hessian diagonal instead (HAWQ-V2), with `max-iterations` probes per run.
    #[serde(default)]
    pub method: hessian::Method,
    #[serde(default = "default_iterations")]
    pub max_iterations: usize,
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Calibration texts per run.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default)]
    pub seed: u64,
    /// Fail when a power iteration does not converge (otherwise: a warning, and its last estimate is used).
    #[serde(default)]
    pub strict: bool,
}

fn default_runs() -> usize {
    5
}
fn default_iterations() -> usize {
    PowerIteration::default().max_iterations
}
fn default_tolerance() -> f64 {
    PowerIteration::default().tolerance
}
fn default_batch() -> usize {
    32
}

impl Default for Sensitivity {
    fn default() -> Self {
        Self {
            runs: default_runs(),
            method: hessian::Method::default(),
            max_iterations: default_iterations(),
            tolerance: default_tolerance(),
            batch_size: default_batch(),
            seed: 0,
            strict: false,
        }
    }
}

/// Settings of a `hessian-mp` pass.
///
/// ```toml
/// [[pass]]
/// kind = "hessian-mp"
/// bits = [2, 3, 4, 8]           # the menu, each 2..8
/// average-bits = 3.0            # budget: code bits per block weight (or `bytes` = stored bytes of the blocks)
/// allocation = "optimal"        # optimal | top-k | reversed
/// block = "layer"               # layer (Q-BERT: one Hessian and one width per encoder layer) | matrix
/// group-size = 128              # values per scale along the input dimension
/// # row-groups = 128            # instead: the paper's contiguous groups of output rows per matrix
/// symmetric = true
/// embeddings = { word = 8, position = 8 }
/// loss = "auto"                 # auto | cross-entropy | self-distillation
/// label-field = "label"
/// sensitivity = { runs = 5, method = "lanczos", max-iterations = 20, tolerance = 1e-3, batch-size = 32, seed = 0, strict = false }
/// qat = { steps = 300, lr = 2e-5, batch-size = 32, seed = 0 }   # optional fine-tuning (STE)
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default = "default_menu")]
    pub bits: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_bits: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub allocation: Allocation,
    #[serde(default)]
    pub block: BlockKind,
    #[serde(default = "default_group")]
    pub group_size: usize,
    /// The paper's group layout: this many contiguous groups of output rows per block matrix, each with one scale
    /// over whole rows (stored as per-row scales, compressed-tensors' channel strategy). Unset: `group-size` inputs
    /// per scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_groups: Option<usize>,
    #[serde(default = "default_true")]
    pub symmetric: bool,
    /// The blocks. Default: `{ roles = ["attn.*", "ffn.*"], kinds = ["weight"] }`.
    #[serde(default = "crate::targets::default_select")]
    pub select: Selector,
    #[serde(default = "default_embeddings")]
    pub embeddings: EmbeddingBits,
    #[serde(default)]
    pub loss: LossKind,
    #[serde(default = "default_label_field")]
    pub label_field: String,
    #[serde(default)]
    pub sensitivity: Sensitivity,
    /// Quantization-aware fine-tuning after the allocation (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat: Option<qat::Settings>,
    /// How weights are rounded: `nearest` or `gptq` (from each Linear's input covariance on `[calibration]`).
    #[serde(default)]
    pub rounding: crate::gptq::Rounding,
    /// GPTQ's settings (with `rounding = "gptq"`).
    #[serde(default)]
    pub gptq: crate::gptq::Settings,
}

fn default_menu() -> Vec<u8> {
    vec![2, 3, 4, 8]
}
fn default_group() -> usize {
    128
}
fn default_true() -> bool {
    true
}
fn default_embeddings() -> EmbeddingBits {
    EmbeddingBits {
        word: Some(8),
        position: Some(8),
        ..EmbeddingBits::default()
    }
}
fn default_label_field() -> String {
    "label".into()
}

/// The `hessian-mp` pass.
pub struct HessianMp {
    config: Config,
    cache_dir: Option<std::path::PathBuf>,
}

/// The blocks, and the embedding tables with their widths.
type Targets<'i> = (Vec<&'i TensorMeta>, Vec<(&'i TensorMeta, u8)>);

/// The budget in the units block sizes are counted in.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// Code bits: `numel * bits` per block.
    Bits(u64),
    /// Stored bytes (codes, scales, shape).
    Bytes(u64),
}

impl HessianMp {
    /// A pass whose sensitivity statistics are cached in [`compressor_calibration::default_cache_dir`].
    pub fn new(config: Config) -> Self {
        Self {
            config,
            cache_dir: Some(compressor_calibration::default_cache_dir()),
        }
    }

    /// Cache the sensitivity statistics in `dir` (`None`: no cache).
    pub fn with_cache_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }

    /// The menu, sorted and deduplicated, each width checked.
    fn menu(&self) -> Result<Vec<u8>> {
        let mut menu = self.config.bits.clone();
        if menu.is_empty() {
            return Err(Error::Config {
                key: "bits".into(),
                problem: "the bit menu is empty; list the widths to choose from, e.g. [2, 3, 4, 8]"
                    .into(),
            });
        }
        for &b in &menu {
            check_bits("bits", b)?;
        }
        menu.sort_unstable();
        menu.dedup();
        Ok(menu)
    }

    /// The encoding a block matrix of `[out, in]` `shape` is quantized with at `bits`: with `row-groups`, scale
    /// blocks of `out / row-groups` whole rows (a count that does not divide `out` gives blocks of 0 rows, which
    /// the plan reports first).
    fn quant_encoding(&self, bits: u8, shape: [usize; 2]) -> Encoding {
        match self.config.row_groups {
            Some(groups) => Encoding {
                strategy: Strategy::Block {
                    rows: if groups > 0 && shape[0].is_multiple_of(groups) {
                        shape[0] / groups
                    } else {
                        0
                    },
                    cols: shape[1],
                },
                ..self.encoding(bits)
            },
            None => self.encoding(bits),
        }
    }

    /// The encoding a block matrix is stored in: row groups are restated per row
    /// ([`QuantTensor::row_blocks_as_channels`]), so that every matrix of one width shares one compressed-tensors
    /// config group whatever its shape.
    fn encoding(&self, bits: u8) -> Encoding {
        let strategy = match self.config.row_groups {
            Some(_) => Strategy::Channel,
            None => Strategy::Group {
                size: self.config.group_size,
            },
        };
        Encoding {
            bits,
            symmetric: self.config.symmetric,
            strategy,
            scale_dtype: DType::F32,
            pow2_scales: false,
        }
    }

    /// Block matrix `name` with values `w` of `[out, in]` `shape` quantized at `bits`, in its stored encoding
    /// (GPTQ-rounded when `moment`, the matrix's input second moment `(n, values)`, is given; `keep`: the stored
    /// elements of a sparse matrix, which GPTQ keeps as its mask).
    fn quantize(
        &self,
        name: &str,
        w: &[f32],
        shape: [usize; 2],
        bits: u8,
        moment: Option<(usize, &[f64])>,
        keep: Option<&[bool]>,
    ) -> Result<QuantTensor> {
        let err = |problem: String| Error::Config {
            key: "bits".into(),
            problem: format!("cannot quantize `{name}`: {problem}"),
        };
        let e = self.quant_encoding(bits, shape);
        let q = match moment.filter(|(n, _)| *n == shape[1]) {
            Some((_, h)) => {
                crate::gptq::quantize(w, shape[0], shape[1], e, h, &self.config.gptq, keep)
            }
            None => QuantTensor::quantize(w, shape[0], shape[1], e),
        }
        .map_err(err)?;
        match self.config.row_groups {
            Some(_) => q.row_blocks_as_channels().map_err(err),
            None => Ok(q),
        }
    }

    fn embedding_encoding(&self, bits: u8) -> Encoding {
        Encoding {
            bits,
            symmetric: self.config.symmetric,
            strategy: Strategy::Group {
                size: self
                    .config
                    .embeddings
                    .group_size
                    .unwrap_or(self.config.group_size),
            },
            scale_dtype: DType::F32,
            pow2_scales: false,
        }
    }

    /// The blocks of the analysis over the block matrices `tensors` (in their order), with the indices of their
    /// matrices: one per encoder layer (`block = "layer"`; weights outside the encoder layers are blocks of their
    /// own), or one per matrix.
    fn blocks(
        &self,
        naming: &Naming,
        tensors: &[&TensorMeta],
    ) -> Vec<(hessian::Block, Vec<usize>)> {
        let mut out: Vec<(hessian::Block, Vec<usize>)> = Vec::new();
        for (i, t) in tensors.iter().enumerate() {
            let layer = t
                .layer
                .filter(|_| self.config.block == BlockKind::Layer)
                .map(|l| naming.layer(l));
            match layer {
                Some(name) => match out.iter_mut().find(|(b, _)| b.name == name) {
                    Some((b, members)) => {
                        b.tensors.push(t.name.clone());
                        members.push(i);
                    }
                    None => out.push((
                        hessian::Block {
                            name,
                            tensors: vec![t.name.clone()],
                        },
                        vec![i],
                    )),
                },
                None => out.push((hessian::Block::matrix(&t.name), vec![i])),
            }
        }
        out
    }

    fn budget(&self, blocks: &[&TensorMeta]) -> Result<Budget> {
        match (self.config.average_bits, self.config.bytes) {
            (Some(avg), None) => {
                if !(avg.is_finite() && avg > 0.0) {
                    return Err(Error::Config {
                        key: "average-bits".into(),
                        problem: format!("{avg} is not a positive number of bits"),
                    });
                }
                let numel: usize = blocks.iter().map(|t| t.numel()).sum();
                Ok(Budget::Bits((avg * numel as f64).floor() as u64))
            }
            (None, Some(bytes)) => Ok(Budget::Bytes(bytes)),
            (Some(_), Some(_)) => Err(Error::Config {
                key: "average-bits".into(),
                problem: "set either `average-bits` or `bytes`, not both".into(),
            }),
            (None, None) => Err(Error::Config {
                key: "average-bits".into(),
                problem: "no budget\nhint: add `average-bits = 3.0` (code bits per block weight) or `bytes = N` (stored bytes of the blocks)".into(),
            }),
        }
    }

    /// Size at `bits`, in the budget's units, of the block made of the matrices `members` of `metas`.
    fn size(&self, budget: Budget, metas: &[&TensorMeta], members: &[usize], bits: u8) -> u64 {
        members
            .iter()
            .map(|&i| {
                let t = metas[i];
                match budget {
                    Budget::Bits(_) => t.numel() as u64 * u64::from(bits),
                    Budget::Bytes(_) => {
                        t.quantized_form(self.encoding(bits)).bytes(&t.shape) as u64
                    }
                }
            })
            .sum()
    }

    fn infeasible(&self, e: Infeasible, budget: Budget) -> Error {
        let (key, unit) = match budget {
            Budget::Bits(_) => ("average-bits", "code bits"),
            Budget::Bytes(_) => ("bytes", "bytes"),
        };
        Error::Config {
            key: key.into(),
            problem: format!(
                "{e} ({unit} of the selected blocks)\nhint: widen the bit menu or raise the budget"
            ),
        }
    }

    /// Blocks and embedding tables with the encoding planned for each (blocks: the menu's highest width).
    fn targets<'i>(&self, ctx: &'i PlanContext) -> Result<Targets<'i>> {
        let blocks = selected_matrices(ctx, &self.config.select)?;
        reject(
            &blocks,
            |t| {
                t.kind != Kind::Weight
                    || matches!(
                        t.role,
                        Role::EmbedTokens | Role::EmbedPositions | Role::EmbedTypes
                    )
            },
            "not Linear weights",
            "embedding tables get their widths from `embeddings`",
        )?;
        let taken: Vec<&str> = blocks.iter().map(|t| t.name.as_str()).collect();
        let tables = embedding_targets(ctx, &self.config.embeddings, &taken)?
            .into_iter()
            .map(|(t, bits, _)| (t, bits))
            .collect();
        Ok((blocks, tables))
    }

    fn check_sensitivity(&self, ctx: &PlanContext) -> Result<()> {
        let s = &self.config.sensitivity;
        if ctx.calibration.is_none() {
            return Err(Error::NoCalibration {
                key: "sensitivity".into(),
            });
        }
        for (key, value) in [
            ("sensitivity.runs", s.runs),
            ("sensitivity.max-iterations", s.max_iterations),
            ("sensitivity.batch-size", s.batch_size),
        ] {
            if value == 0 {
                return Err(Error::Config {
                    key: key.into(),
                    problem: "must be at least 1".into(),
                });
            }
        }
        if !(s.tolerance.is_finite() && s.tolerance >= 0.0) {
            return Err(Error::Config {
                key: "sensitivity.tolerance".into(),
                problem: format!("{} is not a non-negative number", s.tolerance),
            });
        }
        if let Some(q) = &self.config.qat {
            q.check("qat")?;
        }
        let classifier = matches!(ctx.config.bert().head, Head::SequenceClassification { .. });
        if self.config.loss == LossKind::CrossEntropy && !classifier {
            return Err(Error::Config {
                key: "loss".into(),
                problem: "cross-entropy needs a classification head, and this model has none\nhint: use loss = \"self-distillation\" (or \"auto\")".into(),
            });
        }
        Ok(())
    }
}

impl Pass for HessianMp {
    fn kind(&self) -> &'static str {
        "hessian-mp"
    }

    fn phase(&self) -> Phase {
        Phase::Quantize
    }

    fn plan(&self, ctx: &PlanContext) -> Result<PassPlan> {
        let menu = self.menu()?;
        self.check_sensitivity(ctx)?;
        let gptq_note = crate::gptq::plan_note(
            self.config.rounding,
            &self.config.gptq,
            ctx,
            self.config.row_groups.is_some(),
        )?;
        let (blocks, tables) = self.targets(ctx)?;
        let budget = self.budget(&blocks)?;
        let high = menu[menu.len() - 1];
        if let Some(groups) = self.config.row_groups {
            if groups == 0 {
                return Err(Error::Config {
                    key: "row-groups".into(),
                    problem: "must be at least 1".into(),
                });
            }
            let problems: Vec<String> = blocks
                .iter()
                .filter_map(|t| {
                    let shape = [t.shape[0], t.shape[1]];
                    self.quant_encoding(high, shape)
                        .check(shape[0], shape[1])
                        .err()
                        .map(|_| {
                            format!(
                                "tensor `{}` {:?}: {groups} does not divide {} output rows",
                                t.name, t.shape, shape[0]
                            )
                        })
                })
                .collect();
            if !problems.is_empty() {
                return Err(Error::Config {
                    key: "row-groups".into(),
                    problem: format!(
                        "{groups} groups of output rows do not fit {} tensor(s):\n  {}\nhint: choose a number of groups that divides every selected output dimension (e.g. 128 for BERT-base and MiniLM)",
                        problems.len(),
                        problems.join("\n  ")
                    ),
                });
            }
        }
        let (mut plan, problems) = plan_encodings(
            blocks.iter().map(|t| (*t, self.encoding(high))).chain(
                tables
                    .iter()
                    .map(|(t, b)| (*t, self.embedding_encoding(*b))),
            ),
        );
        if !problems.is_empty() {
            return Err(Error::Config {
                key: "group-size".into(),
                problem: format!(
                    "the group size does not fit {} tensor(s):\n  {}\nhint: choose a group size that divides every selected input dimension (`embeddings.group-size` for the tables)",
                    problems.len(),
                    problems.join("\n  ")
                ),
            });
        }
        // The budget must be reachable from the menu (found here, from metadata alone).
        let sizes: Vec<Vec<Choice>> = self
            .blocks(ctx.config.bert().naming(), &blocks)
            .iter()
            .map(|(_, members)| {
                menu.iter()
                    .map(|&bits| Choice {
                        bits,
                        size: self.size(budget, &blocks, members, bits),
                        cost: 0.0,
                    })
                    .collect()
            })
            .collect();
        let limit = match budget {
            Budget::Bits(b) | Budget::Bytes(b) => b,
        };
        bit_allocation::optimal(&sizes, limit).map_err(|e| self.infeasible(e, budget))?;
        // Every width of the menu may be chosen.
        let stored = menu.iter().map(|&b| self.encoding(b));
        let tables_enc = tables.iter().map(|(_, b)| self.embedding_encoding(*b));
        if let Some(note) = crate::targets::config_groups_note(stored.chain(tables_enc)) {
            plan.notes.push(note);
        }
        // As the pipeline spells them (`layer`, `optimal`), not as Rust does (`Layer`, `Optimal`).
        let name = |v: serde_json::Value| v.as_str().map(str::to_string).unwrap_or_default();
        plan.notes.push(format!(
            "bits per block (block = \"{}\") are chosen at run time from {menu:?} (allocation = \"{}\"); the plan shows the highest width",
            name(json!(self.config.block)),
            name(json!(self.config.allocation))
        ));
        plan.statistics
            .push(crate::analyses::Statistic::HessianEigen);
        if let Some(note) = gptq_note {
            plan.notes.push(note);
            plan.statistics.push(crate::analyses::Statistic::Covariance);
        }
        Ok(plan)
    }

    fn run(&self, ctx: &mut PassContext) -> Result<PassReport> {
        let menu = self.menu()?;
        let info = crate::pass::ModelInfo::from_store(ctx.config, ctx.store);
        let planned: Vec<&PlannedChange> = ctx.plan.changes.iter().collect();
        let block_metas: Vec<&TensorMeta> = planned
            .iter()
            .filter_map(|c| info.get(&c.name))
            .filter(|t| {
                !matches!(
                    t.role,
                    Role::EmbedTokens | Role::EmbedPositions | Role::EmbedTypes
                )
            })
            .collect();
        let budget = self.budget(&block_metas)?;
        let (blocks, members): (Vec<hessian::Block>, Vec<Vec<usize>>) = self
            .blocks(ctx.config.bert().naming(), &block_metas)
            .into_iter()
            .unzip();

        // 1. Sensitivity, at the weights as they are before this pass.
        let started = Instant::now();
        let data = self.data(ctx)?;
        let samples = self.samples(&data)?;
        let loss_name = data.loss_name;
        let pooling = Pooling::load(ctx.files.dir())?;
        ctx.progress.on_pass_start("sensitivity", blocks.len());
        let progress = ctx.progress;
        let settings = PowerIteration {
            method: self.config.sensitivity.method,
            max_iterations: self.config.sensitivity.max_iterations,
            tolerance: self.config.sensitivity.tolerance,
        };
        let analysis = hessian::Analysis {
            store: ctx.store,
            config: ctx.config,
            pooling,
            blocks: &blocks,
            samples: &samples,
            settings,
            seed: self.config.sensitivity.seed,
            part_rows: hessian::DEFAULT_PART_ROWS,
        };
        let cache = match &self.cache_dir {
            Some(dir) => Some(hessian::Cache::new(dir, &analysis)?),
            None => None,
        };
        let cached = cache.as_ref().and_then(|c| c.read(&blocks));
        let sensitivity_cached = cached.is_some();
        let sens = match cached {
            Some(s) => s,
            None => {
                let s = hessian::sensitivity(&analysis, &|name| progress.on_unit(name))?;
                if let Some(c) = &cache {
                    c.write(&s)?;
                }
                s
            }
        };
        let sensitivity_seconds = started.elapsed().as_secs_f64();
        let mut warnings = Vec::new();
        for s in &sens {
            let failed = s.converged.iter().filter(|c| !**c).count();
            if failed > 0 {
                let msg = format!(
                    "`{}`: the power iteration did not converge within {} iterations in {failed} of {} runs (tolerance {}); the last estimates are used",
                    s.name, settings.max_iterations, s.converged.len(), settings.tolerance
                );
                if self.config.sensitivity.strict {
                    return Err(Error::Config {
                        key: "sensitivity.strict".into(),
                        problem: format!("{msg}\nhint: raise `sensitivity.max-iterations` or `sensitivity.tolerance`, or set strict = false"),
                    });
                }
                warnings.push(msg);
            }
        }

        // 2. Quantization error of every block at every width, then the allocation. GPTQ rounds from the input
        // covariance of the model as it is before this pass.
        let covariance = match self.config.rounding {
            crate::gptq::Rounding::Gptq => Some(ctx.covariance(
                "rounding = \"gptq\"",
                &crate::analyses::cache::Cache::new(self.cache_dir.as_deref()),
            )?),
            crate::gptq::Rounding::Nearest => None,
        };
        let naming = ctx.config.bert().naming();
        let moment = |name: &str| covariance.as_ref().and_then(|c| c.of_linear(naming, name));
        let values: Vec<Vec<f32>> = block_metas
            .iter()
            .map(|t| ctx.store.get_f32(&t.name, &t.shape))
            .collect::<std::result::Result<_, _>>()?;
        // Sparse matrices keep their masks: pruned elements stay exactly 0 (GPTQ and after QAT).
        let masks: Vec<Option<Vec<bool>>> = block_metas
            .iter()
            .map(|t| ctx.store.sparse_mask(&t.name))
            .collect();
        let quantized: Vec<Vec<(QuantTensor, f64)>> = block_metas
            .par_iter()
            .zip(values.par_iter().zip(masks.par_iter()))
            .map(|(t, (w, keep))| {
                menu.iter()
                    .map(|&bits| {
                        let q = self.quantize(
                            &t.name,
                            w,
                            [t.shape[0], t.shape[1]],
                            bits,
                            moment(&t.name),
                            keep.as_deref(),
                        )?;
                        let se = q.error(w).squared_error;
                        Ok((q, se))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let choices: Vec<Vec<Choice>> = members
            .iter()
            .zip(&sens)
            .map(|(idx, s)| {
                menu.iter()
                    .enumerate()
                    .map(|(k, &bits)| Choice {
                        bits,
                        size: self.size(budget, &block_metas, idx, bits),
                        cost: s.omega * idx.iter().map(|&i| quantized[i][k].1).sum::<f64>(),
                    })
                    .collect()
            })
            .collect();
        let limit = match budget {
            Budget::Bits(b) | Budget::Bytes(b) => b,
        };
        let block_picks: Vec<usize> = match self.config.allocation {
            Allocation::Optimal => bit_allocation::optimal(&choices, limit),
            Allocation::TopK | Allocation::Reversed => {
                let omega: Vec<f64> = sens.iter().map(|s| s.omega).collect();
                let (low, high) = (menu[0], menu[menu.len() - 1]);
                bit_allocation::top_k(
                    &omega,
                    low,
                    high,
                    self.config.allocation == Allocation::Reversed,
                    limit,
                    |i, bits| choices[i][menu.iter().position(|&b| b == bits).unwrap_or(0)].size,
                )
                .map(|bits| {
                    bits.iter()
                        .map(|b| menu.iter().position(|m| m == b).unwrap_or(0))
                        .collect()
                })
            }
        }
        .map_err(|e| self.infeasible(e, budget))?;
        // The width of every block matrix: its block's.
        let mut picks = vec![0usize; block_metas.len()];
        for (idx, &p) in members.iter().zip(&block_picks) {
            for &i in idx {
                picks[i] = p;
            }
        }

        // 3. Optional quantization-aware fine-tuning at the chosen widths; the blocks are then quantized from the
        //    trained weights, and the trained biases and head are stored in their own dtypes.
        let (mut quantized, mut values) = (quantized, values);
        let mut qat_report = None;
        let mut qat_changed = Vec::new();
        if let Some(q) = &self.config.qat {
            let blocks: Vec<(String, Encoding)> = block_metas
                .iter()
                .zip(&picks)
                .map(|(t, &p)| {
                    (
                        t.name.clone(),
                        self.quant_encoding(menu[p], [t.shape[0], t.shape[1]]),
                    )
                })
                .collect();
            ctx.progress.on_pass_start("qat", q.steps);
            let progress = ctx.progress;
            let job = qat::Job {
                store: ctx.store,
                config: ctx.config,
                pooling: Pooling::load(ctx.files.dir())?,
                blocks: &blocks,
                settings: *q,
                part_rows: hessian::DEFAULT_PART_ROWS,
            };
            let out = qat::train(&job, |step| data.qat_batch(q, step), &|step, loss| {
                progress.on_unit(&format!("step {} loss {loss:.4}", step + 1))
            })?;
            let mut trained: BTreeMap<String, Vec<f32>> = out.tensors.into_iter().collect();
            for (i, t) in block_metas.iter().enumerate() {
                let Some(mut w) = trained.remove(&t.name) else {
                    continue;
                };
                if let Some(keep) = &masks[i] {
                    for (v, k) in w.iter_mut().zip(keep) {
                        if !k {
                            *v = 0.0;
                        }
                    }
                }
                let qt = self.quantize(
                    &t.name,
                    &w,
                    [t.shape[0], t.shape[1]],
                    blocks[i].1.bits,
                    moment(&t.name),
                    masks[i].as_deref(),
                )?;
                let se = qt.error(&w).squared_error;
                quantized[i][picks[i]] = (qt, se);
                values[i] = w;
            }
            for (name, v) in trained {
                let (dtype, shape) = ctx.store.info(&name).ok_or_else(|| Error::Config {
                    key: "qat".into(),
                    problem: format!("the checkpoint has no tensor `{name}` to store"),
                })?;
                ctx.store
                    .set(&name, HostTensor::from_f32(shape, &v, dtype)?);
                qat_changed.push(name);
            }
            let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
            let k = out.losses.len().min(10);
            qat_report = Some(json!({
                "steps": q.steps,
                "lr": q.lr,
                "batch_size": q.batch_size,
                "seconds": out.seconds,
                "loss_first_10": mean(&out.losses[..k]),
                "loss_last_10": mean(&out.losses[out.losses.len() - k..]),
                "losses": out.losses,
            }));
        }

        // 4. Store the chosen encodings and the embedding tables.
        let mut per_tensor = Vec::with_capacity(block_metas.len());
        let mut chosen = BTreeMap::new();
        let mut changed = Vec::new();
        let (mut code_bits, mut numel) = (0u64, 0u64);
        for (i, (t, mut qs)) in block_metas.iter().zip(quantized).enumerate() {
            let (q, se) = qs.swap_remove(picks[i]);
            let bits = q.encoding.bits;
            code_bits += t.numel() as u64 * u64::from(bits);
            numel += t.numel() as u64;
            per_tensor.push((
                se,
                json!({
                    "bits": bits,
                    "squared_error": se,
                    "relative_frobenius_error": q.error(&values[i]).relative_frobenius,
                    "bytes": t.quantized_form(q.encoding).bytes(&t.shape),
                }),
            ));
            chosen.insert(t.name.clone(), bits);
            ctx.store.set_quant(&t.name, q);
            changed.push(t.name.clone());
        }
        let mut per_block = BTreeMap::new();
        for ((b, s), idx) in blocks.iter().zip(&sens).zip(&members) {
            per_block.insert(
                b.name.clone(),
                json!({
                    "omega": s.omega,
                    "mean": s.mean,
                    "std": s.std,
                    "eigenvalues": s.samples,
                    "iterations": s.iterations,
                    "converged": s.converged,
                    "bits": chosen[&block_metas[idx[0]].name],
                    "squared_error": idx.iter().map(|&i| per_tensor[i].0).sum::<f64>(),
                    "tensors": idx
                        .iter()
                        .map(|&i| (block_metas[i].name.clone(), per_tensor[i].1.clone()))
                        .collect::<BTreeMap<_, _>>(),
                }),
            );
        }
        let mut tables = BTreeMap::new();
        for c in &planned {
            let Some(e) = c.encoding_after.filter(|_| !chosen.contains_key(&c.name)) else {
                continue;
            };
            let w = ctx.store.get_f32(&c.name, &c.shape_before)?;
            let q = QuantTensor::quantize(&w, c.shape_before[0], c.shape_before[1], e).map_err(
                |problem| Error::Config {
                    key: "embeddings".into(),
                    problem: format!("cannot quantize `{}`: {problem}", c.name),
                },
            )?;
            tables.insert(
                c.name.clone(),
                json!({ "bits": e.bits, "relative_frobenius_error": q.error(&w).relative_frobenius, "bytes": q.stored_bytes() }),
            );
            ctx.store.set_quant(&c.name, q);
            changed.push(c.name.clone());
        }
        changed.extend(qat_changed);
        changed.sort();

        let bytes_after: usize = changed
            .iter()
            .filter(|n| ctx.store.encoding(n).is_some() || ctx.store.sparse_mask(n).is_some())
            .map(|n| ctx.store.stored_bytes(n))
            .sum();
        let plot = allocation_svg(
            ctx.config.bert().naming(),
            &blocks
                .iter()
                .zip(&sens)
                .zip(&members)
                .map(|((b, s), idx)| (b.name.as_str(), s.omega, chosen[&block_metas[idx[0]].name]))
                .collect::<Vec<_>>(),
            &menu,
        );
        let mut report = PassReport {
            kind: "hessian-mp".into(),
            changed,
            warnings,
            plots: vec![("allocation.svg".into(), plot)],
            ..PassReport::default()
        };
        let d = &mut report.decisions;
        d.insert("bits".into(), json!(chosen));
        d.insert("menu".into(), json!(menu));
        d.insert("allocation".into(), json!(self.config.allocation));
        d.insert(
            "budget".into(),
            match budget {
                Budget::Bits(b) => {
                    json!({ "code_bits": b, "average_bits": self.config.average_bits })
                }
                Budget::Bytes(b) => json!({ "bytes": b }),
            },
        );
        d.insert("block".into(), json!(self.config.block));
        d.insert(
            "granularity".into(),
            json!(match self.config.row_groups {
                Some(g) => format!("{g} groups of output rows"),
                None => Strategy::Group {
                    size: self.config.group_size,
                }
                .describe(),
            }),
        );
        d.insert("symmetric".into(), json!(self.config.symmetric));
        d.insert("loss".into(), json!(loss_name));
        d.insert("sensitivity".into(), json!(self.config.sensitivity));
        let m = &mut report.metrics;
        m.insert("per_block".into(), json!(per_block));
        m.insert("embeddings".into(), json!(tables));
        m.insert(
            "average_bits".into(),
            json!(code_bits as f64 / numel.max(1) as f64),
        );
        m.insert("bytes_before".into(), json!(ctx.plan.bytes_before()));
        m.insert("bytes_after".into(), json!(bytes_after));
        m.insert("sensitivity_seconds".into(), json!(sensitivity_seconds));
        m.insert("sensitivity_cached".into(), json!(sensitivity_cached));
        if let Some(q) = qat_report {
            m.insert("qat".into(), q);
        }
        m.insert(
            "calibration_batches".into(),
            json!(samples
                .iter()
                .map(|s| s.batch.batch_size)
                .collect::<Vec<_>>()),
        );
        Ok(report)
    }
}

/// A short label of a block for the plot: `3.q` for `encoder.layer.3.attention.self.query.weight`, `3` for a whole
/// layer (`block = "layer"`).
fn short_label(n: &Naming, name: &str) -> String {
    if let Some((l, slot)) = n.linear_of(name) {
        return format!("{l}.{}", slot.label());
    }
    match n.split_layer(name) {
        Some((l, "")) => l.to_string(),
        _ => name.trim_end_matches(".weight").to_string(),
    }
}

/// The allocation as an SVG bar chart: one bar per block (in the order of the report), its height `log10(Omega)`, its colour
/// the chosen width.
fn allocation_svg(n: &Naming, blocks: &[(&str, f64, u8)], menu: &[u8]) -> String {
    const COLOURS: [&str; 7] = [
        "#d62728", "#ff7f0e", "#2ca02c", "#17becf", "#9467bd", "#8c564b", "#1f77b4",
    ];
    let colour = |bits: u8| COLOURS[usize::from(bits.clamp(2, 8) - 2)];
    let logs: Vec<f64> = blocks
        .iter()
        .map(|(_, o, _)| o.max(1e-12).log10())
        .collect();
    let lo = logs
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .floor()
        .min(0.0);
    let hi = logs
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
        .ceil()
        .max(lo + 1.0);
    let (left, top, plot_h, bar_w) = (60.0, 40.0, 260.0, 18.0);
    let width = left + bar_w * blocks.len() as f64 + 20.0;
    let height = top + plot_h + 70.0;
    let y = |v: f64| top + plot_h * (hi - v) / (hi - lo);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"16\" font-size=\"13\">hessian-mp: sensitivity (Omega, log scale) and bits per block</text>\n"
    );
    let mut legend_x = left;
    for &b in menu {
        svg.push_str(&format!(
            "<rect x=\"{legend_x:.1}\" y=\"24\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"33\">{b} bits</text>\n",
            colour(b),
            legend_x + 13.0
        ));
        legend_x += 60.0;
    }
    let mut tick = lo;
    while tick <= hi {
        svg.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">1e{tick:.0}</text>\n",
            width - 20.0,
            left - 4.0,
            y(tick) + 4.0,
            yy = y(tick)
        ));
        tick += 1.0;
    }
    for (i, ((name, omega, bits), l)) in blocks.iter().zip(&logs).enumerate() {
        let x = left + bar_w * i as f64;
        let (y0, y1) = (y(*l), y(lo));
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{name}: Omega {omega:.4e}, {bits} bits</title></rect>\n\
             <text transform=\"translate({:.1},{:.1}) rotate(-90)\" text-anchor=\"end\" font-size=\"9\">{}</text>\n",
            x + 2.0,
            bar_w - 4.0,
            (y1 - y0).max(0.5),
            colour(*bits),
            x + bar_w / 2.0 + 3.0,
            y1 + 6.0,
            short_label(n, name)
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// The sampled calibration records with the source of their targets.
struct Data {
    records: Records,
    source: Source,
    loss_name: &'static str,
}

impl Data {
    /// The records `order` (in index order) as a sample with its targets.
    fn draw(&self, order: &[usize]) -> Result<Sample> {
        let (batch, labels) = self.records.draw(order);
        Ok(match (&self.source, labels) {
            (Source::Labels, Some(l)) => Sample {
                batch,
                target: Target::Labels(l),
            },
            (Source::Teacher(m), _) => Sample::self_distillation(m, batch)?,
            (Source::Labels, None) => {
                return Err(compressor_models::Error::Runtime(
                    "labelled calibration records lost their labels".into(),
                )
                .into())
            }
        })
    }

    /// The batch of QAT step `step`: consecutive batches of a seeded shuffle of the records, reshuffled every pass
    /// over them.
    fn qat_batch(&self, q: &qat::Settings, step: usize) -> Result<Sample> {
        let n = self.records.encoded.len();
        let size = q.batch_size.min(n).max(1);
        let per_epoch = n / size;
        let (epoch, k) = (step / per_epoch, step % per_epoch);
        let mut order: Vec<usize> = (0..n).collect();
        Rng::new(
            q.seed
                .wrapping_add(epoch as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )
        .shuffle(&mut order);
        self.draw(&order[k * size..(k + 1) * size])
    }
}

/// Where the targets of the loss come from.
enum Source {
    /// The records' labels.
    Labels,
    /// The model before this pass (self-distillation).
    Teacher(Box<Bert<Cpu>>),
}

impl HessianMp {
    /// The sampled calibration records, tokenized, with where the targets of the loss come from.
    fn data(&self, ctx: &PassContext) -> Result<Data> {
        let spec = ctx.calibration.ok_or_else(|| Error::NoCalibration {
            key: "sensitivity".into(),
        })?;
        let request = match ctx.config.bert().head {
            Head::SequenceClassification { num_labels, .. } => match self.config.loss {
                LossKind::SelfDistillation => LabelRequest::None,
                LossKind::CrossEntropy => LabelRequest::Required {
                    field: &self.config.label_field,
                    classes: num_labels,
                    key: "label-field",
                    needed_by: "loss = \"cross-entropy\"",
                },
                LossKind::Auto => LabelRequest::IfPresent {
                    field: &self.config.label_field,
                    classes: num_labels,
                },
            },
            Head::None => LabelRequest::None,
        };
        let records = spec.records(ctx.files, ctx.config, request)?;
        let (source, loss_name) = if records.labels.is_some() {
            (Source::Labels, "cross-entropy")
        } else {
            (
                Source::Teacher(Box::new(Bert::<Cpu>::load(
                    ctx.store,
                    ctx.config,
                    Pooling::load(ctx.files.dir())?,
                    &Default::default(),
                )?)),
                "self-distillation",
            )
        };
        Ok(Data {
            records,
            source,
            loss_name,
        })
    }

    /// One batch per run, drawn from the sampled calibration records, with the target of the loss.
    fn samples(&self, data: &Data) -> Result<Vec<Sample>> {
        let s = &self.config.sensitivity;
        (0..s.runs)
            .map(|r| {
                let mut order: Vec<usize> = (0..data.records.encoded.len()).collect();
                Rng::new(
                    s.seed
                        .wrapping_add(r as u64)
                        .wrapping_mul(0x2545_F491_4F6C_DD1D),
                )
                .shuffle(&mut order);
                order.truncate(s.batch_size);
                data.draw(&order)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocation_plot_has_one_bar_per_block_coloured_by_its_width() {
        let bert = compressor_models::Family::Bert.naming();
        let svg = allocation_svg(
            bert,
            &[
                ("encoder.layer.0.attention.self.query.weight", 0.05, 2),
                ("encoder.layer.0.intermediate.dense.weight", 391.0, 8),
                ("encoder.layer.5.output.dense.weight", 1.4, 4),
            ],
            &[2, 4, 8],
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        let bars: Vec<&str> = svg.lines().filter(|l| l.contains("<title>")).collect();
        assert_eq!(bars.len(), 3);
        assert!(bars[0].contains("fill=\"#d62728\"") && svg.contains(">0.q</text>"));
        assert!(bars[1].contains("fill=\"#1f77b4\"") && bars[1].contains("8 bits"));
        assert!(bars[2].contains("fill=\"#2ca02c\""));
        // Log scale from 1e-2 (floor of log10 0.05) to 1e3.
        assert!(svg.contains(">1e-2<") && svg.contains(">1e3<"));
        assert_eq!(
            short_label(bert, "encoder.layer.5.output.dense.weight"),
            "5.down"
        );
        assert_eq!(short_label(bert, "classifier.weight"), "classifier");
        assert_eq!(short_label(bert, "encoder.layer.3"), "3");
    }
}
