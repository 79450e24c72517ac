//! `compressor batch` on the tiny checkpoint: the sweep expands to stable job names and shards, bad batch files
//! are errors naming the key before any job runs, a failing job does not stop the others, finished jobs are
//! skipped on a rerun, shards merge into one report, and a batch killed with SIGKILL at random points reruns to
//! byte-identical artifacts.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{compressor_in, stderr, stdout, write_tiny};
use serde_json::Value;

const QUANT: &str = "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"blockwise-quant\"\nbits = 4\ngroup-size = 16\n\n[output]\ndir = \"unused\"\n\n[[eval]]\ntask = \"sts\"\ndata = \"sts.jsonl\"\n";
const CAST_QUANT: &str = "[model]\npath = \"model\"\n\n[[pass]]\nkind = \"cast\"\ndtype = \"f16\"\n\n[[pass]]\nkind = \"blockwise-quant\"\nbits = 4\ngroup-size = 16\n\n[output]\ndir = \"unused\"\n\n[[eval]]\ntask = \"sts\"\ndata = \"sts.jsonl\"\n";

/// A folder with the tiny model, two pipelines, an STS file and `jobs.toml` sweeping `sweep`.
fn workspace(sweep: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tmp");
    write_tiny(&tmp.path().join("model"));
    std::fs::write(tmp.path().join("quant.toml"), QUANT).expect("write");
    std::fs::write(tmp.path().join("cast-quant.toml"), CAST_QUANT).expect("write");
    let words = ["a", "good", "movie", "bad", "film", "the", "is", "very"];
    let sts: String = (0..12)
        .map(|i| {
            format!(
                "{{\"sentence1\": \"{} {} {}\", \"sentence2\": \"{} {}\", \"score\": {}}}\n",
                words[i % 8],
                words[(i + 1) % 8],
                words[(i * 3) % 8],
                words[(i + 2) % 8],
                words[(i * 5) % 8],
                (i % 5) as f64
            )
        })
        .collect();
    std::fs::write(tmp.path().join("sts.jsonl"), sts).expect("write");
    std::fs::write(
        tmp.path().join("jobs.toml"),
        format!("name = \"tiny\"\noutput = \"sweep\"\n\n[models]\ntiny = \"model\"\n\n[pipelines]\nquant = \"quant.toml\"\ncast-quant = \"cast-quant.toml\"\n\n{sweep}"),
    )
    .expect("write");
    tmp
}

const SWEEP: &str = "[sweep.blockwise-quant]\nbits = [8, 4]\ngroup-size = [8, 16]\n";

fn json(dir: &Path, rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(rel)).expect("read")).expect("json")
}

