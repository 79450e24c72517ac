//! Physical removal: the plan of a decision (tensors reshaped, removed and renamed, the new layer shapes) and its
//! application to the store (rows and columns sliced in the tensors' own dtype, dropped layers renumbered).

use std::collections::BTreeMap;
use std::ops::Range;

use compressor_models::arch::{LayerShape, ModelConfig};
use compressor_models::family::Naming;
use compressor_models::{Kind, Role, Slot, TensorSpec};

use super::{arch_changes, Decision};
use crate::error::Result;
use crate::files::SideFiles;
use crate::pass::{PassContext, PassPlan, PlanContext, PlannedChange};

fn layer_prefix(n: &Naming, l: usize) -> String {
    format!("{}.", n.layer(l))
}

/// Whether the decision keeps everything (then the pass changes nothing at all).
fn keeps_everything(layers: &[LayerShape], d: &Decision) -> bool {
    d.hidden.is_none()
        && d.dropped_layers.is_empty()
        && d.layers.iter().all(|k| {
            k.heads.len() == layers[k.layer].heads.len()
                && k.neurons.len() == layers[k.layer].intermediate_size
        })
}

/// The plan of `decision`: every tensor of a kept layer that changes shape, disappears (a dropped sublayer) or is
/// renumbered, every tensor of a dropped layer, and the new layer shapes.
pub fn plan(ctx: &PlanContext, decision: &Decision) -> Result<PassPlan> {
    let layers = &ctx.config.bert().layers;
    let n = ctx.config.bert().naming();
    let mut plan = PassPlan::default();
    if keeps_everything(layers, decision) {
        plan.notes
            .push("the target removes nothing: the model is unchanged".into());
        return Ok(plan);
    }
    let changes = arch_changes(n, layers, decision);
    let mut after = ctx.config.clone();
    for change in &changes {
        change.apply(&mut after)?;
    }
    let specs: BTreeMap<String, TensorSpec> = after
        .expected_tensors()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    for &l in &decision.dropped_layers {
        plan.removed.extend(
            ctx.info
                .tensors
                .iter()
                .filter(|t| t.layer == Some(l))
                .map(|t| t.name.clone()),
        );
    }
    for (i, keep) in decision.layers.iter().enumerate() {
        let (from, to) = (layer_prefix(n, keep.layer), layer_prefix(n, i));
        for t in ctx
            .info
            .tensors
            .iter()
            .filter(|t| t.layer == Some(keep.layer))
        {
            let suffix = t.name.strip_prefix(&from).unwrap_or(&t.name);
            let new_name = format!("{to}{suffix}");
            let Some(spec) = specs.get(&new_name) else {
                plan.removed.push(t.name.clone());
                continue;
            };
            if spec.shape != t.shape {
                plan.changes.push(PlannedChange::reshaped(t, &spec.shape));
            }
            if i != keep.layer {
                plan.renamed.push((t.name.clone(), new_name));
            }
        }
    }
    if decision.hidden.is_some() {
        // The embeddings, pooler and classifier narrow too.
        for t in ctx.info.tensors.iter().filter(|t| t.layer.is_none()) {
            if let Some(spec) = specs.get(&t.name).filter(|s| s.shape != t.shape) {
                plan.changes.push(PlannedChange::reshaped(t, &spec.shape));
            }
        }
    }
    let removed_bytes: usize = plan
        .removed
        .iter()
        .filter_map(|n| ctx.info.get(n))
        .map(|t| t.bytes())
        .sum();
    let before = ctx.config.bert().encoder_parameters();
    let after_params = after.bert().encoder_parameters();
    let hidden = match &decision.hidden {
        Some(kept) => format!(
            ", hidden width {} -> {}",
            ctx.config.bert().hidden_size,
            kept.len()
        ),
        None => String::new(),
    };
    plan.notes.push(format!(
        "removes {:.1}% of the encoder's parameters ({before} -> {after_params}): {} layer(s) dropped, {} head(s) and {} FFN neuron(s) removed{hidden}; {} tensor(s) removed ({removed_bytes} bytes)",
        100.0 * (1.0 - after_params as f64 / before.max(1) as f64),
        decision.dropped_layers.len(),
        decision
            .layers
            .iter()
            .map(|k| layers[k.layer].heads.len() - k.heads.len())
            .sum::<usize>(),
        decision
            .layers
            .iter()
            .map(|k| layers[k.layer].intermediate_size - k.neurons.len())
            .sum::<usize>(),
        plan.removed.len(),
    ));
    if decision.hidden.is_some() {
        plan.notes.push("hidden dimensions are pruned: LayerNorm normalises over the kept dimensions, so stock BERT loaders cannot run the artifact; use `compressor export DIR --format remote-code`".into());
    }
    plan.arch.extend(changes);
    Ok(plan)
}

