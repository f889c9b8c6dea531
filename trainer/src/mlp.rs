//! The SwiGLU feed-forward block: `y = down(silu(gate(x)) ⊙ up(x))`, used as the dense layers,
//! the shared experts and each routed expert.
//!
//! Weights: gate `[f, d]`, up `[f, d]`, down `[d, f]`; x `[n, d]` → y `[n, d]`.

use std::sync::Arc;

use tokenmill_kernels::Real;

use crate::ops::{Buf, Ctx, Linear, WgradQueue};

/// A SwiGLU MLP.
#[derive(Debug, Clone, Copy)]
pub struct Mlp {
    /// `gate_proj`.
    pub gate: Linear,
    /// `up_proj`.
    pub up: Linear,
    /// `down_proj`.
    pub down: Linear,
}

/// What the backward needs.
#[derive(Debug)]
pub struct MlpCache<T> {
    x: Buf<T>,
    g: Vec<T>,
    u: Vec<T>,
    h: Buf<T>,
}

impl Mlp {
    /// Forward.
    pub fn fwd<T: Real>(&self, cx: &Ctx<'_, T>, x: Buf<T>) -> (Vec<T>, MlpCache<T>) {
        let g = self.gate.fwd(cx, &x);
        let u = self.up.fwd(cx, &x);
        let mut h = vec![T::zero(); g.len()];
        cx.be.swiglu_fwd(&g, &u, &mut h);
        let h = Arc::new(h);
        let y = self.down.fwd(cx, &h);
        (y, MlpCache { x, g, u, h })
    }

    /// Backward: returns dx; weight gradients go to `wq`.
    pub fn bwd<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        c: MlpCache<T>,
        dy: Vec<T>,
        wq: &mut WgradQueue<T>,
    ) -> Vec<T> {
        let dh = self.down.bwd_input(cx, &dy);
        self.down.wgrad(wq, dy, &c.h);
        let (mut dg, mut du) = (vec![T::zero(); dh.len()], vec![T::zero(); dh.len()]);
        cx.be.swiglu_bwd(&c.g, &c.u, &dh, &mut dg, &mut du);
        let mut dx = self.gate.bwd_input(cx, &dg);
        self.up.bwd_input_into(cx, &du, &mut dx, true);
        self.gate.wgrad(wq, dg, &c.x);
        self.up.wgrad(wq, du, &c.x);
        dx
    }
}
