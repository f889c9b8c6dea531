//! `moe_route_bwd_f32` (topk.cu) against the CPU router's backward (kernels/src/cpu/route.rs),
//! bit for bit: gates normalised or not, with and without the sequence-wise balance loss (its
//! sums in f64), at DeepSeek-V3's and the 1b preset's settings and at a count of experts that
//! leaves the last run of 32 short, with fewer warps than tokens (in one block and across two)
//! and an expert picked twice;
//! and on inputs where the order of the balance loss's sum decides the result.
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::backend::{Balance, Route};
use tokenmill_kernels::cpu::route::{route_bwd_ref, route_ref};
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn moe_route_bwd_f32(
        scores: *const f32,
        idx: *const u32,
        dgates: *const f32,
        coef: *const f64,
        tokens: i64,
        experts: i32,
        k: i32,
        seq: i32,
        denom: f64,
        route_scale: f32,
        norm_topk: i32,
        ds: *mut f32,
    );
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The kernel's ds `[n, experts]` for scores `[n, experts]`, idx and dgates `[n, k]` and, with
/// `coef` `[n / seq, experts]`, the balance loss over `sequences` sequences; `grid` blocks of
/// `block` threads, so a warp takes several tokens when `grid · block / 32 < n`.
fn kernel(
    r: Route,
    (s, idx, dg): (&[f32], &[u32], &[f32]),
    coef: Option<&[f64]>,
    seq: usize,
    sequences: usize,
    (grid, block): (u32, u32),
) -> Vec<f32> {
    let n = s.len() / r.experts;
    let mut got = vec![f32::NAN; s.len()];
    let cp = coef.map_or(Ptr(std::ptr::null_mut()), Ptr::of_const);
    let (sp, ip, gp, dp) = (
        Ptr::of_const(s),
        Ptr::of_const(idx),
        Ptr::of_const(dg),
        Ptr::of(&mut got),
    );
    launch((grid, 1, 1), (block, 1, 1), 0, || {
        // SAFETY: scores and ds [n, e], idx and dgates [n, k] with every expert < e (the
        // callers' CPU reference checks it first), coef null or [n / seq, e]; all alive for
        // the launch.
        unsafe {
            moe_route_bwd_f32(
                sp.c(),
                ip.c(),
                gp.c(),
                cp.c(),
                n as i64,
                r.experts as i32,
                r.k as i32,
                seq as i32,
                (seq * sequences) as f64,
                r.scale as f32,
                i32::from(r.norm),
                dp.p(),
            )
        }
    });
    got
}

#[test]
fn the_router_backward_gives_the_cpu_bits() {
    let mut rng = Rng::new(31);
    let b1 = Route {
        experts: 64,
        k: 6,
        ..Route::DEEPSEEK_V3
    };
    let plain = Route { norm: false, ..b1 };
    // 72 = 2 · 32 + 8: the warp's last run of experts is 8 lanes long.
    let odd = Route {
        experts: 72,
        groups: 4,
        topk_groups: 2,
        ..b1
    };
    for (r, balanced) in [
        (Route::DEEPSEEK_V3, true),
        (b1, false),
        (b1, true),
        (plain, true),
        (odd, true),
        (Route { norm: false, ..odd }, true),
    ] {
        let (seq, b) = (9, 3);
        let n = seq * b;
        let e = r.experts;
        let logits: Vec<f32> = (0..n * e).map(|_| rng.normal() as f32).collect();
        let bias: Vec<f32> = (0..e).map(|_| 0.05 * rng.normal() as f32).collect();
        let (mut s, mut idx, mut g) = (vec![0.0; n * e], vec![0u32; n * r.k], vec![0.0; n * r.k]);
        route_ref(r, &logits, &bias, &mut s, &mut idx, &mut g);
        // The backward adds a gate's gradient per pick: token 0's first expert picked twice
        // gets both, in order (the router never repeats one; the arithmetic must not assume it).
        idx[1] = idx[0];
        let dg: Vec<f32> = (0..n * r.k).map(|_| rng.normal() as f32).collect();
        let coef: Vec<f64> = (0..b * e).map(|_| 1e-3 * rng.uniform()).collect();
        let balance = balanced.then_some(Balance {
            coef: &coef,
            seq,
            sequences: b + 1,
        });
        let mut want = vec![0.0f32; n * e];
        route_bwd_ref(r, &s, &idx, &dg, balance, &mut want);
        // One warp, two, eight (27 tokens: each warp takes several), and two blocks of two
        // warps striding over the grid.
        for launch in [(1u32, 32u32), (1, 64), (1, 256), (2, 64)] {
            let got = kernel(
                r,
                (&s, &idx, &dg),
                balanced.then_some(&coef[..]),
                seq,
                b + 1,
                launch,
            );
            assert_eq!(
                bits(&got),
                bits(&want),
                "{r:?} balance {balanced} grid and block {launch:?}"
            );
        }
    }
}

/// With random coefficients the balance loss's f64 sum gives the same f32 gradients in almost
/// any order, so the test above would not see the warp add its terms out of order. Here two
/// terms of ±2⁴⁰·s/(S·B·Z) (about ±4·10⁹; expert 5, lane 5 of the first run, and expert 40,
/// lane 8 of the second) cancel, and the small terms (about 2·10⁻⁶) added between them are
/// rounded to the big ones' ulp (about 5·10⁻⁷), so the sum depends on where each is added: the
/// index-order sum differs from the backwards one (asserted first), and so do nearly all the
/// gradients.
#[test]
fn the_balance_sum_adds_its_terms_in_index_order() {
    let mut rng = Rng::new(7);
    let r = Route {
        experts: 72,
        groups: 1,
        topk_groups: 1,
        k: 4,
        ..Route::DEEPSEEK_V3
    };
    let (e, seq, b) = (r.experts, 2, 2);
    let n = seq * b;
    let mut s: Vec<f32> = (0..n * e)
        .map(|_| 0.25 + 0.5 * rng.uniform() as f32)
        .collect();
    let idx: Vec<u32> = (0..n * r.k).map(|j| (j * 7 % e) as u32).collect();
    let dg: Vec<f32> = (0..n * r.k).map(|_| rng.normal() as f32).collect();
    let mut coef: Vec<f64> = (0..b * e).map(|_| 1e-3 * rng.uniform()).collect();
    for q in 0..b {
        coef[q * e + 5] = 2f64.powi(40);
        coef[q * e + 40] = -(2f64.powi(40));
    }
    for t in 0..n {
        s[t * e + 40] = s[t * e + 5];
    }
    // The input must tell the orders apart: token 0's sum forwards and backwards.
    let denom = (seq * b) as f64;
    let z: f64 = s[..e].iter().map(|&v| f64::from(v)).sum();
    let term = |i: usize| coef[i] / denom * f64::from(s[i]) / z;
    let forwards: f64 = (0..e).map(term).sum();
    let backwards: f64 = (0..e).rev().map(term).sum();
    assert!(
        (forwards - backwards).abs() > 1e-3 * forwards.abs(),
        "{forwards} against {backwards}: the input does not tell the orders apart"
    );
    let balance = Balance {
        coef: &coef,
        seq,
        sequences: b,
    };
    let mut want = vec![0.0f32; n * e];
    route_bwd_ref(r, &s, &idx, &dg, Some(balance), &mut want);
    for launch in [(1u32, 32u32), (1, 128), (2, 32)] {
        let got = kernel(r, (&s, &idx, &dg), Some(&coef), seq, b, launch);
        assert_eq!(bits(&got), bits(&want), "grid and block {launch:?}");
    }
}
