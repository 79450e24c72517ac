//! The BERT-like encoders in burn, following transformers' `modeling_bert.py` operation by operation (with
//! RoBERTa's position ids, MPNet's relative attention bias and each family's classification head).

use burn::tensor::activation::{softmax, tanh};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::host::{HostAttention, HostBert, HostLayer, HostLinear, HostNorm, HostSub, Settings};
use crate::arch::{Activation, BertConfig, Head, LayerShape, ModelConfig, Pooling, PoolingMode};
use crate::batch::EncodedBatch;
use crate::error::{Error, Result};
use crate::family::{HeadAct, Slot};
use crate::quant::act::{ActMode, ActivationQuant, Site};
use crate::store::TensorStore;
use crate::tensor::transposed;

/// `y = x W^T + b`, with `W` kept transposed (`[in, out]`) for burn's matmul.
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    /// Canonical name of the HF weight (`...query.weight`).
    pub name: String,
    /// `[in, out]`
    pub weight_t: Tensor<B, 2>,
    /// `[out]`
    pub bias: Tensor<B, 1>,
    /// A low-rank weight `W = U V` stored as factors runs as two products, `(x V^T) U^T`: `(V^T [in, r], U^T
    /// [r, out])`. `weight_t` then holds the dense product for code that reads the weight; whoever replaces
    /// `weight_t` clears `factors`.
    pub factors: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
}

impl<B: Backend> Linear<B> {
    fn load(
        store: &TensorStore,
        module: &str,
        out_f: usize,
        in_f: usize,
        device: &B::Device,
        grad: &dyn Fn(&str) -> bool,
    ) -> Result<Self> {
        let name = format!("{module}.weight");
        let w = store.get_f32(&name, &[out_f, in_f])?;
        let weight_t = param(
            Tensor::from_data(
                TensorData::new(transposed(&w, out_f, in_f), [in_f, out_f]),
                device,
            ),
            grad(&name),
        );
        let factors = match store.stored(&name)? {
            crate::forms::Stored::LowRank(lr) => {
                let r = lr.rank();
                let u = lr.u().to_f32(&name)?;
                let v = lr.v().to_f32(&name)?;
                let v_t =
                    Tensor::from_data(TensorData::new(transposed(&v, r, in_f), [in_f, r]), device);
                let u_t = Tensor::from_data(
                    TensorData::new(transposed(&u, out_f, r), [r, out_f]),
                    device,
                );
                Some((v_t, u_t))
            }
            _ => None,
        };
        let bias_name = format!("{module}.bias");
        let b = store.get_f32(&bias_name, &[out_f])?;
        let bias = param(
            Tensor::from_data(TensorData::new(b, [out_f]), device),
            grad(&bias_name),
        );
        Ok(Self {
            name,
            weight_t,
            bias,
            factors,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let in_f = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        let [_, out_f] = self.weight_t.dims();
        let x = x.reshape([rows, in_f]);
        let xw = match &self.factors {
            Some((v_t, u_t)) => x.matmul(v_t.clone()).matmul(u_t.clone()),
            None => x.matmul(self.weight_t.clone()),
        };
        let y = xw + self.bias.clone().unsqueeze::<2>();
        let mut out = dims;
        out[D - 1] = out_f;
        y.reshape(out)
    }
}

/// LayerNorm over the last dimension with biased variance, as torch.
#[derive(Debug, Clone)]
pub struct LayerNorm<B: Backend> {
    pub gamma: Tensor<B, 1>,
    pub beta: Tensor<B, 1>,
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    fn load(
        store: &TensorStore,
        module: &str,
        h: usize,
        eps: f64,
        device: &B::Device,
        grad: &dyn Fn(&str) -> bool,
    ) -> Result<Self> {
        let g_name = format!("{module}.weight");
        let b_name = format!("{module}.bias");
        let gamma = param(
            Tensor::from_data(TensorData::new(store.get_f32(&g_name, &[h])?, [h]), device),
            grad(&g_name),
        );
        let beta = param(
            Tensor::from_data(TensorData::new(store.get_f32(&b_name, &[h])?, [h]), device),
            grad(&b_name),
        );
        Ok(Self { gamma, beta, eps })
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let (var, mean) = x.clone().var_mean_bias(2);
        let normed = (x - mean) / (var + self.eps).sqrt();
        normed * self.gamma.clone().unsqueeze::<3>() + self.beta.clone().unsqueeze::<3>()
    }

    /// The LayerNorm over the dimensions where `keep` (`[hidden]`, 0 or 1, `kept` ones) is 1, as the model with the
    /// others removed computes it; the removed dimensions come out as `beta`.
    fn forward_over(&self, x: Tensor<B, 3>, keep: &Tensor<B, 1>, kept: usize) -> Tensor<B, 3> {
        let keep = keep.clone().unsqueeze::<3>();
        let n = kept.max(1) as f64;
        let mean = (x.clone() * keep.clone()).sum_dim(2) / n;
        let centered = (x - mean) * keep;
        let var = centered.clone().powi_scalar(2).sum_dim(2) / n;
        let normed = centered / (var + self.eps).sqrt();
        normed * self.gamma.clone().unsqueeze::<3>() + self.beta.clone().unsqueeze::<3>()
    }
}

/// Multiplicative masks on the structures of the encoder (VIB masks of `vib-prune`, or their deterministic
/// values): each is `[rows, units]` with `rows` 1 (one mask for the batch) or the batch size (one sample per
/// input). Where a mask is `None` the structure is unmasked.
///
/// - `hidden` scales the residual stream: the embeddings' output, every sublayer's output before the residual
///   addition, every LayerNorm's output (so a zero dimension stays zero all the way) and the pooler's output
///   entering the classifier.
/// - A layer's `heads` scale each head's context before the output projection; `neurons` the FFN activation
///   before the down projection; `attention` and `ffn` each sublayer's whole output (bias included).
#[derive(Debug, Clone)]
pub struct Masks<B: Backend> {
    pub hidden: Option<Tensor<B, 2>>,
    /// Hard hidden masks: the dimensions kept (`true`); every LayerNorm then normalises over those only, as the
    /// model with the others removed does. `None`: LayerNorms normalise over every dimension.
    pub hidden_keep: Option<Vec<bool>>,
    pub layers: Vec<LayerMasks<B>>,
}

/// The masks of one encoder layer (see [`Masks`]).
#[derive(Debug, Clone)]
pub struct LayerMasks<B: Backend> {
    pub heads: Option<Tensor<B, 2>>,
    pub neurons: Option<Tensor<B, 2>>,
    pub attention: Option<Tensor<B, 2>>,
    pub ffn: Option<Tensor<B, 2>>,
}

impl<B: Backend> LayerMasks<B> {
    /// No mask on any structure of the layer.
    pub fn none() -> Self {
        Self {
            heads: None,
            neurons: None,
            attention: None,
            ffn: None,
        }
    }
}

/// `x [b, .., n]` times `mask [rows, n]` (rows 1 or b), broadcast over the middle dimensions.
fn masked<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    mask: Option<&Tensor<B, 2>>,
) -> Tensor<B, D> {
    let Some(m) = mask else {
        return x;
    };
    let [rows, n] = m.dims();
    let mut shape = [1usize; D];
    shape[0] = rows;
    shape[D - 1] = n;
    x * m.clone().reshape(shape)
}

fn param<B: Backend, const D: usize>(t: Tensor<B, D>, grad: bool) -> Tensor<B, D> {
    if grad {
        t.require_grad()
    } else {
        t
    }
}

/// The attention projections of a layer that keeps at least one head.
#[derive(Debug, Clone)]
struct Attention<B: Backend> {
    query: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    attn_out: Linear<B>,
}

/// The FFN projections of a layer that keeps at least one neuron.
#[derive(Debug, Clone)]
struct Ffn<B: Backend> {
    up: Linear<B>,
    down: Linear<B>,
}

/// A sublayer (attention or FFN) that is either kept or dropped. A dropped one keeps its output projection's bias
/// (`attention.output.dense.bias`, `output.dense.bias`), which is then all it adds to the residual stream.
#[derive(Debug, Clone)]
enum Sublayer<T, B: Backend> {
    Kept(T),
    Dropped { bias: Tensor<B, 1> },
}

impl<T, B: Backend> Sublayer<T, B> {
    fn kept(&self) -> Option<&T> {
        match self {
            Sublayer::Kept(t) => Some(t),
            Sublayer::Dropped { .. } => None,
        }
    }

