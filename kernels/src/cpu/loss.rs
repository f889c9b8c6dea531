//! Softmax cross-entropy over rows of logits `[rows, vocab]` with integer targets `[rows]`
//! ([`IGNORE`] = no loss for that row).
//!
//! The forward writes each row's loss and log-sum-exp; the backward writes
//! `dlogits = (softmax − onehot) · g[row]` from the saved log-sum-exp. The fast version uses
//! 16-lane reductions and the polynomial exp so the rows vectorize, compiled for AVX-512 where
//! the CPU has it (the crate is built for baseline x86-64, whose vectors are 4 lanes); the
//! fused training pass takes one exponential per logit.

#![allow(unsafe_code)]

use rayon::prelude::*;

use super::wide::{exp_in_place_lanes, max_lanes, sum_exp_lanes};
use crate::backend::IGNORE;
use crate::real::Real;

#[inline(always)]
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

#[inline(always)]
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

/// Forward and backward of one row in three passes while it is in cache, one exponential per
/// value: the largest value; `e = exp(x − max)` written over the row and summed into `Z`; then
/// `e · g / Z` (= `softmax · g`), minus `g` at the target. Returns (loss, log-sum-exp).
#[inline(always)]
fn fused_row_fast<T: Real>(row: &mut [T], target: u32, g: T) -> (T, T) {
    let mx = max_lanes(row);
    if target == IGNORE {
        let lse = mx + sum_exp_lanes(row, mx).ln();
        row.fill(T::zero());
        return (T::zero(), lse);
    }
    let at_target = row[target as usize];
    let z = exp_in_place_lanes(row, mx);
    let lse = mx + z.ln();
    let scale = g / z;
    for x in row.iter_mut() {
        *x *= scale;
    }
    row[target as usize] -= g;
    (lse - at_target, lse)
}

/// [`fused_row_fast`] compiled for AVX-512 (16-lane vectors for the exponentials and sums).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fused_row_avx512<T: Real>(row: &mut [T], target: u32, g: T) -> (T, T) {
    fused_row_fast(row, target, g)
}

/// [`fwd_row_fast`] compiled for AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fwd_row_avx512<T: Real>(logits: &[T], target: u32) -> (T, T) {
    fwd_row_fast(logits, target)
}

/// [`bwd_row_fast`] compiled for AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bwd_row_avx512<T: Real>(row: &mut [T], target: u32, lse: T, g: T) {
    bwd_row_fast(row, target, lse, g)
}

/// Whether the rows run their AVX-512 versions.
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn fused_row_dispatch<T: Real>(wide: bool, row: &mut [T], target: u32, g: T) -> (T, T) {
    #[cfg(target_arch = "x86_64")]
    if wide {
        // SAFETY: `wide` is `avx512()`, checked by the caller on this CPU.
        return unsafe { fused_row_avx512(row, target, g) };
    }
    let _ = wide;
    fused_row_fast(row, target, g)
}

fn fwd_row_dispatch<T: Real>(wide: bool, logits: &[T], target: u32) -> (T, T) {
    #[cfg(target_arch = "x86_64")]
    if wide {
        // SAFETY: as in `fused_row_dispatch`.
        return unsafe { fwd_row_avx512(logits, target) };
    }
    let _ = wide;
    fwd_row_fast(logits, target)
}

fn bwd_row_dispatch<T: Real>(wide: bool, row: &mut [T], target: u32, lse: T, g: T) {
    #[cfg(target_arch = "x86_64")]
    if wide {
        // SAFETY: as in `fused_row_dispatch`.
        return unsafe { bwd_row_avx512(row, target, lse, g) };
    }
    let _ = wide;
    bwd_row_fast(row, target, lse, g)
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

/// Every backend's cross-entropy checks its targets first: one per row, each [`IGNORE`] or
/// inside the vocabulary (the device kernels alone would give a NaN loss where the CPU stops).
pub fn check_targets(rows: usize, vocab: usize, targets: &[u32]) {
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
    check_targets(losses.len(), vocab, targets);
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
    check_targets(losses.len(), vocab, targets);
    let wide = avx512();
    logits
        .par_chunks(vocab)
        .zip(losses.par_iter_mut().zip(lse.par_iter_mut()))
        .enumerate()
        .for_each(|(r, (row, (l, s)))| {
            (*l, *s) = fwd_row_dispatch(wide, row, targets[r]);
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
    check_targets(lse.len(), vocab, targets);
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
    check_targets(lse.len(), vocab, targets);
    let wide = avx512();
    logits
        .par_chunks_mut(vocab)
        .enumerate()
        .for_each(|(r, row)| {
            bwd_row_dispatch(wide, row, targets[r], lse[r], g[r]);
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
    check_targets(losses.len(), vocab, targets);
    for (r, row) in logits.chunks_mut(vocab).enumerate() {
        (losses[r], lse[r]) = fwd_row(row, targets[r]);
        bwd_row(row, targets[r], lse[r], g[r]);
    }
}

/// Fast fused forward + backward: rows in parallel, each row's three passes while it is in
/// cache (one read and one write of the logits from memory instead of three reads and a write),
/// one exponential per logit ([`fused_row_fast`]), on AVX-512 where the CPU has it.
pub fn cross_entropy_fused<T: Real>(
    logits: &mut [T],
    targets: &[u32],
    g: &[T],
    vocab: usize,
    losses: &mut [T],
    lse: &mut [T],
) {
    check_targets(losses.len(), vocab, targets);
    let wide = avx512();
    logits
        .par_chunks_mut(vocab)
        .zip(losses.par_iter_mut().zip(lse.par_iter_mut()))
        .enumerate()
        .for_each(|(r, (row, (l, s)))| {
            (*l, *s) = fused_row_dispatch(wide, row, targets[r], g[r]);
        });
}
