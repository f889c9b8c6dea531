//! The dedup decision over a list of input files and the tables that record it
//! (`removed.parquet`, `clusters.parquet`, optionally `kept.parquet`): shared by the standalone
//! `tokenmill dedup` ([`super::files`]) and the build's dedup stage ([`super::stage`]).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, RecordBatch, StringArray, StringBuilder, UInt64Array,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, UInt64Type};
use parquet::arrow::ArrowWriter;
use rayon::prelude::*;
use tokenmill_dedup::{
    Decision, DedupConfig, DedupOutcome, Fingerprint, Fingerprinter, ShingleSink, Stage,
    TaskCollector, group, task_doc,
};
use tokenmill_ingest::{DocumentReader, ReadConfig, ReadStats};

use crate::error::{Error, Result};

/// Calls `f(doc number, batch, row)` for every document of `inputs`, in the global order.
fn scan(
    inputs: &[PathBuf],
    read: &ReadConfig,
    mut f: impl FnMut(u64, &RecordBatch, usize) -> Result<()>,
) -> Result<ReadStats> {
    let mut stats = ReadStats::default();
    let mut n = 0u64;
    for p in inputs {
        let mut r = DocumentReader::open(p, read)?;
        for b in &mut r {
            let b = b?;
            for row in 0..b.num_rows() {
                f(n, &b, row)?;
                n += 1;
            }
        }
        stats.merge(r.stats());
    }
    Ok(stats)
}

fn text_of(b: &RecordBatch, row: usize) -> &str {
    let t = b
        .column_by_name("text")
        .expect("document schema")
        .as_string::<i32>();
    if t.is_valid(row) { t.value(row) } else { "" }
}

/// Fingerprints of the documents of one batch, in parallel, in order.
pub(super) fn fingerprint_batch(fp: &Fingerprinter, b: &RecordBatch) -> Vec<Fingerprint> {
    let text = b
        .column_by_name("text")
        .expect("document schema")
        .as_string::<i32>();
    let url = b
        .column_by_name("url")
        .expect("document schema")
        .as_string::<i32>();
    (0..b.num_rows())
        .into_par_iter()
        .map(|i| {
            let t = if text.is_valid(i) { text.value(i) } else { "" };
            fp.fingerprint_with_url(t, url.is_valid(i).then(|| url.value(i)))
        })
        .collect()
}

/// Re-reads `inputs` (holding `file_docs` documents each) and passes the shingle sets of `docs`
/// (ascending) to `sink`, shingling the wanted documents of each batch in parallel. Files with
/// no wanted document are not opened, and a file is read only up to its last wanted document.
fn reshingle(
    inputs: &[PathBuf],
    file_docs: &[u64],
    read: &ReadConfig,
    fp: &Fingerprinter,
    docs: &[u64],
    sink: &mut ShingleSink<'_>,
) -> Result<()> {
    let mut next = 0;
    let mut start = 0u64;
    for (p, &count) in inputs.iter().zip(file_docs) {
        let end = start + count;
        let mut n = start;
        if next < docs.len() && docs[next] < end {
            let mut r = DocumentReader::open(p, read)?;
            while next < docs.len() && docs[next] < end {
                let Some(b) = r.next() else { break };
                let b = b?;
                let batch_end = n + b.num_rows() as u64;
                let first = next;
                while next < docs.len() && docs[next] < batch_end.min(end) {
                    next += 1;
                }
                let sets: Vec<Vec<u64>> = docs[first..next]
                    .par_iter()
                    .map(|&d| fp.shingle_set(text_of(&b, (d - n) as usize)))
                    .collect();
                for (&d, set) in docs[first..next].iter().zip(sets) {
                    sink(d, set)?;
                }
                n = batch_end;
            }
        }
        // Documents the file no longer holds (it changed since it was fingerprinted) are not
        // delivered: the dedup run names the first of them.
        while next < docs.len() && docs[next] < end {
            next += 1;
        }
        start = end;
    }
    Ok(())
}

