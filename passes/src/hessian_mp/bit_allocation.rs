//! Mixed-precision bit allocation: one width per block from a small menu, under a size budget.
//!
//! - [`optimal`]: minimises `sum_i cost_i(b_i)` (Q-BERT: `Omega_i * ||Q_b(W_i) - W_i||^2`) subject to
//!   `sum_i size_i(b_i) <= budget`, exactly. Dynamic programming over blocks that keeps the Pareto frontier of
//!   (total size, total cost) of partial assignments: a partial assignment that is larger and no cheaper than
//!   another cannot be part of an optimum, so dropping it is exact. Sizes are integers (bits or bytes).
//! - [`top_k`]: the paper's fixed schemes ("2/3 MP"): the `k` most sensitive blocks at the high width, the rest at
//!   the low width, with the largest `k` that fits the budget; `reversed` gives the high width to the least
//!   sensitive blocks instead (the MP-rev ablation).

use std::fmt;

/// One width a block may take: its size in budget units and the cost of choosing it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub bits: u8,
    pub size: u64,
    pub cost: f64,
}

/// A budget no assignment can meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Infeasible {
    pub budget: u64,
    /// Size with every block at its smallest choice.
    pub smallest: u64,
    /// Size with every block at its largest choice.
    pub largest: u64,
}

impl fmt::Display for Infeasible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a budget of {} cannot be met: assignments range from {} (every block at its lowest width) to {} (every block at its highest)",
            self.budget, self.smallest, self.largest
        )
    }
}

fn bounds(blocks: &[Vec<Choice>], budget: u64) -> Infeasible {
    let sizes = |c: &Vec<Choice>| c.iter().map(|x| x.size).collect::<Vec<_>>();
    Infeasible {
        budget,
        smallest: blocks
            .iter()
            .map(|c| sizes(c).into_iter().min().unwrap_or(0))
            .sum(),
        largest: blocks
            .iter()
            .map(|c| sizes(c).into_iter().max().unwrap_or(0))
            .sum(),
    }
}

/// The index of the chosen [`Choice`] of every block, minimising total cost within `budget`. Ties go to the smaller
/// total size, then to the earlier choice. Every block needs at least one choice.
pub fn optimal(blocks: &[Vec<Choice>], budget: u64) -> Result<Vec<usize>, Infeasible> {
    let limits = bounds(blocks, budget);
    if blocks.iter().any(Vec::is_empty) || limits.smallest > budget {
        return Err(limits);
    }
    // frontier: (size, cost, index of the parent state in the previous stage, choice); sorted by size with cost
    // strictly decreasing.
    let mut stages: Vec<Vec<(u64, f64, usize, usize)>> = Vec::with_capacity(blocks.len());
    let mut frontier: Vec<(u64, f64, usize, usize)> = vec![(0, 0.0, 0, 0)];
    for choices in blocks {
        let mut next: Vec<(u64, f64, usize, usize)> =
            Vec::with_capacity(frontier.len() * choices.len());
        for (p, &(size, cost, _, _)) in frontier.iter().enumerate() {
            for (c, choice) in choices.iter().enumerate() {
                let s = size + choice.size;
                if s <= budget {
                    next.push((s, cost + choice.cost, p, c));
                }
            }
        }
        next.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut pruned: Vec<(u64, f64, usize, usize)> = Vec::with_capacity(next.len());
        for state in next {
            if pruned.last().is_none_or(|last| state.1 < last.1) {
                pruned.push(state);
            }
        }
        stages.push(std::mem::replace(&mut frontier, pruned));
    }
    stages.push(frontier);
    // The last state of the final frontier is the cheapest (cost decreases along it).
    let mut index = stages.last().map_or(0, |f| f.len().saturating_sub(1));
    let mut picks = vec![0; blocks.len()];
    for b in (0..blocks.len()).rev() {
        let (_, _, parent, choice) = stages[b + 1][index];
        picks[b] = choice;
        index = parent;
    }
    Ok(picks)
}

