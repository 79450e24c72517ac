//! `hessian-mp` on the tiny BERT fixtures (hidden 32, FFN 64, 2 layers): the loss follows the head and the data,
//! the budget holds, the allocation beats uniform widths on its own objective, the fixed schemes mirror each other,
//! results are deterministic and cached, and bad settings are plan-time errors.

mod common;

use std::path::Path;

use common::{fixture, labelled_calibration};
use compressor_models::{Checkpoint, Encoding, HostTensor, QuantTensor, Strategy};
use compressor_passes::hessian_mp::HessianMp;
use compressor_passes::{
    CalibrationSpec, ModelInfo, NoProgress, Pass, PassContext, PassPlan, PassReport, PassSpec,
    PlanContext, SideFiles,
};
use serde_json::{json, Value};

fn config(extra: Value) -> Value {
    let mut c = json!({
        "bits": [2, 4, 8],
        "average-bits": 4.0,
        "group-size": 16,
        "embeddings": { "word": 8, "position": 8, "group-size": 16 },
        "sensitivity": { "runs": 2, "max-iterations": 8, "tolerance": 1e-2, "batch-size": 4 },
    });
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

fn plan_with(
    dir: &Path,
    config: Value,
    calibration: Option<&CalibrationSpec>,
) -> compressor_passes::Result<PassPlan> {
    let ckpt = Checkpoint::open(dir).expect("opens");
    let info = ModelInfo::from_store(&ckpt.config, &ckpt.store);
    let spec = PassSpec::from_config("hessian-mp", config)
        .expect("valid config")
        .expect("known kind");
    spec.build().plan(&PlanContext {
        config: &ckpt.config,
        info: &info,
        store: &ckpt.store,
        model_dir: dir,
        calibration,
        progress: &compressor_passes::NoProgress,
    })
}

fn run_with(
    dir: &Path,
    config: Value,
    calibration: &CalibrationSpec,
) -> compressor_passes::Result<(Checkpoint, PassReport)> {
    run_cached(dir, config, calibration, None)
}

fn run_cached(
    dir: &Path,
    config: Value,
    calibration: &CalibrationSpec,
    cache: Option<&Path>,
) -> compressor_passes::Result<(Checkpoint, PassReport)> {
    let plan = plan_with(dir, config.clone(), Some(calibration))?;
    let mut ckpt = Checkpoint::open(dir).expect("opens");
    let pass = HessianMp::new(serde_json::from_value(config).expect("valid config"))
        .with_cache_dir(cache.map(Path::to_path_buf));
    let report = pass.run(&mut PassContext {
        config: &mut ckpt.config,
        store: &mut ckpt.store,
        files: &mut SideFiles::new(dir),
        calibration: Some(calibration),
        plan: &plan,
        progress: &NoProgress,
        seed: 0,
    })?;
    ckpt.store
        .check(&ckpt.config)
        .expect("valid after the pass");
    Ok((ckpt, report))
}

fn blocks(report: &PassReport) -> &serde_json::Map<String, Value> {
    report.metrics["per_block"].as_object().expect("per_block")
}

#[test]
fn classifier_allocation_meets_the_budget_and_beats_uniform_bits_on_its_objective() {
    let tmp = tempfile::tempdir().expect("tmp");
    let calib = labelled_calibration(tmp.path(), Some(0));
    let dir = fixture("tiny-bert-cls");
    // Q-BERT's blocks (whole layers, the default) and one block per matrix.
    for (block, count) in [("layer", 2), ("matrix", 12)] {
        allocation_meets_the_budget(&dir, &calib, block, count);
    }
}

fn allocation_meets_the_budget(dir: &Path, calib: &CalibrationSpec, block: &str, count: usize) {
    let original = Checkpoint::open(dir).expect("opens");
    let (ckpt, report) = run_with(dir, config(json!({ "block": block })), calib).expect("runs");
    assert_eq!(report.decisions["loss"], "cross-entropy");
    assert_eq!(report.decisions["block"], block);
    let per_block = blocks(&report);
    assert_eq!(
        per_block.len(),
        count,
        "{block} blocks of 2 layers x 6 Linear weights"
    );
    assert_eq!(
        report.changed.len(),
        14,
        "block matrices + word and position tables"
    );
    let (mut ours, mut uniform, mut bits, mut numel, mut matrices) = (0.0, 0.0, 0.0, 0.0, 0);
    for (name, b) in per_block {
        assert_eq!(b["eigenvalues"].as_array().expect("samples").len(), 2);
        let omega = b["omega"].as_f64().expect("omega");
        assert!(omega.is_finite() && omega > 0.0, "{name}: omega {omega}");
        let tensors = b["tensors"].as_object().expect("tensors");
        assert_eq!(
            tensors.len(),
            if block == "layer" { 6 } else { 1 },
            "{name}"
        );
        let mut block_se = 0.0;
        for (tensor, t) in tensors {
            assert!(
                tensor.starts_with(name.as_str()),
                "{tensor} in block {name}"
            );
            let q = ckpt.store.get_quant(tensor).expect("quantized");
            // Every matrix of a block is stored at the block's width.
            assert_eq!(
                u64::from(q.encoding.bits),
                b["bits"].as_u64().expect("bits")
            );
            assert_eq!(t["bits"], b["bits"]);
            assert_eq!(q.encoding.strategy, Strategy::Group { size: 16 });
            let w = original
                .store
                .get_f32(tensor, &[q.rows, q.cols])
                .expect("reads");
            let se = q.error(&w).squared_error;
            assert!((se - t["squared_error"].as_f64().expect("se")).abs() <= 1e-9 * se.max(1.0));
            let four = QuantTensor::quantize(
                &w,
                q.rows,
                q.cols,
                Encoding::symmetric(4, q.encoding.strategy),
            )
            .expect("4 bits");
            block_se += se;
            ours += omega * se;
            uniform += omega * four.error(&w).squared_error;
            bits += f64::from(q.encoding.bits) * w.len() as f64;
            numel += w.len() as f64;
            matrices += 1;
        }
        assert!(
            (block_se - b["squared_error"].as_f64().expect("se")).abs() <= 1e-9 * block_se.max(1.0)
        );
    }
    assert_eq!(matrices, 12);
    assert!(bits / numel <= 4.0, "average {} bits", bits / numel);
    assert!((report.metrics["average_bits"].as_f64().expect("avg") - bits / numel).abs() < 1e-12);
    // Uniform 4 bits meets the same budget, so the optimum cannot be worse on the objective.
    assert!(
        ours <= uniform * (1.0 + 1e-9),
        "{ours} vs uniform {uniform}"
    );
    for table in [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
    ] {
        assert_eq!(ckpt.store.get_quant(table).expect("table").encoding.bits, 8);
    }
}

#[test]
fn top_k_and_reversed_mirror_each_other_and_runs_are_deterministic() {
    let tmp = tempfile::tempdir().expect("tmp");
    let calib = labelled_calibration(tmp.path(), Some(0));
    let dir = fixture("tiny-bert-cls");
    let extra = |allocation: &str| {
        config(
            json!({ "bits": [2, 4], "average-bits": 3.0, "allocation": allocation, "block": "matrix" }),
        )
    };
    let cache = tmp.path().join("cache");
    let (_, top) = run_with(&dir, extra("top-k"), &calib).expect("runs");
    let (_, again) = run_with(&dir, extra("top-k"), &calib).expect("runs");
    assert_eq!(top.decisions, again.decisions);
    assert_eq!(top.metrics["per_block"], again.metrics["per_block"]);
    // The reversed assignment computes the statistics into the cache; a second run reads them back.
    // Checkpoints such as all-MiniLM-L6-v2 carry an int64 `embeddings.position_ids` buffer; the cache key covers it.
    let with_buffer = tmp.path().join("with-buffer");
    std::fs::create_dir_all(&with_buffer).expect("mkdir");
    for entry in std::fs::read_dir(&dir).expect("fixture") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, with_buffer.join(path.file_name().expect("name"))).expect("copy");
    }
    let ckpt = Checkpoint::open(&with_buffer).expect("opens");
    let mut tensors = ckpt.store.disk_tensors(&ckpt.config).expect("tensors");
    tensors.push((
        ckpt.store
            .disk_name(&ckpt.config, "embeddings.position_ids"),
        HostTensor::from_i64(vec![1, 64], &(0..64).collect::<Vec<i64>>()).expect("buffer"),
    ));
    compressor_models::st::write(
        &with_buffer.join("model.safetensors"),
        &tensors,
        &Default::default(),
    )
    .expect("write");
    let (_, rev) = run_cached(&with_buffer, extra("reversed"), &calib, Some(&cache)).expect("runs");
    let (_, rev2) =
        run_cached(&with_buffer, extra("reversed"), &calib, Some(&cache)).expect("runs");
    assert_eq!(rev.metrics["sensitivity_cached"], false);
    assert_eq!(rev2.metrics["sensitivity_cached"], true);
    assert_eq!(rev.metrics["per_block"], rev2.metrics["per_block"]);
    assert_eq!(
        rev.metrics["per_block"].as_object().map(|m| m.len()),
        Some(12)
    );
    assert_eq!(
        top.metrics["per_block"]
            .as_object()
            .expect("blocks")
            .values()
            .map(|b| &b["omega"])
            .collect::<Vec<_>>(),
        rev.metrics["per_block"]
            .as_object()
            .expect("blocks")
            .values()
            .map(|b| &b["omega"])
            .collect::<Vec<_>>()
    );
    let omega = |r: &PassReport, high: bool| -> Vec<f64> {
        blocks(r)
            .values()
            .filter(|b| (b["bits"] == 4) == high)
            .map(|b| b["omega"].as_f64().expect("omega"))
            .collect()
    };
    let (hi, lo) = (omega(&top, true), omega(&top, false));
    assert!(!hi.is_empty() && !lo.is_empty(), "both widths are used");
    let min_hi = hi.iter().copied().fold(f64::INFINITY, f64::min);
    let max_lo = lo.iter().copied().fold(0.0, f64::max);
    assert!(min_hi >= max_lo, "top-k: high {hi:?} low {lo:?}");
    let (rhi, rlo) = (omega(&rev, true), omega(&rev, false));
    let max_rhi = rhi.iter().copied().fold(0.0, f64::max);
    let min_rlo = rlo.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(max_rhi <= min_rlo, "reversed: high {rhi:?} low {rlo:?}");
    for r in [&top, &rev] {
        assert!(r.metrics["average_bits"].as_f64().expect("avg") <= 3.0);
    }
}

