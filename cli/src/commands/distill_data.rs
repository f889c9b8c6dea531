//! `tokenmill distill-data --teacher DIR --dataset DS --top-k K --out OUT`: a teacher's top-K
//! next-token distribution for every token of a dataset, stored beside it for
//! `[train] distill` (docs/sft.md, "Distillation").

use std::path::PathBuf;

use tokenmill_pipelines::distill::{DistillDataConfig, distill_data};
use tokenmill_trainer::train::ComputeDevice;

/// `tokenmill distill-data`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The teacher: a checkpoint, a run directory (its latest checkpoint) or a Hugging
    /// Face-layout DeepseekV3 directory, with the dataset's vocabulary.
    #[arg(long)]
    pub teacher: PathBuf,
    /// The built dataset the student trains on.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Entries kept per token (K ids and log-probabilities: 6·K bytes per token).
    #[arg(long, default_value_t = 8)]
    pub top_k: usize,
    /// The directory for the records (`teacher.json` and a `.teacher.bin` per shard).
    #[arg(long)]
    pub out: PathBuf,
    /// Tokens per teacher window: the student's `seq_len` (default: 2,048, or the teacher's
    /// `max_position_embeddings` if smaller).
    #[arg(long)]
    pub context: Option<usize>,
    /// Windows per teacher forward.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Where the teacher computes: cpu or cuda.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub device: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `tokenmill distill-data`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(t) = a.threads {
        pool = pool.num_threads(t);
    }
    let cfg = DistillDataConfig {
        teacher: a.teacher,
        dataset: a.dataset,
        out: a.out,
        top_k: a.top_k,
        context: a.context,
        batch: a.batch,
        device: if a.device == "cuda" {
            ComputeDevice::Cuda
        } else {
            ComputeDevice::Cpu
        },
    };
    let r = pool.build()?.install(|| distill_data(&cfg))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let gb_per_billion = r.bytes_per_token as f64; // 1e9 tokens × B bytes = B GB
    println!(
        "teacher {} over {}: {} shards ({} kept from an earlier run), {} tokens, {} with entries",
        r.teacher.display(),
        cfg.dataset.display(),
        r.shards,
        r.shards_kept,
        r.tokens,
        r.entries
    );
    println!(
        "top-{} in windows of {} tokens: {} bytes per token ({gb_per_billion:.0} GB per billion tokens), {:.1} MB written to {}",
        r.top_k,
        r.context,
        r.bytes_per_token,
        r.bytes as f64 / 1e6,
        cfg.out.display()
    );
    if r.tokens_run > 0 {
        println!(
            "{} tokens through the teacher in {:.1} s ({:.0} tokens/s)",
            r.tokens_run,
            r.seconds,
            r.tokens_run as f64 / r.seconds
        );
    }
    Ok(())
}
