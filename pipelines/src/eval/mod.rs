//! `tokenmill eval`: how well a model predicts text, measured with the trainer's own forward.
//!
//! - [`dataset`]: loss and perplexity of a model on a built dataset, from per-token losses
//!   attributed to the documents they belong to, and the same broken down by provenance (source
//!   file, language, URL domain, shard).
//! - [`tasks`]: multiple-choice and exact-answer tasks scored by log-likelihood, in the manner of
//!   EleutherAI's lm-evaluation-harness (`acc`, `acc_norm`, few-shot with a fixed seed).
//! - [`train_tasks`]: the same tasks scored at every evaluation of a training run (`[train]
//!   eval_tasks`), through the trainer's evaluation hook.
//! - [`chart`]: a horizontal bar chart (SVG) of a breakdown.
//!
//! The model is a tokenmill checkpoint (`RUN/checkpoints/step-N`, or a run directory, read at
//! its `latest` checkpoint) or any Hugging Face-layout DeepseekV3 directory that
//! [`tokenmill_trainer::hf::load`] reads. Evaluation runs the main model only: multi-token
//! prediction modules are not part of a model's next-token distribution (transformers'
//! `DeepseekV3ForCausalLM` ignores them too).

pub mod chart;
pub mod dataset;
pub mod tasks;
pub mod train_tasks;

use std::path::{Path, PathBuf};

use tokenmill_kernels::Backend;
use tokenmill_trainer::train::ComputeDevice;
use tokenmill_trainer::{Batch, Forward, LossWeights, Model};

use crate::error::{Error, Result};

/// A model ready to evaluate: its structure, its weights and the backend that runs it.
pub struct EvalModel {
    /// The directory the weights came from (a run directory resolved to its checkpoint).
    pub dir: PathBuf,
    /// The main model (no MTP modules).
    pub model: Model,
    /// The flat parameter buffer (MTP tensors included when the checkpoint has them; unused).
    pub params: Vec<f32>,
    be: Box<dyn Backend<f32>>,
}

impl std::fmt::Debug for EvalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalModel")
            .field("dir", &self.dir)
            .field("cfg", &self.model.cfg)
            .finish_non_exhaustive()
    }
}

/// A continuation's log-likelihood given its context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogLik {
    /// Σ ln p(token | everything before it) over the continuation's tokens (nats, ≤ 0).
    pub logprob: f64,
    /// Tokens in the continuation.
    pub tokens: usize,
    /// Every continuation token is the model's most likely next token (lm-eval's
    /// `is_greedy`).
    pub greedy: bool,
}

/// The checkpoint directory `dir` stands for: `dir` itself when it holds a `config.json`, else
/// the checkpoint a run directory's `checkpoints/latest` names.
pub fn resolve_model_dir(dir: &Path) -> Result<PathBuf> {
    if dir.join("config.json").is_file() {
        return Ok(dir.to_path_buf());
    }
    let latest = dir.join("checkpoints").join("latest");
    if latest.is_file() {
        let name = std::fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
        let name = name.trim();
        if !tokenmill_shards::manifest::is_plain_name(name) {
            return Err(Error::Config(format!(
                "{}: names {name:?}, not a checkpoint directory of the run",
                latest.display()
            )));
        }
        return Ok(dir.join("checkpoints").join(name));
    }
    Err(Error::NotFound(format!(
        "{}: neither a model directory (no config.json) nor a run directory (no checkpoints/latest)",
        dir.display()
    )))
}

/// The tensor names of the weights in `dir`: the keys of `model.safetensors.index.json` when
/// it is there, else those of `model.safetensors`'s header.
fn weight_names(dir: &Path) -> Result<Vec<String>> {
    use std::io::Read;
    let index = dir.join(tokenmill_trainer::hf::MODEL_INDEX);
    let (path, header): (PathBuf, serde_json::Value) = if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: not JSON: {e}", index.display())))?;
        (index, v["weight_map"].clone())
    } else {
        let path = dir.join("model.safetensors");
        let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut len = [0u8; 8];
        f.read_exact(&mut len).map_err(|e| Error::io(&path, e))?;
        let len = u64::from_le_bytes(len);
        // safetensors caps its header at 100 MB.
        if len > 100 << 20 {
            return Err(Error::Config(format!(
                "{}: a safetensors header of {len} bytes",
                path.display()
            )));
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).map_err(|e| Error::io(&path, e))?;
        let v = serde_json::from_slice(&buf).map_err(|e| {
            Error::Config(format!("{}: its header is not JSON: {e}", path.display()))
        })?;
        (path, v)
    };
    let obj = header
        .as_object()
        .ok_or_else(|| Error::Config(format!("{}: no map of tensor names", path.display())))?;
    Ok(obj
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect())
}

