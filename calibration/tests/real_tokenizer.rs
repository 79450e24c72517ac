//! Parity with the Python tokenizer on the real all-MiniLM-L6-v2 `tokenizer.json`: the 16 reference examples of
//! `shared/models/minilm-l6-{sst2,mrpc}/reference_logits.json` (input_ids and token_type_ids, max length 128).
//! Skips with a message when the model or the references are absent.

use std::path::{Path, PathBuf};

use compressor_calibration::{TextInput, TextTokenizer};
use serde_json::Value;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ids(value: &Value) -> Vec<i64> {
    value
        .as_array()
        .expect("array of ids")
        .iter()
        .map(|v| v.as_i64().expect("integer id"))
        .collect()
}

/// The reference examples of one shared model folder: (input, input_ids, token_type_ids).
fn references(path: &Path) -> Vec<(TextInput, Vec<i64>, Vec<i64>)> {
    let text = std::fs::read_to_string(path).expect("read reference_logits.json");
    let doc: Value = serde_json::from_str(&text).expect("parse reference_logits.json");
    doc["examples"]
        .as_array()
        .expect("examples")
        .iter()
        .map(|ex| {
            let texts = &ex["texts"];
            let input = match texts.get("sentence") {
                Some(s) => TextInput::from(s.as_str().expect("sentence")),
                None => TextInput::pair(
                    texts["sentence1"].as_str().expect("sentence1"),
                    texts["sentence2"].as_str().expect("sentence2"),
                ),
            };
            (input, ids(&ex["input_ids"]), ids(&ex["token_type_ids"]))
        })
        .collect()
}

#[test]
fn minilm_tokenizer_matches_python() {
    let model = manifest_dir().join("../.cache/models/all-MiniLM-L6-v2");
    if !model.join("tokenizer.json").is_file() {
        eprintln!(
            "skipped: {} not found",
            model.join("tokenizer.json").display()
        );
        return;
    }
    let tok = TextTokenizer::from_model_dir(&model, Some(128)).expect("load tokenizer");
    let (got, types) = tok
        .encode(&TextInput::from(
            "It 's a lovely film with lovely performances by Buy and Accorsi .",
        ))
        .expect("encode");
    assert_eq!(
        got,
        vec![
            101, 2009, 1005, 1055, 1037, 8403, 2143, 2007, 8403, 4616, 2011, 4965, 1998, 16222,
            5668, 2072, 1012, 102
        ]
    );
    assert_eq!(types, vec![0; got.len()]);
    assert_eq!(tok.pad_id(), 0);
    assert_eq!(tok.vocab_size(), 30522);

    // The sentence-transformers limit applies when none is given.
    let default = TextTokenizer::from_model_dir(&model, None).expect("load tokenizer");
    assert_eq!(default.max_length(), 256);

    let shared = manifest_dir().join("../../shared/models");
    let mut checked = 0;
    for task in ["minilm-l6-sst2", "minilm-l6-mrpc"] {
        let refs = shared.join(task).join("reference_logits.json");
        if !refs.is_file() {
            eprintln!("skipped: {} not found", refs.display());
            continue;
        }
        let examples = references(&refs);
        assert_eq!(examples.len(), 8, "{}", refs.display());
        // The fine-tuned folder's own tokenizer.json (no baked padding) must agree too.
        let own = TextTokenizer::from_model_dir(&shared.join(task), Some(128))
            .expect("load task tokenizer");
        for t in [&tok, &own] {
            for (input, want_ids, want_types) in &examples {
                let (got_ids, got_types) = t.encode(input).expect("encode");
                assert_eq!(&got_ids, want_ids, "{input:?} with {}", t.path().display());
                assert_eq!(
                    &got_types,
                    want_types,
                    "{input:?} with {}",
                    t.path().display()
                );
            }
            // Batched: rows padded with 0 and masked, real tokens unchanged.
            let inputs: Vec<TextInput> = examples.iter().map(|e| e.0.clone()).collect();
            let batch = t.encode_batch(&inputs).expect("batch");
            let longest = examples.iter().map(|e| e.1.len()).max().expect("examples");
            assert_eq!(batch.seq_len, longest);
            for (row, (_, want_ids, want_types)) in examples.iter().enumerate() {
                let span = row * batch.seq_len..(row + 1) * batch.seq_len;
                let n = want_ids.len();
                assert_eq!(&batch.input_ids[span.clone()][..n], &want_ids[..]);
                assert_eq!(&batch.token_type_ids[span.clone()][..n], &want_types[..]);
                assert!(batch.input_ids[span.clone()][n..].iter().all(|&i| i == 0));
                assert!(batch.attention_mask[span.clone()][..n]
                    .iter()
                    .all(|&m| m == 1));
                assert!(batch.attention_mask[span][n..].iter().all(|&m| m == 0));
            }
        }
        checked += examples.len();
    }
    eprintln!("checked {checked} reference examples");
}
