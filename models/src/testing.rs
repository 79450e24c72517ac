//! Tiny seeded BERT checkpoints built in-process, for tests of every crate (and for users' own tests).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use crate::error::{Error, Result};
use crate::tensor::{DType, HostTensor};

pub use crate::rng::SplitMix64;

/// Shape options of a tiny BERT.
#[derive(Debug, Clone)]
pub struct TinyBert {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
    /// `Some(n)`: `BertForSequenceClassification` with n labels and the `bert.` prefix.
    pub num_labels: Option<usize>,
    pub dtype: DType,
    pub seed: u64,
}

impl Default for TinyBert {
    fn default() -> Self {
        Self {
            vocab_size: 64,
            hidden_size: 16,
            layers: 2,
            heads: 2,
            intermediate_size: 32,
            max_positions: 32,
            num_labels: None,
            dtype: DType::F32,
            seed: 0,
        }
    }
}

impl TinyBert {
    /// The config.json object.
    pub fn config(&self) -> serde_json::Value {
        let mut c = json!({
            "architectures": [if self.num_labels.is_some() { "BertForSequenceClassification" } else { "BertModel" }],
            "attention_probs_dropout_prob": 0.1,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "hidden_size": self.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "layer_norm_eps": 1e-12,
            "max_position_embeddings": self.max_positions,
            "model_type": "bert",
            "num_attention_heads": self.heads,
            "num_hidden_layers": self.layers,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            "type_vocab_size": 2,
            "vocab_size": self.vocab_size,
        });
        if let Some(n) = self.num_labels {
            let id2label: serde_json::Map<String, serde_json::Value> = (0..n)
                .map(|i| (i.to_string(), json!(format!("label_{i}"))))
                .collect();
            c["id2label"] = serde_json::Value::Object(id2label);
        }
        c
    }

    /// Every tensor (disk names) with seeded values: weights ~ U(-0.5, 0.5), LayerNorm weights near 1.
    pub fn tensors(&self) -> Result<Vec<(String, HostTensor)>> {
        let cfg_path = Path::new("config.json");
        let config = crate::arch::ModelConfig::parse(cfg_path, &self.config().to_string())?;
        let mut rng = SplitMix64::new(self.seed);
        let prefix = if self.num_labels.is_some() {
            "bert."
        } else {
            ""
        };
        let mut out = Vec::new();
        for spec in config.expected_tensors() {
            let n: usize = spec.shape.iter().product();
            let name = if config.is_head_tensor(&spec.name) {
                spec.name.clone()
            } else {
                format!("{prefix}{}", spec.name)
            };
            let tensor = if spec.kind == crate::names::Kind::Buffer {
                let ids: Vec<i64> = (0..n as i64).collect();
                HostTensor::from_i64(spec.shape.clone(), &ids)?
            } else {
                let is_norm_weight = spec.role == crate::names::Role::Norm
                    && spec.kind == crate::names::Kind::Weight;
                let values: Vec<f32> = (0..n)
                    .map(|_| {
                        let r = rng.next_f32();
                        if is_norm_weight {
                            1.0 + 0.1 * r
                        } else {
                            0.5 * r
                        }
                    })
                    .collect();
                HostTensor::from_f32(spec.shape.clone(), &values, self.dtype)?
            };
            out.push((name, tensor));
        }
        Ok(out)
    }

    /// Write config.json and model.safetensors into `dir` (created if needed).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let config_path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&self.config())
            .map_err(|e| Error::Runtime(e.to_string()))?;
        std::fs::write(&config_path, text + "\n").map_err(|e| Error::io(&config_path, e))?;
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        crate::st::write(&dir.join("model.safetensors"), &self.tensors()?, &meta)
    }
}
