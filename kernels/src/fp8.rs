//! FP8 encode/decode: E4M3FN (bias 7, no infinities, NaN = S.1111.111, max 448) and E5M2
//! (bias 15, IEEE-like: infinities S.11111.00, NaN S.11111.xx, max 57344).
//!
//! `encode` matches `ml_dtypes`' casts bit for bit: round to nearest, ties to even; a magnitude
//! that rounds past the largest finite value becomes NaN (E4M3FN) or infinity (E5M2), as do
//! infinities; NaN keeps its sign. `encode_saturating` clamps finite overflow and infinities to
//! ±max instead — what FP8 training quantizers want, since their scales make overflow a rounding
//! matter — and is checked against `ml_dtypes` after clipping.

use serde::{Deserialize, Serialize};

/// The two FP8 formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fp8Format {
    /// E4M3FN: 4 exponent bits, 3 mantissa bits, finite only (max 448); DeepSeek-V3's format
    /// for every GEMM operand.
    E4M3,
    /// E5M2: 5 exponent bits, 2 mantissa bits, with infinities (max 57344): more range, less
    /// precision.
    E5M2,
}

/// The exponent of the leading bit of `v > 0`, but not below `min_exp` (the subnormal exponent);
/// exact next to powers of two, where `log2` may round.
fn exponent(v: f64, min_exp: i32) -> i32 {
    let e = (v.log2().floor() as i32).max(min_exp);
    let e = if v < 2f64.powi(e) && e > min_exp {
        e - 1
    } else {
        e
    };
    if v >= 2f64.powi(e + 1) { e + 1 } else { e }
}

impl Fp8Format {
    const fn mant_bits(self) -> i32 {
        match self {
            Fp8Format::E4M3 => 3,
            Fp8Format::E5M2 => 2,
        }
    }
    const fn bias(self) -> i32 {
        match self {
            Fp8Format::E4M3 => 7,
            Fp8Format::E5M2 => 15,
        }
    }
    /// Largest finite magnitude: 448 or 57344.
    pub fn max(self) -> f32 {
        match self {
            Fp8Format::E4M3 => 448.0,
            Fp8Format::E5M2 => 57344.0,
        }
    }
    /// Code of the largest finite magnitude (positive).
    const fn max_code(self) -> u8 {
        match self {
            Fp8Format::E4M3 => 0x7E,
            Fp8Format::E5M2 => 0x7B,
        }
    }
    /// Canonical NaN (positive): what `ml_dtypes` produces.
    const fn nan_code(self) -> u8 {
        match self {
            Fp8Format::E4M3 => 0x7F,
            Fp8Format::E5M2 => 0x7E,
        }
    }
    /// What an overflow becomes without saturation (positive).
    const fn overflow_code(self) -> u8 {
        match self {
            Fp8Format::E4M3 => 0x7F,
            Fp8Format::E5M2 => 0x7C,
        }
    }

    /// The value of a code.
    pub fn decode(self, code: u8) -> f32 {
        let sign = if code & 0x80 != 0 { -1.0f32 } else { 1.0 };
        let m_bits = self.mant_bits();
        let e_bits = 7 - m_bits;
        let e = ((code & 0x7F) >> m_bits) as i32;
        let m = (code & ((1 << m_bits) - 1)) as i32;
        let e_max = (1 << e_bits) - 1;
        match self {
            Fp8Format::E4M3 if e == e_max && m == (1 << m_bits) - 1 => {
                return f32::NAN.copysign(sign);
            }
            Fp8Format::E5M2 if e == e_max => {
                return if m == 0 {
                    f32::INFINITY * sign
                } else {
                    f32::NAN.copysign(sign)
                };
            }
            _ => {}
        }
        let v = if e == 0 {
            m as f32 * 2f32.powi(1 - self.bias() - m_bits)
        } else {
            (1.0 + m as f32 / (1 << m_bits) as f32) * 2f32.powi(e - self.bias())
        };
        sign * v
    }

    /// Code of the magnitude `a` (finite, ≥ 0) rounded to nearest even; `None` on overflow.
    fn encode_magnitude(self, a: f32) -> Option<u8> {
        let m_bits = self.mant_bits();
        let min_exp = 1 - self.bias();
        let a = a as f64; // exact
        if a == 0.0 {
            return Some(0);
        }
        let e = exponent(a, min_exp);
        let quantum = 2f64.powi(e - m_bits);
        let q = a / quantum; // exact: a is an f32, quantum a power of two in range
        let mut n = q.floor();
        let frac = q - n;
        if frac > 0.5 || (frac == 0.5 && n % 2.0 == 1.0) {
            n += 1.0;
        }
        let v = n * quantum;
        if v > self.max() as f64 {
            return None;
        }
        if v == 0.0 {
            return Some(0);
        }
        // Re-derive the fields from the rounded value (rounding may carry into the exponent).
        let e = exponent(v, min_exp);
        let (exp_field, mant) = if v < 2f64.powi(min_exp) {
            (0, (v / 2f64.powi(min_exp - m_bits)) as u32)
        } else {
            (
                (e + self.bias()) as u32,
                (v / 2f64.powi(e - m_bits)) as u32 - (1 << m_bits),
            )
        };
        Some(((exp_field << m_bits) | mant) as u8)
    }

