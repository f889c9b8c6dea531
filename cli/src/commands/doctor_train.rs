//! The training part of the device check: the `small` preset trained for a few steps on the
//! CPU and on the GPU from the same generated dataset and the same initial weights, in fp32,
//! bf16 and fp8, and the two loss curves compared step by step.

use std::path::Path;

use anyhow::Context;
use tokenmill_pipelines::train::{read_config, train_in};

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
fn read_log(run: &Path) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let path = run.join("log.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let (mut loss, mut tps, mut mfu) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if v["kind"] == "train" {
            loss.push(v["loss"].as_f64().unwrap_or(f64::NAN));
            tps.push(v["tokens_per_s"].as_f64().unwrap_or(f64::NAN));
            mfu.push(v["mfu"].as_f64().unwrap_or(f64::NAN));
        }
    }
    Ok((loss, tps, mfu))
}

/// Generates the dataset under `out` and compares training on `other` (`cuda`; `cpu` to test
/// the comparison itself) with the CPU in each precision.
pub fn compare(out: &Path, steps: u64, seed: u64, other: &str) -> anyhow::Result<Vec<Curve>> {
    std::fs::create_dir_all(out)?;
    let dataset = quickstart(&QuickstartConfig {
        out: out.to_path_buf(),
        docs: 3000,
        files: 4,
        vocab_size: 4096,
        seed,
        threads: 0,
        quiet: true,
        train_steps: 0,
    })?;
    let vocab = tokenmill_shards::Dataset::open(&dataset)?
        .manifest()
        .tokenizer
        .vocab_size;
    let mut curves = Vec::new();
    for precision in ["fp32", "bf16", "fp8"] {
        let mut logs = Vec::new();
        for (i, device) in ["cpu", other].into_iter().enumerate() {
            let run = format!("run-{precision}-{i}-{device}");
            let toml = format!(
                r#"[model]
preset = "small"
vocab_size = {vocab}

[data]
train = "dataset"
seq_len = 256
batch = 8

[lr]
peak = 1e-3
min = 1e-4
warmup = 5
constant = {steps}
decay = 0

[train]
out = "{run}"
steps = {steps}
checkpoint_every = 0
eval_every = 0
init_seed = {seed}
precision = "{precision}"
device = "{device}"
"#
            );
            let path = out.join(format!("{run}.toml"));
            std::fs::write(&path, toml)?;
            let cfg = read_config(&path)?;
            let run_dir = cfg.train.out.clone();
            let t = std::time::Instant::now();
            train_in(cfg, false, true, None).with_context(|| format!("{precision} on {device}"))?;
            println!(
                "   {precision} on {device}: {steps} steps in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            logs.push(read_log(&run_dir)?);
        }
        let (gpu, cpu) = (logs.pop().expect("two runs"), logs.pop().expect("two runs"));
        let max_rel = cpu
            .0
            .iter()
            .zip(&gpu.0)
            .map(|(c, g)| ((g - c) / c).abs())
            .fold(
                0.0,
                |m: f64, r| if r.is_nan() { f64::INFINITY } else { m.max(r) },
            );
        let tol = tolerance(precision);
        curves.push(Curve {
            precision: precision.into(),
            pass: cpu.0.len() == gpu.0.len() && !cpu.0.is_empty() && max_rel <= tol,
            tokens_per_s: (median(gpu.1), median(cpu.1)),
            gpu_mfu: median(gpu.2),
            cpu: cpu.0,
            gpu: gpu.0,
            max_rel,
            tol,
        });
    }
    Ok(curves)
}
