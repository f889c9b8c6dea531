//! `[train] device = "cuda"` without a GPU: the `tokenmill` binary trains through the CUDA
//! backend's own code on the emulated CUDA driver (`tokenmill_cuda_emu::DRIVER_DIR` named first
//! in `TOKENMILL_CUDA_LIB`, NVRTC the real one after it), and its loss curve follows the CPU's
//! from the same data and initial weights in every precision, within the device check's
//! tolerances — copying each operation's slices (`cuda`), and on the host's own memory
//! (`cuda-hmm`: the emulated device reaches host memory, as a GPU with HMM does), and on CUDA
//! managed memory (`cuda-managed`: the binary's large blocks managed, taken by address). Out of device
//! memory is an error that names the buffer, the bytes asked for and the memory model's
//! estimate; `cuda-hmm` on a device without pageable access, and `cuda-managed` on one without
//! managed memory, are refused, saying why. And the
//! device check (`tokenmill doctor --gpu`, every part) runs whole on it at rehearsal sizes, so
//! a lent GPU's minutes are not spent finding the harness's faults.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokenmill_tests::{mpirun, tokenmill_bin};

/// The loader's path with the emulated libraries' directory first (cudarc opens NCCL by name).
fn loader_path() -> String {
    format!(
        "{}:{}",
        tokenmill_cuda_emu::DRIVER_DIR,
        std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
    )
}

/// `TOKENMILL_CUDA_LIB` with the emulated driver's directory first.
fn emulated_libs() -> String {
    let nvrtc = std::env::var(tokenmill_cuda::libs::LIB_DIR_VAR).unwrap_or_default();
    format!("{}:{nvrtc}", tokenmill_cuda_emu::DRIVER_DIR)
}

fn dataset(dir: &Path) {
    let out = Command::new(tokenmill_bin())
        .args(["quickstart", "--quiet", "--docs", "300", "--files", "1"])
        .args(["--vocab-size", "1024", "--train-steps", "0", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `dir/name.toml`: `tiny` for `steps` in `precision` on `device`, then `extra`.
fn config(
    dir: &Path,
    name: &str,
    precision: &str,
    device: &str,
    steps: u64,
    extra: &str,
) -> PathBuf {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[model]\npreset = \"tiny\"\nvocab_size = 1024\n\n\
             [data]\ntrain = \"dataset\"\nseq_len = 32\nbatch = 2\n\n\
             [lr]\npeak = 1e-3\nmin = 1e-4\nwarmup = 2\nconstant = {steps}\ndecay = 0\n\n\
             [train]\nout = \"{name}\"\nsteps = {steps}\ncheckpoint_every = 0\n\
             final_checkpoint = false\neval_every = 0\ninit_seed = 5\n\
             precision = \"{precision}\"\ndevice = \"{device}\"\n{extra}"
        ),
    )
    .unwrap();
    cfg
}

/// The training lines of run `dir/name`'s log, by step.
fn train_lines(dir: &Path, name: &str) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(dir.join(name).join("log.jsonl")).unwrap();
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .collect()
}

/// The training losses of run `dir/name`, by step.
fn losses(dir: &Path, name: &str) -> Vec<f64> {
    train_lines(dir, name)
        .iter()
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

/// The largest relative difference of the GPU's losses from the CPU's (a NaN: infinite).
fn max_rel(cpu: &[f64], gpu: &[f64]) -> f64 {
    cpu.iter()
        .zip(gpu)
        .map(|(c, g)| ((g - c) / c).abs())
        .fold(
            0.0f64,
            |m, r| if r.is_nan() { f64::INFINITY } else { m.max(r) },
        )
}

/// The number in field `field` of the logged line that says `message` (the log's colours
/// taken out); panics, showing stderr, when there is none.
fn logged(stderr: &str, message: &str, field: &str) -> u64 {
    let plain: String = stderr
        .split('\x1b')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part
            } else {
                part.split_once('m').map_or("", |p| p.1)
            }
        })
        .collect();
    plain
        .lines()
        .find(|l| l.contains(message))
        .and_then(|l| l.split(&format!("{field}=")).nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} logged with {message:?}: {stderr}"))
}

/// Trains `tiny` for `steps` in `precision` on `device`; returns the losses by step and stderr
/// (or the error's stderr when `Err`).
fn train(
    dir: &Path,
    name: &str,
    precision: &str,
    device: &str,
    steps: u64,
    env: &[(&str, String)],
) -> Result<(Vec<f64>, String), String> {
    // `cuda-managed-deferred`: managed memory with `[train] defer_waits`.
    let (device, extra) = match device {
        "cuda-managed-deferred" => ("cuda-managed", "defer_waits = true\n"),
        d => (d, ""),
    };
    let cfg = config(dir, name, precision, device, steps, extra);
    let mut cmd = Command::new(tokenmill_bin());
    cmd.args([
        "--log",
        "tokenmill_cuda=info",
        "train",
        "--quiet",
        "--config",
    ])
    .arg(&cfg);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(stderr);
    }
    Ok((losses(dir, name), stderr))
}

