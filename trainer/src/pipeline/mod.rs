//! Pipeline parallelism: schedules as data ([`schedule`]) and their simulation.
//!
//! The trainer does not run a pipeline yet (`pp > 1` is refused); the schedules, their
//! simulated bubbles and memory, and `tokenmill schedule` come first, so that the executor
//! that follows has a checked plan to run.

pub mod schedule;
