//! The argument types of the [`Backend`](super::Backend) operations: what a caller describes a
//! product, a rotation, an attention call or a low-precision GEMM with. They belong to the seam,
//! not to one backend, so a device backend implements [`Backend`](super::Backend) from these
//! alone.

use crate::real::Real;

/// Target value of a cross-entropy row that carries no loss.
pub const IGNORE: u32 = u32::MAX;

/// Shape and layout of one product `C[m,n] (+)= op(A)[m,k] · op(B)[k,n]`, row-major storage.
///
/// `op(A)` is A itself when A is stored `[m,k]`, or its transpose when A is stored `[k,m]`
/// (`ta = true`); likewise B is stored `[k,n]` or `[n,k]` (`tb = true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatMul {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The contracted dimension.
    pub k: usize,
    /// A is stored `[k,m]` and used transposed.
    pub ta: bool,
    /// B is stored `[n,k]` and used transposed.
    pub tb: bool,
    /// Add into C instead of overwriting it.
    pub accumulate: bool,
}

impl MatMul {
    /// `y[m,n] = x[m,k] · W[n,k]ᵀ` (a linear layer's forward).
    pub fn linear(m: usize, n: usize, k: usize) -> Self {
        MatMul {
            m,
            n,
            k,
            ta: false,
            tb: true,
            accumulate: false,
        }
    }
    /// Floating-point operations of the product (2·m·n·k).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
    /// Panics unless A, B and C hold m·k, k·n and m·n elements.
    pub fn check<T>(&self, a: &[T], b: &[T], c: &[T]) {
        assert_eq!(a.len(), self.m * self.k, "A must hold m·k elements");
        assert_eq!(b.len(), self.k * self.n, "B must hold k·n elements");
        assert_eq!(c.len(), self.m * self.n, "C must hold m·n elements");
    }
    /// A as stored: `(rows, cols)`, `[k, m]` when transposed, else `[m, k]`.
    pub fn a_stored(&self) -> (usize, usize) {
        if self.ta {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        }
    }
    /// B as stored: `(rows, cols)`, `[n, k]` when transposed, else `[k, n]`.
    pub fn b_stored(&self) -> (usize, usize) {
        if self.tb {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        }
    }
    /// (row stride, column stride) of op(A) as an `m × k` matrix.
    pub fn a_strides(&self) -> (usize, usize) {
        if self.ta { (1, self.m) } else { (self.k, 1) }
    }
    /// (row stride, column stride) of op(B) as a `k × n` matrix.
    pub fn b_strides(&self) -> (usize, usize) {
        if self.tb { (1, self.k) } else { (self.n, 1) }
    }
}

/// The number format of a low-precision GEMM ([`Backend::matmul_lowp`](super::Backend::matmul_lowp)):
/// its operands are converted to it, products accumulate in FP32 (BF16) or in the limited
/// tensor-core accumulator promoted into FP32 (FP8). Tiles are `(rows, cols)` of the operand as
/// stored ([`MatMul::a_stored`], [`MatMul::b_stored`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowpGemm {
    /// Operands rounded to BF16 (round-to-nearest-even), FP32 accumulation.
    Bf16,
    /// Operands quantized to FP8 E4M3 with one scale (amax / 448) per tile, and the partial
    /// sum of every [`FP8_PROMOTE_EVERY`] elements of K truncated to
    /// [`FP8_ACC_MANTISSA_BITS`] mantissa bits before it is promoted (added) into FP32.
    Fp8 {
        /// Tile of A's scales.
        a_tile: (usize, usize),
        /// Tile of B's scales.
        b_tile: (usize, usize),
    },
}

/// Mantissa bits of the FP8 GEMM's tensor-core accumulator (about 14 measured on H800, per the
/// DeepSeek-V3 report).
pub const FP8_ACC_MANTISSA_BITS: u32 = 14;
/// Promotion interval `N_C` of the FP8 GEMM: elements of K summed in the limited accumulator
/// before the partial sum is added into FP32.
pub const FP8_PROMOTE_EVERY: usize = 128;

