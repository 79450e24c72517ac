//! The planner: resolve a pipeline against the checkpoint's metadata (config.json and safetensors headers) and
//! find every problem that metadata can reveal, before a weight is read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use compressor_models::Checkpoint;
use compressor_passes::{ModelInfo, Pass, PassPlan, PassSpec, Phase, PlanContext};
use serde_json::{json, Value};

use crate::human::{count, path, size, thousands};
use crate::output;
use crate::pipeline::Pipeline;
use crate::problems::{Problem, Problems};

/// How the plan will be used.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--output`: replaces `output.dir` (relative to the working folder, like every command-line path).
    pub output: Option<PathBuf>,
    /// `--force`: an existing artifact at the output folder may be replaced.
    pub force: bool,
    /// `compressor plan`: an existing output folder is a note, not an error.
    pub dry_run: bool,
}

/// One pass with its plan.
pub struct PlannedPass {
    pub index: usize,
    pub spec: PassSpec,
    pub pass: Box<dyn Pass>,
    pub plan: PassPlan,
}

/// A pipeline checked against a model, ready to run.
pub struct Plan {
    pub pipeline: Pipeline,
    pub model_dir: PathBuf,
    /// Metadata parsed and validated; weights still on disk.
    pub checkpoint: Checkpoint,
    pub output_dir: PathBuf,
    pub output_exists: bool,
    pub passes: Vec<PlannedPass>,
    /// The tensors before the first pass and after the last, as metadata.
    pub before: ModelInfo,
    pub after: ModelInfo,
    pub notes: Vec<String>,
}

/// Check `pipeline` against its model's metadata. Every problem found is reported at once.
pub fn plan(pipeline: Pipeline, opts: &PlanOptions) -> anyhow::Result<Plan> {
    let model_dir = pipeline.model_dir();
    let checkpoint = Checkpoint::open(&model_dir)
        .with_context(|| format!("cannot open model `{}`", model_dir.display()))?;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    // The artifact carries the model's tokenizer; `embed`, `eval` and calibration load it, so it must load now.
    if let Err(e) = compressor_calibration::TextTokenizer::from_model_dir(&model_dir, None) {
        problems.push(Problem::from_error("", &e).hint(
            "the model folder needs the tokenizer.json it was trained with (the artifact carries it for `embed` and `eval`)",
        ));
    }
    let output_dir = opts.output.clone().unwrap_or_else(|| pipeline.output_dir());
    let mode = if opts.dry_run {
        output::Mode::DryRun
    } else {
        output::Mode::Write { force: opts.force }
    };
    let checked = output::check(&model_dir, &output_dir, mode);
    problems.extend(checked.problems);
    notes.extend(checked.notes);
    let output_exists = checked.exists;
    for (i, spec) in pipeline.resolved_evals().iter().enumerate() {
        let files = spec
            .data
            .iter()
            .map(|d| ("data", d))
            .chain(spec.test.iter().map(|t| ("test", t)));
        for (key, path) in files {
            if !path.is_file() {
                problems.push(
                    Problem::new(format!(
                        "`eval[{i}].{key}` `{}` does not exist",
                        path.display()
                    ))
                    .hint("paths in a pipeline are relative to the pipeline file's folder"),
                );
            }
        }
    }
    if let Some(data) = pipeline.calibration_data() {
        if !data.is_file() {
            problems.push(
                Problem::new(format!(
                    "`calibration.data` `{}` does not exist",
                    data.display()
                ))
                .hint("paths in a pipeline are relative to the pipeline file's folder"),
            );
        }
    }
    let phases: Vec<(usize, &'static str, Phase)> = pipeline
        .passes
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.kind(), s.info().phase))
        .collect();
    problems.extend(check_phases(&phases));

    let before = ModelInfo::from_store(&checkpoint.config, &checkpoint.store);
    let mut info = before.clone();
    // The architecture as each pass leaves it: every pass plans against its predecessors' result.
    let mut config = checkpoint.config.clone();
    let mut passes = Vec::new();
    let calibration = pipeline.calibration_spec();
    // Plan-time work that takes long (vib-prune's mask training) shows progress like a run's passes.
    let progress = crate::progress::Bars::from_env()?;
    for (index, spec) in pipeline.passes.iter().enumerate() {
        let pass = pipeline.build_pass(spec);
        let _span = tracing::info_span!("plan", index, kind = spec.kind()).entered();
        let planned = pass
            .plan(&PlanContext {
                config: &config,
                info: &info,
                store: &checkpoint.store,
                model_dir: &model_dir,
                calibration: calibration.as_ref(),
                progress: &progress,
            })
            .and_then(|plan| {
                for change in &plan.arch {
                    change.apply(&mut config)?;
                }
                Ok(plan)
            });
        match planned {
            Ok(plan) => {
                info.apply(&plan, &config);
                passes.push(PlannedPass {
                    index,
                    spec: spec.clone(),
                    pass,
                    plan,
                });
            }
            Err(e) => problems.push(Problem::from_error(
                &format!("`pass[{index}]` (`{}`): ", spec.kind()),
                &e,
            )),
        }
    }
    if !problems.is_empty() {
        return Err(anyhow::Error::new(Problems(problems)).context(format!(
            "cannot plan pipeline `{}`",
            pipeline.file.display()
        )));
    }
    Ok(Plan {
        pipeline,
        model_dir,
        checkpoint,
        output_dir,
        output_exists,
        passes,
        before,
        after: info,
        notes,
    })
}

