//! Bad input, end to end: the exact stderr, exit code 2, and no output (or partial output) left behind.

mod common;

use common::{assert_error, write_weights, Workspace, CONFIG};
use compressor_models::{DType, HostTensor};

/// Run `pipeline.toml` and expect `expected` on stderr, exit code 2 and nothing new in the workspace.
#[track_caller]
fn run_fails(ws: &Workspace, expected: &str) {
    let before = ws.entries();
    let out = ws.run(&["run", "pipeline.toml"]);
    assert_error(&out, expected);
    assert_eq!(ws.entries(), before, "the failed run left files behind");
}

// ---------------------------------------------------------------- pipeline.toml

#[test]
fn unknown_key_in_a_pass() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.toml",
        "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"cast\"\ndtyp = \"f16\"\n\n[output]\ndir = \"out\"\n",
    );
    run_fails(
        &ws,
        "error: failed to parse pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  unknown key `pass[0].dtyp` (line 6), expected one of `kind`, `dtype`, `select`\n\
         \n\
         hint: did you mean `pass[0].dtype`?\n",
    );
}

#[test]
fn unknown_key_in_a_section_and_in_a_selector() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.toml",
        "[model]\npth = \"model\"\n\n[[pass]]\nkind = \"cast\"\ndtype = \"f16\"\nselect = { role = [\"attn.*\"] }\n\n[output]\ndir = \"out\"\n",
    );
    run_fails(
        &ws,
        "error: failed to parse pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  unknown key `model.pth` (line 2), expected `path`\n  \
         unknown key `pass[0].select.role` (line 7), expected one of `roles`, `names`, `exclude`, `layers`, `kinds`\n\
         \n\
         hint: did you mean `model.path`?\n\
         hint: did you mean `pass[0].select.roles`?\n",
    );
}

#[test]
fn unknown_pass_kind() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.toml",
        &common::PIPELINE.replace("kind = \"cast\"", "kind = \"cats\""),
    );
    run_fails(
        &ws,
        "error: failed to parse pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  unknown pass kind `cats` at `pass[0].kind` (line 5)\n\
         \n\
         hint: did you mean `cast`?\n",
    );
    ws.write(
        "pipeline.toml",
        &common::PIPELINE.replace("kind = \"cast\"", "kind = \"gptq\""),
    );
    run_fails(
        &ws,
        "error: failed to parse pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  unknown pass kind `gptq` at `pass[0].kind` (line 5)\n\
         \n\
         hint: the pass kinds are: cast, blockwise-quant, hessian-mp, prune, qa-svd, fisher-prune, vib-prune, vocab-trim (`compressor passes` describes them)\n",
    );
}

#[test]
fn wrong_types() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.toml",
        &common::PIPELINE.replace("dtype = \"f16\"", "dtype = 16"),
    );
    run_fails(
        &ws,
        "error: failed to parse pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  wrong type for `pass[0].dtype` (line 6): expected a string, found integer `16`\n",
    );
    ws.write(
        "pipeline.toml",
        &format!(
            "{}\n[calibration]\ndata = \"d.jsonl\"\nsamples = \"many\"\n",
            common::PIPELINE
        ),
    );
    run_fails(
        &ws,
        "error: failed to parse pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  wrong type for `calibration.samples` (line 13): expected a non-negative integer, found string \"many\"\n",
    );
    ws.write(
        "pipeline.toml",
        &common::PIPELINE.replace("dtype = \"f16\"", "dtype = \"fp16\""),
    );
    run_fails(
        &ws,
        "error: failed to parse pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  unknown value `fp16` for `pass[0].dtype` (line 6), expected one of `f16`, `bf16`, `f32`\n\
         \n\
         hint: did you mean `f16`?\n",
    );
}

#[test]
fn eval_with_an_unknown_task() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.toml",
        &format!(
            "{}\n[[eval]]\ntask = \"stss\"\ndata = \"sts.jsonl\"\n",
            common::PIPELINE
        ),
    );
    run_fails(
        &ws,
        "error: failed to parse pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  unknown value `stss` for `eval[0].task` (line 12), expected one of `sts`, `classification`, `pair-classification`, `retrieval`, `clustering`, `glue`\n\
         \n\
         hint: did you mean `sts`?\n",
    );
}

#[test]
fn eval_with_missing_data_fails_at_plan_time() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.toml",
        &format!(
            "{}\n[[eval]]\ntask = \"sts\"\ndata = [\"a.jsonl\"]\n",
            common::PIPELINE
        ),
    );
    run_fails(
        &ws,
        "error: cannot plan pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  `eval[0].data` `a.jsonl` does not exist\n\
         \n\
         hint: paths in a pipeline are relative to the pipeline file's folder\n",
    );
}

