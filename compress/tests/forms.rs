//! A model holding one weight in every storage form (models `testing::TinyBert::write_every_form`) end to end:
//! `inspect` shows each form and its bytes, `run` writes the forms back byte-identically (their parts and the
//! `compressor_forms` metadata), and `export --format dense` decodes every form to the values our runtime uses.

mod common;

use common::{stderr, stdout, Workspace};
use compressor_models::testing::TinyBert;
use compressor_models::{st, Checkpoint, FormKind};

#[track_caller]
fn assert_ok(o: &std::process::Output) {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
}

fn every_form_workspace() -> (Workspace, std::collections::BTreeMap<String, Vec<u8>>) {
    let ws = Workspace::new();
    let decoded = TinyBert::default()
        .write_every_form(&ws.join("model"))
        .expect("writes")
        .into_iter()
        .map(|(n, t)| (n, t.bytes().to_vec()))
        .collect();
    (ws, decoded)
}

#[test]
fn inspect_shows_every_form_with_its_bytes() {
    let (ws, _) = every_form_workspace();
    let out = ws.run(&["inspect", "model"]);
    assert_ok(&out);
    let text = stdout(&out);
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("encoder.layer.0.{name}.weight ")))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(
        row("attention.self.query"),
        "encoder.layer.0.attention.self.query.weight attn.q F32 low-rank r=16 F32 [16, 16] 2,048"
    );
    assert_eq!(
        row("attention.self.key"),
        "encoder.layer.0.attention.self.key.weight attn.k int4/int8 low-rank r=4 4-bit/8-bit [16, 16] 240"
    );
    assert_eq!(
        row("attention.self.value"),
        "encoder.layer.0.attention.self.value.weight attn.v F32 sparse 33.6% F32 [16, 16] 728"
    );
    assert_eq!(
        row("intermediate.dense"),
        "encoder.layer.0.intermediate.dense.weight ffn.up BF16 2:4 BF16 [32, 16] 592"
    );
    assert_eq!(
        row("output.dense"),
        "encoder.layer.0.output.dense.weight ffn.down int4 4-bit group 8 [16, 32] 528"
    );
    assert_eq!(
        row("attention.output.dense"),
        "encoder.layer.0.attention.output.dense.weight attn.out F32 F32 [16, 16] 1,024"
    );
    // The JSON keeps the dtype each tensor decodes to beside what its values are stored as.
    let report: serde_json::Value =
        serde_json::from_slice(&ws.run(&["inspect", "model", "--json"]).stdout).expect("json");
    let down = report["tensors"]
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|t| t["name"] == "encoder.layer.0.output.dense.weight")
        })
        .expect("row");
    assert_eq!(
        (&down["dtype"], &down["stored"]),
        (&"F32".into(), &"int4".into())
    );
    // The total is the bytes of the tensors in the file.
    let file = st::SafetensorsFile::open(&ws.join("model/model.safetensors")).expect("opens");
    let on_disk: usize = file.tensors.values().map(|t| t.end - t.begin).sum();
    let report: serde_json::Value =
        serde_json::from_slice(&ws.run(&["inspect", "model", "--json"]).stdout).expect("json");
    assert_eq!(report["total_bytes"], on_disk);
}

#[test]
fn run_keeps_every_form_and_export_dense_decodes_it() {
    let (ws, decoded) = every_form_workspace();
    // A pass that changes one dense Linear only: the forms go through the artifact writer unchanged.
    ws.write(
        "pipeline.toml",
        "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"cast\"\ndtype = \"f16\"\nselect = { layers = [1], roles = [\"attn.out\"] }\n\n[output]\ndir = \"out\"\n",
    );
    assert_ok(&ws.run(&["run", "pipeline.toml"]));
    let input = st::SafetensorsFile::open(&ws.join("model/model.safetensors")).expect("input");
    let output = st::SafetensorsFile::open(&ws.join("out/model.safetensors")).expect("output");
    assert_eq!(
        input.metadata.get("compressor_forms"),
        output.metadata.get("compressor_forms")
    );
    for (name, info) in &input.tensors {
        if !name.starts_with("encoder.layer.1.attention.output.dense.") {
            let a = input.tensor(name).expect("in");
            let b = output.tensor(name).expect("out");
            assert_eq!((a.dtype, &a.shape), (b.dtype, &b.shape), "{name}");
            assert_eq!(a.bytes(), b.bytes(), "{name}");
        } else {
            assert!(output.tensors.contains_key(name), "{name} ({info:?})");
        }
    }
    let artifact = Checkpoint::open(&ws.join("out")).expect("artifact");
    assert_eq!(
        artifact
            .store
            .form("encoder.layer.0.attention.self.key.weight")
            .map(|f| f.kind()),
        Some(FormKind::LowRank)
    );

    let o = ws.run(&["export", "model", "--output", "dense"]);
    assert_ok(&o);
    assert_eq!(
        stderr(&o).lines().last(),
        Some("wrote `dense`: 7 tensors decoded to dense, 24,512 tensor bytes")
    );
    let dense = Checkpoint::open(&ws.join("dense")).expect("dense");
    assert!(!dense.store.metadata.contains_key("compressor_forms"));
    let file = st::SafetensorsFile::open(&ws.join("dense/model.safetensors")).expect("dense");
    assert!(!file.metadata.contains_key("compressor_forms"));
    assert_eq!(file.tensors.len(), 40, "plain tensors only");
    for (name, bytes) in &decoded {
        assert_eq!(
            dense.store.form(name).map(|f| f.kind()),
            Some(FormKind::Dense)
        );
        assert_eq!(
            dense.store.get(name).expect("get").bytes(),
            &bytes[..],
            "{name}"
        );
    }
}

