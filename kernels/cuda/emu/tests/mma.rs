//! mma.cu's `fp8_mma_gemm_f32` (FP8 GEMMs on the tensor cores, every group in one launch)
//! against the exact block-scaled product computed here in f64 from the same E4M3 codes and
//! scales: `C[i, j] = Σ_c (Σ_{κ ∈ c} A[i, κ]·B[j, κ]) · sa(i, c) · sb(j, c)` over the chunks
//! of 128 along K. The kernel's `mma.sync` runs as the emulation shim's warp-collective
//! instruction, which lays the fragments out as the PTX ISA does; a fragment read at the wrong
//! row, column or K breaks the product far beyond the FP32 rounding allowed here. Likewise
//! `bf16_mma_gemm_f32` (the experts' BF16 GEMMs, `mma.sync` m16n8k16) against the exact
//! product of the same BF16 values.
use tokenmill_cuda_emu::{Ptr, launch, launch_clusters};
use tokenmill_kernels::Fp8Format;
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

/// Declares kernels of one signature, as the emulation library exports them.
macro_rules! kernels {
    ($($name:ident),* : $args:tt) => {
        unsafe extern "C" {
            $(fn $name $args;)*
        }
    };
}

kernels!(fp8_mma_gemm_f32, fp8_wgmma_gemm_f32: (
    a: *const u8,
    lda: i64,
    sa: *const f32,
    sa_outer: i64,
    sa_k: i64,
    a_blk: i32,
    b: *const u8,
    ldb: i64,
    sb: *const f32,
    sb_outer: i64,
    sb_k: i64,
    b_blk: i32,
    c: *mut f32,
    ldc: i64,
    desc: *const i64,
    accumulate: i32
));
kernels!(bf16_mma_gemm_f32, bf16_wgmma_gemm_f32: (
    a: *const u16,
    lda: i64,
    b: *const u16,
    ldb: i64,
    c: *mut f32,
    ldc: i64,
    desc: *const i64,
    accumulate: i32
));

kernels!(fp8_tma_gemm_f32, fp8_tma_mc_gemm_f32: (
    sa: *const f32,
    sa_outer: i64,
    sa_k: i64,
    a_blk: i32,
    sb: *const f32,
    sb_outer: i64,
    sb_k: i64,
    b_blk: i32,
    c: *mut f32,
    ldc: i64,
    desc: *const i64,
    accumulate: i32,
    maps: *const u64,
    tiles_m: i32,
    tiles_n: i32,
    count: i32
));
kernels!(bf16_tma_gemm_f32, bf16_tma_mc_gemm_f32: (
    c: *mut f32,
    ldc: i64,
    desc: *const i64,
    accumulate: i32,
    maps: *const u64,
    tiles_m: i32,
    tiles_n: i32,
    count: i32
));
unsafe extern "C" {
    /// The emulation's cuTensorMapEncodeTiled (shim/emu.h): null, or why the map is refused.
    fn tm_emu_tensor_map_encode(
        map: *mut u64,
        elem_bytes: u32,
        addr: *const u8,
        dim0: u64,
        dim1: u64,
        stride1: u64,
        box0: u32,
        box1: u32,
        swizzle: u32,
    ) -> *const std::ffi::c_char;
}

const E4M3: Fp8Format = Fp8Format::E4M3;

/// One side's tensor maps to make: its first byte, row length in bytes, and per group (first
/// byte, rows, K bytes).
type MapSide = (*const u8, usize, Vec<(usize, usize, usize)>);

/// The TMA kernels' tensor maps, two per group (A's, then B's) as the backend makes them: over
/// bytes, a group's K bytes by its rows, rows `ld` bytes apart, boxes of 128 bytes by 128 rows
/// (A's by `a_rows`: 64 for the multicast kernels), the 128-byte swizzle. `sides`: each side's
/// first byte, row length in bytes and per group (first byte, rows, K bytes); a group with no
/// rows or no K gets no map (the kernel reads none).
fn tensor_maps(sides: [MapSide; 2], a_rows: u32) -> Vec<u64> {
    let groups = sides[0].2.len();
    let mut maps = vec![0u64; 32 * groups];
    for (side, (base, ld, parts)) in sides.iter().enumerate() {
        for (g, &(at, rows, kbytes)) in parts.iter().enumerate() {
            if rows == 0 || kbytes == 0 {
                continue;
            }
            let map = maps[32 * g + 16 * side..].as_mut_ptr();
            // SAFETY: `map` has 16 u64 of room; the encoder only reads its other arguments (the
            // address is kept for the kernel, which the caller keeps alive).
            let why = unsafe {
                tm_emu_tensor_map_encode(
                    map,
                    1,
                    base.add(at),
                    kbytes as u64,
                    rows as u64,
                    *ld as u64,
                    128,
                    if side == 0 { a_rows } else { 128 },
                    128,
                )
            };
            assert!(why.is_null(), "tensor map refused: {:?}", unsafe {
                // SAFETY: a non-null result is a static C string.
                std::ffi::CStr::from_ptr(why)
            });
        }
    }
    maps
}

