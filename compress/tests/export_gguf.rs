//! `compressor export --format gguf`: the file llama.cpp loads (names, hyper-parameters, vocabulary), the values
//! of each tensor type against ggml's definitions, codes copied bit for bit from artifacts, and the refusals.

mod common;

use std::path::Path;

use common::{assert_error, compressor_in, ok, stderr};
use compressor_models::gguf::{blocks, GgmlType, GgufFile, Value};
use compressor_models::testing::TinyBert;
use compressor_models::Checkpoint;

/// A BERT 32 wide (whole 32-value blocks) with the tiny WordPiece vocabulary and mean pooling, in `dir/model`.
fn workspace() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("model");
    TinyBert {
        hidden_size: 32,
        intermediate_size: 64,
        heads: 2,
        seed: 11,
        ..TinyBert::default()
    }
    .write(&model)
    .expect("write tiny bert");
    std::fs::write(
        model.join("tokenizer.json"),
        compressor_calibration::testing::tiny_wordpiece().to_string(),
    )
    .expect("write");
    std::fs::write(
        model.join("tokenizer_config.json"),
        r#"{"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}"#,
    )
    .expect("write");
    std::fs::create_dir_all(model.join("1_Pooling")).expect("mkdir");
    std::fs::write(
        model.join("modules.json"),
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
 {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#,
    )
    .expect("write");
    std::fs::write(
        model.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}"#,
    )
    .expect("write");
    tmp
}

/// Run a one-pass pipeline on `model` into `out`.
fn run_pass(dir: &Path, pass: &str, out: &str) {
    std::fs::write(
        dir.join("p.toml"),
        format!("[model]\npath = \"model\"\n\n[[pass]]\n{pass}\n\n[output]\ndir = \"{out}\"\n"),
    )
    .expect("write");
    ok(&compressor_in(dir, &["run", "p.toml"]));
}

fn export(dir: &Path, model: &str, ty: Option<&str>, out: &str) -> std::process::Output {
    let mut args = vec!["export", model, "--format", "gguf", "--output", out];
    if let Some(t) = ty {
        args.extend(["--type", t]);
    }
    compressor_in(dir, &args)
}

fn values(file: &GgufFile, bytes: &[u8], name: &str) -> Vec<f32> {
    let (info, range) = file
        .tensor(name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    blocks::decode(info.ty, &bytes[range.clone()])
}

#[test]
fn f32_export_is_the_bert_layout_llama_cpp_loads() {
    let tmp = workspace();
    ok(&export(tmp.path(), "model", Some("f32"), "m.gguf"));
    let (file, bytes) = GgufFile::read(&tmp.path().join("m.gguf")).expect("read back");
    let u32_of = |k: &str| {
        file.get(k)
            .and_then(Value::as_u32)
            .unwrap_or_else(|| panic!("{k}"))
    };
    assert_eq!(file.version, 3);
    assert_eq!(
        file.get("general.architecture").and_then(Value::as_str),
        Some("bert")
    );
    for (k, v) in [
        ("bert.block_count", 2),
        ("bert.context_length", 32),
        ("bert.embedding_length", 32),
        ("bert.feed_forward_length", 64),
        ("bert.attention.head_count", 2),
        ("bert.pooling_type", 1),
        ("tokenizer.ggml.token_type_count", 2),
        ("general.file_type", 0),
        ("tokenizer.ggml.bos_token_id", 2),
        ("tokenizer.ggml.eos_token_id", 3),
        ("tokenizer.ggml.seperator_token_id", 3),
        ("tokenizer.ggml.padding_token_id", 0),
        ("tokenizer.ggml.unknown_token_id", 1),
        ("tokenizer.ggml.mask_token_id", 4),
    ] {
        assert_eq!(u32_of(k), v, "{k}");
    }
    assert_eq!(
        file.get("bert.attention.layer_norm_epsilon"),
        Some(&Value::F32(1e-12))
    );
    assert_eq!(
        file.get("tokenizer.ggml.model").and_then(Value::as_str),
        Some("bert")
    );
    assert_eq!(
        file.get("tokenizer.ggml.add_bos_token"),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        file.get("tokenizer.ggml.add_eos_token"),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        file.get("tokenizer.ggml.normalizer.lowercase"),
        Some(&Value::Bool(true))
    );
    // The phantom-space vocabulary: specials as they are, words with U+2581, continuations without `##`.
    let Some(Value::StrArray(tokens)) = file.get("tokenizer.ggml.tokens") else {
        panic!("no token list")
    };
    assert_eq!(tokens.len(), 64);
    assert_eq!(
        &tokens[..6],
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "\u{2581}a"]
    );
    assert_eq!(tokens[31], "a");
    assert_eq!(tokens[43], "ing");
    assert_eq!(tokens[44], "\u{2581}the");
    let Some(Value::I32Array(types)) = file.get("tokenizer.ggml.token_type") else {
        panic!("no token types")
    };
    assert_eq!(&types[..6], [3, 3, 3, 3, 3, 1]);
    // Every weight but the pooler, under llama.cpp's name, dims innermost first, values exact.
    let ckpt = Checkpoint::open(&tmp.path().join("model")).expect("open");
    let (expected, left): (Vec<&str>, Vec<&str>) = ckpt
        .store
        .names()
        .partition(|n| compressor_models::gguf::bert::tensor_name(n, false).is_some());
    assert_eq!(
        left,
        [
            "embeddings.position_ids",
            "pooler.dense.bias",
            "pooler.dense.weight"
        ]
    );
    assert_eq!(file.tensors.len(), expected.len());
    for name in expected {
        let gname = compressor_models::gguf::bert::tensor_name(name, false).expect("mapped");
        let (info, _) = file.tensor(&gname).expect("present");
        let (_, shape) = ckpt.store.info(name).expect("info");
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        assert_eq!(info.dims, dims, "{name}");
        assert_eq!(info.ty, GgmlType::F32, "{name}");
        let want = ckpt.store.get_f32(name, &shape).expect("values");
        assert_eq!(values(&file, &bytes, &gname), want, "{name}");
    }
    assert!(file.tensor("blk.1.ffn_down.weight").is_some());
    assert!(file.tensor("cls.weight").is_none());
}

