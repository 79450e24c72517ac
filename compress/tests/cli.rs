//! End-to-end runs of the binary on a tiny seeded BERT: the artifact, determinism, `--force`, `plan`, `inspect`,
//! `passes`, and (when it has been fetched) the real all-MiniLM-L6-v2.

mod common;

use std::path::Path;

use common::{read_tree, stderr, stdout, Workspace, TINY_PARAMETERS};
use compressor_models::{Checkpoint, DType};
use serde_json::Value;

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

#[track_caller]
fn assert_ok(o: &std::process::Output) {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
}

/// Float tensors of the tiny model hold all but the position_ids (I64, 1 x 32).
const TINY_FLOAT_BYTES: usize = TINY_PARAMETERS * 4;
const TINY_BUFFER_BYTES: usize = 32 * 8;

#[test]
fn cast_f16_writes_a_complete_self_describing_artifact() {
    let ws = Workspace::new();
    let out = ws.run(&["run", "pipeline.toml"]);
    assert_ok(&out);
    // Every run ends with the summary: size before and after, wall time, where the output is and what loads it.
    assert_eq!(
        common::stderr_masked(&out),
        format!(
            "pass[0] cast: 39 tensors changed, {} -> {} bytes\n\
             \n\
             summary\n\
             \x20                    original  compressed  change\n\
             \x20 model.safetensors   29.6 kB     16.9 kB  1.75x smaller\n\
             \x20 wall time          <time>\n\
             \x20 output             out/ (9 files; manifest.json says what was done to every tensor)\n\
             \x20 loads in           any runtime, e.g. SentenceTransformer(\"out\"); ours: compressor embed out --data FILE\n",
            common_thousands(TINY_FLOAT_BYTES),
            common_thousands(TINY_FLOAT_BYTES / 2)
        )
    );
    assert!(stdout(&out).is_empty());
    // The wall-time line also gives the run's peak resident memory (Linux: VmHWM).
    if cfg!(target_os = "linux") {
        let line = stderr(&out)
            .lines()
            .find(|l| l.starts_with("  wall time"))
            .map(str::to_string)
            .unwrap_or_default();
        assert!(
            line.contains(" (peak memory ") && line.ends_with("B)"),
            "{line}"
        );
    }
    let files: Vec<String> = read_tree(&ws.join("out")).into_keys().collect();
    assert_eq!(
        files,
        [
            "1_Pooling/config.json",
            "config.json",
            "manifest.json",
            "model.safetensors",
            "modules.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
        ]
    );
    for f in [
        "vocab.txt",
        "tokenizer.json",
        "1_Pooling/config.json",
        "modules.json",
    ] {
        assert_eq!(
            std::fs::read(ws.join("out").join(f)).ok(),
            std::fs::read(ws.join("model").join(f)).ok(),
            "{f}"
        );
    }

    // The artifact loads as a checkpoint; every float parameter is the f16 rounding of the input.
    let input = Checkpoint::open(&ws.join("model")).expect("input opens");
    let output = Checkpoint::open(&ws.join("out")).expect("artifact opens");
    assert_eq!(output.parameter_count(), TINY_PARAMETERS);
    let names: Vec<&str> = input.store.names().collect();
    assert_eq!(output.store.names().collect::<Vec<_>>(), names);
    for name in names {
        let (a, b) = (
            input.store.get(name).expect("in"),
            output.store.get(name).expect("out"),
        );
        if a.dtype == DType::I64 {
            assert_eq!((b.dtype, b.bytes()), (DType::I64, a.bytes()), "{name}");
            continue;
        }
        assert_eq!((b.dtype, &b.shape), (DType::F16, &a.shape), "{name}");
        let expected: Vec<f32> = a
            .to_f32(name)
            .expect("f32")
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect();
        assert_eq!(b.to_f32(name).expect("f32"), expected, "{name}");
    }
    assert_eq!(
        output.store.total_bytes(),
        TINY_FLOAT_BYTES / 2 + TINY_BUFFER_BYTES
    );

    // config.json: the input's keys in order, plus torch_dtype.
    let config = std::fs::read_to_string(ws.join("out/config.json")).expect("config");
    assert!(
        config.starts_with(
            "{\n  \"architectures\": [\n    \"BertModel\"\n  ],\n  \"model_type\": \"bert\",\n"
        ),
        "{config}"
    );
    assert!(
        config.ends_with("  \"pad_token_id\": 0,\n  \"torch_dtype\": \"float16\"\n}\n"),
        "{config}"
    );

    // manifest.json
    let manifest = json(&std::fs::read(ws.join("out/manifest.json")).expect("manifest"));
    let text = serde_json::to_string(&manifest).expect("text");
    assert!(
        !text.contains(&ws.path().display().to_string()),
        "absolute path in manifest"
    );
    assert_eq!(manifest["schema_version"], 1);
    assert_eq!(manifest["tool"]["name"], "compressor");
    assert_eq!(manifest["tool"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest["input"]["parameters"], TINY_PARAMETERS);
    let input_files: Vec<&str> = manifest["input"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        input_files,
        [
            "1_Pooling/config.json",
            "config.json",
            "model.safetensors",
            "modules.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
        ]
    );
    for f in manifest["input"]["files"].as_array().expect("files") {
        let bytes = std::fs::read(ws.join("model").join(f["path"].as_str().expect("path")))
            .expect("input file");
        assert_eq!(f["sha256"], sha256(&bytes));
        assert_eq!(f["bytes"], bytes.len());
    }
    assert_eq!(
        manifest["pipeline"],
        serde_json::json!({
            "model": { "path": "model" },
            "pass": [{ "kind": "cast", "dtype": "f16", "select": { "kinds": ["weight", "bias"] } }],
        })
    );
    let pass = &manifest["passes"][0];
    assert_eq!(
        (
            pass["index"].as_u64(),
            pass["kind"].as_str(),
            pass["phase"].as_str()
        ),
        (Some(0), Some("cast"), Some("quantize"))
    );
    assert_eq!(pass["changed"].as_array().expect("changed").len(), 39);
    assert_eq!(pass["decisions"]["dtype"], "F16");
    assert_eq!(pass["metrics"]["bytes_before"], TINY_FLOAT_BYTES);
    assert_eq!(pass["metrics"]["bytes_after"], TINY_FLOAT_BYTES / 2);
    assert!(pass["metrics"]["max_abs_error"].as_f64().expect("error") < 1e-3);
    for f in manifest["output"]["files"].as_array().expect("files") {
        let bytes = std::fs::read(ws.join("out").join(f["path"].as_str().expect("path")))
            .expect("output file");
        assert_eq!(f["sha256"], sha256(&bytes), "{f}");
    }
    let tensors = manifest["output"]["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), 40);
    for t in tensors {
        let name = t["name"].as_str().expect("name");
        let got = output.store.get(name).expect("tensor");
        assert_eq!(t["dtype"], got.dtype.as_str());
        assert_eq!(t["shape"], serde_json::json!(got.shape));
        assert_eq!(t["bytes"], got.nbytes());
        assert_eq!(t["sha256"], sha256(got.bytes()), "{name}");
    }
    assert_eq!(
        manifest["output"]["tensor_bytes"],
        TINY_FLOAT_BYTES / 2 + TINY_BUFFER_BYTES
    );
}

fn sha256(bytes: &[u8]) -> String {
    compressor::artifact::sha256_hex(bytes)
}

fn common_thousands(n: usize) -> String {
    compressor::human::thousands(n)
}

#[test]
fn the_same_run_gives_byte_identical_files() {
    let ws = Workspace::new();
    assert_ok(&ws.run(&["run", "pipeline.toml"]));
    assert_ok(&ws.run(&["run", "pipeline.toml", "--output", "again"]));
    let first = read_tree(&ws.join("out"));
    assert_eq!(first, read_tree(&ws.join("again")));
    assert_ok(&ws.run(&["run", "pipeline.toml", "--force"]));
    assert_eq!(first, read_tree(&ws.join("out")));
    assert_eq!(ws.entries(), ["again", "model", "out", "pipeline.toml"]);
}

#[test]
fn force_replaces_an_artifact_only_once_the_new_one_is_complete() {
    let ws = Workspace::new();
    assert_ok(&ws.run(&["run", "pipeline.toml"]));
    ws.write(
        "pipeline.toml",
        &common::PIPELINE.replace("\"f16\"", "\"bf16\""),
    );
    let out = ws.run(&["run", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let ckpt = Checkpoint::open(&ws.join("out")).expect("old artifact intact");
    assert_eq!(
        ckpt.store.info("pooler.dense.weight").expect("tensor").0,
        DType::F16
    );
    drop(ckpt);
    assert_ok(&ws.run(&["run", "pipeline.toml", "--force"]));
    let ckpt = Checkpoint::open(&ws.join("out")).expect("new artifact");
    assert_eq!(
        ckpt.store.info("pooler.dense.weight").expect("tensor").0,
        DType::BF16
    );
    let config = std::fs::read_to_string(ws.join("out/config.json")).expect("config");
    assert!(config.contains("\"torch_dtype\": \"bfloat16\""));
    assert_eq!(ws.entries(), ["model", "out", "pipeline.toml"]);
}

#[test]
fn a_pipeline_without_passes_copies_the_model() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.toml",
        "[model]\npath = \"model\"\n\n[output]\ndir = \"out\"\n",
    );
    assert_ok(&ws.run(&["run", "pipeline.toml"]));
    // The input was written by the same deterministic writer, so the weights come back byte for byte.
    assert_eq!(
        std::fs::read(ws.join("out/model.safetensors")).expect("out"),
        std::fs::read(ws.join("model/model.safetensors")).expect("in")
    );
}

#[test]
fn cast_a_selection_then_back() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.toml",
        "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"cast\"\ndtype = \"bf16\"\nselect = { roles = [\"attn.*\", \"ffn.*\"], kinds = [\"weight\"], layers = [1] }\n\n[[pass]]\nkind = \"cast\"\ndtype = \"f32\"\nselect = { names = [\"encoder.layer.1.attention.*\"] }\n\n[output]\ndir = \"out\"\n",
    );
    let out = ws.run(&["run", "pipeline.toml"]);
    assert_ok(&out);
    let err = common::stderr_masked(&out);
    assert!(
        err.starts_with("pass[0] cast: 6 tensors changed, 8,192 -> 4,096 bytes\npass[1] cast: 4 tensors changed, 2,048 -> 4,096 bytes\n\nsummary\n"),
        "{err}"
    );
    assert!(
        err.contains("\n  model.safetensors   29.6 kB     27.5 kB  1.07x smaller\n"),
        "{err}"
    );
    let ckpt = Checkpoint::open(&ws.join("out")).expect("artifact");
    let dtype = |n: &str| ckpt.store.info(n).expect("tensor").0;
    assert_eq!(
        dtype("encoder.layer.1.intermediate.dense.weight"),
        DType::BF16
    );
    assert_eq!(
        dtype("encoder.layer.1.attention.self.query.weight"),
        DType::F32
    );
    assert_eq!(
        dtype("encoder.layer.0.attention.self.query.weight"),
        DType::F32
    );
    let config = std::fs::read_to_string(ws.join("out/config.json")).expect("config");
    assert!(
        !config.contains("torch_dtype"),
        "mixed dtypes leave torch_dtype alone"
    );
}