/// Which kernel [`check`] and [`check_bf16`] run: `mma.sync` (cu/mma.cu), wgmma (cu/wgmma.cu,
/// Hopper's warpgroup instruction on operands copied asynchronously into swizzled shared
/// memory), or wgmma on operands copied by the TMA unit in a warp-specialised block, with a
/// block per tile (`Tma(0)`) or that many blocks taking the tiles in turn (a persistent grid:
/// the stages and their barriers' phases go on from tile to tile, into the next group); or
/// the same in thread block clusters of two that take tiles in pairs along n and multicast
/// A's chunks to both (`Multicast(0)`: a cluster per pair; else that many blocks).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernel {
    Sync,
    Wgmma,
    Tma(u32),
    Multicast(u32),
}

impl Kernel {
    /// A TMA kernel's blocks (0: one per tile or pair) and cluster size.
    fn tma(self) -> Option<(u32, u32)> {
        match self {
            Kernel::Tma(b) => Some((b, 1)),
            Kernel::Multicast(b) => Some((b, 2)),
            _ => None,
        }
    }
}

/// The kernels [`check_both`] and the BF16 test run.
const KERNELS: [Kernel; 6] = [
    Kernel::Sync,
    Kernel::Wgmma,
    Kernel::Tma(0),
    Kernel::Tma(2),
    Kernel::Multicast(0),
    Kernel::Multicast(4),
];

/// The TMA kernels' launch over `shapes` in clusters of `cluster`: the grid (in x alone) and
/// the kernels' last three arguments (tiles along m and n of the largest group, and the
/// groups).
fn tma_grid(blocks: u32, cluster: u32, shapes: &[Shape]) -> ((u32, u32, u32), [i32; 3]) {
    let most = |f: fn(&Shape) -> usize| shapes.iter().map(f).max().unwrap_or(0).div_ceil(128);
    let (tm, tn) = (most(|s| s.m), most(|s| s.n));
    let units = (tm * tn.div_ceil(cluster as usize) * shapes.len()).max(1) as u32;
    let clusters = if blocks == 0 {
        units
    } else {
        (blocks / cluster).clamp(1, units)
    };
    (
        (clusters * cluster, 1, 1),
        [tm as i32, tn as i32, shapes.len() as i32],
    )
}

/// Both FP8 kernels' signature: A's codes, row length, scales, their strides and tiles; B's
/// likewise; C and its row length; the table of groups; accumulate.
type Fp8Kernel = unsafe extern "C" fn(
    *const u8,
    i64,
    *const f32,
    i64,
    i64,
    i32,
    *const u8,
    i64,
    *const f32,
    i64,
    i64,
    i32,
    *mut f32,
    i64,
    *const i64,
    i32,
);

/// cu/wgmma.cu's WG_SMEM: five stages of two 16 KiB tiles and 1 KiB to align them.
const WG_SMEM: usize = 5 * 2 * 128 * 128 + 1024;

/// cu/wgmma.cu's TMA_SMEM: six stages of two 16 KiB tiles and 256 scales, their twelve
/// barriers, 1 KiB to align them.
const TMA_SMEM: usize = 6 * (2 * 128 * 128 + 256 * 4) + 12 * 8 + 1024;

/// cu/mma.cu's MMA_SMEM: two stages of 128 + 128 rows of 144 bytes.
const MMA_SMEM: usize = 2 * (128 + 128) * 144;

/// One group's GEMM: `m × n`, contracted over `k`.
#[derive(Clone, Copy)]
struct Shape {
    m: usize,
    n: usize,
    k: usize,
}

/// A random E4M3 code (never NaN: 0x7f and 0xff are left out).
fn code(rng: &mut Rng) -> u8 {
    loop {
        let c = rng.below(256) as u8;
        if c & 0x7f != 0x7f {
            return c;
        }
    }
}

