//! SwiGLU: `h = silu(g) ⊙ u`, `silu(g) = g·σ(g)`; g, u, h: `[rows, f]`.

use rayon::prelude::*;

use super::wide::wide;
use crate::real::Real;

const CHUNK: usize = 4096;

#[inline(always)]
fn sigmoid<T: Real, const FAST: bool>(x: T) -> T {
    let e = if FAST { (-x).exp_fast() } else { (-x).exp() };
    T::one() / (T::one() + e)
}

#[inline(always)]
fn fwd1<T: Real, const FAST: bool>(g: T, u: T) -> T {
    g * sigmoid::<T, FAST>(g) * u
}

#[inline(always)]
fn bwd1<T: Real, const FAST: bool>(g: T, u: T, dh: T) -> (T, T) {
    let s = sigmoid::<T, FAST>(g);
    let silu = g * s;
    (dh * u * s * (T::one() + g * (T::one() - s)), dh * silu)
}

/// Reference forward.
pub fn swiglu_fwd_ref<T: Real>(g: &[T], u: &[T], h: &mut [T]) {
    for i in 0..h.len() {
        h[i] = fwd1::<T, false>(g[i], u[i]);
    }
}

/// Fast forward (chunks in parallel).
pub fn swiglu_fwd<T: Real>(g: &[T], u: &[T], h: &mut [T]) {
    h.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(u.par_chunks(CHUNK))
        .for_each(|((h, g), u)| {
            wide(
                #[inline(always)]
                || {
                    for i in 0..h.len() {
                        h[i] = fwd1::<T, true>(g[i], u[i]);
                    }
                },
            )
        });
}

/// Reference backward: writes dg and du.
pub fn swiglu_bwd_ref<T: Real>(g: &[T], u: &[T], dh: &[T], dg: &mut [T], du: &mut [T]) {
    for i in 0..dh.len() {
        (dg[i], du[i]) = bwd1::<T, false>(g[i], u[i], dh[i]);
    }
}

/// Fast backward.
pub fn swiglu_bwd<T: Real>(g: &[T], u: &[T], dh: &[T], dg: &mut [T], du: &mut [T]) {
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(
            g.par_chunks(CHUNK)
                .zip(u.par_chunks(CHUNK))
                .zip(dh.par_chunks(CHUNK)),
        )
        .for_each(|((dg, du), ((g, u), dh))| {
            wide(
                #[inline(always)]
                || {
                    for i in 0..dh.len() {
                        (dg[i], du[i]) = bwd1::<T, true>(g[i], u[i], dh[i]);
                    }
                },
            )
        });
}
