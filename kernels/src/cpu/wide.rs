//! Loops compiled for the CPU they run on. The binary targets baseline x86-64 (SSE2, four f32
//! lanes), so a plain loop over f32 runs four lanes at a time even on a CPU with AVX-512;
//! [`wide`] runs a closure compiled a second time with AVX-512 enabled (sixteen lanes) when the
//! CPU has it. The closure must be `#[inline(always)]` so that its body — and the
//! `#[inline(always)]` helpers it calls — is compiled inside the AVX-512 function rather than
//! called from it.
//!
//! The arithmetic is the same either way: the same operations in the same order per element
//! (no reassociation, no fused multiply-add the source does not write), so a kernel gives the
//! same bits on both paths — only the lane count differs. The reductions a row loop needs
//! (largest value, sum of exponentials) are here in [`LANES`] partial lanes so that they
//! vectorise too.

#![allow(unsafe_code)]

use crate::real::Real;

/// Whether this CPU runs AVX-512F (detected once, cached by std).
#[inline]
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `f()` compiled with AVX-512 enabled.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f`, compiled for AVX-512 when this CPU has it (write the closure
/// `#[inline(always)] || …`).
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F detected on this CPU just above.
        return unsafe { run_avx512(f) };
    }
    f()
}

/// Lanes of the reductions below: one 512-bit vector of f32. A single running sum is a chain
/// the compiler must keep in order; sixteen partial sums vectorise.
pub const LANES: usize = 16;

/// The largest value of `x`, in [`LANES`] lanes. A NaN is skipped here: it reaches a
/// log-sum-exp through the sum of exponentials, which it turns into NaN, so no extra pass
/// looks for it.
#[inline(always)]
pub fn max_lanes<T: Real>(x: &[T]) -> T {
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
    mx
}

/// `Σ exp(x − shift)` in [`LANES`] lanes (the polynomial exponential).
#[inline(always)]
pub fn sum_exp_lanes<T: Real>(x: &[T], shift: T) -> T {
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

/// `x ← exp(x − shift)` in place; returns the sum of the new values, in [`LANES`] lanes.
#[inline(always)]
pub fn exp_in_place_lanes<T: Real>(x: &mut [T], shift: T) -> T {
    let mut s = [T::zero(); LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            c[i] = (c[i] - shift).exp_fast();
            s[i] += c[i];
        }
    }
    let mut z = T::zero();
    for v in chunks.into_remainder() {
        *v = (*v - shift).exp_fast();
        z += *v;
    }
    for v in s {
        z += v;
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths give the same bits on a loop of the kind the kernels run (exponential,
    /// division, max), over inputs spanning the exponential's range.
    #[test]
    fn the_wide_path_gives_the_baseline_bits() {
        let x: Vec<f32> = (0..4099).map(|i| (i as f32 - 2049.0) * 0.05).collect();
        let body = |x: &[f32]| -> Vec<f32> {
            x.iter()
                .map(|&v| (v.exp_fast() / (1.0 + v.abs())).max(-0.25) * 3.0)
                .collect()
        };
        let narrow = body(&x);
        let wide = wide(
            #[inline(always)]
            || body(&x),
        );
        assert_eq!(
            narrow.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            wide.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
