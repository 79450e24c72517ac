//! Calibration and evaluation inputs: local datasets, tokenization and batching with dynamic padding.
//!
//! - [`data`] reads local datasets strictly: JSONL ([`read_jsonl`] plus the typed field getters [`text_field`],
//!   [`number_field`], [`int_field`]), and texts from JSONL, `.txt`, TSV or CSV files ([`read_texts`],
//!   [`read_text_fields`]); [`sample`] subsamples deterministically from a seed and [`length_sorted_order`] groups
//!   similar lengths for batching. Every error names the file, the line and the field.
//! - [`tokenize`] wraps a model folder's `tokenizer.json` ([`TextTokenizer`]): the file's own padding and
//!   truncation are switched off and replaced by longest-first truncation to a resolved max length and dynamic
//!   right padding into a [`compressor_models::EncodedBatch`].
//!
//! - [`vocab`] mines token counts of a corpus (a cached statistic) and selects the ids a trimmed vocabulary keeps;
//!   [`trim`] rewrites `tokenizer.json` and its side files for the kept ids (WordPiece, BPE, Unigram).
//!
//! ```no_run
//! # fn main() -> compressor_calibration::Result<()> {
//! use std::path::Path;
//! use compressor_calibration::{length_sorted_order, read_texts, sample, TextInput, TextTokenizer};
//!
//! let tok = TextTokenizer::from_model_dir(Path::new("models/all-MiniLM-L6-v2"), Some(128))?;
//! let texts = sample(read_texts(Path::new("data/calibration-wiki/en.jsonl"), "text", None)?, 256, 0);
//! let inputs: Vec<TextInput> = texts.into_iter().map(TextInput::from).collect();
//! let lengths: Vec<usize> = tok.encode_all(&inputs)?.iter().map(|(ids, _)| ids.len()).collect();
//! let order = length_sorted_order(&lengths);
//! for chunk in order.chunks(32) {
//!     let rows: Vec<TextInput> = chunk.iter().map(|&i| inputs[i].clone()).collect();
//!     let batch = tok.encode_batch(&rows)?;
//!     assert!(batch.seq_len <= tok.max_length());
//! }
//! # Ok(())
//! # }
//! ```

pub mod cache;
pub mod data;
pub mod error;
pub mod testing;
pub mod tokenize;
pub mod trim;
pub mod vocab;

pub use cache::default_cache_dir;
pub use data::{
    int_field, length_sorted_order, number_field, read_jsonl, read_text_fields, read_texts, sample,
    text_field, Record, SplitMix64,
};
pub use error::{Error, Result};
pub use tokenize::{MaxLengthSource, TextInput, TextTokenizer, DEFAULT_MAX_LENGTH};
