//! moe.cu: the routing permutation against the trainer's own bookkeeping (trainer/src/moe:
//! each expert's `(token, slot)` list in token order, the lists flattened in expert order, the
//! combine `out[t] += g · y_r` over that order), rebuilt here in a few lines. Everything is
//! integer or a copy, and the combine adds the same rounded products in the same order, so
//! every comparison is exact (bit for bit).
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn moe_offsets(
        idx: *const i32,
        tokens: i32,
        k: i32,
        experts: i32,
        counts: *mut i32,
        offsets: *mut i32,
        src_rows: *mut i32,
        slot_rows: *mut i32,
    );
    fn moe_permute_f32(x: *const f32, src_rows: *const i32, xp: *mut f32, rows: i64, d: i32);
    fn moe_unpermute_f32(
        yp: *const f32,
        slot_rows: *const i32,
        weights: *const f32,
        y: *mut f32,
        tokens: i64,
        k: i32,
        d: i32,
        accumulate: i32,
    );
}

/// A router's choice: k distinct experts per token out of `allowed`.
fn route(tokens: usize, k: usize, allowed: &[i32], rng: &mut Rng) -> Vec<i32> {
    let mut idx = Vec::with_capacity(tokens * k);
    for _ in 0..tokens {
        let mut pool = allowed.to_vec();
        for _ in 0..k {
            idx.push(pool.swap_remove(rng.below(pool.len())));
        }
    }
    idx
}

/// The trainer's send order: for each expert, its (token, slot) pairs in token order.
fn send_rows(idx: &[i32], k: usize, experts: usize) -> Vec<Vec<(usize, usize)>> {
    let mut rows = vec![Vec::new(); experts];
    for (i, &e) in idx.iter().enumerate() {
        if (0..experts as i32).contains(&e) {
            rows[e as usize].push((i / k, i % k));
        }
    }
    rows
}

struct Routing {
    counts: Vec<i32>,
    offsets: Vec<i32>,
    src_rows: Vec<i32>,
    slot_rows: Vec<i32>,
}

fn run_offsets(idx: &[i32], tokens: usize, k: usize, experts: usize, block: u32) -> Routing {
    let mut r = Routing {
        counts: vec![-7; experts],
        offsets: vec![-7; experts + 1],
        src_rows: vec![-7; tokens * k],
        slot_rows: vec![-7; tokens * k],
    };
    let ip = Ptr::of_const(idx);
    let (cp, op, sp, lp) = (
        Ptr::of(&mut r.counts),
        Ptr::of(&mut r.offsets),
        Ptr::of(&mut r.src_rows),
        Ptr::of(&mut r.slot_rows),
    );
    let (t, kk, e) = (tokens as i32, k as i32, experts as i32);
    launch((experts as u32, 1, 1), (block, 1, 1), 0, || {
        // SAFETY: idx, src_rows, slot_rows [tokens·k], counts [experts], offsets [experts + 1].
        unsafe { moe_offsets(ip.c(), t, kk, e, cp.p(), op.p(), sp.p(), lp.p()) }
    });
    r
}

/// The routing tables must be the trainer's order.
fn check_routing(r: &Routing, idx: &[i32], k: usize, experts: usize) {
    let lists = send_rows(idx, k, experts);
    let rows: usize = lists.iter().map(Vec::len).sum();
    let counts: Vec<i32> = lists.iter().map(|l| l.len() as i32).collect();
    assert_eq!(r.counts, counts);
    let mut offsets = vec![0i32];
    for &c in &counts {
        offsets.push(offsets.last().unwrap() + c);
    }
    assert_eq!(r.offsets, offsets);
    let mut slot_rows = vec![-1i32; idx.len()];
    for (row, &(t, j)) in lists.iter().flatten().enumerate() {
        assert_eq!(r.src_rows[row], t as i32, "row {row}");
        slot_rows[t * k + j] = row as i32;
    }
    assert_eq!(r.slot_rows, slot_rows);
    assert!(
        r.src_rows[rows..].iter().all(|&v| v == -7),
        "nothing past the rows"
    );
}

#[test]
fn offsets_follow_the_trainers_order() {
    let mut rng = Rng::new(1);
    let (tokens, k, experts) = (300, 4, 10);
    // Experts 3 and 9 get no token; 1200 entries: more than one pass of 256 × 4.
    let allowed: Vec<i32> = (0..experts as i32).filter(|e| *e != 3 && *e != 9).collect();
    let idx = route(tokens, k, &allowed, &mut rng);
    for block in [256, 64] {
        check_routing(
            &run_offsets(&idx, tokens, k, experts, block),
            &idx,
            k,
            experts,
        );
    }
    // One expert per token, a single token, and entries that name no expert.
    let idx = route(50, 1, &[0, 1, 2], &mut rng);
    check_routing(&run_offsets(&idx, 50, 1, 3, 128), &idx, 1, 3);
    let idx = vec![2, -1, 0, 5];
    let r = run_offsets(&idx, 1, 4, 3, 32);
    check_routing(&r, &idx, 4, 3);
    assert_eq!(r.slot_rows, [1, -1, 0, -1]);
}

fn permute(x: &[f32], src_rows: &[i32], d: usize, grid: u32) -> Vec<f32> {
    let rows = src_rows.len();
    let mut xp = vec![f32::NAN; rows * d];
    let (xptr, sp, pp) = (Ptr::of_const(x), Ptr::of_const(src_rows), Ptr::of(&mut xp));
    launch((grid, 1, 1), (256, 1, 1), 0, || {
        // SAFETY: x [tokens·d] with every src_rows entry < tokens, xp [rows·d].
        unsafe { moe_permute_f32(xptr.c(), sp.c(), pp.p(), rows as i64, d as i32) }
    });
    xp
}

