//! BF16 training on the CPU's own BF16 units: AMX tiles and AVX512-BF16 vectors follow the
//! emulated BF16 run (operands rounded, FP32 GEMM) step for step, within FP32
//! accumulation-order noise, and the unit in use is named in the log. Every path this machine
//! can run is run, each in its own process (`TOKENMILL_BF16_GEMM` chooses once per process).

use std::path::Path;
use std::process::Command;

use tokenmill_kernels::cpu::bf16gemm::{Bf16Unit, runs};
use tokenmill_tests::tokenmill_bin;
use tokenmill_trainer::train::LogKind;

use crate::train::{datasets, log, write_config};

/// Trains 10 steps of the tiny model in BF16 with `unit`; returns the step losses and stderr.
fn run(d: &Path, unit: &str) -> (Vec<f64>, String) {
    let name = format!("bf16-{unit}");
    let cfg = write_config(
        d,
        &name,
        "steps = 10\nprecision = \"bf16\"",
        "peak = 2e-3\nwarmup = 2",
    );
    let o = Command::new(tokenmill_bin())
        .current_dir(d)
        .env("TOKENMILL_BF16_GEMM", unit)
        .args(["--log", "info", "train", "--quiet", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{unit}: {err}");
    let losses = log(&d.join(&name))
        .into_iter()
        .filter(|x| x.kind == LogKind::Train)
        .map(|x| x.loss)
        .collect();
    (losses, err)
}

#[test]
fn bf16_units_follow_the_emulated_loss_curve_and_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    datasets(d);
    let (emulated, err) = run(d, "emulate");
    assert!(err.contains("BF16 GEMMs emulated"), "{err}");
    assert_eq!(emulated.len(), 10);
    let mut ran = 0;
    for (unit, env) in [(Bf16Unit::Amx, "amx"), (Bf16Unit::Avx512Bf16, "avx512bf16")] {
        if !runs(unit) {
            eprintln!("{} does not run on this CPU: not compared", unit.name());
            continue;
        }
        ran += 1;
        let (losses, err) = run(d, env);
        assert!(
            err.contains(&format!("BF16 GEMMs on {}", unit.name())),
            "{err}"
        );
        let worst = losses
            .iter()
            .zip(&emulated)
            .map(|(a, b)| (a - b).abs() / b)
            .fold(0.0, f64::max);
        eprintln!(
            "{}: worst relative loss difference to the emulation over 10 steps {worst:.2e}",
            unit.name()
        );
        // The same rounded operands summed in another order: the first step agrees to FP32
        // noise, later ones drift by as much as a BF16 rounding flipped here and there.
        assert!(
            (losses[0] - emulated[0]).abs() / emulated[0] < 1e-5,
            "{}: step 0 {} vs {}",
            unit.name(),
            losses[0],
            emulated[0]
        );
        assert!(worst < 1e-4, "{}: {losses:?} vs {emulated:?}", unit.name());
        // Not the emulation under another name: the sums were taken in another order.
        assert_ne!(losses, emulated, "{}", unit.name());
    }
    if std::env::var_os("TOKENMILL_REQUIRE_BF16_UNIT").is_some() {
        assert!(
            ran > 0,
            "TOKENMILL_REQUIRE_BF16_UNIT is set but this CPU has no BF16 unit"
        );
    }
}
