//! The encoder families compressor loads: BERT and the architectures built like it (RoBERTa / XLM-R, DistilBERT,
//! MPNet). They share one computation, post-LayerNorm encoder layers of self-attention and a two-Linear FFN, and
//! differ only in what this table says: tensor and config key names, how position ids are counted, whether token
//! types exist, MPNet's relative attention bias and the classification head. Every name a pass, the runtime or an
//! export uses comes from here, so names stay Hugging Face names in every family.

/// A family of BERT-like encoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Bert,
    Roberta,
    XlmRoberta,
    DistilBert,
    Mpnet,
}

/// The six Linear modules of an encoder layer, in model order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    Query,
    Key,
    Value,
    AttnOut,
    Up,
    Down,
}

impl Slot {
    pub const ALL: [Slot; 6] = [
        Slot::Query,
        Slot::Key,
        Slot::Value,
        Slot::AttnOut,
        Slot::Up,
        Slot::Down,
    ];

    /// Whether the module belongs to the attention sublayer (else the FFN).
    pub fn is_attention(self) -> bool {
        matches!(self, Slot::Query | Slot::Key | Slot::Value | Slot::AttnOut)
    }

    /// A short label (`q`, `k`, `v`, `o`, `up`, `down`) for reports and plots.
    pub fn label(self) -> &'static str {
        match self {
            Slot::Query => "q",
            Slot::Key => "k",
            Slot::Value => "v",
            Slot::AttnOut => "o",
            Slot::Up => "up",
            Slot::Down => "down",
        }
    }
}

/// The activation of the dense layer between the first token's state and the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadAct {
    Tanh,
    Relu,
}

/// The config.json keys of the hyper-parameters whose names differ between families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigKeys {
    pub hidden_size: &'static str,
    pub num_hidden_layers: &'static str,
    pub num_attention_heads: &'static str,
    pub intermediate_size: &'static str,
    pub hidden_act: &'static str,
}

/// Everything that differs between the families, one row each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Naming {
    pub family: Family,
    /// `model_type` in config.json.
    pub model_type: &'static str,
    /// The encoder class (`BertModel`), the classifier class, and classes whose checkpoints hold the encoder
    /// under another head that compressor does not run (masked-LM heads; their tensors are refused as unused).
    pub base: &'static str,
    pub classifier: &'static str,
    pub encoder_aliases: &'static [&'static str],
    /// The prefix a checkpoint of a headed class puts before encoder tensors (`bert.`).
    pub prefix: &'static str,
    /// Layer `l`'s modules live under `{layers}.{l}.`.
    pub layers: &'static str,
    /// The Linear modules under a layer, in [`Slot`] order.
    pub linears: [&'static str; 6],
    /// The LayerNorm after the attention residual and the one after the FFN residual, under a layer.
    pub attn_norm: &'static str,
    pub out_norm: &'static str,
    pub word: &'static str,
    pub position: &'static str,
    pub token_type: Option<&'static str>,
    pub emb_norm: &'static str,
    /// MPNet's relative position bias table `[buckets, heads]`, shared by every layer.
    pub relative_bias: Option<&'static str>,
    /// The encoder's own pooler (tanh of a dense layer on the first token), optional in base checkpoints.
    pub pooler: Option<&'static str>,
    /// The classifier class's dense layer on the first token's state, its activation, and its output Linear.
    pub head_dense: &'static str,
    pub head_act: HeadAct,
    pub head_out: &'static str,
    /// Position ids count from `pad_token_id + 1` over the non-padding tokens (RoBERTa's scheme), not from 0.
    pub positions_after_padding: bool,
    /// LayerNorm epsilon when config.json has no `layer_norm_eps`.
    pub default_eps: f64,
    pub keys: ConfigKeys,
}

const BERT_KEYS: ConfigKeys = ConfigKeys {
    hidden_size: "hidden_size",
    num_hidden_layers: "num_hidden_layers",
    num_attention_heads: "num_attention_heads",
    intermediate_size: "intermediate_size",
    hidden_act: "hidden_act",
};

const BERT_LINEARS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

const BERT: Naming = Naming {
    family: Family::Bert,
    model_type: "bert",
    base: "BertModel",
    classifier: "BertForSequenceClassification",
    encoder_aliases: &[],
    prefix: "bert.",
    layers: "encoder.layer",
    linears: BERT_LINEARS,
    attn_norm: "attention.output.LayerNorm",
    out_norm: "output.LayerNorm",
    word: "embeddings.word_embeddings",
    position: "embeddings.position_embeddings",
    token_type: Some("embeddings.token_type_embeddings"),
    emb_norm: "embeddings.LayerNorm",
    relative_bias: None,
    pooler: Some("pooler.dense"),
    head_dense: "pooler.dense",
    head_act: HeadAct::Tanh,
    head_out: "classifier",
    positions_after_padding: false,
    default_eps: 1e-12,
    keys: BERT_KEYS,
};