/// Codes of `groups` operands, each `outer_g × k_g`, stacked `[Σ outer, ld]`: zeros from k_g to
/// the next multiple of 16 (as the quantizer leaves them), NaN codes past that (never read).
fn codes(rng: &mut Rng, dims: &[(usize, usize)], ld: usize) -> (Vec<u8>, Vec<usize>) {
    let mut v = Vec::new();
    let mut offs = Vec::new();
    for &(outer, k) in dims {
        offs.push(v.len());
        for _ in 0..outer {
            for j in 0..ld {
                v.push(if j < k {
                    code(rng)
                } else if j < k.next_multiple_of(16) {
                    0
                } else {
                    0x7f
                });
            }
        }
    }
    (v, offs)
}

/// Scales of `groups` operands: per tile of 1 (blk false) or 128 (blk true) outer indices and
/// 128 of K, `[Σ tiles, kb]` with `kb` the most chunks of any group; powers of two and odd
/// values over a wide range.
fn scales(rng: &mut Rng, dims: &[(usize, usize)], blk: bool, kb: usize) -> (Vec<f32>, Vec<usize>) {
    let mut v = Vec::new();
    let mut offs = Vec::new();
    for &(outer, _) in dims {
        offs.push(v.len());
        let tiles = if blk { outer.div_ceil(128) } else { outer };
        for _ in 0..tiles * kb {
            let e = rng.below(40) as i32 - 20;
            v.push((1.0 + rng.uniform() as f32) * 2f32.powi(e));
        }
    }
    (v, offs)
}

/// Codes of `outer` rows for each group, the groups side by side along K: `[outer, ld]` with
/// `ld` = Σ K rounded to 16 each; zeros from a group's K to its next multiple of 16. Returns
/// `ld`, the codes and each group's first column.
fn codes_along_k(rng: &mut Rng, outer: usize, shapes: &[Shape]) -> (usize, Vec<u8>, Vec<usize>) {
    let mut offs = Vec::new();
    let mut ld = 0;
    for s in shapes {
        offs.push(ld);
        ld += s.k.next_multiple_of(16);
    }
    let mut v = vec![0u8; outer * ld];
    for (s, &o) in shapes.iter().zip(&offs) {
        for i in 0..outer {
            for j in 0..s.k {
                v[i * ld + o + j] = code(rng);
            }
        }
    }
    (ld, v, offs)
}

/// Scales for [`codes_along_k`]: `[tiles of outer][Σ kb]`, each group's K blocks from its first.
fn scales_along_k(
    rng: &mut Rng,
    outer: usize,
    shapes: &[Shape],
    blk: bool,
) -> (usize, Vec<f32>, Vec<usize>) {
    let mut offs = Vec::new();
    let mut kb = 0;
    for s in shapes {
        offs.push(kb);
        kb += s.k.div_ceil(128);
    }
    let tiles = if blk { outer.div_ceil(128) } else { outer };
    let v = (0..tiles * kb.max(1))
        .map(|_| (1.0 + rng.uniform() as f32) * 2f32.powi(rng.below(40) as i32 - 20))
        .collect();
    (kb.max(1), v, offs)
}

