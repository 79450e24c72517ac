//! The storage forms table (models/src/forms.rs): every row round-trips write -> read -> decode, predicts the bytes
//! it writes, and names the tensor and the problem when its parts do not fit; a checkpoint holding one tensor of
//! every form reopens byte-identically.

use std::collections::{BTreeMap, BTreeSet};

use compressor_models::forms::{split_part, FormError};
use compressor_models::testing::{SplitMix64, TinyBert};
use compressor_models::{
    st, Checkpoint, DType, Encoding, Factor, FactorForm, Form, FormKind, HostTensor, SparsePattern,
    Stored, Strategy,
};

const BASE: &str = "encoder.layer.0.attention.self.query.weight";

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.next_f32() - 0.5).collect()
}

/// Zero out elements so that every group of 4 keeps at most `keep` (and some rows keep fewer).
fn two_four_values(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut v = random(rows * cols, seed);
    for (g, group) in v.chunks_mut(4).enumerate() {
        let drop = [[0, 1], [1, 3], [0, 2], [2, 3]][g % 4];
        group[drop[0]] = 0.0;
        group[drop[1]] = 0.0;
        if g % 5 == 0 {
            group.iter_mut().for_each(|x| *x = 0.0);
        }
        if g % 7 == 0 {
            let first = group.iter().position(|&x| x != 0.0).unwrap_or(0);
            group[first] = 0.0;
        }
    }
    v
}

fn parts_map(parts: &[(String, HostTensor)]) -> BTreeMap<String, HostTensor> {
    parts.iter().cloned().collect()
}

/// Read `base` back from `parts` the way the store does: identify the form from the part names, take quantized
/// encodings from `form`.
fn read_back(
    base: &str,
    parts: &BTreeMap<String, HostTensor>,
    form: Form,
) -> Result<Stored, FormError> {
    let suffixes: BTreeSet<String> = parts
        .keys()
        .filter_map(|n| split_part(n))
        .filter(|(b, _)| *b == base)
        .map(|(_, s)| s.to_string())
        .collect();
    let kind = if suffixes.is_empty() {
        FormKind::Dense
    } else {
        FormKind::identify(&suffixes, false).map_err(|problem| FormError {
            name: base.into(),
            kind: form.kind(),
            problem,
        })?
    };
    assert_eq!(kind, form.kind(), "identified from {suffixes:?}");
    let part = |n: &str| parts.get(n).cloned();
    let encoding = |b: &str| -> Result<(Encoding, String), String> {
        let e = match form {
            Form::Quant { encoding } => Some(encoding),
            Form::LowRank { u, v, .. } => match if b.ends_with("_u") { u } else { v } {
                FactorForm::Quant { encoding } => Some(encoding),
                FactorForm::Dense { .. } => None,
            },
            Form::Sparse { encoding, .. } => encoding,
            _ => None,
        };
        e.map(|e| (e, "test".to_string()))
            .ok_or_else(|| "no encoding".to_string())
    };
    Stored::read(kind, base, &part, &encoding)
}

