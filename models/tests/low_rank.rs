//! The runtime runs a low-rank Linear (`W = U V` stored as factors) as two products, and gets what the dense
//! weight gives: a full-rank factorization (`U = W`, `V = I`) and a rank-4 one, within 1e-5 of the dense model.
//! The architecture lists every low-rank Linear with its rank (`low_rank` of its layer in the `compressor`
//! extension): the store must agree, and parameters count the factors.

use std::path::Path;

use compressor_models::runtime::{Bert, Cpu};
use compressor_models::testing::SplitMix64;
use compressor_models::{Checkpoint, DType, EncodedBatch, Factor, HostTensor, Stored};

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
}

fn batch() -> EncodedBatch {
    let rows: Vec<(Vec<i64>, Vec<i64>)> = [vec![2, 17, 40, 33, 9, 3], vec![2, 50, 61, 3]]
        .into_iter()
        .map(|ids| {
            let t = vec![0; ids.len()];
            (ids, t)
        })
        .collect();
    EncodedBatch::from_rows(&rows, 0)
}

fn embed(ckpt: &Checkpoint) -> Vec<f32> {
    let model = Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
        .expect("loads");
    model.embed(&batch()).expect("embeds").concat()
}

fn matrix(rows: usize, cols: usize, values: Vec<f32>) -> Factor {
    Factor::Dense(HostTensor::from_f32(vec![rows, cols], &values, DType::F32).expect("tensor"))
}

#[track_caller]
fn assert_close(a: &[f32], b: &[f32]) {
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(diff <= 1e-5, "{diff}");
}

const W: &str = "encoder.layer.0.attention.self.query.weight";

#[test]
fn a_full_rank_factorization_reproduces_the_dense_outputs() {
    let mut ckpt = Checkpoint::open(&fixture()).expect("opens");
    let dense = embed(&ckpt);
    let w = ckpt.store.get_f32(W, &[32, 32]).expect("weight");
    let eye: Vec<f32> = (0..32 * 32)
        .map(|i| if i / 32 == i % 32 { 1.0 } else { 0.0 })
        .collect();
    let lr = Stored::low_rank(matrix(32, 32, w), matrix(32, 32, eye)).expect("factors");
    ckpt.store.set_stored(W, lr);
    let model = Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
        .expect("loads");
    assert!(model.linear(W).expect("query").factors.is_some());
    let factored = embed(&ckpt);
    assert_close(&dense, &factored);
}

#[test]
fn a_rank_4_weight_runs_factored_as_it_runs_dense() {
    let mut rng = SplitMix64::new(3);
    let u: Vec<f32> = (0..32 * 4).map(|_| 0.3 * rng.next_f32()).collect();
    let v: Vec<f32> = (0..4 * 32).map(|_| 0.3 * rng.next_f32()).collect();
    let mut product = vec![0f32; 32 * 32];
    for o in 0..32 {
        for i in 0..32 {
            product[o * 32 + i] = (0..4)
                .map(|k| f64::from(u[o * 4 + k]) * f64::from(v[k * 32 + i]))
                .sum::<f64>() as f32;
        }
    }
    let mut ckpt = Checkpoint::open(&fixture()).expect("opens");
    ckpt.store.set(
        W,
        HostTensor::from_f32(vec![32, 32], &product, DType::F32).expect("tensor"),
    );
    let dense = embed(&ckpt);
    ckpt.store.set_stored(
        W,
        Stored::low_rank(matrix(32, 4, u), matrix(4, 32, v)).expect("factors"),
    );
    let err = ckpt
        .store
        .check(&ckpt.config)
        .expect_err("the config does not say it is factored")
        .to_string();
    assert!(
        err.contains(&format!("tensor `{W}` is stored low-rank with rank 4, but the config does not list it (`low_rank` of its layer in the `compressor` extension of config.json)")),
        "{err}"
    );
    let params_dense = ckpt.config.parameter_count(|_| true);
    let config = with_rank(&ckpt.config, 4);
    ckpt.store.check(&config).expect("agrees");
    assert_eq!(
        config.parameter_count(|_| true),
        params_dense - 32 * 32 + 4 * (32 + 32)
    );
    assert!(!config.bert().is_uniform());
    let err = ckpt
        .store
        .check(&with_rank(&ckpt.config, 5))
        .expect_err("another rank")
        .to_string();
    assert!(
        err.contains(&format!(
            "tensor `{W}` is stored low-rank with rank 4, but the config says rank 5"
        )),
        "{err}"
    );
    ckpt.config = config;
    let factored = embed(&ckpt);
    assert_close(&dense, &factored);
    // Multiplied out, the weight is one matrix again and the config says so.
    let without = ckpt.config.without_low_rank().expect("dense config");
    assert!(without.bert().is_uniform());
    let err = ckpt.store.check(&without).expect_err("still factored");
    assert!(err.to_string().contains("does not list it"), "{err}");
    ckpt.store.densify_all().expect("densifies");
    ckpt.store.check(&without).expect("dense agrees");
    let err = ckpt
        .store
        .check(&ckpt.config)
        .expect_err("config says factored");
    assert!(
        err.to_string()
            .contains("is stored as one matrix, but the config says low-rank with rank 4"),
        "{err}"
    );
}

/// `config` with layer 0's query stored low-rank of `rank`.
fn with_rank(
    config: &compressor_models::ModelConfig,
    rank: usize,
) -> compressor_models::ModelConfig {
    let mut out = config.clone();
    let mut layers = out.bert().layers.clone();
    layers[0]
        .low_rank
        .insert("attention.self.query".to_string(), rank);
    out.set_layers(layers).expect("valid extension");
    out
}

#[test]
fn a_rank_the_weight_cannot_have_or_an_unknown_linear_is_a_config_error() {
    let config = Checkpoint::open(&fixture()).expect("opens").config;
    let err = |module: &str, rank: usize| {
        let mut c = config.clone();
        let mut layers = c.bert().layers.clone();
        layers[1].low_rank.insert(module.to_string(), rank);
        let e = c.set_layers(layers).expect_err("invalid").to_string();
        let path = fixture().join("config.json");
        e.replace(&path.display().to_string(), "config.json")
    };
    assert_eq!(
        err("attention.self.query", 33),
        "`config.json`: key `compressor.layers[1].low_rank.attention.self.query` is rank 33, expected 1..=32 for a [32, 32] weight"
    );
    assert_eq!(
        err("intermediate.dense", 0),
        "`config.json`: key `compressor.layers[1].low_rank.intermediate.dense` is rank 0, expected 1..=32 for a [64, 32] weight"
    );
    assert!(err("attention.query", 4).contains(
        "key `compressor.layers[1].low_rank.attention.query` is not a Linear of the layer (known: attention.self.query,"
    ));
}
