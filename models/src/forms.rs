//! Storage forms: every way one parameter matrix can be stored, one row each.
//!
//! | form | parts of `B` (`B` = `M.weight`) | bytes |
//! |---|---|---|
//! | dense | `B` (F32 / F16 / BF16) | `numel * dtype size` |
//! | quantized | `B_packed` I32, `B_scale`, `B_shape` I64 `[2]`, `B_zero_point` I32 (asymmetric); or int8 `B` + `B_scale` (read only) | [`Encoding::stored_bytes`] |
//! | low-rank | `B = U V`: `B_u` `[out, r]` and `B_v` `[r, in]`, each dense, or quantized as `B_u_packed`, `B_u_scale`, ... | bytes of U + bytes of V |
//! | sparse bitmask | `B_bitmask` U8 `[out, ceil(in / 8)]`, `B_values` `[nnz]` (dense dtype) or quantized values (below), `B_shape` I64 `[2]` | `out * ceil(in / 8) + values + 16` |
//! | sparse 2:4 | `B_values` `[out, in / 2]` (dense dtype) or quantized values (below), `B_indices` U8 `[out, ceil(in / 8)]`, `B_shape` I64 `[2]` | `out * ceil(in / 8) + values + 16` |
//!
//! Quantized sparse values: `B_values_packed` I32 holds the codes of the stored values only, in their order
//! (bitmask: `[ceil(nnz * bits / 32)]`; 2:4: `[out, ceil(in / 2 * bits / 32)]`, each row starting a new word), packed
//! as compressed-tensors packs codes; `B_values_scale` and `B_values_zero_point` (asymmetric) are the scales and zero
//! points of the whole `[out, in]` matrix in its encoding (a stored value at `(r, c)` uses the scale of `(r, c)`).
//! The encoding is in the [`METADATA_KEY`] description. Pruned elements are not stored and decode to exactly 0.
//!
//! Each row is a variant of [`Stored`] with a writer ([`Stored::write_parts`]), a reader ([`Stored::read`]), an
//! exact byte count ([`Stored::stored_bytes`], the bytes of the parts as written) and a decoder to dense
//! ([`Stored::to_dense`]). [`Form`] is the metadata mirror (what a planner knows without the values), with
//! [`Form::bytes`]. [`FormKind::parts`] lists the part suffixes of each row; the store identifies a form from the
//! names it finds ([`FormKind::identify`]).
//!
//! Bit orders: a bitmask row is little-endian (column `8 b + j` is bit `j` of byte `b`), 1 = kept, and each row
//! starts a new byte. A 2:4 row holds, for each group of 4 consecutive columns, 2 values and their 2-bit positions
//! in the group (ascending); the positions are packed 4 per byte, little-endian (index `i` of a row is bits
//! `2 (i % 4) ..` of byte `i / 4`), and each row starts a new byte. A group with fewer than 2 non-zeros stores
//! zeros at its lowest free positions.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::quant::{
    ct, pack_codes, pack_codes_rows, packed_words, unpack_codes, Encoding, QuantTensor,
};
use crate::tensor::{DType, HostTensor};

/// The safetensors `__metadata__` key of our artifacts that describes every tensor stored low-rank or sparse
/// (a JSON object: on-disk tensor name -> [`Form`]). The parts' names identify the form; the description carries
/// what they cannot say: the encodings of quantized low-rank factors (compressed-tensors' `quantization_config`
/// describes modules, and a factor is none).
pub const METADATA_KEY: &str = "compressor_forms";

/// A reader's complaint: the tensor (`M.weight`), the form it is stored in and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor `{name}` stored {}: {problem}", kind.name())]
pub struct FormError {
    pub name: String,
    pub kind: FormKind,
    pub problem: String,
}

/// The rows of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormKind {
    Dense,
    Quant,
    LowRank,
    Bitmask,
    TwoFour,
}

