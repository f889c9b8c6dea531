//! A hand-written f32 GEMM for x86-64 with AVX-512: BLIS-style packing of A into `MR`-row
//! panels and of B into `NR`-column panels, and a 14 × 32 register-blocked micro-kernel (28
//! zmm accumulators, B read as two vectors per k, A broadcast from memory) that writes whole
//! tiles of C straight from its registers.
//!
//! Why: the `gemm` crate enables its AVX-512 kernels only with a nightly compiler; on stable
//! it runs its AVX2 kernels (~110 GFLOP/s per core on this project's Xeon). `tokenmill bench
//! gemm` prints this kernel against it and PyTorch's MKL; `--example gemm_shapes` times the
//! shapes of a training step. Other machines (no AVX-512, or f64) use the `gemm` crate.
//!
//! What made it fast on the step's shapes (2 threads, GFLOP/s before → after, same minute):
//! A micro-panels held in L1 with the B panels streaming past (C written along its rows; the
//! head's forward 200 → 290), operands stored across k transposed by 16 × 16 register blocks
//! instead of element by element (the head's input gradient 178 → 245), all of B packed at
//! once when it fits in 16 MB so each row block keeps its part of C in cache over every k
//! block (a block's weight gradient 180 → 220), and a transposed A's rows prefetched ahead
//! (the head's weight gradient 209 → 237).
//!
//! Layout as in [`super::matmul`]: C `[m, n]` row-major; op(A) `[m, k]` and op(B) `[k, n]`
//! given by (row stride, column stride) pairs, so transposed operands cost nothing extra: the
//! packing reads them with their strides.

#![allow(unsafe_code)]

use std::cell::RefCell;

use rayon::prelude::*;

/// Rows of the micro-tile.
pub const MR: usize = 14;
/// Columns of the micro-tile (two 16-lane vectors).
pub const NR: usize = 32;
const KC: usize = 256;
const MC: usize = MR * 8;
const NC: usize = NR * 32;
/// The most B (bytes, packed) packed at once for a span of k blocks of a column block.
const WHOLE_B_BYTES: usize = 1 << 24;
/// Largest A packed once for all blocks of columns when k fits one block ([`a_once`]).
const WHOLE_A_BYTES: usize = 1 << 24;
/// Rows of a transposed A prefetched ahead of the one being packed.
const PREFETCH_ROWS: usize = 8;

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

/// Asks for every cache line of `run` to be brought into L1 (a hint; nothing is read).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn prefetch(run: &[f32]) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    for x in (0..run.len()).step_by(16) {
        // SAFETY: prefetching is a hint that cannot fault; the address is inside `run`.
        unsafe { _mm_prefetch::<{ _MM_HINT_T0 }>(run.as_ptr().add(x).cast()) };
    }
}

/// Packs rows `[i0, i0+mc)` × cols `[p0, p0+kc)` of op(A) into panels `[mc/MR][kc][MR]`, zero
/// padded to a whole panel.
fn pack_a(a: View<'_>, i0: usize, mc: usize, p0: usize, kc: usize, buf: &mut Aligned<f32>) {
    pack_a_into(a, i0, mc, p0, kc, buf.reuse(mc.div_ceil(MR) * kc * MR));
}

