//! The `tokenmill` command line as a library: one module per command in [`commands`] (each its
//! clap `Args` and a `run`), the benchmarks in [`bench`], and where the Python peers that
//! benchmarks and tests run side by side are found ([`peers`]). The binary (`main.rs`) only
//! parses and dispatches; the work is done by the `tokenmill-pipelines` library and the stage
//! crates below it.

#![deny(unsafe_code)]

pub mod bench;
pub mod commands;
pub mod peers;
