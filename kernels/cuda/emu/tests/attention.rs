//! attention.cu: the flash-style causal attention forward and its three backward kernels
//! against the CPU reference (`attention_fwd_ref` / `attention_bwd_ref`, run in f64 on the
//! same f32 inputs), plain causal and with attention reset at document boundaries.
//!
//! Tolerances: the kernels compute in f32 with FMA and an online softmax, so each output
//! differs from the f64 reference by rounding only — a few units of 2^-24 times the size of
//! the terms summed. Outputs are compared with `|got − want| ≤ TOL · (M + |want|)`, M the
//! largest |want| of the tensor floored at the size of one term (1 for o, lse and D;
//! scale · sqrt(d_v), a dS entry's size, for the gradients, which are exactly 0 at seq 1).
//! `TOL` = 2e-5 leaves a margin of 6× or more over the largest errors seen (3.3e-6 of M, at
//! seq 97 with scores of tens), while an indexing or masking error is O(1) of M.
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::backend::{AttnShape, KeyStarts};
use tokenmill_kernels::cpu::attention::{attention_bwd_ref, attention_fwd_ref};
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn attention_fwd_f32(
        q: *const f32,
        k: *const f32,
        v: *const f32,
        o: *mut f32,
        lse: *mut f32,
        first: *const u32,
        heads: i32,
        bh: i32,
        seq: i32,
        d_qk: i32,
        d_v: i32,
        scale: f32,
    );
    fn attention_bwd_pre_f32(
        o: *const f32,
        d_o: *const f32,
        delta: *mut f32,
        bh: i32,
        seq: i32,
        d_v: i32,
    );
    fn attention_bwd_dkdv_f32(
        q: *const f32,
        k: *const f32,
        v: *const f32,
        lse: *const f32,
        d_o: *const f32,
        delta: *const f32,
        dk: *mut f32,
        dv: *mut f32,
        first: *const u32,
        heads: i32,
        bh: i32,
        seq: i32,
        d_qk: i32,
        d_v: i32,
        scale: f32,
    );
    fn attention_bwd_dq_f32(
        q: *const f32,
        k: *const f32,
        v: *const f32,
        lse: *const f32,
        d_o: *const f32,
        delta: *const f32,
        dq: *mut f32,
        first: *const u32,
        heads: i32,
        bh: i32,
        seq: i32,
        d_qk: i32,
        d_v: i32,
        scale: f32,
    );
}

const TOL: f64 = 2e-5;

/// Row stride of a shared tile of head dim d (attention.cu's `att_ld`).
fn ld(d: usize) -> usize {
    d.div_ceil(32) * 32 + 4
}

fn fwd_smem(d_qk: usize, d_v: usize) -> usize {
    4 * (96 * ld(d_qk) + 32 * ld(d_v) + 2304)
}

fn dq_smem(d_qk: usize, d_v: usize) -> usize {
    4 * (96 * (ld(d_qk) + ld(d_v)) + 2432)
}

fn dkdv_smem(d_qk: usize, d_v: usize) -> usize {
    4 * (96 * (ld(d_qk) + ld(d_v)) + 4672)
}

fn normal(n: usize, std: f64, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * std) as f32).collect()
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn narrow(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// Asserts `|got − want| ≤ TOL · (max(max|want|, floor) + |want|)` everywhere (`floor`: the
/// size of one summed term, for tensors that are exactly zero, as dq at seq 1); returns the
/// largest error relative to that maximum (for the record).
fn check(what: &str, got: &[f32], want: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let top = want.iter().fold(floor, |a, v| a.max(v.abs()));
    let mut worst = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= TOL * (top + w.abs()),
            "{what}[{i}]: {g} vs {w} (max |want| {top})"
        );
        worst = worst.max(err / top);
    }
    worst
}

/// Runs the forward and the backward kernels on one shape and compares every output.
fn run(bh: usize, seq: usize, d_qk: usize, d_v: usize, scale: f64, qk_std: f64, seed: u64) {
    run_with(bh, seq, d_qk, d_v, scale, qk_std, seed, None, 0)
}

/// `x` placed `shift` floats into a buffer whose block starts on 16 bytes (asserted: Rust does
/// not promise it for a `Vec<f32>`, the system allocator gives it), so that the shift alone
/// sets the alignment the kernels see: the buffer, to be read from `shift` on.
fn shifted(x: &[f32], shift: usize) -> Vec<f32> {
    let mut b = vec![f32::NAN; shift];
    b.extend_from_slice(x);
    assert_eq!(b.as_ptr() as usize % 16, 0, "a buffer's block off 16 bytes");
    b
}

