//! AdamW with decoupled weight decay over the flat parameter buffer (FP32 master weights and
//! moments), global-norm gradient clipping, and DeepSeek-V3's learning-rate shape.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use tokenmill_kernels::Cpu;
use tokenmill_kernels::backend::{AdamStep, Backend};
use tokenmill_kernels::cpu::optim;

use crate::params::ParamLayout;

/// Optimizer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay (linear weights only).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off).
    pub clip: f64,
    /// Store the moments rounded to BF16 after each update (DeepSeek-V3 §3.3.3).
    pub bf16_moments: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            clip: 1.0,
            bf16_moments: false,
        }
    }
}

/// Learning rate over steps: linear warmup to `peak`, constant, cosine decay to `min`, then
/// constant at `min` (DeepSeek-V3 §4.2's shape, in steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Final learning rate.
    pub min: f64,
    /// Linear warmup steps.
    pub warmup: u64,
    /// Steps at `peak` after warmup.
    pub constant: u64,
    /// Cosine decay steps.
    pub decay: u64,
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule {
            peak: 2.2e-4,
            min: 2.2e-5,
            warmup: 2000,
            constant: 0,
            decay: 0,
        }
    }
}

impl LrSchedule {
    /// Learning rate of step `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let s = step - self.warmup;
        if s < self.constant {
            return self.peak;
        }
        let s = s - self.constant;
        if s < self.decay {
            let t = s as f64 / self.decay as f64;
            return self.min
                + (self.peak - self.min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        }
        if self.decay == 0 { self.peak } else { self.min }
    }
}

/// AdamW state: first and second moments `[params]`, and the step count.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Settings.
    pub cfg: AdamWConfig,
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// Updates applied.
    pub t: u64,
    /// Per element: [`AdamStep::PLAIN`], [`AdamStep::DECAYED`] or [`AdamStep::FROZEN`]
    /// (buffers). One byte per parameter.
    kind: Vec<u8>,
    /// The trainable elements as segments of at most [`SEGMENT`] (the gradient norm's sums),
    /// kept from step to step.
    segs: Vec<Range<usize>>,
}

/// Elements per segment of a sum of squares (one GPU block's work).
pub const SEGMENT: usize = 1 << 14;

/// Per element: its [`AdamStep`] kind.
fn kinds(layout: &ParamLayout) -> Vec<u8> {
    let mut kind = vec![AdamStep::PLAIN; layout.len()];
    for s in &layout.specs {
        let k = if !s.trainable() {
            AdamStep::FROZEN
        } else if s.decayed() {
            AdamStep::DECAYED
        } else {
            AdamStep::PLAIN
        };
        kind[s.range.clone()].fill(k);
    }
    kind
}

/// The runs of elements not frozen, cut at multiples of [`SEGMENT`].
fn trainable_segments(kind: &[u8]) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < kind.len() {
        if kind[i] == AdamStep::FROZEN {
            i += 1;
            continue;
        }
        let a = i;
        while i < kind.len() && kind[i] != AdamStep::FROZEN && (i == a || i % SEGMENT != 0) {
            i += 1;
        }
        runs.push(a..i);
    }
    runs
}

impl AdamW {
    fn with_kind(cfg: AdamWConfig, kind: Vec<u8>) -> Self {
        let n = kind.len();
        AdamW {
            cfg,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
            segs: trainable_segments(&kind),
            kind,
        }
    }

    /// Fresh state for `layout`.
    pub fn new(cfg: AdamWConfig, layout: &ParamLayout) -> Self {
        Self::with_kind(cfg, kinds(layout))
    }

    /// The state of the parameters in `range` only (ZeRO-1: each data-parallel rank keeps
    /// the moments of its shard); its `step` and `grad_norm` take that range's slices.
    pub fn shard(cfg: AdamWConfig, layout: &ParamLayout, range: Range<usize>) -> Self {
        Self::with_kind(cfg, kinds(layout)[range].to_vec())
    }