#[test]
fn auto_copies_an_artifacts_codes_bit_for_bit() {
    let tmp = workspace();
    // 4-bit symmetric groups of 32 with f16 scales: q4_0, exactly the artifact's values.
    run_pass(
        tmp.path(),
        "kind = \"blockwise-quant\"\nbits = 4\ngroup-size = 32\nscale-dtype = \"f16\"\nembeddings = { word = 4 }",
        "w4",
    );
    // 8-bit per channel with f16 scales: q8_0; asymmetric 4-bit: q4_1.
    run_pass(
        tmp.path(),
        "kind = \"blockwise-quant\"\nbits = 8\ngranularity = \"channel\"\nscale-dtype = \"f16\"",
        "w8",
    );
    run_pass(
        tmp.path(),
        "kind = \"blockwise-quant\"\nbits = 4\ngroup-size = 32\nsymmetric = false\nscale-dtype = \"f16\"",
        "a4",
    );
    for (art, ty, tol) in [
        ("w4", GgmlType::Q4_0, 0.0),
        ("w8", GgmlType::Q8_0, 0.0),
        ("a4", GgmlType::Q4_1, 2e-3),
    ] {
        let out = format!("{art}.gguf");
        let o = export(tmp.path(), art, None, &out);
        let text = ok(&o) + &stderr(&o);
        // q4_1's offset m = -(8 + z) s is rarely a half-precision number: codes copied, m rounded.
        let how = match art {
            "w4" => "13 q4_0 (codes copied)",
            "w8" => "12 q8_0 (codes copied)",
            _ => "12 q4_1 (codes copied, scales rounded to f16)",
        };
        assert!(text.contains(how), "{art}: {text}");
        let (file, bytes) = GgufFile::read(&tmp.path().join(&out)).expect("read back");
        let ckpt = Checkpoint::open(&tmp.path().join(art)).expect("open artifact");
        for l in 0..2 {
            for (hf, g) in [
                ("attention.self.query", "attn_q"),
                ("intermediate.dense", "ffn_up"),
                ("output.dense", "ffn_down"),
            ] {
                let name = format!("encoder.layer.{l}.{hf}.weight");
                let (_, shape) = ckpt.store.info(&name).expect("info");
                let want = ckpt.store.get_f32(&name, &shape).expect("decoded");
                let (info, _) = file
                    .tensor(&format!("blk.{l}.{g}.weight"))
                    .expect("present");
                assert_eq!(info.ty, ty, "{art} {name}");
                let got = values(&file, &bytes, &info.name);
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                let diff = got
                    .iter()
                    .zip(&want)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(diff <= tol * scale, "{art} {name}: max diff {diff}");
            }
        }
        if art == "w4" {
            let (info, _) = file.tensor("token_embd.weight").expect("embeddings");
            assert_eq!(info.ty, GgmlType::Q4_0);
            assert_eq!(
                file.get("general.file_type").and_then(Value::as_u32),
                Some(2)
            );
        } else {
            // Float matrices are f16 under auto; tables and vectors f32.
            assert_eq!(
                file.tensor("token_embd.weight").expect("e").0.ty,
                GgmlType::F16
            );
        }
        assert_eq!(
            file.tensor("position_embd.weight").expect("p").0.ty,
            GgmlType::F32
        );
        assert_eq!(
            file.tensor("blk.0.attn_q.bias").expect("b").0.ty,
            GgmlType::F32
        );
    }
    // f32 scales are rounded to f16 (and the export says so); a 4-bit artifact asked for q8_0 is re-quantized.
    run_pass(
        tmp.path(),
        "kind = \"blockwise-quant\"\nbits = 4\ngroup-size = 32",
        "w4f32",
    );
    let o = export(tmp.path(), "w4f32", None, "r.gguf");
    assert!(
        stderr(&o).contains("12 q4_0 (codes copied, scales rounded to f16)"),
        "{}",
        stderr(&o)
    );
    let o = export(tmp.path(), "w8", Some("q4_0"), "n.gguf");
    let err = stderr(&o);
    assert!(
        err.contains("note: `encoder.layer.0.attention.self.query.weight` (q4_0): its 8-bit symmetric codes do not fit q4_0: decoded and quantized again"),
        "{err}"
    );
    assert!(err.contains("12 q4_0 (re-quantized)"), "{err}");
}

