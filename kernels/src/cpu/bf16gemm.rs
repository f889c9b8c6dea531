//! A BF16 GEMM with FP32 accumulation on the CPU's BF16 dot-product units:
//! `C (+)= op(A) · op(B)` with both operands rounded to BF16 (round to nearest even, exactly
//! [`crate::bf16::to_bf16`]) while they are packed, and the products summed in FP32 by
//!
//! - **AMX** (`tdpbf16ps`: a 16 × 16 FP32 tile += a 16 × 32 BF16 tile · a 32 × 16 BF16 tile,
//!   8,192 multiply-adds per instruction), written with `asm!` because the AMX intrinsics are
//!   not stable; the tile state is requested from Linux once per process
//!   (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`);
//! - **AVX512-BF16** (`vdpbf16ps`: 16 lanes, each += two BF16 products) on the same packed
//!   panels, when the CPU lacks AMX or the OS refuses the tile state.
//!
//! A CPU with neither has no [`Bf16Unit`]; the caller then emulates (rounds the operands and runs
//! the FP32 GEMM, [`super::lowp`]). The products of two BF16 values are exact in FP32, so the
//! three paths differ only in the order of the FP32 additions — and in BF16 subnormals
//! (|x| < 1.2e-38), which both units read as zero.
//!
//! Blocking as BLIS: B cut into `KC × NC` blocks packed once and shared by the threads, A into
//! `MC × KC` blocks packed by each thread; the micro-kernel computes a 32 × 32 block of C from a
//! 32-row panel of A and a 32-column panel of B (four C tiles, two A tiles, two B tiles: AMX's
//! eight tile registers), loading the C block when it accumulates.
//!
//! Packed layouts (`u16` = BF16 bits), `kt` = k tile of 32, zero padded past the matrix:
//! - A panel: `[kt][2 tiles][16 rows][32 k]` — the AMX A tile, 64-byte rows;
//! - B panel: `[kt][2 tiles][16 k pairs][16 columns][2]` — the VNNI layout of the AMX B tile,
//!   and one `vdpbf16ps` vector operand per k pair.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

#[cfg(test)]
use crate::bf16::to_bf16;

use super::sgemm::{Aligned, CPtr, View, with_buffer};

/// A packing buffer of BF16 bits.
type Packed = Aligned<u16>;

/// Rows of C per micro-kernel (two tiles of 16).
pub const MR: usize = 32;
/// Columns of C per micro-kernel (two tiles of 16).
pub const NR: usize = 32;
/// K per tile.
const KT: usize = 32;
/// `u16` elements in one 16 × 32 tile (1 KiB).
const TILE: usize = 512;
const KC: usize = 1024;
const MC: usize = 128;
const NC: usize = 2048;

/// A BF16 dot-product unit this kernel can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Unit {
    /// Intel AMX tiles (`tdpbf16ps`).
    Amx,
    /// AVX512-BF16 vectors (`vdpbf16ps`).
    Avx512Bf16,
}

impl Bf16Unit {
    /// Name for logs and tables.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Unit::Amx => "AMX-BF16",
            Bf16Unit::Avx512Bf16 => "AVX512-BF16",
        }
    }
}

/// Whether AMX-BF16 can run in this process: CPUID leaf 7 reports AMX-TILE and AMX-BF16, and
/// Linux granted this process the tile data state (asked once).
pub fn amx_available() -> bool {
    static AMX: OnceLock<bool> = OnceLock::new();
    *AMX.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            use std::arch::x86_64::__cpuid_count;
            let leaf7 = __cpuid_count(7, 0);
            let cpu = (leaf7.edx >> 22) & 1 == 1 && (leaf7.edx >> 24) & 1 == 1;
            cpu && request_tile_permission()
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux (5.16+) enables the 8 KiB tile
/// state for a process only when asked; a tile instruction without it faults.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call with these arguments only changes this process's
    // permitted extended state; it reads no user memory. rcx and r11 are clobbered by `syscall`.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// Whether AVX512-BF16 (with AVX512-F/BW for the packing) runs here.
pub fn avx512bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether `unit` runs on this machine.
pub fn runs(unit: Bf16Unit) -> bool {
    match unit {
        Bf16Unit::Amx => amx_available(),
        Bf16Unit::Avx512Bf16 => avx512bf16_available(),
    }
}

/// The unit BF16 GEMMs use in this process: the best available, or the one named by
/// `TOKENMILL_BF16_GEMM` (`amx`, `avx512bf16`, or `emulate` for none); `None` means the
/// emulation. Chosen once; the choice and why are logged.
pub fn unit() -> Option<Bf16Unit> {
    static UNIT: OnceLock<Option<Bf16Unit>> = OnceLock::new();
    *UNIT.get_or_init(|| {
        let asked = std::env::var("TOKENMILL_BF16_GEMM").ok();
        let best = if amx_available() {
            Some(Bf16Unit::Amx)
        } else if avx512bf16_available() {
            Some(Bf16Unit::Avx512Bf16)
        } else {
            None
        };
        let chosen = match asked.as_deref() {
            None | Some("") | Some("auto") => best,
            Some("emulate") => None,
            Some("amx") if amx_available() => Some(Bf16Unit::Amx),
            Some("avx512bf16") if avx512bf16_available() => Some(Bf16Unit::Avx512Bf16),
            Some(other) => {
                tracing::warn!(
                    asked = other,
                    "TOKENMILL_BF16_GEMM names a unit this CPU cannot run (amx, avx512bf16, \
                     emulate); using the best available"
                );
                best
            }
        };
        match chosen {
            Some(u) => tracing::info!(unit = u.name(), "BF16 GEMMs on {}", u.name()),
            None => tracing::info!(
                amx = amx_available(),
                avx512bf16 = avx512bf16_available(),
                "BF16 GEMMs emulated (operands rounded, FP32 GEMM): no AMX or AVX512-BF16 in use"
            ),
        }
        chosen
    })
}

/// `x` rounded to BF16 (as [`to_bf16`]), branch-free so that loops of it vectorise.
#[inline(always)]
fn bf(x: f32) -> u32 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
    let nan = (b >> 16) | 0x0040;
    if x.is_nan() { nan } else { rounded & 0xFFFF }
}

