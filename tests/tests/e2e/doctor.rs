//! `tokenmill doctor`: the parts of the device check that run without a GPU.

use std::process::Command;

use tokenmill_tests::tokenmill_bin;

/// Runs `tokenmill doctor ARGS --out DIR/work --json DIR/report.json`, which must succeed;
/// returns its stdout and the report.
fn doctor(dir: &std::path::Path, args: &[&str]) -> (String, serde_json::Value) {
    let json = dir.join("report.json");
    let out = Command::new(tokenmill_bin())
        .arg("doctor")
        .args(args)
        .arg("--out")
        .arg(dir.join("work"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (stdout, rep)
}

/// The training comparison of the device check, with the CPU on both sides: it generates its
/// dataset, trains the `small` preset in fp32, bf16 and fp8 twice, reads both logs back, and
/// finds identical curves (the same process, the same arithmetic). On a GPU the second run is
/// the CUDA backend; this proves the harness around it.
#[test]
fn the_training_comparison_of_the_device_check_finds_identical_cpu_curves() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rep) = doctor(dir.path(), &["--train-cpu-vs-cpu", "--train-steps", "2"]);
    let curves = rep["training"].as_array().unwrap();
    let precisions: Vec<&str> = curves
        .iter()
        .map(|c| c["precision"].as_str().unwrap())
        .collect();
    assert_eq!(precisions, ["fp32", "bf16", "fp8"]);
    for c in curves {
        let (a, b) = (c["cpu"].as_array().unwrap(), c["gpu"].as_array().unwrap());
        assert_eq!(a.len(), 2, "{c}");
        assert_eq!(a, b, "{c}");
        assert!(a.iter().all(|l| l.as_f64().unwrap().is_finite()), "{c}");
        assert_eq!(c["max_rel"].as_f64(), Some(0.0));
        assert_eq!(c["pass"], true);
    }
}