/// The waits for the device `tokenmill bench seam` counts, on the CPU, for one `tiny` step
/// (batch 2 × 32, managed memory from 4 KiB on, the MTP module kept) and its optimizer, plus
/// the gradients' zeroing: without deferred scopes, or with (`defer_waits`).
fn seam_waits(deferred: bool) -> u64 {
    let out = Command::new(tokenmill_bin())
        .args([
            "bench", "seam", "--preset", "tiny", "--batch", "2", "--seq", "32",
        ])
        .args(["--managed-from", "4096", "--mtp", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let field = if deferred { "waits_deferred" } else { "waits" };
    let w = |part: &str| t[part][field].as_u64().unwrap_or_else(|| panic!("{t}"));
    w("managed_step") + w("managed_optimizer") + 1
}

#[test]
fn training_on_the_emulated_gpu_follows_the_cpu_in_every_precision() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let env = [
        (tokenmill_cuda::libs::LIB_DIR_VAR, emulated_libs()),
        ("TOKENMILL_CUDA_EMU_PAGEABLE", "1".to_string()),
        // `tiny`'s activations are small: managed memory from 4 KiB on, not 64.
        (tokenmill_cuda::managed::FROM_VAR, "4096".to_string()),
    ];
    let steps = 3;
    for (precision, tol) in [("fp32", 1e-3), ("bf16", 5e-3), ("fp8", 1e-2)] {
        let (cpu, _) = train(
            dir.path(),
            &format!("cpu-{precision}"),
            precision,
            "cpu",
            steps,
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cpu.len(), steps as usize, "{cpu:?}");
        // The curves are the model's, not a constant: training moved the loss.
        assert_ne!(cpu[0], cpu[steps as usize - 1]);
        // What a step cost the host on a device is logged on a device only.
        let cpu_lines = train_lines(dir.path(), &format!("cpu-{precision}"));
        assert!(cpu_lines.iter().all(|l| l.get("device").is_none()));
        let mut copied = 0;
        let mut managed = (Vec::new(), 0);
        for device in ["cuda", "cuda-hmm", "cuda-managed", "cuda-managed-deferred"] {
            let (gpu, stderr) = train(
                dir.path(),
                &format!("{device}-{precision}"),
                precision,
                device,
                steps,
                &env,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                stderr.contains("CUDA device ready") && stderr.contains("emulator"),
                "{stderr}"
            );
            // bf16: the experts' GEMMs by the TMA kernel (this is a compute capability 9.0
            // device), every expert in one launch.
            if precision == "bf16" {
                assert!(
                    stderr.contains("one launch of bf16_tma_gemm_f32 each"),
                    "{stderr}"
                );
            }
            assert_eq!(gpu.len(), cpu.len(), "{gpu:?}");
            let max_rel = max_rel(&cpu, &gpu);
            eprintln!(
                "{precision} cpu {cpu:?}\n{precision} {device} {gpu:?}: max rel {max_rel:.2e}"
            );
            assert!(
                max_rel <= tol,
                "{precision} on {device}: {max_rel:e} > {tol:e}"
            );
            // In managed memory the slices from 4 KiB on are taken by address: a small
            // part of what copying sends up.
            let up = logged(&stderr, "host-device copies made", "bytes_up");
            // Each step's copies and waits, logged: inside the process's, every step waiting
            // for the device, and copying each step.
            let lines = train_lines(dir.path(), &format!("{device}-{precision}"));
            let waits: u64 = lines
                .iter()
                .map(|l| l["device"]["waits"].as_u64().unwrap())
                .sum();
            if precision == "fp32" && device.starts_with("cuda-managed") {
                // `bench seam` counts on the CPU the waits the backend makes in managed
                // memory: each step's are its forward and backward, the optimizer's, and one
                // to zero the gradients (which `bench seam` does on the host).
                let deferred = device == "cuda-managed-deferred";
                let want = seam_waits(deferred);
                for l in &lines {
                    assert_eq!(l["device"]["waits"].as_u64(), Some(want), "{device}: {l}");
                }
            }
            let steps_up: u64 = lines
                .iter()
                .map(|l| {
                    let d = &l["device"];
                    assert!(d["waits"].as_u64().unwrap() > 0, "{l}");
                    assert!(d["blocked_ns"].as_u64().unwrap() > 0, "{l}");
                    if device == "cuda" {
                        assert!(d["copies"].as_u64().unwrap() > 0, "{l}");
                    }
                    d["to_device"].as_u64().unwrap()
                })
                .sum();
            assert!(
                steps_up <= up && (device != "cuda" || steps_up > 0),
                "{device}: {steps_up} bytes up in the steps, {up} in the process"
            );
            match device {
                "cuda" => copied = up,
                // Deferred waits: the same bits, a fraction of the waits (each sublayer, the
                // head, the routing and each flush of the weight gradients waits once, not
                // once per operation).
                "cuda-managed-deferred" => {
                    assert_eq!(
                        gpu, managed.0,
                        "{precision}: deferred waits changed the losses"
                    );
                    eprintln!("{precision}: {waits} waits deferred, {} not", managed.1);
                    // (Each scope counts its FP8 GEMMs' non-finite tiles on the device.)
                    assert!(
                        (waits as f64) < 0.4 * managed.1 as f64,
                        "{precision}: {waits} waits deferred, {} not",
                        managed.1
                    );
                    assert!(
                        stderr.contains("deferred scopes return without waiting"),
                        "{stderr}"
                    );
                    // The tensor-core BF16 kernel's probe (run at the first grouped BF16 GEMM,
                    // inside a deferred scope) waits before it reads its product.
                    assert!(!stderr.contains("failed its probe"), "{stderr}");
                }
                "cuda-managed" => {
                    managed = (gpu.clone(), waits);
                    let blocks = logged(&stderr, "CUDA managed memory served", "blocks");
                    let fallbacks = logged(&stderr, "CUDA managed memory served", "fallbacks");
                    eprintln!("{precision}: {up} bytes up in managed memory, {copied} copying");
                    assert!(
                        up * 20 < copied,
                        "{precision}: {up} bytes up, copying {copied}"
                    );
                    assert!(blocks > 0 && fallbacks == 0, "{stderr}");
                }
                _ => {}
            }
        }
    }
}

/// `[train] fp8_gemm = "cublaslt"`, `"mma"` and `"cublaslt+mma"`: `tiny` in fp8 with its FP8
/// GEMMs on the tensor cores — through cuBLASLt's block-scaled matmul (the emulated library:
/// the manual's contract, FP32 blocks of 128 with promotion), our kernel (wgmma on this
/// Hopper-like device, or mma.sync when asked; the emulation shim's instructions), or the
/// dense ones by the first and the experts' by the second — follows the CPU's FP8 curve within the precision's tolerance, copying and on
/// host memory, and the tensor-core path computed GEMMs (the count the backend logs); asking
/// for either on the CPU or outside fp8 is refused, saying why.
#[test]
fn training_with_tensor_core_fp8_gemms_on_the_emulated_gpu_follows_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    dataset(d);
    let env = [
        (tokenmill_cuda::libs::LIB_DIR_VAR, emulated_libs()),
        ("TOKENMILL_CUDA_EMU_PAGEABLE", "1".to_string()),
    ];
    let steps = 3;
    let run_with = |name: &str, precision: &str, device: &str, extra: &str, kernel: &str| {
        let cfg = config(d, name, precision, device, steps, extra);
        let out = Command::new(tokenmill_bin())
            .args([
                "--log",
                "tokenmill_cuda=info",
                "train",
                "--quiet",
                "--config",
            ])
            .arg(&cfg)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env(tokenmill_cuda::backend::MMA_VAR, kernel)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stderr)
    };
    let run = |name: &str, precision: &str, device: &str, extra: &str| {
        run_with(name, precision, device, extra, "")
    };
    let (ok, stderr) = run("cpu-fp8", "fp8", "cpu", "");
    assert!(ok, "{stderr}");
    let cpu = losses(d, "cpu-fp8");
    // Per device: the tensor-core GEMMs of each choice, [cuBLASLt calls, kernel launches].
    let mut by = std::collections::HashMap::new();
    for (choice, device) in [
        ("cublaslt", "cuda"),
        ("cublaslt", "cuda-hmm"),
        ("mma", "cuda"),
        ("mma", "cuda-hmm"),
        ("cublaslt+mma", "cuda"),
        ("cublaslt+mma", "cuda-hmm"),
    ] {
        let name = format!("{device}-{choice}");
        let (ok, stderr) = run(&name, "fp8", device, &format!("fp8_gemm = \"{choice}\"\n"));
        assert!(ok, "{stderr}");
        // On this compute capability 9.0 device our kernel is the wgmma one on TMA copies.
        if choice != "cublaslt" {
            assert!(
                stderr.contains("FP8 GEMMs on the tensor cores by fp8_tma_gemm_f32"),
                "{stderr}"
            );
        }
        let gemms = logged(&stderr, "FP8 GEMMs computed on the tensor cores", "gemms");
        let calls = ["cublaslt", "mma"]
            .map(|f| logged(&stderr, "FP8 GEMMs computed on the tensor cores", f));
        assert_eq!(calls[0] + calls[1], gemms);
        by.insert((choice, device), calls);
        let gpu = losses(d, &name);
        let max_rel = max_rel(&cpu, &gpu);
        eprintln!(
            "fp8 cpu {cpu:?}\n{device} {choice} {gpu:?}: max rel {max_rel:.2e}, {gemms} GEMMs (calls or launches)"
        );
        assert_eq!(gpu.len(), cpu.len());
        assert!(gemms > 0, "{stderr}");
        assert!(max_rel <= 1e-2, "{max_rel:e}");
    }
    // The mma.sync kernel asked for (TOKENMILL_CUDA_MMA=sync): as many launches as wgmma on
    // TMA copies and, in the emulation (both instructions' sums of 32 products rounded to FP32
    // once, in the same order), the same losses bit for bit.
    let (ok, stderr) = run_with(
        "cuda-mma-sync",
        "fp8",
        "cuda",
        "fp8_gemm = \"mma\"\n",
        "sync",
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("FP8 GEMMs on the tensor cores by fp8_mma_gemm_f32"),
        "{stderr}"
    );
    let launches = logged(&stderr, "FP8 GEMMs computed on the tensor cores", "mma");
    assert_eq!(launches, by[&("mma", "cuda")][1]);
    let (sync, wgmma) = (losses(d, "cuda-mma-sync"), losses(d, "cuda-mma"));
    assert_eq!(
        sync.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        wgmma.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "mma.sync {sync:?} wgmma {wgmma:?}"
    );
    let (ok, stderr) = run_with(
        "cuda-mma-bad",
        "fp8",
        "cuda",
        "fp8_gemm = \"mma\"\n",
        "tf32",
    );
    assert!(
        !ok && stderr.contains("TOKENMILL_CUDA_MMA=tf32"),
        "{stderr}"
    );
    for device in ["cuda", "cuda-hmm"] {
        let [lt, mma, split] = ["cublaslt", "mma", "cublaslt+mma"].map(|c| by[&(c, device)]);
        // Each choice its own path only; split, the dense GEMMs by cuBLASLt (one call each)
        // and the experts' by the kernel (one launch each): the GEMMs the kernel alone
        // launches, and fewer cuBLASLt calls than cuBLASLt alone makes (one per expert).
        assert_eq!((lt[1], mma[0]), (0, 0), "{device}");
        assert!(split[0] > 0 && split[1] > 0, "{device}: {split:?}");
        assert_eq!(split[0] + split[1], mma[1], "{device}: {split:?} {mma:?}");
        assert!(split[0] < lt[0], "{device}: {split:?} {lt:?}");
    }
    for choice in ["cublaslt", "mma", "cublaslt+mma"] {
        let extra = format!("fp8_gemm = \"{choice}\"\n");
        let (ok, stderr) = run(&format!("cpu-{choice}"), "fp8", "cpu", &extra);
        assert!(
            !ok && stderr.contains(&format!("fp8_gemm = \"{choice}\" needs device = \"cuda\"")),
            "{stderr}"
        );
        let (ok, stderr) = run(&format!("fp32-{choice}"), "fp32", "cuda", &extra);
        assert!(
            !ok && stderr.contains("applies to precision = \"fp8\""),
            "{stderr}"
        );
    }
}

