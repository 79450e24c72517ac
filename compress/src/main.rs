//! `compressor`: offline post-training compression of BERT-style checkpoints.
//!
//! Exit codes: 0 success, 1 an evaluation gate failed (reserved), 2 error. Reports go to stdout (`--json` for
//! machines); progress, run summaries, warnings and errors go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use compressor::human::{size, thousands};
use compressor::{errors, inspect, pipeline, plan, progress, runner};
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
    /// List the pass kinds
    Passes {
        /// Print the list as JSON on stdout
        #[arg(long)]
        json: bool,
    },
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
            let outcome = runner::run(plan, force, &bars)?;
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