/// Rotary position embedding, DeepSeek-V3 style: cos/sin of every (position, pair) —
/// `[max_pos, d_rope/2]` each, row-major — for the interleaved channel pairs `(2i, 2i+1)` of the
/// rope part of a row, with frequency `θ_i = base^(−2i/d_rope)`.
#[derive(Debug, Clone)]
pub struct RopeTable<T> {
    /// Rotated channels per row (even).
    pub d_rope: usize,
    cos: Vec<T>,
    sin: Vec<T>,
}

impl<T: Real> RopeTable<T> {
    /// Table for positions `0..max_pos`. The inverse frequencies are computed in f32, as
    /// Hugging Face's implementation does, so f32 models agree to the last bit of the angle.
    pub fn new(d_rope: usize, base: f64, max_pos: usize) -> Self {
        assert!(d_rope.is_multiple_of(2), "d_rope must be even");
        let half = d_rope / 2;
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for i in 0..half {
                let inv = 1.0f32 / (base as f32).powf((2 * i) as f32 / d_rope as f32);
                let ang = (p as f32 * inv) as f64;
                cos.push(T::of(ang.cos()));
                sin.push(T::of(ang.sin()));
            }
        }
        RopeTable { d_rope, cos, sin }
    }

    /// Largest position + 1.
    pub fn max_pos(&self) -> usize {
        self.cos.len() / (self.d_rope / 2).max(1)
    }

    /// The cosines, `[max_pos, d_rope/2]` row-major.
    pub fn cos(&self) -> &[T] {
        &self.cos
    }

    /// The sines, `[max_pos, d_rope/2]` row-major.
    pub fn sin(&self) -> &[T] {
        &self.sin
    }
}

/// Shape of a buffer of rows to rotate: rows laid out `[tokens, heads, row_len]`, the rope part
/// of each row the slice `[offset, offset + d_rope)`, token `t` at position `t % seq`.
#[derive(Debug, Clone, Copy)]
pub struct RopeRows {
    /// Sequence length (positions restart every `seq` tokens).
    pub seq: usize,
    /// Rows per token.
    pub heads: usize,
    /// Elements per row.
    pub row_len: usize,
    /// Start of the rotated part within a row.
    pub offset: usize,
}

/// Attention reset at document boundaries: packed documents (or conversations) that must not
/// see each other. `first[b · S + i]` is the first key position query `i` of sample `b` may
/// attend to (`first ≤ i`; 0 everywhere is plain causal attention); the `heads` consecutive
/// rows of BH belonging to one sample share it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyStarts<'a> {
    /// Heads per sample (BH = samples × heads).
    pub heads: usize,
    /// First allowed key of every query `[samples, S]`.
    pub first: &'a [u32],
}

impl<'a> KeyStarts<'a> {
    /// The first allowed keys of row `h` of BH (`[S]`).
    pub fn row(&self, h: usize, seq: usize) -> &'a [u32] {
        let b = h / self.heads;
        &self.first[b * seq..(b + 1) * seq]
    }
}

/// The first allowed key of query `i` of BH row `h` (0 without a reset).
pub fn first_key(starts: Option<KeyStarts<'_>>, h: usize, seq: usize, i: usize) -> usize {
    starts.map_or(0, |k| k.first[(h / k.heads) * seq + i] as usize)
}

/// Dimensions of one causal attention call. Layout: q, k `[BH, S, d_qk]`, v `[BH, S, d_v]`,
/// o `[BH, S, d_v]`, log-sum-exp `[BH, S]`, where BH = batch × heads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnShape {
    /// batch × heads.
    pub bh: usize,
    /// Sequence length.
    pub seq: usize,
    /// Query/key head dim.
    pub d_qk: usize,
    /// Value head dim.
    pub d_v: usize,
    /// Softmax scale (1/sqrt(d_qk) for DeepSeek-V3 without YaRN).
    pub scale: f64,
}

/// The DeepSeek-V3 router's settings (§2.1.2; `n_routed_experts`, `n_group`, `topk_group`,
/// `num_experts_per_tok`, `routed_scaling_factor`, `norm_topk_prob` of the model config).
/// Layout: logits and scores `[tokens, experts]`, bias `[experts]`, idx and gates `[tokens, k]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route {
    /// Routed experts per row.
    pub experts: usize,
    /// Expert groups (1: no group limit); they divide the experts.
    pub groups: usize,
    /// Groups a token may route to.
    pub topk_groups: usize,
    /// Experts per token K.
    pub k: usize,
    /// `routed_scaling_factor`.
    pub scale: f64,
    /// `norm_topk_prob`: the gates of a token's experts normalised to sum to `scale`.
    pub norm: bool,
}