/// Runs the kernel over `shapes` (A 1 × 128 or block scales, B likewise) and compares it with
/// the exact product; `along_k`: the groups' operands side by side along K (every group the
/// same m and n), else stacked; `nan`: a code of group 0's A made NaN, whose row must come out
/// NaN.
fn check(
    kernel: Kernel,
    shapes: &[Shape],
    (a_blk, b_blk): (bool, bool),
    along_k: bool,
    accumulate: bool,
    nan: bool,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let what = format!(
        "{kernel:?}: shapes {:?} a_blk {a_blk} b_blk {b_blk} along_k {along_k} accumulate {accumulate} nan {nan}",
        shapes.iter().map(|s| (s.m, s.n, s.k)).collect::<Vec<_>>()
    );
    let a_dims: Vec<_> = shapes.iter().map(|s| (s.m, s.k)).collect();
    let b_dims: Vec<_> = shapes.iter().map(|s| (s.n, s.k)).collect();
    let (ld, kb, (mut a, a_off), (b, b_off), (sa, sa_off), (sb, sb_off));
    if along_k {
        // The weight gradient's layout: every group's operand the same rows, the groups side by
        // side along K (each 16-byte aligned), their K blocks side by side in the scales.
        (ld, a, a_off) = codes_along_k(&mut rng, shapes[0].m, shapes);
        let (_, bc, bo) = codes_along_k(&mut rng, shapes[0].n, shapes);
        (b, b_off) = (bc, bo);
        let (k_blocks, sav, sao) = scales_along_k(&mut rng, shapes[0].m, shapes, a_blk);
        let (_, sbv, sbo) = scales_along_k(&mut rng, shapes[0].n, shapes, b_blk);
        (kb, sa, sa_off, sb, sb_off) = (k_blocks, sav, sao, sbv, sbo);
    } else {
        ld = shapes
            .iter()
            .map(|s| s.k.next_multiple_of(16))
            .max()
            .unwrap_or(16)
            + 16;
        kb = shapes
            .iter()
            .map(|s| s.k.div_ceil(128))
            .max()
            .unwrap_or(1)
            .max(1);
        (a, a_off) = codes(&mut rng, &a_dims, ld);
        (b, b_off) = codes(&mut rng, &b_dims, ld);
        (sa, sa_off) = scales(&mut rng, &a_dims, a_blk, kb);
        (sb, sb_off) = scales(&mut rng, &b_dims, b_blk, kb);
    }
    // Rows of C an even number of floats apart (8-byte pairs in the kernels' stores) or odd
    // (4-byte accesses), by the seed and the accumulation.
    let ldc = shapes.iter().map(|s| s.n).max().unwrap_or(1)
        + 2
        + (seed as usize + accumulate as usize) % 2;
    let mut c_off = Vec::new();
    let mut rows = 0;
    for s in shapes {
        c_off.push(rows * ldc);
        rows += s.m;
    }
    let c0: Vec<f32> = (0..rows.max(1) * ldc)
        .map(|_| rng.normal() as f32)
        .collect();
    let nan_at = (shapes[0].m / 2, shapes[0].k / 3);
    if nan {
        a[a_off[0] + nan_at.0 * ld + nan_at.1] = 0x7f;
    }
    let desc: Vec<i64> = shapes
        .iter()
        .enumerate()
        .flat_map(|(g, s)| {
            [
                s.m, s.n, s.k, a_off[g], b_off[g], sa_off[g], sb_off[g], c_off[g],
            ]
            .map(|x| x as i64)
        })
        .collect();
    let mut c = c0.clone();
    let grid = (
        shapes.iter().map(|s| s.n).max().unwrap_or(0).div_ceil(128) as u32,
        shapes.iter().map(|s| s.m).max().unwrap_or(0).div_ceil(128) as u32,
        shapes.len() as u32,
    );
    let (ap, bp, sap, sbp, cp, dp) = (
        Ptr::of_const(&a),
        Ptr::of_const(&b),
        Ptr::of_const(&sa),
        Ptr::of_const(&sb),
        Ptr::of(&mut c),
        Ptr::of_const(&desc),
    );
    let kb64 = kb as i64;
    let grid = (grid.0.max(1), grid.1.max(1), grid.2);
    if let Some((blocks, cluster)) = kernel.tma() {
        let parts = |off: &[usize], rows: &dyn Fn(&Shape) -> usize| {
            shapes
                .iter()
                .zip(off)
                .map(|(s, &o)| (o, rows(s), s.k))
                .collect()
        };
        let maps = tensor_maps(
            [
                (a.as_ptr(), ld, parts(&a_off, &|s| s.m)),
                (b.as_ptr(), ld, parts(&b_off, &|s| s.n)),
            ],
            128 / cluster,
        );
        let mp = Ptr::of_const(&maps);
        let (grid, [tm, tn, count]) = tma_grid(blocks, cluster, shapes);
        let f = if cluster == 1 {
            fp8_tma_gemm_f32
        } else {
            fp8_tma_mc_gemm_f32
        };
        launch_clusters(grid, (384, 1, 1), TMA_SMEM, cluster, || {
            // SAFETY: the scales and C hold every group's extent as `desc` gives it, the maps
            // cover each group's codes; all alive for the launch.
            unsafe {
                f(
                    sap.c(),
                    kb64,
                    1,
                    a_blk as i32,
                    sbp.c(),
                    kb64,
                    1,
                    b_blk as i32,
                    cp.p(),
                    ldc as i64,
                    dp.c(),
                    accumulate as i32,
                    mp.c(),
                    tm,
                    tn,
                    count,
                )
            }
        });
    } else {
        let (f, smem) = match kernel {
            Kernel::Sync => (fp8_mma_gemm_f32 as Fp8Kernel, MMA_SMEM),
            _ => (fp8_wgmma_gemm_f32 as Fp8Kernel, WG_SMEM),
        };
        launch(grid, (256, 1, 1), smem, || {
            // SAFETY: the codes, scales and C hold every group's extent as `desc` gives it
            // (built above from the same shapes); all alive for the launch.
            unsafe {
                f(
                    ap.c(),
                    ld as i64,
                    sap.c(),
                    kb64,
                    1,
                    a_blk as i32,
                    bp.c(),
                    ld as i64,
                    sbp.c(),
                    kb64,
                    1,
                    b_blk as i32,
                    cp.p(),
                    ldc as i64,
                    dp.c(),
                    accumulate as i32,
                )
            }
        });
    }
    let dec = |x: u8| E4M3.decode(x) as f64;
    for (g, s) in shapes.iter().enumerate() {
        for i in 0..s.m {
            for j in 0..s.n {
                let (mut exact, mut size) = (0f64, 0f64);
                for ch in 0..s.k.div_ceil(128) {
                    let (mut part, mut part_abs) = (0f64, 0f64);
                    for kk in ch * 128..s.k.min(ch * 128 + 128) {
                        let p = dec(a[a_off[g] + i * ld + kk]) * dec(b[b_off[g] + j * ld + kk]);
                        part += p;
                        part_abs += p.abs();
                    }
                    let ta = if a_blk { i / 128 } else { i };
                    let tb = if b_blk { j / 128 } else { j };
                    let scale =
                        sa[sa_off[g] + ta * kb + ch] as f64 * sb[sb_off[g] + tb * kb + ch] as f64;
                    exact += part * scale;
                    size += part_abs * scale;
                }
                let at = c_off[g] + i * ldc + j;
                let want = if accumulate {
                    c0[at] as f64 + exact
                } else {
                    exact
                };
                let got = c[at];
                if nan && g == 0 && i == nan_at.0 {
                    assert!(
                        got.is_nan(),
                        "{what}: C[{i}, {j}] of the NaN code's row is {got}"
                    );
                    continue;
                }
                let tol =
                    2e-6 * (size + if accumulate { c0[at].abs() as f64 } else { 0.0 }) + 1e-30;
                assert!(
                    (got as f64 - want).abs() <= tol,
                    "{what}: group {g} C[{i}, {j}] = {got}, exact {want} (tolerance {tol:e})"
                );
            }
        }
    }
    // Nothing outside the groups' outputs is written: the columns past n, and past n_g.
    for (g, s) in shapes.iter().enumerate() {
        for i in 0..s.m {
            for j in s.n..ldc {
                let at = c_off[g] + i * ldc + j;
                assert_eq!(
                    c[at].to_bits(),
                    c0[at].to_bits(),
                    "{what}: C[{i}, {j}] written"
                );
            }
        }
    }
}

