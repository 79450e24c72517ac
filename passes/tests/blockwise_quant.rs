//! `blockwise-quant` on the tiny seeded BERT fixtures (hidden 32, FFN 64): plan-time errors, weights and
//! embeddings quantized within half a step, calibrated activation scales that the runtime accepts.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use compressor_models::quant::act::{self, ActivationQuant};
use compressor_models::runtime::{Bert, Cpu};
use compressor_models::{Checkpoint, Strategy};
use compressor_passes::{
    CalibrationSpec, ModelInfo, NoProgress, PassContext, PassPlan, PassReport, PassSpec,
    PlanContext, SideFiles,
};

fn spec(config: serde_json::Value) -> PassSpec {
    PassSpec::from_config("blockwise-quant", config)
        .expect("valid config")
        .expect("known kind")
}

fn plan(
    dir: &Path,
    config: serde_json::Value,
    calibration: Option<&CalibrationSpec>,
) -> compressor_passes::Result<PassPlan> {
    let ckpt = Checkpoint::open(dir).expect("opens");
    let info = ModelInfo::from_store(&ckpt.config, &ckpt.store);
    spec(config).build().plan(&PlanContext {
        config: &ckpt.config,
        info: &info,
        store: &ckpt.store,
        model_dir: dir,
        calibration,
        progress: &compressor_passes::NoProgress,
    })
}

fn run(
    dir: &Path,
    config: serde_json::Value,
    calibration: Option<&CalibrationSpec>,
) -> (Checkpoint, SideFiles, PassPlan, PassReport) {
    let mut ckpt = Checkpoint::open(dir).expect("opens");
    let info = ModelInfo::from_store(&ckpt.config, &ckpt.store);
    let pass = spec(config).build();
    let plan = pass
        .plan(&PlanContext {
            config: &ckpt.config,
            info: &info,
            store: &ckpt.store,
            model_dir: dir,
            calibration,
            progress: &compressor_passes::NoProgress,
        })
        .expect("plans");
    let mut files = SideFiles::new(dir);
    let report = pass
        .run(&mut PassContext {
            config: &mut ckpt.config,
            store: &mut ckpt.store,
            files: &mut files,
            calibration,
            plan: &plan,
            progress: &NoProgress,
            seed: 0,
        })
        .expect("runs");
    ckpt.store
        .check(&ckpt.config)
        .expect("valid after the pass");
    let mut after = info;
    after.apply(&plan, &ckpt.config);
    assert_eq!(after, ModelInfo::from_store(&ckpt.config, &ckpt.store));
    (ckpt, files, plan, report)
}

#[test]
fn weights_and_embeddings_are_quantized_within_half_a_step() {
    let dir = fixture("tiny-bert");
    let original = Checkpoint::open(&dir).expect("opens");
    let (ckpt, files, plan, report) = run(
        &dir,
        serde_json::json!({ "bits": 4, "group-size": 16, "embeddings": { "word": 4, "position": 8 } }),
        None,
    );
    // 2 layers x 6 linears + word and position embeddings.
    assert_eq!(plan.changes.len(), 14);
    assert_eq!(report.changed.len(), 14);
    assert!(
        files.changed().is_empty(),
        "no activation file without `activations`"
    );
    for change in &plan.changes {
        let q = ckpt.store.get_quant(&change.name).expect("quantized");
        let bits = if change.name.contains("position") {
            8
        } else {
            4
        };
        assert_eq!(
            (q.encoding.bits, q.encoding.strategy),
            (bits, Strategy::Group { size: 16 })
        );
        let w = original
            .store
            .get_f32(&change.name, &change.shape_before)
            .expect("reads");
        let d = ckpt
            .store
            .get_f32(&change.name, &change.shape_before)
            .expect("decodes");
        for (i, (a, b)) in w.iter().zip(&d).enumerate() {
            let s = q.scales[(i / q.cols) * (q.cols / 16) + (i % q.cols) / 16];
            assert!(
                (a - b).abs() <= 0.5 * s + 1e-7,
                "{}: {a} vs {b}",
                change.name
            );
        }
        assert_eq!(change.bytes_after, q.stored_bytes());
    }
    // Untouched: the token type table, LayerNorms, biases, the pooler.
    assert!(ckpt
        .store
        .get_quant("embeddings.token_type_embeddings.weight")
        .is_none());
    assert!(ckpt.store.get_quant("pooler.dense.weight").is_none());
    let rel = report.metrics["relative_frobenius_error"]
        .as_f64()
        .expect("number");
    assert!(rel > 0.0 && rel < 0.2, "{rel}");
    assert_eq!(
        report.metrics["bytes_after"],
        serde_json::json!(plan.bytes_after())
    );
}

