//! Sensitivity: the power iteration on double-backward Hessian-vector products finds the top eigenvalue of a
//! block's Hessian formed explicitly by finite differences of gradients, for one-matrix blocks and for a whole
//! encoder layer (Q-BERT's block: its six weight matrices at once).

use compressor_models::rng::Rng;
use compressor_models::runtime::{Bert, Cpu, CpuAutodiff};
use compressor_models::testing::TinyBert;
use compressor_models::{Checkpoint, EncodedBatch};
use compressor_passes::hessian::{
    block_weights, gradient, hvp, layer_linear_weights, random_direction, set_weight_t, top_eigen,
    weight_t, Hessian2, Method, PowerIteration, Prepared, Sample, Target,
};

fn batch() -> EncodedBatch {
    EncodedBatch::from_rows(
        &[
            (vec![2, 9, 17, 33, 3], vec![0, 0, 0, 1, 1]),
            (vec![2, 40, 3], vec![0; 3]),
            (vec![2, 11, 12, 3], vec![0; 4]),
        ],
        0,
    )
}

fn tiny(num_labels: Option<usize>, dir: &std::path::Path) -> Checkpoint {
    TinyBert {
        hidden_size: 8,
        intermediate_size: 16,
        num_labels,
        seed: 11,
        ..Default::default()
    }
    .write(dir)
    .expect("write");
    Checkpoint::open(dir).expect("open")
}

/// The full Hessian of the loss w.r.t. the weights `names` (concatenated) by central differences of autodiff
/// gradients, symmetrised.
fn explicit_hessian(
    ckpt: &Checkpoint,
    names: &[String],
    sample: &Sample,
    eps: f32,
) -> (usize, Vec<f64>) {
    let base =
        Bert::<CpuAutodiff>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
            .expect("load");
    let weights: Vec<Vec<f32>> = names
        .iter()
        .map(|name| weight_t(&base, name).expect("weight"))
        .collect();
    let n: usize = weights.iter().map(Vec::len).sum();
    let mut h = vec![0f64; n * n];
    for j in 0..n {
        // Which weight element `j` of the concatenation is.
        let (mut t, mut k) = (0, j);
        while k >= weights[t].len() {
            k -= weights[t].len();
            t += 1;
        }
        let mut cols = [Vec::new(), Vec::new()];
        for (c, sign) in [1f32, -1.0].iter().enumerate() {
            let mut m = base.clone();
            m.exact_second_order = true;
            let mut w = weights[t].clone();
            w[k] += sign * eps;
            set_weight_t(&mut m, &names[t], &w).expect("set");
            cols[c] = names
                .iter()
                .flat_map(|name| gradient(&m, name, sample).expect("gradient"))
                .collect();
        }
        for i in 0..n {
            h[i * n + j] = (f64::from(cols[0][i]) - f64::from(cols[1][i])) / (2.0 * f64::from(eps));
        }
    }
    for i in 0..n {
        for j in 0..i {
            let s = 0.5 * (h[i * n + j] + h[j * n + i]);
            h[i * n + j] = s;
            h[j * n + i] = s;
        }
    }
    (n, h)
}

/// Eigenvalue of largest magnitude of a symmetric matrix by many power iterations in f64 (reference).
fn top_eigenvalue(n: usize, h: &[f64]) -> f64 {
    let mut v: Vec<f64> = random_direction(n, &mut Rng::new(99))
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    let mut lambda = 0.0;
    for _ in 0..5000 {
        let w: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| h[i * n + j] * v[j]).sum())
            .collect();
        lambda = v.iter().zip(&w).map(|(a, b)| a * b).sum();
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        v = w.iter().map(|x| x / norm).collect();
    }
    lambda
}

/// The explicit Hessian is of the whole batch from the embeddings on; the products run on parts of 2 rows
/// (weighted sum) from the block's layer on, so this also checks the split and the layer start.
fn check_block(ckpt: &Checkpoint, names: &[String], sample: &Sample) {
    let (n, h) = explicit_hessian(ckpt, names, sample, 1e-2);
    let exact = top_eigenvalue(n, &h);
    let model =
        Bert::<Hessian2>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
            .expect("load");
    assert_eq!(block_weights(&model, names).expect("weights").len(), n);
    let name = names.join(" + ");
    let plain = Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
        .expect("load");
    let prepared = Prepared::new(&plain, sample, 2).expect("prepare");
    for method in [Method::Power, Method::Lanczos] {
        let (e, _) = top_eigen(
            random_direction(n, &mut Rng::new(5)),
            PowerIteration {
                method,
                max_iterations: 100,
                tolerance: 1e-5,
            },
            |v| hvp(&model, names, &prepared, v),
        )
        .expect("eigenvalue iteration");
        assert!(
            (e.value - exact).abs() <= 0.01 * exact.abs(),
            "{name}: {method:?} {} vs explicit Hessian {exact}",
            e.value
        );
    }
    assert!(
        exact.abs() > 1e-6,
        "{name}: a degenerate Hessian proves nothing ({exact})"
    );
}

#[test]
fn power_iteration_matches_the_explicit_hessian_for_cross_entropy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tiny(Some(3), tmp.path());
    let sample = Sample {
        batch: batch(),
        target: Target::Labels(vec![0, 2, 1]),
    };
    check_block(
        &ckpt,
        &one("encoder.layer.0.attention.self.query.weight"),
        &sample,
    );
    check_block(
        &ckpt,
        &one("encoder.layer.1.intermediate.dense.weight"),
        &sample,
    );
}

fn one(name: &str) -> Vec<String> {
    vec![name.to_string()]
}

/// The six weight matrices of encoder layer `l` (512 weights in the tiny model).
fn six(ckpt: &Checkpoint, l: usize) -> Vec<String> {
    let names = layer_linear_weights(&ckpt.config, l);
    assert_eq!(names.len(), 6, "{names:?}");
    names
}

#[test]
fn power_iteration_matches_the_explicit_hessian_of_a_whole_layer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tiny(Some(3), tmp.path());
    let sample = Sample {
        batch: batch(),
        target: Target::Labels(vec![0, 2, 1]),
    };
    check_block(&ckpt, &six(&ckpt, 0), &sample);
    let emb = tmp.path().join("embedding-model");
    std::fs::create_dir_all(&emb).expect("mkdir");
    let ckpt = tiny(None, &emb);
    let cpu = Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
        .expect("load");
    let sample = Sample::self_distillation(&cpu, batch()).expect("targets");
    check_block(&ckpt, &six(&ckpt, 1), &sample);
}

#[test]
fn power_iteration_matches_the_explicit_hessian_for_self_distillation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tiny(None, tmp.path());
    let cpu = Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
        .expect("load");
    let sample = Sample::self_distillation(&cpu, batch()).expect("targets");
    check_block(&ckpt, &one("encoder.layer.1.output.dense.weight"), &sample);
}
