//! Bad evaluation data: every error names the file, line and field (committed tiny fixtures, no real model).

use std::path::PathBuf;

use compressor_eval::encoder::Encoder;
use compressor_eval::tasks::{run_task, TaskKind, TaskSpec};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(name)
}

fn run_err(model: &str, kind: TaskKind, data: &str) -> (String, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("data.jsonl");
    std::fs::write(&path, data).expect("write");
    let enc = Encoder::open(&fixture(model), None).expect("open fixture");
    let err = run_task(
        &enc,
        &TaskSpec::new(kind, vec![path.clone()]),
        None,
        &mut |_| {},
    )
    .expect_err("must fail")
    .to_string();
    (err, path.display().to_string())
}

#[test]
fn label_outside_id2label() {
    let (err, p) = run_err(
        "tiny-bert-cls",
        TaskKind::Glue,
        "{\"sentence\": \"a good movie\", \"label\": 1}\n{\"sentence\": \"bad\", \"label\": 7}\n",
    );
    assert_eq!(err, format!("{p}:2: field `label` label `7` is not one of the model's labels (0: neg, 1: neu, 2: pos)"));
}

#[test]
fn label_names_are_accepted_and_unknown_names_rejected() {
    let (err, p) = run_err(
        "tiny-bert-cls",
        TaskKind::Glue,
        "{\"sentence\": \"a\", \"label\": \"pos\"}\n{\"sentence\": \"b\", \"label\": \"great\"}\n",
    );
    assert_eq!(err, format!("{p}:2: field `label` label `great` is not one of the model's labels (0: neg, 1: neu, 2: pos)"));
}

#[test]
fn missing_field_lists_the_fields_present() {
    let (err, p) = run_err("tiny-bert", TaskKind::Sts, "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"score\": 1}\n{\"sentence1\": \"a\", \"text\": \"b\", \"score\": 2}\n");
    assert_eq!(
        err,
        format!("{p}:2: field `sentence2` is missing (fields here: score, sentence1, text)")
    );
}

#[test]
fn non_numeric_score() {
    let (err, p) = run_err(
        "tiny-bert",
        TaskKind::Sts,
        "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"score\": \"high\"}\n",
    );
    assert_eq!(
        err,
        format!("{p}:1: field `score` must be a number, found \"high\"")
    );
}

#[test]
fn pair_label_that_is_not_binary() {
    let (err, p) = run_err(
        "tiny-bert",
        TaskKind::PairClassification,
        "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": 2}\n",
    );
    assert_eq!(
        err,
        format!("{p}:1: field `label` must be 0 or 1 for pair classification, found 2")
    );
}

#[test]
fn empty_file() {
    let (err, p) = run_err("tiny-bert", TaskKind::Sts, "\n\n");
    assert_eq!(err, format!("{p}: the file is empty"));
}

#[test]
fn constant_scores_make_spearman_undefined() {
    let (err, _) = run_err(
        "tiny-bert",
        TaskKind::Sts,
        "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"score\": 1}\n{\"sentence1\": \"the cat\", \"sentence2\": \"a dog\", \"score\": 1}\n",
    );
    assert_eq!(err, "metric `spearman`: spearman: `y` is constant (every value is 1), so the metric is undefined");
}

#[test]
fn glue_on_a_model_without_head() {
    let (err, _) = run_err(
        "tiny-bert",
        TaskKind::Glue,
        "{\"sentence\": \"a\", \"label\": 1}\n",
    );
    let dir = fixture("tiny-bert");
    assert_eq!(
        err,
        format!("`{}` has no classification head (it is a BertModel), so task `glue` cannot run on it\nhint: use an embedding task (sts, classification, ...) or a BertForSequenceClassification checkpoint", dir.display())
    );
}
