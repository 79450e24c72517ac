//! Quantization-aware fine-tuning with the straight-through estimator (the fine-tuning step of Q-BERT, Shen et al.,
//! AAAI 2020): the model is trained on calibration data while every quantized block computes with its fake-quantized
//! weights `Q(W)`, and the gradient with respect to `Q(W)` is passed to the float weights `W` unchanged
//! (`W + (Q(W) - W).detach()` in the forward pass). The bit widths and the encoding of each block stay as chosen;
//! scales are recomputed from `W` at every step, as the final quantization will.
//!
//! What trains: the weight and bias of every quantized block, and the float pooler and classifier when the model
//! has them. Embeddings and LayerNorms stay frozen. The optimiser is Adam (beta 0.9 / 0.999, epsilon 1e-8, no
//! weight decay) with the learning rate decaying linearly to zero over the steps. There is no dropout, and the data
//! order is seeded, so a run is deterministic.

use std::time::Instant;

use rayon::prelude::*;

use compressor_models::runtime::{flat, Bert, CpuAutodiff, Tensor, TensorData};
use compressor_models::tensor::transposed;
use compressor_models::{Encoding, ModelConfig, Pooling, QuantTensor, TensorStore};
use serde::{Deserialize, Serialize};

use super::hessian::{self, Sample};
use crate::error::{Error, Result};
use crate::optim::Adam;

/// Settings of quantization-aware fine-tuning (`qat = { steps = 300, lr = 2e-5 }`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Optimiser steps (one batch each).
    pub steps: usize,
    /// Peak learning rate (Adam), decayed linearly to zero.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Calibration records per step.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Seed of the data order.
    #[serde(default)]
    pub seed: u64,
}

fn default_lr() -> f64 {
    2e-5
}
fn default_batch() -> usize {
    32
}

