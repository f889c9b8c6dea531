//! Checkpoints: `RUN/checkpoints/step-NNNNNNNN/` holds `config.json`, the weights in Hugging
//! Face layout, AdamW's first and second moments (tensors prefixed `m.` and `v.`, the update
//! count `t` in their files' metadata) and `state.json` ([`CheckpointState`]: step, loader
//! position, RNG, dataset fingerprint).
//!
//! One process writes one file of each: `model.safetensors`, `optimizer.safetensors` (`m.`)
//! and `optimizer_v.safetensors` (`v.`). A run across N > 1 ranks writes a sharded checkpoint,
//! every rank its shard in parallel: the tensors (consecutive in the flat buffer) are cut into
//! N groups of about equal bytes ([`crate::hf::partition_specs`]); rank r writes its group's
//! weights to `model-{r+1:05}-of-{N:05}.safetensors` and both moments to
//! `optimizer-{r+1:05}-of-{N:05}.safetensors`, having fetched them from the ranks whose ZeRO-1
//! chunks hold them (one all-to-all-v). Rank 0 adds `model.safetensors.index.json` and
//! `optimizer.safetensors.index.json` (Hugging Face's `{"metadata": {"total_size"},
//! "weight_map"}`), `config.json` and `state.json`. Loading reads either form in any layout:
//! the indexes when they are there, else the single files.
//!
//! A checkpoint is written into `.tmp-step-NNNNNNNN/` and renamed; `checkpoints/latest`
//! names the newest complete one and is written last. Across ranks the steps are agreed on:
//! rank 0 prepares the directory, every rank writes its shard, rank 0 completes it, and after
//! each step every rank learns whether all succeeded; when one failed, every rank returns an
//! error naming it and nothing is renamed.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenmill_comm::{Collectives, Communicator, chunk_range};
use tokenmill_shards::loader::LoaderState;

use super::Trainer;
use super::config::DataConfig;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::Model;
use crate::optim::AdamW;
use crate::params::ParamLayout;

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
    Ok(tokenmill_shards::manifest::fingerprint(dir)?)
}

/// Loads a checkpoint directory (one-file or sharded, written in any layout) into `params`
/// and `opt` (whole); checks it belongs to `model`.
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
    crate::hf::load_params(dir, &model.layout, params)?;
    let meta = load_moments(dir, &model.layout, opt)?;
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

/// Reads AdamW's moments of checkpoint `dir` into `opt` (whole): through
/// [`crate::hf::OPTIMIZER_INDEX`] when it is there, else from `optimizer.safetensors` and
/// `optimizer_v.safetensors`. Returns the files' metadata.
fn load_moments(
    dir: &Path,
    layout: &ParamLayout,
    opt: &mut AdamW,
) -> Result<HashMap<String, String>> {
    let index = dir.join(crate::hf::OPTIMIZER_INDEX);
    if index.is_file() {
        return crate::hf::load_sharded(
            &index,
            layout,
            &mut [("m.", &mut opt.m), ("v.", &mut opt.v)],
        );
    }
    let meta = crate::hf::load_tensors(
        &dir.join("optimizer.safetensors"),
        layout,
        &mut opt.m,
        "m.",
        false,
    )?;
    let meta_v = crate::hf::load_tensors(
        &dir.join("optimizer_v.safetensors"),
        layout,
        &mut opt.v,
        "v.",
        false,
    )?;
    if meta_v.get("t") != meta.get("t") {
        return Err(Error::checkpoint(
            dir.join("optimizer_v.safetensors"),
            format!(
                "optimizer step {:?} ≠ optimizer.safetensors' {:?}",
                meta_v.get("t"),
                meta.get("t")
            ),
        ));
    }
    Ok(meta)
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
    let name = name.trim();
    // `step-NNNNNNNN` and nothing else: never a path out of the run directory.
    let ok = name
        .strip_prefix("step-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(Error::checkpoint(
            &latest,
            format!("names `{name}`, not a checkpoint of this run (step-NNNNNNNN)"),
        ));
    }
    let root = out.join("checkpoints");
    let mut dir = root.join(name);
    refuse_links_out(&root, &dir)?;
    let st = match load_checkpoint(&dir, model, params, opt) {
        Ok(st) => st,
        // Damaged after it was published (a truncated file): the newest earlier checkpoint
        // that loads is taken instead and the steps after it are redone; none, the error.
        Err(e) => {
            let mut before: u64 = name["step-".len()..].parse().unwrap_or(0);
            loop {
                let Some(n) = before
                    .checked_sub(1)
                    .map(|b| newest_at_or_before(&root, b))
                    .transpose()?
                    .flatten()
                else {
                    return Err(e);
                };
                let earlier = root.join(format!("step-{n:08}"));
                let loaded = refuse_links_out(&root, &earlier)
                    .and_then(|()| load_checkpoint(&earlier, model, params, opt));
                if let Ok(st) = loaded {
                    tracing::warn!(error = %e, checkpoint = %earlier.display(), "latest checkpoint damaged; resuming from an earlier one");
                    eprintln!(
                        "warning: {e}; resuming from {} (the steps after it are redone)",
                        earlier.display()
                    );
                    dir = earlier;
                    break st;
                }
                before = n;
            }
        }
    };
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

