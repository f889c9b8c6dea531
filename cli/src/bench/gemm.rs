//! `tokenmill bench gemm`: the f32 rate of the CPU backend's fast matmul — the own AVX-512
//! kernel (`kernels::cpu::sgemm`) where the CPU has AVX-512, the `gemm` crate elsewhere — beside
//! the `gemm` crate, PyTorch (when a Python with torch is found), the reference triple loop and
//! this CPU's theoretical peak (cores × clock × FLOPs per cycle of its widest FMA units, read
//! from /proc/cpuinfo); then BF16 with FP32 accumulation: AMX tiles, AVX512-BF16, the emulation
//! (operands rounded, own FP32 GEMM) and torch's BF16 matmul (oneDNN), each unit against its peak
//! measured on this machine on registers (`tdpbf16ps` on tiles, `vdpbf16ps` on vectors).

use std::fmt::Write;
use std::time::Instant;

use tokenmill_kernels::backend::LowpGemm;
use tokenmill_kernels::backend::MatMul;
use tokenmill_kernels::cpu::bf16gemm::{self, Bf16Unit};
use tokenmill_kernels::cpu::lowp::matmul_lowp;
use tokenmill_kernels::cpu::matmul::{matmul, matmul_gemm_crate, matmul_ref};
use tokenmill_kernels::cpu::sgemm;

use std::path::{Path, PathBuf};

use anyhow::Result;

/// (GHz, f32 FLOPs per cycle per core, description) from /proc/cpuinfo.
pub fn cpu_peak() -> (f64, f64, String) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mhz = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    // Two FMA pipes: AVX-512 = 2 × 16 lanes × 2 FLOPs; AVX2+FMA = 2 × 8 × 2.
    let per_cycle = if flags.contains(" avx512f") {
        64.0
    } else if flags.contains(" fma") && flags.contains(" avx2") {
        32.0
    } else {
        8.0
    };
    (mhz / 1000.0, per_cycle, model)
}

fn time(f: &mut dyn FnMut(), reps: usize) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

/// The timed product of both tables: `C [n, n] = A · Bᵀ` and its operands.
fn square(n: usize) -> (MatMul, Vec<f32>, Vec<f32>, Vec<f32>) {
    let p = MatMul {
        m: n,
        n,
        k: n,
        ta: false,
        tb: true,
        accumulate: false,
    };
    let a: Vec<f32> = (0..n * n).map(|i| (i % 13) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.2).collect();
    (p, a, b, vec![0f32; n * n])
}

/// PyTorch's matmul rate (GFLOP/s) per size in `dtype` (`float32`, `bfloat16`), when a Python
/// with torch is given.
fn torch_rates(
    python: &std::path::Path,
    sizes: &[usize],
    threads: usize,
    dtype: &str,
) -> Option<Vec<f64>> {
    let code = format!(
        "import torch,time\ntorch.set_num_threads({threads})\nfor n in {sizes:?}:\n a=torch.randn(n,n,dtype=torch.{dtype});b=torch.randn(n,n,dtype=torch.{dtype});a@b\n t=min((lambda s:(a@b,time.perf_counter()-s)[1])(time.perf_counter()) for _ in range(5))\n print(2*n**3/t/1e9)"
    );
    let out = std::process::Command::new(python)
        .args(["-c", &code])
        .output()
        .ok()?;
    let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    (out.status.success() && v.len() == sizes.len()).then_some(v)
}

/// Runs the benchmark and returns the table.
pub fn bench_gemm(
    sizes: &[usize],
    threads: usize,
    python: Option<&std::path::Path>,
) -> Result<String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let (ghz, per_cycle, model) = cpu_peak();
    let peak = ghz * per_cycle * threads as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{model}; {threads} threads × {ghz:.2} GHz × {per_cycle} f32 FLOP/cycle = theoretical peak {peak:.1} GFLOP/s"
    );
    let torch = python.and_then(|py| torch_rates(py, sizes, threads, "float32"));
    let _ = writeln!(
        s,
        "GFLOP/s, C = A·Bᵀ, square n; {}",
        if sgemm::available() {
            "own AVX-512 kernel is the fast path"
        } else {
            "no AVX-512: the gemm crate is the fast path"
        }
    );
    let _ = writeln!(
        s,
        "{:>6} {:>14} {:>8} {:>12} {:>12} {:>10} {:>14}",
        "n", "own AVX-512", "of peak", "gemm crate", "torch (MKL)", "reference", "own/torch"
    );
    pool.install(|| {
        for (i, &n) in sizes.iter().enumerate() {
            let (p, a, b, mut c) = square(n);
            let own = sgemm::available().then(|| {
                p.flops()
                    / time(
                        &mut || {
                            sgemm::sgemm(n, n, n, &a, (n, 1), &b, (1, n), &mut c, false, threads)
                        },
                        5,
                    )
                    / 1e9
            });
            let crate_rate =
                p.flops() / time(&mut || matmul_gemm_crate(p, &a, &b, &mut c, threads), 5) / 1e9;
            let refr = (n <= 256)
                .then(|| p.flops() / time(&mut || matmul_ref(p, &a, &b, &mut c), 1) / 1e9);
            let t = torch.as_ref().map(|v| v[i]);
            let f = |x: Option<f64>| x.map_or("-".into(), |r| format!("{r:.1}"));
            let _ = writeln!(
                s,
                "{n:>6} {:>14} {:>7.0}% {crate_rate:>12.1} {:>12} {:>10} {:>14}",
                f(own),
                100.0 * own.unwrap_or(crate_rate) / peak,
                f(t),
                refr.map_or("-".into(), |r| format!("{r:.2}")),
                own.zip(t)
                    .map_or("-".into(), |(o, t)| format!("{:.2}×", o / t))
            );
        }
    });
    bf16_table(&mut s, &pool, sizes, threads, python);
    Ok(s)
}

