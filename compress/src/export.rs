//! `compressor export DIR --format dense`: a plain Hugging Face checkpoint that every runtime loads. Every tensor
//! stored in another form is decoded to dense (models `forms`: quantized and low-rank weights to f32, exactly the
//! values our runtime computes with; sparse ones with their zeros), `quantization_config` is dropped, and
//! settings no standard format expresses (static activation scales) are left out, with a warning.

use std::path::Path;

use anyhow::Context as _;
use compressor_models::quant::act;
use compressor_models::Checkpoint;
use compressor_passes::{Progress, SideFiles};
use serde_json::json;

use crate::artifact::{self, Manifest};

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Dense safetensors with standard names and shapes (quantized, low-rank and sparse weights decoded).
    Dense,
}

/// What an export did.
pub struct ExportOutcome {
    pub manifest: Manifest,
    pub decoded: usize,
    pub warnings: Vec<String>,
}

/// Write `dir` as a dense checkpoint into `out` (atomically; `force` replaces an existing folder).
pub fn export(
    dir: &Path,
    out: &Path,
    format: ExportFormat,
    force: bool,
    progress: &dyn Progress,
) -> anyhow::Result<ExportOutcome> {
    if crate::plan::absolute(out).starts_with(crate::plan::absolute(dir)) {
        anyhow::bail!(
            "the output folder `{}` lies inside the model folder `{}`\nhint: choose an output folder outside the input, which is never modified",
            out.display(),
            dir.display()
        );
    }
    let ckpt =
        Checkpoint::open(dir).with_context(|| format!("cannot open model `{}`", dir.display()))?;
    let parameters = ckpt.parameter_count();
    let Checkpoint {
        config,
        mut store,
        activations,
        ..
    } = ckpt;
    let input = artifact::input_record(dir, &config, &store, parameters, progress)?;
    let decoded = store.densify_all()?;
    let mut files = SideFiles::new(dir);
    let mut warnings = Vec::new();
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
            force,
            model_dir: dir,
            config: &config,
            store: &store,
            files: &files,
            input,
            pipeline: json!({ "export": { "format": match format { ExportFormat::Dense => "dense" } } }),
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
    })
}
