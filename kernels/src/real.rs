//! The scalar types the model kernels run in: `f32` for training, `f64` for the
//! finite-difference gradient checks.

use std::fmt::Debug;
use std::iter::Sum;

/// A floating-point element type of the model kernels.
pub trait Real:
    num_traits::Float
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
}
