//! The step log, `RUN/log.jsonl`: one JSON line per training step and per evaluation
//! ([`StepLog`]), what a rollback supersedes ([`superseded`]), and what a resumed run keeps of
//! it. The per-document figures that grow with the batch go to the loss table instead
//! ([`crate::losslog`]).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenmill_shards::loader::LoaderState;

use super::Trainer;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// JSON has no NaN: serde_json writes non-finite numbers as `null`; read them back as NaN.
mod nan_null {
    use serde::{Deserialize, Deserializer};
    pub fn f<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// What a line of the log records (written `"train"` or `"eval"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    /// An optimizer step.
    Train,
    /// An evaluation on the held-out dataset.
    Eval,
}

impl LogKind {
    /// As written in the log: `"train"` or `"eval"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::Train => "train",
            LogKind::Eval => "eval",
        }
    }
}

impl std::fmt::Display for LogKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step's record (a line of `log.jsonl`; non-finite values are written as `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// A training step or an evaluation.
    pub kind: LogKind,
    /// Step (0-based; an eval line carries the number of steps done).
    pub step: u64,
    /// Total loss.
    #[serde(deserialize_with = "nan_null::f")]
    pub loss: f64,
    /// Next-token loss.
    #[serde(deserialize_with = "nan_null::f")]
    pub main_loss: f64,
    /// Under distillation (`[train] distill`): the mean KL divergence from the teacher's
    /// top-K, before its weight `α·T²` (the total `loss` holds the mix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill_kl: Option<f64>,
    /// Mean MTP loss.
    #[serde(deserialize_with = "nan_null::f")]
    pub mtp_loss: f64,
    /// Balance loss.
    #[serde(deserialize_with = "nan_null::f")]
    pub balance_loss: f64,
    /// Gradient norm before clipping.
    #[serde(deserialize_with = "nan_null::f")]
    pub grad_norm: f64,
    /// Learning rate.
    #[serde(deserialize_with = "nan_null::f")]
    pub lr: f64,
    /// Tokens per second of this step.
    #[serde(deserialize_with = "nan_null::f")]
    pub tokens_per_s: f64,
    /// Model FLOPs utilisation against the measured GEMM peak.
    #[serde(deserialize_with = "nan_null::f")]
    pub mfu: f64,
    /// Per MoE layer: (min, max) tokens per expert.
    pub expert_load: Vec<(u64, u64)>,
    /// The update was dropped (non-finite loss or gradient).
    #[serde(default)]
    pub skipped: bool,
    /// Ordinal of this line among the log's training lines (superseded ones included): its
    /// per-document rows in the loss table (`RUN/losses/`, [`crate::losslog`]) carry it.
    #[serde(default)]
    pub seq: u64,
    /// Per sample: mean loss over its counted targets (in memory only: the loss table keeps
    /// them on disk).
    #[serde(skip)]
    pub sample_losses: Vec<f64>,
    /// Per sample, per document span (in the order of the sample's spans): mean loss of the
    /// targets inside the span (in memory only, as above).
    #[serde(skip)]
    pub span_losses: Vec<Vec<f64>>,
    /// The loader's position before this step's batch: `tokenmill trace` replays the batch
    /// from it.
    #[serde(default)]
    pub loader: Option<LoaderState>,
    /// Detectors that fired at this step.
    #[serde(default)]
    pub spikes: Vec<String>,
    /// The loss detector's z-score (absent before enough history).
    #[serde(default)]
    pub loss_z: Option<f64>,
    /// The gradient-norm detector's z-score (absent before enough history).
    #[serde(default)]
    pub grad_norm_z: Option<f64>,
    /// The highest z-score of a document span's loss in the batch.
    #[serde(default)]
    pub doc_z: Option<f64>,
    /// OLMo 2's spike score over the trailing window (fraction of losses ≥ σ above the mean).
    #[serde(default)]
    pub spike_score: f64,
    /// Documents quarantined at this step.
    #[serde(default)]
    pub quarantined: Vec<String>,
    /// Per sample, per document span: where the token losses peak inside the document —
    /// (token position in the document of the target with the highest loss, that loss);
    /// `None` for a span without targets (in memory only, as above).
    #[serde(skip)]
    pub span_peaks: Vec<Vec<Option<(u64, f64)>>>,
    /// Entries of the run's `quarantine.json` in effect for this step's batch (the list only
    /// grows, so the first `excluded`): `tokenmill trace` replays the batch with them.
    #[serde(default)]
    pub excluded: usize,
    /// Gradient norm of each parameter group (before clipping): each layer's attention,
    /// feed-forward and norms, the embedding, final norm and head ([`crate::grad_groups`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub grad_norms: std::collections::BTreeMap<String, f64>,
    /// A gradient-norm spike no document explains: the group whose norm jumped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<crate::grad_groups::OptimizerSpike>,
    /// The rollback this step's spike caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackLog>,
    /// On a device backend: what the step cost the host — copies between host and device
    /// memory, synchronisations with the device, the time blocked in them
    /// ([`Backend::counters`](tokenmill_kernels::backend::Backend::counters)); absent on the
    /// CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<tokenmill_kernels::backend::DeviceCounters>,
    /// An eval line: the scores of the `[train] eval_tasks`, in the configured order (absent
    /// without tasks, and in logs written before them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskScores>,
}

/// A task file's scores at an evaluation (`tokenmill eval --tasks`' metrics of the model as it
/// stands; the scoring lives in `tokenmill-pipelines`, behind [`super::EvalHook`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskScores {
    /// The task's name: its file's stem.
    pub name: String,
    /// Examples scored.
    pub examples: usize,
    /// Multiple choice: share right by total log-likelihood.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acc: Option<f64>,
    /// Multiple choice: share right by log-likelihood per character.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acc_norm: Option<f64>,
    /// Exact answers: share whose answer is the model's greedy continuation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<f64>,
    /// Exact answers: −Σ log-likelihood / Σ answer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_per_token: Option<f64>,
}

