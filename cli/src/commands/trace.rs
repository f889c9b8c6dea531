//! `tokenmill trace RUN --step N` / `--doc ID`: a step's batch, or a document's every step,
//! with provenance.

use std::path::PathBuf;

use tokenmill_pipelines::trace::{render, trace_doc, trace_step};

/// `tokenmill trace`.
#[derive(clap::Args, Debug)]
pub struct Args {
    pub run: PathBuf,
    #[arg(long, required_unless_present = "doc")]
    pub step: Option<u64>,
    /// Instead: every step a document was trained at, with its loss each time.
    #[arg(long, conflicts_with = "step")]
    pub doc: Option<String>,
    /// Samples (and top documents) shown.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Which run of the step, when a rollback made the run go over it again (0 = first;
    /// default: the last).
    #[arg(long, conflicts_with = "doc")]
    pub attempt: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

/// Runs `tokenmill trace`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let Some(id) = a.doc else {
        let step = a.step.expect("clap requires --step or --doc");
        let t = trace_step(&a.run, step, a.attempt, a.top)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&t)?);
        } else {
            print!("{}", render(&t, a.top));
        }
        return Ok(());
    };
    let (p, seen) = trace_doc(&a.run, &id)?;
    if a.json {
        println!("{}", serde_json::json!({ "document": p, "steps": seen }));
        return Ok(());
    }
    println!(
        "{} ({} tokens) {} @ byte {} {}",
        p.id,
        p.tokens,
        p.source,
        p.offset,
        p.url.as_deref().unwrap_or("")
    );
    println!("seen at {} steps:", seen.len());
    for s in &seen {
        println!(
            "  step {:>6}  sample {:>3}  {:>5} tokens  loss {:.4}  (step loss {:.4}){}{}",
            s.step,
            s.sample,
            s.tokens,
            s.loss,
            s.step_loss,
            if s.spike { "  spike" } else { "" },
            if s.superseded { "  [rolled back]" } else { "" }
        );
    }
    Ok(())
}
