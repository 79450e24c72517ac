//! `compressor export DIR --format gguf --output FILE.gguf [--type TYPE]`: one GGUF file that llama.cpp
//! (`llama-server --embeddings`, `llama-embedding`, llama-cpp-python) loads as a `bert` model, in the layout its own
//! converter writes (models `gguf::bert`).
//!
//! Tensor types: norms, biases and the position and token-type tables stay f32 (llama.cpp's rule). Every other
//! matrix takes `--type`: `f32`, `f16`, `q8_0`, `q4_0`, `q4_1`, or `auto` (the default), which keeps an artifact's
//! integer codes in the block type that holds them (codes of up to 4 bits in `q4_0`, or `q4_1` with zero points; up
//! to 8 symmetric bits in `q8_0`) and writes float matrices as f16, as the converter does. Codes are copied when
//! each 32-value block shares one scale (groups of a multiple of 32, per channel, per tensor); a scale that is not a
//! half-precision number is rounded to one (the export counts them); anything else is re-quantized from the
//! decoded weights with ggml's own quantizer, and the export says which tensors and why.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _};
use compressor_models::gguf::blocks::{self, CodeBlock, CodeMismatch, QK};
use compressor_models::gguf::{self, bert, GgmlType, TensorInfo};
use compressor_models::quant::QuantTensor;
use compressor_models::Checkpoint;
use compressor_passes::Progress;

/// What `--type` may name.
pub const TYPES: &str = "auto, f32, f16, q8_0, q6_k, q5_k, q4_k, q3_k, q2_k, q4_0, q4_1";

/// The requested matrix type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Auto,
    Type(GgmlType),
}

impl Requested {
    pub fn parse(s: Option<&str>) -> anyhow::Result<Self> {
        match s {
            None | Some("auto") => Ok(Requested::Auto),
            Some(name) => match GgmlType::parse(name) {
                Some(t) => Ok(Requested::Type(t)),
                None => bail!("unknown GGUF tensor type `{name}`\nhint: valid types: {TYPES}"),
            },
        }
    }
}

/// How one tensor's values got into the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// Float values written in a float type.
    Float,
    /// Float values quantized by ggml's reference quantizer.
    Quantized,
    /// The artifact's integer codes and scales, bit for bit.
    Copied,
    /// The artifact's codes, with scales rounded to f16.
    CopiedRoundedScales,
    /// The artifact's codes could not be kept: decoded and quantized again.
    Requantized,
}

/// One tensor of the export.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The checkpoint's (canonical) name.
    pub source_name: String,
    pub info: TensorInfo,
    pub source: Source,
    /// Why the requested type was not used, or why codes were re-quantized.
    pub note: Option<String>,
}

/// What a GGUF export did.
#[derive(Debug)]
pub struct Outcome {
    pub bytes: u64,
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
}

impl Outcome {
    /// Tensors per (type, source), for the summary line.
    pub fn counts(&self) -> BTreeMap<(String, &'static str), usize> {
        let mut m = BTreeMap::new();
        for e in &self.entries {
            let how = match e.source {
                Source::Float => "float",
                Source::Quantized => "quantized",
                Source::Copied => "codes copied",
                Source::CopiedRoundedScales => "codes copied, scales rounded to f16",
                Source::Requantized => "re-quantized",
            };
            *m.entry((e.info.ty.name().to_string(), how)).or_insert(0) += 1;
        }
        m
    }
}

/// Whether the `[rows, cols]` matrix `q` can be cut into 32-value blocks that each share one scale.
fn blocks_share_scales(q: &QuantTensor) -> bool {
    q.cols.is_multiple_of(QK)
        && (0..q.rows).all(|r| {
            (0..q.cols)
                .step_by(QK)
                .all(|c| q.scale_index(r, c) == q.scale_index(r, c + QK - 1))
        })
}

