//! Importance of every prunable unit: per layer, one score per head (by position in the layer's kept heads), one
//! per FFN neuron, and (with data) one per layer.

use compressor_models::runtime::{Bert, Cpu, Tensor, TensorData};
use compressor_models::{Pooling, TensorStore};

use super::{Config, Importance};
use crate::error::{Error, Result};
use crate::files::SideFiles;
use crate::pass::PlanContext;

/// Scores of a model's units; higher is more important.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// `heads[l][p]`: head at position `p` of layer `l`'s kept heads.
    pub heads: Vec<Vec<f64>>,
    /// `neurons[l][j]`: FFN neuron `j` of layer `l`.
    pub neurons: Vec<Vec<f64>>,
    /// Block influence `1 - mean cos(input, output)` per layer, when measured on data.
    pub layers: Option<Vec<f64>>,
}

/// Score the model `ctx` describes as `config` asks.
pub fn scores(config: &Config, ctx: &PlanContext) -> Result<Scores> {
    check_unchanged(ctx)?;
    let needs_data = config.importance == Importance::Activation || config.drop_layers > 0;
    if !needs_data {
        return magnitude(ctx.store, ctx);
    }
    let Some(spec) = ctx.calibration else {
        return Err(Error::NoCalibration {
            key: if config.importance == Importance::Activation {
                "importance = \"activation\"".into()
            } else {
                "drop-layers".into()
            },
        });
    };
    let files = SideFiles::new(ctx.model_dir);
    let batches = spec.batches(&files, ctx.config, config.batch_size)?;
    if batches.is_empty() {
        return Err(Error::Config {
            key: "calibration.data".into(),
            problem: format!("`{}` holds no text", spec.data.display()),
        });
    }
    let activation = activations(ctx, &batches)?;
    if config.importance == Importance::Activation {
        Ok(activation)
    } else {
        Ok(Scores {
            layers: activation.layers,
            ..magnitude(ctx.store, ctx)?
        })
    }
}

/// Pruning reads the weights at plan time, so the tensors it scores must be the checkpoint's own: no earlier pass
/// may have changed a layer's shape.
fn check_unchanged(ctx: &PlanContext) -> Result<()> {
    for spec in ctx.config.expected_tensors() {
        if spec.layer.is_none() {
            continue;
        }
        let planned = ctx.info.get(&spec.name).map(|t| t.shape.clone());
        let stored = ctx.store.info(&spec.name).map(|(_, s)| s);
        if planned.is_none() || planned != stored {
            return Err(Error::Config {
                key: "kind".into(),
                problem: format!(
                    "an earlier pass changes `{}`; `prune` scores the checkpoint's own encoder weights\nhint: put `prune` first, or merge two `prune` passes into one with the combined target",
                    spec.name
                ),
            });
        }
    }
    Ok(())
}

fn weight(store: &TensorStore, name: &str, shape: [usize; 2]) -> Result<Vec<f32>> {
    Ok(store.get_f32(name, &shape)?)
}

fn sq_rows(w: &[f32], cols: usize, rows: std::ops::Range<usize>) -> f64 {
    w[rows.start * cols..rows.end * cols]
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum()
}

fn sq_cols(w: &[f32], cols: usize, range: std::ops::Range<usize>) -> f64 {
    w.chunks(cols)
        .map(|row| {
            row[range.clone()]
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
        })
        .sum()
}

/// L2 norm of every unit's weights: a head's query, key and value rows and output-projection columns; a neuron's
/// intermediate row and output column.
fn magnitude(store: &TensorStore, ctx: &PlanContext) -> Result<Scores> {
    let c = ctx.config.bert();
    let h = c.hidden_size;
    let mut heads = Vec::new();
    let mut neurons = Vec::new();
    for (l, s) in c.layers.iter().enumerate() {
        let p = format!("encoder.layer.{l}");
        let mut hs = vec![0f64; s.heads.len()];
        if s.has_attention() {
            let (qk, vo) = (s.qk_head_dim, s.vo_head_dim);
            let q = weight(
                store,
                &format!("{p}.attention.self.query.weight"),
                [s.qk_width(), h],
            )?;
            let k = weight(
                store,
                &format!("{p}.attention.self.key.weight"),
                [s.qk_width(), h],
            )?;
            let v = weight(
                store,
                &format!("{p}.attention.self.value.weight"),
                [s.vo_width(), h],
            )?;
            let o = weight(
                store,
                &format!("{p}.attention.output.dense.weight"),
                [h, s.vo_width()],
            )?;
            for (i, score) in hs.iter_mut().enumerate() {
                let e = sq_rows(&q, h, i * qk..(i + 1) * qk)
                    + sq_rows(&k, h, i * qk..(i + 1) * qk)
                    + sq_rows(&v, h, i * vo..(i + 1) * vo)
                    + sq_cols(&o, s.vo_width(), i * vo..(i + 1) * vo);
                *score = e.sqrt();
            }
        }
        let mut ns = vec![0f64; s.intermediate_size];
        if s.has_ffn() {
            let i = s.intermediate_size;
            let up = weight(store, &format!("{p}.intermediate.dense.weight"), [i, h])?;
            let down = weight(store, &format!("{p}.output.dense.weight"), [h, i])?;
            for (j, score) in ns.iter_mut().enumerate() {
                *score = (sq_rows(&up, h, j..j + 1) + sq_cols(&down, i, j..j + 1)).sqrt();
            }
        }
        heads.push(hs);
        neurons.push(ns);
    }
    Ok(Scores {
        heads,
        neurons,
        layers: None,
    })
}

