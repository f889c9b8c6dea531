//! The Slurm executor: a build's phases ([`crate::build::Job`]) submitted as a job graph —
//! with dedup on, its signatures (an array over the inputs, `tasks_per_job` per element), its
//! edges (an array over the bucket partitions) and its clustering (one job) as
//! [`crate::dedup::graph`] cuts them; the pending tasks (job arrays, `tasks_per_job` tasks per
//! array element, arrays cut to fit `MaxArraySize`), and the finalize step (`afterany`, so a
//! failed task is reported by name instead of the graph stalling). Each job runs this same
//! binary (`tokenmill slurm-task`) on the same configuration, so the dataset is the local
//! build's, byte for byte; a rerun submits only the tasks without a record.
//!
//! Files: `OUT/.build/slurm/` (the configuration the jobs read, one `.sbatch` script per job,
//! the task list of each array, `jobs.json` with the job ids), `OUT/.build/logs/` (a log per
//! job and array element).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use tokenmill_shards::atomic_write;

use crate::build::Job;
use crate::config::BuildConfig;
use crate::error::{Error, Result};

/// How the jobs are submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// Build tasks (input files) per array element.
    pub tasks_per_job: usize,
    /// `--cpus-per-task` of every job (the worker's threads).
    pub cpus_per_task: usize,
    /// `--mem` (e.g. `4G`).
    pub mem: Option<String>,
    /// `--time` (e.g. `2:00:00`).
    pub time: Option<String>,
    /// The cluster's `MaxArraySize`: array indices stay below it.
    pub max_array_size: usize,
    /// Extra `#SBATCH` lines (e.g. `--account=x`).
    pub extra: Vec<String>,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            partition: None,
            tasks_per_job: 1,
            cpus_per_task: 1,
            mem: None,
            time: None,
            max_array_size: 1001,
            extra: Vec::new(),
        }
    }
}

/// One job array of the plan: which build tasks each element runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayPlan {
    /// Its number among the build's arrays.
    pub number: usize,
    /// Build tasks per element, element `e` running `tasks[e]`.
    pub tasks: Vec<Vec<usize>>,
}

/// Cuts `pending` tasks into array elements of `per` tasks and arrays of at most
/// `max_array_size - 1` elements (indices `0..len`, below `MaxArraySize`).
pub fn plan_arrays(pending: &[usize], per: usize, max_array_size: usize) -> Vec<ArrayPlan> {
    let per = per.max(1);
    let cap = max_array_size.saturating_sub(1).max(1);
    let elements: Vec<Vec<usize>> = pending.chunks(per).map(<[usize]>::to_vec).collect();
    elements
        .chunks(cap)
        .enumerate()
        .map(|(number, e)| ArrayPlan {
            number,
            tasks: e.to_vec(),
        })
        .collect()
}

/// The submitted graph, as `OUT/.build/slurm/jobs.json` records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The dedup signature arrays (dedup on, tasks pending, no decisions stored yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dedup_signatures: Vec<String>,
    /// The dedup partition (edges) arrays.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dedup_partitions: Vec<String>,
    /// The dedup job: the clustering and the decisions (when dedup is on and tasks were
    /// pending).
    pub dedup: Option<String>,
    /// The arrays' job ids, in array order.
    pub arrays: Vec<String>,
    /// The finalize job.
    pub finalize: String,
    /// Build tasks submitted (the pending ones).
    pub tasks: Vec<usize>,
    /// Build tasks in all.
    pub total_tasks: usize,
}

/// Where the executor's files go.
pub fn slurm_dir(out: &Path) -> PathBuf {
    out.join(".build").join("slurm")
}

/// Where the jobs' logs go.
pub fn logs_dir(out: &Path) -> PathBuf {
    out.join(".build").join("logs")
}

/// The log of array `a`'s element `e`.
pub fn element_log(out: &Path, a: usize, e: usize) -> PathBuf {
    logs_dir(out).join(format!("tasks-{a}-{e}.log"))
}

fn sbatch_program() -> String {
    std::env::var("TOKENMILL_SBATCH").unwrap_or_else(|_| "sbatch".into())
}

fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `#SBATCH` header of a job.
fn header(name: &str, log: &str, o: &SlurmOptions, cwd: &Path, array: Option<usize>) -> String {
    let mut h = format!("#!/bin/bash\n#SBATCH --job-name={name}\n#SBATCH --output={log}\n");
    h.push_str(&format!("#SBATCH --chdir={}\n", cwd.display()));
    h.push_str(&format!(
        "#SBATCH --cpus-per-task={}\n",
        o.cpus_per_task.max(1)
    ));
    h.push_str("#SBATCH --ntasks=1\n");
    if let Some(n) = array {
        h.push_str(&format!("#SBATCH --array=0-{}\n", n - 1));
    }
    if let Some(p) = &o.partition {
        h.push_str(&format!("#SBATCH --partition={p}\n"));
    }
    if let Some(m) = &o.mem {
        h.push_str(&format!("#SBATCH --mem={m}\n"));
    }
    if let Some(t) = &o.time {
        h.push_str(&format!("#SBATCH --time={t}\n"));
    }
    for x in &o.extra {
        h.push_str(&format!("#SBATCH {x}\n"));
    }
    h.push_str("set -euo pipefail\n");
    h
}

fn sbatch(script: &Path, dependency: Option<String>) -> Result<String> {
    let program = sbatch_program();
    let mut cmd = Command::new(&program);
    cmd.arg("--parsable");
    if let Some(d) = dependency {
        // A failed job's dependents are cancelled (not left pending for ever); the finalize
        // job waits with `afterany` and reports them.
        if d.starts_with("afterok") {
            cmd.arg("--kill-on-invalid-dep=yes");
        }
        cmd.arg(format!("--dependency={d}"));
    }
    cmd.arg(script);
    let out = cmd
        .output()
        .map_err(|e| Error::Unsupported(format!("{program}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Unsupported(format!(
            "{program} refused {}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // `--parsable`: `jobid[;cluster]`
    let id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    if id.is_empty() {
        return Err(Error::Unsupported(format!(
            "{program} gave no job id for {}",
            script.display()
        )));
    }
    Ok(id)
}

/// Plans the job graph of `cfg`'s build, writes its scripts and, unless `dry_run`, submits it.
/// `exe`: the `tokenmill` binary the jobs run.
pub fn submit(cfg: &BuildConfig, exe: &Path, o: &SlurmOptions, dry_run: bool) -> Result<Submitted> {
    let program = sbatch_program();
    if !dry_run && !on_path(&program) {
        return Err(Error::Unsupported(format!(
            "--executor slurm: `{program}` is not on PATH (install Slurm's client commands, or use the local executor)"
        )));
    }
    if let Some(url) = crate::build::remote_output(cfg) {
        return Err(Error::Unsupported(format!(
            "--executor slurm with --out {url}: the array tasks write one shared directory; build into a directory every node sees, then publish it with the local executor (`tokenmill build … --out {url} --stage DIR` reuses DIR's finished build)"
        )));
    }
    let mut cfg = cfg.clone();
    cfg.run.threads = o.cpus_per_task.max(1);
    cfg.run.quiet = true;
    let out = cfg.output.dir.clone();
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let (job, pending) = {
        let _lock = tokenmill_shards::lock::DirLock::acquire(&out, "build (submitting to Slurm)")?;
        let job = Job::prepare(&cfg)?;
        let pending = job.pending();
        (job, pending)
    };
    let dir = slurm_dir(&out);
    let logs = logs_dir(&out);
    for d in [&dir, &logs] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let cfg_path = dir.join("build.json");
    atomic_write(
        &cfg_path,
        &serde_json::to_vec_pretty(&cfg).expect("the config serialises"),
    )?;
    let run = |phase: &str, rest: &str| {
        format!(
            "exec {} slurm-task --build {} --phase {phase}{rest}\n",
            quote(&exe.display().to_string()),
            quote(&cfg_path.display().to_string())
        )
    };
    let log = |name: &str| logs.join(name).display().to_string();
    let write = |name: &str, body: String| -> Result<PathBuf> {
        let p = dir.join(name);
        atomic_write(&p, body.as_bytes())?;
        Ok(p)
    };

    let dedup_script = (cfg.dedup.enabled && !pending.is_empty())
        .then(|| {
            write(
                "dedup.sbatch",
                header("tokenmill-dedup", &log("dedup-%j.log"), o, &cwd, None) + &run("dedup", ""),
            )
        })
        .transpose()?;
    // One array script per plan: element e runs the numbers on line e of its list file.
    let array_script = |kind: &str, phase: &str, a: &ArrayPlan| -> Result<PathBuf> {
        let list = dir.join(format!("{kind}-{}.txt", a.number));
        let text: String = a
            .tasks
            .iter()
            .map(|t| {
                t.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
                    + "\n"
            })
            .collect();
        atomic_write(&list, text.as_bytes())?;
        let body = header(
            &format!("tokenmill-{kind}-{}", a.number),
            &log(&format!("{kind}-{}-%a.log", a.number)),
            o,
            &cwd,
            Some(a.tasks.len()),
        ) + &run(
            phase,
            &format!(
                " --list {} --element \"$SLURM_ARRAY_TASK_ID\"",
                quote(&list.display().to_string())
            ),
        );
        write(&format!("{kind}-{}.sbatch", a.number), body)
    };
    // Dedup as a graph: signatures per input → edges per partition → the dedup job clusters.
    let graph = dedup_script.is_some() && !job.dedup_decided();
    let (sig_arrays, part_arrays) = if graph {
        let inputs: Vec<usize> = (0..job.input_count()).collect();
        let parts: Vec<usize> = (0..cfg.dedup.config.partitions).collect();
        (
            plan_arrays(&inputs, o.tasks_per_job, o.max_array_size),
            plan_arrays(&parts, parts.len().div_ceil(16), o.max_array_size),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let sig_scripts = sig_arrays
        .iter()
        .map(|a| array_script("dedup-sig", "dedup-sig", a))
        .collect::<Result<Vec<_>>>()?;
    let part_scripts = part_arrays
        .iter()
        .map(|a| array_script("dedup-part", "dedup-part", a))
        .collect::<Result<Vec<_>>>()?;
    let arrays = plan_arrays(&pending, o.tasks_per_job, o.max_array_size);
    let array_scripts = arrays
        .iter()
        .map(|a| array_script("tasks", "tasks", a))
        .collect::<Result<Vec<_>>>()?;
    let finalize_script = write(
        "finalize.sbatch",
        header("tokenmill-finalize", &log("finalize-%j.log"), o, &cwd, None) + &run("finalize", ""),
    )?;
    let mut sub = Submitted {
        tasks: pending.clone(),
        total_tasks: job.tasks(),
        ..Default::default()
    };
    if dry_run {
        return Ok(sub);
    }
    let after_all =
        |ids: &[String], kind: &str| (!ids.is_empty()).then(|| format!("{kind}:{}", ids.join(":")));
    for s in &sig_scripts {
        sub.dedup_signatures.push(sbatch(s, None)?);
    }
    for s in &part_scripts {
        let dep = after_all(&sub.dedup_signatures, "afterok");
        sub.dedup_partitions.push(sbatch(s, dep)?);
    }
    if let Some(s) = &dedup_script {
        let dep = after_all(&sub.dedup_partitions, "afterok");
        sub.dedup = Some(sbatch(s, dep)?);
    }
    for s in &array_scripts {
        let dep = sub.dedup.as_ref().map(|d| format!("afterok:{d}"));
        sub.arrays.push(sbatch(s, dep)?);
    }
    let after: Vec<&String> = sub
        .dedup_signatures
        .iter()
        .chain(&sub.dedup_partitions)
        .chain(sub.dedup.iter())
        .chain(&sub.arrays)
        .collect();
    let dep = (!after.is_empty()).then(|| {
        format!(
            "afterany:{}",
            after
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(":")
        )
    });
    sub.finalize = sbatch(&finalize_script, dep)?;
    atomic_write(
        &dir.join("jobs.json"),
        &serde_json::to_vec_pretty(&sub).expect("serialises"),
    )?;
    tracing::info!(
        tasks = pending.len(),
        arrays = sub.arrays.len(),
        finalize = %sub.finalize,
        "submitted to Slurm"
    );
    Ok(sub)
}

/// The submitted graph of `out`, if any.
pub fn submitted(out: &Path) -> Option<Submitted> {
    serde_json::from_slice(&std::fs::read(slurm_dir(out).join("jobs.json")).ok()?).ok()
}

/// Runs one phase inside a Slurm job: `dedup`, the tasks of array element `element` of the
/// list file, or `finalize`.
pub fn run_phase(
    build_json: &Path,
    phase: &str,
    list: Option<&Path>,
    element: Option<usize>,
) -> Result<Option<crate::BuildOutcome>> {
    let cfg: BuildConfig =
        serde_json::from_slice(&std::fs::read(build_json).map_err(|e| Error::io(build_json, e))?)
            .map_err(|e| Error::Config(format!("{}: {e}", build_json.display())))?;
    let out = cfg.output.dir.clone();
    // The numbers on line `element` of the list file.
    let element_numbers = || -> Result<Vec<usize>> {
        let (list, element) = match (list, element) {
            (Some(l), Some(e)) => (l, e),
            _ => {
                return Err(Error::Config(format!(
                    "--phase {phase} needs --list and --element"
                )));
            }
        };
        let text = std::fs::read_to_string(list).map_err(|e| Error::io(list, e))?;
        let line = text
            .lines()
            .nth(element)
            .ok_or_else(|| Error::Config(format!("{}: no element {element}", list.display())))?;
        line.split_whitespace()
            .map(|t| {
                t.parse()
                    .map_err(|_| Error::Config(format!("{}: bad number {t:?}", list.display())))
            })
            .collect()
    };
    match phase {
        "dedup-sig" => {
            let inputs = element_numbers()?;
            Job::open_planned(&cfg)?.dedup_signatures(&inputs)?;
            eprintln!("dedup signatures of inputs {inputs:?} sealed");
            Ok(None)
        }
        "dedup-part" => {
            let parts = element_numbers()?;
            Job::open_planned(&cfg)?.dedup_partitions(&parts)?;
            eprintln!("dedup edges of partitions {parts:?} written");
            Ok(None)
        }
        "dedup" => {
            let _lock = tokenmill_shards::lock::DirLock::acquire(&out, "build (dedup job)")?;
            let job = Job::prepare(&cfg)?;
            let pending = job.pending();
            job.dedup_if_needed(&pending)?;
            Ok(None)
        }
        "tasks" => {
            let tasks = element_numbers()?;
            let job = Job::open_planned(&cfg)?;
            // The dedup decisions are read once for the element, not once per task.
            let dedup = job.dedup_if_needed(&tasks)?;
            for &t in &tasks {
                // One worker per task: a rerun submitted while an old element still runs waits
                // for nothing and refuses instead of writing the same shards twice.
                let lock_dir = job.build_dir().join("locks").join(format!("task-{t:06}"));
                let _lock = tokenmill_shards::lock::DirLock::acquire(&lock_dir, "build task")?;
                if t >= job.tasks() {
                    return Err(Error::Config(format!(
                        "task {t} is not in the plan ({} tasks)",
                        job.tasks()
                    )));
                }
                if job.done(t).is_some() {
                    tracing::info!(task = t, "already done");
                    continue;
                }
                job.run_tasks(&[t], dedup.as_ref())?;
                eprintln!("task {t} done");
            }
            Ok(None)
        }
        "finalize" => {
            let _lock = tokenmill_shards::lock::DirLock::acquire(&out, "build (finalize job)")?;
            let job = Job::prepare(&cfg)?;
            let o = job.finalize(std::time::Instant::now(), job.records(), Vec::new())?;
            Ok(Some(o))
        }
        other => Err(Error::Config(format!(
            "unknown phase {other:?} (dedup-sig, dedup-part, dedup, tasks, finalize)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ninety_thousand_inputs_fit_in_arrays_below_max_array_size() {
        let pending: Vec<usize> = (0..90_000).collect();
        let t = std::time::Instant::now();
        let arrays = plan_arrays(&pending, 8, 1001);
        assert!(t.elapsed().as_secs_f64() < 1.0);
        // 11,250 elements of 8 tasks, in arrays of at most 1,000 (indices 0..=999 < 1001).
        assert_eq!(arrays.len(), 12);
        assert!(arrays.iter().all(|a| a.tasks.len() <= 1000));
        let all: Vec<usize> = arrays
            .iter()
            .flat_map(|a| a.tasks.iter().flatten().copied())
            .collect();
        assert_eq!(all, pending, "every task once, in order");
        assert_eq!(
            plan_arrays(&[3, 9], 1, 1001)[0].tasks,
            vec![vec![3], vec![9]]
        );
        assert!(plan_arrays(&[], 4, 10).is_empty());
    }

    #[test]
    fn an_object_store_output_is_refused_with_how_to_publish_instead() {
        let mut cfg = BuildConfig::default();
        cfg.output.dir = PathBuf::from("s3://bucket/ds");
        let err = submit(&cfg, Path::new("tokenmill"), &SlurmOptions::default(), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--executor slurm with --out s3://bucket/ds") && err.contains("--stage"),
            "{err}"
        );
    }
}
