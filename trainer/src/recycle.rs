//! Large buffers handed back after their last use, for the next buffer of the same type and
//! length that will be overwritten whole.
//!
//! Why: a training step allocates the output head's logits (`tokens × vocabulary` floats, 824 MB
//! for the `small` preset at 8 × 512) and frees them in the weight-gradient pass, every step.
//! A fresh `vec![0.0; n]` of that size is either faulted in and cleared by the kernel, or (from
//! the binary's allocator cache) cleared by `memset`: ~10 % of a BF16 step, measured with
//! `perf` on `bench train`. The head's GEMM writes every element (`accumulate = false`), so
//! the clearing is wasted; a recycled buffer holds earlier, initialised values instead, and
//! the GEMM overwrites them.
//!
//! Only buffers of [`FROM_BYTES`] or more are kept, at most [`SLOTS`] of them; a buffer taken
//! is removed from the pool, so two users never share one.

use std::any::Any;
use std::sync::Mutex;

use tokenmill_kernels::Real;

/// Buffers from this size on are kept.
pub const FROM_BYTES: usize = 64 << 20;
/// Buffers kept at most.
pub const SLOTS: usize = 4;

static POOL: Mutex<Vec<Box<dyn Any + Send>>> = Mutex::new(Vec::new());

fn large<T>(len: usize) -> bool {
    len * std::mem::size_of::<T>() >= FROM_BYTES
}

/// A buffer of `len` elements whose values are unspecified (earlier values of a recycled
/// buffer, or zeros): for outputs written whole before they are read.
pub fn overwritable<T: Real>(len: usize) -> Vec<T> {
    if large::<T>(len)
        && let Ok(mut pool) = POOL.lock()
        && let Some(i) = pool
            .iter()
            .position(|b| b.downcast_ref::<Vec<T>>().is_some_and(|v| v.len() == len))
        && let Ok(v) = pool.swap_remove(i).downcast::<Vec<T>>()
    {
        return *v;
    }
    vec![T::zero(); len]
}

/// Hands a buffer back after its last use; kept when it is large and a slot is free, else
/// dropped.
pub fn recycle<T: Real>(v: Vec<T>) {
    if !large::<T>(v.len()) {
        return;
    }
    if let Ok(mut pool) = POOL.lock()
        && pool.len() < SLOTS
    {
        pool.push(Box::new(v));
    }
}

/// Drops every buffer kept: for a phase that needs the memory more than the next step needs
/// its buffers back (the next step allocates them afresh).
pub fn release() {
    if let Ok(mut pool) = POOL.lock() {
        pool.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_buffer_comes_back_once_and_small_ones_are_not_kept() {
        let n = FROM_BYTES / 4 + 3;
        let mut v = overwritable::<f32>(n);
        assert_eq!(v.len(), n);
        v[7] = 1.5;
        let p = v.as_ptr();
        recycle(v);
        // Another length or type does not take it.
        let (other_len, other_type) = (overwritable::<f32>(n + 1), overwritable::<f64>(n));
        assert_ne!(other_len.as_ptr(), p);
        assert_ne!(other_type.as_ptr() as *const f32, p);
        let w = overwritable::<f32>(n);
        assert_eq!(
            (w.as_ptr(), w[7]),
            (p, 1.5),
            "the same buffer, values as left"
        );
        let again = overwritable::<f32>(n);
        assert_ne!(again.as_ptr(), p, "taken once");
        recycle(vec![1.0f32; 16]);
        assert_eq!(
            overwritable::<f32>(16),
            vec![0.0; 16],
            "small buffers are fresh"
        );
    }
}