#[test]
fn an_embedding_model_uses_self_distillation_with_a_positive_semidefinite_hessian() {
    let tmp = tempfile::tempdir().expect("tmp");
    let calib = labelled_calibration(tmp.path(), Some(0));
    let (_, report) = run_with(
        &fixture("tiny-bert"),
        config(json!({ "bits": [3, 4] })),
        &calib,
    )
    .expect("runs");
    assert_eq!(report.decisions["loss"], "self-distillation");
    for (name, b) in blocks(&report) {
        for l in b["eigenvalues"].as_array().expect("samples") {
            let l = l.as_f64().expect("number");
            // The Gauss-Newton matrix J^T J has no negative eigenvalue.
            assert!(l >= -1e-6, "{name}: eigenvalue {l}");
        }
        assert!(b["omega"].as_f64().expect("omega") > 0.0, "{name}");
    }
}

fn plan_error(dir: &Path, extra: Value, calib: Option<&CalibrationSpec>) -> String {
    plan_with(dir, config(extra), calib)
        .expect_err("must fail")
        .to_string()
}

#[test]
fn bad_settings_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let calib = labelled_calibration(tmp.path(), Some(0));
    let cls = fixture("tiny-bert-cls");
    let no_calib = plan_error(&cls, json!({}), None);
    assert!(
        no_calib.starts_with("`sensitivity` needs calibration data"),
        "{no_calib}"
    );
    assert_eq!(
        plan_error(&cls, json!({ "bits": [2, 9] }), Some(&calib)),
        "`bits`: 9 bits is outside the supported range 2 to 8"
    );
    let budget = plan_error(
        &cls,
        json!({ "bits": [2, 4], "average-bits": 1.5 }),
        Some(&calib),
    );
    // 12 blocks: 8 of 32x32 and 4 of 32x64 weights, 16,384 in all; 1.5 bits each is 24,576 code bits.
    assert!(
        budget.starts_with("`average-bits`: a budget of 24576 cannot be met: assignments range from 32768 (every block at its lowest width) to 65536"),
        "{budget}"
    );
    let none = plan_error(&cls, json!({ "average-bits": null }), Some(&calib));
    assert!(none.starts_with("`average-bits`: no budget"), "{none}");
    let group = plan_error(&cls, json!({ "group-size": 24 }), Some(&calib));
    assert!(
        group.starts_with("`group-size`: the group size does not fit"),
        "{group}"
    );
    let ce = plan_error(
        &fixture("tiny-bert"),
        json!({ "loss": "cross-entropy" }),
        Some(&calib),
    );
    assert!(
        ce.starts_with("`loss`: cross-entropy needs a classification head"),
        "{ce}"
    );
    let zero = plan_error(&cls, json!({ "sensitivity": { "runs": 0 } }), Some(&calib));
    assert_eq!(zero, "`sensitivity.runs`: must be at least 1");
    // Output dimensions are 32 and 64: 5 groups of rows fit neither.
    let rows = plan_error(&cls, json!({ "row-groups": 5 }), Some(&calib));
    assert!(
        rows.starts_with("`row-groups`: 5 groups of output rows do not fit 12 tensor(s):")
            && rows.contains("encoder.layer.0.attention.self.query.weight")
            && rows.contains(
                "hint: choose a number of groups that divides every selected output dimension"
            ),
        "{rows}"
    );
    assert_eq!(
        plan_error(&cls, json!({ "row-groups": 0 }), Some(&calib)),
        "`row-groups`: must be at least 1"
    );
}