impl Settings {
    /// Check the settings (`key` names the table in errors).
    pub fn check(&self, key: &str) -> Result<()> {
        let bad = |field: &str, problem: String| Error::Config {
            key: format!("{key}.{field}"),
            problem,
        };
        if self.steps == 0 {
            return Err(bad(
                "steps",
                "must be at least 1\nhint: leave `qat` out to skip fine-tuning".into(),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(bad(
                "lr",
                format!("{} is not a positive learning rate", self.lr),
            ));
        }
        if self.batch_size == 0 {
            return Err(bad("batch-size", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// What [`train`] works on.
pub struct Job<'a> {
    /// The float weights before quantization.
    pub store: &'a TensorStore,
    pub config: &'a ModelConfig,
    pub pooling: Pooling,
    /// The quantized blocks (Linear weight names) with their encodings.
    pub blocks: &'a [(String, Encoding)],
    pub settings: Settings,
    /// The most rows of a part of a batch (the gradient of a batch is accumulated over length-sorted parts).
    pub part_rows: usize,
}

/// The trained float values, in the checkpoint's layout, and the loss of every step.
pub struct Outcome {
    /// `(name, values)`: block and head weights (`[out, in]`) and their biases.
    pub tensors: Vec<(String, Vec<f32>)>,
    pub losses: Vec<f64>,
    pub seconds: f64,
}

/// The leaves of one trained Linear in a step (weight, bias) and its fake-quantized weight, if it is a block.
type Leaf = (
    Tensor<CpuAutodiff, 2>,
    Tensor<CpuAutodiff, 1>,
    Option<Vec<f32>>,
);

/// One trained Linear: its weight in burn's `[in, out]` layout and its bias, with Adam's moments.
struct Trained {
    name: String,
    encoding: Option<Encoding>,
    dims: [usize; 2],
    weight: Adam,
    bias: Adam,
}

/// The fake-quantized `[in, out]` weight: quantized as the checkpoint's `[out, in]` matrix, decoded.
fn fake_quant(name: &str, weight_t: &[f32], dims: [usize; 2], e: Encoding) -> Result<Vec<f32>> {
    let [i, o] = dims;
    let q = QuantTensor::quantize(&transposed(weight_t, i, o), o, i, e).map_err(|problem| {
        Error::Config {
            key: "qat".into(),
            problem: format!("cannot quantize `{name}`: {problem}"),
        }
    })?;
    Ok(transposed(&q.dequantize(), o, i))
}

/// Fine-tune with the straight-through estimator. `batch(step)` gives the data of each step (with its targets);
/// `on_step` is called after every step with its loss.
pub fn train(
    job: &Job,
    mut batch: impl FnMut(usize) -> Result<Sample>,
    on_step: &dyn Fn(usize, f64),
) -> Result<Outcome> {
    let started = Instant::now();
    let s = job.settings;
    let base = Bert::<CpuAutodiff>::load(job.store, job.config, job.pooling, &Default::default())?;
    let mut names: Vec<(String, Option<Encoding>)> = job
        .blocks
        .iter()
        .map(|(n, e)| (n.clone(), Some(*e)))
        .collect();
    // The head: the dense layer on the first token (BERT's pooler, RoBERTa's `classifier.dense`, DistilBERT's
    // `pre_classifier`) and the output Linear, by the family's names.
    let heads = [
        job.config
            .head_dense()
            .map(|(dense, _)| format!("{dense}.weight")),
        Some(format!("{}.weight", job.config.bert().naming().head_out)),
    ];
    for head in heads.into_iter().flatten() {
        if base.linear(&head).is_some() && !names.iter().any(|(n, _)| *n == head) {
            names.push((head, None));
        }
    }
    let mut trained = Vec::with_capacity(names.len());
    for (name, encoding) in names {
        let lin = base.linear(&name).ok_or_else(|| Error::Config {
            key: "qat".into(),
            problem: format!("the model has no Linear weight `{name}`"),
        })?;
        trained.push(Trained {
            dims: lin.weight_t.dims(),
            weight: Adam::new(flat(lin.weight_t.clone())?),
            bias: Adam::new(flat(lin.bias.clone())?),
            name,
            encoding,
        });
    }
    let device = *base.device();
    let mut losses = Vec::with_capacity(s.steps);
    for step in 0..s.steps {
        let sample = batch(step)?;
        // The fake-quantized values the forward pass computes with (the matrices in parallel), then the leaves.
        let quantized: Vec<Option<Vec<f32>>> = trained
            .par_iter()
            .map(|t| {
                t.encoding
                    .map(|e| fake_quant(&t.name, &t.weight.value, t.dims, e))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let leaves: Vec<Leaf> = trained
            .iter()
            .zip(quantized)
            .map(|(t, q)| {
                let w = Tensor::<CpuAutodiff, 2>::from_data(
                    TensorData::new(t.weight.value.clone(), t.dims),
                    &device,
                )
                .require_grad();
                let b = Tensor::<CpuAutodiff, 1>::from_data(
                    TensorData::new(t.bias.value.clone(), [t.dims[1]]),
                    &device,
                )
                .require_grad();
                (w, b, q)
            })
            .collect();
        let mut gw: Vec<Vec<f32>> = trained
            .iter()
            .map(|t| vec![0.0; t.weight.value.len()])
            .collect();
        let mut gb: Vec<Vec<f32>> = trained
            .iter()
            .map(|t| vec![0.0; t.bias.value.len()])
            .collect();
        let mut loss = 0f64;
        for (part, weight) in sample.split(job.part_rows) {
            let mut m = base.clone();
            for (t, (w, b, q)) in trained.iter().zip(&leaves) {
                let lin = m.linear_mut(&t.name).expect("checked above");
                lin.factors = None;
                lin.weight_t = match q {
                    // Straight-through: the forward value is Q(W), the gradient reaches W unchanged.
                    Some(q) => {
                        let q = Tensor::<CpuAutodiff, 2>::from_data(
                            TensorData::new(q.clone(), t.dims),
                            &device,
                        );
                        w.clone() + (q - w.clone().detach())
                    }
                    None => w.clone(),
                };
                lin.bias = b.clone();
            }
            let l = hessian::loss(&m, &part)? * weight;
            loss += f64::from(flat(l.clone())?[0]);
            let grads = l.backward();
            for (i, (w, b, _)) in leaves.iter().enumerate() {
                for (acc, g) in [
                    (&mut gw[i], w.grad(&grads).map(flat)),
                    (&mut gb[i], b.grad(&grads).map(flat)),
                ] {
                    if let Some(g) = g {
                        acc.iter_mut().zip(g?).for_each(|(a, x)| *a += x);
                    }
                }
            }
        }
        if !loss.is_finite() {
            return Err(Error::Config {
                key: "qat.lr".into(),
                problem: format!(
                    "the loss became {loss} at step {}\nhint: lower the learning rate",
                    step + 1
                ),
            });
        }
        let lr = s.lr * (1.0 - step as f64 / s.steps as f64);
        trained
            .par_iter_mut()
            .zip(gw.par_iter().zip(&gb))
            .for_each(|(t, (gw, gb))| {
                t.weight.step(gw, lr, step + 1);
                t.bias.step(gb, lr, step + 1);
            });
        losses.push(loss);
        on_step(step, loss);
    }
    let mut tensors = Vec::with_capacity(trained.len() * 2);
    for t in trained {
        let [i, o] = t.dims;
        tensors.push((t.name.clone(), transposed(&t.weight.value, i, o)));
        let bias = t
            .name
            .strip_suffix(".weight")
            .map(|m| format!("{m}.bias"))
            .unwrap_or_else(|| format!("{}.bias", t.name));
        tensors.push((bias, t.bias.value));
    }
    Ok(Outcome {
        tensors,
        losses,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_round_trips() {
        let x: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let t = transposed(&x, 2, 3);
        assert_eq!(t, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(transposed(&t, 3, 2), x);
    }
}
