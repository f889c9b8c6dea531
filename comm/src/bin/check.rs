//! `mpirun -np N tokenmill-comm-check [SEED]`: runs the communicator conformance checks on the
//! MPI world and prints one line per rank; exits non-zero when any check fails on any rank.

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
    let outcomes = match conformance::run(&world, seed) {
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
