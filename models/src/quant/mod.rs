//! Integer weight encodings: one table of formats, each with a reference encoder and decoder, and the
//! compressed-tensors bit packing.
//!
//! An [`Encoding`] is a bit width (2 to 8), symmetric or asymmetric codes, a scale granularity ([`Strategy`]:
//! one scale per tensor, per output channel, per group of `g` consecutive inputs, or per `r x c` block), the dtype
//! scales are stored in (f32, f16 or bf16) and optionally power-of-two scales. A [`QuantTensor`] holds the integer
//! codes of one `[out, in]` matrix with its scales (and zero points), and decodes to `(q - zp) * scale`.
//!
//! The numerics follow compressed-tensors (FORMATS.md §2.2), so that our files decode in `transformers` exactly as
//! in our runtime:
//! - codes lie in `[-2^(b-1), 2^(b-1) - 1]`;
//! - symmetric scale `max|w| / ((2^b - 1) / 2)` (4 bits: `absmax / 7.5`), so the largest magnitude lands half a
//!   step outside the grid and is clamped: every value decodes within half a step of itself;
//! - asymmetric: the range `[min(w, 0), max(w, 0)]` over `2^b - 1` steps, zero point
//!   `clamp(round(qmin - min / scale), qmin, qmax)` (the signed convention);
//! - rounding is to nearest, ties to even (`torch.round`); quantization divides by the scale as stored (after
//!   rounding it to the scale dtype), so decoding reproduces exactly what was encoded.

pub mod act;
pub mod ct;

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use crate::tensor::DType;

/// Smallest and largest bit widths we encode.
pub const MIN_BITS: u8 = 2;
pub const MAX_BITS: u8 = 8;

/// How many values share one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "strategy")]
pub enum Strategy {
    /// One scale for the whole matrix.
    Tensor,
    /// One scale per output row.
    Channel,
    /// One scale per `size` consecutive values of a row (along the input dimension).
    Group { size: usize },
    /// One scale per `rows x cols` tile.
    Block { rows: usize, cols: usize },
}

impl Strategy {
    /// Rows and columns of the scale matrix of an `[out, in]` tensor.
    pub fn scale_shape(self, out: usize, inp: usize) -> [usize; 2] {
        match self {
            Strategy::Tensor => [1, 1],
            Strategy::Channel => [out, 1],
            Strategy::Group { size } => [out, inp.div_ceil(size.max(1))],
            Strategy::Block { rows, cols } => {
                [out.div_ceil(rows.max(1)), inp.div_ceil(cols.max(1))]
            }
        }
    }

    /// Index into the row-major scale matrix ([`Strategy::scale_shape`]) of element `(r, c)` of a matrix `cols`
    /// wide.
    pub fn scale_index(self, cols: usize, r: usize, c: usize) -> usize {
        scale_index(self, cols, r, c)
    }

    /// Short human name: `tensor`, `channel`, `group 128`, `block 64x64`.
    pub fn describe(self) -> String {
        match self {
            Strategy::Tensor => "tensor".into(),
            Strategy::Channel => "channel".into(),
            Strategy::Group { size } => format!("group {size}"),
            Strategy::Block { rows, cols } => format!("block {rows}x{cols}"),
        }
    }
}

/// One integer format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Encoding {
    pub bits: u8,
    pub symmetric: bool,
    #[serde(flatten)]
    pub strategy: Strategy,
    /// The dtype scales are stored in: F32, F16 or BF16.
    #[serde(with = "dtype_name")]
    pub scale_dtype: DType,
    /// Scales rounded up to a power of two (rescaling becomes a shift).
    pub pow2_scales: bool,
}

/// Serde of a [`DType`] as its safetensors spelling (`F32`).
pub(crate) mod dtype_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::tensor::DType;

    pub fn serialize<S: Serializer>(d: &DType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DType, D::Error> {
        let s = String::deserialize(d)?;
        DType::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown dtype `{s}`")))
    }
}

