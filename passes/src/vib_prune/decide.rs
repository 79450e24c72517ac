//! From trained masks to a pruning decision: the hard masks `log alpha < tau`, with `tau` the largest threshold
//! whose pruned model meets the target (the reference's threshold is 0; the plan reports what 0 would keep), and the
//! deterministic mask values `mu * 1[log alpha < tau]` that are folded into the weights.

use compressor_models::arch::{BertConfig, LayerShape};

use super::masks::{Kind, MaskSet};
use crate::prune::{Decision, LayerKeep};

/// A unit of a mask: (mask index, position in the mask).
type Unit = (usize, usize);

/// The hard decision with the values the kept units are scaled by.
#[derive(Debug, Clone, PartialEq)]
pub struct Hard {
    pub decision: Decision,
    /// Per mask (in the set's order), each unit's deterministic value (`mu` if kept, else 0).
    pub values: Vec<Vec<f32>>,
    /// The threshold on `log alpha` that was applied.
    pub threshold: f64,
    /// Encoder parameters of the pruned model.
    pub parameters: usize,
}

/// Which units of `set` are kept: those in `kept`.
fn decision_of(set: &MaskSet, config: &BertConfig, kept: &[Vec<bool>]) -> (Decision, usize) {
    let find = |kind: Kind, layer: Option<usize>| {
        set.vibs
            .iter()
            .position(|v| v.kind == kind && v.layer == layer)
    };
    let one = |kind: Kind, l: usize| find(kind, Some(l)).is_none_or(|i| kept[i][0]);
    let hidden = find(Kind::Hidden, None).map(|i| {
        let mut dims: Vec<usize> = (0..config.hidden_size).filter(|&d| kept[i][d]).collect();
        if dims.is_empty() {
            // The residual stream keeps at least its strongest dimension.
            let la = set.vibs[i].log_alpha();
            let best = (0..la.len())
                .min_by(|&a, &b| la[a].total_cmp(&la[b]))
                .unwrap_or(0);
            dims.push(best);
        }
        dims
    });
    let h = hidden.as_ref().map_or(config.hidden_size, Vec::len);
    let mut layers = Vec::with_capacity(config.layers.len());
    let mut parameters = 0;
    for (l, s) in config.layers.iter().enumerate() {
        let units = |kind: Kind, n: usize| -> Vec<usize> {
            match find(kind, Some(l)) {
                Some(i) => (0..n).filter(|&p| kept[i][p]).collect(),
                None => (0..n).collect(),
            }
        };
        let heads = if one(Kind::Attention, l) {
            units(Kind::Heads, s.heads.len())
        } else {
            Vec::new()
        };
        let neurons = if one(Kind::Ffn, l) {
            units(Kind::Neurons, s.intermediate_size)
        } else {
            Vec::new()
        };
        let shape = LayerShape {
            heads: heads.iter().map(|&p| s.heads[p]).collect(),
            intermediate_size: neurons.len(),
            ..s.clone()
        };
        parameters += shape.parameters(config.naming(), h);
        layers.push(LayerKeep {
            layer: l,
            heads,
            neurons,
        });
    }
    let hidden = hidden.filter(|d| d.len() != config.hidden_size);
    (
        Decision {
            dropped_layers: Vec::new(),
            layers,
            hidden,
        },
        parameters,
    )
}

/// The hard decision keeping at most `budget` encoder parameters: units are kept in ascending order of
/// `log alpha` (ties by mask, then position), as many as fit, then every later unit that still fits. Returns `None` when even keeping nothing but one
/// hidden dimension exceeds the budget.
pub fn hard(set: &MaskSet, config: &BertConfig, budget: usize) -> Option<Hard> {
    let mut units: Vec<(f64, Unit)> = set
        .vibs
        .iter()
        .enumerate()
        .flat_map(|(i, v)| {
            v.log_alpha()
                .into_iter()
                .enumerate()
                .map(move |(p, a)| (a, (i, p)))
        })
        .collect();
    units.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let kept_first = |k: usize| {
        let mut kept: Vec<Vec<bool>> = set.vibs.iter().map(|v| vec![false; v.mu.len()]).collect();
        for &(_, (i, p)) in &units[..k] {
            kept[i][p] = true;
        }
        kept
    };
    // Parameters grow with the number of units kept: find the most that fit.
    let fits = |k: usize| decision_of(set, config, &kept_first(k)).1 <= budget;
    if !fits(0) {
        return None;
    }
    let (mut lo, mut hi) = (0usize, units.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut kept = kept_first(lo);
    // Later units that still fit (a cheap head after an expensive hidden dimension that did not).
    for &(_, (i, p)) in &units[lo..] {
        kept[i][p] = true;
        if decision_of(set, config, &kept).1 > budget {
            kept[i][p] = false;
        }
    }
    let (decision, parameters) = decision_of(set, config, &kept);
    let threshold = units.get(lo).map_or(f64::INFINITY, |u| u.0);
    let values = set
        .vibs
        .iter()
        .zip(&kept)
        .map(|(v, k)| {
            v.mu.iter()
                .zip(k)
                .map(|(&m, &keep)| if keep { m } else { 0.0 })
                .collect()
        })
        .collect();
    Some(Hard {
        decision,
        values,
        threshold,
        parameters,
    })
}

/// The fewest encoder parameters the masks of `set` can leave: every masked unit removed but one hidden dimension.
pub fn minimum_parameters(set: &MaskSet, config: &BertConfig) -> usize {
    let nothing: Vec<Vec<bool>> = set.vibs.iter().map(|v| vec![false; v.mu.len()]).collect();
    decision_of(set, config, &nothing).1
}

/// The encoder parameters the reference threshold (`log alpha < 0`) would keep.
pub fn parameters_at_zero(set: &MaskSet, config: &BertConfig) -> usize {
    let kept: Vec<Vec<bool>> = set
        .vibs
        .iter()
        .map(|v| v.log_alpha().into_iter().map(|a| a < 0.0).collect())
        .collect();
    decision_of(set, config, &kept).1
}
