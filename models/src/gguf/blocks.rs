//! ggml tensor types and their block encodings, as `ggml-quants.c` defines them (the `_ref` quantizers):
//!
//! | type | block | bytes | value |
//! |---|---|---|---|
//! | `f32`, `f16` | 1 | 4, 2 | IEEE |
//! | `q8_0` | 32 | 2 + 32 | `d * q`, `d` f16, `q` i8 |
//! | `q4_0` | 32 | 2 + 16 | `d * (n - 8)`, `n` u4: low nibbles hold values 0..16, high nibbles 16..32 |
//! | `q4_1` | 32 | 2 + 2 + 16 | `d * n + m`, `d` and `m` f16 |
//!
//! Besides quantizing floats as ggml does, each block type can be filled from integer codes an artifact already
//! holds ([`encode_codes`]), so a 4-bit or 8-bit artifact keeps its exact codes in llama.cpp.

use half::f16;

/// The ggml tensor types the exporter writes (ids from `ggml.h` / gguf-py `GGMLQuantizationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 8,
}

/// Values per block of the quantized types.
pub const QK: usize = 32;

impl GgmlType {
    pub const ALL: [GgmlType; 5] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
    ];

    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u32 == id)
    }

    /// The lower-case name llama.cpp prints (`q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q8_0 => "q8_0",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 => 1,
            _ => QK,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
            GgmlType::Q8_0 => 2 + QK,
            GgmlType::Q4_0 => 2 + QK / 2,
            GgmlType::Q4_1 => 4 + QK / 2,
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Whether rows of `n` values can be stored in this type (quantized types need whole blocks).
    pub fn fits(self, n: usize) -> bool {
        n.is_multiple_of(self.block_size())
    }

    /// Bytes of one row of `n` values (`n` a multiple of the block size).
    pub fn row_bytes(self, n: usize) -> usize {
        n.div_ceil(self.block_size()) * self.block_bytes()
    }

    /// The bits of a code, for quantized types.
    pub fn bits(self) -> Option<u8> {
        match self {
            GgmlType::Q8_0 => Some(8),
            GgmlType::Q4_0 | GgmlType::Q4_1 => Some(4),
            _ => None,
        }
    }

    /// `general.file_type` (llama.cpp `LLAMA_FTYPE_MOSTLY_*`) of a file whose weights are mostly this type.
    pub fn file_type(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 7,
        }
    }
}

/// Quantize `x` (whole rows, `x.len()` a multiple of the block size) as ggml's reference quantizer does.
pub fn encode(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / ty.block_size() * ty.block_bytes());
    match ty {
        GgmlType::F32 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => {
            for b in x.chunks(QK) {
                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend(b.iter().map(|v| (v * id).round() as i8 as u8));
            }
        }
        GgmlType::Q4_0 => {
            for b in x.chunks(QK) {
                // The value of largest magnitude, with its sign, maps to -8.
                let (mut amax, mut max) = (0f32, 0f32);
                for &v in b {
                    if amax < v.abs() {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
                for j in 0..QK / 2 {
                    out.push(q(b[j]) | (q(b[j + QK / 2]) << 4));
                }
            }
        }
        GgmlType::Q4_1 => {
            for b in x.chunks(QK) {
                let min = b.iter().copied().fold(f32::MAX, f32::min);
                let max = b.iter().copied().fold(-f32::MAX, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                let q = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
                for j in 0..QK / 2 {
                    out.push(q(b[j]) | (q(b[j + QK / 2]) << 4));
                }
            }
        }
    }
    out
}

/// One block's integer codes as an artifact stores them: signed codes in `[qmin, qmax]` of `bits`, decoding to
/// `(code - zero_point) * scale`.
#[derive(Debug, Clone, Copy)]
pub struct CodeBlock<'a> {
    pub codes: &'a [i8],
    pub scale: f32,
    pub zero_point: i8,
}

/// Why a block's codes cannot be stored in a type as they are.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeMismatch {
    /// The codes use more bits than the type holds (or a zero point a symmetric type has not).
    Range,
    /// The scale (or q4_1's offset) is not a half-precision number: stored rounded.
    Scale,
}