/// The complementary sequence-wise balance loss of a router's backward (DeepSeek-V3 §2.1.2,
/// `L = (1/B) Σ_b Σ_i c_{b,i} · (1/S) Σ_t s_{t,i}/Σ_j s_{t,j}`): `coef` `[b, experts]` holds
/// `α·f_{b,i}` per sequence of this batch slice (the counts come from the routing, so the host
/// computes them), `seq` tokens per sequence, and `sequences` B in the whole batch (all
/// data-parallel slices).
#[derive(Debug, Clone, Copy)]
pub struct Balance<'a> {
    /// `α·f_{b,i}` `[b, experts]`.
    pub coef: &'a [f64],
    /// Tokens per sequence S.
    pub seq: usize,
    /// Sequences in the whole batch B.
    pub sequences: usize,
}

impl Route {
    /// DeepSeek-V3's router: 256 experts in 8 groups, 4 groups and 8 experts per token, gates
    /// normalised and scaled by 2.5.
    pub const DEEPSEEK_V3: Route = Route {
        experts: 256,
        groups: 8,
        topk_groups: 4,
        k: 8,
        scale: 2.5,
        norm: true,
    };

    /// Tokens in `logits`, after checking every buffer's length and the settings.
    ///
    /// # Panics
    /// When a buffer's length does not match the settings, K exceeds the experts, or the groups
    /// do not divide the experts.
    pub fn tokens<T>(
        &self,
        logits: &[T],
        bias: &[T],
        scores: &[T],
        idx: &[u32],
        gates: &[T],
    ) -> usize {
        let (e, k) = (self.experts, self.k);
        assert!(e > 0 && k > 0 && k <= e, "route: K = {k} of {e} experts");
        assert!(
            self.groups >= 1 && e % self.groups == 0 && self.topk_groups >= 1,
            "route: {} groups of {e} experts, {} kept",
            self.groups,
            self.topk_groups
        );
        assert_eq!(logits.len() % e, 0, "route: logits not [tokens, {e}]");
        let n = logits.len() / e;
        assert_eq!(bias.len(), e, "route: bias");
        assert_eq!(scores.len(), n * e, "route: scores");
        assert_eq!(idx.len(), n * k, "route: idx");
        assert_eq!(gates.len(), n * k, "route: gates");
        n
    }
}

/// A strided copy over an index space of four dimensions, outermost first (unused leading
/// ones have extent 1): for every index `i`, in lexicographic order,
///
/// ```text
/// dst[dst_at + Σ i_d·dst_d]  =  src[src_at + Σ i_d·src_d]      (+= when `accumulate`)
/// ```
///
/// The head reshapes, column splits and concatenations of a model's layers, and its residual
/// adds, as one seam operation, so that a device backend moves them on the device. A source
/// stride 0 repeats (broadcasts) a value; a destination stride 0 sums over that dimension,
/// which needs `accumulate` — the terms are then added one by one in index order, so every
/// backend gives the same bits. Over the other dimensions the destination elements must be
/// distinct ([`Strided::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strided {
    /// Extents, outermost first.
    pub dims: [usize; 4],
    /// Source strides (elements).
    pub src: [usize; 4],
    /// First source element.
    pub src_at: usize,
    /// Destination strides (elements; 0: a sum over the dimension).
    pub dst: [usize; 4],
    /// First destination element.
    pub dst_at: usize,
    /// Add into the destination instead of overwriting it.
    pub accumulate: bool,
}

impl Strided {
    /// Row-major strides of `dims`.
    pub fn dense(dims: [usize; 4]) -> [usize; 4] {
        [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1]
    }

    /// `dst[..n] (+)= src[..n]`: a plain copy, or with `accumulate` an elementwise add.
    pub fn elementwise(n: usize, accumulate: bool) -> Self {
        Strided {
            dims: [1, 1, 1, n],
            src: [0, 0, 0, 1],
            src_at: 0,
            dst: [0, 0, 0, 1],
            dst_at: 0,
            accumulate,
        }
    }

