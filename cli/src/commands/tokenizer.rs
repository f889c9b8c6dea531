//! `tokenmill tokenizer train INPUT... --out tokenizer.json`: byte-level BPE with the HF
//! `tokenizers` trainer.

use std::path::PathBuf;

use anyhow::bail;
use tokenmill_shards::bpe::{BpeTrainConfig, train_bpe};

/// `tokenmill tokenizer`.
#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Train a byte-level BPE tokenizer on input documents.
    Train {
        /// Input files or globs (any reader) whose documents train the tokenizer.
        inputs: Vec<PathBuf>,
        /// Where to write the tokenizer.json.
        #[arg(long)]
        out: PathBuf,
        /// Vocabulary size, special tokens included.
        #[arg(long, default_value_t = 32768)]
        vocab_size: usize,
        /// A pair is merged only if it occurs at least this often.
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        /// Special tokens (the first is the EOS); default `<|endoftext|>`.
        #[arg(long = "special")]
        special: Vec<String>,
    },
}

/// Runs `tokenmill tokenizer`.
pub fn run(c: Cmd) -> anyhow::Result<()> {
    let Cmd::Train {
        inputs,
        out,
        vocab_size,
        min_frequency,
        special,
    } = c;
    if inputs.is_empty() {
        bail!("give input files to train on");
    }
    let texts = tokenmill_ingest::read_texts(&inputs, &Default::default())?;
    let mut opts = BpeTrainConfig {
        vocab_size,
        min_frequency,
        ..Default::default()
    };
    if !special.is_empty() {
        opts.special_tokens = special;
    }
    let n = train_bpe(texts.iter(), &opts, &out)?;
    println!(
        "trained a byte-level BPE of {n} tokens on {} documents → {}",
        texts.len(),
        out.display()
    );
    Ok(())
}
