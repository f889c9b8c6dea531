//! `tokenmill bench train`: training throughput (tokens/s), MFU against this machine's measured
//! GEMM peak, and peak memory of one configuration, side by side with `transformers`'
//! `DeepseekV3ForCausalLM` on CPU torch (eager, same threads, batch, sequence length, AdamW and
//! clipping; `tests/peers/bench_torch_train.py`). Each of tokenmill's precisions (`fp32`,
//! `bf16` on AMX/AVX512-BF16 when the CPU has them) runs beside torch FP32 eager and torch with
//! BF16 autocast, the way PyTorch users train in BF16 on a CPU, each twice: with glibc's
//! `malloc` defaults and with freed memory kept by the process ([`MALLOC_KEEP`]), torch's
//! faster setting on this project's machine. The torch model has no MTP, so
//! the side-by-side rows run without it; a last row adds MTP to the first precision. MFU is
//! against the measured peak of the row's arithmetic: the FP32 GEMM, or the BF16 unit in use
//! on registers (AMX tiles or AVX512-BF16 vectors).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tokenmill_kernels::Cpu;
use tokenmill_kernels::cpu::bf16gemm;
use tokenmill_trainer::ModelConfig;
use tokenmill_trainer::cost::{flops_per_token, measure_gemm_peak_over, memory_model};
use tokenmill_trainer::model::{Batch, LossWeights, Model, WgradMode};
use tokenmill_trainer::ops::Precision;
use tokenmill_trainer::ops::WgradQueue;
use tokenmill_trainer::optim::{AdamW, AdamWConfig, clip_scale};
use tokenmill_trainer::rng::Rng;

use anyhow::Result;
use tokenmill_pipelines::Error;
use tokenmill_pipelines::stats::peak_rss_bytes;

/// Settings of the benchmark.
#[derive(Debug, Clone)]
pub struct TrainBenchConfig {
    pub preset: String,
    pub batch: usize,
    pub seq: usize,
    pub steps: usize,
    pub threads: usize,
    /// tokenmill's precisions, one row each.
    pub precisions: Vec<Precision>,
    /// Python with torch + transformers (None: skip the peer).
    pub python: Option<PathBuf>,
    pub script: PathBuf,
}

/// One measured configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainBenchRow {
    pub name: String,
    pub params: u64,
    pub step_ms: f64,
    /// Forward / backward / optimizer parts of the step (ms; tokenmill rows only).
    pub parts_ms: Option<(f64, f64, f64)>,
    pub tokens_per_s: f64,
    pub mfu: f64,
    pub peak_rss_mb: f64,
    pub last_loss: f64,
}

/// The loss weights the benchmarks train with: MTP at λ = 0.3 when the model has it, the
/// sequence-wise balance loss at α = 10⁻⁴.
pub fn loss_weights(cfg: &ModelConfig) -> LossWeights {
    LossWeights {
        mtp_lambda: if cfg.num_nextn_predict_layers > 0 {
            0.3
        } else {
            0.0
        },
        balance_alpha: 0.0001,
    }
}

