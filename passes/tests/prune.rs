//! `prune` on the tiny BERT fixture (hidden 32, 4 heads of 8, FFN 64, 2 layers): pruning nothing changes nothing,
//! removing units whose weights are zero is exact, the per-layer shapes survive config.json, the zero-padded dense
//! form computes the same outputs, layers can be dropped, and impossible targets are plan errors naming the key.
//! Every embedding taken is also checked between the host kernels and burn's tensor ops on the pruned shapes.

mod common;

use std::path::Path;

use common::{batch, fixture, max_diff};
use compressor_models::arch::LayerShape;
use compressor_models::runtime::{Bert, Cpu};
use compressor_models::{Checkpoint, HostTensor, ModelConfig, TensorStore};
use compressor_passes::{
    CalibrationSpec, ModelInfo, NoProgress, PassContext, PassPlan, PassReport, PassSpec,
    PlanContext, SideFiles,
};
use serde_json::{json, Value};

/// The embeddings of `batch()`, from the host kernels, checked against burn's tensor ops on the same (pruned)
/// shapes.
fn embed(dir: &Path, config: &ModelConfig, store: &TensorStore) -> Vec<Vec<f32>> {
    let pooling = compressor_models::Pooling::load(dir).expect("pooling");
    let mut model = Bert::<Cpu>::load(store, config, pooling, &Default::default()).expect("loads");
    let host = model.embed(&batch()).expect("embeds");
    model.host_kernels = false;
    let tensor = model.embed(&batch()).expect("embeds");
    let d = max_diff(&host, &tensor);
    assert!(d <= 1e-5, "host kernels vs tensor ops: {d}");
    host
}

fn calibration(dir: &Path) -> CalibrationSpec {
    common::calibration_texts(
        dir,
        &[
            "the cat sat on the mat",
            "a good movie",
            "i hate this film",
            "the dog and the cat",
            "a great film, very good",
            "it was not very good",
        ],
    )
}

/// Plan and run one `prune` pass on `config` / `store` (the checkpoint of `dir`, possibly edited).
fn prune(
    dir: &Path,
    mut config: ModelConfig,
    mut store: TensorStore,
    settings: Value,
    calibration: Option<&CalibrationSpec>,
) -> compressor_passes::Result<(ModelConfig, TensorStore, PassPlan, PassReport)> {
    let spec = PassSpec::from_config("prune", settings)
        .expect("valid settings")
        .expect("known kind");
    let pass = spec.build();
    let info = ModelInfo::from_store(&config, &store);
    let plan = pass.plan(&PlanContext {
        config: &config,
        info: &info,
        store: &store,
        model_dir: dir,
        calibration,
        progress: &compressor_passes::NoProgress,
    })?;
    let mut files = SideFiles::new(dir);
    let report = pass.run(&mut PassContext {
        config: &mut config,
        store: &mut store,
        files: &mut files,
        calibration,
        plan: &plan,
        progress: &NoProgress,
        seed: 0,
    })?;
    store.check(&config)?;
    Ok((config, store, plan, report))
}

fn open(dir: &Path) -> (ModelConfig, TensorStore) {
    let c = Checkpoint::open(dir).expect("opens");
    (c.config, c.store)
}

/// Set rows `rows` (and, for `cols`, columns) of a tensor to zero.
fn zero(
    store: &mut TensorStore,
    name: &str,
    rows: Option<std::ops::Range<usize>>,
    cols: Option<std::ops::Range<usize>>,
) {
    let t = store.get(name).expect("tensor");
    let mut v = t.to_f32(name).expect("f32");
    let width: usize = t.shape.iter().skip(1).product();
    for (i, x) in v.iter_mut().enumerate() {
        let (r, c) = (i / width.max(1), i % width.max(1));
        if rows.as_ref().is_some_and(|rr| rr.contains(&r))
            || cols.as_ref().is_some_and(|cc| cc.contains(&c))
        {
            *x = 0.0;
        }
    }
    store.set(
        name,
        HostTensor::from_f32(t.shape.clone(), &v, t.dtype).expect("tensor"),
    );
}

