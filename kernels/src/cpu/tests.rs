//! Fast kernels against the references, and every backward against central finite differences
//! of its forward, in f64.

use super::attention::*;
use super::embedding::*;
use super::loss::*;
use super::norm::*;
use super::rope::*;
use super::swiglu::*;
use super::topk::*;
use crate::backend::{AttnShape, IGNORE, KeyStarts, RopeRows, RopeTable};
use crate::rng::Rng;

/// `n` numbers uniform in [-1, 1).
fn rand(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect()
}

fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// Central differences of `L(x) = Σ c·f(x)` at every element of x.
fn numeric_grad(x: &[f64], c: &[f64], f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
            xp[i] += h;
            xm[i] -= h;
            let lp: f64 = f(&xp).iter().zip(c).map(|(a, b)| a * b).sum();
            let lm: f64 = f(&xm).iter().zip(c).map(|(a, b)| a * b).sum();
            (lp - lm) / (2.0 * h)
        })
        .collect()
}

#[test]
fn rmsnorm_fast_reference_and_gradients() {
    let (rows, d) = (70, 12);
    let x = rand(rows * d, 1);
    let w = rand(d, 2);
    let (mut y0, mut y1, mut r0, mut r1) = (
        vec![0.0; rows * d],
        vec![0.0; rows * d],
        vec![0.0; rows],
        vec![0.0; rows],
    );
    rmsnorm_fwd_ref(&x, &w, 1e-6, &mut y0, &mut r0);
    rmsnorm_fwd(&x, &w, 1e-6, &mut y1, &mut r1);
    assert_eq!(y0, y1);
    let dy = rand(rows * d, 3);
    let (mut dx0, mut dx1) = (vec![0.0; rows * d], vec![0.0; rows * d]);
    rmsnorm_bwd_input_ref(&x, &w, &r0, &dy, &mut dx0, false);
    rmsnorm_bwd_input(&x, &w, &r0, &dy, &mut dx1, false);
    assert_eq!(dx0, dx1);
    let (mut dw0, mut dw1) = (vec![0.0; d], vec![0.0; d]);
    rmsnorm_bwd_weight_ref(&x, &r0, &dy, &mut dw0);
    rmsnorm_bwd_weight(&x, &r0, &dy, &mut dw1);
    close(&dw0, &dw1, 1e-12, "dw fast");
    let fwd_x = |xv: &[f64]| {
        let (mut y, mut r) = (vec![0.0; rows * d], vec![0.0; rows]);
        rmsnorm_fwd_ref(xv, &w, 1e-6, &mut y, &mut r);
        y
    };
    close(&dx0, &numeric_grad(&x, &dy, fwd_x), 1e-6, "dx numeric");
    let fwd_w = |wv: &[f64]| {
        let (mut y, mut r) = (vec![0.0; rows * d], vec![0.0; rows]);
        rmsnorm_fwd_ref(&x, wv, 1e-6, &mut y, &mut r);
        y
    };
    close(&dw0, &numeric_grad(&w, &dy, fwd_w), 1e-6, "dw numeric");
}

#[test]
fn rope_rotates_only_the_rope_part_and_inverts() {
    let t = RopeTable::<f64>::new(4, 10000.0, 32);
    let r = RopeRows {
        seq: 8,
        heads: 3,
        row_len: 10,
        offset: 6,
    };
    let x = rand(2 * 8 * 3 * 10, 4);
    let (mut a, mut b) = (x.clone(), x.clone());
    rope_fwd_ref(&t, &mut a, r);
    rope_fwd(&t, &mut b, r);
    assert_eq!(a, b);
    for (i, (&xi, &ai)) in x.iter().zip(&a).enumerate() {
        let tok = i / 30;
        if i % 10 < 6 || tok % 8 == 0 {
            assert_eq!(xi, ai, "element {i} must not move");
        }
    }
    // Position 1, pair 0 has angle 1 radian: (x0 cos1 − x1 sin1, x0 sin1 + x1 cos1).
    let (x0, x1) = (x[30 + 6], x[30 + 7]);
    close(
        &[a[36], a[37]],
        &[
            x0 * 1f64.cos() - x1 * 1f64.sin(),
            x0 * 1f64.sin() + x1 * 1f64.cos(),
        ],
        1e-7,
        "pair 0",
    );
    // The backward of a rotation is its inverse, which is also its gradient.
    let dy = rand(x.len(), 5);
    let mut dx = dy.clone();
    rope_bwd(&t, &mut dx, r);
    let f = |xv: &[f64]| {
        let mut y = xv.to_vec();
        rope_fwd_ref(&t, &mut y, r);
        y
    };
    close(&dx, &numeric_grad(&x, &dy, f), 1e-6, "rope grad");
    rope_fwd(&t, &mut dx, r);
    close(&dx, &dy, 1e-12, "inverse");
}

