//! topk.cu: `topk_f32` against kernels/src/cpu/topk.rs (indices bit for bit, with ties, ±0,
//! NaN and infinities, k > n; the order the router's selections use), and `moe_route_f32`
//! against the seam's CPU router (kernels/src/cpu/route.rs), scores, experts and gates bit for
//! bit.
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::backend::Route;
use tokenmill_kernels::cpu;
use tokenmill_kernels::cpu::topk::{topk, topk_ref};
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn topk_f32(scores: *const f32, rows: i32, n: i32, k: i32, out: *mut i32);
    fn moe_route_f32(
        logits: *const f32,
        bias: *const f32,
        tokens: i32,
        experts: i32,
        groups: i32,
        topk_groups: i32,
        k: i32,
        scale: f32,
        norm: i32,
        idx: *mut i32,
        weights: *mut f32,
        scores: *mut f32,
    );
}

/// Rows (tokens) per block: one warp each.
const WARPS: usize = 4;

fn gpu_topk(scores: &[f32], rows: usize, n: usize, k: usize) -> Vec<i32> {
    let mut out = vec![-7i32; rows * k];
    let (sp, op) = (Ptr::of_const(scores), Ptr::of(&mut out));
    launch(
        (rows.div_ceil(WARPS) as u32, 1, 1),
        (32 * WARPS as u32, 1, 1),
        0,
        || {
            // SAFETY: scores: rows × n, out: rows × k, alive for the launch.
            unsafe { topk_f32(sp.c(), rows as i32, n as i32, k as i32, op.p()) }
        },
    );
    out
}

fn check_topk(scores: &[f32], rows: usize, n: usize, k: usize, what: &str) {
    let got = gpu_topk(scores, rows, n, k);
    let (mut r, mut f) = (Vec::new(), Vec::new());
    for row in 0..rows {
        topk_ref(&scores[row * n..(row + 1) * n], k, &mut r);
        topk(&scores[row * n..(row + 1) * n], k, &mut f);
        assert_eq!(r, f, "the CPU's fast top-k is its reference");
        let want: Vec<i32> = (0..k).map(|j| r.get(j).map_or(-1, |&i| i as i32)).collect();
        assert_eq!(
            &got[row * k..(row + 1) * k],
            &want[..],
            "{what}: row {row} of {:?}",
            &scores[row * n..(row + 1) * n]
        );
    }
}

#[test]
fn topk_random_rows() {
    let mut rng = Rng::new(12);
    for (rows, n, k) in [
        (5, 256, 8),
        (9, 8, 4),
        (3, 1000, 20),
        (2, 33, 33),
        (1, 1, 1),
    ] {
        let s: Vec<f32> = (0..rows * n).map(|_| rng.normal() as f32).collect();
        check_topk(&s, rows, n, k, &format!("{rows}×{n} k {k}"));
    }
}

#[test]
fn topk_ties_signed_zeros_and_non_finite_values() {
    let mut rng = Rng::new(13);
    // Values from a set of five: many ties, which go to the lower index.
    let (rows, n, k) = (6, 100, 12);
    let s: Vec<f32> = (0..rows * n)
        .map(|_| [0.0, -0.0, 1.0, -2.5, 1.0][rng.below(5)])
        .collect();
    check_topk(&s, rows, n, k, "ties");
    // NaN after every number (NaNs by index), ±inf ordinary.
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        0.0,
        1.0,
        -f32::NAN,
        f32::MAX,
    ];
    let s: Vec<f32> = (0..rows * 40)
        .map(|_| specials[rng.below(specials.len())])
        .collect();
    check_topk(&s, rows, 40, 40, "specials, every element");
    check_topk(&s, rows, 40, 5, "specials");
    // All NaN.
    check_topk(&[f32::NAN; 50], 1, 50, 4, "all NaN");
}

#[test]
fn topk_k_beyond_the_row_pads_with_minus_one() {
    let s = [3.0f32, 1.0, 2.0, 1.0, 5.0, 0.0, -1.0];
    check_topk(&s, 1, 7, 10, "k > n");
    assert_eq!(gpu_topk(&s, 1, 7, 9), vec![4, 0, 2, 1, 3, 5, 6, -1, -1]);
}

/// The seam's CPU router (reference), as (scores, idx, gates).
fn route_ref(r: Route, logits: &[f32], bias: &[f32]) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let n = logits.len() / r.experts;
    let (mut s, mut i, mut g) = (
        vec![0f32; logits.len()],
        vec![0u32; n * r.k],
        vec![0f32; n * r.k],
    );
    cpu::route::route_ref(r, logits, bias, &mut s, &mut i, &mut g);
    (s, i, g)
}

