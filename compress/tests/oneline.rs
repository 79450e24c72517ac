//! The one-line commands (`quantize`, `trim`, `init`) against the pipelines they stand for, on the committed tiny
//! BERT (models/tests/fixtures/tiny-bert); progress lines when stderr is not a terminal; `run` given a folder.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{copy_dir, read_tree, stderr, stdout, Workspace};

/// A workspace whose `model/` is the committed tiny BERT (hidden 32, FFN 64).
fn fixture_workspace() -> Workspace {
    let ws = Workspace::new();
    std::fs::remove_dir_all(ws.join("model")).expect("rm");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/tiny-bert");
    copy_dir(&fixture, &ws.join("model"));
    ws
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
}

#[test]
fn quantize_writes_the_same_bytes_as_the_equivalent_pipeline() {
    let ws = fixture_workspace();
    // The pipeline a user would write for `--bits 4 --group-size 32 --embeddings 4`.
    ws.write(
        "w4.toml",
        "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"blockwise-quant\"\nbits = 4\ngroup-size = 32\nembeddings = { word = 4, position = 4, token-type = 4 }\n\n[output]\ndir = \"by-pipeline\"\n",
    );
    assert_ok(&ws.run(&["run", "w4.toml"]));
    let quantize = |extra: &[&str]| {
        let mut args = vec![
            "quantize",
            "model",
            "--bits",
            "4",
            "--group-size",
            "32",
            "--embeddings",
            "4",
        ];
        args.extend_from_slice(extra);
        ws.run(&args)
    };
    let q = quantize(&["--output", "by-command"]);
    assert_ok(&q);
    let (a, b) = (
        read_tree(&ws.join("by-pipeline")),
        read_tree(&ws.join("by-command")),
    );
    assert!(a.contains_key("model.safetensors") && a.contains_key("manifest.json"));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (name, bytes) in &a {
        assert!(b[name] == *bytes, "`{name}` differs");
    }
    // The command ends with the run summary; the quantized artifact loads with compressed-tensors.
    let err = stderr(&q);
    assert!(
        err.starts_with("pass[0] blockwise-quant: 15 tensors changed, 87,552 -> "),
        "{err}"
    );
    assert!(err.contains("\nsummary\n"), "{err}");
    assert!(
        err.contains("  loads in           SentenceTransformer(\"by-command\") with `pip install compressed-tensors`"),
        "{err}"
    );

    // --print-pipeline prints a pipeline that `run` turns into the same bytes again.
    let printed = quantize(&["--output", "by-printed", "--print-pipeline"]);
    assert_ok(&printed);
    assert!(
        !ws.join("by-printed").exists(),
        "--print-pipeline writes nothing"
    );
    ws.write("printed.toml", &stdout(&printed));
    assert_ok(&ws.run(&["run", "printed.toml"]));
    assert_eq!(read_tree(&ws.join("by-printed")), a);
}

#[test]
fn quantize_errors_name_the_flag_and_write_nothing() {
    let ws = fixture_workspace();
    // The default group size (128) does not divide the tiny model's widths: one line per width, and the way out.
    let o = ws.run(&["quantize", "model", "--bits", "4", "--output", "out"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: `compressor quantize` cannot run\n\
         \n\
         Caused by:\n  \
         cannot plan pipeline `compressor quantize`\n\
         \n\
         Caused by:\n  \
         `pass[0]` (`blockwise-quant`): `group-size`: the encoding does not fit 12 tensor(s):\n    \
         group size 128 does not divide the input dimension 32; valid sizes near it: 8, 16, 32 (10 tensors: `encoder.layer.0.attention.output.dense.weight`, `encoder.layer.0.attention.self.key.weight`, `encoder.layer.0.attention.self.query.weight` and 7 more)\n    \
         group size 128 does not divide the input dimension 64; valid sizes near it: 16, 32, 64 (2 tensors: `encoder.layer.0.output.dense.weight`, `encoder.layer.1.output.dense.weight`)\n\
         \n\
         hint: `compressor quantize ... --print-pipeline` prints the pipeline it runs (its `pass[0]` is set by the flags)\n\
         hint: choose a size that divides every selected dimension, or granularity = \"channel\"\n"
    );
    let bits = ws.run(&["quantize", "model", "--bits", "9", "--output", "out"]);
    assert_eq!(bits.status.code(), Some(2));
    assert!(
        stderr(&bits).contains("invalid value '9' for '--bits <BITS>': 9 is not in 2..=8"),
        "{}",
        stderr(&bits)
    );
    assert_eq!(ws.entries(), ["model", "pipeline.toml"]);
}

#[test]
fn trim_writes_the_same_bytes_as_the_equivalent_pipeline() {
    let ws = fixture_workspace();
    ws.write(
        "corpus.jsonl",
        "{\"text\": \"the cat sat on the mat\"}\n{\"text\": \"the dog is good\"}\n",
    );
    ws.write(
        "trim.toml",
        "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"vocab-trim\"\ncorpus = [\"corpus.jsonl\"]\nmin-frequency = 1\n\n[output]\ndir = \"by-pipeline\"\n",
    );
    let cache = ws.join("cache");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_compressor"))
            .args(args)
            .current_dir(ws.path())
            .env("COMPRESSOR_NO_PROGRESS", "1")
            .env("COMPRESSOR_CACHE", &cache)
            .output()
            .expect("run")
    };
    assert_ok(&run(&["run", "trim.toml"]));
    let t = run(&[
        "trim",
        "model",
        "--corpus",
        "corpus.jsonl",
        "--min-frequency",
        "1",
        "--output",
        "by-command",
    ]);
    assert_ok(&t);
    assert!(
        stderr(&t).starts_with("pass[0] vocab-trim: 1 tensor changed, "),
        "{}",
        stderr(&t)
    );
    assert_eq!(
        read_tree(&ws.join("by-pipeline")),
        read_tree(&ws.join("by-command"))
    );
}

