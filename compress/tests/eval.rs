//! `[[eval]]` in pipelines and `compressor eval`, on the committed tiny BERT (models/tests/fixtures/tiny-bert).

mod common;

use std::path::Path;

use common::{copy_dir, read_tree, stderr, stdout, Workspace};
use serde_json::Value;

const STS: &str = r#"{"sentence1": "the cat sat on the mat", "sentence2": "a cat sat on a mat", "score": 4.5}
{"sentence1": "the dog is good", "sentence2": "the dog is bad", "score": 1.0}
{"sentence1": "a good movie", "sentence2": "a good film", "score": 4.8}
{"sentence1": "the cat", "sentence2": "the movie is bad", "score": 0.2}
{"sentence1": "the mat is on the dog", "sentence2": "the dog is on the mat", "score": 2.5}
{"sentence1": "good", "sentence2": "bad", "score": 0.5}
"#;

fn workspace(evals: &str) -> Workspace {
    let ws = Workspace::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/tiny-bert");
    copy_dir(&fixtures, &ws.join("model"));
    ws.write("sts.jsonl", STS);
    ws.write(
        "pipeline.toml",
        &format!("[model]\npath = \"model\"\n\n[[pass]]\nkind = \"cast\"\ndtype = \"f16\"\n\n[output]\ndir = \"out\"\n{evals}"),
    );
    ws
}

#[test]
fn pipeline_evals_write_baseline_compressed_and_delta() {
    let ws = workspace("\n[[eval]]\ntask = \"sts\"\ndata = \"sts.jsonl\"\nmax-regression = 0.05\n");
    std::env::set_var("COMPRESSOR_CACHE", ws.join("cache"));
    let out = ws.run(&["run", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    // The summary's row for the task: its main metric, original and compressed, and the gate in points.
    let row = err
        .lines()
        .find(|l| l.starts_with("  sts spearman "))
        .unwrap_or_default();
    assert!(
        row.ends_with(" (gate passed: max-regression 0.05 = 5.00 points)"),
        "{err}"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(ws.join("out/manifest.json")).expect("manifest"))
            .expect("json");
    let e = &manifest["evaluation"];
    assert_eq!(e["gate_passed"], true);
    assert_eq!(e["results"].as_array().expect("results").len(), 2);
    assert_eq!(e["results"][0]["model"], "original");
    assert_eq!(e["results"][1]["model"], "compressed");
    assert_eq!(e["results"][0]["examples"], 6);
    let d = &e["deltas"][0];
    let (b, c) = (
        d["baseline"].as_f64().expect("f64"),
        d["compressed"].as_f64().expect("f64"),
    );
    assert!((d["delta"].as_f64().expect("f64") - (c - b)).abs() < 1e-12);
    assert_eq!(d["max_regression"], 0.05);
    assert_eq!(manifest["pipeline"]["eval"][0]["data"][0], "sts.jsonl");
    let report = std::fs::read_to_string(ws.join("out/report.md")).expect("report.md");
    assert!(report.contains("| sts | spearman |"), "{report}");
    assert!(ws.join("out/report.json").is_file());

    // Same inputs, same manifest: evaluation results are deterministic (timings stay in report.*).
    let again = ws.run(&["run", "pipeline.toml", "--output", "out2"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let strip = |mut t: std::collections::BTreeMap<String, Vec<u8>>| {
        t.retain(|k, _| !k.starts_with("report."));
        t
    };
    assert_eq!(
        strip(read_tree(&ws.join("out"))),
        strip(read_tree(&ws.join("out2")))
    );
}

#[test]
fn eval_errors_name_the_file_line_and_field_and_leave_no_output() {
    let ws = workspace("\n[[eval]]\ntask = \"sts\"\ndata = \"bad.jsonl\"\n");
    ws.write("bad.jsonl", "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"score\": 1}\n{\"sentence1\": \"a\", \"sentence2\": \"b\", \"score\": \"high\"}\n");
    let out = ws.run(&["run", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: cannot write the artifact `out`\n\nCaused by:\n  evaluation failed\n\nCaused by:\n  bad.jsonl:2: field `score` must be a number, found \"high\"\n"
    );
    assert_eq!(
        ws.entries(),
        vec!["bad.jsonl", "model", "pipeline.toml", "sts.jsonl"]
    );
}

#[test]
fn eval_command_compares_folders_and_writes_a_plot() {
    let ws = workspace("");
    assert_eq!(ws.run(&["run", "pipeline.toml"]).status.code(), Some(0));
    let out = ws.run(&[
        "eval",
        "model",
        "out",
        "--task",
        "sts",
        "--data",
        "sts.jsonl",
        "--report",
        "rep",
        "--no-cache",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(report["models"][0]["label"], "model");
    assert_eq!(report["models"][1]["label"], "out");
    assert_eq!(report["models"][1]["bits_per_weight"], 16.0);
    assert_eq!(report["deltas"].as_array().expect("deltas").len(), 1);
    let svg = std::fs::read_to_string(ws.join("rep/plot.svg")).expect("plot");
    assert!(
        svg.starts_with("<svg") && svg.contains("sts spearman"),
        "{svg}"
    );

    let bad = ws.run(&["eval", "model", "--task", "stsb", "--data", "sts.jsonl"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        stderr(&bad),
        "error: unknown task `stsb`\n\nhint: the tasks are: sts, classification, pair-classification, retrieval, clustering, glue\n"
    );
    let headless = ws.run(&[
        "eval",
        "model",
        "--task",
        "glue",
        "--data",
        "sts.jsonl",
        "--no-cache",
    ]);
    assert_eq!(headless.status.code(), Some(2));
    assert!(stderr(&headless).contains(
        "has no classification head (it is a BertModel), so task `glue` cannot run on it"
    ));
}

#[test]
fn a_failed_gate_exits_with_1_and_keeps_the_artifact() {
    // A negative max-regression demands an improvement, which a cast cannot give: the gate fails.
    let ws = workspace("\n[[eval]]\ntask = \"sts\"\ndata = \"sts.jsonl\"\nmax-regression = -1.0\n");
    let out = ws.run(&["run", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("(GATE FAILED: dropped ")
            && err.contains(" points, max-regression -1 = -100.00 points)"),
        "{err}"
    );
    assert!(
        err.ends_with(
            "error: an evaluation gate failed (a task dropped more than its `max-regression`)\n"
        ),
        "{err}"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(ws.join("out/manifest.json")).expect("manifest"))
            .expect("json");
    assert_eq!(manifest["evaluation"]["gate_passed"], false);
    let report = std::fs::read_to_string(ws.join("out/report.md")).expect("report.md");
    assert!(report.contains("**FAIL**"), "{report}");
}
