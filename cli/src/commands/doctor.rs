//! `tokenmill doctor [--gpu]`: what this machine can run. Without `--gpu`: whether NVRTC and a
//! CUDA driver load, and the kernels compiled for the CI architectures. With `--gpu` — the
//! device check (`tests/device/check.sh` runs it on a lent H200): every CUDA kernel against
//! the CPU reference in this same binary (a table of max errors, PASS/FAIL), GEMM throughput
//! (FP32/BF16 cuBLAS, FP8 cuBLASLt with DeepSeek-V3's block scaling), and the `small` preset
//! trained on the GPU and on the CPU from the same data and initial weights in fp32, bf16 and
//! fp8, their loss curves compared step by step, and the training throughput of the `small`
//! and `1b` presets on the GPU (tokens/s, MFU against part 2's measured GEMM rates), on a GPU
//! with pageable access a kernel and those runs on host memory, and last the NCCL
//! communicator's conformance checks on one rank. `--json` writes everything, after each part.

use std::path::PathBuf;

use serde::Serialize;
use tokenmill_cuda::backend::{Fp8Gemm, MMA_VAR, MmaKernel, TmaGrid, avoid, with_tma_grid};
use tokenmill_cuda::{bench, check, libs, nvrtc, source};

/// `tokenmill doctor`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run the device check on GPU `--device`.
    #[arg(long)]
    pub gpu: bool,
    /// GPU ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// GEMM sizes (m = n = k) of the throughput table.
    #[arg(long, value_delimiter = ',', default_value = "4096,8192")]
    pub gemm_sizes: Vec<usize>,
    /// Training steps per precision and device for the loss-curve comparison (0: skip it).
    #[arg(long, default_value_t = 30)]
    pub train_steps: u64,
    /// Working directory for the training comparison (a dataset is generated there).
    #[arg(long, default_value = "tokenmill-doctor")]
    pub out: PathBuf,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only the training comparison, with the CPU on both sides: tests the comparison itself
    /// on a machine without a GPU (the curves must be identical).
    #[arg(long, hide = true)]
    pub train_cpu_vs_cpu: bool,
    /// Presets whose training throughput part 4 measures on the GPU.
    #[arg(long, value_delimiter = ',', default_value = "small,1b")]
    pub speed_presets: Vec<String>,
    /// Precisions of the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "fp32,bf16")]
    pub speed_precisions: Vec<String>,
    /// Steps per throughput run (the first is not counted; 0: skip part 4).
    #[arg(long, default_value_t = 6)]
    pub speed_steps: u64,
    /// Sequences per step of the throughput runs.
    #[arg(long, default_value_t = 8)]
    pub speed_batch: u64,
    /// Tokens per sequence of the throughput runs.
    #[arg(long, default_value_t = 512)]
    pub speed_seq: u64,
    /// Every part at rehearsal sizes (the own-kernel GEMMs at 256³, copies of 4 MiB, the
    /// training comparison on `tiny`): the whole check on the emulated CUDA driver in CI.
    #[arg(long, hide = true)]
    pub rehearsal: bool,
    /// Only the throughput part, on the CPU: tests its harness on a machine without a GPU.
    #[arg(long, hide = true)]
    pub speed_on_cpu: bool,
    /// Seconds the device check may take (0: no limit): no part, and no training run, starts
    /// after them; what was measured stays in the report, and what was not started is listed
    /// in it (`skipped`). `tests/device/check.sh` sets it below its own time limit, so that a
    /// slow machine loses its last runs rather than the report's last parts.
    #[arg(long, default_value_t = 0)]
    pub budget_s: u64,
    /// Only one wgmma kernel's probes on `--device` (`wgmma` or `tma`: what the device check
    /// runs in a child process per kernel before its parts).
    #[arg(long, hide = true, value_name = "KERNEL")]
    pub probe_wgmma: Option<String>,
    /// With `--gpu`: the kernel table (part 1) and nothing after it — what
    /// `tests/device/sanitize.sh` runs under NVIDIA's compute-sanitizer.
    #[arg(long, requires = "gpu")]
    pub kernels_only: bool,
}

