//! `TensorStore`: a checkpoint's safetensors (one file or shards) memory-mapped, plus a copy-on-write overlay of
//! changed tensors, addressed by canonical name (model prefix stripped).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::arch::ModelConfig;
use crate::error::{Error, Result};
use crate::names::{Role, TensorSpec};
use crate::quant::ct::{CtConfig, ModuleClass};
use crate::quant::{Encoding, QuantTensor};
use crate::st::SafetensorsFile;
use crate::tensor::{DType, HostTensor};

/// Everything wrong between a store and its architecture, listed at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (name, expected, found)
    pub mis_shaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// (name, dtype) of parameters whose dtype is not a float type.
    pub bad_dtype: Vec<(String, DType)>,
}

impl ValidationReport {
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.mis_shaped.is_empty()
            && self.bad_dtype.is_empty()
    }
}

/// At most this many problems are listed; the rest are counted (`... and 99,994 more`).
pub const LISTED_PROBLEMS: usize = 20;

/// `n` with thousands separators (`99,994`).
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl std::fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut lines = Vec::new();
        for (name, expected, got) in &self.mis_shaped {
            lines.push(format!(
                "  tensor `{name}` has shape {got:?}, the config implies {expected:?}"
            ));
        }
        for name in &self.missing {
            lines.push(format!("  tensor `{name}` is missing"));
        }
        for name in &self.unexpected {
            lines.push(format!("  tensor `{name}` is not part of the architecture"));
        }
        for (name, dtype) in &self.bad_dtype {
            lines.push(format!(
                "  tensor `{name}` has dtype {dtype}, expected F32, F16 or BF16"
            ));
        }
        if lines.len() > LISTED_PROBLEMS {
            let more = lines.len() - LISTED_PROBLEMS;
            lines.truncate(LISTED_PROBLEMS);
            lines.push(format!("  ... and {} more", thousands(more)));
        }
        write!(f, "{}", lines.join("\n"))
    }
}

#[derive(Debug, Clone)]
enum Entry {
    File {
        file: usize,
        key: String,
    },
    Owned(HostTensor),
    /// Integer codes with scales (a quantized `M.weight`), decoded to f32 on `get`.
    Quant(Arc<QuantTensor>),
}

/// The parts of one compressed-tensors weight on disk: canonical names of the tensors that encode `M.weight`.
const CT_PARTS: &[&str] = &[
    "weight_packed",
    "weight_scale",
    "weight_shape",
    "weight_zero_point",
];

/// The tensors of one model, by canonical name.
#[derive(Debug)]
pub struct TensorStore {
    files: Vec<SafetensorsFile>,
    entries: BTreeMap<String, Entry>,
    /// The model prefix found in the checkpoint (`bert.`), or empty.
    pub prefix: String,
    /// `__metadata__` of the first file.
    pub metadata: BTreeMap<String, String>,
}

impl TensorStore {
    /// Open the safetensors weights of a checkpoint folder (`model.safetensors` or a sharded index), stripping the
    /// model prefix that `config` expects (`bert.`) when every non-head tensor carries it.
    pub fn open(dir: &Path, config: &ModelConfig) -> Result<Self> {
        let files = weight_files(dir)?
            .iter()
            .map(|p| SafetensorsFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        Self::from_files(files, config)
    }

    fn from_files(files: Vec<SafetensorsFile>, config: &ModelConfig) -> Result<Self> {
        check_sizes(&files, config)?;
        let prefix = config.model_prefix();
        let all: Vec<&String> = files.iter().flat_map(|f| f.tensors.keys()).collect();
        let body: Vec<&&String> = all.iter().filter(|k| !config.is_head_tensor(k)).collect();
        let prefixed = !body.is_empty() && body.iter().all(|k| k.starts_with(prefix));
        let prefix = if prefixed {
            prefix.to_string()
        } else {
            String::new()
        };
        let mut entries = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            for key in f.tensors.keys() {
                let canonical = key.strip_prefix(prefix.as_str()).unwrap_or(key).to_string();
                if entries.contains_key(&canonical) {
                    return Err(Error::Safetensors {
                        path: f.path.clone(),
                        problem: format!("tensor `{key}` appears twice in the checkpoint"),
                    });
                }
                entries.insert(
                    canonical,
                    Entry::File {
                        file: i,
                        key: key.clone(),
                    },
                );
            }
        }
        let metadata = files
            .first()
            .map(|f| f.metadata.clone())
            .unwrap_or_default();
        let mut store = Self {
            files,
            entries,
            prefix,
            metadata,
        };
        store.decode_compressed(config)?;
        Ok(store)
    }

