//! `tokenmill build`: inputs → documents → tokens → shards, as independent, resumable tasks.
//!
//! Layout of the output directory:
//!
//! ```text
//! dataset/
//!   manifest.json            written last; its presence means the dataset is complete
//!   stats.json               the funnel, bytes, tokens, time (the only non-deterministic file)
//!   tokenizer.json           the tokenizer the ids came from (sha256 in the manifest)
//!   shard-000000-0000.{bin,idx,prov.parquet}
//!   .build/plan.json         what this directory is being built from
//!   .build/tasks/000000.json one record per finished task
//! ```
//!
//! Resumption: a task with a valid record is not redone; any other task first deletes its
//! partial shards. The plan guards against resuming into a directory built from other inputs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenmill_shards::tokenizer::read_tokenizer_json;
use tokenmill_shards::{Manifest, TextTokenizer, TokenizeConfig, atomic_write};

use crate::config::BuildConfig;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::stats::{BuildStats, TaskStats, peak_rss_bytes};
use crate::task::{TaskRecord, run_task};

/// What a dataset directory is being built from. A resumed build must have the same plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The input files in task order (task `i` reads `inputs[i]`), with their sizes.
    pub inputs: Vec<PlanInput>,
    /// SHA-256 (hex) of the tokenizer's JSON (decompressed when the file is `.gz`).
    pub tokenizer_sha256: String,
    /// The EOS token appended to each document, as resolved by the tokenizer; `None` when
    /// `append_eos` is off.
    pub eos: Option<String>,
    /// Whether every document ends with the EOS token.
    pub append_eos: bool,
    /// Target shard size: a shard is closed once its `.bin` reaches this many bytes.
    pub shard_bytes: u64,
    /// How the input files are read.
    pub read: tokenmill_ingest::ReadConfig,
    /// The dedup stage's settings.
    pub dedup: crate::config::DedupStageConfig,
    /// The HTML → text settings (defaults when absent from an older plan).
    #[serde(default)]
    pub extract: crate::config::ExtractConfig,
    /// The filters; `None` = no filtering.
    #[serde(default)]
    pub filters: Option<tokenmill_filters::FiltersConfig>,
    /// The recipe's SQL condition and derived columns.
    #[serde(default)]
    pub sql: crate::config::SqlConfig,
}

/// One input file of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInput {
    /// The file's path, as given (after glob expansion).
    pub path: String,
    /// The file's size in bytes when the build started.
    pub bytes: u64,
}

/// The result of a build.
#[derive(Debug)]
pub struct BuildOutcome {
    /// The manifest written to the dataset directory: tokenizer identity, dtype, and shards.
    pub manifest: Manifest,
    /// What was written to `stats.json`.
    pub stats: BuildStats,
    /// With `--out s3://…`: the upload of the staged dataset.
    pub published: Option<crate::publish::Published>,
}

/// The output URL when `[output] dir` is an object store (`s3://…`).
pub fn remote_output(cfg: &BuildConfig) -> Option<String> {
    let s = cfg.output.dir.to_str()?;
    tokenmill_ingest::remote::is_remote(&cfg.output.dir).then(|| s.to_string())
}

/// The local directory a build for `url` writes before publishing.
pub fn stage_dir(cfg: &BuildConfig, url: &str) -> PathBuf {
    cfg.output.stage.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "tokenmill-stage-{:016x}",
            xxhash_rust::xxh3::xxh3_64(url.trim_end_matches('/').as_bytes())
        ))
    })
}

/// Runs a build in this process: every phase of [`Job`], under the output directory's lock.
/// `progress` is shown unless `cfg.run.quiet`.
pub fn build(cfg: &BuildConfig) -> Result<BuildOutcome> {
    if let Some(url) = remote_output(cfg) {
        if !url.starts_with("s3://") {
            return Err(Error::Config(format!(
                "--out {url}: datasets are written to s3:// (or local) outputs; http(s) stores are read-only"
            )));
        }
        // Built locally (resumable), then published, the manifest last.
        let stage = stage_dir(cfg, &url);
        let mut local = cfg.clone();
        local.output.dir = stage.clone();
        let mut out = build(&local)?;
        // No other build rewrites the stage while it is uploaded.
        let _lock = tokenmill_shards::lock::DirLock::acquire(&stage, "build (publishing)")?;
        out.published = Some(crate::publish::publish(&stage, &url)?);
        return Ok(out);
    }
    let started = Instant::now();
    let out = cfg.output.dir.clone();
    // One build per output directory at a time.
    let _lock = tokenmill_shards::lock::DirLock::acquire(&out, "build")?;
    let job = Job::prepare(cfg)?;
    let earlier = job.records();
    let todo: Vec<usize> = (0..earlier.len())
        .filter(|&i| earlier[i].is_none())
        .collect();
    let dedup = job.dedup_if_needed(&todo)?;
    let fresh = job.run_tasks(&todo, dedup.as_ref())?;
    job.finalize(started, earlier, fresh)
}

