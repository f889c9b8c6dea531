//! quant.cu and the codecs of common.cuh against the Rust number formats, bit for bit:
//! the BF16 and E4M3 encoders on ~10⁵ random and boundary f32s, the E4M3 decoder on all 256
//! codes, BF16 rounding, FP8 tile quantization (`quant::quantize` and `quant::fake_quantize`,
//! E4M3 with exact scales: edge tiles, zero tiles, non-finite tiles, subnormal scales) and the
//! promotion of a truncated partial sum (`cpu::lowp`, through `matmul_lowp`); the grouped
//! quantizers of the experts' FP8 GEMM against `fake_quantize` expert by expert.
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::Fp8Format;
use tokenmill_kernels::backend::{FP8_ACC_MANTISSA_BITS, LowpGemm, MatMul};
use tokenmill_kernels::bf16::{round_bf16, to_bf16};
use tokenmill_kernels::cpu::lowp::matmul_lowp;
use tokenmill_kernels::quant::{ScaleRounding, fake_quantize, quantize};
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn round_bf16_f32(x: *mut f32, n: i64);
    fn to_bf16_f32(x: *const f32, y: *mut u16, n: i64);
    fn fp8_fake_quantize_f32(
        src: *const f32,
        dst: *mut f32,
        rows: i32,
        cols: i32,
        tile_rows: i32,
        tile_cols: i32,
        bad_tiles: *mut u32,
    );
    fn fp8_quantize_f32(
        x: *const f32,
        rows: i32,
        cols: i32,
        tile_rows: i32,
        tile_cols: i32,
        codes: *mut u8,
        scales: *mut f32,
        bad_tiles: *mut u32,
    );
    fn fp8_fake_quantize_rows_f32(
        src: *const f32,
        dst: *mut f32,
        offsets: *const i32,
        groups: i32,
        cols: i32,
        tile_rows: i32,
        tile_cols: i32,
        bad_tiles: *mut u32,
    );
    fn fp8_fake_quantize_blocks_f32(
        src: *const f32,
        src_stride: i64,
        dst: *mut f32,
        dst_stride: i64,
        offsets: *const i32,
        groups: i32,
        rows: i32,
        cols: i32,
        tile_rows: i32,
        tile_cols: i32,
        bad_tiles: *mut u32,
    );
    fn fp8_quantize_lt_f32(
        src: *const f32,
        rows: i32,
        cols: i32,
        k_on_rows: i32,
        tile_outer: i32,
        codes: *mut u8,
        ld: i64,
        scales: *mut f32,
        scale_outer: i64,
        scale_k: i64,
        bad_tiles: *mut u32,
        desc: *const i64,
    );
    fn promote_truncated_f32(c: *mut f32, part: *const f32, n: i64, bits: i32);
    fn codec_encode_probe(x: *const f32, n: i64, bf16: *mut u16, e4m3: *mut u8);
    fn codec_decode_probe(codes: *const u8, n: i32, out: *mut f32);
}

const BLOCK: u32 = 256;
const E4M3: Fp8Format = Fp8Format::E4M3;

/// The grid of the elementwise kernels: min(ceil(n / 256), 65535) blocks.
fn grid(n: usize) -> u32 {
    n.div_ceil(BLOCK as usize).clamp(1, 65535) as u32
}

/// Random bit patterns, values across the E4M3 range, every E4M3 rounding boundary, BF16
/// ties, and special values.
fn encode_inputs() -> Vec<f32> {
    let mut rng = Rng::new(18);
    let mut x: Vec<f32> = Vec::new();
    for _ in 0..60_000 {
        x.push(f32::from_bits(rng.next_u64() as u32));
    }
    for _ in 0..20_000 {
        // |x| in [2^-12, 2^10): the E4M3 subnormals, normals and overflow.
        let e = 127 - 12 + rng.below(22) as u32;
        let bits = (rng.next_u64() as u32 & 0x8000_0000) | (e << 23) | (rng.next_u64() as u32 >> 9);
        x.push(f32::from_bits(bits));
    }
    for _ in 0..5_000 {
        // BF16 ties and their neighbours.
        let hi = rng.next_u64() as u32 & 0xffff_0000;
        for lo in [0x7fff, 0x8000, 0x8001] {
            x.push(f32::from_bits(hi | lo));
        }
    }
    for code in 0..0x7Eu8 {
        let (lo, hi) = (E4M3.decode(code), E4M3.decode(code + 1));
        let mid = (lo + hi) / 2.0;
        for v in [
            lo,
            hi,
            mid,
            f32::from_bits(mid.to_bits() - 1),
            f32::from_bits(mid.to_bits() + 1),
        ] {
            x.push(v);
            x.push(-v);
        }
    }
    for bits in [
        0u32,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0xffc0_0000,
        0x7f80_0001,
        0xff80_0001,
        0x7fbf_ffff,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x7f7f_8000,
        0x0080_0000,
        0x0000_0001,
        0x007f_ffff,
        0x3c80_0000,
        0x3c7f_ffff,
        0x3c80_0001,
        0x43e0_0000,
        0x43df_ffff,
        0x43e0_0001,
        0x43e8_0000,
        0x43e7_ffff,
        0x43f0_0000,
        0x3b00_0000,
        0x3a80_0000,
        0x3a80_0001,
        0x3ac0_0000,
    ] {
        x.push(f32::from_bits(bits));
        x.push(-f32::from_bits(bits));
    }
    x
}

