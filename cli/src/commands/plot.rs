//! `tokenmill plot RUN...`: loss curves as SVG, and the task accuracies when the runs have any.

use std::path::PathBuf;

use anyhow::{Context, bail};
use tokenmill_pipelines::plot::{PlotOptions, read_log, svg_with, tasks_svg};

/// `tokenmill plot`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training run directories (each holds a `log.jsonl`); one curve set per run, labelled by
    /// the directory's name.
    #[arg(value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// Output file (default: RUN/loss.svg of the first run).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the task accuracies go, when the logs have any (`[train] eval_tasks`; default:
    /// RUN/tasks.svg of the first run).
    #[arg(long)]
    pub tasks_out: Option<PathBuf>,
    /// Weight of the exponential moving average drawn over the faint raw curve, in [0, 1)
    /// (0: no smoothing; TensorBoard's slider).
    #[arg(long, default_value_t = 0.9)]
    pub smoothing: f64,
    /// A logarithmic loss axis.
    #[arg(long)]
    pub log_y: bool,
}

/// Runs `tokenmill plot`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if a.runs.is_empty() {
        bail!("plot needs at least one run directory");
    }
    if !(0.0..1.0).contains(&a.smoothing) {
        bail!("--smoothing {} is outside [0, 1)", a.smoothing);
    }
    let mut logs = Vec::new();
    for r in &a.runs {
        let label = r.file_name().map_or_else(
            || r.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        logs.push((label, read_log(r)?));
    }
    let out = a.out.unwrap_or_else(|| a.runs[0].join("loss.svg"));
    let o = PlotOptions {
        smoothing: a.smoothing,
        log_y: a.log_y,
    };
    std::fs::write(&out, svg_with(&logs, "training loss", &o))
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    if let Some(svg) = tasks_svg(&logs, "task accuracy") {
        let out = a.tasks_out.unwrap_or_else(|| a.runs[0].join("tasks.svg"));
        std::fs::write(&out, svg).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