/// Refuses a checkpoint directory `dir` (in `root`) that is, or holds, a symbolic link
/// resolving out of it: a run writes none, so one is tampering, and is not followed.
fn refuse_links_out(root: &Path, dir: &Path) -> Result<()> {
    use tokenmill_shards::manifest::link_out_of;
    let refuse = |p: &Path, t: PathBuf| {
        Error::checkpoint(
            p,
            format!(
                "is a symbolic link to {}, outside the checkpoint; refused",
                t.display()
            ),
        )
    };
    if let Some(t) = link_out_of(root, dir) {
        return Err(refuse(dir, t));
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(()); // a missing checkpoint is reported by the load itself
    };
    for e in rd.flatten() {
        if let Some(t) = link_out_of(dir, &e.path()) {
            return Err(refuse(&e.path(), t));
        }
    }
    Ok(())
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

    /// Writes a checkpoint of the current state; returns its directory. Every rank calls it:
    /// across N > 1 ranks each writes its shard of it and rank 0 completes it (see the module
    /// documentation); when a rank fails every rank returns an error naming it.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        match &self.group {
            Some(g) if g.world.size() > 1 => {
                let world = g.world.clone();
                self.write_sharded(world.as_ref())
            }
            _ => self.write_checkpoint(),
        }
    }

    /// `checkpoints/`, the checkpoint's name, its temporary and its final directory.
    fn checkpoint_paths(&self) -> (PathBuf, String, PathBuf, PathBuf) {
        let root = self.cfg.train.out.join("checkpoints");
        let name = format!("step-{:08}", self.step);
        let tmp = root.join(format!(".tmp-{name}"));
        let dir = root.join(&name);
        (root, name, tmp, dir)
    }

    /// The state saved with a checkpoint of now.
    fn state(&self) -> CheckpointState {
        CheckpointState {
            step: self.step,
            loader: self.loader.state(),
            rng: self.rng.state(),
            optimizer_t: self.opt.t,
            dataset_fingerprint: self.fingerprint.clone(),
            seq_len: self.cfg.data.seq_len,
            batch: self.cfg.data.batch,
        }
    }

    /// Writes `state.json` into `tmp`, renames it to `dir` and names it in `root/latest`.
    fn commit(&self, root: &Path, name: &str, tmp: &Path, dir: &Path) -> Result<()> {
        write_atomic(
            &tmp.join("state.json"),
            serde_json::to_string_pretty(&self.state())
                .expect("serialises")
                .as_bytes(),
        )?;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::rename(tmp, dir).map_err(|e| Error::io(dir, e))?;
        write_atomic(&root.join("latest"), name.as_bytes())
    }

    /// Writes the checkpoint of one process: one file of weights, one per moment.
    fn write_checkpoint(&mut self) -> Result<PathBuf> {
        // The loss table covers every step the checkpoint does.
        if let Some(l) = self.losses.as_mut() {
            l.flush()?;
        }
        let (root, name, tmp, dir) = self.checkpoint_paths();
        let _ = std::fs::remove_dir_all(&tmp);
        crate::hf::save(&tmp, &self.model, &self.params)?;
        let meta = HashMap::from([("t".to_string(), self.opt.t.to_string())]);
        let l = &self.model.layout;
        crate::hf::save_tensors(
            &tmp.join("optimizer.safetensors"),
            l,
            &self.opt.m,
            "m.",
            meta.clone(),
        )?;
        crate::hf::save_tensors(
            &tmp.join("optimizer_v.safetensors"),
            l,
            &self.opt.v,
            "v.",
            meta,
        )?;
        self.commit(&root, &name, &tmp, &dir)?;
        Ok(dir)
    }

    /// Writes this rank's shard of a sharded checkpoint across the ranks of `w`, and on rank 0
    /// the rest of it.
    fn write_sharded(&mut self, w: &dyn Communicator) -> Result<PathBuf> {
        let (rank, n) = (w.rank(), w.size());
        let l = &self.model.layout;
        let groups = crate::hf::partition_specs(l, n);
        let spans: Vec<Range<usize>> = groups
            .iter()
            .map(|g| crate::hf::specs_span(l, g.clone()))
            .collect();
        // The moments of this rank's tensors, from the ranks whose ZeRO-1 chunks hold them.
        let chunk = self
            .shard
            .clone()
            .unwrap_or_else(|| chunk_range(l.len(), n, rank));
        let (send, send_counts) = moments_to_send(&self.opt.m, &self.opt.v, &chunk, &spans);
        let recv_counts = moments_to_receive(l.len(), n, &spans[rank]);
        let recv = w.all_to_all_v(&send, &send_counts, &recv_counts)?;
        let (m, v) = moments_received(&recv, &recv_counts);
        let (root, name, tmp, dir) = self.checkpoint_paths();
        let prepared = match rank {
            0 => {
                let _ = std::fs::remove_dir_all(&tmp);
                std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))
            }
            _ => Ok(()),
        };
        agree(w, &tmp, "prepare the checkpoint directory", prepared)?;
        let written = write_shard(
            &tmp,
            l,
            groups[rank].clone(),
            rank,
            n,
            &self.params,
            &m,
            &v,
            self.opt.t,
        );
        agree(w, &tmp, "write its shard", written)?;
        let completed = match rank {
            0 => self.complete_sharded(&groups, &root, &name, &tmp, &dir),
            _ => Ok(()),
        };
        agree(w, &tmp, "complete the checkpoint", completed)?;
        Ok(dir)
    }

    /// Rank 0's part after every shard is written: the configuration, the indexes, the state,
    /// the loss table; then the rename and `latest`.
    fn complete_sharded(
        &mut self,
        groups: &[Range<usize>],
        root: &Path,
        name: &str,
        tmp: &Path,
        dir: &Path,
    ) -> Result<()> {
        // The loss table covers every step the checkpoint does.
        if let Some(l) = self.losses.as_mut() {
            l.flush()?;
        }
        crate::hf::save_config(tmp, &self.model.cfg)?;
        write_shard_indexes(tmp, &self.model.layout, groups)?;
        self.commit(root, name, tmp, dir)
    }
}