#[test]
fn host_or_managed_memory_training_is_refused_on_a_device_without_it() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    for (device, var, value, says) in [
        (
            "cuda-hmm",
            "TOKENMILL_CUDA_EMU_PAGEABLE",
            "0",
            "cannot reach pageable host memory",
        ),
        (
            "cuda-managed",
            "TOKENMILL_CUDA_EMU_MANAGED",
            "0",
            "has no managed memory",
        ),
        // Managed memory, but not while kernels run (a GPU before Pascal, Windows).
        (
            "cuda-managed",
            "TOKENMILL_CUDA_EMU_MANAGED",
            "serial",
            "CONCURRENT_MANAGED_ACCESS",
        ),
    ] {
        let env = [
            (tokenmill_cuda::libs::LIB_DIR_VAR, emulated_libs()),
            (var, value.to_string()),
        ];
        let name = format!("{device}-{value}");
        let err = train(dir.path(), &name, "fp32", device, 1, &env).expect_err("refused");
        assert!(err.contains(says), "{err}");
        assert!(err.contains("device = \"cuda\""), "{err}");
    }
    // Deferred waits are managed memory's only: refused elsewhere before any step, saying so.
    for device in ["cpu", "cuda", "cuda-hmm"] {
        let name = format!("defer-{device}");
        let cfg = config(dir.path(), &name, "fp32", device, 1, "defer_waits = true\n");
        let out = Command::new(tokenmill_bin())
            .args(["train", "--quiet", "--config"])
            .arg(&cfg)
            .env(tokenmill_cuda::libs::LIB_DIR_VAR, emulated_libs())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{device}: {stderr}");
        assert!(
            stderr.contains("defer_waits needs device = \"cuda-managed\"")
                && stderr.contains(&format!("not \"{device}\"")),
            "{device}: {stderr}"
        );
    }
}