    /// Replace the compressed-tensors parts (`M.weight_packed`, `M.weight_scale`, `M.weight_shape`,
    /// `M.weight_zero_point`, or an int8 `M.weight` with its scale) by one quantized `M.weight`, checking every size
    /// against config.json's `quantization_config`.
    fn decode_compressed(&mut self, config: &ModelConfig) -> Result<()> {
        let path = config.path.clone();
        let ct = CtConfig::from_config(&config.raw).map_err(|problem| Error::ConfigKey {
            path: path.clone(),
            key: "quantization_config".into(),
            problem,
        })?;
        let modules: BTreeSet<String> = self
            .entries
            .keys()
            .filter_map(|k| k.strip_suffix(".weight_packed").map(str::to_string))
            .collect();
        let int8_modules: Vec<String> = match &ct {
            Some(_) => self
                .entries
                .keys()
                .filter(|k| k.ends_with(".weight"))
                .filter(|k| self.info(k).is_some_and(|(d, _)| d == DType::I8))
                .map(|k| k.trim_end_matches(".weight").to_string())
                .collect(),
            None => Vec::new(),
        };
        if modules.is_empty() && int8_modules.is_empty() {
            return Ok(());
        }
        let Some(ct) = ct else {
            let first = modules.iter().next().cloned().unwrap_or_default();
            return Err(Error::Quantized {
                path,
                name: format!("{first}.weight_packed"),
                problem: "the weights are quantized but config.json has no compressed-tensors `quantization_config`".into(),
            });
        };
        let specs: BTreeMap<String, (Role, Vec<usize>)> = config
            .expected_tensors()
            .into_iter()
            .map(|s| (s.name, (s.role, s.shape)))
            .collect();
        for module in modules.iter().chain(&int8_modules) {
            let weight = format!("{module}.weight");
            let fail = |problem: String| Error::Quantized {
                path: path.clone(),
                name: weight.clone(),
                problem,
            };
            let (class, expected_shape) = match specs.get(&weight) {
                Some((Role::EmbedTokens | Role::EmbedPositions | Role::EmbedTypes, shape)) => {
                    (ModuleClass::Embedding, shape)
                }
                Some((_, shape)) => (ModuleClass::Linear, shape),
                None => return Err(fail("is not a weight of this architecture".into())),
            };
            // Targets name modules as the loader sees them: with the model prefix (`bert.`) where the file has it.
            let disk_module = self.disk_name(config, &weight);
            let disk_module = disk_module.trim_end_matches(".weight");
            let group = ct.group_for(disk_module, class).ok_or_else(|| {
                fail("no `quantization_config.config_groups` entry targets this module".into())
            })?;
            let scale = self
                .get(&format!("{module}.weight_scale"))
                .map_err(|_| fail("`weight_scale` is missing".into()))?;
            let mut encoding: Encoding = group.encoding;
            encoding.scale_dtype = scale.dtype;
            let scale_shape = scale.shape.clone();
            let scales = scale.to_f32(&format!("{module}.weight_scale"))?;
            if let Some((i, v)) = scales
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v > 0.0))
            {
                return Err(fail(format!(
                    "`weight_scale` holds {} scale {v} at flat index {i}; every scale must be finite and positive",
                    if v.is_finite() { "a non-positive" } else { "a non-finite" }
                )));
            }
            // Every part's shape follows from the weight's shape, which the config fixes: check them before
            // anything is allocated from them.
            let check_shape = |part: &str, got: &[usize], expected: &[usize]| {
                if got == expected {
                    Ok(())
                } else {
                    Err(fail(format!(
                        "`{part}` has shape {got:?}, expected {expected:?} (config group `{}`: {} bits, {})",
                        group.name,
                        encoding.bits,
                        encoding.strategy.describe()
                    )))
                }
            };
            let (rows, cols, quant) = if int8_modules.contains(module) {
                let w = self.get(&weight)?;
                let (rows, cols) = match w.shape[..] {
                    [r, c] => (r, c),
                    _ => return Err(fail(format!("has shape {:?}, expected a matrix", w.shape))),
                };
                check_shape("weight", &w.shape, expected_shape)?;
                check_shape(
                    "weight_scale",
                    &scale_shape,
                    &encoding.strategy.scale_shape(rows, cols),
                )?;
                if encoding.bits != 8 {
                    return Err(fail(format!(
                        "is stored as int8 but its config group says {} bits",
                        encoding.bits
                    )));
                }
                let codes: Vec<i8> = bytemuck::cast_slice::<u8, i8>(w.bytes()).to_vec();
                let mut packed = Vec::new();
                crate::quant::pack_codes_rows(&codes, rows, cols, 8, &mut packed);
                (
                    rows,
                    cols,
                    QuantTensor::from_packed(encoding, rows, cols, &packed, scales, None),
                )
            } else {
                let shape = self
                    .get(&format!("{module}.weight_shape"))
                    .map_err(|_| fail("`weight_shape` is missing".into()))?
                    .to_i64(&format!("{module}.weight_shape"))?;
                let (rows, cols) = match shape[..] {
                    [r, c] if r > 0 && c > 0 => (r as usize, c as usize),
                    _ => {
                        return Err(fail(format!(
                            "`weight_shape` holds {shape:?}, expected [out, in]"
                        )))
                    }
                };
                if [rows, cols][..] != expected_shape[..] {
                    return Err(fail(format!(
                        "`weight_shape` holds {shape:?}, but the config implies {expected_shape:?}"
                    )));
                }
                let [sr, sc] = encoding.strategy.scale_shape(rows, cols);
                check_shape("weight_scale", &scale_shape, &[sr, sc])?;
                let packed_name = format!("{module}.weight_packed");
                let packed = self
                    .get(&packed_name)
                    .map_err(|_| fail("`weight_packed` is missing".into()))?;
                if packed.dtype != DType::I32 {
                    return Err(fail(format!(
                        "`weight_packed` is {}, expected I32",
                        packed.dtype
                    )));
                }
                check_shape(
                    "weight_packed",
                    &packed.shape,
                    &[rows, crate::quant::packed_words(cols, encoding.bits)],
                )?;
                let words: Vec<i32> = bytemuck::pod_collect_to_vec(packed.bytes());
                let zp_name = format!("{module}.weight_zero_point");
                let zp: Option<Vec<i32>> = match self.get(&zp_name) {
                    Ok(z) if z.dtype == DType::I32 => {
                        check_shape(
                            "weight_zero_point",
                            &z.shape,
                            &[crate::quant::packed_words(sr, encoding.bits), sc],
                        )?;
                        Some(bytemuck::pod_collect_to_vec(z.bytes()))
                    }
                    Ok(z) => {
                        return Err(fail(format!(
                            "`weight_zero_point` is {}, expected packed I32",
                            z.dtype
                        )))
                    }
                    Err(_) => None,
                };
                (
                    rows,
                    cols,
                    QuantTensor::from_packed(encoding, rows, cols, &words, scales, zp.as_deref()),
                )
            };
            let quant = quant.map_err(|p| {
                fail(format!(
                    "{p} (config group `{}`: {} bits, {})",
                    group.name,
                    encoding.bits,
                    encoding.strategy.describe()
                ))
            })?;
            debug_assert_eq!((quant.rows, quant.cols), (rows, cols));
            for part in CT_PARTS {
                self.entries.remove(&format!("{module}.{part}"));
            }
            self.entries.insert(weight, Entry::Quant(Arc::new(quant)));
        }
        if let Some(stray) = self
            .entries
            .keys()
            .find(|k| CT_PARTS.iter().any(|p| k.ends_with(&format!(".{p}"))))
        {
            return Err(Error::Quantized {
                path,
                name: stray.clone(),
                problem:
                    "is a compressed-tensors part without its `weight_packed` (or int8 `weight`)"
                        .into(),
            });
        }
        Ok(())
    }

    /// An empty store (for tests and builders).
    pub fn empty() -> Self {
        Self {
            files: Vec::new(),
            entries: BTreeMap::new(),
            prefix: String::new(),
            metadata: BTreeMap::new(),
        }
    }

    /// Canonical names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Dtype and shape from metadata alone (no data read).
    pub fn info(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        match self.entries.get(name)? {
            Entry::File { file, key } => self.files[*file]
                .tensors
                .get(key)
                .map(|t| (t.dtype, t.shape.clone())),
            Entry::Owned(t) => Some((t.dtype, t.shape.clone())),
            Entry::Quant(q) => Some((DType::F32, vec![q.rows, q.cols])),
        }
    }

    /// The encoding of a quantized tensor, `None` for dense ones.
    pub fn encoding(&self, name: &str) -> Option<Encoding> {
        match self.entries.get(name)? {
            Entry::Quant(q) => Some(q.encoding),
            _ => None,
        }
    }

    /// The codes and scales of a quantized tensor, `None` for dense ones.
    pub fn get_quant(&self, name: &str) -> Option<Arc<QuantTensor>> {
        match self.entries.get(name)? {
            Entry::Quant(q) => Some(q.clone()),
            _ => None,
        }
    }

    /// Store `name` as integer codes (it reads back dequantized, as f32).
    pub fn set_quant(&mut self, name: &str, q: QuantTensor) {
        self.entries
            .insert(name.to_string(), Entry::Quant(Arc::new(q)));
    }

    /// Replace every quantized tensor by its decoded f32 values (for dense export). Returns how many were decoded.
    pub fn dequantize_all(&mut self) -> Result<usize> {
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Quant(_)))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &names {
            let dense = self.get(name)?;
            self.set(name, dense);
        }
        Ok(names.len())
    }

    /// Bytes the tensor takes on disk (all compressed-tensors parts for a quantized one).
    pub fn stored_bytes(&self, name: &str) -> usize {
        match self.entries.get(name) {
            Some(Entry::Quant(q)) => q.stored_bytes(),
            Some(_) => self
                .info(name)
                .map_or(0, |(dt, shape)| shape.iter().product::<usize>() * dt.size()),
            None => 0,
        }
    }

    /// Quantized modules (`M` of `M.weight`, named as on disk: with the model prefix where the checkpoint has it)
    /// with their encodings, sorted by canonical name.
    pub fn quantized_modules(&self, config: &ModelConfig) -> Vec<(String, Encoding)> {
        self.entries
            .iter()
            .filter_map(|(n, e)| match e {
                Entry::Quant(q) => Some((
                    self.disk_name(config, n)
                        .trim_end_matches(".weight")
                        .to_string(),
                    q.encoding,
                )),
                _ => None,
            })
            .collect()
    }

    /// Every tensor as it is written to disk, by on-disk name (prefix restored), sorted: dense tensors as they are,
    /// quantized ones as compressed-tensors parts (`weight_packed` int32, `weight_scale` in the scale dtype,
    /// `weight_shape` int64, and `weight_zero_point` when asymmetric).
    pub fn disk_tensors(&self, config: &ModelConfig) -> Result<Vec<(String, HostTensor)>> {
        let mut out = Vec::with_capacity(self.entries.len());
        for (name, entry) in &self.entries {
            match entry {
                Entry::Quant(q) => {
                    let module = name.trim_end_matches(".weight");
                    let disk = |part: &str| self.disk_name(config, &format!("{module}.{part}"));
                    let words = q.packed();
                    out.push((
                        disk("weight_packed"),
                        HostTensor::from_bytes(
                            DType::I32,
                            vec![q.rows, crate::quant::packed_words(q.cols, q.encoding.bits)],
                            bytemuck::cast_slice(&words).to_vec(),
                        )?,
                    ));
                    let [sr, sc] = q.encoding.strategy.scale_shape(q.rows, q.cols);
                    out.push((
                        disk("weight_scale"),
                        HostTensor::from_f32(vec![sr, sc], &q.scales, q.encoding.scale_dtype)?,
                    ));
                    out.push((
                        disk("weight_shape"),
                        HostTensor::from_i64(vec![2], &[q.rows as i64, q.cols as i64])?,
                    ));
                    if !q.encoding.symmetric {
                        let zp = q.packed_zero_points();
                        out.push((
                            disk("weight_zero_point"),
                            HostTensor::from_bytes(
                                DType::I32,
                                vec![crate::quant::packed_words(sr, q.encoding.bits), sc],
                                bytemuck::cast_slice(&zp).to_vec(),
                            )?,
                        ));
                    }
                }
                _ => out.push((self.disk_name(config, name), self.get(name)?)),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The tensor (mapped bytes for unchanged tensors, no copy).
    pub fn get(&self, name: &str) -> Result<HostTensor> {
        match self.entries.get(name) {
            Some(Entry::File { file, key }) => self.files[*file].tensor(key),
            Some(Entry::Owned(t)) => Ok(t.clone()),
            Some(Entry::Quant(q)) => {
                HostTensor::from_f32(vec![q.rows, q.cols], &q.dequantize(), DType::F32)
            }
            None => Err(Error::TensorNotFound { name: name.into() }),
        }
    }

    /// The tensor as f32 values, checking its shape.
    pub fn get_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.get(name)?;
        if t.shape != shape {
            return Err(Error::ShapeMismatch {
                name: name.into(),
                expected: shape.to_vec(),
                got: t.shape.clone(),
            });
        }
        t.to_f32(name)
    }

    /// Replace or add a tensor (copy-on-write overlay).
    pub fn set(&mut self, name: &str, tensor: HostTensor) {
        self.entries.insert(name.to_string(), Entry::Owned(tensor));
    }

    /// Keep only rows `rows` (in the order given) of tensor `name` along its first dimension, in its stored
    /// encoding (e.g. vocabulary trimming of an embedding). An index past the end is an error naming the tensor.
    pub fn select_rows(&mut self, name: &str, rows: &[usize]) -> Result<()> {
        if let Some(q) = self.get_quant(name) {
            let selected = q.select_rows(rows).map_err(|problem| {
                Error::Runtime(format!("cannot select rows of tensor `{name}`: {problem}"))
            })?;
            self.set_quant(name, selected);
            return Ok(());
        }
        let t = self.get(name)?;
        let Some(&n) = t.shape.first() else {
            return Err(Error::Runtime(format!(
                "tensor `{name}` is a scalar and has no rows to select"
            )));
        };
        if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::Runtime(format!(
                "row {bad} of tensor `{name}` does not exist (it has {n} rows)"
            )));
        }
        let row_bytes = t.nbytes() / n.max(1);
        let src = t.bytes();
        let mut out = Vec::with_capacity(rows.len() * row_bytes);
        for &r in rows {
            out.extend_from_slice(&src[r * row_bytes..(r + 1) * row_bytes]);
        }
        let mut shape = t.shape.clone();
        shape[0] = rows.len();
        self.set(name, HostTensor::from_bytes(t.dtype, shape, out)?);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Option<HostTensor> {
        let t = self.get(name).ok();
        self.entries.remove(name);
        t
    }

    /// Whether the tensor was changed since loading.
    pub fn is_changed(&self, name: &str) -> bool {
        matches!(
            self.entries.get(name),
            Some(Entry::Owned(_) | Entry::Quant(_))
        )
    }

    /// The name the tensor carries on disk (prefix restored, head tensors unprefixed).
    pub fn disk_name(&self, config: &ModelConfig, canonical: &str) -> String {
        if self.prefix.is_empty() || config.is_head_tensor(canonical) {
            canonical.to_string()
        } else {
            format!("{}{canonical}", self.prefix)
        }
    }

    /// Total bytes of all tensors as stored now.
    pub fn total_bytes(&self) -> usize {
        self.entries.keys().map(|n| self.stored_bytes(n)).sum()
    }

    /// Compare the store with what `config` expects: every missing, unexpected and mis-shaped tensor.
    pub fn validate(&self, config: &ModelConfig) -> ValidationReport {
        let expected = config.expected_tensors();
        let mut report = ValidationReport::default();
        let mut known: BTreeSet<&str> = BTreeSet::new();
        let optional_groups_present = |spec: &TensorSpec| {
            // An optional group (the pooler's weight + bias) is all-or-nothing.
            expected
                .iter()
                .filter(|t| {
                    t.optional && t.role == spec.role && t.kind != crate::names::Kind::Buffer
                })
                .any(|t| self.contains(&t.name))
        };
        for spec in &expected {
            known.insert(&spec.name);
            match self.info(&spec.name) {
                None => {
                    let required = !spec.optional
                        || (spec.kind != crate::names::Kind::Buffer
                            && optional_groups_present(spec));
                    if required {
                        report.missing.push(spec.name.clone());
                    }
                }
                Some((dtype, shape)) => {
                    if shape != spec.shape {
                        report
                            .mis_shaped
                            .push((spec.name.clone(), spec.shape.clone(), shape));
                    }
                    if spec.kind != crate::names::Kind::Buffer && !dtype.is_float() {
                        report.bad_dtype.push((spec.name.clone(), dtype));
                    }
                }
            }
        }
        for name in self.names() {
            if !known.contains(name) && !is_tolerated_buffer(name) {
                report.unexpected.push(self.disk_like(name));
            }
        }
        report
    }

    fn disk_like(&self, canonical: &str) -> String {
        match self.entries.get(canonical) {
            Some(Entry::File { key, .. }) => key.clone(),
            _ => canonical.to_string(),
        }
    }

    /// `validate` as a `Result`.
    pub fn check(&self, config: &ModelConfig) -> Result<()> {
        let report = self.validate(config);
        if report.is_ok() {
            Ok(())
        } else {
            Err(Error::Invalid(report))
        }
    }

    /// Fail on the first float tensor holding NaN or Inf, naming it.
    pub fn check_finite(&self) -> Result<()> {
        for name in self.names() {
            self.get(name)?.check_finite(name)?;
        }
        Ok(())
    }

    /// The paths of the files backing the store.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }
}

