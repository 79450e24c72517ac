//! Host tensors: a dtype, a shape and little-endian bytes, either memory-mapped from a checkpoint or owned.

use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;

use crate::error::{Error, Result};

/// Element types found in safetensors files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// The safetensors header spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F64" => DType::F64,
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "I64" => DType::I64,
            "I32" => DType::I32,
            "I16" => DType::I16,
            "I8" => DType::I8,
            "U8" => DType::U8,
            "BOOL" => DType::Bool,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
enum Bytes {
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        end: usize,
    },
    Owned(Arc<Vec<u8>>),
}

/// A tensor on the host: dtype, shape and its little-endian bytes. Cloning is cheap (shared bytes).
#[derive(Debug, Clone)]
pub struct HostTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    bytes: Bytes,
}

impl HostTensor {
    pub(crate) fn mapped(
        dtype: DType,
        shape: Vec<usize>,
        map: Arc<Mmap>,
        start: usize,
        end: usize,
    ) -> Self {
        Self {
            dtype,
            shape,
            bytes: Bytes::Mapped { map, start, end },
        }
    }

    /// An owned tensor; `bytes.len()` must equal `numel * dtype.size()`.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Self> {
        let expected = shape.iter().product::<usize>() * dtype.size();
        if bytes.len() != expected {
            return Err(Error::Runtime(format!(
                "tensor of shape {shape:?} and dtype {dtype} needs {expected} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(Self {
            dtype,
            shape,
            bytes: Bytes::Owned(Arc::new(bytes)),
        })
    }

    /// An owned tensor of `dtype` holding `values` (rounded to nearest for f16/bf16).
    pub fn from_f32(shape: Vec<usize>, values: &[f32], dtype: DType) -> Result<Self> {
        let bytes = encode_floats(values, dtype)?;
        Self::from_bytes(dtype, shape, bytes)
    }

    pub fn from_i64(shape: Vec<usize>, values: &[i64]) -> Result<Self> {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_bytes(DType::I64, shape, bytes)
    }

    /// Let the kernel drop this tensor's pages of a memory-mapped checkpoint from the process (they are read from
    /// the file again if used again); nothing for owned tensors. Called once a tensor has been read or copied, so
    /// that a pass over a large checkpoint holds about one tensor of it at a time.
    pub fn release_pages(&self) {
        self.release_range(0, self.nbytes());
    }

    /// [`HostTensor::release_pages`] for the bytes `from..to` of this tensor only (a tensor read in chunks).
    pub fn release_range(&self, from: usize, to: usize) {
        if let Bytes::Mapped { map, start, end } = &self.bytes {
            let (a, b) = ((start + from).min(*end), (start + to).min(*end));
            if a >= b {
                return;
            }
            // SAFETY: the mapping is read-only and file-backed (MAP_SHARED); MADV_DONTNEED only drops its pages
            // from this process, and later reads fault them back in from the file unchanged.
            #[cfg(unix)]
            unsafe {
                let _ = map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a);
            }
            #[cfg(not(unix))]
            let _ = (map, a, b);
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped { map, start, end } => &map[*start..*end],
            Bytes::Owned(v) => v,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn nbytes(&self) -> usize {
        self.bytes().len()
    }

    /// The values widened to f32; `name` is used in the error for non-float dtypes.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.numel());
        if decode_floats(self.dtype, self.bytes(), &mut out) {
            return Ok(out);
        }
        Err(Error::UnsupportedDtype {
            name: name.to_string(),
            dtype: self.dtype.to_string(),
            purpose: "a float computation",
        })
    }

    /// Integer values widened to i64.
    pub fn to_i64(&self, name: &str) -> Result<Vec<i64>> {
        let b = self.bytes();
        Ok(match self.dtype {
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            DType::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DType::I8 => b.iter().map(|&v| v as i8 as i64).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&v| v as i64).collect(),
            other => {
                return Err(Error::UnsupportedDtype {
                    name: name.to_string(),
                    dtype: other.to_string(),
                    purpose: "an integer computation",
                })
            }
        })
    }

