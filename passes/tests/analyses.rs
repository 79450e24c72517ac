//! The shared analyses on the tiny BERT fixtures: input covariances are the second moments of every Linear's input
//! over real tokens (padding excluded, whatever the batching), gradients and Fisher diagonals are the mean and mean
//! square of autodiff gradients, and every statistic is computed once per (model, data, settings) and then read
//! from the one on-disk cache.

mod common;

use std::path::Path;

use common::fixture;
use compressor_models::runtime::{flat, Bert, Cpu, CpuAutodiff};
use compressor_models::testing::TinyBert;
use compressor_models::{Checkpoint, EncodedBatch};
use compressor_passes::analyses::cache::Cache;
use compressor_passes::analyses::{Analyses, Want};
use compressor_passes::calibration::{LabelRequest, Records};
use compressor_passes::hessian::{gradient, Sample, Target};
use compressor_passes::SideFiles;

fn records(dir: &Path, data_dir: &Path, ckpt: &Checkpoint) -> Records {
    let texts = [
        "the cat sat on the mat",
        "a good movie",
        "i hate this film",
        "the dog and the cat",
        "a great film, very good",
    ];
    common::calibration_texts(data_dir, &texts)
        .records(&SideFiles::new(dir), &ckpt.config, LabelRequest::None)
        .expect("records")
}

/// The collector on `ckpt`, caching in `cache` (`None`: off).
fn analyses<'a>(ckpt: &'a Checkpoint, cache: Option<&Path>) -> Analyses<'a> {
    Analyses::new(&ckpt.store, &ckpt.config, ckpt.pooling, Cache::new(cache))
}

/// `sum_rows x x^T` in f64 of a `[rows, n]` host matrix, and the sum of its rows into `acc`'s last `n` entries.
fn add_moment(acc: &mut [f64], x: &[f32], n: usize) {
    for row in x.chunks(n) {
        for i in 0..n {
            acc[n * n + i] += f64::from(row[i]);
        }
        for i in 0..n {
            for j in 0..n {
                acc[i * n + j] += f64::from(row[i]) * f64::from(row[j]);
            }
        }
    }
}

#[test]
fn covariance_is_the_second_moment_of_every_linear_input_over_real_tokens() {
    let dir = fixture("tiny-bert");
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = Checkpoint::open(&dir).expect("opens");
    let records = records(&dir, tmp.path(), &ckpt);
    let analyses = analyses(&ckpt, None);
    let want = Want {
        importance: false,
        covariance: true,
    };
    // Padded batches of 2 (the rows differ in length).
    let cov = analyses
        .forward(&records, 2, want, &|_, _| {})
        .expect("forward")
        .covariance
        .expect("covariance");

    // Reference: every record alone (no padding), inputs taken from the layer inputs and the trace.
    let model = Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
        .expect("loads");
    let c = ckpt.config.bert();
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut refs: Vec<[Vec<f64>; 4]> = (0..c.layers.len())
        .map(|_| {
            [
                vec![0.0; h * h + h],
                vec![0.0; h * h + h],
                vec![0.0; h * h + h],
                vec![0.0; i * i + i],
            ]
        })
        .collect();
    let mut tokens = 0usize;
    for r in 0..records.encoded.len() {
        let one = records.batch(&[r]);
        tokens += one.seq_len;
        let inputs = model.layer_inputs(&one).expect("inputs");
        let trace = model.trace(&one).expect("trace");
        for (l, t) in trace.into_iter().enumerate() {
            let host = |x| flat(x).expect("host");
            add_moment(&mut refs[l][0], &host(inputs[l].clone()), h);
            add_moment(&mut refs[l][1], &host(t.context.expect("context")), h);
            add_moment(&mut refs[l][2], &host(t.ffn_input.expect("ffn input")), h);
            add_moment(&mut refs[l][3], &host(t.activation.expect("activation")), i);
        }
    }
    assert_eq!(cov.tokens, tokens as f64);
    for (l, r) in refs.iter().enumerate() {
        let p = format!("encoder.layer.{l}");
        for (k, weight) in [
            "attention.self.key.weight",
            "attention.output.dense.weight",
            "intermediate.dense.weight",
            "output.dense.weight",
        ]
        .iter()
        .enumerate()
        {
            let (n, got) = cov
                .of_linear(c.naming(), &format!("{p}.{weight}"))
                .expect("a moment per Linear");
            assert_eq!(n * n + n, r[k].len(), "{p}.{weight}");
            let mean = cov
                .mean_of_linear(c.naming(), &format!("{p}.{weight}"))
                .expect("a mean per Linear");
            let got: Vec<f64> = got.iter().chain(mean).copied().collect();
            let scale = r[k].iter().fold(0f64, |m, v| m.max(v.abs())) / tokens as f64;
            for (g, e) in got.iter().zip(&r[k]) {
                let e = e / tokens as f64;
                assert!(
                    (g - e).abs() <= 1e-5 * scale.max(1.0),
                    "{p}.{weight}: {g} vs {e}"
                );
            }
        }
        // Query, key and value share one input.
        assert_eq!(
            cov.of_linear(c.naming(), &format!("{p}.attention.self.query.weight")),
            cov.of_linear(c.naming(), &format!("{p}.attention.self.value.weight"))
        );
    }
}