/// FP8 tiles with a non-finite amax are counted inside deferred scopes too (on the device, read
/// at each scope's end): an overflowing fp8 run stops at the same step naming the same count
/// with `defer_waits` as without, and as on the CPU.
#[test]
fn non_finite_fp8_tiles_are_counted_the_same_with_deferred_waits() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let stop = |device: &str, extra: &str| {
        let name = format!("nan-{device}-{}", extra.len());
        let cfg = config(dir.path(), &name, "fp8", device, 4, extra);
        // An absurd learning rate: step 0 is finite, its update overflows the next forward.
        let text = std::fs::read_to_string(&cfg).unwrap();
        let text = text
            .replace("peak = 1e-3", "peak = 1e36")
            .replace("warmup = 2", "warmup = 0");
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(tokenmill_bin())
            .args(["train", "--quiet", "--config"])
            .arg(&cfg)
            .env(tokenmill_cuda::libs::LIB_DIR_VAR, emulated_libs())
            .env("TOKENMILL_CUDA_EMU_PAGEABLE", "1")
            .env(tokenmill_cuda::managed::FROM_VAR, "4096")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{device}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains("FP8 tiles had a non-finite amax"))
            .unwrap_or_else(|| panic!("{device}: no count of non-finite tiles: {stderr}"))
            .to_string();
        let tiles: u64 = line
            .split(" FP8 tiles had")
            .next()
            .and_then(|l| l.rsplit('(').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(tiles > 0, "{line}");
        (
            tiles,
            line.rsplit("at step ").next().unwrap().trim().to_string(),
        )
    };
    let cpu = stop("cpu", "");
    let managed = stop("cuda-managed", "");
    let deferred = stop("cuda-managed", "defer_waits = true\n");
    assert_eq!(managed, cpu);
    assert_eq!(deferred, managed);
}

