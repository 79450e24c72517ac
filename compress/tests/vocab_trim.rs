//! `vocab-trim` end to end through the binary on the tiny seeded BERT with a real (64-token WordPiece) tokenizer:
//! corpus paths relative to the pipeline file, the rewritten artifact (config, tokenizer, embedding, id map),
//! byte-identical reruns, the input left untouched, `[[eval]]` with the unknown-token fraction, and plan-time errors.

mod common;

use common::{assert_error, read_tree, stderr, Workspace};
use compressor_calibration::testing::tiny_wordpiece;
use compressor_calibration::{TextInput, TextTokenizer};
use compressor_models::Checkpoint;
use compressor_passes::vocab_trim::read_old_ids;
use serde_json::{json, Value};

const PIPELINE: &str = "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"vocab-trim\"\ncorpus = [\"data/corpus.jsonl\", { path = \"data/pairs.jsonl\", field = [\"a\", \"b\"] }]\nkeep-alphabet = false\nkeep = [\"sky\", \"moon\"]\n\n[output]\ndir = \"out\"\n";

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("model/tokenizer.json", &tiny_wordpiece().to_string());
    std::fs::create_dir(ws.join("data")).expect("mkdir");
    ws.write(
        "data/corpus.jsonl",
        "{\"text\": \"The cat sat on the mat.\"}\n{\"text\": \"The dog sat on the big mat.\"}\n",
    );
    ws.write(
        "data/pairs.jsonl",
        "{\"a\": \"the big dog\", \"b\": \"a red hat\"}\n{\"a\": \"red hat\", \"b\": \"the sun\"}\n",
    );
    ws.write("pipeline.toml", PIPELINE);
    ws
}

/// Run the binary in the workspace with its statistics cache inside the workspace.
fn run(ws: &Workspace, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_compressor"))
        .args(args)
        .current_dir(ws.path())
        .env("COMPRESSOR_NO_PROGRESS", "1")
        .env("COMPRESSOR_CACHE", ws.join("cache"))
        .output()
        .expect("run")
}

fn json_file(ws: &Workspace, rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(ws.join(rel)).expect("read")).expect("json")
}