/// The directory name of input task `t`'s bucket records.
pub(super) fn task_dir(t: usize) -> String {
    format!("task-{t:06}")
}

/// Input `t` (at `path`) fingerprinted into a collector spilling under `dir`: the collector,
/// the documents read and the reader's counts.
pub(super) fn fingerprint_task(
    t: usize,
    path: &Path,
    read: &ReadConfig,
    cfg: &DedupConfig,
    fp: &Fingerprinter,
    dir: &Path,
    budget: usize,
) -> Result<(TaskCollector, u64, ReadStats)> {
    let mut c = TaskCollector::new(cfg, dir, budget)?;
    let mut r = DocumentReader::open(path, read)?;
    let mut local = 0u64;
    for b in &mut r {
        let fps = fingerprint_batch(fp, &b?);
        for f in &fps {
            c.add(task_doc(t as u64, local), f)?;
            local += 1;
        }
    }
    Ok((c, local, r.stats().clone()))
}

/// The source of shingle sets that re-reads `inputs` (holding `file_docs` documents each).
pub(super) fn reshingle_source<'a>(
    inputs: &'a [PathBuf],
    file_docs: &'a [u64],
    read: &'a ReadConfig,
    fp: &'a Fingerprinter,
) -> impl FnMut(&[u64], &mut ShingleSink<'_>) -> tokenmill_dedup::Result<()> + 'a {
    move |docs: &[u64], sink: &mut ShingleSink<'_>| -> tokenmill_dedup::Result<()> {
        reshingle(inputs, file_docs, read, fp, docs, sink).map_err(|e| {
            tokenmill_dedup::Error::ShingleSource {
                what: "re-reading documents to compare them",
                source: Box::new(e),
            }
        })
    }
}

/// The decisions of a dedup run over `inputs`, and how many documents each input holds.
#[derive(Debug)]
pub struct Decided {
    /// The removed documents (numbered across all inputs, in input order), clusters and counts.
    pub outcome: DedupOutcome,
    /// What reading the inputs produced and skipped, all inputs merged.
    pub read: ReadStats,
    /// Documents produced by each input, in input order.
    pub file_docs: Vec<u64>,
    /// Wall-clock seconds of the whole decision: fingerprinting, grouping, re-reading and
    /// comparing the candidates.
    pub fingerprint_seconds: f64,
}

/// Runs the dedup decision over `inputs`, spilling under `spill`. Each input is a task: its
/// documents are fingerprinted and its bucket records collected in parallel with the other tasks
/// (on the current rayon pool), then all tasks' records are grouped partition by partition, and
/// the files holding documents of candidate groups with different texts are read again to
/// compare them ([`reshingle`]).
pub fn decide(
    inputs: &[PathBuf],
    read: &ReadConfig,
    cfg: &DedupConfig,
    spill: &Path,
) -> Result<Decided> {
    let fp = Fingerprinter::new(cfg);
    let t0 = Instant::now();
    let threads = rayon::current_num_threads().max(1);
    let running = threads.min(inputs.len().max(1));
    let budget = cfg.memory_budget_bytes / running;
    let seal = inputs.len() > threads;
    let tasks: Vec<(TaskCollector, u64, ReadStats)> = inputs
        .par_iter()
        .enumerate()
        .with_max_len(1)
        .map(|(t, path)| {
            let (mut c, local, stats) =
                fingerprint_task(t, path, read, cfg, &fp, &spill.join(task_dir(t)), budget)?;
            if seal {
                c.seal()?;
            }
            Ok((c, local, stats))
        })
        .collect::<Result<_>>()?;
    let mut read_stats = ReadStats::default();
    let mut file_docs = Vec::with_capacity(tasks.len());
    let mut collectors = Vec::with_capacity(tasks.len());
    for (c, n, s) in tasks {
        collectors.push(c);
        file_docs.push(n);
        read_stats.merge(&s);
    }
    let outcome = {
        let mut source = reshingle_source(inputs, &file_docs, read, &fp);
        group(cfg, collectors, Some(&file_docs), spill, &mut source)?
    };
    let _ = std::fs::remove_dir_all(spill);
    Ok(Decided {
        outcome,
        read: read_stats,
        file_docs,
        fingerprint_seconds: t0.elapsed().as_secs_f64(),
    })
}

