//! embedding.cu against kernels/src/cpu/embedding.rs: the row gather (bit for bit) and the
//! scatter-add of the backward (bit for bit when every id is distinct, within rounding when
//! the atomics add a repeated id's rows in another order).
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::cpu::embedding::{embedding_bwd_ref, embedding_fwd_ref};
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn embedding_fwd_f32(table: *const f32, d: i32, ids: *const u32, y: *mut f32, n_ids: i64);
    fn embedding_bwd_f32(dy: *const f32, d: i32, ids: *const u32, dtable: *mut f32, n_ids: i64);
}

const BLOCK: u32 = 256;

fn normal(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn fwd(table: &[f32], d: usize, ids: &[u32], grid: u32) -> Vec<f32> {
    let mut y = vec![0f32; ids.len() * d];
    let (tp, ip, yp) = (Ptr::of_const(table), Ptr::of_const(ids), Ptr::of(&mut y));
    let n = ids.len() as i64;
    launch((grid, 1, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: table: vocab × d with every id < vocab; y: n × d; alive for the launch.
        unsafe { embedding_fwd_f32(tp.c(), d as i32, ip.c(), yp.p(), n) }
    });
    y
}

fn bwd(dy: &[f32], d: usize, ids: &[u32], dtable: &mut [f32], grid: u32) {
    let (dp, ip, tp) = (Ptr::of_const(dy), Ptr::of_const(ids), Ptr::of(dtable));
    let n = ids.len() as i64;
    launch((grid, 1, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: dy: n × d; dtable: vocab × d with every id < vocab; alive for the launch.
        unsafe { embedding_bwd_f32(dp.c(), d as i32, ip.c(), tp.p(), n) }
    });
}

#[test]
fn forward_gathers_the_rows() {
    let mut rng = Rng::new(6);
    for (vocab, d, n) in [(50, 300, 13), (7, 5, 20), (1000, 256, 4)] {
        let table = normal(&mut rng, vocab * d);
        let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
        let mut r = vec![0f32; n * d];
        embedding_fwd_ref(&table, d, &ids, &mut r);
        // The launch of the comment (one block per row), and fewer blocks than rows.
        assert_eq!(fwd(&table, d, &ids, n as u32), r, "{vocab}×{d}, {n} ids");
        assert_eq!(fwd(&table, d, &ids, 3), r, "{vocab}×{d}, {n} ids, 3 blocks");
    }
}

#[test]
fn backward_scatter_adds_distinct_ids_exactly() {
    let mut rng = Rng::new(7);
    let (vocab, d, n) = (40, 300, 17);
    let mut ids: Vec<u32> = (0..vocab as u32).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i + 1));
    }
    ids.truncate(n);
    let dy = normal(&mut rng, n * d);
    let init = normal(&mut rng, vocab * d);
    let (mut a, mut b) = (init.clone(), init);
    bwd(&dy, d, &ids, &mut a, n as u32);
    embedding_bwd_ref(&dy, d, &ids, &mut b);
    assert_eq!(a, b);
}

#[test]
fn backward_sums_repeated_ids() {
    let mut rng = Rng::new(8);
    let (vocab, d, n) = (5, 70, 40);
    let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
    let dy = normal(&mut rng, n * d);
    let (mut a, mut b) = (vec![0f32; vocab * d], vec![0f32; vocab * d]);
    bwd(&dy, d, &ids, &mut a, 7);
    embedding_bwd_ref(&dy, d, &ids, &mut b);
    for i in 0..vocab * d {
        // Each sum has ~8 terms of magnitude ~1.
        assert!(
            (a[i] - b[i]).abs() <= 1e-5,
            "dtable[{i}] {} vs {}",
            a[i],
            b[i]
        );
    }
}