/// The BF16 table: each unit this CPU runs (against its measured peak on registers), the
/// emulation and torch.
fn bf16_table(
    s: &mut String,
    pool: &rayon::ThreadPool,
    sizes: &[usize],
    threads: usize,
    python: Option<&std::path::Path>,
) {
    let peak = |u: Bf16Unit| bf16gemm::peak_gflops(u, 0.3).map(|g| g * threads as f64);
    let (amx_peak, avx_peak) = (peak(Bf16Unit::Amx), peak(Bf16Unit::Avx512Bf16));
    let shown = |p: Option<f64>| p.map_or("not here".into(), |p| format!("{p:.0} GFLOP/s"));
    let _ = writeln!(
        s,
        "\nBF16 operands, FP32 accumulation, GFLOP/s, C = A·Bᵀ; measured peaks ({threads} threads, on registers): AMX (tdpbf16ps) {}, AVX512-BF16 (vdpbf16ps) {}",
        shown(amx_peak),
        shown(avx_peak)
    );
    let torch = python.and_then(|py| torch_rates(py, sizes, threads, "bfloat16"));
    let _ = writeln!(
        s,
        "{:>6} {:>10} {:>8} {:>12} {:>8} {:>10} {:>14} {:>11} {:>12}",
        "n",
        "AMX",
        "of peak",
        "AVX512-BF16",
        "of peak",
        "emulated",
        "torch (oneDNN)",
        "best/torch",
        "best/own f32"
    );
    pool.install(|| {
        for (i, &n) in sizes.iter().enumerate() {
            let (p, a, b, mut c) = square(n);
            let mut unit = |u: Bf16Unit| {
                bf16gemm::runs(u).then(|| {
                    p.flops()
                        / time(
                            &mut || {
                                bf16gemm::gemm_bf16(
                                    u,
                                    n,
                                    n,
                                    n,
                                    &a,
                                    (n, 1),
                                    &b,
                                    (1, n),
                                    &mut c,
                                    false,
                                    threads,
                                )
                            },
                            5,
                        )
                        / 1e9
                })
            };
            let (amx, avx) = (unit(Bf16Unit::Amx), unit(Bf16Unit::Avx512Bf16));
            let emulated = p.flops()
                / time(
                    &mut || {
                        matmul_lowp(matmul, p, &a, &b, &mut c, LowpGemm::Bf16);
                    },
                    3,
                )
                / 1e9;
            let f32_rate = p.flops() / time(&mut || matmul(p, &a, &b, &mut c), 3) / 1e9;
            let t = torch.as_ref().map(|v| v[i]);
            let best = amx.or(avx);
            let f = |x: Option<f64>| x.map_or("-".into(), |r| format!("{r:.1}"));
            let of = |x: Option<f64>, p: Option<f64>| {
                x.zip(p)
                    .map_or("-".into(), |(x, p)| format!("{:.0}%", 100.0 * x / p))
            };
            let _ = writeln!(
                s,
                "{n:>6} {:>10} {:>8} {:>12} {:>8} {emulated:>10.1} {:>14} {:>11} {:>12}",
                f(amx),
                of(amx, amx_peak),
                f(avx),
                of(avx, avx_peak),
                f(t),
                best.zip(t)
                    .map_or("-".into(), |(a, t)| format!("{:.2}×", a / t)),
                best.map_or("-".into(), |a| format!("{:.2}×", a / f32_rate)),
            );
        }
    });
}

/// `tokenmill bench gemm`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Square sizes to time (m = n = k), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128,256,512,1024,2048")]
    pub sizes: Vec<usize>,
    /// Threads for every implementation (own kernel, `gemm` crate, torch).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Python with torch for the PyTorch column (default: .venv-peers/bin/python if present).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// Runs `tokenmill bench gemm`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let py = crate::peers::python(a.python, Path::new(""));
    print!("{}", bench_gemm(&a.sizes, a.threads, py.as_deref())?);
    Ok(())
}
