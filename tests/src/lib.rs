//! Helpers for tokenmill's end-to-end tests: where the shared real data lives, and small
//! utilities the tests share.
//!
//! The data folder is `$TOKENMILL_TEST_DATA`, or `../shared/data` beside the repository. Tests
//! that need it fail (they do not skip) when it is missing, so CI cannot pass without it.

#![deny(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

/// The repository root. Taken from `CARGO_MANIFEST_DIR` at run time (cargo sets it for tests),
/// not only at build time: a test binary built by another checkout sharing the target
/// directory must not point into that checkout.
/// The Python of the peer tests (`$TOKENMILL_PEERS_PYTHON`, else `.venv-peers/bin/python`);
/// panics naming the packages `needs` when there is none (the peer tests are `#[ignore]`d, so
/// this runs only when asked for).
pub fn peers_python(needs: &str) -> PathBuf {
    tokenmill_cli::peers::python(None, &repo_root()).unwrap_or_else(|| {
        panic!(
            "no Python peer environment: make .venv-peers with {needs} (tests/peers/README.md), or set TOKENMILL_PEERS_PYTHON"
        )
    })
}

pub fn repo_root() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .expect("tests/ has a parent")
    .to_path_buf()
}

/// The shared real-data folder; panics with instructions when it is missing.
pub fn data_dir() -> PathBuf {
    let dir = match std::env::var_os("TOKENMILL_TEST_DATA") {
        Some(d) => PathBuf::from(d),
        None => repo_root().join("..").join("shared").join("data"),
    };
    assert!(
        dir.join("README.md").is_file(),
        "real test data not found at {} — set TOKENMILL_TEST_DATA or place ../shared/data beside the repository",
        dir.display()
    );
    dir
}

/// A file of the shared data folder (panics if it is missing).
pub fn data(rel: &str) -> PathBuf {
    let p = data_dir().join(rel);
    assert!(p.is_file(), "missing test data file {}", p.display());
    p
}

/// A committed fixture of this repository (`tests/fixtures/...`).
pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests").join("fixtures").join(rel)
}

/// Whole contents of a gzip file.
pub fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).expect("open"))
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

/// The `tokenmill` binary built by cargo for this test run.
pub fn tokenmill_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    // target/<profile>/deps/<test> → target/<profile>/tokenmill
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("tokenmill");
    if !bin.is_file() {
        // `cargo test -p tokenmill-tests` alone does not build other packages' binaries.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "tokenmill-cli", "--bin", "tokenmill"])
            .current_dir(repo_root());
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("run cargo").success(),
            "building the tokenmill binary failed"
        );
    }
    bin
}

/// All files of a directory tree (relative path → bytes), excluding paths for which `skip` is true.
pub fn tree_bytes(
    dir: &Path,
    skip: &dyn Fn(&str) -> bool,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let rel = p
                .strip_prefix(dir)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            if skip(&rel) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

pub use tokenmill_comm::launch::mpirun;

/// Starts a command with `spawn` again and again, killing each run with SIGKILL at a seeded
/// random moment in `[0, within)` after its start, until a run finishes by itself. Returns how
/// many runs were killed. A run that fails without having been killed panics with its stderr
/// (pipe it in `spawn` to see it). `rng` is an xorshift state, advanced.
///
/// After each kill the window grows by a quarter: a run that is slower than `within` (other
/// tests loading the machine, work that a resumed run must redo) still finishes after a few
/// kills instead of being killed forever.
pub fn kill_until_done(
    within: std::time::Duration,
    rng: &mut u64,
    mut spawn: impl FnMut() -> std::process::Child,
) -> usize {
    use std::time::{Duration, Instant};
    let mut kills = 0;
    let mut within = within;
    loop {
        let mut child = spawn();
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let at = within.mul_f64((*rng % 1000) as f64 / 1000.0);
        let start = Instant::now();
        while start.elapsed() < at && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let killed = child.try_wait().unwrap().is_none();
        if killed {
            child.kill().unwrap();
            kills += 1;
            within = within.mul_f64(1.25);
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            return kills;
        }
        assert!(
            killed,
            "a run that was not killed failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