    /// The state of the parameters in `range` of this (full) state: what a ZeRO-1 rank keeps.
    pub fn slice(&self, range: Range<usize>) -> Self {
        let mut s = Self::with_kind(self.cfg.clone(), self.kind[range.clone()].to_vec());
        s.m = self.m[range.clone()].to_vec();
        s.v = self.v[range].to_vec();
        s.t = self.t;
        s
    }

    /// Global L2 norm of the trainable gradients, on the host's CPU ([`AdamW::grad_norm_on`]).
    pub fn grad_norm(&self, grads: &[f32]) -> f64 {
        self.grad_norm_on(&Cpu, grads)
    }

    /// Global L2 norm of the trainable gradients: each segment's sum of squares in f64 in the
    /// kernels' fixed lane order (`Backend::sum_squares`), then the segments' sums in order, so
    /// the value depends neither on the thread count nor on the backend. On `be` when it keeps
    /// its data ([`Backend::moves_data`]), else on the host with the same kernel.
    pub fn grad_norm_on(&self, be: &dyn Backend<f32>, grads: &[f32]) -> f64 {
        assert_eq!(grads.len(), self.kind.len(), "gradients of another layout");
        let mut sums = vec![0f64; self.segs.len()];
        if be.moves_data() {
            be.sum_squares(grads, &self.segs, &mut sums);
        } else {
            optim::sum_squares(grads, &self.segs, &mut sums);
        }
        sums.iter().sum::<f64>().sqrt()
    }

    /// One update with learning rate `lr`, on the host's CPU ([`AdamW::step_on`]).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f64, clip_scale: f64) {
        self.step_on(&Cpu, params, grads, lr, clip_scale)
    }

    /// One update with learning rate `lr`; the gradients are scaled by `clip_scale` first. On
    /// `be` when it keeps its data ([`Backend::moves_data`]: the parameters, gradients and
    /// moments stay where it computes), else on the host; the same bits either way.
    pub fn step_on(
        &mut self,
        be: &dyn Backend<f32>,
        params: &mut [f32],
        grads: &[f32],
        lr: f64,
        clip_scale: f64,
    ) {
        self.t += 1;
        let c = &self.cfg;
        let s = AdamStep::new(
            c.beta1,
            c.beta2,
            c.eps,
            c.weight_decay,
            lr,
            self.t,
            clip_scale,
            c.bf16_moments,
        );
        let (m, v) = (&mut self.m, &mut self.v);
        if be.moves_data() {
            // Parameters and both moments written: one deferred scope, one wait.
            crate::ops::deferred(be, || be.adamw(s, &self.kind, params, grads, m, v));
        } else {
            optim::adamw(s, &self.kind, params, grads, m, v);
        }
    }
}

