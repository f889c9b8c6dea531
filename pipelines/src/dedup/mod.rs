//! Exact and fuzzy (MinHash LSH) dedup of input files: the decision and its tables
//! ([`decide`](mod@decide)), dedup as a job of its own (`tokenmill dedup`, [`files`]) and as a
//! stage of the build ([`stage`]), and that stage as a job graph for Slurm ([`graph`]).

pub mod decide;
pub mod files;
pub mod graph;
pub mod stage;

pub use decide::{Decided, decide, write_tables};
pub use files::{DedupReport, all_candidate_pairs, dedup_files, fingerprint_files};
pub use stage::{DedupFilter, FileFilter, load_or_run, stored_stats};