    /// Columns `src_col .. src_col + cols` of the `rows` rows of a `[rows, src_w]` matrix into
    /// columns `dst_col ..` of a `[rows, dst_w]` one: a column split or one part of a
    /// concatenation.
    pub fn columns(
        rows: usize,
        cols: usize,
        (src_w, src_col): (usize, usize),
        (dst_w, dst_col): (usize, usize),
    ) -> Self {
        Strided {
            dims: [1, 1, rows, cols],
            src: [0, 0, src_w, 1],
            src_at: src_col,
            dst: [0, 0, dst_w, 1],
            dst_at: dst_col,
            accumulate: false,
        }
    }

    /// Elements the index space visits.
    pub fn count(&self) -> usize {
        self.dims.iter().product()
    }

    /// Whether dimension `d` sums (a destination stride 0 over more than one index).
    pub fn sums(&self, d: usize) -> bool {
        self.dst[d] == 0 && self.dims[d] > 1
    }

    /// Elements of the destination written (the index space without its summed dimensions).
    pub fn written(&self) -> usize {
        (0..4)
            .filter(|&d| !self.sums(d))
            .map(|d| self.dims[d])
            .product()
    }

    /// Whether the copy overwrites all `dst_len` elements of the destination, so that a device
    /// backend need not copy the destination in first.
    pub fn covers(&self, dst_len: usize) -> bool {
        !self.accumulate && self.written() == dst_len
    }

    /// Offsets of the last source and destination elements plus one (0 for an empty copy).
    pub fn ends(&self) -> (usize, usize) {
        if self.count() == 0 {
            return (0, 0);
        }
        let last = |s: &[usize; 4], at: usize| {
            at + (0..4).map(|d| (self.dims[d] - 1) * s[d]).sum::<usize>() + 1
        };
        (last(&self.src, self.src_at), last(&self.dst, self.dst_at))
    }

    /// Panics unless both ends lie in the slices, a summed dimension comes with `accumulate`,
    /// and no two indices outside the summed dimensions write the same destination element
    /// (checked as: the written dimensions' strides, in increasing order, each step past
    /// everything the smaller ones reach).
    pub fn check(&self, src_len: usize, dst_len: usize) {
        let (s, d) = self.ends();
        assert!(s <= src_len, "strided copy reads element {s} of {src_len}");
        assert!(d <= dst_len, "strided copy writes element {d} of {dst_len}");
        assert!(
            self.accumulate || (0..4).all(|d| !self.sums(d)),
            "a destination stride 0 sums, which needs accumulate"
        );
        let mut dims: Vec<(usize, usize)> = (0..4)
            .filter(|&d| self.dims[d] > 1 && self.dst[d] > 0)
            .map(|d| (self.dst[d], self.dims[d]))
            .collect();
        dims.sort_unstable();
        let mut reach = 0;
        for (stride, extent) in dims {
            assert!(
                stride > reach,
                "strided copy writes a destination element twice ({:?})",
                self
            );
            reach += (extent - 1) * stride;
        }
    }
}

/// One AdamW update's scalars as the kernels use them, in f32 (kernels/src/cpu/optim.rs):
/// computed by [`AdamStep::new`] from the optimizer's f64 settings, then rounded once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
    /// `√(1 − β₂ᵗ)`.
    pub bc2_sqrt: f32,
    /// `1 − lr · weight_decay`, the decoupled decay of [`AdamStep::DECAYED`] elements.
    pub decay: f32,
    /// The factor on every gradient first (the clip scale).
    pub grad_scale: f32,
    /// Store the moments rounded to BF16 (DeepSeek-V3 §3.3.3).
    pub bf16_moments: bool,
}

impl AdamStep {
    /// The `kind` byte of an element updated without weight decay (norms, embeddings).
    pub const PLAIN: u8 = 0;
    /// An element updated with weight decay (linear weights).
    pub const DECAYED: u8 = 1;
    /// An element not updated at all (buffers: the MoE routing bias).
    pub const FROZEN: u8 = 2;

