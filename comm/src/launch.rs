//! Starting ranks from a test or a script: `mpirun` with what this machine and CI need.

use std::process::Command;

/// `mpirun --oversubscribe -np N` as root-safe (CI runs as root), allowing more ranks than
/// cores (correctness checks, not speed), over shared memory and the loopback interface only.
/// Panics with the packages to install when Open MPI's launcher is missing.
pub fn mpirun(np: usize) -> Command {
    let found = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "mpirun not found: apt-get install libopenmpi-dev openmpi-bin libclang-dev (.ci/run does)"
    );
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", &np.to_string()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,vader,tcp")
        .env("OMPI_MCA_btl_tcp_if_include", "lo")
        .env("OMPI_MCA_oob_tcp_if_include", "lo");
    c
}
