//! The runtime runs a low-rank Linear (`W = U V` stored as factors) as two products, and gets what the dense
//! weight gives: a full-rank factorization (`U = W`, `V = I`) and a rank-4 one, within 1e-5 of the dense model.

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
    ckpt.store.check(&ckpt.config).expect("still valid");
    let factored = embed(&ckpt);
    assert_close(&dense, &factored);
}
