//! Re-densify a model whose layers have their own shapes (pruned heads, narrower heads, pruned FFN neurons,
//! dropped sublayers) into the plain uniform BERT that every loader reads: removed heads and neurons come back as
//! zeros, which changes no output (a zero query/key head scores every token alike and adds its zero value rows
//! through zero output columns; a zero neuron's activation is `act(0) = 0`). Dropped whole layers stay dropped:
//! `num_hidden_layers` already says how many there are.

use crate::arch::{LayerShape, ModelConfig};
use crate::error::Result;
use crate::family::Slot;
use crate::store::TensorStore;
use crate::tensor::{DType, HostTensor};

/// Rows of `src` (`[rows, cols]`, row-major) placed at `rows_at[r]` of a zero `[out_rows, cols]` matrix.
fn place_rows(src: &[f32], cols: usize, rows_at: &[usize], out_rows: usize) -> Vec<f32> {
    let mut out = vec![0f32; out_rows * cols];
    for (r, &to) in rows_at.iter().enumerate() {
        out[to * cols..(to + 1) * cols].copy_from_slice(&src[r * cols..(r + 1) * cols]);
    }
    out
}

/// Columns of `src` (`[rows, cols]`) placed at `cols_at[c]` of a zero `[rows, out_cols]` matrix.
fn place_cols(src: &[f32], rows: usize, cols_at: &[usize], out_cols: usize) -> Vec<f32> {
    let cols = cols_at.len();
    let mut out = vec![0f32; rows * out_cols];
    for r in 0..rows {
        for (c, &to) in cols_at.iter().enumerate() {
            out[r * out_cols + to] = src[r * cols + c];
        }
    }
    out
}

/// Where each kept row of a projection goes in the full layout: head `id`'s `width` rows start at `id * head_dim`.
fn head_rows(s: &LayerShape, width: usize, head_dim: usize) -> Vec<usize> {
    s.heads
        .iter()
        .flat_map(|&id| (0..width).map(move |d| id * head_dim + d))
        .collect()
}

/// The values and dtype of `name` when `present`, else nothing (a dropped sublayer) in `dtype`.
fn read(
    store: &TensorStore,
    name: &str,
    shape: &[usize],
    present: bool,
    dtype: DType,
) -> Result<(Vec<f32>, DType)> {
    if !present {
        return Ok((Vec::new(), dtype));
    }
    let d = store.info(name).map_or(dtype, |(d, _)| d);
    Ok((store.get_f32(name, shape)?, d))
}

fn put(
    store: &mut TensorStore,
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
    dtype: DType,
) -> Result<()> {
    store.set(&name, HostTensor::from_f32(shape, &values, dtype)?);
    Ok(())
}

/// Pad every layer of `store` back to the uniform shapes of `config` (all `num_attention_heads` heads at full
/// width, `intermediate_size` neurons), in each tensor's dtype, and return the uniform config. A model that is
/// already uniform is returned unchanged.
pub fn densify(config: &ModelConfig, store: &mut TensorStore) -> Result<ModelConfig> {
    let c = config.bert();
    if c.is_uniform() {
        return Ok(config.clone());
    }
    if let Some(d) = &c.hidden {
        return Err(crate::Error::ConfigKey {
            path: config.path.clone(),
            key: format!("{}.hidden", crate::arch::EXTENSION_KEY),
            problem: format!(
                "the model keeps {} of its {} hidden dimensions; LayerNorm over the kept dimensions cannot be zero-padded back exactly\nhint: use `compressor export DIR --format remote-code` (transformers and sentence-transformers with trust_remote_code=True)",
                d.kept.len(),
                d.original_size
            ),
        });
    }
    let (h, nh, hd, full_i) = (
        c.hidden_size,
        c.num_attention_heads,
        c.head_dim(),
        c.intermediate_size,
    );
    let full = nh * hd;
    let n = c.naming();
    for (l, s) in c.layers.iter().enumerate() {
        let dtype = store
            .info(&format!("{}.{}.weight", n.layer(l), n.out_norm))
            .map_or(DType::F32, |(d, _)| d);
        let qk_rows = head_rows(s, s.qk_head_dim, hd);
        let vo_rows = head_rows(s, s.vo_head_dim, hd);
        let attn = s.has_attention();
        for (slot, rows, width) in [
            (Slot::Query, &qk_rows, s.qk_width()),
            (Slot::Key, &qk_rows, s.qk_width()),
            (Slot::Value, &vo_rows, s.vo_width()),
        ] {
            let m = n.linear(l, slot);
            let (w, wd) = read(store, &format!("{m}.weight"), &[width, h], attn, dtype)?;
            let (b, bd) = read(store, &format!("{m}.bias"), &[width], attn, dtype)?;
            put(
                store,
                format!("{m}.weight"),
                vec![full, h],
                place_rows(&w, h, rows, full),
                wd,
            )?;
            put(
                store,
                format!("{m}.bias"),
                vec![full],
                place_rows(&b, 1, rows, full),
                bd,
            )?;
        }
        let o_name = format!("{}.weight", n.linear(l, Slot::AttnOut));
        let (o, od) = read(store, &o_name, &[h, s.vo_width()], attn, dtype)?;
        put(
            store,
            o_name,
            vec![h, full],
            place_cols(&o, h, &vo_rows, full),
            od,
        )?;

        let (i, ffn) = (s.intermediate_size, s.has_ffn());
        let neurons: Vec<usize> = (0..i).collect();
        let (up_n, upb_n, down_n) = (
            format!("{}.weight", n.linear(l, Slot::Up)),
            format!("{}.bias", n.linear(l, Slot::Up)),
            format!("{}.weight", n.linear(l, Slot::Down)),
        );
        let (up, upd) = read(store, &up_n, &[i, h], ffn, dtype)?;
        let (upb, upbd) = read(store, &upb_n, &[i], ffn, dtype)?;
        let (down, downd) = read(store, &down_n, &[h, i], ffn, dtype)?;
        put(
            store,
            up_n,
            vec![full_i, h],
            place_rows(&up, h, &neurons, full_i),
            upd,
        )?;
        put(
            store,
            upb_n,
            vec![full_i],
            place_rows(&upb, 1, &neurons, full_i),
            upbd,
        )?;
        put(
            store,
            down_n,
            vec![h, full_i],
            place_cols(&down, h, &neurons, full_i),
            downd,
        )?;
    }
    let mut out = config.clone();
    let uniform = (0..c.layers.len())
        .map(|l| LayerShape {
            source: c.layers[l].source,
            ..c.uniform_layer(l)
        })
        .collect();
    out.set_layers(uniform)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_columns_land_where_their_heads_were() {
        // Two kept rows of width 2 placed at rows 1 and 3 of 4.
        assert_eq!(
            place_rows(&[1.0, 2.0, 3.0, 4.0], 2, &[1, 3], 4),
            vec![0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 3.0, 4.0]
        );
        assert_eq!(
            place_cols(&[1.0, 2.0, 3.0, 4.0], 2, &[0, 2], 3),
            vec![1.0, 0.0, 2.0, 3.0, 0.0, 4.0]
        );
        let s = LayerShape {
            heads: vec![1, 3],
            qk_head_dim: 2,
            vo_head_dim: 3,
            intermediate_size: 4,
            source: 0,
            low_rank: Default::default(),
        };
        assert_eq!(head_rows(&s, 2, 4), vec![4, 5, 12, 13]);
    }
}