#[allow(clippy::too_many_arguments)]
fn unpermute(
    yp: &[f32],
    slot_rows: &[i32],
    weights: Option<&[f32]>,
    y0: &[f32],
    tokens: usize,
    k: usize,
    d: usize,
    accumulate: bool,
    grid: u32,
) -> Vec<f32> {
    let mut y = y0.to_vec();
    let (ypp, sp, yptr) = (Ptr::of_const(yp), Ptr::of_const(slot_rows), Ptr::of(&mut y));
    let wp = weights.map_or(Ptr(std::ptr::null_mut()), Ptr::of_const);
    let acc = accumulate as i32;
    launch((grid, 1, 1), (256, 1, 1), 0, || {
        // SAFETY: yp [rows·d], slot_rows and weights (or null) [tokens·k], y [tokens·d].
        unsafe {
            moe_unpermute_f32(
                ypp.c(),
                sp.c(),
                wp.c(),
                yptr.p(),
                tokens as i64,
                k as i32,
                d as i32,
                acc,
            )
        }
    });
    y
}

#[test]
fn permute_and_unpermute_are_the_trainers_dispatch_and_combine_bit_for_bit() {
    let mut rng = Rng::new(2);
    let (tokens, k, experts) = (37, 3, 8);
    let allowed: Vec<i32> = (0..experts as i32).filter(|e| *e != 5).collect();
    let idx = route(tokens, k, &allowed, &mut rng);
    let r = run_offsets(&idx, tokens, k, experts, 256);
    let lists = send_rows(&idx, k, experts);
    let order: Vec<(usize, usize)> = lists.into_iter().flatten().collect();
    let rows = order.len();
    // d = 36: 128-bit copies; d = 13: scalar.
    for (d, grid) in [(36usize, rows as u32), (13, 5)] {
        let x: Vec<f32> = (0..tokens * d).map(|_| rng.normal() as f32).collect();
        let xp = permute(&x, &r.src_rows[..rows], d, grid);
        for (row, &(t, _)) in order.iter().enumerate() {
            assert_eq!(
                xp[row * d..(row + 1) * d],
                x[t * d..(t + 1) * d],
                "row {row}"
            );
        }
        // The combine: out[t] (+)= g · y_r in send order, as the trainer writes it.
        let yp: Vec<f32> = (0..rows * d).map(|_| rng.normal() as f32).collect();
        let gates: Vec<f32> = (0..tokens * k)
            .map(|_| rng.uniform() as f32 * 2.5)
            .collect();
        let shared: Vec<f32> = (0..tokens * d).map(|_| rng.normal() as f32).collect();
        for (weights, accumulate) in [(true, true), (true, false), (false, true)] {
            let mut want = if accumulate {
                shared.clone()
            } else {
                vec![0f32; tokens * d]
            };
            for (row, &(t, j)) in order.iter().enumerate() {
                let (dst, src) = (&mut want[t * d..(t + 1) * d], &yp[row * d..(row + 1) * d]);
                for c in 0..d {
                    if weights {
                        dst[c] += gates[t * k + j] * src[c];
                    } else {
                        dst[c] += src[c];
                    }
                }
            }
            let y0 = if accumulate {
                shared.clone()
            } else {
                vec![f32::NAN; tokens * d]
            };
            let w = weights.then_some(&gates[..]);
            let got = unpermute(
                &yp,
                &r.slot_rows,
                w,
                &y0,
                tokens,
                k,
                d,
                accumulate,
                grid.min(11),
            );
            let (gb, wb): (Vec<u32>, Vec<u32>) = (
                got.iter().map(|v| v.to_bits()).collect(),
                want.iter().map(|v| v.to_bits()).collect(),
            );
            assert_eq!(gb, wb, "d {d} weights {weights} accumulate {accumulate}");
        }
    }
}

/// The 128-bit copies need 16-byte aligned rows: with the token rows (permute) or the expert
/// rows (unpermute) starting 4 bytes off a 16-byte boundary, d = 36 takes the scalar path and
/// gives the same rows (a vector access there would trap in the emulation, its alignment
/// checked, as it would fault on a GPU).
#[test]
fn permute_and_unpermute_off_16_bytes_give_the_same_rows() {
    let mut rng = Rng::new(9);
    let (tokens, k, experts, d) = (21, 2, 4, 36);
    let allowed: Vec<i32> = (0..experts as i32).collect();
    let idx = route(tokens, k, &allowed, &mut rng);
    let r = run_offsets(&idx, tokens, k, experts, 256);
    let rows = tokens * k;
    let x: Vec<f32> = (0..1 + tokens * d).map(|_| rng.normal() as f32).collect();
    let aligned = permute(&x[..tokens * d], &r.src_rows[..rows], d, 7);
    let shifted = permute(&x[1..], &r.src_rows[..rows], d, 7);
    let xs = x[1..].to_vec();
    assert_eq!(shifted, permute(&xs, &r.src_rows[..rows], d, 7));
    assert_ne!(shifted, aligned);
    let yp: Vec<f32> = (0..1 + rows * d).map(|_| rng.normal() as f32).collect();
    let y0 = vec![0f32; tokens * d];
    let got = unpermute(&yp[1..], &r.slot_rows, None, &y0, tokens, k, d, false, 5);
    let ys = yp[1..].to_vec();
    let want = unpermute(&ys, &r.slot_rows, None, &y0, tokens, k, d, false, 5);
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}
