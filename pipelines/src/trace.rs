//! `tokenmill trace RUN --step N`: the batch of a training step from the run's loss table (one
//! Parquet file of `RUN/losses/`, O(batch) rows) and the provenance tables its documents live
//! in — no scan of the dataset or the log's other steps: its samples sorted by loss, and for
//! each the documents it packed — id, source file, byte offset, URL — with their own loss, how
//! much they added to the step's loss, where their token losses peak, and the text there.
//!
//! `tokenmill trace RUN --doc ID`: every logged step a document was in, with its loss each
//! time, by filtering the loss table on the document.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokenmill_shards::loader::find_documents;
use tokenmill_shards::{Dataset, TextTokenizer};
use tokenmill_trainer::train::{
    LogKind, Quarantined, StepLog, TrainConfig, fingerprint, read_quarantine, superseded,
};

use crate::error::{Error, Result};
use crate::plot::read_log;

/// Where the token losses of a document span peak.
#[derive(Debug, Clone, Serialize)]
pub struct Peak {
    /// Token position in the document of the target with the highest loss.
    pub token: u64,
    /// The loss of that target.
    pub loss: f64,
    /// The text of up to 24 tokens before the peak token (`None` when not decoded).
    pub before: Option<String>,
    /// The text of the peak token itself, as decoding it after `before` adds it (`None` when
    /// not decoded).
    pub at: Option<String>,
}

/// One document span of a traced sample.
#[derive(Debug, Clone, Serialize)]
pub struct TraceDoc {
    /// The document's id, from its input.
    pub id: String,
    /// The input file the document was read from.
    pub source: String,
    /// Byte offset of the document's record in `source`.
    pub offset: u64,
    /// The page URL, if the input had one.
    pub url: Option<String>,
    /// The document in the dataset: shard ordinal in the manifest (with `doc`).
    pub shard: u32,
    /// The document in the dataset: its index in the shard.
    pub doc: u64,
    /// Tokens of the document in the sample (with `doc_offset`).
    pub tokens: u32,
    /// Where the span's tokens start in the document (token position).
    pub doc_offset: u64,
    /// Targets of the span counted in the loss.
    pub targets: u32,
    /// Mean loss of the targets inside the span (NaN: no target, e.g. an excluded document).
    pub loss: f64,
    /// What the span added to the step's summed next-token loss over the batch mean:
    /// (span loss − step's next-token loss) × targets in the span.
    pub excess: f64,
    /// Where the span's token losses peak (`None` for a span without targets).
    pub peak: Option<Peak>,
    /// The beginning of the document's text (only for the shown samples).
    pub snippet: Option<String>,
    /// The document was on the run's exclusion list at this step.
    pub excluded: bool,
}

/// One sample of the traced batch.
#[derive(Debug, Clone, Serialize)]
pub struct TraceSample {
    /// Position in the batch.
    pub index: usize,
    /// Mean loss of the whole sample (NaN when the loss table has no row for it).
    pub loss: f64,
    /// The sample's document spans, in the loss table's row order.
    pub docs: Vec<TraceDoc>,
}

/// A traced step.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// The training step (0-based).
    pub step: u64,
    /// Which run of this step (0 = first); a rollback makes the run go over steps again.
    pub attempt: usize,
    /// How many training lines the log holds for this step (1 unless a rollback made the run
    /// go over it again).
    pub attempts: usize,
    /// A later rollback superseded this attempt.
    pub superseded: bool,
    /// The step's next-token loss (the mean over the batch's targets; what `loss` means
    /// everywhere people read it, comparable with the held-out loss).
    pub loss: f64,
    /// The loss the optimizer minimised: `loss` + λ·MTP + α·balance.
    pub total_loss: f64,
    /// The mean multi-token-prediction loss (0 without MTP).
    pub mtp_loss: f64,
    /// The expert balance loss (0 without it).
    pub balance_loss: f64,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
    /// The loss detector's z-score at this step (absent before enough history).
    pub loss_z: Option<f64>,
    /// The gradient-norm detector's z-score at this step (absent before enough history).
    pub grad_norm_z: Option<f64>,
    /// The highest z-score of a document span's loss in the batch.
    pub doc_z: Option<f64>,
    /// Names of the detectors that fired at this step (empty: none).
    pub spikes: Vec<String>,
    /// Ids of the documents quarantined at this step.
    pub quarantined: Vec<String>,
    /// Samples, highest loss first.
    pub samples: Vec<TraceSample>,
}

