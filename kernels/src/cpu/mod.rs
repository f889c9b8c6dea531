//! CPU kernels: every operation as a plain reference (`*_ref`, loops, one thread) beside the
//! fast version (GEMM micro-kernels, rayon) that is tested against it, and the low-precision
//! GEMM emulated on top of them ([`lowp`]). Their argument types are the backend seam's
//! ([`crate::backend`]).

pub mod attention;
pub mod bf16gemm;
pub mod distill;
pub mod embedding;
pub mod grouped;
pub mod loss;
pub mod lowp;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod rope;
pub mod route;
pub mod rows;
pub mod sgemm;
pub mod strided;
pub mod swiglu;
pub mod topk;
pub mod wide;

#[cfg(test)]
mod tests;
