//! The VIB masks (VIBNet's information bottleneck, as the TVA-Prune code parametrises it): per unit a mean `mu`
//! and a log variance `log D`; in training the structure is multiplied by `z = mu + eps * exp(log D / 2)` with
//! `eps ~ N(0, 1)` drawn per input, with the closed-form KL `1/2 sum log(1 + mu^2 / D)`. The pruning statistic is
//! `log alpha = log D - log mu^2`; `sigmoid(-10 log alpha)` is a unit's soft keep-probability, and the expected
//! kept parameters weigh each probability by the parameters its unit controls.

use compressor_models::arch::BertConfig;
use compressor_models::rng::Rng;
use compressor_models::runtime::{Backend, LayerMasks, Masks, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::Structure;

/// Added to `mu^2` and `D` where they divide or enter a logarithm (the reference code's epsilon).
pub const EPS: f64 = 1e-8;
/// The slope of the soft keep-probability `sigmoid(-BETA log alpha)`.
pub const BETA: f64 = 10.0;

/// What a mask scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The residual stream's dimensions (one mask for the whole model).
    Hidden,
    /// A layer's attention sublayer (one unit).
    Attention,
    /// A layer's heads.
    Heads,
    /// A layer's FFN sublayer (one unit).
    Ffn,
    /// A layer's FFN neurons.
    Neurons,
}

/// One VIB mask.
#[derive(Debug, Clone, PartialEq)]
pub struct Vib {
    pub kind: Kind,
    /// The layer (`None` for the hidden mask).
    pub layer: Option<usize>,
    pub mu: Vec<f32>,
    pub logd: Vec<f32>,
}

impl Vib {
    /// `mu ~ N(1, 0.01)`, `log D ~ N(-9, 0.01)` (the reference initialisation).
    fn init(kind: Kind, layer: Option<usize>, n: usize, rng: &mut Rng) -> Self {
        let mu = (0..n).map(|_| (1.0 + 0.01 * rng.normal()) as f32).collect();
        let logd = (0..n)
            .map(|_| (-9.0 + 0.01 * rng.normal()) as f32)
            .collect();
        Self {
            kind,
            layer,
            mu,
            logd,
        }
    }

    /// `hidden`, `layer.3.heads`, ...
    pub fn name(&self) -> String {
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        match self.layer {
            Some(l) => format!("layer.{l}.{kind}"),
            None => kind,
        }
    }

    /// `log D - log(mu^2 + EPS)` per unit.
    pub fn log_alpha(&self) -> Vec<f64> {
        self.mu
            .iter()
            .zip(&self.logd)
            .map(|(&m, &d)| f64::from(d) - (f64::from(m).powi(2) + EPS).ln())
            .collect()
    }

    /// `1/2 sum log(1 + mu^2 / (D + EPS))`.
    pub fn kl(&self) -> f64 {
        self.mu
            .iter()
            .zip(&self.logd)
            .map(|(&m, &d)| 0.5 * (1.0 + f64::from(m).powi(2) / (f64::from(d).exp() + EPS)).ln())
            .sum()
    }
}

/// Every mask of a model, in a fixed order: the hidden mask, then per layer its attention, heads, FFN and neurons
/// masks (each where its structure is masked and the layer has it).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskSet {
    pub vibs: Vec<Vib>,
}

