//! A step's per-sample and per-document-span figures: each sample's loss, and per document
//! span its mean loss, its peak token and its counted targets — measured from the forward's
//! token losses, gathered over the ranks of a run across processes, handed to the spike
//! detectors and written as rows of the loss table ([`crate::losslog`]).

use tokenmill_shards::loader::Sample;

use super::log::StepLog;
use crate::error::Result;
use crate::losslog::LossRow;
use crate::spikes::SpanLoss;

/// Per-sample figures of a step, in batch order.
#[derive(Debug, Default)]
pub(super) struct SampleStats {
    /// Per sample: mean loss over its counted targets.
    pub(super) sample_losses: Vec<f64>,
    /// Per sample, per document span: mean loss of the targets inside the span (NaN without
    /// any).
    pub(super) span_losses: Vec<Vec<f64>>,
    /// Per sample, per document span: (token position in the document, loss) of the target
    /// with the highest loss; `None` without a finite one.
    pub(super) span_peaks: Vec<Vec<Option<(u64, f64)>>>,
    /// Per sample, per document span: the targets counted.
    pub(super) span_counts: Vec<Vec<usize>>,
}

impl SampleStats {
    /// Room for `n` samples.
    pub(super) fn with_capacity(n: usize) -> Self {
        SampleStats {
            sample_losses: Vec::with_capacity(n),
            span_losses: Vec::with_capacity(n),
            span_peaks: Vec::with_capacity(n),
            span_counts: Vec::with_capacity(n),
        }
    }

    /// Adds a sample's figures from its `s` token losses `tl` (target `i` predicts token
    /// `i + 1`).
    pub(super) fn push(&mut self, smp: &Sample, tl: &[f32], s: usize) {
        // Target i predicts token i + 1: a span's losses are those of its tokens 1.. .
        let (mut losses, mut peaks, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        for sp in &smp.spans {
            let (a, b) = ((sp.start as usize).max(1), (sp.start + sp.len) as usize);
            let (mut sum, mut n, mut peak) = (0.0, 0usize, None::<(u64, f64)>);
            for t in (a..b.min(s + 1)).filter(|&t| smp.loss_mask[t - 1] != 0) {
                let l = tl[t - 1] as f64;
                sum += l;
                n += 1;
                if l.is_finite() && peak.is_none_or(|p| l > p.1) {
                    peak = Some((sp.doc_offset + (t as u64 - sp.start as u64), l));
                }
            }
            // NaN: a span with no target (e.g. one token at position 0, or masked).
            losses.push(if n == 0 { f64::NAN } else { sum / n as f64 });
            peaks.push(peak);
            counts.push(n);
        }
        self.span_losses.push(losses);
        self.span_peaks.push(peaks);
        self.span_counts.push(counts);
        let cnt = smp.loss_mask.iter().filter(|&&m| m != 0).count().max(1);
        self.sample_losses
            .push(tl.iter().map(|&x| x as f64).sum::<f64>() / cnt as f64);
    }

    /// Every rank's figures, in rank order (the global batch's sample order): each sample
    /// travels as `[loss, spans, (loss, targets, has peak, peak position, peak loss) per
    /// span]`.
    pub(super) fn gather(&self, world: &dyn tokenmill_comm::Communicator) -> Result<Self> {
        let mut flat = Vec::new();
        for (i, &l) in self.sample_losses.iter().enumerate() {
            flat.push(l);
            flat.push(self.span_losses[i].len() as f64);
            for j in 0..self.span_losses[i].len() {
                let peak = self.span_peaks[i][j];
                flat.extend([
                    self.span_losses[i][j],
                    self.span_counts[i][j] as f64,
                    f64::from(u8::from(peak.is_some())),
                    peak.map_or(0.0, |p| p.0 as f64),
                    peak.map_or(0.0, |p| p.1),
                ]);
            }
        }
        let (all, _) = tokenmill_comm::Collectives::all_gather_v(world, &flat)?;
        let mut out = SampleStats::default();
        let mut at = 0;
        while at < all.len() {
            out.sample_losses.push(all[at]);
            let spans = all[at + 1] as usize;
            at += 2;
            let (mut l, mut p, mut c) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..spans {
                let v = &all[at..at + 5];
                l.push(v[0]);
                c.push(v[1] as usize);
                p.push((v[2] != 0.0).then_some((v[3] as u64, v[4])));
                at += 5;
            }
            out.span_losses.push(l);
            out.span_peaks.push(p);
            out.span_counts.push(c);
        }
        Ok(out)
    }

    /// Every document span's loss and targets, for the spike detectors, with its source from
    /// `sources` (per sample, per span; source 0 where it has none).
    pub(super) fn spans(&self, sources: &[Vec<u32>]) -> Vec<SpanLoss> {
        self.span_losses
            .iter()
            .zip(&self.span_counts)
            .enumerate()
            .flat_map(|(i, (l, c))| {
                l.iter()
                    .zip(c)
                    .enumerate()
                    .map(move |(j, (&loss, &targets))| SpanLoss {
                        sample: i,
                        span: j,
                        loss,
                        targets,
                        source: sources.get(i).and_then(|s| s.get(j)).copied().unwrap_or(0),
                    })
            })
            .collect()
    }
}

/// The loss-table rows of one training line.
pub(super) fn loss_rows(
    seq: u64,
    step: u64,
    samples: &[Sample],
    log: &StepLog,
    counts: &[Vec<usize>],
) -> Vec<LossRow> {
    let mut rows = Vec::new();
    for (i, smp) in samples.iter().enumerate() {
        for (j, sp) in smp.spans.iter().enumerate() {
            let peak = log.span_peaks[i][j];
            rows.push(LossRow {
                seq,
                step,
                sample: i as u32,
                span: j as u32,
                shard: sp.shard,
                doc: sp.doc,
                doc_offset: sp.doc_offset,
                tokens: sp.len,
                targets: counts[i][j] as u32,
                loss: log.span_losses[i][j] as f32,
                peak_token: peak.map(|p| p.0),
                peak_loss: peak.map(|p| p.1 as f32),
                sample_loss: log.sample_losses[i] as f32,
            });
        }
    }
    rows
}