/// The type an artifact's codes go to under `auto`.
fn auto_type(q: &compressor_models::quant::Encoding) -> GgmlType {
    match (q.bits <= 4, q.symmetric) {
        (true, true) => GgmlType::Q4_0,
        (true, false) => GgmlType::Q4_1,
        (false, _) => GgmlType::Q8_0,
    }
}

/// The tensors of the export in llama.cpp's order, with the type of each (metadata only).
fn plan(ckpt: &Checkpoint, requested: Requested) -> anyhow::Result<Vec<Entry>> {
    let config = &ckpt.config;
    let classifier = matches!(
        config.bert().head,
        compressor_models::arch::Head::SequenceClassification { .. }
    );
    let mut names: Vec<&str> = ckpt.store.names().collect();
    // Embeddings, then each layer in order, then the head: the order of the checkpoint's own layers.
    let order = |n: &str| -> (usize, usize, String) {
        match n
            .strip_prefix("encoder.layer.")
            .and_then(|r| r.split_once('.'))
        {
            Some((i, rest)) => (1, i.parse().unwrap_or(usize::MAX), rest.to_string()),
            None if n.starts_with("embeddings.") => (0, 0, n.to_string()),
            None => (2, 0, n.to_string()),
        }
    };
    names.sort_by_key(|n| order(n));
    let mut entries = Vec::new();
    for name in names {
        let Some(gname) = bert::tensor_name(name, classifier) else {
            continue;
        };
        let (_, shape) = ckpt
            .store
            .info(name)
            .with_context(|| format!("tensor `{name}` vanished"))?;
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let cols = shape.last().copied().unwrap_or(1);
        let float_table = gname.starts_with("position_embd") || gname.starts_with("token_types");
        let quant = ckpt.store.get_quant(name);
        let (ty, source, note) = if shape.len() < 2 || float_table {
            (GgmlType::F32, Source::Float, None)
        } else {
            let want = match (requested, &quant) {
                (Requested::Type(t), _) => t,
                (Requested::Auto, Some(q)) => auto_type(&q.encoding),
                (Requested::Auto, None) => GgmlType::F16,
            };
            // A k-quant falls back to q8_0 where rows are not whole super-blocks (as llama-quantize does); the
            // note says so, and the q8_0 then follows the usual rules (codes copied where they fit).
            let mut fell_back = None;
            let k_quant = matches!(
                want,
                GgmlType::Q6K | GgmlType::Q5K | GgmlType::Q4K | GgmlType::Q3K | GgmlType::Q2K
            );
            let want = if k_quant && !want.fits(cols) && GgmlType::Q8_0.fits(cols) {
                fell_back = Some(format!(
                    "rows of {cols} values are not whole {}-value super-blocks of {}: written as q8_0",
                    want.block_size(),
                    want.name()
                ));
                GgmlType::Q8_0
            } else {
                want
            };
            let (ty, source, note) = if !want.fits(cols) {
                (
                    GgmlType::F16,
                    Source::Float,
                    Some(format!(
                        "rows of {cols} values are not whole {}-value blocks of {}: written as f16",
                        want.block_size(),
                        want.name()
                    )),
                )
            } else if !want.is_quantized() {
                (want, Source::Float, None)
            } else {
                match &quant {
                    None if matches!(ckpt.store.form(name), Some(f) if f.encoding().is_some()) => (
                        want,
                        Source::Requantized,
                        Some(
                            "stored sparse with quantized values: decoded and quantized again"
                                .into(),
                        ),
                    ),
                    None => (want, Source::Quantized, None),
                    Some(q) => {
                        let e = q.encoding;
                        let fits_range = match want {
                            GgmlType::Q8_0 => e.symmetric,
                            GgmlType::Q6K
                            | GgmlType::Q5K
                            | GgmlType::Q4K
                            | GgmlType::Q3K
                            | GgmlType::Q2K => false,
                            GgmlType::Q4_0 => e.bits <= 4 && e.symmetric,
                            GgmlType::Q4_1 => e.bits <= 4,
                            _ => false,
                        };
                        if !fits_range {
                            (
                                want,
                                Source::Requantized,
                                Some(format!(
                                    "its {}-bit {} codes do not fit {}: decoded and quantized again",
                                    e.bits,
                                    if e.symmetric { "symmetric" } else { "asymmetric" },
                                    want.name()
                                )),
                            )
                        } else if !blocks_share_scales(q) {
                            (
                                want,
                                Source::Requantized,
                                Some(format!(
                                    "its scales ({}) do not cover whole {QK}-value blocks: decoded and quantized again",
                                    e.strategy.describe()
                                )),
                            )
                        } else {
                            (want, Source::Copied, None)
                        }
                    }
                }
            };
            let note = match (fell_back, note) {
                (Some(f), Some(n)) => Some(format!("{f}; {n}")),
                (f, n) => f.or(n),
            };
            (ty, source, note)
        };
        entries.push(Entry {
            source_name: name.to_string(),
            info: TensorInfo {
                name: gname,
                dims,
                ty,
            },
            source,
            note,
        });
    }
    Ok(entries)
}

