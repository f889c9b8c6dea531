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
}

/// Runs a build. `progress` is shown unless `cfg.run.quiet`.
pub fn build(cfg: &BuildConfig) -> Result<BuildOutcome> {
    let started = Instant::now();
    let inputs = cfg.resolve_inputs()?;
    let out = cfg.output.dir.clone();
    let build_dir = out.join(".build");
    std::fs::create_dir_all(build_dir.join("tasks")).map_err(|e| Error::io(&build_dir, e))?;
    // One build per output directory at a time.
    let _lock = tokenmill_shards::lock::DirLock::acquire(&out, "build")?;

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
    for p in &inputs {
        let bytes = std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
        plan.inputs.push(PlanInput {
            path: p.display().to_string(),
            bytes,
        });
    }
    check_plan(&build_dir, &plan)?;
    atomic_write(
        &out.join("tokenizer.json"),
        &read_tokenizer_json(&cfg.tokenizer.path)?,
    )?;

    let threads = if cfg.run.threads == 0 {
        rayon::current_num_threads()
    } else {
        cfg.run.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Config(format!("thread pool: {e}")))?;

    let total_bytes: u64 = plan.inputs.iter().map(|i| i.bytes).sum();
    let progress = Progress::new(total_bytes, cfg.run.quiet);
    let mut resumed = 0u64;
    let mut done: Vec<Option<TaskRecord>> = plan
        .inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| TaskRecord::load_done(&build_dir, &out, i, &inp.path))
        .collect();
    for (i, d) in done.iter().enumerate() {
        if d.is_some() {
            resumed += 1;
            progress.advance(plan.inputs[i].bytes, 0, 0);
        }
    }
    if resumed > 0 {
        tracing::info!(
            resumed,
            total = inputs.len(),
            "resuming: finished tasks are kept"
        );
    }
    let dedup = if cfg.dedup.enabled && resumed < inputs.len() as u64 {
        Some(pool.install(|| crate::dedup::load_or_run(&build_dir, &out, &inputs, cfg))?)
    } else {
        None
    };
    let todo: Vec<usize> = (0..inputs.len()).filter(|&i| done[i].is_none()).collect();
    let fresh: Vec<TaskRecord> = pool.install(|| {
        todo.par_iter()
            .with_max_len(1)
            .map(|&i| {
                run_task(
                    i,
                    &inputs[i],
                    cfg,
                    &tok,
                    &out,
                    &build_dir,
                    &progress,
                    dedup.as_ref().map(|d| d.for_file(i)),
                )
            })
            .collect::<Result<Vec<_>>>()
    })?;
    // Throughput counts the text this run tokenized, not the tasks an earlier run finished.
    let fresh_bytes: u64 = fresh.iter().map(|r| r.stats.text_bytes).sum();
    for rec in fresh {
        let i = rec.task;
        done[i] = Some(rec);
    }
    progress.finish();

    let records: Vec<TaskRecord> = done
        .into_iter()
        .map(|r| r.expect("every task finished"))
        .collect();
    let mut total = TaskStats::default();
    let mut shards = Vec::new();
    for r in &records {
        total.merge(&r.stats);
        shards.extend(r.shards.iter().cloned());
    }
    let manifest = Manifest::new(tok.identity().clone(), tok.dtype(), shards);
    let seconds = started.elapsed().as_secs_f64();
    let mb = fresh_bytes as f64 / 1e6;
    let stats = BuildStats {
        inputs: inputs.len() as u64,
        input_bytes: total_bytes,
        tasks_resumed: resumed,
        documents_read: total.documents_read(),
        documents_written: total.documents_written,
        documents_skipped: total.skipped_by_reason(),
        records_ignored: total.read.ignored.clone(),
        text_bytes: total.text_bytes,
        tokens: total.tokens,
        shards: manifest.shards.len() as u64,
        threads,
        seconds,
        text_mb_per_s: mb / seconds,
        text_mb_per_s_per_core: mb / seconds / threads as f64,
        peak_rss_bytes: peak_rss_bytes(),
        skip_samples: total.read.skipped.samples.clone(),
        dedup: crate::dedup::stored_stats(&build_dir),
        funnel: total.funnel.clone(),
    };
    let mut json = serde_json::to_vec_pretty(&stats).expect("stats serialise");
    json.push(b'\n');
    atomic_write(&out.join("stats.json"), &json)?;
    if !stats.funnel.rows.is_empty() {
        // no paths or times: the dataset stays byte-identical wherever and however it is built
        let title = format!(
            "tokenmill build: {} documents read, {} written",
            stats.documents_read, stats.documents_written
        );
        atomic_write(&out.join("funnel.svg"), stats.funnel.svg(&title).as_bytes())?;
    }
    // Last: the manifest makes the dataset visible.
    manifest.store(&out)?;
    Ok(BuildOutcome { manifest, stats })
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
