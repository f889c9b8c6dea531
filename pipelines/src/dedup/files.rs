//! Dedup alone, on documents from any reader (the output of other tools included): writes
//! `kept.parquet` (document schema), `removed.parquet` (each removed document with its stage,
//! cluster and the document kept in its place), `clusters.parquet` and `stats.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tokenmill_dedup::{DedupConfig, DedupOutcome, DedupStats, Fingerprint, Fingerprinter};
use tokenmill_ingest::{DocumentReader, ReadConfig, ReadStats};

use super::decide::{Decided, decide, fingerprint_batch, write_tables};
use crate::error::{Error, Result};

/// What `tokenmill dedup` did.
#[derive(Debug, Clone, Serialize)]
pub struct DedupReport {
    /// Input files.
    pub inputs: usize,
    /// What reading the inputs produced and skipped.
    pub read: ReadStats,
    /// The dedup run's counts (exact, URL and fuzzy removals, clusters, candidate pairs, ...).
    pub dedup: DedupStats,
    /// Documents written to `kept.parquet`.
    pub kept: u64,
    /// Documents written to `removed.parquet`.
    pub removed: u64,
    /// Worker threads used.
    pub threads: usize,
    /// Wall-clock seconds of the dedup decision (fingerprinting, grouping, verification).
    pub fingerprint_seconds: f64,
    /// Documents per second over `fingerprint_seconds`.
    pub fingerprints_per_s: f64,
    /// `fingerprints_per_s` divided by `threads`.
    pub fingerprints_per_s_per_core: f64,
    /// Wall-clock seconds of the whole run, tables included (not `stats.json` itself).
    pub total_seconds: f64,
    /// Peak resident memory of the process in bytes, where the platform reports it.
    pub peak_rss_bytes: Option<u64>,
}

/// Runs dedup over `inputs` and writes the results to `out`.
pub fn dedup_files(
    inputs: &[PathBuf],
    read: &ReadConfig,
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
        .build()?;
    let decided = pool.install(|| decide(inputs, read, cfg, &out.join(".spill")))?;
    let Decided {
        outcome,
        read: read_stats,
        fingerprint_seconds,
        ..
    } = decided;
    let n_docs = outcome.stats.documents;
    let (kept, removed) = write_tables(
        inputs,
        read,
        &outcome,
        &out.join("removed.parquet"),
        &out.join("clusters.parquet"),
        Some(&out.join("kept.parquet")),
    )?;

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

/// Fingerprints of `inputs` (exposed for benchmarks and pair comparisons; in memory).
pub fn fingerprint_files(
    inputs: &[PathBuf],
    read: &ReadConfig,
    cfg: &DedupConfig,
) -> Result<Vec<(u64, Fingerprint)>> {
    let fp = Fingerprinter::new(cfg);
    let mut out = Vec::new();
    for p in inputs {
        for b in &mut DocumentReader::open(p, read)? {
            for f in fingerprint_batch(&fp, &b?) {
                out.push((out.len() as u64, f));
            }
        }
    }
    Ok(out)
}
