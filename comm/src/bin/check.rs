//! `mpirun -np N tokenmill-comm-check [SEED] [--nccl]`: runs the communicator conformance
//! checks on the MPI world (with `--nccl`, built with the `nccl` feature: on NCCL over one GPU
//! per rank, bootstrapped over MPI) and prints one line per rank; exits non-zero when any check
//! fails on any rank.

use std::process::ExitCode;

use tokenmill_comm::{Collectives, Communicator, MpiComm, conformance};

fn main() -> ExitCode {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);

    let world = match MpiComm::world() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let nccl = std::env::args().any(|a| a == "--nccl");
    let outcomes = if nccl {
        run_nccl(&world, seed)
    } else {
        conformance::run(&world, seed)
    };
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rank {}: error: {e}", world.rank());
            return ExitCode::FAILURE;
        }
    };
    let failed: Vec<_> = outcomes.iter().filter(|(_, r)| r.is_err()).collect();
    for (name, r) in &failed {
        eprintln!(
            "rank {}: FAIL {name}: {}",
            world.rank(),
            r.as_ref().unwrap_err()
        );
    }
    // Every rank learns whether any rank failed, so all exit alike.
    let mut bad = [failed.len() as u64];
    if world.all_reduce_sum(&mut bad).is_err() {
        return ExitCode::FAILURE;
    }
    println!(
        "rank {} of {}: {} checks, {} failed here, {} failed in all",
        world.rank(),
        world.size(),
        outcomes.len(),
        failed.len(),
        bad[0]
    );
    if bad[0] == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The checks on NCCL, rank r on GPU r mod (GPUs on the node), bootstrapped over the world.
#[cfg(feature = "nccl")]
fn run_nccl(world: &MpiComm, seed: u64) -> tokenmill_comm::Result<Vec<conformance::Outcome>> {
    let boot = world.split(0, world.rank())?;
    let gpus: usize = std::env::var("TOKENMILL_GPUS_PER_NODE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let c = tokenmill_comm::NcclComm::new(boot, world.rank() % gpus.max(1))?;
    conformance::run(&c, seed)
}

#[cfg(not(feature = "nccl"))]
fn run_nccl(_: &MpiComm, _: u64) -> tokenmill_comm::Result<Vec<conformance::Outcome>> {
    Err(tokenmill_comm::Error::Unavailable(
        "built without the nccl feature (cargo build -p tokenmill-comm --features nccl)".into(),
    ))
}