/// Whether the weights in `dir` hold a tensor of decoder layer `layer` (MTP module 1 is layer
/// `num_hidden_layers`).
fn has_layer_weights(dir: &Path, layer: usize) -> Result<bool> {
    let prefix = format!("model.layers.{layer}.");
    Ok(weight_names(dir)?.iter().any(|n| n.starts_with(&prefix)))
}

/// Drops the MTP modules from `model` (their parameters stay in the buffer, unused).
pub fn main_only(model: &mut Model) {
    model.mtp.clear();
    model.cfg.num_nextn_predict_layers = 0;
}

impl EvalModel {
    /// Loads the model `dir` names ([`resolve_model_dir`]) to run on `device`. A checkpoint
    /// whose `config.json` asks for MTP modules but holds no MTP weights (transformers saves
    /// none, whatever `num_nextn_predict_layers` says) is read as the main model alone.
    pub fn load(dir: &Path, device: ComputeDevice) -> Result<Self> {
        let dir = resolve_model_dir(dir)?;
        let cfg = tokenmill_trainer::hf::read_config(&dir.join("config.json"))?;
        let (model, params) = if cfg.num_nextn_predict_layers > 0
            && !has_layer_weights(&dir, cfg.num_hidden_layers)?
        {
            let mut cfg = cfg;
            cfg.num_nextn_predict_layers = 0;
            let model = Model::new(cfg)?;
            let mut params = vec![0f32; model.layout.len()];
            tokenmill_trainer::hf::load_params(&dir, &model.layout, &mut params)?;
            (model, params)
        } else {
            tokenmill_trainer::hf::load(&dir)?
        };
        Ok(Self::new(
            dir,
            model,
            params,
            crate::train::backend(device)?,
        ))
    }

    /// A model already in memory, to run on `device`.
    pub fn on_device(
        dir: PathBuf,
        model: Model,
        params: Vec<f32>,
        device: ComputeDevice,
    ) -> Result<Self> {
        Ok(Self::new(
            dir,
            model,
            params,
            crate::train::backend(device)?,
        ))
    }

    /// A model already in memory, to run on `be`.
    pub fn new(
        dir: PathBuf,
        mut model: Model,
        params: Vec<f32>,
        be: Box<dyn Backend<f32>>,
    ) -> Self {
        main_only(&mut model);
        EvalModel {
            dir,
            model,
            params,
            be,
        }
    }

    /// The model borrowed, as the evaluations take it.
    pub fn view(&self) -> ModelRef<'_> {
        ModelRef {
            dir: &self.dir,
            model: &self.model,
            params: &self.params,
            be: self.be.as_ref(),
        }
    }

    /// The model's vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.view().vocab_size()
    }

    /// The longest input the model takes (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.view().max_positions()
    }

    /// [`ModelRef::forward`].
    pub fn forward(
        &self,
        tokens: &[u32],
        mask: Option<&[u8]>,
        b: usize,
        s: usize,
    ) -> Result<Forward<f32>> {
        self.view().forward(tokens, mask, b, s)
    }

    /// [`ModelRef::loglikelihood`].
    pub fn loglikelihood(
        &self,
        context: &[u32],
        continuation: &[u32],
        max_len: usize,
    ) -> Result<LogLik> {
        self.view().loglikelihood(context, continuation, max_len)
    }
}

/// A model to evaluate, borrowed: an [`EvalModel`]'s, or a training run's as it stands (its
/// main model: [`main_only`] — MTP modules are not part of the next-token distribution).
#[derive(Clone, Copy)]
pub struct ModelRef<'a> {
    /// Where the weights came from (named in reports and errors).
    pub dir: &'a Path,
    /// The main model.
    pub model: &'a Model,
    /// The flat parameter buffer of `model.layout`.
    pub params: &'a [f32],
    /// The backend that runs it.
    pub be: &'a dyn Backend<f32>,
}

impl std::fmt::Debug for ModelRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRef")
            .field("dir", &self.dir)
            .field("cfg", &self.model.cfg)
            .finish_non_exhaustive()
    }
}

