//! The emulator itself: a grid-stride elementwise kernel and block reductions.
use tokenmill_cuda_emu::{Ptr, launch};

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn swiglu_fwd_f32(g: *const f32, u: *const f32, h: *mut f32, n: i64);
}

#[test]
fn swiglu_forward_matches_the_cpu_reference() {
    let n = 1000;
    let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
    let u: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
    let mut h = vec![0f32; n];
    let (gp, up, hp) = (Ptr::of_const(&g), Ptr::of_const(&u), Ptr::of(&mut h));
    launch((3, 1, 1), (64, 1, 1), 0, || {
        // SAFETY: buffers of n elements, alive for the launch.
        unsafe { swiglu_fwd_f32(gp.c(), up.c(), hp.p(), n as i64) }
    });
    let mut r = vec![0f32; n];
    tokenmill_kernels::cpu::swiglu::swiglu_fwd_ref(&g, &u, &mut r);
    for i in 0..n {
        assert!(
            (h[i] - r[i]).abs() <= 1e-6 * r[i].abs().max(1.0),
            "{i}: {} vs {}",
            h[i],
            r[i]
        );
    }
}
