//! The closing summary of `compressor run` (and of the one-line commands, which run a pipeline): size before and
//! after, each evaluation's main metric before and after, the wall time, where the artifact is and what loads it.

use std::path::Path;
use std::time::Duration;

use compressor_eval::report::{Delta, EvalReport};
use compressor_models::{Checkpoint, Form, Head};

use crate::artifact::{FileRecord, Manifest};
use crate::human::{count, duration, path, size};

/// What loads an artifact, from the forms of its tensors and its config (headers only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaders {
    /// Dense tensors, standard shapes: every runtime.
    Everyone,
    /// compressed-tensors quantized weights (and dense ones); `activations`: static activation scales too.
    CompressedTensors { activations: bool },
    /// Low-rank or sparse forms, or per-layer shapes: our runtime; export for others.
    Ours { per_layer: bool },
}

impl Loaders {
    /// Read the artifact's headers and config.
    pub fn of(dir: &Path) -> anyhow::Result<(Self, bool)> {
        let ckpt = Checkpoint::open(dir)?;
        let classifier = !matches!(ckpt.config.bert().head, Head::None);
        let info = compressor_passes::ModelInfo::from_store(&ckpt.config, &ckpt.store);
        let per_layer = !ckpt.config.bert().is_uniform();
        let mut quant = false;
        let mut other = false;
        for t in &info.tensors {
            match t.form {
                Form::Dense { .. } => {}
                Form::Quant { .. } => quant = true,
                _ => other = true,
            }
        }
        let activations = dir.join(compressor_models::quant::act::FILE).is_file();
        let loaders = if other || per_layer {
            Loaders::Ours { per_layer }
        } else if quant || activations {
            Loaders::CompressedTensors { activations }
        } else {
            Loaders::Everyone
        };
        Ok((loaders, classifier))
    }

    /// Lines saying what loads the artifact at `dir` (shown as `shown`).
    pub fn describe(self, shown: &str, classifier: bool) -> Vec<String> {
        let python = if classifier {
            format!("AutoModelForSequenceClassification.from_pretrained(\"{shown}\")")
        } else {
            format!("SentenceTransformer(\"{shown}\")")
        };
        let ours = format!("ours: compressor embed {shown} --data FILE");
        match self {
            Loaders::Everyone => vec![format!("any runtime, e.g. {python}; {ours}")],
            Loaders::CompressedTensors { activations } => {
                let mut v = vec![
                    format!("{python} with `pip install compressed-tensors` (versions: docs/formats.md); {ours}"),
                    format!("other runtimes: compressor export {shown} --output {shown}-dense"),
                ];
                if activations {
                    v.push("the static activation scales run in our runtime only (others run activations in float)".into());
                }
                v
            }
            Loaders::Ours { per_layer } => {
                let mut v = vec![
                    ours,
                    format!("other runtimes: compressor export {shown} --output {shown}-dense"),
                ];
                if per_layer {
                    v.push(format!("at the smaller size: compressor export {shown} --format remote-code --output {shown}-remote (trust_remote_code)"));
                }
                v
            }
        }
    }
}

/// The widths a pass chose per tensor (`decisions.bits`, a map of tensor name to bits, as hessian-mp records them),
/// one group per width: `4 bits: 8 tensors (layers 0, 1, 5); 2 bits: 4 tensors (layers 2, 3)`. `None` when the pass
/// records no per-tensor widths.
pub fn chosen_widths(
    decisions: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Option<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let bits = decisions.get("bits")?.as_object()?;
    let mut by_width: BTreeMap<u64, (usize, BTreeSet<usize>, usize)> = BTreeMap::new();
    for (name, b) in bits {
        let b = b.as_u64()?;
        let g = by_width.entry(b).or_default();
        g.0 += 1;
        match compressor_models::family::layer_of_any(name) {
            Some(layer) => {
                g.1.insert(layer);
            }
            None => g.2 += 1,
        }
    }
    if by_width.is_empty() {
        return None;
    }
    let groups: Vec<String> = by_width
        .iter()
        .rev()
        .map(|(b, (n, layers, other))| {
            let mut where_ = Vec::new();
            if !layers.is_empty() {
                let l: Vec<String> = layers.iter().map(usize::to_string).collect();
                where_.push(format!(
                    "{} {}",
                    if layers.len() == 1 { "layer" } else { "layers" },
                    l.join(", ")
                ));
            }
            if *other > 0 {
                where_.push(format!("{other} outside the encoder layers"));
            }
            format!("{b} bits: {} ({})", count(*n, "tensor"), where_.join("; "))
        })
        .collect();
    Some(groups.join("; "))
}

/// The bytes of the `*.safetensors` files among `files`.
pub fn weight_bytes(files: &[FileRecord]) -> u64 {
    files
        .iter()
        .filter(|f| f.path.ends_with(".safetensors"))
        .map(|f| f.bytes)
        .sum()
}

/// `7.15x smaller`, `1.02x larger`, `same size`.
pub fn ratio(before: u64, after: u64) -> String {
    if after == before {
        return "same size".into();
    }
    if after == 0 {
        return String::new();
    }
    if after < before {
        format!("{:.2}x smaller", before as f64 / after as f64)
    } else {
        format!("{:.2}x larger", after as f64 / before.max(1) as f64)
    }
}