/// `values` rounded to `dtype`, widened to f64.
fn rounded(values: &[f32], dtype: DType) -> Vec<f64> {
    HostTensor::from_f32(vec![values.len()], values, dtype)
        .and_then(|t| t.to_f32("t"))
        .expect("rounds")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// One tensor of every form, with the values it should decode to (f64 where the decoding is a product).
fn every_form() -> Vec<(&'static str, Stored, Vec<f64>)> {
    let (rows, cols, rank) = (12, 20, 5);
    let mut out = Vec::new();
    let w = random(rows * cols, 1);
    for (label, dtype) in [
        ("dense f32", DType::F32),
        ("dense f16", DType::F16),
        ("dense bf16", DType::BF16),
    ] {
        let t = HostTensor::from_f32(vec![rows, cols], &w, dtype).expect("tensor");
        let expect = t
            .to_f32("w")
            .expect("f32")
            .iter()
            .map(|&x| x.into())
            .collect();
        out.push((label, Stored::Dense(t), expect));
    }
    for (label, e) in [
        (
            "quant 4-bit group 4",
            Encoding::symmetric(4, Strategy::Group { size: 4 }),
        ),
        (
            "quant 3-bit asymmetric channel",
            Encoding {
                symmetric: false,
                ..Encoding::symmetric(3, Strategy::Channel)
            },
        ),
    ] {
        let q = compressor_models::QuantTensor::quantize(&w, rows, cols, e).expect("quantizes");
        let expect = q.dequantize().iter().map(|&x| x.into()).collect();
        out.push((label, Stored::Quant(q.into()), expect));
    }
    let u = random(rows * rank, 2);
    let v = random(rank * cols, 3);
    let dense32 = FactorForm::Dense { dtype: DType::F32 };
    let dense16 = FactorForm::Dense { dtype: DType::F16 };
    let q4 = FactorForm::Quant {
        encoding: Encoding::symmetric(4, Strategy::Channel),
    };
    let q8 = FactorForm::Quant {
        encoding: Encoding::symmetric(8, Strategy::Group { size: 5 }),
    };
    for (label, fu, fv) in [
        ("low-rank f32", dense32, dense32),
        ("low-rank f16", dense16, dense16),
        ("low-rank 4-bit u, f32 v", q4, dense32),
        ("low-rank 4-bit u, 8-bit v", q4, q8),
    ] {
        let fu = Factor::from_f32(&u, rows, rank, fu).expect("u");
        let fv = Factor::from_f32(&v, rank, cols, fv).expect("v");
        let (du, dv) = (fu.to_f32("u").expect("u"), fv.to_f32("v").expect("v"));
        let mut expect = vec![0f64; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                expect[r * cols + c] = (0..rank)
                    .map(|k| f64::from(du[r * rank + k]) * f64::from(dv[k * cols + c]))
                    .sum();
            }
        }
        out.push((label, Stored::low_rank(fu, fv).expect("low rank"), expect));
    }
    // Bitmask: 20 columns leave 4 padding bits per row; one row entirely zero.
    let mut sparse = w.clone();
    for (i, x) in sparse.iter_mut().enumerate() {
        if i % 3 != 0 || i / cols == 4 {
            *x = 0.0;
        }
    }
    for (label, dtype) in [("bitmask f32", DType::F32), ("bitmask bf16", DType::BF16)] {
        out.push((
            label,
            Stored::sparse_from_dense(&sparse, rows, cols, dtype).expect("sparse"),
            rounded(&sparse, dtype),
        ));
    }
    // 2:4 with 20 columns (10 positions a row: the last byte is half used) and with 16.
    for (label, c, dtype) in [
        ("2:4 f32", cols, DType::F32),
        ("2:4 f16, 16 columns", 16, DType::F16),
    ] {
        let m = two_four_values(rows, c, 4);
        out.push((
            label,
            Stored::two_four(&m, rows, c, dtype).expect("2:4"),
            rounded(&m, dtype),
        ));
    }
    // Sparse with quantized values: the stored values decode as the whole matrix's codes do, the zeros exactly.
    let asymmetric = Encoding {
        symmetric: false,
        ..Encoding::symmetric(3, Strategy::Channel)
    };
    let two_four = two_four_values(rows, cols, 6);
    for (label, pattern, m, e) in [
        (
            "bitmask 4-bit group 4",
            SparsePattern::Bitmask,
            &sparse,
            Encoding::symmetric(4, Strategy::Group { size: 4 }),
        ),
        (
            "bitmask 3-bit asymmetric channel",
            SparsePattern::Bitmask,
            &sparse,
            asymmetric,
        ),
        (
            "2:4 8-bit tensor",
            SparsePattern::TwoFour,
            &two_four,
            Encoding::symmetric(8, Strategy::Tensor),
        ),
        (
            "2:4 3-bit asymmetric channel",
            SparsePattern::TwoFour,
            &two_four,
            asymmetric,
        ),
    ] {
        let q = compressor_models::QuantTensor::quantize(m, rows, cols, e).expect("quantizes");
        let expect: Vec<f64> = q
            .dequantize()
            .iter()
            .zip(m.iter())
            .map(|(&d, &v)| if v == 0.0 { 0.0 } else { d.into() })
            .collect();
        out.push((
            label,
            Stored::sparse_quantized(pattern, m, rows, cols, e).expect("sparse quantized"),
            expect,
        ));
    }
    out
}

