//! RMSNorm over rows of width `d`: `y = x · rstd · w`, `rstd = 1/sqrt(mean(x²) + eps)`.
//!
//! Forward saves `rstd` per row `[rows]`; the backward is split into the input gradient and the
//! weight gradient so a pipeline schedule can defer the latter.

use rayon::prelude::*;

use super::wide::wide;
use crate::real::Real;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 16;

#[inline(always)]
fn fwd_row<T: Real>(x: &[T], w: &[T], eps: f64, y: &mut [T]) -> T {
    let d = x.len();
    let ms = x.iter().map(|&v| v * v).sum::<T>() / T::of(d as f64);
    let rstd = T::one() / (ms + T::of(eps)).sqrt();
    for j in 0..d {
        y[j] = x[j] * rstd * w[j];
    }
    rstd
}

#[inline(always)]
fn bwd_row<T: Real>(x: &[T], w: &[T], rstd: T, dy: &[T], dx: &mut [T], accumulate: bool) {
    let d = x.len();
    // dx = rstd · (dy·w − x̂ · mean(dy·w·x̂)), x̂ = x·rstd
    let mut dot = T::zero();
    for j in 0..d {
        dot += dy[j] * w[j] * x[j] * rstd;
    }
    let mean = dot / T::of(d as f64);
    for j in 0..d {
        let g = rstd * (dy[j] * w[j] - x[j] * rstd * mean);
        dx[j] = if accumulate { dx[j] + g } else { g };
    }
}

/// Reference forward. x, y: `[rows, d]`, w: `[d]`, rstd: `[rows]`.
pub fn rmsnorm_fwd_ref<T: Real>(x: &[T], w: &[T], eps: f64, y: &mut [T], rstd: &mut [T]) {
    let d = w.len();
    for (r, (xr, yr)) in x.chunks(d).zip(y.chunks_mut(d)).enumerate() {
        rstd[r] = fwd_row(xr, w, eps, yr);
    }
}

/// Fast forward: rows in parallel.
pub fn rmsnorm_fwd<T: Real>(x: &[T], w: &[T], eps: f64, y: &mut [T], rstd: &mut [T]) {
    let d = w.len();
    y.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .zip(rstd.par_chunks_mut(ROWS_PER_TASK))
        .for_each(|((yb, xb), rb)| {
            wide(
                #[inline(always)]
                || {
                    for (r, (xr, yr)) in xb.chunks(d).zip(yb.chunks_mut(d)).enumerate() {
                        rb[r] = fwd_row(xr, w, eps, yr);
                    }
                },
            )
        });
}

/// Reference input gradient: `dx (+)= ∂L/∂x`. dy, dx: `[rows, d]`.
pub fn rmsnorm_bwd_input_ref<T: Real>(
    x: &[T],
    w: &[T],
    rstd: &[T],
    dy: &[T],
    dx: &mut [T],
    accumulate: bool,
) {
    let d = w.len();
    for (r, ((xr, dyr), dxr)) in x
        .chunks(d)
        .zip(dy.chunks(d))
        .zip(dx.chunks_mut(d))
        .enumerate()
    {
        bwd_row(xr, w, rstd[r], dyr, dxr, accumulate);
    }
}

/// Fast input gradient: rows in parallel.
pub fn rmsnorm_bwd_input<T: Real>(
    x: &[T],
    w: &[T],
    rstd: &[T],
    dy: &[T],
    dx: &mut [T],
    accumulate: bool,
) {
    let d = w.len();
    dx.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .zip(dy.par_chunks(d * ROWS_PER_TASK))
        .zip(rstd.par_chunks(ROWS_PER_TASK))
        .for_each(|(((dxb, xb), dyb), rb)| {
            wide(
                #[inline(always)]
                || {
                    for (r, ((xr, dyr), dxr)) in xb
                        .chunks(d)
                        .zip(dyb.chunks(d))
                        .zip(dxb.chunks_mut(d))
                        .enumerate()
                    {
                        bwd_row(xr, w, rb[r], dyr, dxr, accumulate);
                    }
                },
            )
        });
}

/// Reference weight gradient: `dw += Σ_rows dy · x̂`. dw: `[d]`.
#[inline(always)]
pub fn rmsnorm_bwd_weight_ref<T: Real>(x: &[T], rstd: &[T], dy: &[T], dw: &mut [T]) {
    let d = dw.len();
    for (r, (xr, dyr)) in x.chunks(d).zip(dy.chunks(d)).enumerate() {
        for j in 0..d {
            dw[j] += dyr[j] * xr[j] * rstd[r];
        }
    }
}

/// Fast weight gradient: partial sums over blocks of rows, reduced in block order (so the
/// result does not depend on the thread count).
pub fn rmsnorm_bwd_weight<T: Real>(x: &[T], rstd: &[T], dy: &[T], dw: &mut [T]) {
    let d = dw.len();
    let rows = rstd.len();
    if rows <= 4 * ROWS_PER_TASK {
        return rmsnorm_bwd_weight_ref(x, rstd, dy, dw);
    }
    let block = 4 * ROWS_PER_TASK;
    let partials: Vec<Vec<T>> = (0..rows.div_ceil(block))
        .into_par_iter()
        .map(|b| {
            let (r0, r1) = (b * block, ((b + 1) * block).min(rows));
            let mut acc = vec![T::zero(); d];
            wide(
                #[inline(always)]
                || {
                    rmsnorm_bwd_weight_ref(
                        &x[r0 * d..r1 * d],
                        &rstd[r0..r1],
                        &dy[r0 * d..r1 * d],
                        &mut acc,
                    )
                },
            );
            acc
        })
        .collect();
    for p in partials {
        for j in 0..d {
            dw[j] += p[j];
        }
    }
}
