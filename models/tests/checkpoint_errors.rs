//! Bad checkpoints: each gets a clear error naming the file, tensor or key (never a panic).

use std::path::Path;

use compressor_models::testing::TinyBert;
use compressor_models::{Checkpoint, DType, HostTensor};

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
            "`{}`: unknown model_type `gpt9`\nhint: supported model types: bert",
            tmp.path().join("config.json").display()
        )
    );
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
    compressor_models::st::write(
        &tmp.path().join("model.safetensors"),
        &tensors,
        &Default::default(),
    )
    .expect("write");
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
    compressor_models::st::write(
        &tmp.path().join("model.safetensors"),
        &tensors,
        &Default::default(),
    )
    .expect("write");
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
