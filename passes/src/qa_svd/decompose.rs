//! UniQL's structured sorting for a BERT layer, from the statistics of the original model's activations:
//! - **FFN neurons** by ridge leverage, `diag(C (C + lambda I)^-1)` of the intermediate activations' second moment
//!   `C` (`lambda = 1`);
//! - **query / key dimensions** of each head by `||C_Q^1/2 [:, c]|| ||C_K^1/2 [:, c]||`, where `C_Q` is the second
//!   moment of the head's queries (bias included). A column of a symmetric square root has norm
//!   `sqrt(C[c, c])`, so the score is `sqrt(E[q_c^2] E[k_c^2])`, computed from the input's moments without any
//!   decomposition;
//! - **value / output** of each head by quantization-aware SVD: the head maps `x` to `W_O,j W_V,j x` (plus a
//!   constant from the value bias, folded into the output bias, exact since attention rows sum to 1). The best
//!   rank-r map under the input's second moment `C` (minimising `E ||(M - M_r) x||^2`) is `U_r U_r^T M`, with `U`
//!   the left singular vectors of `M C^1/2`. So the new output columns are `U_r` (orthonormal) and the new value
//!   rows `U_r^T W_O,j W_V,j`: the singular values sit in the value factor, whose per-group quantization scale
//!   absorbs them. `M C^1/2 = (W_O,j U1 S1) V1^T` with `U1 S1 V1^T` the SVD of `W_V,j C^1/2`, so the SVDs are of
//!   `[d, h]` and `[h, d]` matrices, never `[h, h]`.
//!
//! Every order is descending by score, so keeping the first `k` of each is pruning to the `k` best (sort-then-cut
//! equals pruning by score), and at full width the sorted layer computes what the original did.

use crate::error::Result;
use crate::linalg::{damp, eigh, matmul, psd_sqrt, thin_svd, transpose};

/// Indices `0..scores.len()` by descending score (ties by index).
pub fn descending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

/// Ridge leverage `diag(C (C + lambda I)^-1)` of the `[n, n]` second moment `c`.
pub fn ridge_leverage(n: usize, c: &[f64], lambda: f64) -> Result<Vec<f64>> {
    let e = eigh(n, c)?;
    let w: Vec<f64> = e
        .values
        .iter()
        .map(|&l| {
            let l = l.max(0.0);
            l / (l + lambda)
        })
        .collect();
    Ok((0..n)
        .map(|i| (0..n).map(|k| e.vectors[i * n + k].powi(2) * w[k]).sum())
        .collect())
}

/// `E[y_r^2]` for every output `y_r = w_r . x + b_r` of a Linear `w` `[rows, n]`, from the input's second moment
/// `c` `[n, n]` and mean `mu`.
pub fn output_second_moments(w: &[f32], b: &[f32], n: usize, c: &[f64], mu: &[f64]) -> Vec<f64> {
    w.chunks(n)
        .zip(b)
        .map(|(row, &bias)| {
            let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            let cw: f64 = (0..n)
                .map(|i| row[i] * (0..n).map(|j| c[i * n + j] * row[j]).sum::<f64>())
                .sum();
            let wm: f64 = row.iter().zip(mu).map(|(a, m)| a * m).sum();
            let bias = f64::from(bias);
            cw + 2.0 * bias * wm + bias * bias
        })
        .collect()
}

/// Per head, its query/key dimensions by descending `sqrt(E[q_c^2] E[k_c^2])`.
pub fn qk_orders(
    q_moments: &[f64],
    k_moments: &[f64],
    heads: usize,
    dim: usize,
) -> Vec<Vec<usize>> {
    (0..heads)
        .map(|j| {
            let s: Vec<f64> = (0..dim)
                .map(|c| {
                    (q_moments[j * dim + c] * k_moments[j * dim + c])
                        .max(0.0)
                        .sqrt()
                })
                .collect();
            descending(&s)
        })
        .collect()
}

/// The quantization-aware SVD of one head: `u` `[h, d]` (the left singular vectors of `M C^1/2`, by descending
/// singular value) and the singular values.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadSvd {
    pub h: usize,
    pub d: usize,
    pub u: Vec<f64>,
    pub s: Vec<f64>,
}

/// The QSVD of head `j`: `w_v` `[d, h]` (its value rows), `w_o` `[h, d]` (its output columns), `c_sqrt` the
/// input's `C^1/2` `[h, h]`.
pub fn head_svd(w_v: &[f64], w_o: &[f64], c_sqrt: &[f64], h: usize, d: usize) -> Result<HeadSvd> {
    let b = matmul(d, h, h, w_v, c_sqrt);
    let first = thin_svd(d, h, &b)?;
    let k = first.k;
    // W_O U1 S1: [h, d] x [d, k] scaled by the singular values.
    let mut u1s = first.u.clone();
    for row in u1s.chunks_mut(k) {
        for (v, s) in row.iter_mut().zip(&first.s) {
            *v *= s;
        }
    }
    let p = matmul(h, d, k, w_o, &u1s);
    let second = thin_svd(h, k, &p)?;
    Ok(HeadSvd {
        h,
        d: second.k,
        u: second.u,
        s: second.s,
    })
}

