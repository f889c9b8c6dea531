//! The building blocks every layer is made of — a linear map and an RMSNorm — and the
//! weight-gradient queue that splits every backward pass in two. A linear layer's BF16 and FP8
//! GEMMs are the backend's ([`Backend::matmul_lowp`]); the FP8 tiles they find with a
//! non-finite amax are counted per pass ([`NonFiniteTiles`], [`WgradQueue::nonfinite_fp8_tiles`]).
//!
//! A layer's backward computes only the gradient of its input and pushes one [`WgradOp`] per
//! weight (the output gradient it saw and a shared handle to the activation it needs). The
//! queue is flushed right after the layer (plain training) or later: a DualPipe /
//! zero-bubble schedule runs the input-gradient passes of the next micro-batch first and
//! fills pipeline bubbles with the deferred weight gradients.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokenmill_kernels::Real;
use tokenmill_kernels::backend::{Backend, Grouped, GroupedForm, LowpGemm, MatMul, Strided};
use tokenmill_kernels::cpu::lowp;
use tokenmill_kernels::cpu::rows as cpu_rows;
use tokenmill_kernels::cpu::strided;

use crate::params::{ParamId, ParamLayout, view, view_mut};

/// A shared activation buffer (kept by a layer's cache and by pending weight gradients).
pub type Buf<T> = Arc<Vec<T>>;

/// The number format of the linear layers' GEMMs (DeepSeek-V3 §3.3). Master weights,
/// gradients and everything outside the linear layers (embedding, MoE gate, norms, attention)
/// stay FP32 whatever the precision; the output head follows BF16 and stays FP32 under FP8
/// ([`LowpUse`]).
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

/// FP8 tiles whose amax was not finite (set to NaN, so the loss shows them), counted over one
/// pass — a forward, a backward, a queue's flush — by the low-precision GEMMs, from whichever
/// thread runs them.
#[derive(Debug, Default)]
pub struct NonFiniteTiles(AtomicU64);

impl NonFiniteTiles {
    /// Adds `n` tiles.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Tiles counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

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
    /// Where the pass's low-precision GEMMs count their FP8 tiles with a non-finite amax.
    pub nonfinite: &'a NonFiniteTiles,
    /// Attention reset at document boundaries: the first position of each position's
    /// document in its sequence `[b, s]` ([`crate::Batch::starts`]); `None`: plain causal.
    pub key_starts: Option<&'a [u32]>,
}

impl Precision {
    /// The backend's low-precision GEMM for this precision with FP8 scales in `a_tile` and
    /// `b_tile` tiles of the stored operands (`None`: FP32, the plain GEMM).
    pub fn gemm(self, a_tile: (usize, usize), b_tile: (usize, usize)) -> Option<LowpGemm> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(LowpGemm::Bf16),
            Precision::Fp8 => Some(LowpGemm::Fp8 { a_tile, b_tile }),
        }
    }
}

/// A low-precision GEMM's count of FP8 tiles with a non-finite amax, warned about when any.
fn warn_nonfinite(bad: u64, p: MatMul) -> u64 {
    if bad > 0 {
        tracing::warn!(
            bad,
            m = p.m,
            n = p.n,
            k = p.k,
            "FP8 tiles with a non-finite amax"
        );
    }
    bad
}

