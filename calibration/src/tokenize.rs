//! Tokenization with the Hugging Face `tokenizers` crate, with our own truncation and dynamic padding.
//!
//! A model folder's `tokenizer.json` may carry padding and truncation settings (all-MiniLM-L6-v2's pads every
//! input to 128 tokens and truncates at 128). They are switched off on load and replaced with:
//!
//! - **truncation** to [`TextTokenizer::max_length`] tokens *including* the special tokens, longest-first for
//!   pairs (the `tokenizers` crate's [`TruncationStrategy::LongestFirst`], the same as `transformers`'
//!   `truncation=True`). The limit is the `max_length` given, else `max_seq_length` of
//!   `sentence_bert_config.json`, else `max_position_embeddings` of `config.json` (less the position offset of
//!   RoBERTa-style models), else 512 (with a note in [`TextTokenizer::notes`]);
//! - **dynamic padding**: [`TextTokenizer::encode_batch`] pads on the right to the longest row of the batch with
//!   [`TextTokenizer::pad_id`] and attention mask 0.
//!
//! ```no_run
//! # fn main() -> compressor_calibration::Result<()> {
//! use compressor_calibration::{TextInput, TextTokenizer};
//! let tok = TextTokenizer::from_model_dir(std::path::Path::new("models/all-MiniLM-L6-v2"), None)?;
//! let batch = tok.encode_batch(&[
//!     TextInput::from("A short one."),
//!     TextInput::pair("The first text.", "And the second."),
//! ])?;
//! assert_eq!(batch.batch_size, 2);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use compressor_models::EncodedBatch;
use serde_json::Value;
use tokenizers::{
    EncodeInput, Encoding, PostProcessor, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::data::read_text;
use crate::error::{describe_json, Error, Result};

/// Used when neither `max_length`, `sentence_bert_config.json` nor `config.json` gives a limit.
pub const DEFAULT_MAX_LENGTH: usize = 512;

/// One input of a model: a single text or a pair (as for MRPC or NLI), tokenized as `[CLS] a [SEP] b [SEP]` with
/// token type ids 0 for `a` and 1 for `b` by a BERT tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TextInput {
    Single(String),
    Pair(String, String),
}

impl TextInput {
    /// A pair of texts.
    pub fn pair(first: impl Into<String>, second: impl Into<String>) -> Self {
        Self::Pair(first.into(), second.into())
    }

    fn as_encode_input(&self) -> EncodeInput<'_> {
        match self {
            Self::Single(a) => EncodeInput::from(a.as_str()),
            Self::Pair(a, b) => EncodeInput::from((a.as_str(), b.as_str())),
        }
    }
}

impl From<String> for TextInput {
    fn from(text: String) -> Self {
        Self::Single(text)
    }
}

impl From<&str> for TextInput {
    fn from(text: &str) -> Self {
        Self::Single(text.to_string())
    }
}

impl From<(String, String)> for TextInput {
    fn from((a, b): (String, String)) -> Self {
        Self::Pair(a, b)
    }
}

/// Where [`TextTokenizer::max_length`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaxLengthSource {
    /// Given by the caller.
    Explicit,
    /// `max_seq_length` of this `sentence_bert_config.json`.
    SentenceBertConfig(PathBuf),
    /// `max_position_embeddings` of this `config.json`.
    ModelConfig(PathBuf),
    /// [`DEFAULT_MAX_LENGTH`]: no config gave a limit.
    Default,
}

impl fmt::Display for MaxLengthSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Explicit => write!(f, "given max length"),
            Self::SentenceBertConfig(p) => write!(f, "`max_seq_length` of `{}`", p.display()),
            Self::ModelConfig(p) => write!(f, "`max_position_embeddings` of `{}`", p.display()),
            Self::Default => write!(f, "default {DEFAULT_MAX_LENGTH}"),
        }
    }
}

/// A `tokenizer.json` tokenizer with truncation to a resolved max length and dynamic right padding.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    max_length: usize,
    max_length_source: MaxLengthSource,
    pad_id: i64,
    notes: Vec<String>,
}

