//! optim.cu against the CPU's optimizer kernels (kernels/src/cpu/optim.rs), bit for bit: AdamW
//! over several steps with every element kind, BF16 moments and a clip scale; sums of squares
//! over segments of awkward lengths.
use std::ops::Range;

use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::backend::AdamStep;
use tokenmill_kernels::cpu::optim::{adamw_ref, sum_squares_ref};
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn adamw_f32(
        p: *mut f32,
        g: *const f32,
        m: *mut f32,
        v: *mut f32,
        kind: *const u8,
        n: i64,
        step_size: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        bc2_sqrt: f32,
        decay: f32,
        grad_scale: f32,
        bf16_moments: i32,
    );
    fn sum_squares_f32(x: *const f32, seg: *const i64, out: *mut f64);
}

const BLOCK: u32 = 256;

#[derive(Debug, Clone, PartialEq)]
struct State {
    p: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// The launch of `Cuda::adamw` (kernels/cuda/src/backend.rs) on `grid` blocks (its four
/// elements a thread a pass: one pass or more, the last partly past the end).
fn step_gpu(s: AdamStep, kind: &[u8], st: &mut State, g: &[f32], grid: u32) {
    let n = st.p.len();
    let (pp, gp, mp, vp, kp) = (
        Ptr::of(&mut st.p),
        Ptr::of_const(g),
        Ptr::of(&mut st.m),
        Ptr::of(&mut st.v),
        Ptr::of_const(kind),
    );
    let bf = i32::from(s.bf16_moments);
    launch((grid, 1, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: p, g, m, v, kind: n elements each, alive for the launch.
        unsafe {
            adamw_f32(
                pp.p(),
                gp.c(),
                mp.p(),
                vp.p(),
                kp.c(),
                n as i64,
                s.step_size,
                s.beta1,
                s.beta2,
                s.eps,
                s.bc2_sqrt,
                s.decay,
                s.grad_scale,
                bf,
            )
        }
    });
}

fn bits(s: &State) -> Vec<[u32; 3]> {
    (0..s.p.len())
        .map(|i| [s.p[i].to_bits(), s.m[i].to_bits(), s.v[i].to_bits()])
        .collect()
}

#[test]
fn adamw_steps_are_the_cpus_bit_for_bit() {
    let mut rng = Rng::new(17);
    // Four elements a thread a pass: on two blocks one pass, its last element past the end
    // for most threads; on one block two passes, the second partly past the end.
    let n = 1300;
    let kind: Vec<u8> = (0..n).map(|i| ((i / 5) % 3) as u8).collect();
    for (bf16_moments, clip, grid) in [(false, 1.0, 2), (true, 0.37, 2), (false, 0.5, 1)] {
        let p: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.02).collect();
        let mut a = State {
            p,
            m: vec![0.0; n],
            v: vec![0.0; n],
        };
        let mut b = a.clone();
        let start = a.clone();
        for t in 1..=4u64 {
            let g: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 1e-3).collect();
            let s = AdamStep::new(0.9, 0.95, 1e-8, 0.1, 3e-4 * t as f64, t, clip, bf16_moments);
            adamw_ref(s, &kind, &mut a.p, &g, &mut a.m, &mut a.v);
            step_gpu(s, &kind, &mut b, &g, grid);
            assert_eq!(
                bits(&a),
                bits(&b),
                "step {t}, bf16 moments {bf16_moments}, {grid} blocks"
            );
        }
        for i in 0..n {
            let frozen = kind[i] == AdamStep::FROZEN;
            assert_eq!(b.p[i] == start.p[i] && b.m[i] == 0.0, frozen, "element {i}");
        }
    }
}

fn sums_gpu(x: &[f32], segs: &[Range<usize>]) -> Vec<f64> {
    let table: Vec<i64> = segs
        .iter()
        .flat_map(|r| [r.start as i64, r.end as i64])
        .collect();
    let mut out = vec![f64::NAN; segs.len()];
    let (xp, tp, op) = (Ptr::of_const(x), Ptr::of_const(&table), Ptr::of(&mut out));
    launch((segs.len() as u32, 1, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: x holds every segment (checked by the reference first), the table two
        // entries per segment, out one per block.
        unsafe { sum_squares_f32(xp.c(), tp.c(), op.p()) }
    });
    out
}

#[test]
fn sums_of_squares_are_the_cpus_bit_for_bit() {
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..9000).map(|_| (rng.normal() * 3.0) as f32).collect();
    // Empty, one element, one short of a lane row, one past, several rows, the whole.
    let segs = vec![0..0, 17..18, 100..355, 400..657, 1000..5321, 0..9000];
    let mut want = vec![0.0; segs.len()];
    sum_squares_ref(&x, &segs, &mut want);
    let got = sums_gpu(&x, &segs);
    let b = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(b(&got), b(&want));
    assert_eq!(got[0], 0.0);
}
