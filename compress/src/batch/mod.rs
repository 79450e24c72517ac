//! `compressor batch JOBS.toml`: a sweep of models x pipelines x pass settings, each job one artifact folder with a
//! stable name, run K at a time, split over shards of a cluster array job, resumed after a crash, and summed up in
//! one report ([`report`]).
//!
//! ```toml
//! name = "minilm-sweep"            # the report's title (default: the file's stem)
//! output = "../out/sweep"          # jobs go to OUTPUT/jobs/NAME, the report to OUTPUT/report.md
//!
//! [models]                         # label -> checkpoint folder
//! minilm = "../.cache/models/all-MiniLM-L6-v2"
//!
//! [pipelines]                      # label -> pipeline file; its [model] path and [output] dir are set per job
//! quant = "sweep/quant.toml"
//!
//! [sweep.blockwise-quant]          # every pass of this kind gets each combination of these values
//! bits = [8, 4, 3]
//! group-size = [32, 128]
//! ```
//!
//! Everything is checked before the first job starts: the keys of the file, each expanded pipeline (a swept key
//! the pass does not have is the pipeline parser's error, naming the key), the shard, and that no two jobs share
//! a folder. A job whose folder holds a finished artifact of the same resolved pipeline is skipped (`--force`
//! reruns it); the runner's output lock and recovery make a killed job rerun cleanly and two processes on one job
//! safe. A failing job does not stop the others; its error is kept in `OUTPUT/state/NAME.error` for the report.

pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::{output, pipeline, plan, progress, runner};

/// The JOBS.toml file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    name: Option<String>,
    output: String,
    models: BTreeMap<String, String>,
    pipelines: BTreeMap<String, String>,
    #[serde(default)]
    sweep: BTreeMap<String, BTreeMap<String, Vec<toml::Value>>>,
}

/// One job of the expanded sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// The folder name under `OUTPUT/jobs/`: model, pipeline and the swept settings.
    pub name: String,
    pub model: String,
    pub pipeline: String,
    /// `kind.key` -> value as TOML writes it.
    pub settings: BTreeMap<String, String>,
    /// Which shard runs it: its index in the sorted list modulo the shard count.
    pub shard: usize,
    #[serde(skip)]
    model_dir: PathBuf,
    #[serde(skip)]
    pipeline_file: PathBuf,
    #[serde(skip)]
    overrides: Vec<(String, String, toml::Value)>,
}

/// The expanded sweep.
#[derive(Debug)]
pub struct Batch {
    pub title: String,
    /// OUTPUT, resolved against the JOBS.toml folder.
    pub output: PathBuf,
    pub jobs: Vec<Job>,
    pub shards: usize,
}

/// `i/n`: this process runs the jobs of shard `i` of `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `--shard i/n`, else the array index of Slurm (`SLURM_ARRAY_TASK_ID` with `SLURM_ARRAY_TASK_COUNT`) or of a
    /// Kubernetes indexed Job (`JOB_COMPLETION_INDEX` with `COMPRESSOR_SHARDS`), else the whole sweep (0/1).
    pub fn resolve(arg: Option<&str>) -> anyhow::Result<Self> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let (text, source) = match arg {
            Some(a) => (a.to_string(), "--shard".to_string()),
            None => match (
                env("SLURM_ARRAY_TASK_ID"),
                env("SLURM_ARRAY_TASK_COUNT"),
                env("JOB_COMPLETION_INDEX"),
                env("COMPRESSOR_SHARDS"),
            ) {
                (Some(i), Some(n), _, _) => (
                    format!("{i}/{n}"),
                    "SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT".into(),
                ),
                (Some(_), None, _, _) => bail!(
                    "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not\nhint: submit with `--array=0-N` (Slurm sets both), or pass `--shard i/n`"
                ),
                (None, _, Some(i), Some(n)) => (
                    format!("{i}/{n}"),
                    "JOB_COMPLETION_INDEX / COMPRESSOR_SHARDS".into(),
                ),
                (None, _, Some(_), None) => bail!(
                    "JOB_COMPLETION_INDEX is set but COMPRESSOR_SHARDS is not\nhint: set COMPRESSOR_SHARDS to the Job's `completions` (examples/batch-job.yaml), or pass `--shard i/n`"
                ),
                _ => return Ok(Self { index: 0, count: 1 }),
            },
        };
        let parsed = text.split_once('/').and_then(|(i, n)| {
            Some((
                i.trim().parse::<usize>().ok()?,
                n.trim().parse::<usize>().ok()?,
            ))
        });
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Self { index, count }),
            Some((index, count)) => bail!(
                "shard `{text}` (from {source}) is out of range: the index must be below the count ({index} is not below {count})\nhint: shards are numbered 0/{count} to {}/{count}",
                count.saturating_sub(1)
            ),
            None => bail!("shard `{text}` (from {source}) is not `i/n`, e.g. `--shard 0/2`"),
        }
    }
}