/// Sizes of config.json that decide how much is allocated before the tensors are compared with the config, bounded
/// by what the tensors can hold: every encoder layer has at least one tensor of its own.
fn check_sizes(files: &[SafetensorsFile], config: &ModelConfig) -> Result<()> {
    let tensors: usize = files.iter().map(|f| f.tensors.len()).sum();
    let layers = config.bert().num_hidden_layers;
    if layers > tensors {
        return Err(Error::ConfigKey {
            path: config.path.clone(),
            key: "num_hidden_layers".into(),
            problem: format!(
                "is {}, but the checkpoint holds only {} tensor(s), fewer than one per layer",
                thousands(layers),
                thousands(tensors)
            ),
        });
    }
    Ok(())
}

/// Buffers that some BERT checkpoints carry and that are not parameters.
fn is_tolerated_buffer(name: &str) -> bool {
    name == "embeddings.token_type_ids"
}

/// The safetensors files of a checkpoint folder: `model.safetensors`, or the shards named by
/// `model.safetensors.index.json`. Pickle-only folders are refused.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let value = crate::arch::read_json(&index)?;
        let map = value
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::ConfigKey {
                path: index.clone(),
                key: "weight_map".into(),
                problem: "is missing or not an object".into(),
            })?;
        let mut shards: BTreeSet<String> = BTreeSet::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| Error::ConfigKey {
                path: index.clone(),
                key: format!("weight_map.{tensor}"),
                problem: "must be a file name".into(),
            })?;
            if file.contains('/') || file.contains("..") {
                return Err(Error::ConfigKey {
                    path: index.clone(),
                    key: format!("weight_map.{tensor}"),
                    problem: format!("`{file}` must be a file name inside the checkpoint folder"),
                });
            }
            shards.insert(file.to_string());
        }
        return Ok(shards.into_iter().map(|s| dir.join(s)).collect());
    }
    if dir.join("pytorch_model.bin").is_file() || dir.join("pytorch_model.bin.index.json").is_file()
    {
        return Err(Error::PickleCheckpoint {
            dir: dir.to_path_buf(),
        });
    }
    Err(Error::NoWeights {
        dir: dir.to_path_buf(),
    })
}
