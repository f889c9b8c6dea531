//! Softmax cross-entropy over rows of logits `[rows, vocab]` with integer targets `[rows]`
//! (`IGNORE` = no loss for that row).
//!
//! The forward writes each row's loss and log-sum-exp; the backward writes
//! `dlogits = (softmax − onehot) · g[row]` from the saved log-sum-exp.

use rayon::prelude::*;

use crate::real::Real;

/// Target value of a row that carries no loss.
pub const IGNORE: u32 = u32::MAX;

fn fwd_row<T: Real>(logits: &[T], target: u32) -> (T, T) {
    let mx = logits.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
    let z: T = logits.iter().map(|&x| (x - mx).exp()).sum();
    let lse = mx + z.ln();
    let loss = if target == IGNORE { T::zero() } else { lse - logits[target as usize] };
    (loss, lse)
}

fn bwd_row<T: Real>(logits: &[T], target: u32, lse: T, g: T, d: &mut [T]) {
    if target == IGNORE {
        d.fill(T::zero());
        return;
    }
    for (dj, &x) in d.iter_mut().zip(logits) {
        *dj = (x - lse).exp() * g;
    }
    d[target as usize] -= g;
}

fn check(rows: usize, vocab: usize, targets: &[u32]) {
    assert_eq!(targets.len(), rows);
    for &t in targets {
        assert!(t == IGNORE || (t as usize) < vocab, "target {t} outside the vocabulary of {vocab}");
    }
}

/// Reference forward: `losses [rows]`, `lse [rows]`.
pub fn cross_entropy_fwd_ref<T: Real>(logits: &[T], targets: &[u32], vocab: usize, losses: &mut [T], lse: &mut [T]) {
    check(losses.len(), vocab, targets);
    for (r, row) in logits.chunks(vocab).enumerate() {
        (losses[r], lse[r]) = fwd_row(row, targets[r]);
    }
}

/// Fast forward: rows in parallel.
pub fn cross_entropy_fwd<T: Real>(logits: &[T], targets: &[u32], vocab: usize, losses: &mut [T], lse: &mut [T]) {
    check(losses.len(), vocab, targets);
    logits.par_chunks(vocab).zip(losses.par_iter_mut().zip(lse.par_iter_mut())).enumerate().for_each(|(r, (row, (l, s)))| {
        (*l, *s) = fwd_row(row, targets[r]);
    });
}

/// Reference backward: `dlogits [rows, vocab]`, `g [rows]` = ∂L/∂loss_row.
pub fn cross_entropy_bwd_ref<T: Real>(logits: &[T], targets: &[u32], lse: &[T], g: &[T], vocab: usize, dlogits: &mut [T]) {
    for (r, (row, d)) in logits.chunks(vocab).zip(dlogits.chunks_mut(vocab)).enumerate() {
        bwd_row(row, targets[r], lse[r], g[r], d);
    }
}

/// Fast backward: rows in parallel.
pub fn cross_entropy_bwd<T: Real>(logits: &[T], targets: &[u32], lse: &[T], g: &[T], vocab: usize, dlogits: &mut [T]) {
    logits.par_chunks(vocab).zip(dlogits.par_chunks_mut(vocab)).enumerate().for_each(|(r, (row, d))| {
        bwd_row(row, targets[r], lse[r], g[r], d);
    });
}