/// Rank `rank` of `n`'s files of a sharded checkpoint in `dir`: the weights of the tensors
/// `specs` (taken from the flat buffer `params`) and their moments `m` and `v` (the tensors'
/// span of the flat buffer), with the optimizer step `t`.
#[allow(clippy::too_many_arguments)]
fn write_shard(
    dir: &Path,
    layout: &ParamLayout,
    specs: Range<usize>,
    rank: usize,
    n: usize,
    params: &[f32],
    m: &[f32],
    v: &[f32],
    t: u64,
) -> Result<()> {
    let span = crate::hf::specs_span(layout, specs.clone());
    crate::hf::save_tensor_range(
        &dir.join(crate::hf::shard_file_name("model", rank, n)),
        layout,
        specs.clone(),
        &[("", &params[span])],
        HashMap::from([("format".to_string(), "pt".to_string())]),
    )?;
    crate::hf::save_tensor_range(
        &dir.join(crate::hf::shard_file_name("optimizer", rank, n)),
        layout,
        specs,
        &[("m.", m), ("v.", v)],
        HashMap::from([("t".to_string(), t.to_string())]),
    )
}

/// The indexes of a checkpoint sharded into `groups` (one per rank): the weights' and the
/// moments'.
fn write_shard_indexes(dir: &Path, layout: &ParamLayout, groups: &[Range<usize>]) -> Result<()> {
    let n = groups.len();
    let (mut weights, mut moments) = (BTreeMap::new(), BTreeMap::new());
    for (r, g) in groups.iter().enumerate() {
        let (wf, of) = (
            crate::hf::shard_file_name("model", r, n),
            crate::hf::shard_file_name("optimizer", r, n),
        );
        for s in &layout.specs[g.clone()] {
            weights.insert(s.name.clone(), wf.clone());
            moments.insert(format!("m.{}", s.name), of.clone());
            moments.insert(format!("v.{}", s.name), of.clone());
        }
    }
    let bytes = (layout.len() * std::mem::size_of::<f32>()) as u64;
    crate::hf::write_index(&dir.join(crate::hf::MODEL_INDEX), bytes, &weights)?;
    crate::hf::write_index(&dir.join(crate::hf::OPTIMIZER_INDEX), 2 * bytes, &moments)
}

