//! Deduplication: exact (normalised-text xxh3-128) and fuzzy (MinHash LSH), deterministic, with
//! bounded memory, recording for every removed document the stage, its cluster and the document
//! kept in its place.
//!
//! The pipeline over documents numbered `0..n` in the global order (input file, then record):
//!
//! 1. [`Fingerprinter`]: normalise, shingle (word n-grams; CJK falls back to characters), hash;
//!    produce the exact hash and the MinHash signature of each document (in parallel).
//! 2. [`BucketSpill`]: band hashes `(band, hash, doc)` go to partitions by hash; a partition is
//!    written to disk when the memory budget is reached.
//! 3. Partition by partition: sort, and link consecutive documents of each bucket (candidate
//!    pairs); optionally verify each pair by exact Jaccard ([`jaccard`]).
//! 4. [`UnionFind`] over the accepted pairs; one document kept per cluster ([`KeepRule`]).

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod config;
pub mod error;
pub mod fingerprint;
pub mod minhash;
pub mod normalize;
pub mod plan;
pub mod shingle;
pub mod spill;
pub mod unionfind;

pub use config::{DedupConfig, KeepRule};
pub use error::{Error, Result};
pub use fingerprint::{Fingerprint, Fingerprinter};
pub use minhash::MinHasher;
pub use plan::{
    Decision, DedupOutcome, DedupStats, Stage, TASK_SHIFT, TaskCollector, group, jaccard,
    run_dedup, task_doc,
};
pub use spill::BucketSpill;
pub use unionfind::UnionFind;
