//! Statistics of one forward sweep over the calibration batches (no gradients), averaged over real (not padding)
//! tokens:
//! - **importance**: a head's score is the mean L2 norm of what it adds to the residual stream
//!   (`W_O[:, head] ctx_head`); a neuron's is its mean |activation| times the L2 norm of its output column; a
//!   layer's block influence is `1 - mean cos(input, output)`; a hidden dimension's is its mean |value| summed over
//!   the residual stream's states.
//! - **covariance**: the uncentred second moment `E[x x^T]` and the mean `E[x]` of the input of every Linear of
//!   the encoder, summed in f64 over batches (each batch's product in f32). Query, key and value share their input,
//!   so one matrix serves all three.

use compressor_models::family::Naming;
use compressor_models::runtime::{Bert, Cpu, Tensor, TensorData};
use compressor_models::{EncodedBatch, Slot};

use super::cache::Arrays;
use crate::error::Result;

/// Scores of a model's prunable units; higher is more important.
#[derive(Debug, Clone, PartialEq)]
pub struct Importance {
    /// `heads[l][p]`: head at position `p` of layer `l`'s kept heads.
    pub heads: Vec<Vec<f64>>,
    /// `neurons[l][j]`: FFN neuron `j` of layer `l`.
    pub neurons: Vec<Vec<f64>>,
    /// Block influence `1 - mean cos(input, output)` per layer.
    pub influence: Vec<f64>,
    /// `hidden[d]`: mean |x_d| of the residual stream's dimension `d`, summed over the states between sublayers
    /// (the embeddings' output, and every attention and FFN sublayer's normalised output).
    pub hidden: Vec<f64>,
}

impl Importance {
    pub(super) fn to_arrays(&self) -> Arrays {
        let mut a = Arrays::default();
        for (l, h) in self.heads.iter().enumerate() {
            a.insert(format!("heads.{l}"), vec![h.len()], h.clone());
        }
        for (l, n) in self.neurons.iter().enumerate() {
            a.insert(format!("neurons.{l}"), vec![n.len()], n.clone());
        }
        a.insert(
            "influence",
            vec![self.influence.len()],
            self.influence.clone(),
        );
        a.insert("hidden", vec![self.hidden.len()], self.hidden.clone());
        a
    }

    pub(super) fn from_arrays(a: &Arrays, layers: usize) -> Option<Self> {
        let get = |n: String| a.get(&n).map(<[f64]>::to_vec);
        Some(Self {
            heads: (0..layers)
                .map(|l| get(format!("heads.{l}")))
                .collect::<Option<_>>()?,
            neurons: (0..layers)
                .map(|l| get(format!("neurons.{l}")))
                .collect::<Option<_>>()?,
            influence: get("influence".into())?,
            hidden: get("hidden".into())?,
        })
    }
}

/// Where the Linear whose weight is `weight` (named as `n` names it) reads its input: the name of its covariance
/// matrix (compressor's own site names, `encoder.layer.N.<site>` in every family).
pub fn covariance_site(n: &Naming, weight: &str) -> Option<String> {
    if !weight.ends_with(".weight") {
        return None;
    }
    let (l, slot) = n.linear_of(weight)?;
    let site = match slot {
        Slot::Query | Slot::Key | Slot::Value => "attention.input",
        Slot::AttnOut => "attention.context",
        Slot::Up => "ffn.input",
        Slot::Down => "ffn.activation",
    };
    Some(format!("encoder.layer.{l}.{site}"))
}

/// `E[x x^T]` of every Linear's input, `[n, n]` row-major in f64, by site name (see [`covariance_site`]), and
/// `E[x]` as `<site>.mean`.
#[derive(Debug, Clone, PartialEq)]
pub struct Covariance {
    /// Real tokens the moments average over.
    pub tokens: f64,
    pub sites: Arrays,
}

