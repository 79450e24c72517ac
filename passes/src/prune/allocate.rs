//! How many units of each kind every layer loses: the target in parameters, whole layers first, then hidden
//! dimensions (one set for the whole residual stream), then heads and neurons (uniformly, or lowest scores across
//! layers first).

use std::collections::BTreeSet;

use serde::Serialize;

use super::score::Scores;
use super::{Allocation, Config, Structure};
use crate::error::{Error, Result};
use crate::pass::PlanContext;

/// What a layer keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerKeep {
    /// The layer's index before the pass.
    pub layer: usize,
    /// Kept heads, by position in the layer's heads before the pass, ascending.
    pub heads: Vec<usize>,
    /// Kept FFN neurons, ascending.
    pub neurons: Vec<usize>,
}

/// A pruning decision: a pure function of the model, the scores and the settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Layers removed, by index before the pass.
    pub dropped_layers: Vec<usize>,
    /// The kept layers, in order (they are renumbered 0..).
    pub layers: Vec<LayerKeep>,
    /// Kept hidden dimensions, ascending, when hidden dimensions are pruned.
    pub hidden: Option<Vec<usize>>,
}

/// Parameters of one head at position `p`'s shape, and of one neuron, at hidden width `h`.
fn head_parameters(h: usize, qk: usize, vo: usize) -> usize {
    2 * (h * qk + qk) + (h * vo + vo) + vo * h
}

fn neuron_parameters(h: usize) -> usize {
    2 * h + 1
}

/// The target (a fraction of the encoder's parameters, or the bytes the model's tensors should take) as a number
/// of parameters to remove.
pub(crate) fn target_parameters(
    target: Option<f64>,
    target_bytes: Option<u64>,
    ctx: &PlanContext,
) -> Result<usize> {
    let encoder = ctx.config.bert().encoder_parameters();
    if let Some(t) = target {
        return Ok((t * encoder as f64).round() as usize);
    }
    let Some(bytes) = target_bytes else {
        return Ok(0);
    };
    let total = ctx.info.total_bytes();
    let weights: Vec<_> = ctx
        .info
        .tensors
        .iter()
        .filter(|t| t.layer.is_some())
        .collect();
    if let Some(q) = weights.iter().find(|t| t.encoding.is_some()) {
        return Err(Error::Config {
            key: "target-bytes".into(),
            problem: format!(
                "tensor `{}` is already quantized; prune before quantizing",
                q.name
            ),
        });
    }
    let elem = weights.first().map_or(4, |t| t.dtype.size());
    let removable = (total as u64).saturating_sub(bytes) as usize;
    Ok(removable.div_ceil(elem))
}

