//! Evaluation of compressed checkpoints: the numerical core of the MTEB-style embedding tasks (STS, pair
//! classification, classification, clustering, retrieval) and the GLUE-style classification tasks.
//!
//! Everything here is pure math on plain slices (`&[f32]`, `&[f64]`, labels as `usize`, embeddings as
//! `Vec<Vec<f32>>`), deterministic (seeded, single-threaded), and defined as the reference implementations define
//! it (scipy, scikit-learn, pytrec_eval, MTEB); `eval/tests/metrics.rs` checks the agreement against numbers
//! written by `eval/scripts/make_metric_references.py`.
//!
//! - [`metrics`]: correlations, classification scores, average precision and best thresholds, retrieval scores,
//!   V-measure, vector similarities.
//! - [`logreg`]: the L2 logistic regression MTEB fits on embeddings.
//! - [`kmeans`]: k-means and mini-batch k-means (MTEB clustering), and the seeded [`kmeans::Rng`].
//! - [`error`]: the crate's [`Error`]; nothing here panics on user input.
//!
//! ```
//! use compressor_eval::metrics;
//! // scores with a tie: ranks of x are [1, 2.5, 2.5, 4]
//! let rho = metrics::spearman(&[1.0f32, 2.0, 2.0, 3.0], &[1.0f64, 3.0, 2.0, 4.0])?;
//! assert!((rho - 0.9486832980505138).abs() < 1e-12);
//! let err = metrics::spearman(&[1.0f32, 1.0, 1.0], &[1.0f64, 2.0, 3.0]).unwrap_err();
//! assert_eq!(err.to_string(), "spearman: `x` is constant (every value is 1), so the metric is undefined");
//! # Ok::<(), compressor_eval::Error>(())
//! ```

pub mod error;
pub mod kmeans;
pub mod logreg;
pub mod metrics;

pub use error::{Error, Result};

// Tasks on real models (runtime + tokenizer), the embedding cache and reports.
pub mod cache;
pub mod encoder;
pub mod report;
pub mod suite;
pub mod tasks;
