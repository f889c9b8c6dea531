//! `tokenmill export RUN [--step N] --out DIR [--dtype f32|bf16] [--shard-size 5GB]`: a run's
//! checkpoint as a Hugging Face model directory (`docs/hf.md`).

use std::path::PathBuf;

use tokenmill_pipelines::export::{ExportConfig, export, parse_size};
use tokenmill_trainer::hf_export::WeightDtype;

/// `tokenmill export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory (or one of its checkpoints).
    pub run: PathBuf,
    /// The checkpoint's step (default: the latest).
    #[arg(long)]
    pub step: Option<u64>,
    /// The directory to write (new, or empty).
    #[arg(long)]
    pub out: PathBuf,
    /// The weights' number format: f32 or bf16.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: WeightDtype,
    /// Shard the weights once they pass this size (transformers' units: 5GB = 5·10⁹ bytes;
    /// KiB, MiB, GiB for powers of 1024).
    #[arg(long, default_value = "5GB")]
    pub shard_size: String,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_dtype(s: &str) -> Result<WeightDtype, String> {
    match s {
        "f32" | "fp32" | "float32" => Ok(WeightDtype::F32),
        "bf16" | "bfloat16" => Ok(WeightDtype::Bf16),
        _ => Err(format!("{s:?}: expected f32 or bf16")),
    }
}

/// Runs `tokenmill export`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = ExportConfig {
        step: a.step,
        out: a.out.clone(),
        dtype: a.dtype,
        shard_size: parse_size(&a.shard_size)?,
    };
    let o = export(&a.run, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&o)?);
        return Ok(());
    }
    println!(
        "exported {} → {} ({} parameters, {}, {:.1} MB)",
        o.checkpoint.display(),
        o.out.display(),
        o.parameters,
        o.weights.dtype.torch_name(),
        o.weights.total_size as f64 / 1e6
    );
    for f in &o.weights.files {
        println!(
            "  {:<36} {:>6} tensors {:>12.1} MB",
            f.name,
            f.tensors,
            f.bytes as f64 / 1e6
        );
    }
    if o.weights.sharded {
        println!("  {}", tokenmill_trainer::hf::MODEL_INDEX);
    }
    match &o.tokenizer {
        Some(t) => println!("  tokenizer.json (from {})", t.display()),
        None => println!("  no tokenizer.json found for the run: copy the model's beside it"),
    }
    Ok(())
}
