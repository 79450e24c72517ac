//! The output policy shared by `run` and `export` (issue 13, items 1, 2, 6, 7 and 9): never write inside or above
//! the input, replace only a folder compressor wrote, find an unwritable output at plan time, lock the output, and
//! recover what a killed writer left.

mod common;

use std::path::Path;

use common::{assert_error, read_tree, stderr, Workspace};

const OURS_HINT: &str = "hint: compressor replaces only a folder it wrote: one whose manifest.json is a compressor manifest (tool `compressor`, schema_version 1) and that holds no file that manifest does not list; remove the folder yourself, or choose another output folder\n";

#[track_caller]
fn assert_ok(o: &std::process::Output) {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
}

/// The pid of a process that has exited (and been reaped), so no live process has it.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    pid
}

/// A workspace whose `out` holds the artifact of `pipeline.toml`, and that artifact's files.
fn with_artifact() -> (Workspace, std::collections::BTreeMap<String, Vec<u8>>) {
    let ws = Workspace::new();
    assert_ok(&ws.run(&["run", "pipeline.toml"]));
    let files = read_tree(&ws.join("out"));
    (ws, files)
}

fn plan_error(cause: &str, hint: &str) -> String {
    format!("error: cannot plan pipeline `pipeline.toml`\n\nCaused by:\n  {cause}\n\n{hint}")
}

// ---------------------------------------------------------------- item 1: never inside or above the input

#[test]
fn issue_13_export_never_replaces_a_folder_holding_its_input() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.join("parent")).expect("mkdir");
    std::fs::rename(ws.join("model"), ws.join("parent/model")).expect("mv");
    ws.write("parent/notes.txt", "my notes");
    let before = read_tree(&ws.join("parent"));
    let o = ws.run(&["export", "parent/model", "--output", "parent", "--force"]);
    assert_error(
        &o,
        "error: cannot export to `parent`\n\nCaused by:\n  output folder `parent` contains the model folder `parent/model`\n\nhint: choose an output folder outside the model folder\n",
    );
    let o = ws.run(&[
        "export",
        "parent/model",
        "--output",
        "parent/model/dense",
        "--force",
    ]);
    assert_error(
        &o,
        "error: cannot export to `parent/model/dense`\n\nCaused by:\n  output folder `parent/model/dense` is inside the model folder `parent/model`\n\nhint: compressor never writes into its input; choose an output folder outside the model folder\n",
    );
    assert_eq!(read_tree(&ws.join("parent")), before, "nothing was touched");
    assert_eq!(ws.entries(), ["parent", "pipeline.toml"]);
}

#[test]
fn issue_13_export_force_replaces_only_a_folder_compressor_wrote() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.join("docs")).expect("mkdir");
    ws.write("docs/thesis.tex", "years of work");
    let o = ws.run(&["export", "model", "--output", "docs", "--force"]);
    assert_error(
        &o,
        &format!("error: cannot export to `docs`\n\nCaused by:\n  refusing to replace `docs`: it is not a compressor artifact: it has no manifest.json\n\n{OURS_HINT}"),
    );
    assert!(ws.join("docs/thesis.tex").is_file());
    assert_ok(&ws.run(&["export", "model", "--output", "dense"]));
    let first = read_tree(&ws.join("dense"));
    assert_ok(&ws.run(&["export", "model", "--output", "dense", "--force"]));
    assert_eq!(read_tree(&ws.join("dense")), first);
    assert_eq!(ws.entries(), ["dense", "docs", "model", "pipeline.toml"]);
}

// ---------------------------------------------------------------- item 2: what proves a folder is ours

