//! gemm.cu: the fine-grained FP8 GEMM against `matmul_lowp` (the CPU model of the same
//! arithmetic), the grouped GEMM in its three forms against the CPU's grouped GEMM, and its
//! FP8 form (the accumulator model per expert) against the CPU's FP8 grouped GEMM.
//!
//! FP8 tolerance. The kernel sums the products of the decoded codes of a 128-wide chunk and
//! then multiplies by a_scale · b_scale; `matmul_lowp` sums the products of the
//! fake-quantized values (code × scale, each rounded to f32) in its own order. Before the
//! truncation the two chunk sums x, y differ by rounding only, |x − y| ≤ ε·S_c with
//! S_c = Σ_chunk |â·b̂| and ε ≈ 1e-5 (a 128-term f32 sum, generously). Truncating to 14 bits
//! can then move each by up to one unit of its 14th bit, ≤ 2^-14·S_c, when x and y straddle a
//! truncation boundary. So each element may differ by (2^-14 + 1e-5)·S, S = Σ_k |â_k·b̂_k| over
//! the whole row, plus 2^-22·|C| for the promotion sums. A wrong scale or an indexing error
//! is O(S). The truncation also absorbs the rounding differences unless a chunk sum lies next
//! to a boundary, so at least 90% of the elements must be bit-identical (97% are; a kernel
//! that did not truncate would match almost none). Without truncation (acc_bits 23) the kernel is compared with the exact (f64)
//! product of the dequantized operands within 1e-5·S, and with a single chunk the result must
//! carry exactly acc_bits mantissa bits.
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::Fp8Format;
use tokenmill_kernels::backend::{FP8_ACC_MANTISSA_BITS, Grouped, GroupedForm, LowpGemm, MatMul};
use tokenmill_kernels::cpu::grouped::group;
use tokenmill_kernels::cpu::grouped::grouped_matmul_ref;
use tokenmill_kernels::cpu::lowp::fake_quantize_fp8;
use tokenmill_kernels::cpu::lowp::matmul_lowp;
use tokenmill_kernels::cpu::matmul::matmul;
use tokenmill_kernels::quant::{Quantized, ScaleRounding, quantize};
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn fp8_gemm_f32(
        a: *const u8,
        a_scales: *const f32,
        b: *const u8,
        b_scales: *const f32,
        c: *mut f32,
        m: i32,
        n: i32,
        k: i32,
        acc_bits: i32,
        accumulate: i32,
    );
    fn grouped_gemm_forms_f32(
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        offsets: *const i32,
        experts: i32,
        form: i32,
        n: i32,
        k: i32,
        stride: i64,
        accumulate: i32,
    );
    fn grouped_gemm_promoted_f32(
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        offsets: *const i32,
        experts: i32,
        form: i32,
        n: i32,
        k: i32,
        stride: i64,
        accumulate: i32,
        acc_bits: i32,
    );
}

/// Dynamic shared memory of fp8_gemm_f32: (2 · 2 · 16 · 132 + 128 · 128) floats.
const FP8_SMEM: usize = 4 * (2 * 2 * 16 * 132 + 128 * 128);

/// Normal entries whose size varies by row and by 128-column block, so that the tiles'
/// scales differ.
fn operand(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut x = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let size =
                2f64.powi((r % 5) as i32 - 2) * (1.0 + (c / 128) as f64) * (1.0 + (r / 128) as f64);
            x[r * cols + c] = (rng.normal() * size) as f32;
        }
    }
    x
}

fn fp8(x: &[f32], rows: usize, cols: usize, tile_rows: usize) -> Quantized {
    quantize(
        x,
        rows,
        cols,
        tile_rows,
        128,
        Fp8Format::E4M3,
        ScaleRounding::Exact,
    )
}