#[derive(Debug, Clone)]
struct Meta {
    id: String,
    source: String,
    offset: u64,
    url: Option<String>,
}

fn meta(b: &RecordBatch, row: usize) -> Meta {
    let s = |n: &str| {
        b.column_by_name(n)
            .expect("document schema")
            .as_string::<i32>()
            .clone()
    };
    let (id, source, url) = (s("id"), s("source"), s("url"));
    Meta {
        id: id.value(row).to_string(),
        source: source.value(row).to_string(),
        offset: b
            .column_by_name("offset")
            .expect("schema")
            .as_primitive::<UInt64Type>()
            .value(row),
        url: url.is_valid(row).then(|| url.value(row).to_string()),
    }
}

fn writer(path: &Path, schema: Arc<Schema>) -> Result<ArrowWriter<File>> {
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    ArrowWriter::try_new(f, schema, None).map_err(|e| Error::parquet(path, e))
}

fn pq<T>(path: &Path, r: std::result::Result<T, parquet::errors::ParquetError>) -> Result<T> {
    r.map_err(|e| Error::parquet(path, e))
}

/// The columns of `removed.parquet`, one builder each.
#[derive(Default)]
struct RemovedColumns {
    doc: UInt64Builder,
    id: StringBuilder,
    source: StringBuilder,
    offset: UInt64Builder,
    url: StringBuilder,
    stage: StringBuilder,
    cluster: UInt64Builder,
    kept_doc: UInt64Builder,
    kept_id: StringBuilder,
    kept_source: StringBuilder,
    kept_offset: UInt64Builder,
    kept_url: StringBuilder,
    jaccard: Float64Builder,
}

impl RemovedColumns {
    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("doc", DataType::UInt64, false),
            Field::new("id", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("offset", DataType::UInt64, false),
            Field::new("url", DataType::Utf8, true),
            Field::new("stage", DataType::Utf8, false),
            Field::new("cluster", DataType::UInt64, false),
            Field::new("kept_doc", DataType::UInt64, false),
            Field::new("kept_id", DataType::Utf8, false),
            Field::new("kept_source", DataType::Utf8, false),
            Field::new("kept_offset", DataType::UInt64, false),
            Field::new("kept_url", DataType::Utf8, true),
            Field::new("jaccard", DataType::Float64, true),
        ]))
    }

    fn push(&mut self, d: &Decision, m: &Meta, km: &Meta) {
        self.doc.append_value(d.doc);
        self.id.append_value(&m.id);
        self.source.append_value(&m.source);
        self.offset.append_value(m.offset);
        self.url.append_option(m.url.as_deref());
        self.stage.append_value(match d.stage {
            Stage::Exact => "exact",
            Stage::Url => "url",
            Stage::Fuzzy => "fuzzy",
        });
        self.cluster.append_value(d.cluster);
        self.kept_doc.append_value(d.kept);
        self.kept_id.append_value(&km.id);
        self.kept_source.append_value(&km.source);
        self.kept_offset.append_value(km.offset);
        self.kept_url.append_option(km.url.as_deref());
        self.jaccard.append_option(d.jaccard);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.doc.finish()),
            Arc::new(self.id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.url.finish()),
            Arc::new(self.stage.finish()),
            Arc::new(self.cluster.finish()),
            Arc::new(self.kept_doc.finish()),
            Arc::new(self.kept_id.finish()),
            Arc::new(self.kept_source.finish()),
            Arc::new(self.kept_offset.finish()),
            Arc::new(self.kept_url.finish()),
            Arc::new(self.jaccard.finish()),
        ];
        Ok(RecordBatch::try_new(Self::schema(), arrays)?)
    }
}

