//! `vib-prune` on the tiny BERT fixtures (hidden 32, 4 heads of 8, FFN 64, 2 layers): masks at mu = 1 and
//! sigma -> 0 leave the outputs unchanged, the KL and expected sparsity match a hand computation, folding and
//! removing computes what the hard-masked model computes, training meets the target deterministically, a killed run
//! resumes to the same masks, and bad input is a plan error naming the key or file.

mod common;

use std::path::Path;

use common::{batch, fixture, labelled_calibration, max_diff};
use compressor_models::rng::Rng;
use compressor_models::runtime::{Bert, Cpu};
use compressor_models::{Checkpoint, ModelConfig, Pooling, TensorStore};
use compressor_passes::analyses::cache::Cache;
use compressor_passes::vib_prune::masks::Leaves;
use compressor_passes::vib_prune::{self, KlWeights, MaskSet, Structure, VibPrune};
use compressor_passes::{
    CalibrationSpec, ModelInfo, NoProgress, Pass, PassContext, PassPlan, PassReport, PassSpec,
    PlanContext, Progress, SideFiles,
};
use serde_json::{json, Value};

fn open(dir: &Path) -> (ModelConfig, TensorStore) {
    let c = Checkpoint::open(dir).expect("opens");
    (c.config, c.store)
}

fn settings(extra: Value) -> vib_prune::Config {
    let mut c = json!({ "target": 0.4, "steps": 6, "batch-size": 4, "checkpoint-every": 2 });
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    serde_json::from_value(c).expect("valid settings")
}

fn plan(
    pass: &VibPrune,
    dir: &Path,
    calibration: Option<&CalibrationSpec>,
    progress: &dyn Progress,
) -> compressor_passes::Result<PassPlan> {
    let (config, store) = open(dir);
    let info = ModelInfo::from_store(&config, &store);
    pass.plan(&PlanContext {
        config: &config,
        info: &info,
        store: &store,
        model_dir: dir,
        calibration,
        progress,
    })
}

fn run(
    pass: &VibPrune,
    dir: &Path,
    plan: &PassPlan,
) -> compressor_passes::Result<(ModelConfig, TensorStore, PassReport)> {
    let (mut config, mut store) = open(dir);
    let mut files = SideFiles::new(dir);
    let report = pass.run(&mut PassContext {
        config: &mut config,
        store: &mut store,
        files: &mut files,
        calibration: None,
        plan,
        progress: &NoProgress,
        seed: 0,
    })?;
    store.check(&config)?;
    Ok((config, store, report))
}

/// `plan` has a note containing `needle`.
fn assert_note(plan: &PassPlan, needle: &str) {
    assert!(
        plan.notes.iter().any(|n| n.contains(needle)),
        "no note with {needle:?}: {:?}",
        plan.notes
    );
}