/// The gate of a delta, in the metric's points: `gate passed: max-regression 0.002 = 0.20 points`.
pub fn gate(d: &Delta) -> Option<String> {
    let m = d.max_regression?;
    let allowed = format!("max-regression {m} = {:.2} points", m * 100.0);
    Some(if d.passed {
        format!("gate passed: {allowed}")
    } else {
        format!(
            "GATE FAILED: dropped {:.2} points, {allowed}",
            -d.delta * 100.0
        )
    })
}

/// The summary: a table of size and each evaluation's main metric, original and compressed, then the wall time,
/// the output and what loads it.
pub fn render(
    manifest: &Manifest,
    evaluation: Option<&EvalReport>,
    output_dir: &Path,
    elapsed: Duration,
    loaders: Option<(Loaders, bool)>,
) -> String {
    let (before, after) = (
        weight_bytes(&manifest.input.files),
        weight_bytes(&manifest.output.files),
    );
    let mut rows: Vec<[String; 4]> = vec![
        [
            String::new(),
            "original".into(),
            "compressed".into(),
            "change".into(),
        ],
        [
            "model.safetensors".into(),
            size(before as usize),
            size(after as usize),
            ratio(before, after),
        ],
    ];
    for d in evaluation.map(|e| e.deltas.as_slice()).unwrap_or_default() {
        let mut change = format!("{:+.2}", d.delta * 100.0);
        if let Some(g) = gate(d) {
            change.push_str(&format!(" ({g})"));
        }
        rows.push([
            format!("{} {}", d.task, d.metric),
            format!("{:.2}", d.baseline * 100.0),
            format!("{:.2}", d.compressed * 100.0),
            change,
        ]);
    }
    let keys = ["wall time", "output", "loads in"];
    let mut w: Vec<usize> = (0..3)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    w[0] = w[0].max(keys.iter().map(|k| k.len()).max().unwrap_or(0));
    let shown = path(output_dir);
    let mut s = String::from("\nsummary\n");
    for r in &rows {
        let line = format!(
            "  {:<w0$}  {:>w1$}  {:>w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        );
        s.push_str(line.trim_end());
        s.push('\n');
    }
    let label = |k: &str| format!("  {k:<w0$}  ", w0 = w[0]);
    let peak = peak_memory()
        .map(|b| format!(" (peak memory {})", size(b as usize)))
        .unwrap_or_default();
    s.push_str(&format!(
        "{}{}{peak}\n",
        label("wall time"),
        duration(elapsed)
    ));
    let reports = if manifest.output.reports.iter().any(|r| r == "report.md") {
        ", report.md the evaluation"
    } else {
        ""
    };
    s.push_str(&format!(
        "{}{shown}/ ({}; manifest.json says what was done to every tensor{reports})\n",
        label("output"),
        count(manifest.output.files.len() + 1, "file"),
    ));
    if let Some((l, classifier)) = loaders {
        for (i, line) in l.describe(&shown, classifier).into_iter().enumerate() {
            let key = if i == 0 { "loads in" } else { "" };
            s.push_str(&format!("{}{line}\n", label(key)));
        }
    }
    s
}

/// The process's peak resident memory so far (`VmHWM` of /proc/self/status), in bytes; `None` where there is no
/// /proc.
pub fn peak_memory() -> Option<u64> {
    proc_bytes("/proc/self/status", "VmHWM:")
}

/// A `key: N kB` line of a /proc file (`/proc/meminfo`, `/proc/self/status`) in bytes.
pub fn proc_bytes(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_widths_by_width_and_layer() {
        let mut d = std::collections::BTreeMap::new();
        assert_eq!(chosen_widths(&d), None);
        d.insert(
            "bits".to_string(),
            serde_json::json!({
                "encoder.layer.0.attention.self.query.weight": 4,
                "encoder.layer.0.output.dense.weight": 4,
                "encoder.layer.1.output.dense.weight": 2,
                "embeddings.word_embeddings.weight": 8,
            }),
        );
        assert_eq!(
            chosen_widths(&d).as_deref(),
            Some("8 bits: 1 tensor (1 outside the encoder layers); 4 bits: 2 tensors (layer 0); 2 bits: 1 tensor (layer 1)")
        );
        d.insert("bits".to_string(), serde_json::json!("f16"));
        assert_eq!(chosen_widths(&d), None);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(90_000_000, 12_600_000), "7.14x smaller");
        assert_eq!(ratio(100, 102), "1.02x larger");
        assert_eq!(ratio(5, 5), "same size");
    }

    #[test]
    fn gates_speak_in_points() {
        let mut d = Delta {
            task: "sts-b".into(),
            metric: "spearman".into(),
            baseline: 0.8203,
            compressed: 0.8138,
            delta: 0.8138 - 0.8203,
            max_regression: Some(0.002),
            passed: false,
        };
        assert_eq!(
            gate(&d).as_deref(),
            Some("GATE FAILED: dropped 0.65 points, max-regression 0.002 = 0.20 points")
        );
        d.max_regression = Some(0.01);
        d.passed = true;
        assert_eq!(
            gate(&d).as_deref(),
            Some("gate passed: max-regression 0.01 = 1.00 points")
        );
        d.max_regression = None;
        assert_eq!(gate(&d), None);
    }
}