/// Decide what every layer keeps.
pub fn decide(config: &Config, ctx: &PlanContext, scores: &Scores) -> Result<Decision> {
    let c = ctx.config.bert();
    let h = c.hidden_size;
    let n_layers = c.layers.len();
    let encoder = c.encoder_parameters();
    let target_key = if config.target_bytes.is_some() {
        "target-bytes"
    } else {
        "target"
    };
    let target = target_parameters(config.target, config.target_bytes, ctx)?;

    // Whole layers first, lowest block influence first (ties: the later layer).
    if config.drop_layers >= n_layers {
        return Err(Error::Config {
            key: "drop-layers".into(),
            problem: format!(
                "is {}, but the model has {n_layers} layers: at most {} can be dropped",
                config.drop_layers,
                n_layers - 1
            ),
        });
    }
    let mut dropped: Vec<usize> = Vec::new();
    if config.drop_layers > 0 {
        let influence = scores.layers.as_ref().ok_or_else(|| Error::Config {
            key: "drop-layers".into(),
            problem: "needs layer scores from calibration data".into(),
        })?;
        let mut order: Vec<usize> = (0..n_layers).collect();
        order.sort_by(|&a, &b| influence[a].total_cmp(&influence[b]).then(b.cmp(&a)));
        dropped = order[..config.drop_layers].to_vec();
        dropped.sort_unstable();
    }
    let dropped_params: usize = dropped
        .iter()
        .map(|&l| c.layer_parameters(h, &c.layers[l]))
        .sum();
    let kept: Vec<usize> = (0..n_layers).filter(|l| !dropped.contains(l)).collect();
    let mut rest = target.saturating_sub(dropped_params);

    let use_heads = config.structures.contains(&Structure::Heads);
    let use_neurons = config.structures.contains(&Structure::Neurons);
    let use_hidden = config.structures.contains(&Structure::Hidden);
    let min_hidden = config.min_hidden.clamp(1, h);
    if use_hidden {
        // Everything the structures allow removed, at once: the bound of the target.
        let floor: usize = kept
            .iter()
            .map(|&l| {
                let s = &c.layers[l];
                let mut m = s.clone();
                if use_heads {
                    m.heads.truncate(config.min_heads.min(s.heads.len()));
                }
                if use_neurons {
                    m.intermediate_size = config.min_neurons.min(s.intermediate_size);
                }
                c.layer_parameters(min_hidden, &m)
            })
            .sum();
        let reachable = encoder - floor;
        if target > reachable {
            return Err(unreachable(
                config,
                target_key,
                target,
                reachable,
                encoder,
                Some(min_hidden),
            ));
        }
    }
    // Hidden dimensions first: their share of the target is the fraction every competing kind loses (each kind's
    // pool in parameters at the current width); heads and neurons then take what is left, exactly, at the new width.
    let at_width = |w: usize| -> usize {
        kept.iter()
            .map(|&l| c.layer_parameters(w, &c.layers[l]))
            .sum()
    };
    let mut hidden_kept = None;
    let h = if use_hidden {
        let per_dim = at_width(h) - at_width(h - 1);
        let pool_hidden = per_dim * h;
        let pool_hn: usize = kept
            .iter()
            .map(|&l| {
                let s = &c.layers[l];
                (if use_heads {
                    s.heads.len() * head_parameters(h, s.qk_head_dim, s.vo_head_dim)
                } else {
                    0
                }) + if use_neurons {
                    s.intermediate_size * neuron_parameters(h)
                } else {
                    0
                }
            })
            .sum();
        let fraction = rest as f64 / (pool_hidden + pool_hn).max(1) as f64;
        let share = if use_heads || use_neurons {
            fraction * pool_hidden as f64
        } else {
            rest as f64
        };
        let k = ((share / per_dim.max(1) as f64).round() as usize).min(h - min_hidden);
        let removed = lowest(&scores.hidden, k);
        hidden_kept = Some((0..h).filter(|d| !removed.contains(d)).collect::<Vec<_>>());
        rest = rest.saturating_sub(at_width(h) - at_width(h - k));
        h - k
    } else {
        h
    };
    let ph = |l: usize| {
        let s = &c.layers[l];
        head_parameters(h, s.qk_head_dim, s.vo_head_dim)
    };
    let pn = neuron_parameters(h);
    let min_h = |l: usize| config.min_heads.min(c.layers[l].heads.len());
    let min_n = |l: usize| config.min_neurons.min(c.layers[l].intermediate_size);
    let all_h: usize = kept.iter().map(|&l| c.layers[l].heads.len() * ph(l)).sum();
    let all_n: usize = kept
        .iter()
        .map(|&l| c.layers[l].intermediate_size * pn)
        .sum();
    let max_h: usize = kept
        .iter()
        .map(|&l| (c.layers[l].heads.len() - min_h(l)) * ph(l))
        .sum();
    let max_n: usize = kept
        .iter()
        .map(|&l| (c.layers[l].intermediate_size - min_n(l)) * pn)
        .sum();
    let (pool_h, pool_n) = (
        if use_heads { all_h } else { 0 },
        if use_neurons { all_n } else { 0 },
    );
    let reachable =
        dropped_params + if use_heads { max_h } else { 0 } + if use_neurons { max_n } else { 0 };
    if !use_hidden && target > reachable {
        return Err(unreachable(
            config, target_key, target, reachable, encoder, None,
        ));
    }

    // Heads take their share of the remaining target (all of it when neurons are not pruned).
    let fraction = rest as f64 / (pool_h + pool_n).max(1) as f64;
    let head_target = if use_neurons {
        (fraction * pool_h as f64).round() as usize
    } else {
        rest
    };
    let mut removed_heads: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n_layers];
    let mut removed_params = 0usize;
    if use_heads && head_target > 0 {
        match config.allocation {
            Allocation::Uniform => {
                for &l in &kept {
                    let nh = c.layers[l].heads.len();
                    let share = head_target as f64 * (nh * ph(l)) as f64 / pool_h as f64;
                    let k = ((share / ph(l) as f64).round() as usize).min(nh - min_h(l));
                    removed_heads[l] = lowest(&scores.heads[l], k);
                    removed_params += k * ph(l);
                }
            }
            Allocation::PerLayer => {
                let all = ascending(&kept, &scores.heads);
                for (_, l, p) in all {
                    if removed_params + ph(l) / 2 >= head_target {
                        break;
                    }
                    if c.layers[l].heads.len() - removed_heads[l].len() > min_h(l) {
                        removed_heads[l].insert(p);
                        removed_params += ph(l);
                    }
                }
            }
        }
    }

    // Neurons take what remains.
    let neuron_target = rest.saturating_sub(removed_params);
    let mut removed_neurons: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n_layers];
    if use_neurons && neuron_target > 0 {
        let count = (neuron_target as f64 / pn as f64).round() as usize;
        match config.allocation {
            Allocation::Uniform => {
                let total: usize = kept.iter().map(|&l| c.layers[l].intermediate_size).sum();
                // Largest-remainder rounding so the layers' counts add up to `count`.
                let mut given = 0usize;
                let mut shares: Vec<(usize, f64)> = Vec::new();
                let mut counts = vec![0usize; n_layers];
                for &l in &kept {
                    let exact =
                        count as f64 * c.layers[l].intermediate_size as f64 / total.max(1) as f64;
                    counts[l] = exact.floor() as usize;
                    given += counts[l];
                    shares.push((l, exact - exact.floor()));
                }
                shares.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                for (l, _) in shares.iter().take(count.saturating_sub(given)) {
                    counts[*l] += 1;
                }
                for &l in &kept {
                    let k = counts[l].min(c.layers[l].intermediate_size - min_n(l));
                    removed_neurons[l] = lowest(&scores.neurons[l], k);
                }
            }
            Allocation::PerLayer => {
                let all = ascending(&kept, &scores.neurons);
                let mut left = count;
                for (_, l, j) in all {
                    if left == 0 {
                        break;
                    }
                    if c.layers[l].intermediate_size - removed_neurons[l].len() > min_n(l) {
                        removed_neurons[l].insert(j);
                        left -= 1;
                    }
                }
            }
        }
    }

    Ok(Decision {
        dropped_layers: dropped,
        layers: kept
            .iter()
            .map(|&l| LayerKeep {
                layer: l,
                heads: (0..c.layers[l].heads.len())
                    .filter(|p| !removed_heads[l].contains(p))
                    .collect(),
                neurons: (0..c.layers[l].intermediate_size)
                    .filter(|j| !removed_neurons[l].contains(j))
                    .collect(),
            })
            .collect(),
        hidden: hidden_kept,
    })
}

