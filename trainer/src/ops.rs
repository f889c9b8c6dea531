//! The building blocks every layer is made of — a linear map and an RMSNorm — and the
//! weight-gradient queue that splits every backward pass in two.
//!
//! A layer's backward computes only the gradient of its input and pushes one [`WgradOp`] per
//! weight (the output gradient it saw and a shared handle to the activation it needs). The
//! queue is flushed right after the layer (plain training) or later: a DualPipe /
//! zero-bubble schedule runs the input-gradient passes of the next micro-batch first and
//! fills pipeline bubbles with the deferred weight gradients.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokenmill_kernels::Backend;
use tokenmill_kernels::Real;
use tokenmill_kernels::bf16::round_bf16;
use tokenmill_kernels::cpu::matmul::MatMul;
use tokenmill_kernels::fp8::Fp8Format;
use tokenmill_kernels::quant::{ScaleRounding, fake_quantize};

use crate::params::{ParamId, ParamLayout, view, view_mut};

/// A shared activation buffer (kept by a layer's cache and by pending weight gradients).
pub type Buf<T> = Arc<Vec<T>>;

/// The number format of the linear layers' GEMMs (DeepSeek-V3 §3.3). Master weights,
/// gradients and everything outside the linear layers of the blocks (embedding, output head,
/// MoE gate, norms, attention) stay FP32 whatever the precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// FP32 everywhere.
    #[default]
    Fp32,
    /// GEMM inputs rounded to BF16 (round-to-nearest-even), FP32 accumulation.
    Bf16,
    /// All three GEMMs of every linear layer (Fprop, Dgrad, Wgrad) on FP8 E4M3 inputs with
    /// fine-grained scales — activations and gradients in 1 × 128 tiles along the contracted
    /// dimension, weights in 128 × 128 blocks, the Wgrad operands in 128 × 1 tiles (along
    /// tokens) — and the partial sum of every 128 elements of K truncated to 14 mantissa bits
    /// (the Hopper tensor-core accumulator) before it is promoted into FP32.
    Fp8,
}

/// Mantissa bits of the emulated tensor-core accumulator.
pub const FP8_ACC_MANTISSA_BITS: u32 = 14;
/// Promotion interval `N_C`.
pub const FP8_PROMOTE_EVERY: usize = 128;

/// FP8 tiles whose amax was not finite (set to NaN, so the loss shows them), since start.
pub static NONFINITE_FP8_TILES: AtomicU64 = AtomicU64::new(0);

/// What a layer needs to run: the backend, the parameters and the GEMM precision.
#[derive(Clone, Copy)]
pub struct Ctx<'a, T: Real> {
    /// The compute backend.
    pub be: &'a dyn Backend<T>,
    /// Names, shapes and offsets of the parameters.
    pub layout: &'a ParamLayout,
    /// The parameters.
    pub params: &'a [T],
    /// Number format of the linear layers' GEMMs (applies to f32 runs).
    pub precision: Precision,
    /// The expert-parallel group the routed experts are spread over (`None`: all on this
    /// process).
    pub ep: Option<&'a dyn tokenmill_comm::Communicator>,
    /// The group whose batch slices make up the global batch (`None`: the batch is all here).
    pub batch: Option<&'a dyn tokenmill_comm::Communicator>,
}

/// A copy of `x` (`rows × cols`) as the GEMM of precision `p` sees it: rounded to BF16, or
/// quantized to FP8 E4M3 with `tile` scales and written back as value × scale.
fn lowp_operand<T: Real>(
    x: &[T],
    rows: usize,
    cols: usize,
    tile: (usize, usize),
    p: Precision,
) -> Vec<T> {
    let mut y = x.to_vec();
    if let Some(v) = T::as_f32_mut(&mut y) {
        match p {
            Precision::Fp32 => {}
            Precision::Bf16 => v.iter_mut().for_each(|e| *e = round_bf16(*e)),
            Precision::Fp8 => {
                let bad = fake_quantize(
                    v,
                    rows,
                    cols,
                    tile.0,
                    tile.1,
                    Fp8Format::E4M3,
                    ScaleRounding::Exact,
                );
                if bad > 0 {
                    NONFINITE_FP8_TILES.fetch_add(bad as u64, Ordering::Relaxed);
                    tracing::warn!(bad, rows, cols, "FP8 tiles with a non-finite amax");
                }
            }
        }
    }
    y
}

/// `x` with its f32 mantissa truncated to `bits` bits.
fn truncate_mantissa(x: f32, bits: u32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    f32::from_bits(x.to_bits() & !((1u32 << (23 - bits)) - 1))
}