impl MaskSet {
    /// Fresh masks for `structures` of `config`, initialised from `seed`.
    pub fn new(config: &BertConfig, structures: &[Structure], seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5649_4250_5255_4e45);
        let has = |s: Structure| structures.contains(&s);
        let mut vibs = Vec::new();
        if has(Structure::Hidden) {
            vibs.push(Vib::init(Kind::Hidden, None, config.hidden_size, &mut rng));
        }
        for (l, shape) in config.layers.iter().enumerate() {
            let mut push = |kind, n, present: bool| {
                if present {
                    vibs.push(Vib::init(kind, Some(l), n, &mut rng));
                }
            };
            let (att, ffn) = (shape.has_attention(), shape.has_ffn());
            push(Kind::Attention, 1, att && has(Structure::Layers));
            push(Kind::Heads, shape.heads.len(), att && has(Structure::Heads));
            push(Kind::Ffn, 1, ffn && has(Structure::Layers));
            push(
                Kind::Neurons,
                shape.intermediate_size,
                ffn && has(Structure::Neurons),
            );
        }
        Self { vibs }
    }

    /// Every `mu`, then every `log D`, mask by mask (what the optimiser updates).
    pub fn flat(&self) -> Vec<f32> {
        let mut out: Vec<f32> = self.vibs.iter().flat_map(|v| v.mu.clone()).collect();
        out.extend(self.vibs.iter().flat_map(|v| v.logd.clone()));
        out
    }

    /// Take the values of [`MaskSet::flat`]'s layout.
    pub fn set_flat(&mut self, values: &[f32]) {
        let n: usize = self.vibs.iter().map(|v| v.mu.len()).sum();
        let (mut mu, mut logd) = (0, n);
        for v in &mut self.vibs {
            let k = v.mu.len();
            v.mu.copy_from_slice(&values[mu..mu + k]);
            v.logd.copy_from_slice(&values[logd..logd + k]);
            mu += k;
            logd += k;
        }
    }

    /// The number of masked units.
    pub fn units(&self) -> usize {
        self.vibs.iter().map(|v| v.mu.len()).sum()
    }

    pub fn get(&self, kind: Kind, layer: Option<usize>) -> Option<&Vib> {
        self.vibs
            .iter()
            .find(|v| v.kind == kind && v.layer == layer)
    }
}

/// How much each mask's KL counts (the reference's `kl_mult`: the hidden mask's is 30).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlWeights {
    pub hidden: f64,
    pub heads: f64,
    pub neurons: f64,
    pub sublayers: f64,
}

impl KlWeights {
    fn of(&self, kind: Kind) -> f64 {
        match kind {
            Kind::Hidden => self.hidden,
            Kind::Heads => self.heads,
            Kind::Neurons => self.neurons,
            Kind::Attention | Kind::Ffn => self.sublayers,
        }
    }
}

/// The masks of one step as burn tensors (`mu`, `log D` per mask), tracking gradients on autodiff backends when
/// asked.
pub struct Leaves<B: Backend> {
    pub mu: Vec<Tensor<B, 1>>,
    pub logd: Vec<Tensor<B, 1>>,
}

impl<B: Backend> Leaves<B> {
    pub fn new(set: &MaskSet, device: &B::Device, track: bool) -> Self {
        let leaf = |v: &[f32]| {
            let t = Tensor::<B, 1>::from_data(TensorData::new(v.to_vec(), [v.len()]), device);
            if track {
                t.require_grad()
            } else {
                t
            }
        };
        Self {
            mu: set.vibs.iter().map(|v| leaf(&v.mu)).collect(),
            logd: set.vibs.iter().map(|v| leaf(&v.logd)).collect(),
        }
    }

    /// The runtime's masks: sampled, `z = mu + eps exp(log D / 2)` with `eps [rows, n]` from `rng`; or the means
    /// (`rng` = `None`, one row).
    pub fn masks(
        &self,
        set: &MaskSet,
        layers: usize,
        rows: usize,
        rng: Option<&mut Rng>,
    ) -> Masks<B> {
        let mut rng = rng;
        let mut out = Masks {
            hidden: None,
            hidden_keep: None,
            layers: (0..layers).map(|_| LayerMasks::none()).collect(),
        };
        for (i, v) in set.vibs.iter().enumerate() {
            let n = v.mu.len();
            let mu = self.mu[i].clone().reshape([1, n]);
            let z = match rng.as_deref_mut() {
                Some(r) => {
                    let eps: Vec<f32> = (0..rows * n).map(|_| r.normal() as f32).collect();
                    let eps =
                        Tensor::<B, 2>::from_data(TensorData::new(eps, [rows, n]), &mu.device());
                    let sigma = (self.logd[i].clone() * 0.5).exp().reshape([1, n]);
                    mu + eps * sigma
                }
                None => mu,
            };
            let slot = match (v.kind, v.layer) {
                (Kind::Hidden, _) => &mut out.hidden,
                (Kind::Attention, Some(l)) => &mut out.layers[l].attention,
                (Kind::Heads, Some(l)) => &mut out.layers[l].heads,
                (Kind::Ffn, Some(l)) => &mut out.layers[l].ffn,
                (Kind::Neurons, Some(l)) => &mut out.layers[l].neurons,
                (_, None) => continue,
            };
            *slot = Some(z);
        }
        out
    }