#[test]
fn every_form_round_trips_and_predicts_its_bytes() {
    for (label, stored, expect) in every_form() {
        let parts = stored.write_parts(BASE).expect("parts");
        let written: usize = parts.iter().map(|(_, t)| t.nbytes()).sum();
        let form = stored.form();
        let shape = stored.shape();
        assert_eq!(stored.stored_bytes(), written, "{label}: predicted bytes");
        assert_eq!(form.bytes(&shape), written, "{label}: bytes from metadata");
        for (name, _) in &parts {
            assert!(
                name == BASE || split_part(name).is_some_and(|(b, _)| b == BASE),
                "{label}: part `{name}` is not named after `{BASE}`"
            );
        }
        let back = read_back(BASE, &parts_map(&parts), form)
            .unwrap_or_else(|e| panic!("{label}: reads back: {e}"));
        assert_eq!(back.form(), form, "{label}");
        assert_eq!(back.shape(), shape, "{label}");
        let again = back.write_parts(BASE).expect("parts");
        assert_eq!(again.len(), parts.len(), "{label}");
        for ((n1, t1), (n2, t2)) in parts.iter().zip(&again) {
            assert_eq!(n1, n2, "{label}");
            assert_eq!(
                (t1.dtype, &t1.shape),
                (t2.dtype, &t2.shape),
                "{label}: {n1}"
            );
            assert_eq!(t1.bytes(), t2.bytes(), "{label}: {n1} rewritten");
        }
        let decoded = back.decode(BASE).expect("decodes");
        let dense = back.to_dense(BASE).expect("dense");
        assert_eq!(dense.dtype, back.dtype(), "{label}");
        assert_eq!(dense.shape, shape, "{label}");
        assert_eq!(decoded.len(), expect.len(), "{label}");
        match form.kind() {
            FormKind::LowRank => {
                for (i, (&d, &e)) in decoded.iter().zip(&expect).enumerate() {
                    let tol = 1e-6 * e.abs().max(1e-3);
                    assert!(
                        (f64::from(d) - e).abs() <= tol,
                        "{label}: element {i}: {d} vs {e}"
                    );
                }
            }
            _ => {
                // Exact: dense and sparse values, zeros included; quantized codes decode as encoded.
                let expect: Vec<f32> = expect.iter().map(|&e| e as f32).collect();
                assert_eq!(decoded, expect, "{label}");
            }
        }
    }
}

#[test]
fn bytes_follow_the_formulas_of_the_table() {
    let f32 = DType::F32;
    let shape = [384, 1536];
    assert_eq!(Form::Dense { dtype: f32 }.bytes(&shape), 384 * 1536 * 4);
    let e = Encoding::symmetric(4, Strategy::Group { size: 128 });
    assert_eq!(
        Form::Quant { encoding: e }.bytes(&shape),
        384 * 1536 / 2 + 384 * 12 * 4 + 16
    );
    let low = Form::LowRank {
        rank: 64,
        u: FactorForm::Dense { dtype: DType::F16 },
        v: FactorForm::Quant { encoding: e },
    };
    assert_eq!(
        low.bytes(&shape),
        384 * 64 * 2 + (64 * 1536 / 2 + 64 * 12 * 4 + 16)
    );
    let bitmask = Form::Sparse {
        pattern: SparsePattern::Bitmask,
        nnz: 1000,
        dtype: DType::BF16,
        encoding: None,
    };
    assert_eq!(bitmask.bytes(&shape), 384 * 192 + 1000 * 2 + 16);
    let two_four = Form::Sparse {
        pattern: SparsePattern::TwoFour,
        nnz: 384 * 768,
        dtype: DType::F16,
        encoding: None,
    };
    assert_eq!(two_four.bytes(&shape), 384 * 768 * 2 + 384 * 192 + 16);
    assert_eq!(two_four.describe(&shape), "2:4 F16");
    assert_eq!(low.describe(&shape), "low-rank r=64 F16/4-bit");
    assert_eq!(
        Form::Sparse {
            pattern: SparsePattern::Bitmask,
            nnz: 384 * 768,
            dtype: f32,
            encoding: None,
        }
        .describe(&shape),
        "sparse 50.0% F32"
    );
    // Quantized values: packed codes of the stored values, the whole matrix's scales (and zero points).
    let bitmask_q = Form::Sparse {
        pattern: SparsePattern::Bitmask,
        nnz: 1000,
        dtype: f32,
        encoding: Some(e),
    };
    assert_eq!(
        bitmask_q.bytes(&shape),
        384 * 192 + 1000 / 2 + 384 * 12 * 4 + 16
    );
    assert_eq!(bitmask_q.describe(&shape), "sparse 99.8% 4-bit group 128");
    let asym = Encoding {
        symmetric: false,
        ..Encoding::symmetric(3, Strategy::Channel)
    };
    let two_four_q = Form::Sparse {
        pattern: SparsePattern::TwoFour,
        nnz: 384 * 768,
        dtype: f32,
        encoding: Some(asym),
    };
    // 768 codes of 3 bits: 72 words a row; 384 zero points of 3 bits: 36 words.
    assert_eq!(
        two_four_q.bytes(&shape),
        384 * 192 + 384 * 72 * 4 + 384 * 4 + 36 * 4 + 16
    );
    assert_eq!(two_four_q.describe(&shape), "2:4 3-bit channel");
}