/// A value as part of a folder name: `4`, `0.5`, `true`, strings as written; anything else in its TOML form.
fn value_label(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `s` in lowercase with every run of characters other than `[a-z0-9]` and those in `keep` replaced by one `-`,
/// trimmed of `-`: a folder or file name (`keep = "."` keeps `0.5` in job names; the report's files keep nothing).
pub(crate) fn slug(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || keep.contains(c) {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// A job-name part: [`slug`] keeping `.`.
fn name_part(s: &str) -> String {
    slug(s, ".")
}

/// Read and expand JOBS.toml; every problem is an error naming the file and key, before any job runs.
pub fn load(file: &Path, shards: usize) -> anyhow::Result<Batch> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the batch file `{}`", file.display()))?;
    let spec: Spec = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "`{}`: {}\nhint: the keys are name, output, [models], [pipelines] and [sweep.<pass kind>] (docs/batch.md)",
            file.display(),
            e.to_string().trim_end()
        )
    })?;
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let at =
        |key: &str, problem: String| anyhow::anyhow!("`{}`: `{key}` {problem}", file.display());
    if spec.models.is_empty() {
        return Err(at(
            "models",
            "is empty: name at least one checkpoint folder (`minilm = \"path\"`)".into(),
        ));
    }
    if spec.pipelines.is_empty() {
        return Err(at(
            "pipelines",
            "is empty: name at least one pipeline file (`quant = \"quant.toml\"`)".into(),
        ));
    }
    for (label, what) in spec
        .models
        .keys()
        .map(|k| (k, "models"))
        .chain(spec.pipelines.keys().map(|k| (k, "pipelines")))
    {
        if name_part(label) != *label {
            return Err(at(
                &format!("{what}.{label}"),
                format!("is not a folder-name label: use lowercase letters, digits, `.` and `-` (e.g. `{}`)", name_part(label)),
            ));
        }
    }
    for (kind, keys) in &spec.sweep {
        for (key, values) in keys {
            if values.is_empty() {
                return Err(at(&format!("sweep.{kind}.{key}"), "has no values".into()));
            }
        }
    }
    // The pass kinds of each pipeline, read from its file.
    let mut pipelines = Vec::new();
    for (label, rel) in &spec.pipelines {
        let path = base.join(rel);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "`{}`: `pipelines.{label}`: cannot read pipeline `{}`",
                file.display(),
                path.display()
            )
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "pipeline `{}`: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })?;
        let kinds: Vec<String> = table
            .get("pass")
            .and_then(toml::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| {
                        p.get("kind")
                            .and_then(toml::Value::as_str)
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        pipelines.push((label.clone(), path, kinds));
    }
    for kind in spec.sweep.keys() {
        if !pipelines.iter().any(|(_, _, kinds)| kinds.contains(kind)) {
            return Err(at(
                &format!("sweep.{kind}"),
                format!(
                    "sweeps a pass kind that no pipeline has (their passes: {})",
                    pipelines
                        .iter()
                        .flat_map(|(_, _, k)| k.iter().cloned())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    let key_count = |key: &str| spec.sweep.values().filter(|k| k.contains_key(key)).count();
    let mut jobs = Vec::new();
    for (model, model_path) in &spec.models {
        for (pipeline, path, kinds) in &pipelines {
            // The axes that apply to this pipeline, in (kind, key) order.
            let axes: Vec<(&String, &String, &Vec<toml::Value>)> = spec
                .sweep
                .iter()
                .filter(|(kind, _)| kinds.contains(kind))
                .flat_map(|(kind, keys)| keys.iter().map(move |(k, v)| (kind, k, v)))
                .collect();
            let combos: usize = axes.iter().map(|(_, _, v)| v.len()).product();
            for c in 0..combos {
                let mut rest = c;
                let mut name = format!("{model}-{pipeline}");
                let mut settings = BTreeMap::new();
                let mut overrides = Vec::new();
                // The last axis varies fastest.
                let mut picks = vec![0; axes.len()];
                for (i, (_, _, values)) in axes.iter().enumerate().rev() {
                    picks[i] = rest % values.len();
                    rest /= values.len();
                }
                for ((kind, key, values), pick) in axes.iter().zip(picks) {
                    let v = &values[pick];
                    let label = if key_count(key) > 1 {
                        format!("{kind}-{key}")
                    } else {
                        key.to_string()
                    };
                    name.push('-');
                    name.push_str(&name_part(&format!("{label}{}", value_label(v))));
                    settings.insert(format!("{kind}.{key}"), value_label(v));
                    overrides.push((kind.to_string(), key.to_string(), v.clone()));
                }
                jobs.push(Job {
                    name,
                    model: model.clone(),
                    pipeline: pipeline.clone(),
                    settings,
                    shard: 0,
                    model_dir: output::absolute(&base.join(model_path)),
                    pipeline_file: path.clone(),
                    overrides,
                });
            }
        }
    }
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = jobs.windows(2).find(|w| w[0].name == w[1].name) {
        bail!(
            "`{}`: two jobs would write the same folder `{}` ({} {:?} and {} {:?})\nhint: give the models or pipelines distinct labels",
            file.display(),
            w[0].name,
            w[0].pipeline,
            w[0].settings,
            w[1].pipeline,
            w[1].settings
        );
    }
    let shards = shards.max(1);
    for (i, j) in jobs.iter_mut().enumerate() {
        j.shard = i % shards;
    }
    let title = spec.name.clone().unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sweep".into())
    });
    let batch = Batch {
        title,
        output: output::absolute(&base.join(&spec.output)),
        jobs,
        shards,
    };
    // Every job's pipeline must parse: a swept key the pass does not have is caught here, naming it.
    for job in &batch.jobs {
        batch.pipeline(job)?;
    }
    Ok(batch)
}

impl Batch {
    pub fn job_dir(&self, job: &Job) -> PathBuf {
        self.output.join("jobs").join(&job.name)
    }

    fn error_file(&self, job: &Job) -> PathBuf {
        self.output
            .join("state")
            .join(format!("{}.error", job.name))
    }

    /// The job's pipeline: its file with `[model] path`, `[output] dir` and the swept keys set, parsed as if read
    /// from the original file (relative paths keep resolving against its folder).
    pub fn pipeline(&self, job: &Job) -> anyhow::Result<pipeline::Pipeline> {
        let text = std::fs::read_to_string(&job.pipeline_file)
            .with_context(|| format!("cannot read pipeline `{}`", job.pipeline_file.display()))?;
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "pipeline `{}`: {}",
                job.pipeline_file.display(),
                e.to_string().trim_end()
            )
        })?;
        let section = |table: &mut toml::Table, name: &str| -> anyhow::Result<toml::Table> {
            match table.remove(name) {
                None => Ok(toml::Table::new()),
                Some(toml::Value::Table(t)) => Ok(t),
                Some(_) => bail!(
                    "pipeline `{}`: `{name}` is not a table",
                    job.pipeline_file.display()
                ),
            }
        };
        let mut model = section(&mut table, "model")?;
        model.insert("path".into(), job.model_dir.display().to_string().into());
        table.insert("model".into(), model.into());
        let mut out = section(&mut table, "output")?;
        out.insert("dir".into(), self.job_dir(job).display().to_string().into());
        table.insert("output".into(), out.into());
        if let Some(toml::Value::Array(passes)) = table.get_mut("pass") {
            for pass in passes.iter_mut() {
                let Some(t) = pass.as_table_mut() else {
                    continue;
                };
                let kind = t
                    .get("kind")
                    .and_then(toml::Value::as_str)
                    .map(str::to_string);
                for (k, key, v) in &job.overrides {
                    if kind.as_deref() == Some(k.as_str()) {
                        t.insert(key.clone(), v.clone());
                    }
                }
            }
        }
        let text = toml::to_string(&table).context("cannot write the job's pipeline")?;
        pipeline::parse(&job.pipeline_file, &text)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("job `{}` ({})", job.name, describe(job)))
    }

    /// Whether the job's folder holds a finished artifact of exactly this pipeline.
    fn finished(&self, job: &Job, pipeline: &pipeline::Pipeline) -> bool {
        let dir = self.job_dir(job);
        if output::ownership(&dir).is_err() {
            return false;
        }
        let Some(manifest) = read_json(&dir.join("manifest.json")) else {
            return false;
        };
        serde_json::to_value(pipeline.resolved(false)).ok().as_ref() == manifest.get("pipeline")
    }
}

