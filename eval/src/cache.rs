//! On-disk cache of embeddings, keyed by (model fingerprint, data hash, truncation length), so repeated
//! evaluations of the same model on the same data do not recompute them.
//!
//! The model fingerprint is the sha256 of config.json, tokenizer.json, the pooling files and every weight file;
//! the data hash covers the exact input texts in order. Files: `<dir>/<key>.emb` = `u64 rows, u64 dim` (LE) then
//! f32 LE values, written to a temporary name and renamed.

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

/// `$COMPRESSOR_CACHE`, else `$XDG_CACHE_HOME/compressor`, else `~/.cache/compressor`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("COMPRESSOR_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("compressor");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/compressor"))
        .unwrap_or_else(|| std::env::temp_dir().join("compressor-cache"))
}

fn io(path: &Path, e: std::io::Error) -> TaskError {
    TaskError::Dataset {
        path: path.to_path_buf(),
        problem: format!("embedding cache: {e}"),
    }
}

/// sha256 over the files that determine a model's outputs.
pub fn model_fingerprint(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    let mut files: Vec<PathBuf> = [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    files.extend(compressor_models::store::weight_files(dir)?);
    for f in files.iter().filter(|f| f.is_file()) {
        let mut file = std::fs::File::open(f).map_err(|e| io(f, e))?;
        h.update(
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
                .as_bytes(),
        );
        std::io::copy(&mut file, &mut h).map_err(|e| io(f, e))?;
    }
    Ok(format!("{:x}", h.finalize()))
}

impl EmbeddingCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The cache key of embedding `inputs` with `encoder`.
    pub fn key(&self, encoder: &Encoder, inputs: &[TextInput]) -> Result<String> {
        let mut h = Sha256::new();
        h.update(encoder.fingerprint()?.as_bytes());
        h.update((encoder.tokenizer.max_length() as u64).to_le_bytes());
        for input in inputs {
            match input {
                TextInput::Single(a) => {
                    h.update([0u8]);
                    h.update((a.len() as u64).to_le_bytes());
                    h.update(a.as_bytes());
                }
                TextInput::Pair(a, b) => {
                    h.update([1u8]);
                    for t in [a, b] {
                        h.update((t.len() as u64).to_le_bytes());
                        h.update(t.as_bytes());
                    }
                }
            }
        }
        Ok(format!("{:x}", h.finalize()))
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join("embeddings").join(format!("{key}.emb"))
    }

    /// Cached embeddings, or None (missing or unreadable entries are recomputed).
    pub fn load(&self, key: &str) -> Result<Option<Vec<Vec<f32>>>> {
        let path = self.path(key);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(None);
        };
        if bytes.len() < 16 {
            return Ok(None);
        }
        let rows = u64::from_le_bytes(bytes[0..8].try_into().unwrap_or_default()) as usize;
        let dim = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default()) as usize;
        if bytes.len() != 16 + rows * dim * 4 || dim == 0 {
            return Ok(None);
        }
        let values: Vec<f32> = bytes[16..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Some(values.chunks(dim).map(<[f32]>::to_vec).collect()))
    }

    /// Store embeddings atomically.
    pub fn store(&self, key: &str, embeddings: &[Vec<f32>]) -> Result<()> {
        let path = self.path(key);
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        let dim = embeddings.first().map_or(0, Vec::len);
        let mut bytes = Vec::with_capacity(16 + embeddings.len() * dim * 4);
        bytes.extend_from_slice(&(embeddings.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&(dim as u64).to_le_bytes());
        for row in embeddings {
            for v in row {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    }
}
