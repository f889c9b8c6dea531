//! `moe_route_bwd_f32` (topk.cu) against the CPU router's backward (kernels/src/cpu/route.rs),
//! bit for bit: gates normalised or not, with and without the sequence-wise balance loss (its
//! sums in f64), at DeepSeek-V3's and the 1b preset's settings, fewer threads than tokens.
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::backend::{Balance, Route};
use tokenmill_kernels::cpu::route::{route_bwd_ref, route_ref};
use tokenmill_kernels::rng::Rng;

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

#[test]
fn the_router_backward_gives_the_cpu_bits() {
    let mut rng = Rng::new(31);
    let b1 = Route {
        experts: 64,
        k: 6,
        ..Route::DEEPSEEK_V3
    };
    let plain = Route { norm: false, ..b1 };
    for (r, balanced) in [
        (Route::DEEPSEEK_V3, true),
        (b1, false),
        (b1, true),
        (plain, true),
    ] {
        let (seq, b) = (9, 3);
        let n = seq * b;
        let e = r.experts;
        let logits: Vec<f32> = (0..n * e).map(|_| rng.normal() as f32).collect();
        let bias: Vec<f32> = (0..e).map(|_| 0.05 * rng.normal() as f32).collect();
        let (mut s, mut idx, mut g) = (vec![0.0; n * e], vec![0u32; n * r.k], vec![0.0; n * r.k]);
        route_ref(r, &logits, &bias, &mut s, &mut idx, &mut g);
        let dg: Vec<f32> = (0..n * r.k).map(|_| rng.normal() as f32).collect();
        let coef: Vec<f64> = (0..b * e).map(|_| 1e-3 * rng.uniform()).collect();
        let balance = balanced.then_some(Balance {
            coef: &coef,
            seq,
            sequences: b + 1,
        });
        let mut want = vec![0.0f32; n * e];
        route_bwd_ref(r, &s, &idx, &dg, balance, &mut want);
        let cp = if balanced {
            Ptr::of_const(&coef[..])
        } else {
            Ptr(std::ptr::null_mut())
        };
        let denom = (seq * (b + 1)) as f64;
        for block in [32u32, 256] {
            let mut got = vec![f32::NAN; n * e];
            let (sp, ip, gp, dp) = (
                Ptr::of_const(&s),
                Ptr::of_const(&idx),
                Ptr::of_const(&dg),
                Ptr::of(&mut got),
            );
            launch((1, 1, 1), (block, 1, 1), 0, || {
                // SAFETY: scores and ds [n, e], idx and dgates [n, k] with every expert < e,
                // coef null or [b, e]; all alive for the launch.
                unsafe {
                    moe_route_bwd_f32(
                        sp.c(),
                        ip.c(),
                        gp.c(),
                        cp.c(),
                        n as i64,
                        e as i32,
                        r.k as i32,
                        seq as i32,
                        denom,
                        r.scale as f32,
                        i32::from(r.norm),
                        dp.p(),
                    )
                }
            });
            assert_eq!(
                bits(&got),
                bits(&want),
                "{r:?} balance {balanced} block {block}"
            );
        }
    }
}
