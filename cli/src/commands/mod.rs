//! One module per `tokenmill` command: its clap arguments (`Args`, or `Cmd` for a command with
//! subcommands) and `run`, which does the work through the libraries and prints the result.

pub mod bench;
pub mod build;
pub mod dedup;
pub mod distill_data;
pub mod doctor;
mod doctor_train;
pub mod eval;
pub mod export;
pub mod extract;
pub mod generate;
pub mod inspect;
pub mod model;
pub mod plot;
pub mod quickstart;
pub mod report;
pub mod schedule;
pub mod slurm_task;
pub mod sql;
pub mod status;
pub mod tokenizer;
pub mod trace;
pub mod train;
pub mod verify;
