//! `vib-prune` end to end on the tiny BERT fixture (hidden 32, 4 heads of 8, FFN 64, 2 layers, real WordPiece
//! tokenizer), masks trained by distillation on three texts: the plan's byte estimate is the artifact's, a rerun
//! (which reads the trained masks back) is byte-identical, and the remote-code export computes what the pruned
//! artifact computes.

mod common;

use common::{compressor_in, embeddings, max_diff, ok, read_tree};

#[test]
fn vib_pruned_artifacts_match_their_plan_rerun_and_export() {
    let tmp = common::fixture_workspace(
        "tiny-bert",
        "[calibration]\ndata = \"texts.jsonl\"\nfield = \"text\"\nsamples = 3\nmax-length = 32\n\n[[pass]]\nkind = \"vib-prune\"\ntarget = 0.4\nsteps = 4\nbatch-size = 2\n",
    );
    let dir = tmp.path();
    common::run_matching_the_plan(dir);
    let first = read_tree(&dir.join("out"));
    ok(&compressor_in(dir, &["run", "pipeline.toml", "--force"]));
    assert_eq!(read_tree(&dir.join("out")), first);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/manifest.json")).expect("manifest"))
            .expect("json");
    let pass = &manifest["passes"][0];
    assert_eq!(pass["kind"], "vib-prune");
    assert_eq!(pass["decisions"]["vib"]["objective"], "distill");
    let removed = pass["metrics"]["encoder_fraction_removed"]
        .as_f64()
        .expect("fraction");
    assert!((0.40..=0.42).contains(&removed), "{removed}");
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
    let diff = max_diff(&embeddings(dir, "out"), &embeddings(dir, "remote"));
    assert!(diff <= 1e-5, "remote-code export: {diff}");
}
