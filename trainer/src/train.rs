//! The training loop: batches from the loader, forward, backward, clipping, AdamW, the
//! routing-bias update, evaluation on a held-out dataset, a JSON line per step, and atomic,
//! resumable checkpoints.
//!
//! A run directory holds `run.json` (the resolved configuration), `log.jsonl` (one line per
//! step and per evaluation) and `checkpoints/step-NNNNNNNN/` with `config.json` +
//! `model.safetensors` (Hugging Face layout), `optimizer.safetensors` and
//! `optimizer_v.safetensors` (AdamW's first and second moments, tensors prefixed `m.` and `v.`)
//! and `state.json` (step, loader position, RNG, dataset fingerprint); `checkpoints/latest`
//! names the newest complete one and is written last.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokenmill_kernels::Cpu;
use tokenmill_shards::Dataset;
use tokenmill_shards::loader::{Loader, LoaderConfig, LoaderState, Packing, Shuffle};

use crate::config::ModelConfig;
use crate::cost::{flops_per_token, measure_gemm_peak};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::{Batch, LossWeights, Model, WgradMode};
use crate::moe::update_bias;
use crate::ops::{NONFINITE_FP8_TILES, Precision, WgradQueue};
use crate::optim::{AdamW, AdamWConfig, LrSchedule, clip_scale};
use crate::parallel::{Groups, ParallelConfig};
use crate::params::view_mut;
use crate::rng::Rng;
use crate::spikes::SpikeResponse;

/// `[model]`: where the [`ModelConfig`] comes from (a preset or an HF `config.json`), with field
/// overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSourceConfig {
    /// A preset name (`tiny`, `small`, `deepseek-v3`, `deepseek-v2-lite`).
    #[serde(default)]
    pub preset: Option<String>,
    /// Or a `config.json`.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Any `ModelConfig` field, e.g. `vocab_size = 512`.
    #[serde(flatten)]
    pub overrides: BTreeMap<String, serde_json::Value>,
}

impl ModelSourceConfig {
    /// The model configuration this section describes.
    pub fn resolve(&self) -> Result<ModelConfig> {
        let base = match (&self.preset, &self.config) {
            (Some(p), None) => ModelConfig::preset(p)?,
            (None, Some(c)) => crate::hf::read_config(c)?,
            (None, None) => ModelConfig::preset("tiny")?,
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "[model] takes preset or config, not both".into(),
                ));
            }
        };
        let mut v = serde_json::to_value(&base).expect("serialises");
        let o = v.as_object_mut().expect("an object");
        for (k, val) in &self.overrides {
            if !o.contains_key(k) {
                return Err(Error::Config(format!("[model] has no field {k:?}")));
            }
            o.insert(k.clone(), val.clone());
        }
        let cfg: ModelConfig = serde_json::from_value(v).map_err(|source| Error::ConfigValue {
            section: "[model]",
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// `[data]`: the datasets and the batches drawn from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Training dataset (a `tokenmill build` output).
    pub train: PathBuf,
    /// Held-out dataset for evaluation (same tokenizer).
    #[serde(default)]
    pub eval: Option<PathBuf>,
    /// Tokens per sample (inputs; samples hold one more).
    pub seq_len: u64,
    /// Samples per step.
    pub batch: u64,
    /// Samples per forward/backward (gradients accumulate); default = batch.
    #[serde(default)]
    pub micro_batch: Option<u64>,
    /// Loader seed.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// `windows` or `documents`.
    #[serde(default = "default_packing")]
    pub packing: Packing,
    /// `quarantine.json` files of earlier runs: their documents are left out of this one.
    #[serde(default)]
    pub exclude_from: Vec<PathBuf>,
}

fn default_seed() -> u64 {
    1234
}

fn default_packing() -> Packing {
    Packing::Windows
}

/// What to do with a step whose loss or gradient is not finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnNonFinite {
    /// Stop with an error (the parameters are left as before the step).
    #[default]
    Error,
    /// Drop the step's update, log it, and go on.
    Skip,
}

/// `[train]`: the loop (steps, evaluation, checkpoints, losses, spikes, precision).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Run directory.
    pub out: PathBuf,
    /// Seed of the initial weights.
    #[serde(default = "default_seed")]
    pub init_seed: u64,
    /// Evaluate every this many steps (0 = only at the end).
    #[serde(default)]
    pub eval_every: u64,
    /// Batches per evaluation.
    #[serde(default = "default_eval_batches")]
    pub eval_batches: u64,
    /// Checkpoint every this many steps (0 = only at the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// MTP loss weight λ by step: `[[0, 0.3], [1000, 0.1]]` = 0.3 from step 0, 0.1 from 1000.
    #[serde(default = "default_lambda")]
    pub mtp_lambda: Vec<(u64, f64)>,
    /// α of the sequence-wise balance loss.
    #[serde(default = "default_alpha")]
    pub balance_alpha: f64,
    /// γ of the routing-bias update.
    #[serde(default = "default_gamma")]
    pub bias_gamma: f64,
    /// Threads (0 = all cores).
    #[serde(default)]
    pub threads: usize,
    /// Non-finite loss or gradient.
    #[serde(default)]
    pub on_nonfinite: OnNonFinite,
    /// Loss-spike detectors.
    #[serde(default)]
    pub spikes: crate::spikes::SpikeConfig,
    /// Training lines per file of the per-document loss table (`RUN/losses/`).
    #[serde(default = "default_losses_every")]
    pub losses_every: u64,
    /// GEMM precision of the blocks' linear layers: `fp32`, `bf16` or `fp8`. Master weights,
    /// gradients and optimizer state are FP32 in all three, so a checkpoint saved in one
    /// precision resumes in another.
    #[serde(default)]
    pub precision: Precision,
}

