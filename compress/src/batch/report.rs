//! The sweep report: `report.md`, `report.json` and one `pareto-<task>.svg` per evaluation task, from the outcome
//! of every job of a sweep.
//!
//! Per task and per model (sizes differ by model, so a frontier only compares jobs of one model): every finished
//! job with its size, metric and change from the original model; the Pareto frontier (the jobs no other job beats
//! on both size and metric); and the best job within 1/2, 1/4 and 1/8 of the original size and with no budget.
//! Then the failed jobs with their errors and the jobs with no result in this folder yet (other shards).
//!
//! The files are a function of the outcomes alone: everything is sorted, floats are written with fixed precision
//! (JSON keeps the exact values) and nothing depends on the clock, so the same outcomes give byte-identical files.
//! Each file is written beside its target and renamed over it, so a reader never sees half a report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};

/// One evaluation result of a finished job (from its report.json `deltas`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metric {
    /// The evaluation task, e.g. `sts-b/test`.
    pub task: String,
    /// The task's main metric, e.g. `spearman`; higher is better for every metric.
    pub metric: String,
    /// The uncompressed model's value, on a 0..1 scale (e.g. 0.8203).
    pub baseline: f64,
    /// The job's value, on a 0..1 scale.
    pub compressed: f64,
}

/// What became of a job.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Status {
    /// Ran and finished in this run.
    Done {
        tensor_bytes: u64,
        metrics: Vec<Metric>,
    },
    /// Finished earlier and skipped in this run (same content as Done).
    Skipped {
        tensor_bytes: u64,
        metrics: Vec<Metric>,
    },
    /// Failed, with its error message.
    Failed { error: String },
    /// Belongs to another shard and has no result in this folder yet.
    Missing,
}

/// The outcome of one job of the sweep.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// The stable job folder name, e.g. `minilm-quant-bits4-group-size128`.
    pub name: String,
    /// The model label, e.g. `minilm`.
    pub model: String,
    /// The pipeline label, e.g. `quant`.
    pub pipeline: String,
    /// The swept keys and their values, e.g. `{"blockwise-quant.bits": "4"}`.
    pub settings: BTreeMap<String, String>,
    /// Tensor bytes of the model before compression, if known.
    pub original_bytes: Option<u64>,
    /// Wall time of the job in this run, if it ran.
    pub seconds: Option<f64>,
    #[serde(flatten)]
    pub status: Status,
}

impl Outcome {
    /// Size and metrics of a finished (done or skipped) job.
    fn finished(&self) -> Option<(u64, &[Metric])> {
        match &self.status {
            Status::Done {
                tensor_bytes,
                metrics,
            }
            | Status::Skipped {
                tensor_bytes,
                metrics,
            } => Some((*tensor_bytes, metrics)),
            Status::Failed { .. } | Status::Missing => None,
        }
    }
}

/// Indices (into `points`, each `(size, value)`) of the Pareto frontier: the points for which no other point has
/// size <= and value >= with at least one of the two strict (smaller is better for size, higher for value).
///
/// Identical points are all on the frontier (neither beats the other). Points with a NaN value are never on it.
/// Sorted by size ascending, then value descending, then index.
pub fn pareto(points: &[(u64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| !points[i].1.is_nan())
        .collect();
    order.sort_by(|&a, &b| {
        let (pa, pb) = (points[a], points[b]);
        pa.0.cmp(&pb.0)
            .then_with(|| pb.1.total_cmp(&pa.1))
            .then_with(|| a.cmp(&b))
    });
    let mut frontier = Vec::new();
    // The best value among all strictly smaller sizes.
    let mut best_smaller = f64::NEG_INFINITY;
    let mut any_smaller = false;
    let mut k = 0;
    while k < order.len() {
        let size = points[order[k]].0;
        let end = k + order[k..]
            .iter()
            .take_while(|&&i| points[i].0 == size)
            .count();
        // Within one size, only the highest value survives (all of the points holding it); it must beat every
        // smaller point strictly.
        let top = points[order[k]].1;
        if !any_smaller || top > best_smaller {
            frontier.extend(
                order[k..end]
                    .iter()
                    .copied()
                    .filter(|&i| points[i].1 == top),
            );
            best_smaller = top;
        }
        any_smaller = true;
        k = end;
    }
    frontier
}

/// Write `report.md`, `report.json` and `pareto-<slug>.svg` (one per task that has at least one finished job) into
/// `dir`, creating it if missing. Returns the paths written, sorted. `title` is the sweep's name, for headings.
///
/// Each file is written as `NAME.partial-<pid>-<n>` in `dir`, synced, then renamed over `NAME`.
pub fn write(dir: &Path, title: &str, outcomes: &[Outcome]) -> anyhow::Result<Vec<PathBuf>> {
    let report = Report::new(title, outcomes);
    let mut files: Vec<(String, String)> = vec![
        ("report.md".to_string(), report.markdown()),
        ("report.json".to_string(), report.json()?),
    ];
    for task in &report.tasks {
        files.push((task.svg_name(), report.svg(task)));
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create folder `{}`", dir.display()))?;
    let mut written = Vec::with_capacity(files.len());
    for (name, text) in &files {
        let path = dir.join(name);
        write_atomic(&path, text.as_bytes())?;
        written.push(path);
    }
    if let Ok(d) = File::open(dir) {
        // Make the renames durable where the platform allows syncing a folder.
        let _ = d.sync_all();
    }
    written.sort();
    Ok(written)
}

/// Write `bytes` to `path` through a uniquely named sibling (two processes writing the same report never share
/// one), then rename it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("`{}` names no file", path.display()))?
        .to_string_lossy()
        .into_owned();
    let mut attempt = 0u32;
    let (tmp, mut file) = loop {
        let tmp = path.with_file_name(format!("{name}.partial-{}-{attempt}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => {
                attempt += 1
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create `{}`", tmp.display()));
            }
        }
    };
    let result = file.write_all(bytes).and_then(|_| file.sync_all());
    drop(file);
    if let Err(e) = result.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write `{}`", path.display()));
    }
    Ok(())
}

/// The file-name form of a task: [`super::slug`] keeping nothing else (`sts-b/test` -> `sts-b-test`).
fn slug(task: &str) -> String {
    super::slug(task, "")
}

// ---------------------------------------------------------------------------------------------------------------
// Analysis.