/// The plan error of a target beyond what the settings can remove, with the achievable range.
fn unreachable(
    config: &Config,
    key: &str,
    target: usize,
    reachable: usize,
    encoder: usize,
    min_hidden: Option<usize>,
) -> Error {
    let names: Vec<&str> = config.structures.iter().map(|s| s.name()).collect();
    let hidden = min_hidden.map_or(String::new(), |m| format!("min-hidden = {m}, "));
    Error::Config {
        key: key.into(),
        problem: format!(
            "asks to remove {target} encoder parameters ({:.1}%), but pruning [{}] with {hidden}min-heads = {}, min-neurons = {} and drop-layers = {} removes at most {reachable} ({:.1}%): the achievable range of `target` is 0 to {:.4}",
            100.0 * target as f64 / encoder as f64,
            names.join(", "),
            config.min_heads,
            config.min_neurons,
            config.drop_layers,
            100.0 * reachable as f64 / encoder as f64,
            reachable as f64 / encoder as f64
        ),
    }
}

/// Every unit `(score, layer, index)` of the layers `kept`, lowest score first (ties: lower layer, then index).
fn ascending(kept: &[usize], scores: &[Vec<f64>]) -> Vec<(f64, usize, usize)> {
    let mut all: Vec<(f64, usize, usize)> = kept
        .iter()
        .flat_map(|&l| scores[l].iter().enumerate().map(move |(i, s)| (*s, l, i)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    all
}

/// The `k` lowest-scoring indices (ties: the lower index goes first).
fn lowest(scores: &[f64], k: usize) -> BTreeSet<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order.into_iter().take(k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_takes_the_smallest_scores_with_stable_ties() {
        let s = [0.5, 0.1, 0.1, 0.9];
        assert_eq!(lowest(&s, 2), BTreeSet::from([1, 2]));
        assert_eq!(lowest(&s, 0), BTreeSet::new());
    }

    #[test]
    fn unit_parameters_match_the_layer_count() {
        use compressor_models::arch::LayerShape;
        let full = LayerShape {
            heads: vec![0, 1],
            qk_head_dim: 4,
            vo_head_dim: 4,
            intermediate_size: 3,
            source: 0,
            low_rank: Default::default(),
        };
        let one_head = LayerShape {
            heads: vec![0],
            ..full.clone()
        };
        let fewer = LayerShape {
            intermediate_size: 2,
            ..full.clone()
        };
        let h = 8;
        let bert = compressor_models::Family::Bert.naming();
        assert_eq!(
            full.parameters(bert, h) - one_head.parameters(bert, h),
            head_parameters(h, 4, 4)
        );
        assert_eq!(
            full.parameters(bert, h) - fewer.parameters(bert, h),
            neuron_parameters(h)
        );
    }
}