impl Encoding {
    /// Symmetric codes with f32 scales.
    pub fn symmetric(bits: u8, strategy: Strategy) -> Self {
        Self {
            bits,
            symmetric: true,
            strategy,
            scale_dtype: DType::F32,
            pow2_scales: false,
        }
    }

    pub fn qmin(&self) -> i32 {
        -(1 << (self.bits - 1))
    }

    pub fn qmax(&self) -> i32 {
        (1 << (self.bits - 1)) - 1
    }

    /// Whether this encoding can store an `[out, in]` matrix; the error says why not and what would fit.
    pub fn check(&self, out: usize, inp: usize) -> Result<(), String> {
        if !(MIN_BITS..=MAX_BITS).contains(&self.bits) {
            return Err(format!(
                "{} bits is outside the supported range {MIN_BITS} to {MAX_BITS}",
                self.bits
            ));
        }
        if !self.scale_dtype.is_float() || self.scale_dtype == DType::F64 {
            return Err(format!(
                "scales cannot be stored as {} (use F32, F16 or BF16)",
                self.scale_dtype
            ));
        }
        let fits = |what: &str, size: usize, dim: usize, dim_name: &str| -> Result<(), String> {
            if size == 0 {
                return Err(format!("{what} must be at least 1"));
            }
            if !dim.is_multiple_of(size) {
                return Err(format!(
                    "{what} {size} does not divide the {dim_name} dimension {dim}; valid sizes near it: {}",
                    nearest_divisors(dim, size)
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Ok(())
        };
        match self.strategy {
            Strategy::Tensor | Strategy::Channel => Ok(()),
            Strategy::Group { size } => fits("group size", size, inp, "input"),
            Strategy::Block { rows, cols } => {
                fits("block rows", rows, out, "output")?;
                fits("block columns", cols, inp, "input")
            }
        }
    }

    /// Bytes of an `[out, in]` matrix in this encoding as compressed-tensors stores it: packed codes, scales, zero
    /// points (symmetric: none) and the int64 `[2]` shape.
    pub fn stored_bytes(&self, out: usize, inp: usize) -> usize {
        out * packed_words(inp, self.bits) * 4 + self.scale_bytes(out, inp) + 16
    }

    /// Bytes of the scales and (asymmetric) packed zero points of an `[out, in]` matrix in this encoding.
    pub fn scale_bytes(&self, out: usize, inp: usize) -> usize {
        let [sr, sc] = self.strategy.scale_shape(out, inp);
        let scales = sr * sc * self.scale_dtype.size();
        let zero_points = if self.symmetric {
            0
        } else {
            packed_words(sr, self.bits) * sc * 4
        };
        scales + zero_points
    }

    /// Round a scale to what is stored: power of two (rounded up) if asked, then up to the scale dtype. A zero
    /// scale (an all-zero block) becomes the dtype's epsilon, as compressed-tensors does.
    /// The scale (as stored) and, when asymmetric, the zero point of a block whose values span `[lo, hi]` (with
    /// `lo <= 0 <= hi`), in f32 as compressed-tensors computes them.
    pub fn params(&self, lo: f32, hi: f32) -> (f32, Option<i8>) {
        let (qmin, qmax) = (self.qmin(), self.qmax());
        let levels = ((1u32 << self.bits) - 1) as f32;
        if self.symmetric {
            let absmax = lo.abs().max(hi.abs());
            (self.stored_scale(absmax / (levels / 2.0)), None)
        } else {
            let range = hi - lo;
            let s = self.stored_scale(range / levels);
            // An all-zero block has no range: compressed-tensors' zero point is then 0 (its NaN cast to int).
            let zp = if range == 0.0 {
                0.0
            } else {
                (qmin as f32 - lo / s).round_ties_even()
            };
            (s, Some(zp.clamp(qmin as f32, qmax as f32) as i8))
        }
    }

    /// The code of `v` at `scale` and zero point `zp` (0 when symmetric): round to nearest, ties to even, clamped.
    #[inline]
    pub fn code(&self, v: f32, scale: f32, zp: i8) -> i8 {
        // Clamping to the (integer) code range first, then rounding, gives the same code as rounding first; the
        // rounding is then of a small number, which adding and subtracting 1.5 * 2^23 does exactly, ties to even,
        // without the library call `round_ties_even` becomes on baseline x86-64 (and vectorises).
        let q = (v / scale + f32::from(zp)).clamp(self.qmin() as f32, self.qmax() as f32);
        ((q + 12_582_912.0) - 12_582_912.0) as i8
    }

    fn stored_scale(&self, s: f32) -> f32 {
        let eps = match self.scale_dtype {
            DType::F16 => f16::EPSILON.to_f32(),
            DType::BF16 => bf16::EPSILON.to_f32(),
            _ => f32::EPSILON,
        };
        let mut s = s;
        if s.is_nan() || s <= 0.0 {
            s = eps;
        }
        if self.pow2_scales {
            s = 2f32.powi(s.log2().ceil() as i32);
        }
        // Round up, never down, so that the largest magnitude still decodes within half a step.
        match self.scale_dtype {
            DType::F16 => {
                let h = f16::from_f32(s);
                if h.to_f32() < s {
                    f16::from_bits(h.to_bits() + 1).to_f32()
                } else {
                    h.to_f32()
                }
            }
            DType::BF16 => {
                let h = bf16::from_f32(s);
                if h.to_f32() < s {
                    bf16::from_bits(h.to_bits() + 1).to_f32()
                } else {
                    h.to_f32()
                }
            }
            _ => s,
        }
    }
}

/// The (up to) three divisors of `n` closest to `wanted`, ascending, for hints.
pub fn nearest_divisors(n: usize, wanted: usize) -> Vec<usize> {
    let mut divisors: Vec<usize> = (1..=n).filter(|d| n.is_multiple_of(*d)).collect();
    divisors.sort_by_key(|&d| (d.abs_diff(wanted), d));
    divisors.truncate(3);
    divisors.sort_unstable();
    divisors
}

/// Number of int32 words holding `n` codes of `bits` bits.
pub fn packed_words(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(32)
}

/// Pack signed codes of `bits` bits into int32 words as compressed-tensors does: add `2^(bits-1)`, then element `i`
/// occupies bits `i*bits ..` of a little-endian bit stream (it may straddle two words).
pub fn pack_codes(codes: &[i8], bits: u8, out: &mut Vec<i32>) {
    let b = bits as u32;
    let offset = 1i32 << (b - 1);
    let mask = (1u64 << b) - 1;
    let mut acc: u64 = 0;
    let mut filled: u32 = 0;
    for &q in codes {
        acc |= ((q as i32 + offset) as u64 & mask) << filled;
        filled += b;
        if filled >= 32 {
            out.push(acc as u32 as i32);
            acc >>= 32;
            filled -= 32;
        }
    }
    if filled > 0 {
        out.push(acc as u32 as i32);
    }
}

/// Pack a row-major `[rows, cols]` code matrix row by row (each row starts a new word).
pub fn pack_codes_rows(codes: &[i8], rows: usize, cols: usize, bits: u8, out: &mut Vec<i32>) {
    for row in codes.chunks(cols.max(1)).take(rows) {
        pack_codes(row, bits, out);
    }
}

/// The inverse of [`pack_codes`]: `n` signed codes from `words`.
pub fn unpack_codes(words: &[i32], bits: u8, n: usize, out: &mut Vec<i8>) {
    let b = bits as u32;
    let offset = 1i32 << (b - 1);
    let mask = (1u64 << b) - 1;
    let mut acc: u64 = 0;
    let mut filled: u32 = 0;
    let mut words = words.iter();
    for _ in 0..n {
        if filled < b {
            acc |= (words.next().copied().unwrap_or(0) as u32 as u64) << filled;
            filled += 32;
        }
        out.push(((acc & mask) as i32 - offset) as i8);
        acc >>= b;
        filled -= b;
    }
}

/// Integer codes of one `[rows, cols]` matrix with their scales (and zero points when asymmetric).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantTensor {
    pub encoding: Encoding,
    pub rows: usize,
    pub cols: usize,
    /// Row-major codes in `[qmin, qmax]`.
    pub codes: Vec<i8>,
    /// Row-major `[scale rows, scale cols]` scales, exactly as stored (already rounded to the scale dtype).
    pub scales: Vec<f32>,
    /// Zero points, same layout as `scales`; empty when symmetric.
    pub zero_points: Vec<i8>,
}

/// How far a decoded matrix is from the original.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct QuantError {
    /// `||Q(W) - W||_F / ||W||_F`.
    pub relative_frobenius: f64,
    /// `||Q(W) - W||_F^2`.
    pub squared_error: f64,
    pub max_abs_error: f64,
}

impl QuantTensor {
    /// Index into the scale matrix of element `(r, c)`.
    pub fn scale_index(&self, r: usize, c: usize) -> usize {
        scale_index(self.encoding.strategy, self.cols, r, c)
    }

