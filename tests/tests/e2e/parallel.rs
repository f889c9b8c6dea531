//! `mpirun -np N tokenmill train` against one process, on real text (tinyshakespeare): data
//! parallelism, expert parallelism and both, over 10 steps; a checkpoint saved in one layout
//! resumed in another; layouts that do not fit refused with a clear message.
//!
//! Losses are compared to 1e-5 relative, not bitwise: the dense layers' gradients are sums
//! over the batch's tokens, which a parallel run adds up per rank and then across ranks, in
//! another order than one process (the experts' gradients and every token's loss are bitwise
//! equal: see `tokenmill-parallel-check` in the trainer).

use std::path::Path;

use tokenmill_tests::{mpirun, tokenmill_bin};
use tokenmill_trainer::train::{LogKind, StepLog};

use crate::train::{datasets, log, write_config};

const LR: &str = "peak = 2e-3\nwarmup = 2";

/// (step, loss, eval loss if an eval line) of a run's log.
fn curve(run: &Path) -> Vec<(u64, LogKind, f64)> {
    log(run)
        .iter()
        .map(|l: &StepLog| (l.step, l.kind, l.loss))
        .collect()
}

fn assert_close(a: &[(u64, LogKind, f64)], b: &[(u64, LogKind, f64)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    let mut worst = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        assert_eq!((x.0, &x.1), (y.0, &y.1), "{what}");
        let rel = ((x.2 - y.2) / y.2).abs();
        worst = worst.max(rel);
        assert!(
            rel <= 1e-5,
            "{what}: step {} {}: {} vs {} ({rel:.1e})",
            x.0,
            x.1,
            x.2,
            y.2
        );
    }
    eprintln!(
        "{what}: {} log lines, last loss {:.6} vs {:.6}, worst relative difference {worst:.1e}",
        a.len(),
        a.last().map_or(f64::NAN, |x| x.2),
        b.last().map_or(f64::NAN, |x| x.2)
    );
}

/// `ck` is a checkpoint of `np` ranks: every rank's shard of the weights and of the moments,
/// the indexes naming them, and no one-file weights; its weights load.
fn assert_sharded(ck: &Path, np: usize) {
    for index in [
        "model.safetensors.index.json",
        "optimizer.safetensors.index.json",
    ] {
        assert!(ck.join(index).is_file(), "{}: no {index}", ck.display());
    }
    for r in 1..=np {
        for stem in ["model", "optimizer"] {
            let f = ck.join(format!("{stem}-{r:05}-of-{np:05}.safetensors"));
            assert!(
                f.is_file(),
                "rank {}'s shard {} is missing",
                r - 1,
                f.display()
            );
        }
    }
    assert!(!ck.join("model.safetensors").exists());
    let (model, params) = tokenmill_trainer::hf::load(ck).unwrap();
    assert_eq!(params.len(), model.layout.len());
}

fn train_np(dir: &Path, np: usize, config: &Path, resume: bool) -> std::process::Output {
    let mut c = mpirun(np);
    c.current_dir(dir)
        .arg(tokenmill_bin())
        .args(["train", "--quiet", "--config"])
        .arg(config);
    if resume {
        c.arg("--resume");
    }
    c.output().expect("run mpirun")
}

fn with_layout(dir: &Path, name: &str, extra: &str, layout: &str) -> std::path::PathBuf {
    let p = write_config(dir, name, extra, LR);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, format!("{text}\n[parallel]\n{layout}\n")).unwrap();
    p
}

#[test]
fn mpirun_train_in_every_layout_follows_one_process_and_resumes_across_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let extra = "steps = 10\ncheckpoint_every = 5\neval_every = 5";
    let one = write_config(d, "one", extra, LR);
    let o = std::process::Command::new(tokenmill_bin())
        .current_dir(d)
        .args(["train", "--quiet", "--config"])
        .arg(&one)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference = curve(&d.join("one"));
    assert!(reference.iter().filter(|x| x.1 == LogKind::Train).count() == 10);
    assert!(reference.iter().any(|x| x.1 == LogKind::Eval));
    for (np, name, layout) in [
        (2, "dp2", "dp = 2"),
        (2, "ep2", "ep = 2"),
        (4, "dp2ep2", "dp = 2\nep = 2"),
    ] {
        let cfg = with_layout(d, name, extra, layout);
        let o = train_np(d, np, &cfg, false);
        assert!(
            o.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_close(&curve(&d.join(name)), &reference, name);
        // One log, and one checkpoint per save, written in shards: one per rank.
        assert_sharded(&d.join(name).join("checkpoints/step-00000010"), np);
    }
    // Resume in another layout: the dp2 run's checkpoint at step 5 continued by ep2, the
    // one-process checkpoint by dp2 × ep2, and dp2 × ep2's by one process, to step 10.
    for (from, np, layout) in [
        ("dp2", 2, "ep = 2"),
        ("one", 4, "dp = 2\nep = 2"),
        ("dp2ep2", 1, "dp = 1"),
    ] {
        let ck = d.join(from).join("checkpoints");
        std::fs::remove_dir_all(ck.join("step-00000010")).unwrap();
        std::fs::write(ck.join("latest"), "step-00000005").unwrap();
        let cfg = with_layout(d, from, extra, layout);
        let o = train_np(d, np, &cfg, true);
        assert!(
            o.status.success(),
            "resume {from} as {layout}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_close(
            &curve(&d.join(from)),
            &reference,
            &format!("{from} resumed as {layout}"),
        );
    }
}

