//! GGUF, the single-file format of llama.cpp (ggml): a header of typed key-value metadata and tensor descriptions,
//! then the tensors' bytes, each aligned. Version 3, little-endian, as `gguf-py` writes it:
//!
//! ```text
//! magic "GGUF" · version u32 · tensor count u64 · metadata count u64
//! metadata: key (u64 length + UTF-8) · value type u32 · value (arrays: element type u32, count u64, elements)
//! tensors:  name · dimension count u32 · dimensions u64 (innermost first) · ggml type u32 · offset u64
//! padding to `general.alignment` (32) · tensor data, each tensor padded to the alignment
//! ```
//!
//! [`write`] streams: the header is written from the descriptions, then each tensor's bytes are asked for in turn,
//! so a writer holds one tensor at a time. [`GgufFile`] reads a file back (tests, `inspect`). The block encodings
//! are in [`blocks`]; the BERT layout llama.cpp loads is in [`bert`].

pub mod bert;
pub mod blocks;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use blocks::GgmlType;

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const VERSION: u32 = 3;
pub const ALIGNMENT: usize = 32;

/// A metadata value (the types the BERT layout uses).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
    F32Array(Vec<f32>),
    U32Array(Vec<u32>),
}

// gguf value type ids (gguf-py `GGUFValueType`).
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARR: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