/// The paper's layout: `row-groups` contiguous groups of output rows per matrix, one symmetric scale per group
/// (`max |w| / ((2^b - 1) / 2)` over the group's rows), codes `round(w / scale)` clamped to the signed range.
#[test]
fn row_groups_quantize_contiguous_output_rows_with_one_scale_each() {
    let tmp = tempfile::tempdir().expect("tmp");
    let calib = labelled_calibration(tmp.path(), Some(0));
    let dir = fixture("tiny-bert-cls");
    let original = Checkpoint::open(&dir).expect("opens");
    let (ckpt, report) = run_with(&dir, config(json!({ "row-groups": 8 })), &calib).expect("runs");
    assert_eq!(report.decisions["granularity"], "8 groups of output rows");
    for (name, b) in blocks(&report) {
        for tensor in b["tensors"].as_object().expect("tensors").keys() {
            let q = ckpt.store.get_quant(tensor).expect("quantized");
            let (rows, cols) = (q.rows, q.cols);
            let per = rows / 8;
            // Stored per row (compressed-tensors' channel strategy), each row with its group's scale.
            assert_eq!(q.encoding.strategy, Strategy::Channel, "{name}");
            for r in 0..rows {
                assert_eq!(q.scales[r], q.scales[r / per * per], "{tensor} row {r}");
            }
            let w = original
                .store
                .get_f32(tensor, &[rows, cols])
                .expect("reads");
            let decoded = q.dequantize();
            let bits = i32::from(q.encoding.bits);
            let (lo, hi) = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1);
            for g in 0..8 {
                let span = g * per * cols..(g + 1) * per * cols;
                let max = w[span.clone()].iter().fold(0f32, |m, x| m.max(x.abs()));
                let scale = max / (((1 << bits) - 1) as f32 / 2.0);
                for i in span {
                    let code = (w[i] / scale).round_ties_even().clamp(lo as f32, hi as f32);
                    assert!(
                        (decoded[i] - code * scale).abs() <= 1e-6 * max,
                        "{tensor}[{i}]: {} vs {}",
                        decoded[i],
                        code * scale
                    );
                }
            }
        }
    }
    // QAT fake-quantizes with the same row groups; the trained matrices are stored the same way.
    let qat = json!({ "steps": 2, "lr": 1e-3, "batch-size": 4 });
    let (tuned, report) =
        run_with(&dir, config(json!({ "row-groups": 8, "qat": qat })), &calib).expect("runs");
    for b in blocks(&report).values() {
        for tensor in b["tensors"].as_object().expect("tensors").keys() {
            let q = tuned.store.get_quant(tensor).expect("quantized");
            assert_eq!(q.encoding.strategy, Strategy::Channel);
            let per = q.rows / 8;
            assert!(
                (0..q.rows).all(|r| q.scales[r] == q.scales[r / per * per]),
                "{tensor}"
            );
        }
    }
}