/// One precision's comparison of the GPU and CPU loss curves.
#[derive(Debug, Serialize)]
pub struct Curve {
    /// `fp32`, `bf16`, `fp8`.
    pub precision: String,
    /// Losses on the CPU, by step.
    pub cpu: Vec<f64>,
    /// Losses on the GPU, by step.
    pub gpu: Vec<f64>,
    /// Largest |gpu − cpu| / cpu over the steps.
    pub max_rel: f64,
    /// The precision's tolerance.
    pub tol: f64,
    /// Training tokens/s on the GPU and the CPU (median over the steps).
    pub tokens_per_s: (f64, f64),
    /// Model FLOPs utilisation on the GPU, as the trainer reports it.
    pub gpu_mfu: f64,
    /// Within the tolerance.
    pub pass: bool,
}

/// One conformance check of the NCCL communicator.
#[derive(Debug, Serialize)]
pub struct NcclRow {
    /// The check (`tokenmill_comm::conformance`).
    pub check: String,
    /// Passed.
    pub pass: bool,
    /// Why not.
    pub error: Option<String>,
}

/// The whole report.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// When (UTC, seconds since the epoch).
    pub unix_time: u64,
    /// The device (`NVIDIA H200, sm_90a, 139.8 GiB`).
    pub device: String,
    /// NVRTC's version.
    pub nvrtc: String,
    /// Every kernel against the CPU reference.
    pub kernels: Vec<check::Row>,
    /// How the GPU may reach host memory.
    pub host_access: Option<tokenmill_cuda::device::HostAccess>,
    /// GEMM throughput.
    pub gemm: Vec<bench::BenchRow>,
    /// Host↔device copy rates.
    pub copies: Vec<bench::CopyRow>,
    /// A kernel on pageable host memory (when the GPU may reach it), against device buffers.
    pub hmm: Vec<bench::CopyRow>,
    /// The optimizer's memory-bound kernels (AdamW, the gradient norm's sums of squares)
    /// beside the driver's device-to-device copy.
    pub optimizer: Vec<bench::CopyRow>,
    /// Training loss curves, GPU vs CPU.
    pub training: Vec<Curve>,
    /// Training throughput of the presets on the GPU.
    pub throughput: Vec<crate::commands::doctor_train::Throughput>,
    /// The NCCL communicator's conformance checks on one rank (this GPU).
    pub nccl: Vec<NcclRow>,
    /// Parts and runs not started because `--budget-s` was spent.
    pub skipped: Vec<String>,
    /// What could not run, with the reason.
    pub errors: Vec<String>,
}

/// Runs `tokenmill doctor`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let mut rep = Report {
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        ..Default::default()
    };
    match nvrtc::version() {
        Ok((ma, mi)) => {
            rep.nvrtc = format!("{ma}.{mi}");
            println!("NVRTC {ma}.{mi}");
        }
        Err(e) => println!("NVRTC: {e}"),
    }
    match libs::driver() {
        Ok(()) => println!("CUDA driver: found"),
        Err(e) => println!("CUDA driver: {e}"),
    }
    #[cfg(feature = "nccl")]
    match tokenmill_comm::nccl_available() {
        Ok(()) => println!("NCCL: found"),
        Err(e) => println!("NCCL: {e}"),
    }
    if let Some(k) = &a.probe_wgmma {
        let kernel = MmaKernel::parse(k)
            .filter(|k| *k != MmaKernel::Sync)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--probe-wgmma {k}: the wgmma kernels are `wgmma`, `tma` and `multicast`"
                )
            })?;
        tokenmill_cuda::Cuda::probe_wgmma(a.device, kernel)?;
        println!("{} probes passed", kernel.instruction());
        return Ok(());
    }
    if a.train_cpu_vs_cpu {
        let curves = crate::commands::doctor_train::compare(
            &a.out,
            a.train_steps,
            a.seed,
            "cpu",
            a.rehearsal,
        )?;
        print_curves(&curves);
        let failed = curves.iter().filter(|c| !c.pass).count();
        rep.training = curves;
        if let Some(path) = &a.json {
            std::fs::write(path, serde_json::to_string_pretty(&rep)?)?;
        }
        anyhow::ensure!(failed == 0, "{failed} training comparison(s) failed");
        return Ok(());
    }
    if a.speed_on_cpu {
        let peak = tokenmill_trainer::cost::measure_gemm_peak(&tokenmill_kernels::backend::Cpu);
        rep.throughput = crate::commands::doctor_train::throughput(
            &a.out,
            &speed_spec(&a),
            a.seed,
            "cpu",
            &|_| Some(peak),
            &mut rep.skipped,
        )?;
        print_throughput(&rep.throughput);
        save(&a, &rep)?;
        return Ok(());
    }
    if !a.gpu {
        if !rep.nvrtc.is_empty() {
            let src = source::program();
            for arch in nvrtc::CI_ARCHS {
                let t = std::time::Instant::now();
                match nvrtc::compile(&src, arch) {
                    Ok(c) => println!(
                        "kernels for {arch}: {} kernels, cubin {} KiB{} ({:.1} s)",
                        source::kernel_names().len(),
                        c.cubin.len() / 1024,
                        if c.cached { ", cached" } else { "" },
                        t.elapsed().as_secs_f64()
                    ),
                    Err(e) => println!("kernels for {arch}: {e}"),
                }
            }
        }
        println!("(`tokenmill doctor --gpu` runs the device check on a GPU)");
        return Ok(());
    }
    let result = gpu_check(&a, &mut rep);
    save(&a, &rep)?;
    if let Some(path) = &a.json {
        println!("report: {}", path.display());
    }
    result?;
    let failed = rep.kernels.iter().filter(|r| !r.pass).count()
        + rep.training.iter().filter(|c| !c.pass).count()
        + rep.nccl.iter().filter(|c| !c.pass).count();
    if failed > 0 || !rep.errors.is_empty() {
        anyhow::bail!(
            "device check: {failed} check(s) failed, {} step(s) could not run",
            rep.errors.len()
        );
    }
    println!("device check: all passed");
    Ok(())
}