/// The size budgets, as divisors of the model's reference size (`None`: no budget).
const BUDGETS: [(&str, Option<u64>); 4] = [
    ("1/2", Some(2)),
    ("1/4", Some(4)),
    ("1/8", Some(8)),
    ("none", None),
];

/// What a model's budgets are fractions of.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Basis {
    /// The tensor bytes of the model before compression.
    Original(u64),
    /// The largest finished job's tensor bytes (the original size is unknown).
    LargestJob(u64),
    /// Neither is known (or both are 0): only "no budget" picks a job.
    Unknown,
}

impl Basis {
    fn bytes(self) -> Option<u64> {
        match self {
            Basis::Original(b) | Basis::LargestJob(b) => Some(b),
            Basis::Unknown => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Basis::Original(_) => "original",
            Basis::LargestJob(_) => "largest-job",
            Basis::Unknown => "unknown",
        }
    }
}

/// One finished job in one task's table.
struct Row<'a> {
    job: &'a Outcome,
    bytes: u64,
    metric: &'a Metric,
    /// The original size this job's ratio is computed against.
    original: Option<u64>,
    on_frontier: bool,
}

impl Row<'_> {
    /// The metric, if it is a number that can be compared and drawn.
    fn value(&self) -> Option<f64> {
        Some(self.metric.compressed).filter(|v| v.is_finite())
    }
}

/// The best job within one budget.
struct Budget {
    label: &'static str,
    divisor: Option<u64>,
    /// Index into the model's rows.
    pick: Option<usize>,
}

/// One model's part of a task.
struct ModelPart<'a> {
    model: &'a str,
    colour: &'static str,
    /// Baseline of the model's first job (by name) having the task.
    baseline: f64,
    basis: Basis,
    /// Sorted by bytes, then name.
    rows: Vec<Row<'a>>,
    /// Indices into `rows`, in frontier order.
    frontier: Vec<usize>,
    budgets: Vec<Budget>,
}

/// One evaluation task.
struct Task<'a> {
    task: &'a str,
    slug: String,
    /// The metric names the jobs report for it, sorted and joined (normally one).
    metric: String,
    /// Sorted by model.
    models: Vec<ModelPart<'a>>,
}

impl Task<'_> {
    fn svg_name(&self) -> String {
        format!("pareto-{}.svg", self.slug)
    }
}

/// Everything the three kinds of file show.
struct Report<'a> {
    title: &'a str,
    /// Sorted by name.
    jobs: Vec<&'a Outcome>,
    /// Sorted by task.
    tasks: Vec<Task<'a>>,
    /// Finished jobs that have no metric at all.
    unevaluated: Vec<&'a Outcome>,
}

/// Colours of the models, by sorted model order (cycled).
const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

impl<'a> Report<'a> {
    fn new(title: &'a str, outcomes: &'a [Outcome]) -> Self {
        let mut jobs: Vec<&Outcome> = outcomes.iter().collect();
        jobs.sort_by(|a, b| {
            (&a.name, &a.model, &a.pipeline, &a.settings)
                .cmp(&(&b.name, &b.model, &b.pipeline, &b.settings))
                .then_with(|| {
                    // Only for duplicate names: any fixed order keeps the files independent of the input order.
                    let s = |o: &Outcome| serde_json::to_string(o).unwrap_or_default();
                    s(a).cmp(&s(b))
                })
        });

        let colours: BTreeMap<&str, &'static str> = jobs
            .iter()
            .map(|o| o.model.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, PALETTE[i % PALETTE.len()]))
            .collect();

        // Each model's budget basis: the first known original size (by job name), else its largest job.
        let mut bases: BTreeMap<&str, Basis> = BTreeMap::new();
        for job in &jobs {
            let basis = bases.entry(job.model.as_str()).or_insert(Basis::Unknown);
            if let (Basis::Unknown, Some(b)) = (*basis, job.original_bytes.filter(|&b| b > 0)) {
                *basis = Basis::Original(b);
            }
        }
        for job in &jobs {
            if let Some((bytes, _)) = job.finished() {
                let basis = bases.entry(job.model.as_str()).or_insert(Basis::Unknown);
                match *basis {
                    Basis::Unknown if bytes > 0 => *basis = Basis::LargestJob(bytes),
                    Basis::LargestJob(b) if bytes > b => *basis = Basis::LargestJob(bytes),
                    _ => {}
                }
            }
        }

        // task -> model -> rows (jobs in name order; a job's first metric of the task).
        let mut by_task: BTreeMap<&str, BTreeMap<&str, Vec<Row>>> = BTreeMap::new();
        let mut unevaluated = Vec::new();
        for job in &jobs {
            let Some((bytes, metrics)) = job.finished() else {
                continue;
            };
            if metrics.is_empty() {
                unevaluated.push(*job);
            }
            let mut seen = BTreeSet::new();
            for metric in metrics {
                if !seen.insert(metric.task.as_str()) {
                    continue;
                }
                let original = job.original_bytes.filter(|&b| b > 0).or_else(|| {
                    match bases.get(job.model.as_str()) {
                        Some(Basis::Original(b)) => Some(*b),
                        _ => None,
                    }
                });
                by_task
                    .entry(metric.task.as_str())
                    .or_default()
                    .entry(job.model.as_str())
                    .or_default()
                    .push(Row {
                        job,
                        bytes,
                        metric,
                        original,
                        on_frontier: false,
                    });
            }
        }

