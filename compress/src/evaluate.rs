//! Evaluation in the CLI: `[[eval]]` tables of a pipeline and `compressor eval`, their report files and manifest
//! record.

use std::path::PathBuf;

use anyhow::Context as _;
use compressor_eval::report::EvalReport;
use serde_json::{json, Value};

/// report.md, report.json and (with several models) plot.svg.
pub fn report_files(report: &EvalReport, title: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut files = vec![
        (
            "report.md".to_string(),
            report.to_markdown(title).into_bytes(),
        ),
        (
            "report.json".to_string(),
            (serde_json::to_string_pretty(report).context("cannot serialize report.json")? + "\n")
                .into_bytes(),
        ),
    ];
    if let Some(svg) = report.svg_plot() {
        files.push(("plot.svg".to_string(), svg.into_bytes()));
    }
    Ok(files)
}

/// The deterministic part of an evaluation (no timings or paths), for manifest.json.
pub fn manifest_record(report: &EvalReport) -> Value {
    let results: Vec<Value> = report
        .results
        .iter()
        .map(|r| {
            json!({
                "model": r.model,
                "task": r.result.task,
                "name": r.result.name,
                "examples": r.result.examples,
                "main_metric": r.result.main_metric,
                "metrics": r.result.metrics,
                "tokens": r.result.tokens,
                "unk_tokens": r.result.unk_tokens,
            })
        })
        .collect();
    let models: Vec<Value> = report
        .models
        .iter()
        .map(|m| json!({"label": m.label, "size_bytes": m.size_bytes, "parameters": m.parameters, "bits_per_weight": m.bits_per_weight}))
        .collect();
    json!({
        "models": models,
        "results": results,
        "deltas": report.deltas,
        "gate_passed": report.gate_passed(),
    })
}

/// Write report files into `dir` (created if needed).
pub fn write_reports(dir: &PathBuf, report: &EvalReport, title: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create folder `{}`", dir.display()))?;
    for (rel, bytes) in report_files(report, title)? {
        let path = dir.join(&rel);
        let tmp = dir.join(format!(".{rel}.tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write `{}`", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    Ok(())
}

/// A few lines for stderr: each delta, or each result when there is no baseline.
pub fn summary(report: &EvalReport) -> String {
    let mut s = String::new();
    if report.deltas.is_empty() {
        for r in &report.results {
            s.push_str(&format!(
                "eval {} ({}) on {}: {} {:.2}\n",
                r.result.name,
                r.result.task,
                r.model,
                r.result.main_metric,
                r.result.main_score * 100.0
            ));
        }
    }
    for d in &report.deltas {
        let gate = match d.max_regression {
            None => String::new(),
            Some(_) if d.passed => " (gate passed)".into(),
            Some(m) => format!(" (GATE FAILED: max drop {:.2})", m * 100.0),
        };
        s.push_str(&format!(
            "eval {}: {} {:.2} -> {:.2} ({:+.2}){gate}\n",
            d.task,
            d.metric,
            d.baseline * 100.0,
            d.compressed * 100.0,
            d.delta * 100.0
        ));
    }
    s
}

/// Short labels for model folders: the folder name, made unique with its parent when names repeat.
pub fn model_labels(dirs: &[PathBuf]) -> Vec<String> {
    let name = |d: &PathBuf| {
        d.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| d.display().to_string())
    };
    let names: Vec<String> = dirs.iter().map(name).collect();
    dirs.iter()
        .zip(&names)
        .map(|(d, n)| {
            if names.iter().filter(|m| *m == n).count() > 1 {
                d.display().to_string()
            } else {
                n.clone()
            }
        })
        .collect()
}

/// `compressor embed`: one JSON line per input row of `data`, `{"index": i, "embedding": [...]}` for an embedding
/// model or `{"index": i, "logits": [...]}` for a classifier, in input order.
pub fn embed(
    dir: &std::path::Path,
    data: &std::path::Path,
    fields: &[String],
    limit: Option<usize>,
    max_length: Option<usize>,
    float_activations: bool,
) -> anyhow::Result<Vec<String>> {
    use compressor_calibration::{read_text_fields, TextInput};
    let mut encoder = compressor_eval::encoder::Encoder::open(dir, max_length)
        .with_context(|| format!("cannot open model `{}`", dir.display()))?;
    if float_activations {
        encoder.use_float_activations();
    }
    let names: Vec<&str> = fields.iter().map(String::as_str).collect();
    if names.is_empty() || names.len() > 2 {
        anyhow::bail!(
            "`--text-fields` takes one field, or two for sentence pairs; got {}",
            names.len()
        );
    }
    let rows = read_text_fields(data, &names, limit)?;
    let inputs: Vec<TextInput> = rows
        .into_iter()
        .map(|mut r| match r.len() {
            2 => {
                let b = r.pop().unwrap_or_default();
                TextInput::pair(r.pop().unwrap_or_default(), b)
            }
            _ => TextInput::Single(r.pop().unwrap_or_default()),
        })
        .collect();
    let classifier = !matches!(
        encoder.checkpoint.config.bert().head,
        compressor_models::Head::None
    );
    let (key, vectors) = if classifier {
        ("logits", encoder.logits(&inputs, &mut |_| {})?)
    } else {
        ("embedding", encoder.embed(&inputs, &mut |_| {})?)
    };
    Ok(vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({ "index": i, key: v }).to_string())
        .collect())
}
