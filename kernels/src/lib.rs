//! Compute kernels.
//!
//! - The model's operations on the CPU ([`cpu`]): matmul, embedding, RMSNorm, RoPE, SwiGLU,
//!   causal attention with separate query/key and value head dims, softmax cross-entropy and
//!   top-k — each a plain reference beside a fast version tested against it — behind the
//!   [`backend::Backend`] seam, generic over f32 (training) and f64 (gradient checks). The
//!   operations' argument types ([`backend::MatMul`], [`backend::RopeTable`], …) are the
//!   seam's, so a device backend implements it without the CPU kernels.
//! - The number formats of mixed-precision training: FP8 E4M3 (the finite-only "fn" variant,
//!   max 448) and E5M2, and BF16, with round-to-nearest-even, checked bit for bit against
//!   `ml_dtypes` (golden vectors from `tests/peers/fp8_golden.py`); fine-grained tile
//!   quantization and an emulated FP8 GEMM with promoted accumulation; the low-precision GEMM
//!   of training (BF16, or FP8 with promotion) is a backend operation
//!   ([`backend::Backend::matmul_lowp`]).
//! - A small deterministic generator ([`rng::Rng`], SplitMix64) for initialisation, tests and
//!   benchmarks.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod bf16;
pub mod cpu;
pub mod fp8;
pub mod gemm;
pub mod quant;
pub mod real;
pub mod rng;

pub use backend::{Backend, Cpu, CpuReference};
pub use fp8::Fp8Format;
pub use real::Real;
