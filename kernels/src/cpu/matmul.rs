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

/// The fewest rows for which the `gemm` crate (0.18) computes every row of a product as it
/// does in a tall one: below it the crate takes other paths whose sums run in another order —
/// a matrix-vector kernel for one row, a dot-product kernel when `m · n ≤ 256` with A's rows and
/// op(B)'s columns contiguous, and K blocks of 512 instead of its cache-derived ones when
/// `m, n ≤ 64`. A row's bits must not depend on how many rows share its product (expert
/// parallelism and pipelines split the tokens of one process's products, and their parity with
/// one process is bit for bit), so smaller products are computed padded to this many rows.
/// (A product with one column, or K ≤ 2, takes the crate's vector kernels whatever its rows:
/// none of the model's has.)
fn rows_for_tall_path(p: MatMul) -> usize {
    let (_, acs) = p.a_strides();
    let (brs, _) = p.b_strides();
    let mut rows = 2;
    if acs == 1 && brs == 1 {
        rows = rows.max(256 / p.n.max(1) + 1);
    }
    if p.n <= 64 && p.k > 512 {
        rows = rows.max(65);
    }
    rows
}

/// The `gemm` crate's kernels (f32 without AVX-512, and f64), on `threads` threads. Each row
/// of C comes out as it would in any taller product ([`rows_for_tall_path`]).
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
    let tall = rows_for_tall_path(p);
    if p.m < tall && p.n > 1 && p.k > 2 {
        // op(A) copied row-major into `tall` rows (zeros below), C likewise.
        let (ars, acs) = p.a_strides();
        let mut ap = vec![T::zero(); tall * p.k];
        for i in 0..p.m {
            for l in 0..p.k {
                ap[i * p.k + l] = a[i * ars + l * acs];
            }
        }
        let mut cp = vec![T::zero(); tall * p.n];
        if p.accumulate {
            cp[..p.m * p.n].copy_from_slice(c);
        }
        let q = MatMul {
            m: tall,
            ta: false,
            ..p
        };
        matmul_gemm_crate(q, &ap, b, &mut cp, threads);
        c.copy_from_slice(&cp[..p.m * p.n]);
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

    /// A row's bits do not depend on how many rows its product has: the first rows of a tall
    /// product, computed alone, in every layout, for the shapes where the `gemm` crate would
    /// otherwise take its small-product paths (one row, few outputs, long K). Fails without the
    /// padding of `matmul_gemm_crate` on a CPU without AVX-512 (where `matmul` is the crate).
    #[test]
    fn a_rows_bits_do_not_depend_on_the_rows_beside_it() {
        let mut r = Rng::new(1);
        let tall = 97;
        for &(n, k) in &[
            (8usize, 32usize),
            (16, 32),
            (2, 40),
            (64, 32),
            (32, 700),
            (200, 96),
        ] {
            for (ta, tb) in [(false, true), (false, false), (true, false), (true, true)] {
                let a: Vec<f32> = (0..tall * k).map(|_| r.normal() as f32).collect();
                let b: Vec<f32> = (0..n * k).map(|_| r.normal() as f32).collect();
                let p = |m| MatMul {
                    m,
                    n,
                    k,
                    ta,
                    tb,
                    accumulate: false,
                };
                let mut c_tall = vec![0f32; tall * n];
                // A's first m rows of op(A): for ta, the first m columns of the stored [k, tall].
                let take = |m: usize| -> Vec<f32> {
                    if ta {
                        (0..k)
                            .flat_map(|l| a[l * tall..l * tall + m].to_vec())
                            .collect()
                    } else {
                        a[..m * k].to_vec()
                    }
                };
                let full = take(tall);
                for (name, mm) in [
                    (
                        "fast",
                        matmul::<f32> as fn(MatMul, &[f32], &[f32], &mut [f32]),
                    ),
                    ("gemm crate", |p, a: &[f32], b: &[f32], c: &mut [f32]| {
                        matmul_gemm_crate(p, a, b, c, 1)
                    }),
                ] {
                    mm(p(tall), &full, &b, &mut c_tall);
                    for m in [1usize, 2, 7, 24, 33, 64] {
                        let mut c = vec![0f32; m * n];
                        mm(p(m), &take(m), &b, &mut c);
                        let differ = (0..m * n)
                            .filter(|&i| c[i].to_bits() != c_tall[i].to_bits())
                            .count();
                        assert_eq!(differ, 0, "{name}: n {n} k {k} ta {ta} tb {tb} m {m}");
                    }
                }
            }
        }
    }

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