impl Covariance {
    /// The input second moment of the Linear whose HF weight is `weight`: `(n, values)`.
    pub fn of_linear(&self, naming: &Naming, weight: &str) -> Option<(usize, &[f64])> {
        let site = covariance_site(naming, weight)?;
        let shape = self.sites.shape(&site)?;
        Some((shape[0], self.sites.get(&site)?))
    }

    /// The input mean `E[x]` of the Linear whose HF weight is `weight`.
    pub fn mean_of_linear(&self, naming: &Naming, weight: &str) -> Option<&[f64]> {
        self.sites
            .get(&format!("{}.mean", covariance_site(naming, weight)?))
    }

    pub(super) fn to_arrays(&self) -> Arrays {
        let mut a = self.sites.clone();
        a.insert("tokens", vec![1], vec![self.tokens]);
        a
    }

    pub(super) fn from_arrays(mut a: Arrays) -> Option<Self> {
        let tokens = a.0.remove("tokens")?.1.first().copied()?;
        Some(Self { tokens, sites: a })
    }
}

/// Which statistics one sweep computes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    pub importance: bool,
    pub covariance: bool,
}

/// Accumulates `X^T X` and the sum of the rows of `X` for one site in f64.
struct Moment {
    n: usize,
    sum: Vec<f64>,
    rows: Vec<f64>,
}

impl Moment {
    fn new(n: usize) -> Self {
        Self {
            n,
            sum: vec![0.0; n * n],
            rows: vec![0.0; n],
        }
    }

    fn add(&mut self, x: Tensor<Cpu, 2>, mask: &Tensor<Cpu, 1>) -> Result<()> {
        // Padding rows are zeroed, so they add nothing.
        let x = x * mask.clone().unsqueeze_dim::<2>(1);
        let [_, n] = x.dims();
        let rows = x.clone().sum_dim(0).reshape([n]);
        let xtx = x.clone().transpose().matmul(x);
        for (acc, v) in self.sum.iter_mut().zip(host(xtx)?) {
            *acc += f64::from(v);
        }
        for (acc, v) in self.rows.iter_mut().zip(host(rows)?) {
            *acc += f64::from(v);
        }
        Ok(())
    }
}

