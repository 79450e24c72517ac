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

/// Short labelled texts (3 classes) for calibration.
#[allow(dead_code)]
pub const LABELLED: [(&str, i64); 8] = [
    ("the cat sat on the mat", 1),
    ("a good movie", 2),
    ("i hate this film", 0),
    ("it was not very good", 0),
    ("love it", 2),
    ("the dog and the cat", 1),
    ("a great film, very good", 2),
    ("bad", 0),
];

/// [`LABELLED`] as `calib.jsonl` in `dir` and the spec that reads all of it (16 tokens, seed 0): with labels shifted
/// by `label_offset` (an offset of 3 puts them all out of range), or without labels (`None`).
#[allow(dead_code)]
pub fn labelled_calibration(
    dir: &Path,
    label_offset: Option<i64>,
) -> compressor_passes::CalibrationSpec {
    let data = dir.join("calib.jsonl");
    let lines: String = LABELLED
        .iter()
        .map(|(t, y)| {
            let record = match label_offset {
                Some(off) => serde_json::json!({ "text": t, "label": y + off }),
                None => serde_json::json!({ "text": t }),
            };
            format!("{record}\n")
        })
        .collect();
    std::fs::write(&data, lines).expect("write calibration data");
    compressor_passes::CalibrationSpec {
        data,
        field: "text".into(),
        samples: LABELLED.len(),
        max_length: 16,
        seed: 0,
        pair_field: None,
    }
}

/// Three rows of token ids of different lengths (types 0, padded with 0).
#[allow(dead_code)]
pub fn batch() -> compressor_models::EncodedBatch {
    let rows: Vec<(Vec<i64>, Vec<i64>)> = [
        vec![2, 17, 40, 33, 9, 3],
        vec![2, 50, 61, 3],
        vec![2, 8, 8, 90, 101, 77, 12, 3],
    ]
    .into_iter()
    .map(|ids| {
        let types = vec![0; ids.len()];
        (ids, types)
    })
    .collect();
    compressor_models::EncodedBatch::from_rows(&rows, 0)
}

/// The largest absolute difference between two sets of rows of the same shape.
#[allow(dead_code)]
pub fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