/// Without a CUDA driver, `doctor --gpu` fails and says what is missing, and `[train] device =
/// "cuda"` is refused with the same message rather than falling back silently.
#[test]
fn without_a_gpu_driver_the_device_check_says_what_is_missing() {
    if tokenmill_cuda::libs::driver().is_ok() {
        // A GPU machine: the real check runs in tests/device/check.sh.
        let out = Command::new(tokenmill_bin())
            .args(["doctor", "--gpu", "--train-steps", "0"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        return;
    }
    let out = Command::new(tokenmill_bin())
        .args(["doctor", "--gpu"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no CUDA driver (libcuda.so)"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("train.toml");
    std::fs::write(
        &cfg,
        "[model]\npreset = \"tiny\"\n\n[data]\ntrain = \"dataset\"\nseq_len = 32\nbatch = 2\n\n\
         [train]\nout = \"run\"\nsteps = 1\ndevice = \"cuda\"\n",
    )
    .unwrap();
    let out = Command::new(tokenmill_bin())
        .args(["train", "--quiet", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no CUDA driver (libcuda.so)"), "{err}");
}

/// Part 4 of the device check (training throughput per preset and precision) with the CPU as
/// the device: every run is trained for its steps and read back, tokens/s is the median over
/// the steps after the first, the step time and MFU follow from it, the parameter counts are
/// the preset's without its MTP module (the transformers anchor has none), and the report
/// carries it all. On a GPU the same runs train with `device = "cuda"`.
#[test]
fn the_throughput_part_of_the_device_check_measures_each_preset_and_precision() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, rep) = doctor(
        dir.path(),
        &[
            "--speed-on-cpu",
            "--speed-presets",
            "tiny",
            "--speed-precisions",
            "fp32,bf16",
            "--speed-steps",
            "3",
            "--speed-batch",
            "2",
            "--speed-seq",
            "32",
        ],
    );
    assert!(
        stdout.contains("tokens/s") && stdout.contains("MFU"),
        "{stdout}"
    );
    let rows = rep["throughput"].as_array().unwrap();
    let precisions: Vec<&str> = rows
        .iter()
        .map(|r| r["precision"].as_str().unwrap())
        .collect();
    assert_eq!(precisions, ["fp32", "bf16"]);
    let ids = tokenmill_shards::Dataset::open(&dir.path().join("work/dataset"))
        .unwrap()
        .manifest()
        .tokenizer
        .vocab_size as usize;
    assert!(ids > 512, "{ids}");
    let mut tiny = tokenmill_trainer::ModelConfig::preset("tiny").unwrap();
    tiny.num_nextn_predict_layers = 0;
    for r in rows {
        assert_eq!(r["preset"], "tiny", "{r}");
        assert_eq!(r["device"], "cpu", "{r}");
        assert_eq!(r["steps"], 3, "{r}");
        // The dataset's ids do not fit in tiny's 512: the vocabulary grows to the tokenizer's.
        tiny.vocab_size = ids;
        assert_eq!(r["vocab"].as_u64(), Some(ids as u64), "{r}");
        assert_eq!(r["params"].as_u64(), Some(tiny.param_counts().total), "{r}");
        assert_eq!(
            r["activated"].as_u64(),
            Some(tiny.param_counts().activated),
            "{r}"
        );
        let tps = r["tokens_per_s"].as_f64().unwrap();
        assert!(tps.is_finite() && tps > 0.0, "{r}");
        let step_ms = r["step_ms"].as_f64().unwrap();
        assert!((step_ms - 1e3 * 64.0 / tps).abs() < 1e-6 * step_ms, "{r}");
        let (fpt, peak, mfu) = (
            r["flops_per_token"].as_f64().unwrap(),
            r["peak_flops"].as_f64().unwrap(),
            r["mfu"].as_f64().unwrap(),
        );
        assert!(fpt > 0.0 && peak > 0.0, "{r}");
        assert!(
            (mfu - tps * fpt / peak).abs() < 1e-9 * mfu.max(1e-12),
            "{r}"
        );
        assert!(r["last_loss"].as_f64().unwrap().is_finite(), "{r}");
        // Host↔device copies are counted on the GPU only.
        for f in [
            "copies_per_step",
            "to_device_gb_per_step",
            "to_host_gb_per_step",
            "copy_s_per_step",
            "waits_per_step",
            "blocked_ms_per_step",
        ] {
            assert!(r[f].is_null(), "{f}: {r}");
        }
        // `final_checkpoint = false`: a 1B run must not write 12 GB it never reads.
        let run = dir.path().join(format!(
            "work/speed-tiny-{}-cpu",
            r["precision"].as_str().unwrap()
        ));
        assert!(run.join("log.jsonl").exists() && !run.join("checkpoints/latest").exists());
    }
}

/// `bench seam` counts what one training step asks of the backend seam. Checked against what
/// the model must move whatever the backend: the logits go up and their gradient comes back
/// once (the fused cross-entropy), every MoE layer routes all its tokens in one call, and the
/// total is the sum of the operations.
#[test]
fn the_seam_benchmark_counts_each_operation_of_a_step() {
    use tokenmill_trainer::ModelConfig;
    let out = Command::new(tokenmill_bin())
        .args([
            "bench", "seam", "--preset", "tiny", "--batch", "2", "--seq", "32", "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let tiny = ModelConfig::preset("tiny").unwrap();
    let (b, s) = (2u64, 32u64);
    let ops = t["ops"].as_object().unwrap();
    let get = |op: &str, f: &str| ops[op][f].as_u64().unwrap();
    // The fused cross-entropy: logits [b·s, vocab] up and back as their gradient, f32, with
    // the targets and the loss gradients up, the losses and log-sum-exps back.
    let logits = b * s * tiny.vocab_size as u64 * 4;
    assert_eq!(get("cross_entropy_fused", "calls"), 1);
    assert_eq!(
        get("cross_entropy_fused", "to_device"),
        logits + b * s * 4 * 2
    );
    assert_eq!(
        get("cross_entropy_fused", "to_host"),
        logits + b * s * 4 * 2
    );
    // One router call per MoE layer, whatever the number of tokens.
    let moe = (0..tiny.num_hidden_layers)
        .filter(|&l| tiny.is_moe(l))
        .count() as u64;
    assert!(moe > 0);
    assert_eq!(get("route", "calls"), moe);
    let e = tiny.n_routed_experts as u64;
    assert_eq!(get("route", "to_device"), moe * (b * s * e + e) * 4);
    // The total is the sum.
    for f in ["calls", "to_device", "to_host"] {
        let sum: u64 = ops.values().map(|v| v[f].as_u64().unwrap()).sum();
        assert_eq!(t["total"][f].as_u64(), Some(sum), "{f}");
    }
    assert_eq!(t["preset"], "tiny");
    assert!(get("matmul", "calls") > 0);
    // By buffer: weights only go up; every gradient that goes up (accumulated into) comes
    // back; the three kinds add up to the total.
    let kinds = t["by_kind"].as_object().unwrap();
    let kind = |k: &str, f: &str| kinds[k][f].as_u64().unwrap();
    assert_eq!(kind("parameters", "to_host"), 0);
    assert!(kind("parameters", "to_device") >= tiny.param_counts().total * 4);
    assert_eq!(kind("gradients", "to_device"), kind("gradients", "to_host"));
    for f in ["to_device", "to_host"] {
        let sum: u64 = kinds.values().map(|v| v[f].as_u64().unwrap()).sum();
        assert_eq!(t["total"][f].as_u64(), Some(sum), "{f}");
    }
    // The copying seam is the CUDA backend's: the model moves its rows on the host, so no data
    // movement crosses it.
    for op in ["copy", "gather_rows", "scatter_add_rows", "dot_rows"] {
        assert!(ops.get(op).is_none(), "{op} crossed the copying seam");
    }
    // Under residency the data movement is the backend's (more calls), and what still goes up
    // is what host code wrote: the token ids (embedding), targets and loss weights (the fused
    // cross-entropy), routing tables — bytes, not the megabytes of activations. Weights and
    // gradients stay (held tensor by tensor, so not even as page edges).
    let r = &t["resident"];
    let rop = |op: &str| r["ops"][op]["to_device"].as_u64().unwrap_or(0);
    let edge = r["edge"].as_u64().unwrap();
    assert!(t["resident_calls"].as_u64().unwrap() > t["total"]["calls"].as_u64().unwrap());
    assert!(rop("embedding_fwd") >= b * s * 4, "the ids go up");
    assert!(
        rop("cross_entropy_fused") >= b * s * 4 * 2,
        "targets and weights go up"
    );
    let rkinds = r["by_kind"].as_object().unwrap();
    assert!(
        rkinds.get("gradients").is_none(),
        "gradients stay on the device"
    );
    assert!(
        rkinds.get("parameters").is_none(),
        "weights stay on the device"
    );
    let up: u64 = r["ops"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["to_device"].as_u64().unwrap())
        .sum();
    let copying = t["total"]["to_device"].as_u64().unwrap();
    assert!(
        (up - edge) * 100 < copying,
        "{up} B up under residency ({edge} B edges) against {copying} B through the copying seam"
    );
    // The optimizer on the device: the gradients and weights it reads are there; what goes up
    // is its own constant tables, once — a kind byte per parameter (pages of zeros, plain
    // kinds, cost nothing) and the segment tables of the norms (16 bytes per segment of at most
    // 16,384 elements or per tensor).
    let params = t["param_bytes"].as_u64().unwrap() / 4;
    let o = &t["optimizer"];
    let okinds = o["by_kind"].as_object().unwrap();
    assert!(
        okinds.keys().all(|k| k == "activations"),
        "the optimizer copied {okinds:?}"
    );
    let oup = okinds["activations"]["to_device"].as_u64().unwrap();
    let tensors = tokenmill_trainer::model::Model::new(tiny.clone())
        .unwrap()
        .layout
        .specs
        .len() as u64;
    assert!(
        (1..=params + 2 * 16 * (params / 16_384 + 2 * tensors)).contains(&oup),
        "{oup} B up for the optimizer of {params} parameters"
    );
    let ocalls = t["optimizer_calls"].as_u64().unwrap();
    assert!(ocalls >= 3, "two sums of squares and AdamW: {ocalls} calls");
    // A second step on new tokens after the update: the weights AdamW wrote stay; of the
    // parameters only the routing biases the host moved go up (at most two pages each).
    let second = &t["second_step"];
    let skinds = second["by_kind"].as_object().unwrap();
    assert!(skinds.get("gradients").is_none(), "{skinds:?}");
    let biased = skinds
        .get("parameters")
        .map_or(0, |v| v["to_device"].as_u64().unwrap());
    assert!(biased <= moe * 2 * 4096, "{biased} B of parameters up");
    assert!(rop("embedding_fwd") > 0);
    let sup = |op: &str| second["ops"][op]["to_device"].as_u64().unwrap_or(0);
    assert_eq!(sup("embedding_fwd"), rop("embedding_fwd"), "new ids go up");
    assert_eq!(
        t["second_step_calls"].as_u64(),
        t["resident_calls"].as_u64(),
        "the same operations"
    );
    // In managed memory (`device = "cuda-managed"`, blocks from 64 KiB on, recorded by the
    // binary's allocator): what is that large — the logits and their gradient among it — is
    // reached, the rest copied; the token ids (256 bytes here) still go up.
    assert_eq!(t["managed_from"].as_u64(), Some(64 << 10));
    let m = &t["managed_step"];
    let (mup, mback) = (
        m["to_device"].as_u64().unwrap(),
        m["to_host"].as_u64().unwrap(),
    );
    assert!(mup >= b * s * 4, "the ids go up: {m}");
    let copying_all = copying + t["total"]["to_host"].as_u64().unwrap();
    assert!(
        mup + mback + 2 * logits <= copying_all,
        "managed memory copies {mup} + {mback} B, the copying seam {copying_all} B"
    );
    assert!(m["copies"].as_u64().unwrap() >= m["calls"].as_u64().unwrap());
    assert!(m["calls"].as_u64().unwrap() <= t["second_step_calls"].as_u64().unwrap());
}