#[test]
fn the_architecture_lists_the_low_rank_linears_and_passes_respect_them() {
    let (ws, _) = every_form_workspace();
    let model = Checkpoint::open(&ws.join("model")).expect("model");
    let ranks = model.config.low_rank_weights();
    assert_eq!(
        ranks.into_iter().collect::<Vec<_>>(),
        [
            ("encoder.layer.0.attention.self.key.weight".to_string(), 4),
            (
                "encoder.layer.0.attention.self.query.weight".to_string(),
                16
            ),
        ]
    );
    // Pruning FFN neurons slices the FFN Linears only: the factored attention Linears stay factored, and the
    // artifact's config still says so.
    ws.write(
        "prune.toml",
        "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"prune\"\ntarget = 0.1\nstructures = [\"neurons\"]\nallocation = \"uniform\"\n\n[output]\ndir = \"pruned\"\n",
    );
    assert_ok(&ws.run(&["run", "prune.toml"]));
    let pruned = Checkpoint::open(&ws.join("pruned")).expect("pruned");
    assert_eq!(pruned.config.low_rank_weights().len(), 2);
    assert_eq!(
        pruned
            .store
            .form("encoder.layer.0.attention.self.key.weight")
            .map(|f| f.kind()),
        Some(FormKind::LowRank)
    );
    // A quantization pass does not silently multiply factors out.
    ws.write(
        "quant.toml",
        "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"blockwise-quant\"\n\n[output]\ndir = \"quant\"\n",
    );
    let o = ws.run(&["plan", "quant.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("selects tensors that are stored low-rank (two factors): encoder.layer.0.attention.self.key.weight, encoder.layer.0.attention.self.query.weight"),
        "{}",
        stderr(&o)
    );
    // The dense export multiplies the factors out and describes a plain BERT.
    assert_ok(&ws.run(&["export", "model", "--output", "dense"]));
    let dense = Checkpoint::open(&ws.join("dense")).expect("dense");
    assert!(dense.config.bert().is_uniform());
    assert!(!dense.config.raw.contains_key("compressor"));
}

#[test]
fn quantizing_a_sparse_model_keeps_it_sparse_with_the_planned_bytes() {
    let blockwise = |rounding: &str| {
        format!("kind = \"blockwise-quant\"\nbits = 4\ngroup-size = 8\nrounding = \"{rounding}\"")
    };
    let hessian = "kind = \"hessian-mp\"\nbits = [2, 4]\naverage-bits = 3.0\ngroup-size = 8\nsensitivity = { runs = 1, max-iterations = 3, batch-size = 4 }\nqat = { steps = 2, lr = 1e-3, batch-size = 4 }".to_string();
    for (pattern, quant, widths, max_error) in [
        ("target = 0.5", blockwise("nearest"), &[4u8][..], 0.2),
        ("pattern = \"2:4\"", blockwise("nearest"), &[4], 0.2),
        ("target = 0.6", blockwise("gptq"), &[4], 0.2),
        ("target = 0.5", hessian, &[2, 4], 0.8),
    ] {
        let ws = Workspace::new();
        TinyBert::default()
            .write(&ws.join("model"))
            .expect("writes");
        let texts: String = (0..40)
            .map(|i| {
                format!("{{\"text\": \"sentence {i} with a few more words than the last one\"}}\n")
            })
            .collect();
        ws.write("texts.jsonl", &texts);
        ws.write(
            "pipeline.toml",
            &format!(
                "[model]\npath = \"model\"\n\n[calibration]\ndata = \"texts.jsonl\"\nsamples = 40\nmax-length = 16\n\n[[pass]]\nkind = \"fisher-prune\"\n{pattern}\nscore = \"magnitude\"\n\n[[pass]]\n{quant}\n\n[output]\ndir = \"out\"\n"
            ),
        );
        let case = format!(
            "{pattern} then {}",
            quant.lines().next().unwrap_or_default()
        );
        if quant.contains("hessian-mp") {
            // Its plan shows the highest width of the menu; the widths are chosen at run time.
            common::ok(&ws.run(&["run", "pipeline.toml"]));
        } else {
            common::run_matching_the_plan(ws.path());
        }
        let artifact = Checkpoint::open(&ws.join("out")).expect("artifact");
        let model = Checkpoint::open(&ws.join("model")).expect("model");
        let file = st::SafetensorsFile::open(&ws.join("out/model.safetensors")).expect("output");
        for layer in 0..2 {
            let pruned_ffn = format!("encoder.layer.{layer}.intermediate.dense.weight");
            for part in ["_values_packed", "_values_scale", "_shape"] {
                assert!(
                    file.tensors.contains_key(&format!("{pruned_ffn}{part}")),
                    "{case}: `{pruned_ffn}{part}` is written"
                );
            }
            assert!(!file.tensors.contains_key(&format!("{pruned_ffn}_packed")));
            let form = artifact.store.form(&pruned_ffn).expect("form");
            assert!(
                matches!(
                    form,
                    compressor_models::Form::Sparse {
                        encoding: Some(compressor_models::Encoding { bits, .. }),
                        ..
                    } if widths.contains(&bits)
                ),
                "{case}: {form:?}"
            );
            // Pruned weights decode to exactly 0; kept ones to their codes, close to the originals.
            let mask = artifact.store.sparse_mask(&pruned_ffn).expect("sparse");
            let decoded = artifact
                .store
                .get(&pruned_ffn)
                .and_then(|t| t.to_f32("w"))
                .expect("decodes");
            let original = model
                .store
                .get(&pruned_ffn)
                .and_then(|t| t.to_f32("w"))
                .expect("original");
            let kept = mask.iter().filter(|k| **k).count();
            assert!(
                kept * 3 < mask.len() * 2,
                "{case}: {kept} of {} kept",
                mask.len()
            );
            let (mut err, mut norm) = (0f64, 0f64);
            for ((d, o), k) in decoded.iter().zip(&original).zip(&mask) {
                if *k {
                    err += f64::from(d - o).powi(2);
                    norm += f64::from(*o).powi(2);
                } else {
                    assert_eq!(*d, 0.0, "{case}: a pruned weight decodes to {d}");
                }
            }
            let relative = (err / norm).sqrt();
            assert!(
                relative < max_error,
                "{case}: kept weights off by {relative}"
            );
        }
        // Attention Linears were dense: they are compressed-tensors codes.
        assert!(file
            .tensors
            .contains_key("encoder.layer.1.attention.self.query.weight_packed"));
    }
}

#[test]
fn cast_keeps_sparse_and_low_rank_forms_and_rounds_their_float_parts() {
    let (ws, decoded) = every_form_workspace();
    ws.write(
        "pipeline.toml",
        "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"cast\"\ndtype = \"f16\"\n\n[output]\ndir = \"out\"\n",
    );
    common::run_matching_the_plan(ws.path());
    let before = Checkpoint::open(&ws.join("model")).expect("model");
    let after = Checkpoint::open(&ws.join("out")).expect("artifact");
    let form = |c: &Checkpoint, n: &str| c.store.form(n).expect("form");
    let l = |layer: usize, m: &str| format!("encoder.layer.{layer}.{m}.weight");
    use compressor_models::{DType, FactorForm, Form};
    // Sparse with float values: the same mask, the values in F16.
    for name in [l(0, "attention.self.value"), l(0, "intermediate.dense")] {
        match (form(&before, &name), form(&after, &name)) {
            (
                Form::Sparse {
                    pattern: p0,
                    nnz: n0,
                    ..
                },
                Form::Sparse {
                    pattern,
                    nnz,
                    dtype,
                    encoding: None,
                },
            ) => {
                assert_eq!((pattern, nnz, dtype), (p0, n0, DType::F16), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        let (b, a) = (
            before
                .store
                .get(&name)
                .and_then(|t| t.to_f32("b"))
                .expect("b"),
            after
                .store
                .get(&name)
                .and_then(|t| t.to_f32("a"))
                .expect("a"),
        );
        for (x, y) in b.iter().zip(&a) {
            assert_eq!(*y, half::f16::from_f32(*x).to_f32(), "{name}");
        }
    }
    // Low-rank: dense factors in F16, quantized factors as they were.
    assert!(matches!(
        form(&after, &l(0, "attention.self.query")),
        Form::LowRank {
            rank: 16,
            u: FactorForm::Dense { dtype: DType::F16 },
            v: FactorForm::Dense { dtype: DType::F16 }
        }
    ));
    // Integer codes stay: quantized, quantized low-rank factors, quantized sparse values.
    for name in [
        l(0, "output.dense"),
        l(0, "attention.self.key"),
        l(1, "attention.self.value"),
        l(1, "intermediate.dense"),
    ] {
        assert_eq!(form(&before, &name), form(&after, &name), "{name}");
        assert_eq!(
            after.store.get(&name).expect("get").bytes(),
            &decoded[&name][..],
            "{name} unchanged"
        );
    }
    assert_eq!(
        form(&after, &l(0, "attention.output.dense")),
        Form::Dense { dtype: DType::F16 }
    );
}
