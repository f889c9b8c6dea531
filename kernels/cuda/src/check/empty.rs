//! The kernel table's empty shapes: every operation of the seam with one of its dimensions
//! zero — no rows, no columns, nothing to contract, no tokens, no experts with rows — run by
//! the candidate and by the CPU reference. What little such a call writes (a product over
//! nothing is zeros, or left as it was when it accumulates) and what it counts (an empty
//! product reads no operand, so no FP8 tile is counted) must be the reference's bits, and the
//! call must not fail: a device may not allocate zero bytes or launch a grid of zero blocks,
//! and cuBLAS refuses a leading dimension of zero. Expert parallelism reaches these shapes on
//! its own: a rank none of whose experts got a token in a micro-batch.

use tokenmill_kernels::backend::{
    AdamStep, AttnShape, Backend, CpuReference, Grouped, GroupedForm, LowpGemm, MatMul, RopeRows,
    RopeTable, Route, Strided,
};

use super::{Row, panic_message};

/// What one run of a case gives: its outputs (each compared bit for bit) and its count (FP8
/// tiles with a non-finite amax, or 0).
type Outcome = (Vec<Vec<f32>>, u64);

/// One row: `f` on the candidate (a panic fails the row, with its message) and on the
/// reference; the same bits in every output and the same count, or FAIL.
fn case(
    rows: &mut Vec<Row>,
    cand: &dyn Backend<f32>,
    op: &str,
    shape: String,
    f: impl Fn(&dyn Backend<f32>) -> Outcome,
) {
    let want = f(&CpuReference);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(cand)));
    let row = |shape: String, pass: bool| Row {
        op: op.into(),
        shape,
        max_abs: if pass { 0.0 } else { f64::INFINITY },
        max_rel: if pass { 0.0 } else { f64::INFINITY },
        tol: 0.0,
        pass,
    };
    rows.push(match got {
        Err(e) => row(
            format!("{shape}: panicked: {}", panic_message(e.as_ref())),
            false,
        ),
        Ok((outs, count)) => {
            let same = outs.len() == want.0.len()
                && outs.iter().zip(&want.0).all(|(a, b)| {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
                });
            let shape = match count == want.1 {
                true => shape,
                false => format!("{shape}: counted {count}, the reference {}", want.1),
            };
            row(shape, same && count == want.1)
        }
    });
}

/// Values with a NaN and an infinity at the front, so that a quantizer that reads an operand
/// of an empty product counts its tiles.
fn values(n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) * 0.125).collect();
    if n > 1 {
        v[0] = f32::NAN;
        v[1] = f32::INFINITY;
    }
    v
}

/// The empty cases, appended to `rows`.
pub fn rows(cand: &dyn Backend<f32>, rows: &mut Vec<Row>) {
    gemms(cand, rows);
    grouped(cand, rows);
    layers(cand, rows);
    moe_and_optimizer(cand, rows);
}

const FORMATS: [(&str, Option<LowpGemm>); 3] = [
    ("f32", None),
    ("bf16", Some(LowpGemm::Bf16)),
    (
        "fp8",
        Some(LowpGemm::Fp8 {
            a_tile: (1, 128),
            b_tile: (128, 128),
        }),
    ),
];

/// Dense GEMMs with m, n or k zero, in every precision, overwriting and accumulating, plain
/// and transposed.
fn gemms(cand: &dyn Backend<f32>, rows: &mut Vec<Row>) {
    for (name, format) in FORMATS {
        for (m, n, k) in [
            (0usize, 9usize, 130usize),
            (7, 0, 130),
            (7, 9, 0),
            (0, 0, 0),
        ] {
            let shape = format!("{m}×{n}×{k}, ta/tb, acc on and off");
            case(rows, cand, &format!("empty matmul {name}"), shape, |be| {
                let mut outs = Vec::new();
                let mut bad = 0;
                for (ta, tb, accumulate) in [(false, true, false), (true, false, true)] {
                    let p = MatMul {
                        m,
                        n,
                        k,
                        ta,
                        tb,
                        accumulate,
                    };
                    let (a, b) = (values(m * k), values(n * k));
                    let mut c = vec![1.5f32; m * n];
                    match format {
                        None => be.matmul(p, &a, &b, &mut c),
                        Some(f) => bad += be.matmul_lowp(p, &a, &b, &mut c, f),
                    }
                    outs.push(c);
                }
                (outs, bad)
            });
        }
    }
}