fn run_rust(
    cfg: &ModelConfig,
    o: &TrainBenchConfig,
    precision: Precision,
    name: &str,
    peak: f64,
) -> Result<TrainBenchRow> {
    let mut model = Model::new(cfg.clone())?;
    model.precision = precision;
    let mut params: Vec<f32> = model.init(1);
    let mut grads = vec![0f32; params.len()];
    let mut opt = AdamW::new(AdamWConfig::default(), &model.layout);
    let mut rng = Rng::new(7);
    let w = loss_weights(cfg);
    let mut times = Vec::new();
    let mut parts = Vec::new();
    let mut last = f64::NAN;
    for i in 0..o.steps + 1 {
        let tokens: Vec<u32> = (0..o.batch * (o.seq + 1))
            .map(|_| (rng.next_u64() % cfg.vocab_size as u64) as u32)
            .collect();
        let t = Instant::now();
        let bt = Batch {
            starts: None,
            distill: None,
            tokens: &tokens,
            mask: None,
            b: o.batch,
            s: o.seq,
        };
        let mut f = model.forward(&Cpu, &params, &bt, w, true)?;
        let t_f = t.elapsed().as_secs_f64();
        grads.fill(0.0);
        let mut q = WgradQueue::new();
        model.backward(
            &Cpu,
            &params,
            &mut f,
            &mut grads,
            &mut q,
            WgradMode::Immediate,
        );
        let t_b = t.elapsed().as_secs_f64();
        let norm = opt.grad_norm(&grads);
        opt.step(&mut params, &grads, 1e-4, clip_scale(norm, 1.0));
        last = f.main_loss;
        drop(f);
        if i > 0 {
            let all = t.elapsed().as_secs_f64();
            times.push(all);
            parts.push((all, t_f, t_b - t_f, all - t_b));
        }
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    parts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let p = parts[parts.len() / 2];
    let tokens = (o.batch * o.seq) as f64;
    Ok(TrainBenchRow {
        name: name.into(),
        params: cfg.param_counts().total + cfg.param_counts().mtp,
        step_ms: med * 1e3,
        parts_ms: Some((p.1 * 1e3, p.2 * 1e3, p.3 * 1e3)),
        tokens_per_s: tokens / med,
        mfu: tokens * flops_per_token(cfg, o.seq as u64) / med / peak,
        peak_rss_mb: peak_rss_bytes().map_or(0.0, |b| b as f64 / 1048576.0),
        last_loss: last,
    })
}

/// glibc `malloc` settings under which freed memory stays with the process: torch's step frees
/// and allocates the same large activations every step, and with glibc's defaults (blocks over
/// its mmap threshold returned to the kernel) each step faults them in and has the kernel clear
/// them again — the way tokenmill's own allocator avoids (`cli/src/alloc.rs`). Measured here:
/// torch fp32 751 → 1,439 tokens/s on the small preset at 8 × 512.
const MALLOC_KEEP: [(&str, &str); 3] = [
    ("MALLOC_MMAP_THRESHOLD_", "4294967296"),
    ("MALLOC_TRIM_THRESHOLD_", "1099511627776"),
    ("MALLOC_TOP_PAD_", "1073741824"),
];

fn run_torch(
    cfg: &ModelConfig,
    o: &TrainBenchConfig,
    py: &Path,
    autocast: bool,
    malloc_keep: bool,
    peak: f64,
) -> Result<TrainBenchRow> {
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let json =
        serde_json::to_string_pretty(&tokenmill_trainer::hf::hf_config(cfg)).expect("serialises");
    std::fs::write(dir.path().join("config.json"), json).map_err(|e| Error::io(dir.path(), e))?;
    let mut cmd = Command::new(py);
    if malloc_keep {
        cmd.envs(MALLOC_KEEP);
    }
    let out = cmd
        .arg(&o.script)
        .args(["--dir", &dir.path().display().to_string()])
        .args(["--batch", &o.batch.to_string(), "--seq", &o.seq.to_string()])
        .args([
            "--steps",
            &o.steps.to_string(),
            "--threads",
            &o.threads.to_string(),
        ])
        .args(if autocast {
            &["--autocast", "bf16"][..]
        } else {
            &[]
        })
        .output()
        .map_err(|e| Error::io(py, e))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} failed: {}",
            o.script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap_or("{}"))
        .map_err(|e| anyhow::anyhow!("peer output: {e}"))?;
    let step_ms = v["step_ms"].as_f64().unwrap_or(f64::NAN);
    let tokens = (o.batch * o.seq) as f64;
    Ok(TrainBenchRow {
        name: format!(
            "transformers {} / torch {} ({}, {}{})",
            v["transformers"].as_str().unwrap_or("?"),
            v["torch"].as_str().unwrap_or("?"),
            if autocast {
                "bf16 autocast"
            } else {
                "fp32 eager"
            },
            v["experts_implementation"].as_str().unwrap_or("?"),
            if malloc_keep { ", malloc kept" } else { "" }
        ),
        params: v["params"].as_u64().unwrap_or(0),
        step_ms,
        parts_ms: None,
        tokens_per_s: tokens / (step_ms / 1e3),
        mfu: tokens * flops_per_token(cfg, o.seq as u64) / (step_ms / 1e3) / peak,
        peak_rss_mb: v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
        last_loss: v["last_loss"].as_f64().unwrap_or(f64::NAN),
    })
}

