//! Architecture configs: a closed set of model families read from `config.json`, each listing every tensor it
//! expects with shape, role and kind. The BERT-like encoders (BERT, RoBERTa / XLM-R, DistilBERT, MPNet) share one
//! typed config, [`BertConfig`]; what differs between them (names, keys, positions) is in [`crate::family`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::family::{Family, HeadAct, Naming, Slot};
use crate::names::{Kind, Role, TensorSpec};

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

/// The most layers, and heads per layer, a config may declare.
pub const MAX_COUNT: usize = 65_536;

/// The key of config.json under which compressor describes what a Hugging Face config cannot say (per-layer
/// head sets and widths).
pub const EXTENSION_KEY: &str = "compressor";

/// The shape of one encoder layer. A plain Hugging Face config gives every layer the same shape; a pruned or
/// factorized model describes each layer in the `compressor` extension of config.json.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerShape {
    /// The attention heads kept, by index in the original layer (`0..num_attention_heads`), ascending. Empty:
    /// the attention sublayer is dropped (only the output bias and LayerNorm remain).
    pub heads: Vec<usize>,
    /// Width of each head's query and key.
    pub qk_head_dim: usize,
    /// Width of each head's value (the output projection takes `heads * vo_head_dim` inputs).
    pub vo_head_dim: usize,
    /// FFN width. 0: the FFN sublayer is dropped (only the down projection's bias and LayerNorm remain).
    pub intermediate_size: usize,
    /// Index of this layer in the model it was derived from (layers may have been dropped).
    pub source: usize,
    /// The Linears stored as a product of two factors, `W = U V` with `U [out, r]` and `V [r, in]`, by module
    /// name under the layer (`attention.self.value` in BERT) with their rank `r`. Every other Linear is one matrix
    /// (dense or quantized).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub low_rank: BTreeMap<String, usize>,
}

impl LayerShape {
    /// `heads * qk_head_dim`: the output width of the query and key projections.
    pub fn qk_width(&self) -> usize {
        self.heads.len() * self.qk_head_dim
    }

    /// `heads * vo_head_dim`: the output width of the value projection.
    pub fn vo_width(&self) -> usize {
        self.heads.len() * self.vo_head_dim
    }

    pub fn has_attention(&self) -> bool {
        !self.heads.is_empty()
    }

    pub fn has_ffn(&self) -> bool {
        self.intermediate_size > 0
    }

    /// `[out, in]` of the weight of the Linear in `slot` at hidden width `h`; `None` when its sublayer is dropped.
    pub fn linear_shape(&self, h: usize, slot: Slot) -> Option<(usize, usize)> {
        let (qk, vo, i) = (self.qk_width(), self.vo_width(), self.intermediate_size);
        let (shape, present) = match slot {
            Slot::Query | Slot::Key => ((qk, h), self.has_attention()),
            Slot::Value => ((vo, h), self.has_attention()),
            Slot::AttnOut => ((h, vo), self.has_attention()),
            Slot::Up => ((i, h), self.has_ffn()),
            Slot::Down => ((h, i), self.has_ffn()),
        };
        present.then_some(shape)
    }

    /// Parameters (weights and biases) of this layer at hidden width `h` (module names from `n`); a low-rank Linear
    /// counts its factors, `r * (out + in)`.
    pub fn parameters(&self, n: &Naming, h: usize) -> usize {
        let weights: usize = Slot::ALL
            .iter()
            .filter_map(|&s| {
                let (o, i) = self.linear_shape(h, s)?;
                Some(
                    self.rank(n.linears[s as usize])
                        .map_or(o * i, |r| r * (o + i)),
                )
            })
            .sum();
        let attn_biases = if self.has_attention() {
            2 * self.qk_width() + self.vo_width()
        } else {
            0
        };
        // The output biases and both LayerNorms stay whatever is removed.
        weights + attn_biases + self.intermediate_size + h + h + 4 * h
    }

    /// The rank of Linear `module` when it is stored low-rank.
    pub fn rank(&self, module: &str) -> Option<usize> {
        self.low_rank.get(module).copied()
    }
}

/// The residual stream's kept dimensions after hidden-dimension pruning: `hidden_size` is then `kept.len()`, and
/// attention scores keep the original head width's scale.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HiddenDims {
    /// The hidden size of the model the dimensions were kept from.
    pub original_size: usize,
    /// The kept dimensions, by index in the original residual stream, ascending.
    pub kept: Vec<usize>,
}