const ROBERTA: Naming = Naming {
    family: Family::Roberta,
    model_type: "roberta",
    base: "RobertaModel",
    classifier: "RobertaForSequenceClassification",
    encoder_aliases: &[],
    prefix: "roberta.",
    head_dense: "classifier.dense",
    head_out: "classifier.out_proj",
    positions_after_padding: true,
    default_eps: 1e-12,
    ..BERT
};

const XLM_ROBERTA: Naming = Naming {
    family: Family::XlmRoberta,
    model_type: "xlm-roberta",
    base: "XLMRobertaModel",
    classifier: "XLMRobertaForSequenceClassification",
    ..ROBERTA
};

const DISTILBERT: Naming = Naming {
    family: Family::DistilBert,
    model_type: "distilbert",
    base: "DistilBertModel",
    classifier: "DistilBertForSequenceClassification",
    encoder_aliases: &[],
    prefix: "distilbert.",
    layers: "transformer.layer",
    linears: [
        "attention.q_lin",
        "attention.k_lin",
        "attention.v_lin",
        "attention.out_lin",
        "ffn.lin1",
        "ffn.lin2",
    ],
    attn_norm: "sa_layer_norm",
    out_norm: "output_layer_norm",
    token_type: None,
    pooler: None,
    head_dense: "pre_classifier",
    head_act: HeadAct::Relu,
    head_out: "classifier",
    keys: ConfigKeys {
        hidden_size: "dim",
        num_hidden_layers: "n_layers",
        num_attention_heads: "n_heads",
        intermediate_size: "hidden_dim",
        hidden_act: "activation",
    },
    ..BERT
};

const MPNET: Naming = Naming {
    family: Family::Mpnet,
    model_type: "mpnet",
    base: "MPNetModel",
    classifier: "MPNetForSequenceClassification",
    encoder_aliases: &["MPNetForMaskedLM"],
    prefix: "mpnet.",
    linears: [
        "attention.attn.q",
        "attention.attn.k",
        "attention.attn.v",
        "attention.attn.o",
        "intermediate.dense",
        "output.dense",
    ],
    attn_norm: "attention.LayerNorm",
    token_type: None,
    relative_bias: Some("encoder.relative_attention_bias"),
    head_dense: "classifier.dense",
    head_out: "classifier.out_proj",
    positions_after_padding: true,
    default_eps: 1e-12,
    ..BERT
};

/// Every family, in the order error hints list them.
pub const FAMILIES: [Naming; 5] = [BERT, ROBERTA, XLM_ROBERTA, DISTILBERT, MPNET];

/// The number of relative position buckets MPNet's attention bias uses (transformers computes the bias with 32
/// buckets whatever the table holds).
pub const RELATIVE_BUCKETS: usize = 32;

impl Family {
    pub fn naming(self) -> &'static Naming {
        FAMILIES
            .iter()
            .find(|n| n.family == self)
            .expect("every family has a row")
    }

    /// The family of `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        FAMILIES
            .iter()
            .find(|n| n.model_type == model_type)
            .map(|n| n.family)
    }

    /// Every supported `model_type`.
    pub fn model_types() -> Vec<&'static str> {
        FAMILIES.iter().map(|n| n.model_type).collect()
    }

    /// Every supported architecture class.
    pub fn architectures() -> Vec<&'static str> {
        FAMILIES
            .iter()
            .flat_map(|n| {
                [n.base, n.classifier]
                    .into_iter()
                    .chain(n.encoder_aliases.iter().copied())
            })
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Bert => "BERT",
            Family::Roberta => "RoBERTa",
            Family::XlmRoberta => "XLM-RoBERTa",
            Family::DistilBert => "DistilBERT",
            Family::Mpnet => "MPNet",
        }
    }
}

impl Naming {
    /// `{layers}.{l}` (`encoder.layer.3`).
    pub fn layer(&self, l: usize) -> String {
        format!("{}.{l}", self.layers)
    }

    /// The module of `slot` in layer `l` (`encoder.layer.3.attention.self.query`).
    pub fn linear(&self, l: usize, slot: Slot) -> String {
        format!("{}.{l}.{}", self.layers, self.linears[slot as usize])
    }

    /// The slot of a module named under a layer (`attention.self.query`).
    pub fn slot(&self, module: &str) -> Option<Slot> {
        Slot::ALL
            .into_iter()
            .find(|s| self.linears[*s as usize] == module)
    }

