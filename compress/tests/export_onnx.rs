//! `compressor export DIR --format onnx`: the folder sentence-transformers' ONNX backend loads (onnx/model.onnx,
//! a plain config.json, the tokenizer and pooling files, no safetensors), the per-matrix report, `--force`, and the
//! refusals (unknown `--type`, `--type` or `--pooling` on another format, an existing output), none of which writes
//! anything. Whether onnxruntime runs the graph is checked by hand (`scripts/check_onnx.py`).

mod common;

use common::{assert_error, ok, stderr, Workspace};
use serde_json::Value;

fn json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

#[test]
fn onnx_export_writes_the_sentence_transformers_onnx_layout() {
    let ws = Workspace::new();
    let o = ws.run(&[
        "export",
        "model",
        "--format",
        "onnx",
        "--output",
        "out",
        "--pooling",
    ]);
    ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("onnx --type auto: 12 f32, word embeddings f32\n"),
        "{err}"
    );
    let size = std::fs::metadata(ws.join("out/onnx/model.onnx"))
        .expect("model.onnx")
        .len();
    let thousands = compressor::human::thousands(size as usize);
    assert!(
        err.ends_with(&format!(
            "wrote `out`: onnx/model.onnx ({thousands} bytes)\n"
        )),
        "{err}"
    );
    let mut files: Vec<String> = common::read_tree(&ws.join("out")).into_keys().collect();
    files.sort();
    assert_eq!(
        files,
        [
            "1_Pooling/config.json",
            "config.json",
            "manifest.json",
            "modules.json",
            "onnx/model.onnx",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
        ]
    );
    // ModelProto starts with ir_version 8 and producer "compressor".
    let bytes = std::fs::read(ws.join("out/onnx/model.onnx")).expect("read");
    assert_eq!(&bytes[..4], &[0x08, 0x08, 0x12, 0x0a]);
    assert_eq!(&bytes[4..14], b"compressor");
    let manifest = json(&ws.join("out/manifest.json"));
    assert_eq!(manifest["output"]["format"], "onnx");
    assert_eq!(manifest["pipeline"]["export"]["type"], "auto");
    assert_eq!(manifest["pipeline"]["export"]["pooling"], true);
    assert_eq!(
        manifest["pipeline"]["export"]["matrices"][0]["weight"],
        "encoder.layer.0.attention.self.query.weight"
    );
    let files = manifest["output"]["files"].as_array().expect("files");
    let model = files
        .iter()
        .find(|f| f["path"] == "onnx/model.onnx")
        .expect("listed");
    assert_eq!(model["bytes"].as_u64(), Some(size));
    // A second export replaces the first only with --force.
    ok(&ws.run(&[
        "export", "model", "--format", "onnx", "--type", "f32", "--output", "out", "--force",
    ]));
}

#[test]
fn onnx_export_reports_copied_and_requantized_codes() {
    let ws = Workspace::new();
    ws.write(
        "w8.toml",
        "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"blockwise-quant\"\nbits = 8\ngranularity = \"channel\"\nembeddings = { word = 8 }\n\n[output]\ndir = \"w8\"\n",
    );
    ok(&ws.run(&["run", "w8.toml"]));
    let o = ws.run(&["export", "w8", "--format", "onnx", "--output", "auto"]);
    ok(&o);
    assert!(
        stderr(&o).contains("onnx --type auto: 12 int8 per channel (codes copied), word embeddings int8, one scale per row (codes copied)\n"),
        "{}",
        stderr(&o)
    );
    // The 8-bit word table keeps its codes (an int8 Gather), so it is not among the tables decoded to float.
    assert!(
        !stderr(&o).contains("`embeddings.word_embeddings.weight` stored quantized"),
        "{}",
        stderr(&o)
    );
    let config = json(&ws.join("auto/config.json"));
    assert!(config.get("quantization_config").is_none(), "{config}");
    assert!(config.get("compressor").is_none(), "{config}");
    let o = ws.run(&[
        "export", "w8", "--format", "onnx", "--type", "int4", "--output", "int4",
    ]);
    ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("onnx --type int4: 12 int4 blocks of 32 (re-quantized), word embeddings int8, one scale per row (codes copied)\n"),
        "{err}"
    );
    assert!(
        err.contains("  encoder.layer.0.attention.self.query.weight: re-quantized to int4 in blocks of 32: its codes have 8 bits, more than 4\n"),
        "{err}"
    );
}

#[test]
fn bad_types_and_options_are_refused_and_nothing_is_written() {
    let ws = Workspace::new();
    let before = ws.entries();
    assert_error(
        &ws.run(&[
            "export", "model", "--format", "onnx", "--type", "fp16", "--output", "out",
        ]),
        "error: unknown tensor type `fp16` for ONNX (valid: auto, f32, int8, int8-weights, int4)\n\nhint: pass one of them to `--type`, or leave `--type` out (auto: as the model stores its weights)\n",
    );
    assert_error(
        &ws.run(&["export", "model", "--type", "int8", "--output", "out"]),
        "error: `--type int8` does not apply to `--format dense`: it writes the checkpoint's own tensor forms\n\nhint: `--type` chooses the tensor types of `--format onnx` (auto, f32, int8, int8-weights, int4) and `--format gguf` (auto, f32, f16, q8_0, q6_k, q5_k, q4_k, q3_k, q2_k, q4_0, q4_1); leave it out here\n",
    );
    assert_error(
        &ws.run(&[
            "export", "model", "--format", "remote-code", "--pooling", "--output", "out",
        ]),
        "error: `--pooling` does not apply to `--format remote-code`: the pooling files are copied as they are\n\nhint: `--pooling` adds a sentence_embedding output to `--format onnx`\n",
    );
    assert_eq!(ws.entries(), before, "nothing written");
    std::fs::create_dir(ws.join("out")).expect("mkdir");
    std::fs::write(ws.join("out/keep.txt"), "mine\n").expect("write");
    let o = ws.run(&["export", "model", "--format", "onnx", "--output", "out"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("output folder `out` already exists"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        common::read_tree(&ws.join("out"))
            .into_keys()
            .collect::<Vec<_>>(),
        ["keep.txt"]
    );
    let mut after = before.clone();
    after.push("out".into());
    after.sort();
    assert_eq!(ws.entries(), after, "no staging folder or lock left");
}