/// Phases may not go backwards: each pass's phase must be at least the latest phase before it.
pub fn check_phases(passes: &[(usize, &str, Phase)]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut latest: Option<(usize, &str, Phase)> = None;
    for &(index, kind, phase) in passes {
        match latest {
            Some((li, lk, lp)) if phase < lp => problems.push(
                Problem::new(format!(
                    "`pass[{index}]` (`{kind}`, phase {phase}) comes after `pass[{li}]` (`{lk}`, phase {lp})"
                ))
                .hint("order passes by phase: structure, then factorize, then quantize"),
            ),
            _ => latest = Some((index, kind, phase)),
        }
    }
    problems
}

/// How a planned tensor is stored after the pass: its dtype, or its integer encoding (`int4 group 128`).
fn stored_as(c: &compressor_passes::PlannedChange) -> String {
    match c.encoding_after {
        Some(e) => format!(
            "int{} {}{}",
            e.bits,
            e.strategy.describe(),
            if e.symmetric { "" } else { " asymmetric" }
        ),
        None => c.dtype_after.to_string(),
    }
}

/// Tensor changes of a plan grouped by storage change: (before, after) → (count, bytes before, bytes after).
fn grouped(plan: &PassPlan) -> BTreeMap<(String, String), (usize, usize, usize)> {
    let mut groups: BTreeMap<(String, String), (usize, usize, usize)> = BTreeMap::new();
    for c in &plan.changes {
        let g = groups
            .entry((c.dtype_before.to_string(), stored_as(c)))
            .or_default();
        g.0 += 1;
        g.1 += c.bytes_before;
        g.2 += c.bytes_after;
    }
    groups
}

