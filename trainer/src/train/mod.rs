//! The training loop: a global batch from the loader, forward and backward per micro-batch
//! (gradients accumulate), across processes the reduction of figures and gradients in rank
//! order, the spike detectors, global-norm clipping, AdamW and the routing-bias update; an
//! evaluation on the held-out dataset on schedule, a line of `log.jsonl` per step and per
//! evaluation, and atomic, resumable checkpoints.
//!
//! A run directory holds `run.json` (the resolved configuration and model, the dataset
//! fingerprint), `log.jsonl`, the per-document loss table `losses/` ([`crate::losslog`]),
//! `quarantine.json` when a spike quarantined documents, and `checkpoints/`.
//!
//! The [`Trainer`] and its loop live here; beside them:
//! - `config.rs`: the configuration, `train.toml` ([`TrainConfig`] and its sections);
//! - `log.rs`: the step log, `log.jsonl` ([`StepLog`], [`LogKind`], [`superseded`]);
//! - `checkpoint.rs`: checkpoints, their layout and their loading ([`CheckpointState`],
//!   [`load_checkpoint`], [`Trainer::save_checkpoint`]);
//! - `quarantine.rs`: the spike responses quarantine and rollback ([`Quarantined`],
//!   [`read_quarantine`]);
//! - `stats.rs`: a step's per-sample and per-document-span figures and their rows of the loss
//!   table.
//!
//! The cost model (FLOPs per token, the GEMM peak behind the MFU) is [`crate::cost`]'s, AdamW
//! and the learning-rate schedule [`crate::optim`]'s, the spike detectors [`crate::spikes`]'s.

use std::sync::Arc;
use std::time::Instant;

use tokenmill_kernels::{Backend, Cpu};
use tokenmill_shards::Dataset;
use tokenmill_shards::loader::{Loader, LoaderState, Shuffle};

use crate::cost::{flops_per_token, measure_gemm_peak};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::{Batch, LossWeights, Model, WgradMode, mtp_mean};
use crate::moe::update_bias;
use crate::ops::WgradQueue;
use crate::optim::{AdamW, clip_scale};
use crate::parallel::{Groups, reduce_gradients, update_shard};
use crate::params::view_mut;
use crate::pipeline::exec::{MicroBatch, Pipeline};
use crate::rng::Rng;
use crate::spikes::SpikeResponse;

mod checkpoint;
mod config;
mod log;
mod quarantine;
mod sources;
mod stats;

pub use checkpoint::{CheckpointState, fingerprint, load_checkpoint};
pub use config::{
    ComputeDevice, DataConfig, DistillConfig, Fp8GemmChoice, LoopConfig, ModelSourceConfig,
    OnNonFinite, TrainConfig, loader_config,
};
pub use log::{LogKind, RollbackLog, StepLog, TaskScores, superseded};
pub use quarantine::{Quarantined, read_quarantine};

use log::{KeptLog, eval_line, open_log};
use stats::{SampleStats, loss_rows};

/// This rank's samples of a batch of `n` (all of them in one process).
fn slice_of(group: Option<&Groups>, n: usize) -> std::ops::Range<usize> {
    group.map_or(0..n, |g| g.batch_slice(n))
}

/// The samples' tokens `[b, s + 1]` and loss masks `[b, s]`, concatenated.
fn flatten(samples: &[tokenmill_shards::loader::Sample]) -> (Vec<u32>, Vec<u8>) {
    let tokens = samples
        .iter()
        .flat_map(|x| x.tokens.iter().copied())
        .collect();
    let mask = samples
        .iter()
        .flat_map(|x| x.loss_mask.iter().copied())
        .collect();
    (tokens, mask)
}