/// Grouped GEMMs with no rows in any group, no columns, or nothing to contract, in every form
/// and precision (the weight gradient's tiles along the tokens).
fn grouped(cand: &dyn Backend<f32>, rows: &mut Vec<Row>) {
    let some = [0usize, 3, 3, 8];
    let none = [0usize, 0, 0, 0];
    for (name, format) in FORMATS {
        for (what, offsets, n, k) in [
            ("no rows", &none, 9usize, 130usize),
            ("n 0", &some, 0, 130),
            ("k 0", &some, 9, 0),
        ] {
            let shape = format!("3 experts, {what}: every form, acc on and off");
            case(rows, cand, &format!("empty grouped {name}"), shape, |be| {
                let mut outs = Vec::new();
                let mut bad = 0;
                for form in [
                    GroupedForm::Forward,
                    GroupedForm::Input,
                    GroupedForm::Weight,
                ] {
                    for accumulate in [false, true] {
                        let g = Grouped {
                            form,
                            offsets,
                            n,
                            k,
                            stride: n * k + 3,
                            accumulate,
                        };
                        let [la, lb, lc] = g.lens();
                        let (a, b) = (values(la), values(lb));
                        let mut c = vec![1.5f32; lc];
                        let f = match (format, form) {
                            (Some(LowpGemm::Fp8 { .. }), GroupedForm::Weight) => {
                                Some(LowpGemm::Fp8 {
                                    a_tile: (128, 1),
                                    b_tile: (128, 1),
                                })
                            }
                            _ => format,
                        };
                        bad += be.grouped_matmul(g, &a, &b, &mut c, f);
                        outs.push(c);
                    }
                }
                (outs, bad)
            });
        }
    }
}

/// The dense layers' operations with no rows (or no keys) at the presets' widths.
fn layers(cand: &dyn Backend<f32>, rows: &mut Vec<Row>) {
    let d = 64;
    case(rows, cand, "empty RMSNorm", "0 rows × 64".into(), |be| {
        let w = values(d);
        let (mut y, mut rstd) = (vec![], vec![]);
        be.rmsnorm_fwd(&[], &w, 1e-6, &mut y, &mut rstd);
        let mut dx = vec![];
        be.rmsnorm_bwd_input(&[], &w, &[], &[], &mut dx, true);
        let mut dw = vec![0.25f32; d];
        be.rmsnorm_bwd_weight(&[], &[], &[], &mut dw);
        (vec![y, rstd, dx, dw], 0)
    });
    case(
        rows,
        cand,
        "empty RoPE",
        "0 tokens × 2 heads".into(),
        |be| {
            let t = RopeTable::<f32>::new(16, 10_000.0, 8);
            let r = RopeRows {
                seq: 8,
                heads: 2,
                row_len: 48,
                offset: 32,
            };
            let mut x = vec![];
            be.rope_fwd(&t, &mut x, r);
            be.rope_bwd(&t, &mut x, r);
            (vec![x], 0)
        },
    );
    case(rows, cand, "empty SwiGLU", "0".into(), |be| {
        let (mut h, mut dg, mut du) = (vec![], vec![], vec![]);
        be.swiglu_fwd(&[], &[], &mut h);
        be.swiglu_bwd(&[], &[], &[], &mut dg, &mut du);
        (vec![h, dg, du], 0)
    });
    for (bh, seq) in [(0usize, 16usize), (2, 0)] {
        let shape = format!("bh {bh} seq {seq} d_qk 24 d_v 16");
        case(rows, cand, "empty attention", shape, |be| {
            let s = AttnShape {
                bh,
                seq,
                d_qk: 24,
                d_v: 16,
                scale: 0.2,
            };
            let (mut o, mut lse) = (vec![], vec![]);
            be.attention_fwd(s, None, &[], &[], &[], &mut o, &mut lse);
            let (mut dq, mut dk, mut dv) = (vec![], vec![], vec![]);
            be.attention_bwd(
                s,
                None,
                &[],
                &[],
                &[],
                &o,
                &lse,
                &[],
                &mut dq,
                &mut dk,
                &mut dv,
            );
            (vec![o, lse, dq, dk, dv], 0)
        });
    }
    case(
        rows,
        cand,
        "empty cross-entropy",
        "0 × 50257".into(),
        |be| {
            let vocab = 50_257;
            let (mut loss, mut lse, mut logits) = (vec![], vec![], vec![]);
            be.cross_entropy_fwd(&[], &[], vocab, &mut loss, &mut lse);
            be.cross_entropy_bwd(&mut logits, &[], &[], &[], vocab);
            be.cross_entropy_fused(&mut logits, &[], &[], vocab, &mut loss, &mut lse);
            (vec![loss, lse, logits], 0)
        },
    );
    case(
        rows,
        cand,
        "empty embedding",
        "0 ids, vocab 10, d 64".into(),
        |be| {
            let table = values(10 * d);
            let mut y = vec![];
            be.embedding_fwd(&table, d, &[], &mut y);
            let mut dt = table.clone();
            be.embedding_bwd(&[], d, &[], &mut dt);
            (vec![y, dt], 0)
        },
    );
}