/// [`check`] on both FP8 kernels.
fn check_both(
    shapes: &[Shape],
    blk: (bool, bool),
    along_k: bool,
    accumulate: bool,
    nan: bool,
    seed: u64,
) {
    for kernel in KERNELS {
        check(kernel, shapes, blk, along_k, accumulate, nan, seed);
    }
}

#[test]
fn one_gemm_on_the_tensor_cores_is_the_exact_block_scaled_product() {
    let one = |m, n, k| [Shape { m, n, k }];
    // The forward's scaling (1 × 128 activations, 128 × 128 weight blocks), over several
    // 128 × 128 output tiles with partial edges, K not a multiple of 128 nor of 32.
    check_both(&one(200, 150, 304), (false, true), false, false, false, 1);
    // The weight gradient's (1 × 128 on both sides), accumulating into C.
    check_both(&one(70, 260, 144), (false, false), false, true, false, 2);
    // Blocks on A, 1 × 128 on B; K of one 16-byte piece; an odd n (a pair of columns half
    // past it), accumulating (rows of C an even number apart: read and written in pairs).
    check_both(&one(130, 21, 16), (true, false), false, true, false, 3);
    // Eight chunks along K: more than the wgmma kernel's five stages and the mma.sync
    // kernel's two, so each stage is overwritten by a later chunk's copies.
    check_both(&one(70, 130, 1000), (false, true), false, true, false, 9);
}

#[test]
fn every_group_is_its_own_gemm_in_one_launch() {
    // The experts: different row counts (none, fewer than a fragment, more than a tile) over
    // the same n and k, their operands stacked.
    let experts = [
        Shape {
            m: 37,
            n: 96,
            k: 256,
        },
        Shape {
            m: 0,
            n: 96,
            k: 256,
        },
        Shape {
            m: 5,
            n: 96,
            k: 256,
        },
        Shape {
            m: 150,
            n: 96,
            k: 256,
        },
    ];
    check_both(&experts, (false, true), false, false, false, 4);
    check_both(&experts, (false, true), false, true, false, 5);
    // A weight gradient's: K (the experts' rows) differs, K = 0 writing zeros; stacked, and
    // side by side along K as the backend lays them out (codes at a column offset, K blocks
    // at an offset within each row of scales).
    let wgrad = [
        Shape {
            m: 64,
            n: 48,
            k: 37,
        },
        Shape { m: 64, n: 48, k: 0 },
        Shape {
            m: 64,
            n: 48,
            k: 300,
        },
        Shape {
            m: 64,
            n: 48,
            k: 130,
        },
    ];
    for along_k in [false, true] {
        check_both(&wgrad, (false, false), along_k, false, false, 6);
        check_both(&wgrad, (false, false), along_k, true, false, 7);
    }
}

