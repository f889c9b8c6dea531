//! The strided copy ([`Strided`]): a layer's head reshapes, column splits, concatenations and
//! residual adds as one operation. The reference walks the index space element by element in
//! lexicographic order; the fast version copies or adds whole innermost rows, and runs outer
//! indices (or blocks of a flat copy) in parallel only where each owns its own part of the
//! destination, which keeps every destination element's terms in the same order, so both give
//! the same bits. The CUDA kernel `strided_copy_f32` (cu/strided.cu) adds
//! a summed dimension's terms in the same order.

use rayon::prelude::*;

use crate::backend::Strided;
use crate::real::Real;

/// Elements per parallel block of a flat copy.
const BLOCK: usize = 1 << 14;

/// Tasks below this many elements in all run on the calling thread.
const SERIAL: usize = 1 << 15;

/// `dst (+)= src` over the index space of `c`, element by element.
pub fn copy_ref<T: Real>(c: Strided, src: &[T], dst: &mut [T]) {
    c.check(src.len(), dst.len());
    let [n0, n1, n2, n3] = c.dims;
    for i0 in 0..n0 {
        for i1 in 0..n1 {
            for i2 in 0..n2 {
                for i3 in 0..n3 {
                    let at = |s: &[usize; 4], a: usize| {
                        a + i0 * s[0] + i1 * s[1] + i2 * s[2] + i3 * s[3]
                    };
                    let (s, d) = (at(&c.src, c.src_at), at(&c.dst, c.dst_at));
                    if c.accumulate {
                        dst[d] += src[s];
                    } else {
                        dst[d] = src[s];
                    }
                }
            }
        }
    }
}

/// Elements of `dst` written at outer index `i0`, one innermost row at a time: rows copied or
/// added as slices where both innermost strides are 1. `dst` starts at destination element
/// `base` (a chunk of the whole destination).
fn outer_slab<T: Real>(c: &Strided, i0: usize, src: &[T], dst: &mut [T], base: usize) {
    let [_, n1, n2, n3] = c.dims;
    for i1 in 0..n1 {
        for i2 in 0..n2 {
            let at = |s: &[usize; 4], a: usize| a + i0 * s[0] + i1 * s[1] + i2 * s[2];
            let (s0, d0) = (at(&c.src, c.src_at), at(&c.dst, c.dst_at) - base);
            if c.src[3] == 1 && c.dst[3] == 1 {
                let (from, to) = (&src[s0..s0 + n3], &mut dst[d0..d0 + n3]);
                if c.accumulate {
                    for (y, &x) in to.iter_mut().zip(from) {
                        *y += x;
                    }
                } else {
                    to.copy_from_slice(from);
                }
            } else {
                for i3 in 0..n3 {
                    let (x, y) = (src[s0 + i3 * c.src[3]], &mut dst[d0 + i3 * c.dst[3]]);
                    if c.accumulate {
                        *y += x;
                    } else {
                        *y = x;
                    }
                }
            }
        }
    }
}