/// One sweep of `model` over `batches`, computing what `want` asks for. `down_norms[l]`: the L2 norms of layer
/// `l`'s FFN output columns; `w_o[l]`: its attention output weight as `[heads, vo, hidden]`.
pub(super) fn sweep(
    model: &Bert<Cpu>,
    batches: &[EncodedBatch],
    want: Want,
    progress: &dyn Fn(usize),
) -> Result<(Option<Importance>, Option<Covariance>)> {
    let c = model.config.clone();
    let h = c.hidden_size;
    let device = *model.device();
    let layers = c.layers.len();
    let mut w_o = Vec::new();
    let mut down_norms = Vec::new();
    if want.importance {
        let n = c.naming();
        for (l, s) in c.layers.iter().enumerate() {
            let weight = |slot: Slot| format!("{}.weight", n.linear(l, slot));
            w_o.push(match model.linear(&weight(Slot::AttnOut)) {
                // weight_t is [vo_width, h]: rows are the inputs, head-major.
                Some(lin) if s.has_attention() => {
                    Some(
                        lin.weight_t
                            .clone()
                            .reshape([s.heads.len(), s.vo_head_dim, h]),
                    )
                }
                _ => None,
            });
            down_norms.push(match model.linear(&weight(Slot::Down)) {
                // [i, h]: one row per neuron (norms in f64).
                Some(lin) if s.has_ffn() => host(lin.weight_t.clone())?
                    .chunks(h)
                    .map(|row| {
                        row.iter()
                            .map(|v| f64::from(*v).powi(2))
                            .sum::<f64>()
                            .sqrt()
                    })
                    .collect(),
                _ => Vec::new(),
            });
        }
    }
    let mut heads: Vec<Vec<f64>> = c.layers.iter().map(|s| vec![0.0; s.heads.len()]).collect();
    let mut neurons: Vec<Vec<f64>> = c
        .layers
        .iter()
        .map(|s| vec![0.0; s.intermediate_size])
        .collect();
    let mut influence = vec![0f64; layers];
    let mut hidden = vec![0f64; h];
    let mut moments: Vec<(String, Moment)> = Vec::new();
    if want.covariance {
        for (l, s) in c.layers.iter().enumerate() {
            let p = format!("encoder.layer.{l}");
            let mut site =
                |name: &str, n: usize| moments.push((format!("{p}.{name}"), Moment::new(n)));
            if s.has_attention() {
                site("attention.input", h);
                site("attention.context", s.vo_width());
            }
            if s.has_ffn() {
                site("ffn.input", h);
                site("ffn.activation", s.intermediate_size);
            }
        }
    }
    let mut tokens = 0f64;
    for (done, batch) in batches.iter().enumerate() {
        let (b, t) = (batch.batch_size, batch.seq_len);
        let mask_values: Vec<f32> = batch.attention_mask.iter().map(|&m| m as f32).collect();
        tokens += mask_values.iter().map(|&m| f64::from(m)).sum::<f64>();
        let mask = Tensor::<Cpu, 1>::from_data(TensorData::new(mask_values, [b * t]), &device);
        let trace = model.trace(batch)?;
        let mut next = moments.iter_mut();
        for (l, tr) in trace.into_iter().enumerate() {
            let s = &c.layers[l];
            if want.covariance {
                let rows = |x: &Tensor<Cpu, 3>| {
                    let [_, _, n] = x.dims();
                    x.clone().reshape([b * t, n])
                };
                for x in [&tr.input, &tr.context, &tr.ffn_input, &tr.activation]
                    .into_iter()
                    .enumerate()
                    .filter(|(k, _)| {
                        if *k < 2 {
                            s.has_attention()
                        } else {
                            s.has_ffn()
                        }
                    })
                    .map(|(_, x)| x)
                {
                    if let (Some(x), Some((_, m))) = (x, next.next()) {
                        m.add(rows(x), &mask)?;
                    }
                }
            }
            if !want.importance {
                continue;
            }
            let states = [
                if l == 0 { tr.input.as_ref() } else { None },
                tr.ffn_input.as_ref(),
                Some(&tr.output),
            ];
            for x in states.into_iter().flatten() {
                let summed = (x.clone().reshape([b * t, h]).abs()
                    * mask.clone().unsqueeze_dim::<2>(1))
                .sum_dim(0)
                .reshape([h]);
                for (acc, v) in hidden.iter_mut().zip(host(summed)?) {
                    *acc += f64::from(v);
                }
            }
            if let (Some(ctx_t), Some(wo)) = (&tr.context, &w_o[l]) {
                let (nh, vo) = (s.heads.len(), s.vo_head_dim);
                // [nh, N, vo] x [nh, vo, h] -> [nh, N, h]: each head's contribution per token.
                let per_head = ctx_t
                    .clone()
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
            if let Some(act) = &tr.activation {
                let i = s.intermediate_size;
                let summed = (act.clone().reshape([b * t, i]).abs()
                    * mask.clone().unsqueeze_dim::<2>(1))
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
        progress(done + 1);
    }
    let tokens = tokens.max(1.0);
    let importance = want.importance.then(|| {
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
        Importance {
            heads,
            neurons,
            influence: influence.iter().map(|s| 1.0 - s / tokens).collect(),
            hidden: hidden.iter().map(|s| s / tokens).collect(),
        }
    });
    let covariance = want.covariance.then(|| {
        let mut sites = Arrays::default();
        for (name, m) in moments {
            sites.insert(
                format!("{name}.mean"),
                vec![m.n],
                m.rows.into_iter().map(|v| v / tokens).collect(),
            );
            sites.insert(
                name,
                vec![m.n, m.n],
                m.sum.into_iter().map(|v| v / tokens).collect(),
            );
        }
        Covariance { tokens, sites }
    });
    Ok((importance, covariance))
}

fn host<const D: usize>(t: Tensor<Cpu, D>) -> Result<Vec<f32>> {
    Ok(compressor_models::runtime::flat(t)?)
}