/// Seconds the wgmma probes' child process may take before it is killed.
const PROBE_WGMMA_S: u64 = 120;

/// Runs `tokenmill doctor --probe-wgmma KERNEL --device N` (this binary) and waits for it at
/// most [`PROBE_WGMMA_S`]: the seconds it took, or why it failed (its exit and the end of its
/// output, or the time it was killed at).
fn probe_wgmma_apart(device: usize, kernel: MmaKernel) -> anyhow::Result<f64> {
    let t0 = std::time::Instant::now();
    let log = tempfile::tempfile()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "doctor",
            "--probe-wgmma",
            kernel.key(),
            "--device",
            &device.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(log.try_clone()?)
        .spawn()?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if t0.elapsed().as_secs() >= PROBE_WGMMA_S {
            child.kill()?;
            child.wait()?;
            anyhow::bail!("no answer in {PROBE_WGMMA_S} s: killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    if status.success() {
        return Ok(t0.elapsed().as_secs_f64());
    }
    use std::io::{Read, Seek};
    let (mut log, mut text) = (log, String::new());
    log.seek(std::io::SeekFrom::Start(0))?;
    log.read_to_string(&mut text)?;
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(4)..].join(" / ");
    anyhow::bail!("{status}: {tail}")
}

/// Runs one part of the device check; a panic in it (the CUDA backend panics on a failed
/// launch or transfer) becomes an error naming its message, so that the later parts still run
/// and the report is still written.
fn catch<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|e| {
        Err(anyhow::anyhow!(
            "panicked: {}",
            check::panic_message(e.as_ref())
        ))
    })
}

/// Writes the report to `--json` (after each part, so that a check stopped by its time limit
/// still leaves what it measured).
fn save(a: &Args, rep: &Report) -> anyhow::Result<()> {
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(rep)?)?;
    }
    Ok(())
}

fn speed_spec(a: &Args) -> crate::commands::doctor_train::ThroughputSpec {
    crate::commands::doctor_train::ThroughputSpec {
        presets: a.speed_presets.clone(),
        precisions: a.speed_precisions.clone(),
        batch: a.speed_batch,
        seq: a.speed_seq,
        steps: a.speed_steps,
        deadline: None,
    }
}

/// The instant after which nothing starts (`--budget-s` after `t0`).
fn deadline(a: &Args, t0: std::time::Instant) -> Option<std::time::Instant> {
    (a.budget_s > 0).then(|| t0 + std::time::Duration::from_secs(a.budget_s))
}

