//! The deterministic generator of initialisation and of the tests, which lives in the kernels
//! crate ([`tokenmill_kernels::rng`]); re-exported so `tokenmill_trainer::rng::Rng` keeps working.

pub use tokenmill_kernels::rng::Rng;
