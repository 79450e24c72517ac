//! The format layer against its definitions: every encoding decodes within half a step of the input (property
//! tests over seeded random matrices), packing round-trips for every width, and our words, scales and zero points
//! equal compressed-tensors' own for fixed inputs (golden file made by fixtures/make_quant_golden.py).

use compressor_models::quant::{
    pack_codes, packed_words, unpack_codes, Encoding, QuantTensor, Strategy,
};
use compressor_models::rng::Rng;
use compressor_models::DType;

fn random_matrix(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| {
            let v = (rng.next_f64() as f32 - 0.5) * 0.1;
            // Some rows all positive, some with an outlier, one all zero.
            match i / cols {
                0 => v.abs() + 0.01,
                1 if i % cols == 3 => 2.5,
                2 => 0.0,
                _ => v,
            }
        })
        .collect()
}

fn strategies(cols: usize) -> Vec<Strategy> {
    vec![
        Strategy::Tensor,
        Strategy::Channel,
        Strategy::Group { size: cols / 4 },
        Strategy::Group { size: cols },
        Strategy::Block {
            rows: 2,
            cols: cols / 2,
        },
    ]
}

#[test]
fn every_encoding_decodes_within_half_a_step() {
    let mut rng = Rng::new(11);
    let (rows, cols) = (8, 48);
    let w = random_matrix(&mut rng, rows, cols);
    let mut cases = 0;
    for bits in 2..=8u8 {
        for strategy in strategies(cols) {
            for symmetric in [true, false] {
                for scale_dtype in [DType::F32, DType::F16, DType::BF16] {
                    for pow2_scales in [false, true] {
                        let e = Encoding {
                            bits,
                            symmetric,
                            strategy,
                            scale_dtype,
                            pow2_scales,
                        };
                        let q = QuantTensor::quantize(&w, rows, cols, e).expect("fits");
                        let d = q.dequantize();
                        let [_, sc] = strategy.scale_shape(rows, cols);
                        for r in 0..rows {
                            for c in 0..cols {
                                let k = match strategy {
                                    Strategy::Tensor => 0,
                                    Strategy::Channel => r,
                                    Strategy::Group { size } => r * sc + c / size,
                                    Strategy::Block { rows: br, cols: bc } => {
                                        (r / br) * sc + c / bc
                                    }
                                };
                                let s = q.scales[k];
                                let err = (w[r * cols + c] - d[r * cols + c]).abs();
                                assert!(
                                    // Half a step, plus float rounding of w / s and q * s.
                                    err <= 0.5 * s + 4.0 * f32::EPSILON * w[r * cols + c].abs(),
                                    "{e:?} ({r},{c}): |{} - {}| = {err} > half of step {s}",
                                    w[r * cols + c],
                                    d[r * cols + c]
                                );
                                let code = i32::from(q.codes[r * cols + c]);
                                assert!((e.qmin()..=e.qmax()).contains(&code));
                            }
                        }
                        if pow2_scales {
                            assert!(q.scales.iter().all(|s| s.log2().fract() == 0.0), "{e:?}");
                        }
                        if scale_dtype == DType::F16 {
                            assert!(q
                                .scales
                                .iter()
                                .all(|&s| half::f16::from_f32(s).to_f32() == s));
                        }
                        // Stored parts round-trip exactly.
                        let zp = q.packed_zero_points();
                        let back = QuantTensor::from_packed(
                            e,
                            rows,
                            cols,
                            &q.packed(),
                            q.scales.clone(),
                            (!symmetric).then_some(zp.as_slice()),
                        )
                        .expect("parts agree");
                        assert_eq!(back, q);
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 7 * 5 * 2 * 3 * 2);
}

#[test]
fn packing_round_trips_for_every_width_and_length() {
    let mut rng = Rng::new(5);
    for bits in 1..=8u8 {
        for n in [1usize, 7, 31, 32, 33, 100] {
            let half = 1i64 << (bits - 1);
            let codes: Vec<i8> = (0..n)
                .map(|_| (rng.below(1usize << bits) as i64 - half) as i8)
                .collect();
            let mut words = Vec::new();
            pack_codes(&codes, bits, &mut words);
            assert_eq!(words.len(), packed_words(n, bits));
            let mut back = Vec::new();
            unpack_codes(&words, bits, n, &mut back);
            assert_eq!(back, codes, "{bits} bits, {n} codes");
        }
    }
}

#[test]
fn our_words_and_scales_equal_compressed_tensors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/quant_golden.json"
    );
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("json");
    let rows = golden["rows"].as_u64().expect("rows") as usize;
    let cols = golden["cols"].as_u64().expect("cols") as usize;
    let w: Vec<f32> = golden["weights"]
        .as_array()
        .expect("weights")
        .iter()
        .map(|v| v.as_f64().expect("number") as f32)
        .collect();
    let ints = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .expect("list")
            .iter()
            .map(|x| x.as_i64().expect("int"))
            .collect()
    };
    let cases = golden["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 12);
    for case in cases {
        let bits = case["bits"].as_u64().expect("bits") as u8;
        let strategy = match case["strategy"].as_str().expect("strategy") {
            "group" => Strategy::Group {
                size: case["group_size"].as_u64().expect("size") as usize,
            },
            "channel" => Strategy::Channel,
            _ => Strategy::Tensor,
        };
        let symmetric = case["symmetric"].as_bool().expect("bool");
        let e = Encoding {
            bits,
            symmetric,
            strategy,
            scale_dtype: DType::F32,
            pow2_scales: false,
        };
        let q = QuantTensor::quantize(&w, rows, cols, e).expect("fits");
        let scales: Vec<f32> = case["scales"]
            .as_array()
            .expect("scales")
            .iter()
            .map(|v| v.as_f64().expect("number") as f32)
            .collect();
        assert_eq!(q.scales, scales, "scales of {e:?}");
        let words: Vec<i64> = q.packed().into_iter().map(i64::from).collect();
        assert_eq!(words, ints(&case["packed"]), "packed words of {e:?}");
        if !symmetric {
            let zp: Vec<i64> = q.zero_points.iter().map(|&z| i64::from(z)).collect();
            assert_eq!(zp, ints(&case["zero_points"]), "zero points of {e:?}");
            let pz: Vec<i64> = q.packed_zero_points().into_iter().map(i64::from).collect();
            assert_eq!(
                pz,
                ints(&case["packed_zero_points"]),
                "packed zero points of {e:?}"
            );
        }
    }
}

#[test]
fn shapes_that_do_not_fit_are_refused_with_nearby_sizes() {
    let e = Encoding::symmetric(4, Strategy::Group { size: 100 });
    assert_eq!(
        e.check(384, 1536).expect_err("100 does not divide 1536"),
        "group size 100 does not divide the input dimension 1536; valid sizes near it: 64, 96, 128"
    );
    let e = Encoding::symmetric(9, Strategy::Channel);
    assert_eq!(
        e.check(4, 4).expect_err("9 bits"),
        "9 bits is outside the supported range 2 to 8"
    );
    let e = Encoding::symmetric(4, Strategy::Block { rows: 5, cols: 4 });
    assert!(e
        .check(8, 8)
        .expect_err("5 rows")
        .starts_with("block rows 5 does not divide the output dimension 8"));
    let q = QuantTensor::quantize(&[0.5; 8], 2, 4, Encoding::symmetric(4, Strategy::Channel))
        .expect("fits");
    let err = QuantTensor::from_packed(q.encoding, 2, 4, &q.packed()[..1], q.scales.clone(), None)
        .expect_err("one word short");
    assert_eq!(
        err,
        "packed codes hold 1 words, a [2, 4] matrix of 4 bits needs [2, 1] = 2"
    );
}