#[test]
fn issue_13_run_force_refuses_a_manifest_that_is_not_ours() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.join("out")).expect("mkdir");
    ws.write("out/index.html", "<html>");
    let cases = [
        (
            r#"{"name": "My web app", "start_url": "/", "icons": []}"#,
            "its manifest.json is not a compressor manifest (missing field `schema_version` at line 1 column 53)",
        ),
        (
            "this is not JSON",
            "its manifest.json is not a compressor manifest (expected ident at line 1 column 2)",
        ),
        (
            r#"{"schema_version": 1, "tool": {"name": "webpack"}, "output": {"files": []}}"#,
            "its manifest.json was written by `webpack`, not by compressor",
        ),
    ];
    for (manifest, reason) in cases {
        ws.write("out/manifest.json", manifest);
        let o = ws.run(&["run", "pipeline.toml", "--force"]);
        assert_error(
            &o,
            &plan_error(
                &format!("refusing to replace `out`: it is not a compressor artifact: {reason}"),
                OURS_HINT,
            ),
        );
        assert!(ws.join("out/index.html").is_file());
    }
}

#[test]
fn issue_13_run_force_refuses_an_artifact_holding_files_it_does_not_list() {
    let ws = Workspace::new();
    assert_ok(&ws.run(&["run", "pipeline.toml"]));
    ws.write("out/my-notes.md", "keep me");
    std::fs::create_dir(ws.join("out/1_Pooling/extra")).expect("mkdir");
    let o = ws.run(&["run", "pipeline.toml", "--force"]);
    assert_error(
        &o,
        &plan_error(
            "refusing to replace `out`: it is not a compressor artifact: it holds 2 file(s) its manifest.json does not list: `1_Pooling/extra/`, `my-notes.md`",
            OURS_HINT,
        ),
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("out/my-notes.md")).expect("kept"),
        "keep me"
    );
    std::fs::remove_file(ws.join("out/my-notes.md")).expect("rm");
    std::fs::remove_dir(ws.join("out/1_Pooling/extra")).expect("rm");
    assert_ok(&ws.run(&["run", "pipeline.toml", "--force"]));
    assert_eq!(ws.entries(), ["model", "out", "pipeline.toml"]);
}

// ---------------------------------------------------------------- item 9: found at plan time

#[test]
fn issue_13_plan_fails_when_the_output_path_is_a_file_or_not_ours() {
    let ws = Workspace::new();
    ws.write("out", "a file");
    let cases = [
        (
            "output path `out` exists and is not a folder",
            "hint: choose another output folder; compressor never replaces a file\n",
        ),
        (
            "refusing to replace `out`: it is not a compressor artifact: it has no manifest.json",
            OURS_HINT,
        ),
    ];
    for (i, (cause, hint)) in cases.into_iter().enumerate() {
        if i == 1 {
            std::fs::remove_file(ws.join("out")).expect("rm");
            std::fs::create_dir(ws.join("out")).expect("mkdir");
            ws.write("out/keep.txt", "mine");
        }
        assert_error(
            &ws.run(&["plan", "pipeline.toml"]),
            &plan_error(cause, hint),
        );
    }
}