#[test]
fn pruning_nothing_changes_nothing() {
    let dir = fixture("tiny-bert");
    let (config, store) = open(&dir);
    let before: Vec<(String, HostTensor)> = store
        .names()
        .map(|n| (n.to_string(), store.get(n).expect("tensor")))
        .collect();
    let (after_config, after, plan, report) =
        prune(&dir, config.clone(), store, json!({ "target": 0.0 }), None).expect("prunes");
    assert!(plan.changes.is_empty() && plan.arch.is_empty() && plan.removed.is_empty());
    assert!(report.changed.is_empty());
    assert_eq!(after_config.raw, config.raw);
    for (name, t) in before {
        assert_eq!(after.get(&name).expect("kept").bytes(), t.bytes(), "{name}");
    }
}

#[test]
fn removing_zeroed_heads_and_neurons_is_exact() {
    let dir = fixture("tiny-bert");
    let (config, store) = zeroed(&dir);
    let reference = embed(&dir, &config, &store);
    let encoder = config.bert().encoder_parameters() as f64;
    let head = (2 * (32 * 8 + 8) + (32 * 8 + 8) + 8 * 32) as f64;
    let neuron = (2 * 32 + 1) as f64;
    let l0 = "encoder.layer.0";

    let (c, s, plan, report) = prune(
        &dir,
        config.clone(),
        store,
        json!({ "target": head / encoder, "structures": ["heads"], "allocation": "per-layer" }),
        None,
    )
    .expect("prunes heads");
    assert_eq!(c.bert().layers[0].heads, vec![0, 2, 3]);
    assert_eq!(c.bert().layers[1].heads, vec![0, 1, 2, 3]);
    assert_eq!(
        s.info(&format!("{l0}.attention.self.query.weight"))
            .map(|i| i.1),
        Some(vec![24, 32])
    );
    assert!(max_diff(&embed(&dir, &c, &s), &reference) <= 1e-5);
    assert_eq!(report.decisions["layers"][0]["heads_removed"], json!([1]));
    // The plan's bytes are the store's bytes.
    let (_, original) = zeroed(&dir);
    let mut predicted = ModelInfo::from_store(&config, &original);
    predicted.apply(&plan, &c);
    assert_eq!(predicted.total_bytes(), s.total_bytes());

    let (c, s, _, _) = prune(
        &dir,
        config.clone(),
        original,
        json!({ "target": 2.0 * neuron / encoder, "structures": ["neurons"], "allocation": "per-layer" }),
        None,
    )
    .expect("prunes neurons");
    assert_eq!(c.bert().layers[1].intermediate_size, 62);
    assert_eq!(c.bert().layers[0].intermediate_size, 64);
    assert!(max_diff(&embed(&dir, &c, &s), &reference) <= 1e-5);
}

/// The fixture with head 1 of layer 0 and neurons 3..5 of layer 1 contributing nothing (all their weights zero).
fn zeroed(dir: &Path) -> (ModelConfig, TensorStore) {
    let (config, mut store) = open(dir);
    // Head 1 of layer 0 and neurons 3..5 of layer 1 contribute nothing: zero all their weights.
    let l0 = "encoder.layer.0";
    for m in ["query", "key", "value"] {
        zero(
            &mut store,
            &format!("{l0}.attention.self.{m}.weight"),
            Some(8..16),
            None,
        );
        zero(
            &mut store,
            &format!("{l0}.attention.self.{m}.bias"),
            Some(8..16),
            None,
        );
    }
    zero(
        &mut store,
        &format!("{l0}.attention.output.dense.weight"),
        None,
        Some(8..16),
    );
    let l1 = "encoder.layer.1";
    zero(
        &mut store,
        &format!("{l1}.intermediate.dense.weight"),
        Some(3..5),
        None,
    );
    zero(
        &mut store,
        &format!("{l1}.intermediate.dense.bias"),
        Some(3..5),
        None,
    );
    zero(
        &mut store,
        &format!("{l1}.output.dense.weight"),
        None,
        Some(3..5),
    );
    (config, store)
}

