//! Architecture configs: a closed set of model families read from `config.json`, each listing every tensor it
//! expects with shape, role and kind. BERT (`BertModel`, `BertForSequenceClassification`) is the first family.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::names::{Kind, Role, TensorSpec};

/// Model types we can load, for error hints.
pub const KNOWN_MODEL_TYPES: [&str; 1] = ["bert"];
/// Architectures we can load, for error hints.
pub const KNOWN_ARCHITECTURES: [&str; 2] = ["BertModel", "BertForSequenceClassification"];

/// The feed-forward activation (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, `x * 0.5 * (1 + erf(x / sqrt 2))` (HF `gelu`).
    Gelu,
    /// Tanh approximation (HF `gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

/// What sits on top of the encoder.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    /// `BertModel`: encoder (+ optional pooler) only.
    None,
    /// `BertForSequenceClassification`: pooler + `classifier` Linear(hidden, num_labels).
    SequenceClassification {
        num_labels: usize,
        /// Label names by id, from `id2label` (`LABEL_i` when absent).
        id2label: Vec<String>,
        /// `regression` when `num_labels == 1` or `problem_type` says so.
        regression: bool,
    },
}

/// The BERT hyper-parameters we use, read from config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: Activation,
    pub pad_token_id: Option<i64>,
    pub head: Head,
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// A closed enum of supported families; new families add a variant.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchConfig {
    Bert(BertConfig),
}

/// A parsed `config.json`: the raw object (kept verbatim, key order preserved, for writing back) and the
/// typed architecture.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub raw: Map<String, Value>,
    pub model_type: String,
    pub architecture: String,
    pub arch: ArchConfig,
}