/// Every file of every job folder (reports aside: they hold timings), by path.
fn artifacts(sweep: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let jobs = sweep.join("jobs");
    for job in std::fs::read_dir(&jobs).expect("jobs") {
        let job = job.expect("job").path();
        for f in walk(&job) {
            let rel = f.strip_prefix(&jobs).expect("rel").display().to_string();
            if !rel.ends_with("report.md") && !rel.ends_with("report.json") {
                out.insert(rel, std::fs::read(&f).expect("read"));
            }
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A workspace whose batch ran to completion (with its artifacts), and a second one over the same checkpoint (the
/// manifests name the model folder) that has not run yet.
fn reference_and_twin() -> (
    tempfile::TempDir,
    BTreeMap<String, Vec<u8>>,
    tempfile::TempDir,
) {
    let reference = workspace(SWEEP);
    let o = compressor_in(reference.path(), &["batch", "jobs.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = artifacts(&reference.path().join("sweep"));
    assert_eq!(
        want.keys().filter(|k| k.ends_with("manifest.json")).count(),
        8
    );
    let ws = workspace(SWEEP);
    let jobs = std::fs::read_to_string(ws.path().join("jobs.toml")).expect("read");
    let model = reference.path().join("model");
    std::fs::write(
        ws.path().join("jobs.toml"),
        jobs.replace(
            "tiny = \"model\"",
            &format!("tiny = \"{}\"", model.display()),
        ),
    )
    .expect("write");
    (reference, want, ws)
}

#[test]
fn the_sweep_expands_to_stable_names_and_shards() {
    let ws = workspace(SWEEP);
    let o = compressor_in(
        ws.path(),
        &["batch", "jobs.toml", "--list", "--json", "--shard", "1/3"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listed: Value = serde_json::from_slice(&o.stdout).expect("json");
    let names: Vec<(&str, u64)> = listed["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap_or(""),
                j["shard"].as_u64().unwrap_or(9),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("tiny-cast-quant-bits4-group-size16", 0),
            ("tiny-cast-quant-bits4-group-size8", 1),
            ("tiny-cast-quant-bits8-group-size16", 2),
            ("tiny-cast-quant-bits8-group-size8", 0),
            ("tiny-quant-bits4-group-size16", 1),
            ("tiny-quant-bits4-group-size8", 2),
            ("tiny-quant-bits8-group-size16", 0),
            ("tiny-quant-bits8-group-size8", 1),
        ]
    );
    assert_eq!(
        listed["jobs"][0]["settings"],
        serde_json::json!({"blockwise-quant.bits": "4", "blockwise-quant.group-size": "16"})
    );
    // The shard comes from a Slurm array or a Kubernetes indexed Job when not given.
    let o = Command::new(env!("CARGO_BIN_EXE_compressor"))
        .args(["batch", "jobs.toml", "--list"])
        .current_dir(ws.path())
        .env("JOB_COMPLETION_INDEX", "1")
        .env("COMPRESSOR_SHARDS", "2")
        .output()
        .expect("run");
    assert!(
        stdout(&o).contains("tiny-quant-bits8-group-size8\tshard 1/2"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn bad_batch_files_are_errors_naming_the_key_before_any_job() {
    let err = |sweep: &str, args: &[&str]| {
        let ws = workspace(sweep);
        let mut all = vec!["batch", "jobs.toml"];
        all.extend_from_slice(args);
        let o = compressor_in(ws.path(), &all);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(!ws.path().join("sweep").exists(), "nothing was written");
        stderr(&o)
    };
    let e = err("[sweep.blockwise-quant]\nbitz = [8, 4]\n", &[]);
    assert!(e.contains("bitz"), "{e}");
    let e = err("[sweep.prune]\ntarget = [0.1]\n", &[]);
    assert!(
        e.contains("`sweep.prune` sweeps a pass kind that no pipeline has (their passes: blockwise-quant, cast)"),
        "{e}"
    );
    let e = err(SWEEP, &["--shard", "2/2"]);
    assert!(
        e.contains("shard `2/2` (from --shard) is out of range"),
        "{e}"
    );
    let e = err("[colour]\nred = 1\n", &[]);
    assert!(e.contains("unknown field `colour`"), "{e}");
    let e = err("[sweep.blockwise-quant]\nbits = []\n", &[]);
    assert!(
        e.contains("`sweep.blockwise-quant.bits` has no values"),
        "{e}"
    );
}

#[test]
fn a_failing_job_does_not_stop_the_others_and_finished_jobs_are_skipped() {
    // Group size 7 divides no row of the tiny model: those jobs fail at plan time.
    let ws = workspace("[sweep.blockwise-quant]\nbits = [4]\ngroup-size = [7, 16]\n");
    let o = compressor_in(ws.path(), &["batch", "jobs.toml", "--jobs", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let sweep = ws.path().join("sweep");
    let report = json(&sweep, "report.json");
    assert_eq!(report["counts"]["done"], 2, "{report}");
    assert_eq!(report["counts"]["failed"], 2, "{report}");
    let md = std::fs::read_to_string(sweep.join("report.md")).expect("report.md");
    assert!(md.contains("tiny-quant-bits4-group-size7"), "{md}");
    assert!(md.contains("group size 7 does not divide"), "{md}");
    assert!(walk(&sweep)
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "svg")));
    let first = artifacts(&sweep);
    // A process killed after its artifact was in place left its lock file: the rerun that skips the job clears it.
    let stale = sweep.join("jobs/tiny-quant-bits4-group-size16.lock");
    std::fs::write(&stale, "4194303\n").expect("write");
    // The rerun skips the finished jobs (same bytes) and tries the failed ones again.
    let o = compressor_in(ws.path(), &["batch", "jobs.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("tiny-quant-bits4-group-size16: skipped"),
        "{}",
        stderr(&o)
    );
    assert!(!stale.exists(), "the stale lock file is gone");
    assert_eq!(artifacts(&sweep), first);
    let report = json(&sweep, "report.json");
    assert_eq!(report["counts"]["skipped"], 2, "{report}");
}

#[test]
fn shards_merge_into_one_report() {
    let ws = workspace(SWEEP);
    let o = compressor_in(ws.path(), &["batch", "jobs.toml", "--shard", "0/2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let sweep = ws.path().join("sweep");
    assert_eq!(json(&sweep, "report.json")["counts"]["missing"], 4);
    let o = compressor_in(ws.path(), &["batch", "jobs.toml", "--shard", "1/2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = compressor_in(ws.path(), &["batch", "jobs.toml", "--merge"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = json(&sweep, "report.json");
    assert_eq!(report["counts"]["missing"], 0, "{report}");
    assert_eq!(report["counts"]["done"], 8, "{report}");
    assert_eq!(report["jobs"].as_array().map(Vec::len), Some(8));
    // Every job has its size and its STS-B-style metric.
    for job in report["jobs"].as_array().expect("jobs") {
        assert!(job["tensor_bytes"].as_u64().unwrap_or(0) > 0, "{job}");
        assert_eq!(job["metrics"][0]["metric"], "spearman", "{job}");
    }
}

#[test]
fn a_batch_killed_at_random_points_reruns_to_byte_identical_artifacts() {
    let (reference, want, ws) = reference_and_twin();
    let started = Instant::now();
    let full = {
        let o = compressor_in(reference.path(), &["batch", "jobs.toml", "--force"]);
        assert_eq!(o.status.code(), Some(0));
        started.elapsed()
    };
    // Kill at spread-out points of a full run's duration (a fixed sequence: reproducible).
    let mut kills = 0;
    for fraction in [0.05, 0.3, 0.55, 0.15, 0.8, 0.4] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_compressor"))
            .args(["batch", "jobs.toml"])
            .current_dir(ws.path())
            .env("COMPRESSOR_NO_PROGRESS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_secs_f64(full.as_secs_f64() * fraction));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(kills >= 1, "no run was killed");
    let o = compressor_in(ws.path(), &["batch", "jobs.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = artifacts(&ws.path().join("sweep"));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the same files, nothing partial left"
    );
    for (name, bytes) in &want {
        assert!(got[name] == *bytes, "`{name}` differs after the kills");
    }
    // Nothing but job folders under jobs/: no staging or old folders left.
    for e in std::fs::read_dir(ws.path().join("sweep/jobs")).expect("jobs") {
        let name = e.expect("e").file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".partial") && !name.contains(".old") && !name.contains(".lock"),
            "{name}"
        );
    }
}

#[test]
fn two_processes_on_one_batch_write_every_job_once_and_intact() {
    let (_reference, want, ws) = reference_and_twin(); // kept: its checkpoint is the one `ws` reads
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_compressor"))
            .args(["batch", "jobs.toml"])
            .current_dir(ws.path())
            .env("COMPRESSOR_NO_PROGRESS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let o = child.wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    // Each job was written by one of them (the other skipped it, finished or busy): the same bytes as one process.
    let o = compressor_in(ws.path(), &["batch", "jobs.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).matches(": skipped (finished earlier").count(),
        8,
        "{}",
        stderr(&o)
    );
    assert!(artifacts(&ws.path().join("sweep")) == want);
}
