//! Loops compiled for the CPU they run on. The binary targets baseline x86-64 (SSE2, four f32
//! lanes), so a plain loop over f32 runs four lanes at a time even on a CPU with AVX-512;
//! [`wide`] runs a closure compiled a second time with AVX-512 enabled (sixteen lanes) when the
//! CPU has it. The closure must be `#[inline(always)]` so that its body — and the
//! `#[inline(always)]` helpers it calls — is compiled inside the AVX-512 function rather than
//! called from it.
//!
//! The arithmetic is the same either way: the same operations in the same order per element
//! (no reassociation, no fused multiply-add the source does not write), so a kernel gives the
//! same bits on both paths — only the lane count differs.

#![allow(unsafe_code)]

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths give the same bits on a loop of the kind the kernels run (exponential,
    /// division, max), over inputs spanning the exponential's range.
    #[test]
    fn the_wide_path_gives_the_baseline_bits() {
        use crate::real::Real;
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