impl ModelConfig {
    /// Read `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        if !path.is_file() {
            return Err(Error::MissingConfig {
                dir: dir.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::parse(&path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|source| Error::ConfigJson {
            path: path.to_path_buf(),
            source,
        })?;
        let Value::Object(raw) = value else {
            return Err(Error::ConfigKey {
                path: path.to_path_buf(),
                key: "(top level)".into(),
                problem: "must be a JSON object".into(),
            });
        };
        let keys = Keys { path, raw: &raw };
        let model_type = keys.string("model_type")?;
        if !KNOWN_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(Error::UnknownModelType {
                path: path.to_path_buf(),
                model_type,
                known: KNOWN_MODEL_TYPES.to_vec(),
            });
        }
        let architecture = match raw.get("architectures") {
            None | Some(Value::Null) => "BertModel".to_string(),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            Some(_) => {
                return Err(Error::ConfigKey {
                    path: path.to_path_buf(),
                    key: "architectures".into(),
                    problem: "must be a list of one class name".into(),
                })
            }
        };
        if !KNOWN_ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(Error::UnsupportedArchitecture {
                path: path.to_path_buf(),
                architecture,
                known: KNOWN_ARCHITECTURES.to_vec(),
            });
        }
        let head = if architecture == "BertForSequenceClassification" {
            keys.classification_head()?
        } else {
            Head::None
        };
        let hidden_act = match keys.string("hidden_act")?.as_str() {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return Err(Error::ConfigKey {
                    path: path.to_path_buf(),
                    key: "hidden_act".into(),
                    problem: format!("`{other}` is not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, relu)"),
                })
            }
        };
        if let Some(Value::String(p)) = raw.get("position_embedding_type") {
            if p != "absolute" {
                return Err(Error::ConfigKey {
                    path: path.to_path_buf(),
                    key: "position_embedding_type".into(),
                    problem: format!("`{p}` is not supported (supported: absolute)"),
                });
            }
        }
        let bert = BertConfig {
            vocab_size: keys.positive("vocab_size")?,
            hidden_size: keys.positive("hidden_size")?,
            num_hidden_layers: keys.positive("num_hidden_layers")?,
            num_attention_heads: keys.positive("num_attention_heads")?,
            intermediate_size: keys.positive("intermediate_size")?,
            max_position_embeddings: keys.positive("max_position_embeddings")?,
            type_vocab_size: keys.positive("type_vocab_size")?,
            layer_norm_eps: match raw.get("layer_norm_eps") {
                None => 1e-12,
                Some(v) => v
                    .as_f64()
                    .filter(|e| *e > 0.0)
                    .ok_or_else(|| Error::ConfigKey {
                        path: path.to_path_buf(),
                        key: "layer_norm_eps".into(),
                        problem: format!("must be a positive number, found {v}"),
                    })?,
            },
            hidden_act,
            pad_token_id: raw.get("pad_token_id").and_then(Value::as_i64),
            head,
        };
        if !bert.hidden_size.is_multiple_of(bert.num_attention_heads) {
            return Err(Error::ConfigKey {
                path: path.to_path_buf(),
                key: "num_attention_heads".into(),
                problem: format!(
                    "{} does not divide hidden_size {}",
                    bert.num_attention_heads, bert.hidden_size
                ),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            raw,
            model_type,
            architecture,
            arch: ArchConfig::Bert(bert),
        })
    }

    /// Set the top-level key `key` to `value` (`None` removes it) and parse the result again, so the typed view
    /// follows (e.g. `vocab_size` after vocabulary trimming). On error the config is left unchanged.
    pub fn set(&mut self, key: &str, value: Option<Value>) -> Result<()> {
        let mut raw = self.raw.clone();
        match value {
            Some(v) => {
                raw.insert(key.to_string(), v);
            }
            None => {
                raw.remove(key);
            }
        }
        let text =
            serde_json::to_string(&Value::Object(raw)).map_err(|source| Error::ConfigJson {
                path: self.path.clone(),
                source,
            })?;
        *self = Self::parse(&self.path, &text)?;
        Ok(())
    }

    pub fn bert(&self) -> &BertConfig {
        match &self.arch {
            ArchConfig::Bert(b) => b,
        }
    }

    /// Every tensor the architecture expects, by canonical name (model prefix stripped), in model order.
    pub fn expected_tensors(&self) -> Vec<TensorSpec> {
        let c = self.bert();
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let mut out = Vec::new();
        let mut push =
            |name: String, shape: Vec<usize>, role: Role, kind: Kind, layer: Option<usize>| {
                out.push(TensorSpec {
                    name,
                    shape,
                    role,
                    kind,
                    layer,
                    optional: kind == Kind::Buffer,
                })
            };
        push(
            "embeddings.word_embeddings.weight".into(),
            vec![c.vocab_size, h],
            Role::EmbedTokens,
            Kind::Weight,
            None,
        );
        push(
            "embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, h],
            Role::EmbedPositions,
            Kind::Weight,
            None,
        );
        push(
            "embeddings.token_type_embeddings.weight".into(),
            vec![c.type_vocab_size, h],
            Role::EmbedTypes,
            Kind::Weight,
            None,
        );
        push(
            "embeddings.LayerNorm.weight".into(),
            vec![h],
            Role::Norm,
            Kind::Weight,
            None,
        );
        push(
            "embeddings.LayerNorm.bias".into(),
            vec![h],
            Role::Norm,
            Kind::Bias,
            None,
        );
        push(
            "embeddings.position_ids".into(),
            vec![1, c.max_position_embeddings],
            Role::Buffer,
            Kind::Buffer,
            None,
        );
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let linears = [
                ("attention.self.query", Role::AttnQ, h, h),
                ("attention.self.key", Role::AttnK, h, h),
                ("attention.self.value", Role::AttnV, h, h),
                ("attention.output.dense", Role::AttnOut, h, h),
                ("intermediate.dense", Role::FfnUp, i, h),
                ("output.dense", Role::FfnDown, h, i),
            ];
            for (m, role, out_f, in_f) in linears {
                push(
                    format!("{p}.{m}.weight"),
                    vec![out_f, in_f],
                    role,
                    Kind::Weight,
                    Some(l),
                );
                push(
                    format!("{p}.{m}.bias"),
                    vec![out_f],
                    role,
                    Kind::Bias,
                    Some(l),
                );
            }
            for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
                push(
                    format!("{p}.{n}.weight"),
                    vec![h],
                    Role::Norm,
                    Kind::Weight,
                    Some(l),
                );
                push(
                    format!("{p}.{n}.bias"),
                    vec![h],
                    Role::Norm,
                    Kind::Bias,
                    Some(l),
                );
            }
        }
        push(
            "pooler.dense.weight".into(),
            vec![h, h],
            Role::Pooler,
            Kind::Weight,
            None,
        );
        push(
            "pooler.dense.bias".into(),
            vec![h],
            Role::Pooler,
            Kind::Bias,
            None,
        );
        if let Head::SequenceClassification { num_labels, .. } = &c.head {
            push(
                "classifier.weight".into(),
                vec![*num_labels, h],
                Role::Head,
                Kind::Weight,
                None,
            );
            push(
                "classifier.bias".into(),
                vec![*num_labels],
                Role::Head,
                Kind::Bias,
                None,
            );
        }
        // The pooler is optional for BertModel (sentence-transformers checkpoints may drop it) but required
        // under a classification head.
        if c.head == Head::None {
            for t in out.iter_mut().filter(|t| t.role == Role::Pooler) {
                t.optional = true;
            }
        }
        out
    }

    /// The prefix a checkpoint of this architecture may put before canonical names.
    pub fn model_prefix(&self) -> &'static str {
        "bert."
    }

    /// Tensors (by canonical name) that belong to the head and never carry the model prefix.
    pub fn is_head_tensor(&self, canonical: &str) -> bool {
        canonical.starts_with("classifier.")
    }

    /// Number of parameters (buffers excluded) of the architecture as configured.
    pub fn parameter_count(&self, present: impl Fn(&str) -> bool) -> usize {
        self.expected_tensors()
            .iter()
            .filter(|t| t.kind != Kind::Buffer && (!t.optional || present(&t.name)))
            .map(|t| t.shape.iter().product::<usize>())
            .sum()
    }
}

