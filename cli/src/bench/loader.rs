//! `tokenmill bench loader`: what the loader costs — time to open, resident memory, and tokens
//! served per second on one core against a raw memory copy of the same bytes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tokenmill_shards::loader::{Loader, LoaderConfig, Shuffle, Span};
use tokenmill_shards::{Dataset, TokenDtype};

use anyhow::Result;
use tokenmill_pipelines::stats::{peak_rss_bytes, rss_bytes};

use crate::commands::inspect::PackingArg;

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct LoaderBench {
    pub dataset_tokens: u64,
    pub shards: usize,
    pub samples_per_epoch: u64,
    pub open_seconds: f64,
    pub rss_after_open_bytes: Option<u64>,
    pub batches: u64,
    pub tokens_served: u64,
    pub serve_seconds: f64,
    pub tokens_per_s: f64,
    /// Bytes of the `.bin` behind the served tokens, per second.
    pub source_bytes_per_s: f64,
    /// `copy_from_slice` of exactly those byte ranges, per second (best of 3, like serving).
    pub memcpy_bytes_per_s: f64,
    pub ratio_to_memcpy: f64,
    pub peak_rss_bytes: Option<u64>,
}

/// Opens `dir` with `cfg` and serves `batches` batches on this thread.
pub fn bench_loader(dir: &Path, cfg: LoaderConfig, batches: u64) -> Result<LoaderBench> {
    let t0 = Instant::now();
    let mut loader = Loader::open(dir, cfg)?;
    let open_seconds = t0.elapsed().as_secs_f64();
    let rss_after_open = rss_bytes();
    let ds = Dataset::open(dir)?;
    let dtype_size = ds.manifest().dtype.size() as u64;
    let mut spans: Vec<Span> = Vec::new();
    let mut tokens_served = 0u64;
    let mut b = tokenmill_shards::loader::Batch {
        step: 0,
        samples: Vec::new(),
    };
    // A warm-up (buffers, page mappings), then the best of 3 timed runs, as for the copy below.
    for _ in 0..batches.div_ceil(10) {
        loader.next_batch_into(&mut b)?;
    }
    let mut serve_seconds = f64::INFINITY;
    for _ in 0..3 {
        spans.clear();
        tokens_served = 0;
        let t1 = Instant::now();
        for _ in 0..batches {
            loader.next_batch_into(&mut b)?;
            for s in &b.samples {
                tokens_served += s.tokens.len() as u64;
                spans.extend_from_slice(&s.spans);
            }
            std::hint::black_box(&b);
        }
        serve_seconds = serve_seconds.min(t1.elapsed().as_secs_f64());
    }

    // The same bytes, copied raw.
    let shards: Vec<_> = (0..ds.manifest().shards.len())
        .map(|s| ds.shard(s))
        .collect::<std::result::Result<_, _>>()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut best = f64::INFINITY;
    let mut bytes = 0u64;
    for _ in 0..3 {
        bytes = 0;
        let t = Instant::now();
        let mut at = 0usize;
        for sp in &spans {
            let sh = &shards[sp.shard as usize];
            let start = (sh.index().token_start(sp.doc as usize) + sp.doc_offset) * dtype_size;
            let len = sp.len as u64 * dtype_size;
            let src = sh.bin_bytes(start as usize, (start + len) as usize);
            if at + src.len() > buf.len() {
                at = 0;
            }
            buf[at..at + src.len()].copy_from_slice(src);
            at += src.len();
            bytes += len;
        }
        std::hint::black_box(&buf);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let memcpy = bytes as f64 / best;
    let source = bytes as f64 / serve_seconds;
    Ok(LoaderBench {
        dataset_tokens: ds.manifest().tokens,
        shards: ds.manifest().shards.len(),
        samples_per_epoch: loader.epoch_len(),
        open_seconds,
        rss_after_open_bytes: rss_after_open,
        batches,
        tokens_served,
        serve_seconds,
        tokens_per_s: tokens_served as f64 / serve_seconds,
        source_bytes_per_s: source,
        memcpy_bytes_per_s: memcpy,
        ratio_to_memcpy: source / memcpy,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Human table of a run.
pub fn table(name: &str, b: &LoaderBench, dtype: TokenDtype) -> String {
    let mib = |x: Option<u64>| {
        x.map(|v| format!("{:.1} MiB", v as f64 / (1 << 20) as f64))
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "| dataset | tokens | shards | samples/epoch | open s | RSS after open | tokens/s served | source MB/s | memcpy MB/s | ratio | peak RSS |\n|---|---|---|---|---|---|---|---|---|---|---|\n| {name} ({dtype:?}) | {} | {} | {} | {:.3} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {} |\n",
        b.dataset_tokens,
        b.shards,
        b.samples_per_epoch,
        b.open_seconds,
        mib(b.rss_after_open_bytes),
        b.tokens_per_s,
        b.source_bytes_per_s / 1e6,
        b.memcpy_bytes_per_s / 1e6,
        b.ratio_to_memcpy,
        mib(b.peak_rss_bytes),
    )
}

/// The loader's shuffle, as a flag.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ShuffleArg {
    /// In stored order.
    None,
    /// A full permutation of the samples of an epoch.
    Full,
    /// Blocks shuffled within a window.
    Local,
}

/// `tokenmill bench loader`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A dataset directory; or none, with --simulate-shards, for a sparse simulated one.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Shards of a simulated sparse dataset (in a temporary directory).
    #[arg(long, default_value_t = 10_000)]
    pub simulate_shards: usize,
    /// Total tokens of the simulated dataset.
    #[arg(long, default_value_t = 14_800_000_000_000)]
    pub simulate_tokens: u64,
    /// Tokens per sample.
    #[arg(long, default_value_t = 4096)]
    pub seq_len: u64,
    /// Samples per batch.
    #[arg(long, default_value_t = 8)]
    pub global_batch: u64,
    /// Batches served and timed.
    #[arg(long, default_value_t = 200)]
    pub batches: u64,
    /// How documents become samples.
    #[arg(long, value_enum, default_value = "windows")]
    pub packing: PackingArg,
    /// Sample order within an epoch.
    #[arg(long, value_enum, default_value = "full")]
    pub shuffle: ShuffleArg,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tokenmill bench loader`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let (dir, name) = match &a.dataset {
        Some(d) => (d.clone(), d.display().to_string()),
        None => {
            let tmp = std::env::temp_dir().join(format!("tokenmill-sim-{}", std::process::id()));
            let per = a.simulate_tokens / a.simulate_shards as u64;
            let docs = per.div_ceil(1 << 30).max(1);
            tokenmill_shards::loader::simulate::write_sparse_dataset(
                &tmp,
                a.simulate_shards,
                per,
                docs,
                TokenDtype::Uint16,
            )?;
            (
                tmp,
                format!("simulated, sparse, {} shards", a.simulate_shards),
            )
        }
    };
    let cfg = LoaderConfig {
        seq_len: a.seq_len,
        global_batch: a.global_batch,
        packing: a.packing.into(),
        shuffle: match a.shuffle {
            ShuffleArg::None => Shuffle::None,
            ShuffleArg::Full => Shuffle::Full,
            ShuffleArg::Local => Shuffle::Local {
                block: 256,
                window: 16,
            },
        },
        ..Default::default()
    };
    let r = bench_loader(&dir, cfg, a.batches);
    let dtype = Dataset::open(&dir)
        .map(|d| d.manifest().dtype)
        .unwrap_or(TokenDtype::Uint16);
    if a.dataset.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let r = r?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", table(&name, &r, dtype));
    }
    Ok(())
}