fn default_losses_every() -> u64 {
    100
}

fn default_eval_batches() -> u64 {
    4
}
fn default_lambda() -> Vec<(u64, f64)> {
    vec![(0, 0.3)]
}
fn default_alpha() -> f64 {
    0.0001
}
fn default_gamma() -> f64 {
    0.001
}

/// A whole training configuration (`train.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The model.
    pub model: ModelSourceConfig,
    /// The data.
    pub data: DataConfig,
    /// AdamW.
    #[serde(default)]
    pub optim: AdamWConfig,
    /// Learning-rate schedule.
    #[serde(default)]
    pub lr: LrSchedule,
    /// The loop.
    pub train: LoopConfig,
    /// Training across processes (`[parallel] dp, ep`); absent: one process.
    #[serde(default, skip_serializing_if = "ParallelConfig::is_single")]
    pub parallel: ParallelConfig,
}

impl TrainConfig {
    /// λ at `step`.
    pub fn mtp_lambda(&self, step: u64) -> f64 {
        self.train
            .mtp_lambda
            .iter()
            .rfind(|(s, _)| *s <= step)
            .map_or(0.0, |&(_, l)| l)
    }
}

/// JSON has no NaN: serde_json writes non-finite numbers as `null`; read them back as NaN.
mod nan_null {
    use serde::{Deserialize, Deserializer};
    pub fn f<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// One step's record (a line of `log.jsonl`; non-finite values are written as `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// `"train"` or `"eval"`.
    pub kind: String,
    /// Step (0-based; an eval line carries the number of steps done).
    pub step: u64,
    /// Total loss.
    #[serde(deserialize_with = "nan_null::f")]
    pub loss: f64,
    /// Next-token loss.
    #[serde(deserialize_with = "nan_null::f")]
    pub main_loss: f64,
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
    /// The rollback this step's spike caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackLog>,
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
                let gone = match e.kind.as_str() {
                    "train" => e.step >= r.to_step,
                    _ => e.step > r.to_step,
                };
                out[j] |= gone;
            }
        }
    }
    out
}

/// One quarantined document (`quarantine.json` holds a list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    /// Document id.
    pub id: String,
    /// Source file and byte offset.
    pub source: String,
    /// Byte offset in the source.
    pub offset: u64,
    /// URL, if any.
    pub url: Option<String>,
    /// The step whose spike it was attributed to.
    pub step: u64,
    /// Its span loss then.
    pub loss: f64,
}

/// Reads a `quarantine.json` (an absent file is an empty list).
pub fn read_quarantine(path: &Path) -> Result<Vec<Quarantined>> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| Error::json(path, "bad quarantine list", e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Saved with each checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Steps done.
    pub step: u64,
    /// Where the training stream stands.
    pub loader: LoaderState,
    /// Generator state.
    pub rng: u64,
    /// AdamW updates applied.
    pub optimizer_t: u64,
    /// xxh3 of the training dataset's manifest.
    pub dataset_fingerprint: String,
    /// Tokens per sample.
    pub seq_len: u64,
    /// Samples per step.
    pub batch: u64,
}

/// xxh3 of a dataset's `manifest.json`: identifies the data a run trained on.
pub fn fingerprint(dir: &Path) -> Result<String> {
    let path = dir.join(tokenmill_shards::MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)))
}

/// The training loader's settings for a `[data]` section.
pub fn loader_config(d: &DataConfig, shuffle: Shuffle, batch: u64) -> LoaderConfig {
    LoaderConfig {
        seq_len: d.seq_len,
        global_batch: batch,
        seed: d.seed,
        packing: d.packing,
        shuffle,
        ..LoaderConfig::default()
    }
}

/// Per-sample figures of a step: each sample's loss, and per document span its loss, peak
/// (position, loss) and counted targets.
type SampleStats = (
    Vec<f64>,
    Vec<Vec<f64>>,
    Vec<Vec<Option<(u64, f64)>>>,
    Vec<Vec<usize>>,
);

/// Every rank's per-sample figures, in rank order (the global batch's sample order): each
/// sample as `[loss, spans, (loss, targets, has peak, peak position, peak loss) per span]`.
fn gather_sample_stats(
    world: &dyn tokenmill_comm::Communicator,
    sample_losses: &[f64],
    span_losses: &[Vec<f64>],
    span_peaks: &[Vec<Option<(u64, f64)>>],
    span_counts: &[Vec<usize>],
) -> Result<SampleStats> {
    let mut flat = Vec::new();
    for (i, &l) in sample_losses.iter().enumerate() {
        flat.push(l);
        flat.push(span_losses[i].len() as f64);
        for j in 0..span_losses[i].len() {
            let peak = span_peaks[i][j];
            flat.extend([
                span_losses[i][j],
                span_counts[i][j] as f64,
                f64::from(u8::from(peak.is_some())),
                peak.map_or(0.0, |p| p.0 as f64),
                peak.map_or(0.0, |p| p.1),
            ]);
        }
    }
    let (all, _) = tokenmill_comm::Collectives::all_gather_v(world, &flat)?;
    let mut out: SampleStats = Default::default();
    let mut at = 0;
    while at < all.len() {
        out.0.push(all[at]);
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
        out.1.push(l);
        out.2.push(p);
        out.3.push(c);
    }
    Ok(out)
}

