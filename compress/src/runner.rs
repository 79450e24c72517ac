//! The runner: check the weights, apply the planned passes one after the other (validating the store after each),
//! and write the artifact.

use std::path::{Path, PathBuf};

use compressor_eval::cache::{default_cache_dir, EmbeddingCache};
use compressor_eval::report::EvalReport;
use compressor_eval::suite::{self, SuiteProgress};

use anyhow::Context as _;
use compressor_models::{Checkpoint, TensorStore};
use compressor_passes::{PassContext, PassReport, Progress, SideFiles};

use crate::artifact::{self, Evaluation, Manifest, PassRecord};
use crate::plan::Plan;

/// What a run produced.
pub struct RunOutcome {
    pub output_dir: PathBuf,
    pub manifest: Manifest,
    /// (index, report) of every pass.
    pub reports: Vec<(usize, PassReport)>,
    /// The `[[eval]]` results, when the pipeline has any.
    pub evaluation: Option<EvalReport>,
    /// What recovery did to folders a killed run left beside the output.
    pub recovered: Vec<String>,
}

/// Fail on the first tensor holding NaN or Inf (reads every float tensor once).
pub fn check_finite(store: &TensorStore, progress: &dyn Progress) -> compressor_models::Result<()> {
    progress.on_pass_start("check", store.len());
    for name in store.names() {
        progress.on_unit(name);
        let t = store.get(name)?;
        // Releases the checkpoint's pages chunk by chunk as it reads them.
        t.check_finite(name)?;
    }
    progress.on_pass_end();
    Ok(())
}

/// Run a plan and write its artifact. `force` allows replacing an existing artifact (checked again at the end).
pub fn run(
    plan: Plan,
    force: bool,
    progress: &dyn Progress,
    eval_progress: &dyn SuiteProgress,
) -> anyhow::Result<RunOutcome> {
    let Plan {
        pipeline,
        model_dir,
        checkpoint,
        output_dir,
        passes,
        ..
    } = plan;
    // Lock the output before any pass runs, recover what killed runs left, and check the output again under the
    // lock (recovery may have put an old artifact back; another process may have written there since planning).
    let lock = crate::output::OutputLock::acquire(&output_dir)
        .with_context(|| format!("cannot write the artifact `{}`", output_dir.display()))?;
    crate::output::require(
        &model_dir,
        &output_dir,
        crate::output::Mode::Write { force },
    )
    .with_context(|| format!("cannot write the artifact `{}`", output_dir.display()))?;
    let parameters = checkpoint.parameter_count();
    let Checkpoint {
        mut config,
        mut store,
        ..
    } = checkpoint;
    let mut side_files = SideFiles::new(&model_dir);
    let calibration = pipeline.calibration_spec();

    // The input files are hashed on a thread of their own while the passes run (the hash reads the files; the
    // passes read the mapped tensors).
    let pending = artifact::pending_input(&model_dir, &config, &store, parameters)?;
    let (input, records, reports) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let hashing = scope.spawn(move || pending.hash(&compressor_passes::progress::NoProgress));
        let ran = run_passes(
            &passes,
            &pipeline,
            &model_dir,
            &mut config,
            &mut store,
            &mut side_files,
            calibration.as_ref(),
            progress,
        );
        let input = hashing
            .join()
            .map_err(|_| anyhow::anyhow!("hashing the input files panicked"))??;
        let (records, reports) = ran?;
        Ok((input, records, reports))
    })?;

    let parameters_out = config.parameter_count(|n| store.contains(n));
    let pipeline_json =
        serde_json::to_value(pipeline.resolved(false)).context("cannot record the pipeline")?;
    let specs = pipeline.resolved_evals();
    let eval_report: std::cell::RefCell<Option<EvalReport>> = Default::default();
    let evaluate = |staged: &Path| -> anyhow::Result<Evaluation> {
        let cache = EmbeddingCache::new(default_cache_dir());
        let report = suite::evaluate(
            &[
                ("original".to_string(), model_dir.as_path()),
                ("compressed".to_string(), staged),
            ],
            &specs,
            Some(&cache),
            eval_progress,
        )
        .context("evaluation failed")?;
        let files =
            crate::evaluate::report_files(&report, "compressor run: original vs compressed")?;
        let record = crate::evaluate::manifest_record(&report);
        *eval_report.borrow_mut() = Some(report);
        Ok(Evaluation { record, files })
    };
    let manifest = artifact::write(
        artifact::Request {
            out: &output_dir,
            lock: &lock,
            force,
            model_dir: &model_dir,
            config: &config,
            store: &store,
            files: &side_files,
            input,
            pipeline: pipeline_json,
            passes: records,
            parameters: parameters_out,
            evaluate: if specs.is_empty() {
                None
            } else {
                Some(&evaluate)
            },
            model: artifact::ModelFiles::Safetensors,
        },
        progress,
    )
    .with_context(|| format!("cannot write the artifact `{}`", output_dir.display()))?;
    Ok(RunOutcome {
        output_dir,
        manifest,
        reports,
        evaluation: eval_report.into_inner(),
        recovered: lock.recovered.clone(),
    })
}

/// What the passes did: their manifest records and their reports by index.
type Ran = (Vec<PassRecord>, Vec<(usize, PassReport)>);

/// Check the input's weights, then run every pass in order, checking what each leaves.
#[allow(clippy::too_many_arguments)]
fn run_passes(
    passes: &[crate::plan::PlannedPass],
    pipeline: &crate::pipeline::Pipeline,
    model_dir: &Path,
    config: &mut compressor_models::ModelConfig,
    store: &mut TensorStore,
    side_files: &mut SideFiles,
    calibration: Option<&compressor_passes::CalibrationSpec>,
    progress: &dyn Progress,
) -> anyhow::Result<Ran> {
    check_finite(store, progress)
        .with_context(|| format!("cannot use the weights of `{}`", model_dir.display()))?;

    let mut records = Vec::with_capacity(passes.len());
    let mut reports = Vec::with_capacity(passes.len());
    for p in passes {
        let kind = p.spec.kind();
        let _span = tracing::info_span!("pass", index = p.index, kind).entered();
        progress.on_pass_start(&format!("pass[{}] {kind}", p.index), p.plan.changes.len());
        let report = p
            .pass
            .run(&mut PassContext {
                config,
                store,
                files: side_files,
                calibration,
                plan: &p.plan,
                progress,
                seed: pipeline.seed(),
            })
            .with_context(|| format!("`pass[{}]` (`{kind}`) failed", p.index))?;
        progress.on_pass_end();
        store
            .check(config)
            .with_context(|| format!("`pass[{}]` (`{kind}`) left an invalid model", p.index))?;
        for name in &report.changed {
            store.get(name)?.check_finite(name).with_context(|| {
                format!("`pass[{}]` (`{kind}`) produced non-finite values", p.index)
            })?;
        }
        records.push(PassRecord {
            index: p.index,
            phase: p.spec.info().phase,
            report: report.clone(),
        });
        reports.push((p.index, report));
    }
    Ok((records, reports))
}
