//! `tokenmill status OUT`: where a build stands.

use std::path::PathBuf;

use tokenmill_pipelines::status::{TaskState, status};

/// `tokenmill status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The build's output directory.
    pub out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tokenmill status`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let s = status(&a.out)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "{}: {} tasks — {} done, {} running, {} failed, {} waiting; {} documents, {:.1} MB of text, {} tokens so far; {}",
        a.out.display(),
        s.tasks.len(),
        s.count(TaskState::Done),
        s.count(TaskState::Running),
        s.count(TaskState::Failed),
        s.count(TaskState::Waiting),
        s.documents_written,
        s.text_bytes as f64 / 1e6,
        s.tokens,
        if s.published {
            "published (manifest.json)"
        } else {
            "not published"
        }
    );
    if let Some(j) = &s.jobs {
        println!(
            "Slurm jobs: dedup {}, arrays [{}], finalize {}",
            j.dedup.as_deref().unwrap_or("-"),
            j.arrays.join(", "),
            j.finalize
        );
        if let Some(from) = &s.scheduler {
            println!("running and failed tasks as told by {from}");
        }
    }
    if let Some(e) = &s.finalize_error {
        println!("finalize: {e}");
    }
    for t in s.tasks.iter().filter(|t| t.state == TaskState::Failed) {
        println!(
            "  failed: task {} ({}): {}{}",
            t.task,
            t.input,
            t.error.as_deref().unwrap_or(""),
            t.log
                .as_ref()
                .map(|l| format!(" [log {}]", l.display()))
                .unwrap_or_default()
        );
    }
    Ok(())
}