#[test]
fn labels_outside_the_head_are_an_error_naming_the_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let calib = labelled_calibration(tmp.path(), Some(3));
    let err = match run_with(&fixture("tiny-bert-cls"), config(json!({})), &calib) {
        Ok(_) => panic!("labels 3..5 do not fit 3 classes"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("`label-field`: `"), "{err}");
    assert!(
        err.contains("line 1: label 4 is outside the classifier's 3 classes (0 to 2)"),
        "{err}"
    );
}

/// Cross-entropy of the stored (quantized) classifier on every calibration text.
fn calibration_loss(ckpt: &Checkpoint, dir: &Path) -> f64 {
    use compressor_calibration::{TextInput, TextTokenizer};
    use compressor_models::runtime::{flat, Bert, Cpu};
    use compressor_passes::hessian::{loss, Sample, Target};
    let tokenizer = TextTokenizer::from_model_dir(dir, Some(16)).expect("tokenizer");
    let inputs: Vec<TextInput> = common::LABELLED
        .iter()
        .map(|(t, _)| TextInput::from(*t))
        .collect();
    let sample = Sample {
        batch: tokenizer.encode_batch(&inputs).expect("encode"),
        target: Target::Labels(common::LABELLED.iter().map(|(_, y)| *y as usize).collect()),
    };
    let model = Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
        .expect("load");
    f64::from(flat(loss(&model, &sample).expect("loss")).expect("value")[0])
}

