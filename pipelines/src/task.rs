//! One build task: one input file read, tokenized and written to its own shards.
//!
//! Tasks are independent (no shared state but the tokenizer), so they run in parallel here and,
//! later, on different machines. A task's shards are named `shard-<task>-<part>`, which makes
//! the output independent of scheduling; a task is done when its record
//! (`.build/tasks/<task>.json`) is published.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenmill_ingest::DocumentReader;
use tokenmill_shards::{DocSource, ShardEntry, ShardWriter, TextTokenizer, atomic_write};
use xxhash_rust::xxh3::xxh3_64;

use crate::config::BuildConfig;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::stats::TaskStats;

/// Name prefix of the shards of task `task`.
pub fn shard_prefix(task: usize) -> String {
    format!("shard-{task:06}-")
}

/// The published result of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's number: the index of its input in the build's plan.
    pub task: usize,
    /// The input file's path, as the plan records it.
    pub input: String,
    /// The shards the task wrote, in part order (none when it kept no document).
    pub shards: Vec<ShardEntry>,
    /// What the task read, dropped and wrote.
    pub stats: TaskStats,
    /// xxh3-64 (hex) of the task's table of dropped documents (`excluded/task-N.parquet`), so
    /// a table cut short by a crash is found on resume and the task redone. Records written
    /// before this field have none and are not checked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded_xxh3: Option<String>,
}

impl TaskRecord {
    /// Where the record of task `task` is published: `<build_dir>/tasks/<task>.json`, the task
    /// number zero-padded to six digits.
    pub fn path(build_dir: &Path, task: usize) -> PathBuf {
        build_dir.join("tasks").join(format!("{task:06}.json"))
    }

    /// The record of a finished task, if it is there, its shards exist with the right sizes
    /// (indexes, provenance and the table of dropped documents with the right checksums).
    pub fn load_done(build_dir: &Path, out: &Path, task: usize, input: &str) -> Option<TaskRecord> {
        let bytes = std::fs::read(Self::path(build_dir, task)).ok()?;
        let rec: TaskRecord = serde_json::from_slice(&bytes).ok()?;
        // A tampered record is not trusted: its shards must be this task's plain names in
        // `out`, regular files there (not symbolic links); otherwise the task is redone.
        let regular = |p: PathBuf| std::fs::symlink_metadata(p).ok().filter(|m| m.is_file());
        let prefix = shard_prefix(task);
        let ok = rec.task == task
            && rec.input == input
            && rec.shards.iter().all(|s| {
                tokenmill_shards::manifest::is_plain_name(&s.name)
                    && s.name.starts_with(&prefix)
                    && regular(s.bin_path(out)).is_some_and(|m| m.len() == s.bin_bytes)
                    && regular(s.idx_path(out)).is_some()
                    && regular(s.prov_path(out)).is_some()
                    // a truncated index or provenance table (small files) is redone too
                    && xxh3_is(&s.idx_path(out), &s.idx_xxh3)
                    && xxh3_is(&s.prov_path(out), &s.prov_xxh3)
                    && s.masks.as_ref().is_none_or(|m| {
                        xxh3_is(&tokenmill_shards::mask::mask_idx_path(out, &s.name), &m.idx_xxh3)
                            && regular(tokenmill_shards::mask::mask_bin_path(out, &s.name)).is_some()
                    })
            })
            // a table of dropped documents cut short by a crash is redone too
            && rec.excluded_xxh3.as_ref().is_none_or(|h| {
                regular(crate::excluded::path(out, task)).is_some()
                    && xxh3_is(&crate::excluded::path(out, task), h)
            });
        ok.then_some(rec)
    }
}

/// Whether the file at `path` has the xxh3 `want` (hex, as a manifest records it).
fn xxh3_is(path: &Path, want: &str) -> bool {
    std::fs::read(path).is_ok_and(|b| tokenmill_shards::manifest::hex64(xxh3_64(&b)) == want)
}

/// Removes whatever an interrupted run of `task` left in `out`.
pub fn clear_task_outputs(out: &Path, task: usize) -> Result<()> {
    let ex = crate::excluded::path(out, task);
    for p in [ex.with_extension("parquet.tmp"), ex] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&p, e)),
            _ => {}
        }
    }
    let prefix = shard_prefix(task);
    let rd = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(out, e))?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// Runs task `task` over `input`, writing shards into `out` and the record into `build_dir`.