impl<'a> From<&'a EvalModel> for ModelRef<'a> {
    fn from(m: &'a EvalModel) -> Self {
        m.view()
    }
}

impl ModelRef<'_> {
    /// The model's vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.model.cfg.vocab_size
    }

    /// The longest input the model takes (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.model.cfg.max_position_embeddings
    }

    /// The trainer's evaluation forward over `b` rows of `s + 1` tokens: per-target losses
    /// (`token_losses`, 0 where `mask` is 0) and the logits `[b·s, V]`.
    pub fn forward(
        &self,
        tokens: &[u32],
        mask: Option<&[u8]>,
        b: usize,
        s: usize,
    ) -> Result<Forward<f32>> {
        let batch = Batch {
            starts: None,
            distill: None,
            tokens,
            mask,
            b,
            s,
        };
        let w = LossWeights {
            mtp_lambda: 0.0,
            balance_alpha: 0.0,
        };
        Ok(self.model.forward(self.be, self.params, &batch, w, false)?)
    }

    /// The log-likelihood of `continuation` after `context`, as lm-eval computes it: the
    /// tokens `context ++ continuation`, cut from the left to `max_len + 1` (the model's
    /// `max_position_embeddings` at most), run through the model; the continuation's targets
    /// summed. `context` must not be empty (lm-eval puts the end-of-text token there).
    pub fn loglikelihood(
        &self,
        context: &[u32],
        continuation: &[u32],
        max_len: usize,
    ) -> Result<LogLik> {
        if continuation.is_empty() || context.is_empty() {
            return Err(Error::Internal(
                "a log-likelihood needs a context and a continuation of at least one token".into(),
            ));
        }
        let max_len = max_len.min(self.max_positions()).max(1);
        let k = continuation.len();
        if k > max_len {
            return Err(Error::Config(format!(
                "a continuation of {k} tokens does not fit in {max_len} positions"
            )));
        }
        let mut all: Vec<u32> = context.iter().chain(continuation).copied().collect();
        if all.len() > max_len + 1 {
            all.drain(..all.len() - (max_len + 1));
        }
        let s = all.len() - 1;
        // Targets s-k..s predict the continuation.
        let mask: Vec<u8> = (0..s).map(|i| u8::from(i >= s - k)).collect();
        let f = self.forward(&all, Some(&mask), 1, s)?;
        let v = self.vocab_size();
        let logits = f
            .logits()
            .ok_or_else(|| Error::Internal("an evaluation forward without logits".into()))?;
        let mut logprob = 0.0;
        let mut greedy = true;
        for i in s - k..s {
            logprob -= f.token_losses[i] as f64;
            let row = &logits[i * v..(i + 1) * v];
            greedy &= argmax(row) == all[i + 1] as usize;
        }
        Ok(LogLik {
            logprob,
            tokens: k,
            greedy,
        })
    }
}