impl FormKind {
    pub const ALL: [FormKind; 5] = [
        FormKind::Dense,
        FormKind::Quant,
        FormKind::LowRank,
        FormKind::Bitmask,
        FormKind::TwoFour,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FormKind::Dense => "dense",
            FormKind::Quant => "quantized",
            FormKind::LowRank => "low-rank",
            FormKind::Bitmask => "sparse (bitmask)",
            FormKind::TwoFour => "sparse (2:4)",
        }
    }

    /// The suffixes of `B` this form writes (low-rank: also `_u` / `_v` followed by a quantized part).
    pub fn parts(self) -> &'static [&'static str] {
        match self {
            FormKind::Dense => &[""],
            FormKind::Quant => &ct::PARTS,
            FormKind::LowRank => &["_u", "_v"],
            FormKind::Bitmask => &[
                "_bitmask",
                "_values",
                "_shape",
                "_values_packed",
                "_values_scale",
                "_values_zero_point",
            ],
            FormKind::TwoFour => &[
                "_indices",
                "_values",
                "_shape",
                "_values_packed",
                "_values_scale",
                "_values_zero_point",
            ],
        }
    }

    /// The part whose presence identifies the form.
    fn key(self) -> &'static str {
        self.parts()[0]
    }

    /// Whether `suffix` is one of this form's parts.
    fn claims(self, suffix: &str) -> bool {
        match self {
            FormKind::LowRank => ["_u", "_v"].iter().any(|f| {
                suffix == *f
                    || suffix
                        .strip_prefix(f)
                        .is_some_and(|rest| ct::PARTS.contains(&rest))
            }),
            _ => self.parts().contains(&suffix),
        }
    }

    /// Which non-dense form the part suffixes found for one tensor make up. `int8` says the tensor itself is an
    /// int8 matrix (compressed-tensors `int-quantized`: codes under `B`, scales under `B_scale`). The error names
    /// the suffix that belongs to no form or the two forms that were mixed.
    pub fn identify(suffixes: &BTreeSet<String>, int8: bool) -> std::result::Result<Self, String> {
        let keyed: Vec<FormKind> = FormKind::ALL[1..]
            .iter()
            .copied()
            .filter(|k| match k {
                FormKind::LowRank => suffixes.iter().any(|s| s.starts_with("_u")),
                _ => suffixes.contains(k.key()),
            })
            .collect();
        let kind = match keyed[..] {
            [k] => k,
            [] if int8 => FormKind::Quant,
            [] => {
                // `_shape` is shared by three forms: name the one the other parts point to.
                let owned = |k: FormKind| suffixes.iter().find(|s| k.claims(s) && *s != "_shape");
                let (owner, s) = [FormKind::LowRank, FormKind::Bitmask, FormKind::Quant]
                    .into_iter()
                    .find_map(|k| owned(k).map(|s| (k, s.as_str())))
                    .unwrap_or((FormKind::Quant, "_shape"));
                let needs = match owner {
                    FormKind::Quant => "`weight_packed` (or int8 `weight`)".to_string(),
                    FormKind::LowRank => "`weight_u`".to_string(),
                    _ => "`weight_bitmask` or `weight_indices`".to_string(),
                };
                return Err(format!(
                    "`weight{s}` is a {} part without its {needs}",
                    owner.name()
                ));
            }
            [a, b, ..] => {
                return Err(format!(
                    "holds parts of two forms: {} (`weight{}`) and {} (`weight{}`)",
                    a.name(),
                    a.key(),
                    b.name(),
                    b.key()
                ))
            }
        };
        if let Some(s) = suffixes.iter().find(|s| !kind.claims(s)) {
            return Err(format!(
                "`weight{s}` is not a part of its {} form (parts: {})",
                kind.name(),
                kind.parts()
                    .iter()
                    .map(|p| format!("`weight{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(kind)
    }
}

/// Split a part name into the tensor it belongs to and its suffix: `M.weight_u_packed` -> (`M.weight`,
/// `_u_packed`). `None` for names that are no part of any form (`M.weight`, `M.bias`, unknown suffixes).
pub fn split_part(name: &str) -> Option<(&str, &str)> {
    let at = name.rfind(".weight_")? + ".weight".len();
    let (base, suffix) = name.split_at(at);
    FormKind::ALL[1..]
        .iter()
        .any(|k| k.claims(suffix))
        .then_some((base, suffix))
}

/// How one factor of a low-rank matrix is stored (also the request of [`Factor::from_f32`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "kebab-case")]
pub enum FactorForm {
    Dense {
        #[serde(with = "crate::quant::dtype_name")]
        dtype: DType,
    },
    Quant {
        encoding: Encoding,
    },
}

impl FactorForm {
    /// Bytes of a `[rows, cols]` factor in this form.
    pub fn bytes(&self, rows: usize, cols: usize) -> usize {
        match self {
            FactorForm::Dense { dtype } => rows * cols * dtype.size(),
            FactorForm::Quant { encoding } => encoding.stored_bytes(rows, cols),
        }
    }

    fn describe(&self) -> String {
        match self {
            FactorForm::Dense { dtype } => dtype.to_string(),
            FactorForm::Quant { encoding } => format!("{}-bit", encoding.bits),
        }
    }
}

/// Where the non-zeros of a sparse matrix may lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SparsePattern {
    /// Anywhere: a bitmask says which.
    Bitmask,
    /// At most 2 in every group of 4 consecutive elements of a row.
    TwoFour,
}

/// What is known of a stored tensor without its values: the metadata mirror of [`Stored`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "kebab-case")]
pub enum Form {
    Dense {
        #[serde(with = "crate::quant::dtype_name")]
        dtype: DType,
    },
    Quant {
        encoding: Encoding,
    },
    LowRank {
        rank: usize,
        u: FactorForm,
        v: FactorForm,
    },
    Sparse {
        pattern: SparsePattern,
        /// Values stored: the kept elements (bitmask) or `out * in / 2` (2:4).
        nnz: usize,
        /// The dtype the matrix decodes to: the values' own (dense values) or F32 (quantized values).
        #[serde(with = "crate::quant::dtype_name")]
        dtype: DType,
        /// The encoding of quantized values (`None`: the values are stored in `dtype`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<Encoding>,
    },
}

/// `[out, in]` of a shape (a vector is one row).
fn matrix(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (1, *n),
        [r, rest @ ..] => (*r, rest.iter().product()),
    }
}

impl Form {
    pub fn kind(&self) -> FormKind {
        match self {
            Form::Dense { .. } => FormKind::Dense,
            Form::Quant { .. } => FormKind::Quant,
            Form::LowRank { .. } => FormKind::LowRank,
            Form::Sparse {
                pattern: SparsePattern::Bitmask,
                ..
            } => FormKind::Bitmask,
            Form::Sparse {
                pattern: SparsePattern::TwoFour,
                ..
            } => FormKind::TwoFour,
        }
    }

    /// Bytes on disk of a tensor of (dense) `shape` in this form: the sum of its parts.
    pub fn bytes(&self, shape: &[usize]) -> usize {
        let (rows, cols) = matrix(shape);
        match self {
            Form::Dense { dtype } => rows * cols * dtype.size(),
            Form::Quant { encoding } => encoding.stored_bytes(rows, cols),
            Form::LowRank { rank, u, v } => u.bytes(rows, *rank) + v.bytes(*rank, cols),
            Form::Sparse {
                pattern,
                nnz,
                dtype,
                encoding,
            } => {
                // The mask or the 2-bit positions take one bit per column; `_shape` is two int64.
                let mask = rows * cols.div_ceil(8);
                let values = match (pattern, encoding) {
                    (SparsePattern::Bitmask, None) => nnz * dtype.size(),
                    (SparsePattern::TwoFour, None) => rows * (cols / 2) * dtype.size(),
                    (SparsePattern::Bitmask, Some(e)) => {
                        packed_words(*nnz, e.bits) * 4 + e.scale_bytes(rows, cols)
                    }
                    (SparsePattern::TwoFour, Some(e)) => {
                        rows * packed_words(cols / 2, e.bits) * 4 + e.scale_bytes(rows, cols)
                    }
                };
                mask + values + 16
            }
        }
    }

    /// The form after every float part (a dense tensor, dense low-rank factors, dense sparse values) is stored in
    /// `dtype`; integer codes stay. Equal to `self` when nothing would change.
    pub fn with_float_dtype(self, dtype: DType) -> Form {
        let factor = |f: FactorForm| match f {
            FactorForm::Dense { .. } => FactorForm::Dense { dtype },
            q => q,
        };
        match self {
            Form::Dense { .. } => Form::Dense { dtype },
            Form::LowRank { rank, u, v } => Form::LowRank {
                rank,
                u: factor(u),
                v: factor(v),
            },
            Form::Sparse {
                pattern,
                nnz,
                encoding: None,
                ..
            } => Form::Sparse {
                pattern,
                nnz,
                dtype,
                encoding: None,
            },
            other => other,
        }
    }

    /// The integer encoding of a quantized tensor (`None` for every other form, low-rank factors included).
    pub fn encoding(&self) -> Option<Encoding> {
        match self {
            Form::Quant { encoding } => Some(*encoding),
            _ => None,
        }
    }

    /// Short human description for a tensor of (dense) `shape`: `F32`, `4-bit group 128`, `low-rank r=64`,
    /// `sparse 50.0%` (the share of zeros), `2:4`.
    pub fn describe(&self, shape: &[usize]) -> String {
        let (rows, cols) = matrix(shape);
        match self {
            Form::Dense { dtype } => dtype.to_string(),
            Form::Quant { encoding } => {
                format!("{}-bit {}", encoding.bits, encoding.strategy.describe())
            }
            Form::LowRank { rank, u, v } => {
                let (u, v) = (u.describe(), v.describe());
                if u == v {
                    format!("low-rank r={rank} {u}")
                } else {
                    format!("low-rank r={rank} {u}/{v}")
                }
            }
            Form::Sparse {
                pattern,
                nnz,
                dtype,
                encoding,
            } => {
                let values = match encoding {
                    Some(e) => format!("{}-bit {}", e.bits, e.strategy.describe()),
                    None => dtype.to_string(),
                };
                match pattern {
                    SparsePattern::Bitmask => {
                        let n = (rows * cols).max(1) as f64;
                        format!("sparse {:.1}% {values}", 100.0 * (1.0 - *nnz as f64 / n))
                    }
                    SparsePattern::TwoFour => format!("2:4 {values}"),
                }
            }
        }
    }
}

/// One factor of a low-rank matrix: a dense float matrix or integer codes.
#[derive(Debug, Clone)]
pub enum Factor {
    Dense(HostTensor),
    Quant(Arc<QuantTensor>),
}

impl Factor {
    /// Store a row-major `[rows, cols]` f32 matrix as `form` asks (rounded to its dtype, or quantized).
    pub fn from_f32(
        values: &[f32],
        rows: usize,
        cols: usize,
        form: FactorForm,
    ) -> std::result::Result<Self, String> {
        if values.len() != rows * cols {
            return Err(format!(
                "{} values do not fill a [{rows}, {cols}] factor",
                values.len()
            ));
        }
        match form {
            FactorForm::Dense { dtype } => {
                if !is_stored_float(dtype) {
                    return Err(format!("a factor cannot be stored as {dtype}"));
                }
                HostTensor::from_f32(vec![rows, cols], values, dtype)
                    .map(Factor::Dense)
                    .map_err(|e| e.to_string())
            }
            FactorForm::Quant { encoding } => QuantTensor::quantize(values, rows, cols, encoding)
                .map(|q| Factor::Quant(Arc::new(q))),
        }
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Factor::Dense(t) => matrix(&t.shape),
            Factor::Quant(q) => (q.rows, q.cols),
        }
    }

    pub fn form(&self) -> FactorForm {
        match self {
            Factor::Dense(t) => FactorForm::Dense { dtype: t.dtype },
            Factor::Quant(q) => FactorForm::Quant {
                encoding: q.encoding,
            },
        }
    }

    /// The decoded values, row-major.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        match self {
            Factor::Dense(t) => t.to_f32(name),
            Factor::Quant(q) => Ok(q.dequantize()),
        }
    }

    fn write_parts(&self, base: &str, out: &mut Vec<(String, HostTensor)>) -> Result<()> {
        match self {
            Factor::Dense(t) => out.push((base.to_string(), t.clone())),
            Factor::Quant(q) => out.extend(ct::write_parts(base, q)?),
        }
        Ok(())
    }
}