fn plan_error(dir: &Path, extra: Value, calibration: Option<&CalibrationSpec>) -> String {
    let pass = VibPrune::with_cache(settings(extra), Cache::off());
    match plan(&pass, dir, calibration, &NoProgress) {
        Ok(_) => panic!("the plan should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn masks_at_mu_one_and_vanishing_sigma_reproduce_the_unpruned_outputs() {
    for name in ["tiny-bert-cls", "tiny-bert"] {
        let dir = fixture(name);
        let (config, store) = open(&dir);
        let pooling = Pooling::load(&dir).expect("pooling");
        let plain =
            Bert::<Cpu>::load(&store, &config, pooling, &Default::default()).expect("loads");
        let every = [
            Structure::Hidden,
            Structure::Heads,
            Structure::Neurons,
            Structure::Layers,
        ];
        let mut set = MaskSet::new(config.bert(), &every, 7);
        for v in &mut set.vibs {
            v.mu.iter_mut().for_each(|m| *m = 1.0);
            v.logd.iter_mut().for_each(|d| *d = -40.0);
        }
        let b = batch();
        let leaves = Leaves::<Cpu>::new(&set, &Default::default(), false);
        let masks = leaves.masks(&set, 2, b.batch_size, Some(&mut Rng::new(3)));
        let mut masked = plain.clone();
        masked.set_masks(Some(masks)).expect("masks fit");
        let (want, got) = if name == "tiny-bert-cls" {
            (
                plain.classify(&b).expect("logits"),
                masked.classify(&b).expect("logits"),
            )
        } else {
            (
                plain.embed(&b).expect("embeds"),
                masked.embed(&b).expect("embeds"),
            )
        };
        let d = max_diff(&want, &got);
        assert!(
            d <= 1e-5,
            "{name}: masked at mu 1, sigma 2e-9 differs by {d}"
        );
    }
}

#[test]
fn kl_and_expected_parameters_match_a_hand_computation() {
    let (config, _) = open(&fixture("tiny-bert"));
    let c = config.bert();
    let every = [
        Structure::Hidden,
        Structure::Heads,
        Structure::Neurons,
        Structure::Layers,
    ];
    let mut set = MaskSet::new(c, &every, 0);
    // mu = 1 everywhere; log D = -10 (keep-probability sigmoid(100) = 1), 0 (1/2) or 10 (sigmoid(-100) = 0).
    let (keep, half, drop) = (-10.0f32, 0.0f32, 10.0f32);
    for v in &mut set.vibs {
        v.mu.iter_mut().for_each(|m| *m = 1.0);
        let name = v.name();
        let n = v.logd.len();
        for (i, d) in v.logd.iter_mut().enumerate() {
            *d = match name.as_str() {
                // 16 dims at 1/2, 16 kept: H = 24.
                "hidden" => {
                    if i < 16 {
                        half
                    } else {
                        keep
                    }
                }
                // Layer 0: heads 1, 1, 1/2, 0 (2.5 heads); its attention kept; FFN at 1/2 with 32 of 64 neurons kept.
                "layer.0.heads" => [keep, keep, half, drop][i],
                "layer.0.attention" => keep,
                "layer.0.ffn" => half,
                "layer.0.neurons" => {
                    if i < 32 {
                        keep
                    } else {
                        drop
                    }
                }
                // Layer 1: attention gone, all heads kept; FFN kept with every neuron at 1/2.
                "layer.1.heads" => keep,
                "layer.1.attention" => drop,
                "layer.1.ffn" => keep,
                "layer.1.neurons" => half,
                other => panic!("unexpected mask {other} ({n} units)"),
            };
        }
    }
    let leaves = Leaves::<Cpu>::new(&set, &Default::default(), false);
    let value = |t: compressor_models::runtime::Tensor<Cpu, 1>| {
        f64::from(compressor_models::runtime::flat(t).expect("value")[0])
    };
    // Hand computation: H = 24; a head (qk = vo = 8) controls 32 H + 24, a neuron 2 H + 1; each layer keeps 6 H.
    let h = 24.0;
    let head = 32.0 * h + 24.0;
    let neuron = 2.0 * h + 1.0;
    let layer0 = 2.5 * head + 0.5 * 32.0 * neuron + 6.0 * h;
    let layer1 = 0.0 * 4.0 * head + 32.0 * neuron + 6.0 * h;
    let expected = value(leaves.expected_parameters(&set, c));
    assert!(
        (expected - (layer0 + layer1)).abs() < 0.05,
        "{expected} vs {}",
        layer0 + layer1
    );
    // KL: 1/2 log(1 + 1 / (D + 1e-8)) per unit, summed; the hidden mask's counts 30 times here.
    let unit = |d: f64| 0.5 * (1.0 + 1.0 / (d.exp() + 1e-8)).ln();
    let mut by_hand = 0.0;
    for v in &set.vibs {
        let w = if v.name() == "hidden" { 30.0 } else { 1.0 };
        by_hand += w * v.logd.iter().map(|&d| unit(f64::from(d))).sum::<f64>();
    }
    let weights = KlWeights {
        hidden: 30.0,
        heads: 1.0,
        neurons: 1.0,
        sublayers: 1.0,
    };
    let kl = value(leaves.kl(&set, &weights));
    assert!((kl - by_hand).abs() < 1e-3 * by_hand, "{kl} vs {by_hand}");
    // 16 hidden dims at log D = 0 give 1/2 log 2 each (times 30); 16 at -10 give 1/2 log(1 + e^10).
    let hidden = 30.0
        * (16.0 * 0.5 * (1.0 + 1.0 / (1.0 + 1e-8f64)).ln()
            + 16.0 * 0.5 * (1.0 + 1.0 / ((-10f64).exp() + 1e-8)).ln());
    assert!((set.vibs[0].kl() * 30.0 - hidden).abs() < 1e-6 * hidden);
    // With every unit kept the expectation is the encoder's parameter count exactly.
    for v in &mut set.vibs {
        v.logd.iter_mut().for_each(|d| *d = keep);
    }
    let full =
        value(Leaves::<Cpu>::new(&set, &Default::default(), false).expected_parameters(&set, c));
    assert_eq!(full, c.encoder_parameters() as f64);
}

/// Plan and run on `dir`; the pruned model's outputs against the hard-masked original's.
fn fold_matches_masked(
    dir: &Path,
    extra: Value,
    labels: bool,
) -> (PassPlan, PassReport, ModelConfig) {
    let calib = labelled_calibration(
        &tempfile::tempdir().expect("tmp").keep(),
        labels.then_some(0),
    );
    let pass = VibPrune::with_cache(settings(extra), Cache::off());
    let plan = plan(&pass, dir, Some(&calib), &NoProgress).expect("plans");
    let (masks, _, values) = pass.outcome().expect("trained");
    let (config0, mut store0) = open(dir);
    pass.write_trained_weights(&mut store0).expect("weights");
    let pooling = Pooling::load(dir).expect("pooling");
    let masked =
        vib_prune::hard_masked(&store0, &config0, pooling, &masks, &values).expect("masked");
    let (config, store, report) = run(&pass, dir, &plan).expect("runs");
    let pruned = Bert::<Cpu>::load(&store, &config, pooling, &Default::default()).expect("loads");
    let b = batch();
    let classifier = matches!(
        config0.bert().head,
        compressor_models::Head::SequenceClassification { .. }
    );
    let (want, got) = if classifier {
        (
            masked.classify(&b).expect("logits"),
            pruned.classify(&b).expect("logits"),
        )
    } else {
        (
            masked.embed(&b).expect("embeds"),
            pruned.embed(&b).expect("embeds"),
        )
    };
    let d = max_diff(&want, &got);
    assert!(d <= 1e-5, "folded and pruned vs hard-masked: {d}");
    (plan, report, config)
}

#[test]
fn folding_and_removing_computes_what_the_hard_masked_model_computes() {
    // Every structure on the classifier (cross-entropy on the labels), and the embedder by distillation.
    let (plan, report, config) = fold_matches_masked(&fixture("tiny-bert-cls"), json!({}), true);
    assert!(
        config.bert().hidden.is_some(),
        "hidden dimensions were pruned"
    );
    let removed = report.metrics["encoder_fraction_removed"]
        .as_f64()
        .expect("fraction");
    assert!((0.40..=0.41).contains(&removed), "removed {removed}");
    assert_eq!(report.decisions["vib"]["objective"], "task");
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("VIB masks trained for 6 steps")));
    let (_, report, _) = fold_matches_masked(
        &fixture("tiny-bert"),
        json!({ "structures": ["heads", "neurons", "layers"], "target": 0.3 }),
        false,
    );
    assert_eq!(report.decisions["vib"]["objective"], "distill");
    // Fast-VTrans trains the weights too: the folded weights are the trained ones.
    fold_matches_masked(
        &fixture("tiny-bert-cls"),
        json!({ "variant": "fast" }),
        true,
    );
}