/// The index of the first largest value (torch's `argmax` on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = j;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenmill_trainer::ModelConfig;

    pub(crate) fn tiny(seed: u64) -> EvalModel {
        let mut cfg = ModelConfig::preset("tiny").unwrap();
        cfg.vocab_size = 64;
        let model = Model::new(cfg).unwrap();
        let params = model.init::<f32>(seed);
        EvalModel::new(
            PathBuf::from("memory"),
            model,
            params,
            Box::new(tokenmill_kernels::Cpu),
        )
    }

    /// ln softmax(row)[t] in f64, written out.
    fn log_softmax_at(row: &[f32], t: usize) -> f64 {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
        let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
        row[t] as f64 - m - z.ln()
    }

    #[test]
    fn loglikelihood_is_the_sum_of_the_continuations_log_probs_from_the_logits() {
        let m = tiny(3);
        let v = m.vocab_size();
        let ctx = [5u32, 9, 17, 2, 33];
        let cont = [40u32, 1, 7];
        let ll = m.loglikelihood(&ctx, &cont, 64).unwrap();
        // Independently: one unmasked forward over the whole row, log-softmax of its logits.
        let all: Vec<u32> = ctx.iter().chain(&cont).copied().collect();
        let s = all.len() - 1;
        let f = m.forward(&all, None, 1, s).unwrap();
        let logits = f.logits().unwrap();
        let mut want = 0.0;
        let mut greedy = true;
        for i in ctx.len() - 1..s {
            let row = &logits[i * v..(i + 1) * v];
            want += log_softmax_at(row, all[i + 1] as usize);
            greedy &= argmax(row) == all[i + 1] as usize;
        }
        assert_eq!(ll.tokens, 3);
        assert!(
            (ll.logprob - want).abs() <= 1e-5 * want.abs(),
            "{} vs {want}",
            ll.logprob
        );
        assert!(ll.logprob < 0.0);
        assert_eq!(ll.greedy, greedy);
        // The model's own greedy token is greedy; a token it ranks lower is not.
        let row = &logits[(ctx.len() - 1) * v..ctx.len() * v];
        let best = argmax(row) as u32;
        let worst = (0..v).min_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as u32;
        assert!(m.loglikelihood(&ctx, &[best], 64).unwrap().greedy);
        assert!(!m.loglikelihood(&ctx, &[worst], 64).unwrap().greedy);
    }

    #[test]
    fn a_long_context_is_cut_from_the_left() {
        let m = tiny(4);
        let ctx: Vec<u32> = (0..40).map(|i| (i * 7 % 60) as u32).collect();
        let cont = [3u32, 4];
        let cut = m.loglikelihood(&ctx, &cont, 10).unwrap();
        let tail = m.loglikelihood(&ctx[ctx.len() - 9..], &cont, 64).unwrap();
        assert_eq!(cut, tail);
        let full = m.loglikelihood(&ctx, &cont, 64).unwrap();
        assert_ne!(cut.logprob, full.logprob);
        assert!(m.loglikelihood(&ctx, &[1; 11], 10).is_err());
        assert!(m.loglikelihood(&[], &cont, 10).is_err());
    }

    #[test]
    fn a_checkpoint_without_mtp_weights_loads_as_its_main_model() {
        let mut cfg = ModelConfig::preset("tiny").unwrap();
        cfg.vocab_size = 64;
        assert_eq!(cfg.num_nextn_predict_layers, 1);
        let full = Model::new(cfg.clone()).unwrap();
        let fp = full.init::<f32>(9);
        let mut cfg0 = cfg.clone();
        cfg0.num_nextn_predict_layers = 0;
        let main = Model::new(cfg0).unwrap();
        let mut mp = vec![0f32; main.layout.len()];
        for s in &main.layout.specs {
            let f = full.layout.specs.iter().find(|x| x.name == s.name).unwrap();
            mp[s.range.clone()].copy_from_slice(&fp[f.range.clone()]);
        }
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("with-mtp"), d.path().join("without"));
        tokenmill_trainer::hf::save(&a, &full, &fp).unwrap();
        tokenmill_trainer::hf::save(&b, &main, &mp).unwrap();
        // transformers' way: the config asks for an MTP module, the weights have none.
        tokenmill_trainer::hf::save_config(&b, &cfg).unwrap();
        assert!(has_layer_weights(&a, 2).unwrap());
        assert!(!has_layer_weights(&b, 2).unwrap());
        assert!(has_layer_weights(&b, 1).unwrap());
        let ma = EvalModel::load(&a, ComputeDevice::Cpu).unwrap();
        let mb = EvalModel::load(&b, ComputeDevice::Cpu).unwrap();
        let (ctx, cont) = ([3u32, 8, 13, 21], [34u32, 55]);
        assert_eq!(
            ma.loglikelihood(&ctx, &cont, 64).unwrap(),
            mb.loglikelihood(&ctx, &cont, 64).unwrap()
        );
        // A header that is not safetensors is an error, not a panic.
        std::fs::write(b.join("model.safetensors"), u64::MAX.to_le_bytes()).unwrap();
        assert!(EvalModel::load(&b, ComputeDevice::Cpu).is_err());
    }

    #[test]
    fn a_run_directory_resolves_to_its_latest_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let e = resolve_model_dir(d.path()).unwrap_err().to_string();
        assert!(e.contains("neither a model directory"), "{e}");
        std::fs::create_dir_all(d.path().join("checkpoints/step-00000004")).unwrap();
        std::fs::write(d.path().join("checkpoints/latest"), "step-00000004\n").unwrap();
        assert_eq!(
            resolve_model_dir(d.path()).unwrap(),
            d.path().join("checkpoints/step-00000004")
        );
        std::fs::write(d.path().join("checkpoints/latest"), "../../etc").unwrap();
        assert!(resolve_model_dir(d.path()).is_err());
        std::fs::write(d.path().join("config.json"), "{}").unwrap();
        assert_eq!(resolve_model_dir(d.path()).unwrap(), d.path());
    }
}
