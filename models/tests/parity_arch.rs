//! Parity of the runtime with transformers on the committed tiny RoBERTa, XLM-RoBERTa, DistilBERT and MPNet
//! checkpoints (models/tests/fixtures/tiny-*, references in arch_reference.json made by
//! models/tests/fixtures/make_arch_fixtures.py): hidden states, poolings, the pooler and logits, one input at a time
//! and as one padded batch (RoBERTa's and MPNet's position ids depend on the padding), on both forward paths (host
//! kernels and burn's tensor ops).

mod common;

use common::*;
use compressor_models::runtime::{flat, Bert, Cpu};
use compressor_models::{Checkpoint, EncodedBatch, Family, PoolingMode};

const TOL: f32 = 1e-5;

fn reference() -> serde_json::Value {
    let p = repo_root().join("models/tests/fixtures/arch_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json")
}

fn open(name: &str) -> Checkpoint {
    Checkpoint::open(&repo_root().join("models/tests/fixtures").join(name)).expect("open")
}

/// The model on the host kernels and the same model on burn's tensor ops.
fn both(ckpt: &Checkpoint) -> [Bert<Cpu>; 2] {
    let host = load(ckpt);
    let mut tensors = host.clone();
    tensors.host_kernels = false;
    [host, tensors]
}

/// One right-padded batch of the reference's inputs, padded with `pad`.
fn padded(x: &serde_json::Value, pad: i64) -> EncodedBatch {
    let rows: Vec<(Vec<i64>, Vec<i64>)> = x["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| {
            let ids = ids(&i["input_ids"]);
            let n = ids.len();
            (ids, vec![0; n])
        })
        .collect();
    let b = EncodedBatch::from_rows(&rows, pad);
    let want: Vec<i64> = x["batch"]["input_ids"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(ids)
        .collect();
    assert_eq!(
        b.input_ids, want,
        "the reference batch is padded the same way"
    );
    b
}

fn check_model(name: &str, family: Family) {
    let r = reference();
    let x = &r[name];
    let ckpt = open(name);
    let c = ckpt.config.bert();
    assert_eq!(c.family, family);
    let classifier = name.ends_with("-cls");
    let pad = x["config"]["pad_token_id"].as_i64().expect("pad id");
    for model in both(&ckpt) {
        let mut cls_model = model.clone();
        cls_model.pooling.mode = PoolingMode::Cls;
        cls_model.pooling.normalize = false;
        for input in x["inputs"].as_array().expect("inputs") {
            let ids = ids(&input["input_ids"]);
            let n = ids.len();
            let b = EncodedBatch::from_rows(&[(ids, vec![0; n])], pad);
            let hidden = model.encode(&b).expect("encode");
            let d = max_abs_diff(
                &flat(hidden.clone()).expect("host"),
                &floats(&input["last_hidden_state"]),
            );
            assert!(d <= TOL, "{name}: last_hidden_state differs by {d}");
            let cls = flat(cls_model.pool(hidden.clone(), &b)).expect("host");
            assert!(max_abs_diff(&cls, &floats(&input["cls_pooled"])) <= TOL);
            if !classifier {
                let mut mean = model.clone();
                mean.pooling.mode = PoolingMode::Mean;
                mean.pooling.normalize = true;
                let got = mean.embed(&b).expect("embed");
                let d = max_abs_diff(&got[0], &floats(&input["mean_pooled"]));
                assert!(d <= TOL, "{name}: mean pooling differs by {d}");
            }
            if let Some(p) = input.get("pooler_output") {
                let got = flat(model.pooler_output(hidden).expect("pooler")).expect("host");
                assert!(max_abs_diff(&got, &floats(p)) <= TOL, "{name}: pooler");
            }
            if let Some(l) = input.get("logits") {
                let got = model.classify(&b).expect("classify");
                let d = max_abs_diff(&got[0], &floats(l));
                assert!(d <= TOL, "{name}: logits differ by {d}");
            }
        }
        // One right-padded batch gives every row what it gives alone (real tokens only are stored).
        let b = padded(x, pad);
        let hidden = flat(model.encode(&b).expect("encode")).expect("host");
        let h = c.hidden_size;
        let t = b.seq_len;
        for (row, want) in x["batch"]["last_hidden_state"]
            .as_array()
            .expect("rows")
            .iter()
            .enumerate()
        {
            let want = floats(want);
            let got = &hidden[row * t * h..row * t * h + want.len()];
            let d = max_abs_diff(got, &want);
            assert!(d <= TOL, "{name}: padded row {row} differs by {d}");
        }
        if let Some(logits) = x["batch"].get("logits") {
            let got = model.classify(&b).expect("classify");
            for (g, w) in got.iter().zip(logits.as_array().expect("rows")) {
                assert!(max_abs_diff(g, &floats(w)) <= TOL, "{name}: batch logits");
            }
        }
    }
}

#[test]
fn roberta_matches_transformers() {
    check_model("tiny-roberta", Family::Roberta);
    check_model("tiny-roberta-cls", Family::Roberta);
}

#[test]
fn xlm_roberta_matches_transformers() {
    check_model("tiny-xlm-roberta", Family::XlmRoberta);
}

#[test]
fn distilbert_matches_transformers() {
    check_model("tiny-distilbert", Family::DistilBert);
    check_model("tiny-distilbert-cls", Family::DistilBert);
}

#[test]
fn mpnet_matches_transformers() {
    check_model("tiny-mpnet", Family::Mpnet);
    check_model("tiny-mpnet-cls", Family::Mpnet);
}

#[test]
fn positions_after_the_padding_bound_the_sequence_length() {
    // RoBERTa numbers positions from pad + 1 = 2: a table of 52 positions holds sequences of 50 tokens.
    let ckpt = open("tiny-roberta");
    let c = ckpt.config.bert();
    assert_eq!(
        (c.max_position_embeddings, c.max_sequence_length()),
        (52, 50)
    );
    let model = load(&ckpt);
    let long = EncodedBatch::from_rows(&[(vec![5; 51], vec![0; 51])], 1);
    let err = model.embed(&long).expect_err("too long");
    assert_eq!(
        err.to_string(),
        "sequence length 51 exceeds the 50 positions of max_position_embeddings 52 (positions start after the padding id); truncate the input"
    );
}
