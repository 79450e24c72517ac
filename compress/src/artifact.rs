//! The artifact writer: `model.safetensors`, `config.json`, the tokenizer and sentence-transformers files and
//! `manifest.json`, written into a staging folder beside the target (`<out>.partial-<pid>`), synced, then renamed
//! into place. Nothing written depends on the time, the machine or absolute paths, so the same inputs give
//! byte-identical files. On any error the staging folder is removed. `--force` swaps the new artifact with the old
//! one in one atomic step (`renameat2(RENAME_EXCHANGE)`; where the file system cannot, the old one is renamed aside
//! first and put back by the next writer if this one is killed in between), so the path always holds a complete
//! artifact. The writer holds the output's [`OutputLock`]; see [`crate::output`] for the output policy.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use compressor_models::{st, DType, Form, ModelConfig, TensorStore};
use compressor_passes::{PassReport, Phase, Progress, SideFiles};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::output::{self, OutputLock};

// The manifest layout version and file records are defined beside the output policy, which reads manifests to
// decide what is ours.
pub use crate::output::{FileRecord, SCHEMA_VERSION};

/// Files copied from the model folder when present (tokenizer, sentence-transformers).
pub const SIDE_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    compressor_models::quant::act::FILE,
    compressor_passes::vocab_trim::VOCAB_MAP_FILE,
];

/// sentence-transformers module folders copied when present (besides those `modules.json` names).
pub const MODULE_DIRS: &[&str] = &["1_Pooling", "2_Normalize"];

/// One tensor of the output `model.safetensors`, by its name in that file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorRecord {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: usize,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

