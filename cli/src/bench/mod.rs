//! The benchmarks behind `tokenmill bench`: each prints a table, side by side with its peer
//! where one runs here (Python `tokenizers`, PyTorch, a raw memory copy, the CPU's peak).

pub mod extract;
pub mod fp8_gemm;
pub mod gemm;
pub mod loader;
pub mod precision;
pub mod seam;
pub mod spikes;
pub mod tokenize;
pub mod train;
