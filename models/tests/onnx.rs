//! The ONNX export: protobuf bytes of small messages against hand-computed bytes (the same as onnx 1.23's Python
//! serialisation of the same messages), the graph of a TinyBert (node types per layer, initializer shapes of a
//! per-layer pruned model), the plan's choices, and the `MatMulNBits` packing of known codes (ORT's layout: per
//! row, per block of K, two codes per byte, low nibble first, `code + 8`; scales row-major; zero points two
//! blocks per byte per row).

use std::collections::BTreeMap;

use compressor_models::onnx::bert::{self, NBits};
use compressor_models::onnx::proto::{
    Attribute, DataType, Dim, Message, Model, Node, OpsetId, Tensor, ValueInfo,
};
use compressor_models::onnx::{self, MatrixKind, TensorType};
use compressor_models::testing::TinyBert;
use compressor_models::{Checkpoint, Encoding, ModelConfig, QuantTensor, Strategy, TensorStore};

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn small_messages_encode_to_the_reference_bytes() {
    // tag = field << 3 | wire type; varints little-endian base 128; -1 as int64 takes ten bytes.
    let opset = OpsetId {
        domain: String::new(),
        version: 17,
    };
    assert_eq!(hex(&opset.to_bytes()), "0a 00 10 11");
    let ms = OpsetId {
        domain: "com.microsoft".into(),
        version: 1,
    };
    assert_eq!(
        hex(&ms.to_bytes()),
        "0a 0d 63 6f 6d 2e 6d 69 63 72 6f 73 6f 66 74 10 01"
    );
    // dims (1) = 2, data_type (2) = FLOAT, name (8) = "w", raw_data (9) = 1.0, -2.0 little-endian.
    let t = Tensor::f32("w", &[2], &[1.0, -2.0]);
    assert_eq!(
        hex(&t.to_bytes()),
        "08 02 10 01 42 01 77 4a 08 00 00 80 3f 00 00 00 c0"
    );
    // type (20) is tag 0xa0 0x01; INT = 2, FLOAT = 1, INTS = 7.
    assert_eq!(
        hex(&Attribute::int("axis", -1).to_bytes()),
        "0a 04 61 78 69 73 18 ff ff ff ff ff ff ff ff ff 01 a0 01 02"
    );
    assert_eq!(
        hex(&Attribute::float("alpha", 0.5).to_bytes()),
        "0a 05 61 6c 70 68 61 15 00 00 00 3f a0 01 01"
    );
    assert_eq!(
        hex(&Attribute::ints("perm", &[0, 2, 1, 3]).to_bytes()),
        "0a 04 70 65 72 6d 40 00 40 02 40 01 40 03 a0 01 07"
    );
    let node = Node {
        inputs: vec!["a".into(), "b".into()],
        outputs: vec!["c".into()],
        name: "n".into(),
        op_type: "Add".into(),
        attributes: Vec::new(),
        domain: String::new(),
    };
    assert_eq!(
        hex(&node.to_bytes()),
        "0a 01 61 0a 01 62 12 01 63 1a 01 6e 22 03 41 64 64"
    );
    // name, then TypeProto { tensor_type { elem_type INT64, shape { dim { dim_param "batch" } dim { dim_value 3 } } } }.
    let v = ValueInfo {
        name: "x".into(),
        elem_type: DataType::Int64,
        shape: vec![Dim::Param("batch".into()), Dim::Value(3)],
    };
    assert_eq!(
        hex(&v.to_bytes()),
        "0a 01 78 12 13 0a 11 08 07 12 0d 0a 07 12 05 62 61 74 63 68 0a 02 08 03"
    );
    for m in [&t as &dyn Message, &node, &v, &opset] {
        assert_eq!(m.encoded_len(), m.to_bytes().len());
    }
}

fn tiny() -> (tempfile::TempDir, Checkpoint) {
    let tmp = tempfile::tempdir().expect("tempdir");
    TinyBert {
        seed: 3,
        ..TinyBert::default()
    }
    .write(tmp.path())
    .expect("writes");
    let ckpt = Checkpoint::open(tmp.path()).expect("opens");
    (tmp, ckpt)
}

fn build(config: &ModelConfig, store: &TensorStore, t: TensorType) -> Model {
    let plan = onnx::plan(config, store, t).expect("plans");
    bert::build(config, store, &plan, None).expect("builds")
}

/// Op types of the nodes whose name starts with `prefix`, in graph order.
fn ops(model: &Model, prefix: &str) -> Vec<String> {
    model
        .graph
        .nodes
        .iter()
        .filter(|n| n.name.starts_with(prefix))
        .map(|n| n.op_type.clone())
        .collect()
}

