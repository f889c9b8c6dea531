//! The CPU backends: [`Cpu`] (the fast kernels of [`crate::cpu`]) and [`CpuReference`] (their
//! plain references).

use std::ops::Range;

use super::{
    AdamStep, AttnShape, Backend, Balance, Grouped, KeyStarts, LowpGemm, MatMul, RopeRows,
    RopeTable, Route, Strided,
};
use crate::cpu::{
    attention, embedding, grouped, loss, lowp, matmul, norm, optim, rope, route, rows, strided,
    swiglu,
};
use crate::real::Real;

/// The fast CPU kernels.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu;

/// The reference CPU kernels.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuReference;

macro_rules! impl_backend {
    ($ty:ident, $name:literal, $mm:path, $lp:path, $nf:path, $nbi:path, $nbw:path, $rf:path, $rb:path, $sf:path, $sb:path,
     $af:path, $ab:path, $cf:path, $cb:path, $cfu:path, $ef:path, $eb:path, $ro:path, $rob:path, $fq:path, $rb16:path, $cp:path, $ga:path, $sc:path, $dr:path, $aw:path, $ss:path, $gm:path) => {
        impl<T: Real> Backend<T> for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn matmul(&self, p: MatMul, a: &[T], b: &[T], c: &mut [T]) {
                $mm(p, a, b, c)
            }
            fn matmul_lowp(
                &self,
                p: MatMul,
                a: &[T],
                b: &[T],
                c: &mut [T],
                format: LowpGemm,
            ) -> u64 {
                $lp(p, a, b, c, format)
            }
            fn grouped_matmul(
                &self,
                g: Grouped<'_>,
                a: &[T],
                b: &[T],
                c: &mut [T],
                format: Option<LowpGemm>,
            ) -> u64 {
                $gm(g, a, b, c, format)
            }
            fn rmsnorm_fwd(&self, x: &[T], w: &[T], eps: f64, y: &mut [T], rstd: &mut [T]) {
                $nf(x, w, eps, y, rstd)
            }
            fn rmsnorm_bwd_input(
                &self,
                x: &[T],
                w: &[T],
                rstd: &[T],
                dy: &[T],
                dx: &mut [T],
                accumulate: bool,
            ) {
                $nbi(x, w, rstd, dy, dx, accumulate)
            }
            fn rmsnorm_bwd_weight(&self, x: &[T], rstd: &[T], dy: &[T], dw: &mut [T]) {
                $nbw(x, rstd, dy, dw)
            }
            fn rope_fwd(&self, t: &RopeTable<T>, x: &mut [T], r: RopeRows) {
                $rf(t, x, r)
            }
            fn rope_bwd(&self, t: &RopeTable<T>, dx: &mut [T], r: RopeRows) {
                $rb(t, dx, r)
            }
            fn swiglu_fwd(&self, g: &[T], u: &[T], h: &mut [T]) {
                $sf(g, u, h)
            }
            fn swiglu_bwd(&self, g: &[T], u: &[T], dh: &[T], dg: &mut [T], du: &mut [T]) {
                $sb(g, u, dh, dg, du)
            }
            fn attention_fwd(
                &self,
                s: AttnShape,
                starts: Option<KeyStarts<'_>>,
                q: &[T],
                k: &[T],
                v: &[T],
                o: &mut [T],
                lse: &mut [T],
            ) {
                $af(s, starts, q, k, v, o, lse)
            }
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
            ) {
                $ab(s, starts, q, k, v, o, lse, d_o, dq, dk, dv)
            }
            fn cross_entropy_fwd(
                &self,
                logits: &[T],
                targets: &[u32],
                vocab: usize,
                losses: &mut [T],
                lse: &mut [T],
            ) {
                $cf(logits, targets, vocab, losses, lse)
            }
            fn cross_entropy_bwd(
                &self,
                logits: &mut [T],
                targets: &[u32],
                lse: &[T],
                g: &[T],
                vocab: usize,
            ) {
                $cb(logits, targets, lse, g, vocab)
            }
            fn cross_entropy_fused(
                &self,
                logits: &mut [T],
                targets: &[u32],
                g: &[T],
                vocab: usize,
                losses: &mut [T],
                lse: &mut [T],
            ) {
                $cfu(logits, targets, g, vocab, losses, lse)
            }
            fn embedding_fwd(&self, table: &[T], d: usize, ids: &[u32], y: &mut [T]) {
                $ef(table, d, ids, y)
            }
            fn embedding_bwd(&self, dy: &[T], d: usize, ids: &[u32], dtable: &mut [T]) {
                $eb(dy, d, ids, dtable)
            }
            fn route(
                &self,
                r: Route,
                logits: &[T],
                bias: &[T],
                scores: &mut [T],
                idx: &mut [u32],
                gates: &mut [T],
            ) {
                $ro(r, logits, bias, scores, idx, gates)
            }
            fn route_bwd(
                &self,
                r: Route,
                scores: &[T],
                idx: &[u32],
                dgates: &[T],
                balance: Option<Balance<'_>>,
                ds: &mut [T],
            ) {
                $rob(r, scores, idx, dgates, balance, ds)
            }
            fn fake_quantize_fp8(&self, x: &mut [T], cols: usize, tile: (usize, usize)) -> u64 {
                $fq(x, cols, tile)
            }
            fn round_bf16(&self, x: &mut [T]) {
                $rb16(x)
            }
            fn copy(&self, c: Strided, src: &[T], dst: &mut [T]) {
                $cp(c, src, dst)
            }
            fn gather_rows(
                &self,
                src: &[T],
                d: usize,
                rows: &[u32],
                scale: Option<&[T]>,
                dst: &mut [T],
            ) {
                $ga(src, d, rows, scale, dst)
            }
            fn scatter_add_rows(
                &self,
                src: &[T],
                d: usize,
                rows: &[u32],
                scale: Option<&[T]>,
                dst: &mut [T],
            ) {
                $sc(src, d, rows, scale, dst)
            }
            fn dot_rows(&self, table: &[T], d: usize, rows: &[u32], src: &[T], out: &mut [T]) {
                $dr(table, d, rows, src, out)
            }
            fn adamw(
                &self,
                s: AdamStep,
                kind: &[u8],
                p: &mut [f32],
                g: &[f32],
                m: &mut [f32],
                v: &mut [f32],
            ) {
                $aw(s, kind, p, g, m, v)
            }
            fn sum_squares(&self, x: &[T], segments: &[Range<usize>], out: &mut [f64]) {
                $ss(x, segments, out)
            }
        }
    };
}