#[test]
fn issue_13_an_unwritable_output_folder_is_a_plan_error() {
    let ws = Workspace::new();
    // /proc refuses new entries even to root, unlike a folder without write permission.
    let o = ws.run(&["run", "pipeline.toml", "--output", "/proc/compressor-out/x"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: cannot plan pipeline `pipeline.toml`\n\nCaused by:\n  cannot write the output folder `/proc/compressor-out/x`: cannot create anything in `/proc` ("),
        "{err}"
    );
    assert!(
        err.ends_with("\n\nhint: choose an output folder in a place you can write to\n"),
        "{err}"
    );
    ws.write("file", "x");
    let o = ws.run(&["plan", "pipeline.toml", "--output", "file/out"]);
    assert_error(
        &o,
        &plan_error(
            "cannot write the output folder `file/out`: `file` is not a folder",
            "hint: choose an output folder in a place you can write to\n",
        ),
    );
    assert_eq!(ws.entries(), ["file", "model", "pipeline.toml"]);
}

// ---------------------------------------------------------------- item 7: one writer per output

#[test]
fn issue_13_a_second_writer_of_the_same_output_is_refused() {
    let ws = Workspace::new();
    let lock = std::fs::File::create(ws.join("out.lock")).expect("create");
    lock.lock().expect("lock");
    std::fs::write(ws.join("out.lock"), "4242\n").expect("write");
    let o = ws.run(&["run", "pipeline.toml"]);
    assert_error(
        &o,
        "error: cannot write the artifact `out`\n\nCaused by:\n  another compressor process (pid 4242) is writing `out` (it holds `out.lock`)\n\nhint: wait for it to finish, or choose another output folder\n",
    );
    let o = ws.run(&["export", "model", "--output", "out"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("another compressor process (pid 4242) is writing `out`"));
    assert!(!ws.join("out").exists());
    lock.unlock().expect("unlock");
    assert_ok(&ws.run(&["run", "pipeline.toml"]));
    assert_eq!(
        ws.entries(),
        ["model", "out", "pipeline.toml"],
        "the lock file is removed"
    );
}

#[test]
fn issue_13_concurrent_runs_never_both_replace_the_output() {
    let (ws, expected) = with_artifact();
    for _ in 0..8 {
        let spawn = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_compressor"))
                .args(["run", "pipeline.toml", "--force"])
                .current_dir(ws.path())
                .env("COMPRESSOR_NO_PROGRESS", "1")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        };
        let (a, b) = (spawn(), spawn());
        for o in [
            a.wait_with_output().expect("a"),
            b.wait_with_output().expect("b"),
        ] {
            let err = stderr(&o);
            assert!(
                o.status.success() || err.contains("another compressor process"),
                "{err}"
            );
        }
        assert_eq!(read_tree(&ws.join("out")), expected);
        assert_eq!(ws.entries(), ["model", "out", "pipeline.toml"]);
    }
}

// ---------------------------------------------------------------- item 6: what killed writers leave

#[test]
fn issue_13_stale_staging_and_old_folders_of_dead_processes_are_recovered() {
    let (ws, expected) = with_artifact();
    // A kill between the two renames of a --force replace: the old artifact aside, the new one staged.
    let pid = dead_pid();
    std::fs::rename(ws.join("out"), ws.join(&format!("out.old-{pid}"))).expect("mv");
    std::fs::create_dir(ws.join(&format!("out.partial-{pid}"))).expect("mkdir");
    ws.write(&format!("out.partial-{pid}/.compressor-staging"), "");
    ws.write(
        &format!("out.partial-{pid}/model.safetensors"),
        "half written",
    );
    // A staging folder of a live process (this test) and a folder that only looks like one stay.
    let live = format!("out.partial-{}", std::process::id());
    std::fs::create_dir(ws.join(&live)).expect("mkdir");
    let other = dead_pid();
    std::fs::create_dir(ws.join(&format!("out.partial-{other}"))).expect("mkdir");
    ws.write(&format!("out.partial-{other}/user.txt"), "mine");

    let o = ws.run(&["run", "pipeline.toml", "--force"]);
    assert_ok(&o);
    let err = stderr(&o);
    for note in [
        format!("note: restored `out` from `out.old-{pid}`, left by process {pid}, which is gone\n"),
        format!("note: removed `out.partial-{pid}`, a staging folder left by process {pid}, which is gone\n"),
        format!("note: left `out.partial-{other}` alone: it is neither a staging folder nor a compressor artifact: it has no manifest.json\n"),
    ] {
        assert!(err.contains(&note), "{note} in {err}");
    }
    assert_eq!(read_tree(&ws.join("out")), expected);
    let mut entries = vec![
        "model".to_string(),
        "out".into(),
        live,
        format!("out.partial-{other}"),
        "pipeline.toml".into(),
    ];
    entries.sort();
    assert_eq!(ws.entries(), entries);
}

#[test]
fn issue_13_an_old_artifact_is_removed_once_the_new_one_is_in_place() {
    let (ws, expected) = with_artifact();
    let pid = dead_pid();
    // A kill after the new artifact went in and before the old one was deleted.
    assert_ok(&ws.run(&[
        "run",
        "pipeline.toml",
        "--output",
        &format!("out.old-{pid}"),
    ]));
    let o = ws.run(&["run", "pipeline.toml", "--force"]);
    assert_ok(&o);
    assert!(stderr(&o).contains(&format!(
        "note: removed `out.old-{pid}`, an old artifact left by process {pid}, which is gone\n"
    )));
    assert_eq!(read_tree(&ws.join("out")), expected);
    assert_eq!(ws.entries(), ["model", "out", "pipeline.toml"]);
}
