//! Parity of the runtime with transformers on the real checkpoints, when present:
//! - the SST-2 and MRPC classifiers in ../shared/models reproduce their reference_logits.json (max abs diff <= 1e-4);
//! - all-MiniLM-L6-v2 (scripts/fetch-minilm.sh) reproduces the committed sentence-transformers-style embeddings
//!   (models/tests/fixtures/minilm_reference.json, made by models/tests/fixtures/make_fixtures.py): cosine >= 0.99999;
//! - all-mpnet-base-v2 (scripts/fetch-mpnet.sh) likewise (mpnet_reference.json, made by make_arch_fixtures.py).

mod common;

use common::*;
use compressor_models::{Checkpoint, EncodedBatch};

fn classifier_parity(folder: &str) {
    let Some(dir) = shared(&format!("models/{folder}")) else {
        return;
    };
    let ckpt = Checkpoint::open(&dir).expect("open classifier");
    let model = load(&ckpt);
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference_logits.json")).expect("read"),
    )
    .expect("json");
    let examples = reference["examples"].as_array().expect("examples");
    assert_eq!(examples.len(), 8);
    let mut rows = Vec::new();
    let mut worst = 0f32;
    for ex in examples {
        let (i, t) = (ids(&ex["input_ids"]), ids(&ex["token_type_ids"]));
        let logits = model
            .classify(&single(i.clone(), t.clone()))
            .expect("forward");
        worst = worst.max(max_abs_diff(&logits[0], &floats(&ex["logits"])));
        rows.push((i, t));
    }
    eprintln!("{folder}: max abs logit diff vs transformers = {worst:e}");
    assert!(worst <= 1e-4, "{folder}: max abs diff {worst}");
    // The same 8 examples as one right-padded batch give the same logits.
    let batched = model
        .classify(&EncodedBatch::from_rows(&rows, 0))
        .expect("forward");
    for (ex, got) in examples.iter().zip(&batched) {
        let d = max_abs_diff(got, &floats(&ex["logits"]));
        assert!(d <= 1e-4, "{folder}: padded batch differs by {d}");
    }
}

#[test]
fn sst2_classifier_matches_transformers_logits() {
    classifier_parity("minilm-l6-sst2");
}

#[test]
fn mrpc_classifier_matches_transformers_logits() {
    classifier_parity("minilm-l6-mrpc");
}

/// The model in `dir` reproduces the committed sentence-transformers embeddings of `reference` (made by
/// models/tests/fixtures/make_fixtures.py / make_arch_fixtures.py), run as one batch padded with `pad`.
fn embedding_parity(dir: &std::path::Path, reference: &str, pad: i64) {
    let reference_path = repo_root().join("models/tests/fixtures").join(reference);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference_path).expect("read reference"))
            .expect("json");
    let ckpt = Checkpoint::open(dir).expect("open the model");
    assert!(ckpt.pooling.declared && ckpt.pooling.normalize);
    let model = load(&ckpt);
    let sentences = reference["sentences"].as_array().expect("sentences");
    let rows: Vec<(Vec<i64>, Vec<i64>)> = sentences
        .iter()
        .map(|s| {
            let i = ids(&s["input_ids"]);
            let n = i.len();
            (i, vec![0; n])
        })
        .collect();
    let got = model
        .embed(&EncodedBatch::from_rows(&rows, pad))
        .expect("forward");
    let mut worst = 1f64;
    for (s, emb) in sentences.iter().zip(&got) {
        let c = cosine(emb, &floats(&s["embedding"]));
        worst = worst.min(c);
        assert!(c >= 0.99999, "cosine {c} for {:?}", s["text"]);
    }
    eprintln!(
        "{}: min cosine vs reference = {worst:.8} over {} sentences",
        dir.display(),
        sentences.len()
    );
}

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    let Some(dir) = minilm() else { return };
    embedding_parity(&dir, "minilm_reference.json", 0);
}

#[test]
fn mpnet_embeddings_match_sentence_transformers() {
    let Some(dir) = mpnet() else { return };
    embedding_parity(&dir, "mpnet_reference.json", 1);
}