/// Highest loss first; losses that are NaN (a sample without a scored target) last.
fn highest_first(a: f64, b: f64) -> std::cmp::Ordering {
    a.is_nan().cmp(&b.is_nan()).then(b.total_cmp(&a))
}

impl Trace {
    /// The `k` documents that added most to the step's loss, highest first (positive excess
    /// only).
    pub fn top_documents(&self, k: usize) -> Vec<&TraceDoc> {
        let mut all: Vec<&TraceDoc> = self
            .samples
            .iter()
            .flat_map(|s| &s.docs)
            .filter(|d| d.excess > 0.0)
            .collect();
        all.sort_by(|a, b| b.excess.total_cmp(&a.excess));
        all.truncate(k);
        all
    }
}

/// One step at which a document was trained on.
#[derive(Debug, Clone, Serialize)]
pub struct DocSighting {
    /// The training step (0-based).
    pub step: u64,
    /// Position of the sample in the batch.
    pub sample: usize,
    /// Tokens of the document in that sample.
    pub tokens: u32,
    /// Mean loss of the targets inside the span.
    pub loss: f64,
    /// The step's next-token loss.
    pub step_loss: f64,
    /// A detector fired at that step.
    pub spike: bool,
    /// A later rollback superseded that step's line.
    pub superseded: bool,
}

/// Where a traced document comes from.
#[derive(Debug, Clone, Serialize)]
pub struct DocProvenanceOut {
    /// The document's id, from its input.
    pub id: String,
    /// The input file the document was read from.
    pub source: String,
    /// Byte offset of the document's record in `source`.
    pub offset: u64,
    /// The page URL, if the input had one.
    pub url: Option<String>,
    /// Tokens of the whole document in the dataset (EOS included when appended).
    pub tokens: u64,
}

/// A run directory opened for tracing: its configuration, log, and exclusion lists.
#[derive(Debug)]
pub struct Run {
    /// The run directory.
    pub dir: PathBuf,
    /// The training configuration recorded in the run's `run.json`.
    pub cfg: TrainConfig,
    /// The lines of the run's `log.jsonl` in order, training and eval, superseded ones
    /// included.
    pub log: Vec<StepLog>,
    /// Per log line: superseded by a rollback.
    pub superseded: Vec<bool>,
    /// The run's `quarantine.json`, in the order the entries were added.
    pub quarantine: Vec<Quarantined>,
    /// Ids from `[data] exclude_from` (in effect for the whole run).
    pub exclude_from: Vec<String>,
    dataset: Dataset,
    provenance: HashMap<u32, Vec<tokenmill_shards::DocProvenance>>,
}

impl Run {
    /// Opens `dir`; refuses a run whose dataset changed since (manifest fingerprint).
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("run.json");
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => not_a_run(dir),
            _ => Error::io(&path, e),
        })?;
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
                dir.display(),
                cfg.data.train.display()
            )));
        }
        let log = read_log(dir)?;
        let superseded = superseded(&log);
        let quarantine = read_quarantine(&dir.join("quarantine.json"))?;
        let mut exclude_from = Vec::new();
        for f in &cfg.data.exclude_from {
            exclude_from.extend(read_quarantine(f)?.into_iter().map(|q| q.id));
        }
        Ok(Run {
            dir: dir.to_path_buf(),
            log,
            superseded,
            quarantine,
            exclude_from,
            dataset: Dataset::open(&cfg.data.train)?,
            cfg,
            provenance: HashMap::new(),
        })
    }

    /// Provenance of document `doc` of shard `shard` (each table read once).
    fn provenance(&mut self, shard: u32, doc: u64) -> Result<tokenmill_shards::DocProvenance> {
        if !self.provenance.contains_key(&shard) {
            let t = self.dataset.provenance(shard as usize)?;
            self.provenance.insert(shard, t);
        }
        self.provenance[&shard]
            .get(doc as usize)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{}: shard {shard} has no document {doc}",
                    self.cfg.data.train.display()
                ))
            })
    }

    /// Ids excluded at a line with `excluded` quarantine entries in effect.
    fn excluded_ids(&self, excluded: usize) -> HashSet<&str> {
        self.exclude_from
            .iter()
            .map(String::as_str)
            .chain(
                self.quarantine[..excluded.min(self.quarantine.len())]
                    .iter()
                    .map(|q| q.id.as_str()),
            )
            .collect()
    }

    /// Indices of the training lines of step `step`, in log order.
    pub fn attempts(&self, step: u64) -> Vec<usize> {
        self.log
            .iter()
            .enumerate()
            .filter(|(_, l)| l.kind == LogKind::Train && l.step == step)
            .map(|(i, _)| i)
            .collect()
    }

    fn train_range(&self) -> String {
        let train: Vec<&StepLog> = self
            .log
            .iter()
            .filter(|l| l.kind == LogKind::Train)
            .collect();
        match (train.first(), train.last()) {
            (Some(a), Some(b)) => format!("steps {}..={}", a.step, b.step),
            _ => "no training steps".into(),
        }
    }
}

