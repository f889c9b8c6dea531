//! norm.cu against kernels/src/cpu/norm.rs: RMSNorm forward, input gradient (written and
//! accumulated) and weight gradient, on row widths that are not multiples of the block, tiny
//! rows, large magnitudes and non-finite inputs.
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::cpu::norm::{
    rmsnorm_bwd_input_ref, rmsnorm_bwd_weight_ref, rmsnorm_fwd_ref,
};
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn rmsnorm_fwd_f32(
        x: *const f32,
        w: *const f32,
        eps: f32,
        y: *mut f32,
        rstd: *mut f32,
        rows: i32,
        d: i32,
    );
    fn rmsnorm_bwd_input_f32(
        x: *const f32,
        w: *const f32,
        rstd: *const f32,
        dy: *const f32,
        dx: *mut f32,
        rows: i32,
        d: i32,
        accumulate: i32,
    );
    fn rmsnorm_bwd_weight_f32(
        x: *const f32,
        rstd: *const f32,
        dy: *const f32,
        dw: *mut f32,
        rows: i32,
        d: i32,
    );
}

const BLOCK: u32 = 256;

fn normal(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32 * scale).collect()
}

/// `a` equals `b` within `tol` relative to `max(|b|, floor)`, NaN matching NaN.
fn close(a: f32, b: f32, tol: f32, floor: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol * b.abs().max(floor)
}

fn fwd(x: &[f32], w: &[f32], eps: f32, rows: usize) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let (mut y, mut rstd) = (vec![0f32; rows * d], vec![0f32; rows]);
    let (xp, wp, yp, rp) = (
        Ptr::of_const(x),
        Ptr::of_const(w),
        Ptr::of(&mut y),
        Ptr::of(&mut rstd),
    );
    launch((rows as u32, 1, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: x, y: rows × d, w: d, rstd: rows, alive for the launch.
        unsafe { rmsnorm_fwd_f32(xp.c(), wp.c(), eps, yp.p(), rp.p(), rows as i32, d as i32) }
    });
    (y, rstd)
}

fn check_fwd(x: &[f32], w: &[f32], eps: f64, rows: usize, what: &str) {
    let d = w.len();
    let (y, rstd) = fwd(x, w, eps as f32, rows);
    let (mut ry, mut rr) = (vec![0f32; rows * d], vec![0f32; rows]);
    rmsnorm_fwd_ref(x, w, eps, &mut ry, &mut rr);
    for r in 0..rows {
        assert!(
            close(rstd[r], rr[r], 1e-5, 0.0),
            "{what}: rstd[{r}] {} vs {}",
            rstd[r],
            rr[r]
        );
    }
    for i in 0..rows * d {
        assert!(
            close(y[i], ry[i], 2e-5, 1e-30),
            "{what}: y[{i}] {} vs {}",
            y[i],
            ry[i]
        );
    }
}

#[test]
fn forward_matches_the_reference() {
    let mut rng = Rng::new(1);
    for (rows, d) in [(3, 300), (4, 7), (2, 256), (2, 1000), (1, 1)] {
        let x = normal(&mut rng, rows * d, 1.5);
        let w = normal(&mut rng, d, 1.0);
        check_fwd(&x, &w, 1e-6, rows, &format!("{rows}×{d}"));
    }
    // Large and tiny magnitudes: the squares near the top of the f32 range, and below eps.
    let d = 300;
    let x = normal(&mut rng, 2 * d, 1e17);
    let w = normal(&mut rng, d, 1.0);
    check_fwd(&x, &w, 1e-6, 2, "large");
    let x = normal(&mut rng, 2 * d, 1e-5);
    check_fwd(&x, &w, 1e-6, 2, "tiny");
}

#[test]
fn forward_propagates_non_finite_inputs_as_the_reference() {
    let mut rng = Rng::new(2);
    let (rows, d) = (4, 100);
    let mut x = normal(&mut rng, rows * d, 1.0);
    let w = normal(&mut rng, d, 1.0);
    x[3] = f32::NAN; // row 0: every output NaN
    x[d + 50] = f32::INFINITY; // row 1: rstd 0, the infinite element NaN (inf · 0)
    x[2 * d + 10] = 1e30; // row 2: the sum of squares overflows
    check_fwd(&x, &w, 1e-6, rows, "non-finite");
}