/// Fill blocks of `ty` from integer codes; `Err` when some block cannot be stored exactly (then the caller
/// re-quantizes the decoded values, or accepts scales rounded to f16 with `round_scales`).
pub fn encode_codes(
    ty: GgmlType,
    blocks: &[CodeBlock<'_>],
    round_scales: bool,
) -> Result<Vec<u8>, CodeMismatch> {
    let half = |v: f32| -> Result<f16, CodeMismatch> {
        let h = f16::from_f32(v);
        if h.to_f32() == v || round_scales {
            Ok(h)
        } else {
            Err(CodeMismatch::Scale)
        }
    };
    let mut out = Vec::with_capacity(blocks.len() * ty.block_bytes());
    for b in blocks {
        if b.codes.len() != QK {
            return Err(CodeMismatch::Range);
        }
        match ty {
            GgmlType::Q8_0 => {
                if b.zero_point != 0 {
                    return Err(CodeMismatch::Range);
                }
                out.extend_from_slice(&half(b.scale)?.to_le_bytes());
                out.extend(b.codes.iter().map(|&q| q as u8));
            }
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                if b.codes.iter().any(|&q| !(-8..=7).contains(&q)) {
                    return Err(CodeMismatch::Range);
                }
                out.extend_from_slice(&half(b.scale)?.to_le_bytes());
                if ty == GgmlType::Q4_0 {
                    if b.zero_point != 0 {
                        return Err(CodeMismatch::Range);
                    }
                } else {
                    // (q - z) s = (n - 8 - z) s = n s + m with n = q + 8, m = -(8 + z) s.
                    let m = -(8.0 + f32::from(b.zero_point)) * b.scale;
                    out.extend_from_slice(&half(m)?.to_le_bytes());
                }
                let n = |q: i8| (q + 8) as u8;
                for j in 0..QK / 2 {
                    out.push(n(b.codes[j]) | (n(b.codes[j + QK / 2]) << 4));
                }
            }
            GgmlType::F32 | GgmlType::F16 => return Err(CodeMismatch::Range),
        }
    }
    Ok(out)
}

