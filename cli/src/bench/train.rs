//! `tokenmill bench train`: training throughput (tokens/s), MFU against this machine's measured
//! GEMM peak, and peak memory of one configuration, side by side with `transformers`'
//! `DeepseekV3ForCausalLM` on CPU torch (eager, same threads, batch, sequence length, AdamW and
//! clipping; `tests/peers/bench_torch_train.py`). The torch model has no MTP, so the
//! side-by-side row runs without it; a second row adds MTP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tokenmill_kernels::Cpu;
use tokenmill_trainer::ModelConfig;
use tokenmill_trainer::cost::{flops_per_token, measure_gemm_peak, memory_model};
use tokenmill_trainer::model::{Batch, LossWeights, Model, WgradMode};
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

fn run_rust(
    cfg: &ModelConfig,
    o: &TrainBenchConfig,
    name: &str,
    peak: f64,
) -> Result<TrainBenchRow> {
    let model = Model::new(cfg.clone())?;
    let mut params: Vec<f32> = model.init(1);
    let mut grads = vec![0f32; params.len()];
    let mut opt = AdamW::new(AdamWConfig::default(), &model.layout);
    let mut rng = Rng::new(7);
    let w = LossWeights {
        mtp_lambda: if cfg.num_nextn_predict_layers > 0 {
            0.3
        } else {
            0.0
        },
        balance_alpha: 0.0001,
    };
    let mut times = Vec::new();
    let mut parts = Vec::new();
    let mut last = f64::NAN;
    for i in 0..o.steps + 1 {
        let tokens: Vec<u32> = (0..o.batch * (o.seq + 1))
            .map(|_| (rng.next_u64() % cfg.vocab_size as u64) as u32)
            .collect();
        let t = Instant::now();
        let bt = Batch {
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

fn run_torch(
    cfg: &ModelConfig,
    o: &TrainBenchConfig,
    py: &Path,
    peak: f64,
) -> Result<TrainBenchRow> {
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let json =
        serde_json::to_string_pretty(&tokenmill_trainer::hf::hf_config(cfg)).expect("serialises");
    std::fs::write(dir.path().join("config.json"), json).map_err(|e| Error::io(dir.path(), e))?;
    let out = Command::new(py)
        .arg(&o.script)
        .args(["--dir", &dir.path().display().to_string()])
        .args(["--batch", &o.batch.to_string(), "--seq", &o.seq.to_string()])
        .args([
            "--steps",
            &o.steps.to_string(),
            "--threads",
            &o.threads.to_string(),
        ])
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
            "transformers {} / torch {} (eager, {})",
            v["transformers"].as_str().unwrap_or("?"),
            v["torch"].as_str().unwrap_or("?"),
            v["experts_implementation"].as_str().unwrap_or("?")
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

/// Runs the benchmark; returns the rows and the measured GEMM peak (FLOP/s).
pub fn bench_train(o: &TrainBenchConfig) -> Result<(Vec<TrainBenchRow>, f64)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build()?;
    pool.install(|| {
        let peak = measure_gemm_peak(&Cpu);
        let mut cfg = ModelConfig::preset(&o.preset)?;
        cfg.max_position_embeddings = cfg.max_position_embeddings.max(o.seq);
        let mut rows = Vec::new();
        let mut no_mtp = cfg.clone();
        no_mtp.num_nextn_predict_layers = 0;
        rows.push(run_rust(&no_mtp, o, "tokenmill (cpu), no MTP", peak)?);
        if let Some(py) = &o.python {
            rows.push(run_torch(&no_mtp, o, py, peak)?);
        }
        if cfg.num_nextn_predict_layers > 0 {
            rows.push(run_rust(
                &cfg,
                o,
                &format!("tokenmill (cpu), MTP D={}", cfg.num_nextn_predict_layers),
                peak,
            )?);
        }
        Ok((rows, peak))
    })
}

/// The result as a table.
pub fn table(o: &TrainBenchConfig, rows: &[TrainBenchRow], peak: f64) -> String {
    let cfg = ModelConfig::preset(&o.preset).ok();
    let mut s = format!(
        "preset {}  batch {} × seq {}  threads {}  measured f32 GEMM peak {:.1} GFLOP/s\n",
        o.preset,
        o.batch,
        o.seq,
        o.threads,
        peak / 1e9
    );
    s.push_str(&format!(
        "{:<58} {:>11} {:>9} {:>20} {:>9} {:>6} {:>9}\n",
        "implementation", "params", "step ms", "fwd / bwd / opt ms", "tokens/s", "MFU", "peak MiB"
    ));
    for r in rows {
        let parts = r
            .parts_ms
            .map_or("-".into(), |(f, b, o)| format!("{f:.0} / {b:.0} / {o:.0}"));
        s.push_str(&format!(
            "{:<58} {:>11} {:>9.1} {:>20} {:>9.0} {:>5.1}% {:>9.0}\n",
            r.name,
            r.params,
            r.step_ms,
            parts,
            r.tokens_per_s,
            100.0 * r.mfu,
            r.peak_rss_mb
        ));
    }
    if rows.len() >= 2 && rows[1].name.starts_with("transformers") {
        s.push_str(&format!(
            "speed-up vs PyTorch eager: {:.2}×\n",
            rows[0].tokens_per_s / rows[1].tokens_per_s
        ));
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
    #[arg(long, default_value = "small")]
    pub preset: String,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Python with torch + transformers (default: .venv-peers/bin/python if present).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Skip the PyTorch side.
    #[arg(long)]
    pub no_peer: bool,
    #[arg(long, default_value = "tests/peers/bench_torch_train.py")]
    pub script: PathBuf,
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
    let o = TrainBenchConfig {
        preset: a.preset,
        batch: a.batch,
        seq: a.seq,
        steps: a.steps,
        threads: a.threads,
        python,
        script: a.script,
    };
    let (rows, peak) = bench_train(&o)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "gemm_peak_flops": peak, "rows": rows })
        );
    } else {
        print!("{}", table(&o, &rows, peak));
    }
    Ok(())
}