/// Two values rounded to BF16 as one 32-bit pair (`lo` first in memory).
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf(lo) | (bf(hi) << 16)
}

/// A 16 × 16 block of BF16 pairs (one 1 KiB tile).
type Block = [[u32; 16]; 16];

/// `out[q][kp]` = the pair (k = 2kp, 2kp+1) of line `q`, where line `q` is `src[at + q·sq ..]`
/// with k contiguous: `q < nq` lines, `nk` values of k (the rest zero).
#[inline(always)]
fn pairs_k_contiguous(src: &[f32], at: usize, sq: usize, nq: usize, nk: usize, out: &mut Block) {
    if nq == 16 && nk == 32 {
        for (q, o) in out.iter_mut().enumerate() {
            let line: &[f32; 32] = src[at + q * sq..at + q * sq + 32].try_into().expect("32");
            for (kp, v) in o.iter_mut().enumerate() {
                *v = pair(line[2 * kp], line[2 * kp + 1]);
            }
        }
        return;
    }
    pairs_strided(|q, l| src[at + q * sq + l], nq, nk, out);
}

/// `out[kp][q]` = the pair (k = 2kp, 2kp+1) of line `q`, where k steps by `sk` in `src` from
/// `at` and the lines are contiguous: `q < nq` lines, `nk` values of k (the rest zero).
#[inline(always)]
fn pairs_q_contiguous(src: &[f32], at: usize, sk: usize, nq: usize, nk: usize, out: &mut Block) {
    if nq == 16 && nk == 32 {
        for (kp, o) in out.iter_mut().enumerate() {
            let s0 = at + 2 * kp * sk;
            let r0: &[f32; 16] = src[s0..s0 + 16].try_into().expect("16");
            let r1: &[f32; 16] = src[s0 + sk..s0 + sk + 16].try_into().expect("16");
            for q in 0..16 {
                o[q] = pair(r0[q], r1[q]);
            }
        }
        return;
    }
    *out = [[0; 16]; 16];
    for l in 0..nk {
        for q in 0..nq {
            out[l / 2][q] |= bf(src[at + l * sk + q]) << (16 * (l % 2));
        }
    }
}

/// A generic strided source: `out[q][kp]` from `get(q, l)`.
fn pairs_strided(get: impl Fn(usize, usize) -> f32, nq: usize, nk: usize, out: &mut Block) {
    *out = [[0; 16]; 16];
    for (q, o) in out.iter_mut().enumerate().take(nq) {
        for l in 0..nk {
            o[l / 2] |= bf(get(q, l)) << (16 * (l % 2));
        }
    }
}

/// Writes `blk` (or its transpose) into a 1 KiB tile of BF16 bits.
#[inline(always)]
fn store(blk: &Block, transpose: bool, dst: &mut [u16]) {
    let dst = &mut dst[..TILE];
    for (r, row) in dst.chunks_exact_mut(32).enumerate() {
        for c in 0..16 {
            let v = if transpose { blk[c][r] } else { blk[r][c] };
            row[2 * c] = v as u16;
            row[2 * c + 1] = (v >> 16) as u16;
        }
    }
}

/// Fills one tile from lines `q..q+nq` of a lines × k view (A's rows, or B's columns seen
/// through the transposed view), k tile at `l`: `[line][kp]` (A's tile) or, with `vnni`,
/// `[kp][line]` (B's VNNI tile). The source is read along whichever of its axes is contiguous.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile(
    v: View<'_>,
    q: usize,
    nq: usize,
    l: usize,
    nk: usize,
    vnni: bool,
    blk: &mut Block,
    dst: &mut [u16],
) {
    let transpose = if v.cs == 1 {
        pairs_k_contiguous(v.data, q * v.rs + l, v.rs, nq, nk, blk);
        vnni
    } else if v.rs == 1 {
        pairs_q_contiguous(v.data, l * v.cs + q, v.cs, nq, nk, blk);
        !vnni
    } else {
        pairs_strided(|qq, ll| v.at(q + qq, l + ll), nq, nk, blk);
        vnni
    };
    store(blk, transpose, dst);
}

