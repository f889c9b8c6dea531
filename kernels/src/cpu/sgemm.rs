//! A hand-written f32 GEMM for x86-64 with AVX-512: BLIS-style packing of A into `MR`-row
//! panels and of B into `NR`-column panels, and a 14 × 32 register-blocked micro-kernel (28
//! zmm accumulators, B read as two vectors per k, A broadcast from memory).
//!
//! Why: the `gemm` crate enables its AVX-512 kernels only with a nightly compiler; on stable
//! it runs its AVX2 kernels, which measured 85–86 GFLOP/s per core on this project's Xeon, where
//! this kernel runs 115–130 and PyTorch's MKL 162–167 (`tokenmill bench gemm` prints the
//! comparison; the README keeps its table). Other machines (no AVX-512, or f64) use the `gemm`
//! crate.
//!
//! Layout as in [`super::matmul`]: C `[m, n]` row-major; op(A) `[m, k]` and op(B) `[k, n]`
//! given by (row stride, column stride) pairs, so transposed operands cost nothing extra: the
//! packing reads them with their strides.

#![allow(unsafe_code)]

use rayon::prelude::*;

/// Rows of the micro-tile.
pub const MR: usize = 14;
/// Columns of the micro-tile (two 16-lane vectors).
pub const NR: usize = 32;
const KC: usize = 256;
const MC: usize = MR * 8;
const NC: usize = NR * 32;

/// Whether this CPU runs the AVX-512 kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A strided read-only matrix view (also the BF16 GEMM's, [`super::bf16gemm`]).
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub(super) data: &'a [f32],
    /// Row stride.
    pub(super) rs: usize,
    /// Column stride.
    pub(super) cs: usize,
}

impl View<'_> {
    #[inline(always)]
    pub(super) fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.rs + c * self.cs]
    }
}

/// A packing buffer whose working slice starts on a 64-byte boundary, so every 64-byte load of
/// a packed panel (a 16-lane vector, an AMX tile row) reads one cache line, not two.
#[derive(Default)]
pub(super) struct Aligned<T> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    /// A slice of `len` elements holding whatever the last use left there: the packers
    /// write every element of it, padding included (zeroing the whole buffer first cost a
    /// tenth of the BF16 step in `memset`).
    pub(super) fn reuse(&mut self, len: usize) -> &mut [T] {
        let size = std::mem::size_of::<T>();
        if self.buf.len() < len + 64 / size {
            self.buf = vec![T::default(); len + 64 / size];
        }
        let addr = self.buf.as_ptr() as usize;
        self.off = (64 - addr % 64) % 64 / size;
        self.len = len;
        &mut self.buf[self.off..self.off + len]
    }
    pub(super) fn get(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
}

/// Packs rows `[i0, i0+mc)` × cols `[p0, p0+kc)` of op(A) into panels `[mc/MR][kc][MR]`, zero
/// padded to a whole panel.
fn pack_a(a: View<'_>, i0: usize, mc: usize, p0: usize, kc: usize, buf: &mut Aligned<f32>) {
    let panels = mc.div_ceil(MR);
    let out = buf.reuse(panels * kc * MR);
    for pi in 0..panels {
        let dst = &mut out[pi * kc * MR..(pi + 1) * kc * MR];
        let rows = MR.min(mc - pi * MR);
        if rows < MR {
            dst.fill(0.0);
        }
        if a.rs == 1 {
            // Transposed A: the panel's rows are contiguous for each k.
            for l in 0..kc {
                let src = &a.data[(p0 + l) * a.cs + i0 + pi * MR..][..rows];
                dst[l * MR..l * MR + rows].copy_from_slice(src);
            }
        } else {
            for r in 0..rows {
                let i = i0 + pi * MR + r;
                for l in 0..kc {
                    dst[l * MR + r] = a.at(i, p0 + l);
                }
            }
        }
    }
}

/// Packs rows `[p0, p0+kc)` × cols `[j0, j0+nc)` of op(B) into panels `[nc/NR][kc][NR]`,
/// panels in parallel when `parallel`.
fn pack_b(
    b: View<'_>,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    buf: &mut Aligned<f32>,
    parallel: bool,
) {
    let panels = nc.div_ceil(NR);
    let out = buf.reuse(panels * kc * NR);
    let one = |(pj, dst): (usize, &mut [f32])| {
        let cols = NR.min(nc - pj * NR);
        if cols < NR {
            dst.fill(0.0);
        }
        if b.cs == 1 {
            for l in 0..kc {
                let src = &b.data[(p0 + l) * b.rs + j0 + pj * NR..][..cols];
                dst[l * NR..l * NR + cols].copy_from_slice(src);
            }
        } else {
            for c in 0..cols {
                let j = j0 + pj * NR + c;
                for l in 0..kc {
                    dst[l * NR + c] = b.at(p0 + l, j);
                }
            }
        }
    };
    if parallel && panels > 1 {
        out.par_chunks_mut(kc * NR).enumerate().for_each(one);
    } else {
        out.chunks_mut(kc * NR).enumerate().for_each(one);
    }
}

