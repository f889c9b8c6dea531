//! `tokenmill trace RUN --step N`: the batch of a training step, replayed from the loader
//! position logged with it (O(batch) work, no scan), its samples sorted by loss, and for each
//! the documents it packed — id, source file, byte offset, URL — with their own loss.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;
use tokenmill_shards::loader::{Loader, Shuffle, find_documents};
use tokenmill_trainer::train::{StepLog, TrainConfig, fingerprint, loader_config};

use crate::error::{Error, Result};
use crate::plot::read_log;

/// One document span of a traced sample.
#[derive(Debug, Clone, Serialize)]
pub struct TraceDoc {
    pub id: String,
    pub source: String,
    pub offset: u64,
    pub url: Option<String>,
    /// Tokens of the document in the sample, and where they start in the document.
    pub tokens: u32,
    pub doc_offset: u64,
    /// Mean loss of the targets inside the span.
    pub loss: f64,
}

/// One sample of the traced batch.
#[derive(Debug, Clone, Serialize)]
pub struct TraceSample {
    /// Position in the batch.
    pub index: usize,
    pub loss: f64,
    pub docs: Vec<TraceDoc>,
}

/// A traced step.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub step: u64,
    pub loss: f64,
    pub spikes: Vec<String>,
    /// Samples, highest loss first.
    pub samples: Vec<TraceSample>,
}

/// One step at which a document was trained on.
#[derive(Debug, Clone, Serialize)]
pub struct DocSighting {
    pub step: u64,
    /// Position of the sample in the batch.
    pub sample: usize,
    /// Tokens of the document in that sample.
    pub tokens: u32,
    /// Mean loss of the targets inside the span.
    pub loss: f64,
}

/// Every logged step at which document `id` was in a batch, with its loss each time: the id is
/// resolved to (shard, document) once through the provenance tables, then each step's batch
/// is replayed from its logged loader position and its spans compared.
pub fn trace_doc(run: &Path, id: &str) -> Result<(DocProvenanceOut, Vec<DocSighting>)> {
    let (cfg, log) = open_run(run)?;
    let mut loader = Loader::open(
        &cfg.data.train,
        loader_config(&cfg.data, Shuffle::Full, cfg.data.batch),
    )?;
    // The id → (shard, document) lookup the loader's exclusion list uses.
    let ds = loader.dataset(0);
    let hit = find_documents(ds, &std::collections::HashSet::from([id]))?
        .into_iter()
        .min();
    let (shard, doc) = hit.ok_or_else(|| {
        Error::NotFound(format!(
            "no document {id:?} in {}",
            cfg.data.train.display()
        ))
    })?;
    let p = ds.provenance(shard as usize)?.swap_remove(doc as usize);
    let mut seen = Vec::new();
    for line in log.iter().filter(|l| l.kind == "train") {
        let Some(state) = line.loader else { continue };
        loader.resume(state);
        let batch = loader.next_batch()?;
        for (i, smp) in batch.samples.iter().enumerate() {
            for (k, sp) in smp.spans.iter().enumerate() {
                if (sp.shard, sp.doc) == (shard, doc) {
                    let loss = line
                        .span_losses
                        .get(i)
                        .and_then(|s| s.get(k))
                        .copied()
                        .unwrap_or(f64::NAN);
                    seen.push(DocSighting {
                        step: line.step,
                        sample: i,
                        tokens: sp.len,
                        loss,
                    });
                }
            }
        }
    }
    let out = DocProvenanceOut {
        id: p.id,
        source: p.source,
        offset: p.offset,
        url: p.url,
        tokens: p.tokens,
    };
    Ok((out, seen))
}

/// Where a traced document comes from.
#[derive(Debug, Clone, Serialize)]
pub struct DocProvenanceOut {
    pub id: String,
    pub source: String,
    pub offset: u64,
    pub url: Option<String>,
    pub tokens: u64,
}

fn open_run(run: &Path) -> Result<(TrainConfig, Vec<StepLog>)> {
    let path = run.join("run.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let cfg: TrainConfig = serde_json::from_value(v["config"].clone())
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let now = fingerprint(&cfg.data.train)?;
    if let Some(then) = v["dataset_fingerprint"].as_str()
        && then != now
    {
        return Err(Error::Config(format!(
            "{} trained on another dataset: manifest {then}, but {} has {now}",
            run.display(),
            cfg.data.train.display()
        )));
    }
    let log = read_log(run)?;
    Ok((cfg, log))
}

/// Replays step `step` of the run in `run`.
pub fn trace_step(run: &Path, step: u64) -> Result<Trace> {
    let (cfg, log) = open_run(run)?;
    let train: Vec<&StepLog> = log.iter().filter(|l| l.kind == "train").collect();
    let line = train.iter().find(|l| l.step == step).ok_or_else(|| {
        let range = match (train.first(), train.last()) {
            (Some(a), Some(b)) => format!("steps {}..={}", a.step, b.step),
            _ => "no training steps".into(),
        };
        Error::NotFound(format!(
            "step {step} is not in {} (it holds {range})",
            run.join("log.jsonl").display()
        ))
    })?;
    let state = line.loader.ok_or_else(|| {
        Error::NotFound(format!(
            "step {step} of {} has no loader position (logged by an older version)",
            run.display()
        ))
    })?;
    let mut loader = Loader::open(
        &cfg.data.train,
        loader_config(&cfg.data, Shuffle::Full, cfg.data.batch),
    )?;
    loader.resume(state);
    let batch = loader.next_batch()?;
    let mut samples = Vec::with_capacity(batch.samples.len());
    for (i, prov) in loader
        .provenance_batch(&batch.samples)?
        .into_iter()
        .enumerate()
    {
        let spans = line.span_losses.get(i);
        let docs = prov
            .into_iter()
            .enumerate()
            .map(|(k, (sp, p))| TraceDoc {
                id: p.id,
                source: p.source,
                offset: p.offset,
                url: p.url,
                tokens: sp.len,
                doc_offset: sp.doc_offset,
                loss: spans.and_then(|s| s.get(k)).copied().unwrap_or(f64::NAN),
            })
            .collect();
        samples.push(TraceSample {
            index: i,
            loss: line.sample_losses.get(i).copied().unwrap_or(f64::NAN),
            docs,
        });
    }
    samples.sort_by(|a, b| b.loss.total_cmp(&a.loss));
    Ok(Trace {
        step,
        loss: line.loss,
        spikes: line.spikes.clone(),
        samples,
    })
}

/// Human-readable form: the `top` samples with their documents.
pub fn render(t: &Trace, top: usize) -> String {
    let mut s = String::new();
    let spikes = if t.spikes.is_empty() {
        "no detector fired".to_string()
    } else {
        t.spikes.join(", ")
    };
    let _ = writeln!(
        s,
        "step {}: loss {:.4} ({spikes}); {} samples, highest loss first",
        t.step,
        t.loss,
        t.samples.len()
    );
    for smp in t.samples.iter().take(top) {
        let _ = writeln!(s, "  sample {:>3}  loss {:.4}", smp.index, smp.loss);
        for d in &smp.docs {
            let _ = writeln!(
                s,
                "      {:<28} loss {:>7.4}  {} tokens from token {}  {} @ byte {}{}",
                d.id,
                d.loss,
                d.tokens,
                d.doc_offset,
                d.source,
                d.offset,
                d.url
                    .as_deref()
                    .map(|u| format!("  {u}"))
                    .unwrap_or_default()
            );
        }
    }
    s
}
