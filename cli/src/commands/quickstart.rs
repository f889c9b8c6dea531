//! `tokenmill quickstart`: generate a web-like corpus, train a BPE tokenizer on it, build a
//! dataset, verify and inspect it — with no file from outside the repository.

use std::path::{Path, PathBuf};

use tokenmill_pipelines::build::build;
use tokenmill_pipelines::config::{
    BuildConfig, InputConfig, OutputConfig, RunConfig, TokenizerConfig,
};
use tokenmill_pipelines::{Error, Result, inspect};
use tokenmill_shards::bpe::{BpeTrainConfig, train_bpe};
use tokenmill_trainer::train::LogKind;

use corpus::write_corpus;

pub mod corpus;

/// `tokenmill quickstart`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to put the corpus, tokenizer, datasets and run (the corpus, datasets and run
    /// there are replaced).
    #[arg(long, default_value = "tokenmill-quickstart")]
    pub out: PathBuf,
    /// Documents of the generated corpus (articles, near-duplicates, copies, boilerplate,
    /// junk; one poisoned document is added).
    #[arg(long, default_value_t = 3000)]
    pub docs: usize,
    /// JSONL files the corpus is split into (one build task each).
    #[arg(long, default_value_t = 4)]
    pub files: usize,
    /// Vocabulary size asked of the BPE trainer (it stops earlier when the corpus has fewer
    /// merges).
    #[arg(long, default_value_t = 4096)]
    pub vocab_size: usize,
    /// Seed of the corpus generator (the same seed gives the same corpus and dataset).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// No progress bars (the steps' results are still printed).
    #[arg(long)]
    pub quiet: bool,
    /// Steps of the tiny model trained at the end (0 = no training).
    #[arg(long, default_value_t = 1000)]
    pub train_steps: u64,
}

/// Runs `tokenmill quickstart`.
pub fn run(a: Args) -> anyhow::Result<()> {
    quickstart(&QuickstartConfig {
        out: a.out,
        docs: a.docs,
        files: a.files,
        vocab_size: a.vocab_size,
        seed: a.seed,
        threads: a.threads,
        quiet: a.quiet,
        train_steps: a.train_steps,
    })?;
    Ok(())
}

/// Settings of the quickstart.
#[derive(Debug, Clone)]
pub struct QuickstartConfig {
    pub out: PathBuf,
    pub docs: usize,
    pub files: usize,
    pub vocab_size: usize,
    pub seed: u64,
    pub threads: usize,
    pub quiet: bool,
    /// Training steps of the tiny model at the end (0 = skip training).
    pub train_steps: u64,
}

/// Runs the quickstart, printing each step to stdout; returns the dataset directory.
pub fn quickstart(o: &QuickstartConfig) -> Result<PathBuf> {
    let corpus = o.out.join("corpus");
    let tokenizer = o.out.join("tokenizer.json");
    let dataset = o.out.join("dataset");
    for d in [&corpus, &dataset] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
    }
    println!(
        "[1/6] generating {} web-like documents (one of them poisoned: {}) in {} files → {}",
        o.docs,
        corpus::POISON_ID,
        o.files,
        corpus.display()
    );
    let files = write_corpus(&corpus, o.docs, o.files, o.seed, true)?;

    println!(
        "[2/6] training a byte-level BPE tokenizer (vocab {}) → {}",
        o.vocab_size,
        tokenizer.display()
    );
    let texts = tokenmill_ingest::read_texts(&files, &Default::default())?;
    let opts = BpeTrainConfig {
        vocab_size: o.vocab_size,
        ..Default::default()
    };
    let got = train_bpe(texts.iter(), &opts, &tokenizer)?;
    println!("      vocabulary: {got} tokens");

    println!(
        "[3/6] building the dataset (with exact + MinHash dedup) → {}",
        dataset.display()
    );
    let cfg = BuildConfig {
        sft: None,
        input: InputConfig {
            paths: vec![glob_of(&corpus)],
            ..Default::default()
        },
        tokenizer: TokenizerConfig {
            path: tokenizer.clone(),
            ..Default::default()
        },
        output: OutputConfig {
            dir: dataset.clone(),
            shard_bytes: 256 << 10,
            keep_excluded_text: false,
            stage: None,
        },
        // The corpus has near-duplicates and copies on purpose: dedup catches them.
        dedup: tokenmill_pipelines::config::DedupStageConfig {
            enabled: true,
            ..Default::default()
        },
        extract: Default::default(),
        filters: None,
        sql: Default::default(),
        run: RunConfig {
            threads: o.threads,
            quiet: o.quiet,
        },
    };
    let outcome = build(&cfg)?;
    print!("{}", outcome.stats.table());

    println!("[4/6] verifying and inspecting {}", dataset.display());
    let report = tokenmill_shards::verify(&dataset)?;
    println!(
        "      verify: {} shards, {} documents, {} tokens, {} bytes hashed: OK",
        report.shards, report.documents, report.tokens, report.bytes_hashed
    );
    let ds = inspect::open(&dataset)?;
    print!("{}", inspect::summary(&ds));
    let tok = inspect::dataset_tokenizer(&ds)?;
    let middle = ds.manifest().tokens / 2;
    println!("\nthe document holding token {middle} of the dataset:");
    print!(
        "{}",
        inspect::render(&inspect::by_token(&ds, &tok, middle)?, 400)
    );
    web_recipe(o, &tokenizer)?;
    if o.train_steps > 0 {
        train_tiny(o, &tokenizer, &dataset)?;
    }
    println!(
        "\nnext: tokenmill inspect {} --doc qs-000001",
        dataset.display()
    );
    if o.train_steps > 0 {
        let run = o.out.join("run");
        println!(
            "      tokenmill trace {} --doc {}",
            run.display(),
            corpus::POISON_ID
        );
        println!("      tokenmill report {}", run.display());
    }
    println!(
        "      tokenmill inspect {} --sample 0 --seq-len 512",
        dataset.display()
    );
    println!(
        "      tokenmill sql {} \"SELECT stage, count(*) FROM dedup_removed GROUP BY stage\"",
        dataset.display()
    );
    Ok(dataset)
}