#[test]
fn out_of_device_memory_names_the_buffer_the_size_and_the_estimate() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let env = [
        (tokenmill_cuda::libs::LIB_DIR_VAR, emulated_libs()),
        // 64 KiB of device memory: the first large upload cannot fit.
        ("TOKENMILL_CUDA_EMU_MEMORY", (64 << 10).to_string()),
    ];
    let err = train(dir.path(), "oom", "fp32", "cuda", 1, &env).expect_err("must not fit");
    assert!(err.contains("out of device memory"), "{err}");
    assert!(err.contains("bytes"), "{err}");
    assert!(err.contains("estimate"), "{err}");
}

/// `tokenmill doctor --gpu` at rehearsal sizes on the emulated device: every part runs and is
/// reported — the kernel table passes, the six loss curves follow the CPU's, training
/// throughput is measured copying, on host memory and in managed memory (the same losses, a
/// fraction of the copies), the copy and HMM tables are filled, the NCCL communicator conforms on one rank of
/// the emulated NCCL, cuBLASLt's block-scaled FP8 GEMM (the emulated library) and our mma.sync
/// kernel are timed, checked and train — and the check ends in success, with no step that
/// could not run.
#[test]
fn the_device_check_runs_whole_on_the_emulated_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(tokenmill_bin())
        .args(["doctor", "--gpu", "--rehearsal", "--gemm-sizes", "128"])
        .args(["--train-steps", "2", "--speed-presets", "tiny"])
        .args([
            "--speed-precisions",
            "fp32,fp8-cublaslt,fp8-mma,fp8-cublaslt+mma",
            "--speed-steps",
            "2",
        ])
        .args(["--speed-batch", "2", "--speed-seq", "32", "--out"])
        .arg(dir.path().join("work"))
        .arg("--json")
        .arg(&json)
        .env(tokenmill_cuda::libs::LIB_DIR_VAR, emulated_libs())
        .env("TOKENMILL_CUDA_EMU_PAGEABLE", "1")
        // `tiny`'s activations in managed memory from 4 KiB on (part 6), not 64.
        .env(tokenmill_cuda::managed::FROM_VAR, "4096")
        // The emulated NCCL for part 7, found by name as a real one is.
        .env("LD_LIBRARY_PATH", loader_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("the wgmma kernels' probes in a child process: passed")
            && stdout.contains("the wgmma+tma kernels' probes in a child process: passed")
            && stdout.contains("the wgmma+multicast kernels' probes in a child process: passed"),
        "{stdout}"
    );
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(
        rep["device"].as_str().unwrap().contains("emulator"),
        "{}",
        rep["device"]
    );
    assert_eq!(
        rep["errors"].as_array().unwrap().len(),
        0,
        "{}",
        rep["errors"]
    );
    let kernels = rep["kernels"].as_array().unwrap();
    assert!(kernels.len() > 50);
    assert!(kernels.iter().all(|k| k["pass"] == true), "{kernels:?}");
    // cuBLASLt's rows: the vendor check, training's four dense and four grouped GEMMs through
    // it, and non-finite tiles.
    let lt_rows = kernels
        .iter()
        .filter(|k| k["op"].as_str().unwrap().contains("cuBLASLt"))
        .count();
    assert_eq!(lt_rows, 10, "{kernels:?}");
    // The same nine of training through each of our kernels: mma.sync, and wgmma on cp.async
    // and on TMA copies (the emulated device is a compute capability 9.0 one).
    // The TMA kernels twice: on their own grid, and on two blocks (two clusters of two) each
    // taking several tiles.
    for (kernel, want) in [
        (" mma.sync ", 9),
        (" wgmma ", 9),
        (" wgmma+tma ", 18),
        (" wgmma+tma (2 blocks) ", 9),
        (" wgmma+multicast ", 18),
        (" wgmma+multicast (4 blocks) ", 9),
    ] {
        let rows = kernels
            .iter()
            .filter(|k| k["op"].as_str().unwrap().contains(kernel))
            .count();
        assert_eq!(rows, want, "{kernel}: {kernels:?}");
    }
    let curves = rep["training"].as_array().unwrap();
    assert_eq!(curves.len(), 6);
    assert_eq!(curves[3]["precision"], "fp8-cublaslt");
    assert_eq!(curves[4]["precision"], "fp8-mma");
    assert_eq!(curves[5]["precision"], "fp8-cublaslt+mma");
    assert!(curves.iter().all(|c| c["pass"] == true), "{curves:?}");
    let gemm: Vec<&str> = rep["gemm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["what"].as_str().unwrap())
        .collect();
    for want in [
        "BF16 cuBLAS",
        "FP8 cuBLASLt",
        "FP32 cuBLAS",
        "FP8 GEMM kernel",
        "grouped expert GEMM f32",
        "grouped expert GEMM FP8 model",
        "FP8 GEMM kernel (own, tensor cores: mma.sync)",
        "FP8 GEMM kernel (own, tensor cores: wgmma)",
        "FP8 GEMM kernel (own, tensor cores: wgmma+tma, persistent)",
        "FP8 GEMM kernel (own, tensor cores: wgmma+tma, a tile per block)",
        "grouped expert GEMM FP8 (own, tensor cores: mma.sync)",
        "grouped expert GEMM FP8 (own, tensor cores: wgmma)",
        "grouped expert GEMM FP8 (own, tensor cores: wgmma+tma, persistent)",
        "grouped expert GEMM FP8 (own, tensor cores: wgmma+tma, a tile per block)",
        "grouped expert GEMM BF16 (own, tensor cores: mma.sync)",
        "grouped expert GEMM BF16 (own, tensor cores: wgmma)",
        "grouped expert GEMM BF16 (own, tensor cores: wgmma+tma, persistent)",
        "grouped expert GEMM BF16 (own, tensor cores: wgmma+tma, a tile per block)",
        "FP8 GEMM kernel (own, tensor cores: wgmma+multicast, persistent)",
        "FP8 GEMM kernel (own, tensor cores: wgmma+multicast, a tile per block)",
        "FP8 GEMM kernel (own, tensor cores: wgmma+tma, persistent, adding into C)",
        "FP8 GEMM kernel (own, tensor cores: wgmma+multicast, persistent, adding into C)",
        "BF16 GEMM kernel (own, tensor cores: mma.sync)",
        "BF16 GEMM kernel (own, tensor cores: wgmma)",
        "BF16 GEMM kernel (own, tensor cores: wgmma+tma, persistent)",
        "BF16 GEMM kernel (own, tensor cores: wgmma+tma, a tile per block)",
        "BF16 GEMM kernel (own, tensor cores: wgmma+multicast, persistent)",
        "BF16 GEMM kernel (own, tensor cores: wgmma+multicast, a tile per block)",
        "grouped expert GEMM FP8 (own, tensor cores: wgmma+multicast, persistent)",
        "grouped expert GEMM FP8 (own, tensor cores: wgmma+multicast, a tile per block)",
        "grouped expert GEMM BF16 (own, tensor cores: wgmma+multicast, persistent)",
        "grouped expert GEMM BF16 (own, tensor cores: wgmma+multicast, a tile per block)",
        "grouped expert GEMM BF16 (cuBLAS GemmEx per expert)",
        "grouped expert GEMM FP8 (cuBLASLt per expert)",
    ] {
        assert!(gemm.iter().any(|g| g.starts_with(want)), "{want}: {gemm:?}");
    }
    // Every grouped row's all-ones product checked, and every library there.
    assert!(
        gemm.iter()
            .all(|g| !g.contains("WRONG") && !g.contains("unavailable")),
        "{gemm:?}"
    );
    // Part 7: the NCCL communicator's 15 conformance checks on one rank.
    let nccl = rep["nccl"].as_array().unwrap();
    assert_eq!(nccl.len(), 15, "{nccl:?}");
    assert!(nccl.iter().all(|c| c["pass"] == true), "{nccl:?}");
    assert_eq!(rep["copies"].as_array().unwrap().len(), 4);
    assert_eq!(rep["hmm"].as_array().unwrap().len(), 4);
    // The optimizer's kernels beside the device-to-device copy, each checked after its timing.
    let optimizer = rep["optimizer"].as_array().unwrap();
    let what: Vec<&str> = optimizer
        .iter()
        .map(|r| r["what"].as_str().unwrap())
        .collect();
    assert_eq!(optimizer.len(), 3, "{what:?}");
    assert!(what[0].starts_with("device-to-device copy"), "{what:?}");
    assert!(what[1].starts_with("AdamW step"), "{what:?}");
    assert!(what[2].starts_with("gradient sums of squares"), "{what:?}");
    assert!(what.iter().all(|w| !w.contains("WRONG")), "{what:?}");
    assert!(
        optimizer
            .iter()
            .all(|r| r["gb_per_s"].as_f64().unwrap() > 0.0),
        "{optimizer:?}"
    );
    let runs = rep["throughput"].as_array().unwrap();
    let runs_by: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| {
            (
                r["device"].as_str().unwrap(),
                r["precision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        runs_by,
        [
            ("cuda", "fp32"),
            ("cuda", "fp8-cublaslt"),
            ("cuda", "fp8-mma"),
            ("cuda", "fp8-cublaslt+mma"),
            ("cuda-managed", "fp32"),
            ("cuda-managed-deferred", "fp32"),
            ("cuda-hmm", "fp32")
        ]
    );
    // Each run's waits for the device and the time blocked in them and in copies, per step
    // (from its log): within the step.
    for r in runs {
        let (waits, blocked, step) = (
            r["waits_per_step"].as_f64().unwrap(),
            r["blocked_ms_per_step"].as_f64().unwrap(),
            r["step_ms"].as_f64().unwrap(),
        );
        assert!(waits >= 1.0 && blocked > 0.0 && blocked < step, "{r}");
    }
    let (copying, managed, deferred, hmm) = (&runs[0], &runs[4], &runs[5], &runs[6]);
    assert_eq!(copying["last_loss"], hmm["last_loss"]);
    assert_eq!(copying["last_loss"], managed["last_loss"]);
    assert_eq!(copying["last_loss"], deferred["last_loss"]);
    // Deferred waits: fewer waits per step than waiting after each operation.
    let waits = |r: &serde_json::Value| r["waits_per_step"].as_f64().unwrap();
    assert!(
        waits(deferred) < 0.4 * waits(managed),
        "waits per step: {} deferred, {} not",
        waits(deferred),
        waits(managed)
    );
    let per_step = |r: &serde_json::Value| r["copies_per_step"].as_f64().unwrap();
    assert!(
        per_step(hmm) * 10.0 < per_step(copying),
        "copies per step: {} on host memory, {} copying",
        per_step(hmm),
        per_step(copying)
    );
    // In managed memory the slices under the threshold are still copied, a few bytes each.
    let up = |r: &serde_json::Value| r["to_device_gb_per_step"].as_f64().unwrap();
    assert!(
        up(managed) * 20.0 < up(copying),
        "GB up per step: {} in managed memory, {} copying",
        up(managed),
        up(copying)
    );
}

/// `--budget-s`: once the check's time is spent no part or training run starts; the report
/// keeps what was measured, lists what was left out, and the check still ends in success.
/// `tokenmill doctor --gpu --rehearsal ARGS --out DIR/work --json DIR/report.json` on the
/// emulated device (pageable access reported), which must succeed: its stdout and report.
fn doctor_on_emulated(dir: &Path, args: &[&str]) -> (String, serde_json::Value) {
    let json = dir.join("report.json");
    let out = Command::new(tokenmill_bin())
        .args(["doctor", "--gpu", "--rehearsal"])
        .args(args)
        .arg("--out")
        .arg(dir.join("work"))
        .arg("--json")
        .arg(&json)
        .env(tokenmill_cuda::libs::LIB_DIR_VAR, emulated_libs())
        .env("TOKENMILL_CUDA_EMU_PAGEABLE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (stdout, rep)
}

#[test]
fn the_device_check_starts_nothing_once_its_time_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, rep) = doctor_on_emulated(
        dir.path(),
        &[
            "--gemm-sizes",
            "128",
            "--train-steps",
            "2",
            "--speed-presets",
            "tiny",
            "--speed-steps",
            "2",
            "--speed-batch",
            "2",
            "--speed-seq",
            "32",
            // Parts 1 and 2 take longer than this on the emulated device.
            "--budget-s",
            "1",
        ],
    );
    assert!(rep["kernels"].as_array().unwrap().len() > 50);
    assert!(rep["training"].as_array().unwrap().is_empty());
    assert!(rep["throughput"].as_array().unwrap().is_empty());
    let skipped: Vec<&str> = rep["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for part in [
        "3. the training comparison",
        "4. training throughput",
        "7. NCCL",
    ] {
        assert!(
            skipped.iter().any(|s| s.starts_with(part)),
            "{part} not listed: {skipped:?}"
        );
    }
    assert!(stdout.contains("not started (--budget-s 1)"), "{stdout}");
}

/// `doctor --gpu --kernels-only`, what `tests/device/sanitize.sh` runs under compute-sanitizer:
/// the kernel table, every row passing, and nothing after it — no GEMM timing, optimizer
/// table, training or communicator check. Without `--gpu` the flag is refused.
#[test]
fn the_kernels_only_check_stops_after_the_kernel_table() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, rep) = doctor_on_emulated(dir.path(), &["--kernels-only"]);
    let kernels = rep["kernels"].as_array().unwrap();
    assert!(kernels.len() > 150, "{}", kernels.len());
    assert!(kernels.iter().all(|k| k["pass"] == true));
    for part in ["gemm", "optimizer", "training", "throughput", "nccl"] {
        assert!(
            rep[part].as_array().unwrap().is_empty(),
            "{part}: {}",
            rep[part]
        );
    }
    assert!(!stdout.contains("2. GEMM throughput"), "{stdout}");
    assert!(stdout.contains("device check: all passed"), "{stdout}");
    let out = Command::new(tokenmill_bin())
        .args(["doctor", "--kernels-only"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--gpu"), "{err}");
}

/// A wgmma kernel that faults on the device (here the emulated driver's
/// `TOKENMILL_CUDA_EMU_FAULT`, as a GPU that does not have an instruction or reads a
/// descriptor or tensor map otherwise would) costs the device check only the child process
/// that probed it: the check reports it as an error naming the driver's, and every part after
/// it leaves that kernel (wgmma on cp.async copies, on TMA copies, or on TMA copies multicast in
/// clusters of two) aside — the nine FP8 rows
/// by each other kernel pass, none is by the faulting one, nor any timing; the experts' BF16
/// GEMMs in the kernel table pass on another.
#[test]
fn a_faulting_wgmma_kernel_costs_the_device_check_only_its_child_process() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    for (kernel, faulty, other) in [
        ("fp8_wgmma_gemm_f32", "wgmma", "wgmma+tma"),
        ("bf16_wgmma_gemm_f32", "wgmma", "wgmma+tma"),
        ("fp8_tma_gemm_f32", "wgmma+tma", "wgmma"),
        ("bf16_tma_gemm_f32", "wgmma+tma", "wgmma"),
        ("fp8_tma_mc_gemm_f32", "wgmma+multicast", "wgmma+tma"),
        ("bf16_tma_mc_gemm_f32", "wgmma+multicast", "wgmma+tma"),
    ] {
        let out = Command::new(tokenmill_bin())
            .args(["doctor", "--gpu", "--rehearsal", "--gemm-sizes", "128"])
            // Parts 1 and 2 only.
            .args(["--budget-s", "1", "--out"])
            .arg(dir.path().join("work"))
            .arg("--json")
            .arg(&json)
            .env(tokenmill_cuda::libs::LIB_DIR_VAR, emulated_libs())
            .env("TOKENMILL_CUDA_EMU_FAULT", kernel)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{stdout}");
        let rep: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let errors = rep["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{kernel}: {errors:?}");
        let e = errors[0].as_str().unwrap();
        assert!(
            e.starts_with(&format!("the {faulty} kernels' probes in a child process"))
                && e.contains("CUDA_ERROR_ILLEGAL_INSTRUCTION")
                && e.contains("took another"),
            "{kernel}: {e}"
        );
        let kernels = rep["kernels"].as_array().unwrap();
        assert!(kernels.len() > 50);
        assert!(kernels.iter().all(|k| k["pass"] == true), "{kernels:?}");
        let by = |what: &str| {
            kernels
                .iter()
                .filter(|k| k["op"].as_str().unwrap().contains(&format!(" {what} ")))
                .count()
        };
        // (The TMA kernels' rows twice: on their own grid and on two blocks or clusters.)
        let rows_of = |what: &str| if what.starts_with("wgmma+") { 18 } else { 9 };
        assert_eq!(
            (by("mma.sync"), by(other), by(faulty)),
            (9, rows_of(other), 0),
            "{kernel}: {kernels:?}"
        );
        let gemm: Vec<&str> = rep["gemm"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["what"].as_str().unwrap())
            .collect();
        // A row of `what`: its words end there, or go on with the TMA kernels' grid.
        let of = |g: &str, what: &str| {
            [")", ", "]
                .iter()
                .any(|end| g.contains(&format!("tensor cores: {what}{end}")))
        };
        assert!(gemm.iter().all(|g| !of(g, faulty)), "{gemm:?}");
        for k in ["mma.sync", other] {
            assert!(
                gemm.iter()
                    .any(|g| g.starts_with("grouped expert GEMM FP8 (own") && of(g, k)),
                "{k}: {gemm:?}"
            );
        }
    }
}

