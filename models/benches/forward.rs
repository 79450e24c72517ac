//! Forward throughput of the runtime: checkpoint load time, then sentences per second at batch x seq tokens
//! (seeded random ids in [1000, vocab), `[CLS]` first and `[SEP]` last, attention mask all ones, as
//! scripts/bench_torch_forward.py builds them), median over timed iterations after untimed warm-up ones.
//!
//! `cargo bench -p compressor-models --bench forward -- [MODEL_DIR] [ITERATIONS] [--batch N] [--seq N]
//! [--warmup N] [--tensor-ops]`
//!
//! Defaults: all-MiniLM-L6-v2 in .cache/models, 10 iterations, batch 32 x 128 tokens, 2 warm-up iterations.
//! `--tensor-ops` runs the forward through burn's tensor ops instead of the host kernels. Threads: the CPU
//! paths use rayon; set RAYON_NUM_THREADS to pin the count.

use std::path::PathBuf;
use std::time::Instant;

use compressor_models::runtime::{Bert, Cpu};
use compressor_models::testing::SplitMix64;
use compressor_models::{Checkpoint, EncodedBatch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut positional = Vec::new();
    let (mut batch, mut seq, mut warmup, mut tensor_ops) = (32usize, 128usize, 2usize, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> Result<usize, Box<dyn std::error::Error>> {
            let v = args.next().ok_or(format!("{name} needs a value"))?;
            Ok(v.parse().map_err(|e| format!("{name} {v}: {e}"))?)
        };
        match a.as_str() {
            "--batch" => batch = value("--batch")?,
            "--seq" => seq = value("--seq")?,
            "--warmup" => warmup = value("--warmup")?,
            "--tensor-ops" => tensor_ops = true,
            a if a.starts_with("--") => {} // cargo's own (`--bench`)
            _ => positional.push(a),
        }
    }
    if batch == 0 || seq < 2 {
        return Err("--batch must be at least 1 and --seq at least 2".into());
    }
    let dir = positional.first().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-MiniLM-L6-v2")
    });
    let iterations: usize = positional
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10)
        .max(1);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into());

    let t0 = Instant::now();
    let ckpt = Checkpoint::open(&dir)?;
    let mut model =
        Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())?;
    model.host_kernels = !tensor_ops;
    let load_s = t0.elapsed().as_secs_f64();

    let mut rng = SplitMix64::new(0);
    let vocab = ckpt.config.bert().vocab_size as u64;
    let rows: Vec<(Vec<i64>, Vec<i64>)> = (0..batch)
        .map(|_| {
            let mut ids: Vec<i64> = (0..seq)
                .map(|_| 1000 + (rng.next_u64() % (vocab - 1000)) as i64)
                .collect();
            ids[0] = 101;
            ids[seq - 1] = 102;
            (ids, vec![0; seq])
        })
        .collect();
    let input = EncodedBatch::from_rows(&rows, 0);
    for _ in 0..warmup {
        model.embed(&input)?;
    }
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let out = model.embed(&input)?;
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(out.len(), batch);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("model: {}", dir.display());
    println!(
        "threads: {threads}; path: {}",
        if tensor_ops {
            "burn tensor ops"
        } else {
            "host kernels"
        }
    );
    println!("load (open + build runtime): {:.3} s", load_s);
    println!(
        "batch {batch} x {seq} tokens: median {:.1} ms/batch, {:.1} sentences/s (min {:.1} ms, max {:.1} ms, {} iterations)",
        median * 1e3,
        batch as f64 / median,
        times[0] * 1e3,
        times[times.len() - 1] * 1e3,
        iterations
    );
    Ok(())
}