fn read_err(parts: &BTreeMap<String, HostTensor>, form: Form) -> String {
    read_back(BASE, parts, form)
        .map(|_| ())
        .expect_err("bad parts")
        .to_string()
}

#[test]
fn bad_parts_are_errors_naming_the_tensor_and_the_problem() {
    let (rows, cols) = (4, 12);
    let mut w = random(rows * cols, 9);
    w[0] = 0.0;
    let sparse = Stored::sparse_from_dense(&w, rows, cols, DType::F32).expect("sparse");
    let form = sparse.form();
    let good = parts_map(&sparse.write_parts(BASE).expect("parts"));
    let values = format!("{BASE}_values");
    let bitmask = format!("{BASE}_bitmask");

    let mut p = good.clone();
    p.insert(
        values.clone(),
        HostTensor::from_f32(vec![46], &[0.5; 46], DType::F32).expect("t"),
    );
    assert_eq!(
        read_err(&p, form),
        format!("tensor `{BASE}` stored sparse (bitmask): `weight_bitmask` keeps 47 values but `weight_values` has shape [46]")
    );

    let mut p = good.clone();
    p.insert(
        bitmask.clone(),
        HostTensor::from_bytes(DType::U8, vec![4, 1], vec![0xff; 4]).expect("t"),
    );
    assert_eq!(
        read_err(&p, form),
        format!("tensor `{BASE}` stored sparse (bitmask): `weight_bitmask` has shape [4, 1], a [4, 12] matrix needs [4, 2]")
    );

    let mut p = good.clone();
    let mut mask = good[&bitmask].bytes().to_vec();
    mask[3] |= 0x80;
    p.insert(
        bitmask.clone(),
        HostTensor::from_bytes(DType::U8, vec![4, 2], mask).expect("t"),
    );
    assert_eq!(
        read_err(&p, form),
        format!("tensor `{BASE}` stored sparse (bitmask): `weight_bitmask` row 1 sets bits past its 12 columns")
    );

    let mut p = good.clone();
    p.remove(&values);
    assert_eq!(
        read_err(&p, form),
        format!("tensor `{BASE}` stored sparse (bitmask): `weight_values` (or `weight_values_packed`) is missing")
    );

    // 2:4: a group naming one position twice.
    let m = two_four_values(rows, 16, 5);
    let tf = Stored::two_four(&m, rows, 16, DType::F32).expect("2:4");
    let mut p = parts_map(&tf.write_parts(BASE).expect("parts"));
    let indices = format!("{BASE}_indices");
    let mut idx = p[&indices].bytes().to_vec();
    // Row 1 (2 bytes a row), group 1: positions 2 and 3 of the first byte's upper half -> both 1.
    idx[2] = (idx[2] & 0x0f) | 0b0101_0000;
    p.insert(
        indices.clone(),
        HostTensor::from_bytes(DType::U8, vec![4, 2], idx).expect("t"),
    );
    assert_eq!(
        read_err(&p, tf.form()),
        format!("tensor `{BASE}` stored sparse (2:4): `weight_indices` row 1, group 1 names positions 1 and 1; 2:4 needs two distinct ascending positions")
    );

    // Low-rank factors of different ranks.
    let u =
        Factor::from_f32(&random(8, 1), 4, 2, FactorForm::Dense { dtype: DType::F32 }).expect("u");
    let v = Factor::from_f32(
        &random(36, 1),
        3,
        12,
        FactorForm::Dense { dtype: DType::F32 },
    )
    .expect("v");
    assert_eq!(
        Stored::low_rank(u.clone(), v)
            .map(|_| ())
            .expect_err("ranks differ"),
        "factors [4, 2] and [3, 12] do not multiply to a matrix of rank 2"
    );
    let low = Stored::low_rank(
        u,
        Factor::from_f32(
            &random(24, 1),
            2,
            12,
            FactorForm::Dense { dtype: DType::F32 },
        )
        .expect("v"),
    )
    .expect("low rank");
    let mut p = parts_map(&low.write_parts(BASE).expect("parts"));
    p.insert(
        format!("{BASE}_v"),
        HostTensor::from_f32(vec![3, 12], &random(36, 1), DType::F32).expect("t"),
    );
    assert_eq!(
        read_err(&p, low.form()),
        format!("tensor `{BASE}` stored low-rank: `weight_u` is [4, 2] and `weight_v` is [3, 12]: they do not share a rank")
    );
    let mut p = parts_map(&low.write_parts(BASE).expect("parts"));
    p.remove(&format!("{BASE}_v"));
    assert_eq!(
        read_err(&p, low.form()),
        format!("tensor `{BASE}` stored low-rank: `weight_v` (or `weight_v_packed`) is missing")
    );

    // Part names that make up no form, or two.
    let set = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        FormKind::identify(&set(&["_shape", "_values"]), false).expect_err("no key part"),
        "`weight_values` is a sparse (bitmask) part without its `weight_bitmask` or `weight_indices`"
    );
    assert_eq!(
        FormKind::identify(&set(&["_v"]), false).expect_err("no u"),
        "`weight_v` is a low-rank part without its `weight_u`"
    );
    assert_eq!(
        FormKind::identify(&set(&["_bitmask", "_packed", "_scale"]), false)
            .expect_err("two forms"),
        "holds parts of two forms: quantized (`weight_packed`) and sparse (bitmask) (`weight_bitmask`)"
    );
    assert_eq!(
        FormKind::identify(&set(&["_bitmask", "_scale", "_values"]), false)
            .expect_err("stray part"),
        "`weight_scale` is not a part of its sparse (bitmask) form (parts: `weight_bitmask`, `weight_values`, `weight_shape`, `weight_values_packed`, `weight_values_scale`, `weight_values_zero_point`)"
    );

    // Quantized sparse values: both value parts, packed codes that do not fit the mask, a missing scale.
    let q = Stored::sparse_quantized(
        SparsePattern::Bitmask,
        &w,
        rows,
        cols,
        Encoding::symmetric(4, Strategy::Channel),
    )
    .expect("sparse quantized");
    let good = parts_map(&q.write_parts(BASE).expect("parts"));
    let packed = format!("{BASE}_values_packed");
    assert_eq!(good[&packed].shape, [6], "47 codes of 4 bits");
    let mut p = good.clone();
    p.insert(
        values.clone(),
        HostTensor::from_f32(vec![47], &[0.5; 47], DType::F32).expect("t"),
    );
    assert_eq!(
        read_err(&p, q.form()),
        format!("tensor `{BASE}` stored sparse (bitmask): holds both `weight_values` and `weight_values_packed`")
    );
    let mut p = good.clone();
    p.insert(
        packed.clone(),
        HostTensor::from_bytes(DType::I32, vec![5], vec![0; 20]).expect("t"),
    );
    assert_eq!(
        read_err(&p, q.form()),
        format!("tensor `{BASE}` stored sparse (bitmask): `weight_values_packed` has shape [5], expected [6] (test: 4 bits, channel)")
    );
    let mut p = good.clone();
    p.remove(&format!("{BASE}_values_scale"));
    assert_eq!(
        read_err(&p, q.form()),
        format!("tensor `{BASE}` stored sparse (bitmask): `weight_values_scale` is missing")
    );
    let mut p = good.clone();
    p.remove(&packed);
    assert_eq!(
        read_err(&p, q.form()),
        format!("tensor `{BASE}` stored sparse (bitmask): `weight_values` (or `weight_values_packed`) is missing")
    );
    // Without an encoding in the metadata the codes cannot be read.
    let dense_form = Form::Sparse {
        pattern: SparsePattern::Bitmask,
        nnz: 47,
        dtype: DType::F32,
        encoding: None,
    };
    assert_eq!(
        read_err(&good, dense_form),
        format!("tensor `{BASE}` stored sparse (bitmask): no encoding")
    );
}