/// `[parallel] transport = "nccl"` without GPUs: `mpirun -np 2 tokenmill train` with the
/// experts split over the two ranks (`ep = 2`: the MoE layers' all-to-all-v, the gradients'
/// reduce-scatter and the parameters' all-gather) and through a DualPipeV pipeline (`pp = 2`,
/// 4 layers in 4 stages: activations and their gradients sent and received between the
/// ranks), each rank on the emulated CUDA device and its bytes carried by the emulated NCCL
/// (`DRIVER_DIR` on the loader's path), trains to the bits of the same layout over MPI: the
/// collectives are built on the same primitives in the same order whatever carries them — in
/// CUDA managed memory too.
#[test]
fn training_over_nccl_on_emulated_gpus_gives_the_bits_of_mpi() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    dataset(d);
    let loader = loader_path();
    let run = |layout: &str, transport: &str, device: &str| -> (Vec<f64>, String) {
        let name = format!(
            "{}-over-{transport}-{device}",
            &layout[..6].replace([' ', '='], "")
        );
        let extra = format!("\n[parallel]\n{layout}\ntransport = \"{transport}\"\n");
        let cfg = config(d, &name, "fp32", device, 3, &extra);
        if layout.starts_with("pp") {
            // Four layers in DualPipeV's four stages, four micro-batches of two.
            let text = std::fs::read_to_string(&cfg).unwrap();
            let text = text
                .replace(
                    "vocab_size = 1024",
                    "vocab_size = 1024\nnum_hidden_layers = 4",
                )
                .replace("batch = 2", "batch = 8\nmicro_batch = 2");
            std::fs::write(&cfg, text).unwrap();
        }
        let out = mpirun(2)
            .current_dir(d)
            .env(tokenmill_cuda::libs::LIB_DIR_VAR, emulated_libs())
            .env("LD_LIBRARY_PATH", &loader)
            // Managed from 4 KiB on (`cuda-managed`): NCCL's results land in managed `Vec`s.
            .env(tokenmill_cuda::managed::FROM_VAR, "4096")
            .arg(tokenmill_bin())
            .args([
                "--log",
                "tokenmill_comm=info",
                "train",
                "--quiet",
                "--config",
            ])
            .arg(&cfg)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{transport}: {text}");
        (losses(d, &name), text)
    };
    for layout in ["ep = 2", "pp = 2\nschedule = \"dualpipev\""] {
        let (mpi, mpi_log) = run(layout, "mpi", "cuda");
        let (nccl, nccl_log) = run(layout, "nccl", "cuda");
        // In managed memory: the copies into NCCL's results are asynchronous there (the
        // emulated driver holds them until the stream is waited for).
        let (managed, _) = run(layout, "nccl", "cuda-managed");
        eprintln!("{layout}: mpi {mpi:?}\nnccl {nccl:?}\nnccl, managed {managed:?}");
        assert_eq!(mpi.len(), 3);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&nccl), bits(&mpi), "{layout}");
        assert_eq!(bits(&managed), bits(&mpi), "{layout} in managed memory");
        // NCCL did carry them: every rank formed its communicators (the world's, and those
        // of the groups split from it); MPI's run made none.
        assert!(
            nccl_log.matches("NCCL communicator ready").count() >= 2,
            "{nccl_log}"
        );
        assert!(!mpi_log.contains("NCCL communicator ready"), "{mpi_log}");
    }
}
