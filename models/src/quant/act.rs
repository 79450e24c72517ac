//! Static activation quantization (BCT's "all intermediate results"): the calibrated scales of every quantization
//! point of the BERT forward, how they are observed, and the file that carries them in an artifact.
//!
//! A point is one intermediate tensor (the input or output of a LayerNorm, GELU or softmax, the input of a Linear,
//! the operands of the attention matmuls). Values are quantized to signed `bits`-bit integers with one scale per
//! block of `block_size` consecutive features of the last dimension (per tensor for the attention scores and
//! probabilities, whose last dimension is the sequence), or to unsigned integers when calibration saw no negative
//! value (softmax probabilities). The runtime fake-quantizes at each point: `clamp(round(x / s)) * s`, so evaluation
//! sees what an integer runtime with these scales computes; computing GELU on a quantized input and quantizing its
//! output is exactly a 2^bits-entry lookup table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The artifact file holding the activation scales (beside config.json). compressed-tensors cannot express them.
pub const FILE: &str = "activation_quantization.json";

/// What kind of operation a point feeds or leaves, for selecting points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Inputs of Linear layers.
    Linear,
    /// Operands of the attention matmuls (q, k, v, probabilities).
    Matmul,
    Gelu,
    Softmax,
    Layernorm,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Linear,
        Category::Matmul,
        Category::Gelu,
        Category::Softmax,
        Category::Layernorm,
    ];
}

/// One quantization point of a layer (or of the embeddings / pooler, `layer = None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    EmbNormIn,
    EmbNormOut,
    Q,
    K,
    V,
    Scores,
    Probs,
    Context,
    AttnNormIn,
    AttnNormOut,
    GeluIn,
    GeluOut,
    FfnNormIn,
    FfnNormOut,
    PoolerOut,
}

impl Site {
    /// Every site, in forward order.
    pub const ALL: [Site; 15] = [
        Site::EmbNormIn,
        Site::EmbNormOut,
        Site::Q,
        Site::K,
        Site::V,
        Site::Scores,
        Site::Probs,
        Site::Context,
        Site::AttnNormIn,
        Site::AttnNormOut,
        Site::GeluIn,
        Site::GeluOut,
        Site::FfnNormIn,
        Site::FfnNormOut,
        Site::PoolerOut,
    ];

    /// The point's name relative to its layer.
    pub fn suffix(self) -> &'static str {
        match self {
            Site::EmbNormIn => "embeddings.norm.in",
            Site::EmbNormOut => "embeddings.norm.out",
            Site::Q => "attention.q",
            Site::K => "attention.k",
            Site::V => "attention.v",
            Site::Scores => "attention.scores",
            Site::Probs => "attention.probs",
            Site::Context => "attention.context",
            Site::AttnNormIn => "attention.norm.in",
            Site::AttnNormOut => "attention.norm.out",
            Site::GeluIn => "ffn.gelu.in",
            Site::GeluOut => "ffn.gelu.out",
            Site::FfnNormIn => "ffn.norm.in",
            Site::FfnNormOut => "ffn.norm.out",
            Site::PoolerOut => "pooler.out",
        }
    }

    /// The categories a point belongs to: it is quantized when any of them is selected.
    pub fn categories(self) -> &'static [Category] {
        use Category::*;
        match self {
            Site::EmbNormIn | Site::AttnNormIn | Site::FfnNormIn => &[Layernorm],
            Site::EmbNormOut | Site::AttnNormOut | Site::FfnNormOut => &[Layernorm, Linear],
            Site::Q | Site::K | Site::V => &[Matmul],
            Site::Scores => &[Softmax],
            Site::Probs => &[Softmax, Matmul],
            Site::Context | Site::PoolerOut => &[Linear],
            Site::GeluIn => &[Gelu],
            Site::GeluOut => &[Gelu, Linear],
        }
    }

    /// Whether one scale covers the whole tensor (the last dimension is a sequence position).
    pub fn per_tensor(self) -> bool {
        matches!(self, Site::Scores | Site::Probs)
    }

    /// The full point name: `encoder.layer.3.ffn.gelu.in`, `embeddings.norm.out`, `pooler.out`.
    pub fn name(self, layer: Option<usize>) -> String {
        match layer {
            Some(l) => format!("encoder.layer.{l}.{}", self.suffix()),
            None => self.suffix().to_string(),
        }
    }
}

/// Scales of one point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointScales {
    /// One scale per block of the last dimension (one scale for per-tensor points).
    pub scales: Vec<f32>,
    /// Codes in `[0, 2^bits - 1]` instead of `[-2^(bits-1), 2^(bits-1) - 1]`.
    pub unsigned: bool,
}

/// The content of [`FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationQuant {
    pub bits: u8,
    pub block_size: usize,
    /// How ranges were calibrated (`max` or `percentile 99.99`), for the record.
    pub range: String,
    pub points: BTreeMap<String, PointScales>,
}

impl ActivationQuant {
    /// Parse [`FILE`]; the error names what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let a: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !(2..=8).contains(&a.bits) {
            return Err(format!("`bits` is {}, expected 2 to 8", a.bits));
        }
        if a.block_size == 0 {
            return Err("`block_size` must be at least 1".into());
        }
        for (name, p) in &a.points {
            if p.scales.is_empty() || p.scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(format!("point `{name}` needs positive finite scales"));
            }
        }
        Ok(a)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text.into_bytes()
    }

    /// Integer range of a point: `(qmin, qmax)`.
    pub fn range(&self, unsigned: bool) -> (f32, f32) {
        if unsigned {
            (0.0, ((1u32 << self.bits) - 1) as f32)
        } else {
            (
                -((1i32 << (self.bits - 1)) as f32),
                ((1i32 << (self.bits - 1)) - 1) as f32,
            )
        }
    }
}

