//! The disk itself failing: full during a build and during a checkpoint, a read-only output,
//! and the newest files of an interrupted build or run truncated (what a crash can leave on a
//! filesystem that lost data). Each is named, nothing half-written is published, and the rerun
//! gives the uninterrupted result. The disks are small tmpfs mounts: these tests need root and
//! `mount` (CI runs them as root), and fail saying so otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tokenmill_tests::{data, tokenmill_bin, tree_bytes};

use crate::train::{datasets, write_config};

/// A tmpfs mounted on a directory, unmounted when dropped (a failing test included).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size_kib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
            .arg(dir)
            .output();
        match o {
            Ok(o) if o.status.success() => Tmpfs(dir.to_path_buf()),
            Ok(o) => panic!(
                "this test needs root and `mount` (it mounts a small tmpfs on {}): {}",
                dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("this test needs root and `mount` (a small tmpfs): mount: {e}"),
        }
    }

    /// `mount -o remount,OPTS`: `size=…` to give space back, `ro` to make it read-only.
    fn remount(&self, opts: &str) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "remount,{opts}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn inputs(dir: &Path, n: usize) -> Vec<PathBuf> {
    let src = data("jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz");
    (0..n)
        .map(|i| {
            let p = dir.join(format!("part-{i:02}.jsonl.gz"));
            std::fs::copy(&src, &p).unwrap();
            p
        })
        .collect()
}

fn build(inputs: &[PathBuf], out: &Path) -> Output {
    let tok = data("tokenizers/gpt2.tokenizer.json");
    Command::new(tokenmill_bin())
        .arg("build")
        .args(inputs)
        .arg("--tokenizer")
        .arg(tok)
        .arg("--out")
        .arg(out)
        .args([
            "--shard-bytes",
            "204800",
            "--threads",
            "1",
            "--quiet",
            "--json",
        ])
        .output()
        .unwrap()
}

fn dataset(out: &Path) -> BTreeMap<String, Vec<u8>> {
    tree_bytes(out, &|rel| rel == "stats.json")
}

fn assert_same(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: the same files"
    );
    for (k, v) in want {
        assert!(&got[k] == v, "{what}: {k} differs");
    }
}

/// Bytes a tree takes on tmpfs (whole pages per file).
fn pages(dir: &Path) -> u64 {
    tree_bytes(dir, &|_| false)
        .values()
        .map(|v| (v.len() as u64).div_ceil(4096) * 4096)
        .sum()
}

#[test]
fn a_full_disk_stops_a_build_naming_the_file_and_the_rerun_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let ins = inputs(dir.path(), 4);
    let reference = dir.path().join("reference");
    let o = build(&ins, &reference);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = dataset(&reference);
    let need = pages(&reference);

    let mnt = dir.path().join("mnt");
    let fs = Tmpfs::mount(&mnt, need / 2 / 1024);
    let out = mnt.join("ds");
    let o = build(&ins, &out);
    let e = stderr(&o);
    assert!(
        !o.status.success(),
        "a build into half the space it needs succeeded"
    );
    assert!(e.contains("No space left on device"), "{e}");
    assert!(
        e.contains(&out.display().to_string()),
        "the error names the file: {e}"
    );
    assert!(
        !out.join("manifest.json").exists(),
        "no manifest after a failed build"
    );

    fs.remount(&format!("size={}k", need * 4 / 1024));
    let o = build(&ins, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same(&dataset(&out), &want, "rebuilt after the disk was full");
    eprintln!(
        "build into {} KiB: {}",
        need / 2 / 1024,
        e.lines().last().unwrap_or("")
    );
}

/// The reference run and a run whose directory is `run` (relative to `d`, the datasets' dir).
fn train_config(d: &Path, name: &str, out: &str) -> PathBuf {
    let lr = "peak = 2e-3\nwarmup = 2";
    let extra = "steps = 6\ncheckpoint_every = 2\nlosses_every = 1";
    let path = write_config(d, name, extra, lr);
    let t = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("out = \"{name}\""), &format!("out = \"{out}\""));
    std::fs::write(&path, t).unwrap();
    path
}

