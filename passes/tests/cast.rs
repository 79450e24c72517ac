//! The `cast` pass on a tiny seeded BERT: plan from metadata, run, validate, report.

use std::collections::BTreeMap;
use std::path::Path;

use compressor_models::{st, Checkpoint, DType, HostTensor, Kind, ModelConfig};
use compressor_passes::{ModelInfo, NoProgress, PassContext, PassSpec, PlanContext};

const CONFIG: &str = r#"{"model_type": "bert", "vocab_size": 32, "hidden_size": 8, "num_hidden_layers": 2,
 "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 16, "type_vocab_size": 2,
 "hidden_act": "gelu"}"#;

fn tiny(dir: &Path) -> Checkpoint {
    std::fs::write(dir.join("config.json"), CONFIG).expect("config");
    let config = ModelConfig::parse(Path::new("config.json"), CONFIG).expect("parses");
    let mut state = 1u32;
    let tensors: Vec<(String, HostTensor)> = config
        .expected_tensors()
        .into_iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            let t = if s.kind == Kind::Buffer {
                HostTensor::from_i64(s.shape.clone(), &(0..n as i64).collect::<Vec<_>>())
            } else {
                let v: Vec<f32> = (0..n)
                    .map(|_| {
                        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                    })
                    .collect();
                HostTensor::from_f32(s.shape.clone(), &v, DType::F32)
            };
            (s.name, t.expect("tensor"))
        })
        .collect();
    st::write(&dir.join("model.safetensors"), &tensors, &BTreeMap::new()).expect("write");
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
            config: &ckpt.config,
            store: &mut ckpt.store,
            plan: &plan,
            progress: &NoProgress,
            seed: 0,
        })
        .expect("runs");
    ckpt.store
        .check(&ckpt.config)
        .expect("valid after the pass");
    let mut after = info.clone();
    after.apply(&plan);
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
            config: &again.config,
            store: &mut again.store,
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
