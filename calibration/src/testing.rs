//! Test helpers for every crate (as `compressor_models::testing` provides tiny checkpoints): WordPiece
//! `tokenizer.json` documents ([`tiny_wordpiece`] has 64 ids, the size of the default
//! [`compressor_models::testing::TinyBert`] vocabulary) and the path of the shared data beside the workspace.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// The 64 tokens of [`tiny_wordpiece`], in id order: 5 special tokens, 26 letters, 13 `##` continuations and 20
/// words.
pub const TINY_WORDPIECE_TOKENS: [&str; 64] = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j",
    "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", "##a", "##d",
    "##e", "##g", "##k", "##n", "##o", "##r", "##s", "##t", "##y", "##ed", "##ing", "the", "cat",
    "sat", "on", "mat", "dog", "ran", "tree", "to", "park", "and", "is", "big", "red", "sun",
    "sky", "blue", "was", "it", "hat",
];

/// A BERT-style (lowercasing, `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]`) WordPiece tokenizer over
/// [`TINY_WORDPIECE_TOKENS`].
pub fn tiny_wordpiece() -> Value {
    wordpiece_tokenizer(&TINY_WORDPIECE_TOKENS)
}

/// A BERT-style WordPiece `tokenizer.json` over `vocab` (id = position; tokens in brackets such as `[CLS]` or
/// `<s>` are special added tokens; the vocabulary must hold `[UNK]`, `[CLS]` and `[SEP]`), without padding or
/// truncation.
pub fn wordpiece_tokenizer(vocab: &[&str]) -> Value {
    let map: Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    let id = |t: &str| vocab.iter().position(|v| *v == t);
    let added: Vec<Value> = vocab
        .iter()
        .enumerate()
        .filter(|(_, t)| t.starts_with('[') || t.starts_with('<'))
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [id("[CLS]")], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [id("[SEP]")], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": map}
    })
}

/// The workspace folder (the parent of every crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `../shared/<rel>` beside the workspace (the shared data and models), or `None` with a skip notice on stderr.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = workspace_root().join("../shared").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is absent", p.display());
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tiny_tokenizer_loads_and_splits_words() {
        let tok: tokenizers::Tokenizer = tiny_wordpiece().to_string().parse().expect("loads");
        assert_eq!(tok.get_vocab_size(true), 64);
        let enc = tok.encode("The cats sat", true).expect("encodes");
        assert_eq!(
            enc.get_tokens(),
            ["[CLS]", "the", "cat", "##s", "sat", "[SEP]"]
        );
    }
}
