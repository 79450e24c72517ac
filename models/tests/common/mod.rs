//! Helpers shared by the models integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use compressor_models::runtime::{Bert, Cpu};
use compressor_models::{Checkpoint, EncodedBatch};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `../shared/<rel>` beside the repository, or None (with a printed skip notice) when absent.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = repo_root().join("..").join("shared").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is absent (CI provides ../shared)", p.display());
        None
    }
}

/// `.cache/models/<name>` fetched by `scripts/<script>`, or None with a skip notice.
fn fetched(name: &str, script: &str) -> Option<PathBuf> {
    let p = repo_root().join(".cache/models").join(name);
    if p.join("model.safetensors").is_file() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is absent (run scripts/{script})", p.display());
        None
    }
}

/// all-MiniLM-L6-v2 fetched by scripts/fetch-minilm.sh.
pub fn minilm() -> Option<PathBuf> {
    fetched("all-MiniLM-L6-v2", "fetch-minilm.sh")
}

/// all-mpnet-base-v2 fetched by scripts/fetch-mpnet.sh.
pub fn mpnet() -> Option<PathBuf> {
    fetched("all-mpnet-base-v2", "fetch-mpnet.sh")
}

pub fn load(ckpt: &Checkpoint) -> Bert<Cpu> {
    Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
        .expect("load model")
}

pub fn ids(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("int"))
        .collect()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

pub fn single(ids: Vec<i64>, types: Vec<i64>) -> EncodedBatch {
    EncodedBatch::from_rows(&[(ids, types)], 0)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
