//! Multi-head Latent Attention (DeepSeek-V2/V3).
//!
//! With N = batch·seq tokens, H heads, per-head dims `nope`, `rope`, `v`, and x `[N, d]`:
//!
//! ```text
//! q      = q_b(RMSNorm(q_a(x)))             [N, H·(nope+rope)]   (q_proj(x) if q_lora_rank = 0)
//! kv_a   = kv_a_proj_with_mqa(x)             [N, kv_lora + rope]
//! c_kv   = RMSNorm(kv_a[:, :kv_lora])        [N, kv_lora]          the joint key-value latent
//! k_pe   = RoPE(kv_a[:, kv_lora:])           [N, rope]             one RoPE key shared by all heads
//! kv     = kv_b(c_kv)                        [N, H·(nope+v)]
//! Q_h    = [q_nope_h, RoPE(q_pe_h)]          K_h = [k_nope_h, k_pe]    V_h = v_h
//! o      = o_proj(concat_h softmax(Q_h K_hᵀ / sqrt(nope+rope) + causal) V_h)      [N, d]
//! ```

use std::sync::Arc;

use tokenmill_kernels::Real;
use tokenmill_kernels::backend::{AttnShape, KeyStarts, RopeRows, RopeTable, Strided};

use crate::ops::{Buf, Ctx, Linear, RmsNorm, WgradQueue};

/// The query path.
#[derive(Debug, Clone, Copy)]
pub enum QProj {
    /// `q_proj` `[H·(nope+rope), d]`.
    Plain(Linear),
    /// `q_a_proj` `[q_lora, d]`, `q_a_layernorm` `[q_lora]`, `q_b_proj` `[H·(nope+rope), q_lora]`.
    Lora {
        /// Down projection.
        a: Linear,
        /// Norm of the query latent.
        norm: RmsNorm,
        /// Up projection.
        b: Linear,
    },
}

/// One MLA layer.
#[derive(Debug, Clone, Copy)]
pub struct Mla {
    /// Query path.
    pub q: QProj,
    /// `kv_a_proj_with_mqa` `[kv_lora + rope, d]`.
    pub kv_a: Linear,
    /// `kv_a_layernorm` `[kv_lora]`.
    pub kv_norm: RmsNorm,
    /// `kv_b_proj` `[H·(nope+v), kv_lora]`.
    pub kv_b: Linear,
    /// `o_proj` `[d, H·v]`.
    pub o: Linear,
    /// Heads.
    pub heads: usize,
    /// Per-head dims without RoPE.
    pub nope: usize,
    /// Per-head RoPE dims.
    pub rope: usize,
    /// Per-head value dims.
    pub v: usize,
    /// Key-value latent rank.
    pub kv_lora: usize,
    /// Softmax scale.
    pub scale: f64,
}

/// What the backward needs.
#[derive(Debug)]
pub struct MlaCache<T> {
    b: usize,
    s: usize,
    x: Buf<T>,
    qa: Option<(Buf<T>, Buf<T>, Buf<T>)>,
    ckv: Buf<T>,
    ckv_rstd: Buf<T>,
    ckvn: Buf<T>,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    o: Vec<T>,
    lse: Vec<T>,
    o_in: Buf<T>,
}

impl Mla {
    fn qk(&self) -> usize {
        self.nope + self.rope
    }

    fn attn_shape(&self, b: usize, s: usize) -> AttnShape {
        AttnShape {
            bh: b * self.heads,
            seq: s,
            d_qk: self.qk(),
            d_v: self.v,
            scale: self.scale,
        }
    }

    /// The first key of every query of a pass over `b` sequences of `s` positions, from the
    /// pass's document starts ([`Ctx::key_starts`], `[b, S]`; an MTP block runs on the first
    /// `s < S` positions of each sequence and takes their rows).
    fn first_keys(cx_starts: Option<&[u32]>, b: usize, s: usize) -> Option<Vec<u32>> {
        let all = cx_starts?;
        let full = all.len() / b.max(1);
        Some(
            (0..b)
                .flat_map(|bi| all[bi * full..bi * full + s].iter().copied())
                .collect(),
        )
    }