#[test]
fn per_layer_shapes_round_trip_through_config_json_and_densify_exactly() {
    let dir = fixture("tiny-bert");
    let (config, store) = open(&dir);
    let (c, mut s, _, _) = prune(
        &dir,
        config,
        store,
        json!({ "target": 0.4, "allocation": "per-layer" }),
        None,
    )
    .expect("prunes");
    let layers = c.bert().layers.clone();
    assert!(!c.bert().is_uniform());
    assert_eq!(c.raw["compressor"]["version"], json!(1));
    // config.json as written reads back to the same per-layer shapes.
    let text = serde_json::to_string_pretty(&Value::Object(c.raw.clone())).expect("json");
    let reread = ModelConfig::parse(Path::new("config.json"), &text).expect("parses");
    assert_eq!(reread.bert().layers, layers);
    assert!(s.validate(&reread).is_ok());
    let pruned = embed(&dir, &c, &s);
    // Zero-padded back to the uniform shapes: a plain config, same outputs.
    let dense = compressor_models::densify::densify(&c, &mut s).expect("densifies");
    assert!(dense.bert().is_uniform());
    assert!(dense.raw.get("compressor").is_none());
    assert_eq!(dense.bert().intermediate_size, 64);
    s.check(&dense).expect("dense shapes");
    assert!(max_diff(&embed(&dir, &dense, &s), &pruned) <= 1e-5);
}

#[test]
fn an_extension_that_disagrees_with_the_tensors_names_the_tensor() {
    let dir = fixture("tiny-bert");
    let (config, store) = open(&dir);
    let mut raw = config.raw.clone();
    let shape = |heads: Vec<usize>, i: usize, source: usize| LayerShape {
        heads,
        qk_head_dim: 8,
        vo_head_dim: 8,
        intermediate_size: i,
        source,
        low_rank: Default::default(),
    };
    raw.insert(
        "compressor".into(),
        json!({ "version": 1, "layers": [shape(vec![0, 1], 64, 0), shape(vec![0, 1, 2, 3], 64, 1)] }),
    );
    let text = Value::Object(raw.clone()).to_string();
    let bad = ModelConfig::parse(Path::new("config.json"), &text).expect("parses");
    let err = store.check(&bad).expect_err("shapes disagree").to_string();
    assert!(
        err.contains("tensor `encoder.layer.0.attention.self.query.weight` has shape [32, 32], the config implies [16, 32]"),
        "{err}"
    );
    raw.insert(
        "compressor".into(),
        json!({ "version": 1, "layers": [shape(vec![0, 4], 64, 0), shape(vec![0], 64, 1)] }),
    );
    let err = ModelConfig::parse(Path::new("config.json"), &Value::Object(raw).to_string())
        .expect_err("head 4 does not exist")
        .to_string();
    assert_eq!(
        err,
        "`config.json`: key `compressor.layers[0].heads` names head 4, but the layer has heads 0..4"
    );
}

#[test]
fn impossible_targets_are_plan_errors_with_the_achievable_range() {
    let dir = fixture("tiny-bert");
    let (config, store) = open(&dir);
    let err = prune(
        &dir,
        config.clone(),
        store,
        json!({ "target": 0.9, "structures": ["heads"] }),
        None,
    )
    .expect_err("too much")
    .to_string();
    assert!(err.starts_with("`target`: asks to remove"), "{err}");
    assert!(
        err.contains("the achievable range of `target` is 0 to 0.3"),
        "{err}"
    );
    let err = prune(
        &dir,
        config.clone(),
        open(&dir).1,
        json!({ "target": 1.5 }),
        None,
    )
    .expect_err("not a fraction")
    .to_string();
    assert_eq!(err, "`target`: is 1.5, expected a fraction in [0, 1)");
    let err = prune(
        &dir,
        config,
        open(&dir).1,
        json!({ "drop-layers": 1 }),
        None,
    )
    .expect_err("needs data")
    .to_string();
    assert!(
        err.starts_with("`drop-layers` needs calibration data"),
        "{err}"
    );
}