/// A build's phases, run in one process ([`build`]) or as separate jobs of a cluster
/// scheduler ([`crate::slurm`]): [`Job::prepare`] (the plan, checked against an earlier one,
/// and the tokenizer), the dedup decisions ([`Job::dedup_if_needed`]), any subset of the tasks
/// ([`Job::run_tasks`]: each independent, published by its record), and [`Job::finalize`]
/// (stats and, last, the manifest), which refuses while a task is missing. Every path runs the
/// same code, so a dataset built through Slurm is the local build's, byte for byte.
pub struct Job {
    cfg: BuildConfig,
    inputs: Vec<PathBuf>,
    out: PathBuf,
    build_dir: PathBuf,
    tok: TextTokenizer,
    plan: Plan,
    pool: rayon::ThreadPool,
    threads: usize,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("out", &self.out)
            .field("inputs", &self.inputs.len())
            .finish_non_exhaustive()
    }
}

impl Job {
    /// Resolves the inputs, loads the tokenizer, writes (or checks) `.build/plan.json` and
    /// `tokenizer.json`.
    pub fn prepare(cfg: &BuildConfig) -> Result<Self> {
        Self::prepare_with(cfg, None)
    }

    /// [`Job::prepare`] for a worker of a submitted build: the inputs are the plan's (already
    /// written by the submitter), so a worker neither expands globs nor reads the size of every
    /// input — at 90,000 inputs per build that is what keeps thousands of array elements off
    /// the shared file system's metadata server. The settings must still be the plan's.
    pub fn open_planned(cfg: &BuildConfig) -> Result<Self> {
        let path = cfg.output.dir.join(".build").join("plan.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let plan: Plan = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{}: unreadable plan: {e}", path.display())))?;
        Self::prepare_with(cfg, Some(plan.inputs))
    }

    fn prepare_with(cfg: &BuildConfig, planned: Option<Vec<PlanInput>>) -> Result<Self> {
        let inputs = match &planned {
            Some(p) => p.iter().map(|i| PathBuf::from(&i.path)).collect(),
            None => cfg.resolve_inputs()?,
        };
        let out = cfg.output.dir.clone();
        let build_dir = out.join(".build");
        std::fs::create_dir_all(build_dir.join("tasks")).map_err(|e| Error::io(&build_dir, e))?;
        let tok = TextTokenizer::load(
            &cfg.tokenizer.path,
            &TokenizeConfig {
                eos_token: cfg.tokenizer.eos.clone(),
                append_eos: cfg.tokenizer.append_eos,
                engine: cfg.tokenizer.engine,
            },
        )?;
        let mut plan = Plan {
            inputs: Vec::with_capacity(inputs.len()),
            tokenizer_sha256: tok.identity().sha256.clone(),
            eos: tok.identity().eos_token.clone(),
            append_eos: cfg.tokenizer.append_eos,
            shard_bytes: cfg.output.shard_bytes,
            read: cfg.input.read.clone(),
            dedup: cfg.dedup.clone(),
            extract: cfg.extract.clone(),
            filters: cfg.filters.clone(),
            sql: cfg.sql.clone(),
        };
        match planned {
            Some(p) => plan.inputs = p,
            None => {
                for p in &inputs {
                    let bytes = crate::remote_inputs::size(p)?;
                    plan.inputs.push(PlanInput {
                        path: p.display().to_string(),
                        bytes,
                    });
                }
            }
        }
        check_plan(&build_dir, &plan)?;
        let tok_json = read_tokenizer_json(&cfg.tokenizer.path)?;
        let dest = out.join("tokenizer.json");
        if std::fs::read(&dest).ok().as_deref() != Some(&tok_json[..]) {
            atomic_write(&dest, &tok_json)?;
        }
        let threads = if cfg.run.threads == 0 {
            rayon::current_num_threads()
        } else {
            cfg.run.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Config(format!("thread pool: {e}")))?;
        Ok(Job {
            cfg: cfg.clone(),
            inputs,
            out,
            build_dir,
            tok,
            plan,
            pool,
            threads,
        })
    }

    /// Number of tasks (input files).
    pub fn tasks(&self) -> usize {
        self.inputs.len()
    }

    /// The `.build` directory.
    pub fn build_dir(&self) -> &Path {
        &self.build_dir
    }

    /// The record of task `i` when it is done (its shards present with their sizes).
    pub fn done(&self, i: usize) -> Option<TaskRecord> {
        TaskRecord::load_done(&self.build_dir, &self.out, i, &self.plan.inputs[i].path)
    }

    /// Every task's record when it is done (validated once: shard sizes, index and provenance
    /// checksums), in task order.
    pub fn records(&self) -> Vec<Option<TaskRecord>> {
        (0..self.inputs.len()).map(|i| self.done(i)).collect()
    }

    /// The tasks without a valid record, in order.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.inputs.len())
            .filter(|&i| self.done(i).is_none())
            .collect()
    }

    /// The dedup decisions, computed once (and stored in `.build/dedup.json`) when dedup is on
    /// and some task in `todo` still needs them.
    pub fn dedup_if_needed(&self, todo: &[usize]) -> Result<Option<crate::dedup::DedupFilter>> {
        if !self.cfg.dedup.enabled || todo.is_empty() {
            return Ok(None);
        }
        let d = self.pool.install(|| {
            crate::dedup::load_or_run(&self.build_dir, &self.out, &self.inputs, &self.cfg)
        })?;
        Ok(Some(d))
    }

    /// Slurm's dedup graph, phase 1: the signatures of inputs `tasks` ([`crate::dedup::graph`]).
    pub fn dedup_signatures(&self, tasks: &[usize]) -> Result<()> {
        let dir = crate::dedup::graph::graph_dir(&self.build_dir);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        self.pool.install(|| {
            crate::dedup::graph::signatures(
                &self.inputs,
                tasks,
                &self.cfg.input.read,
                &self.cfg.dedup.config,
                &dir,
            )
        })
    }

    /// Slurm's dedup graph, phase 2: the edges of partitions `parts`.
    pub fn dedup_partitions(&self, parts: &[usize]) -> Result<()> {
        let dir = crate::dedup::graph::graph_dir(&self.build_dir);
        self.pool.install(|| {
            crate::dedup::graph::partitions(self.inputs.len(), parts, &self.cfg.dedup.config, &dir)
        })
    }

    /// Whether the dedup decisions are already stored (a rerun needs no dedup jobs).
    pub fn dedup_decided(&self) -> bool {
        self.build_dir.join("dedup.json").is_file()
    }

    /// Input files of the build.
    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    /// Runs the tasks `todo` in parallel (each first clears what an interrupted run of it left);
    /// returns their records.
    pub fn run_tasks(
        &self,
        todo: &[usize],
        dedup: Option<&crate::dedup::DedupFilter>,
    ) -> Result<Vec<TaskRecord>> {
        let bytes: u64 = todo.iter().map(|&i| self.plan.inputs[i].bytes).sum();
        let progress = Progress::new(bytes, self.cfg.run.quiet);
        if todo.len() < self.inputs.len() {
            tracing::info!(
                todo = todo.len(),
                total = self.inputs.len(),
                "finished tasks are kept"
            );
        }
        let recs = self.pool.install(|| {
            todo.par_iter()
                .with_max_len(1)
                .map(|&i| {
                    run_task(
                        i,
                        &self.inputs[i],
                        &self.cfg,
                        &self.tok,
                        &self.out,
                        &self.build_dir,
                        &progress,
                        dedup.map(|d| d.for_file(i)),
                    )
                })
                .collect::<Result<Vec<_>>>()
        })?;
        progress.finish();
        Ok(recs)
    }

    /// Merges every task's record into `stats.json` and publishes the manifest (last). Refuses,
    /// naming them, while tasks are missing. `earlier`: the records found done before this
    /// process ran tasks ([`Job::records`]); `fresh`: the records it produced (the throughput
    /// counts their text only).
    pub fn finalize(
        &self,
        started: Instant,
        earlier: Vec<Option<TaskRecord>>,
        fresh: Vec<TaskRecord>,
    ) -> Result<BuildOutcome> {
        let fresh_bytes: u64 = fresh.iter().map(|r| r.stats.text_bytes).sum();
        let resumed = earlier.iter().flatten().count() as u64;
        let mut records = earlier;
        for r in fresh {
            let i = r.task;
            records[i] = Some(r);
        }
        let missing: Vec<usize> = (0..records.len())
            .filter(|&i| records[i].is_none())
            .collect();
        if !missing.is_empty() {
            let names: Vec<String> = missing
                .iter()
                .take(10)
                .map(|&i| format!("{i} ({})", self.plan.inputs[i].path))
                .collect();
            return Err(Error::Config(format!(
                "{} of {} tasks are not done, so no manifest is published: {}{}",
                missing.len(),
                self.inputs.len(),
                names.join(", "),
                if missing.len() > 10 { ", …" } else { "" }
            )));
        }
        let records: Vec<TaskRecord> = records.into_iter().flatten().collect();
        let mut total = TaskStats::default();
        let mut shards = Vec::new();
        for r in &records {
            total.merge(&r.stats);
            shards.extend(r.shards.iter().cloned());
        }
        let manifest = Manifest::new(self.tok.identity().clone(), self.tok.dtype(), shards);
        let seconds = started.elapsed().as_secs_f64();
        let mb = fresh_bytes as f64 / 1e6;
        let total_bytes: u64 = self.plan.inputs.iter().map(|i| i.bytes).sum();
        let stats = BuildStats {
            inputs: self.inputs.len() as u64,
            input_bytes: total_bytes,
            tasks_resumed: resumed,
            documents_read: total.documents_read(),
            documents_written: total.documents_written,
            documents_skipped: total.skipped_by_reason(),
            records_ignored: total.read.ignored.clone(),
            text_bytes: total.text_bytes,
            tokens: total.tokens,
            shards: manifest.shards.len() as u64,
            threads: self.threads,
            seconds,
            text_mb_per_s: mb / seconds,
            text_mb_per_s_per_core: mb / seconds / self.threads as f64,
            peak_rss_bytes: peak_rss_bytes(),
            skip_samples: total.read.skipped.samples.clone(),
            dedup: crate::dedup::stored_stats(&self.build_dir),
            funnel: total.funnel.clone(),
        };
        let mut json = serde_json::to_vec_pretty(&stats).expect("stats serialise");
        json.push(b'\n');
        atomic_write(&self.out.join("stats.json"), &json)?;
        if !stats.funnel.rows.is_empty() {
            // no paths or times: the dataset stays byte-identical wherever and however it is built
            let title = format!(
                "tokenmill build: {} documents read, {} written",
                stats.documents_read, stats.documents_written
            );
            atomic_write(
                &self.out.join("funnel.svg"),
                stats
                    .funnel
                    .with_reading(
                        stats.documents_read,
                        stats.input_bytes,
                        &stats.documents_skipped,
                    )
                    .svg(&title)
                    .as_bytes(),
            )?;
        }
        // Last: the manifest makes the dataset visible.
        manifest.store(&self.out)?;
        Ok(BuildOutcome {
            manifest,
            stats,
            published: None,
        })
    }
}

fn check_plan(build_dir: &Path, plan: &Plan) -> Result<()> {
    let path: PathBuf = build_dir.join("plan.json");
    if let Ok(bytes) = std::fs::read(&path) {
        let old: Plan = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{}: unreadable plan: {e}", path.display())))?;
        if &old != plan {
            return Err(Error::Config(format!(
                "{} was started with other inputs or settings (see {}); resume with the same command, or choose a new output directory",
                build_dir.parent().unwrap_or(build_dir).display(),
                path.display()
            )));
        }
        return Ok(());
    }
    let dir = build_dir.parent().unwrap_or(build_dir);
    if dir.join(tokenmill_shards::MANIFEST_FILE).exists() {
        return Err(Error::Config(format!(
            "{} already holds a dataset that was not built by this plan",
            dir.display()
        )));
    }
    let mut json = serde_json::to_vec_pretty(plan).expect("plan serialises");
    json.push(b'\n');
    atomic_write(&path, &json)?;
    Ok(())
}
