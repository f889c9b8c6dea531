//! The device check's kernel table: every operation of the [`Backend`] seam run by a candidate
//! backend (the GPU) and by the CPU reference on the same random and edge-case inputs, with
//! the largest error against a tolerance per operation and precision. Generic over the
//! candidate, so the comparison itself is tested on the CPU (the fast CPU kernels against the
//! reference, and a deliberately wrong backend that must fail).

use serde::Serialize;
use tokenmill_kernels::backend::{
    AdamStep, AttnShape, Backend, Balance, CpuReference, Grouped, GroupedForm, IGNORE, KeyStarts,
    LowpGemm, MatMul, RopeRows, RopeTable, Route, Strided,
};
use tokenmill_kernels::rng::Rng;

mod empty;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The operation.
    pub op: String,
    /// Its shape, as words.
    pub shape: String,
    /// Largest |candidate − reference|.
    pub max_abs: f64,
    /// Largest |candidate − reference| / max(|reference|, floor).
    pub max_rel: f64,
    /// The tolerance on `max_rel`.
    pub tol: f64,
    /// Whether the candidate is within the tolerance (and agrees on NaN positions).
    pub pass: bool,
}

fn randn(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

/// A grouped GEMM in `form` over `offsets`, each `n × k` weight block among its expert's two
/// other projections, with random A, B (scaled by `b_scale`) and C: `(g, a, b, c)`.
fn grouped_case<'o>(
    rng: &mut Rng,
    form: GroupedForm,
    offsets: &'o [usize],
    (n, k): (usize, usize),
    accumulate: bool,
    b_scale: f64,
) -> (Grouped<'o>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let g = Grouped {
        form,
        offsets,
        n,
        k,
        stride: 3 * n * k,
        accumulate,
    };
    let [la, lb, lc] = g.lens();
    let a = randn(rng, la, 1.0);
    let b = randn(rng, lb, b_scale);
    let c = randn(rng, lc, 1.0);
    (g, a, b, c)
}

/// The FP8 GEMMs on the tensor cores — through cuBLASLt (`cuda` set to
/// [`crate::backend::Fp8Gemm::Cublaslt`]), our kernel ([`crate::backend::Fp8Gemm::Mma`]: wgmma or
/// `mma.sync`, [`crate::Cuda::mma_kernel`], which the rows name)
/// or the dense ones through the first and the grouped by the second
/// ([`crate::backend::Fp8Gemm::CublasltMma`]) —
/// in the three forms training asks for — forward (activations 1 × 128, weight 128 × 128), input
/// gradient (the weight contracted along its rows), weight gradient (both operands 128 × 1 along
/// the tokens, accumulating) — with 62 tokens (padded to cuBLASLt's multiples of 4 and 16), K
/// off the 128 blocks in one, against
/// the CPU's FP8 GEMM: the same quantized operands; the CPU truncates each 128-chunk's sum to
/// 14 bits where the tensor cores accumulate their own way, so the tolerance is normwise
/// 10⁻³ (as the vendor check); then the experts' grouped GEMM in the same forms (one cuBLASLt call
/// per expert with rows, or one launch of our kernel); then NaN and infinite tiles (NaN,
/// counted, as on the CPU). Each row also fails if the tensor-core path did not compute it.
pub fn fp8_tensor_core_rows(cuda: &crate::Cuda, seed: u64) -> Vec<Row> {
    use crate::backend::{Fp8Gemm, TmaGrid, tma_grid};
    // The TMA kernels on a few blocks say so: each block takes several tiles, of several
    // experts with different K (the weight gradient's), one of them empty.
    let kernel = match (cuda.mma_kernel(), tma_grid()) {
        (k, TmaGrid::Blocks(b)) if k.tma() => format!("{} ({b} blocks)", k.instruction()),
        (k, _) => k.instruction().to_string(),
    };
    let by = match cuda.fp8_gemm() {
        Fp8Gemm::Cublaslt => "cuBLASLt".to_string(),
        Fp8Gemm::Mma => kernel.to_string(),
        Fp8Gemm::CublasltMma => format!("cuBLASLt+{kernel}"),
        Fp8Gemm::Model => "model".to_string(),
    };
    // Which of the backend's counters ([`crate::Cuda::fast_fp8_calls_by`]: cuBLASLt's calls,
    // our kernel's launches) a dense and a grouped GEMM must raise, and by how much: the rows
    // fail where a GEMM took another path.
    let counter = |f: Fp8Gemm| usize::from(f == Fp8Gemm::Mma);
    let (dense_by, grouped_by) = (
        counter(cuda.fp8_gemm().dense()),
        counter(cuda.fp8_gemm().grouped()),
    );
    let took = |before: [u64; 2], by: usize| {
        let after = cuda.fast_fp8_calls_by();
        let other = 1 - by;
        (after[other] == before[other]).then_some(after[by] - before[by])
    };
    let mut rng = Rng::new(seed);
    let (tokens, out, inp) = (62usize, 256usize, 320usize);
    let x = randn(&mut rng, tokens * inp, 1.0);
    let w = randn(&mut rng, out * inp, 0.05);
    let dy = randn(&mut rng, tokens * out, 1.0);
    let x64 = randn(&mut rng, 64 * inp, 1.0);
    let act = ((1, 128), (128, 128));
    let forms = [
        ("fwd", MatMul::linear(tokens, out, inp), &x, &w, act),
        // 64 tokens: nothing padded, so cuBLASLt writes C itself (on a device copy).
        ("fwd 64", MatMul::linear(64, out, inp), &x64, &w, act),
        (
            "dgrad",
            MatMul {
                m: tokens,
                n: inp,
                k: out,
                ta: false,
                tb: false,
                accumulate: false,
            },
            &dy,
            &w,
            act,
        ),
        (
            "wgrad",
            MatMul {
                m: out,
                n: inp,
                k: tokens,
                ta: true,
                tb: false,
                accumulate: true,
            },
            &dy,
            &x,
            ((128, 1), (128, 1)),
        ),
    ];
    let mut rows = Vec::new();
    for (form, p, a, b, (a_tile, b_tile)) in forms {
        let format = LowpGemm::Fp8 { a_tile, b_tile };
        let c0 = if p.accumulate {
            randn(&mut rng, p.m * p.n, 1.0)
        } else {
            vec![0.0; p.m * p.n]
        };
        let (mut got, mut want) = (c0.clone(), c0);
        let before = cuda.fast_fp8_calls_by();
        let bad = cuda.matmul_lowp(p, a, b, &mut got, format);
        let by_lt = took(before, dense_by) == Some(1);
        CpuReference.matmul_lowp(p, a, b, &mut want, format);
        let shape = format!(
            "{}×{}×{} ta={} tb={} acc={}",
            p.m, p.n, p.k, p.ta, p.tb, p.accumulate
        );
        let mut row =
            compare_normwise(&format!("matmul fp8 {by} {form}"), shape, &got, &want, 1e-3);
        row.pass &= by_lt && bad == 0;
        rows.push(row);
    }
    // The experts' grouped GEMM, one cuBLASLt call per expert with rows or one launch of our
    // kernel for all: uneven experts (one
    // empty; 128 and 16 rows from odd first rows, so their outputs are not 256-byte aligned),
    // each block among its expert's other projections.
    let offsets = [0usize, 37, 37, 165, 181, 245];
    let (n, k) = (96usize, 200usize);
    let wgrad = LowpGemm::Fp8 {
        a_tile: (128, 1),
        b_tile: (128, 1),
    };
    let fwd = LowpGemm::Fp8 {
        a_tile: act.0,
        b_tile: act.1,
    };
    for (form, accumulate, format) in [
        (GroupedForm::Forward, false, fwd),
        (GroupedForm::Input, true, fwd),
        (GroupedForm::Weight, true, wgrad),
        (GroupedForm::Weight, false, wgrad),
    ] {
        let (g, a, b, c0) = grouped_case(&mut rng, form, &offsets, (n, k), accumulate, 0.05);
        let (mut got, mut want) = (c0.clone(), c0);
        let before = cuda.fast_fp8_calls_by();
        let bad = cuda.grouped_matmul(g, &a, &b, &mut got, Some(format));
        let calls = took(before, grouped_by);
        let want_bad = CpuReference.grouped_matmul(g, &a, &b, &mut want, Some(format));
        let name = match form {
            GroupedForm::Forward => "fwd",
            GroupedForm::Input => "dgrad",
            GroupedForm::Weight => "wgrad",
        };
        // The weight gradient outside the experts' blocks is not the GEMM's.
        let (got, want): (Vec<f32>, Vec<f32>) = if form == GroupedForm::Weight {
            (0..g.groups())
                .flat_map(|e| g.block(e))
                .map(|i| (got[i], want[i]))
                .unzip()
        } else {
            (got, want)
        };
        let shape = format!("5 experts ≤ 245 rows, {n}×{k}, acc={accumulate}");
        let mut row = compare_normwise(
            &format!("grouped fp8 {by} {name}"),
            shape,
            &got,
            &want,
            1e-3,
        );
        let want_calls = if cuda.fp8_gemm().grouped() == Fp8Gemm::Mma {
            1
        } else {
            4
        };
        row.pass &= calls == Some(want_calls) && bad == want_bad;
        rows.push(row);
    }
    // Non-finite tiles: a NaN in an activation tile and an infinity in a weight block make
    // both tiles NaN (codes 0x7f) and are counted, as the CPU's FP8 GEMM does — not saturated.
    let (mut xs, mut ws) = (x.clone(), w.clone());
    xs[5 * inp + 200] = f32::NAN;
    ws[130 * inp + 10] = f32::INFINITY;
    let p = MatMul::linear(tokens, out, inp);
    let fwd = LowpGemm::Fp8 {
        a_tile: act.0,
        b_tile: act.1,
    };
    let (mut got, mut want) = (vec![0.0; tokens * out], vec![0.0; tokens * out]);
    let before = cuda.fast_fp8_calls_by();
    let bad = cuda.matmul_lowp(p, &xs, &ws, &mut got, fwd);
    let by_lt = took(before, dense_by) == Some(1);
    let want_bad = CpuReference.matmul_lowp(p, &xs, &ws, &mut want, fwd);
    let mut row = compare_normwise(
        &format!("matmul fp8 {by} fwd, NaN and ∞ tiles"),
        format!("{tokens}×{out}×{inp}"),
        &got,
        &want,
        1e-3,
    );
    // Row 5 and columns 128..256 NaN, the rest finite; two tiles counted.
    let nans = got.iter().filter(|v| v.is_nan()).count();
    row.pass &= by_lt && bad == 2 && want_bad == 2 && nans == out + (tokens - 1) * 128;
    rows.push(row);
    rows
}

