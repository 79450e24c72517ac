//! TextTokenizer on tiny hand-written `tokenizer.json` files: baked padding/truncation ignored, our truncation,
//! dynamic padding, max-length and pad-id resolution, error messages.

use std::path::Path;

use compressor_calibration::testing::wordpiece_tokenizer;
use compressor_calibration::{MaxLengthSource, TextInput, TextTokenizer};
use serde_json::{json, Value};

/// Ids: [UNK]=0, [PAD]=1, [CLS]=2, [SEP]=3, then the words in order from 4.
const VOCAB: &[&str] = &[
    "[UNK]", "[PAD]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", ".", "a", "dog", "ran",
    "hello", "world", "##s",
];

fn tokenizer_json(vocab: &[&str], baked: bool) -> Value {
    let mut doc = wordpiece_tokenizer(vocab);
    if baked {
        doc["truncation"] = json!({"max_length": 6, "strategy": "LongestFirst", "stride": 0});
        doc["padding"] = json!({"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null,
                                "pad_id": 1, "pad_type_id": 0, "pad_token": "[PAD]"});
    }
    doc
}

fn write(dir: &Path, name: &str, value: &Value) {
    std::fs::write(
        dir.join(name),
        serde_json::to_string_pretty(value).expect("json"),
    )
    .expect("write");
}

/// A model folder with the baked-in padding/truncation tokenizer and optional configs.
fn model_dir(config: Option<Value>, sbert: Option<Value>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "tokenizer.json", &tokenizer_json(VOCAB, true));
    if let Some(c) = config {
        write(dir.path(), "config.json", &c);
    }
    if let Some(s) = sbert {
        write(dir.path(), "sentence_bert_config.json", &s);
    }
    dir
}

fn load(dir: &tempfile::TempDir, max_length: Option<usize>) -> TextTokenizer {
    TextTokenizer::from_model_dir(dir.path(), max_length).expect("tokenizer loads")
}

const LONG: &str = "The cat sat on the mat."; // the cat sat on the mat . = 4 5 6 7 4 8 9
const LONG2: &str = "hello world hello world hello world"; // 13 14 13 14 13 14

#[test]
fn baked_padding_and_truncation_do_not_apply() {
    let dir = model_dir(None, None);
    let tok = load(&dir, None);
    let (ids, types) = tok.encode(&TextInput::from(LONG)).expect("encode");
    // Natural length: 7 words + [CLS] + [SEP] = 9, neither cut to the baked 6 nor padded to the baked 16.
    assert_eq!(ids, vec![2, 4, 5, 6, 7, 4, 8, 9, 3]);
    assert_eq!(types, vec![0; 9]);
    let batch = tok
        .encode_batch(&[TextInput::from("the cat")])
        .expect("batch");
    assert_eq!(batch.seq_len, 4);
    assert_eq!(batch.input_ids, vec![2, 4, 5, 3]);
    assert_eq!(tok.inner().get_padding().map(|p| p.pad_token.clone()), None);
    assert_eq!(
        tok.inner().get_truncation().map(|t| t.max_length),
        Some(512)
    );
}

#[test]
fn truncates_single_to_max_length() {
    let dir = model_dir(None, None);
    let tok = load(&dir, Some(5));
    let (ids, types) = tok.encode(&TextInput::from(LONG)).expect("encode");
    assert_eq!(ids, vec![2, 4, 5, 6, 3]);
    assert_eq!(types, vec![0; 5]);
    // Short inputs are untouched.
    assert_eq!(
        tok.encode(&"a dog".into()).expect("encode").0,
        vec![2, 10, 11, 3]
    );
}

