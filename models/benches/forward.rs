//! Forward throughput of the runtime on all-MiniLM-L6-v2: checkpoint load time, then sentences per second at
//! batch 32 x 128 tokens (seeded random ids, attention mask all ones), median over timed iterations.
//!
//! `cargo bench -p compressor-models --bench forward -- [MODEL_DIR] [ITERATIONS]`
//! Threads: the CPU backend uses rayon; set RAYON_NUM_THREADS to pin the count.

use std::path::PathBuf;
use std::time::Instant;

use compressor_models::runtime::{Bert, Cpu};
use compressor_models::testing::SplitMix64;
use compressor_models::{Checkpoint, EncodedBatch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let dir = args.first().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-MiniLM-L6-v2")
    });
    let iterations: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into());

    let t0 = Instant::now();
    let ckpt = Checkpoint::open(&dir)?;
    let model = Bert::<Cpu>::load(&ckpt.store, &ckpt.config, ckpt.pooling, &Default::default())?;
    let load_s = t0.elapsed().as_secs_f64();

    let (batch, seq) = (32usize, 128usize);
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
    for _ in 0..2 {
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
    println!("threads: {threads}");
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