impl HeadSvd {
    /// The first `r` output columns, `[h, r]`.
    pub fn output_columns(&self, r: usize) -> Vec<f64> {
        self.u
            .chunks(self.d)
            .flat_map(|row| row[..r].iter().copied())
            .collect()
    }

    /// The first `r` value rows `U_r^T W_O W_V`, `[r, h]`, from the head's original `w_v` `[d, h]` and `w_o`
    /// `[h, d]`.
    pub fn value_rows(&self, r: usize, w_v: &[f64], w_o: &[f64], d: usize) -> Vec<f64> {
        let ut = transpose(self.h, r, &self.output_columns(r));
        let uo = matmul(r, self.h, d, &ut, w_o);
        matmul(r, d, self.h, &uo, w_v)
    }
}

/// `C^1/2` of the attention input's second moment, damped by `damping * mean(diag C)` on the diagonal.
pub fn whitening(n: usize, c: &[f64], damping: f64) -> Result<Vec<f64>> {
    let mut c = c.to_vec();
    damp(n, &mut c, damping);
    psd_sqrt(n, &c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use compressor_models::testing::SplitMix64;

    fn random(n: usize, rng: &mut SplitMix64) -> Vec<f64> {
        (0..n).map(|_| f64::from(rng.next_f32()) - 0.5).collect()
    }

    /// `tr((A - B) C (A - B)^T)` for `[h, h]` maps.
    fn weighted_error(a: &[f64], b: &[f64], c: &[f64], h: usize) -> f64 {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let dc = matmul(h, h, h, &d, c);
        (0..h * h).map(|i| dc[i] * d[i]).sum()
    }

    #[test]
    fn the_head_svd_is_the_best_rank_r_map_under_the_input_moment() {
        let (h, d) = (12, 4);
        let mut rng = SplitMix64::new(11);
        let w_v = random(d * h, &mut rng);
        let w_o = random(h * d, &mut rng);
        // A full-rank second moment X^T X / n.
        let x = random(40 * h, &mut rng);
        let c: Vec<f64> = matmul(h, 40, h, &transpose(40, h, &x), &x)
            .iter()
            .map(|v| v / 40.0)
            .collect();
        let c_sqrt = psd_sqrt(h, &c).expect("sqrt");
        let svd = head_svd(&w_v, &w_o, &c_sqrt, h, d).expect("svd");
        let m = matmul(h, d, h, &w_o, &w_v);
        // Direct reference: the SVD of the [h, h] matrix M C^1/2.
        let direct = thin_svd(h, h, &matmul(h, h, h, &m, &c_sqrt)).expect("direct");
        for r in 1..=d {
            assert!(
                (svd.s[r - 1] - direct.s[r - 1]).abs() < 1e-10,
                "singular value {r}"
            );
            let approx = matmul(
                h,
                r,
                h,
                &svd.output_columns(r),
                &svd.value_rows(r, &w_v, &w_o, d),
            );
            // Eckart-Young: the error is the sum of the discarded squared singular values.
            let tail: f64 = direct.s[r..].iter().map(|s| s * s).sum();
            let err = weighted_error(&m, &approx, &c, h);
            assert!(
                (err - tail).abs() < 1e-9 * (1.0 + tail),
                "rank {r}: {err} vs {tail}"
            );
        }
        // Full rank reproduces the map.
        let full = matmul(
            h,
            d,
            h,
            &svd.output_columns(d),
            &svd.value_rows(d, &w_v, &w_o, d),
        );
        assert!(m.iter().zip(&full).all(|(a, b)| (a - b).abs() < 1e-10));
    }

    #[test]
    fn ridge_leverage_is_the_diagonal_of_c_over_c_plus_lambda() {
        // Diagonal C: the leverage of dimension i is c_i / (c_i + lambda).
        let c = [3.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let s = ridge_leverage(3, &c, 1.0).expect("leverage");
        assert!((s[0] - 0.75).abs() < 1e-12 && (s[1] - 0.5).abs() < 1e-12 && s[2].abs() < 1e-12);
        assert_eq!(descending(&s), vec![0, 1, 2]);
    }

    #[test]
    fn output_moments_include_the_bias() {
        // y = 2 x0 + 1 with E[x0^2] = 4, E[x0] = 1: E[y^2] = 16 + 4 + 1.
        let m = output_second_moments(&[2.0, 0.0], &[1.0], 2, &[4.0, 0.0, 0.0, 0.0], &[1.0, 0.0]);
        assert_eq!(m, vec![21.0]);
    }
}
