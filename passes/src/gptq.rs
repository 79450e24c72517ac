//! GPTQ rounding (Frantar et al., ICLR 2023), for every quantization pass: the columns of a weight `W` `[out, in]`
//! are quantized one at a time, and each one's rounding error is spread over the columns not yet quantized so that
//! the layer's quadratic error `tr((W - Q) H (W - Q)^T)`, `H = E[x x^T]` of the Linear's input, stays small.
//!
//! With `H^-1 = U^T U` (upper Cholesky factor `U`), column `i`'s error `e = (w_i - q_i) / U[i, i]` updates every later
//! column `j` by `-e U[i, j]`; updates are applied lazily in blocks of `block-size` columns. `H` is damped by
//! `damping * mean(diag H)` on its diagonal; columns no input reaches (`H[i, i] = 0`) are zeroed. Group scales are
//! computed when their group is reached, from the weights as updated by every earlier column (blocks end at group
//! boundaries for that); per-channel and per-tensor scales come from the whole matrix at the start. With `act-order`, columns go by descending `H[i, i]`, and every group's scale is
//! taken from the original weights first ("static groups"), so the result keeps the plain group layout (no
//! `g_idx`). The codes and scales are a [`QuantTensor`] in the encoding asked for: the same compressed-tensors
//! layout as round-to-nearest.
//!
//! A sparse weight keeps its mask (`keep`, as SparseGPT with a fixed mask): a pruned element is quantized to its zero
//! point (exactly 0) whatever the earlier columns' updates made of it, its error is spread like any other, and
//! scales are fitted from the kept elements only.

use compressor_models::{Encoding, QuantTensor, Strategy};
use serde::{Deserialize, Serialize};

use crate::linalg::{cholesky_lower, damp, spd_inverse};

/// How weights are rounded to their codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rounding {
    /// Each value to its nearest code (ties to even).
    #[default]
    Nearest,
    /// GPTQ: error-compensated, from the input covariance of each Linear (needs `[calibration]`).
    Gptq,
}

/// GPTQ's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Added to `H`'s diagonal, times its mean diagonal.
    #[serde(default = "default_damping")]
    pub damping: f64,
    /// Columns whose updates are applied together.
    #[serde(default = "default_block")]
    pub block_size: usize,
    /// Quantize columns by descending `H[i, i]` (static groups). On by default: without it GPTQ lost to
    /// round-to-nearest at 3 bits on both MiniLM models (docs/passes/blockwise-quant.md).
    #[serde(default = "default_true")]
    pub act_order: bool,
}

fn default_damping() -> f64 {
    0.01
}

fn default_block() -> usize {
    128
}

fn default_true() -> bool {
    true
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            damping: default_damping(),
            block_size: default_block(),
            act_order: true,
        }
    }
}

impl Settings {
    /// The first problem with these settings, as (key, problem).
    pub fn check(&self) -> Option<(&'static str, String)> {
        if self.damping.is_nan() || self.damping < 0.0 {
            return Some(("damping", format!("is {}, expected >= 0", self.damping)));
        }
        if self.block_size == 0 {
            return Some(("block-size", "must be at least 1".into()));
        }
        None
    }
}

/// The plan-time checks of a quantization pass's `rounding` and `gptq` keys, and the plan's note when GPTQ is on.
/// `blocks`: the pass stores tile scales (which GPTQ cannot fit column by column).
pub fn plan_note(
    rounding: Rounding,
    settings: &Settings,
    ctx: &crate::pass::PlanContext,
    blocks: bool,
) -> crate::Result<Option<String>> {
    if rounding == Rounding::Nearest {
        return Ok(None);
    }
    if ctx.calibration.is_none() {
        return Err(crate::Error::NoCalibration {
            key: "rounding = \"gptq\"".into(),
        });
    }
    if let Some((key, problem)) = settings.check() {
        return Err(crate::Error::Config {
            key: format!("gptq.{key}"),
            problem,
        });
    }
    if blocks {
        return Err(crate::Error::Config {
            key: "rounding".into(),
            problem: "GPTQ rounds column by column and fits scales per row or group, not per tile of rows".into(),
        });
    }
    Ok(Some(format!(
        "GPTQ rounding (damping {}, blocks of {} columns{}) from the input covariance of every Linear; other tensors round to nearest",
        settings.damping,
        settings.block_size,
        if settings.act_order { ", activation order" } else { "" }
    )))
}

