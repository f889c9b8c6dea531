//! `tokenmill dedup INPUT... --out DIR`: dedup alone, on documents from any reader (the output of
//! other tools included). Writes `kept.parquet` (document schema), `removed.parquet` (each removed
//! document with its stage, cluster and the document kept in its place), `clusters.parquet` and
//! `stats.json`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, UInt64Type};
use parquet::arrow::ArrowWriter;
use rayon::prelude::*;
use serde::Serialize;
use tokenmill_dedup::{
    DedupConfig, DedupOutcome, DedupStats, Fingerprint, Fingerprinter, Stage, run_dedup,
};
use tokenmill_ingest::{DocumentReader, ReadOptions, ReadStats};

use crate::error::{Error, Result};

/// What `tokenmill dedup` did.
#[derive(Debug, Clone, Serialize)]
pub struct DedupReport {
    pub inputs: usize,
    pub read: ReadStats,
    pub dedup: DedupStats,
    pub kept: u64,
    pub removed: u64,
    pub threads: usize,
    pub fingerprint_seconds: f64,
    pub fingerprints_per_s: f64,
    pub fingerprints_per_s_per_core: f64,
    pub total_seconds: f64,
    pub peak_rss_bytes: Option<u64>,
}

/// Calls `f(doc number, batch, row)` for every document of `inputs`, in the global order.
fn scan(
    inputs: &[PathBuf],
    read: &ReadOptions,
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

/// Fingerprints of every document, computed batch by batch in parallel.
fn fingerprints(
    inputs: &[PathBuf],
    read: &ReadOptions,
    fp: &Fingerprinter,
) -> Result<(Vec<(u64, Fingerprint)>, ReadStats)> {
    let mut out = Vec::new();
    let mut stats = ReadStats::default();
    let mut n = 0u64;
    for p in inputs {
        let mut r = DocumentReader::open(p, read)?;
        for b in &mut r {
            let b = b?;
            let t = b
                .column_by_name("text")
                .expect("document schema")
                .as_string::<i32>();
            let fps: Vec<Fingerprint> = (0..b.num_rows())
                .into_par_iter()
                .map(|i| fp.fingerprint(if t.is_valid(i) { t.value(i) } else { "" }))
                .collect();
            for f in fps {
                out.push((n, f));
                n += 1;
            }
        }
        stats.merge(r.stats());
    }
    Ok((out, stats))
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
    ArrowWriter::try_new(f, schema, None)
        .map_err(|e| Error::Unsupported(format!("{}: {e}", path.display())))
}

fn pq<T>(path: &Path, r: std::result::Result<T, parquet::errors::ParquetError>) -> Result<T> {
    r.map_err(|e| Error::Unsupported(format!("{}: {e}", path.display())))
}

/// Runs dedup over `inputs` and writes the results to `out`.
pub fn dedup_files(
    inputs: &[PathBuf],
    read: &ReadOptions,
    cfg: &DedupConfig,
    out: &Path,
    threads: usize,
) -> Result<(DedupOutcome, DedupReport)> {
    let started = Instant::now();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let threads = if threads == 0 {
        rayon::current_num_threads()
    } else {
        threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Config(e.to_string()))?;
    let fp = Fingerprinter::new(cfg);
    let t0 = Instant::now();
    let (fps, read_stats) = pool.install(|| fingerprints(inputs, read, &fp))?;
    let fingerprint_seconds = t0.elapsed().as_secs_f64();
    let n_docs = fps.len() as u64;
    let spill = out.join(".spill");
    let mut source = |docs: &[u64]| -> tokenmill_dedup::Result<HashMap<u64, Vec<u64>>> {
        let want: HashSet<u64> = docs.iter().copied().collect();
        let mut sets = HashMap::new();
        scan(inputs, read, |n, b, row| {
            if want.contains(&n) {
                sets.insert(n, fp.shingle_set(text_of(b, row)));
            }
            Ok(())
        })
        .map_err(|e| tokenmill_dedup::Error::Config(format!("re-reading for verification: {e}")))?;
        Ok(sets)
    };
    let outcome = run_dedup(cfg, &spill, fps, Some(&mut source))
        .map_err(|e| Error::Unsupported(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&spill);

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
    let kept_path = out.join("kept.parquet");
    let mut kept_w = writer(&kept_path, doc_schema.clone())?;
    let removed_schema = Arc::new(Schema::new(vec![
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
    ]));
    let removed_path = out.join("removed.parquet");
    let mut removed_w = writer(&removed_path, removed_schema.clone())?;
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
            pq(&kept_path, kept_w.write(&kb))?;
            let mut cols: (
                UInt64Builder,
                StringBuilder,
                StringBuilder,
                UInt64Builder,
                StringBuilder,
                StringBuilder,
                UInt64Builder,
                UInt64Builder,
                StringBuilder,
                StringBuilder,
                UInt64Builder,
                StringBuilder,
            ) = Default::default();
            for (i, k) in keep.iter().enumerate() {
                if *k {
                    continue;
                }
                let d = outcome.removed(n + i as u64).expect("removed");
                let m = meta(&b, i);
                let km = &kept_meta[&d.kept];
                cols.0.append_value(d.doc);
                cols.1.append_value(&m.id);
                cols.2.append_value(&m.source);
                cols.3.append_value(m.offset);
                cols.4.append_option(m.url.as_deref());
                cols.5.append_value(match d.stage {
                    Stage::Exact => "exact",
                    Stage::Fuzzy => "fuzzy",
                });
                cols.6.append_value(d.cluster);
                cols.7.append_value(d.kept);
                cols.8.append_value(&km.id);
                cols.9.append_value(&km.source);
                cols.10.append_value(km.offset);
                cols.11.append_option(km.url.as_deref());
                removed += 1;
            }
            let arrays: Vec<ArrayRef> = vec![
                Arc::new(cols.0.finish()),
                Arc::new(cols.1.finish()),
                Arc::new(cols.2.finish()),
                Arc::new(cols.3.finish()),
                Arc::new(cols.4.finish()),
                Arc::new(cols.5.finish()),
                Arc::new(cols.6.finish()),
                Arc::new(cols.7.finish()),
                Arc::new(cols.8.finish()),
                Arc::new(cols.9.finish()),
                Arc::new(cols.10.finish()),
                Arc::new(cols.11.finish()),
            ];
            let rb = RecordBatch::try_new(removed_schema.clone(), arrays)?;
            if rb.num_rows() > 0 {
                pq(&removed_path, removed_w.write(&rb))?;
            }
            n += b.num_rows() as u64;
        }
    }
    pq(&kept_path, kept_w.close())?;
    pq(&removed_path, removed_w.close())?;

    // Clusters: id, size, the kept document.
    let clusters_path = out.join("clusters.parquet");
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
    let mut w = writer(&clusters_path, batch.schema())?;
    pq(&clusters_path, w.write(&batch))?;
    pq(&clusters_path, w.close())?;

    let report = DedupReport {
        inputs: inputs.len(),
        read: read_stats,
        dedup: outcome.stats.clone(),
        kept,
        removed,
        threads,
        fingerprint_seconds,
        fingerprints_per_s: n_docs as f64 / fingerprint_seconds,
        fingerprints_per_s_per_core: n_docs as f64 / fingerprint_seconds / threads as f64,
        total_seconds: started.elapsed().as_secs_f64(),
        peak_rss_bytes: crate::stats::peak_rss_bytes(),
    };
    let mut json = serde_json::to_vec_pretty(&report).expect("serialises");
    json.push(b'\n');
    tokenmill_shards::atomic_write(&out.join("stats.json"), &json)?;
    Ok((outcome, report))
}