fn init<'a>(model: &'a Model, name: &str) -> &'a Tensor {
    model
        .graph
        .initializers
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no initializer `{name}`"))
}

/// One range, for the store's range selections.
fn span(r: std::ops::Range<usize>) -> Vec<std::ops::Range<usize>> {
    vec![r]
}

fn dims(t: &Tensor) -> Vec<i64> {
    t.dims.clone()
}

#[test]
fn a_uniform_tiny_bert_has_the_reference_graph() {
    let (_tmp, ckpt) = tiny();
    let model = build(&ckpt.config, &ckpt.store, TensorType::F32);
    assert_eq!(model.ir_version, 8);
    assert_eq!(model.opset_import.len(), 1, "no com.microsoft op in f32");
    assert_eq!(model.opset_import[0].version, 17);
    let bytes = model.to_bytes();
    assert_eq!(bytes.len(), model.encoded_len());
    // ir_version (1) = 8, then producer_name (2) = "compressor".
    assert_eq!(hex(&bytes[..4]), "08 08 12 0a");
    assert_eq!(&bytes[4..14], b"compressor");
    let inputs: Vec<&str> = model.graph.inputs.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(inputs, ["input_ids", "attention_mask", "token_type_ids"]);
    let out = &model.graph.outputs[0];
    assert_eq!(out.name, "last_hidden_state");
    assert_eq!(
        out.shape,
        vec![
            Dim::Param("batch".into()),
            Dim::Param("sequence".into()),
            Dim::Value(16)
        ]
    );
    assert_eq!(
        ops(&model, "encoder.layer.0.attention.self"),
        ["MatMul", "Add"].repeat(3)
    );
    assert_eq!(
        ops(&model, "encoder.layer.0.attention/"),
        [
            "Mul",
            "Reshape",
            "Transpose",
            "Reshape",
            "Transpose",
            "Reshape",
            "Transpose",
            "MatMul",
            "Add",
            "Softmax",
            "MatMul",
            "Transpose",
            "Reshape",
            "Add"
        ]
    );
    assert_eq!(
        ops(&model, "encoder.layer.0.intermediate"),
        ["MatMul", "Add", "Div", "Erf", "Add", "Mul", "Mul"]
    );
    assert_eq!(
        ops(&model, "encoder.layer.1.output.LayerNorm"),
        ["LayerNormalization"]
    );
    // Weights are stored [in, out] for MatMul; the attention scale is 1/sqrt(16 / 2).
    assert_eq!(
        dims(init(&model, "encoder.layer.0.intermediate.dense.weight")),
        [16, 32]
    );
    let scale = model
        .graph
        .nodes
        .iter()
        .find(|n| n.name == "encoder.layer.0.attention/Scale")
        .expect("scale node");
    let s = init(&model, &scale.inputs[1]);
    assert_eq!(s.raw, (1.0f32 / 8f32.sqrt()).to_le_bytes());
    let last = model.graph.nodes.last().expect("nodes");
    assert_eq!(last.op_type, "LayerNormalization");
    assert_eq!(last.outputs, ["last_hidden_state"]);
}

/// The tiny model with layer 0 keeping head 1 and 20 FFN neurons, layer 1 without attention.
fn pruned() -> (tempfile::TempDir, ModelConfig, TensorStore) {
    let (tmp, ckpt) = tiny();
    let Checkpoint {
        mut config,
        mut store,
        ..
    } = ckpt;
    let mut layers = config.bert().layers.clone();
    let l0 = |m: &str| format!("encoder.layer.0.{m}");
    for m in ["query", "key", "value"] {
        for p in ["weight", "bias"] {
            store
                .keep_row_ranges(&l0(&format!("attention.self.{m}.{p}")), &span(8..16))
                .expect("slices");
        }
    }
    store
        .keep_col_ranges(&l0("attention.output.dense.weight"), &span(8..16))
        .expect("slices");
    for (t, rows) in [
        ("intermediate.dense.weight", true),
        ("intermediate.dense.bias", true),
        ("output.dense.weight", false),
    ] {
        if rows {
            store.keep_row_ranges(&l0(t), &span(0..20)).expect("slices");
        } else {
            store.keep_col_ranges(&l0(t), &span(0..20)).expect("slices");
        }
    }
    layers[0].heads = vec![1];
    layers[0].intermediate_size = 20;
    for m in ["query", "key", "value"] {
        for p in ["weight", "bias"] {
            store.remove(&format!("encoder.layer.1.attention.self.{m}.{p}"));
        }
    }
    store.remove("encoder.layer.1.attention.output.dense.weight");
    layers[1].heads = Vec::new();
    config.set_layers(layers).expect("valid shapes");
    store.check(&config).expect("store agrees");
    (tmp, config, store)
}