/// Step 5: a generated crawl (WARC) through the FineWeb recipe — extraction, language id,
/// Gopher, C4, FineWeb filters — into a dataset, with the funnel.
fn web_recipe(o: &QuickstartConfig, tokenizer: &Path) -> Result<()> {
    let crawl = o.out.join("crawl");
    let web = o.out.join("dataset-web");
    for d in [&crawl, &web] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
    }
    let warc = corpus::write_warc(&crawl, 200, o.seed.wrapping_add(7))?;
    println!(
        "[5/6] a crawl of 200 HTML pages (+ a 404, a redirect, an image, binary bytes served as HTML, an undeclared Latin-1 page) through the FineWeb recipe → {}",
        web.display()
    );
    let recipe = include_str!("../../../pipelines/examples/web.toml");
    let mut cfg: BuildConfig =
        toml::from_str(recipe).map_err(|e| Error::Config(format!("web.toml: {e}")))?;
    cfg.input.paths = vec![warc.display().to_string()];
    cfg.tokenizer.path = tokenizer.to_path_buf();
    cfg.output.dir = web.clone();
    cfg.output.shard_bytes = 256 << 10;
    cfg.run = RunConfig {
        threads: o.threads,
        quiet: true,
    };
    let out = build(&cfg)?;
    let s = &out.stats;
    println!(
        "      {} records read, {} documents written; skipped: {}",
        s.documents_read,
        s.documents_written,
        s.documents_skipped
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    print!(
        "{}",
        s.funnel
            .with_reading(s.documents_read, s.input_bytes, &s.documents_skipped)
            .table()
    );
    println!(
        "      the funnel as a chart: {}",
        web.join("funnel.svg").display()
    );
    println!(
        "      every drop with its rule and value: tokenmill sql {} \"SELECT stage, rule, count(*) FROM excluded GROUP BY 1, 2\"",
        web.display()
    );
    Ok(())
}