        let mut slugs = BTreeSet::new();
        let tasks = by_task
            .into_iter()
            .map(|(task, models)| {
                let base = Some(slug(task))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "task".to_string());
                let mut slug = base.clone();
                let mut n = 2;
                while !slugs.insert(slug.clone()) {
                    slug = format!("{base}-{n}");
                    n += 1;
                }
                let metric = models
                    .values()
                    .flatten()
                    .map(|r| r.metric.metric.as_str())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ");
                let models = models
                    .into_iter()
                    .map(|(model, rows)| {
                        let basis = bases.get(model).copied().unwrap_or(Basis::Unknown);
                        ModelPart::new(
                            model,
                            colours.get(model).copied().unwrap_or(PALETTE[0]),
                            basis,
                            rows,
                        )
                    })
                    .collect();
                Task {
                    task,
                    slug,
                    metric,
                    models,
                }
            })
            .collect();

        Report {
            title,
            jobs,
            tasks,
            unevaluated,
        }
    }

    fn count(&self, f: fn(&Status) -> bool) -> usize {
        self.jobs.iter().filter(|o| f(&o.status)).count()
    }

    fn counts(&self) -> [(&'static str, usize); 4] {
        [
            ("done", self.count(|s| matches!(s, Status::Done { .. }))),
            (
                "skipped",
                self.count(|s| matches!(s, Status::Skipped { .. })),
            ),
            ("failed", self.count(|s| matches!(s, Status::Failed { .. }))),
            ("missing", self.count(|s| matches!(s, Status::Missing))),
        ]
    }

    fn failed(&self) -> impl Iterator<Item = (&'a Outcome, &'a str)> + '_ {
        self.jobs.iter().filter_map(|o| match &o.status {
            Status::Failed { error } => Some((*o, error.as_str())),
            _ => None,
        })
    }

    fn missing(&self) -> impl Iterator<Item = &'a Outcome> + '_ {
        self.jobs
            .iter()
            .copied()
            .filter(|o| matches!(o.status, Status::Missing))
    }
}