impl Value {
    fn encode(&self, out: &mut Vec<u8>) {
        let array = |out: &mut Vec<u8>, elem: u32, n: usize| {
            out.extend_from_slice(&T_ARR.to_le_bytes());
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(n as u64).to_le_bytes());
        };
        match self {
            Value::U32(v) => {
                out.extend_from_slice(&T_U32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::I32(v) => {
                out.extend_from_slice(&T_I32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::F32(v) => {
                out.extend_from_slice(&T_F32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Bool(v) => {
                out.extend_from_slice(&T_BOOL.to_le_bytes());
                out.push(u8::from(*v));
            }
            Value::Str(s) => {
                out.extend_from_slice(&T_STR.to_le_bytes());
                put_str(out, s);
            }
            Value::StrArray(v) => {
                array(out, T_STR, v.len());
                for s in v {
                    put_str(out, s);
                }
            }
            Value::I32Array(v) => {
                array(out, T_I32, v.len());
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            Value::F32Array(v) => {
                array(out, T_F32, v.len());
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            Value::U32Array(v) => {
                array(out, T_U32, v.len());
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
        }
    }

    pub fn as_u32(&self) -> Option<u32> {
        match self {
            Value::U32(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One tensor's description. `dims` are in ggml order, innermost first: a PyTorch `[out, in]` weight is
/// `[in, out]` with the same row-major bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorInfo {
    pub fn elements(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    /// The bytes of the tensor's data (rows of `dims[0]` values in blocks of the type).
    pub fn bytes(&self) -> usize {
        let row = self.dims.first().copied().unwrap_or(1) as usize;
        let rows = self.elements() / row.max(1);
        rows * self.ty.row_bytes(row)
    }
}

fn pad(n: usize) -> usize {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// The header bytes of a file with these metadata and tensors (padded to the alignment).
pub fn header_bytes(metadata: &[(String, Value)], tensors: &[TensorInfo]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut out, key);
        value.encode(&mut out);
    }
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(t.ty as u32).to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += pad(t.bytes());
    }
    out.resize(pad(out.len()), 0);
    out
}

/// Write a GGUF file at `path` atomically (a temporary file beside it, renamed into place): the header, then
/// `data(i)` for each tensor in order, which must return exactly [`TensorInfo::bytes`] bytes. Returns the file's
/// size.
pub fn write(
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[TensorInfo],
    mut data: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<u64> {
    crate::fsio::write_replacing(
        path,
        |p: &Path, e| Error::io(p, e),
        |w| {
            let header = header_bytes(metadata, tensors);
            w.write_all(&header).map_err(|e| Error::io(path, e))?;
            let mut size = header.len() as u64;
            for (i, t) in tensors.iter().enumerate() {
                let bytes = data(i)?;
                if bytes.len() != t.bytes() {
                    return Err(Error::Runtime(format!(
                        "GGUF tensor `{}` ({}, dims {:?}): {} bytes given, {} expected",
                        t.name,
                        t.ty.name(),
                        t.dims,
                        bytes.len(),
                        t.bytes()
                    )));
                }
                let padding = pad(bytes.len()) - bytes.len();
                w.write_all(&bytes)
                    .and_then(|()| w.write_all(&[0u8; ALIGNMENT][..padding]))
                    .map_err(|e| Error::io(path, e))?;
                size += pad(bytes.len()) as u64;
            }
            Ok(size)
        },
    )
}

/// A GGUF file read back: its metadata and tensor descriptions, with each tensor's byte range.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<(TensorInfo, std::ops::Range<usize>)>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn str(&mut self) -> std::result::Result<String, String> {
        let n = self.u64()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| format!("a string before byte {} is not UTF-8", self.at))
    }
    fn scalar(&mut self, ty: u32) -> std::result::Result<Value, String> {
        Ok(match ty {
            T_U32 => Value::U32(self.u32()?),
            T_I32 => Value::I32(self.u32()? as i32),
            T_F32 => Value::F32(f32::from_bits(self.u32()?)),
            T_BOOL => Value::Bool(self.take(1)?[0] != 0),
            T_STR => Value::Str(self.str()?),
            // Types the BERT layout never writes are skipped over (read as their width) and kept as a note.
            T_U8 | T_I8 => Value::U32(u32::from(self.take(1)?[0])),
            T_U16 | T_I16 => Value::U32(u32::from(u16::from_le_bytes(self.array()?))),
            T_U64 | T_I64 | T_F64 => Value::U32(self.u64()? as u32),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
    fn value(&mut self) -> std::result::Result<Value, String> {
        let ty = self.u32()?;
        if ty != T_ARR {
            return self.scalar(ty);
        }
        let elem = self.u32()?;
        let n = self.u64()? as usize;
        if n > self.bytes.len() {
            return Err(format!("an array of {n} elements is longer than the file"));
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.scalar(elem)?);
        }
        Ok(match elem {
            T_STR => Value::StrArray(
                items
                    .into_iter()
                    .map(|v| match v {
                        Value::Str(s) => s,
                        _ => unreachable!("string arrays hold strings"),
                    })
                    .collect(),
            ),
            T_I32 => Value::I32Array(
                items
                    .into_iter()
                    .map(|v| match v {
                        Value::I32(x) => x,
                        _ => unreachable!("i32 arrays hold i32"),
                    })
                    .collect(),
            ),
            T_F32 => Value::F32Array(
                items
                    .into_iter()
                    .map(|v| match v {
                        Value::F32(x) => x,
                        _ => unreachable!("f32 arrays hold f32"),
                    })
                    .collect(),
            ),
            _ => Value::U32Array(items.iter().filter_map(Value::as_u32).collect()),
        })
    }
}

impl GgufFile {
    /// Parse the header of `bytes` (the whole file), checking that every tensor lies inside it.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |problem: String| Error::Safetensors {
            path: path.to_path_buf(),
            problem: format!("not a readable GGUF file: {problem}"),
        };
        let mut c = Cursor { bytes, at: 0 };
        if c.take(4).map_err(&bad)? != MAGIC {
            return Err(bad("no GGUF magic".into()));
        }
        let version = c.u32().map_err(&bad)?;
        let n_tensors = c.u64().map_err(&bad)? as usize;
        let n_kv = c.u64().map_err(&bad)? as usize;
        let mut metadata = Vec::new();
        for _ in 0..n_kv {
            let key = c.str().map_err(&bad)?;
            let value = c.value().map_err(&bad)?;
            metadata.push((key, value));
        }
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            let name = c.str().map_err(&bad)?;
            let n_dims = c.u32().map_err(&bad)? as usize;
            let dims = (0..n_dims.min(8))
                .map(|_| c.u64())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(&bad)?;
            let ty_id = c.u32().map_err(&bad)?;
            let ty = GgmlType::from_id(ty_id).ok_or_else(|| {
                bad(format!(
                    "tensor `{name}` has ggml type {ty_id}, which this reader does not know"
                ))
            })?;
            let offset = c.u64().map_err(&bad)? as usize;
            infos.push((TensorInfo { name, dims, ty }, offset));
        }
        let alignment = metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u32())
            .map_or(ALIGNMENT, |a| a as usize);
        let data_start = c.at.div_ceil(alignment) * alignment;
        let mut tensors = Vec::new();
        for (info, offset) in infos {
            let start = data_start + offset;
            let end = start + info.bytes();
            if end > bytes.len() {
                return Err(bad(format!(
                    "tensor `{}` ends at byte {end}, past the end of the file ({} bytes)",
                    info.name,
                    bytes.len()
                )));
            }
            tensors.push((info, start..end));
        }
        Ok(Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
        })
    }

    pub fn read(path: &Path) -> Result<(Self, Vec<u8>)> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Ok((Self::parse(path, &bytes)?, bytes))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&(TensorInfo, std::ops::Range<usize>)> {
        self.tensors.iter().find(|(t, _)| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_the_documented_one() {
        let meta = vec![
            (
                "general.architecture".to_string(),
                Value::Str("bert".into()),
            ),
            ("bert.block_count".to_string(), Value::U32(2)),
            (
                "t".to_string(),
                Value::StrArray(vec!["a".into(), "bc".into()]),
            ),
        ];
        let tensors = vec![TensorInfo {
            name: "x".into(),
            dims: vec![3, 2],
            ty: GgmlType::F32,
        }];
        let h = header_bytes(&meta, &tensors);
        let mut want = Vec::new();
        want.extend_from_slice(b"GGUF");
        want.extend_from_slice(&3u32.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&20u64.to_le_bytes());
        want.extend_from_slice(b"general.architecture");
        want.extend_from_slice(&8u32.to_le_bytes());
        want.extend_from_slice(&4u64.to_le_bytes());
        want.extend_from_slice(b"bert");
        want.extend_from_slice(&16u64.to_le_bytes());
        want.extend_from_slice(b"bert.block_count");
        want.extend_from_slice(&4u32.to_le_bytes());
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(b"t");
        want.extend_from_slice(&9u32.to_le_bytes());
        want.extend_from_slice(&8u32.to_le_bytes());
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(b"a");
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(b"bc");
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(b"x");
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(&0u32.to_le_bytes());
        want.extend_from_slice(&0u64.to_le_bytes());
        want.resize(want.len().div_ceil(32) * 32, 0);
        assert_eq!(h, want);
    }

    #[test]
    fn a_written_file_reads_back() {
        let dir = std::env::temp_dir().join(format!("gguf-rt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("ok");
        let path = dir.join("m.gguf");
        let meta = vec![
            ("a".to_string(), Value::Bool(true)),
            ("b".to_string(), Value::I32Array(vec![1, -2, 3])),
            ("c".to_string(), Value::F32(1e-12)),
        ];
        let tensors = vec![
            TensorInfo {
                name: "w".into(),
                dims: vec![32, 3],
                ty: GgmlType::Q8_0,
            },
            TensorInfo {
                name: "b".into(),
                dims: vec![5],
                ty: GgmlType::F32,
            },
        ];
        let size = write(&path, &meta, &tensors, |i| {
            Ok(vec![i as u8 + 1; tensors[i].bytes()])
        })
        .expect("ok");
        let (file, bytes) = GgufFile::read(&path).expect("ok");
        assert_eq!(size as usize, bytes.len());
        assert_eq!(file.metadata, meta);
        assert_eq!(file.tensors.len(), 2);
        let (w, wr) = &file.tensors[0];
        assert_eq!((w.bytes(), wr.len()), (3 * 34, 3 * 34));
        assert!(bytes[wr.clone()].iter().all(|&b| b == 1));
        let (_, br) = &file.tensors[1];
        assert_eq!(br.start % 32, 0);
        assert!(bytes[br.clone()].iter().all(|&b| b == 2));
        // A data callback of the wrong length is refused and leaves no file.
        let other = dir.join("bad.gguf");
        let err = write(&other, &meta, &tensors, |_| Ok(vec![0; 3])).expect_err("fails");
        assert!(
            err.to_string()
                .contains("GGUF tensor `w` (q8_0, dims [32, 3]): 3 bytes given, 102 expected"),
            "{err}"
        );
        assert!(!other.exists());
        assert_eq!(std::fs::read_dir(&dir).expect("ok").count(), 1);
        std::fs::remove_dir_all(&dir).expect("ok");
    }
}
