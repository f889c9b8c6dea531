//! The building blocks every layer is made of — a linear map and an RMSNorm — and the
//! weight-gradient queue that splits every backward pass in two.
//!
//! A layer's backward computes only the gradient of its input and pushes one [`WgradOp`] per
//! weight (the output gradient it saw and a shared handle to the activation it needs). The
//! queue is flushed right after the layer (plain training) or later: a DualPipe /
//! zero-bubble schedule runs the input-gradient passes of the next micro-batch first and
//! fills pipeline bubbles with the deferred weight gradients.

use std::sync::Arc;

use tokenmill_kernels::Backend;
use tokenmill_kernels::Real;
use tokenmill_kernels::cpu::matmul::MatMul;

use crate::params::{ParamId, ParamLayout, view, view_mut};

/// A shared activation buffer (kept by a layer's cache and by pending weight gradients).
pub type Buf<T> = Arc<Vec<T>>;

/// What a layer needs to run: the backend and the parameters.
#[derive(Clone, Copy)]
pub struct Ctx<'a, T: Real> {
    /// The compute backend.
    pub be: &'a dyn Backend<T>,
    /// Names, shapes and offsets of the parameters.
    pub layout: &'a ParamLayout,
    /// The parameters.
    pub params: &'a [T],
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
}

impl<T: Real> WgradQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        WgradQueue { ops: Vec::new() }
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
                WgradOp::Linear { w, dy, x } => {
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
                    be.matmul(p, &dy, &x, view_mut(layout, grads, w));
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
}

impl Linear {
    /// `y [rows, out] = x [rows, in] · Wᵀ`.
    pub fn fwd<T: Real>(&self, cx: &Ctx<'_, T>, x: &[T]) -> Vec<T> {
        let rows = x.len() / self.inp;
        let mut y = vec![T::zero(); rows * self.out];
        cx.be.matmul(
            MatMul::linear(rows, self.out, self.inp),
            x,
            cx.w(self.w),
            &mut y,
        );
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
        cx.be.matmul(p, dy, cx.w(self.w), dx);
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