/// True, with `what` listed as skipped, once the check's time (`--budget-s`) is spent.
fn out_of_time(a: &Args, t0: std::time::Instant, rep: &mut Report, what: &str) -> bool {
    if deadline(a, t0).is_none_or(|d| std::time::Instant::now() < d) {
        return false;
    }
    let line = format!(
        "{what}: not started, the check's {} s were spent",
        a.budget_s
    );
    println!("\n{line}");
    rep.skipped.push(line);
    true
}

/// The measured dense GEMM rate (FLOP/s) of `precision` in the table of part 2: the best row
/// of FP32 cuBLAS, BF16 cuBLAS or FP8 cuBLASLt.
fn gemm_peak(rows: &[bench::BenchRow], precision: &str) -> Option<f64> {
    let prefix = match precision {
        "fp32" => "FP32 cuBLAS",
        "bf16" => "BF16 cuBLAS",
        // (cublaslt+mma: the dense GEMMs, most of the work, through cuBLASLt.)
        "fp8" | "fp8-cublaslt" | "fp8-cublaslt+mma" => "FP8 cuBLASLt",
        "fp8-mma" => "FP8 GEMM kernel (own, tensor cores",
        _ => return None,
    };
    rows.iter()
        .filter(|r| r.what.starts_with(prefix) && r.tflops.is_finite())
        .map(|r| r.tflops * 1e12)
        .reduce(f64::max)
}