/// The overlap of two ranges (empty, at `a.start`, when they do not meet).
fn overlap(a: &Range<usize>, b: &Range<usize>) -> Range<usize> {
    let (s, e) = (a.start.max(b.start), a.end.min(b.end));
    if s < e { s..e } else { a.start..a.start }
}

/// What a rank whose ZeRO-1 chunk `chunk` holds the moments `m` and `v` (of that chunk) sends
/// to each rank `j`, whose tensors span `spans[j]`: the moments of the overlap, `m`'s then
/// `v`'s. Returns the buffer and the element counts per rank.
fn moments_to_send(
    m: &[f32],
    v: &[f32],
    chunk: &Range<usize>,
    spans: &[Range<usize>],
) -> (Vec<f32>, Vec<usize>) {
    let mut send = Vec::new();
    let mut counts = Vec::with_capacity(spans.len());
    for span in spans {
        let o = overlap(chunk, span);
        let local = o.start - chunk.start..o.end - chunk.start;
        send.extend_from_slice(&m[local.clone()]);
        send.extend_from_slice(&v[local]);
        counts.push(2 * o.len());
    }
    (send, counts)
}

/// The element counts a rank whose tensors span `span` receives from each of the `n` ranks
/// holding ZeRO-1 chunks of a flat buffer of `len` elements.
fn moments_to_receive(len: usize, n: usize, span: &Range<usize>) -> Vec<usize> {
    (0..n)
        .map(|i| 2 * overlap(&chunk_range(len, n, i), span).len())
        .collect()
}

/// The moments `m` and `v` of a rank's span from what it received ([`moments_to_send`]'s
/// pieces in rank order: the chunks are consecutive, so are their overlaps with the span).
fn moments_received(recv: &[f32], counts: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let total: usize = counts.iter().sum();
    let (mut m, mut v) = (Vec::with_capacity(total / 2), Vec::with_capacity(total / 2));
    let mut at = 0;
    for &c in counts {
        let piece = &recv[at..at + c];
        m.extend_from_slice(&piece[..c / 2]);
        v.extend_from_slice(&piece[c / 2..]);
        at += c;
    }
    (m, v)
}