/// [`warn_nonfinite`] for a grouped GEMM.
fn warn_grouped(bad: u64, g: &Grouped<'_>) -> u64 {
    if bad > 0 {
        tracing::warn!(
            bad,
            experts = g.groups(),
            rows = g.rows(),
            n = g.n,
            k = g.k,
            "FP8 tiles with a non-finite amax in a grouped GEMM"
        );
    }
    bad
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
    /// Runs `f` as one deferred scope of the backend ([`deferred`]), its GEMMs' non-finite
    /// FP8 tiles counted in [`Ctx::nonfinite`].
    pub fn deferred<R>(&self, f: impl FnOnce() -> R) -> R {
        let (r, bad) = deferred(self.be, f);
        self.nonfinite.add(bad);
        r
    }
    /// The strided copy `dst (+)= src` ([`Strided`]), where [`Backend::moves_data`] says: on
    /// the backend, or on the host with the same CPU kernel.
    pub fn copy(&self, c: Strided, src: &[T], dst: &mut [T]) {
        if self.be.moves_data() {
            self.be.copy(c, src, dst)
        } else {
            strided::copy(c, src, dst)
        }
    }
    /// `dst[i] = src[rows[i]] (· scale[i])` ([`Backend::gather_rows`]), on the backend or on
    /// the host as [`Ctx::copy`].
    pub fn gather_rows(
        &self,
        src: &[T],
        d: usize,
        rows: &[u32],
        scale: Option<&[T]>,
        dst: &mut [T],
    ) {
        if self.be.moves_data() {
            self.be.gather_rows(src, d, rows, scale, dst)
        } else {
            cpu_rows::gather_rows(src, d, rows, scale, dst)
        }
    }
    /// `dst[rows[i]] += src[i] (· scale[i])` ([`Backend::scatter_add_rows`]), on the backend or
    /// on the host as [`Ctx::copy`].
    pub fn scatter_add_rows(
        &self,
        src: &[T],
        d: usize,
        rows: &[u32],
        scale: Option<&[T]>,
        dst: &mut [T],
    ) {
        if self.be.moves_data() {
            self.be.scatter_add_rows(src, d, rows, scale, dst)
        } else {
            cpu_rows::scatter_add_rows(src, d, rows, scale, dst)
        }
    }
    /// `out[i] = table[rows[i]] · src[i]` ([`Backend::dot_rows`]), on the backend or on the
    /// host as [`Ctx::copy`].
    pub fn dot_rows(&self, table: &[T], d: usize, rows: &[u32], src: &[T], out: &mut [T]) {
        if self.be.moves_data() {
            self.be.dot_rows(table, d, rows, src, out)
        } else {
            cpu_rows::dot_rows(table, d, rows, src, out)
        }
    }
    /// `x` `[rows, cols]` fake-quantized to FP8 E4M3 in `tile`s in place
    /// ([`Backend::fake_quantize_fp8`]), on the backend or on the host as [`Ctx::copy`]; the
    /// tiles with a non-finite amax are counted in [`Ctx::nonfinite`].
    pub fn fake_quantize_fp8(&self, x: &mut [T], cols: usize, tile: (usize, usize)) {
        let bad = if self.be.moves_data() {
            self.be.fake_quantize_fp8(x, cols, tile)
        } else {
            lowp::fake_quantize_fp8(x, cols, tile)
        };
        if bad > 0 {
            tracing::warn!(
                bad,
                cols,
                "FP8 tiles with a non-finite amax in an FP8 transfer"
            );
        }
        self.nonfinite.add(bad);
    }
    /// `x` rounded to BF16 in place ([`Backend::round_bf16`]), on the backend or on the host.
    pub fn round_bf16(&self, x: &mut [T]) {
        if self.be.moves_data() {
            self.be.round_bf16(x)
        } else {
            lowp::round_bf16_all(x)
        }
    }
    /// A copy of `x` made where [`Ctx::copy`] makes it (a host clone of a buffer a device
    /// keeps would bring it back across).
    pub fn duplicate(&self, x: &[T]) -> Vec<T> {
        let mut y = vec![T::zero(); x.len()];
        self.copy(Strided::elementwise(x.len(), false), x, &mut y);
        y
    }
    /// Tensor `id`.
    pub fn w(&self, id: ParamId) -> &'a [T] {
        view(self.layout, self.params, id)
    }
    /// `C (+)= op(A) · op(B)` in the low-precision `g`, its non-finite FP8 tiles counted in
    /// [`Ctx::nonfinite`].
    fn matmul_lowp(&self, p: MatMul, a: &[T], b: &[T], c: &mut [T], g: LowpGemm) {
        let bad = self.be.matmul_lowp(p, a, b, c, g);
        self.nonfinite.add(warn_nonfinite(bad, p));
    }
}

/// Runs `f` as one deferred scope of `be` ([`Backend::begin_deferred`]): its operations may
/// return before the device has done them, and the scope's end waits once. `f` must not read
/// or change on the host any data its operations read or write (its code between operations is
/// shapes and bookkeeping only). Returns `f`'s value and the FP8 tiles with a non-finite amax
/// that the scope's GEMMs counted on the device and its end read ([`Backend::settle`]; they
/// returned 0).
pub fn deferred<T: Real, R>(be: &dyn Backend<T>, f: impl FnOnce() -> R) -> (R, u64) {
    /// Closes the scope if `f` unwinds (a caught panic must not leave the thread deferring).
    struct Unwind<'b, T: Real>(Option<&'b dyn Backend<T>>);
    impl<T: Real> Drop for Unwind<'_, T> {
        fn drop(&mut self) {
            if let Some(be) = self.0.take() {
                be.settle();
            }
        }
    }
    if !be.begin_deferred() {
        return (f(), 0);
    }
    let mut unwind = Unwind(Some(be));
    let r = f();
    unwind.0 = None;
    let bad = be.settle();
    if bad > 0 {
        tracing::warn!(bad, "FP8 tiles with a non-finite amax in a deferred scope");
    }
    (r, bad)
}

