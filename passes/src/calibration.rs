//! The `[calibration]` data of a pipeline as passes see it: one text corpus shared by every pass that needs data.

use std::path::PathBuf;

use serde::Serialize;

/// Where the calibration texts come from and how many to use. Paths are resolved (absolute or relative to the
/// working folder) by the time a pass sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CalibrationSpec {
    /// A JSONL file with one record per line (or a text file with one text per line).
    pub data: PathBuf,
    /// The record field holding the text.
    pub field: String,
    /// How many records to sample.
    pub samples: usize,
    /// Token sequences are cut to this length.
    pub max_length: usize,
    /// Seed for sampling.
    pub seed: u64,
}
