//! `compressor inspect DIR`: what a checkpoint or artifact holds: architecture, parameter count, every tensor with
//! role, dtype, shape and bytes, and for our own artifacts the manifest's summary.

use std::path::Path;

use anyhow::Context as _;
use compressor_models::{Checkpoint, Form};
use compressor_passes::{ModelInfo, Progress};
use serde::Serialize;
use serde_json::Value;

use crate::human::{count, shape, size, thousands};

#[derive(Debug, Serialize)]
pub struct TensorRow {
    pub name: String,
    pub role: String,
    pub kind: String,
    /// The dtype the tensor decodes to (what passes and the runtime see).
    pub dtype: String,
    /// The dtype of its stored values: `dtype` for dense and sparse tensors, `int4` for 4-bit codes, `int4/int8`
    /// for low-rank factors stored in 4 and 8 bits.
    pub stored: String,
    pub shape: Vec<usize>,
    pub bytes: usize,
    /// How the tensor is stored: `F32`, `4-bit group 128`, `low-rank r=64 F32`, `sparse 50.0% F32` (the share of
    /// zeros), `2:4 F32`.
    pub form: String,
    #[serde(skip)]
    dense: bool,
}

/// The manifest of an artifact written by compressor, summarized.
#[derive(Debug, Serialize)]
pub struct ArtifactSummary {
    pub schema_version: Value,
    pub tool_version: Value,
    /// `kind` and number of changed tensors of each pass, in order.
    pub passes: Vec<PassSummary>,
}