/// What `dir`, which has no `run.json`, is instead, and what is wanted.
pub fn not_a_run(dir: &Path) -> Error {
    let what = if dir.join("run.json").is_file() {
        "has no log.jsonl: the run has not logged a step"
    } else if dir.join("manifest.json").is_file() {
        "is a dataset, not a training run"
    } else if dir.is_dir() {
        "is not a training run (it has no run.json)"
    } else {
        "does not exist"
    };
    Error::NotFound(format!(
        "{} {what}: give the run directory, the `[train] out` of the training config \
         (it holds run.json, log.jsonl and losses/)",
        dir.display()
    ))
}

/// Text of a traced document, decoded with the dataset's tokenizer.
struct Decoder {
    tok: TextTokenizer,
    ds: Dataset,
    docs: HashMap<(u32, u64), Vec<u32>>,
}

impl Decoder {
    fn open(dir: &Path) -> Result<Self> {
        let ds = Dataset::open(dir)?;
        let tok = crate::inspect::dataset_tokenizer(&ds)?;
        Ok(Decoder {
            tok,
            ds,
            docs: HashMap::new(),
        })
    }

    fn doc(&mut self, shard: u32, doc: u64) -> Result<&[u32]> {
        if !self.docs.contains_key(&(shard, doc)) {
            let ids = self.ds.shard(shard as usize)?.document(doc as usize)?;
            self.docs.insert((shard, doc), ids);
        }
        Ok(&self.docs[&(shard, doc)])
    }

    /// The document's first `n` tokens as text.
    fn head(&mut self, shard: u32, doc: u64, n: usize) -> Result<String> {
        let ids = self.doc(shard, doc)?;
        let ids = ids[..n.min(ids.len())].to_vec();
        // a byte-level cut can split the last character
        Ok(self
            .tok
            .decode(&ids)?
            .trim_end_matches('\u{FFFD}')
            .to_string())
    }

    /// (`before` tokens of context, the token at `t`) as text. A byte-level token can be part
    /// of a character: the token's text is what decoding it after its context adds.
    fn around(&mut self, shard: u32, doc: u64, t: u64, before: usize) -> Result<(String, String)> {
        let ids = self.doc(shard, doc)?;
        let t = (t as usize).min(ids.len().saturating_sub(1));
        let (ctx, with) = (
            ids[t.saturating_sub(before)..t].to_vec(),
            ids[t.saturating_sub(before)..=t].to_vec(),
        );
        let ctx = self.tok.decode(&ctx)?;
        let with = self.tok.decode(&with)?;
        let stem = ctx.trim_end_matches('\u{FFFD}');
        let (before, at) = match with.strip_prefix(stem) {
            Some(rest) => (stem.to_string(), rest.to_string()),
            None => (ctx, with),
        };
        // the context's first token can be the tail of a character
        Ok((before.trim_start_matches('\u{FFFD}').to_string(), at))
    }
}

/// The text a document span of a loss table covered, decoded with its dataset's tokenizer, and
/// the source file the document came from.
pub struct SpanText {
    dec: Decoder,
    prov: HashMap<u32, Vec<String>>,
}

impl std::fmt::Debug for SpanText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanText")
            .field("documents_read", &self.dec.docs.len())
            .finish()
    }
}

