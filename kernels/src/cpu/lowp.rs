//! The low-precision GEMM ([`Backend::matmul_lowp`](crate::backend::Backend::matmul_lowp))
//! emulated on the CPU: the operands are converted (rounded to BF16, or quantized to FP8 E4M3
//! with per-tile scales and written back as value × scale) and multiplied by the backend's own
//! f32 GEMM. For FP8, K is cut into chunks of [`FP8_PROMOTE_EVERY`]; each chunk's product goes
//! through the limited accumulator (its mantissa truncated to [`FP8_ACC_MANTISSA_BITS`] bits)
//! and is promoted (added in FP32) into C.
//!
//! BF16 on a CPU with AMX or AVX512-BF16 runs on those units instead
//! ([`matmul_lowp_fast`], [`super::bf16gemm`]): the same rounded operands, FP32 accumulation in
//! another order.
//!
//! Truncating once per chunk is a faster model than [`crate::gemm::fp8_gemm`], which truncates
//! after every addition and stays the reference for accumulator studies.

use super::bf16gemm;
use super::matmul::{matmul, matmul_ref, threads_for};
use crate::backend::{FP8_ACC_MANTISSA_BITS, FP8_PROMOTE_EVERY, LowpGemm, MatMul};
use crate::bf16::round_bf16;
use crate::fp8::Fp8Format;
use crate::quant::{ScaleRounding, fake_quantize};
use crate::real::Real;

/// `C (+)= op(A) · op(B)` in the low-precision `format`, products by `mm` (the backend's GEMM).
/// Returns the FP8 tiles of A and B whose amax was not finite (set to NaN); none when C is
/// empty. f64 operands are not converted: that is `mm` itself.
pub fn matmul_lowp<T: Real>(
    mm: impl Fn(MatMul, &[T], &[T], &mut [T]),
    p: MatMul,
    a: &[T],
    b: &[T],
    c: &mut [T],
    format: LowpGemm,
) -> u64 {
    if T::as_f32(a).is_none() {
        mm(p, a, b, c);
        return 0;
    }
    if p.m == 0 || p.n == 0 {
        // An empty product reads neither operand: nothing is quantized or counted, as for a
        // grouped GEMM's expert without rows.
        p.check(a, b, c);
        return 0;
    }
    let (a_tile, b_tile) = match format {
        LowpGemm::Bf16 => ((1, 1), (1, 1)),
        LowpGemm::Fp8 { a_tile, b_tile } => (a_tile, b_tile),
    };
    let (ar, ac) = p.a_stored();
    let (br, bc) = p.b_stored();
    let (aq, bad_a) = convert(a, ar, ac, a_tile, format);
    let (bq, bad_b) = convert(b, br, bc, b_tile, format);
    match format {
        LowpGemm::Bf16 => mm(p, &aq, &bq, c),
        LowpGemm::Fp8 { .. } => promoted(&mm, p, &aq, &bq, c),
    }
    bad_a + bad_b
}

/// The fast backend's low-precision GEMM: BF16 on the CPU's BF16 unit when it has one
/// ([`super::bf16gemm::unit`]), otherwise (FP8, f64, no unit) the emulation over the fast FP32
/// GEMM.
pub fn matmul_lowp_fast<T: Real>(
    p: MatMul,
    a: &[T],
    b: &[T],
    c: &mut [T],
    format: LowpGemm,
) -> u64 {
    if let (LowpGemm::Bf16, Some(unit), Some(a32), Some(b32)) =
        (format, bf16gemm::unit(), T::as_f32(a), T::as_f32(b))
    {
        p.check(a, b, c);
        let c32 = T::as_f32_mut(c).expect("C has the type of A");
        bf16gemm::gemm_bf16(
            unit,
            p.m,
            p.n,
            p.k,
            a32,
            p.a_strides(),
            b32,
            p.b_strides(),
            c32,
            p.accumulate,
            threads_for(p),
        );
        return 0;
    }
    matmul_lowp(matmul, p, a, b, c, format)
}

/// The reference backend's low-precision GEMM: the emulation over the triple loop.
pub fn matmul_lowp_reference<T: Real>(
    p: MatMul,
    a: &[T],
    b: &[T],
    c: &mut [T],
    format: LowpGemm,
) -> u64 {
    matmul_lowp(matmul_ref, p, a, b, c, format)
}

/// `x` (`[rows, cols]`) fake-quantized in place to FP8 E4M3 with `tile` scales (exact, not
/// rounded to powers of two): the values an FP8 GEMM or an FP8 transfer computes with
/// ([`fake_quantize`]). Returns the tiles with a non-finite amax (set to NaN). Only f32 has an
/// FP8 path.
pub fn fake_quantize_fp8<T: Real>(x: &mut [T], cols: usize, tile: (usize, usize)) -> u64 {
    let rows = x.len() / cols.max(1);
    let v = T::as_f32_mut(x).expect("FP8 fake quantization is of f32 values");
    fake_quantize(
        v,
        rows,
        cols,
        tile.0,
        tile.1,
        Fp8Format::E4M3,
        ScaleRounding::Exact,
    ) as u64
}

/// `x` rounded to BF16 in place (round to nearest even; kept as f32). Only f32 has a BF16 path.
pub fn round_bf16_all<T: Real>(x: &mut [T]) {
    let v = T::as_f32_mut(x).expect("BF16 rounding is of f32 values");
    for y in v {
        *y = round_bf16(*y);
    }
}

