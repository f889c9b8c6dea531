//! Online loss-spike detection, three detectors and non-finite values (immediately):
//!
//! - **loss** and **gradient norm**: a robust z-score against a trailing window, taken around a
//!   robust linear trend (Theil–Sen: the median of pairwise slopes) so that a loss falling fast
//!   early in training neither hides a spike behind a wide MAD nor reads as one; the scale is
//!   1.4826 × the median absolute residual.
//! - **document**: the mean loss of each document span (with enough targets) against the span
//!   losses of the last steps. A poisoned document moves the batch loss by its share of the
//!   batch — 1/15,360 at DeepSeek-V3's batch size, invisible — but stands out by itself.

use std::collections::{HashMap, VecDeque};

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
    /// Robust z-score of a document span's mean loss (against the spans of the last
    /// `doc_window` steps) that counts as a spike.
    pub doc_z: f64,
    /// Steps whose document spans form the reference distribution.
    pub doc_window: usize,
    /// Targets a span needs to be judged (short spans are noisy).
    pub doc_min_targets: usize,
    /// Nats a flagged span's mean loss must also stand above the reference's median: on a
    /// homogeneous corpus the reference is narrow and a z of 6 can be a fraction of a nat, which
    /// no out-of-distribution document is (calibration in docs/spikes.md). 0: z alone.
    pub doc_min_excess: f64,
    /// What a span is judged against: `global` (every span of the last `doc_window` steps) or
    /// `source` (the spans of its own source — the input file its document came from, from the
    /// provenance tables — when they number at least `doc_source_min`, else every span). In a
    /// dataset that mixes corpora, a corpus whose text is harder than the rest (code, another
    /// language) is not flagged for being itself, and an easy corpus's outliers are judged
    /// against its own narrow spread (calibration in docs/spikes.md).
    pub doc_reference: DocReference,
    /// Spans a source needs in the reference window to be judged against its own.
    pub doc_source_min: usize,
    /// σ of OLMo 2's spike score: the fraction of the window's losses at least this many
    /// standard deviations above the window's mean (logged every step).
    pub score_sigma: f64,
    /// When set, the spike score is also a detector: it fires at a step whose loss is itself
    /// ≥ `score_sigma` σ above the window's mean while the score exceeds this fraction.
    pub score_max: Option<f64>,
    /// What a fired detector does: one of, or a list of, `log` (report only), `skip` (the
    /// step's update is not applied), `quarantine` and `rollback` (both imply `skip`).
    #[serde(deserialize_with = "one_or_many")]
    pub response: Vec<SpikeResponse>,
    /// Documents quarantined per spike: of the spans the document detector flagged, those that
    /// added most to the step's loss. A spike without a flagged document (e.g. a gradient-norm
    /// spike of the optimizer's own making) quarantines nothing.
    pub quarantine_top_k: usize,
    /// Rollback: batches skipped from the checkpoint's loader position. `None` (the default):
    /// when the spike quarantined documents, none — the same batches are replayed without
    /// them; otherwise every batch from the checkpoint through the spike (PaLM's remedy).
    pub rollback_skip: Option<u64>,
    /// Rollbacks allowed per run; later spikes are only skipped (and quarantined).
    pub max_rollbacks: u32,
}

/// What the document detector judges a span against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocReference {
    /// Every span of the reference window.
    Global,
    /// The spans of the same source, when there are enough of them.
    Source,
    /// Every span of the window, each taken relative to the median span loss of its own step
    /// (and the judged spans to theirs): the reference does not lag behind a falling loss.
    #[default]
    Step,
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
    /// Drop the step's update and add the step's `quarantine_top_k` documents that added most
    /// to its loss to the run's exclusion list (`quarantine.json`), from the next batch on, on
    /// resume, and in later runs that name the file in `[data] exclude_from`.
    Quarantine,
    /// Drop the step's update, reload the newest checkpoint at or before the spike, and skip
    /// `rollback_skip` batches from there.
    Rollback,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SpikeResponse>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(SpikeResponse),
        Many(Vec<SpikeResponse>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(r) => vec![r],
        OneOrMany::Many(v) => v,
    })
}

impl SpikeConfig {
    /// Whether `r` is among the responses.
    pub fn responds(&self, r: SpikeResponse) -> bool {
        self.response.contains(&r)
    }
    /// Whether a spiking step's update is dropped.
    pub fn drops_update(&self) -> bool {
        self.response.iter().any(|r| *r != SpikeResponse::Log)
    }
}