/// The widths one encoder layer keeps at an elastic rate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticWidths {
    pub intermediate_size: usize,
    pub qk_head_dim: usize,
    pub vo_head_dim: usize,
}

/// One rate of an elastic model (the extension's `elastic`): the layers are stored sorted (best channels first),
/// so keeping each layer's first `widths` channels is the model at this rate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticRate {
    pub rate: f64,
    pub layers: Vec<ElasticWidths>,
}

// Rates are checked finite (in [0, 1)) wherever a table is read, so equality is total.
impl Eq for ElasticRate {}

/// The hyper-parameters of a BERT-like encoder, read from config.json (under each family's key names).
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    /// 0 where the family has no token types (DistilBERT, MPNet): the token type ids are then ignored.
    pub type_vocab_size: usize,
    /// Rows of MPNet's relative attention bias table (`relative_attention_num_buckets`); 0 in other families.
    pub relative_buckets: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: Activation,
    pub pad_token_id: Option<i64>,
    pub head: Head,
    /// Every encoder layer's shape (`num_hidden_layers` entries): uniform from the plain keys, or from the
    /// `compressor` extension.
    pub layers: Vec<LayerShape>,
    /// Hidden-dimension pruning (the extension's `hidden`); `None`: every dimension of the original is kept.
    pub hidden: Option<HiddenDims>,
    /// The rates this sorted model can be cut at (the extension's `elastic`), ascending.
    pub elastic: Vec<ElasticRate>,
}

