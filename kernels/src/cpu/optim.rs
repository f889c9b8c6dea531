//! The optimizer's kernels over the flat parameter buffer: one AdamW step (FP32 master weights
//! and moments) and sums of squares over segments (the global gradient norm and the norms per
//! parameter group), each as a plain reference beside the fast version, bit-identical to it.
//!
//! AdamW, per element with the step's f32 scalars ([`AdamStep`]) and the element's `kind`
//! byte ([`AdamStep::PLAIN`], [`AdamStep::DECAYED`], [`AdamStep::FROZEN`]):
//!
//! ```text
//! g = grad · grad_scale
//! m = β₁·m + (1 − β₁)·g ;  v = β₂·v + (1 − β₂)·g·g      (each rounded to BF16 if bf16_moments)
//! p = p · decay                                         (DECAYED only)
//! p = p − step_size · m / (√v / bc2_sqrt + ε)
//! ```
//!
//! FROZEN elements keep their value and moments. Every operation is one IEEE f32 operation in
//! this order, so a GPU kernel compiled without FMA contraction gives the same bits.
//!
//! A segment's sum of squares is summed in f64 in a fixed order a GPU block of [`LANES`] threads
//! follows too: lane `j` sums `x[a + j]²`, `x[a + j + LANES]²`, … in order from 0, then the lanes
//! are folded pairwise (`lane[j] += lane[j + LANES/2]` for `j < LANES/2`, then `LANES/4`, …, 1).
//! Each square of an f32 is exact in f64; only the sums round, in that order.
//!
//! The fast AdamW is compiled for AVX-512 where the CPU has it (the crate is built for baseline
//! x86-64): the one `unsafe` is calling that version after detecting the feature.

#![allow(unsafe_code)]

use std::ops::Range;

use rayon::prelude::*;

use crate::backend::AdamStep;
use crate::bf16::round_bf16;
use crate::real::Real;

/// Lanes of a sum of squares (the GPU kernel's threads per block).
pub const LANES: usize = 256;

/// Elements per parallel task of the fast AdamW.
const CHUNK: usize = 1 << 14;

/// Checks that the AdamW buffers have one length.
pub fn check_adamw(kind: &[u8], p: &[f32], g: &[f32], m: &[f32], v: &[f32]) {
    let n = p.len();
    assert!(
        kind.len() == n && g.len() == n && m.len() == n && v.len() == n,
        "AdamW: kind {}, params {n}, grads {}, moments {} and {}: not one length",
        kind.len(),
        g.len(),
        m.len(),
        v.len()
    );
}

/// One AdamW step, the plain loop.
pub fn adamw_ref(s: AdamStep, kind: &[u8], p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    check_adamw(kind, p, g, m, v);
    let (c1, c2) = (1.0 - s.beta1, 1.0 - s.beta2);
    for i in 0..p.len() {
        if kind[i] == AdamStep::FROZEN {
            continue;
        }
        let gi = g[i] * s.grad_scale;
        let mut mi = s.beta1 * m[i] + c1 * gi;
        let mut vi = s.beta2 * v[i] + c2 * gi * gi;
        if s.bf16_moments {
            mi = round_bf16(mi);
            vi = round_bf16(vi);
        }
        m[i] = mi;
        v[i] = vi;
        let mut pi = p[i];
        if kind[i] == AdamStep::DECAYED {
            pi *= s.decay;
        }
        p[i] = pi - s.step_size * mi / (vi.sqrt() / s.bc2_sqrt + s.eps);
    }
}

/// One AdamW step, in parallel chunks of branch-free vector code.
pub fn adamw(s: AdamStep, kind: &[u8], p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    check_adamw(kind, p, g, m, v);
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .zip(kind.par_chunks(CHUNK))
        .for_each(|(((p, g), (m, v)), k)| chunk_dispatch(&s, p, g, m, v, k));
}

/// One chunk, branch-free per element (a frozen element keeps its values by selection; no
/// decay is a factor of exactly 1) so that it compiles to vector code: the same IEEE operations
/// in the same order per element as [`adamw_ref`], so the bits are the same.
#[inline(always)]
fn chunk(s: &AdamStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &[u8]) {
    let n = p.len();
    let (g, m, v, k) = (&g[..n], &mut m[..n], &mut v[..n], &k[..n]);
    let (c1, c2) = (1.0 - s.beta1, 1.0 - s.beta2);
    for i in 0..n {
        let gi = g[i] * s.grad_scale;
        let mut mi = s.beta1 * m[i] + c1 * gi;
        let mut vi = s.beta2 * v[i] + c2 * gi * gi;
        if s.bf16_moments {
            mi = round_bf16(mi);
            vi = round_bf16(vi);
        }
        let f = if k[i] == AdamStep::DECAYED {
            s.decay
        } else {
            1.0
        };
        let pi = p[i] * f - s.step_size * mi / (vi.sqrt() / s.bc2_sqrt + s.eps);
        let frozen = k[i] == AdamStep::FROZEN;
        m[i] = if frozen { m[i] } else { mi };
        v[i] = if frozen { v[i] } else { vi };
        p[i] = if frozen { p[i] } else { pi };
    }
}

