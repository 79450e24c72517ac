//! Tiny seeded BERT checkpoints with our runtime's outputs, for `scripts/check_onnx.py` (which runs their ONNX
//! exports in onnxruntime and compares):
//!
//! ```sh
//! cargo run --release -p compressor-models --example onnx_fixtures -- OUT_DIR
//! ```
//!
//! writes `OUT_DIR/tiny` (a plain 3-layer BERT, CLS pooling + normalize) and `OUT_DIR/tiny-shaped` (per-layer
//! shapes: layer 0 keeps heads 1 and 3, 40 FFN neurons and a rank-3 value; layer 1 drops its attention and keeps
//! 24 neurons with 4-bit group-16 and 8-bit channel codes; layer 2 keeps 3 heads narrowed to query/key width 5 and
//! value width 6 with asymmetric 4-bit, 8-bit channel and 4-bit group-8 codes, and drops its FFN; mean pooling +
//! normalize) and `OUT_DIR/tiny-w4` (every Linear in 4-bit groups of 16, layer 1 asymmetric: its `auto` export
//! copies every code, so it must match as the f32 one does; max pooling + normalize), each with `reference.json`: a padded batch (`input_ids`, `attention_mask`, `token_type_ids`), our
//! runtime's `last_hidden_state` `[batch, sequence, hidden]` and `sentence_embedding`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use compressor_models::runtime::{flat, rows, Bert, Cpu};
use compressor_models::testing::{SplitMix64, TinyBert};
use compressor_models::{
    Checkpoint, DType, EncodedBatch, Encoding, Error, Factor, HostTensor, ModelConfig, QuantTensor,
    Result, Stored, Strategy, TensorStore,
};
use serde_json::json;

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .ok_or_else(|| Error::Runtime("usage: onnx_fixtures OUT_DIR".into()))?;
    let out = Path::new(&out);
    let tiny = TinyBert {
        vocab_size: 64,
        hidden_size: 32,
        layers: 3,
        heads: 4,
        intermediate_size: 64,
        max_positions: 32,
        seed: 11,
        ..TinyBert::default()
    };
    let plain = out.join("tiny");
    tiny.write(&plain)?;
    pooling_files(&plain, "pooling_mode_cls_token")?;
    reference(&plain)?;
    let shaped = out.join("tiny-shaped");
    tiny.write(&shaped)?;
    reshape(&shaped)?;
    pooling_files(&shaped, "pooling_mode_mean_tokens")?;
    reference(&shaped)?;
    let w4 = out.join("tiny-w4");
    tiny.write(&w4)?;
    quantize_all(&w4)?;
    pooling_files(&w4, "pooling_mode_max_tokens")?;
    reference(&w4)?;
    println!(
        "wrote {}, {} and {}",
        plain.display(),
        shaped.display(),
        w4.display()
    );
    Ok(())
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
    }
    std::fs::write(path, text).map_err(|e| io(path, e))
}

