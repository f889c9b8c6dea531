//! `tokenmill distill-data --teacher DIR --dataset DS --top-k K --out OUT`: a teacher model
//! run over every token of a built dataset, its top-K next-token distribution stored beside
//! the shards ([`tokenmill_shards::teacher`]) for `[train] distill`.
//!
//! The teacher sees each document alone, in windows of `context` tokens starting at multiples
//! of it — the context documents packing with attention reset gives a student whose
//! `seq_len` is `context` (a long document's chunk `j` holds its tokens `[j·S, j·S + S]`).
//! Windows are packed into rows of `context` positions, attention reset at each window, and
//! run `batch` rows per forward; records are written in token order, one file per shard
//! (temp + rename), a record per finished shard in `OUT/.distill/`, `teacher.json` last. A
//! rerun with the same teacher, dataset and settings redoes only the shards without a record;
//! one with others is refused.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenmill_shards::Dataset;
use tokenmill_shards::manifest::hex64;
use tokenmill_shards::teacher::{
    FORMAT, FORMAT_VERSION, MAX_TOP_K, TeacherManifest, TeacherModel, TeacherShard,
    TeacherShardWriter, bytes_per_token, teacher_path,
};
use tokenmill_trainer::model::{Batch, LossWeights};
use tokenmill_trainer::train::ComputeDevice;

use crate::error::{Error, Result};
use crate::eval::EvalModel;

/// Settings of a `distill-data` run.
#[derive(Debug, Clone)]
pub struct DistillDataConfig {
    /// The teacher: a checkpoint, a run directory (its latest checkpoint) or a Hugging
    /// Face-layout directory.
    pub teacher: PathBuf,
    /// The built dataset.
    pub dataset: PathBuf,
    /// Where the records go.
    pub out: PathBuf,
    /// Entries per token.
    pub top_k: usize,
    /// Tokens per teacher window (the student's `seq_len`); `None`: 2,048 or the teacher's
    /// `max_position_embeddings` if smaller.
    pub context: Option<usize>,
    /// Rows of `context` positions per forward.
    pub batch: usize,
    /// Where the teacher computes.
    pub device: ComputeDevice,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct DistillDataReport {
    /// The teacher directory read.
    pub teacher: PathBuf,
    /// Shards of the dataset.
    pub shards: usize,
    /// Shards found finished by an earlier run and kept.
    pub shards_kept: usize,
    /// Records (tokens) in all shards.
    pub tokens: u64,
    /// Records with entries (the others: a document's last token).
    pub entries: u64,
    /// Entries per token.
    pub top_k: usize,
    /// The teacher's window.
    pub context: usize,
    /// Bytes per token on disk (6·K).
    pub bytes_per_token: u64,
    /// Bytes written in all shards' files.
    pub bytes: u64,
    /// Tokens the teacher ran over in this run.
    pub tokens_run: u64,
    /// Seconds of this run.
    pub seconds: f64,
}

/// `OUT/.distill/plan.json`: what the records are of; a rerun must match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Plan {
    dataset_fingerprint: String,
    tokenizer_sha256: String,
    teacher: TeacherModel,
    top_k: u64,
}

/// A piece of a document in a row: its tokens `[off, off + len)` at row position `start`.
#[derive(Debug, Clone, Copy)]
struct Piece {
    doc: usize,
    off: u64,
    len: usize,
    start: usize,
}

/// The K most likely ids of a row of logits (ties: the lower id first) and their
/// log-probabilities.
fn top_k(z: &[f32], k: usize, ids: &mut [u32], logp: &mut [f32]) {
    let m = z
        .iter()
        .fold(f64::NEG_INFINITY, |a, &b| a.max(f64::from(b)));
    let lse = m + z
        .iter()
        .map(|&x| (f64::from(x) - m).exp())
        .sum::<f64>()
        .ln();
    // (value, id), sorted best first
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (i, &v) in z.iter().enumerate() {
        if best.len() == k && v <= best[k - 1].0 {
            continue;
        }
        let at = best.partition_point(|&(bv, _)| bv >= v);
        best.insert(at, (v, i as u32));
        best.truncate(k);
    }
    for (j, &(v, i)) in best.iter().enumerate() {
        ids[j] = i;
        logp[j] = (f64::from(v) - lse) as f32;
    }
}

fn config_xxh3(dir: &Path) -> Result<String> {
    let p = dir.join("config.json");
    let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    Ok(hex64(xxhash_rust::xxh3::xxh3_64(&bytes)))
}