#[test]
fn constructors_refuse_what_the_form_cannot_hold() {
    let mut m = two_four_values(3, 8, 2);
    m[8 + 4..8 + 8].copy_from_slice(&[1.0, 0.0, 2.0, 3.0]);
    assert_eq!(
        Stored::two_four(&m, 3, 8, DType::F32)
            .map(|_| ())
            .expect_err("3 non-zeros"),
        "row 1, group 1 (columns 4..7) holds 3 non-zeros; 2:4 allows at most 2"
    );
    assert_eq!(
        Stored::two_four(&[0.0; 12], 2, 6, DType::F32)
            .map(|_| ())
            .expect_err("6 columns"),
        "2:4 needs a column count divisible by 4, the matrix has 6"
    );
    assert_eq!(
        Stored::sparse_from_dense(&[0.0; 5], 2, 3, DType::F32)
            .map(|_| ())
            .expect_err("size"),
        "5 values do not fill a [2, 3] matrix"
    );
    assert_eq!(
        Stored::sparse_from_dense(&[0.0; 6], 2, 3, DType::I8)
            .map(|_| ())
            .expect_err("dtype"),
        "sparse values cannot be stored as I8"
    );
}

/// The tiny model with one weight of layer 0 in every form; the dense values of every tensor before writing.
fn write_every_form(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    TinyBert::default()
        .write_every_form(dir)
        .expect("writes")
        .into_iter()
        .map(|(n, t)| (n, t.bytes().to_vec()))
        .collect()
}