#[test]
fn truncates_pairs_longest_first_keeping_special_tokens() {
    let dir = model_dir(None, None);
    let tok = load(&dir, Some(9));
    // A has 7 tokens, B has 3: only A is cut, to 9 - 3 specials - 3 = 3.
    let (ids, types) = tok
        .encode(&TextInput::pair(LONG, "a dog ran"))
        .expect("encode");
    assert_eq!(ids, vec![2, 4, 5, 6, 3, 10, 11, 12, 3]);
    assert_eq!(types, vec![0, 0, 0, 0, 0, 1, 1, 1, 1]);

    // Both long (7 and 6 tokens), budget 8 - 3 = 5: the longer gets 3, the shorter 2.
    let tok = load(&dir, Some(8));
    let (ids, types) = tok.encode(&TextInput::pair(LONG, LONG2)).expect("encode");
    assert_eq!(ids, vec![2, 4, 5, 6, 3, 13, 14, 3]);
    assert_eq!(types, vec![0, 0, 0, 0, 0, 1, 1, 1]);
    let (ids, _) = tok.encode(&TextInput::pair(LONG2, LONG)).expect("encode");
    assert_eq!(ids, vec![2, 13, 14, 3, 4, 5, 6, 3]);
    assert_eq!(ids.len(), tok.max_length());
}

#[test]
fn pads_dynamically_to_the_longest_row() {
    let dir = model_dir(None, None);
    let tok = load(&dir, None);
    assert_eq!(tok.pad_id(), 1);
    let inputs = [
        TextInput::from("the cat"),
        TextInput::pair("a dog", "the mat"),
        TextInput::from("dogs"),
    ];
    let batch = tok.encode_batch(&inputs).expect("batch");
    assert_eq!((batch.batch_size, batch.seq_len), (3, 7));
    #[rustfmt::skip]
    let expected_ids = vec![
        2, 4, 5, 3, 1, 1, 1,
        2, 10, 11, 3, 4, 8, 3,
        2, 11, 15, 3, 1, 1, 1,
    ];
    assert_eq!(batch.input_ids, expected_ids);
    #[rustfmt::skip]
    let expected_types = vec![
        0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 1, 1, 1,
        0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(batch.token_type_ids, expected_types);
    #[rustfmt::skip]
    let expected_mask = vec![
        1, 1, 1, 1, 0, 0, 0,
        1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 0, 0, 0,
    ];
    assert_eq!(batch.attention_mask, expected_mask);
    // Rows equal the single encodings.
    let rows = tok.encode_all(&inputs).expect("encode_all");
    for (input, row) in inputs.iter().zip(&rows) {
        assert_eq!(&tok.encode(input).expect("encode"), row);
    }
    // An empty batch is fine.
    let empty = tok.encode_batch(&[]).expect("empty batch");
    assert_eq!((empty.batch_size, empty.seq_len), (0, 0));
}

#[test]
fn max_length_resolution_order() {
    let config = json!({"model_type": "bert", "max_position_embeddings": 64, "pad_token_id": 0});
    let sbert = json!({"max_seq_length": 32, "do_lower_case": false});

    // sentence_bert_config.json first.
    let dir = model_dir(Some(config.clone()), Some(sbert));
    let tok = load(&dir, None);
    assert_eq!(tok.max_length(), 32);
    assert_eq!(
        tok.max_length_source(),
        &MaxLengthSource::SentenceBertConfig(dir.path().join("sentence_bert_config.json"))
    );
    assert!(tok.notes().is_empty());
    // An explicit max length wins over both.
    let tok = load(&dir, Some(48));
    assert_eq!(
        (tok.max_length(), tok.max_length_source()),
        (48, &MaxLengthSource::Explicit)
    );

    // Then config.json; a sentence_bert_config.json without max_seq_length is skipped.
    let dir = model_dir(Some(config.clone()), Some(json!({"do_lower_case": true})));
    let tok = load(&dir, None);
    assert_eq!(tok.max_length(), 64);
    assert_eq!(
        tok.max_length_source(),
        &MaxLengthSource::ModelConfig(dir.path().join("config.json"))
    );

    // Then 512, with a note.
    let dir = model_dir(None, None);
    let tok = load(&dir, None);
    assert_eq!(
        (tok.max_length(), tok.max_length_source()),
        (512, &MaxLengthSource::Default)
    );
    assert_eq!(
        tok.notes(),
        [format!(
            "no `{}`: truncating to 512 tokens",
            dir.path().join("config.json").display()
        )]
    );

    // A sentence-transformers limit above the model's positions is clamped, with a note.
    let dir = model_dir(Some(config), Some(json!({"max_seq_length": 100})));
    let tok = load(&dir, None);
    assert_eq!(tok.max_length(), 64);
    assert_eq!(
        tok.notes(),
        [format!(
            "`max_seq_length` 100 of `{}` exceeds the model's 64 positions; truncating to 64",
            dir.path().join("sentence_bert_config.json").display()
        )]
    );
}

#[test]
fn pad_id_resolution() {
    // No [PAD]/<pad> token: config.json's pad_token_id.
    let vocab: Vec<&str> = VOCAB.iter().copied().filter(|t| *t != "[PAD]").collect();
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "tokenizer.json", &tokenizer_json(&vocab, false));
    write(
        dir.path(),
        "config.json",
        &json!({"max_position_embeddings": 16, "pad_token_id": 7}),
    );
    let tok = load(&dir, None);
    assert_eq!(tok.pad_id(), 7);
    assert!(tok.notes().is_empty());

    // Neither: 0, with a note.
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"max_position_embeddings": 16}"#,
    )
    .expect("write");
    let tok = load(&dir, None);
    assert_eq!(tok.pad_id(), 0);
    assert_eq!(
        tok.notes(),
        [format!(
            "`{}` has no `[PAD]` or `<pad>` token and no config gives `pad_token_id`: padding with id 0",
            dir.path().join("tokenizer.json").display()
        )]
    );

    // A `<pad>` token is found too.
    let mut vocab2 = vocab.clone();
    vocab2.push("<pad>");
    write(
        dir.path(),
        "tokenizer.json",
        &tokenizer_json(&vocab2, false),
    );
    let tok = load(&dir, None);
    assert_eq!(tok.pad_id(), (vocab2.len() - 1) as i64);
}