/// `tile [MR][NR] = A_panel [kc][MR] · B_panel [kc][NR]`.
///
/// # Safety
/// The CPU must support AVX-512F; `a` must hold `kc·MR` and `b` `kc·NR` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn micro_kernel(kc: usize, a: &[f32], b: &[f32], tile: &mut [f32; MR * NR]) {
    use std::arch::x86_64::*;
    debug_assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut c0 = [_mm512_setzero_ps(); MR];
    let mut c1 = [_mm512_setzero_ps(); MR];
    for l in 0..kc {
        // SAFETY: l < kc, so l·NR + 16 + 16 ≤ kc·NR and l·MR + r < kc·MR elements are read,
        // within the lengths the caller guarantees.
        unsafe {
            let b0 = _mm512_loadu_ps(pb.add(l * NR));
            let b1 = _mm512_loadu_ps(pb.add(l * NR + 16));
            for r in 0..MR {
                let av = _mm512_set1_ps(*pa.add(l * MR + r));
                c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
                c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
            }
        }
    }
    let pt = tile.as_mut_ptr();
    for r in 0..MR {
        // SAFETY: the tile holds MR·NR elements; row r's 32 elements start at r·NR.
        unsafe {
            _mm512_storeu_ps(pt.add(r * NR), c0[r]);
            _mm512_storeu_ps(pt.add(r * NR + 16), c1[r]);
        }
    }
}

/// A pointer to C shared by tasks that write disjoint blocks.
#[derive(Clone, Copy)]
pub(super) struct CPtr(pub(super) *mut f32);
// SAFETY: tasks write disjoint row blocks of C (see `block`), never the same element.
unsafe impl Send for CPtr {}
// SAFETY: as above; the pointer is only dereferenced inside those disjoint blocks.
unsafe impl Sync for CPtr {}

/// `C (+)= op(A) · op(B)` with the AVX-512 kernel; `threads` > 1 splits C into blocks.
///
/// Panics if the CPU lacks AVX-512F (check [`available`]).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    (ars, acs): (usize, usize),
    b: &[f32],
    (brs, bcs): (usize, usize),
    c: &mut [f32],
    accumulate: bool,
    threads: usize,
) {
    assert!(available(), "sgemm needs AVX-512F");
    assert!(c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    let av = View {
        data: a,
        rs: ars,
        cs: acs,
    };
    let bv = View {
        data: b,
        rs: brs,
        cs: bcs,
    };
    let mb = m.div_ceil(MC);
    let cp = CPtr(c.as_mut_ptr());
    let mut pb = Aligned::default();
    // BLIS order: each (column block, k block) of B is packed once and shared by the row
    // blocks, which run in parallel, each packing its own part of A.
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            pack_b(bv, p0, kc, j0, nc, &mut pb, threads > 1);
            let first = p0 == 0 && !accumulate;
            let pb = pb.get();
            let run = |ib: usize, pa: &mut Aligned<f32>| {
                let i0 = ib * MC;
                let mc = MC.min(m - i0);
                pack_a(av, i0, mc, p0, kc, pa);
                block(pa.get(), pb, cp, n, kc, i0, mc, j0, nc, first);
            };
            if threads > 1 && mb > 1 {
                (0..mb)
                    .into_par_iter()
                    .with_min_len(1)
                    .for_each_init(Aligned::default, |pa, ib| run(ib, pa));
            } else {
                let mut pa = Aligned::default();
                (0..mb).for_each(|ib| run(ib, &mut pa));
            }
        }
    }
}

/// Micro-kernels over one packed `mc × kc` block of A and `kc × nc` block of B, adding into
/// (or, when `first`, writing) C's rows `[i0, i0+mc)` × columns `[j0, j0+nc)`.
#[allow(clippy::too_many_arguments)]
fn block(
    pa: &[f32],
    pb: &[f32],
    c: CPtr,
    ldc: usize,
    kc: usize,
    i0: usize,
    mc: usize,
    j0: usize,
    nc: usize,
    first: bool,
) {
    let mut tile = [0.0f32; MR * NR];
    for pj in 0..nc.div_ceil(NR) {
        let cols = NR.min(nc - pj * NR);
        for pi in 0..mc.div_ceil(MR) {
            let rows = MR.min(mc - pi * MR);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `available()` was asserted by `sgemm`; the panels hold kc·MR and kc·NR
            // elements by construction of pack_a / pack_b.
            unsafe {
                micro_kernel(
                    kc,
                    &pa[pi * kc * MR..(pi + 1) * kc * MR],
                    &pb[pj * kc * NR..(pj + 1) * kc * NR],
                    &mut tile,
                );
            }
            for r in 0..rows {
                let row = i0 + pi * MR + r;
                let col = j0 + pj * NR;
                // SAFETY: row < m and col + cols ≤ n, so the `cols` elements at row·ldc + col
                // lie inside C (m·n elements); this task owns rows [i0, i0+mc) exclusively.
                let dst = unsafe { std::slice::from_raw_parts_mut(c.0.add(row * ldc + col), cols) };
                let src = &tile[r * NR..r * NR + cols];
                if first {
                    dst.copy_from_slice(src);
                } else {
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d += s;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_loop_on_edges_and_layouts() {
        if !available() {
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (13, 31, 5),
            (15, 33, 257),
            (120, 70, 300),
            (29, 1100, 17),
        ] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1)
                    .collect();
                let b: Vec<f32> = (0..k * n)
                    .map(|i| ((i * 3 % 13) as f32 - 6.0) * 0.1)
                    .collect();
                let ast = if ta { (1, m) } else { (k, 1) };
                let bst = if tb { (1, k) } else { (n, 1) };
                for acc in [false, true] {
                    let mut c = vec![0.5f32; m * n];
                    sgemm(m, n, k, &a, ast, &b, bst, &mut c, acc, 2);
                    for i in 0..m {
                        for j in 0..n {
                            let mut s = if acc { 0.5f64 } else { 0.0 };
                            for l in 0..k {
                                s += a[i * ast.0 + l * ast.1] as f64
                                    * b[l * bst.0 + j * bst.1] as f64;
                            }
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - s).abs() < 1e-4 * (1.0 + s.abs()),
                                "{m}x{n}x{k} {ta} {tb} {acc} [{i},{j}]: {got} vs {s}"
                            );
                        }
                    }
                }
            }
        }
    }
}
