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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, UInt64Type};
use tokenmill_pipelines::config::BuildConfig;
use tokenmill_pipelines::train::{read_config, train};
use tokenmill_shards::bpe::{BpeTrainConfig, train_bpe};
use tokenmill_trainer::spikes::{SpanLoss, SpikeConfig, SpikeDetector};
use tokenmill_trainer::train::{LogKind, StepLog};

/// `tokenmill bench spikes`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The shared data folder (default: `$TOKENMILL_TEST_DATA`, else `../shared/data`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Corpora (comma-separated): shakespeare, dolma, guardian, cc, botchan, alice.
    #[arg(long, default_value = "shakespeare,dolma,botchan")]
    pub corpora: String,
    /// Training seeds (comma-separated).
    #[arg(long, default_value = "11,12")]
    pub seeds: String,
    /// Samples per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
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
        "dolma" => read_gz_jsonl("jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz")?,
        "guardian" => read_gz_jsonl("jsonl/olmo-c4_100_domains-theguardian.jsonl.gz")?,
        "cc" => read_gz_jsonl("jsonl/cc_en_head-0091.jsonl.gz")?,
        other => {
            bail!("unknown corpus `{other}` (shakespeare, dolma, guardian, cc, botchan, alice)")
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
fn write_corpus(
    dir: &Path,
    train: &[String],
    eval: &[String],
    inject: &[(&'static str, String)],
    poison: bool,
) -> Result<HashMap<String, &'static str>> {
    let mut ids = HashMap::new();
    let mut lines = Vec::new();
    let every = (train.len() / (inject.len() + 1)).max(1);
    let mut k = 0;
    for (i, t) in train.iter().enumerate() {
        if poison && i > 0 && i % every == 0 && k < inject.len() {
            let id = format!("ood-{k}");
            ids.insert(id.clone(), inject[k].0);
            lines.push(serde_json::json!({"id": id, "text": inject[k].1}).to_string());
            k += 1;
        }
        lines.push(serde_json::json!({"id": format!("doc-{i}"), "text": t}).to_string());
    }
    std::fs::write(dir.join("train.jsonl"), lines.join("\n") + "\n")?;
    let ev: Vec<String> = eval
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": format!("eval-{i}"), "text": t}).to_string())
        .collect();
    std::fs::write(dir.join("eval.jsonl"), ev.join("\n") + "\n")?;
    Ok(ids)
}

fn build(dir: &Path, tok: &Path) -> Result<()> {
    for (name, file) in [("train-ds", "train.jsonl"), ("eval-ds", "eval.jsonl")] {
        let mut cfg = BuildConfig::default();
        cfg.input.paths = vec![dir.join(file).display().to_string()];
        cfg.tokenizer.path = tok.to_path_buf();
        cfg.output.dir = dir.join(name);
        cfg.run.quiet = true;
        tokenmill_pipelines::build(&cfg)?;
    }
    Ok(())
}

fn train_config(dir: &Path, seed: u64, batch: usize, steps: u64) -> Result<PathBuf> {
    let decay = steps / 3;
    let toml = format!(
        r#"
[model]
preset = "tiny"
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

/// One step of a recorded run: its log line and its spans (sample, span, loss, targets, id).
struct Step {
    step: u64,
    loss: f64,
    main_loss: f64,
    grad_norm: f64,
    spans: Vec<(SpanLoss, String)>,
}

fn u64s(a: &dyn Array) -> Result<Vec<u64>> {
    let c = arrow::compute::cast(a, &DataType::UInt64)?;
    Ok(c.as_primitive::<UInt64Type>().values().to_vec())
}

fn f64s(a: &dyn Array) -> Result<Vec<f64>> {
    let c = arrow::compute::cast(a, &DataType::Float64)?;
    Ok(c.as_primitive::<Float64Type>().values().to_vec())
}

/// Reads a finished run back: its training lines with their spans.
fn read_run(run: &Path) -> Result<Vec<Step>> {
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
                },
            )
        })
        .collect();
    let batches = tokenmill_pipelines::sql::query_dir(
        run,
        "SELECT step, sample, span, loss, targets, id FROM losses ORDER BY step, sample, span",
    )?;
    for b in &batches {
        let (step, sample, span) = (u64s(b.column(0))?, u64s(b.column(1))?, u64s(b.column(2))?);
        let (loss, targets) = (f64s(b.column(3))?, u64s(b.column(4))?);
        let ids = arrow::compute::cast(b.column(5), &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        for r in 0..b.num_rows() {
            if let Some(s) = steps.get_mut(&step[r]) {
                s.spans.push((
                    SpanLoss {
                        sample: sample[r] as usize,
                        span: span[r] as usize,
                        loss: loss[r],
                        targets: targets[r] as usize,
                    },
                    ids.value(r).to_string(),
                ));
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

/// Replays the document detector with `cfg` over `run`; `ood` names the injected documents.
fn replay(run: &[Step], cfg: &SpikeConfig, ood: &HashMap<String, &'static str>) -> Counts {
    let mut d = SpikeDetector::new(cfg.clone());
    let mut c = Counts::default();
    for s in run {
        let spans: Vec<SpanLoss> = s.spans.iter().map(|x| x.0).collect();
        let o = d.observe(s.step, s.loss, s.grad_norm, &spans);
        c.steps += 1;
        let flagged: Vec<(usize, usize)> = o.outliers.iter().map(|&(i, j, _)| (i, j)).collect();
        for (sp, id) in &s.spans {
            let is_flagged = flagged.contains(&(sp.sample, sp.span));
            let is_ood = ood.contains_key(id);
            if is_flagged {
                c.flagged += 1;
                c.flagged_ood += is_ood as u64;
            }
            if is_ood && sp.targets >= 16 && sp.loss >= s.main_loss + 1.5 {
                c.exposures += 1;
                c.caught += is_flagged as u64;
            }
        }
    }
    c
}

/// A row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// The corpus, or `all`.
    pub corpus: String,
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
}

/// Runs `tokenmill bench spikes`.
pub fn run(a: Args) -> Result<()> {
    let data = crate::bench::extract::data_dir(a.data.clone());
    let seeds: Vec<u64> = a
        .seeds
        .split(',')
        .map(|s| s.trim().parse().context("--seeds: integers"))
        .collect::<Result<_>>()?;
    let zs: Vec<f64> = a
        .doc_z
        .split(',')
        .map(|s| s.trim().parse().context("--doc-z: numbers"))
        .collect::<Result<_>>()?;
    let excesses: Vec<f64> = a
        .doc_excess
        .split(',')
        .map(|s| s.trim().parse().context("--doc-excess: numbers"))
        .collect::<Result<_>>()?;
    let tmp = tempfile::tempdir()?;
    let root = a.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let inject = injections(&data)?;
    // per corpus: (poisoned runs with their injected ids, clean runs)
    type Runs = (
        Vec<(Vec<Step>, HashMap<String, &'static str>)>,
        Vec<Vec<Step>>,
    );
    let mut runs: BTreeMap<String, Runs> = BTreeMap::new();
    let target_bytes = a.steps as usize * a.batch * 64 * 5 / 2;
    for corpus in a.corpora.split(',').map(str::trim) {
        let (train_docs, eval_docs) = clean_docs(&data, corpus, target_bytes)?;
        let tok_dir = root.join(corpus);
        std::fs::create_dir_all(&tok_dir)?;
        let tok = tok_dir.join("tokenizer.json");
        train_bpe(
            train_docs.iter().map(|s| s.as_str()),
            &BpeTrainConfig {
                vocab_size: 512,
                ..Default::default()
            },
            &tok,
        )?;
        for poison in [true, false] {
            for &seed in &seeds {
                let dir = tok_dir.join(format!(
                    "{}-seed{seed}",
                    if poison { "poisoned" } else { "clean" }
                ));
                std::fs::create_dir_all(&dir)?;
                let ids = write_corpus(&dir, &train_docs, &eval_docs, &inject, poison)?;
                let done = a.reuse && dir.join("run").join("log.jsonl").is_file();
                let t0 = Instant::now();
                if !done {
                    build(&dir, &tok)?;
                    let cfg = train_config(&dir, seed, a.batch, a.steps)?;
                    train(read_config(&cfg)?, false, true)?;
                }
                eprintln!(
                    "{corpus} {} seed {seed}: {} steps in {:.0} s",
                    if poison { "poisoned" } else { "clean" },
                    a.steps,
                    t0.elapsed().as_secs_f64()
                );
                let steps = read_run(&dir.join("run"))?;
                let e = runs.entry(corpus.to_string()).or_default();
                if poison {
                    e.0.push((steps, ids));
                } else {
                    e.1.push(steps);
                }
            }
        }
    }
    let mut rows = Vec::new();
    for &excess in &excesses {
        for &min_targets in &[16usize, 32] {
            for &z in &zs {
                let cfg = SpikeConfig {
                    doc_z: z,
                    doc_min_targets: min_targets,
                    doc_min_excess: excess,
                    doc_window: a.doc_window,
                    ..Default::default()
                };
                let mut total = (Counts::default(), Counts::default());
                for (corpus, (poisoned, clean)) in &runs {
                    let (mut p, mut c) = (Counts::default(), Counts::default());
                    for (steps, ids) in poisoned {
                        let r = replay(steps, &cfg, ids);
                        p.exposures += r.exposures;
                        p.caught += r.caught;
                        p.flagged += r.flagged;
                        p.flagged_ood += r.flagged_ood;
                        p.steps += r.steps;
                    }
                    for steps in clean {
                        let r = replay(steps, &cfg, &HashMap::new());
                        c.flagged += r.flagged;
                        c.steps += r.steps;
                    }
                    rows.push(row(corpus, z, min_targets, excess, p, c));
                    total.0.exposures += p.exposures;
                    total.0.caught += p.caught;
                    total.0.flagged += p.flagged;
                    total.0.flagged_ood += p.flagged_ood;
                    total.1.flagged += c.flagged;
                    total.1.steps += c.steps;
                }
                rows.push(row("all", z, min_targets, excess, total.0, total.1));
            }
        }
    }
    println!(
        "document detector, replayed on {} corpora × {} seeds (batch {}, {} steps, tiny model)",
        runs.len(),
        seeds.len(),
        a.batch,
        a.steps
    );
    println!(
        "| corpus | doc_z | min targets | min excess | exposures | recall | precision | false flags / 1,000 clean steps |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} |",
            r.corpus,
            r.doc_z,
            r.min_targets,
            r.min_excess,
            r.exposures,
            r.recall,
            r.precision,
            r.false_per_1000
        );
    }
    // The detector's cost per step at large batches (simulated span losses).
    println!("\n| samples per step | spans | document detector per step (ms) |");
    println!("|---:|---:|---:|");
    for samples in [64usize, 512, 4096] {
        let mut d = SpikeDetector::new(SpikeConfig::default());
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
                })
                .collect();
            let t0 = Instant::now();
            d.observe(step, 3.5, 1.0, &spans);
            if step >= 20 {
                total += t0.elapsed().as_secs_f64();
            }
        }
        println!(
            "| {samples} | {} | {:.2} |",
            samples * 2,
            total / 20.0 * 1e3
        );
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}

fn row(corpus: &str, z: f64, min_targets: usize, excess: f64, p: Counts, c: Counts) -> Row {
    Row {
        corpus: corpus.to_string(),
        doc_z: z,
        min_targets,
        min_excess: excess,
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
    }
}