impl Default for SpikeConfig {
    fn default() -> Self {
        SpikeConfig {
            window: 100,
            min_history: 20,
            loss_z: 6.0,
            grad_norm_z: 10.0,
            doc_z: 4.5,
            doc_window: 20,
            doc_min_targets: 16,
            doc_min_excess: 1.5,
            doc_reference: DocReference::Step,
            doc_source_min: 64,
            score_sigma: 7.0,
            score_max: None,
            response: vec![SpikeResponse::Log],
            quarantine_top_k: 3,
            rollback_skip: None,
            max_rollbacks: 10,
        }
    }
}

/// (step, centre, (source, loss) per judged span) of one step in the document reference.
type StepSpans = (u64, f64, Vec<(u32, f64)>);

/// Trailing-window detector.
#[derive(Debug, Clone)]
pub struct SpikeDetector {
    cfg: SpikeConfig,
    /// Trailing (step, loss, gradient norm) of finite, non-spiking steps.
    hist: VecDeque<(u64, f64, f64)>,
    /// Trailing (step, its centre — 0, or with `doc_reference = "step"` its median span
    /// loss —, (source, span loss) of its judged spans) of non-spiking steps.
    docs: VecDeque<StepSpans>,
}

/// One document span of a step, as the detector sees it.
#[derive(Debug, Clone, Copy)]
pub struct SpanLoss {
    /// Sample in the batch.
    pub sample: usize,
    /// Span in the sample.
    pub span: usize,
    /// Mean loss of its targets.
    pub loss: f64,
    /// Its targets.
    pub targets: usize,
    /// Its document's source (an index the caller keeps per input file; 0 when unknown).
    pub source: u32,
}

/// What the detectors measured at one step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Detectors that fired (e.g. `"loss z=8.1"`, `"doc z=9.0 (sample 3)"`,
    /// `"non-finite loss"`).
    pub fired: Vec<String>,
    /// The loss's z-score (absent before `min_history` steps or when the scale is 0).
    pub loss_z: Option<f64>,
    /// The gradient norm's z-score (absent likewise).
    pub grad_norm_z: Option<f64>,
    /// The highest document z-score, and its (sample, span).
    pub doc_z: Option<(f64, usize, usize)>,
    /// (sample, span, z) of every span at or above `doc_z`: the documents a quarantine takes.
    pub outliers: Vec<(usize, usize, f64)>,
    /// The document detector's global reference: the median span loss of the window and its
    /// robust scale (1.4826 × MAD).
    pub doc_reference: Option<(f64, f64)>,
    /// (sample, span, median, scale) of every judged span: the reference it was judged
    /// against (its source's, or the global one).
    pub judged: Vec<(usize, usize, f64, f64)>,
}

fn median(v: &mut [f64]) -> f64 {
    let m = v.len() / 2;
    *v.select_nth_unstable_by(m, f64::total_cmp).1
}

/// A step's centre for the `step` reference: the median loss of its judged spans (of the step
/// loss with fewer than three).
fn step_center(judged: &[&SpanLoss], step_loss: f64) -> f64 {
    if judged.len() < 3 {
        return step_loss;
    }
    let mut v: Vec<f64> = judged.iter().map(|s| s.loss).collect();
    median(&mut v)
}

/// `(x − median) / (1.4826 · MAD)` of `x` against `hist` (`None` when MAD is 0).
pub fn robust_z(hist: &[f64], x: f64) -> Option<f64> {
    robust_scale(hist).map(|(med, mad)| (x - med) / mad)
}

/// The median of `hist` and 1.4826 × its median absolute deviation (`None` when that is 0):
/// computed once per step, so judging every span of a batch costs O(1) each.
pub fn robust_scale(hist: &[f64]) -> Option<(f64, f64)> {
    if hist.is_empty() {
        return None;
    }
    let mut v = hist.to_vec();
    let med = median(&mut v);
    let mut dev: Vec<f64> = v.iter().map(|y| (y - med).abs()).collect();
    let mad = median(&mut dev) * 1.4826;
    (mad > 0.0).then_some((med, mad))
}

/// Robust z-score of `y` at `t` around the Theil–Sen line of the points `(t_i, y_i)`:
/// `(y − (a + b t)) / (1.4826 · median |residual|)` (`None` with < 3 points or a 0 scale).
pub fn trend_z(points: &[(f64, f64)], t: f64, y: f64) -> Option<f64> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let dt = points[j].0 - points[i].0;
            if dt != 0.0 {
                slopes.push((points[j].1 - points[i].1) / dt);
            }
        }
    }
    let b = if slopes.is_empty() {
        0.0
    } else {
        median(&mut slopes)
    };
    let mut icpt: Vec<f64> = points.iter().map(|p| p.1 - b * p.0).collect();
    let a = median(&mut icpt);
    let mut res: Vec<f64> = points.iter().map(|p| (p.1 - a - b * p.0).abs()).collect();
    let scale = median(&mut res) * 1.4826;
    (scale > 0.0).then(|| (y - a - b * t) / scale)
}