    fn kept_mut(&mut self) -> Option<&mut T> {
        match self {
            Sublayer::Kept(t) => Some(t),
            Sublayer::Dropped { .. } => None,
        }
    }
}

/// One encoder layer, shaped as its [`LayerShape`] says.
#[derive(Debug, Clone)]
struct Layer<B: Backend> {
    shape: LayerShape,
    attention: Sublayer<Attention<B>, B>,
    attn_norm: LayerNorm<B>,
    ffn: Sublayer<Ffn<B>, B>,
    out_norm: LayerNorm<B>,
}

impl<B: Backend> Layer<B> {
    fn linears(&self) -> impl Iterator<Item = &Linear<B>> {
        let a = self
            .attention
            .kept()
            .into_iter()
            .flat_map(|a| [&a.query, &a.key, &a.value, &a.attn_out]);
        a.chain(self.ffn.kept().into_iter().flat_map(|f| [&f.up, &f.down]))
    }

    fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear<B>> {
        let a = self
            .attention
            .kept_mut()
            .into_iter()
            .flat_map(|a| [&mut a.query, &mut a.key, &mut a.value, &mut a.attn_out]);
        a.chain(
            self.ffn
                .kept_mut()
                .into_iter()
                .flat_map(|f| [&mut f.up, &mut f.down]),
        )
    }
}

/// One encoder layer's activations on a batch (see [`Bert::trace`]); the inner ones are `None` for a dropped
/// sublayer, and `input` is `None` outside a trace.
#[derive(Debug, Clone)]
pub struct LayerTrace<B: Backend> {
    pub input: Option<Tensor<B, 3>>,
    /// `[batch, seq, heads * vo_head_dim]`: the heads' outputs, head-major, entering `attention.output.dense`.
    pub context: Option<Tensor<B, 3>>,
    /// `[batch, seq, hidden]`: the attention sublayer's normalised output, entering `intermediate.dense`.
    pub ffn_input: Option<Tensor<B, 3>>,
    /// `[batch, seq, intermediate]`: the activation entering `output.dense`.
    pub activation: Option<Tensor<B, 3>>,
    pub output: Tensor<B, 3>,
}

/// A computation from a model and a batch to one host row per input.
type RowsFn<B> = dyn Fn(&Bert<B>, &EncodedBatch) -> Result<Vec<Vec<f32>>> + Sync;

/// A BERT encoder with its optional pooler and classification head.
#[derive(Debug, Clone)]
pub struct Bert<B: Backend> {
    pub config: BertConfig,
    pub pooling: Pooling,
    /// Compose GELU from `erf` so that second-order autodiff (Hessian-vector products) is exact; burn's fused
    /// GELU is faster but its backward is not differentiable again. Off by default.
    pub exact_second_order: bool,
    /// Activation quantization (static scales) or calibration; `None` runs in float.
    pub act: Option<std::sync::Arc<ActMode>>,
    /// Let [`Bert::embed`] and [`Bert::classify`] run on the host kernels (`host.rs`) on the CPU backends, with
    /// `act` applied at the same points. On by default; off runs them through burn's tensor ops (the reference the
    /// host kernels are tested against).
    pub host_kernels: bool,
    /// The parameters copied for the host kernels, made on first use; [`Bert::linear_mut`] clears it.
    host: std::sync::OnceLock<std::sync::Arc<HostBert>>,
    /// Structure masks ([`Bert::set_masks`]); a masked model runs on burn's tensor ops.
    masks: Option<Masks<B>>,
    /// `hidden_keep` of the masks as a tensor, with its count.
    keep: Option<(Tensor<B, 1>, usize)>,
    word: Tensor<B, 2>,
    position: Tensor<B, 2>,
    /// `None` in families without token types (their type ids are ignored).
    token_type: Option<Tensor<B, 2>>,
    /// MPNet's relative position bias table `[buckets, heads]` (host values; it is not trained).
    relative: Option<Vec<f32>>,
    emb_norm: LayerNorm<B>,
    layers: Vec<Layer<B>>,
    /// The dense layer on the first token's state (the pooler, or the classifier's own) and its activation.
    pooler: Option<Linear<B>>,
    head_act: HeadAct,
    classifier: Option<Linear<B>>,
    device: B::Device,
}

/// What every layer's attention adds to its scores: the padding mask `[b, 1, 1, t]` and MPNet's relative position
/// bias `[1, heads, t, t]` (all the original heads; a layer takes its kept ones).
struct ScoreBias<B: Backend> {
    additive: Tensor<B, 4>,
    relative: Option<Tensor<B, 4>>,
}

impl<B: Backend> Bert<B> {
    /// Build the model from a validated store. No parameter tracks gradients.
    pub fn load(
        store: &TensorStore,
        config: &ModelConfig,
        pooling: Pooling,
        device: &B::Device,
    ) -> Result<Self> {
        Self::load_with_grad(store, config, pooling, device, &|_| false)
    }

