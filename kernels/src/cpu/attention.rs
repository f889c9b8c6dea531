//! Causal softmax attention with separate query/key and value head dims (MLA's
//! `d_qk = nope + rope` ≠ `d_v`).
//!
//! Layout: q, k `[BH, S, d_qk]`, v `[BH, S, d_v]`, o `[BH, S, d_v]`, where BH = batch × heads.
//! The forward saves the log-sum-exp of each query row, `lse [BH, S]`; the backward recomputes
//! the probabilities from it instead of keeping the `S × S` matrix per head.
//!
//! With [`KeyStarts`] (attention reset at document boundaries) query `i` attends to keys
//! `first(i) ..= i` only: packed documents are mutually invisible, exactly as if each were
//! run alone (RoPE scores depend on `i − j` only, so positions need no reset).

use rayon::prelude::*;

use super::matmul::matmul_serial;
use super::wide::{exp_in_place_lanes, max_lanes, wide};
use crate::backend::{AttnShape, KeyStarts, MatMul, first_key};
use crate::real::Real;

/// Reference forward.
pub fn attention_fwd_ref<T: Real>(
    s: AttnShape,
    starts: Option<KeyStarts<'_>>,
    q: &[T],
    k: &[T],
    v: &[T],
    o: &mut [T],
    lse: &mut [T],
) {
    let (n, dk, dv) = (s.seq, s.d_qk, s.d_v);
    let scale = T::of(s.scale);
    for h in 0..s.bh {
        let (q, k, v) = (&q[h * n * dk..], &k[h * n * dk..], &v[h * n * dv..]);
        for i in 0..n {
            let lo = first_key(starts, h, n, i);
            let mut sc = vec![T::zero(); i + 1 - lo];
            for (jj, scj) in sc.iter_mut().enumerate() {
                let j = lo + jj;
                let mut dot = T::zero();
                for c in 0..dk {
                    dot += q[i * dk + c] * k[j * dk + c];
                }
                *scj = dot * scale;
            }
            let mx = sc.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
            let z: T = sc.iter().map(|&x| (x - mx).exp()).sum();
            lse[h * n + i] = mx + z.ln();
            for c in 0..dv {
                let mut acc = T::zero();
                for (jj, &scj) in sc.iter().enumerate() {
                    acc += (scj - mx).exp() / z * v[(lo + jj) * dv + c];
                }
                o[(h * n + i) * dv + c] = acc;
            }
        }
    }
}

/// Reference backward: writes dq, dk, dv.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd_ref<T: Real>(
    s: AttnShape,
    starts: Option<KeyStarts<'_>>,
    q: &[T],
    k: &[T],
    v: &[T],
    o: &[T],
    lse: &[T],
    d_o: &[T],
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let (n, dqk, dvd) = (s.seq, s.d_qk, s.d_v);
    if n == 0 || s.bh == 0 {
        return;
    }
    let scale = T::of(s.scale);
    dq.fill(T::zero());
    dk.fill(T::zero());
    dv.fill(T::zero());
    for h in 0..s.bh {
        let qo = h * n * dqk;
        let vo = h * n * dvd;
        for i in 0..n {
            // D_i = dO_i · O_i
            let mut di = T::zero();
            for c in 0..dvd {
                di += d_o[vo + i * dvd + c] * o[vo + i * dvd + c];
            }
            for j in first_key(starts, h, n, i)..=i {
                let mut dot = T::zero();
                for c in 0..dqk {
                    dot += q[qo + i * dqk + c] * k[qo + j * dqk + c];
                }
                let p = (dot * scale - lse[h * n + i]).exp();
                let mut dp = T::zero();
                for c in 0..dvd {
                    dp += d_o[vo + i * dvd + c] * v[vo + j * dvd + c];
                    dv[vo + j * dvd + c] += p * d_o[vo + i * dvd + c];
                }
                let ds = p * (dp - di) * scale;
                for c in 0..dqk {
                    dq[qo + i * dqk + c] += ds * k[qo + j * dqk + c];
                    dk[qo + j * dqk + c] += ds * q[qo + i * dqk + c];
                }
            }
        }
    }
}

/// Query rows per block of the fast kernels. A block of rows `[i0, i1)` sees keys
/// `[first, i1)` only (`first`: the block's earliest allowed key), so the keys past the block's
/// last row — half of the `S × S` products of a causal head — are never computed, and the
/// scores of a block (`QB × S` at most, 128 KiB at S = 512) stay in the core's cache.
pub const QB: usize = 64;