#[test]
fn a_nan_code_makes_its_row_nan() {
    check_both(
        &[Shape {
            m: 40,
            n: 24,
            k: 200,
        }],
        (false, true),
        false,
        false,
        true,
        8,
    );
}

/// `bf16_mma_gemm_f32` and `bf16_wgmma_gemm_f32`: every group's BF16 product on the tensor
/// cores (the shim's `mma.sync` m16n8k16, or its `wgmma.mma_async` m64n128k16) against the
/// exact product of the same BF16 values in f64, within the
/// FP32 rounding of its sums: several output tiles, K off the 64-value chunks, groups of 0,
/// 5 and 150 rows, stacked and side by side along K, accumulation, K over eleven chunks (the
/// wgmma kernel keeps one chunk's products in flight over five stages); a NaN makes its row
/// NaN.
#[test]
fn bf16_groups_on_the_tensor_cores_are_the_exact_product() {
    let experts = [
        Shape {
            m: 37,
            n: 150,
            k: 200,
        },
        Shape {
            m: 0,
            n: 150,
            k: 200,
        },
        Shape {
            m: 5,
            n: 150,
            k: 200,
        },
        Shape {
            m: 150,
            n: 150,
            k: 200,
        },
    ];
    let wgrad = [
        Shape {
            m: 64,
            n: 48,
            k: 37,
        },
        Shape { m: 64, n: 48, k: 0 },
        Shape {
            m: 64,
            n: 48,
            k: 136,
        },
    ];
    let long = [Shape {
        m: 70,
        n: 130,
        k: 700,
    }];
    for kernel in KERNELS {
        for (seed, (shapes, along_k)) in (11..).zip([
            (&experts[..], false),
            (&wgrad[..], false),
            (&wgrad[..], true),
            (&long[..], false),
        ]) {
            // (Seeds of both parities: C's rows an even and an odd number apart, each with
            // and without accumulation.)
            for accumulate in [false, true] {
                check_bf16(kernel, shapes, along_k, accumulate, false, seed);
            }
        }
        check_bf16(kernel, &experts, false, false, true, 12);
    }
}

/// A random BF16 value (never NaN), magnitudes over ±2⁻²⁰ … 2²⁰.
fn bf16(rng: &mut Rng) -> u16 {
    let v = rng.normal() as f32 * 2f32.powi(rng.below(41) as i32 - 20);
    (v.to_bits() >> 16) as u16
}

