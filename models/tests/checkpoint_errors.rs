//! Bad checkpoints: each gets a clear error naming the file, tensor or key (never a panic).

use std::path::Path;

use compressor_models::testing::TinyBert;
use compressor_models::{Checkpoint, DType, HostTensor};

/// Write `tensors` as `dir/model.safetensors`.
fn save_weights(dir: &Path, tensors: &[(String, HostTensor)]) {
    compressor_models::st::write(&dir.join("model.safetensors"), tensors, &Default::default())
        .expect("write");
}

fn open_err(dir: &Path) -> String {
    match Checkpoint::open(dir) {
        Ok(_) => panic!("opening {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn tiny(dir: &Path) {
    TinyBert::default().write(dir).expect("write tiny model");
}

#[test]
fn missing_config_json() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        open_err(tmp.path()),
        format!(
            "`{}` has no config.json\nhint: expected a Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json)",
            tmp.path().display()
        )
    );
}

#[test]
fn config_that_is_not_json() {
    let tmp = tempfile::tempdir().expect("tempdir");
    tiny(tmp.path());
    std::fs::write(tmp.path().join("config.json"), "{\"model_type\": bert}").expect("write");
    assert_eq!(
        open_err(tmp.path()),
        format!(
            "`{}` is not valid JSON: expected value at line 1 column 16",
            tmp.path().join("config.json").display()
        )
    );
}

#[test]
fn unknown_model_type() {
    let tmp = tempfile::tempdir().expect("tempdir");
    tiny(tmp.path());
    let mut c = TinyBert::default().config();
    c["model_type"] = "gpt9".into();
    std::fs::write(tmp.path().join("config.json"), c.to_string()).expect("write");
    assert_eq!(
        open_err(tmp.path()),
        format!(
            "`{}`: unknown model_type `gpt9`\nhint: supported model types: bert, roberta, xlm-roberta, distilbert, mpnet",
            tmp.path().join("config.json").display()
        )
    );
}

#[test]
fn an_architecture_of_another_model_type_names_both() {
    let tmp = tempfile::tempdir().expect("tempdir");
    tiny(tmp.path());
    let mut c = TinyBert::default().config();
    c["architectures"] = serde_json::json!(["RobertaModel"]);
    std::fs::write(tmp.path().join("config.json"), c.to_string()).expect("write");
    assert_eq!(
        open_err(tmp.path()),
        format!(
            "`{}`: architecture `RobertaModel` with model_type `bert` is not supported\nhint: supported architectures: BertModel, BertForSequenceClassification",
            tmp.path().join("config.json").display()
        )
    );
    c["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    std::fs::write(tmp.path().join("config.json"), c.to_string()).expect("write");
    assert!(open_err(tmp.path()).ends_with("hint: supported architectures: BertModel, BertForSequenceClassification, RobertaModel, RobertaForSequenceClassification, XLMRobertaModel, XLMRobertaForSequenceClassification, DistilBertModel, DistilBertForSequenceClassification, MPNetModel, MPNetForSequenceClassification, MPNetForMaskedLM"));
}

#[test]
fn missing_config_key_is_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    tiny(tmp.path());
    let mut c = TinyBert::default().config();
    c.as_object_mut().expect("object").remove("hidden_size");
    std::fs::write(tmp.path().join("config.json"), c.to_string()).expect("write");
    assert_eq!(
        open_err(tmp.path()),
        format!(
            "`{}`: key `hidden_size` is missing",
            tmp.path().join("config.json").display()
        )
    );
}

fn with_weights(bytes: &[u8]) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    tiny(tmp.path());
    let path = tmp.path().join("model.safetensors");
    std::fs::write(&path, bytes).expect("write");
    let p = path.display().to_string();
    (tmp, p)
}

#[test]
fn safetensors_shorter_than_its_header_length() {
    let (tmp, p) = with_weights(&[1, 2, 3]);
    assert_eq!(
        open_err(tmp.path()),
        format!("`{p}`: file is truncated: 3 bytes, shorter than the 8-byte header length")
    );
}

#[test]
fn safetensors_header_length_past_end_of_file() {
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let (tmp, p) = with_weights(&bytes);
    assert_eq!(
        open_err(tmp.path()),
        format!("`{p}`: header length 1000 runs past the end of the file (10 bytes); the file is truncated or not safetensors")
    );
}

#[test]
fn safetensors_malformed_header() {
    let header = b"{\"a\": {\"dtype\": \"F32\",";
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    let (tmp, p) = with_weights(&bytes);
    assert_eq!(
        open_err(tmp.path()),
        format!("`{p}`: malformed header: EOF while parsing a value at line 1 column 22")
    );
}