/// Step 6: a held-out dataset from a freshly generated corpus, then a tiny DeepSeek-V3 model
/// (MLA, DeepSeekMoE, MTP) trained on the dataset, evaluated on the held-out one.
fn train_tiny(o: &QuickstartConfig, tokenizer: &Path, dataset: &Path) -> Result<()> {
    let eval_corpus = o.out.join("corpus-eval");
    let eval = o.out.join("dataset-eval");
    let run = o.out.join("run");
    for d in [&eval_corpus, &eval, &run] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
    }
    write_corpus(&eval_corpus, 300, 1, o.seed.wrapping_add(1_000_003), false)?;
    let cfg = BuildConfig {
        sft: None,
        input: InputConfig {
            paths: vec![glob_of(&eval_corpus)],
            ..Default::default()
        },
        tokenizer: TokenizerConfig {
            path: tokenizer.to_path_buf(),
            ..Default::default()
        },
        output: OutputConfig {
            dir: eval.clone(),
            shard_bytes: 256 << 10,
            keep_excluded_text: false,
            stage: None,
        },
        dedup: Default::default(),
        extract: Default::default(),
        filters: None,
        sql: Default::default(),
        run: RunConfig {
            threads: o.threads,
            quiet: true,
        },
    };
    build(&cfg)?;
    let vocab = tokenmill_shards::Dataset::open(dataset)?
        .manifest()
        .tokenizer
        .vocab_size;
    let toml = format!(
        r#"# written by `tokenmill quickstart`; rerun with `tokenmill train --config {path}`
[model]
preset = "tiny"
vocab_size = {vocab}

[data]
train = "dataset"
eval = "dataset-eval"
seq_len = 128
batch = 8

[lr]
peak = 3e-3
min = 3e-4
warmup = 30
constant = {constant}
decay = {decay}

[train]
out = "run"
steps = {steps}
eval_every = {eval_every}
checkpoint_every = {steps}
threads = {threads}
"#,
        path = o.out.join("train.toml").display(),
        constant = o.train_steps / 2,
        decay = o.train_steps - o.train_steps / 2,
        steps = o.train_steps,
        eval_every = (o.train_steps / 4).max(1),
        threads = o.threads,
    );
    let toml_path = o.out.join("train.toml");
    std::fs::write(&toml_path, toml).map_err(|e| Error::io(&toml_path, e))?;
    println!(
        "[6/6] training a tiny DeepSeek-V3 model (MLA + DeepSeekMoE + MTP) for {} steps → {}",
        o.train_steps,
        run.display()
    );
    let started = std::time::Instant::now();
    let out = tokenmill_pipelines::train::train(
        tokenmill_pipelines::train::read_config(&toml_path)?,
        false,
        o.quiet,
    )?;
    let log = tokenmill_pipelines::plot::read_log(&run)?;
    let first = log
        .iter()
        .find(|l| l.kind == LogKind::Train)
        .map_or(f64::NAN, |l| l.main_loss);
    let last = log
        .iter()
        .rev()
        .find(|l| l.kind == LogKind::Train)
        .map_or(f64::NAN, |l| l.main_loss);
    let svg =
        tokenmill_pipelines::plot::svg(&[("run".into(), log)], "quickstart: tiny DeepSeek-V3");
    std::fs::write(run.join("loss.svg"), svg).map_err(|e| Error::io(&run, e))?;
    println!(
        "      next-token loss {first:.3} → {last:.3} (ln V = {:.3}); held-out {}; {:.0} tokens/s; {:.0} s",
        (vocab as f64).ln(),
        out.eval_loss.map_or("-".into(), |l| format!("{l:.3}")),
        out.tokens_per_s,
        started.elapsed().as_secs_f64()
    );
    println!(
        "      curves: {}; weights (Hugging Face layout): {}",
        run.join("loss.svg").display(),
        run.join("checkpoints").display()
    );
    // The corpus carries a poisoned document: show the first spike it caused, traced.
    let (rep, html) = tokenmill_pipelines::report::report(&run, 3)?;
    let page = run.join("report.html");
    std::fs::write(&page, html).map_err(|e| Error::io(&page, e))?;
    // The spikes grouped by the document that added most to each, most spikes first.
    let led: Vec<(&str, usize)> = rep
        .documents
        .iter()
        .filter_map(|d| d.id.as_deref().map(|id| (id, d.spikes.len())))
        .collect();
    if rep.spikes.is_empty() {
        println!("      no loss spike detected");
    } else {
        println!(
            "      {} loss spikes, led by {} documents (most: {}); the generated corpus has junk \
             pages of random characters besides the poisoned document",
            rep.spikes.len(),
            led.len(),
            led.iter()
                .take(4)
                .map(|(d, n)| format!("{d} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let poisoned = rep.spikes.iter().find(|t| {
            t.top_documents(1)
                .first()
                .is_some_and(|d| d.id == corpus::POISON_ID)
        });
        let t = poisoned.unwrap_or(&rep.spikes[0]);
        println!(
            "      one of them, traced (tokenmill trace {} --step {}):",
            run.display(),
            t.step
        );
        for l in tokenmill_pipelines::trace::render(t, 1).lines() {
            println!("        {l}");
        }
    }
    println!("      report: {}", page.display());
    Ok(())
}

fn glob_of(dir: &Path) -> String {
    format!("{}/*.jsonl", dir.display())
}