#[test]
fn init_writes_a_commented_pipeline_that_plans_and_runs() {
    let ws = fixture_workspace();
    let o = ws.run(&["init", "model", "--output", "conf/p.toml"]);
    assert_eq!(o.status.code(), Some(2), "the folder conf/ does not exist");
    assert!(
        stderr(&o).starts_with("error: cannot write `conf/p.toml`"),
        "{}",
        stderr(&o)
    );
    std::fs::create_dir(ws.join("conf")).expect("mkdir");
    let o = ws.run(&["init", "model", "--output", "conf/p.toml"]);
    assert_ok(&o);
    assert_eq!(
        stderr(&o),
        "wrote `conf/p.toml` for `model`\nnext: edit it, then `compressor plan conf/p.toml` (reads no weight) and `compressor run conf/p.toml`\n"
    );
    let text = std::fs::read_to_string(ws.join("conf/p.toml")).expect("written");
    // Paths relative to the file's folder; a group size that fits this model (hidden 32, FFN 64).
    assert!(text.contains("[model]\npath = \"../model\"\n"), "{text}");
    assert!(text.contains("group-size = 32\n"), "{text}");
    assert!(
        text.contains("[output]\ndir = \"../out/model-w4\"\n"),
        "{text}"
    );
    assert!(text.contains("# task = \"sts\""), "{text}");
    assert!(text.contains("docs/recipes.md"), "{text}");
    // It does not replace a file without --force.
    let again = ws.run(&["init", "model", "--output", "conf/p.toml"]);
    assert_eq!(
        stderr(&again),
        "error: `conf/p.toml` already exists\n\nhint: add --force to replace it, or choose another file with --output\n"
    );
    assert_ok(&ws.run(&["init", "model", "--output", "conf/p.toml", "--force"]));
    let plan = ws.run(&["plan", "conf/p.toml"]);
    assert_ok(&plan);
    assert!(
        stdout(&plan)
            .contains("pass[0]  blockwise-quant (quantize): 15 tensors F32 -> int4 group 32"),
        "{}",
        stdout(&plan)
    );
    assert_ok(&ws.run(&["run", "conf/p.toml"]));
    assert!(ws.join("out/model-w4/model.safetensors").is_file());
}

#[test]
fn run_given_a_folder_says_what_it_wants() {
    let ws = fixture_workspace();
    let o = ws.run(&["run", "model"]);
    common::assert_error(
        &o,
        "error: `model` is a folder, not a pipeline file\n\
         \n\
         hint: give the pipeline file (e.g. `model/pipeline.toml`); to compress a model folder without one: `compressor quantize model --bits 4 --output DIR`, or `compressor init model` to write a pipeline\n",
    );
}

#[test]
fn progress_lines_when_stderr_is_not_a_terminal() {
    let ws = fixture_workspace();
    // Not a terminal, progress on, a line at every chance (interval 0).
    let o = Command::new(env!("CARGO_BIN_EXE_compressor"))
        .args(["run", "pipeline.toml"])
        .current_dir(ws.path())
        .env_remove("COMPRESSOR_NO_PROGRESS")
        .env("COMPRESSOR_PROGRESS_INTERVAL", "0")
        .output()
        .expect("run");
    assert_ok(&o);
    let err = stderr(&o);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("progress: pass[0] cast 39/39 (100%), ")
                && l.contains(" elapsed")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("progress: pass[0] cast done: 39 in ")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("progress: check ") && l.contains("/39 (")),
        "{err}"
    );
    // The summary still closes the run.
    assert!(err.contains("\nsummary\n"), "{err}");
    // A bad interval is refused with the variable's name.
    let bad = Command::new(env!("CARGO_BIN_EXE_compressor"))
        .args(["run", "pipeline.toml", "--force"])
        .current_dir(ws.path())
        .env_remove("COMPRESSOR_NO_PROGRESS")
        .env("COMPRESSOR_PROGRESS_INTERVAL", "soon")
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).starts_with("error: invalid COMPRESSOR_PROGRESS_INTERVAL `soon`: expected seconds between progress lines"),
        "{}",
        stderr(&bad)
    );
}
