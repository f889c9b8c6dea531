//! The conformance checks on real MPI ranks: `mpirun --oversubscribe -np N` for N = 1..4
//! (more ranks than this machine's cores is fine: correctness, not speed, is checked).

#![cfg(feature = "mpi")]

use tokenmill_comm::launch::mpirun;

#[test]
fn every_collective_conforms_on_1_to_4_ranks() {
    for np in 1..=4 {
        let out = mpirun(np)
            .arg(env!("CARGO_BIN_EXE_tokenmill-comm-check"))
            .arg("7")
            .output()
            .expect("mpirun not found: install openmpi-bin and libopenmpi-dev (.ci/run does)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "np {np}:\n{text}");
        let lines = text.lines().filter(|l| l.contains("failed in all")).count();
        assert_eq!(lines, np, "np {np}: one summary line per rank\n{text}");
        assert!(text.contains("0 failed in all"), "{text}");
    }
}