/// `W = U V`: `u` is `[out, r]`, `v` is `[r, in]`.
#[derive(Debug, Clone)]
pub struct LowRank {
    u: Factor,
    v: Factor,
}

impl LowRank {
    pub fn u(&self) -> &Factor {
        &self.u
    }

    pub fn v(&self) -> &Factor {
        &self.v
    }

    pub fn rank(&self) -> usize {
        self.u.shape().1
    }

    /// `[out, in]` of the product.
    pub fn shape(&self) -> (usize, usize) {
        (self.u.shape().0, self.v.shape().1)
    }

    /// `U V` row-major, accumulated in f64 and rounded once to f32.
    pub fn product(&self, name: &str) -> Result<Vec<f32>> {
        let (rows, rank) = self.u.shape();
        let cols = self.v.shape().1;
        let u = self.u.to_f32(name)?;
        let v = self.v.to_f32(name)?;
        let mut out = Vec::with_capacity(rows * cols);
        let mut acc = vec![0f64; cols];
        for r in 0..rows {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for k in 0..rank {
                let a = f64::from(u[r * rank + k]);
                for (acc, &b) in acc.iter_mut().zip(&v[k * cols..(k + 1) * cols]) {
                    *acc += a * f64::from(b);
                }
            }
            out.extend(acc.iter().map(|&a| a as f32));
        }
        Ok(out)
    }
}

