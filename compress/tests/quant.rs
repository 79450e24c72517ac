//! Quantized artifacts end to end on the tiny seeded BERT: `blockwise-quant` writes compressed-tensors tensors and
//! `quantization_config`, the artifact reopens to exactly the values quantized, `export --format dense` decodes it,
//! runs are byte-identical, and artifacts whose parts disagree with their config fail to load with a clear error.

mod common;

use std::path::Path;

use common::{read_tree, stderr, Workspace};
use compressor_models::quant::{Encoding, QuantTensor, Strategy};
use compressor_models::{st, Checkpoint, DType, HostTensor};
use serde_json::Value;

const PIPELINE: &str = "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"blockwise-quant\"\nbits = 4\ngroup-size = 16\nembeddings = { word = 8 }\n\n[output]\ndir = \"out\"\n";

#[track_caller]
fn assert_ok(o: &std::process::Output) {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
}

fn quantized_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("pipeline.toml", PIPELINE);
    assert_ok(&ws.run(&["run", "pipeline.toml"]));
    ws
}

#[test]
fn blockwise_quant_writes_compressed_tensors_that_reopen_exactly() {
    let ws = quantized_workspace();
    let out = ws.join("out");
    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).expect("config"))
            .expect("json");
    let q = &config["quantization_config"];
    assert_eq!(q["quant_method"], "compressed-tensors");
    assert_eq!(q["format"], "pack-quantized");
    assert_eq!(
        q["dequantize"], true,
        "an embedding model asks transformers to decompress at load"
    );
    let groups = q["config_groups"].as_object().expect("groups");
    assert_eq!(groups.len(), 2, "8-bit embeddings and 4-bit linears");
    assert_eq!(groups["group_0"]["weights"]["num_bits"], 8);
    assert_eq!(
        groups["group_0"]["targets"],
        serde_json::json!(["embeddings.word_embeddings"])
    );
    assert_eq!(groups["group_1"]["weights"]["num_bits"], 4);
    assert_eq!(groups["group_1"]["weights"]["group_size"], 16);
    assert_eq!(
        groups["group_1"]["targets"]
            .as_array()
            .expect("targets")
            .len(),
        12
    );

    let file = st::SafetensorsFile::open(&out.join("model.safetensors")).expect("opens");
    let info = |n: &str| {
        let t = &file.tensors[n];
        (t.dtype, t.shape.clone())
    };
    assert_eq!(
        info("encoder.layer.0.intermediate.dense.weight_packed"),
        (DType::I32, vec![32, 2])
    );
    assert_eq!(
        info("encoder.layer.0.intermediate.dense.weight_scale"),
        (DType::F32, vec![32, 1])
    );
    assert_eq!(
        info("encoder.layer.0.intermediate.dense.weight_shape"),
        (DType::I64, vec![2])
    );
    assert_eq!(
        info("encoder.layer.0.output.dense.weight_packed"),
        (DType::I32, vec![16, 4])
    );
    assert_eq!(
        info("embeddings.word_embeddings.weight_packed"),
        (DType::I32, vec![64, 4])
    );
    assert!(!file
        .tensors
        .contains_key("encoder.layer.0.output.dense.weight"));
    assert_eq!(
        info("encoder.layer.0.output.dense.bias"),
        (DType::F32, vec![16])
    );

    // The artifact decodes to exactly what the format layer encodes from the original weights.
    let original = Checkpoint::open(&ws.join("model")).expect("original");
    let reopened = Checkpoint::open(&out).expect("artifact opens");
    for (name, bits, shape) in [
        ("encoder.layer.1.attention.self.key.weight", 4, [16, 16]),
        ("encoder.layer.0.output.dense.weight", 4, [16, 32]),
        ("embeddings.word_embeddings.weight", 8, [64, 16]),
    ] {
        let w = original.store.get_f32(name, &shape).expect("reads");
        let expected = QuantTensor::quantize(
            &w,
            shape[0],
            shape[1],
            Encoding::symmetric(bits, Strategy::Group { size: 16 }),
        )
        .expect("fits")
        .dequantize();
        assert_eq!(
            reopened.store.get_f32(name, &shape).expect("decodes"),
            expected,
            "{name}"
        );
        assert_eq!(reopened.store.encoding(name).map(|e| e.bits), Some(bits));
    }

    // Same inputs, same bytes.
    let again = ws.run(&["run", "pipeline.toml", "--output", "out2"]);
    assert_ok(&again);
    assert_eq!(read_tree(&out), read_tree(&ws.join("out2")));

    // Casting the artifact to f16 leaves the integer codes alone and casts the rest.
    ws.write(
        "cast.toml",
        "[model]\npath = \"out\"\n\n[[pass]]\nkind = \"cast\"\ndtype = \"f16\"\n\n[output]\ndir = \"out-f16\"\n",
    );
    assert_ok(&ws.run(&["run", "cast.toml"]));
    let cast = Checkpoint::open(&ws.join("out-f16")).expect("opens");
    let name = "encoder.layer.1.attention.self.key.weight";
    assert_eq!(cast.store.get_quant(name), reopened.store.get_quant(name));
    assert_eq!(
        cast.store
            .info("encoder.layer.1.attention.self.key.bias")
            .map(|i| i.0),
        Some(DType::F16)
    );
}

