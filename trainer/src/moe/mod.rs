//! DeepSeekMoE with auxiliary-loss-free load balancing (DeepSeek-V3 §2.1.2).
//!
//! For token t with normalised input `x_t` `[d]` and N_r routed experts:
//!
//! ```text
//! s_t      = sigmoid(W_gate x_t)                     [N_r]   affinities
//! c_t      = s_t + b                                  [N_r]   b: per-expert bias, for selection only
//! groups   = top-`topk_group` of the `n_group` groups, each scored by the sum of its top-2 c
//! E_t      = top-K of c_t over the experts of the chosen groups
//! g_{t,i}  = route_scale · s_{t,i} / Σ_{j∈E_t} s_{t,j}     for i ∈ E_t (norm_topk_prob)
//! y_t      = shared(x_t) + Σ_{i∈E_t} g_{t,i} · expert_i(x_t)
//! ```
//!
//! The forward runs in four steps, so that the experts can live on other ranks:
//! **route** (router GEMM, sigmoid, group-limited top-K, gates) → **dispatch** (one row per
//! (token, chosen expert) to the expert's owner, [`dispatch`]) → **experts** (each on its
//! rows) → **combine** (the rows back to the token's rank, then the weighted sum there, for
//! each token over its experts in expert order — the order does not depend on where the
//! experts ran, so expert parallelism gives the same bits as one process).
//!
//! No token is dropped. The bias is not trained by gradients: after each step
//! [`update_bias`] moves it by −γ for overloaded and +γ for underloaded experts. The
//! complementary sequence-wise balance loss `α Σ_i f_i P_i` (per sequence, averaged over
//! sequences) is computed when α > 0.

pub mod dispatch;

use std::sync::Arc;

use rayon::prelude::*;
use tokenmill_comm::Collectives;
use tokenmill_kernels::backend::{Balance, Route};
use tokenmill_kernels::bf16::{from_bf16, to_bf16};
use tokenmill_kernels::quant::{ScaleRounding, quantize};
use tokenmill_kernels::{Fp8Format, Real};

use self::dispatch::{DispatchPlan, owned};
use crate::mlp::{Mlp, MlpCache};
use crate::ops::{Buf, Ctx, Linear, Precision, WgradQueue};
use crate::params::ParamId;
use crate::params::ParamLayout;
use crate::timeline;

/// One MoE layer.
#[derive(Debug, Clone)]
pub struct Moe {
    /// `mlp.gate.weight` `[N_r, d]`.
    pub router: Linear,
    /// `mlp.gate.e_score_correction_bias` `[N_r]` (a buffer).
    pub bias: ParamId,
    /// Routed experts, allocated contiguously.
    pub experts: Vec<Mlp>,
    /// The shared experts as one MLP of width `n_shared · moe_intermediate`.
    pub shared: Option<Mlp>,
    /// Experts per token K.
    pub top_k: usize,
    /// Expert groups.
    pub n_group: usize,
    /// Groups per token.
    pub topk_group: usize,
    /// `routed_scaling_factor`.
    pub route_scale: f64,
    /// `norm_topk_prob`.
    pub norm_topk: bool,
}

/// The routed experts' forward on one process, all at once, for the backward: each expert's
/// rows, their tokens and gates (in the plan's send order: expert after expert, tokens
/// ascending), and the grouped GEMMs' operands.
#[derive(Debug)]
struct ExpertsCache<T> {
    /// Expert `e`'s rows: `offsets[e] .. offsets[e + 1]`.
    offsets: Arc<Vec<usize>>,
    /// Each row's token.
    toks: Vec<u32>,
    /// Each row's gate.
    gates: Vec<T>,
    /// The rows' inputs `[rows, d]` (as the experts saw them: FP8-quantized in FP8 precision).
    x: Buf<T>,
    /// Gate and up projections `[rows, f]`.
    g: Vec<T>,
    u: Vec<T>,
    /// SwiGLU output `[rows, f]`.
    h: Buf<T>,
}

/// Per-layer routing statistics of one forward pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MoeStats {
    /// Tokens routed to each expert over the whole batch.
    pub load: Vec<u64>,
    /// The sequence-wise balance loss (already multiplied by α; 0 when α = 0).
    pub balance_loss: f64,
}

