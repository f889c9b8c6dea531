//! The CUDA backend.
//!
//! - `cu/`: the kernels as CUDA C sources (`common.cuh` + one file per operation), embedded by
//!   [`source`] and compiled at first use by NVRTC ([`nvrtc`]) for the device's architecture
//!   (`sm_90a` on Hopper), the cubin cached on disk. CI compiles them for `sm_90a`, `sm_80` and
//!   `sm_100a` without a GPU (NVRTC from the `nvidia-cuda-nvrtc` wheel) and runs every kernel on
//!   the CPU through the emulation crate `tokenmill-cuda-emu`, against the CPU references.
//! - [`libs`]: the CUDA libraries are loaded at run time (cudarc's dynamic loading), so this
//!   crate builds and its tests run on machines without CUDA; each library is asked for before
//!   use, with an error that names what is missing.
//! - [`device`]: one GPU, its stream, module and cuBLAS handle; [`backend::Cuda`]: the
//!   `Backend` seam on it (`attention.rs`: the attention launches); [`fp8`]: cuBLASLt's FP8
//!   GEMM with DeepSeek-V3's 1×128 / 128×128 block scaling; [`check`]: the device check that
//!   `tokenmill doctor --gpu` runs (every kernel against the CPU reference, GEMM throughput).

mod attention;
pub mod backend;
pub mod bench;
pub mod check;
mod decls;
pub mod device;
pub mod error;
pub mod fp8;
pub mod libs;
pub mod managed;
pub mod nvrtc;
pub mod source;

pub use backend::Cuda;
pub use device::Device;
pub use error::{Error, Result};
