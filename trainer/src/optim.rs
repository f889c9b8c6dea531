//! AdamW with decoupled weight decay over the flat parameter buffer (FP32 master weights and
//! moments), global-norm gradient clipping, and DeepSeek-V3's learning-rate shape.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

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
    /// Per element: 1 = decayed, 0 = not, 2 = frozen (buffers). One byte per parameter.
    kind: Vec<u8>,
}

const CHUNK: usize = 1 << 14;

/// Per element: 1 = decayed, 0 = not, 2 = frozen.
fn kinds(layout: &ParamLayout) -> Vec<u8> {
    let mut kind = vec![0u8; layout.len()];
    for s in &layout.specs {
        let k = if !s.trainable() {
            2
        } else {
            u8::from(s.decayed())
        };
        kind[s.range.clone()].fill(k);
    }
    kind
}

impl AdamW {
    /// Fresh state for `layout`.
    pub fn new(cfg: AdamWConfig, layout: &ParamLayout) -> Self {
        let kind = kinds(layout);
        AdamW {
            cfg,
            m: vec![0.0; layout.len()],
            v: vec![0.0; layout.len()],
            t: 0,
            kind,
        }
    }

    /// The state of the parameters in `range` only (ZeRO-1: each data-parallel rank keeps
    /// the moments of its shard); its `step` and `grad_norm` take that range's slices.
    pub fn shard(cfg: AdamWConfig, layout: &ParamLayout, range: std::ops::Range<usize>) -> Self {
        AdamW {
            cfg,
            m: vec![0.0; range.len()],
            v: vec![0.0; range.len()],
            t: 0,
            kind: kinds(layout)[range].to_vec(),
        }
    }

    /// The state of the parameters in `range` of this (full) state: what a ZeRO-1 rank keeps.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        AdamW {
            cfg: self.cfg.clone(),
            m: self.m[range.clone()].to_vec(),
            v: self.v[range.clone()].to_vec(),
            t: self.t,
            kind: self.kind[range].to_vec(),
        }
    }

    /// Global L2 norm of the trainable gradients (summed in f64 over fixed chunks, so the value
    /// does not depend on the thread count).
    pub fn grad_norm(&self, grads: &[f32]) -> f64 {
        grads
            .par_chunks(CHUNK)
            .zip(self.kind.par_chunks(CHUNK))
            .map(|(g, k)| {
                g.iter()
                    .zip(k)
                    .filter(|(_, k)| **k != 2)
                    .map(|(&x, _)| x as f64 * x as f64)
                    .sum::<f64>()
            })
            .collect::<Vec<f64>>()
            .iter()
            .sum::<f64>()
            .sqrt()
    }

    /// One update with learning rate `lr`; the gradients are scaled by `clip_scale` first.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f64, clip_scale: f64) {
        self.t += 1;
        let c = &self.cfg;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        let step = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let (eps, decay, scale) = (
            c.eps as f32,
            (1.0 - lr * c.weight_decay) as f32,
            clip_scale as f32,
        );
        let u = Update {
            b1,
            b2,
            step,
            bc2_sqrt,
            eps,
            decay,
            scale,
            bf16: c.bf16_moments,
        };
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(
                self.m
                    .par_chunks_mut(CHUNK)
                    .zip(self.v.par_chunks_mut(CHUNK)),
            )
            .zip(self.kind.par_chunks(CHUNK))
            .for_each(|(((p, g), (m, v)), k)| u.chunk_dispatch(p, g, m, v, k));
    }
}

/// One step's AdamW constants.
#[derive(Clone, Copy)]
struct Update {
    b1: f32,
    b2: f32,
    step: f32,
    bc2_sqrt: f32,
    eps: f32,
    decay: f32,
    scale: f32,
    bf16: bool,
}

impl Update {
    /// The update of one chunk, branch-free per element (a frozen parameter keeps its values
    /// by selection; no decay is a factor of exactly 1) so that it compiles to vector code:
    /// the same IEEE operations in the same order per element as the plain loop, so the
    /// results are bit-identical on every path.
    #[inline(always)]
    fn chunk(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &[u8]) {
        let n = p.len();
        let (g, m, v, k) = (&g[..n], &mut m[..n], &mut v[..n], &k[..n]);
        for i in 0..n {
            let gi = g[i] * self.scale;
            let mut mi = self.b1 * m[i] + (1.0 - self.b1) * gi;
            let mut vi = self.b2 * v[i] + (1.0 - self.b2) * gi * gi;
            if self.bf16 {
                mi = tokenmill_kernels::bf16::round_bf16(mi);
                vi = tokenmill_kernels::bf16::round_bf16(vi);
            }
            let f = if k[i] == 1 { self.decay } else { 1.0 };
            let pi = p[i] * f - self.step * mi / (vi.sqrt() / self.bc2_sqrt + self.eps);
            let frozen = k[i] == 2;
            m[i] = if frozen { m[i] } else { mi };
            v[i] = if frozen { v[i] } else { vi };
            p[i] = if frozen { p[i] } else { pi };
        }
    }

    /// [`Self::chunk`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn chunk_avx512(
        &self,
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        k: &[u8],
    ) {
        self.chunk(p, g, m, v, k)
    }

    fn chunk_dispatch(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected on this CPU just above.
            unsafe { self.chunk_avx512(p, g, m, v, k) };
            return;
        }
        self.chunk(p, g, m, v, k)
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
    fn the_vector_path_is_bit_identical_to_the_plain_loop() {
        let n = 1037;
        let mut r = crate::rng::Rng::new(7);
        let mut vals = |scale: f32| -> Vec<f32> {
            (0..n).map(|_| (r.uniform() as f32 - 0.5) * scale).collect()
        };
        let (p0, g, m0) = (vals(2.0), vals(1e-2), vals(1e-3));
        let v0: Vec<f32> = vals(1e-4).iter().map(|x| x.abs()).collect();
        let k: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        for bf16 in [false, true] {
            let u = Update {
                b1: 0.9,
                b2: 0.95,
                step: 3e-4,
                bc2_sqrt: 0.3,
                eps: 1e-8,
                decay: 0.99,
                scale: 0.7,
                bf16,
            };
            let (mut p1, mut m1, mut v1) = (p0.clone(), m0.clone(), v0.clone());
            u.chunk(&mut p1, &g, &mut m1, &mut v1, &k);
            let (mut p2, mut m2, mut v2) = (p0.clone(), m0.clone(), v0.clone());
            u.chunk_dispatch(&mut p2, &g, &mut m2, &mut v2, &k);
            for (a, b) in [(&p1, &p2), (&m1, &m2), (&v1, &v2)] {
                assert!(
                    a.iter()
                        .zip(b.iter())
                        .all(|(x, y)| x.to_bits() == y.to_bits())
                );
            }
            // Frozen entries (kind 2) untouched; the others moved.
            for i in 0..n {
                assert_eq!(p1[i].to_bits() == p0[i].to_bits(), k[i] == 2, "{i}");
            }
        }
    }
}
