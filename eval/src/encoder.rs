//! A checkpoint ready to evaluate: the runtime model plus its tokenizer, with length-sorted batching.

use std::path::{Path, PathBuf};
use std::time::Instant;

use compressor_calibration::{length_sorted_order, TextInput, TextTokenizer};
use compressor_models::runtime::{Bert, Cpu};
use compressor_models::{Checkpoint, EncodedBatch};

use sha2::{Digest, Sha256};

use crate::tasks::{Result, TaskError};

/// Inputs per forward batch.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Throughput of the forward passes run so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Throughput {
    pub inputs: usize,
    pub seconds: f64,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.inputs as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Tokens of the inputs tokenized so far (special tokens such as `[CLS]` left out) and how many of them are the
/// unknown token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenStats {
    pub tokens: u64,
    pub unknown: u64,
}

impl TokenStats {
    /// The counts since `before`.
    pub fn since(&self, before: &TokenStats) -> TokenStats {
        TokenStats {
            tokens: self.tokens - before.tokens,
            unknown: self.unknown - before.unknown,
        }
    }

    /// unknown / tokens (0 without tokens).
    pub fn unknown_fraction(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.unknown as f64 / self.tokens as f64
        }
    }
}

/// One forward pass over a padded batch, producing a row per input.
/// What a batched forward reports as it goes: the inputs of one call, queued before its first batch, then the
/// inputs of each batch done (progress displays sum the first for their totals and the second for their counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    Queued(usize),
    Done(usize),
}

type Forward = dyn Fn(&Bert<Cpu>, &EncodedBatch) -> compressor_models::Result<Vec<Vec<f32>>>;

/// A checkpoint's runtime model and tokenizer.
pub struct Encoder {
    pub checkpoint: Checkpoint,
    pub tokenizer: TextTokenizer,
    model: Bert<Cpu>,
    pub batch_size: usize,
    throughput: std::cell::Cell<Throughput>,
    fingerprint: std::cell::OnceCell<String>,
    unk_id: Option<i64>,
    special_ids: Vec<i64>,
    token_stats: std::cell::Cell<TokenStats>,
}

impl Encoder {
    /// Open a checkpoint folder (an original HF checkpoint or an artifact of ours) for evaluation.
    /// `max_length` overrides the truncation length resolved from the folder.
    pub fn open(dir: &Path, max_length: Option<usize>) -> Result<Self> {
        let checkpoint = Checkpoint::open(dir)?;
        checkpoint.store.check_finite()?;
        let tokenizer = TextTokenizer::from_model_dir(dir, max_length)?;
        let mut model = Bert::<Cpu>::load(
            &checkpoint.store,
            &checkpoint.config,
            checkpoint.pooling,
            &Default::default(),
        )?;
        if let Some(table) = &checkpoint.activations {
            model.set_activation_quant(table.clone())?;
        }
        let unk_id = tokenizer.unk_id().map(i64::from);
        // Special tokens the post-processor adds are not text; the unknown token (also "special") is counted.
        let special_ids = tokenizer
            .special_ids()
            .into_iter()
            .map(i64::from)
            .filter(|&id| Some(id) != unk_id)
            .collect();
        Ok(Self {
            unk_id,
            special_ids,
            checkpoint,
            tokenizer,
            model,
            batch_size: DEFAULT_BATCH_SIZE,
            throughput: Default::default(),
            fingerprint: Default::default(),
            token_stats: Default::default(),
        })
    }

    /// Run activations in float even if the checkpoint carries static activation scales (as runtimes other than
    /// ours do).
    pub fn use_float_activations(&mut self) {
        self.model.act = None;
    }

    /// sha256 of the files that determine the model's outputs (computed once).
    pub fn fingerprint(&self) -> Result<String> {
        if let Some(f) = self.fingerprint.get() {
            return Ok(f.clone());
        }
        let f = model_fingerprint(&self.checkpoint.dir)?;
        Ok(self.fingerprint.get_or_init(|| f).clone())
    }

    /// Forward passes run so far.
    pub fn throughput(&self) -> Throughput {
        self.throughput.get()
    }