/// Runs fp8_gemm_f32 on the quantized operands, C starting from `c0`.
fn run_fp8(
    qa: &Quantized,
    qb: &Quantized,
    c0: &[f32],
    acc_bits: i32,
    accumulate: bool,
) -> Vec<f32> {
    let (m, k, n) = (qa.rows, qa.cols, qb.rows);
    let mut c = c0.to_vec();
    let (ap, asp, bp, bsp) = (
        Ptr::of_const(&qa.codes),
        Ptr::of_const(&qa.scales),
        Ptr::of_const(&qb.codes),
        Ptr::of_const(&qb.scales),
    );
    let cp = Ptr::of(&mut c);
    let (mi, ni, ki, acc) = (m as i32, n as i32, k as i32, accumulate as i32);
    launch(
        (n.div_ceil(128) as u32, m.div_ceil(128) as u32, 1),
        (256, 1, 1),
        FP8_SMEM,
        || {
            // SAFETY: codes [m·k], [n·k]; scales [m·ceil(k/128)], [ceil(n/128)·ceil(k/128)]; c [m·n].
            unsafe {
                fp8_gemm_f32(
                    ap.c(),
                    asp.c(),
                    bp.c(),
                    bsp.c(),
                    cp.p(),
                    mi,
                    ni,
                    ki,
                    acc_bits,
                    acc,
                )
            }
        },
    );
    c
}

/// S[i·n + j] = Σ_k |â_ik · b̂_jk| of the dequantized operands (f64), and the exact product.
fn dequantized_product(qa: &Quantized, qb: &Quantized) -> (Vec<f64>, Vec<f64>) {
    let (m, k, n) = (qa.rows, qa.cols, qb.rows);
    let (a, b) = (qa.dequantize(), qb.dequantize());
    let mut s = vec![0f64; m * n];
    let mut p = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            for t in 0..k {
                let v = a[i * k + t] as f64 * b[j * k + t] as f64;
                s[i * n + j] += v.abs();
                p[i * n + j] += v;
            }
        }
    }
    (s, p)
}

#[test]
fn fp8_gemm_matches_matmul_lowp() {
    let fmt = LowpGemm::Fp8 {
        a_tile: (1, 128),
        b_tile: (128, 128),
    };
    // k = 300: a partial last chunk and the bytewise loads; k = 256: 16-byte loads. n = 200
    // and m = 130: partial output tiles, two rows of B's scale blocks.
    for (m, n, k, seed) in [(70, 200, 300, 1), (130, 130, 256, 2)] {
        let (a, b) = (operand(m, k, seed), operand(n, k, seed + 10));
        let (qa, qb) = (fp8(&a, m, k, 1), fp8(&b, n, k, 128));
        let (s, _) = dequantized_product(&qa, &qb);
        for accumulate in [false, true] {
            let c0: Vec<f32> = (0..m * n).map(|i| ((i % 13) as f32 - 6.0) * 0.25).collect();
            let got = run_fp8(&qa, &qb, &c0, FP8_ACC_MANTISSA_BITS as i32, accumulate);
            let mut want = c0.clone();
            let p = MatMul {
                m,
                n,
                k,
                ta: false,
                tb: true,
                accumulate,
            };
            assert_eq!(matmul_lowp(matmul, p, &a, &b, &mut want, fmt), 0);
            let unit = 2f64.powi(-(FP8_ACC_MANTISSA_BITS as i32)) + 1e-5;
            let exact = (0..m * n).filter(|&i| got[i] == want[i]).count();
            assert!(
                exact * 10 >= m * n * 9,
                "only {exact} of {} bit-identical",
                m * n
            );
            for i in 0..m * n {
                let tol = unit * s[i] + 2f64.powi(-22) * want[i].abs() as f64;
                let err = (got[i] as f64 - want[i] as f64).abs();
                assert!(
                    err <= tol,
                    "m {m} n {n} k {k} acc {accumulate} [{}, {}]: {} vs {} (S {})",
                    i / n,
                    i % n,
                    got[i],
                    want[i],
                    s[i]
                );
            }
        }
    }
}

#[test]
fn fp8_gemm_without_truncation_is_the_dequantized_product() {
    let (m, n, k) = (40, 150, 400);
    let (a, b) = (operand(m, k, 3), operand(n, k, 4));
    let (qa, qb) = (fp8(&a, m, k, 1), fp8(&b, n, k, 128));
    let (s, want) = dequantized_product(&qa, &qb);
    let got = run_fp8(&qa, &qb, &vec![f32::NAN; m * n], 23, false);
    for i in 0..m * n {
        assert!(
            (got[i] as f64 - want[i]).abs() <= 1e-5 * s[i],
            "[{}, {}]: {} vs {}",
            i / n,
            i % n,
            got[i],
            want[i]
        );
    }
}

