//! `tokenmill status OUT`: where a build stands — which tasks are done, running, failed (with
//! the log and its last error line) or waiting, the documents and bytes so far, and whether
//! the manifest is published — from the build's own files (plan, task records, the Slurm
//! executor's job list and logs), so it works for local and Slurm builds alike. For a Slurm
//! build it also asks the scheduler (`squeue`): a task whose array element is pending or running
//! is said so, and one that left the queue without publishing its record (cancelled, out of
//! time or memory, a node lost) is failed, even when its log ends without an error line.

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
    /// The last error line of the log (or why the scheduler's answer makes it failed).
    pub error: Option<String>,
    /// Its array element's state in Slurm's queue (`PENDING`, `RUNNING`, ...), when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
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
    /// Where the running/failed states of a Slurm build come from: `squeue`, or the logs
    /// alone when `squeue` cannot answer (with its message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
}

/// What `squeue` said about a build's jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queue {
    /// The jobs still in the queue: job id (`123` or array element `123_4`) → state.
    Answered(std::collections::HashMap<String, String>),
    /// `squeue` could not be asked (not installed, controller down): the message.
    Unavailable(String),
}

/// Asks `squeue` for the states of `jobs` (array elements one per line). Jobs the controller
/// no longer knows (finished long ago) are simply absent.
pub fn ask_squeue(jobs: &[String]) -> Queue {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-r", "-o", "%i %T", "-j", &jobs.join(",")])
        .output();
    match out {
        Err(e) => Queue::Unavailable(format!("squeue: {e}")),
        Ok(o) if o.status.success() => {
            Queue::Answered(parse_squeue(&String::from_utf8_lossy(&o.stdout)))
        }
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
            // Every id purged from the controller's memory: none of them is queued.
            if err.contains("Invalid job id") {
                Queue::Answered(Default::default())
            } else {
                Queue::Unavailable(format!("squeue: {err}"))
            }
        }
    }
}

/// Parses `squeue -h -r -o "%i %T"` lines (`123_4 RUNNING`).
pub fn parse_squeue(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
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
    // task → its array element's log and job id
    let mut logs: Vec<Option<PathBuf>> = vec![None; plan.inputs.len()];
    let mut elements: Vec<Option<String>> = vec![None; plan.inputs.len()];
    if let Some(j) = &jobs {
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
                        elements[t] = j.arrays.get(a).map(|id| format!("{id}_{e}"));
                    }
                }
            }
        }
    }
    let queue = jobs.as_ref().map(|j| {
        let mut ids = j.arrays.clone();
        ids.push(j.finalize.clone());
        ids.extend(j.dedup.clone());
        ask_squeue(&ids)
    });
    let (mut docs, mut bytes, mut tokens) = (0, 0, 0);
    let mut tasks = Vec::with_capacity(plan.inputs.len());
    for (i, inp) in plan.inputs.iter().enumerate() {
        let log = logs[i].clone().filter(|l| l.exists());
        let queued = match (&queue, &elements[i]) {
            (Some(Queue::Answered(q)), Some(id)) => Some(q.get(id).cloned()),
            _ => None,
        };
        let (state, error) = if let Some(r) = TaskRecord::load_done(&build_dir, out, i, &inp.path) {
            docs += r.stats.documents_written;
            bytes += r.stats.text_bytes;
            tokens += r.stats.tokens;
            (TaskState::Done, None)
        } else if let Some(q) = &queued {
            match q.as_deref() {
                Some("PENDING" | "CONFIGURING" | "REQUEUED" | "RESV_DEL_HOLD" | "SUSPENDED") => {
                    (TaskState::Waiting, None)
                }
                Some(_) => (TaskState::Running, None),
                None => (
                    TaskState::Failed,
                    Some(log.as_deref().and_then(last_error).unwrap_or_else(|| {
                        format!(
                            "array element {} left the Slurm queue without publishing its task \
                             (cancelled, out of time or memory, or its node lost)",
                            elements[i].as_deref().unwrap_or("?")
                        )
                    })),
                ),
            }
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
            queue: queued.flatten(),
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
        scheduler: queue.map(|q| match q {
            Queue::Answered(_) => "squeue".to_string(),
            Queue::Unavailable(why) => format!("the logs alone ({why})"),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_are_parsed_per_array_element() {
        let q = parse_squeue("101_0 RUNNING\n101_3 PENDING\n102 PENDING\n\n");
        assert_eq!(q.len(), 3);
        assert_eq!(q["101_3"], "PENDING");
        assert_eq!(q["102"], "PENDING");
        assert!(!q.contains_key("101_2"));
    }
}
