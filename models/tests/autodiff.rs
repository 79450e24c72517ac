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

/// The model on the autodiff backend, tracking the gradients of the weights `wanted` names.
fn load_with_grad(ckpt: &Checkpoint, wanted: &dyn Fn(&str) -> bool) -> Bert<CpuAutodiff> {
    Bert::<CpuAutodiff>::load_with_grad(
        &ckpt.store,
        &ckpt.config,
        ckpt.pooling,
        &Default::default(),
        wanted,
    )
    .expect("load")
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
    let model = load_with_grad(&ckpt, &|n| n == W);
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

/// `sum_k hidden[k] * (1 + (k % 7) / 4)` over the encoder's output, a loss whose gradient reaches every weight
/// (unlike the squared norm of a normalized embedding, which is constant).
fn weighted_sum(values: &[f32]) -> f64 {
    values
        .iter()
        .enumerate()
        .map(|(k, v)| f64::from(*v) * (1.0 + (k % 7) as f64 / 4.0))
        .sum()
}

fn encoder_loss_at(dir: &std::path::Path, weight: &str, values: &[f32]) -> f64 {
    let ckpt = Checkpoint::open(dir).expect("open");
    let mut store = ckpt.store;
    let shape = store.info(weight).expect("info").1;
    store.set(
        weight,
        HostTensor::from_f32(shape, values, DType::F32).expect("tensor"),
    );
    let model =
        Bert::<Cpu>::load(&store, &ckpt.config, ckpt.pooling, &Default::default()).expect("load");
    weighted_sum(&flat(model.encode(&batch()).expect("forward")).expect("host"))
}

#[test]
fn gradients_on_pruned_shapes_match_finite_differences() {
    // Pruned by the `prune` pass: per-layer heads and FFN widths (layer 0 keeps one head), and hidden dimensions
    // (27 of 32 kept, layer 0 keeps heads 0, 2, 3).
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let weights = [
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.0.attention.self.value.weight",
        "encoder.layer.0.attention.output.dense.weight",
        "encoder.layer.0.output.dense.weight",
    ];
    let mut checked = 0;
    for name in ["tiny-bert-perlayer", "tiny-bert-hidden"] {
        let dir = fixtures.join(name);
        let ckpt = Checkpoint::open(&dir).expect("open");
        assert!(!ckpt.config.bert().is_uniform(), "{name} is pruned");
        let device = Default::default();
        let model = load_with_grad(&ckpt, &|n| weights.contains(&n));
        let hidden = model.encode(&batch()).expect("encode");
        let dims = hidden.dims();
        let n: usize = dims.iter().product();
        let c: Vec<f32> = (0..n).map(|k| 1.0 + (k % 7) as f32 / 4.0).collect();
        let c = Tensor::<CpuAutodiff, 1>::from_data(TensorData::new(c, [n]), &device).reshape(dims);
        let grads = (hidden * c).sum().backward();
        for w in weights {
            let lin = model.linear(w).expect("linear");
            let grad_t = flat(lin.weight_t.grad(&grads).expect("tracked")).expect("host"); // [in, out]
            let [in_f, out_f] = lin.weight_t.dims();
            let w0 = ckpt.store.get_f32(w, &[out_f, in_f]).expect("weights");
            for (o, i) in [(0, 0), (out_f / 2, in_f - 1), (out_f - 1, in_f / 3)] {
                let eps = 1e-2f32;
                let at = |d: f32| {
                    let mut v = w0.clone();
                    v[o * in_f + i] += d;
                    encoder_loss_at(&dir, w, &v)
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * f64::from(eps));
                let ad = f64::from(grad_t[i * out_f + o]);
                assert!(
                    (fd - ad).abs() <= 2e-3 + 2e-2 * fd.abs(),
                    "{name}: d loss / d {w}[{o},{i}]: autodiff {ad}, finite difference {fd}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 24);
}
