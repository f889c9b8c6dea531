//! The `tokenmill` binary's command line: subcommands, and clear errors for bad invocations.
//! (Having an integration test here also makes `cargo test` build the binary that the
//! end-to-end tests in `tests/` drive.)

use std::process::Command;

fn tokenmill(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_tokenmill"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn help_lists_every_command() {
    let (ok, out) = tokenmill(&["--help"]);
    assert!(ok);
    for c in [
        "quickstart",
        "build",
        "extract",
        "inspect",
        "verify",
        "dedup",
        "sql",
        "tokenizer",
        "bench",
        "train",
        "plot",
        "trace",
        "report",
        "model",
        "schedule",
    ] {
        assert!(out.contains(c), "{c} missing from:\n{out}");
    }
}

#[test]
fn bad_invocations_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let (ok, msg) = tokenmill(&[
        "build",
        "--tokenizer",
        "t.json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && msg.contains("no inputs"), "{msg}");
    let (ok, msg) = tokenmill(&[
        "build",
        "no/such/*.jsonl",
        "--tokenizer",
        "t.json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && msg.contains("matches no file"), "{msg}");
    let missing = dir.path().join("missing");
    let (ok, msg) = tokenmill(&["inspect", missing.to_str().unwrap()]);
    assert!(!ok && msg.contains("manifest.json"), "{msg}");
    let (ok, msg) = tokenmill(&["verify", missing.to_str().unwrap()]);
    assert!(!ok && msg.contains("missing"), "{msg}");
}

#[test]
fn schedule_prints_the_grid_and_the_reports_bubble() {
    let (ok, out) = tokenmill(&["schedule", "--pp", "4", "--micro", "8"]);
    assert!(ok, "{out}");
    assert!(out.contains("rank  3 |"), "{out}");
    assert!(
        out.contains("bubble (idle per rank, worst) 2.00; report's formula 2.00"),
        "{out}"
    );
    let (ok, out) = tokenmill(&["schedule", "--pp", "3", "--micro", "8"]);
    assert!(!ok && out.contains("even number of ranks"), "{out}");
}

/// `model init --config-only` writes the preset's `config.json` and no weights (what a peer
/// that builds its own model reads: a 1B model's safetensors would be 4 GB).
#[test]
fn model_init_config_only_writes_the_config_and_no_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hf");
    let (ok, msg) = tokenmill(&[
        "model",
        "init",
        "--preset",
        "1b",
        "--config-only",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{msg}");
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["config.json"]);
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["hidden_size"], 1024);
    assert_eq!(c["n_routed_experts"], 64);
    assert_eq!(c["num_hidden_layers"], 18);
}