    /// The scalars of update number `t` (1-based) with learning rate `lr` and the gradients
    /// scaled by `grad_scale`, computed in f64 and rounded to f32 once.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        lr: f64,
        t: u64,
        grad_scale: f64,
        bf16_moments: bool,
    ) -> Self {
        let t = i32::try_from(t).unwrap_or(i32::MAX);
        AdamStep {
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            eps: eps as f32,
            step_size: (lr / (1.0 - beta1.powi(t))) as f32,
            bc2_sqrt: (1.0 - beta2.powi(t)).sqrt() as f32,
            decay: (1.0 - lr * weight_decay) as f32,
            grad_scale: grad_scale as f32,
            bf16_moments,
        }
    }
}

/// Which product a grouped GEMM computes for each group ([`Grouped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupedForm {
    /// `C[rows_e, n] (+)= A[rows_e, k] · W_eᵀ`, `W_e` `[n, k]` in B: the experts' forward.
    Forward,
    /// `C[rows_e, n] (+)= A[rows_e, k] · W_e`, `W_e` `[k, n]` in B: their input gradient.
    Input,
    /// `W_e[n, k] (+)= A_eᵀ · B_e` over the group's rows, A `[rows, n]` and B `[rows, k]`, the
    /// blocks `W_e` in C: their weight gradient.
    Weight,
}

/// A grouped GEMM (the MoE experts, each on its own rows): group `e` owns rows
/// `offsets[e] .. offsets[e + 1]` of the row operands and the weight block `W_e`, which starts
/// `e · stride` elements into the weight buffer (an expert's projection among its others).
#[derive(Debug, Clone, Copy)]
pub struct Grouped<'a> {
    /// The product per group.
    pub form: GroupedForm,
    /// `groups + 1` row offsets, from 0, not decreasing.
    pub offsets: &'a [usize],
    /// Columns of C (rows of `W_e` for [`GroupedForm::Weight`]).
    pub n: usize,
    /// The contracted dimension (columns of `W_e` for [`GroupedForm::Weight`]).
    pub k: usize,
    /// Elements from one weight block to the next (at least `n · k`).
    pub stride: usize,
    /// Add into C instead of overwriting it.
    pub accumulate: bool,
}

impl Grouped<'_> {
    /// Groups.
    pub fn groups(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    /// Rows over all groups.
    pub fn rows(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0)
    }
    /// The most rows of one group.
    pub fn most_rows(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
    /// Elements of the weight buffer: the first block's start to the last one's end.
    pub fn weights_len(&self) -> usize {
        match self.groups() {
            0 => 0,
            g => (g - 1) * self.stride + self.n * self.k,
        }
    }
    /// The elements A, B and C must hold: the rows' operands and the weight buffer.
    pub fn lens(&self) -> [usize; 3] {
        let (rows, w) = (self.rows(), self.weights_len());
        match self.form {
            GroupedForm::Forward | GroupedForm::Input => [rows * self.k, w, rows * self.n],
            GroupedForm::Weight => [rows * self.n, rows * self.k, w],
        }
    }
    /// Group `e`'s weight block in the weight buffer.
    pub fn block(&self, e: usize) -> std::ops::Range<usize> {
        e * self.stride..e * self.stride + self.n * self.k
    }
}

/// What a device backend has cost the host so far in this process: copies between host and
/// device memory, and the waits for the device (cumulative; subtract two readings for a span,
/// such as a training step: [`Backend::counters`](super::Backend::counters)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceCounters {
    /// Copies between host and device memory, either way.
    pub copies: u64,
    /// Bytes copied to the device.
    pub to_device: u64,
    /// Bytes copied to the host.
    pub to_host: u64,
    /// Stream synchronisations: each one empties the device's queue, which then idles until
    /// the host launches again.
    pub waits: u64,
    /// Nanoseconds the host spent blocked on the device: in those synchronisations and in the
    /// copies (a copy from or to pageable memory returns once it is done).
    pub blocked_ns: u64,
}

impl std::ops::Sub for DeviceCounters {
    type Output = DeviceCounters;
    fn sub(self, o: DeviceCounters) -> DeviceCounters {
        DeviceCounters {
            copies: self.copies - o.copies,
            to_device: self.to_device - o.to_device,
            to_host: self.to_host - o.to_host,
            waits: self.waits - o.waits,
            blocked_ns: self.blocked_ns - o.blocked_ns,
        }
    }
}