/// The bytes of one planned tensor; a copy whose scales had to be rounded updates `entry.source`.
fn tensor_bytes(ckpt: &Checkpoint, entry: &mut Entry) -> anyhow::Result<Vec<u8>> {
    let name = &entry.source_name;
    if entry.source == Source::Copied {
        let q = ckpt
            .store
            .get_quant(name)
            .with_context(|| format!("tensor `{name}` is no longer quantized"))?;
        let mut list = Vec::with_capacity(q.codes.len() / QK);
        for r in 0..q.rows {
            for c in (0..q.cols).step_by(QK) {
                let k = q.scale_index(r, c);
                list.push(CodeBlock {
                    codes: &q.codes[r * q.cols + c..r * q.cols + c + QK],
                    scale: q.scales[k],
                    zero_point: q.zero_points.get(k).copied().unwrap_or(0),
                });
            }
        }
        match blocks::encode_codes(entry.info.ty, &list, false) {
            Ok(b) => return Ok(b),
            Err(CodeMismatch::Scale) => {
                entry.source = Source::CopiedRoundedScales;
                return blocks::encode_codes(entry.info.ty, &list, true).map_err(|e| {
                    anyhow::anyhow!("tensor `{name}`: codes cannot be copied ({e:?})")
                });
            }
            Err(CodeMismatch::Range) => {
                entry.source = Source::Requantized;
                entry.note = Some(
                    "its codes fall outside the type's range: decoded and quantized again".into(),
                );
            }
        }
    }
    // ggml dims are the checkpoint's shape reversed; `get_f32` releases the input's pages once read.
    let shape: Vec<usize> = entry.info.dims.iter().rev().map(|&d| d as usize).collect();
    let values = ckpt.store.get_f32(name, &shape)?;
    Ok(blocks::encode(entry.info.ty, &values))
}

/// Whether `path` is a GGUF file (a file we may replace with `--force`).
fn is_gguf(path: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == gguf::MAGIC
}

/// Check the output file: named `*.gguf`, outside the input folder, absent (or a GGUF file with `force`), in an
/// existing folder.
fn check_output(dir: &Path, out: &Path, force: bool) -> anyhow::Result<()> {
    if out.extension().and_then(|e| e.to_str()) != Some("gguf") {
        bail!(
            "GGUF output `{}` must be a file name ending in `.gguf`\nhint: e.g. `--output minilm-q8_0.gguf`",
            out.display()
        );
    }
    let input = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let parent = crate::output::parent_of(out);
    let parent_abs = std::fs::canonicalize(&parent)
        .with_context(|| format!("the folder of `{}` does not exist", out.display()))?;
    if parent_abs.starts_with(&input) {
        bail!(
            "output `{}` is inside the model folder `{}`\nhint: compressor never writes into its input; choose a path outside it",
            out.display(),
            dir.display()
        );
    }
    if out.exists() {
        if !force {
            bail!(
                "output `{}` already exists\nhint: pass `--force` to replace it, or choose another file name",
                out.display()
            );
        }
        if !is_gguf(out) {
            bail!(
                "output `{}` exists and is not a GGUF file\nhint: compressor replaces only GGUF files it could have written; choose another file name",
                out.display()
            );
        }
    }
    Ok(())
}