    /// `x` as FP8, exactly as `ml_dtypes`' cast does it.
    pub fn encode(self, x: f32) -> u8 {
        let sign = if x.is_sign_negative() { 0x80 } else { 0 };
        if x.is_nan() {
            return sign | self.nan_code();
        }
        if x.is_infinite() {
            return sign | self.overflow_code();
        }
        sign | self
            .encode_magnitude(x.abs())
            .unwrap_or(self.overflow_code())
    }

    /// `x` as FP8 with finite overflow and infinities clamped to ±max; NaN stays NaN.
    pub fn encode_saturating(self, x: f32) -> u8 {
        let sign = if x.is_sign_negative() { 0x80 } else { 0 };
        if x.is_nan() {
            return sign | self.nan_code();
        }
        if x.is_infinite() {
            return sign | self.max_code();
        }
        sign | self.encode_magnitude(x.abs()).unwrap_or(self.max_code())
    }

    /// `x` rounded to the nearest value of the format (saturating).
    pub fn round(self, x: f32) -> f32 {
        self.decode(self.encode_saturating(x))
    }
}

/// `x` rounded to E4M3FN, saturating to ±448 (NaN stays NaN): the same result as
/// `Fp8Format::E4M3.round(x)`, computed with f32 bit arithmetic (no f64, no table) so the
/// quantization of whole tensors is cheap. Test `round_e4m3_equals_the_codec`.
#[inline]
pub fn round_e4m3(x: f32) -> f32 {
    let a = x.abs();
    if a.is_nan() || a >= 448.0 {
        // 448 ≤ |x| (the next value, 480, does not exist in E4M3FN), ±inf, NaN
        return if x.is_nan() { x } else { 448f32.copysign(x) };
    }
    let r = if a < 0.015625 {
        // subnormals (and zero): multiples of 2^-9, round half to even
        const MAGIC: f32 = 8_388_608.0; // 2^23
        ((a * 512.0 + MAGIC) - MAGIC) / 512.0
    } else {
        // normals: keep 3 mantissa bits, round half to even on the f32 bits
        let b = a.to_bits();
        f32::from_bits((b + 0x7_FFFF + ((b >> 20) & 1)) & !0xF_FFFF)
    };
    r.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_e4m3_equals_the_codec() {
        let f = Fp8Format::E4M3;
        let check = |x: f32| {
            let (a, b) = (round_e4m3(x), f.round(x));
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{x:e} ({:#x}): {a:e} vs {b:e}",
                x.to_bits()
            );
        };
        // A stride through every f32 bit pattern, and every midpoint between E4M3 values.
        for bits in (0..=u32::MAX).step_by(997) {
            check(f32::from_bits(bits));
        }
        for code in 0..0x7Eu8 {
            let (lo, hi) = (f.decode(code), f.decode(code + 1));
            let mid = (lo + hi) / 2.0;
            for x in [
                lo,
                hi,
                mid,
                f32::from_bits(mid.to_bits() - 1),
                f32::from_bits(mid.to_bits() + 1),
            ] {
                check(x);
                check(-x);
            }
        }
        for x in [
            447.9,
            448.0,
            463.9,
            464.0,
            1e30,
            f32::INFINITY,
            f32::NAN,
            0.0,
            -0.0,
            1e-45,
        ] {
            check(x);
        }
    }

    #[test]
    fn known_values() {
        let f = Fp8Format::E4M3;
        assert_eq!(f.decode(0x7E), 448.0);
        assert_eq!(f.decode(0x01), 2f32.powi(-9));
        assert!(f.decode(0x7F).is_nan());
        assert_eq!(
            f.encode(464.0),
            0x7E,
            "tie between 448 and 480 goes to even 448"
        );
        assert_eq!(f.encode(465.0), 0x7F, "past it: NaN, as ml_dtypes");
        assert_eq!(f.encode_saturating(1e9), 0x7E);
        assert_eq!(f.encode_saturating(f32::NEG_INFINITY), 0xFE);
        assert_eq!(
            f.encode(2f32.powi(-10)),
            0x00,
            "half the smallest subnormal ties to 0"
        );
        let g = Fp8Format::E5M2;
        assert_eq!(g.decode(0x7B), 57344.0);
        assert_eq!(g.decode(0x7C), f32::INFINITY);
        assert_eq!(
            g.encode(61440.0),
            0x7C,
            "tie past max goes to the even infinity"
        );
        assert_eq!(g.encode(f32::NAN), 0x7E);
    }

    #[test]
    fn every_code_round_trips() {
        for f in [Fp8Format::E4M3, Fp8Format::E5M2] {
            for c in 0..=255u8 {
                let v = f.decode(c);
                if v.is_nan() {
                    continue;
                }
                assert_eq!(f.encode(v), c, "{f:?} code {c:#04x} = {v}");
            }
        }
    }
}