#[derive(Debug, Serialize)]
pub struct PassSummary {
    pub kind: String,
    pub changed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub path: String,
    pub architecture: String,
    pub model_type: String,
    pub layers: usize,
    pub hidden_size: usize,
    pub heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub prefix: String,
    pub pooling: compressor_models::Pooling,
    pub parameters: usize,
    pub total_bytes: usize,
    pub tensors: Vec<TensorRow>,
    /// Present for artifacts written by compressor.
    pub artifact: Option<ArtifactSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Open `dir` (metadata), check every weight is finite, and summarize it.
pub fn inspect(dir: &Path, progress: &dyn Progress) -> anyhow::Result<Inspection> {
    let ckpt =
        Checkpoint::open(dir).with_context(|| format!("cannot inspect `{}`", dir.display()))?;
    crate::runner::check_finite(&ckpt.store, progress)
        .with_context(|| format!("cannot inspect `{}`", dir.display()))?;
    let info = ModelInfo::from_store(&ckpt.config, &ckpt.store);
    let b = ckpt.config.bert();
    let mut warnings = Vec::new();
    let artifact = match std::fs::read_to_string(dir.join("manifest.json")) {
        Err(_) => None,
        Ok(text) => match summarize_manifest(&text) {
            Ok(s) => Some(s),
            Err(e) => {
                warnings.push(format!("manifest.json is not a compressor manifest: {e}"));
                None
            }
        },
    };
    Ok(Inspection {
        path: dir.display().to_string(),
        architecture: ckpt.config.architecture.clone(),
        model_type: ckpt.config.model_type.clone(),
        layers: b.num_hidden_layers,
        hidden_size: b.hidden_size,
        heads: b.num_attention_heads,
        intermediate_size: b.intermediate_size,
        vocab_size: b.vocab_size,
        max_position_embeddings: b.max_position_embeddings,
        type_vocab_size: b.type_vocab_size,
        prefix: ckpt.store.prefix.clone(),
        pooling: ckpt.pooling,
        parameters: ckpt.parameter_count(),
        total_bytes: info.total_bytes(),
        tensors: info
            .tensors
            .iter()
            .map(|t| TensorRow {
                name: t.name.clone(),
                role: t.role.as_str().to_string(),
                kind: serde_json::to_value(t.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                dtype: t.dtype.as_str().to_string(),
                stored: stored_dtype(&t.form),
                shape: t.shape.clone(),
                bytes: t.bytes(),
                form: t.form.describe(&t.shape),
                dense: matches!(t.form, Form::Dense { .. }),
            })
            .collect(),
        artifact,
        warnings,
    })
}

/// What the values of a tensor are stored as (the human table's `dtype` column).
fn stored_dtype(form: &Form) -> String {
    use compressor_models::FactorForm;
    let factor = |f: &FactorForm| match f {
        FactorForm::Dense { dtype } => dtype.as_str().to_string(),
        FactorForm::Quant { encoding } => format!("int{}", encoding.bits),
    };
    match form {
        Form::Dense { dtype }
        | Form::Sparse {
            dtype,
            encoding: None,
            ..
        } => dtype.as_str().to_string(),
        Form::Quant { encoding }
        | Form::Sparse {
            encoding: Some(encoding),
            ..
        } => format!("int{}", encoding.bits),
        Form::LowRank { u, v, .. } => {
            let (u, v) = (factor(u), factor(v));
            if u == v {
                u
            } else {
                format!("{u}/{v}")
            }
        }
    }
}

fn summarize_manifest(text: &str) -> anyhow::Result<ArtifactSummary> {
    let v: Value = serde_json::from_str(text)?;
    let schema_version = v
        .get("schema_version")
        .cloned()
        .context("no `schema_version`")?;
    let tool_version = v.pointer("/tool/version").cloned().unwrap_or(Value::Null);
    let passes = v
        .get("passes")
        .and_then(Value::as_array)
        .context("no `passes` list")?
        .iter()
        .map(|p| PassSummary {
            kind: p
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
            changed: p
                .get("changed")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            dtype: p
                .pointer("/decisions/dtype")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
        .collect();
    Ok(ArtifactSummary {
        schema_version,
        tool_version,
        passes,
    })
}

impl Inspection {
    /// The human report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<14}{v}\n"));
        line("path", self.path.clone());
        line(
            "architecture",
            format!("{} (model_type `{}`)", self.architecture, self.model_type),
        );
        line(
            "shape",
            format!(
                "{} layers, hidden {}, {} heads, intermediate {}",
                self.layers, self.hidden_size, self.heads, self.intermediate_size
            ),
        );
        line(
            "vocabulary",
            format!(
                "{} tokens, {} positions, {}",
                self.vocab_size,
                self.max_position_embeddings,
                match self.type_vocab_size {
                    0 => "no token types".to_string(),
                    1 => "1 token type".to_string(),
                    n => format!("{n} token types"),
                }
            ),
        );
        line("parameters", thousands(self.parameters));
        line(
            "size",
            format!(
                "{} bytes ({}) in {}",
                thousands(self.total_bytes),
                size(self.total_bytes),
                count(self.tensors.len(), "tensor")
            ),
        );
        line(
            "prefix",
            if self.prefix.is_empty() {
                "(none)".into()
            } else {
                format!("`{}`", self.prefix)
            },
        );
        let pooling = serde_json::to_value(self.pooling.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        line(
            "pooling",
            format!(
                "{pooling}{}{}",
                if self.pooling.normalize {
                    ", normalized"
                } else {
                    ""
                },
                if self.pooling.declared {
                    ""
                } else {
                    " (default; no modules.json)"
                }
            ),
        );
        if let Some(a) = &self.artifact {
            let passes: Vec<String> = a
                .passes
                .iter()
                .map(|p| match &p.dtype {
                    Some(d) => format!("{} ({} to {d})", p.kind, count(p.changed, "tensor")),
                    None => format!("{} ({})", p.kind, count(p.changed, "tensor")),
                })
                .collect();
            line(
                "artifact",
                format!(
                    "written by compressor {} (manifest schema {})",
                    a.tool_version.as_str().unwrap_or("?"),
                    a.schema_version
                ),
            );
            line(
                "passes",
                if passes.is_empty() {
                    "(none)".into()
                } else {
                    passes.join(", ")
                },
            );
        }
        s.push('\n');
        let w = self
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let rw = self
            .tensors
            .iter()
            .map(|t| t.role.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let sw = self
            .tensors
            .iter()
            .map(|t| shape(&t.shape).len())
            .max()
            .unwrap_or(5)
            .max(5);
        let bw = thousands(self.total_bytes).len().max(5);
        let dw = self
            .tensors
            .iter()
            .map(|t| t.stored.len())
            .max()
            .unwrap_or(5)
            .max(5);
        // A `form` column when some tensor is not plainly dense.
        let fw = if self.tensors.iter().all(|t| t.dense) {
            0
        } else {
            self.tensors
                .iter()
                .map(|t| t.form.len())
                .max()
                .unwrap_or(4)
                .max(4)
        };
        let form = |f: &str| {
            if fw == 0 {
                String::new()
            } else {
                format!("  {f:<fw$}")
            }
        };
        s.push_str(&format!(
            "{:<w$}  {:<rw$}  {:<dw$}{}  {:<sw$}  {:>bw$}\n",
            "name",
            "role",
            "dtype",
            form("form"),
            "shape",
            "bytes"
        ));
        for t in &self.tensors {
            s.push_str(&format!(
                "{:<w$}  {:<rw$}  {:<dw$}{}  {:<sw$}  {:>bw$}\n",
                t.name,
                t.role,
                t.stored,
                form(&t.form),
                shape(&t.shape),
                thousands(t.bytes)
            ));
        }
        s.push_str(&format!(
            "{:<w$}  {:<rw$}  {:<dw$}{}  {:<sw$}  {:>bw$}\n",
            "total",
            "",
            "",
            form(""),
            "",
            thousands(self.total_bytes)
        ));
        s
    }
}
