//! The training configuration (`train.toml`): the model's source, the data, the loop; AdamW's
//! settings and the learning-rate schedule are [`crate::optim`]'s, the process layout
//! [`crate::parallel`]'s.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokenmill_shards::loader::{LoaderConfig, Packing, Shuffle};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::ops::Precision;
use crate::optim::{AdamWConfig, LrSchedule};
use crate::parallel::ParallelConfig;

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
    /// Weights to start from instead of random ones ([`crate::hf_init`]): an HF-layout model
    /// directory, a tokenmill checkpoint, or a run directory (its latest checkpoint). Without
    /// `preset` or `config`, the model is the one described there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
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
            (None, None) => match &self.init {
                Some(dir) => {
                    crate::hf::read_config(&crate::hf_init::init_dir(dir)?.join("config.json"))?
                }
                None => ModelConfig::preset("tiny")?,
            },
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
    /// Attention reset at document boundaries (`packing = "documents"` only): packed documents
    /// or conversations do not attend to each other, as if each were a sample of its own
    /// (DeepSeek-V3's sample masking for SFT). Off by default, as in DeepSeek-V3 pretraining.
    #[serde(default)]
    pub attention_reset: bool,
}

fn default_true() -> bool {
    true
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
    /// Task files (JSON Lines, `tokenmill eval --tasks`' format) scored at every evaluation;
    /// `tokenmill train` runs them (see [`super::EvalHook`]), its eval lines carry the scores.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eval_tasks: Vec<PathBuf>,
    /// Few-shot examples per prompt of the eval tasks.
    #[serde(default)]
    pub eval_tasks_fewshot: usize,
    /// Seed of the eval tasks' few-shot choice.
    #[serde(default = "default_tasks_seed")]
    pub eval_tasks_seed: u64,
    /// Examples of each eval task scored: its first this many (0 = all).
    #[serde(default)]
    pub eval_tasks_limit: usize,
    /// Checkpoint every this many steps (0 = only at the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Save a checkpoint when the run ends (`false` for benchmarks and checks that only read
    /// the log: a 1B model's checkpoint is 12 GB; such a run cannot be resumed from its end).
    #[serde(default = "default_true")]
    pub final_checkpoint: bool,
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
    /// Where the model computes: `cpu` (the default) or `cuda` (the CUDA backend on GPU 0, or
    /// on the process's local rank under a launcher). The arithmetic is the same: the device
    /// check compares the two.
    #[serde(default)]
    pub device: ComputeDevice,
    /// How a GPU computes the FP8 GEMMs of `precision = "fp8"`: `model` (the default:
    /// the CPU's accumulator model on the CUDA cores, the quantity the CPU computes) or
    /// `cublaslt` (cuBLASLt's block-scaled FP8 matmul on the tensor cores, CUDA ≥ 12.9 on
    /// Hopper: the same quantized operands, the hardware's accumulation) or `mma` (our own
    /// tensor-core kernel on the same operands, compute capability ≥ 8.9, every MoE expert's
    /// product in one launch).
    #[serde(default, skip_serializing_if = "Fp8GemmChoice::is_model")]
    pub fp8_gemm: Fp8GemmChoice,
    /// `device = "cuda-managed"` only: the model's attention and dense feed-forward
    /// sublayers run their operations without waiting for the GPU after each one — a single
    /// wait at the sublayer's end — so the GPU need not idle while the host launches the next
    /// operation (the same results; off by default until a GPU has measured it: the device
    /// check's part 6).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub defer_waits: bool,
    /// Distillation from a teacher's stored top-K (`tokenmill distill-data`):
    /// `distill = { data = "teacher-dir", alpha = 0.5, temperature = 2.0 }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillConfig>,
}

/// `[train] distill`: the main next-token loss becomes `(1 − α)·CE + α·T²·KL` against the
/// teacher records in `data`, which must have been written for the training dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The teacher directory (`teacher.json` and a `.teacher.bin` per shard).
    pub data: PathBuf,
    /// α: the KL term's share, in [0, 1].
    #[serde(default = "default_distill_alpha")]
    pub alpha: f64,
    /// T > 0: both distributions are softened by it (the KL term is scaled by T²).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

fn default_distill_alpha() -> f64 {
    0.5
}

fn default_temperature() -> f64 {
    1.0
}

impl DistillConfig {
    /// Checks α and T.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::Config(format!(
                "[train] distill: alpha {} outside [0, 1]",
                self.alpha
            )));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::Config(format!(
                "[train] distill: temperature {} must be positive",
                self.temperature
            )));
        }
        Ok(())
    }
}

/// `[train] fp8_gemm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fp8GemmChoice {
    /// The CPU's FP8 accumulator model.
    #[default]
    Model,
    /// cuBLASLt's block-scaled FP8 matmul.
    Cublaslt,
    /// Our `mma.sync` FP8 kernel.
    Mma,
    /// The dense GEMMs through cuBLASLt, the experts' grouped GEMMs by our kernel (one launch
    /// for every expert).
    #[serde(rename = "cublaslt+mma")]
    CublasltMma,
}

impl Fp8GemmChoice {
    fn is_model(&self) -> bool {
        *self == Fp8GemmChoice::Model
    }
    /// The name the config gives it.
    pub fn name(self) -> &'static str {
        match self {
            Fp8GemmChoice::Model => "model",
            Fp8GemmChoice::Cublaslt => "cublaslt",
            Fp8GemmChoice::Mma => "mma",
            Fp8GemmChoice::CublasltMma => "cublaslt+mma",
        }
    }
}

/// `[train] device`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDevice {
    /// The CPU kernels.
    #[default]
    Cpu,
    /// The CUDA backend (`tokenmill-cuda`), copying each operation's slices to the GPU and back.
    Cuda,
    /// The CUDA backend with the kernels on the host's own memory (HMM: the driver migrates
    /// pages to the GPU at first touch), so weights, optimizer state and activations stay on the
    /// device between operations; needs a GPU that reaches pageable host memory.
    #[serde(rename = "cuda-hmm")]
    CudaHmm,
    /// The CUDA backend with the process's large allocations in CUDA managed memory, which the
    /// kernels take by address: weights, optimizer state and activations stay on the device
    /// between operations on any GPU with managed memory (HMM or not); smaller slices are
    /// copied. Needs the `tokenmill` binary's allocator (`tokenmill_cuda::managed`).
    #[serde(rename = "cuda-managed")]
    CudaManaged,
}

impl ComputeDevice {
    /// The name the config gives it.
    pub fn name(self) -> &'static str {
        match self {
            ComputeDevice::Cpu => "cpu",
            ComputeDevice::Cuda => "cuda",
            ComputeDevice::CudaHmm => "cuda-hmm",
            ComputeDevice::CudaManaged => "cuda-managed",
        }
    }
}

fn default_losses_every() -> u64 {
    100
}

fn default_tasks_seed() -> u64 {
    1234
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