/// The measured peaks the rows' MFU is against (FLOP/s, all threads).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Peaks {
    /// tokenmill's FP32 GEMM at 1024³.
    pub fp32: f64,
    /// The BF16 unit in use and its peak on registers (`tdpbf16ps` on AMX tiles, or
    /// `vdpbf16ps` on AVX512-BF16 vectors) × threads, when the CPU has one.
    pub bf16: Option<(&'static str, f64)>,
}

impl Peaks {
    fn of(&self, p: Precision) -> f64 {
        match (p, self.bf16) {
            (Precision::Bf16, Some((_, peak))) => peak,
            _ => self.fp32,
        }
    }
}

/// The name of tokenmill's row for `p`.
fn row_name(p: Precision, mtp: Option<usize>) -> String {
    let unit = match p {
        Precision::Fp32 => "fp32".to_string(),
        Precision::Bf16 => format!(
            "bf16 on {}",
            bf16gemm::unit().map_or("emulation", |u| u.name())
        ),
        Precision::Fp8 => "fp8 (emulated)".to_string(),
    };
    match mtp {
        None => format!("tokenmill {unit}, no MTP"),
        Some(d) => format!("tokenmill {unit}, MTP D={d}"),
    }
}

/// Runs the benchmark; returns the rows and the measured peaks.
pub fn bench_train(o: &TrainBenchConfig) -> Result<(Vec<TrainBenchRow>, Peaks)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build()?;
    pool.install(|| {
        let peaks = Peaks {
            fp32: measure_gemm_peak_over(&Cpu, 0.3),
            bf16: bf16gemm::unit().and_then(|u| {
                bf16gemm::peak_gflops(u, 0.2).map(|g| (u.name(), g * 1e9 * o.threads as f64))
            }),
        };
        let mut cfg = ModelConfig::preset(&o.preset)?;
        cfg.max_position_embeddings = cfg.max_position_embeddings.max(o.seq);
        let mut rows = Vec::new();
        let mut no_mtp = cfg.clone();
        no_mtp.num_nextn_predict_layers = 0;
        for &p in &o.precisions {
            rows.push(run_rust(&no_mtp, o, p, &row_name(p, None), peaks.of(p))?);
        }
        if let Some(py) = &o.python {
            // torch with glibc's defaults, and with freed memory kept (its faster setting here).
            for keep in [false, true] {
                rows.push(run_torch(&no_mtp, o, py, false, keep, peaks.fp32)?);
                rows.push(run_torch(
                    &no_mtp,
                    o,
                    py,
                    true,
                    keep,
                    peaks.of(Precision::Bf16),
                )?);
            }
        }
        if let (true, Some(&p)) = (cfg.num_nextn_predict_layers > 0, o.precisions.first()) {
            let name = row_name(p, Some(cfg.num_nextn_predict_layers));
            rows.push(run_rust(&cfg, o, p, &name, peaks.of(p))?);
        }
        Ok((rows, peaks))
    })
}