#[test]
fn training_is_deterministic_and_meets_the_target() {
    let dir = fixture("tiny-bert-cls");
    let calib = labelled_calibration(&tempfile::tempdir().expect("tmp").keep(), Some(0));
    let outcome = || {
        let pass = VibPrune::with_cache(settings(json!({ "target": 0.5 })), Cache::off());
        plan(&pass, &dir, Some(&calib), &NoProgress).expect("plans");
        pass.outcome().expect("trained")
    };
    let (a, da, va) = outcome();
    let (b, db, vb) = outcome();
    assert_eq!(a, b);
    assert_eq!(da, db);
    assert_eq!(va, vb);
    let (config, _) = open(&dir);
    let mut after = config.clone();
    let kept: Vec<_> = da
        .layers
        .iter()
        .map(|k| compressor_models::arch::LayerShape {
            heads: k.heads.clone(),
            intermediate_size: k.neurons.len(),
            ..config.bert().layers[k.layer].clone()
        })
        .collect();
    after.set_layers(kept).expect("shapes");
    if let Some(h) = &da.hidden {
        after.set_hidden(h).expect("hidden");
    }
    let fraction =
        1.0 - after.bert().encoder_parameters() as f64 / config.bert().encoder_parameters() as f64;
    assert!((0.50..=0.52).contains(&fraction), "removed {fraction}");
}

/// Stops the plan (by panicking) when the training reports step `at`.
struct StopAt(usize);

impl Progress for StopAt {
    fn on_unit(&self, name: &str) {
        if name.starts_with(&format!("step {} ", self.0)) {
            panic!("killed at {name}");
        }
    }
}