/// Shares every rank's outcome of a step of writing checkpoint `dir` (a collective): this
/// rank's own error, else [`Error::RankFailed`] naming the first rank that failed, with its
/// message; `Ok` only when every rank succeeded.
fn agree(w: &dyn Communicator, dir: &Path, what: &str, mine: Result<()>) -> Result<()> {
    let msg = match &mine {
        Ok(()) => Vec::new(),
        Err(e) => [&[1u8][..], e.to_string().as_bytes()].concat(),
    };
    let (all, lens) = w.all_gather_v_bytes(&msg)?;
    mine?;
    let mut at = 0;
    for (r, &len) in lens.iter().enumerate() {
        if len > 0 {
            return Err(Error::RankFailed {
                path: dir.to_path_buf(),
                rank: r,
                size: lens.len(),
                what: what.to_string(),
                msg: String::from_utf8_lossy(&all[at + 1..at + len]).into_owned(),
            });
        }
        at += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::optim::AdamWConfig;

    /// Distinct, non-trivial values (every bit pattern matters for a bitwise comparison).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                f32::from_bits(
                    0x3c00_0000 + ((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 0x0300_0000,
                )
            })
            .collect()
    }

    /// Writes, as `n` ranks would, a sharded checkpoint of `params` and the moments `m`, `v`
    /// (whole) into `dir`: each rank's ZeRO-1 chunk, the all-to-all-v routed here, each
    /// rank's shard files, then rank 0's indexes, configuration and state.
    fn write_as_ranks(
        dir: &Path,
        model: &Model,
        n: usize,
        params: &[f32],
        m: &[f32],
        v: &[f32],
        t: u64,
    ) {
        let l = &model.layout;
        let groups = crate::hf::partition_specs(l, n);
        let spans: Vec<Range<usize>> = groups
            .iter()
            .map(|g| crate::hf::specs_span(l, g.clone()))
            .collect();
        let sent: Vec<(Vec<f32>, Vec<usize>)> = (0..n)
            .map(|i| {
                let c = chunk_range(l.len(), n, i);
                moments_to_send(&m[c.clone()], &v[c.clone()], &c, &spans)
            })
            .collect();
        std::fs::create_dir_all(dir).unwrap();
        for r in 0..n {
            // What rank r receives: rank i's piece for r, in rank order.
            let mut recv = Vec::new();
            for (buf, counts) in &sent {
                let at: usize = counts[..r].iter().sum();
                recv.extend_from_slice(&buf[at..at + counts[r]]);
            }
            let counts = moments_to_receive(l.len(), n, &spans[r]);
            assert_eq!(recv.len(), counts.iter().sum::<usize>());
            let (mr, vr) = moments_received(&recv, &counts);
            assert_eq!(mr, m[spans[r].clone()], "rank {r} of {n}");
            assert_eq!(vr, v[spans[r].clone()], "rank {r} of {n}");
            write_shard(dir, l, groups[r].clone(), r, n, params, &mr, &vr, t).unwrap();
        }
        crate::hf::save_config(dir, &model.cfg).unwrap();
        write_shard_indexes(dir, l, &groups).unwrap();
        let st = CheckpointState {
            step: 7,
            loader: LoaderState::default(),
            rng: 3,
            optimizer_t: t,
            dataset_fingerprint: "f".into(),
            seq_len: 8,
            batch: 2,
        };
        std::fs::write(dir.join("state.json"), serde_json::to_string(&st).unwrap()).unwrap();
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn sharded_checkpoint_loads_back_bitwise_in_any_layout() {
        let model = Model::new(ModelConfig::preset("tiny").unwrap()).unwrap();
        let len = model.layout.len();
        let (params, m, v) = (values(len, 1), values(len, 2), values(len, 3));
        let tmp = tempfile::tempdir().unwrap();
        for n in [2, 3, 4, 5] {
            let dir = tmp.path().join(format!("n{n}"));
            write_as_ranks(&dir, &model, n, &params, &m, &v, 11);
            for r in 0..n {
                for stem in ["model", "optimizer"] {
                    assert!(dir.join(crate::hf::shard_file_name(stem, r, n)).is_file());
                }
            }
            assert!(!dir.join("model.safetensors").exists());
            let ix: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join(crate::hf::MODEL_INDEX)).unwrap())
                    .unwrap();
            assert_eq!(ix["metadata"]["total_size"], 4 * len as u64);
            assert_eq!(
                ix["weight_map"].as_object().unwrap().len(),
                model.layout.specs.len()
            );
            // Loaded whole, as a run in any layout loads it.
            let mut p = vec![0f32; len];
            let mut opt = AdamW::new(AdamWConfig::default(), &model.layout);
            let st = load_checkpoint(&dir, &model, &mut p, &mut opt).unwrap();
            assert_eq!((st.step, opt.t), (7, 11));
            assert_eq!(bits(&p), bits(&params), "{n} ranks: weights");
            assert_eq!(bits(&opt.m), bits(&m), "{n} ranks: m");
            assert_eq!(bits(&opt.v), bits(&v), "{n} ranks: v");
            let (_, p2) = crate::hf::load(&dir).unwrap();
            assert_eq!(bits(&p2), bits(&params));
        }
    }

    #[test]
    fn a_sharded_checkpoint_with_a_file_or_tensor_missing_is_refused_naming_it() {
        let model = Model::new(ModelConfig::preset("tiny").unwrap()).unwrap();
        let len = model.layout.len();
        let (params, m, v) = (values(len, 1), values(len, 2), values(len, 3));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ck");
        write_as_ranks(&dir, &model, 3, &params, &m, &v, 5);
        let load = |dir: &Path| {
            let mut p = vec![0f32; len];
            let mut opt = AdamW::new(AdamWConfig::default(), &model.layout);
            load_checkpoint(dir, &model, &mut p, &mut opt)
                .unwrap_err()
                .to_string()
        };
        // A missing shard of the weights, then of the moments.
        for stem in ["model", "optimizer"] {
            let d = tmp.path().join(format!("no-{stem}"));
            write_as_ranks(&d, &model, 3, &params, &m, &v, 5);
            let gone = crate::hf::shard_file_name(stem, 1, 3);
            std::fs::remove_file(d.join(&gone)).unwrap();
            let e = load(&d);
            assert!(e.contains(&gone), "{e}");
        }
        let e = crate::hf::load(&tmp.path().join("no-model"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("model-00002-of-00003.safetensors"), "{e}");
        // A tensor the index does not place, and one the model does not know.
        let index = dir.join(crate::hf::MODEL_INDEX);
        let text = std::fs::read_to_string(&index).unwrap();
        let mut ix: serde_json::Value = serde_json::from_str(&text).unwrap();
        let first = model.layout.specs[0].name.clone();
        let map = ix["weight_map"].as_object_mut().unwrap();
        let file = map.remove(&first).unwrap();
        std::fs::write(&index, ix.to_string()).unwrap();
        let e = load(&dir);
        assert!(
            e.contains(crate::hf::MODEL_INDEX) && e.contains(&first) && e.contains("missing"),
            "{e}"
        );
        let mut ix: serde_json::Value = serde_json::from_str(&text).unwrap();
        ix["weight_map"]["model.layers.99.mlp.weight"] = file.clone();
        std::fs::write(&index, ix.to_string()).unwrap();
        let e = load(&dir);
        assert!(
            e.contains(crate::hf::MODEL_INDEX)
                && e.contains("model.layers.99.mlp.weight")
                && e.contains("does not belong"),
            "{e}"
        );
        // The index puts a tensor in another file than the one holding it.
        let mut ix: serde_json::Value = serde_json::from_str(&text).unwrap();
        let other = crate::hf::shard_file_name("model", 2, 3);
        ix["weight_map"][&first] = other.clone().into();
        std::fs::write(&index, ix.to_string()).unwrap();
        let e = load(&dir);
        assert!(
            e.contains(file.as_str().unwrap()) && e.contains(&first),
            "{e}"
        );
        // Shards of the moments that disagree on the optimizer step.
        std::fs::write(&index, &text).unwrap();
        let d = tmp.path().join("t");
        write_as_ranks(&d, &model, 3, &params, &m, &v, 5);
        let g = crate::hf::partition_specs(&model.layout, 3);
        let span = crate::hf::specs_span(&model.layout, g[2].clone());
        write_shard(
            &d,
            &model.layout,
            g[2].clone(),
            2,
            3,
            &params,
            &m[span.clone()],
            &v[span],
            6,
        )
        .unwrap();
        let e = load(&d);
        assert!(
            e.contains("optimizer-0000") && e.contains("metadata t"),
            "{e}"
        );
    }

    #[test]
    fn a_latest_pointing_out_of_the_run_is_refused() {
        let model = Model::new(ModelConfig::preset("tiny").unwrap()).unwrap();
        let mut params = vec![0f32; model.layout.len()];
        let mut opt = AdamW::new(Default::default(), &model.layout);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        std::fs::create_dir_all(out.join("checkpoints")).unwrap();
        let d: DataConfig = serde_json::from_value(serde_json::json!({
            "train": "ds", "seq_len": 8, "batch": 1
        }))
        .unwrap();
        for bad in ["../../etc", "/etc/passwd", "step-1/../../x", ""] {
            std::fs::write(out.join("checkpoints/latest"), bad).unwrap();
            let e = load_latest(&out, &model, &mut params, &mut opt, "f", &d)
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a checkpoint of this run"), "{bad}: {e}");
        }
    }

    #[test]
    fn one_process_checkpoint_still_loads_from_single_files() {
        let model = Model::new(ModelConfig::preset("tiny").unwrap()).unwrap();
        let len = model.layout.len();
        let (params, m, v) = (values(len, 4), values(len, 5), values(len, 6));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        crate::hf::save(dir, &model, &params).unwrap();
        let meta = HashMap::from([("t".to_string(), "2".to_string())]);
        crate::hf::save_tensors(
            &dir.join("optimizer.safetensors"),
            &model.layout,
            &m,
            "m.",
            meta.clone(),
        )
        .unwrap();
        crate::hf::save_tensors(
            &dir.join("optimizer_v.safetensors"),
            &model.layout,
            &v,
            "v.",
            meta,
        )
        .unwrap();
        let st = CheckpointState {
            step: 1,
            loader: LoaderState::default(),
            rng: 0,
            optimizer_t: 2,
            dataset_fingerprint: String::new(),
            seq_len: 8,
            batch: 2,
        };
        std::fs::write(dir.join("state.json"), serde_json::to_string(&st).unwrap()).unwrap();
        let mut p = vec![0f32; len];
        let mut opt = AdamW::new(AdamWConfig::default(), &model.layout);
        load_checkpoint(dir, &model, &mut p, &mut opt).unwrap();
        assert_eq!(bits(&p), bits(&params));
        assert_eq!((bits(&opt.m), bits(&opt.v)), (bits(&m), bits(&v)));
    }
}
