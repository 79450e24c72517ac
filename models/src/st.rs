//! Reading and writing safetensors files (https://github.com/huggingface/safetensors#format).
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON header
//! (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}`), then the data.
//! The reader checks every byte range against its shape and dtype before anything is read; the writer is
//! deterministic (tensors ordered by dtype size then name, header padded with spaces to 8 bytes).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::tensor::{DType, HostTensor};

/// A tensor's entry in a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte range inside the data section.
    pub begin: usize,
    pub end: usize,
}

/// One memory-mapped safetensors file with a checked header.
#[derive(Debug)]
pub struct SafetensorsFile {
    pub path: PathBuf,
    map: Arc<Mmap>,
    data_start: usize,
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is opened read-only and is never written by this process; a checkpoint modified by
        // another process while it is mapped is outside what we can guard against (as in every mmap loader).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (data_start, tensors, metadata) = parse_header(path, &map)?;
        Ok(Self {
            path: path.to_path_buf(),
            map: Arc::new(map),
            data_start,
            tensors,
            metadata,
        })
    }

    /// The tensor's bytes, shared with the mapping (no copy).
    pub fn tensor(&self, name: &str) -> Result<HostTensor> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::TensorNotFound {
                name: name.to_string(),
            })?;
        Ok(HostTensor::mapped(
            info.dtype,
            info.shape.clone(),
            self.map.clone(),
            self.data_start + info.begin,
            self.data_start + info.end,
        ))
    }
}

fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::Safetensors {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

type Header = (
    usize,
    BTreeMap<String, TensorInfo>,
    BTreeMap<String, String>,
);

/// Parse and check a whole safetensors buffer's header against the buffer's length.
pub fn parse_header(path: &Path, buf: &[u8]) -> Result<Header> {
    if buf.len() < 8 {
        return Err(bad(
            path,
            format!(
                "file is truncated: {} bytes, shorter than the 8-byte header length",
                buf.len()
            ),
        ));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&buf[..8]);
    let n = u64::from_le_bytes(len_bytes);
    let rest = (buf.len() - 8) as u64;
    if n > rest {
        return Err(bad(
            path,
            format!(
                "header length {n} runs past the end of the file ({} bytes); the file is truncated or not safetensors",
                buf.len()
            ),
        ));
    }
    let n = n as usize;
    let header: Value = serde_json::from_slice(&buf[8..8 + n])
        .map_err(|e| bad(path, format!("malformed header: {e}")))?;
    let Value::Object(header) = header else {
        return Err(bad(path, "malformed header: not a JSON object"));
    };
    let data_start = 8 + n;
    let data_len = buf.len() - data_start;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, entry) in header {
        if name == "__metadata__" {
            let Value::Object(m) = entry else {
                return Err(bad(
                    path,
                    "malformed header: `__metadata__` is not an object",
                ));
            };
            for (k, v) in m {
                let Value::String(v) = v else {
                    return Err(bad(
                        path,
                        format!("malformed header: `__metadata__.{k}` is not a string"),
                    ));
                };
                metadata.insert(k, v);
            }
            continue;
        }
        let info = parse_entry(&name, &entry)
            .map_err(|p| bad(path, format!("malformed header: tensor `{name}`: {p}")))?;
        let expected = info.shape.iter().product::<usize>() * info.dtype.size();
        if info.end < info.begin || info.end - info.begin != expected {
            return Err(bad(
                path,
                format!(
                    "tensor `{name}`: byte range {}..{} ({} bytes) does not match shape {:?} of {} ({expected} bytes)",
                    info.begin,
                    info.end,
                    info.end.saturating_sub(info.begin),
                    info.shape,
                    info.dtype
                ),
            ));
        }
        if info.end > data_len {
            return Err(bad(
                path,
                format!(
                    "tensor `{name}`: byte range {}..{} runs past the end of the data ({data_len} bytes); the file is truncated",
                    info.begin, info.end
                ),
            ));
        }
        tensors.insert(name, info);
    }
    Ok((data_start, tensors, metadata))
}

fn parse_entry(_name: &str, entry: &Value) -> std::result::Result<TensorInfo, String> {
    let obj = entry.as_object().ok_or("entry is not an object")?;
    let dtype_s = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("missing string `dtype`")?;
    let dtype = DType::parse(dtype_s).ok_or_else(|| format!("unknown dtype `{dtype_s}`"))?;
    let shape = obj
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("missing array `shape`")?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<Vec<_>>>()
        .ok_or("`shape` must hold non-negative integers")?;
    let offsets = obj
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or("missing array `data_offsets`")?;
    let (begin, end) = match offsets.as_slice() {
        [b, e] => (
            b.as_u64()
                .ok_or("`data_offsets` must hold two non-negative integers")? as usize,
            e.as_u64()
                .ok_or("`data_offsets` must hold two non-negative integers")? as usize,
        ),
        _ => return Err("`data_offsets` must hold two integers".into()),
    };
    Ok(TensorInfo {
        dtype,
        shape,
        begin,
        end,
    })
}

/// Serialize tensors to safetensors bytes, deterministically: ordered by dtype size (largest first, which
/// keeps every tensor aligned to its element size) then by name; header padded with spaces to 8 bytes.
pub fn serialize(tensors: &[(String, HostTensor)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut order: Vec<&(String, HostTensor)> = tensors.iter().collect();
    order.sort_by(|a, b| {
        b.1.dtype
            .size()
            .cmp(&a.1.dtype.size())
            .then_with(|| a.0.cmp(&b.0))
    });
    let mut header = Map::new();
    if !metadata.is_empty() {
        let m: Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), Value::Object(m));
    }
    let mut offset = 0usize;
    for (name, t) in &order {
        let end = offset + t.nbytes();
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": t.dtype.as_str(),
                "shape": t.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut header_bytes = Value::Object(header).to_string().into_bytes();
    while !(8 + header_bytes.len()).is_multiple_of(8) {
        header_bytes.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header_bytes.len() + offset);
    out.extend_from_slice(&(header_bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&header_bytes);
    for (_, t) in &order {
        out.extend_from_slice(t.bytes());
    }
    out
}

/// Write tensors to `path` (see [`serialize`]).
pub fn write(
    path: &Path,
    tensors: &[(String, HostTensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let bytes = serialize(tensors, metadata);
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}