/// Packs consecutive panels (lines `q0..q0+nq` of a lines × k view; k `[p0, p0+kc)`; VNNI
/// tiles for B) into `dst`, k tile by k tile across the panels, so that a source read
/// along the lines walks one contiguous run per k row instead of one page per panel.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pack_panels(
    vnni: bool,
    v: View<'_>,
    q0: usize,
    nq: usize,
    p0: usize,
    kc: usize,
    dst: &mut [u16],
    fast: bool,
) {
    let mut blk: Block = [[0; 16]; 16];
    let kts = kc.div_ceil(KT);
    let stride = kts * 2 * TILE;
    for kt in 0..kts {
        let l = p0 + kt * KT;
        let nk = KT.min(p0 + kc - l);
        #[cfg(target_arch = "x86_64")]
        if v.rs == 1 && kt + 1 < kts {
            // Lines contiguous, k rows far apart (a transposed logit gradient: one row of
            // 201 KB per k): fetch the next k tile's runs while this one is converted.
            let next = l + KT;
            for ll in next..(next + KT).min(p0 + kc) {
                super::sgemm::prefetch(&v.data[ll * v.cs + q0..][..nq]);
            }
        }
        for (pi, panel) in dst.chunks_exact_mut(stride).enumerate() {
            for t in 0..2 {
                let first = pi * 32 + t * 16;
                let dst = &mut panel[(kt * 2 + t) * TILE..(kt * 2 + t + 1) * TILE];
                if first >= nq {
                    // A whole tile past the last line: zero padding.
                    dst.fill(0);
                    continue;
                }
                let nqt = 16.min(nq - first);
                #[cfg(target_arch = "x86_64")]
                if fast && nqt == 16 && nk == KT && (v.cs == 1 || v.rs == 1) {
                    // SAFETY: `fast` only from `pack_panels_avx512bf16` (AVX512-F/BW/BF16
                    // detected); the tile's 16 lines × 32 k lie inside the view (the
                    // callers' bounds) and `dst` holds one tile.
                    unsafe { tile_avx512bf16(v, q0 + first, l, vnni, &mut blk, dst) };
                    continue;
                }
                let _ = fast;
                tile(v, q0 + first, nqt, l, nk, vnni, &mut blk, dst);
            }
        }
    }
}

/// [`pack_panels`] compiled for AVX-512 with AVX512-BF16: whole tiles converted by
/// `vcvtne2ps2bf16` ([`tile_avx512bf16`]), edge tiles by the fixed-size loops as 16-lane
/// vector code.
///
/// # Safety
/// The CPU must support AVX512-F, AVX512-BW and AVX512-BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_panels_avx512bf16(
    vnni: bool,
    v: View<'_>,
    q0: usize,
    nq: usize,
    p0: usize,
    kc: usize,
    dst: &mut [u16],
) {
    pack_panels(vnni, v, q0, nq, p0, kc, dst, true)
}

/// One whole tile (16 lines × 32 values of k from line `q`, k `l`) rounded to BF16 by
/// `vcvtne2ps2bf16` — round to nearest even and quiet NaNs exactly as [`bf`]; it reads an FP32
/// subnormal as zero where [`bf`] keeps a BF16 subnormal, which both units read as zero
/// anyway, so the products are the same — and laid out as [`tile`] does: `[line][k pair]` or,
/// with `vnni`, `[k pair][line]`, transposed through `blk` by a 16 × 16 register transpose when
/// the source runs along the other axis.
///
/// # Safety
/// AVX512-F/BW/BF16; the view is contiguous along k (`cs == 1`) or along the lines
/// (`rs == 1`) and holds the 16 × 32 block; `dst` holds [`TILE`] elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn tile_avx512bf16(
    v: View<'_>,
    q: usize,
    l: usize,
    vnni: bool,
    blk: &mut Block,
    dst: &mut [u16],
) {
    use std::arch::x86_64::*;
    let dst = &mut dst[..TILE];
    let out = dst.as_mut_ptr();
    let tmp = blk.as_mut_ptr().cast::<u16>();
    // SAFETY: every read is inside the 16 × 32 block of the view (the caller's contract, and
    // the slice bounds checked below); writes go to `dst` (512 u16) or `blk` (256 u32).
    unsafe {
        if v.cs == 1 {
            // Line by line: 32 values of k in order are 16 (even, odd) pairs in order.
            let direct = !vnni;
            for qq in 0..16 {
                let at = (q + qq) * v.rs + l;
                let src = v.data[at..at + 32].as_ptr();
                let lo = _mm512_loadu_ps(src);
                let hi = _mm512_loadu_ps(src.add(16));
                let bf: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                let to = if direct { out } else { tmp };
                _mm512_storeu_si512(to.add(qq * 32).cast(), bf);
            }
            if vnni {
                super::sgemm::transpose_rows(tmp.cast(), 16, 16, 16, out.cast(), 16);
            }
        } else {
            // k pair by k pair: two rows of 16 lines, interleaved into (even, odd) pairs.
            let idx = _mm512_set_epi16(
                31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
            );
            for kp in 0..16 {
                let at0 = (l + 2 * kp) * v.cs + q;
                let at1 = at0 + v.cs;
                let r0 = _mm512_loadu_ps(v.data[at0..at0 + 16].as_ptr());
                let r1 = _mm512_loadu_ps(v.data[at1..at1 + 16].as_ptr());
                let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(r1, r0));
                let pairs = _mm512_permutexvar_epi16(idx, both);
                let to = if vnni { out } else { tmp };
                _mm512_storeu_si512(to.add(kp * 32).cast(), pairs);
            }
            if !vnni {
                super::sgemm::transpose_rows(tmp.cast(), 16, 16, 16, out.cast(), 16);
            }
        }
    }
}

