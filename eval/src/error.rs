//! The error type of `compressor-eval`.
//!
//! Every variant names the function (`metric`) and the argument (`input`) it is about, and its message reads well
//! after `error: `. The numeric routines of this crate never panic on user input: empty input, mismatched lengths,
//! NaN or infinite values, and inputs for which a metric is mathematically undefined (a constant vector for a
//! correlation, no positive label for average precision) are all reported here.

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while computing a metric or fitting a classifier or a clustering.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An input slice has no element.
    #[error("{metric}: `{input}` is empty")]
    Empty {
        metric: &'static str,
        input: &'static str,
    },

    /// An input has fewer values than the metric needs (a correlation needs two).
    #[error("{metric}: `{input}` has {len} value(s), at least {min} are needed")]
    TooShort {
        metric: &'static str,
        input: &'static str,
        len: usize,
        min: usize,
    },

    /// Two inputs that must pair up element by element have different lengths.
    #[error("{metric}: `{left}` has {left_len} values but `{right}` has {right_len}")]
    LengthMismatch {
        metric: &'static str,
        left: &'static str,
        left_len: usize,
        right: &'static str,
        right_len: usize,
    },

    /// An input holds NaN or an infinity.
    #[error("{metric}: `{input}` holds a non-finite value ({value}) at index {index}")]
    NotFinite {
        metric: &'static str,
        input: &'static str,
        index: usize,
        value: f64,
    },

    /// An input is constant, and the metric (a correlation, for instance) is undefined for constant input.
    #[error(
        "{metric}: `{input}` is constant (every value is {value}), so the metric is undefined"
    )]
    Constant {
        metric: &'static str,
        input: &'static str,
        value: f64,
    },

    /// A ranking or threshold metric was given labels with no positive (relevant) item, so it is undefined.
    #[error("{metric}: `{input}` has no positive label, so the metric is undefined")]
    NoPositives {
        metric: &'static str,
        input: &'static str,
    },

    /// The positive label of a binary F1 occurs in neither the predictions nor the gold labels.
    #[error("{metric}: the positive label {positive} occurs in neither `pred` nor `gold`, so F1 is undefined")]
    PositiveLabelAbsent {
        metric: &'static str,
        positive: usize,
    },

    /// A ranked list names the same document twice.
    #[error("{metric}: `{input}` lists the same document at positions {first} and {second}")]
    DuplicateDocument {
        metric: &'static str,
        input: &'static str,
        first: usize,
        second: usize,
    },

    /// The rows of a matrix (embeddings, feature vectors) do not all have the same length.
    #[error("{metric}: row {row} of `{input}` has {found} values, expected {expected}")]
    RaggedRows {
        metric: &'static str,
        input: &'static str,
        row: usize,
        expected: usize,
        found: usize,
    },

    /// A class label is not below the number of classes.
    #[error("{metric}: `{input}[{index}]` is {label}, but there are only {n_classes} classes (labels 0..{n_classes})")]
    LabelOutOfRange {
        metric: &'static str,
        input: &'static str,
        index: usize,
        label: usize,
        n_classes: usize,
    },

    /// A class has no training sample, so a classifier cannot be fitted for it.
    #[error("{metric}: class {class} has no training sample (every class in 0..{n_classes} needs at least one)")]
    ClassWithoutSamples {
        metric: &'static str,
        class: usize,
        n_classes: usize,
    },

    /// A setting is out of its valid range.
    #[error("{metric}: `{name}` = {value} is invalid: {expected}")]
    InvalidParameter {
        metric: &'static str,
        name: &'static str,
        value: String,
        expected: String,
    },
}