/// Ranges of `width`-wide blocks at the positions `keep`.
fn blocks(keep: &[usize], width: usize) -> Vec<Range<usize>> {
    keep.iter().map(|&p| p * width..(p + 1) * width).collect()
}

/// Apply `decision` to the store: slice what shrinks, remove what goes, renumber kept layers. Returns the changed
/// and renamed tensors' names after the pass, sorted.
pub fn apply(ctx: &mut PassContext, decision: &Decision) -> Result<Vec<String>> {
    let layers = ctx.config.bert().layers.clone();
    if keeps_everything(&layers, decision) {
        return Ok(Vec::new());
    }
    let n = ctx.config.bert().naming();
    let store = &mut *ctx.store;
    for &l in &decision.dropped_layers {
        let names: Vec<String> = store
            .names()
            .filter(|name| name.starts_with(&layer_prefix(n, l)))
            .map(str::to_string)
            .collect();
        for n in names {
            store.remove(&n);
        }
    }
    let mut changed = Vec::new();
    for (i, keep) in decision.layers.iter().enumerate() {
        let s = &layers[keep.layer];
        let p = layer_prefix(n, keep.layer);
        let name = |m: &str| format!("{p}{m}");
        let module = |slot: Slot, part: &str| format!("{}.{part}", n.linears[slot as usize]);
        let mut touched = Vec::new();
        if keep.heads.len() != s.heads.len() {
            let attn = [
                module(Slot::Query, "weight"),
                module(Slot::Query, "bias"),
                module(Slot::Key, "weight"),
                module(Slot::Key, "bias"),
                module(Slot::Value, "weight"),
                module(Slot::Value, "bias"),
                module(Slot::AttnOut, "weight"),
            ];
            if keep.heads.is_empty() {
                for m in &attn {
                    store.remove(&name(m));
                }
            } else {
                let qk = blocks(&keep.heads, s.qk_head_dim);
                let vo = blocks(&keep.heads, s.vo_head_dim);
                for m in &attn[..4] {
                    store.keep_row_ranges(&name(m), &qk)?;
                }
                for m in &attn[4..6] {
                    store.keep_row_ranges(&name(m), &vo)?;
                }
                store.keep_col_ranges(&name(&attn[6]), &vo)?;
                touched.extend(attn.iter().cloned());
            }
        }
        if keep.neurons.len() != s.intermediate_size {
            let ffn = [
                module(Slot::Up, "weight"),
                module(Slot::Up, "bias"),
                module(Slot::Down, "weight"),
            ];
            if keep.neurons.is_empty() {
                for m in &ffn {
                    store.remove(&name(m));
                }
            } else {
                let rows = blocks(&keep.neurons, 1);
                store.keep_row_ranges(&name(&ffn[0]), &rows)?;
                store.keep_row_ranges(&name(&ffn[1]), &rows)?;
                store.keep_col_ranges(&name(&ffn[2]), &rows)?;
                touched.extend(ffn.iter().cloned());
            }
        }
        let suffixes: Vec<String> = store
            .names()
            .filter_map(|n| n.strip_prefix(&p).map(str::to_string))
            .collect();
        for suffix in suffixes {
            let to = format!("{}{suffix}", layer_prefix(n, i));
            if i != keep.layer {
                if let Some(t) = store.remove(&name(&suffix)) {
                    store.set(&to, t);
                }
                changed.push(to);
            } else if touched.contains(&suffix) {
                changed.push(to);
            }
        }
    }
    if let Some(kept) = &decision.hidden {
        let ranges = blocks(kept, 1);
        let names: Vec<String> = store.names().map(str::to_string).collect();
        // The renumbered layers' names are those of the model with only the layers dropped.
        let specs: BTreeMap<String, TensorSpec> = renumbered_specs(ctx.config, decision)?;
        for name in names {
            let (rows, cols) = specs.get(&name).map_or((false, false), hidden_axes);
            if rows {
                store.keep_row_ranges(&name, &ranges)?;
            }
            if cols {
                store.keep_col_ranges(&name, &ranges)?;
            }
            if rows || cols {
                changed.push(name);
            }
        }
    }
    changed.sort();
    changed.dedup();
    Ok(changed)
}