fn bwd_input(
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    rows: usize,
    accumulate: bool,
) {
    let d = w.len();
    let (xp, wp, rp, dyp, dxp) = (
        Ptr::of_const(x),
        Ptr::of_const(w),
        Ptr::of_const(rstd),
        Ptr::of_const(dy),
        Ptr::of(dx),
    );
    launch((rows as u32, 1, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: x, dy, dx: rows × d, w: d, rstd: rows, alive for the launch.
        unsafe {
            rmsnorm_bwd_input_f32(
                xp.c(),
                wp.c(),
                rp.c(),
                dyp.c(),
                dxp.p(),
                rows as i32,
                d as i32,
                i32::from(accumulate),
            )
        }
    });
}

#[test]
fn input_gradient_matches_the_reference_written_and_accumulated() {
    let mut rng = Rng::new(3);
    for (rows, d) in [(3, 300), (5, 33), (2, 512), (1, 1)] {
        let x = normal(&mut rng, rows * d, 2.0);
        let w = normal(&mut rng, d, 1.0);
        let dy = normal(&mut rng, rows * d, 1.0);
        let mut rstd = vec![0f32; rows];
        let mut y = vec![0f32; rows * d];
        rmsnorm_fwd_ref(&x, &w, 1e-6, &mut y, &mut rstd);
        for accumulate in [false, true] {
            let init = normal(&mut rng, rows * d, 1.0);
            let (mut dx, mut rdx) = (init.clone(), init.clone());
            bwd_input(&x, &w, &rstd, &dy, &mut dx, rows, accumulate);
            rmsnorm_bwd_input_ref(&x, &w, &rstd, &dy, &mut rdx, accumulate);
            for r in 0..rows {
                // The scale of the row's terms: the gradient cancels between them.
                let scale = (0..d)
                    .map(|j| (dy[r * d + j] * w[j] * rstd[r]).abs())
                    .fold(0f32, f32::max)
                    + if accumulate { 1.0 } else { 0.0 };
                for j in 0..d {
                    let i = r * d + j;
                    assert!(
                        (dx[i] - rdx[i]).abs() <= 1e-5 * (rdx[i].abs() + scale),
                        "{rows}×{d} acc {accumulate}: dx[{i}] {} vs {}",
                        dx[i],
                        rdx[i]
                    );
                }
            }
        }
    }
}

#[test]
fn weight_gradient_is_the_reference_bit_for_bit() {
    let mut rng = Rng::new(4);
    for (rows, d) in [(7, 300), (3, 5), (20, 256), (1, 513)] {
        let x = normal(&mut rng, rows * d, 3.0);
        let dy = normal(&mut rng, rows * d, 1.0);
        let rstd: Vec<f32> = (0..rows).map(|_| rng.uniform() as f32 + 0.1).collect();
        let init = normal(&mut rng, d, 1.0);
        let (mut dw, mut rdw) = (init.clone(), init);
        let (xp, rp, dyp, dwp) = (
            Ptr::of_const(&x),
            Ptr::of_const(&rstd),
            Ptr::of_const(&dy),
            Ptr::of(&mut dw),
        );
        launch((d.div_ceil(256) as u32, 1, 1), (BLOCK, 1, 1), 0, || {
            // SAFETY: x, dy: rows × d, rstd: rows, dw: d, alive for the launch.
            unsafe {
                rmsnorm_bwd_weight_f32(xp.c(), rp.c(), dyp.c(), dwp.p(), rows as i32, d as i32)
            }
        });
        rmsnorm_bwd_weight_ref(&x, &rstd, &dy, &mut rdw);
        for j in 0..d {
            assert_eq!(
                dw[j].to_bits(),
                rdw[j].to_bits(),
                "{rows}×{d}: dw[{j}] {} vs {}",
                dw[j],
                rdw[j]
            );
        }
    }
}
