//! compressor: the command line, the pipeline spec, the planner, the runner and the artifact writer.
//!
//! A run goes raw → resolved → data: [`pipeline::load`] parses `pipeline.toml` strictly, [`plan::plan`] checks it
//! against the checkpoint's metadata (config.json and safetensors headers) without reading a weight, and
//! [`runner::run`] checks the weights, applies the passes and writes the artifact atomically ([`artifact`]).

pub mod artifact;
pub mod batch;
pub mod errors;
pub mod evaluate;
pub mod export;
pub mod human;
pub mod inspect;
pub mod oneline;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod problems;
pub mod progress;
pub mod runner;
pub mod summary;
pub mod tomltree;