/// Write `dir` (a checkpoint or artifact) as one GGUF file at `out`, atomically.
pub fn export(
    dir: &Path,
    out: &Path,
    requested: Requested,
    rate: Option<f64>,
    force: bool,
    progress: &dyn Progress,
) -> anyhow::Result<Outcome> {
    check_output(dir, out, force)
        .with_context(|| format!("cannot export to `{}`", out.display()))?;
    let mut ckpt =
        Checkpoint::open(dir).with_context(|| format!("cannot open model `{}`", dir.display()))?;
    crate::runner::check_finite(&ckpt.store, progress)
        .with_context(|| format!("cannot use the weights of `{}`", dir.display()))?;
    if let Some(r) = rate {
        ckpt.config = compressor_models::elastic::cut(&ckpt.config, &mut ckpt.store, r)
            .with_context(|| format!("cannot cut `{}` at rate {r}", dir.display()))?;
    }
    let mut warnings = Vec::new();
    if !ckpt.config.low_rank_weights().is_empty() {
        warnings.push(format!(
            "{} low-rank Linear(s) multiplied out: llama.cpp has no factorized Linear (`--format onnx` keeps the factors)",
            ckpt.config.low_rank_weights().len()
        ));
    }
    ckpt.config = ckpt
        .config
        .without_low_rank()
        .with_context(|| format!("cannot describe `{}` densified", dir.display()))?;
    if let Err(reason) = bert::check(ckpt.config.bert(), &ckpt.pooling) {
        bail!(
            "cannot export `{}` as GGUF: {reason}\nhint: `--format onnx` runs per-layer shapes as they are; `--format dense` pads them back to the uniform shape, which llama.cpp loads (without the speed-up)",
            dir.display()
        );
    }
    if ckpt.activations.is_some() {
        warnings.push(format!(
            "`{}` is not exported: llama.cpp runs activations in float",
            compressor_models::quant::act::FILE
        ));
    }
    if ckpt.store.contains("pooler.dense.weight")
        && ckpt.config.bert().head == compressor_models::arch::Head::None
    {
        warnings.push(
            "the pooler is not exported: llama.cpp's embedding pooling does not use it (as its converter)".into(),
        );
    }
    let vocab = bert::vocab(dir, ckpt.config.bert().vocab_size)
        .with_context(|| format!("cannot export the vocabulary of `{}`", dir.display()))?;
    let mut entries = plan(&ckpt, requested)?;
    // general.file_type: the type most matrix elements are stored in.
    let mut by_type: BTreeMap<u32, usize> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.info.dims.len() == 2) {
        *by_type.entry(e.info.ty as u32).or_insert(0) += e.info.elements();
    }
    let main_type = by_type
        .iter()
        .max_by_key(|(_, n)| **n)
        .and_then(|(t, _)| GgmlType::from_id(*t))
        .unwrap_or(GgmlType::F32);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let metadata = bert::metadata(
        &ckpt.config,
        &ckpt.pooling,
        &vocab,
        &name,
        main_type.file_type(),
    );
    let infos: Vec<TensorInfo> = entries.iter().map(|e| e.info.clone()).collect();
    progress.on_pass_start("gguf", entries.len());
    let bytes = gguf::write(out, &metadata, &infos, |i| {
        progress.on_unit(&entries[i].info.name);
        tensor_bytes(&ckpt, &mut entries[i])
            .map_err(|e| compressor_models::Error::Runtime(format!("{e:#}")))
    })
    .with_context(|| format!("cannot write `{}`", out.display()))?;
    progress.on_pass_end();
    Ok(Outcome {
        bytes,
        entries,
        warnings,
    })
}
