//! Evaluation tasks: what data they read, which protocol they follow, what they report.
//!
//! | task | inputs | protocol | main metric |
//! |---|---|---|---|
//! | `sts` | sentence pairs + gold score | cosine of pooled embeddings vs score (MTEB STS) | Spearman |
//! | `classification` | text + label | logistic regression on frozen embeddings (MTEB) | accuracy |
//! | `pair-classification` | sentence pairs + binary label | cosine with the best threshold (MTEB) | average precision |
//! | `retrieval` | query + document per row | the row's document is the one relevant document | nDCG@10 |
//! | `clustering` | text + label | mini-batch k-means, k = number of labels | V-measure |
//! | `glue` | text or pair + label (or score) | the checkpoint's own classification head | accuracy (MCC / Pearson per head) |

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod data;
mod run;

pub use data::{load_rows, Row};
pub use run::run_task;

pub type Result<T, E = TaskError> = std::result::Result<T, E>;

/// Errors of evaluation tasks; each names the file, line and field, or the model folder.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Model(#[from] compressor_models::Error),
    #[error(transparent)]
    Data(#[from] compressor_calibration::Error),
    #[error("{}:{line}: field `{field}` {problem}", path.display())]
    Field {
        path: PathBuf,
        line: usize,
        field: String,
        problem: String,
    },
    #[error("`{}`: {problem}", path.display())]
    Dataset { path: PathBuf, problem: String },
    #[error("`{}` has no classification head (it is a BertModel), so task `glue` cannot run on it\nhint: use an embedding task (sts, classification, ...) or a BertForSequenceClassification checkpoint", dir.display())]
    NoHead { dir: PathBuf },
    #[error("task `{task}`: {problem}")]
    Spec { task: String, problem: String },
    #[error("metric `{metric}`: {problem}")]
    Metric { metric: String, problem: String },
}

/// The task types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    Sts,
    Classification,
    PairClassification,
    Retrieval,
    Clustering,
    Glue,
}

impl TaskKind {
    pub const ALL: [TaskKind; 6] = [
        TaskKind::Sts,
        TaskKind::Classification,
        TaskKind::PairClassification,
        TaskKind::Retrieval,
        TaskKind::Clustering,
        TaskKind::Glue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Sts => "sts",
            TaskKind::Classification => "classification",
            TaskKind::PairClassification => "pair-classification",
            TaskKind::Retrieval => "retrieval",
            TaskKind::Clustering => "clustering",
            TaskKind::Glue => "glue",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Text fields used when the spec names none.
    fn default_text_fields(self) -> &'static [&'static str] {
        match self {
            TaskKind::Sts | TaskKind::PairClassification => &["sentence1", "sentence2"],
            TaskKind::Classification | TaskKind::Clustering => &["text"],
            TaskKind::Retrieval => &["title", "text"],
            // Decided from the data: a pair when the first row has sentence1 and sentence2.
            TaskKind::Glue => &[],
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One evaluation: a task type, its data and options. The `[[eval]]` table of pipeline.toml and the flags of
/// `compressor eval` both produce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TaskSpec {
    pub task: TaskKind,
    /// Data files (JSONL, TSV, CSV): one path or a list; several files are evaluated together (all of SICK-R).
    #[serde(deserialize_with = "one_or_many")]
    pub data: Vec<PathBuf>,
    /// A name for reports (default: the first data file's parent folder and stem, e.g. `sts-b/test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `classification`: a separate test file; without it, `folds`-fold cross-validation over `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    /// Text fields: one (single texts) or two (pairs; for `retrieval`: query, document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_fields: Option<Vec<String>>,
    /// The label field (`classification`, `pair-classification`, `clustering`, `glue`).
    #[serde(default = "default_label_field")]
    pub label_field: String,
    /// The gold score field (`sts`, and `glue` with a regression head).
    #[serde(default = "default_score_field")]
    pub score_field: String,
    /// Use only the first N rows of each file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Then keep a seeded random subset of N rows (in file order; `calibration::sample` with `seed`), for quick
    /// evaluations on large or sorted files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<usize>,
    /// Truncation length (default: the model's, from sentence_bert_config.json or config.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Cross-validation folds for `classification` without a test file.
    #[serde(default = "default_folds")]
    pub folds: usize,
    /// Seed of every random choice (folds, k-means initialisation).
    #[serde(default)]
    pub seed: u64,
    /// In a pipeline: the largest allowed drop of the main metric (absolute, same units as the metric);
    /// exceeding it makes `compressor run` exit with code 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_regression: Option<f64>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a path or a list of paths")]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

fn default_label_field() -> String {
    "label".into()
}
fn default_score_field() -> String {
    "score".into()
}
fn default_folds() -> usize {
    5
}

impl TaskSpec {
    /// A spec with defaults for everything but the task and data.
    pub fn new(task: TaskKind, data: Vec<PathBuf>) -> Self {
        Self {
            task,
            data,
            name: None,
            test: None,
            text_fields: None,
            label_field: default_label_field(),
            score_field: default_score_field(),
            limit: None,
            sample: None,
            max_length: None,
            folds: default_folds(),
            seed: 0,
            max_regression: None,
        }
    }

    /// The name shown in reports.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let Some(first) = self.data.first() else {
            return self.task.to_string();
        };
        let stem = first
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let parent = first
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().to_string());
        let base = match parent {
            Some(p) if !p.is_empty() => format!("{p}/{stem}"),
            _ => stem,
        };
        if self.data.len() > 1 {
            format!("{base}+{}", self.data.len() - 1)
        } else {
            base
        }
    }

    fn spec_err(&self, problem: impl Into<String>) -> TaskError {
        TaskError::Spec {
            task: self.task.to_string(),
            problem: problem.into(),
        }
    }
}

/// What one task measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: TaskKind,
    pub name: String,
    /// Scored examples (pairs, texts, queries).
    pub examples: usize,
    /// The main metric's name (`spearman`, `accuracy`, ...).
    pub main_metric: String,
    pub main_score: f64,
    /// Every metric, main included; fractions in [0, 1], correlations in [-1, 1].
    pub metrics: BTreeMap<String, f64>,
    /// Forward passes of this task: inputs per second of model time.
    pub inputs_per_s: f64,
    pub elapsed_s: f64,
    /// Whether the embeddings came from the cache.
    pub cached: bool,
    /// Peak resident memory of the process so far, in MiB (Linux `VmHWM`; 0 where unknown).
    pub peak_rss_mib: f64,
    /// Tokens of the task's (distinct) texts as the model sees them, special tokens left out; `metrics` has
    /// `unk_fraction` = `unk_tokens` / `tokens`.
    #[serde(default)]
    pub tokens: u64,
    /// Of those, tokens that are the unknown token (`[UNK]`, `<unk>`).
    #[serde(default)]
    pub unk_tokens: u64,
}

/// Peak resident set size of this process in MiB, from `/proc/self/status` (0 where unavailable).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