#[test]
fn per_layer_shapes_are_expressed_in_the_graph() {
    let (_tmp, config, store) = pruned();
    let model = build(&config, &store, TensorType::F32);
    let d = |n: &str| dims(init(&model, n));
    assert_eq!(d("encoder.layer.0.attention.self.query.weight"), [16, 8]);
    assert_eq!(d("encoder.layer.0.attention.self.value.weight"), [16, 8]);
    assert_eq!(d("encoder.layer.0.attention.output.dense.weight"), [8, 16]);
    assert_eq!(d("encoder.layer.0.intermediate.dense.weight"), [16, 20]);
    assert_eq!(d("encoder.layer.0.output.dense.weight"), [20, 16]);
    assert_eq!(d("encoder.layer.1.attention.output.dense.bias"), [16]);
    // One head of width 8: the reshape target is [0, 0, 1, 8]; the scale stays 1/sqrt(original head width 8).
    let reshape = model
        .graph
        .nodes
        .iter()
        .find(|n| n.name == "encoder.layer.0.attention/query/Reshape")
        .expect("reshape");
    let target: Vec<i64> = init(&model, &reshape.inputs[1])
        .raw
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    assert_eq!(target, [0, 0, 1, 8]);
    // Layer 1 has no attention: only the output bias is added before its LayerNorm.
    assert!(ops(&model, "encoder.layer.1.attention.self").is_empty());
    assert_eq!(ops(&model, "encoder.layer.1.attention/"), ["Add"]);
    let softmaxes = model
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "Softmax")
        .count();
    assert_eq!(softmaxes, 1);
}