#[test]
fn safetensors_byte_range_that_does_not_match_shape_and_dtype() {
    let header = br#"{"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 24]);
    let (tmp, p) = with_weights(&bytes);
    assert_eq!(
        open_err(tmp.path()),
        format!("`{p}`: tensor `w`: byte range 0..20 (20 bytes) does not match shape [2, 3] of F32 (24 bytes)")
    );
}

#[test]
fn safetensors_truncated_data() {
    // A real file cut short: the last tensor's byte range runs past the end.
    let tmp = tempfile::tempdir().expect("tempdir");
    tiny(tmp.path());
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("write");
    let err = open_err(tmp.path());
    let prefix = format!("`{}`: tensor `", path.display());
    assert!(err.starts_with(&prefix), "{err}");
    assert!(err.ends_with("; the file is truncated"), "{err}");
}

#[test]
fn tensor_of_the_wrong_shape_for_the_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = TinyBert::default();
    model.write(tmp.path()).expect("write");
    let mut tensors = model.tensors().expect("tensors");
    for (name, t) in tensors.iter_mut() {
        if name == "encoder.layer.1.intermediate.dense.weight" {
            *t = HostTensor::from_f32(vec![31, 16], &[0.0; 31 * 16], DType::F32).expect("tensor");
        }
    }
    tensors.retain(|(n, _)| n != "encoder.layer.0.output.LayerNorm.bias");
    tensors.push((
        "encoder.layer.0.extra.weight".into(),
        HostTensor::from_f32(vec![1], &[0.0], DType::F32).expect("t"),
    ));
    save_weights(tmp.path(), &tensors);
    assert_eq!(
        open_err(tmp.path()),
        "the checkpoint does not match its config:\n  \
         tensor `encoder.layer.1.intermediate.dense.weight` has shape [31, 16], the config implies [32, 16]\n  \
         tensor `encoder.layer.0.output.LayerNorm.bias` is missing\n  \
         tensor `encoder.layer.0.extra.weight` is not part of the architecture"
    );
}

#[test]
fn nan_in_a_weight_is_reported_with_the_tensor_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = TinyBert::default();
    model.write(tmp.path()).expect("write");
    let mut tensors = model.tensors().expect("tensors");
    for (name, t) in tensors.iter_mut() {
        if name == "encoder.layer.0.attention.self.key.bias" {
            let mut v = t.to_f32(name).expect("f32");
            v[3] = f32::INFINITY;
            *t = HostTensor::from_f32(t.shape.clone(), &v, DType::F32).expect("tensor");
        }
    }
    save_weights(tmp.path(), &tensors);
    let ckpt = Checkpoint::open(tmp.path()).expect("metadata is fine");
    assert_eq!(
        ckpt.store.check_finite().expect_err("must fail").to_string(),
        "tensor `encoder.layer.0.attention.self.key.bias` holds 1 non-finite value(s) (first: inf at flat index 3)\nhint: the checkpoint is corrupt or was saved after a diverged training step"
    );
}

#[test]
fn pickle_checkpoints_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    tiny(tmp.path());
    std::fs::remove_file(tmp.path().join("model.safetensors")).expect("rm");
    std::fs::write(tmp.path().join("pytorch_model.bin"), b"PK").expect("write");
    assert_eq!(
        open_err(tmp.path()),
        format!(
            "`{}` holds only a pickle checkpoint (pytorch_model.bin), which compressor does not load because unpickling can run arbitrary code\nhint: convert it to safetensors first, e.g. `AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`",
            tmp.path().display()
        )
    );
}

#[test]
fn prefix_is_detected_and_head_tensors_stay_unprefixed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    TinyBert {
        num_labels: Some(3),
        ..Default::default()
    }
    .write(tmp.path())
    .expect("write");
    let ckpt = Checkpoint::open(tmp.path()).expect("open");
    assert_eq!(ckpt.store.prefix, "bert.");
    assert!(ckpt
        .store
        .contains("encoder.layer.0.attention.self.query.weight"));
    assert!(ckpt.store.contains("classifier.weight"));
    assert_eq!(
        ckpt.store.disk_name(&ckpt.config, "pooler.dense.bias"),
        "bert.pooler.dense.bias"
    );
    assert_eq!(
        ckpt.store.disk_name(&ckpt.config, "classifier.bias"),
        "classifier.bias"
    );
}

