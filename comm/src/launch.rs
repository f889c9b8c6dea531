//! Starting ranks from a test or a script: `mpirun` with what this machine and CI need.

use std::process::Command;

/// `mpirun --oversubscribe -np N` as root-safe (CI runs as root), allowing more ranks than
/// cores (correctness checks, not speed), over shared memory and the loopback interface only.
/// Each launch gets its own session directory base: Open MPI 4 creates `/tmp/ompi.<host>.<uid>`
/// for every job, and two launchers starting at the same moment race on it ("mkdir … File
/// exists", `orte_init failed`), which tests running in parallel hit.
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
    static LAUNCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let session = std::env::temp_dir().join(format!("tokenmill-ompi-{}-{n}", std::process::id()));
    // Best effort: without it Open MPI falls back to its default base.
    let _ = std::fs::create_dir_all(&session);
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", &np.to_string()])
        .env("OMPI_MCA_orte_tmpdir_base", &session)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,vader,tcp")
        .env("OMPI_MCA_btl_tcp_if_include", "lo")
        .env("OMPI_MCA_oob_tcp_if_include", "lo");
    c
}
