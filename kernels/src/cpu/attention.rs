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

/// Fast forward: heads in parallel, each head as two GEMMs around a row softmax.
pub fn attention_fwd<T: Real>(
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
    o.par_chunks_mut(n * dv)
        .zip(lse.par_chunks_mut(n))
        .enumerate()
        .for_each(|(h, (oh, lh))| {
            let (qh, kh, vh) = (
                &q[h * n * dk..(h + 1) * n * dk],
                &k[h * n * dk..(h + 1) * n * dk],
                &v[h * n * dv..(h + 1) * n * dv],
            );
            // scores [n, n] = q kᵀ
            let mut p = vec![T::zero(); n * n];
            matmul_serial(MatMul::linear(n, n, dk), qh, kh, &mut p);
            let first = starts.map(|k| k.row(h, n));
            for i in 0..n {
                let lo = first.map_or(0, |f| f[i] as usize);
                let row = &mut p[i * n..(i + 1) * n];
                let mut mx = T::neg_infinity();
                for x in row[lo..=i].iter_mut() {
                    *x *= scale;
                    mx = mx.max(*x);
                }
                let mut z = T::zero();
                for x in row[lo..=i].iter_mut() {
                    *x = (*x - mx).exp_fast();
                    z += *x;
                }
                let inv = T::one() / z;
                for x in row[lo..=i].iter_mut() {
                    *x *= inv;
                }
                row[..lo].fill(T::zero());
                row[i + 1..].fill(T::zero());
                lh[i] = mx + z.ln();
            }
            // o [n, dv] = p v
            matmul_serial(
                MatMul {
                    m: n,
                    n: dv,
                    k: n,
                    ta: false,
                    tb: false,
                    accumulate: false,
                },
                &p,
                vh,
                oh,
            );
        });
}

/// Fast backward: heads in parallel; the probabilities are recomputed from `lse`.
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
    let (n, dqk, dvd) = (s.seq, s.d_qk, s.d_v);
    let scale = T::of(s.scale);
    dq.par_chunks_mut(n * dqk)
        .zip(dk.par_chunks_mut(n * dqk))
        .zip(dv.par_chunks_mut(n * dvd))
        .enumerate()
        .for_each(|(h, ((dqh, dkh), dvh))| {
            let qh = &q[h * n * dqk..(h + 1) * n * dqk];
            let kh = &k[h * n * dqk..(h + 1) * n * dqk];
            let vh = &v[h * n * dvd..(h + 1) * n * dvd];
            let oh = &o[h * n * dvd..(h + 1) * n * dvd];
            let doh = &d_o[h * n * dvd..(h + 1) * n * dvd];
            let lh = &lse[h * n..(h + 1) * n];
            let mut p = vec![T::zero(); n * n];
            matmul_serial(MatMul::linear(n, n, dqk), qh, kh, &mut p);
            let first = starts.map(|k| k.row(h, n));
            let lo = |i: usize| first.map_or(0, |f| f[i] as usize);
            for i in 0..n {
                let row = &mut p[i * n..(i + 1) * n];
                for x in row[lo(i)..=i].iter_mut() {
                    *x = (*x * scale - lh[i]).exp_fast();
                }
                row[..lo(i)].fill(T::zero());
                row[i + 1..].fill(T::zero());
            }
            // dV [n, dv] = Pᵀ dO
            matmul_serial(
                MatMul {
                    m: n,
                    n: dvd,
                    k: n,
                    ta: true,
                    tb: false,
                    accumulate: false,
                },
                &p,
                doh,
                dvh,
            );
            // dP [n, n] = dO Vᵀ
            let mut ds = vec![T::zero(); n * n];
            matmul_serial(MatMul::linear(n, n, dvd), doh, vh, &mut ds);
            for i in 0..n {
                let mut di = T::zero();
                for c in 0..dvd {
                    di += doh[i * dvd + c] * oh[i * dvd + c];
                }
                let (prow, drow) = (&p[i * n..(i + 1) * n], &mut ds[i * n..(i + 1) * n]);
                for j in lo(i)..=i {
                    drow[j] = prow[j] * (drow[j] - di) * scale;
                }
                drow[..lo(i)].fill(T::zero());
                drow[i + 1..].fill(T::zero());
            }
            // dQ [n, dqk] = dS K ; dK [n, dqk] = dSᵀ Q
            matmul_serial(
                MatMul {
                    m: n,
                    n: dqk,
                    k: n,
                    ta: false,
                    tb: false,
                    accumulate: false,
                },
                &ds,
                kh,
                dqh,
            );
            matmul_serial(
                MatMul {
                    m: n,
                    n: dqk,
                    k: n,
                    ta: true,
                    tb: false,
                    accumulate: false,
                },
                &ds,
                qh,
                dkh,
            );
        });
}
