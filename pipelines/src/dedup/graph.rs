//! The build's dedup stage as a job graph ([`tokenmill_dedup::graph`]) for the Slurm executor:
//! signatures per input (an array), edges per partition (an array), clustering (one job) —
//! the decisions the one-process stage makes ([`super::decide`]), bit for bit.
//!
//! Files, under `OUT/.build/dedup-graph/`: `task-NNNNNN/` (an input's sealed bucket records) and
//! `task-NNNNNN.json` (its counts, published last: the input is done), `edges-NNNNN.bin` (a
//! partition's edges, written under a temporary name and renamed). Each step skips what is
//! already published, so a rerun after a failed element redoes only that element. The directory
//! exists only for a build submitted to Slurm; [`super::load_or_run`] then decides from it.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenmill_dedup::graph::{SealedTask, group_from_edges, partition_edges, write_edges};
use tokenmill_dedup::{DedupConfig, Fingerprinter};
use tokenmill_ingest::{ReadConfig, ReadStats};

use super::decide::{Decided, fingerprint_task, reshingle_source, task_dir};
use crate::error::{Error, Result};

/// `OUT/.build/dedup-graph`.
pub fn graph_dir(build_dir: &Path) -> PathBuf {
    build_dir.join("dedup-graph")
}

/// An input's published signatures: its sealed counts, documents and reader counts.
#[derive(Debug, Serialize, Deserialize)]
struct TaskRecord {
    sealed: SealedTask,
    documents: u64,
    read: ReadStats,
}

fn record_path(dir: &Path, t: usize) -> PathBuf {
    dir.join(format!("{}.json", task_dir(t)))
}

/// Input `t`'s published record.
fn read_record(dir: &Path, t: usize) -> Result<TaskRecord> {
    let path = record_path(dir, t);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

fn edges_path(dir: &Path, p: usize) -> PathBuf {
    dir.join(format!("edges-{p:05}.bin"))
}

/// Phase 1: the signatures of inputs `tasks` (indices into `inputs`), in parallel, each sealed
/// under `dir` and published by its record; inputs already published are skipped.
pub fn signatures(
    inputs: &[PathBuf],
    tasks: &[usize],
    read: &ReadConfig,
    cfg: &DedupConfig,
    dir: &Path,
) -> Result<()> {
    let fp = Fingerprinter::new(cfg);
    let todo: Vec<usize> = tasks
        .iter()
        .copied()
        .filter(|&t| !record_path(dir, t).is_file())
        .collect();
    let running = rayon::current_num_threads().clamp(1, todo.len().max(1));
    let budget = cfg.memory_budget_bytes / running;
    todo.par_iter().with_max_len(1).try_for_each(|&t| {
        let path = inputs.get(t).ok_or_else(|| {
            Error::Config(format!(
                "input task {t} is not in the plan ({} inputs)",
                inputs.len()
            ))
        })?;
        let tdir = dir.join(task_dir(t));
        // A task interrupted before its record: its partial records go.
        let _ = std::fs::remove_dir_all(&tdir);
        let (c, documents, read) = fingerprint_task(t, path, read, cfg, &fp, &tdir, budget)?;
        let rec = TaskRecord {
            sealed: c.seal_to_disk()?,
            documents,
            read,
        };
        let json = serde_json::to_vec(&rec).expect("serialises");
        tokenmill_shards::atomic_write(&record_path(dir, t), &json)?;
        tracing::info!(task = t, documents, "dedup signatures sealed");
        Ok(())
    })
}

/// The inputs (of `n`) without published signatures.
fn missing_tasks(dir: &Path, n: usize) -> Vec<usize> {
    (0..n).filter(|&t| !record_path(dir, t).is_file()).collect()
}

/// Phase 2: the edges of partitions `parts` over every input's signatures (all must be
/// published); partitions already written are skipped.
pub fn partitions(n_inputs: usize, parts: &[usize], cfg: &DedupConfig, dir: &Path) -> Result<()> {
    let missing = missing_tasks(dir, n_inputs);
    if !missing.is_empty() {
        return Err(Error::Config(format!(
            "{}: the signatures of {} inputs are missing (first: task {}); their jobs failed or have not run",
            dir.display(),
            missing.len(),
            missing[0]
        )));
    }
    let records = (0..n_inputs)
        .map(|t| read_record(dir, t))
        .collect::<Result<Vec<TaskRecord>>>()?;
    let tasks: Vec<(PathBuf, &SealedTask)> = records
        .iter()
        .enumerate()
        .map(|(t, r)| (dir.join(task_dir(t)), &r.sealed))
        .collect();
    // One partition at a time (its sort in parallel), as the one-process run holds one.
    parts.iter().try_for_each(|&p| {
        if p >= cfg.partitions {
            return Err(Error::Config(format!(
                "partition {p} of {}",
                cfg.partitions
            )));
        }
        let out = edges_path(dir, p);
        if out.is_file() {
            return Ok(());
        }
        let edges = partition_edges(&tasks, p)?;
        let tmp = dir.join(format!("edges-{p:05}.bin.tmp"));
        write_edges(&tmp, &edges)?;
        std::fs::rename(&tmp, &out).map_err(|e| Error::io(&out, e))?;
        Ok(())
    })
}

/// Whether every input's signatures and every partition's edges are published.
pub fn complete(dir: &Path, n_inputs: usize, partitions: usize) -> bool {
    missing_tasks(dir, n_inputs).is_empty() && (0..partitions).all(|p| edges_path(dir, p).is_file())
}

/// Phase 3: the decisions from the published signatures and edges (all must be there).
pub fn decide_from_graph(
    inputs: &[PathBuf],
    read: &ReadConfig,
    cfg: &DedupConfig,
    dir: &Path,
    spill: &Path,
) -> Result<Decided> {
    let t0 = std::time::Instant::now();
    let missing = missing_tasks(dir, inputs.len());
    let edge_files: Vec<PathBuf> = (0..cfg.partitions).map(|p| edges_path(dir, p)).collect();
    let no_edges: Vec<usize> = (0..cfg.partitions)
        .filter(|&p| !edge_files[p].is_file())
        .collect();
    if !missing.is_empty() || !no_edges.is_empty() {
        return Err(Error::Config(format!(
            "{}: the dedup graph is incomplete: {} inputs without signatures, {} partitions without edges (first: {:?}); rerun the build to resubmit them",
            dir.display(),
            missing.len(),
            no_edges.len(),
            missing
                .first()
                .map(|t| format!("task {t}"))
                .or(no_edges.first().map(|p| format!("partition {p}")))
        )));
    }
    let mut sealed = Vec::with_capacity(inputs.len());
    let mut file_docs = Vec::with_capacity(inputs.len());
    let mut read_stats = ReadStats::default();
    for t in 0..inputs.len() {
        let r = read_record(dir, t)?;
        sealed.push(r.sealed);
        file_docs.push(r.documents);
        read_stats.merge(&r.read);
    }
    let fp = Fingerprinter::new(cfg);
    let outcome = {
        let mut source = reshingle_source(inputs, &file_docs, read, &fp);
        group_from_edges(cfg, sealed, &edge_files, &file_docs, spill, &mut source)?
    };
    let _ = std::fs::remove_dir_all(spill);
    Ok(Decided {
        outcome,
        read: read_stats,
        file_docs,
        fingerprint_seconds: t0.elapsed().as_secs_f64(),
    })
}
