//! `tokenmill verify DATASET`: every checksum recomputed, every index revalidated.

use std::path::PathBuf;

use anyhow::Context;

/// `tokenmill verify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The dataset directory (holding manifest.json).
    pub dataset: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tokenmill verify`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let r = tokenmill_shards::verify(&a.dataset)
        .with_context(|| format!("verifying {}", a.dataset.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "OK: {} shards, {} documents, {} tokens, {} bytes hashed",
            r.shards, r.documents, r.tokens, r.bytes_hashed
        );
    }
    Ok(())
}
