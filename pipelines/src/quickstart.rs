//! `tokenmill quickstart`: generate a web-like corpus, train a BPE tokenizer on it, build a
//! dataset, verify and inspect it — with no file from outside the repository.

use std::path::{Path, PathBuf};

use tokenmill_shards::bpe::{BpeTrainOptions, train_bpe};

use crate::bench::load_texts;
use crate::build::build;
use crate::config::{BuildConfig, InputConfig, OutputConfig, RunConfig, TokenizerConfig};
use crate::corpus::write_corpus;
use crate::error::{Error, Result};
use crate::inspect;

/// Settings of the quickstart.
#[derive(Debug, Clone)]
pub struct QuickstartOptions {
    pub out: PathBuf,
    pub docs: usize,
    pub files: usize,
    pub vocab_size: usize,
    pub seed: u64,
    pub threads: usize,
    pub quiet: bool,
}

/// Runs the quickstart, printing each step to stdout; returns the dataset directory.
pub fn quickstart(o: &QuickstartOptions) -> Result<PathBuf> {
    let corpus = o.out.join("corpus");
    let tokenizer = o.out.join("tokenizer.json");
    let dataset = o.out.join("dataset");
    for d in [&corpus, &dataset] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
    }
    println!(
        "[1/4] generating {} web-like documents in {} files → {}",
        o.docs,
        o.files,
        corpus.display()
    );
    let files = write_corpus(&corpus, o.docs, o.files, o.seed)?;

    println!(
        "[2/4] training a byte-level BPE tokenizer (vocab {}) → {}",
        o.vocab_size,
        tokenizer.display()
    );
    let texts = load_texts(&files)?;
    let opts = BpeTrainOptions {
        vocab_size: o.vocab_size,
        ..Default::default()
    };
    let got = train_bpe(texts.iter(), &opts, &tokenizer)?;
    println!("      vocabulary: {got} tokens");

    println!(
        "[3/4] building the dataset (with exact + MinHash dedup) → {}",
        dataset.display()
    );
    let cfg = BuildConfig {
        input: InputConfig {
            paths: vec![glob_of(&corpus)],
            read: Default::default(),
        },
        tokenizer: TokenizerConfig {
            path: tokenizer.clone(),
            ..Default::default()
        },
        output: OutputConfig {
            dir: dataset.clone(),
            shard_bytes: 256 << 10,
        },
        // The corpus has near-duplicates and copies on purpose: dedup catches them.
        dedup: crate::config::DedupSection {
            enabled: true,
            ..Default::default()
        },
        run: RunConfig {
            threads: o.threads,
            quiet: o.quiet,
        },
    };
    let outcome = build(&cfg)?;
    print!("{}", outcome.stats.table());

    println!("[4/4] verifying and inspecting {}", dataset.display());
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
    println!(
        "\nnext: tokenmill inspect {} --doc qs-000001",
        dataset.display()
    );
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

fn glob_of(dir: &Path) -> String {
    format!("{}/*.jsonl", dir.display())
}
