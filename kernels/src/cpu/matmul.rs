//! Matrix multiplication: `C[m,n] (+)= op(A)[m,k] · op(B)[k,n]`, row-major storage.
//!
//! The shape and layout are a [`MatMul`]: `op(A)` is A itself when A is stored `[m,k]`, or its
//! transpose when A is stored `[k,m]` (`ta = true`); likewise B is stored `[k,n]` or `[n,k]`
//! (`tb = true`). A linear layer `y = x Wᵀ` is `matmul(MatMul::linear(rows, out, in), x, w, y)`.
//!
//! The fast path for f32 on an x86-64 CPU with AVX-512 is tokenmill's own SGEMM
//! ([`super::sgemm`]); everywhere else (no AVX-512, or f64) it is the `gemm` crate (BLIS-style
//! packed micro-kernels with runtime SIMD dispatch, [`matmul_gemm_crate`]). `bench gemm`
//! measures both against this machine's peak. The reference is a triple loop accumulating in
//! `T`.

use crate::backend::MatMul;
use crate::real::Real;

/// Reference: a plain triple loop.
pub fn matmul_ref<T: Real>(p: MatMul, a: &[T], b: &[T], c: &mut [T]) {
    p.check(a, b, c);
    let (ars, acs) = p.a_strides();
    let (brs, bcs) = p.b_strides();
    for i in 0..p.m {
        for j in 0..p.n {
            let mut s = T::zero();
            for l in 0..p.k {
                s += a[i * ars + l * acs] * b[l * brs + j * bcs];
            }
            let dst = &mut c[i * p.n + j];
            *dst = if p.accumulate { *dst + s } else { s };
        }
    }
}

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Threads for a product of this size: the rayon pool's when it is large enough, else one.
pub(crate) fn threads_for(p: MatMul) -> usize {
    if p.m * p.n * p.k >= PARALLEL_MIN_MACS {
        rayon::current_num_threads()
    } else {
        1
    }
}

/// Fast path, multi-threaded over the rayon pool when the product is large enough.
pub fn matmul<T: Real>(p: MatMul, a: &[T], b: &[T], c: &mut [T]) {
    matmul_threads(p, a, b, c, threads_for(p));
}

/// Fast path on the calling thread only (for callers that are already parallel).
pub fn matmul_serial<T: Real>(p: MatMul, a: &[T], b: &[T], c: &mut [T]) {
    matmul_threads(p, a, b, c, 1);
}

fn matmul_threads<T: Real>(p: MatMul, a: &[T], b: &[T], c: &mut [T], threads: usize) {
    p.check(a, b, c);
    if let (Some(a32), Some(b32)) = (T::as_f32(a), T::as_f32(b))
        && super::sgemm::available()
    {
        let c32 = T::as_f32_mut(c).expect("C has the type of A");
        super::sgemm::sgemm(
            p.m,
            p.n,
            p.k,
            a32,
            p.a_strides(),
            b32,
            p.b_strides(),
            c32,
            p.accumulate,
            threads,
        );
        return;
    }
    matmul_gemm_crate(p, a, b, c, threads);
}

/// The `gemm` crate's kernels (f32 without AVX-512, and f64), on `threads` threads.
#[allow(unsafe_code)]
pub fn matmul_gemm_crate<T: Real>(p: MatMul, a: &[T], b: &[T], c: &mut [T], threads: usize) {
    p.check(a, b, c);
    if p.m == 0 || p.n == 0 {
        return;
    }
    if p.k == 0 {
        if !p.accumulate {
            c.fill(T::zero());
        }
        return;
    }
    let (ars, acs) = p.a_strides();
    let (brs, bcs) = p.b_strides();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the pointers come from slices whose lengths were checked against m·k, k·n and
    // m·n above, and the strides describe exactly those row-major layouts, so every element
    // gemm reads or writes is in bounds; `c` is borrowed mutably and does not alias `a`/`b`.
    // `T` is f32 or f64 (the only `Real` types), which gemm supports.
    unsafe {
        gemm::gemm(
            p.m,
            p.n,
            p.k,
            c.as_mut_ptr(),
            1,
            p.n as isize,
            p.accumulate,
            a.as_ptr(),
            acs as isize,
            ars as isize,
            b.as_ptr(),
            bcs as isize,
            brs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// `n` numbers uniform in [-0.5, 0.5).
    fn rand(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| rng.uniform() - 0.5).collect()
    }

    #[test]
    fn fast_matches_reference_in_every_layout() {
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (33, 17, 65), (70, 90, 130)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for acc in [false, true] {
                        let p = MatMul {
                            m,
                            n,
                            k,
                            ta,
                            tb,
                            accumulate: acc,
                        };
                        let a = rand(m * k, 1);
                        let b = rand(k * n, 2);
                        let c0 = rand(m * n, 3);
                        let (mut r, mut f) = (c0.clone(), c0.clone());
                        matmul_ref(p, &a, &b, &mut r);
                        matmul(p, &a, &b, &mut f);
                        for (x, y) in r.iter().zip(&f) {
                            assert!((x - y).abs() < 1e-12, "{p:?}: {x} vs {y}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn f32_large_parallel_product() {
        let (m, n, k) = (128, 96, 200);
        let p = MatMul::linear(m, n, k);
        let a: Vec<f32> = rand(m * k, 4).iter().map(|&x| x as f32).collect();
        let b: Vec<f32> = rand(n * k, 5).iter().map(|&x| x as f32).collect();
        let (mut r, mut f) = (vec![0f32; m * n], vec![1f32; m * n]);
        matmul_ref(p, &a, &b, &mut r);
        matmul(p, &a, &b, &mut f);
        for (x, y) in r.iter().zip(&f) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
}