/// Panels packed together by one task when the source is contiguous along the lines (16 × 32
/// lines: 2 KiB runs of an f32 row); a source contiguous along k is read panel by panel (its
/// rows stay in a few pages for 32 k tiles).
const PANEL_GROUP: usize = 16;

/// Packs panels of 32 lines of a lines × k view — [`MR`] rows of op(A), or with `vnni`
/// [`NR`] columns of op(B) — lines `q0..q0+lines`, k `[p0, p0+kc)`, panels in parallel when
/// `parallel`.
#[allow(clippy::too_many_arguments)]
fn pack(
    vnni: bool,
    v: View<'_>,
    q0: usize,
    lines: usize,
    p0: usize,
    kc: usize,
    out: &mut Packed,
    parallel: bool,
) {
    let stride = kc.div_ceil(KT) * 2 * TILE;
    let panels = lines.div_ceil(32);
    let dst = out.reuse(panels * stride);
    let wide = avx512bf16_available();
    let per_task = if v.rs == 1 { PANEL_GROUP } else { 1 };
    let group = per_task * stride;
    let one = |(gi, dst): (usize, &mut [u16])| {
        let first = gi * per_task * 32;
        let (q, nq) = (q0 + first, (per_task * 32).min(lines - first));
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: AVX512-F/BW/BF16 detected (avx512bf16_available's checks).
            unsafe { pack_panels_avx512bf16(vnni, v, q, nq, p0, kc, dst) };
            return;
        }
        let _ = wide;
        pack_panels(vnni, v, q, nq, p0, kc, dst, false);
    };
    if parallel && panels > per_task {
        dst.par_chunks_mut(group).enumerate().for_each(one);
    } else {
        dst.chunks_mut(group).enumerate().for_each(one);
    }
}

/// The AMX tile configuration: palette 1, tiles 0–7 of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Loads the tile configuration on this thread (tile state is per thread).
///
/// # Safety
/// [`amx_available`] must be true.
#[cfg(target_arch = "x86_64")]
unsafe fn amx_configure() {
    let mut cfg = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [0; 16],
        rows: [0; 16],
    };
    for t in 0..8 {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    // SAFETY: `cfg` is a valid 64-byte palette-1 configuration; the caller checked AMX.
    unsafe {
        std::arch::asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly))
    };
}

/// Releases this thread's tile state, so that context switches stop saving it.
///
/// # Safety
/// [`amx_available`] must be true.
#[cfg(target_arch = "x86_64")]
unsafe fn amx_release() {
    // SAFETY: the caller checked AMX; tilerelease only resets tile state.
    unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
}

/// `C[32, 32] (+)= A_panel · B_panel` on AMX, C at `c` with row stride `ldc` bytes.
///
/// # Safety
/// The tile configuration is loaded on this thread; `pa` and `pb` hold `kts · 2 · TILE`
/// elements each; `c` addresses 32 rows of 32 f32 at stride `ldc`.
#[cfg(target_arch = "x86_64")]
unsafe fn amx_kernel(
    kts: usize,
    pa: *const u16,
    pb: *const u16,
    c: *mut f32,
    ldc: usize,
    load: bool,
) {
    use std::arch::asm;
    // SAFETY: every tile access stays inside the buffers the caller guarantees:
    // A and B tiles are 16 rows of 64 bytes at stride 64 within the panels, the C tiles are 16
    // rows of 64 bytes at stride `ldc` inside the 32 × 32 block.
    unsafe {
        let c01 = c.cast::<u8>().add(64);
        let c10 = c.cast::<u8>().add(16 * ldc);
        let c11 = c10.add(64);
        if load {
            asm!(
                "tileloadd tmm0, [{c00} + {s}*1]",
                "tileloadd tmm1, [{c01} + {s}*1]",
                "tileloadd tmm2, [{c10} + {s}*1]",
                "tileloadd tmm3, [{c11} + {s}*1]",
                c00 = in(reg) c, c01 = in(reg) c01, c10 = in(reg) c10, c11 = in(reg) c11,
                s = in(reg) ldc, options(nostack, readonly),
            );
        } else {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        }
        for kt in 0..kts {
            let a0 = pa.add(kt * 2 * TILE);
            let b0 = pb.add(kt * 2 * TILE);
            asm!(
                "tileloadd tmm4, [{a0} + {s}*1]",
                "tileloadd tmm6, [{b0} + {s}*1]",
                "tileloadd tmm5, [{a1} + {s}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {s}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0, a1 = in(reg) a0.add(TILE), b0 = in(reg) b0, b1 = in(reg) b0.add(TILE),
                s = in(reg) 64usize, options(nostack, readonly),
            );
        }
        asm!(
            "tilestored [{c00} + {s}*1], tmm0",
            "tilestored [{c01} + {s}*1], tmm1",
            "tilestored [{c10} + {s}*1], tmm2",
            "tilestored [{c11} + {s}*1], tmm3",
            c00 = in(reg) c, c01 = in(reg) c01, c10 = in(reg) c10, c11 = in(reg) c11,
            s = in(reg) ldc, options(nostack),
        );
    }
}

