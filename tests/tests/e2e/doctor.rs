//! `tokenmill doctor`: the parts of the device check that run without a GPU.

use std::process::Command;

use tokenmill_tests::tokenmill_bin;

/// The training comparison of the device check, with the CPU on both sides: it generates its
/// dataset, trains the `small` preset in fp32, bf16 and fp8 twice, reads both logs back, and
/// finds identical curves (the same process, the same arithmetic). On a GPU the second run is
/// the CUDA backend; this proves the harness around it.
#[test]
fn the_training_comparison_of_the_device_check_finds_identical_cpu_curves() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(tokenmill_bin())
        .args([
            "doctor",
            "--train-cpu-vs-cpu",
            "--train-steps",
            "2",
            "--out",
        ])
        .arg(dir.path().join("work"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let curves = rep["training"].as_array().unwrap();
    let precisions: Vec<&str> = curves
        .iter()
        .map(|c| c["precision"].as_str().unwrap())
        .collect();
    assert_eq!(precisions, ["fp32", "bf16", "fp8"]);
    for c in curves {
        let (a, b) = (c["cpu"].as_array().unwrap(), c["gpu"].as_array().unwrap());
        assert_eq!(a.len(), 2, "{c}");
        assert_eq!(a, b, "{c}");
        assert!(a.iter().all(|l| l.as_f64().unwrap().is_finite()), "{c}");
        assert_eq!(c["max_rel"].as_f64(), Some(0.0));
        assert_eq!(c["pass"], true);
    }
}

/// Without a CUDA driver, `doctor --gpu` fails and says what is missing, and `[train] device =
/// "cuda"` is refused with the same message rather than falling back silently.
#[test]
fn without_a_gpu_driver_the_device_check_says_what_is_missing() {
    if tokenmill_cuda::libs::driver().is_ok() {
        // A GPU machine: the real check runs in tests/device/check.sh.
        let out = Command::new(tokenmill_bin())
            .args(["doctor", "--gpu", "--train-steps", "0"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        return;
    }
    let out = Command::new(tokenmill_bin())
        .args(["doctor", "--gpu"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no CUDA driver (libcuda.so)"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("train.toml");
    std::fs::write(
        &cfg,
        "[model]\npreset = \"tiny\"\n\n[data]\ntrain = \"dataset\"\nseq_len = 32\nbatch = 2\n\n\
         [train]\nout = \"run\"\nsteps = 1\ndevice = \"cuda\"\n",
    )
    .unwrap();
    let out = Command::new(tokenmill_bin())
        .args(["train", "--quiet", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no CUDA driver (libcuda.so)"), "{err}");
}
