//! Byte-level BPE training with the `tokenizers` trainer, for users who have no tokenizer yet.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder};

use crate::error::{Error, Result};
use crate::tokenizer::lib_err;

/// Settings of a byte-level BPE training run.
#[derive(Debug, Clone)]
pub struct BpeTrainConfig {
    /// Final vocabulary size, special tokens and the 256 byte symbols included.
    pub vocab_size: usize,
    /// Minimum pair frequency to merge.
    pub min_frequency: u64,
    /// Special tokens, added first (the first one is the EOS by convention).
    pub special_tokens: Vec<String>,
}

impl Default for BpeTrainConfig {
    fn default() -> Self {
        BpeTrainConfig {
            vocab_size: 8192,
            min_frequency: 2,
            special_tokens: vec!["<|endoftext|>".into()],
        }
    }
}

/// Trains a GPT-2-style byte-level BPE (NFC normalisation, byte-level pre-tokenizer with the
/// GPT-2 split regex, byte-level decoder) on `texts` and saves it as `out` (`tokenizer.json`).
/// Returns the vocabulary size reached.
pub fn train_bpe<I, S>(texts: I, opts: &BpeTrainConfig, out: &Path) -> Result<usize>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    if opts.vocab_size < 256 + opts.special_tokens.len() {
        return Err(Error::Tokenizer {
            path: out.to_path_buf(),
            detail: format!(
                "vocab size {} is below the 256 byte symbols plus {} special tokens",
                opts.vocab_size,
                opts.special_tokens.len()
            ),
        });
    }
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(opts.vocab_size)
        .min_frequency(opts.min_frequency)
        .special_tokens(
            opts.special_tokens
                .iter()
                .map(|t| AddedToken::from(t.clone(), true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tokenizer = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(Some(NFC))
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_post_processor(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevelDecoder::default()))
        .build()
        .map_err(|e| lib_err(out, "building", e))?;
    tokenizer
        .train(&mut trainer, texts)
        .map_err(|e| lib_err(out, "training", e))?;
    let size = tokenizer.get_vocab_size(true);
    let tmp = out.with_extension("json.tmp");
    tokenizer
        .save(&tmp, true)
        .map_err(|e| lib_err(out, "saving", e))?;
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{TextTokenizer, TokenizeConfig};

    #[test]
    fn trained_bpe_round_trips_text_and_compresses() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tokenizer.json");
        let text = "the quick brown fox jumps over the lazy dog. ";
        let docs: Vec<String> = (0..200)
            .map(|i| format!("{text}{i} Ünïcödé — ok\n"))
            .collect();
        let opts = BpeTrainConfig {
            vocab_size: 400,
            ..Default::default()
        };
        let n = train_bpe(docs.iter(), &opts, &out).unwrap();
        assert!(n > 257 && n <= 400, "vocab {n}");
        let tok = TextTokenizer::load(
            &out,
            &TokenizeConfig {
                eos_token: None,
                append_eos: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(tok.identity().eos_token.as_deref(), Some("<|endoftext|>"));
        let ids = tok.encode(&docs[7]).unwrap();
        assert_eq!(*ids.last().unwrap(), tok.identity().eos_id.unwrap());
        assert!(
            ids.len() < docs[7].len() / 2,
            "{} tokens for {} bytes",
            ids.len(),
            docs[7].len()
        );
        let back = tok.decode(&ids[..ids.len() - 1]).unwrap();
        assert_eq!(back, docs[7]);
    }
}
