//! Checkpoints: `RUN/checkpoints/step-NNNNNNNN/` holds `config.json` + `model.safetensors`
//! (Hugging Face layout), `optimizer.safetensors` and `optimizer_v.safetensors` (AdamW's first
//! and second moments, tensors prefixed `m.` and `v.`, the update count `t` in the metadata)
//! and `state.json` ([`CheckpointState`]: step, loader position, RNG, dataset fingerprint).
//! A checkpoint is written into `.tmp-step-NNNNNNNN/` and renamed; `checkpoints/latest`
//! names the newest complete one and is written last.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenmill_shards::loader::LoaderState;

use super::Trainer;
use super::config::DataConfig;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::Model;
use crate::optim::AdamW;

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

/// Loads the checkpoint `out/checkpoints/latest` names into `params` and `opt`, and checks it
/// was trained on the dataset of `fingerprint` with `d`'s seq_len and batch. Returns its
/// directory and state.
pub(super) fn load_latest(
    out: &Path,
    model: &Model,
    params: &mut [f32],
    opt: &mut AdamW,
    fingerprint: &str,
    d: &DataConfig,
) -> Result<(PathBuf, CheckpointState)> {
    let latest = out.join("checkpoints").join("latest");
    let name = std::fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
    let dir = out.join("checkpoints").join(name.trim());
    let st = load_checkpoint(&dir, model, params, opt)?;
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
    Ok((dir, st))
}

/// Removes the checkpoints (`step-*`, `latest`) an earlier run left in `root`: a rollback
/// would take them for the fresh run's.
pub(super) fn remove_earlier_run(root: &Path) -> Result<()> {
    for e in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let p = e.map_err(|e| Error::io(root, e))?.path();
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
    Ok(())
}

/// Steps done at the newest complete checkpoint in `root` at or before `step`.
pub(super) fn newest_at_or_before(root: &Path, step: u64) -> Result<Option<u64>> {
    let mut best: Option<u64> = None;
    for e in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let e = e.map_err(|e| Error::io(root, e))?;
        let name = e.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<u64>().ok())
            && n <= step
            && e.path().join("state.json").is_file()
        {
            best = best.max(Some(n));
        }
    }
    Ok(best)
}

impl Trainer {
    /// Loads checkpoint `dir` into the parameters and the optimizer state (this rank's shard of
    /// it across processes).
    pub(super) fn load_into(&mut self, dir: &Path) -> Result<CheckpointState> {
        let Some(r) = self.shard.clone() else {
            return load_checkpoint(dir, &self.model, &mut self.params, &mut self.opt);
        };
        let mut full = AdamW::new(self.opt.cfg.clone(), &self.model.layout);
        let st = load_checkpoint(dir, &self.model, &mut self.params, &mut full)?;
        self.opt = full.slice(r);
        Ok(st)
    }

    /// Writes a checkpoint of the current state; returns its directory. Across processes
    /// the writing rank writes it (every rank holds the same parameters and optimizer state)
    /// and the others wait until it is complete.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        // ZeRO-1: the optimizer state is gathered from its shards (every rank takes part).
        let full = match &self.group {
            Some(g) if self.shard.is_some() => {
                let (m, _) =
                    tokenmill_comm::Collectives::all_gather_v(g.world.as_ref(), &self.opt.m)?;
                let (v, _) =
                    tokenmill_comm::Collectives::all_gather_v(g.world.as_ref(), &self.opt.v)?;
                Some((m, v))
            }
            _ => None,
        };
        let written = match self.losses.is_some() {
            true => self.write_checkpoint(full),
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

    /// Writes the checkpoint; `moments` is the whole optimizer state when it is sharded.
    fn write_checkpoint(&mut self, moments: Option<(Vec<f32>, Vec<f32>)>) -> Result<PathBuf> {
        let (m, v) = match &moments {
            Some((m, v)) => (m.as_slice(), v.as_slice()),
            None => (self.opt.m.as_slice(), self.opt.v.as_slice()),
        };
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
            m,
            "m.",
            meta.clone(),
        )?;
        crate::hf::save_tensors(
            &tmp.join("optimizer_v.safetensors"),
            &self.model.layout,
            v,
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
}