/// sentence-transformers files: Transformer, Pooling (`mode`), Normalize.
fn pooling_files(dir: &Path, mode: &str) -> Result<()> {
    write_text(
        &dir.join("modules.json"),
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
 {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
 {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
"#,
    )?;
    write_text(
        &dir.join("1_Pooling/config.json"),
        &format!("{{\"word_embedding_dimension\": 32, \"{mode}\": true}}\n"),
    )
}

/// The first `keep` of each `width`-wide block of `blocks`.
fn lead(blocks: &[usize], width: usize, keep: usize) -> Vec<Range<usize>> {
    blocks
        .iter()
        .map(|&j| j * width..j * width + keep)
        .collect()
}

fn quantize(store: &mut TensorStore, name: &str, encoding: Encoding) -> Result<()> {
    let t = store.get(name)?;
    let (r, c) = (t.shape[0], t.shape[1]);
    let q = QuantTensor::quantize(&t.to_f32(name)?, r, c, encoding).map_err(Error::Runtime)?;
    store.set_quant(name, q);
    Ok(())
}

/// Quantize every encoder Linear of `dir`'s model to 4 bits in groups of 16 (layer 1 asymmetric), and the word table.
fn quantize_all(dir: &Path) -> Result<()> {
    let config = ModelConfig::load(dir)?;
    let mut store = TensorStore::open(dir, &config)?;
    for l in 0..config.bert().layers.len() {
        for m in compressor_models::Slot::ALL {
            let e = Encoding {
                symmetric: l != 1,
                ..Encoding::symmetric(4, Strategy::Group { size: 16 })
            };
            let module = config.bert().naming().linear(l, m);
            quantize(&mut store, &format!("{module}.weight"), e)?;
        }
    }
    // The word table in 4-bit groups of 16 too, so that the auto export's int4 table is checked exactly.
    quantize(
        &mut store,
        "embeddings.word_embeddings.weight",
        Encoding::symmetric(4, Strategy::Group { size: 16 }),
    )?;
    compressor_models::testing::save(dir, &config, store)
}

/// Give `dir`'s model the per-layer shapes and stored forms of the module docs.
fn reshape(dir: &Path) -> Result<()> {
    let mut config = ModelConfig::load(dir)?;
    let mut store = TensorStore::open(dir, &config)?;
    let n = |l: usize, m: &str| format!("encoder.layer.{l}.{m}");
    let mut layers = config.bert().layers.clone();
    let hd = 8;

    // Layer 0: heads 1 and 3, 40 neurons, value as a rank-3 product.
    let heads0 = [1, 3];
    for m in ["query", "key", "value"] {
        for p in ["weight", "bias"] {
            store.keep_row_ranges(
                &n(0, &format!("attention.self.{m}.{p}")),
                &lead(&heads0, hd, hd),
            )?;
        }
    }
    store.keep_col_ranges(
        &n(0, "attention.output.dense.weight"),
        &lead(&heads0, hd, hd),
    )?;
    store.keep_row_ranges(&n(0, "intermediate.dense.weight"), &lead(&[0], 40, 40))?;
    store.keep_row_ranges(&n(0, "intermediate.dense.bias"), &lead(&[0], 40, 40))?;
    store.keep_col_ranges(&n(0, "output.dense.weight"), &lead(&[0], 40, 40))?;
    let mut rng = SplitMix64::new(5);
    let mut random = |k: usize| (0..k).map(|_| 0.5 * rng.next_f32()).collect::<Vec<f32>>();
    let dense = |r: usize, c: usize, v: Vec<f32>| -> Result<Factor> {
        Ok(Factor::Dense(HostTensor::from_f32(
            vec![r, c],
            &v,
            DType::F32,
        )?))
    };
    let value = Stored::low_rank(dense(16, 3, random(48))?, dense(3, 32, random(96))?)
        .map_err(Error::Runtime)?;
    store.set_stored(&n(0, "attention.self.value.weight"), value);
    layers[0].heads = heads0.to_vec();
    layers[0].intermediate_size = 40;
    layers[0].low_rank = BTreeMap::from([("attention.self.value".to_string(), 3)]);

    // Layer 1: no attention, 24 neurons in 4-bit groups of 16 and 8-bit channels.
    for m in ["query", "key", "value"] {
        for p in ["weight", "bias"] {
            store.remove(&n(1, &format!("attention.self.{m}.{p}")));
        }
    }
    store.remove(&n(1, "attention.output.dense.weight"));
    store.keep_row_ranges(&n(1, "intermediate.dense.weight"), &lead(&[1], 8, 24))?;
    store.keep_row_ranges(&n(1, "intermediate.dense.bias"), &lead(&[1], 8, 24))?;
    store.keep_col_ranges(&n(1, "output.dense.weight"), &lead(&[1], 8, 24))?;
    quantize(
        &mut store,
        &n(1, "intermediate.dense.weight"),
        Encoding::symmetric(4, Strategy::Group { size: 16 }),
    )?;
    quantize(
        &mut store,
        &n(1, "output.dense.weight"),
        Encoding::symmetric(8, Strategy::Channel),
    )?;
    layers[1].heads = Vec::new();
    layers[1].intermediate_size = 24;

    // Layer 2: heads 0, 1, 2 narrowed to query/key 5 and value 6; no FFN.
    let heads2 = [0, 1, 2];
    for (m, keep) in [("query", 5), ("key", 5), ("value", 6)] {
        for p in ["weight", "bias"] {
            store.keep_row_ranges(
                &n(2, &format!("attention.self.{m}.{p}")),
                &lead(&heads2, hd, keep),
            )?;
        }
    }
    store.keep_col_ranges(
        &n(2, "attention.output.dense.weight"),
        &lead(&heads2, hd, 6),
    )?;
    for t in [
        "intermediate.dense.weight",
        "intermediate.dense.bias",
        "output.dense.weight",
    ] {
        store.remove(&n(2, t));
    }
    quantize(
        &mut store,
        &n(2, "attention.self.query.weight"),
        Encoding {
            symmetric: false,
            ..Encoding::symmetric(4, Strategy::Group { size: 16 })
        },
    )?;
    quantize(
        &mut store,
        &n(2, "attention.self.key.weight"),
        Encoding::symmetric(8, Strategy::Channel),
    )?;
    quantize(
        &mut store,
        &n(2, "attention.output.dense.weight"),
        Encoding::symmetric(4, Strategy::Group { size: 6 }),
    )?;
    layers[2].heads = heads2.to_vec();
    layers[2].qk_head_dim = 5;
    layers[2].vo_head_dim = 6;
    layers[2].intermediate_size = 0;

    config.set_layers(layers)?;
    store.check(&config)?;
    compressor_models::testing::save(dir, &config, store)
}

/// `reference.json`: a padded batch with our runtime's last hidden state and sentence embedding.
fn reference(dir: &Path) -> Result<()> {
    let ckpt = Checkpoint::open(dir)?;
    let model = Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())?;
    let rows_in: Vec<(Vec<i64>, Vec<i64>)> = vec![
        (vec![2, 17, 40, 33, 9, 3], vec![0; 6]),
        (vec![2, 50, 61, 3, 7, 8, 3], vec![0, 0, 0, 0, 1, 1, 1]),
        (vec![2, 5, 6, 7, 8, 9, 10, 11, 12, 63, 3], vec![0; 11]),
    ];
    let batch = EncodedBatch::from_rows(&rows_in, 0);
    let hidden = model.encode(&batch)?;
    let dims = hidden.dims();
    let pooled = rows(model.pool(hidden.clone(), &batch))?;
    let matrix =
        |v: &[i64]| -> Vec<Vec<i64>> { v.chunks(batch.seq_len).map(<[i64]>::to_vec).collect() };
    let doc = json!({
        "input_ids": matrix(&batch.input_ids),
        "attention_mask": matrix(&batch.attention_mask),
        "token_type_ids": matrix(&batch.token_type_ids),
        "shape": dims,
        "last_hidden_state": flat(hidden)?,
        "sentence_embedding": pooled,
    });
    write_text(&dir.join("reference.json"), &(doc.to_string() + "\n"))
}