fn gpu_check(a: &Args, rep: &mut Report) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let cuda = tokenmill_cuda::Cuda::new(a.device)?;
    let dev = cuda.device();
    rep.device = format!(
        "{}, {}, {:.1} GiB",
        dev.name,
        dev.arch,
        dev.total_memory as f64 / (1u64 << 30) as f64
    );
    println!(
        "device: {} (kernels {} in {:.1} s)",
        rep.device,
        if dev.cubin_cached {
            "from the cache"
        } else {
            "compiled"
        },
        t0.elapsed().as_secs_f64()
    );
    match dev.host_access() {
        Ok(h) => {
            println!(
                "host memory from kernels: pageable {}, through the host's page tables {}, \
                 concurrent managed access {}",
                h.pageable, h.host_page_tables, h.concurrent_managed
            );
            rep.host_access = Some(h);
        }
        Err(e) => rep.errors.push(format!("host memory access: {e}")),
    }

    // The wgmma kernels first run in a child process: one that faults (an instruction or a
    // descriptor the device reads otherwise) would leave this process's CUDA context unusable
    // for every part, one that hangs would take the check's minutes. Each kind (wgmma on
    // cp.async copies, on TMA copies, on TMA copies multicast in clusters of two) in a child of
    // its own: if one fails, that kind is set aside here and our kernels take the next.
    for kernel in [MmaKernel::Wgmma, MmaKernel::Tma, MmaKernel::Multicast] {
        if !kernel.runs_on(dev) || std::env::var_os(MMA_VAR).is_some() {
            continue;
        }
        let what = format!(
            "the {} kernels' probes in a child process",
            kernel.instruction()
        );
        match probe_wgmma_apart(a.device, kernel) {
            Ok(s) => println!("{what}: passed ({s:.1} s)"),
            Err(e) => {
                avoid(kernel);
                println!("{what}: {e}; set aside");
                rep.errors.push(format!(
                    "{what}: {e} (our tensor-core kernels took another)"
                ));
            }
        }
    }

    println!("\n1. every kernel against the CPU reference");
    rep.kernels = check::kernel_table(&cuda, a.seed);
    for (name, r) in [
        (
            "FP8 cuBLASLt check",
            catch(|| Ok(bench::fp8_cublaslt_check(dev, a.seed)?)),
        ),
        (
            "own FP8 GEMM check",
            catch(|| Ok(bench::own_fp8_check(dev, a.seed)?)),
        ),
    ] {
        match r {
            Ok(r) => rep.kernels.push(r),
            Err(e) => rep.errors.push(format!("{name}: {e}")),
        }
    }
    // Training's FP8 GEMMs on the tensor cores, in their forms: through cuBLASLt
    // (`fp8_gemm = "cublaslt"`) and our kernels (`fp8_gemm = "mma"`): mma.sync, and on Hopper
    // wgmma with operands copied by cp.async and by TMA.
    // The TMA kernels also on two blocks (the multicast ones on two clusters of two), so that
    // on the GPU each block takes several tiles (the stages and barrier phases carried from
    // tile to tile and expert to expert).
    let mut forms = vec![(Fp8Gemm::Cublaslt, None, TmaGrid::Persistent)];
    for kernel in [
        MmaKernel::Sync,
        MmaKernel::Wgmma,
        MmaKernel::Tma,
        MmaKernel::Multicast,
    ] {
        if kernel == MmaKernel::Sync || kernel.chosen_on(dev) {
            forms.push((Fp8Gemm::Mma, Some(kernel), TmaGrid::Persistent));
            if kernel.tma() {
                let blocks = 2 * kernel.cluster();
                forms.push((Fp8Gemm::Mma, Some(kernel), TmaGrid::Blocks(blocks)));
            }
        }
    }
    for (fp8, kernel, grid) in forms {
        let name = match kernel {
            None => "FP8 GEMMs through cuBLASLt".to_string(),
            Some(k) => format!("FP8 GEMMs by {} ({grid:?})", k.name()),
        };
        let rows = with_tma_grid(grid, || {
            catch(|| {
                let mut tc = tokenmill_cuda::Cuda::new(a.device)?;
                tc.set_mma_kernel(kernel);
                tc.set_fp8_gemm(fp8)?;
                Ok(check::fp8_tensor_core_rows(&tc, a.seed))
            })
        });
        match rows {
            Ok(rows) => rep.kernels.extend(rows),
            Err(e) => rep.errors.push(format!("{name}: {e}")),
        }
    }
    print!("{}", check::render(&rep.kernels));
    save(a, rep)?;
    if a.kernels_only {
        return Ok(());
    }

    println!("\n2. GEMM throughput");
    let table = catch(|| {
        // Our dense FP8 GEMMs at 4096³ and at the 8192³ (the rehearsal at 256³ only).
        let (sizes, tokens, experts): (&[usize], _, _) = if a.rehearsal {
            (&[256], 256, (8, 2, 256, 512))
        } else {
            (&[4096, 8192], 4096, bench::DEEPSEEK_V3_EXPERTS)
        };
        let (mut t, vendor) = bench::gemm_table(dev, &a.gemm_sizes)?;
        if let Some(e) = vendor {
            println!("FP8 cuBLASLt rows: {e}");
            rep.errors.push(format!("FP8 cuBLASLt GEMM table: {e}"));
        }
        // Our kernels' rows apart: a failure there keeps the vendor rows.
        match bench::own_kernels_table(dev, sizes, tokens, experts) {
            Ok(own) => t.extend(own),
            Err(e) => {
                println!("own kernels' GEMM rows: {e}");
                rep.errors.push(format!("own kernels' GEMM rows: {e}"));
            }
        }
        Ok(t)
    });
    match table {
        Ok(rows) => {
            println!(
                "{:<42} {:>18} {:>10} {:>10}",
                "GEMM", "m×n×k", "ms", "TFLOPS"
            );
            for r in &rows {
                println!(
                    "{:<42} {:>18} {:>10.3} {:>10.1}",
                    r.what,
                    format!("{}×{}×{}", r.shape.0, r.shape.1, r.shape.2),
                    r.ms,
                    r.tflops
                );
            }
            rep.gemm = rows;
            save(a, rep)?;
        }
        Err(e) => {
            println!("GEMM table: {e}");
            rep.errors.push(format!("GEMM table: {e}"));
        }
    }
    let copy_bytes = if a.rehearsal { 4 << 20 } else { 256 << 20 };
    match catch(|| Ok(bench::copy_table(dev, copy_bytes)?)) {
        Ok(rows) => {
            println!(
                "\n{:<42} {:>12} {:>10} {:>10}",
                "copy", "bytes", "ms", "GB/s"
            );
            for r in &rows {
                println!(
                    "{:<42} {:>12} {:>10.2} {:>10.1}",
                    r.what, r.bytes, r.ms, r.gb_per_s
                );
            }
            rep.copies = rows;
            save(a, rep)?;
        }
        Err(e) => {
            println!("copy rates: {e}");
            rep.errors.push(format!("copy rates: {e}"));
        }
    }

    // 2²⁸ elements: a quarter of the `1b` preset's parameters, 7.8 GB moved an AdamW step.
    let elements = if a.rehearsal { 1 << 16 } else { 1 << 28 };
    match catch(|| {
        Ok(bench::optimizer_table(
            dev,
            elements,
            tokenmill_trainer::optim::SEGMENT,
        )?)
    }) {
        Ok(rows) => {
            println!();
            print_rates("optimizer kernel", &rows);
            if let [copy, rest @ ..] = rows.as_slice() {
                for r in rest {
                    println!(
                        "{}: {:.0} % of the copy's rate",
                        r.what,
                        100.0 * r.gb_per_s / copy.gb_per_s
                    );
                }
            }
            // A kernel that computed something else fails the check (its rate is no figure).
            for r in rows.iter().filter(|r| r.what.contains("WRONG")) {
                rep.errors.push(format!("optimizer kernels: {}", r.what));
            }
            rep.optimizer = rows;
            save(a, rep)?;
        }
        Err(e) => {
            println!("optimizer kernels: {e}");
            rep.errors.push(format!("optimizer kernels: {e}"));
        }
    }

    if a.train_steps > 0 && !out_of_time(a, t0, rep, "3. the training comparison") {
        println!(
            "\n3. the {} preset, {} steps per precision, GPU vs CPU (same data, same init)",
            if a.rehearsal { "tiny" } else { "small" },
            a.train_steps
        );
        drop(cuda);
        match catch(|| {
            crate::commands::doctor_train::compare(
                &a.out,
                a.train_steps,
                a.seed,
                "cuda",
                a.rehearsal,
            )
        }) {
            Ok(curves) => {
                print_curves(&curves);
                rep.training = curves;
            }
            Err(e) => {
                println!("training comparison: {e:#}");
                rep.errors.push(format!("training comparison: {e:#}"));
            }
        }
        save(a, rep)?;
    }
    if a.speed_steps > 0
        && !a.speed_presets.is_empty()
        && !out_of_time(a, t0, rep, "4. training throughput")
    {
        println!(
            "\n4. training throughput on the GPU: {} × {}, batch {} × {}, {} steps",
            a.speed_presets.join(", "),
            a.speed_precisions.join(", "),
            a.speed_batch,
            a.speed_seq,
            a.speed_steps
        );
        let peak = |p: &str| gemm_peak(&rep.gemm, p);
        let spec = crate::commands::doctor_train::ThroughputSpec {
            deadline: deadline(a, t0),
            ..speed_spec(a)
        };
        let skipped = &mut rep.skipped;
        let result = catch(|| {
            crate::commands::doctor_train::throughput(&a.out, &spec, a.seed, "cuda", &peak, skipped)
        });
        match result {
            Ok(mut rows) => {
                let rate = |what: &str| {
                    rep.copies
                        .iter()
                        .find(|c| c.what == what)
                        .map(|c| c.gb_per_s)
                };
                let rates = (
                    rate(bench::TO_DEVICE_PAGEABLE),
                    rate(bench::TO_HOST_PAGEABLE),
                );
                for r in &mut rows {
                    if let (Some(u), Some(d), (Some(ru), Some(rd))) =
                        (r.to_device_gb_per_step, r.to_host_gb_per_step, rates)
                    {
                        r.copy_s_per_step = Some(u / ru + d / rd);
                    }
                }
                print_throughput(&rows);
                rep.throughput = rows;
            }
            Err(e) => {
                println!("throughput: {e:#}");
                rep.errors.push(format!("throughput: {e:#}"));
            }
        }
        save(a, rep)?;
    }
    // Last: a fault on host memory would leave the context unusable for anything after it.
    if rep.host_access.is_some_and(|h| h.pageable)
        && !out_of_time(a, t0, rep, "5. a kernel on host memory")
    {
        println!("\n5. a kernel on pageable host memory (HMM) vs on device buffers");
        match catch(|| {
            let cuda = tokenmill_cuda::Cuda::new(a.device)?;
            let bytes = if a.rehearsal { 4 << 20 } else { 768 << 20 };
            Ok(bench::hmm_table(cuda.device(), bytes)?)
        }) {
            Ok(rows) => {
                print_rates("copy", &rows);
                rep.hmm = rows;
            }
            Err(e) => {
                println!("HMM probe: {e:#}");
                rep.errors.push(format!("HMM probe: {e:#}"));
            }
        }
        save(a, rep)?;
    }
    // Then training with the data left on the device: on the host's own memory
    // (`device = "cuda-hmm"`, with HMM) and in CUDA managed memory (`"cuda-managed"`, any GPU
    // whose host may touch managed memory while kernels run): part 4's runs in fp32, their
    // tokens/s and copies per step beside the copying backend's, and their losses, which must
    // be part 4's (the same arithmetic on the same data).
    let access = rep
        .host_access
        .unwrap_or(tokenmill_cuda::device::HostAccess {
            pageable: false,
            host_page_tables: false,
            concurrent_managed: false,
        });
    // Managed memory first: any GPU has it, where HMM needs the open kernel modules. Then
    // managed memory with deferred waits (`[train] defer_waits`: a sublayer's operations
    // queued without a wait after each): what the waits cost the step.
    let resident = [
        ("cuda-managed", "managed memory", access.concurrent_managed),
        (
            "cuda-managed-deferred",
            "managed memory, deferred waits",
            access.concurrent_managed,
        ),
        ("cuda-hmm", "host memory", access.pageable),
    ];
    if a.speed_steps > 0 && !a.speed_presets.is_empty() && resident.iter().any(|r| r.2) {
        println!("\n6. training throughput with the data left on the device, fp32");
        for (device, on, _) in resident.into_iter().filter(|r| r.2) {
            if !out_of_time(a, t0, rep, &format!("6. training throughput on {on}")) {
                resident_throughput(a, t0, rep, device, on);
                save(a, rep)?;
            }
        }
    }
    // Last, as a fault in NCCL could end the process: the communicator through the real
    // NCCL on this GPU, one rank.
    if !out_of_time(a, t0, rep, "7. NCCL") {
        nccl_part(a, rep);
        save(a, rep)?;
    }
    if !rep.skipped.is_empty() {
        println!("\nnot started (--budget-s {}):", a.budget_s);
        for s in &rep.skipped {
            println!("  {s}");
        }
    }
    println!("\ndevice check took {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Part 6 on `device` (`cuda-hmm`, `cuda-managed` or `cuda-managed-deferred`; `on` says where
/// the data lies): part 4's runs in fp32, each run's last loss checked against the copying
/// backend's.
fn resident_throughput(a: &Args, t0: std::time::Instant, rep: &mut Report, device: &str, on: &str) {
    if device == "cuda-hmm" {
        // As `tokenmill train` does for cuda-hmm; the check's last training, so the rest of
        // it keeps its allocator.
        crate::alloc::fresh_pages();
    }
    let peak = |p: &str| gemm_peak(&rep.gemm, p);
    let spec = crate::commands::doctor_train::ThroughputSpec {
        precisions: vec!["fp32".into()],
        deadline: deadline(a, t0),
        ..speed_spec(a)
    };
    let skipped = &mut rep.skipped;
    let result = catch(|| {
        crate::commands::doctor_train::throughput(&a.out, &spec, a.seed, device, &peak, skipped)
    });
    // The allocator stops making managed blocks (the ones made stay valid) and gives the kept
    // ones back, so that what follows — the HMM runs above all — is on the host's own memory
    // again, with the GPU's memory free.
    tokenmill_cuda::managed::disable();
    tokenmill_cuda::managed::release();
    match result {
        Ok(rows) => {
            print_throughput(&rows);
            for r in &rows {
                let copying = rep.throughput.iter().find(|c| {
                    c.device == "cuda" && c.preset == r.preset && c.precision == r.precision
                });
                if let Some(c) = copying {
                    // fp32's curve tolerance (part 3): cuBLAS may pick other kernels for
                    // other addresses' alignment.
                    let rel = ((r.last_loss - c.last_loss) / c.last_loss).abs();
                    if rel.is_nan() || rel > 1e-3 {
                        rep.errors.push(format!(
                            "{} fp32 on {on}: last loss {} vs {} copying",
                            r.preset, r.last_loss, c.last_loss
                        ));
                    }
                }
            }
            rep.throughput.extend(rows);
        }
        Err(e) => {
            println!("throughput on {on}: {e:#}");
            rep.errors.push(format!("throughput on {on}: {e:#}"));
        }
    }
}

/// Part 7: the NCCL communicator (`[parallel] transport = "nccl"`) on one rank, this GPU:
/// its conformance checks through the real NCCL — the unique id, the communicator, grouped
/// sends and receives to itself, all-gather, broadcast — as CI runs them on 1–4 ranks of the
/// emulated NCCL.
#[cfg(feature = "nccl")]
fn nccl_part(a: &Args, rep: &mut Report) {
    println!("\n7. NCCL on one rank: the communicator's conformance checks");
    let outcomes = catch(|| {
        tokenmill_comm::nccl_available()?;
        let c = tokenmill_comm::NcclComm::new(Box::new(tokenmill_comm::Solo), a.device)?;
        Ok(tokenmill_comm::conformance::run(&c, a.seed)?)
    });
    match outcomes {
        Ok(outcomes) => {
            for (check, r) in outcomes {
                println!(
                    "{check:<40} {}",
                    r.as_ref()
                        .map_or_else(|e| format!("FAIL {e}"), |()| "PASS".into())
                );
                rep.nccl.push(NcclRow {
                    check,
                    pass: r.is_ok(),
                    error: r.err(),
                });
            }
        }
        Err(e) => {
            println!("NCCL: {e:#}");
            rep.errors.push(format!("NCCL: {e:#}"));
        }
    }
}

#[cfg(not(feature = "nccl"))]
fn nccl_part(_: &Args, rep: &mut Report) {
    rep.errors
        .push("NCCL: this binary was built without the nccl feature".into());
}

fn print_rates(what: &str, rows: &[bench::CopyRow]) {
    let width = rows
        .iter()
        .map(|r| r.what.chars().count())
        .fold(46, usize::max);
    println!("{what:<width$} {:>12} {:>10} {:>10}", "bytes", "ms", "GB/s");
    for r in rows {
        println!(
            "{:<width$} {:>12} {:>10.2} {:>10.1}",
            r.what, r.bytes, r.ms, r.gb_per_s
        );
    }
}

fn print_throughput(rows: &[crate::commands::doctor_train::Throughput]) {
    println!(
        "{:<8} {:<6} {:>10} {:>10} {:>12} {:>10} {:>14} {:>7} {:>10} {:>12} {:>10} {:>14} {:>11} {:>11}",
        "preset",
        "prec",
        "params",
        "activated",
        "tokens/s",
        "step ms",
        "GEMM peak TF",
        "MFU",
        "last loss",
        "copies/step",
        "GB/step",
        "copy s (est.)",
        "waits/step",
        "blocked ms"
    );
    for r in rows {
        let or_dash =
            |v: Option<f64>, prec: usize| v.map_or("–".into(), |x| format!("{x:.prec$}"));
        println!(
            "{:<8} {:<6} {:>9.1}M {:>9.1}M {:>12.0} {:>10.1} {:>14} {:>7} {:>10.4} {:>12} {:>10} {:>14} {:>11} {:>11}",
            r.preset,
            r.precision,
            r.params as f64 / 1e6,
            r.activated as f64 / 1e6,
            r.tokens_per_s,
            r.step_ms,
            r.peak_flops
                .map_or("–".into(), |p| format!("{:.1}", p / 1e12)),
            r.mfu.map_or("–".into(), |m| format!("{:.1}%", 100.0 * m)),
            r.last_loss,
            or_dash(r.copies_per_step, 0),
            or_dash(
                r.to_device_gb_per_step
                    .zip(r.to_host_gb_per_step)
                    .map(|(u, d)| u + d),
                2
            ),
            or_dash(r.copy_s_per_step, 2),
            or_dash(r.waits_per_step, 0),
            or_dash(r.blocked_ms_per_step, 1)
        );
    }
}

fn print_curves(curves: &[Curve]) {
    println!(
        "{:<8} {:>12} {:>12} {:>10} {:>8} {:>12} {:>12} {:>6}  result",
        "prec", "cpu loss", "gpu loss", "max rel", "tol", "gpu tok/s", "cpu tok/s", "MFU"
    );
    for c in curves {
        println!(
            "{:<8} {:>12.5} {:>12.5} {:>10.2e} {:>8.0e} {:>12.0} {:>12.0} {:>5.1}%  {}",
            c.precision,
            c.cpu.last().copied().unwrap_or(f64::NAN),
            c.gpu.last().copied().unwrap_or(f64::NAN),
            c.max_rel,
            c.tol,
            c.tokens_per_s.0,
            c.tokens_per_s.1,
            100.0 * c.gpu_mfu,
            if c.pass { "PASS" } else { "FAIL" }
        );
    }
}