/// The stored values of a sparse matrix.
#[derive(Debug, Clone)]
pub enum SparseValues {
    /// In a float dtype: `[nnz]` (bitmask) or `[rows, cols / 2]` (2:4).
    Dense(HostTensor),
    /// Integer codes of the whole `[rows, cols]` matrix with its scales. Only the stored positions' codes are
    /// written; every other position holds its zero point, so it decodes to exactly 0.
    Quant(Arc<QuantTensor>),
}

/// A sparse matrix: a bitmask of kept elements or 2:4 positions, and the values stored there (dense or quantized).
#[derive(Debug, Clone)]
pub struct Sparse {
    pattern: SparsePattern,
    rows: usize,
    cols: usize,
    /// Bitmask: U8 `[rows, ceil(cols / 8)]`; 2:4: the packed 2-bit positions, U8 `[rows, ceil(cols / 8)]`.
    mask: HostTensor,
    /// Values stored: the mask's popcount (bitmask) or `rows * cols / 2` (2:4).
    nnz: usize,
    values: SparseValues,
}

impl Sparse {
    pub fn pattern(&self) -> SparsePattern {
        self.pattern
    }

    /// `[out, in]` of the dense matrix.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Values stored (see [`Form::Sparse`]).
    pub fn nnz(&self) -> usize {
        self.nnz
    }

    pub fn values(&self) -> &SparseValues {
        &self.values
    }

    /// The bitmask, or the packed 2:4 positions.
    pub fn mask(&self) -> &HostTensor {
        &self.mask
    }

    /// The encoding of quantized values.
    pub fn encoding(&self) -> Option<Encoding> {
        match &self.values {
            SparseValues::Dense(_) => None,
            SparseValues::Quant(q) => Some(q.encoding),
        }
    }

    /// From a U8 `[rows, ceil(cols / 8)]` mask (or positions) and the kept values, rounded to `dtype`.
    fn build(
        pattern: SparsePattern,
        rows: usize,
        cols: usize,
        mask: Vec<u8>,
        values_shape: Vec<usize>,
        kept: &[f32],
        dtype: DType,
    ) -> std::result::Result<Self, String> {
        let text = |e: crate::Error| e.to_string();
        Ok(Sparse {
            pattern,
            rows,
            cols,
            mask: HostTensor::from_bytes(DType::U8, vec![rows, cols.div_ceil(8)], mask)
                .map_err(text)?,
            nnz: kept.len(),
            values: SparseValues::Dense(
                HostTensor::from_f32(values_shape, kept, dtype).map_err(text)?,
            ),
        })
    }

    /// For each stored value (in order), its flat index in the dense matrix.
    pub fn positions(&self) -> Vec<usize> {
        positions(self.pattern, self.rows, self.cols, self.mask.bytes())
    }

    /// Whether each element of the dense matrix (row-major) is stored: pruned elements are `false`.
    pub fn stored_mask(&self) -> Vec<bool> {
        let mut out = vec![false; self.rows * self.cols];
        for p in self.positions() {
            out[p] = true;
        }
        out
    }

    /// The same mask with quantized values: `q` encodes the whole `[rows, cols]` matrix; the codes of pruned
    /// positions are dropped (they decode to exactly 0).
    pub fn with_quantized_values(&self, q: QuantTensor) -> std::result::Result<Self, String> {
        if (q.rows, q.cols) != (self.rows, self.cols) {
            return Err(format!(
                "quantized values of a [{}, {}] matrix do not fit a [{}, {}] sparse one",
                q.rows, q.cols, self.rows, self.cols
            ));
        }
        let mut q = q;
        let stored = self.stored_mask();
        for (p, kept) in stored.iter().enumerate() {
            if !kept {
                q.codes[p] = q.zero_code(p / self.cols, p % self.cols);
            }
        }
        Ok(Self {
            values: SparseValues::Quant(Arc::new(q)),
            mask: self.mask.clone(),
            ..*self
        })
    }

    /// The dense matrix: in the values' dtype (exact values, exact zeros), or decoded codes in f32.
    pub fn to_dense(&self) -> Result<HostTensor> {
        let values = match &self.values {
            SparseValues::Quant(q) => {
                return HostTensor::from_f32(
                    vec![self.rows, self.cols],
                    &q.dequantize(),
                    DType::F32,
                )
            }
            SparseValues::Dense(v) => v,
        };
        let size = values.dtype.size();
        let mut bytes = vec![0u8; self.rows * self.cols * size];
        let src = values.bytes();
        for (k, p) in self.positions().into_iter().enumerate() {
            bytes[p * size..(p + 1) * size].copy_from_slice(&src[k * size..(k + 1) * size]);
        }
        HostTensor::from_bytes(values.dtype, vec![self.rows, self.cols], bytes)
    }

