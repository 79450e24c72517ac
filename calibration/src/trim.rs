//! Rewriting a tokenizer for a trimmed vocabulary: kept tokens get new contiguous ids in their original relative
//! order (new id `i` is old id `old_ids[i]`), in every place that holds an id.
//!
//! The rewrite works on the `tokenizer.json` document (`serde_json::Value`), so fields we do not know about are
//! kept as they are. Per model type:
//!
//! - **WordPiece** / **BPE**: the `vocab` map is rebuilt with the new ids (in id order). BPE keeps a merge only when
//!   both parts and the result are kept (the `tokenizers` crate refuses merges over missing tokens), and
//!   [`Vocabulary::parts`] tells the selection which parts a kept merge result needs.
//! - **Unigram**: the `vocab` list (piece, score) is filtered in order (the id is the position) and `unk_id` is
//!   recomputed.
//!
//! Everywhere: `added_tokens` ids, the post-processor's special-token ids (`TemplateProcessing`,
//! `BertProcessing`, `RobertaProcessing`, nested in `Sequence`) and the padding id are remapped. The result is
//! loaded with the `tokenizers` crate and checked token by token ([`rewrite_tokenizer`]).
//!
//! Ids that must survive any trimming ([`Vocabulary::required`]): every added token, the unknown token, the
//! post-processor's special tokens, and the byte fallback pieces `<0x00>`..`<0xFF>` (when `byte_fallback` is on) or
//! the byte-level alphabet (a `ByteLevel` pre-tokenizer), so that any text can still be encoded.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde_json::{Map, Value};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// The tokenizer model types that can be trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerModel {
    WordPiece,
    Bpe,
    Unigram,
}

impl TokenizerModel {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenizerModel::WordPiece => "WordPiece",
            TokenizerModel::Bpe => "BPE",
            TokenizerModel::Unigram => "Unigram",
        }
    }
}

/// The vocabulary of a `tokenizer.json`: every id's token and the ids that trimming must keep.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    pub model: TokenizerModel,
    /// The token of every id (`None` for an id that no token has).
    pub tokens: Vec<Option<String>>,
    /// Ids of the model's own vocabulary (`model.vocab`), the rest are added tokens only.
    pub model_ids: usize,
    /// Added tokens: (id, special).
    pub added: Vec<(u32, bool)>,
    /// The unknown token's id.
    pub unk: Option<u32>,
    /// Ids the post-processor inserts (`[CLS]`, `[SEP]`, `<s>`, ...).
    pub post_processor: Vec<u32>,
    /// Byte fallback pieces (`<0x00>`..`<0xFF>`) or the byte-level alphabet, when the tokenizer relies on them.
    pub byte_pieces: Vec<u32>,
    /// Single-character pieces (WordPiece: also their continuation form `##c`).
    pub alphabet: Vec<u32>,
    /// BPE: the parts each merge result is built from (every merge that produces it).
    pub parts: HashMap<u32, Vec<u32>>,
    index: HashMap<String, u32>,
}

fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::TokenizerFile {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn as_id(path: &Path, what: &str, v: &Value) -> Result<u32> {
    v.as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| bad(path, format!("{what} is not a token id (found {v})")))
}

/// A BPE merge as `(left, right)`, from either the `"a b"` or the `["a", "b"]` form.
fn merge_parts(path: &Path, m: &Value) -> Result<(String, String)> {
    match m {
        Value::String(s) => {
            let mut it = s.splitn(2, ' ');
            match (it.next(), it.next()) {
                (Some(a), Some(b)) if !b.contains(' ') => Ok((a.to_string(), b.to_string())),
                _ => Err(bad(path, format!("BPE merge `{s}` is not two tokens"))),
            }
        }
        Value::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
            (Value::String(x), Value::String(y)) => Ok((x.clone(), y.clone())),
            _ => Err(bad(path, format!("BPE merge {m} is not two tokens"))),
        },
        _ => Err(bad(path, format!("BPE merge {m} is not two tokens"))),
    }
}

/// The token a BPE merge produces: `a` followed by `b` without its continuation prefix.
fn merge_result(a: &str, b: &str, prefix: Option<&str>) -> String {
    let b = match prefix {
        Some(p) => b.strip_prefix(p).unwrap_or(b),
        None => b,
    };
    format!("{a}{b}")
}