#[test]
fn fp8_gemm_single_chunk_keeps_acc_bits_mantissa_bits() {
    let (m, n, k, bits) = (9, 33, 100, 5);
    let (a, b) = (operand(m, k, 5), operand(n, k, 6));
    let (qa, qb) = (fp8(&a, m, k, 1), fp8(&b, n, k, 128));
    let (s, want) = dequantized_product(&qa, &qb);
    let got = run_fp8(&qa, &qb, &vec![0f32; m * n], bits, false);
    for i in 0..m * n {
        assert_eq!(
            got[i].to_bits() & ((1 << (23 - bits)) - 1),
            0,
            "{}: {}",
            i,
            got[i]
        );
        // Truncation moves toward zero by less than one unit of the 5th bit.
        let (g, w) = (got[i] as f64, want[i]);
        assert!(g.abs() <= w.abs() + 1e-5 * s[i], "{i}: {g} vs {w}");
        assert!(
            (g - w).abs() <= 2f64.powi(-bits) * w.abs() + 1e-5 * s[i],
            "{i}: {g} vs {w}"
        );
    }
}

/// Group offsets from the groups' row counts.
fn offsets_of(counts: &[usize]) -> Vec<usize> {
    std::iter::once(0)
        .chain(counts.iter().scan(0, |s, &c| {
            *s += c;
            Some(*s)
        }))
        .collect()
}

/// Runs the grouped kernel on `g`'s operands, C in place: `grouped_gemm_forms_f32`, or with
/// `acc_bits` the FP8 accumulator model's `grouped_gemm_promoted_f32`.
fn launch_grouped(g: &Grouped<'_>, a: &[f32], b: &[f32], c: &mut [f32], acc_bits: Option<i32>) {
    let off32: Vec<i32> = g.offsets.iter().map(|&o| o as i32).collect();
    let (ap, bp, cp, op) = (
        Ptr::of_const(a),
        Ptr::of_const(b),
        Ptr::of(c),
        Ptr::of_const(&off32),
    );
    let (m_max, n_cols) = match g.form {
        GroupedForm::Weight => (g.n, g.k),
        _ => (g.most_rows(), g.n),
    };
    let f = match g.form {
        GroupedForm::Forward => 0,
        GroupedForm::Input => 1,
        GroupedForm::Weight => 2,
    };
    let grid = (
        n_cols.div_ceil(128) as u32,
        m_max.div_ceil(128).max(1) as u32,
        g.groups() as u32,
    );
    let (e, ni, ki) = (g.groups() as i32, g.n as i32, g.k as i32);
    let (st, ac) = (g.stride as i64, g.accumulate as i32);
    match acc_bits {
        None => launch(grid, (256, 1, 1), 0, || {
            // SAFETY: a, b, c hold the lengths the grouped GEMM's check asks for; offsets
            // has groups + 1 entries.
            unsafe { grouped_gemm_forms_f32(ap.c(), bp.c(), cp.p(), op.c(), e, f, ni, ki, st, ac) }
        }),
        Some(bits) => launch(grid, (256, 1, 1), PROMOTED_SMEM, || {
            // SAFETY: as above.
            unsafe {
                grouped_gemm_promoted_f32(
                    ap.c(),
                    bp.c(),
                    cp.p(),
                    op.c(),
                    e,
                    f,
                    ni,
                    ki,
                    st,
                    ac,
                    bits,
                )
            }
        }),
    }
}