fn describe(job: &Job) -> String {
    let mut s = format!("model {}, pipeline {}", job.model, job.pipeline);
    for (k, v) in &job.settings {
        s.push_str(&format!(", {k} = {v}"));
    }
    s
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// How a job of this invocation ended.
#[derive(Debug, Clone)]
enum Ran {
    Done(f64),
    Skipped,
    Failed(String, f64),
    /// Another process holds the job's output lock.
    Busy,
}

/// Memory one job may take: four times the model's tensor bytes plus 512 MiB for activations and evaluation (a
/// rough bound; MiniLM runs measured under 1.5 GB).
fn job_memory(job: &Job) -> u64 {
    let bytes: u64 = compressor_models::store::weight_files(&job.model_dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok().map(|m| m.len()))
        .sum();
    4 * bytes + (512 << 20)
}

/// Options of `compressor batch`.
pub struct Options {
    pub jobs: usize,
    pub force: bool,
    pub shard: Shard,
}

/// Run this shard's jobs, then write the report of every job found in OUTPUT. Returns whether every job of this
/// invocation succeeded.
pub fn run(batch: &Batch, opts: &Options) -> anyhow::Result<bool> {
    std::fs::create_dir_all(batch.output.join("state"))
        .with_context(|| format!("cannot create `{}`", batch.output.display()))?;
    // Statistics (calibration, analyses) are shared by every job and shard of the sweep unless the user chose a
    // cache: jobs of one model and data pay for them once.
    if std::env::var_os("COMPRESSOR_CACHE").is_none() {
        std::env::set_var("COMPRESSOR_CACHE", batch.output.join("cache"));
    }
    let mine: Vec<&Job> = batch
        .jobs
        .iter()
        .filter(|j| j.shard % opts.shard.count == opts.shard.index)
        .collect();
    let mut k = opts.jobs.max(1).min(mine.len().max(1));
    if let (Some(avail), Some(need)) = (
        crate::summary::proc_bytes("/proc/meminfo", "MemAvailable:"),
        mine.iter().map(|j| job_memory(j)).max(),
    ) {
        let fit = (avail / need.max(1)).max(1) as usize;
        if fit < k {
            eprintln!(
                "note: running {fit} job(s) at once, not {k}: each may take {:.1} GB and {:.1} GB is available",
                need as f64 / 1e9,
                avail as f64 / 1e9
            );
            k = fit;
        }
    }
    eprintln!(
        "batch `{}`: {} job(s) in shard {}/{} of {} in all, {k} at once; output `{}`",
        batch.title,
        mine.len(),
        opts.shard.index,
        opts.shard.count,
        batch.jobs.len(),
        batch.output.display()
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<String, Ran>> = Mutex::new(BTreeMap::new());
    let total = mine.len();
    std::thread::scope(|s| {
        for _ in 0..k {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = mine.get(i) else { break };
                let ran = run_job(batch, job, opts.force);
                let line = match &ran {
                    Ran::Done(s) => format!(
                        "done in {}",
                        crate::human::duration(std::time::Duration::from_secs_f64(*s))
                    ),
                    Ran::Skipped => "skipped (finished earlier; --force reruns it)".into(),
                    Ran::Failed(e, _) => {
                        format!("FAILED: {}", e.lines().next().unwrap_or_default())
                    }
                    Ran::Busy => "skipped: another process is running it".into(),
                };
                eprintln!("[{}/{total}] {}: {line}", i + 1, job.name);
                if let Ok(mut r) = results.lock() {
                    r.insert(job.name.clone(), ran);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    let failed = results
        .values()
        .filter(|r| matches!(r, Ran::Failed(..)))
        .count();
    let written = write_report(batch, &results, false)?;
    eprintln!(
        "wrote `{}`{}",
        written.display(),
        if failed > 0 {
            format!(" ({failed} job(s) failed)")
        } else {
            String::new()
        }
    );
    Ok(failed == 0)
}

fn run_job(batch: &Batch, job: &Job, force: bool) -> Ran {
    let started = Instant::now();
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> anyhow::Result<Ran> {
            let pipeline = batch.pipeline(job)?;
            if !force && batch.finished(job, &pipeline) {
                // A writer killed after its artifact was in place leaves its lock file (and perhaps the folder it
                // replaced) beside the job: taking the lock and letting it go clears them. Busy: its owner will.
                drop(output::OutputLock::acquire(&batch.job_dir(job)));
                return Ok(Ran::Skipped);
            }
            // A folder of ours from other settings (the pipeline file changed) is replaced: the batch owns OUTPUT/jobs.
            let replace = force || output::ownership(&batch.job_dir(job)).is_ok();
            let plan = plan::plan(
                pipeline,
                &plan::PlanOptions {
                    output: None,
                    force: replace,
                    dry_run: false,
                },
            )?;
            let quiet = progress::Bars::new(progress::Mode::Off);
            runner::run(plan, replace, &quiet, &quiet)?;
            Ok(Ran::Done(started.elapsed().as_secs_f64()))
        }));
    let seconds = started.elapsed().as_secs_f64();
    let ran = match result {
        Ok(Ok(ran)) => ran,
        Ok(Err(e)) => {
            let text = crate::errors::render(&e);
            // Another process may have finished the job between our check and our write: then it is done.
            let finished_elsewhere =
                !force && batch.pipeline(job).is_ok_and(|p| batch.finished(job, &p));
            if finished_elsewhere {
                Ran::Skipped
            } else if e.chain().any(|c| c.is::<output::OutputBusy>()) {
                Ran::Busy
            } else {
                Ran::Failed(text, seconds)
            }
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Ran::Failed(format!("error: the job panicked: {what}\n"), seconds)
        }
    };
    let error_file = batch.error_file(job);
    match &ran {
        Ran::Failed(text, _) => {
            let tmp = compressor_models::fsio::temp_beside(&error_file);
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, &error_file);
            }
        }
        Ran::Done(_) | Ran::Skipped => {
            let _ = std::fs::remove_file(&error_file);
        }
        Ran::Busy => {}
    }
    ran
}

/// The outcome of every job of the sweep, from this invocation's results and what OUTPUT holds. `merged`: no job
/// ran here (`--merge`), so every finished artifact counts as done rather than skipped.
fn outcomes(batch: &Batch, ran: &BTreeMap<String, Ran>, merged: bool) -> Vec<report::Outcome> {
    batch
        .jobs
        .iter()
        .map(|job| {
            let manifest = read_json(&batch.job_dir(job).join("manifest.json"))
                .filter(|_| output::ownership(&batch.job_dir(job)).is_ok());
            let bytes = |m: &serde_json::Value, side: &str| m[side]["tensor_bytes"].as_u64();
            let metrics = |m: &serde_json::Value| -> Vec<report::Metric> {
                m["evaluation"]["deltas"]
                    .as_array()
                    .map(|ds| {
                        ds.iter()
                            .filter_map(|d| {
                                Some(report::Metric {
                                    task: d["task"].as_str()?.to_string(),
                                    metric: d["metric"].as_str()?.to_string(),
                                    baseline: d["baseline"].as_f64()?,
                                    compressed: d["compressed"].as_f64()?,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let error = std::fs::read_to_string(batch.error_file(job)).ok();
            let (status, seconds) = match (ran.get(&job.name), &manifest, error) {
                (Some(Ran::Failed(e, s)), _, _) => {
                    (report::Status::Failed { error: e.clone() }, Some(*s))
                }
                (Some(Ran::Done(s)), Some(m), _) => (
                    report::Status::Done {
                        tensor_bytes: bytes(m, "output").unwrap_or(0),
                        metrics: metrics(m),
                    },
                    Some(*s),
                ),
                (_, Some(m), _) if merged => (
                    report::Status::Done {
                        tensor_bytes: bytes(m, "output").unwrap_or(0),
                        metrics: metrics(m),
                    },
                    None,
                ),
                (_, Some(m), _) => (
                    report::Status::Skipped {
                        tensor_bytes: bytes(m, "output").unwrap_or(0),
                        metrics: metrics(m),
                    },
                    None,
                ),
                (_, None, Some(e)) => (report::Status::Failed { error: e }, None),
                (_, None, None) => (report::Status::Missing, None),
            };
            report::Outcome {
                name: job.name.clone(),
                model: job.model.clone(),
                pipeline: job.pipeline.clone(),
                settings: job.settings.clone(),
                original_bytes: manifest.as_ref().and_then(|m| bytes(m, "input")),
                seconds,
                status,
            }
        })
        .collect()
}

fn write_report(
    batch: &Batch,
    ran: &BTreeMap<String, Ran>,
    merged: bool,
) -> anyhow::Result<PathBuf> {
    let outcomes = outcomes(batch, ran, merged);
    report::write(&batch.output, &batch.title, &outcomes)
        .with_context(|| format!("cannot write the report into `{}`", batch.output.display()))?;
    Ok(batch.output.join("report.md"))
}

/// `--merge`: the report of every job found in OUTPUT (every shard's), running nothing. Returns whether no job
/// failed.
pub fn merge(batch: &Batch) -> anyhow::Result<bool> {
    let path = write_report(batch, &BTreeMap::new(), true)?;
    let outcomes = outcomes(batch, &BTreeMap::new(), true);
    let count = |f: fn(&report::Status) -> bool| outcomes.iter().filter(|o| f(&o.status)).count();
    let failed = count(|s| matches!(s, report::Status::Failed { .. }));
    let missing = count(|s| matches!(s, report::Status::Missing));
    eprintln!(
        "wrote `{}`: {} finished, {failed} failed, {missing} not run yet",
        path.display(),
        outcomes.len() - failed - missing
    );
    Ok(failed == 0)
}