    /// The layer index and the rest of a canonical name under a layer (`encoder.layer.3.output.dense.weight` gives
    /// `(3, "output.dense.weight")`).
    pub fn split_layer<'a>(&self, name: &'a str) -> Option<(usize, &'a str)> {
        let rest = name.strip_prefix(self.layers)?.strip_prefix('.')?;
        let (l, rest) = rest.split_once('.').unwrap_or((rest, ""));
        Some((l.parse().ok()?, rest))
    }

    /// The layer and slot of a Linear's weight or bias (`encoder.layer.3.output.dense.weight`).
    pub fn linear_of(&self, name: &str) -> Option<(usize, Slot)> {
        let (l, rest) = self.split_layer(name)?;
        let module = rest
            .strip_suffix(".weight")
            .or_else(|| rest.strip_suffix(".bias"))?;
        Some((l, self.slot(module)?))
    }

    /// Tensors (by canonical name) that belong to the classification head and never carry the model prefix.
    pub fn is_head_tensor(&self, canonical: &str) -> bool {
        let module = canonical.rsplit_once('.').map_or(canonical, |(m, _)| m);
        // BERT's head dense layer is the encoder's own pooler, which carries the prefix.
        module == self.head_out || (module == self.head_dense && self.pooler != Some(module))
    }
}

/// The encoder layer a canonical name lies under (`encoder.layer.3.…`, or `transformer.layer.3` itself) in whichever
/// family names it so: for names recorded without their config (a report's per-tensor decisions).
pub fn layer_of_any(name: &str) -> Option<usize> {
    FAMILIES
        .iter()
        .find_map(|n| n.split_layer(name).map(|(l, _)| l))
}

/// The bucket of relative position `memory - context` in MPNet's attention bias (transformers'
/// `relative_position_bucket` with 32 buckets and max distance 128): half the buckets for each direction, exact
/// below 8, logarithmic up to 128.
pub fn relative_bucket(relative: i64) -> usize {
    let half = (RELATIVE_BUCKETS / 2) as i64;
    let n = -relative;
    let mut bucket = if n < 0 { half } else { 0 };
    let n = n.abs();
    let max_exact = half / 2;
    bucket += if n < max_exact {
        n
    } else {
        // As torch: the float32 log ratio, truncated towards zero.
        let ratio = ((n as f32 / max_exact as f32).ln() / (128.0f32 / max_exact as f32).ln())
            * (half - max_exact) as f32;
        (max_exact + ratio as i64).min(half - 1)
    };
    bucket as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_back_into_layer_and_slot() {
        let m = Family::Mpnet.naming();
        assert_eq!(
            m.linear(3, Slot::AttnOut),
            "encoder.layer.3.attention.attn.o"
        );
        assert_eq!(
            m.linear_of("encoder.layer.3.attention.attn.o.bias"),
            Some((3, Slot::AttnOut))
        );
        let d = Family::DistilBert.naming();
        assert_eq!(
            d.linear_of("transformer.layer.11.ffn.lin2.weight"),
            Some((11, Slot::Down))
        );
        assert_eq!(d.linear_of("encoder.layer.1.ffn.lin2.weight"), None);
        assert_eq!(
            d.split_layer("transformer.layer.2.sa_layer_norm.weight"),
            Some((2, "sa_layer_norm.weight"))
        );
        assert!(Family::Roberta
            .naming()
            .is_head_tensor("classifier.out_proj.weight"));
        assert!(!Family::Bert.naming().is_head_tensor("pooler.dense.weight"));
        assert!(Family::DistilBert
            .naming()
            .is_head_tensor("pre_classifier.bias"));
    }

    #[test]
    fn relative_buckets_match_transformers() {
        // transformers' MPNetEncoder.relative_position_bucket(torch.arange(-600, 601)) as runs: (first relative
        // position of the run, its bucket).
        let runs: [(i64, usize); 31] = [
            (-600, 15),
            (-90, 14),
            (-63, 13),
            (-45, 12),
            (-31, 11),
            (-22, 10),
            (-15, 9),
            (-11, 8),
            (-7, 7),
            (-6, 6),
            (-5, 5),
            (-4, 4),
            (-3, 3),
            (-2, 2),
            (-1, 1),
            (0, 0),
            (1, 17),
            (2, 18),
            (3, 19),
            (4, 20),
            (5, 21),
            (6, 22),
            (7, 23),
            (8, 24),
            (12, 25),
            (16, 26),
            (23, 27),
            (32, 28),
            (46, 29),
            (64, 30),
            (91, 31),
        ];
        for rel in -600..=600i64 {
            let want = runs
                .iter()
                .rev()
                .find(|(start, _)| *start <= rel)
                .map(|r| r.1);
            assert_eq!(Some(relative_bucket(rel)), want, "relative position {rel}");
        }
    }
}