fn train(d: &Path, cfg: &Path, resume: bool) -> Output {
    let mut c = Command::new(tokenmill_bin());
    c.current_dir(d)
        .args(["train", "--quiet", "--config"])
        .arg(cfg);
    if resume {
        c.arg("--resume");
    }
    c.output().unwrap()
}

/// (train losses and gradient norms as bits, final weights, loss table) of a run.
type RunResult = (
    Vec<(u64, u64, u64)>,
    Vec<u8>,
    Vec<(u64, u64, u32, u32, u64, u32)>,
);

fn run_result(run: &Path) -> RunResult {
    let losses = crate::train::log(run)
        .iter()
        .filter(|x| x.kind == tokenmill_trainer::train::LogKind::Train)
        .map(|x| (x.step, x.loss.to_bits(), x.grad_norm.to_bits()))
        .collect();
    let w = std::fs::read(run.join("checkpoints/step-00000006/model.safetensors")).unwrap();
    let mut rows = Vec::new();
    for (_, _, f) in tokenmill_trainer::losslog::files(run).unwrap() {
        rows.extend(
            tokenmill_trainer::losslog::read(&f)
                .unwrap()
                .into_iter()
                .map(|x| (x.seq, x.step, x.sample, x.span, x.doc, x.loss.to_bits())),
        );
    }
    rows.sort_by_key(|x| (x.0, x.2, x.3));
    (losses, w, rows)
}

#[test]
fn a_full_disk_during_a_checkpoint_publishes_nothing_and_the_resume_completes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let cfg = train_config(d, "full", "full");
    let o = train(d, &cfg, false);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = run_result(&d.join("full"));
    let run_pages = pages(&d.join("full"));
    let ckpt = pages(&d.join("full/checkpoints/step-00000006"));
    // Room for everything but the last two checkpoints and half of one: the run stops in
    // the checkpoint of step 4.
    let size = (run_pages - ckpt - ckpt / 2) / 1024;
    let mnt = d.join("mnt");
    let fs = Tmpfs::mount(&mnt, size);
    let cfg = train_config(d, "disk", "mnt/run");
    let o = train(d, &cfg, false);
    let e = stderr(&o);
    assert!(!o.status.success(), "a run into {size} KiB succeeded");
    assert!(e.contains("No space left on device"), "{e}");
    let ckpts = mnt.join("run/checkpoints");
    assert!(
        e.contains("mnt/run/checkpoints/"),
        "the error names the file: {e}"
    );
    assert_eq!(
        std::fs::read_to_string(ckpts.join("latest")).unwrap(),
        "step-00000002",
        "latest names the last complete checkpoint"
    );
    assert!(!ckpts.join("step-00000004").exists(), "{e}");

    fs.remount(&format!("size={}k", run_pages * 4 / 1024));
    let o = train(d, &cfg, true);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = run_result(&mnt.join("run"));
    assert_eq!(got.0, want.0, "each step once, identical losses");
    assert!(got.1 == want.1, "identical final weights");
    assert_eq!(got.2, want.2, "the same loss table");
    eprintln!("train into {size} KiB: {}", e.lines().last().unwrap_or(""));
}

#[test]
fn a_read_only_output_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let ins = inputs(d, 1);
    let ro = d.join("ro");
    let fs = Tmpfs::mount(&ro, 1024);
    fs.remount("ro");
    let out = ro.join("ds");
    let o = build(&ins, &out);
    let e = stderr(&o);
    assert!(
        !o.status.success(),
        "a build into a read-only disk succeeded"
    );
    assert!(e.contains(&out.display().to_string()), "{e}");
    assert!(e.contains("Read-only file system"), "{e}");

    let cfg = train_config(d, "ro-run", "ro/run");
    let o = train(d, &cfg, false);
    let e2 = stderr(&o);
    assert!(!o.status.success(), "a run into a read-only disk succeeded");
    assert!(e2.contains("ro/run"), "{e2}");
    assert!(e2.contains("Read-only file system"), "{e2}");
    assert_eq!(
        std::fs::read_dir(&ro).unwrap().count(),
        0,
        "nothing created"
    );
    eprintln!("build: {}\ntrain: {}", e.trim(), e2.trim());
}

