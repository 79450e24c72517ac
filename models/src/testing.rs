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

    /// Write the model (as [`TinyBert::write`]) with one weight of layer 0 in every storage form (forms.rs), as
    /// our artifact writer would: `attention.self.query` low-rank with f32 factors of full rank (`u = W`,
    /// `v = I`), `attention.self.key` low-rank of rank 4 with 4-bit and 8-bit factors, `attention.self.value`
    /// sparse with a bitmask (every third element zero), `intermediate.dense` 2:4 in BF16, `output.dense`
    /// quantized (4 bits, groups of 8) with its `quantization_config`. Returns the dense value of every tensor
    /// as it reads back (owned copies), by canonical name.
    pub fn write_every_form(&self, dir: &Path) -> Result<BTreeMap<String, HostTensor>> {
        use crate::forms::{Factor, FactorForm, Stored};
        use crate::quant::{Encoding, QuantTensor, Strategy};

        self.write(dir)?;
        let config = crate::arch::ModelConfig::load(dir)?;
        let mut store = crate::store::TensorStore::open(dir, &config)?;
        let fail = |name: &str, problem: String| Error::Runtime(format!("`{name}`: {problem}"));
        let matrix =
            |store: &crate::store::TensorStore, name: &str| -> Result<(Vec<f32>, usize, usize)> {
                let t = store.get(name)?;
                match t.shape[..] {
                    [r, c] => Ok((t.to_f32(name)?, r, c)),
                    _ => Err(fail(
                        name,
                        format!("has shape {:?}, expected a matrix", t.shape),
                    )),
                }
            };
        let l0 = |m: &str| format!("encoder.layer.0.{m}.weight");
        let dense = FactorForm::Dense { dtype: DType::F32 };
        let name = l0("attention.self.query");
        let (w, rows, cols) = matrix(&store, &name)?;
        let eye: Vec<f32> = (0..cols * cols)
            .map(|i| if i % (cols + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        let low = Factor::from_f32(&w, rows, cols, dense)
            .and_then(|u| Stored::low_rank(u, Factor::from_f32(&eye, cols, cols, dense)?))
            .map_err(|p| fail(&name, p))?;
        store.set_stored(&name, low);
        let query_rank = cols;

        let name = l0("attention.self.key");
        let (_, rows, cols) = matrix(&store, &name)?;
        let mut rng = SplitMix64::new(self.seed ^ 0x5eed);
        let mut random = |n: usize| (0..n).map(|_| rng.next_f32() - 0.5).collect::<Vec<f32>>();
        let (u, v) = (random(rows * 4), random(4 * cols));
        let q = |bits, strategy| FactorForm::Quant {
            encoding: Encoding::symmetric(bits, strategy),
        };
        let low = Factor::from_f32(&u, rows, 4, q(4, Strategy::Group { size: 4 }))
            .and_then(|u| {
                Stored::low_rank(u, Factor::from_f32(&v, 4, cols, q(8, Strategy::Channel))?)
            })
            .map_err(|p| fail(&name, p))?;
        store.set_stored(&name, low);

        let name = l0("attention.self.value");
        let (mut w, rows, cols) = matrix(&store, &name)?;
        w.iter_mut().step_by(3).for_each(|x| *x = 0.0);
        let sparse =
            Stored::sparse_from_dense(&w, rows, cols, DType::F32).map_err(|p| fail(&name, p))?;
        store.set_stored(&name, sparse);

        let name = l0("intermediate.dense");
        let (mut w, rows, cols) = matrix(&store, &name)?;
        for g in w.chunks_mut(4) {
            g[1] = 0.0;
            g[2] = 0.0;
        }
        let sparse = Stored::two_four(&w, rows, cols, DType::BF16).map_err(|p| fail(&name, p))?;
        store.set_stored(&name, sparse);

        let name = l0("output.dense");
        let (w, rows, cols) = matrix(&store, &name)?;
        let e = Encoding::symmetric(4, Strategy::Group { size: 8 });
        let quant = QuantTensor::quantize(&w, rows, cols, e).map_err(|p| fail(&name, p))?;
        store.set_quant(&name, quant);

        // Layer 1: sparse with quantized values, a bitmask with asymmetric 3-bit channel codes and 2:4 with
        // 4-bit group codes.
        let l1 = |m: &str| format!("encoder.layer.1.{m}.weight");
        let name = l1("attention.self.value");
        let (mut w, rows, cols) = matrix(&store, &name)?;
        w.iter_mut().skip(1).step_by(2).for_each(|x| *x = 0.0);
        let asymmetric = Encoding {
            symmetric: false,
            ..Encoding::symmetric(3, Strategy::Channel)
        };
        let sparse = Stored::sparse_quantized(
            crate::forms::SparsePattern::Bitmask,
            &w,
            rows,
            cols,
            asymmetric,
        )
        .map_err(|p| fail(&name, p))?;
        store.set_stored(&name, sparse);
        let name = l1("intermediate.dense");
        let (mut w, rows, cols) = matrix(&store, &name)?;
        for g in w.chunks_mut(4) {
            g[0] = 0.0;
            g[3] = 0.0;
        }
        let e = Encoding::symmetric(4, Strategy::Group { size: 8 });
        let sparse =
            Stored::sparse_quantized(crate::forms::SparsePattern::TwoFour, &w, rows, cols, e)
                .map_err(|p| fail(&name, p))?;
        store.set_stored(&name, sparse);

        let mut decoded = BTreeMap::new();
        for name in store.names() {
            let t = store.get(name)?;
            let owned = HostTensor::from_bytes(t.dtype, t.shape.clone(), t.bytes().to_vec())?;
            decoded.insert(name.to_string(), owned);
        }
        // The architecture lists the factored Linears with their ranks.
        let mut config = config;
        let mut layers = config.bert().layers.clone();
        layers[0].low_rank = BTreeMap::from([
            ("attention.self.query".to_string(), query_rank),
            ("attention.self.key".to_string(), 4),
        ]);
        config.set_layers(layers)?;
        save(dir, &config, store)?;
        Ok(decoded)
    }
}

/// Write `store` and `config` back into `dir` as our artifact writer would: every tensor in its stored form (the
/// `quantization_config` of the quantized modules in config.json), `model.safetensors` written beside and renamed
/// (the old file may still be mapped by the tensors just read).
pub fn save(
    dir: &Path,
    config: &crate::arch::ModelConfig,
    store: crate::store::TensorStore,
) -> Result<()> {
    let mut raw = config.raw.clone();
    raw.insert(
        "quantization_config".into(),
        crate::quant::ct::quantization_config(&store.quantized_modules(config), true),
    );
    let tensors = store.disk_tensors(config)?;
    let metadata = store.disk_metadata(config);
    drop(store);
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(raw))
        .map_err(|e| Error::Runtime(e.to_string()))?;
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, text + "\n").map_err(|e| Error::io(&config_path, e))?;
    let staged = dir.join("model.safetensors.partial");
    crate::st::write(&staged, &tensors, &metadata)?;
    let path = dir.join("model.safetensors");
    std::fs::rename(&staged, &path).map_err(|e| Error::io(&path, e))
}
