//! CPU kernels: every operation as a plain reference (`*_ref`, loops, one thread) beside the
//! fast version (GEMM micro-kernels, rayon) that is tested against it.

pub mod attention;
pub mod embedding;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod rope;
pub mod sgemm;
pub mod swiglu;
pub mod topk;

#[cfg(test)]
mod tests;