#[test]
fn encoders_are_the_rust_codecs_bit_for_bit() {
    let x = encode_inputs();
    let n = x.len();
    let (mut b, mut e) = (vec![0u16; n], vec![0u8; n]);
    let (xp, bp, ep) = (Ptr::of_const(&x), Ptr::of(&mut b), Ptr::of(&mut e));
    launch((16, 1, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: x, bf16, e4m3: n elements each, alive for the launch.
        unsafe { codec_encode_probe(xp.c(), n as i64, bp.p(), ep.p()) }
    });
    for i in 0..n {
        assert_eq!(
            b[i],
            to_bf16(x[i]),
            "bf16 of {:e} ({:#010x})",
            x[i],
            x[i].to_bits()
        );
        assert_eq!(
            e[i],
            E4M3.encode_saturating(x[i]),
            "e4m3 of {:e} ({:#010x})",
            x[i],
            x[i].to_bits()
        );
    }
    // round_bf16_f32 on the same values.
    let mut y = x.clone();
    let yp = Ptr::of(&mut y);
    launch((grid(n).min(16), 1, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: x: n elements, alive for the launch.
        unsafe { round_bf16_f32(yp.p(), n as i64) }
    });
    for i in 0..n {
        assert_eq!(
            y[i].to_bits(),
            round_bf16(x[i]).to_bits(),
            "round_bf16 of {:e} ({:#010x})",
            x[i],
            x[i].to_bits()
        );
    }
    // to_bf16_f32 (the tensor-core GEMM's operands) on the same values.
    let mut h = vec![0u16; n];
    let (xp, hp) = (Ptr::of_const(&x), Ptr::of(&mut h));
    launch((grid(n).min(16), 1, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: x and h: n elements each, alive for the launch.
        unsafe { to_bf16_f32(xp.c(), hp.p(), n as i64) }
    });
    for i in 0..n {
        assert_eq!(
            h[i],
            to_bf16(x[i]),
            "to_bf16 of {:e} ({:#010x})",
            x[i],
            x[i].to_bits()
        );
    }
}

#[test]
fn the_e4m3_decoder_is_the_rust_codec_on_every_code() {
    let codes: Vec<u8> = (0..=255).collect();
    let mut out = vec![0f32; 256];
    let (cp, op) = (Ptr::of_const(&codes), Ptr::of(&mut out));
    launch((1, 1, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: codes, out: 256 elements, alive for the launch.
        unsafe { codec_decode_probe(cp.c(), 256, op.p()) }
    });
    for (&c, v) in codes.iter().zip(out) {
        let want = E4M3.decode(c);
        assert_eq!(v.to_bits(), want.to_bits(), "code {c:#04x}: {v} vs {want}");
    }
}

/// Matrices for the quantizers: rows of different magnitudes, edge tiles, a zero tile.
fn matrix(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| {
            let r = i / cols;
            let scale = [1.0, 1e-3, 300.0, 1e20, 1e-30, 7.0][r % 6];
            rng.normal() as f32 * scale
        })
        .collect()
}

/// fp8_fake_quantize_f32 on `x`: in place, or (`out_of_place`) from a copy into `x`, the
/// copy checked unchanged.
fn fake_gpu(
    x: &mut [f32],
    rows: usize,
    cols: usize,
    tile: (usize, usize),
    grid_y: u32,
    out_of_place: bool,
) -> u32 {
    let src = x.to_vec();
    let orig: Vec<u32> = src.iter().map(|v| v.to_bits()).collect();
    if out_of_place {
        x.fill(f32::NAN);
    }
    let mut bad = [0u32];
    let (xp, sp, bp) = (Ptr::of(x), Ptr::of_const(&src), Ptr::of(&mut bad));
    let from = if out_of_place { sp } else { xp };
    let gx = cols.div_ceil(tile.1) as u32;
    launch((gx, grid_y, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: x and src: rows × cols, bad_tiles: one counter, alive for the launch.
        unsafe {
            fp8_fake_quantize_f32(
                from.c(),
                xp.p(),
                rows as i32,
                cols as i32,
                tile.0 as i32,
                tile.1 as i32,
                bp.p(),
            )
        }
    });
    let after: Vec<u32> = src.iter().map(|v| v.to_bits()).collect();
    assert_eq!(after, orig, "the source is only read");
    bad[0]
}

/// Tiles holding a NaN or an infinity.
fn bad_tiles(x: &[f32], cols: usize, tile: (usize, usize)) -> u32 {
    let mut bad = std::collections::BTreeSet::new();
    for (i, v) in x.iter().enumerate() {
        if !v.is_finite() {
            bad.insert((i / cols / tile.0, i % cols / tile.1));
        }
    }
    bad.len() as u32
}

