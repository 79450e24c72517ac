//! Folding the deterministic mask values into the weights, before the removal: the model then computes without
//! masks what the masked model computes.
//!
//! - heads: the output projection's input columns of each head block times the head's value;
//! - neurons: the down projection's input columns times the neuron's value;
//! - a sublayer mask and the hidden mask: the sublayer's output rows (weight and bias) times both;
//! - the hidden mask: every LayerNorm's weight and bias (the embeddings' and both of each layer) times it, and
//!   the classifier's input columns (the pooler's outputs are hidden dimensions).
//!
//! Units whose value is 0 are zeroed here and removed by the removal that follows.

use compressor_models::arch::ModelConfig;
use compressor_models::{HostTensor, Slot, TensorStore};

use super::masks::{Kind, MaskSet};
use crate::error::Result;

/// Multiply tensor `name` (`[rows, cols]` or `[rows]`) by `row[r] * col[c]`, in its own dtype.
fn scale(
    store: &mut TensorStore,
    name: &str,
    row: Option<&[f32]>,
    col: Option<&[f32]>,
) -> Result<bool> {
    if (row.is_none() && col.is_none()) || !store.contains(name) {
        return Ok(false);
    }
    let t = store.get(name)?;
    let shape = t.shape.clone();
    let cols: usize = shape.iter().skip(1).product::<usize>().max(1);
    let mut v = t.to_f32(name)?;
    for (i, x) in v.iter_mut().enumerate() {
        let (r, c) = (i / cols, i % cols);
        if let Some(rw) = row {
            *x *= rw[r];
        }
        if let Some(cw) = col {
            *x *= cw[c];
        }
    }
    store.set(name, HostTensor::from_f32(shape, &v, t.dtype)?);
    Ok(true)
}

/// `a * b` element-wise, either absent meaning all ones; a scalar `b` (one value) broadcasts.
fn times(a: Option<&[f32]>, b: Option<&[f32]>, n: usize) -> Option<Vec<f32>> {
    match (a, b) {
        (None, None) => None,
        _ => Some(
            (0..n)
                .map(|i| {
                    let x = a.map_or(1.0, |a| a[i]);
                    let y = b.map_or(1.0, |b| if b.len() == 1 { b[0] } else { b[i] });
                    x * y
                })
                .collect(),
        ),
    }
}

/// Fold `values` (per mask of `set`, as [`super::decide::Hard`] gives them) into the store. Returns the names
/// of the tensors whose values changed.
pub fn fold(
    store: &mut TensorStore,
    config: &ModelConfig,
    set: &MaskSet,
    values: &[Vec<f32>],
) -> Result<Vec<String>> {
    let c = config.bert();
    let n = c.naming();
    let h = c.hidden_size;
    let value = |kind: Kind, layer: Option<usize>| -> Option<&[f32]> {
        set.vibs
            .iter()
            .position(|v| v.kind == kind && v.layer == layer)
            .map(|i| values[i].as_slice())
    };
    let hidden = value(Kind::Hidden, None);
    let mut changed = Vec::new();
    let mut apply = |store: &mut TensorStore,
                     name: String,
                     row: Option<&[f32]>,
                     col: Option<&[f32]>|
     -> Result<()> {
        if scale(store, &name, row, col)? {
            changed.push(name);
        }
        Ok(())
    };
    let norm = |module: &str| [format!("{module}.weight"), format!("{module}.bias")];
    for name in norm(n.emb_norm) {
        apply(store, name, hidden, None)?;
    }
    for (l, s) in c.layers.iter().enumerate() {
        let lin = |slot: Slot, part: &str| format!("{}.{part}", n.linear(l, slot));
        let heads = value(Kind::Heads, Some(l)).map(|v| {
            v.iter()
                .flat_map(|&x| std::iter::repeat_n(x, s.vo_head_dim))
                .collect::<Vec<f32>>()
        });
        let att_rows = times(hidden, value(Kind::Attention, Some(l)), h);
        apply(
            store,
            lin(Slot::AttnOut, "weight"),
            att_rows.as_deref(),
            heads.as_deref(),
        )?;
        apply(store, lin(Slot::AttnOut, "bias"), att_rows.as_deref(), None)?;
        let ffn_rows = times(hidden, value(Kind::Ffn, Some(l)), h);
        apply(
            store,
            lin(Slot::Down, "weight"),
            ffn_rows.as_deref(),
            value(Kind::Neurons, Some(l)),
        )?;
        apply(store, lin(Slot::Down, "bias"), ffn_rows.as_deref(), None)?;
        let p = n.layer(l);
        for module in [n.attn_norm, n.out_norm] {
            for name in norm(&format!("{p}.{module}")) {
                apply(store, name, hidden, None)?;
            }
        }
    }
    // The pooler's outputs are hidden dimensions: the classifier reads them through its columns.
    if matches!(
        c.head,
        compressor_models::Head::SequenceClassification { .. }
    ) {
        apply(store, format!("{}.weight", n.head_out), None, hidden)?;
    }
    changed.sort();
    Ok(changed)
}