impl Plan {
    /// The dry run for people: model, each pass's changes, the estimated size, the resolved pipeline.
    pub fn render(&self) -> String {
        let cfg = &self.checkpoint.config;
        let b = cfg.bert();
        let mut s = String::new();
        s.push_str(&format!("pipeline  {}\n", path(&self.pipeline.file)));
        s.push_str(&format!(
            "model     {}: {} (`{}`), {} layers, hidden {}, {} heads, {} parameters\n",
            path(&self.model_dir),
            cfg.architecture,
            cfg.model_type,
            b.num_hidden_layers,
            b.hidden_size,
            b.num_attention_heads,
            thousands(self.checkpoint.parameter_count())
        ));
        s.push_str(&format!(
            "input     {}, {} bytes ({})\n",
            count(self.before.tensors.len(), "tensor"),
            thousands(self.before.total_bytes()),
            size(self.before.total_bytes())
        ));
        s.push_str(&format!(
            "output    {} ({})\n",
            path(&self.output_dir),
            self.pipeline.output.format.as_str()
        ));
        for note in &self.notes {
            s.push_str(&format!("note: {note}\n"));
        }
        s.push('\n');
        if self.passes.is_empty() {
            s.push_str("no passes: the artifact is a copy of the model\n");
        }
        for p in &self.passes {
            let groups = grouped(&p.plan);
            let head = format!(
                "pass[{}]  {} ({})",
                p.index,
                p.spec.kind(),
                p.spec.info().phase
            );
            if groups.is_empty() {
                s.push_str(&format!("{head}: no tensor changes\n"));
            }
            for ((from, to), (n, before, after)) in groups {
                s.push_str(&format!(
                    "{head}: {} {from} -> {to}, {} -> {} bytes\n",
                    count(n, "tensor"),
                    thousands(before),
                    thousands(after)
                ));
            }
            for note in &p.plan.notes {
                s.push_str(&format!("  note: {note}\n"));
            }
            if !p.plan.statistics.is_empty() {
                let names: Vec<&str> = p.plan.statistics.iter().map(|st| st.describe()).collect();
                s.push_str(&format!(
                    "  statistics: {} from calibration data ([calibration] or the pass's own), cached in {}\n",
                    names.join(", "),
                    compressor_calibration::default_cache_dir()
                        .join("analyses")
                        .display()
                ));
            }
        }
        let (input, output) = (self.before.total_bytes(), self.after.total_bytes());
        s.push_str(&format!(
            "\nestimated output: {}, {} bytes ({}), {:.1}% of the input\n",
            count(self.after.tensors.len(), "tensor"),
            thousands(output),
            size(output),
            100.0 * output as f64 / input.max(1) as f64
        ));
        s.push_str("\nresolved pipeline:\n\n");
        s.push_str(&self.pipeline.to_toml());
        s
    }

    /// The dry run as JSON.
    pub fn to_json(&self) -> Value {
        let cfg = &self.checkpoint.config;
        let b = cfg.bert();
        json!({
            "pipeline": self.pipeline.resolved(true),
            "model": {
                "path": self.model_dir,
                "architecture": cfg.architecture,
                "model_type": cfg.model_type,
                "layers": b.num_hidden_layers,
                "hidden_size": b.hidden_size,
                "heads": b.num_attention_heads,
                "parameters": self.checkpoint.parameter_count(),
                "tensors": self.before.tensors.len(),
                "bytes": self.before.total_bytes(),
            },
            "output": {
                "dir": self.output_dir,
                "format": self.pipeline.output.format,
                "exists": self.output_exists,
            },
            "notes": self.notes,
            "passes": self.passes.iter().map(|p| json!({
                "index": p.index,
                "kind": p.spec.kind(),
                "phase": p.spec.info().phase,
                "bytes_before": p.plan.bytes_before(),
                "bytes_after": p.plan.bytes_after(),
                "changes": p.plan.changes,
                "notes": p.plan.notes,
                "statistics": p.plan.statistics,
            })).collect::<Vec<_>>(),
            "estimate": {
                "tensors": self.after.tensors.len(),
                "bytes": self.after.total_bytes(),
                "input_bytes": self.before.total_bytes(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_may_not_go_backwards() {
        let ok = [
            (0, "prune", Phase::Structure),
            (1, "cast", Phase::Quantize),
            (2, "cast", Phase::Quantize),
        ];
        assert!(check_phases(&ok).is_empty());
        let bad = [
            (0, "cast", Phase::Quantize),
            (1, "prune", Phase::Structure),
            (2, "svd", Phase::Factorize),
        ];
        let msgs: Vec<String> = check_phases(&bad).into_iter().map(|p| p.message).collect();
        assert_eq!(
            msgs,
            [
                "`pass[1]` (`prune`, phase structure) comes after `pass[0]` (`cast`, phase quantize)",
                "`pass[2]` (`svd`, phase factorize) comes after `pass[0]` (`cast`, phase quantize)",
            ]
        );
    }
}
