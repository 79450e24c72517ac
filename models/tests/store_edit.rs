//! Editing a loaded checkpoint: config keys (`ModelConfig::set`) and row selection (`TensorStore::select_rows`).

use compressor_models::testing::TinyBert;
use compressor_models::Checkpoint;

fn tiny(dir: &std::path::Path) -> Checkpoint {
    TinyBert {
        vocab_size: 10,
        hidden_size: 4,
        intermediate_size: 8,
        max_positions: 8,
        seed: 3,
        ..TinyBert::default()
    }
    .write(dir)
    .expect("write tiny model");
    Checkpoint::open(dir).expect("opens")
}

#[test]
fn selecting_rows_and_setting_vocab_size_keeps_the_model_valid() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut ckpt = tiny(tmp.path());
    let name = "embeddings.word_embeddings.weight";
    let before = ckpt.store.get_f32(name, &[10, 4]).expect("reads");
    ckpt.store.select_rows(name, &[0, 3, 9]).expect("selects");
    // The config still says 10 rows: the store is invalid until the config follows.
    assert!(ckpt.store.check(&ckpt.config).is_err());
    ckpt.config
        .set("vocab_size", Some(serde_json::json!(3)))
        .expect("valid config");
    assert_eq!(ckpt.config.bert().vocab_size, 3);
    ckpt.store
        .check(&ckpt.config)
        .expect("valid after both edits");
    let after = ckpt.store.get_f32(name, &[3, 4]).expect("reads");
    assert_eq!(&after[..4], &before[..4]);
    assert_eq!(&after[4..8], &before[12..16]);
    assert_eq!(&after[8..], &before[36..]);
    // Key order of config.json is kept.
    let keys: Vec<&String> = ckpt.config.raw.keys().collect();
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("config.json")).expect("config"))
            .expect("json");
    let original_keys: Vec<&String> = original.as_object().expect("object").keys().collect();
    assert_eq!(keys, original_keys);
}

#[test]
fn bad_edits_are_errors_that_leave_the_model_unchanged() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut ckpt = tiny(tmp.path());
    let err = ckpt
        .store
        .select_rows("embeddings.word_embeddings.weight", &[0, 10])
        .expect_err("row 10 does not exist");
    assert_eq!(
        err.to_string(),
        "row 10 of tensor `embeddings.word_embeddings.weight` does not exist (it has 10 rows)"
    );
    let err = ckpt
        .config
        .set("vocab_size", Some(serde_json::json!(0)))
        .expect_err("zero is not a size");
    assert!(err.to_string().contains("vocab_size"), "{err}");
    assert_eq!(ckpt.config.bert().vocab_size, 10);
    ckpt.store.check(&ckpt.config).expect("still valid");
}
