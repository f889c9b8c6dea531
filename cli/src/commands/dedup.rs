//! `tokenmill dedup INPUT... --out DIR`: exact and MinHash LSH dedup alone.

use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;
use tokenmill_dedup::{DedupConfig, KeepRule};
use tokenmill_pipelines::config::InputConfig;
use tokenmill_pipelines::dedup::{all_candidate_pairs, dedup_files, fingerprint_files};

/// Which document of a duplicate cluster is kept.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum KeepArg {
    /// The first in input order.
    Earliest,
    /// The longest text.
    Longest,
}

/// `tokenmill dedup`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input files or globs (any reader: JSONL, Parquet, WET, text).
    pub inputs: Vec<String>,
    /// Output directory: kept.parquet, removed.parquet (each removal with its reason and the
    /// document kept for it), clusters.parquet, stats.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Skip exact dedup.
    #[arg(long)]
    pub no_exact: bool,
    /// Skip fuzzy (MinHash LSH) dedup.
    #[arg(long)]
    pub no_fuzzy: bool,
    /// Also remove documents whose normalised URL repeats.
    #[arg(long)]
    pub url: bool,
    /// Shingle length, in words (or characters with --char-ngrams).
    #[arg(long, default_value_t = 5)]
    pub ngram: usize,
    /// Character n-grams instead of words.
    #[arg(long)]
    pub char_ngrams: bool,
    /// LSH bands (FineWeb: 14); bands × rows MinHash functions in all.
    #[arg(long, default_value_t = 14)]
    pub bands: usize,
    /// MinHash values per band (FineWeb: 8).
    #[arg(long, default_value_t = 8)]
    pub rows: usize,
    /// Seed of the MinHash functions.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Remove a near-duplicate only if the exact Jaccard similarity of its shingles with the
    /// document kept for it is at least this (default 0.7).
    #[arg(long, visible_alias = "verify")]
    pub threshold: Option<f64>,
    /// Compare each document with at most this many kept documents of its candidate group.
    #[arg(long, default_value_t = 256)]
    pub max_centers: usize,
    /// Which document of a duplicate group is kept.
    #[arg(long, value_enum, default_value = "earliest")]
    pub keep: KeepArg,
    /// Memory for bucket records before spilling to disk.
    #[arg(long, default_value_t = 256)]
    pub memory_mb: usize,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Also write every LSH candidate pair (JSON lines {"a","b"}) for comparisons.
    #[arg(long)]
    pub pairs_out: Option<PathBuf>,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tokenmill dedup`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = DedupConfig {
        exact: !a.no_exact,
        fuzzy: !a.no_fuzzy,
        url: a.url,
        ngram: a.ngram,
        char_ngrams: a.char_ngrams,
        bands: a.bands,
        rows: a.rows,
        seed: a.seed,
        threshold: a.threshold.unwrap_or(tokenmill_dedup::DEFAULT_THRESHOLD),
        max_centers: a.max_centers,
        keep: match a.keep {
            KeepArg::Earliest => KeepRule::Earliest,
            KeepArg::Longest => KeepRule::Longest,
        },
        memory_budget_bytes: a.memory_mb << 20,
        ..Default::default()
    };
    let input = InputConfig {
        paths: a.inputs,
        ..Default::default()
    };
    let inputs = input.files()?;
    let (_, r) = dedup_files(&inputs, &input.read, &cfg, &a.out, a.threads)?;
    if let Some(p) = &a.pairs_out {
        let fps = fingerprint_files(&inputs, &input.read, &cfg)?;
        let pairs = all_candidate_pairs(&cfg, &fps);
        let mut out = String::new();
        for (x, y) in &pairs {
            out.push_str(&format!("{{\"a\": {x}, \"b\": {y}}}\n"));
        }
        std::fs::write(p, out).with_context(|| p.display().to_string())?;
        eprintln!("{} candidate pairs → {}", pairs.len(), p.display());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let d = &r.dedup;
    println!("dedup → {}", a.out.display());
    for (k, v) in [
        ("documents read", r.read.read()),
        ("documents deduplicated", d.documents),
        ("  empty (not deduplicated)", d.empty),
        ("  shorter than one n-gram", d.short),
        ("removed: exact", d.exact_removed),
        ("removed: url", d.url_removed),
        ("removed: fuzzy", d.fuzzy_removed),
        ("kept", r.kept),
        ("clusters", d.clusters),
        ("candidate groups", d.components),
        ("candidate pairs", d.candidate_pairs),
        ("re-shingled documents", d.shingled_documents),
        ("Jaccard comparisons", d.compared),
        ("kept below the threshold", d.verified_rejected),
        ("bucket records", d.bucket_records),
        ("spilled bytes", d.spilled_bytes),
    ] {
        println!("  {k:<30} {v:>12}");
    }
    println!(
        "  {:<30} {:>12.0}",
        "fingerprints/s per core", r.fingerprints_per_s_per_core
    );
    println!("  {:<30} {:>12.2}", "seconds", r.total_seconds);
    if let Some(p) = r.peak_rss_bytes {
        println!(
            "  {:<30} {:>12.1}",
            "peak RSS MiB",
            p as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
