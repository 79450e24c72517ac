//! ggml tensor types and their block encodings, as `ggml-quants.c` defines them (the `_ref` quantizers):
//!
//! | type | block | bytes | value |
//! |---|---|---|---|
//! | `f32`, `f16` | 1 | 4, 2 | IEEE |
//! | `q8_0` | 32 | 2 + 32 | `d * q`, `d` f16, `q` i8 |
//! | `q4_0` | 32 | 2 + 16 | `d * (n - 8)`, `n` u4: low nibbles hold values 0..16, high nibbles 16..32 |
//! | `q4_1` | 32 | 2 + 2 + 16 | `d * n + m`, `d` and `m` f16 |
//! | `q6_k`, `q5_k`, `q4_k`, `q3_k`, `q2_k` | 256 | 210, 176, 144, 110, 84 | sub-block scales under f16 super-block scales |
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
    Q2K = 10,
    Q3K = 11,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
}

/// Values per block of the quantized types.
pub const QK: usize = 32;
/// Values per super-block of the k-quants.
pub const QK_K: usize = 256;

impl GgmlType {
    pub const ALL: [GgmlType; 10] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q6K,
        GgmlType::Q5K,
        GgmlType::Q4K,
        GgmlType::Q3K,
        GgmlType::Q2K,
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
            GgmlType::Q6K => "q6_k",
            GgmlType::Q5K => "q5_k",
            GgmlType::Q4K => "q4_k",
            GgmlType::Q3K => "q3_k",
            GgmlType::Q2K => "q2_k",
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
            GgmlType::Q6K | GgmlType::Q5K | GgmlType::Q4K | GgmlType::Q3K | GgmlType::Q2K => QK_K,
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
            GgmlType::Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
            GgmlType::Q5K => 2 + 2 + 12 + QK_K / 8 + QK_K / 2,
            GgmlType::Q4K => 2 + 2 + 12 + QK_K / 2,
            GgmlType::Q3K => QK_K / 8 + QK_K / 4 + 12 + 2,
            GgmlType::Q2K => QK_K / 16 + QK_K / 4 + 2 + 2,
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
            GgmlType::Q6K => Some(6),
            GgmlType::Q5K => Some(5),
            GgmlType::Q4K => Some(4),
            GgmlType::Q3K => Some(3),
            GgmlType::Q2K => Some(2),
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
            GgmlType::Q6K => 18,
            GgmlType::Q5K => 16,
            GgmlType::Q4K => 14,
            // LLAMA_FTYPE_MOSTLY_Q3_K_M (the S / M / L mixes differ in which tensors get more bits; every tensor
            // here gets q3_K).
            GgmlType::Q3K => 12,
            GgmlType::Q2K => 10,
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
        GgmlType::Q6K => x.chunks(QK_K).for_each(|b| encode_q6_k(b, &mut out)),
        GgmlType::Q5K => x.chunks(QK_K).for_each(|b| encode_q5_k(b, &mut out)),
        GgmlType::Q4K => x.chunks(QK_K).for_each(|b| encode_q4_k(b, &mut out)),
        GgmlType::Q3K => x.chunks(QK_K).for_each(|b| encode_q3_k(b, &mut out)),
        GgmlType::Q2K => x.chunks(QK_K).for_each(|b| encode_q2_k(b, &mut out)),
    }
    out
}