    /// Encode `values` (`rows * cols`, row-major). The encoding must fit the shape (see [`Encoding::check`]);
    /// non-finite values are an error.
    pub fn quantize(
        values: &[f32],
        rows: usize,
        cols: usize,
        encoding: Encoding,
    ) -> Result<Self, String> {
        encoding.check(rows, cols)?;
        if values.len() != rows * cols {
            return Err(format!(
                "{} values do not fill a [{rows}, {cols}] matrix",
                values.len()
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!("value at flat index {i} is not finite"));
        }
        let [sr, sc] = encoding.strategy.scale_shape(rows, cols);
        let mut lo = vec![0f32; sr * sc];
        let mut hi = vec![0f32; sr * sc];
        for (r, row) in values.chunks_exact(cols.max(1)).enumerate().take(rows) {
            for (c0, c1, k) in segments(encoding.strategy, cols, r) {
                for &v in &row[c0..c1] {
                    lo[k] = lo[k].min(v);
                    hi[k] = hi[k].max(v);
                }
            }
        }
        let mut scales = Vec::with_capacity(sr * sc);
        let mut zero_points = Vec::new();
        for k in 0..sr * sc {
            let (s, zp) = encoding.params(lo[k], hi[k]);
            scales.push(s);
            if let Some(zp) = zp {
                zero_points.push(zp);
            }
        }
        let mut codes = vec![0i8; values.len()];
        for (r, (row, out)) in values
            .chunks_exact(cols.max(1))
            .zip(codes.chunks_exact_mut(cols.max(1)))
            .enumerate()
        {
            for (c0, c1, k) in segments(encoding.strategy, cols, r) {
                let (s, zp) = (scales[k], zero_points.get(k).copied().unwrap_or(0));
                for (q, &v) in out[c0..c1].iter_mut().zip(&row[c0..c1]) {
                    *q = encoding.code(v, s, zp);
                }
            }
        }
        Ok(Self {
            encoding,
            rows,
            cols,
            codes,
            scales,
            zero_points,
        })
    }

    /// Decoded values, row-major: `(q - zp) * scale`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.codes.len()];
        let cols = self.cols.max(1);
        for (r, row) in out.chunks_exact_mut(cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// Decode row `r` into `row` (`cols` values).
    fn dequantize_row(&self, r: usize, row: &mut [f32]) {
        let cols = self.cols.max(1);
        let codes = &self.codes[r * cols..(r + 1) * cols];
        for (c0, c1, k) in segments(self.encoding.strategy, self.cols, r) {
            let zp = self.zero_points.get(k).map_or(0, |&z| i32::from(z));
            let s = self.scales[k];
            for (o, &q) in row[c0..c1].iter_mut().zip(&codes[c0..c1]) {
                *o = (i32::from(q) - zp) as f32 * s;
            }
        }
    }

    /// How far the decoded matrix is from `original` (decoded one row at a time: no second copy of the matrix).
    pub fn error(&self, original: &[f32]) -> QuantError {
        let (mut se, mut norm, mut max) = (0f64, 0f64, 0f64);
        let cols = self.cols.max(1);
        let mut decoded = vec![0f32; cols];
        for (r, values) in original.chunks(cols).take(self.rows).enumerate() {
            self.dequantize_row(r, &mut decoded);
            for (&a, &b) in values.iter().zip(&decoded) {
                let d = f64::from(a) - f64::from(b);
                se += d * d;
                norm += f64::from(a) * f64::from(a);
                max = max.max(d.abs());
            }
        }
        QuantError {
            relative_frobenius: if norm > 0.0 { (se / norm).sqrt() } else { 0.0 },
            squared_error: se,
            max_abs_error: max,
        }
    }

    /// Codes packed row by row: `[rows, packed_words(cols, bits)]` int32.
    pub fn packed(&self) -> Vec<i32> {
        let mut out = Vec::with_capacity(self.rows * packed_words(self.cols, self.encoding.bits));
        pack_codes_rows(
            &self.codes,
            self.rows,
            self.cols,
            self.encoding.bits,
            &mut out,
        );
        out
    }

    /// Zero points packed along the first dimension as compressed-tensors stores them for asymmetric
    /// pack-quantized weights: `[packed_words(scale rows, bits), scale cols]`; empty when symmetric.
    pub fn packed_zero_points(&self) -> Vec<i32> {
        if self.zero_points.is_empty() {
            return Vec::new();
        }
        let [sr, sc] = self.encoding.strategy.scale_shape(self.rows, self.cols);
        let words = packed_words(sr, self.encoding.bits);
        let mut columns = Vec::with_capacity(sc);
        for c in 0..sc {
            let column: Vec<i8> = (0..sr).map(|r| self.zero_points[r * sc + c]).collect();
            let mut packed = Vec::with_capacity(words);
            pack_codes(&column, self.encoding.bits, &mut packed);
            columns.push(packed);
        }
        let mut out = vec![0i32; words * sc];
        for (c, column) in columns.iter().enumerate() {
            for (w, &v) in column.iter().enumerate() {
                out[w * sc + c] = v;
            }
        }
        out
    }

    /// Rebuild from stored parts (the inverse of [`QuantTensor::packed`] and friends). Sizes are checked; the error
    /// says which part disagrees.
    pub fn from_packed(
        encoding: Encoding,
        rows: usize,
        cols: usize,
        packed: &[i32],
        scales: Vec<f32>,
        packed_zero_points: Option<&[i32]>,
    ) -> Result<Self, String> {
        encoding.check(rows, cols)?;
        let words = packed_words(cols, encoding.bits);
        if packed.len() != rows * words {
            return Err(format!(
                "packed codes hold {} words, a [{rows}, {cols}] matrix of {} bits needs [{rows}, {words}] = {}",
                packed.len(),
                encoding.bits,
                rows * words
            ));
        }
        let mut codes = Vec::with_capacity(rows * cols);
        for row in packed.chunks(words.max(1)).take(rows) {
            unpack_codes(row, encoding.bits, cols, &mut codes);
        }
        Self::from_codes(encoding, rows, cols, codes, scales, packed_zero_points)
    }

    /// From unpacked row-major codes, the scales and (asymmetric) the zero points packed as compressed-tensors
    /// stores them ([`QuantTensor::packed_zero_points`]). Sizes are checked; the error says which part disagrees.
    pub fn from_codes(
        encoding: Encoding,
        rows: usize,
        cols: usize,
        codes: Vec<i8>,
        scales: Vec<f32>,
        packed_zero_points: Option<&[i32]>,
    ) -> Result<Self, String> {
        encoding.check(rows, cols)?;
        if codes.len() != rows * cols {
            return Err(format!(
                "{} codes do not fill a [{rows}, {cols}] matrix",
                codes.len()
            ));
        }
        let [sr, sc] = encoding.strategy.scale_shape(rows, cols);
        if scales.len() != sr * sc {
            return Err(format!(
                "{} scales found, {} scales need [{sr}, {sc}] = {}",
                scales.len(),
                encoding.strategy.describe(),
                sr * sc
            ));
        }
        let zero_points = match (encoding.symmetric, packed_zero_points) {
            (true, None) => Vec::new(),
            (true, Some(_)) => return Err("symmetric weights carry zero points".into()),
            (false, None) => return Err("asymmetric weights lack zero points".into()),
            (false, Some(z)) => {
                let zw = packed_words(sr, encoding.bits);
                if z.len() != zw * sc {
                    return Err(format!(
                        "zero points hold {} words, expected [{zw}, {sc}] = {}",
                        z.len(),
                        zw * sc
                    ));
                }
                let mut zp = vec![0i8; sr * sc];
                for c in 0..sc {
                    let column: Vec<i32> = (0..zw).map(|w| z[w * sc + c]).collect();
                    let mut unpacked = Vec::with_capacity(sr);
                    unpack_codes(&column, encoding.bits, sr, &mut unpacked);
                    for (r, v) in unpacked.into_iter().enumerate() {
                        zp[r * sc + c] = v;
                    }
                }
                zp
            }
        };
        Ok(Self {
            encoding,
            rows,
            cols,
            codes,
            scales,
            zero_points,
        })
    }

    /// The zero point of element `(r, c)` (0 when symmetric): the code that decodes to exactly 0.
    pub fn zero_code(&self, r: usize, c: usize) -> i8 {
        self.zero_points
            .get(self.scale_index(r, c))
            .copied()
            .unwrap_or(0)
    }

    /// A matrix quantized with scale blocks spanning whole rows (`Block { rows, cols }` with `cols` the row length:
    /// contiguous groups of output rows, as Q-BERT) restated with per-row scales: each row gets its group's scale
    /// (and zero point). Codes and decoded values are unchanged; the result is compressed-tensors' channel strategy,
    /// which every loader reads, where block strategies with differing block shapes need one config group each.
    pub fn row_blocks_as_channels(self) -> Result<Self, String> {
        let Strategy::Block { rows: br, cols: bc } = self.encoding.strategy else {
            return Err(format!(
                "only row-block scales can be restated per row, not {}",
                self.encoding.strategy.describe()
            ));
        };
        if bc != self.cols || br == 0 {
            return Err(format!(
                "{br}x{bc} scale blocks do not span the {} columns of a row",
                self.cols
            ));
        }
        let expand = |v: &[f32]| (0..self.rows).map(|r| v[r / br]).collect::<Vec<_>>();
        let scales = expand(&self.scales);
        let zero_points = if self.zero_points.is_empty() {
            Vec::new()
        } else {
            (0..self.rows).map(|r| self.zero_points[r / br]).collect()
        };
        Ok(Self {
            encoding: Encoding {
                strategy: Strategy::Channel,
                ..self.encoding
            },
            scales,
            zero_points,
            ..self
        })
    }

    /// Keep rows `rows` (in the given order), codes and scales alike. Block scales spanning several rows cannot be
    /// split; that is an error.
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self, String> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.rows) {
            return Err(format!(
                "row {bad} does not exist (it has {} rows)",
                self.rows
            ));
        }
        let [_, sc] = self.encoding.strategy.scale_shape(self.rows, self.cols);
        let per_row_scales = match self.encoding.strategy {
            Strategy::Channel | Strategy::Group { .. } => true,
            Strategy::Block { rows: 1, .. } => true,
            Strategy::Tensor => false,
            Strategy::Block { rows: br, .. } => {
                return Err(format!(
                "its {br}-row scale blocks cannot be split by row; quantize after selecting rows"
            ))
            }
        };
        let mut codes = Vec::with_capacity(rows.len() * self.cols);
        let mut scales = Vec::new();
        let mut zero_points = Vec::new();
        for &r in rows {
            codes.extend_from_slice(&self.codes[r * self.cols..(r + 1) * self.cols]);
            if per_row_scales {
                scales.extend_from_slice(&self.scales[r * sc..(r + 1) * sc]);
                if !self.zero_points.is_empty() {
                    zero_points.extend_from_slice(&self.zero_points[r * sc..(r + 1) * sc]);
                }
            }
        }
        if !per_row_scales {
            scales = self.scales.clone();
            zero_points = self.zero_points.clone();
        }
        Ok(Self {
            encoding: self.encoding,
            rows: rows.len(),
            cols: self.cols,
            codes,
            scales,
            zero_points,
        })
    }

