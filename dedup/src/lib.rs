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
//! 3. Partition by partition: sort, and link the documents of each bucket: [`UnionFind`] makes
//!    candidate groups of the documents that exact hashes, URLs and LSH buckets connect.
//! 4. Each group is decided on its own ([`cluster`]): its members in keep order ([`KeepRule`]),
//!    each removed against the first kept one with the same text, the same URL or an exact
//!    Jaccard similarity ([`jaccard`]) of at least the threshold, or else kept. The shingle sets
//!    this needs are fetched once and spilled by group ([`SetSpill`]).
//!
//! [`graph`] cuts the same run into phases for separate processes (signatures per task, edges per
//! partition, one clustering), with the same decisions.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod error;
pub mod fingerprint;
pub mod graph;
pub mod minhash;
pub mod normalize;
pub mod plan;
pub mod setspill;
pub mod shingle;
pub mod spill;
pub mod unionfind;
pub mod verify;

pub use cluster::jaccard;
pub use config::{DEFAULT_THRESHOLD, DedupConfig, KeepRule};
pub use error::{Error, Result};
pub use fingerprint::{Fingerprint, Fingerprinter};
pub use minhash::MinHasher;
pub use plan::{
    Decision, DedupOutcome, DedupStats, Stage, TASK_SHIFT, TaskCollector, group, run_dedup,
    task_doc,
};
pub use setspill::SetSpill;
pub use spill::BucketSpill;
pub use unionfind::UnionFind;
pub use verify::{ShingleSink, ShingleSource};
