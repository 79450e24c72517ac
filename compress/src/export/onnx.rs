//! `compressor export DIR --format onnx [--type TYPE] [--pooling]`: the encoder as an ONNX graph
//! (`onnx/model.onnx`, models `onnx`), beside a plain Hugging Face config.json and the tokenizer and
//! sentence-transformers files, so that `SentenceTransformer(OUT, backend="onnx")` and optimum's
//! `ORTModelForFeatureExtraction` load it. The folder is written like every artifact: staged beside the target
//! under the output lock, then renamed; `manifest.json` records the plan (each matrix's type and whether its
//! codes were copied).

use std::path::Path;

use anyhow::Context as _;
use compressor_models::onnx::{self as graph, bert, proto::Message as _, TensorType};
use compressor_models::quant::act;
use compressor_models::ModelConfig;
use compressor_passes::{Progress, SideFiles};
use serde_json::{json, Value};

use super::{ExportOutcome, Opened, Options};
use crate::artifact::{self, FileRecord, TensorRecord};

/// The graph's path inside the output folder (where sentence-transformers' ONNX backend looks).
pub const MODEL_FILE: &str = "onnx/model.onnx";

/// config.json for the ONNX folder: the input's keys without what describes stored weights (the `compressor`
/// extension, `quantization_config`): the graph carries the shapes and types.
fn plain_config(config: &ModelConfig) -> anyhow::Result<Vec<u8>> {
    let mut raw = config.raw.clone();
    raw.remove(compressor_models::arch::EXTENSION_KEY);
    raw.remove("quantization_config");
    let mut text = serde_json::to_string_pretty(&Value::Object(raw))
        .context("cannot serialize config.json")?;
    text.push('\n');
    Ok(text.into_bytes())
}

pub fn export(
    dir: &Path,
    out: &Path,
    options: &Options,
    progress: &dyn Progress,
) -> anyhow::Result<ExportOutcome> {
    let tensor_type = TensorType::parse(options.tensor_type.as_deref().unwrap_or("auto"))
        .map_err(|e| anyhow::anyhow!("{e}\nhint: pass one of them to `--type`, or leave `--type` out (auto: as the model stores its weights)"))?;
    let Opened {
        config,
        mut store,
        pooling,
        activations,
        parameters,
        input,
        lock,
    } = super::open(dir, out, options.force, progress)?;
    let mut warnings = Vec::new();
    let config = match options.rate {
        Some(r) => {
            let quantized = !store.quantized_modules(&config).is_empty();
            let cut = compressor_models::elastic::cut(&config, &mut store, r)
                .with_context(|| format!("cannot cut `{}` at rate {r}", dir.display()))?;
            if quantized {
                warnings.push(format!(
                    "cutting at rate {r} decodes the weights: integer types are re-quantized from them"
                ));
            }
            cut
        }
        None => config,
    };
    let plan = graph::plan(&config, &store, tensor_type)
        .with_context(|| format!("cannot export `{}` as ONNX", dir.display()))?;
    // The word table is written as int8 codes unless the export is float; the small tables stay float.
    let word_float = plan.word_embeddings == compressor_models::onnx::TableKind::F32;
    let quantized_tables: Vec<&str> = [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
    ]
    .into_iter()
    .filter(|t| word_float || !t.starts_with("embeddings.word_"))
    .filter(|t| {
        store
            .form(t)
            .is_some_and(|f| f.kind() != compressor_models::FormKind::Dense)
    })
    .collect();
    if !quantized_tables.is_empty() {
        warnings.push(format!(
            "{} stored quantized: decoded to f32 (the graph's Gather tables stay float)",
            quantized_tables
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut files = SideFiles::new(dir);
    if activations.is_some() {
        files.remove(act::FILE);
        warnings.push(format!(
            "`{}` is ignored: int8 activations are quantized dynamically (DynamicQuantizeLinear), float ones stay float",
            act::FILE
        ));
    }
    let mut notes = vec![format!(
        "onnx --type {}: {}",
        tensor_type.as_str(),
        plan.summary().join(", ")
    )];
    for m in plan.matrices.iter().filter(|m| !m.copied) {
        if let Some(note) = &m.note {
            notes.push(format!("  {}: {note}", m.name()));
        }
    }
    let model = bert::build(&config, &store, &plan, options.pooling.then_some(pooling))
        .with_context(|| format!("cannot build the ONNX graph of `{}`", dir.display()))?;
    let write = |staging: &Path| -> anyhow::Result<(Vec<FileRecord>, Vec<TensorRecord>)> {
        let path = staging.join(MODEL_FILE);
        let folder = path.parent().unwrap_or(staging);
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create folder `{}`", folder.display()))?;
        graph::write_model(&model, &path)?;
        let (bytes, sha256) = artifact::hash_file(&path)?;
        std::fs::File::open(folder)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync folder `{}`", folder.display()))?;
        let records = model
            .graph
            .initializers
            .iter()
            .map(|t| TensorRecord {
                name: t.name.clone(),
                dtype: format!("{:?}", t.data_type).to_uppercase(),
                shape: t.dims.iter().map(|&d| d as usize).collect(),
                bytes: t.raw.len(),
                sha256: artifact::sha256_hex(&t.raw),
            })
            .collect();
        let file = FileRecord {
            path: MODEL_FILE.into(),
            bytes,
            sha256,
        };
        Ok((vec![file], records))
    };
    let manifest = artifact::write(
        artifact::Request {
            out,
            lock: &lock,
            force: options.force,
            model_dir: dir,
            config: &config,
            store: &store,
            files: &files,
            input,
            pipeline: json!({ "export": {
                "format": "onnx",
                "type": tensor_type.as_str(),
                "rate": options.rate,
                "pooling": options.pooling,
                "graph_bytes": model.encoded_len(),
                "matrices": plan.matrices,
            } }),
            passes: Vec::new(),
            parameters,
            evaluate: None,
            model: artifact::ModelFiles::Custom {
                format: "onnx",
                config: plain_config(&config)?,
                write: &write,
            },
        },
        progress,
    )
    .with_context(|| format!("cannot write `{}`", out.display()))?;
    Ok(ExportOutcome {
        manifest,
        decoded: 0,
        warnings,
        notes,
        recovered: lock.recovered.clone(),
    })
}
