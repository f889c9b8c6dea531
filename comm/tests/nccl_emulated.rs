//! The NCCL communicator's own code — the unique id made by rank 0 and handed over the MPI
//! bootstrap, the communicators of every split, host bytes staged in device memory, all-to-all-v
//! as grouped sends and receives — run under `mpirun -np N` (N = 1..4) on the emulated CUDA
//! driver and NCCL (`tokenmill_cuda_emu::DRIVER_DIR` on the loader's path: device memory is host
//! memory, NCCL's transfers go over Unix sockets between the ranks), through the same 15
//! conformance checks per rank as MPI. What it cannot show: NCCL's speed, its GPU kernels,
//! ranks on several machines.

#![cfg(all(feature = "mpi", feature = "nccl"))]

use tokenmill_comm::launch::mpirun;

fn loader_path() -> String {
    let old = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    format!("{}:{old}", tokenmill_cuda_emu::DRIVER_DIR)
}

#[test]
fn every_collective_conforms_on_nccl_over_the_emulated_driver_on_1_to_4_ranks() {
    for np in 1..=4 {
        let out = mpirun(np)
            .env("LD_LIBRARY_PATH", loader_path())
            .arg(env!("CARGO_BIN_EXE_tokenmill-comm-check"))
            .args(["11", "--nccl"])
            .output()
            .expect("mpirun not found: install openmpi-bin and libopenmpi-dev (.ci/run does)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "np {np}:\n{text}");
        let lines = text
            .lines()
            .filter(|l| l.contains("15 checks, 0 failed here, 0 failed in all"))
            .count();
        assert_eq!(
            lines, np,
            "np {np}: one clean summary line per rank\n{text}"
        );
        assert!(!text.contains("emulated NCCL:"), "np {np}: {text}");
    }
}
