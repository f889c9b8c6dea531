//! `tokenmill bench spikes`: calibrates the spike detectors on real text. For each corpus of
//! `../shared/data` (encyclopedic and news web text, books, plays), it builds two datasets —
//! the clean text, and the same text with out-of-distribution documents injected at known
//! places (a foreign script, random tokens, a repeated character, base64 and hex blobs, a table
//! of numbers, mojibake, source code) — trains the `tiny` model on each with every seed
//! (response `log`, so detection does not change training), then **replays** the detectors over
//! the runs' logs and loss tables for every threshold: a detector's decisions depend only on
//! the step's loss, gradient norm and document spans, which the run recorded.
//!
//! Per detector setting it reports recall on the injected documents' out-of-distribution
//! exposures (a span of an injected document, with at least 16 targets, whose loss is ≥ 1.5
//! nats above its step's next-token loss), the precision of the documents named (flagged spans
//! that are injected documents, in the poisoned runs), and false flags per 1,000 steps on the
//! clean runs. It also times the detector at batch sizes up to 4,096 samples.
//!
//! For the default settings it then reads every flag by its text: the window the model saw
//! against the text of the document's own source file ([`tokenmill_pipelines::oddity`]), so a
//! flag on a "clean" corpus that names a window of another script, language or layout (a
//! Chinese page in an English sample) is told from one that names ordinary text (innocent);
//! the reading is itself checked on the injected exposures and on unflagged windows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, UInt64Type};
use tokenmill_pipelines::config::BuildConfig;
use tokenmill_pipelines::oddity::{Oddity, Profile};
use tokenmill_pipelines::trace::SpanText;
use tokenmill_pipelines::train::{read_config, train};
use tokenmill_shards::bpe::{BpeTrainConfig, train_bpe};
use tokenmill_trainer::spikes::{DocReference, Observation, SpanLoss, SpikeConfig, SpikeDetector};
use tokenmill_trainer::train::{LogKind, StepLog};

/// `tokenmill bench spikes`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The shared data folder (default: `$TOKENMILL_TEST_DATA`, else `../shared/data`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Corpora (comma-separated): shakespeare, dolma, guardian, cc, botchan, alice, neko
    /// (Japanese).
    #[arg(long, default_value = "shakespeare,dolma,botchan")]
    pub corpora: String,
    /// Training seeds (comma-separated).
    #[arg(long, default_value = "11,12")]
    pub seeds: String,
    /// Samples per step (comma-separated: every batch size is trained).
    #[arg(long, default_value = "8")]
    pub batch: String,
    /// Model presets trained (comma-separated: tiny, small).
    #[arg(long, default_value = "tiny")]
    pub presets: String,
    /// Also train on one dataset mixing every corpus (each its own input file, so its own
    /// provenance source), the injections spread over them.
    #[arg(long)]
    pub mix: bool,
    /// The corpora's shares of the mix's text (comma-separated, one per corpus; default equal).
    #[arg(long, requires = "mix")]
    pub mix_shares: Option<String>,
    /// References to replay (comma-separated: global, source, step).
    #[arg(long, default_value = "global,source,step")]
    pub doc_reference: String,
    /// Training steps per run.
    #[arg(long, default_value_t = 240)]
    pub steps: u64,
    /// Document-detector thresholds to replay (comma-separated z values).
    #[arg(long, default_value = "3,3.5,4,4.5,5,6")]
    pub doc_z: String,
    /// Minimum excess (nats above the reference median) to replay with each threshold
    /// (comma-separated; 0 = z alone).
    #[arg(long, default_value = "0,1,1.5")]
    pub doc_excess: String,
    /// Steps whose spans form the document detector's reference (`doc_window`).
    #[arg(long, default_value_t = tokenmill_trainer::spikes::SpikeConfig::default().doc_window)]
    pub doc_window: usize,
    /// With `--keep`: reuse the runs already there instead of training them again.
    #[arg(long, requires = "keep")]
    pub reuse: bool,
    /// Keep the runs here (default: a temporary folder, removed at the end).
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Write the rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// List, for the default detector settings, every clean document flagged and every
    /// exposure missed: corpus, seed, step, document, targets, loss, the reference's median and
    /// z, and the start of its text.
    #[arg(long)]
    pub explain: bool,
}