    /// Forward over `b` sequences of `s` tokens; x `[b·s, d]` → `[b·s, d]`.
    pub fn fwd<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        rope: &RopeTable<T>,
        x: Buf<T>,
        b: usize,
        s: usize,
    ) -> (Vec<T>, MlaCache<T>) {
        let (h, qk, n) = (self.heads, self.qk(), b * s);
        let (mut q, qa) = match self.q {
            QProj::Plain(l) => (l.fwd(cx, &x), None),
            QProj::Lora { a, norm, b: up } => {
                let qa = Arc::new(a.fwd(cx, &x));
                let (qan, rstd) = norm.fwd(cx, &qa);
                let qan = Arc::new(qan);
                (up.fwd(cx, &qan), Some((qa, rstd, qan)))
            }
        };
        cx.be.rope_fwd(
            rope,
            &mut q,
            RopeRows {
                seq: s,
                heads: h,
                row_len: qk,
                offset: self.nope,
            },
        );
        let kva = self.kv_a.fwd(cx, &x);
        let w = self.kv_lora + self.rope;
        let (mut ckv, mut kpe) = (
            vec![T::zero(); n * self.kv_lora],
            vec![T::zero(); n * self.rope],
        );
        let lora = (self.kv_lora, 0);
        cx.copy(
            Strided::columns(n, self.kv_lora, (w, 0), lora),
            &kva,
            &mut ckv,
        );
        let pe = (self.rope, 0);
        cx.copy(
            Strided::columns(n, self.rope, (w, self.kv_lora), pe),
            &kva,
            &mut kpe,
        );
        cx.be.rope_fwd(
            rope,
            &mut kpe,
            RopeRows {
                seq: s,
                heads: 1,
                row_len: self.rope,
                offset: 0,
            },
        );
        let ckv = Arc::new(ckv);
        let (ckvn, ckv_rstd) = self.kv_norm.fwd(cx, &ckv);
        let ckvn = Arc::new(ckvn);
        let kvb = self.kv_b.fwd(cx, &ckvn);
        // Head-major Q, K, V: [b, H, s, ·]; K = [k_nope, k_pe] with the one RoPE key
        // broadcast to every head.
        let kvw = self.nope + self.v;
        let (mut qh, mut kh, mut vh) = (
            vec![T::zero(); n * h * qk],
            vec![T::zero(); n * h * qk],
            vec![T::zero(); n * h * self.v],
        );
        let l = Layout { b, h, s };
        cx.copy(l.tokens_to_heads(qk, (qk, 0), (qk, 0)), &q, &mut qh);
        cx.copy(
            l.tokens_to_heads(self.nope, (kvw, 0), (qk, 0)),
            &kvb,
            &mut kh,
        );
        let key = Strided {
            dims: [b, h, s, self.rope],
            src: [s * self.rope, 0, self.rope, 1],
            src_at: 0,
            dst: l.heads(qk),
            dst_at: self.nope,
            accumulate: false,
        };
        cx.copy(key, &kpe, &mut kh);
        cx.copy(
            l.tokens_to_heads(self.v, (kvw, self.nope), (self.v, 0)),
            &kvb,
            &mut vh,
        );
        let shape = self.attn_shape(b, s);
        let (mut o, mut lse) = (vec![T::zero(); n * h * self.v], vec![T::zero(); b * h * s]);
        let first = Self::first_keys(cx.key_starts, b, s);
        let starts = first.as_deref().map(|first| KeyStarts { heads: h, first });
        cx.be
            .attention_fwd(shape, starts, &qh, &kh, &vh, &mut o, &mut lse);
        let mut o_in = vec![T::zero(); o.len()];
        cx.copy(
            l.heads_to_tokens(self.v, (self.v, 0), (self.v, 0)),
            &o,
            &mut o_in,
        );
        let o_in = Arc::new(o_in);
        let out = self.o.fwd(cx, &o_in);
        let cache = MlaCache {
            b,
            s,
            x,
            qa,
            ckv,
            ckv_rstd,
            ckvn,
            q: qh,
            k: kh,
            v: vh,
            o,
            lse,
            o_in,
        };
        (out, cache)
    }

    /// Backward: returns dx `[b·s, d]`; weight gradients go to `wq`.
    pub fn bwd<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        rope: &RopeTable<T>,
        c: MlaCache<T>,
        dout: Vec<T>,
        wq: &mut WgradQueue<T>,
    ) -> Vec<T> {
        let (b, s, h, qk) = (c.b, c.s, self.heads, self.qk());
        let n = b * s;
        let d_oin = self.o.bwd_input(cx, &dout);
        self.o.wgrad(wq, dout, &c.o_in);
        let l = Layout { b, h, s };
        let mut d_o = vec![T::zero(); d_oin.len()];
        cx.copy(
            l.tokens_to_heads(self.v, (self.v, 0), (self.v, 0)),
            &d_oin,
            &mut d_o,
        );
        let shape = self.attn_shape(b, s);
        let (mut dqh, mut dkh, mut dvh) = (
            vec![T::zero(); c.q.len()],
            vec![T::zero(); c.k.len()],
            vec![T::zero(); c.v.len()],
        );
        let first = Self::first_keys(cx.key_starts, b, s);
        let starts = first.as_deref().map(|first| KeyStarts { heads: h, first });
        cx.be.attention_bwd(
            shape, starts, &c.q, &c.k, &c.v, &c.o, &c.lse, &d_o, &mut dqh, &mut dkh, &mut dvh,
        );
        drop((c.q, c.k, c.v, c.o, c.lse));
        let kvw = self.nope + self.v;
        let mut dq = vec![T::zero(); n * h * qk];
        let mut dkvb = vec![T::zero(); n * h * kvw];
        let mut dkpe = vec![T::zero(); n * self.rope];
        cx.copy(l.heads_to_tokens(qk, (qk, 0), (qk, 0)), &dqh, &mut dq);
        cx.copy(
            l.heads_to_tokens(self.nope, (qk, 0), (kvw, 0)),
            &dkh,
            &mut dkvb,
        );
        cx.copy(
            l.heads_to_tokens(self.v, (self.v, 0), (kvw, self.nope)),
            &dvh,
            &mut dkvb,
        );
        // The shared RoPE key's gradient: summed over the heads, in head order.
        let key = Strided {
            dims: [b, h, s, self.rope],
            src: l.heads(qk),
            src_at: self.nope,
            dst: [s * self.rope, 0, self.rope, 1],
            dst_at: 0,
            accumulate: true,
        };
        cx.copy(key, &dkh, &mut dkpe);
        cx.be.rope_bwd(
            rope,
            &mut dq,
            RopeRows {
                seq: s,
                heads: h,
                row_len: qk,
                offset: self.nope,
            },
        );
        cx.be.rope_bwd(
            rope,
            &mut dkpe,
            RopeRows {
                seq: s,
                heads: 1,
                row_len: self.rope,
                offset: 0,
            },
        );
        let dckvn = self.kv_b.bwd_input(cx, &dkvb);
        self.kv_b.wgrad(wq, dkvb, &c.ckvn);
        let mut dckv = vec![T::zero(); n * self.kv_lora];
        self.kv_norm
            .bwd(cx, wq, &c.ckv, &c.ckv_rstd, dckvn, &mut dckv, false);
        let w = self.kv_lora + self.rope;
        let mut dkva = vec![T::zero(); n * w];
        let (lora, pe) = ((self.kv_lora, 0), (self.rope, 0));
        cx.copy(
            Strided::columns(n, self.kv_lora, lora, (w, 0)),
            &dckv,
            &mut dkva,
        );
        cx.copy(
            Strided::columns(n, self.rope, pe, (w, self.kv_lora)),
            &dkpe,
            &mut dkva,
        );
        let mut dx = self.kv_a.bwd_input(cx, &dkva);
        self.kv_a.wgrad(wq, dkva, &c.x);
        match (self.q, c.qa) {
            (QProj::Plain(l), _) => {
                l.bwd_input_into(cx, &dq, &mut dx, true);
                l.wgrad(wq, dq, &c.x);
            }
            (QProj::Lora { a, norm, b: up }, Some((qa, rstd, qan))) => {
                let dqan = up.bwd_input(cx, &dq);
                up.wgrad(wq, dq, &qan);
                let mut dqa = vec![T::zero(); qa.len()];
                norm.bwd(cx, wq, &qa, &rstd, dqan, &mut dqa, false);
                a.bwd_input_into(cx, &dqa, &mut dx, true);
                a.wgrad(wq, dqa, &c.x);
            }
            (QProj::Lora { .. }, None) => {
                unreachable!("a LoRA query path always caches its latent")
            }
        }
        dx
    }
}