/// [`chunk`] compiled for AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chunk_avx512(
    s: &AdamStep,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &[u8],
) {
    chunk(s, p, g, m, v, k)
}

fn chunk_dispatch(s: &AdamStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected on this CPU just above.
        unsafe { chunk_avx512(s, p, g, m, v, k) };
        return;
    }
    chunk(s, p, g, m, v, k)
}

/// Checks that every segment lies inside `x` (`len` elements) and that there is one output
/// per segment.
pub fn check_segments(len: usize, segments: &[Range<usize>], out: usize) {
    assert_eq!(
        segments.len(),
        out,
        "sum of squares: one output per segment"
    );
    for r in segments {
        assert!(
            r.start <= r.end && r.end <= len,
            "sum of squares: segment {r:?} outside the {len} elements"
        );
    }
}

/// Folds the lanes pairwise into lane 0.
fn fold(lanes: &mut [f64; LANES]) -> f64 {
    let mut h = LANES / 2;
    while h > 0 {
        for j in 0..h {
            lanes[j] += lanes[j + h];
        }
        h /= 2;
    }
    lanes[0]
}

/// `out[i]` = Σ x² over `segments[i]`, the plain loop: element `a + i` to lane `i % LANES`.
pub fn sum_squares_ref<T: Real>(x: &[T], segments: &[Range<usize>], out: &mut [f64]) {
    check_segments(x.len(), segments, out.len());
    for (r, o) in segments.iter().zip(out.iter_mut()) {
        let mut lanes = [0f64; LANES];
        for (i, v) in x[r.clone()].iter().enumerate() {
            let v = v.f64();
            lanes[i % LANES] += v * v;
        }
        *o = fold(&mut lanes);
    }
}

/// [`sum_squares_ref`], the segments in parallel and each a row of [`LANES`] at a time (vector
/// code: the lanes are independent sums, nothing is reassociated).
pub fn sum_squares<T: Real>(x: &[T], segments: &[Range<usize>], out: &mut [f64]) {
    check_segments(x.len(), segments, out.len());
    segments
        .par_iter()
        .zip(out.par_iter_mut())
        .for_each(|(r, o)| {
            let mut lanes = [0f64; LANES];
            for row in x[r.clone()].chunks(LANES) {
                for (l, v) in lanes.iter_mut().zip(row) {
                    let v = v.f64();
                    *l += v * v;
                }
            }
            *o = fold(&mut lanes);
        });
}