#[test]
fn sharded_checkpoints_and_half_precision_load() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = TinyBert {
        dtype: DType::BF16,
        ..Default::default()
    };
    model.write(tmp.path()).expect("write");
    std::fs::remove_file(tmp.path().join("model.safetensors")).expect("rm");
    let tensors = model.tensors().expect("tensors");
    let (a, b) = tensors.split_at(tensors.len() / 2);
    let mut map = serde_json::Map::new();
    for (part, file) in [
        (a, "model-00001-of-00002.safetensors"),
        (b, "model-00002-of-00002.safetensors"),
    ] {
        compressor_models::st::write(&tmp.path().join(file), part, &Default::default())
            .expect("write");
        for (n, _) in part {
            map.insert(n.clone(), file.into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .expect("write");
    let ckpt = Checkpoint::open(tmp.path()).expect("open");
    assert_eq!(ckpt.store.file_paths().len(), 2);
    assert_eq!(
        ckpt.store
            .info("embeddings.word_embeddings.weight")
            .expect("info")
            .0,
        DType::BF16
    );
}

#[test]
fn writer_output_reads_back_identically_and_loads_in_the_safetensors_crate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = TinyBert::default();
    model.write(tmp.path()).expect("write");
    let first = std::fs::read(tmp.path().join("model.safetensors")).expect("read");
    let ckpt = Checkpoint::open(tmp.path()).expect("open");
    let tensors: Vec<_> = ckpt
        .store
        .names()
        .map(|n| (n.to_string(), ckpt.store.get(n).expect("get")))
        .collect();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let again = compressor_models::st::serialize(&tensors, &meta);
    assert_eq!(first, again, "load -> save must give identical bytes");
    let parsed =
        safetensors::SafeTensors::deserialize(&again).expect("reference reader accepts our file");
    let view = parsed
        .tensor("encoder.layer.1.output.dense.weight")
        .expect("tensor");
    assert_eq!(view.shape(), &[16, 32]);
    assert_eq!(
        view.data(),
        ckpt.store
            .get("encoder.layer.1.output.dense.weight")
            .expect("get")
            .bytes()
    );
}

// ---------------------------------------------------------------- issue 13: a reader that is really strict

/// A safetensors file from a header (JSON text) and `data_len` zero bytes of data.
fn raw(header: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    bytes
}

fn header_err(header: &str, data_len: usize) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("x.safetensors");
    std::fs::write(&path, raw(header, data_len)).expect("write");
    let err = compressor_models::st::SafetensorsFile::open(&path)
        .expect_err("the header must be refused")
        .to_string();
    err.strip_prefix(&format!("`{}`: ", path.display()))
        .unwrap_or(&err)
        .to_string()
}

