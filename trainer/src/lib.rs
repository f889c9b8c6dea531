//! The trainer: a DeepSeek-V3-architecture model (MLA, DeepSeekMoE with auxiliary-loss-free
//! balancing, multi-token prediction) with hand-written forward and split backward passes over
//! the kernels' [`tokenmill_kernels::Backend`], its optimizer and its training loop.

#![warn(missing_docs)]

pub mod block;
pub mod config;
pub mod cost;
pub mod decode;
pub mod error;
pub mod fsutil;
pub mod grad_groups;
pub mod hf;
pub mod hf_export;
pub mod hf_init;
pub mod losslog;
pub mod mla;
pub mod mlp;
pub mod model;
pub mod moe;
pub mod ops;
pub mod optim;
pub mod parallel;
pub mod params;
pub mod pipeline;
pub mod recycle;
pub mod rng;
pub mod spikes;
pub mod timeline;
pub mod train;

pub use config::{ModelConfig, PRESETS};
pub use error::{Error, Result};
pub use model::{Batch, Forward, LossWeights, Model, Parallel, Stage, WgradMode};
