//! An emulated FP8 GEMM with the accumulation of Hopper tensor cores: products of FP8 values are
//! summed in an accumulator that keeps only `mantissa_bits` bits (about 14 measured on H800,
//! per the DeepSeek-V3 report; modelled here by truncating after every addition), and every
//! `promote_every` elements of K the partial sum is scaled and added into an FP32 accumulator on
//! the CUDA cores. Without promotion the whole K stays in the limited accumulator.
//!
//! Shapes: A is `m × k` quantized with `1 × t` tiles (t = the promotion interval), B is `k × n`
//! quantized with `t × t` blocks, so each promotion interval has one scale per row of A and one
//! per block of B. C is `m × n` f32.

use crate::quant::Quantized;

/// The accumulator being emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accumulator {
    /// Mantissa bits kept by the tensor-core accumulator (23 = plain FP32).
    pub mantissa_bits: u32,
    /// Promote to FP32 every this many elements of K (`None`: never).
    pub promote_every: Option<usize>,
}

/// `x` with its f32 mantissa truncated to `bits` bits.
fn truncate(x: f32, bits: u32) -> f32 {
    if bits >= 23 || !x.is_finite() {
        return x;
    }
    let drop = 23 - bits;
    f32::from_bits(x.to_bits() & !((1u32 << drop) - 1))
}

/// C = A · B with the given accumulator.
pub fn fp8_gemm(a: &Quantized, b: &Quantized, acc: Accumulator) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let out = match acc.promote_every {
                Some(nc) => {
                    let mut fp32 = 0.0f32;
                    for k0 in (0..k).step_by(nc) {
                        let mut part = 0.0f32;
                        for kk in k0..(k0 + nc).min(k) {
                            part = truncate(part + a.raw(i, kk) * b.raw(kk, j), acc.mantissa_bits);
                        }
                        fp32 += part * a.scale_at(i, k0) * b.scale_at(k0, j);
                    }
                    fp32
                }
                None => {
                    let mut part = 0.0f32;
                    for kk in 0..k {
                        let p = a.raw(i, kk) * a.scale_at(i, kk) * b.raw(kk, j) * b.scale_at(kk, j);
                        part = truncate(part + p, acc.mantissa_bits);
                    }
                    part
                }
            };
            c[i * n + j] = out;
        }
    }
    c
}

/// The exact product of the dequantized matrices (f64 accumulation): isolates accumulation error.
pub fn reference_gemm(a: &Quantized, b: &Quantized) -> Vec<f64> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let (da, db) = (a.dequantize(), b.dequantize());
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for kk in 0..k {
            let av = da[i * k + kk] as f64;
            for j in 0..n {
                c[i * n + j] += av * db[kk * n + j] as f64;
            }
        }
    }
    c
}

/// ‖C − R‖ / ‖R‖ (Frobenius).
pub fn relative_error(c: &[f32], r: &[f64]) -> f64 {
    let num: f64 = c.iter().zip(r).map(|(x, y)| (*x as f64 - y).powi(2)).sum();
    let den: f64 = r.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fp8::Fp8Format;
    use crate::quant::{ScaleRounding, quantize};
    use crate::rng::Rng;

    /// Positive inputs (post-activation-like): no cancellation, the case where accumulation
    /// error shows most, as in the DeepSeek-V3 report's K = 4096 observation.
    fn matrices(m: usize, k: usize, n: usize) -> (Quantized, Quantized) {
        let mut rng = Rng::new(12345);
        let mut next = || rng.uniform() as f32 + 0.01;
        let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
        (
            quantize(&a, m, k, 1, 128, Fp8Format::E4M3, ScaleRounding::Exact),
            quantize(&b, k, n, 128, 128, Fp8Format::E4M3, ScaleRounding::Exact),
        )
    }

    #[test]
    fn promotion_every_128_removes_the_accumulation_error() {
        let (a, b) = matrices(4, 4096, 4);
        let r = reference_gemm(&a, &b);
        let limited = relative_error(
            &fp8_gemm(
                &a,
                &b,
                Accumulator {
                    mantissa_bits: 14,
                    promote_every: None,
                },
            ),
            &r,
        );
        let promoted = relative_error(
            &fp8_gemm(
                &a,
                &b,
                Accumulator {
                    mantissa_bits: 14,
                    promote_every: Some(128),
                },
            ),
            &r,
        );
        let fp32 = relative_error(
            &fp8_gemm(
                &a,
                &b,
                Accumulator {
                    mantissa_bits: 23,
                    promote_every: None,
                },
            ),
            &r,
        );
        assert!(limited > 5e-3, "14-bit accumulation over K=4096: {limited}");
        assert!(promoted < limited / 10.0, "{promoted} vs {limited}");
        assert!(fp32 < 1e-5, "{fp32}");
    }
}
