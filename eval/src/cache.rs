//! On-disk cache of embeddings, keyed by (model fingerprint, truncation length, text), so repeated evaluations of
//! the same model do not recompute them, also across tasks that share texts (retrieval and clustering of one
//! corpus).
//!
//! The model fingerprint is the sha256 of config.json, tokenizer.json, the pooling files and every weight file.
//! Layout: `<dir>/embeddings/<sha256(fingerprint, max length)>/<xx>/<sha256(text)>.f32`, little-endian f32 values,
//! each written to a temporary name and renamed.

use std::io::Write;
use std::path::{Path, PathBuf};

use compressor_calibration::TextInput;
use sha2::{Digest, Sha256};

use crate::encoder::Encoder;
use crate::tasks::{Result, TaskError};

/// An embedding cache in one folder.
#[derive(Debug, Clone)]
pub struct EmbeddingCache {
    dir: PathBuf,
}

pub use compressor_calibration::default_cache_dir;

fn io(path: &Path, e: std::io::Error) -> TaskError {
    TaskError::Dataset {
        path: path.to_path_buf(),
        problem: format!("embedding cache: {e}"),
    }
}

pub use crate::encoder::model_fingerprint;

impl EmbeddingCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The folder of one model's embeddings at one truncation length.
    fn model_dir(&self, encoder: &Encoder) -> Result<PathBuf> {
        let mut h = Sha256::new();
        h.update(encoder.fingerprint()?.as_bytes());
        h.update((encoder.tokenizer.max_length() as u64).to_le_bytes());
        Ok(self
            .dir
            .join("embeddings")
            .join(format!("{:x}", h.finalize())))
    }

    fn text_path(dir: &Path, input: &TextInput) -> PathBuf {
        let mut h = Sha256::new();
        match input {
            TextInput::Single(a) => {
                h.update([0u8]);
                h.update(a.as_bytes());
            }
            TextInput::Pair(a, b) => {
                h.update([1u8]);
                h.update((a.len() as u64).to_le_bytes());
                h.update(a.as_bytes());
                h.update(b.as_bytes());
            }
        }
        let key = format!("{:x}", h.finalize());
        dir.join(&key[..2]).join(format!("{key}.f32"))
    }

    /// The cached embedding of each input, where present (unreadable entries count as absent).
    pub fn lookup(&self, encoder: &Encoder, inputs: &[TextInput]) -> Result<Vec<Option<Vec<f32>>>> {
        let dir = self.model_dir(encoder)?;
        Ok(inputs
            .iter()
            .map(|input| {
                let bytes = std::fs::read(Self::text_path(&dir, input)).ok()?;
                if bytes.is_empty() || bytes.len() % 4 != 0 {
                    return None;
                }
                Some(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )
            })
            .collect())
    }

    /// Store one embedding per input, each written to a temporary name and renamed.
    pub fn store(
        &self,
        encoder: &Encoder,
        inputs: &[TextInput],
        embeddings: &[Vec<f32>],
    ) -> Result<()> {
        let dir = self.model_dir(encoder)?;
        for (input, emb) in inputs.iter().zip(embeddings) {
            let path = Self::text_path(&dir, input);
            let Some(parent) = path.parent() else {
                continue;
            };
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            let bytes: Vec<u8> = emb.iter().flat_map(|v| v.to_le_bytes()).collect();
            let tmp = compressor_models::fsio::temp_beside(&path);
            let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
            f.write_all(&bytes).map_err(|e| io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        }
        Ok(())
    }
}
