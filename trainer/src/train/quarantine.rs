//! The spike responses that change what the run trains on: quarantine (the documents behind a
//! spike go to `RUN/quarantine.json` and out of the loader, and out of later runs that name
//! the list in `[data] exclude_from`) and rollback (back to the newest checkpoint at or before
//! the spike, skipping batches from there). The detectors are [`crate::spikes`]'s.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenmill_shards::loader::{Loader, Sample};

use super::Trainer;
use super::checkpoint::newest_at_or_before;
use super::config::DataConfig;
use super::log::RollbackLog;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::rng::Rng;

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

/// The documents a run leaves out — those of `[data] exclude_from`, and on resume those of
/// its own `out/quarantine.json` — and how many entries of the latter are in effect. A fresh
/// run removes an earlier run's `quarantine.json` (the writing rank, `writer`).
pub(super) fn exclusions(
    d: &DataConfig,
    out: &Path,
    resume: bool,
    writer: bool,
) -> Result<(Vec<String>, usize)> {
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
    let qpath = out.join("quarantine.json");
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
    Ok((exclude, quarantined))
}

impl Trainer {
    /// Adds the batch's `quarantine_top_k` documents that added most to the step's loss —
    /// (span loss − the step's next-token loss) × targets in the span — to `quarantine.json`
    /// and reopens the loader without them at the same position. Returns their ids.
    pub(super) fn quarantine(
        &mut self,
        samples: &[Sample],
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
    pub(super) fn rollback(&mut self, spike: u64, quarantined: bool) -> Result<RollbackLog> {
        let root = self.cfg.train.out.join("checkpoints");
        let c = newest_at_or_before(&root, spike)?.ok_or_else(|| {
            Error::checkpoint(
                &root,
                format!("no checkpoint at or before step {spike} to roll back to"),
            )
        })?;
        let dir = root.join(format!("step-{c:08}"));
        let st = self.load_into(&dir)?;
        self.rng = Rng::from_state(st.rng);
        self.loader.resume(st.loader);
        let skip = self
            .spikes
            .config()
            .rollback_skip
            .unwrap_or(if quarantined { 0 } else { spike + 1 - c });
        self.loader.skip_batches(skip)?;
        self.spikes.forget_from(c);
        self.group_history.forget_from(c);
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
}
