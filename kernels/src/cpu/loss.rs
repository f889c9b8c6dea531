//! Softmax cross-entropy over rows of logits `[rows, vocab]` with integer targets `[rows]`
//! ([`IGNORE`] = no loss for that row).
//!
//! The forward writes each row's loss and log-sum-exp; the backward writes
//! `dlogits = (softmax − onehot) · g[row]` from the saved log-sum-exp. The fast version uses
//! 16-lane reductions and the polynomial exp so the rows vectorize.

use rayon::prelude::*;

use crate::backend::IGNORE;
use crate::real::Real;

/// Lanes of the vectorizable reductions.
const LANES: usize = 16;

fn max_lanes<T: Real>(x: &[T]) -> T {
    let mut m = [T::neg_infinity(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            m[i] = if c[i] > m[i] { c[i] } else { m[i] };
        }
    }
    let mut mx = chunks
        .remainder()
        .iter()
        .fold(T::neg_infinity(), |a, &b| if b > a { b } else { a });
    for v in m {
        mx = if v > mx { v } else { mx };
    }
    if x.iter().any(|v| v.is_nan()) {
        T::nan()
    } else {
        mx
    }
}

fn sum_exp_lanes<T: Real>(x: &[T], shift: T) -> T {
    let mut s = [T::zero(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            s[i] += (c[i] - shift).exp_fast();
        }
    }
    let mut z = chunks
        .remainder()
        .iter()
        .map(|&v| (v - shift).exp_fast())
        .sum::<T>();
    for v in s {
        z += v;
    }
    z
}

fn fwd_row_fast<T: Real>(logits: &[T], target: u32) -> (T, T) {
    let mx = max_lanes(logits);
    let lse = mx + sum_exp_lanes(logits, mx).ln();
    let loss = if target == IGNORE {
        T::zero()
    } else {
        lse - logits[target as usize]
    };
    (loss, lse)
}

fn bwd_row_fast<T: Real>(row: &mut [T], target: u32, lse: T, g: T) {
    if target == IGNORE {
        row.fill(T::zero());
        return;
    }
    for x in row.iter_mut() {
        *x = (*x - lse).exp_fast() * g;
    }
    row[target as usize] -= g;
}

fn fwd_row<T: Real>(logits: &[T], target: u32) -> (T, T) {
    let mx = logits.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
    let z: T = logits.iter().map(|&x| (x - mx).exp()).sum();
    let lse = mx + z.ln();
    let loss = if target == IGNORE {
        T::zero()
    } else {
        lse - logits[target as usize]
    };
    (loss, lse)
}

fn bwd_row<T: Real>(row: &mut [T], target: u32, lse: T, g: T) {
    if target == IGNORE {
        row.fill(T::zero());
        return;
    }
    for x in row.iter_mut() {
        *x = (*x - lse).exp() * g;
    }
    row[target as usize] -= g;
}

fn check(rows: usize, vocab: usize, targets: &[u32]) {
    assert_eq!(targets.len(), rows);
    for &t in targets {
        assert!(
            t == IGNORE || (t as usize) < vocab,
            "target {t} outside the vocabulary of {vocab}"
        );
    }
}

/// Reference forward: `losses [rows]`, `lse [rows]`.
pub fn cross_entropy_fwd_ref<T: Real>(
    logits: &[T],
    targets: &[u32],
    vocab: usize,
    losses: &mut [T],
    lse: &mut [T],
) {
    check(losses.len(), vocab, targets);
    for (r, row) in logits.chunks(vocab).enumerate() {
        (losses[r], lse[r]) = fwd_row(row, targets[r]);
    }
}

/// Fast forward: rows in parallel.
pub fn cross_entropy_fwd<T: Real>(
    logits: &[T],
    targets: &[u32],
    vocab: usize,
    losses: &mut [T],
    lse: &mut [T],
) {
    check(losses.len(), vocab, targets);
    logits
        .par_chunks(vocab)
        .zip(losses.par_iter_mut().zip(lse.par_iter_mut()))
        .enumerate()
        .for_each(|(r, (row, (l, s)))| {
            (*l, *s) = fwd_row_fast(row, targets[r]);
        });
}

/// Reference backward, in place: the logits `[rows, vocab]` become `dlogits`; `g [rows]` =
/// ∂L/∂loss_row. (In place: the logits are the largest activation of a small model, and the
/// backward needs them only here.)
pub fn cross_entropy_bwd_ref<T: Real>(
    logits: &mut [T],
    targets: &[u32],
    lse: &[T],
    g: &[T],
    vocab: usize,
) {
    for (r, row) in logits.chunks_mut(vocab).enumerate() {
        bwd_row(row, targets[r], lse[r], g[r]);
    }
}

/// Fast backward, in place: rows in parallel.
pub fn cross_entropy_bwd<T: Real>(
    logits: &mut [T],
    targets: &[u32],
    lse: &[T],
    g: &[T],
    vocab: usize,
) {
    logits
        .par_chunks_mut(vocab)
        .enumerate()
        .for_each(|(r, row)| {
            bwd_row_fast(row, targets[r], lse[r], g[r]);
        });
}

/// Reference fused forward + backward: writes each row's loss and log-sum-exp and turns the
/// logits into their gradient, row by row (used in training, where `g` is known up front).
pub fn cross_entropy_fused_ref<T: Real>(
    logits: &mut [T],
    targets: &[u32],
    g: &[T],
    vocab: usize,
    losses: &mut [T],
    lse: &mut [T],
) {
    check(losses.len(), vocab, targets);
    for (r, row) in logits.chunks_mut(vocab).enumerate() {
        (losses[r], lse[r]) = fwd_row(row, targets[r]);
        bwd_row(row, targets[r], lse[r], g[r]);
    }
}

/// Fast fused forward + backward: rows in parallel, each row's three passes while it is in
/// cache (one read and one write of the logits from memory instead of three reads and a write).
pub fn cross_entropy_fused<T: Real>(
    logits: &mut [T],
    targets: &[u32],
    g: &[T],
    vocab: usize,
    losses: &mut [T],
    lse: &mut [T],
) {
    check(losses.len(), vocab, targets);
    logits
        .par_chunks_mut(vocab)
        .zip(losses.par_iter_mut().zip(lse.par_iter_mut()))
        .enumerate()
        .for_each(|(r, (row, (l, s)))| {
            (*l, *s) = fwd_row_fast(row, targets[r]);
            bwd_row_fast(row, targets[r], *s, g[r]);
        });
}
