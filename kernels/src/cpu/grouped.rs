//! The grouped GEMM of the MoE experts ([`Grouped`]): one call for every expert's product, each
//! expert's rows a contiguous block of the row operands and its weight (or weight gradient) a
//! block `stride` elements after the previous expert's. Each group is the plain product the
//! expert's linear layer would compute alone (`Backend::matmul`, or `matmul_lowp` with its
//! tiles), so the bits are those of the experts one by one; the fast version runs the groups in
//! parallel.

use rayon::prelude::*;

use super::lowp::{matmul_lowp_fast, matmul_lowp_reference};
use super::matmul::{matmul, matmul_ref};
use crate::backend::{Grouped, GroupedForm, LowpGemm, MatMul};
use crate::real::Real;

/// Group `e`'s product and where its operands lie: (product, A's range, B's range, C's range).
pub fn group(g: &Grouped<'_>, e: usize) -> (MatMul, [std::ops::Range<usize>; 3]) {
    let (r0, r1) = (g.offsets[e], g.offsets[e + 1]);
    let rows = r1 - r0;
    let (n, k) = (g.n, g.k);
    let w = g.block(e);
    match g.form {
        GroupedForm::Forward => (
            MatMul {
                m: rows,
                n,
                k,
                ta: false,
                tb: true,
                accumulate: g.accumulate,
            },
            [r0 * k..r1 * k, w, r0 * n..r1 * n],
        ),
        GroupedForm::Input => (
            MatMul {
                m: rows,
                n,
                k,
                ta: false,
                tb: false,
                accumulate: g.accumulate,
            },
            [r0 * k..r1 * k, w, r0 * n..r1 * n],
        ),
        GroupedForm::Weight => (
            MatMul {
                m: n,
                n: k,
                k: rows,
                ta: true,
                tb: false,
                accumulate: g.accumulate,
            },
            [r0 * n..r1 * n, r0 * k..r1 * k, w],
        ),
    }
}

/// Panics unless the operands fit the groups: offsets from 0, not decreasing; the row operands
/// exactly the rows; the weight buffer exactly its blocks, which do not overlap.
pub fn check<T>(g: &Grouped<'_>, a: &[T], b: &[T], c: &[T]) {
    assert!(
        g.offsets.first() == Some(&0) && g.offsets.windows(2).all(|w| w[0] <= w[1]),
        "grouped GEMM: offsets must start at 0 and not decrease"
    );
    assert!(
        g.stride >= g.n * g.k || g.groups() <= 1,
        "grouped GEMM: blocks of {} elements {} apart overlap",
        g.n * g.k,
        g.stride
    );
    let [la, lb, lc] = g.lens();
    for (what, len, want) in [("A", a.len(), la), ("B", b.len(), lb), ("C", c.len(), lc)] {
        assert_eq!(len, want, "grouped GEMM: {what} must hold {want} elements");
    }
}

/// Checks the operands, then runs `f` on every group with rows and columns — its product, its
/// slices of A and B, its disjoint slice of C — in parallel or in group order; a group with no
/// rows in the weight-gradient form gets zeros (or is left, when accumulating). Returns the sum
/// of what `f` returned (FP8 tiles with a non-finite amax).
pub fn each_group<T: Real>(
    g: Grouped<'_>,
    a: &[T],
    b: &[T],
    c: &mut [T],
    parallel: bool,
    f: impl Fn(MatMul, &[T], &[T], &mut [T]) -> u64 + Sync,
) -> u64 {
    check(&g, a, b, c);
    let one = |e: usize, ce: &mut [T]| -> u64 {
        let (p, [ra, rb, _]) = group(&g, e);
        if p.m == 0 || p.n == 0 {
            return 0;
        }
        if p.k == 0 {
            // An expert with no rows: its weight gradient is zero.
            if !p.accumulate {
                ce.fill(T::zero());
            }
            return 0;
        }
        f(p, &a[ra], &b[rb], ce)
    };
    // The groups' outputs, disjoint, in group order.
    let mut outs: Vec<(usize, &mut [T])> = Vec::with_capacity(g.groups());
    let mut rest = c;
    let mut at = 0;
    for e in 0..g.groups() {
        let (_, [_, _, rc]) = group(&g, e);
        let tail = std::mem::take(&mut rest);
        let (_, from) = tail.split_at_mut(rc.start - at);
        let (mine, after) = from.split_at_mut(rc.len());
        outs.push((e, mine));
        rest = after;
        at = rc.end;
    }
    if parallel {
        outs.into_par_iter().map(|(e, ce)| one(e, ce)).sum()
    } else {
        outs.into_iter().map(|(e, ce)| one(e, ce)).sum()
    }
}

