//! Crash consistency (issue 13, item 6): `run` killed with SIGKILL at random points, then run again. At every kill
//! the output path holds nothing, the old artifact or the new one (never a mix, never nothing where an artifact
//! was); after the rerun it holds exactly the artifact an uninterrupted run writes, and nothing is left beside it.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{read_tree, stderr, Workspace};
use compressor_models::rng::SplitMix64;

fn spawn(ws: &Workspace, pipeline: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_compressor"))
        .args(["run", pipeline, "--force"])
        .current_dir(ws.path())
        .env("COMPRESSOR_NO_PROGRESS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn compressor")
}

#[track_caller]
fn run_ok(ws: &Workspace, pipeline: &str) {
    let o = ws.run(&["run", pipeline, "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn issue_13_kill_9_at_random_points_then_rerun() {
    let ws = Workspace::new();
    ws.write("old.toml", &common::PIPELINE.replace("\"f16\"", "\"bf16\""));
    // The two artifacts, uninterrupted: `old` (bf16) and `new` (f16, what pipeline.toml writes).
    run_ok(&ws, "old.toml");
    let old = read_tree(&ws.join("out"));
    // How long a run takes, as the kills below see it (the fastest of three).
    let duration = (0..3)
        .map(|_| {
            let started = Instant::now();
            let status = spawn(&ws, "pipeline.toml").wait().expect("wait");
            assert!(status.success());
            started.elapsed()
        })
        .min()
        .expect("three runs");
    let new = read_tree(&ws.join("out"));
    assert_ne!(old, new);
    let clean = ["model", "old.toml", "out", "pipeline.toml"];

    let mut rng = SplitMix64::new(13);
    let window = (duration.as_micros() as u64).max(2_000);
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut killed = 0;
    for round in 0..24 {
        // Even rounds replace the old artifact (--force), odd rounds write where nothing is.
        let replacing = round % 2 == 0;
        if replacing {
            run_ok(&ws, "old.toml");
        } else {
            std::fs::remove_dir_all(ws.join("out")).expect("rm out");
        }
        let delay = Duration::from_micros(rng.below(window));
        let mut child = spawn(&ws, "pipeline.toml");
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        killed += usize::from(!status.success());
        let at_kill = if ws.join("out").exists() {
            Some(read_tree(&ws.join("out")))
        } else {
            None
        };
        let outcome = match &at_kill {
            None if !replacing => "nothing yet",
            Some(t) if *t == old && replacing => "old",
            Some(t) if *t == new => "new",
            _ => panic!(
                "round {round} (killed after {delay:?}, {status}): the output path holds {:?}",
                at_kill
                    .as_ref()
                    .map(|t| t.keys().cloned().collect::<Vec<_>>())
            ),
        };
        *outcomes.entry(outcome).or_default() += 1;

        let leftovers: Vec<(String, Vec<String>)> = ws
            .entries()
            .into_iter()
            .filter(|e| !clean.contains(&e.as_str()))
            .map(|e| {
                let path = ws.join(&e);
                let files = if path.is_dir() {
                    read_tree(&path).into_keys().collect()
                } else {
                    Vec::new()
                };
                (e, files)
            })
            .collect();
        let o = ws.run(&["run", "pipeline.toml", "--force"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let err = stderr(&o);
        let notes: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("note: "))
            .map(|l| &l[6..])
            .collect();
        eprintln!("round {round}: left {leftovers:?}; rerun: {notes:?}");
        assert_eq!(read_tree(&ws.join("out")), new, "round {round}");
        assert_eq!(ws.entries(), clean, "round {round}: left beside the output");
    }
    eprintln!(
        "outcomes at the kill: {outcomes:?}; {killed} of 24 runs killed before they ended (runs take {duration:?})"
    );
    assert!(killed > 0, "some kills must land inside a run");
}