#[test]
fn int8_copies_per_channel_codes_and_emits_the_dynamic_quantization_pattern() {
    let (_tmp, mut ckpt) = tiny();
    let name = "encoder.layer.0.intermediate.dense.weight";
    let w = ckpt.store.get_f32(name, &[32, 16]).expect("weight");
    let q = QuantTensor::quantize(&w, 32, 16, Encoding::symmetric(8, Strategy::Channel))
        .expect("quantizes");
    ckpt.store.set_quant(name, q.clone());
    let g = "encoder.layer.0.output.dense.weight";
    let w = ckpt.store.get_f32(g, &[16, 32]).expect("weight");
    let q4 = QuantTensor::quantize(
        &w,
        16,
        32,
        Encoding::symmetric(4, Strategy::Group { size: 16 }),
    )
    .expect("quantizes");
    ckpt.store.set_quant(g, q4.clone());
    let plan = onnx::plan(&ckpt.config, &ckpt.store, TensorType::Int8).expect("plans");
    let m = plan.get(name, None).expect("planned");
    assert_eq!((m.kind, m.copied), (MatrixKind::Int8, true));
    let m = plan.get(g, None).expect("planned");
    assert_eq!((m.kind, m.copied), (MatrixKind::Int8, false));
    assert_eq!(
        m.note.as_deref(),
        Some("re-quantized to int8 per channel: its 4-bit codes have group 16 scales, not one per output channel")
    );
    let model = bert::build(&ckpt.config, &ckpt.store, &plan, None).expect("builds");
    assert_eq!(
        ops(&model, "encoder.layer.0.intermediate.dense.weight/"),
        [
            "DynamicQuantizeLinear",
            "MatMulInteger",
            "Cast",
            "Mul",
            "Mul"
        ]
    );
    let codes = init(&model, &format!("{name}_quantized"));
    assert_eq!(codes.data_type, DataType::Int8);
    assert_eq!(codes.dims, [16, 32]);
    // Transposed: element (in c, out r) is code (r, c).
    for (r, c) in [(0, 0), (5, 3), (31, 15)] {
        assert_eq!(codes.raw[c * 32 + r] as i8, q.codes[r * 16 + c]);
    }
    let scales = init(&model, &format!("{name}_scale"));
    let s: Vec<f32> = scales
        .raw
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    assert_eq!(s, q.scales);
    let zp = init(&model, &format!("{name}_zero_point"));
    assert_eq!(
        (zp.data_type, zp.raw.clone()),
        (DataType::Int8, vec![0u8; 32])
    );

    // int8-weights: the same codes and scales, decoded in the graph, then a float MatMul (no activation
    // quantization); the word table becomes int8 codes with one scale per row.
    let plan8w = onnx::plan(&ckpt.config, &ckpt.store, TensorType::Int8Weights).expect("plans");
    let m = plan8w.get(name, None).expect("planned");
    assert_eq!((m.kind, m.copied), (MatrixKind::Int8Weights, true));
    let model8w = bert::build(&ckpt.config, &ckpt.store, &plan8w, None).expect("builds");
    assert_eq!(
        ops(&model8w, "encoder.layer.0.intermediate.dense.weight/"),
        ["DequantizeLinear", "MatMul"]
    );
    assert_eq!(init(&model8w, &format!("{name}_quantized")).raw, codes.raw);
    assert_eq!(init(&model8w, &format!("{name}_scale")).raw, scales.raw);
    assert_eq!(
        ops(&model8w, "embeddings/word/"),
        ["Gather", "Cast", "Gather", "Mul", "Reshape"]
    );
    assert_eq!(
        dims(init(&model8w, "embeddings.word_embeddings.weight_codes")),
        [64, 1, 16]
    );

    // int4 copies the 4-bit group-16 codes; auto takes int8 for 8 bits and int4 for 4 bits, f32 for floats.
    let plan4 = onnx::plan(&ckpt.config, &ckpt.store, TensorType::Int4).expect("plans");
    let m = plan4.get(g, None).expect("planned");
    assert_eq!((m.kind, m.copied), (MatrixKind::Int4 { block: 16 }, true));
    let m = plan4.get(name, None).expect("planned");
    assert_eq!((m.kind, m.copied), (MatrixKind::Int4 { block: 32 }, false));
    let auto = onnx::plan(&ckpt.config, &ckpt.store, TensorType::Auto).expect("plans");
    let kinds: BTreeMap<&str, (MatrixKind, bool)> = auto
        .matrices
        .iter()
        .map(|m| (m.weight.as_str(), (m.kind, m.copied)))
        .collect();
    assert_eq!(kinds[name], (MatrixKind::Int8, true));
    assert_eq!(kinds[g], (MatrixKind::Int4 { block: 16 }, true));
    assert_eq!(
        kinds["encoder.layer.1.attention.self.query.weight"],
        (MatrixKind::F32, false)
    );
    let model4 = bert::build(&ckpt.config, &ckpt.store, &plan4, None).expect("builds");
    assert_eq!(model4.opset_import[1].domain, "com.microsoft");
    let node = model4
        .graph
        .nodes
        .iter()
        .find(|n| n.op_type == "MatMulNBits" && n.name.starts_with(g))
        .expect("MatMulNBits");
    assert_eq!(node.domain, "com.microsoft");
    assert_eq!(node.inputs.len(), 3, "symmetric: default zero point 8");
    let attrs: BTreeMap<&str, i64> = node
        .attributes
        .iter()
        .map(|a| match a.value {
            compressor_models::onnx::proto::AttrValue::Int(v) => (a.name.as_str(), v),
            _ => panic!("int attributes"),
        })
        .collect();
    assert_eq!(
        attrs,
        BTreeMap::from([("K", 32), ("N", 16), ("bits", 4), ("block_size", 16)])
    );
    assert_eq!(dims(init(&model4, &format!("{g}_Q4"))), [16, 2, 8]);
    assert_eq!(dims(init(&model4, &format!("{g}_scales"))), [32]);
}

