//! Expert parallelism on real MPI ranks against one process (`tokenmill-parallel-check`, run
//! under `mpirun --oversubscribe -np 2` and `-np 4`; see that binary for what is compared).

#![cfg(feature = "mpi")]

use std::process::Command;

fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", &np.to_string()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,vader,tcp")
        .env("OMPI_MCA_btl_tcp_if_include", "lo")
        .env("OMPI_MCA_oob_tcp_if_include", "lo");
    c
}

#[test]
fn expert_parallel_layer_and_model_equal_one_process() {
    for np in [2, 4] {
        let out = mpirun(np)
            .arg(env!("CARGO_BIN_EXE_tokenmill-parallel-check"))
            .output()
            .expect("mpirun not found: install openmpi-bin and libopenmpi-dev (.ci/run does)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        assert!(out.status.success(), "np {np}:\n{text}");
        let passes = text.lines().filter(|l| l.contains(": PASS ")).count();
        assert_eq!(passes, np * 8, "np {np}: 8 checks per rank\n{text}");
        assert!(!text.contains("FAIL"), "{text}");
    }
}