/// A training run.
#[derive(Debug)]
pub struct Trainer {
    /// The configuration.
    pub cfg: TrainConfig,
    /// The model.
    pub model: Model,
    /// FP32 master weights.
    pub params: Vec<f32>,
    grads: Vec<f32>,
    /// AdamW.
    pub opt: AdamW,
    loader: Loader,
    eval: Option<Loader>,
    /// Steps done.
    pub step: u64,
    rng: Rng,
    fingerprint: String,
    peak_flops: f64,
    flops_per_token: f64,
    log: std::fs::File,
    spikes: crate::spikes::SpikeDetector,
    recent_losses: std::collections::VecDeque<(u64, f64)>,
    /// Entries of `quarantine.json` in effect.
    quarantined: usize,
    /// Rollbacks done in this run.
    rollbacks: u32,
    /// Training lines logged so far (superseded ones included).
    seq: u64,
    /// The loss table (the writing rank only).
    losses: Option<crate::losslog::LossWriter>,
    /// The process groups of a run across processes (`None`: one process).
    group: Option<Groups>,
}

/// What a resumed run keeps of its log: training lines and rollbacks among them.
#[derive(Debug, Default, Clone, Copy)]
struct KeptLog {
    train_lines: u64,
    rollbacks: u32,
}

fn open_log(out: &Path, keep_through: Option<u64>) -> Result<(std::fs::File, KeptLog)> {
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
            let keep = if s.kind == "eval" {
                s.step <= last
            } else {
                s.step < last
            };
            if keep {
                if s.kind == "train" {
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
    /// Sets up a run in one process: fresh, or from the newest checkpoint in `train.out` when
    /// `resume`.
    pub fn new(cfg: TrainConfig, resume: bool) -> Result<Self> {
        Self::new_in(cfg, resume, None)
    }

    /// Sets up a run across the ranks of `world` (every rank calls it; `None`: one process),
    /// laid out by `[parallel]`. Every rank reads the same global batch and trains on its slice
    /// of it; rank 0 alone writes the run directory (log, loss table, checkpoints), which is the
    /// same as a one-process run's, so a checkpoint resumes in any layout.
    pub fn new_in(
        cfg: TrainConfig,
        resume: bool,
        world: Option<Arc<dyn tokenmill_comm::Communicator>>,
    ) -> Result<Self> {
        let mcfg = cfg.model.resolve()?;
        let mut model = Model::new(mcfg.clone())?;
        model.precision = cfg.train.precision;
        let d = &cfg.data;
        let micro = d.micro_batch.unwrap_or(d.batch);
        if d.batch == 0 || micro == 0 || !d.batch.is_multiple_of(micro) {
            return Err(Error::Config(format!(
                "batch {} must be a positive multiple of micro_batch {micro}",
                d.batch
            )));
        }
        let group = match world {
            Some(w) if w.size() > 1 || !cfg.parallel.is_single() => {
                // Without a micro_batch each rank runs its slice as one micro-batch.
                let local = d.micro_batch.unwrap_or(d.batch / w.size().max(1) as u64);
                cfg.parallel
                    .validate(w.size(), &mcfg, d.batch as usize, local as usize)?;
                Some(Groups::new(w, &cfg.parallel)?)
            }
            Some(_) => None,
            None if !cfg.parallel.is_single() => {
                return Err(Error::Layout(format!(
                    "[parallel] asks for {} ranks: start it with `mpirun -np {} tokenmill train …` (or srun)",
                    cfg.parallel.world(),
                    cfg.parallel.world()
                )));
            }
            None => None,
        };
        if let Some(g) = &group {
            model.parallel = g.model_parallel();
        }
        let writer = group.as_ref().is_none_or(|g| g.world.rank() == 0);
        let ds = Dataset::open(&d.train)?;
        let vocab = ds.manifest().tokenizer.vocab_size;
        if vocab as usize > mcfg.vocab_size {
            return Err(Error::Data(format!(
                "{}: the tokenizer's vocabulary of {vocab} exceeds the model's vocab_size {}",
                d.train.display(),
                mcfg.vocab_size
            )));
        }
        let mut exclude = Vec::new();
        for f in &d.exclude_from {
            if !f.is_file() {
                return Err(Error::io(
                    f,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such quarantine list"),
                ));
            }
            exclude.extend(read_quarantine(f)?.into_iter().map(|q| q.id));
        }
        let qpath = cfg.train.out.join("quarantine.json");
        let quarantined = if resume {
            let q = read_quarantine(&qpath)?;
            let n = q.len();
            exclude.extend(q.into_iter().map(|q| q.id));
            n
        } else {
            // A fresh run starts without the quarantine of an earlier run in the same place.
            match std::fs::remove_file(&qpath) {
                _ if !writer => 0,
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&qpath, e));
                }
                _ => 0,
            }
        };
        let mut lc = loader_config(d, Shuffle::Full, d.batch);
        lc.exclude = exclude;
        let mut loader = Loader::open(&d.train, lc)?;
        let eval = match &d.eval {
            Some(dir) => {
                let ev = Dataset::open(dir)?;
                if ev.manifest().tokenizer.sha256 != ds.manifest().tokenizer.sha256 {
                    return Err(Error::Data(format!(
                        "{} and {} use different tokenizers",
                        d.train.display(),
                        dir.display()
                    )));
                }
                // Across processes each rank evaluates its slice of each eval batch.
                let ranks = group.as_ref().map_or(1, |g| g.world.size() as u64);
                if !micro.is_multiple_of(ranks) {
                    return Err(Error::Layout(format!(
                        "an eval batch of {micro} samples (micro_batch) cannot be split over {ranks} ranks"
                    )));
                }
                Some(Loader::open(dir, loader_config(d, Shuffle::None, micro))?)
            }
            None => None,
        };
        let fingerprint = fingerprint(&d.train)?;
        let out = cfg.train.out.clone();
        std::fs::create_dir_all(out.join("checkpoints")).map_err(|e| Error::io(&out, e))?;
        if !resume && writer {
            // A fresh run starts over: checkpoints of an earlier run in the same place would
            // be taken for this run's by a rollback.
            let root = out.join("checkpoints");
            for e in std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))? {
                let p = e.map_err(|e| Error::io(&root, e))?.path();
                if p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-") || n == "latest")
                {
                    tracing::warn!(path = %p.display(), "fresh run: removing an earlier run's checkpoint");
                    let r = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                    r.map_err(|e| Error::io(&p, e))?;
                }
            }
        }
        let mut params: Vec<f32> = model.init(cfg.train.init_seed);
        let mut opt = AdamW::new(cfg.optim.clone(), &model.layout);
        let mut step = 0;
        let mut rng = Rng::new(cfg.train.init_seed);
        let mut keep = None;
        if resume {
            let latest = out.join("checkpoints").join("latest");
            let name = std::fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
            let dir = out.join("checkpoints").join(name.trim());
            let st = load_checkpoint(&dir, &model, &mut params, &mut opt)?;
            if st.dataset_fingerprint != fingerprint {
                return Err(Error::checkpoint(
                    dir.join("state.json"),
                    format!(
                        "was trained on another dataset (manifest {} ≠ {} of {})",
                        st.dataset_fingerprint,
                        fingerprint,
                        d.train.display()
                    ),
                ));
            }
            if (st.seq_len, st.batch) != (d.seq_len, d.batch) {
                return Err(Error::checkpoint(
                    dir.join("state.json"),
                    format!(
                        "seq_len/batch {}/{} ≠ the configuration's {}/{}",
                        st.seq_len, st.batch, d.seq_len, d.batch
                    ),
                ));
            }
            loader.resume(st.loader);
            step = st.step;
            rng = Rng::from_state(st.rng);
            keep = Some(step);
            tracing::info!(step, checkpoint = %dir.display(), "resumed");
        }
        let run =
            serde_json::to_string_pretty(&serde_json::json!({ "config": &cfg, "model": &mcfg, "dataset_fingerprint": &fingerprint }))
                .expect("serialises");
        let (log, kept_log) = if writer {
            write_atomic(&out.join("run.json"), run.as_bytes())?;
            open_log(&out, keep)?
        } else {
            // The other ranks learn what the writer keeps of the log, and write nothing.
            let sink = std::fs::OpenOptions::new()
                .append(true)
                .open("/dev/null")
                .map_err(|e| Error::io("/dev/null", e))?;
            (sink, KeptLog::default())
        };
        let (mut rollbacks, mut seq) = (kept_log.rollbacks, kept_log.train_lines);
        if let Some(g) = &group {
            let mut v = [u64::from(rollbacks), seq];
            tokenmill_comm::Collectives::broadcast(g.world.as_ref(), 0, &mut v)?;
            (rollbacks, seq) = (v[0] as u32, v[1]);
        }
        let losses = if writer {
            Some(crate::losslog::LossWriter::open(
                &out,
                seq,
                cfg.train.losses_every,
            )?)
        } else {
            None
        };
        let grads = vec![0.0; params.len()];
        let flops_per_token = flops_per_token(&mcfg, d.seq_len);
        let cfg_spikes = cfg.train.spikes.clone();
        let mut t = Trainer {
            cfg,
            model,
            params,
            grads,
            opt,
            loader,
            eval,
            step,
            rng,
            fingerprint,
            peak_flops: 0.0,
            flops_per_token,
            log,
            spikes: crate::spikes::SpikeDetector::new(cfg_spikes),
            recent_losses: std::collections::VecDeque::new(),
            quarantined,
            rollbacks,
            seq,
            losses,
            group,
        };
        if let Some(g) = &t.group {
            // Nobody starts before the writer has cleaned and prepared the run directory.
            g.world.barrier()?;
        }
        if !resume && t.cfg.train.spikes.responds(SpikeResponse::Rollback) {
            // Rollback needs a checkpoint at or before any spike.
            t.save_checkpoint()?;
        }
        Ok(t)
    }

    fn weights(&self) -> LossWeights {
        LossWeights {
            mtp_lambda: self.cfg.mtp_lambda(self.step),
            balance_alpha: self.cfg.train.balance_alpha,
        }
    }

    /// One optimizer step.
    pub fn train_step(&mut self) -> Result<StepLog> {
        let t0 = Instant::now();
        let be = Cpu;
        let d = self.cfg.data.clone();
        let micro = d.micro_batch.unwrap_or(d.batch) as usize;
        let s = d.seq_len as usize;
        let loader_state = self.loader.state();
        let batch = self.loader.next_batch()?;
        let w = self.weights();
        self.grads.fill(0.0);
        let (mut loss, mut main, mut mtp, mut bal) = (0.0, 0.0, 0.0, 0.0);
        let mut loads: Vec<Vec<u64>> = Vec::new();
        let mut sample_losses = Vec::with_capacity(batch.samples.len());
        let mut span_losses = Vec::with_capacity(batch.samples.len());
        let mut span_peaks = Vec::with_capacity(batch.samples.len());
        let mut span_counts: Vec<Vec<usize>> = Vec::with_capacity(batch.samples.len());
        let excluded = self.quarantined;
        let mut wq = WgradQueue::new();
        // Across processes every rank reads the global batch and trains on its slice.
        let mine = match &self.group {
            Some(g) => g.batch_slice(batch.samples.len()),
            None => 0..batch.samples.len(),
        };
        let n_micro = mine.len().div_ceil(micro);
        for chunk in batch.samples[mine].chunks(micro) {
            let tokens: Vec<u32> = chunk
                .iter()
                .flat_map(|x| x.tokens.iter().copied())
                .collect();
            let mask: Vec<u8> = chunk
                .iter()
                .flat_map(|x| x.loss_mask.iter().copied())
                .collect();
            let bt = Batch {
                tokens: &tokens,
                mask: Some(&mask),
                b: chunk.len(),
                s,
            };
            let mut f = self.model.forward(&be, &self.params, &bt, w, true)?;
            loss += f.loss / n_micro as f64;
            main += f.main_loss / n_micro as f64;
            mtp += f.mtp_losses.iter().sum::<f64>()
                / f.mtp_losses.len().max(1) as f64
                / n_micro as f64;
            bal += f.balance_loss / n_micro as f64;
            for (bi, smp) in chunk.iter().enumerate() {
                let tl = &f.token_losses[bi * s..(bi + 1) * s];
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
                span_losses.push(losses);
                span_peaks.push(peaks);
                span_counts.push(counts);
                let cnt = smp.loss_mask.iter().filter(|&&m| m != 0).count().max(1);
                sample_losses.push(
                    f.token_losses[bi * s..(bi + 1) * s]
                        .iter()
                        .map(|&x| x as f64)
                        .sum::<f64>()
                        / cnt as f64,
                );
            }
            if loads.is_empty() {
                loads = f.moe.iter().map(|m| vec![0; m.load.len()]).collect();
            }
            for (acc, m) in loads.iter_mut().zip(&f.moe) {
                for (a, &l) in acc.iter_mut().zip(&m.load) {
                    *a += l;
                }
            }
            if f.loss.is_finite() {
                self.model.backward(
                    &be,
                    &self.params,
                    &mut f,
                    &mut self.grads,
                    &mut wq,
                    WgradMode::Immediate,
                );
            }
        }
        if n_micro > 1 {
            let inv = 1.0 / n_micro as f32;
            self.grads.iter_mut().for_each(|g| *g *= inv);
        }
        if let Some(g) = &self.group {
            // Every rank gets the whole batch's figures and gradients, so every decision
            // below (spikes, quarantine, the update) is the same on every rank.
            let w = g.world.as_ref();
            let mut sums = [loss, main, mtp, bal];
            tokenmill_comm::Collectives::all_reduce_sum(w, &mut sums)?;
            [loss, main, mtp, bal] = sums;
            tokenmill_comm::Collectives::all_reduce_sum(w, &mut self.grads)?;
            (sample_losses, span_losses, span_peaks, span_counts) =
                gather_sample_stats(w, &sample_losses, &span_losses, &span_peaks, &span_counts)?;
        }
        let grad_norm = self.opt.grad_norm(&self.grads);
        let lr = self.cfg.lr.at(self.step);
        let finite = loss.is_finite() && grad_norm.is_finite();
        let step = self.step;
        let spans: Vec<crate::spikes::SpanLoss> = span_losses
            .iter()
            .zip(&span_counts)
            .enumerate()
            .flat_map(|(i, (l, c))| {
                l.iter()
                    .zip(c)
                    .enumerate()
                    .map(move |(j, (&loss, &targets))| crate::spikes::SpanLoss {
                        sample: i,
                        span: j,
                        loss,
                        targets,
                    })
            })
            .collect();
        let obs = self.spikes.observe(step, loss, grad_norm, &spans);
        let mut spikes = obs.fired.clone();
        if finite {
            self.recent_losses.push_back((step, loss));
            if self.recent_losses.len() > self.spikes.config().window {
                self.recent_losses.pop_front();
            }
        }
        let window: Vec<f64> = self.recent_losses.iter().map(|x| x.1).collect();
        let spike_score = crate::spikes::spike_score(&window, self.spikes.config().score_sigma);
        let sc = self.spikes.config().clone();
        if finite && let Some(f) = crate::spikes::score_fires(&window, loss, &sc) {
            // the score detector judged this step a spike: out of the others' history
            self.spikes.forget_from(step);
            spikes.push(f);
        }
        let skip_spike = finite && !spikes.is_empty() && sc.drops_update();
        let quarantined = if skip_spike && sc.responds(SpikeResponse::Quarantine) {
            self.quarantine(
                &batch.samples,
                &span_losses,
                &span_counts,
                main,
                &obs.outliers,
            )?
        } else {
            Vec::new()
        };
        if skip_spike {
            tracing::warn!(step, ?spikes, "spike: update skipped");
        }
        if finite && !skip_spike {
            self.opt.step(
                &mut self.params,
                &self.grads,
                lr,
                clip_scale(grad_norm, self.cfg.optim.clip),
            );
            for (id, load) in self.model.moe_biases().into_iter().zip(&loads) {
                update_bias(
                    view_mut(&self.model.layout, &mut self.params, id),
                    load,
                    self.cfg.train.bias_gamma,
                );
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let tokens = (batch.samples.len() * s) as f64;
        if self.peak_flops == 0.0 {
            self.peak_flops = measure_gemm_peak();
        }
        let rollback = if skip_spike
            && sc.responds(SpikeResponse::Rollback)
            && self.rollbacks < sc.max_rollbacks
        {
            Some(self.rollback(step, !quarantined.is_empty())?)
        } else {
            None
        };
        let log = StepLog {
            kind: "train".into(),
            step,
            seq: self.seq,
            loss,
            main_loss: main,
            mtp_loss: mtp,
            balance_loss: bal,
            grad_norm,
            lr,
            tokens_per_s: tokens / secs,
            mfu: tokens * self.flops_per_token / secs / self.peak_flops,
            expert_load: loads
                .iter()
                .map(|l| (*l.iter().min().unwrap_or(&0), *l.iter().max().unwrap_or(&0)))
                .collect(),
            skipped: !finite || skip_spike,
            sample_losses,
            span_losses,
            loader: Some(loader_state),
            spikes,
            loss_z: obs.loss_z,
            grad_norm_z: obs.grad_norm_z,
            doc_z: obs.doc_z.map(|d| d.0),
            spike_score,
            quarantined,
            span_peaks,
            excluded,
            rollback,
        };
        if !log.spikes.is_empty() {
            tracing::warn!(step = log.step, loss, spikes = ?log.spikes, "loss spike; `tokenmill trace` names its documents");
        }
        if let Some(losses) = self.losses.as_mut() {
            let rows = loss_rows(self.seq, step, &batch.samples, &log, &span_counts);
            losses.push(self.seq, rows)?;
            if !log.spikes.is_empty() {
                // a spike's rows are on disk at once: its report can be written now
                losses.flush()?;
            }
        }
        self.seq += 1;
        self.write_log(&log)?;
        if log.rollback.is_none() {
            self.step += 1;
        }
        if !finite && self.cfg.train.on_nonfinite == OnNonFinite::Error {
            let bad_tiles = NONFINITE_FP8_TILES.load(std::sync::atomic::Ordering::Relaxed);
            let what = match (loss.is_finite(), bad_tiles) {
                (true, 0) => "gradient".to_string(),
                (false, 0) => "loss".to_string(),
                (true, n) => format!("gradient ({n} FP8 tiles had a non-finite amax)"),
                (false, n) => format!("loss ({n} FP8 tiles had a non-finite amax)"),
            };
            return Err(Error::NonFinite {
                what,
                step: log.step,
            });
        }
        Ok(log)
    }

    /// Adds the batch's `quarantine_top_k` documents that added most to the step's loss —
    /// (span loss − the step's next-token loss) × targets in the span — to `quarantine.json` and reopens the
    /// loader without them at the same position. Returns their ids.
    fn quarantine(
        &mut self,
        samples: &[tokenmill_shards::loader::Sample],
        span_losses: &[Vec<f64>],
        span_counts: &[Vec<usize>],
        step_loss: f64,
        outliers: &[(usize, usize, f64)],
    ) -> Result<Vec<String>> {
        let k = self.spikes.config().quarantine_top_k;
        let mut ranked: Vec<(f64, f64, usize, usize)> = span_losses
            .iter()
            .zip(span_counts)
            .enumerate()
            .flat_map(|(i, (v, c))| {
                v.iter()
                    .zip(c)
                    .enumerate()
                    .filter(|(_, (l, _))| l.is_finite())
                    .map(move |(j, (&l, &n))| ((l - step_loss) * n as f64, l, i, j))
            })
            .filter(|r| r.0 > 0.0 && outliers.iter().any(|o| (o.0, o.1) == (r.2, r.3)))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        if ranked.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.cfg.train.out.join("quarantine.json");
        let mut list = read_quarantine(&path)?;
        let prov = self.loader.provenance_batch(samples)?;
        let mut ids = Vec::new();
        for (_, loss, i, j) in ranked {
            if ids.len() == k {
                break;
            }
            let (_, p) = &prov[i][j];
            if ids.contains(&p.id) || list.iter().any(|q| q.id == p.id) {
                continue;
            }
            ids.push(p.id.clone());
            list.push(Quarantined {
                id: p.id.clone(),
                source: p.source.clone(),
                offset: p.offset,
                url: p.url.clone(),
                step: self.step,
                loss,
            });
        }
        if self.losses.is_some() {
            write_atomic(
                &path,
                serde_json::to_string_pretty(&list)
                    .expect("serialises")
                    .as_bytes(),
            )?;
        }
        let state = self.loader.state();
        let mut lc = self.loader.config().clone();
        lc.exclude = list
            .iter()
            .map(|q| q.id.clone())
            .chain(lc.exclude.iter().cloned())
            .collect();
        lc.exclude.sort();
        lc.exclude.dedup();
        self.loader = Loader::open(&self.cfg.data.train, lc)?;
        self.loader.resume(state);
        self.quarantined = list.len();
        tracing::warn!(step = self.step, ?ids, "quarantined");
        Ok(ids)
    }

    /// Reloads the newest checkpoint at or before `spike` (steps done ≤ the spiking step) and
    /// skips `rollback_skip` batches from its loader position (default: none when the spike
    /// quarantined documents, else through the spike).
    /// The checkpoint is saved again with the new loader position, so a resume continues the
    /// rolled-back run.
    fn rollback(&mut self, spike: u64, quarantined: bool) -> Result<RollbackLog> {
        let root = self.cfg.train.out.join("checkpoints");
        let mut best: Option<u64> = None;
        for e in std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))? {
            let e = e.map_err(|e| Error::io(&root, e))?;
            let name = e.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix("step-"))
                .and_then(|n| n.parse::<u64>().ok())
                && n <= spike
                && e.path().join("state.json").is_file()
            {
                best = best.max(Some(n));
            }
        }
        let c = best.ok_or_else(|| {
            Error::checkpoint(
                &root,
                format!("no checkpoint at or before step {spike} to roll back to"),
            )
        })?;
        let dir = root.join(format!("step-{c:08}"));
        let st = load_checkpoint(&dir, &self.model, &mut self.params, &mut self.opt)?;
        self.rng = Rng::from_state(st.rng);
        self.loader.resume(st.loader);
        let skip = self
            .spikes
            .config()
            .rollback_skip
            .unwrap_or(if quarantined { 0 } else { spike + 1 - c });
        self.loader.skip_batches(skip)?;
        self.spikes.forget_from(c);
        self.recent_losses.retain(|x| x.0 < c);
        self.rollbacks += 1;
        self.step = c;
        self.save_checkpoint()?;
        tracing::warn!(spike, to = c, skip, "rolled back");
        Ok(RollbackLog {
            to_step: c,
            checkpoint: dir.display().to_string(),
            skipped_batches: skip,
        })
    }

    fn write_log(&mut self, log: &StepLog) -> Result<()> {
        let line = serde_json::to_string(log).expect("serialises");
        writeln!(self.log, "{line}").map_err(|e| Error::io(self.cfg.train.out.join("log.jsonl"), e))
    }

    /// Mean next-token loss over the first `eval_batches` batches of the held-out dataset
    /// (`None` without one). Logged as an `eval` line.
    pub fn evaluate(&mut self) -> Result<Option<f64>> {
        Ok(self.evaluate_line()?.map(|l| l.loss))
    }

    /// [`Trainer::evaluate`], returning the logged line.
    fn evaluate_line(&mut self) -> Result<Option<StepLog>> {
        let Some(ev) = self.eval.as_mut() else {
            return Ok(None);
        };
        ev.resume(LoaderState::default());
        let s = self.cfg.data.seq_len as usize;
        let w = LossWeights {
            mtp_lambda: 0.0,
            balance_alpha: 0.0,
        };
        let (mut sum, mut n) = (0.0, 0);
        let mut mtp = 0.0;
        for _ in 0..self.cfg.train.eval_batches {
            let batch = ev.next_batch()?;
            // Across processes: this rank's micro-batch of the eval batch.
            let mine = match &self.group {
                Some(g) => g.batch_slice(batch.samples.len()),
                None => 0..batch.samples.len(),
            };
            let samples = &batch.samples[mine];
            let tokens: Vec<u32> = samples
                .iter()
                .flat_map(|x| x.tokens.iter().copied())
                .collect();
            let mask: Vec<u8> = samples
                .iter()
                .flat_map(|x| x.loss_mask.iter().copied())
                .collect();
            let bt = Batch {
                tokens: &tokens,
                mask: Some(&mask),
                b: samples.len(),
                s,
            };
            let f = self.model.forward(&Cpu, &self.params, &bt, w, false)?;
            let mut v = [
                f.main_loss,
                f.mtp_losses.iter().sum::<f64>() / f.mtp_losses.len().max(1) as f64,
            ];
            if let Some(g) = &self.group {
                // Each rank's losses are its share of the batch mean.
                tokenmill_comm::Collectives::all_reduce_sum(g.world.as_ref(), &mut v)?;
            }
            sum += v[0];
            mtp += v[1];
            n += 1;
        }
        let loss = sum / n.max(1) as f64;
        let mut log = eval_line(self.step, loss);
        log.mtp_loss = mtp / n.max(1) as f64;
        self.write_log(&log)?;
        Ok(Some(log))
    }

    /// Writes a checkpoint of the current state; returns its directory. Across processes
    /// the writing rank writes it (every rank holds the same parameters and optimizer state)
    /// and the others wait until it is complete.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let written = match self.losses.is_some() {
            true => self.write_checkpoint(),
            false => Ok(self
                .cfg
                .train
                .out
                .join("checkpoints")
                .join(format!("step-{:08}", self.step))),
        };
        if let Some(g) = &self.group {
            g.world.barrier()?;
        }
        written
    }

    fn write_checkpoint(&mut self) -> Result<PathBuf> {
        // The loss table covers every step the checkpoint does.
        if let Some(l) = self.losses.as_mut() {
            l.flush()?;
        }
        let root = self.cfg.train.out.join("checkpoints");
        let name = format!("step-{:08}", self.step);
        let tmp = root.join(format!(".tmp-{name}"));
        let dir = root.join(&name);
        let _ = std::fs::remove_dir_all(&tmp);
        crate::hf::save(&tmp, &self.model, &self.params)?;
        let meta = std::collections::HashMap::from([("t".to_string(), self.opt.t.to_string())]);
        crate::hf::save_tensors(
            &tmp.join("optimizer.safetensors"),
            &self.model.layout,
            &self.opt.m,
            "m.",
            meta.clone(),
        )?;
        crate::hf::save_tensors(
            &tmp.join("optimizer_v.safetensors"),
            &self.model.layout,
            &self.opt.v,
            "v.",
            meta,
        )?;
        let st = CheckpointState {
            step: self.step,
            loader: self.loader.state(),
            rng: self.rng.state(),
            optimizer_t: self.opt.t,
            dataset_fingerprint: self.fingerprint.clone(),
            seq_len: self.cfg.data.seq_len,
            batch: self.cfg.data.batch,
        };
        write_atomic(
            &tmp.join("state.json"),
            serde_json::to_string_pretty(&st)
                .expect("serialises")
                .as_bytes(),
        )?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        write_atomic(&root.join("latest"), name.as_bytes())?;
        Ok(dir)
    }

    /// Runs to `train.steps`, evaluating and checkpointing on schedule; `on_log` sees every
    /// line. Returns the last eval loss (if any).
    pub fn run(&mut self, mut on_log: impl FnMut(&StepLog)) -> Result<Option<f64>> {
        let tc = self.cfg.train.clone();
        let mut last_eval = None;
        while self.step < tc.steps {
            let log = self.train_step()?;
            on_log(&log);
            let done = self.step;
            if tc.eval_every > 0
                && done.is_multiple_of(tc.eval_every)
                && done < tc.steps
                && let Some(l) = self.evaluate_line()?
            {
                last_eval = Some(l.loss);
                on_log(&l);
            }
            if tc.checkpoint_every > 0
                && done.is_multiple_of(tc.checkpoint_every)
                && done < tc.steps
            {
                self.save_checkpoint()?;
            }
        }
        if let Some(l) = self.evaluate_line()? {
            last_eval = Some(l.loss);
            on_log(&l);
        }
        self.save_checkpoint()?;
        Ok(last_eval)
    }
}