/// `C[32, 32] (+)= A_panel · B_panel` with AVX512-BF16, same contract as [`amx_kernel`]: the
/// 32 rows in three groups (12, 12, 8), each group's rows × both 16-column halves held in
/// registers over all of k (24 accumulators), so that one k pair costs two B loads and one
/// A broadcast per row for two `vdpbf16ps` per row.
///
/// # Safety
/// The CPU runs AVX512-F and AVX512-BF16; buffers as for [`amx_kernel`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn avx512bf16_kernel(
    kts: usize,
    pa: *const u16,
    pb: *const u16,
    c: *mut f32,
    ldc: usize,
    load: bool,
) {
    // SAFETY: the groups cover rows 0..32 of the block once each; contract forwarded.
    unsafe {
        avx512bf16_rows::<0, 12>(kts, pa, pb, c, ldc, load);
        avx512bf16_rows::<12, 12>(kts, pa, pb, c, ldc, load);
        avx512bf16_rows::<24, 8>(kts, pa, pb, c, ldc, load);
    }
}

/// Rows `R0..R0+R` of [`avx512bf16_kernel`]'s 32 × 32 block: `2R` FP32 accumulators.
///
/// # Safety
/// As [`avx512bf16_kernel`], and `R0 + R ≤ 32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn avx512bf16_rows<const R0: usize, const R: usize>(
    kts: usize,
    pa: *const u16,
    pb: *const u16,
    c: *mut f32,
    ldc: usize,
    load: bool,
) {
    use std::arch::x86_64::*;
    // SAFETY: C rows R0..R0+R (32 f32 each, at stride `ldc` bytes) lie in the block; the A
    // reads address row `R0 + r` of tile (kt, row / 16) and the B reads k pair `kp` of tiles
    // (kt, 0) and (kt, 1), all inside the `kts · 2 · TILE` panels.
    unsafe {
        let row_ptr = |r: usize| c.cast::<u8>().add((R0 + r) * ldc).cast::<f32>();
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        if load {
            for r in 0..R {
                lo[r] = _mm512_loadu_ps(row_ptr(r));
                hi[r] = _mm512_loadu_ps(row_ptr(r).add(16));
            }
        }
        for kt in 0..kts {
            let ta = pa.add(kt * 2 * TILE);
            let tb = pb.add(kt * 2 * TILE);
            for kp in 0..16 {
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(tb.add(kp * 32).cast()));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(tb.add(TILE + kp * 32).cast()));
                for r in 0..R {
                    let row = R0 + r;
                    let at = ta.add((row / 16) * TILE + (row % 16) * KT + kp * 2);
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(at.cast::<i32>().read_unaligned()));
                    lo[r] = _mm512_dpbf16_ps(lo[r], av, b0);
                    hi[r] = _mm512_dpbf16_ps(hi[r], av, b1);
                }
            }
        }
        for r in 0..R {
            _mm512_storeu_ps(row_ptr(r), lo[r]);
            _mm512_storeu_ps(row_ptr(r).add(16), hi[r]);
        }
    }
}

