//! Mask training on the burn autodiff runtime.
//!
//! Every step draws a batch (consecutive batches of a seeded shuffle, reshuffled every epoch), samples the masks
//! with noise from a generator seeded by (seed, step), and minimises
//! `L = L_task + kl_factor * sum KL + lambda_1 (s - t) + lambda_2 (s - t)^2`, where `s` is the expected sparsity
//! (1 - expected kept encoder parameters / encoder parameters) and `t` ramps linearly from 0 to the target over the
//! warm-up steps. `mu` and `log D` take AdamW steps (no decay, the learning rate decaying linearly to zero, the
//! gradient clipped to a global norm); `lambda_1` and `lambda_2` take Adam steps of the negative learning rate
//! (gradient ascent). With `weights` the encoder's and head's Linears train too (Adam, their own learning rate).
//!
//! The state after a step (masks, multipliers, weights, all optimiser moments, the history) is a pure function of
//! the state before it and the step number, so a run resumed from a checkpoint ends exactly where an
//! uninterrupted run ends.

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use compressor_models::rng::Rng;
use compressor_models::runtime::{flat, Backend, Bert, Cpu, CpuAutodiff, Tensor, TensorData};
use compressor_models::{EncodedBatch, ModelConfig, Pooling, TensorStore};

use super::masks::{KlWeights, Leaves, MaskSet};
use crate::analyses::{head_loss, Sample, Target};
use crate::calibration::Records;
use crate::error::{Error, Result};
use crate::optim::Adam;

/// What the masked model is trained to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Cross-entropy on the records' labels.
    Task,
    /// Match the unpruned model: the mean squared error of every layer's output (over real tokens) times
    /// `layer_weight`, plus `output_weight` times the logit KL at temperature `temperature` (classifiers) or the
    /// squared error of the pooled embedding (embedders).
    Distill {
        layer_weight: f64,
        output_weight: f64,
        temperature: f64,
    },
}

/// The settings of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub reg_lr: f64,
    /// Steps over which the target sparsity ramps from 0.
    pub warmup: usize,
    pub kl_factor: f64,
    pub kl: KlWeights,
    pub max_grad_norm: f64,
    /// `Some(lr)`: the Linear weights train too, at this learning rate.
    pub weights: Option<f64>,
    pub target: f64,
    pub seed: u64,
}

/// One trained Linear (burn's `[in, out]` weight and its bias).
pub struct TrainedLinear {
    pub name: String,
    pub dims: [usize; 2],
    pub weight: Adam,
    pub bias: Adam,
}

/// Everything a step changes.
pub struct State {
    /// Steps done.
    pub step: usize,
    pub masks: MaskSet,
    pub mask_opt: Adam,
    pub lambdas: Adam,
    pub weights: Vec<TrainedLinear>,
    /// Per step: loss (task or distillation), KL (unweighted), expected sparsity, target sparsity.
    pub history: Vec<[f64; 4]>,
}

impl State {
    pub fn new(masks: MaskSet, weights: Vec<TrainedLinear>) -> Self {
        Self {
            step: 0,
            mask_opt: Adam::new(masks.flat()),
            lambdas: Adam::new(vec![0.0, 0.0]),
            masks,
            weights,
            history: Vec::new(),
        }
    }
}

/// The Linears that train with `weights`: every Linear of the encoder layers and of the head, as `model` has
/// them.
pub fn trainable(model: &Bert<Cpu>, config: &ModelConfig) -> Result<Vec<TrainedLinear>> {
    let c = config.bert();
    let n = c.naming();
    let mut names = Vec::new();
    for (l, s) in c.layers.iter().enumerate() {
        for slot in compressor_models::Slot::ALL {
            if s.linear_shape(c.hidden_size, slot).is_some() {
                names.push(format!("{}.weight", n.linear(l, slot)));
            }
        }
    }
    if let Some((dense, _)) = config.head_dense() {
        names.push(format!("{dense}.weight"));
    }
    names.push(format!("{}.weight", n.head_out));
    let mut out = Vec::new();
    for name in names {
        let Some(lin) = model.linear(&name) else {
            continue;
        };
        out.push(TrainedLinear {
            dims: lin.weight_t.dims(),
            weight: Adam::new(flat(lin.weight_t.clone())?),
            bias: Adam::new(flat(lin.bias.clone())?),
            name,
        });
    }
    Ok(out)
}

/// What [`run`] works on.
pub struct Job<'a> {
    pub store: &'a TensorStore,
    pub config: &'a ModelConfig,
    pub pooling: Pooling,
    pub records: &'a Records,
    pub objective: Objective,
    pub schedule: &'a Schedule,
    /// Encoder parameters of the unmasked model.
    pub parameters: usize,
}