#[test]
fn export_dense_decodes_every_quantized_tensor() {
    let ws = quantized_workspace();
    let o = ws.run(&["export", "out", "--output", "dense"]);
    assert_ok(&o);
    assert_eq!(
        stderr(&o).lines().last(),
        Some("wrote `dense`: 13 tensors decoded to dense, 25,536 tensor bytes"),
        "every parameter as f32 ({} parameters) plus the 256-byte position_ids buffer",
        common::TINY_PARAMETERS
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(ws.join("dense/config.json")).expect("config"))
            .expect("json");
    assert!(config.get("quantization_config").is_none());
    let q = Checkpoint::open(&ws.join("out")).expect("artifact");
    let d = Checkpoint::open(&ws.join("dense")).expect("dense");
    for name in q.store.names() {
        assert!(d.store.encoding(name).is_none());
        let (_, shape) = q.store.info(name).expect("info");
        if q.store.info(name).is_some_and(|(dt, _)| dt.is_float()) {
            assert_eq!(
                q.store.get_f32(name, &shape).expect("q"),
                d.store.get_f32(name, &shape).expect("d"),
                "{name}"
            );
        }
    }
    let refused = ws.run(&["export", "out", "--output", "dense"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("already exists"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn artifacts_whose_parts_disagree_with_their_config_do_not_load() {
    let ws = quantized_workspace();
    let config_path = ws.join("out/config.json");
    let text = std::fs::read_to_string(&config_path).expect("config");
    // Claim 8 bits for the 4-bit linears: their packed words are now too few.
    std::fs::write(
        &config_path,
        text.replacen("\"num_bits\": 4", "\"num_bits\": 8", 1),
    )
    .expect("write");
    let o = ws.run(&["inspect", "out"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("quantized tensor `encoder.layer.0.attention.output.dense.weight`: `weight_packed` has shape [16, 2], expected [16, 4] (config group `group_1`: 8 bits, group 16)"),
        "{err}"
    );
    assert!(
        err.contains("hint: the folder was not written by a compressed-tensors writer"),
        "{err}"
    );

    // No quantization_config at all.
    let mut value: Value = serde_json::from_str(&text).expect("json");
    value
        .as_object_mut()
        .expect("object")
        .remove("quantization_config");
    std::fs::write(&config_path, serde_json::to_string(&value).expect("json")).expect("write");
    let err = stderr(&ws.run(&["inspect", "out"]));
    assert!(
        err.contains("the weights are quantized but config.json has no compressed-tensors `quantization_config`"),
        "{err}"
    );
}

/// Rewrite the artifact `out`'s model.safetensors, passing every tensor through `edit`.
fn rewrite(ws: &Workspace, edit: impl Fn(&str, HostTensor) -> HostTensor) {
    let path = ws.join("out/model.safetensors");
    let file = st::SafetensorsFile::open(&path).expect("open");
    let tensors: Vec<(String, HostTensor)> = file
        .tensors
        .keys()
        .map(|n| {
            let t = file.tensor(n).expect("tensor");
            let t =
                HostTensor::from_bytes(t.dtype, t.shape.clone(), t.bytes().to_vec()).expect("own");
            (n.clone(), edit(n, t))
        })
        .collect();
    let metadata = file.metadata.clone();
    drop(file);
    st::write(&path, &tensors, &metadata).expect("write");
}

const QUERY: &str = "encoder.layer.0.attention.self.query";

/// A change to one tensor of an artifact.
type Edit = dyn Fn(&str, HostTensor) -> HostTensor;

#[test]
fn issue_13_bad_scales_and_mis_shaped_parts_are_named() {
    let scale = |value: f32| {
        move |name: &str, t: HostTensor| {
            if name != format!("{QUERY}.weight_scale") {
                return t;
            }
            let mut v = t.to_f32(name).expect("f32");
            v[3] = value;
            HostTensor::from_f32(t.shape.clone(), &v, t.dtype).expect("tensor")
        }
    };
    let reshape = |part: &'static str, shape: Vec<usize>| {
        move |name: &str, t: HostTensor| {
            if name != format!("{QUERY}.{part}") {
                return t;
            }
            HostTensor::from_bytes(t.dtype, shape.clone(), t.bytes().to_vec()).expect("tensor")
        }
    };
    let cases: Vec<(Box<Edit>, &str)> = vec![
        (Box::new(scale(0.0)), "`weight_scale` holds a non-positive scale 0 at flat index 3; every scale must be finite and positive"),
        (Box::new(scale(-0.5)), "`weight_scale` holds a non-positive scale -0.5 at flat index 3; every scale must be finite and positive"),
        (Box::new(scale(f32::NAN)), "`weight_scale` holds a non-finite scale NaN at flat index 3; every scale must be finite and positive"),
        (Box::new(reshape("weight_scale", vec![1, 16])), "`weight_scale` has shape [1, 16], expected [16, 1] (config group `group_1`: 4 bits, group 16)"),
        (Box::new(reshape("weight_packed", vec![32, 1])), "`weight_packed` has shape [32, 1], expected [16, 2] (config group `group_1`: 4 bits, group 16)"),
    ];
    for (edit, problem) in cases {
        let ws = quantized_workspace();
        rewrite(&ws, edit);
        let expected = format!("quantized tensor `{QUERY}.weight`: {problem}");
        for args in [
            &["inspect", "out"][..],
            &["export", "out", "--output", "dense"],
        ] {
            let o = ws.run(args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(&expected), "{args:?}: {expected}\nin: {err}");
        }
        assert!(!ws.join("dense").exists());
    }
}

#[test]
fn issue_13_bits_per_weight_counts_the_stored_codes_and_scales() {
    let ws = quantized_workspace();
    let dense = compressor_eval::suite::summarize("model", &ws.join("model")).expect("model");
    let quant = compressor_eval::suite::summarize("out", &ws.join("out")).expect("artifact");
    assert_eq!(dense.bits_per_weight, 32.0);
    // 4-bit linears with one f16 scale per 16 weights (5 bits), 8-bit word embeddings, the rest f32.
    assert!(
        quant.bits_per_weight > 4.0 && quant.bits_per_weight < 16.0,
        "{}",
        quant.bits_per_weight
    );
}

#[test]
fn bad_settings_are_plan_errors_and_write_nothing() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.toml",
        &PIPELINE.replace("group-size = 16", "group-size = 5"),
    );
    let o = ws.run(&["run", "pipeline.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(
            "`pass[0]` (`blockwise-quant`): `group-size`: the encoding does not fit 13 tensor(s):"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "group size 5 does not divide the input dimension 16; valid sizes near it: 2, 4, 8"
        ),
        "{err}"
    );
    assert_eq!(ws.entries(), ["model", "pipeline.toml"]);

    ws.write(
        "pipeline.toml",
        &PIPELINE.replace(
            "embeddings = { word = 8 }",
            "activations = { bits = 8, block-size = 16 }",
        ),
    );
    let err = stderr(&ws.run(&["run", "pipeline.toml"]));
    assert!(
        err.contains(
            "`activations` needs calibration data, and the pipeline has no `[calibration]` section"
        ),
        "{err}"
    );
}

#[test]
fn targets_carry_the_model_prefix_of_classifiers() {
    // BertForSequenceClassification names its modules `bert.encoder...`: compressed-tensors targets must too.
    let ws = Workspace::new();
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/tests/fixtures/tiny-bert-cls"
    );
    ws.write(
        "cls.toml",
        &format!("[model]\npath = \"{model}\"\n\n[[pass]]\nkind = \"blockwise-quant\"\nbits = 8\ngranularity = \"channel\"\n\n[output]\ndir = \"cls\"\n"),
    );
    assert_ok(&ws.run(&["run", "cls.toml"]));
    let config: Value =
        serde_json::from_slice(&std::fs::read(ws.join("cls/config.json")).expect("config"))
            .expect("json");
    let q = &config["quantization_config"];
    assert_eq!(
        q["dequantize"], true,
        "transformers 5.x leaves classifier weights packed without it"
    );
    let targets = q["config_groups"]["group_0"]["targets"]
        .as_array()
        .expect("targets");
    assert_eq!(targets.len(), 12);
    assert!(
        targets.iter().all(|t| t
            .as_str()
            .is_some_and(|t| t.starts_with("bert.encoder.layer."))),
        "{targets:?}"
    );
    let file = st::SafetensorsFile::open(&ws.join("cls/model.safetensors")).expect("opens");
    assert!(file
        .tensors
        .contains_key("bert.encoder.layer.0.attention.self.query.weight_packed"));
    assert!(
        file.tensors.contains_key("classifier.weight"),
        "the head stays dense"
    );
    let reopened = Checkpoint::open(&ws.join("cls")).expect("reopens");
    assert_eq!(
        reopened
            .store
            .encoding("encoder.layer.1.output.dense.weight")
            .map(|e| e.bits),
        Some(8)
    );
}

#[test]
fn hessian_mp_with_qat_writes_the_allocation_plot_and_a_loadable_classifier() {
    let ws = Workspace::new();
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/tests/fixtures/tiny-bert-cls"
    );
    let lines: String = [
        ("the cat sat on the mat", 1),
        ("a good movie", 2),
        ("i hate this film", 0),
        ("love it", 2),
    ]
    .iter()
    .map(|(t, y)| format!("{}\n", serde_json::json!({ "text": t, "label": y })))
    .collect();
    ws.write("calib.jsonl", &lines);
    ws.write(
        "mp.toml",
        &format!("[model]\npath = \"{model}\"\n\n[calibration]\ndata = \"calib.jsonl\"\nfield = \"text\"\nsamples = 4\nmax-length = 32\n\n[[pass]]\nkind = \"hessian-mp\"\nbits = [2, 4]\naverage-bits = 3.0\ngroup-size = 16\nembeddings = {{}}\nsensitivity = {{ runs = 2, max-iterations = 4, batch-size = 4 }}\nqat = {{ steps = 3, lr = 1e-3, batch-size = 4 }}\n\n[output]\ndir = \"mp\"\n"),
    );
    assert_ok(&ws.run(&["run", "mp.toml"]));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(ws.join("mp/manifest.json")).expect("manifest"))
            .expect("json");
    let plot = manifest["output"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("pass-") && p.ends_with("-allocation.svg"))
        })
        .expect("the allocation plot is listed");
    let svg = std::fs::read_to_string(ws.join("mp").join(plot["path"].as_str().expect("path")))
        .expect("plot written");
    assert_eq!(
        svg.matches("<title>").count(),
        2,
        "one bar per block (an encoder layer)"
    );
    let pass = &manifest["passes"][0];
    assert_eq!(
        pass["metrics"]["qat"]["losses"].as_array().map(Vec::len),
        Some(3)
    );
    // The trained head is stored dense, changed; the blocks reopen at their chosen widths.
    let before = Checkpoint::open(Path::new(model)).expect("opens");
    let after = Checkpoint::open(&ws.join("mp")).expect("reopens");
    let bias = |c: &Checkpoint| c.store.get_f32("classifier.bias", &[3]).expect("bias");
    assert_ne!(bias(&before), bias(&after));
    for (name, bits) in pass["decisions"]["bits"].as_object().expect("bits") {
        assert_eq!(
            after.store.encoding(name).map(|e| u64::from(e.bits)),
            bits.as_u64(),
            "{name}"
        );
    }
}
