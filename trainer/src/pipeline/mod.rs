//! Pipeline parallelism: schedules as data ([`schedule`]) with their simulation, and the
//! executor that runs a rank's part of a plan on the model's stages ([`exec`]).

pub mod exec;
pub mod schedule;