    /// The parts of `base` (see the table above).
    fn write_parts(&self, base: &str, out: &mut Vec<(String, HostTensor)>) -> Result<()> {
        let mask = match self.pattern {
            SparsePattern::Bitmask => "_bitmask",
            SparsePattern::TwoFour => "_indices",
        };
        out.push((format!("{base}{mask}"), self.mask.clone()));
        match &self.values {
            SparseValues::Dense(v) => out.push((format!("{base}_values"), v.clone())),
            SparseValues::Quant(q) => {
                let bits = q.encoding.bits;
                let codes: Vec<i8> = self.positions().into_iter().map(|p| q.codes[p]).collect();
                let mut words = Vec::new();
                let shape = match self.pattern {
                    SparsePattern::Bitmask => {
                        pack_codes(&codes, bits, &mut words);
                        vec![words.len()]
                    }
                    SparsePattern::TwoFour => {
                        pack_codes_rows(&codes, self.rows, self.cols / 2, bits, &mut words);
                        vec![self.rows, packed_words(self.cols / 2, bits)]
                    }
                };
                out.push((
                    format!("{base}_values_packed"),
                    HostTensor::from_bytes(
                        DType::I32,
                        shape,
                        bytemuck::cast_slice(&words).to_vec(),
                    )?,
                ));
                // The scales and zero points are those of the whole matrix: compressed-tensors' parts of it.
                for (name, t) in ct::write_parts(&format!("{base}_values"), q)? {
                    if name.ends_with("_scale") || name.ends_with("_zero_point") {
                        out.push((name, t));
                    }
                }
            }
        }
        out.push((
            format!("{base}_shape"),
            HostTensor::from_i64(vec![2], &[self.rows as i64, self.cols as i64])?,
        ));
        Ok(())
    }
}

/// For each stored value of a sparse `[rows, cols]` matrix (in order), its flat index in the dense matrix.
fn positions(pattern: SparsePattern, rows: usize, cols: usize, m: &[u8]) -> Vec<usize> {
    let row_bytes = cols.div_ceil(8);
    let mut out = Vec::new();
    for r in 0..rows {
        let row = &m[r * row_bytes..(r + 1) * row_bytes];
        match pattern {
            SparsePattern::Bitmask => {
                for c in 0..cols {
                    if row[c / 8] >> (c % 8) & 1 == 1 {
                        out.push(r * cols + c);
                    }
                }
            }
            SparsePattern::TwoFour => {
                for i in 0..cols / 2 {
                    let pos = (row[i / 4] >> (2 * (i % 4)) & 3) as usize;
                    out.push(r * cols + 4 * (i / 2) + pos);
                }
            }
        }
    }
    out
}

pub use crate::tensor::PartOf;

/// The integer encoding of a quantized matrix (`M.weight`, or a factor `M.weight_u`) with where it came from
/// (`config group `group_0``), or why there is none.
pub type EncodingOf<'a> = dyn Fn(&str) -> std::result::Result<(Encoding, String), String> + 'a;

/// One parameter as stored: a row of the forms table.
#[derive(Debug, Clone)]
pub enum Stored {
    /// Plain float values (F32, F16, BF16, or a non-float buffer such as `position_ids`).
    Dense(HostTensor),
    /// Integer codes with scales (compressed-tensors layout), decoded to f32.
    Quant(Arc<QuantTensor>),
    /// Two factors, decoded to their product in f32.
    LowRank(LowRank),
    /// Kept values and where they go, decoded to the values' dtype.
    Sparse(Sparse),
}

fn is_stored_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

impl Stored {
    /// `W = U V` from two factors; their inner sizes must agree.
    pub fn low_rank(u: Factor, v: Factor) -> std::result::Result<Self, String> {
        let ((ur, uc), (vr, vc)) = (u.shape(), v.shape());
        if uc != vr || uc == 0 {
            return Err(format!(
                "factors [{ur}, {uc}] and [{vr}, {vc}] do not multiply to a matrix of rank {uc}"
            ));
        }
        Ok(Stored::LowRank(LowRank { u, v }))
    }

    /// The non-zeros of a row-major `[rows, cols]` matrix with a bitmask, values rounded to `dtype`.
    pub fn sparse_from_dense(
        values: &[f32],
        rows: usize,
        cols: usize,
        dtype: DType,
    ) -> std::result::Result<Self, String> {
        Self::sparse(SparsePattern::Bitmask, values, rows, cols, dtype)
    }

    /// A row-major `[rows, cols]` matrix with at most 2 non-zeros in every group of 4 consecutive elements of a
    /// row, in 2:4 layout (values rounded to `dtype`). A matrix that breaks the pattern is refused, naming the row
    /// and the group.
    pub fn two_four(
        values: &[f32],
        rows: usize,
        cols: usize,
        dtype: DType,
    ) -> std::result::Result<Self, String> {
        Self::sparse(SparsePattern::TwoFour, values, rows, cols, dtype)
    }

    /// A row-major `[rows, cols]` matrix in a sparse `pattern` ([`Stored::sparse_from_dense`],
    /// [`Stored::two_four`]).
    pub fn sparse(
        pattern: SparsePattern,
        values: &[f32],
        rows: usize,
        cols: usize,
        dtype: DType,
    ) -> std::result::Result<Self, String> {
        Sparse::from_dense(pattern, values, rows, cols, dtype).map(Stored::Sparse)
    }