/// One deferred weight-gradient computation.
#[derive(Debug)]
pub enum WgradOp<T> {
    /// `dW[out, in] += dyᵀ · x` over `rows` rows.
    Linear {
        /// The weight.
        w: ParamId,
        /// Which of the queue's low precisions apply.
        lowp: LowpUse,
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
    /// `dW_e[out, in] += dy_eᵀ · x_e` for every routed expert `e` on its rows (a grouped GEMM):
    /// `w` is the first expert's weight, the others `stride` elements apart.
    Grouped {
        /// The first expert's weight.
        w: ParamId,
        /// Elements from one expert's weight to the next one's.
        stride: usize,
        /// Each expert's rows: `offsets[e] .. offsets[e + 1]`.
        offsets: Arc<Vec<usize>>,
        /// Which of the queue's low precisions apply.
        lowp: LowpUse,
        /// Output gradient `[rows, out]`.
        dy: Vec<T>,
        /// Layer input `[rows, in]`.
        x: Buf<T>,
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
    /// FP8 tiles with a non-finite amax in the GEMMs of this queue's backward passes and
    /// flushes.
    nonfinite: u64,
}

impl<T: Real> WgradQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        WgradQueue {
            ops: Vec::new(),
            precision: Precision::Fp32,
            nonfinite: 0,
        }
    }
    /// FP8 tiles with a non-finite amax counted so far: in the weight-gradient GEMMs this
    /// queue ran, in the backward passes that filled it, and in queues appended to it.
    pub fn nonfinite_fp8_tiles(&self) -> u64 {
        self.nonfinite
    }
    /// Adds `n` FP8 tiles with a non-finite amax (a backward's input-gradient GEMMs).
    pub fn count_nonfinite_fp8_tiles(&mut self, n: u64) {
        self.nonfinite += n;
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
        self.nonfinite += std::mem::take(&mut other.nonfinite);
    }
    /// Runs every pending operation, in order, accumulating into `grads`: one deferred scope
    /// ([`deferred`]), as nothing here reads a result on the host.
    pub fn flush(&mut self, be: &dyn Backend<T>, layout: &ParamLayout, grads: &mut [T]) {
        let (ops, precision) = (&mut self.ops, self.precision);
        let (counted, at_end) = deferred(be, || {
            Self::run(precision, ops.drain(..), be, layout, grads)
        });
        self.nonfinite += counted + at_end;
    }
    /// Runs `ops` in order, accumulating into `grads`; returns the FP8 tiles with a non-finite
    /// amax.
    fn run(
        precision: Precision,
        ops: impl Iterator<Item = WgradOp<T>>,
        be: &dyn Backend<T>,
        layout: &ParamLayout,
        grads: &mut [T],
    ) -> u64 {
        let mut nonfinite = 0;
        for op in ops {
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
                    // Wgrad contracts over tokens: both operands in 128 × 1 tiles.
                    match precision
                        .gemm((128, 1), (128, 1))
                        .filter(|g| lowp.admits(g))
                    {
                        Some(g) => {
                            let bad = be.matmul_lowp(p, &dy, &x, view_mut(layout, grads, w), g);
                            nonfinite += warn_nonfinite(bad, p);
                        }
                        None => be.matmul(p, &dy, &x, view_mut(layout, grads, w)),
                    }
                    // The output gradient's last use (the head's is the step's largest buffer).
                    crate::recycle::recycle(dy);
                }
                WgradOp::Grouped {
                    w,
                    stride,
                    offsets,
                    lowp,
                    dy,
                    x,
                } => {
                    let shape = &layout.specs[w].shape;
                    let g = Grouped {
                        form: GroupedForm::Weight,
                        offsets: &offsets,
                        n: shape[0],
                        k: shape[1],
                        stride,
                        accumulate: true,
                    };
                    let start = layout.specs[w].range.start;
                    let dw = &mut grads[start..start + g.weights_len()];
                    let format = precision
                        .gemm((128, 1), (128, 1))
                        .filter(|f| lowp.admits(f));
                    let bad = be.grouped_matmul(g, &dy, &x, dw, format);
                    nonfinite += warn_grouped(bad, &g);
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
        nonfinite
    }
}

/// Which low precisions a linear layer's GEMMs follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowpUse {
    /// BF16 and FP8 (the blocks' linear layers).
    All,
    /// BF16 only; an FP8 run keeps these GEMMs in FP32 (the output head: DeepSeek-V3 keeps it
    /// out of FP8; in BF16 it is most of the step's GEMM work).
    Bf16,
    /// FP32 whatever the precision (the MoE gate).
    Never,
}