#[test]
fn qat_keeps_the_widths_and_lowers_the_loss_of_the_quantized_model() {
    let tmp = tempfile::tempdir().expect("tmp");
    let calib = labelled_calibration(tmp.path(), Some(0));
    let dir = fixture("tiny-bert-cls");
    let two_bits = |qat: Value| config(json!({ "bits": [2], "average-bits": 2.0, "qat": qat }));
    let (plain, plain_report) = run_with(&dir, two_bits(Value::Null), &calib).expect("runs");
    let qat = json!({ "steps": 40, "lr": 1e-3, "batch-size": 8 });
    let (tuned, report) = run_with(&dir, two_bits(qat.clone()), &calib).expect("runs");
    assert!(!plain_report.metrics.contains_key("qat"));
    let q = &report.metrics["qat"];
    assert_eq!(q["losses"].as_array().map(Vec::len), Some(40));
    let (first, last) = (
        q["loss_first_10"].as_f64().expect("first"),
        q["loss_last_10"].as_f64().expect("last"),
    );
    assert!(last < first, "training loss {first} -> {last}");
    // Every block is still stored at 2 bits, and the float head was trained too.
    for b in blocks(&report).values() {
        for name in b["tensors"].as_object().expect("tensors").keys() {
            assert_eq!(
                tuned.store.get_quant(name).map(|q| q.encoding.bits),
                Some(2),
                "{name}"
            );
        }
    }
    assert!(report.changed.iter().any(|n| n == "classifier.weight"));
    assert!(report
        .changed
        .iter()
        .any(|n| n == "encoder.layer.0.attention.self.query.bias"));
    let (before, after) = (
        calibration_loss(&plain, &dir),
        calibration_loss(&tuned, &dir),
    );
    assert!(
        after < before,
        "loss of the 2-bit model: {before} without QAT, {after} with"
    );
    // Deterministic: a second run gives the same weights.
    let (again, _) = run_with(&dir, two_bits(qat), &calib).expect("runs");
    for name in blocks(&report).keys() {
        assert_eq!(
            tuned.store.get_quant(name).map(|q| q.packed()),
            again.store.get_quant(name).map(|q| q.packed()),
            "{name}"
        );
    }
}