impl BertConfig {
    /// The names and conventions of this config's family.
    pub fn naming(&self) -> &'static Naming {
        self.family.naming()
    }

    /// The padding id that position ids count from in families that number positions after the padding
    /// (RoBERTa's `padding_idx`; MPNet's is 1 whatever the config says, as in transformers); `None` where positions
    /// count from 0.
    pub fn position_padding(&self) -> Option<i64> {
        match self.family {
            _ if !self.naming().positions_after_padding => None,
            Family::Mpnet => Some(1),
            _ => Some(self.pad_token_id.unwrap_or(1)),
        }
    }

    /// The longest sequence the position table allows (`max_position_embeddings`, less `padding + 1` where
    /// positions count after the padding id).
    pub fn max_sequence_length(&self) -> usize {
        let offset = self.position_padding().map_or(0, |p| p.max(0) as usize + 1);
        self.max_position_embeddings.saturating_sub(offset)
    }

    /// Parameters (weights and biases) of one encoder layer of shape `l` at hidden width `h`.
    pub fn layer_parameters(&self, h: usize, l: &LayerShape) -> usize {
        l.parameters(self.naming(), h)
    }

    /// The original per-head width, `hidden_size / num_attention_heads`; attention scores are scaled by its
    /// inverse square root in every layer, whatever its kept head widths.
    pub fn head_dim(&self) -> usize {
        self.hidden
            .as_ref()
            .map_or(self.hidden_size, |d| d.original_size)
            / self.num_attention_heads
    }

    /// The shape every layer has in a plain config.
    pub fn uniform_layer(&self, source: usize) -> LayerShape {
        LayerShape {
            heads: (0..self.num_attention_heads).collect(),
            qk_head_dim: self.head_dim(),
            vo_head_dim: self.head_dim(),
            intermediate_size: self.intermediate_size,
            source,
            low_rank: BTreeMap::new(),
        }
    }

    /// Whether the plain Hugging Face keys describe the layers exactly (every head kept at full width, one FFN
    /// width): such a model loads in stock runtimes without the extension.
    pub fn is_uniform(&self) -> bool {
        let first = self.layers.first().map(|l| l.intermediate_size);
        self.hidden.is_none()
            && self.layers.iter().all(|l| {
                l.heads.len() == self.num_attention_heads
                    && l.heads.iter().enumerate().all(|(i, h)| i == *h)
                    && l.qk_head_dim == self.head_dim()
                    && l.vo_head_dim == self.head_dim()
                    && Some(l.intermediate_size) == first
                    && l.intermediate_size > 0
                    && l.low_rank.is_empty()
            })
    }

    /// Encoder parameters (the layers' weights and biases) of this configuration.
    pub fn encoder_parameters(&self) -> usize {
        self.layers
            .iter()
            .map(|l| self.layer_parameters(self.hidden_size, l))
            .sum()
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
        let Some(family) = Family::from_model_type(&model_type) else {
            return Err(Error::UnknownModelType {
                path: path.to_path_buf(),
                model_type,
                known: Family::model_types(),
            });
        };
        let n = family.naming();
        let architecture = match raw.get("architectures") {
            None | Some(Value::Null) => n.base.to_string(),
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
        let ours = architecture == n.base
            || architecture == n.classifier
            || n.encoder_aliases.contains(&architecture.as_str());
        if !ours {
            let mut known = vec![n.base, n.classifier];
            known.extend(n.encoder_aliases);
            let other = Family::architectures().contains(&architecture.as_str());
            return Err(Error::UnsupportedArchitecture {
                path: path.to_path_buf(),
                architecture: if other {
                    format!("{architecture}` with model_type `{model_type}")
                } else {
                    architecture
                },
                known: if other {
                    known
                } else {
                    Family::architectures()
                },
            });
        }
        let head = if architecture == n.classifier {
            keys.classification_head()?
        } else {
            Head::None
        };
        let k = n.keys;
        let hidden_act = match keys.string(k.hidden_act)?.as_str() {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return Err(Error::ConfigKey {
                    path: path.to_path_buf(),
                    key: k.hidden_act.into(),
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
            family,
            vocab_size: keys.positive("vocab_size")?,
            hidden_size: keys.positive(k.hidden_size)?,
            num_hidden_layers: keys.positive(k.num_hidden_layers)?,
            num_attention_heads: keys.positive(k.num_attention_heads)?,
            intermediate_size: keys.positive(k.intermediate_size)?,
            max_position_embeddings: keys.positive("max_position_embeddings")?,
            type_vocab_size: match n.token_type {
                Some(_) => keys.positive("type_vocab_size")?,
                None => 0,
            },
            relative_buckets: match n.relative_bias {
                Some(_) => match raw.get("relative_attention_num_buckets") {
                    None => crate::family::RELATIVE_BUCKETS,
                    Some(_) => keys.positive("relative_attention_num_buckets")?,
                },
                None => 0,
            },
            layer_norm_eps: match raw.get("layer_norm_eps") {
                None => n.default_eps,
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
            layers: Vec::new(),
            hidden: None,
            elastic: Vec::new(),
        };
        let mut bert = bert;
        bert.hidden = parse_hidden(path, raw.get(EXTENSION_KEY), bert.hidden_size)?;
        let original_hidden = bert
            .hidden
            .as_ref()
            .map_or(bert.hidden_size, |d| d.original_size);
        if !original_hidden.is_multiple_of(bert.num_attention_heads) {
            return Err(Error::ConfigKey {
                path: path.to_path_buf(),
                key: k.num_attention_heads.into(),
                problem: format!(
                    "{} does not divide {} {original_hidden}",
                    bert.num_attention_heads, k.hidden_size
                ),
            });
        }
        // Every layer gets a described shape: bound the counts before anything is allocated per layer or head (the
        // checkpoint's tensor count bounds them more tightly once the store is open).
        for (key, count) in [
            (k.num_hidden_layers, bert.num_hidden_layers),
            (k.num_attention_heads, bert.num_attention_heads),
        ] {
            if count > MAX_COUNT {
                return Err(Error::ConfigKey {
                    path: path.to_path_buf(),
                    key: key.into(),
                    problem: format!(
                        "is {count}, more than the {MAX_COUNT} that compressor supports"
                    ),
                });
            }
        }
        bert.layers = match raw.get(EXTENSION_KEY) {
            None | Some(Value::Null) => (0..bert.num_hidden_layers)
                .map(|l| bert.uniform_layer(l))
                .collect(),
            Some(ext) => parse_extension(path, ext, &bert)?,
        };
        bert.elastic = parse_elastic(path, raw.get(EXTENSION_KEY), &bert)?;
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
        self.reparse(raw)
    }

    /// Give the model the layer shapes `layers`: `num_hidden_layers` follows, and when the shapes are uniform
    /// (every head at full width, one FFN width) the plain keys say it all (`intermediate_size` set, no
    /// extension), so stock loaders read the result; otherwise the `compressor` extension describes each layer.
    pub fn set_layers(&mut self, layers: Vec<LayerShape>) -> Result<()> {
        if layers.is_empty() {
            return Err(Error::ConfigKey {
                path: self.path.clone(),
                key: self.bert().naming().keys.num_hidden_layers.into(),
                problem: "would be 0: a model keeps at least one encoder layer".into(),
            });
        }
        let mut raw = self.raw.clone();
        let mut trial = self.bert().clone();
        let keys = trial.naming().keys;
        trial.layers = layers.clone();
        raw.insert(keys.num_hidden_layers.into(), Value::from(layers.len()));
        if trial.is_uniform() {
            raw.insert(
                keys.intermediate_size.into(),
                Value::from(layers[0].intermediate_size),
            );
            raw.remove(EXTENSION_KEY);
        } else {
            // New shapes void an elastic table (its widths were of the old ones).
            raw.insert(
                EXTENSION_KEY.into(),
                extension(&layers, trial.hidden.as_ref(), &[]),
            );
        }
        self.reparse(raw)
    }

    /// Keep the hidden dimensions at positions `kept` (ascending, of the current `0..hidden_size`): `hidden_size`
    /// becomes `kept.len()` and the extension records the kept dimensions of the original (so the attention
    /// scale, and where each dimension came from, stay known). Stock BERT loaders cannot run such a model.
    pub fn set_hidden(&mut self, kept: &[usize]) -> Result<()> {
        let c = self.bert();
        if kept.is_empty()
            || kept.iter().any(|&d| d >= c.hidden_size)
            || kept.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(Error::ConfigKey {
                path: self.path.clone(),
                key: c.naming().keys.hidden_size.into(),
                problem: format!(
                    "kept dimensions must be ascending positions in 0..{} with at least one",
                    c.hidden_size
                ),
            });
        }
        let hidden = match &c.hidden {
            Some(d) => HiddenDims {
                original_size: d.original_size,
                kept: kept.iter().map(|&p| d.kept[p]).collect(),
            },
            None => HiddenDims {
                original_size: c.hidden_size,
                kept: kept.to_vec(),
            },
        };
        let mut raw = self.raw.clone();
        raw.insert(c.naming().keys.hidden_size.into(), Value::from(kept.len()));
        raw.insert(
            EXTENSION_KEY.into(),
            extension(&c.layers, Some(&hidden), &[]),
        );
        self.reparse(raw)
    }

    /// Record the rates this sorted model can be cut at (the extension's `elastic`; empty removes it).
    pub fn set_elastic(&mut self, table: Vec<ElasticRate>) -> Result<()> {
        let c = self.bert();
        let mut raw = self.raw.clone();
        if table.is_empty() && c.is_uniform() {
            raw.remove(EXTENSION_KEY);
        } else {
            raw.insert(
                EXTENSION_KEY.into(),
                extension(&c.layers, c.hidden.as_ref(), &table),
            );
        }
        self.reparse(raw)
    }

    /// The canonical names of the weights stored low-rank, with their ranks.
    pub fn low_rank_weights(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        let n = self.bert().naming();
        for (l, shape) in self.bert().layers.iter().enumerate() {
            for (m, r) in &shape.low_rank {
                out.insert(format!("{}.{m}.weight", n.layer(l)), *r);
            }
        }
        out
    }

    /// This config with every Linear described as one matrix (after the factors were multiplied out).
    pub fn without_low_rank(&self) -> Result<Self> {
        let mut out = self.clone();
        if out.bert().layers.iter().any(|l| !l.low_rank.is_empty()) {
            let layers = out
                .bert()
                .layers
                .iter()
                .map(|l| LayerShape {
                    low_rank: BTreeMap::new(),
                    ..l.clone()
                })
                .collect();
            out.set_layers(layers)?;
        }
        Ok(out)
    }

    /// Replace the config by `raw`, parsed again (so every check runs); on error the config is left unchanged.
    fn reparse(&mut self, raw: Map<String, Value>) -> Result<()> {
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
        let n = c.naming();
        let h = c.hidden_size;
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
            format!("{}.weight", n.word),
            vec![c.vocab_size, h],
            Role::EmbedTokens,
            Kind::Weight,
            None,
        );
        push(
            format!("{}.weight", n.position),
            vec![c.max_position_embeddings, h],
            Role::EmbedPositions,
            Kind::Weight,
            None,
        );
        if let Some(types) = n.token_type {
            push(
                format!("{types}.weight"),
                vec![c.type_vocab_size, h],
                Role::EmbedTypes,
                Kind::Weight,
                None,
            );
        }
        for (suffix, kind) in [("weight", Kind::Weight), ("bias", Kind::Bias)] {
            push(
                format!("{}.{suffix}", n.emb_norm),
                vec![h],
                Role::Norm,
                kind,
                None,
            );
        }
        push(
            "embeddings.position_ids".into(),
            vec![1, c.max_position_embeddings],
            Role::Buffer,
            Kind::Buffer,
            None,
        );
        if let Some(bias) = n.relative_bias {
            push(
                format!("{bias}.weight"),
                vec![c.relative_buckets, c.num_attention_heads],
                Role::PositionBias,
                Kind::Weight,
                None,
            );
        }
        for (l, shape) in c.layers.iter().enumerate() {
            let (qk, vo, i) = (shape.qk_width(), shape.vo_width(), shape.intermediate_size);
            let attn = shape.has_attention();
            let ffn = shape.has_ffn();
            // (slot, role, out, in, weight present, bias present)
            let linears = [
                (Slot::Query, Role::AttnQ, qk, h, attn, attn),
                (Slot::Key, Role::AttnK, qk, h, attn, attn),
                (Slot::Value, Role::AttnV, vo, h, attn, attn),
                (Slot::AttnOut, Role::AttnOut, h, vo, attn, true),
                (Slot::Up, Role::FfnUp, i, h, ffn, ffn),
                (Slot::Down, Role::FfnDown, h, i, ffn, true),
            ];
            for (slot, role, out_f, in_f, weight, bias) in linears {
                let m = n.linear(l, slot);
                if weight {
                    push(
                        format!("{m}.weight"),
                        vec![out_f, in_f],
                        role,
                        Kind::Weight,
                        Some(l),
                    );
                }
                if bias {
                    push(format!("{m}.bias"), vec![out_f], role, Kind::Bias, Some(l));
                }
            }
            for norm in [n.attn_norm, n.out_norm] {
                for (suffix, kind) in [("weight", Kind::Weight), ("bias", Kind::Bias)] {
                    push(
                        format!("{}.{norm}.{suffix}", n.layer(l)),
                        vec![h],
                        Role::Norm,
                        kind,
                        Some(l),
                    );
                }
            }
        }
        // The dense layer before the classifier (BERT's pooler, RoBERTa's `classifier.dense`, DistilBERT's
        // `pre_classifier`), required under a classification head; a base model's own pooler is optional
        // (sentence-transformers checkpoints may drop it).
        let (dense, optional) = match &c.head {
            Head::SequenceClassification { .. } => (Some(n.head_dense), false),
            Head::None => (n.pooler, true),
        };
        if let Some(dense) = dense {
            push(
                format!("{dense}.weight"),
                vec![h, h],
                Role::Pooler,
                Kind::Weight,
                None,
            );
            push(
                format!("{dense}.bias"),
                vec![h],
                Role::Pooler,
                Kind::Bias,
                None,
            );
        }
        if let Head::SequenceClassification { num_labels, .. } = &c.head {
            push(
                format!("{}.weight", n.head_out),
                vec![*num_labels, h],
                Role::Head,
                Kind::Weight,
                None,
            );
            push(
                format!("{}.bias", n.head_out),
                vec![*num_labels],
                Role::Head,
                Kind::Bias,
                None,
            );
        }
        if optional {
            for t in out.iter_mut().filter(|t| t.role == Role::Pooler) {
                t.optional = true;
            }
        }
        out
    }

    /// The prefix a checkpoint of this architecture may put before canonical names.
    pub fn model_prefix(&self) -> &'static str {
        self.bert().naming().prefix
    }

    /// Tensors (by canonical name) that belong to the head and never carry the model prefix.
    pub fn is_head_tensor(&self, canonical: &str) -> bool {
        self.bert().naming().is_head_tensor(canonical)
    }

    /// The name of the dense layer on the first token's state (the pooler, or the classifier's own dense layer),
    /// with its activation; `None` where the model has none.
    pub fn head_dense(&self) -> Option<(String, HeadAct)> {
        let c = self.bert();
        let n = c.naming();
        match c.head {
            Head::SequenceClassification { .. } => Some((n.head_dense.to_string(), n.head_act)),
            Head::None => n.pooler.map(|p| (p.to_string(), HeadAct::Tanh)),
        }
    }

    /// Number of parameters (buffers excluded) of the architecture as configured.
    pub fn parameter_count(&self, present: impl Fn(&str) -> bool) -> usize {
        let ranks = self.low_rank_weights();
        self.expected_tensors()
            .iter()
            .filter(|t| t.kind != Kind::Buffer && (!t.optional || present(&t.name)))
            .map(|t| match ranks.get(&t.name) {
                Some(r) => r * t.shape.iter().sum::<usize>(),
                None => t.shape.iter().product::<usize>(),
            })
            .sum()
    }
}

