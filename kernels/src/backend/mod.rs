//! The compute-backend seam: the model calls these operations and never a kernel directly, so
//! the CUDA backend (its own issue) plugs in without touching the model. Buffers are host
//! slices for now; a device backend will get its own buffer type behind the same operations.
//!
//! - `types.rs`: the operations' argument types ([`MatMul`], [`LowpGemm`], [`RopeTable`],
//!   [`RopeRows`], [`AttnShape`], [`Route`], [`Strided`], [`Grouped`], [`AdamStep`], [`IGNORE`]), which belong
//!   to the seam and not to a backend;
//! - `cpu.rs`: two CPU backends, [`Cpu`] (fast kernels) and [`CpuReference`] (the plain loops),
//!   which the model tests run side by side;
//! - `metered.rs`: [`Metered`], any backend with the calls and bytes a device backend behind
//!   this host-slice seam copies, counted per operation; and, under residency, what a backend
//!   that kept every buffer on the device would still copy;
//! - `held.rs`: that residency model — the host pages a device holds, checked by contents.

mod cpu;
mod held;
mod metered;
mod types;

pub use cpu::{Cpu, CpuReference};
pub use metered::{ACTIVATIONS, Metered, Partial, Residency, Traffic};
pub use types::{
    AdamStep, AttnShape, Balance, DeviceCounters, FP8_ACC_MANTISSA_BITS, FP8_PROMOTE_EVERY,
    Grouped, GroupedForm, IGNORE, KeyStarts, LowpGemm, MatMul, RopeRows, RopeTable, Route, Strided,
    first_key,
};

use std::ops::Range;

use crate::real::Real;