/// The scale parameters of one matrix being quantized, in the layout of [`QuantTensor`]'s scales.
struct Params {
    strategy: Strategy,
    cols: usize,
    /// Scale columns per row: groups (1 for channel and tensor scales).
    groups: usize,
    scales: Vec<f32>,
    zero_points: Vec<i8>,
}

impl Params {
    fn new(strategy: Strategy, rows: usize, cols: usize) -> Self {
        let [sr, sc] = strategy.scale_shape(rows, cols);
        Self {
            strategy,
            cols,
            groups: sc,
            scales: vec![0.0; sr * sc],
            zero_points: vec![0; sr * sc],
        }
    }

    fn index(&self, r: usize, c: usize) -> usize {
        self.strategy.scale_index(self.cols, r, c)
    }

    /// Set the parameters of group `g` (every group for channel / tensor scales) from `w` (row-major, `cols`
    /// wide, original column order), counting only the elements `keep` marks (all when `None`).
    fn fit(&mut self, e: &Encoding, w: &[f64], keep: Option<&[bool]>, rows: usize, g: usize) {
        let range = match self.strategy {
            Strategy::Group { size } => g * size..((g + 1) * size).min(self.cols),
            _ => 0..self.cols,
        };
        let span = |r: usize| {
            range
                .clone()
                .map(|c| r * self.cols + c)
                .filter(|&k| keep.is_none_or(|m| m[k]))
                .fold((0f32, 0f32), |(lo, hi), k| {
                    (lo.min(w[k] as f32), hi.max(w[k] as f32))
                })
        };
        if self.strategy == Strategy::Tensor {
            let (lo, hi) = (0..rows)
                .map(span)
                .fold((0f32, 0f32), |(a, b), (l, h)| (a.min(l), b.max(h)));
            let (s, zp) = e.params(lo, hi);
            self.scales[0] = s;
            self.zero_points[0] = zp.unwrap_or(0);
            return;
        }
        for r in 0..rows {
            let (lo, hi) = span(r);
            let (s, zp) = e.params(lo, hi);
            let k = r * self.groups + g;
            self.scales[k] = s;
            self.zero_points[k] = zp.unwrap_or(0);
        }
    }
}