#[test]
fn bad_qat_settings_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let calib = labelled_calibration(tmp.path(), Some(0));
    let cls = fixture("tiny-bert-cls");
    assert_eq!(
        plan_error(&cls, json!({ "qat": { "steps": 0 } }), Some(&calib)),
        "`qat.steps`: must be at least 1\nhint: leave `qat` out to skip fine-tuning"
    );
    assert_eq!(
        plan_error(
            &cls,
            json!({ "qat": { "steps": 5, "lr": -1.0 } }),
            Some(&calib)
        ),
        "`qat.lr`: -1 is not a positive learning rate"
    );
}

/// transformers 5.24 decodes every module with the first compressed-tensors config group's scheme: the plan says
/// when an artifact may hold more than one encoding, and not when it holds one.
#[test]
fn the_plan_notes_when_transformers_cannot_decode_the_artifact() {
    let tmp = tempfile::tempdir().expect("tmp");
    let calib = labelled_calibration(tmp.path(), Some(0));
    let cls = fixture("tiny-bert-cls");
    let notes = |extra: Value| -> Vec<String> {
        plan_with(&cls, config(extra), Some(&calib))
            .expect("plans")
            .notes
    };
    let mixed = notes(json!({}));
    assert!(
        mixed.iter().any(|n| n.starts_with("the artifact may hold 3 encodings (compressed-tensors config groups): transformers 5.24 decodes every module with the first group's scheme")),
        "{mixed:?}"
    );
    // Settings in the note are spelled as in pipeline.toml (issue 20: it printed "(Layer)" and "(Optimal allocation)").
    assert!(
        mixed.iter().any(|n| n.starts_with("bits per block (block = \"layer\") are chosen at run time from [2, 4, 8] (allocation = \"optimal\")")),
        "{mixed:?}"
    );
    let single = notes(json!({ "bits": [4], "embeddings": {}, "row-groups": 8 }));
    assert!(
        !single.iter().any(|n| n.contains("config groups")),
        "{single:?}"
    );
}

#[test]
fn gptq_rounding_lowers_the_layer_error_of_every_block_at_its_width() {
    let tmp = tempfile::tempdir().expect("tmp");
    let calib = labelled_calibration(tmp.path(), Some(0));
    let cls = fixture("tiny-bert-cls");
    let err = plan_error(
        &cls,
        json!({ "rounding": "gptq", "row-groups": 2 }),
        Some(&calib),
    );
    assert!(
        err.starts_with("`rounding`: GPTQ rounds column by column"),
        "{err}"
    );
    let (gptq, _) = run_with(&cls, config(json!({ "rounding": "gptq" })), &calib).expect("gptq");
    let (nearest, _) = run_with(&cls, config(json!({})), &calib).expect("nearest");
    // The input moments GPTQ rounds against, on the model before the pass.
    let before = Checkpoint::open(&cls).expect("opens");
    let records = calib
        .records(
            &SideFiles::new(&cls),
            &before.config,
            compressor_passes::calibration::LabelRequest::None,
        )
        .expect("records");
    let want = compressor_passes::analyses::Want {
        importance: false,
        covariance: true,
    };
    let cov = compressor_passes::analyses::Analyses::new(
        &before.store,
        &before.config,
        before.pooling,
        compressor_passes::analyses::cache::Cache::off(),
    )
    .forward(&records, 32, want, &|_, _| {})
    .expect("forward")
    .covariance
    .expect("covariance");
    let mut compared = 0;
    let names: Vec<String> = gptq.store.names().map(str::to_string).collect();
    for name in names {
        let (Some(g), Some(n), Some((cols, h))) = (
            gptq.store.get_quant(&name),
            nearest.store.get_quant(&name),
            cov.of_linear(before.config.bert().naming(), &name),
        ) else {
            continue;
        };
        if g.encoding != n.encoding {
            continue;
        }
        let w = before
            .store
            .get_f32(&name, &[g.rows, cols])
            .expect("weights");
        let (eg, en) = (
            compressor_passes::gptq::layer_error(&w, &g, h),
            compressor_passes::gptq::layer_error(&w, &n, h),
        );
        assert!(eg <= en, "{name}: gptq {eg} > nearest {en}");
        compared += 1;
    }
    assert!(compared >= 6, "{compared} blocks compared");
}