/// Clean documents of a corpus: (train, held out), about `bytes` of training text.
fn clean_docs(data: &Path, corpus: &str, bytes: usize) -> Result<(Vec<String>, Vec<String>)> {
    let read_gz_jsonl = |rel: &str| -> Result<Vec<String>> {
        let path = data.join(rel);
        let mut s = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::MultiGzDecoder::new(
                std::fs::File::open(&path)
                    .with_context(|| format!("{}: cannot open", path.display()))?,
            ),
            &mut s,
        )?;
        let mut out = Vec::new();
        for (i, line) in s.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}: line {}: not JSON", path.display(), i + 1))?;
            if let Some(t) = v["text"].as_str().filter(|t| t.len() >= 200) {
                out.push(t.to_string());
            }
        }
        Ok(out)
    };
    // blank-line blocks; a text without blank lines (a book with one paragraph per line) in
    // documents of 24 lines
    let blocks = |rel: &str| -> Result<Vec<String>> {
        let path = data.join(rel);
        let t = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?
            .replace("\r\n", "\n");
        let b: Vec<String> = t
            .split("\n\n")
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if b.len() >= 50 {
            return Ok(b);
        }
        let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
        Ok(lines.chunks(24).map(|c| c.join("\n")).collect())
    };
    let all = match corpus {
        "shakespeare" => blocks("text/tinyshakespeare.txt")?,
        "botchan" => blocks("text/botchan.txt")?,
        "alice" => blocks("text/canterbury-alice29.txt")?,
        // Japanese prose; its first 100 lines (which the injections quote from) left out
        "neko" => blocks("multilingual/wagahaiwa_nekodearu.ja.txt")?
            .into_iter()
            .skip(100 / 24 + 1)
            .collect(),
        "dolma" => read_gz_jsonl("jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz")?,
        "guardian" => read_gz_jsonl("jsonl/olmo-c4_100_domains-theguardian.jsonl.gz")?,
        "cc" => read_gz_jsonl("jsonl/cc_en_head-0091.jsonl.gz")?,
        other => {
            bail!(
                "unknown corpus `{other}` (shakespeare, dolma, guardian, cc, botchan, alice, neko)"
            )
        }
    };
    let held = (all.len() / 10).max(1);
    let (train_part, eval_part) = all.split_at(all.len() - held);
    let mut train = Vec::new();
    let mut n = 0;
    for d in train_part {
        if n >= bytes {
            break;
        }
        n += d.len();
        train.push(d.clone());
    }
    if n < bytes / 4 {
        bail!(
            "corpus `{corpus}` has {n} bytes of training text, too little for the injections (want {bytes})"
        );
    }
    Ok((train, eval_part.to_vec()))
}

/// xorshift64: the injections are the same in every run.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// The out-of-distribution documents: (kind, text), two of each kind.
fn injections(data: &Path) -> Result<Vec<(&'static str, String)>> {
    let ja = std::fs::read_to_string(data.join("multilingual/wagahaiwa_nekodearu.ja.txt"))
        .context("multilingual/wagahaiwa_nekodearu.ja.txt")?;
    let ja: Vec<char> = ja.chars().filter(|c| !c.is_whitespace()).collect();
    let code = include_str!("gemm.rs");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::new();
    for copy in 0..2 {
        let foreign: String = ja[2000 + copy * 500..2000 + copy * 500 + 90]
            .iter()
            .collect();
        let b64: String = (0..320)
            .map(|_| {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(next(&mut x) % 64) as usize] as char
            })
            .collect();
        let hex: String = (0..320)
            .map(|_| b"0123456789abcdef"[(next(&mut x) % 16) as usize] as char)
            .collect();
        let table: String = (0..24)
            .map(|_| {
                format!(
                    "{} | {}.{} | {} | {}\n",
                    next(&mut x) % 100_000,
                    next(&mut x) % 1000,
                    next(&mut x) % 100,
                    next(&mut x) % 10,
                    next(&mut x) % 1_000_000
                )
            })
            .collect();
        // UTF-8 read as Latin-1: the classic mojibake of a crawl
        let src: String = ja[4000 + copy * 300..4000 + copy * 300 + 60]
            .iter()
            .collect();
        let moji: String = src.bytes().map(|b| b as char).collect();
        let random: String = (0..400)
            .map(|_| char::from_u32(0x21 + (next(&mut x) % 94) as u32).unwrap_or('x'))
            .collect();
        let start = 1500 + copy * 900;
        let rust = code
            .get(start..start + 700)
            .unwrap_or(&code[..700.min(code.len())])
            .to_string();
        out.extend([
            ("foreign script", foreign),
            ("random characters", random),
            ("repeated character", "Z".repeat(250)),
            ("base64", b64),
            ("hex", hex),
            ("number table", table),
            ("mojibake", moji),
            ("source code", rust),
        ]);
    }
    Ok(out)
}

/// Writes `train.jsonl` (clean documents, with the injections spread evenly when `poison`)
/// and `eval.jsonl`; returns the injected documents' ids and kinds.
/// `prefix` starts every id (`""` for one corpus, `"dolma/"` in a mix); the files are
/// `train{suffix}.jsonl` and `eval{suffix}.jsonl`.
fn write_corpus(
    dir: &Path,
    (prefix, suffix): (&str, &str),
    train: &[String],
    eval: &[String],
    inject: &[(&'static str, String)],
    poison: bool,
) -> Result<HashMap<String, &'static str>> {
    let mut ids = HashMap::new();
    let mut lines = Vec::new();
    if poison && !inject.is_empty() && train.len() < 2 {
        bail!(
            "{}: {} clean document(s), too few to spread {} injected documents between",
            dir.display(),
            train.len(),
            inject.len()
        );
    }
    // Injection k goes before clean document (k + 1)·⌊n / (m + 1)⌋, or ⌊(k + 1)·n / (m + 1)⌋
    // when the documents are fewer than the injections (long web pages): several between two
    // documents then.
    let (n, m) = (train.len(), inject.len());
    let at = |k: usize| {
        if n > m {
            (k + 1) * (n / (m + 1))
        } else {
            ((k + 1) * n / (m + 1)).max(1)
        }
    };
    let mut k = 0;
    for (i, t) in train.iter().enumerate() {
        while poison && k < m && at(k) <= i {
            let id = format!("{prefix}ood-{k}");
            ids.insert(id.clone(), inject[k].0);
            lines.push(serde_json::json!({"id": id, "text": inject[k].1}).to_string());
            k += 1;
        }
        lines.push(serde_json::json!({"id": format!("{prefix}doc-{i}"), "text": t}).to_string());
    }
    std::fs::write(
        dir.join(format!("train{suffix}.jsonl")),
        lines.join("\n") + "\n",
    )?;
    let ev: Vec<String> = eval
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": format!("{prefix}eval-{i}"), "text": t}).to_string())
        .collect();
    std::fs::write(
        dir.join(format!("eval{suffix}.jsonl")),
        ev.join("\n") + "\n",
    )?;
    Ok(ids)
}

/// Builds `train-ds` from `train*.jsonl` and `eval-ds` from `eval*.jsonl` in `dir`.
fn build(dir: &Path, tok: &Path) -> Result<()> {
    for (name, stem) in [("train-ds", "train"), ("eval-ds", "eval")] {
        let mut cfg = BuildConfig::default();
        let mut paths: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(stem) && n.ends_with(".jsonl"))
            .map(|n| dir.join(n).display().to_string())
            .collect();
        paths.sort();
        cfg.input.paths = paths;
        cfg.tokenizer.path = tok.to_path_buf();
        cfg.output.dir = dir.join(name);
        cfg.run.quiet = true;
        tokenmill_pipelines::build(&cfg)?;
    }
    Ok(())
}

