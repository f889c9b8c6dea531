//! `tokenmill train --config train.toml [--resume]`.

use std::path::PathBuf;

use tokenmill_pipelines::train::{read_config, train};

/// `tokenmill train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub config: PathBuf,
    /// Continue from the newest checkpoint in the run directory.
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `tokenmill train`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = read_config(&a.config)?;
    let out = cfg.train.out.clone();
    let o = train(cfg, a.resume, a.quiet)?;
    println!(
        "trained {} steps: last loss {:.4}, eval loss {}, {:.0} tokens/s; run in {}",
        o.steps,
        o.last_loss,
        o.eval_loss.map_or("-".into(), |l| format!("{l:.4}")),
        o.tokens_per_s,
        out.display()
    );
    Ok(())
}
