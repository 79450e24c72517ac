//! Scores and masks: GAPrune's domain alignment importance (DAI) and the baselines, then which weights are kept.
//!
//! `DAI = [(F_dom - beta F_gen) |theta| + gamma sqrt|theta|] (1 + alpha s)` (Tang & Yang, arXiv 2509.10844), with
//! the alignment `s` read one of three ways (see [`Alignment`]). Lowest scores are pruned: globally over every
//! selected weight (selection, no full sort) or the same fraction of every tensor; or, for 2:4, the 2 lowest of
//! every group of 4 consecutive inputs of a row.

use serde::{Deserialize, Serialize};

/// How weights are scored (higher: kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scoring {
    /// DAI from both Fisher diagonals, the weight and the gradient alignment.
    #[default]
    Gaprune,
    /// `|theta|` (no data).
    Magnitude,
    /// `F_gen theta^2`: the general-data Fisher saliency alone.
    FisherGeneral,
    /// `F_dom theta^2`: the domain-data Fisher saliency alone.
    FisherDomain,
}

impl Scoring {
    pub fn needs_gradients(self) -> bool {
        self != Scoring::Magnitude
    }
}

/// The reading of GAPrune's alignment `s`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Alignment {
    /// The cosine of the tensor's mean general and mean domain gradients, the same `s` for every weight of the
    /// tensor (the paper's "average gradients, then cosine").
    #[default]
    Cosine,
    /// Per weight: the sign agreement of its two mean gradients (+1, -1, or 0 where either is 0).
    Sign,
    /// Per weight, the official code's array: `(g_gen / |g_gen|_F) (g_dom / |g_dom|_F)`. Its elements sum to the
    /// tensor's cosine, so each is about `1 / numel`: `1 + alpha s` is 1 to within ~1e-6 and the mask is the one of
    /// `alpha = 0` (kept for the regression test that shows it; the code's 3x3 smoothing is not applied).
    NormalizedProduct,
}

/// The DAI hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dai {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub alignment: Alignment,
}

/// What one tensor's score needs: its weights, and (for data scores) both Fisher diagonals and mean gradients, all
/// `[out, in]` row-major.
pub struct Inputs<'a> {
    pub theta: &'a [f32],
    pub fisher_general: Option<&'a [f64]>,
    pub fisher_domain: Option<&'a [f64]>,
    pub gradient_general: Option<&'a [f64]>,
    pub gradient_domain: Option<&'a [f64]>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The cosine of two vectors (0 when either is 0).
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let n = (dot(a, a) * dot(b, b)).sqrt();
    if n > 0.0 {
        dot(a, b) / n
    } else {
        0.0
    }
}

/// A missing input (a bug in the caller, reported rather than panicking).
fn need<'a>(x: Option<&'a [f64]>, what: &str) -> std::result::Result<&'a [f64], String> {
    x.ok_or_else(|| format!("the {what} is missing"))
}

/// The score of every weight of one tensor.
pub fn scores(scoring: Scoring, dai: &Dai, x: &Inputs) -> std::result::Result<Vec<f64>, String> {
    let theta = x.theta;
    Ok(match scoring {
        Scoring::Magnitude => theta.iter().map(|t| f64::from(t.abs())).collect(),
        Scoring::FisherGeneral | Scoring::FisherDomain => {
            let f = if scoring == Scoring::FisherGeneral {
                need(x.fisher_general, "general Fisher diagonal")?
            } else {
                need(x.fisher_domain, "domain Fisher diagonal")?
            };
            theta
                .iter()
                .zip(f)
                .map(|(t, f)| f * f64::from(*t).powi(2))
                .collect()
        }
        Scoring::Gaprune => {
            let fg = need(x.fisher_general, "general Fisher diagonal")?;
            let fd = need(x.fisher_domain, "domain Fisher diagonal")?;
            let gg = need(x.gradient_general, "general mean gradient")?;
            let gd = need(x.gradient_domain, "domain mean gradient")?;
            let tensor_cos = cosine(gg, gd);
            let (ng, nd) = (dot(gg, gg).sqrt(), dot(gd, gd).sqrt());
            (0..theta.len())
                .map(|j| {
                    let s = match dai.alignment {
                        Alignment::Cosine => tensor_cos,
                        Alignment::Sign => {
                            let p = gg[j] * gd[j];
                            if p > 0.0 {
                                1.0
                            } else if p < 0.0 {
                                -1.0
                            } else {
                                0.0
                            }
                        }
                        Alignment::NormalizedProduct if ng > 0.0 && nd > 0.0 => {
                            (gg[j] / ng) * (gd[j] / nd)
                        }
                        Alignment::NormalizedProduct => 0.0,
                    };
                    let a = f64::from(theta[j].abs());
                    ((fd[j] - dai.beta * fg[j]) * a + dai.gamma * a.sqrt()) * (1.0 + dai.alpha * s)
                })
                .collect()
        }
    })
}