#[test]
fn statistics_are_computed_once_and_then_read_from_the_cache() {
    let dir = fixture("tiny-bert");
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = Checkpoint::open(&dir).expect("opens");
    let records = records(&dir, tmp.path(), &ckpt);
    let cache_dir = tmp.path().join("cache");
    let analyses = analyses(&ckpt, Some(&cache_dir));
    let both = Want {
        importance: true,
        covariance: true,
    };
    let swept = std::cell::Cell::new(0);
    let first = analyses
        .forward(&records, 2, both, &|_, _| swept.set(swept.get() + 1))
        .expect("first");
    assert_eq!(first.cached, Want::default());
    assert_eq!(swept.get(), 3, "5 records in batches of 2");
    let again = analyses
        .forward(&records, 2, both, &|_, _| swept.set(swept.get() + 1))
        .expect("again");
    assert_eq!(again.cached, both);
    assert_eq!(swept.get(), 3, "nothing recomputed");
    assert_eq!(again.importance, first.importance);
    assert_eq!(again.covariance, first.covariance);
    for kind in ["importance", "covariance"] {
        let entries = std::fs::read_dir(cache_dir.join("analyses").join(kind))
            .expect("entries")
            .count();
        assert_eq!(entries, 1, "{kind}");
    }
    // Other settings are another entry.
    let other = analyses
        .forward(&records, 3, both, &|_, _| {})
        .expect("other");
    assert_eq!(other.cached, Want::default());
    // Another model (one weight changed) misses too.
    let mut store = Checkpoint::open(&dir).expect("opens").store;
    let name = "encoder.layer.1.output.dense.bias";
    let (dtype, shape) = store.info(name).expect("bias");
    let mut v = store.get_f32(name, &shape).expect("f32");
    v[0] += 1.0;
    store.set(
        name,
        compressor_models::HostTensor::from_f32(shape, &v, dtype).expect("tensor"),
    );
    let changed = Analyses::new(
        &store,
        &ckpt.config,
        ckpt.pooling,
        Cache::new(Some(&cache_dir)),
    );
    assert_ne!(
        changed.fingerprint().expect("fp"),
        analyses.fingerprint().expect("fp")
    );
    let missed = changed
        .forward(&records, 2, both, &|_, _| {})
        .expect("changed");
    assert_eq!(missed.cached, Want::default());
}

#[test]
fn fisher_diagonal_is_the_mean_squared_gradient() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("model");
    TinyBert {
        hidden_size: 8,
        intermediate_size: 16,
        num_labels: Some(3),
        seed: 5,
        ..Default::default()
    }
    .write(&dir)
    .expect("write");
    let ckpt = Checkpoint::open(&dir).expect("open");
    let samples = [
        Sample {
            batch: EncodedBatch::from_rows(
                &[
                    (vec![2, 9, 17, 3], vec![0; 4]),
                    (vec![2, 40, 3], vec![0; 3]),
                ],
                0,
            ),
            target: Target::Labels(vec![2, 0]),
        },
        Sample {
            batch: EncodedBatch::from_rows(&[(vec![2, 11, 12, 13, 3], vec![0; 5])], 0),
            target: Target::Labels(vec![1]),
        },
    ];
    let weights = vec![
        "encoder.layer.0.attention.self.query.weight".to_string(),
        "encoder.layer.1.output.dense.weight".to_string(),
    ];
    let cache_dir = tmp.path().join("cache");
    let analyses = analyses(&ckpt, Some(&cache_dir));
    let (g, cached) = analyses
        .gradients(&samples, &weights, &|_, _| {})
        .expect("gradients");
    assert!(!cached);
    assert_eq!(g.samples, 2);
    let ad =
        Bert::<CpuAutodiff>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
            .expect("load");
    for w in &weights {
        let (_, shape) = ckpt.store.info(w).expect("weight");
        let (out, inp) = (shape[0], shape[1]);
        // `gradient` is in burn's [in, out] layout; the analyses in HF's [out, in].
        let per: Vec<Vec<f32>> = samples
            .iter()
            .map(|s| gradient(&ad, w, s).expect("gradient"))
            .collect();
        let (mean, fisher) = (g.mean(w).expect("mean"), g.fisher(w).expect("fisher"));
        assert_eq!(mean.len(), out * inp);
        let mut largest = 0f64;
        for o in 0..out {
            for i in 0..inp {
                let vals: Vec<f64> = per.iter().map(|p| f64::from(p[i * out + o])).collect();
                let m = vals.iter().sum::<f64>() / 2.0;
                let f = vals.iter().map(|v| v * v).sum::<f64>() / 2.0;
                assert!((mean[o * inp + i] - m).abs() <= 1e-6, "{w} mean [{o},{i}]");
                assert!(
                    (fisher[o * inp + i] - f).abs() <= 1e-6,
                    "{w} fisher [{o},{i}]"
                );
                largest = largest.max(f);
            }
        }
        assert!(largest > 0.0, "{w}: a gradient reached it");
    }
    let (again, cached) = analyses
        .gradients(&samples, &weights, &|_, _| {})
        .expect("again");
    assert!(cached);
    assert_eq!(again, g);
}