/// The document starts of `samples` (`[b, s]`: for each input position, where its document
/// begins in the sample; a document continued from the previous sample begins at 0), for
/// attention reset; `None` when the run does not reset.
fn doc_starts(
    samples: &[tokenmill_shards::loader::Sample],
    s: usize,
    reset: bool,
) -> Option<Vec<u32>> {
    reset.then(|| {
        let mut out = Vec::with_capacity(samples.len() * s);
        for x in samples {
            // Positions no span covers (none today: spans tile the sample) see only themselves.
            let mut row: Vec<u32> = (0..s as u32).collect();
            for sp in &x.spans {
                let (a, b) = (sp.start as usize, (sp.start + sp.len) as usize);
                row[a.min(s)..b.min(s)].fill(sp.start);
            }
            out.extend(row);
        }
        out
    })
}

/// A step's losses, averaged over its micro-batches as they come.
#[derive(Debug, Default)]
struct StepSums {
    loss: f64,
    main: f64,
    mtp: f64,
    bal: f64,
    kl: f64,
}

impl StepSums {
    /// One micro-batch's total, main, MTP and balance losses, of `n` in the step.
    fn add(&mut self, loss: f64, main: f64, mtp_losses: &[f64], bal: f64, n: usize) {
        let n = n as f64;
        self.loss += loss / n;
        self.main += main / n;
        self.mtp += mtp_mean(mtp_losses) / n;
        self.bal += bal / n;
    }
}

/// The teacher records of a run under `[train] distill`, with its α and T.
#[derive(Debug)]
struct Teacher {
    data: tokenmill_shards::teacher::TeacherData,
    alpha: f64,
    temperature: f64,
}

impl Teacher {
    /// Opens `[train] distill`'s records for the training dataset `ds` and the model `mcfg`.
    fn open(
        cfg: &config::DistillConfig,
        ds: &Dataset,
        mcfg: &crate::config::ModelConfig,
        d: &DataConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let data = tokenmill_shards::teacher::TeacherData::open(&cfg.data, ds, true)?;
        let tm = &data.manifest().teacher;
        if tm.vocab_size > mcfg.vocab_size as u64 {
            return Err(Error::Data(format!(
                "{}: the teacher's vocabulary of {} exceeds the model's vocab_size {}",
                cfg.data.display(),
                tm.vocab_size,
                mcfg.vocab_size
            )));
        }
        if tm.context != d.seq_len
            || d.packing != tokenmill_shards::loader::Packing::Documents
            || !d.attention_reset
        {
            tracing::warn!(
                teacher_context = tm.context,
                seq_len = d.seq_len,
                "the teacher saw each document in windows of its context; the student sees the same context only with packing = \"documents\", attention_reset = true and seq_len = that context"
            );
        }
        tracing::info!(
            teacher = %cfg.data.display(),
            k = data.k(),
            alpha = cfg.alpha,
            temperature = cfg.temperature,
            "distilling"
        );
        Ok(Teacher {
            data,
            alpha: cfg.alpha,
            temperature: cfg.temperature,
        })
    }

    /// The records of `samples`' input positions: ids and log-probabilities `[b·s, k]`.
    fn rows(
        &self,
        samples: &[tokenmill_shards::loader::Sample],
        s: usize,
        vocab: usize,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        let k = self.data.k();
        let (mut ids, mut logp) = (
            Vec::with_capacity(samples.len() * s * k),
            Vec::with_capacity(samples.len() * s * k),
        );
        for x in samples {
            self.data
                .sample(&x.spans, s, vocab as u64, &mut ids, &mut logp)?;
        }
        Ok((ids, logp))
    }
}