/// OLMo 2's spike score of a window: the fraction of values at least `sigma` standard
/// deviations above the window's mean.
pub fn spike_score(window: &[f64], sigma: f64) -> f64 {
    match mean_sd(window) {
        Some((mean, sd)) => {
            window.iter().filter(|&&x| x - mean >= sigma * sd).count() as f64 / window.len() as f64
        }
        None => 0.0,
    }
}

/// Mean and (population) standard deviation of a window of ≥ 2 values with some spread.
fn mean_sd(window: &[f64]) -> Option<(f64, f64)> {
    let n = window.len() as f64;
    if window.len() < 2 {
        return None;
    }
    let mean = window.iter().sum::<f64>() / n;
    let sd = (window.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    (sd > 0.0).then_some((mean, sd))
}

/// The spike-score detector (`score_max` set): fires when `loss` (the window's newest value) is
/// itself ≥ `score_sigma` σ above the window's mean and the window's score exceeds `score_max`.
pub fn score_fires(window: &[f64], loss: f64, cfg: &SpikeConfig) -> Option<String> {
    let max = cfg.score_max?;
    let (mean, sd) = mean_sd(window)?;
    let score = spike_score(window, cfg.score_sigma);
    (score > max && loss - mean >= cfg.score_sigma * sd).then(|| format!("spike score={score:.3}"))
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
            hist: VecDeque::new(),
            docs: VecDeque::new(),
        }
    }

    /// Looks at step `step`: its loss, gradient norm and document spans. Only finite,
    /// non-spiking steps enter the history, so a spike does not mask the next one.
    pub fn observe(
        &mut self,
        step: u64,
        loss: f64,
        grad_norm: f64,
        spans: &[SpanLoss],
    ) -> Observation {
        let mut o = Observation::default();
        if !loss.is_finite() {
            o.fired.push("non-finite loss".to_string());
        }
        if !grad_norm.is_finite() {
            o.fired.push("non-finite gradient norm".to_string());
        }
        if !o.fired.is_empty() {
            return o;
        }
        let judged: Vec<&SpanLoss> = spans
            .iter()
            .filter(|s| s.targets >= self.cfg.doc_min_targets && s.loss.is_finite())
            .collect();
        if self.hist.len() >= self.cfg.min_history {
            let pts = |k: usize| -> Vec<(f64, f64)> {
                self.hist
                    .iter()
                    .map(|h| (h.0 as f64, if k == 0 { h.1 } else { h.2 }))
                    .collect()
            };
            o.loss_z = trend_z(&pts(0), step as f64, loss);
            o.grad_norm_z = trend_z(&pts(1), step as f64, grad_norm);
            if let Some(z) = o.loss_z.filter(|z| *z >= self.cfg.loss_z) {
                o.fired.push(format!("loss z={z:.1}"));
            }
            if let Some(z) = o.grad_norm_z.filter(|z| *z >= self.cfg.grad_norm_z) {
                o.fired.push(format!("grad-norm z={z:.1}"));
            }
            // `step`: every loss is taken relative to its own step's median span loss, so
            // that the reference does not lag behind a loss that falls while training.
            let centred = self.cfg.doc_reference == DocReference::Step;
            let center = if centred {
                step_center(&judged, loss)
            } else {
                0.0
            };
            let reference: Vec<f64> = self
                .docs
                .iter()
                .flat_map(|d| d.2.iter().map(move |x| x.1 - d.1))
                .collect();
            if reference.len() >= 3 {
                let global = robust_scale(&reference);
                o.doc_reference = global;
                // Per source among the judged spans: its own reference when it has enough
                // spans (computed once per source and step).
                let mut by_source: HashMap<u32, Option<(f64, f64)>> = HashMap::new();
                if self.cfg.doc_reference == DocReference::Source {
                    let mut own: HashMap<u32, Vec<f64>> =
                        judged.iter().map(|s| (s.source, Vec::new())).collect();
                    for &(src, loss) in self.docs.iter().flat_map(|d| d.2.iter()) {
                        if let Some(v) = own.get_mut(&src) {
                            v.push(loss);
                        }
                    }
                    for (src, v) in own {
                        let enough = v.len() >= self.cfg.doc_source_min.max(3);
                        by_source.insert(src, if enough { robust_scale(&v) } else { global });
                    }
                }
                // (z, sample, span, nats above the reference's median)
                let mut zs: Vec<(f64, usize, usize, f64)> = Vec::with_capacity(judged.len());
                for s in &judged {
                    let scale = by_source.get(&s.source).copied().unwrap_or(global);
                    if let Some((med, mad)) = scale {
                        // back in loss units: the reference's median over this step's centre
                        let med = med + center;
                        o.judged.push((s.sample, s.span, med, mad));
                        zs.push(((s.loss - med) / mad, s.sample, s.span, s.loss - med));
                    }
                }
                o.doc_z = zs
                    .iter()
                    .map(|z| (z.0, z.1, z.2))
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                // Flagged: the z threshold and the minimum excess both reached.
                o.outliers = zs
                    .iter()
                    .filter(|z| z.0 >= self.cfg.doc_z && z.3 >= self.cfg.doc_min_excess)
                    .map(|&(z, i, j, _)| (i, j, z))
                    .collect();
                if let Some(&(smp, _, z)) = o.outliers.iter().max_by(|a, b| a.2.total_cmp(&b.2)) {
                    o.fired.push(format!("doc z={z:.1} (sample {smp})"));
                }
            }
        }
        if o.fired.is_empty() {
            self.hist.push_back((step, loss, grad_norm));
            if self.hist.len() > self.cfg.window {
                self.hist.pop_front();
            }
            let center = if self.cfg.doc_reference == DocReference::Step {
                step_center(&judged, loss)
            } else {
                0.0
            };
            self.docs.push_back((
                step,
                center,
                judged.iter().map(|s| (s.source, s.loss)).collect(),
            ));
            if self.docs.len() > self.cfg.doc_window {
                self.docs.pop_front();
            }
        }
        o
    }

    /// Forgets the steps from `step` on (they were rolled back).
    pub fn forget_from(&mut self, step: u64) {
        while self.hist.back().is_some_and(|h| h.0 >= step) {
            self.hist.pop_back();
        }
        while self.docs.back().is_some_and(|h| h.0 >= step) {
            self.docs.pop_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(i: u64) -> f64 {
        ((i * 7919) % 13) as f64 / 13.0 - 0.5
    }

    #[test]
    fn a_jump_fires_and_noise_and_a_slow_decline_do_not() {
        let mut d = SpikeDetector::new(SpikeConfig::default());
        let mut fired = Vec::new();
        for i in 0..300 {
            // declining loss with ±1 % noise, a spike at step 200
            let mut loss = 4.0 - i as f64 * 0.003 + noise(i) * 0.04;
            let g = 1.0 + noise(i) * 0.1;
            if i == 200 {
                loss += 2.0;
            }
            if !d.observe(i, loss, g, &[]).fired.is_empty() {
                fired.push(i);
            }
        }
        assert_eq!(fired, vec![200]);
        assert_eq!(
            d.observe(300, f64::NAN, 1.0, &[]).fired,
            vec!["non-finite loss".to_string()]
        );
        assert!(d.observe(301, 3.0, 1e6, &[]).fired[0].starts_with("grad-norm z="));
    }

    #[test]
    fn the_trend_keeps_a_fast_decline_from_hiding_a_jump() {
        // Early training: the loss falls 8 → 5 over 100 steps; a +0.5 jump at step 90 is
        // ~25 noise widths above the trend but inside the window's spread around its median.
        let loss = |i: u64| 5.0 + 3.0 * (-(i as f64) / 40.0).exp() + noise(i) * 0.04;
        let pts: Vec<(f64, f64)> = (0..90).map(|i| (i as f64, loss(i))).collect();
        let plain = robust_z(&pts.iter().map(|p| p.1).collect::<Vec<_>>(), loss(90) + 0.5);
        let trend = trend_z(&pts[40..], 90.0, loss(90) + 0.5).unwrap();
        assert!(plain.unwrap() < 2.0, "{plain:?}");
        assert!(trend > 6.0, "{trend}");
        // and the decline itself never fires
        let mut d = SpikeDetector::new(SpikeConfig::default());
        assert!((0..300).all(|i| d.observe(i, loss(i), 1.0, &[]).fired.is_empty()));
    }

    #[test]
    fn one_document_far_above_the_others_fires_the_document_detector() {
        let mut d = SpikeDetector::new(SpikeConfig::default());
        let spans = |i: u64, extra: f64| -> Vec<SpanLoss> {
            (0..8)
                .map(|k| SpanLoss {
                    sample: k,
                    span: 0,
                    loss: 4.0 + noise(i * 8 + k as u64) * 0.6 + if k == 5 { extra } else { 0.0 },
                    targets: 64,
                    source: 0,
                })
                .collect()
        };
        for i in 0..40 {
            let o = d.observe(i, 4.0 + noise(i) * 0.05, 1.0, &spans(i, 0.0));
            assert!(o.fired.is_empty(), "{i}: {o:?}");
        }
        let o = d.observe(40, 4.0, 1.0, &spans(40, 4.0));
        assert_eq!(o.doc_z.map(|d| (d.1, d.2)), Some((5, 0)));
        assert!(o.fired[0].starts_with("doc z="), "{o:?}");
        // A short span is not judged.
        let mut short = spans(41, 4.0);
        short[5].targets = 8;
        assert!(d.observe(41, 4.0, 1.0, &short).fired.is_empty());
    }

    /// Flags of a run of 80 steps of 8 spans each: `level(step, sample)` plus noise, and at
    /// step 60 sample 5 `extra` nats higher.
    fn flags(
        reference: DocReference,
        level: impl Fn(u64, usize) -> f64,
        source: impl Fn(usize) -> u32,
        extra: f64,
    ) -> Vec<(u64, usize)> {
        let mut d = SpikeDetector::new(SpikeConfig {
            doc_reference: reference,
            doc_source_min: 32,
            ..Default::default()
        });
        let mut out = Vec::new();
        for i in 0..80u64 {
            let spans: Vec<SpanLoss> = (0..8)
                .map(|k| SpanLoss {
                    sample: k,
                    span: 0,
                    loss: level(i, k)
                        + noise(i * 8 + k as u64) * 0.2
                        + if i == 60 && k == 5 { extra } else { 0.0 },
                    targets: 64,
                    source: source(k),
                })
                .collect();
            let o = d.observe(i, 4.0, 1.0, &spans);
            out.extend(o.outliers.iter().map(|&(smp, _, _)| (i, smp)));
        }
        out
    }

    #[test]
    fn the_step_reference_keeps_up_with_a_falling_loss() {
        // Every document's loss falls 0.05 nats a step: the window's spans sit ~0.5 nats above
        // the current step's, and a span 1.7 nats above its step stands only ~1.2 above them.
        let falling = |i: u64, _| 7.0 - 0.05 * i as f64;
        let one = |_| 0;
        assert_eq!(flags(DocReference::Step, falling, one, 1.7), vec![(60, 5)]);
        assert_eq!(flags(DocReference::Global, falling, one, 1.7), vec![]);
        // and neither fires without the outlier
        assert_eq!(flags(DocReference::Step, falling, one, 0.0), vec![]);
        assert_eq!(flags(DocReference::Global, falling, one, 0.0), vec![]);
    }

    #[test]
    fn the_source_reference_judges_a_harder_source_against_itself() {
        // Samples 6 and 7 come from a source 2.5 nats harder (code, another language): judged
        // against every span they are outliers at every step; against their own source none.
        let level = |_, k: usize| if k >= 6 { 6.5 } else { 4.0 };
        let source = |k: usize| u32::from(k >= 6);
        let global = flags(DocReference::Global, level, source, 0.0);
        assert!(global.len() > 100, "{}", global.len());
        assert_eq!(flags(DocReference::Source, level, source, 0.0), vec![]);
        // A document 2 nats above the easy source is still caught, against its own source.
        assert_eq!(
            flags(DocReference::Source, level, source, 2.0),
            vec![(60, 5)]
        );
        // Too few spans of a source in the window (here 32 needed): the global reference.
        let rare = |k: usize| u32::from(k == 7);
        let level = |_, k: usize| if k == 7 { 6.5 } else { 4.0 };
        assert_eq!(
            flags(DocReference::Source, level, rare, 0.0),
            flags(DocReference::Global, level, rare, 0.0)
        );
    }

    #[test]
    fn the_spike_score_detector_fires_on_the_outlier_only_when_enabled() {
        let mut w: Vec<f64> = (0..99).map(|i| 3.0 + noise(i) * 0.02).collect();
        w.push(9.0);
        let mut cfg = SpikeConfig::default();
        assert_eq!(score_fires(&w, 9.0, &cfg), None, "off by default");
        cfg.score_max = Some(0.0);
        assert_eq!(
            score_fires(&w, 9.0, &cfg).as_deref(),
            Some("spike score=0.010")
        );
        assert_eq!(score_fires(&w[..99], w[98], &cfg), None);
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
