//! `prune` end to end on the tiny BERT fixture (4 heads of 8, FFN 64, 2 layers, real WordPiece tokenizer): the
//! plan's byte estimate is the artifact's, runs are byte-identical, both exports compute what the pruned artifact
//! computes, and an impossible target is a plan error naming the pass and the key.

mod common;

use common::{compressor_in, embeddings, max_diff, ok, read_tree, stderr};
use serde_json::Value;

fn workspace(prune: &str) -> tempfile::TempDir {
    common::fixture_workspace(
        "tiny-bert",
        &format!("[[pass]]\nkind = \"prune\"\n{prune}\n"),
    )
}

#[test]
fn pruned_artifacts_match_their_plan_and_their_exports() {
    let tmp = workspace("target = 0.3\nallocation = \"per-layer\"");
    let dir = tmp.path();
    common::run_matching_the_plan(dir);
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/config.json")).expect("config"))
            .expect("json");
    assert_eq!(config["compressor"]["version"], 1);
    assert_eq!(
        config["compressor"]["layers"].as_array().map(Vec::len),
        Some(2)
    );

    // Same inputs, same bytes.
    let first = read_tree(&dir.join("out"));
    ok(&compressor_in(dir, &["run", "pipeline.toml", "--force"]));
    assert_eq!(read_tree(&dir.join("out")), first);

    ok(&compressor_in(dir, &["export", "out", "--output", "dense"]));
    ok(&compressor_in(
        dir,
        &[
            "export",
            "out",
            "--format",
            "remote-code",
            "--output",
            "remote",
        ],
    ));
    let dense: Value =
        serde_json::from_slice(&std::fs::read(dir.join("dense/config.json")).expect("config"))
            .expect("json");
    assert!(dense.get("compressor").is_none());
    assert_eq!(dense["intermediate_size"], 64);
    let remote: Value =
        serde_json::from_slice(&std::fs::read(dir.join("remote/config.json")).expect("config"))
            .expect("json");
    assert_eq!(
        remote["auto_map"]["AutoModel"],
        "modeling_compressor_bert.CompressorBertModel"
    );
    assert!(dir.join("remote/modeling_compressor_bert.py").is_file());
    let pruned = embeddings(dir, "out");
    for other in ["dense", "remote"] {
        let diff = max_diff(&pruned, &embeddings(dir, other));
        assert!(diff <= 1e-5, "{other}: {diff}");
    }
}

#[test]
fn an_impossible_target_is_a_plan_error_with_the_range() {
    let tmp = workspace("target = 0.95");
    let out = compressor_in(tmp.path(), &["plan", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("`pass[0]` (`prune`): `target`: asks to remove"),
        "{err}"
    );
    assert!(
        err.contains("the achievable range of `target` is 0 to 0.8473"),
        "{err}"
    );
}

#[test]
fn hidden_pruned_artifacts_declare_their_width_and_export_only_with_remote_code() {
    let tmp = workspace("target = 0.2\nstructures = [\"hidden\"]");
    let dir = tmp.path();
    ok(&compressor_in(dir, &["run", "pipeline.toml"]));
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/config.json")).expect("config"))
            .expect("json");
    let width = config["hidden_size"].as_u64().expect("hidden_size");
    assert!(width < 32, "{width}");
    assert_eq!(config["compressor"]["hidden"]["original_size"], 32);
    // sentence-transformers reads the embedding width from the Pooling module's config.
    let pooling: Value = serde_json::from_slice(
        &std::fs::read(dir.join("out/1_Pooling/config.json")).expect("pooling config"),
    )
    .expect("json");
    assert_eq!(pooling["word_embedding_dimension"], width);
    let pruned = embeddings(dir, "out");
    assert!(pruned.iter().all(|e| e.len() as u64 == width));
    // The zero-padded dense export would change LayerNorm: refused, with the export that works.
    let out = compressor_in(dir, &["export", "out", "--output", "dense"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("`compressor.hidden`") && err.contains("--format remote-code"),
        "{err}"
    );
    assert!(!dir.join("dense").exists(), "nothing written");
    ok(&compressor_in(
        dir,
        &[
            "export",
            "out",
            "--format",
            "remote-code",
            "--output",
            "remote",
        ],
    ));
    let diff = max_diff(&pruned, &embeddings(dir, "remote"));
    assert!(diff <= 1e-5, "{diff}");
}
