//! Parity of the runtime with transformers on the committed tiny checkpoints
//! (models/tests/fixtures/tiny-bert*, references made by models/tests/fixtures/make_fixtures.py).

mod common;

use common::*;
use compressor_models::runtime::{flat, Bert, Cpu};
use compressor_models::{Checkpoint, EncodedBatch, PoolingMode};

const TOL: f32 = 1e-5;

fn reference() -> serde_json::Value {
    let p = repo_root().join("models/tests/fixtures/tiny_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json")
}

fn rows(reference: &serde_json::Value) -> Vec<(Vec<i64>, Vec<i64>)> {
    reference["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|x| (ids(&x["input_ids"]), ids(&x["token_type_ids"])))
        .collect()
}

#[test]
fn hidden_states_poolings_and_pooler_match_transformers_one_at_a_time() {
    let r = reference();
    let ckpt =
        Checkpoint::open(&repo_root().join("models/tests/fixtures/tiny-bert")).expect("open");
    assert!(
        ckpt.pooling.declared && ckpt.pooling.normalize && ckpt.pooling.mode == PoolingMode::Mean
    );
    let model = load(&ckpt);
    let mut cls_model = model.clone();
    cls_model.pooling.mode = PoolingMode::Cls;
    cls_model.pooling.normalize = false;
    for (x, (i, t)) in r["inputs"].as_array().expect("inputs").iter().zip(rows(&r)) {
        let b = single(i, t);
        let hidden = model.encode(&b).expect("encode");
        let d = max_abs_diff(
            &flat(hidden.clone()).expect("host"),
            &floats(&x["last_hidden_state"]),
        );
        assert!(d <= TOL, "last_hidden_state differs by {d}");
        let mean = flat(model.pool(hidden.clone(), &b)).expect("host");
        assert!(max_abs_diff(&mean, &floats(&x["mean_pooled"])) <= TOL);
        let cls = flat(cls_model.pool(hidden.clone(), &b)).expect("host");
        assert!(max_abs_diff(&cls, &floats(&x["cls_pooled"])) <= TOL);
        let pooler = flat(model.pooler_output(hidden).expect("pooler")).expect("host");
        assert!(max_abs_diff(&pooler, &floats(&x["pooler_output"])) <= TOL);
    }
}

#[test]
fn classifier_logits_match_transformers_and_padding_changes_nothing() {
    let r = reference();
    let ckpt =
        Checkpoint::open(&repo_root().join("models/tests/fixtures/tiny-bert-cls")).expect("open");
    assert_eq!(ckpt.store.prefix, "bert.");
    let model = Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
        .expect("load");
    let inputs = r["inputs"].as_array().expect("inputs");
    let rows = rows(&r);
    for (x, (i, t)) in inputs.iter().zip(&rows) {
        let got = model
            .classify(&single(i.clone(), t.clone()))
            .expect("forward");
        let d = max_abs_diff(&got[0], &floats(&x["logits"]));
        assert!(d <= TOL, "logits differ by {d}");
    }
    // One right-padded batch gives what the unpadded single inputs give.
    let batched = model
        .classify(&EncodedBatch::from_rows(&rows, 0))
        .expect("forward");
    for (x, got) in inputs.iter().zip(&batched) {
        assert!(max_abs_diff(got, &floats(&x["logits"])) <= TOL);
    }
}

#[test]
fn padded_batch_embeddings_equal_single_ones() {
    let r = reference();
    let ckpt =
        Checkpoint::open(&repo_root().join("models/tests/fixtures/tiny-bert")).expect("open");
    let model = load(&ckpt);
    let rows = rows(&r);
    let batched = model
        .embed(&EncodedBatch::from_rows(&rows, 0))
        .expect("forward");
    for (row, got) in rows.into_iter().zip(&batched) {
        let alone = model.embed(&single(row.0, row.1)).expect("forward");
        assert!(max_abs_diff(&alone[0], got) <= 1e-6);
    }
}
