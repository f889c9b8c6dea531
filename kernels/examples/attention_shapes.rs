//! Times the fast causal attention (forward, backward) at the `small` preset's shape: 8
//! sequences × 4 heads, 512 tokens, d_qk = 48, d_v = 32 (one layer of a training step).
//!
//! `cargo run --profile perf -p tokenmill-kernels --example attention_shapes [threads] [seq]`

use std::time::Instant;

use tokenmill_kernels::backend::AttnShape;
use tokenmill_kernels::cpu::attention::{attention_bwd, attention_fwd};

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("threads"))
        .unwrap_or(2);
    let seq: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().expect("seq"))
        .unwrap_or(512);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("pool");
    let s = AttnShape {
        bh: 32,
        seq,
        d_qk: 48,
        d_v: 32,
        scale: 1.0 / 48f64.sqrt(),
    };
    let fill = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0 - 1.0) * 0.5)
            .collect()
    };
    let (nq, nv) = (s.bh * s.seq * s.d_qk, s.bh * s.seq * s.d_v);
    let (q, k, v, d_o) = (fill(nq, 1), fill(nq, 2), fill(nv, 3), fill(nv, 4));
    let (mut o, mut lse) = (vec![0f32; nv], vec![0f32; s.bh * s.seq]);
    let (mut dq, mut dk, mut dv) = (vec![0f32; nq], vec![0f32; nq], vec![0f32; nv]);
    // Causal FLOPs actually needed: half of the S × S products.
    let pairs = (s.seq * (s.seq + 1) / 2) as f64 * s.bh as f64;
    let fwd_flops = 2.0 * pairs * (s.d_qk + s.d_v) as f64;
    // Backward: the scores again, dV, dP, dQ, dK.
    let bwd_flops = 2.0 * pairs * (3 * s.d_qk + 2 * s.d_v) as f64;
    let reps = 20;
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..reps {
        let t = Instant::now();
        attention_fwd(s, None, &q, &k, &v, &mut o, &mut lse);
        let f = t.elapsed().as_secs_f64();
        let t = Instant::now();
        attention_bwd(
            s, None, &q, &k, &v, &o, &lse, &d_o, &mut dq, &mut dk, &mut dv,
        );
        let b = t.elapsed().as_secs_f64();
        best = (best.0.min(f), best.1.min(b));
    }
    println!(
        "attention bh {} seq {} d_qk {} d_v {}, {threads} threads, best of {reps}",
        s.bh, s.seq, s.d_qk, s.d_v
    );
    println!(
        "forward  {:7.2} ms  {:6.1} causal GFLOP/s",
        best.0 * 1e3,
        fwd_flops / best.0 / 1e9
    );
    println!(
        "backward {:7.2} ms  {:6.1} causal GFLOP/s",
        best.1 * 1e3,
        bwd_flops / best.1 / 1e9
    );
    println!("checksum {:.6}", o.iter().map(|&x| x as f64).sum::<f64>());
}