#[test]
fn a_killed_run_resumes_from_its_checkpoint_to_the_same_masks() {
    let dir = fixture("tiny-bert-cls");
    let tmp = tempfile::tempdir().expect("tmp");
    let calib = labelled_calibration(tmp.path(), Some(0));
    let whole = VibPrune::with_cache(settings(json!({})), Cache::off());
    plan(&whole, &dir, Some(&calib), &NoProgress).expect("plans");
    let checkpoint = tmp.path().join("ckpt");
    let cfg = settings(json!({ "checkpoint": checkpoint }));
    let killed = VibPrune::with_cache(cfg.clone(), Cache::off());
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        plan(&killed, &dir, Some(&calib), &StopAt(5))
    }));
    assert!(stopped.is_err(), "the run was stopped at step 5");
    assert!(checkpoint.join("vib-prune.safetensors").is_file());
    let resumed = VibPrune::with_cache(cfg.clone(), Cache::off());
    let p = plan(&resumed, &dir, Some(&calib), &NoProgress).expect("resumes");
    assert_note(&p, "resumed at step 4");
    assert_eq!(
        resumed.outcome().expect("trained"),
        whole.outcome().expect("trained")
    );
    // The finished checkpoint is read back without training.
    let again = VibPrune::with_cache(cfg, Cache::off());
    let p = plan(&again, &dir, Some(&calib), &NoProgress).expect("plans");
    assert_note(&p, "read back from the checkpoint");
    // A checkpoint of other settings is refused, naming the file.
    let other = plan_error(
        &dir,
        json!({ "checkpoint": checkpoint, "target": 0.3 }),
        Some(&calib),
    );
    let file = checkpoint.join("vib-prune.safetensors");
    assert_eq!(
        other,
        format!(
            "`{}` is a checkpoint of another run (its settings differ from this one's)\nhint: remove it to start over, or set `checkpoint` to another folder",
            file.display()
        )
    );
    let (config, store) = open(&fixture("tiny-bert"));
    drop((config, store));
    let embedder = plan_error(
        &fixture("tiny-bert"),
        json!({ "checkpoint": checkpoint }),
        Some(&labelled_calibration(tmp.path(), None)),
    );
    assert!(
        embedder.contains("its model, data, settings differ"),
        "{embedder}"
    );
}

#[test]
fn bad_input_is_a_plan_error_naming_the_key() {
    let dir = fixture("tiny-bert-cls");
    let tmp = tempfile::tempdir().expect("tmp");
    let labelled = labelled_calibration(tmp.path(), Some(0));
    assert_eq!(
        plan_error(&dir, json!({ "structures": ["heads"], "target": 0.9 }), Some(&labelled)),
        "`target`: removes 15379 of 17088 encoder parameters, but masking `heads` can remove at most 8384 (49.1%)\nhint: lower the target or add structures (`hidden`, `heads`, `neurons`, `layers`)"
    );
    assert_eq!(
        plan_error(&dir, json!({}), None),
        "`vib-prune` needs calibration data, and the pipeline has no `[calibration]` section\nhint: add `[calibration]` with `data = \"texts.jsonl\"` (one JSON record per line with a `text` field)"
    );
    let unlabelled = labelled_calibration(tmp.path(), None);
    let err = plan_error(&dir, json!({ "loss": "task" }), Some(&unlabelled));
    assert!(err.starts_with("`label-field`: "), "{err}");
    assert!(err.contains("loss = \"task\""), "{err}");
    assert_eq!(
        plan_error(&fixture("tiny-bert"), json!({ "loss": "task" }), Some(&unlabelled)),
        "`loss`: \"task\" needs a classification head; this model has none\nhint: use loss = \"distill\" (distillation from the unpruned model)"
    );
    assert_eq!(
        plan_error(&dir, json!({ "target": 1.0 }), Some(&labelled)),
        "`target`: is 1, expected a fraction in (0, 1)"
    );
    assert_eq!(
        plan_error(&dir, json!({ "structures": [] }), Some(&labelled)),
        "`structures`: is empty: list any of `hidden`, `heads`, `neurons`, `layers`"
    );
    assert!(
        PassSpec::from_config("vib-prune", json!({ "target": 0.5, "varaint": "fast" })).is_err()
    );
}

#[test]
fn fast_vtrans_takes_the_full_schedule_on_its_fraction_of_the_records() {
    // 8 records in batches of 4, 3 epochs: 6 steps; Fast-VTrans keeps one batch (4 records) and still takes 6.
    let dir = fixture("tiny-bert-cls");
    let calib = labelled_calibration(&tempfile::tempdir().expect("tmp").keep(), Some(0));
    let pass = VibPrune::with_cache(
        settings(json!({ "variant": "fast", "steps": null, "epochs": 3 })),
        Cache::off(),
    );
    let p = plan(&pass, &dir, Some(&calib), &NoProgress).expect("plans");
    assert_note(&p, "VIB masks trained for 6 steps (fast, distill loss");
}
