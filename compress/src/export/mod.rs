//! `compressor export DIR --format dense`: a plain Hugging Face checkpoint that every runtime loads. Every tensor
//! stored in another form is decoded to dense (models `forms`: quantized and low-rank weights to f32, exactly the
//! values our runtime computes with; sparse ones with their zeros), per-layer shapes (pruned heads and neurons) are
//! zero-padded back to the uniform BERT shapes, `quantization_config` is dropped, and
//! settings no standard format expresses (static activation scales) are left out, with a warning.
//! `--format remote-code` keeps per-layer shapes and adds the modeling file; `--format onnx` writes the encoder as
//! an ONNX graph ([`onnx`]); `--format gguf` writes one llama.cpp file ([`gguf`]).

pub mod gguf;
pub mod onnx;

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
    /// The encoder as an ONNX graph (`onnx/model.onnx`) for onnxruntime and sentence-transformers' ONNX backend,
    /// per-layer shapes kept, weights f32, int8 or 4-bit (`--type`).
    Onnx,
    /// One GGUF file (`--output NAME.gguf`) that llama.cpp loads as a `bert` embedder or classifier; `--type` picks
    /// the matrix type (auto keeps an artifact's 4- and 8-bit codes).
    Gguf,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Dense => "dense",
            ExportFormat::RemoteCode => "remote-code",
            ExportFormat::Onnx => "onnx",
            ExportFormat::Gguf => "gguf",
        }
    }
}

/// What an export did.
pub struct ExportOutcome {
    pub manifest: Manifest,
    pub decoded: usize,
    pub warnings: Vec<String>,
    /// What the export chose, one line each (ONNX: how many matrices went into which type).
    pub notes: Vec<String>,
    /// What recovery did to folders a killed writer left beside the output.
    pub recovered: Vec<String>,
}

/// The options of `compressor export` besides the folders and the format.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// First cut an elastic model at this rate.
    pub rate: Option<f64>,
    /// `--type`: the tensor types of formats that have a choice (onnx).
    pub tensor_type: Option<String>,
    /// `--pooling`: also output the sentence embedding (onnx).
    pub pooling: bool,
    /// Replace an existing output folder.
    pub force: bool,
}

/// A checkpoint opened for export, with the output locked.
pub(crate) struct Opened {
    pub config: compressor_models::ModelConfig,
    pub store: compressor_models::TensorStore,
    pub pooling: compressor_models::Pooling,
    pub activations: Option<act::ActivationQuant>,
    pub parameters: usize,
    pub input: artifact::InputRecord,
    pub lock: OutputLock,
}

/// What every export does first: check the output policy, open and validate `dir`, lock `out` (and check again),
/// hash the inputs, and check every weight is finite.
pub(crate) fn open(
    dir: &Path,
    out: &Path,
    force: bool,
    progress: &dyn Progress,
) -> anyhow::Result<Opened> {
    crate::output::require(dir, out, crate::output::Mode::Write { force })
        .with_context(|| format!("cannot export to `{}`", out.display()))?;
    let ckpt =
        Checkpoint::open(dir).with_context(|| format!("cannot open model `{}`", dir.display()))?;
    let parameters = ckpt.parameter_count();
    let Checkpoint {
        config,
        store,
        activations,
        pooling,
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
    Ok(Opened {
        config,
        store,
        pooling,
        activations,
        parameters,
        input,
        lock,
    })
}

/// Write `dir` into `out` in `format` (atomically; `options.force` replaces an existing folder).
pub fn export(
    dir: &Path,
    out: &Path,
    format: ExportFormat,
    options: &Options,
    progress: &dyn Progress,
) -> anyhow::Result<ExportOutcome> {
    if format == ExportFormat::Onnx {
        return onnx::export(dir, out, options, progress);
    }
    if let Some(t) = &options.tensor_type {
        anyhow::bail!(
            "`--type {t}` does not apply to `--format {}`: it writes the checkpoint's own tensor forms\nhint: `--type` chooses the tensor types of `--format onnx` ({}) and `--format gguf` ({}); leave it out here",
            format.as_str(),
            compressor_models::onnx::TensorType::NAMES.join(", "),
            gguf::TYPES
        );
    }
    if options.pooling {
        anyhow::bail!(
            "`--pooling` does not apply to `--format {}`: the pooling files are copied as they are\nhint: `--pooling` adds a sentence_embedding output to `--format onnx`",
            format.as_str()
        );
    }
    let (rate, force) = (options.rate, options.force);
    let Opened {
        config,
        mut store,
        activations,
        parameters,
        input,
        lock,
        ..
    } = open(dir, out, force, progress)?;
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
        ExportFormat::Onnx => anyhow::bail!("the ONNX export has its own writer (export::onnx)"),
        ExportFormat::Gguf => anyhow::bail!("the GGUF export has its own writer (export::gguf)"),
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
            model: artifact::ModelFiles::Safetensors,
        },
        progress,
    )
    .with_context(|| format!("cannot write `{}`", out.display()))?;
    Ok(ExportOutcome {
        manifest,
        decoded,
        warnings,
        notes: Vec::new(),
        recovered: lock.recovered.clone(),
    })
}
