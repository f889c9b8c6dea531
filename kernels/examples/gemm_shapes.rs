//! Times the f32 and BF16 GEMMs on the shapes of one training step (the `small` preset's output
//! head at 8 × 512 tokens and a block's projections), with buffers touched beforehand.
//!
//! `cargo run --profile perf -p tokenmill-kernels --example gemm_shapes [threads] [filter]`
//! (`filter`: only the shapes whose name contains it, e.g. `wgrad`, for profiling one).

use std::time::Instant;

use tokenmill_kernels::backend::LowpGemm;
use tokenmill_kernels::backend::MatMul;
use tokenmill_kernels::cpu::{lowp, matmul};

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("threads"))
        .unwrap_or(2);
    let filter = std::env::args().nth(2).unwrap_or_default();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("pool");
    let (t, v, d) = (4096, 50304, 256);
    let shapes = [
        (
            "head fwd  X·Wᵀ",
            MatMul {
                m: t,
                n: v,
                k: d,
                ta: false,
                tb: true,
                accumulate: false,
            },
        ),
        (
            "head dgrad G·W",
            MatMul {
                m: t,
                n: d,
                k: v,
                ta: false,
                tb: false,
                accumulate: false,
            },
        ),
        (
            "head wgrad Gᵀ·X",
            MatMul {
                m: v,
                n: d,
                k: t,
                ta: true,
                tb: false,
                accumulate: true,
            },
        ),
        (
            "ffn up X·Wᵀ",
            MatMul {
                m: t,
                n: 768,
                k: d,
                ta: false,
                tb: true,
                accumulate: false,
            },
        ),
        (
            "ffn down dgrad",
            MatMul {
                m: t,
                n: d,
                k: 768,
                ta: false,
                tb: false,
                accumulate: false,
            },
        ),
        (
            "ffn wgrad",
            MatMul {
                m: 768,
                n: d,
                k: t,
                ta: true,
                tb: false,
                accumulate: true,
            },
        ),
        (
            "square 2048",
            MatMul {
                m: 2048,
                n: 2048,
                k: 2048,
                ta: false,
                tb: true,
                accumulate: false,
            },
        ),
    ];
    if let Some(u) = tokenmill_kernels::cpu::bf16gemm::unit() {
        let peak = tokenmill_kernels::cpu::bf16gemm::peak_gflops(u, 0.3).unwrap_or(0.0);
        println!(
            "BF16 on {}: measured peak {:.0} GFLOP/s per core",
            u.name(),
            peak
        );
    }
    println!(
        "{:<18} {:>7} {:>7} {:>7} {:>10} {:>10}",
        "shape", "m", "n", "k", "f32 GF/s", "bf16 GF/s"
    );
    for (name, p) in shapes {
        if !name.contains(filter.as_str()) {
            continue;
        }
        let a: Vec<f32> = (0..p.m * p.k)
            .map(|i| ((i % 17) as f32 - 8.0) * 0.01)
            .collect();
        let b: Vec<f32> = (0..p.k * p.n)
            .map(|i| ((i % 13) as f32 - 6.0) * 0.01)
            .collect();
        let mut c = vec![0.0f32; p.m * p.n];
        let flops = 2.0 * (p.m * p.n * p.k) as f64;
        let time = |f: &mut dyn FnMut(&mut [f32])| {
            let mut c = c.clone();
            f(&mut c);
            let mut best = f64::MAX;
            for _ in 0..3 {
                let s = Instant::now();
                f(&mut c);
                best = best.min(s.elapsed().as_secs_f64());
            }
            flops / best / 1e9
        };
        let f32r = time(&mut |c| matmul::matmul(p, &a, &b, c));
        let bf = time(&mut |c| {
            lowp::matmul_lowp_fast(p, &a, &b, c, LowpGemm::Bf16);
        });
        c[0] = 0.0;
        println!(
            "{name:<18} {:>7} {:>7} {:>7} {f32r:>10.1} {bf:>10.1}",
            p.m, p.n, p.k
        );
    }
}
