//! End-to-end tests across tokenmill's crates, on the real files in `../shared/data`.

mod bad_input;
mod bf16;
mod build;
mod dedup;
mod disk;
mod distill;
mod doctor;
mod emulated_gpu;
mod eval;
mod extraction;
mod fast_tokenizer;
mod hf_roundtrip;
mod hostile;
mod killed;
mod loader;
mod megatron;
mod objstore;
mod parallel;
mod readers;
mod sft;
mod slurm;
mod spikes;
mod train;
mod train_tasks;
mod what_people_see;