/// Compares two outputs: relative error with a floor of 10⁻³ of the largest reference value
/// (so near-zero references do not blow it up), NaN in one and not the other is a failure.
fn compare(op: &str, shape: String, got: &[f32], want: &[f32], tol: f64) -> Row {
    compare_floor(op, shape, got, want, tol, 1e-3)
}

/// `compare` normwise: the largest difference over the largest reference value.
pub fn compare_normwise(op: &str, shape: String, got: &[f32], want: &[f32], tol: f64) -> Row {
    compare_floor(op, shape, got, want, tol, 1.0)
}

/// [`compare`] with the floor as a fraction of the largest reference value (1: normwise).
fn compare_floor(
    op: &str,
    shape: String,
    got: &[f32],
    want: &[f32],
    tol: f64,
    floor_frac: f64,
) -> Row {
    assert_eq!(got.len(), want.len(), "{op}: output lengths differ");
    let floor = want
        .iter()
        .map(|v| v.abs() as f64)
        .fold(0.0, f64::max)
        .max(1e-30)
        * floor_frac;
    let (mut max_abs, mut max_rel, mut nan_mismatch) = (0f64, 0f64, false);
    for (&g, &w) in got.iter().zip(want) {
        if g.is_nan() != w.is_nan() {
            nan_mismatch = true;
            continue;
        }
        if w.is_nan() {
            continue;
        }
        let d = (g as f64 - w as f64).abs();
        max_abs = max_abs.max(d);
        max_rel = max_rel.max(d / (w.abs() as f64).max(floor));
    }
    Row {
        op: op.into(),
        shape,
        max_abs,
        max_rel: if nan_mismatch { f64::INFINITY } else { max_rel },
        tol,
        pass: !nan_mismatch && max_rel <= tol,
    }
}