fn train_config(dir: &Path, preset: &str, seed: u64, batch: usize, steps: u64) -> Result<PathBuf> {
    let decay = steps / 3;
    let toml = format!(
        r#"
[model]
preset = "{preset}"
vocab_size = 512

[data]
train = "train-ds"
eval = "eval-ds"
seq_len = 64
batch = {batch}
seed = {seed}

[lr]
peak = 3e-3
min = 3e-4
warmup = 20
constant = {constant}
decay = {decay}

[train]
out = "run"
steps = {steps}
threads = 2
eval_batches = 4
checkpoint_every = {steps}
"#,
        constant = steps.saturating_sub(20 + decay),
    );
    let path = dir.join("train.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// One step of a recorded run: its log line and its spans (with their document ids).
#[derive(Debug, Clone)]
pub struct Step {
    /// The step.
    pub step: u64,
    /// Its loss, as the detectors saw it.
    pub loss: f64,
    /// Its next-token loss.
    pub main_loss: f64,
    /// Its gradient norm.
    pub grad_norm: f64,
    /// Its document spans, each with its document's id.
    pub spans: Vec<(SpanLoss, String)>,
    /// Where each span's tokens are (same order as `spans`).
    pub at: Vec<SpanAt>,
}

/// Where a span's tokens are in the dataset: a loss table row's shard, document, offset and
/// length.
#[derive(Debug, Clone, Copy)]
pub struct SpanAt {
    /// Shard.
    pub shard: u32,
    /// Document within the shard.
    pub doc: u64,
    /// First token of the span within the document.
    pub doc_offset: u64,
    /// Tokens of the span.
    pub tokens: u32,
}

/// The detector's observations replayed over a recorded run with `cfg`: one per step.
pub fn replay_observations(run: &[Step], cfg: &SpikeConfig) -> Vec<(u64, Observation)> {
    let mut d = SpikeDetector::new(cfg.clone());
    run.iter()
        .map(|s| {
            let spans: Vec<SpanLoss> = s.spans.iter().map(|x| x.0).collect();
            (s.step, d.observe(s.step, s.loss, s.grad_norm, &spans))
        })
        .collect()
}

fn u64s(a: &dyn Array) -> Result<Vec<u64>> {
    let c = arrow::compute::cast(a, &DataType::UInt64)?;
    Ok(c.as_primitive::<UInt64Type>().values().to_vec())
}

fn f64s(a: &dyn Array) -> Result<Vec<f64>> {
    let c = arrow::compute::cast(a, &DataType::Float64)?;
    Ok(c.as_primitive::<Float64Type>().values().to_vec())
}

/// Reads a finished run back: its training lines with their spans, each span's source
/// numbered from the dataset's provenance tables (as the trainer numbers them).
pub fn read_run(run: &Path, dataset: &Path) -> Result<Vec<Step>> {
    let ds = tokenmill_shards::Dataset::open(dataset)?;
    let mut names: HashMap<String, u32> = HashMap::new();
    let mut shard_sources: HashMap<u64, Vec<u32>> = HashMap::new();
    let log: Vec<StepLog> = tokenmill_pipelines::plot::read_log(run)?;
    let mut steps: BTreeMap<u64, Step> = log
        .iter()
        .filter(|l| l.kind == LogKind::Train)
        .map(|l| {
            (
                l.step,
                Step {
                    step: l.step,
                    loss: l.loss,
                    main_loss: l.main_loss,
                    grad_norm: l.grad_norm,
                    spans: Vec::new(),
                    at: Vec::new(),
                },
            )
        })
        .collect();
    let batches = tokenmill_pipelines::sql::query_dir(
        run,
        "SELECT step, sample, span, loss, targets, id, shard, doc, doc_offset, tokens FROM losses \
         ORDER BY step, sample, span",
    )?;
    for b in &batches {
        let (step, sample, span) = (u64s(b.column(0))?, u64s(b.column(1))?, u64s(b.column(2))?);
        let (loss, targets) = (f64s(b.column(3))?, u64s(b.column(4))?);
        let ids = arrow::compute::cast(b.column(5), &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        let (shard, doc) = (u64s(b.column(6))?, u64s(b.column(7))?);
        let (doc_offset, tokens) = (u64s(b.column(8))?, u64s(b.column(9))?);
        for r in 0..b.num_rows() {
            if let std::collections::hash_map::Entry::Vacant(e) = shard_sources.entry(shard[r]) {
                let prov = ds.provenance(shard[r] as usize)?;
                let v = prov
                    .iter()
                    .map(|p| {
                        let next = names.len() as u32;
                        *names.entry(p.source.clone()).or_insert(next)
                    })
                    .collect();
                e.insert(v);
            }
            let source = shard_sources[&shard[r]]
                .get(doc[r] as usize)
                .copied()
                .unwrap_or(0);
            if let Some(s) = steps.get_mut(&step[r]) {
                s.spans.push((
                    SpanLoss {
                        sample: sample[r] as usize,
                        span: span[r] as usize,
                        loss: loss[r],
                        targets: targets[r] as usize,
                        source,
                    },
                    ids.value(r).to_string(),
                ));
                s.at.push(SpanAt {
                    shard: shard[r] as u32,
                    doc: doc[r],
                    doc_offset: doc_offset[r],
                    tokens: tokens[r] as u32,
                });
            }
        }
    }
    Ok(steps.into_values().collect())
}

/// What one detector setting did on one run.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    exposures: u64,
    caught: u64,
    flagged: u64,
    flagged_ood: u64,
    steps: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.exposures += o.exposures;
        self.caught += o.caught;
        self.flagged += o.flagged;
        self.flagged_ood += o.flagged_ood;
        self.steps += o.steps;
    }
}

/// A span the replay got wrong: a clean document flagged, or an exposure missed.
#[derive(Debug, Clone)]
struct Miss {
    step: u64,
    id: String,
    targets: usize,
    loss: f64,
    step_loss: f64,
    /// The reference's median and robust scale.
    reference: Option<(f64, f64)>,
}

/// Whether span `sp` of a step is one of the documents the observation flagged.
fn is_flagged(o: &Observation, sp: &SpanLoss) -> bool {
    o.outliers
        .iter()
        .any(|&(i, j, _)| (i, j) == (sp.sample, sp.span))
}

/// An out-of-distribution exposure: an injected document's span of at least 16 targets whose
/// loss is 1.5 nats or more above its step's next-token loss.
fn is_exposure(s: &Step, sp: &SpanLoss, injected: bool) -> bool {
    injected && sp.targets >= 16 && sp.loss >= s.main_loss + 1.5
}

/// Replays the document detector with `cfg` over `run`; `ood` names the injected documents.
/// Also returns the spans it got wrong.
fn replay(
    run: &[Step],
    cfg: &SpikeConfig,
    ood: &HashMap<String, &'static str>,
) -> (Counts, Vec<Miss>) {
    let mut c = Counts::default();
    let mut wrong = Vec::new();
    for (s, (_, o)) in run.iter().zip(replay_observations(run, cfg)) {
        c.steps += 1;
        for (sp, id) in &s.spans {
            let is_flagged = is_flagged(&o, sp);
            let is_ood = ood.contains_key(id);
            if is_flagged {
                c.flagged += 1;
                c.flagged_ood += is_ood as u64;
            }
            let exposure = is_exposure(s, sp, is_ood);
            if exposure {
                c.exposures += 1;
                c.caught += is_flagged as u64;
            }
            if (is_flagged && !is_ood) || (exposure && !is_flagged) {
                let reference = o
                    .judged
                    .iter()
                    .find(|j| (j.0, j.1) == (sp.sample, sp.span))
                    .map(|j| (j.2, j.3))
                    .or(o.doc_reference);
                wrong.push(Miss {
                    step: s.step,
                    id: id.clone(),
                    targets: sp.targets,
                    loss: sp.loss,
                    step_loss: s.main_loss,
                    reference,
                });
            }
        }
    }
    (c, wrong)
}

/// Prints the spans the default settings got wrong, with the start of each document's text.
fn explain(runs: &[(String, String, PathBuf, Vec<Miss>)]) -> Result<()> {
    println!("\nspans the default settings got wrong (flagged clean documents; missed exposures)");
    println!(
        "| corpus | run | step | document | targets | loss | step loss | reference median | z | text |"
    );
    println!("|---|---|---:|---|---:|---:|---:|---:|---:|---|");
    for (corpus, run, dir, misses) in runs {
        if misses.is_empty() {
            continue;
        }
        let mut text: HashMap<String, String> = HashMap::new();
        for e in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("train") && name.ends_with(".jsonl")) {
                continue;
            }
            text.extend(
                std::fs::read_to_string(e.path())?
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|v| {
                        Some((
                            v["id"].as_str()?.to_string(),
                            v["text"].as_str()?.to_string(),
                        ))
                    }),
            );
        }
        for m in misses {
            let snippet: String = text
                .get(&m.id)
                .map(|t| t.chars().take(60).collect::<String>())
                .unwrap_or_default()
                .replace(['\n', '|'], " ");
            let (med, z) = match m.reference {
                Some((med, mad)) => (format!("{med:.2}"), format!("{:.1}", (m.loss - med) / mad)),
                None => ("-".into(), "-".into()),
            };
            println!(
                "| {corpus} | {run} | {} | {} | {} | {:.2} | {:.2} | {med} | {z} | {snippet} |",
                m.step, m.id, m.targets, m.loss, m.step_loss
            );
        }
    }
    Ok(())
}