#[test]
fn toml_syntax_error() {
    let ws = Workspace::new();
    ws.write("pipeline.toml", "[model\npath = \"model\"\n");
    run_fails(
        &ws,
        "error: failed to parse pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  TOML parse error at line 1, column 7\n    |\n  1 | [model\n    |       ^\n  invalid table header\n  expected `.`, `]`\n",
    );
}

#[test]
fn missing_pipeline_file() {
    let ws = Workspace::new();
    let out = ws.run(&["run", "nope.toml"]);
    assert_error(
        &out,
        "error: failed to read pipeline `nope.toml`\n\nCaused by:\n  No such file or directory (os error 2)\n",
    );
}

// ---------------------------------------------------------------- plan-time checks

#[test]
fn output_folder_that_exists() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.join("out")).expect("mkdir");
    std::fs::write(ws.join("out/keep.txt"), "mine").expect("write");
    run_fails(
        &ws,
        "error: cannot plan pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  output folder `out` already exists\n\
         \n\
         hint: pass `--force` to replace it, or choose another output folder\n",
    );
    // --force never deletes a folder that is not an artifact.
    let out = ws.run(&["run", "pipeline.toml", "--force"]);
    assert_error(
        &out,
        "error: cannot plan pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  refusing to replace `out`: it is not a compressor artifact: it has no manifest.json\n\
         \n\
         hint: compressor replaces only a folder it wrote: one whose manifest.json is a compressor manifest (tool `compressor`, schema_version 1) and that holds no file that manifest does not list; remove the folder yourself, or choose another output folder\n",
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("out/keep.txt")).expect("kept"),
        "mine"
    );
}

#[test]
fn output_folder_inside_or_around_the_model() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.toml",
        &common::PIPELINE.replace("dir = \"out\"", "dir = \"model/out\""),
    );
    run_fails(
        &ws,
        "error: cannot plan pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  output folder `model/out` is inside the model folder `model`\n\
         \n\
         hint: compressor never writes into its input; choose an output folder outside the model folder\n",
    );
    ws.write(
        "pipeline.toml",
        &common::PIPELINE.replace("dir = \"out\"", "dir = \"model\""),
    );
    run_fails(
        &ws,
        "error: cannot plan pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  output folder `model` is inside the model folder `model`\n\
         \n\
         hint: compressor never writes into its input; choose an output folder outside the model folder\n",
    );
    let out = ws.run(&["run", "pipeline.toml", "--force", "--output", "."]);
    assert_error(
        &out,
        "error: cannot plan pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  output folder `.` has no name\n",
    );
}

#[test]
fn selector_that_matches_nothing() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.toml",
        &common::PIPELINE.replace(
            "dtype = \"f16\"",
            "dtype = \"f16\"\nselect = { layers = [7] }",
        ),
    );
    run_fails(
        &ws,
        "error: cannot plan pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  `pass[0]` (`cast`): `select` matches no tensor of this model\n\
         \n\
         hint: `compressor inspect` lists every tensor with its role and kind; roles: embed.tokens, embed.positions, embed.types, position.bias, norm, attn.q, attn.k, attn.v, attn.out, ffn.up, ffn.down, pooler, head, buffer\n",
    );
    ws.write(
        "pipeline.toml",
        &common::PIPELINE.replace(
            "dtype = \"f16\"",
            "dtype = \"f16\"\nselect = { roles = [\"atn.*\"] }",
        ),
    );
    run_fails(
        &ws,
        "error: cannot plan pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  `pass[0]` (`cast`): `select`: role pattern `atn.*` matches no role (roles: embed.tokens, embed.positions, embed.types, position.bias, norm, attn.q, attn.k, attn.v, attn.out, ffn.up, ffn.down, pooler, head, buffer)\n",
    );
}

#[test]
fn missing_calibration_data() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.toml",
        &format!(
            "{}\n[calibration]\ndata = \"calib.jsonl\"\n",
            common::PIPELINE
        ),
    );
    run_fails(
        &ws,
        "error: cannot plan pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  `calibration.data` `calib.jsonl` does not exist\n\
         \n\
         hint: paths in a pipeline are relative to the pipeline file's folder\n",
    );
}

// ---------------------------------------------------------------- bad checkpoints, via `run` and `inspect`