impl_backend!(
    Cpu,
    "cpu",
    matmul::matmul,
    lowp::matmul_lowp_fast,
    norm::rmsnorm_fwd,
    norm::rmsnorm_bwd_input,
    norm::rmsnorm_bwd_weight,
    rope::rope_fwd,
    rope::rope_bwd,
    swiglu::swiglu_fwd,
    swiglu::swiglu_bwd,
    attention::attention_fwd,
    attention::attention_bwd,
    loss::cross_entropy_fwd,
    loss::cross_entropy_bwd,
    loss::cross_entropy_fused,
    embedding::embedding_fwd,
    embedding::embedding_bwd,
    route::route,
    route::route_bwd,
    lowp::fake_quantize_fp8,
    lowp::round_bf16_all,
    strided::copy,
    rows::gather_rows,
    rows::scatter_add_rows,
    rows::dot_rows,
    optim::adamw,
    optim::sum_squares,
    grouped::grouped_matmul
);

impl_backend!(
    CpuReference,
    "cpu-reference",
    matmul::matmul_ref,
    lowp::matmul_lowp_reference,
    norm::rmsnorm_fwd_ref,
    norm::rmsnorm_bwd_input_ref,
    norm::rmsnorm_bwd_weight_ref,
    rope::rope_fwd_ref,
    rope::rope_bwd_ref,
    swiglu::swiglu_fwd_ref,
    swiglu::swiglu_bwd_ref,
    attention::attention_fwd_ref,
    attention::attention_bwd_ref,
    loss::cross_entropy_fwd_ref,
    loss::cross_entropy_bwd_ref,
    loss::cross_entropy_fused_ref,
    embedding::embedding_fwd_ref,
    embedding::embedding_bwd_ref,
    route::route_ref,
    route::route_bwd_ref,
    lowp::fake_quantize_fp8,
    lowp::round_bf16_all,
    strided::copy_ref,
    rows::gather_rows_ref,
    rows::scatter_add_rows_ref,
    rows::dot_rows_ref,
    optim::adamw_ref,
    optim::sum_squares_ref,
    grouped::grouped_matmul_ref
);
