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
use tokenmill_kernels::backend::{AttnShape, KeyStarts, RopeRows, RopeTable};

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
        let mut ckv = Vec::with_capacity(n * self.kv_lora);
        let mut kpe = Vec::with_capacity(n * self.rope);
        for row in kva.chunks(w) {
            ckv.extend_from_slice(&row[..self.kv_lora]);
            kpe.extend_from_slice(&row[self.kv_lora..]);
        }
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
        // Head-major Q, K, V: [b, H, s, ·].
        let kvw = self.nope + self.v;
        let (mut qh, mut kh, mut vh) = (
            vec![T::zero(); n * h * qk],
            vec![T::zero(); n * h * qk],
            vec![T::zero(); n * h * self.v],
        );
        for bi in 0..b {
            for si in 0..s {
                let t = bi * s + si;
                for hi in 0..h {
                    let dst = (bi * h + hi) * s + si;
                    qh[dst * qk..(dst + 1) * qk]
                        .copy_from_slice(&q[(t * h + hi) * qk..(t * h + hi + 1) * qk]);
                    let src = &kvb[(t * h + hi) * kvw..(t * h + hi + 1) * kvw];
                    kh[dst * qk..dst * qk + self.nope].copy_from_slice(&src[..self.nope]);
                    kh[dst * qk + self.nope..(dst + 1) * qk]
                        .copy_from_slice(&kpe[t * self.rope..(t + 1) * self.rope]);
                    vh[dst * self.v..(dst + 1) * self.v].copy_from_slice(&src[self.nope..]);
                }
            }
        }
        let shape = self.attn_shape(b, s);
        let (mut o, mut lse) = (vec![T::zero(); n * h * self.v], vec![T::zero(); b * h * s]);
        let first = Self::first_keys(cx.key_starts, b, s);
        let starts = first.as_deref().map(|first| KeyStarts { heads: h, first });
        cx.be
            .attention_fwd(shape, starts, &qh, &kh, &vh, &mut o, &mut lse);
        let o_in = Arc::new(heads_to_tokens(&o, b, h, s, self.v));
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
        let d_o = tokens_to_heads(&d_oin, b, h, s, self.v);
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
        for bi in 0..b {
            for si in 0..s {
                let t = bi * s + si;
                for hi in 0..h {
                    let src = (bi * h + hi) * s + si;
                    dq[(t * h + hi) * qk..(t * h + hi + 1) * qk]
                        .copy_from_slice(&dqh[src * qk..(src + 1) * qk]);
                    let dst = &mut dkvb[(t * h + hi) * kvw..(t * h + hi + 1) * kvw];
                    dst[..self.nope].copy_from_slice(&dkh[src * qk..src * qk + self.nope]);
                    dst[self.nope..].copy_from_slice(&dvh[src * self.v..(src + 1) * self.v]);
                    for r in 0..self.rope {
                        dkpe[t * self.rope + r] += dkh[src * qk + self.nope + r];
                    }
                }
            }
        }
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
        for t in 0..n {
            dkva[t * w..t * w + self.kv_lora]
                .copy_from_slice(&dckv[t * self.kv_lora..(t + 1) * self.kv_lora]);
            dkva[t * w + self.kv_lora..(t + 1) * w]
                .copy_from_slice(&dkpe[t * self.rope..(t + 1) * self.rope]);
        }
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

/// `[b, H, s, w]` → `[b·s, H·w]`.
fn heads_to_tokens<T: Real>(x: &[T], b: usize, h: usize, s: usize, w: usize) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    for bi in 0..b {
        for hi in 0..h {
            for si in 0..s {
                let src = ((bi * h + hi) * s + si) * w;
                let dst = ((bi * s + si) * h + hi) * w;
                y[dst..dst + w].copy_from_slice(&x[src..src + w]);
            }
        }
    }
    y
}

/// `[b·s, H·w]` → `[b, H, s, w]`.
fn tokens_to_heads<T: Real>(x: &[T], b: usize, h: usize, s: usize, w: usize) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    for bi in 0..b {
        for hi in 0..h {
            for si in 0..s {
                let dst = ((bi * h + hi) * s + si) * w;
                let src = ((bi * s + si) * h + hi) * w;
                y[dst..dst + w].copy_from_slice(&x[src..src + w]);
            }
        }
    }
    y
}