/// ggml's `nearest_int`: round to nearest, ties to even, through the float-add trick.
fn nearest_int(v: f32) -> i32 {
    let f = v + 12_582_912.0;
    (f.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The value of largest magnitude of a group (ggml's `max` in `make_qx_quants` / `make_q3_quants`); `None` for an
/// all-zero group, whose codes are set to 0.
fn signed_max(x: &[f32], l_out: &mut [i8]) -> Option<f32> {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l_out.iter_mut().for_each(|l| *l = 0);
        return None;
    }
    Some(max)
}

/// ggml's `make_qx_quants` with `rmse_type = 1` (weights `x^2`): codes `L` in `0..2 nmax` of the best scale among
/// 19 candidates around `-nmax / max`; returns the scale.
fn make_qx_quants(x: &[f32], nmax: i32, l_out: &mut [i8]) -> f32 {
    let Some(max) = signed_max(x, l_out) else {
        return 0.0;
    };
    let nmaxf = nmax as f32;
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let l = code(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut iscale = -nmaxf / max;
    for (i, &v) in x.iter().enumerate() {
        l_out[i] = (code(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &v) in x.iter().enumerate() {
                l_out[i] = (code(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Fit each 16-value sub-block of a super-block with `fit` (codes into `l`, returning the scale); returns the scales
/// and the one of largest magnitude (the first such, with its sign), as q6_K and q3_K choose their f16 scale.
fn sub_block_fits(
    x: &[f32],
    l: &mut [i8; QK_K],
    fit: impl Fn(&[f32], &mut [i8]) -> f32,
) -> ([f32; QK_K / 16], f32) {
    let mut scales = [0f32; QK_K / 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for j in 0..QK_K / 16 {
        scales[j] = fit(&x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }
    (scales, max_scale)
}

/// One q6_K super-block (`quantize_row_q6_K_ref`): 16 sub-blocks of 16 values with 8-bit scales under one f16
/// scale, 6-bit codes split into low nibbles (`ql`) and high bit pairs (`qh`).
fn encode_q6_k(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0i8; QK_K];
    let (scales, max_scale) = sub_block_fits(x, &mut l, |x, l| make_qx_quants(x, 32, l));
    let max_abs_scale = max_scale.abs();
    let start = out.len();
    out.resize(start + GgmlType::Q6K.block_bytes(), 0);
    if max_abs_scale < 1e-15 {
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = f16::from_f32(1.0 / iscale);
    let sc: Vec<i8> = scales
        .iter()
        .map(|s| nearest_int(iscale * s).min(127) as i8)
        .collect();
    for j in 0..QK_K / 16 {
        let dj = d.to_f32() * f32::from(sc[j]);
        if dj == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / dj).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    let b = &mut out[start..];
    let (ql, rest) = b.split_at_mut(QK_K / 2);
    let (qh, rest) = rest.split_at_mut(QK_K / 4);
    let (scale_bytes, d_bytes) = rest.split_at_mut(QK_K / 16);
    let lu = |i: usize| l[i] as u8;
    for (half, j) in (0..QK_K).step_by(128).enumerate() {
        let (ql, qh) = (&mut ql[64 * half..], &mut qh[32 * half..]);
        for k in 0..32 {
            ql[k] = (lu(j + k) & 0xf) | ((lu(j + k + 64) & 0xf) << 4);
            ql[k + 32] = (lu(j + k + 32) & 0xf) | ((lu(j + k + 96) & 0xf) << 4);
            qh[k] = (lu(j + k) >> 4)
                | ((lu(j + k + 32) >> 4) << 2)
                | ((lu(j + k + 64) >> 4) << 4)
                | ((lu(j + k + 96) >> 4) << 6);
        }
    }
    for (o, s) in scale_bytes.iter_mut().zip(&sc) {
        *o = *s as u8;
    }
    d_bytes.copy_from_slice(&d.to_le_bytes());
}

/// ggml's `make_qkx2_quants` (codes in `0..=nmax` of a scale and an offset fitted by weighted least squares over
/// `nstep + 1` candidate scales, judged by weighted squared error, or absolute error with `use_mad`); returns
/// `(scale, -min)`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let cost = |d: f32| if use_mad { d.abs() } else { d * d };
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.iter_mut().for_each(|l| *l = 0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * cost(diff);
    }
    let mut aux = vec![0u8; n];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * f32::from(aux[i]) + this_min - x[i];
                cur_error += weights[i] * cost(diff);
            }
            if cur_error < best_error {
                l_out.copy_from_slice(&aux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The 6-bit scale and min of sub-block `j` of a q4_K block's 12 packed bytes (`get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The shared part of ggml's `quantize_row_q4_K_ref` and `quantize_row_q5_K_ref` for one super-block: 8
/// sub-blocks of 32, each fitted by `make_qkx2_quants` (codes `0..=nmax`, weights `sqrt(mean x^2) + |x|`, the
/// search `rmin`, `rdelta`, `nstep`), their scales and mins rounded to 6 bits under two f16 scales, then every code
/// taken again at the rounded scale and min. Returns `(d, dmin, the 12 packed scale bytes, the codes)`.
fn k_quant_fit(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f16, f16, [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; QK_K / 32], [0f32; QK_K / 32]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let mut weights = [0f32; 32];
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().fold(0.0, |a, v| a + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            xs,
            &weights,
            nmax,
            &mut l[32 * j..32 * j + 32],
            rmin,
            rdelta,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        max_scale = max_scale.max(s);
        max_min = max_min.max(m);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..QK_K / 32 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    for j in 0..QK_K / 32 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dj = d.to_f32() * f32::from(sc);
        if dj == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * f32::from(m);
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

/// One q4_K super-block (`quantize_row_q4_K_ref`): 8 sub-blocks of 32 with 6-bit scales and mins under two f16
/// scales, 4-bit codes.
fn encode_q4_k(x: &[f32], out: &mut Vec<u8>) {
    let (d, dmin, packed, l) = k_quant_fit(x, 15, -1.0, 0.1, 20);
    out.extend_from_slice(&d.to_le_bytes());
    out.extend_from_slice(&dmin.to_le_bytes());
    out.extend_from_slice(&packed);
    for j in (0..QK_K).step_by(64) {
        out.extend((0..32).map(|k| l[j + k] | (l[j + k + 32] << 4)));
    }
}

/// One q5_K super-block (`quantize_row_q5_K_ref`): as q4_K with 5-bit codes, whose high bits go to `qh` (bit
/// `2 i` for the first 32 values of the i-th group of 64, bit `2 i + 1` for the second), the low four to `qs`.
fn encode_q5_k(x: &[f32], out: &mut Vec<u8>) {
    let (d, dmin, packed, l) = k_quant_fit(x, 31, -0.5, 0.1, 15);
    out.extend_from_slice(&d.to_le_bytes());
    out.extend_from_slice(&dmin.to_le_bytes());
    out.extend_from_slice(&packed);
    let mut qh = [0u8; QK_K / 8];
    let mut qs = [0u8; QK_K / 2];
    for (g, n) in (0..QK_K).step_by(64).enumerate() {
        for j in 0..32 {
            let (l1, l2) = (l[n + j], l[n + j + 32]);
            qh[j] |= ((l1 >> 4) << (2 * g)) | ((l2 >> 4) << (2 * g + 1));
            qs[32 * g + j] = (l1 & 0xf) | ((l2 & 0xf) << 4);
        }
    }
    out.extend_from_slice(&qh);
    out.extend_from_slice(&qs);
}

/// One q2_K super-block (`quantize_row_q2_K_ref`): 16 sub-blocks of 16, each fitted by `make_qkx2_quants` (codes
/// `0..=3`, weights `|x|`, absolute error), 4-bit scales and mins under two f16 scales, 2-bit codes four to a byte.
fn encode_q2_k(x: &[f32], out: &mut Vec<u8>) {
    const Q4SCALE: f32 = 15.0;
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; QK_K / 16], [0f32; QK_K / 16]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let mut weights = [0f32; 16];
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let (s, m) = make_qkx2_quants(
            xs,
            &weights,
            3,
            &mut l[16 * j..16 * j + 16],
            -0.5,
            0.1,
            15,
            true,
        );
        scales[j] = s;
        mins[j] = m;
        max_scale = max_scale.max(s);
        max_min = max_min.max(m);
    }
    // Scales in the low nibbles, mins in the high ones, each as 4-bit multiples of (largest / 15).
    let mut sc = [0u8; QK_K / 16];
    let mut nibbles = |values: &[f32; QK_K / 16], largest: f32, shift: u32| -> f16 {
        if largest <= 0.0 {
            return f16::from_f32(0.0);
        }
        let iscale = Q4SCALE / largest;
        for (b, v) in sc.iter_mut().zip(values) {
            *b |= (nearest_int(iscale * v) as u8) << shift;
        }
        f16::from_f32(largest / Q4SCALE)
    };
    let d = nibbles(&scales, max_scale, 0);
    let dmin = nibbles(&mins, max_min, 4);
    for j in 0..QK_K / 16 {
        let dj = d.to_f32() * f32::from(sc[j] & 0xf);
        if dj == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * f32::from(sc[j] >> 4);
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / dj).clamp(0, 3) as u8;
        }
    }
    out.extend_from_slice(&sc);
    for j in (0..QK_K).step_by(128) {
        out.extend((0..32).map(|k| {
            l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6)
        }));
    }
    out.extend_from_slice(&d.to_le_bytes());
    out.extend_from_slice(&dmin.to_le_bytes());
}

/// ggml's `make_q3_quants` with `do_rmse`: signed codes in `-nmax..nmax` (stored `+ nmax`) of `-nmax / max`, then
/// up to 5 rounds of moving single codes to whatever lowers the `x^2`-weighted error; returns the scale.
fn make_q3_quants(x: &[f32], nmax: i32, l_out: &mut [i8]) -> f32 {
    let Some(max) = signed_max(x, l_out) else {
        return 0.0;
    };
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (l, &v) in l_out.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *l = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * (q * q) as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for (l, &v) in l_out.iter_mut().zip(x) {
            let w = v * v;
            let li = f32::from(*l);
            let mut slx = sumlx - w * v * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new != i32::from(*l) {
                    slx += w * v * new as f32;
                    sl2 += w * (new * new) as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *l = new as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    l_out.iter_mut().for_each(|l| *l += nmax as i8);
    sumlx / suml2
}

/// The 16 signed 6-bit sub-block scales of a q3_K block (stored `+ 32`: low nibbles in bytes 0..8, high bit pairs in
/// bytes 8..12).
fn q3_k_scales(sc: &[u8]) -> [i8; QK_K / 16] {
    let mut out = [0i8; QK_K / 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { sc[j] & 0xf } else { sc[j - 8] >> 4 };
        let high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

/// One q3_K super-block (`quantize_row_q3_K_ref`): 16 sub-blocks of 16 fitted by `make_q3_quants` (codes
/// `-4..=3`), their scales as signed 6-bit multiples of one f16 scale; the codes' low 2 bits four to a byte, the
/// third bit in `hmask`.
fn encode_q3_k(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0i8; QK_K];
    let (scales, max_scale) = sub_block_fits(x, &mut l, |x, l| make_q3_quants(x, 4, l));
    let mut sc = [0u8; 12];
    let d = if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &s) in scales.iter().enumerate() {
            let q = (nearest_int(iscale * s).clamp(-32, 31) + 32) as u8;
            if j < 8 {
                sc[j] = q & 0xf;
            } else {
                sc[j - 8] |= (q & 0xf) << 4;
            }
            sc[j % 4 + 8] |= (q >> 4) << (2 * (j / 4));
        }
        f16::from_f32(1.0 / iscale)
    } else {
        f16::from_f32(0.0)
    };
    for (j, &s) in q3_k_scales(&sc).iter().enumerate() {
        let dj = d.to_f32() * f32::from(s);
        if dj == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dj).clamp(-4, 3) + 4) as i8;
        }
    }
    // The third bit of value v goes to bit v / 32 of hmask byte v % 32.
    let mut hmask = [0u8; QK_K / 8];
    for (v, q) in l.iter_mut().enumerate() {
        if *q > 3 {
            hmask[v % (QK_K / 8)] |= 1 << (v / (QK_K / 8));
            *q -= 4;
        }
    }
    out.extend_from_slice(&hmask);
    for j in (0..QK_K).step_by(128) {
        out.extend((0..32).map(|k| {
            (l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6)) as u8
        }));
    }
    out.extend_from_slice(&sc);
    out.extend_from_slice(&d.to_le_bytes());
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
            GgmlType::F32
            | GgmlType::F16
            | GgmlType::Q6K
            | GgmlType::Q5K
            | GgmlType::Q4K
            | GgmlType::Q3K
            | GgmlType::Q2K => return Err(CodeMismatch::Range),
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
            GgmlType::Q4K => {
                let (d, dmin) = (h(b), h(&b[2..]));
                let (sc, qs) = (&b[4..16], &b[16..]);
                for (k, q) in qs.chunks(32).enumerate() {
                    let (s1, m1) = scale_min_k4(2 * k, sc);
                    let (s2, m2) = scale_min_k4(2 * k + 1, sc);
                    let (d1, m1) = (d * f32::from(s1), dmin * f32::from(m1));
                    let (d2, m2) = (d * f32::from(s2), dmin * f32::from(m2));
                    out.extend(q.iter().map(|v| d1 * f32::from(v & 0xf) - m1));
                    out.extend(q.iter().map(|v| d2 * f32::from(v >> 4) - m2));
                }
            }
            GgmlType::Q2K => {
                let (sc, qs) = (&b[..QK_K / 16], &b[QK_K / 16..QK_K / 16 + QK_K / 4]);
                let (d, dmin) = (
                    h(&b[QK_K / 16 + QK_K / 4..]),
                    h(&b[QK_K / 16 + QK_K / 4 + 2..]),
                );
                let mut is = 0;
                for q in qs.chunks(32) {
                    for shift in [0, 2, 4, 6] {
                        for half in [&q[..16], &q[16..]] {
                            let (dl, ml) =
                                (d * f32::from(sc[is] & 0xf), dmin * f32::from(sc[is] >> 4));
                            is += 1;
                            out.extend(half.iter().map(|v| dl * f32::from((v >> shift) & 3) - ml));
                        }
                    }
                }
            }
            GgmlType::Q3K => {
                let (hmask, qs) = (&b[..QK_K / 8], &b[QK_K / 8..QK_K / 8 + QK_K / 4]);
                let sc = q3_k_scales(&b[QK_K / 8 + QK_K / 4..QK_K / 8 + QK_K / 4 + 12]);
                let d = h(&b[QK_K / 8 + QK_K / 4 + 12..]);
                for v in 0..QK_K {
                    let (n, rest) = (v / 128, v % 128);
                    let (shift, k) = (2 * (rest / 32), rest % 32);
                    let low = (qs[32 * n + k] >> shift) & 3;
                    let high = if hmask[v % 32] & (1 << (v / 32)) != 0 {
                        0
                    } else {
                        4
                    };
                    out.push(d * f32::from(sc[v / 16]) * f32::from(low as i8 - high));
                }
            }
            GgmlType::Q5K => {
                let (d, dmin) = (h(b), h(&b[2..]));
                let (sc, qh, qs) = (&b[4..16], &b[16..16 + QK_K / 8], &b[16 + QK_K / 8..]);
                for (g, q) in qs.chunks(32).enumerate() {
                    let (s1, m1) = scale_min_k4(2 * g, sc);
                    let (s2, m2) = scale_min_k4(2 * g + 1, sc);
                    let (d1, m1) = (d * f32::from(s1), dmin * f32::from(m1));
                    let (d2, m2) = (d * f32::from(s2), dmin * f32::from(m2));
                    let hi = |j: usize, bit: usize| ((qh[j] >> bit) & 1) << 4;
                    out.extend(
                        q.iter()
                            .enumerate()
                            .map(|(j, v)| d1 * f32::from((v & 0xf) | hi(j, 2 * g)) - m1),
                    );
                    out.extend(
                        q.iter()
                            .enumerate()
                            .map(|(j, v)| d2 * f32::from((v >> 4) | hi(j, 2 * g + 1)) - m2),
                    );
                }
            }
            GgmlType::Q6K => {
                let (ql, qh) = (&b[..QK_K / 2], &b[QK_K / 2..QK_K / 2 + QK_K / 4]);
                let sc = &b[QK_K / 2 + QK_K / 4..QK_K / 2 + QK_K / 4 + QK_K / 16];
                let d = h(&b[QK_K / 2 + QK_K / 4 + QK_K / 16..]);
                let mut y = [0f32; QK_K];
                for half in 0..2 {
                    let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
                    let y = &mut y[128 * half..];
                    for l in 0..32 {
                        let is = l / 16;
                        let q =
                            |lo: u8, hi: u8| f32::from(((lo & 0xf) | ((hi & 3) << 4)) as i8 - 32);
                        let s = |k: usize| d * f32::from(sc[is + k] as i8);
                        y[l] = s(0) * q(ql[l], qh[l]);
                        y[l + 32] = s(2) * q(ql[l + 32], qh[l] >> 2);
                        y[l + 64] = s(4) * q(ql[l] >> 4, qh[l] >> 4);
                        y[l + 96] = s(6) * q(ql[l + 32] >> 4, qh[l] >> 6);
                    }
                }
                out.extend_from_slice(&y);
            }
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
    fn q6_k_holds_16_sub_blocks_under_one_scale() {
        // Sub-blocks of growing range, so that their 8-bit scales differ.
        let x: Vec<f32> = (0..QK_K)
            .map(|i| ((i * 37 % 61) as f32 - 30.0) / 30.0 * (1.0 + (i / 16) as f32 * 0.25))
            .collect();
        let bytes = encode(GgmlType::Q6K, &x);
        assert_eq!(bytes.len(), 210);
        // The largest sub-block scale maps to -128 (its sign follows ggml's choice of the scale's sign).
        let scales: Vec<i8> = bytes[192..208].iter().map(|&b| b as i8).collect();
        assert!(scales.iter().any(|&s| s == -128 || s == 127), "{scales:?}");
        let back = decode(GgmlType::Q6K, &bytes);
        for (ib, (g, w)) in back.chunks(16).zip(x.chunks(16)).enumerate() {
            let amax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            // Half a step of 2 * amax / 63, plus the rounding of the sub-block scale to 8 bits.
            assert!(diff <= amax / 63.0 + amax * 0.02, "sub-block {ib}: {diff}");
        }
        // An all-zero block is all zero bytes.
        assert_eq!(encode(GgmlType::Q6K, &[0.0; QK_K]), vec![0u8; 210]);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-3.5), -4);
        assert_eq!(nearest_int(1.49), 1);
    }

    /// The squared error of `x` quantized to `ty` and decoded.
    fn squared_error(ty: GgmlType, x: &[f32]) -> f32 {
        decode(ty, &encode(ty, x))
            .iter()
            .zip(x)
            .map(|(a, b)| (a - b).powi(2))
            .sum()
    }

    /// One super-block whose sub-blocks differ in range.
    fn k_quant_input() -> Vec<f32> {
        (0..QK_K)
            .map(|i| ((i * 53 % 67) as f32 - 20.0) / 25.0 * (1.0 + (i / 32) as f32 * 0.5))
            .collect()
    }

    /// Every 32-value sub-block decodes within a step of (hi - lo) / levels (the fitted scale and the 6-bit
    /// rounding of scale and min).
    #[track_caller]
    fn assert_within_a_step(back: &[f32], x: &[f32], levels: f32) {
        for (ib, (g, w)) in back.chunks(32).zip(x.chunks(32)).enumerate() {
            let (lo, hi) = w
                .iter()
                .fold((0f32, 0f32), |(l, h), v| (l.min(*v), h.max(*v)));
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= (hi - lo) / levels, "sub-block {ib}: {diff}");
        }
    }

    #[test]
    fn q2_k_holds_16_sub_blocks_of_2_bit_codes_with_4_bit_scales_and_mins() {
        let x = k_quant_input();
        let bytes = encode(GgmlType::Q2K, &x);
        assert_eq!(bytes.len(), 84);
        // 16-value sub-blocks: within a step of their range / 3 (the rounding of 4-bit scale and min included, a
        // step and a half).
        let back = decode(GgmlType::Q2K, &bytes);
        for (ib, (g, w)) in back.chunks(16).zip(x.chunks(16)).enumerate() {
            let (lo, hi) = w
                .iter()
                .fold((0f32, 0f32), |(l, h), v| (l.min(*v), h.max(*v)));
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1.5 * (hi - lo) / 3.0, "sub-block {ib}: {diff}");
        }
        // Layout: value 32 * s + k of a 128-value half sits at bits 2s of byte k; scales low nibble, mins high.
        let mut block = vec![0u8; 84];
        block[0] = 0x01; // sub-block 0: scale 1, min 0
        block[2] = 0x21; // sub-block 2 (values 32..48): scale 1, min 2
        block[16] = 0b0000_1011; // byte 0: value 0 = 3, value 32 = 2
        block[80..82].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        block[82..84].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        let y = decode(GgmlType::Q2K, &block);
        assert_eq!((y[0], y[1], y[32], y[33]), (3.0, 0.0, 2.0 - 1.0, -1.0));
    }

    #[test]
    fn q3_k_holds_16_sub_blocks_of_signed_3_bit_codes_under_6_bit_scales() {
        let x = k_quant_input();
        let bytes = encode(GgmlType::Q3K, &x);
        assert_eq!(bytes.len(), 110);
        // Symmetric codes -4..=3 of each 16-value sub-block: within a step of its largest magnitude / 4, plus the
        // 6-bit rounding of its scale.
        let back = decode(GgmlType::Q3K, &bytes);
        for (ib, (g, w)) in back.chunks(16).zip(x.chunks(16)).enumerate() {
            let amax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= amax / 4.0 + amax * 0.05, "sub-block {ib}: {diff}");
        }
        // 3 bits beat 2: the squared error is lower than q2_K's.
        let err = |ty| squared_error(ty, &x);
        assert!(err(GgmlType::Q3K) < err(GgmlType::Q2K));
        // Layout: hmask (32), qs (64), scales (12), d. Value v's third bit is bit v / 32 of hmask[v % 32] (set:
        // no offset; clear: -4); its low bits sit at bits 2 s of qs[32 n + k] for v = 128 n + 32 s + k.
        let mut block = vec![0u8; 110];
        block[96] = 33 & 0xf; // sub-block 0: stored 33 = scale +1 (low nibble in byte 0...)
        block[104] = (33 >> 4) & 3; // ...its high bits in byte 8, bits 0..2
        block[97] = 31 & 0xf; // sub-block 1: stored 31 = scale -1
        block[105] = (31 >> 4) & 3;
        // Stored scales are offset by 32: a zero byte is -32. Sub-block 2 gets stored 32, scale 0.
        block[106] = (32 >> 4) & 3;
        block[108..110].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block[0] = 0b1; // value 0: third bit set
        block[32] = 0b0000_0011; // qs[0]: value 0 low bits 3, value 32 low bits 0
        block[32 + 16] = 0b10; // qs[16]: value 16 (sub-block 1) low bits 2, third bit clear -> 2 - 4 = -2
        let y = decode(GgmlType::Q3K, &block);
        assert_eq!((y[0], y[1], y[16], y[32]), (1.5, -2.0, 1.0, 0.0));
        // An all-zero block decodes to zeros.
        assert!(decode(GgmlType::Q3K, &encode(GgmlType::Q3K, &[0.0; QK_K]))
            .iter()
            .all(|v| *v == 0.0));
    }

    #[test]
    fn q5_k_puts_the_fifth_bit_in_qh_and_decodes_within_a_step() {
        let x = k_quant_input();
        let bytes = encode(GgmlType::Q5K, &x);
        assert_eq!(bytes.len(), 176);
        assert_within_a_step(&decode(GgmlType::Q5K, &bytes), &x, 31.0);
        // The same fit as q4_K with 31 levels: the 5-bit decode is closer than the 4-bit one.
        let err = |ty| squared_error(ty, &x);
        assert!(err(GgmlType::Q5K) < err(GgmlType::Q4K) / 3.0);
        // A code of 16 or more sets its bit: value j of group g (64 values) is bit 2g of qh[j], value 32 + j bit
        // 2g + 1; the low nibbles are in qs.
        let mut block = vec![0u8; 176];
        block[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        block[4] = 1; // sub-block 0: scale 1, min 0
        block[5] = 1; // sub-block 1: scale 1, min 0
        block[16] = 0b01; // value 0 of group 0 has its high bit
        block[16 + 32] = 0x0f; // value 0: low nibble 15; value 32: low nibble 0
        let y = decode(GgmlType::Q5K, &block);
        assert_eq!((y[0], y[32], y[1]), (31.0, 0.0, 0.0));
        block[16] = 0b10; // now value 32's high bit
        let y = decode(GgmlType::Q5K, &block);
        assert_eq!((y[0], y[32]), (15.0, 16.0));
    }

    #[test]
    fn q4_k_holds_8_sub_blocks_with_6_bit_scales_and_mins() {
        let x = k_quant_input();
        let bytes = encode(GgmlType::Q4K, &x);
        assert_eq!(bytes.len(), 144);
        // The largest sub-block scale and min map to 63.
        let (scales, mins): (Vec<u8>, Vec<u8>) =
            (0..8).map(|j| scale_min_k4(j, &bytes[4..16])).unzip();
        assert!(
            scales.contains(&63) && mins.contains(&63),
            "{scales:?} {mins:?}"
        );
        assert_within_a_step(&decode(GgmlType::Q4K, &bytes), &x, 15.0);
        // 6-bit values above 15 put their high bits in the top of bytes 0..8.
        let mut packed = [0u8; 12];
        packed[0] = 0b1100_0001;
        packed[4] = 0b0100_0010;
        packed[8] = 0x5a;
        assert_eq!(scale_min_k4(0, &packed), (1, 2));
        assert_eq!(
            scale_min_k4(4, &packed),
            (0x0a | (0b11 << 4), 0x05 | (0b01 << 4))
        );
    }

    #[test]
    fn names_and_sizes() {
        assert_eq!(GgmlType::parse("Q4_1"), Some(GgmlType::Q4_1));
        assert_eq!(GgmlType::parse("q5_k"), Some(GgmlType::Q5K));
        assert_eq!(GgmlType::parse("q3_k"), Some(GgmlType::Q3K));
        assert_eq!(GgmlType::parse("iq2_xs"), None);
        assert_eq!(GgmlType::Q3K.row_bytes(768), 3 * 110);
        assert_eq!(GgmlType::from_id(11), Some(GgmlType::Q3K));
        assert_eq!(GgmlType::parse("q2_k"), Some(GgmlType::Q2K));
        assert_eq!(GgmlType::Q2K.row_bytes(1536), 6 * 84);
        assert_eq!(GgmlType::Q5K.row_bytes(1536), 6 * 176);
        assert_eq!(GgmlType::from_id(13), Some(GgmlType::Q5K));
        assert_eq!(GgmlType::parse("Q6_K"), Some(GgmlType::Q6K));
        assert_eq!(GgmlType::Q6K.row_bytes(1536), 6 * 210);
        assert!(!GgmlType::Q6K.fits(384));
        assert_eq!(GgmlType::Q8_0.row_bytes(384), 12 * 34);
        assert!(!GgmlType::Q4_0.fits(48));
        assert_eq!(GgmlType::from_id(8), Some(GgmlType::Q8_0));
    }
}
