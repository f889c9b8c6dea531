//! `tokenmill report RUN`: a self-contained HTML page of a run and its spikes.

use std::path::PathBuf;

use anyhow::Context;

/// `tokenmill report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The training run's directory (the `[train] out` of its config).
    #[arg(value_name = "RUN")]
    pub run: PathBuf,
    /// Output page (default: RUN/report.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Documents per spike: those that added most to its loss.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Also print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tokenmill report`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let (rep, html) = tokenmill_pipelines::report::report(&a.run, a.top)?;
    let out = a.out.unwrap_or_else(|| a.run.join("report.html"));
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, html).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        let led: Vec<String> = rep
            .documents
            .iter()
            .filter_map(|d| d.id.as_ref().map(|id| format!("{id} ×{}", d.spikes.len())))
            .take(4)
            .collect();
        println!(
            "{} steps, {} spike(s) led by {} document(s){}, {} rollback(s), {} quarantined; wrote {}",
            rep.steps,
            rep.spikes.len(),
            rep.documents.iter().filter(|d| d.id.is_some()).count(),
            if led.is_empty() {
                String::new()
            } else {
                format!(" (most: {})", led.join(", "))
            },
            rep.rollbacks,
            rep.quarantined,
            out.display()
        );
    }
    Ok(())
}