#[test]
fn vocab_trim_writes_a_consistent_artifact() {
    let ws = workspace();
    let input_before = read_tree(&ws.join("model"));
    let out = run(&ws, &["run", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        common::stderr_masked(&out),
        "pass[0] vocab-trim: 1 tensor changed, 4,096 -> 896 bytes\n\
         warning: pass[0] (vocab-trim): 1 keep-list token(s) are not in the vocabulary and were ignored: `moon`\n\
         \n\
         summary\n\
         \x20                    original  compressed  change\n\
         \x20 model.safetensors   29.6 kB     26.6 kB  1.11x smaller\n\
         \x20 wall time          <time>\n\
         \x20 output             out/ (10 files; manifest.json says what was done to every tensor)\n\
         \x20 loads in           any runtime, e.g. SentenceTransformer(\"out\"); ours: compressor embed out --data FILE\n"
    );
    // The counts were cached.
    assert_eq!(
        std::fs::read_dir(ws.join("cache/analyses/vocab-counts"))
            .expect("cache")
            .count(),
        1
    );
    assert_eq!(
        read_tree(&ws.join("model")),
        input_before,
        "the input is untouched"
    );

    // Kept: 5 specials; the (5), mat, sat, on, big, dog, red, hat (2 each); keep-list sky.
    let tokenizer = json_file(&ws, "out/tokenizer.json");
    let vocab: Vec<&str> = tokenizer["model"]["vocab"]
        .as_object()
        .expect("vocab")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        vocab,
        [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "sat", "on", "mat", "dog", "big",
            "red", "sky", "hat"
        ]
    );
    let config = json_file(&ws, "out/config.json");
    assert_eq!(config["vocab_size"], json!(14));
    assert_eq!(config["pad_token_id"], json!(0));
    let ckpt = Checkpoint::open(&ws.join("out")).expect("artifact opens");
    assert_eq!(
        ckpt.store
            .info("embeddings.word_embeddings.weight")
            .expect("emb")
            .1,
        vec![14, 16]
    );
    let old_ids = read_old_ids(
        &ws.join("out/vocab_map.safetensors"),
        &std::fs::read(ws.join("out/vocab_map.safetensors")).expect("read"),
    )
    .expect("id map");
    assert_eq!(
        old_ids,
        vec![0, 1, 2, 3, 4, 44, 46, 47, 48, 49, 56, 57, 59, 63]
    );
    let vocab_txt = std::fs::read_to_string(ws.join("out/vocab.txt")).expect("vocab.txt");
    assert_eq!(vocab_txt.lines().collect::<Vec<_>>(), vocab);

    // The artifact's tokenizer gives the mapped ids.
    let before = TextTokenizer::from_model_dir(&ws.join("model"), Some(16)).expect("tokenizer");
    let after = TextTokenizer::from_model_dir(&ws.join("out"), Some(16)).expect("tokenizer");
    let text = TextInput::pair("The big dog sat", "on the red mat");
    let (old, old_types) = before.encode(&text).expect("encode");
    let (new, new_types) = after.encode(&text).expect("encode");
    assert_eq!(
        new.iter()
            .map(|&i| i64::from(old_ids[i as usize]))
            .collect::<Vec<_>>(),
        old
    );
    assert_eq!(new_types, old_types);

    let manifest = json_file(&ws, "out/manifest.json");
    let pass = &manifest["passes"][0];
    assert_eq!(pass["kind"], "vocab-trim");
    assert_eq!(pass["metrics"]["vocab_after"], json!(14));
    assert_eq!(pass["decisions"]["keep_list_unknown"], json!(["moon"]));
    assert_eq!(
        manifest["pipeline"]["pass"][0]["corpus"],
        json!(["data/corpus.jsonl", {"path": "data/pairs.jsonl", "field": ["a", "b"]}]),
        "paths as written"
    );

    // The same run again (counts now cached) gives byte-identical files.
    let again = run(&ws, &["run", "pipeline.toml", "--output", "again"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(read_tree(&ws.join("again")), read_tree(&ws.join("out")));
}

#[test]
fn vocab_trim_with_eval_reports_unknown_tokens() {
    let ws = workspace();
    ws.write(
        "data/sts.jsonl",
        "{\"sentence1\": \"the cat sat\", \"sentence2\": \"the zebra sat\", \"score\": 4.0}\n\
         {\"sentence1\": \"a red hat\", \"sentence2\": \"the blue sky\", \"score\": 1.0}\n\
         {\"sentence1\": \"the dog ran\", \"sentence2\": \"the dog sat\", \"score\": 3.0}\n",
    );
    ws.write(
        "pipeline.toml",
        &format!("{PIPELINE}\n[[eval]]\ntask = \"sts\"\ndata = \"data/sts.jsonl\"\n"),
    );
    let out = run(&ws, &["run", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json_file(&ws, "out/report.json");
    let results = report["results"].as_array().expect("results");
    // 6 distinct texts, 18 tokens; "zebra" is [UNK] for both; the trimmed vocabulary also lost cat, a, blue, ran.
    let counts: Vec<(u64, u64)> = results
        .iter()
        .map(|r| {
            (
                r["result"]["tokens"].as_u64().expect("n"),
                r["result"]["unk_tokens"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(counts, vec![(18, 1), (18, 5)]);
    assert!(
        (results[1]["result"]["metrics"]["unk_fraction"]
            .as_f64()
            .expect("f")
            - 5.0 / 18.0)
            .abs()
            < 1e-12
    );
    let manifest = json_file(&ws, "out/manifest.json");
    assert_eq!(manifest["evaluation"]["results"][1]["unk_tokens"], json!(5));
}

#[test]
fn plan_time_errors_name_the_key_and_file() {
    let ws = workspace();
    ws.write(
        "pipeline.toml",
        &PIPELINE.replace("data/corpus.jsonl", "data/missing.jsonl"),
    );
    assert_error(
        &run(&ws, &["plan", "pipeline.toml"]),
        "error: cannot plan pipeline `pipeline.toml`\n\nCaused by:\n  `pass[0]` (`vocab-trim`): `corpus`: file `data/missing.jsonl` does not exist\n\nhint: paths in a pipeline are relative to the pipeline file's folder\n",
    );
    ws.write(
        "pipeline.toml",
        &PIPELINE.replace(
            "keep-alphabet = false",
            "keep-alphabet = false\ntarget-size = 3",
        ),
    );
    assert_error(
        &run(&ws, &["run", "pipeline.toml"]),
        "error: cannot plan pipeline `pipeline.toml`\n\nCaused by:\n  `pass[0]` (`vocab-trim`): `target-size`: 3 is smaller than the 6 tokens every trimmed vocabulary of this tokenizer keeps (special tokens, byte pieces, keep-list)\n\nhint: raise `target-size` to at least 6\n",
    );
    assert!(!ws.join("out").exists());
    let twice = PIPELINE.replace(
        "\n[output]",
        "\n[[pass]]\nkind = \"vocab-trim\"\ncorpus = \"data/corpus.jsonl\"\n\n[output]",
    );
    ws.write("pipeline.toml", &twice);
    assert_error(
        &run(&ws, &["plan", "pipeline.toml"]),
        "error: cannot plan pipeline `pipeline.toml`\n\nCaused by:\n  `pass[1]` (`vocab-trim`): `kind`: an earlier pass changed the vocabulary (`embeddings.word_embeddings.weight` has 14 rows, config.json says 64); a pipeline trims the vocabulary once\n",
    );
    ws.write(
        "pipeline.toml",
        &PIPELINE.replace("keep-alphabet = false", "keep-alphabt = false"),
    );
    assert_error(
        &run(&ws, &["plan", "pipeline.toml"]),
        "error: failed to parse pipeline `pipeline.toml`\n\nCaused by:\n  unknown key `pass[0].keep-alphabt` (line 7), expected one of `kind`, `corpus`, `field`, `min-frequency`, `target-size`, `keep`, `keep-file`, `keep-alphabet`\n\nhint: did you mean `pass[0].keep-alphabet`?\n",
    );
}