/// The two layouts of a pass's per-head tensors over `b` sequences of `s` tokens and `h`
/// heads: token-major `[b, s, H, row]` (what the projections read and write) and head-major
/// `[b, H, s, w]` (what attention reads and writes), for the backend's strided copy.
#[derive(Debug, Clone, Copy)]
struct Layout {
    b: usize,
    h: usize,
    s: usize,
}

impl Layout {
    /// Strides of head-major `[b, H, s, row]`.
    fn heads(self, row: usize) -> [usize; 4] {
        Strided::dense([self.b, self.h, self.s, row])
    }
    /// Strides of token-major `[b, s, H, row]`, walked as `[b, H, s, ·]`.
    fn tokens(self, row: usize) -> [usize; 4] {
        [self.s * self.h * row, row, self.h * row, 1]
    }
    /// `w` columns of each head's row, from token-major rows of width `row` at column `col`
    /// to head-major rows of width `dst_row` at column `dst_col`.
    fn tokens_to_heads(
        self,
        w: usize,
        (row, col): (usize, usize),
        (dst_row, dst_col): (usize, usize),
    ) -> Strided {
        Strided {
            dims: [self.b, self.h, self.s, w],
            src: self.tokens(row),
            src_at: col,
            dst: self.heads(dst_row),
            dst_at: dst_col,
            accumulate: false,
        }
    }
    /// The other way: head-major rows to token-major ones.
    fn heads_to_tokens(
        self,
        w: usize,
        (row, col): (usize, usize),
        (dst_row, dst_col): (usize, usize),
    ) -> Strided {
        Strided {
            dims: [self.b, self.h, self.s, w],
            src: self.heads(row),
            src_at: col,
            dst: self.tokens(dst_row),
            dst_at: dst_col,
            accumulate: false,
        }
    }
}