/// Writes the removed documents (with stage, cluster, the kept document's id, source, offset,
/// url, and the Jaccard similarity of the two) and the clusters as Parquet, and the kept
/// documents too when `kept_path` is set. Returns (kept, removed) counts.
pub fn write_tables(
    inputs: &[PathBuf],
    read: &ReadConfig,
    outcome: &DedupOutcome,
    removed_path: &Path,
    clusters_path: &Path,
    kept_path: Option<&Path>,
) -> Result<(u64, u64)> {
    // Metadata of the kept documents of clusters, then the three tables.
    let kept_docs: HashSet<u64> = outcome.decisions.iter().map(|d| d.kept).collect();
    let mut kept_meta: HashMap<u64, Meta> = HashMap::new();
    scan(inputs, read, |n, b, row| {
        if kept_docs.contains(&n) {
            kept_meta.insert(n, meta(b, row));
        }
        Ok(())
    })?;
    let doc_schema = tokenmill_ingest::document_schema();
    let mut kept_w = match kept_path {
        Some(p) => Some(writer(p, doc_schema.clone())?),
        None => None,
    };
    let mut removed_w = writer(removed_path, RemovedColumns::schema())?;
    let (mut kept, mut removed) = (0u64, 0u64);
    let mut n = 0u64;
    for p in inputs {
        let mut r = DocumentReader::open(p, read)?;
        for b in &mut r {
            let b = b?;
            let keep: Vec<bool> = (0..b.num_rows())
                .map(|i| outcome.removed(n + i as u64).is_none())
                .collect();
            let mask = arrow::array::BooleanArray::from(keep.clone());
            let kb = arrow::compute::filter_record_batch(&b, &mask)?;
            kept += kb.num_rows() as u64;
            if let (Some(w), Some(p)) = (kept_w.as_mut(), kept_path) {
                pq(p, w.write(&kb))?;
            }
            let mut cols = RemovedColumns::default();
            for (i, k) in keep.iter().enumerate() {
                if *k {
                    continue;
                }
                let d = outcome.removed(n + i as u64).expect("removed");
                cols.push(d, &meta(&b, i), &kept_meta[&d.kept]);
                removed += 1;
            }
            let rb = cols.finish()?;
            if rb.num_rows() > 0 {
                pq(removed_path, removed_w.write(&rb))?;
            }
            n += b.num_rows() as u64;
        }
    }
    if let (Some(w), Some(p)) = (kept_w, kept_path) {
        pq(p, w.close())?;
    }
    pq(removed_path, removed_w.close())?;

    // Clusters: id, size, the kept document.
    let mut kept_of: HashMap<u64, u64> = HashMap::new();
    for d in &outcome.decisions {
        kept_of.insert(d.cluster, d.kept);
    }
    let ids: Vec<u64> = outcome.clusters.keys().copied().collect();
    let sizes: Vec<u64> = outcome.clusters.values().copied().collect();
    let kept_ids: Vec<u64> = ids.iter().map(|c| kept_of[c]).collect();
    let s = |f: &dyn Fn(&Meta) -> Option<String>| -> StringArray {
        kept_ids.iter().map(|k| f(&kept_meta[k])).collect()
    };
    let batch = RecordBatch::try_from_iter([
        (
            "cluster",
            Arc::new(UInt64Array::from(ids.clone())) as ArrayRef,
        ),
        ("size", Arc::new(UInt64Array::from(sizes))),
        ("kept_doc", Arc::new(UInt64Array::from(kept_ids.clone()))),
        ("kept_id", Arc::new(s(&|m| Some(m.id.clone())))),
        ("kept_source", Arc::new(s(&|m| Some(m.source.clone())))),
        (
            "kept_offset",
            Arc::new(UInt64Array::from(
                kept_ids
                    .iter()
                    .map(|k| kept_meta[k].offset)
                    .collect::<Vec<_>>(),
            )),
        ),
        ("kept_url", Arc::new(s(&|m| m.url.clone()))),
    ])?;
    let mut w = writer(clusters_path, batch.schema())?;
    pq(clusters_path, w.write(&batch))?;
    pq(clusters_path, w.close())?;

    Ok((kept, removed))
}
