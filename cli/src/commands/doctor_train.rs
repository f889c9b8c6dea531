//! The training parts of the device check: the `small` preset trained for a few steps on the
//! CPU and on the GPU from the same generated dataset and the same initial weights, in fp32,
//! bf16 and fp8, and the two loss curves compared step by step ([`compare`]); then the
//! training throughput of the `small` and `1b` presets on the GPU ([`throughput`]).

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use tokenmill_kernels::backend::DeviceCounters;
use tokenmill_pipelines::train::{read_config, train_in};
use tokenmill_trainer::ModelConfig;
use tokenmill_trainer::cost::flops_per_token;

use super::doctor::Curve;
use super::quickstart::{QuickstartConfig, quickstart};

/// Relative loss tolerance per precision over the first steps: the GPU sums in other orders
/// (cuBLAS, the kernels' reductions), so the curves drift apart at the rounding level of each
/// precision.
fn tolerance(precision: &str) -> f64 {
    match precision {
        "fp32" => 1e-3,
        "bf16" => 5e-3,
        _ => 1e-2,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Losses, tokens/s and MFU by step from a run's `log.jsonl`.
fn read_log(run: &Path) -> anyhow::Result<Logged> {
    let path = run.join("log.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let mut l = Logged::default();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if v["kind"] == "train" {
            l.loss.push(v["loss"].as_f64().unwrap_or(f64::NAN));
            l.tps.push(v["tokens_per_s"].as_f64().unwrap_or(f64::NAN));
            l.mfu.push(v["mfu"].as_f64().unwrap_or(f64::NAN));
            l.device
                .push(serde_json::from_value(v["device"].clone()).ok());
        }
    }
    Ok(l)
}

/// A run's training lines.
#[derive(Debug, Clone, Default)]
struct Logged {
    loss: Vec<f64>,
    tps: Vec<f64>,
    mfu: Vec<f64>,
    /// On a device: each step's copies and waits.
    device: Vec<Option<DeviceCounters>>,
}

impl Logged {
    /// The median over the steps after the first of `f` of each step's device counters, or
    /// `None` where a step has none (the CPU).
    fn device_median(&self, f: impl Fn(&DeviceCounters) -> f64) -> Option<f64> {
        let v: Option<Vec<f64>> = self
            .device
            .iter()
            .skip(1)
            .map(|d| d.as_ref().map(&f))
            .collect();
        v.filter(|v| !v.is_empty()).map(median)
    }
}

/// The generated dataset both parts train on (`out/dataset`), made once per working
/// directory and seed (the empty file `dataset-seed-S` says which seed made it); returns its
/// tokenizer's vocabulary size.
fn dataset(out: &Path, seed: u64) -> anyhow::Result<usize> {
    std::fs::create_dir_all(out)?;
    let made = out.join(format!("dataset-seed-{seed}"));
    let dir = out.join("dataset");
    let vocab = |dir: &Path| -> anyhow::Result<usize> {
        let ds = tokenmill_shards::Dataset::open(dir)?;
        Ok(ds.manifest().tokenizer.vocab_size as usize)
    };
    if made.exists()
        && let Ok(v) = vocab(&dir)
    {
        return Ok(v);
    }
    // Whatever dataset was there is replaced: no marker of another seed may vouch for it.
    for e in std::fs::read_dir(out)?.flatten() {
        if e.file_name().to_string_lossy().starts_with("dataset-seed-") {
            std::fs::remove_file(e.path())?;
        }
    }
    let dir = quickstart(&QuickstartConfig {
        out: out.to_path_buf(),
        docs: 3000,
        files: 4,
        vocab_size: 4096,
        seed,
        threads: 0,
        quiet: true,
        train_steps: 0,
    })?;
    std::fs::write(&made, b"")?;
    vocab(&dir)
}

/// One training run of the device check, on `out/dataset`.
struct Run<'a> {
    /// Its directory under `out` (and `NAME.toml` beside it).
    name: String,
    preset: &'a str,
    vocab: usize,
    /// Train the preset's MTP module (the transformers anchor has none).
    mtp: bool,
    seq: u64,
    batch: u64,
    /// Peak and final learning rate, warm-up steps (then constant).
    lr: (f64, f64, u64),
    steps: u64,
    seed: u64,
    precision: &'a str,
    device: &'a str,
}

