//! `tokenmill generate --model DIR --prompt "…"`: text from a model, decoded with MLA's
//! compressed key-value cache (`docs/hf.md`).

use std::path::PathBuf;

use anyhow::bail;
use tokenmill_pipelines::eval::EvalModel;
use tokenmill_pipelines::generate::{GenerateConfig, generate};
use tokenmill_shards::{TextTokenizer, TokenizeConfig};
use tokenmill_trainer::train::ComputeDevice;

/// `tokenmill generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A checkpoint, a run directory (its latest checkpoint) or a Hugging Face-layout
    /// DeepseekV3 directory.
    #[arg(long)]
    pub model: PathBuf,
    /// The text to continue.
    #[arg(long)]
    pub prompt: String,
    /// The tokenizer: a tokenizer.json, or a dataset directory holding one (default:
    /// MODEL/tokenizer.json).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// New tokens at most.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// 0: greedy (the most likely token); else sample at this temperature.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Sample from the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep going after the end-of-text token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print tokens, text and timings as JSON.
    #[arg(long)]
    pub json: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `tokenmill generate`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(t) = a.threads {
        pool = pool.num_threads(t);
    }
    pool.build()?.install(|| run_in_pool(a))
}

fn run_in_pool(a: Args) -> anyhow::Result<()> {
    let m = EvalModel::load(&a.model, ComputeDevice::Cpu)?;
    let tok_path = match &a.tokenizer {
        Some(p) if p.is_dir() => p.join("tokenizer.json"),
        Some(p) => p.clone(),
        None => {
            let p = m.dir.join("tokenizer.json");
            if !p.is_file() {
                bail!(
                    "{} has no tokenizer.json: name the model's tokenizer with --tokenizer (a tokenizer.json, or the dataset it was trained on)",
                    m.dir.display()
                );
            }
            p
        }
    };
    let tok = TextTokenizer::load(&tok_path, &TokenizeConfig::default())?;
    let prompt = tok.encode(&a.prompt)?;
    if let Some(&t) = prompt.iter().find(|&&t| t as usize >= m.vocab_size()) {
        bail!(
            "{}: token {t} of the prompt is outside the model's vocabulary of {}",
            tok_path.display(),
            m.vocab_size()
        );
    }
    let stop = if a.ignore_eos {
        None
    } else {
        tokenmill_pipelines::eval::tasks::prefix_token(&tok)
    };
    let cfg = GenerateConfig {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        stop,
    };
    let be = tokenmill_kernels::Cpu;
    let g = generate(&m.model, &m.params, &be, &prompt, &cfg)?;
    let text = tok.decode(&g.tokens)?;
    if a.json {
        let v = serde_json::json!({
            "prompt_tokens": prompt,
            "tokens": g.tokens,
            "text": text,
            "stop": g.stop,
            "kv_cache_bytes": g.kv_cache_bytes,
            "kv_cache_bytes_per_token": g.kv_cache_bytes_per_token,
            "prefill_s": g.prefill_s,
            "decode_s": g.decode_s,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}{}", a.prompt, text);
        eprintln!(
            "{} prompt tokens, {} new ({:?}); KV cache {} bytes ({} per token); {:.1} tokens/s",
            prompt.len(),
            g.tokens.len(),
            g.stop,
            g.kv_cache_bytes,
            g.kv_cache_bytes_per_token,
            (g.tokens.len().saturating_sub(1)) as f64 / g.decode_s.max(1e-9)
        );
    }
    Ok(())
}