/// Fixed two-width scheme: blocks sorted by `omega` (descending, or ascending when `reversed`; ties by index), the
/// first `k` at `high`, the rest at `low`, with the largest `k` whose total `size(block, bits)` fits `budget`.
/// Returns the bits of every block.
pub fn top_k(
    omega: &[f64],
    low: u8,
    high: u8,
    reversed: bool,
    budget: u64,
    size: impl Fn(usize, u8) -> u64,
) -> Result<Vec<u8>, Infeasible> {
    let n = omega.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let o = omega[b].total_cmp(&omega[a]);
        (if reversed { o.reverse() } else { o }).then(a.cmp(&b))
    });
    let mut bits = vec![low; n];
    let mut total: u64 = (0..n).map(|i| size(i, low)).sum();
    if total > budget {
        let largest = (0..n).map(|i| size(i, low.max(high))).sum();
        return Err(Infeasible {
            budget,
            smallest: total.min(largest),
            largest: total.max(largest),
        });
    }
    for &i in &order {
        let t = total - size(i, low) + size(i, high);
        if t > budget {
            break;
        }
        total = t;
        bits[i] = high;
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_force(blocks: &[Vec<Choice>], budget: u64) -> Option<f64> {
        let mut best: Option<f64> = None;
        let total: usize = blocks.iter().map(Vec::len).product();
        for mut code in 0..total {
            let (mut size, mut cost) = (0, 0.0);
            for choices in blocks {
                let c = choices[code % choices.len()];
                code /= choices.len();
                size += c.size;
                cost += c.cost;
            }
            if size <= budget && best.is_none_or(|b| cost < b) {
                best = Some(cost);
            }
        }
        best
    }

    /// Hand-made tables: sizes `numel * bits`, cost `omega * err(bits)` with error quartering per extra bit.
    fn table(seed: u64, n: usize) -> Vec<Vec<Choice>> {
        let mut rng = compressor_models::rng::Rng::new(seed);
        (0..n)
            .map(|_| {
                let numel = [64u64, 256, 1024][rng.below(3)];
                let omega = rng.next_f64() * 10.0;
                let base = 1.0 + rng.next_f64();
                [2u8, 3, 4, 8]
                    .iter()
                    .map(|&bits| Choice {
                        bits,
                        size: numel * u64::from(bits),
                        cost: omega * base * numel as f64 * 4f64.powi(-i32::from(bits)),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn optimal_matches_brute_force_on_hand_made_tables() {
        let mut checked = 0;
        for seed in 0..40 {
            let blocks = table(seed, 6);
            let limits = bounds(&blocks, 0);
            for frac in [0.0, 0.1, 0.33, 0.5, 0.77, 1.0] {
                let budget =
                    limits.smallest + ((limits.largest - limits.smallest) as f64 * frac) as u64;
                let picks = optimal(&blocks, budget).expect("feasible");
                let size: u64 = picks.iter().zip(&blocks).map(|(&p, c)| c[p].size).sum();
                let cost: f64 = picks.iter().zip(&blocks).map(|(&p, c)| c[p].cost).sum();
                let best = brute_force(&blocks, budget).expect("feasible");
                assert!(size <= budget, "seed {seed}: {size} over {budget}");
                assert!(
                    (cost - best).abs() <= 1e-9 * best.abs().max(1.0),
                    "seed {seed} budget {budget}: DP {cost} vs brute force {best}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 240);
    }

    #[test]
    fn an_impossible_budget_names_the_achievable_range() {
        let blocks = table(3, 4);
        let limits = bounds(&blocks, 0);
        let err = optimal(&blocks, limits.smallest - 1).expect_err("too small");
        assert_eq!(err.smallest, limits.smallest);
        assert_eq!(err.largest, limits.largest);
        assert!(err.to_string().contains(&limits.smallest.to_string()));
        assert!(optimal(&blocks, limits.smallest).is_ok());
    }

    #[test]
    fn top_k_gives_the_high_width_to_the_most_sensitive_blocks_and_reversed_to_the_least() {
        let omega = [1.0, 5.0, 3.0, 0.5];
        let size = |_: usize, b: u8| 10 * u64::from(b);
        // Budget for two blocks at 3 bits and two at 2.
        let bits = top_k(&omega, 2, 3, false, 100, size).expect("fits");
        assert_eq!(bits, vec![2, 3, 3, 2]);
        let rev = top_k(&omega, 2, 3, true, 100, size).expect("fits");
        assert_eq!(rev, vec![3, 2, 2, 3]);
        let err = top_k(&omega, 2, 3, false, 79, size).expect_err("below all-low");
        assert_eq!((err.smallest, err.largest), (80, 120));
    }
}