struct Keys<'a> {
    path: &'a Path,
    raw: &'a Map<String, Value>,
}

impl Keys<'_> {
    fn err(&self, key: &str, problem: String) -> Error {
        Error::ConfigKey {
            path: self.path.to_path_buf(),
            key: key.into(),
            problem,
        }
    }

    fn string(&self, key: &str) -> Result<String> {
        match self.raw.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.err(key, format!("must be a string, found {v}"))),
            None => Err(self.err(key, "is missing".into())),
        }
    }

    fn positive(&self, key: &str) -> Result<usize> {
        match self.raw.get(key) {
            Some(v) => v
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| self.err(key, format!("must be a positive integer, found {v}"))),
            None => Err(self.err(key, "is missing".into())),
        }
    }

    fn classification_head(&self) -> Result<Head> {
        let id2label = match self.raw.get("id2label") {
            Some(Value::Object(m)) => {
                let mut labels: Vec<(usize, String)> = Vec::new();
                for (k, v) in m {
                    let id = k.parse::<usize>().map_err(|_| {
                        self.err("id2label", format!("key `{k}` is not a label id"))
                    })?;
                    let name = v.as_str().ok_or_else(|| {
                        self.err("id2label", format!("label `{k}` is not a string"))
                    })?;
                    labels.push((id, name.to_string()));
                }
                labels.sort();
                if labels.iter().enumerate().any(|(i, (id, _))| i != *id) {
                    return Err(self.err("id2label", "ids must be 0..n without gaps".into()));
                }
                Some(labels.into_iter().map(|(_, n)| n).collect::<Vec<_>>())
            }
            None | Some(Value::Null) => None,
            Some(v) => return Err(self.err("id2label", format!("must be an object, found {v}"))),
        };
        let num_labels = match (
            self.raw.get("num_labels").and_then(Value::as_u64),
            &id2label,
        ) {
            (Some(n), _) => n as usize,
            (None, Some(l)) => l.len(),
            (None, None) => 2,
        };
        let id2label =
            id2label.unwrap_or_else(|| (0..num_labels).map(|i| format!("LABEL_{i}")).collect());
        if id2label.len() != num_labels {
            return Err(self.err(
                "id2label",
                format!(
                    "has {} labels but num_labels is {num_labels}",
                    id2label.len()
                ),
            ));
        }
        let regression = num_labels == 1
            || self.raw.get("problem_type").and_then(Value::as_str) == Some("regression");
        Ok(Head::SequenceClassification {
            num_labels,
            id2label,
            regression,
        })
    }
}

/// How the checkpoint turns token states into one sentence embedding (sentence-transformers files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolingMode {
    Mean,
    Cls,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Pooling {
    pub mode: PoolingMode,
    pub normalize: bool,
    /// Whether the checkpoint declared it (sentence-transformers `modules.json`) or it is our default.
    pub declared: bool,
}

impl Pooling {
    /// Read `modules.json` and the Pooling module's `config.json`; without them: mean pooling, no normalisation.
    pub fn load(dir: &Path) -> Result<Self> {
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(Self {
                mode: PoolingMode::Mean,
                normalize: false,
                declared: false,
            });
        }
        let modules: Value = read_json(&modules_path)?;
        let list = modules.as_array().ok_or_else(|| Error::ConfigKey {
            path: modules_path.clone(),
            key: "(top level)".into(),
            problem: "must be a list of modules".into(),
        })?;
        let kind_of = |m: &Value| {
            m.get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let normalize = list.iter().any(|m| kind_of(m).ends_with(".Normalize"));
        let pooling = list.iter().find(|m| kind_of(m).ends_with(".Pooling"));
        let mode = match pooling {
            None => PoolingMode::Mean,
            Some(m) => {
                let sub = m.get("path").and_then(Value::as_str).unwrap_or("1_Pooling");
                let cfg_path = dir.join(sub).join("config.json");
                let cfg: Value = read_json(&cfg_path)?;
                let flag = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
                if flag("pooling_mode_cls_token") {
                    PoolingMode::Cls
                } else if flag("pooling_mode_max_tokens") {
                    PoolingMode::Max
                } else if flag("pooling_mode_mean_tokens") {
                    PoolingMode::Mean
                } else {
                    return Err(Error::ConfigKey {
                        path: cfg_path,
                        key: "pooling_mode_*".into(),
                        problem: "declares no supported pooling mode (supported: mean, cls, max)"
                            .into(),
                    });
                }
            }
        };
        Ok(Self {
            mode,
            normalize,
            declared: true,
        })
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::ConfigJson {
        path: path.to_path_buf(),
        source,
    })
}

/// The sentence-transformers `max_seq_length`, when declared.
pub fn sentence_max_length(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    Ok(read_json(&path)?
        .get("max_seq_length")
        .and_then(Value::as_u64)
        .map(|n| n as usize))
}