/// Runs the teacher over the dataset (see the module docs).
pub fn distill_data(cfg: &DistillDataConfig) -> Result<DistillDataReport> {
    let t0 = Instant::now();
    let k = cfg.top_k;
    if k == 0 || k > MAX_TOP_K {
        return Err(Error::Config(format!(
            "--top-k {k} outside 1..={MAX_TOP_K}"
        )));
    }
    if cfg.batch == 0 {
        return Err(Error::Config("--batch must be at least 1".into()));
    }
    let ds = Dataset::open(&cfg.dataset)?;
    let dm = ds.manifest().clone();
    let teacher = EvalModel::load(&cfg.teacher, cfg.device)?;
    let vocab = teacher.vocab_size();
    if (dm.tokenizer.vocab_size as usize) > vocab {
        return Err(Error::Config(format!(
            "{}: the teacher's vocabulary of {vocab} is smaller than the dataset's tokenizer ({} tokens): the teacher must share the student's vocabulary",
            teacher.dir.display(),
            dm.tokenizer.vocab_size
        )));
    }
    if k > vocab {
        return Err(Error::Config(format!(
            "--top-k {k} exceeds the teacher's vocabulary of {vocab}"
        )));
    }
    let max_pos = teacher.max_positions();
    let context = cfg.context.unwrap_or(2048.min(max_pos));
    if context == 0 || context > max_pos {
        return Err(Error::Config(format!(
            "--context {context} outside 1..={max_pos} (the teacher's max_position_embeddings)"
        )));
    }
    let plan = Plan {
        dataset_fingerprint: tokenmill_shards::manifest::fingerprint(&cfg.dataset)?,
        tokenizer_sha256: dm.tokenizer.sha256.clone(),
        teacher: TeacherModel {
            dir: teacher.dir.display().to_string(),
            config_xxh3: config_xxh3(&teacher.dir)?,
            vocab_size: vocab as u64,
            context: context as u64,
        },
        top_k: k as u64,
    };
    let out = &cfg.out;
    let _lock = tokenmill_shards::lock::DirLock::acquire(out, "distill-data")?;
    let state = out.join(".distill");
    std::fs::create_dir_all(&state).map_err(|e| Error::io(&state, e))?;
    let plan_path = state.join("plan.json");
    match std::fs::read(&plan_path) {
        Ok(bytes) => {
            let old: Plan = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Config(format!("{}: {e}", plan_path.display())))?;
            if old != plan {
                return Err(Error::Config(format!(
                    "{} holds teacher records of another dataset, teacher or settings ({}); use another --out, or remove it to start over",
                    out.display(),
                    plan_path.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let json = serde_json::to_vec_pretty(&plan).expect("serialises");
            tokenmill_shards::atomic_write(&plan_path, &json)?;
        }
        Err(e) => return Err(Error::io(&plan_path, e)),
    }
    let mut done = Vec::with_capacity(dm.shards.len());
    let (mut kept, mut tokens_run) = (0, 0u64);
    for (i, e) in dm.shards.iter().enumerate() {
        let record = state.join(format!("{}.json", e.name));
        let bin = teacher_path(out, &e.name);
        let finished = std::fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice::<TeacherShard>(&b).ok())
            .filter(|r| {
                r.name == e.name
                    && r.tokens == e.tokens
                    && std::fs::metadata(&bin)
                        .is_ok_and(|m| m.len() == e.tokens * bytes_per_token(k))
            });
        if let Some(r) = finished {
            kept += 1;
            done.push(r);
            continue;
        }
        let r = run_shard(&ds, i, &teacher, out, k, context, cfg.batch)?;
        let json = serde_json::to_vec_pretty(&r).expect("serialises");
        tokenmill_shards::atomic_write(&record, &json)?;
        tracing::info!(shard = %e.name, tokens = r.tokens, entries = r.entries, "teacher records written");
        tokens_run += r.tokens;
        done.push(r);
    }
    let manifest = TeacherManifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        top_k: k as u64,
        dataset_fingerprint: plan.dataset_fingerprint,
        tokenizer_sha256: plan.tokenizer_sha256,
        teacher: plan.teacher,
        tokens: done.iter().map(|r| r.tokens).sum(),
        shards: done,
    };
    manifest.store(out)?;
    let tokens = manifest.tokens;
    Ok(DistillDataReport {
        teacher: teacher.dir.clone(),
        shards: manifest.shards.len(),
        shards_kept: kept,
        tokens,
        entries: manifest.shards.iter().map(|r| r.entries).sum(),
        top_k: k,
        context,
        bytes_per_token: bytes_per_token(k),
        bytes: tokens * bytes_per_token(k),
        tokens_run,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The teacher over shard `i`: windows packed into rows, `batch` rows per forward, records in
/// token order.
fn run_shard(
    ds: &Dataset,
    i: usize,
    teacher: &EvalModel,
    out: &Path,
    k: usize,
    context: usize,
    batch: usize,
) -> Result<TeacherShard> {
    let shard = ds.shard(i)?;
    let name = &ds.manifest().shards[i].name;
    let idx = shard.index();
    let vocab = teacher.vocab_size();
    let mut w = TeacherShardWriter::create(out, name, k)?;
    // Rows being filled: their pieces.
    let mut rows: Vec<Vec<Piece>> = Vec::new();
    let mut fill = context; // the current row is full: the first piece opens one
    let flush = |rows: &mut Vec<Vec<Piece>>, w: &mut TeacherShardWriter| -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let b = rows.len();
        let s = context;
        let mut tokens = vec![0u32; b * (s + 1)];
        let mut starts: Vec<u32> = (0..b).flat_map(|_| 0..s as u32).collect();
        for (r, pieces) in rows.iter().enumerate() {
            for p in pieces {
                let first = idx.token_start(p.doc) + p.off;
                let toks = shard.tokens(first, first + p.len as u64)?;
                if let Some(&t) = toks.iter().find(|&&t| t as usize >= vocab) {
                    return Err(Error::Config(format!(
                        "{}: document {} holds token {t}, outside the teacher's vocabulary of {vocab}",
                        ds.dir().join(name).display(),
                        p.doc
                    )));
                }
                let at = r * (s + 1) + p.start;
                tokens[at..at + p.len].copy_from_slice(&toks);
                starts[r * s + p.start..r * s + p.start + p.len].fill(p.start as u32);
            }
        }
        let mask = vec![0u8; b * s];
        let view = teacher.view();
        let bt = Batch {
            tokens: &tokens,
            mask: Some(&mask),
            starts: Some(&starts),
            distill: None,
            b,
            s,
        };
        let none = LossWeights {
            mtp_lambda: 0.0,
            balance_alpha: 0.0,
        };
        let f = view.model.forward(view.be, view.params, &bt, none, false)?;
        let logits = f.logits().expect("an evaluation forward keeps its logits");
        // (row position, whether the token has a successor in its document), token order
        let mut at: Vec<(usize, bool)> = Vec::new();
        for (r, pieces) in rows.iter().enumerate() {
            for p in pieces {
                let doc_len = idx.length(p.doc);
                for j in 0..p.len {
                    at.push((r * s + p.start + j, p.off + (j as u64) + 1 < doc_len));
                }
            }
        }
        let recs: Vec<Option<(Vec<u32>, Vec<f32>)>> = at
            .par_iter()
            .map(|&(pos, has)| {
                has.then(|| {
                    let (mut ids, mut lp) = (vec![0u32; k], vec![0f32; k]);
                    top_k(
                        &logits[pos * vocab..(pos + 1) * vocab],
                        k,
                        &mut ids,
                        &mut lp,
                    );
                    (ids, lp)
                })
            })
            .collect();
        for r in &recs {
            w.push(r.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice())))?;
        }
        rows.clear();
        Ok(())
    };
    for doc in 0..idx.len() {
        let len = idx.length(doc);
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(context as u64) as usize;
            if fill + n > context {
                if rows.len() == batch {
                    flush(&mut rows, &mut w)?;
                }
                rows.push(Vec::new());
                fill = 0;
            }
            rows.last_mut().expect("a row").push(Piece {
                doc,
                off,
                len: n,
                start: fill,
            });
            fill += n;
            off += n as u64;
        }
    }
    flush(&mut rows, &mut w)?;
    Ok(w.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_takes_the_largest_with_lower_ids_first_on_ties() {
        let z = [0.5f32, 2.0, -1.0, 2.0, 1.5, 0.5];
        let (mut ids, mut lp) = ([0u32; 4], [0f32; 4]);
        top_k(&z, 4, &mut ids, &mut lp);
        assert_eq!(ids, [1, 3, 4, 0]);
        let lse = z.iter().map(|&x| f64::from(x).exp()).sum::<f64>().ln();
        for (i, l) in ids.iter().zip(lp) {
            assert!((f64::from(l) - (f64::from(z[*i as usize]) - lse)).abs() < 1e-6);
        }
    }
}