    /// A row-major `[rows, cols]` matrix in a sparse `pattern` with its stored values quantized in `encoding`
    /// (scales from the whole matrix, zeros included); the zeros are not stored and decode to exactly 0.
    pub fn sparse_quantized(
        pattern: SparsePattern,
        values: &[f32],
        rows: usize,
        cols: usize,
        encoding: Encoding,
    ) -> std::result::Result<Self, String> {
        let q = QuantTensor::quantize(values, rows, cols, encoding)?;
        Sparse::from_dense(pattern, values, rows, cols, DType::F32)?
            .with_quantized_values(q)
            .map(Stored::Sparse)
    }
}

impl Sparse {
    /// A row-major `[rows, cols]` matrix in `pattern`, values rounded to `dtype` (see [`Stored::sparse`]).
    fn from_dense(
        pattern: SparsePattern,
        values: &[f32],
        rows: usize,
        cols: usize,
        dtype: DType,
    ) -> std::result::Result<Self, String> {
        if values.len() != rows * cols {
            return Err(format!(
                "{} values do not fill a [{rows}, {cols}] matrix",
                values.len()
            ));
        }
        if !is_stored_float(dtype) {
            return Err(format!("sparse values cannot be stored as {dtype}"));
        }
        match pattern {
            SparsePattern::Bitmask => Self::bitmask(values, rows, cols, dtype),
            SparsePattern::TwoFour => Self::two_four_groups(values, rows, cols, dtype),
        }
    }

    fn bitmask(
        values: &[f32],
        rows: usize,
        cols: usize,
        dtype: DType,
    ) -> std::result::Result<Self, String> {
        let row_bytes = cols.div_ceil(8);
        let mut mask = vec![0u8; rows * row_bytes];
        let mut kept = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                let v = values[r * cols + c];
                if v != 0.0 {
                    mask[r * row_bytes + c / 8] |= 1 << (c % 8);
                    kept.push(v);
                }
            }
        }
        let shape = vec![kept.len()];
        Self::build(
            SparsePattern::Bitmask,
            rows,
            cols,
            mask,
            shape,
            &kept,
            dtype,
        )
    }

    fn two_four_groups(
        values: &[f32],
        rows: usize,
        cols: usize,
        dtype: DType,
    ) -> std::result::Result<Self, String> {
        if cols == 0 || !cols.is_multiple_of(4) {
            return Err(format!(
                "2:4 needs a column count divisible by 4, the matrix has {cols}"
            ));
        }
        let row_bytes = cols.div_ceil(8);
        let mut indices = vec![0u8; rows * row_bytes];
        let mut kept = Vec::with_capacity(rows * cols / 2);
        for r in 0..rows {
            for g in 0..cols / 4 {
                let group = &values[r * cols + 4 * g..r * cols + 4 * g + 4];
                let mut pos: Vec<usize> = (0..4).filter(|&i| group[i] != 0.0).collect();
                if pos.len() > 2 {
                    return Err(format!(
                        "row {r}, group {g} (columns {}..{}) holds {} non-zeros; 2:4 allows at most 2",
                        4 * g,
                        4 * g + 3,
                        pos.len()
                    ));
                }
                // Pad with the lowest free positions (their values are zeros).
                let free: Vec<usize> = (0..4).filter(|i| !pos.contains(i)).collect();
                let missing = 2 - pos.len();
                pos.extend(&free[..missing]);
                pos.sort_unstable();
                for (k, &p) in pos.iter().enumerate() {
                    let i = 2 * g + k;
                    indices[r * row_bytes + i / 4] |= (p as u8) << (2 * (i % 4));
                    kept.push(group[p]);
                }
            }
        }
        let shape = vec![rows, cols / 2];
        Self::build(
            SparsePattern::TwoFour,
            rows,
            cols,
            indices,
            shape,
            &kept,
            dtype,
        )
    }
}

impl Stored {
    pub fn kind(&self) -> FormKind {
        self.form().kind()
    }

    /// The metadata mirror.
    pub fn form(&self) -> Form {
        match self {
            Stored::Dense(t) => Form::Dense { dtype: t.dtype },
            Stored::Quant(q) => Form::Quant {
                encoding: q.encoding,
            },
            Stored::LowRank(l) => Form::LowRank {
                rank: l.rank(),
                u: l.u.form(),
                v: l.v.form(),
            },
            Stored::Sparse(s) => Form::Sparse {
                pattern: s.pattern,
                nnz: s.nnz(),
                dtype: self.dtype(),
                encoding: s.encoding(),
            },
        }
    }

