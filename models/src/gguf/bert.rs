//! The BERT layout llama.cpp loads (`general.architecture = "bert"`), as its converter (`convert_hf_to_gguf.py`,
//! `conversion/bert.py`) writes it: the `bert.*` hyper-parameters, the pooling of the sentence-transformers files,
//! the WordPiece vocabulary in llama.cpp's phantom-space form, and llama.cpp's tensor names.
//!
//! llama.cpp's `bert` graph has one head count and one FFN width for every layer, and runs the FFN with its GELU
//! (`ggml_gelu`, the tanh approximation); [`check`] says what it cannot run.

use std::path::Path;

use serde_json::Value as Json;

use super::Value;
use crate::arch::{read_json, Activation, BertConfig, Head, ModelConfig, Pooling, PoolingMode};
use crate::error::{Error, Result};

/// llama.cpp token types (gguf-py `TokenType`).
pub const NORMAL: i32 = 1;
pub const UNKNOWN: i32 = 2;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
pub const UNUSED: i32 = 5;

/// llama.cpp pooling types (`LLAMA_POOLING_TYPE_*`).
pub const POOLING_MEAN: u32 = 1;
pub const POOLING_CLS: u32 = 2;
/// CLS token, then the classifier head (`cls` = BERT's pooler + tanh, `cls.output` = the classifier): logits.
pub const POOLING_RANK: u32 = 4;

/// Why llama.cpp's `bert` graph cannot run this model, if it cannot.
pub fn check(bert: &BertConfig, pooling: &Pooling) -> std::result::Result<(), String> {
    if bert.family != crate::family::Family::Bert {
        return Err(format!(
            "it is a {} model; compressor writes llama.cpp's `bert` graph only",
            bert.family.name()
        ));
    }
    if bert.hidden.is_some() {
        return Err(
            "its hidden dimensions are pruned (llama.cpp's bert graph has no such layout)".into(),
        );
    }
    let first = &bert.layers[0];
    for (i, l) in bert.layers.iter().enumerate() {
        if l.heads.len() != bert.num_attention_heads
            || l.qk_head_dim != bert.head_dim()
            || l.vo_head_dim != bert.head_dim()
        {
            return Err(format!(
                "layer {i} keeps {} of {} attention heads (at widths {}/{}); llama.cpp's bert graph runs every layer with the same {} heads of width {}",
                l.heads.len(),
                bert.num_attention_heads,
                l.qk_head_dim,
                l.vo_head_dim,
                bert.num_attention_heads,
                bert.head_dim()
            ));
        }
        if l.intermediate_size != first.intermediate_size || l.intermediate_size == 0 {
            return Err(format!(
                "layer {i} has FFN width {} where layer 0 has {}; llama.cpp's bert graph uses one FFN width for every layer",
                l.intermediate_size, first.intermediate_size
            ));
        }
    }
    if bert.hidden_act == Activation::Relu {
        return Err("its FFN activation is relu; llama.cpp's bert graph runs GELU".into());
    }
    if pooling.mode == PoolingMode::Max && bert.head == Head::None {
        return Err(
            "it declares max pooling, which llama.cpp does not have (mean, cls, last, rank)".into(),
        );
    }
    Ok(())
}