/// Decode `bytes` of type `ty` (whole blocks) to f32, as ggml's `dequantize_row_*` does.
pub fn decode(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let h = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut out = Vec::with_capacity(bytes.len() / ty.block_bytes() * ty.block_size());
    for b in bytes.chunks(ty.block_bytes()) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(h(b)),
            GgmlType::Q8_0 => {
                let d = h(b);
                out.extend(b[2..].iter().map(|&q| f32::from(q as i8) * d));
            }
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                let d = h(b);
                let (m, qs) = if ty == GgmlType::Q4_1 {
                    (h(&b[2..]), &b[4..])
                } else {
                    (0.0, &b[2..])
                };
                let v = |n: u8| {
                    if ty == GgmlType::Q4_1 {
                        f32::from(n) * d + m
                    } else {
                        (i32::from(n) - 8) as f32 * d
                    }
                };
                let lo: Vec<f32> = qs.iter().map(|q| v(q & 0x0f)).collect();
                out.extend(lo);
                out.extend(qs.iter().map(|q| v(q >> 4)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(seed: u32) -> Vec<f32> {
        (0..QK as u32)
            .map(|i| (((i * 37 + seed * 11) % 29) as f32 - 14.0) / 9.0)
            .collect()
    }

    #[test]
    fn q8_0_is_absmax_over_127() {
        let x = block(1);
        let bytes = encode(GgmlType::Q8_0, &x);
        assert_eq!(bytes.len(), 34);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_eq!(
            f16::from_le_bytes([bytes[0], bytes[1]]),
            f16::from_f32(amax / 127.0)
        );
        // ggml multiplies by the inverse of the unrounded scale.
        let id = 1.0 / (amax / 127.0);
        for (j, v) in x.iter().enumerate() {
            assert_eq!(bytes[2 + j] as i8, (v * id).round() as i8, "value {j}");
        }
        let back = decode(GgmlType::Q8_0, &bytes);
        let d = f16::from_f32(amax / 127.0).to_f32();
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= d / 2.0 + 1e-6 + amax * 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn q4_0_puts_the_first_half_in_low_nibbles() {
        // Values -8d..7d at d = 0.5 (the largest magnitude, -4, is negative, so d = -4 / -8 = 0.5).
        let x: Vec<f32> = (0..QK).map(|j| ((j % 16) as f32 - 8.0) * 0.5).collect();
        let bytes = encode(GgmlType::Q4_0, &x);
        assert_eq!(bytes.len(), 18);
        assert_eq!(f16::from_le_bytes([bytes[0], bytes[1]]).to_f32(), 0.5);
        for j in 0..16 {
            assert_eq!(bytes[2 + j] & 0x0f, (j % 16) as u8, "low nibble {j}");
            assert_eq!(bytes[2 + j] >> 4, ((j + 16) % 16) as u8, "high nibble {j}");
        }
        assert_eq!(decode(GgmlType::Q4_0, &bytes), x);
    }

    #[test]
    fn q4_1_spans_min_to_max() {
        let x: Vec<f32> = (0..QK).map(|j| 1.0 + (j % 16) as f32 * 0.25).collect();
        let bytes = encode(GgmlType::Q4_1, &x);
        assert_eq!(bytes.len(), 20);
        assert_eq!(f16::from_le_bytes([bytes[0], bytes[1]]).to_f32(), 0.25);
        assert_eq!(f16::from_le_bytes([bytes[2], bytes[3]]).to_f32(), 1.0);
        assert_eq!(decode(GgmlType::Q4_1, &bytes), x);
    }

    #[test]
    fn codes_are_copied_exactly_or_refused() {
        let codes: Vec<i8> = (0..QK as i32).map(|j| (j % 16 - 8) as i8).collect();
        let b = CodeBlock {
            codes: &codes,
            scale: 0.125,
            zero_point: 0,
        };
        let q40 = encode_codes(GgmlType::Q4_0, &[b], false).expect("ok");
        let want: Vec<f32> = codes.iter().map(|&q| f32::from(q) * 0.125).collect();
        assert_eq!(decode(GgmlType::Q4_0, &q40), want);
        let q80 = encode_codes(GgmlType::Q8_0, &[b], false).expect("ok");
        assert_eq!(decode(GgmlType::Q8_0, &q80), want);
        // Asymmetric codes go to q4_1 with m = -(8 + z) s.
        let a = CodeBlock {
            zero_point: -3,
            ..b
        };
        let q41 = encode_codes(GgmlType::Q4_1, &[a], false).expect("ok");
        let want: Vec<f32> = codes.iter().map(|&q| f32::from(q + 3) * 0.125).collect();
        assert_eq!(decode(GgmlType::Q4_1, &q41), want);
        assert_eq!(
            encode_codes(GgmlType::Q4_0, &[a], false),
            Err(CodeMismatch::Range)
        );
        // 8-bit codes do not fit 4 bits; a scale that is not a half is refused unless rounding is accepted.
        let wide: Vec<i8> = (0..QK as i32).map(|j| (j * 4 - 64) as i8).collect();
        let w = CodeBlock { codes: &wide, ..b };
        assert_eq!(
            encode_codes(GgmlType::Q4_0, &[w], false),
            Err(CodeMismatch::Range)
        );
        let odd = CodeBlock { scale: 0.1, ..b };
        assert_eq!(
            encode_codes(GgmlType::Q8_0, &[odd], false),
            Err(CodeMismatch::Scale)
        );
        assert!(encode_codes(GgmlType::Q8_0, &[odd], true).is_ok());
    }

    #[test]
    fn names_and_sizes() {
        assert_eq!(GgmlType::parse("Q4_1"), Some(GgmlType::Q4_1));
        assert_eq!(GgmlType::parse("q5_k"), None);
        assert_eq!(GgmlType::Q8_0.row_bytes(384), 12 * 34);
        assert!(!GgmlType::Q4_0.fits(48));
        assert_eq!(GgmlType::from_id(8), Some(GgmlType::Q8_0));
    }
}
