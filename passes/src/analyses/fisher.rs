//! Gradients and the diagonal Fisher information of the encoder's Linear weights: for every sample (a batch of
//! `rows` records with the target of its loss), the gradient `g` of the loss (first-order autodiff), and over the
//! samples the mean gradient `E[g]` and the empirical Fisher diagonal `E[g * g]`. With `rows = 1` this is the
//! per-example empirical Fisher; larger batches trade variance for speed (the batch-mean gradient's square
//! under-estimates the per-example Fisher by the batch size on uncorrelated examples, so values are comparable
//! only at one setting). Values are in the weights' HF layout `[out, in]`, accumulated in f64.

use compressor_models::runtime::{flat, Bert, CpuAutodiff};
use compressor_models::{Pooling, TensorStore};

use super::cache::Arrays;
use super::{loss, runtime, Sample};
use crate::error::Result;

/// Mean gradient and Fisher diagonal per Linear weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients {
    /// Samples (backward passes) averaged over.
    pub samples: usize,
    /// `<weight>.gradient` and `<weight>.fisher`, `[out, in]`.
    pub sites: Arrays,
}

impl Gradients {
    /// `E[g * g]` of the HF weight `weight`, `[out, in]` row-major.
    pub fn fisher(&self, weight: &str) -> Option<&[f64]> {
        self.sites.get(&format!("{weight}.fisher"))
    }

    /// `E[g]` of the HF weight `weight`, `[out, in]` row-major.
    pub fn mean(&self, weight: &str) -> Option<&[f64]> {
        self.sites.get(&format!("{weight}.gradient"))
    }

    pub(super) fn to_arrays(&self) -> Arrays {
        let mut a = self.sites.clone();
        a.insert("samples", vec![1], vec![self.samples as f64]);
        a
    }

    pub(super) fn from_arrays(mut a: Arrays) -> Option<Self> {
        let samples = a.0.remove("samples")?.1.first().copied()? as usize;
        Some(Self { samples, sites: a })
    }
}

/// Gradients of `weights` (HF names of Linear weights) over `samples`.
pub(super) fn gradients(
    store: &TensorStore,
    config: &compressor_models::ModelConfig,
    pooling: Pooling,
    weights: &[String],
    samples: &[Sample],
    progress: &dyn Fn(usize),
) -> Result<Gradients> {
    let device = Default::default();
    let wanted = |name: &str| weights.iter().any(|w| w == name);
    let model = Bert::<CpuAutodiff>::load_with_grad(store, config, pooling, &device, &wanted)?;
    let mut dims = Vec::with_capacity(weights.len());
    for w in weights {
        let lin = model
            .linear(w)
            .ok_or_else(|| runtime(format!("the model has no Linear weight `{w}`")))?;
        if lin.factors.is_some() {
            return Err(runtime(format!(
                "`{w}` is stored low-rank; gradients are taken on dense weights\nhint: run `compressor export --format dense` first, or analyse before the low-rank pass"
            )));
        }
        // weight_t is [in, out].
        dims.push(lin.weight_t.dims());
    }
    let mut sum: Vec<Vec<f64>> = dims.iter().map(|[i, o]| vec![0.0; i * o]).collect();
    let mut sq = sum.clone();
    for (done, sample) in samples.iter().enumerate() {
        let grads = loss(&model, sample)?.backward();
        for (k, w) in weights.iter().enumerate() {
            let lin = model
                .linear(w)
                .ok_or_else(|| runtime(format!("`{w}` vanished")))?;
            let g = lin
                .weight_t
                .grad(&grads)
                .ok_or_else(|| runtime(format!("no gradient reached `{w}`")))?;
            let [rows_in, cols_out] = dims[k];
            let g = flat(g)?;
            // [in, out] -> [out, in].
            for i in 0..rows_in {
                for o in 0..cols_out {
                    let v = f64::from(g[i * cols_out + o]);
                    let at = o * rows_in + i;
                    sum[k][at] += v;
                    sq[k][at] += v * v;
                }
            }
        }
        progress(done + 1);
    }
    let n = samples.len().max(1) as f64;
    let mut sites = Arrays::default();
    for (k, w) in weights.iter().enumerate() {
        let [i, o] = dims[k];
        sites.insert(
            format!("{w}.gradient"),
            vec![o, i],
            sum[k].iter().map(|v| v / n).collect(),
        );
        sites.insert(
            format!("{w}.fisher"),
            vec![o, i],
            sq[k].iter().map(|v| v / n).collect(),
        );
    }
    Ok(Gradients {
        samples: samples.len(),
        sites,
    })
}
