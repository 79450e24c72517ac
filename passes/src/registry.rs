//! The closed set of pass kinds: their specs (parsed in two steps, `kind` first), one-line descriptions and
//! did-you-mean lookup.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::pass::{Pass, Phase};
use crate::{
    blockwise_quant, cast, fisher_prune, hessian_mp, prune, qa_svd, suggest, vib_prune, vocab_trim,
};

/// One registered pass kind, as `compressor passes` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PassInfo {
    pub kind: &'static str,
    pub phase: Phase,
    /// What the pass does, in one line.
    pub summary: &'static str,
    /// What running it costs (data needed, passes over the weights).
    pub cost: &'static str,
}

/// Declares every pass kind once: its spec variant, config type, pass type, phase, summary and cost. From this one
/// table come `REGISTRY`, the `PassSpec` enum, its two-step parsing, `kind`, `info` and `build`.
macro_rules! passes {
    ($($variant:ident($module:ident::$pass:ident) = $kind:literal, $phase:ident,
        summary: $summary:expr, cost: $cost:expr;)*) => {
        /// Every pass kind, in the order `compressor passes` prints them.
        pub const REGISTRY: &[PassInfo] = &[
            $(PassInfo { kind: $kind, phase: Phase::$phase, summary: $summary, cost: $cost },)*
        ];

        /// A pass as written in `pipeline.toml`: its kind and its config, with defaults filled in. Serializes back
        /// to the same table (`kind` first), which is how the resolved pipeline is printed and recorded.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "kind", rename_all = "kebab-case")]
        pub enum PassSpec {
            $($variant($module::Config),)*
        }

        impl PassSpec {
            /// Parse the config of a pass of `kind` (the table without its `kind` key). `Ok(None)` when `kind` is
            /// not a registered kind (see [`suggest`] for the hint).
            pub fn from_config<'de, D: Deserializer<'de>>(
                kind: &str,
                config: D,
            ) -> Result<Option<Self>, D::Error> {
                Ok(Some(match kind {
                    $($kind => PassSpec::$variant($module::Config::deserialize(config)?),)*
                    _ => return Ok(None),
                }))
            }

            pub fn info(&self) -> &'static PassInfo {
                match self {
                    $(PassSpec::$variant(_) => {
                        &PassInfo { kind: $kind, phase: Phase::$phase, summary: $summary, cost: $cost }
                    })*
                }
            }

            pub fn kind(&self) -> &'static str {
                self.info().kind
            }

            /// The pass that carries out this spec.
            pub fn build(&self) -> Box<dyn Pass> {
                match self {
                    $(PassSpec::$variant(c) => Box::new($module::$pass::new(c.clone())),)*
                }
            }

            /// This spec with the file paths in its config (if any) resolved against `base`, the pipeline file's
            /// folder.
            pub fn with_base(&self, base: &Path) -> Self {
                match self {
                    $(PassSpec::$variant(c) => PassSpec::$variant(PassConfig::with_base(c, base)),)*
                }
            }
        }
    };
}

/// What every pass's `Config` provides beyond serde: paths resolved against the pipeline file's folder.
pub trait PassConfig: Sized + Clone {
    /// This config with relative paths resolved against `base`; configs without paths are unchanged.
    fn with_base(&self, _base: &Path) -> Self {
        self.clone()
    }
}

impl PassConfig for cast::Config {}
impl PassConfig for blockwise_quant::Config {}
impl PassConfig for hessian_mp::Config {}
impl PassConfig for prune::Config {}
impl PassConfig for qa_svd::Config {}
impl PassConfig for fisher_prune::Config {
    fn with_base(&self, base: &Path) -> Self {
        fisher_prune::Config::with_base(self, base)
    }
}
impl PassConfig for vib_prune::Config {
    fn with_base(&self, base: &Path) -> Self {
        vib_prune::Config::with_base(self, base)
    }
}
impl PassConfig for vocab_trim::Config {
    fn with_base(&self, base: &Path) -> Self {
        vocab_trim::Config::with_base(self, base)
    }
}

