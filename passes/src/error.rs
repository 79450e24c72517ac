//! Errors of the passes crate. Messages name the key or tensor they are about; lines starting with `hint:` are
//! printed by the binary as hints.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A models-crate error (reading a tensor, validating the store, ...).
    #[error(transparent)]
    Model(#[from] compressor_models::Error),
    /// A calibration-crate error (reading data, tokenizing).
    #[error(transparent)]
    Data(#[from] compressor_calibration::Error),
    /// A side file (tokenizer, sentence-transformers config) that cannot be read or parsed.
    #[error("`{}` {problem}", path.display())]
    File {
        path: std::path::PathBuf,
        problem: String,
    },
    /// A pass that needs the pipeline's `[calibration]` data, run without it.
    #[error("`{key}` needs calibration data, and the pipeline has no `[calibration]` section\nhint: add `[calibration]` with `data = \"texts.jsonl\"` (one JSON record per line with a `text` field)")]
    NoCalibration { key: String },
    /// A pass setting that is well-formed but cannot apply to this model (found at plan time).
    #[error("`{key}`: {problem}")]
    Config { key: String, problem: String },
    /// A selector that selects nothing.
    #[error("`{key}` matches no tensor of this model\nhint: `compressor inspect` lists every tensor with its role and kind; roles: {roles}")]
    EmptySelection { key: String, roles: String },
    /// A selector that selects only tensors the pass cannot change.
    #[error("`{key}` matches only tensors that are not floating point ({names})\nhint: select float parameters (kinds `weight` and `bias`)")]
    NothingToChange { key: String, names: String },
    /// Values that the target dtype cannot represent.
    #[error("tensor `{name}` holds {count} value(s) outside the {dtype} range (largest magnitude {max} at flat index {index})\nhint: use dtype = \"bf16\", which keeps the f32 exponent range, or leave the tensor out with `select.exclude`")]
    OutOfRange {
        name: String,
        dtype: String,
        count: usize,
        max: f32,
        index: usize,
    },
}