/// `segments` cut so that none is longer than `max` elements (each piece starts at a multiple
/// of `max` past its segment's start): pieces a GPU block sums in one pass.
pub fn split_segments(
    segments: impl IntoIterator<Item = Range<usize>>,
    max: usize,
) -> Vec<Range<usize>> {
    let max = max.max(1);
    let mut out = Vec::new();
    for r in segments {
        let mut a = r.start;
        while a < r.end {
            let b = (a + max).min(r.end);
            out.push(a..b);
            a = b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn the_fast_adamw_gives_the_bits_of_the_plain_loop_and_leaves_frozen_elements() {
        let n = 3 * CHUNK + 1037;
        let mut r = Rng::new(7);
        let mut vals = |scale: f32| -> Vec<f32> {
            (0..n).map(|_| (r.uniform() as f32 - 0.5) * scale).collect()
        };
        let (p0, g, m0) = (vals(2.0), vals(1e-2), vals(1e-3));
        let v0: Vec<f32> = vals(1e-4).iter().map(|x| x.abs()).collect();
        let k: Vec<u8> = (0..n).map(|i| ((i / 7) % 3) as u8).collect();
        for bf16_moments in [false, true] {
            let s = AdamStep::new(0.9, 0.95, 1e-8, 0.1, 3e-4, 3, 0.7, bf16_moments);
            let (mut p1, mut m1, mut v1) = (p0.clone(), m0.clone(), v0.clone());
            adamw_ref(s, &k, &mut p1, &g, &mut m1, &mut v1);
            let (mut p2, mut m2, mut v2) = (p0.clone(), m0.clone(), v0.clone());
            adamw(s, &k, &mut p2, &g, &mut m2, &mut v2);
            assert_eq!(bits(&p1), bits(&p2));
            assert_eq!(bits(&m1), bits(&m2));
            assert_eq!(bits(&v1), bits(&v2));
            for i in 0..n {
                // Frozen: nothing moves; the others' moments always do (a parameter may not,
                // when its update is under half an ulp).
                let frozen = k[i] == AdamStep::FROZEN;
                if frozen {
                    assert_eq!(p1[i].to_bits(), p0[i].to_bits(), "{i}");
                }
                assert_eq!(m1[i].to_bits() == m0[i].to_bits(), frozen, "{i}");
                assert_eq!(v1[i].to_bits() == v0[i].to_bits(), frozen, "{i}");
            }
        }
    }

    /// Against AdamW written out in f64 (PyTorch's rule): decay on DECAYED only.
    #[test]
    fn adamw_follows_the_update_rule() {
        let (lr, wd) = (1e-2, 0.1);
        let mut p = vec![0.5f32, -0.25, 1.0];
        let k = [AdamStep::DECAYED, AdamStep::DECAYED, AdamStep::PLAIN];
        let (mut m, mut v) = (vec![0f32; 3], vec![0f32; 3]);
        let mut want: Vec<f64> = p.iter().map(|&x| x as f64).collect();
        let (mut mw, mut vw) = (vec![0f64; 3], vec![0f64; 3]);
        for (t, g) in [[0.1f32, -0.2, 0.3], [0.05, 0.1, -0.1]].iter().enumerate() {
            let t = t as u64 + 1;
            adamw(
                AdamStep::new(0.9, 0.95, 1e-8, wd, lr, t, 1.0, false),
                &k,
                &mut p,
                g,
                &mut m,
                &mut v,
            );
            for i in 0..3 {
                let gi = g[i] as f64;
                mw[i] = 0.9 * mw[i] + 0.1 * gi;
                vw[i] = 0.95 * vw[i] + 0.05 * gi * gi;
                if k[i] == AdamStep::DECAYED {
                    want[i] *= 1.0 - lr * wd;
                }
                let mh = mw[i] / (1.0 - 0.9f64.powi(t as i32));
                let vh = vw[i] / (1.0 - 0.95f64.powi(t as i32));
                want[i] -= lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        for i in 0..3 {
            assert!(
                (p[i] as f64 - want[i]).abs() < 1e-6,
                "{i}: {} vs {}",
                p[i],
                want[i]
            );
        }
    }

    #[test]
    fn sums_of_squares_follow_the_lane_order_on_both_paths() {
        let mut r = Rng::new(3);
        let x: Vec<f32> = (0..40_000).map(|_| r.normal() as f32).collect();
        let segs = vec![0..0, 0..1, 5..260, 300..557, 1000..40_000, 7..7];
        let (mut a, mut b) = (vec![0f64; segs.len()], vec![0f64; segs.len()]);
        sum_squares_ref(&x, &segs, &mut a);
        sum_squares(&x, &segs, &mut b);
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(a[0], 0.0);
        assert_eq!(a[1], (x[0] as f64).powi(2));
        // The lane order, spelled out for a segment of 257: lane 0 holds x[5]² + x[261]².
        for (k, r) in segs.iter().enumerate() {
            let plain: f64 = x[r.clone()].iter().map(|&v| v as f64 * v as f64).sum();
            assert!((a[k] - plain).abs() <= 1e-12 * plain.max(1.0), "{k}");
        }
        let mut lanes = [0f64; LANES];
        for (i, &v) in x[300..557].iter().enumerate() {
            lanes[i % LANES] += v as f64 * v as f64;
        }
        assert_eq!(fold(&mut lanes).to_bits(), a[3].to_bits());
    }

    #[test]
    fn segments_are_split_at_the_limit_and_keep_their_order() {
        assert_eq!(
            split_segments([0..5, 5..5, 10..21], 4),
            vec![0..4, 4..5, 10..14, 14..18, 18..21]
        );
    }

    #[test]
    #[should_panic(expected = "outside the 10 elements")]
    fn a_segment_past_the_buffer_is_refused() {
        let mut out = [0f64; 2];
        sum_squares(&[0f32; 10], &[0..5, 5..11], &mut out);
    }
}
