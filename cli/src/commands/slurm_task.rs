//! The Slurm executor's side of the CLI: `tokenmill build --executor slurm` (submit, and with
//! `--wait` follow the jobs) and the hidden `tokenmill slurm-task` every job runs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokenmill_pipelines::config::BuildConfig;
use tokenmill_pipelines::slurm::{self, SlurmOptions};
use tokenmill_pipelines::status::{TaskState, status};

/// `tokenmill slurm-task` (run by the jobs the Slurm executor submits).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The build's configuration as the executor wrote it (OUT/.build/slurm/build.json).
    #[arg(long)]
    pub build: PathBuf,
    /// `dedup-sig`, `dedup-part`, `dedup`, `tasks` or `finalize`.
    #[arg(long)]
    pub phase: String,
    /// `tasks`, `dedup-sig`, `dedup-part`: the array's list (task, input or partition numbers).
    #[arg(long)]
    pub list: Option<PathBuf>,
    /// This array element's line of the list.
    #[arg(long)]
    pub element: Option<usize>,
}

/// Runs one job's phase.
pub fn run(a: Args) -> anyhow::Result<()> {
    let o = slurm::run_phase(&a.build, &a.phase, a.list.as_deref(), a.element)
        .with_context(|| format!("slurm job, phase {}", a.phase))?;
    if let Some(o) = o {
        println!("published {} shards", o.manifest.shards.len());
    }
    Ok(())
}

fn squeue_has(ids: &[String]) -> anyhow::Result<bool> {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-o", "%i", "-j", &ids.join(",")])
        .output()
        .context("squeue")?;
    // squeue fails for ids it no longer knows: they are finished.
    Ok(out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty())
}

/// `tokenmill build --executor slurm`: submits, then with `wait` follows the jobs and reports
/// the result (a failed task by name and log).
pub fn submit(
    cfg: &BuildConfig,
    o: &SlurmOptions,
    wait: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("the tokenmill binary's path")?;
    let out = cfg.output.dir.clone();
    let sub = slurm::submit(cfg, &exe, o, dry_run)
        .with_context(|| format!("submitting the build of {}", out.display()))?;
    let dir = slurm::slurm_dir(&out);
    if dry_run {
        println!(
            "wrote the job scripts for {} of {} tasks to {} (not submitted)",
            sub.tasks.len(),
            sub.total_tasks,
            dir.display()
        );
        return Ok(());
    }
    println!(
        "submitted {} of {} tasks: dedup {}, arrays [{}], finalize {} (scripts and jobs.json in {}, logs in {})",
        sub.tasks.len(),
        sub.total_tasks,
        sub.dedup.as_deref().unwrap_or("-"),
        sub.arrays.join(", "),
        sub.finalize,
        dir.display(),
        slurm::logs_dir(&out).display()
    );
    if !wait {
        println!("follow it with `tokenmill status {}`", out.display());
        return Ok(());
    }
    let ids: Vec<String> = sub
        .dedup
        .iter()
        .chain(&sub.arrays)
        .chain(std::iter::once(&sub.finalize))
        .cloned()
        .collect();
    let mut last = usize::MAX;
    while squeue_has(&ids)? {
        if let Ok(s) = status(&out) {
            let done = s.count(TaskState::Done);
            if done != last && !cfg.run.quiet {
                eprintln!("{done}/{} tasks done", s.tasks.len());
                last = done;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = status(&out)?;
    if s.published {
        println!(
            "built {}: {} tasks, {} documents, {} tokens",
            out.display(),
            s.tasks.len(),
            s.documents_written,
            s.tokens
        );
        return Ok(());
    }
    let failed: Vec<String> = s
        .tasks
        .iter()
        .filter(|t| t.state != TaskState::Done)
        .take(5)
        .map(|t| {
            format!(
                "task {} ({}): {}{}",
                t.task,
                t.input,
                t.error.as_deref().unwrap_or("not done"),
                t.log
                    .as_ref()
                    .map(|l| format!(" [log {}]", l.display()))
                    .unwrap_or_default()
            )
        })
        .collect();
    anyhow::bail!(
        "the Slurm build of {} did not publish a manifest{}; {} of {} tasks done{}{}; rerun the same command to submit only what is missing",
        out.display(),
        s.finalize_error
            .as_ref()
            .map(|e| format!(" (finalize: {e})"))
            .unwrap_or_default(),
        s.count(TaskState::Done),
        s.tasks.len(),
        if failed.is_empty() { "" } else { ":\n  " },
        failed.join("\n  ")
    )
}
