//! Helpers shared by the passes' integration tests.

use std::path::{Path, PathBuf};

/// A checkpoint under `models/tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(name)
}

/// Write `texts` as `calib.jsonl` (one `{"text": ...}` record each) in `dir`, and the calibration spec that reads
/// all of them (16 tokens at most, seed 0).
#[allow(dead_code)] // not every test crate that includes this module calibrates
pub fn calibration_texts(dir: &Path, texts: &[&str]) -> compressor_passes::CalibrationSpec {
    let data = dir.join("calib.jsonl");
    let lines: String = texts
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    std::fs::write(&data, lines).expect("write calibration data");
    compressor_passes::CalibrationSpec {
        data,
        field: "text".into(),
        samples: texts.len(),
        max_length: 16,
        seed: 0,
        pair_field: None,
    }
}

/// Run `pass` with its `plan` on `config` / `store` (side files from `dir`, no calibration, seed 0).
#[allow(dead_code)] // not every test crate that includes this module runs passes through it
pub fn run_planned(
    pass: &dyn compressor_passes::Pass,
    dir: &Path,
    config: &mut compressor_models::ModelConfig,
    store: &mut compressor_models::TensorStore,
    plan: &compressor_passes::PassPlan,
) -> compressor_passes::Result<compressor_passes::PassReport> {
    let mut files = compressor_passes::SideFiles::new(dir);
    pass.run(&mut compressor_passes::PassContext {
        config,
        store,
        files: &mut files,
        calibration: None,
        plan,
        progress: &compressor_passes::NoProgress,
        seed: 0,
    })
}