/// `dst (+)= src` over the index space of `c`: a contiguous elementwise copy or add in
/// parallel blocks; otherwise innermost rows at a time, the outermost indices in parallel
/// where each owns its own stretch of the destination (its stride past everything the inner
/// dimensions reach), else in order.
pub fn copy<T: Real>(c: Strided, src: &[T], dst: &mut [T]) {
    c.check(src.len(), dst.len());
    let n = c.count();
    if n == 0 {
        return;
    }
    let flat = c.dims[..3] == [1, 1, 1] && c.src[3] == 1 && c.dst[3] == 1;
    if flat {
        let (from, to) = (
            &src[c.src_at..c.src_at + n],
            &mut dst[c.dst_at..c.dst_at + n],
        );
        to.par_chunks_mut(BLOCK)
            .zip(from.par_chunks(BLOCK))
            .for_each(|(y, x)| {
                if c.accumulate {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y += x;
                    }
                } else {
                    y.copy_from_slice(x);
                }
            });
        return;
    }
    let [n0, ..] = c.dims;
    let inner = (1..4).map(|d| (c.dims[d] - 1) * c.dst[d]).sum::<usize>() + 1;
    let stride = c.dst[0];
    if n0 > 1 && stride >= inner && n >= SERIAL {
        // Outer index i0 writes dst_at + i0·stride .. + inner only.
        let body = &mut dst[c.dst_at..c.dst_at + (n0 - 1) * stride + inner];
        body.par_chunks_mut(stride)
            .enumerate()
            .for_each(|(i0, slab)| outer_slab(&c, i0, src, slab, c.dst_at + i0 * stride));
    } else {
        for i0 in 0..n0 {
            outer_slab(&c, i0, src, dst, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.normal() as f32).collect()
    }

    /// Heads to tokens `[b, H, s, w] → [b, s, H, w]` and back, a column split, a broadcast,
    /// a sum over heads and a long elementwise add: the fast copy gives the reference's bits.
    #[test]
    fn the_fast_copy_gives_the_reference_bits() {
        // Large enough for the parallel paths (≥ `SERIAL` elements).
        let (b, h, s, w) = (4, 8, 64, 40);
        let heads = [b, h, s, w];
        let tokens = [s * h * w, w, h * w, 1];
        let cases = [
            (
                Strided {
                    dims: heads,
                    src: Strided::dense(heads),
                    src_at: 0,
                    dst: tokens,
                    dst_at: 0,
                    accumulate: false,
                },
                b * h * s * w,
                b * h * s * w,
            ),
            (
                Strided {
                    dims: heads,
                    src: tokens,
                    src_at: 0,
                    dst: Strided::dense(heads),
                    dst_at: 0,
                    accumulate: false,
                },
                b * h * s * w,
                b * h * s * w,
            ),
            (
                Strided::columns(b * s, 9, (w, 15), (9, 0)),
                b * s * w,
                b * s * 9,
            ),
            // The shared RoPE key broadcast to every head: source stride 0 over heads.
            (
                Strided {
                    dims: [b, h, s, 16],
                    src: [s * 16, 0, 16, 1],
                    src_at: 0,
                    dst: [h * s * w, s * w, w, 1],
                    dst_at: 24,
                    accumulate: false,
                },
                b * s * 16,
                b * h * s * w,
            ),
            // Its gradient summed over heads: destination stride 0.
            (
                Strided {
                    dims: [b, h, s, 16],
                    src: [h * s * w, s * w, w, 1],
                    src_at: 24,
                    dst: [s * 16, 0, 16, 1],
                    dst_at: 0,
                    accumulate: true,
                },
                b * h * s * w,
                b * s * 16,
            ),
            (Strided::elementwise(100_003, true), 100_003, 100_003),
            (Strided::elementwise(100_003, false), 100_003, 100_003),
        ];
        for (i, (c, ns, nd)) in cases.into_iter().enumerate() {
            let src = random(ns, i as u64);
            let init = random(nd, 100 + i as u64);
            let (mut a, mut f) = (init.clone(), init.clone());
            copy_ref(c, &src, &mut a);
            copy(c, &src, &mut f);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&f), "case {i}: {c:?}");
            assert_ne!(a, init, "case {i} wrote nothing");
        }
    }

    #[test]
    fn heads_to_tokens_moves_each_element_where_the_layout_says() {
        // [b=1, H=2, s=2, w=2] → [s, H, w]: element (h, t, c) = 100h + 10t + c.
        let x: Vec<f32> = [0., 1., 10., 11., 100., 101., 110., 111.].to_vec();
        let c = Strided {
            dims: [1, 2, 2, 2],
            src: Strided::dense([1, 2, 2, 2]),
            src_at: 0,
            dst: [8, 2, 4, 1],
            dst_at: 0,
            accumulate: false,
        };
        let mut y = vec![0.0f32; 8];
        copy(c, &x, &mut y);
        assert_eq!(y, vec![0., 1., 100., 101., 10., 11., 110., 111.]);
    }

    #[test]
    #[should_panic(expected = "writes a destination element twice")]
    fn overlapping_destinations_are_refused() {
        let c = Strided {
            dims: [1, 1, 4, 4],
            src: [0, 0, 4, 1],
            src_at: 0,
            dst: [0, 0, 2, 1],
            dst_at: 0,
            accumulate: false,
        };
        copy(c, &[0.0f32; 16], &mut [0.0f32; 16]);
    }

    #[test]
    #[should_panic(expected = "needs accumulate")]
    fn a_sum_without_accumulate_is_refused() {
        let c = Strided {
            dims: [1, 1, 4, 4],
            src: [0, 0, 4, 1],
            src_at: 0,
            dst: [0, 0, 0, 1],
            dst_at: 0,
            accumulate: false,
        };
        copy(c, &[0.0f32; 16], &mut [0.0f32; 4]);
    }
}