/// A configuration of the tiny model with 4 layers (DualPipeV on 2 ranks cuts 4 stages) and
/// micro-batches of `micro` samples.
fn deep(dir: &Path, name: &str, extra: &str, micro: usize, layout: &str) -> std::path::PathBuf {
    let p = with_layout(dir, name, extra, layout);
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace(
            "vocab_size = 512",
            "vocab_size = 512\nnum_hidden_layers = 4",
        )
        .replace("batch = 16", &format!("batch = 16\nmicro_batch = {micro}"));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn mpirun_train_through_pipelines_follows_one_process_and_resumes_on_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let extra = "steps = 10\ncheckpoint_every = 5\neval_every = 5";
    // One process in micro-batches of 4: the micro-batches DualPipeV runs on 2 ranks.
    let one = deep(d, "one", extra, 4, "dp = 1");
    let o = train_np(d, 1, &one, false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference = curve(&d.join("one"));
    assert_eq!(
        reference.iter().filter(|x| x.1 == LogKind::Train).count(),
        10
    );
    // And in micro-batches of 2, for DualPipeV × ep 2 (each pipeline has 8 samples; the
    // evaluation batch is a micro-batch, so the reference must have the same).
    let one2 = deep(d, "one2", extra, 2, "dp = 1");
    let o = train_np(d, 1, &one2, false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference2 = curve(&d.join("one2"));
    for (np, name, micro, layout) in [
        (2, "pp2v", 4, "pp = 2\nschedule = \"dualpipev\""),
        (2, "pp2", 4, "pp = 2\nschedule = \"1f1b\""),
        (4, "pp2ep2", 2, "pp = 2\nep = 2"),
    ] {
        let reference = if micro == 2 { &reference2 } else { &reference };
        let cfg = deep(d, name, extra, micro, layout);
        let o = train_np(d, np, &cfg, false);
        assert!(
            o.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let got = curve(&d.join(name));
        assert_close(&got, reference, name);
        assert_sharded(&d.join(name).join("checkpoints/step-00000010"), np);
        if np == 2 {
            // The same micro-batches through the same arithmetic: the first step's loss is
            // bitwise one process's (later steps differ by the embedding gradient's order of
            // summation, within rounding).
            assert_eq!(got[0].2.to_bits(), reference[0].2.to_bits(), "{name}");
        }
    }
    // The DualPipeV run's checkpoint at step 5 resumed on one process, to step 10.
    let ck = d.join("pp2v").join("checkpoints");
    std::fs::remove_dir_all(ck.join("step-00000010")).unwrap();
    std::fs::write(ck.join("latest"), "step-00000005").unwrap();
    let cfg = deep(d, "pp2v", extra, 4, "dp = 1");
    let o = train_np(d, 1, &cfg, true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_close(
        &curve(&d.join("pp2v")),
        &reference,
        "pp2v resumed on one process",
    );
    // Too few micro-batches for DualPipeV: refused before any work.
    let cfg = deep(d, "few", "steps = 2", 8, "pp = 2");
    let o = train_np(d, 2, &cfg, false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("DualPipeV on 2 ranks needs at least 4 micro-batches (got 2)"),
        "{err}"
    );
}

#[test]
fn layouts_that_do_not_fit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let cfg = with_layout(d, "bad", "steps = 2", "dp = 2\nep = 2");
    let o = train_np(d, 3, &cfg, false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("dp 2 × ep 2 × pp 1 = 4 ranks, but the job has 3"),
        "{err}"
    );
    let cfg = with_layout(d, "bad3", "steps = 2", "ep = 3");
    let o = train_np(d, 3, &cfg, false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("8 routed experts cannot be split over ep = 3"),
        "{err}"
    );
    // No launcher: a clear word on how to start it.
    let o = std::process::Command::new(tokenmill_bin())
        .current_dir(d)
        .args(["train", "--quiet", "--config"])
        .arg(d.join("bad.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("mpirun -np 4 tokenmill train"), "{err}");
}

/// `mpirun -np N tokenmill train --timeline` on `cfg` (run directory `run`): its standard
/// output, and every rank's trace events.
fn train_with_timeline(
    d: &Path,
    np: usize,
    cfg: &Path,
    run: &str,
) -> (String, Vec<Vec<serde_json::Value>>) {
    let mut c = mpirun(np);
    c.current_dir(d)
        .arg(tokenmill_bin())
        .args(["train", "--quiet", "--timeline", "--config"])
        .arg(cfg);
    let o = c.output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{text}");
    let traces = (0..np)
        .map(|rank| {
            let p = tokenmill_pipelines::train::timeline_path(&d.join(run), rank);
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            v["traceEvents"].as_array().unwrap().clone()
        })
        .collect();
    (text, traces)
}

#[test]
fn timeline_traces_every_rank_with_its_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let cfg = with_layout(d, "tl", "steps = 3", "ep = 2");
    let (text, traces) = train_with_timeline(d, 2, &cfg, "tl");
    for (rank, ev) in traces.iter().enumerate() {
        let named = |n: &str| ev.iter().filter(|e| e["name"] == n).count();
        // Two MoE layers (block 1, MTP) × 3 steps, forward and backward.
        assert!(
            named("moe dispatch") >= 6,
            "rank {rank}: {} dispatches",
            named("moe dispatch")
        );
        assert!(named("shared expert") >= 6);
        assert!(named("gradient reduce-scatter") == 3, "rank {rank}");
        assert!(named("parameter all-gather") == 3, "rank {rank}");
        assert!(ev.iter().any(|e| e["name"] == "block 1 forward"));
        assert!(text.contains(&format!("rank {rank}: timeline")), "{text}");
    }
    assert!(text.contains("with compute running beside it"), "{text}");
}

#[test]
fn a_dualpipe_timeline_shows_the_pairs_backward_beside_its_forward() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    // DualPipe on 2 ranks × experts over 2: 4 micro-batches of 2 per pipeline, with pairs.
    let cfg = deep(
        d,
        "tlp",
        "steps = 2",
        2,
        "pp = 2\nep = 2\nschedule = \"dualpipe\"",
    );
    let (_, traces) = train_with_timeline(d, 4, &cfg, "tlp");
    for (rank, ev) in traces.iter().enumerate() {
        // The pairs' backwards on rows of their own (lane 1: tids 4..6), with their
        // exchanges; the pipeline's receives on the main lane.
        let lane1 = |cat: &str| {
            ev.iter()
                .filter(|e| e["tid"].as_u64().is_some_and(|t| t > 3) && e["cat"] == cat)
                .count()
        };
        assert!(lane1("compute") > 0 && lane1("comm") > 0, "rank {rank}");
        assert!(
            ev.iter().any(|e| e["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("pipeline receive"))),
            "rank {rank}"
        );
    }
}

#[test]
fn a_rank_that_fails_ends_the_job_with_its_name_and_no_half_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let cfg = with_layout(d, "dies", "steps = 4\ncheckpoint_every = 2", "dp = 2");
    // Rank 0 cannot prepare the step-2 checkpoint: its temporary directory's name is taken by
    // a file; no rank writes its shard.
    let ck = d.join("dies/checkpoints");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(ck.join(".tmp-step-00000002"), "in the way").unwrap();
    let mut c = mpirun(2);
    c.current_dir(d)
        .arg(tokenmill_bin())
        .args(["train", "--quiet", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > std::time::Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("the job did not end after a rank failed");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    // The failing rank is named — in its own line, or in the other rank's, which says whose
    // failure ended the job (mpirun may cut the line of the rank it is tearing down).
    assert!(err.contains("rank 0 of 2"), "{err}");
    assert!(
        err.contains("could not prepare the checkpoint directory"),
        "{err}"
    );
    assert!(err.contains("ending the job"), "{err}");
    // No checkpoint of step 2 or later, and `latest` (if any) names a complete one.
    assert!(!ck.join("step-00000002").exists());
    assert!(!ck.join("step-00000004").exists());
    if let Ok(latest) = std::fs::read_to_string(ck.join("latest")) {
        assert!(ck.join(latest.trim()).join("state.json").is_file());
    }
}