/// What `config.json` says about lengths and padding.
#[derive(Debug, Default)]
struct ModelConfig {
    path: PathBuf,
    /// Usable positions: `max_position_embeddings`, less the offset of RoBERTa-style position ids.
    positions: Option<usize>,
    pad_token_id: Option<i64>,
}

impl TextTokenizer {
    /// Load `dir/tokenizer.json`, drop its own padding and truncation, and truncate to `max_length` (or the
    /// limit resolved from the folder's configs, see the module docs).
    ///
    /// The pad id is the token the tokenizer's padding settings or `special_tokens_map.json` name, else
    /// `pad_token_id` of `config.json`, else the tokenizer's `[PAD]` or `<pad>` token, else 0.
    pub fn from_model_dir(dir: &Path, max_length: Option<usize>) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let tokenizer = load_tokenizer(&path)?;
        let mut notes = Vec::new();

        let config_path = dir.join("config.json");
        let config = if config_path.is_file() {
            Some(read_model_config(&config_path)?)
        } else {
            None
        };

        let (max_length, source) = match max_length {
            Some(n) => {
                if let Some(cfg) = &config {
                    if let Some(positions) = cfg.positions.filter(|&p| n > p) {
                        return Err(Error::MaxLengthTooLarge {
                            config: cfg.path.clone(),
                            max_length: n,
                            positions,
                        });
                    }
                }
                (n, MaxLengthSource::Explicit)
            }
            None => {
                let sbert_path = dir.join("sentence_bert_config.json");
                let sbert = if sbert_path.is_file() {
                    read_json_object(&sbert_path)?
                        .get("max_seq_length")
                        .map(|v| positive_int(&sbert_path, "max_seq_length", v))
                        .transpose()?
                } else {
                    None
                };
                let positions = config.as_ref().and_then(|c| c.positions);
                match (sbert, positions) {
                    (Some(n), Some(p)) if n > p => {
                        notes.push(format!(
                            "`max_seq_length` {n} of `{}` exceeds the model's {p} positions; truncating to {p}",
                            sbert_path.display()
                        ));
                        (p, MaxLengthSource::SentenceBertConfig(sbert_path))
                    }
                    (Some(n), _) => (n, MaxLengthSource::SentenceBertConfig(sbert_path)),
                    (None, Some(p)) => (p, MaxLengthSource::ModelConfig(config_path.clone())),
                    (None, None) => {
                        notes.push(if config.is_none() {
                            format!(
                                "no `{}`: truncating to {DEFAULT_MAX_LENGTH} tokens",
                                config_path.display()
                            )
                        } else {
                            format!(
                                "`{}` has no `max_position_embeddings`: truncating to {DEFAULT_MAX_LENGTH} tokens",
                                config_path.display()
                            )
                        });
                        (DEFAULT_MAX_LENGTH, MaxLengthSource::Default)
                    }
                }
            }
        };

        // A vocabulary may hold both `<pad>` and `[PAD]` (MPNet's): what the folder names wins over the guess.
        let named = named_pad_id(&tokenizer, dir)?;
        let config_pad = config.as_ref().and_then(|c| c.pad_token_id);
        let pad_id = match named.or(config_pad).or_else(|| guessed_pad_id(&tokenizer)) {
            Some(id) => id,
            None => {
                notes.push(format!(
                    "`{}` has no `[PAD]` or `<pad>` token and no config gives `pad_token_id`: padding with id 0",
                    path.display()
                ));
                0
            }
        };