impl SpanText {
    /// Opens the dataset at `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(SpanText {
            dec: Decoder::open(dir)?,
            prov: HashMap::new(),
        })
    }

    /// The `tokens` tokens of document `doc` of shard `shard` from token `from` on (a loss
    /// table row's `doc_offset` and `tokens`).
    pub fn text(&mut self, shard: u32, doc: u64, from: u64, tokens: u32) -> Result<String> {
        let ids = self.dec.doc(shard, doc)?;
        let a = (from as usize).min(ids.len());
        let b = (a + tokens as usize).min(ids.len());
        let ids = ids[a..b].to_vec();
        // a byte-level cut can split a character at either end
        Ok(self
            .dec
            .tok
            .decode(&ids)?
            .trim_matches('\u{FFFD}')
            .to_string())
    }

    /// The whole text of document `doc` of shard `shard`.
    pub fn document(&mut self, shard: u32, doc: u64) -> Result<String> {
        let ids = self.dec.doc(shard, doc)?.to_vec();
        Ok(self.dec.tok.decode(&ids)?)
    }

    /// The source file (or URL) of document `doc` of shard `shard`, from its provenance.
    pub fn source(&mut self, shard: u32, doc: u64) -> Result<String> {
        if !self.prov.contains_key(&shard) {
            let p = self.dec.ds.provenance(shard as usize)?;
            self.prov
                .insert(shard, p.into_iter().map(|p| p.source).collect());
        }
        Ok(self.prov[&shard]
            .get(doc as usize)
            .cloned()
            .unwrap_or_default())
    }
}

/// Replays step `step` of the run in `dir` (`attempt`: which run of the step when a rollback
/// made the run go over it again; default the last). Documents of the `top` highest-loss
/// samples and the `top` documents that added most to the loss get a text snippet.
pub fn trace_step(dir: &Path, step: u64, attempt: Option<usize>, top: usize) -> Result<Trace> {
    let mut run = Run::open(dir)?;
    trace_in(&mut run, step, attempt, top, None)
}

/// [`trace_step`] in an opened run, with an optional shared decoder.
fn trace_in(
    run: &mut Run,
    step: u64,
    attempt: Option<usize>,
    top: usize,
    dec: Option<&mut Decoder>,
) -> Result<Trace> {
    let lines = run.attempts(step);
    if lines.is_empty() {
        return Err(Error::NotFound(format!(
            "step {step} is not in {} (it holds {})",
            run.dir.join("log.jsonl").display(),
            run.train_range()
        )));
    }
    let a = attempt.unwrap_or(lines.len() - 1);
    let &li = lines.get(a).ok_or_else(|| {
        Error::NotFound(format!(
            "step {step} of {} ran {} time(s); there is no attempt {a}",
            run.dir.display(),
            lines.len()
        ))
    })?;
    let line = run.log[li].clone();
    let rows = tokenmill_trainer::losslog::rows_of(&run.dir, line.seq)?;
    if rows.is_empty() {
        return Err(Error::NotFound(format!(
            "{}: the loss table has no rows for step {step}",
            run.dir.display()
        )));
    }
    let excluded: HashSet<String> = run
        .excluded_ids(line.excluded)
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut samples: Vec<TraceSample> = Vec::new();
    for r in &rows {
        let p = run.provenance(r.shard, r.doc)?;
        let i = r.sample as usize;
        while samples.len() <= i {
            samples.push(TraceSample {
                index: samples.len(),
                loss: f64::NAN,
                docs: Vec::new(),
            });
        }
        let loss = r.loss as f64;
        samples[i].loss = r.sample_loss as f64;
        samples[i].docs.push(TraceDoc {
            excess: if loss.is_finite() {
                (loss - line.main_loss) * r.targets as f64
            } else {
                0.0
            },
            excluded: excluded.contains(&p.id),
            id: p.id,
            source: p.source,
            offset: p.offset,
            url: p.url,
            shard: r.shard,
            doc: r.doc,
            tokens: r.tokens,
            doc_offset: r.doc_offset,
            targets: r.targets,
            loss,
            peak: r.peak_token.zip(r.peak_loss).map(|(t, l)| Peak {
                token: t,
                loss: l as f64,
                before: None,
                at: None,
            }),
            snippet: None,
        });
    }
    samples.sort_by(|a, b| highest_first(a.loss, b.loss));
    let mut t = Trace {
        step,
        attempt: a,
        attempts: lines.len(),
        superseded: run.superseded[li],
        loss: line.main_loss,
        total_loss: line.loss,
        mtp_loss: line.mtp_loss,
        balance_loss: line.balance_loss,
        grad_norm: line.grad_norm,
        loss_z: line.loss_z,
        grad_norm_z: line.grad_norm_z,
        doc_z: line.doc_z,
        spikes: line.spikes.clone(),
        quarantined: line.quarantined.clone(),
        samples,
    };
    // Snippets for what a reader looks at: the top samples and the top contributors.
    let mut want: HashSet<(usize, usize)> = HashSet::new();
    for (si, s) in t.samples.iter().enumerate().take(top) {
        want.extend((0..s.docs.len()).map(|k| (si, k)));
    }
    let top_ids: HashSet<String> = t.top_documents(top).iter().map(|d| d.id.clone()).collect();
    for (si, s) in t.samples.iter().enumerate() {
        for (k, d) in s.docs.iter().enumerate() {
            if top_ids.contains(&d.id) {
                want.insert((si, k));
            }
        }
    }
    let mut own;
    let dec = match dec {
        Some(d) => d,
        None => {
            own = Decoder::open(&run.cfg.data.train)?;
            &mut own
        }
    };
    for (si, k) in want {
        let d = &mut t.samples[si].docs[k];
        d.snippet = Some(dec.head(d.shard, d.doc, 48)?);
        if let Some(p) = d.peak.as_mut() {
            let (before, at) = dec.around(d.shard, d.doc, p.token, 24)?;
            p.before = Some(before);
            p.at = Some(at);
        }
    }
    Ok(t)
}

