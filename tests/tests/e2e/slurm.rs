//! The Slurm executor against a real Slurm (a one-node cluster: `tests/slurm/start.sh`, which
//! `.ci/run` starts): the dataset built through job arrays is the local build's byte for byte,
//! a cancelled array task is reported by name and a rerun submits only it, and a machine
//! without Slurm gets a clear error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokenmill_tests::{data, repo_root, tokenmill_bin, tree_bytes};

fn require_slurm() {
    let ok = Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    assert!(
        ok,
        "no running Slurm: install slurm-wlm and munge and run `bash tests/slurm/start.sh` as root (.ci/run does)"
    );
}

fn warcs() -> Vec<String> {
    [
        "warc/dolma-wget-sample-0000.warc.gz",
        "warc/resiliparse-cc-main-2020-34-excerpt.warc.gz",
        "warc/resiliparse-clipped.warc.gz",
        "warc/whirlwind-cc-main-2024-22.warc.gz",
    ]
    .iter()
    .map(|p| data(p).display().to_string())
    .collect()
}

/// The web recipe with dedup on the real WARCs, into `out`, with `extra` flags.
fn build(out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(tokenmill_bin())
        .arg("build")
        .arg("--config")
        .arg(repo_root().join("pipelines/examples/web.toml"))
        .args(warcs())
        .arg("--tokenizer")
        .arg(data("tokenizers/gpt2.tokenizer.json"))
        .arg("--out")
        .arg(out)
        .args(["--dedup", "--shard-bytes", "1048576", "--quiet"])
        .args(extra)
        .output()
        .unwrap()
}

fn ok(o: &std::process::Output) {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The dataset's files: everything but the build's own bookkeeping and the timings.
fn dataset(out: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    tree_bytes(out, &|rel| rel == "stats.json" || rel.starts_with(".build"))
}

fn counts(out: &Path) -> serde_json::Value {
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
    serde_json::json!([
        s["documents_read"],
        s["documents_written"],
        s["documents_skipped"],
        s["tokens"],
        s["funnel"]
    ])
}

fn jobs(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join(".build/slurm/jobs.json")).unwrap()).unwrap()
}