/// grouped_gemm_forms_f32 in one form against the CPU's grouped GEMM (f64, the same inputs):
/// |Δ| ≤ 1e-5 · Σ |a·b| per element, and the gaps between weight blocks untouched. With
/// `shift`, A, B and C start that many floats into their buffers (off the 16 bytes the kernel's
/// vector loads and stores need: it must take its scalar path, or trap on the misaligned
/// access, as a GPU would fault).
fn run_forms(
    form: GroupedForm,
    counts: &[usize],
    (n, k, stride): (usize, usize, usize),
    acc: bool,
    shift: usize,
) {
    let offsets = offsets_of(counts);
    let g = Grouped {
        form,
        offsets: &offsets,
        n,
        k,
        stride,
        accumulate: acc,
    };
    let [la, lb, lc] = g.lens();
    let mut rng = Rng::new(counts.len() as u64 * 31 + n as u64);
    let mut randn = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
    let (a, b, c0) = (randn(la + shift), randn(lb + shift), randn(lc + shift));
    // (The allocator's blocks are 16-byte aligned: the shift alone sets the alignment.)
    assert_eq!(a.as_ptr() as usize % 16, 0);
    let mut c = c0.clone();
    launch_grouped(&g, &a[shift..], &b[shift..], &mut c[shift..], None);
    let (a, b, c0, c) = (&a[shift..], &b[shift..], &c0[shift..], &c[shift..]);
    let wide = |v: &[f32]| v.iter().map(|&t| t as f64).collect::<Vec<f64>>();
    let mut want = wide(c0);
    grouped_matmul_ref(g, &wide(a), &wide(b), &mut want, None);
    let abs = |v: &[f32]| v.iter().map(|&t| (t as f64).abs()).collect::<Vec<f64>>();
    let mut bound = vec![0f64; lc];
    let g0 = Grouped {
        accumulate: false,
        ..g
    };
    grouped_matmul_ref(g0, &abs(a), &abs(b), &mut bound, None);
    for i in 0..lc {
        let got = c[i] as f64;
        assert!(
            (got - want[i]).abs() <= 1e-5 * bound[i] + 1e-6 * want[i].abs(),
            "{form:?} element {i}: {got} vs {}",
            want[i]
        );
    }
    if form == GroupedForm::Weight && counts.len() > 1 {
        assert_eq!(
            c[n * k..stride],
            c0[n * k..stride],
            "the gap after the first block"
        );
    }
}

#[test]
fn grouped_gemm_in_every_form_matches_the_cpu() {
    // Uneven experts with an empty one and one past a tile; each weight block among its
    // expert's other projections (stride 3·n·k); off-tile n and k.
    for form in [
        GroupedForm::Forward,
        GroupedForm::Input,
        GroupedForm::Weight,
    ] {
        for acc in [false, true] {
            run_forms(form, &[50, 0, 140, 3], (70, 45, 3 * 70 * 45), acc, 0);
            run_forms(form, &[20, 33], (132, 64, 2 * 132 * 64), acc, 0);
            // The same shapes 4 and 8 bytes off a 16-byte boundary.
            run_forms(form, &[20, 33], (132, 64, 2 * 132 * 64), acc, 1);
            run_forms(form, &[20, 33], (132, 64, 2 * 132 * 64), acc, 2);
            // Weight blocks an odd number of floats apart: every block after the first starts
            // off 16 bytes even though the buffer and the rows (k = 64) are aligned.
            run_forms(form, &[20, 33], (132, 64, 132 * 64 + 1), acc, 0);
        }
    }
}

/// Shared memory of grouped_gemm_promoted_f32: as fp8_gemm_f32's.
const PROMOTED_SMEM: usize = FP8_SMEM;

