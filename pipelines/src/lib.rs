//! Pipelines: configuration, orchestration of the stages, and the `tokenmill` CLI's commands.
//!
//! `build` runs read ([`tokenmill_ingest`]) → tokenize → shard write ([`tokenmill_shards`]) as
//! independent tasks, one per input file, in parallel and resumably.

#![deny(unsafe_code)]

pub mod bench;
pub mod build;
pub mod config;
pub mod corpus;
pub mod dedup_cmd;
pub mod dedup_stage;
pub mod error;
pub mod excluded;
pub mod extract_cmd;
pub mod gemm_bench;
pub mod inspect;
pub mod loader_bench;
pub mod plot;
pub mod precision_bench;
pub mod progress;
pub mod quickstart;
pub mod report;
pub mod sql;
pub mod stages;
pub mod stats;
pub mod task;
pub mod trace;
pub mod train_bench;
pub mod train_cmd;
pub mod udf;

pub use build::{BuildOutcome, build};
pub use config::BuildConfig;
pub use error::{Error, Result};
