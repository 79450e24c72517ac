//! A tiny BERT checkpoint built in-process with seeded values, and helpers to run the binary.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use compressor_models::testing::TinyBert;
use compressor_models::{st, HostTensor, ModelConfig};
use serde_json::Value;

pub const CONFIG: &str = r#"{
  "architectures": ["BertModel"],
  "model_type": "bert",
  "vocab_size": 64,
  "hidden_size": 16,
  "num_hidden_layers": 2,
  "num_attention_heads": 2,
  "intermediate_size": 32,
  "max_position_embeddings": 32,
  "type_vocab_size": 2,
  "hidden_act": "gelu",
  "layer_norm_eps": 1e-12,
  "pad_token_id": 0
}
"#;

/// Parameters of the tiny model: embeddings (64 + 32 + 2) * 16 + LayerNorm 2 * 16; per layer q, k, v, out
/// 4 * (16 * 16 + 16), up and down 2 * (32 * 16) + 32 + 16, two LayerNorms 4 * 16; pooler 16 * 16 + 16.
pub const TINY_PARAMETERS: usize = 1024 + 512 + 32 + 32 + 2 * (4 * 272 + 1024 + 48 + 64) + 272;

/// The tensors of the tiny model: the seeded `TinyBert` of the models crate with the dimensions of [`CONFIG`].
pub fn tiny_tensors() -> Vec<(String, HostTensor)> {
    let tensors = TinyBert {
        seed: 7,
        ..TinyBert::default()
    }
    .tensors()
    .expect("tiny tensors");
    let config = ModelConfig::parse(Path::new("config.json"), CONFIG).expect("tiny config parses");
    assert_eq!(
        tensors.len(),
        config.expected_tensors().len(),
        "CONFIG and TinyBert agree"
    );
    tensors
}

pub fn write_weights(dir: &Path, tensors: &[(String, HostTensor)]) {
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    st::write(&dir.join("model.safetensors"), tensors, &meta).expect("write safetensors");
}

/// Write the tiny checkpoint (config, weights, tokenizer and sentence-transformers files) into `dir`.
pub fn write_tiny(dir: &Path) {
    std::fs::create_dir_all(dir.join("1_Pooling")).expect("mkdir");
    std::fs::write(dir.join("config.json"), CONFIG).expect("write config");
    write_weights(dir, &tiny_tensors());
    let vocab: String = (0..64).map(|i| format!("tok{i}\n")).collect();
    std::fs::write(dir.join("vocab.txt"), vocab).expect("write");
    std::fs::write(
        dir.join("tokenizer.json"),
        compressor_calibration::testing::tiny_wordpiece().to_string() + "\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("tokenizer_config.json"),
        "{\"do_lower_case\": true}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("special_tokens_map.json"),
        "{\"pad_token\": \"tok0\"}\n",
    )
    .expect("write");
    std::fs::write(dir.join("README.md"), "not copied\n").expect("write");
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
 {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
"#,
    )
    .expect("write");
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 16, "pooling_mode_mean_tokens": true}
"#,
    )
    .expect("write");
}

pub const PIPELINE: &str = "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"cast\"\ndtype = \"f16\"\n\n[output]\ndir = \"out\"\n";

/// A temp folder holding `model/` (the tiny checkpoint) and `pipeline.toml` (cast to f16 into `out/`).
pub struct Workspace {
    pub tmp: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        write_tiny(&tmp.path().join("model"));
        std::fs::write(tmp.path().join("pipeline.toml"), PIPELINE).expect("write pipeline");
        Self { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.join(rel), text).expect("write");
    }

    /// Run the binary in the workspace folder.
    pub fn run(&self, args: &[&str]) -> Output {
        compressor_in(self.path(), args)
    }

    /// Names of entries in the workspace folder, sorted (to see that nothing partial was left).
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

pub fn compressor_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_compressor"))
        .args(args)
        .current_dir(dir)
        .env("COMPRESSOR_NO_PROGRESS", "1")
        .output()
        .expect("run compressor")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Assert exit code 2 and the exact stderr.
#[track_caller]
pub fn assert_error(o: &Output, expected: &str) {
    assert_eq!(stderr(o), expected, "stdout: {}", stdout(o));
    assert_eq!(o.status.code(), Some(2));
}

/// Every file under `dir` (relative path → bytes).
pub fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The real all-MiniLM-L6-v2, when fetched by scripts/fetch-minilm.sh.
pub fn minilm() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: {} is absent (run scripts/fetch-minilm.sh to fetch all-MiniLM-L6-v2)",
            dir.display()
        );
        None
    }
}

/// stderr with the run summary's wall time (which varies between runs) written as `<time>`.
pub fn stderr_masked(o: &Output) -> String {
    stderr(o)
        .lines()
        .map(|l| match l.strip_prefix("  wall time") {
            Some(rest) => format!(
                "  wall time{}<time>",
                &rest[..rest.len() - rest.trim_start().len()]
            ),
            None => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect()
}

/// Copy the folder `from` (recursively) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

#[track_caller]
pub fn ok(o: &std::process::Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    stdout(o)
}

/// `compressor embed MODEL --data texts.jsonl` in `dir`: one embedding per line.
pub fn embeddings(dir: &Path, model: &str) -> Vec<Vec<f64>> {
    ok(&compressor_in(
        dir,
        &["embed", model, "--data", "texts.jsonl"],
    ))
    .lines()
    .map(|l| {
        let v: Value = serde_json::from_str(l).expect("json line");
        v["embedding"]
            .as_array()
            .expect("embedding")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect()
    })
    .collect()
}

/// Largest absolute difference between two sets of embeddings.
pub fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// `plan --json` then `run` of `pipeline.toml` in `dir` (output `out`): the plan's byte estimate is the artifact's.
pub fn run_matching_the_plan(dir: &Path) {
    let plan: Value = serde_json::from_str(&ok(&compressor_in(
        dir,
        &["plan", "pipeline.toml", "--json"],
    )))
    .expect("plan json");
    ok(&compressor_in(dir, &["run", "pipeline.toml"]));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/manifest.json")).expect("manifest"))
            .expect("json");
    assert_eq!(
        plan["estimate"]["bytes"],
        manifest["output"]["tensor_bytes"]
    );
}

/// A workspace holding a copy of the committed fixture `models/tests/fixtures/<fixture>` as `model/`, a
/// `pipeline.toml` running `passes` on it into `out/`, and three short texts in `texts.jsonl`.
pub fn fixture_workspace(fixture: &str, passes: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tmp");
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(fixture);
    copy_dir(&from, &tmp.path().join("model"));
    std::fs::write(
        tmp.path().join("pipeline.toml"),
        format!("[model]\npath = \"model\"\n\n{passes}\n[output]\ndir = \"out\"\n"),
    )
    .expect("write");
    std::fs::write(
        tmp.path().join("texts.jsonl"),
        "{\"text\": \"the cat sat on the mat\"}\n{\"text\": \"a good movie\"}\n{\"text\": \"i hate this film, it was not very good\"}\n",
    )
    .expect("write");
    tmp
}