/// [`run`] with attention reset: `reset = (heads, first [bh / heads, seq])`, and every input
/// and output starting `shift` floats into its buffer (off the 16 bytes the vector loads need).
#[allow(clippy::too_many_arguments)]
fn run_with(
    bh: usize,
    seq: usize,
    d_qk: usize,
    d_v: usize,
    scale: f64,
    qk_std: f64,
    seed: u64,
    reset: Option<(usize, Vec<u32>)>,
    shift: usize,
) {
    let starts = reset.as_ref().map(|(heads, first)| KeyStarts {
        heads: *heads,
        first,
    });
    // heads = 0: no reset, the placeholder table is not read.
    let (heads_i, first_tab) = match &reset {
        Some((h, f)) => (*h as i32, f.clone()),
        None => (0, vec![0u32]),
    };
    let fp = Ptr::of_const(&first_tab);
    let mut rng = Rng::new(seed);
    let q = normal(bh * seq * d_qk, qk_std, &mut rng);
    let k = normal(bh * seq * d_qk, qk_std, &mut rng);
    let v = normal(bh * seq * d_v, 1.0, &mut rng);
    let d_o = normal(bh * seq * d_v, 1.0, &mut rng);
    let s = AttnShape {
        bh,
        seq,
        d_qk,
        d_v,
        scale,
    };
    let (q64, k64, v64, do64) = (widen(&q), widen(&k), widen(&v), widen(&d_o));
    let mut o64 = vec![0f64; bh * seq * d_v];
    let mut lse64 = vec![0f64; bh * seq];
    attention_fwd_ref(s, starts, &q64, &k64, &v64, &mut o64, &mut lse64);

    let (bh_i, seq_i, dqk_i, dv_i, sc) =
        (bh as i32, seq as i32, d_qk as i32, d_v as i32, scale as f32);
    let (qb, kb, vb, dob) = (
        shifted(&q, shift),
        shifted(&k, shift),
        shifted(&v, shift),
        shifted(&d_o, shift),
    );
    let (qp, kp, vp) = (
        Ptr::of_const(&qb[shift..]),
        Ptr::of_const(&kb[shift..]),
        Ptr::of_const(&vb[shift..]),
    );
    let mut ob = shifted(&vec![f32::NAN; bh * seq * d_v], shift);
    let mut lseb = shifted(&vec![f32::NAN; bh * seq], shift);
    let (op, lp) = (Ptr::of(&mut ob[shift..]), Ptr::of(&mut lseb[shift..]));
    let grid = (seq.div_ceil(64) as u32, bh as u32, 1);
    launch(grid, (256, 1, 1), fwd_smem(d_qk, d_v), || {
        // SAFETY: q, k [bh·seq·d_qk], v, o [bh·seq·d_v], lse [bh·seq], alive for the launch.
        unsafe {
            attention_fwd_f32(
                qp.c(),
                kp.c(),
                vp.c(),
                op.p(),
                lp.p(),
                fp.c(),
                heads_i,
                bh_i,
                seq_i,
                dqk_i,
                dv_i,
                sc,
            )
        }
    });
    let (o, lse) = (&ob[shift..], &lseb[shift..]);
    let tag = format!(
        "bh {bh} seq {seq} d_qk {d_qk} d_v {d_v}{}{}",
        if reset.is_some() { " reset" } else { "" },
        if shift > 0 {
            format!(" {} bytes off 16", 4 * shift)
        } else {
            String::new()
        }
    );
    check(&format!("o ({tag})"), o, &o64, 1.0);
    check(&format!("lse ({tag})"), lse, &lse64, 1.0);

    // The backward on the reference's o and lse (rounded to f32), so that it is checked alone.
    let (o32, lse32) = (narrow(&o64), narrow(&lse64));
    let (o32b, lse32b) = (shifted(&o32, shift), shifted(&lse32, shift));
    let mut deltab = shifted(&vec![f32::NAN; bh * seq], shift);
    let (o32p, dop, dp) = (
        Ptr::of_const(&o32b[shift..]),
        Ptr::of_const(&dob[shift..]),
        Ptr::of(&mut deltab[shift..]),
    );
    launch(
        ((bh * seq).div_ceil(8) as u32, 1, 1),
        (256, 1, 1),
        0,
        || {
            // SAFETY: o, d_o [bh·seq·d_v], delta [bh·seq], alive for the launch.
            unsafe { attention_bwd_pre_f32(o32p.c(), dop.c(), dp.p(), bh_i, seq_i, dv_i) }
        },
    );
    let delta64: Vec<f64> = (0..bh * seq)
        .map(|r| {
            (0..d_v)
                .map(|c| o32[r * d_v + c] as f64 * d_o[r * d_v + c] as f64)
                .sum()
        })
        .collect();
    let delta = &deltab[shift..];
    check(&format!("delta ({tag})"), delta, &delta64, 1.0);

    let (mut dq64, mut dk64, mut dv64) = (
        vec![0f64; q.len()],
        vec![0f64; k.len()],
        vec![0f64; v.len()],
    );
    attention_bwd_ref(
        s,
        starts,
        &q64,
        &k64,
        &v64,
        &widen(&o32),
        &widen(&lse32),
        &do64,
        &mut dq64,
        &mut dk64,
        &mut dv64,
    );
    // Non-zero garbage in the outputs: the kernels overwrite them.
    let mut dqb = shifted(&vec![7f32; q.len()], shift);
    let mut dkb = shifted(&vec![7f32; k.len()], shift);
    let mut dvb = shifted(&vec![7f32; v.len()], shift);
    let lsep = Ptr::of_const(&lse32b[shift..]);
    let deltap = Ptr::of_const(delta);
    let (dqp, dkp, dvp) = (
        Ptr::of(&mut dqb[shift..]),
        Ptr::of(&mut dkb[shift..]),
        Ptr::of(&mut dvb[shift..]),
    );
    launch(grid, (256, 1, 1), dkdv_smem(d_qk, d_v), || {
        // SAFETY: every buffer has its documented length and outlives the launch.
        unsafe {
            attention_bwd_dkdv_f32(
                qp.c(),
                kp.c(),
                vp.c(),
                lsep.c(),
                dop.c(),
                deltap.c(),
                dkp.p(),
                dvp.p(),
                fp.c(),
                heads_i,
                bh_i,
                seq_i,
                dqk_i,
                dv_i,
                sc,
            )
        }
    });
    launch(grid, (256, 1, 1), dq_smem(d_qk, d_v), || {
        // SAFETY: every buffer has its documented length and outlives the launch.
        unsafe {
            attention_bwd_dq_f32(
                qp.c(),
                kp.c(),
                vp.c(),
                lsep.c(),
                dop.c(),
                deltap.c(),
                dqp.p(),
                fp.c(),
                heads_i,
                bh_i,
                seq_i,
                dqk_i,
                dv_i,
                sc,
            )
        }
    });
    let (dq, dk, dv) = (&dqb[shift..], &dkb[shift..], &dvb[shift..]);
    let e = [
        check(
            &format!("dq ({tag})"),
            dq,
            &dq64,
            scale * (d_v as f64).sqrt(),
        ),
        check(
            &format!("dk ({tag})"),
            dk,
            &dk64,
            scale * (d_v as f64).sqrt(),
        ),
        check(
            &format!("dv ({tag})"),
            dv,
            &dv64,
            scale * (d_v as f64).sqrt(),
        ),
    ];
    eprintln!(
        "{tag}: worst relative errors dq {:.1e} dk {:.1e} dv {:.1e}",
        e[0], e[1], e[2]
    );
}