/// What the backward needs.
#[derive(Debug)]
pub struct MoeCache<T> {
    b: usize,
    /// Sequences in the whole batch (all data-parallel slices).
    b_total: usize,
    s: usize,
    x: Buf<T>,
    scores: Vec<T>,
    idx: Vec<u32>,
    gates: Vec<T>,
    /// Where each row went.
    plan: DispatchPlan,
    /// The experts' outputs back at the tokens' rank, `[rows, d]` in the plan's send order.
    ys: Vec<T>,
    /// On one process (no exchange): the experts' forward, all at once.
    experts: Option<ExpertsCache<T>>,
    /// Across processes: this rank's experts' caches (`None`: the expert got no row).
    local: Vec<Option<MlpCache<T>>>,
    shared: Option<MlpCache<T>>,
    /// `α · f_{b,i}` per sequence and expert, when the balance loss is on.
    balance: Option<Vec<f64>>,
}

impl<T> MoeCache<T> {
    /// Where this forward's rows went (which rank ran each token's experts).
    pub fn plan(&self) -> &DispatchPlan {
        &self.plan
    }
}

impl Moe {
    fn n_experts(&self) -> usize {
        self.experts.len()
    }

    /// The router's settings for the backend (`Backend::route`).
    fn route(&self) -> Route {
        Route {
            experts: self.n_experts(),
            groups: self.n_group.max(1),
            topk_groups: self.topk_group,
            k: self.top_k,
            scale: self.route_scale,
            norm: self.norm_topk,
        }
    }

    /// The distance in the flat buffer from one routed expert's projection `pick` to the
    /// next one's (the experts are allocated one after another, each with its three).
    fn stride(&self, layout: &ParamLayout, pick: impl Fn(&Mlp) -> Linear) -> usize {
        let at = |e: usize| layout.specs[pick(&self.experts[e]).w].range.start;
        let first = pick(&self.experts[0]);
        let stride = if self.experts.len() > 1 {
            at(1) - at(0)
        } else {
            first.out * first.inp
        };
        debug_assert!(
            (0..self.experts.len()).all(|e| at(e) == at(0) + e * stride),
            "routed experts not evenly spaced"
        );
        stride
    }

