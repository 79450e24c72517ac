//! The runtime works under autodiff: a gradient taken through the whole model matches finite differences.

mod common;

use compressor_models::runtime::{flat, Bert, Cpu, CpuAutodiff, Tensor, TensorData};
use compressor_models::testing::TinyBert;
use compressor_models::{Checkpoint, DType, EncodedBatch, HostTensor};

const W: &str = "encoder.layer.0.attention.self.query.weight";

fn batch() -> EncodedBatch {
    EncodedBatch::from_rows(
        &[
            (vec![2, 9, 17, 33, 3], vec![0, 0, 0, 1, 1]),
            (vec![2, 40, 3], vec![0; 3]),
        ],
        0,
    )
}

/// loss = sum(logits * c) for fixed c, on the f32 inference backend.
fn loss_at(ckpt: &Checkpoint, weights: &[f32]) -> f64 {
    let mut store = compressor_models::TensorStore::open(&ckpt.dir, &ckpt.config).expect("open");
    let shape = store.info(W).expect("info").1;
    store.set(
        W,
        HostTensor::from_f32(shape, weights, DType::F32).expect("tensor"),
    );
    let model =
        Bert::<Cpu>::load(&store, &ckpt.config, ckpt.pooling, &Default::default()).expect("load");
    let logits = model.classify(&batch()).expect("forward");
    logits
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, v)| *v as f64 * (1.0 + i as f64 * 0.5))
        .sum()
}

#[test]
fn gradient_through_the_model_matches_finite_differences() {
    let tmp = tempfile::tempdir().expect("tempdir");
    TinyBert {
        num_labels: Some(3),
        seed: 7,
        ..Default::default()
    }
    .write(tmp.path())
    .expect("write");
    let ckpt = Checkpoint::open(tmp.path()).expect("open");
    let device = Default::default();
    let model = Bert::<CpuAutodiff>::load_with_grad(
        &ckpt.store,
        &ckpt.config,
        ckpt.pooling,
        &device,
        &|n| n == W,
    )
    .expect("load");
    let logits = model
        .logits(model.encode(&batch()).expect("encode"))
        .expect("logits");
    let weights: Vec<f32> = (0..6).map(|i| 1.0 + i as f32 * 0.5).collect();
    let c =
        Tensor::<CpuAutodiff, 1>::from_data(TensorData::new(weights, [6]), &device).reshape([2, 3]);
    let loss = (logits * c).sum();
    let grads = loss.backward();
    let lin = model.linear(W).expect("linear");
    let grad_t = flat(lin.weight_t.grad(&grads).expect("gradient tracked")).expect("host"); // [in, out]
    let [in_f, out_f] = lin.weight_t.dims();

    let w0 = ckpt.store.get_f32(W, &[out_f, in_f]).expect("weights");
    let eps = 1e-2f32;
    let mut checked = 0;
    for &(o, i) in &[(0usize, 0usize), (3, 7), (15, 2), (8, 15)] {
        let mut plus = w0.clone();
        plus[o * in_f + i] += eps;
        let mut minus = w0.clone();
        minus[o * in_f + i] -= eps;
        let fd = (loss_at(&ckpt, &plus) - loss_at(&ckpt, &minus)) / (2.0 * eps as f64);
        let ad = grad_t[i * out_f + o] as f64;
        assert!(
            (fd - ad).abs() <= 2e-3 + 2e-2 * fd.abs(),
            "d loss / d W[{o},{i}]: autodiff {ad}, finite difference {fd}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}