/// The router, the experts' rows and the optimizer with nothing to do.
fn moe_and_optimizer(cand: &dyn Backend<f32>, rows: &mut Vec<Row>) {
    let r = Route {
        experts: 64,
        k: 6,
        ..Route::DEEPSEEK_V3
    };
    case(
        rows,
        cand,
        "empty route",
        "0 tokens, 64 experts".into(),
        |be| {
            let bias = values(r.experts);
            let (mut s, mut i, mut g) = (vec![], vec![], vec![]);
            be.route(r, &[], &bias, &mut s, &mut i, &mut g);
            let mut ds = vec![];
            be.route_bwd(r, &[], &[], &[], None, &mut ds);
            (vec![s, g, ds], 0)
        },
    );
    let d = 256;
    case(rows, cand, "empty rows", "0 of 5 rows × 256".into(), |be| {
        let table = values(5 * d);
        let mut y = vec![];
        be.gather_rows(&table, d, &[], None, &mut y);
        be.gather_rows(&table, d, &[], Some(&[]), &mut y);
        let mut t = table.clone();
        be.scatter_add_rows(&[], d, &[], Some(&[]), &mut t);
        let mut dots = vec![];
        be.dot_rows(&table, d, &[], &[], &mut dots);
        (vec![y, t, dots], 0)
    });
    case(rows, cand, "empty copy", "dims [2, 0, 3, 4]".into(), |be| {
        let dims = [2, 0, 3, 4];
        let c = Strided {
            dims,
            src: Strided::dense(dims),
            src_at: 0,
            dst: Strided::dense(dims),
            dst_at: 0,
            accumulate: true,
        };
        let mut dst = vec![];
        be.copy(c, &[], &mut dst);
        let mut one = values(3);
        be.copy(Strided::elementwise(0, false), &[], &mut one);
        (vec![dst, one], 0)
    });
    case(
        rows,
        cand,
        "empty elementwise",
        "0: FP8, BF16, scale, fill".into(),
        |be| {
            let mut x = vec![];
            let bad = be.fake_quantize_fp8(&mut x, 128, (1, 128));
            be.round_bf16(&mut x);
            be.scale(&mut x, 0.5);
            be.fill(&mut x, 0.0);
            (vec![x], bad)
        },
    );
    case(
        rows,
        cand,
        "empty optimizer",
        "0 parameters; empty segments".into(),
        |be| {
            let s = AdamStep::new(0.9, 0.95, 1e-8, 0.1, 3e-4, 1, 1.0, false);
            let (mut p, mut m, mut v) = (vec![], vec![], vec![]);
            be.adamw(s, &[], &mut p, &[], &mut m, &mut v);
            let mut none = vec![];
            be.sum_squares(&[], &[], &mut none);
            let mut zeros = vec![7.0f64; 2];
            be.sum_squares(&[], &[0..0, 0..0], &mut zeros);
            let sums = zeros.iter().map(|&z| z as f32).collect();
            (vec![p, m, v, sums], 0)
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the table compares against: the reference's empty products are zeros without K and
    /// C as it was when accumulating, and read no operand (no FP8 tile counted, though the
    /// operands hold a NaN and an infinity).
    #[test]
    fn the_reference_computes_a_product_over_nothing_as_zeros() {
        let fp8 = FORMATS[2].1.expect("fp8");
        for (m, n, k) in [(7usize, 9usize, 0usize), (0, 9, 130), (7, 0, 130)] {
            for accumulate in [false, true] {
                let p = MatMul {
                    accumulate,
                    ..MatMul::linear(m, n, k)
                };
                let (a, b) = (values(m * k), values(n * k));
                let mut c = vec![1.5f32; m * n];
                let mut c8 = c.clone();
                CpuReference.matmul(p, &a, &b, &mut c);
                let bad = CpuReference.matmul_lowp(p, &a, &b, &mut c8, fp8);
                let want = if accumulate { 1.5 } else { 0.0 };
                assert!(c.iter().chain(&c8).all(|&v| v == want), "{m}×{n}×{k}");
                assert_eq!(bad, 0, "{m}×{n}×{k}");
            }
        }
        // Weight gradients of experts without rows: zeros in each block, the gap between
        // blocks (another projection's) untouched.
        let g = Grouped {
            form: GroupedForm::Weight,
            offsets: &[0, 0, 0],
            n: 2,
            k: 3,
            stride: 8,
            accumulate: false,
        };
        let mut c = vec![1.5f32; g.lens()[2]];
        CpuReference.grouped_matmul(g, &[], &[], &mut c, None);
        assert_eq!(&c[..6], &[0.0; 6]);
        assert_eq!(&c[6..8], &[1.5; 2]);
        assert_eq!(&c[8..], &[0.0; 6]);
    }
}