/// Writes the run's configuration, trains it and reads its log back (losses, tokens/s and MFU
/// by step).
fn train_run(out: &Path, r: &Run<'_>) -> anyhow::Result<Logged> {
    let Run {
        name,
        preset,
        vocab,
        seq,
        batch,
        steps,
        seed,
        precision,
        device,
        ..
    } = r;
    let mtp = if r.mtp {
        ""
    } else {
        "num_nextn_predict_layers = 0\n"
    };
    let (peak, min, warmup) = r.lr;
    // `fp8-cublaslt`, `fp8-mma`, `fp8-cublaslt+mma`: fp8 with the FP8 GEMMs on the tensor
    // cores, through cuBLASLt, our kernel (wgmma on Hopper, else mma.sync), or the dense ones
    // through the first and the experts' through the second (a GPU's choices).
    let (precision, fp8_gemm) = match *precision {
        "fp8-cublaslt" => ("fp8", "fp8_gemm = \"cublaslt\"\n"),
        "fp8-mma" => ("fp8", "fp8_gemm = \"mma\"\n"),
        "fp8-cublaslt+mma" => ("fp8", "fp8_gemm = \"cublaslt+mma\"\n"),
        p => (p, ""),
    };
    // `cuda-managed-deferred`: managed memory with `defer_waits`.
    let (device, defer) = match *device {
        "cuda-managed-deferred" => ("cuda-managed", "defer_waits = true\n"),
        d => (d, ""),
    };
    let toml = format!(
        r#"[model]
preset = "{preset}"
vocab_size = {vocab}
{mtp}
[data]
train = "dataset"
seq_len = {seq}
batch = {batch}

[lr]
peak = {peak:e}
min = {min:e}
warmup = {warmup}
constant = {steps}
decay = 0

[train]
out = "{name}"
steps = {steps}
checkpoint_every = 0
final_checkpoint = false
eval_every = 0
init_seed = {seed}
precision = "{precision}"
device = "{device}"
{fp8_gemm}{defer}"#
    );
    let path = out.join(format!("{name}.toml"));
    std::fs::write(&path, toml)?;
    let cfg = read_config(&path)?;
    let run_dir = cfg.train.out.clone();
    let t = std::time::Instant::now();
    train_in(cfg, false, true, None)
        .with_context(|| format!("{preset} in {precision} on {device}"))?;
    println!(
        "   {preset} {precision} on {device}: {steps} steps in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    read_log(&run_dir)
}

/// Generates the dataset under `out` and compares training on `other` (`cuda`; `cpu` to test
/// the comparison itself) with the CPU in each precision: the `small` preset, batch 8 × 256,
/// or at `rehearsal` sizes `tiny`, batch 2 × 32.
pub fn compare(
    out: &Path,
    steps: u64,
    seed: u64,
    other: &str,
    rehearsal: bool,
) -> anyhow::Result<Vec<Curve>> {
    let (preset, seq, batch) = if rehearsal {
        ("tiny", 32, 2)
    } else {
        ("small", 256, 8)
    };
    let vocab = dataset(out, seed)?;
    let mut curves = Vec::new();
    let mut cpu_fp8 = None;
    // fp8-cublaslt, fp8-mma, fp8-cublaslt+mma: the GPU's FP8 GEMMs on the tensor cores
    // against the CPU's fp8 run (a GPU's choices: not when comparing the CPU with itself).
    let precisions: &[&str] = if other == "cpu" {
        &["fp32", "bf16", "fp8"]
    } else {
        &[
            "fp32",
            "bf16",
            "fp8",
            "fp8-cublaslt",
            "fp8-mma",
            "fp8-cublaslt+mma",
        ]
    };
    for &precision in precisions {
        let mut logs = Vec::new();
        for (i, device) in ["cpu", other].into_iter().enumerate() {
            if precision.starts_with("fp8-") && device == "cpu" {
                logs.push(cpu_fp8.clone().context("the CPU's fp8 run")?);
                continue;
            }
            logs.push(train_run(
                out,
                &Run {
                    name: format!("run-{precision}-{i}-{device}"),
                    preset,
                    vocab,
                    mtp: true,
                    seq,
                    batch,
                    lr: (1e-3, 1e-4, 5),
                    steps,
                    seed,
                    precision,
                    device,
                },
            )?);
        }
        let (gpu, cpu) = (logs.pop().expect("two runs"), logs.pop().expect("two runs"));
        if precision == "fp8" {
            cpu_fp8 = Some(cpu.clone());
        }
        let max_rel = cpu
            .loss
            .iter()
            .zip(&gpu.loss)
            .map(|(c, g)| ((g - c) / c).abs())
            .fold(
                0.0,
                |m: f64, r| if r.is_nan() { f64::INFINITY } else { m.max(r) },
            );
        let tol = tolerance(precision);
        curves.push(Curve {
            precision: precision.into(),
            pass: cpu.loss.len() == gpu.loss.len() && !cpu.loss.is_empty() && max_rel <= tol,
            tokens_per_s: (median(gpu.tps), median(cpu.tps)),
            gpu_mfu: median(gpu.mfu),
            cpu: cpu.loss,
            gpu: gpu.loss,
            max_rel,
            tol,
        });
    }
    Ok(curves)
}

/// What the throughput part trains: presets × precisions, batch × sequence, steps each.
#[derive(Debug, Clone)]
pub struct ThroughputSpec {
    /// Model presets (`small`, `1b`), at their own vocabulary, grown to the generated
    /// dataset's tokenizer where that is larger (`tiny`).
    pub presets: Vec<String>,
    /// `fp32`, `bf16`, `fp8`.
    pub precisions: Vec<String>,
    /// Sequences per step.
    pub batch: u64,
    /// Tokens per sequence.
    pub seq: u64,
    /// Steps per run; the first is left out of the median (it compiles, allocates and faults in).
    pub steps: u64,
    /// No run starts after this instant (the device check's time, `--budget-s`); each one
    /// left out is named in [`Throughput`]'s caller's list of skipped work.
    pub deadline: Option<std::time::Instant>,
}

/// One run of the throughput part.
#[derive(Debug, Serialize)]
pub struct Throughput {
    /// The preset.
    pub preset: String,
    /// `fp32`, `bf16`, `fp8`.
    pub precision: String,
    /// `cuda` (`cpu` when the harness itself is tested).
    pub device: String,
    /// Parameters of the main model (no MTP module: none is trained here, as in the
    /// transformers anchor, which has none).
    pub params: u64,
    /// Parameters activated per token.
    pub activated: u64,
    /// Rows of the embedding and the head.
    pub vocab: usize,
    /// Sequences per step.
    pub batch: u64,
    /// Tokens per sequence.
    pub seq: u64,
    /// Steps run.
    pub steps: u64,
    /// Median over the steps after the first.
    pub tokens_per_s: f64,
    /// `batch × seq / tokens_per_s`, in milliseconds.
    pub step_ms: f64,
    /// Training FLOPs per token (6 × activated non-embedding parameters + attention).
    pub flops_per_token: f64,
    /// The measured dense GEMM rate of this precision on this device (FLOP/s), when known.
    pub peak_flops: Option<f64>,
    /// Model FLOPs utilisation against `peak_flops`.
    pub mfu: Option<f64>,
    /// The loss of the last step (finite, or the run is not a measurement).
    pub last_loss: f64,
    /// Host↔device copies per step on the GPU (the seam passes host slices; `bench seam`
    /// measures the same on the CPU): the median over the steps after the first, from the
    /// run's log; `None` on the CPU.
    pub copies_per_step: Option<f64>,
    /// Bytes those copies moved to the device per step, in GB.
    pub to_device_gb_per_step: Option<f64>,
    /// ... and back to the host.
    pub to_host_gb_per_step: Option<f64>,
    /// The seconds those bytes take at the copy rates part 2 measured from and to pageable
    /// host memory (an estimate from two measurements; the copies are synchronous, so this is
    /// time the step spends not computing).
    pub copy_s_per_step: Option<f64>,
    /// Stream synchronisations per step on the GPU (the median over the steps after the
    /// first, from the run's log): after each the device idles until the host launches again.
    pub waits_per_step: Option<f64>,
    /// Milliseconds per step the host spent blocked on the GPU, in those waits and in copies
    /// (the median as above). The GPU computes at most this plus what it overlaps with the
    /// host's launches: where `blocked_ms` is a small share of `step_ms`, the host — the
    /// launches, the synchronisations' latency, the model's code between calls — bounds the
    /// step, and fewer waits (an asynchronous seam) would pay; where it is most of it, the
    /// kernels do.
    pub blocked_ms_per_step: Option<f64>,
}

/// Trains each preset × precision of `spec` on `device` from the generated dataset under
/// `out` and reports tokens/s and MFU; `peak(precision)` is the measured GEMM rate of that
/// precision on the device (FLOP/s), or `None` when part 2 could not measure it.
/// Runs not started because `spec.deadline` passed are pushed to `skipped`.
pub fn throughput(
    out: &Path,
    spec: &ThroughputSpec,
    seed: u64,
    device: &str,
    peak: &dyn Fn(&str) -> Option<f64>,
    skipped: &mut Vec<String>,
) -> anyhow::Result<Vec<Throughput>> {
    anyhow::ensure!(
        spec.steps >= 2,
        "throughput runs need at least 2 steps (the first is not counted), not {}",
        spec.steps
    );
    let ids = dataset(out, seed)?;
    let mut rows = Vec::new();
    for preset in &spec.presets {
        let mut cfg = ModelConfig::preset(preset)?;
        cfg.num_nextn_predict_layers = 0;
        // A preset's own vocabulary (its head is part of the cost), unless the dataset's ids
        // do not fit in it (`tiny`).
        cfg.vocab_size = cfg.vocab_size.max(ids);
        let counts = cfg.param_counts();
        let fpt = flops_per_token(&cfg, spec.seq);
        for precision in &spec.precisions {
            if spec
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
            {
                skipped.push(format!(
                    "throughput of {preset} in {precision} on {device}: not started, the \
                     check's time was spent"
                ));
                continue;
            }
            let logged = train_run(
                out,
                &Run {
                    name: format!("speed-{preset}-{precision}-{device}"),
                    preset,
                    vocab: cfg.vocab_size,
                    mtp: false,
                    seq: spec.seq,
                    batch: spec.batch,
                    lr: (3e-4, 3e-5, 1),
                    steps: spec.steps,
                    seed,
                    precision,
                    device,
                },
            )?;
            let (loss, tps) = (&logged.loss, &logged.tps);
            anyhow::ensure!(
                loss.len() as u64 == spec.steps,
                "{preset} in {precision}: {} of {} steps logged",
                loss.len(),
                spec.steps
            );
            let tokens_per_s = median(tps.iter().skip(1).copied().collect());
            let peak_flops = peak(precision);
            let row = Throughput {
                preset: preset.clone(),
                precision: precision.clone(),
                device: device.into(),
                params: counts.total,
                activated: counts.activated,
                vocab: cfg.vocab_size,
                batch: spec.batch,
                seq: spec.seq,
                steps: spec.steps,
                tokens_per_s,
                step_ms: 1e3 * (spec.batch * spec.seq) as f64 / tokens_per_s,
                flops_per_token: fpt,
                peak_flops,
                mfu: peak_flops.map(|p| tokens_per_s * fpt / p),
                last_loss: loss.last().copied().unwrap_or(f64::NAN),
                copies_per_step: logged.device_median(|d| d.copies as f64),
                to_device_gb_per_step: logged.device_median(|d| d.to_device as f64 / 1e9),
                to_host_gb_per_step: logged.device_median(|d| d.to_host as f64 / 1e9),
                copy_s_per_step: None,
                waits_per_step: logged.device_median(|d| d.waits as f64),
                blocked_ms_per_step: logged.device_median(|d| d.blocked_ns as f64 / 1e6),
            };
            rows.push(row);
        }
    }
    Ok(rows)
}