/// Figures an evaluation adds to its line beyond the held-out loss, computed from the model as
/// it stands: `tokenmill train` scores `[train] eval_tasks` through one (the scoring code lives
/// in `tokenmill-pipelines`, above this crate). Called on the writing rank, after the held-out
/// loss, with the main model's full parameters.
pub trait EvalHook: std::fmt::Debug {
    /// The scores of the model `model` with weights `params`, run on `be`, after `step` steps.
    fn evaluate(
        &mut self,
        step: u64,
        model: &Model,
        params: &[f32],
        be: &dyn Backend<f32>,
    ) -> std::result::Result<Vec<TaskScores>, Box<dyn std::error::Error + Send + Sync>>;
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
    /// AdamW's state: all of it in one process; across processes this rank's chunk of it
    /// (ZeRO-1, the parameters in `shard`).
    pub opt: AdamW,
    /// Across processes: the parameters whose optimizer state this rank keeps and updates.
    shard: Option<std::ops::Range<usize>>,
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
    /// The sources of the batch's documents, for the per-source document reference.
    sources: sources::SourceIndex,
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
    /// The compute backend the model runs on.
    be: Box<dyn Backend<f32>>,
    /// This rank's place in its pipeline (pp > 1).
    pipe: Option<Pipeline>,
    /// The run directory's lock (the writing rank).
    _lock: Option<tokenmill_shards::lock::DirLock>,
    /// What each evaluation adds to its line ([`Trainer::set_eval_hook`]).
    eval_hook: Option<Box<dyn EvalHook>>,
    /// `[train] distill`: the teacher's records.
    teacher: Option<Teacher>,
    /// Gradient norms by parameter group, and their trailing history (optimizer spikes).
    grad_groups: crate::grad_groups::GradGroups,
    group_history: crate::grad_groups::GroupHistory,
}

impl Trainer {
    /// Sets up a run in one process on the CPU: fresh, or from the newest checkpoint in
    /// `train.out` when `resume`.
    pub fn new(cfg: TrainConfig, resume: bool) -> Result<Self> {
        Self::new_in(cfg, resume, None)
    }

    /// [`Trainer::with_backend`] on the CPU ([`Cpu`]).
    pub fn new_in(
        cfg: TrainConfig,
        resume: bool,
        world: Option<Arc<dyn tokenmill_comm::Communicator>>,
    ) -> Result<Self> {
        Self::with_backend(cfg, resume, world, Box::new(Cpu))
    }