/// A copy of `x` (`rows × cols`, f32) as the GEMM sees it, and its count of FP8 tiles with a
/// non-finite amax.
fn convert<T: Real>(
    x: &[T],
    rows: usize,
    cols: usize,
    tile: (usize, usize),
    format: LowpGemm,
) -> (Vec<T>, u64) {
    let mut y = x.to_vec();
    let mut bad = 0;
    if let Some(v) = T::as_f32_mut(&mut y) {
        match format {
            LowpGemm::Bf16 => v.iter_mut().for_each(|e| *e = round_bf16(*e)),
            LowpGemm::Fp8 { .. } => {
                bad = fake_quantize(
                    v,
                    rows,
                    cols,
                    tile.0,
                    tile.1,
                    Fp8Format::E4M3,
                    ScaleRounding::Exact,
                ) as u64;
            }
        }
    }
    (y, bad)
}

/// `x` with its f32 mantissa truncated to `bits` bits.
fn truncate_mantissa(x: f32, bits: u32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    f32::from_bits(x.to_bits() & !((1u32 << (23 - bits)) - 1))
}

/// `C (+)= op(A) · op(B)` on converted f32 operands with the FP8 accumulator: per chunk of K,
/// one GEMM into a partial sum, truncated, then added into C.
fn promoted<T: Real>(
    mm: &impl Fn(MatMul, &[T], &[T], &mut [T]),
    p: MatMul,
    a: &[T],
    b: &[T],
    c: &mut [T],
) {
    let (m, n, k) = (p.m, p.n, p.k);
    if !p.accumulate {
        c.fill(T::zero());
    }
    let mut part = vec![T::zero(); m * n];
    for k0 in (0..k).step_by(FP8_PROMOTE_EVERY) {
        let kc = FP8_PROMOTE_EVERY.min(k - k0);
        // op(A)[:, k0..k0+kc] and op(B)[k0..k0+kc, :], as contiguous row-major matrices.
        let ac: Vec<T> = if p.ta {
            a[k0 * m..(k0 + kc) * m].to_vec()
        } else {
            (0..m)
                .flat_map(|i| a[i * k + k0..i * k + k0 + kc].iter().copied())
                .collect()
        };
        let bc: Vec<T> = if p.tb {
            (0..n)
                .flat_map(|j| b[j * k + k0..j * k + k0 + kc].iter().copied())
                .collect()
        } else {
            b[k0 * n..(k0 + kc) * n].to_vec()
        };
        mm(
            MatMul {
                m,
                n,
                k: kc,
                ta: p.ta,
                tb: p.tb,
                accumulate: false,
            },
            &ac,
            &bc,
            &mut part,
        );
        let (pf, cf) = (
            T::as_f32(&part).expect("f32"),
            T::as_f32_mut(c).expect("f32"),
        );
        for (cv, &pv) in cf.iter_mut().zip(pf) {
            *cv += truncate_mantissa(pv, FP8_ACC_MANTISSA_BITS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| rng.uniform() as f32 - 0.5).collect()
    }

    #[test]
    fn fp8_is_close_to_fp32_and_counts_non_finite_tiles() {
        let (m, n, k) = (5, 7, 300);
        let p = MatMul::linear(m, n, k);
        let (a, mut b) = (rand(m * k, 1), rand(n * k, 2));
        let (mut exact, mut lowp) = (vec![0f32; m * n], vec![0f32; m * n]);
        matmul(p, &a, &b, &mut exact);
        let fp8 = LowpGemm::Fp8 {
            a_tile: (1, 128),
            b_tile: (128, 128),
        };
        assert_eq!(matmul_lowp(matmul, p, &a, &b, &mut lowp, fp8), 0);
        let err: f32 = exact.iter().zip(&lowp).map(|(x, y)| (x - y).abs()).sum();
        let norm: f32 = exact.iter().map(|x| x.abs()).sum();
        assert!(err / norm < 0.1, "relative error {}", err / norm);
        // One infinity in B: its 128 × 128 block (rows 0..7, K 128..256) becomes NaN.
        b[130] = f32::INFINITY;
        assert_eq!(matmul_lowp(matmul, p, &a, &b, &mut lowp, fp8), 1);
        assert!(lowp.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn bf16_rounds_the_operands_and_f64_is_untouched() {
        let p = MatMul::linear(2, 3, 4);
        let (a, b) = (rand(8, 3), rand(12, 4));
        let (ar, br): (Vec<f32>, Vec<f32>) = (
            a.iter().map(|&x| round_bf16(x)).collect(),
            b.iter().map(|&x| round_bf16(x)).collect(),
        );
        let (mut want, mut got) = (vec![0f32; 6], vec![0f32; 6]);
        matmul(p, &ar, &br, &mut want);
        assert_eq!(matmul_lowp(matmul, p, &a, &b, &mut got, LowpGemm::Bf16), 0);
        assert_eq!(want, got);
        let (a64, b64): (Vec<f64>, Vec<f64>) = (
            a.iter().map(|&x| x as f64).collect(),
            b.iter().map(|&x| x as f64).collect(),
        );
        let (mut want, mut got) = (vec![0f64; 6], vec![0f64; 6]);
        matmul(p, &a64, &b64, &mut want);
        matmul_lowp(matmul, p, &a64, &b64, &mut got, LowpGemm::Bf16);
        assert_eq!(want, got);
    }
}
