//! The targets, by the kind of bytes they read.

pub mod config;
pub mod dataset;
pub mod input;