#[test]
fn a_checkpoint_with_every_form_reopens_byte_identically() {
    let tmp = tempfile::tempdir().expect("tmp");
    let decoded = write_every_form(tmp.path());
    let first = std::fs::read(tmp.path().join("model.safetensors")).expect("read");
    let header = st::parse_header(tmp.path(), &first).expect("header").1;
    for name in [
        "encoder.layer.0.attention.self.query.weight_u",
        "encoder.layer.0.attention.self.query.weight_v",
        "encoder.layer.0.attention.self.key.weight_u_packed",
        "encoder.layer.0.attention.self.key.weight_u_scale",
        "encoder.layer.0.attention.self.key.weight_u_shape",
        "encoder.layer.0.attention.self.key.weight_v_packed",
        "encoder.layer.0.attention.self.value.weight_bitmask",
        "encoder.layer.0.attention.self.value.weight_values",
        "encoder.layer.0.attention.self.value.weight_shape",
        "encoder.layer.0.intermediate.dense.weight_indices",
        "encoder.layer.0.intermediate.dense.weight_values",
        "encoder.layer.0.output.dense.weight_packed",
        "encoder.layer.1.attention.self.value.weight_bitmask",
        "encoder.layer.1.attention.self.value.weight_values_packed",
        "encoder.layer.1.attention.self.value.weight_values_scale",
        "encoder.layer.1.attention.self.value.weight_values_zero_point",
        "encoder.layer.1.intermediate.dense.weight_indices",
        "encoder.layer.1.intermediate.dense.weight_values_packed",
        "encoder.layer.1.intermediate.dense.weight_values_scale",
    ] {
        assert!(header.contains_key(name), "`{name}` is written");
    }
    assert!(!header.contains_key("encoder.layer.0.attention.self.query.weight"));

    let ckpt = Checkpoint::open(tmp.path()).expect("reopens and validates");
    let form = |n: &str| {
        ckpt.store
            .form(&format!("encoder.layer.0.{n}.weight"))
            .expect("form")
    };
    assert!(matches!(
        form("attention.self.query"),
        Form::LowRank { rank: 16, .. }
    ));
    assert!(matches!(
        form("attention.self.key"),
        Form::LowRank {
            rank: 4,
            u: FactorForm::Quant { .. },
            v: FactorForm::Quant { .. }
        }
    ));
    assert_eq!(form("attention.self.value").kind(), FormKind::Bitmask);
    assert_eq!(form("intermediate.dense").kind(), FormKind::TwoFour);
    assert_eq!(form("output.dense").kind(), FormKind::Quant);
    assert_eq!(form("attention.output.dense").kind(), FormKind::Dense);
    let layer1 = |n: &str| {
        ckpt.store
            .form(&format!("encoder.layer.1.{n}.weight"))
            .expect("form")
    };
    assert!(matches!(
        layer1("attention.self.value"),
        Form::Sparse {
            pattern: SparsePattern::Bitmask,
            encoding: Some(Encoding {
                bits: 3,
                symmetric: false,
                ..
            }),
            ..
        }
    ));
    assert!(matches!(
        layer1("intermediate.dense"),
        Form::Sparse {
            pattern: SparsePattern::TwoFour,
            encoding: Some(Encoding { bits: 4, .. }),
            ..
        }
    ));
    // The metadata is consumed on open and rewritten from the forms.
    assert!(!ckpt.store.metadata.contains_key("compressor_forms"));
    for (name, bytes) in &decoded {
        assert_eq!(
            ckpt.store.get(name).expect("get").bytes(),
            &bytes[..],
            "`{name}` decodes as before writing"
        );
    }
    let tensors = ckpt.store.disk_tensors(&ckpt.config).expect("disk tensors");
    let written: usize = tensors.iter().map(|(_, t)| t.nbytes()).sum();
    assert_eq!(
        ckpt.store.total_bytes(),
        written,
        "predicted bytes of the store"
    );
    let again = st::serialize(&tensors, &ckpt.store.disk_metadata(&ckpt.config));
    assert!(
        again == first,
        "open -> disk_tensors -> serialize is byte-identical"
    );

    // Dense export: every form decoded, nothing but plain tensors left.
    let mut store = ckpt.store;
    assert_eq!(store.densify_all().expect("densify"), 7);
    let dense = store.disk_tensors(&ckpt.config).expect("disk tensors");
    assert_eq!(dense.len(), 40);
    assert!(!store
        .disk_metadata(&ckpt.config)
        .contains_key("compressor_forms"));
    for (name, bytes) in &decoded {
        assert_eq!(store.get(name).expect("get").bytes(), &bytes[..], "{name}");
    }
}