/// Every logged step at which document `id` was in a batch, with its loss each time: the id
/// is resolved to (shard, document) once through the provenance tables, then the run's loss
/// table is filtered on it.
pub fn trace_doc(dir: &Path, id: &str) -> Result<(DocProvenanceOut, Vec<DocSighting>)> {
    let run = Run::open(dir)?;
    let ds = &run.dataset;
    let hit = find_documents(ds, &HashSet::from([id]))?.into_iter().min();
    let (shard, doc) = hit.ok_or_else(|| {
        Error::NotFound(format!(
            "no document {id:?} in {}",
            run.cfg.data.train.display()
        ))
    })?;
    let p = ds.provenance(shard as usize)?.swap_remove(doc as usize);
    // training line seq → index in the log
    let lines: Vec<usize> = run
        .log
        .iter()
        .enumerate()
        .filter(|(_, l)| l.kind == LogKind::Train)
        .map(|(i, _)| i)
        .collect();
    let mut seen = Vec::new();
    for (_, _, path) in tokenmill_trainer::losslog::files(dir)? {
        for r in tokenmill_trainer::losslog::read(&path)? {
            if (r.shard, r.doc) != (shard, doc) {
                continue;
            }
            let Some(&li) = lines.get(r.seq as usize) else {
                continue; // a line the log no longer holds
            };
            let line = &run.log[li];
            seen.push(DocSighting {
                step: r.step,
                sample: r.sample as usize,
                tokens: r.tokens,
                loss: r.loss as f64,
                step_loss: line.main_loss,
                spike: !line.spikes.is_empty(),
                superseded: run.superseded[li],
            });
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

/// Every step at which a detector fired, traced (`top` documents each), in log order.
pub fn trace_spikes(dir: &Path, top: usize) -> Result<(Run, Vec<Trace>)> {
    let mut run = Run::open(dir)?;
    let mut dec = Decoder::open(&run.cfg.data.train)?;
    let spikes: Vec<(u64, usize)> = run
        .log
        .iter()
        .enumerate()
        .filter(|(_, l)| l.kind == LogKind::Train && !l.spikes.is_empty())
        .map(|(i, l)| {
            let attempt = run.attempts(l.step).iter().position(|&j| j == i);
            (
                l.step,
                attempt.expect("a train line is an attempt of its step"),
            )
        })
        .collect();
    let mut out = Vec::with_capacity(spikes.len());
    for (step, attempt) in spikes {
        out.push(trace_in(
            &mut run,
            step,
            Some(attempt),
            top,
            Some(&mut dec),
        )?);
    }
    Ok((run, out))
}

/// Writes each spike's report as a run goes — `RUN/spikes/step-S-seq-Q.json` (the trace) and
/// `.txt` (as `tokenmill trace` prints it) — from the lines the run logs, without re-reading
/// the log, the tokenizer or the provenance tables at every spike.
pub struct SpikeReporter {
    run: Run,
    dec: Decoder,
    top: usize,
}

impl std::fmt::Debug for SpikeReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpikeReporter")
            .field("run", &self.run.dir)
            .finish()
    }
}

impl SpikeReporter {
    /// Opens the run in `dir` (its `run.json` written, its log as far as it goes).
    pub fn open(dir: &Path, top: usize) -> Result<Self> {
        let run = Run::open(dir)?;
        let dec = Decoder::open(&run.cfg.data.train)?;
        Ok(SpikeReporter { run, dec, top })
    }

    /// Takes the run's next log line; writes its report when it is a spike.
    pub fn observe(&mut self, line: &StepLog) -> Result<Option<PathBuf>> {
        self.run.log.push(line.clone());
        if line.rollback.is_some() {
            self.run.superseded = superseded(&self.run.log);
        } else {
            self.run.superseded.push(false);
        }
        if line.kind != LogKind::Train || line.spikes.is_empty() {
            return Ok(None);
        }
        if line.excluded > self.run.quarantine.len() {
            self.run.quarantine = read_quarantine(&self.run.dir.join("quarantine.json"))?;
        }
        let t = trace_in(
            &mut self.run,
            line.step,
            None,
            self.top,
            Some(&mut self.dec),
        )?;
        let dir = self.run.dir.join("spikes");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let stem = dir.join(format!("step-{:08}-seq-{:08}", line.step, line.seq));
        let json = serde_json::to_vec_pretty(&t).expect("serialises");
        tokenmill_shards::atomic_write(&stem.with_extension("json"), &json)?;
        tokenmill_shards::atomic_write(
            &stem.with_extension("txt"),
            render(&t, self.top).as_bytes(),
        )?;
        Ok(Some(stem.with_extension("json")))
    }
}

/// One line, control characters made visible, at most `max` characters.
pub fn one_line(t: &str, max: usize) -> String {
    let mut s: String = t
        .chars()
        .map(|c| match c {
            '\n' => '⏎',
            c if c.is_control() => '·',
            c => c,
        })
        .take(max)
        .collect();
    if t.chars().count() > max {
        s.push('…');
    }
    s
}

/// Human-readable form: the `top` samples with their documents, then the top contributors
/// with where their token losses peak.
pub fn render(t: &Trace, top: usize) -> String {
    let mut s = String::new();
    let spikes = if t.spikes.is_empty() {
        "no detector fired".to_string()
    } else {
        t.spikes.join(", ")
    };
    let attempt = if t.attempts > 1 {
        format!(
            "; attempt {} of {}{}",
            t.attempt + 1,
            t.attempts,
            if t.superseded {
                ", superseded by a rollback"
            } else {
                ""
            }
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "step {}: loss {:.4} (next-token), total loss {:.4} (with MTP {:.4}, balance {:.4}), \
         grad norm {:.3} ({spikes}{attempt})",
        t.step, t.loss, t.total_loss, t.mtp_loss, t.balance_loss, t.grad_norm,
    );
    let shown = top.min(t.samples.len());
    let _ = writeln!(
        s,
        "{} samples, highest loss first{}",
        t.samples.len(),
        if shown < t.samples.len() {
            format!("; the first {shown} shown (--top {top})")
        } else {
            String::new()
        }
    );
    if !t.quarantined.is_empty() {
        let _ = writeln!(s, "quarantined: {}", t.quarantined.join(", "));
    }
    for smp in t.samples.iter().take(top) {
        let _ = writeln!(s, "  sample {:>3}  loss {:.4}", smp.index, smp.loss);
        for d in &smp.docs {
            let _ = writeln!(
                s,
                "      {:<28} loss {:>7.4}  {} tokens from token {}  {} @ byte {}{}{}",
                d.id,
                d.loss,
                d.tokens,
                d.doc_offset,
                d.source,
                d.offset,
                d.url
                    .as_deref()
                    .map(|u| format!("  {u}"))
                    .unwrap_or_default(),
                if d.excluded { "  [excluded]" } else { "" }
            );
        }
    }
    let tops = t.top_documents(top);
    if !tops.is_empty() {
        let _ = writeln!(s, "documents that added most to the loss:");
        for d in tops {
            let _ = writeln!(
                s,
                "  {:<28} +{:.1} nats over the step mean  {} @ byte {}{}",
                d.id,
                d.excess,
                d.source,
                d.offset,
                d.url
                    .as_deref()
                    .map(|u| format!("  {u}"))
                    .unwrap_or_default()
            );
            if let Some(snip) = &d.snippet {
                let _ = writeln!(s, "      text: {}", one_line(snip, 100));
            }
            if let Some(p) = &d.peak {
                let _ = writeln!(
                    s,
                    "      peak: token {} loss {:.2}: …{}⟦{}⟧",
                    p.token,
                    p.loss,
                    one_line(p.before.as_deref().unwrap_or(""), 80),
                    one_line(p.at.as_deref().unwrap_or(""), 20)
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_without_a_loss_sort_last() {
        let mut v = [1.0, f64::NAN, 3.0, -f64::NAN, 2.0];
        v.sort_by(|a, b| super::highest_first(*a, *b));
        assert_eq!(v[..3], [3.0, 2.0, 1.0]);
        assert!(v[3].is_nan() && v[4].is_nan());
    }
}