/// Whether `value` (a pre-tokenizer, possibly a `Sequence`) contains a `ByteLevel` step.
fn has_byte_level(value: &Value) -> bool {
    match value.get("type").and_then(Value::as_str) {
        Some("ByteLevel") => true,
        Some("Sequence") => value
            .get("pretokenizers")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(has_byte_level)),
        _ => false,
    }
}

impl Vocabulary {
    /// Read the vocabulary of the `tokenizer.json` document `json` (`path` names it in messages).
    pub fn from_json(path: &Path, json: &Value) -> Result<Self> {
        let model = json
            .get("model")
            .ok_or_else(|| bad(path, "has no `model`"))?;
        let kind = match model.get("type").and_then(Value::as_str) {
            Some("WordPiece") => TokenizerModel::WordPiece,
            Some("BPE") => TokenizerModel::Bpe,
            Some("Unigram") => TokenizerModel::Unigram,
            Some(other) => {
                return Err(Error::UnsupportedTokenizer {
                    path: path.to_path_buf(),
                    model_type: other.to_string(),
                })
            }
            None if model.get("merges").is_some() => TokenizerModel::Bpe,
            None => return Err(bad(path, "`model.type` is missing")),
        };
        let mut tokens: Vec<Option<String>> = Vec::new();
        let set = |id: u32, tok: &str, tokens: &mut Vec<Option<String>>| -> Result<()> {
            let i = id as usize;
            if i >= tokens.len() {
                tokens.resize(i + 1, None);
            }
            match &tokens[i] {
                Some(t) if t != tok => Err(bad(
                    path,
                    format!("id {id} belongs to two tokens, `{t}` and `{tok}`"),
                )),
                _ => {
                    tokens[i] = Some(tok.to_string());
                    Ok(())
                }
            }
        };
        let vocab = model
            .get("vocab")
            .ok_or_else(|| bad(path, "`model.vocab` is missing"))?;
        match kind {
            TokenizerModel::WordPiece | TokenizerModel::Bpe => {
                let map = vocab
                    .as_object()
                    .ok_or_else(|| bad(path, "`model.vocab` is not a map of token to id"))?;
                for (tok, id) in map {
                    set(
                        as_id(path, &format!("`model.vocab` entry `{tok}`"), id)?,
                        tok,
                        &mut tokens,
                    )?;
                }
            }
            TokenizerModel::Unigram => {
                let list = vocab
                    .as_array()
                    .ok_or_else(|| bad(path, "`model.vocab` is not a list of [piece, score]"))?;
                for (i, entry) in list.iter().enumerate() {
                    let piece = entry.get(0).and_then(Value::as_str).ok_or_else(|| {
                        bad(path, format!("`model.vocab[{i}]` is not [piece, score]"))
                    })?;
                    set(i as u32, piece, &mut tokens)?;
                }
            }
        }
        let model_ids = tokens.len();
        if model_ids == 0 {
            return Err(bad(path, "`model.vocab` is empty"));
        }
        let mut added = Vec::new();
        for (i, t) in json
            .get("added_tokens")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let id = as_id(
                path,
                &format!("`added_tokens[{i}].id`"),
                t.get("id").unwrap_or(&Value::Null),
            )?;
            let content = t
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(path, format!("`added_tokens[{i}].content` is missing")))?;
            set(id, content, &mut tokens)?;
            added.push((
                id,
                t.get("special").and_then(Value::as_bool).unwrap_or(false),
            ));
        }
        let index: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| (t.clone(), i as u32)))
            .collect();
        let lookup = |tok: &str, what: &str| -> Result<u32> {
            index
                .get(tok)
                .copied()
                .ok_or_else(|| bad(path, format!("{what} `{tok}` is not in the vocabulary")))
        };
        let unk = match kind {
            TokenizerModel::Unigram => match model.get("unk_id") {
                None | Some(Value::Null) => None,
                Some(v) => Some(as_id(path, "`model.unk_id`", v)?),
            },
            _ => match model.get("unk_token").and_then(Value::as_str) {
                Some(t) => Some(lookup(t, "`model.unk_token`")?),
                None => None,
            },
        };
        if kind == TokenizerModel::WordPiece && unk.is_none() {
            return Err(bad(path, "WordPiece model has no `unk_token`"));
        }
        let mut post_processor = Vec::new();
        if let Some(pp) = json.get("post_processor") {
            collect_post_processor_ids(path, pp, &mut post_processor)?;
        }
        post_processor.sort_unstable();
        post_processor.dedup();

        let mut byte_pieces = Vec::new();
        if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) {
            byte_pieces
                .extend((0..=255u8).filter_map(|b| index.get(&format!("<0x{b:02X}>")).copied()));
        }
        let byte_level = json.get("pre_tokenizer").is_some_and(has_byte_level);
        if byte_level {
            let alphabet = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet();
            let mut chars: Vec<char> = alphabet.into_iter().collect();
            chars.sort_unstable();
            byte_pieces.extend(
                chars
                    .iter()
                    .filter_map(|c| index.get(&c.to_string()).copied()),
            );
        }
        byte_pieces.sort_unstable();
        byte_pieces.dedup();

        let prefix = model
            .get("continuing_subword_prefix")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty());
        let mut alphabet: Vec<u32> = tokens[..model_ids]
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.as_deref().is_some_and(|t| {
                    let rest = match (kind, prefix) {
                        (TokenizerModel::WordPiece, Some(p)) => t.strip_prefix(p).unwrap_or(t),
                        _ => t,
                    };
                    rest.chars().count() == 1
                })
            })
            .map(|(i, _)| i as u32)
            .collect();
        alphabet.sort_unstable();

        let mut parts: HashMap<u32, Vec<u32>> = HashMap::new();
        if kind == TokenizerModel::Bpe {
            let merges = model
                .get("merges")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for m in merges {
                let (a, b) = merge_parts(path, m)?;
                let r = merge_result(&a, &b, prefix);
                let ids = (index.get(&a), index.get(&b), index.get(&r));
                let (Some(&ia), Some(&ib), Some(&ir)) = ids else {
                    return Err(bad(
                        path,
                        format!("BPE merge `{a} {b}` uses a token that is not in the vocabulary"),
                    ));
                };
                parts.entry(ir).or_default().extend([ia, ib]);
            }
        }
        Ok(Self {
            model: kind,
            tokens,
            model_ids,
            added,
            unk,
            post_processor,
            byte_pieces,
            alphabet,
            parts,
            index,
        })
    }

    /// Number of ids (the embedding rows a model with this tokenizer needs).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of `token`.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    /// The token of `id`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).and_then(|t| t.as_deref())
    }

    /// Special tokens: added tokens marked special, the unknown token and the post-processor's tokens.
    pub fn specials(&self) -> BTreeSet<u32> {
        self.added
            .iter()
            .filter(|(_, special)| *special)
            .map(|(id, _)| *id)
            .chain(self.unk)
            .chain(self.post_processor.iter().copied())
            .collect()
    }

    /// Ids every trimmed vocabulary keeps: all added tokens, the special tokens, and the byte pieces.
    pub fn required(&self) -> BTreeSet<u32> {
        let mut ids = self.specials();
        ids.extend(self.added.iter().map(|(id, _)| *id));
        ids.extend(self.byte_pieces.iter().copied());
        ids
    }
}