#[test]
fn plan_shows_the_changes_and_the_estimate_without_writing() {
    let ws = Workspace::new();
    let out = ws.run(&["plan", "pipeline.toml"]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "pipeline  pipeline.toml\n\
         model     model: BertModel (`bert`), 2 layers, hidden 16, 2 heads, 6,320 parameters\n\
         input     40 tensors, 25,536 bytes (25.5 kB)\n\
         output    out (safetensors)\n\
         \n\
         pass[0]  cast (quantize): 39 tensors F32 -> F16, 25,280 -> 12,640 bytes\n\
         \n\
         estimated output: 40 tensors, 12,896 bytes (12.9 kB), 50.5% of the input\n\
         \n\
         resolved pipeline:\n\
         \n\
         [model]\n\
         path = \"model\"\n\
         \n\
         [[pass]]\n\
         kind = \"cast\"\n\
         dtype = \"f16\"\n\
         \n\
         [pass.select]\n\
         kinds = [\"weight\", \"bias\"]\n\
         \n\
         [output]\n\
         dir = \"out\"\n\
         format = \"safetensors\"\n"
    );
    assert!(stderr(&out).is_empty());
    assert_eq!(ws.entries(), ["model", "pipeline.toml"]);

    // The resolved pipeline parses back and plans the same.
    let resolved = stdout(&out)
        .split_once("resolved pipeline:\n\n")
        .expect("section")
        .1
        .to_string();
    ws.write("resolved.toml", &resolved);
    let again = ws.run(&["plan", "resolved.toml"]);
    assert_eq!(
        stdout(&again).replace("resolved.toml", "pipeline.toml"),
        stdout(&out)
    );

    let out = ws.run(&["plan", "pipeline.toml", "--json"]);
    assert_ok(&out);
    let plan = json(&out.stdout);
    assert_eq!(plan["model"]["parameters"], TINY_PARAMETERS);
    assert_eq!(
        plan["passes"][0]["changes"]
            .as_array()
            .expect("changes")
            .len(),
        39
    );
    assert_eq!(plan["passes"][0]["changes"][0]["dtype_before"], "F32");
    assert_eq!(
        plan["estimate"]["bytes"],
        TINY_FLOAT_BYTES / 2 + TINY_BUFFER_BYTES
    );
    assert_eq!(plan["output"]["exists"], false);

    // An existing output is a note for `plan`.
    assert_ok(&ws.run(&["run", "pipeline.toml"]));
    let out = ws.run(&["plan", "pipeline.toml"]);
    assert_ok(&out);
    assert!(stdout(&out)
        .contains("\nnote: output folder `out` exists; `run` needs `--force` to replace it\n"));
}