impl<'a> ModelPart<'a> {
    fn new(model: &'a str, colour: &'static str, basis: Basis, mut rows: Vec<Row<'a>>) -> Self {
        // The first job by name sets the baseline (rows arrive in name order).
        let baseline = rows.first().map_or(f64::NAN, |r| r.metric.baseline);
        rows.sort_by(|a, b| {
            a.bytes
                .cmp(&b.bytes)
                .then_with(|| a.job.name.cmp(&b.job.name))
        });

        let finite: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].value().is_some())
            .collect();
        let points: Vec<(u64, f64)> = finite
            .iter()
            .map(|&i| (rows[i].bytes, rows[i].metric.compressed))
            .collect();
        let frontier: Vec<usize> = pareto(&points).into_iter().map(|k| finite[k]).collect();
        for &i in &frontier {
            rows[i].on_frontier = true;
        }

        let budgets = BUDGETS
            .iter()
            .map(|&(label, divisor)| {
                let fits = |bytes: u64| match (divisor, basis.bytes()) {
                    (None, _) => true,
                    (Some(d), Some(b)) => u128::from(bytes) * u128::from(d) <= u128::from(b),
                    (Some(_), None) => false,
                };
                // Rows are in (bytes, name) order: the first of the highest values wins ties.
                let mut pick: Option<(usize, f64)> = None;
                for (i, row) in rows.iter().enumerate() {
                    if let Some(v) = row.value().filter(|_| fits(row.bytes)) {
                        if pick.is_none_or(|(_, best)| v > best) {
                            pick = Some((i, v));
                        }
                    }
                }
                Budget {
                    label,
                    divisor,
                    pick: pick.map(|(i, _)| i),
                }
            })
            .collect();

        ModelPart {
            model,
            colour,
            baseline,
            basis,
            rows,
            frontier,
            budgets,
        }
    }

    /// The budget's limit in bytes (rounded down), if it has one.
    fn limit(&self, budget: &Budget) -> Option<u64> {
        budget
            .divisor
            .and_then(|d| self.basis.bytes().map(|b| b / d))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Formatting helpers.

/// `v` with `decimals` decimals; `-` for NaN or infinity; never `-0.00`.
fn fixed(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    let s = format!("{v:.decimals$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

/// `v` with a sign and `decimals` decimals; `-` for NaN or infinity; zero is `+0.00`.
fn signed(v: f64, decimals: usize) -> String {
    let s = fixed(v, decimals);
    if s == "-" || s.starts_with('-') {
        s
    } else {
        format!("+{s}")
    }
}

/// Bytes as megabytes (10^6), 2 decimals.
fn mb(bytes: u64) -> String {
    fixed(bytes as f64 / 1e6, 2)
}

/// A table cell: one line, with the characters that would end the cell or open HTML escaped.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.trim().chars() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    if out.is_empty() {
        "-".to_string()
    } else {
        out
    }
}

/// The settings as `k=v`, comma separated (`-` when none).
fn settings(job: &Outcome) -> String {
    if job.settings.is_empty() {
        return "-".to_string();
    }
    job.settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Text for XML content and attribute values.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\r' | '\t' => out.push(' '),
            // Not allowed in XML 1.0.
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `n` characters of `text`, ending in `…` when cut.
fn truncate(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(n.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// The first non-empty line of an error.
fn first_line(error: &str) -> &str {
    error
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// A code fence longer than any run of backticks in `text`.
fn fence(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    "`".repeat((longest + 1).max(3))
}

// ---------------------------------------------------------------------------------------------------------------
// report.md

impl Report<'_> {
    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# {}\n", cell(self.title));
        if self.jobs.is_empty() {
            md.push_str("This sweep has no jobs.\n");
            return md;
        }
        let counts = self.counts();
        let _ = writeln!(
            md,
            "{} {}: {}.\n",
            self.jobs.len(),
            if self.jobs.len() == 1 { "job" } else { "jobs" },
            counts
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if self.tasks.is_empty() {
            md.push_str("No finished job has an evaluation result.\n\n");
        }
        for task in &self.tasks {
            self.markdown_task(&mut md, task);
        }
        if !self.unevaluated.is_empty() {
            md.push_str("## Finished jobs without an evaluation\n\n");
            md.push_str("| job | model | settings | MB | ratio |\n|---|---|---|---:|---:|\n");
            for job in &self.unevaluated {
                let bytes = job.finished().map_or(0, |(b, _)| b);
                let ratio = job
                    .original_bytes
                    .filter(|&o| o > 0)
                    .map_or("-".to_string(), |o| {
                        format!("x{}", fixed(bytes as f64 / o as f64, 2))
                    });
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {ratio} |",
                    cell(&job.name),
                    cell(&job.model),
                    cell(&settings(job)),
                    mb(bytes)
                );
            }
            md.push('\n');
        }
        let failed: Vec<_> = self.failed().collect();
        if !failed.is_empty() {
            md.push_str(
                "## Failed jobs\n\n| job | model | settings | error |\n|---|---|---|---|\n",
            );
            for (job, error) in &failed {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    cell(&job.name),
                    cell(&job.model),
                    cell(&settings(job)),
                    cell(first_line(error))
                );
            }
            md.push('\n');
            for (job, error) in &failed {
                let fence = fence(error);
                let _ = writeln!(
                    md,
                    "### {}\n\n{fence}text\n{}\n{fence}\n",
                    cell(&job.name),
                    error.trim_end()
                );
            }
        }
        let missing: Vec<_> = self.missing().collect();
        if !missing.is_empty() {
            md.push_str("## Missing\n\n");
            let _ = writeln!(
                md,
                "{} {} not run in this folder yet: run the other shards or `compressor batch --merge`.\n",
                missing.len(),
                if missing.len() == 1 { "job" } else { "jobs" }
            );
            for job in missing {
                let _ = writeln!(md, "- {}", cell(&job.name));
            }
            md.push('\n');
        }
        // One trailing newline.
        while md.ends_with("\n\n") {
            md.pop();
        }
        md
    }

    fn markdown_task(&self, md: &mut String, task: &Task) {
        let _ = writeln!(md, "## {} ({})\n", cell(task.task), cell(&task.metric));
        md.push_str("Metric and delta are x100; `*`: on the Pareto frontier of its model.\n\n");
        md.push_str(
            "| job | model | settings | MB | ratio | metric | delta | * |\n\
             |---|---|---|---:|---:|---:|---:|:-:|\n",
        );
        for part in &task.models {
            for row in &part.rows {
                let ratio = row.original.map_or("-".to_string(), |o| {
                    format!("x{}", fixed(row.bytes as f64 / o as f64, 2))
                });
                let value = row.value();
                let delta = value
                    .map(|v| (v - row.metric.baseline) * 100.0)
                    .map_or("-".to_string(), |d| signed(d, 2));
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {ratio} | {} | {delta} | {} |",
                    cell(&row.job.name),
                    cell(part.model),
                    cell(&settings(row.job)),
                    mb(row.bytes),
                    value.map_or("-".to_string(), |v| fixed(v * 100.0, 2)),
                    if row.on_frontier { "*" } else { "" }
                );
            }
        }
        md.push('\n');
        let baselines = task
            .models
            .iter()
            .map(|p| format!("{} {}", cell(p.model), fixed(p.baseline * 100.0, 2)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(md, "Baseline (uncompressed): {baselines}.\n");

        md.push_str("Best per size budget:\n\n");
        md.push_str("| model | budget | limit (MB) | job | MB | metric | delta |\n|---|---|---:|---|---:|---:|---:|\n");
        for part in &task.models {
            for budget in &part.budgets {
                let label = match (budget.divisor, part.basis) {
                    (None, _) => "none".to_string(),
                    (Some(_), Basis::Original(_)) => format!("{} of original", budget.label),
                    (Some(_), Basis::LargestJob(_)) => format!("{} of largest job", budget.label),
                    (Some(_), Basis::Unknown) => format!("{} (size unknown)", budget.label),
                };
                let limit = part.limit(budget).map_or("-".to_string(), mb);
                let (job, size, value, delta) = match budget.pick.map(|i| &part.rows[i]) {
                    Some(row) => {
                        let v = row.metric.compressed;
                        (
                            cell(&row.job.name),
                            mb(row.bytes),
                            fixed(v * 100.0, 2),
                            signed((v - row.metric.baseline) * 100.0, 2),
                        )
                    }
                    None => (
                        "none".to_string(),
                        "-".to_string(),
                        "-".to_string(),
                        "-".to_string(),
                    ),
                };
                let _ = writeln!(
                    md,
                    "| {} | {label} | {limit} | {job} | {size} | {value} | {delta} |",
                    cell(part.model)
                );
            }
        }
        let _ = writeln!(md, "\n![pareto]({})\n", task.svg_name());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// report.json

impl Report<'_> {
    fn json(&self) -> anyhow::Result<String> {
        let jobs = self
            .jobs
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .context("cannot serialize the jobs")?;
        let mut tasks = serde_json::Map::new();
        for task in &self.tasks {
            let baseline = match task.models.as_slice() {
                [one] => json!(one.baseline),
                parts => Value::Object(
                    parts
                        .iter()
                        .map(|p| (p.model.to_string(), json!(p.baseline)))
                        .collect(),
                ),
            };
            let frontier: Vec<&str> = task
                .models
                .iter()
                .flat_map(|p| p.frontier.iter().map(|&i| p.rows[i].job.name.as_str()))
                .collect();
            let mut best = Vec::new();
            for part in &task.models {
                for budget in &part.budgets {
                    let row = budget.pick.map(|i| &part.rows[i]);
                    best.push(json!({
                        "model": part.model,
                        "budget": budget.label,
                        "basis": if budget.divisor.is_some() { Some(part.basis.label()) } else { None },
                        "limit_bytes": part.limit(budget),
                        "job": row.map(|r| r.job.name.as_str()),
                        "tensor_bytes": row.map(|r| r.bytes),
                        "value": row.map(|r| r.metric.compressed),
                    }));
                }
            }
            tasks.insert(
                task.task.to_string(),
                json!({
                    "metric": task.metric,
                    "baseline": baseline,
                    "svg": task.svg_name(),
                    "frontier": frontier,
                    "best_per_budget": best,
                }),
            );
        }
        let counts: serde_json::Map<String, Value> = self
            .counts()
            .iter()
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect();
        let doc = json!({
            "title": self.title,
            "jobs": jobs,
            "tasks": tasks,
            "failed": self.failed().map(|(o, _)| o.name.as_str()).collect::<Vec<_>>(),
            "missing": self.missing().map(|o| o.name.as_str()).collect::<Vec<_>>(),
            "counts": counts,
        });
        let mut text = serde_json::to_string_pretty(&doc).context("cannot serialize the report")?;
        text.push('\n');
        Ok(text)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// pareto-<slug>.svg

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 440.0;
/// The plot area: left, right, top, bottom. Tick labels and the y label sit left of it, the x label and the legend
/// below, the baseline labels right of it.
const PLOT: (f64, f64, f64, f64) = (72.0, 556.0, 40.0, 336.0);

/// A step of 1, 2 or 5 times a power of ten giving about 5 intervals over `span`.
fn nice_step(span: f64) -> f64 {
    let raw = span / 5.0;
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let f = raw / magnitude;
    let nice = if f < 1.5 {
        1.0
    } else if f < 3.5 {
        2.0
    } else if f < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Decimals that show every tick of step `step` exactly.
fn decimals(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        ((-step.log10() - 1e-9).ceil().max(0.0) as usize).min(6)
    }
}

/// Ticks `k * step` within `[lo, hi]`.
fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).take(50).map(|k| k as f64 * step).collect()
}

impl Report<'_> {
    fn svg(&self, task: &Task) -> String {
        let (left, right, top, bottom) = PLOT;
        let drawn = || {
            task.models.iter().flat_map(|p| {
                p.rows
                    .iter()
                    .filter_map(|r| r.value().map(|v| (r.bytes, v)))
            })
        };

        // x: megabytes from 0.
        let max_mb = drawn().map(|(b, _)| b as f64 / 1e6).fold(0.0, f64::max);
        let max_mb = if max_mb > 0.0 { max_mb } else { 1.0 };
        let x_step = nice_step(max_mb);
        let x_max = ((max_mb / x_step - 1e-9).ceil() * x_step).max(max_mb);
        let sx = |bytes: u64| left + (bytes as f64 / 1e6) / x_max * (right - left);

        // y: metric x100, padded 5% around the points and the baselines.
        let ys: Vec<f64> = drawn()
            .map(|(_, v)| v * 100.0)
            .chain(task.models.iter().map(|p| p.baseline * 100.0))
            .filter(|v| v.is_finite())
            .collect();
        let (mut y_lo, mut y_hi) = ys
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        if ys.is_empty() {
            (y_lo, y_hi) = (0.0, 100.0);
        }
        let pad = if y_hi > y_lo {
            (y_hi - y_lo) * 0.05
        } else {
            1.0
        };
        y_lo -= pad;
        y_hi += pad;
        let y_step = nice_step(y_hi - y_lo);
        let sy = |v: f64| bottom - (v * 100.0 - y_lo) / (y_hi - y_lo) * (bottom - top);
        let f = |v: f64| fixed(v, 2);

        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">"
        );
        let heading = format!("{}: {} ({})", self.title, task.task, task.metric);
        let _ = writeln!(s, "<title>{}</title>", xml(&heading));
        let _ = writeln!(
            s,
            "<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>"
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"22\" font-weight=\"bold\">{}</text>",
            f(left),
            xml(&truncate(&heading, 88))
        );

        // Grid, ticks and tick labels.
        let x_dec = decimals(x_step);
        for t in ticks(0.0, x_max, x_step) {
            let x = left + t / x_max * (right - left);
            let _ = writeln!(
                s,
                "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#e5e5e5\"/>\
                 <line x1=\"{0}\" y1=\"{2}\" x2=\"{0}\" y2=\"{3}\" stroke=\"#000000\"/>\
                 <text x=\"{0}\" y=\"{4}\" text-anchor=\"middle\">{5}</text>",
                f(x),
                f(top),
                f(bottom),
                f(bottom + 5.0),
                f(bottom + 18.0),
                fixed(t, x_dec)
            );
        }
        let y_dec = decimals(y_step);
        for t in ticks(y_lo, y_hi, y_step) {
            let y = sy(t / 100.0);
            let _ = writeln!(
                s,
                "<line x1=\"{0}\" y1=\"{2}\" x2=\"{1}\" y2=\"{2}\" stroke=\"#e5e5e5\"/>\
                 <line x1=\"{3}\" y1=\"{2}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#000000\"/>\
                 <text x=\"{4}\" y=\"{5}\" text-anchor=\"end\">{6}</text>",
                f(left),
                f(right),
                f(y),
                f(left - 5.0),
                f(left - 8.0),
                f(y + 4.0),
                fixed(t, y_dec)
            );
        }
        // Axes and their labels.
        let _ = writeln!(
            s,
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#000000\"/>\
             <line x1=\"{0}\" y1=\"{2}\" x2=\"{3}\" y2=\"{2}\" stroke=\"#000000\"/>",
            f(left),
            f(top),
            f(bottom),
            f(right)
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">size (MB)</text>",
            f((left + right) / 2.0),
            f(bottom + 36.0)
        );
        let y_mid = (top + bottom) / 2.0;
        let _ = writeln!(
            s,
            "<text x=\"16\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {0})\">{1}</text>",
            f(y_mid),
            xml(&truncate(&format!("{} x100", task.metric), 45))
        );
        if ys.is_empty() || drawn().next().is_none() {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#7f7f7f\">no finite values</text>",
                f((left + right) / 2.0),
                f(y_mid)
            );
        }

        // Baselines: dashed lines, labelled right of the plot (nudged apart so labels do not overlap).
        let mut labels: Vec<(f64, &ModelPart)> = task
            .models
            .iter()
            .filter(|p| p.baseline.is_finite())
            .map(|p| (sy(p.baseline), p))
            .collect();
        for (y, part) in &labels {
            let _ = writeln!(
                s,
                "<line x1=\"{0}\" y1=\"{2}\" x2=\"{1}\" y2=\"{2}\" stroke=\"{3}\" stroke-dasharray=\"6 4\"/>",
                f(left),
                f(right),
                f(*y),
                part.colour
            );
        }
        labels.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.model.cmp(b.1.model)));
        let mut next = f64::NEG_INFINITY;
        for (y, part) in &labels {
            let at = (y + 4.0).max(next);
            if at > bottom + 4.0 {
                // No room left beside the plot; the legend still names the colour.
                break;
            }
            next = at + 14.0;
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" fill=\"{}\"><title>{}</title>{}</text>",
                f(right + 6.0),
                f(at),
                part.colour,
                xml(&format!(
                    "baseline {}: {}",
                    part.model,
                    fixed(part.baseline * 100.0, 2)
                )),
                xml(&format!("baseline {}", truncate(part.model, 13)))
            );
        }

        // Frontiers (steps: the best value reachable within each size), then the points over them.
        for part in &task.models {
            let mut path = Vec::new();
            for (k, &i) in part.frontier.iter().enumerate() {
                let row = &part.rows[i];
                let (x, y) = (sx(row.bytes), sy(row.metric.compressed));
                if k > 0 {
                    if let Some(&(_, prev_y)) = path.last() {
                        path.push((x, prev_y));
                    }
                }
                path.push((x, y));
            }
            if path.len() > 1 {
                let points = path
                    .iter()
                    .map(|(x, y)| format!("{},{}", f(*x), f(*y)))
                    .collect::<Vec<_>>()
                    .join(" ");
                let _ = writeln!(
                    s,
                    "<polyline points=\"{points}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"/>",
                    part.colour
                );
            }
        }
        for part in &task.models {
            for row in &part.rows {
                let Some(v) = row.value() else { continue };
                let tip = format!(
                    "{}: {} MB, {} {}{}",
                    row.job.name,
                    mb(row.bytes),
                    row.metric.metric,
                    fixed(v * 100.0, 2),
                    if row.on_frontier { " (frontier)" } else { "" }
                );
                let (r, stroke) = if row.on_frontier {
                    ("5", " stroke=\"#000000\" stroke-width=\"1\"")
                } else {
                    ("4", "")
                };
                let _ = writeln!(
                    s,
                    "<circle cx=\"{}\" cy=\"{}\" r=\"{r}\" fill=\"{}\" fill-opacity=\"0.8\"{stroke}><title>{}</title></circle>",
                    f(sx(row.bytes)),
                    f(sy(v)),
                    part.colour,
                    xml(&tip)
                );
            }
        }

        // Legend below the x label: swatch and model, in up to 3 rows; "+N more" when they are full.
        let (mut x, mut y) = (left, bottom + 56.0);
        let last_row = bottom + 56.0 + 2.0 * 16.0;
        let (edge, more) = (WIDTH - 8.0, 64.0);
        let parts = &task.models;
        for (k, part) in parts.iter().enumerate() {
            let text = truncate(part.model, 30);
            let width = 18.0 + 7.0 * text.chars().count() as f64 + 14.0;
            if x + width > edge && x > left && y < last_row {
                x = left;
                y += 16.0;
            }
            let room = if k + 1 < parts.len() { more } else { 0.0 };
            if y >= last_row && x > left && x + width + room > edge {
                let _ = writeln!(
                    s,
                    "<text x=\"{}\" y=\"{}\">+{} more</text>",
                    f(x),
                    f(y + 10.0),
                    parts.len() - k
                );
                break;
            }
            let _ = writeln!(
                s,
                "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
                 <text x=\"{}\" y=\"{}\"><title>{}</title>{}</text>",
                f(x),
                f(y),
                part.colour,
                f(x + 14.0),
                f(y + 10.0),
                xml(part.model),
                xml(&text)
            );
            x += width;
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(task: &str, baseline: f64, compressed: f64) -> Metric {
        Metric {
            task: task.to_string(),
            metric: "spearman".to_string(),
            baseline,
            compressed,
        }
    }

    fn job(name: &str, model: &str, status: Status) -> Outcome {
        Outcome {
            name: name.to_string(),
            model: model.to_string(),
            pipeline: "quant".to_string(),
            settings: BTreeMap::from([("blockwise-quant.bits".to_string(), name.to_string())]),
            original_bytes: None,
            seconds: Some(1.5),
            status,
        }
    }

    fn done(name: &str, model: &str, bytes: u64, value: f64, original: Option<u64>) -> Outcome {
        Outcome {
            original_bytes: original,
            ..job(
                name,
                model,
                Status::Done {
                    tensor_bytes: bytes,
                    metrics: vec![metric("sts-b/test", 0.82, value)],
                },
            )
        }
    }

    /// Model `a` (original 1000 bytes) with a dominated job, a value tie and a NaN; model `b` (original unknown,
    /// a skipped job); a failed and a missing job; a second task for one job.
    fn sweep() -> Vec<Outcome> {
        let mut a8 = done("a-8", "a", 500, 0.80, Some(1000));
        if let Status::Done { metrics, .. } = &mut a8.status {
            metrics.push(metric("Other Task!", 0.5, 0.4));
        }
        vec![
            done("a-16", "a", 1000, 0.82, Some(1000)),
            a8,
            done("a-4", "a", 250, 0.78, Some(1000)),
            done("a-3", "a", 190, 0.70, Some(1000)),
            done("a-2", "a", 125, 0.60, Some(1000)),
            done("a-2b", "a", 120, 0.60, Some(1000)),
            done("a-nan", "a", 100, f64::NAN, Some(1000)),
            job(
                "b-x",
                "b",
                Status::Done {
                    tensor_bytes: 400,
                    metrics: vec![metric("sts-b/test", 0.7, 0.5)],
                },
            ),
            job(
                "b-y",
                "b",
                Status::Skipped {
                    tensor_bytes: 100,
                    metrics: vec![metric("sts-b/test", 0.7, 0.6)],
                },
            ),
            job(
                "a-fail",
                "a",
                Status::Failed {
                    error: "error: boom <&> \"quoted\" | piped\nsecond line\n".to_string(),
                },
            ),
            job("c-missing", "c", Status::Missing),
        ]
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).expect("read a report file")
    }

    fn json_of(dir: &Path) -> Value {
        serde_json::from_str(&read(dir, "report.json")).expect("report.json parses")
    }

    #[test]
    fn pareto_keeps_undominated_points_and_ties() {
        let points = [
            (100, 0.80),    // 0: frontier
            (200, 0.85),    // 1: frontier
            (200, 0.70),    // 2: same size as 1, lower value
            (150, 0.75),    // 3: beaten by 0 (smaller and better)
            (300, 0.85),    // 4: same value as 1, larger
            (100, 0.80),    // 5: identical to 0: frontier too
            (400, 0.90),    // 6: frontier
            (50, f64::NAN), // 7: never
            (50, 0.10),     // 8: smallest: frontier
        ];
        assert_eq!(pareto(&points), vec![8, 0, 5, 1, 6]);
        assert_eq!(pareto(&[]), Vec::<usize>::new());
        assert_eq!(pareto(&[(7, 0.5)]), vec![0]);
        assert_eq!(pareto(&[(7, f64::NAN), (8, f64::NAN)]), Vec::<usize>::new());
        // Equal sizes: only the best value; a larger size must beat it strictly.
        assert_eq!(
            pareto(&[(10, 0.5), (10, 0.6), (20, 0.6), (30, 0.61)]),
            vec![1, 3]
        );
        // Infinite values compare like any other.
        assert_eq!(
            pareto(&[(10, f64::NEG_INFINITY), (20, f64::INFINITY)]),
            vec![0, 1]
        );
    }

    #[test]
    fn slugs_are_lowercase_dashed_and_trimmed() {
        assert_eq!(slug("sts-b/test"), "sts-b-test");
        assert_eq!(slug("  Other Task!! "), "other-task");
        assert_eq!(slug("GLUE/SST-2 (dev)"), "glue-sst-2-dev");
        assert_eq!(slug("///"), "");
    }

    #[test]
    fn best_per_budget_picks_the_best_job_within_each_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "sweep", &sweep()).expect("write");
        let report = json_of(dir.path());
        let task = &report["tasks"]["sts-b/test"];
        let picks: Vec<(String, String, Value)> = task["best_per_budget"]
            .as_array()
            .expect("best_per_budget")
            .iter()
            .map(|b| {
                (
                    b["model"].as_str().unwrap_or("?").to_string(),
                    b["budget"].as_str().unwrap_or("?").to_string(),
                    b["job"].clone(),
                )
            })
            .collect();
        let want = [
            ("a", "1/2", json!("a-8")),   // 500 bytes: the budget is inclusive
            ("a", "1/4", json!("a-4")),   // 250 bytes
            ("a", "1/8", json!("a-2b")),  // a-2 and a-2b tie on value: the smaller wins
            ("a", "none", json!("a-16")), // the best overall
            ("b", "1/2", json!("b-y")),   // of the largest job (400): original unknown
            ("b", "1/4", json!("b-y")),   // 100 <= 100
            ("b", "1/8", Value::Null),    // 50: nothing fits
            ("b", "none", json!("b-y")),
        ];
        let want: Vec<(String, String, Value)> = want
            .iter()
            .map(|(m, b, j)| (m.to_string(), b.to_string(), j.clone()))
            .collect();
        assert_eq!(picks, want);
        assert_eq!(task["best_per_budget"][0]["limit_bytes"], 500);
        assert_eq!(task["best_per_budget"][0]["basis"], "original");
        assert_eq!(task["best_per_budget"][4]["basis"], "largest-job");
        assert_eq!(task["best_per_budget"][4]["limit_bytes"], 200);
    }

    #[test]
    fn report_json_lists_jobs_frontiers_failures_and_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "sweep", &sweep()).expect("write");
        let report = json_of(dir.path());
        assert_eq!(report["title"], "sweep");
        let names: Vec<&str> = report["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .filter_map(|j| j["name"].as_str())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 11);
        // The job's status fields sit beside its name (flattened).
        assert_eq!(report["jobs"][0]["name"], "a-16");
        assert_eq!(report["jobs"][0]["status"], "done");
        assert_eq!(report["jobs"][0]["tensor_bytes"], 1000);
        let task = &report["tasks"]["sts-b/test"];
        assert_eq!(task["metric"], "spearman");
        assert_eq!(task["baseline"], json!({"a": 0.82, "b": 0.7}));
        assert_eq!(task["svg"], "pareto-sts-b-test.svg");
        assert_eq!(
            task["frontier"],
            json!(["a-2b", "a-3", "a-4", "a-8", "a-16", "b-y"])
        );
        // One model: the baseline is a number.
        assert_eq!(report["tasks"]["Other Task!"]["baseline"], json!(0.5));
        assert_eq!(report["failed"], json!(["a-fail"]));
        assert_eq!(report["missing"], json!(["c-missing"]));
        assert_eq!(
            report["counts"],
            json!({"done": 8, "skipped": 1, "failed": 1, "missing": 1})
        );
        // Jobs without NaN read back as outcomes.
        let jobs: Vec<Outcome> = report["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .filter(|j| j["name"] != "a-nan")
            .map(|j| serde_json::from_value(j.clone()).expect("an outcome"))
            .collect();
        let mut want: Vec<Outcome> = sweep().into_iter().filter(|o| o.name != "a-nan").collect();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(jobs, want);
    }

    #[test]
    fn write_produces_every_file_and_is_deterministic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write(dir.path(), "sweep", &sweep()).expect("write");
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "pareto-other-task.svg",
                "pareto-sts-b-test.svg",
                "report.json",
                "report.md"
            ]
        );
        assert!(paths.iter().all(|p| p.starts_with(dir.path())));
        let first: Vec<Vec<u8>> = paths
            .iter()
            .map(|p| std::fs::read(p).expect("read"))
            .collect();
        // Again into the same folder, and from the outcomes in another order into another folder.
        write(dir.path(), "sweep", &sweep()).expect("write again");
        let again: Vec<Vec<u8>> = paths
            .iter()
            .map(|p| std::fs::read(p).expect("read"))
            .collect();
        assert!(first == again, "a second write changed the files");
        let other = tempfile::tempdir().expect("tempdir");
        let mut reversed = sweep();
        reversed.reverse();
        let paths2 =
            write(&other.path().join("new/folder"), "sweep", &reversed).expect("write reversed");
        let shuffled: Vec<Vec<u8>> = paths2
            .iter()
            .map(|p| std::fs::read(p).expect("read"))
            .collect();
        assert!(first == shuffled, "the input order changed the files");
        // Nothing is left beside the files.
        let mut listed: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        listed.sort();
        assert_eq!(listed, names);
    }

    #[test]
    fn report_md_stars_exactly_the_frontier_and_shows_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "my <sweep>", &sweep()).expect("write");
        let md = read(dir.path(), "report.md");
        assert!(md.starts_with("# my &lt;sweep>\n"), "{md}");
        assert!(
            md.contains("11 jobs: 8 done, 1 skipped, 1 failed, 1 missing."),
            "{md}"
        );
        let section = md
            .split("## sts-b/test (spearman)")
            .nth(1)
            .and_then(|s| s.split("Best per size budget").next())
            .expect("the sts-b section");
        let rows: Vec<Vec<&str>> = section
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| job "))
            .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
            .collect();
        assert_eq!(rows.len(), 9, "{section}");
        let starred: Vec<&str> = rows.iter().filter(|r| r[7] == "*").map(|r| r[0]).collect();
        assert_eq!(starred, ["a-2b", "a-3", "a-4", "a-8", "a-16", "b-y"]);
        // Sorted by model, then bytes: a-nan (100 bytes) first, shown with `-`.
        let a_nan = &rows[0];
        assert_eq!(
            a_nan[..],
            [
                "a-nan",
                "a",
                "blockwise-quant.bits=a-nan",
                "0.00",
                "x0.10",
                "-",
                "-",
                ""
            ]
        );
        let a8 = rows.iter().find(|r| r[0] == "a-8").expect("a-8");
        assert_eq!(a8[3..], ["0.00", "x0.50", "80.00", "-2.00", "*"]);
        let b_y = rows.iter().find(|r| r[0] == "b-y").expect("b-y");
        assert_eq!(b_y[4..7], ["-", "60.00", "-10.00"]);
        assert!(
            md.contains("| a | 1/8 of original | 0.00 | a-2b | 0.00 | 60.00 | -22.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| b | 1/8 of largest job | 0.00 | none | - | - | - |"),
            "{md}"
        );
        assert!(md.contains("![pareto](pareto-sts-b-test.svg)"), "{md}");
        assert!(md.contains("![pareto](pareto-other-task.svg)"), "{md}");
        // The failed job: its first line in the table (escaped), the full text in a fence.
        assert!(
            md.contains("| a-fail | a | blockwise-quant.bits=a-fail | error: boom &lt;&> \"quoted\" \\| piped |"),
            "{md}"
        );
        assert!(
            md.contains("```text\nerror: boom <&> \"quoted\" | piped\nsecond line\n```"),
            "{md}"
        );
        assert!(md.contains("## Missing"), "{md}");
        assert!(md.contains(
            "1 job not run in this folder yet: run the other shards or `compressor batch --merge`."
        ));
        assert!(md.contains("- c-missing\n"), "{md}");
        assert!(md.ends_with("- c-missing\n"), "{md}");
    }

    #[test]
    fn svg_is_well_formed_with_tooltips_and_escaped_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut outcomes = sweep();
        outcomes.push(done("x<&\"'>", "m<&>", 300, 0.75, None));
        write(dir.path(), "t&<\"", &outcomes).expect("write");
        let svg = read(dir.path(), "pareto-sts-b-test.svg");
        assert!(
            svg.starts_with(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"440\""
            ),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<svg").count(), 1);
        // Every finite point is a circle with a tooltip (a-nan is not drawn).
        let circles = svg.matches("<circle").count();
        assert_eq!(circles, 9);
        assert_eq!(svg.matches("</title></circle>").count(), circles);
        for c in svg.split("<circle").skip(1) {
            let head = c.split("</circle>").next().unwrap_or("");
            assert!(head.contains("><title>"), "{head}");
        }
        // Escaped text; no raw special character in any text node or attribute.
        assert!(svg.contains("x&lt;&amp;&quot;&apos;&gt;: 0.00 MB"), "{svg}");
        assert!(svg.contains("baseline m&lt;&amp;&gt;"), "{svg}");
        assert!(
            svg.contains("t&amp;&lt;&quot;: sts-b/test (spearman)"),
            "{svg}"
        );
        assert!(!svg.contains("x<&"));
        for (open, close) in [
            ("<text", "</text>"),
            ("<title>", "</title>"),
            ("<svg", "</svg>"),
        ] {
            assert_eq!(
                svg.matches(open).count(),
                svg.matches(close).count(),
                "{open}"
            );
        }
        let tags = svg.matches('<').count();
        assert_eq!(tags, svg.matches('>').count(), "unbalanced angle brackets");
        // A frontier line for the model with more than one frontier point; a dashed baseline per model.
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("stroke-dasharray").count(), 3);
        assert!(svg.contains("font-size=\"12\""));
        assert!(svg.contains(">size (MB)</text>"));
        assert!(svg.contains(">spearman x100</text>"));
    }

    #[test]
    fn empty_and_odd_input_write_a_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write(dir.path(), "empty", &[]).expect("write");
        assert_eq!(
            paths,
            [dir.path().join("report.json"), dir.path().join("report.md")]
        );
        assert!(read(dir.path(), "report.md").contains("no jobs"));
        let report = json_of(dir.path());
        assert_eq!(report["jobs"], json!([]));
        assert_eq!(report["tasks"], json!({}));
        assert_eq!(
            report["counts"],
            json!({"done": 0, "skipped": 0, "failed": 0, "missing": 0})
        );

        // Only NaN values, a job without metrics, an empty task name and a zero size.
        let outcomes = vec![
            done("n", "m", 0, f64::NAN, Some(0)),
            job(
                "plain",
                "m",
                Status::Done {
                    tensor_bytes: 10,
                    metrics: vec![],
                },
            ),
            job(
                "z",
                "m",
                Status::Skipped {
                    tensor_bytes: 0,
                    metrics: vec![metric("///", f64::NAN, f64::INFINITY)],
                },
            ),
        ];
        let paths = write(dir.path(), "", &outcomes).expect("write");
        let names: Vec<_> = paths.iter().filter_map(|p| p.file_name()).collect();
        assert_eq!(
            names,
            [
                "pareto-sts-b-test.svg",
                "pareto-task.svg",
                "report.json",
                "report.md"
            ]
        );
        let md = read(dir.path(), "report.md");
        assert!(
            md.contains("## Finished jobs without an evaluation"),
            "{md}"
        );
        assert!(
            md.contains("| n | m | blockwise-quant.bits=n | 0.00 | - | - | - |  |"),
            "{md}"
        );
        let svg = read(dir.path(), "pareto-task.svg");
        assert!(
            svg.contains("no finite values") && svg.ends_with("</svg>\n"),
            "{svg}"
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        let report = json_of(dir.path());
        assert_eq!(report["tasks"]["sts-b/test"]["frontier"], json!([]));
        assert_eq!(report["tasks"]["sts-b/test"]["baseline"], json!(0.82));
    }

    #[test]
    fn numbers_have_fixed_precision_and_no_negative_zero() {
        assert_eq!(fixed(-0.0, 2), "0.00");
        assert_eq!(fixed(-0.001, 2), "0.00");
        assert_eq!(fixed(1.005, 1), "1.0");
        assert_eq!(signed(0.0, 2), "+0.00");
        assert_eq!(signed(-0.004, 2), "+0.00");
        assert_eq!(signed(1.234, 2), "+1.23");
        assert_eq!(signed(-1.234, 2), "-1.23");
        assert_eq!(signed(f64::NAN, 2), "-");
        assert_eq!(mb(1_234_567), "1.23");
        assert_eq!(nice_step(100.0), 20.0);
        assert_eq!(nice_step(3.3), 0.5);
        assert_eq!(decimals(0.5), 1);
        assert_eq!(decimals(0.05), 2);
        assert_eq!(decimals(20.0), 0);
        assert_eq!(ticks(0.0, 1.0, 0.5), [0.0, 0.5, 1.0]);
    }
}
