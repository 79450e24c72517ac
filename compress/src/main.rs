//! `compressor`: offline post-training compression of BERT-style checkpoints.
//!
//! Exit codes: 0 success, 1 an evaluation gate failed (reserved), 2 error. Reports go to stdout (`--json` for
//! machines); progress, run summaries, warnings and errors go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use compressor::human::{self, count, thousands};
use compressor::{errors, evaluate, inspect, oneline, pipeline, plan, progress, runner, summary};
use compressor_eval::cache::{default_cache_dir, EmbeddingCache};
use compressor_eval::suite;
use compressor_eval::tasks::{TaskKind, TaskSpec};
use compressor_passes::Progress as _;
use compressor_passes::REGISTRY;

#[derive(Parser)]
#[command(
    name = "compressor",
    version,
    about = "Offline post-training compression of BERT-style checkpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a one-line command writes, shared by `quantize` and `trim`.
#[derive(clap::Args)]
struct OneLineOutput {
    /// The artifact folder to write (must not exist unless --force)
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
    /// Replace an existing artifact at --output
    #[arg(long)]
    force: bool,
    /// Print the equivalent pipeline.toml on stdout and stop
    #[arg(long)]
    print_pipeline: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline and write its artifact
    Run {
        /// The pipeline file (pipeline.toml)
        pipeline: PathBuf,
        /// Replace an existing artifact at the output folder
        #[arg(long)]
        force: bool,
        /// Write here instead of `output.dir` (relative to the working folder)
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// Check a pipeline against the model's metadata and show what it would do (reads no weights)
    Plan {
        /// The pipeline file (pipeline.toml)
        pipeline: PathBuf,
        /// Print the plan as JSON on stdout
        #[arg(long)]
        json: bool,
        /// Plan for this output folder instead of `output.dir`
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// Show a checkpoint or artifact: architecture, parameter count, tensors, size
    Inspect {
        /// A Hugging Face checkpoint folder or a compressor artifact
        dir: PathBuf,
        /// Print the report as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Evaluate one or more models on a task (the first folder is the baseline of the others)
    Eval {
        /// Hugging Face checkpoint folders or compressor artifacts
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// sts | classification | pair-classification | retrieval | clustering | glue
        #[arg(long)]
        task: String,
        /// Data file (JSONL, TSV or CSV); repeat to evaluate several files together
        #[arg(long = "data", required = true, value_name = "FILE")]
        data: Vec<PathBuf>,
        /// classification: a separate test file (else k-fold cross-validation over --data)
        #[arg(long, value_name = "FILE")]
        test: Option<PathBuf>,
        /// Text fields, comma-separated (one, or two for pairs; retrieval: query,document)
        #[arg(long, value_delimiter = ',', value_name = "FIELDS")]
        text_fields: Option<Vec<String>>,
        /// The label field
        #[arg(long, default_value = "label")]
        label_field: String,
        /// The gold score field
        #[arg(long, default_value = "score")]
        score_field: String,
        /// Use only the first N rows of each file (N >= 1)
        #[arg(long, value_parser = positive)]
        limit: Option<usize>,
        /// Truncation length (default: the model's)
        #[arg(long)]
        max_length: Option<usize>,
        /// classification without --test: number of folds
        #[arg(long, default_value_t = 5)]
        folds: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write report.md, report.json (and plot.svg for several models) into this folder
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Do not read or write the embedding cache
        #[arg(long)]
        no_cache: bool,
        /// Print the report as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Write a checkpoint or artifact in another on-disk format (dense: plain HF safetensors every runtime loads)
    Export {
        /// A compressor artifact or Hugging Face checkpoint folder
        dir: PathBuf,
        /// The format to write
        #[arg(long, value_enum, default_value = "dense")]
        format: compressor::export::ExportFormat,
        /// The folder to write (must not exist unless --force); for gguf, the `.gguf` file
        #[arg(long, value_name = "PATH")]
        output: PathBuf,
        /// First cut an elastic `qa-svd` artifact at this rate (one of its `elastic-rates`)
        #[arg(long, value_name = "R")]
        rate: Option<f64>,
        /// Tensor types of the written weights (onnx: auto, f32, int8, int8-weights, int4; gguf: auto, f32, f16, q8_0, q6_k, q5_k, q4_k, q3_k, q2_k, q4_0, q4_1; default auto: as the artifact stores them)
        #[arg(long = "type", value_name = "TYPE")]
        tensor_type: Option<String>,
        /// onnx: also output `sentence_embedding`, the checkpoint's pooling (and normalisation)
        #[arg(long)]
        pooling: bool,
        /// Replace an existing folder at --output
        #[arg(long)]
        force: bool,
    },
    /// Run a model over texts and print one JSON line per text: its sentence embedding, or its logits for a classifier
    Embed {
        /// A Hugging Face checkpoint folder or a compressor artifact
        dir: PathBuf,
        /// Data file (JSONL, TSV, CSV or .txt)
        #[arg(long, value_name = "FILE")]
        data: PathBuf,
        /// Text fields, comma-separated (two for sentence pairs)
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "text",
            value_name = "FIELDS"
        )]
        text_fields: Vec<String>,
        /// Use only the first N rows (N >= 1)
        #[arg(long, value_parser = positive)]
        limit: Option<usize>,
        /// Truncation length (default: the model's)
        #[arg(long)]
        max_length: Option<usize>,
        /// Ignore the artifact's static activation scales (run activations in float, as other runtimes do)
        #[arg(long)]
        float_activations: bool,
    },
    /// Quantize a model in one line: blockwise integer weights of every encoder Linear (and the embeddings)
    #[command(after_help = "Example (the embedder recipe of docs/recipes.md):\n  \
        compressor quantize .cache/models/all-MiniLM-L6-v2 --bits 4 --group-size 128 --embeddings 4 --output out/minilm-w4\n\n\
        It runs the blockwise-quant pipeline that --print-pipeline prints, with the same bytes as `compressor run` of it.\n\
        Recipes and what they cost: docs/recipes.md; every pipeline key: docs/pipeline.md.")]
    Quantize {
        /// A Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json)
        model: PathBuf,
        /// Bits per weight, 2 to 8
        #[arg(long, value_parser = clap::value_parser!(u8).range(2..=8))]
        bits: u8,
        /// Weights per scale along a row's inputs; must divide the hidden size and FFN width [default: 128]
        #[arg(long, value_name = "N")]
        group_size: Option<usize>,
        /// Also store the word, position and token-type embeddings in this many bits (2 to 8)
        #[arg(long, value_name = "BITS", value_parser = clap::value_parser!(u8).range(2..=8))]
        embeddings: Option<u8>,
        #[command(flatten)]
        out: OneLineOutput,
    },
    /// Trim a model's vocabulary in one line to the token ids a corpus uses (vocab-trim)
    #[command(after_help = "Example:\n  \
        compressor trim .cache/models/all-MiniLM-L6-v2 --corpus my-texts.jsonl --output out/minilm-trim\n\n\
        Put text of your own domain in the corpus (your evaluation's training split too): trimmed to Wikipedia text\n\
        alone, all-MiniLM-L6-v2 lost 3.2 STS-B points; with STS-B and SST-2 train text added, 0.3 (docs/passes/vocab-trim.md).\n\
        It runs the vocab-trim pipeline that --print-pipeline prints. Recipes: docs/recipes.md; keys: docs/pipeline.md.")]
    Trim {
        /// A Hugging Face checkpoint folder
        model: PathBuf,
        /// Corpus file (JSONL, .txt, TSV or CSV); repeat for several
        #[arg(long = "corpus", required = true, value_name = "FILE")]
        corpus: Vec<PathBuf>,
        /// The JSONL field / TSV or CSV column holding the text [default: text]
        #[arg(long)]
        field: Option<String>,
        /// Keep token ids seen at least this often [default: 2]
        #[arg(long, value_name = "N")]
        min_frequency: Option<u64>,
        #[command(flatten)]
        out: OneLineOutput,
    },
    /// Write a commented pipeline.toml for a model (the embedder or classifier recipe, other passes commented out)
    #[command(after_help = "Example:\n  \
        compressor init .cache/models/all-MiniLM-L6-v2 --output my-pipeline.toml\n  \
        compressor plan my-pipeline.toml && compressor run my-pipeline.toml\n\n\
        Recipes: docs/recipes.md; every key: docs/pipeline.md.")]
    Init {
        /// A Hugging Face checkpoint folder
        model: PathBuf,
        /// The pipeline file to write
        #[arg(long, value_name = "FILE", default_value = "pipeline.toml")]
        output: PathBuf,
        /// Replace an existing file at --output
        #[arg(long)]
        force: bool,
    },
    /// Run a sweep of models x pipelines x pass settings (JOBS.toml): K jobs at once, one shard of a cluster array,
    /// resumable, with one report and its Pareto plots
    #[command(after_help = "Examples:\n  \
        compressor batch examples/sweep.toml --list\n  \
        compressor batch examples/sweep.toml --jobs 2\n  \
        compressor batch examples/sweep.toml --shard 0/2   (and --shard 1/2 elsewhere), then --merge\n\n\
        Under Slurm (`--array`) or a Kubernetes indexed Job the shard is read from the environment\n\
        (examples/batch-slurm.sh, examples/batch-job.yaml). The file format and the report: docs/batch.md.")]
    Batch {
        /// The batch file (JOBS.toml)
        jobs_file: PathBuf,
        /// Jobs to run at once on this machine (fewer when the memory estimate says so)
        #[arg(long = "jobs", short = 'j', default_value_t = 1, value_parser = positive)]
        jobs: usize,
        /// Run only shard i of n (`0/2`); default: from SLURM_ARRAY_TASK_ID / JOB_COMPLETION_INDEX, else all
        #[arg(long, value_name = "i/n")]
        shard: Option<String>,
        /// Rerun jobs that finished earlier
        #[arg(long)]
        force: bool,
        /// Print the expanded jobs and stop
        #[arg(long)]
        list: bool,
        /// With --list: print JSON on stdout (a run's results are in OUTPUT/report.json)
        #[arg(long, requires = "list")]
        json: bool,
        /// Run nothing: gather every shard's results in OUTPUT into one report
        #[arg(long, alias = "report")]
        merge: bool,
    },
    /// List the pass kinds
    Passes {
        /// Print the list as JSON on stdout
        #[arg(long)]
        json: bool,
    },
}

/// A count of at least 1 (`--limit 0` would evaluate nothing).
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1: it is the number of rows to use".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    // A reader that stops early (`compressor inspect M | head`) ends the process quietly, as it ends other Unix
    // tools, instead of making every print panic on the closed pipe.
    #[cfg(target_os = "linux")]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprint!("{}", errors::render(&e));
            ExitCode::from(2)
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot serialize the report")?;
    println!("{text}");
    Ok(())
}

/// Run a plan, print what each pass did and the closing summary; exit code 1 when an evaluation gate failed.
fn run_plan(
    plan: plan::Plan,
    force: bool,
    bars: &progress::Bars,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let outcome = runner::run(plan, force, bars, bars)?;
    bars.on_pass_end();
    for note in &outcome.recovered {
        eprintln!("note: {note}");
    }
    for (index, report) in &outcome.reports {
        let metric = |k: &str| report.metrics.get(k).and_then(serde_json::Value::as_u64);
        let bytes = match (metric("bytes_before"), metric("bytes_after")) {
            (Some(b), Some(a)) => format!(
                ", {} -> {} bytes",
                thousands(b as usize),
                thousands(a as usize)
            ),
            _ => String::new(),
        };
        eprintln!(
            "pass[{index}] {}: {} changed{bytes}",
            report.kind,
            count(report.changed.len(), "tensor")
        );
        if let Some(widths) = summary::chosen_widths(&report.decisions) {
            eprintln!("pass[{index}] {} chose {widths}", report.kind);
        }
        for w in &report.warnings {
            eprintln!("warning: pass[{index}] ({}): {w}", report.kind);
        }
    }
    // What loads the artifact comes from its headers; if they cannot be read back the summary says so.
    let loaders = match summary::Loaders::of(&outcome.output_dir) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!(
                "warning: cannot read back `{}` to say what loads it: {e}",
                human::path(&outcome.output_dir)
            );
            None
        }
    };
    eprint!(
        "{}",
        summary::render(
            &outcome.manifest,
            outcome.evaluation.as_ref(),
            &outcome.output_dir,
            started.elapsed(),
            loaders,
        )
    );
    if let Some(report) = &outcome.evaluation {
        if !report.gate_passed() {
            eprintln!(
                "error: an evaluation gate failed (a task dropped more than its `max-regression`)"
            );
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run (or print) the pipeline text a one-line command built.
fn run_text(
    command: &str,
    text: &str,
    force: bool,
    print_pipeline: bool,
    bars: &progress::Bars,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    if print_pipeline {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let pipeline = oneline::parse(command, text)?;
    let plan = plan::plan(
        pipeline,
        &plan::PlanOptions {
            output: None,
            force,
            dry_run: false,
        },
    )
    .with_context(|| {
        format!(
            "`{command}` cannot run\nhint: `{command} ... --print-pipeline` prints the pipeline it runs (its `pass[0]` is set by the flags)"
        )
    })?;
    run_plan(plan, force, bars, started)
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let bars = progress::Bars::from_env()?;
    match command {
        Command::Run {
            pipeline: file,
            force,
            output,
        } => {
            let pipeline = pipeline::load(&file)?;
            let plan = plan::plan(
                pipeline,
                &plan::PlanOptions {
                    output,
                    force,
                    dry_run: false,
                },
            )?;
            run_plan(plan, force, &bars, started)
        }
        Command::Batch {
            jobs_file,
            jobs,
            shard,
            force,
            list,
            json,
            merge,
        } => {
            let shard = compressor::batch::Shard::resolve(shard.as_deref())?;
            let batch = compressor::batch::load(&jobs_file, shard.count)?;
            if list {
                if json {
                    print_json(&serde_json::json!({
                        "title": batch.title,
                        "output": batch.output,
                        "shards": batch.shards,
                        "jobs": batch.jobs,
                    }))?;
                } else {
                    for j in &batch.jobs {
                        let settings: Vec<String> =
                            j.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        println!(
                            "{}\tshard {}/{}\t{}\t{}\t{}",
                            j.name,
                            j.shard,
                            batch.shards,
                            j.model,
                            j.pipeline,
                            settings.join(" ")
                        );
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let ok = if merge {
                compressor::batch::merge(&batch)?
            } else {
                compressor::batch::run(&batch, &compressor::batch::Options { jobs, force, shard })?
            };
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Plan {
            pipeline: file,
            json,
            output,
        } => {
            let pipeline = pipeline::load(&file)?;
            let plan = plan::plan(
                pipeline,
                &plan::PlanOptions {
                    output,
                    force: false,
                    dry_run: true,
                },
            )?;
            if json {
                print_json(&plan.to_json())?;
            } else {
                print!("{}", plan.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { dir, json } => {
            let report = inspect::inspect(&dir, &bars)?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                print_json(&report)?;
            } else {
                print!("{}", report.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            dirs,
            task,
            data,
            test,
            text_fields,
            label_field,
            score_field,
            limit,
            max_length,
            folds,
            seed,
            report,
            no_cache,
            json,
        } => {
            let kind = TaskKind::parse(&task).ok_or_else(|| {
                let names: Vec<&str> = TaskKind::ALL.iter().map(|k| k.as_str()).collect();
                anyhow::anyhow!(
                    "unknown task `{task}`\nhint: the tasks are: {}",
                    names.join(", ")
                )
            })?;
            let mut spec = TaskSpec::new(kind, data);
            spec.test = test;
            spec.text_fields = text_fields;
            spec.label_field = label_field;
            spec.score_field = score_field;
            spec.limit = limit;
            spec.max_length = max_length;
            spec.folds = folds;
            spec.seed = seed;
            let labels = evaluate::model_labels(&dirs);
            let models: Vec<(String, &std::path::Path)> = labels
                .into_iter()
                .zip(dirs.iter().map(PathBuf::as_path))
                .collect();
            let cache = (!no_cache).then(|| EmbeddingCache::new(default_cache_dir()));
            let result =
                suite::evaluate(&models, std::slice::from_ref(&spec), cache.as_ref(), &bars);
            bars.on_pass_end();
            let result = result.with_context(|| format!("cannot evaluate task `{task}`"))?;
            if let Some(dir) = &report {
                evaluate::write_reports(
                    dir,
                    &result,
                    &format!("compressor eval: {}", spec.display_name()),
                )?;
                eprintln!("wrote `{}`", dir.join("report.md").display());
            }
            if json {
                print_json(&result)?;
            } else {
                print!("{}", evaluate::summary(&result));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            dir,
            format,
            output,
            rate,
            tensor_type,
            pooling,
            force,
        } => {
            if format == compressor::export::ExportFormat::Gguf {
                if pooling {
                    anyhow::bail!(
                        "`--pooling` does not apply to `--format gguf`: the file declares its pooling (`bert.pooling_type`), which llama.cpp applies\nhint: `--pooling` adds a sentence_embedding output to `--format onnx`"
                    );
                }
                let requested = compressor::export::gguf::Requested::parse(tensor_type.as_deref())?;
                let outcome =
                    compressor::export::gguf::export(&dir, &output, requested, rate, force, &bars)?;
                bars.on_pass_end();
                for w in &outcome.warnings {
                    eprintln!("warning: {w}");
                }
                for e in outcome.entries.iter().filter(|e| e.note.is_some()) {
                    eprintln!(
                        "note: `{}` ({}): {}",
                        e.source_name,
                        e.info.ty.name(),
                        e.note.as_deref().unwrap_or_default()
                    );
                }
                let counts: Vec<String> = outcome
                    .counts()
                    .into_iter()
                    .map(|((ty, how), n)| format!("{n} {ty} ({how})"))
                    .collect();
                eprintln!(
                    "wrote `{}`: {} tensors: {}; {} bytes",
                    human::path(&output),
                    outcome.entries.len(),
                    counts.join(", "),
                    thousands(outcome.bytes as usize)
                );
                return Ok(ExitCode::SUCCESS);
            }
            let options = compressor::export::Options {
                rate,
                tensor_type,
                pooling,
                force,
            };
            let outcome = compressor::export::export(&dir, &output, format, &options, &bars)?;
            bars.on_pass_end();
            for note in &outcome.recovered {
                eprintln!("note: {note}");
            }
            for w in &outcome.warnings {
                eprintln!("warning: {w}");
            }
            for n in &outcome.notes {
                eprintln!("{n}");
            }
            if format == compressor::export::ExportFormat::Onnx {
                let files = &outcome.manifest.output.files;
                let model = files.iter().find(|f| f.path.ends_with(".onnx"));
                eprintln!(
                    "wrote `{}`: {} ({} bytes)",
                    human::path(&output),
                    model.map_or("?", |f| f.path.as_str()),
                    thousands(model.map_or(0, |f| f.bytes as usize))
                );
            } else {
                eprintln!(
                    "wrote `{}`: {} decoded to dense, {} tensor bytes",
                    human::path(&output),
                    count(outcome.decoded, "tensor"),
                    thousands(outcome.manifest.output.tensor_bytes)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Embed {
            dir,
            data,
            text_fields,
            limit,
            max_length,
            float_activations,
        } => {
            let rows = evaluate::embed(
                &dir,
                &data,
                &text_fields,
                limit,
                max_length,
                float_activations,
            )?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for line in rows {
                use std::io::Write as _;
                writeln!(out, "{line}").context("cannot write to stdout")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Quantize {
            model,
            bits,
            group_size,
            embeddings,
            out,
        } => {
            // A config that does not load is reported by the run, with its path; here it only decides whether
            // the embeddings line names a token-type table.
            let token_types = compressor_models::ModelConfig::load(&model)
                .map_or(true, |c| c.bert().naming().token_type.is_some());
            let text = oneline::Quantize {
                model,
                bits,
                group_size,
                embeddings,
                token_types,
                output: out.output,
            }
            .pipeline_text()?;
            run_text(
                "compressor quantize",
                &text,
                out.force,
                out.print_pipeline,
                &bars,
                started,
            )
        }
        Command::Trim {
            model,
            corpus,
            field,
            min_frequency,
            out,
        } => {
            let text = oneline::Trim {
                model,
                corpus,
                field,
                min_frequency,
                output: out.output,
            }
            .pipeline_text()?;
            run_text(
                "compressor trim",
                &text,
                out.force,
                out.print_pipeline,
                &bars,
                started,
            )
        }
        Command::Init {
            model,
            output,
            force,
        } => {
            let text = oneline::init_text(&model, &output)?;
            oneline::write_new_file(&output, &text, force)?;
            let shown = human::path(&output);
            eprintln!(
                "wrote `{shown}` for `{}`
next: edit it, then `compressor plan {shown}` (reads no weight) and `compressor run {shown}`",
                human::path(&model)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Passes { json } => {
            if json {
                print_json(&REGISTRY)?;
            } else {
                let w = REGISTRY.iter().map(|p| p.kind.len()).max().unwrap_or(4);
                for p in REGISTRY {
                    println!(
                        "{:<w$}  {:<9}  {} ({})",
                        p.kind,
                        p.phase.as_str(),
                        p.summary,
                        p.cost
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
