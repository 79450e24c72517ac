//! The `[calibration]` data of a pipeline as passes see it: one text corpus shared by every pass that needs data.

use std::path::PathBuf;

use serde::Serialize;

/// Where the calibration texts come from and how many to use. Paths are resolved (absolute or relative to the
/// working folder) by the time a pass sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CalibrationSpec {
    /// A JSONL file with one record per line (or a text file with one text per line).
    pub data: PathBuf,
    /// The record field holding the text.
    pub field: String,
    /// How many records to sample.
    pub samples: usize,
    /// Token sequences are cut to this length.
    pub max_length: usize,
    /// Seed for sampling.
    pub seed: u64,
}

use compressor_calibration::{length_sorted_order, read_texts, sample, TextInput, TextTokenizer};
use compressor_models::{EncodedBatch, ModelConfig};

use crate::error::{Error, Result};
use crate::files::SideFiles;

impl CalibrationSpec {
    /// The model's tokenizer as earlier passes left it (a rewritten `tokenizer.json` wins over the original),
    /// truncating to `max_length`.
    pub fn tokenizer(&self, files: &SideFiles, config: &ModelConfig) -> Result<TextTokenizer> {
        if !files.is_changed("tokenizer.json") {
            return Ok(TextTokenizer::from_model_dir(
                files.dir(),
                Some(self.max_length),
            )?);
        }
        let path = files.dir().join("tokenizer.json");
        let bytes = files.read("tokenizer.json")?.unwrap_or_default();
        let tokenizer = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| Error::File {
            path: path.clone(),
            problem: format!("(as rewritten by an earlier pass) does not load: {e}"),
        })?;
        let pad = config.bert().pad_token_id.unwrap_or(0);
        Ok(TextTokenizer::from_tokenizer(
            tokenizer,
            path,
            self.max_length,
            pad,
        )?)
    }

    /// The sampled calibration texts, tokenized and grouped into length-sorted batches of at most `batch_size`
    /// (deterministic for a given seed).
    pub fn batches(
        &self,
        files: &SideFiles,
        config: &ModelConfig,
        batch_size: usize,
    ) -> Result<Vec<EncodedBatch>> {
        let texts = read_texts(&self.data, &self.field, None)?;
        let texts = sample(texts, self.samples, self.seed);
        let tokenizer = self.tokenizer(files, config)?;
        let inputs: Vec<TextInput> = texts.into_iter().map(TextInput::from).collect();
        let encoded = tokenizer.encode_all(&inputs)?;
        let order =
            length_sorted_order(&encoded.iter().map(|(ids, _)| ids.len()).collect::<Vec<_>>());
        let mut batches = Vec::new();
        for chunk in order.chunks(batch_size.max(1)) {
            let rows: Vec<(Vec<i64>, Vec<i64>)> =
                chunk.iter().map(|&i| encoded[i].clone()).collect();
            batches.push(EncodedBatch::from_rows(&rows, tokenizer.pad_id()));
        }
        Ok(batches)
    }
}
