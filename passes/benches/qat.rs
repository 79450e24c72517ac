//! Cost of one hessian-mp QAT step (quantization-aware fine-tuning with the straight-through estimator) on a real
//! checkpoint: every encoder Linear fake-quantized to 3 bits in input groups of 128, the self-distillation loss of
//! the pooled embedding on a batch of sentences, forward and backward, then Adam. The batches are the first
//! `BATCH * (STEPS + 1)` texts of the file, in order, so `scripts/torch_qat_step.py` times the same data.
//!
//! `cargo bench -p compressor-passes --bench qat -- [MODEL_DIR] [JSONL] [FIELD] [BATCH] [STEPS]`
//! (defaults: all-MiniLM-L6-v2 from `.cache/models`, STS-B train from `../shared/data`, `sentence1`, 32, 5).
//! `PART_ROWS=N` accumulates each batch's gradient over parts of N rows (hessian-mp's default is 8).

use compressor_calibration::{read_texts, TextInput, TextTokenizer};
use compressor_models::runtime::{Bert, Cpu};
use compressor_models::{Checkpoint, EncodedBatch, Encoding, Slot, Strategy};
use compressor_passes::hessian::{self, Sample};
use compressor_passes::qat::{self, Job, Settings};

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = common::args()?;
    let (dir, data, field, batch_size) = (a.dir, a.data, a.field, a.batch_size);
    let steps: usize = a.rest.first().map(|s| s.parse()).transpose()?.unwrap_or(5);

    let ckpt = Checkpoint::open(&dir)?;
    let tokenizer = TextTokenizer::from_model_dir(&dir, Some(128))?;
    let texts = read_texts(&data, &field, Some(batch_size * (steps + 1)))?;
    let rows = tokenizer.encode_all(&texts.into_iter().map(TextInput::from).collect::<Vec<_>>())?;
    let batches: Vec<EncodedBatch> = rows
        .chunks(batch_size)
        .map(|c| EncodedBatch::from_rows(c, tokenizer.pad_id()))
        .collect();
    let plain = Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())?;
    let c = ckpt.config.bert();
    let blocks: Vec<(String, Encoding)> = (0..c.layers.len())
        .flat_map(|l| Slot::ALL.map(|s| format!("{}.weight", c.naming().linear(l, s))))
        .map(|n| (n, Encoding::symmetric(3, Strategy::Group { size: 128 })))
        .collect();
    let run = |n: usize| -> Result<f64, Box<dyn std::error::Error>> {
        let job = Job {
            store: &ckpt.store,
            config: &ckpt.config,
            pooling: ckpt.pooling,
            blocks: &blocks,
            settings: Settings {
                steps: n,
                lr: 2e-5,
                batch_size,
                seed: 0,
            },
            part_rows: std::env::var("PART_ROWS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(hessian::DEFAULT_PART_ROWS),
        };
        let outcome = qat::train(
            &job,
            |step| Sample::self_distillation(&plain, batches[step].clone()),
            &|_, _| {},
        )?;
        Ok(outcome.seconds)
    };
    let warm = run(1)?;
    let total = run(steps)?;
    println!(
        "model {}, {} blocks at 3 bits, batches of {batch_size}, {} threads",
        dir.display(),
        blocks.len(),
        rayon::current_num_threads()
    );
    // Both runs load the model; their difference is `steps - 1` steps.
    println!(
        "qat: 1 step {warm:.2} s, {steps} steps {total:.2} s (model load included): {:.3} s a step",
        (total - warm) / (steps.max(2) - 1) as f64
    );
    Ok(())
}