/// The grouped GEMM, the groups one after another on the reference kernels.
pub fn grouped_matmul_ref<T: Real>(
    g: Grouped<'_>,
    a: &[T],
    b: &[T],
    c: &mut [T],
    format: Option<LowpGemm>,
) -> u64 {
    each_group(g, a, b, c, false, |p, a, b, c| match format {
        None => {
            matmul_ref(p, a, b, c);
            0
        }
        Some(f) => matmul_lowp_reference(p, a, b, c, f),
    })
}

/// The grouped GEMM, the groups in parallel on the fast kernels.
pub fn grouped_matmul<T: Real>(
    g: Grouped<'_>,
    a: &[T],
    b: &[T],
    c: &mut [T],
    format: Option<LowpGemm>,
) -> u64 {
    each_group(g, a, b, c, true, |p, a, b, c| match format {
        None => {
            matmul(p, a, b, c);
            0
        }
        Some(f) => matmul_lowp_fast(p, a, b, c, f),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Each group gives the bits of its expert's product alone, on both paths, in every form
    /// and precision, with an empty expert among them.
    #[test]
    fn each_group_is_its_experts_product_alone() {
        let mut r = Rng::new(11);
        let mut randn = |n: usize| -> Vec<f32> { (0..n).map(|_| r.normal() as f32).collect() };
        let offsets = [0, 70, 70, 200, 331];
        let groups = offsets.len() - 1;
        let (n, k) = (150, 260);
        let stride = 3 * n * k; // the gate among an expert's three projections
        let formats = [
            None,
            Some(LowpGemm::Bf16),
            Some(LowpGemm::Fp8 {
                a_tile: (1, 128),
                b_tile: (128, 128),
            }),
        ];
        for form in [
            GroupedForm::Forward,
            GroupedForm::Input,
            GroupedForm::Weight,
        ] {
            for accumulate in [false, true] {
                for format in formats {
                    let g = Grouped {
                        form,
                        offsets: &offsets,
                        n,
                        k,
                        stride,
                        accumulate,
                    };
                    let [la, lb, lc] = g.lens();
                    let (a, b, c0) = (randn(la), randn(lb), randn(lc));
                    let mut want = c0.clone();
                    let mut bad_want = 0;
                    for e in 0..groups {
                        let (p, [ra, rb, rc]) = group(&g, e);
                        if p.m * p.n == 0 {
                            continue;
                        }
                        if p.k == 0 {
                            if !accumulate {
                                want[rc].fill(0.0);
                            }
                            continue;
                        }
                        bad_want += match format {
                            None => {
                                matmul(p, &a[ra], &b[rb], &mut want[rc]);
                                0
                            }
                            Some(f) => matmul_lowp_fast(p, &a[ra], &b[rb], &mut want[rc], f),
                        };
                    }
                    let mut fast = c0.clone();
                    let bad = grouped_matmul(g, &a, &b, &mut fast, format);
                    assert_eq!(bits(&fast), bits(&want), "{form:?} {accumulate} {format:?}");
                    assert_eq!(bad, bad_want);
                    let mut slow = c0.clone();
                    grouped_matmul_ref(g, &a, &b, &mut slow, format);
                    let worst = slow
                        .iter()
                        .zip(&fast)
                        .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
                        .fold(0f32, f32::max);
                    let tol = if format.is_some() { 1e-3 } else { 1e-4 };
                    assert!(worst < tol, "{form:?} {accumulate} {format:?}: {worst}");
                    if form == GroupedForm::Weight {
                        // The gaps between the blocks (an expert's other projections) untouched.
                        assert_eq!(bits(&fast[n * k..stride]), bits(&c0[n * k..stride]));
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "B must hold")]
    fn a_weight_buffer_of_the_wrong_length_is_refused() {
        let g = Grouped {
            form: GroupedForm::Forward,
            offsets: &[0, 1, 2],
            n: 2,
            k: 2,
            stride: 4,
            accumulate: false,
        };
        let mut c = [0f32; 4];
        grouped_matmul(g, &[0f32; 4], &[0f32; 7], &mut c, None);
    }
}