#[test]
fn deepseek_head_dims_d_qk_192_d_v_128() {
    // Two query blocks, the second one partial; d_qk ≠ d_v.
    run(1, 100, 192, 128, 1.0 / 192f64.sqrt(), 1.0, 1);
}

#[test]
fn sequences_and_dims_off_the_tiles() {
    // seq not a multiple of 64 or 32; dims not multiples of 4 (the scalar load path).
    run(3, 33, 13, 7, 1.0 / 13f64.sqrt(), 1.0, 2);
    run(2, 70, 24, 40, 1.0 / 24f64.sqrt(), 1.0, 3);
}

#[test]
fn the_largest_head_dims_and_a_single_token() {
    run(1, 65, 256, 256, 1.0 / 16.0, 1.0, 4);
    run(2, 1, 64, 64, 0.125, 1.0, 5);
}

#[test]
fn large_scores_exercise_the_online_softmax() {
    // Scores of tens: the row maximum moves between tiles and most probabilities underflow.
    run(1, 97, 32, 16, 1.0, 1.5, 6);
}

#[test]
fn attention_reset_at_document_boundaries() {
    // Two samples of two heads; documents crossing the 32- and 64-row tiles, a one-token
    // document, and a row whose first key lies two key tiles ahead of the block's start.
    let (heads, seq) = (2, 100);
    let mut first = Vec::new();
    for lens in [&[40usize, 1, 59][..], &[70, 30]] {
        let mut at = 0u32;
        for &l in lens {
            first.extend(std::iter::repeat_n(at, l));
            at += l as u32;
        }
    }
    run_with(
        4,
        seq,
        24,
        16,
        1.0 / 24f64.sqrt(),
        1.0,
        7,
        Some((heads, first.clone())),
        0,
    );
    // Large scores: the online softmax starts its maximum at each row's first key.
    run_with(4, seq, 32, 16, 1.0, 1.5, 8, Some((heads, first)), 0);
}

#[test]
fn rows_off_the_16_byte_boundary_take_the_scalar_loads() {
    // Head dims that are multiples of 4 (the 128-bit load path when the rows are aligned) with
    // every tensor 4 and 8 bytes off 16: the loads must see it and go element by element (a
    // 16-byte load at such an address faults on a GPU; the emulation traps on it).
    for shift in [1, 2] {
        run_with(2, 70, 24, 16, 1.0 / 24f64.sqrt(), 1.0, 9, None, shift);
    }
}