/// Runs a BF16 kernel over `shapes` (operands stacked, or side by side along K as the weight
/// gradient's) and compares it with the exact product.
fn check_bf16(
    kernel: Kernel,
    shapes: &[Shape],
    along_k: bool,
    accumulate: bool,
    nan: bool,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let what = format!(
        "{kernel:?} bf16 shapes {:?} along_k {along_k} accumulate {accumulate} nan {nan}",
        shapes.iter().map(|s| (s.m, s.n, s.k)).collect::<Vec<_>>()
    );
    // Values `[rows, ld]` per side, each group's at an element offset; zeros from K to the
    // next multiple of 16, NaN past it (never read).
    let side = |rng: &mut Rng, outer: &dyn Fn(&Shape) -> usize| -> (usize, Vec<u16>, Vec<usize>) {
        let nan16 = 0x7fc0u16;
        if along_k {
            let mut offs = Vec::new();
            let mut ld = 0;
            for s in shapes {
                offs.push(ld);
                ld += s.k.next_multiple_of(16);
            }
            let rows = outer(&shapes[0]);
            let mut v = vec![0u16; rows * ld];
            for (s, &o) in shapes.iter().zip(&offs) {
                for i in 0..rows {
                    for j in 0..s.k {
                        v[i * ld + o + j] = bf16(rng);
                    }
                }
            }
            (ld, v, offs)
        } else {
            let ld = shapes
                .iter()
                .map(|s| s.k.next_multiple_of(16))
                .max()
                .unwrap()
                + 16;
            let mut v = Vec::new();
            let mut offs = Vec::new();
            for s in shapes {
                offs.push(v.len());
                for _ in 0..outer(s) {
                    for j in 0..ld {
                        v.push(if j < s.k {
                            bf16(rng)
                        } else if j < s.k.next_multiple_of(16) {
                            0
                        } else {
                            nan16
                        });
                    }
                }
            }
            (ld, v, offs)
        }
    };
    let (lda, mut a, a_off) = side(&mut rng, &|s: &Shape| s.m);
    let (ldb, b, b_off) = side(&mut rng, &|s: &Shape| s.n);
    // Even or odd, as in `check`.
    let ldc =
        shapes.iter().map(|s| s.n).max().unwrap() + 2 + (seed as usize + accumulate as usize) % 2;
    let c_off: Vec<usize> = shapes
        .iter()
        .scan(0, |at, s| {
            let here = *at;
            *at += s.m * ldc;
            Some(here)
        })
        .collect();
    let c_len = shapes.iter().map(|s| s.m).sum::<usize>().max(1) * ldc;
    let c0: Vec<f32> = (0..c_len).map(|_| rng.normal() as f32).collect();
    let nan_row = shapes[0].m / 2;
    if nan {
        a[a_off[0] + nan_row * lda + shapes[0].k / 2] = 0x7fc0;
    }
    let desc: Vec<i64> = shapes
        .iter()
        .enumerate()
        .flat_map(|(g, s)| [s.m, s.n, s.k, a_off[g], b_off[g], 0, 0, c_off[g]].map(|x| x as i64))
        .collect();
    let mut c = c0.clone();
    let grid = (
        shapes.iter().map(|s| s.n).max().unwrap().div_ceil(128) as u32,
        shapes.iter().map(|s| s.m).max().unwrap().div_ceil(128) as u32,
        shapes.len() as u32,
    );
    let (ap, bp, cp, dp) = (
        Ptr::of_const(&a),
        Ptr::of_const(&b),
        Ptr::of(&mut c),
        Ptr::of_const(&desc),
    );
    type Bf16Kernel =
        unsafe extern "C" fn(*const u16, i64, *const u16, i64, *mut f32, i64, *const i64, i32);
    if let Some((blocks, cluster)) = kernel.tma() {
        let parts = |off: &[usize], rows: &dyn Fn(&Shape) -> usize| {
            shapes
                .iter()
                .zip(off)
                .map(|(s, &o)| (2 * o, rows(s), 2 * s.k))
                .collect()
        };
        let maps = tensor_maps(
            [
                (a.as_ptr().cast(), 2 * lda, parts(&a_off, &|s| s.m)),
                (b.as_ptr().cast(), 2 * ldb, parts(&b_off, &|s| s.n)),
            ],
            128 / cluster,
        );
        let mp = Ptr::of_const(&maps);
        let (grid, [tm, tn, count]) = tma_grid(blocks, cluster, shapes);
        let f = if cluster == 1 {
            bf16_tma_gemm_f32
        } else {
            bf16_tma_mc_gemm_f32
        };
        launch_clusters(grid, (384, 1, 1), TMA_SMEM, cluster, || {
            // SAFETY: C holds every group's extent as `desc` gives it, the maps cover each
            // group's values; all alive for the launch.
            unsafe {
                f(
                    cp.p(),
                    ldc as i64,
                    dp.c(),
                    accumulate as i32,
                    mp.c(),
                    tm,
                    tn,
                    count,
                )
            }
        });
    } else {
        let (f, smem) = match kernel {
            Kernel::Sync => (bf16_mma_gemm_f32 as Bf16Kernel, MMA_SMEM),
            _ => (bf16_wgmma_gemm_f32 as Bf16Kernel, WG_SMEM),
        };
        launch(grid, (256, 1, 1), smem, || {
            // SAFETY: the values and C hold every group's extent as `desc` gives it; all alive
            // for the launch.
            unsafe {
                f(
                    ap.c(),
                    lda as i64,
                    bp.c(),
                    ldb as i64,
                    cp.p(),
                    ldc as i64,
                    dp.c(),
                    accumulate as i32,
                )
            }
        });
    }
    let val = |h: u16| f32::from_bits((h as u32) << 16) as f64;
    for (g, s) in shapes.iter().enumerate() {
        for i in 0..s.m {
            for j in 0..ldc {
                let at = c_off[g] + i * ldc + j;
                if j >= s.n {
                    assert_eq!(
                        c[at].to_bits(),
                        c0[at].to_bits(),
                        "{what}: C[{i}, {j}] written"
                    );
                    continue;
                }
                let (mut exact, mut size) = (0f64, 0f64);
                for kk in 0..s.k {
                    let p = val(a[a_off[g] + i * lda + kk]) * val(b[b_off[g] + j * ldb + kk]);
                    exact += p;
                    size += p.abs();
                }
                let got = c[at];
                if nan && g == 0 && i == nan_row {
                    assert!(
                        got.is_nan(),
                        "{what}: C[{i}, {j}] of the NaN's row is {got}"
                    );
                    continue;
                }
                let base = if accumulate { c0[at] as f64 } else { 0.0 };
                let tol = 2e-6 * (size + base.abs()) + 1e-37;
                assert!(
                    (got as f64 - (base + exact)).abs() <= tol,
                    "{what}: group {g} C[{i}, {j}] = {got}, exact {} (tolerance {tol:e})",
                    base + exact
                );
            }
        }
    }
}

