//! `tokenmill bench tokenize`: the tokenizer stage's fast encoder against HF `tokenizers` in
//! the same process (the Rust crate), Python `tokenizers` (`encode_batch`,
//! `encode_batch_fast`) and `tiktoken` (for GPT-2-form tokenizers, its ranks built from the
//! same `tokenizer.json`), on the same texts and the same thread count, side by side.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokenmill_shards::{TextTokenizer, TokenizeConfig, TokenizerEngine};

use anyhow::Result;
use anyhow::bail;
use tokenmill_pipelines::Error;

/// One row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRow {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub threads: usize,
    pub docs: u64,
    pub bytes: u64,
    pub tokens: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub tokens_per_s: f64,
}

/// Times our tokenizer stage with `engine`: best of `repeat` runs after one warm-up. Returns
/// the row and the ids.
pub fn bench_ours(
    tokenizer: &Path,
    texts: &[String],
    threads: usize,
    repeat: usize,
    engine: TokenizerEngine,
) -> Result<(BenchRow, Vec<Vec<u32>>)> {
    // A fresh tokenizer for every run: the fast encoder's memo of pieces starts empty each
    // time (it is kept per encoder), so a run gains only from the words its own texts repeat,
    // as a build over new text does.
    let load = || {
        TextTokenizer::load(
            tokenizer,
            &TokenizeConfig {
                engine,
                ..Default::default()
            },
        )
    };
    let mut tok = load()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    let mut best = f64::INFINITY;
    let mut tokens = 0u64;
    let mut all = Vec::new();
    for i in 0..=repeat {
        tok = load()?;
        let t0 = Instant::now();
        let ids = pool.install(|| tok.encode_batch(texts))?;
        let dt = t0.elapsed().as_secs_f64();
        tokens = ids.iter().map(|v| v.len() as u64).sum();
        if i > 0 {
            best = best.min(dt);
        }
        all = ids;
    }
    let name = match tok.identity().engine.as_str() {
        "fast" => "tokenmill fast encoder",
        _ => "tokenizers crate in-process (rayon)",
    };
    let row = BenchRow {
        implementation: name.into(),
        threads,
        docs: texts.len() as u64,
        bytes,
        tokens,
        seconds: best,
        mb_per_s: bytes as f64 / 1e6 / best,
        tokens_per_s: tokens as f64 / best,
    };
    Ok((row, all))
}

/// Runs `tests/peers/bench_tokenize.py` with `python` on the same texts.
pub fn bench_python(
    python: &Path,
    script: &Path,
    tokenizer: &Path,
    texts: &[String],
    threads: usize,
    repeat: usize,
) -> Result<Vec<BenchRow>> {
    let dir = tempfile_dir()?;
    let jsonl = dir.join("texts.jsonl");
    {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&jsonl).map_err(|e| Error::io(&jsonl, e))?,
        );
        for t in texts {
            serde_json::to_writer(&mut f, &serde_json::json!({ "text": t })).expect("json");
            f.write_all(b"\n").map_err(|e| Error::io(&jsonl, e))?;
        }
    }
    let out = Command::new(python)
        .arg(script)
        .arg("--tokenizer")
        .arg(tokenizer)
        .arg("--texts")
        .arg(&jsonl)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--repeat")
        .arg(repeat.to_string())
        .arg("--json")
        .output()
        .map_err(|e| Error::io(python, e))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        anyhow::bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut rows = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Ok(r) = serde_json::from_str::<BenchRow>(line.trim()) {
            rows.push(r);
        }
    }
    if rows.is_empty() {
        anyhow::bail!(
            "{} printed no result: {}",
            script.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(rows)
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("tokenmill-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    Ok(d)
}

/// The table, with each row's throughput as a ratio to HF `tokenizers` in-process (the Rust
/// crate), or to the first Python row without it.
pub fn table(rows: &[BenchRow]) -> String {
    let base = rows
        .iter()
        .find(|r| r.implementation.starts_with("tokenizers crate"))
        .or_else(|| rows.iter().find(|r| r.implementation.starts_with("python")))
        .map(|r| r.mb_per_s);
    let mut s = format!(
        "| {:<38} | {:>7} | {:>6} | {:>10} | {:>10} | {:>8} | {:>8} | {:>11} | {:>11} | {:>8} |\n|{}|\n",
        "implementation",
        "threads",
        "docs",
        "MB",
        "tokens",
        "seconds",
        "MB/s",
        "tokens/s",
        "MB/s/core",
        "ratio",
        "---|".repeat(10).trim_end_matches('|')
    );
    for r in rows {
        let ratio = base
            .map(|b| format!("{:.2}x", r.mb_per_s / b))
            .unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "| {:<38} | {:>7} | {:>6} | {:>10.2} | {:>10} | {:>8.3} | {:>8.2} | {:>11.0} | {:>11.2} | {:>8} |\n",
            r.implementation,
            r.threads,
            r.docs,
            r.bytes as f64 / 1e6,
            r.tokens,
            r.seconds,
            r.mb_per_s,
            r.tokens_per_s,
            r.mb_per_s / r.threads as f64,
            ratio
        ));
    }
    s
}