/// Reads spans of a run by their text: the window the model saw, and what is unusual about it
/// against the text of the document's source file ([`tokenmill_pipelines::oddity`]).
struct Reader {
    spans: SpanText,
    dir: PathBuf,
    /// Injected documents: left out of their source's profile.
    skip: HashSet<String>,
    profiles: HashMap<String, Profile>,
    /// Profiles of the documents read, by (shard, document).
    docs: HashMap<(u32, u64), Profile>,
}

impl Reader {
    fn open(dir: &Path, skip: HashSet<String>) -> Result<Self> {
        Ok(Reader {
            spans: SpanText::open(&dir.join("train-ds"))?,
            dir: dir.to_path_buf(),
            skip,
            profiles: HashMap::new(),
            docs: HashMap::new(),
        })
    }

    /// The texts of a JSONL source file (the run's own `train*.jsonl` when the recorded path
    /// is not there any more), without the injected documents.
    fn source_text(&self, src: &str) -> Result<String> {
        let mut files = vec![PathBuf::from(src)];
        if !files[0].exists() {
            files = std::fs::read_dir(&self.dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("train") && n.ends_with(".jsonl"))
                })
                .collect();
        }
        let mut out = String::new();
        for f in files {
            let t = std::fs::read_to_string(&f)
                .with_context(|| format!("{}: cannot read", f.display()))?;
            for l in t.lines() {
                let v: serde_json::Value = serde_json::from_str(l)
                    .with_context(|| format!("{}: a line is not JSON", f.display()))?;
                if v["id"].as_str().is_some_and(|id| self.skip.contains(id)) {
                    continue;
                }
                out.push_str(v["text"].as_str().unwrap_or(""));
                out.push_str("\n\n");
            }
        }
        Ok(out)
    }

    /// The span's text and what is unusual about it, against the other documents of its
    /// source (a long foreign page would otherwise make its own script common there).
    fn read(&mut self, at: &SpanAt, id: &str) -> Result<(Option<Oddity>, String)> {
        let text = self
            .spans
            .text(at.shard, at.doc, at.doc_offset, at.tokens)?;
        let src = self.spans.source(at.shard, at.doc)?;
        if !self.profiles.contains_key(&src) {
            let t = self.source_text(&src)?;
            self.profiles.insert(src.clone(), Profile::of(&t));
        }
        // (an injected document is not in its source's profile to begin with)
        let others = if self.skip.contains(id) {
            self.profiles[&src].clone()
        } else {
            if !self.docs.contains_key(&(at.shard, at.doc)) {
                let doc = Profile::of(&self.spans.document(at.shard, at.doc)?);
                self.docs.insert((at.shard, at.doc), doc);
            }
            self.profiles[&src].without(&self.docs[&(at.shard, at.doc)])
        };
        Ok((Profile::of(&text).oddity(&others), text))
    }
}