    /// Every routed expert on its rows at once (one process): the rows gathered in the plan's
    /// send order (`rows`: per expert its `(token, slot)` pairs), each projection one grouped
    /// GEMM; returns the cache and the outputs `[rows, d]` in that order.
    fn experts_fwd<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        x: &Buf<T>,
        rows: &[Vec<(usize, usize)>],
        gates: &[T],
        fp8: bool,
    ) -> (ExpertsCache<T>, Vec<T>) {
        let (d, k) = (self.router.inp, self.top_k);
        let total = rows.iter().map(Vec::len).sum();
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        let (mut toks, mut g) = (Vec::with_capacity(total), Vec::with_capacity(total));
        offsets.push(0);
        for r in rows {
            for &(t, j) in r {
                toks.push(t as u32);
                g.push(gates[t * k + j]);
            }
            offsets.push(toks.len());
        }
        let offsets = Arc::new(offsets);
        let mut xs = vec![T::zero(); total * d];
        if total > 0 {
            cx.gather_rows(x, d, &toks, None, &mut xs);
        }
        if fp8 {
            cx.fake_quantize_fp8(&mut xs, d, (1, FP8_TILE));
        }
        let xs = Arc::new(xs);
        let e0 = &self.experts[0];
        let st = self.stride(cx.layout, |m| m.gate);
        let gp = e0.gate.fwd_grouped(cx, st, &offsets, &xs);
        let up = e0
            .up
            .fwd_grouped(cx, self.stride(cx.layout, |m| m.up), &offsets, &xs);
        let mut h = vec![T::zero(); gp.len()];
        cx.be.swiglu_fwd(&gp, &up, &mut h);
        let h = Arc::new(h);
        let mut y = e0
            .down
            .fwd_grouped(cx, self.stride(cx.layout, |m| m.down), &offsets, &h);
        if fp8 {
            cx.round_bf16(&mut y);
        }
        let cache = ExpertsCache {
            offsets,
            toks,
            gates: g,
            x: xs,
            g: gp,
            u: up,
            h,
        };
        (cache, y)
    }

    /// The backward of [`Moe::experts_fwd`] from the layer's output gradient `dout` `[n, d]`:
    /// the rows' input gradients `[rows, d]` (and their tokens); the weight gradients go to
    /// `wq` as three grouped GEMMs. Each expert's numbers are those of `Mlp::bwd` alone.
    fn experts_bwd<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        c: ExpertsCache<T>,
        dout: &[T],
        wq: &mut WgradQueue<T>,
    ) -> (Vec<T>, Vec<u32>) {
        let d = self.router.inp;
        let e0 = &self.experts[0];
        let (sg, su, sd) = (
            self.stride(cx.layout, |m| m.gate),
            self.stride(cx.layout, |m| m.up),
            self.stride(cx.layout, |m| m.down),
        );
        let rows = c.toks.len();
        // Each row's output gradient, g · dout_t.
        let mut dy = vec![T::zero(); rows * d];
        if rows > 0 {
            cx.gather_rows(dout, d, &c.toks, Some(&c.gates), &mut dy);
        }
        let mut dh = vec![T::zero(); c.g.len()];
        e0.down
            .bwd_input_grouped_into(cx, sd, &c.offsets, &dy, &mut dh, false);
        e0.down.wgrad_grouped(wq, sd, &c.offsets, dy, &c.h);
        let (mut dg, mut du) = (vec![T::zero(); dh.len()], vec![T::zero(); dh.len()]);
        cx.be.swiglu_bwd(&c.g, &c.u, &dh, &mut dg, &mut du);
        let mut dx = vec![T::zero(); rows * d];
        e0.gate
            .bwd_input_grouped_into(cx, sg, &c.offsets, &dg, &mut dx, false);
        e0.up
            .bwd_input_grouped_into(cx, su, &c.offsets, &du, &mut dx, true);
        e0.gate.wgrad_grouped(wq, sg, &c.offsets, dg, &c.x);
        e0.up.wgrad_grouped(wq, su, &c.offsets, du, &c.x);
        (dx, c.toks)
    }

    /// Forward over `b` sequences of `s` tokens; x `[b·s, d]` (already normalised).
    pub fn fwd<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        x: Buf<T>,
        b: usize,
        s: usize,
        alpha: f64,
    ) -> (Vec<T>, MoeCache<T>, MoeStats) {
        let (e, k) = (self.n_experts(), self.top_k);
        let d = self.router.inp;
        let n = b * s;
        // Route: scores, each token's experts and gates, all tokens in one backend call. The
        // router's GEMM and the routing are one deferred scope, which ends (waits) before the
        // host reads the picks.
        let (scores, idx, gates) = cx.deferred(|| {
            let logits = self.router.fwd(cx, &x);
            let mut scores = vec![T::zero(); n * e];
            let mut picks = vec![0u32; n * k];
            let mut gates = vec![T::zero(); n * k];
            let bias = cx.w(self.bias);
            cx.be.route(
                self.route(),
                &logits,
                bias,
                &mut scores,
                &mut picks,
                &mut gates,
            );
            (scores, picks, gates)
        });
        let mut rows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); e];
        for (r, &i) in idx.iter().enumerate() {
            rows[i as usize].push((r / k, r % k));
        }
        let mut load: Vec<u64> = rows.iter().map(|r| r.len() as u64).collect();
        let group = cx.ep;
        if let Some(g) = cx.batch.or(group) {
            // Every rank balances on the whole batch's load.
            g.all_reduce_sum(&mut load)
                .expect("data-parallel load exchange");
        }
        // Dispatch: one row per (token, chosen expert), to the expert's owner; the shared
        // expert runs while the rows are in flight.
        let comm = |what: &'static str| group.map(|_| timeline::span("comm", || what.into()));
        let plan = {
            let _c = comm("moe counts");
            DispatchPlan::new(&rows, group)
        };
        // On one process nothing is exchanged: the experts' rows are gathered in the plan's
        // send order and every expert runs at once, each projection one grouped GEMM (each
        // expert's product as it would be alone), so the bits are those of the exchange below.
        // The gathers and scatters are the backend's operations when it keeps the data
        // (`Ctx::gather_rows`), so the rows need not cross to the host.
        let stay = group.is_none();
        // FP8 precision (f32 runs): the rows travel as E4M3 in 1 × 128 tiles and come back in
        // BF16, as DeepSeek-V3 sends them (`dispatch_inputs`, `combine_outputs`).
        let fp8 = cx.precision == Precision::Fp8 && T::as_f32(&[]).is_some();
        let mut shared = None;
        let mut experts = None;
        let (ys, local) = if stay {
            // The shared and routed experts are backend operations on host tables (the rows
            // and gates the routing gave): one deferred scope.
            let (cache, y) = cx.deferred(|| {
                shared = Some(self.shared.as_ref().map(|m| m.fwd(cx, x.clone())));
                let _e = timeline::span("compute", || "experts forward".into());
                self.experts_fwd(cx, &x, &rows, &gates, fp8)
            });
            experts = Some(cache);
            (y, Vec::new())
        } else {
            let mut send = Vec::with_capacity(plan.send_rows().len() * d);
            for &(t, _) in plan.send_rows() {
                send.extend_from_slice(&x[t * d..(t + 1) * d]);
            }
            let inputs = {
                let _c = comm("moe dispatch");
                dispatch_inputs(cx, &plan, group, send, d, &mut || {
                    let _o = group.map(|_| timeline::span("overlap", || "shared expert".into()));
                    shared = Some(self.shared.as_ref().map(|m| m.fwd(cx, x.clone())));
                })
            };
            let _e = timeline::span("compute", || "experts forward".into());
            // Experts: this rank's, each on its rows.
            let mine = owned(e, plan.size(), group.map_or(0, |g| g.rank()));
            let (outs, local): (Vec<Vec<T>>, Vec<Option<MlpCache<T>>>) = self.experts[mine]
                .par_iter()
                .zip(inputs.into_par_iter())
                .map(|(mlp, xe)| {
                    if xe.is_empty() {
                        return (Vec::new(), None);
                    }
                    let (y, c) = mlp.fwd(cx, Arc::new(xe));
                    (y, Some(c))
                })
                .unzip();
            // Combine: the outputs back, then per token Σ g·y over its experts in expert order
            // (the plan's send order).
            drop(_e);
            let ys = {
                let _c = comm("moe combine");
                combine_outputs(cx, &plan, group, outs, d)
            };
            (ys, local)
        };
        let (mut out, shared) = match shared.flatten() {
            Some((y, c)) => (y, Some(c)),
            None => (vec![T::zero(); n * d], None),
        };
        match &experts {
            Some(ec) => cx.deferred(|| {
                // Expert after expert: a token's rows are distinct within one expert.
                for w in ec.offsets.windows(2) {
                    let (a, b) = (w[0], w[1]);
                    if a < b {
                        let (toks, g) = (&ec.toks[a..b], &ec.gates[a..b]);
                        cx.scatter_add_rows(&ys[a * d..b * d], d, toks, Some(g), &mut out);
                    }
                }
            }),
            None => {
                for (r, &(t, j)) in plan.send_rows().iter().enumerate() {
                    let g = gates[t * k + j];
                    let (dst, src) = (&mut out[t * d..(t + 1) * d], &ys[r * d..(r + 1) * d]);
                    for c in 0..d {
                        dst[c] += g * src[c];
                    }
                }
            }
        }
        let mut stats = MoeStats {
            load,
            balance_loss: 0.0,
        };
        // Sequences in the whole batch: the balance loss is a mean over them.
        let mut b_total = [b as u64];
        if let (Some(g), true) = (cx.batch, alpha > 0.0) {
            g.all_reduce_sum(&mut b_total)
                .expect("data-parallel sequence count");
        }
        let b_total = b_total[0] as usize;
        let balance = (alpha > 0.0).then(|| {
            // f_i = N_r / (K·S) · #tokens of the sequence routed to i; P_i = mean_t s_{t,i}/Σ_j s_{t,j}.
            let mut af = vec![0.0f64; b * e];
            let mut loss = 0.0;
            for bi in 0..b {
                let f = &mut af[bi * e..(bi + 1) * e];
                for t in bi * s..(bi + 1) * s {
                    for &i in &idx[t * k..(t + 1) * k] {
                        f[i as usize] += 1.0;
                    }
                }
                let mut p = vec![0.0f64; e];
                for t in bi * s..(bi + 1) * s {
                    let st = &scores[t * e..(t + 1) * e];
                    let z: f64 = st.iter().map(|v| v.f64()).sum();
                    for i in 0..e {
                        p[i] += st[i].f64() / z / s as f64;
                    }
                }
                for i in 0..e {
                    f[i] *= alpha * e as f64 / (k * s) as f64;
                    loss += f[i] * p[i];
                }
            }
            stats.balance_loss = loss / b_total as f64;
            af
        });
        (
            out,
            MoeCache {
                b,
                b_total,
                s,
                x,
                scores,
                idx,
                gates,
                plan,
                ys,
                experts,
                local,
                shared,
                balance,
            },
            stats,
        )
    }

    /// Backward: returns dx; weight gradients go to `wq` (shared expert, then routed experts
    /// in order, then the router).
    pub fn bwd<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        c: MoeCache<T>,
        dout: Vec<T>,
        wq: &mut WgradQueue<T>,
    ) -> Vec<T> {
        let (e, k) = (self.n_experts(), self.top_k);
        let d = self.router.inp;
        let n = c.b * c.s;
        // The shared expert's backward and, without an exchange, each gate's gradient
        // dout_t · y_row in one call (the send order): one deferred scope, which ends (waits)
        // before the host reads the gates' gradients.
        let (mut dx, dots) = cx.deferred(|| {
            let dx = match (&self.shared, c.shared) {
                (Some(m), Some(sc)) => m.bwd(cx, sc, cx.duplicate(&dout), wq),
                _ => vec![T::zero(); n * d],
            };
            let dots = c.experts.as_ref().map(|ec| {
                let mut dots = vec![T::zero(); ec.toks.len()];
                if !dots.is_empty() {
                    cx.dot_rows(&dout, d, &ec.toks, &c.ys, &mut dots);
                }
                dots
            });
            (dx, dots)
        });
        // At the tokens' rank: each row's output gradient g·dout_t and its gate's gradient
        // dout_t · y_row, in the plan's send order.
        let group = cx.ep;
        let rows = c.plan.send_rows();
        let stay = c.experts.is_some();
        let mut dy = vec![T::zero(); if stay { 0 } else { rows.len() * d }];
        let mut dgates = vec![T::zero(); n * k];
        if let Some(dots) = dots {
            for (dot, &(t, j)) in dots.into_iter().zip(rows) {
                dgates[t * k + j] = dot;
            }
        } else {
            for (r, (&(t, j), y)) in rows.iter().zip(c.ys.chunks(d)).enumerate() {
                let g = c.gates[t * k + j];
                let src = &dout[t * d..(t + 1) * d];
                let mut dot = T::zero();
                for cc in 0..d {
                    dot += src[cc] * y[cc];
                    dy[r * d + cc] = g * src[cc];
                }
                dgates[t * k + j] = dot;
            }
        }
        let comm = |what: &'static str| group.map(|_| timeline::span("comm", || what.into()));
        if let Some(ec) = c.experts {
            // No exchange: every expert's backward at once, then each expert's input gradient
            // added back to its tokens, expert after expert.
            let _e = timeline::span("compute", || "experts backward".into());
            let offsets = ec.offsets.clone();
            cx.deferred(|| {
                let (dxe, toks) = self.experts_bwd(cx, ec, &dout, wq);
                for w in offsets.windows(2) {
                    let (a, b) = (w[0], w[1]);
                    if a < b {
                        cx.scatter_add_rows(&dxe[a * d..b * d], d, &toks[a..b], None, &mut dx);
                    }
                }
            });
        } else {
            // The backward of the combine is a dispatch: the gradients go to the experts'
            // owners.
            let dys = {
                let _c = comm("moe dispatch (gradients)");
                c.plan.dispatch(group, dy, d, &mut || {})
            };
            let _e = timeline::span("compute", || "experts backward".into());
            let mine = owned(e, c.plan.size(), group.map_or(0, |g| g.rank()));
            let per_expert: Vec<(Vec<T>, WgradQueue<T>)> = self.experts[mine]
                .par_iter()
                .zip(c.local.into_par_iter().zip(dys.into_par_iter()))
                .map(|(mlp, (mc, dy))| {
                    let mut q = WgradQueue::new();
                    match mc {
                        Some(mc) => (mlp.bwd(cx, mc, dy, &mut q), q),
                        None => (Vec::new(), q),
                    }
                })
                .collect();
            let mut dxe = Vec::with_capacity(per_expert.len());
            for (g, mut q) in per_expert {
                dxe.push(g);
                wq.append(&mut q);
            }
            // The backward of the dispatch is a combine: the input gradients come back, and
            // each token sums them over its experts in expert order.
            drop(_e);
            let dxs = {
                let _c = comm("moe combine (gradients)");
                c.plan.combine(group, &dxe, d, &mut || {})
            };
            for (r, &(t, _)) in rows.iter().enumerate() {
                let (dst, src) = (&mut dx[t * d..(t + 1) * d], &dxs[r * d..(r + 1) * d]);
                for cc in 0..d {
                    dst[cc] += src[cc];
                }
            }
        }
        // Through the gates' normalisation, the balance loss and the sigmoid to the router's
        // logits, on the backend.
        let mut ds = vec![T::zero(); n * e];
        let balance = c.balance.as_deref().map(|coef| Balance {
            coef,
            seq: c.s,
            sequences: c.b_total,
        });
        // The routing's and the router's backward: one deferred scope.
        cx.deferred(|| {
            cx.be
                .route_bwd(self.route(), &c.scores, &c.idx, &dgates, balance, &mut ds);
            self.router.bwd_input_into(cx, &ds, &mut dx, true);
            self.router.wgrad(wq, ds, &c.x);
        });
        dx
    }
}

