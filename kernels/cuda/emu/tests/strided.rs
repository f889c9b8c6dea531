//! strided.cu against kernels/src/cpu/strided.rs, bit for bit: MLA's head reshapes, a column
//! split, the RoPE key broadcast to every head and its gradient summed over heads (in head
//! order, one thread per element), a residual add, with fewer threads than elements.
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::backend::Strided;
use tokenmill_kernels::cpu::strided::copy_ref;
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn strided_copy_f32(
        src: *const f32,
        dst: *mut f32,
        n0: i64,
        n1: i64,
        n2: i64,
        n3: i64,
        s0: i64,
        s1: i64,
        s2: i64,
        s3: i64,
        src_at: i64,
        t0: i64,
        t1: i64,
        t2: i64,
        t3: i64,
        dst_at: i64,
        accumulate: i32,
    );
}

fn device(c: Strided, src: &[f32], dst: &mut [f32], grid: u32) {
    c.check(src.len(), dst.len());
    let (sp, dp) = (Ptr::of_const(src), Ptr::of(dst));
    let [n, s, t] = [c.dims, c.src, c.dst].map(|a| a.map(|v| v as i64));
    launch((grid, 1, 1), (256, 1, 1), 0, || {
        // SAFETY: `check` put every index of the copy inside src and dst, which outlive the
        // launch.
        unsafe {
            strided_copy_f32(
                sp.c(),
                dp.p(),
                n[0],
                n[1],
                n[2],
                n[3],
                s[0],
                s[1],
                s[2],
                s[3],
                c.src_at as i64,
                t[0],
                t[1],
                t[2],
                t[3],
                c.dst_at as i64,
                i32::from(c.accumulate),
            )
        }
    });
}

#[test]
fn every_layout_of_the_model_gives_the_cpu_bits() {
    let (b, h, s, w) = (2, 3, 5, 12);
    let heads = [b, h, s, w];
    let tokens = [s * h * w, w, h * w, 1];
    let cases = [
        (
            Strided {
                dims: heads,
                src: Strided::dense(heads),
                src_at: 0,
                dst: tokens,
                dst_at: 0,
                accumulate: false,
            },
            b * h * s * w,
            b * h * s * w,
        ),
        (
            Strided {
                dims: heads,
                src: tokens,
                src_at: 0,
                dst: Strided::dense(heads),
                dst_at: 0,
                accumulate: false,
            },
            b * h * s * w,
            b * h * s * w,
        ),
        (
            Strided::columns(b * s, 5, (w, 7), (5, 0)),
            b * s * w,
            b * s * 5,
        ),
        (
            Strided {
                dims: [b, h, s, 4],
                src: [s * 4, 0, 4, 1],
                src_at: 0,
                dst: [h * s * w, s * w, w, 1],
                dst_at: 8,
                accumulate: false,
            },
            b * s * 4,
            b * h * s * w,
        ),
        (
            Strided {
                dims: [b, h, s, 4],
                src: [h * s * w, s * w, w, 1],
                src_at: 8,
                dst: [s * 4, 0, 4, 1],
                dst_at: 0,
                accumulate: true,
            },
            b * h * s * w,
            b * s * 4,
        ),
        (Strided::elementwise(1000, true), 1000, 1000),
    ];
    let mut rng = Rng::new(11);
    for (i, (c, ns, nd)) in cases.into_iter().enumerate() {
        let src: Vec<f32> = (0..ns).map(|_| rng.normal() as f32).collect();
        let init: Vec<f32> = (0..nd).map(|_| rng.normal() as f32).collect();
        let mut want = init.clone();
        copy_ref(c, &src, &mut want);
        for grid in [1, 3, c.written().div_ceil(256) as u32] {
            let mut got = init.clone();
            device(c, &src, &mut got, grid);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "case {i}, grid {grid}: {c:?}");
        }
    }
}
