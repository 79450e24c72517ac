//! The burn runtime of the BERT-like encoders: built from a [`TensorStore`](crate::TensorStore), it computes encoder hidden states,
//! the pooled sentence embedding the checkpoint declares, the pooler output and classifier logits.
//!
//! Generic over the burn backend, so the same code runs in inference mode ([`Cpu`]) and under autodiff
//! ([`CpuAutodiff`]); the `cuda` cargo feature adds [`Cuda`]. This module is the only place where burn's
//! `[in, out]` Linear layout appears: weights are transposed from HF's `[out, in]` once, at load.
//! Reference: transformers `models/bert/modeling_bert.py` (BertEmbeddings, BertSelfAttention, BertLayer, BertPooler),
//! with `roberta`'s position ids, `mpnet`'s relative attention bias and `distilbert`'s names.

mod bert;
mod host;

pub use crate::quant::act::ActMode;
pub use bert::{Bert, LayerMasks, LayerNorm, LayerTrace, Linear, Masks};

/// The CPU backend (pure Rust, multi-threaded).
pub type Cpu = burn::backend::Flex;
/// The CPU backend with first-order autodiff.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;
/// The CUDA backend (CUDA libraries are loaded at run time).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

pub use burn::tensor::backend::Backend;
pub use burn::tensor::{Int, Tensor, TensorData};

/// Host f32 values of a 2-D tensor, one `Vec` per row.
pub fn rows<B: Backend>(t: Tensor<B, 2>) -> crate::Result<Vec<Vec<f32>>> {
    let [_, cols] = t.dims();
    let data = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| crate::Error::Runtime(format!("cannot read tensor data: {e:?}")))?;
    Ok(data.chunks(cols.max(1)).map(<[f32]>::to_vec).collect())
}

/// Host f32 values of any tensor, flattened row-major.
pub fn flat<B: Backend, const D: usize>(t: Tensor<B, D>) -> crate::Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| crate::Error::Runtime(format!("cannot read tensor data: {e:?}")))
}

/// MPNet's relative position bias `[heads, t, t]` for a sequence of `t` tokens, from its table `[buckets, heads]`:
/// `bias[h][i][j] = table[bucket(j - i)][h]`. It depends on positions only, so padding leaves the real tokens' bias
/// unchanged.
pub(crate) fn relative_bias(table: &[f32], heads: usize, t: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; heads * t * t];
    for i in 0..t {
        for j in 0..t {
            let row = crate::family::relative_bucket(j as i64 - i as i64) * heads;
            for h in 0..heads {
                out[(h * t + i) * t + j] = table[row + h];
            }
        }
    }
    out
}