impl Tool {
    pub fn this() -> Self {
        Self {
            name: "compressor",
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// What went in.
#[derive(Debug, Clone, Serialize)]
pub struct InputRecord {
    pub model_type: String,
    pub architecture: String,
    /// The model prefix stripped from tensor names (`bert.`), or empty.
    pub prefix: String,
    pub parameters: usize,
    pub tensor_bytes: usize,
    pub files: Vec<FileRecord>,
}

/// What one pass did.
#[derive(Debug, Clone, Serialize)]
pub struct PassRecord {
    pub index: usize,
    pub phase: Phase,
    #[serde(flatten)]
    pub report: PassReport,
}

/// What came out.
#[derive(Debug, Clone, Serialize)]
pub struct OutputRecord {
    pub format: &'static str,
    pub parameters: usize,
    pub tensor_bytes: usize,
    /// Every file of the artifact except manifest.json and the evaluation reports.
    pub files: Vec<FileRecord>,
    pub tensors: Vec<TensorRecord>,
    /// The evaluation report files beside the model (report.md, report.json, plot.svg): named, not hashed (they
    /// hold timings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<String>,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub tool: Tool,
    pub input: InputRecord,
    /// The resolved pipeline (defaults filled in, without `[output]`); paths as written in the pipeline file.
    pub pipeline: Value,
    pub passes: Vec<PassRecord>,
    pub output: OutputRecord,
    /// `[[eval]]` results: per task the main metric of the original and the compressed model, the delta and the
    /// gate (metric values only: timings live in report.md / report.json, which are not hashed here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Value>,
}

/// What an evaluation of the staged artifact produced.
pub struct Evaluation {
    /// Deterministic record for manifest.json.
    pub record: Value,
    /// Report files written beside the model (report.md, report.json, plots), relative path and bytes.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Evaluates the complete staged artifact folder before it is committed.
pub type Evaluate<'a> = &'a dyn Fn(&Path) -> anyhow::Result<Evaluation>;

/// What the writer needs besides the store.
pub struct Request<'a> {
    pub out: &'a Path,
    /// The lock on `out`, held by the caller since before its passes ran.
    pub lock: &'a OutputLock,
    pub force: bool,
    pub model_dir: &'a Path,
    pub config: &'a ModelConfig,
    pub store: &'a TensorStore,
    /// The side files as the passes left them (rewritten ones replace the originals).
    pub files: &'a SideFiles,
    pub input: InputRecord,
    pub pipeline: Value,
    pub passes: Vec<PassRecord>,
    pub parameters: usize,
    /// Run on the staged folder once the model files are in it; its results go into the manifest.
    pub evaluate: Option<Evaluate<'a>>,
    /// What holds the weights.
    pub model: ModelFiles<'a>,
}

/// Writes a custom format's model files into the staging folder; returns their records and the tensors written.
pub type WriteModel<'a> = &'a dyn Fn(&Path) -> anyhow::Result<(Vec<FileRecord>, Vec<TensorRecord>)>;

/// The files that hold the weights in an artifact.
pub enum ModelFiles<'a> {
    /// `model.safetensors` from the store and `config.json` from [`output_config`].
    Safetensors,
    /// Another format (`manifest.json` names it under `output.format`): `write` puts its files into the staging
    /// folder; `config` is the config.json written beside them.
    Custom {
        format: &'static str,
        config: Vec<u8>,
        write: WriteModel<'a>,
    },
}

/// The relative paths of the side files present in `model_dir` (tokenizer files, sentence-transformers configs and
/// module folders), sorted.
pub fn side_files(model_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = SIDE_FILES
        .iter()
        .filter(|f| model_dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    let mut dirs: Vec<String> = MODULE_DIRS.iter().map(|d| d.to_string()).collect();
    if let Ok(text) = std::fs::read_to_string(model_dir.join("modules.json")) {
        if let Ok(Value::Array(modules)) = serde_json::from_str::<Value>(&text) {
            for m in modules {
                if let Some(p) = m.get("path").and_then(Value::as_str) {
                    let safe = !p.is_empty()
                        && !p.contains("..")
                        && !p.starts_with('/')
                        && !p.contains('\\');
                    if safe {
                        dirs.push(p.trim_end_matches('/').to_string());
                    }
                }
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        if model_dir.join(&d).is_dir() {
            list_files(model_dir, Path::new(&d), &mut out)?;
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn list_files(root: &Path, rel: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    let dir = root.join(rel);
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("cannot list `{}`", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list `{}`", dir.display()))?;
        let rel_child = rel.join(entry.file_name());
        let path = root.join(&rel_child);
        if path.is_dir() {
            list_files(root, &rel_child, out)?;
        } else if path.is_file() {
            out.push(rel_child.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// The input files: config.json, the weight files (and shard index), the side files; sorted.
pub fn input_files(model_dir: &Path, store: &TensorStore) -> anyhow::Result<Vec<String>> {
    let mut files = vec!["config.json".to_string()];
    for p in store.file_paths() {
        if let Some(name) = p.file_name() {
            files.push(name.to_string_lossy().into_owned());
        }
    }
    if model_dir.join("model.safetensors.index.json").is_file()
        && !model_dir.join("model.safetensors").is_file()
    {
        files.push("model.safetensors.index.json".into());
    }
    files.extend(side_files(model_dir)?);
    files.sort();
    files.dedup();
    Ok(files)
}

/// What went in: the model's identity and every input file hashed (reported under `hash`).
pub fn input_record(
    model_dir: &Path,
    config: &ModelConfig,
    store: &TensorStore,
    parameters: usize,
    progress: &dyn Progress,
) -> anyhow::Result<InputRecord> {
    pending_input(model_dir, config, store, parameters)?.hash(progress)
}

/// An [`InputRecord`] whose files are listed but not hashed yet: the store is free again (passes may run) while
/// [`PendingInput::hash`] reads the files, on another thread if the caller likes.
pub struct PendingInput {
    dir: std::path::PathBuf,
    files: Vec<String>,
    record: InputRecord,
}

pub fn pending_input(
    model_dir: &Path,
    config: &ModelConfig,
    store: &TensorStore,
    parameters: usize,
) -> anyhow::Result<PendingInput> {
    Ok(PendingInput {
        dir: model_dir.to_path_buf(),
        files: input_files(model_dir, store)?,
        record: InputRecord {
            model_type: config.model_type.clone(),
            architecture: config.architecture.clone(),
            prefix: store.prefix.clone(),
            parameters,
            tensor_bytes: store.total_bytes(),
            files: Vec::new(),
        },
    })
}

impl PendingInput {
    pub fn hash(self, progress: &dyn Progress) -> anyhow::Result<InputRecord> {
        let mut record = self.record;
        record.files = hash_files(&self.dir, &self.files, "hash", progress)?;
        Ok(record)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size and sha256 of a file, read in chunks.
pub fn hash_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = File::open(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex(&hasher.finalize())))
}

/// Hash the files `rel` of `dir`, reporting progress under `label`.
pub fn hash_files(
    dir: &Path,
    rel: &[String],
    label: &str,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<FileRecord>> {
    progress.on_pass_start(label, rel.len());
    let mut out = Vec::with_capacity(rel.len());
    for r in rel {
        progress.on_unit(r);
        let (bytes, sha256) = hash_file(&dir.join(r))?;
        out.push(FileRecord {
            path: r.clone(),
            bytes,
            sha256,
        });
    }
    progress.on_pass_end();
    Ok(out)
}

/// The float dtype shared by every dense float tensor of the store (other forms aside), if there is exactly one.
pub fn uniform_float_dtype(store: &TensorStore) -> Option<DType> {
    let mut dtypes = store
        .names()
        .filter(|n| matches!(store.form(n), Some(Form::Dense { .. })))
        .filter_map(|n| store.info(n))
        .map(|(d, _)| d)
        .filter(|d| d.is_float());
    let first = dtypes.next()?;
    dtypes.all(|d| d == first).then_some(first)
}

fn torch_dtype_name(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::F64 => "float64",
        _ => return None,
    })
}

/// The output config.json: the input's keys in their order, with `torch_dtype` (and `dtype`, where the input has
/// it) set when every float tensor has one dtype. 2-space indent, trailing newline.
///
/// When the store holds quantized tensors, `quantization_config` describes them (compressed-tensors, FORMATS.md);
/// otherwise any `quantization_config` of the input is dropped (the weights written are dense).
pub fn output_config(config: &ModelConfig, store: &TensorStore) -> anyhow::Result<Vec<u8>> {
    let mut raw = config.raw.clone();
    let modules = store.quantized_modules(config);
    if modules.is_empty() {
        raw.remove("quantization_config");
    } else {
        // `dequantize: true` for every model: sentence-transformers needs it for embedding models, and without it
        // transformers 5.24 leaves the weights of BertForSequenceClassification packed (scripts/check_interop.py
        // measured logits off by up to 2.9); transformers 4.57 ignores the key.
        raw.insert(
            "quantization_config".into(),
            compressor_models::quant::ct::quantization_config(&modules, true),
        );
    }
    if let Some(name) = uniform_float_dtype(store).and_then(torch_dtype_name) {
        let mut set = false;
        for key in ["torch_dtype", "dtype"] {
            if let Some(v) = raw.get_mut(key) {
                if v.is_string() {
                    *v = Value::String(name.into());
                    set = true;
                }
            }
        }
        if !set {
            raw.insert("torch_dtype".into(), Value::String(name.into()));
        }
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(raw))
        .context("cannot serialize config.json")?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// Removes the staging folder unless the artifact was committed.
struct Staging {
    path: PathBuf,
    committed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = output::remove_marked(&self.path);
        }
    }
}

/// A writer that hashes what passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f =
        File::create(path).with_context(|| format!("cannot create `{}`", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot sync `{}`", path.display()))
}

fn sync_dir(path: &Path) -> anyhow::Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync folder `{}`", path.display()))
}

/// The folder `out` is written from: beside it, named after it and this process.
pub fn staging_path(out: &Path) -> anyhow::Result<PathBuf> {
    if out.file_name().is_none() {
        bail!("output folder `{}` has no name", out.display());
    }
    Ok(output::sibling(
        out,
        &format!(".partial-{}", std::process::id()),
    ))
}

/// Write the artifact. Returns the manifest written.
pub fn write(req: Request, progress: &dyn Progress) -> anyhow::Result<Manifest> {
    let out = req.out;
    let parent = output::parent_of(out);
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create folder `{}`", parent.display()))?;
    let staging_dir = staging_path(out)?;
    if staging_dir.exists() {
        std::fs::remove_dir_all(&staging_dir).with_context(|| {
            format!(
                "cannot remove stale staging folder `{}`",
                staging_dir.display()
            )
        })?;
    }
    std::fs::create_dir(&staging_dir)
        .with_context(|| format!("cannot create folder `{}`", staging_dir.display()))?;
    let mut staging = Staging {
        path: staging_dir.clone(),
        committed: false,
    };
    let marker = staging_dir.join(output::STAGING_MARKER);
    write_synced(&marker, b"")?;
    sync_dir(&parent)?;

    let mut side = side_files(req.model_dir)?;
    side.extend(req.files.changed().keys().cloned());
    side.retain(|rel| !req.files.is_removed(rel));
    side.sort();
    side.dedup();
    progress.on_pass_start("write", 3 + side.len());

    let (format, mut files, records, config) = match &req.model {
        ModelFiles::Safetensors => {
            // model.safetensors: every tensor under its on-disk name (model prefix restored).
            progress.on_unit("model.safetensors");
            // Packed integer codes are made as each matrix is written, not all before.
            let tensors = req.store.disk_parts(req.config)?;
            let mut metadata: BTreeMap<String, String> = req.store.disk_metadata(req.config);
            metadata
                .entry("format".into())
                .or_insert_with(|| "pt".into());
            // Streamed: the file is hashed as it is written, each tensor hashed after it is written, and mapped
            // input pages released as they are copied, so the artifact is never held in memory whole.
            let model_path = staging_dir.join("model.safetensors");
            let file = File::create(&model_path)
                .with_context(|| format!("cannot create `{}`", model_path.display()))?;
            let mut w = HashingWriter {
                inner: std::io::BufWriter::with_capacity(1 << 20, file),
                hash: Sha256::new(),
            };
            let mut records: Vec<TensorRecord> = Vec::with_capacity(tensors.len());
            // Each tensor's sha256 from the slices as they are written (reading it again would fault a mapped
            // input back in).
            let mut tensor_hash = Sha256::new();
            let model_len =
                st::write_parts_to(&mut w, &tensors, &metadata, |name, t, slice| match slice {
                    Some(bytes) => tensor_hash.update(bytes),
                    None => records.push(TensorRecord {
                        name: name.to_string(),
                        dtype: t.dtype.as_str().to_string(),
                        shape: t.shape.clone(),
                        bytes: t.nbytes(),
                        sha256: hex(&tensor_hash.finalize_reset()),
                    }),
                })
                .with_context(|| format!("cannot write `{}`", model_path.display()))?;
            let model_sha = hex(&w.hash.finalize_reset());
            w.inner
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync `{}`", model_path.display()))?;
            records.sort_by(|a, b| a.name.cmp(&b.name));
            let files = vec![FileRecord {
                path: "model.safetensors".into(),
                bytes: model_len,
                sha256: model_sha,
            }];
            let config = output_config(req.config, req.store)?;
            ("safetensors", files, records, config)
        }
        ModelFiles::Custom {
            format,
            config,
            write,
        } => {
            progress.on_unit(format);
            let (files, records) = write(&staging_dir)?;
            (*format, files, records, config.clone())
        }
    };
    let tensor_bytes = records.iter().map(|r| r.bytes).sum();

    progress.on_unit("config.json");
    write_synced(&staging_dir.join("config.json"), &config)?;
    files.push(FileRecord {
        path: "config.json".into(),
        bytes: config.len() as u64,
        sha256: sha256_hex(&config),
    });

    for rel in &side {
        progress.on_unit(rel);
        let bytes = req
            .files
            .read(rel)?
            .with_context(|| format!("side file `{rel}` disappeared from the model folder"))?;
        let dst = staging_dir.join(rel);
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create folder `{}`", dir.display()))?;
        }
        write_synced(&dst, &bytes)?;
        files.push(FileRecord {
            path: rel.clone(),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
    }
    for p in &req.passes {
        for (name, text) in &p.report.plots {
            let rel = format!("pass-{}-{name}", p.index);
            progress.on_unit(&rel);
            write_synced(&staging_dir.join(&rel), text.as_bytes())?;
            files.push(FileRecord {
                path: rel,
                bytes: text.len() as u64,
                sha256: sha256_hex(text.as_bytes()),
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let mut reports = Vec::new();
    let evaluation = match req.evaluate {
        Some(evaluate) => {
            progress.on_pass_end();
            let e = evaluate(&staging_dir)?;
            for (rel, bytes) in &e.files {
                write_synced(&staging_dir.join(rel), bytes)?;
                reports.push(rel.clone());
            }
            reports.sort();
            progress.on_pass_start("write", 1);
            Some(e.record)
        }
        None => None,
    };

    progress.on_unit("manifest.json");
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        tool: Tool::this(),
        input: req.input,
        pipeline: req.pipeline,
        passes: req.passes,
        output: OutputRecord {
            format,
            parameters: req.parameters,
            tensor_bytes,
            files,
            tensors: records,
            reports,
        },
        evaluation,
    };
    let mut text =
        serde_json::to_string_pretty(&manifest).context("cannot serialize manifest.json")?;
    text.push('\n');
    write_synced(&staging_dir.join("manifest.json"), text.as_bytes())?;
    for rel in &side {
        if let Some(dir) = Path::new(rel)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            sync_dir(&staging_dir.join(dir))?;
        }
    }
    std::fs::remove_file(&marker)
        .with_context(|| format!("cannot remove `{}`", marker.display()))?;
    sync_dir(&staging_dir)?;
    progress.on_pass_end();

    commit(&staging_dir, out, req.force)?;
    staging.committed = true;
    sync_dir(&parent)?;
    Ok(manifest)
}

/// Put the staging folder at `out`. Without `force` an existing `out` is an error. With it, `out` must still be ours
/// (checked again: it may have changed while the passes ran) and is swapped with the staging folder atomically,
/// then deleted; where the file system cannot swap, it is renamed aside (`<out>.old-<pid>`), the new artifact renamed
/// in, and the old one deleted (put back on error here, or by the next writer's recovery after a kill).
fn commit(staging: &Path, out: &Path, force: bool) -> anyhow::Result<()> {
    let exists = std::fs::symlink_metadata(out).is_ok();
    if exists && !force {
        bail!("output folder `{}` already exists\nhint: pass `--force` to replace it, or choose another output folder", out.display());
    }
    let rename_in = || {
        std::fs::rename(staging, out).with_context(|| {
            format!(
                "cannot rename `{}` to `{}`",
                staging.display(),
                out.display()
            )
        })
    };
    if !exists {
        return rename_in();
    }
    if !out.is_dir() || std::fs::symlink_metadata(out).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!("output path `{}` exists and is not a folder", out.display());
    }
    if let Err(reason) = output::ownership(out) {
        bail!(
            "refusing to replace `{}`: it is not a compressor artifact: {reason}\nhint: {}",
            out.display(),
            output::OURS_HINT
        );
    }
    let swapped = output::exchange(staging, out).with_context(|| {
        format!(
            "cannot swap `{}` with `{}`",
            staging.display(),
            out.display()
        )
    })?;
    if swapped {
        // `staging` now holds the old artifact.
        return output::remove_marked(staging).with_context(|| {
            format!(
                "cannot remove the old artifact (moved to `{}`)",
                staging.display()
            )
        });
    }
    let old = output::sibling(out, &format!(".old-{}", std::process::id()));
    std::fs::rename(out, &old)
        .with_context(|| format!("cannot move the old `{}` aside", out.display()))?;
    if let Err(e) = rename_in() {
        let _ = std::fs::rename(&old, out);
        return Err(e);
    }
    output::remove_marked(&old)
        .with_context(|| format!("cannot remove the old artifact `{}`", old.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_sits_beside_the_target() -> anyhow::Result<()> {
        let s = staging_path(Path::new("out/minilm-f16"))?;
        assert_eq!(
            s,
            PathBuf::from(format!("out/minilm-f16.partial-{}", std::process::id()))
        );
        Ok(())
    }

    #[test]
    fn commit_refuses_an_existing_target_without_force() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let (staged, out) = (tmp.path().join("s"), tmp.path().join("o"));
        std::fs::create_dir(&staged)?;
        std::fs::write(staged.join("new"), b"new")?;
        std::fs::create_dir(&out)?;
        std::fs::write(out.join("old"), b"old")?;
        assert!(commit(&staged, &out, false).is_err());
        assert!(out.join("old").is_file());
        let err = commit(&staged, &out, true).expect_err("not ours");
        assert!(err.to_string().starts_with("refusing to replace"), "{err}");
        std::fs::write(
            out.join("manifest.json"),
            r#"{"schema_version": 1, "tool": {"name": "compressor"}, "output": {"files": [{"path": "old", "bytes": 3, "sha256": ""}]}}"#,
        )?;
        commit(&staged, &out, true)?;
        assert!(out.join("new").is_file() && !out.join("old").exists() && !staged.exists());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())?.collect();
        assert_eq!(leftovers.len(), 1);
        Ok(())
    }
}