#[test]
fn vocabulary_passthroughs() {
    let dir = model_dir(None, None);
    let tok = load(&dir, None);
    assert_eq!(tok.vocab_size(), VOCAB.len());
    assert_eq!(tok.token_to_id("dog"), Some(11));
    assert_eq!(tok.id_to_token(14).as_deref(), Some("world"));
    assert_eq!(tok.token_to_id("zebra"), None);
    assert_eq!(tok.path(), dir.path().join("tokenizer.json"));
    // Unknown words become [UNK].
    assert_eq!(
        tok.encode(&"zebra".into()).expect("encode").0,
        vec![2, 0, 3]
    );
}

#[test]
fn error_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = |max: Option<usize>| {
        TextTokenizer::from_model_dir(dir.path(), max)
            .expect_err("must fail")
            .to_string()
    };
    let tj = dir.path().join("tokenizer.json");
    assert_eq!(
        err(None),
        format!(
            "cannot read tokenizer `{}`: No such file or directory (os error 2)",
            tj.display()
        )
    );

    std::fs::write(&tj, "{\"version\": ").expect("write");
    assert!(
        err(None).starts_with(&format!("cannot load tokenizer `{}`: ", tj.display())),
        "{}",
        err(None)
    );

    write(dir.path(), "tokenizer.json", &tokenizer_json(VOCAB, true));
    assert_eq!(
        err(Some(3)),
        format!(
            "max length 3 is too small for tokenizer `{}`: it adds 3 special tokens to a pair of texts, so the max \
             length must be at least 4",
            tj.display()
        )
    );

    write(
        dir.path(),
        "config.json",
        &json!({"max_position_embeddings": 64}),
    );
    assert_eq!(
        err(Some(65)),
        format!(
            "max length 65 exceeds the 64 positions the model supports (`max_position_embeddings` in `{}`)",
            dir.path().join("config.json").display()
        )
    );

    std::fs::write(dir.path().join("config.json"), "{,}").expect("write");
    assert_eq!(
        err(None),
        format!(
            "{}: invalid JSON: key must be a string at line 1 column 2",
            dir.path().join("config.json").display()
        )
    );

    std::fs::write(dir.path().join("config.json"), "{}").expect("write");
    write(
        dir.path(),
        "sentence_bert_config.json",
        &json!({"max_seq_length": -1}),
    );
    assert_eq!(
        err(None),
        format!(
            "{}: field `max_seq_length` is not a positive integer (found number -1)",
            dir.path().join("sentence_bert_config.json").display()
        )
    );
}