/// `C (+)= op(A) · op(B)` for a low-precision GEMM whose operands are already converted: for
/// FP8, K is cut into chunks of `N_C`, each chunk's product goes through the limited
/// accumulator (truncation) and is promoted (added in FP32); for BF16 one FP32 GEMM.
fn lowp_matmul<T: Real>(
    be: &dyn Backend<T>,
    p: MatMul,
    a: &[T],
    b: &[T],
    c: &mut [T],
    precision: Precision,
) {
    if precision != Precision::Fp8 || T::as_f32(a).is_none() {
        return be.matmul(p, a, b, c);
    }
    let (m, n, k) = (p.m, p.n, p.k);
    if !p.accumulate {
        c.fill(T::zero());
    }
    let mut part = vec![T::zero(); m * n];
    for k0 in (0..k).step_by(FP8_PROMOTE_EVERY) {
        let kc = FP8_PROMOTE_EVERY.min(k - k0);
        // op(A)[:, k0..k0+kc] and op(B)[k0..k0+kc, :], as contiguous row-major matrices.
        let ac: Vec<T> = if p.ta {
            a[k0 * m..(k0 + kc) * m].to_vec()
        } else {
            (0..m)
                .flat_map(|i| a[i * k + k0..i * k + k0 + kc].iter().copied())
                .collect()
        };
        let bc: Vec<T> = if p.tb {
            (0..n)
                .flat_map(|j| b[j * k + k0..j * k + k0 + kc].iter().copied())
                .collect()
        } else {
            b[k0 * n..(k0 + kc) * n].to_vec()
        };
        be.matmul(
            MatMul {
                m,
                n,
                k: kc,
                ta: p.ta,
                tb: p.tb,
                accumulate: false,
            },
            &ac,
            &bc,
            &mut part,
        );
        let (pf, cf) = (
            T::as_f32(&part).expect("f32"),
            T::as_f32_mut(c).expect("f32"),
        );
        for (cv, &pv) in cf.iter_mut().zip(pf) {
            *cv += truncate_mantissa(pv, FP8_ACC_MANTISSA_BITS);
        }
    }
}

impl<T: Real> std::fmt::Debug for Ctx<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("backend", &self.be.name())
            .field("params", &self.params.len())
            .finish()
    }
}

impl<'a, T: Real> Ctx<'a, T> {
    /// Tensor `id`.
    pub fn w(&self, id: ParamId) -> &'a [T] {
        view(self.layout, self.params, id)
    }
}

/// One deferred weight-gradient computation.
#[derive(Debug)]
pub enum WgradOp<T> {
    /// `dW[out, in] += dyᵀ · x` over `rows` rows.
    Linear {
        /// The weight.
        w: ParamId,
        /// Run in the queue's low precision (linear layers of the blocks).
        lowp: bool,
        /// Output gradient `[rows, out]`.
        dy: Vec<T>,
        /// Layer input `[rows, in]`.
        x: Buf<T>,
    },
    /// `dw[d] += Σ_rows dy · x · rstd`.
    Norm {
        /// The norm weight.
        w: ParamId,
        /// Output gradient `[rows, d]`.
        dy: Vec<T>,
        /// Norm input `[rows, d]`.
        x: Buf<T>,
        /// Saved `1/rms` per row `[rows]`.
        rstd: Buf<T>,
    },
    /// `dE[ids[t]] += dy[t]`.
    Embedding {
        /// The table.
        w: ParamId,
        /// Output gradient `[tokens, d]`.
        dy: Vec<T>,
        /// Token ids `[tokens]`.
        ids: Arc<Vec<u32>>,
    },
}

/// Pending weight gradients, in the order the backward produced them.
#[derive(Debug, Default)]
pub struct WgradQueue<T> {
    ops: Vec<WgradOp<T>>,
    /// Precision of the low-precision weight-gradient GEMMs (set by the model's backward).
    pub precision: Precision,
}

impl<T: Real> WgradQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        WgradQueue {
            ops: Vec::new(),
            precision: Precision::Fp32,
        }
    }
    /// Pending operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// Nothing pending.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// Queues one operation.
    pub fn push(&mut self, op: WgradOp<T>) {
        self.ops.push(op);
    }
    /// Moves another queue's operations to the end of this one.
    pub fn append(&mut self, other: &mut WgradQueue<T>) {
        self.ops.append(&mut other.ops);
    }
    /// Runs every pending operation, in order, accumulating into `grads`.
    pub fn flush(&mut self, be: &dyn Backend<T>, layout: &ParamLayout, grads: &mut [T]) {
        for op in self.ops.drain(..) {
            match op {
                WgradOp::Linear { w, lowp, dy, x } => {
                    let shape = &layout.specs[w].shape;
                    let (out, inp) = (shape[0], shape[1]);
                    let rows = x.len() / inp;
                    debug_assert_eq!(dy.len(), rows * out);
                    let p = MatMul {
                        m: out,
                        n: inp,
                        k: rows,
                        ta: true,
                        tb: false,
                        accumulate: true,
                    };
                    if lowp && self.precision != Precision::Fp32 {
                        // Wgrad contracts over tokens: both operands in 128 × 1 tiles.
                        let dq = lowp_operand(&dy, rows, out, (128, 1), self.precision);
                        let xq = lowp_operand(&x, rows, inp, (128, 1), self.precision);
                        lowp_matmul(be, p, &dq, &xq, view_mut(layout, grads, w), self.precision);
                    } else {
                        be.matmul(p, &dy, &x, view_mut(layout, grads, w));
                    }
                }
                WgradOp::Norm { w, dy, x, rstd } => {
                    be.rmsnorm_bwd_weight(&x, &rstd, &dy, view_mut(layout, grads, w))
                }
                WgradOp::Embedding { w, dy, ids } => {
                    let d = layout.specs[w].shape[1];
                    be.embedding_bwd(&dy, d, &ids, view_mut(layout, grads, w));
                }
            }
        }
    }
}