/// The loss-table rows of one training line.
fn loss_rows(
    seq: u64,
    step: u64,
    samples: &[tokenmill_shards::loader::Sample],
    log: &StepLog,
    counts: &[Vec<usize>],
) -> Vec<crate::losslog::LossRow> {
    let mut rows = Vec::new();
    for (i, smp) in samples.iter().enumerate() {
        for (j, sp) in smp.spans.iter().enumerate() {
            let peak = log.span_peaks[i][j];
            rows.push(crate::losslog::LossRow {
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

fn eval_line(step: u64, loss: f64) -> StepLog {
    StepLog {
        kind: "eval".into(),
        step,
        seq: 0,
        loss,
        main_loss: loss,
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
        rollback: None,
    }
}

/// Loads a checkpoint directory into `params` and `opt`; checks it belongs to `model`.
pub fn load_checkpoint(
    dir: &Path,
    model: &Model,
    params: &mut [f32],
    opt: &mut AdamW,
) -> Result<CheckpointState> {
    let cfg = crate::hf::read_config(&dir.join("config.json"))?;
    if cfg != model.cfg {
        return Err(Error::checkpoint(
            dir.join("config.json"),
            "the checkpoint's model configuration differs from the run's",
        ));
    }
    crate::hf::load_tensors(
        &dir.join("model.safetensors"),
        &model.layout,
        params,
        "",
        false,
    )?;
    let meta = crate::hf::load_tensors(
        &dir.join("optimizer.safetensors"),
        &model.layout,
        &mut opt.m,
        "m.",
        false,
    )?;
    crate::hf::load_tensors(
        &dir.join("optimizer_v.safetensors"),
        &model.layout,
        &mut opt.v,
        "v.",
        false,
    )?;
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let st: CheckpointState =
        serde_json::from_str(&text).map_err(|e| Error::json(&path, "bad state", e))?;
    let t: u64 = meta
        .get("t")
        .and_then(|t| t.parse().ok())
        .unwrap_or(u64::MAX);
    if t != st.optimizer_t {
        return Err(Error::checkpoint(
            &path,
            format!("optimizer step {t} ≠ state's {}", st.optimizer_t),
        ));
    }
    opt.t = st.optimizer_t;
    Ok(st)
}