/// Every pair of documents sharing an LSH bucket (for comparisons with other LSH
/// implementations on small corpora; in memory).
pub fn all_candidate_pairs(cfg: &DedupConfig, fps: &[(u64, Fingerprint)]) -> Vec<(u64, u64)> {
    let mut buckets: HashMap<(usize, u64), Vec<u64>> = HashMap::new();
    for (doc, f) in fps {
        if f.signature.len() != cfg.bands * cfg.rows {
            continue;
        }
        for (b, rows) in f.signature.chunks_exact(cfg.rows).enumerate() {
            let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
            buckets
                .entry((b, xxhash_rust::xxh3::xxh3_64(&bytes)))
                .or_default()
                .push(*doc);
        }
    }
    let mut pairs: Vec<(u64, u64)> = Vec::new();
    for docs in buckets.values() {
        for i in 0..docs.len() {
            for j in i + 1..docs.len() {
                let (a, b) = (docs[i].min(docs[j]), docs[i].max(docs[j]));
                pairs.push((a, b));
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// Fingerprints of `inputs` (exposed for benchmarks and pair comparisons).
pub fn fingerprint_files(
    inputs: &[PathBuf],
    read: &ReadOptions,
    cfg: &DedupConfig,
) -> Result<Vec<(u64, Fingerprint)>> {
    Ok(fingerprints(inputs, read, &Fingerprinter::new(cfg))?.0)
}