/// Cuts a file to half its length.
fn truncate(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

/// The newest shard file with extension `ext` of task `task` in `out`.
fn last_of(out: &Path, task: usize, ext: &str) -> PathBuf {
    let prefix = format!("shard-{task:06}-");
    let mut v: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(ext)
        })
        .collect();
    v.sort();
    v.pop().unwrap_or_else(|| panic!("no {prefix}*{ext}"))
}

#[test]
fn truncated_newest_files_of_an_interrupted_build_are_redone() {
    let dir = tempfile::tempdir().unwrap();
    let ins = inputs(dir.path(), 6);
    let reference = dir.path().join("reference");
    let o = build(&ins, &reference);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = dataset(&reference);

    // A build interrupted before it published its manifest, whose newest files a crash cut
    // short: one task's last .bin, another's .idx, another's provenance, another's record,
    // another's table of dropped documents.
    let out = dir.path().join("crashed");
    let o = build(&ins, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(out.join("manifest.json")).unwrap();
    truncate(&last_of(&out, 0, ".bin"));
    truncate(&last_of(&out, 1, ".idx"));
    truncate(&last_of(&out, 2, ".prov.parquet"));
    truncate(&out.join(".build/tasks/000003.json"));
    truncate(&out.join("excluded/task-000004.parquet"));
    let o = build(&ins, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        stats["tasks_resumed"], 1,
        "only the intact task is kept: {stats}"
    );
    assert_same(&dataset(&out), &want, "after truncated files");
    let v = Command::new(tokenmill_bin())
        .arg("verify")
        .arg(&out)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", stderr(&v));
}

#[test]
fn a_truncated_newest_checkpoint_or_loss_file_is_redone_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let cfg = train_config(d, "full", "full");
    let o = train(d, &cfg, false);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = run_result(&d.join("full"));
    for file in ["model.safetensors", "optimizer_v.safetensors", "state.json"] {
        let name = format!("cut-{}", file.replace('.', "-"));
        let cfg = train_config(d, &name, &name);
        let o = train(d, &cfg, false);
        assert!(o.status.success(), "{}", stderr(&o));
        // A crash just after the last checkpoint was published, its file and the newest
        // loss file cut short.
        let run = d.join(&name);
        truncate(&run.join("checkpoints/step-00000006").join(file));
        let (_, _, newest) = tokenmill_trainer::losslog::files(&run)
            .unwrap()
            .pop()
            .unwrap();
        truncate(&newest);
        let o = train(d, &cfg, true);
        let e = stderr(&o);
        assert!(o.status.success(), "{file}: {e}");
        assert!(
            e.contains(file) && e.contains("step-00000004"),
            "{file}: the damage named, the resume from step 4: {e}"
        );
        let got = run_result(&run);
        assert_eq!(got.0, want.0, "{file}: each step once, identical losses");
        assert!(got.1 == want.1, "{file}: identical final weights");
        assert_eq!(got.2, want.2, "{file}: the same loss table");
    }
}

/// A loss file older than the last checkpoint cut short (a disk fault after the fact: a resume
/// keeps it, nothing redoes it) is never read as valid: `trace` and `sql` name it (`report`
/// reads only the spikes' steps).
#[test]
fn an_older_loss_file_cut_short_is_named_wherever_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let cfg = train_config(d, "old-cut", "old-cut");
    let o = train(d, &cfg, false);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = d.join("old-cut");
    let files = tokenmill_trainer::losslog::files(&run).unwrap();
    assert!(files.len() >= 3, "one loss file per step: {files:?}");
    let (_, _, oldest) = files[0].clone();
    truncate(&oldest);
    let name = oldest.file_name().unwrap().to_string_lossy().into_owned();
    let tm = |args: &[&str]| {
        Command::new(tokenmill_bin())
            .current_dir(d)
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        vec!["trace", "old-cut", "--step", "0"],
        vec!["sql", "old-cut", "SELECT count(*) FROM losses"],
    ] {
        let o = tm(&args);
        let e = stderr(&o);
        assert!(
            !o.status.success() && e.contains(&name),
            "{args:?}: the cut file is named: {e}"
        );
    }
    // A later step, in an intact file, is still traced.
    let o = tm(&["trace", "old-cut", "--step", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
