//! Reading and writing safetensors files (https://github.com/huggingface/safetensors#format).
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON header
//! (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}`), then the data.
//! The reader checks every byte range against its shape and dtype before anything is read, and the layout as a
//! whole: no name twice, no two tensors sharing a byte, no byte of the data outside a tensor (the rules of the
//! reference `safetensors` crate). The writer is deterministic (tensors ordered by dtype size then name, header
//! padded with spaces to 8 bytes).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
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

/// At most this many layout problems are listed in one error.
const LISTED: usize = 10;

/// A JSON value in which no object holds a key twice (deserializing one that does is an error naming the key).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Strict, E> {
                Ok(Strict(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Strict, E> {
                Ok(Strict(
                    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
                ))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Strict, E> {
                Ok(Strict(Value::String(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Strict, E> {
                Ok(Strict(Value::String(v)))
            }
            fn visit_unit<E>(self) -> std::result::Result<Strict, E> {
                Ok(Strict(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Strict, A::Error> {
                let mut out = Vec::new();
                while let Some(Strict(v)) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Strict(Value::Array(out)))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Strict, A::Error> {
                let mut out = Map::new();
                while let Some((k, Strict(v))) = m.next_entry::<String, Strict>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!(
                            "key `{k}` appears more than once in one object (a reader would keep one of them and drop the other)"
                        )));
                    }
                    out.insert(k, v);
                }
                Ok(Strict(Value::Object(out)))
            }
        }
        d.deserialize_any(V)
    }
}

/// `items` joined with `sep`, at most [`LISTED`] of them, then `... and N more`.
fn capped(items: &[String], sep: &str) -> String {
    let mut shown: Vec<String> = items.iter().take(LISTED).cloned().collect();
    if items.len() > LISTED {
        shown.push(format!("... and {} more", items.len() - LISTED));
    }
    shown.join(sep)
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
    let Strict(header) = serde_json::from_slice(&buf[8..8 + n])
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
        let Some(expected) = info
            .shape
            .iter()
            .try_fold(info.dtype.size(), |acc, &d| acc.checked_mul(d))
        else {
            return Err(bad(
                path,
                format!(
                    "tensor `{name}`: shape {:?} of {} holds more bytes than any file can (its size overflows)",
                    info.shape, info.dtype
                ),
            ));
        };
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
    let problems = layout_problems(&tensors, data_len);
    if !problems.is_empty() {
        let text = if problems.len() == 1 {
            problems[0].clone()
        } else {
            format!(
                "{} layout problems:\n  {}",
                problems.len(),
                capped(&problems, "\n  ")
            )
        };
        return Err(bad(path, text));
    }
    Ok((data_start, tensors, metadata))
}

/// What is wrong with how the tensors tile the data: two tensors sharing bytes (aliased: the same range; or
/// overlapping), bytes no tensor covers (a gap), and bytes after the last tensor (a shifted data region or trailing
/// bytes). Empty tensors take no bytes and are not part of the tiling.
fn layout_problems(tensors: &BTreeMap<String, TensorInfo>, data_len: usize) -> Vec<String> {
    let mut ranges: Vec<(&String, &TensorInfo)> =
        tensors.iter().filter(|(_, t)| t.end > t.begin).collect();
    ranges.sort_by_key(|(name, t)| (t.begin, t.end, *name));
    let mut problems = Vec::new();
    let mut cursor = 0usize;
    let mut last: Option<(&String, &TensorInfo)> = None;
    for &(name, t) in &ranges {
        match last {
            Some((prev, p)) if t.begin < cursor => problems.push(if (p.begin, p.end) == (t.begin, t.end) {
                format!(
                    "tensors `{prev}` and `{name}` alias the same bytes {}..{}; each tensor needs its own bytes",
                    t.begin, t.end
                )
            } else {
                format!(
                    "tensors `{prev}` ({}..{}) and `{name}` ({}..{}) overlap; each tensor needs its own bytes",
                    p.begin, p.end, t.begin, t.end
                )
            }),
            _ if t.begin > cursor => problems.push(format!(
                "bytes {cursor}..{} of the data belong to no tensor (a gap before `{name}`)",
                t.begin
            )),
            _ => {}
        }
        if t.end > cursor {
            cursor = t.end;
            last = Some((name, t));
        }
    }
    if cursor < data_len {
        problems.push(format!(
            "the data holds {} byte(s) after its last tensor{} ({cursor}..{data_len}): the data region is shifted, or bytes were appended",
            data_len - cursor,
            last.map(|(n, _)| format!(" `{n}`")).unwrap_or_default()
        ));
    }
    problems
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

/// The header (length prefix included) of a safetensors file of `tensors` and the order their bytes follow it,
/// deterministically: ordered by dtype size (largest first, which keeps every tensor aligned to its element size)
/// then by name; header padded with spaces to 8 bytes.
pub fn layout<'a>(
    tensors: &'a [(String, HostTensor)],
    metadata: &BTreeMap<String, String>,
) -> (Vec<u8>, Vec<&'a (String, HostTensor)>) {
    layout_of(tensors, metadata)
}

/// What [`layout`] reads of a tensor: its dtype, shape and byte count.
pub trait Described {
    fn dtype(&self) -> DType;
    fn shape(&self) -> &[usize];
    fn nbytes(&self) -> usize;
}

impl Described for HostTensor {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn nbytes(&self) -> usize {
        HostTensor::nbytes(self)
    }
}

/// A tensor of a file being written: its bytes now, or made when they are written (so that a large derived tensor,
/// such as packed integer codes, is held only while it is copied).
pub enum Part<'a> {
    Ready(HostTensor),
    Later {
        dtype: DType,
        shape: Vec<usize>,
        make: Box<dyn Fn() -> Result<HostTensor> + 'a>,
    },
}

impl Described for Part<'_> {
    fn dtype(&self) -> DType {
        match self {
            Part::Ready(t) => t.dtype,
            Part::Later { dtype, .. } => *dtype,
        }
    }
    fn shape(&self) -> &[usize] {
        match self {
            Part::Ready(t) => &t.shape,
            Part::Later { shape, .. } => shape,
        }
    }
    fn nbytes(&self) -> usize {
        match self {
            Part::Ready(t) => t.nbytes(),
            Part::Later { dtype, shape, .. } => dtype.size() * shape.iter().product::<usize>(),
        }
    }
}

fn layout_of<'a, T: Described>(
    tensors: &'a [(String, T)],
    metadata: &BTreeMap<String, String>,
) -> (Vec<u8>, Vec<&'a (String, T)>) {
    let mut order: Vec<&(String, T)> = tensors.iter().collect();
    order.sort_by(|a, b| {
        b.1.dtype()
            .size()
            .cmp(&a.1.dtype().size())
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
                "dtype": t.dtype().as_str(),
                "shape": t.shape(),
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut header_bytes = Value::Object(header).to_string().into_bytes();
    while !(8 + header_bytes.len()).is_multiple_of(8) {
        header_bytes.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header_bytes.len());
    out.extend_from_slice(&(header_bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&header_bytes);
    (out, order)
}

/// Serialize tensors to safetensors bytes in memory ([`layout`]'s order).
pub fn serialize(tensors: &[(String, HostTensor)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let (mut out, order) = layout(tensors, metadata);
    for (_, t) in &order {
        out.extend_from_slice(t.bytes());
    }
    out
}

/// Stream the safetensors file of `tensors` into `w` (the bytes of [`serialize`], without holding them): the
/// header, then each tensor in slices of 8 MiB. `visit(name, tensor, Some(slice))` sees every slice as it is
/// written and `visit(name, tensor, None)` follows the tensor's last; each slice's mapped input pages are then
/// released ([`HostTensor::release_range`]), so that a copy of a large checkpoint does not keep it resident.
pub fn write_to(
    w: &mut impl Write,
    tensors: &[(String, HostTensor)],
    metadata: &BTreeMap<String, String>,
    mut visit: impl FnMut(&str, &HostTensor, Option<&[u8]>),
) -> std::io::Result<u64> {
    let (header, order) = layout(tensors, metadata);
    w.write_all(&header)?;
    let mut n = header.len() as u64;
    for (name, t) in order {
        n += copy_tensor(w, name, t, &mut visit)?;
    }
    Ok(n)
}

/// [`write_to`] of parts, each `Later` part made just before it is written and dropped after: the same bytes as
/// [`write_to`] of the made tensors.
pub fn write_parts_to(
    w: &mut impl Write,
    parts: &[(String, Part<'_>)],
    metadata: &BTreeMap<String, String>,
    mut visit: impl FnMut(&str, &HostTensor, Option<&[u8]>),
) -> std::io::Result<u64> {
    let (header, order) = layout_of(parts, metadata);
    w.write_all(&header)?;
    let mut n = header.len() as u64;
    for (name, part) in order {
        n += match part {
            Part::Ready(t) => copy_tensor(w, name, t, &mut visit)?,
            Part::Later { make, .. } => {
                let t = make().map_err(std::io::Error::other)?;
                if t.nbytes() != part.nbytes() {
                    return Err(std::io::Error::other(format!(
                        "tensor `{name}` was made with {} bytes where its header says {}",
                        t.nbytes(),
                        part.nbytes()
                    )));
                }
                copy_tensor(w, name, &t, &mut visit)?
            }
        };
    }
    Ok(n)
}

/// Copy one tensor in 8 MiB slices, releasing its mapped pages behind it; returns its bytes.
fn copy_tensor(
    w: &mut impl Write,
    name: &str,
    t: &HostTensor,
    visit: &mut impl FnMut(&str, &HostTensor, Option<&[u8]>),
) -> std::io::Result<u64> {
    let mut at = 0;
    for slice in t.bytes().chunks(8 << 20) {
        w.write_all(slice)?;
        visit(name, t, Some(slice));
        t.release_range(at, at + slice.len());
        at += slice.len();
    }
    visit(name, t, None);
    Ok(t.nbytes() as u64)
}

/// Write tensors to `path` (see [`serialize`]).
pub fn write(
    path: &Path,
    tensors: &[(String, HostTensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    // Renamed over `path`: the tensors may be mapped from the very file being replaced.
    crate::fsio::write_replacing(
        path,
        |p: &Path, e| Error::io(p, e),
        |w| write_to(w, tensors, metadata, |_, _, _| {}).map_err(|e| Error::io(path, e)),
    )
    .map(|_| ())
}