        let mut tok = Self::from_tokenizer(tokenizer, path, max_length, pad_id)?;
        tok.max_length_source = source;
        tok.notes = notes;
        Ok(tok)
    }

    /// Wrap an already loaded tokenizer. `path` is only used in messages. Its padding is switched off and its
    /// truncation replaced by longest-first truncation to `max_length` tokens (special tokens included).
    pub fn from_tokenizer(
        mut tokenizer: Tokenizer,
        path: PathBuf,
        max_length: usize,
        pad_id: i64,
    ) -> Result<Self> {
        let special_tokens = tokenizer
            .get_post_processor()
            .map(|p| p.added_tokens(true).max(p.added_tokens(false)))
            .unwrap_or(0);
        if max_length <= special_tokens {
            return Err(Error::MaxLengthTooSmall {
                path,
                max_length,
                special_tokens,
            });
        }
        tokenizer.with_padding(None);
        let truncation = TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        };
        if let Err(cause) = tokenizer.with_truncation(Some(truncation)) {
            return Err(Error::SetTruncation {
                path,
                max_length,
                cause,
            });
        }
        Ok(Self {
            tokenizer,
            path,
            max_length,
            max_length_source: MaxLengthSource::Explicit,
            pad_id,
            notes: Vec::new(),
        })
    }

    /// Token ids and token type ids of one input, special tokens added, truncated, not padded.
    pub fn encode(&self, input: &TextInput) -> Result<(Vec<i64>, Vec<i64>)> {
        let encoding = self
            .tokenizer
            .encode_fast(input.as_encode_input(), true)
            .map_err(|cause| self.encode_error(cause))?;
        Ok(ids_of(&encoding))
    }

    /// [`encode`](Self::encode) for many inputs, in parallel (the `tokenizers` crate's batch encoding on the
    /// rayon pool; `TOKENIZERS_PARALLELISM=false` turns it off). Rows are not padded.
    pub fn encode_all(&self, inputs: &[TextInput]) -> Result<Vec<(Vec<i64>, Vec<i64>)>> {
        let encodings = self
            .tokenizer
            .encode_batch_fast(
                inputs.iter().map(TextInput::as_encode_input).collect(),
                true,
            )
            .map_err(|cause| self.encode_error(cause))?;
        Ok(encodings.iter().map(ids_of).collect())
    }

    /// Encode `inputs` into one batch, right-padded to its longest row with [`pad_id`](Self::pad_id) (mask 0,
    /// token type 0 on padding).
    pub fn encode_batch(&self, inputs: &[TextInput]) -> Result<EncodedBatch> {
        let rows = self.encode_all(inputs)?;
        Ok(EncodedBatch::from_rows(&rows, self.pad_id))
    }

    /// The truncation limit, in tokens, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Where [`max_length`](Self::max_length) came from.
    pub fn max_length_source(&self) -> &MaxLengthSource {
        &self.max_length_source
    }

    /// The id used for padding.
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// Number of distinct tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The `tokenizer.json` this tokenizer was loaded from (or the path given to
    /// [`from_tokenizer`](Self::from_tokenizer)).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fallbacks taken while loading (no `config.json`, no pad token, a clamped length), one sentence each, for
    /// the caller to show.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The wrapped tokenizer, with our truncation and without padding.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The token of `id`, if any.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    /// The id of `token`, if any.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The id of the model's unknown token (WordPiece/WordLevel `unk_token`, BPE `unk_token`, Unigram `unk_id`),
    /// if it has one.
    pub fn unk_id(&self) -> Option<u32> {
        use tokenizers::models::ModelWrapper;
        match self.tokenizer.get_model() {
            ModelWrapper::WordPiece(m) => self.tokenizer.token_to_id(&m.unk_token),
            ModelWrapper::WordLevel(m) => self.tokenizer.token_to_id(&m.unk_token),
            ModelWrapper::BPE(m) => m
                .unk_token
                .as_deref()
                .and_then(|t| self.tokenizer.token_to_id(t)),
            // `unk_id` is private in the `tokenizers` crate; its serialized form has it.
            ModelWrapper::Unigram(m) => serde_json::to_value(m)
                .ok()
                .and_then(|v| v.get("unk_id").and_then(Value::as_u64))
                .and_then(|id| u32::try_from(id).ok()),
        }
    }

    /// Ids of the added tokens marked special (`[CLS]`, `[SEP]`, `<s>`, ...), sorted.
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn encode_error(&self, cause: tokenizers::Error) -> Error {
        Error::Encode {
            path: self.path.clone(),
            cause,
        }
    }
}

fn ids_of(encoding: &Encoding) -> (Vec<i64>, Vec<i64>) {
    (
        encoding.get_ids().iter().map(|&i| i64::from(i)).collect(),
        encoding
            .get_type_ids()
            .iter()
            .map(|&i| i64::from(i))
            .collect(),
    )
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).map_err(|cause| Error::ReadTokenizer {
        path: path.to_path_buf(),
        cause,
    })?;
    Tokenizer::from_bytes(bytes).map_err(|cause| Error::ParseTokenizer {
        path: path.to_path_buf(),
        cause,
    })
}