/// Scores from a forward pass over the calibration batches, averaged over real (not padding) tokens:
/// a head's score is the mean L2 norm of what it adds to the residual stream (`W_O[:, head] ctx_head`); a neuron's
/// is its mean |activation| times the L2 norm of its output column; a layer's is its block influence.
fn activations(ctx: &PlanContext, batches: &[compressor_models::EncodedBatch]) -> Result<Scores> {
    let c = ctx.config.bert();
    let h = c.hidden_size;
    let device = Default::default();
    let pooling = Pooling::load(ctx.model_dir)?;
    let model = Bert::<Cpu>::load(ctx.store, ctx.config, pooling, &device)?;
    // Per layer: W_O as [heads, vo, h] and the output columns' norms of W_down.
    let mut w_o = Vec::new();
    let mut down_norms = Vec::new();
    for (l, s) in c.layers.iter().enumerate() {
        let p = format!("encoder.layer.{l}");
        w_o.push(if s.has_attention() {
            let o = weight(
                ctx.store,
                &format!("{p}.attention.output.dense.weight"),
                [h, s.vo_width()],
            )?;
            let t = Tensor::<Cpu, 2>::from_data(TensorData::new(o, [h, s.vo_width()]), &device);
            Some(t.transpose().reshape([s.heads.len(), s.vo_head_dim, h]))
        } else {
            None
        });
        down_norms.push(if s.has_ffn() {
            let i = s.intermediate_size;
            let d = weight(ctx.store, &format!("{p}.output.dense.weight"), [h, i])?;
            (0..i).map(|j| sq_cols(&d, i, j..j + 1).sqrt()).collect()
        } else {
            Vec::new()
        });
    }
    let layers = c.layers.len();
    let mut heads: Vec<Vec<f64>> = c.layers.iter().map(|s| vec![0.0; s.heads.len()]).collect();
    let mut neurons: Vec<Vec<f64>> = c
        .layers
        .iter()
        .map(|s| vec![0.0; s.intermediate_size])
        .collect();
    let mut influence = vec![0f64; layers];
    let mut tokens = 0f64;
    for batch in batches {
        let (b, t) = (batch.batch_size, batch.seq_len);
        let mask_values: Vec<f32> = batch.attention_mask.iter().map(|&m| m as f32).collect();
        tokens += mask_values.iter().map(|&m| f64::from(m)).sum::<f64>();
        let mask = Tensor::<Cpu, 1>::from_data(TensorData::new(mask_values, [b * t]), &device);
        let trace = model.trace(batch)?;
        for (l, tr) in trace.into_iter().enumerate() {
            let s = &c.layers[l];
            if let (Some(ctx_t), Some(wo)) = (tr.context, &w_o[l]) {
                let (nh, vo) = (s.heads.len(), s.vo_head_dim);
                // [nh, N, vo] x [nh, vo, h] -> [nh, N, h]: each head's contribution per token.
                let per_head = ctx_t
                    .reshape([b * t, nh, vo])
                    .swap_dims(0, 1)
                    .matmul(wo.clone());
                let norms = per_head
                    .powi_scalar(2)
                    .sum_dim(2)
                    .sqrt()
                    .reshape([nh, b * t]);
                let summed = (norms * mask.clone().unsqueeze::<2>()).sum_dim(1);
                for (acc, v) in heads[l].iter_mut().zip(host(summed.reshape([nh]))?) {
                    *acc += f64::from(v);
                }
            }
            if let Some(act) = tr.activation {
                let i = s.intermediate_size;
                let summed = (act.reshape([b * t, i]).abs() * mask.clone().unsqueeze_dim::<2>(1))
                    .sum_dim(0)
                    .reshape([i]);
                for (acc, v) in neurons[l].iter_mut().zip(host(summed)?) {
                    *acc += f64::from(v);
                }
            }
            if let Some(input) = tr.input {
                let x = input.reshape([b * t, h]);
                let y = tr.output.reshape([b * t, h]);
                let dot = (x.clone() * y.clone()).sum_dim(1);
                let nx = x.powi_scalar(2).sum_dim(1).sqrt();
                let ny = y.powi_scalar(2).sum_dim(1).sqrt();
                let cos = dot / (nx * ny).clamp_min(1e-12);
                let cos = (cos.reshape([b * t]) * mask.clone()).sum();
                influence[l] += host(cos)?.first().copied().map_or(0.0, f64::from);
            }
        }
    }
    let tokens = tokens.max(1.0);
    for (l, ns) in neurons.iter_mut().enumerate() {
        for (j, v) in ns.iter_mut().enumerate() {
            *v = *v / tokens * down_norms[l][j];
        }
    }
    for hs in heads.iter_mut() {
        for v in hs.iter_mut() {
            *v /= tokens;
        }
    }
    Ok(Scores {
        heads,
        neurons,
        layers: Some(influence.iter().map(|s| 1.0 - s / tokens).collect()),
    })
}

fn host<const D: usize>(t: Tensor<Cpu, D>) -> Result<Vec<f32>> {
    Ok(compressor_models::runtime::flat(t)?)
}