fn wait_for(ids: &[String]) {
    let t = Instant::now();
    loop {
        let o = Command::new("squeue")
            .args(["-h", "-o", "%i", "-j", &ids.join(",")])
            .output()
            .unwrap();
        if !o.status.success() || o.stdout.is_empty() {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(600), "jobs still queued");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_build_through_slurm_job_arrays_is_the_local_build_byte_for_byte() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let slurm = dir.path().join("slurm");
    ok(&build(&local, &["--threads", "1"]));
    let o = build(
        &slurm,
        &["--executor", "slurm", "--wait", "--tasks-per-job", "1"],
    );
    ok(&o);
    let j = jobs(&slurm);
    assert_eq!(j["tasks"].as_array().unwrap().len(), 4, "{j}");
    assert_eq!(j["arrays"].as_array().unwrap().len(), 1, "{j}");
    assert!(j["dedup"].is_string(), "dedup ran as its own job: {j}");
    // Dedup as a graph: signatures per input (4 elements), edges per partition (64 partitions,
    // 4 per element), then the clustering job.
    assert_eq!(j["dedup_signatures"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["dedup_partitions"].as_array().unwrap().len(), 1, "{j}");
    assert!(
        !slurm.join(".build/dedup-graph").exists(),
        "the graph's records go once the decisions stand"
    );
    let (a, b) = (dataset(&local), dataset(&slurm));
    assert!(
        a.contains_key("manifest.json") && a.len() > 8,
        "{:?}",
        a.keys()
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(
            v == &b[k],
            "{k} differs between the local and the Slurm build"
        );
    }
    assert_eq!(counts(&local), counts(&slurm));
    // One log per array element and per job.
    let logs: Vec<PathBuf> = std::fs::read_dir(slurm.join(".build/logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(logs.len(), 4 + 2 + 4 + 16, "{logs:?}");
    let sig_logs = logs
        .iter()
        .filter(|l| {
            l.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("dedup-sig-0-")
        })
        .count();
    assert_eq!(sig_logs, 4, "{logs:?}");
    // Submitting a finished build again runs only the finalize step.
    ok(&build(&slurm, &["--executor", "slurm", "--wait"]));
    assert_eq!(jobs(&slurm)["tasks"].as_array().unwrap().len(), 0);
    assert_eq!(dataset(&slurm), b);
}

#[test]
fn a_cancelled_array_task_is_named_and_a_rerun_submits_only_it() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    // Without --wait: the arrays wait for the dedup job, so element 2 is still pending when it
    // is cancelled.
    ok(&build(&out, &["--executor", "slurm"]));
    let j = jobs(&out);
    let array = j["arrays"][0].as_str().unwrap().to_string();
    let st = Command::new("scancel")
        .arg(format!("{array}_2"))
        .status()
        .unwrap();
    assert!(st.success());
    let ids: Vec<String> = [&j["dedup"], &j["arrays"][0], &j["finalize"]]
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    wait_for(&ids);
    assert!(
        !out.join("manifest.json").exists(),
        "no manifest while a task is missing"
    );
    let o = Command::new(tokenmill_bin())
        .args(["status", "--json"])
        .arg(&out)
        .output()
        .unwrap();
    ok(&o);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let states: Vec<&str> = s["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states[0], "done");
    assert_eq!(states[1], "done");
    // squeue no longer lists the cancelled element: failed, not waiting for ever.
    assert_eq!(states[2], "failed", "{s}");
    assert_eq!(s["scheduler"], "squeue", "{s}");
    let why = s["tasks"][2]["error"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!(
            "{array}_2 left the Slurm queue without publishing"
        )),
        "{s}"
    );
    assert_eq!(states[3], "done");
    assert_eq!(s["published"], false);
    let fin = s["finalize_error"].as_str().unwrap_or_default();
    assert!(
        fin.contains("1 of 4 tasks are not done") && fin.contains("2 ("),
        "{s}"
    );
    let before: Vec<_> = [0, 1, 3]
        .iter()
        .map(|i| {
            std::fs::metadata(out.join(format!(".build/tasks/{i:06}.json")))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    // The rerun submits task 2 alone and publishes the dataset.
    ok(&build(&out, &["--executor", "slurm", "--wait"]));
    assert_eq!(jobs(&out)["tasks"], serde_json::json!([2]));
    assert!(out.join("manifest.json").exists());
    let after: Vec<_> = [0, 1, 3]
        .iter()
        .map(|i| {
            std::fs::metadata(out.join(format!(".build/tasks/{i:06}.json")))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    assert_eq!(before, after, "finished tasks are not redone");
    let local = dir.path().join("local");
    ok(&build(&local, &[]));
    assert_eq!(dataset(&local), dataset(&out));
}

#[test]
fn without_sbatch_the_slurm_executor_says_so_and_a_dry_run_writes_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let o = Command::new(tokenmill_bin())
        .env("TOKENMILL_SBATCH", "/nonexistent/sbatch")
        .arg("build")
        .args(warcs())
        .arg("--tokenizer")
        .arg(data("tokenizers/gpt2.tokenizer.json"))
        .arg("--out")
        .arg(&out)
        .args(["--executor", "slurm", "--quiet"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`/nonexistent/sbatch` is not on PATH"),
        "{err}"
    );

    let o = build(
        &out,
        &[
            "--executor",
            "slurm",
            "--dry-run",
            "--tasks-per-job",
            "3",
            "--max-array-size",
            "2",
            "--partition",
            "cpu",
            "--mem",
            "2G",
            "--time",
            "1:00:00",
        ],
    );
    ok(&o);
    let s = out.join(".build/slurm");
    // 4 tasks, 3 per element: elements [0 1 2] and [3], one element per array (MaxArraySize 2).
    assert_eq!(
        std::fs::read_to_string(s.join("tasks-0.txt")).unwrap(),
        "0 1 2\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.join("tasks-1.txt")).unwrap(),
        "3\n"
    );
    let script = std::fs::read_to_string(s.join("tasks-0.sbatch")).unwrap();
    for line in [
        "#SBATCH --array=0-0",
        "#SBATCH --partition=cpu",
        "#SBATCH --mem=2G",
        "#SBATCH --time=1:00:00",
        "slurm-task --build",
        "--phase tasks",
    ] {
        assert!(script.contains(line), "{line} missing from\n{script}");
    }
    assert!(s.join("dedup.sbatch").exists() && s.join("finalize.sbatch").exists());
    assert!(!s.join("jobs.json").exists(), "a dry run submits nothing");
}

/// `srun -n 2 tokenmill train` with `[parallel] dp = 2`: the ranks find their rank and world in
/// Slurm's environment (PMIx), and the run follows the one-process run as under mpirun.
#[test]
fn srun_trains_across_two_ranks_like_one_process() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::train::datasets(d);
    let extra = "steps = 4\ncheckpoint_every = 4";
    let lr = "peak = 2e-3\nwarmup = 2";
    let one = crate::train::write_config(d, "one", extra, lr);
    let o = Command::new(tokenmill_bin())
        .current_dir(d)
        .args(["train", "--quiet", "--config"])
        .arg(&one)
        .output()
        .unwrap();
    ok(&o);
    let two = crate::train::write_config(d, "srun2", extra, lr);
    let text = std::fs::read_to_string(&two).unwrap();
    std::fs::write(&two, format!("{text}\n[parallel]\ndp = 2\n")).unwrap();
    let o = Command::new("srun")
        .current_dir(d)
        .args(["-n", "2", "--mpi=pmix", "--cpus-per-task=1"])
        .arg(tokenmill_bin())
        .args(["train", "--quiet", "--config"])
        .arg(&two)
        .output()
        .unwrap();
    ok(&o);
    let losses = |run: &str| -> Vec<f64> {
        crate::train::log(&d.join(run))
            .iter()
            .filter(|l| l.kind == tokenmill_trainer::train::LogKind::Train)
            .map(|l| l.loss)
            .collect()
    };
    let (a, b) = (losses("one"), losses("srun2"));
    assert_eq!(a.len(), 4);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(((x - y) / x).abs() <= 1e-5, "{a:?} vs {b:?}");
    }
    // Both ranks wrote their shard of the checkpoint.
    for r in 1..=2 {
        assert!(
            d.join(format!(
                "srun2/checkpoints/step-00000004/model-{r:05}-of-00002.safetensors"
            ))
            .is_file()
        );
    }
}

/// The planner at a Common Crawl dump's size: 90,000 inputs, 64 tasks per array element, a
/// dry run (the plan, the scripts, the task lists; nothing submitted) in seconds, with every
/// array within MaxArraySize and every input in exactly one element.
#[test]
fn a_dry_run_plans_ninety_thousand_inputs_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    for i in 0..90_000 {
        std::fs::write(inputs.join(format!("{i:05}.jsonl")), b"").unwrap();
    }
    let out = dir.path().join("ds");
    let t = Instant::now();
    let o = Command::new(tokenmill_bin())
        .arg("build")
        .arg(format!("{}/*.jsonl", inputs.display()))
        .arg("--tokenizer")
        .arg(data("tokenizers/gpt2.tokenizer.json"))
        .arg("--out")
        .arg(&out)
        .args([
            "--executor",
            "slurm",
            "--dry-run",
            "--tasks-per-job",
            "64",
            "--quiet",
        ])
        .output()
        .unwrap();
    let took = t.elapsed();
    ok(&o);
    assert!(took < Duration::from_secs(60), "{took:?}");
    let s = out.join(".build/slurm");
    let mut seen = vec![false; 90_000];
    let mut arrays = 0;
    while let Ok(list) = std::fs::read_to_string(s.join(format!("tasks-{arrays}.txt"))) {
        let elements = list.lines().count();
        assert!(elements <= 1000, "array {arrays}: {elements} elements");
        let script = std::fs::read_to_string(s.join(format!("tasks-{arrays}.sbatch"))).unwrap();
        assert!(script.contains(&format!("#SBATCH --array=0-{}", elements - 1)));
        for t in list.split_whitespace() {
            let t: usize = t.parse().unwrap();
            assert!(!seen[t], "task {t} twice");
            seen[t] = true;
        }
        arrays += 1;
    }
    assert_eq!(arrays, 2, "1,407 elements of 64 tasks: two arrays");
    assert!(seen.iter().all(|&x| x), "every input planned");
    eprintln!("90,000 inputs planned in {took:?}");
}