/// Quantize `values` (`[rows, cols]`, row-major) with GPTQ under the input second moment `h` (`[cols, cols]`).
/// `keep` (row-major, when the weight is sparse) marks the elements that are stored; the others stay exactly 0.
pub fn quantize(
    values: &[f32],
    rows: usize,
    cols: usize,
    encoding: Encoding,
    h: &[f64],
    settings: &Settings,
    keep: Option<&[bool]>,
) -> Result<QuantTensor, String> {
    encoding.check(rows, cols)?;
    if matches!(encoding.strategy, Strategy::Block { .. }) {
        return Err(
            "GPTQ rounds column by column: use channel, group or tensor scales, not blocks".into(),
        );
    }
    if values.len() != rows * cols || h.len() != cols * cols {
        return Err(format!(
            "{} values and a {}-entry covariance do not fit a [{rows}, {cols}] matrix",
            values.len(),
            h.len()
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!("value at flat index {i} is not finite"));
    }
    if keep.is_some_and(|m| m.len() != values.len()) {
        return Err(format!(
            "a mask of {} elements does not fit a [{rows}, {cols}] matrix",
            keep.map_or(0, <[bool]>::len)
        ));
    }
    let mut w: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
    let mut h = h.to_vec();
    for i in 0..cols {
        if h[i * cols + i] <= 0.0 {
            h[i * cols + i] = 1.0;
            for r in 0..rows {
                w[r * cols + i] = 0.0;
            }
        }
    }
    damp(cols, &mut h, settings.damping);
    // The order columns are quantized in (positions in the original matrix).
    let mut order: Vec<usize> = (0..cols).collect();
    if settings.act_order {
        order.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]).then(a.cmp(&b)));
    }
    let permuted: Vec<f64> = (0..cols * cols)
        .map(|k| h[order[k / cols] * cols + order[k % cols]])
        .collect();
    let singular = || {
        "the input covariance is not positive definite even after damping (raise `damping`)"
            .to_string()
    };
    let hinv = spd_inverse(cols, &permuted).ok_or_else(singular)?;
    // H^-1 = U^T U with U = L^T, L the lower Cholesky factor of H^-1.
    let l = cholesky_lower(cols, &hinv).ok_or_else(singular)?;
    let u = |i: usize, j: usize| l[j * cols + i];

    let mut params = Params::new(encoding.strategy, rows, cols);
    let group_size = match encoding.strategy {
        Strategy::Group { size } => Some(size),
        _ => None,
    };
    if group_size.is_none() || settings.act_order {
        for g in 0..params.groups {
            params.fit(&encoding, &w, keep, rows, g);
        }
    }
    let mut codes = vec![0i8; rows * cols];
    let bs = settings.block_size;
    let mut i1 = 0;
    while i1 < cols {
        let mut i2 = (i1 + bs).min(cols);
        if let (Some(size), false) = (group_size, settings.act_order) {
            // A group's scales are fitted when it starts, after every earlier column's error has reached it.
            i2 = i2.min((i1 / size + 1) * size);
        }
        let mut err = vec![0f64; rows * (i2 - i1)];
        for i in i1..i2 {
            let c = order[i];
            if let (Some(size), false) = (group_size, settings.act_order) {
                if c.is_multiple_of(size) {
                    params.fit(&encoding, &w, keep, rows, c / size);
                }
            }
            let d = u(i, i);
            for r in 0..rows {
                let k = params.index(r, c);
                let (s, zp) = (params.scales[k], params.zero_points[k]);
                let v = w[r * cols + c];
                let q = match keep {
                    Some(m) if !m[r * cols + c] => zp,
                    _ => encoding.code(v as f32, s, zp),
                };
                codes[r * cols + c] = q;
                let deq = f64::from(i32::from(q) - i32::from(zp)) * f64::from(s);
                let e = (v - deq) / d;
                err[r * (i2 - i1) + (i - i1)] = e;
                for j in i + 1..i2 {
                    w[r * cols + order[j]] -= e * u(i, j);
                }
            }
        }
        // The block's errors reach every later column at once.
        for r in 0..rows {
            let e = &err[r * (i2 - i1)..(r + 1) * (i2 - i1)];
            for j in i2..cols {
                let delta: f64 = e.iter().enumerate().map(|(k, ek)| ek * u(i1 + k, j)).sum();
                w[r * cols + order[j]] -= delta;
            }
        }
        i1 = i2;
    }
    let zero_points = if encoding.symmetric {
        Vec::new()
    } else {
        params.zero_points
    };
    Ok(QuantTensor {
        encoding,
        rows,
        cols,
        codes,
        scales: params.scales,
        zero_points,
    })
}