    /// Tokens seen so far (every input tokenized for a forward pass or counted with
    /// [`count_tokens`](Self::count_tokens)).
    pub fn token_stats(&self) -> TokenStats {
        self.token_stats.get()
    }

    /// Tokenize `inputs` (as the forward passes do) and add their tokens to [`token_stats`](Self::token_stats).
    pub fn encode(&self, inputs: &[TextInput]) -> Result<Vec<(Vec<i64>, Vec<i64>)>> {
        let encoded = self.tokenizer.encode_all(inputs)?;
        let mut stats = self.token_stats.get();
        for (ids, _) in &encoded {
            for id in ids {
                if !self.special_ids.contains(id) {
                    stats.tokens += 1;
                    stats.unknown += u64::from(Some(*id) == self.unk_id);
                }
            }
        }
        self.token_stats.set(stats);
        Ok(encoded)
    }

    /// Count the tokens of inputs whose outputs came from a cache, so that [`token_stats`](Self::token_stats)
    /// covers every input of a task.
    pub fn count_tokens(&self, inputs: &[TextInput]) -> Result<()> {
        self.encode(inputs).map(|_| ())
    }

    /// Run `f` over the inputs in batches of similar length and return per-input rows in input order.
    fn batched(
        &self,
        inputs: &[TextInput],
        on_batch: &mut dyn FnMut(Batch),
        f: &Forward,
    ) -> Result<Vec<Vec<f32>>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = self.encode(inputs)?;
        on_batch(Batch::Queued(inputs.len()));
        let lengths: Vec<usize> = encoded.iter().map(|(ids, _)| ids.len()).collect();
        let order = length_sorted_order(&lengths);
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); inputs.len()];
        let start = Instant::now();
        for chunk in order.chunks(self.batch_size.max(1)) {
            let rows: Vec<(Vec<i64>, Vec<i64>)> =
                chunk.iter().map(|&i| encoded[i].clone()).collect();
            let batch = EncodedBatch::from_rows(&rows, self.tokenizer.pad_id());
            let result = f(&self.model, &batch)?;
            for (&i, row) in chunk.iter().zip(result) {
                out[i] = row;
            }
            on_batch(Batch::Done(chunk.len()));
        }
        let mut t = self.throughput.get();
        t.inputs += inputs.len();
        t.seconds += start.elapsed().as_secs_f64();
        self.throughput.set(t);
        Ok(out)
    }

    /// Sentence embeddings (the checkpoint's pooling), in input order.
    pub fn embed(
        &self,
        inputs: &[TextInput],
        on_batch: &mut dyn FnMut(Batch),
    ) -> Result<Vec<Vec<f32>>> {
        self.batched(inputs, on_batch, &|m, b| m.embed(b))
    }

    /// Classifier logits, in input order. Errors when the checkpoint has no classification head.
    pub fn logits(
        &self,
        inputs: &[TextInput],
        on_batch: &mut dyn FnMut(Batch),
    ) -> Result<Vec<Vec<f32>>> {
        if matches!(
            self.checkpoint.config.bert().head,
            compressor_models::Head::None
        ) {
            return Err(TaskError::NoHead {
                dir: self.checkpoint.dir.clone(),
            });
        }
        self.batched(inputs, on_batch, &|m, b| m.classify(b))
    }
}

/// sha256 over the files that determine a model's outputs.
pub fn model_fingerprint(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    let mut files: Vec<PathBuf> = [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
        compressor_models::quant::act::FILE,
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    files.extend(compressor_models::store::weight_files(dir)?);
    for f in files.iter().filter(|f| f.is_file()) {
        let mut file = std::fs::File::open(f).map_err(|e| fingerprint_io(f, e))?;
        h.update(
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
                .as_bytes(),
        );
        std::io::copy(&mut file, &mut h).map_err(|e| fingerprint_io(f, e))?;
    }
    Ok(format!("{:x}", h.finalize()))
}

fn fingerprint_io(path: &Path, e: std::io::Error) -> TaskError {
    TaskError::Dataset {
        path: path.to_path_buf(),
        problem: format!("model fingerprint: {e}"),
    }
}
