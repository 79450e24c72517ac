//! Importance of every prunable unit: per layer, one score per head (by position in the layer's kept heads), one
//! per FFN neuron, and (with data) one per layer. Activation scores come from the shared analyses (cached).

use compressor_models::{Slot, TensorStore};

use super::{Config, Importance};
use crate::analyses::cache::Cache;
use crate::analyses::Want;
use crate::error::{Error, Result};
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
    /// `hidden[d]`: hidden dimension `d` of the residual stream.
    pub hidden: Vec<f64>,
}

/// Score the model `ctx` describes as `config` asks.
pub fn scores(config: &Config, ctx: &PlanContext, cache: &Cache) -> Result<Scores> {
    ctx.require_checkpoint_weights(
        "prune",
        "put `prune` first, or merge two `prune` passes into one with the combined target",
    )?;
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
    let activation = activations(ctx, spec, config.batch_size, cache)?;
    if config.importance == Importance::Activation {
        Ok(activation)
    } else {
        Ok(Scores {
            layers: activation.layers,
            ..magnitude(ctx.store, ctx)?
        })
    }
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
    let n = c.naming();
    for (l, s) in c.layers.iter().enumerate() {
        let w = |slot: Slot| format!("{}.weight", n.linear(l, slot));
        let mut hs = vec![0f64; s.heads.len()];
        if s.has_attention() {
            let (qk, vo) = (s.qk_head_dim, s.vo_head_dim);
            let q = weight(store, &w(Slot::Query), [s.qk_width(), h])?;
            let k = weight(store, &w(Slot::Key), [s.qk_width(), h])?;
            let v = weight(store, &w(Slot::Value), [s.vo_width(), h])?;
            let o = weight(store, &w(Slot::AttnOut), [h, s.vo_width()])?;
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
            let up = weight(store, &w(Slot::Up), [i, h])?;
            let down = weight(store, &w(Slot::Down), [h, i])?;
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
        hidden: magnitude_hidden(store, ctx)?,
    })
}

/// L2 norm of every weight entry a hidden dimension touches: its column of the embedding tables and of every
/// Linear reading the residual stream (query, key, value, FFN up), its row of every Linear writing it (attention
/// output, FFN down), and its LayerNorm scales.
fn magnitude_hidden(store: &TensorStore, ctx: &PlanContext) -> Result<Vec<f64>> {
    let c = ctx.config.bert();
    let h = c.hidden_size;
    let mut sq = vec![0f64; h];
    let add_cols = |sq: &mut [f64], w: &[f32]| {
        for row in w.chunks(h) {
            for (acc, v) in sq.iter_mut().zip(row) {
                *acc += f64::from(*v).powi(2);
            }
        }
    };
    let n = c.naming();
    let tables = [
        (Some(n.word), c.vocab_size),
        (Some(n.position), c.max_position_embeddings),
        (n.token_type, c.type_vocab_size),
    ];
    for (name, rows) in tables {
        if let Some(name) = name {
            add_cols(
                &mut sq,
                &store.get_f32(&format!("{name}.weight"), &[rows, h])?,
            );
        }
    }
    let mut norms = vec![format!("{}.weight", n.emb_norm)];
    for (l, s) in c.layers.iter().enumerate() {
        let w = |slot: Slot| format!("{}.weight", n.linear(l, slot));
        norms.push(format!("{}.{}.weight", n.layer(l), n.attn_norm));
        norms.push(format!("{}.{}.weight", n.layer(l), n.out_norm));
        let mut reads = Vec::new();
        if s.has_attention() {
            reads.push((w(Slot::Query), s.qk_width()));
            reads.push((w(Slot::Key), s.qk_width()));
            reads.push((w(Slot::Value), s.vo_width()));
        }
        if s.has_ffn() {
            reads.push((w(Slot::Up), s.intermediate_size));
        }
        for (name, rows) in reads {
            add_cols(&mut sq, &store.get_f32(&name, &[rows, h])?);
        }
        let mut writes = Vec::new();
        if s.has_attention() {
            writes.push((w(Slot::AttnOut), s.vo_width()));
        }
        if s.has_ffn() {
            writes.push((w(Slot::Down), s.intermediate_size));
        }
        for (name, cols) in writes {
            let w = store.get_f32(&name, &[h, cols])?;
            for (d, acc) in sq.iter_mut().enumerate() {
                *acc += sq_rows(&w, cols, d..d + 1);
            }
        }
    }
    for name in norms {
        add_cols(&mut sq, &store.get_f32(&name, &[h])?);
    }
    Ok(sq.into_iter().map(f64::sqrt).collect())
}

/// Activation scores from the shared analyses (see [`crate::analyses::forward`]).
fn activations(
    ctx: &PlanContext,
    spec: &crate::CalibrationSpec,
    batch_size: usize,
    cache: &Cache,
) -> Result<Scores> {
    let want = Want {
        importance: true,
        covariance: false,
    };
    let forward = ctx.forward_statistics(spec, batch_size, want, cache)?;
    let importance = forward.importance.ok_or_else(|| {
        compressor_models::Error::Runtime("the analyses returned no importance".into())
    })?;
    Ok(Scores {
        heads: importance.heads,
        neurons: importance.neurons,
        layers: Some(importance.influence),
        hidden: importance.hidden,
    })
}