/// Break the workspace's model with `corrupt`, then expect `cause` (with hints) under each command's context.
#[track_caller]
fn bad_model(corrupt: impl Fn(&Workspace), run_context: &str, cause: &str) {
    let ws = Workspace::new();
    corrupt(&ws);
    run_fails(&ws, &format!("error: {run_context}\n\nCaused by:\n{cause}"));
    let out = ws.run(&["inspect", "model"]);
    assert_error(
        &out,
        &format!("error: cannot inspect `model`\n\nCaused by:\n{cause}"),
    );
    assert!(out.stdout.is_empty());
    let out = ws.run(&["inspect", "model", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

const OPEN: &str = "cannot open model `model`";

#[test]
fn missing_config_json() {
    bad_model(
        |ws| std::fs::remove_file(ws.join("model/config.json")).expect("rm"),
        OPEN,
        "  `model` has no config.json\n\
         \n\
         hint: expected a Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json)\n",
    );
}

#[test]
fn config_that_is_not_json() {
    bad_model(
        |ws| ws.write("model/config.json", "{ \"model_type\": bert }"),
        OPEN,
        "  `model/config.json` is not valid JSON: expected value at line 1 column 17\n",
    );
}

#[test]
fn unknown_model_type() {
    bad_model(
        |ws| ws.write("model/config.json", &CONFIG.replace("\"bert\"", "\"gpt2\"")),
        OPEN,
        "  `model/config.json`: unknown model_type `gpt2`\n\nhint: supported model types: bert, roberta, xlm-roberta, distilbert, mpnet\n",
    );
}

#[test]
fn safetensors_shorter_than_its_header_length() {
    bad_model(
        |ws| std::fs::write(ws.join("model/model.safetensors"), [1u8, 0, 0]).expect("write"),
        OPEN,
        "  `model/model.safetensors`: file is truncated: 3 bytes, shorter than the 8-byte header length\n",
    );
}

#[test]
fn safetensors_truncated_in_the_data() {
    bad_model(
        |ws| {
            let p = ws.join("model/model.safetensors");
            let bytes = std::fs::read(&p).expect("read");
            std::fs::write(&p, &bytes[..bytes.len() - 100]).expect("write");
        },
        OPEN,
        "  `model/model.safetensors`: tensor `pooler.dense.weight`: byte range 24512..25536 runs past the end of the data (25436 bytes); the file is truncated\n",
    );
}

#[test]
fn safetensors_header_length_past_eof() {
    bad_model(
        |ws| {
            let mut bytes = 1000u64.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{}");
            std::fs::write(ws.join("model/model.safetensors"), bytes).expect("write");
        },
        OPEN,
        "  `model/model.safetensors`: header length 1000 runs past the end of the file (10 bytes); the file is truncated or not safetensors\n",
    );
}

#[test]
fn safetensors_malformed_header() {
    bad_model(
        |ws| {
            let header = b"{\"a\": [1, 2}";
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header);
            std::fs::write(ws.join("model/model.safetensors"), bytes).expect("write");
        },
        OPEN,
        "  `model/model.safetensors`: malformed header: expected `,` or `]` at line 1 column 12\n",
    );
}

#[test]
fn safetensors_byte_range_not_matching_shape_and_dtype() {
    bad_model(
        |ws| {
            let header = br#"{"embeddings.word_embeddings.weight":{"dtype":"F32","shape":[64,16],"data_offsets":[0,100]}}"#;
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header);
            bytes.extend_from_slice(&[0u8; 100]);
            std::fs::write(ws.join("model/model.safetensors"), bytes).expect("write");
        },
        OPEN,
        "  `model/model.safetensors`: tensor `embeddings.word_embeddings.weight`: byte range 0..100 (100 bytes) does not match shape [64, 16] of F32 (4096 bytes)\n",
    );
}

#[test]
fn tensor_of_the_wrong_shape_for_the_config() {
    bad_model(
        |ws| {
            let mut tensors = common::tiny_tensors();
            for (name, t) in tensors.iter_mut() {
                if name == "encoder.layer.0.attention.self.query.weight" {
                    *t = HostTensor::from_f32(vec![16, 8], &[0.0; 128], DType::F32).expect("tensor");
                }
            }
            write_weights(&ws.join("model"), &tensors);
        },
        OPEN,
        "  the checkpoint does not match its config:\n    tensor `encoder.layer.0.attention.self.query.weight` has shape [16, 8], the config implies [16, 16]\n",
    );
}

#[test]
fn nan_in_a_weight() {
    let corrupt = |ws: &Workspace| {
        let mut tensors = common::tiny_tensors();
        for (name, t) in tensors.iter_mut() {
            if name == "encoder.layer.1.output.dense.weight" {
                let mut v = t.to_f32(name).expect("f32");
                v[5] = f32::NAN;
                v[9] = f32::INFINITY;
                *t = HostTensor::from_f32(t.shape.clone(), &v, DType::F32).expect("tensor");
            }
        }
        write_weights(&ws.join("model"), &tensors);
    };
    let cause = "  tensor `encoder.layer.1.output.dense.weight` holds 2 non-finite value(s) (first: NaN at flat index 5)\n\
                 \n\
                 hint: the checkpoint is corrupt or was saved after a diverged training step\n";
    let ws = Workspace::new();
    corrupt(&ws);
    run_fails(
        &ws,
        &format!("error: cannot use the weights of `model`\n\nCaused by:\n{cause}"),
    );
    let out = ws.run(&["inspect", "model"]);
    assert_error(
        &out,
        &format!("error: cannot inspect `model`\n\nCaused by:\n{cause}"),
    );
    // Issue 13, item 8: `export` follows the same finiteness rule and writes nothing.
    let before = ws.entries();
    let out = ws.run(&["export", "model", "--output", "dense"]);
    assert_error(
        &out,
        &format!("error: cannot use the weights of `model`\n\nCaused by:\n{cause}"),
    );
    assert_eq!(ws.entries(), before);
}

#[test]
fn cast_overflow_fails_the_pass_and_writes_nothing() {
    let ws = Workspace::new();
    let mut tensors = common::tiny_tensors();
    for (name, t) in tensors.iter_mut() {
        if name == "encoder.layer.0.output.dense.weight" {
            let mut v = t.to_f32(name).expect("f32");
            v[3] = -1e5;
            *t = HostTensor::from_f32(t.shape.clone(), &v, DType::F32).expect("tensor");
        }
    }
    write_weights(&ws.join("model"), &tensors);
    run_fails(
        &ws,
        "error: `pass[0]` (`cast`) failed\n\
         \n\
         Caused by:\n  tensor `encoder.layer.0.output.dense.weight` holds 1 value(s) outside the F16 range (largest magnitude 100000 at flat index 3)\n\
         \n\
         hint: use dtype = \"bf16\", which keeps the f32 exponent range, or leave the tensor out with `select.exclude`\n",
    );
    // bf16 keeps the range.
    ws.write(
        "pipeline.toml",
        &common::PIPELINE.replace("\"f16\"", "\"bf16\""),
    );
    let out = ws.run(&["run", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
}

#[test]
fn inspect_a_folder_that_does_not_exist() {
    let ws = Workspace::new();
    let out = ws.run(&["inspect", "nowhere"]);
    assert_error(
        &out,
        "error: cannot inspect `nowhere`\n\
         \n\
         Caused by:\n  `nowhere` has no config.json\n\
         \n\
         hint: expected a Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json)\n",
    );
}

// ---------------------------------------------------------------- issue 13, "Also"

#[test]
fn issue_13_a_missing_or_invalid_tokenizer_is_a_plan_error() {
    let ws = Workspace::new();
    std::fs::remove_file(ws.join("model/tokenizer.json")).expect("rm");
    run_fails(
        &ws,
        "error: cannot plan pipeline `pipeline.toml`\n\
         \n\
         Caused by:\n  cannot read tokenizer `model/tokenizer.json`: No such file or directory (os error 2)\n\
         \n\
         hint: the model folder needs the tokenizer.json it was trained with (the artifact carries it for `embed` and `eval`)\n",
    );
    ws.write("model/tokenizer.json", "{\"version\": \"1.0\"}\n");
    let before = ws.entries();
    let out = ws.run(&["run", "pipeline.toml"]);
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: cannot plan pipeline `pipeline.toml`\n\nCaused by:\n  cannot load tokenizer `model/tokenizer.json`: "),
        "{err}"
    );
    assert_eq!(ws.entries(), before);
}

#[test]
fn issue_13_limit_0_is_refused_as_such() {
    let ws = Workspace::new();
    ws.write("texts.jsonl", "{\"text\": \"the cat\"}\n");
    for args in [
        &[
            "eval",
            "model",
            "--task",
            "sts",
            "--data",
            "texts.jsonl",
            "--limit",
            "0",
        ][..],
        &["embed", "model", "--data", "texts.jsonl", "--limit", "0"],
    ] {
        assert_error(
            &ws.run(args),
            "error: invalid value '0' for '--limit <LIMIT>': must be at least 1: it is the number of rows to use\n\nFor more information, try '--help'.\n",
        );
    }
}