impl LowpUse {
    /// Whether a GEMM in `g` applies to this layer.
    pub fn admits(self, g: &LowpGemm) -> bool {
        match self {
            LowpUse::All => true,
            LowpUse::Bf16 => matches!(g, LowpGemm::Bf16),
            LowpUse::Never => false,
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
    /// Which of [`Ctx::precision`]'s low-precision GEMMs this layer uses.
    pub lowp: LowpUse,
}

impl Linear {
    /// The low-precision GEMM of this layer with FP8 scales in `a_tile` and `b_tile` tiles
    /// (`None`: FP32).
    fn lowp_of<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        a_tile: (usize, usize),
        b_tile: (usize, usize),
    ) -> Option<LowpGemm> {
        cx.precision
            .gemm(a_tile, b_tile)
            .filter(|g| self.lowp.admits(g))
    }
    /// `y [rows, out] = x [rows, in] · Wᵀ`.
    pub fn fwd<T: Real>(&self, cx: &Ctx<'_, T>, x: &[T]) -> Vec<T> {
        let rows = x.len() / self.inp;
        // Written whole by the GEMM (`accumulate = false`): a recycled buffer needs no clearing.
        let mut y = crate::recycle::overwritable(rows * self.out);
        let p = MatMul::linear(rows, self.out, self.inp);
        // Fprop: activations in 1 × 128 tiles along `in`, weights in 128 × 128 blocks.
        match self.lowp_of(cx, (1, 128), (128, 128)) {
            None => cx.be.matmul(p, x, cx.w(self.w), &mut y),
            Some(g) => cx.matmul_lowp(p, x, cx.w(self.w), &mut y, g),
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
        // Dgrad: output gradients in 1 × 128 tiles along `out`, the same weight blocks.
        match self.lowp_of(cx, (1, 128), (128, 128)) {
            None => cx.be.matmul(p, dy, cx.w(self.w), dx),
            Some(g) => cx.matmul_lowp(p, dy, cx.w(self.w), dx, g),
        }
    }
    /// `dx = dy · W`, freshly allocated.
    pub fn bwd_input<T: Real>(&self, cx: &Ctx<'_, T>, dy: &[T]) -> Vec<T> {
        let mut dx = vec![T::zero(); dy.len() / self.out * self.inp];
        self.bwd_input_into(cx, dy, &mut dx, false);
        dx
    }
    /// This layer as the first routed expert's projection, the others' `stride` elements
    /// apart: the grouped GEMM over `offsets` in `form`, and the weights it reads.
    fn grouped<'o, T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        form: GroupedForm,
        stride: usize,
        offsets: &'o [usize],
        accumulate: bool,
    ) -> (Grouped<'o>, std::ops::Range<usize>) {
        let (n, k) = match form {
            GroupedForm::Input => (self.inp, self.out),
            _ => (self.out, self.inp),
        };
        let g = Grouped {
            form,
            offsets,
            n,
            k,
            stride,
            accumulate,
        };
        let start = cx.layout.specs[self.w].range.start;
        (g, start..start + g.weights_len())
    }
    /// Every expert's forward at once: `y [rows, out]`, expert `e` (this layer's weight plus
    /// `e · stride`) on rows `offsets[e] .. offsets[e + 1]` of `x [rows, in]` — each as
    /// [`Linear::fwd`] computes it alone.
    pub fn fwd_grouped<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        stride: usize,
        offsets: &[usize],
        x: &[T],
    ) -> Vec<T> {
        let (g, w) = self.grouped(cx, GroupedForm::Forward, stride, offsets, false);
        let mut y = crate::recycle::overwritable(g.rows() * self.out);
        let format = self.lowp_of(cx, (1, 128), (128, 128));
        let bad = cx.be.grouped_matmul(g, x, &cx.params[w], &mut y, format);
        cx.nonfinite.add(warn_grouped(bad, &g));
        y
    }
    /// Every expert's input gradient at once, `dx [rows, in] (+)= dy · W_e` per expert, as
    /// [`Linear::bwd_input_into`] computes it alone.
    pub fn bwd_input_grouped_into<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        stride: usize,
        offsets: &[usize],
        dy: &[T],
        dx: &mut [T],
        accumulate: bool,
    ) {
        let (g, w) = self.grouped(cx, GroupedForm::Input, stride, offsets, accumulate);
        let format = self.lowp_of(cx, (1, 128), (128, 128));
        let bad = cx.be.grouped_matmul(g, dy, &cx.params[w], dx, format);
        cx.nonfinite.add(warn_grouped(bad, &g));
    }
    /// Queues every expert's `dW_e += dy_eᵀ x_e` as one grouped GEMM.
    pub fn wgrad_grouped<T: Real>(
        &self,
        q: &mut WgradQueue<T>,
        stride: usize,
        offsets: &Arc<Vec<usize>>,
        dy: Vec<T>,
        x: &Buf<T>,
    ) {
        q.push(WgradOp::Grouped {
            w: self.w,
            stride,
            offsets: offsets.clone(),
            lowp: self.lowp,
            dy,
            x: x.clone(),
        });
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