#[test]
fn bad_settings_fail_at_plan_time_with_what_would_fit() {
    let dir = fixture("tiny-bert");
    let err = |config| plan(&dir, config, None).expect_err("must fail").to_string();
    assert_eq!(
        err(serde_json::json!({ "bits": 9 })),
        "`bits`: 9 bits is outside the supported range 2 to 8"
    );
    assert_eq!(
        err(serde_json::json!({ "embeddings": { "word": 1 } })),
        "`embeddings.word`: 1 bits is outside the supported range 2 to 8"
    );
    // One line per width, not one per tensor (issue 20: a bad group-size printed 36 near-identical lines).
    assert_eq!(
        err(serde_json::json!({ "group-size": 24 })),
        "`group-size`: the encoding does not fit 12 tensor(s):\n  \
         group size 24 does not divide the input dimension 32; valid sizes near it: 8, 16, 32 (10 tensors: `encoder.layer.0.attention.output.dense.weight`, `encoder.layer.0.attention.self.key.weight`, `encoder.layer.0.attention.self.query.weight` and 7 more)\n  \
         group size 24 does not divide the input dimension 64; valid sizes near it: 8, 16, 32 (2 tensors: `encoder.layer.0.output.dense.weight`, `encoder.layer.1.output.dense.weight`)\n\
         hint: choose a size that divides every selected dimension, or granularity = \"channel\""
    );
    assert!(err(serde_json::json!({ "select": { "layers": [7] } }))
        .starts_with("`select` matches no tensor of this model"));
    assert_eq!(
        err(serde_json::json!({ "granularity": "block" })),
        "`block`: granularity = \"block\" needs `block = [rows, cols]`"
    );
    assert_eq!(
        err(serde_json::json!({ "group-size": 16, "activations": {} })),
        "`activations` needs calibration data, and the pipeline has no `[calibration]` section\nhint: add `[calibration]` with `data = \"texts.jsonl\"` (one JSON record per line with a `text` field)"
    );
    let calibration = CalibrationSpec {
        data: PathBuf::from("unused.jsonl"),
        field: "text".into(),
        samples: 4,
        max_length: 16,
        seed: 0,
        pair_field: None,
    };
    assert_eq!(
        plan(&dir, serde_json::json!({ "group-size": 16, "activations": { "block-size": 24 } }), Some(&calibration))
            .expect_err("must fail")
            .to_string(),
        "`activations.block-size`: 24 does not divide hidden_size 32; valid sizes near it: 8, 16, 32"
    );
    let unknown = PassSpec::from_config("blockwise-quant", serde_json::json!({ "bit": 4 }))
        .expect_err("unknown key")
        .to_string();
    assert!(
        unknown.starts_with("unknown field `bit`, expected one of `bits`"),
        "{unknown}"
    );
}

#[test]
fn activation_scales_are_calibrated_for_every_point_and_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let calibration = common::calibration_texts(
        tmp.path(),
        &[
            "the cat sat on the mat",
            "a dog",
            "hello world and more words here",
            "the end",
        ],
    );
    for fixture_name in ["tiny-bert", "tiny-bert-cls"] {
        let dir = fixture(fixture_name);
        let (ckpt, files, _, report) = run(
            &dir,
            serde_json::json!({ "bits": 8, "granularity": "channel", "activations": { "block-size": 16, "batch-size": 2 } }),
            Some(&calibration),
        );
        let bytes = files
            .read(act::FILE)
            .expect("reads")
            .expect("activation file written");
        let table = ActivationQuant::from_json(&bytes).expect("parses");
        let mut model =
            Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())
                .expect("loads");
        let expected = model.activation_points(16);
        assert_eq!(
            table.points.len(),
            expected.len(),
            "{fixture_name}: every point calibrated"
        );
        assert_eq!(
            report.metrics["activation_points"],
            serde_json::json!(expected.len())
        );
        assert!(table
            .points
            .keys()
            .any(|k| k == "encoder.layer.1.ffn.gelu.in"));
        assert!(table.points["encoder.layer.0.attention.probs"].unsigned);
        assert!(!table.points["encoder.layer.0.ffn.gelu.in"].unsigned);
        assert_eq!(table.points["encoder.layer.0.ffn.gelu.in"].scales.len(), 4);
        model
            .set_activation_quant(table)
            .expect("the runtime accepts the table");

        // Only GELU points when asked.
        let (_, files, _, _) = run(
            &dir,
            serde_json::json!({ "bits": 8, "granularity": "channel", "activations": { "at": ["gelu"], "block-size": 16 } }),
            Some(&calibration),
        );
        let table =
            ActivationQuant::from_json(&files.read(act::FILE).expect("reads").expect("written"))
                .expect("parses");
        assert_eq!(table.points.len(), 4, "gelu in and out of 2 layers");
    }
}

#[test]
fn gptq_rounding_lowers_every_linears_error_under_its_input_covariance() {
    let tmp = tempfile::tempdir().expect("tmp");
    let calibration = common::calibration_texts(
        tmp.path(),
        &[
            "the cat sat on the mat",
            "a dog and a cat and a very good film",
            "hello world and more words here",
            "the end of the movie was the best part",
            "i hate this film",
            "good good good",
        ],
    );
    let dir = fixture("tiny-bert");
    let config = serde_json::json!({ "bits": 3, "group-size": 16, "rounding": "gptq", "gptq": { "damping": 0.01 } });
    let (ckpt, _, plan, report) = run(&dir, config.clone(), Some(&calibration));
    let per_tensor = report.metrics["per_tensor"]
        .as_object()
        .expect("per tensor");
    let mut compared = 0;
    for name in &report.changed {
        let e = &per_tensor[name];
        let (g, n) = (
            e["gptq_layer_error"].as_f64().expect("gptq error"),
            e["nearest_layer_error"].as_f64().expect("nearest error"),
        );
        assert!(g <= n, "{name}: gptq {g} > nearest {n}");
        compared += 1;
    }
    assert_eq!(compared, 12, "every encoder Linear");
    // The same compressed-tensors layout as round-to-nearest: same encodings, same bytes.
    let (_, _, nearest_plan, _) = run(
        &dir,
        serde_json::json!({ "bits": 3, "group-size": 16 }),
        Some(&calibration),
    );
    assert_eq!(plan.changes, nearest_plan.changes);
    assert!(ckpt
        .store
        .get_quant("encoder.layer.0.output.dense.weight")
        .is_some());
    // Without calibration data it is a plan error naming the key.
    let err = plan_error(&dir, config);
    assert!(err.contains("rounding = \"gptq\""), "{err}");
}

fn plan_error(dir: &Path, config: serde_json::Value) -> String {
    plan(dir, config, None)
        .expect_err("needs calibration")
        .to_string()
}