#[test]
fn bad_parts_in_a_checkpoint_name_the_file_and_the_tensor() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_every_form(tmp.path());
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    let parsed = st::parse_header(&path, &bytes).expect("header");
    let file = st::SafetensorsFile::open(&path).expect("open");
    let rewrite = |drop: &str, metadata: Option<&str>| {
        let tensors: Vec<(String, HostTensor)> = parsed
            .1
            .keys()
            .filter(|n| n.as_str() != drop)
            .map(|n| (n.clone(), file.tensor(n).expect("tensor")))
            .collect();
        let mut meta = parsed.2.clone();
        if let Some(m) = metadata {
            meta.insert("compressor_forms".into(), m.into());
        }
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::copy(
            tmp.path().join("config.json"),
            dir.path().join("config.json"),
        )
        .expect("config");
        st::write(&dir.path().join("model.safetensors"), &tensors, &meta).expect("write");
        let err = Checkpoint::open(dir.path())
            .map(|_| ())
            .expect_err("bad parts");
        (dir, err.to_string())
    };
    let (dir, err) = rewrite("encoder.layer.0.attention.self.value.weight_bitmask", None);
    assert_eq!(
        err.lines().next().unwrap_or_default(),
        format!(
            "`{}`: tensor `encoder.layer.0.attention.self.value.weight` (unknown form): `weight_values` is a sparse (bitmask) part without its `weight_bitmask` or `weight_indices`",
            dir.path().join("config.json").display()
        )
    );
    let (dir, err) = rewrite("", Some("{}"));
    assert_eq!(
        err.lines().next().unwrap_or_default(),
        format!(
            "`{}`: tensor `encoder.layer.0.attention.self.key.weight` (low-rank): `weight_u` is quantized, but the `compressor_forms` metadata of the safetensors header does not describe its encoding",
            dir.path().join("config.json").display()
        )
    );
    // Quantized sparse values without their encoding in the metadata (the other tensors described as written).
    let mut described: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&parsed.2["compressor_forms"]).expect("metadata");
    described
        .get_mut("encoder.layer.1.attention.self.value.weight")
        .and_then(|f| f.as_object_mut())
        .expect("described")
        .remove("encoding");
    let (dir, err) = rewrite("", Some(&serde_json::to_string(&described).expect("json")));
    assert_eq!(
        err.lines().next().unwrap_or_default(),
        format!(
            "`{}`: tensor `encoder.layer.1.attention.self.value.weight` (sparse (bitmask)): `weight_values` is quantized, but the `compressor_forms` metadata of the safetensors header does not describe its encoding",
            dir.path().join("config.json").display()
        )
    );
}
