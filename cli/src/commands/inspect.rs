//! `tokenmill inspect DATASET`: the manifest, or documents with their provenance and text (by
//! id, position, token or loader sample).

use std::path::PathBuf;

use clap::ValueEnum;
use tokenmill_pipelines::inspect;
use tokenmill_shards::loader::{LoaderConfig, Packing};

/// How the loader packs documents into samples.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PackingArg {
    /// Fixed windows over the concatenated token stream.
    Windows,
    /// Whole documents per sample.
    Documents,
}

impl From<PackingArg> for Packing {
    fn from(p: PackingArg) -> Self {
        match p {
            PackingArg::Windows => Packing::Windows,
            PackingArg::Documents => Packing::Documents,
        }
    }
}

/// `tokenmill inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The dataset directory (the `--out` of `tokenmill build`: manifest.json, shards,
    /// provenance).
    #[arg(value_name = "DATASET")]
    pub dataset: PathBuf,
    /// Show the document(s) with this id (a document the build dropped — dedup, a filter —
    /// is named with the stage and rule that dropped it).
    #[arg(long, conflicts_with_all = ["shard", "token"])]
    pub doc: Option<String>,
    /// Shard ordinal (with --index).
    #[arg(long, requires = "index")]
    pub shard: Option<usize>,
    /// Document index in the shard.
    #[arg(long, requires = "shard")]
    pub index: Option<usize>,
    /// Show the document holding this global token position.
    #[arg(long)]
    pub token: Option<u64>,
    /// Show the documents of sample N of the loader's shuffled stream (with --seed, --epoch,
    /// --seq-len, --packing).
    #[arg(long, conflicts_with_all = ["doc", "shard", "token"])]
    pub sample: Option<u64>,
    /// The loader's shuffle seed (with --sample; `[data] seed` of a training config).
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// The epoch of the loader's stream (with --sample).
    #[arg(long, default_value_t = 0)]
    pub epoch: u64,
    /// Tokens per sample (with --sample; `[data] seq_len` of a training config).
    #[arg(long, default_value_t = 2048)]
    pub seq_len: u64,
    /// How the loader packs documents into samples (with --sample).
    #[arg(long, value_enum, default_value = "windows")]
    pub packing: PackingArg,
    /// Characters of text to print.
    #[arg(long, default_value_t = 2000)]
    pub max_chars: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tokenmill inspect`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let ds = inspect::open(&a.dataset)?;
    let views = if let Some(id) = &a.doc {
        let tok = inspect::dataset_tokenizer(&ds)?;
        inspect::by_id(&ds, &tok, id)?
    } else if let (Some(s), Some(i)) = (a.shard, a.index) {
        let tok = inspect::dataset_tokenizer(&ds)?;
        vec![inspect::by_position(&ds, &tok, s, i)?]
    } else if let Some(n) = a.sample {
        return sample(&a, &ds, n);
    } else if let Some(t) = a.token {
        let tok = inspect::dataset_tokenizer(&ds)?;
        vec![inspect::by_token(&ds, &tok, t)?]
    } else {
        if a.json {
            println!("{}", serde_json::to_string_pretty(ds.manifest())?);
        } else {
            print!("{}", inspect::summary(&ds));
        }
        return Ok(());
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        for v in &views {
            print!("{}", inspect::render(v, a.max_chars));
        }
    }
    Ok(())
}

/// `--sample N`: the documents of one sample of the loader's stream.
fn sample(a: &Args, ds: &tokenmill_shards::Dataset, n: u64) -> anyhow::Result<()> {
    let tok = inspect::dataset_tokenizer(ds)?;
    let cfg = LoaderConfig {
        seq_len: a.seq_len,
        global_batch: 1,
        seed: a.seed,
        packing: a.packing.into(),
        ..Default::default()
    };
    let (id, docs) = inspect::sample_docs(ds, &tok, cfg, a.epoch, n)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "sample_id": id, "documents": docs })
            )?
        );
        return Ok(());
    }
    println!(
        "sample {n} of epoch {} (seed {}, seq_len {}, packing {}) = stored sample {id}, {} document(s):",
        a.epoch,
        a.seed,
        a.seq_len,
        match a.packing {
            PackingArg::Windows => "windows",
            PackingArg::Documents => "documents",
        },
        docs.len()
    );
    for d in &docs {
        let p = &d.provenance;
        let snippet: String = d.text.chars().take(a.max_chars.min(300)).collect();
        println!(
            "- tokens {}..{} of the sample: {} (shard {} doc {}, its tokens {}..{})\n  source {} offset {} url {}\n  {}",
            d.span.start,
            d.span.start + d.span.len,
            p.id,
            p.shard,
            p.index,
            d.span.doc_offset,
            d.span.doc_offset + d.span.len as u64,
            p.source,
            p.offset,
            p.url.as_deref().unwrap_or("-"),
            tokenmill_pipelines::trace::one_line(&snippet, a.max_chars.min(300))
        );
    }
    Ok(())
}