/// [`pack_a`] into `out` (`mc/MR · kc · MR` elements).
fn pack_a_into(a: View<'_>, i0: usize, mc: usize, p0: usize, kc: usize, out: &mut [f32]) {
    let panels = mc.div_ceil(MR);
    let out = &mut out[..panels * kc * MR];
    if a.rs == 1 {
        // Transposed A: each k holds the block's rows contiguously; walk k outside so that
        // every source line is read once as one run for all the panels.
        for l in 0..kc {
            let src = &a.data[(p0 + l) * a.cs + i0..][..mc];
            #[cfg(target_arch = "x86_64")]
            if l + PREFETCH_ROWS < kc {
                // Rows of a transposed A are far apart (one per k): fetch a few ahead, the
                // hardware's streams do not follow hundreds of short runs.
                prefetch(&a.data[(p0 + l + PREFETCH_ROWS) * a.cs + i0..][..mc]);
            }
            for pi in 0..panels {
                let rows = MR.min(mc - pi * MR);
                let dst = &mut out[pi * kc * MR + l * MR..][..MR];
                if rows == MR {
                    // Fixed-size: two vector moves inline rather than a `memcpy` call per 56 bytes.
                    let d: &mut [f32; MR] = dst.try_into().expect("MR");
                    *d = src[pi * MR..pi * MR + MR].try_into().expect("MR");
                } else {
                    dst[..rows].copy_from_slice(&src[pi * MR..pi * MR + rows]);
                    dst[rows..].fill(0.0);
                }
            }
        }
        return;
    }
    for pi in 0..panels {
        let dst = &mut out[pi * kc * MR..(pi + 1) * kc * MR];
        let rows = MR.min(mc - pi * MR);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if a.cs == 1 && rows == MR {
            let at = (i0 + pi * MR) * a.rs + p0;
            // The panel's last element read: row MR−1, column kc−1.
            assert!(at + (MR - 1) * a.rs + kc <= a.data.len());
            // SAFETY: `available()` holds (asserted by `sgemm`); the MR rows of kc elements
            // at stride rs from `at` lie inside `a.data` (asserted); dst holds kc·MR.
            done = unsafe {
                transpose_rows(a.data.as_ptr().add(at), a.rs, MR, kc, dst.as_mut_ptr(), MR)
            };
        }
        if rows < MR {
            dst.fill(0.0);
        }
        for r in 0..rows {
            let i = i0 + pi * MR + r;
            for l in done..kc {
                dst[l * MR + r] = a.at(i, p0 + l);
            }
        }
    }
}

/// Writes `dst[l·ld + r] = src[r·rs + l]` for `rows` ≤ 16 rows and `l` below `kc` rounded down
/// to 16, sixteen columns at a time by a 16 × 16 register transpose; returns how many columns
/// it did.
///
/// # Safety
/// AVX-512F; `src` addresses `rows` rows of `kc` readable f32 at stride `rs`; `dst` addresses
/// `kc` rows of `rows` writable f32 at stride `ld`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose_rows(
    src: *const f32,
    rs: usize,
    rows: usize,
    kc: usize,
    pd: *mut f32,
    ld: usize,
) -> usize {
    use std::arch::x86_64::*;
    debug_assert!(rows <= 16);
    let full = kc / 16 * 16;
    let zero = _mm512_setzero_ps();
    let mask: __mmask16 = ((1u32 << rows) - 1) as __mmask16;
    for l0 in (0..full).step_by(16) {
        let mut r = [zero; 16];
        for (i, ri) in r.iter_mut().enumerate().take(rows) {
            // SAFETY: row i < rows, columns l0..l0+16 ≤ kc: inside the rows the caller gives.
            *ri = unsafe { _mm512_loadu_ps(src.add(i * rs + l0)) };
        }
        // 32-bit interleave of row pairs, then 64-bit: u[4g + s] holds, in 128-bit lane q,
        // rows 4g..4g+4 of column 4q + s.
        let mut t = [zero; 16];
        for p in 0..8 {
            t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
            t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
        }
        let mut u = [zero; 16];
        for g in 0..4 {
            let (a0, a1, b0, b1) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            let pd_ = |x: __m512, y: __m512, hi: bool| {
                let (x, y) = (_mm512_castps_pd(x), _mm512_castps_pd(y));
                _mm512_castpd_ps(if hi {
                    _mm512_unpackhi_pd(x, y)
                } else {
                    _mm512_unpacklo_pd(x, y)
                })
            };
            u[4 * g] = pd_(a0, b0, false);
            u[4 * g + 1] = pd_(a0, b0, true);
            u[4 * g + 2] = pd_(a1, b1, false);
            u[4 * g + 3] = pd_(a1, b1, true);
        }
        // Gather lane q of u[s], u[4+s], u[8+s], u[12+s] into column 4q + s.
        for s in 0..4 {
            let v_lo = _mm512_shuffle_f32x4::<0b10_00_10_00>(u[s], u[4 + s]);
            let v_hi = _mm512_shuffle_f32x4::<0b11_01_11_01>(u[s], u[4 + s]);
            let w_lo = _mm512_shuffle_f32x4::<0b10_00_10_00>(u[8 + s], u[12 + s]);
            let w_hi = _mm512_shuffle_f32x4::<0b11_01_11_01>(u[8 + s], u[12 + s]);
            let cols = [
                (s, _mm512_shuffle_f32x4::<0b10_00_10_00>(v_lo, w_lo)),
                (4 + s, _mm512_shuffle_f32x4::<0b10_00_10_00>(v_hi, w_hi)),
                (8 + s, _mm512_shuffle_f32x4::<0b11_01_11_01>(v_lo, w_lo)),
                (12 + s, _mm512_shuffle_f32x4::<0b11_01_11_01>(v_hi, w_hi)),
            ];
            for (c, v) in cols {
                // SAFETY: column l0 + c < kc: its `rows` elements lie inside dst's rows.
                unsafe { _mm512_mask_storeu_ps(pd.add((l0 + c) * ld), mask, v) };
            }
        }
    }
    full
}