/// How calibration turns observed values into a range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeRule {
    /// The largest magnitude seen.
    Max,
    /// The mean over calibration batches of each batch's `p`-th percentile of magnitudes.
    Percentile(f64),
}

/// Statistics of one point gathered over calibration batches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointStats {
    /// Per block: the running range statistic (max, or the sum of per-batch percentiles).
    pub value: Vec<f64>,
    pub batches: usize,
    pub min: f32,
    pub max: f32,
}

/// Collects per-block ranges while the calibration data runs through the model.
#[derive(Debug, Clone)]
pub struct Observer {
    pub rule: RangeRule,
    pub block_size: usize,
    pub stats: BTreeMap<String, PointStats>,
}

impl Observer {
    pub fn new(rule: RangeRule, block_size: usize) -> Self {
        Self {
            rule,
            block_size,
            stats: BTreeMap::new(),
        }
    }

    /// Record one batch of values of point `name`, whose last dimension is `last` (`per_tensor`: one block).
    pub fn observe(&mut self, name: &str, values: &[f32], last: usize, per_tensor: bool) {
        let (blocks, width) = if per_tensor || last == 0 {
            (1, values.len().max(1))
        } else {
            (last.div_ceil(self.block_size), self.block_size)
        };
        let mut per_block: Vec<Vec<f32>> = vec![Vec::new(); blocks];
        let mut lo = f32::INFINITY;
        let mut hi = f32::NEG_INFINITY;
        if per_tensor || last == 0 {
            per_block[0] = values.iter().map(|v| v.abs()).collect();
        } else {
            for row in values.chunks(last) {
                for (j, v) in row.iter().enumerate() {
                    per_block[j / width].push(v.abs());
                }
            }
        }
        for &v in values {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let s = self
            .stats
            .entry(name.to_string())
            .or_insert_with(|| PointStats {
                value: vec![0.0; blocks],
                batches: 0,
                min: f32::INFINITY,
                max: f32::NEG_INFINITY,
            });
        s.batches += 1;
        s.min = s.min.min(lo);
        s.max = s.max.max(hi);
        for (b, mut vals) in per_block.into_iter().enumerate() {
            let stat = match self.rule {
                RangeRule::Max => vals.iter().fold(0f32, |m, &v| m.max(v)) as f64,
                RangeRule::Percentile(p) => percentile(&mut vals, p),
            };
            match self.rule {
                RangeRule::Max => s.value[b] = s.value[b].max(stat),
                RangeRule::Percentile(_) => s.value[b] += stat,
            }
        }
    }

    /// The scales that map each block's range onto `bits`-bit codes (unsigned where no negative value was seen).
    pub fn finish(&self, bits: u8, range: String) -> ActivationQuant {
        let mut points = BTreeMap::new();
        for (name, s) in &self.stats {
            let unsigned = s.min >= 0.0;
            let steps = if unsigned {
                ((1u32 << bits) - 1) as f64
            } else {
                ((1u32 << (bits - 1)) - 1) as f64
            };
            let scales = s
                .value
                .iter()
                .map(|&v| {
                    let r = match self.rule {
                        RangeRule::Max => v,
                        RangeRule::Percentile(_) => v / s.batches.max(1) as f64,
                    };
                    ((r / steps) as f32).max(f32::MIN_POSITIVE)
                })
                .collect();
            points.insert(name.clone(), PointScales { scales, unsigned });
        }
        ActivationQuant {
            bits,
            block_size: self.block_size,
            range,
            points,
        }
    }
}

/// The `p`-th percentile (0-100, nearest rank) of `values` (reordered in place); 0 for no values.
fn percentile(values: &mut [f32], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    let k = rank.clamp(1, values.len()) - 1;
    let (_, v, _) = values.select_nth_unstable_by(k, f32::total_cmp);
    f64::from(*v)
}

/// What a model does at its activation quantization points.
#[derive(Debug)]
pub enum ActMode {
    /// Record the values passing each point (calibration); outputs are unchanged.
    Observe(std::sync::Mutex<Observer>),
    /// Fake-quantize at every point the table lists.
    Quantize(ActivationQuant),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_unsigned_points() {
        let mut o = Observer::new(RangeRule::Max, 2);
        o.observe("a", &[1.0, -2.0, 0.5, 4.0, -1.0, 0.0, 3.0, 0.25], 4, false);
        o.observe("p", &[0.0, 0.5, 1.0, 0.25], 4, true);
        let q = o.finish(8, "max".into());
        assert_eq!(
            q.points["a"].scales,
            vec![(2.0f64 / 127.0) as f32, (4.0f64 / 127.0) as f32]
        );
        assert!(!q.points["a"].unsigned);
        assert_eq!(q.points["p"].scales, vec![(1.0f64 / 255.0) as f32]);
        assert!(q.points["p"].unsigned);
    }

    #[test]
    fn percentile_is_averaged_over_batches() {
        let mut o = Observer::new(RangeRule::Percentile(50.0), 4);
        o.observe("x", &[1.0, 2.0, 3.0, 4.0], 4, false);
        o.observe("x", &[5.0, 6.0, 7.0, 8.0], 4, false);
        let q = o.finish(8, "percentile 50".into());
        // Mean of the batch medians 2 and 6; no negative value, so unsigned codes.
        assert_eq!(q.points["x"].scales, vec![(4.0f64 / 255.0) as f32]);
    }
}