/// The `compressor` extension: `{"version": 1, "layers": [LayerShape, ...]}`, one entry per layer, each within
/// the plain config's bounds (head ids below `num_attention_heads`, head widths at most `hidden_size /
/// num_attention_heads`, FFN width at most `intermediate_size`), so that a zero-padded dense export always exists.
/// The `compressor` extension describing `layers` (and the kept hidden dimensions).
fn extension(layers: &[LayerShape], hidden: Option<&HiddenDims>, elastic: &[ElasticRate]) -> Value {
    let mut ext = serde_json::json!({ "version": 1, "layers": layers });
    if let Some(h) = hidden {
        ext["hidden"] = serde_json::json!(h);
    }
    if !elastic.is_empty() {
        ext["elastic"] = serde_json::json!(elastic);
    }
    ext
}

/// The extension's `elastic` table, checked against the layers: one entry per layer, each width at most the
/// layer's own.
fn parse_elastic(path: &Path, ext: Option<&Value>, c: &BertConfig) -> Result<Vec<ElasticRate>> {
    let Some(v) = ext.and_then(|e| e.get("elastic")) else {
        return Ok(Vec::new());
    };
    let key = format!("{EXTENSION_KEY}.elastic");
    let err = |key: String, problem: String| Error::ConfigKey {
        path: path.to_path_buf(),
        key,
        problem,
    };
    let table: Vec<ElasticRate> =
        serde_json::from_value(v.clone()).map_err(|e| err(key.clone(), e.to_string()))?;
    for (i, e) in table.iter().enumerate() {
        let key = format!("{key}[{i}]");
        if !(0.0..1.0).contains(&e.rate) || table[..i].iter().any(|p| p.rate >= e.rate) {
            return Err(err(
                format!("{key}.rate"),
                format!("is {}, expected ascending rates in [0, 1)", e.rate),
            ));
        }
        if e.layers.len() != c.layers.len() {
            return Err(err(
                format!("{key}.layers"),
                format!(
                    "describes {} layers but the model has {}",
                    e.layers.len(),
                    c.layers.len()
                ),
            ));
        }
        for (l, (w, s)) in e.layers.iter().zip(&c.layers).enumerate() {
            for (name, got, max) in [
                (
                    "intermediate_size",
                    w.intermediate_size,
                    s.intermediate_size,
                ),
                ("qk_head_dim", w.qk_head_dim, s.qk_head_dim),
                ("vo_head_dim", w.vo_head_dim, s.vo_head_dim),
            ] {
                if got > max || (got == 0 && max > 0) {
                    return Err(err(
                        format!("{key}.layers[{l}].{name}"),
                        format!("is {got}, expected 1..={max} (the layer's own width)"),
                    ));
                }
            }
        }
    }
    Ok(table)
}

