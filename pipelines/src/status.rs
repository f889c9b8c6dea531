//! `tokenmill status OUT`: where a build stands — which tasks are done, running, failed (with
//! the log and its last error line) or waiting, the documents and bytes so far, and whether
//! the manifest is published — from the build's own files (plan, task records, the Slurm
//! executor's job list and logs), so it works for local and Slurm builds alike.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::build::Plan;
use crate::error::{Error, Result};
use crate::slurm::{Submitted, element_log, slurm_dir, submitted};
use crate::task::TaskRecord;

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Its record is published and its shards are there.
    Done,
    /// Its log shows work and no error.
    Running,
    /// Its log ends in an error (or the scheduler cancelled it).
    Failed,
    /// Not started.
    Waiting,
}

/// One task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    /// The task number.
    pub task: usize,
    /// Its input.
    pub input: String,
    /// Its state.
    pub state: TaskState,
    /// Its log (Slurm executor).
    pub log: Option<PathBuf>,
    /// The last error line of the log.
    pub error: Option<String>,
}

/// A build's state.
#[derive(Debug, Clone, Serialize)]
pub struct BuildStatus {
    /// Every task.
    pub tasks: Vec<TaskStatus>,
    /// Documents written by the finished tasks.
    pub documents_written: u64,
    /// Text bytes of the finished tasks.
    pub text_bytes: u64,
    /// Tokens of the finished tasks.
    pub tokens: u64,
    /// Whether `manifest.json` is published (the dataset is complete).
    pub published: bool,
    /// The Slurm jobs, when the build was submitted.
    pub jobs: Option<Submitted>,
    /// The finalize job's last error line, when it failed.
    pub finalize_error: Option<String>,
}

impl BuildStatus {
    /// Tasks in `state`.
    pub fn count(&self, state: TaskState) -> usize {
        self.tasks.iter().filter(|t| t.state == state).count()
    }
}

fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find(|l| l.contains("error") || l.contains("CANCELLED") || l.contains("panicked"))
        .map(|l| l.trim().to_string())
}

/// The state of the build in `out`.
pub fn status(out: &Path) -> Result<BuildStatus> {
    let build_dir = out.join(".build");
    let plan_path = build_dir.join("plan.json");
    let plan: Plan = serde_json::from_slice(&std::fs::read(&plan_path).map_err(|_| {
        Error::NotFound(format!(
            "{}: no build here (no {})",
            out.display(),
            plan_path.display()
        ))
    })?)
    .map_err(|e| Error::Config(format!("{}: {e}", plan_path.display())))?;
    let jobs = submitted(out);
    // task → its array element's log
    let mut logs: Vec<Option<PathBuf>> = vec![None; plan.inputs.len()];
    if jobs.is_some() {
        for a in 0.. {
            let Ok(text) = std::fs::read_to_string(slurm_dir(out).join(format!("tasks-{a}.txt")))
            else {
                break;
            };
            for (e, line) in text.lines().enumerate() {
                for t in line
                    .split_whitespace()
                    .filter_map(|t| t.parse::<usize>().ok())
                {
                    if t < logs.len() {
                        logs[t] = Some(element_log(out, a, e));
                    }
                }
            }
        }
    }
    let (mut docs, mut bytes, mut tokens) = (0, 0, 0);
    let mut tasks = Vec::with_capacity(plan.inputs.len());
    for (i, inp) in plan.inputs.iter().enumerate() {
        let log = logs[i].clone().filter(|l| l.exists());
        let (state, error) = if let Some(r) = TaskRecord::load_done(&build_dir, out, i, &inp.path) {
            docs += r.stats.documents_written;
            bytes += r.stats.text_bytes;
            tokens += r.stats.tokens;
            (TaskState::Done, None)
        } else if let Some(l) = &log {
            match last_error(l) {
                Some(e) => (TaskState::Failed, Some(e)),
                None => (TaskState::Running, None),
            }
        } else {
            (TaskState::Waiting, None)
        };
        tasks.push(TaskStatus {
            task: i,
            input: inp.path.clone(),
            state,
            log,
            error,
        });
    }
    let published = out.join(tokenmill_shards::MANIFEST_FILE).exists();
    let finalize_error = match (&jobs, published) {
        (Some(j), false) => {
            let l = crate::slurm::logs_dir(out).join(format!("finalize-{}.log", j.finalize));
            last_error(&l)
        }
        _ => None,
    };
    Ok(BuildStatus {
        tasks,
        documents_written: docs,
        text_bytes: bytes,
        tokens,
        published,
        jobs,
        finalize_error,
    })
}