/// The keys `[kl, i1)` the query rows `[i0, i1)` of one head can see.
fn keys(first: Option<&[u32]>, i0: usize, i1: usize) -> usize {
    first.map_or(0, |f| f[i0..i1].iter().copied().min().unwrap_or(0) as usize)
}

/// `x ← softmax(scale · x)` in place; returns the log-sum-exp of `scale · x`.
#[inline(always)]
fn softmax<T: Real>(x: &mut [T], scale: T) -> T {
    for v in x.iter_mut() {
        *v *= scale;
    }
    let mx = max_lanes(x);
    let z = exp_in_place_lanes(x, mx);
    let inv = T::one() / z;
    for v in x.iter_mut() {
        *v *= inv;
    }
    mx + z.ln()
}

/// Fast forward: heads in parallel; per head, blocks of [`QB`] query rows as two GEMMs around
/// a row softmax over the keys the block can see.
pub fn attention_fwd<T: Real>(
    s: AttnShape,
    starts: Option<KeyStarts<'_>>,
    q: &[T],
    k: &[T],
    v: &[T],
    o: &mut [T],
    lse: &mut [T],
) {
    attention_fwd_blocked(s, starts, q, k, v, o, lse, QB);
}

/// [`attention_fwd`] with blocks of `qb` query rows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_fwd_blocked<T: Real>(
    s: AttnShape,
    starts: Option<KeyStarts<'_>>,
    q: &[T],
    k: &[T],
    v: &[T],
    o: &mut [T],
    lse: &mut [T],
    qb: usize,
) {
    let (n, dk, dv) = (s.seq, s.d_qk, s.d_v);
    if n == 0 || s.bh == 0 {
        return; // no rows (and chunks of zero elements cannot be iterated)
    }
    let scale = T::of(s.scale);
    let qb = qb.clamp(1, n.max(1));
    o.par_chunks_mut(n * dv)
        .zip(lse.par_chunks_mut(n))
        .enumerate()
        .for_each(|(h, (oh, lh))| {
            wide(
                #[inline(always)]
                || {
                    let (qh, kh, vh) = (
                        &q[h * n * dk..(h + 1) * n * dk],
                        &k[h * n * dk..(h + 1) * n * dk],
                        &v[h * n * dv..(h + 1) * n * dv],
                    );
                    let first = starts.map(|k| k.row(h, n));
                    // Scores, then probabilities, of one block: [rows, nk].
                    let mut scratch = vec![T::zero(); qb * n];
                    for i0 in (0..n).step_by(qb) {
                        let i1 = (i0 + qb).min(n);
                        let (rows, kl) = (i1 - i0, keys(first, i0, i1));
                        let nk = i1 - kl;
                        let p = &mut scratch[..rows * nk];
                        // p [rows, nk] = q[i0..i1] k[kl..i1]ᵀ
                        matmul_serial(
                            MatMul::linear(rows, nk, dk),
                            &qh[i0 * dk..i1 * dk],
                            &kh[kl * dk..i1 * dk],
                            p,
                        );
                        for (r, row) in p.chunks_exact_mut(nk).enumerate() {
                            let i = i0 + r;
                            let lo = first.map_or(0, |f| f[i] as usize) - kl;
                            let hi = i - kl;
                            lh[i] = softmax(&mut row[lo..=hi], scale);
                            row[..lo].fill(T::zero());
                            row[hi + 1..].fill(T::zero());
                        }
                        // o[i0..i1] [rows, dv] = p v[kl..i1]
                        matmul_serial(
                            MatMul {
                                m: rows,
                                n: dv,
                                k: nk,
                                ta: false,
                                tb: false,
                                accumulate: false,
                            },
                            p,
                            &vh[kl * dv..i1 * dv],
                            &mut oh[i0 * dv..i1 * dv],
                        );
                    }
                },
            )
        });
}

/// Fast backward: heads in parallel; per head, blocks of [`QB`] query rows whose
/// probabilities are recomputed from `lse`; dK and dV gather the blocks' contributions.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<T: Real>(
    s: AttnShape,
    starts: Option<KeyStarts<'_>>,
    q: &[T],
    k: &[T],
    v: &[T],
    o: &[T],
    lse: &[T],
    d_o: &[T],
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    attention_bwd_blocked(s, starts, q, k, v, o, lse, d_o, dq, dk, dv, QB);
}