/// The experts' inputs, dispatched. In FP8 precision (f32 runs) the rows travel as DeepSeek-V3
/// sends them: E4M3 codes with one scale per 1 × 128 tile, dequantized at the owner — on one
/// process too, so that where the experts run never changes the numbers.
fn dispatch_inputs<T: Real>(
    cx: &Ctx<'_, T>,
    plan: &DispatchPlan,
    group: Option<&dyn tokenmill_comm::Communicator>,
    send: Vec<T>,
    d: usize,
    during: &mut dyn FnMut(),
) -> Vec<Vec<T>> {
    let Some(v) = T::as_f32(&send).filter(|_| cx.precision == Precision::Fp8) else {
        return plan.dispatch(group, send, d, during);
    };
    // A tile holding a NaN or an infinity cannot be scaled: it travels as NaN and is counted,
    // as the fake quantization of the one-process path and the FP8 GEMMs do.
    let mut v = v.to_vec();
    let mut bad = 0;
    for tile in v
        .chunks_mut(d.max(1))
        .flat_map(|row| row.chunks_mut(FP8_TILE))
    {
        if tile.iter().any(|x| !x.is_finite()) {
            tile.fill(f32::NAN);
            bad += 1;
        }
    }
    if bad > 0 {
        tracing::warn!(bad, "FP8 tiles with a non-finite amax in an FP8 dispatch");
    }
    cx.nonfinite.add(bad);
    let rows = v.len() / d.max(1);
    let q = quantize(
        &v,
        rows,
        d,
        1,
        FP8_TILE,
        Fp8Format::E4M3,
        ScaleRounding::Exact,
    );
    let tiles = d.div_ceil(FP8_TILE);
    let codes = plan.dispatch(group, q.codes, d, during);
    let scales = plan.dispatch(group, q.scales, tiles, &mut || {});
    codes
        .iter()
        .zip(&scales)
        .map(|(c, s)| {
            c.iter()
                .enumerate()
                .map(|(i, &code)| {
                    let scale = s[(i / d) * tiles + (i % d) / FP8_TILE];
                    T::of((Fp8Format::E4M3.decode(code) * scale) as f64)
                })
                .collect()
        })
        .collect()
}