#[test]
fn activation_importance_and_layer_dropping_use_the_calibration_data() {
    let dir = fixture("tiny-bert");
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = calibration(tmp.path());
    let (config, store) = open(&dir);
    let (c, s, plan, report) = prune(
        &dir,
        config.clone(),
        store,
        json!({ "drop-layers": 1, "target": 0.6, "importance": "activation" }),
        Some(&spec),
    )
    .expect("prunes");
    assert_eq!(c.bert().num_hidden_layers, 1);
    assert_eq!(c.bert().layers.len(), 1);
    let dropped = report.decisions["dropped_layers"][0].as_u64().expect("one") as usize;
    assert_eq!(c.bert().layers[0].source, 1 - dropped);
    assert!(s.contains("encoder.layer.0.output.LayerNorm.weight"));
    assert!(!s.contains("encoder.layer.1.output.LayerNorm.weight"));
    assert!(!plan.removed.is_empty());
    let removed =
        1.0 - c.bert().encoder_parameters() as f64 / config.bert().encoder_parameters() as f64;
    assert!((removed - 0.6).abs() < 0.02, "{removed}");
    // Same inputs, same decision.
    let (c2, _, _, _) = prune(
        &dir,
        config,
        open(&dir).1,
        json!({ "drop-layers": 1, "target": 0.6, "importance": "activation" }),
        Some(&spec),
    )
    .expect("prunes again");
    assert_eq!(c2.raw, c.raw);
}

/// The fixture with hidden dimension `d` carrying nothing: zero in every tensor that reads or writes it.
fn zero_hidden(dir: &Path, d: usize) -> (ModelConfig, TensorStore) {
    let (config, mut store) = open(dir);
    let names: Vec<String> = store.names().map(str::to_string).collect();
    for name in names {
        let reads = name.ends_with("_embeddings.weight")
            || name.contains(".attention.self.") && name.ends_with(".weight")
            || name.ends_with("intermediate.dense.weight")
            || name == "pooler.dense.weight";
        let writes = name.contains("LayerNorm")
            || name.ends_with("output.dense.weight")
            || name.ends_with("output.dense.bias")
            || name.starts_with("pooler.dense.");
        if reads {
            zero(&mut store, &name, None, Some(d..d + 1));
        }
        if writes {
            zero(&mut store, &name, Some(d..d + 1), None);
        }
    }
    (config, store)
}