/// grouped_gemm_promoted_f32 in one form on operands fake-quantized expert by expert (the
/// CPU's quantizer, as `cpu::grouped` applies it), against the CPU's FP8 grouped GEMM
/// (`grouped_matmul_ref`, which quantizes the same way and runs `matmul_lowp` per expert).
/// Tolerance as for fp8_gemm_f32 (module comment): (2^-14 + 10^-5)·S per element, S the sum
/// of |products|, and at least 90 % of the elements bit-identical.
fn run_promoted(form: GroupedForm, counts: &[usize], n: usize, k: usize, acc: bool) {
    let stride = 3 * n * k;
    let offsets = offsets_of(counts);
    let g = Grouped {
        form,
        offsets: &offsets,
        n,
        k,
        stride,
        accumulate: acc,
    };
    let (a_tile, b_tile) = match form {
        GroupedForm::Weight => ((128, 1), (128, 1)),
        _ => ((1, 128), (128, 128)),
    };
    let fmt = LowpGemm::Fp8 { a_tile, b_tile };
    let [la, lb, lc] = g.lens();
    // Stored as [rows, k] (forward, input) or [rows, n] (weight); B as the weight buffer's
    // blocks ([n, k] forward, [k, n] input) or [rows, k] (weight).
    let a_cols = if form == GroupedForm::Weight { n } else { k };
    let b_cols = if form == GroupedForm::Input { n } else { k };
    let a = operand(la / a_cols, a_cols, 7);
    let b = operand(lb / b_cols, b_cols, 9);
    let c0: Vec<f32> = (0..lc).map(|i| ((i % 13) as f32 - 6.0) * 0.25).collect();
    // The operands as each expert's GEMM sees them.
    let (mut qa, mut qb) = (a.clone(), b.clone());
    for e in 0..g.groups() {
        let (p, [ra, rb, _]) = group(&g, e);
        if p.m * p.n * p.k == 0 {
            continue;
        }
        fake_quantize_fp8(&mut qa[ra], p.a_stored().1, a_tile);
        fake_quantize_fp8(&mut qb[rb], p.b_stored().1, b_tile);
    }
    let mut c = c0.clone();
    launch_grouped(&g, &qa, &qb, &mut c, Some(FP8_ACC_MANTISSA_BITS as i32));
    let mut want = c0.clone();
    grouped_matmul_ref(g, &a, &b, &mut want, Some(fmt));
    // S: the sums of |products| of the quantized operands.
    let abs = |v: &[f32]| v.iter().map(|t| t.abs()).collect::<Vec<f32>>();
    let mut s = vec![0f32; lc];
    let g0 = Grouped {
        accumulate: false,
        ..g
    };
    grouped_matmul_ref(g0, &abs(&qa), &abs(&qb), &mut s, None);
    let unit = 2f64.powi(-(FP8_ACC_MANTISSA_BITS as i32)) + 1e-5;
    let mut exact = 0;
    for i in 0..lc {
        let tol = unit * s[i] as f64 + 2f64.powi(-22) * want[i].abs() as f64;
        let err = (c[i] as f64 - want[i] as f64).abs();
        assert!(
            err <= tol,
            "{form:?} acc {acc} element {i}: {} vs {} (S {})",
            c[i],
            want[i],
            s[i]
        );
        exact += usize::from(c[i].to_bits() == want[i].to_bits());
    }
    assert!(
        exact * 10 >= lc * 9,
        "{form:?} acc {acc}: only {exact} of {lc} bit-identical"
    );
    if form == GroupedForm::Weight {
        assert_eq!(
            c[n * k..stride],
            c0[n * k..stride],
            "the gap after the first block"
        );
    }
}

#[test]
fn grouped_fp8_gemm_in_every_form_matches_the_cpu_per_expert() {
    // k = 300: two full chunks of K and a partial one in the forward and input forms; an
    // expert of 140 rows: two chunks (one partial) in the weight form; an empty expert, one
    // of 3 rows; off-tile n.
    for form in [
        GroupedForm::Forward,
        GroupedForm::Input,
        GroupedForm::Weight,
    ] {
        for acc in [false, true] {
            run_promoted(form, &[50, 0, 140, 3], 70, 300, acc);
        }
    }
}

/// Without the truncation (23 bits) the chunks' sums still enter one by one: the result is
/// the exact product of the quantized operands within 10^-5·S (a broken chunk boundary or a
/// dropped chunk is O(S)); with 4 bits each element keeps only what 4-bit chunk sums can
/// carry, far from the 14-bit result (so the kernel does use acc_bits).
#[test]
fn grouped_fp8_gemm_promotes_every_chunk() {
    // An expert past one tile of rows, an empty one, one of 7 rows.
    let (n, k) = (40usize, 260usize);
    let offsets = offsets_of(&[130, 0, 7]);
    let rows = 137;
    let a = operand(rows, k, 11);
    let b = operand(3 * n, k, 12);
    let g = Grouped {
        form: GroupedForm::Forward,
        offsets: &offsets,
        n,
        k,
        stride: n * k,
        accumulate: false,
    };
    let run = |bits: i32| -> Vec<f32> {
        let mut c = vec![f32::NAN; rows * n];
        launch_grouped(&g, &a, &b, &mut c, Some(bits));
        c
    };
    let full = run(23);
    let coarse = run(4);
    let mut far = 0;
    for e in [0usize, 2] {
        for r in offsets[e]..offsets[e + 1] {
            for j in 0..n {
                let (mut exact, mut s) = (0f64, 0f64);
                for t in 0..k {
                    let v = a[r * k + t] as f64 * b[e * n * k + j * k + t] as f64;
                    exact += v;
                    s += v.abs();
                }
                let got = full[r * n + j] as f64;
                assert!(
                    (got - exact).abs() <= 1e-5 * s,
                    "row {r} col {j}: {got} vs {exact}"
                );
                far += usize::from((coarse[r * n + j] as f64 - exact).abs() > 1e-3 * s);
            }
        }
    }
    assert!(
        far * 2 > 137 * n,
        "4-bit chunk sums should be visibly coarse ({far} far)"
    );
}