    /// Bytes as stored (see [`Encoding::stored_bytes`]).
    pub fn stored_bytes(&self) -> usize {
        self.encoding.stored_bytes(self.rows, self.cols)
    }
}

/// The runs of columns of row `r` that share one scale: `(first, end, scale index)`.
fn segments(
    strategy: Strategy,
    cols: usize,
    r: usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    let width = match strategy {
        Strategy::Tensor | Strategy::Channel => cols,
        Strategy::Group { size } => size,
        Strategy::Block { cols: bc, .. } => bc,
    }
    .max(1);
    (0..cols).step_by(width).map(move |c0| {
        (
            c0,
            (c0 + width).min(cols),
            scale_index(strategy, cols, r, c0),
        )
    })
}

fn scale_index(strategy: Strategy, cols: usize, r: usize, c: usize) -> usize {
    match strategy {
        Strategy::Tensor => 0,
        Strategy::Channel => r,
        Strategy::Group { size } => r * cols.div_ceil(size) + c / size,
        Strategy::Block { rows, cols: bc } => (r / rows) * cols.div_ceil(bc) + c / bc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_places_element_i_at_bit_i_times_b() {
        let mut words = Vec::new();
        // 4 bits: offset 8, so -8..7 become 0..15; eight codes per word, first in the low nibble.
        pack_codes(&[-8, -7, 0, 7, 1, 2, 3, 4], 4, &mut words);
        assert_eq!(words, vec![0xCBA9_F810u32 as i32]);
        // 3 bits straddle: 11 codes of value 3 (7 after the offset of 4) fill 33 bits.
        let mut w3 = Vec::new();
        pack_codes(&[3; 11], 3, &mut w3);
        assert_eq!(w3, vec![-1, 1]);
        let mut back = Vec::new();
        unpack_codes(&w3, 3, 11, &mut back);
        assert_eq!(back, vec![3; 11]);
    }

    #[test]
    fn row_blocks_restated_per_row_decode_the_same() {
        let w: Vec<f32> = (0..6 * 4)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1)
            .collect();
        for symmetric in [true, false] {
            let e = Encoding {
                symmetric,
                ..Encoding::symmetric(3, Strategy::Block { rows: 2, cols: 4 })
            };
            let q = QuantTensor::quantize(&w, 6, 4, e).expect("quantizes");
            let c = q.clone().row_blocks_as_channels().expect("restates");
            assert_eq!(c.encoding.strategy, Strategy::Channel);
            assert_eq!(c.codes, q.codes);
            assert_eq!(c.scales.len(), 6);
            assert_eq!(c.scales[2], q.scales[1]);
            assert_eq!(c.scales[3], q.scales[1]);
            assert_eq!(c.dequantize(), q.dequantize());
        }
        let g = QuantTensor::quantize(
            &w,
            6,
            4,
            Encoding::symmetric(3, Strategy::Group { size: 2 }),
        )
        .expect("quantizes");
        assert_eq!(
            g.row_blocks_as_channels().expect_err("groups along rows"),
            "only row-block scales can be restated per row, not group 2"
        );
        let b = QuantTensor::quantize(
            &w,
            6,
            4,
            Encoding::symmetric(3, Strategy::Block { rows: 2, cols: 2 }),
        )
        .expect("quantizes");
        assert_eq!(
            b.row_blocks_as_channels().expect_err("partial rows"),
            "2x2 scale blocks do not span the 4 columns of a row"
        );
    }

    #[test]
    fn nearest_divisors_surround_the_wanted_size() {
        assert_eq!(nearest_divisors(384, 100), vec![64, 96, 128]);
        assert_eq!(nearest_divisors(7, 3), vec![1, 7]);
    }
}