    /// Sets up a run on the compute backend `be` across the ranks of `world` (every rank calls
    /// it; `None`: one process), laid out by `[parallel]`. Every rank reads the same global
    /// batch and trains on its slice of it; rank 0 alone writes the run directory (log, loss
    /// table), which is the same as a one-process run's, and every rank writes its shard of
    /// each checkpoint, which resumes in any layout.
    pub fn with_backend(
        cfg: TrainConfig,
        resume: bool,
        world: Option<Arc<dyn tokenmill_comm::Communicator>>,
        be: Box<dyn Backend<f32>>,
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
        if d.attention_reset && d.packing != tokenmill_shards::loader::Packing::Documents {
            return Err(Error::Config(
                "[data] attention_reset needs packing = \"documents\" (windows cut through documents at any token)".into(),
            ));
        }
        let group = match world {
            Some(w) if w.size() > 1 || !cfg.parallel.is_single() => {
                // Without a micro_batch each rank runs its slice as one micro-batch.
                let data_ranks = (cfg.parallel.dp * cfg.parallel.ep).max(1) as u64;
                let local = d.micro_batch.unwrap_or(d.batch / data_ranks);
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
        let mut pipe = None;
        if let Some(g) = &group {
            model.parallel = g.model_parallel();
            if let Some((comm, mail)) = &g.pipe {
                pipe = Some(Pipeline::new(
                    &model,
                    cfg.parallel.schedule,
                    comm.clone(),
                    mail.clone(),
                    g.experts_backward.clone(),
                )?);
            }
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
        let teacher = match &cfg.train.distill {
            Some(_) if pipe.is_some() => {
                return Err(Error::Layout(
                    "[train] distill runs without pipeline parallelism (pp = 1): the last stage would need the teacher's records of every micro-batch".into(),
                ));
            }
            Some(dc) => Some(Teacher::open(dc, &ds, &mcfg, d)?),
            None => None,
        };
        let (exclude, quarantined) = quarantine::exclusions(d, &cfg.train.out, resume, writer)?;
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
                // Across processes each data rank evaluates its slice of each eval batch.
                let ranks = group.as_ref().map_or(1, |g| g.data_ranks as u64);
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
        // One run writes a run directory at a time (its writing rank holds the lock).
        let lock = if writer {
            Some(tokenmill_shards::lock::DirLock::acquire(&out, "train")?)
        } else {
            None
        };
        if !resume && writer {
            // A fresh run starts over: checkpoints of an earlier run in the same place would
            // be taken for this run's by a rollback.
            checkpoint::remove_earlier_run(&out.join("checkpoints"))?;
        }
        let mut params: Vec<f32> = model.init(cfg.train.init_seed);
        if let Some(dir) = cfg.model.init.as_ref().filter(|_| !resume) {
            let from = crate::hf_init::load_init(dir, &model, &mut params)?;
            tracing::info!(weights = %from.dir.display(), tensors = from.tensors, "initialised from");
        }
        let mut opt = AdamW::new(cfg.optim.clone(), &model.layout);
        let mut step = 0;
        let mut rng = Rng::new(cfg.train.init_seed);
        let mut keep = None;
        if resume {
            let (dir, st) =
                checkpoint::load_latest(&out, &model, &mut params, &mut opt, &fingerprint, d)?;
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
        // ZeRO-1: each rank keeps the optimizer state of one contiguous chunk of parameters.
        let shard = group
            .as_ref()
            .map(|g| tokenmill_comm::chunk_range(params.len(), g.world.size(), g.world.rank()));
        if let Some(r) = &shard {
            opt = opt.slice(r.clone());
        }
        let grads = vec![0.0; params.len()];
        let flops_per_token = flops_per_token(&mcfg, d.seq_len);
        let cfg_spikes = cfg.train.spikes.clone();
        let cfg_window = cfg_spikes.window;
        let model_layout = model.layout.clone();
        let mut t = Trainer {
            cfg,
            model,
            params,
            grads,
            opt,
            shard,
            loader,
            eval,
            step,
            rng,
            fingerprint,
            peak_flops: 0.0,
            flops_per_token,
            log,
            spikes: crate::spikes::SpikeDetector::new(cfg_spikes),
            sources: sources::SourceIndex::default(),
            recent_losses: std::collections::VecDeque::new(),
            quarantined,
            rollbacks,
            seq,
            losses,
            group,
            be,
            pipe,
            _lock: lock,
            eval_hook: None,
            teacher,
            grad_groups: crate::grad_groups::GradGroups::new(&model_layout),
            group_history: crate::grad_groups::GroupHistory::new(cfg_window),
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

    /// Runs `hook` at every evaluation and logs what it returns in the eval line. Only in one
    /// process: a run across processes holds no rank with the whole model to hand it.
    pub fn set_eval_hook(&mut self, hook: Box<dyn EvalHook>) -> Result<()> {
        if self.group.is_some() {
            return Err(Error::Layout(
                "evaluation tasks run in one process only (not across processes)".into(),
            ));
        }
        self.eval_hook = Some(hook);
        Ok(())
    }

    /// The parameters (the flat buffer of [`Model::layout`]).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The compute backend the model runs on.
    pub fn backend(&self) -> &dyn Backend<f32> {
        self.be.as_ref()
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
        let counted = self.be.counters();
        let be = self.be.as_ref();
        let d = self.cfg.data.clone();
        let micro = d.micro_batch.unwrap_or(d.batch) as usize;
        let s = d.seq_len as usize;
        let loader_state = self.loader.state();
        let batch = self.loader.next_batch()?;
        let w = self.weights();
        // On the backend: on a device that keeps the gradients, they stay there.
        be.fill(&mut self.grads, 0.0);
        let mut sums = StepSums::default();
        let mut loads: Vec<Vec<u64>> = Vec::new();
        let mut stats = SampleStats::with_capacity(batch.samples.len());
        let excluded = self.quarantined;
        let mut wq = WgradQueue::new();
        // FP8 tiles with a non-finite amax in this step's forwards (the backwards' are in `wq`).
        let mut bad_tiles = 0;
        // Across processes every rank reads the global batch and trains on its slice.
        let mine = slice_of(self.group.as_ref(), batch.samples.len());
        let n_micro = mine.len().div_ceil(micro);
        if let Some(pipe) = &self.pipe {
            // Pipelined: the micro-batches go through the schedule; the figures come back
            // per micro-batch, summed up below as one process sums them.
            let chunks: Vec<_> = batch.samples[mine.clone()].chunks(micro).collect();
            let mbs: Vec<MicroBatch> = chunks
                .iter()
                .map(|c| {
                    let (tokens, mask) = flatten(c);
                    MicroBatch {
                        tokens,
                        mask,
                        starts: doc_starts(c, s, d.attention_reset),
                        b: c.len(),
                    }
                })
                .collect();
            let out = pipe.step(&self.model, be, &self.params, &mbs, s, w, &mut self.grads)?;
            bad_tiles += out.nonfinite_fp8_tiles;
            for f in &out.figures {
                sums.add(
                    f.loss(w),
                    f.main_loss,
                    &f.mtp_losses,
                    f.balance_loss(),
                    n_micro,
                );
            }
            if let Some(tl) = &out.token_losses {
                for (chunk, tl) in chunks.iter().zip(tl) {
                    for (bi, smp) in chunk.iter().enumerate() {
                        stats.push(smp, &tl[bi * s..(bi + 1) * s], s);
                    }
                }
            }
            loads = out.loads;
        }
        let one_process = if self.pipe.is_some() {
            &[][..]
        } else {
            &batch.samples[mine]
        };
        for chunk in one_process.chunks(micro) {
            let (tokens, mask) = flatten(chunk);
            let starts = doc_starts(chunk, s, d.attention_reset);
            let records = match &self.teacher {
                Some(t) => Some(t.rows(chunk, s, self.model.cfg.vocab_size)?),
                None => None,
            };
            let distill = match (&self.teacher, &records) {
                (Some(t), Some((ids, logp))) => Some(crate::model::Distill {
                    teacher: tokenmill_kernels::cpu::distill::TeacherTopK {
                        k: t.data.k(),
                        ids,
                        logp,
                    },
                    alpha: t.alpha,
                    temperature: t.temperature,
                }),
                _ => None,
            };
            let bt = Batch {
                tokens: &tokens,
                mask: Some(&mask),
                starts: starts.as_deref(),
                distill,
                b: chunk.len(),
                s,
            };
            let mut f = self.model.forward(be, &self.params, &bt, w, true)?;
            bad_tiles += f.nonfinite_fp8_tiles;
            sums.add(f.loss, f.main_loss, &f.mtp_losses, f.balance_loss, n_micro);
            sums.kl += f.distill_kl.unwrap_or(0.0) / n_micro as f64;
            for (bi, smp) in chunk.iter().enumerate() {
                stats.push(smp, &f.token_losses[bi * s..(bi + 1) * s], s);
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
                    be,
                    &self.params,
                    &mut f,
                    &mut self.grads,
                    &mut wq,
                    WgradMode::Immediate,
                );
            }
        }
        if n_micro > 1 {
            be.scale(&mut self.grads, 1.0 / n_micro as f32);
        }
        let StepSums {
            mut loss,
            mut main,
            mut mtp,
            mut bal,
            mut kl,
        } = sums;
        let mut grad_norm = None;
        if let Some(g) = &self.group {
            // Every rank gets the whole batch's figures and the global gradient norm (and its
            // chunk of the summed gradients), so every decision below — spikes, quarantine,
            // the update — is the same on every rank.
            let w = g.world.as_ref();
            let mut all = [loss, main, mtp, bal, kl];
            // Summed over the data ranks (the ranks of a pipeline hold the same figures).
            tokenmill_comm::Collectives::all_reduce_sum(g.stage.as_ref(), &mut all)?;
            [loss, main, mtp, bal, kl] = all;
            // ZeRO-1: this rank receives its chunk of the summed gradients, and their norm.
            let r = self
                .shard
                .clone()
                .expect("a run across processes shards its optimizer");
            grad_norm = Some(reduce_gradients(
                self.be.as_ref(),
                w,
                &self.opt,
                r,
                &mut self.grads,
            )?);
            stats = stats.gather(w)?;
        }
        // On the backend when it keeps its data (the gradients never leave it), else here.
        let grad_norm =
            grad_norm.unwrap_or_else(|| self.opt.grad_norm_on(self.be.as_ref(), &self.grads));
        // Per parameter group: this process's part of the gradient (its ZeRO chunk across
        // processes, summed over the ranks).
        let mut group_sq = self.grad_groups.squares_on(
            self.be.as_ref(),
            &self.grads,
            self.shard.clone().unwrap_or(0..self.grads.len()),
        );
        if let Some(g) = &self.group {
            tokenmill_comm::Collectives::all_reduce_sum(g.world.as_ref(), &mut group_sq)?;
        }
        let group_norms: Vec<f64> = group_sq.iter().map(|s| s.sqrt()).collect();
        let lr = self.cfg.lr.at(self.step);
        let finite = loss.is_finite() && grad_norm.is_finite();
        let step = self.step;
        let per_source = self.spikes.config().doc_reference == crate::spikes::DocReference::Source;
        let sources = if per_source {
            self.sources.of_batch(&self.loader, &batch.samples)?
        } else {
            Vec::new()
        };
        let spans = stats.spans(&sources);
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
        // A gradient-norm spike with no document flagged: the optimizer's, named by the group
        // whose norm jumped.
        let grad_only = spikes.iter().any(|f| f.starts_with("grad-norm"))
            && !spikes.iter().any(|f| f.starts_with("doc"));
        let names: Vec<String> = self.grad_groups.names().map(str::to_string).collect();
        let optimizer = if finite && grad_only {
            self.group_history.jump(&names, step, &group_norms)
        } else {
            None
        };
        if let Some(o) = &optimizer {
            spikes.push(format!(
                "optimizer: {} ({:.0} % of the rise; {:.3} → {:.3}, z={:.1})",
                o.group,
                100.0 * o.share,
                o.typical,
                o.norm,
                o.z
            ));
        }
        if finite && spikes.is_empty() {
            self.group_history.push(step, group_norms.clone());
        }
        let skip_spike = finite && !spikes.is_empty() && sc.drops_update();
        let quarantined = if skip_spike && sc.responds(SpikeResponse::Quarantine) {
            self.quarantine(
                &batch.samples,
                &stats.span_losses,
                &stats.span_counts,
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
            let _t = crate::timeline::span("compute", || "optimizer".into());
            let clip = clip_scale(grad_norm, self.cfg.optim.clip);
            match (&self.group, self.shard.clone()) {
                // ZeRO-1: update this rank's chunk, then gather every rank's.
                (Some(g), Some(r)) => update_shard(
                    self.be.as_ref(),
                    g.world.as_ref(),
                    &mut self.opt,
                    r,
                    &mut self.params,
                    &self.grads,
                    lr,
                    clip,
                )?,
                _ => self
                    .opt
                    .step_on(self.be.as_ref(), &mut self.params, &self.grads, lr, clip),
            }
            for (id, load) in self.model.moe_biases().into_iter().zip(&loads) {
                update_bias(
                    view_mut(&self.model.layout, &mut self.params, id),
                    load,
                    self.cfg.train.bias_gamma,
                );
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let device = self
            .be
            .counters()
            .zip(counted)
            .map(|(now, then)| now - then);
        let tokens = (batch.samples.len() * s) as f64;
        if self.peak_flops == 0.0 {
            self.peak_flops = measure_gemm_peak(self.be.as_ref());
        }
        let rollback = if skip_spike
            && sc.responds(SpikeResponse::Rollback)
            && self.rollbacks < sc.max_rollbacks
        {
            Some(self.rollback(step, !quarantined.is_empty())?)
        } else {
            None
        };
        let SampleStats {
            sample_losses,
            span_losses,
            span_peaks,
            span_counts,
        } = stats;
        let log = StepLog {
            kind: LogKind::Train,
            step,
            seq: self.seq,
            loss,
            main_loss: main,
            distill_kl: self.teacher.as_ref().map(|_| kl),
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
            grad_norms: self.grad_groups.norms(&group_sq),
            optimizer,
            rollback,
            device,
            tasks: Vec::new(),
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
            // This rank's count, over this step's forward and backward passes.
            let bad_tiles = bad_tiles + wq.nonfinite_fp8_tiles();
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
            let samples = &batch.samples[slice_of(self.group.as_ref(), batch.samples.len())];
            let (tokens, mask) = flatten(samples);
            let starts = doc_starts(samples, s, self.cfg.data.attention_reset);
            let b = samples.len();
            let mut v = match &self.pipe {
                Some(pipe) => {
                    let mb = MicroBatch {
                        b,
                        tokens,
                        mask,
                        starts,
                    };
                    pipe.evaluate(&self.model, self.be.as_ref(), &self.params, &[mb], s, w)?[0]
                }
                None => {
                    let bt = Batch {
                        tokens: &tokens,
                        mask: Some(&mask),
                        starts: starts.as_deref(),
                        distill: None,
                        b,
                        s,
                    };
                    let f = self
                        .model
                        .forward(self.be.as_ref(), &self.params, &bt, w, false)?;
                    [f.main_loss, mtp_mean(&f.mtp_losses)]
                }
            };
            if let Some(g) = &self.group {
                // Each data rank's losses are its share of the batch mean.
                tokenmill_comm::Collectives::all_reduce_sum(g.stage.as_ref(), &mut v)?;
            }
            sum += v[0];
            mtp += v[1];
            n += 1;
        }
        let loss = sum / n.max(1) as f64;
        let mut log = eval_line(self.step, loss);
        log.mtp_loss = mtp / n.max(1) as f64;
        if let Some(hook) = self.eval_hook.as_mut() {
            log.tasks = hook
                .evaluate(self.step, &self.model, &self.params, self.be.as_ref())
                .map_err(Error::EvalHook)?;
        }
        self.write_log(&log)?;
        Ok(Some(log))
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
        if tc.final_checkpoint {
            self.save_checkpoint()?;
        }
        Ok(last_eval)
    }
}

#[cfg(test)]
mod tests {
    use super::doc_starts;
    use tokenmill_shards::loader::{Sample, Span};

    fn span(start: u32, len: u32) -> Span {
        Span {
            shard: 0,
            doc: start as u64,
            doc_offset: 0,
            start,
            len,
        }
    }

    #[test]
    fn document_starts_follow_the_spans_of_each_sample() {
        let s = 8;
        let sample = |spans: Vec<Span>| Sample {
            source: 0,
            epoch: 0,
            index: 0,
            position: 0,
            tokens: vec![0; s + 1],
            loss_mask: vec![1; s],
            spans,
        };
        // A document continued from the previous sample (3 tokens), one of 1, one of 5 that
        // runs past the last input position (its last token is only a target).
        let a = sample(vec![span(0, 3), span(3, 1), span(4, 5)]);
        let b = sample(vec![span(0, 9)]);
        assert_eq!(doc_starts(&[a.clone(), b.clone()], s, false), None);
        assert_eq!(
            doc_starts(&[a, b], s, true).unwrap(),
            [0, 0, 0, 3, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
