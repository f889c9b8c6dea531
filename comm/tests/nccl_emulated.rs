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

/// The emulated NCCL's own checks — what a real NCCL would hang on — each in a child process
/// of this test binary (the loader's path is read at start): a group whose receive from this
/// rank expects 16 bytes where the matching send gives 8, and a send to this rank that no
/// receive matches, are errors that say so (`ncclInvalidUsage`), not hangs.
#[test]
fn the_emulated_nccl_refuses_what_would_hang_a_real_one() {
    if let Ok(case) = std::env::var("TOKENMILL_NCCL_EMU_CASE") {
        child(&case);
        return;
    }
    for (case, want) in [
        (
            "mismatch",
            "a receive of 16 bytes from itself matched a send of 8",
        ),
        ("unmatched", "1 sends to itself, 0 receives"),
    ] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "the_emulated_nccl_refuses_what_would_hang_a_real_one",
                "--exact",
                "--nocapture",
            ])
            .env("TOKENMILL_NCCL_EMU_CASE", case)
            .env("LD_LIBRARY_PATH", loader_path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{case}: {text}");
        assert!(text.contains(want), "{case}: {text}");
        assert!(text.contains("ncclInvalidUsage"), "{case}: {text}");
    }
}

/// One case, on the emulated device and NCCL (one rank).
fn child(case: &str) {
    use cudarc::driver::CudaContext;
    use cudarc::nccl::{Comm, Id, group_end, group_start};
    tokenmill_comm::nccl_available().expect("the emulated libraries on the loader's path");
    let ctx = CudaContext::new(0).unwrap();
    let stream = ctx.default_stream();
    let comm = Comm::from_rank(stream.clone(), 0, 1, Id::new().unwrap()).unwrap();
    let sent = stream.alloc_zeros::<u8>(8).unwrap();
    let mut got = stream.alloc_zeros::<u8>(16).unwrap();
    let err = match case {
        "mismatch" => {
            group_start().unwrap();
            comm.send(&sent, 0).unwrap();
            comm.recv(&mut got, 0).unwrap();
            match group_end() {
                Ok(_) => panic!("the group ran"),
                Err(e) => e,
            }
        }
        "unmatched" => comm.send(&sent, 0).unwrap_err(),
        other => panic!("no case {other}"),
    };
    println!("{case}: {:?}", err.0);
}