#[test]
fn swiglu_fast_reference_and_gradients() {
    let n = 9000;
    let (g, u, dh) = (rand(n, 6), rand(n, 7), rand(n, 8));
    let (mut h0, mut h1) = (vec![0.0; n], vec![0.0; n]);
    swiglu_fwd_ref(&g, &u, &mut h0);
    swiglu_fwd(&g, &u, &mut h1);
    assert_eq!(h0, h1);
    let (mut dg, mut du, mut dg1, mut du1) =
        (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    swiglu_bwd_ref(&g, &u, &dh, &mut dg, &mut du);
    swiglu_bwd(&g, &u, &dh, &mut dg1, &mut du1);
    assert_eq!((&dg, &du), (&dg1, &du1));
    let m = 50;
    let fg = |gv: &[f64]| {
        let mut h = vec![0.0; m];
        swiglu_fwd_ref(gv, &u[..m], &mut h);
        h
    };
    close(&dg[..m], &numeric_grad(&g[..m], &dh[..m], fg), 1e-6, "dg");
    let fu = |uv: &[f64]| {
        let mut h = vec![0.0; m];
        swiglu_fwd_ref(&g[..m], uv, &mut h);
        h
    };
    close(&du[..m], &numeric_grad(&u[..m], &dh[..m], fu), 1e-6, "du");
}

#[test]
fn attention_fast_reference_and_gradients() {
    let s = AttnShape {
        bh: 3,
        seq: 7,
        d_qk: 6,
        d_v: 4,
        scale: 1.0 / 6f64.sqrt(),
    };
    let q = rand(s.bh * s.seq * s.d_qk, 9);
    let k = rand(s.bh * s.seq * s.d_qk, 10);
    let v = rand(s.bh * s.seq * s.d_v, 11);
    let (mut o0, mut o1) = (
        vec![0.0; s.bh * s.seq * s.d_v],
        vec![0.0; s.bh * s.seq * s.d_v],
    );
    let (mut l0, mut l1) = (vec![0.0; s.bh * s.seq], vec![0.0; s.bh * s.seq]);
    attention_fwd_ref(s, None, &q, &k, &v, &mut o0, &mut l0);
    attention_fwd(s, None, &q, &k, &v, &mut o1, &mut l1);
    close(&o0, &o1, 1e-12, "o");
    close(&l0, &l1, 1e-12, "lse");
    // Causality: the first query sees only the first key, so its output is v[0].
    close(&o0[..s.d_v], &v[..s.d_v], 1e-12, "first row");
    let d_o = rand(o0.len(), 12);
    let mut g0 = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    let mut g1 = g0.clone();
    attention_bwd_ref(
        s, None, &q, &k, &v, &o0, &l0, &d_o, &mut g0.0, &mut g0.1, &mut g0.2,
    );
    attention_bwd(
        s, None, &q, &k, &v, &o0, &l0, &d_o, &mut g1.0, &mut g1.1, &mut g1.2,
    );
    close(&g0.0, &g1.0, 1e-12, "dq fast");
    close(&g0.1, &g1.1, 1e-12, "dk fast");
    close(&g0.2, &g1.2, 1e-12, "dv fast");
    let run = |q: &[f64], k: &[f64], v: &[f64]| {
        let (mut o, mut l) = (vec![0.0; s.bh * s.seq * s.d_v], vec![0.0; s.bh * s.seq]);
        attention_fwd_ref(s, None, q, k, v, &mut o, &mut l);
        o
    };
    close(
        &g0.0,
        &numeric_grad(&q, &d_o, |x| run(x, &k, &v)),
        1e-6,
        "dq numeric",
    );
    close(
        &g0.1,
        &numeric_grad(&k, &d_o, |x| run(&q, x, &v)),
        1e-6,
        "dk numeric",
    );
    close(
        &g0.2,
        &numeric_grad(&v, &d_o, |x| run(&q, &k, x)),
        1e-6,
        "dv numeric",
    );
}

/// The `KeyStarts::first` of samples packing documents of the given lengths: for each
/// position, where its document starts.
fn doc_starts(samples: &[&[usize]]) -> Vec<u32> {
    let mut first = Vec::new();
    for lens in samples {
        let mut at = 0u32;
        for &l in *lens {
            first.extend(std::iter::repeat_n(at, l));
            at += l as u32;
        }
    }
    first
}

/// Attention reset: two samples × two heads, each sample packing documents of lengths
/// `docs`; every output and gradient equals the attention of each document run alone, for the
/// reference and the fast kernel.
#[test]
fn attention_reset_equals_each_document_alone() {
    let (heads, seq, dk, dv) = (2, 9, 5, 3);
    let docs: [&[usize]; 2] = [&[4, 1, 4], &[9]];
    let bh = 2 * heads;
    let s = AttnShape {
        bh,
        seq,
        d_qk: dk,
        d_v: dv,
        scale: 1.0 / 5f64.sqrt(),
    };
    let first = doc_starts(&docs);
    let starts = Some(KeyStarts {
        heads,
        first: &first,
    });
    let (q, k, v) = (
        rand(bh * seq * dk, 31),
        rand(bh * seq * dk, 32),
        rand(bh * seq * dv, 33),
    );
    let d_o = rand(bh * seq * dv, 34);
    for fast in [false, true] {
        let (mut o, mut l) = (vec![0.0; bh * seq * dv], vec![0.0; bh * seq]);
        let mut g = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        if fast {
            attention_fwd(s, starts, &q, &k, &v, &mut o, &mut l);
            attention_bwd(
                s, starts, &q, &k, &v, &o, &l, &d_o, &mut g.0, &mut g.1, &mut g.2,
            );
        } else {
            attention_fwd_ref(s, starts, &q, &k, &v, &mut o, &mut l);
            attention_bwd_ref(
                s, starts, &q, &k, &v, &o, &l, &d_o, &mut g.0, &mut g.1, &mut g.2,
            );
        }
        for h in 0..bh {
            let mut at = 0;
            for &len in docs[h / heads] {
                // The document alone: rows [at, at + len) of head h, plain causal attention.
                let one = AttnShape {
                    bh: 1,
                    seq: len,
                    ..s
                };
                let cut =
                    |x: &[f64], d: usize| x[(h * seq + at) * d..(h * seq + at + len) * d].to_vec();
                let (q1, k1, v1, do1) = (cut(&q, dk), cut(&k, dk), cut(&v, dv), cut(&d_o, dv));
                let (mut o1, mut l1) = (vec![0.0; len * dv], vec![0.0; len]);
                attention_fwd_ref(one, None, &q1, &k1, &v1, &mut o1, &mut l1);
                let mut g1 = (
                    vec![0.0; len * dk],
                    vec![0.0; len * dk],
                    vec![0.0; len * dv],
                );
                attention_bwd_ref(
                    one, None, &q1, &k1, &v1, &o1, &l1, &do1, &mut g1.0, &mut g1.1, &mut g1.2,
                );
                let what = format!("fast {fast}, row {h}, document at {at}");
                close(&cut(&o, dv), &o1, 1e-12, &format!("o, {what}"));
                close(
                    &l[h * seq + at..h * seq + at + len],
                    &l1,
                    1e-12,
                    &format!("lse, {what}"),
                );
                close(&cut(&g.0, dk), &g1.0, 1e-12, &format!("dq, {what}"));
                close(&cut(&g.1, dk), &g1.1, 1e-12, &format!("dk, {what}"));
                close(&cut(&g.2, dv), &g1.2, 1e-12, &format!("dv, {what}"));
                at += len;
            }
        }
    }
}

/// The fast kernels' query blocks: every block size — one row, sizes that do not divide the
/// sequence, one block for all — gives the reference's outputs and gradients, with documents
/// packed (blocks whose rows start in different documents) and without.
#[test]
fn attention_query_blocks_of_every_size_equal_the_reference() {
    let (heads, seq, dk, dv) = (2, 11, 5, 3);
    let bh = 2 * heads;
    let s = AttnShape {
        bh,
        seq,
        d_qk: dk,
        d_v: dv,
        scale: 1.0 / 5f64.sqrt(),
    };
    let first = doc_starts(&[&[4, 1, 6], &[11]]);
    let (q, k, v) = (
        rand(bh * seq * dk, 41),
        rand(bh * seq * dk, 42),
        rand(bh * seq * dv, 43),
    );
    let d_o = rand(bh * seq * dv, 44);
    for starts in [
        None,
        Some(KeyStarts {
            heads,
            first: &first,
        }),
    ] {
        let (mut o0, mut l0) = (vec![0.0; bh * seq * dv], vec![0.0; bh * seq]);
        attention_fwd_ref(s, starts, &q, &k, &v, &mut o0, &mut l0);
        let mut g0 = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        attention_bwd_ref(
            s, starts, &q, &k, &v, &o0, &l0, &d_o, &mut g0.0, &mut g0.1, &mut g0.2,
        );
        for qb in [1, 2, 3, 4, 5, 10, 11, 64] {
            let what = format!("block {qb}, resets {}", starts.is_some());
            let (mut o, mut l) = (vec![0.0; bh * seq * dv], vec![0.0; bh * seq]);
            attention_fwd_blocked(s, starts, &q, &k, &v, &mut o, &mut l, qb);
            close(&o0, &o, 1e-12, &format!("o, {what}"));
            close(&l0, &l, 1e-12, &format!("lse, {what}"));
            // Stale gradients in the outputs must not leak into the result.
            let mut g = (vec![7.0; q.len()], vec![7.0; k.len()], vec![7.0; v.len()]);
            attention_bwd_blocked(
                s, starts, &q, &k, &v, &o0, &l0, &d_o, &mut g.0, &mut g.1, &mut g.2, qb,
            );
            close(&g0.0, &g.0, 1e-12, &format!("dq, {what}"));
            close(&g0.1, &g.1, 1e-12, &format!("dk, {what}"));
            close(&g0.2, &g.2, 1e-12, &format!("dv, {what}"));
        }
    }
}

/// In f32 at a training shape (MLA's d_qk = 48 ≠ d_v = 32, several query blocks, sequence
/// not a multiple of the block), the fast kernels stay within f32 rounding of the f64
/// reference.
#[test]
fn attention_f32_at_a_training_shape_is_within_rounding() {
    let s = AttnShape {
        bh: 3,
        seq: 200,
        d_qk: 48,
        d_v: 32,
        scale: 1.0 / 48f64.sqrt(),
    };
    let (q, k, v) = (
        rand(s.bh * s.seq * s.d_qk, 51),
        rand(s.bh * s.seq * s.d_qk, 52),
        rand(s.bh * s.seq * s.d_v, 53),
    );
    let d_o = rand(s.bh * s.seq * s.d_v, 54);
    let f = |x: &[f64]| x.iter().map(|&y| y as f32).collect::<Vec<f32>>();
    let up = |x: &[f32]| x.iter().map(|&y| y as f64).collect::<Vec<f64>>();
    let (mut o0, mut l0) = (vec![0.0; s.bh * s.seq * s.d_v], vec![0.0; s.bh * s.seq]);
    attention_fwd_ref(s, None, &q, &k, &v, &mut o0, &mut l0);
    let mut g0 = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    attention_bwd_ref(
        s, None, &q, &k, &v, &o0, &l0, &d_o, &mut g0.0, &mut g0.1, &mut g0.2,
    );
    let (q1, k1, v1, do1) = (f(&q), f(&k), f(&v), f(&d_o));
    let (mut o, mut l) = (vec![0f32; o0.len()], vec![0f32; l0.len()]);
    attention_fwd(s, None, &q1, &k1, &v1, &mut o, &mut l);
    close(&o0, &up(&o), 1e-5, "o f32");
    close(&l0, &up(&l), 1e-5, "lse f32");
    let mut g = (
        vec![0f32; q.len()],
        vec![0f32; k.len()],
        vec![0f32; v.len()],
    );
    attention_bwd(
        s, None, &q1, &k1, &v1, &o, &l, &do1, &mut g.0, &mut g.1, &mut g.2,
    );
    close(&g0.0, &up(&g.0), 1e-4, "dq f32");
    close(&g0.1, &up(&g.1), 1e-4, "dk f32");
    close(&g0.2, &up(&g.2), 1e-4, "dv f32");
}

#[test]
fn cross_entropy_fast_reference_and_gradients() {
    let (rows, vocab) = (6, 11);
    let logits: Vec<f64> = rand(rows * vocab, 13).iter().map(|x| 3.0 * x).collect();
    let targets = [3u32, 0, 10, IGNORE, 7, 7];
    let (mut l0, mut l1, mut s0, mut s1) = (
        vec![0.0; rows],
        vec![0.0; rows],
        vec![0.0; rows],
        vec![0.0; rows],
    );
    cross_entropy_fwd_ref(&logits, &targets, vocab, &mut l0, &mut s0);
    cross_entropy_fwd(&logits, &targets, vocab, &mut l1, &mut s1);
    assert_eq!((&l0, &s0), (&l1, &s1));
    assert_eq!(l0[3], 0.0);
    // loss = −log softmax[target]
    let row = &logits[..vocab];
    let z: f64 = row.iter().map(|x| x.exp()).sum();
    close(&[l0[0]], &[-(row[3].exp() / z).ln()], 1e-12, "loss row 0");
    let g = rand(rows, 14);
    let (mut d0, mut d1) = (logits.clone(), logits.clone());
    cross_entropy_bwd_ref(&mut d0, &targets, &s0, &g, vocab);
    cross_entropy_bwd(&mut d1, &targets, &s0, &g, vocab);
    assert_eq!(d0, d1);
    let (mut x, mut l, mut s) = (logits.clone(), vec![0.0; rows], vec![0.0; rows]);
    cross_entropy_fused_ref(&mut x, &targets, &g, vocab, &mut l, &mut s);
    assert_eq!(
        (&l, &s, &x),
        (&l0, &s0, &d0),
        "fused reference = forward then backward"
    );
    // The fast fused rows take softmax as exp(x − max) / Z (one exponential per logit), so
    // they agree with the reference to rounding, not bit for bit.
    let (mut x, mut l, mut s) = (logits.clone(), vec![0.0; rows], vec![0.0; rows]);
    cross_entropy_fused(&mut x, &targets, &g, vocab, &mut l, &mut s);
    close(&l, &l0, 1e-13, "fused fast loss");
    close(&s, &s0, 1e-13, "fused fast lse");
    close(&x, &d0, 1e-13, "fused fast dlogits");
    let f = |x: &[f64]| {
        let (mut l, mut s) = (vec![0.0; rows], vec![0.0; rows]);
        cross_entropy_fwd_ref(x, &targets, vocab, &mut l, &mut s);
        l
    };
    close(&d0, &numeric_grad(&logits, &g, f), 1e-6, "dlogits numeric");
}

/// The f32 fast path (AVX-512 where the CPU has it, its polynomial exponential) against the
/// f64 reference, on rows longer than a vector with a remainder, an ignored row, a masked
/// (−∞) logit and a NaN row.
#[test]
fn cross_entropy_fast_f32_against_the_f64_reference() {
    let (rows, vocab) = (5, 1003);
    let mut logits: Vec<f64> = rand(rows * vocab, 21).iter().map(|x| 8.0 * x).collect();
    logits[2 * vocab + 17] = f64::NEG_INFINITY;
    logits[4 * vocab + 500] = f64::NAN;
    let targets = [3u32, IGNORE, 1002, 0, 9];
    let g = rand(rows, 22);
    let (mut d0, mut l0, mut s0) = (logits.clone(), vec![0.0; rows], vec![0.0; rows]);
    cross_entropy_fused_ref(&mut d0, &targets, &g, vocab, &mut l0, &mut s0);
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let (mut d1, mut l1, mut s1) = (f(&logits), vec![0.0f32; rows], vec![0.0f32; rows]);
    cross_entropy_fused(&mut d1, &targets, &f(&g), vocab, &mut l1, &mut s1);
    let (mut l2, mut s2) = (vec![0.0f32; rows], vec![0.0f32; rows]);
    cross_entropy_fwd(&f(&logits), &targets, vocab, &mut l2, &mut s2);
    let mut d2 = f(&logits);
    cross_entropy_bwd(&mut d2, &targets, &s2, &f(&g), vocab);
    for r in 0..rows {
        let row = r * vocab..(r + 1) * vocab;
        if r == 4 {
            assert!(
                l1[r].is_nan() && s1[r].is_nan() && l2[r].is_nan(),
                "NaN row"
            );
            assert!(
                d1[row.clone()].iter().all(|v| v.is_nan()),
                "NaN row gradient"
            );
            continue;
        }
        for (what, got, want) in [("loss", l1[r], l0[r]), ("lse", s1[r], s0[r])] {
            assert!(
                (got as f64 - want).abs() < 2e-5 * (1.0 + want.abs()),
                "{what} row {r}"
            );
        }
        assert_eq!((l2[r], s2[r]), (l1[r], s1[r]), "fused = forward, row {r}");
        for i in row {
            let tol = 1e-6 * g[r].abs() + 1e-7;
            assert!(
                (d1[i] as f64 - d0[i]).abs() < tol,
                "fused [{i}] {} vs {}",
                d1[i],
                d0[i]
            );
            assert!(
                (d2[i] as f64 - d0[i]).abs() < tol,
                "bwd [{i}] {} vs {}",
                d2[i],
                d0[i]
            );
        }
    }
    assert_eq!(l1[1], 0.0);
    assert!(
        d1[vocab..2 * vocab].iter().all(|&v| v == 0.0),
        "ignored row"
    );
    assert!(d1[2 * vocab + 17].abs() < 1e-30, "masked logit");
}

#[test]
fn embedding_fast_equals_reference_bitwise() {
    let (vocab, d) = (50, 20);
    let table = rand(vocab * d, 15);
    let ids: Vec<u32> = (0..300).map(|i| (i * 7 % 13 + i % 3) as u32).collect();
    let (mut y0, mut y1) = (vec![0.0; ids.len() * d], vec![0.0; ids.len() * d]);
    embedding_fwd_ref(&table, d, &ids, &mut y0);
    embedding_fwd(&table, d, &ids, &mut y1);
    assert_eq!(y0, y1);
    assert_eq!(
        &y0[d..2 * d],
        &table[ids[1] as usize * d..(ids[1] as usize + 1) * d]
    );
    let dy = rand(ids.len() * d, 16);
    let (mut g0, mut g1) = (vec![0.5; vocab * d], vec![0.5; vocab * d]);
    embedding_bwd_ref(&dy, d, &ids, &mut g0);
    embedding_bwd(&dy, d, &ids, &mut g1);
    assert_eq!(g0, g1);
    assert_eq!(g0[49 * d], 0.5, "an unused row keeps its value");
}

#[test]
fn topk_fast_equals_reference_with_ties_and_nan() {
    let rows = [
        vec![0.1, 0.9, 0.3, 0.9, -1.0, 0.2],
        vec![f64::NAN, 1.0, 2.0, f64::NAN, 0.0, 2.0],
        rand(256, 17),
    ];
    for row in &rows {
        for k in [0, 1, 2, 3, 6, 8] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            topk_ref(row, k, &mut a);
            topk(row, k, &mut b);
            assert_eq!(a, b, "k={k}");
        }
    }
    let mut out = Vec::new();
    topk(&rows[0], 3, &mut out);
    assert_eq!(out, vec![1, 3, 2]);
}