fn gpu_route(r: Route, logits: &[f32], bias: &[f32]) -> (Vec<f32>, Vec<i32>, Vec<f32>) {
    let (e, k) = (r.experts, r.k);
    let n = logits.len() / e;
    let (mut scores, mut idx, mut w) = (vec![0f32; n * e], vec![-7i32; n * k], vec![0f32; n * k]);
    let (lp, bp, sp, ip, wp) = (
        Ptr::of_const(logits),
        Ptr::of_const(bias),
        Ptr::of(&mut scores),
        Ptr::of(&mut idx),
        Ptr::of(&mut w),
    );
    launch(
        (n.div_ceil(WARPS) as u32, 1, 1),
        (32 * WARPS as u32, 1, 1),
        WARPS * 16 * e,
        || {
            // SAFETY: logits, scores: n × e; bias: e; idx, weights: n × k; the dynamic
            // shared memory 4 warps × 16 bytes × e; alive for the launch.
            unsafe {
                moe_route_f32(
                    lp.c(),
                    bp.c(),
                    n as i32,
                    e as i32,
                    r.groups as i32,
                    r.topk_groups as i32,
                    k as i32,
                    r.scale as f32,
                    i32::from(r.norm),
                    ip.p(),
                    wp.p(),
                    sp.p(),
                )
            }
        },
    );
    (scores, idx, w)
}

fn check_route(r: Route, logits: &[f32], bias: &[f32], what: &str) {
    let (s, idx, w) = gpu_route(r, logits, bias);
    let (rs, ridx, rw) = route_ref(r, logits, bias);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&s), bits(&rs), "{what}: scores");
    let ridx: Vec<i32> = ridx.iter().map(|&i| i as i32).collect();
    assert_eq!(idx, ridx, "{what}: experts");
    assert_eq!(bits(&w), bits(&rw), "{what}: weights");
}

const DSV3: Route = Route::DEEPSEEK_V3;

#[test]
fn route_like_deepseek_v3() {
    let mut rng = Rng::new(14);
    let tokens = 6;
    let logits: Vec<f32> = (0..tokens * 256).map(|_| rng.normal() as f32).collect();
    let bias: Vec<f32> = (0..256).map(|_| rng.normal() as f32 * 0.05).collect();
    check_route(DSV3, &logits, &bias, "DeepSeek-V3 shape");
    let plain = Route {
        norm: false,
        scale: 1.0,
        ..DSV3
    };
    check_route(plain, &logits, &bias, "no normalisation");
}

#[test]
fn route_small_shapes_and_a_single_group() {
    let mut rng = Rng::new(15);
    for r in [
        Route {
            experts: 16,
            groups: 4,
            topk_groups: 2,
            k: 3,
            scale: 1.0,
            norm: true,
        },
        Route {
            experts: 64,
            groups: 1,
            topk_groups: 1,
            k: 6,
            scale: 2.0,
            norm: true,
        },
        Route {
            experts: 8,
            groups: 8,
            topk_groups: 3,
            k: 3,
            scale: 1.0,
            norm: true,
        }, // groups of one: scored by their single expert
        Route {
            experts: 40,
            groups: 2,
            topk_groups: 1,
            k: 20,
            scale: 1.5,
            norm: true,
        }, // every expert of the chosen group
        Route {
            experts: 12,
            groups: 4,
            topk_groups: 1,
            k: 5,
            scale: 1.0,
            norm: true,
        }, // k beyond the chosen group: −inf experts of other groups, by index
    ] {
        let tokens = 5;
        let logits: Vec<f32> = (0..tokens * r.experts)
            .map(|_| rng.normal() as f32 * 2.0)
            .collect();
        let bias: Vec<f32> = (0..r.experts).map(|_| rng.normal() as f32 * 0.1).collect();
        check_route(r, &logits, &bias, &format!("{r:?}"));
    }
}

#[test]
fn route_ties_between_experts_and_groups() {
    let mut rng = Rng::new(16);
    let tokens = 9;
    // Few distinct logits and a bias of a few values: tied scores, tied group scores.
    let logits: Vec<f32> = (0..tokens * 256)
        .map(|_| [0.0, 1.0, -1.0, 2.0][rng.below(4)])
        .collect();
    let bias: Vec<f32> = (0..256).map(|i| [0.0, 0.25][i % 3 / 2]).collect();
    check_route(DSV3, &logits, &bias, "ties");
    // Every score equal: the lowest groups and experts win.
    check_route(DSV3, &vec![0.5; 4 * 256], &[0.0; 256], "all equal");
    // Saturated sigmoids (scores 0 and 1) and a token with extreme logits.
    let logits: Vec<f32> = (0..3 * 256)
        .map(|_| [-200.0, 200.0, 0.0, -30.0][rng.below(4)])
        .collect();
    check_route(DSV3, &logits, &bias, "saturated");
}