fn check_fake(x: &[f32], rows: usize, cols: usize, tile: (usize, usize), grid_y: u32, what: &str) {
    let mut a = x.to_vec();
    let bad = fake_gpu(&mut a, rows, cols, tile, grid_y, false);
    let mut o = x.to_vec();
    let bad_o = fake_gpu(&mut o, rows, cols, tile, grid_y, true);
    assert_eq!(bad, bad_o, "{what}: bad tiles out of place");
    for i in 0..a.len() {
        assert!(same(a[i], o[i]), "{what}: element {i} out of place");
    }
    let mut b = x.to_vec();
    let rbad = fake_quantize(
        &mut b,
        rows,
        cols,
        tile.0,
        tile.1,
        E4M3,
        ScaleRounding::Exact,
    );
    assert_eq!(bad as usize, rbad, "{what}: bad tiles");
    for i in 0..a.len() {
        assert!(
            a[i].to_bits() == b[i].to_bits() || (a[i].is_nan() && b[i].is_nan()),
            "{what}: element {i} ({:e}): {:e} vs {:e}",
            x[i],
            a[i],
            b[i]
        );
    }
}

fn quantize_gpu(
    x: &[f32],
    rows: usize,
    cols: usize,
    tile: (usize, usize),
    grid_y: u32,
) -> (Vec<u8>, Vec<f32>, u32) {
    let (tr, tc) = (rows.div_ceil(tile.0), cols.div_ceil(tile.1));
    let (mut codes, mut scales, mut bad) = (vec![0u8; rows * cols], vec![0f32; tr * tc], [0u32]);
    let (xp, cp, sp, bp) = (
        Ptr::of_const(x),
        Ptr::of(&mut codes),
        Ptr::of(&mut scales),
        Ptr::of(&mut bad),
    );
    launch((tc as u32, grid_y, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: x, codes: rows × cols; scales: one per tile; bad_tiles: one counter; alive
        // for the launch.
        unsafe {
            fp8_quantize_f32(
                xp.c(),
                rows as i32,
                cols as i32,
                tile.0 as i32,
                tile.1 as i32,
                cp.p(),
                sp.p(),
                bp.p(),
            )
        }
    });
    (codes, scales, bad[0])
}

fn check_quantize(
    x: &[f32],
    rows: usize,
    cols: usize,
    tile: (usize, usize),
    grid_y: u32,
    what: &str,
) {
    let (codes, scales, bad) = quantize_gpu(x, rows, cols, tile, grid_y);
    let q = quantize(x, rows, cols, tile.0, tile.1, E4M3, ScaleRounding::Exact);
    let bits = |v: &[f32]| v.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&scales), bits(&q.scales), "{what}: scales");
    assert_eq!(codes, q.codes, "{what}: codes");
    assert_eq!(bad, bad_tiles(x, cols, tile), "{what}: bad tiles");
}

/// (rows, cols, tile, grid.y): DeepSeek-V3's three tile shapes with partial edge tiles; a
/// grid.y below the tile rows, so the blocks stride over them.
const SHAPES: [(usize, usize, (usize, usize), u32); 5] = [
    (13, 300, (1, 128), 13),
    (13, 300, (1, 128), 4),
    (150, 260, (128, 128), 2),
    (260, 5, (128, 1), 3),
    (9, 40, (4, 16), 1),
];

#[test]
fn fake_quantize_is_the_reference_bit_for_bit() {
    let mut rng = Rng::new(19);
    for (rows, cols, tile, gy) in SHAPES {
        let mut x = matrix(&mut rng, rows, cols);
        let what = format!("{rows}×{cols} tiles {tile:?} grid.y {gy}");
        check_fake(&x, rows, cols, tile, gy, &what);
        // A zero tile (signed zeros stay), an infinite element, a NaN, subnormal values.
        let t = tile.0.min(rows) * cols;
        for (i, v) in x[..t].iter_mut().enumerate() {
            if i % cols < tile.1 {
                *v = if i % 2 == 0 { 0.0 } else { -0.0 };
            }
        }
        x[rows * cols - 1] = f32::INFINITY;
        x[(rows - 1) * cols] = f32::NAN;
        x[(rows / 2) * cols + cols / 2] = f32::from_bits(5);
        check_fake(&x, rows, cols, tile, gy, &format!("{what}, specials"));
    }
    // A tile of subnormals only: its scale underflows.
    let x: Vec<f32> = (0..64).map(|i| f32::from_bits(i * 3 + 1)).collect();
    check_fake(&x, 4, 16, (4, 16), 1, "subnormal tile");
}

#[test]
fn quantize_is_the_reference_bit_for_bit() {
    let mut rng = Rng::new(20);
    for (rows, cols, tile, gy) in SHAPES {
        let mut x = matrix(&mut rng, rows, cols);
        let what = format!("{rows}×{cols} tiles {tile:?} grid.y {gy}");
        check_quantize(&x, rows, cols, tile, gy, &what);
        let t = tile.0.min(rows) * cols;
        for (i, v) in x[..t].iter_mut().enumerate() {
            if i % cols < tile.1 {
                *v = -0.0;
            }
        }
        x[rows * cols - 1] = f32::NEG_INFINITY;
        x[(rows - 1) * cols] = -f32::NAN;
        x[(rows / 2) * cols + cols / 2] = f32::from_bits(5);
        check_quantize(&x, rows, cols, tile, gy, &format!("{what}, specials"));
    }
}