/// The factor that brings a gradient of norm `norm` to at most `max` (PyTorch's
/// `clip_grad_norm_`: `max / (norm + 1e-6)`, capped at 1).
pub fn clip_scale(norm: f64, max: f64) -> f64 {
    if max <= 0.0 {
        1.0
    } else {
        (max / (norm + 1e-6)).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamKind;

    #[test]
    fn schedule_shape() {
        let s = LrSchedule {
            peak: 1.0,
            min: 0.1,
            warmup: 10,
            constant: 5,
            decay: 10,
        };
        assert!((s.at(0) - 0.1).abs() < 1e-12);
        assert_eq!(s.at(9), 1.0);
        assert_eq!(s.at(14), 1.0);
        assert_eq!(s.at(15), 1.0);
        assert!((s.at(20) - 0.55).abs() < 1e-12, "{}", s.at(20));
        assert!((s.at(25) - 0.1).abs() < 1e-12);
        assert_eq!(s.at(1000), 0.1);
    }

    /// Against PyTorch's AdamW update rule written out in f64.
    #[test]
    fn adamw_matches_the_update_rule_and_skips_decay_and_buffers() {
        let mut l = ParamLayout::default();
        l.add("w", &[2], ParamKind::Linear);
        l.add("n", &[1], ParamKind::Norm);
        l.add("b", &[1], ParamKind::Buffer);
        let mut opt = AdamW::new(AdamWConfig::default(), &l);
        let mut p = vec![0.5f32, -0.25, 1.0, 0.3];
        let grads = [[0.1f32, -0.2, 0.3, 9.0], [0.05, 0.1, -0.1, 9.0]];
        let mut r: Vec<f64> = p.iter().map(|&x| x as f64).collect();
        let (mut m, mut v) = (vec![0.0f64; 4], vec![0.0f64; 4]);
        for (t, g) in grads.iter().enumerate() {
            let lr = 1e-2;
            opt.step(&mut p, g, lr, 1.0);
            for i in 0..3 {
                let gi = g[i] as f64;
                m[i] = 0.9 * m[i] + 0.1 * gi;
                v[i] = 0.95 * v[i] + 0.05 * gi * gi;
                if i < 2 {
                    r[i] *= 1.0 - lr * 0.1;
                }
                let mh = m[i] / (1.0 - 0.9f64.powi(t as i32 + 1));
                let vh = v[i] / (1.0 - 0.95f64.powi(t as i32 + 1));
                r[i] -= lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        for i in 0..3 {
            assert!(
                (p[i] as f64 - r[i]).abs() < 1e-6,
                "{i}: {} vs {}",
                p[i],
                r[i]
            );
        }
        assert_eq!(p[3], 0.3, "a buffer is never updated");
        assert!(
            (opt.grad_norm(&[3.0, 4.0, 0.0, 100.0]) - 5.0).abs() < 1e-12,
            "buffers are not in the norm"
        );
        assert!((clip_scale(5.0, 1.0) - 1.0 / (5.0 + 1e-6)).abs() < 1e-12);
        assert_eq!(clip_scale(0.5, 1.0), 1.0);
    }

    #[test]
    fn the_norms_segments_skip_buffers_and_are_cut_at_segment_boundaries() {
        let (a, f, p) = (AdamStep::DECAYED, AdamStep::FROZEN, AdamStep::PLAIN);
        let mut kind = vec![a; SEGMENT + 10];
        kind[3..5].fill(f);
        kind.extend([f, f, p, p]);
        let n = kind.len();
        assert_eq!(
            trainable_segments(&kind),
            vec![0..3, 5..SEGMENT, SEGMENT..SEGMENT + 10, n - 2..n]
        );
    }

    /// The update and the norm run on a backend that keeps its data, and on the host for one
    /// that copies every call (the copying seam): the same bits, and the seam sees the calls
    /// only in the first case.
    #[test]
    fn the_optimizer_runs_where_the_backend_keeps_its_data_with_the_same_bits() {
        use tokenmill_kernels::backend::Metered;
        let mut l = ParamLayout::default();
        l.add("w", &[3, 7000], ParamKind::Linear);
        l.add("n", &[5000], ParamKind::Norm);
        l.add("b", &[64], ParamKind::Buffer);
        let mut r = crate::rng::Rng::new(3);
        let p0: Vec<f32> = (0..l.len()).map(|_| r.normal() as f32).collect();
        let g: Vec<f32> = (0..l.len()).map(|_| r.normal() as f32 * 1e-2).collect();
        let run = |be: &dyn Backend<f32>| {
            let mut opt = AdamW::new(AdamWConfig::default(), &l);
            let mut p = p0.clone();
            let norm = opt.grad_norm_on(be, &g);
            opt.step_on(be, &mut p, &g, 1e-3, clip_scale(norm, 1.0));
            (
                norm.to_bits(),
                p.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            )
        };
        let host = run(&Cpu);
        let copying = Metered::new(&Cpu as &dyn Backend<f32>);
        assert_eq!(run(&copying), host);
        assert_eq!(copying.total().calls, 0, "{:?}", copying.traffic());
        let resident = Metered::new(&Cpu as &dyn Backend<f32>).resident();
        assert_eq!(run(&resident), host);
        let ops = resident.traffic();
        assert_eq!((ops["adamw"].calls, ops["sum_squares"].calls), (1, 1));
        // The norm: every trainable element once, the buffer not.
        let want: f64 = g[..21_000 + 5000]
            .iter()
            .map(|&x| x as f64 * x as f64)
            .sum();
        assert!((f64::from_bits(host.0) - want.sqrt()).abs() < 1e-12 * want.sqrt());
    }
}