/// The result as a table.
pub fn table(o: &TrainBenchConfig, rows: &[TrainBenchRow], peaks: Peaks) -> String {
    let cfg = ModelConfig::preset(&o.preset).ok();
    let mut s = format!(
        "preset {}  batch {} × seq {}  threads {}  measured peaks: f32 GEMM {:.1} GFLOP/s, BF16 {}\n",
        o.preset,
        o.batch,
        o.seq,
        o.threads,
        peaks.fp32 / 1e9,
        peaks
            .bf16
            .map_or("none (emulated)".into(), |(u, p)| format!(
                "{:.0} GFLOP/s on {u} (registers only)",
                p / 1e9
            ))
    );
    s.push_str(&format!(
        "{:<86} {:>11} {:>9} {:>20} {:>9} {:>6} {:>9}\n",
        "implementation", "params", "step ms", "fwd / bwd / opt ms", "tokens/s", "MFU", "peak MiB"
    ));
    for r in rows {
        let parts = r
            .parts_ms
            .map_or("-".into(), |(f, b, o)| format!("{f:.0} / {b:.0} / {o:.0}"));
        s.push_str(&format!(
            "{:<86} {:>11} {:>9.1} {:>20} {:>9.0} {:>5.1}% {:>9.0}\n",
            r.name,
            r.params,
            r.step_ms,
            parts,
            r.tokens_per_s,
            100.0 * r.mfu,
            r.peak_rss_mb
        ));
    }
    let find = |pre: &str, has: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(pre) && r.name.contains(has) && !r.name.contains("MTP D"))
    };
    let torch = |has: &str, keep: bool| {
        rows.iter().find(|r| {
            r.name.starts_with("transformers")
                && r.name.contains(has)
                && r.name.contains("malloc kept") == keep
        })
    };
    for (what, ours, theirs) in [
        (
            "fp32 vs torch fp32 eager",
            find("tokenmill fp32", ""),
            torch("fp32 eager", false),
        ),
        (
            "fp32 vs torch fp32 eager, malloc kept",
            find("tokenmill fp32", ""),
            torch("fp32 eager", true),
        ),
        (
            "bf16 vs torch bf16 autocast",
            find("tokenmill bf16", ""),
            torch("bf16 autocast", false),
        ),
        (
            "bf16 vs torch bf16 autocast, malloc kept",
            find("tokenmill bf16", ""),
            torch("bf16 autocast", true),
        ),
        (
            "bf16 vs tokenmill fp32",
            find("tokenmill bf16", ""),
            find("tokenmill fp32", ""),
        ),
    ] {
        if let (Some(a), Some(b)) = (ours, theirs) {
            s.push_str(&format!(
                "speed-up, {what}: {:.2}×\n",
                a.tokens_per_s / b.tokens_per_s
            ));
        }
    }
    if let Some(c) = cfg {
        let (per_param, per_tok) = memory_model(&c);
        let p = (c.param_counts().total + c.param_counts().mtp) as f64;
        s.push_str(&format!(
            "memory model: {per_param:.0} B/param × {:.1} M params = {:.0} MiB state + {:.1} KiB/token × {} tokens = {:.0} MiB activations\n",
            p / 1e6,
            per_param * p / 1048576.0,
            per_tok / 1024.0,
            o.batch * o.seq,
            per_tok * (o.batch * o.seq) as f64 / 1048576.0
        ));
    }
    s
}

/// `tokenmill bench train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model preset (tiny, small, 1b, deepseek-v3, deepseek-v2-lite).
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// Timed steps after the warm-up (tokenmill reports their median, torch their mean).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Threads for tokenmill and for torch.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// tokenmill's precisions to run, one row each (fp32, bf16, fp8).
    #[arg(long, value_delimiter = ',', default_value = "fp32,bf16")]
    pub precision: Vec<String>,
    /// Python with torch + transformers (default: .venv-peers/bin/python if present).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Skip the PyTorch side.
    #[arg(long)]
    pub no_peer: bool,
    /// The Python peer script (transformers DeepseekV3ForCausalLM).
    #[arg(long, default_value = "tests/peers/bench_torch_train.py")]
    pub script: PathBuf,
    /// Print the peaks and rows as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tokenmill bench train`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let python = if a.no_peer {
        None
    } else {
        crate::peers::python(a.python, Path::new(""))
    };
    let precisions = a
        .precision
        .iter()
        .map(|p| match p.as_str() {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "fp8" => Ok(Precision::Fp8),
            other => Err(anyhow::anyhow!(
                "--precision {other:?}: expected fp32, bf16 or fp8"
            )),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let o = TrainBenchConfig {
        preset: a.preset,
        precisions,
        batch: a.batch,
        seq: a.seq,
        steps: a.steps,
        threads: a.threads,
        python,
        script: a.script,
    };
    let (rows, peaks) = bench_train(&o)?;
    if a.json {
        println!("{}", serde_json::json!({ "peaks": peaks, "rows": rows }));
    } else {
        print!("{}", table(&o, &rows, peaks));
    }
    Ok(())
}
