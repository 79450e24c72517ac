//! The host kernels (`runtime::host`, what `Bert::embed` and `Bert::classify` run on the CPU) against burn's tensor
//! ops (`host_kernels = false`), on the tiny checkpoint with a weight in every storage form (low-rank factors
//! included) and a classification head: every pooling mode with and without normalisation, on a padded batch
//! with token types, within 1e-5, and with activation quantization. Their parity with transformers is models/tests/parity_*.rs; pruned per-layer
//! shapes are compared in passes/tests/prune.rs.

use compressor_models::arch::{Pooling, PoolingMode};
use compressor_models::runtime::{Bert, Cpu, CpuAutodiff};
use compressor_models::testing::TinyBert;
use compressor_models::{Checkpoint, EncodedBatch};

fn batch() -> EncodedBatch {
    let rows: Vec<(Vec<i64>, Vec<i64>)> = [
        (
            vec![2, 17, 40, 33, 9, 3, 5, 44, 3],
            vec![0, 0, 0, 0, 0, 0, 1, 1, 1],
        ),
        (vec![2, 50, 61, 3], vec![0; 4]),
        (
            vec![2, 8, 8, 60, 11, 63, 12, 3],
            vec![0, 0, 0, 1, 1, 1, 1, 1],
        ),
    ]
    .into_iter()
    .collect();
    EncodedBatch::from_rows(&rows, 0)
}

/// A tiny classifier with `labels` labels: hidden 32, 4 heads of 8, FFN 64.
fn classifier(labels: usize) -> TinyBert {
    TinyBert {
        num_labels: Some(labels),
        hidden_size: 32,
        heads: 4,
        intermediate_size: 64,
        ..Default::default()
    }
}

fn load(ckpt: &Checkpoint) -> Bert<Cpu> {
    Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default()).expect("loads")
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn host_kernels_match_the_tensor_ops_on_every_form_pooling_and_head() {
    let dir = tempfile::tempdir().expect("tmp");
    classifier(3).write_every_form(dir.path()).expect("writes");
    let ckpt = Checkpoint::open(dir.path()).expect("opens");
    assert!(
        !ckpt.config.bert().layers[0].low_rank.is_empty(),
        "the fixture has low-rank factors"
    );
    let mut model = load(&ckpt);
    let b = batch();
    for mode in [PoolingMode::Mean, PoolingMode::Cls, PoolingMode::Max] {
        for normalize in [false, true] {
            model.pooling = Pooling {
                mode,
                normalize,
                declared: true,
            };
            model.host_kernels = true;
            let host = model.embed(&b).expect("host");
            model.host_kernels = false;
            let tensor = model.embed(&b).expect("tensor ops");
            let d = max_diff(&host, &tensor);
            assert!(d <= 1e-5, "{mode:?} normalize={normalize}: {d}");
        }
    }
    model.host_kernels = true;
    let host = model.classify(&b).expect("host");
    model.host_kernels = false;
    let tensor = model.classify(&b).expect("tensor ops");
    assert_eq!(host[0].len(), 3);
    let d = max_diff(&host, &tensor);
    assert!(d <= 1e-5, "logits: {d}");
    // The autodiff backend takes the host kernels for host rows too, with the same result.
    let ad =
        Bert::<CpuAutodiff>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
            .expect("loads");
    assert!(max_diff(&ad.classify(&b).expect("autodiff"), &host) <= 1e-6);
}

#[test]
fn a_replaced_weight_is_seen_by_the_host_kernels() {
    let dir = tempfile::tempdir().expect("tmp");
    TinyBert::default().write(dir.path()).expect("writes");
    let ckpt = Checkpoint::open(dir.path()).expect("opens");
    let mut model = load(&ckpt);
    let b = batch();
    let before = model.embed(&b).expect("embeds");
    let lin = model
        .linear_mut("encoder.layer.1.output.dense.weight")
        .expect("linear");
    lin.weight_t = lin.weight_t.clone() * 2.0;
    let after = model.embed(&b).expect("embeds");
    model.host_kernels = false;
    let tensor = model.embed(&b).expect("tensor ops");
    assert!(max_diff(&before, &after) > 1e-3, "the change shows");
    assert!(max_diff(&after, &tensor) <= 1e-5);
}

#[test]
fn bad_batches_are_the_same_errors_on_both_paths() {
    let dir = tempfile::tempdir().expect("tmp");
    TinyBert::default().write(dir.path()).expect("writes");
    let ckpt = Checkpoint::open(dir.path()).expect("opens");
    let mut model = load(&ckpt);
    let empty = EncodedBatch {
        batch_size: 2,
        seq_len: 0,
        input_ids: Vec::new(),
        token_type_ids: Vec::new(),
        attention_mask: Vec::new(),
    };
    for host_kernels in [true, false] {
        model.host_kernels = host_kernels;
        let e = model.embed(&empty).expect_err("no tokens").to_string();
        assert!(
            e.contains("batch of 2 rows has no tokens (sequence length 0)"),
            "{e}"
        );
    }
    model.host_kernels = true;
    let bad = EncodedBatch::from_rows(&[(vec![2, 64, 3], vec![0, 0, 0])], 0);
    let host = model
        .embed(&bad)
        .expect_err("out of vocabulary")
        .to_string();
    model.host_kernels = false;
    let tensor = model
        .embed(&bad)
        .expect_err("out of vocabulary")
        .to_string();
    assert_eq!(host, tensor);
    assert!(
        host.contains("token id 64 is outside the vocabulary (size 64)"),
        "{host}"
    );
    model.host_kernels = true;
    let host = model.classify(&batch()).expect_err("no head").to_string();
    model.host_kernels = false;
    let tensor = model.classify(&batch()).expect_err("no head").to_string();
    assert_eq!(host, tensor);
    assert!(
        host.contains("the checkpoint has no classification head (BertModel)"),
        "{host}"
    );
}

