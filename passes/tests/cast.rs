//! The `cast` pass on a tiny seeded BERT: plan from metadata, run, validate, report.

use std::path::Path;

use compressor_models::testing::TinyBert;
use compressor_models::{Checkpoint, DType};
use compressor_passes::{ModelInfo, NoProgress, PassContext, PassSpec, PlanContext, SideFiles};

fn tiny(dir: &Path) -> Checkpoint {
    let model = TinyBert {
        vocab_size: 32,
        hidden_size: 8,
        intermediate_size: 16,
        max_positions: 16,
        seed: 1,
        ..TinyBert::default()
    };
    model.write(dir).expect("write tiny model");
    Checkpoint::open(dir).expect("opens")
}

fn spec(toml_like: serde_json::Value) -> PassSpec {
    PassSpec::from_config("cast", toml_like)
        .expect("valid config")
        .expect("known kind")
}

#[test]
fn cast_plans_from_metadata_and_runs_to_a_valid_store() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut ckpt = tiny(tmp.path());
    let info = ModelInfo::from_store(&ckpt.config, &ckpt.store);
    let pass = spec(serde_json::json!({ "dtype": "bf16" })).build();
    let plan = pass
        .plan(&PlanContext {
            config: &ckpt.config,
            info: &info,
            store: &ckpt.store,
            model_dir: tmp.path(),
            calibration: None,
            progress: &compressor_passes::NoProgress,
        })
        .expect("plans");
    // Every float parameter; the position_ids buffer is not selected by the default.
    assert_eq!(plan.changes.len(), info.tensors.len() - 1);
    assert!(plan
        .changes
        .iter()
        .all(|c| c.dtype_after == DType::BF16 && c.bytes_after * 2 == c.bytes_before));
    assert!(plan.notes.is_empty());

    let report = pass
        .run(&mut PassContext {
            config: &mut ckpt.config,
            store: &mut ckpt.store,
            files: &mut SideFiles::new(tmp.path()),
            calibration: None,
            plan: &plan,
            progress: &NoProgress,
            seed: 0,
        })
        .expect("runs");
    ckpt.store
        .check(&ckpt.config)
        .expect("valid after the pass");
    let mut after = info.clone();
    after.apply(&plan, &ckpt.config);
    assert_eq!(after, ModelInfo::from_store(&ckpt.config, &ckpt.store));
    assert_eq!(report.changed.len(), plan.changes.len());
    assert_eq!(
        report.metrics["bytes_after"],
        serde_json::json!(plan.bytes_after())
    );
    let max = report.metrics["max_abs_error"].as_f64().expect("number");
    assert!(
        max > 0.0 && max <= 0.5 / 128.0,
        "bf16 keeps 8 bits of mantissa: {max}"
    );

    // The same run on a fresh store reports the same numbers.
    let mut again = Checkpoint::open(tmp.path()).expect("reopens");
    let report2 = pass
        .run(&mut PassContext {
            config: &mut again.config,
            store: &mut again.store,
            files: &mut SideFiles::new(tmp.path()),
            calibration: None,
            plan: &plan,
            progress: &NoProgress,
            seed: 0,
        })
        .expect("runs");
    assert_eq!(report, report2);
}

#[test]
fn cast_plan_errors_and_notes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ckpt = tiny(tmp.path());
    let info = ModelInfo::from_store(&ckpt.config, &ckpt.store);
    let ctx = PlanContext {
        config: &ckpt.config,
        info: &info,
        store: &ckpt.store,
        model_dir: tmp.path(),
        calibration: None,
        progress: &compressor_passes::NoProgress,
    };
    let err = spec(serde_json::json!({ "dtype": "f16", "select": { "layers": [5] } }))
        .build()
        .plan(&ctx)
        .expect_err("must fail");
    assert!(
        err.to_string()
            .starts_with("`select` matches no tensor of this model\nhint: "),
        "{err}"
    );
    let err = spec(serde_json::json!({ "dtype": "f16", "select": { "roles": ["buffer"] } }))
        .build()
        .plan(&ctx)
        .expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "`select` matches only tensors that are not floating point (`embeddings.position_ids`)\nhint: select float parameters (kinds `weight` and `bias`)"
    );
    let plan = spec(serde_json::json!({ "dtype": "f32", "select": { "names": ["embeddings.*"] } }))
        .build()
        .plan(&ctx)
        .expect("plans");
    assert!(plan.changes.is_empty());
    assert_eq!(
        plan.notes,
        [
            "5 selected tensor(s) are already F32",
            "1 selected tensor(s) are not floating point and stay as they are: embeddings.position_ids",
        ]
    );
}