/// What reading the spans found, per corpus.
#[derive(Debug, Default)]
struct Reading {
    clean_steps: u64,
    /// Clean documents flagged (clean runs).
    flags: u64,
    /// Of those, by what is unusual about their window.
    odd: BTreeMap<&'static str, u64>,
    /// Not injected, flagged in poisoned runs; and of those, unusual.
    poisoned_flags: (u64, u64),
    /// Injected documents flagged in poisoned runs.
    injected_flags: u64,
    /// Exposures read, and of those unusual.
    exposures: (u64, u64),
    /// Unflagged clean spans read (a sample), and of those unusual.
    sample: (u64, u64),
    /// The flagged clean windows with nothing unusual: (run, step, id, text).
    innocent: Vec<(String, u64, String, String)>,
}

/// Reads, for the default detector settings, every flagged span and exposure, and every 40th
/// unflagged clean span of at least 16 targets.
fn read_runs(runs: &BTreeMap<String, Runs>, cfg: &SpikeConfig) -> Result<Vec<(String, Reading)>> {
    let mut out = Vec::new();
    for (corpus, r) in runs {
        let mut rd = Reading::default();
        let name = |d: &Path| d.file_name().map(|n| n.to_string_lossy().into_owned());
        for (steps, dir) in &r.clean {
            let mut reader = Reader::open(dir, HashSet::new())?;
            rd.clean_steps += steps.len() as u64;
            for (s, (_, o)) in steps.iter().zip(replay_observations(steps, cfg)) {
                for (k, (sp, id)) in s.spans.iter().enumerate() {
                    if is_flagged(&o, sp) {
                        let (odd, text) = reader.read(&s.at[k], id)?;
                        rd.flags += 1;
                        match odd {
                            Some(o) => *rd.odd.entry(o.kind()).or_default() += 1,
                            None => rd.innocent.push((
                                name(dir).unwrap_or_default(),
                                s.step,
                                id.clone(),
                                text,
                            )),
                        }
                    } else if sp.targets >= 16 && (s.step as usize * 7 + k).is_multiple_of(40) {
                        let (odd, _) = reader.read(&s.at[k], id)?;
                        rd.sample.0 += 1;
                        rd.sample.1 += odd.is_some() as u64;
                    }
                }
            }
        }
        for (steps, ids, dir) in &r.poisoned {
            let mut reader = Reader::open(dir, ids.keys().cloned().collect())?;
            for (s, (_, o)) in steps.iter().zip(replay_observations(steps, cfg)) {
                for (k, (sp, id)) in s.spans.iter().enumerate() {
                    let flagged = is_flagged(&o, sp);
                    let injected = ids.contains_key(id);
                    if is_exposure(s, sp, injected) {
                        let (odd, _) = reader.read(&s.at[k], id)?;
                        rd.exposures.0 += 1;
                        rd.exposures.1 += odd.is_some() as u64;
                    }
                    if flagged && injected {
                        rd.injected_flags += 1;
                    } else if flagged {
                        let (odd, _) = reader.read(&s.at[k], id)?;
                        rd.poisoned_flags.0 += 1;
                        rd.poisoned_flags.1 += odd.is_some() as u64;
                    }
                }
            }
        }
        out.push((corpus.clone(), rd));
    }
    Ok(out)
}