#[test]
fn issue_13_duplicate_names_shared_bytes_gaps_trailing_bytes_and_overflows_are_refused() {
    const ONE: &str = r#"{"dtype": "F32", "shape": [1], "data_offsets""#;
    const TWO: &str = r#"{"dtype": "F32", "shape": [2], "data_offsets""#;
    let cases: &[(String, usize, &str)] = &[
        (
            format!(r#"{{"w": {ONE}: [0, 4]}}, "w": {ONE}: [4, 8]}}}}"#),
            8,
            "malformed header: key `w` appears more than once in one object (a reader would keep one of them and drop the other) at line 1 column 122",
        ),
        (
            format!(r#"{{"__metadata__": {{"format": "pt", "format": "np"}}, "w": {ONE}: [0, 4]}}}}"#),
            4,
            "malformed header: key `format` appears more than once in one object (a reader would keep one of them and drop the other) at line 1 column 49",
        ),
        (
            format!(r#"{{"a": {TWO}: [0, 8]}}, "b": {{"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}}}}"#),
            8,
            "tensors `a` and `b` alias the same bytes 0..8; each tensor needs its own bytes",
        ),
        (
            format!(r#"{{"a": {TWO}: [0, 8]}}, "b": {TWO}: [4, 12]}}}}"#),
            12,
            "tensors `a` (0..8) and `b` (4..12) overlap; each tensor needs its own bytes",
        ),
        (
            format!(r#"{{"a": {ONE}: [0, 4]}}, "b": {ONE}: [8, 12]}}}}"#),
            12,
            "bytes 4..8 of the data belong to no tensor (a gap before `b`)",
        ),
        (
            format!(r#"{{"a": {ONE}: [0, 4]}}}}"#),
            8,
            "the data holds 4 byte(s) after its last tensor `a` (4..8): the data region is shifted, or bytes were appended",
        ),
        (
            format!(r#"{{"a": {ONE}: [4, 8]}}, "b": {ONE}: [4, 8]}}}}"#),
            12,
            "3 layout problems:\n  bytes 0..4 of the data belong to no tensor (a gap before `a`)\n  tensors `a` and `b` alias the same bytes 4..8; each tensor needs its own bytes\n  the data holds 4 byte(s) after its last tensor `a` (8..12): the data region is shifted, or bytes were appended",
        ),
        (
            r#"{"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}}"#.into(),
            0,
            "tensor `a`: shape [4294967296, 4294967296] of F32 holds more bytes than any file can (its size overflows)",
        ),
    ];
    for (header, data_len, expected) in cases {
        assert_eq!(&header_err(header, *data_len), expected, "{header}");
    }
}

#[test]
fn issue_13_a_shifted_data_region_is_a_layout_problem() {
    // Eight bytes slipped in between the header and the data: every tensor would read its neighbour's bytes.
    let tmp = tempfile::tempdir().expect("tempdir");
    tiny(tmp.path());
    let path = tmp.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let data_len = bytes.len() - 8 - n;
    bytes.splice(8 + n..8 + n, [0u8; 8]);
    std::fs::write(&path, bytes).expect("write");
    let err = open_err(tmp.path());
    let expected = format!(
        "`{}`: the data holds 8 byte(s) after its last tensor `pooler.dense.weight` ({data_len}..{}): the data region is shifted, or bytes were appended",
        path.display(),
        data_len + 8
    );
    assert_eq!(err, expected);
}

#[test]
fn issue_13_shapes_whose_size_overflows_are_refused() {
    assert_eq!(
        header_err(
            r#"{"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}}"#,
            0
        ),
        "tensor `a`: shape [4294967296, 4294967296] of F32 holds more bytes than any file can (its size overflows)"
    );
}

#[test]
fn issue_13_layer_counts_are_bounded_by_the_tensors_and_long_lists_capped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    tiny(tmp.path());
    let config_path = tmp.path().join("config.json");
    let mut c = TinyBert::default().config();
    c["num_hidden_layers"] = 1_000_000_000u64.into();
    std::fs::write(&config_path, c.to_string()).expect("write");
    let started = std::time::Instant::now();
    assert_eq!(
        open_err(tmp.path()),
        format!(
            "`{}`: key `num_hidden_layers` is 1000000000, more than the 65536 that compressor supports",
            config_path.display()
        )
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // Within that bound, the checkpoint's tensors bound it.
    let tensors = TinyBert::default().tensors().expect("tensors").len();
    c["num_hidden_layers"] = 10_000u64.into();
    std::fs::write(&config_path, c.to_string()).expect("write");
    assert_eq!(
        open_err(tmp.path()),
        format!(
            "`{}`: key `num_hidden_layers` is 10,000, but the checkpoint holds only {tensors} tensor(s), fewer than one per layer",
            config_path.display()
        )
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // As many layers as tensors passes the bound; the hundreds of missing tensors are listed 20 at most.
    c["num_hidden_layers"] = tensors.into();
    std::fs::write(&config_path, c.to_string()).expect("write");
    let err = open_err(tmp.path());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1 + 20 + 1, "{err}");
    assert_eq!(lines[0], "the checkpoint does not match its config:");
    let missing = (tensors - 2) * 16;
    assert_eq!(
        lines[21],
        format!("  ... and {} more", missing - 20),
        "{err}"
    );
}

#[test]
fn an_mpnet_checkpoint_that_does_not_match_its_family_lists_every_mismatch() {
    // The tiny MPNet fixture with its relative bias table left out, a value projection of the wrong height and a
    // BERT-named tensor MPNet has no place for.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-mpnet");
    let tmp = tempfile::tempdir().expect("tempdir");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture.join(f), tmp.path().join(f)).expect("copy");
    }
    let ckpt = Checkpoint::open(&fixture).expect("open the fixture");
    let mut tensors: Vec<(String, HostTensor)> = ckpt
        .store
        .names()
        .filter(|n| *n != "encoder.relative_attention_bias.weight")
        .map(|n| (n.to_string(), ckpt.store.get(n).expect("tensor")))
        .collect();
    for (name, t) in tensors.iter_mut() {
        if name == "encoder.layer.1.attention.attn.v.weight" {
            *t = HostTensor::from_f32(vec![31, 32], &[0.0; 31 * 32], DType::F32).expect("tensor");
        }
    }
    tensors.push((
        "encoder.layer.0.attention.self.query.weight".into(),
        HostTensor::from_f32(vec![32, 32], &[0.0; 32 * 32], DType::F32).expect("tensor"),
    ));
    save_weights(tmp.path(), &tensors);
    assert_eq!(
        open_err(tmp.path()),
        "the checkpoint does not match its config:\n  \
         tensor `encoder.layer.1.attention.attn.v.weight` has shape [31, 32], the config implies [32, 32]\n  \
         tensor `encoder.relative_attention_bias.weight` is missing\n  \
         tensor `encoder.layer.0.attention.self.query.weight` is not part of the architecture"
    );
}