/// Packs rows `[p0, p0+kc)` × cols `[j0, j0+nc)` of op(B) into panels `[nc/NR][kc][NR]`,
/// panels in parallel when `parallel`.
fn pack_b(
    b: View<'_>,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    out: &mut [f32],
    parallel: bool,
) {
    let panels = nc.div_ceil(NR);
    let out = &mut out[..panels * kc * NR];
    let one = |(pj, dst): (usize, &mut [f32])| {
        let cols = NR.min(nc - pj * NR);
        if cols < NR {
            dst.fill(0.0);
        }
        if b.cs == 1 {
            for l in 0..kc {
                let src = &b.data[(p0 + l) * b.rs + j0 + pj * NR..][..cols];
                if cols == NR {
                    let d: &mut [f32; NR] = (&mut dst[l * NR..l * NR + NR]).try_into().expect("NR");
                    *d = src.try_into().expect("NR");
                } else {
                    dst[l * NR..l * NR + cols].copy_from_slice(src);
                }
            }
        } else {
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if b.rs == 1 && cols == NR {
                // B's columns are contiguous along k: transpose 16 columns at a time.
                let at = (j0 + pj * NR) * b.cs + p0;
                assert!(at + (NR - 1) * b.cs + kc <= b.data.len());
                for half in 0..2 {
                    // SAFETY: `available()` holds (asserted by `sgemm`); columns
                    // 16·half..16·half+16 of the panel, kc elements each at stride cs from
                    // `at`, lie inside `b.data` (asserted); the writes stay in dst (kc·NR).
                    done = unsafe {
                        transpose_rows(
                            b.data.as_ptr().add(at + 16 * half * b.cs),
                            b.cs,
                            16,
                            kc,
                            dst.as_mut_ptr().add(16 * half),
                            NR,
                        )
                    };
                }
            }
            for c in 0..cols {
                let j = j0 + pj * NR + c;
                for l in done..kc {
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

/// `D [MR][NR] (+)= A_panel [kc][MR] · B_panel [kc][NR]`, D at `d` with row stride `ldd`
/// elements (C itself for a whole tile, a scratch tile at the edges); `acc` adds to D.
///
/// # Safety
/// The CPU must support AVX-512F; `a` must hold `kc·MR` and `b` `kc·NR` elements; `d` must
/// address `MR` rows of `NR` writable f32 at stride `ldd`, owned by the caller.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn micro_kernel(kc: usize, a: &[f32], b: &[f32], d: *mut f32, ldd: usize, acc: bool) {
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
    for r in 0..MR {
        // SAFETY: row r's NR elements at d + r·ldd are inside the block the caller owns.
        unsafe {
            let p = d.add(r * ldd);
            if acc {
                c0[r] = _mm512_add_ps(c0[r], _mm512_loadu_ps(p));
                c1[r] = _mm512_add_ps(c1[r], _mm512_loadu_ps(p.add(16)));
            }
            _mm512_storeu_ps(p, c0[r]);
            _mm512_storeu_ps(p.add(16), c1[r]);
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
    // Row blocks of about MC rows, as many as a multiple of the threads, split by whole panels
    // as evenly as they go: at m = 512 five blocks of 112 rows left one thread a block behind.
    let panels = m.div_ceil(MR);
    let mb = if threads > 1 {
        m.div_ceil(MC).next_multiple_of(threads).min(panels)
    } else {
        m.div_ceil(MC)
    };
    let rows_of = |ib: usize| {
        let i0 = ib * panels / mb * MR;
        (i0, ((ib + 1) * panels / mb * MR).min(m) - i0)
    };
    let cp = CPtr(c.as_mut_ptr());
    with_buffer(&PACK_B, |pb| {
        if k <= KC && n > NC && panels * MR * k * 4 <= WHOLE_A_BYTES {
            with_buffer(&PACK_WHOLE_A, |pa| {
                a_once(n, k, av, bv, cp, pa, pb, accumulate, threads, mb, rows_of)
            })
        } else {
            columns(n, k, av, bv, cp, pb, accumulate, threads, mb, rows_of)
        }
    });
}

/// [`sgemm`]'s loop over blocks of columns, with `pb` the buffer B is packed into.
#[allow(clippy::too_many_arguments)]
fn columns(
    n: usize,
    k: usize,
    av: View<'_>,
    bv: View<'_>,
    cp: CPtr,
    pb: &mut Aligned<f32>,
    accumulate: bool,
    threads: usize,
    mb: usize,
    rows_of: impl Fn(usize) -> (usize, usize) + Sync,
) {
    let par = threads > 1 && mb > 1;
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        let width = nc.div_ceil(NR) * NR;
        // As many k blocks of this column block's B as fit WHOLE_B_BYTES are packed at once
        // (shared by the threads); each row block then runs all of them with its part of C
        // kept in cache, so C is read and written once per such span of k, not once per k
        // block (the head's input gradient, k = 50,304: 4 spans instead of 197 k blocks).
        let span = (WHOLE_B_BYTES / (width * 4) / KC * KC).max(KC);
        for q0 in (0..k).step_by(span) {
            let kq = span.min(k - q0);
            let packed = pb.reuse(width * kq);
            for p0 in (q0..q0 + kq).step_by(KC) {
                let kc = KC.min(k - p0);
                pack_b(
                    bv,
                    p0,
                    kc,
                    j0,
                    nc,
                    &mut packed[width * (p0 - q0)..],
                    threads > 1,
                );
            }
            let packed = pb.get();
            let run = |ib: usize, pa: &mut Aligned<f32>| {
                let (i0, mc) = rows_of(ib);
                for p0 in (q0..q0 + kq).step_by(KC) {
                    let kc = KC.min(k - p0);
                    pack_a(av, i0, mc, p0, kc, pa);
                    let first = p0 == 0 && !accumulate;
                    block(
                        pa.get(),
                        &packed[width * (p0 - q0)..],
                        cp,
                        n,
                        kc,
                        i0,
                        mc,
                        j0,
                        nc,
                        first,
                    );
                }
            };
            row_blocks(mb, par, run);
        }
    }
}

/// [`sgemm`] with one block of k and several blocks of columns (the output head's forward:
/// k = 256, 50 blocks of 1,024 columns): all of A's rows are packed once, up front, and every
/// block of columns reuses them — the column-block loop would pack A again for each block.
#[allow(clippy::too_many_arguments)]
fn a_once(
    n: usize,
    k: usize,
    av: View<'_>,
    bv: View<'_>,
    cp: CPtr,
    pa: &mut Aligned<f32>,
    pb: &mut Aligned<f32>,
    accumulate: bool,
    threads: usize,
    mb: usize,
    rows_of: impl Fn(usize) -> (usize, usize) + Sync,
) {
    let par = threads > 1 && mb > 1;
    // Row block ib's panels start at row i0 (a whole number of panels): element i0 · k.
    let (last0, last_rows) = rows_of(mb - 1);
    let all = pa.reuse((last0 + last_rows).div_ceil(MR) * MR * k);
    let mut parts = Vec::with_capacity(mb);
    let mut rest = all;
    for ib in 0..mb {
        let (_, mc) = rows_of(ib);
        let (part, tail) = rest.split_at_mut(mc.div_ceil(MR) * MR * k);
        parts.push((ib, part));
        rest = tail;
    }
    let pack = |(ib, part): (usize, &mut [f32])| {
        let (i0, mc) = rows_of(ib);
        pack_a_into(av, i0, mc, 0, k, part);
    };
    if par {
        parts.into_par_iter().for_each(pack);
    } else {
        parts.into_iter().for_each(pack);
    }
    let all = pa.get();
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        let width = nc.div_ceil(NR) * NR;
        pack_b(bv, 0, k, j0, nc, pb.reuse(width * k), threads > 1);
        let pb = pb.get();
        let run = |ib: usize| {
            let (i0, mc) = rows_of(ib);
            block(&all[i0 * k..], pb, cp, n, k, i0, mc, j0, nc, !accumulate);
        };
        if par {
            (0..mb).into_par_iter().with_min_len(1).for_each(run);
        } else {
            (0..mb).for_each(run);
        }
    }
}

thread_local! {
    /// This thread's buffer for all of A's rows packed once ([`a_once`]).
    static PACK_WHOLE_A: RefCell<Aligned<f32>> = RefCell::default();
    /// This thread's buffer for packed rows of A (one row block at a time).
    static PACK_A: RefCell<Aligned<f32>> = RefCell::default();
    /// This thread's buffer for packed columns of B (up to [`WHOLE_B_BYTES`]).
    static PACK_B: RefCell<Aligned<f32>> = RefCell::default();
}

/// Runs `f` with this thread's buffer(s) `key`, kept between GEMMs so that a step's GEMMs do
/// not allocate and fault in fresh pages (the B buffer is up to 16 MiB), or with fresh ones
/// when they are in use further up this thread's stack (a GEMM inside a task that rayon ran
/// while this thread waited). Also the BF16 GEMM's ([`super::bf16gemm`]).
pub(super) fn with_buffer<B: Default, R>(
    key: &'static std::thread::LocalKey<RefCell<B>>,
    f: impl FnOnce(&mut B) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut B::default()),
    })
}

/// Runs `run(ib, A packing buffer)` for the row blocks `0..mb`, in parallel when `par`, with
/// each worker's own packing buffer.
fn row_blocks(mb: usize, par: bool, run: impl Fn(usize, &mut Aligned<f32>) + Sync) {
    if par {
        (0..mb)
            .into_par_iter()
            .with_min_len(1)
            .for_each(|ib| with_buffer(&PACK_A, |pa| run(ib, pa)));
    } else {
        with_buffer(&PACK_A, |pa| (0..mb).for_each(|ib| run(ib, pa)));
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
    // Each A micro-panel stays in L1 while the B panels stream from L2 past it: C is then
    // written along its rows, 32 columns at a time (the other order, B panel fixed and A
    // panels streaming, ran the head's forward at 200 GFLOP/s instead of 280–300: C written
    // down its columns, a row every 201 KB).
    let np = nc.div_ceil(NR);
    for pi in 0..mc.div_ceil(MR) {
        for pj in 0..np {
            let cols = NR.min(nc - pj * NR);
            let rows = MR.min(mc - pi * MR);
            let (row, col) = (i0 + pi * MR, j0 + pj * NR);
            let (a, b) = (
                &pa[pi * kc * MR..(pi + 1) * kc * MR],
                &pb[pj * kc * NR..(pj + 1) * kc * NR],
            );
            if rows == MR && cols == NR {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `available()` was asserted by `sgemm`; the panels hold kc·MR and kc·NR
                // elements by construction of pack_a / pack_b; the MR × NR block of C at
                // (row, col) lies inside C and in this task's rows [i0, i0+mc).
                unsafe {
                    micro_kernel(kc, a, b, c.0.add(row * ldc + col), ldc, !first)
                };
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, into the scratch tile (MR rows of NR).
            unsafe {
                micro_kernel(kc, a, b, tile.as_mut_ptr(), NR, false)
            };
            for r in 0..rows {
                // SAFETY: row + r < m and col + cols ≤ n, so the `cols` elements lie inside C
                // (m·n elements); this task owns rows [i0, i0+mc) exclusively.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(c.0.add((row + r) * ldc + col), cols) };
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
            // One k block, several row and column blocks: A packed once for all columns.
            (250, 2100, 40),
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

    #[test]
    fn a_b_too_large_to_pack_whole_is_packed_in_spans_of_k() {
        if !available() {
            return;
        }
        // 1,024 columns × 4,100 k packed = 16.8 MB > WHOLE_B_BYTES: the first column block is
        // packed in two spans of k (4,096 and 4), the second (6 columns) whole.
        let (m, n, k) = (17, 1030, 4100);
        assert!(NC * k * 4 > WHOLE_B_BYTES && 32 * k * 4 <= WHOLE_B_BYTES);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 3 % 13) as f32 - 6.0) * 0.1)
            .collect();
        for (bst, acc) in [((1, k), false), ((n, 1), true)] {
            let mut c = vec![0.5f32; m * n];
            sgemm(m, n, k, &a, (k, 1), &b, bst, &mut c, acc, 2);
            for i in 0..m {
                for j in (0..n).step_by(7).chain([1023, 1024, n - 1]) {
                    let mut s = if acc { 0.5f64 } else { 0.0 };
                    for l in 0..k {
                        s += a[i * k + l] as f64 * b[l * bst.0 + j * bst.1] as f64;
                    }
                    let got = c[i * n + j] as f64;
                    assert!(
                        (got - s).abs() < 1e-3 * (1.0 + s.abs()),
                        "[{i},{j}] {acc}: {got} vs {s}"
                    );
                }
            }
        }
    }
}