/// Activation quantization: the host kernels observe the same values as the tensor ops (the calibrated scales
/// agree) and fake-quantize at the same points (4-bit codes, scales calibrated on the batch itself), within 1e-5.
/// Only a value within float error of a rounding boundary could round differently on the two paths; 4-bit steps
/// are coarse enough that none of this batch's does.
#[test]
fn host_kernels_quantize_activations_at_the_same_points() {
    use compressor_models::quant::act::{ActivationQuant, Observer, RangeRule};
    use compressor_models::runtime::ActMode;
    let dir = tempfile::tempdir().expect("tmp");
    classifier(2).write(dir.path()).expect("writes");
    let ckpt = Checkpoint::open(dir.path()).expect("opens");
    let mut model = load(&ckpt);
    let b = batch();
    let float = model.classify(&b).expect("float");
    let new_observer = || {
        std::sync::Arc::new(ActMode::Observe(std::sync::Mutex::new(Observer::new(
            RangeRule::Max,
            8,
        ))))
    };
    let observer = new_observer();
    model.act = Some(observer.clone());
    model.classify(&b).expect("observes");
    let finish = |mode: &ActMode| -> ActivationQuant {
        let ActMode::Observe(o) = mode else {
            panic!("an observer");
        };
        o.lock().expect("lock").finish(4, "max".into())
    };
    let table = finish(&observer);
    // The tensor ops observe the same values (one batch: the same maxima).
    let reference = new_observer();
    model.act = Some(reference.clone());
    model.host_kernels = false;
    let hidden = model.encode(&b).expect("observes");
    model.logits(hidden).expect("observes");
    model.host_kernels = true;
    let reference = finish(&reference);
    assert_eq!(
        table.points.keys().collect::<Vec<_>>(),
        reference.points.keys().collect::<Vec<_>>()
    );
    for (name, p) in &table.points {
        let r = &reference.points[name];
        assert_eq!(p.unsigned, r.unsigned, "{name}");
        for (a, b) in p.scales.iter().zip(&r.scales) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1e-3),
                "{name}: {a} vs {b}"
            );
        }
    }
    assert_eq!(table.points.len(), model.activation_points(8).len());
    model.set_activation_quant(table).expect("sets");
    let host = model.classify(&b).expect("host");
    model.host_kernels = false;
    let tensor = model.classify(&b).expect("tensor ops");
    let d = max_diff(&host, &tensor);
    let moved = max_diff(&host, &float);
    assert!(moved > 1e-3, "4-bit activations move the logits: {moved}");
    assert!(
        d <= 1e-5,
        "host vs tensor ops: {d} (float vs quantized: {moved})"
    );
}

/// `trace` and `layer_inputs` on the CPU backend come from the host kernels: every activation they return matches
/// the tensor ops', on a model with low-rank factors.
#[test]
fn traces_and_layer_inputs_match_the_tensor_ops() {
    let dir = tempfile::tempdir().expect("tmp");
    classifier(3).write_every_form(dir.path()).expect("writes");
    let ckpt = Checkpoint::open(dir.path()).expect("opens");
    let mut model = load(&ckpt);
    let b = batch();
    let flat = |t: &compressor_models::runtime::Tensor<Cpu, 3>| {
        vec![compressor_models::runtime::flat(t.clone()).expect("host")]
    };
    let host = model.trace(&b).expect("host");
    let host_inputs = model.layer_inputs(&b).expect("host");
    model.host_kernels = false;
    let tensor = model.trace(&b).expect("tensor ops");
    let tensor_inputs = model.layer_inputs(&b).expect("tensor ops");
    assert_eq!(host.len(), tensor.len());
    for (l, (h, t)) in host.iter().zip(&tensor).enumerate() {
        assert_eq!(h.output.dims(), t.output.dims());
        let pairs = [
            (h.input.as_ref(), t.input.as_ref()),
            (h.context.as_ref(), t.context.as_ref()),
            (h.ffn_input.as_ref(), t.ffn_input.as_ref()),
            (h.activation.as_ref(), t.activation.as_ref()),
            (Some(&h.output), Some(&t.output)),
        ];
        for (k, (x, y)) in pairs.into_iter().enumerate() {
            let (x, y) = (x.expect("kept"), y.expect("kept"));
            assert_eq!(x.dims(), y.dims(), "layer {l} entry {k}");
            let d = max_diff(&flat(x), &flat(y));
            assert!(d <= 1e-5, "layer {l} entry {k}: {d}");
        }
    }
    assert_eq!(host_inputs.len(), ckpt.config.bert().layers.len() + 1);
    for (x, y) in host_inputs.iter().zip(&tensor_inputs) {
        assert!(max_diff(&flat(x), &flat(y)) <= 1e-5);
    }
}