/// The extension's `hidden` entry, checked against the plain `hidden_size`.
fn parse_hidden(
    path: &Path,
    ext: Option<&Value>,
    hidden_size: usize,
) -> Result<Option<HiddenDims>> {
    let Some(v) = ext.and_then(|e| e.get("hidden")) else {
        return Ok(None);
    };
    let key = format!("{EXTENSION_KEY}.hidden");
    let err = |key: String, problem: String| Error::ConfigKey {
        path: path.to_path_buf(),
        key,
        problem,
    };
    let d: HiddenDims =
        serde_json::from_value(v.clone()).map_err(|e| err(key.clone(), e.to_string()))?;
    if d.kept.len() != hidden_size {
        return Err(err(
            format!("{key}.kept"),
            format!(
                "lists {} dimensions but hidden_size is {hidden_size}",
                d.kept.len()
            ),
        ));
    }
    if d.kept.windows(2).any(|w| w[0] >= w[1])
        || d.kept.last().is_some_and(|&k| k >= d.original_size)
    {
        return Err(err(
            format!("{key}.kept"),
            format!(
                "must be ascending without repeats, within 0..{} (original_size)",
                d.original_size
            ),
        ));
    }
    Ok(Some(d))
}

fn parse_extension(path: &Path, ext: &Value, c: &BertConfig) -> Result<Vec<LayerShape>> {
    let err = |key: String, problem: String| Error::ConfigKey {
        path: path.to_path_buf(),
        key,
        problem,
    };
    let Value::Object(obj) = ext else {
        return Err(err(
            EXTENSION_KEY.into(),
            format!("must be an object, found {ext}"),
        ));
    };
    for key in obj.keys() {
        if !matches!(key.as_str(), "version" | "layers" | "hidden" | "elastic") {
            return Err(err(
                format!("{EXTENSION_KEY}.{key}"),
                "is not a known key (known: version, layers, hidden, elastic)".into(),
            ));
        }
    }
    match obj.get("version") {
        Some(v) if v.as_u64() == Some(1) => {}
        other => {
            return Err(err(
                format!("{EXTENSION_KEY}.version"),
                format!(
                    "must be 1, found {}",
                    other.map_or("nothing".to_string(), Value::to_string)
                ),
            ))
        }
    }
    let list = obj
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| err(format!("{EXTENSION_KEY}.layers"), "must be a list".into()))?;
    if list.len() != c.num_hidden_layers {
        return Err(err(
            format!("{EXTENSION_KEY}.layers"),
            format!(
                "describes {} layers but num_hidden_layers is {}",
                list.len(),
                c.num_hidden_layers
            ),
        ));
    }
    let mut layers = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let key = format!("{EXTENSION_KEY}.layers[{i}]");
        let l: LayerShape =
            serde_json::from_value(v.clone()).map_err(|e| err(key.clone(), e.to_string()))?;
        let hd = c.head_dim();
        if let Some(bad) = l.heads.iter().find(|&&h| h >= c.num_attention_heads) {
            return Err(err(
                format!("{key}.heads"),
                format!(
                    "names head {bad}, but the layer has heads 0..{}",
                    c.num_attention_heads
                ),
            ));
        }
        if l.heads.windows(2).any(|w| w[0] >= w[1]) {
            return Err(err(
                format!("{key}.heads"),
                "must be ascending without repeats".into(),
            ));
        }
        for (name, width) in [
            ("qk_head_dim", l.qk_head_dim),
            ("vo_head_dim", l.vo_head_dim),
        ] {
            if width == 0 || width > hd {
                return Err(err(
                    format!("{key}.{name}"),
                    format!("is {width}, expected 1..={hd} (hidden_size / num_attention_heads)"),
                ));
            }
        }
        if l.intermediate_size > c.intermediate_size {
            return Err(err(
                format!("{key}.intermediate_size"),
                format!(
                    "is {}, more than the config's intermediate_size {}",
                    l.intermediate_size, c.intermediate_size
                ),
            ));
        }
        for (m, &r) in &l.low_rank {
            let key = format!("{key}.low_rank.{m}");
            let names = c.naming().linears;
            let Some(slot) = c.naming().slot(m) else {
                return Err(err(
                    key,
                    format!("is not a Linear of the layer (known: {})", names.join(", ")),
                ));
            };
            let Some((o, i)) = l.linear_shape(c.hidden_size, slot) else {
                return Err(err(
                    key,
                    "names a Linear of a dropped sublayer (no heads or no FFN neurons)".into(),
                ));
            };
            if r == 0 || r > o.min(i) {
                return Err(err(
                    key,
                    format!(
                        "is rank {r}, expected 1..={} for a [{o}, {i}] weight",
                        o.min(i)
                    ),
                ));
            }
        }
        layers.push(l);
    }
    Ok(layers)
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