/// The GGUF name of a checkpoint tensor (canonical name, without the `bert.` prefix); `None`: not exported
/// (buffers such as `embeddings.position_ids`, and the pooler of a model without a classifier, which llama.cpp's
/// embedding path does not use).
pub fn tensor_name(canonical: &str, classifier: bool) -> Option<String> {
    let (stem, kind) = canonical.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let fixed = match stem {
        "embeddings.word_embeddings" => Some("token_embd"),
        "embeddings.position_embeddings" => Some("position_embd"),
        "embeddings.token_type_embeddings" => Some("token_types"),
        "embeddings.LayerNorm" => Some("token_embd_norm"),
        "pooler.dense" if classifier => Some("cls"),
        "classifier" if classifier => Some("cls.output"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(format!("{f}.{kind}"));
    }
    let rest = stem.strip_prefix("encoder.layer.")?;
    let (n, module) = rest.split_once('.')?;
    let n: usize = n.parse().ok()?;
    let g = match module {
        "attention.self.query" => "attn_q",
        "attention.self.key" => "attn_k",
        "attention.self.value" => "attn_v",
        "attention.output.dense" => "attn_output",
        "attention.output.LayerNorm" => "attn_output_norm",
        "intermediate.dense" => "ffn_up",
        "output.dense" => "ffn_down",
        "output.LayerNorm" => "layer_output_norm",
        _ => return None,
    };
    Some(format!("blk.{n}.{g}.{kind}"))
}

/// The vocabulary as llama.cpp's WordPiece tokenizer reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    /// By id, in phantom-space form: a word-initial piece gets a leading U+2581, a `##` continuation loses its
    /// `##`, control tokens stay as they are.
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    /// `(kind, id)` for `bos`, `eos`, `unknown`, `seperator` (sic), `padding`, `cls`, `mask`.
    pub special: Vec<(&'static str, u32)>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub lowercase: Option<bool>,
}

/// Read `tokenizer.json` (and `tokenizer_config.json`) of `dir`: a WordPiece vocabulary of `vocab_size` ids.
pub fn vocab(dir: &Path, vocab_size: usize) -> Result<Vocab> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(Error::ConfigKey {
            path,
            key: "(file)".into(),
            problem: "is missing: the GGUF export writes the vocabulary from tokenizer.json".into(),
        });
    }
    let tok = read_json(&path)?;
    let key = |k: &str, problem: String| Error::ConfigKey {
        path: path.clone(),
        key: k.into(),
        problem,
    };
    let model = &tok["model"];
    let kind = model["type"].as_str().unwrap_or("(none)");
    if kind != "WordPiece" {
        return Err(key(
            "model.type",
            format!("is `{kind}`; llama.cpp's bert tokenizer is WordPiece (BPE and Unigram vocabularies belong to other GGUF architectures)"),
        ));
    }
    let prefix = model["continuing_subword_prefix"].as_str().unwrap_or("##");
    let map = model["vocab"]
        .as_object()
        .ok_or_else(|| key("model.vocab", "must be an object of token to id".into()))?;
    let mut pieces: Vec<Option<String>> = vec![None; vocab_size];
    for (piece, id) in map {
        let id = id.as_u64().ok_or_else(|| {
            key(
                "model.vocab",
                format!("token `{piece}` has a non-integer id"),
            )
        })? as usize;
        if id >= vocab_size {
            return Err(key(
                "model.vocab",
                format!("token `{piece}` has id {id}, past the model's vocab_size {vocab_size}"),
            ));
        }
        pieces[id] = Some(piece.clone());
    }
    let mut special_ids = std::collections::BTreeSet::new();
    let mut user_ids = std::collections::BTreeSet::new();
    for t in tok["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
            continue;
        };
        let id = id as usize;
        if id >= vocab_size {
            continue;
        }
        pieces[id] = Some(content.to_string());
        if t["special"].as_bool().unwrap_or(false) || looks_special(content) {
            special_ids.insert(id);
        } else {
            user_ids.insert(id);
        }
    }
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (id, piece) in pieces.iter().enumerate() {
        match piece {
            None => {
                tokens.push(format!("[PAD{id}]"));
                types.push(UNUSED);
            }
            Some(p) if special_ids.contains(&id) => {
                tokens.push(p.clone());
                types.push(CONTROL);
            }
            Some(p) => {
                let kind = if user_ids.contains(&id) {
                    USER_DEFINED
                } else {
                    NORMAL
                };
                tokens.push(match p.strip_prefix(prefix) {
                    Some(rest) if !prefix.is_empty() => rest.to_string(),
                    _ => format!("\u{2581}{p}"),
                });
                types.push(kind);
            }
        }
    }
    let config_path = dir.join("tokenizer_config.json");
    let config = if config_path.is_file() {
        read_json(&config_path)?
    } else {
        Json::Null
    };
    let id_of = |field: &str, default: &str| -> Option<u32> {
        let name = match &config[field] {
            Json::String(s) => s.as_str(),
            Json::Object(o) => o.get("content").and_then(Json::as_str).unwrap_or(default),
            _ => default,
        };
        pieces
            .iter()
            .position(|p| p.as_deref() == Some(name))
            .map(|i| i as u32)
    };
    let cls = id_of("cls_token", "[CLS]");
    let sep = id_of("sep_token", "[SEP]");
    let mut special = Vec::new();
    let mut push = |kind: &'static str, id: Option<u32>| {
        if let Some(id) = id {
            special.push((kind, id));
        }
    };
    // As gguf-py's SpecialVocab: bos falls back to cls and eos to sep.
    push("bos", id_of("bos_token", "").or(cls));
    push("eos", id_of("eos_token", "").or(sep));
    push("unknown", id_of("unk_token", "[UNK]"));
    push("seperator", sep);
    push("padding", id_of("pad_token", "[PAD]"));
    push("cls", cls);
    push("mask", id_of("mask_token", "[MASK]"));
    if let Some((_, id)) = special.iter().find(|(k, _)| *k == "unknown") {
        if types[*id as usize] == NORMAL {
            types[*id as usize] = UNKNOWN;
        }
    }
    // The single-sequence template says which specials wrap a text: [CLS] A [SEP] adds both.
    let single = tok["post_processor"]["single"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let special_at = |i: Option<&Json>| {
        i.and_then(|t| t["SpecialToken"]["id"].as_str())
            .and_then(|name| pieces.iter().position(|p| p.as_deref() == Some(name)))
            .map(|i| i as u32)
    };
    let (add_bos, add_eos) = if single.len() > 1 {
        (
            special_at(single.first()).is_some_and(|id| Some(id) == cls),
            special_at(single.last()).is_some_and(|id| Some(id) == sep),
        )
    } else {
        // No template (or another processor): BERT's own convention.
        (true, true)
    };
    let lowercase = normalizer_lowercase(&tok["normalizer"]);
    Ok(Vocab {
        tokens,
        types,
        special,
        add_bos,
        add_eos,
        lowercase,
    })
}

