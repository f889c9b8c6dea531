//! The scalar types the model kernels run in: `f32` for training, `f64` for the
//! finite-difference gradient checks.

use std::fmt::Debug;
use std::iter::Sum;

/// A floating-point element type of the model kernels (plain old data, so buffers of it can
/// travel between processes as bytes).
pub trait Real:
    num_traits::Float
    + bytemuck::Pod
    + num_traits::FromPrimitive
    + Default
    + Debug
    + Send
    + Sync
    + Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + 'static
{
    /// Lossy conversion from f64 (rounds to nearest).
    fn of(x: f64) -> Self;
    /// Widening (or identity) conversion to f64.
    fn f64(self) -> f64;
    /// `exp(self)` for the fast kernels: a branch-free polynomial that vectorizes for f32
    /// (relative error below 2e-7 over the whole range; [`exp_f32`]), the library `exp` for
    /// f64 (used by the gradient checks).
    fn exp_fast(self) -> Self;
    /// The slice as f32, when `Self` is f32 (for kernels specialised to f32).
    fn as_f32(x: &[Self]) -> Option<&[f32]>;
    /// The mutable slice as f32, when `Self` is f32.
    fn as_f32_mut(x: &mut [Self]) -> Option<&mut [f32]>;
}

/// `e^x` in f32 without a library call, so loops over it vectorize: x = n·ln2 + r with
/// |r| ≤ ln2/2, e^r by its degree-7 Taylor polynomial (truncation error < 5e-9 relative), 2^n
/// from the exponent bits. Inputs below −87.3 give ~1e-38 instead of a subnormal or zero;
/// above 88.3 saturate; NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting rounds to an integer
    let x = x.clamp(-87.33, 88.3);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n as an integer, read from t's low mantissa bits (t = 1.5·2^23 + n exactly, |n| ≤ 127)
    // instead of `n as i32`: the saturating float-to-int cast kept the loops over this
    // function from vectorizing (one `vcvttss2si` per lane); the bits are the same.
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(ni.wrapping_add(127) << 23);
    p * scale
}

impl Real for f32 {
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
    #[inline]
    fn as_f32(x: &[Self]) -> Option<&[f32]> {
        Some(x)
    }
    #[inline]
    fn as_f32_mut(x: &mut [Self]) -> Option<&mut [f32]> {
        Some(x)
    }
}

impl Real for f64 {
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        self.exp()
    }
    #[inline]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline]
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn exp_f32_is_accurate_over_the_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(-1e30) < 1e-37);
    }

    #[test]
    fn the_exponent_read_from_the_rounding_bits_is_the_cast() {
        // The integer n taken from t's mantissa bits equals `n as i32` wherever the clamp
        // leaves x, including both ends and the rounding boundaries.
        const ROUND: f32 = 12_582_912.0;
        let mut xs: Vec<f32> = (0..200_000).map(|i| -90.0 + i as f32 * 0.0009).collect();
        xs.extend([
            -87.33,
            88.3,
            0.5 * std::f32::consts::LN_2,
            -0.5 * std::f32::consts::LN_2,
        ]);
        for x in xs {
            let t = x.clamp(-87.33, 88.3) * std::f32::consts::LOG2_E + ROUND;
            let n = t - ROUND;
            let from_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
            assert_eq!(from_bits as i32, n as i32, "{x}");
        }
    }
}
