//! Online loss-spike detection: a robust z-score of the loss and of the gradient norm against
//! the median and MAD of a trailing window, and non-finite values (immediately).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// `[train.spikes]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpikeConfig {
    /// Trailing steps the statistics are taken over.
    pub window: usize,
    /// Steps of history before the z-score detectors fire.
    pub min_history: usize,
    /// Robust z-score of the loss that counts as a spike.
    pub loss_z: f64,
    /// Robust z-score of the gradient norm that counts as a spike.
    pub grad_norm_z: f64,
    /// σ of OLMo 2's spike score: the fraction of the window's losses at least this many
    /// standard deviations above the window's mean (logged every step).
    pub score_sigma: f64,
    /// What a fired detector does: `log` (report only) or `skip` (the step's update is not
    /// applied).
    pub response: SpikeResponse,
    /// Documents quarantined per spike.
    pub quarantine_top_k: usize,
}

/// The response to a spike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpikeResponse {
    /// Report only.
    #[default]
    Log,
    /// Drop the step's update.
    Skip,
    /// Drop the step's update and add the step's `quarantine_top_k` highest-loss documents to
    /// the run's exclusion list (`quarantine.json`), from the next batch on, on resume, and in
    /// later runs that name the file in `[data] exclude_from`.
    Quarantine,
}

impl Default for SpikeConfig {
    fn default() -> Self {
        SpikeConfig {
            window: 100,
            min_history: 20,
            loss_z: 6.0,
            grad_norm_z: 6.0,
            score_sigma: 7.0,
            response: SpikeResponse::Log,
            quarantine_top_k: 3,
        }
    }
}

/// Trailing-window detector.
#[derive(Debug, Clone)]
pub struct SpikeDetector {
    cfg: SpikeConfig,
    loss: VecDeque<f64>,
    gnorm: VecDeque<f64>,
}

/// `(x − median) / (1.4826 · MAD)` of `x` against `hist` (`None` when MAD is 0).
pub fn robust_z(hist: &VecDeque<f64>, x: f64) -> Option<f64> {
    let mut v: Vec<f64> = hist.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    let med = v[v.len() / 2];
    let mut dev: Vec<f64> = v.iter().map(|y| (y - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = dev[dev.len() / 2] * 1.4826;
    (mad > 0.0).then(|| (x - med) / mad)
}

/// OLMo 2's spike score of a window: the fraction of values at least `sigma` standard
/// deviations above the window's mean.
pub fn spike_score(window: &[f64], sigma: f64) -> f64 {
    let n = window.len();
    if n < 2 {
        return 0.0;
    }
    let mean = window.iter().sum::<f64>() / n as f64;
    let sd = (window.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    if sd == 0.0 {
        return 0.0;
    }
    window.iter().filter(|&&x| x - mean >= sigma * sd).count() as f64 / n as f64
}

impl SpikeDetector {
    /// The settings.
    pub fn config(&self) -> &SpikeConfig {
        &self.cfg
    }
    /// A detector with `cfg`.
    pub fn new(cfg: SpikeConfig) -> Self {
        SpikeDetector {
            cfg,
            loss: VecDeque::new(),
            gnorm: VecDeque::new(),
        }
    }

    /// Looks at one step; returns what fired (e.g. `"loss z=8.1"`, `"non-finite loss"`). Only
    /// finite, non-spiking values enter the history, so a spike does not mask the next one.
    pub fn observe(&mut self, loss: f64, grad_norm: f64) -> Vec<String> {
        let mut fired = Vec::new();
        if !loss.is_finite() {
            fired.push("non-finite loss".to_string());
        }
        if !grad_norm.is_finite() {
            fired.push("non-finite gradient norm".to_string());
        }
        if !fired.is_empty() {
            return fired;
        }
        if self.loss.len() >= self.cfg.min_history {
            if let Some(z) = robust_z(&self.loss, loss).filter(|z| *z >= self.cfg.loss_z) {
                fired.push(format!("loss z={z:.1}"));
            }
            if let Some(z) = robust_z(&self.gnorm, grad_norm).filter(|z| *z >= self.cfg.grad_norm_z)
            {
                fired.push(format!("grad-norm z={z:.1}"));
            }
        }
        if fired.is_empty() {
            self.loss.push_back(loss);
            self.gnorm.push_back(grad_norm);
            if self.loss.len() > self.cfg.window {
                self.loss.pop_front();
                self.gnorm.pop_front();
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_fires_and_noise_and_a_slow_decline_do_not() {
        let mut d = SpikeDetector::new(SpikeConfig::default());
        let mut fired = Vec::new();
        for i in 0..300 {
            // declining loss with ±1 % noise, a spike at step 200
            let noise = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
            let mut loss = 4.0 - i as f64 * 0.003 + noise * 0.04;
            let g = 1.0 + noise * 0.1;
            if i == 200 {
                loss += 2.0;
            }
            if !d.observe(loss, g).is_empty() {
                fired.push(i);
            }
        }
        assert_eq!(fired, vec![200]);
        assert_eq!(
            d.observe(f64::NAN, 1.0),
            vec!["non-finite loss".to_string()]
        );
        assert!(d.observe(3.0, 1e6)[0].starts_with("grad-norm z="));
    }

    #[test]
    fn spike_score_counts_far_outliers() {
        let mut w = vec![1.0; 99];
        assert_eq!(spike_score(&w, 7.0), 0.0);
        w.push(100.0);
        assert!((spike_score(&w, 7.0) - 0.01).abs() < 1e-12);
        assert_eq!(spike_score(&w, 20.0), 0.0);
    }
}