fn looks_special(t: &str) -> bool {
    (t.starts_with('[')
        && t.ends_with(']')
        && t.len() > 2
        && t[1..t.len() - 1].chars().all(|c| c.is_ascii_uppercase()))
        || (t.starts_with("<|") && t.ends_with("|>"))
}

fn normalizer_lowercase(n: &Json) -> Option<bool> {
    match n["type"].as_str()? {
        "Lowercase" => Some(true),
        "BertNormalizer" => n["lowercase"].as_bool(),
        "Sequence" => n["normalizers"]
            .as_array()?
            .iter()
            .find_map(normalizer_lowercase),
        _ => None,
    }
}

/// The metadata of a BERT GGUF file, in the converter's order. `name` becomes `general.name`; `file_type` is the
/// type most weights are stored in.
pub fn metadata(
    config: &ModelConfig,
    pooling: &Pooling,
    vocab: &Vocab,
    name: &str,
    file_type: u32,
) -> Vec<(String, Value)> {
    let b = config.bert();
    let mut m: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: Value| m.push((k.to_string(), v));
    put("general.architecture", Value::Str("bert".into()));
    put("general.type", Value::Str("model".into()));
    put("general.name", Value::Str(name.into()));
    put("bert.block_count", Value::U32(b.num_hidden_layers as u32));
    put(
        "bert.context_length",
        Value::U32(b.max_position_embeddings as u32),
    );
    put("bert.embedding_length", Value::U32(b.hidden_size as u32));
    put(
        "bert.feed_forward_length",
        Value::U32(b.layers[0].intermediate_size as u32),
    );
    put(
        "bert.attention.head_count",
        Value::U32(b.num_attention_heads as u32),
    );
    put(
        "bert.attention.layer_norm_epsilon",
        Value::F32(b.layer_norm_eps as f32),
    );
    put("general.file_type", Value::U32(file_type));
    put("bert.attention.causal", Value::Bool(false));
    let pooling_type = match (&b.head, pooling.mode) {
        (Head::SequenceClassification { .. }, _) => POOLING_RANK,
        (_, PoolingMode::Cls) => POOLING_CLS,
        _ => POOLING_MEAN,
    };
    put("bert.pooling_type", Value::U32(pooling_type));
    if let Head::SequenceClassification { id2label, .. } = &b.head {
        put(
            "bert.classifier.output_labels",
            Value::StrArray(id2label.clone()),
        );
    }
    put("general.quantization_version", Value::U32(2));
    put(
        "tokenizer.ggml.token_type_count",
        Value::U32(b.type_vocab_size as u32),
    );
    put("tokenizer.ggml.model", Value::Str("bert".into()));
    // llama.cpp's WordPiece tokenizer ignores the pre-tokenizer name; `default` is its generic one.
    put("tokenizer.ggml.pre", Value::Str("default".into()));
    put(
        "tokenizer.ggml.tokens",
        Value::StrArray(vocab.tokens.clone()),
    );
    put(
        "tokenizer.ggml.token_type",
        Value::I32Array(vocab.types.clone()),
    );
    for (kind, id) in &vocab.special {
        put(&format!("tokenizer.ggml.{kind}_token_id"), Value::U32(*id));
    }
    put("tokenizer.ggml.add_bos_token", Value::Bool(vocab.add_bos));
    put("tokenizer.ggml.add_eos_token", Value::Bool(vocab.add_eos));
    put("tokenizer.ggml.add_sep_token", Value::Bool(false));
    if let Some(lower) = vocab.lowercase {
        put("tokenizer.ggml.normalizer.lowercase", Value::Bool(lower));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_cpp() {
        let cases = [
            (
                "embeddings.word_embeddings.weight",
                Some("token_embd.weight"),
            ),
            ("embeddings.LayerNorm.bias", Some("token_embd_norm.bias")),
            (
                "encoder.layer.3.attention.self.key.bias",
                Some("blk.3.attn_k.bias"),
            ),
            (
                "encoder.layer.0.attention.output.LayerNorm.weight",
                Some("blk.0.attn_output_norm.weight"),
            ),
            (
                "encoder.layer.11.intermediate.dense.weight",
                Some("blk.11.ffn_up.weight"),
            ),
            (
                "encoder.layer.1.output.dense.weight",
                Some("blk.1.ffn_down.weight"),
            ),
            (
                "encoder.layer.1.output.LayerNorm.bias",
                Some("blk.1.layer_output_norm.bias"),
            ),
            ("embeddings.position_ids", None),
            ("pooler.dense.weight", None),
        ];
        for (hf, want) in cases {
            assert_eq!(tensor_name(hf, false).as_deref(), want, "{hf}");
        }
        assert_eq!(
            tensor_name("pooler.dense.bias", true).as_deref(),
            Some("cls.bias")
        );
        assert_eq!(
            tensor_name("classifier.weight", true).as_deref(),
            Some("cls.output.weight")
        );
    }
}