/// The id of the pad token the folder names: in the tokenizer's own padding settings, else as `pad_token` of
/// `special_tokens_map.json` (a string or `{"content": ...}`), when the vocabulary has it.
fn named_pad_id(tokenizer: &Tokenizer, dir: &Path) -> Result<Option<i64>> {
    if let Some(id) = tokenizer
        .get_padding()
        .and_then(|p| tokenizer.token_to_id(&p.pad_token))
    {
        return Ok(Some(i64::from(id)));
    }
    let map = dir.join("special_tokens_map.json");
    if !map.is_file() {
        return Ok(None);
    }
    let obj = read_json_object(&map)?;
    let token = obj.get("pad_token").and_then(crate::trim::token_content);
    Ok(token.and_then(|t| tokenizer.token_to_id(t)).map(i64::from))
}

/// A pad token found by name when nothing names one: `[PAD]`, else `<pad>`.
fn guessed_pad_id(tokenizer: &Tokenizer) -> Option<i64> {
    ["[PAD]", "<pad>"]
        .into_iter()
        .find_map(|t| tokenizer.token_to_id(t))
        .map(i64::from)
}

fn read_json_object(path: &Path) -> Result<serde_json::Map<String, Value>> {
    let text = read_text(path)?;
    let value: Value = serde_json::from_str(&text).map_err(|cause| Error::InvalidJsonFile {
        path: path.to_path_buf(),
        cause,
    })?;
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err(Error::NotAnObject {
            path: path.to_path_buf(),
            line: 0,
            found: describe_json(&other),
        }),
    }
}

fn positive_int(path: &Path, field: &str, value: &Value) -> Result<usize> {
    value
        .as_u64()
        .filter(|&n| n > 0)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Error::WrongFieldType {
            path: path.to_path_buf(),
            line: 0,
            field: field.to_string(),
            expected: "a positive integer",
            found: describe_json(value),
        })
}

/// Model types whose position ids start after the padding index (`padding_idx + 1`), so that
/// `max_position_embeddings - pad_token_id - 1` positions are usable.
const OFFSET_POSITION_MODELS: &[&str] = &["roberta", "xlm-roberta", "camembert", "mpnet"];

fn read_model_config(path: &Path) -> Result<ModelConfig> {
    let obj = read_json_object(path)?;
    let pad_token_id = match obj.get("pad_token_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|&i| i >= 0)
                .ok_or_else(|| Error::WrongFieldType {
                    path: path.to_path_buf(),
                    line: 0,
                    field: "pad_token_id".to_string(),
                    expected: "a non-negative integer",
                    found: describe_json(v),
                })?,
        ),
    };
    let mut positions = obj
        .get("max_position_embeddings")
        .map(|v| positive_int(path, "max_position_embeddings", v))
        .transpose()?;
    let model_type = obj.get("model_type").and_then(Value::as_str).unwrap_or("");
    if OFFSET_POSITION_MODELS.contains(&model_type) {
        let offset = pad_token_id.unwrap_or(1) as usize + 1;
        positions = positions
            .map(|p| p.saturating_sub(offset))
            .filter(|&p| p > 0);
    }
    Ok(ModelConfig {
        path: path.to_path_buf(),
        positions,
        pad_token_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roberta_positions_are_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}"#,
        )
        .expect("write");
        let cfg = read_model_config(&path).expect("config");
        assert_eq!(cfg.positions, Some(512));
        assert_eq!(cfg.pad_token_id, Some(1));
    }

    #[test]
    fn config_field_types_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"max_position_embeddings": "512"}"#).expect("write");
        let err = read_model_config(&path).expect_err("bad type").to_string();
        assert_eq!(
            err,
            format!(
                "{}: field `max_position_embeddings` is not a positive integer (found string \"512\")",
                path.display()
            )
        );
        std::fs::write(&path, "[1]").expect("write");
        let err = read_model_config(&path)
            .expect_err("not an object")
            .to_string();
        assert_eq!(
            err,
            format!(
                "{}: expected a JSON object, found array [1]",
                path.display()
            )
        );
    }
}
