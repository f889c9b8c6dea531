//! One build task: one input file read, tokenized and written to its own shards.
//!
//! Tasks are independent (no shared state but the tokenizer), so they run in parallel here and,
//! later, on different machines. A task's shards are named `shard-<task>-<part>`, which makes
//! the output independent of scheduling; a task is done when its record
//! (`.build/tasks/<task>.json`) is published.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;
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
    pub task: usize,
    pub input: String,
    pub shards: Vec<ShardEntry>,
    pub stats: TaskStats,
}

impl TaskRecord {
    pub fn path(build_dir: &Path, task: usize) -> PathBuf {
        build_dir.join("tasks").join(format!("{task:06}.json"))
    }

    /// The record of a finished task, if it is there and its shards exist with the right sizes.
    pub fn load_done(build_dir: &Path, out: &Path, task: usize, input: &str) -> Option<TaskRecord> {
        let bytes = std::fs::read(Self::path(build_dir, task)).ok()?;
        let rec: TaskRecord = serde_json::from_slice(&bytes).ok()?;
        let ok = rec.task == task
            && rec.input == input
            && rec.shards.iter().all(|s| {
                std::fs::metadata(s.bin_path(out)).is_ok_and(|m| m.len() == s.bin_bytes)
                    && s.idx_path(out).is_file()
                    && s.prov_path(out).is_file()
            });
        ok.then_some(rec)
    }
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
    dedup: Option<crate::dedup_stage::FileFilter<'_>>,
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
    // Number of the next document of this file in the global order (for dedup decisions).
    let mut doc_in_file = 0u64;
    while let Some(batch) = reader.next() {
        let batch = batch?;
        let (docs_before, tokens_before) = (stats.documents_written, stats.tokens);
        let cols = Columns::of(&batch);
        // Every row goes through the stages (extraction, filters); kept rows are tokenized,
        // dropped ones counted and recorded with the stage and rule.
        let mut rows = Vec::with_capacity(batch.num_rows());
        let mut kept: Vec<crate::stages::Kept<'_>> = Vec::with_capacity(batch.num_rows());
        let mut meta: Vec<crate::stages::RowMeta<'_>> = Vec::with_capacity(batch.num_rows());
        for r in 0..batch.num_rows() {
            let global = doc_in_file;
            doc_in_file += 1;
            if let Some(stage) = dedup.as_ref().and_then(|d| d.removed(global)) {
                *stats.dropped.entry(stage.into()).or_default() += 1;
                continue;
            }
            let url = cols.url.is_valid(r).then(|| cols.url.value(r));
            let doc = crate::stages::DocIn {
                url,
                text: cols.text(r),
                html: cols.html.is_valid(r).then(|| cols.html.value(r)),
            };
            let m = crate::stages::RowMeta {
                id: cols.id.value(r),
                source: cols.source.value(r),
                offset: cols.offset.value(r),
                url,
            };
            match stages.run(doc, &mut stats.funnel) {
                Ok(k) => {
                    rows.push(r);
                    kept.push(k);
                    meta.push(m);
                }
                Err(why) => {
                    let key = if why.stage == "read" {
                        why.rule.clone()
                    } else {
                        why.stage.to_string()
                    };
                    *stats.dropped.entry(key).or_default() += 1;
                    drops.push(
                        m.dropped(why.text.as_deref().or(doc.text).or(doc.html)),
                        &why,
                    )?;
                }
            }
        }
        // The recipe's SQL condition, over the batch's kept documents at once.
        let pass = stages.apply_sql(&meta, &kept, &mut stats.funnel)?;
        let mut texts = Vec::with_capacity(kept.len());
        let mut kept_rows = Vec::with_capacity(kept.len());
        let mut langs = Vec::with_capacity(kept.len());
        for ((k, m), (&r, ok)) in kept.into_iter().zip(&meta).zip(rows.iter().zip(pass)) {
            if ok {
                texts.push(k.text);
                kept_rows.push(r);
                langs.push(k.lang);
            } else {
                *stats.dropped.entry("sql".into()).or_default() += 1;
                drops.push(m.dropped(Some(&k.text)), &crate::stages::sql_dropped())?;
            }
        }
        let rows = kept_rows;
        let refs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let tokens = tok.encode_batch(&refs)?;
        for (((&r, text), ids), lang) in rows.iter().zip(&refs).zip(&tokens).zip(&langs) {
            let w = match writer.as_mut() {
                Some(w) => w,
                None => writer.insert(ShardWriter::create(
                    out,
                    &format!("{}{:04}", shard_prefix(task), shards.len()),
                    dtype,
                )?),
            };
            w.push(
                ids,
                DocSource {
                    id: cols.id.value(r),
                    source: cols.source.value(r),
                    offset: cols.offset.value(r),
                    url: cols.url.is_valid(r).then(|| cols.url.value(r)),
                    text_xxh3: xxh3_64(text.as_bytes()),
                    // the identifier's verdict, else the input's own language (e.g. a WET
                    // record's `WARC-Identified-Content-Language`)
                    lang: lang.as_ref().map(|l| l.0.as_str()).or_else(|| cols.lang(r)),
                    lang_score: lang.as_ref().map(|l| l.1),
                },
            )?;
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
    let rec = TaskRecord {
        task,
        input: input.display().to_string(),
        shards,
        stats,
    };
    if !rec.stats.reconciles() {
        return Err(Error::Unsupported(format!(
            "internal: task {task} counts do not reconcile: {:?}",
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

struct Columns<'a> {
    id: &'a arrow::array::StringArray,
    source: &'a arrow::array::StringArray,
    offset: &'a arrow::array::PrimitiveArray<UInt64Type>,
    url: &'a arrow::array::StringArray,
    text: &'a arrow::array::StringArray,
    html: &'a arrow::array::StringArray,
    lang: &'a arrow::array::StringArray,
}

impl<'a> Columns<'a> {
    fn of(b: &'a RecordBatch) -> Self {
        let s = |n: &str| {
            b.column_by_name(n)
                .expect("document schema")
                .as_string::<i32>()
        };
        Columns {
            id: s("id"),
            source: s("source"),
            offset: b
                .column_by_name("offset")
                .expect("document schema")
                .as_primitive::<UInt64Type>(),
            url: s("url"),
            text: s("text"),
            html: s("html"),
            lang: s("lang"),
        }
    }
    fn text(&self, r: usize) -> Option<&'a str> {
        self.text.is_valid(r).then(|| self.text.value(r))
    }
    fn lang(&self, r: usize) -> Option<&'a str> {
        self.lang.is_valid(r).then(|| self.lang.value(r))
    }
}
