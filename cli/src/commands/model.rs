//! `tokenmill model info` / `model init`: a configuration's sizes, FLOPs and memory; a fresh
//! model in Hugging Face layout.

use std::path::PathBuf;

use tokenmill_trainer::cost::{flops_per_token, memory_model};
use tokenmill_trainer::{Model, ModelConfig};

/// `tokenmill model`.
#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Parameter counts, FLOPs per token and memory of a preset or an HF config.json.
    Info {
        /// tiny, small, 1b, deepseek-v3, deepseek-v2-lite
        #[arg(long, conflicts_with = "config")]
        preset: Option<String>,
        /// An HF config.json instead of a preset.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Sequence length for the attention FLOPs and activation memory.
        #[arg(long, default_value_t = 4096)]
        seq_len: u64,
    },
    /// Write a freshly initialised model in Hugging Face layout (config.json + safetensors).
    Init {
        /// The preset to initialise (tiny, small, 1b, deepseek-v3, deepseek-v2-lite).
        #[arg(long, default_value = "tiny")]
        preset: String,
        /// Seed of the initialisation.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
        /// Only `config.json` (no weights): what a peer that initialises its own model reads.
        #[arg(long)]
        config_only: bool,
    },
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs `tokenmill model`.
pub fn run(c: Cmd) -> anyhow::Result<()> {
    match c {
        Cmd::Info {
            preset,
            config,
            seq_len,
        } => {
            let cfg = match config {
                Some(c) => tokenmill_trainer::hf::read_config(&c)?,
                None => ModelConfig::preset(preset.as_deref().unwrap_or("tiny"))?,
            };
            let p = cfg.param_counts();
            let (per_param, per_tok) = memory_model(&cfg);
            println!("{:<34} {:>18}", "parameters (main model)", group(p.total));
            println!("{:<34} {:>18}", "activated per token", group(p.activated));
            println!("{:<34} {:>18}", "MTP modules", group(p.mtp));
            println!(
                "{:<34} {:>18.3e}",
                format!("train FLOPs/token (seq {seq_len})"),
                flops_per_token(&cfg, seq_len)
            );
            println!("{:<34} {:>18}", "state bytes/param (fp32+AdamW)", per_param);
            println!("{:<34} {:>18.0}", "saved activations bytes/token", per_tok);
        }
        Cmd::Init {
            preset,
            seed,
            out,
            config_only,
        } => {
            if config_only {
                let cfg = ModelConfig::preset(&preset)?;
                cfg.validate()?;
                tokenmill_trainer::hf::save_config(&out, &cfg)?;
                println!("wrote {}/config.json", out.display());
                return Ok(());
            }
            let m = Model::new(ModelConfig::preset(&preset)?)?;
            tokenmill_trainer::hf::save(&out, &m, &m.init::<f32>(seed))?;
            println!("wrote {} ({} parameters)", out.display(), m.layout.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_thousands() {
        assert_eq!(super::group(0), "0");
        assert_eq!(super::group(999), "999");
        assert_eq!(super::group(1_234_567), "1,234,567");
    }
}