#[test]
fn matmul_nbits_packs_blocks_low_nibble_first() {
    // One row of K = 40 in blocks of 16: 3 blocks, the last padded with the zero code.
    let codes: Vec<i8> = (0..48).map(|j| ((j % 16) as i8) - 8).collect();
    let e = Encoding {
        symmetric: false,
        ..Encoding::symmetric(4, Strategy::Group { size: 16 })
    };
    let scales = vec![0.5, 0.25, 2.0];
    // Zero points -8, 3, -1 packed as compressed-tensors stores them ([1 word, 3 columns]).
    let zp_words: Vec<i32> = [-8i32, 3, -1].iter().map(|z| z + 8).collect();
    let q = QuantTensor::from_codes(e, 1, 48, codes, scales.clone(), Some(&zp_words))
        .expect("valid parts");
    let nb = NBits::pack(&q, 40, 16).expect("packs");
    assert_eq!(nb.k_blocks(), 3);
    // Codes j%16 - 8 are uint4 j%16: bytes 0x10, 0x32, ..., 0xfe per block.
    let block: Vec<u8> = (0..8)
        .map(|i| (2 * i as u8) | ((2 * i as u8 + 1) << 4))
        .collect();
    assert_eq!(&nb.packed[..8], &block[..]);
    assert_eq!(&nb.packed[8..16], &block[..]);
    // Block 2 holds inputs 32..40 (codes 0..8 -> uint 0..7), then 8 padding inputs at the zero point -1 -> 7.
    assert_eq!(&nb.packed[16..20], &block[..4]);
    assert_eq!(&nb.packed[20..24], &[0x77, 0x77, 0x77, 0x77]);
    assert_eq!(nb.scales, scales);
    // Zero points + 8: 0, 11, 7 -> byte 0 = 0 | 11 << 4, byte 1 = 7 | padding 8 << 4.
    assert_eq!(nb.zero_points, Some(vec![0xb0, 0x87]));
    // Symmetric codes carry no zero points (MatMulNBits' default is 8).
    let s = QuantTensor::from_codes(
        Encoding::symmetric(4, Strategy::Group { size: 16 }),
        2,
        16,
        vec![-8; 32],
        vec![1.0, 1.0],
        None,
    )
    .expect("valid parts");
    let nb = NBits::pack(&s, 16, 16).expect("packs");
    assert_eq!(nb.packed, vec![0u8; 16]);
    assert_eq!(nb.zero_points, None);
    // Narrower codes fit: 2-bit codes -2..1 become 6..9.
    let two = QuantTensor::from_codes(
        Encoding::symmetric(2, Strategy::Group { size: 16 }),
        1,
        16,
        [-2, 1].repeat(8),
        vec![1.0],
        None,
    )
    .expect("valid parts");
    assert_eq!(
        NBits::pack(&two, 16, 16).expect("packs").packed,
        vec![0x96; 8]
    );
    assert_eq!(
        NBits::pack(&q, 40, 32)
            .expect_err("groups of 16")
            .to_string(),
        "group 16 scales are not groups of 32"
    );
}

#[test]
fn tensor_types_and_refusals_name_the_valid_choices() {
    assert_eq!(TensorType::parse("int4"), Ok(TensorType::Int4));
    assert_eq!(
        TensorType::parse("fp16").expect_err("unknown"),
        "unknown tensor type `fp16` for ONNX (valid: auto, f32, int8, int8-weights, int4)"
    );
    let (_tmp, config, store) = pruned();
    let plan = onnx::plan(&config, &store, TensorType::Int4).expect("plans");
    // 6 Linears in layer 0, the FFN pair in layer 1.
    assert_eq!(plan.matrices.len(), 8);
    assert_eq!(
        plan.summary(),
        [
            "8 int4 blocks of 32 (re-quantized)".to_string(),
            "word embeddings int8, one scale per row (re-quantized)".to_string()
        ]
    );
    assert_eq!(
        onnx::choose(TensorType::Int4, Some(&Encoding::symmetric(4, Strategy::Group { size: 48 }))),
        (
            MatrixKind::Int4 { block: 32 },
            false,
            Some("re-quantized to int4 in blocks of 32: its group size 48 is not a MatMulNBits block size (a power of two from 16 to 256)".into())
        )
    );
    assert_eq!(
        onnx::choose(
            TensorType::Auto,
            Some(&Encoding::symmetric(4, Strategy::Channel))
        ),
        (MatrixKind::Int8, true, None),
        "4-bit channel codes fit int8 exactly"
    );
}

#[test]
fn an_elastic_model_is_refused_until_cut() {
    use compressor_models::arch::{ElasticRate, ElasticWidths};
    let (_tmp, mut ckpt) = tiny();
    let widths = ElasticWidths {
        intermediate_size: 16,
        qk_head_dim: 4,
        vo_head_dim: 4,
    };
    ckpt.config
        .set_elastic(vec![ElasticRate {
            rate: 0.5,
            layers: vec![widths.clone(), widths],
        }])
        .expect("valid table");
    let err = onnx::plan(&ckpt.config, &ckpt.store, TensorType::Auto)
        .expect_err("elastic")
        .to_string();
    assert_eq!(
        err,
        "the model is elastic (rates 0.5): cut it at one rate first\nhint: pass `--rate R`"
    );
    let cut = compressor_models::elastic::cut(&ckpt.config, &mut ckpt.store, 0.5).expect("cuts");
    let plan = onnx::plan(&cut, &ckpt.store, TensorType::F32).expect("plans once cut");
    let q = plan
        .get("encoder.layer.0.attention.self.query.weight", None)
        .expect("planned");
    assert_eq!((q.rows, q.cols), (8, 16), "2 heads of width 4");
    let model = bert::build(&cut, &ckpt.store, &plan, None).expect("builds");
    assert_eq!(
        dims(init(&model, "encoder.layer.0.intermediate.dense.weight")),
        [16, 16]
    );
}