    /// Convert a float tensor to another float dtype (round to nearest even).
    pub fn cast(&self, name: &str, dtype: DType) -> Result<Self> {
        if dtype == self.dtype {
            return Ok(self.clone());
        }
        let values = self.to_f32(name)?;
        Self::from_f32(self.shape.clone(), &values, dtype)
    }

    /// Count and locate NaN / Inf values of a float tensor.
    pub fn check_finite(&self, name: &str) -> Result<()> {
        if !self.dtype.is_float() {
            return Ok(());
        }
        // In chunks of about 4 MiB, each decoded, checked and its mapped pages released: a large tensor is never
        // held whole, as floats or as resident pages.
        let size = self.dtype.size();
        let chunk = ((4 << 20) / size) * size;
        let (mut found, mut count, mut values) = (None, 0usize, Vec::new());
        for (c, bytes) in self.bytes().chunks(chunk).enumerate() {
            decode_floats(self.dtype, bytes, &mut values);
            for (i, &v) in values.iter().enumerate() {
                if !v.is_finite() {
                    found.get_or_insert((c * chunk / size + i, v));
                    count += 1;
                }
            }
            self.release_range(c * chunk, c * chunk + bytes.len());
        }
        match found {
            Some((index, first)) => Err(Error::NonFinite {
                name: name.to_string(),
                count,
                first,
                index,
            }),
            None => Ok(()),
        }
    }
}

/// Decode little-endian floats of `dtype` into `out` (cleared first); false for a dtype that is not a float.
fn decode_floats(dtype: DType, b: &[u8], out: &mut Vec<f32>) -> bool {
    out.clear();
    match dtype {
        DType::F32 => out.extend(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        DType::F16 => out.extend(
            b.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        DType::BF16 => out.extend(
            b.chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        DType::F64 => {
            out.extend(b.chunks_exact(8).map(|c| {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }))
        }
        _ => return false,
    }
    true
}

fn encode_floats(values: &[f32], dtype: DType) -> Result<Vec<u8>> {
    Ok(match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        DType::F64 => values
            .iter()
            .flat_map(|&v| (v as f64).to_le_bytes())
            .collect(),
        other => {
            return Err(Error::Runtime(format!(
                "cannot store float values as {other}"
            )))
        }
    })
}

/// Looks up the part of a stored tensor by its full name (the readers of `forms` and `quant::ct` take one).
pub type PartOf<'a> = dyn Fn(&str) -> Option<HostTensor> + 'a;

/// A row-major `[rows, cols]` matrix as row-major `[cols, rows]` (HF `[out, in]` weights for `x W` products: the
/// runtime's burn Linears and the ONNX graph's MatMuls; the trainers' `[in, out]` values back to checkpoint layout).
pub fn transposed<T: Copy + Default>(w: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::default(); w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_and_bf16_round_trip_within_their_precision() -> Result<()> {
        let v = [0.1f32, -2.5, 1e-3, 65504.0];
        for dt in [DType::F16, DType::BF16] {
            let t = HostTensor::from_f32(vec![4], &v, dt)?;
            assert_eq!(t.nbytes(), 8);
            let back = t.to_f32("t")?;
            for (a, b) in v.iter().zip(&back) {
                let tol = if dt == DType::F16 { 1e-3 } else { 8e-3 };
                assert!((a - b).abs() <= tol * a.abs().max(1e-3), "{dt}: {a} vs {b}");
            }
        }
        Ok(())
    }

    #[test]
    fn non_finite_values_are_reported_with_the_tensor_name() -> Result<()> {
        let t = HostTensor::from_f32(vec![3], &[1.0, f32::NAN, f32::INFINITY], DType::F32)?;
        let err = t
            .check_finite("encoder.layer.0.output.dense.weight")
            .expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "tensor `encoder.layer.0.output.dense.weight` holds 2 non-finite value(s) (first: NaN at flat index 1)\nhint: the checkpoint is corrupt or was saved after a diverged training step"
        );
        Ok(())
    }
}