    /// Build the model; parameters whose canonical name satisfies `grad` track gradients (autodiff backends).
    pub fn load_with_grad(
        store: &TensorStore,
        config: &ModelConfig,
        pooling: Pooling,
        device: &B::Device,
        grad: &dyn Fn(&str) -> bool,
    ) -> Result<Self> {
        let c = config.bert().clone();
        let n = c.naming();
        let h = c.hidden_size;
        let table = |name: &str, rows: usize| -> Result<Tensor<B, 2>> {
            let v = store.get_f32(name, &[rows, h])?;
            Ok(param(
                Tensor::from_data(TensorData::new(v, [rows, h]), device),
                grad(name),
            ))
        };
        let word = table(&format!("{}.weight", n.word), c.vocab_size)?;
        let position = table(&format!("{}.weight", n.position), c.max_position_embeddings)?;
        let token_type = match n.token_type {
            Some(t) => Some(table(&format!("{t}.weight"), c.type_vocab_size)?),
            None => None,
        };
        let relative = match n.relative_bias {
            Some(r) => Some(store.get_f32(
                &format!("{r}.weight"),
                &[c.relative_buckets, c.num_attention_heads],
            )?),
            None => None,
        };
        let emb_norm = LayerNorm::load(store, n.emb_norm, h, c.layer_norm_eps, device, grad)?;
        let mut layers = Vec::with_capacity(c.layers.len());
        for (l, shape) in c.layers.iter().enumerate() {
            let p = n.layer(l);
            let lin = |s: Slot, o: usize, i: usize| {
                Linear::load(store, &n.linear(l, s), o, i, device, grad)
            };
            let bias = |s: Slot| -> Result<Tensor<B, 1>> {
                let name = format!("{}.bias", n.linear(l, s));
                let b = store.get_f32(&name, &[h])?;
                Ok(param(
                    Tensor::from_data(TensorData::new(b, [h]), device),
                    grad(&name),
                ))
            };
            let norm = |m: &str| {
                LayerNorm::load(
                    store,
                    &format!("{p}.{m}"),
                    h,
                    c.layer_norm_eps,
                    device,
                    grad,
                )
            };
            let (qk, vo, i) = (shape.qk_width(), shape.vo_width(), shape.intermediate_size);
            let attention = if shape.has_attention() {
                Sublayer::Kept(Attention {
                    query: lin(Slot::Query, qk, h)?,
                    key: lin(Slot::Key, qk, h)?,
                    value: lin(Slot::Value, vo, h)?,
                    attn_out: lin(Slot::AttnOut, h, vo)?,
                })
            } else {
                Sublayer::Dropped {
                    bias: bias(Slot::AttnOut)?,
                }
            };
            let ffn = if shape.has_ffn() {
                Sublayer::Kept(Ffn {
                    up: lin(Slot::Up, i, h)?,
                    down: lin(Slot::Down, h, i)?,
                })
            } else {
                Sublayer::Dropped {
                    bias: bias(Slot::Down)?,
                }
            };
            layers.push(Layer {
                shape: shape.clone(),
                attention,
                attn_norm: norm(n.attn_norm)?,
                ffn,
                out_norm: norm(n.out_norm)?,
            });
        }
        let (pooler, head_act) = match config.head_dense() {
            Some((dense, act)) if store.contains(&format!("{dense}.weight")) => {
                (Some(Linear::load(store, &dense, h, h, device, grad)?), act)
            }
            _ => (None, HeadAct::Tanh),
        };
        let classifier = match &c.head {
            Head::SequenceClassification { num_labels, .. } => Some(Linear::load(
                store,
                n.head_out,
                *num_labels,
                h,
                device,
                grad,
            )?),
            Head::None => None,
        };
        Ok(Self {
            config: c,
            pooling,
            exact_second_order: false,
            act: None,
            host_kernels: true,
            host: std::sync::OnceLock::new(),
            masks: None,
            keep: None,
            word,
            position,
            token_type,
            relative,
            emb_norm,
            layers,
            pooler,
            head_act,
            classifier,
            device: device.clone(),
        })
    }