/// Which weights are kept (`true`) when `pruned` of the weights with the lowest scores go, over all tensors
/// together: ties broken by (tensor, position), so the set is exact and deterministic. Uses selection
/// (`select_nth_unstable_by`), not a full sort.
pub fn global_mask(scores: &[Vec<f64>], pruned: usize) -> Vec<Vec<bool>> {
    let mut keep: Vec<Vec<bool>> = scores.iter().map(|s| vec![true; s.len()]).collect();
    let mut all: Vec<(f64, u32, u32)> = scores
        .iter()
        .enumerate()
        .flat_map(|(t, s)| {
            s.iter()
                .enumerate()
                .map(move |(j, &v)| (v, t as u32, j as u32))
        })
        .collect();
    if pruned == 0 {
        return keep;
    }
    let order = |a: &(f64, u32, u32), b: &(f64, u32, u32)| {
        a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
    };
    let pruned = pruned.min(all.len());
    if pruned < all.len() {
        all.select_nth_unstable_by(pruned, order);
    }
    for &(_, t, j) in &all[..pruned] {
        keep[t as usize][j as usize] = false;
    }
    keep
}

/// How many weights each layer loses under the proportional per-layer budget: `round(target x total)` split in
/// proportion to the layers' `sizes` (floors first; the remainder one each to the largest layers, ties to the lower
/// index), each then clamped to `[floor(rho.0 n), floor(rho.1 n)]` of its layer's `n`.
pub fn layer_budgets(sizes: &[usize], target: f64, rho: (f64, f64)) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    let k = ((target * total as f64).round() as usize).min(total);
    let share = |n: usize| n as f64 / total.max(1) as f64;
    let mut out: Vec<usize> = sizes
        .iter()
        .map(|&n| (share(n) * k as f64).floor() as usize)
        .collect();
    let deficit = k.saturating_sub(out.iter().sum());
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    for &i in order.iter().take(deficit) {
        out[i] += 1;
    }
    for (k, &n) in out.iter_mut().zip(sizes) {
        let lo = (rho.0 * n as f64).floor() as usize;
        let hi = (rho.1 * n as f64).floor() as usize;
        *k = (*k).clamp(lo, hi.max(lo));
    }
    out
}

/// Masks under the proportional per-layer budget ([`layer_budgets`]): the tensors of one layer (`layers[i]`, `None`
/// for tensors outside the encoder layers, which form one group) lose their layer's budget of lowest scores
/// together.
pub fn layer_masks(
    scores: &[Vec<f64>],
    layers: &[Option<usize>],
    target: f64,
    rho: (f64, f64),
) -> Vec<Vec<bool>> {
    let mut groups: Vec<Option<usize>> = layers.to_vec();
    groups.sort_unstable();
    groups.dedup();
    let members: Vec<Vec<usize>> = groups
        .iter()
        .map(|g| (0..layers.len()).filter(|&i| layers[i] == *g).collect())
        .collect();
    let sizes: Vec<usize> = members
        .iter()
        .map(|m| m.iter().map(|&i| scores[i].len()).sum())
        .collect();
    let budgets = layer_budgets(&sizes, target, rho);
    let mut out: Vec<Vec<bool>> = vec![Vec::new(); scores.len()];
    for (m, budget) in members.iter().zip(budgets) {
        let group: Vec<Vec<f64>> = m.iter().map(|&i| scores[i].clone()).collect();
        for (&i, mask) in m.iter().zip(global_mask(&group, budget)) {
            out[i] = mask;
        }
    }
    out
}

/// The mask of one tensor losing its `pruned` lowest scores.
pub fn tensor_mask(scores: &[f64], pruned: usize) -> Vec<bool> {
    global_mask(std::slice::from_ref(&scores.to_vec()), pruned)
        .pop()
        .unwrap_or_default()
}

/// 2:4: in every group of 4 consecutive scores of a row of `cols` (a multiple of 4), the 2 highest are kept (ties:
/// the lower position).
pub fn two_four_mask(scores: &[f64]) -> Vec<bool> {
    let mut keep = vec![false; scores.len()];
    for (g, group) in scores.chunks(4).enumerate() {
        let mut order: Vec<usize> = (0..group.len()).collect();
        order.sort_by(|&a, &b| group[b].total_cmp(&group[a]).then(a.cmp(&b)));
        for &p in order.iter().take(2) {
            keep[4 * g + p] = true;
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_budgets_split_the_target_in_proportion_with_remainders_to_the_largest() {
        assert_eq!(layer_budgets(&[10, 30, 20], 0.5, (0.05, 0.95)), [5, 15, 10]);
        // round(4.5) = 5 over three equal layers: floors of 1, the remainder of 2 to the first two.
        assert_eq!(layer_budgets(&[3, 3, 3], 0.5, (0.05, 0.95)), [2, 2, 1]);
        // The bound binds at the extremes: layer 0 would lose 951 of 1,000 but may lose 950.
        assert_eq!(layer_budgets(&[1000, 10], 0.95, (0.05, 0.95)), [950, 9]);
    }

    #[test]
    fn layer_masks_prune_each_layer_by_its_own_lowest_scores() {
        // Layer 0 holds every low score; a global budget would take them all from it, per layer takes half each.
        let scores = vec![
            vec![0.1, 0.2, 0.3, 0.4],
            vec![0.5, 0.6, 0.7, 0.8],
            vec![9.0, 8.0, 7.0, 6.0],
        ];
        let layers = [Some(0), Some(0), Some(1)];
        let masks = layer_masks(&scores, &layers, 0.5, (0.05, 0.95));
        assert_eq!(masks[0], [false, false, false, false]);
        assert_eq!(masks[1], [true; 4]);
        assert_eq!(masks[2], [true, true, false, false]);
        let global = global_mask(&scores, 6);
        assert_eq!(global[2], [true; 4]);
    }
}