fn collect_post_processor_ids(path: &Path, pp: &Value, out: &mut Vec<u32>) -> Result<()> {
    match pp.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => {
            if let Some(map) = pp.get("special_tokens").and_then(Value::as_object) {
                for (name, t) in map {
                    for id in t
                        .get("ids")
                        .and_then(Value::as_array)
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                    {
                        out.push(as_id(
                            path,
                            &format!("`post_processor.special_tokens.{name}.ids`"),
                            id,
                        )?);
                    }
                }
            }
        }
        Some("BertProcessing") | Some("RobertaProcessing") => {
            for key in ["sep", "cls"] {
                if let Some(pair) = pp.get(key) {
                    out.push(as_id(
                        path,
                        &format!("`post_processor.{key}[1]`"),
                        pair.get(1).unwrap_or(&Value::Null),
                    )?);
                }
            }
        }
        Some("Sequence") => {
            for p in pp
                .get("processors")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                collect_post_processor_ids(path, p, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Old id -> new id for a trimmed vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    old_ids: Vec<u32>,
    new_of_old: Vec<Option<u32>>,
}

impl IdMap {
    /// `old_ids`: the kept ids, sorted ascending and distinct, all below `old_len`.
    pub fn new(old_ids: Vec<u32>, old_len: usize) -> Self {
        let mut new_of_old = vec![None; old_len];
        for (new, &old) in old_ids.iter().enumerate() {
            if let Some(slot) = new_of_old.get_mut(old as usize) {
                *slot = Some(new as u32);
            }
        }
        Self {
            old_ids,
            new_of_old,
        }
    }

    /// The new id of `old`, `None` when it was removed.
    pub fn get(&self, old: u32) -> Option<u32> {
        self.new_of_old.get(old as usize).copied().flatten()
    }

    /// The kept old ids, sorted: new id `i` is `old_ids()[i]`.
    pub fn old_ids(&self) -> &[u32] {
        &self.old_ids
    }

    pub fn len(&self) -> usize {
        self.old_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.old_ids.is_empty()
    }

    /// The new id of `old` (an id that trimming must have kept), else an error naming `what`.
    fn required(&self, path: &Path, what: &str, old: u32) -> Result<u32> {
        self.get(old).ok_or_else(|| {
            bad(
                path,
                format!("{what} (id {old}) was removed by the trimming"),
            )
        })
    }
}

/// The `tokenizer.json` document `json` rewritten for the kept ids of `map` (see the module docs), checked by
/// loading it with the `tokenizers` crate: it must have `map.len()` ids, each with the token it had before.
pub fn rewrite_tokenizer(
    path: &Path,
    json: &Value,
    vocab: &Vocabulary,
    map: &IdMap,
) -> Result<Value> {
    let mut out = json.clone();
    let model = out
        .get_mut("model")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad(path, "has no `model`"))?;
    match vocab.model {
        TokenizerModel::WordPiece | TokenizerModel::Bpe => {
            let original = json["model"]["vocab"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let mut entries: Vec<(u32, String)> = Vec::with_capacity(map.len());
            for (tok, id) in original {
                if let Some(new) = map.get(as_id(path, "a vocabulary id", &id)?) {
                    entries.push((new, tok));
                }
            }
            entries.sort_unstable();
            let new_vocab: Map<String, Value> = entries
                .into_iter()
                .map(|(id, tok)| (tok, Value::from(id)))
                .collect();
            model.insert("vocab".into(), Value::Object(new_vocab));
            if vocab.model == TokenizerModel::Bpe {
                let prefix = json["model"]
                    .get("continuing_subword_prefix")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty());
                let kept = |t: &str| vocab.id(t).and_then(|id| map.get(id)).is_some();
                let mut merges = Vec::new();
                for m in model
                    .get("merges")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    let (a, b) = merge_parts(path, m)?;
                    if kept(&a) && kept(&b) && kept(&merge_result(&a, &b, prefix)) {
                        merges.push(m.clone());
                    }
                }
                model.insert("merges".into(), Value::Array(merges));
            }
        }
        TokenizerModel::Unigram => {
            let list = json["model"]["vocab"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let kept: Vec<Value> = list
                .iter()
                .enumerate()
                .filter(|(i, _)| map.get(*i as u32).is_some())
                .map(|(_, v)| v.clone())
                .collect();
            model.insert("vocab".into(), Value::Array(kept));
            if let Some(unk) = vocab.unk {
                let new = map.required(path, "the unknown token", unk)?;
                model.insert("unk_id".into(), Value::from(new));
            }
        }
    }
    if let Some(added) = out.get_mut("added_tokens").and_then(Value::as_array_mut) {
        for t in added {
            let old = as_id(path, "an added token id", &t["id"])?;
            let what = format!("added token `{}`", t["content"].as_str().unwrap_or(""));
            t["id"] = Value::from(map.required(path, &what, old)?);
        }
    }
    if let Some(pp) = out.get_mut("post_processor") {
        remap_post_processor(path, pp, map)?;
    }
    if let Some(padding) = out.get_mut("padding").and_then(Value::as_object_mut) {
        if let Some(id) = padding.get("pad_id") {
            let old = as_id(path, "`padding.pad_id`", id)?;
            let what = "the padding token";
            padding.insert("pad_id".into(), Value::from(map.required(path, what, old)?));
        }
    }
    verify(path, &out, vocab, map)?;
    Ok(out)
}

fn remap_post_processor(path: &Path, pp: &mut Value, map: &IdMap) -> Result<()> {
    match pp.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => {
            if let Some(specials) = pp.get_mut("special_tokens").and_then(Value::as_object_mut) {
                for (name, t) in specials.iter_mut() {
                    if let Some(ids) = t.get_mut("ids").and_then(Value::as_array_mut) {
                        for id in ids.iter_mut() {
                            let old = as_id(path, "a post-processor id", id)?;
                            let what = format!("post-processor token `{name}`");
                            *id = Value::from(map.required(path, &what, old)?);
                        }
                    }
                }
            }
        }
        Some("BertProcessing") | Some("RobertaProcessing") => {
            for key in ["sep", "cls"] {
                if let Some(slot) = pp.get_mut(key).and_then(|p| p.get_mut(1)) {
                    let old = as_id(path, "a post-processor id", slot)?;
                    *slot =
                        Value::from(map.required(path, &format!("post-processor `{key}`"), old)?);
                }
            }
        }
        Some("Sequence") => {
            if let Some(list) = pp.get_mut("processors").and_then(Value::as_array_mut) {
                for p in list {
                    remap_post_processor(path, p, map)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Load the rewritten document and check that it has exactly the kept ids, each with its token.
fn verify(path: &Path, json: &Value, vocab: &Vocabulary, map: &IdMap) -> Result<()> {
    let text = serde_json::to_string(json)
        .map_err(|e| bad(path, format!("cannot serialize the rewrite: {e}")))?;
    let tok: Tokenizer = text.parse().map_err(|cause| Error::ParseTokenizer {
        path: path.to_path_buf(),
        cause,
    })?;
    let size = tok.get_vocab_size(true);
    if size != map.len() {
        return Err(bad(
            path,
            format!(
                "the trimmed tokenizer has {size} ids, expected {}",
                map.len()
            ),
        ));
    }
    for (new, &old) in map.old_ids().iter().enumerate() {
        let want = vocab.token(old);
        let got = tok.id_to_token(new as u32);
        if want.is_some() && want != got.as_deref() {
            return Err(bad(
                path,
                format!(
                    "the trimmed tokenizer gives id {new} the token {got:?}, expected {:?} (old id {old})",
                    want
                ),
            ));
        }
    }
    Ok(())
}

/// `tokenizer_config.json` with the keys of `added_tokens_decoder` (ids) remapped; entries of removed ids are
/// dropped.
pub fn rewrite_tokenizer_config(config: &Value, map: &IdMap) -> Value {
    let mut out = config.clone();
    if let Some(dec) = out
        .get_mut("added_tokens_decoder")
        .and_then(Value::as_object_mut)
    {
        let entries: Vec<(u32, Value)> = std::mem::take(dec)
            .into_iter()
            .filter_map(|(k, v)| Some((map.get(k.parse().ok()?)?, v)))
            .collect();
        let mut sorted = entries;
        sorted.sort_by_key(|(id, _)| *id);
        for (id, v) in sorted {
            dec.insert(id.to_string(), v);
        }
    }
    out
}

/// `added_tokens.json` (token -> id) with the ids remapped; removed tokens are dropped.
pub fn rewrite_added_tokens(added: &Value, map: &IdMap) -> Value {
    let mut out = Map::new();
    if let Some(obj) = added.as_object() {
        for (tok, id) in obj {
            if let Some(new) = id.as_u64().and_then(|i| map.get(i as u32)) {
                out.insert(tok.clone(), Value::from(new));
            }
        }
    }
    Value::Object(out)
}

/// `vocab.txt` of a WordPiece tokenizer: one token per line in new id order.
pub fn vocab_txt(vocab: &Vocabulary, map: &IdMap) -> String {
    let mut s = String::new();
    for &old in map.old_ids() {
        s.push_str(vocab.token(old).unwrap_or(""));
        s.push('\n');
    }
    s
}

/// The special-token id keys of a model's `config.json` that a trimming remaps.
pub const CONFIG_TOKEN_ID_KEYS: &[&str] = &[
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "unk_token_id",
    "cls_token_id",
    "sep_token_id",
    "mask_token_id",
    "decoder_start_token_id",
];

/// The tokens a `special_tokens_map.json` or `tokenizer_config.json` names (`*_token` keys as strings or
/// `{"content": ...}` objects, and `additional_special_tokens`).
pub fn named_special_tokens(doc: &Value) -> Vec<String> {
    let content = |v: &Value| token_content(v).map(str::to_string);
    let mut out = Vec::new();
    if let Some(obj) = doc.as_object() {
        for (k, v) in obj {
            if k.ends_with("_token") {
                out.extend(content(v));
            } else if k == "additional_special_tokens" {
                out.extend(v.as_array().into_iter().flatten().filter_map(content));
            }
        }
    }
    out
}

/// The token a special-tokens entry names: a string, or an added-token object's `content`.
pub fn token_content(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wordpiece() -> Value {
        json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
            "decoder": null,
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "world": 5, "##s": 6, "w": 7, "##o": 8, "x": 9}}
        })
    }

    #[test]
    fn wordpiece_ids_become_contiguous_and_the_template_follows() -> Result<()> {
        let path = Path::new("tokenizer.json");
        let doc = wordpiece();
        let v = Vocabulary::from_json(path, &doc)?;
        assert_eq!(
            (v.len(), v.unk, v.post_processor.clone()),
            (10, Some(1), vec![2, 3])
        );
        assert_eq!(v.alphabet, vec![6, 7, 8, 9]);
        let map = IdMap::new(vec![0, 1, 2, 3, 5, 6], 10);
        let out = rewrite_tokenizer(path, &doc, &v, &map)?;
        assert_eq!(
            out["model"]["vocab"],
            json!({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "world": 4, "##s": 5})
        );
        let tok: Tokenizer = out
            .to_string()
            .parse()
            .map_err(|cause| Error::ParseTokenizer {
                path: path.into(),
                cause,
            })?;
        let ids = tok
            .encode("world worlds hello", true)
            .map_err(|cause| Error::Encode {
                path: path.into(),
                cause,
            })?
            .get_ids()
            .to_vec();
        // The reference implementation's rewrite gave [5, 5, 7, 1] here: ids past a 6-row embedding.
        assert_eq!(ids, vec![2, 4, 4, 5, 1, 3]);
        Ok(())
    }

    #[test]
    fn removing_a_required_token_is_an_error_naming_it() -> Result<()> {
        let path = Path::new("t/tokenizer.json");
        let doc = wordpiece();
        let v = Vocabulary::from_json(path, &doc)?;
        let err = rewrite_tokenizer(path, &doc, &v, &IdMap::new(vec![0, 2, 3, 4], 10))
            .expect_err("unk removed");
        assert_eq!(
            err.to_string(),
            "`t/tokenizer.json`: added token `[UNK]` (id 1) was removed by the trimming"
        );
        Ok(())
    }

    #[test]
    fn unsupported_models_are_named() {
        let doc = json!({"model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}});
        let err =
            Vocabulary::from_json(Path::new("m/tokenizer.json"), &doc).expect_err("unsupported");
        assert_eq!(
            err.to_string(),
            "`m/tokenizer.json`: tokenizer model type `WordLevel` is not supported by vocabulary trimming (supported: WordPiece, BPE, Unigram)"
        );
    }

    #[test]
    fn side_files_follow_the_map() {
        let map = IdMap::new(vec![0, 3, 7], 8);
        let cfg = json!({"added_tokens_decoder": {"7": {"content": "<x>"}, "0": {"content": "<pad>"}, "5": {"content": "gone"}}, "pad_token": "<pad>"});
        assert_eq!(
            rewrite_tokenizer_config(&cfg, &map),
            json!({"added_tokens_decoder": {"0": {"content": "<pad>"}, "2": {"content": "<x>"}}, "pad_token": "<pad>"})
        );
        assert_eq!(
            rewrite_added_tokens(&json!({"<x>": 7, "gone": 5}), &map),
            json!({"<x>": 2})
        );
        assert_eq!(
            named_special_tokens(
                &json!({"pad_token": "<pad>", "mask_token": {"content": "<mask>"}, "additional_special_tokens": ["<a>"], "model_max_length": 5})
            ),
            vec!["<pad>", "<mask>", "<a>"]
        );
    }
}