/// Prints what reading the flagged windows found.
fn print_reading(readings: &[(String, Reading)], innocent: bool) {
    println!(
        "\nflags of the default settings read by their text (the window the model saw against \
         the other documents of its source file: another script, a layout of few letters, \
         another language)"
    );
    println!(
        "| corpus | clean steps | clean flags | by script / layout / language | innocent | innocent per 1,000 clean steps | precision as counted | precision with unusual windows as findings | exposures unusual | unflagged sample unusual |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut all = Reading::default();
    let mut rows: Vec<(&str, &Reading)> = readings.iter().map(|(c, r)| (c.as_str(), r)).collect();
    for (_, r) in readings {
        all.clean_steps += r.clean_steps;
        all.flags += r.flags;
        for (k, v) in &r.odd {
            *all.odd.entry(k).or_default() += v;
        }
        all.poisoned_flags.0 += r.poisoned_flags.0;
        all.poisoned_flags.1 += r.poisoned_flags.1;
        all.injected_flags += r.injected_flags;
        all.exposures.0 += r.exposures.0;
        all.exposures.1 += r.exposures.1;
        all.sample.0 += r.sample.0;
        all.sample.1 += r.sample.1;
        all.innocent.extend(r.innocent.iter().cloned());
    }
    if readings.len() > 1 {
        rows.push(("all", &all));
    }
    let ratio = |a: u64, b: u64| {
        if b == 0 {
            "-".to_string()
        } else {
            format!("{}/{} ({:.2})", a, b, a as f64 / b as f64)
        }
    };
    for (corpus, r) in rows {
        let innocent = r.innocent.len() as u64;
        let odd = |k: &str| r.odd.get(k).copied().unwrap_or(0);
        let flagged = r.injected_flags + r.poisoned_flags.0;
        println!(
            "| {corpus} | {} | {} | {} / {} / {} | {innocent} | {:.1} | {} | {} | {} | {} |",
            r.clean_steps,
            r.flags,
            odd("script"),
            odd("layout"),
            odd("language"),
            innocent as f64 * 1000.0 / r.clean_steps.max(1) as f64,
            ratio(r.injected_flags, flagged),
            ratio(r.injected_flags + r.poisoned_flags.1, flagged),
            ratio(r.exposures.1, r.exposures.0),
            ratio(r.sample.1, r.sample.0),
        );
    }
    if innocent {
        println!("\n| corpus | run | step | document | window |");
        println!("|---|---|---:|---|---|");
        for (corpus, r) in readings {
            for (run, step, id, text) in &r.innocent {
                let t: String = text
                    .chars()
                    .take(100)
                    .collect::<String>()
                    .replace(['\n', '|'], " ");
                println!("| {corpus} | {run} | {step} | {id} | {t} |");
            }
        }
    }
}

/// A row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// The corpus, `mix`, or `all` (every corpus trained alone).
    pub corpus: String,
    /// What the spans were judged against.
    pub reference: String,
    /// Document-detector z threshold.
    pub doc_z: f64,
    /// Minimum targets of a judged span.
    pub min_targets: usize,
    /// Minimum excess over the reference median (nats).
    pub min_excess: f64,
    /// Out-of-distribution exposures (poisoned runs).
    pub exposures: u64,
    /// Their share flagged.
    pub recall: f64,
    /// Share of the flagged spans that are injected documents (poisoned runs).
    pub precision: f64,
    /// Flagged spans per 1,000 steps on the clean runs.
    pub false_per_1000: f64,
    /// Clean steps replayed.
    pub clean_steps: u64,
}

fn list<T: std::str::FromStr>(s: &str, what: &str) -> Result<Vec<T>> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{what}: `{}` is not a valid value", x.trim()))
        })
        .collect()
}