#[test]
fn inspect_reports_the_model_and_our_artifacts() {
    let ws = Workspace::new();
    let out = ws.run(&["inspect", "model"]);
    assert_ok(&out);
    let text = stdout(&out);
    assert_eq!(
        text,
        "path          model\n\
         architecture  BertModel (model_type `bert`)\n\
         shape         2 layers, hidden 16, 2 heads, intermediate 32\n\
         vocabulary    64 tokens, 32 positions, 2 token types\n\
         parameters    6,320\n\
         size          25,536 bytes (25.5 kB) in 40 tensors\n\
         prefix        (none)\n\
         pooling       mean\n\
         \n\
         name                                               role             dtype  shape      bytes\n\
         embeddings.LayerNorm.bias                          norm             F32    [16]          64\n\
         embeddings.LayerNorm.weight                        norm             F32    [16]          64\n\
         embeddings.position_embeddings.weight              embed.positions  F32    [32, 16]   2,048\n\
         embeddings.position_ids                            buffer           I64    [1, 32]      256\n\
         embeddings.token_type_embeddings.weight            embed.types      F32    [2, 16]      128\n\
         embeddings.word_embeddings.weight                  embed.tokens     F32    [64, 16]   4,096\n\
         encoder.layer.0.attention.output.LayerNorm.bias    norm             F32    [16]          64\n\
         encoder.layer.0.attention.output.LayerNorm.weight  norm             F32    [16]          64\n\
         encoder.layer.0.attention.output.dense.bias        attn.out         F32    [16]          64\n\
         encoder.layer.0.attention.output.dense.weight      attn.out         F32    [16, 16]   1,024\n\
         encoder.layer.0.attention.self.key.bias            attn.k           F32    [16]          64\n\
         encoder.layer.0.attention.self.key.weight          attn.k           F32    [16, 16]   1,024\n\
         encoder.layer.0.attention.self.query.bias          attn.q           F32    [16]          64\n\
         encoder.layer.0.attention.self.query.weight        attn.q           F32    [16, 16]   1,024\n\
         encoder.layer.0.attention.self.value.bias          attn.v           F32    [16]          64\n\
         encoder.layer.0.attention.self.value.weight        attn.v           F32    [16, 16]   1,024\n\
         encoder.layer.0.intermediate.dense.bias            ffn.up           F32    [32]         128\n\
         encoder.layer.0.intermediate.dense.weight          ffn.up           F32    [32, 16]   2,048\n\
         encoder.layer.0.output.LayerNorm.bias              norm             F32    [16]          64\n\
         encoder.layer.0.output.LayerNorm.weight            norm             F32    [16]          64\n\
         encoder.layer.0.output.dense.bias                  ffn.down         F32    [16]          64\n\
         encoder.layer.0.output.dense.weight                ffn.down         F32    [16, 32]   2,048\n\
         encoder.layer.1.attention.output.LayerNorm.bias    norm             F32    [16]          64\n\
         encoder.layer.1.attention.output.LayerNorm.weight  norm             F32    [16]          64\n\
         encoder.layer.1.attention.output.dense.bias        attn.out         F32    [16]          64\n\
         encoder.layer.1.attention.output.dense.weight      attn.out         F32    [16, 16]   1,024\n\
         encoder.layer.1.attention.self.key.bias            attn.k           F32    [16]          64\n\
         encoder.layer.1.attention.self.key.weight          attn.k           F32    [16, 16]   1,024\n\
         encoder.layer.1.attention.self.query.bias          attn.q           F32    [16]          64\n\
         encoder.layer.1.attention.self.query.weight        attn.q           F32    [16, 16]   1,024\n\
         encoder.layer.1.attention.self.value.bias          attn.v           F32    [16]          64\n\
         encoder.layer.1.attention.self.value.weight        attn.v           F32    [16, 16]   1,024\n\
         encoder.layer.1.intermediate.dense.bias            ffn.up           F32    [32]         128\n\
         encoder.layer.1.intermediate.dense.weight          ffn.up           F32    [32, 16]   2,048\n\
         encoder.layer.1.output.LayerNorm.bias              norm             F32    [16]          64\n\
         encoder.layer.1.output.LayerNorm.weight            norm             F32    [16]          64\n\
         encoder.layer.1.output.dense.bias                  ffn.down         F32    [16]          64\n\
         encoder.layer.1.output.dense.weight                ffn.down         F32    [16, 32]   2,048\n\
         pooler.dense.bias                                  pooler           F32    [16]          64\n\
         pooler.dense.weight                                pooler           F32    [16, 16]   1,024\n\
         total                                                                                25,536\n"
    );
    let report = json(&ws.run(&["inspect", "model", "--json"]).stdout);
    assert_eq!(report["parameters"], TINY_PARAMETERS);
    assert_eq!(report["layers"], 2);
    assert_eq!(report["tensors"].as_array().expect("tensors").len(), 40);
    assert_eq!(report["artifact"], Value::Null);

    assert_ok(&ws.run(&["run", "pipeline.toml"]));
    let text = stdout(&ws.run(&["inspect", "out"]));
    assert!(
        text.contains(&format!(
            "\nartifact      written by compressor {} (manifest schema 1)\npasses        cast (39 tensors to F16)\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    let report = json(&ws.run(&["inspect", "out", "--json"]).stdout);
    assert_eq!(report["artifact"]["passes"][0]["kind"], "cast");
    assert_eq!(
        report["total_bytes"],
        TINY_FLOAT_BYTES / 2 + TINY_BUFFER_BYTES
    );
}

#[test]
fn passes_lists_every_kind() {
    let out = common::compressor_in(Path::new("."), &["passes"]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "cast             quantize   store selected float tensors as f16, bf16 or f32 (one read of each selected tensor; no calibration data)\n\
         blockwise-quant  quantize   BCT: blockwise integer weights and embeddings (compressed-tensors), optional static int activations and GPTQ rounding (one read of each selected tensor; activations or GPTQ: one forward pass over the calibration data)\n\
         hessian-mp       quantize   Q-BERT: Hessian sensitivity per block, bits per block within a budget, group-wise integer weights, optional QAT (blocks x runs x iterations Hessian-vector products (each about 4 forward passes from the block's layer on), cached; optional QAT: steps x a forward and backward pass)\n\
         prune            structure  structured pruning of heads, FFN neurons and whole layers by weight magnitude or activation importance, physically removed (reads the encoder weights at plan time; activation importance and drop-layers: one forward pass over the calibration data)\n\
         qa-svd           structure  UniQL: FFN neurons sorted by ridge leverage, query/key dims by output moments, value/output by quantization-aware SVD, cut per layer by block influence (one forward pass over the calibration data (input moments of every Linear, cached); eigendecompositions and per-head SVDs in f64)\n\
         fisher-prune     structure  GAPrune: unstructured or 2:4 pruning of FFN weights by domain alignment importance (general and domain Fisher, gradient alignment), stored sparse (reads the selected weights at plan time; one backward pass per micro-batch of triplets of the general and the domain set, cached; score = \"magnitude\" needs no data)\n\
         vib-prune        structure  VTrans: variational-information-bottleneck masks on hidden dimensions, heads, FFN neurons and sublayers, trained to a parameter target, folded and physically removed (trains the masks at plan time (Faster: forward and backward per step with frozen weights; fast and full also train the weights), checkpointed and cached)\n\
         vocab-trim       structure  keep only the token ids a corpus uses: slice the embedding, rewrite the tokenizer (tokenizes the corpus once, counts cached; copies the kept embedding rows)\n"
    );
    let list = json(&common::compressor_in(Path::new("."), &["passes", "--json"]).stdout);
    assert_eq!(list[0]["kind"], "cast");
}

#[test]
fn usage_errors_exit_with_2() {
    let out = common::compressor_in(Path::new("."), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

// ---------------------------------------------------------------- the real model

#[test]
fn minilm_inspect_and_quickstart() {
    let Some(minilm) = common::minilm() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = minilm.to_str().expect("utf-8 path");
    let report = json(&common::compressor_in(tmp.path(), &["inspect", dir, "--json"]).stdout);
    assert_eq!(report["parameters"], 22_713_216);
    assert_eq!(
        (
            &report["architecture"],
            &report["layers"],
            &report["hidden_size"],
            &report["heads"]
        ),
        (
            &Value::from("BertModel"),
            &Value::from(6),
            &Value::from(384),
            &Value::from(12)
        )
    );
    let human = stdout(&common::compressor_in(tmp.path(), &["inspect", dir]));
    assert!(human.contains("\nparameters    22,713,216\n"), "{human}");
    assert!(
        human.contains("\nshape         6 layers, hidden 384, 12 heads, intermediate 1536\n"),
        "{human}"
    );

    // examples/quickstart.toml as written, into a temporary output folder.
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart.toml");
    let quickstart = quickstart.to_str().expect("utf-8 path");
    let plan = common::compressor_in(tmp.path(), &["plan", quickstart]);
    assert_ok(&plan);
    assert!(
        stdout(&plan).contains("103 tensors F32 -> F16, 90,852,864 -> 45,426,432 bytes"),
        "{}",
        stdout(&plan)
    );
    for out in ["a", "b"] {
        let target = tmp.path().join(out);
        let run = common::compressor_in(
            tmp.path(),
            &[
                "run",
                quickstart,
                "--output",
                target.to_str().expect("utf-8"),
            ],
        );
        assert_ok(&run);
    }
    let size = std::fs::metadata(tmp.path().join("a/model.safetensors"))
        .expect("model")
        .len();
    assert!((45_000_000..46_000_000).contains(&size), "{size} bytes");
    assert_eq!(
        read_tree(&tmp.path().join("a")),
        read_tree(&tmp.path().join("b"))
    );

    // The f16 artifact's embeddings stay within cosine 0.9999 of the original's, on the reference sentences
    // (tokenized by the artifact's own tokenizer, pooled as the artifact's sentence-transformers files say).
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../models/tests/fixtures/minilm_reference.json"),
        )
        .expect("reference"),
    )
    .expect("json");
    let texts: Vec<String> = reference["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .map(|s| s["text"].as_str().expect("text").to_string())
        .collect();
    let embed = |dir: &Path| {
        let encoder = compressor_eval::encoder::Encoder::open(dir, None).expect("open");
        let inputs: Vec<_> = texts.iter().map(|t| t.as_str().into()).collect();
        encoder.embed(&inputs, &mut |_| {}).expect("embed")
    };
    let original = embed(&minilm);
    let compressed = embed(&tmp.path().join("a"));
    let worst = original
        .iter()
        .zip(&compressed)
        .map(|(a, b)| compressor_eval::metrics::cosine(a, b).expect("cosine"))
        .fold(1.0f64, f64::min);
    eprintln!(
        "f16 artifact: min cosine to the original {worst:.7} over {} sentences",
        texts.len()
    );
    assert!(worst >= 0.9999, "min cosine {worst}");
}