/// The experts' outputs, combined back. In FP8 precision (f32 runs) they travel in BF16, as in
/// DeepSeek-V3 (rounded on one process too).
fn combine_outputs<T: Real>(
    cx: &Ctx<'_, T>,
    plan: &DispatchPlan,
    group: Option<&dyn tokenmill_comm::Communicator>,
    outs: Vec<Vec<T>>,
    d: usize,
) -> Vec<T> {
    if cx.precision != Precision::Fp8 || T::as_f32(&[]).is_none() {
        return plan.combine(group, &outs, d, &mut || {});
    }
    let halves: Vec<Vec<u16>> = outs
        .iter()
        .map(|o| o.iter().map(|&x| to_bf16(x.f64() as f32)).collect())
        .collect();
    plan.combine(group, &halves, d, &mut || {})
        .into_iter()
        .map(|h| T::of(from_bf16(h) as f64))
        .collect()
}

/// FP8 activation tiles: 1 × 128 (DeepSeek-V3).
const FP8_TILE: usize = 128;

/// Auxiliary-loss-free balancing: `b_i −= γ` for experts above the mean load, `+= γ` below.
pub fn update_bias(bias: &mut [f32], load: &[u64], gamma: f64) {
    let mean = load.iter().sum::<u64>() as f64 / load.len().max(1) as f64;
    for (b, &l) in bias.iter_mut().zip(load) {
        let l = l as f64;
        if l > mean {
            *b -= gamma as f32;
        } else if l < mean {
            *b += gamma as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokenmill_kernels::Cpu;

    use super::*;
    use crate::ops::NonFiniteTiles;
    use crate::params::ParamLayout;

    /// The FP8 dispatch through the exchange (`dispatch_inputs`) and the one-process path
    /// (gather, then fake quantization) send the same values, and treat a tile holding an
    /// infinity or a NaN alike: NaN, counted.
    #[test]
    fn both_fp8_dispatch_paths_send_the_same_values_and_count_non_finite_tiles() {
        let d = 300; // tiles of 128, 128 and 44
        let n = 6;
        let mut x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 37) % 101) as f32 / 7.0 - 7.0)
            .collect();
        x[d + 5] = f32::INFINITY; // token 1, first tile
        x[3 * d + 290] = f32::NAN; // token 3, last tile
        let rows: Vec<Vec<(usize, usize)>> =
            vec![vec![(0, 0), (1, 0), (3, 0)], vec![(1, 1), (4, 0)]];
        let plan = DispatchPlan::new(&rows, None);
        let layout = ParamLayout::default();
        let (via_exchange, via_gather) = (NonFiniteTiles::default(), NonFiniteTiles::default());
        let cx = |nonfinite| Ctx {
            be: &Cpu,
            layout: &layout,
            params: &[],
            precision: Precision::Fp8,
            ep: None,
            batch: None,
            nonfinite,
            key_starts: None,
        };
        let send: Vec<f32> = plan
            .send_rows()
            .iter()
            .flat_map(|&(t, _)| x[t * d..(t + 1) * d].to_vec())
            .collect();
        let a = dispatch_inputs(&cx(&via_exchange), &plan, None, send, d, &mut || {});
        let c = cx(&via_gather);
        for (e, r) in rows.iter().enumerate() {
            let toks: Vec<u32> = r.iter().map(|&(t, _)| t as u32).collect();
            let mut xe = vec![0.0f32; toks.len() * d];
            c.gather_rows(&x, d, &toks, None, &mut xe);
            c.fake_quantize_fp8(&mut xe, d, (1, FP8_TILE));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a[e]), bits(&xe), "expert {e}");
        }
        // Token 1 is sent twice (two tiles), token 3 once.
        assert_eq!(via_exchange.get(), 3);
        assert_eq!(via_gather.get(), 3);
        assert!(a[0][d + 100].is_nan() && !a[0][d + 200].is_nan());
    }
}
