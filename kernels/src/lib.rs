//! Compute kernels. So far: the number formats of mixed-precision training — FP8 E4M3 (the
//! finite-only "fn" variant, max 448) and E5M2, and BF16 — with round-to-nearest-even, checked
//! bit for bit against `ml_dtypes` (golden vectors from `tests/peers/fp8_golden.py`).

#![deny(unsafe_code)]

pub mod bf16;
pub mod fp8;

pub use fp8::Fp8Format;
pub mod gemm;
pub mod quant;