#[allow(clippy::too_many_arguments)] // the build's context, passed explicitly so tasks stay independent
pub fn run_task(
    task: usize,
    input: &Path,
    cfg: &BuildConfig,
    tok: &TextTokenizer,
    out: &Path,
    build_dir: &Path,
    progress: &Progress,
    dedup: Option<crate::dedup::FileFilter<'_>>,
) -> Result<TaskRecord> {
    let _span = tracing::info_span!("task", task, input = %input.display()).entered();
    clear_task_outputs(out, task)?;
    let mut reader = DocumentReader::open(input, &cfg.input.read)?;
    let mut stages = crate::stages::Stages::new(&cfg.extract, cfg.filters.as_ref(), &cfg.sql)?;
    stages.keep_text = cfg.output.keep_excluded_text;
    let mut drops = crate::excluded::DropWriter::create(out, task, cfg.output.keep_excluded_text)?;
    let mut stats = TaskStats::default();
    let mut shards = Vec::new();
    let mut writer: Option<ShardWriter> = None;
    let dtype = tok.dtype();
    let mut position = 0u64;
    let sft = match &cfg.sft {
        Some(s) => Some(crate::sft::SftEncoder::new(s, &cfg.tokenizer.path)?),
        None => None,
    };
    // Number of the next document of this file in the global order (for dedup decisions).
    let mut doc_in_file = 0u64;
    while let Some(batch) = reader.next() {
        let batch = batch?;
        let (docs_before, tokens_before) = (stats.documents_written, stats.tokens);
        let cols = crate::stages::DocColumns::of(&batch);
        // Every row goes through the stages (extraction, filters, the SQL condition); kept
        // rows are tokenized, dropped ones counted and recorded with the stage and rule.
        let mut rows = Vec::with_capacity(batch.num_rows());
        for r in 0..batch.num_rows() {
            let global = doc_in_file;
            doc_in_file += 1;
            match dedup.as_ref().and_then(|d| d.removed(global)) {
                Some(stage) => *stats.dropped.entry(stage.into()).or_default() += 1,
                None => rows.push(r),
            }
        }
        let dropped = &mut stats.dropped;
        let kept = stages.run_rows(&cols, rows, &mut stats.funnel, &mut drops, |why| {
            let key = if why.stage == "read" {
                why.rule.clone()
            } else {
                why.stage.to_string()
            };
            *dropped.entry(key).or_default() += 1;
        })?;
        // SFT: conversations rendered by the chat template, with their loss masks.
        let (kept, tokens, masks, hashes) = match &sft {
            Some(enc) => {
                let rows = crate::sft::encode_kept(
                    enc,
                    tok.inner(),
                    &batch,
                    kept,
                    &mut stats,
                    &mut drops,
                )?;
                let mut kept = Vec::with_capacity(rows.len());
                let (mut tokens, mut masks, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
                for (k, e) in rows {
                    kept.push(k);
                    tokens.push(e.ids);
                    masks.push(e.mask);
                    hashes.push(Some(e.text_xxh3));
                }
                (kept, tokens, Some(masks), hashes)
            }
            None => {
                let texts: Vec<&str> = kept.iter().map(|k| k.kept.text.as_ref()).collect();
                let tokens = tok.encode_batch(&texts)?;
                let n = kept.len();
                (kept, tokens, None, vec![None; n])
            }
        };
        let texts: Vec<&str> = kept.iter().map(|k| k.kept.text.as_ref()).collect();
        for (i, ((k, text), ids)) in kept.iter().zip(&texts).zip(&tokens).enumerate() {
            let (lang, lang_score) = k.lang(&cols);
            let w = match writer.as_mut() {
                Some(w) => w,
                None => {
                    let mut w = ShardWriter::create(
                        out,
                        &format!("{}{:04}", shard_prefix(task), shards.len()),
                        dtype,
                    )?;
                    if sft.is_some() {
                        w.enable_masks()?;
                    }
                    writer.insert(w)
                }
            };
            let src = DocSource {
                id: k.meta.id,
                source: k.meta.source,
                offset: k.meta.offset,
                url: k.meta.url,
                // the text tokenized: the chat template's rendering for a conversation
                text_xxh3: hashes[i].unwrap_or_else(|| xxh3_64(text.as_bytes())),
                // the identifier's verdict, else the input's own language (e.g. a WET
                // record's `WARC-Identified-Content-Language`)
                lang: lang.as_deref(),
                lang_score,
            };
            match &masks {
                Some(m) => w.push_masked(ids, &m[i], src)?,
                None => w.push(ids, src)?,
            }
            stats.documents_written += 1;
            stats.tokens += ids.len() as u64;
            stats.text_bytes += text.len() as u64;
            if w.bytes() >= cfg.output.shard_bytes {
                shards.push(writer.take().expect("open writer").finish()?);
            }
        }
        drops.push_skips(reader.take_skips())?;
        let now = reader.input_position();
        progress.advance(
            now.saturating_sub(position),
            stats.documents_written - docs_before,
            stats.tokens - tokens_before,
        );
        position = position.max(now);
    }
    let size = std::fs::metadata(input)
        .map(|m| m.len())
        .unwrap_or(position);
    progress.advance(size.saturating_sub(position), 0, 0);
    if let Some(w) = writer.take() {
        shards.push(w.finish()?);
    }
    drops.push_skips(reader.take_skips())?;
    drops.finish()?;
    stats.read = reader.stats().clone();
    let ex = crate::excluded::path(out, task);
    let excluded = std::fs::read(&ex).map_err(|e| Error::io(&ex, e))?;
    let rec = TaskRecord {
        task,
        input: input.display().to_string(),
        shards,
        stats,
        excluded_xxh3: Some(tokenmill_shards::manifest::hex64(xxh3_64(&excluded))),
    };
    if !rec.stats.reconciles() {
        return Err(Error::Internal(format!(
            "task {task} counts do not reconcile: {:?}",
            rec.stats
        )));
    }
    let mut json = serde_json::to_vec_pretty(&rec).expect("task record serialises");
    json.push(b'\n');
    atomic_write(&TaskRecord::path(build_dir, task), &json)?;
    tracing::info!(
        task,
        documents = rec.stats.documents_written,
        tokens = rec.stats.tokens,
        "task done"
    );
    Ok(rec)
}
