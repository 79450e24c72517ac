//! The `[calibration]` data of a pipeline as passes see it: one text corpus shared by every pass that needs data.
//!
//! [`CalibrationSpec::records`] is the one reader: it samples the records, tokenizes them with the tokenizer as
//! earlier passes left it, and (when asked) reads and checks their labels. Batches for forward statistics
//! ([`Records::batches`]) and labelled samples for losses ([`Records::draw`]) both come from it.

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
    /// The field of each record's second text, for sentence-pair tasks (MRPC): the records are then encoded as
    /// pairs, as the evaluation encodes them.
    pub pair_field: Option<String>,
}

use compressor_calibration::{
    int_field, length_sorted_order, read_jsonl, read_text_fields, read_texts, sample, text_field,
    TextInput, TextTokenizer,
};
use compressor_models::{EncodedBatch, ModelConfig};

use crate::error::{Error, Result};
use crate::files::SideFiles;
use compressor_calibration::cache::Hasher;

/// Which labels to read with the texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelRequest<'a> {
    /// Texts only.
    None,
    /// The labels in `field` if every record has one, else none.
    IfPresent { field: &'a str, classes: usize },
    /// The labels in `field`; a record without one is an error naming `key` and what needs them (`needed_by`,
    /// e.g. `loss = "cross-entropy"`).
    Required {
        field: &'a str,
        classes: usize,
        key: &'a str,
        needed_by: &'a str,
    },
}

/// The sampled calibration records, tokenized, with their labels when asked for and present.
#[derive(Debug, Clone, PartialEq)]
pub struct Records {
    /// `(input ids, token type ids)` per record, in sampling order.
    pub encoded: Vec<(Vec<i64>, Vec<i64>)>,
    pub labels: Option<Vec<usize>>,
    pub pad: i64,
}

impl Records {
    /// The records grouped into length-sorted batches of at most `batch_size` (deterministic).
    pub fn batches(&self, batch_size: usize) -> Vec<EncodedBatch> {
        let order = length_sorted_order(
            &self
                .encoded
                .iter()
                .map(|(ids, _)| ids.len())
                .collect::<Vec<_>>(),
        );
        order
            .chunks(batch_size.max(1))
            .map(|chunk| self.batch(chunk))
            .collect()
    }

    /// The records `order` (in the order given) as one padded batch.
    pub fn batch(&self, order: &[usize]) -> EncodedBatch {
        let rows: Vec<(Vec<i64>, Vec<i64>)> =
            order.iter().map(|&i| self.encoded[i].clone()).collect();
        EncodedBatch::from_rows(&rows, self.pad)
    }

    /// The records `order` (sorted into index order) as one batch with their labels, if the records have labels.
    pub fn draw(&self, order: &[usize]) -> (EncodedBatch, Option<Vec<usize>>) {
        let mut order = order.to_vec();
        order.sort_unstable();
        let labels = self
            .labels
            .as_ref()
            .map(|l| order.iter().map(|&i| l[i]).collect());
        (self.batch(&order), labels)
    }

    /// What identifies these records for the analyses cache: token ids, types and labels.
    pub fn hash(&self) -> String {
        let mut h = Hasher::default();
        h.part(&self.pad.to_le_bytes());
        for (ids, types) in &self.encoded {
            h.ints(ids).ints(types);
        }
        match &self.labels {
            Some(l) => h
                .part(b"labels")
                .ints(&l.iter().map(|&y| y as i64).collect::<Vec<_>>()),
            None => h.part(b"unlabelled"),
        };
        h.hex()
    }
}

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

    /// The sampled records, tokenized, with the labels `labels` asks for. An empty corpus is an error.
    pub fn records(
        &self,
        files: &SideFiles,
        config: &ModelConfig,
        labels: LabelRequest,
    ) -> Result<Records> {
        let labels = self.labels(labels)?;
        let inputs: Vec<TextInput> = match &self.pair_field {
            None => read_texts(&self.data, &self.field, None)?
                .into_iter()
                .map(TextInput::from)
                .collect(),
            Some(pair) => read_text_fields(&self.data, &[&self.field, pair], None)?
                .into_iter()
                .map(|mut row| {
                    let second = row.pop().unwrap_or_default();
                    let first = row.pop().unwrap_or_default();
                    TextInput::pair(first, second)
                })
                .collect(),
        };
        let texts = sample(inputs, self.samples, self.seed);
        if texts.is_empty() {
            return Err(Error::Config {
                key: "calibration.data".into(),
                problem: format!("`{}` holds no text", self.data.display()),
            });
        }
        let tokenizer = self.tokenizer(files, config)?;
        let encoded = tokenizer.encode_all(&texts)?;
        Ok(Records {
            encoded,
            labels,
            pad: tokenizer.pad_id(),
        })
    }

    /// The sampled calibration texts, tokenized and grouped into length-sorted batches of at most `batch_size`
    /// (deterministic for a given seed).
    pub fn batches(
        &self,
        files: &SideFiles,
        config: &ModelConfig,
        batch_size: usize,
    ) -> Result<Vec<EncodedBatch>> {
        Ok(self
            .records(files, config, LabelRequest::None)?
            .batches(batch_size))
    }

    /// The labels of the sampled records (sampled as the texts are), checked against the classifier's classes.
    fn labels(&self, request: LabelRequest) -> Result<Option<Vec<usize>>> {
        let (field, classes, required) = match request {
            LabelRequest::None => return Ok(None),
            LabelRequest::IfPresent { field, classes } => (field, classes, None),
            LabelRequest::Required {
                field,
                classes,
                key,
                needed_by,
            } => (field, classes, Some((key, needed_by))),
        };
        let key = required.map(|(k, _)| k);
        let is_jsonl = self
            .data
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| {
                matches!(e.to_ascii_lowercase().as_str(), "jsonl" | "ndjson" | "json")
            });
        let records = if is_jsonl {
            read_jsonl(&self.data)?
        } else {
            Vec::new()
        };
        let all_labelled =
            !records.is_empty() && records.iter().all(|(_, r)| r.contains_key(field));
        if !all_labelled {
            return match required {
                Some((key, needed_by)) => Err(Error::Config {
                    key: key.into(),
                    problem: format!(
                        "{needed_by} needs every record of `{}` to have a `{field}` field (JSONL)\nhint: set `label-field`, or use loss = \"self-distillation\"",
                        self.data.display()
                    ),
                }),
                None => Ok(None),
            };
        }
        let records = sample(records, self.samples, self.seed);
        let mut labels = Vec::with_capacity(records.len());
        for (line, r) in &records {
            // The text must be there too (as the texts are read).
            text_field(&self.data, *line, r, &self.field)?;
            let y = int_field(&self.data, *line, r, field)?;
            if y < 0 || y as usize >= classes {
                return Err(Error::Config {
                    key: key.unwrap_or("label-field").into(),
                    problem: format!(
                        "`{}` line {line}: label {y} is outside the classifier's {classes} classes (0 to {})",
                        self.data.display(),
                        classes - 1
                    ),
                });
            }
            labels.push(y as usize);
        }
        Ok(Some(labels))
    }
}