/// `C (+)= op(A) · op(B)` in BF16 with FP32 accumulation on `unit`; `threads` > 1 packs and
/// multiplies in parallel. A is `m × k` with (row, column) strides `ars/acs`, B `k × n` with
/// `brs/bcs`, C `m × n` row-major.
///
/// Order of work: per block of `KC` values of k, all of A's rows are packed once (panels in
/// parallel); then per block of `NC` columns, B is packed once and the row blocks of `MC` run
/// in parallel. When all of n fits one block of columns, B is packed first and each row
/// block's task packs its own rows of A just before its kernels. Either way every element of
/// A and B is converted exactly once, and C is read and written once per k block.
///
/// Panics if `unit` does not run here (check [`runs`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16(
    unit: Bf16Unit,
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
    assert!(runs(unit), "{} does not run on this CPU", unit.name());
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
    // op(B)'s columns are the lines of its panels: B seen transposed.
    let bv = View {
        data: b,
        rs: bcs,
        cs: brs,
    };
    let mb = m.div_ceil(MC);
    let cp = CPtr(c.as_mut_ptr());
    let parallel = threads > 1;
    with_buffer(&BUFFERS, |(pa, pb)| {
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            let first = p0 == 0 && !accumulate;
            if n <= NC {
                // One block of columns: nothing reuses a packed row block, so each task packs
                // its own rows right before multiplying them — the packed rows stay in the
                // core's cache instead of making a round trip through memory (the head's
                // weight gradient would pack 100 MiB of A per k block).
                pack(true, bv, 0, n, p0, kc, pb, parallel);
                let pb = pb.get();
                let run = |ib: usize| {
                    let i0 = ib * MC;
                    let mc = MC.min(m - i0);
                    with_buffer(&TASK_A, |ta| {
                        pack(false, av, i0, mc, p0, kc, ta, false);
                        block(unit, ta.get(), pb, cp, n, kc, i0, mc, 0, n, first);
                    });
                };
                if parallel && mb > 1 {
                    (0..mb).into_par_iter().with_min_len(1).for_each(run);
                } else {
                    (0..mb).for_each(run);
                }
                continue;
            }
            let panel = kc.div_ceil(KT) * 2 * TILE;
            pack(false, av, 0, m, p0, kc, pa, parallel);
            let pa = pa.get();
            for j0 in (0..n).step_by(NC) {
                let nc = NC.min(n - j0);
                pack(true, bv, j0, nc, p0, kc, pb, parallel);
                let pb = pb.get();
                let run = |ib: usize| {
                    let i0 = ib * MC;
                    let mc = MC.min(m - i0);
                    let a_block = &pa[i0 / MR * panel..(i0 + mc).div_ceil(MR) * panel];
                    block(unit, a_block, pb, cp, n, kc, i0, mc, j0, nc, first);
                };
                if parallel && mb > 1 {
                    (0..mb).into_par_iter().with_min_len(1).for_each(run);
                } else {
                    (0..mb).for_each(run);
                }
            }
        }
    });
}

thread_local! {
    /// This thread's packing buffers for A and B, kept between calls so that large GEMMs do
    /// not fault fresh pages in every call.
    static BUFFERS: RefCell<(Packed, Packed)> = Default::default();
    /// This thread's buffer for one task's packed rows of A.
    static TASK_A: RefCell<Packed> = Default::default();
}

/// Micro-kernels over one packed `mc × kc` block of A and `kc × nc` block of B, adding into
/// (or, when `first`, writing) C's rows `[i0, i0+mc)` × columns `[j0, j0+nc)`.
#[allow(clippy::too_many_arguments)]
fn block(
    unit: Bf16Unit,
    pa: &[u16],
    pb: &[u16],
    c: CPtr,
    ldc: usize,
    kc: usize,
    i0: usize,
    mc: usize,
    j0: usize,
    nc: usize,
    first: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let kts = kc.div_ceil(KT);
        let panel = kts * 2 * TILE;
        #[repr(align(64))]
        struct Scratch([f32; MR * NR]);
        let mut scratch = Scratch([0.0; MR * NR]);
        let kernel = |pa: *const u16, pb: *const u16, c: *mut f32, ldc: usize, load: bool| {
            // SAFETY: the unit was checked by `gemm_bf16` (and the AMX configuration loaded
            // below); the panels hold `panel` elements; `c` is a 32 × 32 block (see callers).
            unsafe {
                match unit {
                    Bf16Unit::Amx => amx_kernel(kts, pa, pb, c, ldc, load),
                    Bf16Unit::Avx512Bf16 => avx512bf16_kernel(kts, pa, pb, c, ldc, load),
                }
            }
        };
        if unit == Bf16Unit::Amx {
            // SAFETY: AMX checked by `gemm_bf16`.
            unsafe { amx_configure() };
        }
        for pj in 0..nc.div_ceil(NR) {
            let cols = NR.min(nc - pj * NR);
            let bp = pb[pj * panel..(pj + 1) * panel].as_ptr();
            for pi in 0..mc.div_ceil(MR) {
                let rows = MR.min(mc - pi * MR);
                let ap = pa[pi * panel..(pi + 1) * panel].as_ptr();
                let (row, col) = (i0 + pi * MR, j0 + pj * NR);
                // SAFETY: row + rows ≤ m and col + cols ≤ n, so the addressed elements lie in
                // C (m·n elements); this task owns rows [i0, i0+mc) exclusively.
                let at = unsafe { c.0.add(row * ldc + col) };
                if rows == MR && cols == NR {
                    kernel(ap, bp, at, ldc * 4, !first);
                } else {
                    // An edge block goes through a full 32 × 32 scratch block.
                    scratch.0.fill(0.0);
                    if !first {
                        for r in 0..rows {
                            // SAFETY: as above, row r of the block's valid part.
                            let src = unsafe { std::slice::from_raw_parts(at.add(r * ldc), cols) };
                            scratch.0[r * NR..r * NR + cols].copy_from_slice(src);
                        }
                    }
                    kernel(ap, bp, scratch.0.as_mut_ptr(), NR * 4, !first);
                    for r in 0..rows {
                        // SAFETY: as above.
                        let dst = unsafe { std::slice::from_raw_parts_mut(at.add(r * ldc), cols) };
                        dst.copy_from_slice(&scratch.0[r * NR..r * NR + cols]);
                    }
                }
            }
        }
        if unit == Bf16Unit::Amx {
            // SAFETY: AMX checked by `gemm_bf16`.
            unsafe { amx_release() };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (unit, pa, pb, c, ldc, kc, i0, mc, j0, nc, first);
        unreachable!("no BF16 unit outside x86-64");
    }
}

