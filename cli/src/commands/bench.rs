//! `tokenmill bench …`: the benchmarks of [`crate::bench`].

use crate::bench::{extract, fp8_gemm, gemm, loader, precision, seam, spikes, tokenize, train};

/// `tokenmill bench`.
#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Tokenizer stage vs Python `tokenizers` encode_batch, same tokenizer, texts and threads.
    Tokenize(tokenize::Args),
    /// FP8 GEMM accumulation error vs K: limited-precision accumulator with and without
    /// promotion to FP32 every 128 elements (the DeepSeek-V3 report's observation).
    Fp8Gemm(fp8_gemm::Args),
    /// Training throughput and MFU of a preset vs transformers' DeepseekV3ForCausalLM (torch CPU).
    Train(train::Args),
    /// What one training step asks of the backend seam: calls and bytes per operation, the
    /// PCIe traffic and round trips of a device backend behind it (measured on the CPU).
    Seam(seam::Args),
    /// The same training run in FP32, BF16 and FP8 GEMMs: loss parity and the curves overlaid.
    Precision(precision::Args),
    /// f32 GEMM rate of the CPU backend's fast matmul (own AVX-512 kernel, or the `gemm` crate
    /// without AVX-512) vs the `gemm` crate, torch, the reference loop and this CPU's peak.
    Gemm(gemm::Args),
    /// The loader: open time, memory, tokens/s on one core vs a raw copy of the same bytes.
    Loader(loader::Args),
    /// Main-content extraction on real pages (multilingual snippets, news articles): P/R/F1
    /// and pages/s vs trafilatura on the same files.
    Extract(extract::Args),
    /// Spike detectors calibrated on real text: out-of-distribution documents injected into
    /// several corpora, tiny-model runs, the detectors replayed for every threshold.
    Spikes(spikes::Args),
}

/// Runs `tokenmill bench`.
pub fn run(c: Cmd) -> anyhow::Result<()> {
    match c {
        Cmd::Tokenize(a) => tokenize::run(a),
        Cmd::Fp8Gemm(a) => fp8_gemm::run(a),
        Cmd::Train(a) => train::run(a),
        Cmd::Seam(a) => seam::run(a),
        Cmd::Precision(a) => precision::run(a),
        Cmd::Gemm(a) => gemm::run(a),
        Cmd::Loader(a) => loader::run(a),
        Cmd::Extract(a) => extract::run(a),
        Cmd::Spikes(a) => spikes::run(a),
    }
}