    /// The shape of the dense tensor.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Stored::Dense(t) => t.shape.clone(),
            Stored::Quant(q) => vec![q.rows, q.cols],
            Stored::LowRank(l) => {
                let (r, c) = l.shape();
                vec![r, c]
            }
            Stored::Sparse(s) => vec![s.rows, s.cols],
        }
    }

    /// The dtype [`Stored::to_dense`] gives.
    pub fn dtype(&self) -> DType {
        match self {
            Stored::Dense(t) => t.dtype,
            Stored::Quant(_) | Stored::LowRank(_) => DType::F32,
            Stored::Sparse(s) => match &s.values {
                SparseValues::Dense(v) => v.dtype,
                SparseValues::Quant(_) => DType::F32,
            },
        }
    }

    /// Bytes of the parts as written ([`Form::bytes`] of the dense shape).
    pub fn stored_bytes(&self) -> usize {
        self.form().bytes(&self.shape())
    }

    /// The dense tensor: itself, decoded codes (f32), the product of the factors (f32), or the sparse matrix
    /// with its zeros (in the values' dtype). `name` is for errors.
    pub fn to_dense(&self, name: &str) -> Result<HostTensor> {
        match self {
            Stored::Dense(t) => Ok(t.clone()),
            Stored::Quant(q) => {
                HostTensor::from_f32(vec![q.rows, q.cols], &q.dequantize(), DType::F32)
            }
            Stored::LowRank(l) => HostTensor::from_f32(self.shape(), &l.product(name)?, DType::F32),
            Stored::Sparse(s) => s.to_dense(),
        }
    }

    /// The decoded values as f32, row-major.
    pub fn decode(&self, name: &str) -> Result<Vec<f32>> {
        match self {
            Stored::Quant(q) => Ok(q.dequantize()),
            Stored::LowRank(l) => l.product(name),
            _ => self.to_dense(name)?.to_f32(name),
        }
    }

    /// The same form with every float part (see [`Form::with_float_dtype`]) replaced by `f` of it; integer codes,
    /// masks and positions stay. `f` must keep each part's shape.
    pub fn map_float_parts(
        &self,
        mut f: impl FnMut(&HostTensor) -> Result<HostTensor>,
    ) -> Result<Stored> {
        let mut factor = |x: &Factor| -> Result<Factor> {
            Ok(match x {
                Factor::Dense(t) => Factor::Dense(f(t)?),
                q => q.clone(),
            })
        };
        Ok(match self {
            Stored::Dense(t) => Stored::Dense(f(t)?),
            Stored::Quant(_) => self.clone(),
            Stored::LowRank(l) => Stored::LowRank(LowRank {
                u: factor(&l.u)?,
                v: factor(&l.v)?,
            }),
            Stored::Sparse(s) => match &s.values {
                SparseValues::Dense(v) => Stored::Sparse(Sparse {
                    values: SparseValues::Dense(f(v)?),
                    mask: s.mask.clone(),
                    ..*s
                }),
                SparseValues::Quant(_) => self.clone(),
            },
        })
    }

    /// The tensors written for this parameter, named after `base` (its on-disk name): `base` itself when dense,
    /// otherwise the parts of the table above.
    pub fn write_parts(&self, base: &str) -> Result<Vec<(String, HostTensor)>> {
        let mut out = Vec::new();
        match self {
            Stored::Dense(t) => out.push((base.to_string(), t.clone())),
            Stored::Quant(q) => out.extend(ct::write_parts(base, q)?),
            Stored::LowRank(l) => {
                l.u.write_parts(&format!("{base}_u"), &mut out)?;
                l.v.write_parts(&format!("{base}_v"), &mut out)?;
            }
            Stored::Sparse(s) => s.write_parts(base, &mut out)?,
        }
        Ok(out)
    }

    /// Read tensor `base` stored as `kind` from its parts (`part` looks a part up by its full name).
    /// `encoding` gives the integer encoding of a quantized matrix (`base` itself, or a factor `base_u`) with a
    /// description of where it came from (`config group `group_0``), or says why there is none.
    pub fn read(
        kind: FormKind,
        base: &str,
        part: &PartOf,
        encoding: &EncodingOf,
    ) -> std::result::Result<Self, FormError> {
        let fail = |problem: String| FormError {
            name: base.to_string(),
            kind,
            problem,
        };
        match kind {
            FormKind::Dense => part(base)
                .map(Stored::Dense)
                .ok_or_else(|| fail(format!("`{}` is missing", ct::leaf(base)))),
            FormKind::Quant => {
                let (e, context) = encoding(base).map_err(fail)?;
                ct::read_parts(base, e, &context, part)
                    .map(|q| Stored::Quant(Arc::new(q)))
                    .map_err(fail)
            }
            FormKind::LowRank => {
                let factor = |suffix: &str| -> std::result::Result<Factor, String> {
                    let name = format!("{base}{suffix}");
                    let dense = part(&name);
                    let packed = part(&format!("{name}_packed"));
                    match (dense, packed) {
                        (Some(_), Some(_)) => Err(format!(
                            "holds both `{0}` and `{0}_packed`",
                            ct::leaf(&name)
                        )),
                        (None, None) => Err(format!(
                            "`{0}` (or `{0}_packed`) is missing",
                            ct::leaf(&name)
                        )),
                        (Some(t), None) => {
                            if !is_stored_float(t.dtype) {
                                return Err(format!(
                                    "`{}` is {}, expected F32, F16 or BF16",
                                    ct::leaf(&name),
                                    t.dtype
                                ));
                            }
                            if t.shape.len() != 2 {
                                return Err(format!(
                                    "`{}` has shape {:?}, expected a matrix",
                                    ct::leaf(&name),
                                    t.shape
                                ));
                            }
                            Ok(Factor::Dense(t))
                        }
                        (None, Some(_)) => {
                            let (e, context) = encoding(&name)?;
                            ct::read_parts(&name, e, &context, part)
                                .map(|q| Factor::Quant(Arc::new(q)))
                        }
                    }
                };
                let u = factor("_u").map_err(&fail)?;
                let v = factor("_v").map_err(&fail)?;
                let ((ur, uc), (vr, vc)) = (u.shape(), v.shape());
                if uc != vr || uc == 0 {
                    return Err(fail(format!(
                        "`weight_u` is [{ur}, {uc}] and `weight_v` is [{vr}, {vc}]: they do not share a rank"
                    )));
                }
                Ok(Stored::LowRank(LowRank { u, v }))
            }
            FormKind::Bitmask | FormKind::TwoFour => {
                read_sparse(kind, base, part, encoding).map_err(fail)
            }
        }
    }
}