/// Runs one section of the table into `rows`. A panic inside it (the CUDA backend panics on a
/// failed launch or transfer) becomes a failed row naming the section and the message, and the
/// table goes on: one broken kernel must not take the rest of a device session's check with it.
fn section(rows: &mut Vec<Row>, name: &str, f: impl FnOnce(&mut Vec<Row>)) {
    let mut got = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut got)));
    rows.append(&mut got);
    if let Err(e) = result {
        rows.push(Row {
            op: name.into(),
            shape: format!("panicked: {}", panic_message(e.as_ref())),
            max_abs: f64::INFINITY,
            max_rel: f64::INFINITY,
            tol: 0.0,
            pass: false,
        });
    }
}

/// The text of a panic's payload.
pub fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// Runs every operation on `cand` and on the CPU reference; `seed` fixes the inputs. An
/// operation that panics fails its section's row and the table goes on.
pub fn kernel_table(cand: &dyn Backend<f32>, seed: u64) -> Vec<Row> {
    let refb = CpuReference;
    let mut rng = Rng::new(seed);
    let mut rows = Vec::new();

    // GEMMs: every transpose combination, accumulate, shapes off the tile sizes.
    section(&mut rows, "GEMMs", |rows| {
        for &(m, n, k, ta, tb, acc) in &[
            (67usize, 129usize, 200usize, false, true, false),
            (64, 96, 130, false, false, true),
            (130, 33, 257, true, false, false),
            (31, 64, 64, true, true, true),
        ] {
            let p = MatMul {
                m,
                n,
                k,
                ta,
                tb,
                accumulate: acc,
            };
            let a = randn(&mut rng, m * k, 1.0);
            let b = randn(&mut rng, k * n, 1.0);
            let c0 = randn(&mut rng, m * n, 1.0);
            let shape = format!("{m}×{n}×{k} ta={ta} tb={tb} acc={acc}");
            let (mut c1, mut c2) = (c0.clone(), c0.clone());
            cand.matmul(p, &a, &b, &mut c1);
            refb.matmul(p, &a, &b, &mut c2);
            rows.push(compare("matmul f32", shape.clone(), &c1, &c2, 1e-4));
            for (name, fmt, tol) in [
                ("matmul bf16", LowpGemm::Bf16, 1e-4),
                (
                    "matmul fp8 1×128·128×128",
                    LowpGemm::Fp8 {
                        a_tile: (1, 128),
                        b_tile: (128, 128),
                    },
                    // The FP8 accumulator truncates per chunk: a different summation order inside a
                    // chunk can move a truncation boundary by one ulp of 14 bits (measured normwise).
                    1e-4,
                ),
            ] {
                let (mut c1, mut c2) = (c0.clone(), c0.clone());
                let bad1 = cand.matmul_lowp(p, &a, &b, &mut c1, fmt);
                let bad2 = refb.matmul_lowp(p, &a, &b, &mut c2, fmt);
                let floor = if matches!(fmt, LowpGemm::Fp8 { .. }) {
                    1.0
                } else {
                    1e-3
                };
                let mut r = compare_floor(name, shape.clone(), &c1, &c2, tol, floor);
                r.pass &= bad1 == bad2;
                rows.push(r);
            }
        }
    });

    // The experts' grouped GEMM: forward, input and weight gradients over uneven groups with an
    // empty one, each weight block among its expert's other projections.
    section(&mut rows, "grouped GEMM", |rows| {
        // Its own inputs, so that the later sections' stay as they were.
        let mut rng = Rng::new(seed.wrapping_add(0x6772));
        let offsets = [0usize, 96, 96, 353, 400, 650];
        let rows_n = offsets[offsets.len() - 1];
        let (n, k) = (136usize, 200usize);
        // The trainer's tiles: 1 × 128 activations and 128 × 128 weights for the forward
        // and input gradient, 128 × 1 for both operands of the weight gradient.
        let fp8 = LowpGemm::Fp8 {
            a_tile: (1, 128),
            b_tile: (128, 128),
        };
        let fp8_wgrad = LowpGemm::Fp8 {
            a_tile: (128, 1),
            b_tile: (128, 1),
        };
        let bf16 = Some(LowpGemm::Bf16);
        for (form, accumulate, format) in [
            (GroupedForm::Forward, false, None),
            (GroupedForm::Input, true, None),
            (GroupedForm::Weight, true, None),
            (GroupedForm::Weight, false, None),
            (GroupedForm::Forward, false, Some(fp8)),
            (GroupedForm::Input, true, Some(fp8)),
            (GroupedForm::Weight, true, Some(fp8_wgrad)),
            (GroupedForm::Weight, false, Some(fp8_wgrad)),
            (GroupedForm::Forward, true, bf16),
            (GroupedForm::Input, false, bf16),
            (GroupedForm::Weight, false, bf16),
        ] {
            let (g, a, b, c0) = grouped_case(&mut rng, form, &offsets, (n, k), accumulate, 1.0);
            let (mut c1, mut c2) = (c0.clone(), c0.clone());
            let bad1 = cand.grouped_matmul(g, &a, &b, &mut c1, format);
            let bad2 = refb.grouped_matmul(g, &a, &b, &mut c2, format);
            let name = format!(
                "grouped {} {}",
                match form {
                    GroupedForm::Forward => "fwd",
                    GroupedForm::Input => "dgrad",
                    GroupedForm::Weight => "wgrad",
                },
                match format {
                    None => "f32",
                    Some(LowpGemm::Bf16) => "bf16",
                    Some(LowpGemm::Fp8 { .. }) => "fp8",
                }
            );
            let shape = format!("5 experts ≤ {rows_n} rows, {n}×{k}, acc={accumulate}");
            // Normwise: the sums of 136 to 200 products differ by their order only (FP8: and
            // by the truncation of chunk sums that straddle a boundary).
            let tol = if matches!(format, Some(LowpGemm::Fp8 { .. })) {
                1e-4
            } else {
                1e-5
            };
            let mut r = compare_normwise(&name, shape, &c1, &c2, tol);
            r.pass &= bad1 == bad2;
            rows.push(r);
        }
    });

    // RMSNorm.
    section(&mut rows, "RMSNorm", |rows| {
        for &(rows_n, d) in &[(5usize, 7168usize), (33, 100)] {
            let x = randn(&mut rng, rows_n * d, 2.0);
            let w = randn(&mut rng, d, 1.0);
            let dy = randn(&mut rng, rows_n * d, 1.0);
            let shape = format!("{rows_n}×{d}");
            let (mut y1, mut r1, mut y2, mut r2) = (
                vec![0.0; rows_n * d],
                vec![0.0; rows_n],
                vec![0.0; rows_n * d],
                vec![0.0; rows_n],
            );
            cand.rmsnorm_fwd(&x, &w, 1e-6, &mut y1, &mut r1);
            refb.rmsnorm_fwd(&x, &w, 1e-6, &mut y2, &mut r2);
            rows.push(compare("rmsnorm fwd", shape.clone(), &y1, &y2, 1e-5));
            rows.push(compare("rmsnorm rstd", shape.clone(), &r1, &r2, 1e-5));
            let base = randn(&mut rng, rows_n * d, 1.0);
            let (mut dx1, mut dx2) = (base.clone(), base.clone());
            cand.rmsnorm_bwd_input(&x, &w, &r2, &dy, &mut dx1, true);
            refb.rmsnorm_bwd_input(&x, &w, &r2, &dy, &mut dx2, true);
            rows.push(compare(
                "rmsnorm bwd input (acc)",
                shape.clone(),
                &dx1,
                &dx2,
                1e-4,
            ));
            let (mut dw1, mut dw2) = (w.clone(), w.clone());
            cand.rmsnorm_bwd_weight(&x, &r2, &dy, &mut dw1);
            refb.rmsnorm_bwd_weight(&x, &r2, &dy, &mut dw2);
            rows.push(compare("rmsnorm bwd weight", shape, &dw1, &dw2, 1e-4));
        }
    });

    // RoPE on the rope part of MLA rows: [tokens, heads, 192] with 64 rotated at offset 128.
    section(&mut rows, "RoPE", |rows| {
        let (seq, heads, row_len, offset, d_rope) = (37usize, 3usize, 192usize, 128usize, 64usize);
        let tokens = 2 * seq;
        let t = RopeTable::<f32>::new(d_rope, 10_000.0, seq);
        let r = RopeRows {
            seq,
            heads,
            row_len,
            offset,
        };
        let x = randn(&mut rng, tokens * heads * row_len, 1.0);
        let shape = format!("{tokens} tokens × {heads} heads × {row_len}, rope {d_rope}@{offset}");
        for (name, bwd) in [("rope fwd", false), ("rope bwd", true)] {
            let (mut x1, mut x2) = (x.clone(), x.clone());
            if bwd {
                cand.rope_bwd(&t, &mut x1, r);
                refb.rope_bwd(&t, &mut x2, r);
            } else {
                cand.rope_fwd(&t, &mut x1, r);
                refb.rope_fwd(&t, &mut x2, r);
            }
            rows.push(compare(name, shape.clone(), &x1, &x2, 1e-5));
        }
    });

    // SwiGLU, with large magnitudes (exp overflow must saturate the same way).
    section(&mut rows, "SwiGLU", |rows| {
        let n = 10_007;
        let mut g = randn(&mut rng, n, 3.0);
        g[0] = 100.0;
        g[1] = -100.0;
        let u = randn(&mut rng, n, 1.0);
        let dh = randn(&mut rng, n, 1.0);
        let (mut h1, mut h2) = (vec![0.0; n], vec![0.0; n]);
        cand.swiglu_fwd(&g, &u, &mut h1);
        refb.swiglu_fwd(&g, &u, &mut h2);
        rows.push(compare("swiglu fwd", format!("{n}"), &h1, &h2, 1e-5));
        let (mut dg1, mut du1, mut dg2, mut du2) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        cand.swiglu_bwd(&g, &u, &dh, &mut dg1, &mut du1);
        refb.swiglu_bwd(&g, &u, &dh, &mut dg2, &mut du2);
        rows.push(compare("swiglu bwd dg", format!("{n}"), &dg1, &dg2, 1e-5));
        rows.push(compare("swiglu bwd du", format!("{n}"), &du1, &du2, 1e-5));
    });

    // Attention with DeepSeek-V3's head dims (d_qk 192 ≠ d_v 128), a sequence off the tiles.
    section(&mut rows, "attention", |rows| {
        for &(bh, seq, d_qk, d_v) in &[(3usize, 133usize, 192usize, 128usize), (2, 64, 32, 48)] {
            let s = AttnShape {
                bh,
                seq,
                d_qk,
                d_v,
                scale: 1.0 / (d_qk as f64).sqrt(),
            };
            let q = randn(&mut rng, bh * seq * d_qk, 1.0);
            let k = randn(&mut rng, bh * seq * d_qk, 1.0);
            let v = randn(&mut rng, bh * seq * d_v, 1.0);
            let d_o = randn(&mut rng, bh * seq * d_v, 1.0);
            let shape = format!("bh {bh} seq {seq} d_qk {d_qk} d_v {d_v}");
            // Plain causal, then reset at document boundaries (one sample of bh heads; documents
            // of seq/3 tokens, one token, and the rest: a row whose first key lies tiles ahead).
            let mut first = vec![0u32; seq];
            let (a, b) = (seq / 3, seq / 3 + 1);
            first[a..b].fill(a as u32);
            first[b..].fill(b as u32);
            for (tag, starts) in [
                ("", None),
                (
                    " (reset)",
                    Some(KeyStarts {
                        heads: bh,
                        first: &first,
                    }),
                ),
            ] {
                let (mut o1, mut l1, mut o2, mut l2) = (
                    vec![0.0; bh * seq * d_v],
                    vec![0.0; bh * seq],
                    vec![0.0; bh * seq * d_v],
                    vec![0.0; bh * seq],
                );
                cand.attention_fwd(s, starts, &q, &k, &v, &mut o1, &mut l1);
                refb.attention_fwd(s, starts, &q, &k, &v, &mut o2, &mut l2);
                rows.push(compare(
                    &format!("attention fwd o{tag}"),
                    shape.clone(),
                    &o1,
                    &o2,
                    1e-4,
                ));
                rows.push(compare(
                    &format!("attention fwd lse{tag}"),
                    shape.clone(),
                    &l1,
                    &l2,
                    1e-5,
                ));
                let mut grads1 = [vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]];
                let mut grads2 = grads1.clone();
                {
                    let [dq, dk, dv] = &mut grads1;
                    cand.attention_bwd(s, starts, &q, &k, &v, &o2, &l2, &d_o, dq, dk, dv);
                }
                {
                    let [dq, dk, dv] = &mut grads2;
                    refb.attention_bwd(s, starts, &q, &k, &v, &o2, &l2, &d_o, dq, dk, dv);
                }
                for (i, name) in ["attention bwd dq", "attention bwd dk", "attention bwd dv"]
                    .iter()
                    .enumerate()
                {
                    let name = format!("{name}{tag}");
                    // With a reset, the one-token document's dq is exactly 0 and others near it
                    // are small: the gradients are compared normwise there. Without, each
                    // element against at least 1 % of the largest: a gradient is a sum over up
                    // to `seq` keys whose terms cancel, so an element a thousandth of the
                    // largest carries the rounding of terms a thousand times its size (on the
                    // emulated device, dq at 0.26 % of the largest differed by 3·10⁻⁴ of
                    // itself from the CPU's order of summation, 7.7·10⁻⁷ absolute).
                    rows.push(if starts.is_some() {
                        compare_normwise(&name, shape.clone(), &grads1[i], &grads2[i], 2e-4)
                    } else {
                        compare_floor(&name, shape.clone(), &grads1[i], &grads2[i], 2e-4, 1e-2)
                    });
                }
            }
        }
    });

    // Cross-entropy over a real vocabulary size, with ignored rows.
    section(&mut rows, "cross-entropy", |rows| {
        let (r, vocab) = (9usize, 50_257usize);
        let logits = randn(&mut rng, r * vocab, 3.0);
        let mut targets: Vec<u32> = (0..r).map(|_| rng.below(vocab) as u32).collect();
        targets[2] = IGNORE;
        let g: Vec<f32> = (0..r).map(|i| 1.0 / (i + 1) as f32).collect();
        let shape = format!("{r}×{vocab}, one ignored row");
        let (mut l1, mut s1, mut l2, mut s2) =
            (vec![0.0; r], vec![0.0; r], vec![0.0; r], vec![0.0; r]);
        cand.cross_entropy_fwd(&logits, &targets, vocab, &mut l1, &mut s1);
        refb.cross_entropy_fwd(&logits, &targets, vocab, &mut l2, &mut s2);
        rows.push(compare(
            "cross-entropy fwd loss",
            shape.clone(),
            &l1,
            &l2,
            1e-5,
        ));
        rows.push(compare(
            "cross-entropy fwd lse",
            shape.clone(),
            &s1,
            &s2,
            1e-5,
        ));
        let (mut d1, mut d2) = (logits.clone(), logits.clone());
        cand.cross_entropy_bwd(&mut d1, &targets, &s2, &g, vocab);
        refb.cross_entropy_bwd(&mut d2, &targets, &s2, &g, vocab);
        rows.push(compare("cross-entropy bwd", shape.clone(), &d1, &d2, 1e-4));
        let (mut f1, mut f2) = (logits.clone(), logits);
        let (mut fl1, mut fs1, mut fl2, mut fs2) =
            (vec![0.0; r], vec![0.0; r], vec![0.0; r], vec![0.0; r]);
        cand.cross_entropy_fused(&mut f1, &targets, &g, vocab, &mut fl1, &mut fs1);
        refb.cross_entropy_fused(&mut f2, &targets, &g, vocab, &mut fl2, &mut fs2);
        rows.push(compare(
            "cross-entropy fused grad",
            shape.clone(),
            &f1,
            &f2,
            1e-4,
        ));
        rows.push(compare("cross-entropy fused loss", shape, &fl1, &fl2, 1e-5));
    });

    // Embedding, with repeated ids (the backward's sums).
    section(&mut rows, "embedding", |rows| {
        let (vocab, d, n) = (1000usize, 96usize, 300usize);
        let table = randn(&mut rng, vocab * d, 1.0);
        let ids: Vec<u32> = (0..n)
            .map(|i| (rng.below(50) + (i % 3) * 300) as u32)
            .collect();
        let shape = format!("{n} ids, vocab {vocab}, d {d}");
        let (mut y1, mut y2) = (vec![0.0; n * d], vec![0.0; n * d]);
        cand.embedding_fwd(&table, d, &ids, &mut y1);
        refb.embedding_fwd(&table, d, &ids, &mut y2);
        rows.push(compare("embedding fwd", shape.clone(), &y1, &y2, 0.0));
        let dy = randn(&mut rng, n * d, 1.0);
        let (mut t1, mut t2) = (table.clone(), table);
        cand.embedding_bwd(&dy, d, &ids, &mut t1);
        refb.embedding_bwd(&dy, d, &ids, &mut t2);
        rows.push(compare("embedding bwd", shape, &t1, &t2, 1e-5));
    });

    // The router at DeepSeek-V3's and the 1b preset's settings, with ties: scores and gates
    // within FP32 rounding (the device's expf), each token's experts the reference's — or a
    // different order only among choices tied within that rounding.
    section(&mut rows, "router", |rows| {
        let dsv3 = Route::DEEPSEEK_V3;
        let b1 = Route {
            experts: 64,
            k: 6,
            ..dsv3
        };
        for (name, r) in [("DeepSeek-V3", dsv3), ("1b", b1)] {
            let (n, e) = (512, r.experts);
            let mut logits = randn(&mut rng, n * e, 1.0);
            logits[..e].fill(0.0);
            logits[e + 3] = 4.0;
            logits[e + 40] = 4.0;
            let mut bias = randn(&mut rng, e, 0.05);
            bias[40] = bias[3]; // token 1: experts 3 and 40 tie
            let run = |be: &dyn Backend<f32>| {
                let (mut s, mut i, mut g) =
                    (vec![0.0; n * e], vec![0; n * r.k], vec![0.0; n * r.k]);
                be.route(r, &logits, &bias, &mut s, &mut i, &mut g);
                (s, i, g)
            };
            let ((s1, i1, mut g1), (s2, i2, g2)) = (run(cand), run(&refb));
            let shape = format!(
                "{n} tokens, {name}: {e} experts, {} of {} groups, top-{}",
                r.topk_groups, r.groups, r.k
            );
            rows.push(compare("route scores", shape.clone(), &s1, &s2, 1e-6));
            let mut bad = 0usize;
            for t in 0..n {
                let (a, b) = (&i1[t * r.k..(t + 1) * r.k], &i2[t * r.k..(t + 1) * r.k]);
                if a == b {
                    continue;
                }
                // Tied within rounding: the reference's choice values at both picks agree.
                let c = |i: u32| s2[t * e + i as usize] + bias[i as usize];
                let tied = a.iter().zip(b).all(|(&x, &y)| (c(x) - c(y)).abs() <= 1e-6);
                bad += usize::from(!tied);
                // Gates of a reordered tie are compared where they landed in the reference.
                g1[t * r.k..(t + 1) * r.k].copy_from_slice(&g2[t * r.k..(t + 1) * r.k]);
            }
            rows.push(Row {
                op: "route experts".into(),
                shape: shape.clone(),
                max_abs: bad as f64,
                max_rel: bad as f64 / n as f64,
                tol: 0.0,
                pass: bad == 0,
            });
            rows.push(compare("route gates", shape.clone(), &g1, &g2, 1e-5));
            // The backward on the reference's routing, with the balance loss: one rounding
            // per operation in the CPU's order, so the bits must be the reference's.
            let dg = randn(&mut rng, n * r.k, 1.0);
            let coef: Vec<f64> = (0..4 * e).map(|i| 1e-4 * (i % 13) as f64).collect();
            let bal = Balance {
                coef: &coef,
                seq: n / 4,
                sequences: 8,
            };
            let (mut d1, mut d2) = (vec![0.0; n * e], vec![0.0; n * e]);
            cand.route_bwd(r, &s2, &i2, &dg, Some(bal), &mut d1);
            refb.route_bwd(r, &s2, &i2, &dg, Some(bal), &mut d2);
            rows.push(compare("route bwd (with balance)", shape, &d1, &d2, 0.0));
        }
    });

    // The strided copy at the 1b preset's MLA shapes (16 heads, value width 128, RoPE width
    // 64): heads to tokens, the shared RoPE key broadcast to every head, its gradient summed
    // over heads (in head order on every backend), a residual add. Copies and ordered sums:
    // the bits must be the reference's.
    section(&mut rows, "strided copy", |rows| {
        let (b, h, s, w, r) = (2, 16, 256, 128, 64);
        let heads = [b, h, s, w];
        let tokens = [s * h * w, w, h * w, 1];
        let qk = 192;
        let cases = [
            (
                "copy heads→tokens",
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
                "copy RoPE key to heads",
                Strided {
                    dims: [b, h, s, r],
                    src: [s * r, 0, r, 1],
                    src_at: 0,
                    dst: [h * s * qk, s * qk, qk, 1],
                    dst_at: qk - r,
                    accumulate: false,
                },
                b * s * r,
                b * h * s * qk,
            ),
            (
                "copy RoPE key grad Σ heads",
                Strided {
                    dims: [b, h, s, r],
                    src: [h * s * qk, s * qk, qk, 1],
                    src_at: qk - r,
                    dst: [s * r, 0, r, 1],
                    dst_at: 0,
                    accumulate: true,
                },
                b * h * s * qk,
                b * s * r,
            ),
            (
                "copy residual add",
                Strided::elementwise(b * s * 2048, true),
                b * s * 2048,
                b * s * 2048,
            ),
        ];
        for (op, c, ns, nd) in cases {
            let src = randn(&mut rng, ns, 1.0);
            let init = randn(&mut rng, nd, 1.0);
            let (mut d1, mut d2) = (init.clone(), init);
            cand.copy(c, &src, &mut d1);
            refb.copy(c, &src, &mut d2);
            let shape = format!("{:?} ← {} elements", c.dims, ns);
            rows.push(compare(op, shape, &d1, &d2, 0.0));
        }
    });

    // A MoE layer's dispatch and combine at the 1b preset's width (2048): one expert's rows
    // gathered (plain, and scaled by the gates as the backward does) and added back to their
    // tokens weighted by the gates. One product and one sum per element: the reference's bits.
    section(&mut rows, "rows", |rows| {
        let (tokens, d) = (4096, 2048);
        let table = randn(&mut rng, tokens * d, 1.0);
        let picked: Vec<u32> = (0..tokens as u32).filter(|t| t % 11 < 2).collect();
        let gates = randn(&mut rng, picked.len(), 0.3);
        let shape = format!("{} of {tokens} rows × {d}", picked.len());
        for (op, scale) in [
            ("gather rows", None),
            ("gather rows · gate", Some(&gates[..])),
        ] {
            let (mut y1, mut y2) = (vec![0.0; picked.len() * d], vec![0.0; picked.len() * d]);
            cand.gather_rows(&table, d, &picked, scale, &mut y1);
            refb.gather_rows(&table, d, &picked, scale, &mut y2);
            rows.push(compare(op, shape.clone(), &y1, &y2, 0.0));
        }
        let src = randn(&mut rng, picked.len() * d, 1.0);
        let (mut y1, mut y2) = (table.clone(), table);
        cand.scatter_add_rows(&src, d, &picked, Some(&gates), &mut y1);
        refb.scatter_add_rows(&src, d, &picked, Some(&gates), &mut y2);
        rows.push(compare(
            "scatter-add rows · gate",
            shape.clone(),
            &y1,
            &y2,
            0.0,
        ));
        let (mut o1, mut o2) = (vec![0.0; picked.len()], vec![0.0; picked.len()]);
        cand.dot_rows(&y2, d, &picked, &src, &mut o1);
        refb.dot_rows(&y2, d, &picked, &src, &mut o2);
        rows.push(compare(
            "dot rows (gate gradient)",
            shape.clone(),
            &o1,
            &o2,
            0.0,
        ));
        // The rows as an FP8 dispatch sends them (1 × 128 tiles, one of them holding an
        // infinity) and as the combine returns them (BF16).
        let mut x = randn(&mut rng, 64 * d, 3.0);
        x[5 * d + 300] = f32::INFINITY;
        let (mut q1, mut q2) = (x.clone(), x.clone());
        let bad1 = cand.fake_quantize_fp8(&mut q1, d, (1, 128));
        let bad2 = refb.fake_quantize_fp8(&mut q2, d, (1, 128));
        let mut row = compare(
            "fake-quantize E4M3 1×128",
            format!("64 × {d}"),
            &q1,
            &q2,
            0.0,
        );
        row.pass &= bad1 == bad2 && bad2 == 1;
        rows.push(row);
        let (mut r1, mut r2) = (x.clone(), x);
        cand.round_bf16(&mut r1);
        refb.round_bf16(&mut r2);
        rows.push(compare("round BF16", format!("64 × {d}"), &r1, &r2, 0.0));
        // The step's gradient buffer: its mean over micro-batches, and zeroed for the next.
        let (mut s1, mut s2) = (r1.clone(), r1);
        cand.scale(&mut s1, 1.0 / 3.0);
        refb.scale(&mut s2, 1.0 / 3.0);
        rows.push(compare(
            "scale (gradient mean)",
            format!("64 × {d}"),
            &s1,
            &s2,
            0.0,
        ));
        s1[7] = f32::NAN;
        cand.fill(&mut s1, 0.0);
        refb.fill(&mut s2, 0.0);
        rows.push(compare(
            "fill (zero gradients)",
            format!("64 × {d}"),
            &s1,
            &s2,
            0.0,
        ));
    });
    // The optimizer: AdamW over every element kind, with BF16 moments and a clip scale; the
    // sums of squares behind the gradient norms, over segments of awkward lengths.
    section(&mut rows, "optimizer", |rows| {
        let n = 3 * (1 << 20) + 77;
        let kind: Vec<u8> = (0..n).map(|i| ((i / 1000) % 3) as u8).collect();
        let p = randn(&mut rng, n, 0.02);
        let m = randn(&mut rng, n, 1e-3);
        let v: Vec<f32> = randn(&mut rng, n, 1e-3).iter().map(|x| x * x).collect();
        let g = randn(&mut rng, n, 1e-2);
        for (bf16, clip) in [(false, 1.0), (true, 0.37)] {
            let s = AdamStep::new(0.9, 0.95, 1e-8, 0.1, 3e-4, 7, clip, bf16);
            let (mut p1, mut m1, mut v1) = (p.clone(), m.clone(), v.clone());
            let (mut p2, mut m2, mut v2) = (p.clone(), m.clone(), v.clone());
            cand.adamw(s, &kind, &mut p1, &g, &mut m1, &mut v1);
            Backend::<f32>::adamw(&refb, s, &kind, &mut p2, &g, &mut m2, &mut v2);
            let shape = format!(
                "{n}, clip {clip}{}",
                if bf16 { ", BF16 moments" } else { "" }
            );
            let mut row = compare("AdamW parameters", shape.clone(), &p1, &p2, 0.0);
            let (mm, vv) = (
                compare("m", shape.clone(), &m1, &m2, 0.0),
                compare("v", shape.clone(), &v1, &v2, 0.0),
            );
            row.pass &= mm.pass && vv.pass;
            row.max_abs = row.max_abs.max(mm.max_abs).max(vv.max_abs);
            row.max_rel = row.max_rel.max(mm.max_rel).max(vv.max_rel);
            rows.push(row);
        }
        let segs = tokenmill_kernels::cpu::optim::split_segments(
            [0..0, 5..6, 100..355, 1000..(1 << 20) + 3, 2_000_000..n],
            1 << 14,
        );
        let (mut o1, mut o2) = (vec![0f64; segs.len()], vec![0f64; segs.len()]);
        cand.sum_squares(&g, &segs, &mut o1);
        refb.sum_squares(&g, &segs, &mut o2);
        let (mut max_abs, mut max_rel) = (0f64, 0f64);
        for (a, b) in o1.iter().zip(&o2) {
            let d = (a - b).abs();
            max_abs = max_abs.max(d);
            max_rel = max_rel.max(if d == 0.0 {
                0.0
            } else {
                d / b.abs().max(1e-300)
            });
        }
        rows.push(Row {
            op: "sum of squares (f64)".into(),
            shape: format!("{} segments of ≤ 16384 over {n}", segs.len()),
            max_abs,
            max_rel,
            tol: 0.0,
            pass: o1.iter().zip(&o2).all(|(a, b)| a.to_bits() == b.to_bits()),
        });
    });
    // Every operation with one of its dimensions zero (check/empty.rs).
    section(&mut rows, "empty shapes", |rows| empty::rows(cand, rows));
    rows
}