/// The expected tensors of `config` with the decision's layers kept (renumbered) but not yet narrowed.
fn renumbered_specs(
    config: &ModelConfig,
    decision: &Decision,
) -> Result<BTreeMap<String, TensorSpec>> {
    let layers = &config.bert().layers;
    let mut kept = config.clone();
    kept.set_layers(
        decision
            .layers
            .iter()
            .map(|k| layers[k.layer].clone())
            .collect(),
    )?;
    Ok(kept
        .expected_tensors()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect())
}

/// Which axes of a tensor run along the residual stream: `(rows, columns)`. Readers of the stream (embedding
/// tables, query / key / value, FFN up, the pooler, the classifier) have it as columns; writers (attention output,
/// FFN down, the pooler) and LayerNorms as rows. MPNet's relative bias table (`[buckets, heads]`) has neither.
fn hidden_axes(spec: &TensorSpec) -> (bool, bool) {
    let weight = spec.kind == Kind::Weight;
    let table = matches!(
        spec.role,
        Role::EmbedTokens | Role::EmbedPositions | Role::EmbedTypes
    );
    let cols = weight
        && (table
            || matches!(
                spec.role,
                Role::AttnQ | Role::AttnK | Role::AttnV | Role::FfnUp | Role::Pooler | Role::Head
            ));
    let rows = matches!(
        spec.role,
        Role::Norm | Role::AttnOut | Role::FfnDown | Role::Pooler
    );
    (rows, cols)
}

/// Give the sentence-transformers Pooling module the new embedding width (`word_embedding_dimension`).
pub fn set_pooling_dimension(files: &mut SideFiles, width: usize) -> Result<()> {
    let Some(modules) = files.read_json("modules.json")? else {
        return Ok(());
    };
    let pooling = modules.as_array().and_then(|list| {
        list.iter()
            .find(|m| {
                m.get("type")
                    .and_then(|t| t.as_str())
                    .is_some_and(|t| t.ends_with(".Pooling"))
            })
            .map(|m| {
                m.get("path")
                    .and_then(|p| p.as_str())
                    .unwrap_or("1_Pooling")
                    .to_string()
            })
    });
    let Some(dir) = pooling else {
        return Ok(());
    };
    let rel = format!("{dir}/config.json");
    if let Some(mut cfg) = files.read_json(&rel)? {
        if cfg.get("word_embedding_dimension").is_some() {
            cfg["word_embedding_dimension"] = serde_json::json!(width);
            files.set_json(&rel, &cfg);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_kept_positions() {
        assert_eq!(blocks(&[0, 2], 3), vec![0..3, 6..9]);
    }
}
