//! The remote-code export: a small PyTorch modeling file, written beside the weights, with which transformers
//! (`trust_remote_code=True`) and sentence-transformers load a model whose layers have their own shapes and run it
//! at the smaller model's cost. config.json points at it through `auto_map`.

use serde_json::json;

use crate::arch::ModelConfig;
use crate::error::Result;

/// The file name of the modeling code in the exported folder.
pub const MODELING_FILE: &str = "modeling_compressor_bert.py";

/// The modeling code (per-layer BERT for `AutoModel` and `AutoModelForSequenceClassification`).
pub const MODELING_PY: &str = include_str!("modeling_compressor_bert.py");

/// `config` with the `auto_map` that sends transformers' auto classes to [`MODELING_FILE`].
pub fn with_auto_map(config: &ModelConfig) -> Result<ModelConfig> {
    let family = config.bert().family;
    if family != crate::family::Family::Bert {
        return Err(crate::Error::Runtime(format!(
            "the remote-code export runs BERT layers; this is a {} model\nhint: `--format dense` writes a plain checkpoint of it (removed heads and neurons come back as zeros)",
            family.name()
        )));
    }
    let module = MODELING_FILE.trim_end_matches(".py");
    let mut out = config.clone();
    out.set(
        "auto_map",
        Some(json!({
            "AutoModel": format!("{module}.CompressorBertModel"),
            "AutoModelForSequenceClassification":
                format!("{module}.CompressorBertForSequenceClassification"),
        })),
    )?;
    Ok(out)
}