/// `tr((W - Q) H (W - Q)^T)`: the layer's output error on inputs with second moment `h`.
pub fn layer_error(values: &[f32], q: &QuantTensor, h: &[f64]) -> f64 {
    let (rows, cols) = (q.rows, q.cols);
    let deq = q.dequantize();
    let mut total = 0.0;
    for r in 0..rows {
        let d: Vec<f64> = (0..cols)
            .map(|c| f64::from(values[r * cols + c]) - f64::from(deq[r * cols + c]))
            .collect();
        for i in 0..cols {
            let hd: f64 = (0..cols).map(|j| h[i * cols + j] * d[j]).sum();
            total += d[i] * hd;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use compressor_models::testing::SplitMix64;

    /// A correlated second moment `X^T X / n` of `n` samples.
    fn moment(cols: usize, n: usize, rng: &mut SplitMix64) -> Vec<f64> {
        let base: Vec<f64> = (0..n * cols)
            .map(|_| f64::from(rng.next_f32()) - 0.5)
            .collect();
        // Mix neighbouring columns so the covariance is far from diagonal.
        let x: Vec<f64> = (0..n * cols)
            .map(|k| {
                let (s, c) = (k / cols, k % cols);
                base[k]
                    + 0.8 * base[s * cols + (c + 1) % cols]
                    + if c % 3 == 0 { 2.0 * base[k] } else { 0.0 }
            })
            .collect();
        let mut h = vec![0.0; cols * cols];
        for s in 0..n {
            for i in 0..cols {
                for j in 0..cols {
                    h[i * cols + j] += x[s * cols + i] * x[s * cols + j] / n as f64;
                }
            }
        }
        h
    }

    /// The textbook algorithm (OBQ order, no lazy blocks, no Cholesky): quantize column `i`, spread its error
    /// with the current inverse `H^-1`, then remove column `i` from `H^-1` by one elimination step.
    fn reference(
        values: &[f32],
        rows: usize,
        cols: usize,
        e: Encoding,
        h: &[f64],
        damping: f64,
    ) -> QuantTensor {
        let mut w: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        let mut h = h.to_vec();
        damp(cols, &mut h, damping);
        let mut hinv = spd_inverse(cols, &h).expect("inverse");
        let mut params = Params::new(e.strategy, rows, cols);
        let size = match e.strategy {
            Strategy::Group { size } => size,
            _ => cols,
        };
        let mut codes = vec![0i8; rows * cols];
        for i in 0..cols {
            if i % size == 0 {
                params.fit(&e, &w, None, rows, i / size);
            }
            for r in 0..rows {
                let k = params.index(r, i);
                let v = w[r * cols + i];
                let q = e.code(v as f32, params.scales[k], params.zero_points[k]);
                codes[r * cols + i] = q;
                let deq = f64::from(q) * f64::from(params.scales[k]);
                let err = (v - deq) / hinv[i * cols + i];
                for j in i + 1..cols {
                    w[r * cols + j] -= err * hinv[i * cols + j];
                }
            }
            let pivot = hinv[i * cols + i];
            let row: Vec<f64> = (0..cols).map(|j| hinv[i * cols + j]).collect();
            for a in 0..cols {
                for b in 0..cols {
                    hinv[a * cols + b] -= row[a] * row[b] / pivot;
                }
            }
        }
        QuantTensor {
            encoding: e,
            rows,
            cols,
            codes,
            scales: params.scales,
            zero_points: Vec::new(),
        }
    }

    #[test]
    fn gptq_equals_the_textbook_algorithm_and_never_loses_to_nearest_rounding() {
        let mut rng = SplitMix64::new(5);
        for (rows, cols, strategy, block) in [
            (6, 16, Strategy::Group { size: 8 }, 5),
            (5, 24, Strategy::Channel, 7),
            (4, 12, Strategy::Group { size: 4 }, 128),
        ] {
            let e = Encoding::symmetric(3, strategy);
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.next_f32() - 0.5).collect();
            let h = moment(cols, 64, &mut rng);
            let settings = Settings {
                damping: 0.01,
                block_size: block,
                act_order: false,
            };
            let q = quantize(&w, rows, cols, e, &h, &settings, None).expect("gptq");
            let r = reference(&w, rows, cols, e, &h, 0.01);
            assert_eq!(q.codes, r.codes, "{strategy:?}");
            assert_eq!(q.scales, r.scales, "{strategy:?}");
            let nearest = QuantTensor::quantize(&w, rows, cols, e).expect("rtn");
            let (eg, en) = (layer_error(&w, &q, &h), layer_error(&w, &nearest, &h));
            assert!(eg <= en, "{strategy:?}: gptq {eg} > nearest {en}");
            // Act order (static groups) is a valid encoding of the same layout, and also beats nearest here.
            let act = quantize(
                &w,
                rows,
                cols,
                e,
                &h,
                &Settings {
                    act_order: true,
                    ..settings
                },
                None,
            )
            .expect("act");
            assert_eq!(act.scales.len(), nearest.scales.len());
            assert!(layer_error(&w, &act, &h) <= en);
        }
    }

    #[test]
    fn a_sparse_mask_keeps_pruned_weights_at_zero_and_still_beats_nearest_rounding() {
        let mut rng = SplitMix64::new(11);
        let (rows, cols) = (6, 16);
        let h = moment(cols, 64, &mut rng);
        let mut w: Vec<f32> = (0..rows * cols).map(|_| rng.next_f32() - 0.5).collect();
        let keep: Vec<bool> = (0..rows * cols).map(|k| k % 3 != 1).collect();
        for (v, k) in w.iter_mut().zip(&keep) {
            if !k {
                *v = 0.0;
            }
        }
        for (strategy, symmetric, act_order) in [
            (Strategy::Group { size: 8 }, true, false),
            (Strategy::Channel, false, true),
            (Strategy::Tensor, true, true),
        ] {
            let e = Encoding {
                symmetric,
                ..Encoding::symmetric(3, strategy)
            };
            let settings = Settings {
                act_order,
                ..Settings::default()
            };
            let q = quantize(&w, rows, cols, e, &h, &settings, Some(&keep)).expect("gptq");
            let decoded = q.dequantize();
            for (k, (&d, &kept)) in decoded.iter().zip(&keep).enumerate() {
                assert!(
                    kept || d == 0.0,
                    "{strategy:?}: pruned element {k} decodes to {d}"
                );
            }
            // Without the mask the updates spread into the pruned elements (visible at 8 bits).
            let fine = Encoding { bits: 8, ..e };
            let free = quantize(&w, rows, cols, fine, &h, &settings, None).expect("gptq");
            let masked = quantize(&w, rows, cols, fine, &h, &settings, Some(&keep)).expect("gptq");
            assert!(masked
                .dequantize()
                .iter()
                .zip(&keep)
                .all(|(d, k)| *k || *d == 0.0));
            let leaked = free
                .dequantize()
                .iter()
                .zip(&keep)
                .filter(|(d, k)| !**k && **d != 0.0)
                .count();
            assert!(
                leaked > 0,
                "{strategy:?}: the unmasked run leaves every pruned weight 0"
            );
            let nearest = QuantTensor::quantize(&w, rows, cols, e).expect("rtn");
            let (eg, en) = (layer_error(&w, &q, &h), layer_error(&w, &nearest, &h));
            assert!(eg <= en, "{strategy:?}: masked gptq {eg} > nearest {en}");
        }
        let short = quantize(
            &w,
            rows,
            cols,
            Encoding::symmetric(4, Strategy::Channel),
            &h,
            &Settings::default(),
            Some(&keep[1..]),
        );
        assert_eq!(
            short.expect_err("short mask"),
            "a mask of 95 elements does not fit a [6, 16] matrix"
        );
    }

    #[test]
    fn unreached_columns_are_zero_and_blocks_are_refused() {
        let e = Encoding::symmetric(4, Strategy::Channel);
        let mut h = vec![0.0; 4 * 4];
        h[0] = 1.0;
        h[5] = 2.0;
        let w = [0.5f32, -0.25, 0.125, 1.0];
        let q = quantize(&w, 1, 4, e, &h, &Settings::default(), None).expect("gptq");
        assert_eq!(&q.dequantize()[2..], &[0.0, 0.0]);
        let blocks = Encoding::symmetric(4, Strategy::Block { rows: 1, cols: 2 });
        assert!(quantize(&w, 1, 4, blocks, &h, &Settings::default(), None)
            .expect_err("blocks")
            .contains("not blocks"));
    }
}
