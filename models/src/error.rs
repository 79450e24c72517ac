//! Errors of the models crate. Every variant names the file, tensor or key it is about.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` has no config.json\nhint: expected a Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json)", dir.display())]
    MissingConfig { dir: PathBuf },
    #[error("`{}` is not valid JSON: {source}", path.display())]
    ConfigJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{}`: key `{key}` {problem}", path.display())]
    ConfigKey {
        path: PathBuf,
        key: String,
        problem: String,
    },
    #[error("`{}`: unknown model_type `{model_type}`\nhint: supported model types: {}", path.display(), known.join(", "))]
    UnknownModelType {
        path: PathBuf,
        model_type: String,
        known: Vec<&'static str>,
    },
    #[error("`{}`: architecture `{architecture}` is not supported\nhint: supported architectures: {}", path.display(), known.join(", "))]
    UnsupportedArchitecture {
        path: PathBuf,
        architecture: String,
        known: Vec<&'static str>,
    },
    #[error("`{}` holds only a pickle checkpoint (pytorch_model.bin), which compressor does not load because unpickling can run arbitrary code\nhint: convert it to safetensors first, e.g. `AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`", dir.display())]
    PickleCheckpoint { dir: PathBuf },
    #[error("`{}` has no model.safetensors or model.safetensors.index.json\nhint: expected a Hugging Face checkpoint folder saved with safetensors", dir.display())]
    NoWeights { dir: PathBuf },
    #[error("`{}`: {problem}", path.display())]
    Safetensors { path: PathBuf, problem: String },
    #[error("tensor `{name}` not found")]
    TensorNotFound { name: String },
    #[error("tensor `{name}` has dtype {dtype}, which {purpose} cannot use")]
    UnsupportedDtype {
        name: String,
        dtype: String,
        purpose: &'static str,
    },
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("tensor `{name}` holds {count} non-finite value(s) (first: {first} at flat index {index})\nhint: the checkpoint is corrupt or was saved after a diverged training step")]
    NonFinite {
        name: String,
        count: usize,
        first: f32,
        index: usize,
    },
    #[error("the checkpoint does not match its config:\n{0}")]
    Invalid(ValidationReport),
    #[error("{0}")]
    Runtime(String),
    /// Parts of a low-rank or sparse tensor that do not fit together (forms.rs).
    #[error("`{}`: tensor `{name}` ({form}): {problem}\nhint: low-rank and sparse tensors are written by compressor only; `compressor inspect` shows what was found", path.display())]
    StoredForm {
        path: PathBuf,
        name: String,
        /// The form the parts make up (`low-rank`), or `unknown form`.
        form: &'static str,
        problem: String,
    },
    /// Quantized tensors that do not agree with the `quantization_config` of config.json (or with each other).
    #[error("`{}`: quantized tensor `{name}`: {problem}\nhint: the folder was not written by a compressed-tensors writer, or its config.json and weights come from different runs; `compressor inspect` shows what was found", path.display())]
    Quantized {
        path: PathBuf,
        name: String,
        problem: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Everything wrong between a store and its architecture, listed at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (name, expected, found)
    pub mis_shaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// (name, dtype name) of parameters whose dtype is not a float type.
    pub bad_dtype: Vec<(String, &'static str)>,
    /// (name, problem) of weights stored in another form than the config describes (low-rank of rank r).
    pub mis_formed: Vec<(String, String)>,
}

impl ValidationReport {
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.mis_shaped.is_empty()
            && self.bad_dtype.is_empty()
            && self.mis_formed.is_empty()
    }
}

/// At most this many problems are listed; the rest are counted (`... and 99,994 more`).
pub const LISTED_PROBLEMS: usize = 20;

/// `n` with thousands separators (`99,994`).
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl std::fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut lines = Vec::new();
        for (name, expected, got) in &self.mis_shaped {
            lines.push(format!(
                "  tensor `{name}` has shape {got:?}, the config implies {expected:?}"
            ));
        }
        for (name, problem) in &self.mis_formed {
            lines.push(format!("  tensor `{name}` {problem}"));
        }
        for name in &self.missing {
            lines.push(format!("  tensor `{name}` is missing"));
        }
        for name in &self.unexpected {
            lines.push(format!("  tensor `{name}` is not part of the architecture"));
        }
        for (name, dtype) in &self.bad_dtype {
            lines.push(format!(
                "  tensor `{name}` has dtype {dtype}, expected F32, F16 or BF16"
            ));
        }
        if lines.len() > LISTED_PROBLEMS {
            let more = lines.len() - LISTED_PROBLEMS;
            lines.truncate(LISTED_PROBLEMS);
            lines.push(format!("  ... and {} more", thousands(more)));
        }
        write!(f, "{}", lines.join("\n"))
    }
}
