//! Evaluate several models on the same tasks: the first is the baseline, every other one is compared with it.

use std::path::Path;
use std::time::Instant;

use compressor_models::{Checkpoint, Kind};

use crate::cache::EmbeddingCache;
use crate::encoder::{Batch, Encoder};
use crate::report::{Delta, EvalReport, ModelResult, ModelSummary};
use crate::tasks::{run_task, Result, TaskSpec};

/// Size facts of a checkpoint or artifact folder (from headers only).
pub fn summarize(label: &str, dir: &Path) -> Result<ModelSummary> {
    let ckpt = Checkpoint::open(dir)?;
    let parameters = ckpt.parameter_count() as u64;
    let size_bytes = ckpt.store.total_bytes() as u64;
    let param_bytes: u64 = ckpt
        .config
        .expected_tensors()
        .iter()
        .filter(|t| t.kind != Kind::Buffer)
        .filter(|t| ckpt.store.contains(&t.name))
        // As stored: a quantized weight counts its packed codes and scales, not the f32 it decodes to.
        .map(|t| ckpt.store.stored_bytes(&t.name) as u64)
        .sum();
    Ok(ModelSummary {
        label: label.to_string(),
        path: dir.display().to_string(),
        size_bytes,
        parameters,
        bits_per_weight: if parameters > 0 {
            param_bytes as f64 * 8.0 / parameters as f64
        } else {
            0.0
        },
    })
}

/// Events for progress displays.
pub trait SuiteProgress {
    /// A task starts on a model; how many inputs it runs is told as they are queued ([`queued`](Self::queued)).
    fn task(&self, model: &str, task: &str);
    /// `n` more inputs of the current task will go through the model (a task may queue several times: the total
    /// known so far is the sum; inputs found in the embedding cache are never queued).
    fn queued(&self, n: usize) {
        let _ = n;
    }
    /// `n` more inputs went through the model.
    fn inputs(&self, n: usize);
}

/// No progress output.
pub struct Quiet;

impl SuiteProgress for Quiet {
    fn task(&self, _: &str, _: &str) {}
    fn inputs(&self, _: usize) {}
}

/// Run every spec on every model (`(label, folder)`, the first is the baseline) and compare.
pub fn evaluate(
    models: &[(String, &Path)],
    specs: &[TaskSpec],
    cache: Option<&EmbeddingCache>,
    progress: &dyn SuiteProgress,
) -> Result<EvalReport> {
    let start = Instant::now();
    let mut report = EvalReport::default();
    let mut per_model = Vec::with_capacity(models.len());
    // Open every folder first, so that a bad one fails before any model time is spent.
    for (label, dir) in models {
        report.models.push(summarize(label, dir)?);
    }
    for (label, dir) in models {
        let mut results = Vec::with_capacity(specs.len());
        let mut encoders: Vec<(Option<usize>, Encoder)> = Vec::new();
        for spec in specs {
            let idx = match encoders.iter().position(|(m, _)| *m == spec.max_length) {
                Some(i) => i,
                None => {
                    encoders.push((spec.max_length, Encoder::open(dir, spec.max_length)?));
                    encoders.len() - 1
                }
            };
            progress.task(label, &spec.display_name());
            let r = run_task(&encoders[idx].1, spec, cache, &mut |b| match b {
                Batch::Queued(n) => progress.queued(n),
                Batch::Done(n) => progress.inputs(n),
            })?;
            report.results.push(ModelResult {
                model: label.clone(),
                result: r.clone(),
            });
            results.push(r);
        }
        per_model.push(results);
    }
    if let Some((baseline, others)) = per_model.split_first() {
        for other in others {
            for ((b, c), spec) in baseline.iter().zip(other).zip(specs) {
                report.deltas.push(Delta::new(b, c, spec.max_regression));
            }
        }
    }
    report.elapsed_s = start.elapsed().as_secs_f64();
    Ok(report)
}
