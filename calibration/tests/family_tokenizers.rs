//! Parity with the Hugging Face tokenizers of the tiny RoBERTa (byte-level BPE), XLM-RoBERTa (Unigram), DistilBERT and
//! MPNet (WordPiece) fixtures: the `input_ids` transformers gave for single texts, pairs and inputs truncated at 48
//! tokens (models/tests/fixtures/arch_reference.json, made by make_arch_fixtures.py), and the padding id each model
//! pads with.

use std::path::PathBuf;

use compressor_calibration::{TextInput, TextTokenizer};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures")
}

#[test]
fn every_family_tokenizes_as_transformers_does() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("arch_reference.json")).expect("read"),
    )
    .expect("json");
    for name in [
        "tiny-roberta",
        "tiny-xlm-roberta",
        "tiny-distilbert",
        "tiny-mpnet",
    ] {
        let tok = TextTokenizer::from_model_dir(&fixtures().join(name), Some(48)).expect("load");
        let x = &reference[name];
        assert_eq!(
            Some(tok.pad_id()),
            x["config"]["pad_token_id"].as_i64(),
            "{name}: padding id"
        );
        for input in x["inputs"].as_array().expect("inputs") {
            let text = match input["kind"].as_str() {
                Some("pair") => TextInput::pair(
                    input["text_a"].as_str().expect("text_a"),
                    input["text_b"].as_str().expect("text_b"),
                ),
                _ => TextInput::from(input["text"].as_str().expect("text")),
            };
            let (ids, _types) = tok.encode(&text).expect("encode");
            let want: Vec<i64> = input["input_ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_i64().expect("id"))
                .collect();
            assert_eq!(ids, want, "{name}: {text:?}");
        }
    }
}
