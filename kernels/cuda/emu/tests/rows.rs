//! rows.cu against kernels/src/cpu/rows.rs, bit for bit: an expert's rows gathered (plain and
//! scaled by the gates) and added back to their tokens (plain and weighted), with fewer blocks
//! than rows and rows wider than a block.
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::cpu::rows::{dot_rows_ref, gather_rows_ref, scatter_add_rows_ref};
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn gather_rows_f32(
        src: *const f32,
        rows: *const u32,
        scale: *const f32,
        dst: *mut f32,
        n: i64,
        d: i32,
    );
    fn dot_rows_f32(
        table: *const f32,
        rows: *const u32,
        src: *const f32,
        out: *mut f32,
        n: i64,
        d: i32,
    );
    fn scatter_add_rows_f32(
        src: *const f32,
        rows: *const u32,
        scale: *const f32,
        dst: *mut f32,
        n: i64,
        d: i32,
    );
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn gathers_and_scatter_adds_give_the_cpu_bits() {
    let mut rng = Rng::new(21);
    for (tokens, d) in [(40, 300), (33, 64)] {
        let table: Vec<f32> = (0..tokens * d).map(|_| rng.normal() as f32).collect();
        let rows: Vec<u32> = (0..tokens as u32).filter(|t| t % 3 != 0).rev().collect();
        let gates: Vec<f32> = rows.iter().map(|_| rng.uniform() as f32).collect();
        for scale in [None, Some(&gates[..])] {
            let sp = scale.map_or(Ptr(std::ptr::null_mut()), Ptr::of_const);
            let mut want = vec![0f32; rows.len() * d];
            gather_rows_ref(&table, d, &rows, scale, &mut want);
            for grid in [1u32, 5, rows.len() as u32] {
                let mut got = vec![0f32; rows.len() * d];
                let (tp, rp, gp) = (
                    Ptr::of_const(&table),
                    Ptr::of_const(&rows),
                    Ptr::of(&mut got),
                );
                let n = rows.len() as i64;
                launch((grid, 1, 1), (256, 1, 1), 0, || {
                    // SAFETY: table [tokens, d] with every row index < tokens; got [n, d];
                    // scale null or n values; all alive for the launch.
                    unsafe { gather_rows_f32(tp.c(), rp.c(), sp.c(), gp.p(), n, d as i32) }
                });
                assert_eq!(bits(&got), bits(&want), "gather {tokens}×{d}, grid {grid}");
            }
            let base: Vec<f32> = (0..tokens * d).map(|_| rng.normal() as f32).collect();
            let mut want2 = base.clone();
            scatter_add_rows_ref(&want, d, &rows, scale, &mut want2);
            for grid in [1u32, 5, rows.len() as u32] {
                let mut got = base.clone();
                let (xp, rp, yp) = (
                    Ptr::of_const(&want),
                    Ptr::of_const(&rows),
                    Ptr::of(&mut got),
                );
                let n = rows.len() as i64;
                launch((grid, 1, 1), (256, 1, 1), 0, || {
                    // SAFETY: src [n, d]; got [tokens, d] with distinct row indices < tokens;
                    // scale null or n values; all alive for the launch.
                    unsafe { scatter_add_rows_f32(xp.c(), rp.c(), sp.c(), yp.p(), n, d as i32) }
                });
                assert_eq!(
                    bits(&got),
                    bits(&want2),
                    "scatter {tokens}×{d}, grid {grid}"
                );
            }
        }
    }
}

#[test]
fn row_dots_give_the_cpu_bits() {
    let mut rng = Rng::new(22);
    let (tokens, d) = (30, 200);
    let table: Vec<f32> = (0..tokens * d).map(|_| rng.normal() as f32).collect();
    let rows: Vec<u32> = (0..tokens as u32).filter(|t| t % 4 != 1).collect();
    let src: Vec<f32> = (0..rows.len() * d).map(|_| rng.normal() as f32).collect();
    let mut want = vec![0f32; rows.len()];
    dot_rows_ref(&table, d, &rows, &src, &mut want);
    for grid in [1u32, 2] {
        let mut got = vec![0f32; rows.len()];
        let (tp, rp, sp, op) = (
            Ptr::of_const(&table),
            Ptr::of_const(&rows),
            Ptr::of_const(&src),
            Ptr::of(&mut got),
        );
        let n = rows.len() as i64;
        launch((grid, 1, 1), (16, 1, 1), 0, || {
            // SAFETY: table [tokens, d] with every row index < tokens; src [n, d]; got [n];
            // all alive for the launch.
            unsafe { dot_rows_f32(tp.c(), rp.c(), sp.c(), op.p(), n, d as i32) }
        });
        assert_eq!(bits(&got), bits(&want), "grid {grid}");
    }
}