/// The runs of one corpus (or of the mix): poisoned (steps, injected ids, dir) and clean
/// (steps, dir).
#[derive(Default)]
struct Runs {
    poisoned: Vec<(Vec<Step>, HashMap<String, &'static str>, PathBuf)>,
    clean: Vec<(Vec<Step>, PathBuf)>,
}

/// Trains (or, with `--reuse`, reads back) the poisoned and clean runs of one corpus in `dir`;
/// `files` are (id prefix, file suffix, train documents, held-out documents, injections).
#[allow(clippy::type_complexity)]
fn corpus_runs(
    a: &Args,
    dir: &Path,
    files: &[(
        String,
        String,
        Vec<String>,
        Vec<String>,
        Vec<(&'static str, String)>,
    )],
    grid: &[(String, usize, u64)],
) -> Result<Runs> {
    std::fs::create_dir_all(dir)?;
    let tok = dir.join("tokenizer.json");
    if !(a.reuse && tok.is_file()) {
        train_bpe(
            files.iter().flat_map(|f| f.2.iter().map(|s| s.as_str())),
            &BpeTrainConfig {
                vocab_size: 512,
                ..Default::default()
            },
            &tok,
        )?;
    }
    let mut runs = Runs::default();
    for poison in [true, false] {
        for (preset, batch, seed) in grid {
            // The first grid point keeps the folder name of earlier versions (tiny, batch 8).
            let tag = if preset == "tiny" && *batch == 8 {
                format!("seed{seed}")
            } else {
                format!("{preset}-b{batch}-seed{seed}")
            };
            let run_dir = dir.join(format!(
                "{}-{tag}",
                if poison { "poisoned" } else { "clean" }
            ));
            std::fs::create_dir_all(&run_dir)?;
            let mut ids = HashMap::new();
            for (prefix, suffix, train_docs, eval_docs, inject) in files {
                ids.extend(write_corpus(
                    &run_dir,
                    (prefix, suffix),
                    train_docs,
                    eval_docs,
                    inject,
                    poison,
                )?);
            }
            let done = a.reuse && run_dir.join("run").join("log.jsonl").is_file();
            let t0 = Instant::now();
            if !done {
                // A run trained again starts from nothing (a kept folder may hold older data).
                for old in ["train-ds", "eval-ds", "run"] {
                    let p = run_dir.join(old);
                    if p.exists() {
                        std::fs::remove_dir_all(&p)
                            .with_context(|| format!("{}: cannot remove", p.display()))?;
                    }
                }
                build(&run_dir, &tok)?;
                let cfg = train_config(&run_dir, preset, *seed, *batch, a.steps)?;
                train(read_config(&cfg)?, false, true)?;
            }
            eprintln!(
                "{} {} {preset} batch {batch} seed {seed}: {} steps in {:.0} s",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                if poison { "poisoned" } else { "clean" },
                a.steps,
                t0.elapsed().as_secs_f64()
            );
            let steps = read_run(&run_dir.join("run"), &run_dir.join("train-ds"))?;
            if poison {
                runs.poisoned.push((steps, ids, run_dir));
            } else {
                runs.clean.push((steps, run_dir));
            }
        }
    }
    Ok(runs)
}

/// Runs `tokenmill bench spikes`.
pub fn run(a: Args) -> Result<()> {
    let data = crate::bench::extract::data_dir(a.data.clone());
    let seeds: Vec<u64> = list(&a.seeds, "--seeds")?;
    let zs: Vec<f64> = list(&a.doc_z, "--doc-z")?;
    let excesses: Vec<f64> = list(&a.doc_excess, "--doc-excess")?;
    let batches: Vec<usize> = list(&a.batch, "--batch")?;
    let presets: Vec<String> = list(&a.presets, "--presets")?;
    let references: Vec<DocReference> = a
        .doc_reference
        .split(',')
        .map(|r| match r.trim() {
            "global" => Ok(DocReference::Global),
            "source" => Ok(DocReference::Source),
            "step" => Ok(DocReference::Step),
            other => bail!("--doc-reference: `{other}` (global, source or step)"),
        })
        .collect::<Result<_>>()?;
    if let Some(p) = presets
        .iter()
        .find(|p| !["tiny", "small"].contains(&p.as_str()))
    {
        bail!("--presets: `{p}` (tiny or small: the bench trains each several times)");
    }
    // The detector judges nothing before `min_history` steps and needs `doc_window` steps of
    // reference: a run must go well beyond both to measure anything.
    let d = SpikeConfig::default();
    let needed = (d.min_history.max(a.doc_window) as u64) * 3;
    if a.steps < needed {
        bail!(
            "--steps {}: too few — the document detector judges nothing in its first {} steps \
             (min_history) and compares against {} steps of spans (--doc-window); train at \
             least {needed} steps so that most steps are judged",
            a.steps,
            d.min_history,
            a.doc_window
        );
    }
    let mut grid: Vec<(String, usize, u64)> = Vec::new();
    for p in &presets {
        for &b in &batches {
            grid.extend(seeds.iter().map(|&s| (p.clone(), b, s)));
        }
    }
    let tmp = tempfile::tempdir()?;
    let root = a.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let inject = injections(&data)?;
    let corpora: Vec<&str> = a.corpora.split(',').map(str::trim).collect();
    let max_batch = batches.iter().copied().max().unwrap_or(8);
    let target_bytes = a.steps as usize * max_batch * 64 * 5 / 2;
    let mut runs: BTreeMap<String, Runs> = BTreeMap::new();
    for corpus in &corpora {
        let (train_docs, eval_docs) = clean_docs(&data, corpus, target_bytes)?;
        let files = [(
            String::new(),
            String::new(),
            train_docs,
            eval_docs,
            inject.clone(),
        )];
        runs.insert(
            corpus.to_string(),
            corpus_runs(&a, &root.join(corpus), &files, &grid)?,
        );
    }
    if a.mix {
        // The same amount of text, an equal share from each corpus, each corpus its own file
        // (its own provenance source), the injections dealt round-robin to the corpora.
        let shares: Vec<f64> = match &a.mix_shares {
            Some(s) => list(s, "--mix-shares")?,
            None => vec![1.0; corpora.len()],
        };
        if shares.len() != corpora.len() || shares.iter().any(|x| !(*x > 0.0 && x.is_finite())) {
            bail!(
                "--mix-shares: {} positive numbers wanted, one per corpus ({}), got `{}`",
                corpora.len(),
                corpora.join(","),
                a.mix_shares.as_deref().unwrap_or_default()
            );
        }
        let sum: f64 = shares.iter().sum();
        let mut files = Vec::new();
        for (c, corpus) in corpora.iter().enumerate() {
            let bytes = (target_bytes as f64 * shares[c] / sum) as usize;
            let (train_docs, eval_docs) = clean_docs(&data, corpus, bytes)?;
            let own: Vec<(&'static str, String)> = inject
                .iter()
                .enumerate()
                .filter(|(k, _)| k % corpora.len() == c)
                .map(|(_, x)| x.clone())
                .collect();
            files.push((
                format!("{corpus}/"),
                format!("-{corpus}"),
                train_docs,
                eval_docs,
                own,
            ));
        }
        let shares_tag: Vec<String> = shares.iter().map(|x| x.to_string()).collect();
        let dir = root.join(format!(
            "mix-{}-{}",
            corpora.join("+"),
            shares_tag.join("+")
        ));
        runs.insert("mix".into(), corpus_runs(&a, &dir, &files, &grid)?);
    }
    let mut rows = Vec::new();
    for &reference in &references {
        for &excess in &excesses {
            for &min_targets in &[16usize, 32] {
                for &z in &zs {
                    let cfg = SpikeConfig {
                        doc_z: z,
                        doc_min_targets: min_targets,
                        doc_min_excess: excess,
                        doc_window: a.doc_window,
                        doc_reference: reference,
                        ..Default::default()
                    };
                    let mut total = (Counts::default(), Counts::default());
                    for (corpus, r) in &runs {
                        let (mut p, mut c) = (Counts::default(), Counts::default());
                        for (steps, ids, _) in &r.poisoned {
                            let (x, _) = replay(steps, &cfg, ids);
                            p.add(&x);
                        }
                        for (steps, _) in &r.clean {
                            let (x, _) = replay(steps, &cfg, &HashMap::new());
                            c.add(&x);
                        }
                        rows.push(row(corpus, &cfg, p, c));
                        if corpus != "mix" {
                            total.0.add(&p);
                            total.1.add(&c);
                        }
                    }
                    if corpora.len() > 1 {
                        rows.push(row("all", &cfg, total.0, total.1));
                    }
                }
            }
        }
    }
    println!(
        "document detector, replayed on {} corpora{} × {} seeds × presets {} × batches {} \
         ({} steps of 64 tokens per sample)",
        corpora.len(),
        if a.mix { " and their mix" } else { "" },
        seeds.len(),
        a.presets,
        a.batch,
        a.steps
    );
    if let Some(short) = runs
        .values()
        .flat_map(|r| r.clean.iter().map(|c| (c.0.len(), &c.1)))
        .find(|(n, _)| (*n as u64) < a.steps)
    {
        eprintln!(
            "note: {} holds {} training steps, fewer than --steps {} (a run cut short?)",
            short.1.display(),
            short.0,
            a.steps
        );
    }
    println!(
        "| corpus | reference | doc_z | min targets | min excess | exposures | recall | precision | false flags / 1,000 clean steps |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} |",
            r.corpus,
            r.reference,
            r.doc_z,
            r.min_targets,
            r.min_excess,
            r.exposures,
            r.recall,
            r.precision,
            r.false_per_1000
        );
    }
    {
        let cfg = SpikeConfig {
            doc_window: a.doc_window,
            ..Default::default()
        };
        print_reading(&read_runs(&runs, &cfg)?, a.explain);
    }
    if a.explain {
        let cfg = SpikeConfig {
            doc_window: a.doc_window,
            ..Default::default()
        };
        let mut wrong = Vec::new();
        for (corpus, r) in &runs {
            let name = |d: &Path| d.file_name().map(|n| n.to_string_lossy().into_owned());
            for (steps, ids, dir) in &r.poisoned {
                let (_, m) = replay(steps, &cfg, ids);
                wrong.push((
                    corpus.clone(),
                    name(dir).unwrap_or_default(),
                    dir.clone(),
                    m,
                ));
            }
            for (steps, dir) in &r.clean {
                let (_, m) = replay(steps, &cfg, &HashMap::new());
                wrong.push((
                    corpus.clone(),
                    name(dir).unwrap_or_default(),
                    dir.clone(),
                    m,
                ));
            }
        }
        explain(&wrong)?;
    }
    // The detector's cost per step at large batches (simulated span losses; 16 sources).
    println!("\n| samples per step | spans | reference | document detector per step (ms) |");
    println!("|---:|---:|---|---:|");
    for samples in [64usize, 512, 4096] {
        for reference in [
            DocReference::Global,
            DocReference::Source,
            DocReference::Step,
        ] {
            let mut d = SpikeDetector::new(SpikeConfig {
                doc_reference: reference,
                ..Default::default()
            });
            let mut x = 7u64;
            let mut total = 0.0;
            let n = 40;
            for step in 0..n {
                let spans: Vec<SpanLoss> = (0..samples * 2)
                    .map(|i| SpanLoss {
                        sample: i / 2,
                        span: i % 2,
                        loss: 3.0 + (next(&mut x) % 1000) as f64 / 1000.0,
                        targets: 64,
                        source: (next(&mut x) % 16) as u32,
                    })
                    .collect();
                let t0 = Instant::now();
                d.observe(step, 3.5, 1.0, &spans);
                if step >= 20 {
                    total += t0.elapsed().as_secs_f64();
                }
            }
            println!(
                "| {samples} | {} | {} | {:.2} |",
                samples * 2,
                reference_name(reference),
                total / 20.0 * 1e3
            );
        }
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}

fn reference_name(r: DocReference) -> &'static str {
    match r {
        DocReference::Global => "global",
        DocReference::Source => "source",
        DocReference::Step => "step",
    }
}

fn row(corpus: &str, cfg: &SpikeConfig, p: Counts, c: Counts) -> Row {
    Row {
        corpus: corpus.to_string(),
        reference: reference_name(cfg.doc_reference).to_string(),
        doc_z: cfg.doc_z,
        min_targets: cfg.doc_min_targets,
        min_excess: cfg.doc_min_excess,
        exposures: p.exposures,
        recall: if p.exposures == 0 {
            f64::NAN
        } else {
            p.caught as f64 / p.exposures as f64
        },
        precision: if p.flagged == 0 {
            f64::NAN
        } else {
            p.flagged_ood as f64 / p.flagged as f64
        },
        false_per_1000: if c.steps == 0 {
            f64::NAN
        } else {
            c.flagged as f64 * 1000.0 / c.steps as f64
        },
        clean_steps: c.steps,
    }
}