/// `tokenmill bench tokenize`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input files or globs whose documents are tokenized.
    pub inputs: Vec<PathBuf>,
    /// The tokenizer.json to time.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Threads for each implementation.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed runs per implementation (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Python with `tokenizers` installed (default: .venv-peers/bin/python if present).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The Python peer script (HF tokenizers, tiktoken).
    #[arg(long, default_value = "tests/peers/bench_tokenize.py")]
    pub script: PathBuf,
    /// Print the rows as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tokenmill bench tokenize`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if a.inputs.is_empty() {
        bail!("give input files with the texts to tokenize");
    }
    let texts = tokenmill_ingest::read_texts(&a.inputs, &Default::default())?;
    let mut rows = Vec::new();
    match crate::peers::python(a.python, Path::new("")) {
        Some(py) => rows.extend(bench_python(
            &py,
            &a.script,
            &a.tokenizer,
            &texts,
            a.threads,
            a.repeat,
        )?),
        None => eprintln!(
            "note: no Python with `tokenizers` (give --python); the peer column is missing"
        ),
    }
    let (hf, hf_ids) = bench_ours(
        &a.tokenizer,
        &texts,
        a.threads,
        a.repeat,
        TokenizerEngine::Hf,
    )?;
    rows.push(hf);
    match bench_ours(
        &a.tokenizer,
        &texts,
        a.threads,
        a.repeat,
        TokenizerEngine::Fast,
    ) {
        Ok((fast, fast_ids)) => {
            if fast_ids != hf_ids {
                bail!("the fast encoder's ids differ from HF tokenizers' on these texts");
            }
            rows.push(fast);
        }
        Err(e) => eprintln!("note: {e:#}; no fast-encoder row"),
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
        let counts: Vec<u64> = rows.iter().map(|r| r.tokens).collect();
        println!(
            "ids of the fast encoder and the tokenizers crate identical; token counts equal across implementations: {}",
            counts.windows(2).all(|w| w[0] == w[1])
        );
        let speed = |prefix: &str| {
            rows.iter()
                .find(|r| r.implementation.starts_with(prefix))
                .map(|r| r.mb_per_s)
        };
        if let Some(f) = speed("tokenmill fast") {
            for (what, prefix) in [
                ("the tokenizers crate in-process", "tokenizers crate"),
                ("Python encode_batch_fast", "python-tokenizers-fast"),
                ("tiktoken", "python-tiktoken"),
            ] {
                if let Some(b) = speed(prefix) {
                    println!("fast encoder vs {what}: {:.2}x", f / b);
                }
            }
        }
    }
    Ok(())
}
