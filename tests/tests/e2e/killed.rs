//! Kill anywhere: a command is killed with SIGKILL at seeded random moments again and again,
//! rerun into the same output directory until a run finishes by itself, and the result must
//! equal an uninterrupted run's byte for byte (every file; stats.json by its counts, since it
//! also holds timings). Here for `dedup` and `extract`; `build` uses the same harness
//! (build.rs); `train`, which resumes from checkpoints, has its own (train.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use tokenmill_tests::{data, kill_until_done, tokenmill_bin, tree_bytes};

/// Runs `args` once uninterrupted into `reference`, then in cycles of killed runs (each
/// cycle's own output directory) until 20 kills landed; compares every cycle's files but
/// stats.json and those `skip` names (relative paths), and stats.json's `counts` (JSON
/// pointers).
pub(crate) fn killed_anywhere(
    dir: &Path,
    what: &str,
    args: &dyn Fn(&Path) -> Vec<String>,
    skip: &dyn Fn(&str) -> bool,
    counts: &[&str],
) {
    let reference = dir.join(format!("{what}-reference"));
    let t0 = Instant::now();
    let o = Command::new(tokenmill_bin())
        .args(args(&reference))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let whole = t0.elapsed();
    let files = |out: &Path| tree_bytes(out, &|rel| rel == "stats.json" || skip(rel));
    let stats = |out: &Path| -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
        counts
            .iter()
            .map(|k| v.pointer(k).cloned().unwrap_or_default())
            .collect()
    };
    let (want, want_stats) = (files(&reference), stats(&reference));
    assert!(want.len() >= 2, "{want:?}");
    assert!(want_stats.iter().all(|v| !v.is_null()), "{want_stats:?}");
    let mut rng = 0x9E3779B97F4A7C15u64 ^ what.len() as u64;
    let (mut kills, mut cycles) = (0, 0);
    while kills < 20 {
        assert!(
            cycles < 40,
            "{what}: only {kills} kills landed in 40 cycles"
        );
        let out = dir.join(format!("{what}-killed-{cycles}"));
        kills += kill_until_done(whole.mul_f64(0.9), &mut rng, || {
            Command::new(tokenmill_bin())
                .args(args(&out))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        });
        let got = files(&out);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{what} cycle {cycles}: the same files, no leftovers"
        );
        for (k, v) in &want {
            assert!(&got[k] == v, "{what} cycle {cycles}: {k} differs");
        }
        assert_eq!(
            stats(&out),
            want_stats,
            "{what} cycle {cycles}: the same counts"
        );
        cycles += 1;
    }
    eprintln!(
        "{what}: {kills} kills in {cycles} runs, each rerun to the end: byte-identical outputs ({whole:?} a run)"
    );
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn dedup_killed_anywhere_reruns_to_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = data("jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz");
    let inputs: Vec<PathBuf> = (0..4)
        .map(|i| {
            let p = dir.path().join(format!("part-{i}.jsonl.gz"));
            std::fs::copy(&src, &p).unwrap();
            p
        })
        .collect();
    let args = |out: &Path| {
        let mut a = vec!["dedup".to_string()];
        a.extend(inputs.iter().map(|p| s(p)));
        a.extend([
            "--out".into(),
            s(out),
            "--threads".into(),
            "2".into(),
            "--json".into(),
        ]);
        a
    };
    killed_anywhere(
        dir.path(),
        "dedup",
        &args,
        &|_| false,
        &[
            "/kept",
            "/removed",
            "/dedup/exact_removed",
            "/dedup/fuzzy_removed",
        ],
    );
}

#[test]
fn extract_killed_anywhere_reruns_to_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for i in 0..12 {
        for f in [
            "dolma-wget-sample-0000.warc.gz",
            "resiliparse-cc-main-2020-34-excerpt.warc.gz",
            "whirlwind-cc-main-2024-22.warc.gz",
        ] {
            let p = dir.path().join(format!("{i:02}-{f}"));
            std::fs::copy(data(&format!("warc/{f}")), &p).unwrap();
            inputs.push(p);
        }
    }
    let args = |out: &Path| {
        let mut a = vec!["extract".to_string()];
        a.extend(inputs.iter().map(|p| s(p)));
        a.extend(["--out".into(), s(out), "--json".into()]);
        a
    };
    killed_anywhere(
        dir.path(),
        "extract",
        &args,
        &|_| false,
        &[
            "/documents_read",
            "/documents_kept",
            "/documents_dropped",
            "/reader_skips",
        ],
    );
}
