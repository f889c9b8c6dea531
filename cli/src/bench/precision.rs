//! `tokenmill bench precision --config train.toml`: the same run (config, data, seed) trained
//! in FP32, BF16 and FP8, side by side: final smoothed training loss, held-out loss, the
//! relative difference of FP8 and BF16 vs FP32/BF16 (DeepSeek-V3 reports < 0.25 % for FP8 vs
//! BF16), tokens/s, and the three curves overlaid in one SVG.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use tokenmill_trainer::ops::Precision;
use tokenmill_trainer::train::LogKind;

use anyhow::Result;
use tokenmill_pipelines::Error;
use tokenmill_pipelines::plot::{read_log, svg};
use tokenmill_pipelines::train::{read_config, train};

/// One precision's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrecisionRow {
    pub precision: String,
    pub run: PathBuf,
    /// Mean next-token loss over the last 10 % of steps.
    pub train_loss: f64,
    pub eval_loss: Option<f64>,
    pub tokens_per_s: f64,
}

/// Bytes per parameter and per cached activation element in each precision — what a device
/// implementation stores (the CPU emulation keeps FP32 copies) — for a model, at `tokens` tokens.
pub fn memory_table(c: &tokenmill_trainer::ModelConfig, tokens: usize) -> String {
    let p = c.param_counts();
    let params = (p.total + p.mtp) as f64;
    let (_, act_bytes_fp32) = tokenmill_trainer::cost::memory_model(c);
    let act = act_bytes_fp32 / 4.0 * tokens as f64; // elements
    let mib = |b: f64| b / 1048576.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "memory ({:.2} M params, {tokens} tokens per step):",
        params / 1e6
    );
    let _ = writeln!(
        s,
        "{:<6} {:>22} {:>24} {:>26}",
        "GEMMs", "GEMM weights B/param", "activations B/element", "weights + activations MiB"
    );
    for (name, wb, ab) in [
        ("fp32", 4.0, 4.0),
        ("bf16", 2.0, 2.0),
        ("fp8", 1.0 + 4.0 / 16384.0, 1.0 + 4.0 / 128.0),
    ] {
        let _ = writeln!(
            s,
            "{name:<6} {wb:>22.4} {ab:>24.4} {:>26.1}",
            mib(params * wb + act * ab)
        );
    }
    let _ = writeln!(
        s,
        "plus FP32 master weights and gradients (8 B/param) and AdamW moments (8 B/param, 4 with bf16_moments) in every precision"
    );
    s
}

/// Runs the three precisions (each in `<out>-<precision>`) and returns the rows and the SVG path.
pub fn bench_precision(config: &Path, quiet: bool) -> Result<(Vec<PrecisionRow>, PathBuf)> {
    let base = read_config(config)?;
    let mut rows = Vec::new();
    let mut logs = Vec::new();
    for (name, p) in [
        ("fp32", Precision::Fp32),
        ("bf16", Precision::Bf16),
        ("fp8", Precision::Fp8),
    ] {
        let mut cfg = base.clone();
        cfg.train.precision = p;
        let mut out = cfg.train.out.clone().into_os_string();
        out.push(format!("-{name}"));
        cfg.train.out = PathBuf::from(out);
        let run = cfg.train.out.clone();
        let o = train(cfg, false, quiet)?;
        let log = read_log(&run)?;
        let ys: Vec<f64> = log
            .iter()
            .filter(|l| l.kind == LogKind::Train)
            .map(|l| l.main_loss)
            .collect();
        let tail = (ys.len() / 10).max(1);
        let train_loss = ys[ys.len() - tail..].iter().sum::<f64>() / tail as f64;
        rows.push(PrecisionRow {
            precision: name.into(),
            run: run.clone(),
            train_loss,
            eval_loss: o.eval_loss,
            tokens_per_s: o.tokens_per_s,
        });
        logs.push((name.to_string(), log));
    }
    let plot = rows[0].run.with_extension("precision.svg");
    std::fs::write(&plot, svg(&logs, "FP32 / BF16 / FP8 training loss"))
        .map_err(|e| Error::io(&plot, e))?;
    Ok((rows, plot))
}

/// The result as a table.
pub fn table(rows: &[PrecisionRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<6} {:>14} {:>12} {:>11} {:>11} {:>10}",
        "GEMMs", "train (last 10%)", "vs bf16", "eval", "vs bf16", "tokens/s"
    );
    let bf = rows.iter().find(|r| r.precision == "bf16").cloned();
    for r in rows {
        let rel = |a: f64, b: f64| format!("{:+.3}%", 100.0 * (a - b) / b);
        let (dt, de) = match &bf {
            Some(b) => (
                rel(r.train_loss, b.train_loss),
                r.eval_loss
                    .zip(b.eval_loss)
                    .map_or("-".into(), |(x, y)| rel(x, y)),
            ),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            s,
            "{:<6} {:>16.4} {:>12} {:>11} {:>11} {:>10.0}",
            r.precision,
            r.train_loss,
            dt,
            r.eval_loss.map_or("-".into(), |e| format!("{e:.4}")),
            de,
            r.tokens_per_s
        );
    }
    s
}

/// `tokenmill bench precision`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A training TOML; it is run once per precision (fp32, bf16, fp8).
    #[arg(long)]
    pub config: PathBuf,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Print the rows as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tokenmill bench precision`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let (rows, plot) = bench_precision(&a.config, a.quiet)?;
    if a.json {
        println!("{}", serde_json::json!({ "rows": rows, "plot": plot }));
        return Ok(());
    }
    print!("{}", table(&rows));
    println!("curves: {}", plot.display());
    let cfg = read_config(&a.config)?;
    let tokens = (cfg.data.micro_batch.unwrap_or(cfg.data.batch) * cfg.data.seq_len) as usize;
    print!("{}", memory_table(&cfg.model.resolve()?, tokens));
    Ok(())
}