/// The record indices of step `step`'s batch.
fn batch_order(n: usize, size: usize, seed: u64, step: usize) -> Vec<usize> {
    let size = size.min(n).max(1);
    let per_epoch = (n / size).max(1);
    let (epoch, k) = (step / per_epoch, step % per_epoch);
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(
        seed.wrapping_add(epoch as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
    .shuffle(&mut order);
    order[k * size..(k + 1) * size].to_vec()
}

/// The target sparsity at step `step`: a linear ramp from 0 over the warm-up, then the target.
pub fn target_at(schedule: &Schedule, step: usize) -> f64 {
    if schedule.warmup == 0 {
        return schedule.target;
    }
    schedule.target * ((step + 1) as f64 / schedule.warmup as f64).min(1.0)
}

/// The teacher's per-layer outputs and its logits or pooled embedding on a batch.
struct Teacher {
    layers: Vec<Vec<f32>>,
    output: Vec<f32>,
}

fn teacher(model: &Bert<Cpu>, batch: &EncodedBatch) -> Result<Teacher> {
    let traces = model.trace(batch)?;
    let layers: Vec<Vec<f32>> = traces
        .iter()
        .map(|t| flat(t.output.clone()))
        .collect::<compressor_models::Result<_>>()?;
    let hidden = match traces.last() {
        Some(t) => t.output.clone(),
        None => model.encode(batch)?,
    };
    let output = match model.logits(hidden.clone()) {
        Ok(logits) => flat(logits)?,
        Err(_) => flat(model.pool(hidden, batch))?,
    };
    Ok(Teacher { layers, output })
}

/// The objective's loss of the masked `model` on `batch`.
fn objective_loss<B: Backend>(
    model: &Bert<B>,
    batch: &EncodedBatch,
    labels: Option<&[usize]>,
    objective: Objective,
    teacher: Option<&Teacher>,
) -> Result<Tensor<B, 1>> {
    match (objective, teacher) {
        (
            Objective::Distill {
                layer_weight,
                output_weight,
                temperature,
            },
            Some(t),
        ) => {
            let device = model.device().clone();
            let (b, s) = (batch.batch_size, batch.seq_len);
            let traces = model.trace(batch)?;
            let mask: Vec<f32> = batch.attention_mask.iter().map(|&m| m as f32).collect();
            let tokens = mask.iter().sum::<f32>().max(1.0) as f64;
            let mask = Tensor::<B, 3>::from_data(TensorData::new(mask, [b, s, 1]), &device);
            let mut loss: Option<Tensor<B, 1>> = None;
            let n_layers = traces.len().max(1) as f64;
            let add = |x: Tensor<B, 1>, loss: &mut Option<Tensor<B, 1>>| {
                *loss = Some(match loss.take() {
                    Some(l) => l + x,
                    None => x,
                });
            };
            for (tr, target) in traces.iter().zip(&t.layers) {
                let h = tr.output.dims()[2];
                let target =
                    Tensor::<B, 3>::from_data(TensorData::new(target.clone(), [b, s, h]), &device);
                let err = ((tr.output.clone() - target).powi_scalar(2) * mask.clone()).sum()
                    * (layer_weight / (tokens * h as f64 * n_layers));
                add(err, &mut loss);
            }
            let hidden = match traces.last() {
                Some(tr) => tr.output.clone(),
                None => model.encode(batch)?,
            };
            let out = match model.logits(hidden.clone()) {
                Ok(logits) => {
                    let [rows, classes] = logits.dims();
                    let target = Tensor::<B, 2>::from_data(
                        TensorData::new(t.output.clone(), [rows, classes]),
                        &device,
                    );
                    let p = burn::tensor::activation::softmax(target / temperature, 1);
                    let logq = burn::tensor::activation::log_softmax(logits / temperature, 1);
                    let logp = p.clone().clamp_min(1e-30).log();
                    (p * (logp - logq)).sum() * (temperature * temperature / rows as f64)
                }
                Err(_) => {
                    let sample = Sample {
                        batch: batch.clone(),
                        target: Target::Embeddings(t.output.clone()),
                    };
                    head_loss(model, hidden, &sample)?
                }
            };
            add(out * output_weight, &mut loss);
            Ok(loss.unwrap_or_else(|| Tensor::zeros([1], &device)))
        }
        _ => {
            let labels = labels.ok_or_else(|| Error::Config {
                key: "loss".into(),
                problem: "the task loss needs labelled records".into(),
            })?;
            let sample = Sample {
                batch: batch.clone(),
                target: Target::Labels(labels.to_vec()),
            };
            let hidden = model.encode(batch)?;
            head_loss(model, hidden, &sample)
        }
    }
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> Result<f64> {
    Ok(f64::from(flat(t)?.first().copied().unwrap_or(f32::NAN)))
}

/// Steps from `state.step` to the schedule's end on the CPU; `on_step` after each (for progress and checkpoints).
pub fn run(
    job: &Job,
    state: &mut State,
    on_step: &mut dyn FnMut(&State) -> Result<()>,
) -> Result<f64> {
    run_on::<CpuAutodiff>(job, state, &Default::default(), on_step)
}

/// [`run`] on any autodiff backend (`Autodiff<Cuda>` with the `cuda` feature); the teacher runs on the CPU.
pub fn run_on<B: AutodiffBackend>(
    job: &Job,
    state: &mut State,
    device: &B::Device,
    on_step: &mut dyn FnMut(&State) -> Result<()>,
) -> Result<f64> {
    let started = Instant::now();
    let s = job.schedule;
    let device = device.clone();
    let base = Bert::<B>::load(job.store, job.config, job.pooling, &device)?;
    let teacher_model = match job.objective {
        Objective::Distill { .. } => Some(Bert::<Cpu>::load(
            job.store,
            job.config,
            job.pooling,
            &Default::default(),
        )?),
        Objective::Task => None,
    };
    let layers = job.config.bert().layers.len();
    let n = job.records.encoded.len();
    while state.step < s.steps {
        let step = state.step;
        let order = batch_order(n, s.batch_size, s.seed, step);
        let (batch, labels) = job.records.draw(&order);
        let t = match &teacher_model {
            Some(m) => Some(teacher(m, &batch)?),
            None => None,
        };
        let leaves = Leaves::<B>::new(&state.masks, &device, true);
        let mut rng = Rng::new(
            s.seed
                .wrapping_mul(0xA076_1D64_78BD_642F)
                .wrapping_add(step as u64 + 1),
        );
        let masks = leaves.masks(&state.masks, layers, batch.batch_size, Some(&mut rng));
        let mut model = base.clone();
        let weight_leaves: Vec<(Tensor<B, 2>, Tensor<B, 1>)> = state
            .weights
            .iter()
            .map(|w| {
                let wt = Tensor::<B, 2>::from_data(
                    TensorData::new(w.weight.value.clone(), w.dims),
                    &device,
                )
                .require_grad();
                let bt = Tensor::<B, 1>::from_data(
                    TensorData::new(w.bias.value.clone(), [w.dims[1]]),
                    &device,
                )
                .require_grad();
                (wt, bt)
            })
            .collect();
        for (w, (wt, bt)) in state.weights.iter().zip(&weight_leaves) {
            if let Some(lin) = model.linear_mut(&w.name) {
                lin.factors = None;
                lin.weight_t = wt.clone();
                lin.bias = bt.clone();
            }
        }
        model.set_masks(Some(masks))?;
        let task = objective_loss(&model, &batch, labels.as_deref(), job.objective, t.as_ref())?;
        let kl = leaves.kl(&state.masks, &s.kl);
        let expected = leaves.expected_parameters(&state.masks, job.config.bert());
        let sparsity = (expected * (-1.0 / job.parameters.max(1) as f64)) + 1.0;
        let target = target_at(s, step);
        let [l1, l2] = [state.lambdas.value[0], state.lambdas.value[1]].map(f64::from);
        let gap = sparsity.clone() - target;
        let lagrangian = gap.clone() * l1 + gap.powi_scalar(2) * l2;
        let total = task.clone() + kl.clone() * s.kl_factor + lagrangian;
        let (task_v, kl_v, sparsity_v) = (scalar(task)?, scalar(kl)?, scalar(sparsity)?);
        if !task_v.is_finite() {
            return Err(Error::Config {
                key: "lr".into(),
                problem: format!(
                    "the loss became {task_v} at step {}\nhint: lower `lr` (or `weight-lr`)",
                    step + 1
                ),
            });
        }
        let grads = total.backward();
        let mut g: Vec<f32> = Vec::with_capacity(state.masks.units() * 2);
        for part in [&leaves.mu, &leaves.logd] {
            for (t, v) in part.iter().zip(&state.masks.vibs) {
                match t.grad(&grads) {
                    Some(x) => g.extend(flat(x)?),
                    None => g.extend(std::iter::repeat_n(0.0, v.mu.len())),
                }
            }
        }
        let norm = g.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        if norm > s.max_grad_norm && norm.is_finite() {
            let k = (s.max_grad_norm / norm) as f32;
            g.iter_mut().for_each(|x| *x *= k);
        }
        let decay = 1.0 - step as f64 / s.steps as f64;
        state.mask_opt.step(&g, s.lr * decay, step + 1);
        state.masks.set_flat(&state.mask_opt.value);
        let gap_v = sparsity_v - target;
        state
            .lambdas
            .step(&[gap_v as f32, (gap_v * gap_v) as f32], -s.reg_lr, step + 1);
        if let Some(lr) = s.weights {
            for (w, (wt, bt)) in state.weights.iter_mut().zip(&weight_leaves) {
                if let Some(gw) = wt.grad(&grads) {
                    w.weight.step(&flat(gw)?, lr * decay, step + 1);
                }
                if let Some(gb) = bt.grad(&grads) {
                    w.bias.step(&flat(gb)?, lr * decay, step + 1);
                }
            }
        }
        state.history.push([task_v, kl_v, sparsity_v, target]);
        state.step += 1;
        on_step(state)?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The masked model's outputs with the masks at their deterministic values (for tests and reports): the runtime
/// with `masks` set from `leaves` means, on the inference backend.
pub fn mean_masks<Bk: Backend>(
    set: &MaskSet,
    layers: usize,
    device: &Bk::Device,
) -> compressor_models::runtime::Masks<Bk> {
    Leaves::<Bk>::new(set, device, false).masks(set, layers, 1, None)
}