/// The table as text.
pub fn render(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<28} {:<44} {:>10} {:>10} {:>8}  result\n",
        "operation", "shape", "max abs", "max rel", "tol"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<28} {:<44} {:>10.2e} {:>10.2e} {:>8.0e}  {}\n",
            r.op,
            r.shape,
            r.max_abs,
            r.max_rel,
            r.tol,
            if r.pass { "PASS" } else { "FAIL" }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenmill_kernels::backend::Cpu;

    #[test]
    fn the_fast_cpu_kernels_pass_the_table_against_the_reference() {
        let rows = kernel_table(&Cpu, 7);
        assert!(rows.len() >= 40, "{}", rows.len());
        let failed: Vec<_> = rows.iter().filter(|r| !r.pass).collect();
        assert!(failed.is_empty(), "{}", render(&rows));
    }

    /// A backend whose SwiGLU is off by one part in 10⁴: the table must say FAIL on that line.
    /// With `panics`, its RMSNorm forward panics as the CUDA backend does on a failed launch.
    #[derive(Debug)]
    struct Off {
        panics: bool,
    }
    impl Backend<f32> for Off {
        fn name(&self) -> &'static str {
            "off"
        }
        fn matmul(&self, p: MatMul, a: &[f32], b: &[f32], c: &mut [f32]) {
            CpuReference.matmul(p, a, b, c)
        }
        fn grouped_matmul(
            &self,
            g: Grouped<'_>,
            a: &[f32],
            b: &[f32],
            c: &mut [f32],
            f: Option<LowpGemm>,
        ) -> u64 {
            CpuReference.grouped_matmul(g, a, b, c, f)
        }
        fn matmul_lowp(&self, p: MatMul, a: &[f32], b: &[f32], c: &mut [f32], f: LowpGemm) -> u64 {
            CpuReference.matmul_lowp(p, a, b, c, f)
        }
        fn rmsnorm_fwd(&self, x: &[f32], w: &[f32], eps: f64, y: &mut [f32], r: &mut [f32]) {
            if self.panics {
                panic!("CUDA backend: rmsnorm_fwd_f32: CUDA_ERROR_ILLEGAL_ADDRESS");
            }
            CpuReference.rmsnorm_fwd(x, w, eps, y, r)
        }
        fn rmsnorm_bwd_input(
            &self,
            x: &[f32],
            w: &[f32],
            r: &[f32],
            dy: &[f32],
            dx: &mut [f32],
            acc: bool,
        ) {
            CpuReference.rmsnorm_bwd_input(x, w, r, dy, dx, acc)
        }
        fn rmsnorm_bwd_weight(&self, x: &[f32], r: &[f32], dy: &[f32], dw: &mut [f32]) {
            CpuReference.rmsnorm_bwd_weight(x, r, dy, dw)
        }
        fn rope_fwd(&self, t: &RopeTable<f32>, x: &mut [f32], r: RopeRows) {
            CpuReference.rope_fwd(t, x, r)
        }
        fn rope_bwd(&self, t: &RopeTable<f32>, x: &mut [f32], r: RopeRows) {
            CpuReference.rope_bwd(t, x, r)
        }
        fn swiglu_fwd(&self, g: &[f32], u: &[f32], h: &mut [f32]) {
            CpuReference.swiglu_fwd(g, u, h);
            h.iter_mut().for_each(|v| *v *= 1.0001);
        }
        fn swiglu_bwd(&self, g: &[f32], u: &[f32], dh: &[f32], dg: &mut [f32], du: &mut [f32]) {
            CpuReference.swiglu_bwd(g, u, dh, dg, du)
        }
        fn attention_fwd(
            &self,
            s: AttnShape,
            st: Option<KeyStarts<'_>>,
            q: &[f32],
            k: &[f32],
            v: &[f32],
            o: &mut [f32],
            l: &mut [f32],
        ) {
            CpuReference.attention_fwd(s, st, q, k, v, o, l)
        }
        fn attention_bwd(
            &self,
            s: AttnShape,
            st: Option<KeyStarts<'_>>,
            q: &[f32],
            k: &[f32],
            v: &[f32],
            o: &[f32],
            l: &[f32],
            d_o: &[f32],
            dq: &mut [f32],
            dk: &mut [f32],
            dv: &mut [f32],
        ) {
            CpuReference.attention_bwd(s, st, q, k, v, o, l, d_o, dq, dk, dv)
        }
        fn cross_entropy_fwd(&self, x: &[f32], t: &[u32], v: usize, l: &mut [f32], s: &mut [f32]) {
            CpuReference.cross_entropy_fwd(x, t, v, l, s)
        }
        fn cross_entropy_bwd(&self, x: &mut [f32], t: &[u32], s: &[f32], g: &[f32], v: usize) {
            CpuReference.cross_entropy_bwd(x, t, s, g, v)
        }
        fn cross_entropy_fused(
            &self,
            x: &mut [f32],
            t: &[u32],
            g: &[f32],
            v: usize,
            l: &mut [f32],
            s: &mut [f32],
        ) {
            CpuReference.cross_entropy_fused(x, t, g, v, l, s)
        }
        fn embedding_fwd(&self, t: &[f32], d: usize, ids: &[u32], y: &mut [f32]) {
            CpuReference.embedding_fwd(t, d, ids, y)
        }
        fn embedding_bwd(&self, dy: &[f32], d: usize, ids: &[u32], t: &mut [f32]) {
            CpuReference.embedding_bwd(dy, d, ids, t)
        }
        fn route(
            &self,
            r: Route,
            l: &[f32],
            b: &[f32],
            s: &mut [f32],
            i: &mut [u32],
            g: &mut [f32],
        ) {
            CpuReference.route(r, l, b, s, i, g)
        }
        fn route_bwd(
            &self,
            r: Route,
            s: &[f32],
            i: &[u32],
            g: &[f32],
            b: Option<Balance<'_>>,
            d: &mut [f32],
        ) {
            CpuReference.route_bwd(r, s, i, g, b, d)
        }
        fn fake_quantize_fp8(&self, x: &mut [f32], cols: usize, tile: (usize, usize)) -> u64 {
            CpuReference.fake_quantize_fp8(x, cols, tile)
        }
        fn round_bf16(&self, x: &mut [f32]) {
            CpuReference.round_bf16(x)
        }
        fn copy(&self, c: Strided, src: &[f32], dst: &mut [f32]) {
            CpuReference.copy(c, src, dst)
        }
        fn gather_rows(&self, x: &[f32], d: usize, r: &[u32], s: Option<&[f32]>, y: &mut [f32]) {
            CpuReference.gather_rows(x, d, r, s, y)
        }
        fn scatter_add_rows(
            &self,
            x: &[f32],
            d: usize,
            r: &[u32],
            s: Option<&[f32]>,
            y: &mut [f32],
        ) {
            CpuReference.scatter_add_rows(x, d, r, s, y)
        }
        fn dot_rows(&self, t: &[f32], d: usize, r: &[u32], x: &[f32], o: &mut [f32]) {
            CpuReference.dot_rows(t, d, r, x, o)
        }
        fn adamw(
            &self,
            s: AdamStep,
            k: &[u8],
            p: &mut [f32],
            g: &[f32],
            m: &mut [f32],
            v: &mut [f32],
        ) {
            Backend::<f32>::adamw(&CpuReference, s, k, p, g, m, v)
        }
        fn sum_squares(&self, x: &[f32], segs: &[std::ops::Range<usize>], out: &mut [f64]) {
            CpuReference.sum_squares(x, segs, out)
        }
    }

    #[test]
    fn a_backend_off_by_one_part_in_ten_thousand_fails_its_line_and_only_it() {
        let rows = kernel_table(&Off { panics: false }, 7);
        let failed: Vec<&str> = rows
            .iter()
            .filter(|r| !r.pass)
            .map(|r| r.op.as_str())
            .collect();
        assert_eq!(failed, ["swiglu fwd"], "{}", render(&rows));
    }

    #[test]
    fn an_operation_that_panics_fails_its_section_and_the_table_goes_on() {
        let all = kernel_table(&Off { panics: false }, 7);
        let rows = kernel_table(&Off { panics: true }, 7);
        let failed: Vec<&Row> = rows.iter().filter(|r| !r.pass).collect();
        // RMSNorm's section, SwiGLU's row, and RMSNorm on no rows.
        assert_eq!(failed.len(), 3, "{}", render(&rows));
        assert_eq!(failed[0].op, "RMSNorm");
        assert!(
            failed[0].shape.contains("panicked")
                && failed[0].shape.contains("CUDA_ERROR_ILLEGAL_ADDRESS"),
            "{}",
            failed[0].shape
        );
        assert_eq!(failed[1].op, "swiglu fwd");
        assert_eq!(failed[2].op, "empty RMSNorm");
        assert!(failed[2].shape.starts_with("0 rows × 64: panicked"));
        // The RMSNorm rows are replaced by the one failure; every later section ran.
        let rmsnorm = all.iter().filter(|r| r.op.starts_with("rmsnorm")).count();
        assert!(rmsnorm > 0);
        assert_eq!(rows.len(), all.len() - rmsnorm + 1);
        assert_eq!(rows.last().map(|r| r.op.as_str()), Some("empty optimizer"));
    }
}
