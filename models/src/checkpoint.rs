//! A Hugging Face checkpoint folder: config, tensors and (optional) sentence-transformers pooling.

use std::path::{Path, PathBuf};

use crate::arch::{ModelConfig, Pooling};
use crate::error::{Error, Result};
use crate::quant::act::{self, ActivationQuant};
use crate::store::TensorStore;

/// A loaded checkpoint: metadata parsed and checked, tensors memory-mapped (not read).
#[derive(Debug)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub store: TensorStore,
    pub pooling: Pooling,
    /// Static activation quantization scales (`activation_quantization.json`), when the folder has them.
    pub activations: Option<ActivationQuant>,
}

impl Checkpoint {
    /// Open `dir`: parse config.json, map the safetensors files, validate them against the architecture.
    /// Only headers are read; weights stay on disk until used.
    pub fn open(dir: &Path) -> Result<Self> {
        let config = ModelConfig::load(dir)?;
        let store = TensorStore::open(dir, &config)?;
        store.check(&config)?;
        let pooling = Pooling::load(dir)?;
        let act_path = dir.join(act::FILE);
        let activations = if act_path.is_file() {
            let bytes = std::fs::read(&act_path).map_err(|e| Error::io(&act_path, e))?;
            Some(
                ActivationQuant::from_json(&bytes).map_err(|problem| Error::ConfigKey {
                    path: act_path.clone(),
                    key: "(file)".into(),
                    problem,
                })?,
            )
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            store,
            pooling,
            activations,
        })
    }

    /// Parameters present (buffers such as `position_ids` excluded).
    pub fn parameter_count(&self) -> usize {
        self.config.parameter_count(|n| self.store.contains(n))
    }
}
