//! Cost of the pieces of the hessian-mp sensitivity analysis on a real checkpoint: a forward pass, a gradient, and
//! one Hessian-vector product per block kind, on one batch of calibration sentences.
//!
//! `cargo bench -p compressor-passes --bench hessian -- [MODEL_DIR] [JSONL] [FIELD] [BATCH]`
//! (defaults: all-MiniLM-L6-v2 from `.cache/models`, STS-B train from `../shared/data`, `sentence1`, 32).

use std::time::Instant;

use compressor_calibration::{read_texts, sample, TextInput, TextTokenizer};
use compressor_models::rng::Rng;
use compressor_models::runtime::{Bert, Cpu, CpuAutodiff};
use compressor_models::{Checkpoint, EncodedBatch, Slot};
use compressor_passes::hessian::{self, Hessian2, Prepared, Sample};

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = common::args()?;
    let (dir, data, field, batch_size) = (a.dir, a.data, a.field, a.batch_size);

    let ckpt = Checkpoint::open(&dir)?;
    let tokenizer = TextTokenizer::from_model_dir(&dir, Some(128))?;
    let texts = sample(read_texts(&data, &field, None)?, batch_size, 0);
    let rows = tokenizer.encode_all(&texts.into_iter().map(TextInput::from).collect::<Vec<_>>())?;
    let batch = EncodedBatch::from_rows(&rows, tokenizer.pad_id());
    println!(
        "model {}, batch {} x {} tokens ({} real)",
        dir.display(),
        batch.batch_size,
        batch.seq_len,
        batch.attention_mask.iter().sum::<i64>()
    );
    let plain = Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())?;
    let sample = Sample::self_distillation(&plain, batch)?;

    let time = |label: &str, reps: usize, f: &mut dyn FnMut()| {
        f();
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        println!(
            "{label}: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
    };
    time("forward (Cpu)", 5, &mut || {
        hessian::loss(&plain, &sample).expect("loss");
    });
    let ad =
        Bert::<CpuAutodiff>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())?;
    // The first and the last layer's query, and an FFN matrix of each, by the family's names.
    let c = ckpt.config.bert();
    let last = c.layers.len() - 1;
    let weight = |l: usize, s: Slot| format!("{}.weight", c.naming().linear(l, s));
    let blocks = [
        weight(0, Slot::Query),
        weight(0, Slot::Up),
        weight(last, Slot::Query),
        weight(last, Slot::Down),
    ];
    let blocks: Vec<&str> = blocks.iter().map(String::as_str).collect();
    for &name in &blocks {
        time(&format!("gradient {name}"), 3, &mut || {
            hessian::gradient(&ad, name, &sample).expect("gradient");
        });
    }
    let h2 = Bert::<Hessian2>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())?;
    for rows in [batch_size, 16, 8, 4] {
        let prepared = Prepared::new(&plain, &sample, rows)?;
        for &name in &blocks {
            let tensors = [name.to_string()];
            let n = hessian::block_weights(&h2, &tensors)?.len();
            let v = hessian::random_direction(n, &mut Rng::new(0));
            time(
                &format!("hvp, parts of {rows} rows, {name}"),
                2,
                &mut || {
                    hessian::hvp(&h2, &tensors, &prepared, &v).expect("hvp");
                },
            );
        }
    }
    // Q-BERT's block: a whole encoder layer (its six weight matrices at once), parts of 8 rows.
    let prepared = Prepared::new(&plain, &sample, hessian::DEFAULT_PART_ROWS)?;
    for layer in [0, last] {
        let tensors = hessian::layer_linear_weights(&ckpt.config, layer);
        let n = hessian::block_weights(&h2, &tensors)?.len();
        let v = hessian::random_direction(n, &mut Rng::new(0));
        time(
            &format!("hvp, parts of 8 rows, all of encoder.layer.{layer}"),
            2,
            &mut || {
                hessian::hvp(&h2, &tensors, &prepared, &v).expect("hvp");
            },
        );
    }
    Ok(())
}