/// [`attention_bwd`] with blocks of `qb` query rows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_bwd_blocked<T: Real>(
    s: AttnShape,
    starts: Option<KeyStarts<'_>>,
    q: &[T],
    k: &[T],
    v: &[T],
    o: &[T],
    lse: &[T],
    d_o: &[T],
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    qb: usize,
) {
    let (n, dqk, dvd) = (s.seq, s.d_qk, s.d_v);
    if n == 0 || s.bh == 0 {
        return;
    }
    let scale = T::of(s.scale);
    let qb = qb.clamp(1, n.max(1));
    dq.par_chunks_mut(n * dqk)
        .zip(dk.par_chunks_mut(n * dqk))
        .zip(dv.par_chunks_mut(n * dvd))
        .enumerate()
        .for_each(|(h, ((dqh, dkh), dvh))| {
            wide(
                #[inline(always)]
                || {
                    let qh = &q[h * n * dqk..(h + 1) * n * dqk];
                    let kh = &k[h * n * dqk..(h + 1) * n * dqk];
                    let vh = &v[h * n * dvd..(h + 1) * n * dvd];
                    let oh = &o[h * n * dvd..(h + 1) * n * dvd];
                    let doh = &d_o[h * n * dvd..(h + 1) * n * dvd];
                    let lh = &lse[h * n..(h + 1) * n];
                    let first = starts.map(|k| k.row(h, n));
                    dkh.fill(T::zero());
                    dvh.fill(T::zero());
                    // Probabilities and score gradients of one block: [rows, nk] each.
                    let mut p_buf = vec![T::zero(); qb * n];
                    let mut ds_buf = vec![T::zero(); qb * n];
                    for i0 in (0..n).step_by(qb) {
                        let i1 = (i0 + qb).min(n);
                        let (rows, kl) = (i1 - i0, keys(first, i0, i1));
                        let nk = i1 - kl;
                        let (qb_rows, dob) = (&qh[i0 * dqk..i1 * dqk], &doh[i0 * dvd..i1 * dvd]);
                        let (kk, vk) = (&kh[kl * dqk..i1 * dqk], &vh[kl * dvd..i1 * dvd]);
                        let p = &mut p_buf[..rows * nk];
                        matmul_serial(MatMul::linear(rows, nk, dqk), qb_rows, kk, p);
                        let span = |r: usize| {
                            let i = i0 + r;
                            (first.map_or(0, |f| f[i] as usize) - kl, i - kl)
                        };
                        for (r, row) in p.chunks_exact_mut(nk).enumerate() {
                            let (lo, hi) = span(r);
                            let l = lh[i0 + r];
                            for x in row[lo..=hi].iter_mut() {
                                *x = (*x * scale - l).exp_fast();
                            }
                            row[..lo].fill(T::zero());
                            row[hi + 1..].fill(T::zero());
                        }
                        // dV[kl..i1] [nk, dv] += pᵀ dO[i0..i1]
                        matmul_serial(
                            MatMul {
                                m: nk,
                                n: dvd,
                                k: rows,
                                ta: true,
                                tb: false,
                                accumulate: true,
                            },
                            p,
                            dob,
                            &mut dvh[kl * dvd..i1 * dvd],
                        );
                        // dP [rows, nk] = dO[i0..i1] v[kl..i1]ᵀ
                        let ds = &mut ds_buf[..rows * nk];
                        matmul_serial(MatMul::linear(rows, nk, dvd), dob, vk, ds);
                        for (r, (prow, drow)) in
                            p.chunks_exact(nk).zip(ds.chunks_exact_mut(nk)).enumerate()
                        {
                            let i = i0 + r;
                            let mut di = T::zero();
                            for c in 0..dvd {
                                di += doh[i * dvd + c] * oh[i * dvd + c];
                            }
                            let (lo, hi) = span(r);
                            for (d, &p) in drow[lo..=hi].iter_mut().zip(&prow[lo..=hi]) {
                                *d = p * (*d - di) * scale;
                            }
                            drow[..lo].fill(T::zero());
                            drow[hi + 1..].fill(T::zero());
                        }
                        // dQ[i0..i1] [rows, dqk] = dS k[kl..i1]
                        matmul_serial(
                            MatMul {
                                m: rows,
                                n: dqk,
                                k: nk,
                                ta: false,
                                tb: false,
                                accumulate: false,
                            },
                            ds,
                            kk,
                            &mut dqh[i0 * dqk..i1 * dqk],
                        );
                        // dK[kl..i1] [nk, dqk] += dSᵀ q[i0..i1]
                        matmul_serial(
                            MatMul {
                                m: nk,
                                n: dqk,
                                k: rows,
                                ta: true,
                                tb: false,
                                accumulate: true,
                            },
                            ds,
                            qb_rows,
                            &mut dkh[kl * dqk..i1 * dqk],
                        );
                    }
                },
            )
        });
}