/// The operations a model needs from a compute backend. Shapes are documented on the argument
/// types and on the CPU kernels in [`crate::cpu`].
#[allow(clippy::too_many_arguments)]
pub trait Backend<T: Real>: Send + Sync + std::fmt::Debug {
    /// Short name for logs and benchmark tables.
    fn name(&self) -> &'static str;
    /// Whether the model should move its data — head reshapes, column splits, residual adds,
    /// MoE row gathers and scatters — with this backend's [`Backend::copy`],
    /// [`Backend::gather_rows`] and [`Backend::scatter_add_rows`] (true: the data is where the
    /// backend computes, the CPU, or a device that keeps its buffers), or on the host with the
    /// same CPU kernels (false: a backend that copies every call's slices both ways, for which
    /// a host copy is cheaper than a round trip). The numbers are the same either way.
    fn moves_data(&self) -> bool {
        true
    }
    /// A device backend's copies and waits so far ([`DeviceCounters`]: the trainer logs each
    /// step's share); `None` where computing costs the host nothing of the kind (the CPU).
    fn counters(&self) -> Option<DeviceCounters> {
        None
    }
    /// Opens a deferred scope on the calling thread (scopes nest): until the matching
    /// [`Backend::settle`], operations may return before the device has done them — one wait
    /// at the scope's end instead of one per operation, so a GPU need not idle while the host
    /// launches the next. The caller reads and changes on the host none of the data those
    /// operations read or write until then — until the outermost scope closes, as an inner
    /// one does not wait: code that reads an operation's result on the host (the routing's
    /// picks) belongs outside every scope. Returns whether the backend defers (false, the
    /// default: every operation is done when it returns, and there is nothing to settle).
    fn begin_deferred(&self) -> bool {
        false
    }
    /// Closes the calling thread's innermost deferred scope; closing the outermost waits
    /// until the device has done the scope's operations. Inside a scope the low-precision
    /// GEMMs ([`Backend::matmul_lowp`], [`Backend::grouped_matmul`]) and
    /// [`Backend::fake_quantize_fp8`] may return 0 for their FP8 tiles with a non-finite amax,
    /// as reading their count would wait: closing the outermost scope returns them all (0 for
    /// an inner scope, and where nothing defers).
    fn settle(&self) -> u64 {
        0
    }
    /// `C (+)= op(A) · op(B)`.
    fn matmul(&self, p: MatMul, a: &[T], b: &[T], c: &mut [T]);
    /// `C (+)= op(A) · op(B)` as a low-precision GEMM computes it: both operands converted to
    /// `format` — rounded to BF16, or quantized to FP8 E4M3 with one scale per tile of the
    /// stored operand — then, for FP8, K cut into chunks of [`FP8_PROMOTE_EVERY`], each chunk's
    /// product truncated to [`FP8_ACC_MANTISSA_BITS`] mantissa bits (the tensor-core
    /// accumulator) and added into C in FP32 (the promotion); BF16 accumulates in FP32. Only f32
    /// is converted: in f64 this is [`Backend::matmul`].
    ///
    /// Returns the number of FP8 tiles whose amax was not finite: they cannot be scaled, so
    /// their values become NaN (the result shows them) instead of saturating silently.
    fn matmul_lowp(&self, p: MatMul, a: &[T], b: &[T], c: &mut [T], format: LowpGemm) -> u64;
    /// The grouped GEMM of the MoE experts ([`Grouped`]): every group's product in one call,
    /// each as [`Backend::matmul`] computes it alone, or as [`Backend::matmul_lowp`] in
    /// `format` (its tiles on each group's stored operands); returns the FP8 tiles whose amax was
    /// not finite (kernels/src/cpu/grouped.rs).
    fn grouped_matmul(
        &self,
        g: Grouped<'_>,
        a: &[T],
        b: &[T],
        c: &mut [T],
        format: Option<LowpGemm>,
    ) -> u64;
    /// RMSNorm forward.
    fn rmsnorm_fwd(&self, x: &[T], w: &[T], eps: f64, y: &mut [T], rstd: &mut [T]);
    /// RMSNorm input gradient.
    fn rmsnorm_bwd_input(
        &self,
        x: &[T],
        w: &[T],
        rstd: &[T],
        dy: &[T],
        dx: &mut [T],
        accumulate: bool,
    );
    /// RMSNorm weight gradient (accumulates).
    fn rmsnorm_bwd_weight(&self, x: &[T], rstd: &[T], dy: &[T], dw: &mut [T]);
    /// RoPE forward, in place.
    fn rope_fwd(&self, t: &RopeTable<T>, x: &mut [T], r: RopeRows);
    /// RoPE backward, in place.
    fn rope_bwd(&self, t: &RopeTable<T>, dx: &mut [T], r: RopeRows);
    /// SwiGLU forward.
    fn swiglu_fwd(&self, g: &[T], u: &[T], h: &mut [T]);
    /// SwiGLU backward.
    fn swiglu_bwd(&self, g: &[T], u: &[T], dh: &[T], dg: &mut [T], du: &mut [T]);
    /// Causal attention forward (reset at document boundaries when `starts` is given).
    #[allow(clippy::too_many_arguments)]
    fn attention_fwd(
        &self,
        s: AttnShape,
        starts: Option<KeyStarts<'_>>,
        q: &[T],
        k: &[T],
        v: &[T],
        o: &mut [T],
        lse: &mut [T],
    );
    /// Causal attention backward (the forward's `starts`).
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(
        &self,
        s: AttnShape,
        starts: Option<KeyStarts<'_>>,
        q: &[T],
        k: &[T],
        v: &[T],
        o: &[T],
        lse: &[T],
        d_o: &[T],
        dq: &mut [T],
        dk: &mut [T],
        dv: &mut [T],
    );
    /// Cross-entropy forward: per-row loss and log-sum-exp.
    fn cross_entropy_fwd(
        &self,
        logits: &[T],
        targets: &[u32],
        vocab: usize,
        losses: &mut [T],
        lse: &mut [T],
    );
    /// Cross-entropy backward, in place: the logits become their gradient.
    fn cross_entropy_bwd(
        &self,
        logits: &mut [T],
        targets: &[u32],
        lse: &[T],
        g: &[T],
        vocab: usize,
    );
    /// Cross-entropy forward and backward in one pass: losses and log-sum-exp out, the logits
    /// become their gradient.
    fn cross_entropy_fused(
        &self,
        logits: &mut [T],
        targets: &[u32],
        g: &[T],
        vocab: usize,
        losses: &mut [T],
        lse: &mut [T],
    );
    /// Embedding forward.
    fn embedding_fwd(&self, table: &[T], d: usize, ids: &[u32], y: &mut [T]);
    /// Embedding backward (accumulates).
    fn embedding_bwd(&self, dy: &[T], d: usize, ids: &[u32], dtable: &mut [T]);
    /// The MoE router over all tokens at once ([`Route`]; kernels/src/cpu/route.rs): scores
    /// `sigmoid(logits)` `[tokens, experts]`, each token's group-limited top-K experts of
    /// `scores + bias` in `idx` `[tokens, K]` (best first) and their gates `[tokens, K]`. One
    /// call per layer, so a device backend launches once rather than per token.
    fn route(
        &self,
        r: Route,
        logits: &[T],
        bias: &[T],
        scores: &mut [T],
        idx: &mut [u32],
        gates: &mut [T],
    );
    /// The router's backward ([`Backend::route`]'s): the gradient of the logits `ds`
    /// `[tokens, experts]` from the scores, each token's experts `idx` and their gates'
    /// gradients `dgates` `[tokens, K]`, through the gates' normalisation, the sequence-wise
    /// balance loss when given ([`Balance`]) and the sigmoid (kernels/src/cpu/route.rs).
    fn route_bwd(
        &self,
        r: Route,
        scores: &[T],
        idx: &[u32],
        dgates: &[T],
        balance: Option<Balance<'_>>,
        ds: &mut [T],
    );
    /// `x` `[rows, cols]` fake-quantized in place to FP8 E4M3 with one exact scale per `tile`
    /// (the values an FP8 transfer or GEMM computes with); returns the tiles whose amax was not
    /// finite, set to NaN. f32 only.
    fn fake_quantize_fp8(&self, x: &mut [T], cols: usize, tile: (usize, usize)) -> u64;
    /// `x` rounded to BF16 in place (kept as f32). f32 only.
    fn round_bf16(&self, x: &mut [T]);
    /// The strided copy [`Strided`]: `dst (+)= src` over a four-dimensional index space (head
    /// reshapes, column splits and concatenations, residual adds; kernels/src/cpu/strided.rs).
    fn copy(&self, c: Strided, src: &[T], dst: &mut [T]);
    /// Rows by index: `dst[i] = src[rows[i]]`, times `scale[i]` when given; src `[n, d]`, dst
    /// `[rows, d]` (a MoE expert's input rows, or its output gradient weighted by the gates;
    /// kernels/src/cpu/rows.rs).
    fn gather_rows(&self, src: &[T], d: usize, rows: &[u32], scale: Option<&[T]>, dst: &mut [T]);
    /// Rows added back by index: `dst[rows[i]] += src[i]`, times `scale[i]` when given; src
    /// `[rows, d]`, dst `[n, d]`, the rows distinct (a MoE expert's outputs weighted by their
    /// gates into the tokens' sum; its input gradient into the tokens').
    fn scatter_add_rows(
        &self,
        src: &[T],
        d: usize,
        rows: &[u32],
        scale: Option<&[T]>,
        dst: &mut [T],
    );
    /// `out[i] = Σ_c table[rows[i], c] · src[i, c]`, the terms in order from the first: each
    /// row of `src` `[rows, d]` dotted with the table row it belongs to (a MoE gate's
    /// gradient, the token's output gradient · the expert's output).
    fn dot_rows(&self, table: &[T], d: usize, rows: &[u32], src: &[T], out: &mut [T]);
    /// One AdamW step ([`AdamStep`]) over the FP32 master weights `p`, their gradients `g` and
    /// moments `m`, `v` (f32 whatever `T`), each element as its `kind` byte says: plain,
    /// decayed or frozen (kernels/src/cpu/optim.rs).
    fn adamw(
        &self,
        s: AdamStep,
        kind: &[u8],
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    );
    /// `out[i]` = Σ x² over `segments[i]`, summed in f64 in the lane order of
    /// kernels/src/cpu/optim.rs (the gradient norms).
    fn sum_squares(&self, x: &[T], segments: &[Range<usize>], out: &mut [f64]);
    /// `x[i] = v` (a step's gradients set to zero before it accumulates them). The CPU's is
    /// this default; a device that keeps its buffers fills them where they are.
    fn fill(&self, x: &mut [T], v: T) {
        x.fill(v);
    }
    /// `x[i] = x[i] · s`, one rounding each (the gradients' mean over a step's micro-batches).
    fn scale(&self, x: &mut [T], s: T) {
        x.iter_mut().for_each(|v| *v *= s);
    }
}