/// A linear map `y = x Wᵀ`, W `[out, in]`, no bias (DeepSeek-V3 has none).
#[derive(Debug, Clone, Copy)]
pub struct Linear {
    /// The weight.
    pub w: ParamId,
    /// Input features.
    pub inp: usize,
    /// Output features.
    pub out: usize,
    /// Its GEMMs follow [`Ctx::precision`] (the blocks' linear layers); `false` keeps FP32
    /// (output head, MoE gate).
    pub lowp: bool,
}

impl Linear {
    fn lowp_of<T: Real>(&self, cx: &Ctx<'_, T>) -> Option<Precision> {
        (self.lowp && cx.precision != Precision::Fp32).then_some(cx.precision)
    }
    /// `y [rows, out] = x [rows, in] · Wᵀ`.
    pub fn fwd<T: Real>(&self, cx: &Ctx<'_, T>, x: &[T]) -> Vec<T> {
        let rows = x.len() / self.inp;
        let mut y = vec![T::zero(); rows * self.out];
        let p = MatMul::linear(rows, self.out, self.inp);
        match self.lowp_of(cx) {
            None => cx.be.matmul(p, x, cx.w(self.w), &mut y),
            Some(pr) => {
                // Fprop: activations in 1 × 128 tiles along `in`, weights in 128 × 128 blocks.
                let xq = lowp_operand(x, rows, self.inp, (1, 128), pr);
                let wq = lowp_operand(cx.w(self.w), self.out, self.inp, (128, 128), pr);
                lowp_matmul(cx.be, p, &xq, &wq, &mut y, pr);
            }
        }
        y
    }
    /// `dx [rows, in] (+)= dy [rows, out] · W`.
    pub fn bwd_input_into<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        dy: &[T],
        dx: &mut [T],
        accumulate: bool,
    ) {
        let rows = dy.len() / self.out;
        let p = MatMul {
            m: rows,
            n: self.inp,
            k: self.out,
            ta: false,
            tb: false,
            accumulate,
        };
        match self.lowp_of(cx) {
            None => cx.be.matmul(p, dy, cx.w(self.w), dx),
            Some(pr) => {
                // Dgrad: output gradients in 1 × 128 tiles along `out`, the same weight blocks.
                let dq = lowp_operand(dy, rows, self.out, (1, 128), pr);
                let wq = lowp_operand(cx.w(self.w), self.out, self.inp, (128, 128), pr);
                lowp_matmul(cx.be, p, &dq, &wq, dx, pr);
            }
        }
    }
    /// `dx = dy · W`, freshly allocated.
    pub fn bwd_input<T: Real>(&self, cx: &Ctx<'_, T>, dy: &[T]) -> Vec<T> {
        let mut dx = vec![T::zero(); dy.len() / self.out * self.inp];
        self.bwd_input_into(cx, dy, &mut dx, false);
        dx
    }
    /// Queues `dW += dyᵀ x`.
    pub fn wgrad<T: Real>(&self, q: &mut WgradQueue<T>, dy: Vec<T>, x: &Buf<T>) {
        q.push(WgradOp::Linear {
            w: self.w,
            lowp: self.lowp,
            dy,
            x: x.clone(),
        });
    }
}

/// RMSNorm with a learned scale `[d]`.
#[derive(Debug, Clone, Copy)]
pub struct RmsNorm {
    /// The scale.
    pub w: ParamId,
    /// Width.
    pub d: usize,
    /// Epsilon.
    pub eps: f64,
}

impl RmsNorm {
    /// `(y, rstd)` for rows of `x`.
    pub fn fwd<T: Real>(&self, cx: &Ctx<'_, T>, x: &[T]) -> (Vec<T>, Buf<T>) {
        let rows = x.len() / self.d;
        let (mut y, mut rstd) = (vec![T::zero(); x.len()], vec![T::zero(); rows]);
        cx.be
            .rmsnorm_fwd(x, cx.w(self.w), self.eps, &mut y, &mut rstd);
        (y, Arc::new(rstd))
    }
    /// Input gradient into `dx`, and the weight gradient queued.
    #[allow(clippy::too_many_arguments)]
    pub fn bwd<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        q: &mut WgradQueue<T>,
        x: &Buf<T>,
        rstd: &Buf<T>,
        dy: Vec<T>,
        dx: &mut [T],
        accumulate: bool,
    ) {
        cx.be
            .rmsnorm_bwd_input(x, cx.w(self.w), rstd, &dy, dx, accumulate);
        q.push(WgradOp::Norm {
            w: self.w,
            dy,
            x: x.clone(),
            rstd: rstd.clone(),
        });
    }
}
