//! `compressor`: offline post-training compression of BERT-style checkpoints.
//!
//! Exit codes: 0 success, 1 an evaluation gate failed (reserved), 2 error. Reports go to stdout (`--json` for
//! machines); progress, run summaries, warnings and errors go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use compressor::human::{size, thousands};
use compressor::{errors, evaluate, inspect, pipeline, plan, progress, runner};
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
        /// The folder to write (must not exist unless --force)
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
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

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    let bars = progress::Bars::from_env();
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
            let outcome = runner::run(plan, force, &bars, &bars)?;
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
                    "pass[{index}] {}: {} tensors changed{bytes}",
                    report.kind,
                    report.changed.len()
                );
                for w in &report.warnings {
                    eprintln!("warning: pass[{index}] ({}): {w}", report.kind);
                }
            }
            let m = &outcome.manifest;
            let file_bytes = |files: &[compressor::artifact::FileRecord]| -> usize {
                files
                    .iter()
                    .filter(|f| f.path.ends_with(".safetensors"))
                    .map(|f| f.bytes as usize)
                    .sum()
            };
            eprintln!(
                "wrote `{}`: model.safetensors {} (input {}), {} files",
                outcome.output_dir.display(),
                size(file_bytes(&m.output.files)),
                size(file_bytes(&m.input.files)),
                m.output.files.len() + 1
            );
            if let Some(report) = &outcome.evaluation {
                eprint!("{}", evaluate::summary(report));
                eprintln!(
                    "evaluation report: `{}`",
                    outcome.output_dir.join("report.md").display()
                );
                if !report.gate_passed() {
                    eprintln!("error: an evaluation gate failed (a task dropped more than its `max-regression`)");
                    return Ok(ExitCode::from(1));
                }
            }
            Ok(ExitCode::SUCCESS)
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
            force,
        } => {
            let outcome = compressor::export::export(&dir, &output, format, force, &bars)?;
            bars.on_pass_end();
            for note in &outcome.recovered {
                eprintln!("note: {note}");
            }
            for w in &outcome.warnings {
                eprintln!("warning: {w}");
            }
            eprintln!(
                "wrote `{}`: {} tensor(s) decoded to dense, {} tensor bytes",
                output.display(),
                outcome.decoded,
                thousands(outcome.manifest.output.tensor_bytes)
            );
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
