//! Cutting an elastic model (`qa-svd` with `elastic-rates`) at one of its rates: its layers are stored sorted, best
//! channels first, so the model at a rate keeps each layer's first FFN neurons and each head's first query/key and
//! value dimensions, as the extension's `elastic` table gives them. Nothing is recomputed.

use std::ops::Range;

use crate::arch::{LayerShape, ModelConfig};
use crate::error::{Error, Result};
use crate::family::Slot;
use crate::store::TensorStore;

/// Cut `store` (decoded to dense first) to the widths of `rate` in `config`'s elastic table; returns the config
/// of the cut model (per-layer shapes, no elastic table).
pub fn cut(config: &ModelConfig, store: &mut TensorStore, rate: f64) -> Result<ModelConfig> {
    let c = config.bert();
    let rates: Vec<String> = c.elastic.iter().map(|e| e.rate.to_string()).collect();
    if rates.is_empty() {
        return Err(Error::ConfigKey {
            path: config.path.clone(),
            key: format!("{}.elastic", crate::arch::EXTENSION_KEY),
            problem: "is missing: the model holds no elastic rates\nhint: run `qa-svd` with `elastic-rates = [...]` to make a model that can be cut later".into(),
        });
    }
    let entry = c
        .elastic
        .iter()
        .find(|e| (e.rate - rate).abs() < 1e-9)
        .ok_or_else(|| Error::ConfigKey {
            path: config.path.clone(),
            key: format!("{}.elastic", crate::arch::EXTENSION_KEY),
            problem: format!(
                "has no rate {rate}: the model can be cut at {}",
                rates.join(", ")
            ),
        })?;
    store.densify_all()?;
    let n = c.naming();
    let mut layers = Vec::with_capacity(c.layers.len());
    for (l, (s, w)) in c.layers.iter().zip(&entry.layers).enumerate() {
        let name = |slot: Slot, part: &str| format!("{}.{part}", n.linear(l, slot));
        // The first `keep` of every `width`-wide block of `blocks`.
        let lead = |blocks: usize, width: usize, keep: usize| -> Vec<Range<usize>> {
            (0..blocks).map(|j| j * width..j * width + keep).collect()
        };
        if s.has_ffn() && w.intermediate_size < s.intermediate_size {
            let rows = lead(1, s.intermediate_size, w.intermediate_size);
            store.keep_row_ranges(&name(Slot::Up, "weight"), &rows)?;
            store.keep_row_ranges(&name(Slot::Up, "bias"), &rows)?;
            store.keep_col_ranges(&name(Slot::Down, "weight"), &rows)?;
        }
        if s.has_attention() {
            let nh = s.heads.len();
            if w.qk_head_dim < s.qk_head_dim {
                let rows = lead(nh, s.qk_head_dim, w.qk_head_dim);
                for m in [Slot::Query, Slot::Key] {
                    store.keep_row_ranges(&name(m, "weight"), &rows)?;
                    store.keep_row_ranges(&name(m, "bias"), &rows)?;
                }
            }
            if w.vo_head_dim < s.vo_head_dim {
                let rows = lead(nh, s.vo_head_dim, w.vo_head_dim);
                store.keep_row_ranges(&name(Slot::Value, "weight"), &rows)?;
                store.keep_row_ranges(&name(Slot::Value, "bias"), &rows)?;
                store.keep_col_ranges(&name(Slot::AttnOut, "weight"), &rows)?;
            }
        }
        layers.push(LayerShape {
            intermediate_size: w.intermediate_size,
            qk_head_dim: w.qk_head_dim,
            vo_head_dim: w.vo_head_dim,
            low_rank: Default::default(),
            ..s.clone()
        });
    }
    let mut out = config.clone();
    out.set_layers(layers)?;
    Ok(out)
}