/// The emulated cuTensorMapEncodeTiled keeps the real one's rules (the CUDA driver API's
/// reference): a map over a 16-byte aligned address with a row-holding stride that is a
/// multiple of 16 and boxes of 1–256 a side, rows a multiple of 16 bytes and at most 128 with
/// the 128-byte swizzle, is made; each rule broken is refused with its reason.
#[test]
fn tensor_maps_keep_the_drivers_rules() {
    let bytes = vec![0u8; 64 * 1024 + 32];
    let base = bytes.as_ptr().wrapping_add(bytes.as_ptr().align_offset(16));
    let mut map = [0u64; 16];
    let encode = |map: &mut [u64; 16],
                  addr: *const u8,
                  es,
                  dims: (u64, u64),
                  stride,
                  boxes: (u32, u32),
                  swizzle| {
        // SAFETY: `map` has room for 16 u64; the encoder reads only its scalar arguments.
        let why = unsafe {
            tm_emu_tensor_map_encode(
                map.as_mut_ptr(),
                es,
                addr,
                dims.0,
                dims.1,
                stride,
                boxes.0,
                boxes.1,
                swizzle,
            )
        };
        (!why.is_null()).then(|| {
            // SAFETY: a non-null result is a static C string.
            let text = unsafe { std::ffi::CStr::from_ptr(why) };
            text.to_string_lossy().into_owned()
        })
    };
    assert_eq!(
        encode(&mut map, base, 1, (100, 50), 128, (128, 128), 128),
        None
    );
    assert_eq!(
        encode(&mut map, base, 2, (60, 50), 128, (64, 128), 128),
        None
    );
    for (addr, es, dims, stride, boxes, swizzle, why) in [
        (
            base.wrapping_add(8),
            1,
            (100, 50),
            128,
            (128, 128),
            128,
            "16-byte aligned",
        ),
        (base, 1, (100, 50), 120, (128, 128), 128, "multiple of 16"),
        (
            base,
            1,
            (200, 50),
            128,
            (128, 128),
            128,
            "shorter than a row",
        ),
        (base, 1, (0, 50), 128, (128, 128), 128, "dimension"),
        (base, 1, (100, 50), 128, (128, 300), 128, "box side"),
        (
            base,
            1,
            (100, 50),
            128,
            (8, 128),
            128,
            "multiple of 16 bytes",
        ),
        (
            base,
            1,
            (100, 50),
            256,
            (256, 128),
            128,
            "longer than the 128-byte swizzle",
        ),
        (
            base,
            1,
            (100, 50),
            128,
            (128, 128),
            64,
            "only the 128-byte swizzle",
        ),
        (base, 3, (100, 50), 128, (128, 128), 128, "1, 2 or 4 bytes"),
    ] {
        let got = encode(&mut map, addr, es, dims, stride, boxes, swizzle);
        assert!(
            got.as_deref().is_some_and(|g| g.contains(why)),
            "{dims:?} stride {stride} box {boxes:?}: {got:?}, expected {why}"
        );
    }
}

/// The backend's probe shape (200 × 160 × 1700, K padded to 1712: fourteen chunks, the TMA
/// kernels' six stages refilled twice) with random scales. A warp's FP8 consumer released its
/// stage as soon as lane 0 had promoted, while other lanes still read the stage's scales: the
/// producer refilled them, and C[112, 127] took the next round's scales (the probe, whose
/// scales are all 2⁻⁵, could not see it). Every lane reads them before the release now.
#[test]
fn a_stage_is_released_once_every_lane_has_read_its_scales() {
    let shape = [Shape {
        m: 200,
        n: 160,
        k: 1712,
    }];
    check_both(&shape, (false, true), false, false, false, 5);
    check_both(&shape, (false, false), false, true, false, 6);
}