#[test]
fn hidden_dimensions_go_from_every_tensor_and_are_recorded_in_the_extension() {
    let dir = fixture("tiny-bert");
    let (config, store) = zero_hidden(&dir, 5);
    let (c, s, plan, report) = prune(
        &dir,
        config.clone(),
        store,
        json!({ "target": 0.1, "structures": ["hidden"] }),
        None,
    )
    .expect("prunes hidden dimensions");
    let b = c.bert();
    let kept = b.hidden.as_ref().expect("recorded").kept.clone();
    assert_eq!(kept.len(), b.hidden_size);
    assert_eq!(
        b.hidden_size, 29,
        "3 of 32 dimensions, ~3.1% of the encoder each"
    );
    assert!(!kept.contains(&5), "the empty dimension scores lowest");
    assert_eq!(report.decisions["hidden"]["removed"][0], json!(5));
    // The attention scale stays the original head width's; stock loaders cannot run it.
    assert_eq!(b.head_dim(), 8);
    assert!(!b.is_uniform());
    s.check(&c).expect("every tensor has the narrower shape");
    assert_eq!(
        s.info("embeddings.word_embeddings.weight").map(|i| i.1[1]),
        Some(29)
    );
    assert_eq!(
        s.info("encoder.layer.1.attention.self.query.weight")
            .map(|i| i.1),
        Some(vec![32, 29])
    );
    assert_eq!(
        s.info("encoder.layer.1.output.dense.weight").map(|i| i.1),
        Some(vec![29, 64])
    );
    let removed = 1.0 - b.encoder_parameters() as f64 / config.bert().encoder_parameters() as f64;
    assert!((removed - 0.1).abs() < 0.02, "{removed}");
    // The plan's bytes are the store's bytes (embeddings and pooler narrow too).
    let mut predicted = ModelInfo::from_store(&config, &zero_hidden(&dir, 5).1);
    predicted.apply(&plan, &c);
    assert_eq!(predicted.total_bytes(), s.total_bytes());
    // config.json as written reads back; the model runs at the new width.
    let text = Value::Object(c.raw.clone()).to_string();
    let reread = ModelConfig::parse(Path::new("config.json"), &text).expect("parses");
    assert_eq!(reread.bert().hidden, b.hidden);
    let out = embed(&dir, &c, &s);
    assert!(out
        .iter()
        .all(|v| v.len() == 29 && v.iter().all(|x| x.is_finite())));
    // A second pruning composes: the extension keeps naming dimensions of the original.
    let (c2, mut s2, _, _) = prune(
        &dir,
        c.clone(),
        s,
        json!({ "target": 0.05, "structures": ["hidden"] }),
        None,
    )
    .expect("prunes again");
    let again = c2.bert().hidden.clone().expect("recorded");
    assert_eq!(again.original_size, 32);
    assert!(again.kept.len() < 29 && again.kept.iter().all(|d| kept.contains(d)));
    // The zero-padded dense export cannot be exact: it refuses, naming the key and the export to use.
    let err = compressor_models::densify::densify(&c2, &mut s2)
        .expect_err("not exact")
        .to_string();
    assert!(
        err.contains("`compressor.hidden`") && err.contains("--format remote-code"),
        "{err}"
    );
    // A kept list that disagrees with hidden_size names the key.
    let mut raw = c.raw.clone();
    raw["hidden_size"] = json!(30);
    let err = ModelConfig::parse(Path::new("config.json"), &Value::Object(raw).to_string())
        .expect_err("30 vs 29")
        .to_string();
    assert_eq!(
        err,
        "`config.json`: key `compressor.hidden.kept` lists 29 dimensions but hidden_size is 30"
    );
}

#[test]
fn hidden_dimensions_heads_and_neurons_share_one_target() {
    let dir = fixture("tiny-bert");
    let (config, store) = open(&dir);
    let (c, s, _, report) = prune(
        &dir,
        config.clone(),
        store,
        json!({ "target": 0.3, "structures": ["heads", "neurons", "hidden"], "allocation": "per-layer" }),
        None,
    )
    .expect("prunes");
    s.check(&c).expect("shapes");
    let b = c.bert();
    assert!(b.hidden_size < 32);
    assert!(b.layers.iter().any(|l| l.intermediate_size < 64));
    let removed = 1.0 - b.encoder_parameters() as f64 / config.bert().encoder_parameters() as f64;
    assert!((removed - 0.3).abs() < 0.02, "{removed}");
    assert_eq!(report.decisions["hidden"]["after"], json!(b.hidden_size));
    let err = prune(
        &dir,
        config,
        open(&dir).1,
        json!({ "target": 0.99, "structures": ["hidden"] }),
        None,
    )
    .expect_err("too much")
    .to_string();
    assert!(
        err.contains("with min-hidden = 1")
            && err.contains("the achievable range of `target` is 0 to 0.9"),
        "{err}"
    );
}