    /// `sum over masks of weight * 1/2 sum log(1 + mu^2 / (D + EPS))`, `[1]`.
    pub fn kl(&self, set: &MaskSet, weights: &KlWeights) -> Tensor<B, 1> {
        let mut total: Option<Tensor<B, 1>> = None;
        for (i, v) in set.vibs.iter().enumerate() {
            let mu2 = self.mu[i].clone().powi_scalar(2);
            let d = self.logd[i].clone().exp() + EPS;
            let kl = (mu2 / d + 1.0).log().sum() * (0.5 * weights.of(v.kind));
            total = Some(match total {
                Some(t) => t + kl,
                None => kl,
            });
        }
        total.unwrap_or_else(|| Tensor::zeros([1], &self.device()))
    }

    /// The soft keep-probabilities `sigmoid(-BETA log alpha)` of mask `i`.
    fn keep(&self, i: usize) -> Tensor<B, 1> {
        let log_alpha = self.logd[i].clone() - (self.mu[i].clone().powi_scalar(2) + EPS).log();
        burn::tensor::activation::sigmoid(log_alpha * (-BETA))
    }

    fn device(&self) -> B::Device {
        self.mu.first().map(|t| t.device()).unwrap_or_default()
    }

    /// The expected kept encoder parameters, `[1]`: every layer's `LayerShape::parameters` with each unit counted
    /// by its keep-probability. The kept width `H` is the sum of the hidden keep-probabilities; a head controls
    /// `(2 qk + 2 vo) H + 2 qk + vo` parameters, a neuron `2 H + 1`, a sublayer mask multiplies its heads' or
    /// neurons' sum, and the output biases and LayerNorms (`6 H`) stay.
    pub fn expected_parameters(&self, set: &MaskSet, config: &BertConfig) -> Tensor<B, 1> {
        let device = self.device();
        let index = |kind: Kind, layer: Option<usize>| {
            set.vibs
                .iter()
                .position(|v| v.kind == kind && v.layer == layer)
        };
        let constant =
            |x: f64| Tensor::<B, 1>::from_data(TensorData::new(vec![x as f32], [1]), &device);
        let h = match index(Kind::Hidden, None) {
            Some(i) => self.keep(i).sum(),
            None => constant(config.hidden_size as f64),
        };
        let mut total = h.clone() * (6.0 * config.layers.len() as f64);
        for (l, s) in config.layers.iter().enumerate() {
            let count = |kind: Kind, n: usize| match index(kind, Some(l)) {
                Some(i) => self.keep(i).sum(),
                None => constant(n as f64),
            };
            if s.has_attention() {
                let (qk, vo) = (s.qk_head_dim as f64, s.vo_head_dim as f64);
                let per_head = h.clone() * (2.0 * qk + 2.0 * vo) + (2.0 * qk + vo);
                let att = count(Kind::Heads, s.heads.len()) * per_head * count(Kind::Attention, 1);
                total = total + att;
            }
            if s.has_ffn() {
                let per_neuron = h.clone() * 2.0 + 1.0;
                let ffn =
                    count(Kind::Neurons, s.intermediate_size) * per_neuron * count(Kind::Ffn, 1);
                total = total + ffn;
            }
        }
        total
    }
}
