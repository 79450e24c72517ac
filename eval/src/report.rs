//! Evaluation reports: baseline vs compressed per task, as Markdown and JSON, and an SVG plot of a metric
//! against model size when several variants are evaluated together.

use serde::{Deserialize, Serialize};

use crate::tasks::TaskResult;

/// Size facts of one evaluated model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// `original`, `compressed`, or a folder name.
    pub label: String,
    pub path: String,
    /// Bytes of all tensors as stored.
    pub size_bytes: u64,
    pub parameters: u64,
    /// Bits per parameter as stored (tensor bytes x 8 / parameters).
    pub bits_per_weight: f64,
}

/// One task on one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    pub model: String,
    pub result: TaskResult,
}

/// A task's main metric before and after compression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub task: String,
    pub metric: String,
    pub baseline: f64,
    pub compressed: f64,
    /// compressed - baseline
    pub delta: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_regression: Option<f64>,
    /// False when the drop exceeds `max_regression`.
    pub passed: bool,
}

impl Delta {
    pub fn new(
        baseline: &TaskResult,
        compressed: &TaskResult,
        max_regression: Option<f64>,
    ) -> Self {
        let delta = compressed.main_score - baseline.main_score;
        Self {
            task: baseline.name.clone(),
            metric: baseline.main_metric.clone(),
            baseline: baseline.main_score,
            compressed: compressed.main_score,
            delta,
            max_regression,
            // A tolerance of 1e-12 keeps an exactly-at-the-limit drop from failing through rounding.
            passed: max_regression.is_none_or(|m| -delta <= m + 1e-12),
        }
    }
}

/// A whole evaluation: models, every result, and the deltas when there is a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EvalReport {
    pub models: Vec<ModelSummary>,
    pub results: Vec<ModelResult>,
    pub deltas: Vec<Delta>,
    pub elapsed_s: f64,
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

/// Metric values shown x100 with two decimals, as papers and MTEB tables do.
fn pct(v: f64) -> String {
    format!("{:.2}", v * 100.0)
}

impl EvalReport {
    pub fn gate_passed(&self) -> bool {
        self.deltas.iter().all(|d| d.passed)
    }

    /// A report a person reads in a minute.
    pub fn to_markdown(&self, title: &str) -> String {
        let mut s = format!("# {title}\n\n");
        s.push_str("| model | size | parameters | bits/weight |\n|---|---:|---:|---:|\n");
        for m in &self.models {
            s.push_str(&format!(
                "| {} | {} | {} | {:.2} |\n",
                m.label,
                mb(m.size_bytes),
                m.parameters,
                m.bits_per_weight
            ));
        }
        if let [a, b, ..] = self.models.as_slice() {
            if b.size_bytes > 0 {
                s.push_str(&format!(
                    "\n{} is {:.2}x smaller than {}.\n",
                    b.label,
                    a.size_bytes as f64 / b.size_bytes as f64,
                    a.label
                ));
            }
        }
        if !self.deltas.is_empty() {
            s.push_str("\n## Tasks (main metric x100)\n\n| task | metric | baseline | compressed | delta | gate |\n|---|---|---:|---:|---:|---|\n");
            for d in &self.deltas {
                let gate = match (d.max_regression, d.passed) {
                    (None, _) => "-".to_string(),
                    (Some(m), true) => format!("pass (max drop {})", pct(m)),
                    (Some(m), false) => format!("**FAIL** (max drop {})", pct(m)),
                };
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {:+.2} | {} |\n",
                    d.task,
                    d.metric,
                    pct(d.baseline),
                    pct(d.compressed),
                    d.delta * 100.0,
                    gate
                ));
            }
        }
        s.push_str("\n## All metrics (x100 unless a count or threshold)\n\n| model | task | examples | metrics | inputs/s | time | peak memory |\n|---|---|---:|---|---:|---:|---:|\n");
        for r in &self.results {
            let metrics: Vec<String> = r
                .result
                .metrics
                .iter()
                .map(|(k, v)| {
                    if k == "correct" || k.ends_with("threshold") {
                        format!("{k} {v:.4}")
                    } else {
                        format!("{k} {}", pct(*v))
                    }
                })
                .collect();
            s.push_str(&format!(
                "| {} | {} ({}) | {} | {} | {:.1}{} | {:.1} s | {:.0} MiB |\n",
                r.model,
                r.result.name,
                r.result.task,
                r.result.examples,
                metrics.join(", "),
                r.result.inputs_per_s,
                if r.result.cached { " (cached)" } else { "" },
                r.result.elapsed_s,
                r.result.peak_rss_mib
            ));
        }
        s.push_str(&format!(
            "\nTotal evaluation time: {:.1} s.\n",
            self.elapsed_s
        ));
        s
    }

    /// SVG of each task's main metric against model size (one series per task), or None with fewer than two models.
    pub fn svg_plot(&self) -> Option<String> {
        if self.models.len() < 2 {
            return None;
        }
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for r in &self.results {
            let Some(m) = self.models.iter().find(|m| m.label == r.model) else {
                continue;
            };
            let key = format!("{} {}", r.result.name, r.result.main_metric);
            let point = (m.size_bytes as f64 / 1e6, r.result.main_score * 100.0);
            match series.iter_mut().find(|(k, _)| *k == key) {
                Some((_, pts)) => pts.push(point),
                None => series.push((key, vec![point])),
            }
        }
        let pts = series.iter().flat_map(|(_, p)| p.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        let (w, h, l, r, t, b) = (640.0, 400.0, 60.0, 200.0, 20.0, 50.0);
        let sx = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
        let sy = |y: f64| h - b - (y - y0) / (y1 - y0) * (h - t - b);
        let colors = [
            "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
        ];
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
             <line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
             <line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">model size (MB)</text>\n\
             <text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">main metric x100</text>\n",
            h - b,
            w - r,
            h - b,
            h - b,
            (l + w - r) / 2.0,
            h - 10.0,
            (t + h - b) / 2.0,
            (t + h - b) / 2.0
        );
        for i in 0..=4 {
            let fx = x0 + (x1 - x0) * i as f64 / 4.0;
            let fy = y0 + (y1 - y0) * i as f64 / 4.0;
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{fx:.1}</text>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{fy:.2}</text>\n",
                sx(fx),
                h - b + 18.0,
                l - 6.0,
                sy(fy) + 4.0
            ));
        }
        for (i, (name, points)) in series.iter().enumerate() {
            let c = colors[i % colors.len()];
            let mut sorted = points.clone();
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            let path: Vec<String> = sorted
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            svg.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
                path.join(" ")
            ));
            for &(x, y) in &sorted {
                svg.push_str(&format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{c}\"/>\n",
                    sx(x),
                    sy(y)
                ));
            }
            svg.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{}</text>\n",
                w - r + 10.0,
                t + 16.0 * (i as f64 + 1.0),
                xml_escape(name)
            ));
        }
        svg.push_str("</svg>\n");
        Some(svg)
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
