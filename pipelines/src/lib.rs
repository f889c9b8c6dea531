//! Pipelines: the library that composes tokenmill's stages into jobs.
//!
//! - [`build`](mod@build): read ([`tokenmill_ingest`]) → [`stages`] (URL filter, main-content
//!   extraction, the FineWeb filters, the recipe's SQL condition) → [`dedup`] (exact + MinHash
//!   LSH) → tokenize → shard write ([`tokenmill_shards`]), one independent, resumable [`task`] per
//!   input file, in parallel; every dropped document recorded in [`excluded`] tables and counted
//!   in the funnel of [`stats`].
//! - [`extract`]: the same stages without tokenizing (kept documents as JSONL or Parquet).
//! - [`dedup`]: dedup alone, and the dedup stage of the build.
//! - [`inspect`], [`sql`] (DataFusion over a directory's Parquet files, with the filters as SQL
//!   functions from [`udf`]): looking at what a build wrote.
//! - [`train`]: training on a built dataset, with progress; [`trace`], [`report`] and [`plot`]
//!   read a training run back (spikes traced to their documents).
//!
//! The `tokenmill` command line over these lives in the `tokenmill-cli` crate.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod build;
pub mod config;
pub mod dedup;
pub mod distill;
pub mod error;
pub mod eval;
pub mod excluded;
pub mod export;
pub mod extract;
pub mod generate;
pub mod inspect;
pub mod oddity;
pub mod plot;
pub mod progress;
pub mod publish;
pub mod remote_inputs;
pub mod report;
pub mod sft;
pub mod slurm;
pub mod sql;
pub mod stages;
pub mod stats;
pub mod status;
pub mod task;
pub mod trace;
pub mod train;
pub mod udf;

pub use build::{BuildOutcome, build};
pub use config::BuildConfig;
pub use error::{Error, Result};