    /// Mask the encoder's structures from now on (`None` removes the masks). Every mask must have as many units as
    /// its structure in this model and 1 or `rows` rows; the error names the first that does not.
    pub fn set_masks(&mut self, masks: Option<Masks<B>>) -> Result<()> {
        let Some(m) = masks else {
            self.masks = None;
            self.keep = None;
            return Ok(());
        };
        if m.layers.len() != self.layers.len() {
            return Err(Error::Runtime(format!(
                "masks for {} layers on a model of {}",
                m.layers.len(),
                self.layers.len()
            )));
        }
        let check = |what: String, t: &Option<Tensor<B, 2>>, n: usize| -> Result<()> {
            match t.as_ref().map(|t| t.dims()) {
                Some([_, u]) if u != n => Err(Error::Runtime(format!(
                    "the {what} mask has {u} units; the model has {n}"
                ))),
                _ => Ok(()),
            }
        };
        let h = self.config.hidden_size;
        check("hidden".into(), &m.hidden, h)?;
        for (l, (lm, layer)) in m.layers.iter().zip(&self.layers).enumerate() {
            check(
                format!("layer {l} heads"),
                &lm.heads,
                layer.shape.heads.len(),
            )?;
            check(
                format!("layer {l} neurons"),
                &lm.neurons,
                layer.shape.intermediate_size,
            )?;
            check(format!("layer {l} attention"), &lm.attention, 1)?;
            check(format!("layer {l} ffn"), &lm.ffn, 1)?;
        }
        self.keep = match &m.hidden_keep {
            Some(k) if k.len() != h => {
                return Err(Error::Runtime(format!(
                    "the kept hidden dimensions have {} entries; the model has {h}",
                    k.len()
                )))
            }
            Some(k) => {
                let values: Vec<f32> = k.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
                Some((
                    Tensor::from_data(TensorData::new(values, [h]), &self.device),
                    k.iter().filter(|&&b| b).count(),
                ))
            }
            None => None,
        };
        self.masks = Some(m);
        Ok(())
    }

    /// A LayerNorm of this model, over the kept hidden dimensions when hard hidden masks are set.
    fn norm(&self, n: &LayerNorm<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.keep {
            Some((keep, kept)) => n.forward_over(x, keep, *kept),
            None => n.forward(x),
        }
    }

    fn hidden_mask(&self) -> Option<&Tensor<B, 2>> {
        self.masks.as_ref().and_then(|m| m.hidden.as_ref())
    }

    fn layer_masks(&self, l: usize) -> Option<&LayerMasks<B>> {
        self.masks.as_ref().map(|m| &m.layers[l])
    }

    /// Every activation quantization point of this model with the number of scales it takes for `block_size`.
    pub fn activation_points(&self, block_size: usize) -> Vec<(String, usize)> {
        let h = self.config.hidden_size;
        let blocks = |n: usize| n.div_ceil(block_size.max(1));
        let mut out = vec![
            (Site::EmbNormIn.name(None), blocks(h)),
            (Site::EmbNormOut.name(None), blocks(h)),
        ];
        let in_layers =
            |s: &&Site| !matches!(s, Site::EmbNormIn | Site::EmbNormOut | Site::PoolerOut);
        for (l, layer) in self.layers.iter().enumerate() {
            let s = &layer.shape;
            for &site in Site::ALL.iter().filter(in_layers) {
                let n = match site {
                    Site::Q | Site::K if s.has_attention() => blocks(s.qk_width()),
                    Site::V | Site::Context if s.has_attention() => blocks(s.vo_width()),
                    Site::Scores | Site::Probs if s.has_attention() => 1,
                    Site::Q | Site::K | Site::V | Site::Context | Site::Scores | Site::Probs => {
                        continue
                    }
                    Site::GeluIn | Site::GeluOut if s.has_ffn() => blocks(s.intermediate_size),
                    Site::GeluIn | Site::GeluOut => continue,
                    _ => blocks(h),
                };
                out.push((site.name(Some(l)), n));
            }
        }
        if self.pooler.is_some() && self.classifier.is_some() {
            out.push((Site::PoolerOut.name(None), blocks(h)));
        }
        out
    }

    /// Quantize activations with `table` from now on. Every point must be one of this model's, with as many scales
    /// as its width needs; the error names the first that is not.
    pub fn set_activation_quant(&mut self, table: ActivationQuant) -> Result<()> {
        let expected: std::collections::BTreeMap<String, usize> = self
            .activation_points(table.block_size)
            .into_iter()
            .collect();
        for (name, p) in &table.points {
            match expected.get(name) {
                None => {
                    return Err(Error::Runtime(format!(
                        "activation point `{name}` does not exist in this model"
                    )))
                }
                Some(&n) if n != p.scales.len() => {
                    return Err(Error::Runtime(format!(
                        "activation point `{name}` has {} scales; blocks of {} need {n}",
                        p.scales.len(),
                        table.block_size
                    )))
                }
                Some(_) => {}
            }
        }
        self.act = Some(std::sync::Arc::new(ActMode::Quantize(table)));
        Ok(())
    }

    /// Fake-quantize (or observe) `x` at quantization point `site` of `layer`.
    fn aq<const D: usize>(
        &self,
        site: Site,
        layer: Option<usize>,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let Some(mode) = &self.act else {
            return x;
        };
        let name = site.name(layer);
        match &**mode {
            ActMode::Observe(observer) => {
                let last = x.dims()[D - 1];
                if let (Ok(values), Ok(mut o)) = (super::flat(x.clone()), observer.lock()) {
                    o.observe(&name, &values, last, site.per_tensor());
                }
                x
            }
            ActMode::Quantize(table) => {
                let Some(p) = table.points.get(&name) else {
                    return x;
                };
                let (qmin, qmax) = table.range(p.unsigned);
                if let [s] = p.scales[..] {
                    let s = f64::from(s);
                    return (x / s).round().clamp(qmin, qmax) * s;
                }
                let last = x.dims()[D - 1];
                let per: Vec<f32> = (0..last)
                    .map(|j| p.scales[(j / table.block_size).min(p.scales.len() - 1)])
                    .collect();
                let s = Tensor::<B, 1>::from_data(TensorData::new(per, [last]), &self.device)
                    .unsqueeze::<D>();
                (x / s.clone()).round().clamp(qmin, qmax) * s
            }
        }
    }