/// The peak of one core on `unit`, measured on registers only (no memory traffic), in
/// GFLOP/s; `None` when the unit does not run here.
pub fn peak_gflops(unit: Bf16Unit, seconds: f64) -> Option<f64> {
    match unit {
        Bf16Unit::Amx => amx_peak_gflops(seconds),
        Bf16Unit::Avx512Bf16 => avx512bf16_peak_gflops(seconds),
    }
}

/// The AVX512-BF16 peak of one core: `vdpbf16ps` on 24 independent accumulators (as many as
/// [`avx512bf16_kernel`] keeps), in GFLOP/s. `None` without AVX512-BF16.
pub fn avx512bf16_peak_gflops(seconds: f64) -> Option<f64> {
    if !avx512bf16_available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        /// `rounds` × 24 `vdpbf16ps`; returns a lane of the sum so the work is kept.
        ///
        /// # Safety
        /// The CPU runs AVX512-F and AVX512-BF16.
        #[target_feature(enable = "avx512f,avx512bf16")]
        unsafe fn run(rounds: usize) -> f32 {
            use std::arch::x86_64::*;
            let mut acc = [_mm512_setzero_ps(); 24];
            // SAFETY: register-only AVX512-BF16 arithmetic, the caller checked the CPU.
            unsafe {
                let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3F80_3F80));
                let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3380_3380));
                for _ in 0..rounds {
                    for x in acc.iter_mut() {
                        *x = _mm512_dpbf16_ps(*x, a, b);
                    }
                    // Keep the loop from being folded: an opaque use of one accumulator.
                    std::arch::asm!("/* {0} */", inout(zmm_reg) acc[0], options(nomem, nostack, preserves_flags));
                }
                let mut sum = _mm512_setzero_ps();
                for x in acc {
                    sum = _mm512_add_ps(sum, x);
                }
                _mm512_reduce_add_ps(sum)
            }
        }
        let start = std::time::Instant::now();
        let (mut n, mut sink) = (0u64, 0.0f32);
        while start.elapsed().as_secs_f64() < seconds {
            // SAFETY: AVX512-BF16 checked above.
            sink += unsafe { run(4096) };
            n += 4096 * 24;
        }
        std::hint::black_box(sink);
        Some(n as f64 * (2 * 16 * 2) as f64 / start.elapsed().as_secs_f64() / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// The AMX peak of one core, measured: `tdpbf16ps` on register tiles only (no memory traffic),
/// in GFLOP/s. `None` without AMX.
pub fn amx_peak_gflops(seconds: f64) -> Option<f64> {
    if !amx_available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::asm;
        let zeros = [0u16; TILE];
        let start = std::time::Instant::now();
        let mut n = 0u64;
        // SAFETY: AMX available; the tiles load from `zeros` (16 rows × 64 bytes).
        unsafe {
            amx_configure();
            asm!(
                "tileloadd tmm4, [{p} + {s}*1]", "tileloadd tmm5, [{p} + {s}*1]",
                "tileloadd tmm6, [{p} + {s}*1]", "tileloadd tmm7, [{p} + {s}*1]",
                "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
                p = in(reg) zeros.as_ptr(), s = in(reg) 64usize, options(nostack, readonly),
            );
            while start.elapsed().as_secs_f64() < seconds {
                for _ in 0..4096 {
                    asm!(
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        options(nostack, nomem),
                    );
                }
                n += 4 * 4096;
            }
            amx_release();
        }
        Some(n as f64 * (2 * 16 * 16 * 32) as f64 / start.elapsed().as_secs_f64() / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bf16::round_bf16;

    /// op(A) · op(B) in f64 on BF16-rounded operands.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        (ars, acs): (usize, usize),
        b: &[f32],
        (brs, bcs): (usize, usize),
        c0: f32,
    ) -> Vec<f64> {
        let mut c = vec![c0 as f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    c[i * n + j] += round_bf16(a[i * ars + l * acs]) as f64
                        * round_bf16(b[l * brs + j * bcs]) as f64;
                }
            }
        }
        c
    }

    #[test]
    fn every_unit_here_matches_rounded_operands_on_edges_and_layouts() {
        let units: Vec<Bf16Unit> = [Bf16Unit::Amx, Bf16Unit::Avx512Bf16]
            .into_iter()
            .filter(|&u| runs(u))
            .collect();
        for unit in units {
            for &(m, n, k) in &[
                (1, 1, 1),
                (17, 33, 31),
                (32, 32, 32),
                (33, 65, 63),
                (130, 70, 600),
                (40, 2100, 17),
                (300, 20, 64),
                (1000, 33, 70),
                // Several k blocks and row blocks in one column block (each task packs its rows).
                (260, 40, 2100),
            ] {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    let a: Vec<f32> = (0..m * k)
                        .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1.37e-3)
                        .collect();
                    let b: Vec<f32> = (0..k * n)
                        .map(|i| ((i * 104729 % 997) as f32 - 498.0) * 2.11e-3)
                        .collect();
                    let ast = if ta { (1, m) } else { (k, 1) };
                    let bst = if tb { (1, k) } else { (n, 1) };
                    for acc in [false, true] {
                        let mut c = vec![0.25f32; m * n];
                        gemm_bf16(unit, m, n, k, &a, ast, &b, bst, &mut c, acc, 2);
                        let want =
                            reference(m, n, k, &a, ast, &b, bst, if acc { 0.25 } else { 0.0 });
                        let scale: f64 = (0..k).map(|_| 0.7 * 1.05).sum::<f64>();
                        for (idx, (&got, &w)) in c.iter().zip(&want).enumerate() {
                            assert!(
                                (got as f64 - w).abs() <= 2e-6 * scale + 1e-6,
                                "{} {m}x{n}x{k} ta {ta} tb {tb} acc {acc} [{}, {}]: {got} vs {w}",
                                unit.name(),
                                idx / n,
                                idx % n
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nan_and_infinity_pass_through_the_packing() {
        for unit in [Bf16Unit::Amx, Bf16Unit::Avx512Bf16] {
            if !runs(unit) {
                continue;
            }
            let (m, n, k) = (3, 40, 40);
            let mut a = vec![1.0f32; m * k];
            let b = vec![0.5f32; k * n];
            a[k + 3] = f32::NAN;
            a[2 * k + 5] = f32::INFINITY;
            let mut c = vec![0f32; m * n];
            gemm_bf16(unit, m, n, k, &a, (k, 1), &b, (n, 1), &mut c, false, 1);
            assert!(c[..n].iter().all(|&v| v == 20.0), "{:?}", &c[..n]);
            assert!(c[n..2 * n].iter().all(|v| v.is_nan()));
            assert!(c[2 * n..].iter().all(|&v| v == f32::INFINITY));
        }
    }

    #[test]
    fn whole_tiles_by_vcvtne2ps2bf16_pack_as_the_portable_loops() {
        if !avx512bf16_available() {
            eprintln!("no AVX512-BF16 here: only the portable packing runs");
            return;
        }
        // Specials and subnormals among ordinary values, in every layout both paths pack.
        let special = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1.0e-40,
            -3.0e-39,
            f32::MAX,
            1.0 + 2f32.powi(-8),
        ];
        let (lines, k) = (64, 96);
        let data: Vec<f32> = (0..lines * k)
            .map(|i| {
                if i % 37 == 0 {
                    special[i / 37 % special.len()]
                } else {
                    f32::from_bits((i as u32).wrapping_mul(2654435761) & 0xBFFF_FFFF)
                }
            })
            .collect();
        let subnormal = |x: f32| x != 0.0 && x.abs() < f32::MIN_POSITIVE;
        for (rs, cs) in [(k, 1), (1, lines)] {
            let v = View {
                data: &data,
                rs,
                cs,
            };
            for vnni in [false, true] {
                let size = 2 * k.div_ceil(KT) * 2 * TILE;
                let (mut slow, mut fast) = (vec![0u16; size], vec![0u16; size]);
                pack_panels(vnni, v, 0, lines, 0, k, &mut slow, false);
                // SAFETY: AVX512-F/BW/BF16 checked above.
                unsafe { pack_panels_avx512bf16(vnni, v, 0, lines, 0, k, &mut fast) };
                for (i, (&s, &f)) in slow.iter().zip(&fast).enumerate() {
                    if s == f {
                        continue;
                    }
                    // Only subnormal inputs may differ: both read as zero by the units.
                    let zero_like = |b: u16| b & 0x7F80 == 0;
                    assert!(
                        zero_like(s) && zero_like(f) && f & 0x7FFF == 0,
                        "rs {rs} vnni {vnni} element {i}: {s:#06x} vs {f:#06x}"
                    );
                }
                assert!(data.iter().any(|&x| subnormal(x)));
            }
        }
    }

    #[test]
    fn the_packing_rounds_like_to_bf16() {
        let xs: Vec<f32> = (0..4096u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2654435761)))
            .chain([
                f32::NAN,
                -f32::NAN,
                f32::INFINITY,
                1.0 + 2f32.powi(-8),
                f32::MAX,
            ])
            .collect();
        for x in xs {
            assert_eq!(bf(x), to_bf16(x) as u32, "{x:e}");
            assert_eq!(pair(x, -x), to_bf16(x) as u32 | (to_bf16(-x) as u32) << 16);
        }
    }
}