#[test]
fn requested_types_quantize_floats_as_ggml_does() {
    let tmp = workspace();
    let ckpt = Checkpoint::open(&tmp.path().join("model")).expect("open");
    let name = "encoder.layer.1.intermediate.dense.weight";
    let (_, shape) = ckpt.store.info(name).expect("info");
    let want = ckpt.store.get_f32(name, &shape).expect("values");
    for ty in [
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
    ] {
        let out = format!("{}.gguf", ty.name());
        ok(&export(tmp.path(), "model", Some(ty.name()), &out));
        let (file, bytes) = GgufFile::read(&tmp.path().join(&out)).expect("read");
        let (info, range) = file.tensor("blk.1.ffn_up.weight").expect("present");
        assert_eq!(info.ty, ty);
        assert_eq!(bytes[range.clone()], blocks::encode(ty, &want)[..]);
        // Within half a step of each 32-value block (plus the f16 rounding of its scale).
        let got = blocks::decode(ty, &bytes[range.clone()]);
        for (b, (g, w)) in got.chunks(32).zip(want.chunks(32)).enumerate() {
            let (lo, hi) = w
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
            let amax = lo.abs().max(hi);
            let step = match ty {
                GgmlType::F16 => amax / 1024.0,
                GgmlType::Q8_0 => amax / 127.0,
                // q4_0 maps the largest magnitude to -8, so the other sign reaches only +7 steps: a full step.
                GgmlType::Q4_0 => amax / 4.0,
                _ => (hi - lo) / 15.0,
            };
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= step * 0.5 + amax * 2e-3,
                "{} block {b}: {diff} > half of {step}",
                ty.name()
            );
        }
    }
}

#[test]
fn what_llama_cpp_cannot_run_is_refused_and_nothing_is_written() {
    let tmp = workspace();
    let before = common::read_tree(tmp.path());
    assert_error(
        &export(tmp.path(), "model", Some("iq2_xs"), "m.gguf"),
        "error: unknown GGUF tensor type `iq2_xs`\n\nhint: valid types: auto, f32, f16, q8_0, q6_k, q5_k, q4_k, q3_k, q2_k, q4_0, q4_1\n",
    );
    assert_error(
        &compressor_in(tmp.path(), &["export", "model", "--format", "dense", "--type", "q8_0", "--output", "d"]),
        "error: `--type q8_0` does not apply to `--format dense`: it writes the checkpoint's own tensor forms\n\nhint: `--type` chooses the tensor types of `--format onnx` (auto, f32, int8, int8-weights, int4) and `--format gguf` (auto, f32, f16, q8_0, q6_k, q5_k, q4_k, q3_k, q2_k, q4_0, q4_1); leave it out here\n",
    );
    assert_error(
        &export(tmp.path(), "model", None, "m.bin"),
        "error: cannot export to `m.bin`\n\nCaused by:\n  GGUF output `m.bin` must be a file name ending in `.gguf`\n\nhint: e.g. `--output minilm-q8_0.gguf`\n",
    );
    assert_error(
        &export(tmp.path(), "model", None, "model/m.gguf"),
        "error: cannot export to `model/m.gguf`\n\nCaused by:\n  output `model/m.gguf` is inside the model folder `model`\n\nhint: compressor never writes into its input; choose a path outside it\n",
    );
    assert_eq!(common::read_tree(tmp.path()), before, "nothing written");
    std::fs::write(tmp.path().join("taken.gguf"), "not gguf").expect("write");
    assert_error(
        &export(tmp.path(), "model", None, "taken.gguf"),
        "error: cannot export to `taken.gguf`\n\nCaused by:\n  output `taken.gguf` already exists\n\nhint: pass `--force` to replace it, or choose another file name\n",
    );
    let o = compressor_in(
        tmp.path(),
        &[
            "export",
            "model",
            "--format",
            "gguf",
            "--output",
            "taken.gguf",
            "--force",
        ],
    );
    assert_error(
        &o,
        "error: cannot export to `taken.gguf`\n\nCaused by:\n  output `taken.gguf` exists and is not a GGUF file\n\nhint: compressor replaces only GGUF files it could have written; choose another file name\n",
    );
    // Per-layer head counts: llama.cpp's bert graph has one head count for every layer.
    run_pass(
        tmp.path(),
        "kind = \"prune\"\ntarget = 0.3\nstructures = [\"heads\", \"neurons\"]\nimportance = \"magnitude\"\nallocation = \"per-layer\"",
        "pruned",
    );
    let o = export(tmp.path(), "pruned", None, "p.gguf");
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("cannot export `pruned` as GGUF: layer "),
        "{err}"
    );
    assert!(
        err.contains("hint: `--format onnx` runs per-layer shapes as they are"),
        "{err}"
    );
    assert!(!tmp.path().join("p.gguf").exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
}