    /// The Linear whose HF weight is `name` (e.g. `encoder.layer.0.attention.self.query.weight`).
    pub fn linear(&self, name: &str) -> Option<&Linear<B>> {
        self.layers
            .iter()
            .flat_map(Layer::linears)
            .chain(self.pooler.iter())
            .chain(self.classifier.iter())
            .find(|lin| lin.name == name)
    }

    /// The Linear whose HF weight is `name`, to replace its parameters (sensitivity analysis perturbs or re-tracks
    /// one weight at a time).
    pub fn linear_mut(&mut self, name: &str) -> Option<&mut Linear<B>> {
        self.host = std::sync::OnceLock::new();
        self.layers
            .iter_mut()
            .flat_map(Layer::linears_mut)
            .chain(self.pooler.iter_mut())
            .chain(self.classifier.iter_mut())
            .find(|lin| lin.name == name)
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    fn ints(&self, values: &[i64], batch: &EncodedBatch) -> Tensor<B, 2, Int> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [batch.batch_size, batch.seq_len]),
            &self.device,
        )
    }

    /// Check ids against the embedding tables before indexing.
    fn check_batch(&self, batch: &EncodedBatch) -> Result<()> {
        let c = &self.config;
        let n = batch.batch_size * batch.seq_len;
        if batch.input_ids.len() != n
            || batch.token_type_ids.len() != n
            || batch.attention_mask.len() != n
        {
            return Err(Error::Runtime(format!(
                "batch of {}x{} has {} ids, {} type ids and {} mask values",
                batch.batch_size,
                batch.seq_len,
                batch.input_ids.len(),
                batch.token_type_ids.len(),
                batch.attention_mask.len()
            )));
        }
        if batch.batch_size > 0 && batch.seq_len == 0 {
            return Err(Error::Runtime(format!(
                "batch of {} rows has no tokens (sequence length 0); every input needs at least one",
                batch.batch_size
            )));
        }
        if batch.seq_len > c.max_sequence_length() {
            return Err(Error::Runtime(match c.position_padding() {
                None => format!(
                    "sequence length {} exceeds max_position_embeddings {}; truncate the input",
                    batch.seq_len, c.max_position_embeddings
                ),
                Some(_) => format!(
                    "sequence length {} exceeds the {} positions of max_position_embeddings {} (positions start after the padding id); truncate the input",
                    batch.seq_len,
                    c.max_sequence_length(),
                    c.max_position_embeddings
                ),
            }));
        }
        if let Some(bad) = batch
            .input_ids
            .iter()
            .find(|&&id| id < 0 || id as usize >= c.vocab_size)
        {
            return Err(Error::Runtime(format!(
                "token id {bad} is outside the vocabulary (size {})",
                c.vocab_size
            )));
        }
        if let Some(bad) = batch
            .token_type_ids
            .iter()
            .filter(|_| c.type_vocab_size > 0)
            .find(|&&id| id < 0 || id as usize >= c.type_vocab_size)
        {
            return Err(Error::Runtime(format!(
                "token type id {bad} is outside type_vocab_size {}",
                c.type_vocab_size
            )));
        }
        Ok(())
    }

    /// The last hidden state `[batch, seq, hidden]`.
    pub fn encode(&self, batch: &EncodedBatch) -> Result<Tensor<B, 3>> {
        let x = self.embeddings(batch)?;
        self.encode_from(batch, 0, x)
    }

    /// The hidden state entering each encoder layer, then the last hidden state (`[batch, seq, hidden]`;
    /// `layers + 1` entries, entry 0 is the embeddings' output). With [`Bert::encode_from`], later computations
    /// can start at a layer.
    pub fn layer_inputs(&self, batch: &EncodedBatch) -> Result<Vec<Tensor<B, 3>>> {
        // (Without layers, the tensor path returns the embeddings.)
        if let Some(traces) = self.host_trace(batch)?.filter(|t| !t.is_empty()) {
            let last = traces.last().map(|t| t.output.clone());
            let mut inputs: Vec<Tensor<B, 3>> =
                traces.into_iter().filter_map(|t| t.input).collect();
            inputs.extend(last);
            return Ok(inputs);
        }
        let mut x = self.embeddings(batch)?;
        let bias = self.score_bias(batch);
        let mut inputs = Vec::with_capacity(self.layers.len() + 1);
        for l in 0..self.layers.len() {
            inputs.push(x.clone());
            x = self.layer_forward(l, x, &bias, batch);
        }
        inputs.push(x);
        Ok(inputs)
    }

    /// The number of encoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The last hidden state from `x`, the hidden state entering layer `start` (`start` = the number of layers
    /// returns `x`).
    pub fn encode_from(
        &self,
        batch: &EncodedBatch,
        start: usize,
        x: Tensor<B, 3>,
    ) -> Result<Tensor<B, 3>> {
        self.check_batch(batch)?;
        let [b, t, h] = x.dims();
        if [b, t, h] != [batch.batch_size, batch.seq_len, self.config.hidden_size] {
            return Err(Error::Runtime(format!(
                "hidden state of {:?} for a batch of {}x{} (hidden {})",
                [b, t, h],
                batch.batch_size,
                batch.seq_len,
                self.config.hidden_size
            )));
        }
        let bias = self.score_bias(batch);
        let mut x = x;
        for l in start..self.layers.len() {
            x = self.layer_forward(l, x, &bias, batch);
        }
        Ok(x)
    }

    /// The embeddings' output (word + type + position, LayerNorm).
    fn embeddings(&self, batch: &EncodedBatch) -> Result<Tensor<B, 3>> {
        self.check_batch(batch)?;
        let c = &self.config;
        let (b, t, h) = (batch.batch_size, batch.seq_len, c.hidden_size);
        let ids = self.ints(&batch.input_ids, batch).reshape([b * t]);
        let positions = self
            .ints(&batch.position_ids(c.position_padding()), batch)
            .reshape([b * t]);
        let words = self.word.clone().select(0, ids).reshape([b, t, h]);
        let positions = self
            .position
            .clone()
            .select(0, positions)
            .reshape([b, t, h]);
        let sum = match &self.token_type {
            Some(table) => {
                let types = self.ints(&batch.token_type_ids, batch).reshape([b * t]);
                words + table.clone().select(0, types).reshape([b, t, h]) + positions
            }
            None => words + positions,
        };
        let e = self.aq(Site::EmbNormIn, None, sum);
        let e = masked(self.norm(&self.emb_norm, e), self.hidden_mask());
        Ok(self.aq(Site::EmbNormOut, None, e))
    }

    /// What the attention adds to its scores: the additive mask `[b, 1, 1, t]` (0 for tokens, the most negative
    /// f32 for padding, as transformers) and MPNet's relative position bias.
    fn score_bias(&self, batch: &EncodedBatch) -> ScoreBias<B> {
        let (b, t) = (batch.batch_size, batch.seq_len);
        let mask = self.ints(&batch.attention_mask, batch).equal_elem(0);
        let additive = Tensor::<B, 2>::zeros([b, t], &self.device)
            .mask_fill(mask, f32::MIN)
            .reshape([b, 1, 1, t]);
        let heads = self.config.num_attention_heads;
        let relative = self.relative.as_ref().map(|table| {
            Tensor::from_data(
                TensorData::new(super::relative_bias(table, heads, t), [1, heads, t, t]),
                &self.device,
            )
        });
        ScoreBias { additive, relative }
    }

    /// Encoder layer `l` on `x`.
    fn layer_forward(
        &self,
        l: usize,
        x: Tensor<B, 3>,
        bias: &ScoreBias<B>,
        batch: &EncodedBatch,
    ) -> Tensor<B, 3> {
        self.layer_traced(l, x, bias, batch, false).output
    }

    /// Per encoder layer, what the analyses measure: the layer's input and output and the input of each Linear
    /// (the attention context entering the output projection, the FFN input and its activation).
    pub fn trace(&self, batch: &EncodedBatch) -> Result<Vec<LayerTrace<B>>> {
        if let Some(traces) = self.host_trace(batch)? {
            return Ok(traces);
        }
        let mut x = self.embeddings(batch)?;
        let bias = self.score_bias(batch);
        let mut out = Vec::with_capacity(self.layers.len());
        for l in 0..self.layers.len() {
            let t = self.layer_traced(l, x, &bias, batch, true);
            x = t.output.clone();
            out.push(t);
        }
        Ok(out)
    }

    /// Encoder layer `l` on `x`, keeping its inner activations when `keep` is set.
    fn layer_traced(
        &self,
        l: usize,
        x: Tensor<B, 3>,
        bias: &ScoreBias<B>,
        batch: &EncodedBatch,
        keep: bool,
    ) -> LayerTrace<B> {
        let input = if keep { Some(x.clone()) } else { None };
        let mut context = None;
        let mut activation_in = None;
        let c = &self.config;
        let (b, t) = (batch.batch_size, batch.seq_len);
        // The original head width sets the score scale, whatever width a pruned or factorized head keeps.
        let scale = 1.0 / (c.head_dim() as f64).sqrt();
        let layer = &self.layers[l];
        let s = &layer.shape;
        let (nh, qk_d, vo_d) = (s.heads.len(), s.qk_head_dim, s.vo_head_dim);
        let lm = self.layer_masks(l);
        let hm = self.hidden_mask();
        // A sublayer's output, masked by its sublayer mask and the hidden mask.
        let sub_out = |y: Tensor<B, 3>, m: Option<&Tensor<B, 2>>| masked(masked(y, m), hm);
        let l = Some(l);
        let attended = match &layer.attention {
            Sublayer::Kept(att) => {
                let split = |y: Tensor<B, 3>, d: usize| y.reshape([b, t, nh, d]).swap_dims(1, 2);
                // Scaling q (b*t*h values) instead of the scores (b*nh*t*t) is the same product, cheaper.
                let q = split(
                    self.aq(Site::Q, l, att.query.forward(x.clone()) * scale),
                    qk_d,
                );
                let k = split(self.aq(Site::K, l, att.key.forward(x.clone())), qk_d);
                let v = split(self.aq(Site::V, l, att.value.forward(x.clone())), vo_d);
                let mut scores = q.matmul(k.swap_dims(2, 3));
                if let Some(relative) = &bias.relative {
                    let heads: Vec<i64> = s.heads.iter().map(|&h| h as i64).collect();
                    let heads =
                        Tensor::<B, 1, Int>::from_data(TensorData::new(heads, [nh]), &self.device);
                    scores = scores + relative.clone().select(1, heads);
                }
                // Scores are quantized before the mask is added, so padding stays masked.
                let scores = self.aq(Site::Scores, l, scores) + bias.additive.clone();
                let probs = self.aq(Site::Probs, l, softmax(scores, 3));
                let heads = probs.matmul(v);
                let heads = match lm.and_then(|m| m.heads.as_ref()) {
                    Some(z) => {
                        let rows = z.dims()[0];
                        heads * z.clone().reshape([rows, nh, 1, 1])
                    }
                    None => heads,
                };
                let ctx = heads.swap_dims(1, 2).reshape([b, t, nh * vo_d]);
                let ctx = self.aq(Site::Context, l, ctx);
                if keep {
                    context = Some(ctx.clone());
                }
                sub_out(
                    att.attn_out.forward(ctx),
                    lm.and_then(|m| m.attention.as_ref()),
                ) + x
            }
            Sublayer::Dropped { bias } => {
                sub_out(
                    bias.clone().unsqueeze::<3>(),
                    lm.and_then(|m| m.attention.as_ref()),
                ) + x
            }
        };
        let a = self.aq(Site::AttnNormIn, l, attended);
        let a = masked(self.norm(&layer.attn_norm, a), hm);
        let a = self.aq(Site::AttnNormOut, l, a);
        let ffn_input = if keep { Some(a.clone()) } else { None };
        let y = match &layer.ffn {
            Sublayer::Kept(ffn) => {
                let up = self.aq(Site::GeluIn, l, ffn.up.forward(a.clone()));
                let up = self.aq(
                    Site::GeluOut,
                    l,
                    activation(up, c.hidden_act, self.exact_second_order),
                );
                let up = masked(up, lm.and_then(|m| m.neurons.as_ref()));
                if keep {
                    activation_in = Some(up.clone());
                }
                sub_out(ffn.down.forward(up), lm.and_then(|m| m.ffn.as_ref())) + a
            }
            Sublayer::Dropped { bias } => {
                sub_out(
                    bias.clone().unsqueeze::<3>(),
                    lm.and_then(|m| m.ffn.as_ref()),
                ) + a
            }
        };
        let y = self.aq(Site::FfnNormIn, l, y);
        let y = masked(self.norm(&layer.out_norm, y), hm);
        LayerTrace {
            input,
            context,
            ffn_input,
            activation: activation_in,
            output: self.aq(Site::FfnNormOut, l, y),
        }
    }

    /// The sentence embedding the checkpoint declares (mean / CLS / max pooling, optional L2 normalisation).
    pub fn pool(&self, hidden: Tensor<B, 3>, batch: &EncodedBatch) -> Tensor<B, 2> {
        let [b, t, h] = hidden.dims();
        let pooled = match self.pooling.mode {
            PoolingMode::Cls => hidden.narrow(1, 0, 1).reshape([b, h]),
            PoolingMode::Mean => {
                let mask = self
                    .ints(&batch.attention_mask, batch)
                    .float()
                    .reshape([b, t, 1]);
                let summed = (hidden * mask.clone()).sum_dim(1).reshape([b, h]);
                let counts = mask.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
                summed / counts
            }
            PoolingMode::Max => {
                let pad: Tensor<B, 3, Bool> = self
                    .ints(&batch.attention_mask, batch)
                    .equal_elem(0)
                    .reshape([b, t, 1])
                    .expand([b, t, h]);
                hidden.mask_fill(pad, -1e9).max_dim(1).reshape([b, h])
            }
        };
        if self.pooling.normalize {
            l2_normalize(pooled)
        } else {
            pooled
        }
    }

    /// `BertPooler`: tanh(Linear(hidden[:, 0])) (the classifier's own dense layer and activation in the other
    /// families: RoBERTa's `classifier.dense`, DistilBERT's `pre_classifier` with ReLU). Errors when the
    /// checkpoint has none.
    pub fn pooler_output(&self, hidden: Tensor<B, 3>) -> Result<Tensor<B, 2>> {
        let pooler = self.pooler.as_ref().ok_or_else(|| {
            Error::Runtime("the checkpoint has no pooler (pooler.dense.*)".into())
        })?;
        let [b, _, h] = hidden.dims();
        let y = pooler.forward(hidden.narrow(1, 0, 1).reshape([b, h]));
        Ok(match self.head_act {
            HeadAct::Tanh => tanh(y),
            HeadAct::Relu => burn::tensor::activation::relu(y),
        })
    }

    /// Classifier logits `[batch, num_labels]` (dropout is identity at inference).
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Result<Tensor<B, 2>> {
        let classifier = self.classifier.as_ref().ok_or_else(|| {
            Error::Runtime("the checkpoint has no classification head (BertModel)".into())
        })?;
        // The pooler's outputs are the residual stream's dimensions too (a hidden mask removes its rows).
        let pooled = masked(self.pooler_output(hidden)?, self.hidden_mask());
        let pooled = self.aq(Site::PoolerOut, None, pooled);
        Ok(classifier.forward(pooled))
    }

    /// Sentence embeddings of a batch, on the host.
    pub fn embed(&self, batch: &EncodedBatch) -> Result<Vec<Vec<f32>>>
    where
        Self: Sync,
    {
        if let Some((host, mode)) = self.host()? {
            self.check_batch(batch)?;
            return Ok(host.embed(&self.host_settings(), batch, mode));
        }
        self.by_row_groups(batch, &|m, b| super::rows(m.pool(m.encode(b)?, b)))
    }

    /// Classifier logits of a batch, on the host.
    pub fn classify(&self, batch: &EncodedBatch) -> Result<Vec<Vec<f32>>>
    where
        Self: Sync,
    {
        if let Some((host, mode)) = self.host()? {
            self.check_batch(batch)?;
            return host.classify(&self.host_settings(), batch, mode);
        }
        self.by_row_groups(batch, &|m, b| super::rows(m.logits(m.encode(b)?)?))
    }

    /// The host kernels' copy of the parameters and what they do at the activation points (quantize or observe),
    /// when they run this model: on a CPU backend (with or without autodiff: embeddings and logits come back as
    /// host rows either way), unless turned off.
    #[allow(clippy::type_complexity)]
    fn host(&self) -> Result<Option<(std::sync::Arc<HostBert>, Option<&ActMode>)>> {
        use std::any::TypeId;
        let cpu = TypeId::of::<B>() == TypeId::of::<super::Cpu>()
            || TypeId::of::<B>() == TypeId::of::<super::CpuAutodiff>();
        if !cpu || !self.host_kernels || self.masks.is_some() {
            return Ok(None);
        }
        let mode = self.act.as_deref();
        if let Some(h) = self.host.get() {
            return Ok(Some((h.clone(), mode)));
        }
        let made = std::sync::Arc::new(self.host_copy()?);
        Ok(Some((self.host.get_or_init(|| made).clone(), mode)))
    }

    /// [`Bert::trace`] on the host kernels, for the CPU backend without autodiff (where no graph is wanted).
    fn host_trace(&self, batch: &EncodedBatch) -> Result<Option<Vec<LayerTrace<B>>>> {
        if std::any::TypeId::of::<B>() != std::any::TypeId::of::<super::Cpu>() {
            return Ok(None);
        }
        let Some((host, mode)) = self.host()? else {
            return Ok(None);
        };
        self.check_batch(batch)?;
        let (b, t) = (batch.batch_size, batch.seq_len);
        let tensor = |v: Vec<f32>| -> Tensor<B, 3> {
            let n = v.len() / (b * t).max(1);
            Tensor::from_data(TensorData::new(v, [b, t, n]), &self.device)
        };
        Ok(Some(
            host.trace(&self.host_settings(), batch, mode)
                .into_iter()
                .map(|tr| LayerTrace {
                    input: Some(tensor(tr.input)),
                    context: tr.context.map(tensor),
                    ffn_input: Some(tensor(tr.ffn_input)),
                    activation: tr.activation.map(tensor),
                    output: tensor(tr.output),
                })
                .collect(),
        ))
    }

    /// The parameters copied to host buffers for the host kernels.
    fn host_copy(&self) -> Result<HostBert> {
        let linear = |lin: &Linear<B>| -> Result<HostLinear> {
            let [in_f, out_f] = lin.weight_t.dims();
            let factors = match &lin.factors {
                Some((v_t, u_t)) => Some((
                    super::flat(v_t.clone())?,
                    super::flat(u_t.clone())?,
                    v_t.dims()[1],
                )),
                None => None,
            };
            Ok(HostLinear {
                in_f,
                out_f,
                w_t: super::flat(lin.weight_t.clone())?,
                bias: super::flat(lin.bias.clone())?,
                factors,
            })
        };
        let norm = |n: &LayerNorm<B>| -> Result<HostNorm> {
            Ok(HostNorm {
                gamma: super::flat(n.gamma.clone())?,
                beta: super::flat(n.beta.clone())?,
                eps: n.eps as f32,
            })
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            layers.push(HostLayer {
                shape: l.shape.clone(),
                attention: match &l.attention {
                    Sublayer::Kept(a) => HostSub::Kept(HostAttention {
                        query: linear(&a.query)?,
                        key: linear(&a.key)?,
                        value: linear(&a.value)?,
                        out: linear(&a.attn_out)?,
                    }),
                    Sublayer::Dropped { bias } => HostSub::Dropped(super::flat(bias.clone())?),
                },
                attn_norm: norm(&l.attn_norm)?,
                ffn: match &l.ffn {
                    Sublayer::Kept(f) => HostSub::Kept((linear(&f.up)?, linear(&f.down)?)),
                    Sublayer::Dropped { bias } => HostSub::Dropped(super::flat(bias.clone())?),
                },
                out_norm: norm(&l.out_norm)?,
            });
        }
        Ok(HostBert {
            hidden: self.config.hidden_size,
            heads: self.config.num_attention_heads,
            word: super::flat(self.word.clone())?,
            position: super::flat(self.position.clone())?,
            token_type: self.token_type.clone().map(super::flat).transpose()?,
            relative: self.relative.clone(),
            emb_norm: norm(&self.emb_norm)?,
            layers,
            pooler: self.pooler.as_ref().map(linear).transpose()?,
            classifier: self.classifier.as_ref().map(linear).transpose()?,
        })
    }

    /// What the host kernels read from the model besides its parameters.
    fn host_settings(&self) -> Settings {
        Settings {
            head_dim: self.config.head_dim(),
            act: self.config.hidden_act,
            pooling: self.pooling,
            position_padding: self.config.position_padding(),
            head_act: self.head_act,
        }
    }

    /// Run `f` on groups of rows in parallel, one group per worker thread, and concatenate the rows. Many of the
    /// CPU backend's element-wise kernels run on one thread; splitting the batch keeps every core busy (a row's
    /// result does not depend on the other rows of its batch).
    fn by_row_groups(&self, batch: &EncodedBatch, f: &RowsFn<B>) -> Result<Vec<Vec<f32>>>
    where
        Self: Sync,
    {
        use rayon::prelude::*;
        const MIN_ROWS: usize = 4;
        let groups = rayon::current_num_threads()
            .min(batch.batch_size / MIN_ROWS)
            .max(1);
        // Masks of one sample per input (rows = the batch) cannot be split with the batch.
        let per_row = self.masks.is_some();
        if groups == 1 || per_row {
            return f(self, batch);
        }
        let per = batch.batch_size.div_ceil(groups);
        let parts: Vec<EncodedBatch> = (0..batch.batch_size)
            .step_by(per)
            .map(|start| batch.rows(start, (start + per).min(batch.batch_size)))
            .collect();
        let results: Vec<Result<Vec<Vec<f32>>>> = parts.par_iter().map(|p| f(self, p)).collect();
        let mut out = Vec::with_capacity(batch.batch_size);
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }
}

fn activation<B: Backend>(
    x: Tensor<B, 3>,
    act: Activation,
    exact_second_order: bool,
) -> Tensor<B, 3> {
    match act {
        // Composed from erf when second-order autodiff must be exact (burn's gelu backward is not).
        Activation::Gelu if exact_second_order => {
            x.clone() * ((x / std::f64::consts::SQRT_2).erf() + 1.0) * 0.5
        }
        Activation::Gelu => burn::tensor::activation::gelu(x),
        Activation::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * c;
            x * (tanh(inner) + 1.0) * 0.5
        }
        Activation::Relu => burn::tensor::activation::relu(x),
    }
}

/// `x / max(||x||_2, 1e-12)` row-wise, as torch.nn.functional.normalize.
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}
