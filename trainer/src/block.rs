//! A pre-norm transformer block: `h = x + MLA(RMSNorm(x))`, `y = h + FFN(RMSNorm(h))`, where
//! the FFN is a dense SwiGLU for the first `first_k_dense_replace` blocks and DeepSeekMoE after.
//! x, h, y: `[b·s, d]`.

use std::sync::Arc;

use tokenmill_kernels::Real;
use tokenmill_kernels::backend::{RopeTable, Strided};

use crate::mla::{Mla, MlaCache};
use crate::mlp::{Mlp, MlpCache};
use crate::moe::{Moe, MoeCache, MoeStats};
use crate::ops::{Buf, Ctx, RmsNorm, WgradQueue};

/// The feed-forward half of a block.
#[derive(Debug, Clone)]
pub enum Ffn {
    /// Dense SwiGLU.
    Dense(Mlp),
    /// DeepSeekMoE.
    Moe(Moe),
}

/// One block.
#[derive(Debug, Clone)]
pub struct Block {
    /// `input_layernorm`.
    pub ln1: RmsNorm,
    /// `self_attn`.
    pub attn: Mla,
    /// `post_attention_layernorm`.
    pub ln2: RmsNorm,
    /// `mlp`.
    pub ffn: Ffn,
}

#[derive(Debug)]
enum FfnCache<T> {
    Dense(MlpCache<T>),
    Moe(Box<MoeCache<T>>),
}

/// What the backward needs.
#[derive(Debug)]
pub struct BlockCache<T> {
    x: Buf<T>,
    r1: Buf<T>,
    attn: MlaCache<T>,
    h: Buf<T>,
    r2: Buf<T>,
    ffn: FfnCache<T>,
}

impl Block {
    /// Forward over `b` sequences of `s` tokens. Returns the output, the cache, and the routing
    /// statistics when the block is MoE.
    pub fn fwd<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        rope: &RopeTable<T>,
        x: Buf<T>,
        b: usize,
        s: usize,
        alpha: f64,
    ) -> (Vec<T>, BlockCache<T>, Option<MoeStats>) {
        // The attention sublayer is backend operations only: one deferred scope (one wait
        // for a GPU at its end).
        let (r1, attn, h, hn, r2) = cx.deferred(|| {
            let (xn, r1) = self.ln1.fwd(cx, &x);
            let (a, attn) = self.attn.fwd(cx, rope, Arc::new(xn), b, s);
            // The residual adds run on the backend, where the activations are.
            let mut h = a;
            cx.copy(Strided::elementwise(h.len(), true), &x, &mut h);
            let h = Arc::new(h);
            let (hn, r2) = self.ln2.fwd(cx, &h);
            (r1, attn, h, hn, r2)
        });
        let hn = Arc::new(hn);
        // `y = h + ffn(hn)`: the dense feed-forward and its residual add one deferred scope.
        let residual = |y: &mut Vec<T>| cx.copy(Strided::elementwise(y.len(), true), &h, y);
        let (y, ffn, stats) = match &self.ffn {
            Ffn::Dense(m) => {
                let (y, c) = cx.deferred(|| {
                    let (mut y, c) = m.fwd(cx, hn);
                    residual(&mut y);
                    (y, c)
                });
                (y, FfnCache::Dense(c), None)
            }
            Ffn::Moe(m) => {
                let (mut y, c, st) = m.fwd(cx, hn, b, s, alpha);
                residual(&mut y);
                (y, FfnCache::Moe(Box::new(c)), Some(st))
            }
        };
        (
            y,
            BlockCache {
                x,
                r1,
                attn,
                h,
                r2,
                ffn,
            },
            stats,
        )
    }

    /// Backward: returns dx; weight gradients go to `wq`.
    pub fn bwd<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        rope: &RopeTable<T>,
        c: BlockCache<T>,
        dy: Vec<T>,
        wq: &mut WgradQueue<T>,
    ) -> Vec<T> {
        // The residual's share of dh (a copy of dy) and the feed-forward's backward: for a
        // dense one, one deferred scope.
        let (mut dh, dhn) = match (&self.ffn, c.ffn) {
            (Ffn::Dense(m), FfnCache::Dense(fc)) => {
                cx.deferred(|| (cx.duplicate(&dy), m.bwd(cx, fc, dy, wq)))
            }
            (Ffn::Moe(m), FfnCache::Moe(fc)) => (cx.duplicate(&dy), m.bwd(cx, *fc, dy, wq)),
            _ => unreachable!("a block's cache always matches its kind"),
        };
        // As in the forward: the attention sublayer's backward in one deferred scope.
        cx.deferred(|| {
            self.ln2.bwd(cx, wq, &c.h, &c.r2, dhn, &mut dh, true);
            let dxn = self.attn.bwd(cx, rope, c.attn, cx.duplicate(&dh), wq);
            let mut dx = dh;
            self.ln1.bwd(cx, wq, &c.x, &c.r1, dxn, &mut dx, true);
            dx
        })
    }
}
