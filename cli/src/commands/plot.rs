//! `tokenmill plot RUN...`: loss curves as SVG.

use std::path::PathBuf;

use anyhow::{Context, bail};
use tokenmill_pipelines::plot::{read_log, svg};

/// `tokenmill plot`.
#[derive(clap::Args, Debug)]
pub struct Args {
    pub runs: Vec<PathBuf>,
    /// Output file (default: RUN/loss.svg of the first run).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `tokenmill plot`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if a.runs.is_empty() {
        bail!("plot needs at least one run directory");
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
    std::fs::write(&out, svg(&logs, "training loss"))
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