fn promote_gpu(c: &mut [f32], part: &[f32], bits: i32) {
    let n = c.len();
    let (cp, pp) = (Ptr::of(c), Ptr::of_const(part));
    launch((grid(n), 1, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: c, part: n elements each, alive for the launch.
        unsafe { promote_truncated_f32(cp.p(), pp.c(), n as i64, bits) }
    });
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn promotion_is_the_low_precision_gemms() {
    let mut rng = Rng::new(21);
    let (m, n, k) = (6, 50, 16);
    let mut part: Vec<f32> = (0..m * n)
        .map(|i| rng.normal() as f32 * 10f32.powi(i as i32 % 9 - 4))
        .collect();
    part[..6].copy_from_slice(&[
        f32::INFINITY,
        f32::NAN,
        -0.0,
        f32::from_bits(0x007f_ffff),
        -f32::MAX,
        f32::NEG_INFINITY,
    ]);
    let c0: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
    // The reference: cpu::lowp's FP8 path, whose GEMM (here: one chunk of K) yields `part`.
    let mut r = c0.clone();
    let (a, b) = (vec![0.5f32; m * k], vec![0.25f32; k * n]);
    let p = MatMul {
        m,
        n,
        k,
        ta: false,
        tb: false,
        accumulate: true,
    };
    let fp8 = LowpGemm::Fp8 {
        a_tile: (1, 128),
        b_tile: (128, 128),
    };
    matmul_lowp(
        |q: MatMul, _: &[f32], _: &[f32], out: &mut [f32]| {
            assert!(!q.accumulate && q.k == k, "one chunk, written");
            out.copy_from_slice(&part);
        },
        p,
        &a,
        &b,
        &mut r,
        fp8,
    );
    let mut c = c0.clone();
    promote_gpu(&mut c, &part, FP8_ACC_MANTISSA_BITS as i32);
    for i in 0..m * n {
        assert!(same(c[i], r[i]), "c[{i}] {:e} vs {:e}", c[i], r[i]);
    }
    // Other widths: the truncation of lowp.rs, written out.
    for bits in [0u32, 3, 10, 22, 23] {
        let mut c = c0.clone();
        promote_gpu(&mut c, &part, bits as i32);
        for i in 0..m * n {
            let t = if part[i].is_finite() {
                f32::from_bits(part[i].to_bits() & !((1u32 << (23 - bits)) - 1))
            } else {
                part[i]
            };
            let want = c0[i] + t;
            assert!(
                same(c[i], want),
                "bits {bits}: c[{i}] {:e} vs {want:e}",
                c[i]
            );
        }
    }
}

/// The CPU's quantization of one expert's matrix (`cpu::grouped` quantizes each expert's
/// operands as matrices of their own).
fn fake_cpu(x: &mut [f32], rows: usize, cols: usize, tile: (usize, usize)) -> u32 {
    fake_quantize(x, rows, cols, tile.0, tile.1, E4M3, ScaleRounding::Exact) as u32
}

fn assert_same(got: &[f32], want: &[f32], what: &str) {
    for i in 0..got.len() {
        assert!(
            same(got[i], want[i]),
            "{what}: element {i}: {:e} vs {:e}",
            got[i],
            want[i]
        );
    }
}

/// fp8_fake_quantize_rows_f32: each expert's rows quantized as a matrix of its own (tiles
/// counted from its first row, so a 128-row tile straddling two experts is two tiles), out of
/// place (the source unchanged) and in place, with an expert without rows, a grid.y that
/// makes the blocks stride, and a NaN and an infinity counted per expert's tile.
#[test]
fn grouped_rows_are_quantized_expert_by_expert() {
    let mut rng = Rng::new(22);
    let counts = [70usize, 0, 140, 3, 1];
    let mut offsets = vec![0i32];
    for &c in &counts {
        offsets.push(offsets.last().unwrap() + c as i32);
    }
    let rows = *offsets.last().unwrap() as usize;
    for (cols, tile, gy) in [
        (300usize, (1usize, 128usize), 200u32),
        (90, (128, 1), 1),
        (40, (128, 128), 2),
    ] {
        let mut x = matrix(&mut rng, rows, cols);
        x[75 * cols + 3] = f32::NAN; // expert 2's first tile row
        x[(rows - 1) * cols] = f32::INFINITY; // the last expert's only row
        let mut want = x.clone();
        let mut want_bad = 0;
        for e in 0..counts.len() {
            let (r0, r1) = (offsets[e] as usize, offsets[e + 1] as usize);
            want_bad += fake_cpu(&mut want[r0 * cols..r1 * cols], r1 - r0, cols, tile);
        }
        let what = format!("{cols} columns, tiles {tile:?}, grid.y {gy}");
        for in_place in [false, true] {
            let mut out = if in_place {
                x.clone()
            } else {
                vec![f32::NAN; rows * cols]
            };
            let mut bad = [0u32];
            let (src, dst, op, bp) = (
                Ptr::of_const(&x),
                Ptr::of(&mut out),
                Ptr::of_const(&offsets),
                Ptr::of(&mut bad),
            );
            let src = if in_place { dst } else { src };
            let grid = (cols.div_ceil(tile.1) as u32, gy, counts.len() as u32);
            launch(grid, (BLOCK, 1, 1), 0, || {
                // SAFETY: src, dst: rows × cols; offsets: experts + 1; one counter.
                unsafe {
                    fp8_fake_quantize_rows_f32(
                        src.c(),
                        dst.p(),
                        op.c(),
                        counts.len() as i32,
                        cols as i32,
                        tile.0 as i32,
                        tile.1 as i32,
                        bp.p(),
                    )
                }
            });
            assert_same(&out, &want, &format!("{what}, in place {in_place}"));
            assert_eq!(bad[0], want_bad, "{what}: bad tiles");
        }
        // Tiles counted per expert: the whole matrix quantized at once would differ.
        let mut whole = x.clone();
        fake_cpu(&mut whole, rows, cols, tile);
        if tile.0 > 1 {
            assert!(
                whole.iter().zip(&want).any(|(a, b)| !same(*a, *b)),
                "{what}"
            );
        }
    }
}

/// fp8_fake_quantize_blocks_f32: each expert's weight block (among its other projections:
/// stride 3·n·k) into a dense buffer, only for experts with rows — the weight of an expert
/// without tokens is neither quantized nor counted, as on the CPU.
#[test]
fn grouped_weight_blocks_are_quantized_when_their_expert_has_rows() {
    let mut rng = Rng::new(23);
    let offsets = [0i32, 5, 5, 9];
    let groups = offsets.len() - 1;
    for (rows, cols, tile) in [
        (150usize, 260usize, (128usize, 128usize)),
        (33, 129, (1, 128)),
    ] {
        let (nk, stride) = (rows * cols, 3 * rows * cols);
        let mut w = matrix(&mut rng, groups * stride / cols, cols);
        w[stride + 7] = f32::NAN; // expert 1: no rows
        w[2 * stride + nk - 1] = f32::INFINITY; // expert 2's last tile
        let mut out = vec![-1f32; groups * nk];
        let mut bad = [0u32];
        let (src, dst, op, bp) = (
            Ptr::of_const(&w),
            Ptr::of(&mut out),
            Ptr::of_const(&offsets),
            Ptr::of(&mut bad),
        );
        let grid = (
            cols.div_ceil(tile.1) as u32,
            rows.div_ceil(tile.0) as u32,
            groups as u32,
        );
        launch(grid, (BLOCK, 1, 1), 0, || {
            // SAFETY: src: groups · stride values, dst: groups · n·k; offsets: groups + 1.
            unsafe {
                fp8_fake_quantize_blocks_f32(
                    src.c(),
                    stride as i64,
                    dst.p(),
                    nk as i64,
                    op.c(),
                    groups as i32,
                    rows as i32,
                    cols as i32,
                    tile.0 as i32,
                    tile.1 as i32,
                    bp.p(),
                )
            }
        });
        let mut want_bad = 0;
        for e in 0..groups {
            let block = &mut out[e * nk..(e + 1) * nk];
            if offsets[e + 1] == offsets[e] {
                assert!(
                    block.iter().all(|&v| v == -1.0),
                    "expert {e} without rows untouched"
                );
                continue;
            }
            let mut want = w[e * stride..e * stride + nk].to_vec();
            want_bad += fake_cpu(&mut want, rows, cols, tile);
            assert_same(
                block,
                &want,
                &format!("expert {e}, {rows}×{cols} tiles {tile:?}"),
            );
        }
        assert_eq!(bad[0], want_bad);
        assert_eq!(
            want_bad, 1,
            "the infinity counted, the NaN of the expert without rows not"
        );
    }
}

/// Where cuBLASLt's scale of tile `(to, tk)` lies for an `outer × k` operand (src/fp8.rs
/// `Scales`): VEC128 outer index fastest, BLK128x128 K blocks fastest with the row stride
/// padded to a multiple of 4; and the scale count.
fn lt_layout(tile_outer: usize, outer: usize, k: usize) -> ((usize, usize), usize) {
    let l = k.div_ceil(128);
    if tile_outer == 1 {
        ((1, outer), l * outer)
    } else {
        let l4 = l.div_ceil(4) * 4;
        ((l4, 1), outer.div_ceil(128) * l4)
    }
}

/// fp8_quantize_lt_f32, cuBLASLt's operand: codes `[outer, k]` with K contiguous from a matrix
/// contracted along its columns or (transposed) its rows, scales where cuBLASLt's mode reads
/// them. Each good tile's codes and scale are `quantize`'s of `op(src)` bit for bit, and
/// `code · scale` is the model path's fake-quantized value bit for bit; a tile holding a NaN
/// or an infinity is NaN codes with scale 1, counted — as the fake quantization makes it NaN.
#[test]
fn cublaslt_operands_are_the_fake_quantized_values_bit_for_bit() {
    let mut rng = Rng::new(23);
    // (rows, cols, k_on_rows, tile_outer, grid.y, padding of K): the forward's activations
    // (1 × 128) and weights (128 × 128 blocks), the input gradient's weight read transposed,
    // the weight gradient's 128 × 1 operands (K along the rows), partial tiles, a striding
    // grid.y, codes padded past K (cuBLASLt's 16-byte rows; the padding left as it was); along
    // the rows a block takes a panel of 32 (1 × 128) or 128 (128 × 128) outer indices, the last
    // case four panels over a grid.y of 2.
    let cases = [
        (12usize, 300usize, false, 1usize, 12u32, 4usize),
        (12, 300, false, 1, 5, 0),
        (260, 300, false, 128, 3, 4),
        (300, 260, true, 128, 1, 0),
        (300, 20, true, 1, 7, 0),
        (129, 17, true, 1, 17, 15),
        (200, 100, true, 1, 2, 0),
    ];
    for (rows, cols, k_on_rows, tile_outer, gy, pad) in cases {
        let (outer, k) = if k_on_rows {
            (cols, rows)
        } else {
            (rows, cols)
        };
        let ld = k + pad;
        for specials in [false, true] {
            let mut x = matrix(&mut rng, rows, cols);
            if specials {
                x[rows * cols - 1] = f32::INFINITY;
                x[(rows / 2) * cols] = f32::NAN;
                x[cols / 2] = f32::from_bits(5);
            }
            let what = format!(
                "{rows}×{cols} k_on_rows {k_on_rows} tile {tile_outer} grid.y {gy} ld {ld}, \
                 specials {specials}"
            );
            // op(x) [outer, k], and the stored tile that is op's (tile_outer × 128).
            let op: Vec<f32> = (0..outer * k)
                .map(|i| {
                    let (o, j) = (i / k, i % k);
                    if k_on_rows {
                        x[j * cols + o]
                    } else {
                        x[o * cols + j]
                    }
                })
                .collect();
            let ((so, sk), count) = lt_layout(tile_outer, outer, k);
            let (mut codes, mut scales, mut bad) =
                (vec![0xA5u8; outer * ld], vec![f32::NAN; count], [0u32]);
            let (xp, cp, sp, bp) = (
                Ptr::of_const(&x),
                Ptr::of(&mut codes),
                Ptr::of(&mut scales),
                Ptr::of(&mut bad),
            );
            launch((k.div_ceil(128) as u32, gy, 1), (BLOCK, 1, 1), 0, || {
                // SAFETY: x: rows × cols; codes: outer × ld; scales: `count`; bad: one counter;
                // alive for the launch.
                unsafe {
                    fp8_quantize_lt_f32(
                        xp.c(),
                        rows as i32,
                        cols as i32,
                        k_on_rows as i32,
                        tile_outer as i32,
                        cp.p(),
                        ld as i64,
                        sp.p(),
                        so as i64,
                        sk as i64,
                        bp.p(),
                        std::ptr::null(),
                    )
                }
            });
            let q = quantize(&op, outer, k, tile_outer, 128, E4M3, ScaleRounding::Exact);
            let mut fake = op.clone();
            let rbad = fake_quantize(
                &mut fake,
                outer,
                k,
                tile_outer,
                128,
                E4M3,
                ScaleRounding::Exact,
            );
            assert_eq!(bad[0] as usize, rbad, "{what}: bad tiles");
            assert_eq!(rbad > 0, specials, "{what}: the specials make bad tiles");
            let tiles_k = k.div_ceil(128);
            for (o, row) in codes.chunks(ld).enumerate() {
                assert!(
                    row[k..].iter().all(|&c| c == 0xA5),
                    "{what}: padding of row {o} written"
                );
            }
            let codes: Vec<u8> = codes.chunks(ld).flat_map(|r| r[..k].to_vec()).collect();
            for i in 0..outer * k {
                let (o, j) = (i / k, i % k);
                let (to, tk) = (o / tile_outer, j / 128);
                let s = scales[to * so + tk * sk];
                if fake[i].is_nan() {
                    assert_eq!(codes[i] & 0x7f, 0x7f, "{what}: element {i} of a bad tile");
                    assert_eq!(s, 1.0, "{what}: a bad tile's scale");
                    continue;
                }
                assert_eq!(codes[i], q.codes[i], "{what}: code {i}");
                assert_eq!(
                    s.to_bits(),
                    q.scales[to * tiles_k + tk].to_bits(),
                    "{what}: scale of {i}"
                );
                let v = E4M3.decode(codes[i]) * s;
                // A zero tile keeps its values (`fake_quantize` copies it); ±0 either way.
                assert!(
                    v.to_bits() == fake[i].to_bits() || (v == 0.0 && fake[i] == 0.0),
                    "{what}: element {i}: {v:e} vs {:e}",
                    fake[i]
                );
            }
        }
    }
}

/// fp8_quantize_lt_f32 with a table of groups (the MoE experts' operands of the tensor-core
/// GEMM, one launch): each group's operand is quantized as a matrix of its own, bit for bit
/// `quantize` of its `op`, its codes and scales where the table puts them — a weight
/// gradient's operands (K = the expert's rows, 1 × 128 tiles counted from its first row, the
/// groups side by side along K) and the weight blocks (128 × 128, each at its own source
/// stride, stacked along the outer dimension); a group of 0 rows writes and counts nothing;
/// nothing outside the groups' places is written.
#[test]
fn grouped_tensor_core_operands_are_each_groups_own_quantization() {
    let mut rng = Rng::new(29);
    // (k_on_rows, tile_outer, cols, group rows, source stride in rows (0: packed)).
    let cases = [
        (
            true,
            1usize,
            96usize,
            vec![37usize, 0, 128, 16, 135],
            0usize,
        ),
        (false, 128, 200, vec![130, 0, 256, 7], 300),
    ];
    for (k_on_rows, tile_outer, cols, rows, stride) in cases {
        let what = format!("k_on_rows {k_on_rows} tile {tile_outer} rows {rows:?}");
        let src_rows: Vec<usize> = rows
            .iter()
            .enumerate()
            .scan(0, |at, (g, &r)| {
                let here = if stride > 0 { g * stride } else { *at };
                *at += r;
                Some(here)
            })
            .collect();
        let total = if stride > 0 {
            stride * rows.len()
        } else {
            rows.iter().sum()
        };
        let mut x = matrix(&mut rng, total, cols);
        x[(src_rows[2] + 5) * cols + 3] = f32::INFINITY; // one bad tile in group 2
        // Each group's (outer, K), and its place: along K (k_on_rows) or along the outer index.
        let dims: Vec<(usize, usize)> = rows
            .iter()
            .map(|&r| if k_on_rows { (cols, r) } else { (r, cols) })
            .collect();
        let (ld, kb, code_rows, tile_rows);
        let mut places = Vec::new(); // (codes, scales) per group
        if k_on_rows {
            ld = dims.iter().map(|d| d.1.next_multiple_of(16)).sum::<usize>();
            kb = dims.iter().map(|d| d.1.div_ceil(128)).sum::<usize>();
            (code_rows, tile_rows) = (cols, cols);
            let (mut k_at, mut kb_at) = (0, 0);
            for d in &dims {
                places.push((k_at, kb_at));
                k_at += d.1.next_multiple_of(16);
                kb_at += d.1.div_ceil(128);
            }
        } else {
            ld = cols.next_multiple_of(16);
            kb = cols.div_ceil(128);
            let (mut r_at, mut t_at) = (0, 0);
            for d in &dims {
                places.push((r_at * ld, t_at * kb));
                r_at += d.0;
                t_at += d.0.div_ceil(tile_outer);
            }
            (code_rows, tile_rows) = (r_at, t_at);
        }
        let desc: Vec<i64> = rows
            .iter()
            .zip(&src_rows)
            .zip(&places)
            .flat_map(|((&r, &s), &(c, sc))| [s * cols, r, c, sc].map(|v| v as i64))
            .collect();
        let (mut codes, mut scales, mut bad) = (
            vec![0xA5u8; code_rows * ld],
            vec![f32::NAN; tile_rows * kb],
            [0u32],
        );
        let (xp, cp, sp, bp, dp) = (
            Ptr::of_const(&x),
            Ptr::of(&mut codes),
            Ptr::of(&mut scales),
            Ptr::of(&mut bad),
            Ptr::of_const(&desc),
        );
        let k_most = dims.iter().map(|d| d.1).max().unwrap();
        let outer_most = dims.iter().map(|d| d.0).max().unwrap();
        let panel = if k_on_rows && tile_outer == 1 {
            32
        } else {
            tile_outer
        };
        let grid = (
            k_most.div_ceil(128) as u32,
            outer_most.div_ceil(panel) as u32,
            rows.len() as u32,
        );
        launch(grid, (BLOCK, 1, 1), 0, || {
            // SAFETY: x holds every group's rows at its source offset; codes and scales hold
            // every group's place as `desc` gives it; bad: one counter; alive for the launch.
            unsafe {
                fp8_quantize_lt_f32(
                    xp.c(),
                    0,
                    cols as i32,
                    k_on_rows as i32,
                    tile_outer as i32,
                    cp.p(),
                    ld as i64,
                    sp.p(),
                    kb as i64,
                    1,
                    bp.p(),
                    dp.c(),
                )
            }
        });
        let mut written = vec![false; codes.len()];
        let mut want_bad = 0;
        for (g, (&(outer, k), &(c0, s0))) in dims.iter().zip(&places).enumerate() {
            let op: Vec<f32> = (0..outer * k)
                .map(|i| {
                    let (o, j) = (i / k, i % k);
                    let (r, c) = if k_on_rows { (j, o) } else { (o, j) };
                    x[(src_rows[g] + r) * cols + c]
                })
                .collect();
            let mut fake = op.clone();
            want_bad += fake_quantize(
                &mut fake,
                outer,
                k,
                tile_outer,
                128,
                E4M3,
                ScaleRounding::Exact,
            );
            let q = quantize(&op, outer, k, tile_outer, 128, E4M3, ScaleRounding::Exact);
            let tiles_k = k.div_ceil(128);
            for (i, f) in fake.iter().enumerate() {
                let (o, j) = (i / k, i % k);
                let at = c0 + o * ld + j;
                written[at] = true;
                let s = scales[s0 + (o / tile_outer) * kb + j / 128];
                if f.is_nan() {
                    assert_eq!(codes[at] & 0x7f, 0x7f, "{what}: group {g} element {i}");
                    assert_eq!(s, 1.0, "{what}: group {g}: a bad tile's scale");
                    continue;
                }
                assert_eq!(codes[at], q.codes[i], "{what}: group {g} code {i}");
                assert_eq!(
                    s.to_bits(),
                    q.scales[(o / tile_outer) * tiles_k + j / 128].to_bits(),
                    "{what}: group {g} scale of {i}"
                );
            }
        }
        assert_eq!(bad[0] as usize, want_bad, "{what}: bad tiles");
        assert!(want_bad > 0, "{what}: the infinity makes a bad tile");
        for (i, (&c, w)) in codes.iter().zip(&written).enumerate() {
            assert!(
                w | (c == 0xA5),
                "{what}: code {i} outside every group written"
            );
        }
    }
}

/// to_bf16_rows_f32: every group's operand of the BF16 tensor-core GEMM, K contiguous, bit for
/// bit `to_bf16` of its `op` — the matrix itself, or its transpose (a weight gradient's
/// operands, K = the group's rows) — at its place; a group of 0 rows writes nothing, and
/// nothing past each row's K is written.
#[test]
fn bf16_tensor_core_operands_are_each_groups_bf16_values() {
    unsafe extern "C" {
        fn to_bf16_rows_f32(
            src: *const f32,
            cols: i32,
            k_on_rows: i32,
            dst: *mut u16,
            ld: i64,
            desc: *const i64,
        );
    }
    let mut rng = Rng::new(31);
    for k_on_rows in [false, true] {
        let (cols, rows) = (70usize, [37usize, 0, 100, 33]);
        let total: usize = rows.iter().sum();
        let mut x = matrix(&mut rng, total, cols);
        x[3] = f32::NAN;
        x[cols + 5] = f32::INFINITY;
        let src: Vec<usize> = rows
            .iter()
            .scan(0, |at, &r| {
                let here = *at;
                *at += r;
                Some(here)
            })
            .collect();
        // (outer, K) of each group, and its first element in dst: stacked along the outer
        // dimension (K = cols for all), or side by side along K (outer = cols for all).
        let dims: Vec<(usize, usize)> = rows
            .iter()
            .map(|&r| if k_on_rows { (cols, r) } else { (r, cols) })
            .collect();
        let (ld, dst_rows, places): (usize, usize, Vec<usize>) = if k_on_rows {
            let ld = dims.iter().map(|d| d.1.next_multiple_of(16)).sum();
            let places = dims
                .iter()
                .scan(0, |at, d| {
                    let here = *at;
                    *at += d.1.next_multiple_of(16);
                    Some(here)
                })
                .collect();
            (ld, cols, places)
        } else {
            let ld = cols.next_multiple_of(16);
            let places = src.iter().map(|&s| s * ld).collect();
            (ld, total, places)
        };
        let desc: Vec<i64> = rows
            .iter()
            .zip(&src)
            .zip(&places)
            .flat_map(|((&r, &s), &p)| [s * cols, r, p].map(|v| v as i64))
            .collect();
        let mut dst = vec![0xBEEFu16; dst_rows * ld];
        let (xp, dp, descp) = (Ptr::of_const(&x), Ptr::of(&mut dst), Ptr::of_const(&desc));
        let k_most = dims.iter().map(|d| d.1).max().unwrap();
        let outer_most = dims.iter().map(|d| d.0).max().unwrap();
        let grid = (
            k_most.div_ceil(32) as u32,
            outer_most.div_ceil(32).min(2) as u32,
            rows.len() as u32,
        );
        launch(grid, (32, 8, 1), 0, || {
            // SAFETY: x holds every group's rows; dst every group's place as `desc` gives it;
            // alive for the launch.
            unsafe {
                to_bf16_rows_f32(
                    xp.c(),
                    cols as i32,
                    k_on_rows as i32,
                    dp.p(),
                    ld as i64,
                    descp.c(),
                )
            }
        });
        let mut written = vec![false; dst.len()];
        for (g, (&(outer, k), &p)) in dims.iter().zip(&places).enumerate() {
            for o in 0..outer {
                for j in 0..k {
                    let (r, c) = if k_on_rows { (j, o) } else { (o, j) };
                    let v = x[(src[g] + r) * cols + c];
                    let at = p + o * ld + j;
                    written[at] = true;
                    assert_eq!(
                        dst[at],
                        to_bf16(v),
                        "k_on_rows {k_on_rows}: group {g} ({o}, {j}) of {v:e}"
                    );
                }
            }
        }
        for (i, (&v, w)) in dst.iter().zip(&written).enumerate() {
            assert!(
                w | (v == 0xBEEF),
                "k_on_rows {k_on_rows}: {i} outside every group written"
            );
        }
    }
}
