//! `tokenmill schedule --pp P --micro N --schedule dualpipe|dualpipev|1f1b`: a pipeline schedule as a
//! grid (ranks × time), its simulated bubble and memory per rank beside the DeepSeek-V3
//! report's formulas, and an SVG.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::ValueEnum;
use tokenmill_trainer::pipeline::schedule::{Schedule, Times, grid, plan, simulate, svg};

/// The schedules.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ScheduleArg {
    /// One forward, one backward.
    #[value(name = "1f1b")]
    OneFOneB,
    /// DeepSeek-V3's bidirectional pipeline.
    Dualpipe,
    /// DualPipe cut in half: P ranks, 2P stages in a V.
    Dualpipev,
}

/// `tokenmill schedule`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pipeline ranks.
    #[arg(long, default_value_t = 4)]
    pub pp: usize,
    /// Micro-batches per step (DualPipe: both directions together; even, at least 2·pp).
    #[arg(long, default_value_t = 8)]
    pub micro: usize,
    /// The pipeline schedule to lay out.
    #[arg(long, value_enum, default_value = "dualpipe")]
    pub schedule: ScheduleArg,
    /// Time of a forward chunk.
    #[arg(long, default_value_t = 1.0)]
    pub f: f64,
    /// Time of a full backward chunk (input and weight gradients).
    #[arg(long, default_value_t = 2.0)]
    pub b: f64,
    /// Time of the weight-gradient part of a backward.
    #[arg(long, default_value_t = 1.0)]
    pub w: f64,
    /// Time of an overlapped forward + backward pair (default: F + B, no overlap gain).
    #[arg(long)]
    pub fb: Option<f64>,
    /// Write the schedule as SVG here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// Runs `tokenmill schedule`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let which = match a.schedule {
        ScheduleArg::OneFOneB => Schedule::OneFOneB,
        ScheduleArg::Dualpipe => Schedule::DualPipe,
        ScheduleArg::Dualpipev => Schedule::DualPipeV,
    };
    let times = Times {
        f: a.f,
        b: a.b,
        w: a.w,
        fb: a.fb.unwrap_or(a.f + a.b),
    };
    if !(times.w >= 0.0 && times.w < times.b && times.f > 0.0) {
        anyhow::bail!("times must satisfy F > 0 and 0 ≤ W < B (got {times:?})");
    }
    let p = plan(which, a.pp, a.micro).map_err(|e| anyhow!(e))?;
    let sim = simulate(&p, times).map_err(|e| anyhow!(e))?;
    let unit = [times.f, times.b - times.w, times.w]
        .into_iter()
        .filter(|&x| x > 0.0)
        .fold(f64::INFINITY, f64::min);
    println!(
        "{:?} on {} ranks, {} micro-batches; F {} B {} W {} F&B {} (F = forward, B = full backward \
         [b: input gradient only], W = weight gradient, ' = micro-batches entering at the last rank)\n",
        which, a.pp, a.micro, times.f, times.b, times.w, times.fb
    );
    print!("{}", grid(&p, &sim, unit));
    let pp = a.pp as f64;
    let (formula, params, acts) = match which {
        Schedule::OneFOneB => ((pp - 1.0) * (times.f + times.b), "1×", a.pp),
        Schedule::DualPipe => (
            (pp / 2.0 - 1.0) * (times.fb + times.b - 3.0 * times.w),
            "2×",
            a.pp + 1,
        ),
        // DualPipe's formulas with PP = its 2P stages.
        Schedule::DualPipeV => (
            (pp - 1.0) * (times.fb + times.b - 3.0 * times.w),
            "2 stages",
            2 * a.pp + 1,
        ),
    };
    let worst = sim.bubbles().into_iter().fold(0.0, f64::max);
    println!(
        "\nmakespan {:.2}; bubble (idle per rank, worst) {worst:.2}; report's formula {formula:.2}",
        sim.makespan
    );
    println!(
        "activations held at most (micro-batches, per rank) {:?}; report: {acts}; parameters per rank {params}",
        sim.peak_activations
    );
    if let Some(path) = &a.svg {
        let title = format!("{which:?}, {} ranks, {} micro-batches", a.pp, a.micro);
        std::fs::write(path, svg(&p, &sim, &title))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
