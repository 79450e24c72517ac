//! `compressor export DIR --format dense`: a plain Hugging Face checkpoint that every runtime loads. Every tensor
//! stored in another form is decoded to dense (models `forms`: quantized and low-rank weights to f32, exactly the
//! values our runtime computes with; sparse ones with their zeros), per-layer shapes (pruned heads and neurons) are
//! zero-padded back to the uniform BERT shapes, `quantization_config` is dropped, and
//! settings no standard format expresses (static activation scales) are left out, with a warning.
//!
//! `--format gguf` writes one llama.cpp file instead ([`gguf`]).

pub mod gguf;

use std::path::Path;

use anyhow::Context as _;
use compressor_models::quant::act;
use compressor_models::remote_code;
use compressor_models::Checkpoint;
use compressor_passes::{Progress, SideFiles};
use serde_json::json;

use crate::artifact::{self, Manifest};
use crate::output::OutputLock;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Dense safetensors with standard names and shapes (quantized, low-rank and sparse weights decoded, per-layer
    /// shapes zero-padded): loads anywhere.
    Dense,
    /// Dense safetensors keeping per-layer shapes, plus a PyTorch modeling file (`auto_map`): transformers and
    /// sentence-transformers load it with `trust_remote_code=True` and run the smaller model.
    RemoteCode,
    /// One GGUF file (`--output NAME.gguf`) that llama.cpp loads as a `bert` embedder or classifier; `--type` picks
    /// the matrix type (auto keeps an artifact's 4- and 8-bit codes).
    Gguf,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Dense => "dense",
            ExportFormat::RemoteCode => "remote-code",
            ExportFormat::Gguf => "gguf",
        }
    }
}

/// What an export did.
pub struct ExportOutcome {
    pub manifest: Manifest,
    pub decoded: usize,
    pub warnings: Vec<String>,
    /// What recovery did to folders a killed writer left beside the output.
    pub recovered: Vec<String>,
}

/// Write `dir` as a dense checkpoint into `out` (atomically; `force` replaces an existing folder). GGUF has its own
/// entry point, [`gguf::export`].
pub fn export(
    dir: &Path,
    out: &Path,
    format: ExportFormat,
    rate: Option<f64>,
    force: bool,
    progress: &dyn Progress,
) -> anyhow::Result<ExportOutcome> {
    crate::output::require(dir, out, crate::output::Mode::Write { force })
        .with_context(|| format!("cannot export to `{}`", out.display()))?;
    let ckpt =
        Checkpoint::open(dir).with_context(|| format!("cannot open model `{}`", dir.display()))?;
    let parameters = ckpt.parameter_count();
    let Checkpoint {
        config,
        mut store,
        activations,
        ..
    } = ckpt;
    let lock = OutputLock::acquire(out)
        .with_context(|| format!("cannot export to `{}`", out.display()))?;
    crate::output::require(dir, out, crate::output::Mode::Write { force })
        .with_context(|| format!("cannot export to `{}`", out.display()))?;
    let input = artifact::input_record(dir, &config, &store, parameters, progress)?;
    // The finiteness rule of every command: no tensor (quantized ones decoded) may hold NaN or Inf.
    crate::runner::check_finite(&store, progress)
        .with_context(|| format!("cannot use the weights of `{}`", dir.display()))?;
    let decoded = store.densify_all()?;
    // An elastic model is cut first: its leading channels at the rate asked for.
    let config = match rate {
        Some(r) => compressor_models::elastic::cut(&config, &mut store, r)
            .with_context(|| format!("cannot cut `{}` at rate {r}", dir.display()))?,
        None => config,
    };
    // Low-rank factors are multiplied out: every Linear is one matrix now.
    let config = config
        .without_low_rank()
        .with_context(|| format!("cannot describe `{}` densified", dir.display()))?;
    let per_layer = !config.bert().is_uniform();
    let mut files = SideFiles::new(dir);
    let config = match format {
        // Per-layer shapes (pruned heads and neurons) come back as zeros, so the result is a plain BERT.
        ExportFormat::Dense => compressor_models::densify::densify(&config, &mut store)
            .with_context(|| format!("cannot re-densify `{}`", dir.display()))?,
        ExportFormat::Gguf => anyhow::bail!("the GGUF export is `export::gguf::export`"),
        ExportFormat::RemoteCode => {
            files.set(
                remote_code::MODELING_FILE,
                remote_code::MODELING_PY.as_bytes().to_vec(),
            );
            remote_code::with_auto_map(&config)?
        }
    };
    let mut warnings = Vec::new();
    if per_layer && format == ExportFormat::Dense {
        warnings.push(
            "per-layer shapes re-densified: removed heads and FFN neurons are stored as zeros (outputs unchanged, no speed-up; size as the unpruned layers)".to_string(),
        );
    }
    if activations.is_some() {
        files.remove(act::FILE);
        warnings.push(format!(
            "`{}` is not exported: the dense checkpoint runs activations in float (static activation scales have no standard format)",
            act::FILE
        ));
    }
    let manifest = artifact::write(
        artifact::Request {
            out,
            lock: &lock,
            force,
            model_dir: dir,
            config: &config,
            store: &store,
            files: &files,
            input,
            pipeline: json!({ "export": { "format": format.as_str(), "rate": rate } }),
            passes: Vec::new(),
            parameters,
            evaluate: None,
        },
        progress,
    )
    .with_context(|| format!("cannot write `{}`", out.display()))?;
    Ok(ExportOutcome {
        manifest,
        decoded,
        warnings,
        recovered: lock.recovered.clone(),
    })
}