passes! {
    Cast(cast::Cast) = "cast", Quantize,
        summary: "store selected float tensors as f16, bf16 or f32",
        cost: "one read of each selected tensor; no calibration data";
    BlockwiseQuant(blockwise_quant::BlockwiseQuant) = "blockwise-quant", Quantize,
        summary: "BCT: blockwise integer weights and embeddings (compressed-tensors), optional static int activations and GPTQ rounding",
        cost: "one read of each selected tensor; activations or GPTQ: one forward pass over the calibration data";
    HessianMp(hessian_mp::HessianMp) = "hessian-mp", Quantize,
        summary: "Q-BERT: Hessian sensitivity per block, bits per block within a budget, group-wise integer weights, optional QAT",
        cost: "blocks x runs x iterations Hessian-vector products (each about 4 forward passes from the block's layer on), cached; optional QAT: steps x a forward and backward pass";
    Prune(prune::Prune) = "prune", Structure,
        summary: "structured pruning of heads, FFN neurons and whole layers by weight magnitude or activation importance, physically removed",
        cost: "reads the encoder weights at plan time; activation importance and drop-layers: one forward pass over the calibration data";
    QaSvd(qa_svd::QaSvd) = "qa-svd", Structure,
        summary: "UniQL: FFN neurons sorted by ridge leverage, query/key dims by output moments, value/output by quantization-aware SVD, cut per layer by block influence",
        cost: "one forward pass over the calibration data (input moments of every Linear, cached); eigendecompositions and per-head SVDs in f64";
    FisherPrune(fisher_prune::FisherPrune) = "fisher-prune", Structure,
        summary: "GAPrune: unstructured or 2:4 pruning of FFN weights by domain alignment importance (general and domain Fisher, gradient alignment), stored sparse",
        cost: "reads the selected weights at plan time; one backward pass per micro-batch of triplets of the general and the domain set, cached; score = \"magnitude\" needs no data";
    VibPrune(vib_prune::VibPrune) = "vib-prune", Structure,
        summary: "VTrans: variational-information-bottleneck masks on hidden dimensions, heads, FFN neurons and sublayers, trained to a parameter target, folded and physically removed",
        cost: "trains the masks at plan time (Faster: forward and backward per step with frozen weights; fast and full also train the weights), checkpointed and cached";
    VocabTrim(vocab_trim::VocabTrim) = "vocab-trim", Structure,
        summary: "keep only the token ids a corpus uses: slice the embedding, rewrite the tokenizer",
        cost: "tokenizes the corpus once, counts cached; copies the kept embedding rows";
}

pub fn lookup(kind: &str) -> Option<&'static PassInfo> {
    REGISTRY.iter().find(|p| p.kind == kind)
}

/// The registered kind closest to a misspelled `kind`, if any is close.
pub fn suggest(kind: &str) -> Option<&'static str> {
    suggest::did_you_mean(kind, REGISTRY.iter().map(|p| p.kind))
}

/// All registered kinds, comma-separated (for messages).
pub fn kinds() -> String {
    REGISTRY
        .iter()
        .map(|p| p.kind)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_kind_is_registered_and_round_trips() {
        let spec = PassSpec::from_config("cast", serde_json::json!({ "dtype": "bf16" }))
            .expect("valid")
            .expect("known");
        assert_eq!(spec.info().kind, "cast");
        assert_eq!(spec.build().kind(), "cast");
        let value = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(
            value,
            serde_json::json!({ "kind": "cast", "dtype": "bf16", "select": { "kinds": ["weight", "bias"] } })
        );
    }

    #[test]
    fn unknown_kinds_are_none_and_get_suggestions() {
        assert!(PassSpec::from_config("cats", serde_json::json!({}))
            .expect("no error")
            .is_none());
        assert_eq!(suggest("cats"), Some("cast"));
        assert_eq!(suggest("gptq"), None);
    }

    #[test]
    fn unknown_keys_in_a_pass_config_are_rejected() {
        let err =
            PassSpec::from_config("cast", serde_json::json!({ "dtype": "f16", "dtyp": "f16" }))
                .expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "unknown field `dtyp`, expected `dtype` or `select`"
        );
    }
}