/// A rollback: the run went back to a checkpoint and skipped batches from there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackLog {
    /// Steps done at the checkpoint reloaded: the lines of steps `to_step..=` this one logged
    /// before the rollback are superseded.
    pub to_step: u64,
    /// The checkpoint directory.
    pub checkpoint: String,
    /// Batches skipped from the checkpoint's loader position.
    pub skipped_batches: u64,
}

/// Per line of a log: whether a later rollback superseded it (its step was run again).
pub fn superseded(log: &[StepLog]) -> Vec<bool> {
    let mut out = vec![false; log.len()];
    for (i, l) in log.iter().enumerate() {
        if let Some(r) = &l.rollback {
            for (j, e) in log[..=i].iter().enumerate() {
                let gone = match e.kind {
                    LogKind::Train => e.step >= r.to_step,
                    LogKind::Eval => e.step > r.to_step,
                };
                out[j] |= gone;
            }
        }
    }
    out
}

/// An evaluation's line: `loss` (next-token loss only) after `step` steps, the rest zero.
pub(super) fn eval_line(step: u64, loss: f64) -> StepLog {
    StepLog {
        kind: LogKind::Eval,
        step,
        seq: 0,
        loss,
        main_loss: loss,
        distill_kl: None,
        mtp_loss: 0.0,
        balance_loss: 0.0,
        grad_norm: 0.0,
        lr: 0.0,
        tokens_per_s: 0.0,
        mfu: 0.0,
        expert_load: Vec::new(),
        skipped: false,
        sample_losses: Vec::new(),
        span_losses: Vec::new(),
        loader: None,
        spikes: Vec::new(),
        loss_z: None,
        grad_norm_z: None,
        doc_z: None,
        spike_score: 0.0,
        quarantined: Vec::new(),
        span_peaks: Vec::new(),
        excluded: 0,
        grad_norms: Default::default(),
        optimizer: None,
        rollback: None,
        device: None,
        tasks: Vec::new(),
    }
}

/// What a resumed run keeps of its log: training lines and rollbacks among them.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct KeptLog {
    /// Training lines kept (superseded ones included).
    pub(super) train_lines: u64,
    /// Rollbacks among them.
    pub(super) rollbacks: u32,
}

/// Opens `out/log.jsonl` for appending: emptied for a fresh run; on resume (`keep_through`:
/// the checkpoint's steps done) cut to the whole lines of the steps the checkpoint covers.
pub(super) fn open_log(out: &Path, keep_through: Option<u64>) -> Result<(std::fs::File, KeptLog)> {
    let path = out.join("log.jsonl");
    let mut kept_log = KeptLog::default();
    // On resume keep only whole lines of steps the checkpoint covers.
    if let Some(last) = keep_through {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut kept = String::new();
        for l in text.lines() {
            let Ok(s) = serde_json::from_str::<StepLog>(l) else {
                continue;
            };
            let keep = match s.kind {
                LogKind::Eval => s.step <= last,
                LogKind::Train => s.step < last,
            };
            if keep {
                if s.kind == LogKind::Train {
                    kept_log.train_lines += 1;
                    kept_log.rollbacks += u32::from(s.rollback.is_some());
                }
                kept.push_str(l);
                kept.push('\n');
            }
        }
        write_atomic(&path, kept.as_bytes())?;
    } else {
        write_atomic(&path, b"")?;
    }
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    Ok((f, kept_log))
}

impl Trainer {
    /// Appends a line to the log.
    pub(super) fn write_log(&mut self, log: &StepLog) -> Result<()> {
        let line = serde_json::to_string(log).expect("serialises");
        writeln!(self.log, "{line}").map_err(|e| Error::io(self.cfg.train.out.join("log.jsonl"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_written_as_before() {
        for (kind, text) in [(LogKind::Train, "train"), (LogKind::Eval, "eval")] {
            let mut line = eval_line(3, 1.5);
            line.kind = kind;
            let json = serde_json::to_string(&line).unwrap();
            assert!(
                json.starts_with(&format!(r#"{{"kind":"{text}","step":3,"#)),
                "{json}"
            );
            assert_eq!(kind.to_string(), text);
            let back: StepLog = serde_json::from_str(&json).unwrap();
            assert_eq!(back.kind, kind);
        }
    }

    #[test]
    fn eval_lines_without_tasks_read_as_before_and_tasks_round_trip() {
        let old = r#"{"kind":"eval","step":4,"loss":5.5,"main_loss":5.5,"mtp_loss":0.0,"balance_loss":0.0,"grad_norm":0.0,"lr":0.0,"tokens_per_s":0.0,"mfu":0.0,"expert_load":[]}"#;
        let back: StepLog = serde_json::from_str(old).unwrap();
        assert!(back.tasks.is_empty());
        assert!(!serde_json::to_string(&back).unwrap().contains("tasks"));
        let mut line = eval_line(4, 5.5);
        line.tasks = vec![TaskScores {
            name: "capitals".into(),
            examples: 12,
            acc: Some(0.25),
            acc_norm: Some(0.5),
            exact: None,
            nats_per_token: None,
        }];
        let json = serde_json::to_string(&line).unwrap();
        assert!(
            json.contains(
                r#""tasks":[{"name":"capitals","examples":12,"acc":0.25,"acc_norm":0.5}]"#
            ),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<StepLog>(&json).unwrap(), line);
    }
}