fn read_sparse(
    kind: FormKind,
    base: &str,
    part: &PartOf,
    encoding: &EncodingOf,
) -> std::result::Result<Stored, String> {
    let get = |suffix: &str| {
        part(&format!("{base}{suffix}")).ok_or_else(|| format!("`weight{suffix}` is missing"))
    };
    let shape = get("_shape")?;
    let dims = shape
        .to_i64(&format!("{base}_shape"))
        .map_err(|_| format!("`weight_shape` is {}, expected I64", shape.dtype))?;
    let (rows, cols) = match dims[..] {
        [r, c] if r > 0 && c > 0 => (r as usize, c as usize),
        _ => return Err(format!("`weight_shape` holds {dims:?}, expected [out, in]")),
    };
    let (pattern, mask_suffix) = match kind {
        FormKind::TwoFour => (SparsePattern::TwoFour, "_indices"),
        _ => (SparsePattern::Bitmask, "_bitmask"),
    };
    if pattern == SparsePattern::TwoFour && !cols.is_multiple_of(4) {
        return Err(format!(
            "`weight_shape` holds [{rows}, {cols}]: 2:4 needs a column count divisible by 4"
        ));
    }
    let mask = get(mask_suffix)?;
    let row_bytes = cols.div_ceil(8);
    if mask.dtype != DType::U8 {
        return Err(format!(
            "`weight{mask_suffix}` is {}, expected U8",
            mask.dtype
        ));
    }
    if mask.shape != [rows, row_bytes] {
        return Err(format!(
            "`weight{mask_suffix}` has shape {:?}, a [{rows}, {cols}] matrix needs [{rows}, {row_bytes}]",
            mask.shape
        ));
    }
    let m = mask.bytes();
    let nnz = match pattern {
        SparsePattern::Bitmask => {
            let tail = cols % 8;
            if tail != 0 {
                if let Some(r) = (0..rows).find(|r| m[(r + 1) * row_bytes - 1] >> tail != 0) {
                    return Err(format!(
                        "`weight_bitmask` row {r} sets bits past its {cols} columns"
                    ));
                }
            }
            m.iter().map(|b| b.count_ones() as usize).sum()
        }
        SparsePattern::TwoFour => {
            let at = |r: usize, i: usize| m[r * row_bytes + i / 4] >> (2 * (i % 4)) & 3;
            for r in 0..rows {
                for g in 0..cols / 4 {
                    let (a, b) = (at(r, 2 * g), at(r, 2 * g + 1));
                    if a >= b {
                        return Err(format!(
                            "`weight_indices` row {r}, group {g} names positions {a} and {b}; 2:4 needs two distinct ascending positions"
                        ));
                    }
                }
                let used = cols / 2;
                if used % 4 != 0 && m[(r + 1) * row_bytes - 1] >> (2 * (used % 4)) != 0 {
                    return Err(format!(
                        "`weight_indices` row {r} sets bits past its {used} positions"
                    ));
                }
            }
            rows * (cols / 2)
        }
    };
    let values = match (
        part(&format!("{base}_values")),
        part(&format!("{base}_values_packed")),
    ) {
        (Some(_), Some(_)) => {
            return Err("holds both `weight_values` and `weight_values_packed`".into())
        }
        (None, None) => return Err("`weight_values` (or `weight_values_packed`) is missing".into()),
        (Some(values), None) => {
            if !is_stored_float(values.dtype) {
                return Err(format!(
                    "`weight_values` is {}, expected F32, F16 or BF16",
                    values.dtype
                ));
            }
            let expected = match pattern {
                SparsePattern::Bitmask => vec![nnz],
                SparsePattern::TwoFour => vec![rows, cols / 2],
            };
            if values.shape != expected {
                return Err(match pattern {
                    SparsePattern::Bitmask => format!(
                        "`weight_bitmask` keeps {nnz} values but `weight_values` has shape {:?}",
                        values.shape
                    ),
                    SparsePattern::TwoFour => format!(
                        "`weight_values` has shape {:?}, a [{rows}, {cols}] 2:4 matrix needs {expected:?}",
                        values.shape
                    ),
                });
            }
            SparseValues::Dense(values)
        }
        (None, Some(packed)) => {
            let values_base = format!("{base}_values");
            let (e, context) = encoding(&values_base)?;
            let mut scales = ct::Scales::read(&values_base, e, &context, part)?;
            let e = scales.encoding;
            e.check(rows, cols).map_err(|p| scales.in_context(p))?;
            scales.check_shape(rows, cols)?;
            let shape = match pattern {
                SparsePattern::Bitmask => vec![packed_words(nnz, e.bits)],
                SparsePattern::TwoFour => vec![rows, packed_words(cols / 2, e.bits)],
            };
            let words = scales.codes("_packed", &packed, &shape)?;
            let mut codes = Vec::with_capacity(nnz);
            match pattern {
                SparsePattern::Bitmask => unpack_codes(&words, e.bits, nnz, &mut codes),
                SparsePattern::TwoFour => {
                    for row in words.chunks(shape[1].max(1)) {
                        unpack_codes(row, e.bits, cols / 2, &mut codes);
                    }
                }
            }
            let zero_points = scales.zero_points(rows, cols, part)?;
            let mut q = QuantTensor::from_codes(
                e,
                rows,
                cols,
                vec![0; rows * cols],
                scales.take(),
                zero_points.as_deref(),
            )
            .map_err(|p| scales.in_context(p))?;
            for p in 0..rows * cols {
                q.codes[p] = q.zero_code(p / cols, p % cols);
            }
            for (code, p) in codes.into_iter().zip(positions(pattern, rows, cols, m)) {
                q.codes[p] = code;
            }
            SparseValues::Quant(Arc::new(q))
        }
    };
    Ok(Stored::Sparse(Sparse {
        pattern,
        rows,
        cols,
        mask,
        nnz,
        values,
    }))
}
